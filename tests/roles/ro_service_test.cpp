// The RO's HTTPS service (roles/ro/service.h) driven in-process through its Router with
// fabricated mTLS peers and Bearer sessions, over the in-memory Database (and SQLite for the
// happy path), with a real sealed supplier batch, a real TRE (tests/tre/tre_fixture.h) answering
// AKA and installing the package, and a real HTTPS SHO receiving the notices. Every refusal is
// checked for its exact status and code and for leaving the stored state as it was.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>
#include <variant>

#include "../net/net_test_util.h"
#include "../tre/tre_fixture.h"
#include "aka/milenage.h"
#include "aka/sqn.h"
#include "common/hex.h"
#include "common/log.h"
#include "pki/certificate.h"
#include "roles/ro/bootstrap.h"
#include "roles/ro/service.h"
#include "roles/supplier/ccif.h"
#include "store/memory.h"
#include "tre/tre.h"

namespace mcim::ro {
namespace {

using namespace std::chrono_literals;
using net::HttpRequest;
using net::HttpResponse;
using net::Json;
using net::testing::TestPki;
using tre::testing::World;

const std::string kPcid = "001019990000001";   // the TRE's
const std::string kPcid2 = "001019990000002";  // a second device of the batch, no TRE
const std::string kImsi = "001020000000001";
const std::string kImsiB = "001030000000001";  // sho-b's MCIM (F4)
const std::string kPin = "12345678";  // World::bundle's
constexpr Bytes<16> kNonce = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
constexpr Bytes<16> kNonceB = {2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
const std::string kDpfPin(64, 'a');
constexpr Bytes<32> kChallenge = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 4,
                                  3, 2, 1, 0, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8};

// ---- Helpers --------------------------------------------------------------------------------

net::Peer peer_of(const std::string& op) {
  net::Peer p;
  p.tls = true;
  p.address = "127.0.0.1:4000";
  if (!op.empty()) {
    std::vector<pki::X509Ptr> chain;
    const auto& cred =
        op == "anonymous" ? TestPki::get().client(op) : TestPki::get().operator_client(op);
    for (const auto& c : cred.identity->certs) chain.push_back(pki::up_ref(c.get()));
    p.certificate = net::peer_certificate(std::move(chain));
  }
  return p;
}

HttpRequest op_request(const std::string& method, const std::string& target, const std::string& op,
                       std::string body = "", std::string content_type = "application/json") {
  HttpRequest r;
  r.method = method;
  r.target = target;
  r.body = std::move(body);
  if (!r.body.empty() || method == "POST" || method == "PUT") r.content_type = content_type;
  r.peer = peer_of(op);
  return r;
}

HttpRequest device_request(const std::string& method, const std::string& target,
                           const std::string& authorization, std::string body = "") {
  HttpRequest r;
  r.method = method;
  r.target = target;
  r.body = std::move(body);
  if (method == "POST") r.content_type = "application/json";
  r.peer.tls = true;
  r.peer.address = "10.0.0.7:5000";
  if (!authorization.empty()) r.headers.emplace_back("Authorization", authorization);
  return r;
}

std::string bearer(const std::string& session) { return "Bearer " + session; }

std::string error_code(const HttpResponse& r) {
  auto j = Json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.contains("error")) return "(no envelope)";
  return j["error"]["code"].get<std::string>();
}

std::string header_of(const HttpResponse& r, std::string_view name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) return v;
  }
  return {};
}

// The supplier's batch signer and the ICF's key agreement certificate, from the World's CAs.
struct Parties {
  explicit Parties(World& w) {
    pki::CertSpec signer;
    signer.profile = pki::Profile::package_signing;
    signer.subject = "CN=batch signer,O=supplier";
    for (const char* id : {"sup-1", "sup-2"}) {
      signer.sans = {std::string("URI:urn:mcim:supplier:") + id};
      auto s = w.supplier().issue(signer, w.clock(), w.rng());
      EXPECT_TRUE(s) << s.error().message;
      suppliers.emplace(id, std::move(*s));
    }
    for (const char* id : {"icf.ro-1", "icf.other"}) {
      pki::CertSpec icf;
      icf.profile = pki::Profile::platform;  // keyAgreement (see ccif_test)
      icf.subject = std::string("CN=") + id + " batch key,O=RO";
      icf.device_id = id;
      icf.model = "icf";
      auto k = w.operators().issue(icf, w.clock(), w.rng());
      EXPECT_TRUE(k) << k.error().message;
      auto pair = std::make_shared<pki::KeyPair>();
      pair->key = std::move(k->key);
      pair->certs.push_back(std::move(k->cert));
      icf_keys.emplace(id, std::move(pair));
    }
  }
  std::map<std::string, pki::Issued> suppliers;
  std::map<std::string, std::shared_ptr<pki::KeyPair>> icf_keys;
};

// What the refusals must not change, read through the store ports.
struct Known {
  std::vector<std::string> pcids = {kPcid, kPcid2, "001019990000003"};
  std::vector<std::string> sessions;
  std::vector<std::string> packages;
  std::vector<std::string> requests;  // attestation requests
};

std::string snapshot(store::Database& db, const Known& known) {
  std::string out = fmt::format("pcids {}\n", db.pcids().count().value_or(999999));
  for (const std::string& pcid : known.pcids) {
    auto p = db.pcids().find(pcid).value_or(std::nullopt);
    if (p) {
      out += fmt::format("pcid {} {} {} {} {} {} {} {} {}\n", pcid, to_string(p->status),
                         p->active_until.time_since_epoch().count(),
                         p->dormant_until.time_since_epoch().count(), p->batch, p->ind_bits,
                         p->not_after.time_since_epoch().count(), p->renewal_package,
                         to_hex(p->k.get()));
    }
    out += fmt::format("sqn {} {}\n", pcid, db.sqns().current(pcid).value_or(999999));
    auto r = db.registrations().find(pcid).value_or(std::nullopt);
    if (r) {
      out += fmt::format("reg {} {} {} {} {} {} {} successor '{}' refusal '{}'\n", pcid,
                         r->device_id, r->sho, r->dpf_url, r->apn, to_hex(r->dpf_key_pin),
                         r->created.time_since_epoch().count(), r->successor, r->refusal);
    }
  }
  for (const std::string& id : known.sessions) {
    auto s = db.sessions().find(id).value_or(std::nullopt);
    if (s)
      out +=
          fmt::format("session {} {} {}\n", s->imsi, s->vno, s->expires.time_since_epoch().count());
  }
  for (const std::string& id : known.requests) {
    auto r = db.attestation_requests().find(id).value_or(std::nullopt);
    if (r) {
      out +=
          fmt::format("request {} {} {} {} {} {}\n", id, r->device_id, r->sho, to_string(r->status),
                      to_hex(r->nonce), r->answered.time_since_epoch().count());
    }
  }
  for (const std::string& id : known.packages) {
    auto p = db.packages().find(id).value_or(std::nullopt);
    if (p) {
      out += fmt::format("package {} {} {} {}\n", id, to_string(p->status), p->report.size(),
                         p->updated.time_since_epoch().count());
    }
  }
  return out;
}

struct Bad {
  std::string what;
  HttpRequest request;
  int status;
  std::string code;
};

// ---- Fixture --------------------------------------------------------------------------------

class RoServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    world_ = new World();
    parties_ = new Parties(*world_);
  }
  static void TearDownTestSuite() {
    delete parties_;
    delete world_;
  }
  static World& world() { return *world_; }

  // The service's database becomes the SQLite file `file` (opened again after a restart).
  void open_sqlite(const std::string& file) {
    auto opened = store::open_database("sqlite:" + file);
    ASSERT_TRUE(opened) << opened.error().message;
    db_ = std::move(*opened);
  }

  void SetUp() override {
    bundle_ = world().bundle(kPcid);
    device_ = bundle_.device_id;
    const std::string dir = world().path(fmt::format("tre-{}", counter_++));
    ASSERT_TRUE(tre::Tre::init(tre::Options{dir}, bundle_));
    auto t = tre::Tre::open(tre::Options{dir});
    ASSERT_TRUE(t) << t.error().message;
    tre_.emplace(std::move(*t));
    if (!db_) db_ = store::make_memory_database();
  }

  RoServiceConfig config() {
    RoServiceConfig c;
    c.operator_id = "ro-1";
    c.roaming_partners = {"vno-a", "vno-b"};
    c.suppliers = {"sup-1", "sup-2"};
    c.supplier_roots = std::make_shared<const pki::TrustAnchors>(
        *pki::TrustAnchors::from_certs({world().supplier().cert()}));
    c.operator_roots = std::make_shared<const pki::TrustAnchors>(
        *pki::TrustAnchors::from_certs({world().operators().cert()}));
    c.icf_key = parties_->icf_keys.at("icf.ro-1");
    c.max_batch_bytes = 256 * 1024;
    c.expire_interval = 0s;
    c.notify_retry = 20ms;
    return c;
  }

  void start(RoServiceConfig c) {
    service_.reset();
    auto s = RoService::create(*db_, std::move(c), clock_);
    ASSERT_TRUE(s) << s.error().message;
    service_ = std::move(*s);
  }
  void start() { start(config()); }

  HttpResponse handle(const HttpRequest& r) { return service_->router().handle(r); }

  // A batch with the TRE's PCID credential and two more.
  supplier::PcidBatch batch(const std::string& id = "batch-1",
                            const std::string& supplier = "sup-1", const std::string& ro = "ro-1") {
    supplier::PcidBatch b;
    b.batch_id = id;
    b.supplier_id = supplier;
    b.ro_operator = ro;
    b.created = std::chrono::floor<std::chrono::seconds>(clock_.now());
    supplier::PcidRecord r;
    r.pcid = kPcid;
    r.k = bundle_.k;
    r.opc = bundle_.opc;
    r.ind_bits = bundle_.ind_bits;
    r.not_after = bundle_.pcid_not_after;
    b.records.push_back(r);
    for (const std::string& p : {kPcid2, std::string("001019990000003")}) {
      r.pcid = p;
      b.records.push_back(r);
    }
    return b;
  }
  std::string seal(const supplier::PcidBatch& b, const std::string& signer = "sup-1",
                   const std::string& icf = "icf.ro-1") {
    const auto& s = parties_->suppliers.at(signer);
    auto sealed = supplier::seal_batch(b, pki::SealSigner{s.cert.get(), s.key.get(), {}},
                                       parties_->icf_keys.at(icf)->cert());
    EXPECT_TRUE(sealed) << sealed.error().message;
    return sealed ? std::string(sealed->begin(), sealed->end()) : std::string();
  }

  HttpResponse post_batch(const std::string& body, const std::string& op = "sup-1") {
    return handle(op_request("POST", "/v1/icf/batches", op, body, "application/cms"));
  }

  std::string registration_body(const std::string& device, const std::string& pin = kPin) {
    return Json{{"device_id", device},
                {"dpf_url", "https://dpf.ro-1.example/mcim"},
                {"dpf_key_pin", kDpfPin},
                {"apn", "m2m-prov.ro-1"},
                {"pin", pin}}
        .dump();
  }

  // Imported, registered to sho-a and activated: ready to attach, or to connect directly.
  void switched_on() {
    EXPECT_EQ(post_batch(seal(batch())).status, 201);
    EXPECT_EQ(handle(op_request("PUT", "/v1/drf/registrations/" + kPcid, "sho-a",
                                registration_body(device_)))
                  .status,
              200);
    EXPECT_EQ(handle(op_request("POST", "/v1/icf/pcids/" + kPcid + "/activation", "sho-a",
                                R"({"window_s":3600})"))
                  .status,
              200);
  }

  // ... and attached through vno-a: the session id.
  std::string provisioned() {
    switched_on();
    auto s =
        handle(op_request("POST", "/v1/auth/sessions", "vno-a", R"({"imsi":")" + kPcid + "\"}"));
    EXPECT_EQ(s.status, 201) << s.body;
    const std::string id = Json::parse(s.body)["session"].get<std::string>();
    known_.sessions.push_back(id);
    return id;
  }

  // The TRE's package from sho-a, as the SHO hands it over.
  std::string package_body(std::uint64_t sequence = 1, const std::string& signer = "sho-a",
                           const std::string& pcid = kPcid) {
    auto doc = world().document(device_, kImsi, signer, sequence, kNonce);
    const ByteVec pkg = world().seal(doc, world().signer(signer), tre_->platform_certificate());
    known_.packages.push_back(doc.package_id);
    return Json{{"pcid", pcid},
                {"device_id", device_},
                {"package_id", doc.package_id},
                {"package", to_hex(pkg)}}
        .dump();
  }

  std::string report_body(const std::string& report) {
    return Json{{"report", report},
                {"platform_chain", {*pki::certificate_pem(tre_->platform_certificate())}}}
        .dump();
  }

  // sho-a's attestation request for this TRE's device (the PVA's challenge).
  std::string attestation_request_body(const std::string& request_id,
                                       const std::string& pcid = kPcid,
                                       const std::string& device = "") {
    known_.requests.push_back(request_id);
    return Json{{"pcid", pcid},
                {"device_id", device.empty() ? device_ : device},
                {"request_id", request_id},
                {"nonce", to_hex(kChallenge)}}
        .dump();
  }
  HttpResponse request_attestation(const std::string& request_id) {
    return handle(op_request("POST", "/v1/dpf/attestation-requests", "sho-a",
                             attestation_request_body(request_id)));
  }
  // The TRE's signed report on the challenge.
  std::string attestation() {
    auto report = tre_->attest(kChallenge);
    EXPECT_TRUE(report) << report.error().message;
    return report ? *report : std::string();
  }

  std::string snap() { return snapshot(*db_, known_); }

  void expect_refusals(const std::vector<Bad>& table) {
    for (const Bad& b : table) {
      const std::string before = snap();
      const HttpResponse r = handle(b.request);
      EXPECT_EQ(r.status, b.status) << b.what << ": " << r.body;
      EXPECT_EQ(error_code(r), b.code) << b.what << ": " << r.body;
      EXPECT_EQ(snap(), before) << b.what;
      if (b.status == 401 && b.request.peer.certificate == nullptr &&
          b.request.target.find("/v1/drf/bootstrap") != std::string::npos) {
        EXPECT_EQ(header_of(r, "WWW-Authenticate"), "Bearer realm=\"mcim-ro\"") << b.what;
      }
    }
  }

  std::size_t flow_count(const std::string& step) {
    const std::string text = service_->router().metrics().render();
    const std::string key = fmt::format("step=\"{}\"}} ", step);
    const auto at = text.find(key);
    return at == std::string::npos ? 0 : std::stoul(text.substr(at + key.size()));
  }

  // One series' value in the service's /metrics text (e.g.
  // mcim_ro_notices_total{kind="arrival",outcome="delivered"}); -1 when it is not there.
  double metric(const std::string& series) {
    const std::string text = service_->router().metrics().render();
    const auto at = text.find("\n" + series + " ");
    return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
  }
  double notices(const std::string& kind, const std::string& outcome) {
    return metric(
        fmt::format("mcim_ro_notices_total{{kind=\"{}\",outcome=\"{}\"}}", kind, outcome));
  }

  static World* world_;
  static Parties* parties_;
  static inline int counter_ = 0;
  FakeClock clock_{std::chrono::system_clock::now()};
  std::unique_ptr<store::Database> db_;
  tre::SupplierBundle bundle_;
  std::string device_;
  std::optional<tre::Tre> tre_;
  std::unique_ptr<RoService> service_;
  Known known_;
};
World* RoServiceTest::world_ = nullptr;
Parties* RoServiceTest::parties_ = nullptr;

// ---- Happy path -----------------------------------------------------------------------------

// F0 to F2 step 14 through every endpoint, with the TRE on the device side.
class RoServiceHappyTest : public RoServiceTest {
 public:
  void run() {
    start();
    // F0: the supplier's batch.
    auto r = post_batch(seal(batch()));
    ASSERT_EQ(r.status, 201) << r.body;
    EXPECT_EQ(Json::parse(r.body),
              (Json{{"batch_id", "batch-1"}, {"supplier", "sup-1"}, {"imported", 3}}));
    EXPECT_EQ(*db_->pcids().count(), 3u);

    // F1: sho-a registers the device; the PIN is not echoed.
    r = handle(
        op_request("PUT", "/v1/drf/registrations/" + kPcid, "sho-a", registration_body(device_)));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Json::parse(r.body),
              (Json{{"pcid", kPcid}, {"sho", "sho-a"}, {"device_id", device_}}));
    EXPECT_EQ(r.body.find(kPin), std::string::npos);
    EXPECT_EQ((*db_->registrations().find(kPcid))->sho, "sho-a");

    // F7: activation by the home operator.
    r = handle(op_request("POST", "/v1/icf/pcids/" + kPcid + "/activation", "sho-a",
                          R"({"window_s":3600})"));
    ASSERT_EQ(r.status, 200) << r.body;
    const auto now_s = std::chrono::floor<std::chrono::seconds>(clock_.now());
    EXPECT_EQ(Json::parse(r.body)["active_until"].get<std::int64_t>(),
              (now_s + 3600s).time_since_epoch().count());
    EXPECT_EQ((*db_->pcids().find(kPcid))->status, store::PcidStatus::active);

