#include "roles/vno/service.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "common/ascii.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/random.h"
#include "common/secure.h"
#include "net/http_error.h"
#include "net/json_schema.h"

namespace mcim::roles {
namespace {

using net::Json;
using net::JsonSchema;

constexpr std::string_view kLog = "vno";
// The device-facing bodies are a few dozen bytes; anything much larger is not an attach.
constexpr std::size_t kMaxBody = 1024;

constexpr std::string_view kAttach = "POST /v1/attach";
constexpr std::string_view kResponse = "POST /v1/attach/{attach_id}/response";
constexpr std::string_view kAuts = "POST /v1/attach/{attach_id}/auts";
constexpr std::string_view kDetach = "DELETE /v1/sessions/{session}";
constexpr std::string_view kEapClaim = "POST /v1/access/eap-sessions";

bool is_lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Attach and session ids are 128-bit random values in lowercase hex (Vno::new_id): a path segment
// of any other shape cannot name one, and is refused before it reaches the Vno.
bool valid_id(std::string_view s) { return s.size() == 32 && is_lower_hex(s); }

JsonSchema imsi_schema() {
  return JsonSchema::string(
      15, [](std::string_view s) { return ascii_digits(s); }, "6-15 digits", 6);
}

// --- The home's answers --------------------------------------------------------------------

JsonSchema vectors_answer_schema(unsigned count) {
  return JsonSchema::object(
      {required("vectors", JsonSchema::array(JsonSchema::object({
                                                 required("rand", JsonSchema::hex(16)),
                                                 required("autn", JsonSchema::hex(16)),
                                                 required("xres", JsonSchema::hex(4, 16)),
                                                 required("ck", JsonSchema::hex(16)),
                                                 required("ik", JsonSchema::hex(16)),
                                             }),
                                             count, 1))});
}

const JsonSchema& session_answer_schema() {
  static const JsonSchema schema = JsonSchema::object({
      // Exactly as the ICF issues them: the device presents it back to the RO verbatim.
      required("session", JsonSchema::string(32, valid_id, "32 lowercase hex digits", 32)),
      required("imsi", imsi_schema()),
      required("restricted", JsonSchema::boolean()),
      required("expires", JsonSchema::integer(0, std::numeric_limits<std::int64_t>::max())),
  });
  return schema;
}

// The response body holds XRES, CK and IK in hex: it must not linger in freed memory.
void wipe(std::string& s) {
  secure_wipe(s.data(), s.size());
  s.clear();
}

void wipe(aka::AuthVector& v) {
  secure_wipe(v.ck);
  secure_wipe(v.ik);
  secure_wipe(v.xres.bytes);
}

template <std::size_t N>
Bytes<N> fixed_hex(const Json& j) {
  // The schema has checked the size and the digits already.
  return *parse_hex_fixed<N>(j.get_ref<const std::string&>(), "vector");
}

}  // namespace

// --- HttpHomeAuth ----------------------------------------------------------------------------

HttpHomeAuth::HttpHomeAuth(std::shared_ptr<net::HttpsClient> client, std::string base_url,
                           std::string name)
    : client_(std::move(client)),
      base_url_(net::base_url(std::move(base_url))),
      name_(std::move(name)) {
  if (name_.empty()) name_ = base_url_;
}

Result<net::HttpResponse> HttpHomeAuth::call(std::string_view method, std::string_view path,
                                             const Json& body, int expected_status) {
  const std::string url = base_url_ + std::string(path);
  auto response = body.is_null()
                      ? client_->request(method, url)
                      : client_->request(method, url, body.dump(), net::kJsonContentType);
  // Whatever went wrong on the way (refused connection, timeout, a home certificate that does
  // not verify), the device can do nothing about it: it is the VNO's failure, io_error.
  if (!response) {
    return fail(ErrorCode::io_error, fmt::format("home {}: {}", name_, response.error().message));
  }
  if (response->status == expected_status) return std::move(*response);
  if (response->status >= 300 || response->status < 200) {
    Error e = net::error_from_response(*response, "home " + name_);
    wipe(response->body);
    return std::unexpected(std::move(e));
  }
  wipe(response->body);
  return fail(ErrorCode::bad_format, fmt::format("home {}: answered HTTP {} where {} was expected",
                                                 name_, response->status, expected_status));
}

Result<Json> HttpHomeAuth::parse_answer(net::HttpResponse& response, const JsonSchema& schema) {
  auto json = schema.parse(response.body);
  wipe(response.body);
  // Any refusal of the schema (missing member, bound) means the home spoke nonsense, not that
  // the device did: one code for all of them.
  if (!json) {
    return fail(ErrorCode::bad_format,
                fmt::format("home {}: answer: {}", name_, json.error().message));
  }
  return std::move(*json);
}

Result<std::vector<aka::AuthVector>> HttpHomeAuth::parse_vectors(net::HttpResponse& response,
                                                                 unsigned count) {
  auto json = parse_answer(response, vectors_answer_schema(count));
  if (!json) return std::unexpected(json.error());
  std::vector<aka::AuthVector> out;
  for (Json& v : (*json)["vectors"]) {
    aka::AuthVector av{};
    av.rand = fixed_hex<16>(v["rand"]);
    av.autn = fixed_hex<16>(v["autn"]);
    av.ck = fixed_hex<16>(v["ck"]);
    av.ik = fixed_hex<16>(v["ik"]);
    auto xres = parse_hex(v["xres"].get_ref<const std::string&>(), "xres");
    av.xres = aka::Res::of(*xres);
    secure_wipe(*xres);
    for (const char* secret : {"xres", "ck", "ik"}) wipe(v[secret].get_ref<std::string&>());
    out.push_back(av);
    wipe(av);
  }
  return out;
}

Result<std::vector<aka::AuthVector>> HttpHomeAuth::vectors(std::string_view imsi, unsigned count,
                                                           std::string_view /*vno*/) {
  // The home knows the VNO by its client certificate; `vno` is not sent.
  auto response = call("POST", "/v1/auth/vectors", {{"imsi", imsi}, {"count", count}}, 200);
  if (!response) return std::unexpected(response.error());
  return parse_vectors(*response, count);
}

Result<std::vector<aka::AuthVector>> HttpHomeAuth::resynchronise(std::string_view imsi,
                                                                 const aka::Rand& rand,
                                                                 const aka::Auts& auts,
                                                                 std::string_view /*vno*/) {
  const Json body = {{"imsi", imsi}, {"rand", to_hex(rand)}, {"auts", to_hex(auts)}, {"count", 1}};
  auto response = call("POST", "/v1/auth/resync", body, 200);
  if (!response) return std::unexpected(response.error());
  return parse_vectors(*response, 1);
}

Result<std::string> HttpHomeAuth::open_session(std::string_view imsi, std::string_view /*vno*/) {
  auto response = call("POST", "/v1/auth/sessions", {{"imsi", imsi}}, 201);
  if (!response) return std::unexpected(response.error());
  auto json = parse_answer(*response, session_answer_schema());
  if (!json) return std::unexpected(json.error());
  if ((*json)["imsi"].get_ref<const std::string&>() != imsi) {
    return fail(ErrorCode::bad_format,
                fmt::format("home {}: answer: the session names another IMSI", name_));
  }
  return (*json)["session"].get<std::string>();
}

Result<void> HttpHomeAuth::close_session(std::string_view session_id) {
  auto response = call("DELETE", fmt::format("/v1/auth/sessions/{}", session_id), nullptr, 204);
  if (!response) return std::unexpected(response.error());
  return {};
}

// --- VnoService ----------------------------------------------------------------------------

struct VnoService::State {
  State(VnoServiceConfig c, const Clock& clock) : config(std::move(c)), router("vno") {
    for (const auto& [name, url] : config.homes) {
      homes.emplace(name, std::make_unique<HttpHomeAuth>(config.home_client, url, name));
    }
    std::map<std::string, HomeAuth*> ports;
    for (const auto& [name, home] : homes) ports.emplace(name, home.get());
    vno.emplace(config.options, config.routes, std::move(ports), clock, random);
  }

