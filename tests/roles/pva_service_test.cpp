// The PVA's HTTPS service (roles/pva/service.h) on a real HTTPS server on loopback, with the
// World's supplier CA (platform certificates, reference signer, OCSP signer, index.txt), a real
// TRE's attestation reports, and SHO and supplier clients presenting operator certificates.
// Each failure of a validation must reach the signed result; each HTTP refusal is checked for
// its exact status and code and for leaving the stored challenges and references as they were.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <functional>
#include <thread>

#include "../net/net_test_util.h"
#include "../store/audit_refusals.h"
#include "../tre/tre_fixture.h"
#include "common/hex.h"
#include "pki/attestation.h"
#include "pki/certificate.h"
#include "pki/ocsp.h"
#include "roles/pva/service.h"
#include "store/store.h"
#include "tre/tre.h"

namespace mcim::pva {
namespace {

using namespace std::chrono_literals;
using net::Json;
using net::testing::TestPki;
using tre::testing::World;

const std::string kModel = "mcim-sw-tre-1";  // ManufactureSpec's default

// The system clock moved by hand, readable from the server's threads while a test moves it.
class ShiftedClock final : public Clock {
 public:
  TimePoint now() const override {
    return std::chrono::system_clock::now() + std::chrono::seconds(offset_.load());
  }
  void advance(std::chrono::seconds s) { offset_ += s.count(); }

 private:
  std::atomic<std::int64_t> offset_{0};
};

struct Answer {
  int status = 0;
  std::string body;
  Json json;
  std::string code() const {
    return json.is_object() && json.contains("error") ? json["error"].value("code", "") : "";
  }
};

Answer call(net::HttpsClient& c, const std::string& url, const std::string& body,
            const std::string& content_type = "application/json") {
  auto r = c.request("POST", url, body, content_type);
  Answer a;
  if (!r) {
    ADD_FAILURE() << url << ": " << fmt::to_string(r.error());
    a.status = -1;
    return a;
  }
  a.status = r->status;
  a.body = r->body;
  a.json = Json::parse(r->body, nullptr, false);
  if (a.json.is_discarded()) a.json = nullptr;
  return a;
}

std::shared_ptr<net::HttpsClient> client(const std::string& operator_id) {
  net::HttpsClientOptions o;
  if (!operator_id.empty()) o.identity = TestPki::get().operator_client(operator_id).identity;
  return std::shared_ptr<net::HttpsClient>(net::testing::make_client("", std::move(o)));
}

std::string pem_of(X509* cert) { return pki::certificate_pem(cert).value_or(""); }

std::string base64(ByteView der) {
  std::string out(4 * ((der.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), der.data(),
                                static_cast<int>(der.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string url_encode(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c)) != 0) {
      out += c;
    } else {
      out += fmt::format("%{:02X}", static_cast<unsigned char>(c));
    }
  }
  return out;
}

// The failures of an answer as (check, code) pairs; messages are for people.
std::vector<std::pair<std::string, std::string>> failures_of(const Json& j) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Json& f : j.at("failures")) {
    out.emplace_back(f.at("check").get<std::string>(), f.at("code").get<std::string>());
  }
  return out;
}

// ---- The suite's parties: supplier CA and its signers, the PVA's result signer ----------------

struct Parties {
  explicit Parties(World& w) {
    pki::CertSpec refs;
    refs.profile = pki::Profile::result_signing;
    refs.subject = "CN=Supplier references,O=Supplier";
    references = std::move(*w.supplier().issue(refs, w.clock(), w.rng()));

    pki::CertSpec ocsp;
    ocsp.profile = pki::Profile::ocsp_signing;
    ocsp.subject = "CN=Supplier OCSP,O=Supplier";
    auto o = w.supplier().issue(ocsp, w.clock(), w.rng());
    EXPECT_TRUE(o) << o.error().message;
    ocsp_prefix = w.path("ocsp-signer");
    EXPECT_TRUE(pki::write_certificate(ocsp_prefix + ".pem", o->cert.get()));
    EXPECT_TRUE(pki::write_private_key(ocsp_prefix + ".key", o->key.get()));

    pki::CertSpec result;
    result.profile = pki::Profile::result_signing;
    result.subject = "CN=PVA results,O=pva-1";
    auto r = w.operators().issue(result, w.clock(), w.rng());
    EXPECT_TRUE(r) << r.error().message;
    auto pair = std::make_shared<pki::KeyPair>();
    pair->key = std::move(r->key);
    pair->certs.push_back(std::move(r->cert));
    result_signer = std::move(pair);

    supplier_roots = std::make_shared<const pki::TrustAnchors>(
        std::move(*pki::TrustAnchors::from_certs({w.supplier().cert()})));
    pva_roots = std::move(*pki::TrustAnchors::from_certs({w.operators().cert()}));
  }

