#include "pki/verify.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace mcim::pki {
namespace {

int purpose_id(Purpose p) {
  switch (p) {
    case Purpose::tls_server: return X509_PURPOSE_SSL_SERVER;
    case Purpose::tls_client: return X509_PURPOSE_SSL_CLIENT;
    case Purpose::smime_sign: return X509_PURPOSE_SMIME_SIGN;
    case Purpose::ocsp_helper: return X509_PURPOSE_OCSP_HELPER;
    case Purpose::any: return X509_PURPOSE_ANY;
  }
  return X509_PURPOSE_ANY;
}

ErrorCode code_of(int verify_error) {
  switch (verify_error) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID: return ErrorCode::cert_expired;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE: return ErrorCode::signature_invalid;
    case X509_V_ERR_CERT_REVOKED: return ErrorCode::cert_revoked;
    default: return ErrorCode::chain_invalid;
  }
}

}  // namespace

Result<TrustAnchors> TrustAnchors::from_file(const std::string& path) {
  auto certs = load_certificates(path);
  if (!certs) return std::unexpected(certs.error());
  std::vector<X509*> raw;
  for (auto& c : *certs) raw.push_back(c.get());
  return from_certs(raw);
}

Result<TrustAnchors> TrustAnchors::from_certs(const std::vector<X509*>& roots) {
  if (roots.empty()) return fail(ErrorCode::invalid_argument, "trust anchors: none given");
  TrustAnchors t;
  t.store_.reset(X509_STORE_new());
  if (!t.store_) return std::unexpected(openssl_error(ErrorCode::internal, "X509_STORE_new"));
  for (X509* r : roots) {
    if (X509_STORE_add_cert(t.store_.get(), r) != 1) {
      return std::unexpected(openssl_error(ErrorCode::bad_format, "adding a trust anchor"));
    }
    t.roots_.push_back(up_ref(r));
  }
  return t;
}

Result<VerifiedChain> verify_chain(const TrustAnchors& anchors, X509* leaf,
                                   const std::vector<X509*>& untrusted, TimePoint at,
                                   Purpose purpose) {
  return verify_chain(anchors.store(), leaf, untrusted, at, VerifyOptions{.purpose = purpose});
}

Result<VerifiedChain> verify_chain(X509_STORE* store, X509* leaf,
                                   const std::vector<X509*>& untrusted, TimePoint at,
                                   const VerifyOptions& options) {
  const Purpose purpose = options.purpose;
  STACK_OF(X509)* chain_in = sk_X509_new_null();
  for (X509* c : untrusted) sk_X509_push(chain_in, c);
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store, leaf, chain_in) != 1) {
    sk_X509_free(chain_in);
    return std::unexpected(openssl_error(ErrorCode::internal, "X509_STORE_CTX_init"));
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, std::chrono::system_clock::to_time_t(at));
  X509_VERIFY_PARAM_set_flags(
      param, X509_V_FLAG_X509_STRICT | (options.partial_chain ? X509_V_FLAG_PARTIAL_CHAIN : 0));
  if (purpose != Purpose::any) X509_STORE_CTX_set_purpose(ctx.get(), purpose_id(purpose));

  const int ok = X509_verify_cert(ctx.get());
  Result<VerifiedChain> result = fail(ErrorCode::internal, "unverified");
  if (ok == 1) {
    VerifiedChain v;
    STACK_OF(X509)* built = X509_STORE_CTX_get0_chain(ctx.get());
    for (int i = 0; i < sk_X509_num(built); ++i) v.chain.push_back(up_ref(sk_X509_value(built, i)));
    result = std::move(v);
  } else {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    result = fail(code_of(err), fmt::format("certificate {} at depth {}: {}", subject_text(leaf),
                                            X509_STORE_CTX_get_error_depth(ctx.get()),
                                            X509_verify_cert_error_string(err)));
  }
  sk_X509_free(chain_in);
  ERR_clear_error();
  return result;
}

}  // namespace mcim::pki
