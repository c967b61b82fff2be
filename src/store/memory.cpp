// The in-memory Database: plain containers behind one mutex (`mu_`), so every port method is
// one atomic step, as each SQL adapter method is one transaction. Error codes and messages follow
// store.h; messages name records (PCIDs, package ids, operators), never key material.
#include "store/memory.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <set>

namespace mcim::store {
namespace {

using Lock = std::lock_guard<std::mutex>;

// State shared by the ports of one database.
struct MemoryState {
  std::mutex mu;
  std::map<std::string, PcidSubscription, std::less<>> pcids;  // guarded by mu
  std::map<std::string, PcidRenewal, std::less<>> renewals;    // staged, by PCID; guarded by mu
  std::map<std::string, std::uint64_t, std::less<>> seq_he;    // guarded by mu
  std::map<std::string, Registration, std::less<>> registrations;
  struct PackageEntry {
    std::uint64_t order = 0;  // insertion order breaks ties between equal `created` times
    StoredPackage package;
  };
  std::map<std::string, PackageEntry, std::less<>> packages;
  std::uint64_t package_order = 0;
  std::map<std::string, Session, std::less<>> sessions;  // by id
  std::deque<AuditRecord> audit;                         // oldest first
  std::uint64_t audit_seq = 0;
  struct AttestationEntry {
    std::uint64_t order = 0;  // as for packages: ties between equal `created` times
    AttestationRequest request;
  };
  std::map<std::string, AttestationEntry, std::less<>> attestations;  // by request_id
  std::uint64_t attestation_order = 0;
  std::map<std::string, Subscriber, std::less<>> subscribers;       // by device_id
  std::map<std::string, Challenge, std::less<>> challenges;         // by challenge_id
  std::map<std::string, StoredReferences, std::less<>> references;  // by model
  std::deque<QueuedInstruction> instructions;                       // oldest first
  std::deque<IssuedInstruction> issued;                             // oldest first
  std::map<std::uint64_t, StoredNotice> notices;                    // by seq: oldest first
  std::uint64_t notice_seq = 0;  // the last seq given: never given again
};

// Keeps at most `keep` (at least 1) entries of an F9 record: the oldest answered ones go first,
// then the oldest of all, as the SQL adapters' prune().
template <class T, class Answered>
void prune(std::deque<T>& entries, std::size_t keep, Answered answered) {
  keep = std::max<std::size_t>(keep, 1);
  for (auto it = entries.begin(); entries.size() > keep && it != entries.end();) {
    it = answered(*it) ? entries.erase(it) : std::next(it);
  }
  while (entries.size() > keep) entries.pop_front();
}

template <class T>
auto find_instruction(std::deque<T>& entries, std::string_view id) {
  return std::find_if(entries.begin(), entries.end(),
                      [&](const T& e) { return e.instruction_id == id; });
}

class MemoryPcids final : public PcidStore {
 public:
  explicit MemoryPcids(MemoryState& s) : s_(s) {}
  using PcidStore::add_batch;

  Result<std::uint64_t> add_batch(const std::vector<PcidSubscription>& batch,
                                  const std::optional<PcidReuse>& reuse) override {
    Lock lock(s_.mu);
    std::set<std::string_view> seen;
    std::vector<std::string_view> reused;
    for (const auto& p : batch) {
      const auto stored = s_.pcids.find(p.pcid);
      const bool taken =
          stored != s_.pcids.end() &&
          (!reuse || !pcid_free(stored->second, *reuse) || live_session(p.pcid, *reuse));
      if (taken || !seen.insert(p.pcid).second) {
        return fail(ErrorCode::already_exists, fmt::format("pcid {}: already present", p.pcid));
      }
      if (stored != s_.pcids.end()) reused.push_back(p.pcid);
    }
    for (std::string_view pcid : reused) {
      s_.pcids.erase(s_.pcids.find(pcid));
      if (auto r = s_.renewals.find(pcid); r != s_.renewals.end()) s_.renewals.erase(r);
      if (auto r = s_.registrations.find(pcid); r != s_.registrations.end()) {
        s_.registrations.erase(r);
      }
    }
    for (const auto& p : batch) s_.pcids.insert_or_assign(p.pcid, p);
    return static_cast<std::uint64_t>(reused.size());
  }

