// `mcim pki attest | reference | validate | verify-result`: the TRE's attestation report, the
// supplier's reference measurements, the PVA's validation into a signed result, and the SHO's
// check of that result (docs/attestation.md). An untrusted verdict is exit 1 with every failed
// check in the message; a bad file is exit 2 naming it.
#include <fmt/format.h>
#include <openssl/x509v3.h>

#include <memory>
#include <optional>

#include "cli/pki_command.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/random.h"
#include "pki/attestation.h"
#include "pki/certificate.h"
#include "pki/ocsp.h"

namespace mcim::cli {
namespace {

using namespace mcim::pki;

struct AttestArgs {
  std::string key, cert, nonce, measurements, state = "pristine", out;
};

struct ReferenceArgs {
  std::string signer, model, measurements, chain, out;
};

struct ValidateArgs {
  std::string report, platform_cert, untrusted, ca_file, nonce, signer, out, ocsp_status;
  std::vector<std::string> references;
  bool ocsp = false;
};

struct VerifyResultArgs {
  std::string result, ca_file, nonce;
  int max_age = 300;
};

Result<ByteVec> parse_nonce(const std::string& hex) {
  if (auto r = require(hex, "--nonce"); !r) return std::unexpected(r.error());
  auto nonce = parse_hex(hex, "--nonce");
  if (!nonce) return std::unexpected(nonce.error());
  if (nonce->size() < 16 || nonce->size() > 64) {
    return fail(ErrorCode::invalid_argument, "--nonce: 16-64 bytes (32-128 hex digits) expected");
  }
  return nonce;
}

Result<std::vector<Measurement>> load_measurements(const std::string& path) {
  if (auto r = require(path, "--measurements"); !r) return std::unexpected(r.error());
  auto text = read_text_file(path);
  if (!text) return std::unexpected(text.error());
  auto ms = parse_measurement_lines(*text);
  if (!ms) return fail(ms.error().code, fmt::format("{}: {}", path, ms.error().message));
  return ms;
}

std::vector<X509*> raw(const std::vector<X509Ptr>& certs) {
  std::vector<X509*> out;
  for (const auto& c : certs) out.push_back(c.get());
  return out;
}

Result<std::vector<X509Ptr>> load_optional_certificates(const std::string& path) {
  if (path.empty()) return std::vector<X509Ptr>{};
  return load_certificates(path);
}

// A signer given as PREFIX: PREFIX.key and PREFIX.pem (as `mcim pki issue --out PREFIX` writes),
// the certificate first in PREFIX.pem, optionally followed by its intermediates.
Result<KeyPair> load_signer(const std::string& prefix) {
  if (auto r = require(prefix, "--signer"); !r) return std::unexpected(r.error());
  return load_key_pair(prefix);
}

Result<void> write_document(const std::string& path, const std::string& doc) {
  return write_file_atomic(path, doc + "\n");
}

UtcSeconds now_seconds(const Clock& clock) {
  return std::chrono::floor<std::chrono::seconds>(clock.now());
}

// ---- attest ------------------------------------------------------------------------------------

Result<Report> report_from(const AttestArgs& a, X509* cert, const Clock& clock) {
  Report r;
  const auto id = platform_device_id(cert);
  if (!id) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("--cert {}: not a platform certificate (no device id)", a.cert));
  }
  r.device_id = *id;
  auto state = parse_tre_state(a.state);
  if (!state) return std::unexpected(state.error());
  r.state = *state;
  auto nonce = parse_nonce(a.nonce);
  if (!nonce) return std::unexpected(nonce.error());
  r.nonce = std::move(*nonce);
  auto ms = load_measurements(a.measurements);
  if (!ms) return std::unexpected(ms.error());
  r.measurements = std::move(*ms);
  r.time = now_seconds(clock);
  return r;
}