  std::string sign(const std::vector<pki::Measurement>& ms, std::chrono::sys_seconds issued,
                   const std::string& model = kModel) const {
    auto text =
        pki::sign_references({model, ms, issued}, references.key.get(), {references.cert.get()});
    EXPECT_TRUE(text) << text.error().message;
    return text.value_or("");
  }

  pki::Issued references;
  std::string ocsp_prefix;
  std::shared_ptr<const pki::KeyPair> result_signer;
  std::shared_ptr<const pki::TrustAnchors> supplier_roots;
  std::optional<pki::TrustAnchors> pva_roots;
};

// A device fresh from the factory: its bundle and an opened TRE.
struct Device {
  tre::SupplierBundle bundle;
  std::optional<tre::Tre> tre;
  std::string id() const { return bundle.device_id; }
  X509* leaf() const { return bundle.platform_chain.front().get(); }
  Json chain() const {
    Json out = Json::array();
    for (const auto& c : bundle.platform_chain) out.push_back(pem_of(c.get()));
    return out;
  }
  std::string attest(ByteView nonce) {
    auto r = tre->attest(nonce);
    EXPECT_TRUE(r) << r.error().message;
    return r.value_or("");
  }
};

// What the refusals must not change, read through the store ports.
std::string snapshot(store::Database& db, const std::vector<std::string>& challenges) {
  std::string out;
  for (const std::string& id : challenges) {
    auto c = db.challenges().find(id).value_or(std::nullopt);
    if (!c) {
      out += fmt::format("challenge {} absent\n", id);
      continue;
    }
    out += fmt::format("challenge {} {} {} {} {} {}\n", id, c->sho, c->device_id, to_hex(c->nonce),
                       c->expires.time_since_epoch().count(), c->used);
  }
  for (const auto& r : db.references().all().value_or(std::vector<store::StoredReferences>{})) {
    out += fmt::format("references {} {} {}\n", r.model, r.issued.time_since_epoch().count(),
                       to_hex(pki::sha256(ByteView(
                           reinterpret_cast<const std::uint8_t*>(r.text.data()), r.text.size()))));
  }
  return out;
}

// ---- Fixture ----------------------------------------------------------------------------------

class PvaServiceTest : public ::testing::Test {
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
  static const Parties& parties() { return *parties_; }

  void SetUp() override { ASSERT_NO_FATAL_FAILURE(start("memory:")); }
  void TearDown() override { stop(); }

  PvaServiceConfig config() const {
    PvaServiceConfig c;
    c.operator_id = "pva-1";
    c.suppliers = {"sup-1"};
    c.shos = {"sho-a", "sho-b"};
    c.supplier_roots = parties().supplier_roots;
    c.supplier_ca_dir = world().supplier().dir();
    c.ocsp_signer_prefix = parties().ocsp_prefix;
    c.result_signer = parties().result_signer;
    c.challenge_lifetime = 300s;
    return c;
  }

  void start(const std::string& db_url) {
    auto db = store::open_database(db_url);
    ASSERT_TRUE(db) << db.error().message;
    db_ = std::move(*db);
    start_service();
  }

  void start_service() {
    auto service = PvaService::create(*db_, config(), clock_);
    ASSERT_TRUE(service) << service.error().message;
    service_ = std::move(*service);
    net::HttpServerOptions options;
    options.threads = 2;
    options.body_limit = service_->body_limit();
    server_ = net::testing::start_server(
        service_->handler(), net::testing::tls_options(net::ClientAuth::optional), options);
    ASSERT_TRUE(server_);
    base_ = fmt::format("https://127.0.0.1:{}", server_->port());
  }

  void stop() {
    if (server_) server_->stop();
    server_.reset();
    service_.reset();
  }

  std::string url(const std::string& path) const { return base_ + path; }

  Device device(const std::string& device_id = "") {
    Device d;
    d.bundle = world().bundle(fmt::format("0010199900{:05}", counter_), device_id);
    const std::string dir = world().path(fmt::format("tre-{}", counter_++));
    EXPECT_TRUE(tre::Tre::init(tre::Options{dir}, d.bundle));
    auto t = tre::Tre::open(tre::Options{dir});
    EXPECT_TRUE(t) << t.error().message;
    if (t) d.tre.emplace(std::move(*t));
    return d;
  }

