// The supplier's HTTPS service (F0 over the wire) against a fake RO: a real mTLS server that opens
// each batch with the ICF's key (pki profile encryption) as the RO does. Covered: an order
// manufactures bundles (0600, decodable, consecutive PCIDs) and the RO gets exactly their PCID
// credentials; an unreachable or refusing RO leaves a failed handover that a retry completes;
// refusals (duplicate id, bad bodies, identities, concurrency) answer their exact status and code
// and leave the output directory and the CA untouched; a restart keeps batches and drops
// half-written ones; logs carry no K, OPc or PIN.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "../net/net_test_util.h"
#include "../tre/tre_fixture.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/log.h"
#include "pki/certificate.h"
#include "roles/supplier/ccif.h"
#include "roles/supplier/service.h"

namespace mcim::supplier {
namespace {

namespace fs = std::filesystem;
using net::HttpResponse;
using net::Json;
using net::testing::make_client;
using net::testing::start_server;
using net::testing::TestPki;
using net::testing::tls_options;

constexpr std::string_view kAdmin = "sup-admin";

// The supplier's side of the world: its CA (tre World), a batch signer for sup-1, and the ICF's
// encryption certificate from the operators' root.
class SupplierPki {
 public:
  SupplierPki() {
    SystemClock clock;
    OsRandom rng;
    pki::CertSpec signing;
    signing.profile = pki::Profile::package_signing;
    signing.subject = "CN=batch signer,O=supplier";
    signing.sans = {"URI:urn:mcim:supplier:sup-1"};
    auto s = world.supplier().issue(signing, clock, rng);
    EXPECT_TRUE(s.has_value()) << s.error().message;
    auto kp = std::make_shared<pki::KeyPair>();
    kp->key = std::move(s->key);
    kp->certs.push_back(std::move(s->cert));
    signer = kp;
    pki::CertSpec enc;
    enc.profile = pki::Profile::encryption;
    enc.subject = "CN=icf batch key,O=ro-1";
    enc.sans = {"URI:urn:mcim:operator:ro-1"};
    auto icf = world.operators().issue(enc, clock, rng);
    EXPECT_TRUE(icf.has_value()) << icf.error().message;
    icf_cert = std::move(icf->cert);
    icf_key = std::move(icf->key);
    supplier_roots.emplace(std::move(*pki::TrustAnchors::from_certs({world.supplier().cert()})));
    TestPki::get().operator_client(std::string(kAdmin));
    TestPki::get().operator_client("sup-1");
  }

  tre::testing::World world;
  std::shared_ptr<const pki::KeyPair> signer;
  pki::X509Ptr icf_cert;
  pki::PkeyPtr icf_key;
  std::optional<pki::TrustAnchors> supplier_roots;
};

// The RO's POST /v1/icf/batches as the supplier needs it: mTLS required, Content-Type
// application/cms, the batch opened with the ICF key; 201 {"batch_id","supplier","imported"}.
class FakeRo {
 public:
  enum class Mode { accept, refuse, hold };

  explicit FakeRo(const SupplierPki& pki) : pki_(pki) {}
  ~FakeRo() {
    release();
    stop();
  }

  void start(std::uint16_t port = 0) {
    net::HttpServerOptions o;
    o.port = port;
    o.body_limit = 16 * 1024 * 1024;
    server_ = start_server([this](const net::HttpRequest& r) { return handle(r); },
                           tls_options(net::ClientAuth::required), o);
    ASSERT_NE(server_, nullptr);
    url_ = server_->url();
    port_ = server_->port();
  }
  void stop() { server_.reset(); }
  const std::string& url() const { return url_; }
  std::uint16_t port() const { return port_; }

