// The VNO service (roles/vno/service.h) against a fake home: a real HTTPS server with mutual TLS
// whose router serves the four /v1/auth endpoints over MILENAGE vectors of a known K/OPc, and a
// device side whose USIM runs real AKA (RES, and AUTS when its SQN is ahead). Driven through the
// service's router and, for the happy path and the gateway, over real TLS: attach, wrong RES and
// replay, resynchronisation, the home's refusals passing through, an unreachable or garbling home,
// strict bodies and path parameters (each case with its exact status and code, nothing stored
// changed), and the gateway's restriction of PCID sessions.
#include <gtest/gtest.h>

#include <functional>
#include <mutex>
#include <optional>
#include <set>

#include "../net/net_test_util.h"
#include "aka/milenage.h"
#include "aka/vector.h"
#include "common/hex.h"
#include "common/log.h"
#include "roles/vno/service.h"

namespace mcim::roles {
namespace {

using net::HttpRequest;
using net::HttpResponse;
using net::Json;
using net::JsonSchema;
using net::testing::make_client;
using net::testing::start_server;
using net::testing::TestPki;
using net::testing::tls_options;

const aka::K128 kK = {0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f,
                      0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc};
const aka::Opc kOpc = {0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e,
                       0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf};

const std::string kPcid = "001019000000001";     // the RO's PCID range: restricted
const std::string kPcid2 = "001019000000003";    // another PCID
const std::string kImsi = "001010000000001";     // the SHO's MCC/MNC: operational
const std::string kUnknown = "001019999999999";  // the home knows no such subscriber
const std::string kDormant = "001019000000002";  // the home refuses it (F7)

std::string code_of(const HttpResponse& r) {
  const Json j = Json::parse(r.body, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"]["code"].get<std::string>() : "";
}
std::string message_of(const HttpResponse& r) {
  const Json j = Json::parse(r.body, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"]["message"].get<std::string>() : "";
}
Json json_of(const HttpResponse& r) { return Json::parse(r.body, nullptr, false); }

bool is_lower_hex(const Json& j, std::size_t digits) {
  if (!j.is_string()) return false;
  const auto& s = j.get_ref<const std::string&>();
  return s.size() == digits && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// A home network (the RO's ICF, or an SHO's AuC) as the VNO sees it over HTTPS.
class FakeHome {
 public:
  FakeHome() : router_("home"), algo_(kK, kOpc) {
    net::RouteOptions o;
    o.authorize = net::require_operator({"vno-a"});
    const auto imsi = JsonSchema::string(15, 6);
    o.body = JsonSchema::object(
        {net::required("imsi", imsi), net::required("count", JsonSchema::integer(1, 5))});
    EXPECT_TRUE(router_.add(
        "POST", "/v1/auth/vectors", [this](const net::Request& q) { return vectors(q, "vectors"); },
        o));
    o.body =
        JsonSchema::object({net::required("imsi", imsi), net::required("rand", JsonSchema::hex(16)),
                            net::required("auts", JsonSchema::hex(14)),
                            net::optional("count", JsonSchema::integer(1, 5))});
    EXPECT_TRUE(router_.add(
        "POST", "/v1/auth/resync", [this](const net::Request& q) { return resync(q); }, o));
    o.body = JsonSchema::object({net::required("imsi", imsi)});
    EXPECT_TRUE(router_.add(
        "POST", "/v1/auth/sessions", [this](const net::Request& q) { return open(q); }, o));
    o.body.reset();
    EXPECT_TRUE(router_.add(
        "DELETE", "/v1/auth/sessions/{session}", [this](const net::Request& q) { return close(q); },
        o));
    server_ = start_server(router_.handler(), tls_options(net::ClientAuth::required));
  }

  std::string url() const { return server_->url(); }

  // When set and it answers for an endpoint ("vectors", "resync", "sessions"), that answer is
  // sent instead of the real one (a home speaking garbage).
  void answer_with(std::function<std::optional<HttpResponse>(const std::string&)> f) {
    std::lock_guard lock(mu_);
    override_ = std::move(f);
  }
  std::set<std::string> attached() const {
    std::lock_guard lock(mu_);
    std::set<std::string> out;
    for (const auto& [id, imsi] : sessions_) out.insert(imsi);
    return out;
  }
  std::map<std::string, std::string> sessions() const {
    std::lock_guard lock(mu_);
    return sessions_;
  }
  int resyncs() const {
    std::lock_guard lock(mu_);
    return resyncs_;
  }

 private:
  std::optional<HttpResponse> overridden(const std::string& endpoint) {
    return override_ ? override_(endpoint) : std::nullopt;
  }

  HttpResponse vectors(const net::Request& q, const std::string& endpoint) {
    std::lock_guard lock(mu_);
    if (auto o = overridden(endpoint)) return *o;
    const std::string imsi = q.json["imsi"];
    if (imsi == kUnknown) return net::error_response(404, "not_found", "no such PCID");
    if (imsi == kDormant) {
      return net::error_response(409, "credential_unusable", "the PCID is dormant (F7)");
    }
    const unsigned count = q.json.contains("count") ? q.json["count"].get<unsigned>() : 1;
    Json vs = Json::array();
    auto& sqn = sqns_.try_emplace(imsi, aka::SqnPolicy{}).first->second;
    for (unsigned i = 0; i < count; ++i) {
      aka::Rand rand{};
      rng_.fill(rand);
      const auto v = aka::make_vector(algo_, rand, *sqn.next(0), {0x80, 0x00});
      vs.push_back({{"rand", to_hex(v.rand)},
                    {"autn", to_hex(v.autn)},
                    {"xres", to_hex(v.xres.view())},
                    {"ck", to_hex(v.ck)},
                    {"ik", to_hex(v.ik)}});
    }
    return net::json_response(200, {{"vectors", vs}});
  }

  HttpResponse resync(const net::Request& q) {
    {
      std::lock_guard lock(mu_);
      if (auto o = overridden("resync")) return *o;
      const auto rand = parse_hex_fixed<16>(q.json["rand"].get<std::string>(), "rand");
      const auto auts = parse_hex_fixed<14>(q.json["auts"].get<std::string>(), "auts");
      auto sqn_ms = aka::recover_sqn_ms(algo_, *rand, *auts);
      if (!sqn_ms) return net::error_response(sqn_ms.error());
      sqns_.try_emplace(q.json["imsi"], aka::SqnPolicy{}).first->second.resynchronise(*sqn_ms);
      ++resyncs_;
    }
    return vectors(q, "resync-vectors");
  }

  HttpResponse open(const net::Request& q) {
    std::lock_guard lock(mu_);
    if (auto o = overridden("sessions")) return *o;
    const std::string imsi = q.json["imsi"];
    for (const auto& [id, attached] : sessions_) {
      if (attached == imsi) {
        return net::error_response(409, "already_exists", "the PCID is attached elsewhere");
      }
    }
    const std::string id = to_hex(rng_.draw<16>());
    sessions_.emplace(id, imsi);
    return net::json_response(
        201, {{"session", id}, {"imsi", imsi}, {"restricted", true}, {"expires", 4102444800}});
  }

  HttpResponse close(const net::Request& q) {
    std::lock_guard lock(mu_);
    if (sessions_.erase(std::string(q.param("session"))) == 0) {
      return net::error_response(404, "not_found", "no such session");
    }
    HttpResponse r;
    r.status = 204;
    return r;
  }

  mutable std::mutex mu_;
  net::Router router_;
  aka::Milenage algo_;
  OsRandom rng_;
  std::map<std::string, aka::HomeSqn> sqns_;
  std::map<std::string, std::string> sessions_;  // id → IMSI
  int resyncs_ = 0;
  std::function<std::optional<HttpResponse>(const std::string&)> override_;
  std::unique_ptr<net::HttpServer> server_;  // last: stopped before the rest goes
};

// The device's USIM.
struct Device {
  aka::Milenage algo{kK, kOpc};
  aka::UsimSqn usim{aka::SqnPolicy{}};

  aka::UsimAnswer answer(const Json& challenge) {
    const auto rand = parse_hex_fixed<16>(challenge["rand"].get<std::string>(), "rand");
    const auto autn = parse_hex_fixed<16>(challenge["autn"].get<std::string>(), "autn");
    EXPECT_TRUE(rand && autn);
    auto a = aka::usim_authenticate(algo, usim, *rand, *autn);
    EXPECT_TRUE(a) << a.error().message;
    return *a;
  }
  std::string res(const Json& challenge) {
    const auto a = answer(challenge);
    EXPECT_TRUE(std::holds_alternative<aka::UsimSuccess>(a));
    return to_hex(std::get<aka::UsimSuccess>(a).res.view());
  }
};

HttpRequest request(std::string method, std::string target, std::string body = "",
                    std::string content_type = "application/json") {
  HttpRequest r;
  r.method = std::move(method);
  r.target = std::move(target);
  r.body = std::move(body);
  if (!r.body.empty()) r.content_type = std::move(content_type);
  r.peer.address = "127.0.0.1:5000";
  r.peer.tls = true;
  return r;
}

// A TLS server standing for a destination behind the gateway (the RO, or somewhere else).
std::unique_ptr<net::HttpServer> destination(const std::string& name) {
  net::TlsServerOptions tls = tls_options();
  tls.identity = TestPki::get().named_server(name).identity;
  return start_server(
      [name](const HttpRequest&) {
        return net::json_response(200, {{"server", name}});
      },
      tls);
}

class VnoServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ro_ = destination("ro");
    elsewhere_ = destination("elsewhere");
    ASSERT_TRUE(ro_ && elsewhere_);
    service_ = make_service(home_.url());
    ASSERT_TRUE(service_);
  }

  std::unique_ptr<VnoService> make_service(const std::string& home_url,
                                           const std::string& client = "vno-a") {
    auto c = create(config(home_url, client));
    EXPECT_TRUE(c) << c.error().message;
    return c ? std::move(*c) : nullptr;
  }
  VnoServiceConfig config(const std::string& home_url, const std::string& client = "vno-a") {
    VnoServiceConfig c;
    c.options.name = "vno-a";
    c.options.restricted_destinations = {ro_->address()};
    c.routes = {{"00101", "sho", false}, {"001019", "ro", true}};
    c.homes = {{"ro", home_url}, {"sho", home_url}};
    net::HttpsClientOptions o;
    o.identity = TestPki::get().operator_client(client).identity;
    c.home_client = make_client("", o);
    return c;
  }
  Result<std::unique_ptr<VnoService>> create(VnoServiceConfig c) {
    return VnoService::create(std::move(c), clock_);
  }

  HttpResponse handle(const HttpRequest& r) { return service_->router().handle(r); }
  HttpResponse attach(const std::string& imsi) {
    return handle(request("POST", "/v1/attach", Json{{"imsi", imsi}}.dump()));
  }
  HttpResponse respond(const std::string& attach_id, const std::string& res) {
    return handle(
        request("POST", "/v1/attach/" + attach_id + "/response", Json{{"res", res}}.dump()));
  }
  // Attach to completion; the 201 answer's body.
  Json attached(const std::string& imsi, Device& d) {
    const auto c = attach(imsi);
    EXPECT_EQ(c.status, 200) << c.body;
    const Json challenge = json_of(c);
    const auto s = respond(challenge.value("attach_id", ""), d.res(challenge));
    EXPECT_EQ(s.status, 201) << s.body;
    return json_of(s);
  }
  std::string metrics() const { return service_->router().metrics().render(); }

  FakeClock clock_{std::chrono::system_clock::now()};
  FakeHome home_;
  std::unique_ptr<net::HttpServer> ro_, elsewhere_;
  std::unique_ptr<VnoService> service_;
};

TEST_F(VnoServiceTest, APcidAttachesIntoARestrictedSessionAndDetaches) {
  Device d;
  const auto c = attach(kPcid);
  ASSERT_EQ(c.status, 200) << c.body;
  const Json challenge = json_of(c);
  EXPECT_EQ(challenge.size(), 3u);
  EXPECT_TRUE(is_lower_hex(challenge["attach_id"], 32));
  EXPECT_TRUE(is_lower_hex(challenge["rand"], 32));
  EXPECT_TRUE(is_lower_hex(challenge["autn"], 32));
  EXPECT_EQ(service_->vno().pending(), 1u);

  const auto s = respond(challenge["attach_id"], d.res(challenge));
  ASSERT_EQ(s.status, 201) << s.body;
  const Json session = json_of(s);
  EXPECT_TRUE(is_lower_hex(session["session"], 32));
  EXPECT_EQ(session["imsi"], kPcid);
  EXPECT_EQ(session["restricted"], true);
  EXPECT_EQ(session["gateway"], service_->gateway_address());
  // No drf_url on the route: the RO's (the home's) URL, where it serves its DRF.
  EXPECT_EQ(session["drf_url"], home_.url());
  EXPECT_EQ(session.size(), 6u) << session.dump();
  EXPECT_EQ(home_.sessions().at(session["home_session"]), kPcid);
  const auto stored = service_->vno().session(session["session"].get<std::string>());
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->home_session, session["home_session"]);
  EXPECT_TRUE(stored->restricted);
  EXPECT_EQ(stored->drf_url, home_.url());
  EXPECT_EQ(service_->vno().pending(), 0u);

  const auto gone =
      handle(request("DELETE", "/v1/sessions/" + session["session"].get<std::string>()));
  EXPECT_EQ(gone.status, 204) << gone.body;
  EXPECT_FALSE(service_->vno().session(session["session"].get<std::string>()));
  EXPECT_TRUE(home_.sessions().empty());  // the home's session is closed too

  const std::string m = metrics();
  EXPECT_NE(m.find(R"(mcim_flow_steps_total{step="attach_challenged"} 1)"), std::string::npos);
  EXPECT_NE(m.find(R"(mcim_flow_steps_total{step="attach_authenticated"} 1)"), std::string::npos);
  EXPECT_NE(m.find(R"(mcim_flow_steps_total{step="detach"} 1)"), std::string::npos);
}

TEST_F(VnoServiceTest, AnOperationalImsiGetsAnUnrestrictedSessionWithoutGateway) {
  Device d;
  const Json s = attached(kImsi, d);
  EXPECT_EQ(s["restricted"], false);
  EXPECT_FALSE(s.contains("gateway"));
  EXPECT_FALSE(s.contains("drf_url"));
  // Vno::forward lets an operational session go anywhere; the gateway's authoriser is forward.
  const auto authorize = service_->gateway_authorizer();
  EXPECT_TRUE(authorize(s["session"].get<std::string>(), "192.0.2.7:443"));
  EXPECT_EQ(service_->vno().refused_forwards(), 0u);
}

TEST_F(VnoServiceTest, ARestrictedSessionIsToldTheDrfOfItsRoute) {
  auto c = config(home_.url());
  c.routes[1].drf_url = "https://127.0.0.1:8443/";
  auto service = create(std::move(c));
  ASSERT_TRUE(service) << service.error().message;
  service_ = std::move(*service);
  Device d;
  const Json s = attached(kPcid, d);
  EXPECT_EQ(s["restricted"], true);
  EXPECT_EQ(s["drf_url"], "https://127.0.0.1:8443/");
}

// F3: a grant left by an Access-Accept (here straight from Vno::grant_eap; the relay's part is
// radius_relay_test) is claimed at POST /v1/access/eap-sessions with the attach answer's members,
// once; malformed claims are refused before the Vno sees them and consume nothing.
TEST_F(VnoServiceTest, AnEapSessionIsClaimedOnceWithAProofOfTheMsk) {
  const std::string identity = "0" + kPcid + "@wlan.mnc001.mcc001.3gppnetwork.org";
  Bytes<64> msk{};
  msk.fill(0x5a);
  const std::string proof = to_hex(eap_claim_proof(eap_session_key(msk), identity).get());
  auto claim = [&](const Json& body) {
    return handle(request("POST", "/v1/access/eap-sessions", body.dump()));
  };
  ASSERT_TRUE(service_->vno().grant_eap(identity, msk));
  for (const Json& bad : {Json{{"identity", identity}, {"proof", proof.substr(2)}},
                          Json{{"identity", identity}, {"proof", std::string(64, 'g')}},
                          Json{{"identity", ""}, {"proof", proof}}, Json{{"proof", proof}},
                          Json{{"identity", identity}, {"proof", proof}, {"extra", 1}}}) {
    const auto r = claim(bad);
    EXPECT_EQ(r.status, 400) << bad.dump() << " " << r.body;
  }
  EXPECT_EQ(service_->vno().eap_grants(), 1u);
  const auto ok = claim({{"identity", identity}, {"proof", proof}});
  ASSERT_EQ(ok.status, 201) << ok.body;
  const Json s = json_of(ok);
  EXPECT_EQ(s["imsi"], kPcid);
  EXPECT_EQ(s["restricted"], true);
  EXPECT_EQ(s["gateway"], service_->gateway_address());
  EXPECT_EQ(s["drf_url"], home_.url());
  EXPECT_EQ(s["session"].get<std::string>().size(), 32u);
  EXPECT_EQ(s["home_session"].get<std::string>().size(), 32u);
  EXPECT_TRUE(service_->vno().session(s["session"].get<std::string>()));
  EXPECT_EQ(claim({{"identity", identity}, {"proof", proof}}).status, 404);

  ASSERT_TRUE(service_->vno().detach(s["session"].get<std::string>()));
  ASSERT_TRUE(service_->vno().grant_eap(identity, msk));
  const auto wrong = claim({{"identity", identity}, {"proof", std::string(64, '0')}});
  EXPECT_EQ(wrong.status, 422) << wrong.body;
  EXPECT_NE(wrong.body.find("mac_mismatch"), std::string::npos);
  EXPECT_EQ(claim({{"identity", identity}, {"proof", proof}}).status, 404);
  EXPECT_NE(metrics().find("step=\"eap_session_claimed\"} 1"), std::string::npos) << metrics();
}

TEST_F(VnoServiceTest, AWrongResIsRefusedAndUsesTheChallengeUp) {
  Device d;
  const Json challenge = json_of(attach(kPcid));
  const std::string res = d.res(challenge);
  std::string wrong = res;
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  const auto refused = respond(challenge["attach_id"], wrong);
  EXPECT_EQ(refused.status, 422);
  EXPECT_EQ(code_of(refused), "mac_mismatch");
  EXPECT_EQ(service_->vno().pending(), 0u);
  EXPECT_TRUE(home_.sessions().empty());

  // The right RES comes too late: the challenge had one answer.
  const auto replay = respond(challenge["attach_id"], res);
  EXPECT_EQ(replay.status, 404);
  EXPECT_EQ(code_of(replay), "not_found");
  EXPECT_TRUE(home_.sessions().empty());
}

TEST_F(VnoServiceTest, AUsimAheadResynchronisesAndAttaches) {
  Device d;
  aka::SqnPolicy p;
  d.usim.record(aka::sqn_bytes(p.join(1000, 0)));  // the home's SEQ_HE is 0
  const Json first = json_of(attach(kPcid));
  const auto a = d.answer(first);
  ASSERT_TRUE(std::holds_alternative<aka::UsimSyncFailure>(a));
  const auto& auts = std::get<aka::UsimSyncFailure>(a).auts;

  const auto again =
      handle(request("POST", "/v1/attach/" + first["attach_id"].get<std::string>() + "/auts",
                     Json{{"auts", to_hex(auts)}}.dump()));
  ASSERT_EQ(again.status, 200) << again.body;
  const Json second = json_of(again);
  EXPECT_NE(second["attach_id"], first["attach_id"]);
  EXPECT_NE(second["rand"], first["rand"]);
  EXPECT_EQ(home_.resyncs(), 1);
  EXPECT_EQ(service_->vno().pending(), 1u);

  const auto s = respond(second["attach_id"], d.res(second));
  ASSERT_EQ(s.status, 201) << s.body;
  EXPECT_NE(metrics().find(R"(mcim_flow_steps_total{step="attach_resynchronised"} 1)"),
            std::string::npos);
}

TEST_F(VnoServiceTest, AForgedAutsIsRefusedByTheHome) {
  const Json c = json_of(attach(kPcid));
  const auto r = handle(request("POST", "/v1/attach/" + c["attach_id"].get<std::string>() + "/auts",
                                Json{{"auts", std::string(28, 'a')}}.dump()));
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(code_of(r), "mac_mismatch");
  EXPECT_EQ(home_.resyncs(), 0);
  EXPECT_EQ(service_->vno().pending(), 0u);  // the challenge was answered (with AUTS)
}

TEST_F(VnoServiceTest, ASecondAttachOfTheSameImsiIsRefusedByTheHome) {
  Device d;
  const Json first = attached(kPcid, d);
  const Json c = json_of(attach(kPcid));
  const auto second = respond(c["attach_id"], d.res(c));
  EXPECT_EQ(second.status, 409);
  EXPECT_EQ(code_of(second), "already_exists");
  EXPECT_NE(message_of(second).find("home ro"), std::string::npos);
  EXPECT_EQ(home_.sessions().size(), 1u);
  EXPECT_EQ(service_->vno().pending(), 0u);

  // Once detached, the PCID attaches again.
  ASSERT_EQ(handle(request("DELETE", "/v1/sessions/" + first["session"].get<std::string>())).status,
            204);
  EXPECT_EQ(attached(kPcid, d)["imsi"], kPcid);
}

TEST_F(VnoServiceTest, TheHomesRefusalsPassThroughWithTheirCode) {
  auto r = attach(kUnknown);
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(code_of(r), "not_found");
  r = attach(kDormant);
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(code_of(r), "credential_unusable");
  // No route covers the IMSI: the VNO refuses it without asking anyone.
  r = attach("002010000000001");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(code_of(r), "not_found");
  EXPECT_EQ(service_->vno().pending(), 0u);

  // The home does not know this VNO's certificate (no roaming agreement).
  auto stranger = make_service(home_.url(), "vno-b");
  ASSERT_TRUE(stranger);
  r = stranger->router().handle(request("POST", "/v1/attach", Json{{"imsi", kPcid}}.dump()));
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(code_of(r), "access_denied");
  EXPECT_EQ(stranger->vno().pending(), 0u);
}

TEST_F(VnoServiceTest, AnUnreachableHomeIsAnInternalErrorWithItsMessageHidden) {
  auto gone = start_server([](const HttpRequest&) { return HttpResponse{}; }, tls_options());
  const std::string url = gone->url();
  gone.reset();  // nothing listens there any more
  auto service = make_service(url);
  ASSERT_TRUE(service);
  const auto r =
      service->router().handle(request("POST", "/v1/attach", Json{{"imsi", kPcid}}.dump()));
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(code_of(r), "io_error");
  EXPECT_EQ(message_of(r), "internal error");
  EXPECT_EQ(service->vno().pending(), 0u);
}

TEST_F(VnoServiceTest, AHomeAnsweringGarbageIsBadFormatAndChangesNothing) {
  const std::string v = R"("rand":")" + std::string(32, 'a') + R"(","autn":")" +
                        std::string(32, 'b') + R"(","xres":")" + std::string(16, 'c') +
                        R"(","ck":")" + std::string(32, 'd') + R"(","ik":")" +
                        std::string(32, 'e') + "\"";
  const std::vector<std::string> garbage = {
      "",
      "<html>hello</html>",
      "{\"vectors\":",
      "[]",
      R"({"vectors":[]})",
      R"({"vectors":{}})",
      R"({"vectors":[{)" + v + R"(,"extra":1}]})",
      R"({"vectors":[{)" + v + R"(}],"more":true})",
      R"({"vectors":[{)" + v.substr(0, v.find(",\"ik\"")) + R"(}]})",
      R"({"vectors":[{)" + v + R"(},{)" + v + R"(}]})",  // two where one was asked
      R"({"vectors":[{"rand":"zz","autn":1,"xres":"","ck":null,"ik":[]}]})",
      R"({"vectors":[{)" + std::string(v).replace(v.find("cccc"), 16, "cccccc") + R"(}]})",
  };
  for (const std::string& body : garbage) {
    SCOPED_TRACE(body);
    home_.answer_with([body](const std::string&) -> std::optional<HttpResponse> {
      HttpResponse r;
      r.content_type = "application/json";
      r.body = body;
      return r;
    });
    const auto r = attach(kPcid);
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(code_of(r), "bad_format");
    EXPECT_EQ(service_->vno().pending(), 0u);
  }
  // The well-formed vector above passes: the cases differ from it in one point each.
  home_.answer_with([v](const std::string&) -> std::optional<HttpResponse> {
    return net::json_response(200, Json::parse(R"({"vectors":[{)" + v + "}]}"));
  });
  EXPECT_EQ(attach(kPcid).status, 200);
  EXPECT_EQ(service_->vno().pending(), 1u);

