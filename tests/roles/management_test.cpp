// Remote management at the DPF (roles/ro/management.h) over the in-memory Database with a real
// TRE (tests/tre/tre_fixture.h): who may queue an instruction for which device, what the device
// collects, the verification of the TRE's signed answer, its relay, and that every refusal leaves
// the queue as it was and relays nothing.
#include "roles/ro/management.h"

#include <gtest/gtest.h>

#include <mutex>

#include "../tre/tre_fixture.h"
#include "store/memory.h"
#include "tre/tre.h"

namespace mcim::ro {
namespace {

using tre::testing::World;

constexpr Bytes<16> kNonce = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
const std::string kPcid = "001019990000011";
const std::string kImsi = "001020000000011";

class RecordingResults final : public InstructionResultRelay {
 public:
  Result<void> relay_instruction_result(const RelayedInstructionResult& r) override {
    relayed.push_back(r);
    return {};
  }
  std::vector<RelayedInstructionResult> relayed;
};

class ManagementTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { world_ = new World(); }
  static void TearDownTestSuite() {
    delete world_;
    world_ = nullptr;
  }
  static World& world() { return *world_; }

  void SetUp() override {
    auto ops = pki::TrustAnchors::from_certs({world().operators().cert()});
    auto sup = pki::TrustAnchors::from_certs({world().supplier().cert()});
    ASSERT_TRUE(ops && sup);
    operator_roots_.emplace(std::move(*ops));
    supplier_roots_.emplace(std::move(*sup));
    management_.emplace(db_->registrations(), db_->audit(), queue_, relay_, *operator_roots_,
                        *supplier_roots_, world().clock());
    tre_ = world().make_tre(kPcid);
    ASSERT_TRUE(tre_);
    device_ = tre_->status().device_id;
    store::Registration r;
    r.pcid = kPcid;
    r.device_id = device_;
    r.sho = "sho-a";
    r.dpf_url = "https://dpf.ro.example/mcim";
    r.apn = "m2m-prov.ro";
    ASSERT_TRUE(db_->registrations().put(r));
    auto doc = world().document(device_, kImsi, "sho-a", 1, kNonce);
    ASSERT_TRUE(tre_->record_registration(kNonce));
    ASSERT_TRUE(
        tre_->install(world().seal(doc, world().signer("sho-a"), tre_->platform_certificate()))
            .result);
    ASSERT_TRUE(tre_->apply(tre::Action::activate, kImsi));
  }

  std::string instruction(const std::string& op, tre::Action action, std::uint64_t seq,
                          const std::string& device = "") {
    return world().instruction(world().signer(op), device.empty() ? device_ : device, kImsi, action,
                               seq);
  }
  InstructionHandover handover(std::string text, std::string id = "ins-1") {
    return InstructionHandover{kPcid, device_, std::move(id), std::move(text)};
  }
  std::vector<X509*> chain() { return {tre_->platform_certificate()}; }
  std::optional<InstructionStatus> status_of(std::string_view id) {
    auto q = queue_.find(id);
    if (!q || !*q) return std::nullopt;
    return (*q)->status;
  }
  std::vector<QueuedInstruction> collect(const store::Registration& r) {
    auto collected = management_->collect(r);
    EXPECT_TRUE(collected) << collected.error().message;
    return collected ? *collected : std::vector<QueuedInstruction>{};
  }

  static World* world_;
  std::unique_ptr<store::Database> db_ = store::make_memory_database();
  InstructionQueue queue_{db_->instructions()};
  RecordingResults relay_;
  std::optional<pki::TrustAnchors> operator_roots_, supplier_roots_;
  std::optional<Management> management_;
  std::optional<tre::Tre> tre_;
  std::string device_;
};
World* ManagementTest::world_ = nullptr;

TEST_F(ManagementTest, AnInstructionTravelsToItsTreAndTheSignedAnswerToTheSho) {
  auto queued = management_->queue(handover(instruction("sho-a", tre::Action::block, 7)), "sho-a");
  ASSERT_TRUE(queued) << queued.error().message;
  EXPECT_EQ(queued->sequence, 7u);
  EXPECT_EQ(queued->action, "block");
  EXPECT_EQ(queued->credential, kImsi);

  auto reg = db_->registrations().find(kPcid);
  ASSERT_TRUE(reg && *reg);
  auto collected = collect(**reg);
  ASSERT_EQ(collected.size(), 1u);
  EXPECT_EQ(status_of("ins-1"), InstructionStatus::delivered);
  auto applied = tre_->apply_instruction(collected[0].instruction);
  ASSERT_TRUE(applied.result) << applied.result.error().message;

  auto answered = management_->answer("ins-1", applied.report, chain());
  ASSERT_TRUE(answered) << answered.error().message;
  EXPECT_EQ(answered->outcome, "ok");
  EXPECT_EQ(answered->state, "blocked");
  EXPECT_EQ(status_of("ins-1"), InstructionStatus::answered);
  ASSERT_EQ(relay_.relayed.size(), 1u);
  EXPECT_EQ(relay_.relayed[0].sho, "sho-a");
  EXPECT_EQ(relay_.relayed[0].signed_report, applied.report);
  // Answered: collected no more, and a second answer is refused.
  EXPECT_TRUE(collect(**reg).empty());
  auto again = management_->answer("ins-1", applied.report, chain());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::transition_refused);
  EXPECT_EQ(relay_.relayed.size(), 1u);
}