  void set_mode(Mode m) { mode_ = m; }
  // Mode::hold: blocks until a request is being held.
  void wait_held() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return held_; });
  }
  void release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

  std::vector<PcidBatch> received() const {
    std::lock_guard lock(mu_);
    return received_;
  }
  int requests() const { return requests_; }
  std::string peer() const {
    std::lock_guard lock(mu_);
    return peer_;
  }

 private:
  HttpResponse handle(const net::HttpRequest& r) {
    ++requests_;
    if (r.method != "POST" || r.target != "/v1/icf/batches") {
      return net::error_response(404, "not_found", "no such path");
    }
    if (r.content_type != "application/cms") {
      return net::error_response(415, net::kUnsupportedMediaType, "body: application/cms");
    }
    if (mode_ == Mode::hold) {
      std::unique_lock lock(mu_);
      held_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_; });
    }
    if (mode_ == Mode::refuse) {
      return net::error_response(409, "already_exists", "batch already imported");
    }
    const ByteView body(reinterpret_cast<const std::uint8_t*>(r.body.data()), r.body.size());
    SystemClock clock;
    auto batch =
        open_batch(body, pki_.icf_cert.get(), pki_.icf_key.get(), *pki_.supplier_roots, clock);
    if (!batch) return net::error_response(batch.error());
    std::lock_guard lock(mu_);
    if (const std::string* id = r.peer.operator_id()) peer_ = *id;
    received_.push_back(*batch);
    return net::json_response(201, {{"batch_id", batch->batch_id},
                                    {"supplier", batch->supplier_id},
                                    {"imported", batch->records.size()}});
  }

  const SupplierPki& pki_;
  std::unique_ptr<net::HttpServer> server_;
  std::string url_;
  std::uint16_t port_ = 0;
  std::atomic<Mode> mode_{Mode::accept};
  std::atomic<int> requests_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false, released_ = false;
  std::vector<PcidBatch> received_;
  std::string peer_;
};

// What a call that got no answer returns: no status to mistake for a success.
HttpResponse failed_call() {
  HttpResponse r;
  r.status = 0;
  return r;
}

std::string error_code(const HttpResponse& r) {
  const auto j = Json::parse(r.body, nullptr, false);
  if (!j.is_object() || !j.contains("error") || !j["error"].is_object()) return "";
  return j["error"].value("code", "");
}

