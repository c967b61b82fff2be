// Metrics and their Prometheus text exposition: every line parses, counters and histograms
// count what happened (also under concurrent updates and rendering), named counters and gauges
// behave, names are checked, label values escaped; /metrics served over HTTPS after traffic.
#include "net/metrics.h"

#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <thread>

#include "net/router.h"
#include "net_test_util.h"

namespace mcim::net {
namespace {

using namespace std::chrono_literals;

// name{labels} value, per the text format 0.0.4 (labels optional; values as Go parses floats).
const std::string kLabel = R"re([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")re";
const std::regex kSample("^[a-zA-Z_:][a-zA-Z0-9_:]*(\\{" + kLabel + "(," + kLabel + ")*\\})? " +
                         R"re((-?[0-9.e+-]+|\+Inf|-Inf|NaN)$)re");
const std::regex kComment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*$)");

// The samples of a rendering, "name{labels}" → value; fails the test on a malformed line.
std::map<std::string, double> parse(const std::string& text) {
  std::map<std::string, double> samples;
  std::size_t start = 0;
  EXPECT_TRUE(text.empty() || text.back() == '\n');
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.starts_with("#")) {
      EXPECT_TRUE(std::regex_match(line, kComment)) << line;
      continue;
    }
    EXPECT_TRUE(std::regex_match(line, kSample)) << line;
    const auto space = line.rfind(' ');
    const std::string v = line.substr(space + 1);
    samples[line.substr(0, space)] = v == "+Inf" ? INFINITY : std::stod(v);
  }
  return samples;
}

TEST(Metrics, CountersAndGaugesRenderAndParse) {
  Metrics m("ro");
  m.flow_step("attach");
  m.flow_step("attach");
  m.flow_step("discovery");
  Counter& c = m.counter("mcim_icf_vectors_total", "Vectors served.");
  c.inc(5);
  EXPECT_EQ(&m.counter("mcim_icf_vectors_total", "Vectors served."), &c);
  Gauge& g = m.gauge("mcim_icf_pcids", "PCID subscriptions by state.", {{"state", "active"}});
  g.set(7);
  g.add(-2.5);
  m.gauge("mcim_icf_pcids", "", {{"state", "dormant"}}).set(1);
  const std::string text = m.render();
  const auto s = parse(text);
  EXPECT_EQ(s.at(R"(mcim_flow_steps_total{step="attach"})"), 2);
  EXPECT_EQ(s.at(R"(mcim_flow_steps_total{step="discovery"})"), 1);
  EXPECT_EQ(s.at("mcim_icf_vectors_total"), 5);
  EXPECT_EQ(s.at(R"(mcim_icf_pcids{state="active"})"), 4.5);
  EXPECT_EQ(s.at(R"(mcim_icf_pcids{state="dormant"})"), 1);
  EXPECT_EQ(s.at(R"(mcim_service_info{service="ro"})"), 1);
  EXPECT_NE(text.find("# TYPE mcim_flow_steps_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE mcim_icf_pcids gauge\n"), std::string::npos);
  // One HELP/TYPE pair per family.
  EXPECT_EQ(text.find("# TYPE mcim_icf_pcids"), text.rfind("# TYPE mcim_icf_pcids"));
}

TEST(Metrics, NamesAreCheckedAndLabelValuesEscaped) {
  Metrics m("x");
  EXPECT_THROW(m.counter("9bad", "h"), std::invalid_argument);
  EXPECT_THROW(m.counter("bad-name", "h"), std::invalid_argument);
  EXPECT_THROW(m.counter("ok", "h", {{"bad-label", "v"}}), std::invalid_argument);
  EXPECT_THROW(m.counter("ok", "h", {{"le", "v"}}), std::invalid_argument);
  EXPECT_THROW(m.counter("mcim_http_requests_total", "h"), std::invalid_argument);
  m.counter("both", "h");
  EXPECT_THROW(m.gauge("both", "h"), std::invalid_argument);
  m.counter("esc", "h", {{"v", "a\"b\\c\nd"}}).inc();
  const std::string text = m.render();
  EXPECT_NE(text.find(R"(esc{v="a\"b\\c\nd"} 1)"), std::string::npos) << text;
  parse(text);
}