  Result<std::optional<PcidSubscription>> find(std::string_view pcid) override {
    Lock lock(s_.mu);
    auto it = s_.pcids.find(pcid);
    if (it == s_.pcids.end()) return std::optional<PcidSubscription>();
    return std::optional<PcidSubscription>(it->second);
  }

  Result<void> activate(std::string_view pcid, Time until) override {
    Lock lock(s_.mu);
    auto it = s_.pcids.find(pcid);
    if (it == s_.pcids.end()) return fail(ErrorCode::not_found, fmt::format("pcid {}", pcid));
    if (it->second.status == PcidStatus::expired) {
      return fail(ErrorCode::transition_refused,
                  fmt::format("pcid {}: expired, cannot be activated", pcid));
    }
    it->second.status = PcidStatus::active;
    it->second.active_until = until;
    return {};
  }

  Result<std::uint64_t> expire_dormant(Time now) override {
    Lock lock(s_.mu);
    std::uint64_t n = 0;
    for (auto& [id, p] : s_.pcids) {
      if (p.status == PcidStatus::dormant && p.dormant_until < now) {
        p.status = PcidStatus::expired;
        p.expired_at = now;
        ++n;
      }
    }
    return n;
  }

  Result<std::uint64_t> count() override {
    Lock lock(s_.mu);
    return static_cast<std::uint64_t>(s_.pcids.size());
  }

  Result<void> stage_renewal(const PcidRenewal& r) override {
    Lock lock(s_.mu);
    auto it = s_.pcids.find(r.pcid);
    if (it == s_.pcids.end()) return fail(ErrorCode::not_found, fmt::format("pcid {}", r.pcid));
    it->second.renewal_package = r.package_id;
    s_.renewals.insert_or_assign(r.pcid, r);
    return {};
  }

  Result<void> complete_renewal(std::string_view pcid, std::string_view package_id) override {
    Lock lock(s_.mu);
    auto it = s_.pcids.find(pcid);
    if (it == s_.pcids.end()) return fail(ErrorCode::not_found, fmt::format("pcid {}", pcid));
    auto staged = s_.renewals.find(pcid);
    if (staged == s_.renewals.end() || staged->second.package_id != package_id) {
      return fail(ErrorCode::transition_refused,
                  fmt::format("pcid {}: renewal {} is not the staged one", pcid, package_id));
    }
    PcidSubscription& p = it->second;
    p.k = staged->second.k;
    p.opc = staged->second.opc;
    p.not_after = staged->second.not_after;
    p.renewal_package.clear();
    s_.renewals.erase(staged);
    return {};
  }

 private:
  // Under s_.mu.
  bool live_session(std::string_view pcid, const PcidReuse& reuse) const {
    return std::any_of(s_.sessions.begin(), s_.sessions.end(), [&](const auto& e) {
      return e.second.imsi == pcid && e.second.expires > reuse.now;
    });
  }

  MemoryState& s_;
};

class MemorySqns final : public SqnStore {
 public:
  explicit MemorySqns(MemoryState& s) : s_(s) {}

  Result<std::uint64_t> reserve(std::string_view imsi, std::uint64_t count,
                                std::uint64_t seq_max) override {
    Lock lock(s_.mu);
    auto it = s_.seq_he.find(imsi);
    const std::uint64_t s = it == s_.seq_he.end() ? 0 : it->second;
    if (s > seq_max || count > seq_max - s) {
      return fail(ErrorCode::sqn_exhausted,
                  fmt::format("imsi {}: SEQ_HE cannot advance by {}", imsi, count));
    }
    if (it == s_.seq_he.end()) it = s_.seq_he.emplace(std::string(imsi), 0).first;
    it->second = s + count;
    return s;
  }

