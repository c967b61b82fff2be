// `mcim up`: start_system in-process (a generated PKI, six services answering /healthz over TLS
// with it, config files that `mcim serve` loads, the PKI reused by a second start, hostapd behind
// the VNO's RADIUS relay or its absence said, devices over non-3GPP access with `mcim device
// run`), the options file and its refusals, and the binary as a process: the table on stdout, a
// graceful stop on SIGTERM, exit 2 for bad options, `mcim demo --system` against it.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "../common/udp_port_util.h"
#include "../pki/pki_test_util.h"
#include "../roles/hlr_gw_test_util.h"
#include "child_process.h"
#include "cli/serve_config.h"
#include "cli/up_command.h"
#include "cli_test_util.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/random.h"
#include "net/json_schema.h"
#include "net/tls.h"
#include "pki/authority.h"
#include "sim/fleet.h"
#include "tre/bundle.h"
#include "tre/tre.h"

namespace mcim::cli {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using net::Json;
using pki::testing::TempDir;
using testing::accepts_connections;
using testing::address_of;
using testing::Child;
using testing::slurp;
using test_util::executable;
using test_util::udp_port_taken;

// The options of a system in dir/system that logs warnings only.
SystemOptions quiet_options(const TempDir& dir) {
  SystemOptions o;
  o.dir = dir / "system";
  o.log_level = "warn";
  return o;
}

// /healthz over TLS, trusting only the system's own root.
void expect_healthy(net::HttpsClient& client, const std::string& url) {
  auto health = client.get(url + "/healthz");
  ASSERT_TRUE(health) << url << ": " << health.error().message;
  EXPECT_EQ(health->status, 200) << url << ": " << health->body;
}

TEST(UpSystem, StartsEveryServiceWiredAndReusesItsPki) {
  TempDir dir;
  SystemOptions o = quiet_options(dir);
  std::string root_pem, token;
  {
    auto system = start_system(o);
    ASSERT_TRUE(system) << system.error().message;
    const System& s = **system;
    ASSERT_EQ(s.services().size(), 6u);
    std::vector<std::string> roles;
    for (const auto& svc : s.services()) {
      roles.push_back(svc.role);
      EXPECT_TRUE(svc.url.starts_with("https://127.0.0.1:")) << svc.url;
      EXPECT_EQ(svc.config, s.options().dir + "/" + svc.role + ".json");
      ASSERT_NO_FATAL_FAILURE(expect_healthy(*s.plain_client(), svc.url));
    }
    std::sort(roles.begin(), roles.end());
    EXPECT_EQ(roles, (std::vector<std::string>{"pva", "ro", "sho", "sho2", "supplier", "vno"}));
    EXPECT_TRUE(s.gateway().starts_with("127.0.0.1:")) << s.gateway();
    EXPECT_EQ(s.eap_socket(), s.options().dir + "/ro-eap.sock");
    EXPECT_EQ(s.url("ro"), s.services()[1].url);
    EXPECT_EQ(s.url("nobody"), "");

    // The files of the layout; the secrets private.
    for (const char* f :
         {"pki/operators-ca/ca.pem", "pki/supplier-ca/ca.pem", "pki/icf.pem", "pki/sho-signer.pem",
          "pki/pva-signer.pem", "pki/ocsp-signer.pem", "pki/supplier-signer.pem",
          "pki/references-signer.pem", "pki/tls/factory-client.pem", "pki/sho2-signer.pem",
          "pki/tls/sho2-client.pem", "ro.db", "sho.db", "sho2.db", "pva.db"}) {
      EXPECT_TRUE(fs::exists(s.options().dir + "/" + f)) << f;
    }
    for (const char* f :
         {"pki/ro-op.hex", "pki/sho-op.hex", "pki/sho2-op.hex", "pki/owner.token"}) {
      struct stat st {};
      ASSERT_EQ(::stat((s.options().dir + "/" + f).c_str(), &st), 0) << f;
      EXPECT_EQ(st.st_mode & 077, 0u) << f;
    }
    EXPECT_EQ(s.owner_token_file(), s.options().dir + "/pki/owner.token");
    token = s.owner_token();
    EXPECT_EQ(token.size(), 32u);
    root_pem = slurp(s.tls_root_file());
    EXPECT_FALSE(root_pem.empty());
    EXPECT_TRUE(s.device_trust());

    // The factory admin reaches the supplier with its client certificate: an unknown batch is a
    // 404, not a 401/403.
    auto batch = s.factory_client()->get(s.url("supplier") + "/v1/batches/none");
    ASSERT_TRUE(batch) << batch.error().message;
    EXPECT_EQ(batch->status, 404) << batch->body;

    // The owner's token opens the SHO's owner routes (404: no such device), a wrong one does not.
    auto mine = s.plain_client()->request("GET", s.url("sho") + "/v1/subscribers/dev-1", "", "",
                                          {{"Authorization", "Bearer " + token}});
    ASSERT_TRUE(mine) << mine.error().message;
    EXPECT_EQ(mine->status, 404) << mine->body;
    auto wrong = s.plain_client()->request("GET", s.url("sho") + "/v1/subscribers/dev-1", "", "",
                                           {{"Authorization", "Bearer " + std::string(32, '0')}});
    ASSERT_TRUE(wrong) << wrong.error().message;
    EXPECT_EQ(wrong->status, 401) << wrong->body;

    // Every config file loads as `mcim serve` loads it.
    EXPECT_TRUE(load_ro_config(s.options().dir + "/ro.json"));
    EXPECT_TRUE(load_vno_config(s.options().dir + "/vno.json"));
    EXPECT_TRUE(load_supplier_config(s.options().dir + "/supplier.json"));
    EXPECT_TRUE(load_sho_config(s.options().dir + "/sho.json"));
    EXPECT_TRUE(load_pva_config(s.options().dir + "/pva.json"));
  }
  // Stopped: a second start on the same directory keeps the PKI and the token.
  auto again = start_system(o);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(slurp((*again)->tls_root_file()), root_pem);
  EXPECT_EQ((*again)->owner_token(), token);
  for (const auto& svc : (*again)->services()) {
    ASSERT_NO_FATAL_FAILURE(expect_healthy(*(*again)->plain_client(), svc.url));
  }
  const auto urls = (*again)->services();
  const std::string eap = (*again)->eap_socket();
  again->reset();
  for (const auto& svc : urls) EXPECT_FALSE(accepts_connections(address_of(svc.url))) << svc.role;
  EXPECT_FALSE(fs::exists(eap)) << "the EAP socket outlived the system";
}

// describe_system reads a running system back from its directory as another process would: the
// same services and URLs, the prefixes and model of its files, clients that reach it. A directory
// without a system, a stopped system and references made for another binary are refused.
TEST(UpSystem, DescribeSystemReadsTheRunningSystemBack) {
  TempDir dir;
  SystemOptions o = quiet_options(dir);
  o.pcid_prefix = "0010177";
  o.imsi_prefix = "00103";
  o.imsi_prefix2 = "00104";
  o.model = "model-x";
  auto system = start_system(o);
  ASSERT_TRUE(system) << system.error().message;
  const System& s = **system;
  EXPECT_TRUE(fs::exists(s.options().dir + "/references.json"));

  auto described = describe_system(o.dir);
  ASSERT_TRUE(described) << described.error().message;
  const SystemDescription& d = **described;
  ASSERT_EQ(d.services().size(), s.services().size());
  for (std::size_t i = 0; i < d.services().size(); ++i) {
    EXPECT_EQ(d.services()[i].role, s.services()[i].role);
    EXPECT_EQ(d.services()[i].url, s.services()[i].url);
    EXPECT_EQ(d.services()[i].config, s.services()[i].config);
  }
  EXPECT_EQ(d.options().dir, s.options().dir);
  EXPECT_EQ(d.options().pcid_prefix, "0010177");
  EXPECT_EQ(d.options().imsi_prefix, "00103");
  EXPECT_EQ(d.options().imsi_prefix2, "00104");
  EXPECT_EQ(d.options().model, "model-x");
  EXPECT_TRUE(d.options().db_url.empty());
  EXPECT_EQ(d.owner_token(), s.owner_token());
  EXPECT_EQ(d.batches_dir(), s.batches_dir());
  auto batch = d.factory_client()->get(d.url("supplier") + "/v1/batches/none");
  ASSERT_TRUE(batch) << batch.error().message;
  EXPECT_EQ(batch->status, 404) << batch->body;

  // References for another binary: the devices here would all fail their attestation.
  const std::string refs = s.options().dir + "/references.json";
  const std::string kept = slurp(refs);
  Json other = Json::parse(kept);
  other["tre.binary"] = std::string(64, '0');
  std::ofstream(refs) << other.dump();
  auto mismatch = describe_system(o.dir);
  ASSERT_FALSE(mismatch);
  EXPECT_EQ(mismatch.error().code, ErrorCode::conflicting_arguments);
  EXPECT_NE(mismatch.error().message.find("another binary"), std::string::npos)
      << mismatch.error().message;
  std::ofstream(refs) << kept;

  system->reset();
  auto stopped = describe_system(o.dir);
  ASSERT_FALSE(stopped);
  EXPECT_EQ(stopped.error().code, ErrorCode::io_error);
  EXPECT_NE(stopped.error().message.find("does not answer"), std::string::npos)
      << stopped.error().message;

  auto empty = describe_system(dir / "nothing");
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, ErrorCode::not_found);
  EXPECT_NE(empty.error().message.find("no system of `mcim up` here"), std::string::npos)
      << empty.error().message;
}

