// The gateway as an HTTP CONNECT proxy: HttpsClient through it (trust anchors, pin only, one
// tunnel reused), every refusal both through the client and on a raw socket (exact status line,
// envelope code, closed connection, counters, the authoriser never given an empty credential),
// byte-exact relaying with pipelined data and half-close, stop(), metrics, options.
#include "net/connect_proxy.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "common/log.h"
#include "net/http_error.h"
#include "net/metrics.h"
#include "net_test_util.h"

namespace mcim::net {
namespace {

using namespace std::chrono_literals;
using testing::echo;
using testing::make_client;
using testing::start_server;
using testing::TestPki;
using testing::tls_options;

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 3s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// A connected TCP socket to 127.0.0.1:port, closed on destruction; reads time out after 5 s.
class RawSocket {
 public:
  explicit RawSocket(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~RawSocket() { ::close(fd_); }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  bool connected() const { return connected_; }
  bool send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  void shutdown_send() { ::shutdown(fd_, SHUT_WR); }
  // Everything until the peer closes (closed true: EOF, or a reset, which is what a connection
  // still in the listen backlog gets when the listener closes) or the read timeout.
  std::string read_all(bool& closed) {
    std::string out;
    char buf[16384];
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed = n == 0 || errno == ECONNRESET;
        return out;
      }
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  // Exactly n bytes (fewer on EOF or timeout).
  std::string read_exactly(std::size_t n) {
    std::string out;
    char buf[16384];
    while (out.size() < n) {
      const ssize_t got = ::recv(fd_, buf, std::min(sizeof buf, n - out.size()), 0);
      if (got <= 0) break;
      out.append(buf, static_cast<std::size_t>(got));
    }
    return out;
  }

 private:
  int fd_;
  bool connected_ = false;
};

// A plain TCP echo server: echoes each connection's bytes, and after the client's EOF sends
// kTrailer and closes, so a test sees the down direction outlive the up one.
class EchoServer {
 public:
  static constexpr std::string_view kTrailer = "<eof seen>";

  EchoServer() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] {
      for (;;) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;  // shutdown() in the destructor
        std::lock_guard lock(mu_);
        connections_.emplace_back([this, c] { serve(c); });
      }
    });
  }
  ~EchoServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    acceptor_.join();
    for (auto& t : connections_) t.join();
  }

  std::uint16_t port() const { return port_; }
  std::string authority() const { return "127.0.0.1:" + std::to_string(port_); }
  int eofs() const { return eofs_.load(); }

 private:
  void serve(int c) {
    char buf[16384];
    for (;;) {
      const ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) {
        if (n == 0) {
          ++eofs_;
          ::send(c, kTrailer.data(), kTrailer.size(), MSG_NOSIGNAL);
        }
        break;
      }
      std::size_t sent = 0;
      while (sent < static_cast<std::size_t>(n)) {
        const ssize_t w = ::send(c, buf + sent, static_cast<std::size_t>(n) - sent, MSG_NOSIGNAL);
        if (w <= 0) break;
        sent += static_cast<std::size_t>(w);
      }
    }
    ::close(c);
  }

  int fd_;
  std::uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;  // guards connections_
  std::vector<std::thread> connections_;
  std::atomic<int> eofs_{0};
};

// A port nothing listens on (bound once, then released).
std::uint16_t dead_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Vno::forward in miniature: session "s1" may reach the listed destinations; records every
// credential it was asked about.
class Authoriser {
 public:
  explicit Authoriser(std::set<std::string> allowed) : allowed_(std::move(allowed)) {}
  TunnelAuthorizer fn() {
    return [this](std::string_view credential, std::string_view authority) -> Result<void> {
      {
        std::lock_guard lock(mu_);
        seen_.emplace_back(credential);
      }
      if (credential != "s1") return fail(ErrorCode::not_found, "session: unknown");
      if (!allowed_.contains(std::string(authority))) {
        return fail(ErrorCode::access_denied, "destination: outside the session's APN");
      }
      return {};
    };
  }
  bool saw_empty() {
    std::lock_guard lock(mu_);
    return std::any_of(seen_.begin(), seen_.end(), [](const auto& c) { return c.empty(); });
  }
  std::size_t calls() {
    std::lock_guard lock(mu_);
    return seen_.size();
  }

 private:
  std::set<std::string> allowed_;
  std::mutex mu_;
  std::vector<std::string> seen_;
};