  // The golden measurements of this build's software TRE, as the supplier would take them.
  std::vector<pki::Measurement> golden(Device& d) {
    auto report = pki::decode_signed_report(d.attest(ByteVec(32, 0x11)));
    EXPECT_TRUE(report) << report.error().message;
    return report ? report->report.measurements : std::vector<pki::Measurement>{};
  }

  std::chrono::sys_seconds now() const {
    return std::chrono::floor<std::chrono::seconds>(clock_.now());
  }

  Answer register_references(const std::string& text, const std::string& as = "sup-1") {
    return call(*client(as), url("/v1/pva/references"), text);
  }

  struct Issued {
    std::string id;
    ByteVec nonce;
  };
  Issued challenge(const std::string& device_id, const std::string& sho = "sho-a") {
    const Answer a =
        call(*client(sho), url("/v1/pva/challenges"), Json{{"device_id", device_id}}.dump());
    EXPECT_EQ(a.status, 201) << a.body;
    if (a.status != 201) return {};
    return {a.json.at("challenge_id").get<std::string>(),
            *parse_hex(a.json.at("nonce").get<std::string>(), "nonce")};
  }

  Answer validate(const std::string& challenge_id, const std::string& report, const Json& chain,
                  const std::string& sho = "sho-a") {
    Json body{{"challenge_id", challenge_id}, {"report", report}, {"platform_chain", chain}};
    return call(*client(sho), url("/v1/pva/validations"), body.dump());
  }

  // Registers the golden references for the World's model (once per service's database).
  Device registered_device(const std::string& device_id = "") {
    Device d = device(device_id);
    const Answer a = register_references(parties().sign(golden(d), now()));
    EXPECT_EQ(a.status, 201) << a.body;
    return d;
  }

  void expect_result(const Answer& a, const ByteVec& nonce, bool trusted,
                     const std::string& device_id) {
    ASSERT_EQ(a.status, 200) << a.body;
    EXPECT_EQ(a.json.at("trusted").get<bool>(), trusted) << a.body;
    auto verified = pki::verify_validation_result(a.json.at("result").get<std::string>(),
                                                  *parties().pva_roots, nonce, clock_);
    ASSERT_TRUE(verified) << verified.error().message;
    EXPECT_EQ(verified->trusted(), trusted);
    EXPECT_EQ(verified->device_id, device_id);
    ASSERT_EQ(verified->failures.size(), a.json.at("failures").size());
    for (std::size_t i = 0; i < verified->failures.size(); ++i) {
      EXPECT_EQ(pki::to_string(verified->failures[i].check),
                a.json["failures"][i]["check"].get<std::string>());
      EXPECT_EQ(to_string(verified->failures[i].code),
                a.json["failures"][i]["code"].get<std::string>());
    }
  }

  static World* world_;
  static Parties* parties_;
  static int counter_;
  ShiftedClock clock_;
  std::unique_ptr<store::Database> db_;
  std::unique_ptr<PvaService> service_;
  std::unique_ptr<net::HttpServer> server_;
  std::string base_;
};

World* PvaServiceTest::world_ = nullptr;
Parties* PvaServiceTest::parties_ = nullptr;
int PvaServiceTest::counter_ = 0;

using Failures = std::vector<std::pair<std::string, std::string>>;

// ---- Happy path -------------------------------------------------------------------------------

TEST_F(PvaServiceTest, ATrueReportIsTrustedAndTheSignedResultVerifies) {
  Device d = device();
  const auto issued = now();
  const Answer reg = register_references(parties().sign(golden(d), issued));
  ASSERT_EQ(reg.status, 201) << reg.body;
  EXPECT_EQ(reg.json, (Json{{"model", kModel}, {"issued", issued.time_since_epoch().count()}}));

  const auto before = now();
  const Answer c =
      call(*client("sho-a"), url("/v1/pva/challenges"), Json{{"device_id", d.id()}}.dump());
  ASSERT_EQ(c.status, 201) << c.body;
  const std::string id = c.json.at("challenge_id").get<std::string>();
  const std::string nonce_hex = c.json.at("nonce").get<std::string>();
  EXPECT_EQ(id.size(), 32u);
  EXPECT_EQ(id, to_hex(*parse_hex(id, "id")));  // lowercase
  EXPECT_EQ(nonce_hex.size(), 64u);
  const std::int64_t expires = c.json.at("expires").get<std::int64_t>();
  EXPECT_GE(expires, (before + 300s).time_since_epoch().count());
  EXPECT_LE(expires, (now() + 300s).time_since_epoch().count());
  auto stored = db_->challenges().find(id);
  ASSERT_TRUE(stored && *stored);
  EXPECT_EQ((*stored)->sho, "sho-a");
  EXPECT_EQ((*stored)->device_id, d.id());
  EXPECT_FALSE((*stored)->used);

  const ByteVec nonce = *parse_hex(nonce_hex, "nonce");
  // Either case is accepted in requests.
  std::string upper = id;
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  const Answer v = validate(upper, d.attest(nonce), d.chain());
  expect_result(v, nonce, true, d.id());
  EXPECT_TRUE(v.json.at("failures").empty());
  EXPECT_TRUE(db_->challenges().find(id).value()->used);
  const std::string metrics = service_->router().metrics().render();
  EXPECT_NE(metrics.find("step=\"references_registered\""), std::string::npos);
  EXPECT_NE(metrics.find("step=\"challenge_issued\""), std::string::npos);
  EXPECT_NE(metrics.find("step=\"validated\""), std::string::npos);
}

