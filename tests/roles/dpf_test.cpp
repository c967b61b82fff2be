// The DPF (roles/ro/dpf.h) over the in-memory Database with real packages and a real TRE
// (tests/tre/tre_fixture.h): who may hand a package over, who may fetch it, and the status
// report's verification, storage, replay refusal and relay.
#include "roles/ro/dpf.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "../tre/tre_fixture.h"
#include "common/hex.h"
#include "pki/certificate.h"
#include "store/memory.h"
#include "tre/tre.h"

namespace mcim::ro {
namespace {

using tre::testing::World;

constexpr Bytes<16> kNonce = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
const std::string kPcid = "001019990000001";
const std::string kImsi = "001020000000001";

const std::string kRequest = "challenge-1";
const ByteVec kChallenge(32, 0x5a);

// Thread-safe: racing answers relay from several threads.
class RecordingRelay final : public StatusRelay, public AttestationRelay, public DiscardRelay {
 public:
  Result<void> relay_discard(const RelayedDiscard& d) override {
    discards.push_back(d);
    if (failing) return fail(ErrorCode::io_error, "sho unreachable");
    return {};
  }
  std::vector<RelayedDiscard> discards;
  Result<void> relay(const RelayedStatus& s) override {
    relayed.push_back(s);
    if (failing) return fail(ErrorCode::io_error, "sho unreachable");
    return {};
  }
  Result<void> relay_attestation(const RelayedAttestation& a) override {
    std::lock_guard lock(mu);
    attestations.push_back(a);
    if (failing) return fail(ErrorCode::io_error, "sho unreachable");
    return {};
  }
  std::vector<RelayedStatus> relayed;
  std::mutex mu;
  std::vector<RelayedAttestation> attestations;  // guarded by mu
  bool failing = false;
};

class DpfTest : public ::testing::Test {
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
    dpf_.emplace(*db_, Dpf::Relays{relay_, relay_, relay_}, *operator_roots_, *supplier_roots_,
                 world().clock());
    tre_ = make_tre(kPcid);
    device_ = bundle_device_;
    register_pcid(kPcid, device_, "sho-a");
  }

  // A TRE in its own directory from a fresh bundle.
  std::optional<tre::Tre> make_tre(const std::string& pcid) {
    auto t = world().make_tre(pcid);
    if (t) bundle_device_ = t->status().device_id;
    return t;
  }

  void register_pcid(const std::string& pcid, const std::string& device, const std::string& sho) {
    store::Registration r;
    r.pcid = pcid;
    r.device_id = device;
    r.sho = sho;
    r.dpf_url = "https://dpf.ro.example/mcim";
    r.apn = "m2m-prov.ro";
    ASSERT_TRUE(db_->registrations().put(r));
  }

  // A package of `owner` for this test's TRE, signed by `signer`.
  PackageHandover handover(const std::string& owner, const tre::testing::Signer& signer,
                           std::uint64_t sequence = 1) {
    auto doc = world().document(device_, kImsi, owner, sequence, kNonce);
    return PackageHandover{kPcid, device_, doc.package_id,
                           world().seal(doc, signer, tre_->platform_certificate())};
  }

  // The registration of kPcid as stored now.
  store::Registration registration() { return **db_->registrations().find(kPcid); }

  std::vector<X509*> platform_chain() { return {tre_->platform_certificate()}; }
  std::vector<std::string> platform_pems() {
    return {*pki::certificate_pem(tre_->platform_certificate())};
  }

  AttestationAsk ask(std::string request_id = kRequest) {
    return AttestationAsk{kPcid, device_, std::move(request_id), kChallenge};
  }
  std::string attestation() {
    auto r = tre_->attest(kChallenge);
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : std::string();
  }
  // The stored request as text, to show a refusal changed nothing.
  std::string request_state(const std::string& id = kRequest) {
    auto r = db_->attestation_requests().find(id);
    if (!r) return "error";
    if (!*r) return "none";
    return fmt::format("{} {} {} {} {}", (*r)->device_id, (*r)->sho, to_string((*r)->status),
                       to_hex((*r)->nonce), (*r)->answered.time_since_epoch().count());
  }