std::string connect_head(std::string_view authority, std::string_view token = "s1") {
  std::string head = fmt::format("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n", authority);
  if (!token.empty()) head += fmt::format("Proxy-Authorization: Bearer {}\r\n", token);
  return head + "\r\n";
}

// A refusal as read on a raw socket.
struct RawAnswer {
  std::string status_line;
  std::string head;  // the whole head, for header checks
  std::string code;  // the envelope's error.code
  bool closed = false;
};

RawAnswer raw_exchange(std::uint16_t port, std::string_view request) {
  RawSocket s(port);
  EXPECT_TRUE(s.connected());
  s.send(request);
  RawAnswer a;
  const std::string all = s.read_all(a.closed);
  const auto head_end = all.find("\r\n\r\n");
  if (head_end == std::string::npos) return a;
  a.head = all.substr(0, head_end + 2);
  a.status_line = all.substr(0, all.find("\r\n"));
  const auto body = Json::parse(all.substr(head_end + 4), nullptr, false);
  if (body.is_object() && body.contains("error")) a.code = body["error"].value("code", "");
  return a;
}

class ConnectProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = start_server(echo, tls_options());
    ASSERT_TRUE(server_);
    dead_ = "127.0.0.1:" + std::to_string(dead_port());
    auth_ = std::make_unique<Authoriser>(
        std::set<std::string>{server_->address(), echo_.authority(), dead_});
    proxy_ = start_proxy({});
    ASSERT_TRUE(proxy_);
  }

  std::unique_ptr<ConnectProxy> start_proxy(ConnectProxyOptions o) {
    o.metrics = metrics_;
    auto p = ConnectProxy::start(o, auth_->fn());
    EXPECT_TRUE(p.has_value()) << p.error().message;
    return p ? std::move(*p) : nullptr;
  }

  std::unique_ptr<HttpsClient> proxied_client(std::string credential = "s1",
                                              HttpsClientOptions o = {}) {
    o.proxy = proxy_->address();
    o.proxy_credential = std::move(credential);
    return make_client("", std::move(o));
  }

  std::shared_ptr<Metrics> metrics_ = std::make_shared<Metrics>("vno");
  std::unique_ptr<HttpServer> server_;
  EchoServer echo_;
  std::string dead_;
  std::unique_ptr<Authoriser> auth_;
  std::unique_ptr<ConnectProxy> proxy_;
};

TEST_F(ConnectProxyTest, RequestsGoThroughOneReusedTunnel) {
  auto client = proxied_client();
  for (int i = 0; i < 3; ++i) {
    const auto r = client->request("POST", server_->url() + "/dpf", "hello", "text/plain");
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "POST /dpf hello");
  }
  EXPECT_EQ(client->connections_opened(), 1u);
  EXPECT_EQ(proxy_->tunnels_opened(), 1u);
  EXPECT_EQ(proxy_->tunnels_open(), 1u);
  EXPECT_EQ(server_->connections_accepted(), 1u);
  client->close_idle();
  EXPECT_TRUE(eventually([&] { return proxy_->tunnels_open() == 0; }));
  EXPECT_EQ(proxy_->tunnels_refused(), 0u);
}

TEST_F(ConnectProxyTest, PinAloneVerifiesTheServerThroughTheTunnel) {
  HttpsClientOptions o;
  o.spki_pin = pki::spki_sha256(TestPki::get().server().identity->key.get());
  auto client = proxied_client("s1", o);
  const auto r = client->get(server_->url() + "/bootstrap");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->body, "GET /bootstrap ");
  // A wrong pin is still refused end to end: the gateway cannot stand in for the server.
  (*o.spki_pin)[0] ^= 1;
  const auto bad = proxied_client("s1", o)->get(server_->url() + "/bootstrap");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, ErrorCode::chain_invalid);
}

TEST_F(ConnectProxyTest, DirectAndTunnelledConnectionsAreNotMixed) {
  HttpsClientOptions o;
  auto direct = make_client("", o);
  ASSERT_TRUE(direct->get(server_->url() + "/").has_value());
  auto tunnelled = proxied_client();
  ASSERT_TRUE(tunnelled->get(server_->url() + "/").has_value());
  EXPECT_EQ(proxy_->tunnels_opened(), 1u);
  EXPECT_EQ(tunnelled->connections_opened(), 1u);
}

