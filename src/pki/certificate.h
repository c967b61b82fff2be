// X.509 certificates of the mcim PKI (DESIGN.md §4): EC P-256 keys, SHA-256 signatures, one
// profile per role with its extensions. Root and intermediate CAs; platform certificates for a
// device's TRE (device id and model as SAN URIs urn:mcim:device:<id>, urn:mcim:model:<model>);
// TLS server/client; package signing; OCSP signing; validation-result signing; encryption (an
// operator's ECDH key that sealed content is encrypted to, e.g. the ICF's batch key). CRL-free:
// revocation is by OCSP, whose URL goes into AIA. Pure apart from the key generation.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/random.h"
#include "pki/openssl.h"

namespace mcim::pki {

enum class Profile {
  root_ca,
  intermediate_ca,
  platform,
  tls_server,
  tls_client,
  package_signing,
  ocsp_signing,
  result_signing,
  // keyAgreement only, SAN URI urn:mcim:operator:<id>, P-256: a recipient of pki/sealed.h
  // envelopes that is not a TRE (the RO's ICF decrypts the suppliers' PCID batches with it).
  encryption,
};
std::string_view to_string(Profile p);
// The CLI names: platform tls-server tls-client package-signing ocsp-signing result-signing
// encryption.
Result<Profile> parse_profile(std::string_view name);

struct CertSpec {
  Profile profile = Profile::tls_server;
  std::string subject;            // "CN=x,O=y" or "/CN=x/O=y"
  std::vector<std::string> sans;  // "DNS:name", "IP:addr", "URI:uri", "email:addr"
  std::string ocsp_url;           // into AIA when not empty
  int days = 365;
  std::string device_id, model;  // platform profile: become SAN URIs
};

// Validates the spec (subject syntax, SAN forms, days, what a profile needs) without issuing.
Result<void> validate(const CertSpec& spec);

// Issues a certificate for subject_key signed by issuer/issuer_key; self-signed when issuer is
// null (root CA only). Serial: 127 random bits. notBefore is one minute in the past (clock skew).
Result<X509Ptr> issue_certificate(const CertSpec& spec, EVP_PKEY* subject_key, X509* issuer,
                                  EVP_PKEY* issuer_key, const Clock& clock, RandomSource& random);

// The rest of the first SAN URI that starts with `prefix` (e.g. "urn:mcim:device:").
std::optional<std::string> san_uri_with_prefix(const X509* cert, std::string_view prefix);

// Reads back what issue_certificate put in a platform certificate.
std::optional<std::string> platform_device_id(const X509* cert);
std::optional<std::string> platform_model(const X509* cert);

TimePoint not_after(const X509* cert);
TimePoint not_before(const X509* cert);

}  // namespace mcim::pki