    // F2 steps 2-3: vectors the TRE accepts.
    r = handle(op_request("POST", "/v1/auth/vectors", "vno-a",
                          R"({"imsi":")" + kPcid + R"(","count":2})"));
    ASSERT_EQ(r.status, 200) << r.body;
    const Json vectors = Json::parse(r.body)["vectors"];
    ASSERT_EQ(vectors.size(), 2u);
    for (const Json& v : vectors) {
      for (const char* f : {"rand", "autn", "ck", "ik"}) {
        EXPECT_EQ(v[f].get<std::string>().size(), 32u) << f;
      }
      auto answer =
          tre_->authenticate(kPcid, *parse_hex_fixed<16>(v["rand"].get<std::string>(), "rand"),
                             *parse_hex_fixed<16>(v["autn"].get<std::string>(), "autn"));
      ASSERT_TRUE(answer) << answer.error().message;
      ASSERT_TRUE(std::holds_alternative<aka::UsimSuccess>(*answer));
      EXPECT_EQ(to_hex(std::get<aka::UsimSuccess>(*answer).res.view()), v["xres"]);
      EXPECT_EQ(to_hex(std::get<aka::UsimSuccess>(*answer).ck), v["ck"]);
    }
    EXPECT_EQ(*db_->sqns().current(kPcid), 2u);
    r = handle(op_request("POST", "/v1/auth/vectors", "vno-a", R"({"imsi":")" + kPcid + "\"}"));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Json::parse(r.body)["vectors"].size(), 1u);

    // Step 4: the VNO opens the restricted session.
    r = handle(op_request("POST", "/v1/auth/sessions", "vno-a", R"({"imsi":")" + kPcid + "\"}"));
    ASSERT_EQ(r.status, 201) << r.body;
    const Json session = Json::parse(r.body);
    EXPECT_EQ(session["imsi"], kPcid);
    EXPECT_EQ(session["restricted"], true);
    EXPECT_EQ(session["expires"].get<std::int64_t>(), (now_s + 1h).time_since_epoch().count());
    const std::string sid = session["session"].get<std::string>();
    EXPECT_EQ(sid.size(), 32u);

    // Steps 5-6: the bootstrap message, verifiable with the device's PIN.
    r = handle(device_request("GET", "/v1/drf/bootstrap", bearer(sid)));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(header_of(r, "Cache-Control"), "no-store");
    auto fields = verify_bootstrap(r.body, kPin, device_, clock_.now(), 5min);
    ASSERT_TRUE(fields) << fields.error().message;
    EXPECT_EQ(fields->sho, "sho-a");
    EXPECT_EQ(fields->pcid, kPcid);
    EXPECT_EQ(to_hex(fields->dpf_key_pin), kDpfPin);

    // Steps 7-9: the SHO's attestation request, collected and answered by the device.
    const std::string poll = "/v1/dpf/attestation-request";
    r = handle(device_request("GET", poll, bearer(sid)));
    ASSERT_EQ(r.status, 404) << r.body;
    r = request_attestation("challenge-1");
    ASSERT_EQ(r.status, 201) << r.body;
    EXPECT_EQ(Json::parse(r.body), (Json{{"request_id", "challenge-1"}, {"status", "pending"}}));
    r = handle(device_request("GET", poll, bearer(sid)));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(header_of(r, "Cache-Control"), "no-store");
    EXPECT_EQ(Json::parse(r.body),
              (Json{{"request_id", "challenge-1"}, {"nonce", to_hex(kChallenge)}}));
    r = handle(device_request("POST", "/v1/dpf/attestations/challenge-1", bearer(sid),
                              report_body(attestation())));
    ASSERT_EQ(r.status, 202) << r.body;
    EXPECT_EQ(Json::parse(r.body), (Json{{"request_id", "challenge-1"}, {"status", "relayed"}}));
    EXPECT_EQ((*db_->attestation_requests().find("challenge-1"))->status,
              store::AttestationStatus::answered);
    EXPECT_EQ(handle(device_request("GET", poll, bearer(sid))).status, 404);

    // Step 11: the SHO's package.
    r = handle(op_request("POST", "/v1/dpf/packages", "sho-a", package_body()));
    ASSERT_EQ(r.status, 201) << r.body;
    const std::string package_id = known_.packages.back();
    EXPECT_EQ(Json::parse(r.body), (Json{{"package_id", package_id}, {"status", "pending"}}));

    // Step 12: the device fetches it.
    r = handle(device_request("GET", "/v1/dpf/package", bearer(sid)));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Json::parse(r.body)["package_id"], package_id);
    auto pkg = parse_hex(Json::parse(r.body)["package"].get<std::string>(), "package");
    ASSERT_TRUE(pkg);
    EXPECT_EQ((*db_->packages().find(package_id))->status, store::PackageStatus::delivered);

    // Step 13-14: installed, reported.
    ASSERT_TRUE(tre_->record_registration(kNonce));
    auto installed = tre_->install(*pkg);
    ASSERT_TRUE(installed.result) << installed.result.error().message;
    r = handle(device_request("POST", "/v1/dpf/packages/" + package_id + "/report", bearer(sid),
                              report_body(installed.report)));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Json::parse(r.body), (Json{{"package_id", package_id}, {"outcome", "ok"}}));
    EXPECT_EQ((*db_->packages().find(package_id))->status, store::PackageStatus::reported);

    // The VNO detaches; the SHO removes its registration.
    r = handle(op_request("DELETE", "/v1/auth/sessions/" + sid, "vno-a"));
    EXPECT_EQ(r.status, 204) << r.body;
    EXPECT_FALSE(*db_->sessions().find(sid));
    r = handle(op_request("DELETE", "/v1/drf/registrations/" + kPcid, "sho-a"));
    EXPECT_EQ(r.status, 204) << r.body;
    EXPECT_FALSE(*db_->registrations().find(kPcid));

    for (const char* step :
         {"batch_imported", "registered", "session_opened", "discovery", "package_stored",
          "package_delivered", "status_reported", "attestation_requested", "attestation_relayed"}) {
      EXPECT_EQ(flow_count(step), 1u) << step;
    }
    EXPECT_EQ(flow_count("vectors"), 2u);
    EXPECT_EQ(handle(op_request("GET", "/healthz", "")).status, 200);
  }
  void use_database(std::unique_ptr<store::Database> db) { db_ = std::move(db); }
};

TEST_F(RoServiceHappyTest, EveryEndpointInFlowOrderInMemory) { run(); }

TEST_F(RoServiceHappyTest, EveryEndpointInFlowOrderOnSqlite) {
  auto db = store::open_database("sqlite:" + world().path("ro-happy.db"));
  ASSERT_TRUE(db) << db.error().message;
  use_database(std::move(*db));
  run();
}

// ---- Refusals, endpoint by endpoint ---------------------------------------------------------

TEST_F(RoServiceTest, BatchRefusals) {
  start();
  const std::string good = seal(batch());
  std::vector<Bad> table = {
      {"no certificate", op_request("POST", "/v1/icf/batches", "", good, "application/cms"), 401,
       "unauthenticated"},
      {"not a supplier", op_request("POST", "/v1/icf/batches", "sho-a", good, "application/cms"),
       403, "access_denied"},
      {"certificate without operator",
       op_request("POST", "/v1/icf/batches", "anonymous", good, "application/cms"), 403,
       "access_denied"},
      {"json content type", op_request("POST", "/v1/icf/batches", "sup-1", good), 415,
       "unsupported_media_type"},
      {"no content type", op_request("POST", "/v1/icf/batches", "sup-1", good, ""), 415,
       "unsupported_media_type"},
      {"oversize",
       op_request("POST", "/v1/icf/batches", "sup-1", std::string(256 * 1024 + 1, 'x'),
                  "application/cms"),
       413, "payload_too_large"},
      {"not CMS", op_request("POST", "/v1/icf/batches", "sup-1", "{}", "application/cms"), 400,
       "bad_format"},
      {"empty", op_request("POST", "/v1/icf/batches", "sup-1", "", "application/cms"), 400,
       "bad_format"},
      {"another supplier's batch",
       op_request("POST", "/v1/icf/batches", "sup-2", good, "application/cms"), 403,
       "access_denied"},
      {"for another RO",
       op_request("POST", "/v1/icf/batches", "sup-1", seal(batch("batch-2", "sup-1", "ro-2")),
                  "application/cms"),
       422, "wrong_recipient"},
      {"sealed to another ICF",
       op_request("POST", "/v1/icf/batches", "sup-1", seal(batch(), "sup-1", "icf.other"),
                  "application/cms"),
       422, "wrong_recipient"},
      {"truncated",
       op_request("POST", "/v1/icf/batches", "sup-1", good.substr(0, good.size() / 2),
                  "application/cms"),
       400, "bad_format"},
  };
  expect_refusals(table);
  EXPECT_EQ(*db_->pcids().count(), 0u);
  // The refusals of the envelope are on the record.
  const auto audit = *db_->audit().recent(1);
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0].event, "import-batch");
  EXPECT_EQ(audit[0].outcome, "bad_format");

  ASSERT_EQ(post_batch(good).status, 201);
  // A replay, and another batch id holding the same PCIDs: nothing changes.
  expect_refusals({
      {"replay", op_request("POST", "/v1/icf/batches", "sup-1", good, "application/cms"), 409,
       "already_exists"},
      {"same pcids again",
       op_request("POST", "/v1/icf/batches", "sup-1", seal(batch("batch-3")), "application/cms"),
       409, "already_exists"},
  });
  EXPECT_EQ(*db_->pcids().count(), 3u);
}

TEST_F(RoServiceTest, VectorsAndResyncRefusals) {
  start();
  ASSERT_EQ(post_batch(seal(batch())).status, 201);
  const std::string imsi = R"({"imsi":")" + kPcid + "\"";
  auto vec = [&](std::string body, std::string op = "vno-a", std::string ct = "application/json") {
    return op_request("POST", "/v1/auth/vectors", op, std::move(body), std::move(ct));
  };
  // Dormant: not yet activated by its owner.
  expect_refusals({{"dormant", vec(imsi + "}"), 409, "credential_unusable"}});
  ASSERT_EQ(handle(op_request("PUT", "/v1/drf/registrations/" + kPcid, "sho-a",
                              registration_body(device_)))
                .status,
            200);
  ASSERT_EQ(handle(op_request("POST", "/v1/icf/pcids/" + kPcid + "/activation", "sho-a",
                              R"({"window_s":60})"))
                .status,
            200);
  expect_refusals({
      {"no certificate", vec(imsi + "}", ""), 401, "unauthenticated"},
      {"not a roaming partner", vec(imsi + "}", "sho-a"), 403, "access_denied"},
      {"malformed json", vec(imsi), 400, "bad_format"},
      {"not an object", vec("[1]"), 400, "bad_format"},
      {"imsi a number", vec(R"({"imsi":1234567})"), 400, "bad_format"},
      {"imsi with letters", vec(R"({"imsi":"00101abc"})"), 400, "invalid_argument"},
      {"imsi too short", vec(R"({"imsi":"12345"})"), 400, "invalid_argument"},
      {"missing imsi", vec(R"({"count":1})"), 400, "missing_argument"},
      {"unknown member", vec(imsi + R"(,"k":"00"})"), 400, "bad_format"},
      {"count zero", vec(imsi + R"(,"count":0})"), 400, "invalid_argument"},
      {"count six", vec(imsi + R"(,"count":6})"), 400, "invalid_argument"},
      {"count a string", vec(imsi + R"(,"count":"2"})"), 400, "bad_format"},
      {"count a fraction", vec(imsi + R"(,"count":1.5})"), 400, "bad_format"},
      {"duplicate key", vec(imsi + R"(,"imsi":"001019990000002"})"), 400, "bad_format"},
      {"text/plain", vec(imsi + "}", "vno-a", "text/plain"), 415, "unsupported_media_type"},
      {"no content type", vec(imsi + "}", "vno-a", ""), 415, "unsupported_media_type"},
      {"oversize", vec(imsi + R"(,"x":")" + std::string(64 * 1024, 'a') + "\"}"), 413,
       "payload_too_large"},
      {"unknown pcid", vec(R"({"imsi":"001019990000099"})"), 404, "not_found"},
  });

  auto rs = [&](std::string body, std::string op = "vno-a") {
    return op_request("POST", "/v1/auth/resync", op, std::move(body));
  };
  const std::string rand(32, '0');
  const std::string auts(28, '0');
  const std::string good = imsi + R"(,"rand":")" + rand + R"(","auts":")" + auts + "\"";
  expect_refusals({
      {"no certificate", rs(good + "}", ""), 401, "unauthenticated"},
      {"not a roaming partner", rs(good + "}", "sho-b"), 403, "access_denied"},
      {"malformed json", rs(good), 400, "bad_format"},
      {"rand short", rs(imsi + R"(,"rand":"00","auts":")" + auts + "\"}"), 400, "invalid_argument"},
      {"auts not hex",
       rs(imsi + R"(,"rand":")" + rand + R"(","auts":")" + std::string(28, 'z') + "\"}"), 400,
       "invalid_argument"},
      {"missing auts", rs(imsi + R"(,"rand":")" + rand + "\"}"), 400, "missing_argument"},
      {"unknown member", rs(good + R"(,"sqn":1})"), 400, "bad_format"},
      {"count six", rs(good + R"(,"count":6})"), 400, "invalid_argument"},
      {"forged auts", rs(good + "}"), 422, "mac_mismatch"},
      {"unknown pcid",
       rs(R"({"imsi":"001019990000099","rand":")" + rand + R"(","auts":")" + auts + "\"}"), 404,
       "not_found"},
      {"oversize", rs(good + R"(,"x":")" + std::string(64 * 1024, 'a') + "\"}"), 413,
       "payload_too_large"},
  });
  // The window ends: unusable again.
  clock_.advance(61s);
  expect_refusals({{"window over", vec(imsi + "}"), 409, "credential_unusable"}});
}

TEST_F(RoServiceTest, ResyncEndToEndWithTheTre) {
  start();
  const std::string sid = provisioned();
  (void)sid;
  // The TRE accepted a far higher SEQ in the slot of the ICF's next vector (a network restored
  // from an old backup, say): the ICF's vector is stale and the USIM answers AUTS.
  const aka::SqnPolicy policy = [&] {
    aka::SqnPolicy p;
    p.ind_bits = bundle_.ind_bits;
    return p;
  }();
  const std::uint64_t next_seq = *db_->sqns().current(kPcid) + 1;
  const unsigned ind = static_cast<unsigned>(next_seq & ((1u << policy.ind_bits) - 1));
  const aka::Milenage milenage(bundle_.k.get(), bundle_.opc.get());
  const auto ahead = aka::make_vector(milenage, world().rng().draw<16>(),
                                      aka::sqn_bytes(policy.join(1000, ind)), {0x80, 0x00});
  auto accepted = tre_->authenticate(kPcid, ahead.rand, ahead.autn);
  ASSERT_TRUE(accepted && std::holds_alternative<aka::UsimSuccess>(*accepted));

  auto r = handle(op_request("POST", "/v1/auth/vectors", "vno-a", R"({"imsi":")" + kPcid + "\"}"));
  ASSERT_EQ(r.status, 200) << r.body;
  const Json stale = Json::parse(r.body)["vectors"][0];
  const auto rand = *parse_hex_fixed<16>(stale["rand"].get<std::string>(), "rand");
  auto answer = tre_->authenticate(kPcid, rand,
                                   *parse_hex_fixed<16>(stale["autn"].get<std::string>(), "autn"));
  ASSERT_TRUE(answer) << answer.error().message;
  ASSERT_TRUE(std::holds_alternative<aka::UsimSyncFailure>(*answer));
  const aka::Auts auts = std::get<aka::UsimSyncFailure>(*answer).auts;
  const std::uint64_t before = *db_->sqns().current(kPcid);

  // A forged AUTS changes nothing.
  aka::Auts forged = auts;
  forged[13] ^= 0x01;
  const auto resync = [&](const aka::Auts& a, const aka::Rand& rnd) {
    return op_request(
        "POST", "/v1/auth/resync", "vno-a",
        Json{{"imsi", kPcid}, {"rand", to_hex(rnd)}, {"auts", to_hex(a)}, {"count", 2}}.dump());
  };
  expect_refusals({{"forged auts", resync(forged, rand), 422, "mac_mismatch"}});
  aka::Rand other = rand;
  other[0] ^= 0x01;
  expect_refusals({{"other rand", resync(auts, other), 422, "mac_mismatch"}});
  EXPECT_EQ(*db_->sqns().current(kPcid), before);

  // Uppercase hex is accepted on input.
  Json body = Json{{"imsi", kPcid}, {"rand", to_hex(rand)}, {"auts", to_hex(auts)}, {"count", 2}};
  std::string upper = body["auts"].get<std::string>();
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  body["auts"] = upper;
  r = handle(op_request("POST", "/v1/auth/resync", "vno-a", body.dump()));
  ASSERT_EQ(r.status, 200) << r.body;
  const Json fresh = Json::parse(r.body)["vectors"];
  ASSERT_EQ(fresh.size(), 2u);
  const std::uint64_t after = *db_->sqns().current(kPcid);
  EXPECT_GE(after, 1002u);
  EXPECT_EQ(fresh[0]["rand"].get<std::string>(),
            to_hex(*parse_hex(fresh[0]["rand"].get<std::string>(), "r")));
  for (const Json& v : fresh) {
    auto ok = tre_->authenticate(kPcid, *parse_hex_fixed<16>(v["rand"].get<std::string>(), "rand"),
                                 *parse_hex_fixed<16>(v["autn"].get<std::string>(), "autn"));
    ASSERT_TRUE(ok) << ok.error().message;
    EXPECT_TRUE(std::holds_alternative<aka::UsimSuccess>(*ok));
  }
  // The SQN never goes back: an old AUTS replayed resynchronises to a lower SEQ_MS, no lower.
  r = handle(resync(auts, rand));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_GT(*db_->sqns().current(kPcid), after);
  EXPECT_EQ(flow_count("resync"), 2u);
}

