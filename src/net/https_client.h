// The HTTPS client services and devices call each other with: TLS 1.3 only, the server verified
// against trust anchors with its host name or IP address checked, and/or by the SHA-256 pin of
// its SubjectPublicKeyInfo (the device pins the DPF's key from the bootstrap message,
// pki::spki_sha256); optionally a client certificate (mTLS between operators). Keep-alive
// connections are reused from a small pool per scheme://host:port. Clients with the same trust
// anchors and identity objects share one OpenSSL context (the pin and host are per connection).
// Synchronous; thread-safe (each connection serves one request at a time; the pool is under a
// mutex).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/bytes.h"
#include "common/error.h"
#include "net/http_server.h"
#include "net/tls.h"

namespace mcim::net {

struct HttpsClientOptions {
  // At least one of trust and spki_pin for https URLs. With trust, the chain must verify and the
  // certificate must name the URL's host (DNS SAN, or IP SAN for an address literal). With a pin,
  // the server's key must hash to it; validity dates and names are then not checked (the pin
  // is the identity, RFC 7469 style). With both, both must hold.
  std::shared_ptr<const pki::TrustAnchors> trust;
  std::optional<Bytes<32>> spki_pin;
  std::shared_ptr<const TlsIdentity> identity;       // our client certificate, when the server asks
  bool allow_plain_http = false;                     // permit http:// URLs (tests, OCSP, /metrics)
  std::chrono::milliseconds connect_timeout{5'000};  // TCP connect + TLS handshake
  std::chrono::milliseconds request_timeout{10'000};  // sending the request + the whole response
  std::size_t max_response_body = 1 << 20;            // larger answers fail with bad_format
  std::size_t max_idle_per_host = 4;                  // idle connections kept for reuse
  // Reach every server through an HTTP CONNECT proxy (net/connect_proxy.h: the VNO's gateway):
  // TCP to `proxy` ("ip:port"), `CONNECT host:port` with `Proxy-Authorization: Bearer
  // <proxy_credential>` when the credential is not empty, then TLS end to end with the server
  // as without a proxy. The proxy's refusal fails the request with its error envelope's code
  // (access_denied for 403, unauthenticated for 407, not_found for 404, busy for 503, io_error
  // otherwise) and message, prefixed "proxy: ". The target is sent as the URL's host, so URLs
  // should carry IP literals. Pooled connections are per proxy too: tunnelled and direct ones
  // are never mixed.
  std::string proxy;
  std::string proxy_credential;
};

class HttpsClient {
 public:
  // invalid_argument/missing_argument for unusable options (no way to verify servers, an
  // identity whose key does not match, a proxy that is not "ip:port", a credential that is not
  // a token).
  static Result<std::unique_ptr<HttpsClient>> create(HttpsClientOptions options);
  ~HttpsClient();
  HttpsClient(const HttpsClient&) = delete;
  HttpsClient& operator=(const HttpsClient&) = delete;

  // One request to `url` ("https://host:port/path?query"; host a name, an IPv4 literal or a
  // bracketed IPv6 literal). Any HTTP status is a success here; errors are: invalid_argument
  // (bad URL or method), io_error (resolve, connect, timeout, reset, TLS failure), chain_invalid
  // / cert_expired (server not verified, pin mismatch, or our certificate refused),
  // unauthenticated (the server required a client certificate we do not have), bad_format
  // (malformed or oversize response). A request on a reused connection that the server had
  // closed meanwhile is retried once on a fresh one.
  Result<HttpResponse> request(
      std::string_view method, std::string_view url, std::string_view body = {},
      std::string_view content_type = {},
      const std::vector<std::pair<std::string, std::string>>& headers = {});
  Result<HttpResponse> get(std::string_view url) { return request("GET", url); }
  Result<HttpResponse> post_json(std::string_view url, std::string_view json) {
    return request("POST", url, json, "application/json");
  }

  std::uint64_t connections_opened() const;  // TCP connections made so far
  void close_idle();                         // drops the pooled connections

  // Moves `from`'s idle pooled connections into this client's pool where this client would
  // have accepted them itself, and returns how many moved; the others stay with `from`. A
  // connection moves only when all hold:
  //  - both clients reach servers the same way: the same proxy and proxy credential (a tunnel
  //    is opened per gateway session) and the same client identity object (the server may
  //    have authenticated us by it);
  //  - it is a TLS connection, still idle and open;
  //  - with our pin: the server's leaf certificate, whose key the server proved it holds in
  //    the handshake, has a key hashing to the pin (the check our handshake makes);
  //  - with our trust anchors: `from` has the very same anchors object, so the chain and the
  //    host name (checked by `from` per host:port, the pool key) were checked as we would;
  //  - our max_idle_per_host is not reached.
  // So an adopted connection is one whose server this client's own handshake would have
  // accepted: `from` checked at least what we require, and the pin is checked here. The
  // device uses it to reuse its DRF connection for the DPF when the bootstrap pins the key of
  // the server it is already talking to. Adopted connections do not count in
  // connections_opened(); they stay usable after `from` is destroyed.
  std::size_t adopt_idle(HttpsClient& from);

  // The TLS contexts alive in the process. Clients whose options hold the same TrustAnchors and
  // TlsIdentity objects (by identity, not content) share one, which lives until the last of
  // them is destroyed; the one of clients with a pin only is kept for the process's life.
  static std::size_t live_client_contexts();

  struct State;  // https_client.cpp

 private:
  explicit HttpsClient(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// A parsed request URL.
struct Url {
  bool tls = true;   // https
  std::string host;  // without brackets
  std::uint16_t port = 443;
  std::string target;  // "/path?query", at least "/"
};
Result<Url> parse_url(std::string_view url);

// A service's base URL as configured, without trailing slashes, to which "/v1/..." paths are
// appended.
inline std::string base_url(std::string url) {
  while (url.ends_with('/')) url.pop_back();
  return url;
}

}  // namespace mcim::net
