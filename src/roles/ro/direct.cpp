#include "roles/ro/direct.h"

#include <fmt/format.h>

#include <optional>

#include "common/hex.h"
#include "common/secure.h"
#include "pki/attestation.h"
#include "pki/signed_json.h"
#include "roles/ro/audit.h"
#include "roles/ro/platform_chain.h"

namespace mcim::ro {
namespace {

using detail::audited;

constexpr std::string_view kService = "drf";

// The ChallengeStore names who asked for a challenge and alone may use it: an SHO's operator id
// at the PVA, the PCID here (the identity the device claims, not yet proven): pcid_principal.
using detail::pcid_principal;

}  // namespace

DirectAccess::DirectAccess(store::RegistrationStore& registrations,
                           store::ChallengeStore& challenges, store::AuditStore& audit, Icf& icf,
                           const pki::TrustAnchors& supplier_roots, const Clock& clock,
                           RandomSource& random, DirectConfig config)
    : registrations_(registrations),
      challenges_(challenges),
      audit_(audit),
      icf_(icf),
      supplier_roots_(supplier_roots),
      clock_(clock),
      random_(random),
      config_(config) {}

DirectAccess::DirectAccess(store::Database& db, Icf& icf, const pki::TrustAnchors& supplier_roots,
                           const Clock& clock, RandomSource& random, DirectConfig config)
    : DirectAccess(db.registrations(), db.challenges(), db.audit(), icf, supplier_roots, clock,
                   random, config) {}

store::Time DirectAccess::now() const { return detail::seconds_of(clock_.now()); }

// One answer for "unknown to the RO" and "known but not registered": the caller is nobody yet.
Result<store::Registration> DirectAccess::registered(std::string_view pcid) {
  auto found = registrations_.find(pcid);
  if (!found) return std::unexpected(found.error());
  if (!*found) return fail(ErrorCode::not_found, fmt::format("pcid {}: not registered", pcid));
  return std::move(**found);
}

Result<DirectChallenge> DirectAccess::issue_challenge(std::string_view pcid) {
  const store::Time t = now();
  std::string device = "-";
  auto result = [&]() -> Result<DirectChallenge> {
    auto reg = registered(pcid);
    if (!reg) return std::unexpected(reg.error());
    device = reg->device_id;
    DirectChallenge out{to_hex(random_.draw<16>()), random_.draw<32>(),
                        t + config_.challenge_lifetime};
    store::Challenge c;
    c.challenge_id = out.challenge_id;
    c.sho = pcid_principal(pcid);
    c.device_id = reg->device_id;
    c.nonce.assign(out.nonce.begin(), out.nonce.end());
    c.created = t;
    c.expires = out.expires;
    if (auto put = challenges_.put(c); !put) return std::unexpected(put.error());
    return out;
  }();
  const std::string detail =
      result ? fmt::format("challenge {}, device {}", result->challenge_id, device) : "";
  return audited(audit_, t, {kService, "direct-challenge", pcid, pcid_principal(pcid), detail},
                 std::move(result));
}

// Every refusal here leaves the challenge as it was (the PVA's rule): only a proof that verifies
// uses it up, so a stranger cannot burn a device's nonce by sending garbage under its id.
Result<store::Challenge> DirectAccess::usable_challenge(const DirectProof& proof) {
  auto found = challenges_.find(proof.challenge_id);
  if (!found) return std::unexpected(found.error());
  // Another PCID's challenge is "unknown" to this one: ids are not an oracle for strangers.
  if (!*found || (*found)->sho != pcid_principal(proof.pcid)) {
    return fail(ErrorCode::not_found, fmt::format("challenge {}: unknown", proof.challenge_id));
  }
  if ((*found)->used) {
    return fail(ErrorCode::transition_refused,
                fmt::format("challenge {}: already used", proof.challenge_id));
  }
  if ((*found)->expires <= now()) {
    return fail(ErrorCode::stale_report, fmt::format("challenge {}: expired", proof.challenge_id));
  }
  return std::move(**found);
}

// The AKA of 3GPP access replaced by the platform key: the supplier vouches for the key, the key
// for the report, the report for the nonce (freshness) and the registration for the binding of
// this device to this PCID.
Result<void> DirectAccess::verify(const DirectProof& proof, const store::Challenge& challenge,
                                  const store::Registration& registration) const {
  auto report = pki::decode_signed_report(proof.report);
  if (!report) return std::unexpected(report.error());
  auto leaf = detail::verify_platform_chain(supplier_roots_, proof.platform_chain,
                                            registration.device_id, clock_.now());
  if (!leaf) return std::unexpected(leaf.error());
  if (!pki::verify_bytes(X509_get0_pubkey(*leaf), report->signed_bytes, report->signature)) {
    return fail(ErrorCode::signature_invalid,
                "report: not signed by the platform certificate's key");
  }
  if (report->report.device_id != registration.device_id) {
    return fail(ErrorCode::wrong_recipient, "report: names another device");
  }
  if (!constant_time_equal(report->report.nonce, challenge.nonce)) {
    return fail(ErrorCode::nonce_mismatch, "report: does not carry the challenge's nonce");
  }
  return {};
}

Result<store::Registration> DirectAccess::proven(const DirectProof& proof, std::string& detail) {
  auto reg = registered(proof.pcid);
  if (!reg) return std::unexpected(reg.error());
  detail += fmt::format(", device {}", reg->device_id);
  auto challenge = usable_challenge(proof);
  if (!challenge) return std::unexpected(challenge.error());
  if (auto v = verify(proof, *challenge, *reg); !v) return std::unexpected(v.error());
  if (auto used = challenges_.consume(proof.challenge_id); !used) {
    return std::unexpected(used.error());
  }
  return reg;
}

Result<store::Registration> DirectAccess::prove(const DirectProof& proof,
                                                std::string_view purpose) {
  std::string detail = fmt::format("challenge {}", proof.challenge_id);
  auto result = proven(proof, detail);
  return audited(audit_, now(), {kService, purpose, proof.pcid, pcid_principal(proof.pcid), detail},
                 std::move(result));
}

Result<store::Session> DirectAccess::open_session(const DirectProof& proof) {
  const store::Time t = now();
  std::string detail = fmt::format("challenge {}", proof.challenge_id);
  auto result = [&]() -> Result<store::Session> {
    auto reg = proven(proof, detail);
    if (!reg) return std::unexpected(reg.error());
    // The ICF's own session, audited by it: the same restricted kind a VNO opens after AKA.
    return icf_.open_session(proof.pcid, kDirectAccessHolder);
  }();
  return audited(audit_, t,
                 {kService, "direct-session", proof.pcid, pcid_principal(proof.pcid), detail},
                 std::move(result));
}

}  // namespace mcim::ro
