// The DRF (roles/ro/drf.h) over the in-memory Database: who may register a PCID, what discovery
// answers (a bootstrap message the device verifies with its PIN), and the arrival notice.
#include "roles/ro/drf.h"

#include <gtest/gtest.h>

#include "common/hex.h"
#include "roles/ro/bootstrap.h"
#include "store/memory.h"

namespace mcim::ro {
namespace {

using std::chrono::hours;
using std::chrono::seconds;

const std::string kPcid = "001019990000001";
const std::string kDevice = "dev-001019990000001";
const std::string kPin = "48261937";
const TimePoint kT0 = std::chrono::sys_seconds(seconds(1'800'000'000));

class RecordingNotifier final : public ArrivalNotifier {
 public:
  Result<void> device_arrived(const Arrival& a) override {
    arrivals.push_back(a);
    if (failing) return fail(ErrorCode::io_error, "sho unreachable");
    return {};
  }
  std::vector<Arrival> arrivals;
  bool failing = false;
};

store::Registration registration(const std::string& sho = "sho-a") {
  store::Registration r;
  r.pcid = kPcid;
  r.device_id = kDevice;
  r.sho = sho;
  r.dpf_url = "https://dpf.ro.example/mcim";
  r.dpf_key_pin.fill(0x42);
  r.apn = "m2m-prov.ro";
  return r;
}

class DrfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<store::PcidSubscription> batch(2);
    batch[0].pcid = kPcid;
    batch[1].pcid = "001019990000002";
    ASSERT_TRUE(db_->pcids().add_batch(batch));
  }
  Result<void> register_pcid(const store::Registration& r, const std::string& caller,
                             const std::string& pin = kPin) {
    return drf_.register_pcid(r, pin, caller);
  }
  std::vector<std::string> audit_text() {
    std::vector<std::string> out;
    const auto records = db_->audit().recent(1000);
    EXPECT_TRUE(records);
    for (const auto& r : *records) {
      out.push_back(r.service + "|" + r.event + "|" + r.subject + "|" + r.principal + "|" +
                    r.outcome + "|" + r.detail);
    }
    return out;
  }

  FakeClock clock_{kT0};
  OsRandom rng_;
  RecordingNotifier notifier_;
  std::unique_ptr<store::Database> db_ = store::make_memory_database();
  Drf drf_{*db_, notifier_, clock_, rng_};
};

TEST_F(DrfTest, DiscoveryAnswersABootstrapTheDeviceVerifies) {
  ASSERT_TRUE(register_pcid(registration(), "sho-a"));
  clock_.advance(seconds(30));
  auto text = drf_.discover(kPcid, kPcid);
  ASSERT_TRUE(text) << text.error().message;
  auto fields = verify_bootstrap(*text, kPin, kDevice, clock_.now(), seconds(300));
  ASSERT_TRUE(fields) << fields.error().message;
  EXPECT_EQ(fields->pcid, kPcid);
  EXPECT_EQ(fields->device_id, kDevice);
  EXPECT_EQ(fields->sho, "sho-a");
  EXPECT_EQ(fields->dpf_url, "https://dpf.ro.example/mcim");
  EXPECT_EQ(fields->dpf_key_pin, registration().dpf_key_pin);
  EXPECT_EQ(fields->apn, "m2m-prov.ro");
  EXPECT_EQ(fields->issued, std::chrono::floor<seconds>(kT0) + seconds(30));
  // A fresh nonce each time.
  auto again = drf_.discover(kPcid, kPcid);
  ASSERT_TRUE(again);
  EXPECT_NE(*again, *text);
  EXPECT_NE(verify_bootstrap(*again, kPin, kDevice, clock_.now(), seconds(300))->nonce,
            fields->nonce);
  // The wrong PIN does not verify it.
  EXPECT_EQ(verify_bootstrap(*text, "48261938", kDevice, clock_.now(), seconds(300)).error().code,
            ErrorCode::signature_invalid);
}

TEST_F(DrfTest, OnlyTheNamedShoRegistersAndOnlyTheHolderReplaces) {
  EXPECT_EQ(register_pcid(registration("sho-a"), "sho-b").error().code, ErrorCode::access_denied);
  EXPECT_FALSE(db_->registrations().find(kPcid)->has_value());
  ASSERT_TRUE(register_pcid(registration("sho-a"), "sho-a"));
  EXPECT_EQ(register_pcid(registration("sho-b"), "sho-b").error().code, ErrorCode::access_denied);
  EXPECT_EQ((*db_->registrations().find(kPcid))->sho, "sho-a");
  // The holder re-points it (F4: a new DPF).
  auto moved = registration("sho-a");
  moved.dpf_url = "https://dpf2.ro.example/mcim";
  ASSERT_TRUE(register_pcid(moved, "sho-a"));
  EXPECT_EQ((*db_->registrations().find(kPcid))->dpf_url, "https://dpf2.ro.example/mcim");
  EXPECT_EQ(drf_.unregister(kPcid, "sho-b").error().code, ErrorCode::access_denied);
  ASSERT_TRUE(drf_.unregister(kPcid, "sho-a"));
  EXPECT_EQ(drf_.unregister(kPcid, "sho-a").error().code, ErrorCode::not_found);
  ASSERT_TRUE(register_pcid(registration("sho-b"), "sho-b"));
}

// F5: the holder hands the registration over; nobody else can move it, and a refused move changes
// nothing. After it the new SHO holds it (its discovery, its re-registration), the old one nothing.
TEST_F(DrfTest, OnlyTheHolderTransfersAndTheDeviceKeepsItsPin) {
  ASSERT_TRUE(register_pcid(registration("sho-a"), "sho-a"));
  struct Row {
    const char* pcid;
    const char* caller;
    const char* to;
    ErrorCode code;
  };
  const Row refused[] = {
      {"001019990000001", "sho-b", "sho-b", ErrorCode::access_denied},  // the receiver itself
      {"001019990000001", "sho-c", "sho-b", ErrorCode::access_denied},  // a third party
      {"001019990000001", "sho-a", "sho-a", ErrorCode::invalid_argument},
      {"001019990000001", "sho-a", "not an id", ErrorCode::invalid_argument},
      {"001019990000001", "sho-a", "", ErrorCode::invalid_argument},
      {"001019990000002", "sho-a", "sho-b", ErrorCode::not_found},
  };
  for (const Row& row : refused) {
    SCOPED_TRACE(std::string(row.caller) + " to " + row.to);
    auto r = drf_.transfer(row.pcid, row.caller, row.to);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, row.code);
    EXPECT_EQ((*db_->registrations().find(kPcid))->sho, "sho-a");
  }
  clock_.advance(seconds(5));
  ASSERT_TRUE(drf_.transfer(kPcid, "sho-a", "sho-b"));
  const auto moved = *db_->registrations().find(kPcid);
  EXPECT_EQ(moved->sho, "sho-b");
  EXPECT_EQ(moved->created, std::chrono::floor<seconds>(kT0) + seconds(5));
  EXPECT_EQ(drf_.transfer(kPcid, "sho-a", "sho-c").error().code, ErrorCode::access_denied);
  EXPECT_EQ(register_pcid(registration("sho-a"), "sho-a").error().code, ErrorCode::access_denied);
  // The bootstrap still verifies under the device's PIN, and names the new SHO.
  auto text = drf_.discover(kPcid, kPcid);
  ASSERT_TRUE(text);
  auto fields = verify_bootstrap(*text, kPin, kDevice, clock_.now(), seconds(300));
  ASSERT_TRUE(fields) << fields.error().message;
  EXPECT_EQ(fields->sho, "sho-b");
  ASSERT_TRUE(register_pcid(registration("sho-b"), "sho-b"));
  const auto audit = audit_text();
  EXPECT_EQ(std::count_if(audit.begin(), audit.end(),
                          [](const std::string& a) {
                            return a.starts_with("drf|transfer|") &&
                                   a.find("|operator:sho-a|ok|to operator:sho-b") !=
                                       std::string::npos;
                          }),
            1);
}

TEST_F(DrfTest, RegistrationIsValidated) {
  auto bad = [&](auto change, const std::string& pin = kPin) {
    auto r = registration();
    change(r);
    auto out = register_pcid(r, "sho-a", pin);
    EXPECT_FALSE(out);
    return out ? ErrorCode::internal : out.error().code;
  };
  EXPECT_EQ(bad([](auto& r) { r.dpf_url = "http://dpf.example"; }), ErrorCode::invalid_argument);
  EXPECT_EQ(bad([](auto& r) { r.apn = "bad apn"; }), ErrorCode::invalid_argument);
  EXPECT_EQ(bad([](auto& r) { r.device_id = ""; }), ErrorCode::invalid_argument);
  EXPECT_EQ(bad([](auto& r) { r.pcid = "12"; }), ErrorCode::invalid_argument);
  EXPECT_EQ(bad([](auto&) {}, "12a4"), ErrorCode::invalid_argument);
  EXPECT_EQ(bad([](auto& r) { r.pcid = "001019990000077"; }), ErrorCode::not_found);
  EXPECT_FALSE(db_->registrations().find(kPcid)->has_value());
}

TEST_F(DrfTest, TheStoredRegistrationHoldsTheDerivedKeyNotThePin) {
  ASSERT_TRUE(register_pcid(registration(), "sho-a"));
  auto stored = *db_->registrations().find(kPcid);
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->bootstrap_key.get(), derive_bootstrap_key(kPin, kDevice)->get());
  EXPECT_EQ(stored->created, std::chrono::floor<seconds>(kT0));
  (void)register_pcid(registration(), "sho-a", "1");  // refused: the bad PIN is not echoed
  for (const auto& line : audit_text()) {
    EXPECT_EQ(line.find(kPin), std::string::npos) << line;
    EXPECT_EQ(line.find(to_hex(stored->bootstrap_key.get()).substr(0, 12)), std::string::npos);
  }
}