Json body_of(const HttpResponse& r) {
  auto j = Json::parse(r.body, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.body;
  return j;
}

std::string order(std::string_view id, std::string_view first, int count) {
  return Json{{"batch_id", id}, {"first_pcid", first}, {"count", count}}.dump();
}

// Every file under `dir`: its content and mode, to prove that a refusal changed nothing.
std::map<std::string, std::pair<std::string, unsigned>> snapshot(const std::string& dir) {
  std::map<std::string, std::pair<std::string, unsigned>> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    ::lstat(it->path().c_str(), &st);
    std::string content;
    if (it->is_regular_file()) content = *read_text_file(it->path().string());
    out[it->path().string()] = {content, st.st_mode};
  }
  return out;
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

class SupplierServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new SupplierPki(); }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }
  static SupplierPki& pki() { return *pki_; }

  void SetUp() override {
    log::set_sink([this](std::string_view line) {
      std::lock_guard lock(log_mu_);
      log_.emplace_back(line);
    });
  }
  void TearDown() override {
    clients_.clear();
    server_.reset();
    service_.reset();
    log::set_sink(nullptr);
  }

  SupplierServiceConfig config(const std::string& icf_url) {
    SupplierServiceConfig c;
    c.supplier_id = "sup-1";
    c.admins = {std::string(kAdmin)};
    auto ca = pki::Authority::open(pki().world.supplier().dir());
    EXPECT_TRUE(ca.has_value());
    c.ca = std::make_shared<const pki::Authority>(std::move(*ca));
    c.signer = pki().signer;
    X509_up_ref(pki().icf_cert.get());
    c.icf_cert.reset(pki().icf_cert.get());
    c.icf_url = icf_url;
    net::HttpsClientOptions o;
    o.trust = TestPki::get().anchors();
    o.identity = TestPki::get().operator_client("sup-1").identity;
    o.connect_timeout = std::chrono::milliseconds(2'000);
    c.ro_client = std::shared_ptr<net::HttpsClient>(std::move(*net::HttpsClient::create(o)));
    c.out_dir = out_.path() + "/batches";
    c.device_template.ro_operator = "ro-1";
    c.device_template.op = Secret<16>(tre::testing::kOp);
    c.device_template.operator_roots = {pki().world.operators().cert()};
    return c;
  }

  // The service behind a TLS server whose client certificates are optional, so that the router
  // answers a caller without one (401) instead of the handshake.
  void start_service(const std::string& icf_url) {
    clients_.clear();
    server_.reset();
    service_.reset();
    auto s = SupplierService::create(config(icf_url), clock_);
    ASSERT_TRUE(s.has_value()) << s.error().message;
    service_ = std::move(*s);
    net::HttpServerOptions o;
    // A handler held up by the RO blocks its worker: the others serve the remaining callers.
    o.threads = 3;
    server_ = start_server(service_->handler(), tls_options(net::ClientAuth::optional), o);
    ASSERT_NE(server_, nullptr);
  }

  HttpResponse call(std::string_view method, std::string_view path, std::string_view body = {},
                    std::string_view client = kAdmin,
                    std::string_view content_type = "application/json") {
    // Kept per identity: a kept-alive connection stays on its worker thread.
    auto& c = clients_[std::string(client)];
    if (!c) c = make_client(std::string(client));
    auto r = c->request(method, server_->url() + std::string(path), body,
                        body.empty() ? std::string_view() : content_type);
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return r ? *r : failed_call();
  }
  HttpResponse post_order(std::string_view id, std::string_view first, int count) {
    return call("POST", "/v1/batches", order(id, first, count));
  }

  std::string batch_dir(std::string_view id) const {
    return out_.path() + "/batches/" + std::string(id);
  }
  std::size_t issued() const { return pki().world.supplier().index()->size(); }
  std::vector<std::string> log_lines() {
    std::lock_guard lock(log_mu_);
    return log_;
  }

  static SupplierPki* pki_;
  SystemClock clock_;
  pki::testing::TempDir out_;
  std::unique_ptr<SupplierService> service_;
  std::unique_ptr<net::HttpServer> server_;
  std::map<std::string, std::unique_ptr<net::HttpsClient>> clients_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

SupplierPki* SupplierServiceTest::pki_ = nullptr;

// F8: an order may give its batch's PCID lifetime; the bundles and the ICF's records carry it.
TEST_F(SupplierServiceTest, AnOrderSetsItsBatchsPcidLifetime) {
  FakeRo ro(pki());
  ro.start();
  start_service(ro.url());
  const auto before = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  const HttpResponse r =
      call("POST", "/v1/batches",
           R"({"batch_id":"b-days","first_pcid":"001010000000200","count":1,"pcid_days":2})");
  ASSERT_EQ(r.status, 201) << r.body;
  auto b = tre::read_bundle(batch_dir("b-days") + "/bundles/dev-001010000000200.bundle");
  ASSERT_TRUE(b.has_value()) << b.error().message;
  EXPECT_GE(b->pcid_not_after, before + std::chrono::hours(48));
  EXPECT_LE(b->pcid_not_after, before + std::chrono::hours(48) + std::chrono::minutes(5));
  const auto received = ro.received();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].records.at(0).not_after, b->pcid_not_after);
}

