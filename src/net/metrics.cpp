#include "net/metrics.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace mcim::net {

namespace {

constexpr std::array<std::string_view, RouteMetrics::kMethods> kMethodNames = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"};

constexpr std::string_view kRequestsTotal = "mcim_http_requests_total";
constexpr std::string_view kRequestDuration = "mcim_http_request_duration_seconds";

std::size_t method_index(std::string_view method) {
  for (std::size_t i = 0; i + 1 < kMethodNames.size(); ++i) {
    if (method == kMethodNames[i]) return i;
  }
  return kMethodNames.size() - 1;
}

bool valid_name(std::string_view s, bool colon) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string render_labels(const Labels& labels) {
  if (labels.empty()) return {};
  std::string out = "{";
  for (const auto& [k, v] : labels) {
    if (!valid_name(k, false) || k == "le" || k.starts_with("__")) {
      throw std::invalid_argument("metrics: malformed label name");
    }
    if (out.size() > 1) out += ',';
    out += fmt::format("{}=\"{}\"", k, escape_label_value(v));
  }
  return out + "}";
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

// HELP text escapes backslash and newline (format 0.0.4).
std::string escape_help(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

void header(std::string& out, std::string_view name, std::string_view help, std::string_view type) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, escape_help(help),
                 name, type);
}

}  // namespace

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

RouteMetrics::~RouteMetrics() {
  for (auto& s : by_method_) delete s.load();
}

void RouteMetrics::observe(std::string_view method, int status,
                           std::chrono::nanoseconds latency) noexcept {
  auto& slot = by_method_[method_index(method)];
  Series* s = slot.load(std::memory_order_acquire);
  if (s == nullptr) {
    auto* fresh = new (std::nothrow) Series();
    if (fresh == nullptr) return;
    // Two first requests may race: one allocation wins, the other is freed.
    if (slot.compare_exchange_strong(s, fresh, std::memory_order_acq_rel)) {
      s = fresh;
    } else {
      delete fresh;
    }
  }
  const int code = status >= 100 && status <= 599 ? status : 500;
  s->by_status[static_cast<std::size_t>(code - 100)].fetch_add(1, std::memory_order_relaxed);
  const double seconds = std::chrono::duration<double>(latency).count();
  std::size_t b = 0;
  while (b < kLatencyBuckets.size() && seconds > kLatencyBuckets[b]) ++b;
  s->buckets[b].fetch_add(1, std::memory_order_relaxed);
  const auto ns = latency.count() > 0 ? static_cast<std::uint64_t>(latency.count()) : 0;
  s->sum_ns.fetch_add(ns, std::memory_order_relaxed);
}

Metrics::Metrics(std::string service) : service_(std::move(service)) {
  gauge("mcim_service_info", "The service this process runs.", {{"service", service_}}).set(1);
}

Metrics::Series& Metrics::find_or_add(std::string_view name, std::string_view help,
                                      const Labels& labels, Type type) {
  if (!valid_name(name, true) || name == kRequestsTotal || name == kRequestDuration) {
    throw std::invalid_argument(fmt::format("metrics: bad or reserved name {}", name));
  }
  std::string rendered = render_labels(labels);
  std::lock_guard lock(mu_);
  auto [it, inserted] = families_.try_emplace(std::string(name));
  Family& family = it->second;
  if (inserted) {
    family.type = type;
    family.help = std::string(help);
  } else if (family.type != type) {
    throw std::invalid_argument(fmt::format("metrics: {} registered with another type", name));
  }
  for (Series& s : family.series) {
    if (s.labels == rendered) return s;
  }
  Series& s = family.series.emplace_back();
  s.labels = std::move(rendered);
  return s;
}

Counter& Metrics::counter(std::string_view name, std::string_view help, const Labels& labels) {
  return find_or_add(name, help, labels, Type::counter).counter;
}

Gauge& Metrics::gauge(std::string_view name, std::string_view help, const Labels& labels) {
  return find_or_add(name, help, labels, Type::gauge).gauge;
}

void Metrics::flow_step(std::string_view step) {
  counter("mcim_flow_steps_total", "Steps of the TR 33.812 flows completed, by step.",
          {{"step", std::string(step)}})
      .inc();
}

RouteMetrics& Metrics::route(std::string_view route) {
  std::lock_guard lock(mu_);
  for (RouteMetrics& r : routes_) {
    if (r.route() == route) return r;
  }
  return routes_.emplace_back(std::string(route));
}

void Metrics::render_routes(std::string& out) const {
  auto out_it = std::back_inserter(out);
  header(out, kRequestsTotal, "HTTP requests answered, by method, route and status.", "counter");
  for (const RouteMetrics& r : routes_) {
    const std::string route = escape_label_value(r.route());
    for (std::size_t m = 0; m < RouteMetrics::kMethods; ++m) {
      const auto* s = r.series(m);
      if (s == nullptr) continue;
      for (std::size_t i = 0; i < RouteMetrics::kStatuses; ++i) {
        const std::uint64_t n = s->by_status[i].load(std::memory_order_relaxed);
        if (n == 0) continue;
        fmt::format_to(out_it, "{}{{method=\"{}\",route=\"{}\",status=\"{}\"}} {}\n",
                       kRequestsTotal, kMethodNames[m], route, i + 100, n);
      }
    }
  }
  header(out, kRequestDuration, "Time from routing a request to its handler's answer.",
         "histogram");
  for (const RouteMetrics& r : routes_) {
    const std::string route = escape_label_value(r.route());
    for (std::size_t m = 0; m < RouteMetrics::kMethods; ++m) {
      const auto* s = r.series(m);
      if (s == nullptr) continue;
      const auto labels = fmt::format("method=\"{}\",route=\"{}\"", kMethodNames[m], route);
      std::uint64_t cumulative = 0;
      for (std::size_t b = 0; b < s->buckets.size(); ++b) {
        cumulative += s->buckets[b].load(std::memory_order_relaxed);
        const std::string le = b < kLatencyBuckets.size() ? number(kLatencyBuckets[b]) : "+Inf";
        fmt::format_to(out_it, "{}_bucket{{{},le=\"{}\"}} {}\n", kRequestDuration, labels, le,
                       cumulative);
      }
      const double sum = static_cast<double>(s->sum_ns.load(std::memory_order_relaxed)) / 1e9;
      fmt::format_to(out_it, "{}_sum{{{}}} {}\n", kRequestDuration, labels, number(sum));
      fmt::format_to(out_it, "{}_count{{{}}} {}\n", kRequestDuration, labels, cumulative);
    }
  }
}

std::string Metrics::render() const {
  std::string out;
  std::lock_guard lock(mu_);
  render_routes(out);
  for (const auto& [name, family] : families_) {
    header(out, name, family.help, family.type == Type::counter ? "counter" : "gauge");
    for (const Series& s : family.series) {
      const std::string value = family.type == Type::counter ? std::to_string(s.counter.value())
                                                             : number(s.gauge.value());
      fmt::format_to(std::back_inserter(out), "{}{} {}\n", name, s.labels, value);
    }
  }
  return out;
}

}  // namespace mcim::net