// Every operation leaves one audit record, accepted or refused; none holds a nonce or a report.
TEST_F(PvaServiceTest, EveryOperationIsAudited) {
  Device d = device();
  ASSERT_EQ(register_references(parties().sign(golden(d), now())).status, 201);
  const Issued trusted = challenge(d.id());
  expect_result(validate(trusted.id, d.attest(trusted.nonce), d.chain()), trusted.nonce, true,
                d.id());
  const Issued wrong = challenge(d.id());
  expect_result(validate(wrong.id, d.attest(ByteVec(32, 0x42)), d.chain()), wrong.nonce, false,
                d.id());
  EXPECT_EQ(validate(wrong.id, d.attest(wrong.nonce), d.chain()).status, 409);  // used up
  auto records = db_->audit().recent(10);
  ASSERT_TRUE(records);
  std::vector<std::string> lines;
  for (auto it = records->rbegin(); it != records->rend(); ++it) {
    lines.push_back(fmt::format("{} {} {} {} {}", it->service, it->event, it->principal,
                                it->outcome, it->detail));
    EXPECT_EQ(it->detail.find(to_hex(trusted.nonce)), std::string::npos);
    EXPECT_EQ(it->detail.find(to_hex(wrong.nonce)), std::string::npos);
  }
  const std::vector<std::string> expected = {
      fmt::format("pva references supplier:sup-1 ok "),
      fmt::format("pva challenge operator:sho-a ok device {}", d.id()),
      fmt::format("pva validation operator:sho-a ok device {} trusted", d.id()),
      fmt::format("pva challenge operator:sho-a ok device {}", d.id()),
      fmt::format("pva validation operator:sho-a ok device {} untrusted (nonce_mismatch)", d.id()),
      fmt::format("pva validation operator:sho-a transition_refused challenge {}: already used",
                  wrong.id),
  };
  EXPECT_EQ(lines, expected);
  EXPECT_EQ(records->front().subject, wrong.id);
}

// A challenge, and a validation's consumption of it, commit with their records (over SQLite,
// whose trigger refuses a record): a change whose record cannot be stored is undone, and the SHO
// gets the store's error.
TEST_F(PvaServiceTest, AChangeWhoseRecordCannotBeStoredIsUndone) {
  stop();
  pki::testing::TempDir dir;
  const std::string path = dir / "pva.db";
  ASSERT_NO_FATAL_FAILURE(start("sqlite:" + path));
  Device d = registered_device();

  store::testing::refuse_audit_records(path, true, "pva", "challenge");
  const Answer refused =
      call(*client("sho-a"), url("/v1/pva/challenges"), Json{{"device_id", d.id()}}.dump());
  EXPECT_EQ(refused.status, 400) << refused.body;
  EXPECT_EQ(refused.code(), "invalid_argument");  // the store's: a constraint
  EXPECT_EQ(store::testing::rows_of(path, "challenge"), 0);
  EXPECT_EQ(store::testing::audit_records_of(db_->audit(), "pva", "challenge"), 0u);

  // Without the trigger, both the challenge and its record are stored.
  store::testing::refuse_audit_records(path, false);
  const Issued c = challenge(d.id());
  ASSERT_FALSE(c.id.empty());
  EXPECT_EQ(store::testing::rows_of(path, "challenge"), 1);
  EXPECT_EQ(store::testing::audit_records_of(db_->audit(), "pva", "challenge"), 1u);

  // The validation consumes the challenge with its record: a verdict that cannot be recorded
  // leaves the challenge usable.
  const std::string report = d.attest(c.nonce);
  store::testing::refuse_audit_records(path, true, "pva", "validation");
  const Answer unrecorded = validate(c.id, report, d.chain());
  EXPECT_EQ(unrecorded.status, 400) << unrecorded.body;
  EXPECT_EQ(unrecorded.code(), "invalid_argument");
  EXPECT_FALSE(db_->challenges().find(c.id).value()->used);
  EXPECT_EQ(store::testing::audit_records_of(db_->audit(), "pva", "validation"), 0u);

  store::testing::refuse_audit_records(path, false);
  expect_result(validate(c.id, report, d.chain()), c.nonce, true, d.id());
  EXPECT_TRUE(db_->challenges().find(c.id).value()->used);
  EXPECT_EQ(store::testing::audit_records_of(db_->audit(), "pva", "validation"), 1u);
}

