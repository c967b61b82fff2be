#include "net/https_client.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <charconv>
#include <map>
#include <mutex>

#include "net/connect_proxy.h"
#include "net/http_error.h"
#include "net/tls_context.h"

namespace mcim::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

constexpr std::uint32_t kResponseHeaderLimit = 16 * 1024;
// A proxy's refusal is an error envelope; anything longer is not worth reading.
constexpr std::size_t kProxyBodyLimit = 4 * 1024;

// One pooled connection with its own io_context, run on the calling thread for the duration of
// each operation: no background thread, and the stream's deadline bounds every run().
struct Connection {
  asio::io_context ioc{1};  // first: the streams below are destroyed before it
  // The context the TLS stream was made with, kept as long as the stream: a connection another
  // client adopted (HttpsClient::adopt_idle) may outlive the client that made it.
  std::shared_ptr<ssl::context> ctx;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;

  beast::tcp_stream& lowest() { return secure ? beast::get_lowest_layer(*secure) : *plain; }
};

template <class F>
auto with_stream(Connection& c, F&& f) {
  return c.secure ? f(*c.secure) : f(*c.plain);
}

// Starts one asynchronous operation and runs the connection's io_context until it completes
// (the stream's expiry guarantees it does).
template <class Start>
beast::error_code run_op(Connection& c, Start&& start) {
  beast::error_code result = asio::error::operation_aborted;
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  c.ioc.restart();
  c.ioc.run();
  return result;
}

bool is_token_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_token_char);
}

bool is_field_value(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
  });
}

bool is_target_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u > 0x20 && u < 0x7f && c != '#';
}

bool is_host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-';
}

bool is_ip_literal(const std::string& host) {
  beast::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

std::string ssl_reason(const beast::error_code& ec) {
  return ec.message();  // OpenSSL's reason string, e.g. "tlsv13 alert certificate required"
}

bool is_ssl_error(const beast::error_code& ec) {
  return ec.category() == asio::error::get_ssl_category();
}

// The server's certificate failed our checks during the handshake.
Error verification_error(SSL* ssl) {
  const long v = SSL_get_verify_result(ssl);
  switch (v) {
    case X509_V_ERR_APPLICATION_VERIFICATION:
      return Error(ErrorCode::chain_invalid, "tls: the server's key does not match the pin");
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return Error(ErrorCode::cert_expired,
                   "tls: the server's certificate is outside its validity");
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return Error(ErrorCode::chain_invalid,
                   "tls: the server's certificate does not name the host");
    default:
      return Error(ErrorCode::chain_invalid, fmt::format("tls: server certificate not verified: {}",
                                                         X509_verify_cert_error_string(v)));
  }
}

// A transport failure at `stage` ("connect", "handshake", "write", "read") as an mcim Error.
Error transport_error(const beast::error_code& ec, std::string_view stage, SSL* ssl) {
  if (ec == beast::error::timeout) {
    return Error(ErrorCode::io_error, fmt::format("{}: timed out", stage));
  }
  if (is_ssl_error(ec)) {
    const int reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED && ssl != nullptr) {
      return verification_error(ssl);
    }
    if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) {
      return Error(ErrorCode::unauthenticated, "tls: the server requires a client certificate");
    }
    if (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA || reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
        reason == SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN ||
        reason == SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED ||
        reason == SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE ||
        reason == SSL_R_TLSV1_ALERT_ACCESS_DENIED) {
      return Error(
          ErrorCode::chain_invalid,
          fmt::format("tls: the server refused our client certificate ({})", ssl_reason(ec)));
    }
  }
  return Error(ErrorCode::io_error, fmt::format("{}: {}", stage, ec.message()));
}

// The connection ended before any byte of the response: a reused connection the server closed
// while it was idle (keep-alive timeout), so the request can go again on a fresh one.
bool closed_before_response(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == ssl::error::stream_truncated;
}

