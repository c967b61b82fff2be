// F3 over EAP-AKA / EAP-AKA' at the visited network (docs/eap.md "The session after EAP"): the
// peer's permanent identity (an NAI, RFC 4187 §4.1.1.6, RFC 5448 §3) names the PCID and the
// method, and the MSK that both the peer and the AAA server derived binds the restricted session
// to the device that ran EAP: the VNO keeps key = HMAC-SHA-256(MSK, "mcim-eap-session") and the
// device claims the session with HMAC-SHA-256(key, "mcim-eap-session-claim" | identity). Pure,
// thread-safe; the keys live in wiped containers.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/bytes.h"
#include "common/error.h"
#include "common/secure.h"

namespace mcim::roles {

enum class EapMethod { aka, aka_prime };
std::string_view to_string(EapMethod m);  // "EAP-AKA", "EAP-AKA'"

// A RADIUS User-Name holds at most 253 octets (RFC 2865 §5.1), and so does an NAI here.
inline constexpr std::size_t kMaxNai = 253;

struct EapIdentity {
  EapMethod method = EapMethod::aka;
  std::string imsi;   // 6..15 digits
  std::string realm;  // after the '@'
};

// "0<IMSI>@realm" (EAP-AKA) or "6<IMSI>@realm" (EAP-AKA'). invalid_argument, naming the part,
// for anything else: another leading digit (pseudonyms and fast re-authentication identities
// name no IMSI), an IMSI that is not 6-15 digits, no '@' or an empty realm, a realm with other
// than letters, digits, '.' and '-', more than 253 octets. Messages never quote the identity.
Result<EapIdentity> parse_eap_identity(std::string_view nai);

// The permanent identity of TS 23.003 §14.3 (wlan.mnc<MNC>.mcc<MCC>.3gppnetwork.org, the MNC
// padded to 3 digits) for `imsi`, whose MNC has `mnc_digits` (2 or 3) digits.
// invalid_argument for an IMSI that is not 6-15 digits or another MNC length.
Result<std::string> eap_permanent_identity(EapMethod method, std::string_view imsi,
                                           unsigned mnc_digits);

inline constexpr std::size_t kMskSize = 64;

// HMAC-SHA-256(MSK, "mcim-eap-session"): what the VNO keeps of the MSK until the claim.
Secret<32> eap_session_key(ByteView msk);
// HMAC-SHA-256(key, "mcim-eap-session-claim" | identity): the device's claim of its session.
Secret<32> eap_claim_proof(const Secret<32>& key, std::string_view identity);

}  // namespace mcim::roles
