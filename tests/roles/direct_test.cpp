// Direct access (roles/ro/direct.h, F3 without AKA) over the in-memory Database with real TREs
// (tests/tre/tre_fixture.h): the nonce a device gets for its PCID, the proof with its platform
// key that opens the ICF's restricted session, and every refusal, each of which leaves the
// challenge and the sessions as they were and is on the DRF's record.
#include "roles/ro/direct.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <thread>

#include "../tre/tre_fixture.h"
#include "common/hex.h"
#include "store/memory.h"
#include "tre/tre.h"

namespace mcim::ro {
namespace {

using std::chrono::hours;
using std::chrono::seconds;
using tre::testing::World;

const std::string kPcid = "001019990000001";
const std::string kOtherPcid = "001019990000002";
const std::string kUnregisteredPcid = "001019990000003";

class DirectTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { world_ = new World(); }
  static void TearDownTestSuite() {
    delete world_;
    world_ = nullptr;
  }
  static World& world() { return *world_; }

  void SetUp() override {
    auto sup = pki::TrustAnchors::from_certs({world().supplier().cert()});
    ASSERT_TRUE(sup);
    supplier_roots_.emplace(std::move(*sup));
    const store::Time t = std::chrono::floor<seconds>(clock_.now());
    std::vector<store::PcidSubscription> batch(3);
    batch[0].pcid = kPcid;
    batch[1].pcid = kOtherPcid;
    batch[2].pcid = kUnregisteredPcid;
    for (auto& s : batch) s.not_after = t + hours(24 * 365);
    ASSERT_TRUE(db_->pcids().add_batch(batch));
    for (const auto& s : batch) ASSERT_TRUE(db_->pcids().activate(s.pcid, t + hours(24)));
    tre_ = make_tre(kPcid, device_);
    other_ = make_tre(kOtherPcid, other_device_);
    register_pcid(kPcid, device_);
    register_pcid(kOtherPcid, other_device_);
  }

  // A TRE of `pcid` from the supplier, and the device its bundle names.
  std::optional<tre::Tre> make_tre(const std::string& pcid, std::string& device) {
    auto t = world().make_tre(pcid);
    if (t) device = t->status().device_id;
    return t;
  }

  void register_pcid(const std::string& pcid, const std::string& device) {
    store::Registration r;
    r.pcid = pcid;
    r.device_id = device;
    r.sho = "sho-a";
    r.dpf_url = "https://dpf.ro.example/mcim";
    r.apn = "m2m-prov.ro";
    ASSERT_TRUE(db_->registrations().put(r));
  }

  DirectAccess direct() { return DirectAccess(*db_, icf_, *supplier_roots_, clock_, rng_); }

  // A genuine proof by `t` over `challenge`'s nonce for `pcid`.
  DirectProof proof(const DirectChallenge& challenge, tre::Tre& t,
                    const std::string& pcid = kPcid) {
    auto report = t.attest(challenge.nonce);
    EXPECT_TRUE(report) << report.error().message;
    return DirectProof{
        pcid, challenge.challenge_id, report ? *report : "", {t.platform_certificate()}};
  }

  // The challenge as text, to show that a refusal did not use it up.
  std::string challenge_state(const std::string& id) {
    auto c = db_->challenges().find(id);
    if (!c) return "error";
    if (!*c) return "none";
    return fmt::format("{} {} {} used={}", (*c)->sho, (*c)->device_id, to_hex((*c)->nonce),
                       (*c)->used);
  }

  std::vector<store::AuditRecord> audit() {
    auto records = db_->audit().recent(1000);
    EXPECT_TRUE(records);
    return records ? *records : std::vector<store::AuditRecord>{};
  }

