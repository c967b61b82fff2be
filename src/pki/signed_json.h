// Signed canonical JSON documents, shared by attestation reports, reference sets, validation
// results and the TRE's records (audit entries, management instructions, status reports).
// Canonical form: nlohmann::json dump with sorted keys and no whitespace; a document is
// {"certificates"?:[DER hex...],"<inner>":{...},"signature":"<DER ECDSA hex>"} and the signature
// covers the exact bytes of the canonical inner object. Decoding is strict: unknown, missing or
// mistyped members, and any non-canonical spelling, are bad_format naming the member (never its
// value). Pure apart from OpenSSL; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/error.h"
#include "pki/openssl.h"
#include "pki/verify.h"

namespace mcim::pki {

using Json = nlohmann::json;
using UtcSeconds = std::chrono::sys_seconds;

inline constexpr std::size_t kMaxSignedDocument = std::size_t{1} << 20;
inline constexpr std::size_t kMaxToken = 128;
inline constexpr std::size_t kMinSignature = 8;   // DER ECDSA-Sig-Value: 30 len 02 len r 02 len s
inline constexpr std::size_t kMaxSignature = 72;  // ... for P-256
inline constexpr std::size_t kMaxEnvelopeCertificates = 4;
inline constexpr std::int64_t kMaxUtcSeconds = 253402300799;  // 9999-12-31T23:59:59Z

// Names, device ids and models: 1..max printable ASCII characters without space and the two
// characters JSON escapes, so their canonical form is the text itself.
bool valid_token(std::string_view s, std::size_t max = kMaxToken);

std::int64_t utc_seconds(UtcSeconds t);
UtcSeconds floor_seconds(TimePoint t);
std::string utc_text(TimePoint t);  // 2026-11-26T12:00:00Z

// `replace` never throws: invalid UTF-8 becomes U+FFFD, and dumping the parsed result again
// gives the same bytes.
std::string canonical(const Json& j);

// The envelope text; certificates_json is empty for documents that carry no certificates.
std::string envelope(std::string_view certificates_json, std::string_view inner_key,
                     std::string_view inner, ByteView signature);
Json certificates_json(const std::vector<X509*>& certs);

// Signs canonical(inner) with `key` and wraps it; `certs` (signer first) go into "certificates"
// when not empty. internal when signing fails.
Result<std::string> sign_envelope(std::string_view inner_key, const Json& inner, EVP_PKEY* key,
                                  const std::vector<X509*>& certs = {});

// ---- Strict decoding (every error is bad_format and names the path) --------------------------

Error bad(std::string message);
// An unknown member's name is repeated only when short and plain.
std::string describe_key(std::string_view key);
Result<Json> parse_document(std::string_view text, std::string_view what,
                            std::size_t max_size = kMaxSignedDocument);
// Every member known, every known member present.
Result<void> expect_members(const Json& obj, std::string_view path,
                            std::initializer_list<std::string_view> names);
Result<const std::string*> string_member(const Json& obj, std::string_view path,
                                         std::string_view key);
Result<std::string> token_member(const Json& obj, std::string_view path, std::string_view key);
// Lowercase hex only, min..max bytes.
Result<ByteVec> hex_member(const Json& obj, std::string_view path, std::string_view key,
                           std::size_t min_bytes, std::size_t max_bytes);
Result<UtcSeconds> time_member(const Json& obj, std::string_view path, std::string_view key);
Result<std::uint64_t> uint_member(const Json& obj, std::string_view path, std::string_view key,
                                  std::uint64_t min, std::uint64_t max);
Result<const Json*> array_member(const Json& obj, std::string_view path, std::string_view key,
                                 std::size_t min, std::size_t max);
Result<void> type_member(const Json& obj, std::string_view path, std::string_view expected);

// ---- Envelopes ---------------------------------------------------------------------------------

struct Envelope {
  Json doc;
  std::vector<X509Ptr> certificates;  // signer first, when the envelope carries certificates
  ByteVec signature;
};

Result<std::vector<X509Ptr>> decode_certificates(const Json& doc, std::string_view what);
// Strips the one trailing newline a file may end with.
std::string_view document_text(std::string_view text);
Result<Envelope> decode_envelope(std::string_view text, std::string_view what,
                                 std::string_view inner_key, bool with_certificates);
// After the fields were checked (their messages are more precise): the text must be exactly
// what the encoder writes. Returns the signed bytes, the canonical inner object.
Result<std::string> canonical_inner(const Envelope& env, std::string_view text,
                                    std::string_view what, std::string_view inner_key);

// A document signer: an end entity whose key usage says it signs content (digitalSignature and
// nonRepudiation), never a CA key nor a platform key, and EC P-256. chain_invalid otherwise.
Result<void> check_document_signer(X509* cert);
// The envelope's first certificate chains to `anchors` now (chain_invalid / cert_expired), is a
// document signer, and signed `signed_bytes` (signature_invalid).
Result<X509*> verify_signer(const Envelope& env, std::string_view signed_bytes,
                            const TrustAnchors& anchors, const std::vector<X509*>& untrusted,
                            const Clock& clock, std::string_view what);

bool verify_bytes(EVP_PKEY* key, std::string_view data, ByteView sig);
Result<ByteVec> sign_bytes(EVP_PKEY* key, std::string_view data);

}  // namespace mcim::pki
