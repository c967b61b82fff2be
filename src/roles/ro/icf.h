// The RO's ICF (DESIGN.md §1, issue 6 "RO / ICF"; TR 33.812 Alternative 1a): the PCID
// subscriptions the supplier handed over (F0), authentication vectors for them to visited
// networks (F2 steps 2-3, TS 33.102 §6.3.2) with AUTS resynchronisation (§6.3.5), delayed
// activation and dormant expiry (F7), and one attach at a time per PCID (F8). Pure logic over the
// store ports; authorisation of callers (which VNO, which owner or SHO) is the HTTP layer's, the
// ICF records who asked. Thread-compatible: one instance per worker thread (RandomSource is not
// thread-safe); instances sharing one Database never hand out the same SQN. docs/roles-ro.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "aka/types.h"
#include "aka/vector.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/random.h"
#include "store/store.h"

namespace mcim::ro {

inline constexpr unsigned kMaxVectorsPerRequest = 5;

struct IcfConfig {
  aka::Amf amf{0x80, 0x00};  // separation bit set: vectors for E-UTRAN/3GPP access (TS 33.401)
  std::chrono::seconds max_activation{std::chrono::hours(24 * 30)};   // longest F7 window
  std::chrono::seconds dormant_period{std::chrono::hours(24 * 365)};  // default dormant_until
  std::chrono::seconds session_lifetime{std::chrono::hours(1)};
  // F8: how long an expired PCID (by the dormant sweep, or at the end of its lifetime) stays out
  // of use before a new batch may reallocate it.
  std::chrono::seconds quarantine{std::chrono::hours(24 * 90)};
  // Sessions on a PCID only reach the RO (bootstrap, package); the SHO's AuC, the same logic over
  // operational IMSIs, opens unrestricted ones.
  bool restricted_sessions = true;
  std::size_t max_batch = 100'000;
  // How errors name a credential, and why one that is not active yet does not authenticate: the
  // RO's PCIDs wait for their owner's switch-on (F7); the SHO's AuC names its IMSIs, which wait
  // for the device's status report (F2 step 14). Static text: never request data.
  std::string_view credential = "pcid";
  std::string_view inactive_reason = "dormant, not activated by its owner (F7)";
};

class Icf {
 public:
  Icf(store::PcidStore& pcids, store::SqnStore& sqns, store::SessionStore& sessions,
      store::AuditStore& audit, const Clock& clock, RandomSource& random, IcfConfig config = {});
  Icf(store::Database& db, const Clock& clock, RandomSource& random, IcfConfig config = {});

  // F0: a supplier batch, all or nothing. Each PCID becomes dormant (status and active_until are
  // overwritten), `batch` is set, a zero dormant_until becomes now + dormant_period (at most
  // not_after). A PCID the ICF holds already is reallocated when it is free (F8: expired, out of
  // its quarantine, no live session; store::PcidReuse): its old subscription and DRF registration
  // go. Returns the count. invalid_argument (a PCID not 6-15 digits, ind_bits > 10, not_after not
  // in the future, dormant_until after not_after, an empty or oversized batch, a bad batch id);
  // already_exists naming the first PCID in use or in quarantine, or twice in the batch.
  Result<std::uint64_t> import_batch(std::string_view batch,
                                     std::vector<store::PcidSubscription> pcids,
                                     std::string_view supplier);

  // F2 steps 2-3: `count` (1..5) vectors for a usable PCID, SQNs reserved atomically (IND = SEQ
  // mod 2^ind_bits). invalid_argument (count), not_found, credential_unusable (dormant, or its
  // activation window over), pcid_expired (expired, or past its lifetime), sqn_exhausted.
  Result<std::vector<aka::AuthVector>> vectors(std::string_view pcid, unsigned count,
                                               std::string_view vno);

  // After the USIM answered AUTS to (RAND, AUTN): verifies MAC-S (mac_mismatch, nothing
  // changes), raises SEQ_HE to SEQ_MS, and returns `count` fresh vectors. Errors as vectors().
  Result<std::vector<aka::AuthVector>> resynchronise(std::string_view pcid, const aka::Rand& rand,
                                                     const aka::Auts& auts, unsigned count,
                                                     std::string_view vno);

  // F7: the owner or SHO (`caller`, recorded) announces imminent switch-on: the PCID is active
  // for `window` (1 s..max_activation) from now; a second call replaces the window. Returns the
  // end of the window. invalid_argument, not_found, pcid_expired.
  Result<store::Time> activate(std::string_view pcid, std::chrono::seconds window,
                               std::string_view caller);

  // F7: dormant PCIDs past their dormant_until become expired; returns how many.
  Result<std::uint64_t> expire_dormant();

  // After successful AKA the VNO opens the PCID's session; a second simultaneous one anywhere is
  // already_exists. Refused like vectors() for an unusable PCID. Returns the session (its id is
  // 32 random hex digits; restricted as configured; expires after session_lifetime).
  Result<store::Session> open_session(std::string_view pcid, std::string_view vno);
  // not_found for an unknown id; access_denied when another VNO holds it.
  Result<void> close_session(std::string_view session_id, std::string_view vno);

 private:
  store::Time now() const;
  Result<store::PcidSubscription> usable(std::string_view pcid, store::Time now);
  Result<std::vector<aka::AuthVector>> make_vectors(const store::PcidSubscription& sub,
                                                    unsigned count);
  Result<void> validate_import(std::string_view batch, std::vector<store::PcidSubscription>& pcids,
                               store::Time now);

  store::PcidStore& pcids_;
  store::SqnStore& sqns_;
  store::SessionStore& sessions_;
  store::AuditStore& audit_;
  const Clock& clock_;
  RandomSource& random_;
  IcfConfig config_;
};

}  // namespace mcim::ro