  // An answer with an unexpected success status, and a failure without an envelope.
  home_.answer_with([](const std::string&) -> std::optional<HttpResponse> {
    return net::json_response(202, {{"vectors", Json::array()}});
  });
  auto refused = attach(kPcid);
  EXPECT_EQ(refused.status, 400);
  EXPECT_EQ(code_of(refused), "bad_format");
  home_.answer_with([](const std::string&) -> std::optional<HttpResponse> {
    HttpResponse r;
    r.status = 502;
    r.body = "bad gateway";
    return r;
  });
  refused = attach(kPcid);
  EXPECT_EQ(refused.status, 500);
  EXPECT_EQ(code_of(refused), "io_error");
  EXPECT_EQ(service_->vno().pending(), 1u);

  // A malformed session answer after a good AKA (one challenge each: an answer uses it up), one
  // naming another IMSI, an id not as the ICF issues them: no VNO session either.
  home_.answer_with(nullptr);
  Device d;
  for (const std::string& body :
       {R"({"session":"xyz","imsi":")" + kPcid + R"(","restricted":true,"expires":1})",
        R"({"session":")" + std::string(32, 'a') + R"(","imsi":")" + kPcid2 +
            R"(","restricted":true,"expires":1})",
        R"({"session":")" + std::string(32, 'a') + R"(","imsi":")" + kPcid +
            R"(","restricted":"yes","expires":1})",
        R"({"session":")" + std::string(32, 'A') + R"(","imsi":")" + kPcid +
            R"(","restricted":true,"expires":1})",
        R"({"session":")" + std::string(32, 'a') + R"(","imsi":")" + kPcid +
            R"(","restricted":true,"expires":1,"more":1})"}) {
    SCOPED_TRACE(body);
    home_.answer_with(nullptr);
    const Json c = json_of(attach(kPcid));
    home_.answer_with([body](const std::string& endpoint) -> std::optional<HttpResponse> {
      if (endpoint != "sessions") return std::nullopt;
      HttpResponse r;
      r.status = 201;
      r.content_type = "application/json";
      r.body = body;
      return r;
    });
    const auto s = respond(c["attach_id"], d.res(c));
    EXPECT_EQ(s.status, 400);
    EXPECT_EQ(code_of(s), "bad_format");
  }
  EXPECT_EQ(service_->vno().pending(), 1u);  // the one left above
}

