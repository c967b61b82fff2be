#include "roles/ro/management.h"

#include <fmt/format.h>

#include <utility>

#include "pki/sealed.h"
#include "roles/ro/audit.h"
#include "roles/ro/dpf.h"
#include "roles/ro/platform_chain.h"

namespace mcim::ro {
namespace {

using detail::audited;

constexpr std::string_view kService = "dpf";

std::string operator_principal(std::string_view id) { return fmt::format("operator:{}", id); }
std::string device_principal(std::string_view id) { return fmt::format("device:{}", id); }

}  // namespace

// ---- InstructionQueue -------------------------------------------------------------------------

Result<void> InstructionQueue::put(const QueuedInstruction& q) { return store_.put(q, capacity_); }

Result<std::optional<QueuedInstruction>> InstructionQueue::find(
    std::string_view instruction_id) const {
  return store_.find(instruction_id);
}

Result<std::vector<QueuedInstruction>> InstructionQueue::collect(std::string_view device_id,
                                                                 std::size_t limit,
                                                                 store::Time at) {
  return store_.collect(device_id, limit, at);
}

Result<QueuedInstruction> InstructionQueue::answer(std::string_view instruction_id,
                                                   std::string_view report, store::Time at) {
  return store_.answer(instruction_id, report, at);
}

Result<std::uint64_t> InstructionQueue::size() const { return store_.count(); }

// ---- Management -------------------------------------------------------------------------------

Management::Management(store::RegistrationStore& registrations, store::AuditStore& audit,
                       InstructionQueue& queue, InstructionResultRelay& relay,
                       const pki::TrustAnchors& operator_roots,
                       const pki::TrustAnchors& supplier_roots, const Clock& clock)
    : registrations_(registrations),
      audit_(audit),
      queue_(queue),
      relay_(relay),
      operator_roots_(operator_roots),
      supplier_roots_(supplier_roots),
      clock_(clock) {}

store::Time Management::now() const { return detail::seconds_of(clock_.now()); }

// The registration before the signature, as for packages: cheap, and an instruction for a device
// the caller did not register is refused whatever it says.
Result<tre::VerifiedInstruction> Management::check(const InstructionHandover& h,
                                                   std::string_view caller_sho) {
  if (!pki::valid_mcim_id(h.device_id) || !pki::valid_mcim_id(h.instruction_id)) {
    return fail(ErrorCode::invalid_argument,
                "device_id, instruction_id: must be [A-Za-z0-9._:-]{1,64}");
  }
  if (auto r = detail::sho_registration(registrations_, h.pcid, h.device_id, caller_sho); !r) {
    return std::unexpected(r.error());
  }
  auto verified = tre::verify_instruction(h.instruction, operator_roots_, clock_);
  if (!verified) return std::unexpected(verified.error());
  if (verified->operator_id != caller_sho) {
    return fail(ErrorCode::access_denied,
                "instruction: signed by another operator than the caller");
  }
  if (verified->instruction.device_id != h.device_id) {
    return fail(ErrorCode::wrong_recipient, "instruction: for another device");
  }
  return verified;
}

Result<QueuedInstruction> Management::queue(const InstructionHandover& h,
                                            std::string_view caller_sho) {
  const store::Time t = now();
  auto result = [&]() -> Result<QueuedInstruction> {
    auto verified = check(h, caller_sho);
    if (!verified) return std::unexpected(verified.error());
    const tre::Instruction& ins = verified->instruction;
    QueuedInstruction q;
    q.instruction_id = h.instruction_id;
    q.pcid = h.pcid;
    q.device_id = h.device_id;
    q.sho = std::string(caller_sho);
    q.instruction = h.instruction;
    q.sequence = ins.sequence;
    q.action = ins.list ? std::string(tre::kListAction) : std::string(tre::to_string(ins.action));
    q.credential = ins.credential;
    q.created = q.updated = t;
    if (auto put = queue_.put(q); !put) return std::unexpected(put.error());
    return q;
  }();
  const std::string detail = result
                                 ? fmt::format("device {}, {} {}, sequence {}", result->device_id,
                                               result->action, result->credential, result->sequence)
                                 : "";
  return audited(
      audit_, t,
      {kService, "instruction", h.instruction_id, operator_principal(caller_sho), detail},
      std::move(result));
}

Result<std::vector<QueuedInstruction>> Management::collect(
    const store::Registration& registration) {
  return queue_.collect(registration.device_id, kMaxCollected, now());
}

Result<tre::StatusReport> Management::check_answer(const QueuedInstruction& q,
                                                   std::string_view signed_report,
                                                   const std::vector<X509*>& platform_chain) {
  auto leaf =
      detail::verify_platform_chain(supplier_roots_, platform_chain, q.device_id, clock_.now());
  if (!leaf) return std::unexpected(leaf.error());
  return tre::verify_instruction_report(signed_report, *leaf, q.device_id, q.sequence);
}

Result<tre::StatusReport> Management::answer(std::string_view instruction_id,
                                             std::string_view signed_report,
                                             const std::vector<X509*>& platform_chain) {
  const store::Time t = now();
  std::string principal = "-";
  std::optional<QueuedInstruction> queued;
  auto result = [&]() -> Result<tre::StatusReport> {
    auto found = queue_.find(instruction_id);
    if (!found) return std::unexpected(found.error());
    queued = std::move(*found);
    if (!queued) {
      return fail(ErrorCode::not_found, fmt::format("instruction {}: unknown", instruction_id));
    }
    principal = device_principal(queued->device_id);
    if (queued->status == InstructionStatus::answered) {
      return fail(ErrorCode::transition_refused,
                  fmt::format("instruction {}: already answered", instruction_id));
    }
    auto report = check_answer(*queued, signed_report, platform_chain);
    if (!report) return report;
    if (auto a = queue_.answer(instruction_id, signed_report, t); !a) {
      return std::unexpected(a.error());
    }
    return report;
  }();
  const std::string detail = result ? "outcome " + result->outcome : "";
  result = audited(audit_, t, {kService, "instruction-result", instruction_id, principal, detail},
                   std::move(result));
  if (!result) return result;
  auto relayed = relay_.relay_instruction_result(RelayedInstructionResult{
      queued->instruction_id, queued->device_id, queued->sho, *result, std::string(signed_report)});
  (void)audited(audit_, t,
                {kService, "relay", instruction_id, "dpf",
                 fmt::format("to {}", operator_principal(queued->sho))},
                std::move(relayed));
  return result;
}

}  // namespace mcim::ro
