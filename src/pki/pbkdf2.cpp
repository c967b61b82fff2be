#include "pki/pbkdf2.h"

#include <algorithm>
#include <array>

// OpenSSL 3 deprecates the low-level SHA-256 API, but it is the only one that exposes the
// chaining state and the single block transform (with the CPU's SHA extensions where present)
// that PBKDF2's inner loop needs without a context copy and an allocation per step.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include "common/secure.h"

namespace mcim::pki {
namespace {

constexpr std::size_t kBlock = 64, kDigest = 32, kMaxOut = 1024;

void put_be32(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

// The digest a SHA-256 state holds after its last block: the chaining value, big-endian.
void state_out(const SHA256_CTX& c, std::uint8_t* out) {
  for (std::size_t i = 0; i < 8; ++i) put_be32(out + 4 * i, static_cast<std::uint32_t>(c.h[i]));
}

// Wipes the SHA-256 states, the HMAC key blocks and the PBKDF2 blocks at scope exit.
struct Scratch {
  SHA256_CTX inner{}, outer{}, work{};
  std::array<std::uint8_t, kBlock> key{}, pad{}, block{};
  std::array<std::uint8_t, kDigest> u{}, t{};
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    secure_wipe(&inner, sizeof inner);
    secure_wipe(&outer, sizeof outer);
    secure_wipe(&work, sizeof work);
    secure_wipe(key);
    secure_wipe(pad);
    secure_wipe(block);
    secure_wipe(u);
    secure_wipe(t);
  }
};

}  // namespace

Result<void> pbkdf2_hmac_sha256(ByteView password, ByteView salt, std::uint32_t iterations,
                                std::span<std::uint8_t> out) {
  if (iterations == 0) return fail(ErrorCode::invalid_argument, "pbkdf2: iterations must be >= 1");
  if (out.empty() || out.size() > kMaxOut) {
    return fail(ErrorCode::invalid_argument, "pbkdf2: output must be 1..1024 bytes");
  }
  Scratch s;
  // HMAC key (RFC 2104): a password longer than a block is hashed first.
  if (password.size() > kBlock) {
    SHA256(password.data(), password.size(), s.key.data());
  } else {
    std::copy(password.begin(), password.end(), s.key.begin());
  }
  for (std::size_t i = 0; i < kBlock; ++i) s.pad[i] = s.key[i] ^ 0x36;
  SHA256_Init(&s.inner);
  SHA256_Update(&s.inner, s.pad.data(), kBlock);
  for (std::size_t i = 0; i < kBlock; ++i) s.pad[i] = s.key[i] ^ 0x5c;
  SHA256_Init(&s.outer);
  SHA256_Update(&s.outer, s.pad.data(), kBlock);

  // From U_2 on, both hashes of an iteration take one 32-byte message after a 64-byte key block:
  // one final block of U | 0x80 | zeros | the length in bits (96 bytes = 768 bits), big-endian.
  s.block.fill(0);
  s.block[kDigest] = 0x80;
  s.block[kBlock - 2] = 0x03;  // 768 = 0x0300

  std::size_t done = 0;
  for (std::uint32_t index = 1; done < out.size(); ++index) {
    // U_1 = HMAC(P, S || INT(index)).
    std::array<std::uint8_t, 4> be{};
    put_be32(be.data(), index);
    s.work = s.inner;
    SHA256_Update(&s.work, salt.data(), salt.size());
    SHA256_Update(&s.work, be.data(), be.size());
    SHA256_Final(s.u.data(), &s.work);
    s.work = s.outer;
    SHA256_Update(&s.work, s.u.data(), kDigest);
    SHA256_Final(s.u.data(), &s.work);
    s.t = s.u;
    // U_j = HMAC(P, U_{j-1}); T ^= U_j.
    for (std::uint32_t j = 1; j < iterations; ++j) {
      std::copy(s.u.begin(), s.u.end(), s.block.begin());
      s.work = s.inner;
      SHA256_Transform(&s.work, s.block.data());
      state_out(s.work, s.block.data());
      s.work = s.outer;
      SHA256_Transform(&s.work, s.block.data());
      state_out(s.work, s.u.data());
      for (std::size_t k = 0; k < kDigest; ++k) s.t[k] ^= s.u[k];
    }
    const std::size_t n = std::min(kDigest, out.size() - done);
    std::copy_n(s.t.begin(), n, out.begin() + static_cast<std::ptrdiff_t>(done));
    done += n;
  }
  return {};
}

}  // namespace mcim::pki