  static World* world_;
  FakeClock clock_{std::chrono::floor<seconds>(world_->clock().now())};
  OsRandom rng_;
  std::unique_ptr<store::Database> db_ = store::make_memory_database();
  Icf icf_{*db_, clock_, rng_};
  std::optional<pki::TrustAnchors> supplier_roots_;
  std::optional<tre::Tre> tre_, other_;
  std::string device_, other_device_;
};
World* DirectTest::world_ = nullptr;

TEST_F(DirectTest, AProofWithThePlatformKeyOpensTheIcfsRestrictedSession) {
  auto challenge = direct().issue_challenge(kPcid);
  ASSERT_TRUE(challenge) << challenge.error().message;
  EXPECT_EQ(challenge->challenge_id.size(), 32u);
  EXPECT_EQ(challenge->expires, std::chrono::floor<seconds>(clock_.now()) + seconds(60));
  EXPECT_EQ(challenge_state(challenge->challenge_id),
            fmt::format("pcid:{} {} {} used=false", kPcid, device_, to_hex(challenge->nonce)));

  auto session = direct().open_session(proof(*challenge, *tre_));
  ASSERT_TRUE(session) << session.error().message;
  EXPECT_EQ(session->imsi, kPcid);
  EXPECT_TRUE(session->restricted);
  EXPECT_EQ(session->vno, kDirectAccessHolder);
  EXPECT_EQ(session->expires, std::chrono::floor<seconds>(clock_.now()) + hours(1));
  // It is the ICF's session, in the ICF's store: the device endpoints find it there.
  auto stored = db_->sessions().find(session->id);
  ASSERT_TRUE(stored && *stored);
  EXPECT_EQ((*stored)->imsi, kPcid);
  EXPECT_NE(challenge_state(challenge->challenge_id).find("used=true"), std::string::npos);

  const auto records = audit();  // newest first
  ASSERT_GE(records.size(), 3u);
  EXPECT_EQ(records[0].event, "direct-session");
  EXPECT_EQ(records[0].outcome, "ok");
  EXPECT_EQ(records[0].principal, "pcid:" + kPcid);
  EXPECT_EQ(records[1].event, "open-session");
  EXPECT_EQ(records[1].principal, kDirectAccessHolder);
  EXPECT_EQ(records[2].event, "direct-challenge");
  for (const auto& r : records) {
    EXPECT_EQ(r.detail.find(session->id), std::string::npos) << "a bearer token in the audit";
  }

  // One-time: the same proof again is refused, and so is a second session while one is open.
  EXPECT_EQ(direct().open_session(proof(*challenge, *tre_)).error().code,
            ErrorCode::transition_refused);
  auto again = direct().issue_challenge(kPcid);
  ASSERT_TRUE(again);
  EXPECT_EQ(direct().open_session(proof(*again, *tre_)).error().code, ErrorCode::already_exists);
}

TEST_F(DirectTest, AChallengeIsOnlyForARegisteredPcid) {
  // Unknown to the RO and known but unregistered: one answer, nothing more revealed.
  for (const std::string& pcid : {std::string("001019999999999"), kUnregisteredPcid}) {
    auto c = direct().issue_challenge(pcid);
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().code, ErrorCode::not_found);
    EXPECT_EQ(c.error().message, fmt::format("pcid {}: not registered", pcid));
    const auto records = audit();
    ASSERT_FALSE(records.empty());
    EXPECT_EQ(records[0].event, "direct-challenge");
    EXPECT_EQ(records[0].outcome, "not_found");
  }
}

