// The HTTP/1.1 server of every mcim service, on Boost.Beast/Asio, plain or over TLS 1.3 (with
// optional or required client certificates, net/tls.h): binds host:port (port 0 = an ephemeral
// port), hands each complete request with its Peer (address, verified client certificate) to one
// handler and writes its response; keep-alive, a body size limit (413), a header size limit
// (431), malformed requests answered 400 then closed, read/write timeouts, and a graceful stop
// callable from any thread. Refusals are JSON error envelopes (net/http_error.h).
// Threading: one io_context per worker thread; the acceptor (on a thread of its own) hands each
// new connection to the worker with the fewest open connections, and the connection stays on
// that thread for its life. The handler therefore runs concurrently on different connections
// when threads > 1, and a handler that blocks holds up the other connections of its worker
// (docs/protocol.md, "Threading").
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"
#include "net/tls.h"

namespace mcim::net {

class Metrics;

struct HttpRequest {
  std::string method;        // as sent, e.g. "GET", "POST"
  std::string target;        // origin-form path and query, e.g. "/ocsp/MEIw..."
  std::string content_type;  // empty when absent
  std::string body;
  Peer peer;                                                 // who sent it
  std::vector<std::pair<std::string, std::string>> headers;  // every field, as received
  // When the server had read it; the same on every run of a held request (HttpResponse::hold).
  std::chrono::steady_clock::time_point received{};

  // The first field called `name` (case-insensitive), empty when absent.
  std::string_view header(std::string_view name) const;
};

// Re-runs a held request's handler (below); callable from any thread, more than once (only the
// first call after each hold counts).
using Wake = std::function<void()>;

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra fields, e.g. Allow
  // A long poll (docs/protocol.md "Held polls"): a handler with nothing to answer yet returns a
  // response with only `hold` set. The server writes nothing, calls hold(wake) once, and when
  // wake() is called runs the handler again for the same request on the connection's worker,
  // answering what it returns then (which may hold again). Whoever keeps `wake` must call it in
  // the end (say at the poll's deadline): until then the connection waits, and a stopping server
  // waits for it up to stop_grace.
  std::function<void(Wake)> hold{};
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";       // an IP address literal (v4 or v6), not a name
  std::uint16_t port = 0;               // 0: the kernel picks one; see HttpServer::port()
  int threads = 1;                      // worker threads, each with its own io_context
  std::size_t body_limit = 64 * 1024;   // larger bodies are answered 413
  std::size_t header_limit = 8 * 1024;  // larger headers are answered 431
  std::chrono::milliseconds read_timeout{10'000};   // per request (TLS handshake, idle keep-alive)
  std::chrono::milliseconds write_timeout{10'000};  // per response
  std::chrono::milliseconds stop_grace{2'000};      // stop(): how long in-flight work may finish
  std::optional<TlsServerOptions> tls;              // absent: plain HTTP (e.g. OCSP)
  // Prefix of the threads' names (common/thread_name.h): workers "<thread_name>-<n>", the
  // acceptor "<thread_name>-a", e.g. "ro-http-0"; empty: unnamed.
  std::string thread_name;
  // When set: mcim_http_connections_total, mcim_http_connections_open and
  // mcim_tls_handshake_failures_total are kept there.
  std::shared_ptr<Metrics> metrics;
};

class HttpServer {
 public:
  // Binds and starts serving; invalid_argument/missing_argument for a bad host, thread count
  // or TLS options, io_error when the address cannot be bound (in use, no permission). Returns
  // once the socket listens.
  static Result<std::unique_ptr<HttpServer>> start(const HttpServerOptions& options,
                                                   HttpHandler handler);
  ~HttpServer();  // stop(); never from a handler (a worker thread cannot join itself)
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  std::uint16_t port() const;   // the bound port (the ephemeral one when options.port was 0)
  std::string address() const;  // "127.0.0.1:PORT" or "[::1]:PORT"
  std::string url() const;      // "https://ADDRESS" or "http://ADDRESS"
  bool tls() const;
  std::uint64_t connections_accepted() const;  // since start, TLS handshakes failed included

  // Stops accepting, closes idle connections, lets requests in progress finish (up to
  // stop_grace), then ends the worker threads and returns. Idempotent. Called from a handler
  // (a worker thread) it only initiates the stop; the destructor or wait() completes it.
  void stop();
  // Blocks until the server has stopped (after stop() from another thread).
  void wait();

  struct State;  // the Asio machinery and the connection registry (http_server.cpp)

 private:
  explicit HttpServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace mcim::net
