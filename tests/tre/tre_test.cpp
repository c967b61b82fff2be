#include "tre/tre.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/file.h"
#include "common/hex.h"
#include "pki/attestation.h"
#include "tre_fixture.h"

namespace mcim::tre {
namespace {

using testing::Network;
using testing::World;
namespace fs = std::filesystem;

constexpr Bytes<16> kNonce = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
const std::string kPcid = "001019990000001";
const std::string kImsiA = "001020000000001";
const std::string kImsiB = "001030000000002";

// The registry without timestamps: what must not change when something is refused.
std::string registry_of(const Tre& tre) {
  std::string out;
  for (const auto& c : tre.status().credentials) {
    out += c.id + ":" + std::string(to_string(c.state)) + ":" + c.owner + ":" +
           std::to_string(c.sqn_ms) + ";";
  }
  return out;
}

class TreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { world_ = new World(); }
  static void TearDownTestSuite() {
    delete world_;
    world_ = nullptr;
  }
  World& world() { return *world_; }

  void SetUp() override {
    dir_ = world().path("tre-" + std::to_string(counter_++));
    bundle_.emplace(world().bundle(kPcid));
    ASSERT_TRUE(Tre::init(Options{dir_}, *bundle_));
  }

  Tre open() {
    auto t = Tre::open(Options{dir_});
    EXPECT_TRUE(t) << t.error().message;
    return std::move(*t);
  }

  std::string device_id() const { return bundle_->device_id; }

  // Registers and installs an MCIM of `owner`; returns the document (for its K).
  pki::McimDocument install(Tre& tre, const std::string& imsi, const std::string& owner,
                            std::uint64_t seq) {
    auto doc = world().document(device_id(), imsi, owner, seq, kNonce);
    EXPECT_TRUE(tre.record_registration(kNonce));
    auto out = tre.install(world().seal(doc, world().signer(owner), tre.platform_certificate()));
    EXPECT_TRUE(out.result) << out.result.error().message;
    return doc;
  }

  InstructionOutcome instruct(Tre& tre, const std::string& op, const std::string& id,
                              Action action) {
    return tre.apply_instruction(
        world().instruction(world().signer(op), device_id(), id, action, ++sequence_));
  }

  static World* world_;
  static inline int counter_ = 0;
  std::string dir_;
  std::optional<SupplierBundle> bundle_;
  std::uint64_t sequence_ = 0;
};
World* TreTest::world_ = nullptr;

TEST_F(TreTest, StartsPristineWithThePcidCredentialActivated) {
  Tre tre = open();
  const Status s = tre.status();
  EXPECT_EQ(s.device_id, device_id());
  EXPECT_EQ(s.state, pki::TreState::pristine);
  ASSERT_EQ(s.credentials.size(), 1u);
  EXPECT_EQ(s.credentials[0].id, kPcid);
  EXPECT_EQ(s.credentials[0].kind, CredentialKind::pcid);
  EXPECT_EQ(s.credentials[0].state, McimState::activated);
  EXPECT_EQ(s.credentials[0].owner, "ro-1");
  EXPECT_FALSE(s.selected);
  EXPECT_EQ(s.generation, 1u);
  auto audit = tre.verify_audit();
  ASSERT_TRUE(audit) << audit.error().message;
  EXPECT_TRUE(audit->tail_checked);
  ASSERT_EQ(audit->log.entries.size(), 1u);
  EXPECT_EQ(audit->log.entries[0].event.event, "init");
  EXPECT_TRUE(tre.fsck());
  EXPECT_EQ(fs::status(dir_ + "/tre.secret").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
}

// F6: two operators' MCIMs in one TRE; each lists only its own, and a list uses up its sequence.
TEST_F(TreTest, EachOperatorListsOnlyItsOwnCredentials) {
  Tre tre = open();
  install(tre, kImsiA, "sho-a", 1);
  install(tre, kImsiB, "sho-b", 1);
  ASSERT_TRUE(instruct(tre, "sho-b", kImsiB, Action::activate).result);
  struct Case {
    std::string op;
    std::vector<ListedCredential> want;
  };
  const Case cases[] = {
      {"sho-a",
       {{kImsiA, "installed",
         world().document(device_id(), kImsiA, "sho-a", 1, kNonce).package_id}}},
      {"sho-b",
       {{kImsiB, "activated",
         world().document(device_id(), kImsiB, "sho-b", 1, kNonce).package_id}}},
      {"ro-1", {{kPcid, "activated", tre.status().credentials.at(0).package_id}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.op);
    const std::string text = world().list_instruction(world().signer(c.op), device_id(), 100);
    auto out = tre.apply_instruction(text);
    ASSERT_TRUE(out.result) << out.result.error().message;
    EXPECT_EQ(out.result->id, "-");
    auto report = verify_status_report(out.report, tre.platform_certificate());
    ASSERT_TRUE(report) << report.error().message;
    EXPECT_EQ(report->event, "list");
    EXPECT_EQ(report->outcome, "ok");
    EXPECT_EQ(report->sequence, 100u);
    EXPECT_EQ(report->credentials, c.want);
    // The same list again (its answer lost on the way): answered again, not audited.
    auto again = tre.apply_instruction(text);
    ASSERT_TRUE(again.result) << again.result.error().message;
    auto repeated = verify_status_report(again.report, tre.platform_certificate());
    ASSERT_TRUE(repeated);
    EXPECT_EQ(repeated->outcome, "ok");
    EXPECT_EQ(repeated->sequence, 100u);
    EXPECT_EQ(repeated->credentials, c.want);
    // Another list of the same sequence is a replay: refused, audited, and it lists nothing.
    auto other =
        tre.apply_instruction(world().list_instruction(world().signer(c.op), device_id(), 100));
    ASSERT_FALSE(other.result);
    EXPECT_EQ(other.result.error().code, ErrorCode::replayed_instruction);
    auto refused = verify_status_report(other.report, tre.platform_certificate());
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->outcome, "replayed_instruction");
    EXPECT_TRUE(refused->credentials.empty());
  }
  auto audit = tre.verify_audit();
  ASSERT_TRUE(audit) << audit.error().message;
  std::size_t lists = 0, replays = 0;
  for (const auto& e : audit->log.entries) {
    if (e.event.event != "list") continue;
    ++(e.event.outcome == "ok" ? lists : replays);
  }
  EXPECT_EQ(lists, 3u);
  EXPECT_EQ(replays, 3u);
}

// F8: the RO renews the PCID credential with an MCIM-like package: afterwards the TRE answers AKA
// with the new K only, and no refusal leaves it without its PCID credential.
TEST_F(TreTest, TheRoRenewsThePcidCredentialInOneCommit) {
  Tre tre = open();
  auto doc = world().document(device_id(), kPcid, "ro-1", 100, kNonce);
  doc.package_id = "pcid-renewal-1";
  const ByteVec pkg = world().seal(doc, world().signer("ro-1"), tre.platform_certificate());
  auto out = tre.renew_pcid(pkg);
  ASSERT_TRUE(out.result) << out.result.error().message;
  EXPECT_EQ(out.result->kind, CredentialKind::pcid);
  EXPECT_EQ(out.result->state, McimState::activated);
  EXPECT_EQ(out.result->package_id, "pcid-renewal-1");
  EXPECT_EQ(out.result->not_after, doc.not_after);
  auto report = verify_install_report(out.report, tre.platform_certificate(), device_id(),
                                      "pcid-renewal-1");
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->outcome, "ok");
  EXPECT_EQ(report->credential, kPcid);
  Network network(doc);
  const auto v = network.next(world().rng());
  auto answer = tre.authenticate(kPcid, v.rand, v.autn);
  ASSERT_TRUE(answer) << answer.error().message;
  EXPECT_TRUE(std::holds_alternative<aka::UsimSuccess>(*answer));
  EXPECT_EQ(tre.verify_audit()->log.entries.back().event.event, "update");
  EXPECT_EQ(tre.renew_pcid(pkg).result.error().code, ErrorCode::replayed_package);
  EXPECT_TRUE(tre.fsck());
  // The renewal's report signed again (a device whose agent stopped right after the commit).
  auto again = tre.install_report(kPcid);
  ASSERT_TRUE(again) << again.error().message;
  auto second =
      verify_install_report(*again, tre.platform_certificate(), device_id(), "pcid-renewal-1");
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(second->credential, kPcid);
  EXPECT_EQ(second->sequence, 100u);
  EXPECT_EQ(second->state, "activated");
}

// F8: the TRE holds the PCID credential's lifetime as the ICF does: at not_after it stops; a
// renewal before then gives it a new one.
TEST_F(TreTest, ThePcidCredentialStopsAtItsNotAfter) {
  FakeClock clock(world().clock().now());
  auto t = Tre::open(Options{.dir = dir_, .clock = &clock});
  ASSERT_TRUE(t) << t.error().message;
  Network network(bundle_->k.get(), bundle_->opc.get(), bundle_->ind_bits);
  clock.set(bundle_->pcid_not_after - std::chrono::seconds(1));
  auto v = network.next(world().rng());
  ASSERT_TRUE(t->authenticate(kPcid, v.rand, v.autn));
  clock.set(bundle_->pcid_not_after);
  v = network.next(world().rng());
  auto late = t->authenticate(kPcid, v.rand, v.autn);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, ErrorCode::pcid_expired);
}

