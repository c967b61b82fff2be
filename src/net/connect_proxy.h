// The VNO's gateway for restricted (PCID) sessions, as an HTTP CONNECT proxy (RFC 9110 §9.3.6):
// a device opens a TCP connection to the gateway, asks `CONNECT 10.0.0.5:8443 HTTP/1.1` with
// `Proxy-Authorization: Bearer <its VNO session id>`, and when the authoriser allows that session
// to reach that destination, the gateway answers 200 and relays bytes both ways; the device then
// runs TLS end to end with the destination (so the device's pin of the DPF key, from the
// bootstrap message, still means the DPF). This is the user-space equivalent of a PGW's policy
// routing on the restricted APN: the gateway sees only destinations, never content.
//
// Refusals (then the connection is closed): 400 `bad_request` for a malformed or oversize request
// head or a target that is not "IPv4:port" or "[IPv6]:port" (no names: the gateway resolves
// nothing); 405 `method_not_allowed` for another method; 407 `unauthenticated` (with
// `Proxy-Authenticate: Bearer realm="mcim-gateway"`) without a credential; the authoriser's
// error otherwise (its http_status: 404 not_found for an unknown session, 403 access_denied for
// a destination outside the session's APN); 502 `io_error` when the destination cannot be
// reached within connect_timeout; 503 `busy` when max_tunnels connections are open. Bodies are
// the JSON error envelope (net/http_error.h), with `Connection: close`. A head not complete
// within head_timeout is closed without an answer.
// Threading: one io_context per worker thread, as HttpServer; the acceptor has its own thread.
// The authoriser runs on a worker thread and must be thread-safe and quick (Vno::forward is).
// Neither the credential nor the relayed bytes are ever logged; refusals are, at debug level,
// with their code.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"

namespace mcim::net {

class Metrics;

// `credential` is the Bearer token of Proxy-Authorization (may be empty: then 407 is answered
// before the authoriser runs, so it never sees an empty one); `authority` the CONNECT target as
// sent ("127.0.0.1:8443", "[::1]:8443").
using TunnelAuthorizer =
    std::function<Result<void>(std::string_view credential, std::string_view authority)>;

struct ConnectProxyOptions {
  std::string host = "127.0.0.1";  // an IP literal
  std::uint16_t port = 0;          // 0: ephemeral
  int threads = 1;
  std::string thread_name;  // as HttpServerOptions::thread_name, e.g. "vno-gw"
  std::size_t header_limit = 4 * 1024;               // the CONNECT request head
  std::chrono::milliseconds head_timeout{5'000};     // to receive the request head
  std::chrono::milliseconds connect_timeout{5'000};  // to reach the destination
  std::chrono::milliseconds idle_timeout{60'000};    // a tunnel idle both ways is closed
  // Connections counted from their acceptance (so slow heads cannot exhaust descriptors
  // either); one more is answered 503 busy at once.
  std::size_t max_tunnels = 10'000;
  // When set: mcim_gateway_tunnels_total{outcome="open|refused|failed"} (refused: a 4xx or an
  // incomplete head; failed: 502, 503), mcim_gateway_tunnels_open and
  // mcim_gateway_bytes_total{direction="up|down"} (up: device to destination).
  std::shared_ptr<Metrics> metrics;
};

class ConnectProxy {
 public:
  // invalid_argument for bad options, io_error when the address cannot be bound.
  static Result<std::unique_ptr<ConnectProxy>> start(const ConnectProxyOptions& options,
                                                     TunnelAuthorizer authorize);
  ~ConnectProxy();  // stop()
  ConnectProxy(const ConnectProxy&) = delete;
  ConnectProxy& operator=(const ConnectProxy&) = delete;

  std::uint16_t port() const;
  std::string address() const;  // "127.0.0.1:PORT"

  std::uint64_t tunnels_opened() const;  // since start
  // Connections that ended without a tunnel since start: every refusal answered (4xx, 502,
  // 503) and heads never completed (timeout, closed early).
  std::uint64_t tunnels_refused() const;
  std::size_t tunnels_open() const;  // now

  // Stops accepting and closes every connection and tunnel at once; idempotent. Not from the
  // authoriser (a worker thread cannot join itself).
  void stop();

  struct State;

 private:
  explicit ConnectProxy(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// A CONNECT target as the gateway accepts it, also the form of HttpsClientOptions::proxy:
// "a.b.c.d:port" or "[v6]:port" with port 1..65535; no names, no zone ids.
struct IpAuthority {
  std::string host;  // the address, without brackets
  std::uint16_t port = 0;
};
// invalid_argument naming the part that is wrong.
Result<IpAuthority> parse_ip_authority(std::string_view authority);

}  // namespace mcim::net
