// The device's trusted environment (DESIGN.md §3, docs/tre.md): the registry of credentials and
// their lifecycle, the USIM that runs AKA with them, package installation, attestation, access
// control per stakeholder, the audit log, and tamper response, over a Backend (software by
// default) and the sealed state file. Every change is one commit of the whole state: a crash
// leaves the state before or after it, and the SQN is durable before RES leaves the TRE.
// One process at a time holds a TRE directory (busy otherwise); a Tre object is not thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aka/types.h"
#include "aka/vector.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/random.h"
#include "common/secure.h"
#include "pki/attestation.h"
#include "pki/package.h"
#include "tre/audit.h"
#include "tre/backend.h"
#include "tre/bootstrap_key.h"
#include "tre/bundle.h"
#include "tre/instruction.h"
#include "tre/lifecycle.h"
#include "tre/state.h"

namespace mcim::tre {

struct Options {
  std::string dir;
  const Clock* clock = nullptr;           // default: the system clock
  RandomSource* random = nullptr;         // default: the OS
  std::string binary = "/proc/self/exe";  // measured as "tre.binary" by attest()
};

// What anyone may read about a credential: no key material.
struct CredentialInfo {
  std::string id;
  CredentialKind kind = CredentialKind::mcim;
  McimState state = McimState::installed;
  std::string owner, package_id;
  std::string algorithm;  // "milenage" / "tuak"; "-" once wiped
  std::uint64_t sequence = 0;
  std::chrono::sys_seconds not_after{}, installed{}, changed{};
  std::uint64_t sqn_ms = 0;  // highest accepted SQN (SEQ || IND)
};

struct Status {
  std::string device_id, model;
  pki::TreState state = pki::TreState::pristine;  // pristine, provisioned, lockdown
  std::string lockdown_reason;                    // when locked down
  std::optional<std::string> selected;            // the credential carrying connectivity
  std::vector<CredentialInfo> credentials;        // empty in lockdown (the state is unreadable)
  std::uint64_t generation = 0;
  std::uint64_t audit_entries = 0;
  std::vector<std::string> blocked_at_boot;  // credentials the integrity check blocked at open
};

struct InstallOutcome {
  Result<CredentialInfo> result;  // the installed credential, or why the package was refused
  std::string report;             // the signed status report (mcim-status/1), either way
};

// F4 (install_replacing): the install's outcome and report as install() gives them, and, when it
// succeeded, two signed acknowledgements of the discard (status reports, event "discard"): one
// for the old credential's owner naming its credential and package, and one for the new
// package's owner naming only its own package: the fact of a discard, nothing of the old
// subscription.
struct ReplaceOutcome {
  InstallOutcome install;
  std::string discard_report;  // for the old owner; empty on refusal
  std::string discard_notice;  // for the new owner; empty on refusal
};

struct InstructionOutcome {
  // The credential acted on; for a list (F6, F9), a placeholder with id "-", and the list is in
  // the report.
  Result<CredentialInfo> result;
  std::string report;  // signed status report; empty when the instruction was unreadable
};

struct FsckReport {
  std::uint64_t generation = 0;
  std::uint64_t credentials = 0;
  std::uint64_t audit_entries = 0;
  bool repaired_counter = false;  // a commit was interrupted before the counter advanced
  bool repaired_audit = false;    // a torn or missing last audit line was restored
};

class Tre {
 public:
  // A pristine TRE in `options.dir` (created if absent; already_exists when it holds a TRE) from
  // the supplier's bundle: the PCID credential Activated, owned by the RO.
  static Result<void> init(const Options& options, const SupplierBundle& bundle);

  // Opens the TRE: takes the directory lock (busy), repairs an interrupted commit (counter or
  // audit line), and on tamper evidence (state or audit log failing authentication, rollback)
  // enters lockdown, which is not an error here: the returned Tre answers status, attest and
  // audit, and everything else fails with `lockdown`. Then checks every credential's integrity
  // and blocks (and audits) any that fails.
  static Result<Tre> open(const Options& options);

  Tre(Tre&&) noexcept;
  Tre& operator=(Tre&&) noexcept;
  ~Tre();

  Status status() const;
  Result<std::vector<CredentialInfo>> list() const;

  // F1: records the registration nonce the owner received from the SHO; the next install must
  // carry it and consumes it.
  Result<void> record_registration(const Bytes<16>& nonce);

  // F2 step 13: opens the package for this TRE (recipient, signer chain to an operator root,
  // validity, per-operator sequence, registration nonce), checks that its IMSI is free (a
  // tombstone may be replaced), and installs it Installed. The outcome carries a signed status
  // report in both cases; refusals are audited and change nothing else.
  InstallOutcome install(ByteView package);
  // F4 step "before installing, the TRE discards the old SHO's credential": install() and the
  // deletion of `replaced` (a live MCIM, not selected: not_found, transition_refused) in one
  // commit, so that a crash leaves the old credential or the new one, never neither or both. The
  // device decides it on its owner's instruction, as pristine(): no stakeholder's signature is
  // needed to give up a credential, and the new package must pass every check of install()
  // first. Refusals are audited ("replace") and change nothing else.
  ReplaceOutcome install_replacing(ByteView package, std::string_view replaced);

