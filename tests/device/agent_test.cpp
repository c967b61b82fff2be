// The device agent over the real services: the RO and the VNO on HTTPS on loopback, a test SHO
// that acts as the contract says (arrival -> attestation request at the DPF; attestation ->
// package sealed to the TRE; status -> the IMSI activated in its AuC, an ro::Icf behind
// ro::add_auth_routes on a database of its own), and the device's real TRE. The whole of F2
// from the agent's side, then the refusals the device itself owes: a bootstrap under another
// PIN, a DPF that is not the one pinned, a home operator that never sends the package.
#include "device/agent.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../net/net_test_util.h"
#include "../tre/tre_fixture.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/log.h"
#include "net/http_error.h"
#include "net/metrics.h"
#include "net/router.h"
#include "pki/attestation.h"
#include "pki/openssl.h"
#include "roles/ro/auth_routes.h"
#include "roles/ro/icf.h"
#include "roles/ro/service.h"
#include "roles/vno/service.h"
#include "store/store.h"
#include "test_sho.h"
#include "tre/tre.h"

namespace mcim::device {
namespace {

using namespace std::chrono_literals;
using net::Json;
using net::testing::TestPki;
using pki::testing::TempDir;
using tre::testing::World;
using namespace mcim::device::testing;

const std::string kPcid = "001019900000001";
const std::string kPcidRange = "00101990";
constexpr std::string_view kApn = "m2m-prov.ro-1";

// ---- The fixture -----------------------------------------------------------------------------

class AgentTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { world_ = new World(); }
  static void TearDownTestSuite() {
    delete world_;
    world_ = nullptr;
  }
  static World& world() { return *world_; }

  void SetUp() override {
    log::set_level(log::Level::debug);
    log::set_sink([this](std::string_view line) {
      std::lock_guard lock(log_mu_);
      log_.emplace_back(line);
    });
    auto ro_db = store::open_database("sqlite:" + (dir_ / "ro.db"));
    ASSERT_TRUE(ro_db) << fmt::to_string(ro_db.error());
    ro_db_ = std::move(*ro_db);
    auto auc_db = store::open_database("sqlite:" + (dir_ / "auc.db"));
    ASSERT_TRUE(auc_db) << fmt::to_string(auc_db.error());
    auc_db_ = std::move(*auc_db);
    bundle_.emplace(world().bundle(kPcid));
    ASSERT_TRUE(tre::Tre::init(tre::Options{dir_ / "tre"}, *bundle_));
    auto t = tre::Tre::open(tre::Options{dir_ / "tre"});
    ASSERT_TRUE(t) << fmt::to_string(t.error());
    tre_.emplace(std::move(*t));
    ASSERT_TRUE(tre_->record_registration(kNonce));  // F1: the owner's `device register`
    import_pcid();
  }

  void TearDown() override {
    vno_server_.reset();
    vno_.reset();
    ro_server_.reset();
    ro_.reset();
    sho_.reset();
    tre_.reset();
    ro_db_.reset();
    auc_db_.reset();
    log::set_sink(nullptr);
    log::set_level(log::Level::info);
    std::lock_guard lock(log_mu_);
    if (HasFailure()) {
      for (const std::string& line : log_) std::fprintf(stderr, "%s\n", line.c_str());
    }
    for (const std::string& secret : secrets_) {
      for (const std::string& line : log_) {
        EXPECT_EQ(line.find(secret), std::string::npos) << "a secret in the log: " << line;
      }
    }
  }

  // F0 without the supplier service: the PCID straight into the ICF.
  void import_pcid() {
    OsRandom random;
    ro::Icf icf(*ro_db_, clock_, random);
    store::PcidSubscription s;
    s.pcid = kPcid;
    s.k = bundle_->k;
    s.opc = bundle_->opc;
    s.ind_bits = bundle_->ind_bits;
    s.not_after = std::chrono::floor<std::chrono::seconds>(clock_.now()) + 24h * 365;
    auto imported = icf.import_batch("batch-agent", {std::move(s)}, "supplier:sup-1");
    ASSERT_TRUE(imported) << fmt::to_string(imported.error());
  }

  // F9 with the first answer lost on its way to the DPF, kept by the agent or not (below).
  void manage_after_a_lost_answer(bool answer_kept);
  // F2 with the TRE's install write failing (io_error) at `blocked`, a temporary file of the
  // TRE's commit made a directory: before the state is written (nothing committed) or after it
  // (the commit in place once the TRE is opened again).
  void install_write_fails(const std::string& blocked, bool committed);

  void start(TestSho::Behaviour behaviour = {}) {
    sho_ = std::make_unique<TestSho>(world(), *auc_db_, clock_, behaviour);
    ASSERT_FALSE(sho_->url().empty());
    start_ro();
    if (HasFatalFailure()) return;
    sho_->connect(ro_url_);
    start_vno();
  }

  void start_ro() {
    auto c = ro_config(world(), sho_->url());
    ASSERT_TRUE(c) << fmt::to_string(c.error());
    auto service = ro::RoService::create(*ro_db_, std::move(*c), clock_);
    ASSERT_TRUE(service) << fmt::to_string(service.error());
    ro_ = std::move(*service);
    ro_server_ = net::testing::start_named_server(ro_->handler(), "ro", net::ClientAuth::optional,
                                                  ro_->body_limit());
    ASSERT_TRUE(ro_server_);
    ro_url_ = ro_server_->url();
    ro_pin_ = pki::spki_sha256(TestPki::get().named_server("ro").identity->key.get());
  }