// What hostapd's eap_sim_db asks the RO's EAP gateway about a device of this system: FAILURE while
// its PCID is unknown or dormant, and once the owner registered it and announced its switch-on
// (F1, F7) a vector that the device's TRE accepts, with the same RES, CK and IK.
TEST(UpSystem, TheRoAnswersHostapdOnItsEapSocket) {
  TempDir dir;
  SystemOptions o = quiet_options(dir);
  auto system = start_system(o);
  ASSERT_TRUE(system) << system.error().message;
  const System& s = **system;
  const std::string socket = s.eap_socket();
  ASSERT_FALSE(socket.empty());
  struct stat st {};
  ASSERT_EQ(::stat(socket.c_str(), &st), 0) << socket;
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ro::testing::HlrClient hostapd(dir / "hostapd.sock");
  const std::string unknown = o.pcid_prefix + "99999999";
  EXPECT_EQ(hostapd.ask(socket, "AKA-REQ-AUTH " + unknown),
            "AKA-RESP-AUTH " + unknown + " FAILURE");

  // F0 through the supplier: the batch is handed over to the RO's ICF, the PCID dormant there.
  const std::string pcid = o.pcid_prefix + "00000001";
  auto made = s.factory_client()->request(
      "POST", s.url("supplier") + "/v1/batches",
      Json{{"batch_id", "eap-1"}, {"first_pcid", pcid}, {"count", 1}}.dump(), net::kJsonContentType,
      {});
  ASSERT_TRUE(made) << made.error().message;
  ASSERT_EQ(made->status, 201) << made->body;
  ASSERT_EQ(Json::parse(made->body).value("handover", ""), "done") << made->body;
  std::string bundle_file;
  for (const auto& e : fs::directory_iterator(s.batches_dir() + "/eap-1/bundles")) {
    bundle_file = e.path().string();
  }
  auto bundle = tre::read_bundle(bundle_file);
  ASSERT_TRUE(bundle) << bundle_file << ": " << bundle.error().message;
  ASSERT_EQ(bundle->pcid, pcid);
  EXPECT_EQ(hostapd.ask(socket, "AKA-REQ-AUTH " + pcid), "AKA-RESP-AUTH " + pcid + " FAILURE");

  // F1 and F7 as the owner: registered at the SHO (and so at the RO's DRF), switched on.
  const std::vector<std::pair<std::string, std::string>> bearer = {
      {"Authorization", "Bearer " + s.owner_token()}};
  auto pem = pki::certificate_pem(bundle->platform_chain.front().get());
  ASSERT_TRUE(pem);
  const std::string pin(tre::pin_text(*bundle));
  auto reg = s.plain_client()->request(
      "POST", s.url("sho") + "/v1/subscribers",
      Json{{"device_id", bundle->device_id}, {"pcid", pcid}, {"pin", pin}, {"platform_cert", *pem}}
          .dump(),
      net::kJsonContentType, bearer);
  ASSERT_TRUE(reg) << reg.error().message;
  ASSERT_EQ(reg->status, 201) << reg->body;
  auto on = s.plain_client()->request(
      "POST", s.url("sho") + "/v1/subscribers/" + bundle->device_id + "/activation",
      Json{{"window_s", 3600}}.dump(), net::kJsonContentType, bearer);
  ASSERT_TRUE(on) << on.error().message;
  ASSERT_EQ(on->status, 200) << on->body;

  auto line = hostapd.ask(socket, "AKA-REQ-AUTH " + pcid);
  ASSERT_TRUE(line) << "no answer";
  auto answer = ro::testing::parse_aka_answer(*line);
  ASSERT_TRUE(answer) << "not a vector";  // the line holds IK and CK: not printed
  EXPECT_EQ(answer->imsi, pcid);
  EXPECT_EQ(answer->autn[6] & 0x80, 0x80) << "AMF separation bit (EAP-AKA' needs it)";
  tre::Options tre_options;
  tre_options.dir = dir / "tre";
  ASSERT_TRUE(tre::Tre::init(tre_options, *bundle));
  auto device = tre::Tre::open(tre_options);
  ASSERT_TRUE(device) << device.error().message;
  auto usim = device->authenticate(pcid, answer->rand, answer->autn);
  ASSERT_TRUE(usim) << usim.error().message;
  const auto* ok = std::get_if<aka::UsimSuccess>(&*usim);
  ASSERT_TRUE(ok) << "the TRE refused the vector";
  EXPECT_EQ(ByteVec(ok->res.view().begin(), ok->res.view().end()), answer->res);
  EXPECT_TRUE(ok->ck == answer->ck);
  EXPECT_TRUE(ok->ik == answer->ik);
}

