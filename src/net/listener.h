// Internal to src/net: the accepting half shared by HttpServer and ConnectProxy. It owns the
// worker threads (one io_context each), the listening socket on a thread of its own, and the
// threads' lifetime; what a connection does is the owner's. The acceptor has its own thread so
// that a worker blocked in a handler does not stop new connections from reaching the others.
#pragma once

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/error.h"

namespace mcim::net::detail {

// One worker thread: its own io_context (no locks shared with the other workers on the I/O
// path), and how many connections it serves, so the listener can balance them.
struct Worker {
  // Before ioc: connections it destroys decrement it. The owner's connection objects keep it
  // (increment when created, decrement when destroyed); the listener only reads it.
  std::atomic<int> connections{0};
  boost::asio::io_context ioc{1};
  // Keeps run() going while the worker has no connection; Listener::join() stops the io_context.
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{ioc.get_executor()};
};

// How errors name the listener: "<host_field> X: not an IP address" (invalid_argument) and
// "<io_prefix>cannot listen on X:P: reason" (io_error).
// And how its threads are named (common/thread_name.h): "<threads>-<n>" for worker n and
// "<threads>-a" for the acceptor; empty leaves them the process's name.
struct ListenerNames {
  std::string_view host_field;  // e.g. "listen host"
  std::string_view io_prefix;   // e.g. "" or "gateway: "
  std::string_view threads;     // e.g. "ro-http", "vno-gw"
};

class Listener {
 public:
  // On the acceptor thread, for each accepted connection; the socket already belongs to
  // worker.ioc, the worker with the fewest connections at the time of the accept.
  using OnAccept = std::function<void(boost::asio::ip::tcp::socket socket, Worker& worker)>;

  explicit Listener(int threads);  // 1..256, checked by the owner
  ~Listener();                     // join()
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Binds host:port (an IP literal; port 0 = ephemeral) and listens, then starts accepting and
  // the threads. invalid_argument for a host that is not an IP address, io_error when the
  // address cannot be bound. On failure no thread was started.
  Result<void> start(const std::string& host, std::uint16_t port, const ListenerNames& names,
                     OnAccept on_accept);

  std::uint16_t port() const { return bound_port_; }
  std::string address() const;  // "127.0.0.1:PORT" or "[::1]:PORT", the host as given

  // From any thread: stops accepting (connections accepted later just close). Idempotent.
  void stop_accepting();
  // Stops the io_contexts (what is still queued there is dropped) and joins the threads; the
  // port is free when it returns. Idempotent; never from one of the listener's own threads.
  void join();
  // Whether the calling thread is one of this listener's (a worker or the acceptor).
  bool on_own_thread() const;

 private:
  void accept_next();
  void on_accept(Worker& worker, boost::system::error_code ec, boost::asio::ip::tcp::socket socket);
  void run(boost::asio::io_context& ioc);

  OnAccept on_accept_;
  std::string host_;
  std::uint16_t bound_port_ = 0;
  std::atomic<bool> closed_{false};
  std::vector<std::unique_ptr<Worker>> workers_;  // fixed after construction
  // Accept, pause and close all run on the acceptor's one thread, so they never race.
  boost::asio::io_context accept_ioc_{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> accept_work_{
      accept_ioc_.get_executor()};
  boost::asio::ip::tcp::acceptor acceptor_{accept_ioc_};
  boost::asio::steady_timer accept_pause_{accept_ioc_};  // after a failed accept
  std::mutex join_mu_;                                   // guards threads_ (joined once)
  std::vector<std::thread> threads_;
};

// The remote address of a connected socket, "a.b.c.d:port" or "[v6]:port"; empty when the
// socket has none (already reset).
std::string remote_address(const boost::asio::ip::tcp::socket& socket);

}  // namespace mcim::net::detail