  Result<std::uint64_t> resynchronise(std::string_view imsi, std::uint64_t seq_ms) override {
    Lock lock(s_.mu);
    auto it = s_.seq_he.find(imsi);
    if (it == s_.seq_he.end()) it = s_.seq_he.emplace(std::string(imsi), 0).first;
    it->second = std::max(it->second, seq_ms);
    return it->second;
  }

  Result<std::uint64_t> current(std::string_view imsi) override {
    Lock lock(s_.mu);
    auto it = s_.seq_he.find(imsi);
    return it == s_.seq_he.end() ? std::uint64_t{0} : it->second;
  }

 private:
  MemoryState& s_;
};

class MemoryRegistrations final : public RegistrationStore {
 public:
  explicit MemoryRegistrations(MemoryState& s) : s_(s) {}

  Result<void> put(const Registration& r) override {
    Lock lock(s_.mu);
    auto it = s_.registrations.find(r.pcid);
    if (it == s_.registrations.end()) {
      s_.registrations.emplace(r.pcid, r);
      return {};
    }
    if (it->second.sho != r.sho) {
      return fail(ErrorCode::access_denied,
                  fmt::format("pcid {}: registered by another operator", r.pcid));
    }
    std::string successor = std::move(it->second.successor);  // put() keeps it
    it->second = r;
    it->second.successor = std::move(successor);
    return {};
  }

  Result<std::optional<Registration>> find(std::string_view pcid) override {
    Lock lock(s_.mu);
    auto it = s_.registrations.find(pcid);
    if (it == s_.registrations.end()) return std::optional<Registration>();
    return std::optional<Registration>(it->second);
  }

  Result<void> remove(std::string_view pcid, std::string_view sho) override {
    Lock lock(s_.mu);
    auto it = held(pcid, sho);
    if (!it) return std::unexpected(it.error());
    s_.registrations.erase(*it);
    return {};
  }

  Result<void> transfer(std::string_view pcid, std::string_view from, std::string_view to,
                        Time at) override {
    Lock lock(s_.mu);
    auto it = held(pcid, from);
    if (!it) return std::unexpected(it.error());
    Registration& r = (*it)->second;
    r.sho = std::string(to);
    r.created = at;
    r.refusal.clear();
    r.refused = Time{};
    r.successor.clear();
    return {};
  }

  Result<void> set_successor(std::string_view pcid, std::string_view successor) override {
    Lock lock(s_.mu);
    auto it = s_.registrations.find(pcid);
    if (it == s_.registrations.end()) {
      return fail(ErrorCode::not_found, fmt::format("registration of pcid {}", pcid));
    }
    it->second.successor = std::string(successor);
    return {};
  }

 private:
  using Iterator = decltype(MemoryState::registrations)::iterator;
  // The registration `sho` holds (s_.mu held): not_found, access_denied for another holder.
  Result<Iterator> held(std::string_view pcid, std::string_view sho) {
    auto it = s_.registrations.find(pcid);
    if (it == s_.registrations.end()) {
      return fail(ErrorCode::not_found, fmt::format("registration of pcid {}", pcid));
    }
    if (it->second.sho != sho) {
      return fail(ErrorCode::access_denied,
                  fmt::format("pcid {}: registered by another operator", pcid));
    }
    return it;
  }

  MemoryState& s_;
};

class MemoryPackages final : public PackageStore {
 public:
  explicit MemoryPackages(MemoryState& s) : s_(s) {}

  Result<void> put(const StoredPackage& p) override {
    Lock lock(s_.mu);
    if (s_.packages.contains(p.package_id)) {
      return fail(ErrorCode::already_exists, fmt::format("package {}", p.package_id));
    }
    s_.packages.emplace(p.package_id, MemoryState::PackageEntry{++s_.package_order, p});
    return {};
  }

