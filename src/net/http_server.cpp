#include "net/http_server.h"

#include <fmt/format.h>

#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

namespace mcim::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {
class Session;
}

struct HttpServer::State {
  HttpServerOptions options;
  HttpHandler handler;

  // Declared before `ioc`: connections still queued in the io_context when it is destroyed
  // unregister themselves here, so these must outlive it.
  std::mutex mu;                    // guards sessions, next_id
  std::condition_variable changed;  // a session ended, or stopping became true
  std::unordered_map<std::uint64_t, std::weak_ptr<Session>> sessions;
  std::uint64_t next_id = 0;
  std::atomic<bool> stopping{false};

  asio::io_context ioc;
  tcp::acceptor acceptor{asio::make_strand(ioc)};  // on a strand: accept and close never race
  asio::steady_timer accept_pause{acceptor.get_executor()};  // after a failed accept
  std::uint16_t bound_port = 0;

  std::mutex join_mu;  // guards threads (joined once)
  std::vector<std::thread> threads;
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
constexpr std::chrono::milliseconds kAcceptPause{100};

bool is_http_parse_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

// One connection: reads requests one after another (keep-alive), calls the handler, writes the
// responses. All its work runs on its own strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, State& server, std::uint64_t id)
      : stream_(std::move(socket)), server_(server), id_(id) {}
  ~Session() {
    std::lock_guard lock(server_.mu);
    server_.sessions.erase(id_);
    server_.changed.notify_all();
  }

  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_header(); });
  }

  // From any thread: ends the connection now if it waits for a request; otherwise the request in
  // progress completes and the connection closes after its response.
  void shutdown() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->reading_) self->close();
    });
  }

 private:
  void read_header() {
    if (server_.stopping) return close();
    parser_.emplace();
    parser_->body_limit(server_.options.body_limit);
    parser_->header_limit(static_cast<std::uint32_t>(server_.options.header_limit));
    stream_.expires_after(server_.options.read_timeout);
    reading_ = true;
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    reading_ = false;
    if (ec) return on_read_error(ec);
    const auto& req = parser_->get();
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = shared_from_this()](beast::error_code wec, std::size_t) {
                          if (wec) return self->close();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    reading_ = true;
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_body(ec); });
  }

  void on_body(beast::error_code ec) {
    reading_ = false;
    if (ec) return on_read_error(ec);
    auto req = parser_->release();
    HttpRequest request{std::string(req.method_string()), std::string(req.target()),
                        std::string(req[http::field::content_type]), std::move(req.body())};
    HttpResponse response = call_handler(request);
    // Checked after the handler: a stop during it still ends this connection.
    write(std::move(response), req.keep_alive() && !server_.stopping);
  }

  // The handler's answer; a throwing handler becomes a 500, never a dead server.
  HttpResponse call_handler(const HttpRequest& request) {
    try {
      return server_.handler(request);
    } catch (const std::exception&) {
      return HttpResponse{500, "text/plain", "internal error\n", {}};
    }
  }

  void on_read_error(beast::error_code ec) {
    if (ec == http::error::body_limit) return refuse(http::status::payload_too_large);
    if (ec == http::error::header_limit) {
      return refuse(http::status::request_header_fields_too_large);
    }
    if (is_http_parse_error(ec)) return refuse(http::status::bad_request);
    close();  // end of stream, timeout, reset, or closed by shutdown()
  }

  void refuse(http::status status) {
    HttpResponse r;
    r.status = static_cast<int>(status);
    r.body = std::string(http::obsolete_reason(status)) + "\n";
    write(std::move(r), false, /*linger=*/true);
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
    for (const auto& [name, value] : r.headers) response_.set(name, value);
    response_.body() = std::move(r.body);
    response_.keep_alive(keep_alive);
    response_.prepare_payload();
    stream_.expires_after(server_.options.write_timeout);
    http::async_write(
        stream_, response_,
        [self = shared_from_this(), keep_alive, linger](beast::error_code ec, std::size_t) {
          if (ec) return self->close();
          if (linger) return self->linger_close();
          if (keep_alive) return self->read_header();
          self->close();
        });
  }

  void linger_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(kLingerTime);
    drain();
  }

  void drain() {
    reading_ = true;
    stream_.async_read_some(asio::buffer(discard_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->reading_ = false;
                              self->drained_ += n;
                              if (ec || self->drained_ > kLingerBytes) return self->close();
                              self->drain();
                            });
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;  // alive until its async_write completes
  std::array<char, 4096> discard_{};
  std::size_t drained_ = 0;
  State& server_;
  std::uint64_t id_;
  bool reading_ = false;  // a read is pending: shutdown() may cut it
};

