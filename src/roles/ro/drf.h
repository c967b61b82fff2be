// The RO's DRF (DESIGN.md §1-§2, issue 6 "RO / DRF"): registrations "PCID -> SHO, DPF address,
// PIN" from home operators (F1; F4 re-points them), and discovery: a device on its PCID session
// asks where its MCIM will come from and gets the bootstrap message (F2 steps 5-6,
// bootstrap.h), after which the RO tells the SHO that the device has arrived (step 7). Pure
// logic over the store ports; the caller's identity (the SHO's mTLS certificate, the PCID the
// VNO asserts for a session) comes from the HTTP layer. Thread-compatible: one instance per
// worker thread. docs/roles-ro.md.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/clock.h"
#include "common/error.h"
#include "common/random.h"
#include "store/store.h"

namespace mcim::ro {

// F2 step 7: who the DRF tells that a device discovered its SHO.
struct Arrival {
  std::string pcid, device_id, sho;
  store::Time time{};
};

class ArrivalNotifier {
 public:
  virtual ~ArrivalNotifier() = default;
  // Called once per successful discovery; an adapter queues and retries towards the SHO. A
  // failure is audited and does not withhold the bootstrap from the device.
  virtual Result<void> device_arrived(const Arrival& arrival) = 0;
};

struct DrfConfig {
  // Whether a registration must name a PCID the ICF holds (the usual deployment: one RO
  // database); false when the DRF runs without the ICF's subscriptions.
  bool require_known_pcid = true;
  // F4: at most `change_attempts` wrong PINs for one PCID within `change_window` on
  // POST /v1/drf/registrations/{pcid}/change (ChangeAttempts); beyond, the PCID's changes are
  // refused until the oldest of them leaves the window. Both at least 1.
  std::size_t change_attempts = 5;
  std::chrono::seconds change_window{3600};
};

// F4: the wrong PINs presented for each PCID's change order, so that a home operator cannot guess
// a device's PIN (4 digits: 10^4 tries) by asking again and again. A sliding window: a PCID with
// `attempts` wrong PINs within the last `window` is locked until the oldest leaves it. Kept in
// memory per RO instance (a restart forgets the counts); bounded by the registrations, as only a
// registered PCID's change with its registered device gets to the PIN. Thread-safe.
class ChangeAttempts {
 public:
  // Whether a PIN may be tried for `pcid` at `now` under `config`'s limit: false when the PCID is
  // locked. When true, the attempt is counted at once as a wrong one, so that racing orders
  // cannot try more PINs than the limit; `forgive` takes it back when the PIN was right.
  bool admit(std::string_view pcid, store::Time now, const DrfConfig& config);
  void forgive(std::string_view pcid, store::Time at);
  std::size_t tracked() const;  // PCIDs with wrong PINs in their window (tests)

 private:
  // The PCID's wrong PINs within the window at `now`, the older ones dropped.
  std::deque<store::Time>* window_of(std::string_view pcid, store::Time now,
                                     const DrfConfig& config);
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::deque<store::Time>> wrong_;  // guarded by mu_; by PCID
  std::size_t calls_ = 0;                                           // guarded by mu_
};

class Drf {
 public:
  // Without `change_attempts` (null), change() does not limit wrong PINs.
  Drf(store::RegistrationStore& registrations, store::PcidStore& pcids, store::AuditStore& audit,
      ArrivalNotifier& notifier, const Clock& clock, RandomSource& random, DrfConfig config = {},
      ChangeAttempts* change_attempts = nullptr);
  Drf(store::Database& db, ArrivalNotifier& notifier, const Clock& clock, RandomSource& random,
      DrfConfig config = {}, ChangeAttempts* change_attempts = nullptr);

  // F1/F4: creates or replaces the registration of `r.pcid`. Only the SHO named in it may register
  // (access_denied), and only the SHO holding a registration may replace it (access_denied, from
  // the store). The PIN (4-16 digits) is stretched into the bootstrap key here, once; the key is
  // stored, the PIN is not; r.bootstrap_key and r.created are set by the DRF. invalid_argument
  // naming the field; not_found for a PCID unknown to the ICF (see DrfConfig).
  Result<void> register_pcid(store::Registration r, std::string_view pin,
                             std::string_view caller_sho);
  // not_found; access_denied for another SHO.
  Result<void> unregister(std::string_view pcid, std::string_view caller_sho);
  // F5: the holder hands the registration to the SHO the owner moves the device to (`to`), once
  // the holder released the device (its MCIM deleted, docs/roles-ro.md "Operator change"): the
  // holder's decision, so nobody else can take a registration. The bootstrap key and device stay;
  // `to` then replaces the rest with its own registration. invalid_argument for `to` not an id or
  // the caller itself; not_found; access_denied unless the caller holds it.
  Result<void> transfer(std::string_view pcid, std::string_view caller_sho, std::string_view to);

  // F4 steps 1-2: the SHO the owner moves the device to (`caller_sho`, a home operator of this RO:
  // the HTTP layer checks that) becomes the registration's successor. Checks, in order: not_found
  // (no registration), wrong_recipient (`device_id` is not the registered device), already_exists
  // (the caller holds it already), transition_refused (too many wrong PINs for `pcid` lately:
  // ChangeAttempts; the PIN is not even stretched), access_denied (`pin` is not the device's: its
  // stretched key, compared in constant time with the stored bootstrap key; the owner's proof of
  // ownership; counted in ChangeAttempts). Then
  // a refusal the registration carries is cleared and the successor set, replacing any earlier
  // one. The holder and its subscription are untouched until the device's report (Dpf::report).
  Result<void> change(std::string_view pcid, std::string_view device_id, std::string_view pin,
                      std::string_view caller_sho);

  // F2 steps 5-7: the bootstrap message for `pcid`, made with a fresh nonce at the clock's time.
  // access_denied unless the session's authenticated PCID is `pcid`; not_found when unregistered.
  Result<std::string> discover(std::string_view pcid, std::string_view session_pcid);

 private:
  store::Time now() const;
  Result<void> validate(const store::Registration& r) const;
  Result<void> order_change(std::string_view pcid, std::string_view device_id, std::string_view pin,
                            std::string_view caller_sho);

  store::RegistrationStore& registrations_;
  store::PcidStore& pcids_;
  store::AuditStore& audit_;
  ArrivalNotifier& notifier_;
  const Clock& clock_;
  RandomSource& random_;
  DrfConfig config_;
  ChangeAttempts* change_attempts_ = nullptr;
};

}  // namespace mcim::ro
