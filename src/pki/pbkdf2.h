// PBKDF2-HMAC-SHA-256 (RFC 8018 §5.2), for keys stretched from short secrets such as the
// bootstrap PIN (tre/bootstrap_key.h). The same output as OpenSSL's PKCS5_PBKDF2_HMAC with
// EVP_sha256(), at a fraction of its cost: OpenSSL 3.0 copies an EVP digest context, allocates
// and cleanses at every iteration, so for 100,000 iterations most of its time is overhead. Here
// the HMAC's inner and outer SHA-256 states are computed once, and every iteration is exactly
// two SHA-256 block transforms over a pre-padded block (docs/performance.md "PBKDF2"). Pure,
// thread-safe, no allocation; every intermediate value is wiped.
#pragma once

#include <cstdint>
#include <span>

#include "common/bytes.h"
#include "common/error.h"

namespace mcim::pki {

// Fills `out` (1..1024 bytes) with PBKDF2-HMAC-SHA-256(password, salt, iterations).
// invalid_argument when iterations is 0 or out's size is outside 1..1024.
Result<void> pbkdf2_hmac_sha256(ByteView password, ByteView salt, std::uint32_t iterations,
                                std::span<std::uint8_t> out);

}  // namespace mcim::pki
