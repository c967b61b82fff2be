// Platform attestation and validation (DESIGN.md §2 F2 steps 8–10, TR 33.812 PVA): the TRE's
// report signed with its platform key, the supplier's signed reference measurements per model,
// the PVA's validation of a report into a signed result listing every failed check, and the
// SHO's check of that result. Canonical JSON signed over its exact bytes (docs/attestation.md);
// strict decoding. Validator and ResultSigner are immutable once built: share them between threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/error.h"
#include "pki/openssl.h"
#include "pki/revocation.h"
#include "pki/verify.h"

namespace mcim::pki {

using UtcSeconds = std::chrono::sys_seconds;

// The TRE's own view of itself (DESIGN.md §3): fresh from the factory, holding an MCIM, or
// locked down after detecting tampering.
enum class TreState { pristine, provisioned, lockdown };
std::string_view to_string(TreState s);
Result<TreState> parse_tre_state(std::string_view name);  // invalid_argument names --state

struct Measurement {
  std::string name;  // 1–128 printable ASCII characters, no space, '"' or '\'
  Bytes<32> sha256{};
  friend bool operator==(const Measurement&, const Measurement&) = default;
};

// `name sha256hex` per line (hex in either case); blank lines and lines starting with '#' are
// skipped. Sorted by name; bad_format naming the line for a malformed line or a repeated name.
Result<std::vector<Measurement>> parse_measurement_lines(std::string_view text);

// ---- The attestation report (signed by the platform key) -----------------------------------

struct Report {
  std::string device_id;  // what the TRE believes it is; checked against its certificate
  TreState state = TreState::pristine;
  std::vector<Measurement> measurements;  // 1–1024, names unique
  ByteVec nonce;                          // the PVA's challenge, 16–64 bytes
  UtcSeconds time{};                      // when the TRE signed
};

// The canonical document {"report":{...},"signature":"<DER ECDSA hex>"} (no trailing newline).
// Measurements are sorted here; invalid_argument for a field outside its limits or a key that
// is not EC P-256.
Result<std::string> sign_report(const Report& report, EVP_PKEY* platform_key);

struct SignedReport {
  Report report;
  std::string signed_bytes;  // the canonical report object, exactly the bytes signed
  ByteVec signature;         // DER ECDSA-Sig-Value
};

// Strict: canonical form only (one trailing '\n' tolerated), no unknown or missing field, exact
// types, lowercase hex of the right length, measurements sorted by name without repeats.
// bad_format naming the field otherwise. Does not check the signature (the Validator does).
Result<SignedReport> decode_signed_report(std::string_view text);

// ---- Reference measurements (signed by the supplier) ----------------------------------------

struct ReferenceSet {
  std::string model;  // as in the platform certificate's urn:mcim:model: SAN
  std::vector<Measurement> measurements;
  UtcSeconds issued{};
};

// {"certificates":[signer, intermediates... as DER hex],"references":{...},"signature":"..."}.
// certs: the signer's certificate first; key must match it.
Result<std::string> sign_references(const ReferenceSet& refs, EVP_PKEY* key,
                                    const std::vector<X509*>& certs);

// A ReferenceSet whose signature and signer were checked: only verify_references makes one, so
// the Validator cannot be handed unverified references.
class VerifiedReferences {
 public:
  const ReferenceSet& set() const { return set_; }
  const std::string& signer() const { return signer_; }  // subject, RFC 2253