TEST(Metrics, RouteHistogramBucketsAreCumulativeAndAgreeWithTheCount) {
  Metrics m("x");
  RouteMetrics& r = m.route("/v1/a/{id}");
  r.observe("GET", 200, 100us);  // ≤ 0.0005
  r.observe("GET", 200, 3ms);    // ≤ 0.005
  r.observe("GET", 404, 2s);     // ≤ 2.5
  r.observe("GET", 200, 10s);    // +Inf only
  r.observe("BREW", 999, 1ms);   // method "other", status clamped to 500
  const auto s = parse(m.render());
  const std::string labels = R"(method="GET",route="/v1/a/{id}")";
  EXPECT_EQ(s.at("mcim_http_requests_total{" + labels + R"(,status="200"})"), 3);
  EXPECT_EQ(s.at("mcim_http_requests_total{" + labels + R"(,status="404"})"), 1);
  EXPECT_EQ(s.at(R"(mcim_http_requests_total{method="other",route="/v1/a/{id}",status="500"})"), 1);
  const std::string b = "mcim_http_request_duration_seconds_bucket{" + labels;
  EXPECT_EQ(s.at(b + R"(,le="0.0005"})"), 1);
  EXPECT_EQ(s.at(b + R"(,le="0.001"})"), 1);
  EXPECT_EQ(s.at(b + R"(,le="0.005"})"), 2);
  EXPECT_EQ(s.at(b + R"(,le="1"})"), 2);
  EXPECT_EQ(s.at(b + R"(,le="2.5"})"), 3);
  EXPECT_EQ(s.at(b + R"(,le="5"})"), 3);
  EXPECT_EQ(s.at(b + R"(,le="+Inf"})"), 4);
  EXPECT_EQ(s.at("mcim_http_request_duration_seconds_count{" + labels + "}"), 4);
  EXPECT_NEAR(s.at("mcim_http_request_duration_seconds_sum{" + labels + "}"), 12.0031, 1e-6);
}

TEST(Metrics, ConcurrentUpdatesAreAllCountedAndRenderingStaysConsistent) {
  Metrics m("x");
  RouteMetrics& route = m.route("/r");
  Counter& c = m.counter("mcim_test_total", "h");
  constexpr int kThreads = 4, kEach = 20000;
  std::atomic<bool> done{false};
  std::thread renderer([&] {
    while (!done) {
      const auto s = parse(m.render());
      const auto inf = s.find(
          R"(mcim_http_request_duration_seconds_bucket{method="POST",route="/r",le="+Inf"})");
      const auto count =
          s.find(R"(mcim_http_request_duration_seconds_count{method="POST",route="/r"})");
      if (inf != s.end()) {
        EXPECT_EQ(inf->second, count->second);
      }
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        c.inc();
        route.observe("POST", 200 + (i % 2), std::chrono::microseconds(t * 100 + i % 1000));
        if (i % 1000 == 0) m.flow_step("step" + std::to_string(t));
      }
    });
  }
  for (auto& w : writers) w.join();
  done = true;
  renderer.join();
  const auto s = parse(m.render());
  EXPECT_EQ(s.at("mcim_test_total"), kThreads * kEach);
  EXPECT_EQ(s.at(R"(mcim_http_requests_total{method="POST",route="/r",status="200"})"),
            kThreads * kEach / 2);
  EXPECT_EQ(s.at(R"(mcim_http_request_duration_seconds_count{method="POST",route="/r"})"),
            kThreads * kEach);
  EXPECT_EQ(s.at(R"(mcim_flow_steps_total{step="step3"})"), kEach / 1000);
}

