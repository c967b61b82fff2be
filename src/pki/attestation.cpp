#include "pki/attestation.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "common/hex.h"
#include "common/secure.h"
#include "pki/certificate.h"
#include "pki/signed_json.h"

namespace mcim::pki {
namespace {

// Canonical JSON and the signed envelopes are pki/signed_json.h's (docs/attestation.md).

// Type tags: a signature over one kind of document can never be passed off as another kind.
constexpr std::string_view kReportType = "mcim-report/1";
constexpr std::string_view kReferencesType = "mcim-references/1";
constexpr std::string_view kResultType = "mcim-result/1";

constexpr std::size_t kMaxMeasurements = 1024;
constexpr std::size_t kMinNonce = 16;
constexpr std::size_t kMaxNonce = 64;
constexpr std::size_t kMaxDeviceIdInResult = 1024;  // the certificate's, which we did not choose
constexpr std::size_t kMaxMessage = 1024;           // encoder truncates to this
constexpr std::size_t kMaxMessageDecoded = 4096;    // decoder's limit (U+FFFD may lengthen)
constexpr std::size_t kMaxNamesListed = 8;          // per category in a measurement failure
constexpr std::chrono::seconds kResultSkew{30};

constexpr std::array kTreStates = {
    std::pair{TreState::pristine, "pristine"},
    std::pair{TreState::provisioned, "provisioned"},
    std::pair{TreState::lockdown, "lockdown"},
};

constexpr std::array kChecks = {
    std::pair{Check::chain, "chain"},
    std::pair{Check::revocation, "revocation"},
    std::pair{Check::signature, "signature"},
    std::pair{Check::device_id, "device_id"},
    std::pair{Check::nonce, "nonce"},
    std::pair{Check::freshness, "freshness"},
    std::pair{Check::measurements, "measurements"},
    std::pair{Check::tre_state, "tre_state"},
};

// The codes a validation can list; a result naming any other is malformed.
constexpr std::array kFailureCodes = {
    ErrorCode::chain_invalid,  ErrorCode::cert_expired, ErrorCode::cert_revoked,
    ErrorCode::cert_unknown,   ErrorCode::ocsp_invalid, ErrorCode::signature_invalid,
    ErrorCode::nonce_mismatch, ErrorCode::stale_report, ErrorCode::measurement_mismatch,
};

// A device id and the model come from the platform certificate; a mismatch between the report and
// the certificate means the certificate is not valid for the device the report names, as a
// host name mismatch is in TLS path validation. (A dedicated code would be clearer: see docs.)
constexpr ErrorCode kDeviceMismatchCode = ErrorCode::chain_invalid;

// ---- Small helpers -------------------------------------------------------------------------

// Cuts at a UTF-8 character boundary, so the text stays valid UTF-8.
std::string truncate_utf8(std::string s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) --n;
  s.resize(n);
  return s;
}

// ---- Strict decoding -------------------------------------------------------------------------

Result<Measurement> decode_measurement(const Json& m, const std::string& path) {
  if (auto r = expect_members(m, path, {"name", "sha256"}); !r) return std::unexpected(r.error());
  auto name = token_member(m, path, "name");
  if (!name) return std::unexpected(name.error());
  auto digest = hex_member(m, path, "sha256", 32, 32);
  if (!digest) return std::unexpected(digest.error());
  Measurement out{std::move(*name), {}};
  std::copy(digest->begin(), digest->end(), out.sha256.begin());
  return out;
}

// Sorted by name without repeats: the one canonical order, and no ambiguity about which of two
// entries with the same name counts.
Result<std::vector<Measurement>> measurements_member(const Json& obj, std::string_view path) {
  auto arr = array_member(obj, path, "measurements", 1, kMaxMeasurements);
  if (!arr) return std::unexpected(arr.error());
  std::vector<Measurement> out;
  out.reserve((*arr)->size());
  for (std::size_t i = 0; i < (*arr)->size(); ++i) {
    const std::string where = fmt::format("{}.measurements[{}]", path, i);
    auto m = decode_measurement((**arr)[i], where);
    if (!m) return std::unexpected(m.error());
    if (!out.empty() && m->name <= out.back().name) {
      const bool repeated = m->name == out.back().name;
      return std::unexpected(bad(fmt::format("{}.name: {} [{}]", where,
                                             repeated ? "duplicate measurement name, also at"
                                                      : "measurements not sorted by name, after",
                                             i - 1)));
    }
    out.push_back(std::move(*m));
  }
  return out;
}

Json measurements_json(const std::vector<Measurement>& ms) {
  Json arr = Json::array();
  for (const auto& m : ms) arr.push_back(Json{{"name", m.name}, {"sha256", to_hex(m.sha256)}});
  return arr;
}

// Sorts a copy and checks what the decoder will check, so we never sign what we would refuse.
Result<std::vector<Measurement>> normalised(std::vector<Measurement> ms, std::string_view what) {
  if (ms.empty() || ms.size() > kMaxMeasurements) {
    return fail(ErrorCode::invalid_argument, fmt::format("{}: 1-{} measurements expected, got {}",
                                                         what, kMaxMeasurements, ms.size()));
  }
  std::sort(ms.begin(), ms.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (std::size_t i = 0; i < ms.size(); ++i) {
    if (!valid_token(ms[i].name)) {
      return fail(ErrorCode::invalid_argument,
                  fmt::format("{}: measurement names must be 1-{} printable ASCII characters "
                              "without space, '\"' or '\\'",
                              what, kMaxToken));
    }
    if (i > 0 && ms[i].name == ms[i - 1].name) {
      return fail(ErrorCode::invalid_argument,
                  fmt::format("{}: duplicate measurement name {}", what, ms[i].name));
    }
  }
  return ms;
}

Result<void> check_time(UtcSeconds t, std::string_view what) {
  if (utc_seconds(t) < 0 || utc_seconds(t) > kMaxUtcSeconds) {
    return fail(ErrorCode::invalid_argument, fmt::format("{}: time out of range", what));
  }
  return {};
}

// ---- Report, references and result: inner objects ---------------------------------------------

Result<Json> report_json(const Report& r) {
  if (!valid_token(r.device_id)) {
    return fail(ErrorCode::invalid_argument,
                "report: device id must be 1-128 printable ASCII characters without space");
  }
  if (r.nonce.size() < kMinNonce || r.nonce.size() > kMaxNonce) {
    return fail(ErrorCode::invalid_argument, "report: the nonce must be 16-64 bytes");
  }
  if (auto t = check_time(r.time, "report"); !t) return std::unexpected(t.error());
  auto ms = normalised(r.measurements, "report");
  if (!ms) return std::unexpected(ms.error());
  Json j = Json::object();
  j["type"] = kReportType;
  j["device_id"] = r.device_id;
  j["state"] = to_string(r.state);
  j["measurements"] = measurements_json(*ms);
  j["nonce"] = to_hex(r.nonce);
  j["time"] = static_cast<std::uint64_t>(utc_seconds(r.time));
  return j;
}

Result<Report> decode_report(const Json& j) {
  constexpr std::string_view p = "report";
  if (auto r =
          expect_members(j, p, {"device_id", "measurements", "nonce", "state", "time", "type"});
      !r) {
    return std::unexpected(r.error());
  }
  if (auto r = type_member(j, p, kReportType); !r) return std::unexpected(r.error());
  Report out;
  auto id = token_member(j, p, "device_id");
  if (!id) return std::unexpected(id.error());
  out.device_id = std::move(*id);
  auto state = string_member(j, p, "state");
  if (!state) return std::unexpected(state.error());
  auto parsed_state = parse_tre_state(**state);
  if (!parsed_state)
    return std::unexpected(bad("report.state: one of pristine provisioned lockdown"));
  out.state = *parsed_state;
  auto ms = measurements_member(j, p);
  if (!ms) return std::unexpected(ms.error());
  out.measurements = std::move(*ms);
  auto nonce = hex_member(j, p, "nonce", kMinNonce, kMaxNonce);
  if (!nonce) return std::unexpected(nonce.error());
  out.nonce = std::move(*nonce);
  auto t = time_member(j, p, "time");
  if (!t) return std::unexpected(t.error());
  out.time = *t;
  return out;
}

Result<ReferenceSet> decode_reference_set(const Json& j) {
  constexpr std::string_view p = "references";
  if (auto r = expect_members(j, p, {"issued", "measurements", "model", "type"}); !r) {
    return std::unexpected(r.error());
  }
  if (auto r = type_member(j, p, kReferencesType); !r) return std::unexpected(r.error());
  ReferenceSet out;
  auto model = token_member(j, p, "model");
  if (!model) return std::unexpected(model.error());
  out.model = std::move(*model);
  auto ms = measurements_member(j, p);
  if (!ms) return std::unexpected(ms.error());
  out.measurements = std::move(*ms);
  auto t = time_member(j, p, "issued");
  if (!t) return std::unexpected(t.error());
  out.issued = *t;
  return out;
}

std::optional<ErrorCode> parse_failure_code(std::string_view name) {
  for (ErrorCode c : kFailureCodes) {
    if (to_string(c) == name) return c;
  }
  return std::nullopt;
}

std::optional<Check> parse_check(std::string_view name) {
  for (const auto& [check, n] : kChecks) {
    if (name == n) return check;
  }
  return std::nullopt;
}

Result<Failure> decode_failure(const Json& j, const std::string& path) {
  if (auto r = expect_members(j, path, {"check", "code", "message"}); !r) {
    return std::unexpected(r.error());
  }
  auto check = string_member(j, path, "check");
  if (!check) return std::unexpected(check.error());
  auto code = string_member(j, path, "code");
  if (!code) return std::unexpected(code.error());
  auto message = string_member(j, path, "message");
  if (!message) return std::unexpected(message.error());
  const auto c = parse_check(**check);
  if (!c) return std::unexpected(bad(path + ".check: not a check name"));
  const auto e = parse_failure_code(**code);
  if (!e) return std::unexpected(bad(path + ".code: not a validation failure code"));
  if ((*message)->size() > kMaxMessageDecoded)
    return std::unexpected(bad(path + ".message: too long"));
  return Failure{*c, *e, **message};
}

Result<std::vector<Failure>> failures_member(const Json& j, std::string_view path) {
  auto arr = array_member(j, path, "failures", 0, 64);
  if (!arr) return std::unexpected(arr.error());
  std::vector<Failure> out;
  for (std::size_t i = 0; i < (*arr)->size(); ++i) {
    auto f = decode_failure((**arr)[i], fmt::format("{}.failures[{}]", path, i));
    if (!f) return std::unexpected(f.error());
    out.push_back(std::move(*f));
  }
  return out;
}

Result<std::string> result_device_id(const Json& j, std::string_view path) {
  auto id = string_member(j, path, "device_id");
  if (!id) return std::unexpected(id.error());
  if ((*id)->empty() || (*id)->size() > kMaxDeviceIdInResult) {
    return std::unexpected(
        bad(fmt::format("{}.device_id: 1-{} bytes", path, kMaxDeviceIdInResult)));
  }
  return **id;
}

Result<ValidationResult> decode_result(const Json& j) {
  constexpr std::string_view p = "result";
  if (auto r = expect_members(j, p, {"device_id", "failures", "nonce", "time", "type", "verdict"});
      !r) {
    return std::unexpected(r.error());
  }
  if (auto r = type_member(j, p, kResultType); !r) return std::unexpected(r.error());
  ValidationResult out;
  auto id = result_device_id(j, p);
  if (!id) return std::unexpected(id.error());
  out.device_id = std::move(*id);
  auto failures = failures_member(j, p);
  if (!failures) return std::unexpected(failures.error());
  out.failures = std::move(*failures);
  auto nonce = hex_member(j, p, "nonce", kMinNonce, kMaxNonce);
  if (!nonce) return std::unexpected(nonce.error());
  out.nonce = std::move(*nonce);
  auto t = time_member(j, p, "time");
  if (!t) return std::unexpected(t.error());
  out.time = *t;
  auto verdict = string_member(j, p, "verdict");
  if (!verdict) return std::unexpected(verdict.error());
  if (**verdict != (out.trusted() ? "trusted" : "untrusted")) {
    return std::unexpected(bad("result.verdict: must be trusted exactly when no check failed"));
  }
  return out;
}

Result<Json> result_json(const ValidationResult& r) {
  if (r.device_id.empty() || r.device_id.size() > kMaxDeviceIdInResult) {
    return fail(ErrorCode::invalid_argument, "result: device id must be 1-1024 bytes");
  }
  if (r.nonce.size() < kMinNonce || r.nonce.size() > kMaxNonce) {
    return fail(ErrorCode::invalid_argument, "result: the nonce must be 16-64 bytes");
  }
  if (auto t = check_time(r.time, "result"); !t) return std::unexpected(t.error());
  Json failures = Json::array();
  for (const auto& f : r.failures) {
    failures.push_back(Json{{"check", to_string(f.check)},
                            {"code", to_string(f.code)},
                            {"message", truncate_utf8(f.message, kMaxMessage)}});
  }
  Json j = Json::object();
  j["type"] = kResultType;
  j["device_id"] = r.device_id;
  j["failures"] = std::move(failures);
  j["nonce"] = to_hex(r.nonce);
  j["time"] = static_cast<std::uint64_t>(utc_seconds(r.time));
  j["verdict"] = r.trusted() ? "trusted" : "untrusted";
  return j;
}

// ---- The validation checks ---------------------------------------------------------------------

using Failures = std::vector<Failure>;

void add(Failures& out, Check check, ErrorCode code, std::string message) {
  out.push_back(Failure{check, code, std::move(message)});
}

// What the platform certificate says about the device; read once per validation.
struct PlatformFacts {
  X509* cert = nullptr;
  std::optional<std::string> device_id, model;
};

void check_platform_profile(const PlatformFacts& p, Failures& out) {
  if (!p.device_id || !p.model) {
    add(out, Check::chain, ErrorCode::chain_invalid,
        "not a platform certificate: no urn:mcim:device: and urn:mcim:model: SAN");
  }
  const bool signs = (X509_get_extension_flags(p.cert) & EXFLAG_KUSAGE) == 0 ||
                     (X509_get_key_usage(p.cert) & KU_DIGITAL_SIGNATURE) != 0;
  if (X509_check_ca(p.cert) != 0 || !signs) {
    add(out, Check::chain, ErrorCode::chain_invalid,
        "the platform certificate is a CA or its keyUsage lacks digitalSignature");
  }
}

// The same limits verify_ocsp_response applies, so an answer it accepted is not refused here
// only because a few seconds passed in between; a RevocationAnswer from elsewhere gets them too.
std::string staleness(const RevocationAnswer& a, const ValidationPolicy& policy, TimePoint now) {
  std::vector<std::string> problems;
  if (a.this_update > now + policy.revocation_skew) {
    problems.push_back(fmt::format("thisUpdate {} is in the future", utc_text(a.this_update)));
  } else if (a.this_update < now - policy.revocation_max_age) {
    problems.push_back(fmt::format("thisUpdate {} is older than {} s", utc_text(a.this_update),
                                   policy.revocation_max_age.count()));
  }
  if (a.next_update && *a.next_update < now - policy.revocation_skew) {
    problems.push_back(fmt::format("nextUpdate {} has passed", utc_text(*a.next_update)));
  }
  return fmt::format("{}", fmt::join(problems, "; "));
}

void check_revocation(const Result<RevocationAnswer>& answer, const ValidationPolicy& policy,
                      TimePoint now, Failures& out) {
  if (!answer) {
    add(out, Check::revocation, ErrorCode::ocsp_invalid,
        "no valid revocation status: " + answer.error().message);
    return;
  }
  // A stale answer still says what it says (a revocation is final), so both are listed.
  if (answer->status == CertStatus::revoked) {
    add(out, Check::revocation, ErrorCode::cert_revoked,
        answer->revoked_at
            ? "the platform certificate was revoked at " + utc_text(*answer->revoked_at)
            : "the platform certificate is revoked");
  } else if (answer->status == CertStatus::unknown) {
    add(out, Check::revocation, ErrorCode::cert_unknown,
        "the responder does not know the platform certificate");
  }
  if (std::string stale = staleness(*answer, policy, now); !stale.empty()) {
    add(out, Check::revocation, ErrorCode::ocsp_invalid, "stale revocation status: " + stale);
  }
}

void check_signature(const SignedReport& r, const PlatformFacts& p, Failures& out) {
  EVP_PKEY* key = p.cert != nullptr ? X509_get0_pubkey(p.cert) : nullptr;
  if (!is_p256(key)) {
    add(out, Check::signature, ErrorCode::signature_invalid,
        "the platform certificate holds no EC P-256 key");
  } else if (!verify_bytes(key, r.signed_bytes, r.signature)) {
    add(out, Check::signature, ErrorCode::signature_invalid,
        "the report's signature does not verify with the platform certificate's key");
  }
}

void check_device_id(const Report& r, const PlatformFacts& p, Failures& out) {
  if (!p.device_id) {
    add(out, Check::device_id, kDeviceMismatchCode, "the platform certificate names no device");
  } else if (*p.device_id != r.device_id) {
    add(out, Check::device_id, kDeviceMismatchCode,
        fmt::format("the report names device {} but the platform certificate is for {}",
                    r.device_id, *p.device_id));
  }
}

void check_nonce(const Report& r, ByteView expected, Failures& out) {
  if (!constant_time_equal(r.nonce, expected)) {
    add(out, Check::nonce, ErrorCode::nonce_mismatch, "the report does not carry the PVA's nonce");
  }
}

void check_freshness(const Report& r, const ValidationPolicy& policy, TimePoint now,
                     Failures& out) {
  const UtcSeconds at = floor_seconds(now);
  if (r.time > at + policy.max_skew) {
    add(out, Check::freshness, ErrorCode::stale_report,
        fmt::format("the report is {} s in the future (allowed skew {} s)", (r.time - at).count(),
                    policy.max_skew.count()));
  } else if (r.time < at - policy.report_max_age) {
    add(out, Check::freshness, ErrorCode::stale_report,
        fmt::format("the report is {} s old (window {} s)", (at - r.time).count(),
                    policy.report_max_age.count()));
  }
}

std::string name_list(const std::vector<std::string_view>& names) {
  const std::size_t shown = std::min(names.size(), kMaxNamesListed);
  std::string out = fmt::format(
      "{}", fmt::join(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(shown), ", "));
  if (names.size() > shown) out += fmt::format(" and {} more", names.size() - shown);
  return out;
}

// Both lists are sorted by name: one merge pass finds what is missing, extra or different.
std::string measurement_differences(const std::vector<Measurement>& got,
                                    const std::vector<Measurement>& want) {
  std::vector<std::string_view> missing, extra, different;
  std::size_t i = 0, j = 0;
  while (i < got.size() || j < want.size()) {
    if (j == want.size() || (i < got.size() && got[i].name < want[j].name)) {
      extra.push_back(got[i++].name);
    } else if (i == got.size() || want[j].name < got[i].name) {
      missing.push_back(want[j++].name);
    } else {
      if (got[i].sha256 != want[j].sha256) different.push_back(got[i].name);
      ++i, ++j;
    }
  }
  std::vector<std::string> parts;
  if (!missing.empty()) parts.push_back("missing " + name_list(missing));
  if (!extra.empty()) parts.push_back("extra " + name_list(extra));
  if (!different.empty()) parts.push_back("different " + name_list(different));
  return fmt::format("{}", fmt::join(parts, "; "));
}

void check_measurements(const Report& r, const PlatformFacts& p, const Validator& v,
                        Failures& out) {
  // The model comes from the certificate: a report cannot choose the references it is judged by.
  if (!p.model) {
    add(out, Check::measurements, ErrorCode::measurement_mismatch,
        "the platform certificate names no model");
    return;
  }
  const ReferenceSet* refs = v.references_for(*p.model);
  if (refs == nullptr) {
    add(out, Check::measurements, ErrorCode::measurement_mismatch,
        fmt::format("no reference measurements for model {}", *p.model));
    return;
  }
  if (std::string diff = measurement_differences(r.measurements, refs->measurements);
      !diff.empty()) {
    add(out, Check::measurements, ErrorCode::measurement_mismatch,
        fmt::format("model {}: {}", *p.model, diff));
  }
}

// A TRE in lockdown has detected tampering itself: its measurements may be right while the
// platform is not, so the PVA does not vouch for it.
void check_tre_state(const Report& r, Failures& out) {
  if (r.state == TreState::lockdown) {
    add(out, Check::tre_state, ErrorCode::measurement_mismatch,
        "the TRE reports lockdown (it detected tampering)");
  }
}

}  // namespace

// ---- Public API ------------------------------------------------------------------------------

std::string_view to_string(TreState s) {
  for (const auto& [state, name] : kTreStates) {
    if (state == s) return name;
  }
  return "pristine";
}

Result<TreState> parse_tre_state(std::string_view name) {
  for (const auto& [state, n] : kTreStates) {
    if (name == n) return state;
  }
  return fail(ErrorCode::invalid_argument, "--state: one of pristine provisioned lockdown");
}

std::string_view to_string(Check c) {
  for (const auto& [check, name] : kChecks) {
    if (check == c) return name;
  }
  return "chain";
}

Result<std::vector<Measurement>> parse_measurement_lines(std::string_view text) {
  std::vector<std::pair<Measurement, std::size_t>> lines;  // with the line number
  std::size_t line_no = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos || line[first] == '#') continue;
    line = line.substr(first, line.find_last_not_of(" \t\r") - first + 1);
    const auto gap = line.find_first_of(" \t");
    const auto digest_at = gap == std::string_view::npos ? gap : line.find_first_not_of(" \t", gap);
    if (digest_at == std::string_view::npos ||
        line.find_first_of(" \t", digest_at) != std::string_view::npos) {
      return fail(ErrorCode::bad_format,
                  fmt::format("measurements line {}: expected `name sha256hex`", line_no));
    }
    Measurement m{std::string(line.substr(0, gap)), {}};
    if (!valid_token(m.name)) {
      return fail(ErrorCode::bad_format,
                  fmt::format("measurements line {}: the name must be 1-{} printable ASCII "
                              "characters without '\"' or '\\'",
                              line_no, kMaxToken));
    }
    auto digest = parse_hex_fixed<32>(line.substr(digest_at), "sha256");
    if (!digest) {
      return fail(ErrorCode::bad_format,
                  fmt::format("measurements line {}: the SHA-256 must be 64 hex digits", line_no));
    }
    m.sha256 = *digest;
    lines.emplace_back(std::move(m), line_no);
  }
  if (lines.empty() || lines.size() > kMaxMeasurements) {
    return fail(ErrorCode::bad_format, fmt::format("measurements: 1-{} lines expected, got {}",
                                                   kMaxMeasurements, lines.size()));
  }
  std::stable_sort(lines.begin(), lines.end(),
                   [](const auto& a, const auto& b) { return a.first.name < b.first.name; });
  for (std::size_t i = 1; i < lines.size(); ++i) {
    if (lines[i].first.name == lines[i - 1].first.name) {
      return fail(ErrorCode::bad_format,
                  fmt::format("measurements line {}: repeats the name of line {}", lines[i].second,
                              lines[i - 1].second));
    }
  }
  std::vector<Measurement> out;
  out.reserve(lines.size());
  for (auto& [m, line] : lines) out.push_back(std::move(m));
  return out;
}

