// The SHO service over real HTTPS servers: the SHO, the real RO service (its SHO endpoint pointing
// at this SHO) and a small PVA answering challenges and validations with a signed result. F1
// registration and its refusals, owner status and activation, and F2 steps 7-14 with a real TRE:
// arrival -> challenge and attestation request, attestation -> package the TRE installs, install
// report -> IMSI active at the SHO's AuC; the untrusted result, and duplicated notices. Every
// refusal is checked for its exact status and code and for the stored state left as it was.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "../device/test_sho.h"
#include "../net/net_test_util.h"
#include "../store/audit_refusals.h"
#include "../store/pg_server.h"
#include "../tre/tre_fixture.h"
#include "common/bytes.h"
#include "common/hex.h"
#include "common/log.h"
#include "net/http_error.h"
#include "net/router.h"
#include "pki/attestation.h"
#include "pki/certificate.h"
#include "pki/openssl.h"
#include "roles/ro/service.h"
#include "roles/sho/service.h"
#include "store/store.h"
#include "tre/instruction.h"
#include "tre/tre.h"

namespace mcim {
namespace {

using namespace std::chrono_literals;
using net::Json;
using net::testing::TestPki;
using pki::testing::TempDir;
using tre::testing::World;

constexpr std::string_view kRo = "ro-1";
constexpr std::string_view kSho = "sho-a";
constexpr std::string_view kPva = "pva-1";
constexpr std::string_view kApn = "m2m-prov.ro-1";
const std::string kPcidPrefix = "00101990";
const std::string kImsiPrefix = "00102";
const std::string kOwnerToken = "owner-a-token-0123456789";
const std::string kOtherToken = "owner-b-token-9876543210";

// ---- Servers, clients, calls ------------------------------------------------------------------

std::unique_ptr<net::HttpServer> serve(net::HttpHandler handler, const std::string& name,
                                       net::ClientAuth auth, std::size_t body_limit = 256 * 1024) {
  return net::testing::start_named_server(std::move(handler), name, auth, body_limit);
}

std::shared_ptr<net::HttpsClient> client(const std::string& id) {
  net::HttpsClientOptions o;
  if (!id.empty()) o.identity = TestPki::get().operator_client(id).identity;
  return net::testing::make_client("", std::move(o));
}

struct Answer {
  int status = 0;
  std::string body;
  Json json;
  std::string code() const {
    if (!json.is_object() || !json.contains("error")) return "";
    return json["error"].value("code", "");
  }
  std::string text(const std::string& m) const {
    return json.is_object() && json.contains(m) && json[m].is_string() ? json[m].get<std::string>()
                                                                       : std::string();
  }
};

Answer call(net::HttpsClient& c, std::string_view method, const std::string& url,
            const Json& body = nullptr, const std::string& bearer = "") {
  std::vector<std::pair<std::string, std::string>> headers;
  if (!bearer.empty()) headers.emplace_back("Authorization", "Bearer " + bearer);
  const std::string text = body.is_null() ? std::string() : body.dump();
  auto r = c.request(method, url, text, body.is_null() ? "" : net::kJsonContentType, headers);
  Answer a;
  if (!r) {
    ADD_FAILURE() << method << " " << url << ": " << fmt::to_string(r.error());
    a.status = -1;
    return a;
  }
  a.status = r->status;
  a.body = r->body;
  a.json = Json::parse(r->body, nullptr, false);
  if (a.json.is_discarded()) a.json = nullptr;
  return a;
}

void expect_refusal(const Answer& a, int status, ErrorCode code) {
  EXPECT_EQ(a.status, status) << a.body;
  EXPECT_EQ(a.code(), to_string(code)) << a.body;
}

// Polls `fn` until it is true or 10 s passed.
bool eventually(const std::function<bool()>& fn) {
  for (int i = 0; i < 200; ++i) {
    if (fn()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return fn();
}

// ---- A small PVA ------------------------------------------------------------------------------

// Challenges and validations for the SHO (mTLS, sho-a only), each challenge usable once; the
// result says what the test chose (trusted, or one failure), signed with a result-signing key.
class TestPva {
 public:
  TestPva(World& world) : router_("pva") {
    pki::CertSpec spec;
    spec.profile = pki::Profile::result_signing;
    spec.subject = "CN=result signer,O=pva-1";
    spec.sans = {"URI:urn:mcim:operator:" + std::string(kPva)};
    auto issued = world.operators().issue(spec, world.clock(), world.rng());
    EXPECT_TRUE(issued) << fmt::to_string(issued.error());
    std::vector<pki::X509Ptr> certs;
    certs.push_back(std::move(issued->cert));
    auto signer = pki::ResultSigner::create(std::move(issued->key), std::move(certs));
    EXPECT_TRUE(signer) << fmt::to_string(signer.error());
    signer_.emplace(std::move(*signer));
    net::RouteOptions only_sho;
    only_sho.authorize = net::require_operator({std::string(kSho)});
    EXPECT_TRUE(router_.add(
        "POST", "/v1/pva/challenges", [this](const net::Request& r) { return challenge(r); },
        only_sho));
    EXPECT_TRUE(router_.add(
        "POST", "/v1/pva/validations", [this](const net::Request& r) { return validate(r); },
        only_sho));
    server_ = serve(router_.handler(), "pva", net::ClientAuth::required);
  }

  std::string url() const { return server_ ? server_->url() : std::string(); }
  void fail_with(std::optional<pki::Failure> f) {
    std::lock_guard lock(mu_);
    failure_ = std::move(f);
  }
  // Signs its results over another nonce than the challenge's (a PVA gone wrong, or a replay).
  void sign_other_nonce() {
    std::lock_guard lock(mu_);
    other_nonce_ = true;
  }
  int challenges() const {
    std::lock_guard lock(mu_);
    return int(nonces_.size());
  }

 private:
  net::HttpResponse challenge(const net::Request& r) {
    Json body = Json::parse(r.http.body, nullptr, false);
    OsRandom rng;
    const std::string id = to_hex(rng.draw<16>());
    const Bytes<32> nonce = rng.draw<32>();
    std::lock_guard lock(mu_);
    nonces_[id] = ByteVec(nonce.begin(), nonce.end());
    devices_[id] = body.value("device_id", "");
    return net::json_response(
        201, Json{{"challenge_id", id}, {"nonce", to_hex(nonce)}, {"expires", 4'000'000'000}});
  }

  net::HttpResponse validate(const net::Request& r) {
    Json body = Json::parse(r.http.body, nullptr, false);
    const std::string id = body.value("challenge_id", "");
    pki::ValidationResult result;
    {
      std::lock_guard lock(mu_);
      if (!nonces_.contains(id)) return net::error_response(404, "not_found", "no challenge");
      if (used_.contains(id)) return net::error_response(409, "transition_refused", "used");
      used_.insert(id);
      result.nonce = nonces_[id];
      result.device_id = devices_[id];
      if (failure_) result.failures.push_back(*failure_);
      if (other_nonce_) result.nonce.assign(32, 0x0e);
    }
    auto report = pki::decode_signed_report(body.value("report", ""));
    if (!report) return net::error_response(report.error());
    if (report->report.nonce != result.nonce && !other_nonce_) {
      result.failures.push_back({pki::Check::nonce, ErrorCode::nonce_mismatch, "nonce"});
    }
    result.time = std::chrono::floor<std::chrono::seconds>(clock_.now());
    auto signed_result = signer_->sign(result);
    if (!signed_result) return net::error_response(signed_result.error());
    Json failures = Json::array();
    for (const auto& f : result.failures) {
      failures.push_back({{"check", pki::to_string(f.check)},
                          {"code", to_string(f.code)},
                          {"message", f.message}});
    }
    return net::json_response(
        200,
        Json{{"trusted", result.trusted()}, {"failures", failures}, {"result", *signed_result}});
  }

  net::Router router_;
  SystemClock clock_;
  std::optional<pki::ResultSigner> signer_;
  mutable std::mutex mu_;
  std::map<std::string, ByteVec> nonces_;
  std::map<std::string, std::string> devices_;
  std::set<std::string> used_;
  std::optional<pki::Failure> failure_;
  bool other_nonce_ = false;
  std::unique_ptr<net::HttpServer> server_;
};

// ---- A fake RO (F4) ---------------------------------------------------------------------------

// The RO's side of an operator change as the F4 contract has it (docs/protocol.md "Registration
// Operator"): `POST /v1/drf/registrations/{pcid}/change` answered as the test chose, and the
// successor's attestation requests, packages and refusals accepted. Every call is kept, in order,
// for the test to read (the PIN included: the test checks that it reached the RO).
class FakeRo {
 public:
  struct Call {
    std::string method, path;
    Json body;
  };

  FakeRo() : router_("fake-ro") {
    net::RouteOptions only_sho;
    only_sho.authorize = net::require_operator({std::string(kSho)});
    auto keep = [this](const net::Request& r) {
      std::lock_guard lock(mu_);
      calls_.push_back(
          {r.http.method, std::string(r.path), Json::parse(r.http.body, nullptr, false)});
    };
    auto route = [&](const std::string& method, const std::string& path,
                     std::function<net::HttpResponse(const net::Request&)> answer) {
      EXPECT_TRUE(router_.add(
          method, path,
          [keep, answer](const net::Request& r) {
            keep(r);
            return answer(r);
          },
          only_sho));
    };
    route("POST", "/v1/drf/registrations/{pcid}/change", [this](const net::Request& r) {
      std::lock_guard lock(mu_);
      if (change_refusal_) return *change_refusal_;
      return net::json_response(
          200,
          Json{{"pcid", std::string(r.param("pcid"))}, {"successor", kSho}, {"status", "pending"}});
    });
    route("PUT", "/v1/drf/registrations/{pcid}", [](const net::Request& r) {
      return net::json_response(200, Json{{"pcid", std::string(r.param("pcid"))}, {"sho", kSho}});
    });
    route("DELETE", "/v1/drf/registrations/{pcid}",
          [](const net::Request&) { return net::json_response(200, Json::object()); });
    route("POST", "/v1/dpf/attestation-requests", [this](const net::Request&) {
      std::lock_guard lock(mu_);
      if (request_refusal_) return *request_refusal_;
      return net::json_response(201, Json::object());
    });
    route("POST", "/v1/dpf/packages",
          [](const net::Request&) { return net::json_response(201, Json::object()); });
    route("POST", "/v1/dpf/refusals",
          [](const net::Request&) { return net::json_response(200, Json::object()); });
    server_ = serve(router_.handler(), "ro", net::ClientAuth::required);
  }

  std::string url() const { return server_ ? server_->url() : std::string(); }
  void refuse_change(int status, ErrorCode code) {
    std::lock_guard lock(mu_);
    change_refusal_ = net::error_response(status, to_string(code), "refused by the test");
  }
  void refuse_requests(int status, ErrorCode code) {
    std::lock_guard lock(mu_);
    request_refusal_ = net::error_response(status, to_string(code), "refused by the test");
  }
  void accept_requests() {
    std::lock_guard lock(mu_);
    request_refusal_.reset();
  }
  // The last call to `path` (method POST unless told), or one with a null body.
  Call last(const std::string& path, const std::string& method = "POST") const {
    std::lock_guard lock(mu_);
    for (auto it = calls_.rbegin(); it != calls_.rend(); ++it) {
      if (it->path == path && it->method == method) return *it;
    }
    return {};
  }
  std::size_t count(const std::string& path, const std::string& method = "POST") const {
    std::lock_guard lock(mu_);
    return std::size_t(std::count_if(calls_.begin(), calls_.end(), [&](const Call& c) {
      return c.path == path && c.method == method;
    }));
  }

 private:
  net::Router router_;
  mutable std::mutex mu_;
  std::vector<Call> calls_;                                            // guarded by mu_
  std::optional<net::HttpResponse> change_refusal_, request_refusal_;  // guarded by mu_
  std::unique_ptr<net::HttpServer> server_;
};

// ---- Devices ----------------------------------------------------------------------------------

struct Device {
  tre::SupplierBundle bundle;
  std::optional<tre::Tre> tre;
  std::string session;  // its home session at the RO (what the VNO opens after AKA)

  const std::string& pcid() const { return bundle.pcid; }
  const std::string& id() const { return bundle.device_id; }
  std::string pin() const { return std::string(tre::pin_text(bundle)); }
  std::string cert_pem() const {
    auto pem = pki::certificate_pem(bundle.platform_chain.front().get());
    EXPECT_TRUE(pem);
    return pem ? *pem : std::string();
  }
  Json chain_json() const {
    Json out = Json::array();
    for (const auto& c : bundle.platform_chain) out.push_back(*pki::certificate_pem(c.get()));
    return out;
  }
};

// ---- The fixture ------------------------------------------------------------------------------

class ShoServiceTest : public ::testing::TestWithParam<std::string> {
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
    secrets_ = {kOwnerToken, kOtherToken};
    ro_db_ = open_db("ro");
    sho_db_ = open_db("sho");
    ASSERT_TRUE(ro_db_ && sho_db_);
    pva_ = std::make_unique<TestPva>(world());
    ASSERT_FALSE(pva_->url().empty());
    // The SHO's server exists before its service: the RO must know its URL and the SHO the RO's.
    sho_server_ = serve([this](const net::HttpRequest& r) { return sho_handler_(r); }, "sho-a",
                        net::ClientAuth::optional);
    ASSERT_TRUE(sho_server_);
    start_ro();
    if (HasFatalFailure()) return;
    start_sho();
  }

  void TearDown() override {
    sho_server_.reset();
    fake_ro_.reset();
    ro_server_.reset();
    ro_.reset();
    sho_.reset();
    pva_.reset();
    for (auto& d : devices_) d.tre.reset();
    ro_db_.reset();
    sho_db_.reset();
    for (const std::string& url : pg_urls_) store::testing::PgServer::instance().drop_schema(url);
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

  std::unique_ptr<store::Database> open_db(const std::string& name) {
    std::string url = GetParam() == "memory" ? "memory:" : "sqlite:" + (dir_ / (name + ".db"));
    if (GetParam() == "postgresql") {
      auto created = store::testing::PgServer::instance().create_schema();
      EXPECT_TRUE(created) << fmt::to_string(created.error());
      if (!created) return nullptr;
      url = *created;
      pg_urls_.push_back(url);
    }
    db_urls_[name] = url;
    auto db = store::open_database(url);
    EXPECT_TRUE(db) << fmt::to_string(db.error());
    return db ? std::move(*db) : nullptr;
  }

  // A restart of the SHO: the service goes, and its database unless it lives in memory (there the
  // same object stays, as nothing else would); both come back on the same data.
  void restart_sho() {
    sho_handler_ = [](const net::HttpRequest&) {
      return net::error_response(503, "busy", "restarting");
    };
    sho_.reset();
    if (GetParam() != "memory") {
      sho_db_.reset();
      auto db = store::open_database(db_urls_.at("sho"));
      ASSERT_TRUE(db) << fmt::to_string(db.error());
      sho_db_ = std::move(*db);
    }
    start_sho();
  }

  void start_ro(const std::function<void(ro::RoServiceConfig&)>& tweak = {}) {
    auto c = device::testing::ro_config(world(), sho_server_->url());
    ASSERT_TRUE(c) << fmt::to_string(c.error());
    if (tweak) tweak(*c);
    auto service = ro::RoService::create(*ro_db_, std::move(*c), clock_);
    ASSERT_TRUE(service) << fmt::to_string(service.error());
    ro_ = std::move(*service);
    ro_server_ = serve(ro_->handler(), "ro", net::ClientAuth::optional, ro_->body_limit());
    ASSERT_TRUE(ro_server_);
    ro_url_ = ro_server_->url();
  }

  sho::ShoServiceConfig sho_config() {
    sho::ShoServiceConfig c;
    c.operator_id = kSho;
    c.owners = {sho::Owner{"owner-a", pki::sha256(bytes_of(kOwnerToken))},
                sho::Owner{"owner-b", pki::sha256(bytes_of(kOtherToken))}};
    sho::RoEndpoint ro;
    ro.operator_id = kRo;
    ro.pcid_prefix = kPcidPrefix;
    ro.base_url = ro_url_;
    ro.dpf_url = ro_url_;
    ro.dpf_key_pin = pki::spki_sha256(TestPki::get().named_server("ro").identity->key.get());
    ro.apn = kApn;
    c.ros = {ro};
    c.roaming_partners = {"vno-a"};
    c.imsi_prefix = kImsiPrefix;
    c.op = Secret<16>(tre::testing::kOp);
    auto suppliers = pki::TrustAnchors::from_certs({world().supplier().cert()});
    auto pva = pki::TrustAnchors::from_certs({world().operators().cert()});
    EXPECT_TRUE(suppliers && pva);
    c.supplier_roots = std::make_shared<const pki::TrustAnchors>(std::move(*suppliers));
    c.pva_roots = std::make_shared<const pki::TrustAnchors>(std::move(*pva));
    c.pva_url = pva_->url();
    auto signer = std::make_shared<pki::KeyPair>();
    signer->key = pki::up_ref(world().signer(std::string(kSho)).key.get());
    signer->certs.push_back(pki::up_ref(world().signer(std::string(kSho)).cert.get()));
    c.package_signer = std::move(signer);
    c.client = client(std::string(kSho));
    return c;
  }

  // (Re)starts the SHO behind its server, with the fixture's config as `tweak` changes it.
  void start_sho(const std::function<void(sho::ShoServiceConfig&)>& tweak = {}) {
    sho::ShoServiceConfig c = sho_config();
    if (tweak) tweak(c);
    auto service = sho::ShoService::create(*sho_db_, std::move(c), clock_);
    ASSERT_TRUE(service) << fmt::to_string(service.error());
    sho_ = std::move(*service);
    sho_handler_ = sho_->handler();
    sho_url_ = sho_server_->url();
  }

  // A manufactured device: its PCID in the RO's ICF, its TRE initialised.
  Device& make_device(int n) {
    const std::string pcid = fmt::format("{}{:07}", kPcidPrefix, n);
    Device d{world().bundle(pcid, fmt::format("dev-sho-{}", n)), std::nullopt, ""};
    store::PcidSubscription sub;
    sub.pcid = pcid;
    sub.batch = "batch-sho";
    sub.k = d.bundle.k;
    sub.opc = d.bundle.opc;
    sub.ind_bits = d.bundle.ind_bits;
    sub.dormant_until = store::Time(std::chrono::floor<std::chrono::seconds>(clock_.now())) + 24h;
    sub.not_after = store::Time(std::chrono::floor<std::chrono::seconds>(clock_.now())) + 48h;
    EXPECT_TRUE(ro_db_->pcids().add_batch({sub}));
    tre::Options o{dir_ / ("tre-" + d.id())};
    EXPECT_TRUE(tre::Tre::init(o, d.bundle));
    auto opened = tre::Tre::open(o);
    EXPECT_TRUE(opened) << fmt::to_string(opened.error());
    if (opened) d.tre.emplace(std::move(*opened));
    secrets_.push_back(d.pin());
    secrets_.push_back(to_hex(d.bundle.k.get()));
    devices_.push_back(std::move(d));
    return devices_.back();
  }

  Json registration(const Device& d) {
    return Json{{"device_id", d.id()},
                {"pcid", d.pcid()},
                {"pin", d.pin()},
                {"platform_cert", d.cert_pem()}};
  }

  Answer register_device(const Json& body, const std::string& token = kOwnerToken) {
    return call(*owner_, "POST", sho_url_ + "/v1/subscribers", body, token);
  }

  Answer subscriber(const Device& d, const std::string& token = kOwnerToken) {
    return call(*owner_, "GET", sho_url_ + "/v1/subscribers/" + d.id(), nullptr, token);
  }

  // The device's home session at the RO, as the VNO opens it after AKA.
  void open_session(Device& d) {
    OsRandom rng;
    store::Session s;
    s.id = to_hex(rng.draw<16>());
    s.imsi = d.pcid();
    s.vno = "vno-a";
    s.restricted = true;
    s.created = std::chrono::floor<std::chrono::seconds>(clock_.now());
    s.expires = s.created + 1h;
    ASSERT_TRUE(ro_db_->sessions().open(s, s.created));
    d.session = s.id;
    secrets_.push_back(s.id);
  }

  // F1 done and the device on a session: registered, IMSI allocated.
  std::string registered(Device& d) {
    Answer a = register_device(registration(d));
    EXPECT_EQ(a.status, 201) << a.body;
    auto nonce = parse_hex_fixed<16>(a.text("registration_nonce"), "nonce");
    EXPECT_TRUE(nonce);
    if (nonce) {
      EXPECT_TRUE(d.tre->record_registration(*nonce));
    }
    auto auc = sho_db_->pcids().find(a.text("imsi"));
    EXPECT_TRUE(auc && *auc);
    if (auc && *auc) {
      secrets_.push_back(to_hex((*auc)->k.get()));
      secrets_.push_back(to_hex((*auc)->opc.get()));
    }
    open_session(d);
    return a.text("imsi");
  }

  // Steps 5-8: the bootstrap makes the RO announce the arrival; the SHO's attestation request
  // reaches the RO; the device answers it.
  Answer arrive_and_attest(Device& d) {
    Answer boot = call(*device_, "GET", ro_url_ + "/v1/drf/bootstrap", nullptr, d.session);
    EXPECT_EQ(boot.status, 200) << boot.body;
    Answer req;
    EXPECT_TRUE(eventually([&] {
      req = call(*device_, "GET", ro_url_ + "/v1/dpf/attestation-request", nullptr, d.session);
      return req.status == 200;
    })) << req.body;
    auto nonce = parse_hex(req.text("nonce"), "nonce");
    EXPECT_TRUE(nonce);
    auto report = d.tre->attest(nonce ? *nonce : ByteVec(32));
    EXPECT_TRUE(report) << fmt::to_string(report.error());
    last_request_ = req.text("request_id");
    last_report_ = report ? *report : std::string();
    return call(*device_, "POST", ro_url_ + "/v1/dpf/attestations/" + last_request_,
                Json{{"report", last_report_}, {"platform_chain", d.chain_json()}}, d.session);
  }

  // F4: the SHO (re)started with a fake RO (FakeRo) as the RO holding the test's PCIDs.
  void use_fake_ro() {
    fake_ro_ = std::make_unique<FakeRo>();
    ASSERT_FALSE(fake_ro_->url().empty());
    start_sho([this](sho::ShoServiceConfig& c) {
      c.ros.at(0).base_url = fake_ro_->url();
      c.ros.at(0).dpf_url = fake_ro_->url();
    });
  }

  // Another home operator's MCIM (sho-b's) installed and activated on the device: what F4
  // replaces. Its IMSI.
  std::string install_old_mcim(Device& d) {
    const std::string imsi = fmt::format("00109{:010}", devices_.size());
    OsRandom rng;
    const Bytes<16> nonce = rng.draw<16>();
    EXPECT_TRUE(d.tre->record_registration(nonce));
    return install_from_sho_b(d, imsi, nonce, "");
  }

  // A package of sho-b's for the device (its nonce recorded in the TRE), installed, or installed
  // in place of `replaced` (F4). The IMSI; the outcome of the replacing install in replaced_.
  std::string install_from_sho_b(Device& d, const std::string& imsi, const Bytes<16>& nonce,
                                 const std::string& replaced) {
    const pki::McimDocument doc = world().document(d.id(), imsi, "sho-b", 1, nonce);
    const ByteVec pkg = world().seal(doc, world().signer("sho-b"), d.tre->platform_certificate());
    if (!replaced.empty()) {
      replaced_ = d.tre->install_replacing(pkg, replaced);
      EXPECT_TRUE(replaced_.install.result) << fmt::to_string(replaced_.install.result.error());
      return imsi;
    }
    tre::InstallOutcome out = d.tre->install(pkg);
    EXPECT_TRUE(out.result) << fmt::to_string(out.result.error());
    EXPECT_TRUE(d.tre->apply(tre::Action::activate, imsi));
    return imsi;
  }

  // F4 steps 1-3 at this SHO: the owner orders the change; the device records the answer's
  // registration nonce.
  Answer change_operator(Device& d) {
    Json body = registration(d);
    body["change"] = true;
    Answer a = register_device(body);
    auto nonce = parse_hex_fixed<16>(a.text("registration_nonce"), "nonce");
    if (a.status == 201 && nonce) {
      EXPECT_TRUE(d.tre->record_registration(*nonce));
      auto auc = sho_db_->pcids().find(a.text("imsi"));
      if (auc && *auc) {
        secrets_.push_back(to_hex((*auc)->k.get()));
        secrets_.push_back(to_hex((*auc)->opc.get()));
      }
    }
    return a;
  }

  // The device answers the attestation request the SHO made at the fake RO; the RO's relay of it
  // to the SHO. The SHO's answer.
  Answer attest_at_fake_ro(Device& d) {
    const FakeRo::Call req = fake_ro_->last("/v1/dpf/attestation-requests");
    EXPECT_TRUE(req.body.is_object()) << "no attestation request";
    if (!req.body.is_object()) return {};
    auto nonce = parse_hex(req.body.value("nonce", ""), "nonce");
    EXPECT_TRUE(nonce);
    auto report = d.tre->attest(nonce ? *nonce : ByteVec(32));
    EXPECT_TRUE(report) << fmt::to_string(report.error());
    last_request_ = req.body.value("request_id", "");
    last_report_ = report ? *report : std::string();
    return call(*as_ro_, "POST", sho_url_ + "/v1/sho/attestations",
                Json{{"request_id", last_request_},
                     {"pcid", d.pcid()},
                     {"device_id", d.id()},
                     {"sho", kSho},
                     {"report", last_report_},
                     {"platform_chain", d.chain_json()}});
  }

  // The package the SHO handed to the fake RO last: its id and bytes.
  std::pair<std::string, ByteVec> handed_over() {
    const FakeRo::Call pkg = fake_ro_->last("/v1/dpf/packages");
    EXPECT_TRUE(pkg.body.is_object()) << "no package";
    if (!pkg.body.is_object()) return {};
    auto bytes = parse_hex(pkg.body.value("package", ""), "package");
    EXPECT_TRUE(bytes);
    return {pkg.body.value("package_id", ""), bytes ? *bytes : ByteVec()};
  }

  // `text`, a status report of the device's, re-signed by `key` after `edit`.
  static std::string resigned(const Device& d, const std::string& text, EVP_PKEY* key,
                              const std::function<void(tre::StatusReport&)>& edit) {
    auto report = tre::verify_status_report(text, d.bundle.platform_chain.front().get());
    EXPECT_TRUE(report) << fmt::to_string(report.error());
    if (!report) return {};
    edit(*report);
    auto signed_text = tre::sign_status_report(*report, key);
    EXPECT_TRUE(signed_text) << fmt::to_string(signed_text.error());
    return signed_text ? *signed_text : std::string();
  }

  // The device fetches its package at the DPF and its TRE installs it: the RO's relay of the
  // install report to the SHO (package_id, device_id, sho, report), for a test to make by hand.
  Json installed_relay(Device& d) {
    Answer pkg = call(*device_, "GET", ro_url_ + "/v1/dpf/package", nullptr, d.session);
    EXPECT_EQ(pkg.status, 200) << pkg.body;
    auto bytes = parse_hex(pkg.text("package"), "package");
    EXPECT_TRUE(bytes);
    tre::InstallOutcome installed = d.tre->install(bytes ? *bytes : ByteVec());
    EXPECT_TRUE(installed.result) << fmt::to_string(installed.result.error());
    return Json{{"package_id", pkg.text("package_id")},
                {"device_id", d.id()},
                {"sho", kSho},
                {"report", installed.report}};
  }

  std::string status_of(const Device& d) {
    auto s = sho_db_->subscribers().find(d.id());
    return s && *s ? std::string(store::to_string((*s)->status)) : std::string("absent");
  }

  // What the SHO's and the RO's stores hold about a device (digests, not secrets).
  std::string snapshot(const Device& d) {
    std::string out;
    auto s = sho_db_->subscribers().find(d.id());
    if (!s || !*s) {
      out += fmt::format("subscriber {}\n", s ? "absent" : "error");
    } else {
      const auto& x = **s;
      out += fmt::format("subscriber {} {} {} {} {} {} {} {} {}\n", x.device_id, x.pcid, x.owner,
                         x.imsi, store::to_string(x.status), x.challenge_id, x.package_id,
                         x.refusal, x.updated.time_since_epoch().count());
      auto auc = sho_db_->pcids().find(x.imsi);
      out += fmt::format("auc {}\n", auc && *auc ? store::to_string((*auc)->status) : "absent");
    }
    auto by_pcid = sho_db_->subscribers().find_by_pcid(d.pcid());
    out += fmt::format("by_pcid {}\n", by_pcid && *by_pcid ? (*by_pcid)->device_id : "none");
    auto count = sho_db_->pcids().count();
    out += fmt::format("auc_count {}\n", count ? *count : 999);
    auto reg = ro_db_->registrations().find(d.pcid());
    out += fmt::format("ro_registration {} {}\n", reg && *reg ? (*reg)->sho : "none",
                       reg && *reg ? (*reg)->refusal : "");
    auto next = ro_db_->packages().next_for_device(d.id());
    out += fmt::format("ro_package {}\n", next && *next ? (*next)->package_id : "none");
    return out;
  }

  static World* world_;
  TempDir dir_;
  SystemClock clock_;
  std::unique_ptr<store::Database> ro_db_, sho_db_;
  std::vector<std::string> pg_urls_;  // schemas made for this test, dropped after it
  std::map<std::string, std::string> db_urls_;  // by open_db's name
  std::unique_ptr<TestPva> pva_;
  std::unique_ptr<ro::RoService> ro_;
  std::unique_ptr<net::HttpServer> ro_server_;
  std::string ro_url_;
  std::unique_ptr<sho::ShoService> sho_;
  std::unique_ptr<FakeRo> fake_ro_;  // F4 tests: the SHO's RO instead of ro_
  tre::ReplaceOutcome replaced_;
  net::HttpHandler sho_handler_ = [](const net::HttpRequest&) {
    return net::error_response(503, "busy", "not started");
  };
  std::unique_ptr<net::HttpServer> sho_server_;
  std::string sho_url_;

  std::shared_ptr<net::HttpsClient> owner_ = client("");
  std::shared_ptr<net::HttpsClient> device_ = client("");
  std::shared_ptr<net::HttpsClient> as_ro_ = client(std::string(kRo));
  std::shared_ptr<net::HttpsClient> vno_a_ = client("vno-a");
  std::shared_ptr<net::HttpsClient> vno_b_ = client("vno-b");
  std::deque<Device> devices_;  // references stay valid as devices are added
  std::string last_request_, last_report_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
  std::vector<std::string> secrets_;
};

World* ShoServiceTest::world_ = nullptr;

// ---- F1 ---------------------------------------------------------------------------------------

TEST_P(ShoServiceTest, RegistersASubscriberAtTheShoAndTheRo) {
  Device& d = make_device(1);
  Answer a = register_device(registration(d));
  ASSERT_EQ(a.status, 201) << a.body;
  EXPECT_EQ(a.text("device_id"), d.id());
  EXPECT_EQ(a.text("pcid"), d.pcid());
  EXPECT_EQ(a.text("imsi"), "001020000000001");
  EXPECT_EQ(a.text("status"), "registered");
  EXPECT_EQ(a.text("registration_nonce").size(), 32u);
  EXPECT_GT(a.json.value("nonce_expires", 0), 0);

  auto s = sho_db_->subscribers().find(d.id());
  ASSERT_TRUE(s && *s);
  EXPECT_EQ((*s)->owner, "owner-a");
  EXPECT_EQ(to_hex((*s)->registration_nonce), a.text("registration_nonce"));
  auto auc = sho_db_->pcids().find("001020000000001");
  ASSERT_TRUE(auc && *auc);
  EXPECT_EQ((*auc)->status, store::PcidStatus::dormant);
  EXPECT_TRUE((*auc)->opc.get() == aka::Milenage::compute_opc((*auc)->k.get(), tre::testing::kOp));
  auto reg = ro_db_->registrations().find(d.pcid());
  ASSERT_TRUE(reg && *reg);
  EXPECT_EQ((*reg)->sho, kSho);
  EXPECT_EQ((*reg)->device_id, d.id());
  EXPECT_EQ((*reg)->apn, kApn);

  // A second device gets the next IMSI.
  Device& e = make_device(2);
  Answer b = register_device(registration(e));
  ASSERT_EQ(b.status, 201) << b.body;
  EXPECT_EQ(b.text("imsi"), "001020000000002");
  // By default the nonce lives the SHO's nonce_lifetime (24 h); an owner may ask for less.
  EXPECT_EQ((*s)->nonce_expires - (*s)->created, std::chrono::hours(24));
  Device& f = make_device(5);
  Json shorter = registration(f);
  shorter["nonce_lifetime_s"] = 90;
  Answer c = register_device(shorter);
  ASSERT_EQ(c.status, 201) << c.body;
  auto fs = sho_db_->subscribers().find(f.id());
  ASSERT_TRUE(fs && *fs);
  EXPECT_EQ((*fs)->nonce_expires - (*fs)->created, std::chrono::seconds(90));
  EXPECT_EQ(
      c.json.value("nonce_expires", std::int64_t{0}),
      std::chrono::duration_cast<std::chrono::seconds>((*fs)->nonce_expires.time_since_epoch())
          .count());
}

TEST_P(ShoServiceTest, RefusesBadRegistrationsAndLeavesNothingBehind) {
  Device& d = make_device(3);
  const std::string before = snapshot(d);
  // No token, an unknown token.
  {
    auto r = call(*owner_, "POST", sho_url_ + "/v1/subscribers", registration(d));
    expect_refusal(r, 401, ErrorCode::unauthenticated);
    expect_refusal(register_device(registration(d), "not-a-token"), 401,
                   ErrorCode::unauthenticated);
    // The token is checked before the body: a stranger learns nothing of the schema.
    expect_refusal(register_device(Json{{"colour", 1}}, "not-a-token"), 401,
                   ErrorCode::unauthenticated);
    expect_refusal(register_device(Json{{"colour", 1}}), 400, ErrorCode::bad_format);
  }
  // Not a certificate; one from another CA; another device's.
  {
    Json body = registration(d);
    body["platform_cert"] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    expect_refusal(register_device(body), 400, ErrorCode::bad_format);

    auto rogue = pki::Authority::create(dir_ / "rogue", "Rogue Supplier", nullptr, 3650, "",
                                        world().clock(), world().rng());
    ASSERT_TRUE(rogue) << fmt::to_string(rogue.error());
    pki::CertSpec spec;
    spec.profile = pki::Profile::platform;
    spec.subject = "CN=" + d.id();
    spec.device_id = d.id();
    spec.model = "m";
    auto fake = rogue->issue(spec, world().clock(), world().rng());
    ASSERT_TRUE(fake) << fmt::to_string(fake.error());
    body["platform_cert"] = *pki::certificate_pem(fake->cert.get());
    expect_refusal(register_device(body), 422, ErrorCode::chain_invalid);

    body = registration(d);
    body["device_id"] = "dev-somebody-else";
    expect_refusal(register_device(body), 400, ErrorCode::invalid_argument);
  }
  // A PCID no RO holds; one the RO does not know (its DRF refuses).
  {
    Json body = registration(d);
    body["pcid"] = "00109990000001";
    expect_refusal(register_device(body), 404, ErrorCode::not_found);
    body["pcid"] = kPcidPrefix + "9999999";
    expect_refusal(register_device(body), 404, ErrorCode::not_found);
  }
  // Bad JSON (a short PIN); a nonce lifetime of 0, of a string, or longer than the SHO's (24 h).
  {
    Json body = registration(d);
    body["pin"] = "12";
    EXPECT_EQ(register_device(body).status, 400);
    body = registration(d);
    body["nonce_lifetime_s"] = 0;
    expect_refusal(register_device(body), 400, ErrorCode::invalid_argument);
    body["nonce_lifetime_s"] = "60";
    expect_refusal(register_device(body), 400, ErrorCode::bad_format);
    body["nonce_lifetime_s"] = 86'401;
    Answer longer = register_device(body);
    expect_refusal(longer, 400, ErrorCode::invalid_argument);
    EXPECT_NE(longer.body.find("at most 86400"), std::string::npos) << longer.body;
  }
  EXPECT_EQ(snapshot(d), before);
  auto s = sho_db_->subscribers().find_by_pcid(kPcidPrefix + "9999999");
  ASSERT_TRUE(s);
  EXPECT_FALSE(*s);
  auto count = sho_db_->pcids().count();
  ASSERT_TRUE(count);
  EXPECT_EQ(*count, 0u);

  // Registered once: a second registration of the device or of its PCID is refused.
  ASSERT_EQ(register_device(registration(d)).status, 201);
  const std::string registered = snapshot(d);
  expect_refusal(register_device(registration(d)), 409, ErrorCode::already_exists);
  Device& e = make_device(4);
  Json other = registration(e);
  other["pcid"] = d.pcid();
  expect_refusal(register_device(other), 409, ErrorCode::already_exists);
  EXPECT_EQ(snapshot(d), registered);
  EXPECT_EQ(status_of(e), "absent");
}

// The IMSI's serial commits with the subscriber row: a registration refused after the serial
// was reserved (here, a nonce lifetime longer than the SHO's) gives it back.
TEST_P(ShoServiceTest, ARegistrationRefusedAfterItsSerialGivesItBack) {
  if (GetParam() == "memory") GTEST_SKIP() << "the memory store rolls nothing back";
  const std::string serial = fmt::format("imsi-serial:{}", kImsiPrefix);
  Device& d = make_device(16);
  Json body = registration(d);
  body["nonce_lifetime_s"] = 86'401;
  expect_refusal(register_device(body), 400, ErrorCode::invalid_argument);
  EXPECT_EQ(sho_db_->sqns().current(serial).value(), 0u);
  EXPECT_EQ(status_of(d), "absent");
  registered(d);
  EXPECT_EQ(sho_db_->sqns().current(serial).value(), 1u);
  EXPECT_EQ(status_of(d), "registered");
}

TEST_P(ShoServiceTest, RefusesWhenTheRoHoldsTheRegistrationForAnotherSho) {
  Device& d = make_device(5);
  // sho-b registered the PCID at the RO first: the RO refuses sho-a's registration.
  auto sho_b = client("sho-b");
  Answer taken = call(*sho_b, "PUT", ro_url_ + "/v1/drf/registrations/" + d.pcid(),
                      Json{{"device_id", d.id()},
                           {"dpf_url", ro_url_},
                           {"dpf_key_pin", std::string(64, '0')},
                           {"apn", kApn},
                           {"pin", d.pin()}});
  ASSERT_EQ(taken.status, 200) << taken.body;
  const std::string before = snapshot(d);
  expect_refusal(register_device(registration(d)), 403, ErrorCode::access_denied);
  EXPECT_EQ(snapshot(d), before);
}

TEST_P(ShoServiceTest, OwnersReadAndActivateOnlyTheirDevices) {
  Device& d = make_device(6);
  registered(d);
  Answer a = subscriber(d);
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.text("status"), "registered");
  EXPECT_EQ(a.text("imsi"), "001020000000001");
  EXPECT_FALSE(a.json.contains("package_id"));
  expect_refusal(subscriber(d, kOtherToken), 403, ErrorCode::access_denied);
  expect_refusal(
      call(*owner_, "GET", sho_url_ + "/v1/subscribers/dev-unknown", nullptr, kOwnerToken), 404,
      ErrorCode::not_found);
  expect_refusal(call(*owner_, "GET", sho_url_ + "/v1/subscribers/" + d.id()), 401,
                 ErrorCode::unauthenticated);

  const std::string before = snapshot(d);
  auto pcid_before = ro_db_->pcids().find(d.pcid());
  ASSERT_TRUE(pcid_before && *pcid_before);
  EXPECT_EQ((*pcid_before)->status, store::PcidStatus::dormant);
  expect_refusal(call(*owner_, "POST", sho_url_ + "/v1/subscribers/" + d.id() + "/activation",
                      Json{{"window_s", 600}}, kOtherToken),
                 403, ErrorCode::access_denied);
  EXPECT_EQ(call(*owner_, "POST", sho_url_ + "/v1/subscribers/" + d.id() + "/activation",
                 Json{{"window_s", 0}}, kOwnerToken)
                .status,
            400);
  auto unchanged = ro_db_->pcids().find(d.pcid());
  ASSERT_TRUE(unchanged && *unchanged);
  EXPECT_EQ((*unchanged)->status, store::PcidStatus::dormant);
  EXPECT_EQ(snapshot(d), before);

  Answer act = call(*owner_, "POST", sho_url_ + "/v1/subscribers/" + d.id() + "/activation",
                    Json{{"window_s", 600}}, kOwnerToken);
  ASSERT_EQ(act.status, 200) << act.body;
  EXPECT_EQ(act.text("pcid"), d.pcid());
  EXPECT_GT(act.json.value("active_until", 0), 0);
  auto active = ro_db_->pcids().find(d.pcid());
  ASSERT_TRUE(active && *active);
  EXPECT_EQ((*active)->status, store::PcidStatus::active);
}

// ---- F2 ---------------------------------------------------------------------------------------

TEST_P(ShoServiceTest, ProvisionsADeviceFromArrivalToAnActiveImsi) {
  Device& d = make_device(7);
  const std::string imsi = registered(d);

  // Before the install the IMSI serves no vector, and the refusal says why in the SHO's terms
  // (not the RO's PCID wording, whose logic the AuC shares).
  Answer early = call(*vno_a_, "POST", sho_url_ + "/v1/auth/vectors", Json{{"imsi", imsi}});
  expect_refusal(early, 409, ErrorCode::credential_unusable);
  const std::string early_message =
      early.json.contains("error") ? early.json["error"].value("message", "") : "";
  EXPECT_EQ(early_message.rfind("imsi " + imsi + ": not active yet", 0), 0) << early.body;
  EXPECT_NE(early_message.find("step 14"), std::string::npos) << early.body;
  EXPECT_EQ(early_message.find("F7"), std::string::npos) << early.body;

  Answer relayed = arrive_and_attest(d);
  ASSERT_EQ(relayed.status, 202) << relayed.body;
  EXPECT_EQ(pva_->challenges(), 1);
  Answer pkg;
  ASSERT_TRUE(eventually([&] {
    pkg = call(*device_, "GET", ro_url_ + "/v1/dpf/package", nullptr, d.session);
    return pkg.status == 200;
  })) << pkg.body;
  EXPECT_EQ(status_of(d), "provisioning");
  Answer st = subscriber(d);
  EXPECT_EQ(st.text("status"), "provisioning");
  EXPECT_EQ(st.text("package_id"), pkg.text("package_id"));

  // A real TRE installs it: the registration nonce, the platform key and the signer all fit.
  auto bytes = parse_hex(pkg.text("package"), "package");
  ASSERT_TRUE(bytes);
  tre::InstallOutcome installed = d.tre->install(*bytes);
  ASSERT_TRUE(installed.result) << fmt::to_string(installed.result.error());
  EXPECT_EQ(installed.result->package_id, pkg.text("package_id"));
  EXPECT_EQ(installed.result->owner, kSho);
  Answer rep =
      call(*device_, "POST", ro_url_ + "/v1/dpf/packages/" + pkg.text("package_id") + "/report",
           Json{{"report", installed.report}, {"platform_chain", d.chain_json()}}, d.session);
  ASSERT_EQ(rep.status, 200) << rep.body;
  ASSERT_TRUE(eventually([&] { return status_of(d) == "active"; }));
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));  // the AuC activates after the status changes
  auto auc = sho_db_->pcids().find(imsi);
  ASSERT_TRUE(auc && *auc);
  EXPECT_EQ((*auc)->status, store::PcidStatus::active);

  // The SHO's AuC serves the roaming partner; vectors verify in the TRE's USIM.
  Answer v = call(*vno_a_, "POST", sho_url_ + "/v1/auth/vectors", Json{{"imsi", imsi}});
  ASSERT_EQ(v.status, 200) << v.body;
  ASSERT_TRUE(v.json.contains("vectors") && !v.json["vectors"].empty());
  auto rand = parse_hex_fixed<16>(v.json["vectors"][0].value("rand", ""), "rand");
  auto autn = parse_hex_fixed<16>(v.json["vectors"][0].value("autn", ""), "autn");
  ASSERT_TRUE(rand && autn);
  ASSERT_TRUE(d.tre->apply(tre::Action::activate, installed.result->id));
  auto usim = d.tre->authenticate(installed.result->id, *rand, *autn);
  ASSERT_TRUE(usim) << fmt::to_string(usim.error());
  EXPECT_TRUE(std::holds_alternative<aka::UsimSuccess>(*usim));
  expect_refusal(call(*vno_b_, "POST", sho_url_ + "/v1/auth/vectors", Json{{"imsi", imsi}}), 403,
                 ErrorCode::access_denied);
  Answer ses = call(*vno_a_, "POST", sho_url_ + "/v1/auth/sessions", Json{{"imsi", imsi}});
  ASSERT_EQ(ses.status, 201) << ses.body;
  EXPECT_EQ(ses.json.value("restricted", true), false) << ses.body;
}

// The install report's activation commits in one transaction: the subscriber `active`, the
// IMSI active in the AuC and both their records (the AuC's and the SHO's). When the SHO's record
// cannot be stored (SQLite, whose trigger refuses it) nothing of it stays and the RO gets the
// store's error, for its retry; the retry then activates.
TEST_P(ShoServiceTest, AnActivationWhoseRecordCannotBeStoredIsUndone) {
  if (GetParam() != "sqlite") GTEST_SKIP() << "a SQLite trigger stands in for a failing store";
  const std::string path = db_urls_.at("sho").substr(std::string_view("sqlite:").size());
  Device& d = make_device(15);
  const std::string imsi = registered(d);
  ASSERT_EQ(arrive_and_attest(d).status, 202);
  ASSERT_TRUE(eventually([&] { return status_of(d) == "provisioning"; }));
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  const Json status = installed_relay(d);
  ASSERT_FALSE(HasFailure());
  const auto auc_status = [&] {
    auto auc = sho_db_->pcids().find(imsi);
    return auc && *auc ? std::string(store::to_string((*auc)->status)) : std::string("absent");
  };
  const std::string before = snapshot(d);
  ASSERT_EQ(auc_status(), "dormant");

  store::testing::refuse_audit_records(path, true, "sho", "activate");
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/status", status), 400,
                 ErrorCode::invalid_argument);  // the store's: a constraint
  EXPECT_EQ(snapshot(d), before);               // still provisioning, the IMSI still dormant
  EXPECT_EQ(store::testing::audit_records_of(sho_db_->audit(), "sho", "activate"), 0u);
  EXPECT_EQ(store::testing::audit_records_of(sho_db_->audit(), "icf", "activate"), 0u);

  store::testing::refuse_audit_records(path, false);
  Answer done = call(*as_ro_, "POST", sho_url_ + "/v1/sho/status", status);
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(status_of(d), "active");
  EXPECT_EQ(auc_status(), "active");
  EXPECT_EQ(store::testing::audit_records_of(sho_db_->audit(), "sho", "activate"), 1u);
  EXPECT_EQ(store::testing::audit_records_of(sho_db_->audit(), "icf", "activate"), 1u);
}

// Packages are sealed at registration (max_prepared_packages): the sequence of each device's
// package follows the registrations' order, not the validations'. With none kept, it follows the
// validations'. Either way the TRE installs it.
TEST_P(ShoServiceTest, PackagesPreparedAtRegistrationAreTheOnesHandedOver) {
  for (std::size_t keep : {std::size_t{100}, std::size_t{0}}) {
    SCOPED_TRACE(keep);
    start_sho([keep](sho::ShoServiceConfig& c) { c.max_prepared_packages = keep; });
    Device& first = make_device(keep == 0 ? 20 : 21);
    Device& second = make_device(keep == 0 ? 22 : 23);
    registered(first);
    registered(second);
    std::map<std::string, std::string> package_of;
    for (Device* d : {&second, &first}) {  // validated in the other order
      ASSERT_EQ(arrive_and_attest(*d).status, 202);
      Answer pkg;
      ASSERT_TRUE(eventually([&] {
        pkg = call(*device_, "GET", ro_url_ + "/v1/dpf/package", nullptr, d->session);
        return pkg.status == 200;
      })) << pkg.body;
      auto bytes = parse_hex(pkg.text("package"), "package");
      ASSERT_TRUE(bytes);
      tre::InstallOutcome installed = d->tre->install(*bytes);
      ASSERT_TRUE(installed.result) << fmt::to_string(installed.result.error());
      package_of[d->id()] = pkg.text("package_id");
    }
    auto sequence = [&](const Device& d) {
      const std::string& id = package_of[d.id()];
      return std::stoull(id.substr(id.rfind('-') + 1));
    };
    if (keep > 0) {
      EXPECT_LT(sequence(first), sequence(second)) << "sealed in the registrations' order";
    } else {
      EXPECT_GT(sequence(first), sequence(second)) << "sealed in the validations' order";
    }
  }
}

TEST_P(ShoServiceTest, DuplicatedAndMisdirectedNoticesChangeNothing) {
  Device& d = make_device(8);
  registered(d);
  ASSERT_EQ(arrive_and_attest(d).status, 202);
  ASSERT_TRUE(eventually([&] { return status_of(d) == "provisioning"; }));
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  auto s = sho_db_->subscribers().find(d.id());
  ASSERT_TRUE(s && *s);
  const std::string package_id = (*s)->package_id;
  const std::string before = snapshot(d);

  // The attestation notice again: the challenge is no longer in flight.
  Json att{{"request_id", last_request_}, {"pcid", d.pcid()},
           {"device_id", d.id()},         {"sho", kSho},
           {"report", last_report_},      {"platform_chain", d.chain_json()}};
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/attestations", att), 409,
                 ErrorCode::transition_refused);
  // The arrival again: past validation.
  Json arrival{{"pcid", d.pcid()}, {"device_id", d.id()}, {"sho", kSho}, {"time", 1}};
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/arrivals", arrival), 409,
                 ErrorCode::transition_refused);
  // Notices from anybody but the RO; about unknown PCIDs or other devices.
  expect_refusal(call(*vno_a_, "POST", sho_url_ + "/v1/sho/arrivals", arrival), 403,
                 ErrorCode::access_denied);
  expect_refusal(call(*owner_, "POST", sho_url_ + "/v1/sho/arrivals", arrival), 401,
                 ErrorCode::unauthenticated);
  Json unknown = arrival;
  unknown["pcid"] = kPcidPrefix + "9999999";
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/arrivals", unknown), 404,
                 ErrorCode::not_found);
  Json other = arrival;
  other["device_id"] = "dev-other";
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/arrivals", other), 422,
                 ErrorCode::wrong_recipient);
  // A status for another package; a report that does not verify.
  Json status{{"package_id", "pkg-other"}, {"device_id", d.id()}, {"sho", kSho}, {"report", "{}"}};
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/status", status), 409,
                 ErrorCode::transition_refused);
  status["package_id"] = package_id;
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/status", status), 400,
                 ErrorCode::bad_format);
  EXPECT_EQ(snapshot(d), before);
  EXPECT_EQ(pva_->challenges(), 1);

  // The install report, relayed once by the RO, then again by hand: active once.
  Answer pkg = call(*device_, "GET", ro_url_ + "/v1/dpf/package", nullptr, d.session);
  ASSERT_EQ(pkg.status, 200) << pkg.body;
  auto bytes = parse_hex(pkg.text("package"), "package");
  ASSERT_TRUE(bytes);
  tre::InstallOutcome installed = d.tre->install(*bytes);
  ASSERT_TRUE(installed.result);
  ASSERT_EQ(call(*device_, "POST", ro_url_ + "/v1/dpf/packages/" + package_id + "/report",
                 Json{{"report", installed.report}, {"platform_chain", d.chain_json()}}, d.session)
                .status,
            200);
  ASSERT_TRUE(eventually([&] { return status_of(d) == "active"; }));
  // The SHO marks the subscriber active before its AuC activates the IMSI: the relay's answer
  // comes after both.
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  const std::string active = snapshot(d);
  status["report"] = installed.report;
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/status", status), 409,
                 ErrorCode::transition_refused);
  EXPECT_EQ(snapshot(d), active);
}