// Every endpoint's malformed requests: exact status and code, and neither the pending challenge
// nor the session changed (both still work afterwards).
TEST_F(VnoServiceTest, MalformedRequestsAreRefusedAndChangeNothing) {
  Device operational, pcid;
  const Json session = attached(kImsi, operational);
  const std::string sid = session["session"];
  const Json challenge = json_of(attach(kPcid));
  const std::string aid = challenge["attach_id"];
  ASSERT_EQ(service_->vno().pending(), 1u);

  struct Case {
    std::string method, target, body, content_type;
    int status;
    std::string code;
  };
  const std::string json = "application/json";
  const std::string big(2048, ' ');
  const std::string response = "/v1/attach/" + aid + "/response";
  const std::string auts = "/v1/attach/" + aid + "/auts";
  const std::vector<Case> cases = {
      // POST /v1/attach
      {"POST", "/v1/attach", "{", json, 400, "bad_format"},
      {"POST", "/v1/attach", "[]", json, 400, "bad_format"},
      {"POST", "/v1/attach", "null", json, 400, "bad_format"},
      {"POST", "/v1/attach", R"({"imsi":1})", json, 400, "bad_format"},
      {"POST", "/v1/attach", R"({"imsi":null})", json, 400, "bad_format"},
      {"POST", "/v1/attach", R"({"imsi":"001019000000004","x":1})", json, 400, "bad_format"},
      {"POST", "/v1/attach", R"({"imsi":"001019000000004","imsi":"1"})", json, 400, "bad_format"},
      {"POST", "/v1/attach", "{}", json, 400, "missing_argument"},
      {"POST", "/v1/attach", R"({"imsi":"00101"})", json, 400, "invalid_argument"},
      {"POST", "/v1/attach", R"({"imsi":"0010190000000041"})", json, 400, "invalid_argument"},
      {"POST", "/v1/attach", R"({"imsi":"00101900000000a"})", json, 400, "invalid_argument"},
      {"POST", "/v1/attach", R"({"imsi":"001019000000004"})" + big, json, 413, "payload_too_large"},
      {"POST", "/v1/attach", R"({"imsi":"001019000000004"})", "text/plain", 415,
       "unsupported_media_type"},
      {"GET", "/v1/attach", "", "", 405, "method_not_allowed"},
      // POST /v1/attach/{attach_id}/response
      {"POST", response, "{", json, 400, "bad_format"},
      {"POST", response, R"({"res":12345678})", json, 400, "bad_format"},
      {"POST", response, R"({"res":"0011223344556677","x":1})", json, 400, "bad_format"},
      {"POST", response, "{}", json, 400, "missing_argument"},
      {"POST", response, R"({"res":"zz11223344556677"})", json, 400, "invalid_argument"},
      {"POST", response, R"({"res":"001122"})", json, 400, "invalid_argument"},
      {"POST", response, R"({"res":")" + std::string(34, '0') + "\"}", json, 400,
       "invalid_argument"},
      {"POST", response, R"({"res":"0011223344556677"})" + big, json, 413, "payload_too_large"},
      {"POST", response, R"({"res":"0011223344556677"})", "", 415, "unsupported_media_type"},
      {"POST", "/v1/attach/" + std::string(32, 'A') + "/response", R"({"res":"0011223344556677"})",
       json, 400, "invalid_argument"},
      {"POST", "/v1/attach/" + aid.substr(1) + "/response", R"({"res":"0011223344556677"})", json,
       400, "invalid_argument"},
      {"POST", "/v1/attach/" + aid + "0/response", R"({"res":"0011223344556677"})", json, 400,
       "invalid_argument"},
      {"POST", "/v1/attach/" + std::string(32, '0') + "/response", R"({"res":"0011223344556677"})",
       json, 404, "not_found"},
      {"POST", "/v1/attach//response", R"({"res":"0011223344556677"})", json, 404, "not_found"},
      {"PUT", response, R"({"res":"0011223344556677"})", json, 405, "method_not_allowed"},
      // POST /v1/attach/{attach_id}/auts
      {"POST", auts, "{", json, 400, "bad_format"},
      {"POST", auts, R"({"auts":["00"]})", json, 400, "bad_format"},
      {"POST", auts, R"({"auts":")" + std::string(28, '0') + R"(","res":"00"})", json, 400,
       "bad_format"},
      {"POST", auts, "{}", json, 400, "missing_argument"},
      {"POST", auts, R"({"auts":")" + std::string(26, '0') + "\"}", json, 400, "invalid_argument"},
      {"POST", auts, R"({"auts":")" + std::string(30, '0') + "\"}", json, 400, "invalid_argument"},
      {"POST", auts, R"({"auts":")" + std::string(28, '0') + "\"}" + big, json, 413,
       "payload_too_large"},
      {"POST", "/v1/attach/not-an-id/auts", R"({"auts":")" + std::string(28, '0') + "\"}", json,
       400, "invalid_argument"},
      {"POST", "/v1/attach/" + std::string(32, '1') + "/auts",
       R"({"auts":")" + std::string(28, '0') + "\"}", json, 404, "not_found"},
      // DELETE /v1/sessions/{session}
      {"DELETE", "/v1/sessions/" + sid.substr(0, 31), "", "", 400, "invalid_argument"},
      {"DELETE", "/v1/sessions/%20" + sid.substr(3), "", "", 400, "invalid_argument"},
      {"DELETE", "/v1/sessions/" + std::string(32, 'f'), "", "", 404, "not_found"},
      {"DELETE", "/v1/sessions/" + sid + "/x", "", "", 404, "not_found"},
      {"DELETE", "/v1/sessions/" + sid, big, "text/plain", 413, "payload_too_large"},
      {"GET", "/v1/sessions/" + sid, "", "", 405, "method_not_allowed"},
      // Elsewhere
      {"POST", "/v1/attachments", "{}", json, 404, "not_found"},
      {"GET", "/", "", "", 404, "not_found"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.method + " " + c.target + " " + c.body.substr(0, 80));
    HttpRequest r = request(c.method, c.target, c.body, c.content_type);
    r.content_type = c.content_type;
    const auto answer = handle(r);
    EXPECT_EQ(answer.status, c.status) << answer.body;
    EXPECT_EQ(code_of(answer), c.code) << answer.body;
    EXPECT_EQ(answer.body.find("0011223344556677"), std::string::npos);  // no value echoed
    EXPECT_EQ(service_->vno().pending(), 1u);
    EXPECT_TRUE(service_->vno().session(sid));
  }
  EXPECT_EQ(home_.sessions().size(), 1u);
  EXPECT_EQ(home_.resyncs(), 0);

  // Both still work.
  EXPECT_EQ(respond(aid, pcid.res(challenge)).status, 201);
  EXPECT_EQ(handle(request("DELETE", "/v1/sessions/" + sid)).status, 204);
}

