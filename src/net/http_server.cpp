#include "net/http_server.h"

#include <fmt/format.h>

#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <type_traits>
#include <unordered_map>

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

std::string_view HttpRequest::header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (detail::iequals(n, name)) return v;
  }
  return {};
}

namespace {

// What stop() needs of a connection, whatever its stream.
class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void shutdown() = 0;
};

struct ServerMetrics {
  Counter* connections = nullptr;
  Gauge* open = nullptr;
  Counter* handshake_failures = nullptr;
};

}  // namespace

struct HttpServer::State {
  HttpServerOptions options;
  HttpHandler handler;
  ServerMetrics metrics;
  // Before the listener: the streams of connections still queued at destruction refer to it.
  std::unique_ptr<asio::ssl::context> tls;

  // Declared before the listener: connections still queued in a worker's io_context when it is
  // destroyed unregister themselves here, so these must outlive it.
  std::mutex mu;                    // guards sessions, next_id
  std::condition_variable changed;  // a session ended, or stopping became true
  std::unordered_map<std::uint64_t, std::weak_ptr<SessionBase>> sessions;
  std::uint64_t next_id = 0;
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> accepted{0};

  detail::Listener listener;  // the workers and the acceptor

  explicit State(int threads) : listener(threads) {}
};

namespace {

using State = HttpServer::State;

// 100-continue interim response (RFC 9110 §10.1.1): clients such as curl wait for it before
// sending a large body, and only get it once the headers passed the size checks.
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
// After refusing a request we drain what the client still sends, for a bounded time, so the
// refusal is not lost to a TCP reset (the "lingering close" of RFC 9112 §9.6).
constexpr std::chrono::milliseconds kLingerTime{1'000};
constexpr std::size_t kLingerBytes = 1 << 20;
// How long a TLS connection waits for the client's close_notify after sending its own.
constexpr std::chrono::milliseconds kTlsShutdownTime{1'000};

bool is_http_parse_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

// One connection: (TLS handshake,) then reads requests one after another (keep-alive), calls
// the handler, writes the responses. All its work runs on its worker's single thread.
template <bool kTls>
class Session : public SessionBase, public std::enable_shared_from_this<Session<kTls>> {
  using Stream = std::conditional_t<kTls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;

 public:
  Session(tcp::socket socket, State& server, Worker& worker, std::uint64_t id)
      : stream_(make_stream(std::move(socket), server)), server_(server), worker_(worker), id_(id) {
    ++worker_.connections;
    peer_.address = detail::remote_address(lowest().socket());
    beast::error_code ec;
    lowest().socket().set_option(tcp::no_delay(true), ec);  // small request/response exchanges
    peer_.tls = kTls;
    if (server_.metrics.open != nullptr) server_.metrics.open->add(1);
  }
  ~Session() override {
    if (server_.metrics.open != nullptr) server_.metrics.open->add(-1);
    --worker_.connections;
    std::lock_guard lock(server_.mu);
    server_.sessions.erase(id_);
    server_.changed.notify_all();
  }

  void start() {
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (kTls) {
        self->handshake();
      } else {
        self->read_header();
      }
    });
  }

  // From any thread: ends the connection now if it waits for the client; otherwise the request
  // in progress completes and the connection closes after its response.
  void shutdown() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] {
      if (self->reading_) self->close();
      if (self->held_self_) {  // a held request is not answered: the connection just ends
        self->held_self_.reset();
        self->close();
      }
    });
  }

 private:
  static Stream make_stream(tcp::socket socket, State& server) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *server.tls);
    } else {
      return Stream(std::move(socket));
    }
  }

  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void handshake() {
    if (server_.stopping) return close();
    lowest().expires_after(server_.options.read_timeout);
    reading_ = true;
    stream_.async_handshake(
        asio::ssl::stream_base::server,
        [self = this->shared_from_this()](beast::error_code ec) { self->on_handshake(ec); });
  }

  void on_handshake(beast::error_code ec) {
    reading_ = false;
    if (ec) {
      if (server_.metrics.handshake_failures != nullptr) server_.metrics.handshake_failures->inc();
      return close();
    }
    if constexpr (kTls) peer_.certificate = detail::peer_of(stream_.native_handle());
    read_header();
  }

  void read_header() {
    if (server_.stopping) return close();
    parser_.emplace();
    parser_->body_limit(server_.options.body_limit);
    parser_->header_limit(static_cast<std::uint32_t>(server_.options.header_limit));
    lowest().expires_after(server_.options.read_timeout);
    reading_ = true;
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              self->on_header(ec);
                            });
  }

  void on_header(beast::error_code ec) {
    reading_ = false;
    if (ec) return on_read_error(ec);
    const auto& req = parser_->get();
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = this->shared_from_this()](beast::error_code wec, std::size_t) {
                          if (wec) return self->close();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    reading_ = true;
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_body(ec);
                     });
  }

  void on_body(beast::error_code ec) {
    reading_ = false;
    if (ec) return on_read_error(ec);
    auto req = parser_->release();
    HttpRequest request{std::string(req.method_string()),
                        std::string(req.target()),
                        std::string(req[http::field::content_type]),
                        std::move(req.body()),
                        peer_,
                        {}};
    for (const auto& field : req) {
      request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    request.received = std::chrono::steady_clock::now();
    keep_alive_ = req.keep_alive();
    request_ = std::move(request);
    answer();
  }

  // Runs the handler on request_ and writes its answer, or leaves the connection waiting for the
  // wake of a held request (HttpResponse::hold).
  // While held, the session keeps itself (held_self_): the wake only knows it weakly, so a wake
  // kept past the server's life finds nothing, and shutdown() ends a held connection at once.
  void answer() {
    HttpResponse response = call_handler(request_);
    // A stop that began before this run posted its shutdown() already or will after it, on this
    // executor; a hold taken now might outlive the workers, so it is refused instead.
    if (response.hold && server_.stopping) {
      response = error_response(503, to_string(ErrorCode::busy), "the service is stopping");
    }
    if (response.hold) {
      auto woken = std::make_shared<std::atomic<bool>>(false);
      std::weak_ptr<Session> weak = this->shared_from_this();
      Wake wake = [weak, woken] {
        if (woken->exchange(true)) return;
        if (auto self = weak.lock()) {
          asio::post(self->stream_.get_executor(), [self] { self->on_wake(); });
        }
      };
      held_self_ = this->shared_from_this();
      try {
        response.hold(std::move(wake));
        return;
      } catch (const std::exception&) {
        if (woken->exchange(true)) return;  // it was woken already: that run answers
        held_self_.reset();
        response = error_response(500, to_string(ErrorCode::internal), "internal error");
      }
    }
    // Checked after the handler: a stop during it still ends this connection.
    write(std::move(response), keep_alive_ && !server_.stopping);
  }

  void on_wake() {
    if (!held_self_) return;  // shutdown() let go of it meanwhile
    auto self = std::move(held_self_);
    answer();
  }

  // The handler's answer; a throwing handler becomes a 500, never a dead server.
  HttpResponse call_handler(const HttpRequest& request) {
    try {
      return server_.handler(request);
    } catch (const std::exception&) {
      return error_response(500, to_string(ErrorCode::internal), "internal error");
    }
  }

  void on_read_error(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      return refuse(http::status::payload_too_large, kPayloadTooLarge,
                    fmt::format("body: larger than {} bytes", server_.options.body_limit));
    }
    if (ec == http::error::header_limit) {
      return refuse(http::status::request_header_fields_too_large, kHeaderTooLarge,
                    fmt::format("header: larger than {} bytes", server_.options.header_limit));
    }
    if (is_http_parse_error(ec)) {
      return refuse(http::status::bad_request, kBadRequest, "malformed HTTP request");
    }
    close();  // end of stream, timeout, reset, or closed by shutdown()
  }

  void refuse(http::status status, std::string_view code, std::string_view message) {
    write(error_response(static_cast<int>(status), code, message), false, /*linger=*/true);
  }

  void write(HttpResponse r, bool keep_alive, bool linger = false) {
    // Beast refuses status codes outside 100..999; a handler bug must not throw here.
    const unsigned status =
        r.status >= 100 && r.status <= 999 ? static_cast<unsigned>(r.status) : 500u;
    response_ = {};
    response_.version(11);
    response_.result(status);
    response_.set(http::field::server, "mcim");
    response_.set(http::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers) {
      response_.set(name, value);
      // A handler may end the connection after its answer.
      if (detail::iequals(name, "Connection") && detail::iequals(value, "close")) {
        keep_alive = false;
      }
    }
    response_.body() = std::move(r.body);
    response_.keep_alive(keep_alive);
    response_.prepare_payload();
    lowest().expires_after(server_.options.write_timeout);
    http::async_write(
        stream_, response_,
        [self = this->shared_from_this(), keep_alive, linger](beast::error_code ec, std::size_t) {
          if (ec) return self->close();
          if (linger) return self->linger_close();
          if (keep_alive) return self->read_header();
          self->finish();
        });
  }

  // The connection ends after a response: over TLS, close_notify first (RFC 8446 §6.1), so the
  // client can tell the end from a truncation; bounded, and cut at once by shutdown().
  void finish() {
    if constexpr (kTls) {
      lowest().expires_after(kTlsShutdownTime);
      reading_ = true;
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {
        self->reading_ = false;
        self->close();
      });
    } else {
      close();
    }
  }

  void linger_close() {
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    lowest().expires_after(kLingerTime);
    drain();
  }

  void drain() {
    reading_ = true;
    stream_.async_read_some(asio::buffer(discard_),
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->reading_ = false;
                              self->drained_ += n;
                              if (ec || self->drained_ > kLingerBytes) return self->close();
                              self->drain();
                            });
  }

  void close() {
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close();
  }

  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;  // alive until its async_write completes
  std::array<char, 4096> discard_{};
  std::size_t drained_ = 0;
  State& server_;
  Worker& worker_;
  std::uint64_t id_;
  Peer peer_;             // the same for every request of the connection
  HttpRequest request_;   // the one being answered (kept for the runs of a held request)
  std::shared_ptr<Session> held_self_;  // set while a request is held
  bool keep_alive_ = false;
  bool reading_ = false;  // waiting for the client: shutdown() may cut it
};