TEST_P(ShoServiceTest, RefusesAttestationsThatDoNotFitTheChallengeInFlight) {
  Device& d = make_device(9);
  registered(d);
  Answer boot = call(*device_, "GET", ro_url_ + "/v1/drf/bootstrap", nullptr, d.session);
  ASSERT_EQ(boot.status, 200) << boot.body;
  ASSERT_TRUE(eventually([&] { return status_of(d) == "validating"; }));
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  auto s = sho_db_->subscribers().find(d.id());
  ASSERT_TRUE(s && *s);
  auto report = d.tre->attest((*s)->challenge_nonce);
  ASSERT_TRUE(report);
  const std::string before = snapshot(d);

  Json att{{"request_id", "not-the-challenge"},
           {"pcid", d.pcid()},
           {"device_id", d.id()},
           {"sho", kSho},
           {"report", *report},
           {"platform_chain", d.chain_json()}};
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/attestations", att), 409,
                 ErrorCode::transition_refused);
  // Another device's platform certificate.
  Device& e = make_device(10);
  att["request_id"] = (*s)->challenge_id;
  att["platform_chain"] = e.chain_json();
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/attestations", att), 422,
                 ErrorCode::wrong_recipient);
  att["platform_chain"] = Json::array({"not a pem"});
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/attestations", att), 400,
                 ErrorCode::bad_format);
  att["platform_chain"] = d.chain_json();
  att["sho"] = "sho-b";
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/attestations", att), 422,
                 ErrorCode::wrong_recipient);
  EXPECT_EQ(snapshot(d), before);

  // The device comes back while validating: a fresh challenge replaces the one in flight, whose
  // attestation is then refused.
  Json arrival{{"pcid", d.pcid()}, {"device_id", d.id()}, {"sho", kSho}, {"time", 1}};
  Answer again = call(*as_ro_, "POST", sho_url_ + "/v1/sho/arrivals", arrival);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(pva_->challenges(), 2);
  auto renewed = sho_db_->subscribers().find(d.id());
  ASSERT_TRUE(renewed && *renewed);
  EXPECT_EQ((*renewed)->status, store::SubscriberStatus::validating);
  EXPECT_NE((*renewed)->challenge_id, (*s)->challenge_id);
  att["sho"] = kSho;
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/attestations", att), 409,
                 ErrorCode::transition_refused);
}