  void start_vno() {
    roles::VnoServiceConfig c;
    c.options.name = "vno-a";
    c.options.restricted_destinations = {ro_server_->address()};
    c.routes = {roles::Route{kPcidRange, "ro", true}, roles::Route{kImsiRange, "sho", false}};
    c.homes = {{"ro", ro_url_}, {"sho", sho_->url()}};
    c.home_client = operator_client("vno-a");
    c.gateway.metrics = gateway_metrics_;
    auto service = roles::VnoService::create(std::move(c), clock_);
    ASSERT_TRUE(service) << fmt::to_string(service.error());
    vno_ = std::move(*service);
    vno_server_ =
        net::testing::start_named_server(vno_->handler(), "vno", net::ClientAuth::none, 64 * 1024);
    ASSERT_TRUE(vno_server_);
  }

  // F1 at the RO as the SHO does it: the registration (with the PIN the owner gave, and the
  // DPF's key pin) and the switch-on window.
  void register_device(const std::string& pin, const Bytes<32>& dpf_pin) {
    auto sho = operator_client("sho-a");
    const Json reg = {{"device_id", bundle_->device_id},
                      {"dpf_url", ro_url_},
                      {"dpf_key_pin", to_hex(dpf_pin)},
                      {"apn", kApn},
                      {"pin", pin}};
    auto r = sho->request("PUT", ro_url_ + "/v1/drf/registrations/" + kPcid, reg.dump(),
                          net::kJsonContentType);
    ASSERT_TRUE(r) << fmt::to_string(r.error());
    ASSERT_EQ(r->status, 200) << r->body;
    auto a = sho->request("POST", ro_url_ + "/v1/icf/pcids/" + kPcid + "/activation",
                          Json{{"window_s", 3600}}.dump(), net::kJsonContentType);
    ASSERT_TRUE(a) << fmt::to_string(a.error());
    ASSERT_EQ(a->status, 200) << a->body;
    secrets_.push_back(pin);
  }
  std::string pin() const { return std::string(tre::pin_text(*bundle_)); }

  AgentConfig config(std::chrono::seconds timeout = 30s) const {
    AgentConfig c;
    c.vno_url = vno_server_->url();
    c.tls.trust = TestPki::get().anchors();
    c.timeout = timeout;
    return c;
  }

  // What the TRE holds: must not change when the device refuses.
  std::string registry() const {
    std::string out;
    const tre::Status s = tre_->status();
    for (const auto& c : s.credentials) {
      out += c.id + ":" + std::string(tre::to_string(c.state)) + ";";
    }
    return out + (s.selected ? *s.selected : "-");
  }

  std::optional<store::PackageStatus> package_status(const std::string& id) {
    auto p = ro_db_->packages().find(id);
    EXPECT_TRUE(p);
    if (!p || !*p) return std::nullopt;
    return (*p)->status;
  }

  // F3 without AKA: IP straight to the RO's DRF; `vno` empty for a device without 3GPP coverage.
  AgentConfig direct_config(bool with_vno) const {
    AgentConfig c = config();
    c.access = Access::direct;
    c.drf_url = ro_url_;
    if (!with_vno) c.vno_url.clear();
    return c;
  }

  // A TRE of another device from the same supplier that claims this device's PCID.
  std::optional<tre::Tre> impostor() { return world().make_tre(kPcid, "dev-impostor"); }

  // POST `body` to the RO's direct-access `path` as a device with no identity does.
  Result<Json> post_direct(const std::string& path, const Json& body, int expected) {
    auto client = net::testing::make_client();
    auto r = client->request("POST", ro_url_ + path, body.dump(), net::kJsonContentType);
    if (!r) return std::unexpected(r.error());
    if (r->status != expected) return std::unexpected(net::error_from_response(*r, "ro"));
    return Json::parse(r->body);
  }

  static std::vector<Step> steps_of(const std::vector<StepTiming>& t) {
    std::vector<Step> out;
    for (const auto& s : t) out.push_back(s.step);
    return out;
  }

  static World* world_;
  TempDir dir_;
  SystemClock clock_;
  std::unique_ptr<store::Database> ro_db_, auc_db_;
  std::optional<tre::SupplierBundle> bundle_;
  std::optional<tre::Tre> tre_;
  std::unique_ptr<TestSho> sho_;
  std::unique_ptr<ro::RoService> ro_;
  std::unique_ptr<net::HttpServer> ro_server_;
  std::string ro_url_;
  Bytes<32> ro_pin_{};
  std::unique_ptr<roles::VnoService> vno_;
  std::unique_ptr<net::HttpServer> vno_server_;
  std::shared_ptr<net::Metrics> gateway_metrics_ = std::make_shared<net::Metrics>("vno-a");
  std::mutex log_mu_;
  std::vector<std::string> log_;      // guarded by log_mu_
  std::vector<std::string> secrets_;  // in no log line
};

World* AgentTest::world_ = nullptr;

TEST_F(AgentTest, ProvisionsAFactoryFreshDeviceUntilItIsOperational) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  register_device(pin(), ro_pin_);
  ASSERT_FALSE(HasFatalFailure());

