// The RO's DRF (DESIGN.md §1-§2, issue 6 "RO / DRF"): registrations "PCID -> SHO, DPF address,
// PIN" from home operators (F1; F4 re-points them), and discovery: a device on its PCID session
// asks where its MCIM will come from and gets the bootstrap message (F2 steps 5-6,
// bootstrap.h), after which the RO tells the SHO that the device has arrived (step 7). Pure
// logic over the store ports; the caller's identity (the SHO's mTLS certificate, the PCID the
// VNO asserts for a session) comes from the HTTP layer. Thread-compatible: one instance per
// worker thread. docs/roles-ro.md.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

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
};

class Drf {
 public:
  Drf(store::RegistrationStore& registrations, store::PcidStore& pcids, store::AuditStore& audit,
      ArrivalNotifier& notifier, const Clock& clock, RandomSource& random, DrfConfig config = {});
  Drf(store::Database& db, ArrivalNotifier& notifier, const Clock& clock, RandomSource& random,
      DrfConfig config = {});

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
  // (the caller holds it already), access_denied (`pin` is not the device's: its stretched key,
  // compared in constant time with the stored bootstrap key; the owner's proof of ownership). Then
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
};

}  // namespace mcim::ro
