// OCSP (RFC 6960): the responder's logic over a CA directory and the client's query and
// response verification. (Being implemented: see issue 4.)
#pragma once

#include <chrono>
#include <string>

#include "common/clock.h"
#include "common/random.h"
#include "pki/revocation.h"
#include "pki/verify.h"

namespace mcim::pki {

// Builds a DER OCSPRequest for cert with a fresh 16-byte nonce (returned in *nonce).
Result<ByteVec> make_ocsp_request(X509* cert, X509* issuer, RandomSource& random, ByteVec* nonce);

// Verifies a DER OCSPResponse about cert: successful status, basic response signed by the
// issuer or by a responder certificate the issuer delegated (OCSPSigning EKU), the nonce equal
// to expected_nonce when one is given, thisUpdate not in the future (small skew allowed) nor
// older than max_age, nextUpdate (if present) not passed. ocsp_invalid otherwise, naming the
// failed check.
Result<RevocationAnswer> verify_ocsp_response(ByteView response_der, X509* cert, X509* issuer,
                                              const ByteVec* expected_nonce, const Clock& clock,
                                              std::chrono::seconds max_age = std::chrono::minutes(10));

// Asks the responder named in cert's AIA (or `url` when not empty) about cert, with a fresh
// nonce, and verifies the answer: signed by the issuer or by a responder it delegated
// (OCSPSigning EKU), nonce echoed, thisUpdate not in the future and not older than max_age,
// nextUpdate not passed. ocsp_invalid when any of that fails or no answer comes.
Result<RevocationAnswer> query_ocsp(X509* cert, X509* issuer, const std::string& url,
                                    const Clock& clock, RandomSource& random,
                                    std::chrono::seconds max_age = std::chrono::minutes(10));

}  // namespace mcim::pki
