// TUAK (TS 35.231) against every test set of TS 35.233, its refusals, the Algorithm interface,
// and the Keccak-f[1600] permutation under it against OpenSSL's SHA-3 and TS 35.232 vectors.
#include "aka/tuak.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "aka/keccak.h"
#include "common/hex.h"
#include "tuak_test_sets.h"

namespace mcim::aka::testdata {

// Names a failing parameter in gtest output instead of dumping its bytes.
void PrintTo(const TuakTestSet& t, std::ostream* os) { *os << "TS 35.233 test set " << t.number; }

}  // namespace mcim::aka::testdata

namespace mcim::aka {
namespace {

using testdata::kTuakTestSets;
using testdata::TuakTestSet;

ByteVec hex(std::string_view text) {
  auto parsed = parse_hex(text, "test vector");
  EXPECT_TRUE(parsed.has_value()) << text;
  return parsed.value_or(ByteVec{});
}

template <std::size_t N>
Bytes<N> hex_fixed(std::string_view text) {
  const ByteVec v = hex(text);
  EXPECT_EQ(v.size(), N) << text;
  Bytes<N> out{};
  std::copy_n(v.begin(), std::min(N, v.size()), out.begin());
  return out;
}

std::string hex_of(ByteView v) { return to_hex(v); }

TuakParams params_of(const TuakTestSet& t) {
  return TuakParams{.mac_bits = t.mac_bits,
                    .res_bits = t.res_bits,
                    .ck_bits = t.ck_bits,
                    .ik_bits = t.ik_bits,
                    .keccak_iterations = t.keccak_iterations};
}

Tuak make_tuak(const TuakTestSet& t, const TuakParams& params) {
  auto tuak = Tuak::create(hex(t.k), hex_fixed<32>(t.topc), params);
  if (!tuak) throw std::runtime_error(tuak.error().message);
  return std::move(*tuak);
}

// ---- TS 35.233 test sets ----------------------------------------------------------------------

class TuakTestSetTest : public ::testing::TestWithParam<TuakTestSet> {
 protected:
  const TuakTestSet& set() const { return GetParam(); }
  Tuak tuak() const { return make_tuak(set(), params_of(set())); }
  Rand rand() const { return hex_fixed<16>(set().rand); }
  Sqn sqn() const { return hex_fixed<6>(set().sqn); }
  Amf amf() const { return hex_fixed<2>(set().amf); }
};

TEST_P(TuakTestSetTest, TableLengthsMatchDeclaredBits) {
  EXPECT_EQ(set().f1.size() * 4, set().mac_bits);
  EXPECT_EQ(set().f1star.size() * 4, set().mac_bits);
  EXPECT_EQ(set().f2.size() * 4, set().res_bits);
  EXPECT_EQ(set().f3.size() * 4, set().ck_bits);
  EXPECT_EQ(set().f4.size() * 4, set().ik_bits);
}

TEST_P(TuakTestSetTest, Topc) {
  auto topc = Tuak::compute_topc(hex(set().k), hex_fixed<32>(set().top), set().keccak_iterations);
  ASSERT_TRUE(topc.has_value()) << topc.error().message;
  EXPECT_EQ(to_hex(*topc), set().topc);
}

TEST_P(TuakTestSetTest, F1) {
  EXPECT_EQ(hex_of(tuak().f1_full(rand(), sqn(), amf()).view()), set().f1);
}

TEST_P(TuakTestSetTest, F1star) {
  EXPECT_EQ(hex_of(tuak().f1star_full(rand(), sqn(), amf()).view()), set().f1star);
}

TEST_P(TuakTestSetTest, F2345) {
  const Tuak::Outputs out = tuak().f2345_full(rand());
  EXPECT_EQ(hex_of(out.res.view()), set().f2);
  EXPECT_EQ(hex_of(out.ck.view()), set().f3);
  EXPECT_EQ(hex_of(out.ik.view()), set().f4);
  EXPECT_EQ(to_hex(out.ak), set().f5);
}

TEST_P(TuakTestSetTest, F5star) { EXPECT_EQ(to_hex(tuak().f5star(rand())), set().f5star); }

// The interface methods return the leading bytes of the full outputs (the documented behaviour
// when usable_for_av() is false) and the full outputs themselves for 64-bit MAC, 128-bit CK/IK.
TEST_P(TuakTestSetTest, AlgorithmInterfaceAgreesWithFullOutputs) {
  const Tuak t = tuak();
  const Algorithm& alg = t;
  EXPECT_EQ(to_hex(alg.f1(rand(), sqn(), amf())), set().f1.substr(0, 16));
  EXPECT_EQ(to_hex(alg.f1star(rand(), sqn(), amf())), set().f1star.substr(0, 16));
  const F2345 out = alg.f2345(rand());
  EXPECT_EQ(hex_of(out.res.view()), set().f2);
  EXPECT_EQ(to_hex(out.ck), set().f3.substr(0, 32));
  EXPECT_EQ(to_hex(out.ik), set().f4.substr(0, 32));
  EXPECT_EQ(to_hex(out.ak), set().f5);
  EXPECT_EQ(to_hex(alg.f5star(rand())), set().f5star);
  EXPECT_EQ(t.usable_for_av(),
            set().mac_bits == 64 && set().ck_bits == 128 && set().ik_bits == 128);
}

TEST_P(TuakTestSetTest, CopiesComputeTheSame) {
  const Tuak original = tuak();
  Tuak copy = original;
  EXPECT_EQ(copy.f1_full(rand(), sqn(), amf()), original.f1_full(rand(), sqn(), amf()));
  Tuak moved = std::move(copy);
  EXPECT_EQ(to_hex(moved.f5star(rand())), set().f5star);
}

std::string set_name(const ::testing::TestParamInfo<TuakTestSet>& param_info) {
  return "Set" + std::to_string(param_info.param.number);
}

INSTANTIATE_TEST_SUITE_P(Ts35233, TuakTestSetTest, ::testing::ValuesIn(kTuakTestSets), set_name);

// Set 1 is the one set whose every length fits the TS 33.102 vector: the interface methods must
// give the 35.233 values unchanged.
TEST(TuakAlgorithm, Set1ThroughInterfaceIsExact) {
  const TuakTestSet& t = kTuakTestSets[0];
  const Tuak tuak = make_tuak(t, params_of(t));
  ASSERT_TRUE(tuak.usable_for_av());
  const Algorithm& alg = tuak;
  const Rand rand = hex_fixed<16>(t.rand);
  EXPECT_EQ(to_hex(alg.f1(rand, hex_fixed<6>(t.sqn), hex_fixed<2>(t.amf))), t.f1);
  EXPECT_EQ(to_hex(alg.f1star(rand, hex_fixed<6>(t.sqn), hex_fixed<2>(t.amf))), t.f1star);
  const F2345 out = alg.f2345(rand);
  EXPECT_EQ(hex_of(out.res.view()), t.f2);
  EXPECT_EQ(to_hex(out.ck), t.f3);
  EXPECT_EQ(to_hex(out.ik), t.f4);
  EXPECT_EQ(to_hex(out.ak), t.f5);
}

// The lengths are part of the Keccak input, not a truncation: a 64-bit MAC is not the prefix of
// the 128-bit one, and AK moves with the IK length (sets 2 and 3 differ only there).
TEST(TuakAlgorithm, LengthsChangeTheOutputs) {
  const TuakTestSet& t = kTuakTestSets[1];
  TuakParams p = params_of(t);
  p.mac_bits = 64;
  const Tuak short_mac = make_tuak(t, p);
  const Rand rand = hex_fixed<16>(t.rand);
  const VarBytes mac = short_mac.f1_full(rand, hex_fixed<6>(t.sqn), hex_fixed<2>(t.amf));
  EXPECT_EQ(mac.size, 8);
  EXPECT_NE(hex_of(mac.view()), t.f1.substr(0, 16));
  EXPECT_NE(kTuakTestSets[1].f5, kTuakTestSets[2].f5);
  EXPECT_EQ(kTuakTestSets[1].f5star, kTuakTestSets[2].f5star);
}

// ---- Refusals ---------------------------------------------------------------------------------

void expect_invalid(const Result<Tuak>& r, std::string_view parameter) {
  ASSERT_FALSE(r.has_value()) << parameter;
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(r.error().message.find(parameter), std::string::npos) << r.error().message;
}

TEST(TuakCreate, RefusesKeyLengths) {
  const Bytes<32> topc{};
  for (std::size_t n : {0, 1, 8, 15, 17, 24, 31, 33, 64}) {
    const ByteVec k(n, 0xab);
    expect_invalid(Tuak::create(k, topc), "k");
  }
  EXPECT_TRUE(Tuak::create(ByteVec(16, 0xab), topc).has_value());
  EXPECT_TRUE(Tuak::create(ByteVec(32, 0xab), topc).has_value());
}

TEST(TuakCreate, RefusesParams) {
  const ByteVec k(16, 0xab);
  const Bytes<32> topc{};
  for (std::size_t bits : {0, 32, 96, 192, 512}) {
    expect_invalid(Tuak::create(k, topc, {.mac_bits = bits}), "mac_bits");
  }
  for (std::size_t bits : {0, 16, 48, 96, 512}) {
    expect_invalid(Tuak::create(k, topc, {.res_bits = bits}), "res_bits");
  }
  for (std::size_t bits : {0, 64, 192, 512}) {
    expect_invalid(Tuak::create(k, topc, {.ck_bits = bits}), "ck_bits");
    expect_invalid(Tuak::create(k, topc, {.ik_bits = bits}), "ik_bits");
  }
  expect_invalid(Tuak::create(k, topc, {.keccak_iterations = 0}), "keccak_iterations");
}

TEST(TuakCreate, AcceptsEveryAllowedCombination) {
  const ByteVec k(32, 0x5a);
  const Bytes<32> topc{};
  for (std::size_t mac : {64, 128, 256}) {
    for (std::size_t res : {32, 64, 128, 256}) {
      for (std::size_t ck : {128, 256}) {
        for (std::size_t ik : {128, 256}) {
          const TuakParams p{.mac_bits = mac, .res_bits = res, .ck_bits = ck, .ik_bits = ik};
          auto t = Tuak::create(k, topc, p);
          ASSERT_TRUE(t.has_value()) << t.error().message;
          const Tuak::Outputs out = t->f2345_full(Rand{});
          EXPECT_EQ(out.res.size * 8u, res);
          EXPECT_EQ(out.ck.size * 8u, ck);
          EXPECT_EQ(out.ik.size * 8u, ik);
          EXPECT_EQ(t->f1_full(Rand{}, Sqn{}, Amf{}).size * 8u, mac);
        }
      }
    }
  }
}

TEST(TuakComputeTopc, RefusesBadArguments) {
  const Bytes<32> top{};
  auto bad_k = Tuak::compute_topc(ByteVec(20, 1), top);
  ASSERT_FALSE(bad_k.has_value());
  EXPECT_EQ(bad_k.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(bad_k.error().message.find("k"), std::string::npos);
  auto bad_n = Tuak::compute_topc(ByteVec(16, 1), top, 0);
  ASSERT_FALSE(bad_n.has_value());
  EXPECT_EQ(bad_n.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(bad_n.error().message.find("keccak_iterations"), std::string::npos);
}

// ---- Keccak-f[1600] ---------------------------------------------------------------------------

Bytes<200> permute_bytes(const Bytes<200>& in) {
  KeccakState s{};
  for (std::size_t i = 0; i < 200; ++i) s[i / 8] |= std::uint64_t{in[i]} << (8 * (i % 8));
  keccak_f1600(s);
  Bytes<200> out{};
  for (std::size_t i = 0; i < 200; ++i)
    out[i] = static_cast<std::uint8_t>(s[i / 8] >> (8 * (i % 8)));
  return out;
}

// SHA-3 (FIPS 202 §6.1) from the permutation alone, to compare with OpenSSL.
ByteVec sha3_via_permutation(ByteView msg, std::size_t digest_bytes) {
  const std::size_t rate = 200 - 2 * digest_bytes;
  ByteVec padded(msg.begin(), msg.end());
  padded.push_back(0x06);
  while (padded.size() % rate != 0) padded.push_back(0);
  padded.back() |= 0x80;
  Bytes<200> state{};
  for (std::size_t off = 0; off < padded.size(); off += rate) {
    for (std::size_t i = 0; i < rate; ++i) state[i] ^= padded[off + i];
    state = permute_bytes(state);
  }
  return ByteVec(state.begin(), state.begin() + static_cast<std::ptrdiff_t>(digest_bytes));
}

ByteVec sha3_openssl(ByteView msg, const EVP_MD* md) {
  ByteVec out(static_cast<std::size_t>(EVP_MD_get_size(md)));
  unsigned int len = 0;
  EXPECT_EQ(EVP_Digest(msg.data(), msg.size(), out.data(), &len, md, nullptr), 1);
  out.resize(len);
  return out;
}

TEST(Keccak, MatchesOpenSslSha3) {
  for (std::size_t n : {0, 1, 3, 71, 72, 135, 136, 137, 300, 1000}) {
    ByteVec msg(n);
    for (std::size_t i = 0; i < n; ++i) msg[i] = static_cast<std::uint8_t>(i * 7 + 1);
    EXPECT_EQ(to_hex(sha3_via_permutation(msg, 32)), to_hex(sha3_openssl(msg, EVP_sha3_256())))
        << "SHA3-256, " << n << " bytes";
    EXPECT_EQ(to_hex(sha3_via_permutation(msg, 64)), to_hex(sha3_openssl(msg, EVP_sha3_512())))
        << "SHA3-512, " << n << " bytes";
  }
}

TEST(Keccak, ZeroStateKnownAnswer) {
  KeccakState s{};
  keccak_f1600(s);
  // First lanes of Keccak-f[1600](0), from the Keccak team's KeccakF-1600 intermediate values.
  EXPECT_EQ(s[0], 0xf1258f7940e1dde7ULL);
  EXPECT_EQ(s[1], 0x84d5ccf933c0478aULL);
}

// Ref: TS 35.232 Keccak test sets 2 and 3 (transcribed in CryptoMobile test/test_TUAK.py):
// 200-byte state in, 200-byte state out, lanes little-endian.
TEST(Keccak, Ts35232Vectors) {
  Bytes<200> in{};
  in[0] = 0x80;
  EXPECT_EQ(to_hex(permute_bytes(in)),
            "44e0e58ca968975c4c2592a157f53f2124519b010b89e15e301ef58f76501db59cde067f1fde09c0a4b5c2"
            "10a6a19f06ba4c8f0c6fc868f0fc80a63b2553791e41c82278ad115efc70f71d641ff0774aa5d547b6d991"
            "4914022c514c45fceca61cb66b0f0313e34988ae0d36737e2c0529907fe653fc4e185d07f3961f826bb880"
            "31af844d9e7d9876170363fde76786c58ccbcf5c3a01bb914c1b0208a27c7be3bbbbbb9976e040317afc2a"
            "fbfadc7ba7fc237235c65551aa3139641fa8db2e6483f28740b31b61");
  for (std::size_t i = 0; i < 200; ++i) in[i] = static_cast<std::uint8_t>(i + 1);
  EXPECT_EQ(to_hex(permute_bytes(in)),
            "5dd0e3dd9e46db2187a9e1a444427d7a832fef29913990e015ea8d1f3f1fa6413ffbbc586f5a4d694dd606"
            "68fbf3b4bbda4945c9ea0cbee211735ebfa8399b613aff34d1dd47fa398c78f48a91a6657d29036c87f773"
            "5f43e2abb76a135045b70e42c59d809214a4cd301f1857300a55d01d32365b6abda51ead7541db7beddc46"
            "e485727c3b2b5d83b59e5a7a62e0131614ba0d7bfacd4eba716232808859f003855f5c47010a50e1262f9e"
            "9e812e6cb3dd52d9adb7be1910427634025231968de0b43fa24b4b3e");
}

}  // namespace
}  // namespace mcim::aka