struct RenewalRefusal {
  const char* name;
  std::string imsi, owner;
  bool block_first;  // the RO blocked the PCID credential before
  ErrorCode code;
};

TEST_F(TreTest, PcidRenewalsNotFromItsOwnerOrNotForItsPcidAreRefusedAndChangeNothing) {
  const RenewalRefusal cases[] = {
      {"another imsi", kImsiA, "ro-1", false, ErrorCode::wrong_recipient},
      {"another operator", kPcid, "sho-a", false, ErrorCode::access_denied},
      {"blocked credential", kPcid, "ro-1", true, ErrorCode::transition_refused},
  };
  Tre tre = open();
  std::uint64_t seq = 100;
  for (const RenewalRefusal& c : cases) {
    SCOPED_TRACE(c.name);
    if (c.block_first) {
      ASSERT_TRUE(instruct(tre, "ro-1", kPcid, Action::block).result);
    }
    const std::string before = registry_of(tre);
    auto doc = world().document(device_id(), c.imsi, c.owner, ++seq, kNonce);
    auto out =
        tre.renew_pcid(world().seal(doc, world().signer(c.owner), tre.platform_certificate()));
    ASSERT_FALSE(out.result);
    EXPECT_EQ(out.result.error().code, c.code);
    EXPECT_EQ(registry_of(tre), before);
    EXPECT_EQ(tre.status().credentials.at(0).package_id, "pcid");
    auto report = verify_status_report(out.report, tre.platform_certificate());
    ASSERT_TRUE(report);
    EXPECT_EQ(report->outcome, std::string(to_string(c.code)));
  }
}

TEST_F(TreTest, InitRefusesADirectoryThatHoldsATre) {
  auto again = Tre::init(Options{dir_}, world().bundle("001019990000002"));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::already_exists);
  EXPECT_EQ(open().status().credentials.at(0).id, kPcid);
}

TEST_F(TreTest, OneProcessAtATime) {
  Tre tre = open();
  auto second = Tre::open(Options{dir_});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::busy);
}

TEST_F(TreTest, PcidAkaAnswersAndTheSqnIsDurableBeforeRes) {
  Network net(bundle_->k.get(), bundle_->opc.get(), bundle_->ind_bits);
  aka::AuthVector av;
  {
    Tre tre = open();
    av = net.next(world().rng());
    auto answer = tre.authenticate(kPcid, av.rand, av.autn);
    ASSERT_TRUE(answer) << answer.error().message;
    const auto* ok = std::get_if<aka::UsimSuccess>(&*answer);
    ASSERT_NE(ok, nullptr);
    EXPECT_EQ(ok->res, av.xres);
    EXPECT_EQ(ok->ck, av.ck);
    EXPECT_EQ(ok->ik, av.ik);
  }
  // After a restart the same challenge is a replay: synchronisation failure with an AUTS that
  // the home side verifies and that carries the SQN just accepted.
  Tre tre = open();
  auto replay = tre.authenticate(kPcid, av.rand, av.autn);
  ASSERT_TRUE(replay);
  const auto* sync = std::get_if<aka::UsimSyncFailure>(&*replay);
  ASSERT_NE(sync, nullptr);
  auto sqn_ms = aka::recover_sqn_ms(net.algorithm(), av.rand, sync->auts);
  ASSERT_TRUE(sqn_ms);
  EXPECT_EQ(aka::sqn_value(*sqn_ms), aka::sqn_value(av.sqn));
  // The home side resynchronises and the next vector is accepted.
  net.home().resynchronise(*sqn_ms);
  auto next = net.next(world().rng());
  auto answer = tre.authenticate(kPcid, next.rand, next.autn);
  ASSERT_TRUE(answer);
  EXPECT_TRUE(std::holds_alternative<aka::UsimSuccess>(*answer));
}