// A directory whose path leaves no room for the socket's name within 107 bytes: the system runs,
// without an EAP gateway, and its ro.json has none.
TEST(UpSystem, ADirectoryTooLongForTheSocketRunsWithoutIt) {
  TempDir dir;
  SystemOptions o;
  o.dir = dir / std::string(100, 'd');
  o.log_level = "error";
  auto system = start_system(o);
  ASSERT_TRUE(system) << system.error().message;
  EXPECT_EQ((*system)->eap_socket(), "");
  EXPECT_FALSE(fs::exists(o.dir + "/ro-eap.sock"));
  auto ro = load_ro_config(o.dir + "/ro.json");
  ASSERT_TRUE(ro) << ro.error().message;
  EXPECT_FALSE(ro->eap_gateway);
  ASSERT_NO_FATAL_FAILURE(expect_healthy(*(*system)->plain_client(), (*system)->url("ro")));
}

// ---- Non-3GPP access (F3) --------------------------------------------------------------------


std::uint32_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

// One device of the system made by its supplier (F0), registered and switched on by its owner
// (F1, F7), its TRE holding the registration nonce under work/tre/<device id>: ready for `mcim
// device run`. The TRE measures this process, as start_system's references do.
std::string enrolled_device(const SystemDescription& s, const std::string& work,
                            const std::string& batch, int n) {
  sim::FleetEndpoints e;
  e.supplier_url = s.url("supplier");
  e.sho_url = s.url("sho");
  e.factory = s.factory_client();
  e.owner = s.plain_client();
  e.owner_token = s.owner_token();
  e.supplier_out_dir = s.batches_dir();
  sim::FleetOptions o;
  o.devices = 1;
  o.dir = work;
  o.first_pcid = fmt::format("{}{:08}", s.options().pcid_prefix, n);
  auto made = sim::manufacture(e, o, batch);
  EXPECT_TRUE(made) << made.error().message;
  if (!made) return "";
  sim::FleetDevice& d = made->front();
  auto init = sim::init_tre(d, o);
  EXPECT_TRUE(init) << init.error().message;
  auto reg = sim::register_device(d, e, o);
  EXPECT_TRUE(reg) << reg.error().message;
  d.tre.reset();  // `mcim device run` opens it
  return (fs::path(work) / "tre" / d.bundle.device_id).string();
}

