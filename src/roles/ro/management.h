// F9 at the RO's DPF: the channel for an operator's signed management instructions (list, block,
// unblock, retire, delete, activate; tre/instruction.h) to a device that is already operational
// and so has no provisioning session any more. The SHO that registered the device queues an
// instruction it signed; the device proves its platform key (the direct-access challenge,
// direct.h) and collects what is pending; its TRE's signed answer comes back, is verified with
// the platform chain and relayed to the SHO like F2's status reports. The DPF checks what it can
// without being the TRE: the instruction's signer chains to the operator roots and is the caller,
// and it is for the device of the caller's registration. Whether the operator may do it is the
// TRE's decision (F6), never the DPF's. docs/roles-ro.md "Remote management".
//
// The queue is the service's database (store::InstructionStore, schema v8), so an RO restart
// loses no instruction and no answer: the device still collects what was queued, and its TRE's
// answer is still taken and relayed. The audit store keeps the record of every step.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "pki/openssl.h"
#include "pki/verify.h"
#include "store/store.h"
#include "tre/instruction.h"

namespace mcim::ro {

using store::InstructionStatus;
using store::QueuedInstruction;

// The SHOs' instructions in the database with the queue's bound: at most `capacity` kept, a new
// one pushing out the oldest answered one, or else the oldest of all (by then long past the TRE's
// 10 minutes). Thread-safe as the store is.
class InstructionQueue {
 public:
  explicit InstructionQueue(store::InstructionStore& store, std::size_t capacity = 10'000)
      : store_(store), capacity_(capacity) {}
  Result<void> put(const QueuedInstruction& q);  // already_exists for a known id
  Result<std::optional<QueuedInstruction>> find(std::string_view instruction_id) const;
  // The device's unanswered instructions, oldest first, at most `limit`; marked delivered.
  Result<std::vector<QueuedInstruction>> collect(std::string_view device_id, std::size_t limit,
                                                 store::Time at);
  // Records the answer: not_found, transition_refused when already answered (of two racing
  // answers exactly one is taken).
  Result<QueuedInstruction> answer(std::string_view instruction_id, std::string_view report,
                                   store::Time at);
  Result<std::uint64_t> size() const;

 private:
  store::InstructionStore& store_;
  const std::size_t capacity_;
};

// The TRE's verified answer on its way to the SHO that asked.
struct RelayedInstructionResult {
  std::string instruction_id, device_id, sho;
  tre::StatusReport report;   // as verified
  std::string signed_report;  // the TRE's text, for the SHO's own verification
};

class InstructionResultRelay {
 public:
  virtual ~InstructionResultRelay() = default;
  // Once per accepted answer; like StatusRelay::relay, queued and retried by an adapter.
  virtual Result<void> relay_instruction_result(const RelayedInstructionResult& result) = 0;
};

// What the SHO hands over.
struct InstructionHandover {
  std::string pcid, device_id, instruction_id;
  std::string instruction;  // signed text
};

// Pure logic over the registrations, the audit store and the queue; thread-compatible, one per
// request like the Dpf.
class Management {
 public:
  // Everything must outlive the object.
  Management(store::RegistrationStore& registrations, store::AuditStore& audit,
             InstructionQueue& queue, InstructionResultRelay& relay,
             const pki::TrustAnchors& operator_roots, const pki::TrustAnchors& supplier_roots,
             const Clock& clock);

  // Checks, in order: the id (invalid_argument), the registration of `pcid` exists (not_found),
  // is the caller's (access_denied) for this device (wrong_recipient); the instruction verifies
  // (tre::verify_instruction: bad_format, chain_invalid, cert_expired, signature_invalid,
  // stale_report), its signer is the caller (access_denied) and it names this device
  // (wrong_recipient). Then queues it pending (already_exists for a known id).
  Result<QueuedInstruction> queue(const InstructionHandover& handover, std::string_view caller_sho);

  // The instructions pending for the device of `registration` (proven by its platform key),
  // oldest first, at most 16 at a time; a store error as it is.
  Result<std::vector<QueuedInstruction>> collect(const store::Registration& registration);

  // The TRE's answer to `instruction_id`: not_found (unknown); the platform chain leads to the
  // supplier roots (chain_invalid, cert_expired) and is the instruction's device's
  // (wrong_recipient); the report verifies with it and answers this instruction
  // (tre::verify_instruction_report: bad_format, signature_invalid, wrong_recipient,
  // invalid_argument); transition_refused when already answered. Then it is relayed to the SHO.
  Result<tre::StatusReport> answer(std::string_view instruction_id, std::string_view signed_report,
                                   const std::vector<X509*>& platform_chain);

  static constexpr std::size_t kMaxCollected = 16;

 private:
  store::Time now() const;
  Result<tre::VerifiedInstruction> check(const InstructionHandover& h, std::string_view caller_sho);
  Result<tre::StatusReport> check_answer(const QueuedInstruction& q, std::string_view signed_report,
                                         const std::vector<X509*>& platform_chain);

  store::RegistrationStore& registrations_;
  store::AuditStore& audit_;
  InstructionQueue& queue_;
  InstructionResultRelay& relay_;
  const pki::TrustAnchors& operator_roots_;
  const pki::TrustAnchors& supplier_roots_;
  const Clock& clock_;
};

}  // namespace mcim::ro