TEST_F(TreTest, AForgedAutnIsRefusedAndChangesNothing) {
  Tre tre = open();
  Network net(bundle_->k.get(), bundle_->opc.get(), bundle_->ind_bits);
  auto av = net.next(world().rng());
  av.autn[15] ^= 1;
  const auto before = tre.status().generation;
  auto answer = tre.authenticate(kPcid, av.rand, av.autn);
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().code, ErrorCode::mac_mismatch);
  EXPECT_EQ(tre.status().generation, before);
  auto none = tre.authenticate(std::nullopt, av.rand, av.autn);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::not_found);  // nothing is selected
}

TEST_F(TreTest, InstallsAPackageAndReportsItSigned) {
  Tre tre = open();
  auto doc = world().document(device_id(), kImsiA, "sho-a", 1, kNonce);
  const ByteVec pkg = world().seal(doc, world().signer("sho-a"), tre.platform_certificate());

  auto unregistered = tre.install(pkg);
  ASSERT_FALSE(unregistered.result);
  EXPECT_EQ(unregistered.result.error().code, ErrorCode::nonce_mismatch);

  ASSERT_TRUE(tre.record_registration(kNonce));
  auto out = tre.install(pkg);
  ASSERT_TRUE(out.result) << out.result.error().message;
  EXPECT_EQ(out.result->state, McimState::installed);
  EXPECT_EQ(out.result->owner, "sho-a");
  EXPECT_EQ(tre.status().state, pki::TreState::provisioned);
  auto report = verify_status_report(out.report, tre.platform_certificate());
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->outcome, "ok");
  EXPECT_EQ(report->credential, kImsiA);
  EXPECT_EQ(report->device_id, device_id());
  EXPECT_EQ(report->sequence, 1u);

  // The registration nonce was used up, and the same package is a replay anyway.
  ASSERT_TRUE(tre.record_registration(kNonce));
  auto replay = tre.install(pkg);
  ASSERT_FALSE(replay.result);
  EXPECT_EQ(replay.result.error().code, ErrorCode::replayed_package);
}

// A device whose agent lost the report of an install asks for it again (device.md "A run that
// stops"): the same report but for its time and state, which the DPF verifies as install()'s.
TEST_F(TreTest, SignsAnInstalledMcimsReportAgainAndChangesNothing) {
  Tre tre = open();
  const auto doc = install(tre, kImsiA, "sho-a", 3);
  const std::uint64_t generation = tre.status().generation;
  const std::uint64_t audited = tre.status().audit_entries;

  auto again = tre.install_report(kImsiA);
  ASSERT_TRUE(again) << again.error().message;
  auto report =
      verify_install_report(*again, tre.platform_certificate(), device_id(), doc.package_id);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->event, "install");
  EXPECT_EQ(report->outcome, "ok");
  EXPECT_EQ(report->credential, kImsiA);
  EXPECT_EQ(report->sequence, 3u);
  EXPECT_EQ(report->state, "installed");

  ASSERT_TRUE(tre.apply(Action::activate, kImsiA));
  auto activated = tre.install_report(kImsiA);
  ASSERT_TRUE(activated);
  EXPECT_EQ(verify_status_report(*activated, tre.platform_certificate())->state, "activated");

  // Nothing else is an MCIM with a package to report; the answer never echoes raw input.
  const std::string pcid = tre.status().credentials.at(0).id;
  EXPECT_EQ(tre.install_report(pcid).error().code, ErrorCode::not_found);
  EXPECT_EQ(tre.install_report(kImsiB).error().code, ErrorCode::not_found);
  auto odd = tre.install_report("x\ny");
  ASSERT_FALSE(odd);
  EXPECT_EQ(odd.error().code, ErrorCode::not_found);
  EXPECT_EQ(odd.error().message.find('\n'), std::string::npos) << odd.error().message;
  EXPECT_EQ(tre.status().generation, generation + 1);  // the activation only
  EXPECT_EQ(tre.status().audit_entries, audited + 1);

  // A deleted MCIM's tombstone has nothing left to report.
  ASSERT_TRUE(tre.pristine());
  EXPECT_EQ(tre.install_report(kImsiA).error().code, ErrorCode::not_found);
}

TEST_F(TreTest, RefusedPackagesChangeNothingButTheAuditLog) {
  Tre tre = open();
  ASSERT_TRUE(tre.record_registration(kNonce));
  const auto other = world().bundle("001019990000009", "dev-other");
  struct Case {
    std::string name;
    ByteVec pkg;
    ErrorCode code;
  };
  std::vector<Case> cases;
  const auto good = world().document(device_id(), kImsiA, "sho-a", 5, kNonce);
  cases.push_back({"rogue signer",
                   world().seal(good, world().rogue_signer(), tre.platform_certificate()),
                   ErrorCode::chain_invalid});
  cases.push_back({"another device",
                   world().seal(world().document("dev-other", kImsiA, "sho-a", 5, kNonce),
                                world().signer("sho-a"), other.platform_chain[0].get()),
                   ErrorCode::wrong_recipient});
  Bytes<16> wrong_nonce = kNonce;
  wrong_nonce[0] ^= 0xff;
  cases.push_back({"wrong nonce",
                   world().seal(world().document(device_id(), kImsiA, "sho-a", 5, wrong_nonce),
                                world().signer("sho-a"), tre.platform_certificate()),
                   ErrorCode::nonce_mismatch});
  cases.push_back({"garbage", ByteVec{0x30, 0x03, 0x02, 0x01, 0x00}, ErrorCode::bad_format});
  ByteVec truncated = world().seal(good, world().signer("sho-a"), tre.platform_certificate());
  truncated.resize(truncated.size() / 2);
  cases.push_back({"truncated", truncated, ErrorCode::bad_format});

  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string before = registry_of(tre);
    const auto entries = tre.status().audit_entries;
    auto out = tre.install(c.pkg);
    ASSERT_FALSE(out.result);
    EXPECT_EQ(out.result.error().code, c.code) << out.result.error().message;
    EXPECT_EQ(registry_of(tre), before);
    EXPECT_EQ(tre.status().audit_entries, entries + 1);
    auto report = verify_status_report(out.report, tre.platform_certificate());
    ASSERT_TRUE(report) << report.error().message;
    EXPECT_EQ(report->outcome, to_string(c.code));
  }
  // The registration is still pending: a good package installs.
  auto ok = tre.install(world().seal(good, world().signer("sho-a"), tre.platform_certificate()));
  EXPECT_TRUE(ok.result) << ok.result.error().message;
}