// `mcim device run` over F3 against the system; its JSON answer (exit 0 expected).
Json device_run(const SystemDescription& s, const std::string& tre,
                std::vector<std::string> access) {
  std::vector<std::string> args = {"device",    "run",        "--dir",   tre,
                                   "--vno",     s.url("vno"), "--trust", s.tls_root_file(),
                                   "--timeout", "30",         "--json"};
  args.insert(args.end(), access.begin(), access.end());
  const auto r = testing::mcim(args);
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  auto j = Json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.out;
  return j;
}

std::vector<std::string> step_names(const Json& run) {
  std::vector<std::string> names;
  if (run.contains("step")) {
    for (const auto& s : run["step"]) names.push_back(s.value("name", ""));
  }
  return names;
}

// With hostapd installed, start_system runs it behind the VNO's RADIUS relay, its files private,
// its vectors from the RO's EAP gateway; describe_system finds the same access; a device made and
// registered through the system runs F3 over EAP-AKA with `mcim device run` until it is
// operational; and the system's stop stops hostapd.
TEST(UpSystem, HostapdServesEapAndADeviceRunProvisionsOverIt) {
  ASSERT_TRUE(executable("/usr/sbin/hostapd") && executable("/usr/bin/eapol_test"))
      << "hostapd and eapol_test are required: run scripts/install-deps";
  TempDir dir;
  SystemOptions o = quiet_options(dir);
  auto system = start_system(o);
  ASSERT_TRUE(system) << system.error().message;
  const System& s = **system;
  const Non3gppAccess& n = s.non3gpp();
  const std::string d = s.options().dir;
  EXPECT_EQ(n.eap_unavailable, "");
  EXPECT_EQ(n.drf_url, s.url("ro"));
  ASSERT_TRUE(n.radius.starts_with("127.0.0.1:")) << n.radius;
  EXPECT_EQ(n.radius_secret_file, d + "/pki/radius.secret");
  EXPECT_EQ(n.hostapd_log, d + "/hostapd/hostapd.log");
  for (const char* f : {"pki/radius.secret", "hostapd/radius_clients", "hostapd/hostapd.conf"}) {
    EXPECT_EQ(mode_of(d + "/" + f), 0600u) << f;
  }
  EXPECT_EQ(mode_of(d + "/hostapd"), 0700u);
  const std::string conf = slurp(d + "/hostapd/hostapd.conf");
  EXPECT_NE(conf.find("eap_sim_db=unix:" + s.eap_socket() + "\n"), std::string::npos) << conf;
  EXPECT_EQ(slurp(d + "/hostapd/eap_users"), "\"0\"*\tAKA\n\"6\"*\tAKA'\n");
  auto secret = read_radius_secret(n.radius_secret_file);
  ASSERT_TRUE(secret) << secret.error().message;
  EXPECT_EQ(slurp(d + "/hostapd/radius_clients"),
            "127.0.0.1/32\t" + std::string((*secret)->text()) + "\n");
  EXPECT_EQ(conf.find((*secret)->text()), std::string::npos) << "the secret in hostapd.conf";

  // The files tell the relay to send to hostapd, and the RO to serve direct access.
  auto vno = load_vno_config(d + "/vno.json");
  ASSERT_TRUE(vno) << vno.error().message;
  ASSERT_TRUE(vno->service.non3gpp);
  EXPECT_EQ(fmt::format("127.0.0.1:{}", vno->service.non3gpp->listen_port), n.radius);
  const int aaa = vno->service.non3gpp->aaa_port;
  EXPECT_TRUE(udp_port_taken(aaa)) << "hostapd is not listening on " << aaa;
  EXPECT_NE(conf.find(fmt::format("radius_server_auth_port={}\n", aaa)), std::string::npos);
  auto ro = load_ro_config(d + "/ro.json");
  ASSERT_TRUE(ro) << ro.error().message;
  EXPECT_TRUE(ro->service.direct_access);
  EXPECT_EQ(ro->service.direct_drf_url, s.url("ro"));

  auto described = describe_system(o.dir);
  ASSERT_TRUE(described) << described.error().message;
  EXPECT_EQ((*described)->non3gpp().radius, n.radius);
  EXPECT_EQ((*described)->non3gpp().radius_secret_file, n.radius_secret_file);
  EXPECT_EQ((*described)->non3gpp().drf_url, n.drf_url);

  const std::string tre = enrolled_device(s, dir / "devices", "eap-1", 1);
  ASSERT_FALSE(tre.empty());
  const Json run = device_run(
      s, tre,
      {"--access", "eap-aka", "--radius", n.radius, "--radius-secret-file", n.radius_secret_file});
  EXPECT_EQ(run.value("outcome", ""), "operational") << run.dump();
  EXPECT_TRUE(run.value("imsi", "").starts_with(s.options().imsi_prefix)) << run.dump();
  EXPECT_EQ(step_names(run),
            (std::vector<std::string>{"attach_eap", "discovery", "attestation", "package",
                                      "install", "report", "attach_imsi"}));

  system->reset();
  EXPECT_FALSE(udp_port_taken(aaa)) << "hostapd outlived the system";
}

