// The RO's audit trail, shared by the ICF, DRF and DPF: each operation, accepted or refused,
// appends one store::AuditRecord (service, event, subject, principal, outcome, detail) to the
// AuditStore. Details name records and counts, never key material, PINs or vectors. Internal to
// src/roles/ro.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "store/store.h"

namespace mcim::ro::detail {

inline store::Time seconds_of(TimePoint t) { return std::chrono::floor<std::chrono::seconds>(t); }

// A device named by the PCID it authenticated with (or claims, before it has).
inline std::string pcid_principal(std::string_view pcid) { return "pcid:" + std::string(pcid); }

// What a record says besides its outcome. It owns its text, so that an entry built from
// temporaries (an operator_principal(...)) may be returned by audited_change's `entry_of`.
struct AuditEntry {
  AuditEntry(std::string_view service_, std::string_view event_, std::string_view subject_,
             std::string_view principal_, std::string detail_ = {})
      : service(service_),
        event(event_),
        subject(subject_),
        principal(principal_),
        detail(std::move(detail_)) {}
  std::string service, event, subject, principal, detail;
};

// The record of `result`: "ok" with the entry's detail, or the error's wire code and message.
template <class T>
store::AuditRecord record_of(store::Time now, const AuditEntry& entry, const Result<T>& result) {
  store::AuditRecord r;
  r.time = now;
  r.service = entry.service;
  r.event = entry.event;
  r.subject = entry.subject;
  r.principal = entry.principal;
  r.outcome = result ? std::string("ok") : std::string(result.error().wire_code());
  r.detail = result ? entry.detail : result.error().message;
  return r;
}

// Records the outcome of `result` ("ok" or the error's wire code) and returns `result`. An
// operation that succeeded but could not be recorded fails with the store's error: nothing the
// RO does may look complete without its record (every operation is safe to retry or answers a
// retry with a precise code). A refusal stays the refusal: it is the more useful answer.
template <class T>
Result<T> audited(store::AuditStore& audit, store::Time now, const AuditEntry& entry,
                  Result<T> result) {
  auto appended = audit.append(record_of(now, entry, result));
  if (!appended && result) return std::unexpected(appended.error());
  return result;
}

// What is to happen once the calling thread's audited change has committed, and not at all when
// it rolls back: a notice stored in the change's transaction is handed to the workers that deliver
// it only then. Outside an audited change, an action runs at once. An audited change within
// another passes its actions on to the outer one. Thread-local; one per audited_change.
class AfterCommit {
 public:
  AfterCommit() : outer_(std::exchange(current_, this)) {}
  AfterCommit(const AfterCommit&) = delete;
  AfterCommit& operator=(const AfterCommit&) = delete;
  ~AfterCommit() { current_ = outer_; }

  static void defer(std::function<void()> action) {
    if (current_ == nullptr) {
      action();
    } else {
      current_->actions_.push_back(std::move(action));
    }
  }
  void forget() { actions_.clear(); }
  // After the commit: runs the actions, or hands them to the enclosing change.
  void committed() {
    current_ = outer_;
    auto actions = std::exchange(actions_, {});
    for (auto& a : actions) {
      if (outer_ != nullptr) {
        outer_->actions_.push_back(std::move(a));
      } else {
        a();
      }
    }
  }

 private:
  static inline thread_local AfterCommit* current_ = nullptr;
  AfterCommit* outer_;
  std::vector<std::function<void()>> actions_;
};

// audited() for a change: runs `change` (Result<T>()) and, when it succeeds, appends its record
// `entry_of(result)` (an AuditEntry) in the same transaction (store::AuditStore::atomically), so
// that neither stays without the other and the two cost one commit; then `then(value)` (`then()`
// for Result<void>), in that transaction still: what follows from the change and must not be
// without it, such as the notice it gives rise to, stored in the same commit (a transactional
// outbox) and handed to its senders after it (AfterCommit). `then` records its own failures and
// does not undo the change. `change` should make its checks and crypto before its first store
// write, which takes the database's write lock (SQLite); it and `then` may be run again when the
// transaction met a conflict. When the change fails, whatever it wrote rolls back and its refusal
// is recorded alone, as audited() records it; when the record or the commit fails, the change
// rolls back and the store's error is returned.
template <class F, class E, class Then>
std::invoke_result_t<F&> audited_change(store::AuditStore& audit, store::Time now, F&& change,
                                        E&& entry_of, Then&& then) {
  using R = std::invoke_result_t<F&>;
  std::optional<R> result;
  AfterCommit after;
  auto unit = audit.atomically([&]() -> Result<void> {
    after.forget();  // of an earlier run
    result.emplace(change());
    if (!*result) return std::unexpected(result->error());
    auto appended = audit.append(record_of(now, entry_of(*result), *result));
    if (!appended) return std::unexpected(appended.error());
    if constexpr (std::is_void_v<typename R::value_type>) {
      then();
    } else {
      then(**result);
    }
    return {};
  });
  if (!result) return R(std::unexpected(unit.error()));
  if (!*result) {
    after.forget();
    (void)audit.append(record_of(now, entry_of(*result), *result));
    return std::move(*result);
  }
  if (!unit) {
    after.forget();
    return R(std::unexpected(unit.error()));
  }
  after.committed();
  return std::move(*result);
}

template <class F, class E>
std::invoke_result_t<F&> audited_change(store::AuditStore& audit, store::Time now, F&& change,
                                        E&& entry_of) {
  return audited_change(audit, now, std::forward<F>(change), std::forward<E>(entry_of),
                        [](auto&&...) {});
}

}  // namespace mcim::ro::detail
