#include "roles/vno/vno.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <mutex>
#include <set>
#include <thread>

#include "aka/milenage.h"
#include "common/hex.h"

namespace mcim::roles {
namespace {

const aka::K128 kK = {0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f,
                      0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc};
const aka::Opc kOpc = {0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e,
                       0x48, 0xa5, 0x99, 0x4e, 0x37, 0xa0, 0x2b, 0xaf};

// A home network in memory: one MILENAGE subscriber per IMSI it serves, SEQ_HE, AUTS
// verification, and one attach at a time per IMSI.
class FakeHome final : public HomeAuth {
 public:
  explicit FakeHome(RandomSource& rng) : rng_(rng), algo_(kK, kOpc) {}

  Result<std::vector<aka::AuthVector>> vectors(std::string_view imsi, unsigned count,
                                               std::string_view vno) override {
    std::lock_guard lock(mu_);
    last_vno = std::string(vno);
    if (imsi == "001019999999999") return fail(ErrorCode::not_found, "unknown");
    std::vector<aka::AuthVector> out;
    for (unsigned i = 0; i < count; ++i) {
      aka::Rand rand{};
      rng_.fill(rand);
      auto sqn = home(imsi).next(0);
      if (!sqn) return std::unexpected(sqn.error());
      out.push_back(aka::make_vector(algo_, rand, *sqn, {0x80, 0x00}));
    }
    return out;
  }
  Result<std::vector<aka::AuthVector>> resynchronise(std::string_view imsi, const aka::Rand& rand,
                                                     const aka::Auts& auts,
                                                     std::string_view vno) override {
    auto sqn_ms = aka::recover_sqn_ms(algo_, rand, auts);
    if (!sqn_ms) return std::unexpected(sqn_ms.error());
    {
      std::lock_guard lock(mu_);
      home(imsi).resynchronise(*sqn_ms);
      ++resyncs;
    }
    return vectors(imsi, 1, vno);
  }
  Result<std::string> open_session(std::string_view imsi, std::string_view vno) override {
    if (!attached.insert(std::string(imsi)).second) {
      return fail(ErrorCode::already_exists, "attached elsewhere");
    }
    last_vno = std::string(vno);
    return "home-" + std::string(imsi);
  }
  Result<void> close_session(std::string_view session_id) override {
    attached.erase(std::string(session_id.substr(5)));
    return {};
  }

  aka::HomeSqn& home(std::string_view imsi) {
    return homes_.try_emplace(std::string(imsi), aka::SqnPolicy{}).first->second;
  }
  const aka::Milenage& algorithm() const { return algo_; }

  std::set<std::string> attached;
  std::string last_vno;
  int resyncs = 0;

 private:
  std::mutex mu_;  // the Vno calls its homes from any thread
  RandomSource& rng_;
  aka::Milenage algo_;
  std::map<std::string, aka::HomeSqn> homes_;
};

// The device's USIM.
struct Device {
  aka::Milenage algo{kK, kOpc};
  aka::UsimSqn usim{aka::SqnPolicy{}};
  Result<aka::UsimAnswer> answer(const Challenge& c) {
    return aka::usim_authenticate(algo, usim, c.rand, c.autn);
  }
};

class VnoTest : public ::testing::Test {
 protected:
  VnoTest()
      : ro_(rng_),
        sho_(rng_),
        vno_(VnoOptions{"vno-1", std::chrono::seconds(60), 4, {"drf", "dpf", "pva"}},
             {{"00101", "sho", false}, {"001019", "ro", true, "https://ro.test/drf"}},
             {{"ro", &ro_}, {"sho", &sho_}},
             clock_, rng_) {}

  // Attach to completion; the device's RES or the given one.
  Result<VnoSession> attach(const std::string& imsi, Device& d) {
    auto c = vno_.attach(imsi);
    if (!c) return std::unexpected(c.error());
    auto a = d.answer(*c);
    if (!a) return std::unexpected(a.error());
    if (auto* sync = std::get_if<aka::UsimSyncFailure>(&*a)) {
      auto again = vno_.resynchronise(c->attach_id, sync->auts);
      if (!again) return std::unexpected(again.error());
      a = d.answer(*again);
      if (!a) return std::unexpected(a.error());
      c = again;
    }
    const auto& ok = std::get<aka::UsimSuccess>(*a);
    return vno_.complete(c->attach_id, ok.res.view());
  }