TEST_F(RoServiceTest, SessionRefusals) {
  start();
  const std::string sid = provisioned();
  auto open = [&](std::string body, std::string op = "vno-a", std::string ct = "application/json") {
    return op_request("POST", "/v1/auth/sessions", op, std::move(body), std::move(ct));
  };
  const std::string body = R"({"imsi":")" + kPcid + "\"}";
  ASSERT_EQ(db_->pcids()
                .activate(kPcid2, std::chrono::floor<std::chrono::seconds>(clock_.now()) + 1h)
                .has_value(),
            true);
  expect_refusals({
      {"second attach", open(body), 409, "already_exists"},
      {"second attach elsewhere", open(body, "vno-b"), 409, "already_exists"},
      {"no certificate", open(body, ""), 401, "unauthenticated"},
      {"not a partner", open(body, "sho-a"), 403, "access_denied"},
      {"malformed", open("{"), 400, "bad_format"},
      {"unknown member", open(R"({"imsi":"001019990000002","vno":"x"})"), 400, "bad_format"},
      {"imsi a list", open(R"({"imsi":["001019990000002"]})"), 400, "bad_format"},
      {"missing imsi", open("{}"), 400, "missing_argument"},
      {"text/plain", open(R"({"imsi":"001019990000002"})", "vno-a", "text/plain"), 415,
       "unsupported_media_type"},
      {"oversize", open(std::string(64 * 1024 + 1, ' ')), 413, "payload_too_large"},
      {"unknown pcid", open(R"({"imsi":"001019990000099"})"), 404, "not_found"},
      {"dormant pcid", open(R"({"imsi":"001019990000003"})"), 409, "credential_unusable"},
  });
  auto close = [&](std::string id, std::string op = "vno-a") {
    return op_request("DELETE", "/v1/auth/sessions/" + id, op);
  };
  expect_refusals({
      {"no certificate", close(sid, ""), 401, "unauthenticated"},
      {"not a partner", close(sid, "sho-a"), 403, "access_denied"},
      {"another VNO's session", close(sid, "vno-b"), 403, "access_denied"},
      {"unknown session", close(std::string(32, 'f')), 404, "not_found"},
      {"oversize",
       op_request("DELETE", "/v1/auth/sessions/" + sid, "vno-a", std::string(64 * 1024 + 1, 'x')),
       413, "payload_too_large"},
  });
  ASSERT_EQ(handle(close(sid)).status, 204);
  EXPECT_EQ(handle(close(sid)).status, 404);
}

TEST_F(RoServiceTest, RegistrationRefusals) {
  start();
  ASSERT_EQ(post_batch(seal(batch())).status, 201);
  auto put = [&](std::string body, std::string op = "sho-a", std::string pcid = kPcid,
                 std::string ct = "application/json") {
    return op_request("PUT", "/v1/drf/registrations/" + pcid, op, std::move(body), std::move(ct));
  };
  Json good = Json::parse(registration_body(device_));
  auto with = [&](const std::string& field, Json value) {
    Json j = good;
    if (value.is_null()) {
      j.erase(field);
    } else {
      j[field] = std::move(value);
    }
    return j.dump();
  };
  const std::vector<Bad> table = {
      {"no certificate", put(good.dump(), ""), 401, "unauthenticated"},
      {"no operator in certificate", put(good.dump(), "anonymous"), 403, "access_denied"},
      {"malformed", put("{\"device_id\":"), 400, "bad_format"},
      {"unknown member", put(with("sho", "sho-b")), 400, "bad_format"},
      {"pin a number", put(with("pin", 12345678)), 400, "bad_format"},
      {"pin letters", put(with("pin", "12ab5678")), 400, "invalid_argument"},
      {"pin short", put(with("pin", "123")), 400, "invalid_argument"},
      {"pin missing", put(with("pin", nullptr)), 400, "missing_argument"},
      {"dpf pin short", put(with("dpf_key_pin", "abcd")), 400, "invalid_argument"},
      {"dpf url not https", put(with("dpf_url", "http://dpf.example/")), 400, "invalid_argument"},
      {"device id bad", put(with("device_id", "dev one")), 400, "invalid_argument"},
      {"bad pcid in path", put(good.dump(), "sho-a", "12ab"), 400, "invalid_argument"},
      {"unknown pcid", put(good.dump(), "sho-a", "001019990000099"), 404, "not_found"},
      {"text/plain", put(good.dump(), "sho-a", kPcid, "text/plain"), 415, "unsupported_media_type"},
      {"oversize", put(with("apn", std::string(64 * 1024, 'a'))), 413, "payload_too_large"},
  };
  expect_refusals(table);
  ASSERT_EQ(handle(put(good.dump())).status, 200);
  const std::string before = snap();
  expect_refusals({{"another SHO replaces it", put(good.dump(), "sho-b"), 403, "access_denied"}});
  EXPECT_EQ(snap(), before);

  auto del = [&](std::string op, std::string pcid = kPcid) {
    return op_request("DELETE", "/v1/drf/registrations/" + pcid, op);
  };
  expect_refusals({
      {"no certificate", del(""), 401, "unauthenticated"},
      {"another SHO", del("sho-b"), 403, "access_denied"},
      {"unknown", del("sho-a", kPcid2), 404, "not_found"},
  });
  ASSERT_EQ(handle(del("sho-a")).status, 204);
  EXPECT_EQ(handle(del("sho-a")).status, 404);
}

// F5: only the holder hands a registration over, to a SHO the RO works with; every refusal leaves
// the registration as it was.
TEST_F(RoServiceTest, TransferRefusalsAndTheHandover) {
  RoServiceConfig c = config();
  c.shos["sho-a"] = {"https://127.0.0.1:9"};
  c.shos["sho-b"] = {"https://127.0.0.1:9"};
  start(std::move(c));
  ASSERT_EQ(post_batch(seal(batch())).status, 201);
  ASSERT_EQ(handle(op_request("PUT", "/v1/drf/registrations/" + kPcid, "sho-a",
                              registration_body(device_)))
                .status,
            200);
  auto transfer = [&](std::string body, std::string op = "sho-a", std::string pcid = kPcid,
                      std::string ct = "application/json") {
    return op_request("POST", "/v1/drf/registrations/" + pcid + "/transfer", op, std::move(body),
                      std::move(ct));
  };
  const std::string before = snap();
  expect_refusals({
      {"no certificate", transfer(R"({"to":"sho-b"})", ""), 401, "unauthenticated"},
      {"the receiver takes it", transfer(R"({"to":"sho-b"})", "sho-b"), 403, "access_denied"},
      {"a third party", transfer(R"({"to":"sho-b"})", "sho-c"), 403, "access_denied"},
      {"to itself", transfer(R"({"to":"sho-a"})"), 400, "invalid_argument"},
      {"to an unknown SHO", transfer(R"({"to":"sho-z"})"), 400, "invalid_argument"},
      {"to not an id", transfer(R"({"to":"sho b"})"), 400, "invalid_argument"},
      {"no to", transfer("{}"), 400, "missing_argument"},
      {"unknown member", transfer(R"({"to":"sho-b","x":1})"), 400, "bad_format"},
      {"malformed", transfer(R"({"to":)"), 400, "bad_format"},
      {"text/plain", transfer(R"({"to":"sho-b"})", "sho-a", kPcid, "text/plain"), 415,
       "unsupported_media_type"},
      {"unregistered", transfer(R"({"to":"sho-b"})", "sho-a", kPcid2), 404, "not_found"},
  });
  EXPECT_EQ(snap(), before);
  const auto moved = handle(transfer(R"({"to":"sho-b"})"));
  ASSERT_EQ(moved.status, 200) << moved.body;
  auto reg = db_->registrations().find(kPcid);
  ASSERT_TRUE(reg && *reg);
  EXPECT_EQ((*reg)->sho, "sho-b");
  // The old holder can neither take it back nor move it again; the new one registers over it.
  expect_refusals({
      {"back", transfer(R"({"to":"sho-a"})", "sho-a"), 403, "access_denied"},
      {"re-register",
       op_request("PUT", "/v1/drf/registrations/" + kPcid, "sho-a", registration_body(device_)),
       403, "access_denied"},
  });
  EXPECT_EQ(handle(op_request("PUT", "/v1/drf/registrations/" + kPcid, "sho-b",
                              registration_body(device_)))
                .status,
            200);
}

TEST_F(RoServiceTest, ActivationRefusals) {
  start();
  ASSERT_EQ(post_batch(seal(batch())).status, 201);
  ASSERT_EQ(handle(op_request("PUT", "/v1/drf/registrations/" + kPcid, "sho-a",
                              registration_body(device_)))
                .status,
            200);
  auto act = [&](std::string body, std::string op = "sho-a", std::string pcid = kPcid,
                 std::string ct = "application/json") {
    return op_request("POST", "/v1/icf/pcids/" + pcid + "/activation", op, std::move(body),
                      std::move(ct));
  };
  const std::string max = std::to_string(std::chrono::seconds(IcfConfig{}.max_activation).count());
  expect_refusals({
      {"no certificate", act(R"({"window_s":60})", ""), 401, "unauthenticated"},
      {"another SHO", act(R"({"window_s":60})", "sho-b"), 403, "access_denied"},
      {"not registered", act(R"({"window_s":60})", "sho-a", kPcid2), 404, "not_found"},
      {"unknown pcid", act(R"({"window_s":60})", "sho-a", "001019990000099"), 404, "not_found"},
      {"window zero", act(R"({"window_s":0})"), 400, "invalid_argument"},
      {"window too long", act(R"({"window_s":)" + max + "1}"), 400, "invalid_argument"},
      {"window a string", act(R"({"window_s":"60"})"), 400, "bad_format"},
      {"window missing", act("{}"), 400, "missing_argument"},
      {"unknown member", act(R"({"window_s":60,"until":1})"), 400, "bad_format"},
      {"malformed", act(R"({"window_s":)"), 400, "bad_format"},
      {"text/plain", act(R"({"window_s":60})", "sho-a", kPcid, "text/plain"), 415,
       "unsupported_media_type"},
      {"oversize", act(std::string(64 * 1024 + 1, ' ')), 413, "payload_too_large"},
  });
  EXPECT_EQ(handle(act(R"({"window_s":)" + max + "}")).status, 200);
}

TEST_F(RoServiceTest, PackageRefusals) {
  start();
  const std::string sid = provisioned();
  auto post = [&](std::string body, std::string op = "sho-a", std::string ct = "application/json") {
    return op_request("POST", "/v1/dpf/packages", op, std::move(body), std::move(ct));
  };
  const std::string good = package_body(1);
  Json j = Json::parse(good);
  auto with = [&](const std::string& field, Json value) {
    Json c = j;
    c[field] = std::move(value);
    return c.dump();
  };
  expect_refusals({
      {"no certificate", post(good, ""), 401, "unauthenticated"},
      {"no operator", post(good, "anonymous"), 403, "access_denied"},
      {"not the registered SHO", post(good, "sho-b"), 403, "access_denied"},
      {"signed by another SHO", post(package_body(2, "sho-b")), 403, "access_denied"},
      {"unknown pcid", post(with("pcid", "001019990000099")), 404, "not_found"},
      {"unregistered pcid", post(with("pcid", kPcid2)), 404, "not_found"},
      {"another device", post(with("device_id", "dev-other")), 422, "wrong_recipient"},
      {"package not hex", post(with("package", "zz")), 400, "invalid_argument"},
      {"package empty", post(with("package", "")), 400, "invalid_argument"},
      {"package too large", post(with("package", std::string(2 * 64 * 1024 + 2, 'a'))), 400,
       "invalid_argument"},
      {"package broken", post(with("package", j["package"].get<std::string>().substr(0, 200))), 400,
       "bad_format"},
      {"package a number", post(with("package", 1)), 400, "bad_format"},
      {"unknown member", post(with("sho", "sho-a")), 400, "bad_format"},
      {"malformed", post(good.substr(0, 40)), 400, "bad_format"},
      {"text/plain", post(good, "sho-a", "text/plain"), 415, "unsupported_media_type"},
      {"oversize", post(with("package", std::string(3 * 64 * 1024, 'a'))), 413,
       "payload_too_large"},
  });
  ASSERT_EQ(handle(post(good)).status, 201);
  expect_refusals({{"replay", post(good), 409, "already_exists"}});
  (void)sid;
}

TEST_F(RoServiceTest, AttestationRequestRefusals) {
  start();
  const std::string sid = provisioned();
  auto post = [&](std::string body, std::string op = "sho-a", std::string ct = "application/json") {
    return op_request("POST", "/v1/dpf/attestation-requests", op, std::move(body), std::move(ct));
  };
  const std::string good = attestation_request_body("challenge-1");
  const Json j = Json::parse(good);
  auto with = [&](const std::string& field, Json value) {
    Json c = j;
    c[field] = std::move(value);
    return c.dump();
  };
  auto without = [&](const std::string& field) {
    Json c = j;
    c.erase(field);
    return c.dump();
  };
  expect_refusals({
      {"no certificate", post(good, ""), 401, "unauthenticated"},
      {"no operator", post(good, "anonymous"), 403, "access_denied"},
      {"not the registered SHO", post(good, "sho-b"), 403, "access_denied"},
      {"unknown pcid", post(with("pcid", "001019990000099")), 404, "not_found"},
      {"unregistered pcid", post(with("pcid", kPcid2)), 404, "not_found"},
      {"another device", post(with("device_id", "dev-other")), 422, "wrong_recipient"},
      {"request_id not an id", post(with("request_id", "a b")), 400, "invalid_argument"},
      {"request_id too long", post(with("request_id", std::string(65, 'a'))), 400,
       "invalid_argument"},
      {"nonce too short", post(with("nonce", std::string(30, 'a'))), 400, "invalid_argument"},
      {"nonce too long", post(with("nonce", std::string(130, 'a'))), 400, "invalid_argument"},
      {"nonce not hex", post(with("nonce", std::string(32, 'z'))), 400, "invalid_argument"},
      {"pcid not digits", post(with("pcid", "00101999000000x")), 400, "invalid_argument"},
      {"missing nonce", post(without("nonce")), 400, "missing_argument"},
      {"unknown member", post(with("sho", "sho-a")), 400, "bad_format"},
      {"malformed", post(good.substr(0, 20)), 400, "bad_format"},
      {"text/plain", post(good, "sho-a", "text/plain"), 415, "unsupported_media_type"},
  });
  ASSERT_EQ(handle(post(good)).status, 201);
  expect_refusals({{"known request_id", post(good), 409, "already_exists"}});
  EXPECT_EQ(flow_count("attestation_requested"), 1u);
  (void)sid;
}

// Held polls (docs/protocol.md "Held polls"): a device's GET with `Prefer: wait=N` that finds
// nothing is held, and woken when the SHO puts something for its PCID; the run after the wake
// answers it. Without the preference, or past the wait, nothing is held.
TEST_F(RoServiceTest, AHeldPollIsAnsweredWhenTheShoPutsSomethingForThePcid) {
  start();
  const std::string sid = provisioned();
  auto poll = [&](const std::string& target, const std::string& prefer,
                  std::chrono::steady_clock::time_point received) {
    HttpRequest r = device_request("GET", target, bearer(sid));
    if (!prefer.empty()) r.headers.emplace_back("Prefer", prefer);
    r.received = received;
    return r;
  };
  const auto now = std::chrono::steady_clock::now();

  // No preference, a wait of 0, or a wait already over: 404 at once, as before.
  for (const auto& [prefer, received] :
       {std::pair{std::string(), now}, std::pair{std::string("wait=0"), now},
        std::pair{std::string("wait=2"), now - 3s}}) {
    const auto r = handle(poll("/v1/dpf/attestation-request", prefer, received));
    EXPECT_FALSE(r.hold) << prefer;
    EXPECT_EQ(r.status, 404) << prefer;
  }

  // Held until the SHO asks, then answered.
  const HttpRequest held = poll("/v1/dpf/attestation-request", "wait=5", now);
  auto first = handle(held);
  ASSERT_TRUE(first.hold);
  std::atomic<int> woken{0};
  first.hold([&] { ++woken; });
  EXPECT_EQ(woken, 0);
  ASSERT_EQ(request_attestation("challenge-1").status, 201);
  EXPECT_EQ(woken, 1);
  const auto answered = handle(held);
  EXPECT_FALSE(answered.hold);
  EXPECT_EQ(answered.status, 200);
  EXPECT_EQ(Json::parse(answered.body)["request_id"], "challenge-1");

  // The same for the package.
  const HttpRequest package_poll = poll("/v1/dpf/package", "wait=5", now);
  auto waiting = handle(package_poll);
  ASSERT_TRUE(waiting.hold);
  waiting.hold([&] { ++woken; });
  ASSERT_EQ(handle(op_request("POST", "/v1/dpf/packages", "sho-a", package_body())).status, 201);
  EXPECT_EQ(woken, 2);
  EXPECT_EQ(handle(package_poll).status, 200);

  // A refusal wakes a held poll too, and the poll answers with it.
  const HttpRequest again = poll("/v1/dpf/attestation-request", "wait=5", now);
  ASSERT_EQ(handle(device_request("POST", "/v1/dpf/attestations/challenge-1", bearer(sid),
                                  report_body(attestation())))
                .status,
            202);
  auto refused_later = handle(again);
  ASSERT_TRUE(refused_later.hold);
  refused_later.hold([&] { ++woken; });
  ASSERT_EQ(
      handle(
          op_request("POST", "/v1/dpf/refusals", "sho-a",
                     Json{{"pcid", kPcid}, {"device_id", device_}, {"code", "measurement_mismatch"}}
                         .dump()))
          .status,
      201);
  EXPECT_EQ(woken, 3);
  const auto refusal = handle(again);
  EXPECT_EQ(refusal.status, 422);
  EXPECT_EQ(error_code(refusal), "measurement_mismatch");
}

