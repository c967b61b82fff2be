#include "store/store.h"

#include "store/memory.h"
#include "store/postgres.h"
#include "store/sql_common.h"
#include "store/sqlite.h"

namespace mcim::store {

std::string_view to_string(PcidStatus s) {
  switch (s) {
    case PcidStatus::dormant: return "dormant";
    case PcidStatus::active: return "active";
    case PcidStatus::expired: return "expired";
  }
  return "expired";
}

Result<void> PcidStore::add_batch(const std::vector<PcidSubscription>& batch) {
  auto added = add_batch(batch, std::nullopt);
  if (!added) return std::unexpected(added.error());
  return {};
}

// A PCID is free for a new batch once its quarantine after expiry (by the sweep, or of its
// lifetime) is over; the live-session check is the store's own.
bool pcid_free(const PcidSubscription& p, const PcidReuse& reuse) {
  const bool swept = p.status == PcidStatus::expired && p.expired_at != Time{} &&
                     p.expired_at + reuse.quarantine <= reuse.now;
  return swept || p.not_after + reuse.quarantine <= reuse.now;
}

std::string_view to_string(PackageStatus s) {
  switch (s) {
    case PackageStatus::pending: return "pending";
    case PackageStatus::delivered: return "delivered";
    case PackageStatus::reported: return "reported";
  }
  return "reported";
}

std::string_view to_string(AttestationStatus s) {
  switch (s) {
    case AttestationStatus::pending: return "pending";
    case AttestationStatus::answered: return "answered";
  }
  return "answered";
}

std::string_view to_string(SubscriberStatus s) {
  switch (s) {
    case SubscriberStatus::registered: return "registered";
    case SubscriberStatus::validating: return "validating";
    case SubscriberStatus::provisioning: return "provisioning";
    case SubscriberStatus::active: return "active";
    case SubscriberStatus::refused: return "refused";
  }
  return "refused";
}

std::string_view to_string(InstructionStatus s) {
  switch (s) {
    case InstructionStatus::pending: return "pending";
    case InstructionStatus::delivered: return "delivered";
    case InstructionStatus::answered: return "answered";
  }
  return "answered";
}

std::string_view to_string(IssuedStatus s) {
  switch (s) {
    case IssuedStatus::queued: return "queued";
    case IssuedStatus::answered: return "answered";
    case IssuedStatus::released: return "released";
  }
  return "answered";
}

namespace sql {

std::optional<PcidStatus> parse_pcid_status(std::string_view s) {
  for (auto v : {PcidStatus::dormant, PcidStatus::active, PcidStatus::expired}) {
    if (to_string(v) == s) return v;
  }
  return std::nullopt;
}

std::optional<PackageStatus> parse_package_status(std::string_view s) {
  for (auto v : {PackageStatus::pending, PackageStatus::delivered, PackageStatus::reported}) {
    if (to_string(v) == s) return v;
  }
  return std::nullopt;
}

std::optional<AttestationStatus> parse_attestation_status(std::string_view s) {
  for (auto v : {AttestationStatus::pending, AttestationStatus::answered}) {
    if (to_string(v) == s) return v;
  }
  return std::nullopt;
}

std::optional<SubscriberStatus> parse_subscriber_status(std::string_view s) {
  for (auto v :
       {SubscriberStatus::registered, SubscriberStatus::validating, SubscriberStatus::provisioning,
        SubscriberStatus::active, SubscriberStatus::refused}) {
    if (to_string(v) == s) return v;
  }
  return std::nullopt;
}

std::optional<InstructionStatus> parse_instruction_status(std::string_view s) {
  for (auto v :
       {InstructionStatus::pending, InstructionStatus::delivered, InstructionStatus::answered}) {
    if (to_string(v) == s) return v;
  }
  return std::nullopt;
}

std::optional<IssuedStatus> parse_issued_status(std::string_view s) {
  for (auto v : {IssuedStatus::queued, IssuedStatus::answered, IssuedStatus::released}) {
    if (to_string(v) == s) return v;
  }
  return std::nullopt;
}

}  // namespace sql

Result<std::unique_ptr<Database>> open_database(std::string_view url) {
  // The URL may carry a password: errors name the scheme, never the URL.
  if (url.starts_with("sqlite:")) {
    const auto path = url.substr(7);
    if (path.empty()) return fail(ErrorCode::invalid_argument, "sqlite URL without a path");
    return open_sqlite(path);
  }
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) return open_postgres(url);
  if (url == "memory:") {
    auto db = make_memory_database();
    if (db == nullptr) return fail(ErrorCode::unsupported, "the memory store is not available");
    return db;
  }
  return fail(ErrorCode::invalid_argument,
              "unknown database URL scheme (expected sqlite:, postgresql://, postgres:// or "
              "memory:)");
}

}  // namespace mcim::store
