#include "net/connect_proxy.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "common/log.h"
#include "net/http_error.h"
#include "net/listener.h"
#include "net/metrics.h"
#include "net/tls_context.h"

namespace mcim::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using detail::Worker;
using SteadyClock = std::chrono::steady_clock;

Result<IpAuthority> parse_ip_authority(std::string_view authority) {
  IpAuthority a;
  std::string_view host, port_text;
  boost::system::error_code ec;
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos || authority.substr(close + 1, 1) != ":") {
      return fail(ErrorCode::invalid_argument, "authority: not [IPv6]:port");
    }
    host = authority.substr(1, close - 1);
    port_text = authority.substr(close + 2);
    // A zone id would name an interface of the gateway's host, not a destination.
    if (host.find('%') != std::string_view::npos) {
      return fail(ErrorCode::invalid_argument, "authority: IPv6 zone ids are not accepted");
    }
    asio::ip::make_address_v6(std::string(host), ec);
  } else {
    const auto colon = authority.find(':');
    if (colon == std::string_view::npos) {
      return fail(ErrorCode::invalid_argument, "authority: no port");
    }
    host = authority.substr(0, colon);
    port_text = authority.substr(colon + 1);
    // inet_pton: dotted quad only, so names and "10.1" shorthands are refused.
    asio::ip::make_address_v4(std::string(host), ec);
  }
  if (ec) {
    return fail(ErrorCode::invalid_argument,
                "authority: not IPv4:port or [IPv6]:port (names are not resolved)");
  }
  unsigned port = 0;
  const auto [end, perr] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || perr != std::errc() || end != port_text.data() + port_text.size() ||
      port == 0 || port > 65535) {
    return fail(ErrorCode::invalid_argument, "authority: port must be 1..65535");
  }
  a.host = std::string(host);
  a.port = static_cast<std::uint16_t>(port);
  return a;
}

namespace {

// What stop() needs of a connection.
class TunnelBase {
 public:
  virtual ~TunnelBase() = default;
  virtual void stop() = 0;
};

struct ProxyMetrics {
  Counter* opened = nullptr;
  Counter* refused = nullptr;
  Counter* failed = nullptr;
  Gauge* open = nullptr;
  Counter* up = nullptr;
  Counter* down = nullptr;
};

enum class Outcome { open, refused, failed };

}  // namespace

struct ConnectProxy::State {
  ConnectProxyOptions options;
  TunnelAuthorizer authorize;
  ProxyMetrics metrics;

  // Declared before the listener: tunnels still queued in a worker's io_context when it is
  // destroyed unregister themselves here, so these must outlive it.
  std::mutex mu;                    // guards tunnels, next_id
  std::condition_variable changed;  // a tunnel ended
  std::unordered_map<std::uint64_t, std::weak_ptr<TunnelBase>> tunnels;
  std::uint64_t next_id = 0;
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> opened{0};
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::size_t> open{0};
  // Connections holding a slot of max_tunnels; only the acceptor thread increments it, so the
  // bound cannot be overshot by a race.
  std::atomic<std::size_t> slots{0};

  detail::Listener listener;  // the workers and the acceptor

  explicit State(int threads) : listener(threads) {}
};