Result<std::string> sign_report(const Report& report, EVP_PKEY* platform_key) {
  if (!is_p256(platform_key)) {
    return fail(ErrorCode::invalid_argument, "the platform key is not EC P-256");
  }
  auto j = report_json(report);
  if (!j) return std::unexpected(j.error());
  const std::string inner = canonical(*j);
  auto sig = sign_bytes(platform_key, inner);
  if (!sig) return std::unexpected(sig.error());
  return envelope("", "report", inner, *sig);
}

Result<SignedReport> decode_signed_report(std::string_view text) {
  text = document_text(text);
  auto env = decode_envelope(text, "report document", "report", false);
  if (!env) return std::unexpected(env.error());
  auto report = decode_report(env->doc["report"]);
  if (!report) return std::unexpected(report.error());
  auto inner = canonical_inner(*env, text, "report document", "report");
  if (!inner) return std::unexpected(inner.error());
  return SignedReport{std::move(*report), std::move(*inner), std::move(env->signature)};
}

Result<std::string> sign_references(const ReferenceSet& refs, EVP_PKEY* key,
                                    const std::vector<X509*>& certs) {
  if (certs.empty() || certs.size() > kMaxEnvelopeCertificates) {
    return fail(ErrorCode::invalid_argument, "references: 1-4 signer certificates expected");
  }
  if (!is_p256(key) || X509_check_private_key(certs.front(), key) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::invalid_argument,
                "references: the signer key is not EC P-256 or does not match its certificate");
  }
  if (!valid_token(refs.model)) {
    return fail(ErrorCode::invalid_argument,
                "references: the model must be 1-128 printable characters");
  }
  if (auto t = check_time(refs.issued, "references"); !t) return std::unexpected(t.error());
  auto ms = normalised(refs.measurements, "references");
  if (!ms) return std::unexpected(ms.error());
  Json j = Json::object();
  j["type"] = kReferencesType;
  j["model"] = refs.model;
  j["measurements"] = measurements_json(*ms);
  j["issued"] = static_cast<std::uint64_t>(utc_seconds(refs.issued));
  const std::string inner = canonical(j);
  auto sig = sign_bytes(key, inner);
  if (!sig) return std::unexpected(sig.error());
  return envelope(canonical(certificates_json(certs)), "references", inner, *sig);
}

