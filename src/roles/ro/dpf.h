// The RO's DPF (DESIGN.md §1-§2, issue 6 "RO / DPF"): MCIM packages handed over by the SHO that
// registered the device (F2 step 11), checked without decrypting (the SHO's signature and chain,
// pki::verify_package_signature), served only to the device they were sealed for (step 12) and
// again after a failed download, until the device's signed status report arrives (step 13),
// which the DPF verifies, keeps and relays to the SHO (step 14). Before that, the SHO's
// attestation requests (steps 7-9): kept for the device to collect, its answers relayed. Pure
// logic over the store ports; the callers' identities (the SHO's mTLS certificate, the device the
// session or token authenticates) come from the HTTP layer. Thread-compatible: one instance per
// worker thread. docs/roles-ro.md.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/error.h"
#include "pki/openssl.h"
#include "pki/verify.h"
#include "store/store.h"
#include "tre/instruction.h"

namespace mcim::ro {

namespace detail {
// The registration of `pcid`, which must exist (not_found) and be `caller_sho`'s (access_denied):
// what only its holder may change (F5's transfer).
Result<store::Registration> held_registration(store::RegistrationStore& registrations,
                                              std::string_view pcid, std::string_view caller_sho);
// The registration of `pcid`, which must exist (not_found), be `caller_sho`'s (access_denied) and
// name `device_id` (wrong_recipient): what an SHO may send the DPF for a device (packages,
// attestation requests, refusals, management instructions).
Result<store::Registration> sho_registration(store::RegistrationStore& registrations,
                                             std::string_view pcid, std::string_view device_id,
                                             std::string_view caller_sho);
// As sho_registration, but the registration's successor (F4) is let in beside its holder: what
// either may send while the device changes operator (packages, attestation requests, refusals).
Result<store::Registration> provisioning_registration(store::RegistrationStore& registrations,
                                                      std::string_view pcid,
                                                      std::string_view device_id,
                                                      std::string_view caller_sho);
}  // namespace detail

// F2 step 14: a verified status report on its way to the SHO.
struct RelayedStatus {
  std::string package_id, device_id, sho;
  tre::StatusReport report;   // as verified
  std::string signed_report;  // the device's text, for the SHO's own verification
  // F4: the TRE's discard acknowledgement for the new SHO (no credential, its package), verified;
  // empty when the install replaced nothing.
  std::string discard_notice{};
};

// F4 step 7: the TRE's acknowledgement that it discarded the old SHO's MCIM, on its way to that
// SHO (the registration's holder until then), which may now deactivate the IMSI.
struct RelayedDiscard {
  std::string package_id{};  // the new package, whose install discarded the old MCIM
  std::string device_id{}, sho{};
  std::string signed_report{};  // the TRE's discard report, verbatim, as verified
};

class DiscardRelay {
 public:
  virtual ~DiscardRelay() = default;
  // Like StatusRelay::relay: queued and retried by an adapter; a failure is audited and the
  // report stays accepted.
  virtual Result<void> relay_discard(const RelayedDiscard& discard) = 0;
};

// F4: what the device sends beside its install report when the install replaced its old SHO's
// MCIM (tre::Tre::install_replacing).
struct DiscardAcks {
  std::optional<std::string> report{};  // "discard_report", for the holder (the old SHO)
  std::optional<std::string> notice{};  // "discard_notice", for the successor (the new SHO)
};

// A report the DPF accepted.
struct AcceptedReport {
  tre::StatusReport report{};     // as verified
  bool operator_changed = false;  // F4: the registration went to its successor
};

class StatusRelay {
 public:
  virtual ~StatusRelay() = default;
  // Called once per accepted report; an adapter queues and retries towards the SHO, which can
  // also read the stored report. A failure is audited; the report stays accepted.
  virtual Result<void> relay(const RelayedStatus& status) = 0;
};

// F2 step 9: a device's answer to an attestation request on its way to the SHO, which has the
// PVA validate it. The RO only checks that the report decodes: the PVA judges it.
struct RelayedAttestation {
  std::string request_id, pcid, device_id, sho;
  std::string report;                       // the TRE's signed text, verbatim
  std::vector<std::string> platform_chain;  // PEM, leaf first, verbatim
};

class AttestationRelay {
 public:
  virtual ~AttestationRelay() = default;
  // Called once per accepted answer; like StatusRelay::relay, queued and retried by an adapter.
  // A failure is audited; the answer stays accepted.
  virtual Result<void> relay_attestation(const RelayedAttestation& attestation) = 0;
};

// F2 step 7: the SHO asks for an attestation with the PVA's challenge (request_id is the
// challenge id, nonce its 16..64 bytes).
struct AttestationAsk {
  std::string pcid;
  std::string device_id;
  std::string request_id;
  ByteVec nonce;
};

// What the SHO hands over. The device and package ids are inside the encrypted document, which
// the DPF cannot read, so the SHO states them: the device must be the one the SHO registered for
// `pcid`, and the device's signed report later confirms the package id.
struct PackageHandover {
  std::string pcid;
  std::string device_id;
  std::string package_id;
  ByteVec package;  // the CMS bytes (docs/mcim-package.md)
};

struct DeliveredPackage {
  std::string package_id;
  ByteVec package;
};

class Dpf {
 public:
  // `operator_roots` verify package signers; `supplier_roots` verify the platform certificates
  // that reports are checked with. Both must outlive the Dpf.
  struct Relays {
    StatusRelay& status;
    AttestationRelay& attestations;
    DiscardRelay& discards;
  };
  Dpf(store::PackageStore& packages, store::RegistrationStore& registrations,
      store::AttestationRequestStore& requests, store::AuditStore& audit, Relays relays,
      const pki::TrustAnchors& operator_roots, const pki::TrustAnchors& supplier_roots,
      const Clock& clock);
  Dpf(store::Database& db, Relays relays, const pki::TrustAnchors& operator_roots,
      const pki::TrustAnchors& supplier_roots, const Clock& clock);

