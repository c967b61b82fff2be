// The M2ME's agent (DESIGN.md §1 "M2ME with TRE", §2 F2; `mcim device run`): drives the TRE from
// the factory state to an operational subscription with nobody touching it:
//   1-4   attach to the visited network with the PCID (AKA in the TRE; AUTS resynchronisation);
//   5-6   discovery at the RO's DRF through the VNO's gateway; the bootstrap message is verified
//         with the TRE's bootstrap key before anything in it is used;
//   8-10  the attestation request the SHO placed at the DPF (the PVA's nonce), answered with the
//         TRE's signed attestation report;
//   11-13 the package from the DPF over TLS pinned to the bootstrap's key, installed by the TRE,
//         and its signed status report sent back;
//   then  detach, activate and select the new MCIM, attach with its IMSI (retried while the SHO
//         has not yet activated it): operational.
// Over non-3GPP access (F3, AgentConfig::access = eap_aka or eap_aka_prime) steps 1-4 are EAP with
// the access network's RADIUS server instead (the TRE as the EAP peer's SIM, eap_access.h), and
// the restricted session is claimed at the VNO with the MSK; the rest is the same.
// The device's own TLS trust (VNO, DRF) comes from AgentConfig; the DPF is trusted by the pin
// only. Every step is timed; the caller may watch them as they happen. Not thread-safe (the Tre
// is not); run one Agent per device.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "device/eap_access.h"
#include "net/https_client.h"
#include "tre/tre.h"

