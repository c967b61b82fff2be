#include "roles/ro/auth_routes.h"

#include <array>
#include <memory>
#include <utility>

#include "common/hex.h"
#include "net/json_schema.h"
#include "roles/ro/service_util.h"

namespace mcim::ro {
namespace {

using net::Json;
using net::JsonSchema;
using net::Request;
using namespace service_util;

constexpr std::size_t kMaxJsonBody = 64 * 1024;

// The routes' state, shared by their handlers.
struct Auth {
  AuthRoutes routes;
  std::string component;  // the router's service: logs name the service mounting the routes

  void flow(std::string_view step) const {
    if (routes.flow) routes.flow(step);
  }

  Result<Json> vectors(const Request& r) const {
    const unsigned count = r.json.value("count", 1u);
    auto v = routes.icf().vectors(r.json.at("imsi").get<std::string>(), count, caller_of(r));
    if (!v) return std::unexpected(v.error());
    flow("vectors");
    return vectors_json(*v);
  }

  Result<Json> resync(const Request& r) const {
    const unsigned count = r.json.value("count", 1u);
    auto rand = parse_hex_fixed<16>(r.json.at("rand").get<std::string>(), "rand");
    if (!rand) return std::unexpected(rand.error());
    auto auts = parse_hex_fixed<14>(r.json.at("auts").get<std::string>(), "auts");
    if (!auts) return std::unexpected(auts.error());
    auto v = routes.icf().resynchronise(r.json.at("imsi").get<std::string>(), *rand, *auts, count,
                                        caller_of(r));
    if (!v) return std::unexpected(v.error());
    flow("resync");
    return vectors_json(*v);
  }

  Result<Json> open_session(const Request& r) const {
    auto s = routes.icf().open_session(r.json.at("imsi").get<std::string>(), caller_of(r));
    if (!s) return std::unexpected(s.error());
    flow("session_opened");
    return Json{{"session", s->id},
                {"imsi", s->imsi},
                {"restricted", s->restricted},
                {"expires", unix_seconds(s->expires)}};
  }

  Result<void> close_session(const Request& r) const {
    return routes.icf().close_session(r.param("session"), caller_of(r));
  }
};

}  // namespace

Result<void> add_auth_routes(net::Router& router, AuthRoutes routes) {
  using net::optional;
  using net::required;
  if (!routes.icf) return fail(ErrorCode::missing_argument, "auth routes: no Icf");
  const std::vector<std::string> partners = routes.roaming_partners;
  auto vno = [&] {
    return net::RouteOptions{net::require_operator(partners), std::nullopt, kMaxJsonBody};
  };
  auto json = [&](JsonSchema schema) {
    net::RouteOptions o = vno();
    o.body = std::move(schema);
    return o;
  };
  const JsonSchema count = JsonSchema::integer(1, kMaxVectorsPerRequest);
  auto auth = std::make_shared<const Auth>(Auth{std::move(routes), router.service()});
  // The handlers hold `auth`, so the component they log under lives as long as they do.
  const std::string_view component = auth->component;

  const std::array<Result<void>, 4> added = {
      router.add(
          "POST", "/v1/auth/vectors",
          json_handler(component, "vectors", [auth](const Request& r) { return auth->vectors(r); }),
          json(JsonSchema::object({required("imsi", imsi_schema()), optional("count", count)}))),
      router.add(
          "POST", "/v1/auth/resync",
          json_handler(component, "resync", [auth](const Request& r) { return auth->resync(r); }),
          json(JsonSchema::object(
              {required("imsi", imsi_schema()), required("rand", JsonSchema::hex(16)),
               required("auts", JsonSchema::hex(14)), optional("count", count)}))),
      router.add("POST", "/v1/auth/sessions",
                 json_handler(
                     component, "session",
                     [auth](const Request& r) { return auth->open_session(r); }, 201),
                 json(JsonSchema::object({required("imsi", imsi_schema())}))),
      router.add("DELETE", "/v1/auth/sessions/{session}",
                 void_handler(component, "close session",
                              [auth](const Request& r) { return auth->close_session(r); }),
                 vno()),
  };
  for (const auto& a : added) {
    if (!a) return a;
  }
  return {};
}

}  // namespace mcim::ro