namespace {

using State = ConnectProxy::State;

constexpr std::string_view kComponent = "gateway";
constexpr std::string_view kEstablished = "HTTP/1.1 200 Connection Established\r\n\r\n";
// One TLS record, so a record usually crosses in one read and one write.
constexpr std::size_t kRelayBuffer = 16 * 1024;
// After a refusal, what the client still sends is drained for a bounded time so that the answer
// is not lost to a TCP reset (RFC 9112 §9.6), as HttpServer does.
constexpr std::chrono::milliseconds kLingerTime{1'000};
constexpr std::size_t kLingerBytes = 1 << 20;
constexpr std::chrono::milliseconds kStopWait{2'000};

bool is_http_parse_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

bool is_token68(std::string_view s) {
  const auto body = s.substr(0, s.find_last_not_of('=') + 1);
  return !body.empty() && std::all_of(body.begin(), body.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("-._~+/").find(c) != std::string_view::npos;
  });
}

// The token of `Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1), empty otherwise.
std::string_view bearer_token(std::string_view value) {
  const auto space = value.find(' ');
  if (space == std::string_view::npos || !detail::iequals(value.substr(0, space), "Bearer")) {
    return {};
  }
  std::string_view token = value.substr(space + 1);
  token.remove_prefix(std::min(token.find_first_not_of(' '), token.size()));
  return is_token68(token) ? token : std::string_view{};
}

// One device connection: the CONNECT head, the decision, then the relay. Everything runs on its
// worker's single thread, so no member needs a lock.
class Tunnel : public TunnelBase, public std::enable_shared_from_this<Tunnel> {
 public:
  Tunnel(tcp::socket client, State& s, Worker& worker, std::uint64_t id, bool holds_slot)
      : client_(std::move(client)),
        upstream_(worker.ioc),
        timer_(worker.ioc),
        s_(s),
        worker_(worker),
        id_(id),
        holds_slot_(holds_slot),
        up_{&client_, &upstream_, s.metrics.up},
        down_{&upstream_, &client_, s.metrics.down} {
    ++worker_.connections;
    peer_ = detail::remote_address(client_);
  }
  ~Tunnel() override {
    if (established_) {
      --s_.open;
      if (s_.metrics.open != nullptr) s_.metrics.open->add(-1);
    }
    if (holds_slot_) --s_.slots;
    --worker_.connections;
    std::lock_guard lock(s_.mu);
    s_.tunnels.erase(id_);
    s_.changed.notify_all();
  }

  void start() {
    asio::dispatch(client_.get_executor(), [self = shared_from_this()] {
      if (!self->holds_slot_) {
        return self->refuse(error_response(Error(ErrorCode::busy, "max_tunnels reached")), "busy",
                            Outcome::failed);
      }
      self->read_head();
    });
  }

  void stop() override {
    asio::post(client_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

 private:
  enum class Phase { head, connecting, relay, linger, closed };

  // A direction of the relay: up is device to destination.
  struct Pipe {
    tcp::socket* from;
    tcp::socket* to;
    Counter* bytes;
    bool done = false;  // `from` reached EOF
    std::array<char, kRelayBuffer> buffer{};
  };

  void arm(std::chrono::milliseconds after) {
    const std::uint64_t generation = ++timer_generation_;
    timer_.expires_after(after);
    // The generation tells a stale expiry (already queued when re-armed) from the live one.
    timer_.async_wait([self = shared_from_this(), generation](beast::error_code ec) {
      if (!ec && generation == self->timer_generation_) self->on_timer();
    });
  }

  void on_timer() {
    switch (phase_) {
      case Phase::head:
        log::debug(kComponent, "closed {}: no complete request head in time", peer_);
        settle(Outcome::refused);
        return close();
      case Phase::connecting: {
        // Cancels the connect; on_connect answers 502.
        connect_timed_out_ = true;
        beast::error_code ec;
        upstream_.close(ec);
        return;
      }
      case Phase::relay: {
        const auto idle = SteadyClock::now() - last_activity_;
        if (idle < s_.options.idle_timeout) {
          return arm(std::chrono::duration_cast<std::chrono::milliseconds>(s_.options.idle_timeout -
                                                                           idle) +
                     std::chrono::milliseconds(1));
        }
        return close();
      }
      case Phase::linger:
      case Phase::closed: return close();
    }
  }

  void read_head() {
    if (s_.stopping) return close();
    phase_ = Phase::head;
    arm(s_.options.head_timeout);
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(s_.options.header_limit));
    // Bytes after the head (a pipelined ClientHello) stay in head_buffer_ for the tunnel.
    http::async_read_header(
        client_, head_buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_head(ec); });
  }

  void on_head(beast::error_code ec) {
    if (phase_ != Phase::head) return;
    if (ec == http::error::header_limit) {
      return refuse(error_response(
                        400, kBadRequest,
                        fmt::format("request head: larger than {} bytes", s_.options.header_limit)),
                    kBadRequest, Outcome::refused);
    }
    if (is_http_parse_error(ec)) {
      return refuse(error_response(400, kBadRequest, "malformed CONNECT request"), kBadRequest,
                    Outcome::refused);
    }
    if (ec) {  // closed early, reset
      settle(Outcome::refused);
      return close();
    }
    decide(parser_->get());
  }

  void decide(const http::request<http::empty_body>& req) {
    if (req.method() != http::verb::connect) {
      auto r = error_response(405, kMethodNotAllowed, "method: only CONNECT is served");
      r.headers.emplace_back("Allow", "CONNECT");
      return refuse(std::move(r), kMethodNotAllowed, Outcome::refused);
    }
    if (req.version() != 11 && req.version() != 10) {
      return refuse(error_response(400, kBadRequest, "version: HTTP/1.1 expected"), kBadRequest,
                    Outcome::refused);
    }
    // A CONNECT carries no content (RFC 9110 §9.3.6): declared content is refused rather than
    // relayed as if it were tunnel bytes.
    if (parser_->content_length() || parser_->chunked()) {
      return refuse(error_response(400, kBadRequest, "CONNECT: a request body is not allowed"),
                    kBadRequest, Outcome::refused);
    }
    const std::string_view authority = detail::ssv(req.target());
    auto target = parse_ip_authority(authority);
    if (!target) {
      return refuse(error_response(400, kBadRequest, target.error().message), kBadRequest,
                    Outcome::refused);
    }
    if (req.count(http::field::proxy_authorization) > 1) {
      return refuse(error_response(400, kBadRequest, "Proxy-Authorization: repeated"), kBadRequest,
                    Outcome::refused);
    }
    const std::string_view credential =
        bearer_token(detail::ssv(req[http::field::proxy_authorization]));
    if (credential.empty()) {
      auto r = error_response(407, to_string(ErrorCode::unauthenticated),
                              "Proxy-Authorization: a Bearer token is required");
      r.headers.emplace_back("Proxy-Authenticate", "Bearer realm=\"mcim-gateway\"");
      return refuse(std::move(r), to_string(ErrorCode::unauthenticated), Outcome::refused);
    }
    Result<void> allowed = fail(ErrorCode::internal, "authoriser: not run");
    try {
      allowed = s_.authorize(credential, authority);
    } catch (const std::exception&) {
      allowed = fail(ErrorCode::internal, "authoriser threw");
    }
    if (!allowed) {
      const Error& e = allowed.error();
      return refuse(error_response(e), e.wire_code(),
                    http_status(e.code) >= 500 ? Outcome::failed : Outcome::refused);
    }
    destination_ = std::string(authority);
    connect(tcp::endpoint(asio::ip::make_address(target->host), target->port));
  }

  void connect(const tcp::endpoint& destination) {
    phase_ = Phase::connecting;
    arm(s_.options.connect_timeout);
    upstream_.async_connect(
        destination, [self = shared_from_this()](beast::error_code ec) { self->on_connect(ec); });
  }

  void on_connect(beast::error_code ec) {
    if (phase_ != Phase::connecting) return;
    if (ec) {
      const std::string reason = connect_timed_out_ ? "timed out" : ec.message();
      return refuse(error_response(502, to_string(ErrorCode::io_error),
                                   fmt::format("destination unreachable: {}", reason)),
                    to_string(ErrorCode::io_error), Outcome::failed);
    }
    if (s_.stopping) return close();
    beast::error_code ignored;
    client_.set_option(tcp::no_delay(true), ignored);  // TLS handshakes are small exchanges
    upstream_.set_option(tcp::no_delay(true), ignored);
    established_ = true;
    ++s_.open;
    ++s_.opened;
    if (s_.metrics.open != nullptr) s_.metrics.open->add(1);
    settle(Outcome::open);
    log::debug(kComponent, "tunnel {} -> {} open", peer_, destination_);
    phase_ = Phase::relay;
    last_activity_ = SteadyClock::now();
    arm(s_.options.idle_timeout);
    // Down starts once the 200 is out, so the destination's bytes never precede it.
    asio::async_write(client_, asio::buffer(kEstablished.data(), kEstablished.size()),
                      [self = shared_from_this()](beast::error_code wec, std::size_t) {
                        if (wec) return self->close();
                        self->pump(self->down_);
                      });
    if (head_buffer_.size() == 0) return pump(up_);
    asio::async_write(upstream_, head_buffer_.data(),
                      [self = shared_from_this()](beast::error_code wec, std::size_t n) {
                        if (wec) return self->close();
                        if (self->up_.bytes != nullptr) self->up_.bytes->inc(n);
                        self->head_buffer_ = {};
                        self->pump(self->up_);
                      });
  }

  void pump(Pipe& p) {
    if (phase_ != Phase::relay) return;
    p.from->async_read_some(asio::buffer(p.buffer),
                            [self = shared_from_this(), &p](beast::error_code ec, std::size_t n) {
                              self->on_read(p, ec, n);
                            });
  }

  void on_read(Pipe& p, beast::error_code ec, std::size_t n) {
    if (phase_ != Phase::relay) return;
    if (ec == asio::error::eof) {
      // Half-close: the other side learns this direction ended and may still answer.
      p.done = true;
      beast::error_code ignored;
      p.to->shutdown(tcp::socket::shutdown_send, ignored);
      if (up_.done && down_.done) close();
      return;
    }
    if (ec) return close();
    last_activity_ = SteadyClock::now();
    if (p.bytes != nullptr) p.bytes->inc(n);
    asio::async_write(*p.to, asio::buffer(p.buffer.data(), n),
                      [self = shared_from_this(), &p](beast::error_code wec, std::size_t) {
                        if (wec) return self->close();
                        self->last_activity_ = SteadyClock::now();
                        self->pump(p);
                      });
  }

  // Counts the connection's outcome, once.
  void settle(Outcome o) {
    if (settled_) return;
    settled_ = true;
    Counter* c = nullptr;
    switch (o) {
      case Outcome::open: c = s_.metrics.opened; break;
      case Outcome::refused: c = s_.metrics.refused; break;
      case Outcome::failed: c = s_.metrics.failed; break;
    }
    if (o != Outcome::open) ++s_.refused;
    if (c != nullptr) c->inc();
  }

  void refuse(HttpResponse r, std::string_view code, Outcome outcome) {
    settle(outcome);
    log::debug(kComponent, "refused {}: {} {}", peer_, r.status, code);
    beast::error_code ignored;
    upstream_.close(ignored);
    phase_ = Phase::linger;
    arm(kLingerTime);  // bounds the write and the drain
    answer_ = {};
    answer_.version(11);
    answer_.result(static_cast<unsigned>(r.status));
    answer_.set(http::field::server, "mcim");
    answer_.set(http::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers) answer_.set(name, value);
    answer_.body() = std::move(r.body);
    answer_.keep_alive(false);
    answer_.prepare_payload();
    http::async_write(client_, answer_,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec || self->phase_ != Phase::linger) return self->close();
                        beast::error_code sec;
                        self->client_.shutdown(tcp::socket::shutdown_send, sec);
                        self->drain();
                      });
  }