namespace mcim::device {

// The steps as the TR numbers them (wire and table names: to_string).
enum class Step {
  attach_pcid,  // 1-4
  discovery,    // 5-7
  attestation,  // 8-10: waiting for the request, signing, answering
  package,      // 11-12: waiting for the package and downloading it
  install,      // 13: in the TRE
  report,       // 13-14: the signed status report to the DPF
  attach_imsi,  // detach, activate and select the MCIM, attach with it (waits for activation)
  // F3 without AKA, instead of attach_pcid: the RO's nonce, the TRE's attestation over it, the
  // restricted session the RO opens for the platform key it verified.
  connect_direct,
  // F3 over EAP-AKA/AKA', instead of attach_pcid: EAP with the PCID through the access network's
  // RADIUS server, then the restricted session claimed at the VNO with the MSK.
  attach_eap,
  // F4, instead of attach_pcid and discovery: an operational device proves its platform key to
  // the DPF over the connectivity it has and gets a DPF session (no attach, no bootstrap).
  connect_dpf,
};
std::string_view to_string(Step s);

struct StepTiming {
  Step step;
  std::chrono::microseconds took{};
};

// How the device reaches the RO for its first provisioning (DESIGN.md §2 F2, F3).
enum class Access {
  threegpp,       // F2: attach to a VNO with the PCID (AKA), then through its gateway
  direct,         // F3 without AKA: IP straight to the RO's DRF, the platform key instead of AKA
  eap_aka,        // F3: EAP-AKA through the VNO's RADIUS relay, then the session claimed
  eap_aka_prime,  // F3: the same with EAP-AKA'
};
std::string_view to_string(Access a);  // "3gpp", "direct", "eap-aka", "eap-aka-prime"

// F9: one management instruction of an operator, as the device handled it.
struct ManagedInstruction {
  std::string instruction_id;
  std::string instruction;  // the operator's signed text, as collected from the DPF
  std::string report;       // the TRE's signed answer, as posted back
  std::string outcome;      // "ok" or the TRE's refusal code (the report says the same)
};

struct AgentConfig {
  // https base URL of the visited network's attach endpoints. With direct access it may be
  // empty: the device then ends with its MCIM activated and selected, not attached.
  std::string vno_url;
  Access access = Access::threegpp;
  // https base URL of the RO's DRF, required for direct access and for manage() (the RO's DPF
  // serves management at the same base URL).
  std::string drf_url;
  // EAP access: the peer, the RADIUS server, its secret (eap.method follows `access`).
  EapAccessOptions eap;
  // TLS towards the VNO and the DRF: trust anchors (or a pin), timeouts; no client certificate.
  net::HttpsClientOptions tls;
  std::chrono::milliseconds poll_first{5};  // first wait when the DPF has nothing yet
  std::chrono::milliseconds poll_max{200};  // the wait doubles up to this
  // How long each poll asks the DPF to hold it while nothing is there (`Prefer: wait=N`); below
  // the TLS options' request_timeout. 0: plain polls.
  std::chrono::seconds poll_hold{5};
  std::chrono::seconds timeout{60};         // the whole of provision() or change_operator()
  unsigned max_resyncs = 2;                 // AUTS rounds per attach
  std::chrono::seconds bootstrap_max_age{300};
  // Fault injection for the scenarios and tests ("crash the device agent"): called before each
  // step of provision() and change_operator(), and in renew_pcid() before the TRE's install and
  // before the report; an error stops the run there, as if the agent had died, and is returned.
  // The TRE keeps whatever it committed, the journal what it holds. Empty: never.
  std::function<Result<void>(Step)> interrupt;
};

// An attach through the VNO (F2 steps 1-4, or with an MCIM).
struct Attachment {
  std::string imsi;
  std::string session;       // the VNO's (gateway credential); a bearer token, never logged
  std::string home_session;  // the home's (RO device endpoints); a bearer token, never logged
  bool restricted = false;
  std::string gateway;  // "ip:port" for restricted sessions
  std::string drf_url;  // the RO's DRF for restricted sessions
};

// F8: what renew_pcid did.
struct RenewalOutcome {
  bool renewed = false;    // false: the RO offered nothing (not due yet)
  std::string package_id;  // the renewal's, when renewed
  std::chrono::sys_seconds not_after{};
};

// F4: what change_operator did.
struct ChangeOutcome {
  std::string replaced;  // the old operator's MCIM (its IMSI), now deleted in the TRE
  std::string imsi;      // the new operator's, now selected
  std::string package_id;
  bool resumed = false;    // an earlier run had installed it; this one finished the report
  Attachment operational;  // the attach with the new IMSI (none without a vno_url)
  std::vector<StepTiming> steps;
};

struct Outcome {
  std::string pcid, imsi;  // the MCIM's IMSI, now selected
  std::string package_id;
  bool resumed = false;    // an earlier run had installed it; this one finished what it left
  Attachment operational;  // the attach with the IMSI
  std::vector<StepTiming> steps;
};

// The TRE's platform chain as the DPF and the PVA want it (a JSON array of PEM, leaf first): its
// public copy `platform.pem`, which must start with the certificate the TRE itself holds sealed
// (integrity_failed otherwise).
Result<nlohmann::json> platform_chain_pems(const tre::Tre& tre);

// Where provision() keeps its journal for the next run (answers/.provisioning beside the TRE).
std::string provisioning_journal_path(const tre::Tre& tre);
// Where change_operator() marks the install of an operator change's package, and renew_pcid()
// the renewal to a PCID package, until their reports reach the DPF (answers/<package id> and
// answers/renewal-<package id> beside the TRE; docs/device.md "A run that stops"). A change has
// no mark for a package id that could name something else in that folder (empty, or starting
// with '.'): nullopt.
std::optional<std::string> change_mark_path(const tre::Tre& tre, std::string_view package_id);
std::string renewal_mark_path(const tre::Tre& tre, std::string_view package_id);

class Agent {
 public:
  // `tre` and `clock` must outlive the agent.
  Agent(tre::Tre& tre, AgentConfig config, const Clock& clock);