Result<VerifiedReferences> verify_references(std::string_view text, const TrustAnchors& supplier,
                                             const std::vector<X509*>& untrusted,
                                             const Clock& clock) {
  text = document_text(text);
  constexpr std::string_view what = "references document";
  auto env = decode_envelope(text, what, "references", true);
  if (!env) return std::unexpected(env.error());
  auto set = decode_reference_set(env->doc["references"]);
  if (!set) return std::unexpected(set.error());
  auto inner = canonical_inner(*env, text, what, "references");
  if (!inner) return std::unexpected(inner.error());
  auto signer = verify_signer(*env, *inner, supplier, untrusted, clock, what);
  if (!signer) return std::unexpected(signer.error());
  return VerifiedReferences(std::move(*set), subject_text(*signer));
}

Result<void> Validator::add_intermediates(const std::vector<X509*>& certs, const Clock& clock) {
  std::vector<TrustedCa> verified;
  for (X509* c : certs) {
    if (X509_self_signed(c, 0) == 1) continue;  // a root is trusted as an anchor or not at all
    if (X509_check_ca(c) == 0) {
      return fail(ErrorCode::chain_invalid,
                  fmt::format("{}: not a CA certificate", subject_text(c)));
    }
    auto chain = verify_chain(supplier_, c, certs, clock.now());
    if (!chain) {
      return fail(chain.error().code == ErrorCode::cert_expired ? ErrorCode::cert_expired
                                                                : ErrorCode::chain_invalid,
                  chain.error().message);
    }
    TrustedCa ca{up_ref(c), not_before(c), not_after(c)};
    for (const auto& link : chain->chain) {
      ca.not_before = std::max(ca.not_before, not_before(link.get()));
      ca.not_after = std::min(ca.not_after, not_after(link.get()));
    }
    verified.push_back(std::move(ca));
  }
  X509StorePtr store(X509_STORE_new());
  bool ok = store != nullptr;
  for (const auto& r : supplier_.roots()) ok = ok && X509_STORE_add_cert(store.get(), r.get()) == 1;
  for (const auto& ca : trusted_cas_)
    ok = ok && X509_STORE_add_cert(store.get(), ca.cert.get()) == 1;
  for (const auto& ca : verified) ok = ok && X509_STORE_add_cert(store.get(), ca.cert.get()) == 1;
  if (!ok) return std::unexpected(openssl_error(ErrorCode::internal, "building the CA store"));
  fast_store_ = std::move(store);
  for (auto& ca : verified) trusted_cas_.push_back(std::move(ca));
  return {};
}