// Without hostapd the system runs 3GPP and direct access and says why there is no EAP access:
// no relay in vno.json, a device provisions over direct access.
TEST(UpSystem, WithoutHostapdTheSystemRunsDirectAccessAndSaysWhyNotEap) {
  TempDir dir;
  SystemOptions o;
  o.dir = dir / "system";
  o.log_level = "error";
  o.hostapd = dir / "no-hostapd";
  auto system = start_system(o);
  ASSERT_TRUE(system) << system.error().message;
  const System& s = **system;
  const Non3gppAccess& n = s.non3gpp();
  EXPECT_EQ(n.radius, "");
  EXPECT_EQ(n.radius_secret_file, "");
  EXPECT_EQ(n.eap_unavailable, o.hostapd + " is not installed (Debian package hostapd)");
  EXPECT_EQ(n.drf_url, s.url("ro"));
  EXPECT_FALSE(fs::exists(s.options().dir + "/hostapd"));
  auto vno = load_vno_config(s.options().dir + "/vno.json");
  ASSERT_TRUE(vno) << vno.error().message;
  EXPECT_FALSE(vno->service.non3gpp);
  auto described = describe_system(o.dir);
  ASSERT_TRUE(described) << described.error().message;
  EXPECT_EQ((*described)->non3gpp().radius, "");
  EXPECT_NE((*described)->non3gpp().eap_unavailable.find("no non3gpp"), std::string::npos);
  EXPECT_EQ((*described)->non3gpp().drf_url, s.url("ro"));

  const std::string tre = enrolled_device(s, dir / "devices", "direct-1", 1);
  ASSERT_FALSE(tre.empty());
  const Json run = device_run(s, tre, {"--access", "direct", "--drf", n.drf_url});
  EXPECT_EQ(run.value("outcome", ""), "operational") << run.dump();
  EXPECT_EQ(step_names(run),
            (std::vector<std::string>{"connect_direct", "discovery", "attestation", "package",
                                      "install", "report", "attach_imsi"}));
}

// The PVA holds references that a device of this system matches: a TRE made by the system's
// supplier CA attests over a PVA challenge (asked as the SHO) and the PVA finds it trusted.
TEST(UpSystem, ThePvaTrustsADeviceOfTheSystem) {
  TempDir dir;
  SystemOptions o = quiet_options(dir);
  auto system = start_system(o);
  ASSERT_TRUE(system) << system.error().message;
  const System& s = **system;

  SystemClock clock;
  OsRandom rng;
  auto ca = pki::Authority::open(s.supplier_ca_dir());
  ASSERT_TRUE(ca) << ca.error().message;
  auto root = pki::load_certificate(s.tls_root_file());
  ASSERT_TRUE(root) << root.error().message;
  tre::ManufactureSpec spec;
  spec.pcid = o.pcid_prefix + "00000001";
  spec.ro_operator = kUpRo;
  spec.operator_roots = {root->get()};
  auto bundle = tre::manufacture(*ca, spec, clock, rng);
  ASSERT_TRUE(bundle) << bundle.error().message;
  tre::Options tre_options;
  tre_options.dir = dir / "tre";
  ASSERT_TRUE(tre::Tre::init(tre_options, *bundle));
  auto device = tre::Tre::open(tre_options);
  ASSERT_TRUE(device) << device.error().message;

  auto sho_id = net::load_tls_identity(s.options().dir + "/pki/tls/sho-client.pem",
                                       s.options().dir + "/pki/tls/sho-client.key");
  ASSERT_TRUE(sho_id) << sho_id.error().message;
  net::HttpsClientOptions tls;
  tls.trust = s.device_trust();
  tls.identity = *sho_id;
  auto sho = net::HttpsClient::create(std::move(tls));
  ASSERT_TRUE(sho) << sho.error().message;
  auto challenge = (*sho)->request("POST", s.url("pva") + "/v1/pva/challenges",
                                   Json{{"device_id", bundle->device_id}}.dump(),
                                   net::kJsonContentType, {});
  ASSERT_TRUE(challenge) << challenge.error().message;
  ASSERT_EQ(challenge->status, 201) << challenge->body;
  const Json c = Json::parse(challenge->body);
  auto nonce = parse_hex(c["nonce"].get<std::string>(), "nonce");
  ASSERT_TRUE(nonce);
  auto report = device->attest(*nonce);
  ASSERT_TRUE(report) << report.error().message;
  const Json validation = {
      {"challenge_id", c["challenge_id"]},
      {"report", *report},
      {"platform_chain", Json::array({*pki::certificate_pem(bundle->platform_chain[0].get())})}};
  auto answer = (*sho)->request("POST", s.url("pva") + "/v1/pva/validations", validation.dump(),
                                net::kJsonContentType, {});
  ASSERT_TRUE(answer) << answer.error().message;
  ASSERT_EQ(answer->status, 200) << answer->body;
  const Json result = Json::parse(answer->body);
  EXPECT_TRUE(result.value("trusted", false)) << answer->body;
}

