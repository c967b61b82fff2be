// `mcim serve ro|vno|supplier|sho|pva` and its config files: the loaders' defaults and refusals (each
// naming the key path, with the code that gives the exit status), then the binary run as a child
// process per role — ready file, /healthz and /metrics over mTLS-capable HTTPS, a graceful stop
// on SIGTERM/SIGINT with exit 0 — and a table of bad configs that must exit with the right code
// and message, leave no ready file, no database and nothing listening.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../net/net_test_util.h"
#include "../roles/hlr_gw_test_util.h"
#include "../tre/tre_fixture.h"
#include "child_process.h"
#include "cli/serve_config.h"
#include "common/file.h"
#include "common/hex.h"
#include "net/json_schema.h"
#include "pki/certificate.h"

namespace mcim::cli {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using net::Json;
using net::testing::TestPki;
using pki::testing::TempDir;
using testing::accepts_connections;
using testing::address_of;
using testing::Child;
using testing::slurp;

constexpr std::string_view kOwnerToken = "owner-token-not-for-logs-4711";

// Every file a config points into, made once: the TLS identities of the three services and
// their clients (TestPki), the supplier CA and the operator root of the TRE world, the ICF's key
// agreement pair, the supplier's batch signer and the RO's OP.
class Files {
 public:
  static Files& get() {
    static Files f;
    return f;
  }
  const std::string& dir() const { return dir_.path(); }
  std::string path(const std::string& name) const { return dir_ / name; }
  std::string supplier_ca_dir() const { return world_.supplier().dir(); }

 private:
  Files() {
    TestPki& tls = TestPki::get();
    copy(tls.root_file(), "tls-root.pem");
    for (const char* role : {"ro", "vno", "supplier", "sho", "pva"}) {
      const auto& server = tls.named_server(role);
      copy(server.cert_file, std::string(role) + "-server.pem");
      copy(server.key_file, std::string(role) + "-server.key");
    }
    for (const auto& [role, id] :
         {std::pair{"ro", "ro-1"}, {"vno", "vno-1"}, {"supplier", "sup-1"}, {"sho", "sho-a"}}) {
      const auto& client = tls.operator_client(id);
      copy(client.cert_file, std::string(role) + "-client.pem");
      copy(client.key_file, std::string(role) + "-client.key");
    }
    copy(world_.supplier().dir() + "/ca.pem", "supplier-roots.pem");
    copy(world_.operator_roots_pem(), "operator-roots.pem");

    // The ICF's batch key: the encryption profile (keyAgreement only).
    pki::CertSpec icf;
    icf.profile = pki::Profile::encryption;
    icf.subject = "CN=icf.ro-1 batch key,O=RO";
    icf.sans = {"URI:urn:mcim:operator:ro-1"};
    issue(world_.operators(), icf, "icf");
    pki::CertSpec signer;
    signer.profile = pki::Profile::package_signing;
    signer.subject = "CN=batch signer,O=supplier";
    signer.sans = {"URI:urn:mcim:supplier:sup-1"};
    issue(world_.supplier(), signer, "signer");

    // The PVA's OCSP and result signers, the SHO's package signer, an owner's token.
    pki::CertSpec ocsp;
    ocsp.profile = pki::Profile::ocsp_signing;
    ocsp.subject = "CN=ocsp signer,O=supplier";
    issue(world_.supplier(), ocsp, "ocsp-signer");
    pki::CertSpec results;
    results.profile = pki::Profile::result_signing;
    results.subject = "CN=validation results,O=pva-1";
    issue(world_.operators(), results, "pva-signer");
    copy(world_.signer("sho-a").prefix + ".pem", "sho-signer.pem");
    copy(world_.signer("sho-a").prefix + ".key", "sho-signer.key");
    copy(world_.signer("ro-1").prefix + ".pem", "ro-signer.pem");
    copy(world_.signer("ro-1").prefix + ".key", "ro-signer.key");
    EXPECT_TRUE(write_file_atomic(path("owner.token"), std::string(kOwnerToken) + "\n", 0600));
    EXPECT_TRUE(write_file_atomic(path("owner-readable.token"), kOwnerToken, 0644));
    EXPECT_TRUE(write_file_atomic(path("empty.token"), "\n", 0600));

    EXPECT_TRUE(write_file_atomic(path("op.hex"), to_hex(tre::testing::kOp) + "\n", 0600));
    EXPECT_TRUE(write_file_atomic(path("op-readable.hex"), to_hex(tre::testing::kOp), 0644));
  }

  void copy(const std::string& from, const std::string& to) {
    std::error_code ec;
    fs::copy_file(from, path(to), fs::copy_options::overwrite_existing, ec);
    EXPECT_FALSE(ec) << from << ": " << ec.message();
  }

  void issue(const pki::Authority& ca, const pki::CertSpec& spec, const std::string& prefix) {
    auto issued = ca.issue(spec, world_.clock(), world_.rng());
    ASSERT_TRUE(issued) << issued.error().message;
    EXPECT_TRUE(pki::write_certificate(path(prefix + ".pem"), issued->cert.get()));
    EXPECT_TRUE(pki::write_private_key(path(prefix + ".key"), issued->key.get()));
  }

  TempDir dir_;
  tre::testing::World world_;
};

// Configs live one directory below the files, so their relative paths start with "../".
Json tls_of(const std::string& role, bool client_roots) {
  Json tls = {{"cert", "../" + role + "-server.pem"}, {"key", "../" + role + "-server.key"}};
  if (client_roots) tls["client_roots"] = Json::array({"../tls-root.pem"});
  return tls;
}
Json client_of(const std::string& role) {
  return {{"cert", "../" + role + "-client.pem"},
          {"key", "../" + role + "-client.key"},
          {"roots", Json::array({"../tls-root.pem"})}};
}

Json ro_json() {
  return {{"tls", tls_of("ro", true)},
          {"client", client_of("ro")},
          {"operator_id", "ro-1"},
          {"roaming_partners", Json::array({"vno-1"})},
          {"suppliers", Json::array({"sup-1"})},
          {"supplier_roots", Json::array({"../supplier-roots.pem"})},
          {"operator_roots", Json::array({"../operator-roots.pem"})},
          {"icf_key", "../icf"},
          {"shos", {{"sho-a", "https://127.0.0.1:9"}}}};
}

Json vno_json(const std::string& ro_url, const std::string& ro_address) {
  return {
      {"tls", tls_of("vno", false)},
      {"client", client_of("vno")},
      {"name", "vno-1"},
      {"routes", Json::array({{{"prefix", "00101"}, {"home", "ro-1"}, {"provisioning", true}}})},
      {"homes", {{"ro-1", ro_url}}},
      {"restricted_destinations", Json::array({ro_address})}};
}

Json supplier_json(const std::string& ro_url) {
  return {{"tls", tls_of("supplier", true)},
          {"client", client_of("supplier")},
          {"supplier_id", "sup-1"},
          {"admins", Json::array({"sho-a"})},
          {"ca", Files::get().supplier_ca_dir()},  // an absolute path stays as it is
          {"signer", "../signer"},
          {"icf_cert", "../icf.pem"},
          {"icf_url", ro_url},
          {"device",
           {{"ro_operator", "ro-1"},
            {"op_file", "../op.hex"},
            {"operator_roots", Json::array({"../operator-roots.pem"})}}}};
}

Json sho_json() {
  return {{"tls", tls_of("sho", true)},
          {"client", client_of("sho")},
          {"operator_id", "sho-a"},
          {"owners", Json::array({{{"id", "owner:alice"}, {"token_file", "../owner.token"}},
                                  {{"id", "bob"}, {"token_sha256", std::string(64, 'a')}}})},
          {"ros", Json::array({{{"operator_id", "ro-1"},
                                {"pcid_prefix", "00101"},
                                {"url", "https://127.0.0.1:9"},
                                {"dpf_cert", "../ro-server.pem"},
                                {"apn", "m2m-prov.ro-1"}}})},
          {"roaming_partners", Json::array({"vno-1"})},
          {"imsi_prefix", "00102"},
          {"op_file", "../op.hex"},
          {"supplier_roots", Json::array({"../supplier-roots.pem"})},
          {"pva_roots", Json::array({"../operator-roots.pem"})},
          {"pva_url", "https://127.0.0.1:10"},
          {"package_signer", "../sho-signer"}};
}

Json pva_json() {
  return {{"tls", tls_of("pva", true)},
          {"operator_id", "pva-1"},
          {"suppliers", Json::array({"sup-1"})},
          {"shos", Json::array({"sho-a"})},
          {"supplier_roots", Json::array({"../supplier-roots.pem"})},
          {"supplier_ca", Files::get().supplier_ca_dir()},
          {"ocsp_signer", "../ocsp-signer"},
          {"result_signer", "../pva-signer"}};
}

// A fresh directory beside the files with `name` written into it.
std::string write_config(const std::string& sub, const std::string& name, const Json& j) {
  const std::string d = Files::get().path(sub);
  fs::remove_all(d);
  fs::create_directories(d);
  const std::string p = d + "/" + name;
  std::ofstream(p) << j.dump(2);
  return p;
}

// ---------------------------------------------------------------------------------------------
// The loaders.

TEST(ServeConfig, ParseListen) {
  auto v4 = parse_listen("127.0.0.1:8443", "listen");
  ASSERT_TRUE(v4) << v4.error().message;
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 8443);
  auto v6 = parse_listen("[::1]:0", "listen");
  ASSERT_TRUE(v6) << v6.error().message;
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 0);
  for (const char* bad : {"", "127.0.0.1", "localhost:80", "127.0.0.1:", "127.0.0.1:65536",
                          "127.0.0.1:-1", "127.0.0.1:80x", "::1:80", "[::1]80", "[nope]:1"}) {
    auto r = parse_listen(bad, "--listen");
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << bad;
    EXPECT_TRUE(r.error().message.starts_with("--listen: ")) << r.error().message;
  }
}