// ---- Each failure reaches the signed result ----------------------------------------------------

TEST_F(PvaServiceTest, ARevokedPlatformCertificateFailsRevocationAtOnce) {
  Device d = registered_device();
  ASSERT_TRUE(world().supplier().revoke(d.leaf(), pki::RevocationReason::key_compromise,
                                        clock_.now() - 1s));
  const Issued c = challenge(d.id());
  const Answer v = validate(c.id, d.attest(c.nonce), d.chain());
  expect_result(v, c.nonce, false, d.id());
  EXPECT_EQ(failures_of(v.json), (Failures{{"revocation", "cert_revoked"}}));
  EXPECT_NE(service_->router().metrics().render().find("step=\"refused\""), std::string::npos);
}

TEST_F(PvaServiceTest, OtherMeasurementsThanTheReferencesAreAMeasurementMismatch) {
  Device d = device();
  std::vector<pki::Measurement> refs = golden(d);
  refs.front().sha256[0] ^= 0xff;
  ASSERT_EQ(register_references(parties().sign(refs, now())).status, 201);
  const Issued c = challenge(d.id());
  const Answer v = validate(c.id, d.attest(c.nonce), d.chain());
  expect_result(v, c.nonce, false, d.id());
  EXPECT_EQ(failures_of(v.json), (Failures{{"measurements", "measurement_mismatch"}}));
}

TEST_F(PvaServiceTest, AReportOverAnotherNonceIsANonceMismatch) {
  Device d = registered_device();
  const Issued c = challenge(d.id());
  const Answer v = validate(c.id, d.attest(ByteVec(32, 0x42)), d.chain());
  expect_result(v, c.nonce, false, d.id());
  EXPECT_EQ(failures_of(v.json), (Failures{{"nonce", "nonce_mismatch"}}));
}

TEST_F(PvaServiceTest, AReportOfAnotherDeviceThanTheChallengesFailsTheDeviceCheck) {
  Device d = registered_device();
  const Issued c = challenge("dev-someone-else");
  const Answer v = validate(c.id, d.attest(c.nonce), d.chain());
  expect_result(v, c.nonce, false, d.id());
  EXPECT_EQ(failures_of(v.json), (Failures{{"device_id", "chain_invalid"}}));
}

TEST_F(PvaServiceTest, AChainFromAnotherCaFailsTheChainAndRevocationChecks) {
  Device d = registered_device();
  // The TRE's report with a certificate for its key from the rogue root: nothing vouches for it.
  pki::CertSpec spec;
  spec.profile = pki::Profile::platform;
  spec.subject = "CN=rogue platform,O=rogue";
  spec.device_id = d.id();
  spec.model = kModel;
  pki::testing::TempDir dir;
  auto rogue = pki::Authority::create(dir / "rogue", "Rogue CA", nullptr, 30, "", world().clock(),
                                      world().rng());
  ASSERT_TRUE(rogue);
  auto cert =
      rogue->issue_for_key(spec, d.bundle.platform_key.get(), world().clock(), world().rng());
  ASSERT_TRUE(cert) << cert.error().message;
  const Issued c = challenge(d.id());
  const Answer v = validate(c.id, d.attest(c.nonce), Json::array({Json(pem_of(cert->get()))}));
  expect_result(v, c.nonce, false, d.id());
  EXPECT_EQ(failures_of(v.json),
            (Failures{{"chain", "chain_invalid"}, {"revocation", "ocsp_invalid"}}));
}

// ---- HTTP refusals: exact status and code, nothing stored changes ------------------------------