// An idle pooled connection is still usable: nothing arrived on it (a FIN, an alert, stray
// bytes all mean the server is done with it).
bool still_idle(Connection& c) {
  if (c.buffer.size() != 0) return false;
  auto& socket = c.lowest().socket();
  if (!socket.is_open()) return false;
  char byte;
  const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

// Tunnelled and direct connections to the same server never share a pool entry.
std::string pool_key(const Url& u, const std::string& proxy) {
  return fmt::format("{}://[{}]:{} via {}", u.tls ? "https" : "http", u.host, u.port,
                     proxy.empty() ? "direct" : proxy);
}

// host:port, the host bracketed when IPv6: the CONNECT target (RFC 9110 §9.3.6).
std::string authority_text(const Url& u) {
  const bool v6 = u.host.find(':') != std::string::npos;
  return v6 ? fmt::format("[{}]:{}", u.host, u.port) : fmt::format("{}:{}", u.host, u.port);
}

HttpResponse to_response(http::response<http::string_body>&& res) {
  HttpResponse r;
  r.status = static_cast<int>(res.result_int());
  r.content_type = std::string(res[http::field::content_type]);
  for (const auto& field : res) {
    r.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  r.body = std::move(res.body());
  return r;
}

std::string host_header(const Url& u) {
  const bool v6 = u.host.find(':') != std::string::npos;
  const std::string host = v6 ? fmt::format("[{}]", u.host) : u.host;
  const bool default_port = u.port == (u.tls ? 443 : 80);
  return default_port ? host : fmt::format("{}:{}", host, u.port);
}

}  // namespace

Result<Url> parse_url(std::string_view url) {
  Url u;
  const auto sep = url.find("://");
  if (sep == std::string_view::npos) return fail(ErrorCode::invalid_argument, "url: no scheme");
  const std::string_view scheme = url.substr(0, sep);
  if (detail::iequals(scheme, "https")) {
    u.tls = true;
  } else if (detail::iequals(scheme, "http")) {
    u.tls = false;
  } else {
    return fail(ErrorCode::invalid_argument, "url: scheme must be https or http");
  }
  std::string_view rest = url.substr(sep + 3);
  const auto path_at = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, path_at);
  const std::string_view target = path_at == std::string_view::npos ? "" : rest.substr(path_at);
  if (authority.find('@') != std::string_view::npos) {
    return fail(ErrorCode::invalid_argument, "url: user information is not supported");
  }
  std::string_view port_text;
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return fail(ErrorCode::invalid_argument, "url: bad host");
    u.host = std::string(authority.substr(1, close - 1));
    const auto after = authority.substr(close + 1);
    if (!after.empty() && !after.starts_with(':')) {
      return fail(ErrorCode::invalid_argument, "url: bad host");
    }
    if (!after.empty()) port_text = after.substr(1);
    if (!is_ip_literal(u.host)) return fail(ErrorCode::invalid_argument, "url: bad IPv6 literal");
  } else {
    const auto colon = authority.find(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
    if (u.host.empty() || !std::all_of(u.host.begin(), u.host.end(), is_host_char)) {
      return fail(ErrorCode::invalid_argument, "url: bad host");
    }
  }
  u.port = u.tls ? 443 : 80;
  if (!port_text.empty() || authority.ends_with(':')) {
    unsigned port = 0;
    const auto [end, ec] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
        port > 65535) {
      return fail(ErrorCode::invalid_argument, "url: bad port");
    }
    u.port = static_cast<std::uint16_t>(port);
  }
  u.target = target.empty() ? "/" : std::string(target);
  if (u.target.front() == '?') u.target.insert(0, "/");
  if (!std::all_of(u.target.begin(), u.target.end(), is_target_char)) {
    return fail(ErrorCode::invalid_argument, "url: path or query holds a forbidden character");
  }
  return u;
}

struct HttpsClient::State {
  HttpsClientOptions options;
  std::shared_ptr<ssl::context> tls;   // shared (ClientContexts below); null without https
  std::optional<tcp::endpoint> proxy;  // options.proxy parsed
  std::atomic<std::uint64_t> opened{0};