Result<Fields> run_attest(const AttestArgs& a) {
  for (const auto& [v, name] :
       {std::pair{&a.key, "--key"}, {&a.cert, "--cert"}, {&a.out, "--out"}}) {
    if (auto r = require(*v, name); !r) return std::unexpected(r.error());
  }
  auto key = load_private_key(a.key);
  if (!key) return std::unexpected(key.error());
  auto cert = load_certificate(a.cert);
  if (!cert) return std::unexpected(cert.error());
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    return std::unexpected(
        openssl_error(ErrorCode::invalid_argument, "--key does not match --cert"));
  }
  SystemClock clock;
  auto report = report_from(a, cert->get(), clock);
  if (!report) return std::unexpected(report.error());
  auto doc = sign_report(*report, key->get());
  if (!doc) return std::unexpected(doc.error());
  if (auto w = write_document(a.out, *doc); !w) return std::unexpected(w.error());
  Fields f;
  f.add("report", a.out).add("device_id", report->device_id);
  f.add("state", std::string(to_string(report->state)));
  f.add("measurements", std::to_string(report->measurements.size()));
  f.hex("nonce", ByteView(report->nonce))
      .add("time", std::to_string(report->time.time_since_epoch().count()));
  return f;
}

// ---- reference ---------------------------------------------------------------------------------

Result<Fields> run_reference(const ReferenceArgs& a) {
  for (const auto& [v, name] : {std::pair{&a.model, "--model"}, {&a.out, "--out"}}) {
    if (auto r = require(*v, name); !r) return std::unexpected(r.error());
  }
  auto signer = load_signer(a.signer);
  if (!signer) return std::unexpected(signer.error());
  auto chain = load_optional_certificates(a.chain);
  if (!chain) return std::unexpected(chain.error());
  auto ms = load_measurements(a.measurements);
  if (!ms) return std::unexpected(ms.error());
  SystemClock clock;
  ReferenceSet refs{a.model, std::move(*ms), now_seconds(clock)};
  std::vector<X509*> certs = raw(signer->certs);
  for (X509* c : raw(*chain)) certs.push_back(c);
  auto doc = sign_references(refs, signer->key.get(), certs);
  if (!doc) return std::unexpected(doc.error());
  if (auto w = write_document(a.out, *doc); !w) return std::unexpected(w.error());
  Fields f;
  f.add("references", a.out).add("model", refs.model);
  f.add("measurements", std::to_string(refs.measurements.size()));
  f.add("issued", std::to_string(refs.issued.time_since_epoch().count()));
  f.add("signer", subject_text(signer->certs.front().get()));
  return f;
}

// ---- validate ----------------------------------------------------------------------------------

// The platform certificate's issuer, for the OCSP request: among the intermediates, else a root.
X509* find_issuer(X509* leaf, const std::vector<X509Ptr>& untrusted, const TrustAnchors& anchors) {
  for (const auto& c : untrusted) {
    if (X509_check_issued(c.get(), leaf) == X509_V_OK) return c.get();
  }
  for (const auto& c : anchors.roots()) {
    if (X509_check_issued(c.get(), leaf) == X509_V_OK) return c.get();
  }
  return nullptr;
}

Result<void> check_revocation_args(const ValidateArgs& a) {
  if (a.ocsp && !a.ocsp_status.empty()) {
    return fail(ErrorCode::conflicting_arguments, "--ocsp and --ocsp-status: give one");
  }
  if (!a.ocsp && a.ocsp_status.empty()) {
    return fail(ErrorCode::missing_argument,
                "--ocsp or --ocsp-status good|revoked|unknown: the revocation status is required");
  }
  if (!a.ocsp && a.ocsp_status != "good" && a.ocsp_status != "revoked" &&
      a.ocsp_status != "unknown") {
    return fail(ErrorCode::invalid_argument, "--ocsp-status: one of good revoked unknown");
  }
  return {};
}

// An error here is not bad input: it becomes the validation's ocsp_invalid failure.
Result<RevocationAnswer> revocation_status(const ValidateArgs& a, X509* leaf,
                                           const std::vector<X509Ptr>& untrusted,
                                           const TrustAnchors& anchors, const Clock& clock) {
  if (a.ocsp) {
    X509* issuer = find_issuer(leaf, untrusted, anchors);
    if (issuer == nullptr) {
      return fail(ErrorCode::ocsp_invalid,
                  "the platform certificate's issuer is not in --untrusted");
    }
    OsRandom rng;
    return query_ocsp(leaf, issuer, "", clock, rng);
  }
  RevocationAnswer answer;
  answer.status = a.ocsp_status == "good"      ? CertStatus::good
                  : a.ocsp_status == "revoked" ? CertStatus::revoked
                                               : CertStatus::unknown;
  answer.this_update = clock.now();
  return answer;
}

