// F4 step 4 at the RO's DPF: sessions for an operational device that changes operator. Such a
// device is attached with its old SHO's IMSI and has no ICF session (no PCID attach); it proves
// its platform key (the direct-access proof, DirectAccess::prove) and gets a DPF-only session,
// which the device routes of the provisioning (attestation request and answer, package and report)
// accept as their Bearer beside the ICF's. The sessions live in memory only: a restarted RO has
// none, and the device proves its key again. Thread-safe; the ids are bearer tokens, never logged.
// docs/protocol.md "Remote management (F9)", docs/roles-ro.md "Operator change (F4)".
#pragma once

#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "store/store.h"

namespace mcim::ro {

// The holder recorded in a DPF session (store::Session::vno): no VNO holds it.
inline constexpr std::string_view kDpfSessionHolder = "dpf:management";

// At most `capacity` live sessions: a new one pushes out the oldest (sessions share one lifetime,
// so the oldest is also the first to expire). Expired ones are found no more and are dropped as
// new ones come.
class DpfSessions {
 public:
  explicit DpfSessions(std::size_t capacity = 100'000) : capacity_(capacity) {}

  // Keeps `s` (its id a fresh random token, its imsi the PCID, its expiry set), dropping the
  // expired ones at `now` and, when full, the oldest.
  void put(store::Session s, store::Time now);
  // The session of `id` while it has not expired at `now`.
  std::optional<store::Session> find(std::string_view id, store::Time now) const;
  std::size_t size() const;

 private:
  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, store::Session> sessions_;  // guarded by mu_; by id
  std::deque<std::string> order_;                             // guarded by mu_; oldest first
};

// F4: who refused a registration's device when it was not the registration's holder (its
// successor, whose refusal ends the change and clears it from the registration), for the device's
// polls to name (Dpf::refusal_of). A record holds for the refusal it was made with (code and time)
// and is dropped when the registration's refusal is another. In memory only, per RO instance: a
// restarted RO, or another instance on the same database, names the holder. At most one record a
// PCID; the holder's own refusal and a new change order drop it. Thread-safe.
class SuccessorRefusals {
 public:
  void record(std::string_view pcid, std::string_view successor, const store::Registration& r);
  void forget(std::string_view pcid);
  // The successor that made `r`'s current refusal; empty when the holder made it, or unknown.
  std::string refused_by(const store::Registration& r);

 private:
  struct Refusal {
    std::string by{}, code{};
    store::Time at{};
  };
  std::mutex mu_;
  std::unordered_map<std::string, Refusal> refusals_;  // guarded by mu_; by PCID
};

}  // namespace mcim::ro