TEST_F(RoServiceTest, AttestationAnswerRefusals) {
  start();
  const std::string sid = provisioned();
  const std::string poll = "/v1/dpf/attestation-request";
  expect_refusals({{"nothing yet", device_request("GET", poll, bearer(sid)), 404, "not_found"},
                   {"no session", device_request("GET", poll, ""), 401, "unauthenticated"}});
  ASSERT_EQ(request_attestation("challenge-1").status, 201);
  ASSERT_EQ(request_attestation("challenge-2").status, 201);
  // The oldest pending first.
  auto got = handle(device_request("GET", poll, bearer(sid)));
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(Json::parse(got.body)["request_id"], "challenge-1");

  auto answer = [&](std::string body, std::string id = "challenge-1", std::string session = "",
                    std::string ct = "application/json") {
    auto r = device_request("POST", "/v1/dpf/attestations/" + id,
                            session.empty() ? bearer(sid) : session, std::move(body));
    r.content_type = std::move(ct);
    return r;
  };
  const std::string report = attestation();
  const std::string good = report_body(report);
  const std::string pem = *pki::certificate_pem(tre_->platform_certificate());
  expect_refusals({
      {"no session", answer(good, "challenge-1", "Basic x"), 401, "unauthenticated"},
      {"no session, malformed body", answer("{", "challenge-1", "Basic x"), 401, "unauthenticated"},
      {"unknown request", answer(good, "challenge-9"), 404, "not_found"},
      {"report does not decode", answer(report_body("not a report")), 400, "bad_format"},
      {"report with trailing bytes", answer(report_body(report + "x")), 400, "bad_format"},
      {"malformed", answer(good.substr(0, 30)), 400, "bad_format"},
      {"unknown member",
       answer(Json{{"report", report}, {"platform_chain", {pem}}, {"x", 1}}.dump()), 400,
       "bad_format"},
      {"chain empty", answer(Json{{"report", report}, {"platform_chain", Json::array()}}.dump()),
       400, "invalid_argument"},
      {"chain too long",
       answer(Json{{"report", report}, {"platform_chain", {pem, pem, pem, pem, pem}}}.dump()), 400,
       "invalid_argument"},
      {"report too long",
       answer(Json{{"report", std::string(16 * 1024 + 1, 'r')}, {"platform_chain", {pem}}}.dump()),
       400, "invalid_argument"},
      {"missing chain", answer(Json{{"report", report}}.dump()), 400, "missing_argument"},
      {"text/plain", answer(good, "challenge-1", "", "text/plain"), 415, "unsupported_media_type"},
  });

  // Another device's request: kPcid2 registered by sho-a for dev-other, with its own session.
  ASSERT_EQ(handle(op_request("PUT", "/v1/drf/registrations/" + kPcid2, "sho-a",
                              registration_body("dev-other")))
                .status,
            200);
  ASSERT_TRUE(
      db_->pcids().activate(kPcid2, std::chrono::floor<std::chrono::seconds>(clock_.now()) + 1h));
  auto s2 =
      handle(op_request("POST", "/v1/auth/sessions", "vno-a", R"({"imsi":")" + kPcid2 + "\"}"));
  ASSERT_EQ(s2.status, 201);
  const std::string sid2 = Json::parse(s2.body)["session"].get<std::string>();
  known_.sessions.push_back(sid2);
  expect_refusals({
      {"another device's request", answer(good, "challenge-1", bearer(sid2)), 403, "access_denied"},
      {"nothing for that device", device_request("GET", poll, bearer(sid2)), 404, "not_found"},
  });

  auto done = handle(answer(good));
  ASSERT_EQ(done.status, 202) << done.body;
  expect_refusals({{"second answer", answer(good), 409, "transition_refused"}});
  got = handle(device_request("GET", poll, bearer(sid)));
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(Json::parse(got.body)["request_id"], "challenge-2");
  EXPECT_EQ(flow_count("attestation_relayed"), 1u);

  // Unregistered: nothing to collect or answer.
  ASSERT_EQ(handle(op_request("DELETE", "/v1/drf/registrations/" + kPcid, "sho-a")).status, 204);
  expect_refusals({
      {"poll unregistered", device_request("GET", poll, bearer(sid)), 404, "not_found"},
      {"answer unregistered", answer(good, "challenge-2"), 404, "not_found"},
  });
}

TEST_F(RoServiceTest, DeviceEndpointsNeedASession) {
  start();
  const std::string sid = provisioned();
  ASSERT_EQ(handle(op_request("POST", "/v1/dpf/packages", "sho-a", package_body())).status, 201);
  const std::string pkg = known_.packages.back();
  const std::string report_target = "/v1/dpf/packages/" + pkg + "/report";
  const std::string body = report_body("x");
  for (const auto& [method, target] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/v1/drf/bootstrap"}, {"GET", "/v1/dpf/package"}, {"POST", report_target}}) {
    const std::string b = method == "POST" ? body : "";
    std::vector<Bad> table = {
        {"no header", device_request(method, target, "", b), 401, "unauthenticated"},
        {"basic", device_request(method, target, "Basic " + sid, b), 401, "unauthenticated"},
        {"bearer empty", device_request(method, target, "Bearer ", b), 401, "unauthenticated"},
        {"not hex", device_request(method, target, bearer(std::string(32, 'z')), b), 401,
         "unauthenticated"},
        {"uppercase", device_request(method, target, bearer(std::string(32, 'A')), b), 401,
         "unauthenticated"},
        {"short", device_request(method, target, bearer(sid.substr(1)), b), 401, "unauthenticated"},
        {"unknown", device_request(method, target, bearer(std::string(32, '0')), b), 401,
         "unauthenticated"},
    };
    for (const Bad& bad : table) {
      const std::string before = snap();
      const HttpResponse r = handle(bad.request);
      EXPECT_EQ(r.status, 401) << target << " " << bad.what;
      EXPECT_EQ(error_code(r), "unauthenticated") << target << " " << bad.what;
      EXPECT_EQ(header_of(r, "WWW-Authenticate"), "Bearer realm=\"mcim-ro\"") << bad.what;
      EXPECT_EQ(snap(), before) << bad.what;
    }
  }
  // The session comes first: a device without one learns that before anything about its body.
  expect_refusals({{"no session, malformed body", device_request("POST", report_target, "", "{"),
                    401, "unauthenticated"}});
  // The session expires after an hour.
  clock_.advance(3601s);
  expect_refusals({{"expired", device_request("GET", "/v1/drf/bootstrap", bearer(sid)), 401,
                    "unauthenticated"}});
  EXPECT_EQ(flow_count("discovery"), 0u);
}

TEST_F(RoServiceTest, DeviceEndpointRefusals) {
  start();
  const std::string sid = provisioned();
  // No package yet.
  expect_refusals(
      {{"no package", device_request("GET", "/v1/dpf/package", bearer(sid)), 404, "not_found"}});
  ASSERT_EQ(handle(op_request("POST", "/v1/dpf/packages", "sho-a", package_body())).status, 201);
  const std::string pkg = known_.packages.back();
  auto fetched = handle(device_request("GET", "/v1/dpf/package", bearer(sid)));
  ASSERT_EQ(fetched.status, 200);
  ASSERT_TRUE(tre_->record_registration(kNonce));
  auto installed =
      tre_->install(*parse_hex(Json::parse(fetched.body)["package"].get<std::string>(), "p"));
  ASSERT_TRUE(installed.result);

  auto rep = [&](std::string body, std::string package = "", std::string ct = "application/json") {
    auto r =
        device_request("POST", "/v1/dpf/packages/" + (package.empty() ? pkg : package) + "/report",
                       bearer(sid), std::move(body));
    r.content_type = std::move(ct);
    return r;
  };
  const std::string good = report_body(installed.report);
  const std::string pem = *pki::certificate_pem(tre_->platform_certificate());
  const std::string sho_pem = *pki::certificate_pem(world().signer("sho-a").cert.get());
  expect_refusals({
      {"malformed", rep(good.substr(0, 30)), 400, "bad_format"},
      {"unknown member",
       rep(Json{{"report", installed.report}, {"platform_chain", {pem}}, {"x", 1}}.dump()), 400,
       "bad_format"},
      {"report a number", rep(Json{{"report", 1}, {"platform_chain", {pem}}}.dump()), 400,
       "bad_format"},
      {"chain empty",
       rep(Json{{"report", installed.report}, {"platform_chain", Json::array()}}.dump()), 400,
       "invalid_argument"},
      {"chain too long",
       rep(Json{{"report", installed.report}, {"platform_chain", {pem, pem, pem, pem, pem}}}
               .dump()),
       400, "invalid_argument"},
      {"chain not PEM",
       rep(Json{{"report", installed.report}, {"platform_chain", {"nope"}}}.dump()), 400,
       "bad_format"},
      {"report too long",
       rep(Json{{"report", std::string(16 * 1024 + 1, 'r')}, {"platform_chain", {pem}}}.dump()),
       400, "invalid_argument"},
      {"missing report", rep(Json{{"platform_chain", {pem}}}.dump()), 400, "missing_argument"},
      {"text/plain", rep(good, "", "text/plain"), 415, "unsupported_media_type"},
      {"oversize", rep(std::string(64 * 1024 + 1, ' ')), 413, "payload_too_large"},
      {"unknown package", rep(good, "pkg-unknown"), 404, "not_found"},
      {"altered report",
       rep(report_body(
           std::string(installed.report).replace(installed.report.find("\"ok\""), 4, "\"no\""))),
       422, "signature_invalid"},
      {"chain outside the supplier PKI",
       rep(Json{{"report", installed.report}, {"platform_chain", {sho_pem}}}.dump()), 422,
       "chain_invalid"},
  });
  ASSERT_EQ(handle(rep(good)).status, 200);
  expect_refusals({{"second report", rep(good), 409, "transition_refused"}});

  // Another device's package: registered for kPcid2 to another device id by sho-a.
  ASSERT_EQ(handle(op_request("PUT", "/v1/drf/registrations/" + kPcid2, "sho-a",
                              registration_body("dev-other")))
                .status,
            200);
  ASSERT_TRUE(
      db_->pcids().activate(kPcid2, std::chrono::floor<std::chrono::seconds>(clock_.now()) + 1h));
  auto s2 =
      handle(op_request("POST", "/v1/auth/sessions", "vno-a", R"({"imsi":")" + kPcid2 + "\"}"));
  ASSERT_EQ(s2.status, 201);
  const std::string sid2 = Json::parse(s2.body)["session"].get<std::string>();
  known_.sessions.push_back(sid2);
  auto other_pkg = package_body(2);  // this TRE's device, a fresh package
  ASSERT_EQ(handle(op_request("POST", "/v1/dpf/packages", "sho-a", other_pkg)).status, 201);
  auto r = device_request("POST", "/v1/dpf/packages/" + known_.packages.back() + "/report",
                          bearer(sid2), good);
  expect_refusals({{"another device's package", r, 403, "access_denied"},
                   {"nothing for this device",
                    device_request("GET", "/v1/dpf/package", bearer(sid2)), 404, "not_found"}});

  // Unregistered: no bootstrap, no package.
  ASSERT_EQ(handle(op_request("DELETE", "/v1/drf/registrations/" + kPcid, "sho-a")).status, 204);
  expect_refusals({
      {"bootstrap unregistered", device_request("GET", "/v1/drf/bootstrap", bearer(sid)), 404,
       "not_found"},
      {"package unregistered", device_request("GET", "/v1/dpf/package", bearer(sid)), 404,
       "not_found"},
      {"report unregistered", rep(good), 404, "not_found"},
  });
}

// F8: the PCID renewal over the device's session. Refusals change nothing; the renewed K is the
// ICF's only once the TRE's signed report arrived, and then AKA runs with it.
TEST_F(RoServiceTest, PcidRenewalOverTheDevicesSession) {
  RoServiceConfig c = config();
  c.renewal.threshold = std::chrono::hours(24);  // bundle_ lives 730 days: not due
  const tre::testing::Signer& ro = world().signer("ro-1");
  auto signer = std::make_shared<pki::KeyPair>();
  signer->key = pki::up_ref(ro.key.get());
  signer->certs.push_back(pki::up_ref(ro.cert.get()));
  c.renewal.signer = signer;
  c.renewal.op = Secret<16>(tre::testing::kOp);
  start(c);
  const std::string sid = provisioned();
  const std::string pem = *pki::certificate_pem(tre_->platform_certificate());
  const std::string sho_pem = *pki::certificate_pem(world().signer("sho-a").cert.get());
  auto ask = [&](std::string body) {
    return device_request("POST", "/v1/dpf/pcid-renewal", bearer(sid), std::move(body));
  };
  const std::string good = Json{{"platform_chain", {pem}}}.dump();
  expect_refusals({
      {"no session", device_request("POST", "/v1/dpf/pcid-renewal", "", good), 401,
       "unauthenticated"},
      {"malformed", ask(good.substr(0, 10)), 400, "bad_format"},
      {"unknown member", ask(Json{{"platform_chain", {pem}}, {"x", 1}}.dump()), 400, "bad_format"},
      {"chain empty", ask(Json{{"platform_chain", Json::array()}}.dump()), 400, "invalid_argument"},
      {"chain not PEM", ask(Json{{"platform_chain", {"nope"}}}.dump()), 400, "bad_format"},
      {"chain outside the supplier PKI", ask(Json{{"platform_chain", {sho_pem}}}.dump()), 422,
       "chain_invalid"},
      {"not due", ask(good), 404, "not_found"},
  });
  c = config();
  c.renewal.signer = signer;
  c.renewal.op = Secret<16>(tre::testing::kOp);
  c.renewal.threshold = std::chrono::hours(24 * 3650);  // due
  start(c);
  auto offered = handle(ask(good));
  ASSERT_EQ(offered.status, 200) << offered.body;
  const Json offer = Json::parse(offered.body);
  const std::string package_id = offer["package_id"].get<std::string>();
  auto installed = tre_->renew_pcid(*parse_hex(offer["package"].get<std::string>(), "package"));
  ASSERT_TRUE(installed.result) << installed.result.error().message;
  auto rep = [&](std::string body, const std::string& package) {
    return device_request("POST", "/v1/dpf/pcid-renewal/" + package + "/report", bearer(sid),
                          std::move(body));
  };
  const std::string report = report_body(installed.report);
  expect_refusals({
      {"report malformed", rep(report.substr(0, 20), package_id), 400, "bad_format"},
      {"report of another package", rep(report, "pcid-other"), 400, "invalid_argument"},
      {"report altered",
       rep(report_body(
               std::string(installed.report).replace(installed.report.find("\"ok\""), 4, "\"no\"")),
           package_id),
       422, "signature_invalid"},
      {"report without a session",
       device_request("POST", "/v1/dpf/pcid-renewal/" + package_id + "/report", "", report), 401,
       "unauthenticated"},
  });
  auto done = handle(rep(report, package_id));
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(Json::parse(done.body)["outcome"], "ok");
  expect_refusals({{"second report", rep(report, package_id), 409, "transition_refused"}});
  const auto sub = *db_->pcids().find(kPcid);
  EXPECT_EQ(sub->not_after.time_since_epoch().count(), offer["not_after"].get<std::int64_t>());
  EXPECT_NE(sub->k.get(), bundle_.k.get());
  // The ICF's vectors now verify with the TRE's renewed credential.
  auto v = handle(op_request("POST", "/v1/auth/vectors", "vno-a", R"({"imsi":")" + kPcid + "\"}"));
  ASSERT_EQ(v.status, 200) << v.body;
  const Json vec = Json::parse(v.body)["vectors"][0];
  auto answer = tre_->authenticate(kPcid, *parse_hex_fixed<16>(vec["rand"].get<std::string>(), "r"),
                                   *parse_hex_fixed<16>(vec["autn"].get<std::string>(), "a"));
  ASSERT_TRUE(answer) << answer.error().message;
  EXPECT_TRUE(std::holds_alternative<aka::UsimSuccess>(*answer));
  auto audit = db_->audit().recent(20);
  ASSERT_TRUE(audit);
  std::string all;
  for (const store::AuditRecord& a : *audit)
    all += a.event + ":" + a.outcome + ":" + a.detail + "\n";
  EXPECT_EQ(all.find(to_hex(sub->k.get())), std::string::npos) << "a key in the audit";
  EXPECT_NE(all.find("renewal-report:ok"), std::string::npos) << all;
}

TEST_F(RoServiceTest, PcidRenewalUnconfiguredIsUnsupportedAndAForeignSignerIsRefused) {
  start();
  const std::string sid = provisioned();
  const std::string pem = *pki::certificate_pem(tre_->platform_certificate());
  expect_refusals({{"unconfigured",
                    device_request("POST", "/v1/dpf/pcid-renewal", bearer(sid),
                                   Json{{"platform_chain", {pem}}}.dump()),
                    400, "unsupported"}});
  RoServiceConfig c = config();
  const tre::testing::Signer& sho = world().signer("sho-a");
  auto signer = std::make_shared<pki::KeyPair>();
  signer->key = pki::up_ref(sho.key.get());
  signer->certs.push_back(pki::up_ref(sho.cert.get()));
  c.renewal.signer = signer;
  auto s = RoService::create(*db_, std::move(c), clock_);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::invalid_argument);
}

// F3 without AKA: the two direct-access routes, their refusals (nothing changes but the audit),
// and a session the device endpoints then take like one a VNO opened.
TEST_F(RoServiceTest, DirectAccessOpensASessionForThePlatformKeysProof) {
  start();
  switched_on();
  ASSERT_FALSE(HasFailure());
  auto challenge_of = [&](const std::string& pcid) {
    return device_request("POST", "/v1/drf/direct/challenges", "", Json{{"pcid", pcid}}.dump());
  };
  const HttpResponse c = handle(challenge_of(kPcid));
  ASSERT_EQ(c.status, 201) << c.body;
  const Json challenge = Json::parse(c.body);
  const std::string id = challenge["challenge_id"].get<std::string>();
  const ByteVec nonce = *parse_hex(challenge["nonce"].get<std::string>(), "nonce");
  EXPECT_EQ(nonce.size(), 32u);
  EXPECT_EQ(challenge["expires"].get<std::int64_t>(),
            std::chrono::floor<std::chrono::seconds>(clock_.now()).time_since_epoch().count() + 60);
  const std::string pem = *pki::certificate_pem(tre_->platform_certificate());
  auto proof = [&](const std::string& report, const std::string& challenge_id,
                   const std::string& chain_pem) {
    return device_request("POST", "/v1/drf/direct/sessions", "",
                          Json{{"pcid", kPcid},
                               {"challenge_id", challenge_id},
                               {"report", report},
                               {"platform_chain", {chain_pem}}}
                              .dump());
  };
  const std::string report = *tre_->attest(nonce);
  expect_refusals({
      {"challenge for an unregistered pcid", challenge_of("001019990000003"), 404, "not_found"},
      {"challenge, not json", device_request("POST", "/v1/drf/direct/challenges", "", "{"), 400,
       "bad_format"},
      {"challenge, pcid with letters", challenge_of("00101abc"), 400, "invalid_argument"},
      {"unknown challenge", proof(report, std::string(32, '0'), pem), 404, "not_found"},
      {"not a pem", proof(report, id, "-----BEGIN CERTIFICATE-----"), 400, "bad_format"},
      {"not a report", proof("{}", id, pem), 400, "bad_format"},
      {"another nonce", proof(*tre_->attest(kChallenge), id, pem), 422, "nonce_mismatch"},
      {"a certificate outside the supplier's PKI",
       proof(report, id, *pki::certificate_pem(world().signer("sho-a").cert.get())), 422,
       "chain_invalid"},
  });
  const auto audit = db_->audit().recent(1);
  ASSERT_TRUE(audit && !audit->empty());
  EXPECT_EQ(audit->front().event, "direct-session");
  EXPECT_EQ(audit->front().outcome, "chain_invalid");

  const HttpResponse opened = handle(proof(report, id, pem));
  ASSERT_EQ(opened.status, 201) << opened.body;
  const Json session = Json::parse(opened.body);
  EXPECT_EQ(session["imsi"], kPcid);
  EXPECT_EQ(session["restricted"], true);
  EXPECT_FALSE(session.contains("drf_url"));  // none configured
  const std::string sid = session["home_session"].get<std::string>();
  known_.sessions.push_back(sid);
  EXPECT_EQ(handle(device_request("GET", "/v1/drf/bootstrap", bearer(sid))).status, 200);
  expect_refusals({{"replay", proof(report, id, pem), 409, "transition_refused"}});
  EXPECT_EQ(flow_count("direct_challenge"), 1u);
  EXPECT_EQ(flow_count("direct_session"), 1u);

  // An unanswered challenge is worthless after a minute.
  const HttpResponse late = handle(challenge_of(kPcid));
  ASSERT_EQ(late.status, 201);
  const Json l = Json::parse(late.body);
  clock_.advance(60s);
  expect_refusals({{"expired",
                    proof(*tre_->attest(*parse_hex(l["nonce"].get<std::string>(), "nonce")),
                          l["challenge_id"].get<std::string>(), pem),
                    422, "stale_report"}});
}