  Agent agent(*tre_, config(), clock_);
  std::vector<StepTiming> seen;
  agent.on_step([&](const StepTiming& t) { seen.push_back(t); });
  auto out = agent.provision();
  ASSERT_TRUE(out) << fmt::to_string(out.error());
  EXPECT_EQ(sho_->failure(), "");

  EXPECT_EQ(out->pcid, kPcid);
  EXPECT_EQ(out->imsi, kImsi);
  EXPECT_EQ(out->package_id, "pkg-" + kImsi + "-1");
  EXPECT_EQ(out->operational.imsi, kImsi);
  EXPECT_FALSE(out->operational.restricted);
  EXPECT_TRUE(out->operational.gateway.empty());
  EXPECT_TRUE(out->operational.drf_url.empty());
  const std::vector<Step> all = {Step::attach_pcid, Step::discovery, Step::attestation,
                                 Step::package,     Step::install,   Step::report,
                                 Step::attach_imsi};
  EXPECT_EQ(steps_of(out->steps), all);
  EXPECT_EQ(steps_of(seen), all);
  for (const auto& t : out->steps) EXPECT_GT(t.took.count(), 0) << to_string(t.step);
  // The SHO activated after a pause: the device waited for it and asked again.
  auto attach_imsi = out->steps.back();
  EXPECT_GE(attach_imsi.took, 250ms);

  // The TRE ends with the MCIM selected; the PCID credential is still there.
  const tre::Status s = tre_->status();
  EXPECT_EQ(s.state, pki::TreState::provisioned);
  ASSERT_TRUE(s.selected);
  EXPECT_EQ(*s.selected, kImsi);
  EXPECT_EQ(registry(), kPcid + ":activated;" + kImsi + ":selected;" + kImsi);

  // Every party saw its part once; the PCID session is closed, the operational one open.
  EXPECT_EQ(sho_->arrivals(), 1);
  EXPECT_EQ(sho_->attestations(), 1);
  EXPECT_EQ(sho_->statuses(), 1);
  EXPECT_EQ(package_status(out->package_id), store::PackageStatus::reported);
  EXPECT_TRUE(vno_->vno().session(out->operational.session));
  auto home = auc_db_->sessions().find(out->operational.home_session);
  ASSERT_TRUE(home);
  EXPECT_TRUE(*home);
  secrets_.push_back(out->operational.session);
  secrets_.push_back(out->operational.home_session);

  ASSERT_TRUE(agent.detach(out->operational));
  EXPECT_FALSE(vno_->vno().session(out->operational.session));
  // The attaches, the polls while the SHO activated and the detaches shared one connection.
  EXPECT_EQ(vno_server_->connections_accepted(), 1u);
  // The DRF and the DPF are the same RO with the same key: the DPF client took over the DRF's
  // connection, so one tunnel through the gateway served the bootstrap and the whole DPF part.
  EXPECT_EQ(
      gateway_metrics_->counter("mcim_gateway_tunnels_total", "", {{"outcome", "open"}}).value(),
      1u);
}

// A run on a TRE that holds an MCIM already (an earlier run stopped after its report, between
// activate and select): no second provisioning, only what is left. An unreadable journal is
// dropped, not trusted.
TEST_F(AgentTest, ARunAfterTheInstallOnlyFinishesWhatTheEarlierOneLeft) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  register_device(pin(), ro_pin_);
  ASSERT_FALSE(HasFatalFailure());
  Agent first(*tre_, config(), clock_);
  auto out = first.provision();
  ASSERT_TRUE(out) << fmt::to_string(out.error());
  EXPECT_FALSE(out->resumed);
  ASSERT_TRUE(first.detach(out->operational));
  ASSERT_TRUE(tre_->apply(tre::Action::deselect, kImsi));
  const std::string journal = tre_->dir() + "/answers/.provisioning";
  EXPECT_FALSE(std::filesystem::exists(journal));
  ASSERT_TRUE(write_file_atomic(journal, std::string_view("{\"report\": 7}"), 0600));

  Agent next(*tre_, config(), clock_);
  auto again = next.provision();
  ASSERT_TRUE(again) << fmt::to_string(again.error());
  EXPECT_TRUE(again->resumed);
  EXPECT_EQ(again->imsi, kImsi);
  EXPECT_EQ(again->package_id, out->package_id);
  EXPECT_EQ(steps_of(again->steps), std::vector<Step>{Step::attach_imsi});
  EXPECT_EQ(again->operational.imsi, kImsi);
  EXPECT_FALSE(std::filesystem::exists(journal));
  EXPECT_EQ(registry(), kPcid + ":activated;" + kImsi + ":selected;" + kImsi);
  EXPECT_EQ(sho_->arrivals(), 1);
  EXPECT_EQ(sho_->statuses(), 1);
  secrets_.push_back(again->operational.session);
  secrets_.push_back(again->operational.home_session);
  ASSERT_TRUE(next.detach(again->operational));
}

