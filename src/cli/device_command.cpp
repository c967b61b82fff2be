// `mcim device ...`: one command per TRE operation, and `run`, the agent that drives it through
// provisioning over the network. Arguments are parsed and checked before the
// TRE is opened, so bad input (exit 2) never touches the stored state.
#include "cli/device_command.h"

#include <fmt/format.h>

#include <chrono>
#include <memory>
#include <variant>

#include "cli/serve_config.h"
#include "common/file.h"
#include "common/hex.h"
#include "device/agent.h"
#include "net/https_client.h"
#include "pki/signed_json.h"
#include "pki/verify.h"
#include "tre/tre.h"

namespace mcim::cli {
namespace {

using namespace mcim::tre;

struct Args {
  std::string dir, from, package, report, id, signer, instruction, rand, autn, nonce, out;
  std::string vno, trust;
  // device run: F2, F3 without AKA straight to the DRF, or F3 over EAP (the RADIUS server, the
  // VNO's relay; its secret; the peer).
  std::string access = "3gpp", drf, radius, radius_secret_file, eapol_test = "/usr/bin/eapol_test";
  std::string ro;  // device manage: the RO's base URL (its DPF)
  // device install --replacing (F4): the MCIM discarded, where its two acknowledgements go.
  std::string replacing, discard_report, discard_notice;
  unsigned mnc_digits = 2;
  std::uint64_t sequence = 0;
  std::int64_t timeout_s = 60;
  bool verify = false;
  bool show = false;
};

Result<Tre> open_tre(const Args& a) {
  if (auto r = require(a.dir, "--dir"); !r) return std::unexpected(r.error());
  return Tre::open(Options{a.dir});
}

template <std::size_t N>
Result<Bytes<N>> fixed_hex(const std::string& text, std::string_view option) {
  if (auto r = require(text, option); !r) return std::unexpected(r.error());
  return parse_hex_fixed<N>(text, option);
}

std::string time_text(std::chrono::sys_seconds t) {
  return t.time_since_epoch().count() == 0 ? "-" : pki::utc_text(t);
}

Fields::Record credential_record(const CredentialInfo& c) {
  return {{"id", c.id},
          {"kind", std::string(to_string(c.kind))},
          {"state", std::string(to_string(c.state))},
          {"owner", c.owner},
          {"package", c.package_id},
          {"algorithm", c.algorithm},
          {"sequence", std::to_string(c.sequence)},
          {"sqn_ms", std::to_string(c.sqn_ms)},
          {"not_after", time_text(c.not_after)},
          {"changed", time_text(c.changed)}};
}

Fields credential_fields(const CredentialInfo& c) {
  Fields f;
  for (auto& [k, v] : credential_record(c)) f.add(k, v);
  return f;
}

Result<void> write_report(const std::string& path, const std::string& report) {
  if (path.empty() || report.empty()) return {};
  return write_file_atomic(path, report + "\n", 0644);
}

Result<Fields> run_init(const Args& a) {
  if (auto r = require(a.dir, "--dir"); !r) return std::unexpected(r.error());
  if (auto r = require(a.from, "--from"); !r) return std::unexpected(r.error());
  auto bundle = read_bundle(a.from);
  if (!bundle) return std::unexpected(bundle.error());
  if (auto r = Tre::init(Options{a.dir}, *bundle); !r) return std::unexpected(r.error());
  auto tre = Tre::open(Options{a.dir});
  if (!tre) return std::unexpected(tre.error());
  const Status s = tre->status();
  Fields f;
  f.add("dir", a.dir).add("device_id", s.device_id).add("model", s.model);
  f.add("state", std::string(pki::to_string(s.state)));
  f.add("pcid", s.credentials.empty() ? "-" : s.credentials.front().id);
  return f;
}

Result<Fields> run_status(const Args& a) {
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  const Status s = tre->status();
  Fields f;
  f.add("device_id", s.device_id).add("model", s.model);
  f.add("state", std::string(pki::to_string(s.state)));
  if (!s.lockdown_reason.empty()) f.add("lockdown_reason", s.lockdown_reason);
  f.add("selected", s.selected ? *s.selected : "-");
  f.add("generation", std::to_string(s.generation));
  f.add("audit_entries", std::to_string(s.audit_entries));
  std::string blocked;
  for (const auto& id : s.blocked_at_boot) blocked += (blocked.empty() ? "" : ",") + id;
  f.add("blocked_at_boot", blocked.empty() ? "-" : blocked);
  std::vector<Fields::Record> rows;
  for (const auto& c : s.credentials) rows.push_back(credential_record(c));
  f.records("credential", std::move(rows));
  return f;
}

Result<Fields> run_list(const Args& a) {
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  auto list = tre->list();
  if (!list) return std::unexpected(list.error());
  std::vector<Fields::Record> rows;
  for (const auto& c : *list) rows.push_back(credential_record(c));
  Fields f;
  f.records("credential", std::move(rows));
  return f;
}

Result<Fields> run_register(const Args& a) {
  auto nonce = fixed_hex<16>(a.nonce, "--nonce");
  if (!nonce) return std::unexpected(nonce.error());
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  if (auto r = tre->record_registration(*nonce); !r) return std::unexpected(r.error());
  return Fields().add("registration", "recorded");
}

Result<Fields> run_install(const Args& a) {
  if (auto r = require(a.package, "--package"); !r) return std::unexpected(r.error());
  if (a.replacing.empty() && (!a.discard_report.empty() || !a.discard_notice.empty())) {
    return fail(ErrorCode::conflicting_arguments,
                "--discard-report, --discard-notice: only with --replacing");
  }
  if (!a.replacing.empty() && !pki::valid_token(a.replacing, 64)) {
    return fail(ErrorCode::invalid_argument, "--replacing: expected a credential id (the IMSI)");
  }
  auto pkg = read_file(a.package);
  if (!pkg) return std::unexpected(pkg.error());
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  ReplaceOutcome outcome = a.replacing.empty() ? ReplaceOutcome{tre->install(*pkg), "", ""}
                                               : tre->install_replacing(*pkg, a.replacing);
  for (const auto& [path, text] : {std::pair{&a.report, &outcome.install.report},
                                   std::pair{&a.discard_report, &outcome.discard_report},
                                   std::pair{&a.discard_notice, &outcome.discard_notice}}) {
    if (auto w = write_report(*path, *text); !w) return std::unexpected(w.error());
  }
  if (!outcome.install.result) return std::unexpected(outcome.install.result.error());
  Fields f = credential_fields(*outcome.install.result);
  if (!a.report.empty()) f.add("report", a.report);
  if (!a.replacing.empty()) f.add("discarded", a.replacing);
  return f;
}

// With --signer the action is a stakeholder's instruction, signed here with its key (the
// operator's tooling does the same remotely, issue 8); without, the device itself asks.
Result<Fields> run_action(Action action, const Args& a) {
  if (auto r = require(a.id, "--id"); !r) return std::unexpected(r.error());
  if (!pki::valid_token(a.id, 64)) {
    return fail(ErrorCode::invalid_argument, "--id: expected a credential id (the IMSI)");
  }
  if (a.signer.empty()) {
    if (a.sequence != 0) {
      return fail(ErrorCode::conflicting_arguments, "--sequence: only with --signer");
    }
    auto tre = open_tre(a);
    if (!tre) return std::unexpected(tre.error());
    auto info = tre->apply(action, a.id);
    if (!info) return std::unexpected(info.error());
    return credential_fields(*info);
  }
  if (a.sequence > kMaxSequence) {
    return fail(ErrorCode::invalid_argument, fmt::format("--sequence: 1..{}", kMaxSequence));
  }
  auto pair = pki::load_key_pair(a.signer);
  if (!pair) return std::unexpected(pair.error());
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  Instruction ins;
  ins.device_id = tre->status().device_id;
  ins.credential = a.id;
  ins.action = action;
  const auto now = std::chrono::system_clock::now();
  // Milliseconds since the epoch: increasing from one command to the next without a counter
  // file, and far below 2^53.
  ins.sequence =
      a.sequence != 0
          ? a.sequence
          : static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch())
                    .count());
  ins.time = pki::floor_seconds(now);
  std::vector<X509*> certs;
  for (const auto& c : pair->certs) certs.push_back(c.get());
  auto text = sign_instruction(ins, pair->key.get(), certs);
  if (!text) return fail(text.error().code, "--signer: " + text.error().message);
  auto outcome = tre->apply_instruction(*text);
  if (auto w = write_report(a.report, outcome.report); !w) return std::unexpected(w.error());
  if (!outcome.result) return std::unexpected(outcome.result.error());
  Fields f = credential_fields(*outcome.result);
  f.add("sequence", std::to_string(ins.sequence));
  return f;
}