// F9: sho-a queues its signed instruction, the operational device proves its platform key and
// collects it, and posts its TRE's signed answer. Every refusal on the way changes nothing: the
// stores as the snapshot sees them, and the queue as the device's next collection sees it.
TEST_F(RoServiceTest, RemoteManagementAndItsRefusals) {
  start();
  switched_on();
  ASSERT_FALSE(HasFailure());
  auto doc = world().document(device_, kImsi, "sho-a", 1, kNonce);
  ASSERT_TRUE(tre_->record_registration(kNonce));
  ASSERT_TRUE(
      tre_->install(world().seal(doc, world().signer("sho-a"), tre_->platform_certificate()))
          .result);
  ASSERT_TRUE(tre_->apply(tre::Action::activate, kImsi));
  auto instruction = [&](const std::string& op, std::uint64_t seq, const std::string& device = "") {
    return world().instruction(world().signer(op), device.empty() ? device_ : device, kImsi,
                               tre::Action::block, seq);
  };
  const Json good{{"pcid", kPcid},
                  {"device_id", device_},
                  {"instruction_id", "ins-1"},
                  {"instruction", instruction("sho-a", 1)}};
  auto queue = [&](const Json& body, std::string op = "sho-a") {
    return op_request("POST", "/v1/dpf/instructions", op, body.dump());
  };
  auto with = [&](const std::string& field, Json value) {
    Json c = good;
    c[field] = std::move(value);
    return c;
  };
  expect_refusals({
      {"no certificate", queue(good, ""), 401, "unauthenticated"},
      {"no operator", queue(good, "anonymous"), 403, "access_denied"},
      {"not the registered SHO", queue(good, "sho-b"), 403, "access_denied"},
      {"signed by another SHO", queue(with("instruction", instruction("sho-b", 1))), 403,
       "access_denied"},
      {"for another device", queue(with("instruction", instruction("sho-a", 1, "dev-x"))), 422,
       "wrong_recipient"},
      {"unknown pcid", queue(with("pcid", "001019990000099")), 404, "not_found"},
      {"another device", queue(with("device_id", "dev-other")), 422, "wrong_recipient"},
      {"not an instruction", queue(with("instruction", "{}")), 400, "bad_format"},
      {"id with a space", queue(with("instruction_id", "a b")), 400, "invalid_argument"},
      {"unknown member", queue(with("sho", "sho-a")), 400, "bad_format"},
      {"malformed", op_request("POST", "/v1/dpf/instructions", "sho-a", "{"), 400, "bad_format"},
  });
  const HttpResponse queued = handle(queue(good));
  ASSERT_EQ(queued.status, 201) << queued.body;
  EXPECT_EQ(Json::parse(queued.body)["status"], "pending");
  expect_refusals({{"known id", queue(good), 409, "already_exists"}});

  // The device: a challenge for its PCID, its attestation over the nonce, the pending list.
  const std::string pem = *pki::certificate_pem(tre_->platform_certificate());
  auto challenge = [&]() {
    const HttpResponse c = handle(
        device_request("POST", "/v1/dpf/management/challenges", "", Json{{"pcid", kPcid}}.dump()));
    EXPECT_EQ(c.status, 201) << c.body;
    return Json::parse(c.body);
  };
  auto collect = [&](const Json& c, const std::string& report, const std::string& chain_pem) {
    return device_request("POST", "/v1/dpf/management/instructions", "",
                          Json{{"pcid", kPcid},
                               {"challenge_id", c["challenge_id"]},
                               {"report", report},
                               {"platform_chain", {chain_pem}}}
                              .dump());
  };
  const Json c = challenge();
  const std::string report = *tre_->attest(*parse_hex(c["nonce"].get<std::string>(), "nonce"));
  expect_refusals({
      {"challenge for an unregistered pcid",
       device_request("POST", "/v1/dpf/management/challenges", "",
                      Json{{"pcid", "001019990000003"}}.dump()),
       404, "not_found"},
      {"unknown challenge", collect(Json{{"challenge_id", std::string(32, '0')}}, report, pem), 404,
       "not_found"},
      {"another nonce", collect(c, *tre_->attest(kChallenge), pem), 422, "nonce_mismatch"},
      {"not a pem", collect(c, report, "-----BEGIN CERTIFICATE-----"), 400, "bad_format"},
      {"another chain",
       collect(c, report, *pki::certificate_pem(world().signer("sho-a").cert.get())), 422,
       "chain_invalid"},
  });
  const HttpResponse collected = handle(collect(c, report, pem));
  ASSERT_EQ(collected.status, 200) << collected.body;
  const Json pending = Json::parse(collected.body);
  ASSERT_EQ(pending["instructions"].size(), 1u) << collected.body;
  EXPECT_EQ(pending["instructions"][0]["instruction_id"], "ins-1");
  expect_refusals({{"the proof again", collect(c, report, pem), 409, "transition_refused"}});

  // The TRE's answer.
  auto applied =
      tre_->apply_instruction(pending["instructions"][0]["instruction"].get<std::string>());
  ASSERT_TRUE(applied.result) << applied.result.error().message;
  auto answer = [&](const std::string& id, const std::string& text) {
    return device_request("POST", "/v1/dpf/instructions/" + id + "/result", "", report_body(text));
  };
  std::string tampered = applied.report;
  tampered.replace(tampered.find("blocked"), 7, "retired");
  expect_refusals({
      {"unknown instruction", answer("ins-9", applied.report), 404, "not_found"},
      {"tampered", answer("ins-1", tampered), 422, "signature_invalid"},
      {"not a report", answer("ins-1", "{}"), 400, "bad_format"},
      {"no chain",
       device_request("POST", "/v1/dpf/instructions/ins-1/result", "",
                      Json{{"report", applied.report}}.dump()),
       400, "missing_argument"},
  });
  const HttpResponse answered = handle(answer("ins-1", applied.report));
  ASSERT_EQ(answered.status, 200) << answered.body;
  EXPECT_EQ(Json::parse(answered.body)["outcome"], "ok");
  expect_refusals({{"answered again", answer("ins-1", applied.report), 409, "transition_refused"}});
  // Answered: nothing is pending any more.
  const HttpResponse again = handle(collect(challenge(), "", pem));
  EXPECT_EQ(again.status, 400);  // an empty report is no proof
  const Json next = challenge();
  const HttpResponse none = handle(
      collect(next, *tre_->attest(*parse_hex(next["nonce"].get<std::string>(), "nonce")), pem));
  ASSERT_EQ(none.status, 200) << none.body;
  EXPECT_TRUE(Json::parse(none.body)["instructions"].empty());
  EXPECT_EQ(flow_count("instruction_queued"), 1u);
  EXPECT_EQ(flow_count("instruction_answered"), 1u);
}

TEST_F(RoServiceTest, DirectAccessCanBeLeftUnmounted) {
  RoServiceConfig c = config();
  c.direct_access = false;
  start(std::move(c));
  for (const char* target : {"/v1/drf/direct/challenges", "/v1/drf/direct/sessions"}) {
    EXPECT_EQ(handle(device_request("POST", target, "", R"({"pcid":"001019990000001"})")).status,
              404)
        << target;
  }
}

TEST_F(RoServiceTest, UnknownPathsAndMethods) {
  start();
  EXPECT_EQ(handle(op_request("GET", "/v1/nothing", "vno-a")).status, 404);
  auto r = handle(op_request("GET", "/v1/auth/vectors", "vno-a"));
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(header_of(r, "Allow"), "POST");
  EXPECT_GE(service_->body_limit(), std::size_t{256 * 1024});
}

// Refusals are logged at debug, with messages that name fields and checks: never the PIN, the
// keys, the vectors or a session id.
TEST_F(RoServiceTest, LogsCarryNoSecrets) {
  std::mutex mu;
  std::vector<std::string> lines;
  log::set_level(log::Level::debug);
  log::set_sink([&](std::string_view line) {
    std::lock_guard lock(mu);
    lines.emplace_back(line);
  });
  start();
  const std::string sid = provisioned();
  auto v = handle(op_request("POST", "/v1/auth/vectors", "vno-a", R"({"imsi":")" + kPcid + "\"}"));
  ASSERT_EQ(v.status, 200);
  const Json vec = Json::parse(v.body)["vectors"][0];
  // Refusals of every kind.
  handle(op_request("PUT", "/v1/drf/registrations/" + kPcid, "sho-b", registration_body(device_)));
  handle(op_request("PUT", "/v1/drf/registrations/" + kPcid2, "sho-a",
                    registration_body(device_, "98765x")));
  handle(op_request("POST", "/v1/auth/sessions", "vno-a", R"({"imsi":")" + kPcid + "\"}"));
  handle(op_request("DELETE", "/v1/auth/sessions/" + sid, "vno-b"));
  handle(device_request("GET", "/v1/dpf/package", bearer(sid)));
  handle(device_request("GET", "/v1/dpf/package", bearer(std::string(32, '0'))));
  handle(device_request("GET", "/v1/drf/bootstrap", bearer(sid)));
  handle(op_request(
      "POST", "/v1/auth/resync", "vno-a",
      Json{{"imsi", kPcid}, {"rand", vec["rand"]}, {"auts", std::string(28, '0')}}.dump()));
  service_.reset();
  log::set_sink(nullptr);
  log::set_level(log::Level::info);
  ASSERT_FALSE(lines.empty());
  bool refusal_logged = false;
  for (const std::string& line : lines) {
    refusal_logged = refusal_logged || line.find("refused: access_denied") != std::string::npos;
    for (const std::string& secret :
         {sid, kPin, std::string("98765x"), to_hex(bundle_.k.get()), to_hex(bundle_.opc.get()),
          vec["rand"].get<std::string>(), vec["xres"].get<std::string>(),
          vec["ck"].get<std::string>(), vec["ik"].get<std::string>()}) {
      EXPECT_EQ(line.find(secret), std::string::npos) << line;
    }
  }
  EXPECT_TRUE(refusal_logged);
}

// ---- Operator change (F4) ---------------------------------------------------------------------

// sho-a holds the TRE's PCID; sho-b is the operator the owner moves the device to.
class RoServiceF4Test : public RoServiceTest {
 protected:
  static RoServiceConfig with_shos(RoServiceConfig c) {
    for (const char* sho : {"sho-a", "sho-b"})
      c.shos.try_emplace(sho, ShoEndpoint{"https://127.0.0.1:9"});
    return c;
  }
  HttpRequest change(const std::string& body, const std::string& op = "sho-b",
                     const std::string& pcid = kPcid) {
    return op_request("POST", "/v1/drf/registrations/" + pcid + "/change", op, body);
  }
  std::string change_body(const std::string& device = "", const std::string& pin = kPin) {
    return Json{{"device_id", device.empty() ? device_ : device}, {"pin", pin}}.dump();
  }
  store::Registration registration() {
    auto reg = db_->registrations().find(kPcid);
    EXPECT_TRUE(reg && *reg);
    return reg && *reg ? **reg : store::Registration{};
  }
  store::AuditRecord last_audit() {
    auto audit = db_->audit().recent(1);
    EXPECT_TRUE(audit && !audit->empty());
    return audit && !audit->empty() ? audit->front() : store::AuditRecord{};
  }
  // F4 step 4: the proof of the platform key over a fresh challenge, as the request to send.
  HttpRequest session_proof() {
    const HttpResponse c = handle(
        device_request("POST", "/v1/dpf/management/challenges", "", Json{{"pcid", kPcid}}.dump()));
    EXPECT_EQ(c.status, 201) << c.body;
    const Json challenge = Json::parse(c.body);
    return device_request(
        "POST", "/v1/dpf/management/sessions", "",
        Json{{"pcid", kPcid},
             {"challenge_id", challenge["challenge_id"]},
             {"report", *tre_->attest(*parse_hex(challenge["nonce"].get<std::string>(), "n"))},
             {"platform_chain", {*pki::certificate_pem(tre_->platform_certificate())}}}
            .dump());
  }
  // ... and the DPF session it opens.
  std::string dpf_session() {
    const HttpResponse r = handle(session_proof());
    EXPECT_EQ(r.status, 201) << r.body;
    return r.status == 201 ? Json::parse(r.body)["session"].get<std::string>() : std::string();
  }

  // F2 with sho-a through the RO (its package reported over the ICF session) and the MCIM
  // activated and selected: the operational device F4 starts from. The ICF session's id.
  std::string operational() {
    const std::string sid = provisioned();
    EXPECT_EQ(handle(op_request("POST", "/v1/dpf/packages", "sho-a", package_body())).status, 201);
    old_package_ = known_.packages.back();
    const HttpResponse fetched = handle(device_request("GET", "/v1/dpf/package", bearer(sid)));
    EXPECT_EQ(fetched.status, 200) << fetched.body;
    EXPECT_TRUE(tre_->record_registration(kNonce));
    auto installed =
        tre_->install(*parse_hex(Json::parse(fetched.body)["package"].get<std::string>(), "p"));
    EXPECT_TRUE(installed.result);
    old_install_report_ = installed.report;
    // A report on the holder's own package carries no acknowledgements.
    const std::string target = "/v1/dpf/packages/" + old_package_ + "/report";
    Json with_acks = Json::parse(report_body(installed.report));
    with_acks["discard_report"] = installed.report;
    expect_refusals(
        {{"acknowledgements with an F2 report",
          device_request("POST", target, bearer(sid), with_acks.dump()), 400, "invalid_argument"}});
    EXPECT_EQ(
        handle(device_request("POST", target, bearer(sid), report_body(installed.report))).status,
        200);
    EXPECT_TRUE(tre_->apply(tre::Action::activate, kImsi));
    EXPECT_TRUE(tre_->apply(tre::Action::select, kImsi));
    return sid;
  }

  // sho-b's package for the TRE (IMSI kImsiB), handed over at the RO by sho-b: its id and bytes.
  std::pair<std::string, ByteVec> successor_package(const Bytes<16>& nonce = kNonceB) {
    auto doc = world().document(device_, kImsiB, "sho-b", 1, nonce);
    ByteVec pkg = world().seal(doc, world().signer("sho-b"), tre_->platform_certificate());
    known_.packages.push_back(doc.package_id);
    const HttpResponse r = handle(op_request("POST", "/v1/dpf/packages", "sho-b",
                                             Json{{"pcid", kPcid},
                                                  {"device_id", device_},
                                                  {"package_id", doc.package_id},
                                                  {"package", to_hex(pkg)}}
                                                 .dump()));
    EXPECT_EQ(r.status, 201) << r.body;
    return {doc.package_id, std::move(pkg)};
  }

  // The device's report with the acknowledgements present (absent when nullopt).
  HttpRequest f4_report(const std::string& sid, const std::string& package_id,
                        const std::string& report, std::optional<Json> discard_report,
                        std::optional<Json> discard_notice) {
    Json body = Json::parse(report_body(report));
    if (discard_report) body["discard_report"] = *discard_report;
    if (discard_notice) body["discard_notice"] = *discard_notice;
    return device_request("POST", "/v1/dpf/packages/" + package_id + "/report", bearer(sid),
                          body.dump());
  }

  // `text` (a report the TRE signed) changed and signed again with the platform key.
  std::string resigned(const std::string& text, const std::function<void(tre::StatusReport&)>& f) {
    auto report = tre::verify_status_report(text, tre_->platform_certificate());
    EXPECT_TRUE(report) << report.error().message;
    if (!report) return {};
    f(*report);
    auto signed_text = tre::sign_status_report(*report, bundle_.platform_key.get());
    EXPECT_TRUE(signed_text);
    return signed_text ? *signed_text : std::string();
  }

  std::string old_package_, old_install_report_;
};