  static World* world_;
  std::unique_ptr<store::Database> db_ = store::make_memory_database();
  RecordingRelay relay_;
  std::optional<pki::TrustAnchors> operator_roots_, supplier_roots_;
  std::optional<Dpf> dpf_;
  std::optional<tre::Tre> tre_;
  std::string bundle_device_, device_;
};
World* DpfTest::world_ = nullptr;

TEST_F(DpfTest, PackageTravelsToItsTreAndTheReportToTheSho) {
  const auto h = handover("sho-a", world().signer("sho-a"));
  ASSERT_TRUE(dpf_->store_package(h, "sho-a"));
  EXPECT_EQ((*db_->packages().find(h.package_id))->status, store::PackageStatus::pending);

  auto got = dpf_->fetch(registration(), device_);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got->package_id, h.package_id);
  EXPECT_EQ(got->package, h.package);
  EXPECT_EQ((*db_->packages().find(h.package_id))->status, store::PackageStatus::delivered);

  ASSERT_TRUE(tre_->record_registration(kNonce));
  auto installed = tre_->install(got->package);
  ASSERT_TRUE(installed.result) << installed.result.error().message;

  auto report = dpf_->report(h.package_id, installed.report, platform_chain());
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->outcome, "ok");
  EXPECT_EQ(report->credential, kImsi);
  const auto stored = *db_->packages().find(h.package_id);
  EXPECT_EQ(stored->status, store::PackageStatus::reported);
  EXPECT_EQ(stored->report, installed.report);

  ASSERT_EQ(relay_.relayed.size(), 1u);
  EXPECT_EQ(relay_.relayed[0].sho, "sho-a");
  EXPECT_EQ(relay_.relayed[0].device_id, device_);
  EXPECT_EQ(relay_.relayed[0].package_id, h.package_id);
  EXPECT_EQ(relay_.relayed[0].report.outcome, "ok");
  EXPECT_EQ(relay_.relayed[0].signed_report, installed.report);

  // Reported: no longer served, and a second report is a replay.
  EXPECT_EQ(dpf_->fetch(registration(), device_).error().code, ErrorCode::not_found);
  EXPECT_EQ(dpf_->report(h.package_id, installed.report, platform_chain()).error().code,
            ErrorCode::transition_refused);
  EXPECT_EQ(relay_.relayed.size(), 1u);
}

TEST_F(DpfTest, OnlyTheRegisteringShoMayHandOverItsOwnPackage) {
  // Signed by sho-b, handed over by sho-a (who registered the PCID): the signer is not the caller.
  EXPECT_EQ(dpf_->store_package(handover("sho-b", world().signer("sho-b")), "sho-a").error().code,
            ErrorCode::access_denied);
  // sho-b signs its own package, but sho-a holds the registration.
  EXPECT_EQ(dpf_->store_package(handover("sho-b", world().signer("sho-b")), "sho-b").error().code,
            ErrorCode::access_denied);
  // A signer outside the operator roots.
  EXPECT_EQ(dpf_->store_package(handover("sho-a", world().rogue_signer()), "sho-a").error().code,
            ErrorCode::chain_invalid);
  // Broken bytes.
  auto broken = handover("sho-a", world().signer("sho-a"));
  broken.package.resize(broken.package.size() / 2);
  EXPECT_EQ(dpf_->store_package(broken, "sho-a").error().code, ErrorCode::bad_format);
  EXPECT_EQ(dpf_->fetch(registration(), device_).error().code, ErrorCode::not_found);
  // And the refusals are on the record; the device's poll that found nothing is not (a poll
  // changes nothing).
  const auto audit = *db_->audit().recent(10);
  ASSERT_EQ(audit.size(), 4u);  // four hand-overs, newest first
  EXPECT_EQ(audit[0].event, "store-package");
  EXPECT_EQ(audit[0].outcome, "bad_format");
  EXPECT_EQ(audit[3].event, "store-package");
  EXPECT_EQ(audit[3].principal, "operator:sho-a");
  EXPECT_EQ(audit[3].outcome, "access_denied");
  EXPECT_EQ(audit[2].principal, "operator:sho-b");
  // Another device's fetch is refused and recorded.
  EXPECT_EQ(dpf_->fetch(registration(), "device-other").error().code, ErrorCode::access_denied);
  const auto after = *db_->audit().recent(1);
  EXPECT_EQ(after[0].event, "fetch");
  EXPECT_EQ(after[0].outcome, "access_denied");
}

