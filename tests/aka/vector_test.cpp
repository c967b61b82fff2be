// Authentication vectors and both ends of TS 33.102 §6.3: AUTN layout, USIM verification,
// synchronisation failure with AUTS and the home side's resynchronisation.
#include "aka/vector.h"

#include <gtest/gtest.h>

#include "aka/kdf.h"
#include "aka/milenage.h"
#include "aka/tuak.h"
#include "common/hex.h"
#include "common/random.h"

namespace mcim::aka {
namespace {

template <std::size_t N>
Bytes<N> hx(const char* s) {
  return *parse_hex_fixed<N>(s, "test data");
}

// TS 35.208 test set 1.
const Milenage& set1() {
  static const Milenage m(hx<16>("465b5ce8b199b49faa5f0a2ee238a6bc"),
                          hx<16>("cd63cb71954a9f4e48a5994e37a02baf"));
  return m;
}
const Rand kRand = hx<16>("23553cbe9637a89d218ae64dae47bf35");

TEST(AuthVector, LayoutOfAutnAndFields) {
  const Sqn sqn = hx<6>("ff9bb4d0b607");
  const Amf amf = hx<2>("b9b9");
  const AuthVector av = make_vector(set1(), kRand, sqn, amf);
  EXPECT_EQ(to_hex(av.mac_a), "4a9ffac354dfafb3");
  EXPECT_EQ(to_hex(av.xres.view()), "a54211d5e3ba50bf");
  EXPECT_EQ(to_hex(av.ck), "b40ba9a3c58b2a05bbf0d987b21bf8cb");
  EXPECT_EQ(to_hex(av.ik), "f769bcd751044604127672711c6d3441");
  EXPECT_EQ(to_hex(av.ak), "aa689c648370");
  // AUTN = SQN xor AK || AMF || MAC-A
  EXPECT_EQ(to_hex(av.autn), to_hex(xor_of(sqn, av.ak)) + "b9b9" + "4a9ffac354dfafb3");
  EXPECT_EQ(av.sqn_xor_ak(), xor_of(sqn, av.ak));
}

TEST(Usim, AcceptsAGenuineVectorOnceAndAnswersRes) {
  SqnPolicy p;
  HomeSqn he(p);
  UsimSqn usim(p);
  const AuthVector av = make_vector(set1(), kRand, *he.next(0), Amf{0x80, 0x00});
  auto answer = usim_authenticate(set1(), usim, av.rand, av.autn);
  ASSERT_TRUE(answer.has_value());
  const auto* ok = std::get_if<UsimSuccess>(&*answer);
  ASSERT_NE(ok, nullptr);
  EXPECT_EQ(ok->res, av.xres);
  EXPECT_EQ(ok->ck, av.ck);
  EXPECT_EQ(ok->ik, av.ik);
  EXPECT_EQ(ok->sqn, av.sqn);

  // The same vector again is a replay: synchronisation failure, not success.
  auto replay = usim_authenticate(set1(), usim, av.rand, av.autn);
  ASSERT_TRUE(replay.has_value());
  ASSERT_TRUE(std::holds_alternative<UsimSyncFailure>(*replay));
  EXPECT_EQ(std::get<UsimSyncFailure>(*replay).reason, SqnRefusal::not_fresh);
}

TEST(Usim, RefusesEveryAlteredAutnByteAndKeepsItsState) {
  SqnPolicy p;
  UsimSqn usim(p);
  const AuthVector av = make_vector(set1(), kRand, sqn_bytes(p.join(1, 0)), Amf{0x80, 0x00});
  for (std::size_t i = 0; i < av.autn.size(); ++i) {
    Autn bad = av.autn;
    bad[i] ^= 0x01;
    auto answer = usim_authenticate(set1(), usim, av.rand, bad);
    ASSERT_FALSE(answer.has_value()) << "byte " << i;
    EXPECT_EQ(answer.error().code, ErrorCode::mac_mismatch);
  }
  Rand other = av.rand;
  other[0] ^= 0x80;
  EXPECT_FALSE(usim_authenticate(set1(), usim, other, av.autn).has_value());
  EXPECT_EQ(usim.seq_ms(), 0u);
  EXPECT_TRUE(usim_authenticate(set1(), usim, av.rand, av.autn).has_value());
}

TEST(Usim, WrongKeyIsAMacFailure) {
  const Milenage other(hx<16>("fec86ba6eb707ed08905757b1bb44b8f"),
                       hx<16>("cd63cb71954a9f4e48a5994e37a02baf"));
  UsimSqn usim(SqnPolicy{});
  const AuthVector av = make_vector(set1(), kRand, sqn_bytes(0x20), Amf{0x80, 0x00});
  EXPECT_EQ(usim_authenticate(other, usim, av.rand, av.autn).error().code, ErrorCode::mac_mismatch);
}

TEST(Resynchronisation, UsimAheadRecoversThroughAuts) {
  SqnPolicy p;
  HomeSqn he(p);
  UsimSqn usim(p);
  // The USIM has already accepted SEQ 1000 (e.g. from another AuC instance or a restore).
  usim.record(sqn_bytes(p.join(1000, 4)));

  // Same IND slot: SEQ 1 is not fresh there. (In another slot it would be, unless L applies.)
  const AuthVector stale = make_vector(set1(), kRand, *he.next(4), Amf{0x80, 0x00});
  auto answer = usim_authenticate(set1(), usim, stale.rand, stale.autn);
  ASSERT_TRUE(answer.has_value());
  const auto* fail = std::get_if<UsimSyncFailure>(&*answer);
  ASSERT_NE(fail, nullptr);

  auto sqn_ms = recover_sqn_ms(set1(), stale.rand, fail->auts);
  ASSERT_TRUE(sqn_ms.has_value());
  EXPECT_EQ(*sqn_ms, sqn_bytes(p.join(1000, 4)));
  EXPECT_TRUE(he.resynchronise(*sqn_ms));

  OsRandom rng;
  const AuthVector fresh = make_vector(set1(), rng.draw<16>(), *he.next(0), Amf{0x80, 0x00});
  auto again = usim_authenticate(set1(), usim, fresh.rand, fresh.autn);
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE(std::holds_alternative<UsimSuccess>(*again));
}

TEST(Resynchronisation, AutsLayoutAndTamperedAutsIsRefused) {
  const Sqn sqn_ms = hx<6>("0000000003e4");
  const Auts auts = make_auts(set1(), kRand, sqn_ms);
  // AUTS = SQN_MS xor AK* || MAC-S with AMF* = 0000.
  EXPECT_EQ(to_hex(ByteView(auts).first(6)), to_hex(xor_of(sqn_ms, set1().f5star(kRand))));
  EXPECT_EQ(to_hex(ByteView(auts).subspan(6)), to_hex(set1().f1star(kRand, sqn_ms, kResyncAmf)));
  for (std::size_t i = 0; i < auts.size(); ++i) {
    Auts bad = auts;
    bad[i] ^= 0x10;
    auto r = recover_sqn_ms(set1(), kRand, bad);
    ASSERT_FALSE(r.has_value()) << i;
    EXPECT_EQ(r.error().code, ErrorCode::mac_mismatch);
  }
  Rand other = kRand;
  other[15] ^= 1;
  EXPECT_FALSE(recover_sqn_ms(set1(), other, auts).has_value());
}

TEST(AuthVector, TuakWorksThroughTheSameInterface) {
  OsRandom rng;
  auto k = rng.draw<32>();
  auto tuak = Tuak::create(k, rng.draw<32>(), TuakParams{});
  ASSERT_TRUE(tuak.has_value());
  ASSERT_TRUE(tuak->usable_for_av());
  SqnPolicy p;
  HomeSqn he(p);
  UsimSqn usim(p);
  const AuthVector av = make_vector(*tuak, rng.draw<16>(), *he.next(1), Amf{0x80, 0x00});
  auto answer = usim_authenticate(*tuak, usim, av.rand, av.autn);
  ASSERT_TRUE(answer.has_value());
  ASSERT_TRUE(std::holds_alternative<UsimSuccess>(*answer));
  EXPECT_EQ(std::get<UsimSuccess>(*answer).res, av.xres);

  usim.record(sqn_bytes(p.join(77, 2)));
  const AuthVector stale = make_vector(*tuak, rng.draw<16>(), *he.next(2), Amf{0x80, 0x00});
  auto sync = usim_authenticate(*tuak, usim, stale.rand, stale.autn);
  ASSERT_TRUE(std::holds_alternative<UsimSyncFailure>(*sync));
  auto sqn_ms = recover_sqn_ms(*tuak, stale.rand, std::get<UsimSyncFailure>(*sync).auts);
  ASSERT_TRUE(sqn_ms.has_value());
  EXPECT_EQ(sqn_value(*sqn_ms), p.join(77, 2));
}

TEST(Amf, SeparationBit) {
  EXPECT_EQ(with_separation_bit(Amf{0x00, 0x00}, true), (Amf{0x80, 0x00}));
  EXPECT_EQ(with_separation_bit(Amf{0xff, 0x12}, false), (Amf{0x7f, 0x12}));
  EXPECT_TRUE(separation_bit(Amf{0x80, 0x00}));
  EXPECT_FALSE(separation_bit(Amf{0x7f, 0xff}));
}

}  // namespace
}  // namespace mcim::aka
