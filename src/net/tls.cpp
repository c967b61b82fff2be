#include "net/tls.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "net/tls_context.h"
#include "pki/certificate.h"
#include "pki/package.h"

namespace mcim::net {

namespace ssl = boost::asio::ssl;

Result<std::shared_ptr<const TlsIdentity>> load_tls_identity(const std::string& cert_path,
                                                             const std::string& key_path) {
  auto key = pki::load_private_key(key_path);
  if (!key) return std::unexpected(key.error());
  auto certs = pki::load_certificates(cert_path);
  if (!certs) return std::unexpected(certs.error());
  if (X509_check_private_key(certs->front().get(), key->get()) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::invalid_argument,
                fmt::format("{}: the key does not belong to the first certificate", key_path));
  }
  return std::make_shared<const TlsIdentity>(TlsIdentity{std::move(*key), std::move(*certs)});
}

Result<std::shared_ptr<const TlsIdentity>> make_tls_identity(EVP_PKEY* key, X509* cert,
                                                             const std::vector<X509*>& chain) {
  if (key == nullptr || cert == nullptr) {
    return fail(ErrorCode::missing_argument, "tls identity: a key and a certificate are needed");
  }
  if (X509_check_private_key(cert, key) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::invalid_argument,
                "tls identity: the key does not match the certificate");
  }
  TlsIdentity id{pki::up_ref(key), {}};
  id.certs.push_back(pki::up_ref(cert));
  for (X509* c : chain) id.certs.push_back(pki::up_ref(c));
  return std::make_shared<const TlsIdentity>(std::move(id));
}

std::shared_ptr<const PeerCertificate> peer_certificate(std::vector<pki::X509Ptr> verified_chain) {
  if (verified_chain.empty() || !verified_chain.front()) return nullptr;
  auto peer = std::make_shared<PeerCertificate>();
  peer->chain = std::move(verified_chain);
  peer->subject = pki::subject_text(peer->leaf());
  auto id = pki::signer_operator_id(peer->leaf());
  if (id && pki::valid_mcim_id(*id)) peer->operator_id = std::move(*id);
  return peer;
}

namespace detail {

Result<void> use_identity(SSL_CTX* ctx, const TlsIdentity& identity, std::string_view what) {
  if (!identity.key || identity.certs.empty() || !identity.certs.front()) {
    return fail(ErrorCode::missing_argument, fmt::format("{}: no certificate or key", what));
  }
  bool ok = SSL_CTX_use_certificate(ctx, identity.cert()) == 1 &&
            SSL_CTX_use_PrivateKey(ctx, identity.key.get()) == 1 &&
            SSL_CTX_check_private_key(ctx) == 1;
  for (std::size_t i = 1; ok && i < identity.certs.size(); ++i) {
    ok = SSL_CTX_add1_chain_cert(ctx, identity.certs[i].get()) == 1;
  }
  if (!ok) {
    return std::unexpected(pki::openssl_error(
        ErrorCode::invalid_argument, fmt::format("{}: certificate and key not usable", what)));
  }
  return {};
}

namespace {

Result<void> use_client_trust(SSL_CTX* ctx, const TlsServerOptions& options) {
  if (!options.client_trust) {
    return fail(ErrorCode::missing_argument,
                "tls server: client authentication needs trust anchors for client certificates");
  }
  // Shares the anchors' store (up-ref'd) for verifying clients; OpenSSL applies the
  // sslclient purpose, so a certificate without clientAuth in its EKU is refused.
  if (SSL_CTX_set1_verify_cert_store(ctx, options.client_trust->store()) != 1) {
    return std::unexpected(pki::openssl_error(ErrorCode::internal, "tls server: trust store"));
  }
  for (const auto& root : options.client_trust->roots()) {
    SSL_CTX_add_client_CA(ctx, root.get());  // tells clients which CAs we accept
  }
  int mode = SSL_VERIFY_PEER;
  if (options.client_auth == ClientAuth::required) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  SSL_CTX_set_verify(ctx, mode, nullptr);
  SSL_CTX_set_verify_depth(ctx, 4);
  return {};
}

}  // namespace

Result<std::unique_ptr<ssl::context>> make_server_context(const TlsServerOptions& options) {
  if (!options.identity) return fail(ErrorCode::missing_argument, "tls server: no identity");
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
  SSL_CTX* h = ctx->native_handle();
  if (SSL_CTX_set_min_proto_version(h, TLS1_3_VERSION) != 1) {
    return std::unexpected(pki::openssl_error(ErrorCode::internal, "tls server: TLS 1.3"));
  }
  // No resumption: a resumed session would skip the client certificate's verification (and
  // OpenSSL keeps no verified chain for it); keep-alive amortises the full handshakes.
  SSL_CTX_set_session_cache_mode(h, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(h, 0);
  SSL_CTX_set_options(h, SSL_OP_NO_TICKET);
  static constexpr unsigned char kSessionContext[] = "mcim";
  SSL_CTX_set_session_id_context(h, kSessionContext, sizeof kSessionContext - 1);
  if (auto r = use_identity(h, *options.identity, "tls server"); !r) {
    return std::unexpected(r.error());
  }
  if (options.client_auth != ClientAuth::none) {
    if (auto r = use_client_trust(h, options); !r) return std::unexpected(r.error());
  }
  return ctx;
}

std::shared_ptr<const PeerCertificate> peer_of(SSL* ssl) {
  if (SSL_get0_peer_certificate(ssl) == nullptr) return nullptr;
  // With verification on, a presented certificate that did not verify failed the handshake.
  if (SSL_get_verify_result(ssl) != X509_V_OK) return nullptr;
  STACK_OF(X509)* chain = SSL_get0_verified_chain(ssl);
  if (chain == nullptr) return nullptr;
  std::vector<pki::X509Ptr> certs;
  for (int i = 0; i < sk_X509_num(chain); ++i)
    certs.push_back(pki::up_ref(sk_X509_value(chain, i)));
  return peer_certificate(std::move(certs));
}

}  // namespace detail
}  // namespace mcim::net