struct Bad {
  std::string what;
  std::string path;
  std::string as;  // client certificate's operator id, "" for none
  std::string body;
  int status;
  std::string code;
  std::string content_type = "application/json";
};

TEST_F(PvaServiceTest, RefusedRequestsChangeNothing) {
  Device d = registered_device();
  const Issued open = challenge(d.id());
  const Issued used = challenge(d.id());
  ASSERT_EQ(validate(used.id, d.attest(used.nonce), d.chain()).status, 200);
  const std::string report = d.attest(open.nonce);
  const Json chain = d.chain();
  auto body = [&](const std::string& id, const std::string& r, const Json& ch) {
    return Json{{"challenge_id", id}, {"report", r}, {"platform_chain", ch}}.dump();
  };
  const std::string unknown(32, 'a');
  std::string tampered = report;
  tampered.insert(1, " ");
  const std::string bad_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  const std::string older = parties().sign(golden(d), now() - 3600s);
  const std::string unsigned_refs = "{\"references\":{}}";
  std::string forged = parties().sign(golden(d), now() + 60s);
  const auto model_at = forged.find("\"" + kModel + "\"");
  ASSERT_NE(model_at, std::string::npos);
  forged[model_at + kModel.size()] = 'X';  // another model, same signature
  pki::testing::TempDir dir;
  auto other_ca = pki::Authority::create(dir / "other", "Other Supplier", nullptr, 30, "",
                                         world().clock(), world().rng());
  ASSERT_TRUE(other_ca);
  pki::CertSpec spec;
  spec.profile = pki::Profile::result_signing;
  spec.subject = "CN=other references";
  auto other_signer = other_ca->issue(spec, world().clock(), world().rng());
  ASSERT_TRUE(other_signer);
  const std::string foreign = *pki::sign_references(
      {kModel, golden(d), now() + 60s}, other_signer->key.get(), {other_signer->cert.get()});

  const std::vector<Bad> cases = {
      {"unknown challenge", "/v1/pva/validations", "sho-a", body(unknown, report, chain), 404,
       "not_found"},
      {"another SHO's challenge", "/v1/pva/validations", "sho-b", body(open.id, report, chain), 403,
       "access_denied"},
      {"a used challenge", "/v1/pva/validations", "sho-a", body(used.id, report, chain), 409,
       "transition_refused"},
      {"not an SHO", "/v1/pva/validations", "sup-1", body(open.id, report, chain), 403,
       "access_denied"},
      {"no client certificate", "/v1/pva/validations", "", body(open.id, report, chain), 401,
       "unauthenticated"},
      {"challenge id not hex32", "/v1/pva/validations", "sho-a", body("abc", report, chain), 400,
       "invalid_argument"},
      {"report not canonical", "/v1/pva/validations", "sho-a", body(open.id, tampered, chain), 400,
       "bad_format"},
      {"report not JSON", "/v1/pva/validations", "sho-a", body(open.id, "report", chain), 400,
       "bad_format"},
      {"PEM garbage", "/v1/pva/validations", "sho-a", body(open.id, report, Json::array({bad_pem})),
       400, "bad_format"},
      {"empty chain", "/v1/pva/validations", "sho-a", body(open.id, report, Json::array()), 400,
       "invalid_argument"},
      {"five certificates", "/v1/pva/validations", "sho-a",
       body(open.id, report, Json::array({chain[0], chain[0], chain[0], chain[0], chain[0]})), 400,
       "invalid_argument"},
      {"missing report", "/v1/pva/validations", "sho-a",
       Json{{"challenge_id", open.id}, {"platform_chain", chain}}.dump(), 400, "missing_argument"},
      {"unknown member", "/v1/pva/validations", "sho-a",
       Json{{"challenge_id", open.id}, {"report", report}, {"platform_chain", chain}, {"x", 1}}
           .dump(),
       400, "bad_format"},
      {"not JSON", "/v1/pva/validations", "sho-a", "{", 400, "bad_format"},
      {"challenge for a bad device id", "/v1/pva/challenges", "sho-a",
       Json{{"device_id", "a b"}}.dump(), 400, "invalid_argument"},
      {"challenge by a stranger", "/v1/pva/challenges", "vno-a", Json{{"device_id", "x"}}.dump(),
       403, "access_denied"},
      {"references by an SHO", "/v1/pva/references", "sho-a", older, 403, "access_denied"},
      {"references without certificate", "/v1/pva/references", "", older, 401, "unauthenticated"},
      {"references rolled back", "/v1/pva/references", "sup-1", older, 422, "stale_report"},
      {"references of another supplier root", "/v1/pva/references", "sup-1", foreign, 422,
       "chain_invalid"},
      {"references with a forged model", "/v1/pva/references", "sup-1", forged, 422,
       "signature_invalid"},
      {"references malformed", "/v1/pva/references", "sup-1", unsigned_refs, 400, "bad_format"},
      {"references not JSON", "/v1/pva/references", "sup-1", older, 415, "unsupported_media_type",
       "text/plain"},
  };
  const std::vector<std::string> ids = {open.id, used.id, unknown};
  const std::string before = snapshot(*db_, ids);
  for (const Bad& b : cases) {
    SCOPED_TRACE(b.what);
    const Answer a = call(*client(b.as), url(b.path), b.body, b.content_type);
    EXPECT_EQ(a.status, b.status) << a.body;
    EXPECT_EQ(a.code(), b.code) << a.body;
    EXPECT_EQ(snapshot(*db_, ids), before);
  }
  // The open challenge survived all of that and still validates.
  expect_result(validate(open.id, report, chain), open.nonce, true, d.id());
}

