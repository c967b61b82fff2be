#include "pki/ocsp.h"

namespace mcim::pki {

Result<RevocationAnswer> query_ocsp(X509*, X509*, const std::string&, const Clock&, RandomSource&,
                                    std::chrono::seconds) {
  return fail(ErrorCode::unsupported, "OCSP client not implemented yet");
}

}  // namespace mcim::pki