TEST(ServeConfig, RoDefaultsAndRelativePaths) {
  const auto path = write_config("ro-defaults", "ro.json", ro_json());
  auto c = load_ro_config(path);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->common.listen.host, "127.0.0.1");
  EXPECT_EQ(c->common.listen.port, 0);
  EXPECT_EQ(c->common.threads, kRoDefaultThreads);
  EXPECT_EQ(c->common.log_level, log::Level::info);
  EXPECT_EQ(c->common.tls.client_auth, net::ClientAuth::optional);
  EXPECT_TRUE(c->common.tls.identity);
  EXPECT_TRUE(c->common.tls.client_trust);
  EXPECT_TRUE(c->common.client);
  EXPECT_EQ(c->db_url, "sqlite:" + Files::get().path("ro-defaults") + "/ro.db");
  const ro::RoServiceConfig& s = c->service;
  EXPECT_EQ(s.operator_id, "ro-1");
  EXPECT_EQ(s.roaming_partners, std::vector<std::string>{"vno-1"});
  EXPECT_EQ(s.suppliers, std::vector<std::string>{"sup-1"});
  EXPECT_TRUE(s.supplier_roots && s.operator_roots && s.icf_key);
  EXPECT_EQ(s.notify_client, c->common.client);
  ASSERT_EQ(s.shos.size(), 1u);
  EXPECT_EQ(s.shos.at("sho-a").base_url, "https://127.0.0.1:9");
  EXPECT_EQ(s.expire_interval, 60s);
  const ro::IcfConfig icf_defaults;
  EXPECT_EQ(s.icf.amf, icf_defaults.amf);
  EXPECT_EQ(s.icf.session_lifetime, icf_defaults.session_lifetime);
  EXPECT_TRUE(s.drf.require_known_pcid);
  EXPECT_EQ(s.drf.change_attempts, 5u);
  EXPECT_EQ(s.drf.change_window, 3600s);
  EXPECT_TRUE(s.direct_access);
  EXPECT_EQ(s.direct_drf_url, "");
  EXPECT_EQ(s.direct.challenge_lifetime, ro::DirectConfig{}.challenge_lifetime);
  EXPECT_FALSE(c->eap_gateway);
  const auto server = c->common.server_options(12345);
  EXPECT_EQ(server.threads, kRoDefaultThreads);
  EXPECT_EQ(server.body_limit, 12345u);
  EXPECT_TRUE(server.tls.has_value());
}

TEST(ServeConfig, RoEveryKnob) {
  Json j = ro_json();
  j["listen"] = "127.0.0.1:18443";
  j["threads"] = 4;
  j["log_level"] = "debug";
  j["db"] = "sqlite:state/ro.db";
  j["tls"]["client_auth"] = "required";
  j["expire_interval_s"] = 0;
  j["notify_retry_ms"] = 250;
  j["max_pending_notices"] = 10;
  j["max_batch_bytes"] = 2048;
  j["icf"] = {{"amf", "0000"},
              {"max_activation_s", 3600},
              {"dormant_period_s", 7200},
              {"session_lifetime_s", 60},
              {"quarantine_s", 600},
              {"max_batch", 5}};
  j["drf"] = {{"require_known_pcid", false}, {"change_attempts", 3}, {"change_window_s", 600}};
  j["direct"] = {
      {"enabled", false}, {"drf_url", "https://10.0.0.5:8443"}, {"challenge_lifetime_s", 30}};
  const auto path = write_config("ro-knobs", "ro.json", j);
  auto c = load_ro_config(path);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->common.listen.port, 18443);
  EXPECT_EQ(c->common.threads, 4);
  EXPECT_EQ(c->common.log_level, log::Level::debug);
  EXPECT_EQ(c->common.tls.client_auth, net::ClientAuth::required);
  EXPECT_EQ(c->db_url, "sqlite:" + Files::get().path("ro-knobs") + "/state/ro.db");
  const ro::RoServiceConfig& s = c->service;
  EXPECT_EQ(s.expire_interval, 0s);
  EXPECT_EQ(s.notify_retry, 250ms);
  EXPECT_EQ(s.max_pending_notices, 10u);
  EXPECT_EQ(s.max_batch_bytes, 2048u);
  EXPECT_EQ(s.icf.amf, (aka::Amf{0x00, 0x00}));
  EXPECT_EQ(s.icf.max_activation, 3600s);
  EXPECT_EQ(s.icf.dormant_period, 7200s);
  EXPECT_EQ(s.icf.session_lifetime, 60s);
  EXPECT_EQ(s.icf.quarantine, 600s);
  EXPECT_EQ(s.icf.max_batch, 5u);
  EXPECT_FALSE(s.drf.require_known_pcid);
  EXPECT_EQ(s.drf.change_attempts, 3u);
  EXPECT_EQ(s.drf.change_window, 600s);
  EXPECT_FALSE(s.direct_access);
  EXPECT_EQ(s.direct_drf_url, "https://10.0.0.5:8443");
  EXPECT_EQ(s.direct.challenge_lifetime, 30s);
}

// F8: the RO's package signer and OP for PCID renewals, with their defaults and its knobs.
TEST(ServeConfig, RoPcidRenewal) {
  Json j = ro_json();
  j["pcid_renewal"] = {{"package_signer", "../ro-signer"}, {"op_file", "../op.hex"}};
  auto c = load_ro_config(write_config("ro-renewal", "ro.json", j));
  ASSERT_TRUE(c) << c.error().message;
  const ro::RenewalConfig& r = c->service.renewal;
  ASSERT_TRUE(r.signer);
  EXPECT_EQ(pki::signer_operator_id(r.signer->cert()), "ro-1");
  EXPECT_EQ(r.op.get(), tre::testing::kOp);
  EXPECT_EQ(r.threshold, std::chrono::hours(24 * 30));
  EXPECT_EQ(r.lifetime, std::chrono::hours(24 * 730));
  j["pcid_renewal"]["threshold_s"] = 86400;
  j["pcid_renewal"]["lifetime_s"] = 7200;
  c = load_ro_config(write_config("ro-renewal-knobs", "ro.json", j));
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->service.renewal.threshold, 86400s);
  EXPECT_EQ(c->service.renewal.lifetime, 7200s);
  auto plain = load_ro_config(write_config("ro-plain", "ro.json", ro_json()));
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_FALSE(plain->service.renewal.signer);
}

