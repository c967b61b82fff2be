#include "tre/instruction.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <utility>

#include "pki/package.h"
#include "pki/signed_json.h"

namespace mcim::tre {
namespace {

using pki::Json;

// Type tags: an operator's signature over one kind of document, or the platform key's, can never
// be passed off as another kind.
constexpr std::string_view kInstructionType = "mcim-instruction/1";
constexpr std::string_view kStatusType = "mcim-status/1";
constexpr std::string_view kInstructionWhat = "instruction document";
constexpr std::string_view kStatusWhat = "status report";

// The encoders below build the JSON and run the decoder over it, so nothing is ever signed that a
// receiver would refuse; its bad_format becomes invalid_argument with the same message.
std::unexpected<Error> as_invalid_argument(const Error& e) {
  return fail(ErrorCode::invalid_argument, e.message);
}

std::uint64_t wire_time(std::chrono::sys_seconds t) {
  // A negative time wraps to a value above kMaxUtcSeconds, which decoding refuses.
  return static_cast<std::uint64_t>(pki::utc_seconds(t));
}

// ---- The signer: a package-signing certificate naming its operator ----------------------------

// The package-signing profile as package.cpp checks it: a content signer (end entity,
// digitalSignature and nonRepudiation, P-256, not a platform key) with an explicit
// emailProtection EKU (the S/MIME purpose alone also passes certificates without any EKU), whose
// urn:mcim:operator: SAN says which operator it speaks for. chain_invalid otherwise.
Result<std::string> check_signer_profile(X509* cert) {
  if (auto r = pki::check_document_signer(cert); !r) return std::unexpected(r.error());
  if ((X509_get_extension_flags(cert) & EXFLAG_XKUSAGE) == 0 ||
      (X509_get_extended_key_usage(cert) & XKU_SMIME) == 0) {
    return fail(ErrorCode::chain_invalid,
                "signer: not a package-signing certificate (no emailProtection EKU)");
  }
  auto id = pki::signer_operator_id(cert);
  if (!id || !pki::valid_mcim_id(*id)) {
    return fail(ErrorCode::chain_invalid,
                "signer: certificate names no operator (SAN URI urn:mcim:operator:<id>)");
  }
  return std::move(*id);
}

// Every carried certificate must be on the verified path: an unused one could be altered
// without any signature noticing.
bool all_on_path(const std::vector<pki::X509Ptr>& certs, const pki::VerifiedChain& path) {
  return std::all_of(certs.begin(), certs.end(), [&](const pki::X509Ptr& c) {
    return std::any_of(path.chain.begin(), path.chain.end(),
                       [&](const pki::X509Ptr& p) { return X509_cmp(p.get(), c.get()) == 0; });
  });
}

// As for package signers: the chain to the operator roots now with the S/MIME signing purpose,
// the profile, then the signature. Returns the operator id.
Result<std::string> verify_operator_signer(const pki::Envelope& env, std::string_view signed_bytes,
                                           const pki::TrustAnchors& anchors, const Clock& clock) {
  X509* signer = env.certificates.front().get();
  std::vector<X509*> untrusted;
  for (std::size_t i = 1; i < env.certificates.size(); ++i)
    untrusted.push_back(env.certificates[i].get());
  auto path = pki::verify_chain(anchors, signer, untrusted, clock.now(), pki::Purpose::smime_sign);
  if (!path) {
    const ErrorCode code = path.error().code == ErrorCode::cert_expired ? ErrorCode::cert_expired
                                                                        : ErrorCode::chain_invalid;
    return fail(code, fmt::format("instruction: signer: {}", path.error().message));
  }
  if (!all_on_path(env.certificates, *path)) {
    return fail(ErrorCode::bad_format, "instruction: a certificate outside the signer's chain");
  }
  auto operator_id = check_signer_profile(signer);
  if (!operator_id) {
    return fail(operator_id.error().code, "instruction: " + operator_id.error().message);
  }
  if (!pki::verify_bytes(X509_get0_pubkey(signer), signed_bytes, env.signature)) {
    return fail(ErrorCode::signature_invalid,
                "instruction: the signature does not verify with the signer's key");
  }
  return operator_id;
}

// ---- Instruction ------------------------------------------------------------------------------

Json instruction_json(const Instruction& in) {
  Json j = Json::object();
  j["type"] = kInstructionType;
  j["device"] = in.device_id;
  j["credential"] = in.credential;
  j["action"] = in.list ? kListAction : to_string(in.action);
  j["sequence"] = in.sequence;
  j["time"] = wire_time(in.time);
  return j;
}

Result<Instruction> decode_instruction(const Json& j) {
  constexpr std::string_view p = "instruction";
  if (auto r =
          pki::expect_members(j, p, {"action", "credential", "device", "sequence", "time", "type"});
      !r) {
    return std::unexpected(r.error());
  }
  if (auto r = pki::type_member(j, p, kInstructionType); !r) return std::unexpected(r.error());
  Instruction out;
  auto action = pki::string_member(j, p, "action");
  if (!action) return std::unexpected(action.error());
  out.list = **action == kListAction;
  if (!out.list) {
    const auto parsed = parse_action(**action);
    if (!parsed) return std::unexpected(pki::bad("instruction.action: not an action name"));
    out.action = *parsed;
  }
  auto credential = pki::token_member(j, p, "credential");
  if (!credential) return std::unexpected(credential.error());
  out.credential = std::move(*credential);
  if (out.list != (out.credential == "-")) {
    return std::unexpected(pki::bad("instruction.credential: \"-\" for a list, and only then"));
  }
  auto device = pki::token_member(j, p, "device");
  if (!device) return std::unexpected(device.error());
  out.device_id = std::move(*device);
  auto sequence = pki::uint_member(j, p, "sequence", 1, kMaxSequence);
  if (!sequence) return std::unexpected(sequence.error());
  out.sequence = *sequence;
  auto time = pki::time_member(j, p, "time");
  if (!time) return std::unexpected(time.error());
  out.time = *time;
  return out;
}

// ---- Status report ----------------------------------------------------------------------------

Json report_json(const StatusReport& r) {
  Json j = Json::object();
  j["type"] = kStatusType;
  j["device"] = r.device_id;
  j["event"] = r.event;
  j["credential"] = r.credential;
  j["package"] = r.package_id;
  j["outcome"] = r.outcome;
  j["state"] = r.state;
  j["sequence"] = r.sequence;
  j["time"] = wire_time(r.time);
  if (r.event == kListAction) {
    Json list = Json::array();
    for (const ListedCredential& c : r.credentials) {
      list.push_back(Json{{"id", c.id}, {"package", c.package_id}, {"state", c.state}});
    }
    j["credentials"] = std::move(list);
  }
  return j;
}

// The answer to a list: [{"id","package","state"}...], sorted by id, no duplicates.
Result<std::vector<ListedCredential>> decode_listed(const Json& j) {
  constexpr std::string_view p = "report.credentials[]";
  auto list = pki::array_member(j, "report", "credentials", 0, kMaxListed);
  if (!list) return std::unexpected(list.error());
  std::vector<ListedCredential> out;
  for (const Json& c : **list) {
    if (auto r = pki::expect_members(c, p, {"id", "package", "state"}); !r) {
      return std::unexpected(r.error());
    }
    ListedCredential l;
    for (auto [key, field] : {std::pair{"id", &l.id}, std::pair{"package", &l.package_id},
                              std::pair{"state", &l.state}}) {
      auto v = pki::token_member(c, p, key);
      if (!v) return std::unexpected(v.error());
      *field = std::move(*v);
    }
    if (!parse_mcim_state(l.state))
      return std::unexpected(pki::bad(fmt::format("{}.state: not a state", p)));
    if (!out.empty() && out.back().id >= l.id) {
      return std::unexpected(pki::bad("report.credentials: not sorted by id"));
    }
    out.push_back(std::move(l));
  }
  return out;
}

Result<StatusReport> decode_report(const Json& j) {
  constexpr std::string_view p = "report";
  const bool list = j.is_object() && j.contains("event") && j["event"] == kListAction;
  auto members =
      list ? pki::expect_members(j, p,
                                 {"credential", "credentials", "device", "event", "outcome",
                                  "package", "sequence", "state", "time", "type"})
           : pki::expect_members(j, p,
                                 {"credential", "device", "event", "outcome", "package", "sequence",
                                  "state", "time", "type"});
  if (!members) return std::unexpected(members.error());
  if (auto r = pki::type_member(j, p, kStatusType); !r) return std::unexpected(r.error());
  StatusReport out;
  // "-" is a token: the placeholder for an unknown credential, package or state needs no rule.
  for (auto [key, field] :
       {std::pair{"credential", &out.credential}, std::pair{"device", &out.device_id},
        std::pair{"event", &out.event}, std::pair{"outcome", &out.outcome},
        std::pair{"package", &out.package_id}, std::pair{"state", &out.state}}) {
    auto v = pki::token_member(j, p, key);
    if (!v) return std::unexpected(v.error());
    *field = std::move(*v);
  }
  auto sequence = pki::uint_member(j, p, "sequence", 0, kMaxSequence);
  if (!sequence) return std::unexpected(sequence.error());
  out.sequence = *sequence;
  auto time = pki::time_member(j, p, "time");
  if (!time) return std::unexpected(time.error());
  out.time = *time;
  if (list) {
    auto listed = decode_listed(j);
    if (!listed) return std::unexpected(listed.error());
    out.credentials = std::move(*listed);
  }
  return out;
}

}  // namespace

Result<std::string> sign_instruction(const Instruction& instruction, EVP_PKEY* key,
                                     const std::vector<X509*>& certs) {
  if (key == nullptr || certs.empty() ||
      std::find(certs.begin(), certs.end(), nullptr) != certs.end()) {
    return fail(ErrorCode::missing_argument, "instruction: a key and its certificates required");
  }
  if (certs.size() > pki::kMaxEnvelopeCertificates) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("instruction: at most {} certificates", pki::kMaxEnvelopeCertificates));
  }
  if (!pki::is_p256(key) || X509_check_private_key(certs.front(), key) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::invalid_argument,
                "instruction: the key is not EC P-256 or does not match the signer certificate");
  }
  if (auto id = check_signer_profile(certs.front()); !id) {
    return fail(ErrorCode::invalid_argument, "instruction " + id.error().message);
  }
  const Json j = instruction_json(instruction);
  if (auto r = decode_instruction(j); !r) return as_invalid_argument(r.error());
  return pki::sign_envelope("instruction", j, key, certs);
}

