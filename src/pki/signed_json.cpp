#include "pki/signed_json.h"

#include <fmt/format.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <ctime>

#include "common/hex.h"
#include "pki/certificate.h"

namespace mcim::pki {

// Names, device ids and models: printable ASCII without the two characters JSON escapes, so
// their canonical form is the text itself.
bool valid_token(std::string_view s, std::size_t max) {
  return !s.empty() && s.size() <= max && std::all_of(s.begin(), s.end(), [](char c) {
    return c > 0x20 && c < 0x7f && c != '"' && c != '\\';
  });
}

std::int64_t utc_seconds(UtcSeconds t) { return t.time_since_epoch().count(); }

UtcSeconds floor_seconds(TimePoint t) { return std::chrono::floor<std::chrono::seconds>(t); }

std::string utc_text(TimePoint t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// ---- Canonical JSON and ECDSA ----------------------------------------------------------------

// `replace` never throws: invalid UTF-8 (from a certificate subject in a message, say) becomes
// U+FFFD, and dumping the parsed result again gives the same bytes.
std::string canonical(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// The envelope around a signed object; keys in sorted order, so it is canonical JSON as well.
// certificates_json is empty for the report, which carries no certificates.
std::string envelope(std::string_view certificates_json, std::string_view inner_key,
                     std::string_view inner, ByteView signature) {
  std::string out;
  out.reserve(certificates_json.size() + inner.size() + 2 * signature.size() + 64);
  out += '{';
  if (!certificates_json.empty()) {
    out += R"("certificates":)";
    out += certificates_json;
    out += ',';
  }
  out += fmt::format(R"("{}":)", inner_key);
  out += inner;
  out += R"(,"signature":")";
  out += to_hex(signature);
  out += R"("})";
  return out;
}

const unsigned char* bytes_of(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

bool verify_bytes(EVP_PKEY* key, std::string_view data, ByteView sig) {
  return ecdsa_verify(key, ByteView(bytes_of(data), data.size()), sig);
}

Result<ByteVec> sign_bytes(EVP_PKEY* key, std::string_view data) {
  return ecdsa_sign(key, ByteView(bytes_of(data), data.size()));
}

Json certificates_json(const std::vector<X509*>& certs) {
  Json arr = Json::array();
  for (X509* c : certs) arr.push_back(to_hex(certificate_der(c)));
  return arr;
}

Error bad(std::string message) { return Error(ErrorCode::bad_format, std::move(message)); }

// An unknown member's name is repeated only when it is short and plain, so a message never
// carries a blob of attacker-chosen text.
std::string describe_key(std::string_view key) {
  return valid_token(key) && key.size() <= 32 ? fmt::format("\"{}\"", key) : "(unprintable)";
}

Result<Json> parse_document(std::string_view text, std::string_view what, std::size_t max_size) {
  if (text.empty()) return fail(ErrorCode::bad_format, fmt::format("{}: empty", what));
  if (text.size() > max_size) {
    return fail(ErrorCode::bad_format, fmt::format("{}: larger than {} bytes", what, max_size));
  }
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return fail(ErrorCode::bad_format, fmt::format("{}: not JSON (truncated or corrupted)", what));
  }
  if (!j.is_object())
    return fail(ErrorCode::bad_format, fmt::format("{}: not a JSON object", what));
  return j;
}

// Every member known, every known member present.
Result<void> expect_members(const Json& obj, std::string_view path,
                            std::initializer_list<std::string_view> names) {
  if (!obj.is_object()) return std::unexpected(bad(fmt::format("{}: not an object", path)));
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (std::find(names.begin(), names.end(), it.key()) == names.end()) {
      return std::unexpected(
          bad(fmt::format("{}: unknown field {}", path, describe_key(it.key()))));
    }
  }
  for (std::string_view n : names) {
    if (obj.find(n) == obj.end())
      return std::unexpected(bad(fmt::format("{}.{}: missing", path, n)));
  }
  return {};
}

Result<const std::string*> string_member(const Json& obj, std::string_view path,
                                         std::string_view key) {
  const Json& v = *obj.find(key);
  if (!v.is_string()) return std::unexpected(bad(fmt::format("{}.{}: not a string", path, key)));
  return &v.get_ref<const std::string&>();
}