 private:
  VerifiedReferences(ReferenceSet set, std::string signer)
      : set_(std::move(set)), signer_(std::move(signer)) {}
  friend Result<VerifiedReferences> verify_references(std::string_view, const TrustAnchors&,
                                                      const std::vector<X509*>&, const Clock&);
  ReferenceSet set_;
  std::string signer_;
};

// Decodes strictly (bad_format), then requires the signer to chain to the supplier anchors now
// (embedded certificates plus `untrusted`; chain_invalid / cert_expired), to be a document
// signer (end entity with digitalSignature and nonRepudiation, not a platform certificate:
// chain_invalid) and its signature to verify (signature_invalid).
Result<VerifiedReferences> verify_references(std::string_view text, const TrustAnchors& supplier,
                                             const std::vector<X509*>& untrusted,
                                             const Clock& clock);

// ---- Validation ------------------------------------------------------------------------------

// The checks, in the order they run and are listed, with the codes they report. Wire names as
// the enumerators.
enum class Check {
  chain,         // path to the supplier root, platform profile: chain_invalid, cert_expired
  revocation,    // cert_revoked, cert_unknown; stale or missing status: ocsp_invalid
  signature,     // report signed by the certificate's key: signature_invalid
  device_id,     // report's device = certificate's: chain_invalid
  nonce,         // nonce_mismatch
  freshness,     // stale_report
  measurements,  // = references of the certificate's model: measurement_mismatch
  tre_state,     // not in lockdown: measurement_mismatch
};
std::string_view to_string(Check c);

struct Failure {
  Check check;
  ErrorCode code;
  std::string message;
  friend bool operator==(const Failure&, const Failure&) = default;
};

struct ValidationResult {
  std::string device_id;  // from the platform certificate (the report's if it names none)
  ByteVec nonce;          // the PVA's expected nonce
  std::vector<Failure> failures;
  UtcSeconds time{};  // when the PVA validated
  bool trusted() const { return failures.empty(); }
  friend bool operator==(const ValidationResult&, const ValidationResult&) = default;
};

struct ValidationPolicy {
  std::chrono::seconds report_max_age{300};      // freshness window of the report
  std::chrono::seconds max_skew{30};             // how far in the future a report's time may be
  std::chrono::seconds revocation_max_age{600};  // oldest acceptable revocation thisUpdate
  // Clock difference tolerated with the OCSP responder: thisUpdate this far in the future,
  // nextUpdate this far in the past (the OCSP client's kOcspClockSkew, openssl's default).
  std::chrono::seconds revocation_skew{300};
};

// The PVA's long-lived state: supplier anchors and verified references, parsed once.
class Validator {
 public:
  explicit Validator(TrustAnchors supplier, ValidationPolicy policy = {})
      : supplier_(std::move(supplier)), policy_(policy) {}

  // Checks supplier CA certificates against the supplier root once, now, and trusts them from
  // then on (within their own and their path's validity), so that a platform chain costs one
  // signature check instead of one per level. Roots in the list are skipped; a certificate that
  // is not a CA or does not chain is refused (chain_invalid / cert_expired) and nothing changes.
  Result<void> add_intermediates(const std::vector<X509*>& certs, const Clock& clock);

  // One set per model: a newer one replaces it; an older one, or a different one with the same
  // issue time, is refused (stale_report) so references cannot be rolled back.
  Result<void> add_references(VerifiedReferences refs);
  const ReferenceSet* references_for(std::string_view model) const;
  const TrustAnchors& supplier() const { return supplier_; }
  const ValidationPolicy& policy() const { return policy_; }

  // Pure (no I/O, no state change): runs every check and lists every failure. `revocation` is
  // the already verified status of `platform_cert` (e.g. verify_ocsp_response's answer); an
  // error there becomes an ocsp_invalid failure. `intermediates` lead to the supplier root.
  ValidationResult validate(const SignedReport& report, X509* platform_cert,
                            const std::vector<X509*>& intermediates,
                            const Result<RevocationAnswer>& revocation, ByteView expected_nonce,
                            const Clock& clock) const;

 private:
  struct TrustedCa {
    X509Ptr cert;
    TimePoint not_before, not_after;  // intersected with those of its path to the root
  };
  Result<void> verify_platform_path(X509* leaf, const std::vector<X509*>& untrusted,
                                    TimePoint now) const;
  Result<void> check_trusted_ca_window(X509* top, TimePoint now) const;

  TrustAnchors supplier_;
  ValidationPolicy policy_;
  std::map<std::string, VerifiedReferences, std::less<>> references_;
  X509StorePtr fast_store_;  // roots + trusted_cas_, searched with X509_V_FLAG_PARTIAL_CHAIN
  std::vector<TrustedCa> trusted_cas_;
};

// ---- The signed result (PVA -> SHO) ----------------------------------------------------------

// The PVA's result-signing key and certificates (signer first, then intermediates), kept
// encoded so that signing a result costs one ECDSA signature and one small JSON dump.
class ResultSigner {
 public:
  // invalid_argument when the key does not match, is not P-256, or the certificate is not a
  // document signer (end entity, digitalSignature + nonRepudiation).
  static Result<ResultSigner> create(PkeyPtr key, std::vector<X509Ptr> certs);
  // {"certificates":[...],"result":{...},"signature":"..."}
  Result<std::string> sign(const ValidationResult& result) const;

 private:
  ResultSigner(PkeyPtr key, std::string certificates_json)
      : key_(std::move(key)), certificates_json_(std::move(certificates_json)) {}
  PkeyPtr key_;
  std::string certificates_json_;
};

// The SHO's side: strict decoding (bad_format), signer chained to the PVA anchors and a document
// signer (chain_invalid / cert_expired), signature (signature_invalid), nonce equal to the one
// the SHO sent (nonce_mismatch), time within [now - max_age, now + 30 s] (stale_report). Returns
// the authenticated result, trusted or not: the caller acts on trusted().
Result<ValidationResult> verify_validation_result(
    std::string_view text, const TrustAnchors& pva, ByteView expected_nonce, const Clock& clock,
    std::chrono::seconds max_age = std::chrono::minutes(5));

}  // namespace mcim::pki
