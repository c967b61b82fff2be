// Signed messages between stakeholders and the TRE (docs/tre.md "Instructions and status
// reports"): a stakeholder's management instruction (F9: block, unblock, retire, delete, activate
// a credential it owns, or list the credentials it owns: F6, F9 discovery), signed with its
// package-signing key and carrying a per-operator sequence number against replay; and the TRE's
// status report (the outcome of an install or an instruction), signed with the platform key.
// Canonical JSON envelopes of pki/signed_json.h.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "pki/openssl.h"
#include "pki/verify.h"
#include "tre/lifecycle.h"

namespace mcim::tre {

inline constexpr std::uint64_t kMaxSequence = (std::uint64_t{1} << 53) - 1;

// The wire name of the discovery instruction: no lifecycle action, so not an Action. Its
// credential is "-", and the TRE's report lists the signer's own credentials, nobody else's.
inline constexpr std::string_view kListAction = "list";

struct Instruction {
  std::string device_id;   // the TRE it is meant for (token)
  std::string credential;  // the credential id (IMSI); "-" for a list
  Action action = Action::block;
  std::uint64_t sequence = 0;  // per operator, strictly increasing, 1..kMaxSequence
  std::chrono::sys_seconds time{};
  bool list = false;  // "action":"list" (kListAction) instead of `action`
};

// {"certificates":[signer, intermediates...],"instruction":{"action":…,"credential":…,
// "device":…,"sequence":n,"time":n,"type":"mcim-instruction/1"},"signature":…}.
// invalid_argument for a field outside its limits, or a signer certificate that is not a
// package-signing certificate naming an operator, or a key that does not match it.
Result<std::string> sign_instruction(const Instruction& instruction, EVP_PKEY* key,
                                     const std::vector<X509*>& certs);

struct VerifiedInstruction {
  Instruction instruction;
  std::string operator_id;  // from the signer's urn:mcim:operator: SAN
};

// Strict decoding (bad_format); the signer chains to `operators` now with the S/MIME signing
// purpose, as package signers do (chain_invalid / cert_expired) and names its operator
// (chain_invalid); the signature (signature_invalid); the time within max_age of now, either way
// (stale_report). Replay (the sequence) and the device id are the TRE's checks.
Result<VerifiedInstruction> verify_instruction(
    std::string_view text, const pki::TrustAnchors& operators, const Clock& clock,
    std::chrono::seconds max_age = std::chrono::minutes(10));

// One credential in the answer to a list instruction: no key material, no other owner's.
struct ListedCredential {
  std::string id, state, package_id;
  bool operator==(const ListedCredential&) const = default;
};
inline constexpr std::size_t kMaxListed = 64;  // the registry's bound, tombstones included

// The event of F4's discard acknowledgements (Tre::install_replacing): state "deleted", outcome
// "ok"; for the old owner the credential and its package, sequence 0; for the new owner credential
// "-" and the new package and its sequence.
inline constexpr std::string_view kDiscardEvent = "discard";

struct StatusReport {
  std::string device_id;
  std::string
      event;  // "install", the instruction's action, "list", or "instruction" if unverifiable
  std::string credential;  // the credential id, "-" when unknown (an unreadable package)
  std::string package_id;  // "-" when not a package
  std::string outcome;     // "ok" or the error code's wire name
  std::string state;       // the credential's lifecycle state afterwards, "-" when none
  std::uint64_t sequence = 0;  // of the package or instruction answered; 0 when unknown
  std::chrono::sys_seconds time{};
  // event "list" only (member "credentials", sorted by id; absent from every other report):
  // the credentials the instruction's signer owns, at most kMaxListed.
  std::vector<ListedCredential> credentials{};
};

// {"report":{…,"type":"mcim-status/1"},"signature":…}; signed by the platform key, no
// certificates (the receiver holds the platform certificate from registration).
Result<std::string> sign_status_report(const StatusReport& report, EVP_PKEY* platform_key);
// Strict decoding (bad_format) and the signature with the platform certificate's key
// (signature_invalid).
Result<StatusReport> verify_status_report(std::string_view text, X509* platform_cert);
// The strict decoding of verify_status_report without its signature check (bad_format): only for
// a report verified when it arrived and read back from the receiver's own store (the SHO's record
// of the instructions it issued, F9).
Result<StatusReport> decode_status_report(std::string_view text);
// verify_status_report, then: the report is device_id's (wrong_recipient) and answers the
// install of package_id (invalid_argument); a TRE that could not open the package cannot name
// it, so "-" with a refusal answers it too. For the DPF and the SHO that receive it.
Result<StatusReport> verify_install_report(std::string_view text, X509* platform_cert,
                                           std::string_view device_id,
                                           std::string_view package_id);
// verify_status_report, then: the report is device_id's (wrong_recipient) and answers the
// instruction of `sequence` (invalid_argument); a TRE that could not verify the instruction
// cannot name it, so event "instruction", sequence 0, with a refusal answers it too. For the RO
// and the SHO that receive the answer to an instruction (F9).
Result<StatusReport> verify_instruction_report(std::string_view text, X509* platform_cert,
                                               std::string_view device_id, std::uint64_t sequence);

// verify_status_report, then: a discard acknowledgement of device_id's (wrong_recipient) for the
// old owner, naming `credential` (invalid_argument otherwise). For the old SHO (F4).
Result<StatusReport> verify_discard_report(std::string_view text, X509* platform_cert,
                                           std::string_view device_id, std::string_view credential);
// The same for the new owner: names no credential, and names `package_id` (invalid_argument).
Result<StatusReport> verify_discard_notice(std::string_view text, X509* platform_cert,
                                           std::string_view device_id, std::string_view package_id);

}  // namespace mcim::tre
