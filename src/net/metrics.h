// A service's metrics and their Prometheus text exposition (format 0.0.4), served at /metrics:
// per-route request counters and latency histograms (the Router records them), connection
// counters (the HttpServer), and the named counters and gauges roles register, e.g. flow steps
// `mcim_flow_steps_total{step="attach"}`. Thread-safe: updates are lock-free atomics on series
// registered beforehand; registration and rendering take a mutex. docs/protocol.md lists names.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mcim::net {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

class Gauge {
 public:
  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(double d) noexcept { value_.fetch_add(d, std::memory_order_relaxed); }
  double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Upper bounds of the latency histogram buckets, in seconds (+Inf is implicit).
inline constexpr std::array<double, 13> kLatencyBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

// Requests to one route (a path pattern), by method and status. Methods outside GET HEAD POST
// PUT DELETE PATCH OPTIONS count as "other", statuses outside 100..599 as 500, so no request can
// grow the number of series.
class RouteMetrics {
 public:
  explicit RouteMetrics(std::string route) : route_(std::move(route)) {}
  ~RouteMetrics();
  RouteMetrics(const RouteMetrics&) = delete;
  RouteMetrics& operator=(const RouteMetrics&) = delete;

  void observe(std::string_view method, int status, std::chrono::nanoseconds latency) noexcept;
  const std::string& route() const { return route_; }

  static constexpr std::size_t kMethods = 8;
  static constexpr std::size_t kStatuses = 500;  // 100..599
  struct Series {                                // one method; allocated on its first request
    std::array<std::atomic<std::uint64_t>, kStatuses> by_status{};
    std::array<std::atomic<std::uint64_t>, kLatencyBuckets.size() + 1> buckets{};  // not cumulative
    std::atomic<std::uint64_t> sum_ns{0};
  };
  const Series* series(std::size_t method) const {
    return by_method_[method].load(std::memory_order_acquire);
  }

 private:
  std::string route_;
  std::array<std::atomic<Series*>, kMethods> by_method_{};
};

class Metrics {
 public:
  explicit Metrics(std::string service);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  const std::string& service() const { return service_; }

  // The series `name{labels}`, created on first use; the same reference for the same name and
  // labels, for the Metrics' lifetime. Names [a-zA-Z_:][a-zA-Z0-9_:]*, label names
  // [a-zA-Z_][a-zA-Z0-9_]* (not "le"); label values are escaped. Throws std::invalid_argument
  // for a malformed name or one already used by another type: names are constants of the code,
  // registered at start-up, so that is a programming error. Label values should come from a
  // small fixed set (never a request's data): each value is a series kept forever.
  Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});

  // mcim_flow_steps_total{step="<step>"} += 1: one step of a TR flow done (DESIGN.md §2).
  void flow_step(std::string_view step);

  // The request series of a route pattern (e.g. "/v1/pcids/{pcid}/vectors"), created once.
  RouteMetrics& route(std::string_view route);

  // Every family in name order, every series in registration order. Each histogram's _count and
  // +Inf bucket are computed from the same bucket reads, so they always agree.
  std::string render() const;

 private:
  enum class Type { counter, gauge };
  struct Series {
    std::string labels;  // rendered: {a="x",b="y"} or empty
    Counter counter;
    Gauge gauge;
  };
  struct Family {
    Type type;
    std::string help;
    std::deque<Series> series;  // deque: references stay valid as it grows
  };
  Series& find_or_add(std::string_view name, std::string_view help, const Labels& labels,
                      Type type);
  void render_routes(std::string& out) const;

  std::string service_;
  mutable std::mutex mu_;                   // guards families_, routes_
  std::map<std::string, Family> families_;  // by name
  std::deque<RouteMetrics> routes_;
};

// Prometheus label value escaping: backslash, double quote and newline.
std::string escape_label_value(std::string_view v);

}  // namespace mcim::net
