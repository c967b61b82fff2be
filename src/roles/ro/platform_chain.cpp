#include "roles/ro/platform_chain.h"

#include "pki/certificate.h"

namespace mcim::ro::detail {

Result<X509*> verify_platform_chain(const pki::TrustAnchors& supplier_roots,
                                    const std::vector<X509*>& chain, std::string_view device_id,
                                    TimePoint now) {
  if (chain.empty() || chain.front() == nullptr) {
    return fail(ErrorCode::missing_argument, "platform_chain: the platform certificate");
  }
  X509* leaf = chain.front();
  const std::vector<X509*> untrusted(chain.begin() + 1, chain.end());
  if (auto path = pki::verify_chain(supplier_roots, leaf, untrusted, now); !path) {
    const ErrorCode code = path.error().code == ErrorCode::cert_expired ? ErrorCode::cert_expired
                                                                        : ErrorCode::chain_invalid;
    return fail(code, "platform certificate: " + path.error().message);
  }
  if (pki::platform_device_id(leaf) != device_id) {
    return fail(ErrorCode::wrong_recipient, "platform certificate: of another device");
  }
  return leaf;
}

}  // namespace mcim::ro::detail