// The gateway's socket resolved like every path, at most 107 bytes once resolved; its ICF the
// RO's, with the AMF separation bit set whatever the file's icf.amf.
TEST(ServeConfig, RoEapGateway) {
  Json j = ro_json();
  j["icf"] = {{"amf", "0000"}, {"max_activation_s", 3600}, {"session_lifetime_s", 60}};
  j["eap_gateway"] = {{"socket", "run/hlr.sock"}};
  auto c = load_ro_config(write_config("ro-eap", "ro.json", j));
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->eap_gateway);
  const ro::HlrGatewayOptions& g = *c->eap_gateway;
  EXPECT_EQ(g.socket_path, Files::get().path("ro-eap") + "/run/hlr.sock");
  EXPECT_EQ(g.mode, 0600u);
  EXPECT_EQ(g.caller, "");  // HlrGateway's default, "eap:hlr.sock"
  EXPECT_EQ(g.icf.amf, (aka::Amf{0x80, 0x00}));
  EXPECT_EQ(c->service.icf.amf, (aka::Amf{0x00, 0x00}));  // the VNOs' vectors as configured
  EXPECT_EQ(g.icf.max_activation, 3600s);
  EXPECT_EQ(g.icf.session_lifetime, 60s);
  EXPECT_EQ(g.icf.dormant_period, c->service.icf.dormant_period);

  // An absolute path of exactly 107 bytes is taken, with the group mode; one byte more is not.
  const std::string dir = Files::get().path("ro-eap-abs");
  const std::string fits = dir + "/" + std::string(ro::kMaxHlrSocketPath - dir.size() - 1, 's');
  ASSERT_EQ(fits.size(), 107u);
  j["eap_gateway"] = {{"socket", fits}, {"mode", "0660"}};
  auto abs = load_ro_config(write_config("ro-eap-abs", "ro.json", j));
  ASSERT_TRUE(abs) << abs.error().message;
  EXPECT_EQ(abs->eap_gateway->socket_path, fits);
  EXPECT_EQ(abs->eap_gateway->mode, 0660u);
  j["eap_gateway"]["socket"] = fits + "s";
  auto over = load_ro_config(write_config("ro-eap-abs", "ro.json", j));
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, ErrorCode::invalid_argument);
  EXPECT_TRUE(over.error().message.starts_with(dir + "/ro.json: eap_gateway.socket: 108 bytes"))
      << over.error().message;
}

TEST(ServeConfig, VnoAndSupplierLoad) {
  Json v = vno_json("https://127.0.0.1:8443", "127.0.0.1:8443");
  v["gateway"] = {{"listen", "127.0.0.1:0"}, {"threads", 2}, {"connect_timeout_ms", 1000}};
  auto vno = load_vno_config(write_config("vno-load", "vno.json", v));
  ASSERT_TRUE(vno) << vno.error().message;
  EXPECT_EQ(vno->common.tls.client_auth, net::ClientAuth::none);
  EXPECT_EQ(vno->service.options.name, "vno-1");
  ASSERT_EQ(vno->service.routes.size(), 1u);
  EXPECT_EQ(vno->service.routes[0].prefix, "00101");
  EXPECT_TRUE(vno->service.routes[0].provisioning);
  EXPECT_EQ(vno->service.homes.at("ro-1"), "https://127.0.0.1:8443");
  EXPECT_EQ(vno->service.options.restricted_destinations,
            std::vector<std::string>{"127.0.0.1:8443"});
  EXPECT_EQ(vno->service.home_client, vno->common.client);
  EXPECT_EQ(vno->service.gateway.threads, 2);
  EXPECT_EQ(vno->service.gateway.connect_timeout, 1000ms);

  auto sup = load_supplier_config(
      write_config("supplier-load", "supplier.json", supplier_json("https://127.0.0.1:8443")));
  ASSERT_TRUE(sup) << sup.error().message;
  const auto& s = sup->service;
  EXPECT_EQ(s.supplier_id, "sup-1");
  EXPECT_EQ(s.admins, std::vector<std::string>{"sho-a"});
  EXPECT_TRUE(s.ca && s.signer && s.icf_cert && s.ro_client);
  EXPECT_EQ(s.out_dir, Files::get().path("supplier-load") + "/batches");
  EXPECT_EQ(s.device_template.op.get(), tre::testing::kOp);
  EXPECT_EQ(s.device_template.model, "mcim-sw-tre-1");
  EXPECT_EQ(s.device_template.certificate_days, 3650);
  EXPECT_EQ(s.device_template.pcid_days, 730);
  ASSERT_EQ(s.device_template.operator_roots.size(), 1u);
  EXPECT_EQ(s.device_template.operator_roots[0], sup->operator_roots->roots()[0].get());
}

// vno.json's non3gpp (F3 over EAP, docs/operations.md): the relay's addresses and the secret
// read from a private file; refusals name the key and never quote the secret.
TEST(ServeConfig, VnoNon3gpp) {
  constexpr std::string_view kRadiusSecret = "radius-shared-7";
  Json v = vno_json("https://127.0.0.1:8443", "127.0.0.1:8443");
  v["non3gpp"] = {{"radius_listen", "127.0.0.1:0"},
                  {"aaa", "127.0.0.1:18120"},
                  {"secret_file", "radius.secret"},
                  {"grant_ttl_s", 30}};
  const std::string path = write_config("vno-n3g", "vno.json", v);
  const std::string secret_path = Files::get().path("vno-n3g") + "/radius.secret";
  std::ofstream(secret_path) << kRadiusSecret << "\n";
  fs::permissions(secret_path, fs::perms::owner_read | fs::perms::owner_write);
  auto vno = load_vno_config(path);
  ASSERT_TRUE(vno) << vno.error().message;
  ASSERT_TRUE(vno->service.non3gpp);
  const roles::RadiusRelayOptions& r = *vno->service.non3gpp;
  EXPECT_EQ(r.listen_host, "127.0.0.1");
  EXPECT_EQ(r.listen_port, 0);
  EXPECT_EQ(r.aaa_host, "127.0.0.1");
  EXPECT_EQ(r.aaa_port, 18120);
  ASSERT_TRUE(r.secret);
  EXPECT_EQ(r.secret->text(), kRadiusSecret);  // without the newline
  EXPECT_EQ(vno->service.options.eap_grant_ttl, 30s);
  EXPECT_EQ(vno->radius_secret_file, secret_path);

  auto refused = [&](const std::string& key, ErrorCode code) {
    SCOPED_TRACE(key);
    auto c = load_vno_config(path);
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().code, code) << c.error().message;
    EXPECT_TRUE(c.error().message.starts_with(path + ": " + key)) << c.error().message;
    EXPECT_EQ(c.error().message.find(kRadiusSecret), std::string::npos);
  };
  fs::permissions(secret_path, fs::perms::group_read, fs::perm_options::add);
  refused("non3gpp.secret_file", ErrorCode::invalid_argument);  // readable by others
  { std::ofstream(secret_path, std::ios::trunc) << "\n"; }
  fs::permissions(secret_path, fs::perms::owner_read | fs::perms::owner_write);
  refused("non3gpp.secret_file", ErrorCode::invalid_argument);  // empty
  fs::remove(secret_path);
  refused("non3gpp.secret_file", ErrorCode::not_found);
  std::ofstream(secret_path) << kRadiusSecret;
  fs::permissions(secret_path, fs::perms::owner_read | fs::perms::owner_write);
  for (auto [key, value] :
       {std::pair{"aaa", "localhost:1812"}, {"radius_listen", "1.2.3.4"}, {"aaa", "127.0.0.1:0"}}) {
    Json bad = v;
    bad["non3gpp"][key] = value;
    std::ofstream(path, std::ios::trunc) << bad.dump(2);
    refused(std::string("non3gpp.") + key, ErrorCode::invalid_argument);
  }
  Json missing = v;
  missing["non3gpp"].erase("aaa");
  std::ofstream(path, std::ios::trunc) << missing.dump(2);
  refused("non3gpp.aaa", ErrorCode::missing_argument);
}