TEST_F(DrfTest, DiscoveryForAnotherPcidThanTheSessionsIsAccessDenied) {
  ASSERT_TRUE(register_pcid(registration(), "sho-a"));
  EXPECT_EQ(drf_.discover(kPcid, "001019990000002").error().code, ErrorCode::access_denied);
  EXPECT_EQ(drf_.discover(kPcid, "").error().code, ErrorCode::access_denied);
  EXPECT_TRUE(notifier_.arrivals.empty());
}

TEST_F(DrfTest, UnregisteredPcidIsNotFound) {
  EXPECT_EQ(drf_.discover("001019990000002", "001019990000002").error().code, ErrorCode::not_found);
  EXPECT_TRUE(notifier_.arrivals.empty());
}

TEST_F(DrfTest, EachDiscoveryNoticesTheShoOnce) {
  ASSERT_TRUE(register_pcid(registration(), "sho-a"));
  ASSERT_TRUE(drf_.discover(kPcid, kPcid));
  ASSERT_EQ(notifier_.arrivals.size(), 1u);
  EXPECT_EQ(notifier_.arrivals[0].pcid, kPcid);
  EXPECT_EQ(notifier_.arrivals[0].device_id, kDevice);
  EXPECT_EQ(notifier_.arrivals[0].sho, "sho-a");
  EXPECT_EQ(notifier_.arrivals[0].time, std::chrono::floor<seconds>(kT0));
  ASSERT_TRUE(drf_.discover(kPcid, kPcid));
  EXPECT_EQ(notifier_.arrivals.size(), 2u);
  // The notice failing does not withhold the bootstrap; it is on the record.
  notifier_.failing = true;
  ASSERT_TRUE(drf_.discover(kPcid, kPcid));
  EXPECT_EQ(notifier_.arrivals.size(), 3u);
  const auto lines = audit_text();
  EXPECT_EQ(lines[0], "drf|arrival-notice|" + kPcid + "|drf|io_error|sho unreachable");
  EXPECT_EQ(lines[1],
            "drf|discover|" + kPcid + "|pcid:" + kPcid + "|ok|device " + kDevice + ", sho sho-a");
}