// Every refused proof: its code, the challenge still unused, no session opened (the genuine proof
// still opens one afterwards), and a record of the refusal.
TEST_F(DirectTest, RefusedProofsChangeNothingButTheAudit) {
  auto challenge = direct().issue_challenge(kPcid);
  auto other_challenge = direct().issue_challenge(kOtherPcid);
  ASSERT_TRUE(challenge && other_challenge);
  const std::string before = challenge_state(challenge->challenge_id);
  auto attest = [](tre::Tre& t, ByteView nonce) { return *t.attest(nonce); };
  auto rogue = world().signer("sho-a").cert.get();  // a certificate outside the supplier's PKI

  struct Case {
    std::string name;
    std::function<DirectProof()> make;
    ErrorCode code;
  };
  const std::vector<Case> cases = {
      {"unregistered pcid",
       [&] {
         return DirectProof{kUnregisteredPcid, challenge->challenge_id, "", {}};
       },
       ErrorCode::not_found},
      {"unknown challenge",
       [&] {
         auto p = proof(*challenge, *tre_);
         p.challenge_id = std::string(32, 'a');
         return p;
       },
       ErrorCode::not_found},
      {"another pcid's challenge", [&] { return proof(*other_challenge, *tre_); },
       ErrorCode::not_found},
      {"not a report",
       [&] {
         return DirectProof{kPcid, challenge->challenge_id, "{}", {tre_->platform_certificate()}};
       },
       ErrorCode::bad_format},
      {"no chain",
       [&] {
         auto p = proof(*challenge, *tre_);
         p.platform_chain.clear();
         return p;
       },
       ErrorCode::missing_argument},
      {"chain not to the supplier roots",
       [&] {
         auto p = proof(*challenge, *tre_);
         p.platform_chain = {rogue};
         return p;
       },
       ErrorCode::chain_invalid},
      {"another device's certificate and report",
       [&] {
         auto p = proof(*challenge, *other_);
         p.pcid = kPcid;
         return p;
       },
       ErrorCode::wrong_recipient},
      {"a report signed by another TRE",
       [&] {
         auto p = proof(*challenge, *tre_);
         p.report = attest(*other_, challenge->nonce);
         return p;
       },
       ErrorCode::signature_invalid},
      {"another nonce",
       [&] {
         auto p = proof(*challenge, *tre_);
         p.report = attest(*tre_, other_challenge->nonce);
         return p;
       },
       ErrorCode::nonce_mismatch},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::size_t records = audit().size();
    auto r = direct().open_session(c.make());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, c.code) << r.error().message;
    EXPECT_EQ(challenge_state(challenge->challenge_id), before);
    const auto after = audit();
    ASSERT_EQ(after.size(), records + 1);
    EXPECT_EQ(after[0].event, "direct-session");
    EXPECT_EQ(after[0].outcome, to_string(c.code));
  }
  auto genuine = direct().open_session(proof(*challenge, *tre_));
  EXPECT_TRUE(genuine) << genuine.error().message;
  auto other = direct().open_session(proof(*other_challenge, *other_, kOtherPcid));
  EXPECT_TRUE(other) << other.error().message;
}

TEST_F(DirectTest, AnExpiredChallengeIsRefusedAndStaysUnused) {
  auto challenge = direct().issue_challenge(kPcid);
  ASSERT_TRUE(challenge);
  const DirectProof p = proof(*challenge, *tre_);
  const std::string before = challenge_state(challenge->challenge_id);
  clock_.advance(seconds(60));
  EXPECT_EQ(direct().open_session(p).error().code, ErrorCode::stale_report);
  EXPECT_EQ(challenge_state(challenge->challenge_id), before);
  EXPECT_EQ(audit()[0].outcome, "stale_report");
}

// The same proof sent over several connections at once: exactly one session.
TEST_F(DirectTest, RacingProofsOpenOneSession) {
  auto challenge = direct().issue_challenge(kPcid);
  ASSERT_TRUE(challenge);
  const DirectProof p = proof(*challenge, *tre_);
  std::atomic<int> opened = 0, refused = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      OsRandom rng;  // a RandomSource per thread
      Icf icf(*db_, clock_, rng);
      auto r = DirectAccess(*db_, icf, *supplier_roots_, clock_, rng).open_session(p);
      if (r) {
        ++opened;
      } else if (r.error().code == ErrorCode::transition_refused) {
        ++refused;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(opened.load(), 1);
  EXPECT_EQ(refused.load(), 7);
}

// F7 holds over direct access too: a PCID its owner has not switched on gets no session, and
// the verified proof has spent its challenge (as the PVA's verdicts spend theirs).
TEST_F(DirectTest, ADormantPcidGetsNoSession) {
  std::vector<store::PcidSubscription> batch(1);
  batch[0].pcid = "001019990000009";
  batch[0].not_after = std::chrono::floor<seconds>(clock_.now()) + hours(24 * 365);
  batch[0].dormant_until = batch[0].not_after;
  ASSERT_TRUE(db_->pcids().add_batch(batch));
  std::string device;
  auto dormant = make_tre(batch[0].pcid, device);
  ASSERT_TRUE(dormant);
  register_pcid(batch[0].pcid, device);
  auto challenge = direct().issue_challenge(batch[0].pcid);
  ASSERT_TRUE(challenge);
  EXPECT_EQ(direct().open_session(proof(*challenge, *dormant, batch[0].pcid)).error().code,
            ErrorCode::credential_unusable);
}

}  // namespace
}  // namespace mcim::ro
