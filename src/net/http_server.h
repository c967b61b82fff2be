// A small HTTP/1.1 server on Boost.Beast/Asio: binds host:port (port 0 = an ephemeral port),
// hands each complete request to one handler and writes its response; keep-alive, a body size
// limit (413), a header size limit (431), malformed requests answered 400 then closed, a read
// timeout, N worker threads, and a graceful stop callable from any thread. No TLS yet (issue 6).
// Thread-safety: the handler runs on the worker threads, concurrently when threads > 1.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"

namespace mcim::net {

struct HttpRequest {
  std::string method;        // as sent, e.g. "GET", "POST"
  std::string target;        // origin-form path and query, e.g. "/ocsp/MEIw..."
  std::string content_type;  // empty when absent
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra fields, e.g. Allow
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";  // an IP address literal (v4 or v6), not a name
  std::uint16_t port = 0;          // 0: the kernel picks one; see HttpServer::port()
  int threads = 1;
  std::size_t body_limit = 64 * 1024;               // larger bodies are answered 413
  std::size_t header_limit = 8 * 1024;              // larger headers are answered 431
  std::chrono::milliseconds read_timeout{10'000};   // per request, idle keep-alive included
  std::chrono::milliseconds write_timeout{10'000};  // per response
  std::chrono::milliseconds stop_grace{2'000};      // stop(): how long in-flight work may finish
};

class HttpServer {
 public:
  // Binds and starts serving; invalid_argument for a bad host or thread count, io_error when
  // the address cannot be bound (in use, no permission).
  static Result<std::unique_ptr<HttpServer>> start(const HttpServerOptions& options,
                                                   HttpHandler handler);
  ~HttpServer();  // stop(); never from a handler (a worker thread cannot join itself)
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  std::uint16_t port() const;   // the bound port (the ephemeral one when options.port was 0)
  std::string address() const;  // "127.0.0.1:PORT" or "[::1]:PORT"

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