TEST_F(ConnectProxyTest, ClientSeesEachRefusalAsItsCode) {
  struct Case {
    std::string credential, url;
    ErrorCode code;
  } cases[] = {
      {"wrong", server_->url() + "/", ErrorCode::not_found},
      {"s1", "https://127.0.0.1:" + std::to_string(echo_.port() == 1 ? 2 : 1) + "/",
       ErrorCode::access_denied},
      {"", server_->url() + "/", ErrorCode::unauthenticated},
      {"s1", "https://" + dead_ + "/", ErrorCode::io_error},
  };
  for (const auto& c : cases) {
    const std::uint64_t refused = proxy_->tunnels_refused();
    const auto r = proxied_client(c.credential)->get(c.url);
    ASSERT_FALSE(r.has_value()) << c.url;
    EXPECT_EQ(r.error().code, c.code) << r.error().message;
    EXPECT_TRUE(r.error().message.starts_with("proxy: ")) << r.error().message;
    EXPECT_TRUE(eventually([&] { return proxy_->tunnels_refused() == refused + 1; }));
  }
  // The host-name target is refused by the gateway (bad_request is no ErrorCode: io_error).
  const auto named =
      proxied_client()->get("https://localhost:" + std::to_string(server_->port()) + "/");
  ASSERT_FALSE(named.has_value());
  EXPECT_EQ(named.error().code, ErrorCode::io_error);
  EXPECT_NE(named.error().message.find("bad_request"), std::string::npos) << named.error().message;
  EXPECT_FALSE(auth_->saw_empty());
  EXPECT_EQ(proxy_->tunnels_opened(), 0u);
  EXPECT_EQ(proxy_->tunnels_open(), 0u);
}

TEST_F(ConnectProxyTest, RawRefusalsAnswerTheEnvelopeAndClose) {
  const std::string target = server_->address();
  const std::string oversize = "CONNECT " + target +
                               " HTTP/1.1\r\nX-Pad: " + std::string(5000, 'a') +
                               "\r\nProxy-Authorization: Bearer s1\r\n\r\n";
  struct Case {
    std::string request, status_line, code;
  } cases[] = {
      {connect_head(target, "wrong"), "HTTP/1.1 404 Not Found", "not_found"},
      {connect_head("127.0.0.1:1"), "HTTP/1.1 403 Forbidden", "access_denied"},
      {connect_head(target, ""), "HTTP/1.1 407 Proxy Authentication Required", "unauthenticated"},
      {"CONNECT " + target + " HTTP/1.1\r\nProxy-Authorization: Basic czE6eA==\r\n\r\n",
       "HTTP/1.1 407 Proxy Authentication Required", "unauthenticated"},
      {"CONNECT " + target + " HTTP/1.1\r\nProxy-Authorization: Bearer \r\n\r\n",
       "HTTP/1.1 407 Proxy Authentication Required", "unauthenticated"},
      {"GET / HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Bearer s1\r\n\r\n",
       "HTTP/1.1 405 Method Not Allowed", "method_not_allowed"},
      {"CONNECT\r\n\r\n", "HTTP/1.1 400 Bad Request", "bad_request"},
      {"CONNECT " + target + " FOO/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request", "bad_request"},
      {"CONNECT " + target + " HTTP/1.1\r\nno colon here\r\n\r\n", "HTTP/1.1 400 Bad Request",
       "bad_request"},
      {connect_head("localhost:443"), "HTTP/1.1 400 Bad Request", "bad_request"},
      {connect_head("127.0.0.1:0"), "HTTP/1.1 400 Bad Request", "bad_request"},
      {connect_head("127.0.0.1:70000"), "HTTP/1.1 400 Bad Request", "bad_request"},
      {connect_head("127.0.0.1:x"), "HTTP/1.1 400 Bad Request", "bad_request"},
      {connect_head("127.0.0.1"), "HTTP/1.1 400 Bad Request", "bad_request"},
      {connect_head("[::1]"), "HTTP/1.1 400 Bad Request", "bad_request"},
      {connect_head("127.1:443"), "HTTP/1.1 400 Bad Request", "bad_request"},
      {"CONNECT " + target +
           " HTTP/1.1\r\nProxy-Authorization: Bearer s1\r\n"
           "Proxy-Authorization: Bearer s2\r\n\r\n",
       "HTTP/1.1 400 Bad Request", "bad_request"},
      {"CONNECT " + target +
           " HTTP/1.1\r\nProxy-Authorization: Bearer s1\r\n"
           "Content-Length: 3\r\n\r\nabc",
       "HTTP/1.1 400 Bad Request", "bad_request"},
      {oversize, "HTTP/1.1 400 Bad Request", "bad_request"},
      {connect_head(dead_), "HTTP/1.1 502 Bad Gateway", "io_error"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.request.substr(0, 80));
    const std::uint64_t refused = proxy_->tunnels_refused();
    const RawAnswer a = raw_exchange(proxy_->port(), c.request);
    EXPECT_EQ(a.status_line, c.status_line);
    EXPECT_EQ(a.code, c.code);
    EXPECT_TRUE(a.closed);
    EXPECT_NE(a.head.find("Connection: close\r\n"), std::string::npos) << a.head;
    if (c.code == "unauthenticated") {
      EXPECT_NE(a.head.find("Proxy-Authenticate: Bearer realm=\"mcim-gateway\"\r\n"),
                std::string::npos)
          << a.head;
    }
    if (c.code == "method_not_allowed") {
      EXPECT_NE(a.head.find("Allow: CONNECT\r\n"), std::string::npos) << a.head;
    }
    EXPECT_EQ(proxy_->tunnels_refused(), refused + 1);
  }
  EXPECT_FALSE(auth_->saw_empty());
  EXPECT_EQ(proxy_->tunnels_opened(), 0u);
  EXPECT_EQ(proxy_->tunnels_open(), 0u);
  EXPECT_EQ(server_->connections_accepted(), 0u);
  EXPECT_EQ(echo_.eofs(), 0);
}

