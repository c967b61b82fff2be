// Internal: AES-128 rounds on SSE registers with AES-NI, shared by Aes128 and the MILENAGE
// fast path so that MILENAGE's blocks never leave the registers. Only call these after
// Aes128::cpu_has_aesni() returned true; every function carries the target attribute.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#define MCIM_AESNI_TARGET __attribute__((target("aes,ssse3,sse2")))

namespace mcim::aka::detail {

// Encrypts N states in place with the 11 round keys at `schedule`, rounds interleaved so the AES
// unit's pipeline stays full.
template <std::size_t N>
MCIM_AESNI_TARGET inline void aesni_encrypt(const std::uint8_t* schedule, __m128i* s) {
  const __m128i* rk = reinterpret_cast<const __m128i*>(schedule);
  // Fully unrolled, so that the N states stay in registers (at -O2 GCC keeps the loops and
  // spills the states to the stack every round, which halves the throughput).
  const __m128i k0 = _mm_load_si128(rk);
#pragma GCC unroll 4
  for (std::size_t b = 0; b < N; ++b) s[b] = _mm_xor_si128(s[b], k0);
#pragma GCC unroll 9
  for (int r = 1; r < 10; ++r) {
    const __m128i k = _mm_load_si128(rk + r);
#pragma GCC unroll 4
    for (std::size_t b = 0; b < N; ++b) s[b] = _mm_aesenc_si128(s[b], k);
  }
  const __m128i k10 = _mm_load_si128(rk + 10);
#pragma GCC unroll 4
  for (std::size_t b = 0; b < N; ++b) s[b] = _mm_aesenclast_si128(s[b], k10);
}

}  // namespace mcim::aka::detail