TEST(ServeConfig, RoNotifyWorkersAndVnoDrfUrl) {
  auto ro_default = load_ro_config(write_config("ro-workers-default", "ro.json", ro_json()));
  ASSERT_TRUE(ro_default) << ro_default.error().message;
  EXPECT_EQ(ro_default->service.notify_workers, ro::RoServiceConfig{}.notify_workers);
  Json r = ro_json();
  r["notify_workers"] = 9;
  auto ro = load_ro_config(write_config("ro-workers", "ro.json", r));
  ASSERT_TRUE(ro) << ro.error().message;
  EXPECT_EQ(ro->service.notify_workers, 9u);

  Json v = vno_json("https://127.0.0.1:8443", "127.0.0.1:8443");
  v["routes"][0]["drf_url"] = "https://127.0.0.1:8444";
  v["routes"].push_back({{"prefix", "00102"}, {"home", "ro-1"}});
  auto vno = load_vno_config(write_config("vno-drf", "vno.json", v));
  ASSERT_TRUE(vno) << vno.error().message;
  ASSERT_EQ(vno->service.routes.size(), 2u);
  EXPECT_EQ(vno->service.routes[0].drf_url, "https://127.0.0.1:8444");
  EXPECT_EQ(vno->service.routes[1].drf_url, "");
  EXPECT_FALSE(vno->service.routes[1].provisioning);
}

TEST(ServeConfig, ShoDefaultsAndEveryKnob) {
  auto c = load_sho_config(write_config("sho-defaults", "sho.json", sho_json()));
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->common.tls.client_auth, net::ClientAuth::optional);
  EXPECT_EQ(c->common.threads, kShoDefaultThreads);
  EXPECT_EQ(c->db_url, "sqlite:" + Files::get().path("sho-defaults") + "/sho.db");
  const sho::ShoServiceConfig& s = c->service;
  const sho::ShoServiceConfig defaults;
  EXPECT_EQ(s.operator_id, "sho-a");
  ASSERT_EQ(s.owners.size(), 2u);
  EXPECT_EQ(s.owners[0].id, "owner:alice");
  // The token file's content without its newline, hashed.
  const std::string token(kOwnerToken);
  EXPECT_EQ(s.owners[0].token_sha256,
            pki::sha256(ByteView(reinterpret_cast<const std::uint8_t*>(token.data()),
                                 token.size())));
  EXPECT_EQ(s.owners[1].id, "bob");
  EXPECT_EQ(to_hex(s.owners[1].token_sha256), std::string(64, 'a'));
  ASSERT_EQ(s.ros.size(), 1u);
  EXPECT_EQ(s.ros[0].operator_id, "ro-1");
  EXPECT_EQ(s.ros[0].pcid_prefix, "00101");
  EXPECT_EQ(s.ros[0].base_url, "https://127.0.0.1:9");
  EXPECT_EQ(s.ros[0].dpf_url, "https://127.0.0.1:9");  // the RO's URL unless given
  EXPECT_EQ(s.ros[0].dpf_key_pin,
            pki::spki_sha256(TestPki::get().named_server("ro").identity->key.get()));
  EXPECT_EQ(s.ros[0].apn, "m2m-prov.ro-1");
  EXPECT_EQ(s.roaming_partners, std::vector<std::string>{"vno-1"});
  EXPECT_EQ(s.imsi_prefix, "00102");
  EXPECT_EQ(s.imsi_digits, defaults.imsi_digits);
  EXPECT_EQ(s.op.get(), tre::testing::kOp);
  EXPECT_EQ(s.ind_bits, defaults.ind_bits);
  EXPECT_EQ(s.nonce_lifetime, defaults.nonce_lifetime);
  EXPECT_EQ(s.mcim_lifetime, defaults.mcim_lifetime);
  EXPECT_EQ(s.max_prepared_packages, defaults.max_prepared_packages);
  EXPECT_TRUE(s.supplier_roots && s.pva_roots && s.package_signer);
  EXPECT_EQ(s.pva_url, "https://127.0.0.1:10");
  EXPECT_TRUE(s.client);
  EXPECT_EQ(s.client, c->common.client);

  Json j = sho_json();
  j["db"] = "memory:";
  j["ros"][0].erase("dpf_cert");
  j["ros"][0]["dpf_key_pin"] = std::string(64, 'B');  // either case
  j["ros"][0]["dpf_url"] = "https://127.0.0.1:11";
  j["imsi_digits"] = 14;
  j["ind_bits"] = 4;
  j["nonce_lifetime_s"] = 600;
  j["mcim_lifetime_s"] = 7200;
  j["max_prepared_packages"] = 0;
  auto k = load_sho_config(write_config("sho-knobs", "sho.json", j));
  ASSERT_TRUE(k) << k.error().message;
  EXPECT_EQ(k->service.max_prepared_packages, 0u);
  EXPECT_EQ(k->db_url, "memory:");
  EXPECT_EQ(to_hex(k->service.ros[0].dpf_key_pin), std::string(64, 'b'));
  EXPECT_EQ(k->service.ros[0].dpf_url, "https://127.0.0.1:11");
  EXPECT_EQ(k->service.imsi_digits, 14u);
  EXPECT_EQ(k->service.ind_bits, 4u);
  EXPECT_EQ(k->service.nonce_lifetime, 600s);
  EXPECT_EQ(k->service.mcim_lifetime, 7200s);
}

TEST(ServeConfig, PvaDefaultsAndEveryKnob) {
  auto c = load_pva_config(write_config("pva-defaults", "pva.json", pva_json()));
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->common.tls.client_auth, net::ClientAuth::optional);
  EXPECT_FALSE(c->common.client);
  EXPECT_EQ(c->db_url, "sqlite:" + Files::get().path("pva-defaults") + "/pva.db");
  const pva::PvaServiceConfig& s = c->service;
  const pva::PvaServiceConfig defaults;
  EXPECT_EQ(s.operator_id, "pva-1");
  EXPECT_EQ(s.suppliers, std::vector<std::string>{"sup-1"});
  EXPECT_EQ(s.shos, std::vector<std::string>{"sho-a"});
  EXPECT_TRUE(s.supplier_roots && s.result_signer);
  EXPECT_TRUE(s.supplier_intermediates.empty());
  EXPECT_EQ(s.supplier_ca_dir, Files::get().supplier_ca_dir());
  EXPECT_EQ(s.ocsp_signer_prefix, Files::get().path("pva-defaults") + "/../ocsp-signer");
  EXPECT_EQ(s.challenge_lifetime, defaults.challenge_lifetime);
  EXPECT_EQ(s.policy.report_max_age, defaults.policy.report_max_age);
  EXPECT_EQ(s.policy.revocation_skew, defaults.policy.revocation_skew);

  Json j = pva_json();
  j["supplier_intermediates"] = Json::array({"../supplier-roots.pem"});
  j["challenge_lifetime_s"] = 30;
  j["policy"] = {{"report_max_age_s", 60},
                 {"max_skew_s", 5},
                 {"revocation_max_age_s", 120},
                 {"revocation_skew_s", 10}};
  auto k = load_pva_config(write_config("pva-knobs", "pva.json", j));
  ASSERT_TRUE(k) << k.error().message;
  EXPECT_EQ(k->service.supplier_intermediates.size(), 1u);
  EXPECT_EQ(k->service.challenge_lifetime, 30s);
  EXPECT_EQ(k->service.policy.report_max_age, 60s);
  EXPECT_EQ(k->service.policy.max_skew, 5s);
  EXPECT_EQ(k->service.policy.revocation_max_age, 120s);
  EXPECT_EQ(k->service.policy.revocation_skew, 10s);
}