  void drain() {
    client_.async_read_some(asio::buffer(down_.buffer), [self = shared_from_this()](
                                                            beast::error_code ec, std::size_t n) {
      self->drained_ += n;
      if (ec || self->drained_ > kLingerBytes || self->phase_ != Phase::linger) {
        return self->close();
      }
      self->drain();
    });
  }

  void close() {
    if (phase_ == Phase::closed) return;
    phase_ = Phase::closed;
    ++timer_generation_;
    timer_.cancel();
    beast::error_code ignored;
    client_.shutdown(tcp::socket::shutdown_both, ignored);
    client_.close(ignored);
    upstream_.shutdown(tcp::socket::shutdown_both, ignored);
    upstream_.close(ignored);
  }

  tcp::socket client_;
  tcp::socket upstream_;
  asio::steady_timer timer_;
  State& s_;
  Worker& worker_;
  std::uint64_t id_;
  bool holds_slot_;
  Pipe up_, down_;
  std::string peer_;         // the device's address, for logs
  std::string destination_;  // the CONNECT target, for logs
  Phase phase_ = Phase::head;
  std::uint64_t timer_generation_ = 0;
  bool connect_timed_out_ = false;
  bool established_ = false;
  bool settled_ = false;
  std::size_t drained_ = 0;
  SteadyClock::time_point last_activity_;
  beast::flat_buffer head_buffer_;
  std::optional<http::request_parser<http::empty_body>> parser_;
  http::response<http::string_body> answer_;  // alive until its async_write completes
};

