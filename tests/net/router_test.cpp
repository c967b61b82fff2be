// The Router: matching (literal and {param} segments, specificity), 404/405 with Allow, the
// per-route authorisation (401/403), strict JSON bodies (400 with the precise code, 413, 415),
// /healthz, errors from handlers; then the same end to end over mutual TLS with the JSON
// validation table, each case with its exact status and code, and no value echoed back.
#include "net/router.h"

#include <gtest/gtest.h>

#include "net_test_util.h"

namespace mcim::net {
namespace {

using testing::make_client;
using testing::start_server;
using testing::TestPki;
using testing::tls_options;

Peer peer_for(const std::string& client) {
  Peer p;
  p.tls = true;
  p.address = "127.0.0.1:4000";
  if (!client.empty()) {
    std::vector<pki::X509Ptr> chain;
    for (const auto& c : TestPki::get().client(client).identity->certs) {
      chain.push_back(pki::up_ref(c.get()));
    }
    p.certificate = peer_certificate(std::move(chain));
  }
  return p;
}

HttpRequest request(std::string method, std::string target, std::string body = "",
                    std::string content_type = "", const std::string& client = "") {
  HttpRequest r;
  r.method = std::move(method);
  r.target = std::move(target);
  r.body = std::move(body);
  r.content_type = std::move(content_type);
  r.peer = peer_for(client);
  return r;
}

std::string code_of(const HttpResponse& r) {
  const Json j = Json::parse(r.body, nullptr, false);
  return j.contains("error") ? j["error"]["code"].get<std::string>() : "";
}

std::string header_of(const HttpResponse& r, std::string_view name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) return v;
  }
  return "";
}

HttpResponse ok(const Request& r) {
  Json j = {{"path", r.path}, {"query", r.query}};
  for (const auto& [n, v] : r.params) j["params"][std::string(n)] = v;
  if (!r.json.is_null()) j["json"] = r.json;
  return json_response(200, j);
}

// A vectors endpoint as the ICF would declare it.
JsonSchema vectors_schema() {
  return JsonSchema::object({
      required("count", JsonSchema::integer(1, 5)),
      required("serving_network", JsonSchema::string(32)),
      optional("resync", JsonSchema::object({required("rand", JsonSchema::hex(16)),
                                             required("auts", JsonSchema::hex(14))})),
  });
}

Router make_router() {
  Router router("ro");
  EXPECT_TRUE(router.add("GET", "/v1/pcids/{pcid}", ok).has_value());
  EXPECT_TRUE(router.add("DELETE", "/v1/pcids/{pcid}", ok).has_value());
  EXPECT_TRUE(router.add("POST", "/v1/pcids/batch", ok).has_value());
  RouteOptions vectors;
  vectors.authorize = require_operator({"vno-a"});
  vectors.body = vectors_schema();
  vectors.max_body = 512;
  EXPECT_TRUE(router.add("POST", "/v1/pcids/{pcid}/vectors", ok, vectors).has_value());
  RouteOptions any_cert;
  any_cert.authorize = require_client_certificate();
  EXPECT_TRUE(router.add("GET", "/v1/whoami", ok, any_cert).has_value());
  EXPECT_TRUE(
      router
          .add("GET", "/v1/throws",
               [](const Request&) -> HttpResponse { throw std::runtime_error("secret internals"); })
          .has_value());
  EXPECT_TRUE(router
                  .add("GET", "/v1/refuses",
                       [](const Request&) {
                         return respond(
                             fail(ErrorCode::transition_refused, "pcid: already active"));
                       })
                  .has_value());
  return router;
}

TEST(Router, MatchesLiteralsAndParameters) {
  const Router router = make_router();
  const auto r = router.handle(request("GET", "/v1/pcids/001019000000001?full=1"));
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = Json::parse(r.body);
  EXPECT_EQ(j["params"]["pcid"], "001019000000001");
  EXPECT_EQ(j["path"], "/v1/pcids/001019000000001");
  EXPECT_EQ(j["query"], "full=1");
  // The literal segment wins over the parameter.
  EXPECT_EQ(router.handle(request("POST", "/v1/pcids/batch")).status, 200);
  EXPECT_EQ(router.handle(request("GET", "/v1/pcids/batch")).status, 405);
}

TEST(Router, UnknownPathIs404AndUnknownMethodIs405WithAllow) {
  const Router router = make_router();
  for (const char* target : {"/nope", "/v1/pcids", "/v1/pcids/", "/v1/pcids//vectors",
                             "/v1/pcids/1/vectors/extra", "/healthz/"}) {
    const auto r = router.handle(request("GET", target));
    EXPECT_EQ(r.status, 404) << target;
    EXPECT_EQ(code_of(r), "not_found") << target;
    EXPECT_EQ(r.content_type, "application/json");
  }
  const auto r = router.handle(request("PUT", "/v1/pcids/1"));
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(code_of(r), "method_not_allowed");
  EXPECT_EQ(header_of(r, "Allow"), "DELETE, GET");
  EXPECT_EQ(router.handle(request("GET", "*")).status, 400);
}

