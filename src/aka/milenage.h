// MILENAGE (3GPP TS 35.206) for one subscriber: f1, f1*, f2, f3, f4, f5, f5* with OPc (or OP,
// converted once) and the operator-configurable constants c1..c5 and rotations r1..r5 of
// TS 35.206 §4.1. The AES key schedule of K is expanded once at construction. Immutable and
// thread-safe after construction; wipes K's schedule and OPc when destroyed. Pure, no I/O.
#pragma once

#include <immintrin.h>

#include <array>

#include "aka/aes128.h"
#include "aka/algorithm.h"
#include "common/error.h"

namespace mcim::aka {

struct MilenageConstants {
  // c1..c5 (128 bits each) and r1..r5 (rotation in bits, 0..127); defaults of TS 35.206 §4.1.
  std::array<Block, 5> c = {Block{}, Block{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
                            Block{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2},
                            Block{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4},
                            Block{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8}};
  std::array<unsigned, 5> r = {64, 0, 32, 64, 96};

  // invalid_argument when an r is outside 0..127.
  Result<void> validate() const;
};

class Milenage final : public Algorithm {
 public:
  // r values are taken modulo 128; call MilenageConstants::validate() on untrusted input first.
  Milenage(const K128& k, const Opc& opc, const MilenageConstants& constants = {});
  static Milenage with_op(const K128& k, const Op& op, const MilenageConstants& constants = {});
  ~Milenage() override;
  Milenage(const Milenage&) = default;
  Milenage& operator=(const Milenage&) = default;

  // OPc = OP xor E_K(OP) (TS 35.206 §4.1).
  static Opc compute_opc(const K128& k, const Op& op);

  Mac f1(const Rand& rand, const Sqn& sqn, const Amf& amf) const override;
  Mac f1star(const Rand& rand, const Sqn& sqn, const Amf& amf) const override;
  F2345 f2345(const Rand& rand) const override;
  Ak f5star(const Rand& rand) const override;

  // OUT1..OUT4 in one pass over the AES pipeline: 5 block encryptions in all.
  VectorOutputs vector_outputs(const Rand& rand, const Sqn& sqn, const Amf& amf) const override;

 private:
  Block temp(const Rand& rand) const;
  Block out1(const Block& temp, const Sqn& sqn, const Amf& amf) const;
  Block out_input(const Block& temp, int index) const;  // rot(TEMP xor OPc, r) xor c
  void finish(Block& out) const;                        // out xor= OPc

  // rot(x, r) as two byte shuffles and a shift (TS 35.206 rotations need not be whole bytes).
  struct RotationPlan {
    Block shuffle_hi, shuffle_lo;  // byte i <- byte (i + r/8) % 16, and the next one
    unsigned bits;                 // r % 8
  };
  static RotationPlan plan_rotation(unsigned r);
  __m128i rot_c(__m128i x, std::size_t i) const;
  VectorOutputs vector_outputs_aesni(const Rand& rand, const Sqn& sqn, const Amf& amf) const;

  Aes128 aes_;
  Opc opc_;
  MilenageConstants constants_;
  std::array<RotationPlan, 5> rotations_;
};

}  // namespace mcim::aka