TEST_F(PvaServiceTest, TwoSubmissionsRacingForOneChallengeGetOneValidation) {
  Device d = registered_device();
  const Issued c = challenge(d.id());
  const std::string report = d.attest(c.nonce);
  Answer answers[2];
  std::thread other([&] { answers[1] = validate(c.id, report, d.chain()); });
  answers[0] = validate(c.id, report, d.chain());
  other.join();
  std::vector<int> statuses = {answers[0].status, answers[1].status};
  std::sort(statuses.begin(), statuses.end());
  EXPECT_EQ(statuses, (std::vector<int>{200, 409}));
  const Answer& refused = answers[0].status == 409 ? answers[0] : answers[1];
  EXPECT_EQ(refused.code(), "transition_refused");
}

TEST_F(PvaServiceTest, AnExpiredChallengeIsStaleAndStaysUnused) {
  Device d = registered_device();
  const Issued c = challenge(d.id());
  const std::string report = d.attest(c.nonce);
  clock_.advance(301s);
  const std::string before = snapshot(*db_, {c.id});
  const Answer a = validate(c.id, report, d.chain());
  EXPECT_EQ(a.status, 422) << a.body;
  EXPECT_EQ(a.code(), "stale_report");
  EXPECT_EQ(snapshot(*db_, {c.id}), before);
}

TEST_F(PvaServiceTest, NewerReferencesReplaceOlderOnes) {
  Device d = device();
  std::vector<pki::Measurement> wrong = golden(d);
  wrong.back().sha256[5] ^= 1;
  ASSERT_EQ(register_references(parties().sign(wrong, now() - 60s)).status, 201);
  const auto issued = now();
  ASSERT_EQ(register_references(parties().sign(golden(d), issued)).status, 201);
  auto all = db_->references().all();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().issued, issued);
  const Issued c = challenge(d.id());
  expect_result(validate(c.id, d.attest(c.nonce), d.chain()), c.nonce, true, d.id());
}

// ---- OCSP --------------------------------------------------------------------------------------

TEST_F(PvaServiceTest, TheOcspResponderAnswersAnyoneOverPostAndGet) {
  Device d = device();
  X509* issuer = world().supplier().cert();
  auto anonymous = client("");
  auto ask = [&](bool post) -> Result<pki::RevocationAnswer> {
    ByteVec nonce;
    OsRandom rng;
    auto request = pki::make_ocsp_request(d.leaf(), issuer, rng, &nonce);
    EXPECT_TRUE(request);
    auto r =
        post ? anonymous->request("POST", url("/v1/ocsp"),
                                  std::string_view(reinterpret_cast<const char*>(request->data()),
                                                   request->size()),
                                  "application/ocsp-request")
             : anonymous->get(url("/v1/ocsp/" + url_encode(base64(*request))));
    EXPECT_TRUE(r) << r.error().message;
    if (!r) return std::unexpected(r.error());
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->content_type, "application/ocsp-response");
    const ByteVec der(r->body.begin(), r->body.end());
    return pki::verify_ocsp_response(der, d.leaf(), issuer, &nonce, clock_);
  };
  for (bool post : {true, false}) {
    auto good = ask(post);
    ASSERT_TRUE(good) << good.error().message;
    EXPECT_EQ(good->status, pki::CertStatus::good);
  }
  ASSERT_TRUE(
      world().supplier().revoke(d.leaf(), pki::RevocationReason::unspecified, clock_.now() - 1s));
  for (bool post : {true, false}) {
    auto revoked = ask(post);
    ASSERT_TRUE(revoked) << revoked.error().message;
    EXPECT_EQ(revoked->status, pki::CertStatus::revoked);
  }
}