  Result<std::optional<StoredPackage>> next_for_device(std::string_view device_id) override {
    return next(device_id, [](const StoredPackage&) { return true; });
  }

  Result<std::optional<StoredPackage>> next_for_device_from(std::string_view device_id,
                                                            std::string_view sho,
                                                            std::string_view successor) override {
    return next(device_id, [&](const StoredPackage& p) {
      return !p.sho.empty() && (p.sho == sho || p.sho == successor);
    });
  }

  template <class Keep>
  Result<std::optional<StoredPackage>> next(std::string_view device_id, Keep keep) {
    Lock lock(s_.mu);
    const MemoryState::PackageEntry* best = nullptr;
    for (const auto& [id, e] : s_.packages) {
      const auto& p = e.package;
      if (p.device_id != device_id || p.status == PackageStatus::reported || !keep(p)) continue;
      if (best == nullptr || p.created < best->package.created ||
          (p.created == best->package.created && e.order < best->order)) {
        best = &e;
      }
    }
    if (best == nullptr) return std::optional<StoredPackage>();
    return std::optional<StoredPackage>(best->package);
  }

  Result<std::optional<StoredPackage>> find(std::string_view package_id) override {
    Lock lock(s_.mu);
    auto it = s_.packages.find(package_id);
    if (it == s_.packages.end()) return std::optional<StoredPackage>();
    return std::optional<StoredPackage>(it->second.package);
  }

  Result<void> mark_delivered(std::string_view package_id, Time at) override {
    Lock lock(s_.mu);
    auto it = s_.packages.find(package_id);
    if (it == s_.packages.end())
      return fail(ErrorCode::not_found, fmt::format("package {}", package_id));
    auto& p = it->second.package;
    // A reported package stays reported: a late re-delivery must not reopen it.
    if (p.status == PackageStatus::reported) {
      return fail(ErrorCode::transition_refused,
                  fmt::format("package {}: already reported", package_id));
    }
    p.status = PackageStatus::delivered;
    p.updated = at;
    return {};
  }

  Result<void> store_report(std::string_view package_id, std::string_view report,
                            Time at) override {
    Lock lock(s_.mu);
    auto it = s_.packages.find(package_id);
    if (it == s_.packages.end())
      return fail(ErrorCode::not_found, fmt::format("package {}", package_id));
    auto& p = it->second.package;
    if (p.status == PackageStatus::reported) {
      return fail(ErrorCode::transition_refused,
                  fmt::format("package {}: already reported", package_id));
    }
    p.status = PackageStatus::reported;
    p.report = std::string(report);
    p.updated = at;
    return {};
  }

 private:
  MemoryState& s_;
};

class MemorySessions final : public SessionStore {
 public:
  explicit MemorySessions(MemoryState& s) : s_(s) {}

  // All or nothing, as the SQL adapters: the IMSI's expired sessions go only when the new one
  // is stored.
  Result<void> open(const Session& session, Time now) override {
    Lock lock(s_.mu);
    auto dropped = [&](const Session& other) {
      return other.imsi == session.imsi && other.expires <= now;
    };
    for (const auto& [id, other] : s_.sessions) {
      if (other.imsi == session.imsi && !dropped(other)) {
        return fail(ErrorCode::already_exists,
                    fmt::format("imsi {}: already attached at {}", session.imsi, other.vno));
      }
    }
    if (auto it = s_.sessions.find(session.id); it != s_.sessions.end() && !dropped(it->second)) {
      return fail(ErrorCode::already_exists, fmt::format("session {}", session.id));
    }
    std::erase_if(s_.sessions, [&](const auto& entry) { return dropped(entry.second); });
    s_.sessions.emplace(session.id, session);
    return {};
  }

  Result<std::optional<Session>> find(std::string_view id) override {
    Lock lock(s_.mu);
    auto it = s_.sessions.find(id);
    if (it == s_.sessions.end()) return std::optional<Session>();
    return std::optional<Session>(it->second);
  }