  FakeClock clock_{std::chrono::system_clock::now()};
  OsRandom rng_;
  FakeHome ro_, sho_;
  Vno vno_;
};

TEST_F(VnoTest, RoutesByLongestPrefix) {
  EXPECT_EQ(vno_.route("001019000000001")->home, "ro");
  EXPECT_TRUE(vno_.route("001019000000001")->provisioning);
  EXPECT_EQ(vno_.route("001010000000001")->home, "sho");
  EXPECT_EQ(vno_.route("002010000000001").error().code, ErrorCode::not_found);
  EXPECT_EQ(vno_.route("00101x").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(vno_.route("00101").error().code, ErrorCode::invalid_argument);
}

TEST_F(VnoTest, APcidAttachesIntoARestrictedSession) {
  Device d;
  auto s = attach("001019000000001", d);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_TRUE(s->restricted);
  EXPECT_EQ(s->home, "ro");
  EXPECT_EQ(s->drf_url, "https://ro.test/drf");  // the route's: where the device discovers
  EXPECT_EQ(vno_.route("001019000000001")->drf_url, "https://ro.test/drf");
  EXPECT_EQ(ro_.last_vno, "vno-1");
  EXPECT_EQ(*vno_.forward(s->id, "drf"), "001019000000001");  // the asserted identity
  EXPECT_TRUE(vno_.forward(s->id, "pva"));
  EXPECT_EQ(vno_.forward(s->id, "internet").error().code, ErrorCode::access_denied);
  EXPECT_EQ(vno_.forward(s->id, "sho").error().code, ErrorCode::access_denied);
  EXPECT_EQ(vno_.refused_forwards(), 2u);
  EXPECT_EQ(vno_.pending(), 0u);
}

TEST_F(VnoTest, AnOperationalImsiIsNotRestricted) {
  Device d;
  auto s = attach("001010000000001", d);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_FALSE(s->restricted);
  EXPECT_TRUE(s->drf_url.empty());
  EXPECT_TRUE(vno_.forward(s->id, "internet"));
}

TEST_F(VnoTest, AWrongResFailsAndUsesTheChallengeUp) {
  auto c = vno_.attach("001019000000001");
  ASSERT_TRUE(c);
  const Bytes<8> wrong{};
  auto r = vno_.complete(c->attach_id, wrong);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::mac_mismatch);
  EXPECT_EQ(vno_.complete(c->attach_id, wrong).error().code, ErrorCode::not_found);
  EXPECT_TRUE(ro_.attached.empty());
}

TEST_F(VnoTest, ADeviceAheadIsResynchronised) {
  Device d;
  // The device saw SQNs the home has not issued (e.g. from a restored home database).
  ASSERT_TRUE(ro_.home("001019000000001").next(0));
  ASSERT_TRUE(ro_.home("001019000000001").next(0));
  aka::HomeSqn ahead(aka::SqnPolicy{}, 40);
  d.usim.record(*ahead.next(0));
  auto s = attach("001019000000001", d);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(ro_.resyncs, 1);
}

TEST_F(VnoTest, AForgedAutsIsRefusedByTheHome) {
  auto c = vno_.attach("001019000000001");
  ASSERT_TRUE(c);
  aka::Auts forged{};
  auto r = vno_.resynchronise(c->attach_id, forged);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::mac_mismatch);
}

TEST_F(VnoTest, OneAttachAtATimeAndDetachFreesIt) {
  Device d;
  auto first = attach("001019000000001", d);
  ASSERT_TRUE(first);
  auto second = attach("001019000000001", d);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::already_exists);
  ASSERT_TRUE(vno_.detach(first->id));
  EXPECT_FALSE(vno_.session(first->id));
  EXPECT_TRUE(attach("001019000000001", d));
  EXPECT_EQ(vno_.detach("nope").error().code, ErrorCode::not_found);
  EXPECT_EQ(vno_.forward("nope", "drf").error().code, ErrorCode::not_found);
}

TEST_F(VnoTest, UnansweredChallengesExpireAndAreBounded) {
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(vno_.attach("001019000000001"));
  auto full = vno_.attach("001019000000001");
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, ErrorCode::busy);
  clock_.advance(std::chrono::seconds(61));
  auto c = vno_.attach("001019000000001");
  ASSERT_TRUE(c);
  EXPECT_EQ(vno_.pending(), 1u);
  clock_.advance(std::chrono::seconds(61));
  EXPECT_EQ(vno_.complete(c->attach_id, Bytes<8>{}).error().code, ErrorCode::not_found);
}

TEST_F(VnoTest, HomeRefusalsPassThrough) {
  EXPECT_EQ(vno_.attach("001019999999999").error().code, ErrorCode::not_found);
}

