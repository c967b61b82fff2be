// PBKDF2-HMAC-SHA-256 (pbkdf2.h): the RFC 7914 §11 test vectors (the values `openssl kdf ...
// PBKDF2` prints too), agreement with OpenSSL's own PKCS5_PBKDF2_HMAC over passwords and salts of
// every size around the 64-byte block and outputs around the 32-byte digest, and refused arguments.
#include "pki/pbkdf2.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/hex.h"

namespace mcim::pki {
namespace {

ByteView view_of(std::string_view s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

ByteVec openssl_pbkdf2(ByteView password, ByteView salt, std::uint32_t iterations,
                       std::size_t size) {
  ByteVec out(size);
  EXPECT_EQ(PKCS5_PBKDF2_HMAC(reinterpret_cast<const char*>(password.data()),
                              static_cast<int>(password.size()), salt.data(),
                              static_cast<int>(salt.size()), static_cast<int>(iterations),
                              EVP_sha256(), static_cast<int>(size), out.data()),
            1);
  return out;
}

ByteVec ours(ByteView password, ByteView salt, std::uint32_t iterations, std::size_t size) {
  ByteVec out(size);
  auto r = pbkdf2_hmac_sha256(password, salt, iterations, out);
  EXPECT_TRUE(r.has_value()) << r.error().message;
  return out;
}

struct Vector {
  std::string_view password, salt;
  std::uint32_t iterations;
  std::string_view dk;  // hex, 64 bytes
};

// RFC 7914 §11, "Test Vectors for PBKDF2 with HMAC-SHA-256".
constexpr Vector kRfc7914[] = {
    {"passwd", "salt", 1,
     "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
     "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"},
    {"Password", "NaCl", 80000,
     "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"
     "a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"},
};

TEST(Pbkdf2Test, Rfc7914Vectors) {
  for (const Vector& v : kRfc7914) {
    SCOPED_TRACE(v.password);
    EXPECT_EQ(to_hex(ours(view_of(v.password), view_of(v.salt), v.iterations, 64)), v.dk);
  }
}

TEST(Pbkdf2Test, AgreesWithOpenSslAcrossBlockAndDigestBoundaries) {
  // Passwords of 0..130 bytes cross the 64-byte HMAC block (longer ones are hashed first); salts
  // of 0..70 bytes cross a SHA-256 block together with the 4-byte block index; outputs of
  // 1..97 bytes take one to four PBKDF2 blocks, the last one partial or whole.
  for (std::size_t pw : {0, 1, 8, 55, 63, 64, 65, 100, 130}) {
    for (std::size_t salt : {0, 4, 23, 51, 52, 55, 56, 60, 64, 70}) {
      for (std::size_t size : {1, 16, 31, 32, 33, 64, 97}) {
        for (std::uint32_t iterations : {1u, 2u, 3u, 100u}) {
          std::string p(pw, 'p'), s(salt, 's');
          for (std::size_t i = 0; i < pw; ++i) p[i] = static_cast<char>('0' + i % 10);
          for (std::size_t i = 0; i < salt; ++i) s[i] = static_cast<char>(i * 37);
          ASSERT_EQ(ours(view_of(p), view_of(s), iterations, size),
                    openssl_pbkdf2(view_of(p), view_of(s), iterations, size))
              << "password " << pw << " salt " << salt << " size " << size << " iterations "
              << iterations;
        }
      }
    }
  }
}

TEST(Pbkdf2Test, AgreesWithOpenSslAtTheBootstrapKeysCost) {
  // What tre/bootstrap_key.h asks for: a PIN, a label and device id as salt, 100,000 iterations.
  const std::string salt = "mcim-bootstrap/1dev-000042";
  EXPECT_EQ(ours(view_of("12345678"), view_of(salt), 100'000, 32),
            openssl_pbkdf2(view_of("12345678"), view_of(salt), 100'000, 32));
}

TEST(Pbkdf2Test, RefusesNoIterationsAndOutputsOutOfRange) {
  std::vector<std::uint8_t> none, one(1), big(1025), max(1024);
  for (auto* out : {&none, &big}) {
    auto r = pbkdf2_hmac_sha256(view_of("pin"), view_of("salt"), 1, *out);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    EXPECT_NE(r.error().message.find("1..1024"), std::string::npos) << r.error().message;
  }
  auto zero = pbkdf2_hmac_sha256(view_of("pin"), view_of("salt"), 0, one);
  ASSERT_FALSE(zero.has_value());
  EXPECT_EQ(zero.error().code, ErrorCode::invalid_argument);
  EXPECT_TRUE(pbkdf2_hmac_sha256(view_of("pin"), view_of("salt"), 1, max).has_value());
  EXPECT_EQ(ByteVec(max.begin(), max.end()),
            openssl_pbkdf2(view_of("pin"), view_of("salt"), 1, 1024));
}

}  // namespace
}  // namespace mcim::pki