void on_accept(State& s, tcp::socket socket, Worker& worker) {
  const bool holds_slot = s.slots.load() < s.options.max_tunnels;
  if (holds_slot) ++s.slots;
  std::shared_ptr<Tunnel> tunnel;
  {
    std::lock_guard lock(s.mu);
    const std::uint64_t id = s.next_id++;
    tunnel = std::make_shared<Tunnel>(std::move(socket), s, worker, id, holds_slot);
    s.tunnels.emplace(id, tunnel);
  }
  tunnel->start();
}

bool initiate_stop(State& s) {
  if (s.stopping.exchange(true)) return false;
  s.listener.stop_accepting();
  std::vector<std::shared_ptr<TunnelBase>> live;
  {
    std::lock_guard lock(s.mu);
    for (auto& [id, weak] : s.tunnels) {
      if (auto tunnel = weak.lock()) live.push_back(std::move(tunnel));
    }
  }
  // Outside the lock: releasing the last reference runs ~Tunnel, which takes it.
  for (auto& tunnel : live) tunnel->stop();
  return true;
}

void finish_stop(State& s) {
  {
    // Closing is immediate; the wait only covers a worker busy in the authoriser.
    std::unique_lock lock(s.mu);
    s.changed.wait_for(lock, kStopWait, [&s] { return s.tunnels.empty(); });
  }
  s.listener.join();
}

