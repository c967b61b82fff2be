#include "roles/ro/dpf.h"

#include <fmt/format.h>

#include <optional>

#include "pki/attestation.h"
#include "pki/certificate.h"
#include "pki/package.h"
#include "roles/ro/audit.h"
#include "roles/ro/platform_chain.h"

namespace mcim::ro {
namespace {

using detail::audited;
using detail::audited_change;
using detail::AuditEntry;

constexpr std::string_view kService = "dpf";
constexpr std::size_t kMinNonce = 16, kMaxNonce = 64;  // the PVA's challenge, as in the report

std::string operator_principal(std::string_view id) { return fmt::format("operator:{}", id); }
std::string device_principal(std::string_view id) { return fmt::format("device:{}", id); }

}  // namespace

Dpf::Dpf(store::PackageStore& packages, store::RegistrationStore& registrations,
         store::AttestationRequestStore& requests, store::AuditStore& audit, Relays relays,
         const pki::TrustAnchors& operator_roots, const pki::TrustAnchors& supplier_roots,
         const Clock& clock)
    : packages_(packages),
      registrations_(registrations),
      requests_(requests),
      audit_(audit),
      relays_(relays),
      operator_roots_(operator_roots),
      supplier_roots_(supplier_roots),
      clock_(clock) {}

Dpf::Dpf(store::Database& db, Relays relays, const pki::TrustAnchors& operator_roots,
         const pki::TrustAnchors& supplier_roots, const Clock& clock)
    : Dpf(db.packages(), db.registrations(), db.attestation_requests(), db.audit(), relays,
          operator_roots, supplier_roots, clock) {}

store::Time Dpf::now() const { return detail::seconds_of(clock_.now()); }

// The SHO may address a device only through a registration it made or succeeds to (F4); that
// registration.
Result<store::Registration> Dpf::check_registered(std::string_view pcid, std::string_view device_id,
                                                  std::string_view caller_sho) {
  return detail::provisioning_registration(registrations_, pcid, device_id, caller_sho);
}

Result<store::Registration> detail::held_registration(store::RegistrationStore& registrations,
                                                      std::string_view pcid,
                                                      std::string_view caller_sho) {
  auto reg = registrations.find(pcid);
  if (!reg) return std::unexpected(reg.error());
  if (!*reg) return fail(ErrorCode::not_found, fmt::format("pcid {}: not registered", pcid));
  if ((*reg)->sho != caller_sho) {
    return fail(ErrorCode::access_denied,
                fmt::format("pcid {}: registered by another operator", pcid));
  }
  return std::move(**reg);
}

Result<store::Registration> detail::sho_registration(store::RegistrationStore& registrations,
                                                     std::string_view pcid,
                                                     std::string_view device_id,
                                                     std::string_view caller_sho) {
  auto reg = held_registration(registrations, pcid, caller_sho);
  if (!reg) return reg;
  if (reg->device_id != device_id) {
    return fail(ErrorCode::wrong_recipient,
                fmt::format("pcid {}: registered for another device", pcid));
  }
  return reg;
}

Result<store::Registration> detail::provisioning_registration(
    store::RegistrationStore& registrations, std::string_view pcid, std::string_view device_id,
    std::string_view caller_sho) {
  auto reg = registrations.find(pcid);
  if (!reg) return std::unexpected(reg.error());
  if (!*reg) return fail(ErrorCode::not_found, fmt::format("pcid {}: not registered", pcid));
  const bool successor = !(*reg)->successor.empty() && (*reg)->successor == caller_sho;
  if ((*reg)->sho != caller_sho && !successor) {
    return fail(ErrorCode::access_denied,
                fmt::format("pcid {}: registered by another operator", pcid));
  }
  if ((*reg)->device_id != device_id) {
    return fail(ErrorCode::wrong_recipient,
                fmt::format("pcid {}: registered for another device", pcid));
  }
  return std::move(**reg);
}

// The registration is checked before the signature: it is cheap, and a package for a device the
// caller did not register is refused whatever its contents.
Result<void> Dpf::check_handover(const PackageHandover& h, std::string_view caller_sho) {
  if (!pki::valid_mcim_id(h.device_id) || !pki::valid_mcim_id(h.package_id)) {
    return fail(ErrorCode::invalid_argument,
                "device_id, package_id: must be [A-Za-z0-9._:-]{1,64}");
  }
  if (auto r = check_registered(h.pcid, h.device_id, caller_sho); !r) {
    return std::unexpected(r.error());
  }
  auto info = pki::verify_package_signature(h.package, operator_roots_, clock_);
  if (!info) return std::unexpected(info.error());
  if (info->operator_id != caller_sho) {
    return fail(ErrorCode::access_denied,
                fmt::format("package: signed by operator {}, not the caller", info->operator_id));
  }
  return {};
}

Result<void> Dpf::store_package(const PackageHandover& handover, std::string_view caller_sho) {
  const store::Time t = now();
  auto change = [&]() -> Result<void> {
    if (auto c = check_handover(handover, caller_sho); !c) return c;
    store::StoredPackage p;
    p.package_id = handover.package_id;
    p.device_id = handover.device_id;
    p.sho = std::string(caller_sho);
    p.package = handover.package;
    p.status = store::PackageStatus::pending;
    p.created = p.updated = t;
    return packages_.put(p);
  };
  return audited_change(audit_, t, change, [&](const auto&) {
    return AuditEntry{kService, "store-package", handover.package_id,
                      operator_principal(caller_sho),
                      fmt::format("device {}, pcid {}, {} bytes", handover.device_id, handover.pcid,
                                  handover.package.size())};
  });
}

// Devices poll this until the SHO has handed the package over: as for attestation requests, an
// empty answer is not audited (it changes nothing and would cost a commit per poll); a package
// handed out, or a device asking for another's, is.
Result<DeliveredPackage> Dpf::fetch(const store::Registration& registration,
                                    std::string_view authenticated_device) {
  const store::Time t = now();
  const std::string& device_id = registration.device_id;
  const bool own = !authenticated_device.empty() && device_id == authenticated_device;
  std::optional<store::StoredPackage> next;
  if (own) {
    auto found =
        packages_.next_for_device_from(device_id, registration.sho, registration.successor);
    if (!found) return std::unexpected(found.error());
    if (!*found) return fail(ErrorCode::not_found, fmt::format("device {}: no package", device_id));
    next = std::move(*found);
  }
  const std::string subject = next ? next->package_id : "-";
  auto change = [&]() -> Result<DeliveredPackage> {
    if (!own) {
      return fail(ErrorCode::access_denied,
                  fmt::format("device {}: not the authenticated device", device_id));
    }
    if (auto m = packages_.mark_delivered(subject, t); !m) return std::unexpected(m.error());
    return DeliveredPackage{next->package_id, next->package};  // copies: the change may run again
  };
  return audited_change(audit_, t, change, [&](const auto&) {
    return AuditEntry{kService, "fetch", subject, device_principal(authenticated_device),
                      fmt::format("device {}", device_id)};
  });
}

Result<Dpf::CheckedReport> Dpf::check_report(const store::StoredPackage& p,
                                             std::string_view signed_report,
                                             const std::vector<X509*>& platform_chain) {
  auto leaf =
      detail::verify_platform_chain(supplier_roots_, platform_chain, p.device_id, clock_.now());
  if (!leaf) return std::unexpected(leaf.error());
  auto report = tre::verify_install_report(signed_report, *leaf, p.device_id, p.package_id);
  if (!report) return std::unexpected(report.error());
  return CheckedReport{*leaf, std::move(*report)};
}

namespace {

// F4: a package of the registration's successor, not of its holder.
bool f4_package(const store::Registration* registration, const store::StoredPackage& p) {
  return registration != nullptr && !registration->successor.empty() &&
         p.sho == registration->successor && p.sho != registration->sho;
}

// F4: a package of an SHO that provisions the device no more (neither holder nor successor: a
// successor that refused or was replaced, a holder that handed the registration over).
bool stale_package(const store::Registration* registration, const store::StoredPackage& p) {
  return registration != nullptr && p.sho != registration->sho &&
         (registration->successor.empty() || p.sho != registration->successor);
}

Error naming(std::string_view member, Error e) {
  e.message = fmt::format("{}: {}", member, e.message);
  return e;
}

}  // namespace

// The old SHO's acknowledgement names its own IMSI, which the DPF does not know: it checks what
// it can, that the TRE discarded a credential of a package the holder handed over for this device.
Result<void> Dpf::check_discard_report(const store::StoredPackage& p, std::string_view holder,
                                       X509* leaf, std::string_view text) {
  auto discard = tre::verify_status_report(text, leaf);
  if (!discard) return std::unexpected(naming("discard_report", discard.error()));
  if (discard->device_id != p.device_id) {
    return fail(ErrorCode::wrong_recipient, "discard_report: names another device");
  }
  if (discard->event != tre::kDiscardEvent || discard->outcome != "ok" ||
      discard->state != "deleted" || discard->credential == "-") {
    return fail(ErrorCode::invalid_argument, "discard_report: not the discard of a credential");
  }
  auto old = packages_.find(discard->package_id);
  if (!old) return std::unexpected(old.error());
  if (!*old || (*old)->sho != holder || (*old)->device_id != p.device_id) {
    return fail(ErrorCode::invalid_argument,
                "discard_report: not a package the holder handed over for this device");
  }
  return {};
}

Result<void> Dpf::check_acks(const store::StoredPackage& p, const store::Registration* registration,
                             const CheckedReport& checked, const DiscardAcks& acks) {
  const bool any = acks.report.has_value() || acks.notice.has_value();
  if (!f4_package(registration, p)) {
    if (!any) return {};
    return fail(ErrorCode::invalid_argument,
                "discard_report, discard_notice: only for a package replacing another "
                "operator's MCIM (F4)");
  }
  if (checked.report.outcome != "ok") {
    if (!any) return {};
    return fail(ErrorCode::invalid_argument,
                "discard_report, discard_notice: a refused install discards nothing");
  }
  if (!acks.report) return fail(ErrorCode::missing_argument, "discard_report: required (F4)");
  if (!acks.notice) return fail(ErrorCode::missing_argument, "discard_notice: required (F4)");
  auto notice = tre::verify_discard_notice(*acks.notice, checked.leaf, p.device_id, p.package_id);
  if (!notice) return std::unexpected(naming("discard_notice", notice.error()));
  return check_discard_report(p, registration->sho, checked.leaf, *acks.report);
}

Result<tre::StatusReport> Dpf::report(std::string_view package_id, std::string_view signed_report,
                                      const std::vector<X509*>& platform_chain) {
  auto accepted = report_on(nullptr, package_id, signed_report, platform_chain, {});
  if (!accepted) return std::unexpected(accepted.error());
  return std::move(accepted->report);
}

Result<AcceptedReport> Dpf::report(const store::Registration& registration,
                                   std::string_view package_id, std::string_view signed_report,
                                   const std::vector<X509*>& platform_chain,
                                   const DiscardAcks& acks) {
  return report_on(&registration, package_id, signed_report, platform_chain, acks);
}

Result<AcceptedReport> Dpf::report_on(const store::Registration* registration,
                                      std::string_view package_id, std::string_view signed_report,
                                      const std::vector<X509*>& platform_chain,
                                      const DiscardAcks& acks) {
  const store::Time t = now();
  std::string principal = "-";
  std::optional<store::StoredPackage> package;
  auto change = [&]() -> Result<tre::StatusReport> {
    auto found = packages_.find(package_id);
    if (!found) return std::unexpected(found.error());
    if (!*found) return fail(ErrorCode::not_found, fmt::format("package {}: unknown", package_id));
    package = std::move(*found);
    principal = device_principal(package->device_id);
    // Cheap replay refusal first; store_report decides atomically in the end.
    if (package->status == store::PackageStatus::reported) {
      return fail(ErrorCode::transition_refused,
                  fmt::format("package {}: already reported", package_id));
    }
    if (stale_package(registration, *package)) {
      return fail(
          ErrorCode::transition_refused,
          fmt::format("package {}: of an operator that provisions the device no more", package_id));
    }
    auto checked = check_report(*package, signed_report, platform_chain);
    if (!checked) return std::unexpected(checked.error());
    if (auto a = check_acks(*package, registration, *checked, acks); !a) {
      return std::unexpected(a.error());
    }
    if (auto s = packages_.store_report(package_id, signed_report, t); !s) {
      return std::unexpected(s.error());
    }
    return std::move(checked->report);
  };
  // What follows from the report (the DRF's hand-over, the status notice) is in its commit.
  bool changed = false;
  auto result = audited_change(
      audit_, t, change,
      [&](const Result<tre::StatusReport>& r) {
        std::string detail = r ? "outcome " + r->outcome : "";
        if (r && f4_package(registration, *package)) detail += ", F4";
        return AuditEntry{kService, "report", package_id, principal, std::move(detail)};
      },
      [&](const tre::StatusReport& accepted) {
        changed = follow_up(registration, *package, accepted, signed_report, acks, t);
      });
  if (!result) return std::unexpected(result.error());
  return AcceptedReport{std::move(*result), changed};
}

bool Dpf::follow_up(const store::Registration* registration, const store::StoredPackage& p,
                    const tre::StatusReport& report, std::string_view signed_report,
                    const DiscardAcks& acks, store::Time t) {
  const bool f4 = f4_package(registration, p);
  const bool replaced = f4 && report.outcome == "ok";
  bool changed = false;
  if (replaced) {
    // The device now runs on the successor's MCIM: the DRF points at the successor. One
    // conditional update on the holder, which also clears the successor.
    auto moved = registrations_.transfer(registration->pcid, registration->sho, p.sho, t);
    changed = moved.has_value();
    (void)audited(audit_, t,
                  {"drf", "transfer", registration->pcid, device_principal(p.device_id),
                   fmt::format("F4, to {}", operator_principal(p.sho))},
                  std::move(moved));
  } else if (f4) {
    // A refused F4 install ends the change: the device stays with its holder.
    (void)audited(audit_, t,
                  {"drf", "change-ended", registration->pcid, device_principal(p.device_id),
                   fmt::format("install refused: {}", report.outcome)},
                  registrations_.set_successor(registration->pcid, ""));
  }
  auto relayed = relays_.status.relay(RelayedStatus{p.package_id, p.device_id, p.sho, report,
                                                    std::string(signed_report),
                                                    replaced ? *acks.notice : std::string()});
  (void)audited(
      audit_, t,
      {kService, "relay", p.package_id, "dpf", fmt::format("to {}", operator_principal(p.sho))},
      std::move(relayed));
  if (replaced) {
    auto discarded = relays_.discards.relay_discard(
        RelayedDiscard{p.package_id, p.device_id, registration->sho, *acks.report});
    (void)audited(audit_, t,
                  {kService, "relay", p.package_id, "dpf",
                   fmt::format("discard to {}", operator_principal(registration->sho))},
                  std::move(discarded));
  }
  return changed;
}

// ---- Attestation requests (F2 steps 7-9) ----------------------------------------------------

Result<void> Dpf::check_ask(const AttestationAsk& ask, std::string_view caller_sho) {
  if (!pki::valid_mcim_id(ask.device_id) || !pki::valid_mcim_id(ask.request_id)) {
    return fail(ErrorCode::invalid_argument,
                "device_id, request_id: must be [A-Za-z0-9._:-]{1,64}");
  }
  if (ask.nonce.size() < kMinNonce || ask.nonce.size() > kMaxNonce) {
    return fail(ErrorCode::invalid_argument, "nonce: must be 16..64 bytes");
  }
  if (auto r = check_registered(ask.pcid, ask.device_id, caller_sho); !r) {
    return std::unexpected(r.error());
  }
  return {};
}

Result<void> Dpf::request_attestation(const AttestationAsk& ask, std::string_view caller_sho) {
  const store::Time t = now();
  auto change = [&]() -> Result<void> {
    if (auto c = check_ask(ask, caller_sho); !c) return c;
    store::AttestationRequest r;
    r.request_id = ask.request_id;
    r.pcid = ask.pcid;
    r.device_id = ask.device_id;
    r.sho = std::string(caller_sho);
    r.nonce = ask.nonce;
    r.status = store::AttestationStatus::pending;
    r.created = t;
    return requests_.put(r);
  };
  return audited_change(audit_, t, change, [&](const auto&) {
    return AuditEntry{kService, "attestation-request", ask.request_id,
                      operator_principal(caller_sho),
                      fmt::format("device {}, pcid {}", ask.device_id, ask.pcid)};
  });
}

Result<store::Registration> Dpf::refuse(std::string_view pcid, std::string_view device_id,
                                        std::string_view code, std::string_view caller_sho) {
  const store::Time t = now();
  auto change = [&]() -> Result<store::Registration> {
    const std::optional<ErrorCode> parsed = error_code_from_wire(code);
    if (!parsed) {
      return fail(ErrorCode::invalid_argument, "code: not an error code");
    }
    auto reg = check_registered(pcid, device_id, caller_sho);
    if (!reg) return std::unexpected(reg.error());
    reg->refusal = std::string(code);
    reg->refused = t;
    // Put under the holder's id (put() keeps the successor): the RO records it for either.
    if (auto put = registrations_.put(*reg); !put) return std::unexpected(put.error());
    // The successor's refusal ends the change: the device stays with its holder.
    if (reg->sho != caller_sho) {
      if (auto s = registrations_.set_successor(pcid, ""); !s) return std::unexpected(s.error());
      reg->successor.clear();
    }
    return reg;
  };
  return audited_change(audit_, t, change, [&](const auto&) {
    return AuditEntry{kService, "refusal", pcid, operator_principal(caller_sho),
                      fmt::format("device {}, code {}", device_id, code)};
  });
}

Result<void> Dpf::refusal_of(const store::Registration& registration, std::string_view refused_by) {
  if (registration.refusal.empty()) return {};
  const ErrorCode code = error_code_from_wire(registration.refusal).value_or(ErrorCode::internal);
  return fail(
      code, fmt::format("home operator {} refused the device: {}",
                        refused_by.empty() ? registration.sho : refused_by, registration.refusal));
}

// Devices poll this until the SHO asks: an empty answer is not audited, a request handed out is.
Result<store::AttestationRequest> Dpf::next_attestation_request(
    const store::Registration& registration) {
  const std::string& device_id = registration.device_id;
  auto next = requests_.next_for_device_from(device_id, registration.sho, registration.successor);
  if (!next) return std::unexpected(next.error());
  if (!*next) {
    return fail(ErrorCode::not_found, fmt::format("device {}: no attestation request", device_id));
  }
  return audited(
      audit_, now(),
      {kService, "attestation-fetch", (*next)->request_id, device_principal(device_id), ""},
      Result<store::AttestationRequest>(std::move(**next)));
}

Result<store::AttestationRequest> Dpf::answerable(std::string_view request_id,
                                                  std::string_view device_id,
                                                  std::string_view report) {
  auto found = requests_.find(request_id);
  if (!found) return std::unexpected(found.error());
  if (!*found) {
    return fail(ErrorCode::not_found, fmt::format("attestation request {}: unknown", request_id));
  }
  if ((*found)->device_id != device_id) {
    return fail(ErrorCode::access_denied,
                fmt::format("attestation request {}: not this device's", request_id));
  }
  if (auto decoded = pki::decode_signed_report(report); !decoded) {
    return std::unexpected(decoded.error());
  }
  return std::move(**found);
}

Result<void> Dpf::answer_attestation(std::string_view request_id, std::string_view device_id,
                                     std::string report, std::vector<std::string> platform_chain) {
  const store::Time t = now();
  std::optional<store::AttestationRequest> request;
  auto change = [&]() -> Result<void> {
    auto r = answerable(request_id, device_id, report);
    if (!r) return std::unexpected(r.error());
    request = std::move(*r);
    // Atomic: of two racing answers one is relayed, the other is transition_refused.
    return requests_.mark_answered(request_id, t);
  };
  // The answer goes to the SHO in a notice stored with the answer's record. A failure to store
  // it is on the record; the answer stays accepted.
  auto relay = [&] {
    auto relayed = relays_.attestations.relay_attestation(
        RelayedAttestation{request->request_id, request->pcid, request->device_id, request->sho,
                           report, platform_chain});
    (void)audited(audit_, t,
                  {kService, "relay-attestation", request_id, "dpf",
                   fmt::format("to {}", operator_principal(request->sho))},
                  std::move(relayed));
  };
  return audited_change(
      audit_, t, change,
      [&](const auto&) {
        return AuditEntry{kService, "attestation", request_id, device_principal(device_id), ""};
      },
      relay);
}

}  // namespace mcim::ro
