// Key derivations over an authentication vector: the generic KDF of TS 33.220 Annex B.2
// (HMAC-SHA-256 over FC || P0 || L0 || ...), KASME (TS 33.401 A.2), CK'/IK' for EAP-AKA'
// (TS 33.402 A.2, RFC 5448 §3.3), XRES* and KAUSF of 5G AKA (TS 33.501 A.4, A.2), and the GSM
// conversion functions c2/c3 (TS 33.102 §6.8.1.2). Pure; wipes its intermediate key material.
#pragma once

#include <string_view>

#include "aka/types.h"
#include "common/error.h"

namespace mcim::aka {

using Key256 = Bytes<32>;
using PlmnId = Bytes<3>;  // TS 24.301 §9.9.3.32 encoding of MCC+MNC

// HMAC-SHA-256 (the KDF's primitive, also PRF' of EAP-AKA', aka/eap_keys.h). Aborts only when
// OpenSSL offers no HMAC-SHA-256 at all.
void hmac_sha256(ByteView key, ByteView data, Key256& out);

// One parameter P_i of the KDF input string; its length L_i is written as two octets.
Key256 kdf(ByteView key, std::uint8_t fc, std::initializer_list<ByteView> params);

// "MCCMNC" with a 2- or 3-digit MNC (5 or 6 decimal digits) -> PLMN ID octets.
Result<PlmnId> parse_plmn(std::string_view mccmnc);

Key256 derive_kasme(const Ck& ck, const Ik& ik, const PlmnId& plmn, const Bytes<6>& sqn_xor_ak);

struct CkIkPrime {
  Ck ck_prime;
  Ik ik_prime;
};
CkIkPrime derive_ck_ik_prime(const Ck& ck, const Ik& ik, std::string_view access_network_name,
                             const Bytes<6>& sqn_xor_ak);

// XRES* (or RES*): the 128 least significant bits of the KDF output.
Bytes<16> derive_xres_star(const Ck& ck, const Ik& ik, std::string_view serving_network_name,
                           const Rand& rand, const Res& xres);
Key256 derive_kausf(const Ck& ck, const Ik& ik, std::string_view serving_network_name,
                    const Bytes<6>& sqn_xor_ak);

// GSM conversion: c2 folds RES (padded to 128 bits) into 32-bit SRES; c3 folds CK and IK into
// the 64-bit Kc.
Bytes<4> c2_sres(const Res& res);
Bytes<8> c3_kc(const Ck& ck, const Ik& ik);

// The AMF "separation bit" (bit 0, TS 33.401 §6.1.1 and TS 33.402 §6.2): 1 for vectors usable in
// E-UTRAN and for EAP-AKA', 0 otherwise.
constexpr Amf with_separation_bit(Amf amf, bool set) {
  amf[0] = static_cast<std::uint8_t>(set ? (amf[0] | 0x80) : (amf[0] & 0x7f));
  return amf;
}
constexpr bool separation_bit(const Amf& amf) { return (amf[0] & 0x80) != 0; }

}  // namespace mcim::aka