  // F2 step 7: the SHO's attestation request for its device, stored pending. invalid_argument
  // (ids, a nonce not 16..64 bytes), not_found (no registration of `pcid`), access_denied
  // (neither its holder's nor its successor's, F4), wrong_recipient (not the registered device),
  // already_exists (known id).
  Result<void> request_attestation(const AttestationAsk& ask, std::string_view caller_sho);

  // F2 step 8: the oldest pending request for the device of `registration` (the one the session
  // authenticated) of the registration's holder or successor (F4): another SHO's request (a
  // successor's that refused or was replaced by a new change) is passed over, never served, and
  // blocks no newer one. not_found when there is none.
  Result<store::AttestationRequest> next_attestation_request(
      const store::Registration& registration);

  // F2 steps 8-9: the device's answer to `request_id`: not_found (unknown), access_denied
  // (another device's request), bad_format (the report does not decode), transition_refused
  // (already answered; of two racing answers exactly one is accepted). Marks it answered and
  // relays it to the SHO that asked.
  Result<void> answer_attestation(std::string_view request_id, std::string_view device_id,
                                  std::string report, std::vector<std::string> platform_chain);

  // F2 step 11. Checks, in order: ids (invalid_argument), the registration of `pcid` exists
  // (not_found) and is the caller's, as holder or successor (access_denied), for this device
  // (wrong_recipient), the package's signature and chain (bad_format, chain_invalid, cert_expired,
  // signature_invalid, package_tampered), its signer's operator is the caller (access_denied); then
  // stores it pending (already_exists for a known package id).
  Result<void> store_package(const PackageHandover& handover, std::string_view caller_sho);

  // F2 step 12: the oldest package for the device of `registration` not yet reported, to that
  // device only (access_denied), marked delivered; the same package again until its report
  // arrives. Only the registration's holder's or successor's (F4), as next_attestation_request.
  // not_found when there is none.
  Result<DeliveredPackage> fetch(const store::Registration& registration,
                                 std::string_view authenticated_device);

  // F2 steps 7-14 ended by the SHO: it will not provision `device_id` (the PVA's verdict, an
  // expired registration, a refused install). The refusal's `code` (an ErrorCode wire name) is
  // kept with the registration so that the device's next poll ends with it instead of "nothing
  // yet" until its timeout. invalid_argument (a code that is no ErrorCode), not_found,
  // access_denied and wrong_recipient as for request_attestation. A new registration clears it.
  // The registration's successor (F4) may refuse too: its refusal is recorded the same way and
  // ends the change (the successor is cleared; the holder's subscription is untouched). Returns
  // the registration as recorded (a successor refused when its `sho` is not the caller).
  Result<store::Registration> refuse(std::string_view pcid, std::string_view device_id,
                                     std::string_view code, std::string_view caller_sho);