Result<Fields> run_instruct(const Args& a) {
  if (auto r = require(a.instruction, "--instruction"); !r) return std::unexpected(r.error());
  auto text = read_text_file(a.instruction);
  if (!text) return std::unexpected(text.error());
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  auto outcome = tre->apply_instruction(*text);
  if (auto w = write_report(a.report, outcome.report); !w) return std::unexpected(w.error());
  if (!outcome.result) return std::unexpected(outcome.result.error());
  return credential_fields(*outcome.result);
}

Result<Fields> run_authenticate(const Args& a) {
  auto rand = fixed_hex<16>(a.rand, "--rand");
  if (!rand) return std::unexpected(rand.error());
  auto autn = fixed_hex<16>(a.autn, "--autn");
  if (!autn) return std::unexpected(autn.error());
  if (!a.id.empty() && !pki::valid_token(a.id, 64)) {
    return fail(ErrorCode::invalid_argument, "--id: expected a credential id (the IMSI)");
  }
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  auto answer = tre->authenticate(
      a.id.empty() ? std::nullopt : std::optional<std::string_view>(a.id), *rand, *autn);
  if (!answer) return std::unexpected(answer.error());
  Fields f;
  if (auto* ok = std::get_if<aka::UsimSuccess>(&*answer)) {
    f.hex("res", ok->res.view()).hex("ck", ok->ck).hex("ik", ok->ik).hex("sqn", ok->sqn);
    secure_wipe(ok->ck);
    secure_wipe(ok->ik);
    return f;
  }
  const auto& sync = std::get<aka::UsimSyncFailure>(*answer);
  f.add("result", "synchronisation_failure")
      .add("reason", std::string(aka::to_string(sync.reason)));
  f.hex("auts", sync.auts);
  return f.refused();
}