  std::mutex mu;  // guards idle
  std::map<std::string, std::vector<std::unique_ptr<Connection>>> idle;

  std::unique_ptr<Connection> take_idle(const std::string& key);
  void give_back(const std::string& key, std::unique_ptr<Connection> c);
  Result<std::unique_ptr<Connection>> connect(const Url& u);
  Result<void> handshake(Connection& c, const Url& u);
  Result<void> open_tunnel(Connection& c, const Url& u);
};

namespace {

// The slot of each client SSL that points to its client's options: with the pin on the
// connection rather than on the context, one context can serve clients with different pins.
int options_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// The server's leaf certificate has a key whose SubjectPublicKeyInfo hashes to `pin` (compared
// in constant time). No certificate or no key does not match.
bool matches_pin(const X509* leaf, const Bytes<32>& pin) {
  const EVP_PKEY* key = leaf != nullptr ? X509_get0_pubkey(leaf) : nullptr;
  if (key == nullptr) return false;
  const Bytes<32> hash = pki::spki_sha256(key);
  return CRYPTO_memcmp(hash.data(), pin.data(), hash.size()) == 0;
}

// Replaces OpenSSL's chain verification: the chain (when trust anchors are set, with the host
// check configured on the SSL) and then the pin, both of the client whose SSL this is.
int verify_server(X509_STORE_CTX* store_ctx, void* /*arg*/) {
  auto* ssl = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  const auto* options =
      ssl != nullptr ? static_cast<const HttpsClientOptions*>(SSL_get_ex_data(ssl, options_index()))
                     : nullptr;
  if (options == nullptr) {  // a handshake that State::handshake did not prepare: refuse it
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_UNSPECIFIED);
    return 0;
  }
  if (options->trust && X509_verify_cert(store_ctx) <= 0) return 0;
  if (options->spki_pin && !matches_pin(X509_STORE_CTX_get0_cert(store_ctx), *options->spki_pin)) {
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  return 1;
}

std::atomic<std::size_t> live_contexts{0};

// A client SSL_CTX: what it was configured with keeps it apart from others in the cache, and
// holding them keeps their addresses (its cache key) from being reused while it lives.
struct ClientContext {
  std::shared_ptr<const pki::TrustAnchors> trust;
  std::shared_ptr<const TlsIdentity> identity;
  ssl::context ctx{ssl::context::tls_client};

