#include "aka/eap_keys.h"

#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mcim::aka {
namespace {

constexpr std::size_t kFipsRound = 40;  // x_j = w_0 | w_1, two SHA-1 outputs
constexpr std::size_t kAkaKeyBlock = 16 + 16 + 64 + 64;
constexpr std::size_t kAkaPrimeKeyBlock = 16 + 32 + 32 + 64 + 64;

constexpr std::uint32_t rotl(std::uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

// The SHA-1 compression function on one block with the feed-forward, and no padding or length:
// the G(t, c) of FIPS 186-2 Appendix 3.3. OpenSSL's SHA1_Transform would do, but it is deprecated
// in OpenSSL 3 (and this build treats warnings as errors).
void sha1_compress(std::uint32_t h[5], const Bytes<64>& block) {
  std::uint32_t w[80];
  for (int i = 0; i < 16; ++i) {
    w[i] = (std::uint32_t{block[4 * i]} << 24) | (std::uint32_t{block[4 * i + 1]} << 16) |
           (std::uint32_t{block[4 * i + 2]} << 8) | std::uint32_t{block[4 * i + 3]};
  }
  for (int i = 16; i < 80; ++i) w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (int i = 0; i < 80; ++i) {
    std::uint32_t f = 0, k = 0;
    if (i < 20) {
      f = (b & c) | (~b & d), k = 0x5a827999;
    } else if (i < 40) {
      f = b ^ c ^ d, k = 0x6ed9eba1;
    } else if (i < 60) {
      f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdc;
    } else {
      f = b ^ c ^ d, k = 0xca62c1d6;
    }
    const std::uint32_t t = rotl(a, 5) + f + e + k + w[i];
    e = d, d = c, c = rotl(b, 30), b = a, a = t;
  }
  h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
  secure_wipe(w, sizeof w);
}

// w = G(t, XVAL): XVAL (b = 160 bits) zero-padded to a 512-bit block, t the SHA-1 initial value.
void fips_g(const Bytes<20>& xval, std::uint8_t* out) {
  std::uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
  Bytes<64> block{};
  std::memcpy(block.data(), xval.data(), xval.size());
  sha1_compress(h, block);
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<std::uint8_t>(h[i] >> (24 - 8 * j));
  }
  secure_wipe(block);
  secure_wipe(h, sizeof h);
}

// XKEY = (1 + XKEY + w) mod 2^160, big-endian.
void fips_advance(Bytes<20>& xkey, const std::uint8_t* w) {
  unsigned carry = 1;
  for (std::size_t i = xkey.size(); i-- > 0;) {
    carry += static_cast<unsigned>(xkey[i]) + w[i];
    xkey[i] = static_cast<std::uint8_t>(carry);
    carry >>= 8;
  }
}

Bytes<20> sha1(std::initializer_list<ByteView> parts) {
  Bytes<20> out{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_sha1(), nullptr) == 1;
  for (ByteView p : parts) ok = ok && EVP_DigestUpdate(ctx, p.data(), p.size()) == 1;
  unsigned int len = 0;
  ok = ok && EVP_DigestFinal_ex(ctx, out.data(), &len) == 1 && len == out.size();
  EVP_MD_CTX_free(ctx);
  if (!ok) {
    // No SHA-1 in this OpenSSL (a FIPS-only configuration): no EAP-AKA key can exist.
    std::fputs("mcim: SHA-1 is unavailable in this OpenSSL; refusing to continue\n", stderr);
    std::abort();
  }
  return out;
}

// PRF' (RFC 9048 §3.4): T1 = HMAC-SHA-256(K, S | 0x01), Tn = HMAC-SHA-256(K, Tn-1 | S | n).
// `out_len` is at most 255 blocks by construction (one octet counter); callers ask for 208.
SecretBytes prf_prime(ByteView key, ByteView s, std::size_t out_len) {
  ByteVec out;
  out.reserve(out_len + 32);
  ByteVec input;
  input.reserve(32 + s.size() + 1);
  Key256 t{};
  for (std::uint8_t n = 1; out.size() < out_len; ++n) {
    input.clear();
    if (n > 1) input.insert(input.end(), t.begin(), t.end());
    input.insert(input.end(), s.begin(), s.end());
    input.push_back(n);
    hmac_sha256(key, input, t);
    out.insert(out.end(), t.begin(), t.end());
  }
  secure_wipe(input);
  secure_wipe(t);
  // Shrinking keeps the buffer: the tail past out_len is wiped with the rest on destruction.
  secure_wipe(out.data() + out_len, out.size() - out_len);
  out.resize(out_len);
  return SecretBytes(std::move(out));
}

template <std::size_t N>
void take_into(Secret<N>& dst, ByteView block, std::size_t& offset) {
  std::memcpy(dst.mut().data(), block.data() + offset, N);
  offset += N;
}

}  // namespace