TEST_F(TreTest, LifecycleAndOneSelectedCredential) {
  Tre tre = open();
  const auto doc = install(tre, kImsiA, "sho-a", 1);
  auto selected_early = tre.apply(Action::select, kImsiA);
  ASSERT_FALSE(selected_early);
  EXPECT_EQ(selected_early.error().code, ErrorCode::transition_refused);
  ASSERT_TRUE(tre.apply(Action::activate, kImsiA));
  ASSERT_TRUE(tre.apply(Action::select, kPcid));
  auto two = tre.apply(Action::select, kImsiA);
  ASSERT_FALSE(two);
  EXPECT_EQ(two.error().code, ErrorCode::transition_refused);
  EXPECT_NE(two.error().message.find("one-selected"), std::string::npos);
  ASSERT_TRUE(tre.apply(Action::deselect, kPcid));
  ASSERT_TRUE(tre.apply(Action::select, kImsiA));
  EXPECT_EQ(tre.status().selected, kImsiA);

  // AKA with the selected MCIM.
  Network net(doc);
  auto av = net.next(world().rng());
  auto answer = tre.authenticate(std::nullopt, av.rand, av.autn);
  ASSERT_TRUE(answer) << answer.error().message;
  ASSERT_TRUE(std::holds_alternative<aka::UsimSuccess>(*answer));
  EXPECT_EQ(std::get<aka::UsimSuccess>(*answer).res, av.xres);

  auto del = tre.apply(Action::delete_, kImsiA);  // the device may not, and it is selected
  ASSERT_FALSE(del);
  EXPECT_EQ(del.error().code, ErrorCode::access_denied);
  auto del_selected = instruct(tre, "sho-a", kImsiA, Action::delete_);
  ASSERT_FALSE(del_selected.result);
  EXPECT_EQ(del_selected.result.error().code, ErrorCode::transition_refused);
  EXPECT_NE(del_selected.result.error().message.find("delete-not-selected"), std::string::npos);
}

// F9: an instruction whose answer was lost after the TRE's commit comes again in the next round.
// The very instruction last accepted from its operator (same bytes) gets the answer it had, with
// the credential's state now, and nothing changes; any other at or below that sequence, or that
// one once a later one is accepted, is a replay. The answer survives a reopen.
TEST_F(TreTest, TheLastInstructionDeliveredAgainGetsItsAnswerAgain) {
  std::optional<Tre> held(open());
  Tre& tre = *held;
  install(tre, kImsiA, "sho-a", 1);
  ASSERT_TRUE(tre.apply(Action::activate, kImsiA));
  const std::string block =
      world().instruction(world().signer("sho-a"), device_id(), kImsiA, Action::block, 5);
  auto first = tre.apply_instruction(block);
  ASSERT_TRUE(first.result) << first.result.error().message;

  struct Expect {
    std::string outcome;
    std::string state;
  };
  auto answered_again = [&](Tre& t, const std::string& text, const Expect& want) {
    SCOPED_TRACE(want.outcome);
    const std::uint64_t generation = t.status().generation;
    const std::uint64_t audited = t.status().audit_entries;
    auto again = t.apply_instruction(text);
    auto report = verify_status_report(again.report, t.platform_certificate());
    ASSERT_TRUE(report) << report.error().message;
    EXPECT_EQ(report->outcome, want.outcome);
    EXPECT_EQ(report->state, want.state);
    EXPECT_EQ(report->credential, kImsiA);
    if (want.outcome == "ok") {
      ASSERT_TRUE(again.result) << again.result.error().message;
      EXPECT_EQ(again.result->id, kImsiA);
    } else {
      ASSERT_FALSE(again.result);
      EXPECT_EQ(std::string(again.result.error().wire_code()), want.outcome);
    }
    EXPECT_EQ(t.status().generation, generation);
    EXPECT_EQ(t.status().audit_entries, audited);
  };
  answered_again(tre, block, {"ok", "blocked"});
  answered_again(tre, block, {"ok", "blocked"});  // as often as it comes

  // Another instruction of the same sequence, and an earlier one: replays.
  for (const std::string& other :
       {world().instruction(world().signer("sho-a"), device_id(), kImsiA, Action::unblock, 5),
        world().instruction(world().signer("sho-a"), device_id(), kImsiA, Action::block, 4)}) {
    auto replay = tre.apply_instruction(other);
    ASSERT_FALSE(replay.result);
    EXPECT_EQ(replay.result.error().code, ErrorCode::replayed_instruction);
  }
  // Another operator's instructions have sequences of their own.
  const std::string ro_list = world().list_instruction(world().signer("ro-1"), device_id(), 5);
  ASSERT_TRUE(tre.apply_instruction(ro_list).result);
  answered_again(tre, block, {"ok", "blocked"});

  // A refusal uses the sequence up too, and is answered again with its code.
  const std::string block_again =
      world().instruction(world().signer("sho-a"), device_id(), kImsiA, Action::block, 6);
  auto refused = tre.apply_instruction(block_again);
  ASSERT_FALSE(refused.result);
  EXPECT_EQ(refused.result.error().code, ErrorCode::transition_refused);
  answered_again(tre, block_again, {"transition_refused", "blocked"});
  {
    auto replay = tre.apply_instruction(block);  // no longer the last
    ASSERT_FALSE(replay.result);
    EXPECT_EQ(replay.result.error().code, ErrorCode::replayed_instruction);
  }

  // Kept in the state: after a reopen, with the credential's state now, and past the 10 minutes
  // a new instruction is fresh for.
  const std::string unblock =
      world().instruction(world().signer("sho-a"), device_id(), kImsiA, Action::unblock, 7);
  ASSERT_TRUE(tre.apply_instruction(unblock).result);
  held.reset();
  FakeClock later(world().clock().now() + std::chrono::minutes(20));
  auto t = Tre::open(Options{.dir = dir_, .clock = &later});
  ASSERT_TRUE(t) << t.error().message;
  Tre& reopened = *t;
  answered_again(reopened, unblock, {"ok", "activated"});
  auto stale = reopened.apply_instruction(
      world().instruction(world().signer("sho-a"), device_id(), kImsiA, Action::block, 8));
  ASSERT_FALSE(stale.result);
  EXPECT_EQ(stale.result.error().code, ErrorCode::stale_report);
  ASSERT_TRUE(reopened.apply(Action::select, kImsiA));
  answered_again(reopened, unblock, {"ok", "selected"});
  auto audit = reopened.verify_audit();
  ASSERT_TRUE(audit) << audit.error().message;
}