TEST_F(DpfTest, HandoverMustMatchTheRegistration) {
  auto h = handover("sho-a", world().signer("sho-a"));
  h.pcid = "001019990000009";
  EXPECT_EQ(dpf_->store_package(h, "sho-a").error().code, ErrorCode::not_found);
  h = handover("sho-a", world().signer("sho-a"));
  h.device_id = "dev-other";
  EXPECT_EQ(dpf_->store_package(h, "sho-a").error().code, ErrorCode::wrong_recipient);
  h = handover("sho-a", world().signer("sho-a"));
  h.package_id = "bad id";
  EXPECT_EQ(dpf_->store_package(h, "sho-a").error().code, ErrorCode::invalid_argument);
  h = handover("sho-a", world().signer("sho-a"));
  ASSERT_TRUE(dpf_->store_package(h, "sho-a"));
  EXPECT_EQ(dpf_->store_package(h, "sho-a").error().code, ErrorCode::already_exists);
}

TEST_F(DpfTest, PackageIsServedOnlyToItsDeviceAndAgainUntilReported) {
  const auto h = handover("sho-a", world().signer("sho-a"));
  ASSERT_TRUE(dpf_->store_package(h, "sho-a"));
  EXPECT_EQ(dpf_->fetch(registration(), "dev-other").error().code, ErrorCode::access_denied);
  EXPECT_EQ(dpf_->fetch(registration(), "").error().code, ErrorCode::access_denied);
  store::Registration other = registration();
  other.device_id = "dev-other";
  EXPECT_EQ(dpf_->fetch(other, "dev-other").error().code, ErrorCode::not_found);
  // A download that failed is retried: the same package again.
  auto first = dpf_->fetch(registration(), device_);
  auto second = dpf_->fetch(registration(), device_);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->package, second->package);
  EXPECT_EQ(second->package_id, h.package_id);
}

TEST_F(DpfTest, ReportsAreVerified) {
  const auto h = handover("sho-a", world().signer("sho-a"));
  ASSERT_TRUE(dpf_->store_package(h, "sho-a"));
  ASSERT_TRUE(tre_->record_registration(kNonce));
  auto installed = tre_->install(dpf_->fetch(registration(), device_)->package);
  ASSERT_TRUE(installed.result);

  // Another TRE's certificate: not this package's device.
  auto other = make_tre("001019990000002");
  ASSERT_TRUE(other);
  EXPECT_EQ(
      dpf_->report(h.package_id, installed.report, {other->platform_certificate()}).error().code,
      ErrorCode::wrong_recipient);
  // A certificate outside the supplier's PKI.
  EXPECT_EQ(dpf_->report(h.package_id, installed.report, {world().signer("sho-a").cert.get()})
                .error()
                .code,
            ErrorCode::chain_invalid);
  EXPECT_EQ(dpf_->report(h.package_id, installed.report, {}).error().code,
            ErrorCode::missing_argument);
  // An altered report.
  std::string altered = installed.report;
  altered.replace(altered.find(R"("outcome":"ok")"), 14, R"("outcome":"no")");
  EXPECT_EQ(dpf_->report(h.package_id, altered, platform_chain()).error().code,
            ErrorCode::signature_invalid);
  EXPECT_EQ(dpf_->report(h.package_id, "{}", platform_chain()).error().code, ErrorCode::bad_format);
  // Signed by another platform key.
  tre::StatusReport forged;
  forged.device_id = device_;
  forged.event = "install";
  forged.credential = kImsi;
  forged.package_id = h.package_id;
  forged.outcome = "ok";
  forged.state = "installed";
  forged.sequence = 1;
  forged.time = std::chrono::floor<std::chrono::seconds>(world().clock().now());
  auto key = pki::generate_p256_key();
  ASSERT_TRUE(key);
  auto forged_text = tre::sign_status_report(forged, key->get());
  ASSERT_TRUE(forged_text);
  EXPECT_EQ(dpf_->report(h.package_id, *forged_text, platform_chain()).error().code,
            ErrorCode::signature_invalid);
  EXPECT_EQ(dpf_->report("pkg-unknown", installed.report, platform_chain()).error().code,
            ErrorCode::not_found);
  EXPECT_TRUE(relay_.relayed.empty());
  EXPECT_EQ((*db_->packages().find(h.package_id))->status, store::PackageStatus::delivered);
  // The genuine one still goes through.
  EXPECT_TRUE(dpf_->report(h.package_id, installed.report, platform_chain()));
  EXPECT_EQ(relay_.relayed.size(), 1u);
}

