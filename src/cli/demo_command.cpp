#include "cli/demo_command.h"

#include <fmt/format.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "cli/serve_config.h"
#include "cli/up_command.h"
#include "common/log.h"
#include "common/process.h"
#include "sim/fleet.h"
#include "sim/scenario.h"

namespace mcim::cli {
namespace {

namespace fs = std::filesystem;

struct DemoArgs {
  std::size_t devices = 10;
  std::size_t concurrency = 16;
  std::string access = "3gpp";
  std::string hostapd = SystemOptions{}.hostapd;
  std::string dir, db;
  std::string scenario;  // empty: the fleet; a name or "all": refusal scenarios
  std::string system;    // --system: the directory of a system `mcim up` runs
  std::string phases;    // --phases: a file to note when each phase of the fleet begins
  bool change = false;   // --change-operator: then move every device to the second SHO (F4)
};

// What each row of the table stands for (the TR's flows and step numbers, DESIGN.md §2).
struct StepText {
  std::string_view step, flow, what;
};
constexpr StepText kSteps[] = {
    {"manufacture", "F0", "batch made at the supplier, PCIDs handed to the RO's ICF"},
    {"register", "F1", "owner registers the device at the SHO (PIN, platform cert)"},
    {"activate", "F7", "owner announces the switch-on"},
    {"attach_pcid", "F2 1-4", "attach at the VNO with the PCID (AKA in the TRE)"},
    {"connect_direct", "F3", "direct IP to the DRF: its nonce signed with the platform key"},
    {"attach_eap", "F3", "EAP-AKA/AKA' via the VNO's RADIUS relay to hostapd, session claimed"},
    {"discovery", "F2 5-7", "DRF: home operator found, bootstrap verified with the PIN"},
    {"attestation", "F2 8-10", "PVA's challenge answered with a signed report"},
    {"package", "F2 11-12", "sealed MCIM package from the DPF (TLS pinned)"},
    {"install", "F2 13", "package opened and installed in the TRE"},
    {"report", "F2 13-14", "signed status report to the DPF, SHO activates"},
    {"attach_imsi", "F2 end", "attach with the new IMSI: operational"},
    {"provision", "F2/F3", "the whole provisioning of one device"},
    {"change_order", "F4 1", "owner orders the change at the new SHO (PIN to the RO)"},
    {"connect_dpf", "F4", "platform key proven to the DPF: a DPF session, no attach"},
    {"change", "F4", "the whole operator change of one device"},
};

StepText text_of(const std::string& step) {
  for (const StepText& t : kSteps) {
    if (t.step == step) return t;
  }
  return {step, "", ""};
}

// The F4 rows: the step names are the device's, the meaning is the change's.
StepText change_text_of(const std::string& step) {
  if (step == "attestation") return {"attestation", "F4 2-4", "new SHO's PVA challenge answered"};
  if (step == "package") return {"package", "F4 5", "the new SHO's package from the DPF"};
  if (step == "install") {
    return {"install", "F4 6-7", "old MCIM discarded, new one installed: one TRE commit"};
  }
  if (step == "report") {
    return {"report", "F4 8-11", "report and both discard acknowledgements to the DPF"};
  }
  if (step == "attach_imsi") return {"attach_imsi", "F4 end", "attach with the new SHO's IMSI"};
  return text_of(step);
}

// Devices the system in `dir` has made before (the supplier's bundles), so that a demo run again
// in the same directory manufactures fresh PCIDs after them.
std::size_t devices_made_before(const std::string& batches) {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& batch : fs::directory_iterator(batches, ec)) {
    std::error_code inner;
    for (const auto& f : fs::directory_iterator(batch.path() / "bundles", inner)) {
      (void)f;
      ++n;
    }
  }
  return n;
}

// A private directory that is removed when the demo ends (unless the user named one).
class WorkDir {
 public:
  static Result<WorkDir> make(const std::string& named) {
    WorkDir w;
    if (!named.empty()) {
      w.path_ = named;
      return w;
    }
    std::string tmpl = (fs::temp_directory_path() / "mcim-demo-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      return fail(ErrorCode::io_error, "cannot make a temporary directory for the demo");
    }
    w.path_ = tmpl;
    w.owned_ = true;
    return w;
  }
  WorkDir(WorkDir&& o) noexcept : path_(std::move(o.path_)), owned_(o.owned_) { o.owned_ = false; }
  WorkDir(const WorkDir&) = delete;
  ~WorkDir() {
    if (owned_) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  const std::string& path() const { return path_; }

 private:
  WorkDir() = default;
  std::string path_;
  bool owned_ = false;
};

// A bar on stderr, redrawn in place; only on a terminal.
class Progress {
 public:
  Progress(std::ostream& err, bool on) : err_(err), on_(on) {}
  void say(std::string_view line) {
    if (!on_) return;
    std::lock_guard lock(mu_);
    err_ << line << '\n' << std::flush;
  }
  void update(std::size_t done, std::size_t failed, std::size_t total) {
    if (!on_ || total == 0) return;
    std::lock_guard lock(mu_);
    const std::size_t bars = done * kWidth / total;
    err_ << fmt::format("\r  [{}{}] {}/{} devices done, {} failed", std::string(bars, '#'),
                        std::string(kWidth - bars, ' '), done, total, failed)
         << std::flush;
    if (done == total) err_ << '\n' << std::flush;
  }