// A config that must be refused: the library's code and message, and the process's exit code.
struct BadConfig {
  std::string name;
  std::string role;  // ro, vno, supplier
  std::function<void(Json&)> edit;
  ErrorCode code;
  int exit_code;
  std::string message;  // a substring of the error, after "<file>: "
  std::vector<std::string> extra_args = {};
};

const std::vector<BadConfig>& bad_configs() {
  static const std::vector<BadConfig> rows = {
      {"unknown_key", "ro", [](Json& j) { j["colour"] = "blue"; }, ErrorCode::bad_format, 2,
       "ro.json: unknown member \"colour\""},
      {"unknown_nested_key", "ro", [](Json& j) { j["tls"]["ciphers"] = "all"; },
       ErrorCode::bad_format, 2, "ro.json: tls: unknown member \"ciphers\""},
      {"wrong_type", "ro", [](Json& j) { j["threads"] = "two"; }, ErrorCode::bad_format, 2,
       "ro.json: threads: expected an integer"},
      {"wrong_type_in_array", "ro", [](Json& j) { j["supplier_roots"] = Json::array({7}); },
       ErrorCode::bad_format, 2, "ro.json: supplier_roots[0]: expected a string"},
      {"missing_required", "ro", [](Json& j) { j["tls"].erase("cert"); },
       ErrorCode::missing_argument, 2, "ro.json: tls.cert: missing"},
      {"missing_client_roots", "ro", [](Json& j) { j["tls"].erase("client_roots"); },
       ErrorCode::missing_argument, 2, "ro.json: tls.client_roots: missing"},
      {"missing_cert_file", "ro", [](Json& j) { j["tls"]["cert"] = "../nope.pem"; },
       ErrorCode::not_found, 2, "ro.json: tls: "},
      {"missing_icf_key", "ro", [](Json& j) { j["icf_key"] = "../no-such-key"; },
       ErrorCode::not_found, 2, "ro.json: icf_key: "},
      {"unknown_db_scheme", "ro", [](Json& j) { j["db"] = "mysql://u:secret@h/db"; },
       ErrorCode::invalid_argument, 2, "ro.json: db: unknown database URL scheme"},
      {"sho_not_https", "ro", [](Json& j) { j["shos"]["sho-a"] = "http://127.0.0.1:9"; },
       ErrorCode::invalid_argument, 2, "ro.json: shos.sho-a: must be an https:// URL"},
      {"negative_quarantine", "ro", [](Json& j) { j["icf"] = {{"quarantine_s", -1}}; },
       ErrorCode::invalid_argument, 2, "ro.json: icf.quarantine_s: "},
      {"renewal_without_op", "ro",
       [](Json& j) { j["pcid_renewal"] = {{"package_signer", "../ro-signer"}}; },
       ErrorCode::missing_argument, 2, "ro.json: pcid_renewal.op_file: missing"},
      {"renewal_world_readable_op", "ro",
       [](Json& j) {
         j["pcid_renewal"] = {{"package_signer", "../ro-signer"},
                              {"op_file", "../op-readable.hex"}};
       },
       ErrorCode::invalid_argument, 2, "ro.json: pcid_renewal.op_file: "},
      {"renewal_lifetime_too_short", "ro",
       [](Json& j) {
         j["pcid_renewal"] = {
             {"package_signer", "../ro-signer"}, {"op_file", "../op.hex"}, {"lifetime_s", 60}};
       },
       ErrorCode::invalid_argument, 2, "ro.json: pcid_renewal.lifetime_s: "},
      {"bad_listen_in_file", "ro", [](Json& j) { j["listen"] = "localhost:8443"; },
       ErrorCode::invalid_argument, 2, "ro.json: listen: not an IPv4 address"},
      {"eap_gateway_socket_too_long", "ro",
       [](Json& j) { j["eap_gateway"] = {{"socket", std::string(100, 's')}}; },
       ErrorCode::invalid_argument, 2, "ro.json: eap_gateway.socket: "},
      {"eap_gateway_socket_not_a_string", "ro",
       [](Json& j) { j["eap_gateway"] = {{"socket", 7}}; },
       ErrorCode::bad_format, 2, "ro.json: eap_gateway.socket: expected a string"},
      {"eap_gateway_socket_empty", "ro",
       [](Json& j) { j["eap_gateway"] = {{"socket", ""}}; },
       ErrorCode::invalid_argument, 2, "ro.json: eap_gateway.socket: empty"},
      {"eap_gateway_socket_control_character", "ro",
       [](Json& j) { j["eap_gateway"] = {{"socket", std::string("hlr\0.sock", 9)}}; },
       ErrorCode::invalid_argument, 2,
       "ro.json: eap_gateway.socket: must be a path without control characters"},
      {"eap_gateway_without_socket", "ro",
       [](Json& j) { j["eap_gateway"] = {{"mode", "0600"}}; },
       ErrorCode::missing_argument, 2, "ro.json: eap_gateway.socket: missing"},
      {"eap_gateway_mode_for_others", "ro",
       [](Json& j) { j["eap_gateway"] = {{"socket", "hlr.sock"}, {"mode", "0666"}}; },
       ErrorCode::invalid_argument, 2, "ro.json: eap_gateway.mode: "},
      {"eap_gateway_mode_a_number", "ro",
       [](Json& j) { j["eap_gateway"] = {{"socket", "hlr.sock"}, {"mode", 384}}; },
       ErrorCode::bad_format, 2, "ro.json: eap_gateway.mode: expected a string"},
      {"eap_gateway_a_string", "ro", [](Json& j) { j["eap_gateway"] = "hlr.sock"; },
       ErrorCode::bad_format, 2, "ro.json: eap_gateway: expected an object"},
      {"eap_gateway_unknown_key", "ro",
       [](Json& j) { j["eap_gateway"] = {{"socket", "hlr.sock"}, {"group", "hostapd"}}; },
       ErrorCode::bad_format, 2, "ro.json: eap_gateway: unknown member \"group\""},
      {"direct_drf_url_not_https", "ro",
       [](Json& j) { j["direct"] = {{"drf_url", "http://127.0.0.1:9"}}; },
       ErrorCode::invalid_argument, 2, "ro.json: direct.drf_url: must be an https:// URL"},
      {"direct_enabled_not_a_boolean", "ro", [](Json& j) { j["direct"] = {{"enabled", "yes"}}; },
       ErrorCode::bad_format, 2, "ro.json: direct.enabled: expected true or false"},
      {"direct_challenge_lifetime_zero", "ro",
       [](Json& j) { j["direct"] = {{"challenge_lifetime_s", 0}}; }, ErrorCode::invalid_argument,
       2, "ro.json: direct.challenge_lifetime_s: "},
      {"direct_unknown_key", "ro", [](Json& j) { j["direct"] = {{"url", "https://h:1"}}; },
       ErrorCode::bad_format, 2, "ro.json: direct: unknown member \"url\""},
      {"vno_route_without_home", "vno", [](Json& j) { j["routes"][0]["home"] = "ro-2"; },
       ErrorCode::invalid_argument, 2, "vno.json: routes[0].home: not a key of homes"},
      {"vno_missing_homes", "vno", [](Json& j) { j.erase("homes"); }, ErrorCode::missing_argument,
       2, "vno.json: homes: missing"},
      {"vno_missing_client", "vno", [](Json& j) { j.erase("client"); }, ErrorCode::missing_argument,
       2, "vno.json: client: missing"},
      {"world_readable_op_file", "supplier",
       [](Json& j) { j["device"]["op_file"] = "../op-readable.hex"; }, ErrorCode::invalid_argument,
       2, "supplier.json: device.op_file: "},
      {"op_file_missing", "supplier", [](Json& j) { j["device"]["op_file"] = "../none.hex"; },
       ErrorCode::not_found, 2, "supplier.json: device.op_file: "},
      {"supplier_missing_device_key", "supplier", [](Json& j) { j["device"].erase("ro_operator"); },
       ErrorCode::missing_argument, 2, "supplier.json: device.ro_operator: missing"},
      {"ro_notify_workers_zero", "ro", [](Json& j) { j["notify_workers"] = 0; },
       ErrorCode::invalid_argument, 2, "ro.json: notify_workers: "},
      {"ro_notify_workers_too_many", "ro", [](Json& j) { j["notify_workers"] = 257; },
       ErrorCode::invalid_argument, 2, "ro.json: notify_workers: "},
      {"vno_drf_url_not_https", "vno",
       [](Json& j) { j["routes"][0]["drf_url"] = "http://127.0.0.1:9"; },
       ErrorCode::invalid_argument, 2, "vno.json: routes[0].drf_url: must be an https:// URL"},
      {"vno_drf_url_not_provisioning", "vno",
       [](Json& j) {
         j["routes"][0]["provisioning"] = false;
         j["routes"][0]["drf_url"] = "https://127.0.0.1:9";
       },
       ErrorCode::invalid_argument, 2, "vno.json: routes[0].drf_url: only for a provisioning"},
      // The SHO.
      {"sho_unknown_key", "sho", [](Json& j) { j["ros"][0]["colour"] = "blue"; },
       ErrorCode::bad_format, 2, "sho.json: ros[0]: unknown member \"colour\""},
      {"sho_missing_client", "sho", [](Json& j) { j.erase("client"); },
       ErrorCode::missing_argument, 2, "sho.json: client: missing"},
      {"sho_missing_pva_url", "sho", [](Json& j) { j.erase("pva_url"); },
       ErrorCode::missing_argument, 2, "sho.json: pva_url: missing"},
      {"sho_negative_prepared", "sho", [](Json& j) { j["max_prepared_packages"] = -1; },
       ErrorCode::invalid_argument, 2, "sho.json: max_prepared_packages: "},
      {"sho_no_owners", "sho", [](Json& j) { j["owners"] = Json::array(); },
       ErrorCode::invalid_argument, 2, "sho.json: owners: "},
      {"sho_owner_two_tokens", "sho",
       [](Json& j) { j["owners"][1]["token_file"] = "../owner.token"; },
       ErrorCode::invalid_argument, 2,
       "sho.json: owners[1]: give one of token_sha256 and token_file"},
      {"sho_owner_no_token", "sho", [](Json& j) { j["owners"][1].erase("token_sha256"); },
       ErrorCode::invalid_argument, 2,
       "sho.json: owners[1]: give one of token_sha256 and token_file"},
      {"sho_owner_bad_hash", "sho", [](Json& j) { j["owners"][1]["token_sha256"] = "abcd"; },
       ErrorCode::invalid_argument, 2, "sho.json: owners[1].token_sha256: "},
      {"sho_owner_bad_id", "sho", [](Json& j) { j["owners"][0]["id"] = "a b"; },
       ErrorCode::invalid_argument, 2, "sho.json: owners[0].id: "},
      {"sho_token_file_readable", "sho",
       [](Json& j) { j["owners"][0]["token_file"] = "../owner-readable.token"; },
       ErrorCode::invalid_argument, 2, "sho.json: owners[0].token_file: "},
      {"sho_token_file_missing", "sho",
       [](Json& j) { j["owners"][0]["token_file"] = "../none.token"; }, ErrorCode::not_found, 2,
       "sho.json: owners[0].token_file: "},
      {"sho_token_file_empty", "sho",
       [](Json& j) { j["owners"][0]["token_file"] = "../empty.token"; },
       ErrorCode::invalid_argument, 2, "sho.json: owners[0].token_file: the file is empty"},
      {"sho_ro_url_not_https", "sho", [](Json& j) { j["ros"][0]["url"] = "http://127.0.0.1:9"; },
       ErrorCode::invalid_argument, 2, "sho.json: ros[0].url: must be an https:// URL"},
      {"sho_ro_two_pins", "sho",
       [](Json& j) { j["ros"][0]["dpf_key_pin"] = std::string(64, '0'); },
       ErrorCode::invalid_argument, 2, "sho.json: ros[0]: give one of dpf_key_pin and dpf_cert"},
      {"sho_ro_no_pin", "sho", [](Json& j) { j["ros"][0].erase("dpf_cert"); },
       ErrorCode::invalid_argument, 2, "sho.json: ros[0]: give one of dpf_key_pin and dpf_cert"},
      {"sho_ro_dpf_cert_missing", "sho", [](Json& j) { j["ros"][0]["dpf_cert"] = "../no.pem"; },
       ErrorCode::not_found, 2, "sho.json: ros[0].dpf_cert: "},
      {"sho_ro_pcid_prefix_letters", "sho", [](Json& j) { j["ros"][0]["pcid_prefix"] = "001a"; },
       ErrorCode::invalid_argument, 2, "sho.json: ros[0].pcid_prefix: "},
      {"sho_no_ros", "sho", [](Json& j) { j["ros"] = Json::array(); },
       ErrorCode::invalid_argument, 2, "sho.json: ros: "},
      {"sho_imsi_prefix_too_long", "sho",
       [](Json& j) {
         j["imsi_prefix"] = "0010212345";
         j["imsi_digits"] = 10;
       },
       ErrorCode::invalid_argument, 2, "sho.json: imsi_prefix: must be shorter than imsi_digits"},
      {"sho_imsi_digits_too_many", "sho", [](Json& j) { j["imsi_digits"] = 16; },
       ErrorCode::invalid_argument, 2, "sho.json: imsi_digits: "},
      {"sho_op_file_readable", "sho", [](Json& j) { j["op_file"] = "../op-readable.hex"; },
       ErrorCode::invalid_argument, 2, "sho.json: op_file: "},
      {"sho_pva_url_not_https", "sho", [](Json& j) { j["pva_url"] = "http://127.0.0.1:10"; },
       ErrorCode::invalid_argument, 2, "sho.json: pva_url: must be an https:// URL"},
      {"sho_signer_missing", "sho", [](Json& j) { j["package_signer"] = "../no-signer"; },
       ErrorCode::not_found, 2, "sho.json: package_signer: "},
      {"sho_pva_roots_missing", "sho", [](Json& j) { j["pva_roots"] = Json::array({"../no.pem"}); },
       ErrorCode::not_found, 2, "sho.json: pva_roots[0]: "},
      {"sho_unknown_db_scheme", "sho", [](Json& j) { j["db"] = "mysql://u:secret@h/db"; },
       ErrorCode::invalid_argument, 2, "sho.json: db: unknown database URL scheme"},
      // The PVA.
      {"pva_unknown_key", "pva", [](Json& j) { j["policy"] = {{"max_age_s", 3}}; },
       ErrorCode::bad_format, 2, "pva.json: policy: unknown member \"max_age_s\""},
      {"pva_missing_result_signer", "pva", [](Json& j) { j.erase("result_signer"); },
       ErrorCode::missing_argument, 2, "pva.json: result_signer: missing"},
      {"pva_result_signer_missing_file", "pva", [](Json& j) { j["result_signer"] = "../none"; },
       ErrorCode::not_found, 2, "pva.json: result_signer: "},
      {"pva_ocsp_signer_missing_file", "pva", [](Json& j) { j["ocsp_signer"] = "../none"; },
       ErrorCode::not_found, 2, "pva.json: ocsp_signer: "},
      {"pva_supplier_ca_not_a_ca", "pva", [](Json& j) { j["supplier_ca"] = "../no-ca"; },
       ErrorCode::not_found, 2, "pva.json: supplier_ca: "},
      {"pva_bad_policy", "pva", [](Json& j) { j["policy"] = {{"report_max_age_s", 0}}; },
       ErrorCode::invalid_argument, 2, "pva.json: policy.report_max_age_s: "},
      {"pva_bad_challenge_lifetime", "pva", [](Json& j) { j["challenge_lifetime_s"] = "5"; },
       ErrorCode::bad_format, 2, "pva.json: challenge_lifetime_s: expected an integer"},
      {"pva_missing_client_roots", "pva", [](Json& j) { j["tls"].erase("client_roots"); },
       ErrorCode::missing_argument, 2, "pva.json: tls.client_roots: missing"},
      {"pva_bad_supplier_id", "pva", [](Json& j) { j["suppliers"] = Json::array({"a/b"}); },
       ErrorCode::invalid_argument, 2, "pva.json: suppliers[0]: "},
  };
  return rows;
}