TEST_F(DpfTest, AReportOnAnotherPackageIsRefused) {
  const auto h1 = handover("sho-a", world().signer("sho-a"), 1);
  ASSERT_TRUE(dpf_->store_package(h1, "sho-a"));
  auto doc2 = world().document(device_, "001020000000002", "sho-a", 2, kNonce);
  const PackageHandover h2{
      kPcid, device_, doc2.package_id,
      world().seal(doc2, world().signer("sho-a"), tre_->platform_certificate())};
  ASSERT_TRUE(dpf_->store_package(h2, "sho-a"));
  ASSERT_TRUE(tre_->record_registration(kNonce));
  auto installed = tre_->install(dpf_->fetch(registration(), device_)->package);  // h1, the oldest
  ASSERT_TRUE(installed.result);
  EXPECT_EQ(dpf_->report(h2.package_id, installed.report, platform_chain()).error().code,
            ErrorCode::invalid_argument);
  EXPECT_TRUE(dpf_->report(h1.package_id, installed.report, platform_chain()));
  EXPECT_EQ(dpf_->fetch(registration(), device_)->package_id, h2.package_id);
}

TEST_F(DpfTest, ARefusedInstallIsReportedAndRelayedToo) {
  const auto h = handover("sho-a", world().signer("sho-a"));
  ASSERT_TRUE(dpf_->store_package(h, "sho-a"));
  // Installed without the registration nonce: refused, the report names the package.
  auto refused = tre_->install(dpf_->fetch(registration(), device_)->package);
  ASSERT_FALSE(refused.result);
  auto report = dpf_->report(h.package_id, refused.report, platform_chain());
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->outcome, "nonce_mismatch");
  EXPECT_EQ(report->package_id, h.package_id);
  ASSERT_EQ(relay_.relayed.size(), 1u);
  EXPECT_EQ(relay_.relayed[0].report.outcome, "nonce_mismatch");
}

TEST_F(DpfTest, AnUnreadablePackageIsReportedWithoutItsId) {
  const auto h = handover("sho-a", world().signer("sho-a"));
  ASSERT_TRUE(dpf_->store_package(h, "sho-a"));
  // What this TRE received cannot be opened by it (sealed for another TRE): it reports
  // wrong_recipient about package "-".
  auto other = make_tre("001019990000002");
  ASSERT_TRUE(other);
  auto doc = world().document(bundle_device_, kImsi, "sho-a", 1, kNonce);
  auto refused =
      tre_->install(world().seal(doc, world().signer("sho-a"), other->platform_certificate()));
  ASSERT_FALSE(refused.result);
  EXPECT_EQ(refused.result.error().code, ErrorCode::wrong_recipient);
  // The other device's certificate is not this package's device.
  EXPECT_EQ(
      dpf_->report(h.package_id, refused.report, {other->platform_certificate()}).error().code,
      ErrorCode::wrong_recipient);
  auto report = dpf_->report(h.package_id, refused.report, platform_chain());
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->package_id, "-");
  EXPECT_EQ(report->outcome, "wrong_recipient");
  EXPECT_EQ(relay_.relayed.size(), 1u);
}

TEST_F(DpfTest, AFailingRelayKeepsTheReportAndIsOnTheRecord) {
  const auto h = handover("sho-a", world().signer("sho-a"));
  ASSERT_TRUE(dpf_->store_package(h, "sho-a"));
  ASSERT_TRUE(tre_->record_registration(kNonce));
  auto installed = tre_->install(dpf_->fetch(registration(), device_)->package);
  relay_.failing = true;
  ASSERT_TRUE(dpf_->report(h.package_id, installed.report, platform_chain()));
  EXPECT_EQ((*db_->packages().find(h.package_id))->status, store::PackageStatus::reported);
  const auto audit = *db_->audit().recent(1);
  EXPECT_EQ(audit[0].event, "relay");
  EXPECT_EQ(audit[0].outcome, "io_error");
}

