// The RO's audit trail, shared by the ICF, DRF and DPF: each operation, accepted or refused,
// appends one store::AuditRecord (service, event, subject, principal, outcome, detail) to the
// AuditStore. Details name records and counts, never key material, PINs or vectors. Internal to
// src/roles/ro.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/error.h"
#include "store/store.h"

namespace mcim::ro::detail {

inline store::Time seconds_of(TimePoint t) { return std::chrono::floor<std::chrono::seconds>(t); }

// A device named by the PCID it authenticated with (or claims, before it has).
inline std::string pcid_principal(std::string_view pcid) { return "pcid:" + std::string(pcid); }

struct AuditEntry {
  std::string_view service, event, subject, principal;
  std::string detail;
};

// Records the outcome of `result` ("ok" or the error's wire code) and returns `result`. An
// operation that succeeded but could not be recorded fails with the store's error: nothing the
// RO does may look complete without its record (every operation is safe to retry or answers a
// retry with a precise code). A refusal stays the refusal: it is the more useful answer.
template <class T>
Result<T> audited(store::AuditStore& audit, store::Time now, AuditEntry entry, Result<T> result) {
  store::AuditRecord r;
  r.time = now;
  r.service = std::string(entry.service);
  r.event = std::string(entry.event);
  r.subject = std::string(entry.subject);
  r.principal = std::string(entry.principal);
  r.outcome = result ? std::string("ok") : std::string(result.error().wire_code());
  r.detail = result ? std::move(entry.detail) : result.error().message;
  auto appended = audit.append(r);
  if (!appended && result) return std::unexpected(appended.error());
  return result;
}

}  // namespace mcim::ro::detail