Result<void> Validator::verify_platform_path(X509* leaf, const std::vector<X509*>& untrusted,
                                             TimePoint now) const {
  const bool partial = fast_store_ != nullptr;
  auto chain = verify_chain(partial ? fast_store_.get() : supplier_.store(), leaf, untrusted, now,
                            VerifyOptions{.partial_chain = partial});
  if (!chain) {
    // A bad certificate signature is, for the PVA, a chain that does not lead to the root.
    const ErrorCode code = chain.error().code == ErrorCode::cert_expired ? ErrorCode::cert_expired
                                                                         : ErrorCode::chain_invalid;
    return fail(code, chain.error().message);
  }
  // The top of the path is the root or a CA the store holds, so it outlives `chain`.
  return check_trusted_ca_window(chain->chain.back().get(), now);
}

// A partial chain ends at the pre-verified CA: OpenSSL checks that CA's validity but not the
// root's above it, so the window kept for the CA (intersected with its path's) stands in.
Result<void> Validator::check_trusted_ca_window(X509* top, TimePoint now) const {
  for (const auto& ca : trusted_cas_) {
    if (X509_cmp(ca.cert.get(), top) != 0) continue;
    if (now < ca.not_before || now > ca.not_after) {
      return fail(ErrorCode::cert_expired,
                  fmt::format("supplier CA {} or its issuer is outside its validity period",
                              subject_text(top)));
    }
    return {};
  }
  return {};
}