TEST_F(AgentTest, ABootstrapUnderAnotherPinIsRefusedAndNothingIsFetched) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  std::string wrong = pin();
  wrong[0] = wrong[0] == '9' ? '0' : char(wrong[0] + 1);
  register_device(wrong, ro_pin_);
  ASSERT_FALSE(HasFatalFailure());
  const std::string before = registry();

  Agent agent(*tre_, config(), clock_);
  auto out = agent.provision();
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, ErrorCode::signature_invalid) << fmt::to_string(out.error());
  EXPECT_TRUE(out.error().message.starts_with("discovery: ")) << out.error().message;
  EXPECT_EQ(out.error().message.find(wrong), std::string::npos);
  EXPECT_EQ(out.error().message.find(pin()), std::string::npos);

  // The device went no further: no attestation answered, no package, the TRE as it was.
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  EXPECT_EQ(sho_->arrivals(), 1);  // the RO announced the device; the device refused
  EXPECT_EQ(sho_->attestations(), 0);
  EXPECT_EQ(registry(), before);
  auto next = ro_db_->packages().next_for_device(bundle_->device_id);
  ASSERT_TRUE(next);
  EXPECT_FALSE(*next);
}

TEST_F(AgentTest, ADpfWithAnotherKeyThanTheBootstrapsPinIsNotTalkedTo) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  // The bootstrap pins a key the RO's server does not hold.
  const Bytes<32> other =
      pki::spki_sha256(TestPki::get().named_server("elsewhere").identity->key.get());
  register_device(pin(), other);
  ASSERT_FALSE(HasFatalFailure());
  const std::string before = registry();

  Agent agent(*tre_, config(), clock_);
  std::vector<StepTiming> seen;
  agent.on_step([&](const StepTiming& t) { seen.push_back(t); });
  auto out = agent.provision();
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, ErrorCode::chain_invalid) << fmt::to_string(out.error());
  EXPECT_TRUE(out.error().message.starts_with("attestation: dpf: ")) << out.error().message;
  EXPECT_EQ(steps_of(seen), (std::vector<Step>{Step::attach_pcid, Step::discovery}));
  EXPECT_EQ(sho_->attestations(), 0);
  EXPECT_EQ(registry(), before);
}

TEST_F(AgentTest, AHomeOperatorThatSendsNoPackageRunsTheDeviceOutOfTime) {
  TestSho::Behaviour silent;
  silent.send_package = false;
  start(silent);
  ASSERT_FALSE(HasFatalFailure());
  register_device(pin(), ro_pin_);
  ASSERT_FALSE(HasFatalFailure());
  const std::string before = registry();

  AgentConfig c = config(3s);
  c.poll_max = 100ms;
  Agent agent(*tre_, c, clock_);
  const auto started = std::chrono::steady_clock::now();
  auto out = agent.provision();
  const auto took = std::chrono::steady_clock::now() - started;
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, ErrorCode::busy) << fmt::to_string(out.error());
  EXPECT_TRUE(out.error().message.starts_with("package: ")) << out.error().message;
  EXPECT_LE(took, 4s);
  EXPECT_EQ(sho_->attestations(), 1);  // the attestation went through; the package never came
  EXPECT_EQ(registry(), before);
}

TEST_F(AgentTest, ALockedDownTreDoesNotStart) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  tre_.reset();
  // An edited sealed state: the TRE opens in lockdown.
  {
    auto text = read_file(dir_ / "tre/state.sealed");
    ASSERT_TRUE(text);
    ByteVec edited = *text;
    edited[20] ^= 0x01;
    ASSERT_TRUE(write_file_atomic(dir_ / "tre/state.sealed", edited, 0600));
  }
  auto t = tre::Tre::open(tre::Options{dir_ / "tre"});
  ASSERT_TRUE(t);
  tre_.emplace(std::move(*t));
  Agent agent(*tre_, config(), clock_);
  auto out = agent.provision();
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, ErrorCode::lockdown);
  EXPECT_EQ(vno_->vno().pending(), 0u);  // not even an attach
}

// F4: a change needs the DPF's URL and an MCIM to replace; without them nothing is asked of anyone
// and the TRE is untouched. (The whole change runs over the real services in the
// change-operator scenarios, tests/cli.)
TEST_F(AgentTest, AnOperatorChangeNeedsTheDpfAndAnOperationalMcim) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  const std::uint64_t generation = tre_->status().generation;
  AgentConfig no_dpf = config();
  no_dpf.drf_url.clear();
  auto refused = Agent(*tre_, std::move(no_dpf), clock_).change_operator();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::missing_argument);
  AgentConfig c = config();
  c.drf_url = ro_url_;
  auto pristine = Agent(*tre_, std::move(c), clock_).change_operator();
  ASSERT_FALSE(pristine);
  EXPECT_EQ(pristine.error().code, ErrorCode::not_found) << pristine.error().message;
  EXPECT_EQ(tre_->status().generation, generation);
  EXPECT_EQ(vno_->vno().pending(), 0u);
}

// ---- F3 without AKA: direct IP to the DRF ------------------------------------------------------