// F4: the successor's package replaces the holder's MCIM; the report hands the registration over
// even when neither SHO can be reached, and each relay carries its own acknowledgement.
TEST_F(DpfTest, AReplacementIsHandedOverAndEachAcknowledgementRelayedToItsSho) {
  const auto old = handover("sho-a", world().signer("sho-a"));
  ASSERT_TRUE(dpf_->store_package(old, "sho-a"));
  ASSERT_TRUE(tre_->record_registration(kNonce));
  const auto installed = tre_->install(dpf_->fetch(registration(), device_)->package);
  ASSERT_TRUE(dpf_->report(old.package_id, installed.report, platform_chain()));
  ASSERT_TRUE(db_->registrations().set_successor(kPcid, "sho-b"));

  const Bytes<16> nonce_b = {7};
  auto doc = world().document(device_, "001030000000001", "sho-b", 1, nonce_b);
  const PackageHandover h{kPcid, device_, doc.package_id,
                          world().seal(doc, world().signer("sho-b"), tre_->platform_certificate())};
  ASSERT_TRUE(dpf_->store_package(h, "sho-b"));
  ASSERT_TRUE(tre_->record_registration(nonce_b));
  const tre::ReplaceOutcome out =
      tre_->install_replacing(dpf_->fetch(registration(), device_)->package, kImsi);
  ASSERT_TRUE(out.install.result) << out.install.result.error().message;
  const store::Registration reg = **db_->registrations().find(kPcid);
  relay_.failing = true;
  auto accepted = dpf_->report(reg, h.package_id, out.install.report, platform_chain(),
                               DiscardAcks{out.discard_report, out.discard_notice});
  ASSERT_TRUE(accepted) << accepted.error().message;
  EXPECT_TRUE(accepted->operator_changed);
  EXPECT_EQ(accepted->report.outcome, "ok");
  const store::Registration now_reg = **db_->registrations().find(kPcid);
  EXPECT_EQ(now_reg.sho, "sho-b");
  EXPECT_EQ(now_reg.successor, "");
  ASSERT_EQ(relay_.relayed.size(), 2u);
  EXPECT_EQ(relay_.relayed[1].sho, "sho-b");
  EXPECT_EQ(relay_.relayed[1].discard_notice, out.discard_notice);
  EXPECT_EQ(relay_.relayed[0].discard_notice, "");  // F2's
  ASSERT_EQ(relay_.discards.size(), 1u);
  EXPECT_EQ(relay_.discards[0].sho, "sho-a");
  EXPECT_EQ(relay_.discards[0].device_id, device_);
  EXPECT_EQ(relay_.discards[0].package_id, h.package_id);
  EXPECT_EQ(relay_.discards[0].signed_report, out.discard_report);
  const auto audit = *db_->audit().recent(4);
  EXPECT_EQ(audit[0].event, "relay");  // the discard report's, failed
  EXPECT_EQ(audit[0].outcome, "io_error");
  EXPECT_EQ(audit[1].event, "relay");  // the status's, failed
  EXPECT_EQ(audit[2].service, "drf");
  EXPECT_EQ(audit[2].event, "transfer");
  EXPECT_EQ(audit[2].outcome, "ok");
  EXPECT_EQ(audit[3].event, "report");
  // The F2 form of report() knows no registration: no F4 there.
  EXPECT_EQ(dpf_->report(h.package_id, out.install.report, platform_chain()).error().code,
            ErrorCode::transition_refused);
}

