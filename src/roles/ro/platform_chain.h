// The check the RO makes of a TRE's platform chain before it believes anything the TRE signed: a
// path to the supplier roots now and a leaf naming the device the RO expects. The DPF uses it for
// status reports (F2 step 13), direct access for the attestation that replaces AKA (F3).
// Internal to src/roles/ro; pure, thread-safe.
#pragma once

#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "pki/openssl.h"
#include "pki/verify.h"

namespace mcim::ro::detail {

// The chain (leaf first) leads to `supplier_roots` at `now` (chain_invalid, cert_expired;
// missing_argument for an empty chain) and its leaf names `device_id` (wrong_recipient). Returns
// the leaf.
Result<X509*> verify_platform_chain(const pki::TrustAnchors& supplier_roots,
                                    const std::vector<X509*>& chain, std::string_view device_id,
                                    TimePoint now);

}  // namespace mcim::ro::detail