TEST_F(ConnectProxyTest, IncompleteHeadIsClosedAfterHeadTimeout) {
  ConnectProxyOptions o;
  o.head_timeout = 200ms;
  auto proxy = start_proxy(o);
  RawSocket s(proxy->port());
  ASSERT_TRUE(s.connected());
  s.send("CONNECT " + server_->address() + " HTTP/1.1\r\nProxy-Authorization: Bearer s1\r\n");
  const auto begin = std::chrono::steady_clock::now();
  bool eof = false;
  EXPECT_EQ(s.read_all(eof), "");
  EXPECT_TRUE(eof);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 2s);
  EXPECT_TRUE(eventually([&] { return proxy->tunnels_refused() == 1; }));
  EXPECT_EQ(auth_->calls(), 0u);
}

TEST_F(ConnectProxyTest, BeyondMaxTunnelsIsBusy) {
  ConnectProxyOptions o;
  o.max_tunnels = 1;
  auto proxy = start_proxy(o);
  RawSocket first(proxy->port());
  first.send(connect_head(echo_.authority()));
  const std::string established = "HTTP/1.1 200 Connection Established\r\n\r\n";
  ASSERT_EQ(first.read_exactly(established.size()), established);

  const RawAnswer a = raw_exchange(proxy->port(), connect_head(echo_.authority()));
  EXPECT_EQ(a.status_line, "HTTP/1.1 503 Service Unavailable");
  EXPECT_EQ(a.code, "busy");
  EXPECT_NE(a.head.find("Retry-After: 1\r\n"), std::string::npos) << a.head;
  EXPECT_TRUE(a.closed);
  EXPECT_EQ(proxy->tunnels_refused(), 1u);

  HttpsClientOptions co;
  co.proxy = proxy->address();
  co.proxy_credential = "s1";
  const auto r = make_client("", co)->get(server_->url() + "/");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::busy) << r.error().message;
  EXPECT_EQ(proxy->tunnels_open(), 1u);
  EXPECT_TRUE(eventually([&] { return proxy->tunnels_refused() == 2; }));
}

