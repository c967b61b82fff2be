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

}  // namespace
}  // namespace mcim::roles