TEST_F(AgentTest, ProvisionsOverDirectAccessWithoutAVisitedNetwork) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  register_device(pin(), ro_pin_);
  ASSERT_FALSE(HasFatalFailure());

  Agent agent(*tre_, direct_config(false), clock_);
  auto out = agent.provision();
  ASSERT_TRUE(out) << fmt::to_string(out.error());
  EXPECT_EQ(sho_->failure(), "");
  EXPECT_EQ(steps_of(out->steps),
            (std::vector<Step>{Step::connect_direct, Step::discovery, Step::attestation,
                               Step::package, Step::install, Step::report}));
  EXPECT_EQ(out->imsi, kImsi);
  // Nothing attached anywhere: the MCIM waits, activated and selected, for a 3GPP network.
  EXPECT_TRUE(out->operational.session.empty());
  EXPECT_EQ(vno_->vno().pending(), 0u);
  EXPECT_EQ(registry(), kPcid + ":activated;" + kImsi + ":selected;" + kImsi);
  EXPECT_EQ(package_status(out->package_id), store::PackageStatus::reported);
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  EXPECT_EQ(sho_->arrivals(), 1);
  EXPECT_EQ(sho_->statuses(), 1);
}

// The agent stopped after it answered the attestation, while the home operator still prepares
// the package: the DPF serves a request once and the home operator, past validation, starts
// nothing on the next run's arrival, so that run must not wait for another request. It asks for
// a request and a package in turn and takes the package when it comes.
TEST_F(AgentTest, ARunStoppedAfterItsAttestationTakesThePackageWhenItComes) {
  TestSho::Behaviour slow;
  slow.package_delay = 700ms;
  start(slow);
  ASSERT_FALSE(HasFatalFailure());
  register_device(pin(), ro_pin_);
  ASSERT_FALSE(HasFatalFailure());
  AgentConfig stopping = config();
  stopping.interrupt = [](Step s) -> Result<void> {
    if (s == Step::package) return fail(ErrorCode::internal, "the device agent was killed");
    return {};
  };
  Agent first(*tre_, stopping, clock_);
  auto stopped = first.provision();
  ASSERT_FALSE(stopped);
  EXPECT_EQ(stopped.error().message, "package: the device agent was killed");

  Agent next(*tre_, config(), clock_);
  auto out = next.provision();
  ASSERT_TRUE(out) << fmt::to_string(out.error());
  EXPECT_FALSE(out->resumed);
  EXPECT_EQ(steps_of(out->steps),
            (std::vector<Step>{Step::attach_pcid, Step::discovery, Step::attestation, Step::package,
                               Step::install, Step::report, Step::attach_imsi}));
  EXPECT_EQ(registry(), kPcid + ":activated;" + kImsi + ":selected;" + kImsi);
  EXPECT_EQ(sho_->arrivals(), 2);      // the second refused: validated already
  EXPECT_EQ(sho_->attestations(), 1);  // answered once, by the first run
  EXPECT_EQ(sho_->statuses(), 1);
  secrets_.push_back(out->operational.session);
  secrets_.push_back(out->operational.home_session);
  ASSERT_TRUE(next.detach(out->operational));
}

// Direct access, the agent stopped after the install, before the report: the next run cannot
// open another direct session while the first lasts (the RO refuses already_exists), so it
// proves its platform key for a DPF session and posts the report it kept; the TRE installed once.
TEST_F(AgentTest, ADirectRunStoppedBeforeItsReportIsFinishedOverADpfSession) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  register_device(pin(), ro_pin_);
  ASSERT_FALSE(HasFatalFailure());
  AgentConfig stopping = direct_config(false);
  stopping.interrupt = [](Step s) -> Result<void> {
    if (s == Step::report) return fail(ErrorCode::internal, "the device agent was killed");
    return {};
  };
  Agent first(*tre_, stopping, clock_);
  auto stopped = first.provision();
  ASSERT_FALSE(stopped);
  EXPECT_EQ(stopped.error().message, "report: the device agent was killed");
  EXPECT_EQ(registry(), kPcid + ":activated;" + kImsi + ":installed;-");
  const std::string journal = tre_->dir() + "/answers/.provisioning";
  auto kept = read_text_file(journal);
  ASSERT_TRUE(kept);
  const auto j = Json::parse(*kept);
  EXPECT_FALSE(j.contains("session"));  // a direct session has no VNO side
  EXPECT_EQ(j["package_id"], "pkg-" + kImsi + "-1");
  EXPECT_EQ(package_status("pkg-" + kImsi + "-1"), store::PackageStatus::delivered);

  Agent next(*tre_, direct_config(false), clock_);
  auto out = next.provision();
  ASSERT_TRUE(out) << fmt::to_string(out.error());
  EXPECT_TRUE(out->resumed);
  EXPECT_EQ(steps_of(out->steps), (std::vector<Step>{Step::connect_dpf, Step::report}));
  EXPECT_EQ(registry(), kPcid + ":activated;" + kImsi + ":selected;" + kImsi);
  EXPECT_EQ(package_status(out->package_id), store::PackageStatus::reported);
  EXPECT_FALSE(std::filesystem::exists(journal));
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  EXPECT_EQ(sho_->statuses(), 1);
}