TEST_F(RoServiceF4Test, AChangeNeedsTheDevicesPinAndNamesNothingOfTheHolder) {
  start(with_shos(config()));
  switched_on();
  ASSERT_FALSE(HasFailure());
  const std::string good = change_body();
  expect_refusals({
      {"no certificate", change(good, ""), 401, "unauthenticated"},
      {"no operator", change(good, "anonymous"), 403, "access_denied"},
      {"no home operator of this RO", change(good, "sho-c"), 403, "access_denied"},
      {"unregistered pcid", change(good, "sho-b", kPcid2), 404, "not_found"},
      {"unknown pcid", change(good, "sho-b", "001019990000099"), 404, "not_found"},
      {"another device", change(change_body("dev-other")), 422, "wrong_recipient"},
      {"the holder", change(good, "sho-a"), 409, "already_exists"},
      {"wrong pin", change(change_body("", "87654321")), 403, "access_denied"},
      {"pin with a letter", change(change_body("", "1234567x")), 400, "invalid_argument"},
      {"pin too short", change(change_body("", "123")), 400, "invalid_argument"},
      {"pin too long", change(change_body("", std::string(17, '1'))), 400, "invalid_argument"},
      {"no pin", change(Json{{"device_id", device_}}.dump()), 400, "missing_argument"},
      {"no device", change(Json{{"pin", kPin}}.dump()), 400, "missing_argument"},
      {"unknown member",
       change(Json{{"device_id", device_}, {"pin", kPin}, {"sho", "sho-a"}}.dump()), 400,
       "bad_format"},
      {"malformed", change("{"), 400, "bad_format"},
  });
  // A wrong PIN is on the record, and neither the answer nor the record echoes it.
  const HttpResponse wrong = handle(change(change_body("", "87654321")));
  EXPECT_EQ(Json::parse(wrong.body)["error"]["message"], "pin: not the device's");
  EXPECT_EQ(wrong.body.find("87654321"), std::string::npos);
  store::AuditRecord refused = last_audit();
  EXPECT_EQ(refused.service, "drf");
  EXPECT_EQ(refused.event, "change");
  EXPECT_EQ(refused.subject, kPcid);
  EXPECT_EQ(refused.principal, "operator:sho-b");
  EXPECT_EQ(refused.outcome, "access_denied");
  EXPECT_EQ(refused.detail.find("87654321"), std::string::npos);
  handle(change(good, "sho-c"));
  EXPECT_EQ(last_audit().event, "change");
  EXPECT_EQ(last_audit().outcome, "access_denied");
  EXPECT_EQ(flow_count("change_ordered"), 0u);

  const HttpResponse ordered = handle(change(good));
  ASSERT_EQ(ordered.status, 200) << ordered.body;
  EXPECT_EQ(Json::parse(ordered.body),
            (Json{{"pcid", kPcid}, {"successor", "sho-b"}, {"status", "pending"}}));
  EXPECT_EQ(ordered.body.find("sho-a"), std::string::npos);
  EXPECT_EQ(registration().sho, "sho-a");
  EXPECT_EQ(registration().successor, "sho-b");
  EXPECT_EQ(last_audit().event, "change");
  EXPECT_EQ(last_audit().outcome, "ok");
  EXPECT_EQ(flow_count("change_ordered"), 1u);
  // The holder's own routes stay the holder's.
  expect_refusals({{"the holder, after the change", change(good, "sho-a"), 409, "already_exists"}});
}

// A PIN cannot be guessed by ordering changes again and again: after drf.change_attempts wrong
// PINs for one PCID within drf.change_window, its orders are refused, the right PIN too, from any
// operator, without the PIN being stretched, until the oldest wrong one leaves the window.
TEST_F(RoServiceF4Test, GuessingThePinIsLimitedPerPcid) {
  RoServiceConfig c = with_shos(config());
  c.shos.try_emplace("sho-c", ShoEndpoint{"https://127.0.0.1:9"});
  c.drf.change_attempts = 3;
  c.drf.change_window = 600s;
  start(std::move(c));
  switched_on();
  ASSERT_FALSE(HasFailure());
  const std::string good = change_body();
  expect_refusals({
      {"wrong pin 1", change(change_body("", "00000001")), 403, "access_denied"},
      {"wrong pin 2", change(change_body("", "00000002"), "sho-c"), 403, "access_denied"},
  });
  clock_.advance(100s);
  expect_refusals({{"wrong pin 3", change(change_body("", "00000003")), 403, "access_denied"}});
  expect_refusals({
      {"the right pin, locked", change(good), 409, "transition_refused"},
      {"another operator, locked", change(good, "sho-c"), 409, "transition_refused"},
      {"a wrong pin, locked", change(change_body("", "00000004")), 409, "transition_refused"},
  });
  const store::AuditRecord locked = last_audit();
  EXPECT_EQ(locked.service, "drf");
  EXPECT_EQ(locked.event, "change");
  EXPECT_EQ(locked.subject, kPcid);
  EXPECT_EQ(locked.outcome, "transition_refused");
  EXPECT_EQ(locked.detail.find("00000004"), std::string::npos);
  const HttpResponse told = handle(change(good));
  EXPECT_EQ(told.body.find(kPin), std::string::npos);
  EXPECT_EQ(registration().successor, "");
  EXPECT_EQ(flow_count("change_ordered"), 0u);
  // Checks before the PIN's still answer as ever.
  expect_refusals({{"another device", change(change_body("dev-other")), 422, "wrong_recipient"}});

  clock_.advance(499s);  // the first two wrong PINs are 599 s old: still within the window
  expect_refusals({{"the right pin, still locked", change(good), 409, "transition_refused"}});
  clock_.advance(1s);  // they left it: one wrong PIN in the window
  const HttpResponse ordered = handle(change(good));
  ASSERT_EQ(ordered.status, 200) << ordered.body;
  EXPECT_EQ(registration().successor, "sho-b");
  EXPECT_EQ(last_audit().outcome, "ok");
}

// An earlier refusal would end the new change's polls at once: the order clears it.
TEST_F(RoServiceF4Test, AChangeClearsTheRegistrationsRefusal) {
  start(with_shos(config()));
  switched_on();
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(
      handle(
          op_request("POST", "/v1/dpf/refusals", "sho-a",
                     Json{{"pcid", kPcid}, {"device_id", device_}, {"code", "measurement_mismatch"}}
                         .dump()))
          .status,
      201);
  EXPECT_EQ(registration().refusal, "measurement_mismatch");
  ASSERT_EQ(handle(change(change_body())).status, 200);
  EXPECT_EQ(registration().refusal, "");
  EXPECT_EQ(registration().successor, "sho-b");
  EXPECT_EQ(registration().sho, "sho-a");
}

// The successor may ask for attestations, hand packages over and refuse, beside the holder; the
// rest stays the holder's. Its refusal ends the change and leaves the holder's registration.
TEST_F(RoServiceF4Test, TheSuccessorProvisionsBesideTheHolderAndMayRefuse) {
  start(with_shos(config()));
  switched_on();
  ASSERT_FALSE(HasFailure());
  const std::string sho_b_request = attestation_request_body("challenge-b");
  const std::string sho_b_package = package_body(1, "sho-b");
  auto as = [&](const std::string& op, const std::string& method, const std::string& target,
                const std::string& body = "") { return op_request(method, target, op, body); };
  expect_refusals({
      {"attestation request before the change",
       as("sho-b", "POST", "/v1/dpf/attestation-requests", sho_b_request), 403, "access_denied"},
      {"package before the change", as("sho-b", "POST", "/v1/dpf/packages", sho_b_package), 403,
       "access_denied"},
  });
  ASSERT_EQ(handle(change(change_body())).status, 200);
  const HttpResponse asked =
      handle(as("sho-b", "POST", "/v1/dpf/attestation-requests", sho_b_request));
  ASSERT_EQ(asked.status, 201) << asked.body;
  EXPECT_EQ((*db_->attestation_requests().find("challenge-b"))->sho, "sho-b");
  const HttpResponse stored = handle(as("sho-b", "POST", "/v1/dpf/packages", sho_b_package));
  ASSERT_EQ(stored.status, 201) << stored.body;
  EXPECT_EQ((*db_->packages().find(known_.packages.back()))->sho, "sho-b");
  // The holder's own operations stay the holder's.
  const std::string instruction =
      world().instruction(world().signer("sho-b"), device_, kImsi, tre::Action::block, 1);
  expect_refusals({
      {"a third operator", as("sho-c", "POST", "/v1/dpf/packages", package_body(2, "sho-a")), 403,
       "access_denied"},
      {"the successor's request for another device",
       as("sho-b", "POST", "/v1/dpf/attestation-requests",
          attestation_request_body("challenge-x", kPcid, "dev-other")),
       422, "wrong_recipient"},
      {"instruction",
       as("sho-b", "POST", "/v1/dpf/instructions",
          Json{{"pcid", kPcid},
               {"device_id", device_},
               {"instruction_id", "ins-1"},
               {"instruction", instruction}}
              .dump()),
       403, "access_denied"},
      {"transfer",
       as("sho-b", "POST", "/v1/drf/registrations/" + kPcid + "/transfer", R"({"to":"sho-a"})"),
       403, "access_denied"},
      {"activation",
       as("sho-b", "POST", "/v1/icf/pcids/" + kPcid + "/activation", R"({"window_s":60})"), 403,
       "access_denied"},
      {"re-register",
       as("sho-b", "PUT", "/v1/drf/registrations/" + kPcid, registration_body(device_)), 403,
       "access_denied"},
      {"unregister", as("sho-b", "DELETE", "/v1/drf/registrations/" + kPcid), 403, "access_denied"},
  });
  // The successor's refusal: on the registration for the device's polls, the change over.
  const HttpResponse refused = handle(
      as("sho-b", "POST", "/v1/dpf/refusals",
         Json{{"pcid", kPcid}, {"device_id", device_}, {"code", "measurement_mismatch"}}.dump()));
  ASSERT_EQ(refused.status, 201) << refused.body;
  EXPECT_EQ(registration().refusal, "measurement_mismatch");
  EXPECT_EQ(registration().successor, "");
  EXPECT_EQ(registration().sho, "sho-a");
  EXPECT_EQ(last_audit().event, "refusal");
  EXPECT_EQ(last_audit().principal, "operator:sho-b");
  expect_refusals({
      {"attestation request after its refusal",
       as("sho-b", "POST", "/v1/dpf/attestation-requests", attestation_request_body("challenge-c")),
       403, "access_denied"},
      {"refusal after its refusal",
       as("sho-b", "POST", "/v1/dpf/refusals",
          Json{{"pcid", kPcid}, {"device_id", device_}, {"code", "busy"}}.dump()),
       403, "access_denied"},
  });
  // A new order clears the refusal again.
  ASSERT_EQ(handle(change(change_body())).status, 200);
  EXPECT_EQ(registration().refusal, "");
  EXPECT_EQ(registration().successor, "sho-b");
}

// A change re-ordered to another SHO (or refused) leaves the former successor's request and package
// stored: the device's polls pass over them, and its report on such a package is refused.
TEST_F(RoServiceF4Test, ARenewedOrderPassesOverTheFormerSuccessorsWork) {
  RoServiceConfig c = with_shos(config());
  c.shos.try_emplace("sho-c", ShoEndpoint{"https://127.0.0.1:9"});
  start(std::move(c));
  operational();
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(handle(change(change_body())).status, 200);
  ASSERT_EQ(handle(op_request("POST", "/v1/dpf/attestation-requests", "sho-b",
                              attestation_request_body("challenge-b")))
                .status,
            201);
  ASSERT_EQ(
      handle(op_request("POST", "/v1/dpf/packages", "sho-b", package_body(2, "sho-b"))).status,
      201);
  const std::string package_b = known_.packages.back();
  ASSERT_EQ(handle(change(change_body(), "sho-c")).status, 200);
  EXPECT_EQ(registration().successor, "sho-c");

  const std::string sid = dpf_session();
  auto poll = [&](const std::string& what) {
    return handle(device_request("GET", "/v1/dpf/" + what, bearer(sid)));
  };
  EXPECT_EQ(poll("attestation-request").status, 404);  // not sho-b's
  EXPECT_EQ(poll("package").status, 404);
  ASSERT_EQ(handle(op_request("POST", "/v1/dpf/attestation-requests", "sho-c",
                              attestation_request_body("challenge-c")))
                .status,
            201);
  ASSERT_EQ(
      handle(op_request("POST", "/v1/dpf/packages", "sho-c", package_body(3, "sho-c"))).status,
      201);
  const std::string package_c = known_.packages.back();
  const HttpResponse asked = poll("attestation-request");
  ASSERT_EQ(asked.status, 200) << asked.body;
  EXPECT_EQ(Json::parse(asked.body)["request_id"], "challenge-c");
  const HttpResponse fetched = poll("package");
  ASSERT_EQ(fetched.status, 200) << fetched.body;
  EXPECT_EQ(Json::parse(fetched.body)["package_id"], package_c);

  expect_refusals({
      {"a report on the former successor's package",
       device_request("POST", "/v1/dpf/packages/" + package_b + "/report", bearer(sid),
                      report_body(old_install_report_)),
       409, "transition_refused"},
  });
  EXPECT_EQ(last_audit().event, "report");
  EXPECT_EQ(last_audit().outcome, "transition_refused");
  EXPECT_EQ(to_string((*db_->attestation_requests().find("challenge-b"))->status), "pending");
  EXPECT_EQ(to_string((*db_->packages().find(package_b))->status), "pending");

  // sho-c refuses: the device's polls end with its refusal, naming sho-c (the store keeps the
  // holder only); a refusal of the holder's afterwards names the holder.
  auto refuse = [&](const std::string& op) {
    return handle(op_request(
        "POST", "/v1/dpf/refusals", op,
        Json{{"pcid", kPcid}, {"device_id", device_}, {"code", "measurement_mismatch"}}.dump()));
  };
  ASSERT_EQ(refuse("sho-c").status, 201);
  for (const std::string what : {"attestation-request", "package"}) {
    const HttpResponse told = poll(what);
    EXPECT_EQ(error_code(told), "measurement_mismatch") << what;
    EXPECT_EQ(Json::parse(told.body)["error"]["message"],
              "home operator sho-c refused the device: measurement_mismatch")
        << what;
  }
  ASSERT_EQ(refuse("sho-a").status, 201);
  EXPECT_EQ(Json::parse(poll("package").body)["error"]["message"],
            "home operator sho-a refused the device: measurement_mismatch");
}

// F4 step 4: the operational device proves its platform key for a DPF-only session, which the
// four provisioning routes take as their Bearer and nothing else does.
TEST_F(RoServiceF4Test, AManagementSessionServesTheProvisioningRoutesOnly) {
  std::mutex mu;
  std::vector<std::string> lines;
  log::set_level(log::Level::debug);
  log::set_sink([&](std::string_view line) {
    std::lock_guard lock(mu);
    lines.emplace_back(line);
  });
  start(with_shos(config()));
  switched_on();
  ASSERT_FALSE(HasFailure());
  // The proof's refusals are those of /v1/dpf/management/instructions.
  HttpRequest proof = session_proof();
  const Json body = Json::parse(proof.body);
  auto with = [&](const std::string& field, Json value) {
    Json c = body;
    c[field] = std::move(value);
    return device_request("POST", "/v1/dpf/management/sessions", "", c.dump());
  };
  expect_refusals({
      {"unknown challenge", with("challenge_id", std::string(32, '0')), 404, "not_found"},
      {"unregistered pcid", with("pcid", kPcid2), 404, "not_found"},
      {"another nonce", with("report", *tre_->attest(kChallenge)), 422, "nonce_mismatch"},
      {"not a pem", with("platform_chain", {"-----BEGIN CERTIFICATE-----"}), 400, "bad_format"},
      {"another chain",
       with("platform_chain", {*pki::certificate_pem(world().signer("sho-a").cert.get())}), 422,
       "chain_invalid"},
      {"not a report", with("report", "{}"), 400, "bad_format"},
      {"no chain",
       device_request(
           "POST", "/v1/dpf/management/sessions", "",
           Json{{"pcid", kPcid}, {"challenge_id", body["challenge_id"]}, {"report", body["report"]}}
               .dump()),
       400, "missing_argument"},
  });
  EXPECT_EQ(flow_count("management_session"), 0u);
  const HttpResponse opened = handle(proof);
  ASSERT_EQ(opened.status, 201) << opened.body;
  const Json session = Json::parse(opened.body);
  EXPECT_EQ(session.size(), 2u) << opened.body;
  const std::string sid = session["session"].get<std::string>();
  EXPECT_EQ(sid.size(), 32u);
  EXPECT_EQ(sid.find_first_not_of("0123456789abcdef"), std::string::npos);
  const auto now_s = std::chrono::floor<std::chrono::seconds>(clock_.now());
  EXPECT_EQ(session["expires"].get<std::int64_t>(), (now_s + 1h).time_since_epoch().count());
  EXPECT_EQ(flow_count("management_session"), 1u);
  EXPECT_EQ(last_audit().event, "management-session");
  EXPECT_EQ(last_audit().outcome, "ok");
  expect_refusals({{"the proof again", proof, 409, "transition_refused"}});
  // Not an ICF session: the PCID has none, and may still open one.
  EXPECT_FALSE(*db_->sessions().find(sid));

  // The provisioning routes take it (nothing there yet, but the session is good)...
  expect_refusals({
      {"attestation request", device_request("GET", "/v1/dpf/attestation-request", bearer(sid)),
       404, "not_found"},
      {"attestation answer",
       device_request("POST", "/v1/dpf/attestations/challenge-1", bearer(sid),
                      report_body(attestation())),
       404, "not_found"},
      {"package", device_request("GET", "/v1/dpf/package", bearer(sid)), 404, "not_found"},
      {"report",
       device_request("POST", "/v1/dpf/packages/pkg-x/report", bearer(sid), report_body("x")), 404,
       "not_found"},
      // F8: a renewal report lost on its way, sent again without the PCID attach it cannot make.
      {"pcid renewal report",
       device_request("POST", "/v1/dpf/pcid-renewal/pkg-x/report", bearer(sid), report_body("x")),
       400, "bad_format"},
      // ... and nothing else does.
      {"bootstrap", device_request("GET", "/v1/drf/bootstrap", bearer(sid)), 401,
       "unauthenticated"},
      {"pcid renewal",
       device_request(
           "POST", "/v1/dpf/pcid-renewal", bearer(sid),
           Json{{"platform_chain", {*pki::certificate_pem(tre_->platform_certificate())}}}.dump()),
       401, "unauthenticated"},
  });
  // It expires with the ICF's session lifetime.
  clock_.advance(3601s);
  expect_refusals(
      {{"expired", device_request("GET", "/v1/dpf/package", bearer(sid)), 401, "unauthenticated"}});
  service_.reset();
  log::set_sink(nullptr);
  log::set_level(log::Level::info);
  ASSERT_FALSE(lines.empty());
  for (const std::string& line : lines) EXPECT_EQ(line.find(sid), std::string::npos) << line;
  auto audit = db_->audit().recent(1000);
  ASSERT_TRUE(audit);
  for (const store::AuditRecord& a : *audit) {
    EXPECT_EQ(a.detail.find(sid), std::string::npos) << a.event << " " << a.detail;
  }
}