  // The whole of F2 as above. The TRE must hold the registration nonce already (`mcim device
  // register --nonce`, from the owner). On failure: the refusing party's error code, the message
  // naming the step ("discovery: ..."); the TRE is left as the TRE's own rules leave it.
  //
  // A run that stops anywhere (an error, the agent killed) leaves what its next run needs in a
  // journal beside the TRE (answers/.provisioning): the restricted session's token, and once the
  // install is committed the package id and the TRE's signed report. The next run first ends that
  // session at the VNO (the RO refuses a second simultaneous one with the PCID until it expires);
  // then, when the TRE already holds an MCIM (installed, activated or selected), it resumes
  // instead of starting over: posts the kept report if there is one (over a new restricted
  // session, or with direct access over a DPF session opened with the platform key; the DPF
  // having it already is fine), then activates and selects what is not yet (Outcome::resumed).
  // Without an MCIM, a package the DPF holds already for the device (an earlier run was validated
  // and stopped before installing it) is taken without waiting for a new attestation request.
  Result<Outcome> provision();

  // One attach with the credential `id` (the PCID or an MCIM's IMSI), AUTS retried.
  Result<Attachment> attach(std::string_view id);
  // F3: EAP with the PCID (config.eap, the method of config.access), then
  // POST {vno}/v1/access/eap-sessions with the proof of the MSK: the restricted session.
  Result<Attachment> attach_eap(std::string_view pcid);
  // DELETE the VNO session.
  Result<void> detach(const Attachment& a);

  // F9, one management round of an operational device: its platform key proven to the RO's DPF
  // (config.drf_url, trusted with config.tls: the direct-access challenge, no session needed),
  // the instructions its operators queued there collected, each applied by the TRE (which alone
  // decides: signer, sequence, owner, policy, lifecycle), and the TRE's signed answer posted
  // back for the operator. A refusal by the TRE is an outcome, not an error; an error is a round
  // that could not run (the DPF unreachable, the proof refused). Empty when nothing was pending.
  Result<std::vector<ManagedInstruction>> manage();

  // F4, the device's part of an operator change (TR 33.812 §5.1.3.7.4.2), run by an operational
  // device after its owner ordered the change at the new home operator and gave it the new
  // registration nonce (`mcim device register --nonce`). Over the connectivity it has (config.
  // drf_url, trusted with config.tls) it proves its platform key to the DPF for a DPF session,
  // answers the new SHO's attestation request and downloads its package (the DPF may go away
  // meanwhile: the agent reconnects and resumes until config.timeout); then the TRE, in one
  // commit, discards the old operator's MCIM and installs the new one (Tre::install_replacing;
  // the old one is deselected first) and the install report goes back with the two discard
  // acknowledgements; then the new MCIM is activated and selected and, with a vno_url, attached
  // (retried while the new SHO has not activated it). The caller ends its session on the old
  // IMSI. The reports are kept beside the TRE until the DPF took them, so a run that stops after
  // the install posts them next time instead of installing again. A refusal by the TRE is
  // reported, the old MCIM selected again, and the refusal returned.
  Result<ChangeOutcome> change_operator();

  // F8: first sends any renewal report kept from an earlier run that did not reach the RO (over a
  // DPF session opened with the platform key at config.drf_url: the TRE holds the new K, and the
  // ICF's vectors match it only once the report arrived). Then attaches with the PCID and asks the RO (POST /v1/dpf/pcid-renewal at the DRF's URL,
  // through the VNO's gateway, trusted with config.tls) whether a renewed PCID credential is due.
  // When it is, the TRE installs it (Tre::renew_pcid) and its signed status report goes back
  // whatever the outcome; then the agent detaches. Not due: renewed = false, nothing changes.
  // The TRE's refusal is returned after its report went to the RO.
  Result<RenewalOutcome> renew_pcid();

  // Called after each step with its duration (progress bars, tables).
  void on_step(std::function<void(const StepTiming&)> observer);

 private:
  struct Impl;
  Result<net::HttpsClient*> vno_client();

  tre::Tre& tre_;
  AgentConfig config_;
  const Clock& clock_;
  std::unique_ptr<net::HttpsClient> vno_;  // made at the first attach
  std::function<void(const StepTiming&)> observer_;
};

}  // namespace mcim::device