// Nothing is provisioned and the SHO's records stay as they were; the DPF learns of the refusal
// so that the device stops waiting for an attestation request.
TEST_P(ShoServiceTest, AnArrivalAfterTheRegistrationLapsedProvisionsNothing) {
  start_sho([](sho::ShoServiceConfig& c) { c.nonce_lifetime = 1s; });
  Device& d = make_device(14);
  registered(d);
  // The registration's one second is over (registration times are whole seconds).
  std::this_thread::sleep_for(2s);
  std::string expected = snapshot(d);
  const std::string registered_line = fmt::format("ro_registration {} \n", kSho);
  ASSERT_NE(expected.find(registered_line), std::string::npos) << expected;
  expected.replace(expected.find(registered_line), registered_line.size(),
                   fmt::format("ro_registration {} registration_expired\n", kSho));
  Json arrival{{"pcid", d.pcid()}, {"device_id", d.id()}, {"sho", kSho}, {"time", 1}};
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/arrivals", arrival), 409,
                 ErrorCode::registration_expired);
  EXPECT_EQ(snapshot(d), expected);
  EXPECT_EQ(pva_->challenges(), 0);
  EXPECT_EQ(status_of(d), "registered");
  for (const char* poll : {"/v1/dpf/attestation-request", "/v1/dpf/package"}) {
    expect_refusal(call(*device_, "GET", ro_url_ + poll, nullptr, d.session), 409,
                   ErrorCode::registration_expired);
  }
}