  Result<void> close(std::string_view id) override {
    Lock lock(s_.mu);
    auto it = s_.sessions.find(id);
    if (it == s_.sessions.end()) return fail(ErrorCode::not_found, fmt::format("session {}", id));
    s_.sessions.erase(it);
    return {};
  }

 private:
  MemoryState& s_;
};

class MemoryAudit final : public AuditStore {
 public:
  explicit MemoryAudit(MemoryState& s) : s_(s) {}

  Result<std::uint64_t> append(const AuditRecord& r) override {
    Lock lock(s_.mu);
    AuditRecord copy = r;
    copy.seq = ++s_.audit_seq;
    s_.audit.push_back(std::move(copy));
    return s_.audit_seq;
  }

  Result<std::vector<AuditRecord>> recent(std::size_t limit) override {
    Lock lock(s_.mu);
    std::vector<AuditRecord> out;
    for (auto it = s_.audit.rbegin(); it != s_.audit.rend() && out.size() < limit; ++it) {
      out.push_back(*it);
    }
    return out;
  }

 private:
  MemoryState& s_;
};

class MemoryAttestations final : public AttestationRequestStore {
 public:
  explicit MemoryAttestations(MemoryState& s) : s_(s) {}

  Result<void> put(const AttestationRequest& r) override {
    Lock lock(s_.mu);
    if (s_.attestations.contains(r.request_id)) {
      return fail(ErrorCode::already_exists, fmt::format("attestation request {}", r.request_id));
    }
    s_.attestations.emplace(r.request_id, MemoryState::AttestationEntry{++s_.attestation_order, r});
    return {};
  }

  Result<std::optional<AttestationRequest>> next_for_device(std::string_view device_id) override {
    return next(device_id, [](const AttestationRequest&) { return true; });
  }

  Result<std::optional<AttestationRequest>> next_for_device_from(
      std::string_view device_id, std::string_view sho, std::string_view successor) override {
    return next(device_id, [&](const AttestationRequest& r) {
      return !r.sho.empty() && (r.sho == sho || r.sho == successor);
    });
  }

  template <class Keep>
  Result<std::optional<AttestationRequest>> next(std::string_view device_id, Keep keep) {
    Lock lock(s_.mu);
    const MemoryState::AttestationEntry* best = nullptr;
    for (const auto& [id, e] : s_.attestations) {
      const auto& r = e.request;
      if (r.device_id != device_id || r.status != AttestationStatus::pending || !keep(r)) continue;
      if (best == nullptr || r.created < best->request.created ||
          (r.created == best->request.created && e.order < best->order)) {
        best = &e;
      }
    }
    if (best == nullptr) return std::optional<AttestationRequest>();
    return std::optional<AttestationRequest>(best->request);
  }

  Result<std::optional<AttestationRequest>> find(std::string_view request_id) override {
    Lock lock(s_.mu);
    auto it = s_.attestations.find(request_id);
    if (it == s_.attestations.end()) return std::optional<AttestationRequest>();
    return std::optional<AttestationRequest>(it->second.request);
  }

  Result<void> mark_answered(std::string_view request_id, Time at) override {
    Lock lock(s_.mu);
    auto it = s_.attestations.find(request_id);
    if (it == s_.attestations.end()) {
      return fail(ErrorCode::not_found, fmt::format("attestation request {}", request_id));
    }
    auto& r = it->second.request;
    if (r.status == AttestationStatus::answered) {
      return fail(ErrorCode::transition_refused,
                  fmt::format("attestation request {}: already answered", request_id));
    }
    r.status = AttestationStatus::answered;
    r.answered = at;
    return {};
  }

 private:
  MemoryState& s_;
};

class MemorySubscribers final : public SubscriberStore {
 public:
  explicit MemorySubscribers(MemoryState& s) : s_(s) {}