Result<Fields> run_attest(const Args& a) {
  if (auto r = require(a.nonce, "--nonce"); !r) return std::unexpected(r.error());
  auto nonce = parse_hex(a.nonce, "--nonce");
  if (!nonce) return std::unexpected(nonce.error());
  if (nonce->size() < 16 || nonce->size() > 64) {
    return fail(ErrorCode::invalid_argument, "--nonce: expected 16-64 bytes (32-128 hex digits)");
  }
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  auto report = tre->attest(*nonce);
  if (!report) return std::unexpected(report.error());
  Fields f;
  if (!a.out.empty()) {
    if (auto w = write_file_atomic(a.out, *report + "\n", 0644); !w)
      return std::unexpected(w.error());
    f.add("report", a.out);
  } else {
    f.add("report", *report);
  }
  f.add("state", std::string(pki::to_string(tre->status().state)));
  return f;
}

Result<Fields> run_audit(const Args& a) {
  if (!a.verify && !a.show) {
    return fail(ErrorCode::missing_argument, "audit: give --verify, --show or both");
  }
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  auto check = tre->verify_audit();
  if (!check) return std::unexpected(check.error());
  Fields f;
  f.add("entries", std::to_string(check->log.entries.size()));
  f.add("verified", check->tail_checked ? "chain, signatures and sealed head"
                                        : "chain and signatures (no sealed head in lockdown)");
  if (a.show) {
    std::vector<Fields::Record> rows;
    for (const auto& e : check->log.entries) {
      rows.push_back({{"seq", std::to_string(e.seq)},
                      {"time", pki::utc_text(e.time)},
                      {"event", e.event.event},
                      {"subject", e.event.subject},
                      {"principal", e.event.principal},
                      {"outcome", e.event.outcome},
                      {"detail", e.event.detail}});
    }
    f.records("entry", std::move(rows));
  }
  return f;
}

Result<Fields> run_fsck(const Args& a) {
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  auto rep = tre->fsck();
  if (!rep) return std::unexpected(rep.error());
  Fields f;
  f.add("fsck", "ok").add("generation", std::to_string(rep->generation));
  f.add("credentials", std::to_string(rep->credentials));
  f.add("audit_entries", std::to_string(rep->audit_entries));
  f.add("repaired_counter", rep->repaired_counter ? "yes" : "no");
  f.add("repaired_audit", rep->repaired_audit ? "yes" : "no");
  return f;
}