TEST_F(ManagementTest, QueueRefusalsLeaveTheQueueAsItWas) {
  ASSERT_TRUE(
      management_->queue(handover(instruction("sho-a", tre::Action::block, 1), "ins-0"), "sho-a"));
  auto rogue = world().instruction(world().rogue_signer(), device_, kImsi, tre::Action::block, 2);
  struct Case {
    const char* name;
    InstructionHandover handover;
    std::string caller;
    ErrorCode code;
  };
  InstructionHandover other_pcid = handover(instruction("sho-a", tre::Action::block, 3));
  other_pcid.pcid = "001019990000099";
  InstructionHandover other_device = handover(instruction("sho-a", tre::Action::block, 3));
  other_device.device_id = "dev-other";
  const Case cases[] = {
      {"bad id", handover(instruction("sho-a", tre::Action::block, 3), "a b"), "sho-a",
       ErrorCode::invalid_argument},
      {"unregistered pcid", other_pcid, "sho-a", ErrorCode::not_found},
      {"another SHO's registration", handover(instruction("sho-b", tre::Action::block, 3)), "sho-b",
       ErrorCode::access_denied},
      {"another device of the registration", other_device, "sho-a", ErrorCode::wrong_recipient},
      {"not an instruction", handover("{\"instruction\":1}"), "sho-a", ErrorCode::bad_format},
      {"signed by another operator", handover(instruction("sho-b", tre::Action::block, 3)), "sho-a",
       ErrorCode::access_denied},
      {"for another device", handover(instruction("sho-a", tre::Action::block, 3, "dev-other")),
       "sho-a", ErrorCode::wrong_recipient},
      {"rogue signer", handover(rogue), "sho-a", ErrorCode::chain_invalid},
      {"known id", handover(instruction("sho-a", tre::Action::block, 3), "ins-0"), "sho-a",
       ErrorCode::already_exists},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = management_->queue(c.handover, c.caller);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, c.code) << r.error().message;
    EXPECT_EQ(queue_.size().value_or(0), 1u);
    EXPECT_EQ(status_of("ins-0"), InstructionStatus::pending);
  }
  // Each refusal is on the DPF's record.
  auto audit = db_->audit().recent(20);
  ASSERT_TRUE(audit);
  std::size_t refused = 0;
  for (const auto& a : *audit) refused += a.event == "instruction" && a.outcome != "ok";
  EXPECT_EQ(refused, std::size(cases));
}

TEST_F(ManagementTest, AnswerRefusalsLeaveTheInstructionDeliveredAndRelayNothing) {
  ASSERT_TRUE(management_->queue(handover(instruction("sho-a", tre::Action::block, 5)), "sho-a"));
  auto reg = db_->registrations().find(kPcid);
  auto text = collect(**reg).at(0).instruction;
  auto applied = tre_->apply_instruction(text);
  ASSERT_TRUE(applied.result);
  // Another TRE's answer to an instruction of the same sequence.
  auto other = world().make_tre("001019990000012");
  ASSERT_TRUE(other);
  auto foreign = other->apply_instruction(instruction("sho-a", tre::Action::block, 5));
  // The TRE's answer to another instruction (sequence 6).
  auto later = tre_->apply_instruction(instruction("sho-a", tre::Action::unblock, 6));
  std::string tampered = applied.report;
  tampered.replace(tampered.find("blocked"), 7, "deleted");
  struct Case {
    const char* name;
    std::string id, report;
    std::vector<X509*> chain;
    ErrorCode code;
  };
  const Case cases[] = {
      {"unknown instruction", "ins-9", applied.report, chain(), ErrorCode::not_found},
      {"another TRE's chain",
       "ins-1",
       applied.report,
       {other->platform_certificate()},
       ErrorCode::wrong_recipient},
      {"another TRE's answer", "ins-1", foreign.report, chain(), ErrorCode::signature_invalid},
      {"the answer to another instruction", "ins-1", later.report, chain(),
       ErrorCode::invalid_argument},
      {"tampered", "ins-1", tampered, chain(), ErrorCode::signature_invalid},
      {"not a report", "ins-1", "{}", chain(), ErrorCode::bad_format},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = management_->answer(c.id, c.report, c.chain);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, c.code) << r.error().message;
    EXPECT_EQ(status_of("ins-1"), InstructionStatus::delivered);
    EXPECT_TRUE(relay_.relayed.empty());
  }
  ASSERT_TRUE(management_->answer("ins-1", applied.report, chain()));
}

// The queue's bound over the database (the store's own tests cover every backend).
TEST(InstructionQueue, AFullQueuePushesOutTheOldestAnsweredThenTheOldest) {
  auto db = store::make_memory_database();
  InstructionQueue q(db->instructions(), 2);
  auto entry = [](const char* id) {
    QueuedInstruction e;
    e.instruction_id = id;
    e.device_id = "dev-1";
    return e;
  };
  auto known = [&](const char* id) { return q.find(id).value_or(std::nullopt).has_value(); };
  ASSERT_TRUE(q.put(entry("a")));
  ASSERT_TRUE(q.put(entry("b")));
  ASSERT_TRUE(q.answer("b", "report", {}));
  ASSERT_TRUE(q.put(entry("c")));  // pushes out b, answered
  EXPECT_TRUE(known("a"));
  EXPECT_FALSE(known("b"));
  ASSERT_TRUE(q.put(entry("d")));  // none answered: pushes out a, the oldest
  EXPECT_FALSE(known("a"));
  EXPECT_EQ(q.size().value_or(0), 2u);
  EXPECT_EQ(q.put(entry("c")).error().code, ErrorCode::already_exists);
  EXPECT_EQ(q.answer("zz", "r", {}).error().code, ErrorCode::not_found);
  const auto collected = q.collect("dev-1", 1, {});
  ASSERT_TRUE(collected);
  ASSERT_EQ(collected->size(), 1u);
  EXPECT_EQ((*collected)[0].instruction_id, "c");
  EXPECT_TRUE(q.collect("dev-2", 16, {}).value().empty());
}

}  // namespace
}  // namespace mcim::ro