Result<Validator> load_validator(const ValidateArgs& a, const std::vector<X509Ptr>& untrusted,
                                 const Clock& clock) {
  auto anchors = TrustAnchors::from_file(a.ca_file);
  if (!anchors) return std::unexpected(anchors.error());
  Validator validator(std::move(*anchors));
  if (a.references.empty()) return fail(ErrorCode::missing_argument, "--references: required");
  for (const auto& path : a.references) {
    auto text = read_text_file(path);
    if (!text) return std::unexpected(text.error());
    auto refs = verify_references(*text, validator.supplier(), raw(untrusted), clock);
    if (!refs) return fail(refs.error().code, fmt::format("{}: {}", path, refs.error().message));
    if (auto r = validator.add_references(std::move(*refs)); !r) {
      return fail(r.error().code, fmt::format("{}: {}", path, r.error().message));
    }
  }
  return validator;
}

std::string describe_failures(const std::vector<Failure>& failures) {
  std::string out;
  for (const auto& f : failures) {
    out += fmt::format("\n  {} {}: {}", to_string(f.check), to_string(f.code), f.message);
  }
  return out;
}

Result<SignedReport> load_report(const std::string& path) {
  auto text = read_text_file(path);
  if (!text) return std::unexpected(text.error());
  auto report = decode_signed_report(*text);
  if (!report)
    return fail(report.error().code, fmt::format("{}: {}", path, report.error().message));
  return report;
}

Result<Fields> run_validate(const ValidateArgs& a) {
  for (const auto& [v, name] : {std::pair{&a.report, "--report"},
                                {&a.platform_cert, "--platform-cert"},
                                {&a.ca_file, "--ca-file"},
                                {&a.out, "--out"}}) {
    if (auto r = require(*v, name); !r) return std::unexpected(r.error());
  }
  if (auto r = check_revocation_args(a); !r) return std::unexpected(r.error());
  auto nonce = parse_nonce(a.nonce);
  if (!nonce) return std::unexpected(nonce.error());
  auto report = load_report(a.report);
  if (!report) return std::unexpected(report.error());
  auto leaf = load_certificate(a.platform_cert);
  if (!leaf) return std::unexpected(leaf.error());
  auto untrusted = load_optional_certificates(a.untrusted);
  if (!untrusted) return std::unexpected(untrusted.error());
  SystemClock clock;
  auto validator = load_validator(a, *untrusted, clock);
  if (!validator) return std::unexpected(validator.error());
  auto signer_files = load_signer(a.signer);
  if (!signer_files) return std::unexpected(signer_files.error());
  auto signer = ResultSigner::create(std::move(signer_files->key), std::move(signer_files->certs));
  if (!signer) return fail(signer.error().code, "--signer: " + signer.error().message);

  const auto revocation =
      revocation_status(a, leaf->get(), *untrusted, validator->supplier(), clock);
  const ValidationResult result =
      validator->validate(*report, leaf->get(), raw(*untrusted), revocation, *nonce, clock);
  auto doc = signer->sign(result);
  if (!doc) return std::unexpected(doc.error());
  if (auto w = write_document(a.out, *doc); !w) return std::unexpected(w.error());
  if (!result.trusted()) {
    // Every failure code is a refusal, so this is exit 1.
    return fail(result.failures.front().code,
                fmt::format("untrusted: device {}, {} failed check(s), signed result in {}:{}",
                            result.device_id, result.failures.size(), a.out,
                            describe_failures(result.failures)));
  }
  Fields f;
  f.add("verdict", "trusted").add("device_id", result.device_id);
  f.hex("nonce", ByteView(result.nonce)).add("result", a.out);
  return f;
}

// ---- verify-result -----------------------------------------------------------------------------

