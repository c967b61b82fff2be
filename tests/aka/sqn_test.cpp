// SQN management of TS 33.102 Annex C: home generation, USIM freshness with the IND array,
// the Δ and L limits, wrap-around protection and resynchronisation.
#include "aka/sqn.h"

#include <gtest/gtest.h>

namespace mcim::aka {
namespace {

Sqn sqn_of(const SqnPolicy& p, std::uint64_t seq, unsigned ind) {
  return sqn_bytes(p.join(seq, ind));
}

TEST(SqnPolicy, SplitsSeqAndInd) {
  SqnPolicy p;  // IND length 5 by default
  EXPECT_EQ(p.ind_bits, 5u);
  EXPECT_EQ(p.seq_of(0x123), 0x123u >> 5);
  EXPECT_EQ(p.ind_of(0x123), 0x123u & 31);
  EXPECT_EQ(p.join(9, 3), (9u << 5) | 3);
  EXPECT_EQ(p.seq_max(), kSqnMax >> 5);
}

TEST(SqnPolicy, ValidateBounds) {
  SqnPolicy p;
  p.ind_bits = SqnPolicy::kMaxIndBits + 1;
  EXPECT_EQ(p.validate().error().code, ErrorCode::invalid_argument);
  p.ind_bits = 0;
  EXPECT_TRUE(p.validate().has_value());
  p.delta = 0;
  EXPECT_FALSE(p.validate().has_value());
}

TEST(SqnBytes, BigEndian48Bits) {
  EXPECT_EQ(sqn_bytes(0x0102030405ULL), (Sqn{0x00, 0x01, 0x02, 0x03, 0x04, 0x05}));
  EXPECT_EQ(sqn_value(Sqn{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), kSqnMax);
}

TEST(HomeSqn, AdvancesSeqByOneKeepingTheRequestedInd) {
  SqnPolicy p;
  HomeSqn he(p);
  EXPECT_EQ(sqn_value(*he.next(0)), p.join(1, 0));
  EXPECT_EQ(sqn_value(*he.next(7)), p.join(2, 7));
  EXPECT_EQ(sqn_value(*he.next(31)), p.join(3, 31));
  EXPECT_EQ(he.seq_he(), 3u);
}

TEST(HomeSqn, RefusesIndOutsideItsBits) {
  HomeSqn he(SqnPolicy{});
  auto r = he.next(32);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(he.seq_he(), 0u);  // unchanged
}

TEST(HomeSqn, NeverWrapsAround) {
  SqnPolicy p;
  HomeSqn he(p, p.seq_max() - 1);
  ASSERT_TRUE(he.next(0).has_value());
  auto r = he.next(0);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::sqn_exhausted);
  EXPECT_EQ(he.seq_he(), p.seq_max());
}

TEST(UsimSqn, AcceptsIncreasingSeqPerIndAndRefusesReplay) {
  SqnPolicy p;
  UsimSqn usim(p);
  const Sqn first = sqn_of(p, 1, 0);
  EXPECT_FALSE(usim.check(first).has_value());
  usim.record(first);
  EXPECT_EQ(usim.check(first), SqnRefusal::not_fresh);            // replay
  EXPECT_EQ(usim.check(sqn_of(p, 0, 1)), SqnRefusal::not_fresh);  // SEQ 0 is never fresh
  EXPECT_EQ(usim.sqn_ms(), first);
}

TEST(UsimSqn, OutOfOrderVectorsFromDifferentIndsAreAccepted) {
  // Annex C.2: vectors handed to two serving nodes (IND 1 and IND 2) may be used out of order.
  SqnPolicy p;
  UsimSqn usim(p);
  usim.record(sqn_of(p, 5, 2));
  EXPECT_FALSE(usim.check(sqn_of(p, 3, 1)).has_value());
  usim.record(sqn_of(p, 3, 1));
  EXPECT_EQ(usim.check(sqn_of(p, 4, 2)), SqnRefusal::not_fresh);
  EXPECT_EQ(usim.seq_ms(), 5u);
  EXPECT_EQ(usim.sqn_ms(), sqn_of(p, 5, 2));
}

TEST(UsimSqn, DeltaLimitsJumps) {
  SqnPolicy p;
  p.delta = 100;
  UsimSqn usim(p);
  usim.record(sqn_of(p, 10, 0));
  EXPECT_FALSE(usim.check(sqn_of(p, 110, 1)).has_value());  // SEQ - SEQ_MS == Δ
  EXPECT_EQ(usim.check(sqn_of(p, 111, 1)), SqnRefusal::jump_too_large);
}

TEST(UsimSqn, DeltaProtectsAgainstWrapAround) {
  // With the recommended Δ = 2^28 a USIM at SEQ 1 can never be pushed to SEQ max in one step.
  SqnPolicy p;
  UsimSqn usim(p);
  usim.record(sqn_of(p, 1, 0));
  EXPECT_EQ(usim.check(sqn_of(p, p.seq_max(), 1)), SqnRefusal::jump_too_large);
}

TEST(UsimSqn, LimitLBoundsTheAgeOfAcceptedSeq) {
  SqnPolicy p;
  p.limit_l = 4;
  UsimSqn usim(p);
  usim.record(sqn_of(p, 10, 0));
  EXPECT_FALSE(usim.check(sqn_of(p, 7, 1)).has_value());        // SEQ_MS - SEQ = 3 < L
  EXPECT_EQ(usim.check(sqn_of(p, 6, 1)), SqnRefusal::too_old);  // = L
  p.limit_l = 0;                                                // not applied
  UsimSqn lax(p);
  lax.record(sqn_of(p, 10, 0));
  EXPECT_FALSE(lax.check(sqn_of(p, 1, 1)).has_value());
}

TEST(UsimSqn, IndLengthIsConfigurable) {
  for (unsigned bits : {0u, 1u, 5u, 10u}) {
    SqnPolicy p;
    p.ind_bits = bits;
    UsimSqn usim(p);
    EXPECT_EQ(usim.seq_array().size(), std::size_t{1} << bits);
    const unsigned last_ind = (1u << bits) - 1;
    usim.record(sqn_of(p, 2, last_ind));
    EXPECT_EQ(usim.sqn_ms(), sqn_of(p, 2, last_ind));
  }
}

TEST(UsimSqn, RestoreValidatesAndKeepsTheHighest) {
  SqnPolicy p;
  p.ind_bits = 2;
  auto u = UsimSqn::restore(p, {3, 9, 1, 0});
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->seq_ms(), 9u);
  EXPECT_EQ(u->sqn_ms(), sqn_of(p, 9, 1));
  EXPECT_FALSE(UsimSqn::restore(p, {1, 2, 3}).has_value());
  EXPECT_FALSE(UsimSqn::restore(p, {1, 2, 3, p.seq_max() + 1}).has_value());
}

TEST(HomeSqn, ResynchroniseMovesToSeqMsWhenBehind) {
  SqnPolicy p;
  HomeSqn he(p, 5);
  EXPECT_TRUE(he.resynchronise(sqn_of(p, 40, 3)));
  EXPECT_EQ(he.seq_he(), 40u);
  // The next vector is fresh for that USIM.
  UsimSqn usim(p);
  usim.record(sqn_of(p, 40, 3));
  EXPECT_FALSE(usim.check(*he.next(3)).has_value());
}

TEST(HomeSqn, ResynchroniseKeepsSeqHeWhenAlreadyAcceptable) {
  SqnPolicy p;
  HomeSqn he(p, 50);
  EXPECT_FALSE(he.resynchronise(sqn_of(p, 40, 0)));
  EXPECT_EQ(he.seq_he(), 50u);
}

TEST(HomeSqn, ResynchroniseResetsWhenTooFarAheadForDelta) {
  SqnPolicy p;
  p.delta = 10;
  HomeSqn he(p, 100);
  EXPECT_TRUE(he.resynchronise(sqn_of(p, 40, 0)));
  EXPECT_EQ(he.seq_he(), 40u);
}

// Home and USIM together over many vectors with several serving nodes (IND values) and lost
// vectors: every vector the USIM sees is accepted exactly once.
TEST(SqnAnnexC, HomeAndUsimStayInStepAcrossIndsAndLostVectors) {
  SqnPolicy p;
  HomeSqn he(p);
  UsimSqn usim(p);
  for (unsigned i = 0; i < 5000; ++i) {
    const Sqn s = *he.next(i % 3);
    if (i % 7 == 0) continue;  // vector never used
    ASSERT_FALSE(usim.check(s).has_value()) << i;
    usim.record(s);
    ASSERT_TRUE(usim.check(s).has_value()) << i;
  }
}

}  // namespace
}  // namespace mcim::aka