TEST_F(ConnectProxyTest, RelaysOneMebibyteBothWaysWithPipelinedBytesAndHalfClose) {
  std::string payload(1 << 20, '\0');
  for (std::size_t i = 0; i < payload.size(); ++i) {
    payload[i] = static_cast<char>((i * 7919 + i / 251) & 0xff);
  }
  RawSocket s(proxy_->port());
  ASSERT_TRUE(s.connected());
  // The head and the first bytes of the tunnel in one send, as a device's TLS stack may.
  // The scheme is case-insensitive.
  std::string first = connect_head(echo_.authority(), "s1");
  first.replace(first.find("Bearer"), 6, "bEaReR");
  constexpr std::size_t kPipelined = 1000;
  ASSERT_TRUE(s.send(first + payload.substr(0, kPipelined)));
  std::thread writer([&] {
    s.send(std::string_view(payload).substr(kPipelined));
    s.shutdown_send();
  });
  const std::string established = "HTTP/1.1 200 Connection Established\r\n\r\n";
  EXPECT_EQ(s.read_exactly(established.size()), established);
  bool eof = false;
  const std::string back = s.read_all(eof);
  writer.join();
  EXPECT_TRUE(eof);
  ASSERT_EQ(back.size(), payload.size() + EchoServer::kTrailer.size());
  EXPECT_TRUE(back.substr(0, payload.size()) == payload);  // not EXPECT_EQ: a 1 MiB diff
  EXPECT_EQ(back.substr(payload.size()), EchoServer::kTrailer);
  EXPECT_EQ(echo_.eofs(), 1);
  EXPECT_TRUE(eventually([&] { return proxy_->tunnels_open() == 0; }));
  EXPECT_EQ(proxy_->tunnels_opened(), 1u);

  const std::string text = metrics_->render();
  EXPECT_NE(
      text.find(fmt::format("mcim_gateway_bytes_total{{direction=\"up\"}} {}\n", payload.size())),
      std::string::npos)
      << text;
  EXPECT_NE(text.find(fmt::format("mcim_gateway_bytes_total{{direction=\"down\"}} {}\n",
                                  payload.size() + EchoServer::kTrailer.size())),
            std::string::npos)
      << text;
}

TEST_F(ConnectProxyTest, IdleTunnelIsClosedAfterIdleTimeout) {
  ConnectProxyOptions o;
  o.idle_timeout = 300ms;
  auto proxy = start_proxy(o);
  RawSocket s(proxy->port());
  s.send(connect_head(echo_.authority()));
  const std::string established = "HTTP/1.1 200 Connection Established\r\n\r\n";
  ASSERT_EQ(s.read_exactly(established.size()), established);
  // Traffic keeps it open past one idle_timeout...
  for (int i = 0; i < 4; ++i) {
    std::this_thread::sleep_for(100ms);
    ASSERT_TRUE(s.send("ping"));
    ASSERT_EQ(s.read_exactly(4), "ping");
  }
  // ...silence ends it.
  const auto begin = std::chrono::steady_clock::now();
  bool closed = false;
  EXPECT_EQ(s.read_all(closed), "");
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 2s);
  EXPECT_TRUE(eventually([&] { return proxy->tunnels_open() == 0; }));
}

TEST_F(ConnectProxyTest, StopClosesOpenTunnelsPromptly) {
  RawSocket s(proxy_->port());
  s.send(connect_head(echo_.authority()));
  const std::string established = "HTTP/1.1 200 Connection Established\r\n\r\n";
  ASSERT_EQ(s.read_exactly(established.size()), established);
  RawSocket waiting(proxy_->port());  // in the head phase
  ASSERT_TRUE(waiting.connected());
  EXPECT_EQ(proxy_->tunnels_open(), 1u);

  // Promptly: well before the head timeout (5 s) and the idle timeout (60 s) would have ended
  // them, with room for a loaded machine or a sanitizer build.
  const auto begin = std::chrono::steady_clock::now();
  proxy_->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 3s);
  EXPECT_EQ(proxy_->tunnels_open(), 0u);
  bool eof = false;
  s.read_all(eof);
  EXPECT_TRUE(eof);
  waiting.read_all(eof);
  EXPECT_TRUE(eof);
  proxy_->stop();  // idempotent
  RawSocket late(proxy_->port());
  EXPECT_FALSE(late.connected());
}