void accept_next(State& s);

void on_accept(State& s, beast::error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || s.stopping) return;  // the socket just closes
  if (!ec) {
    std::shared_ptr<Session> session;
    {
      std::lock_guard lock(s.mu);
      const std::uint64_t id = s.next_id++;
      session = std::make_shared<Session>(std::move(socket), s, id);
      s.sessions.emplace(id, session);
    }
    session->start();
    return accept_next(s);
  }
  // A failed accept (e.g. EMFILE: out of descriptors) would fail again at once; pause before
  // retrying instead of spinning, and keep serving the connections already open.
  s.accept_pause.expires_after(kAcceptPause);
  s.accept_pause.async_wait([&s](beast::error_code wait_ec) {
    if (!wait_ec && !s.stopping) accept_next(s);
  });
}

void accept_next(State& s) {
  // Each connection gets its own strand, so with N threads connections run in parallel while
  // one connection's handlers never overlap.
  s.acceptor.async_accept(asio::make_strand(s.ioc), [&s](beast::error_code ec, tcp::socket sock) {
    on_accept(s, ec, std::move(sock));
  });
}

Result<void> bind(State& s) {
  beast::error_code ec;
  const auto address = asio::ip::make_address(s.options.host, ec);
  if (ec) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("listen host {}: not an IP address", s.options.host));
  }
  const tcp::endpoint endpoint(address, s.options.port);
  s.acceptor.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return fail(ErrorCode::io_error, fmt::format("cannot listen on {}:{}: {}", s.options.host,
                                                 s.options.port, ec.message()));
  }
  s.bound_port = s.acceptor.local_endpoint().port();
  return {};
}

void run_worker(asio::io_context& ioc) {
  for (;;) {
    try {
      ioc.run();
      return;
    } catch (const std::exception&) {
      // Handlers catch their own errors; anything escaping Asio itself (e.g. bad_alloc in one
      // connection) must not take the whole server down. Keep serving.
    }
  }
}

// Stops accepting and ends idle connections; returns false when the stop was already begun.
bool initiate_stop(State& s) {
  if (s.stopping.exchange(true)) return false;
  asio::post(s.acceptor.get_executor(), [&s] {
    beast::error_code ec;
    s.acceptor.close(ec);
    s.accept_pause.cancel();
  });
  std::vector<std::shared_ptr<Session>> live;
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
  s.ioc.stop();
  std::lock_guard lock(s.join_mu);
  for (auto& t : s.threads) {
    if (t.joinable()) t.join();
  }
}

}  // namespace

HttpServer::HttpServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

Result<std::unique_ptr<HttpServer>> HttpServer::start(const HttpServerOptions& options,
                                                      HttpHandler handler) {
  if (options.threads < 1 || options.threads > 256) {
    return fail(ErrorCode::invalid_argument, "http server: threads must be 1..256");
  }
  if (!handler) return fail(ErrorCode::invalid_argument, "http server: no handler");
  auto state = std::make_unique<State>();
  state->options = options;
  state->handler = std::move(handler);
  if (auto r = bind(*state); !r) return std::unexpected(r.error());
  accept_next(*state);
  for (int i = 0; i < options.threads; ++i) {
    state->threads.emplace_back([&ioc = state->ioc] { run_worker(ioc); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(state)));
}

HttpServer::~HttpServer() {
  initiate_stop(*state_);
  finish_stop(*state_);
}

std::uint16_t HttpServer::port() const { return state_->bound_port; }

std::string HttpServer::address() const {
  const bool v6 = state_->options.host.find(':') != std::string::npos;
  return v6 ? fmt::format("[{}]:{}", state_->options.host, state_->bound_port)
            : fmt::format("{}:{}", state_->options.host, state_->bound_port);
}

void HttpServer::stop() {
  initiate_stop(*state_);
  // A worker thread cannot join itself: it only initiates; wait() or the destructor completes.
  if (!state_->ioc.get_executor().running_in_this_thread()) finish_stop(*state_);
}

void HttpServer::wait() {
  {
    std::unique_lock lock(state_->mu);
    state_->changed.wait(lock, [this] { return state_->stopping.load(); });
  }
  finish_stop(*state_);
}

}  // namespace mcim::net