Result<VerifiedInstruction> verify_instruction(std::string_view text,
                                               const pki::TrustAnchors& operators,
                                               const Clock& clock, std::chrono::seconds max_age) {
  text = pki::document_text(text);
  auto env = pki::decode_envelope(text, kInstructionWhat, "instruction", true);
  if (!env) return std::unexpected(env.error());
  auto instruction = decode_instruction(env->doc["instruction"]);
  if (!instruction) return std::unexpected(instruction.error());
  auto inner = pki::canonical_inner(*env, text, kInstructionWhat, "instruction");
  if (!inner) return std::unexpected(inner.error());
  auto operator_id = verify_operator_signer(*env, *inner, operators, clock);
  if (!operator_id) return std::unexpected(operator_id.error());
  // After the signature: an unauthenticated document is refused as such, never as merely stale.
  const auto now = pki::floor_seconds(clock.now());
  if (instruction->time > now + max_age || instruction->time < now - max_age) {
    return fail(ErrorCode::stale_report,
                fmt::format("instruction: made at {}, more than {} s from now",
                            pki::utc_text(instruction->time), max_age.count()));
  }
  return VerifiedInstruction{std::move(*instruction), std::move(*operator_id)};
}

Result<std::string> sign_status_report(const StatusReport& report, EVP_PKEY* platform_key) {
  if (platform_key == nullptr) return fail(ErrorCode::missing_argument, "status report: no key");
  const Json j = report_json(report);
  if (auto r = decode_report(j); !r) return as_invalid_argument(r.error());
  return pki::sign_envelope("report", j, platform_key);
}

