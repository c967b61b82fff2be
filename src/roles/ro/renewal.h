// The RO's renewal of PCID credentials (DESIGN.md F8, TR 33.812 §5.1.3.6 "initial credentials"
// with a limited lifetime): when a device's PCID credential nears its not_after, the RO, its
// owner, issues the same PCID with a fresh K and OPc and a new lifetime as an MCIM-like package
// (mcim/1, sealed to the TRE's platform key, signed by the RO's package signer), hands it to the
// device over its PCID session at the DPF, and switches the ICF to the new K only when the TRE's
// signed status report says it installed it. Pure logic over the store ports; the HTTP layer
// authenticates the device by its ICF session. Thread-compatible. docs/roles-ro.md.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/random.h"
#include "common/secure.h"
#include "pki/openssl.h"
#include "pki/package.h"
#include "pki/verify.h"
#include "store/store.h"

namespace mcim::ro {

struct RenewalConfig {
  std::string operator_id;  // the RO's own id: the credential's policy owner
  // The RO's package-signing certificate (SAN urn:mcim:operator:<operator_id>) and key; null:
  // renewal is not offered (unsupported).
  std::shared_ptr<const pki::KeyPair> signer;
  Secret<16> op;  // the RO's OP, common to its PCIDs: OPc = f(K, OP) as the supplier computes it
  std::chrono::seconds threshold{std::chrono::hours(24 * 30)};  // offered this long before expiry
  std::chrono::seconds lifetime{std::chrono::hours(24 * 730)};  // of a renewed credential
};

struct RenewalOffer {
  std::string package_id;
  ByteVec package;  // CMS
  store::Time not_after{};
};

class PcidRenewer {
 public:
  PcidRenewer(store::Database& db, const pki::TrustAnchors& supplier_roots, const Clock& clock,
              RandomSource& random, const RenewalConfig& config);

  // The device on `pcid`'s session asks; `chain` is its TRE's platform chain, leaf first. The
  // PCID must be registered (not_found) and its credential due (now >= not_after - threshold:
  // not_found "no renewal due"); the chain must lead to the supplier roots and name the
  // registration's device (chain_invalid, cert_expired, wrong_recipient). A fresh K is staged at
  // the ICF (replacing one staged before) and the package returned. unsupported without a
  // signer. Audited as icf renewal-offer.
  Result<RenewalOffer> offer(std::string_view pcid, const std::vector<X509*>& chain);

  // The TRE's signed status report on `package_id`: the same chain checks, the report verifies
  // with the leaf's key and is the install report of that package by that device
  // (tre::verify_install_report); an `ok` outcome makes the staged credential the PCID's
  // (transition_refused when it is not the staged one). Returns the report's outcome. Audited as
  // icf renewal-report.
  Result<std::string> report(std::string_view pcid, std::string_view package_id,
                             std::string_view signed_report, const std::vector<X509*>& chain);

 private:
  Result<X509*> device_leaf(std::string_view pcid, const std::vector<X509*>& chain,
                            std::string& device_id);
  Result<RenewalOffer> seal(std::string_view pcid, const std::string& device_id, X509* leaf,
                            store::Time now);

  store::Database& db_;
  const pki::TrustAnchors& supplier_roots_;
  const Clock& clock_;
  RandomSource& random_;
  const RenewalConfig& config_;
};

}  // namespace mcim::ro