TEST_F(TreTest, StakeholdersManageOnlyTheirOwnCredentials) {
  Tre tre = open();
  install(tre, kImsiA, "sho-a", 1);
  ASSERT_TRUE(tre.apply(Action::activate, kImsiA));

  auto by_device = tre.apply(Action::block, kImsiA);
  ASSERT_FALSE(by_device);
  EXPECT_EQ(by_device.error().code, ErrorCode::access_denied);

  auto by_other = instruct(tre, "sho-b", kImsiA, Action::block);
  ASSERT_FALSE(by_other.result);
  EXPECT_EQ(by_other.result.error().code, ErrorCode::access_denied);
  auto by_other_on_pcid = instruct(tre, "sho-a", kPcid, Action::block);
  ASSERT_FALSE(by_other_on_pcid.result);
  EXPECT_EQ(by_other_on_pcid.result.error().code, ErrorCode::access_denied);

  auto blocked = instruct(tre, "sho-a", kImsiA, Action::block);
  ASSERT_TRUE(blocked.result) << blocked.result.error().message;
  EXPECT_EQ(blocked.result->state, McimState::blocked);
  auto report = verify_status_report(blocked.report, tre.platform_certificate());
  ASSERT_TRUE(report);
  EXPECT_EQ(report->outcome, "ok");
  EXPECT_EQ(report->state, "blocked");

  // Blocked: no AKA.
  Network net(world().document(device_id(), kImsiA, "sho-a", 1, kNonce));
  auto av = net.next(world().rng());
  auto answer = tre.authenticate(kImsiA, av.rand, av.autn);
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().code, ErrorCode::credential_unusable);

  // The RO owns the PCID credential.
  auto ro = instruct(tre, "ro-1", kPcid, Action::block);
  ASSERT_TRUE(ro.result) << ro.result.error().message;

  // Replays, foreign devices and rogue signers.
  const std::string old =
      world().instruction(world().signer("sho-a"), device_id(), kImsiA, Action::unblock, 1);
  auto replayed = tre.apply_instruction(old);
  ASSERT_FALSE(replayed.result);
  EXPECT_EQ(replayed.result.error().code, ErrorCode::replayed_instruction);
  auto foreign = tre.apply_instruction(
      world().instruction(world().signer("sho-a"), "dev-other", kImsiA, Action::unblock, 1000));
  ASSERT_FALSE(foreign.result);
  EXPECT_EQ(foreign.result.error().code, ErrorCode::wrong_recipient);
  auto rogue = tre.apply_instruction(
      world().instruction(world().rogue_signer(), device_id(), kImsiA, Action::unblock, 1001));
  ASSERT_FALSE(rogue.result);
  EXPECT_EQ(rogue.result.error().code, ErrorCode::chain_invalid);
  auto junk = tre.apply_instruction("{\"instruction\":1}");
  ASSERT_FALSE(junk.result);
  EXPECT_EQ(junk.result.error().code, ErrorCode::bad_format);
  EXPECT_EQ(tre.status().credentials.at(1).state, McimState::blocked);

  // Every refusal is in the audit log, and the log verifies.
  auto audit = tre.verify_audit();
  ASSERT_TRUE(audit) << audit.error().message;
  std::size_t refusals = 0;
  for (const auto& e : audit->log.entries) refusals += e.event.outcome != "ok";
  EXPECT_GE(refusals, 7u);

  ASSERT_TRUE(instruct(tre, "sho-a", kImsiA, Action::unblock).result);
  ASSERT_TRUE(instruct(tre, "sho-a", kImsiA, Action::retire).result);
  ASSERT_TRUE(instruct(tre, "sho-a", kImsiA, Action::delete_).result);
  EXPECT_EQ(tre.status().credentials.at(1).state, McimState::deleted);
  EXPECT_EQ(tre.status().credentials.at(1).algorithm, "-");
  // A tombstone can be replaced by a new installation of the IMSI.
  install(tre, kImsiA, "sho-a", 2);
  EXPECT_EQ(tre.status().credentials.at(1).state, McimState::installed);
}

TEST_F(TreTest, TwoOperatorsCredentialsSideBySide) {
  Tre tre = open();
  install(tre, kImsiA, "sho-a", 1);
  install(tre, kImsiB, "sho-b", 1);
  ASSERT_TRUE(tre.apply(Action::activate, kImsiA));
  ASSERT_TRUE(tre.apply(Action::activate, kImsiB));
  auto cross = instruct(tre, "sho-a", kImsiB, Action::block);
  ASSERT_FALSE(cross.result);
  EXPECT_EQ(cross.result.error().code, ErrorCode::access_denied);
  ASSERT_TRUE(instruct(tre, "sho-b", kImsiB, Action::block).result);
  EXPECT_EQ(tre.status().credentials.at(1).state, McimState::activated);
  EXPECT_EQ(tre.status().credentials.at(2).state, McimState::blocked);
}

TEST_F(TreTest, PristineDeletesEveryMcimAndKeepsThePcid) {
  Tre tre = open();
  install(tre, kImsiA, "sho-a", 1);
  ASSERT_TRUE(tre.apply(Action::activate, kImsiA));
  ASSERT_TRUE(tre.apply(Action::select, kImsiA));
  ASSERT_TRUE(tre.pristine());
  const Status s = tre.status();
  EXPECT_EQ(s.state, pki::TreState::pristine);
  EXPECT_FALSE(s.selected);
  EXPECT_EQ(s.credentials.at(0).state, McimState::activated);
  EXPECT_EQ(s.credentials.at(1).state, McimState::deleted);
  EXPECT_TRUE(tre.fsck());
}

