#include "cli/pki_command.h"

#include <fmt/format.h>

#include <memory>

#include "common/clock.h"
#include "common/random.h"
#include "pki/authority.h"
#include "pki/ocsp.h"
#include "pki/verify.h"

namespace mcim::cli {
namespace {

using namespace mcim::pki;

struct CaArgs {
  std::string name, out, parent, ocsp_url;
  int days = 3650;
};

struct IssueArgs {
  std::string ca, profile, subject, ocsp_url, out, device_id, model;
  std::vector<std::string> sans;
  int days = 365;
};

struct RevokeArgs {
  std::string ca, cert, reason = "unspecified";
};

struct VerifyArgs {
  std::string ca_file, cert, untrusted;
  bool ocsp = false;
};

Result<Fields> run_ca(const CaArgs& a) {
  if (a.name.empty()) return fail(ErrorCode::missing_argument, "--name: required");
  if (a.out.empty()) return fail(ErrorCode::missing_argument, "--out: required");
  SystemClock clock;
  OsRandom rng;
  std::optional<Authority> parent;
  if (!a.parent.empty()) {
    auto p = Authority::open(a.parent);
    if (!p) return std::unexpected(p.error());
    parent.emplace(std::move(*p));
  }
  auto ca =
      Authority::create(a.out, a.name, parent ? &*parent : nullptr, a.days, a.ocsp_url, clock, rng);
  if (!ca) return std::unexpected(ca.error());
  Fields f;
  f.add("dir", a.out)
      .add("subject", subject_text(ca->cert()))
      .add("serial", serial_hex(ca->cert()));
  return f;
}

Result<Fields> run_issue(const IssueArgs& a) {
  if (a.ca.empty()) return fail(ErrorCode::missing_argument, "--ca: required");
  if (a.out.empty()) return fail(ErrorCode::missing_argument, "--out: required");
  auto profile = parse_profile(a.profile);
  if (!profile) return std::unexpected(profile.error());
  CertSpec spec;
  spec.profile = *profile;
  spec.subject = a.subject;
  spec.sans = a.sans;
  spec.ocsp_url = a.ocsp_url;
  spec.days = a.days;
  spec.device_id = a.device_id;
  spec.model = a.model;
  if (auto v = validate(spec); !v) return std::unexpected(v.error());
  auto ca = Authority::open(a.ca);
  if (!ca) return std::unexpected(ca.error());
  SystemClock clock;
  OsRandom rng;
  auto issued = ca->issue(spec, clock, rng);
  if (!issued) return std::unexpected(issued.error());
  if (auto r = write_private_key(a.out + ".key", issued->key.get()); !r)
    return std::unexpected(r.error());
  if (auto r = write_certificate(a.out + ".pem", issued->cert.get()); !r)
    return std::unexpected(r.error());
  Fields f;
  f.add("cert", a.out + ".pem").add("key", a.out + ".key");
  f.add("serial", serial_hex(issued->cert.get())).add("subject", subject_text(issued->cert.get()));
  return f;
}

Result<Fields> run_revoke(const RevokeArgs& a) {
  if (a.ca.empty()) return fail(ErrorCode::missing_argument, "--ca: required");
  if (a.cert.empty()) return fail(ErrorCode::missing_argument, "--cert: required");
  auto reason = parse_revocation_reason(a.reason);
  if (!reason) return std::unexpected(reason.error());
  auto cert = load_certificate(a.cert);
  if (!cert) return std::unexpected(cert.error());
  auto ca = Authority::open(a.ca);
  if (!ca) return std::unexpected(ca.error());
  SystemClock clock;
  if (auto r = ca->revoke(cert->get(), *reason, clock.now()); !r) return std::unexpected(r.error());
  Fields f;
  f.add("serial", serial_hex(cert->get())).add("status", "revoked").add("reason", a.reason);
  return f;
}

Result<Fields> run_verify(const VerifyArgs& a) {
  if (a.ca_file.empty()) return fail(ErrorCode::missing_argument, "--ca-file: required");
  if (a.cert.empty()) return fail(ErrorCode::missing_argument, "--cert: required");
  auto anchors = TrustAnchors::from_file(a.ca_file);
  if (!anchors) return std::unexpected(anchors.error());
  auto cert = load_certificate(a.cert);
  if (!cert) return std::unexpected(cert.error());
  std::vector<X509Ptr> untrusted;
  if (!a.untrusted.empty()) {
    auto u = load_certificates(a.untrusted);
    if (!u) return std::unexpected(u.error());
    untrusted = std::move(*u);
  }
  std::vector<X509*> raw;
  for (auto& c : untrusted) raw.push_back(c.get());
  SystemClock clock;
  auto chain = verify_chain(*anchors, cert->get(), raw, clock.now());
  if (!chain) return std::unexpected(chain.error());
  Fields f;
  f.add("subject", subject_text(cert->get())).add("serial", serial_hex(cert->get()));
  f.add("chain", std::to_string(chain->chain.size()));
  if (a.ocsp) {
    OsRandom rng;
    auto answer = query_ocsp(cert->get(), chain->issuer(), "", clock, rng);
    if (!answer) return std::unexpected(answer.error());
    if (answer->status == CertStatus::revoked) {
      return fail(ErrorCode::cert_revoked, fmt::format("{}: revoked (OCSP)", a.cert));
    }
    if (answer->status == CertStatus::unknown) {
      return fail(ErrorCode::cert_unknown,
                  fmt::format("{}: unknown to the OCSP responder", a.cert));
    }
    f.add("ocsp", "good");
  }
  f.add("status", "valid");
  return f;
}

}  // namespace

void register_pki(CLI::App& app, Result<Fields>* result) {
  auto* pki = app.add_subcommand("pki", "certificates, OCSP, MCIM packages, attestation");
  pki->require_subcommand(1);

  auto ca_args = std::make_shared<CaArgs>();
  auto* ca = pki->add_subcommand("ca", "create a root CA, or an intermediate with --parent");
  ca->add_option("--name", ca_args->name, "CA name (its CN)");
  ca->add_option("--out", ca_args->out, "directory to create (ca.pem, ca.key, index.txt, ...)");
  ca->add_option("--parent", ca_args->parent, "parent CA directory (makes an intermediate)");
  ca->add_option("--ocsp-url", ca_args->ocsp_url, "OCSP URL for the intermediate's AIA");
  ca->add_option("--days", ca_args->days, "validity in days (default 3650)");
  ca->callback([ca_args, result] { *result = run_ca(*ca_args); });

  auto issue_args = std::make_shared<IssueArgs>();
  auto* issue = pki->add_subcommand("issue", "issue a certificate and a new P-256 key");
  issue->add_option("--ca", issue_args->ca, "issuing CA directory");
  issue->add_option("--profile", issue_args->profile,
                    "platform tls-server tls-client package-signing ocsp-signing result-signing "
                    "encryption");
  issue->add_option("--subject", issue_args->subject, "subject, e.g. \"CN=name,O=org\"");
  issue->add_option("--san", issue_args->sans, "DNS:name, IP:addr, URI:uri (repeatable)");
  issue->add_option("--ocsp-url", issue_args->ocsp_url, "OCSP responder URL for AIA");
  issue->add_option("--days", issue_args->days, "validity in days (default 365)");
  issue->add_option("--device-id", issue_args->device_id, "platform profile: the device id");
  issue->add_option("--model", issue_args->model, "platform profile: the device model");
  issue->add_option("--out", issue_args->out, "output prefix: PREFIX.pem and PREFIX.key (0600)");
  issue->callback([issue_args, result] { *result = run_issue(*issue_args); });

  auto revoke_args = std::make_shared<RevokeArgs>();
  auto* revoke = pki->add_subcommand("revoke", "mark a certificate revoked in its CA's index");
  revoke->add_option("--ca", revoke_args->ca, "issuing CA directory");
  revoke->add_option("--cert", revoke_args->cert, "the certificate (PEM or DER)");
  revoke->add_option("--reason", revoke_args->reason,
                     "unspecified keyCompromise CACompromise affiliationChanged superseded "
                     "cessationOfOperation certificateHold");
  revoke->callback([revoke_args, result] { *result = run_revoke(*revoke_args); });

  auto verify_args = std::make_shared<VerifyArgs>();
  auto* verify = pki->add_subcommand("verify", "verify a certificate's chain (exit 1 if invalid)");
  verify->add_option("--ca-file", verify_args->ca_file, "trusted root certificate(s), PEM");
  verify->add_option("--cert", verify_args->cert, "the certificate to verify");
  verify->add_option("--untrusted", verify_args->untrusted, "intermediate certificates, PEM");
  verify->add_flag("--ocsp", verify_args->ocsp, "also ask the OCSP responder named in AIA");
  verify->callback([verify_args, result] { *result = run_verify(*verify_args); });

  register_pki_ocsp(*pki, result);
  register_pki_package(*pki, result);
  register_pki_attestation(*pki, result);
}

}  // namespace mcim::cli