// A device stopped right after its TRE committed the install: all its journal has is the restricted
// session and the package's id, written before the commit (nothing is written between the commit
// and the report). The next run ends that session, opens another, and has the TRE sign the
// install's report again for the DPF; the SHO activates the IMSI and the TRE installed once.
TEST_F(AgentTest, ARunStoppedRightAfterTheInstallsCommitHasItsReportSignedAgain) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  register_device(pin(), ro_pin_);
  ASSERT_FALSE(HasFatalFailure());
  AgentConfig stopping = config();
  stopping.interrupt = [](Step s) -> Result<void> {
    if (s == Step::report) return fail(ErrorCode::internal, "the device lost power");
    return {};
  };
  Agent first(*tre_, stopping, clock_);
  auto stopped = first.provision();
  ASSERT_FALSE(stopped);
  EXPECT_EQ(registry(), kPcid + ":activated;" + kImsi + ":installed;-");
  const std::string journal = tre_->dir() + "/answers/.provisioning";
  auto kept = read_text_file(journal);
  ASSERT_TRUE(kept);
  const auto j = Json::parse(*kept);
  EXPECT_EQ(j["package_id"], "pkg-" + kImsi + "-1");
  EXPECT_TRUE(j.contains("session"));
  EXPECT_FALSE(j.contains("report"));  // the TRE signs it again when it is needed
  EXPECT_EQ(package_status("pkg-" + kImsi + "-1"), store::PackageStatus::delivered);

  Agent next(*tre_, config(10s), clock_);
  auto out = next.provision();
  ASSERT_TRUE(out) << fmt::to_string(out.error());
  EXPECT_TRUE(out->resumed);
  EXPECT_EQ(steps_of(out->steps), (std::vector<Step>{Step::attach_pcid, Step::discovery,
                                                     Step::report, Step::attach_imsi}));
  EXPECT_EQ(registry(), kPcid + ":activated;" + kImsi + ":selected;" + kImsi);
  EXPECT_EQ(package_status(out->package_id), store::PackageStatus::reported);
  EXPECT_FALSE(std::filesystem::exists(journal));
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  EXPECT_EQ(sho_->statuses(), 1);
  secrets_.push_back(out->operational.session);
  secrets_.push_back(out->operational.home_session);
  ASSERT_TRUE(next.detach(out->operational));
}

// The TRE's install fails with io_error: the run stops without reporting anything (a report of
// the failure would end the provisioning at the SHO, though the MCIM may be in the TRE once it is
// opened again), and the next run, on the TRE opened again, finishes it either way.
TEST_F(AgentTest, AnInstallWhoseWriteFailedBeforeTheStateIsNotReportedAndIsDoneAgain) {
  install_write_fails("state.sealed.tmp", false);
}

TEST_F(AgentTest, AnInstallWhoseWriteFailedAfterTheStateIsNotReportedAndIsFinished) {
  install_write_fails("counter.sealed.tmp", true);
}

void AgentTest::install_write_fails(const std::string& blocked, bool committed) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  register_device(pin(), ro_pin_);
  ASSERT_FALSE(HasFatalFailure());
  const std::filesystem::path obstacle = dir_ / ("tre/" + blocked);
  AgentConfig blocking = config();
  blocking.interrupt = [&](Step s) -> Result<void> {
    if (s == Step::install) std::filesystem::create_directories(obstacle / "x");
    return {};
  };
  Agent first(*tre_, blocking, clock_);
  auto failed = first.provision();
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, ErrorCode::io_error) << fmt::to_string(failed.error());
  EXPECT_TRUE(failed.error().message.starts_with("install: ")) << failed.error().message;
  const std::string package_id = "pkg-" + kImsi + "-1";
  EXPECT_EQ(package_status(package_id), store::PackageStatus::delivered);  // no report
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  EXPECT_EQ(sho_->statuses(), 0);
  EXPECT_EQ(sho_->failure(), "");
  const std::string journal = dir_ / "tre/answers/.provisioning";
  auto kept = read_text_file(journal);
  ASSERT_TRUE(kept);
  EXPECT_EQ(Json::parse(*kept)["package_id"], package_id);

  // The device starts again: the TRE opened anew, the obstacle gone.
  std::filesystem::remove_all(obstacle);
  tre_.reset();
  auto reopened = tre::Tre::open(tre::Options{dir_ / "tre"});
  ASSERT_TRUE(reopened) << fmt::to_string(reopened.error());
  tre_.emplace(std::move(*reopened));
  EXPECT_EQ(registry(),
            committed ? kPcid + ":activated;" + kImsi + ":installed;-" : kPcid + ":activated;-");
  Agent next(*tre_, config(10s), clock_);
  auto out = next.provision();
  ASSERT_TRUE(out) << fmt::to_string(out.error());
  EXPECT_EQ(out->package_id, package_id);
  EXPECT_EQ(out->resumed, committed);
  const std::vector<Step> rest =
      committed
          ? std::vector<Step>{Step::attach_pcid, Step::discovery, Step::report, Step::attach_imsi}
          : std::vector<Step>{Step::attach_pcid, Step::discovery, Step::attestation, Step::package,
                              Step::install,     Step::report,    Step::attach_imsi};
  EXPECT_EQ(steps_of(out->steps), rest);
  EXPECT_EQ(registry(), kPcid + ":activated;" + kImsi + ":selected;" + kImsi);
  EXPECT_EQ(package_status(package_id), store::PackageStatus::reported);
  EXPECT_FALSE(std::filesystem::exists(journal));
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  EXPECT_EQ(sho_->statuses(), 1);
  EXPECT_EQ(sho_->failure(), "");
  secrets_.push_back(out->operational.session);
  secrets_.push_back(out->operational.home_session);
  ASSERT_TRUE(next.detach(out->operational));
}