TEST_F(SupplierServiceTest, OrderManufacturesBundlesAndHandsTheBatchToTheIcf) {
  FakeRo ro(pki());
  ro.start();
  start_service(ro.url());
  const HttpResponse r = post_order("b-1", "001010000000098", 4);  // 98, 99, 100, 101
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(body_of(r), Json::parse(R"({"batch_id":"b-1","devices":4,"first_pcid":"001010000000098",
      "last_pcid":"001010000000101","handover":"done","imported":4})"));

  // One bundle per device, secret (0600), decodable, in PCID order.
  const std::vector<std::string> pcids = {"001010000000098", "001010000000099", "001010000000100",
                                          "001010000000101"};
  std::vector<tre::SupplierBundle> bundles;
  EXPECT_EQ(mode_of(batch_dir("b-1")), 0700u);
  for (const std::string& pcid : pcids) {
    const std::string path = batch_dir("b-1") + "/bundles/dev-" + pcid + ".bundle";
    EXPECT_EQ(mode_of(path), 0600u);
    auto b = tre::read_bundle(path);
    ASSERT_TRUE(b.has_value()) << b.error().message;
    EXPECT_EQ(b->pcid, pcid);
    EXPECT_EQ(b->ro_operator, "ro-1");
    bundles.push_back(std::move(*b));
  }
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(batch_dir("b-1") + "/bundles")) files += !!e.exists();
  EXPECT_EQ(files, 4u);

  // The RO got exactly those PCIDs with the devices' K and OPc, from supplier sup-1 over mTLS.
  const auto received = ro.received();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].batch_id, "b-1");
  EXPECT_EQ(received[0].supplier_id, "sup-1");
  EXPECT_EQ(received[0].ro_operator, "ro-1");
  EXPECT_EQ(ro.peer(), "sup-1");
  ASSERT_EQ(received[0].records.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(received[0].records[i].pcid, pcids[i]);
    EXPECT_EQ(received[0].records[i].k.get(), bundles[i].k.get());
    EXPECT_EQ(received[0].records[i].opc.get(), bundles[i].opc.get());
  }

  // The stored sealed batch is what the RO opened; state.json is what GET answers.
  auto sealed = read_file(batch_dir("b-1") + "/batch.cms");
  ASSERT_TRUE(sealed.has_value());
  auto reopened =
      open_batch(*sealed, pki().icf_cert.get(), pki().icf_key.get(), *pki().supplier_roots, clock_);
  ASSERT_TRUE(reopened.has_value()) << reopened.error().message;
  EXPECT_EQ(reopened->records.size(), 4u);
  const Json state = Json::parse(*read_text_file(batch_dir("b-1") + "/state.json"));
  EXPECT_EQ(state["handover"], "done");
  EXPECT_EQ(state["imported"], 4);
  EXPECT_TRUE(state["created"].is_string());
  EXPECT_FALSE(state.contains("error"));
  const HttpResponse got = call("GET", "/v1/batches/b-1");
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(body_of(got), state);

  const std::string metrics = service_->router().metrics().render();
  EXPECT_NE(metrics.find(R"(mcim_flow_steps_total{step="batch_manufactured"} 1)"),
            std::string::npos);
  EXPECT_NE(metrics.find(R"(mcim_flow_steps_total{step="batch_handed_over"} 1)"),
            std::string::npos);

  // The log tells the story with ids and counts, never a K, an OPc or a PIN.
  const auto lines = log_lines();
  const auto logged = [&](std::string_view what) {
    return std::any_of(lines.begin(), lines.end(),
                       [&](const std::string& l) { return l.find(what) != std::string::npos; });
  };
  EXPECT_TRUE(logged("info supplier: batch b-1 manufactured: 4 devices"));
  EXPECT_TRUE(logged("info supplier: batch b-1 handed over to the RO: 4 PCIDs imported"));
  for (const tre::SupplierBundle& b : bundles) {
    const std::string pin(tre::pin_text(b));
    for (const std::string& secret : {to_hex(b.k.get()), to_hex(b.opc.get()), pin}) {
      EXPECT_FALSE(logged(secret)) << "a secret was logged";
    }
  }
}

TEST_F(SupplierServiceTest, UnreachableRoLeavesAFailedHandoverThatARetryCompletes) {
  FakeRo ro(pki());
  ro.start();
  const std::uint16_t port = ro.port();
  ro.stop();
  start_service(ro.url());
  const HttpResponse r = post_order("b-down", "001010000000001", 2);
  ASSERT_EQ(r.status, 201) << r.body;
  Json answer = body_of(r);
  EXPECT_EQ(answer["handover"], "failed");
  EXPECT_EQ(answer["error"]["code"], "io_error");
  EXPECT_EQ(answer["error"]["message"].get<std::string>().rfind("ro: ", 0), 0u);
  EXPECT_FALSE(answer.contains("imported"));
  EXPECT_EQ(answer["devices"], 2);
  EXPECT_EQ(body_of(call("GET", "/v1/batches/b-down"))["handover"], "failed");
  EXPECT_EQ(mode_of(batch_dir("b-down") + "/bundles/dev-001010000000002.bundle"), 0600u);

  // Still down: another failure, nothing lost.
  HttpResponse retry = call("POST", "/v1/batches/b-down/handover");
  ASSERT_EQ(retry.status, 200) << retry.body;
  EXPECT_EQ(body_of(retry)["handover"], "failed");

  ro.start(port);
  retry = call("POST", "/v1/batches/b-down/handover", "{}");
  ASSERT_EQ(retry.status, 200) << retry.body;
  const Json done = body_of(retry);
  EXPECT_EQ(done["handover"], "done");
  EXPECT_EQ(done["imported"], 2);
  EXPECT_FALSE(done.contains("error"));
  EXPECT_TRUE(done["created"].is_string());
  EXPECT_EQ(body_of(call("GET", "/v1/batches/b-down")), done);
  ASSERT_EQ(ro.received().size(), 1u);
  EXPECT_EQ(ro.received()[0].records.size(), 2u);

  // Done is final: a second handover is refused and changes nothing.
  const auto before = snapshot(out_.path());
  const HttpResponse again = call("POST", "/v1/batches/b-down/handover");
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_EQ(error_code(again), "transition_refused");
  EXPECT_EQ(snapshot(out_.path()), before);
  EXPECT_EQ(ro.received().size(), 1u);
}