template <bool kTls>
void open_session(State& s, Worker& worker, tcp::socket socket) {
  std::shared_ptr<Session<kTls>> session;
  {
    std::lock_guard lock(s.mu);
    const std::uint64_t id = s.next_id++;
    session = std::make_shared<Session<kTls>>(std::move(socket), s, worker, id);
    s.sessions.emplace(id, session);
  }
  session->start();
}

void on_accept(State& s, tcp::socket socket, Worker& worker) {
  ++s.accepted;
  if (s.metrics.connections != nullptr) s.metrics.connections->inc();
  if (s.tls) {
    open_session<true>(s, worker, std::move(socket));
  } else {
    open_session<false>(s, worker, std::move(socket));
  }
}

// Stops accepting and ends idle connections; returns false when the stop was already begun.
bool initiate_stop(State& s) {
  if (s.stopping.exchange(true)) return false;
  s.listener.stop_accepting();
  std::vector<std::shared_ptr<SessionBase>> live;
  {
    std::lock_guard lock(s.mu);
    for (auto& [id, weak] : s.sessions) {
      if (auto session = weak.lock()) live.push_back(std::move(session));
    }
    s.changed.notify_all();
  }
  // Outside the lock: releasing the last reference runs ~Session, which takes it.
  for (auto& session : live) session->shutdown();
  return true;
}