  Result<void> add(const Subscriber& sub) override {
    Lock lock(s_.mu);
    if (s_.subscribers.contains(sub.device_id)) {
      return fail(ErrorCode::already_exists,
                  fmt::format("device_id {}: already registered", sub.device_id));
    }
    for (const auto& [id, other] : s_.subscribers) {
      if (other.pcid == sub.pcid) {
        return fail(ErrorCode::already_exists,
                    fmt::format("pcid {}: already registered", sub.pcid));
      }
    }
    for (const auto& [id, other] : s_.subscribers) {
      if (other.imsi == sub.imsi) {
        return fail(ErrorCode::already_exists, fmt::format("imsi {}: already allocated", sub.imsi));
      }
    }
    s_.subscribers.emplace(sub.device_id, sub);
    return {};
  }

  Result<std::optional<Subscriber>> find(std::string_view device_id) override {
    Lock lock(s_.mu);
    auto it = s_.subscribers.find(device_id);
    if (it == s_.subscribers.end()) return std::optional<Subscriber>();
    return std::optional<Subscriber>(it->second);
  }

  Result<std::optional<Subscriber>> find_by_pcid(std::string_view pcid) override {
    Lock lock(s_.mu);
    for (const auto& [id, sub] : s_.subscribers) {
      if (sub.pcid == pcid) return std::optional<Subscriber>(sub);
    }
    return std::optional<Subscriber>();
  }

  Result<void> update(const Subscriber& sub, SubscriberStatus expected) override {
    Lock lock(s_.mu);
    auto it = s_.subscribers.find(sub.device_id);
    if (it == s_.subscribers.end()) {
      return fail(ErrorCode::not_found, fmt::format("subscriber {}", sub.device_id));
    }
    Subscriber& stored = it->second;
    if (stored.status != expected) {
      return fail(ErrorCode::transition_refused,
                  fmt::format("subscriber {}: {}, not {}", sub.device_id, to_string(stored.status),
                              to_string(expected)));
    }
    stored.status = sub.status;
    stored.challenge_id = sub.challenge_id;
    stored.challenge_nonce = sub.challenge_nonce;
    stored.package_id = sub.package_id;
    stored.refusal = sub.refusal;
    stored.updated = sub.updated;
    return {};
  }

  Result<void> remove(std::string_view device_id) override {
    Lock lock(s_.mu);
    auto it = s_.subscribers.find(device_id);
    if (it == s_.subscribers.end()) {
      return fail(ErrorCode::not_found, fmt::format("subscriber {}", device_id));
    }
    s_.subscribers.erase(it);
    return {};
  }

 private:
  MemoryState& s_;
};

class MemoryChallenges final : public ChallengeStore {
 public:
  explicit MemoryChallenges(MemoryState& s) : s_(s) {}

  Result<void> put(const Challenge& c) override {
    Lock lock(s_.mu);
    if (s_.challenges.contains(c.challenge_id)) {
      return fail(ErrorCode::already_exists, fmt::format("challenge {}", c.challenge_id));
    }
    s_.challenges.emplace(c.challenge_id, c);
    return {};
  }

  Result<std::optional<Challenge>> find(std::string_view challenge_id) override {
    Lock lock(s_.mu);
    auto it = s_.challenges.find(challenge_id);
    if (it == s_.challenges.end()) return std::optional<Challenge>();
    return std::optional<Challenge>(it->second);
  }

  Result<Challenge> consume(std::string_view challenge_id) override {
    Lock lock(s_.mu);
    auto it = s_.challenges.find(challenge_id);
    if (it == s_.challenges.end()) {
      return fail(ErrorCode::not_found, fmt::format("challenge {}", challenge_id));
    }
    if (it->second.used) {
      return fail(ErrorCode::transition_refused,
                  fmt::format("challenge {}: already used", challenge_id));
    }
    it->second.used = true;
    return it->second;
  }

