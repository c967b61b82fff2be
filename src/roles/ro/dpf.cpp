#include "roles/ro/dpf.h"

#include <fmt/format.h>

#include "pki/certificate.h"
#include "pki/package.h"
#include "roles/ro/audit.h"

namespace mcim::ro {
namespace {

using detail::audited;

constexpr std::string_view kService = "dpf";

std::string operator_principal(std::string_view id) { return fmt::format("operator:{}", id); }
std::string device_principal(std::string_view id) { return fmt::format("device:{}", id); }

}  // namespace

Dpf::Dpf(store::PackageStore& packages, store::RegistrationStore& registrations,
         store::AuditStore& audit, StatusRelay& relay, const pki::TrustAnchors& operator_roots,
         const pki::TrustAnchors& supplier_roots, const Clock& clock)
    : packages_(packages),
      registrations_(registrations),
      audit_(audit),
      relay_(relay),
      operator_roots_(operator_roots),
      supplier_roots_(supplier_roots),
      clock_(clock) {}

Dpf::Dpf(store::Database& db, StatusRelay& relay, const pki::TrustAnchors& operator_roots,
         const pki::TrustAnchors& supplier_roots, const Clock& clock)
    : Dpf(db.packages(), db.registrations(), db.audit(), relay, operator_roots, supplier_roots,
          clock) {}

store::Time Dpf::now() const { return detail::seconds_of(clock_.now()); }

// The registration is checked before the signature: it is cheap, and a package for a device the
// caller did not register is refused whatever its contents.
Result<void> Dpf::check_handover(const PackageHandover& h, std::string_view caller_sho) {
  if (!pki::valid_mcim_id(h.device_id) || !pki::valid_mcim_id(h.package_id)) {
    return fail(ErrorCode::invalid_argument,
                "device_id, package_id: must be [A-Za-z0-9._:-]{1,64}");
  }
  auto reg = registrations_.find(h.pcid);
  if (!reg) return std::unexpected(reg.error());
  if (!*reg) return fail(ErrorCode::not_found, fmt::format("pcid {}: not registered", h.pcid));
  if ((*reg)->sho != caller_sho) {
    return fail(ErrorCode::access_denied,
                fmt::format("pcid {}: registered by another operator", h.pcid));
  }
  if ((*reg)->device_id != h.device_id) {
    return fail(ErrorCode::wrong_recipient,
                fmt::format("pcid {}: registered for another device", h.pcid));
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
  auto result = [&]() -> Result<void> {
    if (auto c = check_handover(handover, caller_sho); !c) return c;
    store::StoredPackage p;
    p.package_id = handover.package_id;
    p.device_id = handover.device_id;
    p.sho = std::string(caller_sho);
    p.package = handover.package;
    p.status = store::PackageStatus::pending;
    p.created = p.updated = t;
    return packages_.put(p);
  }();
  return audited(audit_, t,
                 {kService, "store-package", handover.package_id, operator_principal(caller_sho),
                  fmt::format("device {}, pcid {}, {} bytes", handover.device_id, handover.pcid,
                              handover.package.size())},
                 std::move(result));
}

Result<DeliveredPackage> Dpf::fetch(std::string_view device_id,
                                    std::string_view authenticated_device) {
  const store::Time t = now();
  std::string subject = "-";
  auto result = [&]() -> Result<DeliveredPackage> {
    if (authenticated_device.empty() || device_id != authenticated_device) {
      return fail(ErrorCode::access_denied,
                  fmt::format("device {}: not the authenticated device", device_id));
    }
    auto next = packages_.next_for_device(device_id);
    if (!next) return std::unexpected(next.error());
    if (!*next) return fail(ErrorCode::not_found, fmt::format("device {}: no package", device_id));
    subject = (*next)->package_id;
    if (auto m = packages_.mark_delivered(subject, t); !m) return std::unexpected(m.error());
    return DeliveredPackage{std::move((*next)->package_id), std::move((*next)->package)};
  }();
  return audited(audit_, t,
                 {kService, "fetch", subject, device_principal(authenticated_device),
                  fmt::format("device {}", device_id)},
                 std::move(result));
}

Result<tre::StatusReport> Dpf::check_report(const store::StoredPackage& p,
                                            std::string_view signed_report,
                                            const std::vector<X509*>& platform_chain) {
  if (platform_chain.empty() || platform_chain.front() == nullptr) {
    return fail(ErrorCode::missing_argument, "platform_chain: the platform certificate");
  }
  X509* leaf = platform_chain.front();
  const std::vector<X509*> untrusted(platform_chain.begin() + 1, platform_chain.end());
  if (auto chain = pki::verify_chain(supplier_roots_, leaf, untrusted, clock_.now()); !chain) {
    const ErrorCode code = chain.error().code == ErrorCode::cert_expired ? ErrorCode::cert_expired
                                                                         : ErrorCode::chain_invalid;
    return fail(code, "platform certificate: " + chain.error().message);
  }
  if (pki::platform_device_id(leaf) != p.device_id) {
    return fail(ErrorCode::wrong_recipient, "platform certificate: of another device");
  }
  auto report = tre::verify_status_report(signed_report, leaf);
  if (!report) return std::unexpected(report.error());
  if (report->device_id != p.device_id) {
    return fail(ErrorCode::wrong_recipient, "report: names another device");
  }
  // A TRE that could not open the package cannot name it: "-" with a refusal is its report too.
  const bool names_package =
      report->package_id == p.package_id || (report->package_id == "-" && report->outcome != "ok");
  if (report->event != "install" || !names_package) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("report: not the install report of package {}", p.package_id));
  }
  return report;
}

Result<tre::StatusReport> Dpf::report(std::string_view package_id, std::string_view signed_report,
                                      const std::vector<X509*>& platform_chain) {
  const store::Time t = now();
  std::string principal = "-";
  std::optional<store::StoredPackage> package;
  auto result = [&]() -> Result<tre::StatusReport> {
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
    auto report = check_report(*package, signed_report, platform_chain);
    if (!report) return report;
    if (auto s = packages_.store_report(package_id, signed_report, t); !s) {
      return std::unexpected(s.error());
    }
    return report;
  }();
  const std::string detail = result ? "outcome " + result->outcome : "";
  result =
      audited(audit_, t, {kService, "report", package_id, principal, detail}, std::move(result));
  if (!result) return result;
  auto relayed = relay_.relay(RelayedStatus{package->package_id, package->device_id, package->sho,
                                            *result, std::string(signed_report)});
  (void)audited(audit_, t,
                {kService, "relay", package_id, "dpf",
                 fmt::format("to {}", operator_principal(package->sho))},
                std::move(relayed));
  return result;
}

}  // namespace mcim::ro