TEST(Router, AddRefusesBadPatternsAndDuplicates) {
  Router router("x");
  EXPECT_EQ(router.add("GET", "no-slash", ok).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(router.add("GET", "/a//b", ok).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(router.add("GET", "/a/{b-c}", ok).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(router.add("GET", "/a/{}", ok).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(router.add("GET", "/a b", ok).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(router.add("get", "/a", ok).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(router.add("GET", "/a", nullptr).error().code, ErrorCode::invalid_argument);
  EXPECT_TRUE(router.add("GET", "/a/{b}", ok).has_value());
  EXPECT_EQ(router.add("GET", "/a/{b}", ok).error().code, ErrorCode::already_exists);
  EXPECT_EQ(router.add("GET", "/healthz", ok).error().code, ErrorCode::already_exists);
  EXPECT_TRUE(router.add("GET", "/", ok).has_value());
  EXPECT_EQ(router.handle(request("GET", "/")).status, 200);
}

TEST(Router, AuthorisationByOperatorIdentity) {
  const Router router = make_router();
  const std::string body = R"({"count":1,"serving_network":"001-01"})";
  const auto call = [&](const std::string& client) {
    return router.handle(request("POST", "/v1/pcids/1/vectors", body, "application/json", client));
  };
  const auto none = call("");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(code_of(none), "unauthenticated");
  EXPECT_EQ(header_of(none, "WWW-Authenticate"), "mTLS realm=\"ro\"");
  const auto wrong = call("vno-b");
  EXPECT_EQ(wrong.status, 403);
  EXPECT_EQ(code_of(wrong), "access_denied");
  EXPECT_EQ(wrong.body.find("vno-b"), std::string::npos);  // the refusal does not echo ids
  const auto nameless = call("anonymous");
  EXPECT_EQ(nameless.status, 403);
  EXPECT_EQ(code_of(nameless), "access_denied");
  EXPECT_EQ(call("vno-a").status, 200);
  // Any certificate will do here.
  EXPECT_EQ(router.handle(request("GET", "/v1/whoami")).status, 401);
  EXPECT_EQ(router.handle(request("GET", "/v1/whoami", "", "", "anonymous")).status, 200);
}

TEST(Router, AuthorisationComesBeforeBodyValidation) {
  // An unauthorised caller learns nothing about the body rules.
  const Router router = make_router();
  const auto r = router.handle(request("POST", "/v1/pcids/1/vectors", "{", "application/json"));
  EXPECT_EQ(r.status, 401);
}

TEST(Router, RequireOperatorIfConsultsThePredicateEachTime) {
  std::atomic<bool> agreement{false};
  Router router("ro");
  RouteOptions o;
  o.authorize =
      require_operator_if([&](std::string_view id) { return agreement && id == "vno-b"; });
  ASSERT_TRUE(router.add("GET", "/v1/roaming", ok, o).has_value());
  EXPECT_EQ(router.handle(request("GET", "/v1/roaming", "", "", "vno-b")).status, 403);
  agreement = true;
  EXPECT_EQ(router.handle(request("GET", "/v1/roaming", "", "", "vno-b")).status, 200);
  EXPECT_EQ(router.handle(request("GET", "/v1/roaming", "", "", "vno-a")).status, 403);
}

TEST(Router, ValidatedBodyReachesTheHandler) {
  const Router router = make_router();
  const std::string body = R"({"count":2,"serving_network":"001-01","resync":{"rand":")" +
                           std::string(32, 'a') + R"(","auts":")" + std::string(28, 'B') + R"("}})";
  const auto r = router.handle(
      request("POST", "/v1/pcids/7/vectors", body, "application/json; charset=utf-8", "vno-a"));
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = Json::parse(r.body);
  EXPECT_EQ(j["json"]["count"], 2);
  EXPECT_EQ(j["params"]["pcid"], "7");
}

TEST(Router, HandlerErrorsMapToTheirStatus) {
  const Router router = make_router();
  const auto thrown = router.handle(request("GET", "/v1/throws"));
  EXPECT_EQ(thrown.status, 500);
  EXPECT_EQ(code_of(thrown), "internal");
  EXPECT_EQ(thrown.body.find("secret"), std::string::npos);
  const auto refused = router.handle(request("GET", "/v1/refuses"));
  EXPECT_EQ(refused.status, 409);
  EXPECT_EQ(code_of(refused), "transition_refused");
  EXPECT_NE(refused.body.find("already active"), std::string::npos);
}

TEST(Router, HealthzReportsTheServiceAndItsCheck) {
  Router router("vno");
  const auto r = router.handle(request("GET", "/healthz"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(Json::parse(r.body), Json({{"status", "ok"}, {"service", "vno"}}));
  router.set_health_check([] { return Result<void>(fail(ErrorCode::io_error, "db down at /x")); });
  const auto down = router.handle(request("GET", "/healthz"));
  EXPECT_EQ(down.status, 503);
  EXPECT_EQ(Json::parse(down.body), Json({{"status", "unavailable"}, {"service", "vno"}}));
}

// ---- End to end over mutual TLS -------------------------------------------------------------

class RouterOverTls : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpServerOptions o;
    o.body_limit = 2048;
    server_ = start_server(router_.handler(), tls_options(ClientAuth::optional), o);
    ASSERT_TRUE(server_);
    client_ = make_client("vno-a");
  }

  std::pair<int, std::string> post(const std::string& body,
                                   const std::string& content_type = "application/json") {
    auto r = client_->request("POST", server_->url() + "/v1/pcids/1/vectors", body, content_type);
    EXPECT_TRUE(r.has_value()) << r.error().message;
    if (!r) return {0, ""};
    EXPECT_EQ(r->content_type, "application/json");
    EXPECT_EQ(r->body.find("SECRET"), std::string::npos) << r->body;  // values never echoed
    return {r->status, code_of(*r)};
  }

  Router router_ = make_router();
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<HttpsClient> client_;
};

TEST_F(RouterOverTls, JsonValidationTable) {
  struct Case {
    std::string name, body;
    int status;
    std::string code;
    std::string content_type = "application/json";
  };
  const std::string good = R"({"count":1,"serving_network":"001-01"})";
  const std::vector<Case> cases = {
      {"valid", good, 200, ""},
      {"malformed JSON", R"({"count":1,"serving_network":"SECRET)", 400, "bad_format"},
      {"empty body", "", 400, "bad_format"},
      {"not an object", R"(["SECRET"])", 400, "bad_format"},
      {"wrong type: string for integer", R"({"count":"1","serving_network":"SECRET"})", 400,
       "bad_format"},
      {"wrong type: float", R"({"count":1.5,"serving_network":"x"})", 400, "bad_format"},
      {"null", R"({"count":null,"serving_network":"x"})", 400, "bad_format"},
      {"unknown field", R"({"count":1,"serving_network":"x","extra":1})", 400, "bad_format"},
      {"duplicate field", R"({"count":1,"count":2,"serving_network":"x"})", 400, "bad_format"},
      {"missing field", R"({"count":1})", 400, "missing_argument"},
      {"oversize string", R"({"count":1,"serving_network":"SECRET)" + std::string(40, 'x') + "\"}",
       400, "invalid_argument"},
      {"integer out of range", R"({"count":6,"serving_network":"x"})", 400, "invalid_argument"},
      {"hex of the wrong size",
       R"({"count":1,"serving_network":"x","resync":{"rand":"abcd","auts":"00"}})", 400,
       "invalid_argument"},
      {"not hex",
       R"({"count":1,"serving_network":"x","resync":{"rand":")" + std::string(32, 'g') +
           R"(","auts":")" + std::string(28, '0') + "\"}}",
       400, "invalid_argument"},
      {"wrong content type", good, 415, "unsupported_media_type", "text/plain"},
      {"no content type", good, 415, "unsupported_media_type", ""},
      {"over the route's limit",
       R"({"count":1,"serving_network":")" + std::string(600, 'x') + "\"}", 413,
       "payload_too_large"},
      {"over the server's limit", std::string(4096, ' ') + good, 413, "payload_too_large"},
  };
  for (const Case& c : cases) {
    const auto [status, code] = post(c.body, c.content_type);
    EXPECT_EQ(status, c.status) << c.name;
    EXPECT_EQ(code, c.code) << c.name;
  }
}

TEST_F(RouterOverTls, PeerIdentityIsAuthorisedPerRoute) {
  const std::string body = R"({"count":1,"serving_network":"x"})";
  const auto url = server_->url() + "/v1/pcids/1/vectors";
  const auto anonymous = make_client()->request("POST", url, body, "application/json");
  ASSERT_TRUE(anonymous.has_value());
  EXPECT_EQ(anonymous->status, 401);
  EXPECT_EQ(code_of(*anonymous), "unauthenticated");
  const auto other = make_client("vno-b")->request("POST", url, body, "application/json");
  ASSERT_TRUE(other.has_value());
  EXPECT_EQ(other->status, 403);
  EXPECT_EQ(code_of(*other), "access_denied");
  const auto mine = client_->request("POST", url, body, "application/json");
  ASSERT_TRUE(mine.has_value());
  EXPECT_EQ(mine->status, 200);
}

}  // namespace
}  // namespace mcim::net