TEST_P(ShoServiceTest, AVerdictThatDoesNotVerifyRefusesTheDeviceWithoutAPackage) {
  Device& d = make_device(13);
  registered(d);
  pva_->sign_other_nonce();
  ASSERT_EQ(arrive_and_attest(d).status, 202);
  ASSERT_TRUE(eventually([&] { return status_of(d) == "refused"; }));
  EXPECT_EQ(subscriber(d).text("refusal"), "nonce_mismatch");
  auto next = ro_db_->packages().next_for_device(d.id());
  ASSERT_TRUE(next);
  EXPECT_FALSE(*next);
}

TEST_P(ShoServiceTest, AnUntrustedPlatformIsRefusedWithoutAPackage) {
  Device& d = make_device(11);
  registered(d);
  pva_->fail_with(pki::Failure{pki::Check::measurements, ErrorCode::measurement_mismatch,
                               "tre.binary differs"});
  ASSERT_EQ(arrive_and_attest(d).status, 202);
  ASSERT_TRUE(eventually([&] { return status_of(d) == "refused"; }));
  Answer st = subscriber(d);
  EXPECT_EQ(st.text("status"), "refused");
  EXPECT_EQ(st.text("refusal"), "measurement_mismatch");
  // The device's next poll at the DPF ends with the SHO's code instead of "nothing yet".
  ASSERT_TRUE(eventually([&] {
    return call(*device_, "GET", ro_url_ + "/v1/dpf/package", nullptr, d.session).status == 422;
  }));
  expect_refusal(call(*device_, "GET", ro_url_ + "/v1/dpf/attestation-request", nullptr, d.session),
                 422, ErrorCode::measurement_mismatch);
  EXPECT_FALSE(st.json.contains("package_id"));
  auto next = ro_db_->packages().next_for_device(d.id());
  ASSERT_TRUE(next);
  EXPECT_FALSE(*next);
  auto s = sho_db_->subscribers().find(d.id());
  ASSERT_TRUE(s && *s);
  auto auc = sho_db_->pcids().find((*s)->imsi);
  ASSERT_TRUE(auc && *auc);
  EXPECT_EQ((*auc)->status, store::PcidStatus::dormant);
  // A refused device does not restart on a new arrival.
  Json arrival{{"pcid", d.pcid()}, {"device_id", d.id()}, {"sho", kSho}, {"time", 1}};
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/arrivals", arrival), 409,
                 ErrorCode::transition_refused);
}