  // F8: a renewed PCID credential from its owner, the RO, as an MCIM-like package (sealed to this
  // TRE, signed by the RO's package signer, opened with install's checks but no registration
  // nonce). It must be for this TRE's PCID (wrong_recipient), from the PCID credential's owner
  // whose policy grants update (access_denied), while the credential is Activated or Selected
  // (transition_refused). Replaces the credential's document, key and SQN array in one commit,
  // keeping its lifecycle state. Audited as "update"; the status report is an install report.
  InstallOutcome renew_pcid(ByteView package);

  // The install report of MCIM `id` signed again, as it stands: event install, outcome ok, its
  // package and that package's sequence, its lifecycle state now. For a device whose agent stopped
  // after the install's commit, before the report install() gave reached the DPF (device.md "A
  // run that stops"): the DPF takes an install's report once, so a second one can only finish
  // the first.
  // Likewise the PCID credential once renewed (F8: renew_pcid's report, the RO's package).
  // not_found for anything else (the factory's PCID credential, tombstones, unknown ids); lockdown
  // in lockdown. Changes nothing, so it is not audited.
  Result<std::string> install_report(std::string_view id) const;
  // F4: install_replacing's three reports signed again, for a device whose agent stopped after
  // that commit, before they reached the DPF: `id`'s install report (as install_report) and the
  // acknowledgements of `replaced`'s discard, which must be an MCIM's tombstone (not_found
  // otherwise, as for an `id` that is not a live MCIM). Changes nothing, not audited.
  Result<ReplaceOutcome> replacement_reports(std::string_view id, std::string_view replaced) const;

  // A lifecycle action asked by the device itself (activate, select, deselect).
  Result<CredentialInfo> apply(Action action, std::string_view id);
  // A stakeholder's signed instruction: verified, checked against replay, this device, the
  // credential's owner and policy, then applied. Refusals are audited and answered with a
  // signed report too.
  InstructionOutcome apply_instruction(std::string_view signed_instruction);

  // The USIM (TS 33.102 §6.3.3): with `id`, or the selected credential when empty. MAC-A first
  // (mac_mismatch), then SQN freshness: a fresh SQN is committed before RES/CK/IK are returned;
  // a stale one yields AUTS (and commits nothing). credential_unusable unless Activated or
  // Selected; pcid_expired for the PCID credential at or past its not_after (F8);
  // integrity_failed (and the credential is blocked) if its integrity check fails.
  Result<aka::UsimAnswer> authenticate(std::optional<std::string_view> id, const aka::Rand& rand,
                                       const aka::Autn& autn);

  // F2 steps 8-10: a report signed by the platform key over the PVA's nonce (16-64 bytes), with
  // measurements "tre.binary" (SHA-256 of options.binary) and "tre.config" (config_digest).
  // Works in lockdown (state "lockdown", configuration measurement absent: the PVA refuses it).
  Result<std::string> attest(ByteView nonce);

  // F2 steps 5-6: the bootstrap key (tre/bootstrap_key.h, derived from the PIN at init), for the
  // device's own agent to verify the DRF's bootstrap message with (ro::verify_bootstrap). It
  // leaves the TRE to that agent only: nothing else asks for it, it is never logged or audited.
  // lockdown in lockdown.
  Result<BootstrapKey> bootstrap_key() const;

  // F5: deletes every MCIM (keys wiped, tombstones kept), deselects, keeps the PCID credential.
  Result<void> pristine();

  // Re-verifies everything from disk: seal, counter, every credential's digest, the whole audit
  // log against the state's head. The first problem found is the error.
  Result<FsckReport> fsck();

  // The audit log, verified (also in lockdown; without the state's head a truncated tail cannot
  // be detected then, and `tail_checked` says so).
  struct AuditCheck {
    AuditLog log;
    bool tail_checked = false;
  };
  Result<AuditCheck> verify_audit() const;

  const std::string& dir() const;
  X509* platform_certificate() const;

  struct Impl;  // tre.cpp

 private:
  explicit Tre(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// SHA-256 of a file as a TRE measures it ("tre.binary"): streamed, and each version of a file
// hashed once per process. A supplier computing the reference for the binary its TREs run uses
// it too, so that both sides read the file the same way. io_error when it cannot be read.
Result<Bytes<32>> measure_file(const std::string& path);

// The aka::Algorithm of a credential's document (MILENAGE with its constants or TUAK).
Result<std::unique_ptr<aka::Algorithm>> algorithm_of(const pki::McimDocument& doc);

}  // namespace mcim::tre