Result<StatusReport> verify_status_report(std::string_view text, X509* platform_cert) {
  if (platform_cert == nullptr) {
    return fail(ErrorCode::missing_argument, "status report: no platform certificate");
  }
  text = pki::document_text(text);
  auto env = pki::decode_envelope(text, kStatusWhat, "report", false);
  if (!env) return std::unexpected(env.error());
  auto report = decode_report(env->doc["report"]);
  if (!report) return std::unexpected(report.error());
  auto inner = pki::canonical_inner(*env, text, kStatusWhat, "report");
  if (!inner) return std::unexpected(inner.error());
  if (!pki::verify_bytes(X509_get0_pubkey(platform_cert), *inner, env->signature)) {
    return fail(ErrorCode::signature_invalid,
                "status report: the signature does not verify with the platform key");
  }
  return report;
}

Result<StatusReport> decode_status_report(std::string_view text) {
  text = pki::document_text(text);
  auto env = pki::decode_envelope(text, kStatusWhat, "report", false);
  if (!env) return std::unexpected(env.error());
  return decode_report(env->doc["report"]);
}

Result<StatusReport> verify_install_report(std::string_view text, X509* platform_cert,
                                           std::string_view device_id,
                                           std::string_view package_id) {
  auto report = verify_status_report(text, platform_cert);
  if (!report) return std::unexpected(report.error());
  if (report->device_id != device_id) {
    return fail(ErrorCode::wrong_recipient, "report: names another device");
  }
  const bool names_package =
      report->package_id == package_id || (report->package_id == "-" && report->outcome != "ok");
  if (report->event != "install" || !names_package) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("report: not the install report of package {}", package_id));
  }
  return report;
}

