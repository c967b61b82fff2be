// Fixed-size AKA values of TS 33.102 §6.3 and the variable-length RES, as types: a SQN cannot be
// passed where a RAND is expected and a 15-byte K cannot exist. Pure, no I/O.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/bytes.h"

namespace mcim::aka {

using Rand = Bytes<16>;
using Sqn = Bytes<6>;
using Amf = Bytes<2>;
using Ak = Bytes<6>;
using Mac = Bytes<8>;  // MAC-A and MAC-S: 64 bits in AUTN/AUTS
using Autn = Bytes<16>;
using Auts = Bytes<14>;
using Ck = Bytes<16>;
using Ik = Bytes<16>;
using K128 = Bytes<16>;
using Op = Bytes<16>;
using Opc = Bytes<16>;

// A value of up to 32 bytes whose length is a parameter (TUAK's RES, MAC, CK, IK; MILENAGE's
// 64-bit RES). Equality compares length and content; use constant_time_equal for checks.
struct VarBytes {
  Bytes<32> bytes{};
  std::uint8_t size = 0;

  ByteView view() const { return ByteView(bytes.data(), size); }
  static VarBytes of(ByteView v) {
    VarBytes r;
    r.size = static_cast<std::uint8_t>(std::min<std::size_t>(v.size(), r.bytes.size()));
    std::copy_n(v.begin(), r.size, r.bytes.begin());
    return r;
  }
  bool operator==(const VarBytes& o) const {
    return size == o.size && std::equal(bytes.begin(), bytes.begin() + size, o.bytes.begin());
  }
};

using Res = VarBytes;

// Outputs of f2, f3, f4, f5 for one RAND.
struct F2345 {
  Res res;
  Ck ck;
  Ik ik;
  Ak ak;
};

}  // namespace mcim::aka
