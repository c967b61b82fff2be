#include "roles/ro/drf.h"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>

#include "common/secure.h"
#include "pki/package.h"
#include "roles/ro/audit.h"
#include "roles/ro/bootstrap.h"
#include "roles/ro/dpf.h"

namespace mcim::ro {
namespace {

using detail::audited;
using detail::audited_change;
using detail::AuditEntry;

constexpr std::string_view kService = "drf";

BootstrapFields fields_of(const store::Registration& r, store::Time issued,
                          const Bytes<16>& nonce) {
  BootstrapFields f;
  f.pcid = r.pcid;
  f.device_id = r.device_id;
  f.dpf_url = r.dpf_url;
  f.dpf_key_pin = r.dpf_key_pin;
  f.apn = r.apn;
  f.sho = r.sho;
  f.issued = issued;
  f.nonce = nonce;
  return f;
}

std::string operator_principal(std::string_view id) { return fmt::format("operator:{}", id); }

}  // namespace

std::deque<store::Time>* ChangeAttempts::window_of(std::string_view pcid, store::Time now,
                                                   const DrfConfig& config) {
  // Now and then, the PCIDs whose wrong PINs all left the window go.
  if (++calls_ % 1024 == 0) {
    std::erase_if(wrong_,
                  [&](const auto& e) { return e.second.back() <= now - config.change_window; });
  }
  auto it = wrong_.find(std::string(pcid));
  if (it == wrong_.end()) return nullptr;
  std::deque<store::Time>& times = it->second;
  while (!times.empty() && times.front() <= now - config.change_window) times.pop_front();
  if (times.empty()) {
    wrong_.erase(it);
    return nullptr;
  }
  return &times;
}

bool ChangeAttempts::admit(std::string_view pcid, store::Time now, const DrfConfig& config) {
  std::lock_guard lock(mu_);
  const auto* times = window_of(pcid, now, config);
  if (times != nullptr && times->size() >= config.change_attempts) return false;
  wrong_[std::string(pcid)].push_back(now);
  return true;
}

void ChangeAttempts::forgive(std::string_view pcid, store::Time at) {
  std::lock_guard lock(mu_);
  auto it = wrong_.find(std::string(pcid));
  if (it == wrong_.end()) return;
  std::deque<store::Time>& times = it->second;
  auto mine = std::find(times.rbegin(), times.rend(), at);
  if (mine != times.rend()) times.erase(std::next(mine).base());
  if (times.empty()) wrong_.erase(it);
}

std::size_t ChangeAttempts::tracked() const {
  std::lock_guard lock(mu_);
  return wrong_.size();
}

Drf::Drf(store::RegistrationStore& registrations, store::PcidStore& pcids, store::AuditStore& audit,
         ArrivalNotifier& notifier, const Clock& clock, RandomSource& random, DrfConfig config,
         ChangeAttempts* change_attempts)
    : registrations_(registrations),
      pcids_(pcids),
      audit_(audit),
      notifier_(notifier),
      clock_(clock),
      random_(random),
      config_(config),
      change_attempts_(change_attempts) {}

Drf::Drf(store::Database& db, ArrivalNotifier& notifier, const Clock& clock, RandomSource& random,
         DrfConfig config, ChangeAttempts* change_attempts)
    : Drf(db.registrations(), db.pcids(), db.audit(), notifier, clock, random, config,
          change_attempts) {}

store::Time Drf::now() const { return detail::seconds_of(clock_.now()); }

// A registration must be able to become a bootstrap message: the same field rules.
Result<void> Drf::validate(const store::Registration& r) const {
  if (auto v = validate_bootstrap_fields(fields_of(r, now(), {})); !v) {
    return fail(ErrorCode::invalid_argument, "registration: " + v.error().message);
  }
  if (!config_.require_known_pcid) return {};
  auto found = pcids_.find(r.pcid);
  if (!found) return std::unexpected(found.error());
  if (!*found) return fail(ErrorCode::not_found, fmt::format("pcid {}: unknown to the RO", r.pcid));
  return {};
}

Result<void> Drf::register_pcid(store::Registration r, std::string_view pin,
                                std::string_view caller_sho) {
  const store::Time t = now();
  auto change = [&]() -> Result<void> {
    if (r.sho != caller_sho) {
      return fail(ErrorCode::access_denied,
                  fmt::format("registration: names operator {}, not the caller", r.sho));
    }
    if (auto v = validate(r); !v) return v;
    auto key = derive_bootstrap_key(pin, r.device_id);
    if (!key) return std::unexpected(key.error());
    r.bootstrap_key = std::move(*key);
    r.created = t;
    return registrations_.put(r);
  };
  return audited_change(audit_, t, change, [&](const auto&) {
    return AuditEntry{kService, "register", r.pcid, operator_principal(caller_sho),
                      fmt::format("device {}, sho {}", r.device_id, r.sho)};
  });
}

Result<void> Drf::unregister(std::string_view pcid, std::string_view caller_sho) {
  const store::Time t = now();
  return audited_change(
      audit_, t, [&] { return registrations_.remove(pcid, caller_sho); },
      [&](const auto&) {
        return AuditEntry{kService, "unregister", pcid, operator_principal(caller_sho)};
      });
}

Result<void> Drf::transfer(std::string_view pcid, std::string_view caller_sho,
                           std::string_view to) {
  const store::Time t = now();
  auto change = [&]() -> Result<void> {
    if (!pki::valid_mcim_id(to)) return fail(ErrorCode::invalid_argument, "to: an operator id");
    // Who holds it first: a stranger learns nothing else about the registration.
    if (auto held = detail::held_registration(registrations_, pcid, caller_sho); !held) {
      return std::unexpected(held.error());
    }
    if (to == caller_sho) {
      return fail(ErrorCode::invalid_argument, "to: another operator than the caller");
    }
    // The store's update is conditional on the holder again: a racing change cannot be overtaken.
    return registrations_.transfer(pcid, caller_sho, to, t);
  };
  return audited_change(audit_, t, change, [&](const auto&) {
    return AuditEntry{kService, "transfer", pcid, operator_principal(caller_sho),
                      fmt::format("to {}", operator_principal(to))};
  });
}

Result<void> Drf::order_change(std::string_view pcid, std::string_view device_id,
                               std::string_view pin, std::string_view caller_sho) {
  auto found = registrations_.find(pcid);
  if (!found) return std::unexpected(found.error());
  if (!*found) return fail(ErrorCode::not_found, fmt::format("pcid {}: not registered", pcid));
  store::Registration& reg = **found;
  if (reg.device_id != device_id) {
    return fail(ErrorCode::wrong_recipient,
                fmt::format("pcid {}: registered for another device", pcid));
  }
  if (reg.sho == caller_sho) {
    return fail(ErrorCode::already_exists, fmt::format("pcid {}: the caller holds it", pcid));
  }
  // The PIN on the device's label: only its owner can move the device. Guessing it is limited.
  const store::Time t = now();
  if (change_attempts_ != nullptr && !change_attempts_->admit(pcid, t, config_)) {
    return fail(ErrorCode::transition_refused,
                fmt::format("pcid {}: too many wrong PINs within {} s; try again later", pcid,
                            config_.change_window.count()));
  }
  auto key = derive_bootstrap_key(pin, reg.device_id);
  if (!key || !constant_time_equal(key->get(), reg.bootstrap_key.get())) {
    return fail(ErrorCode::access_denied, "pin: not the device's");  // counted by admit()
  }
  if (change_attempts_ != nullptr) change_attempts_->forgive(pcid, t);
  if (!reg.refusal.empty()) {
    // An earlier change's refusal would end the new change's polls: the RO clears it for the
    // holder (put() keeps the successor).
    reg.refusal.clear();
    reg.refused = {};
    if (auto put = registrations_.put(reg); !put) return put;
  }
  return registrations_.set_successor(pcid, caller_sho);
}

Result<void> Drf::change(std::string_view pcid, std::string_view device_id, std::string_view pin,
                         std::string_view caller_sho) {
  const store::Time t = now();
  return audited_change(
      audit_, t, [&] { return order_change(pcid, device_id, pin, caller_sho); },
      [&](const auto&) {
        return AuditEntry{kService, "change", pcid, operator_principal(caller_sho),
                          fmt::format("device {}", device_id)};
      });
}

Result<std::string> Drf::discover(std::string_view pcid, std::string_view session_pcid) {
  const store::Time t = now();
  std::optional<store::Registration> registration;
  auto change = [&]() -> Result<std::string> {
    if (session_pcid.empty() || session_pcid != pcid) {
      return fail(ErrorCode::access_denied,
                  fmt::format("pcid {}: not the PCID the session authenticated", pcid));
    }
    auto found = registrations_.find(pcid);
    if (!found) return std::unexpected(found.error());
    if (!*found) return fail(ErrorCode::not_found, fmt::format("pcid {}: not registered", pcid));
    registration = std::move(*found);
    // An adapter that dropped the key would make every bootstrap fail at the device.
    if (registration->bootstrap_key.get() == Bytes<32>{}) {
      return fail(ErrorCode::internal, fmt::format("pcid {}: registration without key", pcid));
    }
    return make_bootstrap(fields_of(*registration, t, random_.draw<16>()),
                          registration->bootstrap_key);
  };
  const std::string principal = fmt::format("pcid:{}", session_pcid.empty() ? "-" : session_pcid);
  auto entry_of = [&](const auto&) {
    return AuditEntry{
        kService, "discover", pcid, principal,
        registration ? fmt::format("device {}, sho {}", registration->device_id, registration->sho)
                     : ""};
  };
  // F2 step 7, stored with the discovery's record. The device has its answer either way; a
  // failed notice is on the record.
  auto notify = [&](const std::string&) {
    Arrival arrival{registration->pcid, registration->device_id, registration->sho, t};
    auto notified = notifier_.device_arrived(arrival);
    (void)audited(audit_, t,
                  {kService, "arrival-notice", pcid, "drf",
                   fmt::format("to {}", operator_principal(registration->sho))},
                  std::move(notified));
  };
  return audited_change(audit_, t, change, entry_of, notify);
}

}  // namespace mcim::ro
