// Known-answer tests for aka/kdf.h against published vectors (tables in kdf_test_vectors.h), plus
// the refusals of parse_plmn and the AMF separation bit helpers.
#include "aka/kdf.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <ostream>
#include <string>
#include <string_view>

#include "common/hex.h"
#include "kdf_test_vectors.h"
#include "test_hex.h"

// Failure messages name the table row instead of dumping the row's bytes.
namespace mcim::aka::testdata {
template <class Row>
requires requires(const Row& r) { r.name; }
void PrintTo(const Row& row, std::ostream* os) { *os << row.name; }
void PrintTo(const PlmnVector& row, std::ostream* os) { *os << '"' << row.mccmnc << '"'; }
}  // namespace mcim::aka::testdata

namespace mcim::aka {
namespace {

using testdata::C2Vector;
using testdata::CkIkPrimeVector;
using testdata::GsmConversionVector;
using testdata::KasmeVector;
using testdata::KausfVector;
using testdata::PlmnVector;
using testdata::XresStarVector;

using testdata::fixed;

Res res_of(std::string_view hex) {
  auto parsed = parse_hex(hex, "res");
  if (!parsed) {
    ADD_FAILURE() << "bad test vector field res: " << parsed.error().message;
    return Res{};
  }
  return Res::of(*parsed);
}

template <class Row>
std::string row_name(const testing::TestParamInfo<Row>& row) {
  return std::string(row.param.name);
}

// --- CK', IK' (RFC 5448 Appendix C) -----------------------------------------------------------

class CkIkPrimeTest : public testing::TestWithParam<CkIkPrimeVector> {};

TEST_P(CkIkPrimeTest, MatchesRfc5448) {
  const CkIkPrimeVector& v = GetParam();
  const Autn autn = fixed<16>(v.autn, "autn");
  const Bytes<6> sqn_xor_ak = take<6>(ByteView(autn));
  const CkIkPrime got =
      derive_ck_ik_prime(fixed<16>(v.ck, "ck"), fixed<16>(v.ik, "ik"), v.network_name, sqn_xor_ak);
  EXPECT_EQ(to_hex(got.ck_prime), v.ck_prime);
  EXPECT_EQ(to_hex(got.ik_prime), v.ik_prime);
}

INSTANTIATE_TEST_SUITE_P(Rfc5448AppendixC, CkIkPrimeTest,
                         testing::ValuesIn(testdata::kRfc5448Vectors), row_name<CkIkPrimeVector>);

// The generic KDF itself (TS 33.220 B.2) with the S string of RFC 5448 §3.3 spelled out:
// FC 0x20, P0 = "WLAN", P1 = SQN xor AK; the output is CK' || IK' of case 1.
TEST(GenericKdf, ReproducesRfc5448Case1) {
  const CkIkPrimeVector& v = testdata::kRfc5448Vectors[0];
  Bytes<32> key{};
  const Ck ck = fixed<16>(v.ck, "ck");
  const Ik ik = fixed<16>(v.ik, "ik");
  std::copy(ck.begin(), ck.end(), key.begin());
  std::copy(ik.begin(), ik.end(), key.begin() + 16);
  const Autn autn = fixed<16>(v.autn, "autn");
  const std::string_view name = v.network_name;
  const ByteView p0(reinterpret_cast<const std::uint8_t*>(name.data()), name.size());
  const Key256 out = kdf(key, 0x20, {p0, ByteView(autn).first(6)});
  EXPECT_EQ(to_hex(out), std::string(v.ck_prime) + std::string(v.ik_prime));
}

// --- XRES*, KAUSF (TS 33.501 A.4, A.2) ---------------------------------------------------------

class XresStarTest : public testing::TestWithParam<XresStarVector> {};

TEST_P(XresStarTest, MatchesPublishedValue) {
  const XresStarVector& v = GetParam();
  const Bytes<16> got =
      derive_xres_star(fixed<16>(v.ck, "ck"), fixed<16>(v.ik, "ik"), v.serving_network_name,
                       fixed<16>(v.rand, "rand"), res_of(v.res));
  EXPECT_EQ(to_hex(got), v.xres_star);
}

INSTANTIATE_TEST_SUITE_P(Ts33501AnnexA4, XresStarTest,
                         testing::ValuesIn(testdata::kXresStarVectors), row_name<XresStarVector>);

class KausfTest : public testing::TestWithParam<KausfVector> {};

TEST_P(KausfTest, MatchesPublishedValue) {
  const KausfVector& v = GetParam();
  const Key256 got = derive_kausf(fixed<16>(v.ck, "ck"), fixed<16>(v.ik, "ik"),
                                  v.serving_network_name, fixed<6>(v.sqn_xor_ak, "sqn_xor_ak"));
  EXPECT_EQ(to_hex(got), v.kausf);
}

INSTANTIATE_TEST_SUITE_P(Ts33501AnnexA2, KausfTest, testing::ValuesIn(testdata::kKausfVectors),
                         row_name<KausfVector>);

// --- KASME (TS 33.401 A.2) ---------------------------------------------------------------------

class KasmeTest : public testing::TestWithParam<KasmeVector> {};

TEST_P(KasmeTest, MatchesPublishedValue) {
  const KasmeVector& v = GetParam();
  const auto plmn = parse_plmn(v.mccmnc);
  ASSERT_TRUE(plmn.has_value()) << plmn.error().message;
  EXPECT_EQ(to_hex(*plmn), v.plmn) << "PLMN octets of " << v.mccmnc;
  const Bytes<6> sqn_xor_ak = xor_of(fixed<6>(v.sqn, "sqn"), fixed<6>(v.ak, "ak"));
  const Key256 got = derive_kasme(fixed<16>(v.ck, "ck"), fixed<16>(v.ik, "ik"), *plmn, sqn_xor_ak);
  EXPECT_EQ(to_hex(got), v.kasme);
}

INSTANTIATE_TEST_SUITE_P(Ts33401AnnexA2, KasmeTest, testing::ValuesIn(testdata::kKasmeVectors),
                         row_name<KasmeVector>);

// --- c2, c3 (TS 33.102 §6.8.1.2) ---------------------------------------------------------------

class GsmConversionTest : public testing::TestWithParam<GsmConversionVector> {};

TEST_P(GsmConversionTest, C2GivesSres) {
  const GsmConversionVector& v = GetParam();
  EXPECT_EQ(to_hex(c2_sres(res_of(v.res))), v.sres);
}

TEST_P(GsmConversionTest, C3GivesKc) {
  const GsmConversionVector& v = GetParam();
  EXPECT_EQ(to_hex(c3_kc(fixed<16>(v.ck, "ck"), fixed<16>(v.ik, "ik"))), v.kc);
}

INSTANTIATE_TEST_SUITE_P(Ts55205, GsmConversionTest,
                         testing::ValuesIn(testdata::kGsmConversionVectors),
                         row_name<GsmConversionVector>);

class C2ByHandTest : public testing::TestWithParam<C2Vector> {};

TEST_P(C2ByHandTest, FoldsZeroPaddedRes) {
  const C2Vector& v = GetParam();
  EXPECT_EQ(to_hex(c2_sres(res_of(v.res))), v.sres);
}

INSTANTIATE_TEST_SUITE_P(Ts33102Definition, C2ByHandTest,
                         testing::ValuesIn(testdata::kC2ByHandVectors), row_name<C2Vector>);

// --- parse_plmn (TS 24.301 §9.9.3.32, TS 24.008 §10.5.1.13) -----------------------------------

class PlmnTest : public testing::TestWithParam<PlmnVector> {};

TEST_P(PlmnTest, EncodesDigits) {
  const PlmnVector& v = GetParam();
  const auto plmn = parse_plmn(v.mccmnc);
  ASSERT_TRUE(plmn.has_value()) << plmn.error().message;
  EXPECT_EQ(to_hex(*plmn), v.plmn);
}

std::string plmn_name(const testing::TestParamInfo<PlmnVector>& row) {
  return "mccmnc_" + std::string(row.param.mccmnc);
}

INSTANTIATE_TEST_SUITE_P(Ts24008, PlmnTest, testing::ValuesIn(testdata::kPlmnVectors), plmn_name);

class BadPlmnTest : public testing::TestWithParam<std::string_view> {};

TEST_P(BadPlmnTest, IsRefused) {
  const auto plmn = parse_plmn(GetParam());
  ASSERT_FALSE(plmn.has_value()) << "accepted \"" << GetParam() << "\"";
  EXPECT_EQ(plmn.error().code, ErrorCode::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(Refusals, BadPlmnTest, testing::ValuesIn(testdata::kBadPlmns));

// --- AMF separation bit (TS 33.401 §6.1.1, TS 33.402 §6.2) ------------------------------------

TEST(SeparationBit, SetsAndClearsOnlyTheTopBitOfTheFirstOctet) {
  EXPECT_EQ(with_separation_bit(Amf{0x00, 0x00}, true), (Amf{0x80, 0x00}));
  EXPECT_EQ(with_separation_bit(Amf{0x41, 0xff}, true), (Amf{0xc1, 0xff}));
  EXPECT_EQ(with_separation_bit(Amf{0xff, 0xff}, false), (Amf{0x7f, 0xff}));
  EXPECT_EQ(with_separation_bit(Amf{0x3c, 0x81}, false), (Amf{0x3c, 0x81}));
  // TS 35.208 test set 19 (AMF c3ab) is the set hostapd uses for EAP-AKA' because its separation
  // bit is 1; test set 1 (AMF b9b9) has it set too, test set 3 (AMF 725c) does not.
  EXPECT_TRUE(separation_bit(Amf{0xc3, 0xab}));
  EXPECT_TRUE(separation_bit(Amf{0xb9, 0xb9}));
  EXPECT_FALSE(separation_bit(Amf{0x72, 0x5c}));
  static_assert(separation_bit(with_separation_bit(Amf{0x12, 0x34}, true)));
  static_assert(!separation_bit(with_separation_bit(Amf{0x92, 0x34}, false)));
}

}  // namespace
}  // namespace mcim::aka
