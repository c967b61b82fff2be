#include "roles/ro/renewal.h"

#include <fmt/format.h>

#include "aka/milenage.h"
#include "common/secure.h"
#include "roles/ro/audit.h"
#include "roles/ro/platform_chain.h"
#include "tre/instruction.h"

namespace mcim::ro {
namespace {

using detail::audited;
using detail::pcid_principal;

constexpr std::string_view kService = "icf";

}  // namespace

PcidRenewer::PcidRenewer(store::Database& db, const pki::TrustAnchors& supplier_roots,
                         const Clock& clock, RandomSource& random, const RenewalConfig& config)
    : db_(db), supplier_roots_(supplier_roots), clock_(clock), random_(random), config_(config) {}

// The registration names the device; the chain must be that device's TRE.
Result<X509*> PcidRenewer::device_leaf(std::string_view pcid, const std::vector<X509*>& chain,
                                       std::string& device_id) {
  auto reg = db_.registrations().find(pcid);
  if (!reg) return std::unexpected(reg.error());
  if (!*reg) return fail(ErrorCode::not_found, fmt::format("pcid {}: not registered", pcid));
  device_id = (*reg)->device_id;
  return detail::verify_platform_chain(supplier_roots_, chain, device_id, clock_.now());
}

// Same PCID, fresh K: the DRF's registration and the SHO's subscriber stay valid, no PCID of the
// RO's range is spent, and the new K owes nothing to the old one (it travels sealed to the TRE).
Result<RenewalOffer> PcidRenewer::seal(std::string_view pcid, const std::string& device_id,
                                       X509* leaf, store::Time now) {
  pki::McimDocument doc;
  const auto stamp = now.time_since_epoch().count();
  doc.package_id = fmt::format("pcid-{}-{}", pcid, stamp);
  doc.device_id = device_id;
  doc.imsi = std::string(pcid);
  doc.algorithm = pki::McimAlgorithm::milenage;
  Secret<16> k;
  random_.fill(k.mut());
  if (auto set = doc.set_key(k.get()); !set) return std::unexpected(set.error());
  Bytes<16> opc = aka::Milenage::compute_opc(k.get(), config_.op.get());
  doc.opc = Secret<16>(opc);
  secure_wipe(opc);
  doc.amf = {0x80, 0x00};
  doc.policy.owner = config_.operator_id;
  // The factory's policy (tre::Tre::init): the RO may block, retire, unblock and renew it.
  doc.policy.operations = {pki::McimOperation::block, pki::McimOperation::retire,
                           pki::McimOperation::unblock, pki::McimOperation::update};
  doc.registration_nonce = random_.draw<16>();  // not checked by renew_pcid; never all zero
  doc.not_before = now - std::chrono::minutes(1);
  doc.not_after = now + config_.lifetime;
  // Above the factory credential's 1 and every earlier renewal's: milliseconds of issue time.
  doc.sequence = static_cast<std::uint64_t>(stamp) * 1000;
  pki::PackageSigner signer{config_.signer->cert(), config_.signer->key.get(), {}};
  for (std::size_t i = 1; i < config_.signer->certs.size(); ++i) {
    signer.chain.push_back(config_.signer->certs[i].get());
  }
  auto sealed = pki::seal_package(doc, signer, leaf);
  if (!sealed) return std::unexpected(sealed.error());
  store::PcidRenewal staged;
  staged.pcid = doc.imsi;
  staged.package_id = doc.package_id;
  staged.k = k;
  staged.opc = doc.opc;
  staged.not_after = doc.not_after;
  if (auto s = db_.pcids().stage_renewal(staged); !s) return std::unexpected(s.error());
  return RenewalOffer{doc.package_id, std::move(*sealed), doc.not_after};
}

Result<RenewalOffer> PcidRenewer::offer(std::string_view pcid, const std::vector<X509*>& chain) {
  const store::Time now = detail::seconds_of(clock_.now());
  auto result = [&]() -> Result<RenewalOffer> {
    if (!config_.signer) return fail(ErrorCode::unsupported, "pcid renewal: not configured");
    std::string device_id;
    auto leaf = device_leaf(pcid, chain, device_id);
    if (!leaf) return std::unexpected(leaf.error());
    auto sub = db_.pcids().find(pcid);
    if (!sub) return std::unexpected(sub.error());
    if (!*sub) return fail(ErrorCode::not_found, fmt::format("pcid {}: unknown", pcid));
    if (now < (*sub)->not_after - config_.threshold) {
      return fail(ErrorCode::not_found, fmt::format("pcid {}: no renewal due", pcid));
    }
    return seal(pcid, device_id, *leaf, now);
  }();
  const std::string detail = result ? "package " + result->package_id : "";
  return audited(db_.audit(), now, {kService, "renewal-offer", pcid, pcid_principal(pcid), detail},
                 std::move(result));
}

Result<std::string> PcidRenewer::report(std::string_view pcid, std::string_view package_id,
                                        std::string_view signed_report,
                                        const std::vector<X509*>& chain) {
  const store::Time now = detail::seconds_of(clock_.now());
  std::string detail;
  auto result = [&]() -> Result<std::string> {
    std::string device_id;
    auto leaf = device_leaf(pcid, chain, device_id);
    if (!leaf) return std::unexpected(leaf.error());
    auto rep = tre::verify_install_report(signed_report, *leaf, device_id, package_id);
    if (!rep) return std::unexpected(rep.error());
    if (rep->credential != pcid && rep->credential != "-") {
      return fail(ErrorCode::invalid_argument, "report: names another credential");
    }
    detail = fmt::format("package {} outcome {}", package_id, rep->outcome);
    if (rep->outcome != "ok") return rep->outcome;  // the old credential stays
    if (auto done = db_.pcids().complete_renewal(pcid, package_id); !done) {
      return std::unexpected(done.error());
    }
    return rep->outcome;
  }();
  return audited(db_.audit(), now, {kService, "renewal-report", pcid, pcid_principal(pcid), detail},
                 std::move(result));
}

}  // namespace mcim::ro