// Waits (bounded by stop_grace) for the connections to finish, then ends the worker threads.
void finish_stop(State& s) {
  {
    std::unique_lock lock(s.mu);
    s.changed.wait_for(lock, s.options.stop_grace, [&s] { return s.sessions.empty(); });
  }
  s.listener.join();
}

Result<void> check_options(const HttpServerOptions& options, const HttpHandler& handler) {
  if (options.threads < 1 || options.threads > 256) {
    return fail(ErrorCode::invalid_argument, "http server: threads must be 1..256");
  }
  if (!handler) return fail(ErrorCode::invalid_argument, "http server: no handler");
  return {};
}

void attach_metrics(State& s) {
  if (!s.options.metrics) return;
  Metrics& m = *s.options.metrics;
  s.metrics.connections = &m.counter("mcim_http_connections_total", "Connections accepted (TCP).");
  s.metrics.open = &m.gauge("mcim_http_connections_open", "Connections open now.");
  if (s.tls) {
    s.metrics.handshake_failures = &m.counter(
        "mcim_tls_handshake_failures_total",
        "TLS handshakes that failed: wrong version, no or untrusted client certificate, timeout.");
  }
}

}  // namespace

HttpServer::HttpServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

Result<std::unique_ptr<HttpServer>> HttpServer::start(const HttpServerOptions& options,
                                                      HttpHandler handler) {
  if (auto r = check_options(options, handler); !r) return std::unexpected(r.error());
  auto state = std::make_unique<State>(options.threads);
  state->options = options;
  state->handler = std::move(handler);
  if (options.tls) {
    auto ctx = detail::make_server_context(*options.tls);
    if (!ctx) return std::unexpected(ctx.error());
    state->tls = std::move(*ctx);
  }
  attach_metrics(*state);
  auto listening = state->listener.start(
      options.host, options.port,
      {.host_field = "listen host", .io_prefix = "", .threads = options.thread_name},
      [&s = *state](tcp::socket socket, Worker& worker) {
        on_accept(s, std::move(socket), worker);
      });
  if (!listening) return std::unexpected(listening.error());
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(state)));
}

HttpServer::~HttpServer() {
  initiate_stop(*state_);
  finish_stop(*state_);
}

std::uint16_t HttpServer::port() const { return state_->listener.port(); }

std::string HttpServer::address() const { return state_->listener.address(); }

std::string HttpServer::url() const {
  return fmt::format("{}://{}", tls() ? "https" : "http", address());
}

bool HttpServer::tls() const { return state_->tls != nullptr; }

std::uint64_t HttpServer::connections_accepted() const { return state_->accepted.load(); }

void HttpServer::stop() {
  initiate_stop(*state_);
  // A worker thread cannot join itself: it only initiates; wait() or the destructor completes.
  if (!state_->listener.on_own_thread()) finish_stop(*state_);
}

void HttpServer::wait() {
  {
    std::unique_lock lock(state_->mu);
    state_->changed.wait(lock, [this] { return state_->stopping.load(); });
  }
  finish_stop(*state_);
}

}  // namespace mcim::net