// Sessions live in memory: bounded (the oldest goes) and gone after a restart.
TEST_F(RoServiceF4Test, ManagementSessionsAreBoundedAndDoNotSurviveARestart) {
  RoServiceConfig c = with_shos(config());
  c.max_dpf_sessions = 2;
  start(c);
  switched_on();
  ASSERT_FALSE(HasFailure());
  const std::string first = dpf_session(), second = dpf_session(), third = dpf_session();
  auto poll = [&](const std::string& sid) {
    return device_request("GET", "/v1/dpf/package", bearer(sid));
  };
  expect_refusals({
      {"the oldest, pushed out", poll(first), 401, "unauthenticated"},
      {"the second", poll(second), 404, "not_found"},
      {"the third", poll(third), 404, "not_found"},
  });
  start(c);
  expect_refusals({{"after a restart", poll(third), 401, "unauthenticated"}});
}

// F4 steps 6-7: the report on the successor's package needs the TRE's two acknowledgements;
// every refusal stores nothing (the package stays delivered, the registration the holder's, with
// its successor), and the accepted one hands the registration to the successor.
TEST_F(RoServiceF4Test, TheReportOnTheSuccessorsPackageNeedsTheDiscardAcknowledgements) {
  start(with_shos(config()));
  operational();
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(handle(change(change_body())).status, 200);
  const auto [package_id, pkg] = successor_package();
  const std::string sid = dpf_session();
  const HttpResponse fetched = handle(device_request("GET", "/v1/dpf/package", bearer(sid)));
  ASSERT_EQ(fetched.status, 200) << fetched.body;
  EXPECT_EQ(Json::parse(fetched.body)["package_id"], package_id);
  ASSERT_TRUE(tre_->apply(tre::Action::deselect, kImsi));
  ASSERT_TRUE(tre_->record_registration(kNonceB));
  const tre::ReplaceOutcome out = tre_->install_replacing(pkg, kImsi);
  ASSERT_TRUE(out.install.result) << out.install.result.error().message;
  const std::string& report = out.install.report;
  const std::string& dr = out.discard_report;
  const std::string& dn = out.discard_notice;
  auto tampered = [](std::string text) { return text.replace(text.find("deleted"), 7, "deletex"); };
  auto rep = [&](std::optional<Json> d, std::optional<Json> n) {
    return f4_report(sid, package_id, report, std::move(d), std::move(n));
  };
  expect_refusals({
      {"no discard_report", rep(std::nullopt, dn), 400, "missing_argument"},
      {"no discard_notice", rep(dr, std::nullopt), 400, "missing_argument"},
      {"neither", rep(std::nullopt, std::nullopt), 400, "missing_argument"},
      {"the notice for the report", rep(dn, dn), 400, "invalid_argument"},
      {"the report for the notice", rep(dr, dr), 400, "invalid_argument"},
      {"the install report for the report", rep(report, dn), 400, "invalid_argument"},
      {"the report tampered", rep(tampered(dr), dn), 422, "signature_invalid"},
      {"the notice tampered", rep(dr, tampered(dn)), 422, "signature_invalid"},
      {"the report no report", rep("{}", dn), 400, "bad_format"},
      {"the notice no report", rep(dr, "{}"), 400, "bad_format"},
      {"the report for another device",
       rep(resigned(dr, [](auto& r) { r.device_id = "dev-other"; }), dn), 422, "wrong_recipient"},
      {"the notice for another package",
       rep(dr, resigned(dn, [](auto& r) { r.package_id = "pkg-other"; })), 400, "invalid_argument"},
      {"the report not of a deletion",
       rep(resigned(dr, [](auto& r) { r.state = "installed"; }), dn), 400, "invalid_argument"},
      {"the report refused", rep(resigned(dr, [](auto& r) { r.outcome = "busy"; }), dn), 400,
       "invalid_argument"},
      {"the report of no credential", rep(resigned(dr, [](auto& r) { r.credential = "-"; }), dn),
       400, "invalid_argument"},
      {"the report naming the successor's package",
       rep(resigned(dr, [&](auto& r) { r.package_id = package_id; }), dn), 400, "invalid_argument"},
      {"the report naming an unknown package",
       rep(resigned(dr, [](auto& r) { r.package_id = "pkg-unknown"; }), dn), 400,
       "invalid_argument"},
      {"the report too long", rep(std::string(16 * 1024 + 1, 'r'), dn), 400, "invalid_argument"},
      {"the notice a number", rep(dr, 1), 400, "bad_format"},
  });
  EXPECT_EQ((*db_->packages().find(package_id))->status, store::PackageStatus::delivered);
  EXPECT_EQ(registration().sho, "sho-a");
  EXPECT_EQ(registration().successor, "sho-b");
  EXPECT_EQ(flow_count("operator_changed"), 0u);

  const HttpResponse accepted = handle(rep(dr, dn));
  ASSERT_EQ(accepted.status, 200) << accepted.body;
  EXPECT_EQ(Json::parse(accepted.body), (Json{{"package_id", package_id}, {"outcome", "ok"}}));
  EXPECT_EQ((*db_->packages().find(package_id))->status, store::PackageStatus::reported);
  EXPECT_EQ(registration().sho, "sho-b");
  EXPECT_EQ(registration().successor, "");
  EXPECT_EQ(flow_count("operator_changed"), 1u);
  auto audit = db_->audit().recent(10);
  ASSERT_TRUE(audit);
  auto find = [&](const std::string& service, const std::string& event) {
    for (const store::AuditRecord& a : *audit) {
      if (a.service == service && a.event == event) return a;
    }
    return store::AuditRecord{};
  };
  EXPECT_EQ(find("drf", "transfer").outcome, "ok");
  EXPECT_EQ(find("drf", "transfer").subject, kPcid);
  EXPECT_NE(find("drf", "transfer").detail.find("F4"), std::string::npos);
  EXPECT_EQ(find("dpf", "report").outcome, "ok");
  expect_refusals({{"replay", rep(dr, dn), 409, "transition_refused"}});
  // The old holder has nothing more to say about the device.
  expect_refusals({{"the old holder's attestation request",
                    op_request("POST", "/v1/dpf/attestation-requests", "sho-a",
                               attestation_request_body("challenge-late")),
                    403, "access_denied"}});
}

// A refused F4 install ends the change: reported and relayed as in F2, the successor cleared, the
// holder keeps the registration. It discarded nothing, so acknowledgements with it are refused.
TEST_F(RoServiceF4Test, ARefusedReplacementEndsTheChange) {
  start(with_shos(config()));
  operational();
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(handle(change(change_body())).status, 200);
  // No registration nonce recorded for sho-b's package: the TRE refuses it.
  const auto [package_id, pkg] = successor_package();
  const std::string sid = dpf_session();
  ASSERT_EQ(handle(device_request("GET", "/v1/dpf/package", bearer(sid))).status, 200);
  ASSERT_TRUE(tre_->apply(tre::Action::deselect, kImsi));
  const tre::ReplaceOutcome out = tre_->install_replacing(pkg, kImsi);
  ASSERT_FALSE(out.install.result);
  const std::string refusal(to_string(out.install.result.error().code));
  expect_refusals({
      {"a discard report with a refusal",
       f4_report(sid, package_id, out.install.report, old_install_report_, std::nullopt), 400,
       "invalid_argument"},
      {"a discard notice with a refusal",
       f4_report(sid, package_id, out.install.report, std::nullopt, old_install_report_), 400,
       "invalid_argument"},
  });
  const HttpResponse r =
      handle(f4_report(sid, package_id, out.install.report, std::nullopt, std::nullopt));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["outcome"], refusal);
  EXPECT_EQ((*db_->packages().find(package_id))->status, store::PackageStatus::reported);
  EXPECT_EQ(registration().sho, "sho-a");
  EXPECT_EQ(registration().successor, "");
  EXPECT_EQ(flow_count("operator_changed"), 0u);
  EXPECT_EQ(flow_count("status_reported"), 2u);  // the F2 one and this
}

// ---- Configuration --------------------------------------------------------------------------

TEST_F(RoServiceTest, UnusableConfigurationsAreRefused) {
  auto refused = [&](std::function<void(RoServiceConfig&)> change) {
    RoServiceConfig c = config();
    change(c);
    auto s = RoService::create(*db_, std::move(c), clock_);
    return s ? std::string("created") : std::string(s.error().wire_code());
  };
  EXPECT_EQ(refused([](auto& c) { c.operator_id.clear(); }), "missing_argument");
  EXPECT_EQ(refused([](auto& c) { c.icf_key.reset(); }), "missing_argument");
  EXPECT_EQ(refused([](auto& c) { c.supplier_roots.reset(); }), "missing_argument");
  EXPECT_EQ(refused([](auto& c) { c.operator_roots.reset(); }), "missing_argument");
  EXPECT_EQ(refused([](auto& c) { c.shos["sho-a"] = {"http://127.0.0.1:1"}; }), "invalid_argument");
  EXPECT_EQ(refused([](auto& c) { c.notify_workers = 0; }), "invalid_argument");
  EXPECT_EQ(refused([](auto& c) { c.notify_workers = 257; }), "invalid_argument");
  EXPECT_EQ(refused([](auto& c) { c.drf.change_attempts = 0; }), "invalid_argument");
  EXPECT_EQ(refused([](auto& c) { c.drf.change_window = 0s; }), "invalid_argument");
  EXPECT_EQ(refused([&](auto& c) {
              auto mismatched = std::make_shared<pki::KeyPair>();
              mismatched->key = pki::up_ref(parties_->icf_keys.at("icf.other")->key.get());
              mismatched->certs.push_back(pki::up_ref(parties_->icf_keys.at("icf.ro-1")->cert()));
              c.icf_key = mismatched;
            }),
            "invalid_argument");
  EXPECT_EQ(refused([](auto&) {}), "created");
}

// ---- Notices to the SHO ---------------------------------------------------------------------

class ShoServer {
 public:
  // Answers `failures` requests `failure_status` (with an error envelope), then 204; each answer
  // after `delay`, from `threads` server threads.
  explicit ShoServer(int failures, int failure_status = 503, std::chrono::milliseconds delay = 0ms,
                     int threads = 1)
      : failures_(failures) {
    TestPki::get().operator_client("ro-1");
    net::HttpServerOptions options;
    options.threads = threads;
    server_ = net::testing::start_server(
        [this, failure_status, delay](const HttpRequest& r) {
          {
            std::lock_guard lock(mu_);
            received.push_back(
                {r.target, r.body, r.peer.operator_id() ? *r.peer.operator_id() : ""});
            max_concurrent_ = std::max(max_concurrent_, ++concurrent_);
          }
          std::this_thread::sleep_for(delay);
          std::lock_guard lock(mu_);
          --concurrent_;
          if (failures_-- > 0) {
            return net::error_response(failure_status,
                                       failure_status == 409 ? "transition_refused" : "busy",
                                       "refused by the test SHO");
          }
          HttpResponse out;
          out.status = 204;
          return out;
        },
        net::testing::tls_options(net::ClientAuth::required), options);
  }
  int max_concurrent() {
    std::lock_guard lock(mu_);
    return max_concurrent_;
  }
  std::string url() const { return server_->url(); }
  struct Received {
    std::string target, body, peer;
  };
  std::vector<Received> snapshot() {
    std::lock_guard lock(mu_);
    return received;
  }

 private:
  std::mutex mu_;
  int failures_;
  int concurrent_ = 0, max_concurrent_ = 0;
  std::vector<Received> received;
  std::unique_ptr<net::HttpServer> server_;
};

TEST_F(RoServiceTest, NoticesReachTheShoOverMtlsAndAreRetried) {
  ShoServer sho(1);
  RoServiceConfig c = config();
  TestPki::get().operator_client("ro-1");
  c.notify_client = std::shared_ptr<net::HttpsClient>(net::testing::make_client("ro-1"));
  c.shos["sho-a"] = {sho.url()};
  start(std::move(c));
  const std::string sid = provisioned();
  ASSERT_EQ(handle(device_request("GET", "/v1/drf/bootstrap", bearer(sid))).status, 200);
  ASSERT_TRUE(service_->wait_notices_delivered(10s));
  EXPECT_EQ(service_->pending_notices(), 0u);
  auto got = sho.snapshot();
  ASSERT_EQ(got.size(), 2u);  // 503, then delivered
  EXPECT_EQ(got[0].target, "/v1/sho/arrivals");
  EXPECT_EQ(got[1].body, got[0].body);
  EXPECT_EQ(got[1].peer, "ro-1");
  const Json arrival = Json::parse(got[1].body);
  EXPECT_EQ(arrival["pcid"], kPcid);
  EXPECT_EQ(arrival["device_id"], device_);
  EXPECT_EQ(arrival["sho"], "sho-a");
  EXPECT_EQ(arrival["time"].get<std::int64_t>(),
            std::chrono::floor<std::chrono::seconds>(clock_.now()).time_since_epoch().count());
  // The outbox's metrics: the arrival failed once (503) and went on the second attempt.
  EXPECT_EQ(notices("arrival", "retried"), 1);
  EXPECT_EQ(notices("arrival", "delivered"), 1);
  EXPECT_EQ(notices("arrival", "dropped"), 0);
  EXPECT_EQ(metric("mcim_ro_notices_pending"), 0);
  for (const char* kind : {"attestation", "status", "discard", "instruction_result", "other"}) {
    EXPECT_EQ(notices(kind, "delivered"), 0) << kind;  // every series there from the start
  }

  // Step 14: the status relay.
  ASSERT_EQ(handle(op_request("POST", "/v1/dpf/packages", "sho-a", package_body())).status, 201);
  auto fetched = handle(device_request("GET", "/v1/dpf/package", bearer(sid)));
  ASSERT_TRUE(tre_->record_registration(kNonce));
  auto installed =
      tre_->install(*parse_hex(Json::parse(fetched.body)["package"].get<std::string>(), "p"));
  ASSERT_EQ(handle(device_request("POST", "/v1/dpf/packages/" + known_.packages.back() + "/report",
                                  bearer(sid), report_body(installed.report)))
                .status,
            200);
  ASSERT_TRUE(service_->wait_notices_delivered(10s));
  got = sho.snapshot();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2].target, "/v1/sho/status");
  const Json status = Json::parse(got[2].body);
  EXPECT_EQ(status["package_id"], known_.packages.back());
  EXPECT_EQ(status["device_id"], device_);
  EXPECT_EQ(status["sho"], "sho-a");
  EXPECT_EQ(status["report"], installed.report);
  EXPECT_EQ(notices("status", "delivered"), 1);
  EXPECT_EQ(notices("status", "retried"), 0);
  EXPECT_EQ(metric("mcim_ro_notices_pending"), 0);
}

// A notifying RO for sho-a at `sho`.
RoServiceConfig notifying(RoServiceConfig c, const ShoServer& sho) {
  TestPki::get().operator_client("ro-1");
  c.notify_client = std::shared_ptr<net::HttpsClient>(net::testing::make_client("ro-1"));
  c.shos["sho-a"] = {sho.url()};
  return c;
}

TEST_F(RoServiceTest, AttestationAnswersReachTheSho) {
  ShoServer sho(0);
  start(notifying(config(), sho));
  const std::string sid = provisioned();
  ASSERT_EQ(request_attestation("challenge-1").status, 201);
  const std::string report = attestation();
  ASSERT_EQ(handle(device_request("POST", "/v1/dpf/attestations/challenge-1", bearer(sid),
                                  report_body(report)))
                .status,
            202);
  ASSERT_TRUE(service_->wait_notices_delivered(10s));
  const auto got = sho.snapshot();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].target, "/v1/sho/attestations");
  EXPECT_EQ(got[0].peer, "ro-1");
  EXPECT_EQ(Json::parse(got[0].body),
            (Json{{"request_id", "challenge-1"},
                  {"pcid", kPcid},
                  {"device_id", device_},
                  {"sho", "sho-a"},
                  {"report", report},
                  {"platform_chain", {*pki::certificate_pem(tre_->platform_certificate())}}}));
  const auto audit = *db_->audit().recent(1);
  EXPECT_EQ(audit[0].event, "relay-attestation");
  EXPECT_EQ(audit[0].outcome, "ok");
  EXPECT_EQ(notices("attestation", "delivered"), 1);  // counted under its own kind
  EXPECT_EQ(notices("other", "delivered"), 0);
}

// F9 across a restart of the RO: the instruction queued before it is in the database, so the
// device collects it from the new RoService (on the database reopened) and the TRE's answer is
// taken and relayed to the SHO.
TEST_F(RoServiceTest, AQueuedInstructionOutlivesARestart) {
  const std::string file = world().path(fmt::format("ro-restart-{}.db", counter_++));
  ASSERT_NO_FATAL_FAILURE(open_sqlite(file));
  ShoServer sho(0);
  start(notifying(config(), sho));
  switched_on();
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(tre_->record_registration(kNonce));
  ASSERT_TRUE(tre_->install(world().seal(world().document(device_, kImsi, "sho-a", 1, kNonce),
                                         world().signer("sho-a"), tre_->platform_certificate()))
                  .result);
  ASSERT_TRUE(tre_->apply(tre::Action::activate, kImsi));
  const Json body{{"pcid", kPcid},
                  {"device_id", device_},
                  {"instruction_id", "ins-1"},
                  {"instruction", world().instruction(world().signer("sho-a"), device_, kImsi,
                                                      tre::Action::block, 1)}};
  const HttpResponse queued =
      handle(op_request("POST", "/v1/dpf/instructions", "sho-a", body.dump()));
  ASSERT_EQ(queued.status, 201) << queued.body;

  // The restart: the service and the database go, both come back on the same file.
  service_.reset();
  db_.reset();
  ASSERT_NO_FATAL_FAILURE(open_sqlite(file));
  start(notifying(config(), sho));

  const HttpResponse c = handle(
      device_request("POST", "/v1/dpf/management/challenges", "", Json{{"pcid", kPcid}}.dump()));
  ASSERT_EQ(c.status, 201) << c.body;
  const Json challenge = Json::parse(c.body);
  const HttpResponse collected = handle(device_request(
      "POST", "/v1/dpf/management/instructions", "",
      Json{{"pcid", kPcid},
           {"challenge_id", challenge["challenge_id"]},
           {"report", *tre_->attest(*parse_hex(challenge["nonce"].get<std::string>(), "nonce"))},
           {"platform_chain", {*pki::certificate_pem(tre_->platform_certificate())}}}
          .dump()));
  ASSERT_EQ(collected.status, 200) << collected.body;
  const Json pending = Json::parse(collected.body)["instructions"];
  ASSERT_EQ(pending.size(), 1u) << collected.body;
  EXPECT_EQ(pending[0]["instruction_id"], "ins-1");
  auto applied = tre_->apply_instruction(pending[0]["instruction"].get<std::string>());
  ASSERT_TRUE(applied.result) << applied.result.error().message;
  const HttpResponse answered = handle(
      device_request("POST", "/v1/dpf/instructions/ins-1/result", "", report_body(applied.report)));
  ASSERT_EQ(answered.status, 200) << answered.body;
  EXPECT_EQ(Json::parse(answered.body)["outcome"], "ok");
  ASSERT_TRUE(service_->wait_notices_delivered(10s));
  std::vector<ShoServer::Received> relayed;
  for (const auto& r : sho.snapshot()) {
    if (r.target == "/v1/sho/instruction-results") relayed.push_back(r);
  }
  ASSERT_EQ(relayed.size(), 1u);
  EXPECT_EQ(relayed[0].peer, "ro-1");
  const Json result = Json::parse(relayed[0].body);
  EXPECT_EQ(result["instruction_id"], "ins-1");
  EXPECT_EQ(result["device_id"], device_);
  EXPECT_EQ(result["sho"], "sho-a");
  EXPECT_EQ(result["report"], applied.report);
  EXPECT_EQ(notices("instruction_result", "delivered"), 1);  // counted under its own kind
  EXPECT_EQ(notices("other", "delivered"), 0);
  auto stored = db_->instructions().find("ins-1");
  ASSERT_TRUE(stored && *stored);
  EXPECT_EQ((*stored)->status, store::InstructionStatus::answered);
}

