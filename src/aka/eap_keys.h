// The EAP keys of a full authentication: EAP-AKA (RFC 4187 §7: MK = SHA-1(Identity|IK|CK)
// expanded by the FIPS 186-2 PRF of RFC 4186 Appendix B) and EAP-AKA' (RFC 9048 §3.3, formerly
// RFC 5448: MK = PRF'(IK'|CK', "EAP-AKA'"|Identity) with PRF' = the HMAC-SHA-256 iteration of
// RFC 9048 §3.4). Both ends derive them: the peer from the CK and IK its SIM returned, the server
// from the vector; the MSK is what the access network receives (as MS-MPPE keys over RADIUS).
// Pure, thread-safe; every key and intermediate lives in a wiped container. docs/eap.md.
#pragma once

#include <cstddef>
#include <string_view>

#include "aka/kdf.h"
#include "aka/types.h"
#include "common/secure.h"

namespace mcim::aka {

// FIPS 186-2 change notice 1 general-purpose random number generator with the SHA-1 based G
// function and XSEED_j = 0, as RFC 4186 Appendix B (and RFC 4187 §7 by reference) runs it: the
// output x_0|x_1|... in 40-octet rounds, cut to `out_len` octets.
SecretBytes fips186_2_prf(const Bytes<20>& xkey, std::size_t out_len);

// EAP-AKA (RFC 4187 §7): the PRF's first 160 octets split in this order.
struct EapAkaKeys {
  Secret<20> mk;
  Secret<16> k_encr;
  Secret<16> k_aut;
  Secret<64> msk;
  Secret<64> emsk;
};

// `identity` is the peer identity as the EAP exchange last carried it (the EAP-Response/Identity
// or AT_IDENTITY), e.g. "0<IMSI>@realm", without any terminating NUL.
EapAkaKeys derive_eap_aka_keys(std::string_view identity, const Ck& ck, const Ik& ik);

// EAP-AKA' (RFC 9048 §3.3): PRF' output split in this order (208 octets).
struct EapAkaPrimeKeys {
  Secret<16> k_encr;
  Secret<32> k_aut;
  Secret<32> k_re;
  Secret<64> msk;
  Secret<64> emsk;
};

EapAkaPrimeKeys derive_eap_aka_prime_keys(std::string_view identity, const CkIkPrime& prime);

// The same from the SIM's CK and IK: CK' and IK' first (aka/kdf.h, RFC 9048 §3.3), with the access
// network name the server sent in AT_KDF_INPUT (hostapd 2.10 always sends "WLAN") and SQN xor AK,
// the first 6 octets of AUTN.
EapAkaPrimeKeys derive_eap_aka_prime_keys(std::string_view identity, const Ck& ck, const Ik& ik,
                                          std::string_view network_name,
                                          const Bytes<6>& sqn_xor_ak);

}  // namespace mcim::aka