TEST_F(VnoTest, ConcurrentAttachesOfDifferentDevices) {
  constexpr int kDevices = 40;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kDevices; i += 4) {
        auto c = vno_.attach(fmt::format("0010190{:08}", i));
        if (c) ok.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  // max_pending is 4: the rest are refused with busy, none crashes, the bound holds.
  EXPECT_EQ(vno_.pending(), 4u);
  EXPECT_EQ(ok.load(), 4);
}

// ---- F3 over EAP-AKA / EAP-AKA': the grant of a session after the AAA's Access-Accept ---------

struct NaiCase {
  const char* name;
  std::string nai;
  bool ok;
  EapMethod method = EapMethod::aka;
};

TEST(EapIdentity, ParseTable) {
  const std::string realm = "@wlan.mnc001.mcc001.3gppnetwork.org";
  const std::vector<NaiCase> cases = {
      {"aka", "0001019000000001" + realm, true, EapMethod::aka},
      {"aka_prime", "6001019000000001" + realm, true, EapMethod::aka_prime},
      {"six_digits", "0001019@x", true},
      {"pseudonym", "2001019000000001" + realm, false},
      {"fast_reauth", "4001019000000001" + realm, false},
      {"eap_sim", "1001019000000001" + realm, false},
      {"letter_prefix", "a001019000000001" + realm, false},
      {"no_realm", "0001019000000001", false},
      {"empty_realm", "0001019000000001@", false},
      {"realm_space", "0001019000000001@wlan .org", false},
      {"realm_nul", std::string("0001019000000001@wl\0an", 22), false},
      {"non_digits", "000101900000000x" + realm, false},
      {"imsi_short", "000101" + realm, false},
      {"imsi_long", "00010190000000012" + realm, false},
      {"two_ats", "0001019000000001@a@b", false},
      {"empty", "", false},
      {"too_long", "0001019000000001@" + std::string(240, 'a'), false},
  };
  for (const NaiCase& c : cases) {
    SCOPED_TRACE(c.name);
    auto id = parse_eap_identity(c.nai);
    ASSERT_EQ(id.has_value(), c.ok) << (id ? "" : id.error().message);
    if (!id) {
      EXPECT_EQ(id.error().code, ErrorCode::invalid_argument);
      EXPECT_EQ(id.error().message.find("000101900000000"), std::string::npos) << "quotes it";
      continue;
    }
    EXPECT_EQ(id->method, c.method);
  }
  auto id = parse_eap_identity("6001019000000001" + realm);
  ASSERT_TRUE(id);
  EXPECT_EQ(id->imsi, "001019000000001");
  EXPECT_EQ(id->realm, realm.substr(1));
}

TEST(EapIdentity, PermanentIdentityOfTs23003) {
  EXPECT_EQ(*eap_permanent_identity(EapMethod::aka, "001019900000001", 2),
            "0001019900000001@wlan.mnc001.mcc001.3gppnetwork.org");
  EXPECT_EQ(*eap_permanent_identity(EapMethod::aka_prime, "310150123456789", 3),
            "6310150123456789@wlan.mnc150.mcc310.3gppnetwork.org");
  EXPECT_EQ(eap_permanent_identity(EapMethod::aka, "00101x", 2).error().code,
            ErrorCode::invalid_argument);
  EXPECT_EQ(eap_permanent_identity(EapMethod::aka, "001019900000001", 4).error().code,
            ErrorCode::invalid_argument);
}

class VnoEapTest : public VnoTest {
 protected:
  static constexpr std::string_view kPcid = "001019000000001";
  const std::string identity_ = "0001019000000001@wlan.mnc001.mcc001.3gppnetwork.org";

  static Bytes<64> msk(std::uint8_t seed) {
    Bytes<64> m{};
    for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<std::uint8_t>(seed + i);
    return m;
  }
  // What the device computes from its own MSK.
  static Bytes<32> proof(const Bytes<64>& m, std::string_view identity) {
    return eap_claim_proof(eap_session_key(m), identity).get();
  }
};

