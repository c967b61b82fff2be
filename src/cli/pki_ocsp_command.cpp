// `mcim pki ocsp-serve`: an RFC 6960 responder for one CA directory over HTTP (POST and GET,
// Appendix A), until SIGINT or SIGTERM. Prints "listening: HOST:PORT" as soon as it accepts
// connections (so a caller can use --listen HOST:0 and read the port), then on exit the usual
// fields: the address, the number of requests answered and the signal that stopped it.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <charconv>
#include <cstring>
#include <iostream>
#include <memory>

#include "cli/pki_command.h"
#include "common/clock.h"
#include "net/http_server.h"
#include "net/ocsp_http.h"
#include "pki/ocsp.h"

namespace mcim::cli {
namespace {

struct OcspServeArgs {
  std::string ca, signer, listen = "127.0.0.1:0";
  long validity = 3600;
  int threads = 1;
};

constexpr long kMaxValidity = 30L * 24 * 3600;  // answers valid longer than that defeat revocation

struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
};

// "HOST:PORT" or "[V6]:PORT", HOST an IP literal.
Result<Endpoint> parse_listen(std::string_view s) {
  const auto colon = s.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return fail(ErrorCode::invalid_argument, "--listen: expected HOST:PORT, e.g. 127.0.0.1:8080");
  }
  std::string_view host = s.substr(0, colon), port = s.substr(colon + 1);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return fail(ErrorCode::invalid_argument, "--listen: the port must be 0..65535");
  }
  return Endpoint{std::string(host), static_cast<std::uint16_t>(value)};
}

Result<void> validate(const OcspServeArgs& a) {
  if (a.ca.empty()) return fail(ErrorCode::missing_argument, "--ca: required");
  if (a.validity < 1 || a.validity > kMaxValidity) {
    return fail(ErrorCode::invalid_argument, "--validity: 1..2592000 seconds");
  }
  if (a.threads < 1 || a.threads > 64) {
    return fail(ErrorCode::invalid_argument, "--threads: 1..64");
  }
  return {};
}

// SIGINT and SIGTERM blocked in this thread while alive, and so in every thread started
// meanwhile (the server's workers inherit the mask): the signal is taken by sigwait() here
// instead of killing the process in the middle of a response.
class BlockedStopSignals {
 public:
  BlockedStopSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~BlockedStopSignals() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  BlockedStopSignals(const BlockedStopSignals&) = delete;
  BlockedStopSignals& operator=(const BlockedStopSignals&) = delete;

  int wait() const {
    int signal = 0;
    while (sigwait(&set_, &signal) != 0) {
    }
    return signal;
  }

 private:
  sigset_t set_{}, old_{};
};

Result<Fields> run_ocsp_serve(const OcspServeArgs& a) {
  if (auto v = validate(a); !v) return std::unexpected(v.error());
  auto endpoint = parse_listen(a.listen);
  if (!endpoint) return std::unexpected(endpoint.error());
  SystemClock clock;
  pki::OcspResponderOptions options;
  options.validity = std::chrono::seconds(a.validity);
  // Without --signer the CA signs its own answers (DIR/ca.pem, DIR/ca.key).
  const std::string signer = a.signer.empty() ? a.ca + "/ca" : a.signer;
  auto responder = pki::OcspResponder::open(a.ca, signer, clock, options);
  if (!responder) return std::unexpected(responder.error());

  std::atomic<std::uint64_t> requests{0};
  auto handler = [&](const net::HttpRequest& req) {
    ++requests;
    const ByteView body(reinterpret_cast<const std::uint8_t*>(req.body.data()), req.body.size());
    return net::to_http(responder->respond_http(req.method, req.target, body));
  };
  net::HttpServerOptions http;
  http.host = endpoint->host;
  http.port = endpoint->port;
  http.threads = a.threads;
  BlockedStopSignals signals;  // before the workers start, so they inherit the mask
  auto server = net::HttpServer::start(http, handler);
  if (!server) return std::unexpected(server.error());
  std::cout << "listening: " << (*server)->address() << std::endl;  // flushed: callers wait on it
  const int signal = signals.wait();
  (*server)->stop();

  Fields f;
  f.add("address", (*server)->address())
      .add("requests", std::to_string(requests.load()))
      .add("stopped", signal == SIGINT ? "SIGINT" : "SIGTERM");
  return f;
}

}  // namespace

void register_pki_ocsp(CLI::App& pki, Result<Fields>* result) {
  auto args = std::make_shared<OcspServeArgs>();
  auto* serve = pki.add_subcommand(
      "ocsp-serve", "answer OCSP requests (RFC 6960, HTTP POST and GET) for a CA until SIGTERM");
  serve->add_option("--ca", args->ca, "CA directory (ca.pem, index.txt; reloaded on change)");
  serve->add_option("--signer", args->signer,
                    "PREFIX of PREFIX.pem/PREFIX.key: an ocsp-signing certificate of the CA "
                    "(default: the CA itself, DIR/ca)");
  serve->add_option("--listen", args->listen,
                    "IP:PORT to listen on (default 127.0.0.1:0, an ephemeral port)");
  serve->add_option("--validity", args->validity,
                    "seconds from thisUpdate to nextUpdate (default 3600)");
  serve->add_option("--threads", args->threads, "worker threads (default 1)");
  serve->callback([args, result] { *result = run_ocsp_serve(*args); });
}

}  // namespace mcim::cli