 private:
  static constexpr std::size_t kWidth = 40;
  std::ostream& err_;
  bool on_;
  std::mutex mu_;
};

// "2 3gpp, 2 direct, 1 eap-aka, 1 eap-aka-prime", in the order of the round-robin.
std::string access_counts(const sim::FleetReport& r) {
  std::string out;
  for (const char* access : {"3gpp", "direct", "eap-aka", "eap-aka-prime"}) {
    const auto it = r.access.find(access);
    if (it == r.access.end()) continue;
    out += fmt::format("{}{} {}", out.empty() ? "" : ", ", it->second, access);
  }
  return out;
}

// The step table: count, p50, p99 and what each step is.
void print_steps(std::ostream& out, const std::vector<sim::StepStats>& steps,
                 StepText (*text)(const std::string&)) {
  out << fmt::format("\n {:<14} {:<9} {:>6} {:>9} {:>9}  {}\n", "step", "TR", "count", "p50 ms",
                     "p99 ms", "what happened");
  for (const sim::StepStats& s : steps) {
    const StepText t = text(s.step);
    out << fmt::format(" {:<14} {:<9} {:>6} {:>9.2f} {:>9.2f}  {}\n", s.step, t.flow, s.count,
                       s.p50_ms, s.p99_ms, t.what);
  }
}

void print_text(std::ostream& out, const DemoArgs& a, const SystemDescription& system,
                const sim::FleetReport& r) {
  const std::string_view access = a.access == "3gpp"      ? "over 3GPP access"
                                  : a.access == "non3gpp" ? "over non-3GPP access"
                                                          : "over 3GPP and non-3GPP access";
  const std::string_view flows = a.access == "3gpp"      ? "F2"
                                 : a.access == "non3gpp" ? "F3"
                                                         : "F2, F3";
  out << fmt::format(
      "mcim demo: {} devices from the factory to an operational subscription {}\n"
      "(3GPP TR 33.812 alternative 1a: F0, F1, F7, {}). Services on 127.0.0.1, {}{}:\n",
      r.devices, access, flows, system.options().db_url.empty() ? "SQLite" : "PostgreSQL",
      a.system.empty() ? "" : fmt::format(", run by `mcim up --dir {}`", system.options().dir));
  for (const auto& s : system.services()) {
    out << fmt::format("  {:<9} {}\n", s.role, s.url);
  }
  if (a.access != "3gpp") {
    out << fmt::format("  {:<9} {} (the VNO's RADIUS relay to hostapd)\n", "radius",
                       system.non3gpp().radius);
    out << fmt::format("access, in turn: {}\n", access_counts(r));
  }
  print_steps(out, r.steps, text_of);
  out << fmt::format(
      "\nprovisioned {} of {} devices in {:.2f} s ({} at a time): {:.1f} provisionings/s\n",
      r.provisioned, r.devices, r.provision_seconds, a.concurrency, r.throughput_per_s);
  for (const auto& [what, n] : r.failures) {
    out << fmt::format("failed: {} device(s) at {}\n", n, what);
  }
  if (a.change) {
    out << fmt::format("\noperator change (F4) of every operational device to {}:\n",
                       system.url("sho2"));
    print_steps(out, r.change_steps, change_text_of);
    out << fmt::format(
        "\nmoved {} of {} devices in {:.2f} s ({} at a time): {:.1f} operator "
        "changes/s\n",
        r.changed, r.provisioned, r.change_seconds, a.concurrency, r.changes_per_s);
    for (const auto& [what, n] : r.change_failures) {
      out << fmt::format("change failed: {} device(s) at {}\n", n, what);
    }
  }
  const bool ok = r.failed == 0 && r.change_failed == 0;
  out << (ok ? fmt::format("result: every device is operational with its new IMSI{}\n",
                           a.change ? " at the new SHO" : "")
             : std::string("result: FAILED, some devices are not operational (see above)\n"));
}

nlohmann::ordered_json steps_json(const std::vector<sim::StepStats>& steps) {
  auto out = nlohmann::ordered_json::array();
  for (const sim::StepStats& s : steps) {
    out.push_back(
        {{"step", s.step}, {"count", s.count}, {"p50_ms", s.p50_ms}, {"p99_ms", s.p99_ms}});
  }
  return out;
}

void print_json(std::ostream& out, const sim::FleetReport& r) {
  nlohmann::ordered_json j;
  j["devices"] = r.devices;
  j["provisioned"] = r.provisioned;
  j["failed"] = r.failed;
  j["throughput_per_s"] = r.throughput_per_s;
  j["provision_seconds"] = r.provision_seconds;
  j["access"] = nlohmann::ordered_json::object();
  for (const char* access : {"3gpp", "direct", "eap-aka", "eap-aka-prime"}) {
    if (r.access.contains(access)) j["access"][access] = r.access.at(access);
  }
  j["steps"] = steps_json(r.steps);
  j["failures"] = nlohmann::ordered_json::object();
  for (const auto& [what, n] : r.failures) j["failures"][what] = n;
  if (!r.change_steps.empty() || r.change_failed > 0) {
    nlohmann::ordered_json c;
    c["changed"] = r.changed;
    c["failed"] = r.change_failed;
    c["changes_per_s"] = r.changes_per_s;
    c["change_seconds"] = r.change_seconds;
    c["steps"] = steps_json(r.change_steps);
    c["failures"] = nlohmann::ordered_json::object();
    for (const auto& [what, n] : r.change_failures) c["failures"][what] = n;
    j["change"] = std::move(c);
  }
  out << j.dump() << '\n';
}

// The system, and what the fleet needs to reach it.
struct Started {
  std::unique_ptr<SystemDescription> system;
  sim::FleetEndpoints endpoints;
  sim::FleetOptions fleet;
  std::size_t made_before = 0;  // devices of earlier runs in the same directory
};

// The system the fleet runs through: started in this process, or with --system the one that
// `mcim up` runs in another process (its services' CPU is then theirs alone, bench/run_f2.sh).
Result<std::unique_ptr<SystemDescription>> system_for(const DemoArgs& a, const WorkDir& work,
                                                      Progress& progress) {
  log::set_level(log::Level::warn);
  if (!a.system.empty()) {
    if (!a.db.empty()) {
      return fail(ErrorCode::conflicting_arguments,
                  "--db: the system of --system already has its database");
    }
    progress.say(fmt::format("using the system `mcim up` runs in {}", a.system));
    return describe_system(a.system);
  }
  SystemOptions o;
  o.dir = (fs::path(work.path()) / "system").string();
  o.db_url = a.db;
  o.log_level = "warn";
  o.hostapd = a.hostapd;
  progress.say(
      fmt::format("starting the supplier, RO, VNO, SHO and PVA (and hostapd) in {}", o.dir));
  auto system = start_system(o);
  if (!system) return std::unexpected(system.error());
  return std::unique_ptr<SystemDescription>(std::move(*system));
}

// What non-3GPP access needs on this machine, checked before a system is started for it: the
// devices' EAP peer, and hostapd for a system started here.
Result<void> check_eap_tools(const DemoArgs& a) {
  if (a.access == "3gpp") return {};
  const std::string eapol_test = device::EapAccessOptions{}.eapol_test;
  if (::access(eapol_test.c_str(), X_OK) != 0) {
    return fail(ErrorCode::unsupported,
                fmt::format("--access {}: the devices' EAP peer {} is not installed (Debian "
                            "package eapoltest); use --access 3gpp",
                            a.access, eapol_test));
  }
  if (a.system.empty() && ::access(a.hostapd.c_str(), X_OK) != 0) {
    return fail(ErrorCode::unsupported,
                fmt::format("--access {}: EAP-AKA needs hostapd, and {} is not installed (Debian "
                            "package hostapd, or --hostapd PATH); use --access 3gpp",
                            a.access, a.hostapd));
  }
  return {};
}

// The non-3GPP endpoints of the system for the fleet: its DRF, its RADIUS relay and secret.
Result<void> non3gpp_endpoints(const DemoArgs& a, const SystemDescription& s,
                               sim::FleetEndpoints& e) {
  if (a.access == "3gpp") return {};
  const Non3gppAccess& n = s.non3gpp();
  if (n.radius.empty()) {
    return fail(ErrorCode::unsupported,
                fmt::format("--access {}: EAP-AKA needs hostapd, and the system runs without it "
                            "({}); use --access 3gpp",
                            a.access, n.eap_unavailable));
  }
  if (n.drf_url.empty()) {
    return fail(ErrorCode::unsupported,
                fmt::format("--access {}: the system's RO has direct access off", a.access));
  }
  auto radius = parse_listen(n.radius, "radius");
  if (!radius) return std::unexpected(radius.error());
  auto secret = read_radius_secret(n.radius_secret_file);
  if (!secret) return std::unexpected(secret.error());
  e.drf_url = n.drf_url;
  e.radius_host = radius->host;
  e.radius_port = radius->port;
  e.radius_secret = std::move(*secret);
  return {};
}

// The descriptors a fleet run may hold at once: one per device, whose TRE stays open for the
// whole run (its lock), about twelve per device in flight when the services run in this process
// (both ends of the device's connections and the gateway's tunnel, each client connection with
// an event loop of its own), and the system's own (listeners, databases, pools). Measured peaks:
// 614, 812 and 1,011 for 200 devices 16 at a time, 200 and 400 devices 32 at a time.
std::uint64_t open_files_needed(std::size_t devices, std::size_t concurrency) {
  return devices + 16 * concurrency + 256;
}

// Refused up front, before anything is made, rather than failing at the thousandth device with
// "Too many open files": the soft limit is raised to the hard one first.
Result<void> check_open_files(const DemoArgs& a) {
  auto limit = raise_open_file_limit();
  if (!limit) return std::unexpected(limit.error());
  const std::uint64_t needed = open_files_needed(a.devices, a.concurrency);
  if (needed <= *limit) return {};
  return fail(ErrorCode::invalid_argument,
              fmt::format("--devices {} with --concurrency {}: the demo keeps every device's TRE "
                          "open and may need {} open files, but this process may open only {} "
                          "(its hard limit, ulimit -Hn): raise that limit or run fewer devices",
                          a.devices, a.concurrency, needed, *limit));
}

Result<Started> start(const DemoArgs& a, const WorkDir& work, Progress& progress) {
  auto mix = sim::parse_access_mix(a.access);
  if (!mix) return with_prefix(mix.error(), "--access");
  if (auto r = check_eap_tools(a); !r) return std::unexpected(r.error());
  if (auto r = check_open_files(a); !r) return std::unexpected(r.error());
  auto system = system_for(a, work, progress);
  if (!system) return std::unexpected(system.error());
  const SystemDescription& s = **system;

  sim::FleetEndpoints e;
  e.supplier_url = s.url("supplier");
  e.sho_url = s.url("sho");
  e.vno_url = s.url("vno");
  e.factory = s.factory_client();
  e.owner = s.plain_client();
  e.owner_token = s.owner_token();
  e.device_tls.trust = s.device_trust();
  e.supplier_out_dir = s.batches_dir();
  if (auto r = non3gpp_endpoints(a, s, e); !r) return std::unexpected(r.error());

  sim::FleetOptions f;
  f.access = *mix;
  f.devices = a.devices;
  f.concurrency = a.concurrency;
  f.dir = (fs::path(work.path()) / "fleet").string();
  f.tre_binary = s.options().device_binary;
  const std::size_t before = devices_made_before(s.batches_dir());
  return Started{std::move(*system), std::move(e), std::move(f), before};
}

std::string first_pcid(const SystemDescription& s, std::size_t n) {
  const std::string& prefix = s.options().pcid_prefix;
  return fmt::format("{}{:0{}}", prefix, n, 15 - prefix.size());
}

// Runs the demo; the report is printed by the caller.
Result<std::pair<sim::FleetReport, std::unique_ptr<SystemDescription>>> run(const DemoArgs& a,
                                                                            const WorkDir& work,
                                                                            Progress& progress) {
  auto started = start(a, work, progress);
  if (!started) return std::unexpected(started.error());
  sim::FleetOptions& f = started->fleet;
  f.batch_id = fmt::format("demo-{}", started->made_before + 1);
  f.first_pcid = first_pcid(*started->system, started->made_before + 1);
  f.progress = [&progress](std::size_t done, std::size_t failed, std::size_t total) {
    progress.update(done, failed, total);
  };
  if (!a.phases.empty()) {
    // One line per phase, flushed at once: bench/run_f2.sh reads the processes' CPU time as each
    // phase begins. Best effort: a file that cannot be written does not stop the demo.
    f.phase = [path = a.phases](std::string_view phase) {
      std::ofstream file(path, std::ios::app);
      file << phase << ' '
           << std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count()
           << std::endl;
    };
  }
  progress.say(
      fmt::format("manufacturing {} devices, registering them at the SHO, then "
                  "provisioning them {} at a time (access: {})",
                  a.devices, a.concurrency, a.access));
  if (a.change) {
    f.change_to_url = started->system->url("sho2");
    started->endpoints.drf_url = started->system->url("ro");
    if (f.change_to_url.empty()) {
      return fail(ErrorCode::unsupported,
                  "--change-operator: the system runs no second SHO (started by an older mcim?)");
    }
  }
  auto report = sim::run_fleet(started->endpoints, f);
  if (!report) return std::unexpected(report.error());
  return std::pair{std::move(*report), std::move(started->system)};
}

// ---- --scenario --------------------------------------------------------------------------

Result<std::vector<sim::ScenarioReport>> run_scenarios(const DemoArgs& a, const WorkDir& work,
                                                       Progress& progress) {
  std::vector<std::string> names;
  for (const sim::ScenarioInfo& s : sim::scenarios()) {
    if (a.scenario == "all" || a.scenario == s.name) names.emplace_back(s.name);
  }
  if (names.empty()) {
    std::string known;
    for (const sim::ScenarioInfo& s : sim::scenarios()) known += " " + std::string(s.name);
    return fail(ErrorCode::invalid_argument,
                fmt::format("--scenario {}: not a scenario; one of all{}", a.scenario, known));
  }
  if (!a.system.empty()) {
    return fail(ErrorCode::conflicting_arguments,
                "--scenario with --system: the scenarios inspect the services' databases, so "
                "they run the system in this process");
  }
  if (a.access != "3gpp") {
    return fail(
        ErrorCode::conflicting_arguments,
        fmt::format("--scenario with --access {}: the scenarios run over 3GPP access", a.access));
  }
  auto started = start(a, work, progress);
  if (!started) return std::unexpected(started.error());
  const auto* in_process = dynamic_cast<const System*>(started->system.get());
  if (in_process == nullptr) return fail(ErrorCode::internal, "the system is not in this process");
  const System& s = *in_process;
  auto as_sho = s.operator_client("sho");
  if (!as_sho) return std::unexpected(as_sho.error());
  sim::ScenarioWorld w;
  w.endpoints = started->endpoints;
  w.fleet = started->fleet;
  // A refused device stops at the DPF's answer; one that is never answered gives up here.
  w.fleet.agent.timeout = std::chrono::seconds(20);
  std::size_t next = started->made_before + 1;
  w.next_pcids = [&s, &next](std::size_t count) {
    const std::string first = first_pcid(s, next);
    next += count;
    return first;
  };
  w.supplier_ca_dir = s.supplier_ca_dir();
  w.operators_ca_dir = s.options().dir + "/pki/operators-ca";
  w.sho_operator = std::string(kUpSho);
  w.as_sho = *as_sho;
  w.ro_url = s.url("ro");
  w.ro_db = s.database("ro");
  w.sho_db = s.database("sho");
  auto as_vno2 = s.operator_client("vno2");
  if (!as_vno2) return std::unexpected(as_vno2.error());
  w.as_vno2 = *as_vno2;
  w.advance_clock = [&s](std::chrono::seconds by) { s.advance_clock(by); };
  w.expire_dormant = [&s] { return s.expire_dormant_now(); };
  // mcim up leaves the ICF's windows at their defaults.
  w.dormant_period = ro::IcfConfig{}.dormant_period;
  w.quarantine = ro::IcfConfig{}.quarantine;
  w.sho2_operator = std::string(kUpSho2);
  w.sho2_url = s.url("sho2");
  w.sho2_db = s.database("sho2");
  w.stop_ro = [&s] { return s.stop_service("ro"); };
  // The scenarios read the RO's database through w: it is another object once the RO is back.
  w.start_ro = [&s, &w]() -> Result<void> {
    auto again = s.start_service("ro");
    w.ro_db = s.database("ro");
    return again;
  };
  std::vector<sim::ScenarioReport> reports;
  for (const std::string& name : names) {
    progress.say(fmt::format("scenario {}", name));
    auto r = sim::run_scenario(name, w);
    if (!r) return std::unexpected(r.error());
    reports.push_back(std::move(*r));
  }
  return reports;
}

void print_scenarios_text(std::ostream& out, const std::vector<sim::ScenarioReport>& reports) {
  out << "mcim demo --scenario: each attack or mistake against the running system, who refused "
         "it, and what changed\n";
  std::size_t passed = 0;
  for (const sim::ScenarioReport& r : reports) {
    passed += r.passed ? 1 : 0;
    out << fmt::format("\n{} ({})\n", r.name, r.what);
    out << fmt::format("  expected: refused by {} with {}\n", r.expected_party, r.expected_code);
    if (r.code.empty()) {
      out << "  observed: NOT refused\n";
    } else {
      out << fmt::format("  observed: refused by {} with {}: {}\n", r.party, r.code, r.message);
    }
    out << fmt::format("  MCIM installed: {}\n", r.mcim_installed ? "YES" : "no");
    for (const std::string& c : r.checked) out << "  checked: " << c << '\n';
    for (const std::string& c : r.recorded) out << "  recorded: " << c << '\n';
    for (const std::string& c : r.unexpected) out << "  CHANGED: " << c << '\n';
    if (r.recorded.empty() && r.unexpected.empty()) {
      out << "  stores and TREs: unchanged\n";
    }
    out << "  result: " << (r.passed ? "ok" : "FAILED") << '\n';
  }
  out << fmt::format("\n{} of {} scenarios refused as they must\n", passed, reports.size());
}

void print_scenarios_json(std::ostream& out, const std::vector<sim::ScenarioReport>& reports) {
  nlohmann::ordered_json j;
  j["scenarios"] = nlohmann::ordered_json::array();
  std::size_t passed = 0;
  for (const sim::ScenarioReport& r : reports) {
    passed += r.passed ? 1 : 0;
    j["scenarios"].push_back(
        {{"scenario", r.name},
         {"expected", {{"party", r.expected_party}, {"code", r.expected_code}}},
         {"refused_by", r.party},
         {"code", r.code},
         {"message", r.message},
         {"mcim_installed", r.mcim_installed},
         {"recorded", r.recorded},
         {"unexpected_changes", r.unexpected},
         {"checked", r.checked},
         {"passed", r.passed}});
  }
  j["passed"] = passed;
  j["failed"] = reports.size() - passed;
  out << j.dump() << '\n';
}

}  // namespace

void register_demo(CLI::App& app, const bool& json, int* exit_code, Result<Fields>* result,
                   std::ostream& out, std::ostream& err) {
  auto args = std::make_shared<DemoArgs>();
  auto* demo = app.add_subcommand(
      "demo", "the main job: the whole system on loopback and N devices provisioned through it");
  demo->add_option("--devices", args->devices, "devices to manufacture and provision (default 10)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{10'000}));
  demo->add_option("--concurrency", args->concurrency,
                   "devices provisioned at the same time (default 16)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{256}));
  demo->add_option("--access", args->access,
                   "3gpp (F2, default), non3gpp (F3: direct, eap-aka and eap-aka-prime in turn) "
                   "or both (the four in turn)")
      ->check(CLI::IsMember({"3gpp", "non3gpp", "both"}));
  demo->add_option("--hostapd", args->hostapd,
                   "hostapd for EAP access in the system started here (default "
                   "/usr/sbin/hostapd)");
  demo->add_option("--dir", args->dir,
                   "keep the system (PKI, configs, databases, TREs) here; default: a temporary "
                   "directory removed at the end");
  demo->add_option("--db", args->db, "postgresql://... (one schema per role) instead of SQLite");
  demo->add_option(
      "--scenario", args->scenario,
      "run refusal scenarios instead of the fleet: a name, or all (docs/scenarios.md)");
  demo->add_option("--system", args->system,
                   "run the fleet through the system `mcim up --dir DIR` runs (another process) "
                   "instead of starting one here");
  demo->add_option("--phases", args->phases,
                   "append `<phase> <unix ms>` to this file as the fleet begins registering, "
                   "provisioning, and is done (bench/run_f2.sh)");
  demo->add_flag("--change-operator", args->change,
                 "then move every provisioned device to the second SHO (F4) and report operator "
                 "changes/s");
  demo->callback([args, &json, exit_code, result, &out, &err] {
    auto work = WorkDir::make(args->dir);
    if (!work) {
      *result = std::unexpected(work.error());
      return;
    }
    Progress progress(err, !json && isatty(STDERR_FILENO) == 1);
    if (!args->scenario.empty()) {
      auto reports = run_scenarios(*args, *work, progress);
      if (!reports) {
        *result = std::unexpected(reports.error());
        return;
      }
      if (json) {
        print_scenarios_json(out, *reports);
      } else {
        print_scenarios_text(out, *reports);
      }
      out.flush();
      const bool all = std::all_of(reports->begin(), reports->end(),
                                   [](const sim::ScenarioReport& r) { return r.passed; });
      *exit_code = all ? kExitOk : kExitRefused;
      return;
    }
    auto ran = run(*args, *work, progress);
    if (!ran) {
      *result = std::unexpected(ran.error());
      return;
    }
    const auto& [report, system] = *ran;
    if (json) {
      print_json(out, report);
    } else {
      print_text(out, *args, *system, report);
    }
    out.flush();
    *exit_code =
        report.failed == 0 && report.change_failed == 0 && report.provisioned == args->devices
            ? kExitOk
            : kExitRefused;
  });
}

}  // namespace mcim::cli