Result<std::string> token_member(const Json& obj, std::string_view path, std::string_view key) {
  auto s = string_member(obj, path, key);
  if (!s) return std::unexpected(s.error());
  if (!valid_token(**s)) {
    return std::unexpected(bad(
        fmt::format("{}.{}: must be 1-{} printable ASCII characters without space, '\"' or '\\'",
                    path, key, kMaxToken)));
  }
  return **s;
}

// Lowercase only: the canonical form has one spelling for each byte string.
Result<ByteVec> hex_member(const Json& obj, std::string_view path, std::string_view key,
                           std::size_t min_bytes, std::size_t max_bytes) {
  auto s = string_member(obj, path, key);
  if (!s) return std::unexpected(s.error());
  const std::string& text = **s;
  const bool lower = std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
  if (!lower || text.size() % 2 != 0 || text.size() < 2 * min_bytes ||
      text.size() > 2 * max_bytes) {
    const std::string size = min_bytes == max_bytes
                                 ? fmt::format("{}", 2 * min_bytes)
                                 : fmt::format("{}-{}", 2 * min_bytes, 2 * max_bytes);
    return std::unexpected(
        bad(fmt::format("{}.{}: expected {} lowercase hex digits, got {} characters", path, key,
                        size, text.size())));
  }
  return parse_hex(text, key);
}

Result<UtcSeconds> time_member(const Json& obj, std::string_view path, std::string_view key) {
  const Json& v = *obj.find(key);
  if (!v.is_number_unsigned() ||
      v.get<std::uint64_t>() > static_cast<std::uint64_t>(kMaxUtcSeconds)) {
    return std::unexpected(
        bad(fmt::format("{}.{}: expected UTC seconds as a non-negative integer", path, key)));
  }
  return UtcSeconds(std::chrono::seconds(static_cast<std::int64_t>(v.get<std::uint64_t>())));
}

Result<const Json*> array_member(const Json& obj, std::string_view path, std::string_view key,
                                 std::size_t min, std::size_t max) {
  const Json& v = *obj.find(key);
  if (!v.is_array()) return std::unexpected(bad(fmt::format("{}.{}: not an array", path, key)));
  if (v.size() < min || v.size() > max) {
    return std::unexpected(
        bad(fmt::format("{}.{}: expected {}-{} entries, got {}", path, key, min, max, v.size())));
  }
  return &v;
}

Result<void> type_member(const Json& obj, std::string_view path, std::string_view expected) {
  auto s = string_member(obj, path, "type");
  if (!s) return std::unexpected(s.error());
  if (**s != expected) {
    return std::unexpected(bad(fmt::format("{}.type: expected \"{}\"", path, expected)));
  }
  return {};
}

// ---- Envelopes: {"certificates"?, "<inner>", "signature"} ------------------------------------

Result<std::vector<X509Ptr>> decode_certificates(const Json& doc, std::string_view what) {
  auto arr = array_member(doc, what, "certificates", 1, kMaxEnvelopeCertificates);
  if (!arr) return std::unexpected(arr.error());
  std::vector<X509Ptr> out;
  for (std::size_t i = 0; i < (*arr)->size(); ++i) {
    const std::string where = fmt::format("{}.certificates[{}]", what, i);
    const Json& c = (**arr)[i];
    if (!c.is_string()) return std::unexpected(bad(where + ": not a string"));
    const std::string& text = c.get_ref<const std::string&>();
    // Lowercase only, as every hex member: one document, one spelling.
    const bool lower = std::all_of(text.begin(), text.end(), [](char ch) {
      return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
    });
    auto der = lower ? parse_hex(text, where) : Result<ByteVec>(std::unexpected(bad("")));
    if (!der) return std::unexpected(bad(where + ": not lowercase hex"));
    auto cert = parse_certificate(*der, where);
    if (!cert) return std::unexpected(cert.error());
    out.push_back(std::move(*cert));
  }
  return out;
}

// Strips the one trailing newline a file may end with.
std::string_view document_text(std::string_view text) {
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  return text;
}

Result<Envelope> decode_envelope(std::string_view text, std::string_view what,
                                 std::string_view inner_key, bool with_certificates) {
  auto doc = parse_document(text, what);
  if (!doc) return std::unexpected(doc.error());
  auto members = with_certificates
                     ? expect_members(*doc, what, {"certificates", inner_key, "signature"})
                     : expect_members(*doc, what, {inner_key, "signature"});
  if (!members) return std::unexpected(members.error());
  Envelope env;
  auto sig = hex_member(*doc, what, "signature", kMinSignature, kMaxSignature);
  if (!sig) return std::unexpected(sig.error());
  env.signature = std::move(*sig);
  if (with_certificates) {
    auto certs = decode_certificates(*doc, what);
    if (!certs) return std::unexpected(certs.error());
    env.certificates = std::move(*certs);
  }
  env.doc = std::move(*doc);
  return env;
}