// Installs a log sink collecting lines at debug level, and restores stderr and the level even
// when a test fails half-way.
class LogCapture {
 public:
  LogCapture() : saved_(log::level()) {
    log::set_sink([this](std::string_view line) {
      std::lock_guard lock(mu_);
      lines_.emplace_back(line);
    });
    log::set_level(log::Level::debug);
  }
  ~LogCapture() {
    log::set_level(saved_);
    log::set_sink(nullptr);
  }
  std::vector<std::string> lines() const {
    std::lock_guard lock(mu_);
    return lines_;
  }

 private:
  log::Level saved_;
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

TEST_F(VnoServiceTest, RefusalsAreLoggedAtDebugWithoutSecrets) {
  std::optional<LogCapture> capture(std::in_place);
  Device d;
  const Json c = json_of(attach(kPcid));
  std::string res = d.res(c);
  res[0] = res[0] == '0' ? '1' : '0';
  EXPECT_EQ(respond(c["attach_id"], res).status, 422);
  Device other;
  const Json s = attached(kImsi, other);
  EXPECT_EQ(attach(kImsi).status, 200);
  EXPECT_EQ(handle(request("DELETE", "/v1/sessions/" + std::string(32, '0'))).status, 404);
  const auto lines = capture->lines();
  capture.reset();

  bool saw_refusal = false;
  for (const std::string& line : lines) {
    SCOPED_TRACE(line);
    if (line.find("mac_mismatch") != std::string::npos) saw_refusal = true;
    EXPECT_EQ(line.find(res), std::string::npos);
    EXPECT_EQ(line.find(c["attach_id"].get<std::string>()), std::string::npos);
    EXPECT_EQ(line.find(s["session"].get<std::string>()), std::string::npos);
    EXPECT_EQ(line.find(s["home_session"].get<std::string>()), std::string::npos);
  }
  EXPECT_TRUE(saw_refusal);
}

TEST_F(VnoServiceTest, AnUnusableConfigurationIsRefusedNamingTheField) {
  auto c = config(home_.url());
  c.home_client.reset();
  auto r = create(std::move(c));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(r.error().message.find("home_client"), std::string::npos);

  c = config(home_.url());
  c.homes["ro"] = "http://127.0.0.1:1";
  r = create(std::move(c));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(r.error().message.find("homes.ro"), std::string::npos);

  c = config(home_.url());
  c.routes.push_back({"00102", "nowhere", false});
  r = create(std::move(c));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(r.error().message.find("routes[2].home"), std::string::npos);

  c = config(home_.url());
  c.routes[1].drf_url = "http://127.0.0.1:1";
  r = create(std::move(c));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(r.error().message.find("routes[1].drf_url"), std::string::npos);

  // Only a PCID range leads to a DRF.
  c = config(home_.url());
  c.routes[0].drf_url = home_.url();
  r = create(std::move(c));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(r.error().message.find("routes[0].drf_url"), std::string::npos);

  c = config(home_.url());
  c.gateway.host = "not an address";
  r = create(std::move(c));
  ASSERT_FALSE(r);
}

// The device's view: attach over TLS, then reach the RO through the gateway and nowhere else.
TEST_F(VnoServiceTest, OverTlsAPcidSessionTunnelsOnlyToTheRestrictedDestinations) {
  auto server = start_server(service_->handler(), tls_options());
  ASSERT_TRUE(server);
  auto device = make_client();
  Device d;
  auto c = device->post_json(server->url() + "/v1/attach", Json{{"imsi", kPcid}}.dump());
  ASSERT_TRUE(c);
  ASSERT_EQ(c->status, 200) << c->body;
  const Json challenge = json_of(*c);
  auto s = device->post_json(
      server->url() + "/v1/attach/" + challenge["attach_id"].get<std::string>() + "/response",
      Json{{"res", d.res(challenge)}}.dump());
  ASSERT_TRUE(s);
  ASSERT_EQ(s->status, 201) << s->body;
  const Json session = json_of(*s);
  ASSERT_EQ(session["gateway"], service_->gateway_address());
  EXPECT_EQ(session["drf_url"], home_.url());

  auto through = [&](const std::string& credential) {
    net::HttpsClientOptions o;
    o.proxy = session["gateway"].get<std::string>();
    o.proxy_credential = credential;
    return make_client("", o);
  };
  auto tunnelled = through(session["session"]);
  auto ro = tunnelled->get(ro_->url() + "/");
  ASSERT_TRUE(ro) << ro.error().message;
  EXPECT_EQ(ro->status, 200);
  EXPECT_EQ(json_of(*ro)["server"], "ro");

  auto elsewhere = tunnelled->get(elsewhere_->url() + "/");
  ASSERT_FALSE(elsewhere);
  EXPECT_EQ(elsewhere.error().code, ErrorCode::access_denied);
  auto vno_itself = tunnelled->get(server->url() + "/healthz");
  ASSERT_FALSE(vno_itself);
  EXPECT_EQ(vno_itself.error().code, ErrorCode::access_denied);
  EXPECT_EQ(service_->vno().refused_forwards(), 2u);

  auto unknown = through(std::string(32, '0'))->get(ro_->url() + "/");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, ErrorCode::not_found);

  // An operational session is not restricted.
  Device other;
  const Json operational = attached(kImsi, other);
  auto free = through(operational["session"])->get(elsewhere_->url() + "/");
  ASSERT_TRUE(free) << free.error().message;
  EXPECT_EQ(json_of(*free)["server"], "elsewhere");
  EXPECT_EQ(service_->vno().refused_forwards(), 2u);

  // Detached over TLS: the gateway forgets the session.
  auto gone = device->request(
      "DELETE", server->url() + "/v1/sessions/" + session["session"].get<std::string>());
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 204);
  auto after = through(session["session"])->get(ro_->url() + "/");
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, ErrorCode::not_found);

  const std::string m = metrics();
  EXPECT_NE(m.find("mcim_gateway_tunnels_total"), std::string::npos);
  EXPECT_NE(m.find(R"(mcim_http_requests_total{method="POST",route="/v1/attach",status="200"})"),
            std::string::npos);
}

}  // namespace
}  // namespace mcim::roles