// F4: the new operator's package installed and the old operator's MCIM discarded in one commit;
// two signed acknowledgements, the old owner's naming its credential, the new owner's naming only
// its own package.
TEST_F(TreTest, InstallReplacingDiscardsTheOldMcimAndAcknowledgesItToEachOwner) {
  Tre tre = open();
  install(tre, kImsiA, "sho-a", 1);
  ASSERT_TRUE(tre.apply(Action::activate, kImsiA));
  const std::string old_package = tre.status().credentials.at(1).package_id;
  ASSERT_TRUE(tre.record_registration(kNonce));
  const auto doc = world().document(device_id(), kImsiB, "sho-b", 1, kNonce);
  auto out = tre.install_replacing(
      world().seal(doc, world().signer("sho-b"), tre.platform_certificate()), kImsiA);
  ASSERT_TRUE(out.install.result) << out.install.result.error().message;
  EXPECT_EQ(out.install.result->id, kImsiB);
  EXPECT_EQ(out.install.result->state, McimState::installed);
  const Status s = tre.status();
  ASSERT_EQ(s.credentials.size(), 3u);
  EXPECT_EQ(s.credentials.at(1).state, McimState::deleted);
  EXPECT_EQ(s.credentials.at(1).algorithm, "-");  // the keys are wiped
  EXPECT_EQ(s.credentials.at(2).state, McimState::installed);
  X509* cert = tre.platform_certificate();
  auto installed = verify_install_report(out.install.report, cert, device_id(), doc.package_id);
  ASSERT_TRUE(installed) << installed.error().message;
  EXPECT_EQ(installed->outcome, "ok");
  auto full = verify_discard_report(out.discard_report, cert, device_id(), kImsiA);
  ASSERT_TRUE(full) << full.error().message;
  EXPECT_EQ(full->package_id, old_package);
  EXPECT_EQ(full->state, "deleted");
  auto filtered = verify_discard_notice(out.discard_notice, cert, device_id(), doc.package_id);
  ASSERT_TRUE(filtered) << filtered.error().message;
  EXPECT_EQ(filtered->credential, "-");
  EXPECT_EQ(filtered->sequence, doc.sequence);
  // Nothing of the old subscription reaches the new owner.
  for (const std::string& secret : {kImsiA, old_package, std::string("sho-a")}) {
    EXPECT_EQ(out.discard_notice.find(secret), std::string::npos) << secret;
  }
  // Each acknowledgement is only what it says: not the other's, not an install report.
  EXPECT_FALSE(verify_discard_notice(out.discard_report, cert, device_id(), doc.package_id));
  EXPECT_FALSE(verify_discard_report(out.discard_notice, cert, device_id(), kImsiA));
  EXPECT_FALSE(verify_discard_report(out.install.report, cert, device_id(), kImsiA));
  EXPECT_EQ(verify_discard_report(out.discard_report, cert, "dev-other", kImsiA).error().code,
            ErrorCode::wrong_recipient);
  auto audit = tre.verify_audit();
  ASSERT_TRUE(audit);
  EXPECT_EQ(audit->log.entries.back().event.event, "replace");
  EXPECT_TRUE(tre.fsck());

  // The three signed again (an agent stopped right after the commit), verified the same way.
  const std::uint64_t generation = tre.status().generation;
  auto again = tre.replacement_reports(kImsiB, kImsiA);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->install.result->id, kImsiB);
  EXPECT_TRUE(verify_install_report(again->install.report, cert, device_id(), doc.package_id));
  auto full_again = verify_discard_report(again->discard_report, cert, device_id(), kImsiA);
  ASSERT_TRUE(full_again) << full_again.error().message;
  EXPECT_EQ(full_again->package_id, old_package);
  auto notice_again =
      verify_discard_notice(again->discard_notice, cert, device_id(), doc.package_id);
  ASSERT_TRUE(notice_again) << notice_again.error().message;
  EXPECT_EQ(notice_again->sequence, doc.sequence);
  EXPECT_EQ(again->discard_notice.find(kImsiA), std::string::npos);
  // Only a live MCIM beside an MCIM's tombstone: the reverse, the PCID or nothing is not_found.
  const std::string pcid = s.credentials.at(0).id;
  EXPECT_EQ(tre.replacement_reports(kImsiA, kImsiB).error().code, ErrorCode::not_found);
  EXPECT_EQ(tre.replacement_reports(kImsiB, pcid).error().code, ErrorCode::not_found);
  EXPECT_EQ(tre.replacement_reports(kImsiB, kImsiB).error().code, ErrorCode::not_found);
  EXPECT_EQ(tre.replacement_reports(kImsiB, "001019999999999").error().code, ErrorCode::not_found);
  EXPECT_EQ(tre.status().generation, generation);
  EXPECT_EQ(tre.verify_audit()->log.entries.size(), audit->log.entries.size());
}

TEST_F(TreTest, InstallReplacingRefusedChangesNothingButTheAuditLog) {
  Tre tre = open();
  install(tre, kImsiA, "sho-a", 1);
  ASSERT_TRUE(tre.apply(Action::activate, kImsiA));
  ASSERT_TRUE(tre.apply(Action::select, kImsiA));
  ASSERT_TRUE(tre.record_registration(kNonce));
  const auto good = world().document(device_id(), kImsiB, "sho-b", 1, kNonce);
  const ByteVec pkg = world().seal(good, world().signer("sho-b"), tre.platform_certificate());
  Bytes<16> wrong_nonce = kNonce;
  wrong_nonce[0] ^= 0xff;
  struct Case {
    std::string name;
    ByteVec pkg;
    std::string replaced;
    ErrorCode code;
  };
  const std::vector<Case> cases = {
      {"selected", pkg, kImsiA, ErrorCode::transition_refused},
      {"the pcid", pkg, kPcid, ErrorCode::not_found},
      {"unknown", pkg, "001020000000099", ErrorCode::not_found},
      {"rogue signer",
       world().seal(world().document(device_id(), kImsiB, "sho-a", 2, kNonce),
                    world().rogue_signer(), tre.platform_certificate()),
       kImsiA, ErrorCode::chain_invalid},
      {"wrong nonce",
       world().seal(world().document(device_id(), kImsiB, "sho-b", 1, wrong_nonce),
                    world().signer("sho-b"), tre.platform_certificate()),
       kImsiA, ErrorCode::nonce_mismatch},
      {"garbage", ByteVec{0x30, 0x03, 0x02, 0x01, 0x00}, kImsiA, ErrorCode::bad_format},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string before = registry_of(tre);
    const auto entries = tre.status().audit_entries;
    auto out = tre.install_replacing(c.pkg, c.replaced);
    ASSERT_FALSE(out.install.result);
    EXPECT_EQ(out.install.result.error().code, c.code) << out.install.result.error().message;
    EXPECT_EQ(registry_of(tre), before);
    EXPECT_EQ(tre.status().audit_entries, entries + 1);
    EXPECT_TRUE(out.discard_report.empty());
    EXPECT_TRUE(out.discard_notice.empty());
    auto report = verify_status_report(out.install.report, tre.platform_certificate());
    ASSERT_TRUE(report) << report.error().message;
    EXPECT_EQ(report->outcome, to_string(c.code));
  }
  // Deselected, the same package replaces it.
  ASSERT_TRUE(tre.apply(Action::deselect, kImsiA));
  EXPECT_TRUE(tre.install_replacing(pkg, kImsiA).install.result);
  EXPECT_EQ(tre.status().state, pki::TreState::provisioned);
}