SecretBytes fips186_2_prf(const Bytes<20>& xkey_in, std::size_t out_len) {
  const std::size_t rounds = (out_len + kFipsRound - 1) / kFipsRound;
  ByteVec out(rounds * kFipsRound);
  Bytes<20> xkey = xkey_in;
  for (std::size_t j = 0; j < rounds; ++j) {
    for (std::size_t i = 0; i < 2; ++i) {  // XSEED_j = 0, so XVAL = XKEY
      std::uint8_t* w = out.data() + j * kFipsRound + i * 20;
      fips_g(xkey, w);
      fips_advance(xkey, w);
    }
  }
  secure_wipe(xkey);
  secure_wipe(out.data() + out_len, out.size() - out_len);
  out.resize(out_len);
  return SecretBytes(std::move(out));
}

EapAkaKeys derive_eap_aka_keys(std::string_view identity, const Ck& ck, const Ik& ik) {
  EapAkaKeys keys;
  keys.mk.mut() = sha1({bytes_of(identity), ik, ck});
  const SecretBytes block = fips186_2_prf(keys.mk.get(), kAkaKeyBlock);
  std::size_t at = 0;
  take_into(keys.k_encr, block.view(), at);
  take_into(keys.k_aut, block.view(), at);
  take_into(keys.msk, block.view(), at);
  take_into(keys.emsk, block.view(), at);
  return keys;
}

EapAkaPrimeKeys derive_eap_aka_prime_keys(std::string_view identity, const CkIkPrime& prime) {
  Bytes<32> key{};  // IK' | CK': IK' first (RFC 9048 §3.3)
  std::memcpy(key.data(), prime.ik_prime.data(), 16);
  std::memcpy(key.data() + 16, prime.ck_prime.data(), 16);
  constexpr std::string_view kLabel = "EAP-AKA'";
  ByteVec s(kLabel.begin(), kLabel.end());
  s.insert(s.end(), identity.begin(), identity.end());
  const SecretBytes block = prf_prime(key, s, kAkaPrimeKeyBlock);
  secure_wipe(key);
  EapAkaPrimeKeys keys;
  std::size_t at = 0;
  take_into(keys.k_encr, block.view(), at);
  take_into(keys.k_aut, block.view(), at);
  take_into(keys.k_re, block.view(), at);
  take_into(keys.msk, block.view(), at);
  take_into(keys.emsk, block.view(), at);
  return keys;
}

EapAkaPrimeKeys derive_eap_aka_prime_keys(std::string_view identity, const Ck& ck, const Ik& ik,
                                          std::string_view network_name,
                                          const Bytes<6>& sqn_xor_ak) {
  CkIkPrime prime = derive_ck_ik_prime(ck, ik, network_name, sqn_xor_ak);
  EapAkaPrimeKeys keys = derive_eap_aka_prime_keys(identity, prime);
  secure_wipe(prime.ck_prime);
  secure_wipe(prime.ik_prime);
  return keys;
}

}  // namespace mcim::aka
