// Certificate chain verification against trust anchors parsed once (TrustAnchors is immutable
// and shareable between threads once built). Maps OpenSSL's verdicts onto mcim's codes:
// cert_expired (outside the validity window), signature_invalid, chain_invalid (everything
// else: unknown issuer, CA flags, path length, purpose), each with OpenSSL's reason.
#pragma once

#include <string>
#include <vector>

#include "common/clock.h"
#include "pki/openssl.h"

namespace mcim::pki {

class TrustAnchors {
 public:
  static Result<TrustAnchors> from_file(const std::string& path);
  static Result<TrustAnchors> from_certs(const std::vector<X509*>& roots);

  X509_STORE* store() const { return store_.get(); }
  const std::vector<X509Ptr>& roots() const { return roots_; }

 private:
  X509StorePtr store_;
  std::vector<X509Ptr> roots_;
};

enum class Purpose { any, tls_server, tls_client, smime_sign, ocsp_helper };

struct VerifiedChain {
  std::vector<X509Ptr> chain;  // leaf first, trust anchor last
  X509* issuer() const { return chain.size() > 1 ? chain[1].get() : chain[0].get(); }
};

Result<VerifiedChain> verify_chain(const TrustAnchors& anchors, X509* leaf,
                                   const std::vector<X509*>& untrusted, TimePoint at,
                                   Purpose purpose = Purpose::any);

struct VerifyOptions {
  Purpose purpose = Purpose::any;
  // Accept a path that ends at any certificate of the store, not only a self-signed root: for
  // stores that hold CAs verified beforehand (the PVA's Validator). OpenSSL then checks that
  // CA's validity but not its issuers': the caller keeps and checks their windows.
  bool partial_chain = false;
};

// The same over a store the caller built.
Result<VerifiedChain> verify_chain(X509_STORE* store, X509* leaf,
                                   const std::vector<X509*>& untrusted, TimePoint at,
                                   const VerifyOptions& options);

}  // namespace mcim::pki