TEST_P(ShoServiceTest, RacingDuplicateNoticesMoveTheSubscriberOnce) {
  Device& d = make_device(12);
  const std::string imsi = registered(d);
  Answer boot = call(*device_, "GET", ro_url_ + "/v1/drf/bootstrap", nullptr, d.session);
  ASSERT_EQ(boot.status, 200) << boot.body;
  ASSERT_TRUE(eventually([&] { return status_of(d) == "validating"; }));
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  auto s = sho_db_->subscribers().find(d.id());
  ASSERT_TRUE(s && *s);
  auto report = d.tre->attest((*s)->challenge_nonce);
  ASSERT_TRUE(report);

  // The same attestation notice four times at once: one validation, one package.
  const Json att{{"request_id", (*s)->challenge_id},
                 {"pcid", d.pcid()},
                 {"device_id", d.id()},
                 {"sho", kSho},
                 {"report", *report},
                 {"platform_chain", d.chain_json()}};
  auto race = [&](const std::string& path, const Json& body) {
    std::vector<Answer> answers(4);
    std::vector<std::thread> threads;
    for (auto& a : answers) {
      threads.emplace_back([&, path] {
        auto c = client(std::string(kRo));
        a = call(*c, "POST", sho_url_ + path, body);
      });
    }
    for (auto& t : threads) t.join();
    int ok = 0;
    for (const Answer& a : answers) {
      if (a.status == 200) {
        ++ok;
      } else {
        expect_refusal(a, 409, ErrorCode::transition_refused);
      }
    }
    return ok;
  };
  EXPECT_EQ(race("/v1/sho/attestations", att), 1);
  EXPECT_EQ(status_of(d), "provisioning");
  const Json status = installed_relay(d);
  ASSERT_FALSE(HasFailure());
  // Only one package was handed over: once delivered, nothing else is waiting.
  auto stored = ro_db_->packages().find(status.at("package_id").get<std::string>());
  ASSERT_TRUE(stored && *stored);

  // The status notice four times at once: activated once.
  EXPECT_EQ(race("/v1/sho/status", status), 1);
  EXPECT_EQ(status_of(d), "active");
  auto auc = sho_db_->pcids().find(imsi);
  ASSERT_TRUE(auc && *auc);
  EXPECT_EQ((*auc)->status, store::PcidStatus::active);
  auto audit = sho_db_->audit().recent(100);
  ASSERT_TRUE(audit);
  EXPECT_EQ(std::count_if(audit->begin(), audit->end(),
                          [](const store::AuditRecord& r) {
                            return r.event == "package" && r.outcome == "ok";
                          }),
            1);
  EXPECT_EQ(std::count_if(audit->begin(), audit->end(),
                          [](const store::AuditRecord& r) {
                            return r.event == "activate" && r.outcome == "ok";
                          }),
            2);  // the SHO's record and its AuC's (the ICF's own audit)
}

