// A selected home operator for tests that provision a device over the real RO service: on the
// RO's arrival notice it places an attestation request at the DPF; on the relayed attestation it
// seals a package for kImsi to the TRE's platform certificate (registration nonce kNonce) and
// imports the IMSI, dormant, into its AuC (an ro::Icf behind ro::add_auth_routes on a database of
// its own); on the status report it activates the IMSI. Shared by tests/device/agent_test.cpp and
// tests/interop/eap_interop_test.cpp (F2 and F3 end the same way). Thread-safe.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "../net/net_test_util.h"
#include "../tre/tre_fixture.h"
#include "common/hex.h"
#include "net/http_error.h"
#include "net/router.h"
#include "pki/attestation.h"
#include "pki/openssl.h"
#include "roles/ro/auth_routes.h"
#include "roles/ro/icf.h"
#include "roles/ro/service.h"
#include "store/store.h"

namespace mcim::device::testing {

using namespace std::chrono_literals;
using net::Json;
using net::testing::TestPki;
using tre::testing::World;

inline constexpr std::string_view kRo = "ro-1";
inline const std::string kImsi = "001020000000007";  // sho-a's MCIM for the device
inline const std::string kImsiRange = "00102";
inline constexpr Bytes<16> kNonce = {7, 7, 7, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
inline std::shared_ptr<net::HttpsClient> operator_client(const std::string& id) {
  net::HttpsClientOptions o;
  o.identity = TestPki::get().operator_client(id).identity;
  return net::testing::make_client("", std::move(o));
}

// The RO's service configuration of these tests: operator kRo, roaming partner vno-a, supplier
// sup-1 with the world's roots, an ICF batch key from the operators' CA, sho-a at `sho_url`.
inline Result<ro::RoServiceConfig> ro_config(World& world, const std::string& sho_url) {
  ro::RoServiceConfig c;
  c.operator_id = kRo;
  c.roaming_partners = {"vno-a"};
  c.suppliers = {"sup-1"};
  auto suppliers = pki::TrustAnchors::from_certs({world.supplier().cert()});
  if (!suppliers) return std::unexpected(suppliers.error());
  auto operators = pki::TrustAnchors::from_certs({world.operators().cert()});
  if (!operators) return std::unexpected(operators.error());
  c.supplier_roots = std::make_shared<const pki::TrustAnchors>(std::move(*suppliers));
  c.operator_roots = std::make_shared<const pki::TrustAnchors>(std::move(*operators));
  pki::CertSpec spec;
  spec.profile = pki::Profile::encryption;
  spec.subject = "CN=icf batch key,O=ro-1";
  spec.sans = {"URI:urn:mcim:operator:" + std::string(kRo)};
  auto icf = world.operators().issue(spec, world.clock(), world.rng());
  if (!icf) return std::unexpected(icf.error());
  auto key = std::make_shared<pki::KeyPair>();
  key->key = std::move(icf->key);
  key->certs.push_back(std::move(icf->cert));
  c.icf_key = std::move(key);
  c.shos = {{"sho-a", ro::ShoEndpoint{sho_url}}};
  c.notify_client = operator_client(std::string(kRo));
  c.notify_retry = 100ms;
  return c;
}

// ---- The selected home operator as the contract describes it ---------------------------------

class TestSho {
 public:
  struct Behaviour {
    bool send_package = true;
    std::chrono::milliseconds activation_delay{300};  // so the device has to ask again
    std::chrono::milliseconds package_delay{0};       // between the attestation and the package
  };

  TestSho(World& world, store::Database& auc_db, const Clock& clock, Behaviour behaviour)
      : world_(world), auc_db_(auc_db), clock_(clock), behaviour_(behaviour), router_("sho") {
    net::RouteOptions only_ro;
    only_ro.authorize = net::require_operator({std::string(kRo)});
    for (auto [path, fn] : {std::pair{"/v1/sho/arrivals", &TestSho::arrival},
                            std::pair{"/v1/sho/attestations", &TestSho::attestation},
                            std::pair{"/v1/sho/status", &TestSho::status}}) {
      auto added = router_.add(
          "POST", path,
          [this, fn](const net::Request& r) {
            auto body = Json::parse(r.http.body, nullptr, false);
            if (!body.is_object()) {
              return net::error_response(400, "bad_format", "not a JSON object");
            }
            return net::respond((this->*fn)(body));
          },
          only_ro);
      EXPECT_TRUE(added) << fmt::to_string(added.error());
    }
    ro::AuthRoutes auth;
    auth.roaming_partners = {"vno-a"};
    auth.icf = [this]() -> ro::Icf& { return icf(); };
    auto mounted = ro::add_auth_routes(router_, std::move(auth));
    EXPECT_TRUE(mounted) << fmt::to_string(mounted.error());
    server_ = net::testing::start_named_server(router_.handler(), "sho-a",
                                               net::ClientAuth::required, 256 * 1024);
  }

  void connect(std::string ro_url) { ro_url_ = std::move(ro_url); }
  std::string url() const { return server_ ? server_->url() : std::string(); }
  int arrivals() const { return arrivals_.load(); }  // refused ones too
  int attestations() const { return attestations_.load(); }
  int statuses() const { return statuses_.load(); }
  std::string failure() const {
    std::lock_guard lock(mu_);
    return failure_;
  }

 private:
  // One Icf per calling thread, over the AuC's own database (as the SHO's AuC).
  ro::Icf& icf() {
    thread_local OsRandom random;
    thread_local std::optional<ro::Icf> icf;
    icf.emplace(auc_db_, clock_, random);
    return *icf;
  }

  void note_failure(std::string what) {
    ADD_FAILURE() << what;
    std::lock_guard lock(mu_);
    failure_ = std::move(what);
  }

  Result<Json> call_ro(const std::string& path, const Json& body, int expected) {
    auto r = sho_client_->request("POST", ro_url_ + path, body.dump(), net::kJsonContentType);
    if (!r) return std::unexpected(r.error());
    if (r->status != expected) {
      note_failure(fmt::format("RO {}: HTTP {} {}", path, r->status, r->body));
      return std::unexpected(net::error_from_response(*r, "ro"));
    }
    return Json::object();
  }

  // F2 step 7: a nonce (the PVA's, here ours) on its way to the device through the DPF.
  Result<Json> arrival(const Json& n) {
    ++arrivals_;
    // As the real SHO: once the device is validated and its package on the way (provisioning),
    // an arrival starts nothing.
    if (provisioning_.load()) return fail(ErrorCode::transition_refused, "not awaiting arrival");
    Bytes<32> nonce{};
    OsRandom().fill(nonce);
    {
      std::lock_guard lock(mu_);
      nonce_ = ByteVec(nonce.begin(), nonce.end());
      request_id_ = fmt::format("challenge-{}", arrivals_.load());
    }
    auto placed = call_ro("/v1/dpf/attestation-requests",
                          {{"pcid", n.value("pcid", "")},
                           {"device_id", n.value("device_id", "")},
                           {"request_id", fmt::format("challenge-{}", arrivals_.load())},
                           {"nonce", to_hex(nonce)}},
                          201);
    if (!placed) return std::unexpected(placed.error());
    return Json::object();
  }

  // Steps 9-11: the report must answer our nonce; then the package, sealed to the platform
  // certificate the report came with (the real SHO uses the registered one), and the IMSI in the
  // AuC, not yet usable.
  Result<Json> attestation(const Json& a) {
    ++attestations_;
    auto report = pki::decode_signed_report(a.value("report", ""));
    if (!report) {
      note_failure("the relayed report does not decode: " + report.error().message);
      return std::unexpected(report.error());
    }
    {
      std::lock_guard lock(mu_);
      if (report->report.nonce != nonce_ || a.value("request_id", "") != request_id_) {
        note_failure("the report does not answer the request in flight");
        return fail(ErrorCode::nonce_mismatch, "not the challenge in flight");
      }
    }
    if (!behaviour_.send_package) return Json{{"outcome", "trusted"}};
    provisioning_ = true;
    const Json& chain = a.at("platform_chain");
    const std::string& leaf_pem = chain.at(0).get_ref<const std::string&>();
    auto leaf = pki::parse_certificate(
        ByteView(reinterpret_cast<const std::uint8_t*>(leaf_pem.data()), leaf_pem.size()),
        "platform_chain[0]");
    if (!leaf) return std::unexpected(leaf.error());
    const std::string device_id = a.value("device_id", "");
    pki::McimDocument doc = world_.document(device_id, kImsi, "sho-a", 1, kNonce);
    store::PcidSubscription sub;
    sub.pcid = kImsi;
    std::copy_n(doc.k.get().begin(), 16, sub.k.mut().begin());
    sub.opc = doc.opc;
    sub.ind_bits = doc.ind_bits;
    sub.not_after = std::chrono::floor<std::chrono::seconds>(clock_.now()) + 24h;
    if (auto imported = icf().import_batch("sho", {std::move(sub)}, "sho-a"); !imported) {
      note_failure("AuC import: " + imported.error().message);
      return std::unexpected(imported.error());
    }
    std::this_thread::sleep_for(behaviour_.package_delay);
    const ByteVec pkg = world_.seal(doc, world_.signer("sho-a"), leaf->get());
    auto stored = call_ro("/v1/dpf/packages",
                          {{"pcid", a.value("pcid", "")},
                           {"device_id", device_id},
                           {"package_id", doc.package_id},
                           {"package", to_hex(pkg)}},
                          201);
    if (!stored) return std::unexpected(stored.error());
    return Json{{"outcome", "trusted"}};
  }

  // Step 14: the TRE reported the install; the AuC starts serving the IMSI.
  Result<Json> status(const Json& s) {
    ++statuses_;
    if (s.value("report", "").find("\"outcome\":\"ok\"") == std::string::npos) {
      note_failure("the status report is not ok");
      return Json{{"outcome", "refused"}};
    }
    std::this_thread::sleep_for(behaviour_.activation_delay);
    auto active = icf().activate(kImsi, 3600s, "operator:sho-a");
    if (!active) {
      note_failure("AuC activation: " + active.error().message);
      return std::unexpected(active.error());
    }
    return Json{{"outcome", "ok"}};
  }

  World& world_;
  store::Database& auc_db_;
  const Clock& clock_;
  Behaviour behaviour_;
  net::Router router_;
  std::string ro_url_;
  std::shared_ptr<net::HttpsClient> sho_client_ = operator_client("sho-a");
  std::atomic<int> arrivals_{0}, attestations_{0}, statuses_{0};
  std::atomic<bool> provisioning_{false};  // validated, the package on its way
  mutable std::mutex mu_;
  ByteVec nonce_;           // guarded by mu_
  std::string request_id_;  // guarded by mu_
  std::string failure_;     // guarded by mu_
  std::unique_ptr<net::HttpServer> server_;
};

}  // namespace mcim::device::testing