 private:
  MemoryState& s_;
};

class MemoryReferences final : public ReferenceStore {
 public:
  explicit MemoryReferences(MemoryState& s) : s_(s) {}

  Result<void> put(const StoredReferences& r) override {
    Lock lock(s_.mu);
    s_.references.insert_or_assign(r.model, r);
    return {};
  }

  Result<std::vector<StoredReferences>> all() override {
    Lock lock(s_.mu);
    std::vector<StoredReferences> out;
    out.reserve(s_.references.size());
    for (const auto& [model, r] : s_.references) out.push_back(r);
    return out;
  }

 private:
  MemoryState& s_;
};

class MemoryInstructions final : public InstructionStore {
 public:
  explicit MemoryInstructions(MemoryState& s) : s_(s) {}

  Result<void> put(const QueuedInstruction& q, std::size_t keep) override {
    Lock lock(s_.mu);
    if (find_instruction(s_.instructions, q.instruction_id) != s_.instructions.end()) {
      return fail(ErrorCode::already_exists, fmt::format("instruction {}", q.instruction_id));
    }
    s_.instructions.push_back(q);
    prune(s_.instructions, keep,
          [](const QueuedInstruction& e) { return e.status == InstructionStatus::answered; });
    return {};
  }

  Result<std::optional<QueuedInstruction>> find(std::string_view instruction_id) override {
    Lock lock(s_.mu);
    auto it = find_instruction(s_.instructions, instruction_id);
    if (it == s_.instructions.end()) return std::optional<QueuedInstruction>();
    return std::optional<QueuedInstruction>(*it);
  }

  Result<std::vector<QueuedInstruction>> collect(std::string_view device_id, std::size_t limit,
                                                 Time at) override {
    Lock lock(s_.mu);
    std::vector<QueuedInstruction> out;
    for (auto& e : s_.instructions) {
      if (out.size() >= limit) break;
      if (e.device_id != device_id || e.status == InstructionStatus::answered) continue;
      e.status = InstructionStatus::delivered;
      e.updated = at;
      out.push_back(e);
    }
    return out;
  }

  Result<QueuedInstruction> answer(std::string_view instruction_id, std::string_view report,
                                   Time at) override {
    Lock lock(s_.mu);
    auto it = find_instruction(s_.instructions, instruction_id);
    if (it == s_.instructions.end()) {
      return fail(ErrorCode::not_found, fmt::format("instruction {}", instruction_id));
    }
    if (it->status == InstructionStatus::answered) {
      return fail(ErrorCode::transition_refused,
                  fmt::format("instruction {}: already answered", instruction_id));
    }
    it->status = InstructionStatus::answered;
    it->report = std::string(report);
    it->updated = at;
    return *it;
  }

  Result<std::uint64_t> count() override {
    Lock lock(s_.mu);
    return static_cast<std::uint64_t>(s_.instructions.size());
  }

 private:
  MemoryState& s_;
};

class MemoryIssuedInstructions final : public IssuedInstructionStore {
 public:
  explicit MemoryIssuedInstructions(MemoryState& s) : s_(s) {}

  Result<void> put(const IssuedInstruction& i, std::size_t keep) override {
    Lock lock(s_.mu);
    if (find_instruction(s_.issued, i.instruction_id) != s_.issued.end()) {
      return fail(ErrorCode::already_exists, fmt::format("instruction {}", i.instruction_id));
    }
    s_.issued.push_back(i);
    prune(s_.issued, keep,
          [](const IssuedInstruction& e) { return e.status != IssuedStatus::queued; });
    return {};
  }

  Result<std::optional<IssuedInstruction>> find(std::string_view instruction_id) override {
    Lock lock(s_.mu);
    auto it = find_instruction(s_.issued, instruction_id);
    if (it == s_.issued.end()) return std::optional<IssuedInstruction>();
    return std::optional<IssuedInstruction>(*it);
  }