// F4: a successor replaced by a new change (or that refused) provisions the device no more: its
// request and package stay stored but are passed over, and a report on its package is refused.
TEST_F(DpfTest, OnlyTheHoldersAndTheSuccessorsWorkIsServed) {
  // Held by sho-x; the owner orders a change to sho-b, then re-orders it to sho-a.
  ASSERT_TRUE(db_->registrations().remove(kPcid, "sho-a"));
  register_pcid(kPcid, device_, "sho-x");
  ASSERT_TRUE(db_->registrations().set_successor(kPcid, "sho-b"));
  ASSERT_TRUE(dpf_->request_attestation(ask("req-b"), "sho-b"));
  const auto h_b = handover("sho-b", world().signer("sho-b"));
  ASSERT_TRUE(dpf_->store_package(h_b, "sho-b"));
  ASSERT_TRUE(db_->registrations().set_successor(kPcid, "sho-a"));
  EXPECT_EQ(dpf_->next_attestation_request(registration()).error().code, ErrorCode::not_found);
  EXPECT_EQ(dpf_->fetch(registration(), device_).error().code, ErrorCode::not_found);
  ASSERT_TRUE(dpf_->request_attestation(ask("req-a"), "sho-a"));
  const auto h_a = handover("sho-a", world().signer("sho-a"), 2);
  ASSERT_TRUE(dpf_->store_package(h_a, "sho-a"));
  auto next = dpf_->next_attestation_request(registration());
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(next->request_id, "req-a");  // sho-b's, older, passed over
  auto fetched = dpf_->fetch(registration(), device_);
  ASSERT_TRUE(fetched) << fetched.error().message;
  EXPECT_EQ(fetched->package_id, h_a.package_id);

  // Refused before the report is verified; nothing stored, the registration as it was.
  const std::string request_b = request_state("req-b");
  auto refused = dpf_->report(registration(), h_b.package_id, "report", platform_chain(), {});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::transition_refused);
  const auto stale = **db_->packages().find(h_b.package_id);
  EXPECT_EQ(stale.status, store::PackageStatus::pending);
  EXPECT_EQ(stale.report, "");
  EXPECT_EQ(registration().sho, "sho-x");
  EXPECT_EQ(registration().successor, "sho-a");
  EXPECT_EQ(request_state("req-b"), request_b);
  const auto audit = db_->audit().recent(1)->front();
  EXPECT_EQ(audit.event, "report");
  EXPECT_EQ(audit.outcome, "transition_refused");
  EXPECT_TRUE(relay_.relayed.empty());

  // The successor's refusal ends the change: its work is passed over too, the holder's served.
  auto recorded = dpf_->refuse(kPcid, device_, "measurement_mismatch", "sho-a");
  ASSERT_TRUE(recorded) << recorded.error().message;
  EXPECT_EQ(recorded->sho, "sho-x");  // the successor refused
  EXPECT_EQ(recorded->successor, "");
  EXPECT_EQ(recorded->refusal, "measurement_mismatch");
  EXPECT_EQ(dpf_->next_attestation_request(registration()).error().code, ErrorCode::not_found);
  EXPECT_EQ(dpf_->fetch(registration(), device_).error().code, ErrorCode::not_found);
  ASSERT_TRUE(dpf_->request_attestation(ask("req-x"), "sho-x"));
  EXPECT_EQ(dpf_->next_attestation_request(registration())->request_id, "req-x");
}

// ---- Attestation requests (F2 steps 7-9) ----------------------------------------------------

TEST_F(DpfTest, AttestationRequestIsCollectedAnsweredAndRelayed) {
  EXPECT_EQ(dpf_->next_attestation_request(registration()).error().code, ErrorCode::not_found);
  ASSERT_TRUE(dpf_->request_attestation(ask(), "sho-a"));
  auto next = dpf_->next_attestation_request(registration());
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(next->request_id, kRequest);
  EXPECT_EQ(next->nonce, kChallenge);
  EXPECT_EQ(next->sho, "sho-a");
  EXPECT_EQ(next->pcid, kPcid);

  const std::string report = attestation();
  auto answered = dpf_->answer_attestation(kRequest, device_, report, platform_pems());
  ASSERT_TRUE(answered) << answered.error().message;
  EXPECT_EQ((*db_->attestation_requests().find(kRequest))->status,
            store::AttestationStatus::answered);
  ASSERT_EQ(relay_.attestations.size(), 1u);
  const RelayedAttestation& a = relay_.attestations[0];
  EXPECT_EQ(a.request_id, kRequest);
  EXPECT_EQ(a.pcid, kPcid);
  EXPECT_EQ(a.device_id, device_);
  EXPECT_EQ(a.sho, "sho-a");
  EXPECT_EQ(a.report, report);
  EXPECT_EQ(a.platform_chain, platform_pems());
  EXPECT_EQ(dpf_->next_attestation_request(registration()).error().code, ErrorCode::not_found);

  const std::string before = request_state();
  auto again = dpf_->answer_attestation(kRequest, device_, report, platform_pems());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::transition_refused);
  EXPECT_EQ(request_state(), before);
  EXPECT_EQ(relay_.attestations.size(), 1u);

  const auto audit = *db_->audit().recent(10);
  std::vector<std::string> events;
  for (const auto& r : audit) events.push_back(r.event + " " + r.outcome);
  EXPECT_EQ(events, (std::vector<std::string>{"attestation transition_refused",
                                              "relay-attestation ok", "attestation ok",
                                              "attestation-fetch ok", "attestation-request ok"}));
}