TEST_F(VnoEapTest, TheRightProofClaimsARestrictedSessionOnce) {
  ASSERT_TRUE(vno_.grant_eap(identity_, msk(1)));
  EXPECT_EQ(vno_.eap_grants(), 1u);
  EXPECT_TRUE(ro_.attached.contains(std::string(kPcid)));  // the home opened its session
  EXPECT_EQ(ro_.last_vno, "vno-1");
  auto s = vno_.claim_eap(identity_, proof(msk(1), identity_));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->imsi, kPcid);
  EXPECT_EQ(s->home_session, "home-" + std::string(kPcid));
  EXPECT_TRUE(s->restricted);
  EXPECT_EQ(s->drf_url, "https://ro.test/drf");
  EXPECT_TRUE(vno_.forward(s->id, "drf"));
  EXPECT_EQ(vno_.forward(s->id, "internet").error().code, ErrorCode::access_denied);
  EXPECT_EQ(vno_.eap_grants(), 0u);
  // One claim per grant: the same proof again finds nothing.
  EXPECT_EQ(vno_.claim_eap(identity_, proof(msk(1), identity_)).error().code, ErrorCode::not_found);
  // The session is an ordinary one from here: detach closes it at the home.
  ASSERT_TRUE(vno_.detach(s->id));
  EXPECT_TRUE(ro_.attached.empty());
}

TEST_F(VnoEapTest, AWrongProofIsRefusedAndUsesTheGrantUp) {
  ASSERT_TRUE(vno_.grant_eap(identity_, msk(1)));
  // A proof from another MSK, and one for another identity under the right MSK.
  auto wrong = vno_.claim_eap(identity_, proof(msk(2), identity_));
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, ErrorCode::mac_mismatch);
  EXPECT_TRUE(ro_.attached.empty()) << "the home session outlived the refused claim";
  EXPECT_EQ(vno_.claim_eap(identity_, proof(msk(1), identity_)).error().code, ErrorCode::not_found);

  ASSERT_TRUE(vno_.grant_eap(identity_, msk(3)));
  const std::string other = "6001019000000001@wlan.mnc001.mcc001.3gppnetwork.org";
  EXPECT_EQ(vno_.claim_eap(identity_, proof(msk(3), other)).error().code, ErrorCode::mac_mismatch);
  ASSERT_TRUE(vno_.grant_eap(identity_, msk(4)));
  EXPECT_EQ(vno_.claim_eap(identity_, Bytes<16>{}).error().code, ErrorCode::mac_mismatch);
  EXPECT_EQ(vno_.eap_grants(), 0u);
}

TEST_F(VnoEapTest, AnUnclaimedGrantExpiresAndFreesTheHome) {
  ASSERT_TRUE(vno_.grant_eap(identity_, msk(1)));
  clock_.advance(std::chrono::seconds(61));
  EXPECT_EQ(vno_.claim_eap(identity_, proof(msk(1), identity_)).error().code, ErrorCode::not_found);
  EXPECT_TRUE(ro_.attached.empty());
  EXPECT_EQ(vno_.claim_eap("0001019000000002@x", Bytes<32>{}).error().code, ErrorCode::not_found);
}

TEST_F(VnoEapTest, ANewAuthenticationReplacesThePendingGrant) {
  ASSERT_TRUE(vno_.grant_eap(identity_, msk(1)));
  ASSERT_TRUE(vno_.grant_eap(identity_, msk(2)));  // the home session of the first was closed
  EXPECT_EQ(vno_.eap_grants(), 1u);
  EXPECT_EQ(vno_.claim_eap(identity_, proof(msk(1), identity_)).error().code,
            ErrorCode::mac_mismatch);
  ASSERT_TRUE(vno_.grant_eap(identity_, msk(3)));
  EXPECT_TRUE(vno_.claim_eap(identity_, proof(msk(3), identity_)));
}

TEST_F(VnoEapTest, GrantsAreRefusedWhereAnAttachWouldBe) {
  EXPECT_EQ(vno_.grant_eap("0002019000000001@x", msk(1)).error().code, ErrorCode::not_found);
  EXPECT_EQ(vno_.grant_eap("2001019000000001@x", msk(1)).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(vno_.grant_eap(identity_, Bytes<32>{}).error().code, ErrorCode::invalid_argument);
  // Attached over 3GPP access already: the home refuses a second session.
  Device d;
  ASSERT_TRUE(attach(std::string(kPcid), d));
  EXPECT_EQ(vno_.grant_eap(identity_, msk(1)).error().code, ErrorCode::already_exists);
  EXPECT_EQ(vno_.eap_grants(), 0u);
}

TEST_F(VnoEapTest, AnOperationalImsiGrantIsNotRestricted) {
  const std::string id = "0001010000000001@wlan.mnc001.mcc001.3gppnetwork.org";
  ASSERT_TRUE(vno_.grant_eap(id, msk(9)));
  auto s = vno_.claim_eap(id, proof(msk(9), id));
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->restricted);
  EXPECT_TRUE(vno_.forward(s->id, "internet"));
}

}  // namespace
}  // namespace mcim::roles
