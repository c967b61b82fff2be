// F3's unauthenticated variant at the RO's DRF (DESIGN.md §2 F3, issue 7 "direct IP to the DRF
// without AKA"): a device that reaches the RO over a non-3GPP access with no VNO and no AKA proves
// its identity with its TRE's platform key instead. It asks for a one-time nonce for its PCID,
// the TRE signs an attestation report over it (tre::Tre::attest, the report the PVA validates),
// and the DRF checks the platform chain against the supplier roots, the signature, the nonce and
// that the certificate's device is the one registered for the PCID; then the ICF opens the same
// restricted session a VNO opens after AKA (Icf::open_session), and the rest of F2 runs
// unchanged. Pure logic over the store ports (the challenges live in the ChallengeStore, the
// one-time nonces the PVA keeps too); thread-compatible, one instance per worker thread.
// docs/roles-ro.md "Direct access".
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/random.h"
#include "pki/openssl.h"
#include "pki/verify.h"
#include "roles/ro/icf.h"
#include "store/store.h"

namespace mcim::ro {

// The holder recorded in the ICF session a direct access opens, where a VNO's operator id stands
// after a 3GPP attach. Only Icf::close_session reads it, on a VNO's request: no VNO holds a
// direct session, so it ends when it expires.
inline constexpr std::string_view kDirectAccessHolder = "drf:direct";

struct DirectConfig {
  // How long a nonce may be answered: long enough for one attestation by a slow TRE, short
  // enough that an unanswered one is soon worthless.
  std::chrono::seconds challenge_lifetime{60};
};

struct DirectChallenge {
  std::string challenge_id;  // 32 lowercase hex digits
  Bytes<32> nonce{};
  store::Time expires{};
};

// What the device sends to open its session.
struct DirectProof {
  std::string pcid;
  std::string challenge_id;
  std::string report;                 // the TRE's signed attestation report over the nonce
  std::vector<X509*> platform_chain;  // leaf first, as the DPF takes it
};

class DirectAccess {
 public:
  // `icf` opens the sessions; it, the roots and the clock must outlive this.
  DirectAccess(store::RegistrationStore& registrations, store::ChallengeStore& challenges,
               store::AuditStore& audit, Icf& icf, const pki::TrustAnchors& supplier_roots,
               const Clock& clock, RandomSource& random, DirectConfig config = {});
  DirectAccess(store::Database& db, Icf& icf, const pki::TrustAnchors& supplier_roots,
               const Clock& clock, RandomSource& random, DirectConfig config = {});

  // A fresh 32-byte nonce for `pcid`, usable once within challenge_lifetime, by that PCID only.
  // not_found when the PCID is not registered at the DRF (unknown ones alike: nothing more is
  // revealed to a caller nobody authenticated).
  Result<DirectChallenge> issue_challenge(std::string_view pcid);

  // Checks the proof and opens the PCID's restricted ICF session. In order, none of them changing
  // anything but the audit: not_found (PCID not registered; challenge unknown or issued for
  // another PCID), transition_refused (challenge used), stale_report (challenge expired),
  // bad_format (the report does not decode), chain_invalid / cert_expired / missing_argument (the
  // chain), wrong_recipient (the certificate's device is not the registration's),
  // signature_invalid (the report is not signed by the leaf's key), wrong_recipient (the report
  // names another device), nonce_mismatch (not the challenge's nonce). Then the
  // challenge is used up atomically (of two racing proofs exactly one goes on; the other is
  // transition_refused) and Icf::open_session decides: its refusals (credential_unusable,
  // pcid_expired, already_exists while the PCID has a session, ...) come after the challenge is
  // spent, as the PVA's verdicts do.
  Result<store::Session> open_session(const DirectProof& proof);

  // The same proof of the platform key, for a device that needs no session: an operational one
  // collecting its operator's management instructions at the DPF (F9). The checks and their codes
  // are open_session's, the challenge is used up the same way; the registration it proved is the
  // answer. Audited under `purpose` (an audit event name).
  Result<store::Registration> prove(const DirectProof& proof, std::string_view purpose);

 private:
  Result<store::Registration> proven(const DirectProof& proof, std::string& detail);
  store::Time now() const;
  Result<store::Registration> registered(std::string_view pcid);
  Result<store::Challenge> usable_challenge(const DirectProof& proof);
  Result<void> verify(const DirectProof& proof, const store::Challenge& challenge,
                      const store::Registration& registration) const;

  store::RegistrationStore& registrations_;
  store::ChallengeStore& challenges_;
  store::AuditStore& audit_;
  Icf& icf_;
  const pki::TrustAnchors& supplier_roots_;
  const Clock& clock_;
  RandomSource& random_;
  DirectConfig config_;
};

}  // namespace mcim::ro
