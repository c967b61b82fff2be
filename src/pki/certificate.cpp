#include "pki/certificate.h"

#include <fmt/format.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <ctime>

#include "pki/sealed.h"

namespace mcim::pki {
namespace {

constexpr std::array kProfileNames = {
    std::pair{Profile::root_ca, "root-ca"},
    std::pair{Profile::intermediate_ca, "intermediate-ca"},
    std::pair{Profile::platform, "platform"},
    std::pair{Profile::tls_server, "tls-server"},
    std::pair{Profile::tls_client, "tls-client"},
    std::pair{Profile::package_signing, "package-signing"},
    std::pair{Profile::ocsp_signing, "ocsp-signing"},
    std::pair{Profile::result_signing, "result-signing"},
    std::pair{Profile::encryption, "encryption"},
};

constexpr std::string_view kDeviceUrn = "urn:mcim:device:";
constexpr std::string_view kModelUrn = "urn:mcim:model:";
constexpr std::string_view kOperatorSan = "URI:urn:mcim:operator:";

bool is_ca(Profile p) { return p == Profile::root_ca || p == Profile::intermediate_ca; }

// Splits "CN=a,O=b" or "/CN=a/O=b" into (field, value) pairs.
Result<std::vector<std::pair<std::string, std::string>>> split_subject(std::string_view s) {
  const char sep = !s.empty() && s.front() == '/' ? '/' : ',';
  if (sep == '/') s.remove_prefix(1);
  std::vector<std::pair<std::string, std::string>> out;
  while (!s.empty()) {
    const auto end = s.find(sep);
    std::string_view part = s.substr(0, end);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    const auto eq = part.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == part.size()) {
      return fail(ErrorCode::invalid_argument,
                  "subject: expected FIELD=value pairs such as CN=name,O=org");
    }
    out.emplace_back(std::string(part.substr(0, eq)), std::string(part.substr(eq + 1)));
    if (end == std::string_view::npos) break;
    s.remove_prefix(end + 1);
  }
  if (out.empty()) return fail(ErrorCode::missing_argument, "subject: required");
  return out;
}

Result<void> set_subject(X509* cert, std::string_view subject) {
  auto parts = split_subject(subject);
  if (!parts) return std::unexpected(parts.error());
  X509_NAME* name = X509_get_subject_name(cert);
  for (const auto& [field, value] : *parts) {
    if (X509_NAME_add_entry_by_txt(name, field.c_str(), MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                   0) != 1) {
      return std::unexpected(
          openssl_error(ErrorCode::invalid_argument, fmt::format("subject: field {}", field)));
    }
  }
  return {};
}

bool valid_san(std::string_view san) {
  for (std::string_view prefix : {"DNS:", "IP:", "URI:", "email:"}) {
    if (san.substr(0, prefix.size()) == prefix && san.size() > prefix.size()) {
      return san.find(',') == std::string_view::npos;
    }
  }
  return false;
}

std::string san_value(const CertSpec& spec) {
  std::vector<std::string> all = spec.sans;
  if (spec.profile == Profile::platform) {
    all.push_back(fmt::format("URI:{}{}", kDeviceUrn, spec.device_id));
    all.push_back(fmt::format("URI:{}{}", kModelUrn, spec.model));
  }
  return fmt::format("{}", fmt::join(all, ","));
}

// The extensions of each profile, as OpenSSL configuration strings.
std::vector<std::pair<int, std::string>> extensions(const CertSpec& spec, bool self_signed) {
  std::vector<std::pair<int, std::string>> ext;
  switch (spec.profile) {
    case Profile::root_ca:
      ext = {{NID_basic_constraints, "critical,CA:TRUE"},
             {NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"}};
      break;
    case Profile::intermediate_ca:
      ext = {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
             {NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"}};
      break;
    case Profile::platform:
      // keyAgreement: MCIM packages are encrypted to this key by ECDH (CMS, RFC 5753).
      ext = {{NID_basic_constraints, "critical,CA:FALSE"},
             {NID_key_usage, "critical,digitalSignature,keyAgreement"},
             {NID_ext_key_usage, "clientAuth"}};
      break;
    case Profile::tls_server:
      ext = {{NID_basic_constraints, "critical,CA:FALSE"},
             {NID_key_usage, "critical,digitalSignature"},
             {NID_ext_key_usage, "serverAuth"}};
      break;
    case Profile::tls_client:
      ext = {{NID_basic_constraints, "critical,CA:FALSE"},
             {NID_key_usage, "critical,digitalSignature"},
             {NID_ext_key_usage, "clientAuth"}};
      break;
    case Profile::package_signing:
      // OpenSSL's CMS verification applies the S/MIME signing purpose: with an EKU present it
      // must include emailProtection, or `openssl cms -verify` refuses the signer.
      ext = {{NID_basic_constraints, "critical,CA:FALSE"},
             {NID_key_usage, "critical,digitalSignature,nonRepudiation"},
             {NID_ext_key_usage, "emailProtection"}};
      break;
    case Profile::ocsp_signing:
      ext = {{NID_basic_constraints, "critical,CA:FALSE"},
             {NID_key_usage, "critical,digitalSignature"},
             {NID_ext_key_usage, "OCSPSigning"},
             {NID_id_pkix_OCSP_noCheck, "ignored"}};
      break;
    case Profile::result_signing:
      ext = {{NID_basic_constraints, "critical,CA:FALSE"},
             {NID_key_usage, "critical,digitalSignature,nonRepudiation"}};
      break;
    case Profile::encryption:
      // Only ECDH (CMS key agreement, RFC 5753): a key that cannot sign cannot be misused as a
      // signer or TLS identity. No EKU: no purpose names key agreement, and sealed.h checks only
      // keyUsage of a recipient.
      ext = {{NID_basic_constraints, "critical,CA:FALSE"},
             {NID_key_usage, "critical,keyAgreement"}};
      break;
  }
  ext.emplace_back(NID_subject_key_identifier, "hash");
  if (!self_signed) ext.emplace_back(NID_authority_key_identifier, "keyid:always");
  const std::string sans = san_value(spec);
  if (!sans.empty()) ext.emplace_back(NID_subject_alt_name, sans);
  if (!spec.ocsp_url.empty() && spec.profile != Profile::root_ca) {
    ext.emplace_back(NID_info_access, "OCSP;URI:" + spec.ocsp_url);
  }
  return ext;
}

Result<void> set_serial(X509* cert, RandomSource& random) {
  Bytes<16> raw = random.draw<16>();
  raw[0] &= 0x7f;  // positive
  raw[0] |= 0x40;  // and a full 127 bits, so no leading-zero ambiguity in any encoding
  BIGNUM* bn = BN_bin2bn(raw.data(), static_cast<int>(raw.size()), nullptr);
  const bool ok = bn != nullptr && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != nullptr;
  BN_free(bn);
  if (!ok) return std::unexpected(openssl_error(ErrorCode::internal, "serial number"));
  return {};
}

TimePoint asn1_time_point(const ASN1_TIME* t) {
  std::tm tm{};
  ASN1_TIME_to_tm(t, &tm);
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

}  // namespace

std::string_view to_string(Profile p) {
  for (const auto& [profile, name] : kProfileNames) {
    if (profile == p) return name;
  }
  return "unknown";
}

Result<Profile> parse_profile(std::string_view name) {
  for (const auto& [profile, n] : kProfileNames) {
    if (name == n && !is_ca(profile)) return profile;
  }
  return fail(ErrorCode::invalid_argument,
              "--profile: one of platform tls-server tls-client package-signing ocsp-signing "
              "result-signing encryption");
}

Result<void> validate(const CertSpec& spec) {
  if (auto parts = split_subject(spec.subject); !parts) return std::unexpected(parts.error());
  for (const auto& san : spec.sans) {
    if (!valid_san(san)) {
      return fail(ErrorCode::invalid_argument,
                  "--san: expected DNS:name, IP:address, URI:uri or email:address (no commas)");
    }
  }
  if (spec.days < 1 || spec.days > 36500) {
    return fail(ErrorCode::invalid_argument, "--days: must be 1..36500");
  }
  if (spec.profile == Profile::platform && (spec.device_id.empty() || spec.model.empty())) {
    return fail(ErrorCode::missing_argument, "platform certificates need a device id and a model");
  }
  if (spec.profile == Profile::tls_server && spec.sans.empty()) {
    return fail(ErrorCode::missing_argument, "--san: a tls-server certificate needs one");
  }
  if (spec.profile == Profile::encryption) {
    // The recipient's identity: who a sealed envelope is for (the ICF of this operator).
    const auto named = std::find_if(spec.sans.begin(), spec.sans.end(), [](const std::string& s) {
      return s.starts_with(kOperatorSan);
    });
    if (named == spec.sans.end()) {
      return fail(ErrorCode::missing_argument,
                  "--san: an encryption certificate needs URI:urn:mcim:operator:<id>");
    }
    if (!valid_mcim_id(std::string_view(*named).substr(kOperatorSan.size()))) {
      return fail(ErrorCode::invalid_argument,
                  "--san: the operator id must match [A-Za-z0-9._:-]{1,64}");
    }
  }
  const auto bad_urn_char = [](char c) { return c == ',' || c == ' ' || c == '\0'; };
  if (std::any_of(spec.device_id.begin(), spec.device_id.end(), bad_urn_char) ||
      std::any_of(spec.model.begin(), spec.model.end(), bad_urn_char)) {
    return fail(ErrorCode::invalid_argument, "device id and model: no commas or spaces");
  }
  return {};
}

Result<X509Ptr> issue_certificate(const CertSpec& spec, EVP_PKEY* subject_key, X509* issuer,
                                  EVP_PKEY* issuer_key, const Clock& clock, RandomSource& random) {
  if (auto v = validate(spec); !v) return std::unexpected(v.error());
  if (spec.profile == Profile::encryption && !is_p256(subject_key)) {
    return fail(ErrorCode::invalid_argument,
                "an encryption certificate certifies an EC P-256 key (ECDH with sealed content)");
  }
  const bool self_signed = issuer == nullptr;
  if (self_signed != (spec.profile == Profile::root_ca)) {
    return fail(ErrorCode::invalid_argument, "only a root CA certificate is self-signed");
  }
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), 2) != 1) {
    return std::unexpected(openssl_error(ErrorCode::internal, "X509_new"));
  }
  if (auto r = set_serial(cert.get(), random); !r) return std::unexpected(r.error());
  if (auto r = set_subject(cert.get(), spec.subject); !r) return std::unexpected(r.error());
  X509_set_issuer_name(cert.get(), X509_get_subject_name(self_signed ? cert.get() : issuer));
  std::time_t now = std::chrono::system_clock::to_time_t(clock.now());
  X509_time_adj_ex(X509_getm_notBefore(cert.get()), 0, -60, &now);
  X509_time_adj_ex(X509_getm_notAfter(cert.get()), spec.days, 0, &now);
  X509_set_pubkey(cert.get(), subject_key);

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, self_signed ? cert.get() : issuer, cert.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] : extensions(spec, self_signed)) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    if (ext == nullptr) {
      return std::unexpected(
          openssl_error(ErrorCode::invalid_argument, fmt::format("extension {}", OBJ_nid2sn(nid))));
    }
    X509_add_ext(cert.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(cert.get(), self_signed ? subject_key : issuer_key, EVP_sha256()) <= 0) {
    return std::unexpected(openssl_error(ErrorCode::internal, "signing the certificate"));
  }
  return cert;
}

std::optional<std::string> san_uri_with_prefix(const X509* cert, std::string_view prefix) {
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  std::optional<std::string> found;
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_URI) continue;
    const std::string uri(
        reinterpret_cast<const char*>(ASN1_STRING_get0_data(n->d.uniformResourceIdentifier)),
        static_cast<std::size_t>(ASN1_STRING_length(n->d.uniformResourceIdentifier)));
    if (uri.rfind(prefix, 0) == 0) {
      found = uri.substr(prefix.size());
      break;
    }
  }
  GENERAL_NAMES_free(names);
  return found;
}

std::optional<std::string> platform_device_id(const X509* cert) {
  return san_uri_with_prefix(cert, kDeviceUrn);
}
std::optional<std::string> platform_model(const X509* cert) {
  return san_uri_with_prefix(cert, kModelUrn);
}

TimePoint not_after(const X509* cert) { return asn1_time_point(X509_get0_notAfter(cert)); }
TimePoint not_before(const X509* cert) { return asn1_time_point(X509_get0_notBefore(cert)); }

}  // namespace mcim::pki