// F9: an operational device's management round. sho-a's list reaches the TRE through the RO's
// DPF; the first round loses the TRE's answer on its way back (the RO's front refuses it once,
// 503), so the answer is kept and the next round posts it: the TRE applies the instruction once,
// and the operator gets its "ok", not a replayed_instruction.
TEST_F(AgentTest, AManagementRoundAppliesEachInstructionOnceAndPostsAnAnswerItCouldNotPostBefore) {
  manage_after_a_lost_answer(true);
}

// F9, a round stopped between the TRE's commit and the agent's keeping of the answer (here: the
// kept answer removed): the next round hands the instruction to the TRE again, which answers it
// with the outcome it had instead of replayed_instruction, and still applies it once.
TEST_F(AgentTest, AnInstructionWhoseAnswerWasNotKeptIsAnsweredAgainByTheTre) {
  manage_after_a_lost_answer(false);
}

void AgentTest::manage_after_a_lost_answer(bool answer_kept) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  register_device(pin(), ro_pin_);
  ASSERT_FALSE(HasFatalFailure());
  {
    Agent agent(*tre_, direct_config(false), clock_);
    auto out = agent.provision();
    ASSERT_TRUE(out) << fmt::to_string(out.error());
  }
  tre::Instruction list{bundle_->device_id,
                        "-",
                        tre::Action::block,
                        1,
                        std::chrono::floor<std::chrono::seconds>(clock_.now()),
                        true};
  const auto& signer = world().signer("sho-a");
  auto text = tre::sign_instruction(list, signer.key.get(), {signer.cert.get()});
  ASSERT_TRUE(text) << fmt::to_string(text.error());
  auto queued = operator_client("sho-a")->request("POST", ro_url_ + "/v1/dpf/instructions",
                                                  Json{{"pcid", kPcid},
                                                       {"device_id", bundle_->device_id},
                                                       {"instruction_id", "ins-agent-1"},
                                                       {"instruction", *text}}
                                                      .dump(),
                                                  net::kJsonContentType);
  ASSERT_TRUE(queued) << fmt::to_string(queued.error());
  ASSERT_EQ(queued->status, 201) << queued->body;

  // The RO behind a front that loses the first answer.
  auto upstream = net::testing::make_client();
  std::atomic<int> answers_lost{0};
  auto front = net::testing::start_named_server(
      [&](const net::HttpRequest& q) -> net::HttpResponse {
        if (q.target.ends_with("/result") && answers_lost++ == 0) {
          return net::error_response(503, "busy", "lost on the way");
        }
        auto r = upstream->request(q.method, ro_url_ + q.target, q.body, q.content_type, {});
        if (!r) return net::error_response(502, "io_error", "upstream");
        return std::move(*r);
      },
      "ro", net::ClientAuth::none, 64 * 1024);
  ASSERT_TRUE(front);
  AgentConfig via_front = config();
  via_front.drf_url = front->url();
  Agent first(*tre_, via_front, clock_);
  auto lost = first.manage();
  ASSERT_FALSE(lost);
  EXPECT_EQ(answers_lost.load(), 1);
  EXPECT_TRUE(std::filesystem::exists(tre_->dir() + "/answers/ins-agent-1"));
  if (!answer_kept) {
    ASSERT_TRUE(std::filesystem::remove(tre_->dir() + "/answers/ins-agent-1"));
  }

  AgentConfig direct = config();
  direct.drf_url = ro_url_;
  Agent second(*tre_, direct, clock_);
  auto round = second.manage();
  ASSERT_TRUE(round) << fmt::to_string(round.error());
  ASSERT_EQ(round->size(), 1u);
  EXPECT_EQ((*round)[0].instruction_id, "ins-agent-1");
  EXPECT_EQ((*round)[0].outcome, "ok");
  auto report = tre::verify_status_report((*round)[0].report, tre_->platform_certificate());
  ASSERT_TRUE(report) << fmt::to_string(report.error());
  ASSERT_EQ(report->credentials.size(), 1u);
  EXPECT_EQ(report->credentials[0].id, kImsi);
  EXPECT_FALSE(std::filesystem::exists(tre_->dir() + "/answers/ins-agent-1"));
  // The TRE acted once: one list in its audit log, no replay.
  auto audit = tre_->verify_audit();
  ASSERT_TRUE(audit) << fmt::to_string(audit.error());
  int lists = 0;
  for (const auto& e : audit->log.entries) lists += e.event.event == "list";
  EXPECT_EQ(lists, 1);
  // Nothing is pending any more.
  auto idle = second.manage();
  ASSERT_TRUE(idle) << fmt::to_string(idle.error());
  EXPECT_TRUE(idle->empty());
}

TEST_F(AgentTest, ProvisionsOverDirectAccessThenAttachesThroughTheVisitedNetwork) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  register_device(pin(), ro_pin_);
  ASSERT_FALSE(HasFatalFailure());

  Agent agent(*tre_, direct_config(true), clock_);
  auto out = agent.provision();
  ASSERT_TRUE(out) << fmt::to_string(out.error());
  EXPECT_EQ(steps_of(out->steps),
            (std::vector<Step>{Step::connect_direct, Step::discovery, Step::attestation,
                               Step::package, Step::install, Step::report, Step::attach_imsi}));
  EXPECT_EQ(out->operational.imsi, kImsi);
  EXPECT_FALSE(out->operational.restricted);
  EXPECT_TRUE(vno_->vno().session(out->operational.session));
  secrets_.push_back(out->operational.session);
  secrets_.push_back(out->operational.home_session);
}

