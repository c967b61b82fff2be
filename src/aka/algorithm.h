// The AKA algorithm interface (TS 33.102 §6.3.2 functions f1, f1*, f2-f5, f5*) as the AuC, the
// USIM and the vector builder see it: 64-bit MACs, 128-bit CK and IK, a RES of the algorithm's
// length. MILENAGE (milenage.h) and TUAK (tuak.h) implement it for one subscriber's K and
// OPc/TOPc, with any key schedule cached. Implementations are immutable after construction and
// therefore safe to share between threads; they wipe their key material when destroyed.
#pragma once

#include "aka/types.h"

namespace mcim::aka {

// MAC-A and the f2-f5 outputs together: what one authentication vector needs.
struct VectorOutputs {
  Mac mac_a;
  F2345 f2345;
};

class Algorithm {
 public:
  virtual ~Algorithm() = default;
  virtual Mac f1(const Rand& rand, const Sqn& sqn, const Amf& amf) const = 0;      // MAC-A
  virtual Mac f1star(const Rand& rand, const Sqn& sqn, const Amf& amf) const = 0;  // MAC-S
  virtual F2345 f2345(const Rand& rand) const = 0;
  virtual Ak f5star(const Rand& rand) const = 0;
  // False when the outputs do not fit TS 33.102's AUTN and vector (TUAK with a MAC longer than
  // 64 bits or CK/IK of 256 bits); vector code must not be given such an instance.
  virtual bool usable_for_av() const { return true; }
  // Implementations may fuse the shared work (MILENAGE computes TEMP once).
  virtual VectorOutputs vector_outputs(const Rand& rand, const Sqn& sqn, const Amf& amf) const {
    return {f1(rand, sqn, amf), f2345(rand)};
  }
};

}  // namespace mcim::aka