  ClientContext() { ++live_contexts; }
  ~ClientContext() { --live_contexts; }
  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;
};

// Everything but the pin and the host, which State::handshake puts on each SSL.
Result<std::shared_ptr<ClientContext>> make_client_context(const HttpsClientOptions& options) {
  auto c = std::make_shared<ClientContext>();
  c->trust = options.trust;
  c->identity = options.identity;
  SSL_CTX* h = c->ctx.native_handle();
  if (SSL_CTX_set_min_proto_version(h, TLS1_3_VERSION) != 1) {
    return std::unexpected(pki::openssl_error(ErrorCode::internal, "tls client: TLS 1.3"));
  }
  if (options.trust && SSL_CTX_set1_verify_cert_store(h, options.trust->store()) != 1) {
    return std::unexpected(pki::openssl_error(ErrorCode::internal, "tls client: trust store"));
  }
  SSL_CTX_set_verify(h, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_cert_verify_callback(h, verify_server, nullptr);
  // No client session cache (OpenSSL's default; our servers issue no tickets either): a resumed
  // session skips verify_server, and on a shared context another client's pin had verified it.
  SSL_CTX_set_session_cache_mode(h, SSL_SESS_CACHE_OFF);
  if (options.identity) {
    if (auto r = detail::use_identity(h, *options.identity, "tls client"); !r) {
      return std::unexpected(r.error());
    }
  }
  return c;
}

// The process's client contexts by (trust anchors, identity) object: SSL_CTX_new is costly in
// OpenSSL 3 (it fetches the ciphers from the providers), and a device makes a few clients per
// provisioning. An entry lives as long as a client holds it; the one without anchors or identity
// (the pinned clients') is kept for the process's life, as it references nothing of anyone's.
class ClientContexts {
 public:
  // Never destroyed: clients in static objects may outlive the other statics.
  static ClientContexts& get() {
    static auto* contexts = new ClientContexts();
    return *contexts;
  }

  Result<std::shared_ptr<ssl::context>> share(const HttpsClientOptions& options) {
    const Key key{options.trust.get(), options.identity.get()};
    // Held while building, so that clients created together build their context once.
    std::lock_guard lock(mu_);
    auto it = entries_.find(key);
    std::shared_ptr<ClientContext> c = it != entries_.end() ? it->second.lock() : nullptr;
    if (!c) {
      auto made = make_client_context(options);
      if (!made) return std::unexpected(made.error());
      c = std::move(*made);
      std::erase_if(entries_, [](const auto& e) { return e.second.expired(); });
      entries_[key] = c;
      if (!options.trust && !options.identity) keyless_ = c;
    }
    return std::shared_ptr<ssl::context>(c, &c->ctx);
  }

 private:
  // Addresses only compared: an entry that can be locked holds both objects, so a live object
  // at the same address is the same object.
  using Key = std::pair<const void*, const void*>;

  std::mutex mu_;  // guards entries_ and keyless_
  std::map<Key, std::weak_ptr<ClientContext>> entries_;
  std::shared_ptr<ClientContext> keyless_;
};

}  // namespace

std::unique_ptr<Connection> HttpsClient::State::take_idle(const std::string& key) {
  std::lock_guard lock(mu);
  auto it = idle.find(key);
  while (it != idle.end() && !it->second.empty()) {
    auto c = std::move(it->second.back());
    it->second.pop_back();
    if (still_idle(*c)) return c;
  }
  return nullptr;
}

void HttpsClient::State::give_back(const std::string& key, std::unique_ptr<Connection> c) {
  std::lock_guard lock(mu);
  auto& list = idle[key];
  if (list.size() < options.max_idle_per_host) list.push_back(std::move(c));
}

Result<void> HttpsClient::State::handshake(Connection& c, const Url& u) {
  SSL* ssl = c.secure->native_handle();
  // For verify_server; `options` outlives the connection, which State owns or a request holds.
  if (SSL_set_ex_data(ssl, options_index(), &options) != 1) {
    return std::unexpected(pki::openssl_error(ErrorCode::internal, "tls client: options slot"));
  }
  if (options.trust) {
    if (is_ip_literal(u.host)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), u.host.c_str());
    } else {
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      SSL_set1_host(ssl, u.host.c_str());
    }
  }
  if (!is_ip_literal(u.host)) SSL_set_tlsext_host_name(ssl, u.host.c_str());
  const auto ec = run_op(c, [&](auto handler) {
    c.secure->async_handshake(ssl::stream_base::client, std::move(handler));
  });
  if (ec) {
    Error e = transport_error(ec, "tls handshake", ssl);
    ERR_clear_error();
    return std::unexpected(std::move(e));
  }
  return {};
}

