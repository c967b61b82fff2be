// MILENAGE's vector path with every block kept in SSE registers: TEMP, then OUT1-OUT4 through
// one interleaved AES-NI pass. Same results as the portable code in milenage.cpp (the tests
// compare the two on every TS 35.207/35.208 set and on random constants).
#include <cstring>

#include "aka/aesni.h"
#include "aka/milenage.h"

namespace mcim::aka {
namespace {

MCIM_AESNI_TARGET inline __m128i load(const std::uint8_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

// rot(x, r) on a big-endian 128-bit value held in memory byte order.
MCIM_AESNI_TARGET inline __m128i rotate(__m128i x, const std::uint8_t* shuffle_hi,
                                        const std::uint8_t* shuffle_lo, unsigned bits) {
  const __m128i hi = _mm_shuffle_epi8(x, load(shuffle_hi));
  if (bits == 0) return hi;
  const __m128i lo = _mm_shuffle_epi8(x, load(shuffle_lo));
  // Byte-wise shifts built from 16-bit ones: shift, then drop what crossed into the neighbour.
  const __m128i up = _mm_and_si128(_mm_sll_epi16(hi, _mm_cvtsi32_si128(static_cast<int>(bits))),
                                   _mm_set1_epi8(static_cast<char>(0xff << bits)));
  const __m128i down =
      _mm_and_si128(_mm_srl_epi16(lo, _mm_cvtsi32_si128(static_cast<int>(8 - bits))),
                    _mm_set1_epi8(static_cast<char>(0xff >> (8 - bits))));
  return _mm_or_si128(up, down);
}

}  // namespace

// rot(x, r_i) xor c_i. Not a lambda: a lambda would lose the target attribute and with it the
// inlining of the SSE helpers.
MCIM_AESNI_TARGET inline __m128i Milenage::rot_c(__m128i x, std::size_t i) const {
  const RotationPlan& p = rotations_[i];
  return _mm_xor_si128(rotate(x, p.shuffle_hi.data(), p.shuffle_lo.data(), p.bits),
                       load(constants_.c[i].data()));
}

MCIM_AESNI_TARGET VectorOutputs Milenage::vector_outputs_aesni(const Rand& rand, const Sqn& sqn,
                                                               const Amf& amf) const {
  const std::uint8_t* schedule = aes_.aesni_schedule();
  const __m128i opc = load(opc_.data());
  __m128i temp = _mm_xor_si128(load(rand.data()), opc);
  detail::aesni_encrypt<1>(schedule, &temp);

  alignas(16) std::uint8_t in1[16];
  std::memcpy(in1, sqn.data(), 6);
  std::memcpy(in1 + 6, amf.data(), 2);
  std::memcpy(in1 + 8, in1, 8);

  const __m128i temp_opc = _mm_xor_si128(temp, opc);
  __m128i s[4] = {_mm_xor_si128(temp, rot_c(_mm_xor_si128(load(in1), opc), 0)), rot_c(temp_opc, 1),
                  rot_c(temp_opc, 2), rot_c(temp_opc, 3)};
  detail::aesni_encrypt<4>(schedule, s);

  alignas(16) std::uint8_t out[4][16];
  for (int i = 0; i < 4; ++i) {
    _mm_store_si128(reinterpret_cast<__m128i*>(out[i]), _mm_xor_si128(s[i], opc));
  }
  VectorOutputs v;
  std::memcpy(v.mac_a.data(), out[0], 8);
  std::memcpy(v.f2345.ak.data(), out[1], 6);
  std::memcpy(v.f2345.res.bytes.data(), out[1] + 8, 8);
  v.f2345.res.size = 8;
  std::memcpy(v.f2345.ck.data(), out[2], 16);
  std::memcpy(v.f2345.ik.data(), out[3], 16);
  // CK and IK now live in the result; the stack copy is cleared (a plain store suffices here:
  // `out` is read above, so the compiler cannot drop the clearing of a live object's bytes).
  std::memset(out, 0, sizeof out);
  __asm__ __volatile__("" : : "r"(out) : "memory");
  return v;
}

}  // namespace mcim::aka
