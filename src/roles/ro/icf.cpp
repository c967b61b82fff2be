#include "roles/ro/icf.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "aka/milenage.h"
#include "aka/sqn.h"
#include "common/hex.h"
#include "pki/openssl.h"
#include "pki/package.h"
#include "roles/ro/audit.h"

namespace mcim::ro {
namespace {

// A session id is the device's bearer token at the RO: the audit trail names a session by the
// first 8 bytes of its SHA-256 instead, enough to match open and close records.
std::string session_ref(std::string_view session_id) {
  const auto digest = pki::sha256(
      ByteView(reinterpret_cast<const std::uint8_t*>(session_id.data()), session_id.size()));
  return "session-ref " + to_hex(ByteView(digest.data(), 8));
}

using detail::audited;
using detail::audited_change;
using detail::AuditEntry;

constexpr std::string_view kService = "icf";

bool valid_pcid(std::string_view s) {
  return s.size() >= 6 && s.size() <= 15 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

aka::SqnPolicy policy_of(const store::PcidSubscription& sub) {
  aka::SqnPolicy p;
  p.ind_bits = sub.ind_bits;
  return p;
}

std::string time_text(store::Time t) { return fmt::format("{}", t.time_since_epoch().count()); }

Result<void> check_count(unsigned count) {
  if (count < 1 || count > kMaxVectorsPerRequest) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("count: must be 1..{}, got {}", kMaxVectorsPerRequest, count));
  }
  return {};
}

}  // namespace

Icf::Icf(store::PcidStore& pcids, store::SqnStore& sqns, store::SessionStore& sessions,
         store::AuditStore& audit, const Clock& clock, RandomSource& random, IcfConfig config)
    : pcids_(pcids),
      sqns_(sqns),
      sessions_(sessions),
      audit_(audit),
      clock_(clock),
      random_(random),
      config_(config) {}

Icf::Icf(store::Database& db, const Clock& clock, RandomSource& random, IcfConfig config)
    : Icf(db.pcids(), db.sqns(), db.sessions(), db.audit(), clock, random, config) {}

store::Time Icf::now() const { return detail::seconds_of(clock_.now()); }

// F7/F8: only an active PCID inside its activation window and its lifetime authenticates. The
// window ends are inclusive (as PcidStore::expire_dormant's "dormant_until < now"), the lifetime's
// end exclusive (as an MCIM document's not_after).
Result<store::PcidSubscription> Icf::usable(std::string_view pcid, store::Time now) {
  auto found = pcids_.find(pcid);
  if (!found) return std::unexpected(found.error());
  if (!*found) {
    return fail(ErrorCode::not_found, fmt::format("{} {}: unknown", config_.credential, pcid));
  }
  store::PcidSubscription& sub = **found;
  if (sub.status == store::PcidStatus::expired ||
      (sub.status == store::PcidStatus::dormant && sub.dormant_until < now)) {
    return fail(ErrorCode::pcid_expired,
                fmt::format("{} {}: expired while dormant", config_.credential, pcid));
  }
  if (now >= sub.not_after) {
    return fail(ErrorCode::pcid_expired,
                fmt::format("{} {}: past its lifetime", config_.credential, pcid));
  }
  if (sub.status == store::PcidStatus::dormant) {
    return fail(ErrorCode::credential_unusable,
                fmt::format("{} {}: {}", config_.credential, pcid, config_.inactive_reason));
  }
  if (sub.active_until < now) {
    return fail(ErrorCode::credential_unusable,
                fmt::format("{} {}: its activation window is over", config_.credential, pcid));
  }
  return std::move(sub);
}

