#include "aka/keccak.h"

#include <bit>
#include <cstddef>

#include "common/secure.h"

namespace mcim::aka {
namespace {

constexpr std::size_t kRounds = 24;

// ι constants RC[ir] (FIPS 202 §3.2.5, precomputed from the rc() LFSR).
constexpr std::array<std::uint64_t, kRounds> kRoundConstants = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

// ρ offsets r[x][y], indexed x + 5*y (FIPS 202 Table 2).
constexpr std::array<int, 25> kRhoOffsets = {
    0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14,
};

constexpr std::size_t lane(std::size_t x, std::size_t y) { return x + 5 * y; }

// Round temporaries, kept in one place so that they can be wiped once: they are functions of a
// state that may hold K.
struct Scratch {
  std::array<std::uint64_t, 5> column{};
  KeccakState b{};
};

void theta(KeccakState& a, std::array<std::uint64_t, 5>& column) {
  for (std::size_t x = 0; x < 5; ++x) {
    column[x] = a[lane(x, 0)] ^ a[lane(x, 1)] ^ a[lane(x, 2)] ^ a[lane(x, 3)] ^ a[lane(x, 4)];
  }
  for (std::size_t x = 0; x < 5; ++x) {
    const std::uint64_t d = column[(x + 4) % 5] ^ std::rotl(column[(x + 1) % 5], 1);
    for (std::size_t y = 0; y < 5; ++y) a[lane(x, y)] ^= d;
  }
}

// ρ and π together: B[y][2x+3y] = rot(A[x][y], r[x][y]).
void rho_pi(const KeccakState& a, KeccakState& b) {
  for (std::size_t x = 0; x < 5; ++x) {
    for (std::size_t y = 0; y < 5; ++y) {
      b[lane(y, (2 * x + 3 * y) % 5)] = std::rotl(a[lane(x, y)], kRhoOffsets[lane(x, y)]);
    }
  }
}

void chi(const KeccakState& b, KeccakState& a) {
  for (std::size_t y = 0; y < 5; ++y) {
    for (std::size_t x = 0; x < 5; ++x) {
      a[lane(x, y)] = b[lane(x, y)] ^ (~b[lane((x + 1) % 5, y)] & b[lane((x + 2) % 5, y)]);
    }
  }
}

}  // namespace

void keccak_f1600(KeccakState& state) {
  Scratch scratch;
  for (std::size_t round = 0; round < kRounds; ++round) {
    theta(state, scratch.column);
    rho_pi(state, scratch.b);
    chi(scratch.b, state);
    state[0] ^= kRoundConstants[round];
  }
  secure_wipe(&scratch, sizeof scratch);
}

}  // namespace mcim::aka