TEST_F(SupplierServiceTest, RoRefusalIsRecordedWithItsCode) {
  FakeRo ro(pki());
  ro.start();
  ro.set_mode(FakeRo::Mode::refuse);
  start_service(ro.url());
  const HttpResponse r = post_order("b-refused", "001010000000200", 1);
  ASSERT_EQ(r.status, 201) << r.body;
  const Json answer = body_of(r);
  EXPECT_EQ(answer["handover"], "failed");
  EXPECT_EQ(answer["error"],
            Json::parse(R"({"code":"already_exists","message":"ro: batch already imported"})"));
  const Json state = Json::parse(*read_text_file(batch_dir("b-refused") + "/state.json"));
  EXPECT_EQ(state["handover"], "failed");
  EXPECT_EQ(state["error"]["code"], "already_exists");
  EXPECT_TRUE(ro.received().empty());
  EXPECT_NE(service_->router().metrics().render().find(
                R"(mcim_flow_steps_total{step="batch_manufactured"} 1)"),
            std::string::npos);
}

TEST_F(SupplierServiceTest, ExistingBatchIdIsRefusedAndNothingChanges) {
  FakeRo ro(pki());
  ro.start();
  start_service(ro.url());
  ASSERT_EQ(post_order("b-dup", "001010000000300", 2).status, 201);
  const auto before = snapshot(out_.path());
  const std::size_t certificates = issued();
  const int requests = ro.requests();
  const HttpResponse r = post_order("b-dup", "001010000000400", 3);
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(error_code(r), "already_exists");
  EXPECT_EQ(snapshot(out_.path()), before);
  EXPECT_EQ(issued(), certificates);
  EXPECT_EQ(ro.requests(), requests);
}