  // What the device gets when it polls a registration the SHO refused: the SHO's code, with a
  // message naming the operator that refused, `refused_by` (F4: a successor, which the store does
  // not keep: SuccessorRefusals) or else the holder; nothing when there is no refusal.
  static Result<void> refusal_of(const store::Registration& registration,
                                 std::string_view refused_by = {});

  // F2 steps 13-14: the device's report on `package_id`. The platform chain (leaf first) must
  // chain to the supplier roots (chain_invalid, cert_expired) and be the package's device's
  // (wrong_recipient); the report must verify with it (bad_format, signature_invalid), name this
  // device (wrong_recipient) and be an install report on this package (invalid_argument; "-" is
  // accepted with a refusal: the TRE could not read the package). Any such report, "ok" or a
  // refusal, closes the package; it is stored and relayed, and the SHO decides what follows.
  // not_found for an unknown package; transition_refused when a report is already stored.
  Result<tre::StatusReport> report(std::string_view package_id, std::string_view signed_report,
                                   const std::vector<X509*>& platform_chain);

  // The same on the device of `registration` (the one the device's session names), which also
  // takes F4's reports. A package of the registration's successor (not its holder) is an F4
  // package: with outcome ok, `acks` must carry both acknowledgements (missing_argument), the
  // notice must verify (tre::verify_discard_notice with the chain's leaf, this device, this
  // package), and the discard report must verify with the leaf (bad_format, signature_invalid),
  // name this device (wrong_recipient), be the discard of a credential (event discard, outcome ok,
  // state deleted, a credential: invalid_argument) and name a package the holder handed over for
  // this device (invalid_argument). Then the report is stored, the registration transferred to
  // the successor (audited as drf transfer) and the status relayed to the successor with the
  // notice, the discard report to the holder. An F4 install refused: stored and relayed as an F2
  // one, the successor cleared (the change is over), nothing to the holder; acknowledgements with
  // it are invalid_argument (a refused install discards nothing), as they are with a report on a
  // package that is no F4 package. A package of an SHO that is neither the registration's holder
  // nor its successor (a successor that refused or was replaced) is transition_refused: that SHO
  // provisions the device no more. Any refusal stores nothing.
  Result<AcceptedReport> report(const store::Registration& registration,
                                std::string_view package_id, std::string_view signed_report,
                                const std::vector<X509*>& platform_chain, const DiscardAcks& acks);

 private:
  store::Time now() const;
  Result<store::Registration> check_registered(std::string_view pcid, std::string_view device_id,
                                               std::string_view caller_sho);
  Result<void> check_ask(const AttestationAsk& ask, std::string_view caller_sho);
  Result<store::AttestationRequest> answerable(std::string_view request_id,
                                               std::string_view device_id, std::string_view report);
  Result<void> check_handover(const PackageHandover& h, std::string_view caller_sho);
  struct CheckedReport {
    X509* leaf = nullptr;  // the platform certificate, in the caller's chain
    tre::StatusReport report{};
  };
  Result<CheckedReport> check_report(const store::StoredPackage& p, std::string_view signed_report,
                                     const std::vector<X509*>& platform_chain);
  Result<void> check_acks(const store::StoredPackage& p, const store::Registration* registration,
                          const CheckedReport& checked, const DiscardAcks& acks);
  Result<void> check_discard_report(const store::StoredPackage& p, std::string_view holder,
                                    X509* leaf, std::string_view text);
  Result<AcceptedReport> report_on(const store::Registration* registration,
                                   std::string_view package_id, std::string_view signed_report,
                                   const std::vector<X509*>& platform_chain,
                                   const DiscardAcks& acks);
  // After an accepted report: the relays, and for F4 the registration's change.
  bool follow_up(const store::Registration* registration, const store::StoredPackage& p,
                 const tre::StatusReport& report, std::string_view signed_report,
                 const DiscardAcks& acks, store::Time t);

  store::PackageStore& packages_;
  store::RegistrationStore& registrations_;
  store::AttestationRequestStore& requests_;
  store::AuditStore& audit_;
  Relays relays_;
  const pki::TrustAnchors& operator_roots_;
  const pki::TrustAnchors& supplier_roots_;
  const Clock& clock_;
};

}  // namespace mcim::ro