// The proxy's answer to CONNECT: a 2xx leaves the socket a tunnel to the server; a refusal
// becomes the Error of its envelope.
Result<void> HttpsClient::State::open_tunnel(Connection& c, const Url& u) {
  const std::string authority = authority_text(u);
  std::string head = fmt::format("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n", authority);
  if (!options.proxy_credential.empty()) {
    head += fmt::format("Proxy-Authorization: Bearer {}\r\n", options.proxy_credential);
  }
  head += "\r\n";
  beast::tcp_stream& stream = c.lowest();
  auto ec = run_op(
      c, [&](auto handler) { asio::async_write(stream, asio::buffer(head), std::move(handler)); });
  if (ec) return std::unexpected(transport_error(ec, "proxy: send CONNECT", nullptr));
  http::response_parser<http::string_body> parser;
  parser.header_limit(kResponseHeaderLimit);
  parser.body_limit(kProxyBodyLimit);
  ec = run_op(c, [&](auto handler) {
    http::async_read_header(stream, c.buffer, parser, std::move(handler));
  });
  if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
      !closed_before_response(ec)) {
    return fail(ErrorCode::bad_format, "proxy: malformed answer to CONNECT");
  }
  if (ec) return std::unexpected(transport_error(ec, "proxy: read answer to CONNECT", nullptr));
  const unsigned status = parser.get().result_int();
  if (status >= 200 && status < 300) {
    // The server speaks only after our ClientHello, so anything here is not the server's.
    if (c.buffer.size() != 0) {
      return fail(ErrorCode::bad_format, "proxy: bytes after its answer to CONNECT");
    }
    return {};
  }
  HttpResponse refusal;
  refusal.status = static_cast<int>(status);
  if (!parser.is_done() && parser.content_length().value_or(0) <= kProxyBodyLimit) {
    ec = run_op(
        c, [&](auto handler) { http::async_read(stream, c.buffer, parser, std::move(handler)); });
  }
  // Without its envelope (too long, cut short) the refusal is still io_error "HTTP <status>".
  if (!ec && parser.is_done()) refusal = to_response(parser.release());
  return std::unexpected(error_from_response(refusal, "proxy"));
}

Result<std::unique_ptr<Connection>> HttpsClient::State::connect(const Url& u) {
  auto c = std::make_unique<Connection>();
  beast::error_code ec;
  tcp::resolver::results_type endpoints;  // of the server; the proxy is an address already
  if (!proxy) {
    tcp::resolver resolver(c->ioc);
    endpoints = resolver.resolve(u.host, std::to_string(u.port), ec);
    if (ec) return fail(ErrorCode::io_error, fmt::format("resolve {}: {}", u.host, ec.message()));
  }
  if (u.tls) {
    c->ctx = tls;
    c->secure.emplace(c->ioc, *tls);
  } else {
    c->plain.emplace(c->ioc);
  }
  // One deadline covers connect, the proxy's CONNECT and the handshake.
  c->lowest().expires_after(options.connect_timeout);
  ec = run_op(*c, [&](auto handler) {
    if (proxy) {
      c->lowest().async_connect(*proxy, std::move(handler));
    } else {
      c->lowest().async_connect(endpoints, std::move(handler));
    }
  });
  if (ec) {
    return fail(ErrorCode::io_error,
                fmt::format("connect {}{}: {}", proxy ? "proxy " : "",
                            proxy ? options.proxy : host_header(u),
                            ec == beast::error::timeout ? "timed out" : ec.message()));
  }
  ++opened;
  c->lowest().socket().set_option(tcp::no_delay(true), ec);
  if (proxy) {
    if (auto r = open_tunnel(*c, u); !r) return std::unexpected(r.error());
  }
  if (u.tls) {
    if (auto r = handshake(*c, u); !r) return std::unexpected(r.error());
  }
  return c;
}

namespace {

struct Exchange {
  Result<HttpResponse> response = fail(ErrorCode::internal, "no exchange");
  bool retryable = false;   // failed before any response byte: the server had closed
  bool keep_alive = false;  // the connection may serve another request
};

http::request<http::string_body> build_request(
    std::string_view method, const Url& u, std::string_view body, std::string_view content_type,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  http::request<http::string_body> req;
  req.version(11);
  const auto verb = http::string_to_verb(detail::bsv(method));
  if (verb == http::verb::unknown) {
    req.method_string(detail::bsv(method));
  } else {
    req.method(verb);
  }
  req.target(u.target);
  req.set(http::field::host, host_header(u));
  req.set(http::field::user_agent, "mcim");
  if (!content_type.empty()) req.set(http::field::content_type, detail::bsv(content_type));
  for (const auto& [name, value] : headers) req.set(name, value);
  req.body() = std::string(body);
  req.keep_alive(true);
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    req.prepare_payload();
  }
  return req;
}