TEST_F(DpfTest, AttestationRequestRefusals) {
  register_pcid("001019990000002", "dev-b", "sho-a");
  ASSERT_TRUE(dpf_->request_attestation(ask("known"), "sho-a"));
  auto with = [&](auto change) {
    AttestationAsk a = ask("fresh");
    change(a);
    return a;
  };
  struct Case {
    std::string what;
    AttestationAsk ask;
    std::string caller;
    ErrorCode code;
  };
  const std::vector<Case> cases = {
      {"another SHO", ask("fresh"), "sho-b", ErrorCode::access_denied},
      {"unregistered pcid", with([](auto& a) { a.pcid = "001019990000099"; }), "sho-a",
       ErrorCode::not_found},
      {"another device", with([](auto& a) { a.device_id = "dev-b"; }), "sho-a",
       ErrorCode::wrong_recipient},
      {"bad request id", with([](auto& a) { a.request_id = "a/b"; }), "sho-a",
       ErrorCode::invalid_argument},
      {"bad device id", with([](auto& a) { a.device_id = ""; }), "sho-a",
       ErrorCode::invalid_argument},
      {"nonce short", with([](auto& a) { a.nonce.resize(15); }), "sho-a",
       ErrorCode::invalid_argument},
      {"nonce long", with([](auto& a) { a.nonce.resize(65); }), "sho-a",
       ErrorCode::invalid_argument},
      {"known id", ask("known"), "sho-a", ErrorCode::already_exists},
  };
  const std::string known_before = request_state("known");
  for (const Case& c : cases) {
    auto r = dpf_->request_attestation(c.ask, c.caller);
    ASSERT_FALSE(r) << c.what;
    EXPECT_EQ(r.error().code, c.code) << c.what << ": " << r.error().message;
    EXPECT_EQ(request_state("fresh"), "none") << c.what;
    EXPECT_EQ(request_state("a/b"), "none") << c.what;
    EXPECT_EQ(request_state("known"), known_before) << c.what;
  }
  // The bounds themselves are accepted.
  ASSERT_TRUE(dpf_->request_attestation(with([](auto& a) { a.nonce.resize(16); }), "sho-a"));
  ASSERT_TRUE(dpf_->request_attestation(with([](auto& a) {
                                          a.request_id = "fresh-64";
                                          a.nonce.resize(64);
                                        }),
                                        "sho-a"));
  EXPECT_EQ(db_->audit().recent(1)->front().event, "attestation-request");
}