Json base_config(const std::string& role) {
  if (role == "ro") return ro_json();
  if (role == "sho") return sho_json();
  if (role == "pva") return pva_json();
  if (role == "vno") return vno_json("https://127.0.0.1:9", "127.0.0.1:9");
  return supplier_json("https://127.0.0.1:9");
}

Result<void> load(const std::string& role, const std::string& path) {
  if (role == "ro") {
    auto c = load_ro_config(path);
    if (!c) return std::unexpected(c.error());
  } else if (role == "vno") {
    auto c = load_vno_config(path);
    if (!c) return std::unexpected(c.error());
  } else if (role == "sho") {
    auto c = load_sho_config(path);
    if (!c) return std::unexpected(c.error());
  } else if (role == "pva") {
    auto c = load_pva_config(path);
    if (!c) return std::unexpected(c.error());
  } else {
    auto c = load_supplier_config(path);
    if (!c) return std::unexpected(c.error());
  }
  return {};
}

TEST(ServeConfig, BadConfigsNameTheKey) {
  for (const auto& row : bad_configs()) {
    SCOPED_TRACE(row.name);
    Json j = base_config(row.role);
    row.edit(j);
    const auto path = write_config("lib-" + row.name, row.role + ".json", j);
    auto r = load(row.role, path);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, row.code) << r.error().message;
    const std::string expected = Files::get().path("lib-" + row.name) + "/" + row.message;
    EXPECT_TRUE(r.error().message.starts_with(expected)) << r.error().message;
    EXPECT_EQ(r.error().message.find("secret"), std::string::npos);
    EXPECT_EQ(r.error().message.find(to_hex(tre::testing::kOp)), std::string::npos);
  }
}

