// Sequence number management of TS 33.102 Annex C: SQN = SEQ || IND (IND the low `ind_bits`
// bits), the home environment's per-user counter SEQ_HE (C.3) and the USIM's array of highest
// accepted SEQ per IND with the Δ and L limits (C.2). Pure state machines: persistence is the
// caller's (the TRE writes the USIM state durably before it releases RES). Not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "aka/types.h"
#include "common/error.h"

namespace mcim::aka {

inline constexpr std::uint64_t kSqnMax = (std::uint64_t{1} << 48) - 1;

std::uint64_t sqn_value(const Sqn& sqn);
Sqn sqn_bytes(std::uint64_t value);  // the low 48 bits

struct SqnPolicy {
  unsigned ind_bits = 5;                         // C.1.2; a = 2^ind_bits array entries
  std::uint64_t delta = std::uint64_t{1} << 28;  // Δ of C.2.1: largest accepted jump of SEQ
  std::uint64_t limit_l = 0;                     // L of C.2.2: 0 = not applied

  static constexpr unsigned kMaxIndBits = 10;  // bounds the USIM array to 1024 entries
  Result<void> validate() const;
  std::uint64_t seq_max() const { return kSqnMax >> ind_bits; }
  std::uint64_t seq_of(std::uint64_t sqn) const { return sqn >> ind_bits; }
  unsigned ind_of(std::uint64_t sqn) const {
    return static_cast<unsigned>(sqn & ((std::uint64_t{1} << ind_bits) - 1));
  }
  std::uint64_t join(std::uint64_t seq, unsigned ind) const { return (seq << ind_bits) | ind; }
};

// The home environment's generator (C.3): one SEQ_HE per user, advanced by one per vector.
class HomeSqn {
 public:
  explicit HomeSqn(SqnPolicy policy, std::uint64_t seq_he = 0);

  // SQN = (SEQ_HE + 1) || ind, and SEQ_HE advances. sqn_exhausted when SEQ_HE is at its maximum
  // (the 48-bit space never wraps); invalid_argument when ind does not fit in ind_bits.
  Result<Sqn> next(unsigned ind);

  // After a verified AUTS (TS 33.102 §6.3.5): keep SEQ_HE if the next SQN it yields is
  // acceptable to a USIM whose highest accepted SQN is sqn_ms, otherwise reset SEQ_HE to SEQ_MS.
  // Returns true when SEQ_HE changed.
  bool resynchronise(const Sqn& sqn_ms);

  std::uint64_t seq_he() const { return seq_he_; }
  const SqnPolicy& policy() const { return policy_; }

 private:
  SqnPolicy policy_;
  std::uint64_t seq_he_;
};

// Why the USIM refused an SQN (each leads to a synchronisation failure with AUTS).
enum class SqnRefusal { not_fresh, jump_too_large, too_old };
std::string_view to_string(SqnRefusal r);

// The USIM's verification state (C.2): SEQ_MS(i) for i in 0..a-1.
class UsimSqn {
 public:
  explicit UsimSqn(SqnPolicy policy);
  // Restores a persisted array; invalid_argument when its size is not 2^ind_bits or an entry
  // exceeds the SEQ range.
  static Result<UsimSqn> restore(SqnPolicy policy, std::vector<std::uint64_t> seq_ms);

  // Freshness verdict without changing state: empty when acceptable.
  std::optional<SqnRefusal> check(const Sqn& sqn) const;
  // Records an SQN that check() accepted.
  void record(const Sqn& sqn);

  // SQN_MS: the highest accepted sequence number, SEQ_MS || its IND (what AUTS carries).
  Sqn sqn_ms() const;
  std::uint64_t seq_ms() const { return seq_array_[highest_ind_]; }
  std::span<const std::uint64_t> seq_array() const { return seq_array_; }
  const SqnPolicy& policy() const { return policy_; }

 private:
  SqnPolicy policy_;
  std::vector<std::uint64_t> seq_array_;
  unsigned highest_ind_ = 0;
};

}  // namespace mcim::aka