// F9: the operator's staff (mTLS as sho-a) instruct an active device; the instruction reaches
// the RO's DPF, the device collects it with its platform key's proof, the TRE's signed answer
// comes back through the RO. Refusals at each endpoint use no sequence and change nothing.
TEST_P(ShoServiceTest, OperatorInstructionsTravelThroughTheDpfAndTheirRefusalsChangeNothing) {
  Device& d = make_device(30);
  const std::string imsi = registered(d);
  Device& pending = make_device(31);
  registered(pending);
  {  // Provisioning is the other tests' business: this subscriber is operational.
    auto s = sho_db_->subscribers().find(d.id());
    ASSERT_TRUE(s && *s);
    store::Subscriber active = **s;
    active.status = store::SubscriberStatus::active;
    ASSERT_TRUE(sho_db_->subscribers().update(active, store::SubscriberStatus::registered));
  }
  auto as_sho = client(std::string(kSho));
  const std::string base = sho_url_ + "/v1/operator/devices/" + d.id() + "/instructions";
  auto sequences = [&] {
    return sho_db_->sqns().current("instruction-sequence:" + d.id()).value_or(999);
  };
  const std::string before = snapshot(d);
  struct Bad {
    const char* what;
    std::shared_ptr<net::HttpsClient> who;
    std::string url;
    Json body;
    int status;
    ErrorCode code;
  };
  const Bad bad[] = {
      {"no client certificate", owner_, base, Json{{"action", "list"}}, 401,
       ErrorCode::unauthenticated},
      {"another operator", as_ro_, base, Json{{"action", "list"}}, 403, ErrorCode::access_denied},
      {"unknown device", as_sho, sho_url_ + "/v1/operator/devices/dev-none/instructions",
       Json{{"action", "list"}}, 404, ErrorCode::not_found},
      {"not operational", as_sho,
       sho_url_ + "/v1/operator/devices/" + pending.id() + "/instructions",
       Json{{"action", "list"}}, 409, ErrorCode::transition_refused},
      {"unknown action", as_sho, base, Json{{"action", "select"}}, 400,
       ErrorCode::invalid_argument},
      {"a list naming a credential", as_sho, base, Json{{"action", "list"}, {"credential", imsi}},
       400, ErrorCode::invalid_argument},
      {"credential not an id", as_sho, base, Json{{"action", "block"}, {"credential", "a b"}}, 400,
       ErrorCode::invalid_argument},
      {"unknown member", as_sho, base, Json{{"action", "list"}, {"sho", "x"}}, 400,
       ErrorCode::bad_format},
      {"no action", as_sho, base, Json::object(), 400, ErrorCode::missing_argument},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    expect_refusal(call(*b.who, "POST", b.url, b.body), b.status, b.code);
    EXPECT_EQ(sequences(), 0u);
    EXPECT_EQ(snapshot(d), before);
  }
  expect_refusal(call(*as_sho, "GET", base + "/ins-0000000000000000"), 404, ErrorCode::not_found);

  Answer issued = call(*as_sho, "POST", base, Json{{"action", "block"}});
  ASSERT_EQ(issued.status, 202) << issued.body;
  EXPECT_EQ(issued.text("status"), "queued");
  EXPECT_EQ(issued.text("credential"), imsi);
  EXPECT_EQ(issued.json.value("sequence", 0), 1);
  EXPECT_EQ(sequences(), 1u);
  const std::string id = issued.text("instruction_id");
  // Only for its device.
  expect_refusal(call(*as_sho, "GET",
                      sho_url_ + "/v1/operator/devices/" + pending.id() + "/instructions/" + id),
                 404, ErrorCode::not_found);

  // The device's round at the RO: the proof, the pending instruction, the TRE's answer.
  Answer c =
      call(*device_, "POST", ro_url_ + "/v1/dpf/management/challenges", Json{{"pcid", d.pcid()}});
  ASSERT_EQ(c.status, 201) << c.body;
  auto nonce = parse_hex(c.text("nonce"), "nonce");
  ASSERT_TRUE(nonce);
  Answer got = call(*device_, "POST", ro_url_ + "/v1/dpf/management/instructions",
                    Json{{"pcid", d.pcid()},
                         {"challenge_id", c.text("challenge_id")},
                         {"report", *d.tre->attest(*nonce)},
                         {"platform_chain", d.chain_json()}});
  ASSERT_EQ(got.status, 200) << got.body;
  ASSERT_EQ(got.json["instructions"].size(), 1u) << got.body;
  // No MCIM installed here: the TRE's signed answer is not_found, an answer all the same.
  auto applied =
      d.tre->apply_instruction(got.json["instructions"][0]["instruction"].get<std::string>());
  ASSERT_FALSE(applied.result);
  EXPECT_EQ(applied.result.error().code, ErrorCode::not_found);

  // Results come from the RO that holds the PCID, about this SHO's instruction for the device.
  const Json result{
      {"instruction_id", id}, {"device_id", d.id()}, {"sho", kSho}, {"report", applied.report}};
  auto with = [&](const std::string& field, Json value) {
    Json r = result;
    r[field] = std::move(value);
    return r;
  };
  auto other = d.tre->apply_instruction(
      world().instruction(world().signer(std::string(kSho)), d.id(), imsi, tre::Action::block, 99));
  const std::string results = sho_url_ + "/v1/sho/instruction-results";
  const Bad bad_results[] = {
      {"not the RO", as_sho, results, result, 403, ErrorCode::access_denied},
      {"another SHO's", as_ro_, results, with("sho", "sho-b"), 422, ErrorCode::wrong_recipient},
      {"unknown instruction", as_ro_, results, with("instruction_id", "ins-1"), 404,
       ErrorCode::not_found},
      {"another device", as_ro_, results, with("device_id", pending.id()), 404,
       ErrorCode::not_found},
      {"not a report", as_ro_, results, with("report", "{}"), 400, ErrorCode::bad_format},
      {"the answer to another instruction", as_ro_, results, with("report", other.report), 400,
       ErrorCode::invalid_argument},
  };
  for (const Bad& b : bad_results) {
    SCOPED_TRACE(b.what);
    expect_refusal(call(*b.who, "POST", b.url, b.body), b.status, b.code);
    EXPECT_EQ(call(*as_sho, "GET", base + "/" + id).text("status"), "queued");
  }
  Answer posted = call(*device_, "POST", ro_url_ + "/v1/dpf/instructions/" + id + "/result",
                       Json{{"report", applied.report}, {"platform_chain", d.chain_json()}});
  ASSERT_EQ(posted.status, 200) << posted.body;
  EXPECT_EQ(posted.text("outcome"), "not_found");
  Answer at_sho;
  ASSERT_TRUE(eventually([&] {
    at_sho = call(*as_sho, "GET", base + "/" + id);
    return at_sho.text("status") == "answered";
  })) << at_sho.body;
  EXPECT_EQ(at_sho.text("outcome"), "not_found");
  EXPECT_EQ(at_sho.text("report"), applied.report);
  expect_refusal(call(*as_ro_, "POST", results, result), 409, ErrorCode::transition_refused);
  EXPECT_EQ(snapshot(d), before);
}