TEST(UpSystem, RefusesAForeignPkiDirectoryAndBadOptions) {
  TempDir dir;
  SystemOptions o;
  o.dir = dir / "foreign";
  fs::create_directories(o.dir + "/pki");
  std::ofstream(o.dir + "/pki/mine.txt") << "not yours";
  auto r = start_system(o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::already_exists);
  EXPECT_EQ(slurp(o.dir + "/pki/mine.txt"), "not yours");
  EXPECT_FALSE(fs::exists(o.dir + "/ro.json"));

  struct Row {
    std::function<void(SystemOptions&)> edit;
    ErrorCode code;
    std::string message;
  };
  const std::vector<Row> rows = {
      {[](SystemOptions& s) { s.dir.clear(); }, ErrorCode::missing_argument, "dir: required"},
      {[](SystemOptions& s) { s.db_url = "sqlite:x.db"; }, ErrorCode::invalid_argument, "--db: "},
      {[](SystemOptions& s) { s.pcid_prefix = "00a01"; }, ErrorCode::invalid_argument,
       "pcid_prefix: "},
      {[](SystemOptions& s) { s.imsi_prefix = "0010199"; }, ErrorCode::invalid_argument,
       "imsi_prefix: must not overlap"},
      {[](SystemOptions& s) { s.log_level = "loud"; }, ErrorCode::invalid_argument, "log_level: "},
  };
  for (const auto& row : rows) {
    SystemOptions bad;
    bad.dir = dir / "bad";
    row.edit(bad);
    auto refused = start_system(bad);
    ASSERT_FALSE(refused) << row.message;
    EXPECT_EQ(refused.error().code, row.code) << refused.error().message;
    EXPECT_TRUE(refused.error().message.starts_with(row.message)) << refused.error().message;
  }
  EXPECT_FALSE(fs::exists(dir / "bad"));
}

TEST(UpSystem, OptionsFile) {
  TempDir dir;
  const std::string path = dir / "up.json";
  std::ofstream(path) << R"({"dir": "sys", "db": "postgresql://h/db", "ports": {"ro": 18443,
    "gateway": 18080, "radius": 18120, "aaa": 18121}, "device_binary": "bin/mcim", "model": "m-2",
    "pcid_prefix": "0010188", "imsi_prefix": "00103", "log_level": "debug",
    "hostapd": "/opt/hostapd/sbin/hostapd"})";
  SystemOptions o;
  ASSERT_TRUE(load_system_options(path, o));
  EXPECT_EQ(o.dir, dir / "sys");
  EXPECT_EQ(o.db_url, "postgresql://h/db");
  EXPECT_EQ(o.ports.ro, 18443);
  EXPECT_EQ(o.ports.gateway, 18080);
  EXPECT_EQ(o.ports.sho, 0);
  EXPECT_EQ(o.ports.radius, 18120);
  EXPECT_EQ(o.ports.aaa, 18121);
  EXPECT_EQ(o.hostapd, "/opt/hostapd/sbin/hostapd");
  EXPECT_EQ(o.device_binary, dir / "bin/mcim");
  EXPECT_EQ(o.model, "m-2");
  EXPECT_EQ(o.pcid_prefix, "0010188");
  EXPECT_EQ(o.imsi_prefix, "00103");
  EXPECT_EQ(o.log_level, "debug");

  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"colour": 1})", "up.json: unknown member \"colour\""},
      {R"({"ports": {"ro": 65536}})", "up.json: ports.ro: "},
      {R"({"ports": {"rx": 1}})", "up.json: ports: unknown member \"rx\""},
      {R"({"ports": {"aaa": -1}})", "up.json: ports.aaa: "},
      {R"({"hostapd": true})", "up.json: hostapd: expected a string"},
      {R"({"devices": 3})", "up.json: unknown member \"devices\""},
      {R"({"pcid_prefix": 7})", "up.json: pcid_prefix: expected a string"},
      {R"({"dir": 7})", "up.json: dir: expected a string"},
      {R"({"dir": )", "up.json"},
  };
  for (const auto& [text, message] : bad) {
    std::ofstream(path) << text;
    SystemOptions ignored;
    auto r = load_system_options(path, ignored);
    ASSERT_FALSE(r) << text;
    EXPECT_EQ(kind_of(r.error().code), ErrorKind::bad_input) << r.error().message;
    EXPECT_NE(r.error().message.find(message), std::string::npos) << r.error().message;
  }
  SystemOptions ignored;
  EXPECT_EQ(load_system_options(dir / "absent.json", ignored).error().code, ErrorCode::not_found);
}

// ---- The binary ------------------------------------------------------------------------------

