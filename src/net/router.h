// Routing of a service's requests: method + path pattern (literal segments and `{name}`
// parameters, e.g. "/v1/pcids/{pcid}/vectors") → handler, after a per-route authorisation of the
// Peer (401 unauthenticated without a client certificate, 403 access_denied for the wrong one)
// and, when the route declares a JsonSchema, after strict validation of its JSON body (415, 413,
// 400). Unknown paths are 404 not_found, known paths with another method 405 with Allow. Every
// router serves GET /healthz and GET /metrics, and records per-route request counts and latency
// in its Metrics. Configure with add() before serving; handle() is then thread-safe.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "net/http_error.h"
#include "net/http_server.h"
#include "net/json_schema.h"
#include "net/metrics.h"

namespace mcim::net {

// A request as a route handler sees it.
struct Request {
  const HttpRequest& http;
  std::string_view path;   // the target without its query
  std::string_view query;  // after '?', raw; empty when absent
  std::vector<std::pair<std::string_view, std::string_view>> params;  // raw path segments
  Json json;  // the validated body when the route has a schema, else null

  // A path parameter by name (empty when the pattern has none of that name).
  std::string_view param(std::string_view name) const;
  const Peer& peer() const { return http.peer; }
};

using RouteHandler = std::function<HttpResponse(const Request&)>;

// Decides whether the peer may call a route: an unauthenticated or access_denied Error refuses.
using Authorizer = std::function<Result<void>(const Peer&)>;

// A verified client certificate, any.
Authorizer require_client_certificate();
// A client certificate naming one of these operators (urn:mcim:operator:<id>).
Authorizer require_operator(std::vector<std::string> operator_ids);
// A client certificate naming an operator the predicate accepts (e.g. a roaming-agreement table
// that changes at run time).
Authorizer require_operator_if(std::function<bool(std::string_view operator_id)> allowed);

struct RouteOptions {
  Authorizer authorize;            // null: anyone (device-facing and public endpoints)
  std::optional<JsonSchema> body;  // a JSON body, validated before the handler
  std::size_t max_body = 0;        // 413 beyond; 0: only the server's limit applies
};

class Router {
 public:
  // `service` is the name /healthz reports; metrics are created when not given.
  explicit Router(std::string service, std::shared_ptr<Metrics> metrics = nullptr);

  // invalid_argument for a malformed method or pattern, already_exists for a method + pattern
  // registered twice (including the built-in GET /healthz and GET /metrics).
  Result<void> add(std::string_view method, std::string_view pattern, RouteHandler handler,
                   RouteOptions options = {});

  // /healthz answers 503 {"status":"unavailable",...} while this check fails (e.g. database
  // unreachable); the error's message is not shown.
  void set_health_check(std::function<Result<void>()> check);

  HttpResponse handle(const HttpRequest& request) const;
  // For HttpServer::start; shares this router's state, so the handler may outlive the Router.
  HttpHandler handler() const;

  const std::string& service() const;
  Metrics& metrics() const;
  const std::shared_ptr<Metrics>& metrics_ptr() const;

  struct State;  // router.cpp

 private:
  std::shared_ptr<State> state_;
};

}  // namespace mcim::net