TEST(Metrics, ServedOverHttpsAfterTrafficAndCountedPerRoute) {
  auto metrics = std::make_shared<Metrics>("ro");
  Router router("ro", metrics);
  ASSERT_TRUE(router
                  .add("GET", "/v1/pcids/{pcid}",
                       [&](const Request&) {
                         metrics->flow_step("discovery");
                         return json_response(200, Json::object());
                       })
                  .has_value());
  HttpServerOptions o;
  o.metrics = metrics;
  auto server = testing::start_server(router.handler(), testing::tls_options(), o);
  ASSERT_TRUE(server);
  auto client = testing::make_client();
  const std::string base = server->url();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(client->get(base + "/v1/pcids/" + std::to_string(i)));
  ASSERT_TRUE(client->get(base + "/healthz"));
  ASSERT_TRUE(client->get(base + "/nowhere"));
  ASSERT_TRUE(client->request("PUT", base + "/v1/pcids/1"));
  const auto r = client->get(base + "/metrics");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->content_type, "text/plain; version=0.0.4; charset=utf-8");
  const auto s = parse(r->body);
  EXPECT_EQ(s.at(R"(mcim_http_requests_total{method="GET",route="/v1/pcids/{pcid}",status="200"})"),
            3);
  EXPECT_EQ(s.at(R"(mcim_http_requests_total{method="PUT",route="/v1/pcids/{pcid}",status="405"})"),
            1);
  EXPECT_EQ(s.at(R"(mcim_http_requests_total{method="GET",route="/healthz",status="200"})"), 1);
  EXPECT_EQ(s.at(R"x(mcim_http_requests_total{method="GET",route="(unmatched)",status="404"})x"),
            1);
  EXPECT_EQ(
      s.at(R"(mcim_http_request_duration_seconds_count{method="GET",route="/v1/pcids/{pcid}"})"),
      3);
  EXPECT_EQ(s.at(R"(mcim_flow_steps_total{step="discovery"})"), 3);
  EXPECT_EQ(s.at("mcim_http_connections_total"), 1);  // keep-alive: one connection
  EXPECT_EQ(s.at("mcim_http_connections_open"), 1);
  EXPECT_EQ(s.at("mcim_tls_handshake_failures_total"), 0);
  // The /metrics request itself is counted once it has been answered.
  const auto again = parse(client->get(base + "/metrics")->body);
  EXPECT_EQ(again.at(R"(mcim_http_requests_total{method="GET",route="/metrics",status="200"})"), 1);
}

// A held request (HttpResponse::hold) is counted once, when it is answered, with the time since
// it arrived rather than since its last run.
TEST(Metrics, AHeldRequestIsCountedOnceWithItsWholeWait) {
  auto metrics = std::make_shared<Metrics>("ro");
  Router router("ro", metrics);
  int runs = 0;
  ASSERT_TRUE(router
                  .add("GET", "/v1/poll",
                       [&](const Request&) {
                         if (++runs == 1) {
                           HttpResponse h;
                           h.hold = [](Wake) {};
                           return h;
                         }
                         return json_response(200, Json::object());
                       })
                  .has_value());
  HttpRequest r;
  r.method = "GET";
  r.target = "/v1/poll";
  r.received = std::chrono::steady_clock::now() - 2s;
  EXPECT_TRUE(router.handle(r).hold);
  EXPECT_FALSE(
      parse(metrics->render())
          .contains(R"(mcim_http_requests_total{method="GET",route="/v1/poll",status="200"})"));
  EXPECT_EQ(router.handle(r).status, 200);
  const auto s = parse(metrics->render());
  EXPECT_EQ(s.at(R"(mcim_http_requests_total{method="GET",route="/v1/poll",status="200"})"), 1);
  EXPECT_GE(s.at(R"(mcim_http_request_duration_seconds_sum{method="GET",route="/v1/poll"})"), 2.0);
}

}  // namespace
}  // namespace mcim::net