// Threat model: a device impersonating another over direct access. Its platform certificate is
// genuine (the same supplier) but names another device than the PCID's registration.
TEST_F(AgentTest, ADeviceClaimingAnotherDevicesPcidGetsNoDirectSession) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  register_device(pin(), ro_pin_);
  ASSERT_FALSE(HasFatalFailure());
  auto other = impostor();
  ASSERT_TRUE(other);

  Agent agent(*other, direct_config(false), clock_);
  std::vector<StepTiming> seen;
  agent.on_step([&](const StepTiming& t) { seen.push_back(t); });
  auto out = agent.provision();
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, ErrorCode::wrong_recipient) << fmt::to_string(out.error());
  EXPECT_TRUE(out.error().message.starts_with("connect_direct: drf: ")) << out.error().message;
  EXPECT_TRUE(seen.empty());
  // No discovery, so no arrival; the refusal is on the DRF's record.
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  EXPECT_EQ(sho_->arrivals(), 0);
  auto records = ro_db_->audit().recent(10);
  ASSERT_TRUE(records);
  const auto refusal = std::find_if(records->begin(), records->end(),
                                    [](const auto& r) { return r.event == "direct-session"; });
  ASSERT_NE(refusal, records->end());
  EXPECT_EQ(refusal->outcome, "wrong_recipient");
  // The genuine device still gets its session afterwards: the refusal spent nothing.
  Agent genuine(*tre_, direct_config(false), clock_);
  EXPECT_TRUE(genuine.provision());
}

// A direct session is the ICF's restricted PCID session: the RO's device endpoints take it, but
// it is nobody's operational session, and no VNO's gateway lets it anywhere.
TEST_F(AgentTest, ADirectSessionIsARestrictedPcidSession) {
  start();
  ASSERT_FALSE(HasFatalFailure());
  register_device(pin(), ro_pin_);
  ASSERT_FALSE(HasFatalFailure());

  EXPECT_EQ(
      post_direct("/v1/drf/direct/challenges", {{"pcid", "001019900000999"}}, 201).error().code,
      ErrorCode::not_found);
  auto challenge = post_direct("/v1/drf/direct/challenges", {{"pcid", kPcid}}, 201);
  ASSERT_TRUE(challenge) << fmt::to_string(challenge.error());
  auto nonce = parse_hex((*challenge)["nonce"].get<std::string>(), "nonce");
  ASSERT_TRUE(nonce);
  auto report = tre_->attest(*nonce);
  ASSERT_TRUE(report);
  const Json proof = {{"pcid", kPcid},
                      {"challenge_id", (*challenge)["challenge_id"]},
                      {"report", *report},
                      {"platform_chain", {*pki::certificate_pem(tre_->platform_certificate())}}};
  auto session = post_direct("/v1/drf/direct/sessions", proof, 201);
  ASSERT_TRUE(session) << fmt::to_string(session.error());
  const std::string id = (*session)["home_session"].get<std::string>();
  secrets_.push_back(id);
  EXPECT_EQ((*session)["imsi"], kPcid);
  EXPECT_EQ((*session)["restricted"], true);
  EXPECT_FALSE(session->contains("gateway"));
  EXPECT_FALSE(session->contains("session"));
  // The same proof again: the challenge is used up.
  EXPECT_EQ(post_direct("/v1/drf/direct/sessions", proof, 201).error().code,
            ErrorCode::transition_refused);

  // In the ICF's store as a VNO's would be, restricted; the SHO's AuC (operational sessions)
  // does not know it.
  auto stored = ro_db_->sessions().find(id);
  ASSERT_TRUE(stored && *stored);
  EXPECT_TRUE((*stored)->restricted);
  EXPECT_EQ((*stored)->vno, ro::kDirectAccessHolder);
  auto operational = auc_db_->sessions().find(id);
  ASSERT_TRUE(operational);
  EXPECT_FALSE(*operational);

  // The RO's device endpoints accept it unchanged.
  auto client = net::testing::make_client();
  auto bootstrap = client->request("GET", ro_url_ + "/v1/drf/bootstrap", "", "",
                                   {{"Authorization", "Bearer " + id}});
  ASSERT_TRUE(bootstrap) << fmt::to_string(bootstrap.error());
  EXPECT_EQ(bootstrap->status, 200) << bootstrap->body;

  // The gateway takes VNO sessions only: not even the RO is reachable with it.
  net::HttpsClientOptions through;
  through.proxy = vno_->gateway_address();
  through.proxy_credential = id;
  auto tunnelled = net::testing::make_client("", through);
  for (const std::string& url : {sho_->url() + "/healthz", ro_url_ + "/healthz"}) {
    auto r = tunnelled->request("GET", url);
    ASSERT_FALSE(r) << url;
    EXPECT_TRUE(r.error().message.starts_with("proxy: ")) << fmt::to_string(r.error());
  }
}

}  // namespace
}  // namespace mcim::device
