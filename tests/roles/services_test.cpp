// The supplier, RO and VNO services end to end, each on a real TLS server on loopback, with the
// devices' real TREs and a fake SHO: manufacture and handover (F0), registration and activation
// (F1), attach with AKA and resynchronisation through the VNO (F2 steps 1-4), discovery through
// the gateway (steps 5-7) and the package path pinned from the bootstrap (steps 11-14); then the
// refusals the services owe each other, each answered with its exact status and code and leaving
// the RO's store as it was. On SQLite and on PostgreSQL (test names carry the backend: ctest
// attaches the PostgreSQL server fixture by name).
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "../device/test_sho.h"
#include "../net/net_test_util.h"
#include "../store/pg_server.h"
#include "../tre/tre_fixture.h"
#include "common/hex.h"
#include "common/log.h"
#include "net/http_error.h"
#include "net/router.h"
#include "pki/openssl.h"
#include "roles/ro/bootstrap.h"
#include "roles/ro/service.h"
#include "roles/supplier/service.h"
#include "roles/vno/service.h"
#include "store/store.h"
#include "tre/tre.h"

namespace mcim {
namespace {

using namespace std::chrono_literals;
using net::Json;
using net::testing::TestPki;
using pki::testing::TempDir;
using tre::testing::World;

constexpr std::string_view kRo = "ro-1";         // the RO's operator id, as World's bundles say
constexpr std::string_view kSupplier = "sup-1";  // batch signer and TLS client of the supplier
constexpr std::string_view kBatch = "batch-e2e-1";
const std::string kFirstPcid = "001019900000001";
const std::string kPcidRange = "00101990";  // the VNO's route to the RO
constexpr std::string_view kApn = "m2m-prov.ro-1";
const std::string kImsiA = "001020000000001";  // sho-a's MCIM for device 1
const std::string kImsiB = "001030000000001";  // sho-b's attempt
constexpr Bytes<16> kNonce = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6};
// Device 2's SEQ after authenticating locally, far above what the ICF starts from.
constexpr std::uint64_t kAheadSeq = 5000;

// ---- Small pieces: servers, clients, calls ---------------------------------------------------

// A service on an HTTPS server on 127.0.0.1 port 0 with TestPki's certificate for `name` (each
// service its own key, so that SPKI pins tell them apart).
std::unique_ptr<net::HttpServer> serve(net::HttpHandler handler, const std::string& name,
                                       net::ClientAuth auth, std::size_t body_limit = 64 * 1024) {
  return net::testing::start_named_server(std::move(handler), name, auth, body_limit);
}

// An HTTPS client presenting operator `id`'s tls-client certificate (none when empty); trusting
// the test PKI unless the options carry a pin or trust of their own.
std::shared_ptr<net::HttpsClient> client(const std::string& id, net::HttpsClientOptions o = {}) {
  if (!id.empty()) o.identity = TestPki::get().operator_client(id).identity;
  return net::testing::make_client("", std::move(o));
}

struct Answer {
  int status = 0;  // -1: the request failed (already reported)
  std::string body;
  Json json;  // null unless the body is JSON

  std::string code() const {
    if (!json.is_object() || !json.contains("error") || !json["error"].is_object()) return "";
    return json["error"].value("code", "");
  }
  Json at(const std::string& member) const {
    return json.is_object() && json.contains(member) ? json.at(member) : Json();
  }
  std::string text(const std::string& member) const {
    return json.is_object() && json.contains(member) && json[member].is_string()
               ? json[member].get<std::string>()
               : std::string();
  }
};

// One request with a JSON body (none when null) and a device's Bearer session (none when empty).
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

// What the gateway answers a CONNECT, read off the socket: an HttpsClient turns the refusal into
// an Error and the status is lost.
struct ConnectAnswer {
  int status = 0;
  std::string code;
};

ConnectAnswer raw_connect(const std::string& gateway, const std::string& credential,
                          const std::string& authority) {
  ConnectAnswer out;
  const auto colon = gateway.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(std::atoi(gateway.c_str() + colon + 1)));
  if (colon == std::string::npos ||
      ::inet_pton(AF_INET, gateway.substr(0, colon).c_str(), &addr.sin_addr) != 1) {
    ADD_FAILURE() << "gateway address " << gateway;
    return out;
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval timeout{5, 0};  // a gateway that kept the connection open must not hang the test
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    ADD_FAILURE() << "cannot reach the gateway";
    return out;
  }
  const std::string head =
      fmt::format("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\nProxy-Authorization: Bearer {1}\r\n\r\n",
                  authority, credential);
  EXPECT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  std::string in;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) in.append(buf, std::size_t(n));
  ::close(fd);
  if (in.starts_with("HTTP/1.1 ") && in.size() >= 12) out.status = std::atoi(in.c_str() + 9);
  const auto body_at = in.find("\r\n\r\n");
  if (body_at != std::string::npos) {
    auto j = Json::parse(in.substr(body_at + 4), nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_object()) {
      out.code = j["error"].value("code", "");
    }
  }
  return out;
}