// A 4xx other than 408/429 will be the same answer next time: one attempt, then the audit.
TEST_F(RoServiceTest, PermanentRefusalsAreNotRetried) {
  ShoServer sho(1000, 409);
  RoServiceConfig c = notifying(config(), sho);
  c.notify_retry = 10ms;
  start(std::move(c));
  const std::string sid = provisioned();
  ASSERT_EQ(handle(device_request("GET", "/v1/drf/bootstrap", bearer(sid))).status, 200);
  ASSERT_TRUE(service_->wait_notices_delivered(10s));
  std::this_thread::sleep_for(100ms);  // ten retry delays: none may come
  EXPECT_EQ(sho.snapshot().size(), 1u);
  EXPECT_EQ(service_->pending_notices(), 0u);
  EXPECT_EQ(*db_->notices().count(), 0u);  // a refused notice leaves the database too
  const auto audit = *db_->audit().recent(1);
  EXPECT_EQ(audit[0].service, "ro");
  EXPECT_EQ(audit[0].event, "notice");
  EXPECT_EQ(audit[0].subject, kPcid);
  EXPECT_EQ(audit[0].outcome, "transition_refused");
}

TEST_F(RoServiceTest, TooManyRequestsIsRetried) {
  for (int status : {429, 408}) {
    ShoServer sho(1, status);
    start(notifying(config(), sho));
    const std::string sid = provisioned();
    ASSERT_EQ(handle(device_request("GET", "/v1/drf/bootstrap", bearer(sid))).status, 200);
    ASSERT_TRUE(service_->wait_notices_delivered(10s)) << status;
    EXPECT_EQ(sho.snapshot().size(), 2u) << status;
    service_.reset();
    db_ = store::make_memory_database();
    known_ = Known{};
  }
}

// Slow answers do not serialise the queue: notify_workers notices are in flight at once.
TEST_F(RoServiceTest, NoticesAreDeliveredInParallel) {
  for (std::size_t workers : {std::size_t{4}, std::size_t{1}}) {
    ShoServer sho(0, 503, 200ms, 4);
    RoServiceConfig c = notifying(config(), sho);
    c.notify_workers = workers;
    start(std::move(c));
    const std::string sid = provisioned();
    for (int i = 0; i < 4; ++i) {
      ASSERT_EQ(handle(device_request("GET", "/v1/drf/bootstrap", bearer(sid))).status, 200);
    }
    ASSERT_TRUE(service_->wait_notices_delivered(10s));
    EXPECT_EQ(sho.snapshot().size(), 4u);
    if (workers == 1) {
      EXPECT_EQ(sho.max_concurrent(), 1);
    } else {
      EXPECT_GE(sho.max_concurrent(), 2);
    }
    service_.reset();
    db_ = store::make_memory_database();
    known_ = Known{};
  }
}

TEST_F(RoServiceTest, UndeliverableNoticesAreAuditedAndDropped) {
  start();  // no client, no SHO endpoints
  const std::string sid = provisioned();
  ASSERT_EQ(handle(device_request("GET", "/v1/drf/bootstrap", bearer(sid))).status, 200);
  EXPECT_EQ(service_->pending_notices(), 0u);
  const auto audit = *db_->audit().recent(3);
  bool found = false;
  for (const auto& a : audit) {
    if (a.service == "ro" && a.event == "notice") {
      found = true;
      EXPECT_EQ(a.outcome, "not_found");
      EXPECT_EQ(a.subject, kPcid);
    }
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(notices("arrival", "dropped"), 1);
  EXPECT_EQ(notices("arrival", "delivered"), 0);
  EXPECT_EQ(metric("mcim_ro_notices_pending"), 0);
}

// A notice not delivered at shutdown stays in the database; the next start, on the database
// reopened from its file, delivers it to the SHO's endpoint of the new configuration.
TEST_F(RoServiceTest, ANoticePendingAtShutdownIsKeptAndDeliveredAfterTheRestart) {
  const std::string file = world().path(fmt::format("ro-notices-{}.db", counter_++));
  ASSERT_NO_FATAL_FAILURE(open_sqlite(file));
  ShoServer down(1000);
  RoServiceConfig c = notifying(config(), down);
  c.notify_retry = 10s;
  c.expire_interval = 3600s;
  start(std::move(c));
  const std::string sid = provisioned();
  ASSERT_EQ(handle(device_request("GET", "/v1/drf/bootstrap", bearer(sid))).status, 200);
  for (int i = 0; i < 200 && down.snapshot().empty(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(service_->pending_notices(), 1u);
  EXPECT_EQ(*db_->notices().count(), 1u);
  EXPECT_FALSE(service_->wait_notices_delivered(50ms));
  const auto t0 = std::chrono::steady_clock::now();
  service_.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);  // shutdown does not wait for the SHO
  const auto after_stop = db_->audit().recent(20);
  ASSERT_TRUE(after_stop);
  for (const auto& a : *after_stop) {
    EXPECT_FALSE(a.event == "notice") << "dropped at shutdown: " << a.outcome;
  }
  auto kept = db_->notices().pending(10);
  ASSERT_TRUE(kept);
  ASSERT_EQ(kept->size(), 1u);
  EXPECT_EQ((*kept)[0].kind, "arrival");
  EXPECT_EQ((*kept)[0].subject, kPcid);
  EXPECT_EQ((*kept)[0].sho, "sho-a");
  EXPECT_EQ((*kept)[0].path, "/v1/sho/arrivals");

  db_.reset();
  ASSERT_NO_FATAL_FAILURE(open_sqlite(file));
  ShoServer up(0);
  start(notifying(config(), up));
  ASSERT_TRUE(service_->wait_notices_delivered(10s));
  const auto received = up.snapshot();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].target, "/v1/sho/arrivals");
  EXPECT_EQ(received[0].peer, "ro-1");
  const Json arrival = Json::parse(received[0].body);
  EXPECT_EQ(arrival["pcid"], kPcid);
  EXPECT_EQ(arrival["sho"], "sho-a");
  EXPECT_EQ(*db_->notices().count(), 0u);
}

// A notice is stored in the transaction of the change it reports (a transactional outbox) and
// handed to the workers only once that committed: when the change is undone, no notice is stored
// and none is sent. A trigger that rolls the whole transaction back when the arrival's record is
// written stands in for a store failing between the notice and the commit.
TEST_F(RoServiceTest, ANoticeOfADiscoveryThatDidNotCommitIsNeitherKeptNorSent) {
  const std::string file = world().path(fmt::format("ro-outbox-{}.db", counter_++));
  ASSERT_NO_FATAL_FAILURE(open_sqlite(file));
  ShoServer sho(0);
  start(notifying(config(), sho));
  const std::string sid = provisioned();
  auto sql = [&](const char* text) {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(file.c_str(), &raw), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(raw, text, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(raw);
    sqlite3_close(raw);
  };
  sql("CREATE TRIGGER undo BEFORE INSERT ON audit_record WHEN NEW.event = 'arrival-notice' "
      "BEGIN SELECT RAISE(ROLLBACK, 'undone by the test'); END");
  const auto refused = handle(device_request("GET", "/v1/drf/bootstrap", bearer(sid)));
  EXPECT_GE(refused.status, 400);
  EXPECT_EQ(*db_->notices().count(), 0u);
  EXPECT_TRUE(service_->wait_notices_delivered(1s));
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(sho.snapshot().empty());
  const auto records = db_->audit().recent(50);
  ASSERT_TRUE(records);
  for (const auto& a : *records) {
    EXPECT_FALSE(a.event == "discover" && a.outcome == "ok") << "a discovery that was undone";
  }

  sql("DROP TRIGGER undo");
  ASSERT_EQ(handle(device_request("GET", "/v1/drf/bootstrap", bearer(sid))).status, 200);
  ASSERT_TRUE(service_->wait_notices_delivered(10s));
  const auto received = sho.snapshot();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].target, "/v1/sho/arrivals");
  EXPECT_EQ(*db_->notices().count(), 0u);
}

// What an earlier run left for an operator the configuration no longer names cannot be delivered:
// dropped with its audit record, and gone from the database.
TEST_F(RoServiceTest, AKeptNoticeForAnOperatorNoLongerConfiguredIsDroppedAtStart) {
  ASSERT_TRUE(db_->notices().add(
      {0, "status", "package-1", "sho-gone", "/v1/sho/status", "{}", store::Time{}}));
  ShoServer sho(0);
  start(notifying(config(), sho));
  ASSERT_TRUE(service_->wait_notices_delivered(10s));
  EXPECT_TRUE(sho.snapshot().empty());
  EXPECT_EQ(*db_->notices().count(), 0u);
  const auto audit = *db_->audit().recent(1);
  EXPECT_EQ(audit[0].event, "notice");
  EXPECT_EQ(audit[0].subject, "package-1");
  EXPECT_EQ(audit[0].outcome, "not_found");
}

TEST_F(RoServiceTest, FullQueueDropsTheOldest) {
  RoServiceConfig c = config();
  c.notify_client = std::shared_ptr<net::HttpsClient>(net::testing::make_client());
  c.shos["sho-a"] = {"https://127.0.0.1:9"};  // nothing listens: every attempt fails
  c.notify_retry = 10s;
  c.max_pending_notices = 1;
  c.notify_workers = 1;
  start(std::move(c));
  const std::string sid = provisioned();
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(handle(device_request("GET", "/v1/drf/bootstrap", bearer(sid))).status, 200);
  }
  EXPECT_LE(service_->pending_notices(), 2u);  // one queued, at most one in flight
  EXPECT_LE(*db_->notices().count(), 2u);      // the dropped ones leave the database
  const auto audit = *db_->audit().recent(20);
  const auto dropped = std::count_if(audit.begin(), audit.end(), [](const auto& a) {
    return a.service == "ro" && a.event == "notice" && a.outcome == "busy";
  });
  EXPECT_GE(dropped, 1);
  EXPECT_EQ(notices("arrival", "dropped"), static_cast<double>(dropped));
  EXPECT_EQ(metric("mcim_ro_notices_pending"), static_cast<double>(service_->pending_notices()));
}

// ---- Background expiry ----------------------------------------------------------------------

TEST_F(RoServiceTest, DormantPcidsExpireInTheBackground) {
  RoServiceConfig c = config();
  c.expire_interval = 1s;
  c.icf.dormant_period = 10s;
  start(std::move(c));
  ASSERT_EQ(post_batch(seal(batch())).status, 201);
  EXPECT_EQ((*db_->pcids().find(kPcid2))->status, store::PcidStatus::dormant);
  clock_.advance(11s);
  bool expired = false;
  for (int i = 0; i < 40 && !expired; ++i) {
    std::this_thread::sleep_for(100ms);
    expired = (*db_->pcids().find(kPcid2))->status == store::PcidStatus::expired;
  }
  EXPECT_TRUE(expired);
}

// F4 at the RO from the order to the hand-over, with both SHOs' notice endpoints: the change,
// the successor's attestation request, the device's DPF session, its answer relayed to the new
// SHO, the new SHO's package, the TRE's replacement and its report, after which the new SHO holds
// the registration and each SHO got its acknowledgement (the old one the full discard report,
// the new one the filtered notice, nothing of the old subscription).
TEST_F(RoServiceF4Test, AnOperatorChangeFromTheOrderToTheHandOver) {
  ShoServer old_sho(0), new_sho(0);
  RoServiceConfig c = config();
  TestPki::get().operator_client("ro-1");
  c.notify_client = std::shared_ptr<net::HttpsClient>(net::testing::make_client("ro-1"));
  c.shos["sho-a"] = {old_sho.url()};
  c.shos["sho-b"] = {new_sho.url()};
  start(std::move(c));
  operational();
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(service_->wait_notices_delivered(10s));
  const std::size_t old_before = old_sho.snapshot().size();  // F2's notices

  // Steps 1-3: the owner's order at the new SHO, which starts the validation at once.
  HttpResponse r = handle(change(change_body()));
  ASSERT_EQ(r.status, 200) << r.body;
  r = handle(op_request("POST", "/v1/dpf/attestation-requests", "sho-b",
                        attestation_request_body("challenge-b")));
  ASSERT_EQ(r.status, 201) << r.body;

  // Step 4: the operational device's DPF session, the attestation through it.
  const std::string sid = dpf_session();
  ASSERT_FALSE(sid.empty());
  r = handle(device_request("GET", "/v1/dpf/attestation-request", bearer(sid)));
  ASSERT_EQ(r.status, 200) << r.body;
  const Json ask = Json::parse(r.body);
  EXPECT_EQ(ask["request_id"], "challenge-b");
  const std::string attested = *tre_->attest(*parse_hex(ask["nonce"].get<std::string>(), "nonce"));
  r = handle(device_request("POST", "/v1/dpf/attestations/challenge-b", bearer(sid),
                            report_body(attested)));
  ASSERT_EQ(r.status, 202) << r.body;
  ASSERT_TRUE(service_->wait_notices_delivered(10s));
  auto to_new = new_sho.snapshot();
  ASSERT_EQ(to_new.size(), 1u);
  EXPECT_EQ(to_new[0].target, "/v1/sho/attestations");
  EXPECT_EQ(to_new[0].peer, "ro-1");
  EXPECT_EQ(Json::parse(to_new[0].body)["sho"], "sho-b");
  EXPECT_EQ(Json::parse(to_new[0].body)["report"], attested);

  // The new SHO's package, downloaded over the same session.
  const auto [package_id, pkg] = successor_package();
  r = handle(device_request("GET", "/v1/dpf/package", bearer(sid)));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["package_id"], package_id);
  EXPECT_EQ(*parse_hex(Json::parse(r.body)["package"].get<std::string>(), "package"), pkg);

  // Step 5: the TRE installs it in place of the old MCIM; step 6: the report with both acks.
  ASSERT_TRUE(tre_->apply(tre::Action::deselect, kImsi));
  ASSERT_TRUE(tre_->record_registration(kNonceB));
  const tre::ReplaceOutcome out = tre_->install_replacing(pkg, kImsi);
  ASSERT_TRUE(out.install.result) << out.install.result.error().message;
  r = handle(
      f4_report(sid, package_id, out.install.report, out.discard_report, out.discard_notice));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body), (Json{{"package_id", package_id}, {"outcome", "ok"}}));

  // Step 7: the new SHO holds the registration; each SHO has its notice.
  EXPECT_EQ(registration().sho, "sho-b");
  EXPECT_EQ(registration().successor, "");
  ASSERT_TRUE(service_->wait_notices_delivered(10s));
  to_new = new_sho.snapshot();
  ASSERT_EQ(to_new.size(), 2u);
  EXPECT_EQ(to_new[1].target, "/v1/sho/status");
  EXPECT_EQ(Json::parse(to_new[1].body), (Json{{"package_id", package_id},
                                               {"device_id", device_},
                                               {"sho", "sho-b"},
                                               {"report", out.install.report},
                                               {"discard_notice", out.discard_notice}}));
  for (const std::string& old : {kImsi, old_package_, std::string("sho-a")}) {
    EXPECT_EQ(to_new[1].body.find(old), std::string::npos) << old;
  }
  const auto to_old = old_sho.snapshot();
  ASSERT_EQ(to_old.size(), old_before + 1);
  EXPECT_EQ(to_old.back().target, "/v1/sho/discards");
  EXPECT_EQ(to_old.back().peer, "ro-1");
  EXPECT_EQ(Json::parse(to_old.back().body),
            (Json{{"device_id", device_}, {"sho", "sho-a"}, {"report", out.discard_report}}));
  auto discarded =
      tre::verify_discard_report(Json::parse(to_old.back().body)["report"].get<std::string>(),
                                 tre_->platform_certificate(), device_, kImsi);
  ASSERT_TRUE(discarded) << discarded.error().message;
  EXPECT_EQ(discarded->package_id, old_package_);
  for (const char* step : {"change_ordered", "attestation_requested", "management_session",
                           "attestation_relayed", "operator_changed"}) {
    EXPECT_EQ(flow_count(step), 1u) << step;
  }
  // The new holder now registers the device as its own; the old one can do nothing more.
  EXPECT_EQ(handle(op_request("PUT", "/v1/drf/registrations/" + kPcid, "sho-b",
                              registration_body(device_)))
                .status,
            200);
  expect_refusals(
      {{"the old holder's removal", op_request("DELETE", "/v1/drf/registrations/" + kPcid, "sho-a"),
        403, "access_denied"}});
}

}  // namespace
}  // namespace mcim::ro