TEST_F(SupplierServiceTest, BadOrdersAreRefusedWithoutADirectoryOrACertificate) {
  FakeRo ro(pki());
  ro.start();
  start_service(ro.url());
  const auto before = snapshot(out_.path());
  const std::size_t certificates = issued();
  struct Case {
    const char* what;
    std::string body;
    int status;
    const char* code;
    std::string client = std::string(kAdmin);
    std::string content_type = "application/json";
  };
  const std::vector<Case> cases = {
      {"malformed JSON", R"({"batch_id":"b-x","first_pcid":)", 400, "bad_format"},
      {"not an object", "[]", 400, "bad_format"},
      {"count as a string", R"({"batch_id":"b-x","first_pcid":"001010000000001","count":"2"})", 400,
       "bad_format"},
      {"pcid as a number", R"({"batch_id":"b-x","first_pcid":1010000000001,"count":2})", 400,
       "bad_format"},
      {"null", R"({"batch_id":"b-x","first_pcid":"001010000000001","count":null})", 400,
       "bad_format"},
      {"unknown member",
       R"({"batch_id":"b-x","first_pcid":"001010000000001","count":2,"pin":"1234"})", 400,
       "bad_format"},
      {"repeated member",
       R"({"batch_id":"b-x","batch_id":"b-y","first_pcid":"001010000000001","count":2})", 400,
       "bad_format"},
      {"missing count", R"({"batch_id":"b-x","first_pcid":"001010000000001"})", 400,
       "missing_argument"},
      {"count 0", order("b-x", "001010000000001", 0), 400, "invalid_argument"},
      {"count 10001", order("b-x", "001010000000001", 10001), 400, "invalid_argument"},
      {"count 1.5", R"({"batch_id":"b-x","first_pcid":"001010000000001","count":1.5})", 400,
       "bad_format"},
      {"pcid_days 0",
       R"({"batch_id":"b-x","first_pcid":"001010000000001","count":1,"pcid_days":0})", 400,
       "invalid_argument"},
      {"pcid_days 3651",
       R"({"batch_id":"b-x","first_pcid":"001010000000001","count":1,"pcid_days":3651})", 400,
       "invalid_argument"},
      {"pcid_days a string",
       R"({"batch_id":"b-x","first_pcid":"001010000000001","count":1,"pcid_days":"1"})", 400,
       "bad_format"},
      {"pcid of 5 digits", order("b-x", "12345", 1), 400, "invalid_argument"},
      {"pcid of 16 digits", order("b-x", "0010100000000001", 1), 400, "invalid_argument"},
      {"pcid with a letter", order("b-x", "00101000000000a", 1), 400, "invalid_argument"},
      {"range past its digits", order("b-x", "999998", 3), 400, "invalid_argument"},
      {"batch id with a space", order("b x", "001010000000001", 1), 400, "invalid_argument"},
      {"batch id ..", order("..", "001010000000001", 1), 400, "invalid_argument"},
      {"batch id with a slash", order("a/b", "001010000000001", 1), 400, "invalid_argument"},
      {"batch id too long", order(std::string(65, 'b'), "001010000000001", 1), 400,
       "invalid_argument"},
      {"oversize body", order("b-x", "001010000000001", 1) + std::string(2000, ' '), 413,
       "payload_too_large"},
      {"not JSON", order("b-x", "001010000000001", 1), 415, "unsupported_media_type",
       std::string(kAdmin), "text/plain"},
      {"no certificate", order("b-x", "001010000000001", 1), 401, "unauthenticated", ""},
      {"not an admin", order("b-x", "001010000000001", 1), 403, "access_denied", "vno-a"},
  };
  for (const Case& c : cases) {
    const HttpResponse r = call("POST", "/v1/batches", c.body, c.client, c.content_type);
    EXPECT_EQ(r.status, c.status) << c.what << ": " << r.body;
    EXPECT_EQ(error_code(r), c.code) << c.what << ": " << r.body;
    EXPECT_EQ(r.body.find("1234"), std::string::npos) << c.what;  // no value echoed
  }
  EXPECT_EQ(snapshot(out_.path()), before);
  EXPECT_TRUE(fs::is_empty(out_.path() + "/batches"));
  EXPECT_EQ(issued(), certificates);
  EXPECT_EQ(ro.requests(), 0);
}

TEST_F(SupplierServiceTest, UnknownBatchesAndOtherCallers) {
  FakeRo ro(pki());
  ro.start();
  start_service(ro.url());
  HttpResponse r = call("GET", "/v1/batches/nothing-here");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(error_code(r), "not_found");
  r = call("POST", "/v1/batches/nothing-here/handover");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(error_code(r), "not_found");
  r = call("GET", "/v1/batches/..");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(error_code(r), "invalid_argument");
  r = call("POST", "/v1/batches/nothing-here/handover", R"({"force":true})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(error_code(r), "bad_format");

  ASSERT_EQ(post_order("b-mine", "001010000000500", 1).status, 201);
  r = call("GET", "/v1/batches/b-mine", {}, "vno-a");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(error_code(r), "access_denied");
  r = call("GET", "/v1/batches/b-mine", {}, "");
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_EQ(error_code(r), "unauthenticated");
  r = call("POST", "/v1/batches/b-mine/handover", {}, "vno-a");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(error_code(r), "access_denied");
  EXPECT_EQ(ro.requests(), 1);
}

TEST_F(SupplierServiceTest, OneBatchAtATime) {
  FakeRo ro(pki());
  ro.start();
  ro.set_mode(FakeRo::Mode::hold);
  start_service(ro.url());
  auto first = std::async(std::launch::async, [&] {
    auto own = make_client(std::string(kAdmin));
    auto r = own->request("POST", server_->url() + "/v1/batches",
                          order("b-first", "001010000000600", 1), "application/json");
    return r ? *r : failed_call();
  });
  ro.wait_held();  // b-first is manufactured and stored; its handover is in flight

  HttpResponse r = post_order("b-second", "001010000000700", 1);
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(error_code(r), "busy");
  bool retry_after = false;
  for (const auto& [name, value] : r.headers) retry_after |= name == "Retry-After" && value == "1";
  EXPECT_TRUE(retry_after);
  r = call("POST", "/v1/batches/b-first/handover");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(error_code(r), "busy");
  r = call("GET", "/v1/batches/b-first");  // reads are never held up
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r)["handover"], "pending");

  ro.release();
  const HttpResponse done = first.get();
  ASSERT_EQ(done.status, 201) << done.body;
  EXPECT_EQ(body_of(done)["handover"], "done");
  EXPECT_FALSE(fs::exists(batch_dir("b-second")));
  ro.set_mode(FakeRo::Mode::accept);
  EXPECT_EQ(post_order("b-second", "001010000000700", 1).status, 201);
}