// F4: each PIN tried is counted before it is checked, so that racing orders cannot try more than
// the limit; a right one is taken back; counts leave the window and their PCID is forgotten.
TEST(ChangeAttemptsTest, AdmitsAtMostTheLimitWithinTheWindow) {
  ChangeAttempts attempts;
  DrfConfig config;
  config.change_attempts = 2;
  config.change_window = seconds(60);
  const store::Time t0 = std::chrono::floor<seconds>(kT0);
  EXPECT_TRUE(attempts.admit("pcid-1", t0, config));
  EXPECT_TRUE(attempts.admit("pcid-1", t0, config));  // both in flight: neither settled yet
  EXPECT_FALSE(attempts.admit("pcid-1", t0, config));
  EXPECT_TRUE(attempts.admit("pcid-2", t0, config));  // per PCID
  attempts.forgive("pcid-1", t0);                      // one was the right PIN
  EXPECT_TRUE(attempts.admit("pcid-1", t0 + seconds(10), config));
  EXPECT_FALSE(attempts.admit("pcid-1", t0 + seconds(59), config));
  EXPECT_TRUE(attempts.admit("pcid-1", t0 + seconds(60), config));  // t0's left the window
  EXPECT_EQ(attempts.tracked(), 2u);
  attempts.forgive("pcid-2", t0);
  EXPECT_EQ(attempts.tracked(), 1u);
}

}  // namespace
}  // namespace mcim::ro
