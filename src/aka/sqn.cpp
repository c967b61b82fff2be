#include "aka/sqn.h"

#include <fmt/format.h>

namespace mcim::aka {

std::uint64_t sqn_value(const Sqn& sqn) { return from_be(sqn); }
Sqn sqn_bytes(std::uint64_t value) { return to_be<6>(value & kSqnMax); }

Result<void> SqnPolicy::validate() const {
  if (ind_bits > kMaxIndBits) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("ind_bits: must be 0..{}, got {}", kMaxIndBits, ind_bits));
  }
  if (delta == 0) return fail(ErrorCode::invalid_argument, "delta: must be at least 1");
  return {};
}

HomeSqn::HomeSqn(SqnPolicy policy, std::uint64_t seq_he) : policy_(policy), seq_he_(seq_he) {}

Result<Sqn> HomeSqn::next(unsigned ind) {
  if (ind >> policy_.ind_bits != 0) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("ind: {} does not fit in {} bits", ind, policy_.ind_bits));
  }
  if (seq_he_ >= policy_.seq_max()) {
    return fail(ErrorCode::sqn_exhausted, "SEQ_HE reached the end of the 48-bit SQN space");
  }
  ++seq_he_;
  return sqn_bytes(policy_.join(seq_he_, ind));
}

bool HomeSqn::resynchronise(const Sqn& sqn_ms) {
  const std::uint64_t seq_ms = policy_.seq_of(sqn_value(sqn_ms));
  // The next vector carries SEQ_HE + 1; a USIM accepts it when it exceeds SEQ_MS by at most Δ.
  const bool in_range = seq_he_ >= seq_ms && seq_he_ + 1 - seq_ms <= policy_.delta;
  if (in_range) return false;
  seq_he_ = seq_ms;
  return true;
}

std::string_view to_string(SqnRefusal r) {
  switch (r) {
    case SqnRefusal::not_fresh: return "not_fresh";
    case SqnRefusal::jump_too_large: return "jump_too_large";
    case SqnRefusal::too_old: return "too_old";
  }
  return "not_fresh";
}

UsimSqn::UsimSqn(SqnPolicy policy)
    : policy_(policy), seq_array_(std::size_t{1} << policy.ind_bits, 0) {}

Result<UsimSqn> UsimSqn::restore(SqnPolicy policy, std::vector<std::uint64_t> seq_ms) {
  if (auto v = policy.validate(); !v) return std::unexpected(v.error());
  if (seq_ms.size() != (std::size_t{1} << policy.ind_bits)) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("seq_ms: expected {} entries for ind_bits {}, got {}",
                            std::size_t{1} << policy.ind_bits, policy.ind_bits, seq_ms.size()));
  }
  UsimSqn u(policy);
  for (std::size_t i = 0; i < seq_ms.size(); ++i) {
    if (seq_ms[i] > policy.seq_max()) {
      return fail(ErrorCode::invalid_argument, fmt::format("seq_ms[{}]: out of range", i));
    }
    if (seq_ms[i] > seq_ms[u.highest_ind_]) u.highest_ind_ = static_cast<unsigned>(i);
  }
  u.seq_array_ = std::move(seq_ms);
  return u;
}

std::optional<SqnRefusal> UsimSqn::check(const Sqn& sqn) const {
  const std::uint64_t value = sqn_value(sqn);
  const std::uint64_t seq = policy_.seq_of(value);
  const std::uint64_t highest = seq_ms();
  // C.2.1: no arbitrary jumps, which also keeps SEQ_MS far from SEQ max (wrap-around protection).
  if (seq > highest && seq - highest > policy_.delta) return SqnRefusal::jump_too_large;
  // C.2.2: optional limit on the age of an accepted SEQ relative to SEQ_MS.
  if (policy_.limit_l != 0 && highest >= seq && highest - seq >= policy_.limit_l) {
    return SqnRefusal::too_old;
  }
  if (seq <= seq_array_[policy_.ind_of(value)]) return SqnRefusal::not_fresh;
  return std::nullopt;
}

void UsimSqn::record(const Sqn& sqn) {
  const std::uint64_t value = sqn_value(sqn);
  const unsigned ind = policy_.ind_of(value);
  seq_array_[ind] = policy_.seq_of(value);
  if (seq_array_[ind] > seq_array_[highest_ind_]) highest_ind_ = ind;
}

Sqn UsimSqn::sqn_ms() const { return sqn_bytes(policy_.join(seq_ms(), highest_ind_)); }

}  // namespace mcim::aka