Result<StatusReport> verify_instruction_report(std::string_view text, X509* platform_cert,
                                               std::string_view device_id, std::uint64_t sequence) {
  auto report = verify_status_report(text, platform_cert);
  if (!report) return std::unexpected(report.error());
  if (report->device_id != device_id) {
    return fail(ErrorCode::wrong_recipient, "report: names another device");
  }
  const bool unverifiable =
      report->event == "instruction" && report->sequence == 0 && report->outcome != "ok";
  if (report->event == "install" || (report->sequence != sequence && !unverifiable)) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("report: not the answer to instruction {}", sequence));
  }
  return report;
}

namespace {

Result<StatusReport> verify_discard(std::string_view text, X509* platform_cert,
                                    std::string_view device_id, std::string_view credential,
                                    std::string_view package_id) {
  auto report = verify_status_report(text, platform_cert);
  if (!report) return std::unexpected(report.error());
  if (report->device_id != device_id) {
    return fail(ErrorCode::wrong_recipient, "report: names another device");
  }
  const bool fits = report->event == kDiscardEvent && report->outcome == "ok" &&
                    report->state == "deleted" && report->credential == credential &&
                    (package_id.empty() || report->package_id == package_id);
  if (!fits) {
    return fail(
        ErrorCode::invalid_argument,
        fmt::format("report: not the discard of {}",
                    credential == "-" ? "a credential for package " + std::string(package_id)
                                      : "credential " + std::string(credential)));
  }
  return report;
}

}  // namespace

Result<StatusReport> verify_discard_report(std::string_view text, X509* platform_cert,
                                           std::string_view device_id,
                                           std::string_view credential) {
  if (credential == "-") return fail(ErrorCode::invalid_argument, "credential: required");
  return verify_discard(text, platform_cert, device_id, credential, "");
}

Result<StatusReport> verify_discard_notice(std::string_view text, X509* platform_cert,
                                           std::string_view device_id,
                                           std::string_view package_id) {
  if (package_id.empty() || package_id == "-") {
    return fail(ErrorCode::invalid_argument, "package_id: required");
  }
  return verify_discard(text, platform_cert, device_id, "-", package_id);
}

}  // namespace mcim::tre