Result<Fields> run_pristine(const Args& a) {
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  if (auto r = tre->pristine(); !r) return std::unexpected(r.error());
  return Fields().add("state", std::string(pki::to_string(tre->status().state)));
}

// The longest a device waits for its home operator (a day: the owner may register it late).
constexpr std::int64_t kMaxRunTimeout = 86400;

// Everything `device run` needs before the TRE is opened, checked first (exit 2 leaves the TRE
// untouched).
Result<void> https_url(const std::string& text, std::string_view option) {
  auto url = net::parse_url(text);
  if (!url || !url->tls) {
    return fail(ErrorCode::invalid_argument, fmt::format("{}: expected an https URL", option));
  }
  return {};
}

// --access 3gpp needs the VNO; --access direct the DRF, and the VNO only to attach afterwards;
// --access eap-aka|eap-aka-prime the VNO, where the session is claimed.
Result<device::Access> run_access(const Args& a) {
  if (a.access == "3gpp") {
    if (!a.drf.empty()) {
      return fail(ErrorCode::conflicting_arguments, "--drf: only with --access direct");
    }
    if (auto r = require(a.vno, "--vno"); !r) return std::unexpected(r.error());
    if (auto r = https_url(a.vno, "--vno"); !r) return std::unexpected(r.error());
    return device::Access::threegpp;
  }
  if (a.access == "eap-aka" || a.access == "eap-aka-prime") {
    if (!a.drf.empty()) {
      return fail(ErrorCode::conflicting_arguments, "--drf: only with --access direct");
    }
    if (auto r = require(a.vno, "--vno"); !r) return std::unexpected(r.error());
    if (auto r = https_url(a.vno, "--vno"); !r) return std::unexpected(r.error());
    return a.access == "eap-aka" ? device::Access::eap_aka : device::Access::eap_aka_prime;
  }
  if (a.access != "direct") {
    return fail(ErrorCode::invalid_argument, "--access: 3gpp, direct, eap-aka or eap-aka-prime");
  }
  if (auto r = require(a.drf, "--drf"); !r) return std::unexpected(r.error());
  if (auto r = https_url(a.drf, "--drf"); !r) return std::unexpected(r.error());
  if (!a.vno.empty()) {
    if (auto r = https_url(a.vno, "--vno"); !r) return std::unexpected(r.error());
  }
  return device::Access::direct;
}

// --access eap-aka|eap-aka-prime: eapol_test against the VNO's RADIUS relay, the TRE as its SIM,
// its files under <dir>/eap.
Result<void> eap_config(const Args& a, device::AgentConfig& c) {
  if (c.access != device::Access::eap_aka && c.access != device::Access::eap_aka_prime) {
    return {};
  }
  if (auto r = require(a.radius, "--radius"); !r) return r;
  if (auto r = require(a.radius_secret_file, "--radius-secret-file"); !r) return r;
  auto server = parse_listen(a.radius, "--radius");
  if (!server) return std::unexpected(server.error());
  if (server->port == 0 || server->host.find(':') != std::string::npos) {
    return fail(ErrorCode::invalid_argument, "--radius: an IPv4 address and a port");
  }
  auto secret = read_radius_secret(a.radius_secret_file);
  if (!secret) return with_prefix(secret.error(), "--radius-secret-file");
  if (a.mnc_digits != 2 && a.mnc_digits != 3) {
    return fail(ErrorCode::invalid_argument, "--mnc-digits: 2 or 3");
  }
  c.eap.eapol_test = a.eapol_test;
  c.eap.radius_host = server->host;
  c.eap.radius_port = server->port;
  c.eap.radius_secret = std::move(*secret);
  c.eap.work_dir = a.dir + "/eap";
  c.eap.mnc_digits = a.mnc_digits;
  return {};
}

