#include "aka/aes128.h"

#include <cstring>

#include "aka/aesni.h"

// OpenSSL 3 deprecates the low-level AES API, but it is the only stateless, thread-safe,
// allocation-free portable block function it offers; EVP would need a context per call.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/aes.h>

#include "common/secure.h"

namespace mcim::aka {
namespace {

static_assert(sizeof(AES_KEY) <= 256, "schedule_ too small for AES_KEY");

#define MCIM_AESNI MCIM_AESNI_TARGET

MCIM_AESNI inline __m128i expand_step(__m128i key, __m128i assist) {
  assist = _mm_shuffle_epi32(assist, 0xff);
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  return _mm_xor_si128(key, assist);
}

MCIM_AESNI void aesni_expand(const std::uint8_t* key, std::uint8_t* schedule) {
  __m128i rk[11];
  rk[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key));
  // aeskeygenassist needs its round constant as an immediate, hence the unrolled steps.
  rk[1] = expand_step(rk[0], _mm_aeskeygenassist_si128(rk[0], 0x01));
  rk[2] = expand_step(rk[1], _mm_aeskeygenassist_si128(rk[1], 0x02));
  rk[3] = expand_step(rk[2], _mm_aeskeygenassist_si128(rk[2], 0x04));
  rk[4] = expand_step(rk[3], _mm_aeskeygenassist_si128(rk[3], 0x08));
  rk[5] = expand_step(rk[4], _mm_aeskeygenassist_si128(rk[4], 0x10));
  rk[6] = expand_step(rk[5], _mm_aeskeygenassist_si128(rk[5], 0x20));
  rk[7] = expand_step(rk[6], _mm_aeskeygenassist_si128(rk[6], 0x40));
  rk[8] = expand_step(rk[7], _mm_aeskeygenassist_si128(rk[7], 0x80));
  rk[9] = expand_step(rk[8], _mm_aeskeygenassist_si128(rk[8], 0x1b));
  rk[10] = expand_step(rk[9], _mm_aeskeygenassist_si128(rk[9], 0x36));
  for (int i = 0; i < 11; ++i) _mm_store_si128(reinterpret_cast<__m128i*>(schedule) + i, rk[i]);
  secure_wipe(rk, sizeof rk);
}

template <std::size_t N>
MCIM_AESNI inline void aesni_encrypt_n(const std::uint8_t* schedule, const Block* in, Block* out) {
  __m128i s[N];
  for (std::size_t b = 0; b < N; ++b) {
    s[b] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in[b].data()));
  }
  detail::aesni_encrypt<N>(schedule, s);
  for (std::size_t b = 0; b < N; ++b) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out[b].data()), s[b]);
  }
}

MCIM_AESNI void aesni_encrypt_blocks(const std::uint8_t* schedule, const Block* in, Block* out,
                                     std::size_t n) {
  while (n >= 4) {
    aesni_encrypt_n<4>(schedule, in, out);
    in += 4, out += 4, n -= 4;
  }
  switch (n) {
    case 3: aesni_encrypt_n<3>(schedule, in, out); break;
    case 2: aesni_encrypt_n<2>(schedule, in, out); break;
    case 1: aesni_encrypt_n<1>(schedule, in, out); break;
    default: break;
  }
}

}  // namespace

bool Aes128::cpu_has_aesni() {
  static const bool has = __builtin_cpu_supports("aes") && __builtin_cpu_supports("ssse3");
  return has;
}

Aes128::Aes128(const Bytes<16>& key, Backend backend) {
  aesni_ = backend == Backend::aesni || (backend == Backend::automatic && cpu_has_aesni());
  if (aesni_ && !cpu_has_aesni()) aesni_ = false;  // never execute an instruction the CPU lacks
  if (aesni_) {
    aesni_expand(key.data(), schedule_.data());
  } else {
    AES_set_encrypt_key(key.data(), 128, reinterpret_cast<AES_KEY*>(schedule_.data()));
  }
}

Aes128::~Aes128() { secure_wipe(schedule_.data(), schedule_.size()); }

Block Aes128::encrypt(const Block& in) const {
  Block out;
  encrypt_blocks(&in, &out, 1);
  return out;
}

void Aes128::encrypt_blocks(const Block* in, Block* out, std::size_t n) const {
  if (aesni_) {
    aesni_encrypt_blocks(schedule_.data(), in, out, n);
    return;
  }
  const auto* key = reinterpret_cast<const AES_KEY*>(schedule_.data());
  for (std::size_t i = 0; i < n; ++i) AES_encrypt(in[i].data(), out[i].data(), key);
}

}  // namespace mcim::aka
