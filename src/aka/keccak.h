// The Keccak-f[1600] permutation (FIPS 202 §3.3 with 24 rounds; TS 35.231 Annex C), the one
// primitive under TUAK (tuak.h). Lane i of the state is A[x][y] with i = x + 5*y; byte j of a
// 200-byte string maps to bits 8*(j%8).. of lane j/8 (little-endian lanes), as in FIPS 202.
// Pure, no I/O, no allocation.
#pragma once

#include <array>
#include <cstdint>

namespace mcim::aka {

using KeccakState = std::array<std::uint64_t, 25>;

// Applies the 24-round permutation in place.
void keccak_f1600(KeccakState& state);

}  // namespace mcim::aka