// The table's rows once `mcim up` printed them: role -> url.
std::map<std::string, std::string> wait_table(Child& child) {
  const auto end = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < end) {
    const std::string out = child.out();
    if (out.find("owner token file: ") != std::string::npos) {
      std::map<std::string, std::string> rows;
      static const std::regex row(R"((\w+)\s+(https://127\.0\.0\.1:\d+)\s+(\S+\.json))");
      for (std::sregex_iterator it(out.begin(), out.end(), row), last; it != last; ++it) {
        rows[(*it)[1]] = (*it)[2];
      }
      return rows;
    }
    if (child.wait(0ms)) {
      ADD_FAILURE() << "mcim up exited: " << child.err();
      return {};
    }
    std::this_thread::sleep_for(50ms);
  }
  ADD_FAILURE() << "no table after 60 s: " << child.err();
  return {};
}

TEST(UpCli, PrintsTheTableAndStopsOnSigterm) {
  TempDir dir;
  const std::string sys = dir / "sys";
  Child child({"up", "--dir", sys}, dir.path());
  ASSERT_TRUE(child.started());
  const auto rows = wait_table(child);
  ASSERT_EQ(rows.size(), 6u) << child.out();
  EXPECT_NE(child.out().find("owner token file: " + sys + "/pki/owner.token"), std::string::npos);
  const std::string eap = sys + "/ro-eap.sock";
  EXPECT_NE(child.out().find("eap       " + eap + "\n"), std::string::npos) << child.out();
  {
    ro::testing::HlrClient hostapd(dir / "hostapd.sock");
    EXPECT_EQ(hostapd.ask(eap, "AKA-REQ-AUTH 001019999999999"),
              "AKA-RESP-AUTH 001019999999999 FAILURE");
  }
  for (const char* role : {"supplier", "ro", "vno", "sho", "sho2", "pva"}) {
    EXPECT_NE(child.out().find(sys + "/" + role + ".json"), std::string::npos) << role;
  }
  // Non-3GPP access: the DRF for direct access, the relay for EAP with hostapd behind it.
  EXPECT_NE(child.out().find("direct    " + rows.at("ro") + "\n"), std::string::npos)
      << child.out();
  static const std::regex radius_row(R"(radius    127\.0\.0\.1:(\d+) secret file (\S+) )");
  std::smatch radius;
  const std::string out = child.out();
  ASSERT_TRUE(std::regex_search(out, radius, radius_row)) << out;
  EXPECT_EQ(radius[2].str(), sys + "/pki/radius.secret");
  auto vno = load_vno_config(sys + "/vno.json");
  ASSERT_TRUE(vno) << vno.error().message;
  ASSERT_TRUE(vno->service.non3gpp);
  EXPECT_EQ(vno->service.non3gpp->listen_port, std::stoi(radius[1].str()));
  const int aaa = vno->service.non3gpp->aaa_port;
  EXPECT_TRUE(udp_port_taken(aaa)) << "no hostapd on " << aaa;
  // The process's PKI, trusted from its files.
  net::HttpsClientOptions tls;
  auto root = pki::load_certificate(sys + "/pki/operators-ca/ca.pem");
  ASSERT_TRUE(root) << root.error().message;
  tls.trust = std::make_shared<const pki::TrustAnchors>(
      std::move(*pki::TrustAnchors::from_certs({root->get()})));
  auto client = net::HttpsClient::create(std::move(tls));
  ASSERT_TRUE(client);
  for (const auto& [role, url] : rows) {
    ASSERT_NO_FATAL_FAILURE(expect_healthy(**client, url)) << role;
  }
  child.signal(SIGTERM);
  const auto code = child.wait(15s);
  ASSERT_TRUE(code.has_value()) << "still running 15 s after SIGTERM";
  EXPECT_EQ(*code, 0) << child.err();
  for (const auto& [role, url] : rows) EXPECT_FALSE(accepts_connections(address_of(url))) << role;
  EXPECT_FALSE(fs::exists(eap));
  EXPECT_FALSE(udp_port_taken(aaa)) << "hostapd outlived mcim up";
  const std::string token = slurp(sys + "/pki/owner.token");
  ASSERT_FALSE(token.empty());
  EXPECT_EQ((child.out() + child.err()).find(token.substr(0, 32)), std::string::npos);
}

// A `mcim up` killed with SIGKILL cannot stop its hostapd: the kernel sends hostapd SIGTERM
// (PR_SET_PDEATHSIG), and its RADIUS port is soon free.
TEST(UpCli, HostapdDoesNotOutliveAKilledMcimUp) {
  TempDir dir;
  const std::string sys = dir / "sys";
  Child up({"up", "--dir", sys}, dir.path());
  ASSERT_TRUE(up.started());
  ASSERT_EQ(wait_table(up).size(), 6u) << up.out();
  auto vno = load_vno_config(sys + "/vno.json");
  ASSERT_TRUE(vno && vno->service.non3gpp);
  const int aaa = vno->service.non3gpp->aaa_port;
  ASSERT_TRUE(udp_port_taken(aaa));
  up.signal(SIGKILL);
  ASSERT_EQ(up.wait(15s), 128 + SIGKILL);
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (udp_port_taken(aaa) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_FALSE(udp_port_taken(aaa)) << "hostapd outlived a killed mcim up";
}

// The names of a process's threads (/proc/<pid>/task/*/comm).
std::vector<std::string> thread_names(pid_t pid) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& t : fs::directory_iterator(fmt::format("/proc/{}/task", pid), ec)) {
    std::string n = slurp(t.path() / "comm");
    while (!n.empty() && n.back() == '\n') n.pop_back();
    names.push_back(n);
  }
  return names;
}

