// The bootstrap message (DESIGN.md §2 F2 steps 5-6, §4): what the RO's DRF tells a device that
// discovers its home operator, in the role of TR 33.812's OMA DM bootstrap with a shared secret:
// where the MCIM package is (the DPF's URL, PROVURL), the SHA-256 pin of the DPF's public key
// (the DM server's key hash), the APN to use (NAPDEF) and the home operator, authenticated with
// HMAC-SHA256 under a key stretched from the device's bootstrap PIN. Shared by the DRF (which
// makes it) and the device agent (which verifies it): this header needs src/common and the key's
// derivation (tre/bootstrap_key.h) only, the implementation pki's canonical JSON helpers and
// OpenSSL. Pure, thread-safe. Format, KDF and
// checks: docs/roles-ro.md "Bootstrap message".
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/secure.h"
#include "tre/bootstrap_key.h"

namespace mcim::ro {

inline constexpr std::string_view kBootstrapType = tre::kBootstrapLabel;
using tre::kBootstrapKdfIterations;
using tre::kMaxPinSize;
using tre::kMinPinSize;
inline constexpr std::size_t kMaxBootstrapSize = 2048;

struct BootstrapFields {
  std::string pcid;         // the PCID the device attached with, 6..15 digits
  std::string device_id;    // the device it is meant for ([A-Za-z0-9._:-]{1,64})
  std::string dpf_url;      // https://..., at most 256 printable characters (PROVURL)
  Bytes<32> dpf_key_pin{};  // SHA-256 of the DPF's SubjectPublicKeyInfo
  std::string apn;          // the restricted provisioning APN (NAPDEF): dot-separated labels
  std::string sho;          // the selected home operator's id
  std::chrono::sys_seconds issued{};  // when the DRF made it
  Bytes<16> nonce{};                  // fresh per message

  bool operator==(const BootstrapFields&) const = default;
};

// The syntax above; invalid_argument naming the field (never its value).
Result<void> validate_bootstrap_fields(const BootstrapFields& fields);

// The MAC key (tre/bootstrap_key.h): derived once per device and kept (the DRF stores it with
// the registration, the TRE in its sealed state), so only registration and the device's `init`
// pay for the stretching.
using tre::BootstrapKey;
using tre::derive_bootstrap_key;

// The canonical text: {"bootstrap":{"apn":…,"device":…,"dpf_key_pin":hex,"dpf_url":…,
// "issued":n,"nonce":hex,"pcid":…,"sho":…,"type":"mcim-bootstrap/1"},"mac":hex}, sorted keys,
// no whitespace; the MAC covers the exact bytes of the inner object. invalid_argument naming the
// field when a field is outside its syntax.
Result<std::string> make_bootstrap(const BootstrapFields& fields, std::string_view pin);
Result<std::string> make_bootstrap(const BootstrapFields& fields, const BootstrapKey& key);

// The device's check, in order: strict decoding and canonical form (bad_format naming the
// member), the MAC with the key of (pin, expected_device_id), compared in constant time
// (signature_invalid: forged, altered, another PIN or another device), the device id
// (wrong_recipient), `issued` within max_age of now either way (stale_report).
Result<BootstrapFields> verify_bootstrap(std::string_view text, std::string_view pin,
                                         std::string_view expected_device_id, TimePoint now,
                                         std::chrono::seconds max_age);
// The same with a key derived beforehand for expected_device_id.
Result<BootstrapFields> verify_bootstrap(std::string_view text, const BootstrapKey& key,
                                         std::string_view expected_device_id, TimePoint now,
                                         std::chrono::seconds max_age);

}  // namespace mcim::ro