Result<device::AgentConfig> run_config(const Args& a) {
  if (auto r = require(a.dir, "--dir"); !r) return std::unexpected(r.error());
  auto access = run_access(a);
  if (!access) return std::unexpected(access.error());
  if (auto r = require(a.trust, "--trust"); !r) return std::unexpected(r.error());
  if (a.timeout_s < 1 || a.timeout_s > kMaxRunTimeout) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("--timeout: 1..{} seconds", kMaxRunTimeout));
  }
  auto anchors = pki::TrustAnchors::from_file(a.trust);
  if (!anchors) return with_prefix(anchors.error(), "--trust");
  device::AgentConfig c;
  c.vno_url = a.vno;
  c.access = *access;
  c.drf_url = a.drf;
  c.tls.trust = std::make_shared<const pki::TrustAnchors>(std::move(*anchors));
  c.timeout = std::chrono::seconds(a.timeout_s);
  if (auto e = eap_config(a, c); !e) return std::unexpected(e.error());
  return c;
}

std::vector<Fields::Record> step_rows(const std::vector<device::StepTiming>& steps) {
  std::vector<Fields::Record> rows;
  for (const auto& t : steps) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.took).count();
    rows.push_back({{"name", std::string(device::to_string(t.step))}, {"ms", std::to_string(ms)}});
  }
  return rows;
}

// A run of the agent refused on the way: the code, the message, the steps done, exit 1.
Result<Fields> refused_run(const Error& e, const std::vector<device::StepTiming>& steps,
                           long long total_ms) {
  Fields f;
  f.add("outcome", "refused")
      .add("code", std::string(e.wire_code()))
      .add("message", e.message)
      .add("total_ms", std::to_string(total_ms));
  f.records("step", step_rows(steps));
  return f.refused();
}

// One run of the agent (`run`: provision, change_operator) on the TRE of --dir, timed, its steps
// watched; a refusal on the way is refused_run's answer, an outcome `answer`'s with the total ms.
template <class Run, class Answer>
Result<Fields> agent_run(const Args& a, device::AgentConfig config, Run run, Answer answer) {
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  SystemClock clock;
  device::Agent agent(*tre, std::move(config), clock);
  std::vector<device::StepTiming> steps;
  agent.on_step([&steps](const device::StepTiming& t) { steps.push_back(t); });
  const auto started = std::chrono::steady_clock::now();
  auto outcome = (agent.*run)();
  const auto total = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now() - started)
                         .count();
  if (!outcome) return refused_run(outcome.error(), steps, total);
  return answer(*outcome, total);
}

// F2 from the device's side. A refusal on the way is the run's answer, not a usage error: the
// steps done so far and the refusing code are printed, exit 1.
Result<Fields> run_run(const Args& a) {
  auto config = run_config(a);
  if (!config) return std::unexpected(config.error());
  return agent_run(a, std::move(*config), &device::Agent::provision,
                   [](const device::Outcome& o, long long total) {
                     Fields f;
                     // Direct access without a VNO ends with the MCIM selected, not attached.
                     f.add("outcome", o.operational.session.empty() ? "provisioned" : "operational")
                         .add("pcid", o.pcid)
                         .add("imsi", o.imsi)
                         .add("package_id", o.package_id)
                         .add("resumed", o.resumed ? "yes" : "no")
                         .add("total_ms", std::to_string(total));
                     f.records("step", step_rows(o.steps));
                     return f;
                   });
}

// F9 from the device's side: one management round at the RO's DPF. The TRE's refusal of an
// instruction is the operator's answer, not the round's failure: it is listed, exit 0.
Result<Fields> run_manage(const Args& a) {
  if (auto r = require(a.dir, "--dir"); !r) return std::unexpected(r.error());
  if (auto r = require(a.ro, "--ro"); !r) return std::unexpected(r.error());
  if (auto r = https_url(a.ro, "--ro"); !r) return std::unexpected(r.error());
  if (auto r = require(a.trust, "--trust"); !r) return std::unexpected(r.error());
  auto anchors = pki::TrustAnchors::from_file(a.trust);
  if (!anchors) return with_prefix(anchors.error(), "--trust");
  device::AgentConfig c;
  c.drf_url = a.ro;
  c.tls.trust = std::make_shared<const pki::TrustAnchors>(std::move(*anchors));
  auto tre = open_tre(a);
  if (!tre) return std::unexpected(tre.error());
  SystemClock clock;
  device::Agent agent(*tre, std::move(c), clock);
  auto round = agent.manage();
  if (!round) return std::unexpected(round.error());
  std::vector<Fields::Record> rows;
  for (const auto& m : *round) {
    rows.push_back({{"id", m.instruction_id}, {"outcome", m.outcome}});
  }
  Fields f;
  f.add("instructions", std::to_string(round->size()));
  f.records("instruction", std::move(rows));
  return f;
}

