// MILENAGE against every test set of TS 35.207 and TS 35.208 (tables in milenage_test_sets.h).
#include "aka/milenage.h"

#include <gtest/gtest.h>

#include "aka/vector.h"
#include "common/hex.h"
#include "common/random.h"
#include "milenage_test_sets.h"

namespace mcim::aka::testdata {
// Names the set in test listings instead of gtest's byte dump of the struct.
void PrintTo(const MilenageTestSet& t, std::ostream* os) { *os << t.name; }
}  // namespace mcim::aka::testdata

namespace mcim::aka {
namespace {

using testdata::MilenageTestSet;

template <std::size_t N>
Bytes<N> hx(const char* s) {
  auto v = parse_hex_fixed<N>(s, "test data");
  EXPECT_TRUE(v.has_value()) << s;
  return v.value_or(Bytes<N>{});
}

class MilenageTestSets : public ::testing::TestWithParam<MilenageTestSet> {};

TEST_P(MilenageTestSets, OpcAndEveryFunctionMatch) {
  const MilenageTestSet& t = GetParam();
  const auto k = hx<16>(t.k);
  const auto rand = hx<16>(t.rand);
  const auto sqn = hx<6>(t.sqn);
  const auto amf = hx<2>(t.amf);
  EXPECT_EQ(to_hex(Milenage::compute_opc(k, hx<16>(t.op))), t.opc);

  // Built from OPc and from OP: both must give the same outputs.
  for (const Milenage& m : {Milenage(k, hx<16>(t.opc)), Milenage::with_op(k, hx<16>(t.op))}) {
    EXPECT_EQ(to_hex(m.f1(rand, sqn, amf)), t.f1);
    EXPECT_EQ(to_hex(m.f1star(rand, sqn, amf)), t.f1star);
    const F2345 out = m.f2345(rand);
    EXPECT_EQ(to_hex(out.res.view()), t.f2);
    EXPECT_EQ(to_hex(out.ck), t.f3);
    EXPECT_EQ(to_hex(out.ik), t.f4);
    EXPECT_EQ(to_hex(out.ak), t.f5);
    EXPECT_EQ(to_hex(m.f5star(rand)), t.f5star);

    const VectorOutputs fused = m.vector_outputs(rand, sqn, amf);
    EXPECT_EQ(to_hex(fused.mac_a), t.f1);
    EXPECT_EQ(fused.f2345.res, out.res);
    EXPECT_EQ(fused.f2345.ck, out.ck);
    EXPECT_EQ(fused.f2345.ik, out.ik);
    EXPECT_EQ(fused.f2345.ak, out.ak);
  }
}

TEST_P(MilenageTestSets, PortableAesBackendAgrees) {
  // The same computation through the Algorithm interface must not depend on the AES backend;
  // compare the fused path with a plain E_K built on the portable backend.
  const MilenageTestSet& t = GetParam();
  const auto k = hx<16>(t.k);
  Aes128 portable(k, Aes128::Backend::portable);
  const auto op = hx<16>(t.op);
  Block opc = portable.encrypt(op);
  for (std::size_t i = 0; i < 16; ++i) opc[i] ^= op[i];
  EXPECT_EQ(to_hex(opc), t.opc);
}

std::string set_name(const ::testing::TestParamInfo<MilenageTestSet>& param_info) {
  std::string n = param_info.param.name;
  for (char& c : n) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return n;
}

INSTANTIATE_TEST_SUITE_P(Ts35207, MilenageTestSets, ::testing::ValuesIn(testdata::kTs35207TestSets),
                         set_name);
INSTANTIATE_TEST_SUITE_P(Ts35208, MilenageTestSets, ::testing::ValuesIn(testdata::kTs35208TestSets),
                         set_name);

// Changing any constant changes the outputs, and the defaults equal the explicit TS 35.206 ones.
TEST(MilenageConstants, ExplicitDefaultsEqualImplicit) {
  const auto& t = testdata::kTs35208TestSets[0];
  MilenageConstants explicit_defaults;
  explicit_defaults.r = {64, 0, 32, 64, 96};
  Milenage a(hx<16>(t.k), hx<16>(t.opc)), b(hx<16>(t.k), hx<16>(t.opc), explicit_defaults);
  const auto rand = hx<16>(t.rand);
  EXPECT_EQ(a.f2345(rand).ck, b.f2345(rand).ck);
}

TEST(MilenageConstants, OtherConstantsGiveOtherOutputs) {
  const auto& t = testdata::kTs35208TestSets[0];
  const auto k = hx<16>(t.k), opc = hx<16>(t.opc), rand = hx<16>(t.rand);
  const Milenage base(k, opc);
  for (int i = 0; i < 5; ++i) {
    MilenageConstants c;
    c.c[static_cast<std::size_t>(i)][3] ^= 0x40;
    const Milenage m(k, opc, c);
    const bool differs =
        m.f1(rand, hx<6>(t.sqn), hx<2>(t.amf)) != base.f1(rand, hx<6>(t.sqn), hx<2>(t.amf)) ||
        m.f2345(rand).ck != base.f2345(rand).ck || m.f2345(rand).ik != base.f2345(rand).ik ||
        m.f2345(rand).ak != base.f2345(rand).ak || m.f5star(rand) != base.f5star(rand);
    EXPECT_TRUE(differs) << "c" << i + 1;
  }
  // A rotation that is not a multiple of 8 bits exercises the bitwise path.
  MilenageConstants odd;
  odd.r[2] = 33;
  EXPECT_NE(Milenage(k, opc, odd).f2345(rand).ck, base.f2345(rand).ck);
}

TEST(MilenageConstants, ValidateRefusesRotationsAbove127) {
  MilenageConstants c;
  c.r[4] = 128;
  auto v = c.validate();
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(v.error().message.find("r5"), std::string::npos);
  c.r[4] = 127;
  EXPECT_TRUE(c.validate().has_value());
}

// An independent, deliberately plain model of TS 35.206 §4.1 (128-bit integers for rot, the
// portable AES backend for E_K) checks arbitrary constants, including rotations that are not a
// multiple of 8 bits, against the optimised implementation.
__extension__ typedef unsigned __int128 u128;
u128 to_u128(const Block& b) {
  u128 v = 0;
  for (auto x : b) v = (v << 8) | x;
  return v;
}
Block from_u128(u128 v) {
  Block b{};
  for (int i = 15; i >= 0; --i, v >>= 8)
    b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v);
  return b;
}
u128 rot(u128 x, unsigned r) {
  return r % 128 == 0 ? x : (x << (r % 128)) | (x >> (128 - r % 128));
}

struct ModelOut {
  Block out[5];
};
ModelOut model(const Bytes<16>& k, const Block& opc_b, const Rand& rand, const Sqn& sqn,
               const Amf& amf, const MilenageConstants& c) {
  const Aes128 e(k, Aes128::Backend::portable);
  const u128 opc = to_u128(opc_b);
  const u128 temp = to_u128(e.encrypt(from_u128(to_u128(rand) ^ opc)));
  Block in1b{};
  for (int i = 0; i < 2; ++i) {
    std::copy(sqn.begin(), sqn.end(), in1b.begin() + 8 * i);
    std::copy(amf.begin(), amf.end(), in1b.begin() + 8 * i + 6);
  }
  ModelOut m;
  const u128 x1 = temp ^ rot(to_u128(in1b) ^ opc, c.r[0]) ^ to_u128(c.c[0]);
  m.out[0] = from_u128(to_u128(e.encrypt(from_u128(x1))) ^ opc);
  for (std::size_t i = 1; i < 5; ++i) {
    const u128 x = rot(temp ^ opc, c.r[i]) ^ to_u128(c.c[i]);
    m.out[i] = from_u128(to_u128(e.encrypt(from_u128(x))) ^ opc);
  }
  return m;
}

TEST(MilenageConstants, ArbitraryConstantsMatchAPlainModelOfTheSpec) {
  OsRandom rng;
  for (int trial = 0; trial < 300; ++trial) {
    MilenageConstants c;
    for (std::size_t i = 0; i < 5; ++i) {
      c.c[i] = rng.draw<16>();
      c.r[i] = rng.draw<1>()[0] % 128;
    }
    const auto k = rng.draw<16>();
    const auto opc = rng.draw<16>();
    const auto rand = rng.draw<16>();
    const auto sqn = rng.draw<6>();
    const auto amf = rng.draw<2>();
    const ModelOut want = model(k, opc, rand, sqn, amf, c);
    const Milenage m(k, opc, c);
    const F2345 out = m.f2345(rand);
    ASSERT_EQ(m.f1(rand, sqn, amf), take<8>(ByteView(want.out[0]))) << trial;
    ASSERT_EQ(m.f1star(rand, sqn, amf), take<8>(ByteView(want.out[0]), 8)) << trial;
    ASSERT_EQ(to_hex(out.res.view()), to_hex(ByteView(want.out[1]).subspan(8, 8))) << trial;
    ASSERT_EQ(out.ak, take<6>(ByteView(want.out[1]))) << trial;
    ASSERT_EQ(out.ck, want.out[2]) << trial;
    ASSERT_EQ(out.ik, want.out[3]) << trial;
    ASSERT_EQ(m.f5star(rand), take<6>(ByteView(want.out[4]))) << trial;
    // The fused vector path (AES-NI and SSE rotations where available) as well.
    const VectorOutputs fused = m.vector_outputs(rand, sqn, amf);
    ASSERT_EQ(fused.mac_a, m.f1(rand, sqn, amf)) << trial;
    ASSERT_EQ(fused.f2345.res, out.res) << trial;
    ASSERT_EQ(fused.f2345.ak, out.ak) << trial;
    ASSERT_EQ(fused.f2345.ck, out.ck) << trial;
    ASSERT_EQ(fused.f2345.ik, out.ik) << trial;
  }
}

// TS 35.207's intermediate values: TEMP = E_K(RAND xor OPc) on both AES backends, and OUT1-OUT5
// of the plain model (OUT2 bytes 6-7 and OUT5 bytes 6-15 are not printed in the spec; see the
// table's comment).
TEST(MilenageIntermediates, TempAndOutputsOfTs35207) {
  ASSERT_EQ(std::size(testdata::kTs35207Intermediates), std::size(testdata::kTs35207TestSets));
  for (std::size_t i = 0; i < std::size(testdata::kTs35207TestSets); ++i) {
    const auto& t = testdata::kTs35207TestSets[i];
    const auto& m = testdata::kTs35207Intermediates[i];
    ASSERT_STREQ(t.name, m.name);
    const auto k = hx<16>(t.k), opc = hx<16>(t.opc), rand = hx<16>(t.rand);
    for (auto backend : {Aes128::Backend::automatic, Aes128::Backend::portable}) {
      EXPECT_EQ(to_hex(Aes128(k, backend).encrypt(xor_of(rand, opc))), m.temp) << t.name;
    }
    const ModelOut out = model(k, opc, rand, hx<6>(t.sqn), hx<2>(t.amf), MilenageConstants{});
    const char* want[5] = {m.out1, m.out2, m.out3, m.out4, m.out5};
    for (std::size_t j = 0; j < 5; ++j) EXPECT_EQ(to_hex(out.out[j]), want[j]) << t.name << j;
  }
}

}  // namespace
}  // namespace mcim::aka