Result<void> Validator::add_references(VerifiedReferences refs) {
  const ReferenceSet& offered = refs.set();
  auto it = references_.find(offered.model);
  if (it == references_.end()) {
    std::string model = offered.model;
    references_.emplace(std::move(model), std::move(refs));
    return {};
  }
  const ReferenceSet& held = it->second.set();
  if (offered.issued > held.issued) {
    it->second = std::move(refs);
    return {};
  }
  if (offered.issued == held.issued && offered.measurements == held.measurements) return {};
  return fail(ErrorCode::stale_report,
              fmt::format("references for model {} issued {} are not newer than those held ({})",
                          offered.model, utc_text(offered.issued), utc_text(held.issued)));
}

const ReferenceSet* Validator::references_for(std::string_view model) const {
  auto it = references_.find(model);
  return it == references_.end() ? nullptr : &it->second.set();
}

ValidationResult Validator::validate(const SignedReport& report, X509* platform_cert,
                                     const std::vector<X509*>& intermediates,
                                     const Result<RevocationAnswer>& revocation,
                                     ByteView expected_nonce, const Clock& clock) const {
  const TimePoint now = clock.now();
  PlatformFacts p{platform_cert, std::nullopt, std::nullopt};
  if (platform_cert != nullptr) {
    p.device_id = platform_device_id(platform_cert);
    p.model = platform_model(platform_cert);
  }
  ValidationResult out;
  if (p.cert == nullptr) {
    add(out.failures, Check::chain, ErrorCode::chain_invalid, "no platform certificate");
  } else {
    if (auto path = verify_platform_path(p.cert, intermediates, now); !path) {
      add(out.failures, Check::chain, path.error().code, path.error().message);
    }
    check_platform_profile(p, out.failures);
  }
  check_revocation(revocation, policy_, now, out.failures);
  check_signature(report, p, out.failures);
  check_device_id(report.report, p, out.failures);
  check_nonce(report.report, expected_nonce, out.failures);
  check_freshness(report.report, policy_, now, out.failures);
  check_measurements(report.report, p, *this, out.failures);
  check_tre_state(report.report, out.failures);
  out.device_id = p.device_id.value_or(report.report.device_id);
  out.nonce.assign(expected_nonce.begin(), expected_nonce.end());
  out.time = floor_seconds(now);
  return out;
}