// ---- Restart and configuration ------------------------------------------------------------------

TEST_F(PvaServiceTest, ReferencesSurviveARestartOnTheSameSqliteFile) {
  stop();
  pki::testing::TempDir dir;
  const std::string db_url = "sqlite:" + (dir / "pva.db");
  ASSERT_NO_FATAL_FAILURE(start(db_url));
  Device d = registered_device();
  stop();
  db_.reset();
  ASSERT_NO_FATAL_FAILURE(start(db_url));
  const Issued c = challenge(d.id());
  expect_result(validate(c.id, d.attest(c.nonce), d.chain()), c.nonce, true, d.id());
  // And the rollback protection survived with them.
  const Answer older = register_references(parties().sign(golden(d), now() - 3600s));
  EXPECT_EQ(older.status, 422) << older.body;
  EXPECT_EQ(older.code(), "stale_report");
}

TEST_F(PvaServiceTest, AStoredSetThatNoLongerVerifiesIsSkippedAtStart) {
  Device d = registered_device();
  auto all = db_->references().all();
  ASSERT_TRUE(all && all->size() == 1u);
  store::StoredReferences broken = all->front();
  broken.text.back() = broken.text.back() == '}' ? ' ' : '}';  // no longer canonical
  ASSERT_TRUE(db_->references().put(broken));
  stop();
  ASSERT_NO_FATAL_FAILURE(start_service());
  const Issued c = challenge(d.id());
  const Answer v = validate(c.id, d.attest(c.nonce), d.chain());
  expect_result(v, c.nonce, false, d.id());
  EXPECT_EQ(failures_of(v.json), (Failures{{"measurements", "measurement_mismatch"}}));
}

TEST_F(PvaServiceTest, AnUnusableConfigurationIsRefusedNamingTheField) {
  struct Case {
    std::string field;
    std::function<void(PvaServiceConfig&)> change;
    ErrorCode code;
  };
  const std::vector<Case> cases = {
      {"operator_id", [](PvaServiceConfig& c) { c.operator_id.clear(); },
       ErrorCode::missing_argument},
      {"supplier_roots", [](PvaServiceConfig& c) { c.supplier_roots.reset(); },
       ErrorCode::missing_argument},
      {"result_signer", [](PvaServiceConfig& c) { c.result_signer.reset(); },
       ErrorCode::missing_argument},
      {"supplier_ca_dir", [](PvaServiceConfig& c) { c.supplier_ca_dir.clear(); },
       ErrorCode::missing_argument},
      {"ocsp_signer_prefix", [](PvaServiceConfig& c) { c.ocsp_signer_prefix.clear(); },
       ErrorCode::missing_argument},
      {"challenge_lifetime", [](PvaServiceConfig& c) { c.challenge_lifetime = 0s; },
       ErrorCode::invalid_argument},
  };
  for (const Case& k : cases) {
    PvaServiceConfig c = config();
    k.change(c);
    auto s = PvaService::create(*db_, std::move(c), clock_);
    ASSERT_FALSE(s) << k.field;
    EXPECT_EQ(s.error().code, k.code) << k.field;
    EXPECT_TRUE(s.error().message.starts_with(k.field)) << s.error().message;
  }
  PvaServiceConfig c = config();
  c.ocsp_signer_prefix = world().path("no-such-signer");
  EXPECT_FALSE(PvaService::create(*db_, std::move(c), clock_));
}

// ---- Concurrency: registrations swap the validator under running validations -------------------

TEST_F(PvaServiceTest, ReferencesRegisteredWhileValidatingDoNotRace) {
  Device d = device();
  const std::vector<pki::Measurement> refs = golden(d);
  ASSERT_EQ(register_references(parties().sign(refs, now() - 1000s)).status, 201);
  std::atomic<bool> done{false};
  std::thread registrar([&] {
    for (int i = 1; i <= 10; ++i) {
      EXPECT_EQ(
          register_references(parties().sign(refs, now() - 1000s + std::chrono::seconds(i))).status,
          201);
    }
    done = true;
  });
  int validations = 0;
  while (!done || validations < 3) {
    const Issued c = challenge(d.id());
    expect_result(validate(c.id, d.attest(c.nonce), d.chain()), c.nonce, true, d.id());
    ++validations;
  }
  registrar.join();
}

}  // namespace
}  // namespace mcim::pva