  Result<void> add_routes();
  net::HttpResponse refuse(std::string_view route, const Error& e) const;
  Json challenge_json(const Challenge& c) const {
    return {{"attach_id", c.attach_id}, {"rand", to_hex(c.rand)}, {"autn", to_hex(c.autn)}};
  }

  net::HttpResponse attach(const net::Request& request);
  net::HttpResponse respond_res(const net::Request& request);
  net::HttpResponse respond_auts(const net::Request& request);
  net::HttpResponse detach(const net::Request& request);
  net::HttpResponse claim_eap(const net::Request& request);
  Result<void> start_relay();
  Json session_json(const VnoSession& s) const;

  VnoServiceConfig config;
  std::map<std::string, std::unique_ptr<HttpHomeAuth>> homes;
  // The Vno draws ids both under its lock and outside it; OsRandom keeps no state of its own
  // (RAND_bytes is thread-safe), so one instance may serve every worker thread.
  OsRandom random;
  std::optional<Vno> vno;
  net::Router router;
  // Last: it is stopped first, while the Vno its authoriser calls still exists.
  std::unique_ptr<net::ConnectProxy> gateway;
  std::unique_ptr<RadiusRelay> relay;  // calls the Vno too; stopped before the gateway
};

// `route` is the pattern, not the path: a path holds an attach id or a session id, which are
// bearer tokens.
net::HttpResponse VnoService::State::refuse(std::string_view route, const Error& e) const {
  // A 5xx hides the message from the device (error_response): the log keeps it. Messages name
  // checks and codes only, never RES or vectors.
  if (net::http_status(e.code) >= 500) {
    log::warn(kLog, "{}: {}", route, e);
  } else {
    log::debug(kLog, "{}: refused: {}", route, e);
  }
  return net::error_response(e);
}

net::HttpResponse VnoService::State::attach(const net::Request& request) {
  auto c = vno->attach(request.json["imsi"].get_ref<const std::string&>());
  if (!c) return refuse(kAttach, c.error());
  router.metrics().flow_step("attach_challenged");
  return net::json_response(200, challenge_json(*c));
}

net::HttpResponse VnoService::State::respond_res(const net::Request& request) {
  const std::string_view attach_id = request.param("attach_id");
  if (!valid_id(attach_id)) {
    return refuse(kResponse,
                  Error(ErrorCode::invalid_argument, "attach_id: must be 32 hex digits"));
  }
  auto res = parse_hex(request.json["res"].get_ref<const std::string&>(), "res");
  if (!res) return refuse(kResponse, res.error());
  auto s = vno->complete(attach_id, *res);
  secure_wipe(*res);
  if (!s) return refuse(kResponse, s.error());
  router.metrics().flow_step("attach_authenticated");
  log::debug(kLog, "attached IMSI prefix {} to home {} ({})", s->imsi.substr(0, 6), s->home,
             s->restricted ? "restricted" : "operational");
  return net::json_response(201, session_json(*s));
}

// The answer of an attach and of an EAP claim alike: the device goes on the same way.
Json VnoService::State::session_json(const VnoSession& s) const {
  Json body = {{"session", s.id},
               {"home_session", s.home_session},
               {"imsi", s.imsi},
               {"restricted", s.restricted}};
  if (s.restricted) {
    body["gateway"] = gateway->address();
    body["drf_url"] = s.drf_url;
  }
  return body;
}

net::HttpResponse VnoService::State::claim_eap(const net::Request& request) {
  auto proof = parse_hex(request.json["proof"].get_ref<const std::string&>(), "proof");
  if (!proof) return refuse(kEapClaim, proof.error());
  auto s = vno->claim_eap(request.json["identity"].get_ref<const std::string&>(), *proof);
  if (!s) return refuse(kEapClaim, s.error());
  router.metrics().flow_step("eap_session_claimed");
  log::debug(kLog, "EAP session claimed for IMSI prefix {} at home {} ({})", s->imsi.substr(0, 6),
             s->home, s->restricted ? "restricted" : "operational");
  return net::json_response(201, session_json(*s));
}

net::HttpResponse VnoService::State::respond_auts(const net::Request& request) {
  const std::string_view attach_id = request.param("attach_id");
  if (!valid_id(attach_id)) {
    return refuse(kAuts, Error(ErrorCode::invalid_argument, "attach_id: must be 32 hex digits"));
  }
  auto auts = parse_hex_fixed<14>(request.json["auts"].get_ref<const std::string&>(), "auts");
  if (!auts) return refuse(kAuts, auts.error());
  auto c = vno->resynchronise(attach_id, *auts);
  if (!c) return refuse(kAuts, c.error());
  router.metrics().flow_step("attach_resynchronised");
  return net::json_response(200, challenge_json(*c));
}

net::HttpResponse VnoService::State::detach(const net::Request& request) {
  const std::string_view session = request.param("session");
  if (!valid_id(session)) {
    return refuse(kDetach, Error(ErrorCode::invalid_argument, "session: must be 32 hex digits"));
  }
  if (auto r = vno->detach(session); !r) return refuse(kDetach, r.error());
  router.metrics().flow_step("detach");
  net::HttpResponse r;
  r.status = 204;
  r.content_type.clear();
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

Result<void> VnoService::State::add_routes() {
  net::RouteOptions json_body;
  json_body.max_body = kMaxBody;
  auto with = [&](JsonSchema schema) {
    net::RouteOptions o = json_body;
    o.body = std::move(schema);
    return o;
  };
  const auto attach_schema = JsonSchema::object({required("imsi", imsi_schema())});
  const auto res_schema = JsonSchema::object({required("res", JsonSchema::hex(4, 16))});
  const auto auts_schema = JsonSchema::object({required("auts", JsonSchema::hex(14))});
  // The handlers live in the router, which lives in this State: a raw pointer is no cycle.
  State* s = this;
  if (auto r = router.add(
          "POST", "/v1/attach", [s](const net::Request& q) { return s->attach(q); },
          with(attach_schema));
      !r) {
    return r;
  }
  if (auto r = router.add(
          "POST", "/v1/attach/{attach_id}/response",
          [s](const net::Request& q) { return s->respond_res(q); }, with(res_schema));
      !r) {
    return r;
  }
  if (auto r = router.add(
          "POST", "/v1/attach/{attach_id}/auts",
          [s](const net::Request& q) { return s->respond_auts(q); }, with(auts_schema));
      !r) {
    return r;
  }
  if (auto r = router.add(
          "DELETE", "/v1/sessions/{session}", [s](const net::Request& q) { return s->detach(q); },
          json_body);
      !r) {
    return r;
  }
  const auto claim_schema = JsonSchema::object({
      required("identity", JsonSchema::string(kMaxNai)),
      required("proof", JsonSchema::hex(32)),
  });
  return router.add(
      "POST", "/v1/access/eap-sessions", [s](const net::Request& q) { return s->claim_eap(q); },
      with(claim_schema));
}

namespace {

Result<void> check_config(const VnoServiceConfig& c) {
  if (c.options.name.empty()) {
    return fail(ErrorCode::invalid_argument, "options.name: the VNO's operator id is empty");
  }
  if (!c.home_client) {
    return fail(ErrorCode::invalid_argument, "home_client: an mTLS client is required");
  }
  for (const auto& [name, url] : c.homes) {
    auto u = net::parse_url(url);
    if (!u || !u->tls) {
      return fail(ErrorCode::invalid_argument, fmt::format("homes.{}: must be an https URL", name));
    }
  }
  for (std::size_t i = 0; i < c.routes.size(); ++i) {
    const Route& r = c.routes[i];
    if (r.prefix.empty() || r.prefix.size() > 15 || !ascii_digits(r.prefix)) {
      return fail(ErrorCode::invalid_argument,
                  fmt::format("routes[{}].prefix: must be 1-15 digits", i));
    }
    if (!c.homes.contains(r.home)) {
      return fail(ErrorCode::invalid_argument,
                  fmt::format("routes[{}].home: no URL in homes for this home", i));
    }
    if (!r.drf_url.empty()) {
      auto u = net::parse_url(r.drf_url);
      if (!u || !u->tls) {
        return fail(ErrorCode::invalid_argument,
                    fmt::format("routes[{}].drf_url: must be an https URL", i));
      }
      if (!r.provisioning) {
        return fail(ErrorCode::invalid_argument,
                    fmt::format("routes[{}].drf_url: only a provisioning route has a DRF", i));
      }
    }
  }
  return {};
}

// The RO serves its DRF beside the ICF the VNO already calls, so a provisioning route without a
// DRF URL of its own points the device at its home's URL.
void default_drf_urls(VnoServiceConfig& c) {
  for (Route& r : c.routes) {
    if (r.provisioning && r.drf_url.empty()) r.drf_url = c.homes.at(r.home);
  }
}

}  // namespace

Result<std::unique_ptr<VnoService>> VnoService::create(VnoServiceConfig config,
                                                       const Clock& clock) {
  if (auto r = check_config(config); !r) return std::unexpected(r.error());
  default_drf_urls(config);
  net::ConnectProxyOptions gateway_options = config.gateway;
  auto state = std::make_unique<State>(std::move(config), clock);
  if (auto r = state->add_routes(); !r) return std::unexpected(r.error());
  std::unique_ptr<VnoService> service(new VnoService(std::move(state)));
  if (!gateway_options.metrics) gateway_options.metrics = service->state_->router.metrics_ptr();
  if (gateway_options.thread_name.empty()) gateway_options.thread_name = "vno-gw";
  auto gateway = net::ConnectProxy::start(gateway_options, service->gateway_authorizer());
  if (!gateway) return std::unexpected(gateway.error());
  service->state_->gateway = std::move(*gateway);
  log::info(kLog, "gateway listening on {}", service->state_->gateway->address());
  if (auto r = service->state_->start_relay(); !r) return std::unexpected(r.error());
  return service;
}

// The relay hands each verified Access-Accept to the Vno, which opens the session at the home
// before the Accept goes on to the NAS.
Result<void> VnoService::State::start_relay() {
  if (!config.non3gpp) return {};
  RadiusRelayOptions o = *config.non3gpp;
  Vno* v = &*vno;
  o.on_accept = [v](std::string_view identity, ByteView msk) {
    return v->grant_eap(identity, msk);
  };
  auto r = RadiusRelay::start(std::move(o));
  if (!r) return with_prefix(r.error(), "non3gpp");
  relay = std::move(*r);
  return {};
}

VnoService::VnoService(std::unique_ptr<State> state) : state_(std::move(state)) {}

VnoService::~VnoService() {
  // The tunnels' authoriser reads the Vno: no worker may run it once destruction begins.
  if (state_ && state_->relay) state_->relay->stop();
  if (state_ && state_->gateway) state_->gateway->stop();
}

RadiusRelay* VnoService::radius_relay() { return state_->relay.get(); }

const net::Router& VnoService::router() const { return state_->router; }
net::HttpHandler VnoService::handler() const { return state_->router.handler(); }

net::TunnelAuthorizer VnoService::gateway_authorizer() const {
  Vno* vno = &*state_->vno;
  return [vno](std::string_view credential, std::string_view authority) -> Result<void> {
    // The identity Vno::forward returns would be asserted to the destination by a PGW; a
    // CONNECT tunnel carries end-to-end TLS, so the destination learns it from the home session
    // the device presents instead.
    auto identity = vno->forward(credential, authority);
    if (!identity) {
      log::debug(kLog, "gateway: refused a tunnel: {}", identity.error());
      return std::unexpected(identity.error());
    }
    return {};
  };
}

std::string VnoService::gateway_address() const {
  return state_->gateway ? state_->gateway->address() : std::string();
}

Vno& VnoService::vno() { return *state_->vno; }

}  // namespace mcim::roles