// F9 and F5 across a restart of the SHO: an instruction and an owner's revert issued, the SHO
// (and its database) restarted, then the RO's relays of the TRE's answers arrive. Both are still
// known: each answer is taken, the revert's release happens (the IMSI's window ended, the
// registration handed over at the RO, the subscriber removed) and GET answers as before, after
// one more restart too.
TEST_P(ShoServiceTest, InstructionsAndARevertOutliveARestart) {
  // An RO that knows sho-b, the operator the owner moves the device to.
  ro_server_.reset();
  ro_.reset();
  start_ro([&](ro::RoServiceConfig& c) { c.shos["sho-b"] = c.shos.at(std::string(kSho)); });
  if (HasFatalFailure()) return;
  start_sho();
  if (HasFatalFailure()) return;
  Device& d = make_device(32);
  const std::string imsi = registered(d);
  {
    auto s = sho_db_->subscribers().find(d.id());
    ASSERT_TRUE(s && *s);
    store::Subscriber active = **s;
    active.status = store::SubscriberStatus::active;
    ASSERT_TRUE(sho_db_->subscribers().update(active, store::SubscriberStatus::registered));
  }
  auto as_sho = client(std::string(kSho));
  const std::string base = sho_url_ + "/v1/operator/devices/" + d.id() + "/instructions";
  const std::string revert_url = sho_url_ + "/v1/subscribers/" + d.id() + "/revert";
  Answer block = call(*as_sho, "POST", base, Json{{"action", "block"}});
  ASSERT_EQ(block.status, 202) << block.body;
  Answer revert = call(*owner_, "POST", revert_url, Json{{"to", "sho-b"}}, kOwnerToken);
  ASSERT_EQ(revert.status, 202) << revert.body;
  EXPECT_EQ(revert.text("status"), "queued");
  const std::string block_id = block.text("instruction_id");
  const std::string delete_id = revert.text("instruction_id");

  restart_sho();
  if (HasFatalFailure()) return;
  EXPECT_EQ(call(*as_sho, "GET", base + "/" + block_id).json, block.json);
  Answer queued = call(*owner_, "GET", revert_url, nullptr, kOwnerToken);
  ASSERT_EQ(queued.status, 200) << queued.body;
  EXPECT_EQ(queued.json, revert.json);
  // Still one revert at a time.
  expect_refusal(call(*owner_, "POST", revert_url, Json{{"to", "sho-b"}}, kOwnerToken), 409,
                 ErrorCode::already_exists);

  // The TRE's answers (signed with the device's platform key), as the RO relays them.
  auto answer = [&](const std::string& id, const std::string& event, const std::string& state,
                    const Answer& issued) {
    tre::StatusReport r;
    r.device_id = d.id();
    r.event = event;
    r.credential = imsi;
    r.package_id = "-";
    r.outcome = "ok";
    r.state = state;
    r.sequence =
        issued.json.contains("sequence")
            ? issued.json.at("sequence").get<std::uint64_t>()
            : call(*as_sho, "GET", base + "/" + id).json.at("sequence").get<std::uint64_t>();
    r.time = std::chrono::floor<std::chrono::seconds>(clock_.now());
    auto text = tre::sign_status_report(r, d.bundle.platform_key.get());
    EXPECT_TRUE(text) << fmt::to_string(text.error());
    return Json{{"instruction_id", id},
                {"device_id", d.id()},
                {"sho", kSho},
                {"report", text ? *text : std::string()}};
  };
  const std::string results = sho_url_ + "/v1/sho/instruction-results";
  const Json blocked = answer(block_id, "block", "blocked", block);
  Answer took = call(*as_ro_, "POST", results, blocked);
  ASSERT_EQ(took.status, 200) << took.body;
  const Json deleted = answer(delete_id, "delete", "deleted", revert);
  took = call(*as_ro_, "POST", results, deleted);
  ASSERT_EQ(took.status, 200) << took.body;
  EXPECT_EQ(took.text("outcome"), "ok");

  // The release: the IMSI stops authenticating, sho-b holds the registration, the subscriber is
  // gone.
  EXPECT_EQ(status_of(d), "absent");
  auto auc = sho_db_->pcids().find(imsi);
  ASSERT_TRUE(auc && *auc);
  EXPECT_LE((*auc)->active_until,
            store::Time(std::chrono::floor<std::chrono::seconds>(clock_.now())));
  auto reg = ro_db_->registrations().find(d.pcid());
  ASSERT_TRUE(reg && *reg);
  EXPECT_EQ((*reg)->sho, "sho-b");

  restart_sho();
  if (HasFatalFailure()) return;
  Answer released = call(*owner_, "GET", revert_url, nullptr, kOwnerToken);
  ASSERT_EQ(released.status, 200) << released.body;
  EXPECT_EQ(released.text("status"), "released");
  EXPECT_EQ(released.text("outcome"), "ok");
  EXPECT_EQ(released.text("instruction_id"), delete_id);
  EXPECT_EQ(released.text("to"), "sho-b");
  Answer answered = call(*as_sho, "GET", base + "/" + block_id);
  ASSERT_EQ(answered.status, 200) << answered.body;
  EXPECT_EQ(answered.text("status"), "answered");
  EXPECT_EQ(answered.text("outcome"), "ok");
  EXPECT_EQ(answered.text("state"), "blocked");
  EXPECT_EQ(answered.text("report"), blocked.at("report").get<std::string>());
  Answer delete_status = call(*as_sho, "GET", base + "/" + delete_id);
  EXPECT_EQ(delete_status.text("status"), "answered");
  EXPECT_EQ(delete_status.text("state"), "deleted");
  // A relay again is refused: the instruction is answered, the subscriber gone.
  EXPECT_NE(call(*as_ro_, "POST", results, blocked).status, 200);
  // Audited once each.
  auto audit = sho_db_->audit().recent(200);
  ASSERT_TRUE(audit);
  for (const std::string& id : {block_id, delete_id}) {
    EXPECT_EQ(std::count_if(audit->begin(), audit->end(),
                            [&](const store::AuditRecord& r) {
                              return r.event == "instruction-result" && r.subject == id &&
                                     r.outcome == "ok";
                            }),
              1)
        << id;
  }
}

// ---- F4: operator change ----------------------------------------------------------------------

// At the new SHO: the owner's change (the RO's change call instead of the registration, the PIN
// passed on), the validation started at once, the package installed in place of sho-b's MCIM,
// then the install report with the TRE's discard notice: active, the IMSI activated. Every refusal
// of the status relay leaves the subscriber and the AuC as they were.
TEST_P(ShoServiceTest, AnOperatorChangeValidatesAtOnceAndEndsWithTheDiscardNotice) {
  use_fake_ro();
  if (HasFatalFailure()) return;
  Device& d = make_device(40);
  Device& stranger = make_device(41);
  const std::string old_imsi = install_old_mcim(d);

  Answer a = change_operator(d);
  ASSERT_EQ(a.status, 201) << a.body;
  EXPECT_EQ(a.text("status"), "validating");
  EXPECT_EQ(a.json.value("change", false), true) << a.body;
  EXPECT_EQ(a.text("registration_nonce").size(), 32u);
  EXPECT_EQ(a.body.find(d.pin()), std::string::npos);
  const std::string imsi = a.text("imsi");
  // The owner sees the change in the subscriber's status too; an ordinary registration does not
  // carry the member.
  Answer seen = subscriber(d);
  ASSERT_EQ(seen.status, 200) << seen.body;
  EXPECT_EQ(seen.json.value("change", false), true) << seen.body;
  Device& plain = make_device(42);
  ASSERT_EQ(register_device(registration(plain)).status, 201);
  Answer ordinary = subscriber(plain);
  ASSERT_EQ(ordinary.status, 200) << ordinary.body;
  EXPECT_FALSE(ordinary.json.contains("change")) << ordinary.body;
  // The RO was asked for the change with the device and the owner's PIN, never for a
  // registration of this SHO's own.
  const std::string registration_path = "/v1/drf/registrations/" + d.pcid();
  EXPECT_EQ(fake_ro_->last(registration_path + "/change").body,
            (Json{{"device_id", d.id()}, {"pin", d.pin()}}));
  EXPECT_EQ(fake_ro_->count(registration_path, "PUT"), 0u);
  // Then at once for the attestation, over the PVA's challenge.
  const FakeRo::Call req = fake_ro_->last("/v1/dpf/attestation-requests");
  ASSERT_TRUE(req.body.is_object());
  EXPECT_EQ(req.body.value("pcid", ""), d.pcid());
  EXPECT_EQ(req.body.value("device_id", ""), d.id());
  EXPECT_EQ(pva_->challenges(), 1);
  auto s = sho_db_->subscribers().find(d.id());
  ASSERT_TRUE(s && *s);
  EXPECT_TRUE((*s)->replacing);
  EXPECT_EQ((*s)->status, store::SubscriberStatus::validating);
  EXPECT_EQ((*s)->challenge_id, req.body.value("request_id", ""));
  EXPECT_EQ(subscriber(d).text("status"), "validating");
  auto auc = sho_db_->pcids().find(imsi);
  ASSERT_TRUE(auc && *auc);
  EXPECT_EQ((*auc)->status, store::PcidStatus::dormant);

  // The attestation relayed: trusted, the package handed over.
  Answer att = attest_at_fake_ro(d);
  ASSERT_EQ(att.status, 200) << att.body;
  EXPECT_EQ(att.text("outcome"), "trusted");
  const auto [package_id, package] = handed_over();
  EXPECT_EQ(status_of(d), "provisioning");

  // The TRE installs it in place of sho-b's MCIM (step 5).
  tre::ReplaceOutcome out = d.tre->install_replacing(package, old_imsi);
  ASSERT_TRUE(out.install.result) << fmt::to_string(out.install.result.error());
  ASSERT_FALSE(out.discard_notice.empty());
  Json status{{"package_id", package_id},
              {"device_id", d.id()},
              {"sho", kSho},
              {"report", out.install.report}};
  const std::string before = snapshot(d);
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/status", status), 400,
                 ErrorCode::missing_argument);
  EXPECT_EQ(snapshot(d), before);
  EVP_PKEY* key = d.bundle.platform_key.get();
  struct Bad {
    std::string what, notice;
    int status;
    ErrorCode code;
  };
  const std::vector<Bad> bad = {
      {"not a report", "not a report", 400, ErrorCode::bad_format},
      {"the old SHO's discard report", out.discard_report, 400, ErrorCode::invalid_argument},
      {"the install report", out.install.report, 400, ErrorCode::invalid_argument},
      {"another platform key",
       resigned(d, out.discard_notice, stranger.bundle.platform_key.get(), [](auto&) {}), 422,
       ErrorCode::signature_invalid},
      {"another device",
       resigned(d, out.discard_notice, key, [](auto& r) { r.device_id = "dev-other"; }), 422,
       ErrorCode::wrong_recipient},
      {"another package",
       resigned(d, out.discard_notice, key, [](auto& r) { r.package_id = "pkg-other"; }), 400,
       ErrorCode::invalid_argument},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    status["discard_notice"] = b.notice;
    expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/status", status), b.status, b.code);
    EXPECT_EQ(snapshot(d), before);
  }

  status["discard_notice"] = out.discard_notice;
  Answer ok = call(*as_ro_, "POST", sho_url_ + "/v1/sho/status", status);
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.text("outcome"), "ok");
  EXPECT_EQ(status_of(d), "active");
  auc = sho_db_->pcids().find(imsi);
  ASSERT_TRUE(auc && *auc);
  EXPECT_EQ((*auc)->status, store::PcidStatus::active);
  const std::string active = snapshot(d);
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/status", status), 409,
                 ErrorCode::transition_refused);
  EXPECT_EQ(snapshot(d), active);
}

// The RO's refusals of the change keep their codes and leave nothing at the SHO: no subscriber,
// no AuC entry, no challenge, no attestation request; the PIN is in no answer.
TEST_P(ShoServiceTest, AnOperatorChangeTheRoRefusesLeavesNothingBehind) {
  use_fake_ro();
  if (HasFatalFailure()) return;
  Device& d = make_device(42);
  Json body = registration(d);
  body["change"] = true;
  auto count = sho_db_->pcids().count();
  ASSERT_TRUE(count);
  struct Refusal {
    int status;
    ErrorCode code;
  };
  for (const Refusal& r :
       {Refusal{403, ErrorCode::access_denied}, Refusal{404, ErrorCode::not_found},
        Refusal{409, ErrorCode::already_exists}}) {
    SCOPED_TRACE(to_string(r.code));
    fake_ro_->refuse_change(r.status, r.code);
    Answer a = register_device(body);
    expect_refusal(a, r.status, r.code);
    EXPECT_EQ(a.body.find(d.pin()), std::string::npos);
    EXPECT_EQ(status_of(d), "absent");
    auto now_count = sho_db_->pcids().count();
    ASSERT_TRUE(now_count);
    EXPECT_EQ(*now_count, *count);
  }
  body["change"] = "yes";
  expect_refusal(register_device(body), 400, ErrorCode::bad_format);
  EXPECT_EQ(status_of(d), "absent");
  const std::string registration_path = "/v1/drf/registrations/" + d.pcid();
  EXPECT_EQ(fake_ro_->count(registration_path + "/change"), 3u);
  EXPECT_EQ(fake_ro_->count(registration_path, "PUT"), 0u);
  EXPECT_EQ(fake_ro_->count(registration_path, "DELETE"), 0u);
  EXPECT_EQ(fake_ro_->count("/v1/dpf/attestation-requests"), 0u);
  EXPECT_EQ(fake_ro_->count("/v1/dpf/refusals"), 0u);
  EXPECT_EQ(pva_->challenges(), 0);
}