Result<Fields> run_verify_result(const VerifyResultArgs& a) {
  for (const auto& [v, name] : {std::pair{&a.result, "--result"}, {&a.ca_file, "--ca-file"}}) {
    if (auto r = require(*v, name); !r) return std::unexpected(r.error());
  }
  if (a.max_age < 1) return fail(ErrorCode::invalid_argument, "--max-age: at least 1 second");
  auto nonce = parse_nonce(a.nonce);
  if (!nonce) return std::unexpected(nonce.error());
  auto anchors = TrustAnchors::from_file(a.ca_file);
  if (!anchors) return std::unexpected(anchors.error());
  auto text = read_text_file(a.result);
  if (!text) return std::unexpected(text.error());
  SystemClock clock;
  auto result =
      verify_validation_result(*text, *anchors, *nonce, clock, std::chrono::seconds(a.max_age));
  if (!result)
    return fail(result.error().code, fmt::format("{}: {}", a.result, result.error().message));
  if (!result->trusted()) {
    return fail(result->failures.front().code,
                fmt::format("the PVA found device {} untrusted:{}", result->device_id,
                            describe_failures(result->failures)));
  }
  Fields f;
  f.add("verdict", "trusted").add("device_id", result->device_id);
  f.add("time", std::to_string(result->time.time_since_epoch().count()));
  return f;
}

}  // namespace

void register_pki_attestation(CLI::App& pki, Result<Fields>* result) {
  auto at = std::make_shared<AttestArgs>();
  auto* attest =
      pki.add_subcommand("attest", "TRE: sign an attestation report with the platform key");
  attest->add_option("--key", at->key, "platform private key");
  attest->add_option("--cert", at->cert, "platform certificate (gives the device id)");
  attest->add_option("--nonce", at->nonce, "the PVA's nonce, 16-64 bytes in hex");
  attest->add_option("--measurements", at->measurements, "file of `name sha256hex` lines");
  attest->add_option("--state", at->state, "TRE state: pristine (default) provisioned lockdown");
  attest->add_option("--out", at->out, "report file to write");
  attest->callback([at, result] { *result = run_attest(*at); });

  auto rf = std::make_shared<ReferenceArgs>();
  auto* reference =
      pki.add_subcommand("reference", "supplier: sign a model's reference measurements");
  reference->add_option("--signer", rf->signer,
                        "PREFIX of PREFIX.pem/PREFIX.key (result-signing profile)");
  reference->add_option("--model", rf->model, "device model, as in its platform certificates");
  reference->add_option("--measurements", rf->measurements, "file of `name sha256hex` lines");
  reference->add_option("--chain", rf->chain,
                        "intermediates to embed, PEM (e.g. the CA's chain.pem)");
  reference->add_option("--out", rf->out, "references file to write");
  reference->callback([rf, result] { *result = run_reference(*rf); });

  auto va = std::make_shared<ValidateArgs>();
  auto* validate = pki.add_subcommand(
      "validate", "PVA: validate a report, write a signed result (exit 0 trusted, 1 untrusted)");
  validate->add_option("--report", va->report, "the report to validate");
  validate->add_option("--platform-cert", va->platform_cert, "the device's platform certificate");
  validate->add_option("--untrusted", va->untrusted, "intermediate certificates, PEM");
  validate->add_option("--ca-file", va->ca_file, "supplier root certificate(s), PEM");
  validate->add_option("--references", va->references, "signed references file (repeatable)");
  validate->add_option("--nonce", va->nonce, "the nonce the PVA sent, hex");
  validate->add_option("--signer", va->signer, "PVA result signer PREFIX (PREFIX.pem/PREFIX.key)");
  validate->add_option("--out", va->out, "result file to write");
  validate->add_option("--ocsp-status", va->ocsp_status,
                       "given revocation status: good revoked unknown");
  validate->add_flag("--ocsp", va->ocsp, "ask the OCSP responder in the certificate's AIA");
  validate->callback([va, result] { *result = run_validate(*va); });

  auto vr = std::make_shared<VerifyResultArgs>();
  auto* verify_result = pki.add_subcommand(
      "verify-result", "SHO: check a PVA's signed result (exit 0 trusted, 1 untrusted or invalid)");
  verify_result->add_option("--result", vr->result, "the result file");
  verify_result->add_option("--ca-file", vr->ca_file, "PVA root certificate(s), PEM");
  verify_result->add_option("--nonce", vr->nonce, "the nonce of the validation request, hex");
  verify_result->add_option("--max-age", vr->max_age,
                            "oldest acceptable result, seconds (default 300)");
  verify_result->callback([vr, result] { *result = run_verify_result(*vr); });
}

}  // namespace mcim::cli