// SEQ values s+1..s+count are ours alone (one atomic reserve); IND cycles with SEQ so that
// vectors used out of order, or by two VNOs at once, land in different USIM array slots.
Result<std::vector<aka::AuthVector>> Icf::make_vectors(const store::PcidSubscription& sub,
                                                       unsigned count) {
  const aka::SqnPolicy policy = policy_of(sub);
  auto first = sqns_.reserve(sub.pcid, count, policy.seq_max());
  if (!first) return std::unexpected(first.error());
  const aka::Milenage milenage(sub.k.get(), sub.opc.get());
  const std::uint64_t ind_mask = (std::uint64_t{1} << policy.ind_bits) - 1;
  std::vector<aka::AuthVector> out;
  out.reserve(count);
  for (std::uint64_t seq = *first + 1; seq <= *first + count; ++seq) {
    const auto sqn = aka::sqn_bytes(policy.join(seq, static_cast<unsigned>(seq & ind_mask)));
    out.push_back(aka::make_vector(milenage, random_.draw<16>(), sqn, config_.amf));
  }
  return out;
}

Result<std::vector<aka::AuthVector>> Icf::vectors(std::string_view pcid, unsigned count,
                                                  std::string_view vno) {
  const store::Time t = now();
  return audited_change(
      audit_, t,
      [&]() -> Result<std::vector<aka::AuthVector>> {
        if (auto c = check_count(count); !c) return std::unexpected(c.error());
        auto sub = usable(pcid, t);
        if (!sub) return std::unexpected(sub.error());
        return make_vectors(*sub, count);
      },
      [&](const auto&) {
        return AuditEntry{kService, "vectors", pcid, vno, fmt::format("count {}", count)};
      });
}

Result<std::vector<aka::AuthVector>> Icf::resynchronise(std::string_view pcid,
                                                        const aka::Rand& rand,
                                                        const aka::Auts& auts, unsigned count,
                                                        std::string_view vno) {
  const store::Time t = now();
  std::string detail;
  auto change = [&]() -> Result<std::vector<aka::AuthVector>> {
    if (auto c = check_count(count); !c) return std::unexpected(c.error());
    auto sub = usable(pcid, t);
    if (!sub) return std::unexpected(sub.error());
    const aka::Milenage milenage(sub->k.get(), sub->opc.get());
    auto sqn_ms = aka::recover_sqn_ms(milenage, rand, auts);
    if (!sqn_ms) {
      return fail(ErrorCode::mac_mismatch,
                  fmt::format("{} {}: AUTS: MAC-S does not verify", config_.credential, pcid));
    }
    const std::uint64_t seq_ms = policy_of(*sub).seq_of(aka::sqn_value(*sqn_ms));
    auto seq_he = sqns_.resynchronise(pcid, seq_ms);
    if (!seq_he) return std::unexpected(seq_he.error());
    detail = fmt::format("seq_ms {}, seq_he {}, count {}", seq_ms, *seq_he, count);
    return make_vectors(*sub, count);
  };
  return audited_change(audit_, t, change, [&](const auto&) {
    return AuditEntry{kService, "resynchronise", pcid, vno, detail};
  });
}

Result<store::Time> Icf::activate(std::string_view pcid, std::chrono::seconds window,
                                  std::string_view caller) {
  const store::Time t = now();
  auto change = [&]() -> Result<store::Time> {
    if (window < std::chrono::seconds(1) || window > config_.max_activation) {
      return fail(ErrorCode::invalid_argument,
                  fmt::format("window: must be 1..{} s", config_.max_activation.count()));
    }
    auto sub = usable(pcid, t);
    // Activating is what makes a dormant PCID or one past its window usable again.
    if (!sub && sub.error().code != ErrorCode::credential_unusable) {
      return std::unexpected(sub.error());
    }
    const store::Time until = t + window;
    if (auto a = pcids_.activate(pcid, until); !a) return std::unexpected(a.error());
    return until;
  };
  return audited_change(audit_, t, change, [&](const Result<store::Time>& r) {
    return AuditEntry{kService, "activate", pcid, caller, r ? "until " + time_text(*r) : ""};
  });
}

Result<std::uint64_t> Icf::expire_dormant() {
  const store::Time t = now();
  return audited_change(
      audit_, t, [&] { return pcids_.expire_dormant(t); },
      [](const Result<std::uint64_t>& r) {
        return AuditEntry{kService, "expire-dormant", "-", "icf",
                          r ? fmt::format("{} expired", *r) : ""};
      });
}