// The change accepted by the RO but the validation not started (the RO refuses the attestation
// request): 201 with the subscriber registered, the change and the dormant IMSI kept.
TEST_P(ShoServiceTest, AnOperatorChangeWhoseValidationDoesNotStartStaysRegistered) {
  use_fake_ro();
  if (HasFatalFailure()) return;
  Device& d = make_device(43);
  fake_ro_->refuse_requests(409, ErrorCode::transition_refused);
  Answer a = change_operator(d);
  ASSERT_EQ(a.status, 201) << a.body;
  EXPECT_EQ(a.text("status"), "registered");
  EXPECT_EQ(a.json.value("change", false), true);
  EXPECT_EQ(fake_ro_->count("/v1/dpf/attestation-requests"), 1u);
  auto s = sho_db_->subscribers().find(d.id());
  ASSERT_TRUE(s && *s);
  EXPECT_EQ((*s)->status, store::SubscriberStatus::registered);
  EXPECT_TRUE((*s)->replacing);
  EXPECT_TRUE((*s)->challenge_id.empty());
  EXPECT_EQ(subscriber(d).text("status"), "registered");
  auto auc = sho_db_->pcids().find(a.text("imsi"));
  ASSERT_TRUE(auc && *auc);
  EXPECT_EQ((*auc)->status, store::PcidStatus::dormant);

  // The owner starts it again: refused while the RO still refuses (and left registered), then,
  // once the RO takes attestation requests, validating with a fresh challenge.
  const std::string retry = sho_url_ + "/v1/subscribers/" + d.id() + "/validation";
  expect_refusal(call(*owner_, "POST", retry, Json::object(), kOwnerToken), 409,
                 ErrorCode::transition_refused);
  EXPECT_EQ(subscriber(d).text("status"), "registered");
  EXPECT_EQ(fake_ro_->count("/v1/dpf/attestation-requests"), 2u);
  fake_ro_->accept_requests();
  Answer again = call(*owner_, "POST", retry, Json::object(), kOwnerToken);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.text("status"), "validating");
  EXPECT_EQ(subscriber(d).text("status"), "validating");
  EXPECT_EQ(fake_ro_->count("/v1/dpf/attestation-requests"), 3u);
  EXPECT_EQ(fake_ro_->last("/v1/dpf/attestation-requests").body.value("device_id", ""), d.id());
  // Once validating there is nothing to start again.
  expect_refusal(call(*owner_, "POST", retry, Json::object(), kOwnerToken), 409,
                 ErrorCode::transition_refused);
  EXPECT_EQ(fake_ro_->count("/v1/dpf/attestation-requests"), 3u);
}

// The retry is the owner's, for an operator change only; every bad request changes nothing.
TEST_P(ShoServiceTest, AValidationRetryIsRefusedForAnythingButAStalledChange) {
  use_fake_ro();
  if (HasFatalFailure()) return;
  Device& d = make_device(45);
  ASSERT_EQ(register_device(registration(d)).status, 201);  // F2: starts at the arrival
  const std::string retry = sho_url_ + "/v1/subscribers/" + d.id() + "/validation";
  expect_refusal(call(*owner_, "POST", retry, Json::object(), kOwnerToken), 409,
                 ErrorCode::transition_refused);
  expect_refusal(call(*owner_, "POST", retry, Json::object()), 401, ErrorCode::unauthenticated);
  expect_refusal(call(*owner_, "POST", retry, Json::object(), kOtherToken), 403,
                 ErrorCode::access_denied);
  expect_refusal(call(*owner_, "POST", retry, Json{{"now", true}}, kOwnerToken), 400,
                 ErrorCode::bad_format);
  expect_refusal(call(*owner_, "POST", sho_url_ + "/v1/subscribers/no-such-device/validation",
                      Json::object(), kOwnerToken),
                 404, ErrorCode::not_found);
  EXPECT_EQ(subscriber(d).text("status"), "registered");
  EXPECT_EQ(fake_ro_->count("/v1/dpf/attestation-requests"), 0u);
  EXPECT_EQ(pva_->challenges(), 0);
}

// A replacing install the TRE refused (the MCIM to replace is not there): the subscriber is
// refused as in F2, without a discard notice; the DPF is told.
TEST_P(ShoServiceTest, ARefusedReplacingInstallRefusesTheSubscriber) {
  use_fake_ro();
  if (HasFatalFailure()) return;
  Device& d = make_device(44);
  ASSERT_EQ(change_operator(d).status, 201);
  ASSERT_EQ(attest_at_fake_ro(d).status, 200);
  const auto [package_id, package] = handed_over();
  tre::ReplaceOutcome out = d.tre->install_replacing(package, "001099999999999");
  ASSERT_FALSE(out.install.result);
  EXPECT_TRUE(out.discard_notice.empty());
  Answer a = call(*as_ro_, "POST", sho_url_ + "/v1/sho/status",
                  Json{{"package_id", package_id},
                       {"device_id", d.id()},
                       {"sho", kSho},
                       {"report", out.install.report}});
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.text("outcome"), to_string(out.install.result.error().code));
  EXPECT_EQ(status_of(d), "refused");
  EXPECT_EQ(fake_ro_->count("/v1/dpf/refusals"), 1u);
}

// At the old SHO: its subscriber active (F1, F2 through the real RO), then the RO's relay of the
// TRE's discard report once the device installed sho-b's MCIM in its place: the IMSI's window
// ends, the subscriber is removed. Every refusal leaves both as they were. A discard notice for a
// subscriber that replaces nothing is refused too.
TEST_P(ShoServiceTest, TheOldShoReleasesADeviceOnItsTreDiscardReport) {
  Device& d = make_device(45);
  Device& pending = make_device(46);
  const std::string imsi = registered(d);
  registered(pending);
  ASSERT_EQ(arrive_and_attest(d).status, 202);
  Answer pkg;
  ASSERT_TRUE(eventually([&] {
    pkg = call(*device_, "GET", ro_url_ + "/v1/dpf/package", nullptr, d.session);
    return pkg.status == 200;
  })) << pkg.body;
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  auto bytes = parse_hex(pkg.text("package"), "package");
  ASSERT_TRUE(bytes);
  tre::InstallOutcome installed = d.tre->install(*bytes);
  ASSERT_TRUE(installed.result) << fmt::to_string(installed.result.error());
  const std::string package_id = pkg.text("package_id");
  // A discard notice for a device that replaced nothing.
  const std::string provisioning = snapshot(d);
  expect_refusal(call(*as_ro_, "POST", sho_url_ + "/v1/sho/status",
                      Json{{"package_id", package_id},
                           {"device_id", d.id()},
                           {"sho", kSho},
                           {"report", installed.report},
                           {"discard_notice", installed.report}}),
                 400, ErrorCode::invalid_argument);
  EXPECT_EQ(snapshot(d), provisioning);
  ASSERT_EQ(call(*device_, "POST", ro_url_ + "/v1/dpf/packages/" + package_id + "/report",
                 Json{{"report", installed.report}, {"platform_chain", d.chain_json()}}, d.session)
                .status,
            200);
  ASSERT_TRUE(eventually([&] { return status_of(d) == "active"; }));
  ASSERT_TRUE(ro_->wait_notices_delivered(5s));
  ASSERT_EQ(call(*vno_a_, "POST", sho_url_ + "/v1/auth/vectors", Json{{"imsi", imsi}}).status, 200);

  // The owner moved the device to sho-b: its TRE installed sho-b's MCIM in place of this one.
  OsRandom rng;
  const Bytes<16> nonce = rng.draw<16>();
  ASSERT_TRUE(d.tre->record_registration(nonce));
  install_from_sho_b(d, "001090000000045", nonce, imsi);
  ASSERT_TRUE(replaced_.install.result);
  const tre::ReplaceOutcome out = replaced_;
  const std::string url = sho_url_ + "/v1/sho/discards";
  const Json discard{{"device_id", d.id()}, {"sho", kSho}, {"report", out.discard_report}};
  const std::string before = snapshot(d);
  const std::string before_pending = snapshot(pending);
  EVP_PKEY* key = d.bundle.platform_key.get();
  struct Bad {
    std::string what;
    std::shared_ptr<net::HttpsClient> who;
    Json body;
    int status;
    ErrorCode code;
  };
  auto with = [&](const std::string& member, const Json& value) {
    Json j = discard;
    j[member] = value;
    return j;
  };
  const std::vector<Bad> bad = {
      {"another SHO", as_ro_, with("sho", "sho-b"), 422, ErrorCode::wrong_recipient},
      {"unknown device", as_ro_, with("device_id", "dev-unknown"), 404, ErrorCode::not_found},
      {"not the RO", vno_a_, discard, 403, ErrorCode::access_denied},
      {"no certificate", owner_, discard, 401, ErrorCode::unauthenticated},
      {"not active", as_ro_, with("device_id", pending.id()), 409, ErrorCode::transition_refused},
      {"no report", as_ro_, Json{{"device_id", d.id()}, {"sho", kSho}}, 400,
       ErrorCode::missing_argument},
      {"an unknown member", as_ro_, with("discard_notice", "x"), 400, ErrorCode::bad_format},
      {"not a report", as_ro_, with("report", "not a report"), 400, ErrorCode::bad_format},
      {"the new SHO's notice", as_ro_, with("report", out.discard_notice), 400,
       ErrorCode::invalid_argument},
      {"the install report", as_ro_, with("report", out.install.report), 400,
       ErrorCode::invalid_argument},
      {"another platform key", as_ro_,
       with("report",
            resigned(d, out.discard_report, pending.bundle.platform_key.get(), [](auto&) {})),
       422, ErrorCode::signature_invalid},
      {"another device", as_ro_,
       with("report",
            resigned(d, out.discard_report, key, [](auto& r) { r.device_id = "dev-other"; })),
       422, ErrorCode::wrong_recipient},
      {"another IMSI", as_ro_,
       with("report", resigned(d, out.discard_report, key,
                               [](auto& r) { r.credential = "001020000009999"; })),
       400, ErrorCode::invalid_argument},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    expect_refusal(call(*b.who, "POST", url, b.body), b.status, b.code);
    EXPECT_EQ(snapshot(d), before);
    EXPECT_EQ(snapshot(pending), before_pending);
  }

  Answer ok = call(*as_ro_, "POST", url, discard);
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.json, (Json{{"device_id", d.id()}, {"outcome", "released"}}));
  EXPECT_EQ(status_of(d), "absent");
  auto auc = sho_db_->pcids().find(imsi);
  ASSERT_TRUE(auc && *auc);
  EXPECT_LE((*auc)->active_until,
            store::Time(std::chrono::floor<std::chrono::seconds>(clock_.now())));
  EXPECT_NE(call(*vno_a_, "POST", sho_url_ + "/v1/auth/vectors", Json{{"imsi", imsi}}).status, 200);
  EXPECT_EQ(snapshot(pending), before_pending);
  // Audited: the discard (its refusals too), the IMSI's window ended, the subscriber released.
  auto audit = sho_db_->audit().recent(100);
  ASSERT_TRUE(audit);
  auto recorded = [&](const std::string& event, const std::string& subject,
                      const std::string& outcome) {
    return std::count_if(audit->begin(), audit->end(), [&](const store::AuditRecord& r) {
      return r.service == "sho" && r.event == event && r.subject == subject && r.outcome == outcome;
    });
  };
  EXPECT_EQ(recorded("discard", d.id(), "ok"), 1);
  EXPECT_EQ(recorded("discard", d.id(), "signature_invalid"), 1);
  EXPECT_EQ(recorded("deactivate", imsi, "ok"), 1);
  EXPECT_EQ(recorded("release", d.id(), "ok"), 1);
  // The relay again: the subscriber is gone.
  expect_refusal(call(*as_ro_, "POST", url, discard), 404, ErrorCode::not_found);
}

TEST_P(ShoServiceTest, RefusesAnUnusableConfiguration) {
  auto c = sho_config();
  c.operator_id = "sho-b";  // the package signer names sho-a
  EXPECT_EQ(sho::ShoService::create(*sho_db_, std::move(c), clock_).error().code,
            ErrorCode::invalid_argument);
  c = sho_config();
  c.imsi_prefix = "0010";
  EXPECT_EQ(sho::ShoService::create(*sho_db_, std::move(c), clock_).error().code,
            ErrorCode::invalid_argument);
  c = sho_config();
  c.client = nullptr;
  EXPECT_EQ(sho::ShoService::create(*sho_db_, std::move(c), clock_).error().code,
            ErrorCode::missing_argument);
}

INSTANTIATE_TEST_SUITE_P(Backends, ShoServiceTest,
                         ::testing::Values("memory", "sqlite", "postgresql"),
                         [](const auto& p) { return p.param; });

// Stops the throwaway PostgreSQL server, if this program started it.
class PgEnvironment final : public ::testing::Environment {
 public:
  void TearDown() override { store::testing::PgServer::instance().stop(); }
};
[[maybe_unused]] const auto* const kPgEnvironment =
    ::testing::AddGlobalTestEnvironment(new PgEnvironment);

}  // namespace
}  // namespace mcim
