// OCSP (RFC 6960, nonce per RFC 8954): the client (request, response verification, query over
// HTTP) and the responder over a CA directory whose index.txt (`openssl ca` format) it keeps in
// memory and reloads when the file changes. Verification is pure (time passed in) and
// thread-safe; OcspResponder is immutable apart from its index cache and safe to share between
// threads. Interoperates with `openssl ocsp` both ways: see docs/ocsp.md.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/random.h"
#include "pki/revocation.h"
#include "pki/verify.h"

namespace mcim::pki {

// Tolerated clock difference with the responder: thisUpdate may be this far in the future and
// nextUpdate this far in the past (as `openssl ocsp -validity_period` defaults to).
inline constexpr std::chrono::seconds kOcspClockSkew = std::chrono::minutes(5);
// query_ocsp's bound on connecting, sending and receiving, and on the answer's size.
inline constexpr std::chrono::seconds kOcspHttpTimeout = std::chrono::seconds(10);
inline constexpr std::size_t kOcspMaxResponseBytes = 64 * 1024;

// Builds a DER OCSPRequest for cert (CertID with SHA-1, as OpenSSL and RFC 5019 clients do) with
// a fresh 16-byte nonce, returned in *nonce when nonce is not null.
Result<ByteVec> make_ocsp_request(X509* cert, X509* issuer, RandomSource& random, ByteVec* nonce);

// Verifies a DER OCSPResponse about cert and returns its status. Checks, in this order:
//   response parses, status successful, a BasicOCSPResponse;
//   signer: the responder ID names the issuer itself, or a certificate carried in the response
//     that the issuer signed directly, with the OCSPSigning EKU, valid now (RFC 6960 §4.2.2.2);
//   the response signature verifies with the signer's key;
//   nonce (only when expected_nonce is given): present and equal -> else nonce_mismatch;
//   a single response whose CertID is cert's (any hash algorithm the response used);
//   thisUpdate <= now + kOcspClockSkew and >= now - max_age; nextUpdate (when present) >=
//     thisUpdate and >= now - kOcspClockSkew.
// Every failure except the nonce is ocsp_invalid, its message naming the check. Cost: one parse
// and one signature verification; a delegated responder's certificate is parsed and checked
// against the issuer once, then remembered by content hash (bounded, process-wide).
Result<RevocationAnswer> verify_ocsp_response(
    ByteView response_der, X509* cert, X509* issuer, const ByteVec* expected_nonce,
    const Clock& clock, std::chrono::seconds max_age = std::chrono::minutes(10));

// Asks the responder named in cert's AIA (or `url` when not empty) about cert: HTTP POST of
// application/ocsp-request with a fresh nonce, kOcspHttpTimeout, then verify_ocsp_response with
// that nonce expected. The http_proxy/no_proxy environment is honoured except for loopback
// hosts. ocsp_invalid when there is no URL in AIA, no answer, or the answer fails a check
// (nonce_mismatch for the nonce); invalid_argument for a malformed `url`; unsupported for https.
Result<RevocationAnswer> query_ocsp(X509* cert, X509* issuer, const std::string& url,
                                    const Clock& clock, RandomSource& random,
                                    std::chrono::seconds max_age = std::chrono::minutes(10));

struct OcspResponderOptions {
  std::chrono::seconds validity = std::chrono::hours(1);  // nextUpdate = thisUpdate + validity
};

// An HTTP answer for one OCSP exchange, independent of the server that carries it.
struct OcspHttpReply {
  int status = 200;
  std::string content_type;
  ByteVec body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// The responder for one CA. Each answer: thisUpdate = producedAt = now, nextUpdate = now +
// validity, responder ID by key hash, the signer's certificate included, the request's nonce
// echoed, signed with SHA-256. Statuses from index.txt: V/E good, R revoked (time; reason unless
// unspecified), absent unknown. A CertID naming another issuer gets unknown, and a request naming
// only other issuers gets `unauthorized` (RFC 6960 §2.3); an unparseable request, or a nonce
// outside 1..32 octets (RFC 8954), `malformedRequest`; an unreadable index `internalError`.
class OcspResponder {
 public:
  // The CA is ca_dir/ca.pem with ca_dir/index.txt; the signer is that CA itself or a
  // certificate it issued with the OCSPSigning EKU. invalid_argument for a signer that may not
  // sign for this CA or a key that does not match it; the index errors of parse_index.
  static Result<OcspResponder> create(const std::string& ca_dir, X509* signer, EVP_PKEY* signer_key,
                                      const Clock& clock, OcspResponderOptions options = {});
  // The same with the signer read from PREFIX.pem and PREFIX.key (`mcim pki issue --out`
  // files; DIR/ca makes the CA sign its own answers).
  static Result<OcspResponder> open(const std::string& ca_dir, const std::string& signer_prefix,
                                    const Clock& clock, OcspResponderOptions options = {});

  OcspResponder(OcspResponder&&) noexcept;
  OcspResponder& operator=(OcspResponder&&) noexcept;
  ~OcspResponder();

  // A DER OCSPResponse for a DER OCSPRequest; never fails (errors are OCSP statuses).
  ByteVec respond(ByteView request_der) const;

  // RFC 6960 Appendix A over HTTP: POST with the DER request as the body (any path), or GET with
  // the base64 request, URL-encoded, as the last part(s) of the path. 405 for other methods.
  OcspHttpReply respond_http(std::string_view method, std::string_view target, ByteView body) const;

  // How many times index.txt was read: once at creation, then once per change of the file.
  std::uint64_t index_loads() const;

  struct Impl;

 private:
  explicit OcspResponder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mcim::pki
