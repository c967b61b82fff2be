#include "aka/kdf.h"

#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/secure.h"

namespace mcim::aka {
namespace {

ByteView text(std::string_view s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

Bytes<32> ck_ik(const Ck& ck, const Ik& ik) {
  Bytes<32> key;
  std::memcpy(key.data(), ck.data(), 16);
  std::memcpy(key.data() + 16, ik.data(), 16);
  return key;
}

// HMAC-SHA-256 with the implementation fetched once per thread: OpenSSL 3's one-shot HMAC()
// fetches it on every call, which costs more than a whole MILENAGE vector. Each call works on
// a duplicate of a keyless template, so the keyed state is freed (and cleansed) right after.
class HmacSha256 {
 public:
  HmacSha256() {
    mac_ = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    template_ = mac_ != nullptr ? EVP_MAC_CTX_new(mac_) : nullptr;
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                                 OSSL_PARAM_construct_end()};
    if (template_ != nullptr && EVP_MAC_CTX_set_params(template_, params) != 1) {
      EVP_MAC_CTX_free(template_);
      template_ = nullptr;
    }
  }
  ~HmacSha256() {
    EVP_MAC_CTX_free(template_);
    EVP_MAC_free(mac_);
  }
  HmacSha256(const HmacSha256&) = delete;
  HmacSha256& operator=(const HmacSha256&) = delete;

  bool compute(ByteView key, ByteView data, Key256& out) const {
    if (template_ == nullptr) return false;
    EVP_MAC_CTX* ctx = EVP_MAC_CTX_dup(template_);
    std::size_t len = 0;
    const bool ok = ctx != nullptr && EVP_MAC_init(ctx, key.data(), key.size(), nullptr) == 1 &&
                    EVP_MAC_update(ctx, data.data(), data.size()) == 1 &&
                    EVP_MAC_final(ctx, out.data(), &len, out.size()) == 1 && len == out.size();
    EVP_MAC_CTX_free(ctx);
    return ok;
  }

 private:
  EVP_MAC* mac_ = nullptr;
  EVP_MAC_CTX* template_ = nullptr;
};

}  // namespace

void hmac_sha256(ByteView key, ByteView data, Key256& out) {
  thread_local const HmacSha256 hmac;
  if (hmac.compute(key, data, out)) return;
  unsigned int len = 0;  // the provider path failed: the one-shot API, or nothing
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(),
           out.data(), &len) == nullptr) {
    std::fputs("mcim: HMAC-SHA-256 is unavailable in this OpenSSL; refusing to continue\n",
               stderr);
    std::abort();
  }
}

Key256 kdf(ByteView key, std::uint8_t fc, std::initializer_list<ByteView> params) {
  ByteVec s;
  s.push_back(fc);
  for (ByteView p : params) {
    s.insert(s.end(), p.begin(), p.end());
    s.push_back(static_cast<std::uint8_t>(p.size() >> 8));
    s.push_back(static_cast<std::uint8_t>(p.size()));
  }
  Key256 out{};
  hmac_sha256(key, s, out);
  secure_wipe(s);
  return out;
}

Result<PlmnId> parse_plmn(std::string_view mccmnc) {
  const bool digits = std::all_of(mccmnc.begin(), mccmnc.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c));
  });
  if (!digits || (mccmnc.size() != 5 && mccmnc.size() != 6)) {
    return fail(ErrorCode::invalid_argument,
                "plmn: expected MCC and MNC as 5 or 6 decimal digits (e.g. 00101 or 310410)");
  }
  auto d = [&](std::size_t i) { return static_cast<std::uint8_t>(mccmnc[i] - '0'); };
  const std::uint8_t mnc3 = mccmnc.size() == 6 ? d(5) : 0x0f;
  return PlmnId{static_cast<std::uint8_t>((d(1) << 4) | d(0)),
                static_cast<std::uint8_t>((mnc3 << 4) | d(2)),
                static_cast<std::uint8_t>((d(4) << 4) | d(3))};
}

Key256 derive_kasme(const Ck& ck, const Ik& ik, const PlmnId& plmn, const Bytes<6>& sqn_xor_ak) {
  Bytes<32> key = ck_ik(ck, ik);
  Key256 out = kdf(key, 0x10, {plmn, sqn_xor_ak});
  secure_wipe(key);
  return out;
}

CkIkPrime derive_ck_ik_prime(const Ck& ck, const Ik& ik, std::string_view access_network_name,
                             const Bytes<6>& sqn_xor_ak) {
  Bytes<32> key = ck_ik(ck, ik);
  Key256 out = kdf(key, 0x20, {text(access_network_name), sqn_xor_ak});
  CkIkPrime r{take<16>(ByteView(out)), take<16>(ByteView(out), 16)};
  secure_wipe(key);
  secure_wipe(out);
  return r;
}

Bytes<16> derive_xres_star(const Ck& ck, const Ik& ik, std::string_view serving_network_name,
                           const Rand& rand, const Res& xres) {
  Bytes<32> key = ck_ik(ck, ik);
  Key256 out = kdf(key, 0x6b, {text(serving_network_name), rand, xres.view()});
  secure_wipe(key);
  return take<16>(ByteView(out), 16);
}

Key256 derive_kausf(const Ck& ck, const Ik& ik, std::string_view serving_network_name,
                    const Bytes<6>& sqn_xor_ak) {
  Bytes<32> key = ck_ik(ck, ik);
  Key256 out = kdf(key, 0x6a, {text(serving_network_name), sqn_xor_ak});
  secure_wipe(key);
  return out;
}

Bytes<4> c2_sres(const Res& res) {
  Bytes<4> sres{};
  // XRES is zero-padded to 128 bits and its four 32-bit words are XORed together.
  for (std::size_t i = 0; i < res.size && i < 16; ++i) sres[i % 4] ^= res.bytes[i];
  return sres;
}

Bytes<8> c3_kc(const Ck& ck, const Ik& ik) {
  Bytes<8> kc{};
  for (std::size_t i = 0; i < 8; ++i) {
    kc[i] = static_cast<std::uint8_t>(ck[i] ^ ck[i + 8] ^ ik[i] ^ ik[i + 8]);
  }
  return kc;
}

}  // namespace mcim::aka
