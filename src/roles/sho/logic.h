// The SHO's pure rules (no I/O): which RO holds a PCID, how IMSIs and package ids are formed, which
// subscriber states a notice may move. Internal to src/roles/sho; header-only. Thread-safe.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "pki/sealed.h"
#include "roles/sho/service.h"
#include "store/store.h"

namespace mcim::sho::logic {

// The RO whose prefix is the longest one the PCID starts with; null when none covers it.
inline const RoEndpoint* ro_for(const std::vector<RoEndpoint>& ros, std::string_view pcid) {
  const RoEndpoint* best = nullptr;
  for (const RoEndpoint& ro : ros) {
    if (!pcid.starts_with(ro.pcid_prefix)) continue;
    if (best == nullptr || ro.pcid_prefix.size() > best->pcid_prefix.size()) best = &ro;
  }
  return best;
}

// The largest serial that still fits the IMSI length after the prefix (0 when none does).
inline std::uint64_t max_serial(std::string_view prefix, unsigned imsi_digits) {
  if (prefix.size() >= imsi_digits) return 0;
  std::uint64_t max = 1;
  for (std::size_t i = prefix.size(); i < imsi_digits; ++i) max *= 10;
  return max - 1;
}

// prefix + serial zero-padded to exactly imsi_digits digits.
inline std::string imsi_of(std::string_view prefix, unsigned imsi_digits, std::uint64_t serial) {
  return fmt::format("{}{:0>{}}", prefix, serial, imsi_digits - prefix.size());
}

// "<operator>-<device_id>-<sequence>", or "mcim-<imsi>-<sequence>" when a long id would push the
// package id past the id syntax's 64 characters. Package ids are unique at the RO's DPF, which
// several SHOs share: each SHO's sequence starts at 1, so the operator (or its own IMSI) tells
// them apart (F5: a device provisioned by one SHO, then by another).
inline std::string package_id_of(std::string_view operator_id, std::string_view device_id,
                                 std::string_view imsi, std::uint64_t sequence) {
  std::string id = fmt::format("{}-{}-{}", operator_id, device_id, sequence);
  if (pki::valid_mcim_id(id)) return id;
  return fmt::format("mcim-{}-{}", imsi, sequence);
}

// An arrival (F2 step 7) starts or restarts validation: a device that comes back while a
// challenge is in flight gets a fresh one (the old attestation may never arrive); anything past
// validation is not restarted by the RO. A registration whose nonce lapsed (nonce_expires, F1)
// provisions nothing: the owner registered for a switch-on that did not come in time.
inline Result<void> arrival_allowed(const store::Subscriber& s, store::Time now) {
  if (s.status != store::SubscriberStatus::registered &&
      s.status != store::SubscriberStatus::validating) {
    return fail(ErrorCode::transition_refused,
                fmt::format("device {}: {}, not awaiting arrival", s.device_id,
                            store::to_string(s.status)));
  }
  if (now >= s.nonce_expires) {
    return fail(ErrorCode::registration_expired,
                fmt::format("device {}: the registration lapsed {} s ago", s.device_id,
                            std::chrono::duration_cast<std::chrono::seconds>(
                                now - s.nonce_expires).count()));
  }
  return {};
}

// An attestation relay (steps 9-10) answers the challenge in flight, once.
inline Result<void> attestation_allowed(const store::Subscriber& s, std::string_view request_id) {
  if (s.status != store::SubscriberStatus::validating) {
    return fail(ErrorCode::transition_refused,
                fmt::format("device {}: {}, no validation in progress", s.device_id,
                            store::to_string(s.status)));
  }
  if (s.challenge_id != request_id) {
    return fail(ErrorCode::transition_refused,
                fmt::format("device {}: request {} is not the challenge in flight", s.device_id,
                            request_id));
  }
  return {};
}

// A status relay (step 14) closes the package handed over, once.
inline Result<void> status_allowed(const store::Subscriber& s, std::string_view package_id) {
  if (s.status != store::SubscriberStatus::provisioning) {
    return fail(ErrorCode::transition_refused,
                fmt::format("device {}: {}, no package awaiting its report", s.device_id,
                            store::to_string(s.status)));
  }
  if (s.package_id != package_id) {
    return fail(
        ErrorCode::transition_refused,
        fmt::format("device {}: package {} is not the one handed over", s.device_id, package_id));
  }
  return {};
}

// Instructions (F9), a revert (F5) and a discard (F4) are about an MCIM the device holds: the
// subscriber is active.
inline Result<void> operational(const store::Subscriber& s) {
  if (s.status != store::SubscriberStatus::active) {
    return fail(
        ErrorCode::transition_refused,
        fmt::format("device {}: {}, not operational", s.device_id, store::to_string(s.status)));
  }
  return {};
}

}  // namespace mcim::sho::logic
