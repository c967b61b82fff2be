#include "roles/vno/eap_session.h"

#include <fmt/format.h>

#include <algorithm>

#include "aka/kdf.h"
#include "common/ascii.h"

namespace mcim::roles {
namespace {

constexpr std::string_view kSessionLabel = "mcim-eap-session";
constexpr std::string_view kClaimLabel = "mcim-eap-session-claim";

bool valid_imsi(std::string_view s) { return s.size() >= 6 && s.size() <= 15 && ascii_digits(s); }

bool realm_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-';
}

std::unexpected<Error> bad_identity(std::string_view what) {
  return fail(ErrorCode::invalid_argument, fmt::format("EAP identity: {}", what));
}

}  // namespace

std::string_view to_string(EapMethod m) {
  return m == EapMethod::aka_prime ? "EAP-AKA'" : "EAP-AKA";
}

Result<EapIdentity> parse_eap_identity(std::string_view nai) {
  if (nai.empty()) return bad_identity("empty");
  if (nai.size() > kMaxNai) return bad_identity("over 253 octets");
  EapIdentity id;
  if (nai[0] == '0') {
    id.method = EapMethod::aka;
  } else if (nai[0] == '6') {
    id.method = EapMethod::aka_prime;
  } else {
    return bad_identity("not a permanent EAP-AKA ('0') or EAP-AKA' ('6') identity");
  }
  const auto at = nai.find('@');
  if (at == std::string_view::npos) return bad_identity("no realm ('@')");
  const std::string_view imsi = nai.substr(1, at - 1);
  const std::string_view realm = nai.substr(at + 1);
  if (!valid_imsi(imsi)) return bad_identity("the IMSI must be 6-15 digits");
  if (realm.empty()) return bad_identity("empty realm");
  if (!std::all_of(realm.begin(), realm.end(), realm_char)) {
    return bad_identity("the realm holds other than letters, digits, '.' and '-'");
  }
  id.imsi = std::string(imsi);
  id.realm = std::string(realm);
  return id;
}

Result<std::string> eap_permanent_identity(EapMethod method, std::string_view imsi,
                                           unsigned mnc_digits) {
  if (!valid_imsi(imsi)) return fail(ErrorCode::invalid_argument, "imsi: expected 6-15 digits");
  if (mnc_digits != 2 && mnc_digits != 3) {
    return fail(ErrorCode::invalid_argument, "mnc_digits: 2 or 3");
  }
  const std::string_view mcc = imsi.substr(0, 3);
  const std::string_view mnc = imsi.substr(3, mnc_digits);
  return fmt::format("{}{}@wlan.mnc{:0>3}.mcc{}.3gppnetwork.org",
                     method == EapMethod::aka_prime ? '6' : '0', imsi, mnc, mcc);
}

Secret<32> eap_session_key(ByteView msk) {
  Secret<32> key;
  aka::hmac_sha256(msk, bytes_of(kSessionLabel), key.mut());
  return key;
}

Secret<32> eap_claim_proof(const Secret<32>& key, std::string_view identity) {
  ByteVec input(kClaimLabel.begin(), kClaimLabel.end());
  input.insert(input.end(), identity.begin(), identity.end());
  Secret<32> proof;
  aka::hmac_sha256(key.get(), input, proof.mut());
  return proof;
}

}  // namespace mcim::roles
