#include "net/router.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "net/tls_context.h"

namespace mcim::net {

namespace {

struct Segment {
  std::string text;  // the literal, or the parameter's name
  bool param = false;
};

struct Route {
  std::string method;
  RouteHandler handler;
  RouteOptions options;
};

struct Pattern {
  std::string text;
  std::vector<Segment> segments;
  std::vector<Route> routes;  // one per method
  RouteMetrics* metrics = nullptr;
};

constexpr std::string_view kUnmatchedRoute = "(unmatched)";
constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// "/a/{b}/c" → "a", "{b}", "c"; "/" → "".
std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  std::size_t start = 1;
  for (;;) {
    const auto slash = path.find('/', start);
    out.push_back(path.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) return out;
    start = slash + 1;
  }
}

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

bool is_literal_char(char c) {
  return is_name_char(c) || c == '-' || c == '.' || c == '~' || c == ':';
}

Result<std::vector<Segment>> parse_pattern(std::string_view pattern) {
  if (!pattern.starts_with('/')) {
    return fail(ErrorCode::invalid_argument, "route pattern: must start with /");
  }
  std::vector<Segment> out;
  for (std::string_view s : split_path(pattern)) {
    if (s.size() > 2 && s.front() == '{' && s.back() == '}') {
      const auto name = s.substr(1, s.size() - 2);
      if (!std::all_of(name.begin(), name.end(), is_name_char)) {
        return fail(ErrorCode::invalid_argument, "route pattern: bad parameter name");
      }
      out.push_back({std::string(name), true});
    } else if (std::all_of(s.begin(), s.end(), is_literal_char) && (!s.empty() || pattern == "/")) {
      out.push_back({std::string(s), false});
    } else {
      return fail(ErrorCode::invalid_argument, "route pattern: bad segment");
    }
  }
  return out;
}

bool matches(const Pattern& p, const std::vector<std::string_view>& path) {
  if (p.segments.size() != path.size()) return false;
  for (std::size_t i = 0; i < path.size(); ++i) {
    const Segment& s = p.segments[i];
    if (s.param ? path[i].empty() : s.text != path[i]) return false;
  }
  return true;
}

// Both match the same path: the first segment where one is literal and the other a parameter
// decides, so "/v1/pcids/batch" wins over "/v1/pcids/{pcid}".
bool more_specific(const Pattern& a, const Pattern& b) {
  for (std::size_t i = 0; i < a.segments.size(); ++i) {
    if (a.segments[i].param != b.segments[i].param) return !a.segments[i].param;
  }
  return false;
}

bool is_json_content_type(std::string_view ct) {
  const auto semi = ct.find(';');
  std::string_view media = ct.substr(0, semi);
  while (!media.empty() && (media.back() == ' ' || media.back() == '\t')) media.remove_suffix(1);
  return detail::iequals(media, kJsonContentType);
}

bool is_method_token(std::string_view m) {
  return !m.empty() && std::all_of(m.begin(), m.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

std::string allow_header(const Pattern& p) {
  std::vector<std::string_view> methods;
  for (const Route& r : p.routes) methods.push_back(r.method);
  std::sort(methods.begin(), methods.end());
  return fmt::format("{}", fmt::join(methods, ", "));
}

}  // namespace

struct Router::State {
  std::string service;
  std::shared_ptr<Metrics> metrics;
  std::vector<Pattern> patterns;  // fixed once serving
  RouteMetrics* unmatched = nullptr;
  std::function<Result<void>()> health;

  HttpResponse handle(const HttpRequest& request) const;
  const Pattern* find(const std::vector<std::string_view>& path) const;
  HttpResponse dispatch(const HttpRequest& http, const Pattern*& matched) const;
  HttpResponse run(const Route& route, Request& request) const;
};

Authorizer require_client_certificate() {
  return [](const Peer& peer) -> Result<void> {
    if (!peer.certificate) {
      return fail(ErrorCode::unauthenticated, "a TLS client certificate is required");
    }
    return {};
  };
}

Authorizer require_operator_if(std::function<bool(std::string_view)> allowed) {
  return [allowed = std::move(allowed)](const Peer& peer) -> Result<void> {
    if (!peer.certificate) {
      return fail(ErrorCode::unauthenticated, "a TLS client certificate is required");
    }
    const std::string* id = peer.operator_id();
    if (id == nullptr) {
      return fail(ErrorCode::access_denied,
                  "the client certificate names no operator (SAN URI urn:mcim:operator:<id>)");
    }
    if (!allowed(*id)) {
      return fail(ErrorCode::access_denied, "this operator may not use this endpoint");
    }
    return {};
  };
}

Authorizer require_operator(std::vector<std::string> operator_ids) {
  return require_operator_if([ids = std::move(operator_ids)](std::string_view id) {
    return std::find(ids.begin(), ids.end(), id) != ids.end();
  });
}

std::string_view Request::param(std::string_view name) const {
  for (const auto& [n, v] : params) {
    if (n == name) return v;
  }
  return {};
}

const Pattern* Router::State::find(const std::vector<std::string_view>& path) const {
  const Pattern* best = nullptr;
  for (const Pattern& p : patterns) {
    if (matches(p, path) && (best == nullptr || more_specific(p, *best))) best = &p;
  }
  return best;
}

// The route's checks (authorisation, body), then its handler.
HttpResponse Router::State::run(const Route& route, Request& request) const {
  const RouteOptions& o = route.options;
  if (o.authorize) {
    if (auto r = o.authorize(request.peer()); !r) {
      HttpResponse denied = error_response(r.error());
      if (denied.status == 401) {
        denied.headers.emplace_back("WWW-Authenticate", fmt::format("mTLS realm=\"{}\"", service));
      }
      return denied;
    }
  }
  const std::string& body = request.http.body;
  if (o.max_body != 0 && body.size() > o.max_body) {
    return error_response(413, kPayloadTooLarge,
                          fmt::format("body: larger than {} bytes", o.max_body));
  }
  if (o.body) {
    if (!is_json_content_type(request.http.content_type)) {
      return error_response(415, kUnsupportedMediaType,
                            "body: Content-Type must be application/json");
    }
    auto json = o.body->parse(body);
    if (!json) return error_response(json.error());
    request.json = std::move(*json);
  }
  try {
    return route.handler(request);
  } catch (const std::exception&) {
    return error_response(500, to_string(ErrorCode::internal), "internal error");
  }
}

HttpResponse Router::State::dispatch(const HttpRequest& http, const Pattern*& matched) const {
  std::string_view target = http.target;
  const auto q = target.find('?');
  const std::string_view path = target.substr(0, q);
  if (!path.starts_with('/')) {
    return error_response(400, kBadRequest, "target: not an absolute path");
  }
  const auto segments = split_path(path);
  matched = find(segments);
  if (matched == nullptr)
    return error_response(404, to_string(ErrorCode::not_found), "no such path");
  const auto route = std::find_if(matched->routes.begin(), matched->routes.end(),
                                  [&](const Route& r) { return r.method == http.method; });
  if (route == matched->routes.end()) {
    HttpResponse r = error_response(405, kMethodNotAllowed, "method not allowed on this path");
    r.headers.emplace_back("Allow", allow_header(*matched));
    return r;
  }
  Request request{http, path, q == std::string_view::npos ? "" : target.substr(q + 1), {}, {}};
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (matched->segments[i].param)
      request.params.emplace_back(matched->segments[i].text, segments[i]);
  }
  return run(*route, request);
}

Router::Router(std::string service, std::shared_ptr<Metrics> metrics)
    : state_(std::make_shared<State>()) {
  state_->service = std::move(service);
  state_->metrics = metrics ? std::move(metrics) : std::make_shared<Metrics>(state_->service);
  state_->unmatched = &state_->metrics->route(kUnmatchedRoute);
  const auto* s = state_.get();  // the handlers live inside *state_: no owning cycle
  (void)add("GET", "/healthz", [s](const Request&) {
    const bool ok = !s->health || s->health().has_value();
    return json_response(ok ? 200 : 503,
                         {{"status", ok ? "ok" : "unavailable"}, {"service", s->service}});
  });
  (void)add("GET", "/metrics", [s](const Request&) {
    HttpResponse r;
    r.content_type = std::string(kMetricsContentType);
    r.body = s->metrics->render();
    r.headers.emplace_back("Cache-Control", "no-store");
    return r;
  });
}

Result<void> Router::add(std::string_view method, std::string_view pattern, RouteHandler handler,
                         RouteOptions options) {
  if (!is_method_token(method)) return fail(ErrorCode::invalid_argument, "route: bad method");
  if (!handler) return fail(ErrorCode::invalid_argument, "route: no handler");
  auto segments = parse_pattern(pattern);
  if (!segments) return std::unexpected(segments.error());
  auto it = std::find_if(state_->patterns.begin(), state_->patterns.end(),
                         [&](const Pattern& p) { return p.text == pattern; });
  if (it == state_->patterns.end()) {
    Pattern p{std::string(pattern), std::move(*segments), {}, &state_->metrics->route(pattern)};
    it = state_->patterns.insert(state_->patterns.end(), std::move(p));
  }
  for (const Route& r : it->routes) {
    if (r.method == method) {
      return fail(ErrorCode::already_exists,
                  fmt::format("route {} {}: added twice", method, pattern));
    }
  }
  it->routes.push_back(Route{std::string(method), std::move(handler), std::move(options)});
  return {};
}

void Router::set_health_check(std::function<Result<void>()> check) {
  state_->health = std::move(check);
}

HttpResponse Router::State::handle(const HttpRequest& request) const {
  const auto now = std::chrono::steady_clock::now();
  // A held request is counted once, when it is answered, with the time since it arrived.
  const auto start = request.received == std::chrono::steady_clock::time_point{}
                         ? now
                         : std::min(request.received, now);
  const Pattern* matched = nullptr;
  HttpResponse response = dispatch(request, matched);
  if (response.hold) return response;
  RouteMetrics* m = matched != nullptr ? matched->metrics : unmatched;
  m->observe(request.method, response.status, std::chrono::steady_clock::now() - start);
  return response;
}

HttpResponse Router::handle(const HttpRequest& request) const { return state_->handle(request); }

HttpHandler Router::handler() const {
  return [state = state_](const HttpRequest& request) { return state->handle(request); };
}

const std::string& Router::service() const { return state_->service; }
Metrics& Router::metrics() const { return *state_->metrics; }
const std::shared_ptr<Metrics>& Router::metrics_ptr() const { return state_->metrics; }

}  // namespace mcim::net