TEST_F(DpfTest, TheShosRefusalIsKeptUntilANewRegistration) {
  auto reg = [&] { return **db_->registrations().find(kPcid); };
  EXPECT_TRUE(Dpf::refusal_of(reg()));
  struct Case {
    std::string what, pcid, device, code, caller;
    ErrorCode expected;
  };
  register_pcid("001019990000002", "dev-b", "sho-a");
  const std::vector<Case> refused = {
      {"another SHO", kPcid, device_, "measurement_mismatch", "sho-b", ErrorCode::access_denied},
      {"another device", kPcid, "dev-b", "measurement_mismatch", "sho-a",
       ErrorCode::wrong_recipient},
      {"unregistered pcid", "001019990000099", device_, "measurement_mismatch", "sho-a",
       ErrorCode::not_found},
      {"not a code", kPcid, device_, "no_such_code", "sho-a", ErrorCode::invalid_argument},
  };
  for (const Case& c : refused) {
    auto r = dpf_->refuse(c.pcid, c.device, c.code, c.caller);
    ASSERT_FALSE(r) << c.what;
    EXPECT_EQ(r.error().code, c.expected) << c.what << ": " << r.error().message;
    EXPECT_EQ(reg().refusal, "") << c.what;
    EXPECT_EQ(db_->audit().recent(1)->front().event, "refusal") << c.what;
  }
  ASSERT_TRUE(dpf_->refuse(kPcid, device_, "measurement_mismatch", "sho-a"));
  EXPECT_EQ(reg().refusal, "measurement_mismatch");
  EXPECT_EQ(reg().refused, std::chrono::floor<std::chrono::seconds>(world().clock().now()));
  const auto told = Dpf::refusal_of(reg());
  ASSERT_FALSE(told);
  EXPECT_EQ(told.error().code, ErrorCode::measurement_mismatch);
  EXPECT_EQ(told.error().message, "home operator sho-a refused the device: measurement_mismatch");
  // F4: a successor's refusal, which the caller knows of, names it.
  EXPECT_EQ(Dpf::refusal_of(reg(), "sho-b").error().message,
            "home operator sho-b refused the device: measurement_mismatch");
  // The SHO registering the device anew (a fresh registration row) starts over.
  register_pcid(kPcid, device_, "sho-a");
  EXPECT_TRUE(Dpf::refusal_of(reg()));
}

TEST_F(DpfTest, AttestationAnswerRefusals) {
  ASSERT_TRUE(dpf_->request_attestation(ask(), "sho-a"));
  const std::string report = attestation();
  const std::string before = request_state();
  struct Case {
    std::string what, request_id, device, report;
    ErrorCode code;
  };
  const std::vector<Case> cases = {
      {"unknown request", "challenge-9", device_, report, ErrorCode::not_found},
      {"another device", kRequest, "dev-b", report, ErrorCode::access_denied},
      {"no device", kRequest, "", report, ErrorCode::access_denied},
      {"not a report", kRequest, device_, "{}", ErrorCode::bad_format},
      {"empty report", kRequest, device_, "", ErrorCode::bad_format},
      {"trailing bytes", kRequest, device_, report + "x", ErrorCode::bad_format},
  };
  for (const Case& c : cases) {
    auto r = dpf_->answer_attestation(c.request_id, c.device, c.report, platform_pems());
    ASSERT_FALSE(r) << c.what;
    EXPECT_EQ(r.error().code, c.code) << c.what << ": " << r.error().message;
    EXPECT_EQ(request_state(), before) << c.what;
  }
  EXPECT_TRUE(relay_.attestations.empty());
  EXPECT_EQ(db_->audit().recent(1)->front().outcome, "bad_format");
}

TEST_F(DpfTest, AFailingAttestationRelayKeepsTheAnswer) {
  ASSERT_TRUE(dpf_->request_attestation(ask(), "sho-a"));
  relay_.failing = true;
  ASSERT_TRUE(dpf_->answer_attestation(kRequest, device_, attestation(), platform_pems()));
  EXPECT_EQ((*db_->attestation_requests().find(kRequest))->status,
            store::AttestationStatus::answered);
  const auto audit = *db_->audit().recent(1);
  EXPECT_EQ(audit[0].event, "relay-attestation");
  EXPECT_EQ(audit[0].outcome, "io_error");
}

// Two answers racing (a device retrying over two connections): exactly one is relayed.
TEST_F(DpfTest, RacingAnswersRelayOnce) {
  ASSERT_TRUE(dpf_->request_attestation(ask(), "sho-a"));
  const std::string report = attestation();
  const std::vector<std::string> pems = platform_pems();
  std::atomic<int> accepted = 0, refused = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      Dpf dpf(*db_, Dpf::Relays{relay_, relay_, relay_}, *operator_roots_, *supplier_roots_,
              world().clock());
      auto r = dpf.answer_attestation(kRequest, device_, report, pems);
      if (r) {
        ++accepted;
      } else if (r.error().code == ErrorCode::transition_refused) {
        ++refused;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(accepted.load(), 1);
  EXPECT_EQ(refused.load(), 7);
  EXPECT_EQ(relay_.attestations.size(), 1u);
}

}  // namespace
}  // namespace mcim::ro
