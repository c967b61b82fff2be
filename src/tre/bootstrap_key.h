// The bootstrap key (DESIGN.md §2 F2 steps 5-6): the HMAC-SHA-256 key of the DRF's bootstrap
// message (roles/ro/bootstrap.h), stretched from the device's bootstrap PIN. The DRF derives it
// once at registration (F1) and keeps it with the registration; the TRE derives it once at `init`
// (F0) and keeps it sealed in its state instead of the PIN, so neither side pays the stretching
// per discovery and the PIN itself is not stored in the device. Here, not in roles/ro, because the
// TRE derives it and roles/ro builds on the TRE. Pure, thread-safe.
#pragma once

#include <cstddef>
#include <string_view>

#include "common/error.h"
#include "common/secure.h"

namespace mcim::tre {

// The label of the bootstrap format (its "type"), which also opens the KDF's salt.
inline constexpr std::string_view kBootstrapLabel = "mcim-bootstrap/1";
// PBKDF2-HMAC-SHA256 iterations: fixed by the format version, so a message cannot ask a device
// to weaken its own check.
inline constexpr unsigned kBootstrapKdfIterations = 100'000;
inline constexpr std::size_t kMinPinSize = 4, kMaxPinSize = 16;  // ASCII digits, as the bundle's

using BootstrapKey = Secret<32>;

// PBKDF2-HMAC-SHA256(PIN, salt = "mcim-bootstrap/1" || device id, kBootstrapKdfIterations,
// 32 bytes). invalid_argument when the PIN is not 4-16 ASCII digits or the device id is not an
// id ([A-Za-z0-9._:-]{1,64}); the message never contains the PIN.
Result<BootstrapKey> derive_bootstrap_key(std::string_view pin, std::string_view device_id);

}  // namespace mcim::tre