template <class Stream>
Exchange exchange(Connection& c, Stream& stream, http::request<http::string_body>& req,
                  const HttpsClientOptions& options, SSL* ssl) {
  Exchange x;
  c.lowest().expires_after(options.request_timeout);  // one deadline for write and read
  auto ec = run_op(c, [&](auto handler) { http::async_write(stream, req, std::move(handler)); });
  if (ec) {
    x.retryable = closed_before_response(ec);
    x.response = std::unexpected(transport_error(ec, "send request", ssl));
    return x;
  }
  http::response_parser<http::string_body> parser;
  parser.body_limit(options.max_response_body);
  parser.header_limit(kResponseHeaderLimit);
  if (req.method() == http::verb::head) parser.skip(true);
  // Header first: Beast 1.74's eager response parser skips its own Content-Length check when
  // the body arrives in the same read, so the declared length is checked here.
  ec = run_op(c, [&](auto handler) {
    http::async_read_header(stream, c.buffer, parser, std::move(handler));
  });
  if (!ec && parser.content_length().value_or(0) > options.max_response_body) {
    ec = http::error::body_limit;
  }
  if (!ec && !parser.is_done()) {
    ec = run_op(
        c, [&](auto handler) { http::async_read(stream, c.buffer, parser, std::move(handler)); });
  }
  if (ec == http::error::body_limit) {
    x.response = fail(ErrorCode::bad_format,
                      fmt::format("response body larger than {} bytes", options.max_response_body));
    return x;
  }
  if (ec) {
    x.retryable = !parser.got_some() && closed_before_response(ec);
    if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
        !closed_before_response(ec)) {
      x.response = fail(ErrorCode::bad_format, "malformed HTTP response");
    } else {
      x.response = std::unexpected(transport_error(ec, "read response", ssl));
    }
    return x;
  }
  x.keep_alive = parser.get().keep_alive();
  x.response = to_response(parser.release());
  return x;
}

Result<void> check_request(std::string_view method,
                           const std::vector<std::pair<std::string, std::string>>& headers,
                           std::string_view content_type) {
  if (!is_token(method)) return fail(ErrorCode::invalid_argument, "method: not an HTTP token");
  for (const auto& [name, value] : headers) {
    if (!is_token(name) || !is_field_value(value)) {
      return fail(ErrorCode::invalid_argument, "headers: malformed field name or value");
    }
  }
  if (!is_field_value(content_type)) {
    return fail(ErrorCode::invalid_argument, "content type: malformed");
  }
  return {};
}

}  // namespace

HttpsClient::HttpsClient(std::unique_ptr<State> state) : state_(std::move(state)) {}
HttpsClient::~HttpsClient() = default;

Result<std::unique_ptr<HttpsClient>> HttpsClient::create(HttpsClientOptions options) {
  if (!options.trust && !options.spki_pin && !options.allow_plain_http) {
    return fail(ErrorCode::missing_argument,
                "https client: trust anchors or a key pin are needed to verify servers");
  }
  if (options.max_idle_per_host > 1024) {
    return fail(ErrorCode::invalid_argument, "https client: max_idle_per_host too large");
  }
  auto state = std::make_unique<State>();
  if (!options.proxy.empty()) {
    auto proxy = parse_ip_authority(options.proxy);
    if (!proxy) {
      return fail(ErrorCode::invalid_argument, fmt::format("proxy: {}", proxy.error().message));
    }
    state->proxy.emplace(asio::ip::make_address(proxy->host), proxy->port);
  }
  // The credential goes into a header field: no controls, no spaces (RFC 9110 token68).
  if (!is_field_value(options.proxy_credential) ||
      options.proxy_credential.find(' ') != std::string::npos) {
    return fail(ErrorCode::invalid_argument, "proxy_credential: not a token");
  }
  state->options = std::move(options);
  if (state->options.trust || state->options.spki_pin) {
    auto ctx = ClientContexts::get().share(state->options);
    if (!ctx) return std::unexpected(ctx.error());
    state->tls = std::move(*ctx);
  }
  return std::unique_ptr<HttpsClient>(new HttpsClient(std::move(state)));
}