TEST(ServeConfig, NotJsonAndMissingFile) {
  const std::string d = Files::get().path("lib-not-json");
  fs::create_directories(d);
  std::ofstream(d + "/ro.json") << "{\"tls\": ";
  auto r = load_ro_config(d + "/ro.json");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::bad_format);
  EXPECT_TRUE(r.error().message.starts_with(d + "/ro.json: ")) << r.error().message;
  std::ofstream(d + "/dup.json") << R"({"threads": 1, "threads": 2})";
  EXPECT_EQ(load_ro_config(d + "/dup.json").error().code, ErrorCode::bad_format);
  EXPECT_EQ(load_ro_config(d + "/absent.json").error().code, ErrorCode::not_found);
}

// ---------------------------------------------------------------------------------------------
// The binary.

// The ready file's content once the child wrote it; null when it exited or took too long.
Json wait_ready(Child& child, const std::string& ready) {
  const auto end = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < end) {
    if (fs::exists(ready)) return Json::parse(slurp(ready), nullptr, false);
    if (child.wait(0ms)) {
      ADD_FAILURE() << "mcim exited with " << *child.wait(0ms) << ": " << child.err();
      return nullptr;
    }
    std::this_thread::sleep_for(20ms);
  }
  ADD_FAILURE() << "no ready file after 30 s: " << child.err();
  return nullptr;
}

// A port nobody listens on right now (bound and released; the kernel does not hand it out
// again at once).
std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}


// A running service: its child, its URL (and gateway), checked healthy.
struct Service {
  std::unique_ptr<Child> child;
  std::string dir, url, gateway;
};

Service start(const std::string& role, const Json& config, std::vector<std::string> extra = {}) {
  Service s;
  const auto path = write_config("run-" + role, role + ".json", config);
  s.dir = Files::get().path("run-" + role);
  const std::string ready = s.dir + "/ready.json";
  std::vector<std::string> args = {"serve", role, "--config", path, "--ready-file", ready};
  args.insert(args.end(), extra.begin(), extra.end());
  s.child = std::make_unique<Child>(args, s.dir);
  EXPECT_TRUE(s.child->started());
  const Json r = wait_ready(*s.child, ready);
  if (!r.is_object()) return s;
  s.url = r.value("url", "");
  s.gateway = r.value("gateway", "");
  EXPECT_TRUE(s.url.starts_with("https://127.0.0.1:")) << r.dump();
  for (auto it = r.begin(); it != r.end(); ++it) {
    EXPECT_TRUE(it.key() == "url" || it.key() == "gateway") << it.key();
  }
  return s;
}

void expect_healthy(const Service& s, const std::string& role) {
  ASSERT_FALSE(s.url.empty());
  auto client = net::testing::make_client();
  ASSERT_TRUE(client);
  auto health = client->get(s.url + "/healthz");
  ASSERT_TRUE(health) << health.error().message;
  EXPECT_EQ(health->status, 200) << health->body;
  const Json h = Json::parse(health->body, nullptr, false);
  EXPECT_EQ(h.value("status", ""), "ok") << health->body;
  auto metrics = client->get(s.url + "/metrics");
  ASSERT_TRUE(metrics) << metrics.error().message;
  EXPECT_EQ(metrics->status, 200);
  // The server's connection counters are in the service's registry.
  EXPECT_NE(metrics->body.find("mcim_http_connections_total"), std::string::npos);
  EXPECT_NE(s.child->err().find("info " + role + ": listening on " + s.url), std::string::npos)
      << s.child->err();
}

void expect_graceful_stop(Service& s, int sig = SIGTERM) {
  s.child->signal(sig);
  const auto code = s.child->wait(5s);
  ASSERT_TRUE(code.has_value()) << "still running 5 s after the signal";
  EXPECT_EQ(*code, 0) << s.child->err();
  EXPECT_FALSE(fs::exists(s.dir + "/ready.json"));
  EXPECT_FALSE(accepts_connections(address_of(s.url)));
  if (!s.gateway.empty()) {
    EXPECT_FALSE(accepts_connections(s.gateway));
  }
  const std::string everything = s.child->out() + s.child->err();
  EXPECT_EQ(everything.find(to_hex(tre::testing::kOp)), std::string::npos);
}

TEST(ServeCli, RoVnoAndSupplierServeAndStopOnSignal) {
  Service ro = start("ro", ro_json());
  ASSERT_NO_FATAL_FAILURE(expect_healthy(ro, "ro"));
  EXPECT_TRUE(fs::exists(ro.dir + "/ro.db"));

  Service vno = start("vno", vno_json(ro.url, address_of(ro.url)));
  ASSERT_NO_FATAL_FAILURE(expect_healthy(vno, "vno"));
  EXPECT_TRUE(vno.gateway.starts_with("127.0.0.1:")) << vno.gateway;
  EXPECT_TRUE(accepts_connections(vno.gateway));
  EXPECT_NE(vno.child->err().find("gateway listening on " + vno.gateway), std::string::npos);

  Service supplier = start("supplier", supplier_json(ro.url), {"--log-level", "warn"});
  ASSERT_FALSE(supplier.url.empty());
  auto client = net::testing::make_client();
  auto health = client->get(supplier.url + "/healthz");
  ASSERT_TRUE(health) << health.error().message;
  EXPECT_EQ(health->status, 200);
  // --log-level warn: the info lines are not written.
  EXPECT_EQ(supplier.child->err().find("listening on"), std::string::npos);

  expect_graceful_stop(supplier, SIGINT);
  expect_graceful_stop(vno);
  expect_graceful_stop(ro);
  EXPECT_NE(ro.child->err().find("SIGTERM received"), std::string::npos);
}

