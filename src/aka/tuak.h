// TUAK, the second example AKA algorithm set (TS 35.231 §6: TOPc in §6.1, f1 §6.2, f1* §6.3,
// f2-f5 §6.4, f5* §6.5), built on Keccak-f[1600] (keccak.h, TS 35.231 Annex C). Owns one
// subscriber's K (128 or 256 bits) and TOPc plus the operator's output lengths and Keccak
// iteration count (TS 35.231 §5.1, §7.2). Pure, no I/O; immutable after create(), so a Tuak
// can be shared between threads. Checked against every test set of TS 35.233.
#pragma once

#include <cstddef>

#include "aka/algorithm.h"
#include "aka/types.h"
#include "common/bytes.h"
#include "common/error.h"

namespace mcim::aka {

// The operator-chosen lengths, in bits, and the number of Keccak-f applications per function.
// The defaults are the only setting that fits the TS 33.102 authentication vector unchanged.
struct TuakParams {
  std::size_t mac_bits = 64;       // 64, 128 or 256
  std::size_t res_bits = 64;       // 32, 64, 128 or 256
  std::size_t ck_bits = 128;       // 128 or 256
  std::size_t ik_bits = 128;       // 128 or 256
  unsigned keccak_iterations = 1;  // >= 1
};

// The output lengths enter the Keccak input (the INSTANCE byte), so a 128-bit MAC is not an
// extension of the 64-bit one, and RES and AK change with the CK/IK lengths: every side of the
// AKA run must use the same TuakParams.
//
// Algorithm interface (f1, f1star, f2345, f5star): it carries a 64-bit MAC and 128-bit CK/IK
// (TS 33.102 §6.3). Those methods compute with the configured params and return the full RES
// and AK, the first 8 bytes of MAC-A/MAC-S and the first 16 bytes of CK/IK. They agree with the
// AKA peer only when usable_for_av() is true; code that builds or checks vectors must refuse a
// Tuak for which it is false rather than rely on the truncation.
class Tuak final : public Algorithm {
 public:
  // k: 16 or 32 bytes. Fails with invalid_argument naming the bad parameter.
  static Result<Tuak> create(ByteView k, const Bytes<32>& topc, TuakParams params = {});

  // TOPc from TOP and K (TS 35.231 §6.1); the iteration count must match the params later used.
  static Result<Bytes<32>> compute_topc(ByteView k, const Bytes<32>& top,
                                        unsigned keccak_iterations = 1);

  Tuak(const Tuak&) = default;
  Tuak& operator=(const Tuak&) = default;
  ~Tuak() override;

  const TuakParams& params() const { return params_; }

  // True when mac_bits == 64 and ck_bits == ik_bits == 128 (any res_bits).
  bool usable_for_av() const override;

  // Full-width outputs, lengths per params().
  VarBytes f1_full(const Rand& rand, const Sqn& sqn, const Amf& amf) const;      // MAC-A
  VarBytes f1star_full(const Rand& rand, const Sqn& sqn, const Amf& amf) const;  // MAC-S
  struct Outputs {
    VarBytes res, ck, ik;
    Ak ak;
  };
  Outputs f2345_full(const Rand& rand) const;

  Mac f1(const Rand& rand, const Sqn& sqn, const Amf& amf) const override;
  Mac f1star(const Rand& rand, const Sqn& sqn, const Amf& amf) const override;
  F2345 f2345(const Rand& rand) const override;
  Ak f5star(const Rand& rand) const override;

 private:
  Tuak(ByteView k, const Bytes<32>& topc, const TuakParams& params);

  ByteView key() const { return ByteView(k_.data(), k_size_); }

  Bytes<32> k_{};  // the first k_size_ bytes are K
  std::size_t k_size_ = 0;
  Bytes<32> topc_{};
  TuakParams params_;
};

}  // namespace mcim::aka