TEST_F(SupplierServiceTest, RestartKeepsBatchesAndDropsHalfWrittenOnes) {
  FakeRo ro(pki());
  ro.start();
  const std::uint16_t port = ro.port();
  ro.stop();
  start_service(ro.url());
  ASSERT_EQ(body_of(post_order("b-kept", "001010000000800", 2))["handover"], "failed");
  server_.reset();
  service_.reset();

  // A crash between the first bundle and state.json.
  const std::string half = batch_dir("b-half");
  fs::create_directories(half + "/bundles");
  ASSERT_TRUE(write_file_atomic(half + "/bundles/dev-001010000000900.bundle", "x", 0600));
  ASSERT_TRUE(write_file_atomic(half + "/batch.cms.tmp", "x", 0600));
  ASSERT_TRUE(write_file_atomic(out_.path() + "/batches/notes.txt", "not a batch"));
  // Somebody's directory without state.json: not ours to delete.
  const std::string foreign = batch_dir("archive");
  fs::create_directories(foreign + "/bundles");
  ASSERT_TRUE(write_file_atomic(foreign + "/README", "keep me"));

  start_service(ro.url());
  EXPECT_FALSE(fs::exists(half));
  EXPECT_TRUE(fs::exists(out_.path() + "/batches/notes.txt"));
  EXPECT_TRUE(fs::exists(foreign + "/README"));
  EXPECT_EQ(post_order("archive", "001010000000950", 1).status, 409);
  HttpResponse r = call("GET", "/v1/batches/b-half");
  EXPECT_EQ(r.status, 404) << r.body;
  r = call("GET", "/v1/batches/notes.txt");
  EXPECT_EQ(r.status, 404) << r.body;
  r = call("GET", "/v1/batches/b-kept");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r)["handover"], "failed");

  ro.start(port);
  r = call("POST", "/v1/batches/b-kept/handover");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body_of(r)["handover"], "done");
  r = post_order("b-half", "001010000000900", 1);  // the id is free again
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(body_of(r)["handover"], "done");
  EXPECT_EQ(ro.received().size(), 2u);
}

TEST_F(SupplierServiceTest, UnusableConfigurationsAreRefused) {
  const auto expect_refused = [&](SupplierServiceConfig c, ErrorCode code, std::string_view field) {
    auto s = SupplierService::create(std::move(c), clock_);
    ASSERT_FALSE(s.has_value()) << field;
    EXPECT_EQ(s.error().code, code) << s.error().message;
    EXPECT_EQ(s.error().message.rfind(std::string(field) + ":", 0), 0u) << s.error().message;
  };
  const std::string url = "https://127.0.0.1:1";
  SupplierServiceConfig c = config(url);
  c.supplier_id = "sup-2";  // the signer names sup-1
  expect_refused(std::move(c), ErrorCode::invalid_argument, "signer");
  c = config(url);
  c.admins.clear();
  expect_refused(std::move(c), ErrorCode::missing_argument, "admins");
  c = config(url);
  c.icf_cert.reset(X509_dup(pki().signer->cert()));  // no keyAgreement
  expect_refused(std::move(c), ErrorCode::invalid_argument, "icf_cert");
  c = config("http://127.0.0.1:1");
  expect_refused(std::move(c), ErrorCode::invalid_argument, "icf_url");
  c = config(url);
  c.ro_client.reset();
  expect_refused(std::move(c), ErrorCode::missing_argument, "ro_client");
  c = config(url);
  c.device_template.pin = "12345678";
  expect_refused(std::move(c), ErrorCode::invalid_argument, "device_template");
  c = config(url);
  c.device_template.operator_roots.clear();
  expect_refused(std::move(c), ErrorCode::missing_argument, "device_template.operator_roots");
  EXPECT_FALSE(fs::exists(out_.path() + "/batches"));
}

}  // namespace
}  // namespace mcim::supplier