  Result<std::optional<IssuedInstruction>> latest_revert(std::string_view device_id) override {
    Lock lock(s_.mu);
    for (auto it = s_.issued.rbegin(); it != s_.issued.rend(); ++it) {
      if (it->device_id == device_id && !it->revert_to.empty()) {
        return std::optional<IssuedInstruction>(*it);
      }
    }
    return std::optional<IssuedInstruction>();
  }

  Result<IssuedInstruction> answer(std::string_view instruction_id, std::string_view report,
                                   Time at, bool released) override {
    Lock lock(s_.mu);
    auto it = find_instruction(s_.issued, instruction_id);
    if (it == s_.issued.end()) {
      return fail(ErrorCode::not_found, fmt::format("instruction {}", instruction_id));
    }
    if (it->status != IssuedStatus::queued) {
      return fail(ErrorCode::transition_refused,
                  fmt::format("instruction {}: already answered", instruction_id));
    }
    it->status = released ? IssuedStatus::released : IssuedStatus::answered;
    it->report = std::string(report);
    it->answered = at;
    return *it;
  }

 private:
  MemoryState& s_;
};

class MemoryNotices final : public NoticeStore {
 public:
  explicit MemoryNotices(MemoryState& s) : s_(s) {}

  Result<std::uint64_t> add(const StoredNotice& n) override {
    Lock lock(s_.mu);
    StoredNotice copy = n;
    copy.seq = ++s_.notice_seq;
    s_.notices.emplace(copy.seq, std::move(copy));
    return s_.notice_seq;
  }

  Result<std::size_t> remove(std::span<const std::uint64_t> seqs) override {
    Lock lock(s_.mu);
    std::size_t removed = 0;
    for (const std::uint64_t seq : seqs) removed += s_.notices.erase(seq);
    return removed;
  }

  Result<std::vector<StoredNotice>> pending(std::size_t limit) override {
    Lock lock(s_.mu);
    std::vector<StoredNotice> out;
    for (auto it = s_.notices.begin(); it != s_.notices.end() && out.size() < limit; ++it) {
      out.push_back(it->second);
    }
    return out;
  }

  Result<std::uint64_t> count() override {
    Lock lock(s_.mu);
    return static_cast<std::uint64_t>(s_.notices.size());
  }

 private:
  MemoryState& s_;
};

class MemoryDatabase final : public Database {
 public:
  PcidStore& pcids() override { return pcids_; }
  SqnStore& sqns() override { return sqns_; }
  RegistrationStore& registrations() override { return registrations_; }
  PackageStore& packages() override { return packages_; }
  SessionStore& sessions() override { return sessions_; }
  AuditStore& audit() override { return audit_; }
  AttestationRequestStore& attestation_requests() override { return attestations_; }
  SubscriberStore& subscribers() override { return subscribers_; }
  ChallengeStore& challenges() override { return challenges_; }
  ReferenceStore& references() override { return references_; }
  InstructionStore& instructions() override { return instructions_; }
  IssuedInstructionStore& issued_instructions() override { return issued_; }
  NoticeStore& notices() override { return notices_; }
  int schema_version() override { return 1; }
  std::string_view backend() const override { return "memory"; }

 private:
  MemoryState state_;
  MemoryPcids pcids_{state_};
  MemorySqns sqns_{state_};
  MemoryRegistrations registrations_{state_};
  MemoryPackages packages_{state_};
  MemorySessions sessions_{state_};
  MemoryAudit audit_{state_};
  MemoryAttestations attestations_{state_};
  MemorySubscribers subscribers_{state_};
  MemoryChallenges challenges_{state_};
  MemoryReferences references_{state_};
  MemoryInstructions instructions_{state_};
  MemoryIssuedInstructions issued_{state_};
  MemoryNotices notices_{state_};
};

}  // namespace

std::unique_ptr<Database> make_memory_database() { return std::make_unique<MemoryDatabase>(); }

}  // namespace mcim::store