Result<void> Icf::validate_import(std::string_view batch,
                                  std::vector<store::PcidSubscription>& pcids, store::Time t) {
  if (!pki::valid_mcim_id(batch)) {
    return fail(ErrorCode::invalid_argument, "batch: must be [A-Za-z0-9._:-]{1,64}");
  }
  if (pcids.empty() || pcids.size() > config_.max_batch) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("pcids: must hold 1..{} subscriptions", config_.max_batch));
  }
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < pcids.size(); ++i) {
    store::PcidSubscription& p = pcids[i];
    if (p.dormant_until == store::Time{}) {
      p.dormant_until = std::min(t + config_.dormant_period, p.not_after);
    }
    std::string_view problem;
    if (!valid_pcid(p.pcid)) {
      problem = "pcid: must be 6-15 decimal digits";
    } else if (p.ind_bits > aka::SqnPolicy::kMaxIndBits) {
      problem = "ind_bits: must be 0..10";
    } else if (p.not_after <= t) {
      problem = "not_after: must be in the future";
    } else if (p.dormant_until > p.not_after) {
      problem = "dormant_until: after not_after";
    }
    if (!problem.empty()) {
      return fail(ErrorCode::invalid_argument, fmt::format("pcids[{}].{}", i, problem));
    }
    if (!seen.insert(p.pcid).second) {
      return fail(ErrorCode::already_exists, fmt::format("pcid {}: twice in the batch", p.pcid));
    }
    p.batch = std::string(batch);
    p.status = store::PcidStatus::dormant;
    p.active_until = store::Time{};
    p.expired_at = store::Time{};
  }
  return {};
}

Result<std::uint64_t> Icf::import_batch(std::string_view batch,
                                        std::vector<store::PcidSubscription> pcids,
                                        std::string_view supplier) {
  const store::Time t = now();
  std::uint64_t reallocated = 0;
  auto change = [&]() -> Result<std::uint64_t> {
    if (auto v = validate_import(batch, pcids, t); !v) return std::unexpected(v.error());
    auto a = pcids_.add_batch(pcids, store::PcidReuse{t, config_.quarantine});
    if (!a) return std::unexpected(a.error());
    reallocated = *a;
    return static_cast<std::uint64_t>(pcids.size());
  };
  return audited_change(audit_, t, change, [&](const Result<std::uint64_t>& r) {
    return AuditEntry{kService, "import-batch", batch, supplier,
                      r ? fmt::format("{} pcids, {} reallocated", *r, reallocated) : ""};
  });
}

Result<store::Session> Icf::open_session(std::string_view pcid, std::string_view vno) {
  const store::Time t = now();
  auto change = [&]() -> Result<store::Session> {
    auto sub = usable(pcid, t);
    if (!sub) return std::unexpected(sub.error());
    store::Session s;
    s.id = to_hex(random_.draw<16>());
    s.imsi = std::string(pcid);
    s.vno = std::string(vno);
    s.restricted = config_.restricted_sessions;
    s.created = t;
    s.expires = t + config_.session_lifetime;
    if (auto o = sessions_.open(s, t); !o) return std::unexpected(o.error());
    return s;
  };
  return audited_change(audit_, t, change, [&](const Result<store::Session>& r) {
    return AuditEntry{kService, "open-session", pcid, vno, r ? session_ref(r->id) : ""};
  });
}

Result<void> Icf::close_session(std::string_view session_id, std::string_view vno) {
  const store::Time t = now();
  std::string subject = "-";
  auto change = [&]() -> Result<void> {
    auto found = sessions_.find(session_id);
    if (!found) return std::unexpected(found.error());
    if (!*found) return fail(ErrorCode::not_found, "session: unknown");
    subject = (*found)->imsi;
    if ((*found)->vno != vno) {
      return fail(ErrorCode::access_denied, "session: held by another visited network");
    }
    return sessions_.close(session_id);
  };
  return audited_change(audit_, t, change, [&](const auto&) {
    return AuditEntry{kService, "close-session", subject, vno, session_ref(session_id)};
  });
}

}  // namespace mcim::ro