// F4 from the device's side: the change to the operator the owner registered it at. Like `run`,
// a refusal on the way is the run's answer: the steps so far and the code, exit 1.
Result<Fields> run_change(const Args& a) {
  if (auto r = require(a.ro, "--ro"); !r) return std::unexpected(r.error());
  if (auto r = https_url(a.ro, "--ro"); !r) return std::unexpected(r.error());
  // The options of a run straight to the RO (the DPF is at its URL), the VNO optional.
  Args as_run = a;
  as_run.access = "direct";
  as_run.drf = a.ro;
  auto config = run_config(as_run);
  if (!config) return std::unexpected(config.error());
  return agent_run(a, std::move(*config), &device::Agent::change_operator,
                   [](const device::ChangeOutcome& o, long long total) {
                     Fields f;
                     f.add("outcome", o.operational.session.empty() ? "changed" : "operational")
                         .add("replaced", o.replaced.empty() ? "-" : o.replaced)
                         .add("imsi", o.imsi)
                         .add("package_id", o.package_id)
                         .add("resumed", o.resumed ? "yes" : "no")
                         .add("total_ms", std::to_string(total));
                     f.records("step", step_rows(o.steps));
                     return f;
                   });
}

CLI::App* with_dir(CLI::App* cmd, Args& a) {
  cmd->add_option("--dir", a.dir, "the TRE directory");
  return cmd;
}

}  // namespace

