#include "net/listener.h"

#include <fmt/format.h>

#include <boost/asio/post.hpp>

#include "common/thread_name.h"

namespace mcim::net::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

namespace {

constexpr std::chrono::milliseconds kAcceptPause{100};

// The listener whose thread the current one is, if any: an owner's stop() must not join from
// its own handler.
thread_local const Listener* t_listener = nullptr;

}  // namespace

Listener::Listener(int threads) {
  for (int i = 0; i < threads; ++i) workers_.push_back(std::make_unique<Worker>());
}

Listener::~Listener() { join(); }

Result<void> Listener::start(const std::string& host, std::uint16_t port,
                             const ListenerNames& names, OnAccept on_accept) {
  error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("{} {}: not an IP address", names.host_field, host));
  }
  const tcp::endpoint endpoint(address, port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return fail(ErrorCode::io_error, fmt::format("{}cannot listen on {}:{}: {}", names.io_prefix,
                                                 host, port, ec.message()));
  }
  host_ = host;
  bound_port_ = acceptor_.local_endpoint().port();
  on_accept_ = std::move(on_accept);
  accept_next();
  // Named from here, so that they carry their names once start() returns.
  const std::string prefix(names.threads);
  threads_.emplace_back([this] { run(accept_ioc_); });
  if (!prefix.empty()) set_thread_name(threads_.back(), prefix + "-a");
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    threads_.emplace_back([this, &ioc = workers_[i]->ioc] { run(ioc); });
    if (!prefix.empty()) set_thread_name(threads_.back(), fmt::format("{}-{}", prefix, i));
  }
  return {};
}

std::string Listener::address() const {
  const bool v6 = host_.find(':') != std::string::npos;
  return v6 ? fmt::format("[{}]:{}", host_, bound_port_) : fmt::format("{}:{}", host_, bound_port_);
}

void Listener::accept_next() {
  Worker* best = workers_.front().get();
  for (auto& w : workers_) {
    if (w->connections.load() < best->connections.load()) best = w.get();
  }
  // The new socket belongs to the chosen worker's io_context from the start.
  acceptor_.async_accept(asio::any_io_executor(best->ioc.get_executor()),
                         [this, &worker = *best](error_code ec, tcp::socket socket) {
                           on_accept(worker, ec, std::move(socket));
                         });
}

void Listener::on_accept(Worker& worker, error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || closed_) return;  // the socket just closes
  if (!ec) {
    on_accept_(std::move(socket), worker);
    return accept_next();
  }
  // A failed accept (e.g. EMFILE: out of descriptors) would fail again at once; pause before
  // retrying instead of spinning, and keep serving the connections already open.
  accept_pause_.expires_after(kAcceptPause);
  accept_pause_.async_wait([this](error_code wait_ec) {
    if (!wait_ec && !closed_) accept_next();
  });
}

void Listener::run(asio::io_context& ioc) {
  t_listener = this;
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

void Listener::stop_accepting() {
  if (closed_.exchange(true)) return;
  asio::post(accept_ioc_, [this] {
    error_code ec;
    acceptor_.close(ec);
    accept_pause_.cancel();
  });
}

void Listener::join() {
  accept_ioc_.stop();
  for (auto& w : workers_) w->ioc.stop();
  std::lock_guard lock(join_mu_);
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  // The close posted by stop_accepting() may not have run before the io_context stopped; with
  // every thread joined it is safe here, and the port is free when join() returns.
  error_code ec;
  acceptor_.close(ec);
}

bool Listener::on_own_thread() const { return t_listener == this; }

std::string remote_address(const tcp::socket& socket) {
  error_code ec;
  const auto e = socket.remote_endpoint(ec);
  if (ec) return {};
  return e.address().is_v6() ? fmt::format("[{}]:{}", e.address().to_string(), e.port())
                             : fmt::format("{}:{}", e.address().to_string(), e.port());
}

}  // namespace mcim::net::detail