// With eap_gateway, `mcim serve ro` answers hostapd's eap_sim_db requests on the socket from its
// database (an unknown PCID: FAILURE), says where in its log, and removes the socket at the stop.
TEST(ServeCli, RoServesTheEapGatewayUntilItStops) {
  Json j = ro_json();
  j["eap_gateway"] = {{"socket", "hlr.sock"}};
  j["icf"] = {{"amf", "0000"}};
  Service ro = start("ro", j);
  ASSERT_NO_FATAL_FAILURE(expect_healthy(ro, "ro"));
  const std::string socket = ro.dir + "/hlr.sock";
  struct stat st {};
  ASSERT_EQ(::stat(socket.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_NE(ro.child->err().find("info hlr-gw: serving hostapd's eap_sim_db on " + socket),
            std::string::npos)
      << ro.child->err();
  EXPECT_NE(ro.child->err().find("icf.amf 0000 has no separation bit"), std::string::npos)
      << ro.child->err();
  {
    ro::testing::HlrClient hostapd(ro.dir + "/hostapd.sock");
    EXPECT_EQ(hostapd.ask(socket, "AKA-REQ-AUTH 001019999999999"),
              "AKA-RESP-AUTH 001019999999999 FAILURE");
    hostapd.send(socket, "AKA-REQ-AUTH");  // malformed: no answer, and the next one is served
    EXPECT_EQ(hostapd.ask(socket, "SIM-REQ-AUTH 001019999999999"),
              "SIM-RESP-AUTH 001019999999999 FAILURE");
  }
  expect_graceful_stop(ro);
  EXPECT_FALSE(fs::exists(socket));
}

// The socket's path taken by a file that is not a socket: exit 2 naming the key, the file kept,
// nothing listening.
TEST(ServeCli, EapSocketPathTakenByAFileExits2) {
  Json j = ro_json();
  j["eap_gateway"] = {{"socket", "taken"}};
  const auto path = write_config("bad-eap-taken", "ro.json", j);
  const std::string d = Files::get().path("bad-eap-taken");
  std::ofstream(d + "/taken") << "keep me";
  Child child({"serve", "ro", "--config", path, "--ready-file", d + "/ready.json"}, d);
  const auto code = child.wait(10s);
  ASSERT_TRUE(code.has_value()) << "must not serve";
  EXPECT_EQ(*code, 2) << child.err();
  EXPECT_NE(child.err().find(path + ": eap_gateway.socket: " + d +
                             "/taken: exists and is not a "
                             "socket"),
            std::string::npos)
      << child.err();
  EXPECT_EQ(slurp(d + "/taken"), "keep me");
  EXPECT_FALSE(fs::exists(d + "/ready.json"));
}

TEST(ServeCli, ShoAndPvaServeAndStopOnSignal) {
  Service pva = start("pva", pva_json());
  ASSERT_NO_FATAL_FAILURE(expect_healthy(pva, "pva"));
  EXPECT_TRUE(fs::exists(pva.dir + "/pva.db"));
  Json sho_config = sho_json();
  sho_config["pva_url"] = pva.url;
  Service sho = start("sho", sho_config);
  ASSERT_NO_FATAL_FAILURE(expect_healthy(sho, "sho"));
  EXPECT_TRUE(fs::exists(sho.dir + "/sho.db"));
  expect_graceful_stop(sho);
  expect_graceful_stop(pva, SIGINT);
  EXPECT_EQ(sho.child->err().find(kOwnerToken), std::string::npos);
}

TEST(ServeCli, OverridesFromTheCommandLine) {
  const std::uint16_t port = free_port();
  const std::string db = Files::get().path("override.db");
  Service ro = start("ro", ro_json(),
                     {"--listen", "127.0.0.1:" + std::to_string(port), "--db", "sqlite:" + db});
  EXPECT_EQ(ro.url, "https://127.0.0.1:" + std::to_string(port));
  EXPECT_TRUE(fs::exists(db));
  EXPECT_FALSE(fs::exists(ro.dir + "/ro.db"));
  expect_graceful_stop(ro);
}

TEST(ServeCli, BadConfigsExitWithTheirCodeAndLeaveNothing) {
  for (const auto& row : bad_configs()) {
    SCOPED_TRACE(row.name);
    Json j = base_config(row.role);
    row.edit(j);
    const auto path = write_config("bad-" + row.name, row.role + ".json", j);
    const std::string d = Files::get().path("bad-" + row.name);
    std::vector<std::string> args = {"serve", row.role,       "--config",
                                     path,    "--ready-file", d + "/ready.json"};
    Child child(args, d);
    const auto code = child.wait(10s);
    ASSERT_TRUE(code.has_value()) << "a bad config must not serve";
    EXPECT_EQ(*code, row.exit_code) << child.err();
    EXPECT_NE(child.err().find(d + "/" + row.message), std::string::npos) << child.err();
    EXPECT_EQ(child.err().find("secret"), std::string::npos) << child.err();
    EXPECT_FALSE(fs::exists(d + "/ready.json"));
    EXPECT_FALSE(fs::exists(d + "/ro.db"));
  }
}

TEST(ServeCli, BadCommandLines) {
  const auto path = write_config("bad-cli", "ro.json", ro_json());
  const std::string d = Files::get().path("bad-cli");
  struct Row {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Row> rows = {
      {{"--listen", "localhost:80"}, "--listen: not an IPv4 address"},
      {{"--listen", "127.0.0.1:99999"}, "--listen: the port must be 0..65535"},
      {{"--log-level", "loud"}, "--log-level: must be debug, info, warn or error"},
      {{"--db", "mysql://u:secret@h/db"}, "--db: unknown database URL scheme"},
  };
  for (const auto& row : rows) {
    SCOPED_TRACE(row.args[0] + " " + row.args[1]);
    std::vector<std::string> args = {"serve", "ro", "--config", path};
    args.insert(args.end(), row.args.begin(), row.args.end());
    Child child(args, d);
    const auto code = child.wait(10s);
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, 2);
    EXPECT_NE(child.err().find(row.message), std::string::npos) << child.err();
    EXPECT_EQ(child.err().find("secret"), std::string::npos) << child.err();
    EXPECT_FALSE(fs::exists(d + "/ro.db"));
  }
  Child no_config({"serve", "ro"}, d);
  EXPECT_EQ(no_config.wait(10s), 2);
  EXPECT_NE(no_config.err().find("--config: required"), std::string::npos) << no_config.err();
  Child no_db_for_vno({"serve", "vno", "--config", path, "--db", "memory:"}, d);
  EXPECT_EQ(no_db_for_vno.wait(10s), 2);
}

// The port is taken: io_error, which is bad input for the CLI (exit 2), and the VNO's gateway,
// started before the attach server, is closed again.
TEST(ServeCli, PortInUseExitsAndLeavesNothingListening) {
  auto busy = net::testing::start_server(
      [](const net::HttpRequest&) { return net::HttpResponse{}; }, std::nullopt);
  ASSERT_TRUE(busy);
  Json v = vno_json("https://127.0.0.1:9", "127.0.0.1:9");
  const std::string gateway = "127.0.0.1:" + std::to_string(free_port());
  v["gateway"] = {{"listen", gateway}};
  v["listen"] = busy->address();
  const auto path = write_config("bad-port", "vno.json", v);
  const std::string d = Files::get().path("bad-port");
  Child child({"serve", "vno", "--config", path, "--ready-file", d + "/ready.json"}, d);
  const auto code = child.wait(10s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2) << child.err();
  EXPECT_NE(child.err().find("listen: "), std::string::npos) << child.err();
  EXPECT_FALSE(fs::exists(d + "/ready.json"));
  EXPECT_FALSE(accepts_connections(gateway));
  EXPECT_TRUE(accepts_connections(busy->address()));  // ours, untouched
}

}  // namespace
}  // namespace mcim::cli