TEST_F(TreTest, TheBootstrapKeyIsThePinsAndReadingItChangesNothing) {
  Tre tre = open();
  const std::string registry = registry_of(tre);
  const auto entries = tre.status().audit_entries;
  auto key = tre.bootstrap_key();
  ASSERT_TRUE(key) << key.error().message;
  auto expected = derive_bootstrap_key("12345678", bundle_->device_id);  // World's bundles
  ASSERT_TRUE(expected);
  EXPECT_EQ(key->get(), expected->get());
  // A read: no commit, no audit entry (the key must never reach the audit log).
  EXPECT_EQ(registry_of(tre), registry);
  EXPECT_EQ(tre.status().audit_entries, entries);
  auto audit = read_text_file(dir_ + "/audit.log");
  ASSERT_TRUE(audit);
  EXPECT_EQ(audit->find(to_hex(key->get())), std::string::npos);
  EXPECT_EQ(audit->find("12345678"), std::string::npos);
}

TEST_F(TreTest, NeitherThePinNorTheKeyIsStoredInTheClear) {
  Tre tre = open();
  auto key = tre.bootstrap_key();
  ASSERT_TRUE(key);
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    if (!entry.is_regular_file()) continue;
    auto bytes = read_file(entry.path().string());
    ASSERT_TRUE(bytes) << entry.path();
    const std::string text(bytes->begin(), bytes->end());
    EXPECT_EQ(text.find("12345678"), std::string::npos) << entry.path();
    const std::string raw(key->get().begin(), key->get().end());
    EXPECT_EQ(text.find(raw), std::string::npos) << entry.path();
  }
}

TEST_F(TreTest, AttestationReportsMeasurementsOverTheNonce) {
  Tre tre = open();
  const ByteVec nonce(32, 0x5a);
  auto text = tre.attest(nonce);
  ASSERT_TRUE(text) << text.error().message;
  auto report = pki::decode_signed_report(*text);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->report.device_id, device_id());
  EXPECT_EQ(report->report.nonce, nonce);
  EXPECT_EQ(report->report.state, pki::TreState::pristine);
  ASSERT_EQ(report->report.measurements.size(), 2u);
  EXPECT_EQ(report->report.measurements[0].name, "tre.binary");
  EXPECT_EQ(report->report.measurements[1].name, "tre.config");
  EXPECT_TRUE(
      pki::ecdsa_verify(X509_get0_pubkey(tre.platform_certificate()),
                        ByteView(reinterpret_cast<const std::uint8_t*>(report->signed_bytes.data()),
                                 report->signed_bytes.size()),
                        report->signature));
  auto short_nonce = tre.attest(ByteVec(8, 1));
  ASSERT_FALSE(short_nonce);
  EXPECT_EQ(short_nonce.error().code, ErrorCode::invalid_argument);
}

// The binary's measurement is remembered per version of the file (tre.cpp MeasurementCache):
// changing the file in place or replacing it must still change what the next report says.
TEST_F(TreTest, AChangedBinaryIsMeasuredAfresh) {
  const std::string binary = dir_ + ".binary";
  auto write_old = [&](std::string_view bytes) {
    std::ofstream(binary, std::ios::trunc) << bytes;
    // Old enough to be remembered (a file changed in the last seconds never is).
    const auto old = std::filesystem::file_time_type::clock::now() - std::chrono::hours(1);
    std::filesystem::last_write_time(binary, old);
  };
  auto measured = [&]() -> Bytes<32> {
    Options o{dir_};
    o.binary = binary;
    auto t = Tre::open(o);
    EXPECT_TRUE(t) << t.error().message;
    auto text = t->attest(ByteVec(16, 3));
    EXPECT_TRUE(text) << text.error().message;
    auto report = pki::decode_signed_report(*text);
    EXPECT_TRUE(report) << report.error().message;
    return report->report.measurements.at(0).sha256;
  };
  write_old("version one");
  const Bytes<32> one = measured();
  EXPECT_EQ(one, pki::sha256(bytes_of("version one")));
  EXPECT_EQ(measured(), one);
  write_old("version two");  // in place: same inode, new times
  EXPECT_EQ(measured(), pki::sha256(bytes_of("version two")));
  std::ofstream(binary + ".new") << "version three";
  std::filesystem::rename(binary + ".new", binary);  // replaced: another inode
  EXPECT_EQ(measured(), pki::sha256(bytes_of("version three")));
  std::ofstream(binary, std::ios::trunc) << "version four";  // just now: never remembered
  EXPECT_EQ(measured(), pki::sha256(bytes_of("version four")));
}

TEST_F(TreTest, TombstonesAreBoundedSoTheRegistryNeverFillsUp) {
  Tre tre = open();
  for (std::uint64_t seq = 1; seq <= 40; ++seq) {
    install(tre, "0010200000" + std::to_string(10000 + seq), "sho-a", seq);
    ASSERT_TRUE(tre.pristine());
  }
  const Status s = tre.status();
  EXPECT_EQ(s.credentials.size(), 1u + 16u);  // the PCID and the latest 16 tombstones
  EXPECT_EQ(s.credentials.back().id, "001020000010040");
  EXPECT_TRUE(tre.fsck());
}