// ---- The SHO's side of the notices -----------------------------------------------------------

// Takes the RO's arrival notices and status relays (mTLS, the RO only) and keeps them.
class FakeSho {
 public:
  FakeSho() : router_("sho") {
    for (auto [path, kept] :
         {std::pair{"/v1/sho/arrivals", &arrivals_}, std::pair{"/v1/sho/status", &statuses_}}) {
      net::RouteOptions only_ro;
      only_ro.authorize = net::require_operator({std::string(kRo)});
      auto added = router_.add(
          "POST", path,
          [this, list = kept](const net::Request& r) {
            Json body = Json::parse(r.http.body, nullptr, false);
            std::lock_guard lock(mu_);
            list->push_back(body.is_discarded() ? Json(r.http.body) : body);
            return net::json_response(200, Json::object());
          },
          std::move(only_ro));
      EXPECT_TRUE(added) << fmt::to_string(added.error());
    }
    server_ = serve(router_.handler(), "sho-a", net::ClientAuth::required);
  }

  std::string url() const { return server_ ? server_->url() : std::string(); }
  std::vector<Json> arrivals() const {
    std::lock_guard lock(mu_);
    return arrivals_;
  }
  std::vector<Json> statuses() const {
    std::lock_guard lock(mu_);
    return statuses_;
  }

 private:
  net::Router router_;
  mutable std::mutex mu_;
  std::vector<Json> arrivals_, statuses_;  // guarded by mu_
  std::unique_ptr<net::HttpServer> server_;
};

// ---- Devices ---------------------------------------------------------------------------------

struct Device {
  tre::SupplierBundle bundle;
  std::optional<tre::Tre> tre;

  const std::string& pcid() const { return bundle.pcid; }
  const std::string& id() const { return bundle.device_id; }
  std::string pin() const { return std::string(tre::pin_text(bundle)); }
  // The PCID credential's SEQ_MS.
  std::uint64_t seq() const {
    for (const auto& c : tre->status().credentials) {
      if (c.id == pcid()) return c.sqn_ms >> bundle.ind_bits;
    }
    ADD_FAILURE() << "no PCID credential in the TRE";
    return 0;
  }
};

// The attach answer (F2 step 4).
struct Attached {
  std::string session, home_session, gateway;
};

// ---- The fixture -----------------------------------------------------------------------------

class ServicesTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() { world_ = new World(); }
  static void TearDownTestSuite() {
    delete world_;
    world_ = nullptr;
  }
  static World& world() { return *world_; }

  void SetUp() override {
    // Everything the services log is kept: nothing secret may be in it (checked in TearDown).
    log::set_level(log::Level::debug);
    log::set_sink([this](std::string_view line) {
      std::lock_guard lock(log_mu_);
      log_.emplace_back(line);
    });
    open_database();
    if (HasFatalFailure()) return;
    start_ro();
    if (HasFatalFailure()) return;
    start_vno();
    if (HasFatalFailure()) return;
    start_supplier();
  }

  void TearDown() override {
    // Servers first: their handlers use the services' state.
    supplier_server_.reset();
    supplier_.reset();
    vno_server_.reset();
    vno_.reset();
    ro_server_.reset();
    ro_.reset();
    sho_.reset();
    for (auto& d : devices_) d.tre.reset();
    db_.reset();
    if (!pg_url_.empty()) store::testing::PgServer::instance().drop_schema(pg_url_);
    log::set_sink(nullptr);
    log::set_level(log::Level::info);
    std::lock_guard lock(log_mu_);
    if (HasFailure()) {
      for (const std::string& line : log_) std::fprintf(stderr, "%s\n", line.c_str());
    } else {
      EXPECT_FALSE(log_.empty());  // the services did log: the check below means something
    }
    for (const std::string& secret : secrets_) {
      for (const std::string& line : log_) {
        EXPECT_EQ(line.find(secret), std::string::npos) << "a secret in the log: " << line;
      }
    }
  }

  void open_database() {
    std::string url;
    if (GetParam() == "postgresql") {
      auto created = store::testing::PgServer::instance().create_schema();
      ASSERT_TRUE(created) << fmt::to_string(created.error());
      url = pg_url_ = *created;
    } else {
      url = "sqlite:" + (dir_ / "ro.db");
    }
    auto db = store::open_database(url);
    ASSERT_TRUE(db) << fmt::to_string(db.error());
    db_ = std::move(*db);
    ASSERT_EQ(db_->backend(), GetParam());
  }

  void start_ro() {
    sho_ = std::make_unique<FakeSho>();
    ASSERT_FALSE(sho_->url().empty());
    // The ICF's batch key: an encryption certificate from the operators' CA.
    auto c = device::testing::ro_config(world(), sho_->url());
    ASSERT_TRUE(c) << fmt::to_string(c.error());
    icf_cert_ = pki::up_ref(c->icf_key->cert());
    auto service = ro::RoService::create(*db_, std::move(*c), clock_);
    ASSERT_TRUE(service) << fmt::to_string(service.error());
    ro_ = std::move(*service);
    ro_server_ = serve(ro_->handler(), "ro", net::ClientAuth::optional, ro_->body_limit());
    ASSERT_TRUE(ro_server_);
    ro_url_ = ro_server_->url();
    ro_pin_ = pki::spki_sha256(TestPki::get().named_server("ro").identity->key.get());
  }

  void start_vno() {
    roles::VnoServiceConfig c;
    c.options.name = "vno-a";
    c.options.restricted_destinations = {ro_server_->address()};
    c.routes = {roles::Route{kPcidRange, "ro", true}};
    c.homes = {{"ro", ro_url_}};
    c.home_client = client("vno-a");
    auto service = roles::VnoService::create(std::move(c), clock_);
    ASSERT_TRUE(service) << fmt::to_string(service.error());
    vno_ = std::move(*service);
    vno_server_ = serve(vno_->handler(), "vno", net::ClientAuth::none);
    ASSERT_TRUE(vno_server_);
    vno_url_ = vno_server_->url();
  }

  void start_supplier() {
    supplier::SupplierServiceConfig c;
    c.supplier_id = kSupplier;
    c.admins = {"factory"};
    auto ca = pki::Authority::open(world().supplier().dir());
    ASSERT_TRUE(ca) << fmt::to_string(ca.error());
    c.ca = std::make_shared<const pki::Authority>(std::move(*ca));
    // The batch signer: the supplier's URN, from the supplier CA the RO trusts.
    pki::CertSpec spec;
    spec.profile = pki::Profile::package_signing;
    spec.subject = "CN=batch signer,O=sup-1";
    spec.sans = {"URI:urn:mcim:supplier:" + std::string(kSupplier)};
    auto signer = world().supplier().issue(spec, world().clock(), world().rng());
    ASSERT_TRUE(signer) << fmt::to_string(signer.error());
    auto key = std::make_shared<pki::KeyPair>();
    key->key = std::move(signer->key);
    key->certs.push_back(std::move(signer->cert));
    c.signer = std::move(key);
    c.icf_cert = pki::up_ref(icf_cert_.get());
    c.icf_url = ro_url_;
    c.ro_client = client(std::string(kSupplier));
    c.out_dir = dir_ / "supplier";
    c.device_template.ro_operator = kRo;
    c.device_template.op = Secret<16>(tre::testing::kOp);
    c.device_template.operator_roots = {world().operators().cert()};
    auto service = supplier::SupplierService::create(std::move(c), clock_);
    ASSERT_TRUE(service) << fmt::to_string(service.error());
    supplier_ = std::move(*service);
    supplier_server_ = serve(supplier_->handler(), "supplier", net::ClientAuth::required);
    ASSERT_TRUE(supplier_server_);
  }

  // The device's client towards the RO: through the gateway on its VNO session.
  std::shared_ptr<net::HttpsClient> via_gateway(const Attached& a, net::HttpsClientOptions o = {}) {
    o.proxy = a.gateway;
    o.proxy_credential = a.session;
    return client("", std::move(o));
  }

  // F2 step 1: the VNO's challenge.
  Answer challenge(const std::string& imsi) {
    return call(*device_client_, "POST", vno_url_ + "/v1/attach", {{"imsi", imsi}});
  }

  // The TRE's USIM on a challenge answer {"attach_id","rand","autn"}.
  aka::UsimAnswer usim(Device& d, const Answer& challenge) {
    auto rand = parse_hex_fixed<16>(challenge.text("rand"), "rand");
    auto autn = parse_hex_fixed<16>(challenge.text("autn"), "autn");
    EXPECT_TRUE(rand && autn) << challenge.body;
    if (!rand || !autn) return aka::UsimSyncFailure{};
    auto answer = d.tre->authenticate(d.pcid(), *rand, *autn);
    EXPECT_TRUE(answer) << fmt::to_string(answer.error());
    return answer ? *answer : aka::UsimSyncFailure{};
  }

  Answer respond(const std::string& attach_id, const aka::UsimAnswer& answer) {
    const auto* ok = std::get_if<aka::UsimSuccess>(&answer);
    EXPECT_TRUE(ok) << "the TRE did not accept the challenge";
    const std::string res = ok ? to_hex(ok->res.view()) : std::string("00000000");
    return call(*device_client_, "POST", vno_url_ + "/v1/attach/" + attach_id + "/response",
                {{"res", res}});
  }

  // F2 steps 1-4 checked: a restricted session at the VNO and at the RO's ICF.
  Attached expect_attached(const Device& d, const Answer& a) {
    EXPECT_EQ(a.status, 201) << a.body;
    Attached out{a.text("session"), a.text("home_session"), a.text("gateway")};
    EXPECT_EQ(a.text("imsi"), d.pcid());
    EXPECT_EQ(a.at("restricted"), Json(true)) << a.body;
    EXPECT_EQ(out.gateway, vno_->gateway_address());
    EXPECT_EQ(out.session.size(), 32u);
    auto home = db_->sessions().find(out.home_session);
    EXPECT_TRUE(home && *home) << "the ICF holds no session for the attach";
    if (home && *home) {
      EXPECT_EQ((*home)->imsi, d.pcid());
      EXPECT_EQ((*home)->vno, "vno-a");
      EXPECT_TRUE((*home)->restricted);
    }
    secrets_.push_back(out.session);
    secrets_.push_back(out.home_session);
    return out;
  }

  Answer register_pcid(const Device& d) {
    return call(*sho_a_, "PUT", ro_url_ + "/v1/drf/registrations/" + d.pcid(),
                {{"device_id", d.id()},
                 {"dpf_url", ro_url_},
                 {"dpf_key_pin", to_hex(ro_pin_)},
                 {"apn", kApn},
                 {"pin", d.pin()}});
  }

  Answer activate(const Device& d) {
    return call(*sho_a_, "POST", ro_url_ + "/v1/icf/pcids/" + d.pcid() + "/activation",
                {{"window_s", 3600}});
  }

  // Everything the RO's store ports hold about this test's PCIDs, devices, packages and sessions,
  // the audit log aside (it records refusals). Secrets enter as digests, so that a failed
  // comparison prints none.
  std::string snapshot() {
    auto digest = [](ByteView b) { return to_hex(pki::sha256(b)).substr(0, 16); };
    auto secs = [](store::Time t) { return t.time_since_epoch().count(); };
    std::string out;
    auto count = db_->pcids().count();
    out += fmt::format("pcids {}\n", count ? std::to_string(*count) : "error");
    for (const Device& d : devices_) {
      auto p = db_->pcids().find(d.pcid());
      if (!p || !*p) {
        out += fmt::format("pcid {} {}\n", d.pcid(), p ? "absent" : "error");
      } else {
        const auto& s = **p;
        out += fmt::format("pcid {} {} {} {} {} {} {} {} {}\n", s.pcid, s.batch,
                           store::to_string(s.status), secs(s.dormant_until), secs(s.active_until),
                           secs(s.not_after), s.ind_bits, digest(s.k.get()), digest(s.opc.get()));
      }
      auto seq = db_->sqns().current(d.pcid());
      out += fmt::format("sqn {} {}\n", d.pcid(), seq ? std::to_string(*seq) : "error");
      auto r = db_->registrations().find(d.pcid());
      if (!r || !*r) {
        out += fmt::format("registration {} {}\n", d.pcid(), r ? "absent" : "error");
      } else {
        const auto& g = **r;
        out += fmt::format("registration {} {} {} {} {} {} {} {}\n", g.pcid, g.device_id, g.sho,
                           g.dpf_url, to_hex(g.dpf_key_pin), g.apn, digest(g.bootstrap_key.get()),
                           secs(g.created));
      }
      auto next = db_->packages().next_for_device(d.id());
      std::string next_id = "error";
      if (next) next_id = *next ? (*next)->package_id : "none";
      out += fmt::format("next {} {}\n", d.id(), next_id);
    }
    for (const std::string& id : package_ids_) {
      auto p = db_->packages().find(id);
      if (!p || !*p) {
        out += fmt::format("package {} {}\n", id, p ? "absent" : "error");
      } else {
        const auto& s = **p;
        out += fmt::format("package {} {} {} {} {} {} {} {}\n", s.package_id, s.device_id, s.sho,
                           store::to_string(s.status), digest(s.package),
                           digest(ByteView(reinterpret_cast<const std::uint8_t*>(s.report.data()),
                                           s.report.size())),
                           secs(s.created), secs(s.updated));
      }
    }
    for (const std::string& id : home_sessions_) {
      auto s = db_->sessions().find(id);
      if (!s || !*s) {
        out += fmt::format("session {}\n", s ? "absent" : "error");
      } else {
        out += fmt::format("session {} {} {} {} {}\n", (*s)->imsi, (*s)->vno, (*s)->restricted,
                           secs((*s)->created), secs((*s)->expires));
      }
    }
    return out;
  }

  static World* world_;
  TempDir dir_;
  SystemClock clock_;
  std::string pg_url_;
  std::unique_ptr<store::Database> db_;
  std::unique_ptr<FakeSho> sho_;
  pki::X509Ptr icf_cert_;
  std::unique_ptr<ro::RoService> ro_;
  std::unique_ptr<net::HttpServer> ro_server_;
  std::string ro_url_;
  Bytes<32> ro_pin_{};
  std::unique_ptr<roles::VnoService> vno_;
  std::unique_ptr<net::HttpServer> vno_server_;
  std::string vno_url_;
  std::unique_ptr<supplier::SupplierService> supplier_;
  std::unique_ptr<net::HttpServer> supplier_server_;

  std::shared_ptr<net::HttpsClient> factory_ = client("factory");
  std::shared_ptr<net::HttpsClient> sho_a_ = client("sho-a");
  std::shared_ptr<net::HttpsClient> sho_b_ = client("sho-b");
  std::shared_ptr<net::HttpsClient> vno_b_ = client("vno-b");
  std::shared_ptr<net::HttpsClient> device_client_ = client("");  // the radio link to the VNO

  std::vector<Device> devices_;
  std::vector<std::string> package_ids_, home_sessions_;
  std::mutex log_mu_;
  std::vector<std::string> log_;      // guarded by log_mu_
  std::vector<std::string> secrets_;  // must appear in no log line
};

