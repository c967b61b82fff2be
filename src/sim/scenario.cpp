#include "sim/scenario.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <thread>
#include <utility>

#include "common/file.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/random.h"
#include "net/http_server.h"
#include "net/peer_call.h"
#include "net/tls.h"
#include "pki/attestation.h"
#include "pki/authority.h"
#include "pki/openssl.h"
#include "pki/package.h"
#include "tre/instruction.h"
#include "tre/lifecycle.h"

namespace mcim::sim {
namespace {

using net::Json;
// What describes a device in the stores and its TRE, key -> value (never a secret).
using State = std::map<std::string, std::string>;

constexpr ScenarioInfo kScenarios[] = {
    {"measurement-mismatch", "the TRE runs a binary the supplier did not register", "pva",
     "measurement_mismatch"},
    {"revoked-certificate", "the supplier revoked the platform certificate (OCSP)", "pva",
     "cert_revoked"},
    {"wrong-pin", "the owner registered the device with another PIN: the bootstrap does not verify",
     "device", "signature_invalid"},
    {"forged-bootstrap",
     "a DRF impostor with a certificate of the operators' CA steers the device to its own DPF",
     "device", "signature_invalid"},
    {"expired-registration", "the device comes after its registration nonce lapsed", "sho",
     "registration_expired"},
    {"unregistered-pcid", "a device nobody registered or switched on attaches", "ro",
     "credential_unusable"},
    {"second-attach", "the same PCID attaches again while its first session is open", "ro",
     "already_exists"},
    {"outside-apn", "a provisioning session asks the gateway for a host outside the APN", "vno",
     "access_denied"},
    {"unregistered-device", "the SHO hands over a package for a device it did not register", "ro",
     "wrong_recipient"},
    {"replayed-package", "an installed package is offered to its TRE again", "tre",
     "replayed_package"},
    {"tampered-package", "a package altered on the way", "tre", "package_tampered"},
    {"foreign-package", "a package sealed for another TRE", "tre", "wrong_recipient"},
    {"two-operators",
     "a TRE holds MCIMs of two operators (F6): each lists only its own, and each operator's "
     "instruction on the other's MCIM is refused",
     "tre", "access_denied"},
    {"remote-management",
     "the SHO lists, blocks, unblocks, retires and deletes its MCIM through the RO's DPF (F9); "
     "then an old instruction is replayed",
     "tre", "replayed_instruction"},
    {"renew-pcid",
     "F8: a PCID credential near its end is renewed by the RO (fresh K, new lifetime); its report "
     "is lost once and sent again over a DPF session; it carries the provisioning; one whose TRE "
     "write fails reports nothing until the TRE is opened again; one not due is offered nothing",
     "ro", "not_found"},
    {"delayed-activation",
     "F7: dormant until announced, then provisioned; one never announced expires and its PCID is "
     "reallocated after its quarantine",
     "ro", "pcid_expired"},
    {"revert-pristine",
     "the owner reverts an operational device to pristine at its SHO, which deletes its MCIM and "
     "hands the PCID to the new SHO; F2 again towards the new SHO (F5); then the old SHO tries to "
     "take the registration back",
     "ro", "access_denied"},
    {"provision-report-lost",
     "F2 with the device agent stopped after the install, before its status report left: the next "
     "run ends the restricted session the first left open, has the TRE sign its report again and "
     "sends it without installing again, and attaches; then the report is replayed",
     "ro", "transition_refused"},
    {"provision-agent-crash",
     "F2 with the device agent crashing after the download, before the install: the next run ends "
     "the session the first left open, takes the package the DPF still holds without a new "
     "attestation, installs it and attaches; then the report is replayed",
     "ro", "transition_refused"},
    {"change-operator",
     "F4: the owner moves an operational device to another SHO; over its old subscription it is "
     "validated, downloads the new MCIM, discards the old one and installs the new one in one "
     "commit; then the old SHO orders the change back without the owner's PIN",
     "ro", "access_denied"},
    {"change-operator-dpf-killed",
     "F4 with the RO's DPF killed as the device starts its download: the device keeps its old "
     "MCIM, reconnects when the DPF is back and completes; then the old SHO's change back",
     "ro", "access_denied"},
    {"change-operator-report-lost",
     "F4 with the status report lost after the install: the device's next run has the TRE sign "
     "the reports again and sends them; then the old SHO's change back",
     "ro", "access_denied"},
    {"change-operator-agent-crash",
     "F4 with the device agent crashing after the download, before the discard and install: the "
     "old MCIM still attaches; the next run completes; then the old SHO's change back",
     "ro", "access_denied"},
    {"change-operator-write-failed",
     "F4 of a device whose MCIM is not selected, the TRE's write failing after its commit is on "
     "disk: nothing is reported; the TRE opened again holds the new MCIM, and the next run sends "
     "the reports; then the old SHO's change back",
     "ro", "access_denied"},
};

const ScenarioInfo* info_of(std::string_view name) {
  for (const ScenarioInfo& s : kScenarios) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

State state_of(const ScenarioWorld& w, const FleetDevice& d) {
  State s;
  const std::string& pcid = d.bundle.pcid;
  const std::string& id = d.bundle.device_id;
  auto str = [](auto v) { return std::string(store::to_string(v)); };
  auto icf = w.ro_db->pcids().find(pcid);
  s["ro.icf " + pcid] = !icf ? "error" : !*icf ? "absent" : str((*icf)->status);
  auto reg = w.ro_db->registrations().find(pcid);
  s["ro.registration " + pcid] = !reg    ? "error"
                                 : !*reg ? "absent"
                                         : (*reg)->sho + " for " + (*reg)->device_id;
  s["ro.refusal " + pcid] = reg && *reg ? (*reg)->refusal : "";
  auto pkg = w.ro_db->packages().next_for_device(id);
  s["ro.package " + id] = !pkg    ? "error"
                          : !*pkg ? "none"
                                  : (*pkg)->package_id + " " + str((*pkg)->status);
  auto sub = w.sho_db->subscribers().find(id);
  if (!sub || !*sub) {
    s["sho.subscriber " + id] = sub ? "absent" : "error";
  } else {
    s["sho.subscriber " + id] =
        str((*sub)->status) + ((*sub)->refusal.empty() ? "" : " " + (*sub)->refusal);
    auto auc = w.sho_db->pcids().find((*sub)->imsi);
    s["sho.auc " + (*sub)->imsi] = !auc ? "error" : !*auc ? "absent" : str((*auc)->status);
  }
  if (d.tre) {
    const tre::Status st = d.tre->status();
    s["tre " + id] =
        std::string(pki::to_string(st.state)) + " selected " + st.selected.value_or("-");
    for (const auto& c : st.credentials) {
      s[fmt::format("tre {} {}", id, c.id)] =
          fmt::format("{} {} {}", tre::to_string(c.kind), tre::to_string(c.state), c.package_id);
    }
  }
  return s;
}

std::size_t mcims_of(const FleetDevice& d) {
  if (!d.tre) return 0;
  const auto creds = d.tre->status().credentials;
  return static_cast<std::size_t>(std::count_if(creds.begin(), creds.end(), [](const auto& c) {
    return c.kind == tre::CredentialKind::mcim;
  }));
}

// One run: its devices, their state before the attack, what was refused.
class Run {
 public:
  Run(const ScenarioWorld& w, const ScenarioInfo& info, ScenarioReport& report)
      : w_(w), info_(info), r_(report) {}

  // Adds n devices of a new batch to `devices` (references to earlier ones may move).
  Result<void> make(std::size_t n, const std::string& tre_binary = {}, int pcid_days = 0) {
    FleetOptions o = w_.fleet;
    o.devices = n;
    o.first_pcid = w_.next_pcids(n);
    o.pcid_days = pcid_days;
    if (!tre_binary.empty()) o.tre_binary = tre_binary;
    auto made =
        manufacture(w_.endpoints, o, fmt::format("scenario-{}-{}", info_.name, o.first_pcid));
    if (!made) return std::unexpected(made.error());
    for (FleetDevice& d : *made) {
      if (auto t = init_tre(d, o); !t) return t;
      devices.push_back(std::move(d));
    }
    return {};
  }

  Result<void> enrol(FleetDevice& d, const RegisterOptions& how = {}) {
    return register_device(d, w_.endpoints, w_.fleet, how);
  }

  // make(1), then F1 for that device.
  Result<FleetDevice*> one_enrolled(const std::string& tre_binary = {}) {
    if (auto m = make(1, tre_binary); !m) return std::unexpected(m.error());
    if (auto e = enrol(devices.front()); !e) return std::unexpected(e.error());
    return &devices.front();
  }

  // An agent for the device's TRE, configured as the fleet's agents are; the RO's base URL for
  // its management rounds (F9) and operator changes (F4); a fault to inject (F4).
  device::Agent agent(FleetDevice& d,
                      std::function<Result<void>(device::Step)> interrupt = {}) const {
    device::AgentConfig c = w_.fleet.agent;
    c.interrupt = std::move(interrupt);
    c.vno_url = w_.endpoints.vno_url;
    c.drf_url = w_.ro_url;
    c.tls = w_.endpoints.device_tls;
    return device::Agent(*d.tre, std::move(c), clock_);
  }

  // The device's TRE closed and opened again, as after a restart of the device: a TRE whose write
  // failed takes nothing more until then (Tre::open finishes or undoes the commit).
  Result<void> reopen(FleetDevice& d) const {
    tre::Options to;
    to.dir = d.tre->dir();
    to.binary = w_.fleet.tre_binary;
    d.tre.reset();
    auto opened = tre::Tre::open(to);
    if (!opened) return with_prefix(opened.error(), d.bundle.device_id);
    d.tre.emplace(std::move(*opened));
    return {};
  }

  // The state every later change is judged against; the devices whose MCIMs are counted.
  void baseline(std::vector<FleetDevice*> attacked) {
    before_.clear();
    for (const FleetDevice& d : devices) before_.push_back(state_of(w_, d));
    attacked_ = std::move(attacked);
    mcims_before_.clear();
    for (const FleetDevice* d : attacked_) mcims_before_.push_back(mcims_of(*d));
  }

  // The newest RO audit record of `event` on `subject`, if any.
  std::optional<store::AuditRecord> audit_of(std::string_view event, std::string_view subject) {
    auto recent = w_.ro_db->audit().recent(1000);
    if (!recent) return std::nullopt;
    for (store::AuditRecord& a : *recent) {
      if (a.event == event && a.subject == subject) return std::move(a);
    }
    return std::nullopt;
  }
  // A check of the flow's outcome; a failed one fails the scenario like an unexpected change.
  void expect(bool ok, std::string what) {
    if (!ok) r_.unexpected.push_back(std::move(what));
  }
  // The newest RO audit record of `event` on `subject` has `outcome`.
  void expect_audit(std::string_view event, std::string_view subject, std::string_view outcome) {
    const auto record = audit_of(event, subject);
    const std::string found = record ? record->outcome : "none";
    expect(found == outcome,
           fmt::format("ro audit {} {}: want {}, got {}", event, subject, outcome, found));
  }
  void expect_state(const FleetDevice& d, const std::string& key, std::string_view want) {
    const State now = state_of(w_, d);
    const auto it = now.find(key);
    const std::string got = it == now.end() ? "absent" : it->second;
    expect(got == want, fmt::format("{}: want {}, got {}", key, want, got));
  }

  void refused(std::string party, const Error& e) {
    r_.party = std::move(party);
    r_.code = std::string(to_string(e.code));
    r_.message = e.message;
  }

  // A check at one party: kept in the report either way; one that fails fails the scenario.
  void check(bool held, const std::string& what) {
    (held ? r_.checked : r_.unexpected).push_back(held ? what : "check failed: " + what);
  }

  // Compares with the baseline: keys starting with one of `records` are the refusal's own.
  void finish(const std::vector<std::string>& records) {
    for (std::size_t i = 0; i < devices.size(); ++i) {
      const State after = state_of(w_, devices[i]);
      State keys = before_[i];
      keys.insert(after.begin(), after.end());
      for (const auto& [key, unused] : keys) {
        const auto b = before_[i].find(key);
        const auto a = after.find(key);
        const std::string was = b == before_[i].end() ? "absent" : b->second;
        const std::string now = a == after.end() ? "absent" : a->second;
        if (was == now) continue;
        const std::string line =
            fmt::format("{}: {} -> {}", key, was.empty() ? "-" : was, now.empty() ? "-" : now);
        const bool recorded = std::any_of(records.begin(), records.end(),
                                          [&](const auto& p) { return key.starts_with(p); });
        (recorded ? r_.recorded : r_.unexpected).push_back(line);
      }
    }
    for (std::size_t i = 0; i < attacked_.size(); ++i) {
      if (mcims_of(*attacked_[i]) > mcims_before_[i]) r_.mcim_installed = true;
    }
    r_.passed = r_.party == r_.expected_party && r_.code == r_.expected_code &&
                !r_.mcim_installed && r_.unexpected.empty();
  }

  std::vector<FleetDevice> devices;

 private:
  const ScenarioWorld& w_;
  const ScenarioInfo& info_;
  ScenarioReport& r_;
  std::vector<State> before_;
  std::vector<FleetDevice*> attacked_;
  std::vector<std::size_t> mcims_before_;
  SystemClock clock_;  // the agents' clock
};

// The device provisions and is refused through the DPF's answer to its polls: the SHO's code,
// which the PVA gave it (the subscriber's refusal says so).
Result<void> refused_by_pva(Run& run, const ScenarioWorld& w, FleetDevice& d) {
  device::Agent agent = run.agent(d);
  auto out = agent.provision();
  if (out) return {};
  auto sub = w.sho_db->subscribers().find(d.bundle.device_id);
  const bool from_pva = sub && *sub && (*sub)->status == store::SubscriberStatus::refused &&
                        (*sub)->refusal == to_string(out.error().code);
  run.refused(from_pva ? "pva" : "device", out.error());
  return {};
}

Result<void> validation_refused(Run& run, const ScenarioWorld& w, bool revoke) {
  const std::string other = w.fleet.dir + "/scenario-other-binary";
  if (!revoke) {
    std::error_code ec;
    std::filesystem::create_directories(w.fleet.dir, ec);
    if (auto made = write_file_atomic(other, "a build the supplier never registered\n"); !made) {
      return made;
    }
  }
  auto enrolled = run.one_enrolled(revoke ? std::string() : other);
  if (!enrolled) return std::unexpected(enrolled.error());
  FleetDevice& d = **enrolled;
  if (revoke) {
    auto ca = pki::Authority::open(w.supplier_ca_dir);
    if (!ca) return std::unexpected(ca.error());
    auto done = ca->revoke(d.bundle.platform_chain.front().get(),
                           pki::RevocationReason::key_compromise, std::chrono::system_clock::now());
    if (!done) return with_prefix(done.error(), "revoking the platform certificate");
  }
  run.baseline({&d});
  if (auto p = refused_by_pva(run, w, d); !p) return p;
  run.finish({"sho.subscriber", "ro.refusal"});
  return {};
}

Result<void> wrong_pin(Run& run) {
  if (auto m = run.make(1); !m) return m;
  FleetDevice& d = run.devices.front();
  std::string pin = pin_of(d.bundle);
  pin.back() = pin.back() == '9' ? '0' : static_cast<char>(pin.back() + 1);
  if (auto e = run.enrol(d, {.pin = pin}); !e) return e;
  run.baseline({&d});
  device::Agent agent = run.agent(d);
  auto out = agent.provision();
  if (!out) run.refused("device", out.error());
  // The RO announced the device when it fetched its bootstrap: the SHO began validating it.
  run.finish({"sho.subscriber"});
  return {};
}

// A DRF impostor on the device's path to the RO over direct access (F3 without a VNO): a server
// with a TLS certificate from the operators' CA (an insider's, or one the CA should not have
// issued), which the device's trust anchors accept. It passes every request on to the RO and the
// answers back, except that it names itself wherever the RO names the DRF, and replaces the
// bootstrap's DPF URL and key pin with its own: a rogue steering the device to a DPF it holds. It
// cannot redo the MAC, which only the PIN's key gives.
class RogueDrf {
 public:
  static Result<std::unique_ptr<RogueDrf>> start(const ScenarioWorld& w) {
    auto ca = pki::Authority::open(w.operators_ca_dir);
    if (!ca) return with_prefix(ca.error(), "the operators' CA");
    pki::CertSpec spec;
    spec.profile = pki::Profile::tls_server;
    spec.subject = "CN=drf.rogue.example";
    spec.sans = {"IP:127.0.0.1"};
    spec.days = 1;
    SystemClock clock;
    OsRandom random;
    auto issued = ca->issue(spec, clock, random);
    if (!issued) return std::unexpected(issued.error());
    auto identity = net::make_tls_identity(issued->key.get(), issued->cert.get());
    if (!identity) return std::unexpected(identity.error());
    net::HttpsClientOptions to_ro = w.endpoints.device_tls;
    auto client = net::HttpsClient::create(std::move(to_ro));
    if (!client) return std::unexpected(client.error());
    auto rogue = std::unique_ptr<RogueDrf>(new RogueDrf(w.ro_url, std::move(*client)));
    rogue->key_pin_ = pki::spki_sha256(issued->key.get());
    net::HttpServerOptions o;
    net::TlsServerOptions tls;
    tls.identity = *identity;
    o.tls = std::move(tls);
    o.threads = 1;
    o.thread_name = "rogue-drf";
    auto server = net::HttpServer::start(
        o, [r = rogue.get()](const net::HttpRequest& q) { return r->relay(q); });
    if (!server) return std::unexpected(server.error());
    rogue->server_ = std::move(*server);
    rogue->url_ = rogue->server_->url();
    return rogue;
  }
  const std::string& url() const { return url_; }

 private:
  RogueDrf(std::string ro_url, std::unique_ptr<net::HttpsClient> client)
      : ro_url_(std::move(ro_url)), client_(std::move(client)) {}

  net::HttpResponse relay(const net::HttpRequest& q) {
    net::Headers headers;
    if (auto auth = q.header("Authorization"); !auth.empty()) {
      headers.emplace_back("Authorization", std::string(auth));
    }
    auto r = client_->request(q.method, ro_url_ + q.target, q.body, q.content_type, headers);
    if (!r) {
      return net::HttpResponse{
          .status = 502, .content_type = "text/plain", .body = {}, .headers = {}};
    }
    net::HttpResponse answer = std::move(*r);
    auto j = Json::parse(answer.body, nullptr, false);
    if (!j.is_object()) return answer;
    if (j.contains("drf_url")) j["drf_url"] = url_;
    if (q.target == "/v1/drf/bootstrap" && j.contains("bootstrap") && j["bootstrap"].is_object()) {
      j["bootstrap"]["dpf_url"] = url_ + "/dpf";
      j["bootstrap"]["dpf_key_pin"] = to_hex(key_pin_);
    }
    answer.body = j.dump();  // sorted keys, no whitespace: still canonical
    return answer;
  }

  std::string ro_url_, url_;
  std::unique_ptr<net::HttpsClient> client_;
  Bytes<32> key_pin_{};
  std::unique_ptr<net::HttpServer> server_;
};

Result<void> forged_bootstrap(Run& run, const ScenarioWorld& w) {
  auto enrolled = run.one_enrolled();
  if (!enrolled) return std::unexpected(enrolled.error());
  FleetDevice& d = **enrolled;
  auto rogue = RogueDrf::start(w);
  if (!rogue) return with_prefix(rogue.error(), "the DRF impostor");
  run.baseline({&d});
  device::AgentConfig c = w.fleet.agent;
  c.access = device::Access::direct;
  c.drf_url = (*rogue)->url();
  c.vno_url = w.endpoints.vno_url;
  c.tls = w.endpoints.device_tls;
  SystemClock clock;
  device::Agent agent(*d.tre, std::move(c), clock);
  auto out = agent.provision();
  // The agent checks the bootstrap at discovery, before it uses anything in it.
  if (!out) {
    run.refused(out.error().message.starts_with("discovery: bootstrap") ? "device" : "network",
                out.error());
  }
  // The RO announced the device when the impostor fetched its bootstrap for it.
  run.finish({"sho.subscriber"});
  return {};
}

// The owner asked for a one-second nonce; the device is switched on after it lapsed. The SHO
// refuses the arrival, the DPF answers the device's polls with its code.
Result<void> expired_registration(Run& run, const ScenarioWorld& w) {
  if (auto m = run.make(1); !m) return m;
  FleetDevice& d = run.devices.front();
  if (auto e = run.enrol(d, {.nonce_lifetime = std::chrono::seconds(1)}); !e) return e;
  // Registration times are whole seconds: past two, the one second is over whatever the
  // rounding.
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  run.baseline({&d});
  device::Agent agent = run.agent(d);
  auto out = agent.provision();
  if (!out) {
    auto reg = w.ro_db->registrations().find(d.bundle.pcid);
    // The SHO's code reached the device through the DPF (the RO's registration records it).
    const bool from_sho = reg && *reg && (*reg)->refusal == to_string(out.error().code);
    run.refused(from_sho ? "sho" : "device", out.error());
  }
  run.finish({"ro.refusal"});
  return {};
}

Result<void> unregistered_pcid(Run& run) {
  if (auto m = run.make(1); !m) return m;
  FleetDevice& d = run.devices.front();
  run.baseline({&d});
  device::Agent agent = run.agent(d);
  auto out = agent.provision();
  if (!out)
    run.refused(out.error().message.starts_with("attach_pcid: vno: home") ? "ro" : "vno",
                out.error());
  run.finish({});
  return {};
}

Result<void> second_attach(Run& run) {
  auto enrolled = run.one_enrolled();
  if (!enrolled) return std::unexpected(enrolled.error());
  FleetDevice& d = **enrolled;
  run.baseline({&d});
  device::Agent agent = run.agent(d);
  auto first = agent.attach(d.bundle.pcid);
  if (!first) return with_prefix(first.error(), "the first attach");
  auto second = agent.attach(d.bundle.pcid);
  if (!second) {
    run.refused(second.error().message.starts_with("vno: home") ? "ro" : "vno", second.error());
  } else {
    (void)agent.detach(*second);
  }
  (void)agent.detach(*first);
  run.finish({});
  return {};
}

Result<void> outside_apn(Run& run, const ScenarioWorld& w) {
  auto enrolled = run.one_enrolled();
  if (!enrolled) return std::unexpected(enrolled.error());
  FleetDevice& d = **enrolled;
  run.baseline({&d});
  device::Agent agent = run.agent(d);
  auto session = agent.attach(d.bundle.pcid);
  if (!session) return with_prefix(session.error(), "attach");
  net::HttpsClientOptions o = w.endpoints.device_tls;
  o.proxy = session->gateway;
  o.proxy_credential = session->session;
  auto client = net::HttpsClient::create(std::move(o));
  if (!client) return std::unexpected(client.error());
  // The SHO's owner interface: a real host, but not one the provisioning APN reaches.
  auto r = (*client)->request("GET", w.endpoints.sho_url + "/healthz");
  if (!r) {
    run.refused(r.error().message.starts_with("proxy") ? "vno" : "network", r.error());
  }
  (void)agent.detach(*session);
  run.finish({});
  return {};
}

Result<void> unregistered_device(Run& run, const ScenarioWorld& w) {
  if (auto m = run.make(2); !m) return m;
  FleetDevice& mine = run.devices[0];
  FleetDevice& other = run.devices[1];
  if (auto e = run.enrol(mine); !e) return e;
  run.baseline({&mine, &other});
  // The SHO names, under the PCID it registered, a device it never registered.
  auto r = net::call_json(*w.as_sho, "POST", w.ro_url + "/v1/dpf/packages",
                          Json{{"pcid", mine.bundle.pcid},
                               {"device_id", other.bundle.device_id},
                               {"package_id", "scenario-" + other.bundle.device_id},
                               {"package", "00"}},
                          {.peer = "ro", .ok_status = 201});
  if (!r) run.refused("ro", r.error());
  run.finish({});
  return {};
}

// A device provisioned for real; its package as the SHO sealed it, from the DPF's store.
Result<ByteVec> provisioned_package(Run& run, const ScenarioWorld& w, FleetDevice& d) {
  if (auto e = run.enrol(d); !e) return std::unexpected(e.error());
  device::Agent agent = run.agent(d);
  auto out = agent.provision();
  if (!out) return with_prefix(out.error(), "provisioning the device whose package is reused");
  auto stored = w.ro_db->packages().find(out->package_id);
  if (!stored) return std::unexpected(stored.error());
  if (!*stored) return fail(ErrorCode::not_found, "the installed package is not at the DPF");
  return std::move((*stored)->package);
}

Result<void> package_refused(Run& run, const ScenarioWorld& w, std::string_view how) {
  if (auto m = run.make(how == "foreign" ? 2 : 1); !m) return m;
  FleetDevice& owner = run.devices[0];
  auto package = provisioned_package(run, w, owner);
  if (!package) return std::unexpected(package.error());
  FleetDevice& target = how == "foreign" ? run.devices[1] : owner;
  if (how == "foreign") {
    if (auto e = run.enrol(target); !e) return e;
  }
  if (how == "tampered") (*package)[package->size() / 2] ^= 0x01;
  run.baseline({&target});
  auto installed = target.tre->install(*package);
  if (!installed.result) run.refused("tre", installed.result.error());
  run.finish({});
  return {};
}

// ---- Remote management (F6, F9) ---------------------------------------------------------------

// F2 for real, then the device ends its session (detach, deselect): an MCIM that carries
// connectivity cannot be blocked (rule block-from-activated), so an operator manages it between
// sessions. The MCIM's IMSI.
Result<std::string> operational(Run& run, FleetDevice& d) {
  if (auto e = run.enrol(d); !e) return std::unexpected(e.error());
  device::Agent agent = run.agent(d);
  auto out = agent.provision();
  if (!out) return with_prefix(out.error(), "provisioning");
  (void)agent.detach(out->operational);
  if (auto r = d.tre->apply(tre::Action::deselect, out->imsi); !r) {
    return with_prefix(r.error(), "deselect");
  }
  return out->imsi;
}

// One instruction of the SHO's operator staff (mTLS as the SHO) through the real services: asked
// at the SHO, queued at the RO's DPF, collected and applied by the device's agent, its TRE's
// answer relayed back; the SHO's record once it holds the answer (the relay is asynchronous).
struct Managed {
  net::Json at_sho;                   // GET .../instructions/{id} once answered
  device::ManagedInstruction device;  // what the device collected and answered
};

Result<Managed> manage(Run& run, const ScenarioWorld& w, FleetDevice& d, net::Json ask) {
  const std::string base =
      w.endpoints.sho_url + "/v1/operator/devices/" + d.bundle.device_id + "/instructions";
  auto issued = net::call_json(*w.as_sho, "POST", base, ask, {.peer = "sho", .ok_status = 202});
  if (!issued) return with_prefix(issued.error(), "instructing at the SHO");
  const std::string id = (*issued)["instruction_id"].get<std::string>();
  device::Agent agent = run.agent(d);
  auto round = agent.manage();
  if (!round) return with_prefix(round.error(), "the device's management round");
  Managed out;
  for (auto& m : *round) {
    if (m.instruction_id == id) out.device = std::move(m);
  }
  if (out.device.instruction_id.empty()) {
    return fail(ErrorCode::not_found, fmt::format("instruction {}: not collected", id));
  }
  for (int i = 0; i < 500; ++i) {
    auto at = net::call_json(*w.as_sho, "GET", base + "/" + id, nullptr, {.peer = "sho"});
    if (!at) return std::unexpected(at.error());
    if ((*at)["status"] == "answered") {
      out.at_sho = std::move(*at);
      return out;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fail(ErrorCode::busy, fmt::format("instruction {}: no answer at the SHO", id));
}

// The credentials (id state) an operator's list names, as the SHO recorded the TRE's answer.
std::string listed(const net::Json& at_sho) {
  std::string out;
  for (const auto& c : at_sho.value("credentials", net::Json::array())) {
    out += (out.empty() ? "" : ", ") + c["id"].get<std::string>() + " " +
           c["state"].get<std::string>();
  }
  return out;
}

std::string state_in_tre(const FleetDevice& d, const std::string& id) {
  for (const auto& c : d.tre->status().credentials) {
    if (c.id == id) return std::string(tre::to_string(c.state));
  }
  return "absent";
}

// The TRE's audit lines with this event and outcome.
std::size_t audited_in_tre(const FleetDevice& d, std::string_view event, std::string_view outcome,
                           std::string_view principal) {
  auto audit = d.tre->verify_audit();
  if (!audit) return 0;
  return static_cast<std::size_t>(
      std::count_if(audit->log.entries.begin(), audit->log.entries.end(), [&](const auto& e) {
        return e.event.event == event && e.event.outcome == outcome &&
               e.event.principal == principal;
      }));
}

// How many of `subjects` (instruction ids) a service's audit log records `event` ok for.
std::size_t audited_ok(store::Database& db, std::string_view event,
                       const std::vector<std::string>& subjects) {
  auto recent = db.audit().recent(1000);
  if (!recent) return 0;
  return static_cast<std::size_t>(
      std::count_if(subjects.begin(), subjects.end(), [&](const std::string& subject) {
        return std::any_of(recent->begin(), recent->end(), [&](const auto& r) {
          return r.event == event && r.outcome == "ok" && r.subject == subject;
        });
      }));
}

// F9: the SHO manages its MCIM through the lifecycle; each step is checked at the SHO (its record
// of the TRE's signed answer) and in the TRE. Then the block instruction, already used, is queued
// again at the DPF (a misbehaving network or SHO): the TRE refuses it by its sequence.
Result<void> remote_management(Run& run, const ScenarioWorld& w) {
  if (auto m = run.make(1); !m) return m;
  FleetDevice& d = run.devices.front();
  auto imsi = operational(run, d);
  if (!imsi) return std::unexpected(imsi.error());
  const std::string principal = "operator:" + w.sho_operator;

  auto list = manage(run, w, d, {{"action", "list"}});
  if (!list) return std::unexpected(list.error());
  std::vector<std::string> ids = {list->device.instruction_id};
  run.check(list->at_sho["outcome"] == "ok" && listed(list->at_sho) == *imsi + " activated",
            fmt::format("sho: list answered by the TRE: {} (its own MCIM only, not the PCID)",
                        listed(list->at_sho)));
  std::string block_text;
  std::uint64_t last_sequence = list->at_sho["sequence"].get<std::uint64_t>();
  struct Step {
    const char* action;
    const char* state;
  };
  for (const Step& step : {Step{"block", "blocked"}, Step{"unblock", "activated"},
                           Step{"retire", "retired"}, Step{"delete", "deleted"}}) {
    auto m = manage(run, w, d, {{"action", step.action}});
    if (!m) return std::unexpected(m.error());
    if (std::string_view(step.action) == "block") block_text = m->device.instruction;
    ids.push_back(m->device.instruction_id);
    const std::uint64_t sequence = m->at_sho["sequence"].get<std::uint64_t>();
    run.check(m->at_sho["outcome"] == "ok" && m->at_sho["state"] == step.state &&
                  sequence > last_sequence,
              fmt::format("sho: {} {} answered ok, state {}, sequence {}", step.action, *imsi,
                          step.state, sequence));
    last_sequence = sequence;
    run.check(state_in_tre(d, *imsi) == step.state,
              fmt::format("tre: {} is {}", *imsi, step.state));
  }
  // (The relay's own record may follow the SHO's answer: it is written after the notice is
  // queued, and a worker may deliver it first.)
  run.check(audited_ok(*w.ro_db, "instruction-result", ids) == ids.size(),
            "ro: the DPF verified the TRE's five answers (audit instruction-result)");
  run.check(audited_ok(*w.sho_db, "instruction-result", ids) == ids.size(),
            "sho: the five signed answers recorded (audit instruction-result)");

  run.baseline({&d});
  auto queued = net::call_json(*w.as_sho, "POST", w.ro_url + "/v1/dpf/instructions",
                               Json{{"pcid", d.bundle.pcid},
                                    {"device_id", d.bundle.device_id},
                                    {"instruction_id", "scenario-replay-" + d.bundle.pcid},
                                    {"instruction", block_text}},
                               {.peer = "ro", .ok_status = 201});
  if (!queued) return with_prefix(queued.error(), "queueing the replay");
  device::Agent agent = run.agent(d);
  auto round = agent.manage();
  if (!round) return with_prefix(round.error(), "the device's management round");
  for (const auto& m : *round) {
    if (m.outcome == "ok") continue;
    run.refused("tre", Error(error_code_from_wire(m.outcome).value_or(ErrorCode::internal),
                             fmt::format("instruction {}: the TRE's signed answer is {}",
                                         m.instruction_id, m.outcome)));
  }
  run.check(audited_in_tre(d, "block", "replayed_instruction", principal) == 1,
            "tre: the replay is in the audit log (block, replayed_instruction)");
  run.check(state_in_tre(d, *imsi) == "deleted", fmt::format("tre: {} stays deleted", *imsi));
  auto sub = w.sho_db->subscribers().find(d.bundle.device_id);
  run.check(sub && *sub && (*sub)->status == store::SubscriberStatus::active,
            "sho: the subscriber is still active (management is not provisioning)");
  run.finish({});
  return {};
}

// Operator B of F6: a package-signing certificate of the operators' CA under another operator
// id. B's own services are not part of the world: its MCIM is pre-provisioned into the TRE with
// a package B sealed and signed (as its DPF would deliver it), and its instructions reach the TRE
// by its own channel. Everything the TRE checks is real.
struct OtherOperator {
  std::string id = "scenario-operator-b";
  pki::Issued signer;
  std::uint64_t sequence = 0;

  static Result<OtherOperator> make(const ScenarioWorld& w) {
    auto ca = pki::Authority::open(w.operators_ca_dir);
    if (!ca) return with_prefix(ca.error(), "the operators' CA");
    OtherOperator b;
    pki::CertSpec spec;
    spec.profile = pki::Profile::package_signing;
    spec.subject = "CN=package signer " + b.id;
    spec.sans = {"URI:urn:mcim:operator:" + b.id};
    spec.days = 1;
    SystemClock clock;
    OsRandom random;
    auto issued = ca->issue(spec, clock, random);
    if (!issued) return std::unexpected(issued.error());
    b.signer = std::move(*issued);
    return b;
  }

  Result<void> preprovision(tre::Tre& t, const std::string& imsi) {
    OsRandom random;
    const Bytes<16> nonce = random.draw<16>();
    if (auto r = t.record_registration(nonce); !r) return r;
    pki::McimDocument doc;
    doc.package_id = "scenario-b-" + imsi;
    doc.device_id = t.status().device_id;
    doc.imsi = imsi;
    doc.algorithm = pki::McimAlgorithm::milenage;
    if (auto k = doc.set_key(random.draw<16>()); !k) return k;
    doc.opc = Secret<16>(random.draw<16>());
    doc.amf = {0x80, 0x00};
    doc.ind_bits = 5;
    doc.policy.owner = id;
    doc.policy.operations = {pki::McimOperation::activate, pki::McimOperation::block,
                             pki::McimOperation::delete_, pki::McimOperation::retire,
                             pki::McimOperation::unblock};
    doc.registration_nonce = nonce;
    const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    doc.not_before = now - std::chrono::minutes(5);
    doc.not_after = now + std::chrono::hours(24);
    doc.sequence = 1;
    auto package = pki::seal_package(
        doc, pki::PackageSigner{signer.cert.get(), signer.key.get(), {}}, t.platform_certificate());
    if (!package) return std::unexpected(package.error());
    auto installed = t.install(*package);
    if (!installed.result) return std::unexpected(installed.result.error());
    auto activated = t.apply(tre::Action::activate, imsi);
    if (!activated) return std::unexpected(activated.error());
    return {};
  }

  tre::InstructionOutcome instruct(tre::Tre& t, std::string credential, tre::Action action,
                                   bool list = false) {
    tre::Instruction ins{t.status().device_id,
                         std::move(credential),
                         action,
                         ++sequence,
                         std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()),
                         list};
    auto text = tre::sign_instruction(ins, signer.key.get(), {signer.cert.get()});
    if (!text) return tre::InstructionOutcome{std::unexpected(text.error()), ""};
    return t.apply_instruction(*text);
  }
};

std::string listed(const tre::InstructionOutcome& out, X509* platform_cert) {
  auto report = tre::verify_status_report(out.report, platform_cert);
  if (!report) return "unverifiable";
  std::string text;
  for (const auto& c : report->credentials) {
    text += (text.empty() ? "" : ", ") + c.id + " " + c.state;
  }
  return text;
}

// F6: the SHO's MCIM provisioned through the services, operator B's pre-provisioned; each lists
// its own, then each instructs the TRE on the other's MCIM.
Result<void> two_operators(Run& run, const ScenarioWorld& w) {
  if (auto m = run.make(1); !m) return m;
  FleetDevice& d = run.devices.front();
  auto imsi_a = operational(run, d);
  if (!imsi_a) return std::unexpected(imsi_a.error());
  auto b = OtherOperator::make(w);
  if (!b) return std::unexpected(b.error());
  const std::string imsi_b = "99999" + d.bundle.pcid.substr(d.bundle.pcid.size() - 10);
  if (auto r = b->preprovision(*d.tre, imsi_b); !r) return with_prefix(r.error(), "operator B");
  const std::string principal_a = "operator:" + w.sho_operator;
  const std::string principal_b = "operator:" + b->id;

  auto list_a = manage(run, w, d, {{"action", "list"}});
  if (!list_a) return std::unexpected(list_a.error());
  run.check(listed(list_a->at_sho) == *imsi_a + " activated",
            fmt::format("sho: its list names {} only", listed(list_a->at_sho)));
  auto list_b = b->instruct(*d.tre, "-", tre::Action::block, true);
  run.check(list_b.result.has_value() &&
                listed(list_b, d.tre->platform_certificate()) == imsi_b + " activated",
            fmt::format("operator B: its list names {} only",
                        listed(list_b, d.tre->platform_certificate())));

  run.baseline({&d});
  auto a_on_b = manage(run, w, d, {{"action", "block"}, {"credential", imsi_b}});
  if (!a_on_b) return std::unexpected(a_on_b.error());
  const std::string code = a_on_b->at_sho["outcome"].get<std::string>();
  if (code != "ok") {
    run.refused("tre", Error(error_code_from_wire(code).value_or(ErrorCode::internal),
                             fmt::format("block {} by {}: the TRE's signed answer is {}", imsi_b,
                                         w.sho_operator, code)));
  }
  auto b_on_a = b->instruct(*d.tre, *imsi_a, tre::Action::delete_);
  run.check(!b_on_a.result && b_on_a.result.error().code == ErrorCode::access_denied &&
                b_on_a.result.error().message.starts_with("rule owner-only"),
            fmt::format("tre: operator B's delete of {} refused: {}", *imsi_a,
                        b_on_a.result ? "ok" : b_on_a.result.error().message));
  run.check(audited_in_tre(d, "block", "access_denied", principal_a) == 1 &&
                audited_in_tre(d, "delete", "access_denied", principal_b) == 1,
            "tre: both refusals are in the audit log, each naming its operator");
  run.check(state_in_tre(d, *imsi_a) == "activated" && state_in_tre(d, imsi_b) == "activated",
            fmt::format("tre: {} and {} both still activated", *imsi_a, imsi_b));
  run.finish({});
  return {};
}

// Moves the services' clock forward for the life of the value and back after it: a year passes in
// an instant, and the scenarios after this one find the system's time as it was.
class TimeTravel {
 public:
  explicit TimeTravel(const ScenarioWorld& w) : w_(w) {}
  ~TimeTravel() {
    if (moved_.count() != 0) w_.advance_clock(-moved_);
  }
  TimeTravel(const TimeTravel&) = delete;
  TimeTravel& operator=(const TimeTravel&) = delete;
  void advance(std::chrono::seconds by) {
    w_.advance_clock(by);
    moved_ += by;
  }

 private:
  const ScenarioWorld& w_;
  std::chrono::seconds moved_{0};
};

// Who refused an attach: the RO's ICF behind the VNO ("vno: home ..."), or the VNO itself.
std::string attach_refuser(const Error& e) {
  return e.message.starts_with("vno: home") ? "ro" : "vno";
}

// F7 step by step for a device its owner registered long before switching it on: dormant, so
// its attach is refused; announced, so it attaches, and no second visited network can attach the
// same PCID meanwhile (F8); then provisioned.
Result<void> announced_device(Run& run, const ScenarioWorld& w, FleetDevice& d) {
  device::Agent agent = run.agent(d);
  const std::string& pcid = d.bundle.pcid;
  auto dormant = agent.attach(pcid);
  run.expect(!dormant && dormant.error().code == ErrorCode::credential_unusable &&
                 attach_refuser(dormant.error()) == "ro",
             "a dormant PCID's attach: want ro credential_unusable");
  if (dormant) (void)agent.detach(*dormant);
  run.expect_state(d, "ro.icf " + pcid, "dormant");
  if (auto on = announce_switch_on(d, w.endpoints, w.fleet.activation_window); !on) return on;
  run.expect_state(d, "ro.icf " + pcid, "active");
  run.expect_audit("activate", pcid, "ok");
  auto first = agent.attach(pcid);
  if (!first) return with_prefix(first.error(), "the attach after the announcement");
  auto second = net::call_json(*w.as_vno2, "POST", w.ro_url + "/v1/auth/sessions",
                               Json{{"imsi", pcid}}, {.peer = "ro", .ok_status = 201});
  run.expect(!second && second.error().code == ErrorCode::already_exists,
             "a second visited network's session on an attached PCID: want already_exists");
  run.expect_audit("open-session", pcid, "already_exists");
  (void)agent.detach(*first);
  auto out = agent.provision();
  run.expect(out.has_value(), out ? std::string() : fmt::format("provisioning: {}", out.error()));
  run.expect_state(d, "sho.subscriber " + d.bundle.device_id, "active");
  return {};
}

// F7 expiry and the F8 pool: a device never announced outlives its dormant window; the sweep
// expires it and its attach is refused for good. A new batch that names its PCID is refused while
// the PCID is in quarantine and takes it after: the ICF holds the new credential, dormant, and the
// old owner's registration is gone.
Result<void> expired_device(Run& run, const ScenarioWorld& w, FleetDevice& d) {
  const std::string& pcid = d.bundle.pcid;
  TimeTravel travel(w);
  travel.advance(w.dormant_period + std::chrono::hours(24));
  auto swept = w.expire_dormant();
  if (!swept) return with_prefix(swept.error(), "the RO's expiry");
  run.expect(*swept >= 1, "the RO's expiry expired nothing");
  run.expect_state(d, "ro.icf " + pcid, "expired");
  run.expect_audit("expire-dormant", "-", "ok");
  device::Agent agent = run.agent(d);
  auto expired = agent.attach(pcid);
  if (expired) {
    (void)agent.detach(*expired);
  } else {
    run.refused(attach_refuser(expired.error()), expired.error());
  }
  const std::string batch = "scenario-reuse-" + pcid;
  const std::string url = w.endpoints.supplier_url + "/v1/batches";
  auto early = net::call_json(*w.endpoints.factory, "POST", url,
                              Json{{"batch_id", batch}, {"first_pcid", pcid}, {"count", 1}},
                              {.peer = "supplier", .ok_status = 201});
  if (!early) return with_prefix(early.error(), "the reuse batch");
  run.expect(early->value("handover", "") == "failed",
             "a batch reusing a PCID in quarantine: want its handover refused");
  run.expect_audit("import-batch", batch, "already_exists");
  travel.advance(w.quarantine);
  auto later = net::call_json(*w.endpoints.factory, "POST", url + "/" + batch + "/handover",
                              Json::object(), {.peer = "supplier"});
  if (!later) return with_prefix(later.error(), "the reuse batch's second handover");
  run.expect(later->value("handover", "") == "done" && later->value("imported", 0) == 1,
             "a batch reusing a PCID out of quarantine: want it imported");
  run.expect_audit("import-batch", batch, "ok");
  auto now = w.ro_db->pcids().find(pcid);
  run.expect(now && *now && (*now)->batch == batch && (*now)->status == store::PcidStatus::dormant,
             "the reallocated PCID: want the new batch's, dormant");
  run.expect_state(d, "ro.registration " + pcid, "absent");
  return {};
}

// F8, a renewal whose TRE write fails after the new state is on disk (the counter's temporary
// file made a directory, so that the commit stops at the counter): the run stops with the TRE's
// io_error and reports nothing, since a failure report would end the renewal at the ICF while the
// TRE, opened again, holds the new K. The next run, on the TRE opened again, sends the report the
// TRE signs from the renewal's mark; the ICF switches and the PCID attaches with the new K.
Result<void> renewal_write_fails(Run& run, const ScenarioWorld& w, FleetDevice& d) {
  const auto before = w.ro_db->pcids().find(d.bundle.pcid);
  if (!before || !*before) return fail(ErrorCode::internal, "the due PCID is not at the ICF");
  const std::filesystem::path obstacle = d.tre->dir() + "/counter.sealed.tmp";
  device::Agent failing = run.agent(d, [&](device::Step step) -> Result<void> {
    if (step == device::Step::install) std::filesystem::create_directories(obstacle / "x");
    return {};
  });
  auto failed = failing.renew_pcid();
  run.expect(!failed && failed.error().code == ErrorCode::io_error,
             failed ? std::string("a renewal whose TRE write failed: it succeeded")
                    : fmt::format("a renewal whose TRE write failed: want io_error, got {}",
                                  failed.error()));
  std::error_code ec;
  std::filesystem::remove_all(obstacle, ec);
  const auto unreported = w.ro_db->pcids().find(d.bundle.pcid);
  run.expect(unreported && *unreported && !(*unreported)->renewal_package.empty() &&
                 (*unreported)->k.get() == (*before)->k.get(),
             "the ICF after the failed write: want the old K, the new one staged (no report)");
  if (auto r = run.reopen(d); !r) return r;
  device::Agent agent = run.agent(d);
  auto renewed = agent.renew_pcid();
  if (!renewed) return with_prefix(renewed.error(), "the renewal after the failed write");
  run.expect(!renewed->renewed, "after the failed write's report: want nothing more due");
  const auto after = w.ro_db->pcids().find(d.bundle.pcid);
  run.expect(after && *after && (*after)->renewal_package.empty() &&
                 (*after)->k.get() != (*before)->k.get(),
             "the ICF after the failed write's report: want the renewed K, nothing staged");
  auto attached = agent.attach(d.bundle.pcid);
  run.expect(attached.has_value(),
             attached ? std::string()
                      : fmt::format("an attach with the PCID renewed despite the failed write: {}",
                                    attached.error()));
  if (attached) (void)agent.detach(*attached);
  return {};
}

// F8 renewal: the RO offers nothing to a device whose PCID credential is far from its end (the
// scenario's refusal, from the ICF's audit record); a device whose batch was made with one-day
// PCID credentials is due: the TRE installs the RO's package, the ICF switches to the new K on its
// report, and the device attaches with the renewed credential and provisions over it.
Result<void> renew_pcid(Run& run, const ScenarioWorld& w) {
  if (auto m = run.make(1); !m) return m;
  if (auto m = run.make(2, {}, 1); !m) return m;
  for (FleetDevice& d : run.devices) {
    if (auto e = run.enrol(d); !e) return e;
  }
  FleetDevice& fresh = run.devices[0];
  FleetDevice& due = run.devices[1];
  FleetDevice& unlucky = run.devices[2];
  run.baseline({&fresh});  // the due one provisions at the end: an MCIM is its outcome
  device::Agent fresh_agent = run.agent(fresh);
  auto none = fresh_agent.renew_pcid();
  if (!none) return with_prefix(none.error(), "asking for a renewal not due");
  run.expect(!none->renewed, "a credential far from its end was renewed");
  if (auto offer = run.audit_of("renewal-offer", fresh.bundle.pcid); offer) {
    auto code = error_code_from_wire(offer->outcome);
    run.refused("ro", Error(code.value_or(ErrorCode::internal), offer->detail));
  }
  const auto before = w.ro_db->pcids().find(due.bundle.pcid);
  if (!before || !*before) return fail(ErrorCode::internal, "the due PCID is not at the ICF");
  // The first renewal's report is lost after the TRE took the new K: the ICF keeps the old one
  // (the new one staged), so the PCID no longer attaches; the device's next renewal run sends the
  // report, signed again by the TRE from its mark, over a DPF session (its platform key, no AKA),
  // and the ICF switches.
  bool lost = false;
  device::Agent lossy = run.agent(due, [&lost](device::Step step) -> Result<void> {
    if (step != device::Step::report || lost) return {};
    lost = true;
    return fail(ErrorCode::io_error, "the renewal report was lost on the way");
  });
  auto first = lossy.renew_pcid();
  run.expect(!first && lost, "the renewal whose report was lost: want it stopped at the report");
  const auto staged = w.ro_db->pcids().find(due.bundle.pcid);
  run.expect(staged && *staged && !(*staged)->renewal_package.empty() &&
                 (*staged)->k.get() == (*before)->k.get(),
             "the ICF after the lost report: want the old K, the new one staged");
  // What the stopped run left: the renewal's mark (the TRE signs the report again from it). A
  // mark of a renewal stopped before the TRE's commit is dropped unreported by the next run.
  const std::string mark =
      device::renewal_mark_path(*due.tre, staged && *staged ? (*staged)->renewal_package : "?");
  const std::string stale = device::renewal_mark_path(*due.tre, "pcid-never-installed");
  run.expect(std::filesystem::exists(mark),
             "the renewal whose report was lost: want its mark beside the TRE");
  if (auto planted = write_file_atomic(stale, std::string_view("{}"), 0600); !planted) {
    return planted;
  }
  device::Agent agent = run.agent(due);
  auto locked = agent.attach(due.bundle.pcid);
  run.expect(!locked && locked.error().code == ErrorCode::mac_mismatch,
             "an attach with the PCID before the report: want the TRE's mac_mismatch");
  auto renewed = agent.renew_pcid();
  if (!renewed) return with_prefix(renewed.error(), "the renewal after the lost report");
  run.expect(!renewed->renewed, "after the kept report: want nothing more due");
  run.expect(!std::filesystem::exists(mark) && !std::filesystem::exists(stale),
             "after the report: want both renewal marks gone");
  // The newest offer is the run after the report's (nothing due); the first one's package is in
  // the TRE (below).
  run.expect_audit("renewal-offer", due.bundle.pcid, "not_found");
  run.expect_audit("renewal-report", due.bundle.pcid, "ok");
  const auto after = w.ro_db->pcids().find(due.bundle.pcid);
  std::string renewal_package;
  std::chrono::sys_seconds tre_not_after{};
  for (const auto& c : due.tre->status().credentials) {
    if (c.id == due.bundle.pcid) {
      renewal_package = c.package_id;
      tre_not_after = c.not_after;
    }
  }
  run.expect(after && *after && (*after)->not_after == tre_not_after &&
                 (*after)->not_after > (*before)->not_after && (*after)->renewal_package.empty() &&
                 (*after)->k.get() != (*before)->k.get(),
             "the ICF: want the renewed K and lifetime, nothing staged");
  run.expect_state(due, fmt::format("tre {} {}", due.bundle.device_id, due.bundle.pcid),
                   "pcid activated " + renewal_package);
  auto audit = due.tre->verify_audit();
  run.expect(audit && audit->log.entries.back().event.event == "update",
             "the TRE's audit: want the update last");
  auto out = agent.provision();
  run.expect(
      out.has_value(),
      out ? std::string() : fmt::format("provisioning with the renewed PCID: {}", out.error()));
  if (auto u = renewal_write_fails(run, w, unlucky); !u) return u;
  run.finish({"tre " + due.bundle.device_id, "sho.subscriber " + due.bundle.device_id, "sho.auc ",
              "ro.package " + due.bundle.device_id, "tre " + unlucky.bundle.device_id});
  return {};
}

Result<void> delayed_activation(Run& run, const ScenarioWorld& w) {
  if (!w.as_vno2 || !w.advance_clock || !w.expire_dormant) {
    return fail(ErrorCode::missing_argument,
                "scenario: a second VNO, the services' clock and the RO's expiry");
  }
  if (auto m = run.make(2); !m) return m;
  for (FleetDevice& d : run.devices) {
    if (auto e = run.enrol(d, {.activate = false}); !e) return e;
  }
  FleetDevice& announced = run.devices[0];
  FleetDevice& forgotten = run.devices[1];
  run.baseline({&forgotten});
  if (auto a = announced_device(run, w, announced); !a) return a;
  if (auto e = expired_device(run, w, forgotten); !e) return e;
  // The owner's subscriber stays registered at the SHO: the RO's reallocation does not reach it.
  run.finish({"ro.icf " + announced.bundle.pcid, "ro.icf " + forgotten.bundle.pcid,
              "ro.registration " + forgotten.bundle.pcid, "ro.refusal " + forgotten.bundle.pcid,
              "ro.package " + announced.bundle.device_id,
              "sho.subscriber " + announced.bundle.device_id, "sho.auc ",
              "tre " + announced.bundle.device_id});
  return {};
}

// ---- Operator change (F5) -----------------------------------------------------------------------

// The owner's call to a SHO's owner routes (Bearer token).
Result<Json> as_owner(const ScenarioWorld& w, const std::string& url, std::string_view method,
                      const Json& body, int ok_status) {
  return net::call_json(*w.endpoints.owner, method, url, body,
                        {.peer = "sho",
                         .ok_status = ok_status,
                         .headers = {{"Authorization", "Bearer " + w.endpoints.owner_token}}});
}

// The old SHO's revert, ordered by the owner and carried out through the device's management
// round; its answer once the SHO recorded the release (the TRE's answer is relayed asynchronously).
Result<Json> revert(Run& run, const ScenarioWorld& w, FleetDevice& d) {
  const std::string url = w.endpoints.sho_url + "/v1/subscribers/" + d.bundle.device_id + "/revert";
  auto ordered = as_owner(w, url, "POST", Json{{"to", w.sho2_operator}}, 202);
  if (!ordered) return with_prefix(ordered.error(), "the owner's revert at the old SHO");
  device::Agent agent = run.agent(d);
  auto round = agent.manage();
  if (!round) return with_prefix(round.error(), "the device's management round");
  run.check(round->size() == 1 && round->front().outcome == "ok",
            fmt::format("device: collected the old SHO's delete, its TRE answered {}",
                        round->empty() ? "nothing" : round->front().outcome));
  for (int i = 0; i < 500; ++i) {
    auto at = as_owner(w, url, "GET", nullptr, 200);
    if (!at) return std::unexpected(at.error());
    if ((*at)["status"] != "queued") return at;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fail(ErrorCode::busy, "revert: never answered at the old SHO");
}

// F5: provisioned at the old SHO; the owner reverts it there; the TRE deletes the MCIM on the old
// SHO's signed instruction and is pristine; the old SHO deactivates the IMSI and hands the DRF
// registration to the new SHO; the owner registers the device at the new SHO, which announces its
// switch-on (the PCID attaches again), and F2 runs again towards it. Every party is checked. Then
// the old SHO tries to register the PCID again: the RO refuses, and nothing changes.
Result<void> revert_pristine(Run& run, const ScenarioWorld& w) {
  if (w.sho2_db == nullptr || w.sho2_url.empty()) {
    return fail(ErrorCode::missing_argument, "revert-pristine: the second SHO");
  }
  if (auto m = run.make(1); !m) return m;
  FleetDevice& d = run.devices.front();
  const std::string& id = d.bundle.device_id;
  const std::string& pcid = d.bundle.pcid;
  auto old_imsi = operational(run, d);
  if (!old_imsi) return std::unexpected(old_imsi.error());

  auto reverted = revert(run, w, d);
  if (!reverted) return std::unexpected(reverted.error());
  run.check((*reverted)["status"] == "released" && (*reverted)["outcome"] == "ok",
            fmt::format("old sho: the revert is {}", reverted->value("status", "?")));
  auto sub = w.sho_db->subscribers().find(id);
  run.check(sub && !*sub, "old sho: the subscriber is removed (its PCID and device id free)");
  auto auc = w.sho_db->pcids().find(*old_imsi);
  run.check(auc && *auc &&
                (*auc)->active_until <
                    std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()),
            fmt::format("old sho: the AuC no longer serves {} (its window ended)", *old_imsi));
  run.check(audited_ok(*w.sho_db, "release", {id}) == 1 &&
                audited_ok(*w.sho_db, "deactivate", {*old_imsi}) == 1,
            "old sho: audit release (the device), deactivate (its IMSI)");
  auto reg = w.ro_db->registrations().find(pcid);
  run.check(reg && *reg && (*reg)->sho == w.sho2_operator && (*reg)->device_id == id,
            fmt::format("ro: the DRF registration of {} is the new SHO's", pcid));
  run.check(audited_ok(*w.ro_db, "transfer", {pcid}) == 1, "ro: audit transfer of the PCID");
  const tre::Status pristine = d.tre->status();
  run.check(pristine.state == pki::TreState::pristine && !pristine.selected &&
                state_in_tre(d, *old_imsi) == "deleted" && state_in_tre(d, pcid) == "activated",
            fmt::format("tre: pristine, {} deleted, the PCID credential activated", *old_imsi));
  run.check(audited_in_tre(d, "delete", "ok", "operator:" + w.sho_operator) == 1,
            "tre: audit delete by the old SHO");

  FleetEndpoints at_new = w.endpoints;
  at_new.sho_url = w.sho2_url;
  if (auto e = register_device(d, at_new, w.fleet); !e) {
    return with_prefix(e.error(), "registering at the new SHO");
  }
  device::Agent agent = run.agent(d);
  auto out = agent.provision();
  if (!out) return with_prefix(out.error(), "F2 towards the new SHO");
  auto sub2 = w.sho2_db->subscribers().find(id);
  run.check(sub2 && *sub2 && (*sub2)->status == store::SubscriberStatus::active &&
                (*sub2)->imsi == out->imsi,
            fmt::format("new sho: subscriber active with imsi {}", out->imsi));
  auto auc2 = w.sho2_db->pcids().find(out->imsi);
  run.check(auc2 && *auc2 && (*auc2)->status == store::PcidStatus::active,
            "new sho: its AuC serves the new IMSI");
  const tre::Status after = d.tre->status();
  run.check(after.state == pki::TreState::provisioned && after.selected == out->imsi &&
                state_in_tre(d, *old_imsi) == "deleted",
            fmt::format("tre: {} selected, {} stays deleted; operational on the new IMSI",
                        out->imsi, *old_imsi));
  (void)agent.detach(out->operational);

  run.baseline({&d});
  auto taken = net::call_json(*w.as_sho, "PUT", w.ro_url + "/v1/drf/registrations/" + pcid,
                              Json{{"device_id", id},
                                   {"dpf_url", w.ro_url},
                                   {"dpf_key_pin", std::string(64, '0')},
                                   {"apn", "taken.example"},
                                   {"pin", pin_of(d.bundle)}},
                              {.peer = "ro", .ok_status = 200});
  if (!taken) run.refused("ro", taken.error());
  run.finish({});
  return {};
}

// ---- F2 stopped half way -----------------------------------------------------------------------

// F2 stopped half way (the device agent killed before a step), then run again: every party's
// state in between and at the end. `report_lost`: stopped before the report, the install
// committed; else before the install, the package downloaded. Then the TRE's report is posted
// once more (over a new PCID session): the DPF has it and refuses, nothing changes.
Result<void> provision_interrupted(Run& run, const ScenarioWorld& w, bool report_lost) {
  if (auto m = run.make(1); !m) return m;
  FleetDevice& d = run.devices.front();
  const std::string& id = d.bundle.device_id;
  if (auto e = run.enrol(d); !e) return e;
  const device::Step at = report_lost ? device::Step::report : device::Step::install;
  device::Agent first = run.agent(d, [at](device::Step step) -> Result<void> {
    if (step != at) return {};
    return fail(ErrorCode::internal, "the device agent was killed");
  });
  auto stopped = first.provision();
  run.check(!stopped, fmt::format("device: its run stopped before the {} ({})", to_string(at),
                                  stopped ? "it did not" : stopped.error().message));

  const std::string journal = device::provisioning_journal_path(*d.tre);
  auto text = read_text_file(journal);
  const Json kept = text ? Json::parse(*text, nullptr, false) : Json();
  run.check(kept.is_object() && kept.contains("session") &&
                kept.contains("package_id") == report_lost && !kept.contains("report"),
            report_lost ? "device: its journal keeps the open session and the package's id"
                        : "device: its journal keeps the open session, no package");
  auto sub = w.sho_db->subscribers().find(id);
  run.check(sub && *sub && (*sub)->status == store::SubscriberStatus::provisioning,
            "sho: provisioning (no install report yet)");
  auto pending = w.ro_db->packages().next_for_device(id);
  run.check(pending && *pending && (*pending)->status == store::PackageStatus::delivered,
            "ro: the package is delivered, not reported");
  const std::string imsi = sub && *sub ? (*sub)->imsi : "?";
  if (report_lost) {
    run.check(state_in_tre(d, imsi) == "installed" && mcims_of(d) == 1,
              fmt::format("tre: {} installed, not activated", imsi));
  } else {
    run.check(mcims_of(d) == 0, "tre: nothing installed");
  }

  device::Agent next = run.agent(d);
  auto out = next.provision();
  if (!out) return with_prefix(out.error(), "the device's next run");
  auto took = [&](device::Step s) {
    return std::any_of(out->steps.begin(), out->steps.end(),
                       [s](const device::StepTiming& t) { return t.step == s; });
  };
  if (report_lost) {
    run.check(out->resumed && !took(device::Step::install) && took(device::Step::report),
              "device: the next run had the TRE sign its install report again and sent it, "
              "without installing again");
  } else {
    run.check(!out->resumed && took(device::Step::install),
              "device: the next run found the package waiting and installed it");
  }
  (void)next.detach(out->operational);
  run.check(!std::filesystem::exists(journal), "device: its journal is gone");
  const tre::Status status = d.tre->status();
  run.check(status.selected == imsi && out->imsi == imsi &&
                audited_in_tre(d, "install", "ok", "operator:" + w.sho_operator) == 1,
            fmt::format("tre: {} selected, installed once", imsi));
  sub = w.sho_db->subscribers().find(id);
  run.check(sub && *sub && (*sub)->status == store::SubscriberStatus::active,
            fmt::format("sho: subscriber active with imsi {}", imsi));
  auto auc = w.sho_db->pcids().find(imsi);
  run.check(auc && *auc && (*auc)->status == store::PcidStatus::active,
            "sho: its AuC serves the IMSI");

  // The replay, with the report the device signed (the DPF's record of it).
  std::string report;
  if (auto reported = w.ro_db->packages().find(out->package_id); reported && *reported) {
    report = (*reported)->report;
  }
  run.baseline({&d});
  auto session = next.attach(d.bundle.pcid);
  if (!session) return with_prefix(session.error(), "a PCID session for the replay");
  auto pems = device::platform_chain_pems(*d.tre);
  if (!pems) return std::unexpected(pems.error());
  auto client = net::HttpsClient::create(w.endpoints.device_tls);
  if (!client) return std::unexpected(client.error());
  auto replayed =
      net::exchange(**client, "POST", w.ro_url + "/v1/dpf/packages/" + out->package_id + "/report",
                    Json{{"report", report}, {"platform_chain", *pems}},
                    {.peer = "ro",
                     .ok_status = 200,
                     .headers = {{"Authorization", "Bearer " + session->home_session}}});
  if (!replayed) run.refused("ro", replayed.error());
  (void)next.detach(*session);
  run.finish({});
  return {};
}

// ---- Operator change (F4) ----------------------------------------------------------------------

enum class ChangeFault { none, dpf_killed, report_lost, agent_crash, write_failed };

// Whether any audit record of `db` mentions `needle` (subject, principal or detail).
bool audit_mentions(store::Database& db, std::string_view needle) {
  auto recent = db.audit().recent(100000);
  if (!recent) return true;  // unreadable: not proven clean
  return std::any_of(recent->begin(), recent->end(), [&](const store::AuditRecord& a) {
    return a.subject.find(needle) != std::string::npos ||
           a.principal.find(needle) != std::string::npos ||
           a.detail.find(needle) != std::string::npos;
  });
}

// What every party holds while a change is half done: the old subscription serves, the new one
// waits; `installed`: whether the TRE's one commit has happened.
void check_change_pending(Run& run, const ScenarioWorld& w, FleetDevice& d,
                          const std::string& old_imsi, bool installed) {
  const std::string& id = d.bundle.device_id;
  auto old_sub = w.sho_db->subscribers().find(id);
  run.check(old_sub && *old_sub && (*old_sub)->status == store::SubscriberStatus::active,
            "old sho: still active (no discard acknowledgement yet)");
  auto new_sub = w.sho2_db->subscribers().find(id);
  run.check(new_sub && *new_sub && (*new_sub)->status == store::SubscriberStatus::provisioning,
            "new sho: provisioning (no install report yet)");
  auto reg = w.ro_db->registrations().find(d.bundle.pcid);
  run.check(reg && *reg && (*reg)->sho == w.sho_operator && (*reg)->successor == w.sho2_operator,
            "ro: the registration is still the old SHO's, the new SHO its successor");
  if (installed) {
    const std::string fresh = new_sub && *new_sub ? (*new_sub)->imsi : "?";
    run.check(state_in_tre(d, old_imsi) == "deleted" && state_in_tre(d, fresh) == "installed",
              fmt::format("tre: {} deleted and {} installed in one commit, never both usable",
                          old_imsi, fresh));
  } else {
    run.check(state_in_tre(d, old_imsi) == "selected" && mcims_of(d) == 1,
              fmt::format("tre: {} still selected, nothing installed", old_imsi));
  }
}

// F4 (TR 33.812 §5.1.3.7.4.2): provisioned and attached at the old SHO; the owner registers the
// device at the new SHO ordering the change (the PIN proves ownership to the RO) and gives the TRE
// the new registration nonce; the device, still on its old subscription, proves its platform key
// to the DPF, answers the new SHO's attestation, downloads the package, and its TRE discards the
// old MCIM and installs the new one in one commit; the report goes with the two discard
// acknowledgements; the RO hands the registration over and gives the old SHO the full
// acknowledgement (it deactivates its IMSI) and the new SHO the filtered one (it activates its
// own). Every party is checked, and, with a fault, the half-done state too. Then the old SHO
// orders the change back without the owner's PIN: the RO refuses, nothing changes.
Result<void> change_operator(Run& run, const ScenarioWorld& w, ChangeFault fault) {
  if (w.sho2_db == nullptr || w.sho2_url.empty()) {
    return fail(ErrorCode::missing_argument, "change-operator: the second SHO");
  }
  if (fault == ChangeFault::dpf_killed && (!w.stop_ro || !w.start_ro)) {
    return fail(ErrorCode::missing_argument, "change-operator: the RO's restart");
  }
  if (auto m = run.make(1); !m) return m;
  FleetDevice& d = run.devices.front();
  const std::string& id = d.bundle.device_id;
  const std::string& pcid = d.bundle.pcid;
  if (auto e = run.enrol(d); !e) return e;
  device::Agent first = run.agent(d);
  auto provisioned = first.provision();
  if (!provisioned) return with_prefix(provisioned.error(), "provisioning at the old SHO");
  const std::string old_imsi = provisioned->imsi;
  device::Attachment old_session = provisioned->operational;

  FleetEndpoints at_new = w.endpoints;
  at_new.sho_url = w.sho2_url;
  if (auto e = register_device(d, at_new, w.fleet, {.change = true}); !e) {
    return with_prefix(e.error(), "the owner's change order at the new SHO");
  }

  if (fault == ChangeFault::write_failed) {
    // The old MCIM not selected (the device off the network for the moment), so that the run's
    // first commit in the TRE is the replacement itself, the one the failure is to hit.
    (void)first.detach(old_session);
    if (auto r = d.tre->apply(tre::Action::deselect, old_imsi); !r) {
      return with_prefix(r.error(), "deselecting the old MCIM");
    }
  }
  // The fault, injected before a step of the device's run. write_failed: the counter's temporary
  // file made a directory, so that the TRE's commit stops after the state is on disk (io_error).
  std::thread restarter;
  bool injected = false;
  const std::filesystem::path obstacle = d.tre->dir() + "/counter.sealed.tmp";
  // Whether the run stops once the TRE's commit is on disk: before its report, or at its write.
  const bool committed = fault == ChangeFault::report_lost || fault == ChangeFault::write_failed;
  auto interrupt = [&](device::Step step) -> Result<void> {
    if (injected) return {};
    if (fault == ChangeFault::write_failed && step == device::Step::install) {
      injected = true;
      std::filesystem::create_directories(obstacle / "x");
      return {};
    }
    if (fault == ChangeFault::dpf_killed && step == device::Step::package) {
      // The package is at the DPF (the new SHO got the attestation); the device reaches for it.
      for (int i = 0; i < 500; ++i) {
        auto p = w.ro_db->packages().next_for_device(id);
        if (p && *p) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      injected = true;
      if (auto stopped = w.stop_ro(); !stopped) return stopped;
      restarter = std::thread([&w] {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        if (auto started = w.start_ro(); !started) {
          log::warn("scenario", "the RO did not start again: {}", started.error());
        }
      });
      return {};
    }
    if (fault == ChangeFault::report_lost && step == device::Step::report) {
      injected = true;
      return fail(ErrorCode::io_error, "the status report was lost on the way");
    }
    if (fault == ChangeFault::agent_crash && step == device::Step::install) {
      injected = true;
      return fail(ErrorCode::internal, "the device agent crashed");
    }
    return {};
  };
  device::Agent agent = run.agent(d, interrupt);
  auto changed = agent.change_operator();
  if (restarter.joinable()) restarter.join();
  if (fault == ChangeFault::dpf_killed) {
    run.check(injected, "ro: stopped as the device started its download, started again");
  }
  if (fault == ChangeFault::write_failed) {
    // Nothing reported (a failure report would end the change while the TRE, opened again, holds
    // the new MCIM); the device restarts, and its TRE finishes the commit as it opens.
    run.check(!changed && changed.error().code == ErrorCode::io_error,
              fmt::format("device: its run stopped at the TRE's write, io_error ({})",
                          changed ? "it did not" : changed.error().message));
    std::error_code ec;
    std::filesystem::remove_all(obstacle, ec);
    if (auto r = run.reopen(d); !r) return r;
  }
  if (fault == ChangeFault::report_lost || fault == ChangeFault::agent_crash ||
      fault == ChangeFault::write_failed) {
    run.check(!changed, fmt::format("device: its run stopped ({})",
                                    changed ? "it did not" : changed.error().message));
    check_change_pending(run, w, d, old_imsi, committed);
    if (committed) {
      // The mark the agent wrote just before the TRE's commit: all the next run needs.
      std::string package;
      for (const auto& c : d.tre->status().credentials) {
        if (c.kind == tre::CredentialKind::mcim && c.state == tre::McimState::installed) {
          package = c.package_id;
        }
      }
      auto mark = read_text_file(device::change_mark_path(*d.tre, package).value_or(""));
      run.check(!package.empty() && mark &&
                    Json::parse(*mark, nullptr, false) == Json{{"replaced", old_imsi}},
                fmt::format("device: a mark beside the TRE names {}, the MCIM replaced", old_imsi));
    }
    if (fault == ChangeFault::agent_crash) {
      // The old subscription still works: the device ends its session and attaches again.
      (void)first.detach(old_session);
      auto again = first.attach(old_imsi);
      run.check(bool(again), fmt::format("device: attaches with {} again ({})", old_imsi,
                                         again ? "operational" : again.error().message));
      if (again) old_session = std::move(*again);
    }
    device::Agent next = run.agent(d);
    changed = next.change_operator();
    if (changed) {
      run.check(changed->resumed == committed,
                committed
                    ? "device: the next run had the TRE sign the reports again and sent them, "
                      "without installing again"
                    : "device: the next run found the package waiting and installed it");
    }
  }
  if (!changed) return with_prefix(changed.error(), "the device's change");
  (void)first.detach(old_session);
  const std::string new_imsi = changed->imsi;

  const tre::Status status = d.tre->status();
  run.check(
      status.selected == new_imsi && state_in_tre(d, old_imsi) == "deleted" &&
          state_in_tre(d, pcid) == "activated",
      fmt::format("tre: {} selected, {} deleted, the PCID credential kept", new_imsi, old_imsi));
  run.check(audited_in_tre(d, "replace", "ok", "device") == 1,
            "tre: one replace in its audit log (discard and install in one commit)");
  run.check(!changed->operational.session.empty(),
            fmt::format("device: attached with {}", new_imsi));
  auto reg = w.ro_db->registrations().find(pcid);
  run.check(
      reg && *reg && (*reg)->sho == w.sho2_operator && (*reg)->successor.empty(),
      fmt::format("ro: the DRF registration of {} is the new SHO's, no change pending", pcid));
  // The old SHO hears of the discard through the RO's relay: asynchronous.
  std::optional<store::Subscriber> old_sub;
  for (int i = 0; i < 500; ++i) {
    auto found = w.sho_db->subscribers().find(id);
    old_sub = found ? *found : std::optional<store::Subscriber>();
    if (found && !*found) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  run.check(!old_sub, "old sho: the subscriber is removed (released on the TRE's acknowledgement)");
  auto auc = w.sho_db->pcids().find(old_imsi);
  run.check(auc && *auc &&
                (*auc)->active_until <
                    std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()),
            fmt::format("old sho: the AuC no longer serves {}", old_imsi));
  auto sub2 = w.sho2_db->subscribers().find(id);
  run.check(sub2 && *sub2 && (*sub2)->status == store::SubscriberStatus::active &&
                (*sub2)->imsi == new_imsi,
            fmt::format("new sho: subscriber active with imsi {}", new_imsi));
  auto auc2 = w.sho2_db->pcids().find(new_imsi);
  run.check(auc2 && *auc2 && (*auc2)->status == store::PcidStatus::active,
            "new sho: its AuC serves the new IMSI");
  run.check(!audit_mentions(*w.sho2_db, old_imsi) && !audit_mentions(*w.sho2_db, w.sho_operator),
            "new sho: its records name neither the old IMSI nor the old SHO (privacy filtering)");

  run.baseline({&d});
  auto back =
      net::call_json(*w.as_sho, "POST", w.ro_url + "/v1/drf/registrations/" + pcid + "/change",
                     Json{{"device_id", id}, {"pin", "0000"}}, {.peer = "ro", .ok_status = 200});
  if (!back) run.refused("ro", back.error());
  run.finish({});
  return {};
}

}  // namespace

std::span<const ScenarioInfo> scenarios() { return kScenarios; }

Result<ScenarioReport> run_scenario(std::string_view name, const ScenarioWorld& w) {
  const ScenarioInfo* info = info_of(name);
  if (info == nullptr) {
    std::string names;
    for (const ScenarioInfo& s : kScenarios)
      names += (names.empty() ? "" : " ") + std::string(s.name);
    return fail(ErrorCode::invalid_argument, fmt::format("scenario: one of {}", names));
  }
  if (w.ro_db == nullptr || w.sho_db == nullptr || !w.next_pcids) {
    return fail(ErrorCode::missing_argument, "scenario: the RO's and SHO's databases, PCIDs");
  }
  ScenarioReport report;
  report.name = std::string(info->name);
  report.what = std::string(info->what);
  report.expected_party = std::string(info->party);
  report.expected_code = std::string(info->code);
  Run run(w, *info, report);
  Result<void> done;
  if (name == "measurement-mismatch") done = validation_refused(run, w, false);
  if (name == "revoked-certificate") done = validation_refused(run, w, true);
  if (name == "wrong-pin") done = wrong_pin(run);
  if (name == "expired-registration") done = expired_registration(run, w);
  if (name == "forged-bootstrap") done = forged_bootstrap(run, w);
  if (name == "unregistered-pcid") done = unregistered_pcid(run);
  if (name == "second-attach") done = second_attach(run);
  if (name == "outside-apn") done = outside_apn(run, w);
  if (name == "unregistered-device") done = unregistered_device(run, w);
  if (name == "replayed-package") done = package_refused(run, w, "replayed");
  if (name == "tampered-package") done = package_refused(run, w, "tampered");
  if (name == "foreign-package") done = package_refused(run, w, "foreign");
  if (name == "two-operators") done = two_operators(run, w);
  if (name == "remote-management") done = remote_management(run, w);
  if (name == "delayed-activation") done = delayed_activation(run, w);
  if (name == "renew-pcid") done = renew_pcid(run, w);
  if (name == "revert-pristine") done = revert_pristine(run, w);
  if (name == "provision-report-lost") done = provision_interrupted(run, w, true);
  if (name == "provision-agent-crash") done = provision_interrupted(run, w, false);
  if (name == "change-operator") done = change_operator(run, w, ChangeFault::none);
  if (name == "change-operator-dpf-killed") done = change_operator(run, w, ChangeFault::dpf_killed);
  if (name == "change-operator-report-lost") {
    done = change_operator(run, w, ChangeFault::report_lost);
  }
  if (name == "change-operator-agent-crash") {
    done = change_operator(run, w, ChangeFault::agent_crash);
  }
  if (name == "change-operator-write-failed") {
    done = change_operator(run, w, ChangeFault::write_failed);
  }
  if (!done) return with_prefix(done.error(), name);
  return report;
}

}  // namespace mcim::sim