// ---- Tamper evidence -------------------------------------------------------------------------

void flip_byte(const std::string& path, std::size_t from_end) {
  auto data = read_file(path);
  ASSERT_TRUE(data);
  (*data)[data->size() - from_end] ^= 0x01;
  ASSERT_TRUE(write_file_atomic(path, *data, 0600));
}

TEST_F(TreTest, AnEditedStateLocksTheTreDownForGood) {
  {
    Tre tre = open();
    install(tre, kImsiA, "sho-a", 1);
  }
  const auto good = read_file(dir_ + "/state.sealed");
  ASSERT_TRUE(good);
  flip_byte(dir_ + "/state.sealed", 20);
  {
    Tre tre = open();
    const Status s = tre.status();
    EXPECT_EQ(s.state, pki::TreState::lockdown);
    EXPECT_NE(s.lockdown_reason.find("store_tampered"), std::string::npos) << s.lockdown_reason;
    EXPECT_TRUE(s.credentials.empty());
    EXPECT_EQ(tre.install(ByteVec{1}).result.error().code, ErrorCode::lockdown);
    EXPECT_EQ(tre.apply(Action::activate, kImsiA).error().code, ErrorCode::lockdown);
    EXPECT_EQ(tre.pristine().error().code, ErrorCode::lockdown);
    EXPECT_EQ(tre.install_report(kImsiA).error().code, ErrorCode::lockdown);
    // The bootstrap key is not handed out by a TRE that cannot vouch for its own state.
    auto key = tre.bootstrap_key();
    ASSERT_FALSE(key);
    EXPECT_EQ(key.error().code, ErrorCode::lockdown);
    // Still readable: attestation (which tells the PVA) and the audit log.
    auto text = tre.attest(ByteVec(16, 7));
    ASSERT_TRUE(text);
    EXPECT_EQ(pki::decode_signed_report(*text)->report.state, pki::TreState::lockdown);
    auto audit = tre.verify_audit();
    ASSERT_TRUE(audit) << audit.error().message;
    EXPECT_FALSE(audit->tail_checked);
    EXPECT_EQ(audit->log.entries.back().event.event, "lockdown");
  }
  // Putting the good file back does not lift the lockdown.
  ASSERT_TRUE(write_file_atomic(dir_ + "/state.sealed", *good, 0600));
  EXPECT_EQ(open().status().state, pki::TreState::lockdown);
}

TEST_F(TreTest, ARolledBackDirectoryIsDetected) {
  const std::string snapshot = world().path("snapshot-" + std::to_string(counter_));
  fs::copy(dir_, snapshot, fs::copy_options::recursive);
  {
    Tre tre = open();
    install(tre, kImsiA, "sho-a", 1);
  }
  // Restore every file but the backend's counter (a TPM's NV counter cannot be copied back).
  for (const char* f : {"state.sealed", "audit.log"}) {
    fs::copy_file(snapshot + "/" + f, dir_ + "/" + f, fs::copy_options::overwrite_existing);
  }
  Tre tre = open();
  EXPECT_EQ(tre.status().state, pki::TreState::lockdown);
  EXPECT_NE(tre.status().lockdown_reason.find("rollback_detected"), std::string::npos);
}

TEST_F(TreTest, AnEditedAuditLogLocksTheTreDown) {
  {
    Tre tre = open();
    install(tre, kImsiA, "sho-a", 1);
  }
  auto text = read_text_file(dir_ + "/audit.log");
  ASSERT_TRUE(text);
  const auto pos = text->find("\"register\"");
  ASSERT_NE(pos, std::string::npos);
  text->replace(pos, 10, "\"registe_\"");
  ASSERT_TRUE(write_file_atomic(dir_ + "/audit.log", *text, 0600));
  EXPECT_EQ(open().status().state, pki::TreState::lockdown);
}

TEST_F(TreTest, AMissingOrTornLastAuditLineIsRedone) {
  {
    Tre tre = open();
    install(tre, kImsiA, "sho-a", 1);
  }
  auto text = read_text_file(dir_ + "/audit.log");
  ASSERT_TRUE(text);
  // Drop the last line and leave half of it, as a crash during the append would.
  const std::string body = text->substr(0, text->size() - 1);
  const std::size_t last = body.rfind('\n') + 1;
  const std::string torn = text->substr(0, last) + body.substr(last, (body.size() - last) / 2);
  ASSERT_TRUE(write_file_atomic(dir_ + "/audit.log", torn, 0600));
  Tre tre = open();
  EXPECT_EQ(tre.status().state, pki::TreState::provisioned);
  auto fsck = tre.fsck();
  ASSERT_TRUE(fsck) << fsck.error().message;
  EXPECT_TRUE(fsck->repaired_audit);
  EXPECT_EQ(*read_text_file(dir_ + "/audit.log"), *text);
}

TEST_F(TreTest, ACorruptedCredentialIsBlockedAtBoot) {
  {
    Tre tre = open();
    install(tre, kImsiA, "sho-a", 1);
    ASSERT_TRUE(tre.apply(Action::activate, kImsiA));
  }
  {
    // A fault the seal cannot see (the state was sealed with a wrong K): rewrite the state with
    // the backend itself.
    OsRandom rng;
    auto backend = SoftwareBackend::open(dir_, rng);
    ASSERT_TRUE(backend);
    StateFile file(dir_, **backend);
    auto state = file.load();
    ASSERT_TRUE(state);
    Credential* c = state->find(kImsiA);
    ASSERT_NE(c, nullptr);
    c->doc->k.mut()[0] ^= 1;
    state->generation += 1;
    ASSERT_TRUE(file.commit(*state));
  }
  Tre tre = open();
  const Status s = tre.status();
  ASSERT_EQ(s.blocked_at_boot, std::vector<std::string>{kImsiA});
  EXPECT_EQ(s.credentials.at(1).state, McimState::blocked);
  EXPECT_EQ(s.credentials.at(0).state, McimState::activated);  // the PCID is untouched
  auto audit = tre.verify_audit();
  ASSERT_TRUE(audit);
  EXPECT_EQ(audit->log.entries.back().event.event, "integrity-check");
  EXPECT_EQ(audit->log.entries.back().event.outcome, "integrity_failed");
  EXPECT_TRUE(tre.fsck());
}

}  // namespace
}  // namespace mcim::tre
