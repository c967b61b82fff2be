// Internal to src/net: OpenSSL contexts behind the server and the client (tls.h has the public
// options). A context is configured once and then only read, so threads share it.
#pragma once

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <boost/utility/string_view.hpp>
#include <memory>
#include <string_view>

#include "common/ascii.h"
#include "net/tls.h"

namespace mcim::net::detail {

// TLS 1.3 only, the identity's chain and key, client certificates verified against
// client_trust as client_auth asks; no session resumption, so every connection's peer was
// verified by its own handshake. invalid_argument for incomplete options.
Result<std::unique_ptr<boost::asio::ssl::context>> make_server_context(
    const TlsServerOptions& options);

// The verified client certificate of an established connection, or null.
std::shared_ptr<const PeerCertificate> peer_of(SSL* ssl);

// Loads `identity` into a context (certificate, intermediates, key) and checks that they match.
Result<void> use_identity(SSL_CTX* ctx, const TlsIdentity& identity, std::string_view what);

}  // namespace mcim::net::detail

namespace mcim::net::detail {

// Boost 1.74's Beast speaks boost::string_view.
inline boost::string_view bsv(std::string_view s) { return {s.data(), s.size()}; }
inline std::string_view ssv(boost::string_view s) { return {s.data(), s.size()}; }

// ASCII case-insensitive equality (HTTP field names, schemes, media types).
inline bool iequals(std::string_view a, std::string_view b) { return ascii_iequals(a, b); }

}  // namespace mcim::net::detail