// After the fields were checked (their messages are more precise): the text must be exactly
// what the encoder writes. Returns the signed bytes, the canonical inner object.
Result<std::string> canonical_inner(const Envelope& env, std::string_view text,
                                    std::string_view what, std::string_view inner_key) {
  std::string inner = canonical(env.doc[std::string(inner_key)]);
  const std::string certs = env.certificates.empty() ? "" : canonical(env.doc["certificates"]);
  if (envelope(certs, inner_key, inner, env.signature) != text) {
    return std::unexpected(bad(fmt::format(
        "{}: not in canonical form (sorted keys, no whitespace, no escapes, no repeated keys)",
        what)));
  }
  return inner;
}

// A document signer (references, results): an end entity whose key usage says it signs
// content, never a CA key (key separation) nor a platform key (a device must not vouch for
// its own references).
Result<void> check_document_signer(X509* cert) {
  const std::uint32_t needed = KU_DIGITAL_SIGNATURE | KU_NON_REPUDIATION;
  std::string problem;
  if (X509_check_ca(cert) != 0) {
    problem = "a CA certificate does not sign documents";
  } else if ((X509_get_extension_flags(cert) & EXFLAG_KUSAGE) == 0 ||
             (X509_get_key_usage(cert) & needed) != needed) {
    problem = "keyUsage must include digitalSignature and nonRepudiation";
  } else if (platform_device_id(cert)) {
    problem = "a platform certificate does not sign documents";
  } else if (!is_p256(X509_get0_pubkey(cert))) {
    problem = "the key is not EC P-256";
  }
  if (problem.empty()) return {};
  return fail(ErrorCode::chain_invalid, fmt::format("signer {}: {}", subject_text(cert), problem));
}

// The signer chains to `anchors` now, is a document signer, and signed `signed_bytes`.
Result<X509*> verify_signer(const Envelope& env, std::string_view signed_bytes,
                            const TrustAnchors& anchors, const std::vector<X509*>& untrusted,
                            const Clock& clock, std::string_view what) {
  X509* signer = env.certificates.front().get();
  std::vector<X509*> path;
  for (std::size_t i = 1; i < env.certificates.size(); ++i)
    path.push_back(env.certificates[i].get());
  path.insert(path.end(), untrusted.begin(), untrusted.end());
  if (auto chain = verify_chain(anchors, signer, path, clock.now()); !chain) {
    const ErrorCode code = chain.error().code == ErrorCode::cert_expired ? ErrorCode::cert_expired
                                                                         : ErrorCode::chain_invalid;
    return fail(code, fmt::format("{}: signer: {}", what, chain.error().message));
  }
  if (auto r = check_document_signer(signer); !r) {
    return fail(r.error().code, fmt::format("{}: {}", what, r.error().message));
  }
  if (!verify_bytes(X509_get0_pubkey(signer), signed_bytes, env.signature)) {
    return fail(ErrorCode::signature_invalid,
                fmt::format("{}: the signature does not verify with the signer's key", what));
  }
  return signer;
}

Result<std::uint64_t> uint_member(const Json& obj, std::string_view path, std::string_view key,
                                  std::uint64_t min, std::uint64_t max) {
  const Json& v = *obj.find(key);
  if (!v.is_number_unsigned() || v.get<std::uint64_t>() < min || v.get<std::uint64_t>() > max) {
    return std::unexpected(
        bad(fmt::format("{}.{}: expected an integer in {}..{}", path, key, min, max)));
  }
  return v.get<std::uint64_t>();
}

Result<std::string> sign_envelope(std::string_view inner_key, const Json& inner, EVP_PKEY* key,
                                  const std::vector<X509*>& certs) {
  const std::string text = canonical(inner);
  auto sig = sign_bytes(key, text);
  if (!sig) return std::unexpected(sig.error());
  return envelope(certs.empty() ? "" : canonical(certificates_json(certs)), inner_key, text, *sig);
}

}  // namespace mcim::pki
