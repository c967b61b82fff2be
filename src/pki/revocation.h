// Revocation as a port: validation logic takes an already verified answer (or asks a
// RevocationChecker), so it stays pure and testable without a network. The OCSP client
// (ocsp.h) is the production implementation; tests use fakes.
#pragma once

#include <optional>

#include "common/clock.h"
#include "common/error.h"
#include "pki/openssl.h"

namespace mcim::pki {

enum class CertStatus { good, revoked, unknown };

// A revocation status whose signature, signer, nonce and freshness were checked by whoever
// produced it.
struct RevocationAnswer {
  CertStatus status = CertStatus::unknown;
  TimePoint this_update{};
  std::optional<TimePoint> next_update;
  std::optional<TimePoint> revoked_at;
};

class RevocationChecker {
 public:
  virtual ~RevocationChecker() = default;
  // ocsp_invalid when no trustworthy answer could be had.
  virtual Result<RevocationAnswer> check(X509* cert, X509* issuer) = 0;
};

}  // namespace mcim::pki