TEST_F(ConnectProxyTest, MetricsRenderTheDocumentedNames) {
  auto client = proxied_client();
  ASSERT_TRUE(client->get(server_->url() + "/").has_value());
  raw_exchange(proxy_->port(), connect_head(server_->address(), "wrong"));
  raw_exchange(proxy_->port(), connect_head(dead_));
  client->close_idle();
  ASSERT_TRUE(eventually([&] { return proxy_->tunnels_open() == 0; }));
  const std::string text = metrics_->render();
  for (const std::string line : {
           "# TYPE mcim_gateway_tunnels_total counter\n",
           "mcim_gateway_tunnels_total{outcome=\"open\"} 1\n",
           "mcim_gateway_tunnels_total{outcome=\"refused\"} 1\n",
           "mcim_gateway_tunnels_total{outcome=\"failed\"} 1\n",
           "# TYPE mcim_gateway_tunnels_open gauge\n",
           "mcim_gateway_tunnels_open 0\n",
           "# TYPE mcim_gateway_bytes_total counter\n",
           "mcim_gateway_bytes_total{direction=\"up\"} ",
           "mcim_gateway_bytes_total{direction=\"down\"} ",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
}

TEST_F(ConnectProxyTest, RefusalsAreLoggedWithTheirCodeNeverTheCredential) {
  std::mutex mu;
  std::vector<std::string> lines;
  log::set_sink([&](std::string_view line) {
    std::lock_guard lock(mu);
    lines.emplace_back(line);
  });
  log::set_level(log::Level::debug);
  raw_exchange(proxy_->port(), connect_head(server_->address(), "secret-session-42"));
  raw_exchange(proxy_->port(), connect_head("127.0.0.1:1", "s1"));
  log::set_level(log::Level::info);
  log::set_sink(nullptr);
  std::lock_guard lock(mu);
  std::string all;
  for (const auto& l : lines) all += l + "\n";
  EXPECT_NE(all.find("gateway: refused"), std::string::npos) << all;
  EXPECT_NE(all.find("not_found"), std::string::npos) << all;
  EXPECT_NE(all.find("access_denied"), std::string::npos) << all;
  EXPECT_EQ(all.find("secret-session-42"), std::string::npos) << all;
}

TEST(ConnectProxyOptions, BadOptionsAreRefused) {
  auto allow = [](std::string_view, std::string_view) -> Result<void> { return {}; };
  ConnectProxyOptions o;
  o.threads = 0;
  EXPECT_EQ(ConnectProxy::start(o, allow).error().code, ErrorCode::invalid_argument);
  o = {};
  o.host = "localhost";
  EXPECT_EQ(ConnectProxy::start(o, allow).error().code, ErrorCode::invalid_argument);
  o = {};
  o.max_tunnels = 0;
  EXPECT_EQ(ConnectProxy::start(o, allow).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(ConnectProxy::start({}, nullptr).error().code, ErrorCode::invalid_argument);
  auto first = ConnectProxy::start({}, allow);
  ASSERT_TRUE(first.has_value());
  o = {};
  o.port = (*first)->port();
  EXPECT_EQ(ConnectProxy::start(o, allow).error().code, ErrorCode::io_error);
  EXPECT_EQ((*first)->address(), "127.0.0.1:" + std::to_string((*first)->port()));

  for (const std::string proxy : {"localhost:8080", "127.0.0.1", "127.0.0.1:0", "[::1]"}) {
    HttpsClientOptions co;
    co.trust = TestPki::get().anchors();
    co.proxy = proxy;
    EXPECT_EQ(HttpsClient::create(co).error().code, ErrorCode::invalid_argument) << proxy;
  }
  HttpsClientOptions co;
  co.trust = TestPki::get().anchors();
  co.proxy = "127.0.0.1:3128";
  co.proxy_credential = "s1\r\nX-Injected: 1";
  EXPECT_EQ(HttpsClient::create(co).error().code, ErrorCode::invalid_argument);
}

TEST(ParseIpAuthority, Table) {
  const auto v4 = parse_ip_authority("10.0.0.5:8443");
  ASSERT_TRUE(v4.has_value());
  EXPECT_EQ(v4->host, "10.0.0.5");
  EXPECT_EQ(v4->port, 8443);
  const auto v6 = parse_ip_authority("[::1]:65535");
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 65535);
  for (const char* bad :
       {"", ":443", "localhost:443", "10.0.0.5", "10.0.0.5:", "10.0.0.5:0", "10.0.0.5:65536",
        "10.0.0.5:+1", "10.0.0.5:1x", "10.1:443", "010.0.0.5:443", "::1:443", "[::1]", "[::1]443",
        "[fe80::1%eth0]:443", "[10.0.0.5]:443", "10.0.0.5:443 "}) {
    const auto r = parse_ip_authority(bad);
    EXPECT_FALSE(r.has_value()) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    }
  }
}

}  // namespace
}  // namespace mcim::net