void register_device(CLI::App& app, Result<Fields>* result) {
  auto* device = app.add_subcommand("device", "the device's trusted environment (TRE)");
  device->require_subcommand(1);
  auto args = std::make_shared<Args>();
  Args& a = *args;

  auto* init = with_dir(device->add_subcommand("init", "a pristine TRE from a supplier bundle"), a);
  init->add_option("--from", a.from, "the supplier bundle (mcim supplier manufacture)");
  init->callback([args, result] { *result = run_init(*args); });

  auto* status = with_dir(device->add_subcommand("status", "the TRE and its credentials"), a);
  status->callback([args, result] { *result = run_status(*args); });

  auto* list = with_dir(device->add_subcommand("list", "the credentials and their states"), a);
  list->callback([args, result] { *result = run_list(*args); });

  auto* reg = with_dir(device->add_subcommand("register", "record the registration nonce (F1)"), a);
  reg->add_option("--nonce", a.nonce, "the 16-byte registration nonce from the SHO, hex");
  reg->callback([args, result] { *result = run_register(*args); });

  auto* install = with_dir(device->add_subcommand("install", "install an MCIM package"), a);
  install->add_option("--package", a.package, "the package (DER)");
  install->add_option("--report", a.report, "where to write the signed status report");
  install->add_option("--replacing", a.replacing,
                      "F4: the MCIM (IMSI) this install discards, in the same commit");
  install->add_option("--discard-report", a.discard_report,
                      "with --replacing: the acknowledgement for the old MCIM's owner");
  install->add_option("--discard-notice", a.discard_notice,
                      "with --replacing: the privacy-filtered one for the new package's owner");
  install->callback([args, result] { *result = run_install(*args); });

  for (Action action : {Action::activate, Action::select, Action::deselect, Action::block,
                        Action::unblock, Action::retire, Action::delete_}) {
    const std::string name(to_string(action));
    auto* cmd = with_dir(device->add_subcommand(name, name + " a credential"), a);
    cmd->add_option("--id", a.id, "the credential id (its IMSI)");
    cmd->add_option("--signer", a.signer,
                    "the owning operator's package-signing PREFIX: sign an instruction");
    cmd->add_option("--sequence", a.sequence, "the instruction's sequence (default: now in ms)");
    cmd->add_option("--report", a.report, "where to write the signed status report");
    cmd->callback([args, result, action] { *result = run_action(action, *args); });
  }

  auto* instruct =
      with_dir(device->add_subcommand("instruct", "apply a stakeholder's signed instruction"), a);
  instruct->add_option("--instruction", a.instruction, "the signed instruction (JSON)");
  instruct->add_option("--report", a.report, "where to write the signed status report");
  instruct->callback([args, result] { *result = run_instruct(*args); });

  auto* auth = with_dir(
      device->add_subcommand("authenticate", "run AKA in the TRE: RES, CK, IK or AUTS (exit 1)"),
      a);
  auth->add_option("--id", a.id, "the credential (default: the selected one)");
  auth->add_option("--rand", a.rand, "RAND, 16 bytes hex");
  auth->add_option("--autn", a.autn, "AUTN, 16 bytes hex");
  auth->callback([args, result] { *result = run_authenticate(*args); });

  auto* attest = with_dir(device->add_subcommand("attest", "a signed attestation report"), a);
  attest->add_option("--nonce", a.nonce, "the PVA's nonce, 16-64 bytes hex");
  attest->add_option("--out", a.out, "write the report here instead of printing it");
  attest->callback([args, result] { *result = run_attest(*args); });

  auto* audit = with_dir(device->add_subcommand("audit", "verify or show the audit log"), a);
  audit->add_flag("--verify", a.verify, "verify chain, signatures and the sealed head");
  audit->add_flag("--show", a.show, "list the entries");
  audit->callback([args, result] { *result = run_audit(*args); });

  auto* run =
      with_dir(device->add_subcommand(
                   "run",
                   "provision over the network (F2): attach, discovery, attestation, package, "
                   "install, report, attach with the new IMSI; exit 1 when refused"),
               a);
  run->add_option("--access", a.access,
                  "3gpp (default: attach at the VNO), direct (F3: IP straight to the DRF, the "
                  "platform key instead of AKA), eap-aka or eap-aka-prime (F3: EAP through the "
                  "VNO's RADIUS relay, then the session claimed)");
  run->add_option("--vno", a.vno,
                  "the visited network's https URL (with --access direct: optional, for the "
                  "attach with the new IMSI)");
  run->add_option("--drf", a.drf, "the RO's DRF https URL (--access direct)");
  run->add_option("--trust", a.trust, "PEM trust anchors for the VNO and the DRF");
  run->add_option("--timeout", a.timeout_s, "seconds for the whole run (default 60)");
  run->add_option("--radius", a.radius, "EAP access: the RADIUS server, IPv4:PORT");
  run->add_option("--radius-secret-file", a.radius_secret_file,
                  "EAP access: a file (mode 600) holding the RADIUS shared secret");
  run->add_option("--eapol-test", a.eapol_test, "EAP access: the EAP peer (/usr/bin/eapol_test)");
  run->add_option("--mnc-digits", a.mnc_digits, "EAP access: the PCID's MNC length, 2 or 3");
  run->callback([args, result] { *result = run_run(*args); });

  auto* manage = with_dir(
      device->add_subcommand("manage",
                             "one management round (F9): apply the operators' instructions "
                             "pending at the RO's DPF and send the TRE's signed answers"),
      a);
  manage->add_option("--ro", a.ro, "the RO's https URL (its DPF)");
  manage->add_option("--trust", a.trust, "PEM trust anchors for the RO");
  manage->callback([args, result] { *result = run_manage(*args); });

  auto* change = with_dir(
      device->add_subcommand(
          "change-operator",
          "operator change (F4): prove the platform key at the RO's DPF, answer the new home "
          "operator's attestation, download its package, discard the old MCIM and install the "
          "new one in one commit, report, attach with the new IMSI; exit 1 when refused"),
      a);
  change->add_option("--ro", a.ro, "the RO's https URL (its DPF)");
  change->add_option("--vno", a.vno,
                     "the visited network's https URL (the attach with the new "
                     "IMSI; without it the MCIM ends selected, not attached)");
  change->add_option("--trust", a.trust, "PEM trust anchors for the RO and the VNO");
  change->add_option("--timeout", a.timeout_s, "seconds for the whole run (default 60)");
  change->callback([args, result] { *result = run_change(*args); });

  auto* fsck = with_dir(device->add_subcommand("fsck", "check the stored state end to end"), a);
  fsck->callback([args, result] { *result = run_fsck(*args); });

  auto* pristine = with_dir(
      device->add_subcommand("pristine", "delete every MCIM, keep the PCID credential (F5)"), a);
  pristine->callback([args, result] { *result = run_pristine(*args); });
}

}  // namespace mcim::cli
