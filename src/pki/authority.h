// A certificate authority kept in one directory, compatible with OpenSSL's tools:
//   ca.pem    this CA's certificate        ca.key     its private key (PKCS#8, mode 0600)
//   chain.pem this CA and its parents up to the root (what a relying party needs as untrusted)
//   index.txt the issuance database in `openssl ca` format, so `openssl ocsp -index` reads it
//   certs/<SERIAL>.pem  every certificate issued
// Changes to index.txt are atomic (write, fsync, rename) under an exclusive lock, so two
// processes issuing or revoking at once never lose an entry.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/random.h"
#include "pki/certificate.h"
#include "pki/openssl.h"

namespace mcim::pki {

// RFC 5280 §5.3.1 reason codes, in OpenSSL's index spelling.
enum class RevocationReason {
  unspecified = 0,
  key_compromise = 1,
  ca_compromise = 2,
  affiliation_changed = 3,
  superseded = 4,
  cessation_of_operation = 5,
  certificate_hold = 6,
};
Result<RevocationReason> parse_revocation_reason(std::string_view name);
std::string_view index_name(RevocationReason r);  // "keyCompromise", ...

// One line of index.txt.
struct IndexEntry {
  char status = 'V';  // V valid, R revoked, E expired
  TimePoint expiry;
  std::optional<TimePoint> revoked_at;
  RevocationReason reason = RevocationReason::unspecified;
  std::string serial;   // uppercase hex, as OpenSSL writes it
  std::string subject;  // "/CN=.../O=..."
};

// Pure codec of the index format (tab-separated, UTCTime YYMMDDHHMMSSZ).
Result<std::vector<IndexEntry>> parse_index(std::string_view text);
std::string format_index(const std::vector<IndexEntry>& entries);
IndexEntry index_entry_for(const X509* cert);
std::string index_serial(const X509* cert);

struct Issued {
  X509Ptr cert;
  PkeyPtr key;
};

class Authority {
 public:
  // Creates a root (parent == nullptr) or an intermediate CA in `dir`; already_exists when the
  // directory holds a CA.
  static Result<Authority> create(const std::string& dir, std::string_view name,
                                  const Authority* parent, int days, std::string_view ocsp_url,
                                  const Clock& clock, RandomSource& random);
  static Result<Authority> open(const std::string& dir);

  // Issues a certificate with a fresh key and records it.
  Result<Issued> issue(const CertSpec& spec, const Clock& clock, RandomSource& random) const;
  // Issues for an existing key (e.g. a TRE's platform key generated elsewhere).
  Result<X509Ptr> issue_for_key(const CertSpec& spec, EVP_PKEY* key, const Clock& clock,
                                RandomSource& random) const;

  // not_found when the certificate was not issued by this CA; idempotent for a revoked one.
  Result<void> revoke(const X509* cert, RevocationReason reason, TimePoint when) const;

  Result<std::vector<IndexEntry>> index() const;
  Result<std::optional<IndexEntry>> find(std::string_view serial_upper) const;

  const std::string& dir() const { return dir_; }
  X509* cert() const { return cert_.get(); }
  EVP_PKEY* key() const { return key_.get(); }
  const std::vector<X509Ptr>& chain() const { return chain_; }  // this CA first

 private:
  Authority(std::string dir, X509Ptr cert, PkeyPtr key, std::vector<X509Ptr> chain)
      : dir_(std::move(dir)),
        cert_(std::move(cert)),
        key_(std::move(key)),
        chain_(std::move(chain)) {}
  Result<void> record(const X509* cert) const;

  std::string dir_;
  X509Ptr cert_;
  PkeyPtr key_;
  std::vector<X509Ptr> chain_;
};

}  // namespace mcim::pki
