// AES-128 against FIPS-197 and against OpenSSL's EVP, for both backends.
#include "aka/aes128.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include "common/hex.h"
#include "common/random.h"

namespace mcim::aka {
namespace {

Block evp_encrypt(const Bytes<16>& key, const Block& in) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex(ctx, EVP_aes_128_ecb(), nullptr, key.data(), nullptr);
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  Block out{};
  int len = 0;
  EVP_EncryptUpdate(ctx, out.data(), &len, in.data(), 16);
  EVP_CIPHER_CTX_free(ctx);
  return out;
}

class Aes128Backends : public ::testing::TestWithParam<Aes128::Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Aes128::Backend::aesni && !Aes128::cpu_has_aesni()) {
      GTEST_SKIP() << "CPU without AES-NI";
    }
  }
};

TEST_P(Aes128Backends, Fips197AppendixC1) {
  const auto key = *parse_hex_fixed<16>("000102030405060708090a0b0c0d0e0f", "key");
  const auto pt = *parse_hex_fixed<16>("00112233445566778899aabbccddeeff", "pt");
  Aes128 aes(key, GetParam());
  EXPECT_EQ(aes.backend(), GetParam());
  EXPECT_EQ(to_hex(aes.encrypt(pt)), "69c4e0d86a7b0430d8cdb78070b4c55a");
}

TEST_P(Aes128Backends, MatchesOpensslEvpOnRandomKeysAndBatchSizes) {
  OsRandom rng;
  for (int trial = 0; trial < 200; ++trial) {
    const auto key = rng.draw<16>();
    Aes128 aes(key, GetParam());
    Block in[7], out[7];
    for (auto& b : in) b = rng.draw<16>();
    const std::size_t n = static_cast<std::size_t>(trial % 7) + 1;
    aes.encrypt_blocks(in, out, n);
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], evp_encrypt(key, in[i])) << trial;
  }
}

INSTANTIATE_TEST_SUITE_P(All, Aes128Backends,
                         ::testing::Values(Aes128::Backend::aesni, Aes128::Backend::portable),
                         [](const auto& param_info) {
                           return param_info.param == Aes128::Backend::aesni ? "aesni" : "portable";
                         });

}  // namespace
}  // namespace mcim::aka