// `mcim demo --system` provisions a fleet through the services of a `mcim up` in another process
// (the same binary, so its devices measure what the PVA expects), twice in the same system; the
// services' threads carry their role's name. Refused with exit 2: --db with --system, a directory
// without a system, a system that no longer answers.
TEST(UpCli, DemoRunsAFleetThroughTheSystemOfAnotherProcess) {
  TempDir dir;
  const std::string sys = dir / "sys";
  Child up({"up", "--dir", sys}, dir.path());
  ASSERT_TRUE(up.started());
  ASSERT_EQ(wait_table(up).size(), 6u) << up.out();

  const std::vector<std::string> names = thread_names(up.pid());
  for (const char* name : {"pva-http-0", "ro-http-0", "ro-http-a", "ro-notify-0", "ro-expiry",
                           "ro-eap", "sho-http-0", "vno-http-0", "vno-gw-0", "supplier-http-a"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  }

  fs::create_directories(dir / "demo");
  {
    Child demo({"demo", "--system", sys, "--devices", "3", "--concurrency", "2", "--json"},
               dir / "demo");
    const auto code = demo.wait(180s);
    ASSERT_TRUE(code.has_value()) << "mcim demo --system still running after 180 s";
    ASSERT_EQ(*code, 0) << demo.out() << demo.err();
    const Json j = Json::parse(demo.out());
    EXPECT_EQ(j["devices"], 3);
    EXPECT_EQ(j["provisioned"], 3);
    EXPECT_EQ(j["failed"], 0);
    EXPECT_EQ(j["steps"].back()["step"], "provision");
  }
  {
    // F3 through the other process's system: its DRF, its RADIUS relay and secret file.
    Child demo({"demo", "--system", sys, "--devices", "3", "--access", "non3gpp", "--json"},
               dir / "demo");
    const auto code = demo.wait(180s);
    ASSERT_TRUE(code.has_value()) << "mcim demo --system --access non3gpp still running";
    ASSERT_EQ(*code, 0) << demo.out() << demo.err();
    const Json j = Json::parse(demo.out());
    EXPECT_EQ(j["provisioned"], 3);
    EXPECT_EQ(j["access"], (Json{{"direct", 1}, {"eap-aka", 1}, {"eap-aka-prime", 1}}));
  }
  {
    Child demo({"demo", "--system", sys, "--devices", "2"}, dir / "demo");
    const auto code = demo.wait(180s);
    ASSERT_TRUE(code.has_value());
    ASSERT_EQ(*code, 0) << demo.out() << demo.err();
    EXPECT_NE(demo.out().find("run by `mcim up --dir " + sys + "`"), std::string::npos)
        << demo.out();
    EXPECT_NE(demo.out().find("provisioned 2 of 2 devices"), std::string::npos) << demo.out();
    EXPECT_EQ(demo.out().find(slurp(sys + "/pki/owner.token").substr(0, 32)), std::string::npos);
  }
  auto refused = [&](std::vector<std::string> args, const std::string& message) {
    SCOPED_TRACE(message);
    args.insert(args.begin(), "demo");
    Child demo(args, dir / "demo");
    const auto code = demo.wait(60s);
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, 2) << demo.err();
    EXPECT_NE(demo.err().find(message), std::string::npos) << demo.err();
  };
  refused({"--system", sys, "--db", "postgresql://u@h/db"}, "--db: ");
  refused({"--system", dir / "nothing"}, "no system of `mcim up` here");
  up.signal(SIGTERM);
  ASSERT_TRUE(up.wait(15s).has_value());
  refused({"--system", sys}, "does not answer");
}

TEST(UpCli, BadOptionsExit2) {
  TempDir dir;
  std::ofstream(dir / "bad.json") << R"({"dir": "x", "colour": "blue"})";
  std::ofstream(dir / "prefix.json") << R"({"pcid_prefix": "12"})";
  struct Row {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Row> rows = {
      {{"--config", dir / "bad.json"}, "bad.json: unknown member \"colour\""},
      {{"--config", dir / "prefix.json"}, "pcid_prefix: "},
      {{"--config", dir / "absent.json"}, "absent.json"},
      {{"--dir", dir / "d", "--db", "mysql://u:secret@h/db"}, "--db: "},
      {{"--dir", dir / "d", "--colour"}, "--colour"},
  };
  for (const auto& row : rows) {
    SCOPED_TRACE(row.message);
    std::vector<std::string> args = {"up"};
    args.insert(args.end(), row.args.begin(), row.args.end());
    Child child(args, dir.path());
    const auto code = child.wait(15s);
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, 2) << child.err();
    EXPECT_NE(child.err().find(row.message), std::string::npos) << child.err();
    EXPECT_EQ(child.err().find("secret"), std::string::npos) << child.err();
    EXPECT_FALSE(fs::exists(dir / "d"));
    EXPECT_FALSE(fs::exists(dir / "x"));
  }
}

}  // namespace
}  // namespace mcim::cli