Result<void> check_options(const ConnectProxyOptions& o, const TunnelAuthorizer& authorize) {
  if (o.threads < 1 || o.threads > 256) {
    return fail(ErrorCode::invalid_argument, "gateway: threads must be 1..256");
  }
  if (!authorize) return fail(ErrorCode::invalid_argument, "gateway: no authoriser");
  if (o.header_limit < 64 || o.header_limit > (1u << 20)) {
    return fail(ErrorCode::invalid_argument, "gateway: header_limit must be 64 B..1 MiB");
  }
  if (o.max_tunnels < 1) return fail(ErrorCode::invalid_argument, "gateway: max_tunnels is 0");
  if (o.head_timeout.count() <= 0 || o.connect_timeout.count() <= 0 ||
      o.idle_timeout.count() <= 0) {
    return fail(ErrorCode::invalid_argument, "gateway: timeouts must be positive");
  }
  return {};
}

void attach_metrics(State& s) {
  if (!s.options.metrics) return;
  Metrics& m = *s.options.metrics;
  constexpr std::string_view kTunnels = "mcim_gateway_tunnels_total";
  constexpr std::string_view kTunnelsHelp =
      "CONNECT requests by outcome: open, refused (4xx, incomplete head), failed (502, 503).";
  s.metrics.opened = &m.counter(kTunnels, kTunnelsHelp, {{"outcome", "open"}});
  s.metrics.refused = &m.counter(kTunnels, kTunnelsHelp, {{"outcome", "refused"}});
  s.metrics.failed = &m.counter(kTunnels, kTunnelsHelp, {{"outcome", "failed"}});
  s.metrics.open = &m.gauge("mcim_gateway_tunnels_open", "Tunnels open now.");
  constexpr std::string_view kBytes = "mcim_gateway_bytes_total";
  constexpr std::string_view kBytesHelp =
      "Bytes relayed: up from devices to destinations, down back.";
  s.metrics.up = &m.counter(kBytes, kBytesHelp, {{"direction", "up"}});
  s.metrics.down = &m.counter(kBytes, kBytesHelp, {{"direction", "down"}});
}

}  // namespace

ConnectProxy::ConnectProxy(std::unique_ptr<State> state) : state_(std::move(state)) {}

Result<std::unique_ptr<ConnectProxy>> ConnectProxy::start(const ConnectProxyOptions& options,
                                                          TunnelAuthorizer authorize) {
  if (auto r = check_options(options, authorize); !r) return std::unexpected(r.error());
  auto state = std::make_unique<State>(options.threads);
  state->options = options;
  state->authorize = std::move(authorize);
  attach_metrics(*state);
  auto listening = state->listener.start(
      options.host, options.port,
      {.host_field = "gateway host", .io_prefix = "gateway: ", .threads = options.thread_name},
      [&s = *state](tcp::socket socket, Worker& worker) {
        on_accept(s, std::move(socket), worker);
      });
  if (!listening) return std::unexpected(listening.error());
  return std::unique_ptr<ConnectProxy>(new ConnectProxy(std::move(state)));
}

ConnectProxy::~ConnectProxy() {
  initiate_stop(*state_);
  finish_stop(*state_);
}

std::uint16_t ConnectProxy::port() const { return state_->listener.port(); }

std::string ConnectProxy::address() const { return state_->listener.address(); }

std::uint64_t ConnectProxy::tunnels_opened() const { return state_->opened.load(); }
std::uint64_t ConnectProxy::tunnels_refused() const { return state_->refused.load(); }
std::size_t ConnectProxy::tunnels_open() const { return state_->open.load(); }

void ConnectProxy::stop() {
  initiate_stop(*state_);
  if (!state_->listener.on_own_thread()) finish_stop(*state_);
}

}  // namespace mcim::net