Result<HttpResponse> HttpsClient::request(
    std::string_view method, std::string_view url, std::string_view body,
    std::string_view content_type,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  auto u = parse_url(url);
  if (!u) return std::unexpected(u.error());
  if (!u->tls && !state_->options.allow_plain_http) {
    return fail(ErrorCode::invalid_argument, "url: plain http is not allowed for this client");
  }
  if (u->tls && !state_->tls) {
    return fail(ErrorCode::missing_argument, "url: https needs trust anchors or a key pin");
  }
  if (auto r = check_request(method, headers, content_type); !r) return std::unexpected(r.error());
  auto req = build_request(method, *u, body, content_type, headers);
  const std::string key = pool_key(*u, state_->options.proxy);
  for (int attempt = 0;; ++attempt) {
    auto conn = attempt == 0 ? state_->take_idle(key) : nullptr;
    const bool reused = conn != nullptr;
    if (!conn) {
      auto fresh = state_->connect(*u);
      if (!fresh) return std::unexpected(fresh.error());
      conn = std::move(*fresh);
    }
    SSL* ssl = conn->secure ? conn->secure->native_handle() : nullptr;
    Exchange x = with_stream(
        *conn, [&](auto& stream) { return exchange(*conn, stream, req, state_->options, ssl); });
    if (ssl != nullptr) ERR_clear_error();
    if (!x.response && reused && x.retryable) continue;  // the idle connection had died
    if (x.response && x.keep_alive) state_->give_back(key, std::move(conn));
    return std::move(x.response);
  }
}

std::uint64_t HttpsClient::connections_opened() const { return state_->opened.load(); }

std::size_t HttpsClient::live_client_contexts() { return live_contexts.load(); }

std::size_t HttpsClient::adopt_idle(HttpsClient& from) {
  if (&from == this) return 0;
  State& to = *state_;
  State& src = *from.state_;
  // Options are fixed at create(), so these need no lock.
  if (!to.tls) return 0;  // this client makes no TLS connections: nothing it could use
  if (to.options.proxy != src.options.proxy ||
      to.options.proxy_credential != src.options.proxy_credential) {
    return 0;  // another way to the server (or another session at the gateway)
  }
  // The server may have authenticated `from` by its client certificate.
  if (to.options.identity != src.options.identity) return 0;
  // Host names were checked by `from` against its anchors, per pool key: only the same anchors
  // object stands for ours.
  if (to.options.trust && to.options.trust != src.options.trust) return 0;
  std::scoped_lock lock(to.mu, src.mu);
  std::size_t moved = 0;
  for (auto& [key, theirs] : src.idle) {
    auto& mine = to.idle[key];  // same key: the proxy, part of it, is the same
    for (auto it = theirs.begin();
         it != theirs.end() && mine.size() < to.options.max_idle_per_host;) {
      Connection& c = **it;
      SSL* ssl = c.secure ? c.secure->native_handle() : nullptr;
      const bool usable =
          ssl != nullptr && still_idle(c) &&
          (!to.options.spki_pin ||
           matches_pin(SSL_get0_peer_certificate(ssl), *to.options.spki_pin)) &&
          // Points at our options from now on: `from` may be destroyed before the connection.
          SSL_set_ex_data(ssl, options_index(), &to.options) == 1;
      if (!usable) {
        ++it;
        continue;
      }
      mine.push_back(std::move(*it));
      it = theirs.erase(it);
      ++moved;
    }
  }
  return moved;
}

void HttpsClient::close_idle() {
  std::lock_guard lock(state_->mu);
  state_->idle.clear();
}

}  // namespace mcim::net