World* ServicesTest::world_ = nullptr;

TEST_P(ServicesTest, ProvisionsADeviceThroughSupplierRoAndVnoAndRefusesWhatItMust) {
  // ---- F0: the factory orders a batch of 3; the supplier hands it over to the ICF.
  {
    SCOPED_TRACE("F0");
    Answer a = call(*factory_, "POST", supplier_server_->url() + "/v1/batches",
                    {{"batch_id", kBatch}, {"first_pcid", kFirstPcid}, {"count", 3}});
    ASSERT_EQ(a.status, 201) << a.body;
    EXPECT_EQ(a.text("batch_id"), kBatch);
    EXPECT_EQ(a.at("devices"), Json(3));
    EXPECT_EQ(a.text("first_pcid"), kFirstPcid);
    EXPECT_EQ(a.text("last_pcid"), "001019900000003");
    EXPECT_EQ(a.text("handover"), "done") << a.body;
    EXPECT_EQ(a.at("imported"), Json(3));

    std::vector<std::string> files;
    for (const auto& e : std::filesystem::directory_iterator(
             dir_ / ("supplier/" + std::string(kBatch) + "/bundles"))) {
      files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    ASSERT_EQ(files.size(), 3u);
    for (const std::string& f : files) {
      auto b = tre::read_bundle(f);
      ASSERT_TRUE(b) << fmt::to_string(b.error());
      EXPECT_EQ(std::filesystem::path(f).filename().string(), b->device_id + ".bundle");
      devices_.push_back(Device{std::move(*b), std::nullopt});
    }
    std::sort(devices_.begin(), devices_.end(),
              [](const Device& x, const Device& y) { return x.pcid() < y.pcid(); });

    // The ICF holds exactly the manufactured credentials, dormant.
    auto count = db_->pcids().count();
    ASSERT_TRUE(count);
    EXPECT_EQ(*count, 3u);
    for (std::size_t i = 0; i < devices_.size(); ++i) {
      Device& d = devices_[i];
      EXPECT_EQ(d.pcid(), fmt::format("00101990000000{}", i + 1));
      auto p = db_->pcids().find(d.pcid());
      ASSERT_TRUE(p && *p) << d.pcid();
      EXPECT_EQ((*p)->status, store::PcidStatus::dormant);
      EXPECT_EQ((*p)->batch, kBatch);
      EXPECT_TRUE((*p)->k.get() == d.bundle.k.get());
      EXPECT_TRUE((*p)->opc.get() == d.bundle.opc.get());
      EXPECT_EQ((*p)->ind_bits, d.bundle.ind_bits);
      secrets_.push_back(d.pin());
      secrets_.push_back(to_hex(d.bundle.k.get()));
      secrets_.push_back(to_hex(d.bundle.opc.get()));
      ASSERT_TRUE(tre::Tre::init(tre::Options{dir_ / ("tre-" + d.id())}, d.bundle));
      auto t = tre::Tre::open(tre::Options{dir_ / ("tre-" + d.id())});
      ASSERT_TRUE(t) << fmt::to_string(t.error());
      d.tre.emplace(std::move(*t));
    }
  }
  Device& dev1 = devices_[0];
  Device& dev2 = devices_[1];

  // ---- F1: sho-a registers device 1 at the DRF and announces its switch-on.
  {
    SCOPED_TRACE("F1");
    Answer r = register_pcid(dev1);
    ASSERT_EQ(r.status, 200) << r.body;
    auto g = db_->registrations().find(dev1.pcid());
    ASSERT_TRUE(g && *g);
    EXPECT_EQ((*g)->sho, "sho-a");
    EXPECT_EQ((*g)->device_id, dev1.id());
    EXPECT_EQ((*g)->dpf_url, ro_url_);
    EXPECT_TRUE((*g)->dpf_key_pin == ro_pin_);
    EXPECT_EQ((*g)->apn, kApn);

    Answer a = activate(dev1);
    ASSERT_EQ(a.status, 200) << a.body;
    EXPECT_EQ(a.text("pcid"), dev1.pcid());
    auto p = db_->pcids().find(dev1.pcid());
    ASSERT_TRUE(p && *p);
    EXPECT_EQ((*p)->status, store::PcidStatus::active);
    EXPECT_EQ(a.at("active_until"), Json((*p)->active_until.time_since_epoch().count()));
    const auto now = std::chrono::floor<std::chrono::seconds>(clock_.now());
    EXPECT_GE((*p)->active_until, now + 3590s);
    EXPECT_LE((*p)->active_until, now + 3610s);

    // Device 2 is switched on too, but its registration is withdrawn: it attaches (to exercise
    // resynchronisation) and then has nothing to discover.
    ASSERT_EQ(register_pcid(dev2).status, 200);
    ASSERT_EQ(activate(dev2).status, 200);
    Answer gone = call(*sho_a_, "DELETE", ro_url_ + "/v1/drf/registrations/" + dev2.pcid());
    EXPECT_EQ(gone.status, 204) << gone.body;
    auto g2 = db_->registrations().find(dev2.pcid());
    ASSERT_TRUE(g2);
    EXPECT_FALSE(*g2);
  }

  // ---- F2 steps 1-4: device 1 attaches through the VNO with its PCID.
  Attached att1;
  {
    SCOPED_TRACE("F2 attach");
    Answer c = challenge(dev1.pcid());
    ASSERT_EQ(c.status, 200) << c.body;
    ASSERT_FALSE(c.text("attach_id").empty()) << c.body;
    const aka::UsimAnswer answer = usim(dev1, c);
    ASSERT_TRUE(std::holds_alternative<aka::UsimSuccess>(answer));
    att1 = expect_attached(dev1, respond(c.text("attach_id"), answer));
    ASSERT_FALSE(HasFailure());
    home_sessions_.push_back(att1.home_session);
  }

  // ---- Resynchronisation: device 2's SQN is far ahead of the ICF's.
  Attached att2;
  {
    SCOPED_TRACE("resynchronisation");
    tre::testing::Network local(dev2.bundle.k.get(), dev2.bundle.opc.get(), dev2.bundle.ind_bits);
    aka::SqnPolicy policy;
    policy.ind_bits = dev2.bundle.ind_bits;
    local.home() = aka::HomeSqn(policy, kAheadSeq - 1);
    // Freshness is judged per IND (TS 33.102 C.2.2): every entry of the array must be ahead, or
    // the ICF's first SQN would pass in an entry still at zero.
    for (unsigned ind = 0; ind < (1u << policy.ind_bits); ++ind) {
      const aka::AuthVector av = local.next(world().rng(), ind);
      auto ahead = dev2.tre->authenticate(dev2.pcid(), av.rand, av.autn);
      ASSERT_TRUE(ahead) << fmt::to_string(ahead.error());
      ASSERT_TRUE(std::holds_alternative<aka::UsimSuccess>(*ahead)) << ind;
    }
    const std::uint64_t ahead_seq = dev2.seq();
    ASSERT_GE(ahead_seq, kAheadSeq);

    Answer c = challenge(dev2.pcid());
    ASSERT_EQ(c.status, 200) << c.body;
    const aka::UsimAnswer stale = usim(dev2, c);
    const auto* sync = std::get_if<aka::UsimSyncFailure>(&stale);
    ASSERT_TRUE(sync) << "the ICF's first SQN was accepted";
    ASSERT_EQ(dev2.seq(), ahead_seq);  // AUTS commits nothing

    Answer again =
        call(*device_client_, "POST", vno_url_ + "/v1/attach/" + c.text("attach_id") + "/auts",
             {{"auts", to_hex(sync->auts)}});
    ASSERT_EQ(again.status, 200) << again.body;
    EXPECT_NE(again.text("attach_id"), c.text("attach_id"));
    const aka::UsimAnswer fresh = usim(dev2, again);
    ASSERT_TRUE(std::holds_alternative<aka::UsimSuccess>(fresh));
    att2 = expect_attached(dev2, respond(again.text("attach_id"), fresh));
    ASSERT_FALSE(HasFailure());
    home_sessions_.push_back(att2.home_session);

    auto icf_seq = db_->sqns().current(dev2.pcid());
    ASSERT_TRUE(icf_seq);
    EXPECT_GT(dev2.seq(), ahead_seq);
    EXPECT_GT(*icf_seq, ahead_seq);
    EXPECT_GE(*icf_seq, dev2.seq());
  }

  // ---- F2 steps 5-7: device 1 discovers its SHO through the gateway.
  std::string bootstrap;
  {
    SCOPED_TRACE("F2 discovery");
    auto to_ro = via_gateway(att1);
    ASSERT_TRUE(to_ro);
    Answer b = call(*to_ro, "GET", ro_url_ + "/v1/drf/bootstrap", nullptr, att1.home_session);
    ASSERT_EQ(b.status, 200) << b.body;
    bootstrap = b.body;
    auto fields = ro::verify_bootstrap(bootstrap, dev1.pin(), dev1.id(), clock_.now(), 300s);
    ASSERT_TRUE(fields) << fmt::to_string(fields.error());
    EXPECT_EQ(fields->pcid, dev1.pcid());
    EXPECT_EQ(fields->device_id, dev1.id());
    EXPECT_EQ(fields->dpf_url, ro_url_);
    EXPECT_TRUE(fields->dpf_key_pin == ro_pin_);
    EXPECT_EQ(fields->apn, kApn);
    EXPECT_EQ(fields->sho, "sho-a");

    ASSERT_TRUE(ro_->wait_notices_delivered(5s));
    const auto arrivals = sho_->arrivals();
    ASSERT_EQ(arrivals.size(), 1u);
    const Json& n = arrivals[0];
    ASSERT_TRUE(n.is_object()) << n.dump();
    EXPECT_EQ(n.value("pcid", ""), dev1.pcid());
    EXPECT_EQ(n.value("device_id", ""), dev1.id());
    EXPECT_EQ(n.value("sho", ""), "sho-a");
    EXPECT_TRUE(n.contains("time") && n["time"].is_number_integer()) << n.dump();
  }

  // ---- F2 steps 11-14: sho-a's package, fetched on the bootstrap's pin, installed, reported.
  const pki::McimDocument doc = world().document(dev1.id(), kImsiA, "sho-a", 1, kNonce);
  package_ids_.push_back(doc.package_id);
  {
    SCOPED_TRACE("package");
    const ByteVec pkg =
        world().seal(doc, world().signer("sho-a"), dev1.tre->platform_certificate());
    Answer stored = call(*sho_a_, "POST", ro_url_ + "/v1/dpf/packages",
                         {{"pcid", dev1.pcid()},
                          {"device_id", dev1.id()},
                          {"package_id", doc.package_id},
                          {"package", to_hex(pkg)}});
    ASSERT_EQ(stored.status, 201) << stored.body;
    auto p = db_->packages().find(doc.package_id);
    ASSERT_TRUE(p && *p);
    EXPECT_EQ((*p)->status, store::PackageStatus::pending);
    EXPECT_EQ((*p)->sho, "sho-a");

    // The device trusts nothing but the pin the bootstrap gave it.
    auto fields = ro::verify_bootstrap(bootstrap, dev1.pin(), dev1.id(), clock_.now(), 300s);
    ASSERT_TRUE(fields);
    net::HttpsClientOptions pinned;
    pinned.spki_pin = fields->dpf_key_pin;
    auto dpf = via_gateway(att1, pinned);
    ASSERT_TRUE(dpf);
    Answer got = call(*dpf, "GET", fields->dpf_url + "/v1/dpf/package", nullptr, att1.home_session);
    ASSERT_EQ(got.status, 200) << got.body;
    EXPECT_EQ(got.text("package_id"), doc.package_id);
    auto bytes = parse_hex(got.text("package"), "package");
    ASSERT_TRUE(bytes);
    EXPECT_TRUE(*bytes == pkg);
    p = db_->packages().find(doc.package_id);
    ASSERT_TRUE(p && *p);
    EXPECT_EQ((*p)->status, store::PackageStatus::delivered);

    ASSERT_TRUE(dev1.tre->record_registration(kNonce));
    tre::InstallOutcome installed = dev1.tre->install(*bytes);
    ASSERT_TRUE(installed.result) << fmt::to_string(installed.result.error());
    EXPECT_EQ(installed.result->id, kImsiA);
    Json chain = Json::array();
    for (const auto& cert : dev1.bundle.platform_chain) {
      chain.push_back(*pki::certificate_pem(cert.get()));
    }
    Answer reported =
        call(*dpf, "POST", fields->dpf_url + "/v1/dpf/packages/" + doc.package_id + "/report",
             {{"report", installed.report}, {"platform_chain", chain}}, att1.home_session);
    ASSERT_EQ(reported.status, 200) << reported.body;
    EXPECT_EQ(reported.text("package_id"), doc.package_id);
    EXPECT_EQ(reported.text("outcome"), "ok");
    p = db_->packages().find(doc.package_id);
    ASSERT_TRUE(p && *p);
    EXPECT_EQ((*p)->status, store::PackageStatus::reported);
    EXPECT_EQ((*p)->report, installed.report);

    ASSERT_TRUE(ro_->wait_notices_delivered(5s));
    const auto statuses = sho_->statuses();
    ASSERT_EQ(statuses.size(), 1u);
    const Json& s = statuses[0];
    ASSERT_TRUE(s.is_object()) << s.dump();
    EXPECT_EQ(s.value("package_id", ""), doc.package_id);
    EXPECT_EQ(s.value("device_id", ""), dev1.id());
    EXPECT_EQ(s.value("sho", ""), "sho-a");
    EXPECT_EQ(s.value("report", ""), installed.report);
  }

  // ---- Refusals over the real services: exact status and code, the RO's store unchanged.
  const pki::McimDocument rival = world().document(dev1.id(), kImsiB, "sho-b", 1, kNonce);
  package_ids_.push_back(rival.package_id);
  {
    SCOPED_TRACE("second simultaneous attach");
    const std::string untouched = snapshot();
    Answer c = challenge(dev1.pcid());
    ASSERT_EQ(c.status, 200) << c.body;
    // The vector reserved an SQN: a legitimate change, and proof the snapshot sees the ICF's.
    EXPECT_NE(snapshot(), untouched);
    const aka::UsimAnswer answer = usim(dev1, c);
    const std::string before = snapshot();
    expect_refusal(respond(c.text("attach_id"), answer), 409, ErrorCode::already_exists);
    EXPECT_EQ(snapshot(), before);
  }
  {
    SCOPED_TRACE("the PCID session outside its APN");
    const std::string before = snapshot();
    const auto refused = vno_->vno().refused_forwards();
    ConnectAnswer c = raw_connect(att1.gateway, att1.session, supplier_server_->address());
    EXPECT_EQ(c.status, 403);
    EXPECT_EQ(c.code, to_string(ErrorCode::access_denied));
    EXPECT_EQ(vno_->vno().refused_forwards(), refused + 1);
    EXPECT_EQ(snapshot(), before);
  }
  {
    SCOPED_TRACE("vectors for a VNO without a roaming agreement");
    const std::string before = snapshot();
    expect_refusal(
        call(*vno_b_, "POST", ro_url_ + "/v1/auth/vectors", {{"imsi", dev1.pcid()}, {"count", 1}}),
        403, ErrorCode::access_denied);
    EXPECT_EQ(snapshot(), before);
  }
  {
    SCOPED_TRACE("the bootstrap with another PIN, and altered");
    std::string wrong_pin = dev1.pin();
    wrong_pin[0] = wrong_pin[0] == '9' ? '0' : char(wrong_pin[0] + 1);
    auto other = ro::verify_bootstrap(bootstrap, wrong_pin, dev1.id(), clock_.now(), 300s);
    ASSERT_FALSE(other);
    EXPECT_EQ(other.error().code, ErrorCode::signature_invalid);
    EXPECT_EQ(other.error().message.find(wrong_pin), std::string::npos);

    std::string altered = bootstrap;
    const auto at = altered.find("\"sho\":\"sho-a\"");
    ASSERT_NE(at, std::string::npos) << bootstrap;
    altered.replace(at, 13, "\"sho\":\"sho-b\"");
    auto forged = ro::verify_bootstrap(altered, dev1.pin(), dev1.id(), clock_.now(), 300s);
    ASSERT_FALSE(forged);
    EXPECT_EQ(forged.error().code, ErrorCode::signature_invalid);
  }
  {
    SCOPED_TRACE("discovery of an unregistered PCID");
    auto to_ro = via_gateway(att2);
    ASSERT_TRUE(to_ro);
    const std::string before = snapshot();
    const std::size_t arrivals = sho_->arrivals().size();
    expect_refusal(call(*to_ro, "GET", ro_url_ + "/v1/drf/bootstrap", nullptr, att2.home_session),
                   404, ErrorCode::not_found);
    EXPECT_EQ(snapshot(), before);
    EXPECT_TRUE(ro_->wait_notices_delivered(2s));
    EXPECT_EQ(sho_->arrivals().size(), arrivals);
  }
  {
    SCOPED_TRACE("device calls without a Bearer session");
    auto to_ro = via_gateway(att1);
    ASSERT_TRUE(to_ro);
    const std::string before = snapshot();
    const Json report = {{"report", "x"}, {"platform_chain", Json::array({"x"})}};
    for (const std::string& bearer : {std::string(), std::string(32, '0')}) {
      SCOPED_TRACE(bearer.empty() ? "none" : "unknown");
      expect_refusal(call(*to_ro, "GET", ro_url_ + "/v1/drf/bootstrap", nullptr, bearer), 401,
                     ErrorCode::unauthenticated);
      expect_refusal(call(*to_ro, "GET", ro_url_ + "/v1/dpf/package", nullptr, bearer), 401,
                     ErrorCode::unauthenticated);
      expect_refusal(
          call(*to_ro, "POST", ro_url_ + "/v1/dpf/packages/" + doc.package_id + "/report", report,
               bearer),
          401, ErrorCode::unauthenticated);
    }
    EXPECT_EQ(snapshot(), before);
  }
  {
    SCOPED_TRACE("a package for device 1 from another SHO");
    const ByteVec pkg =
        world().seal(rival, world().signer("sho-b"), dev1.tre->platform_certificate());
    const std::string before = snapshot();
    expect_refusal(call(*sho_b_, "POST", ro_url_ + "/v1/dpf/packages",
                        {{"pcid", dev1.pcid()},
                         {"device_id", dev1.id()},
                         {"package_id", rival.package_id},
                         {"package", to_hex(pkg)}}),
                   403, ErrorCode::access_denied);
    EXPECT_EQ(snapshot(), before);
  }

  // ---- Detach: the VNO closes the home's session too.
  {
    SCOPED_TRACE("detach");
    Answer d = call(*device_client_, "DELETE", vno_url_ + "/v1/sessions/" + att1.session);
    EXPECT_EQ(d.status, 204) << d.body;
    auto s = db_->sessions().find(att1.home_session);
    ASSERT_TRUE(s);
    EXPECT_FALSE(*s);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ServicesTest, ::testing::Values("sqlite", "postgresql"),
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
