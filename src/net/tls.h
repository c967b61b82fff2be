// TLS 1.3 configuration shared by the HTTP server and client (DESIGN.md §4 "Transport"), and the
// peer identity a verified client certificate gives a request: mutual TLS between operators,
// where the caller is the `urn:mcim:operator:<id>` SAN URI of its certificate. Every value here
// is immutable once built and shared between threads through shared_ptr<const ...>.
// docs/protocol.md "Network layer" describes the profile.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "pki/openssl.h"
#include "pki/verify.h"

namespace mcim::net {

// What a TLS endpoint presents: its private key and certificate chain (leaf first, then the
// intermediates a peer needs; the root may be left out).
using TlsIdentity = pki::KeyPair;

// From a PEM bundle (leaf first) and a key file; bad_format/io_error naming the file, or
// invalid_argument when the key does not belong to the leaf.
Result<std::shared_ptr<const TlsIdentity>> load_tls_identity(const std::string& cert_path,
                                                             const std::string& key_path);
// From objects already in memory (each up-ref'd, the caller keeps its own references).
Result<std::shared_ptr<const TlsIdentity>> make_tls_identity(EVP_PKEY* key, X509* cert,
                                                             const std::vector<X509*>& chain = {});

// Whether the server asks for a client certificate. `optional` lets a service mix device-facing
// endpoints (server-authenticated TLS) with operator endpoints that a route authoriser guards
// (401 without a certificate); `required` refuses the handshake itself without one. In both
// modes a certificate that does not verify against the trust anchors fails the handshake.
enum class ClientAuth { none, optional, required };

struct TlsServerOptions {
  std::shared_ptr<const TlsIdentity> identity;  // required
  ClientAuth client_auth = ClientAuth::none;
  // The CAs client certificates must chain to; required unless client_auth is none.
  std::shared_ptr<const pki::TrustAnchors> client_trust;
};

// A client certificate the handshake verified (chain to client_trust, validity, clientAuth
// purpose). Shared by every request of the connection.
struct PeerCertificate {
  std::vector<pki::X509Ptr> chain;         // leaf first, trust anchor last
  std::string subject;                     // the leaf's subject, RFC 2253
  std::optional<std::string> operator_id;  // SAN URI urn:mcim:operator:<id>, a valid mcim id
  X509* leaf() const { return chain.front().get(); }
};

// Who sent a request.
struct Peer {
  std::string address;                                 // remote "ip:port", "[v6]:port" for IPv6
  bool tls = false;                                    // the request came over TLS
  std::shared_ptr<const PeerCertificate> certificate;  // null: no client certificate presented

  // The operator id of the client certificate, or null.
  const std::string* operator_id() const {
    return certificate && certificate->operator_id ? &*certificate->operator_id : nullptr;
  }
};

// The PeerCertificate of a verified chain (leaf first), as the server builds it after the
// handshake; exposed for handlers' unit tests, which fabricate peers without a socket.
std::shared_ptr<const PeerCertificate> peer_certificate(std::vector<pki::X509Ptr> verified_chain);

}  // namespace mcim::net