Result<ResultSigner> ResultSigner::create(PkeyPtr key, std::vector<X509Ptr> certs) {
  if (certs.empty() || certs.size() > kMaxEnvelopeCertificates) {
    return fail(ErrorCode::invalid_argument, "result signer: 1-4 certificates expected");
  }
  if (!is_p256(key.get()) || X509_check_private_key(certs.front().get(), key.get()) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::invalid_argument,
                "result signer: the key is not EC P-256 or does not match the certificate");
  }
  if (auto r = check_document_signer(certs.front().get()); !r) {
    return fail(ErrorCode::invalid_argument, "result " + r.error().message);
  }
  std::vector<X509*> raw;
  for (const auto& c : certs) raw.push_back(c.get());
  return ResultSigner(std::move(key), canonical(certificates_json(raw)));
}

Result<std::string> ResultSigner::sign(const ValidationResult& result) const {
  auto j = result_json(result);
  if (!j) return std::unexpected(j.error());
  const std::string inner = canonical(*j);
  auto sig = sign_bytes(key_.get(), inner);
  if (!sig) return std::unexpected(sig.error());
  return envelope(certificates_json_, "result", inner, *sig);
}

Result<ValidationResult> verify_validation_result(std::string_view text, const TrustAnchors& pva,
                                                  ByteView expected_nonce, const Clock& clock,
                                                  std::chrono::seconds max_age) {
  text = document_text(text);
  constexpr std::string_view what = "result document";
  auto env = decode_envelope(text, what, "result", true);
  if (!env) return std::unexpected(env.error());
  auto result = decode_result(env->doc["result"]);
  if (!result) return std::unexpected(result.error());
  auto inner = canonical_inner(*env, text, what, "result");
  if (!inner) return std::unexpected(inner.error());
  if (auto signer = verify_signer(*env, *inner, pva, {}, clock, what); !signer) {
    return std::unexpected(signer.error());
  }
  if (!constant_time_equal(result->nonce, expected_nonce)) {
    return fail(ErrorCode::nonce_mismatch, "result: not the answer to this request's nonce");
  }
  const UtcSeconds now = floor_seconds(clock.now());
  if (result->time > now + kResultSkew || result->time < now - max_age) {
    return fail(ErrorCode::stale_report,
                fmt::format("result: made at {}, outside [now - {} s, now + {} s]",
                            utc_text(result->time), max_age.count(), kResultSkew.count()));
  }
  return result;
}

}  // namespace mcim::pki
