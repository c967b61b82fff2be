// The MCIM lifecycle of DESIGN.md §3 and the TRE's access control, as pure rules: which
// transitions exist, which stakeholder may ask for each, and the rule a refusal names. No I/O,
// no state: the Tre applies these to its registry (docs/tre.md has the table).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"
#include "pki/package.h"

namespace mcim::tre {

// Deleted credentials stay in the registry as tombstones (no key material) so that status shows
// what happened to them; installing the same IMSI again replaces the tombstone.
enum class McimState { installed, activated, selected, blocked, retired, deleted };
std::string_view to_string(McimState s);
std::optional<McimState> parse_mcim_state(std::string_view name);

// The initial credential from the factory (owned by the Registration Operator) or an MCIM
// downloaded later (owned by the operator its package policy names).
enum class CredentialKind { pcid, mcim };
std::string_view to_string(CredentialKind k);

enum class Action { activate, select, deselect, block, unblock, retire, delete_ };
std::string_view to_string(Action a);  // "delete" for delete_
std::optional<Action> parse_action(std::string_view name);

// The state `action` leads to from `from`, or transition_refused whose message starts with the
// rule's name (e.g. "rule selected-not-deletable: ...").
Result<McimState> transition(McimState from, Action action);

// Who asks. The device itself (its agent or owner at the console) chooses which credential
// carries connectivity; stakeholders manage their own credentials through signed instructions.
struct Principal {
  enum class Kind { device, stakeholder } kind = Kind::device;
  std::string operator_id;  // stakeholder only: from its certificate's urn:mcim:operator: SAN

  static Principal device() { return {}; }
  static Principal stakeholder(std::string id) { return {Kind::stakeholder, std::move(id)}; }
  std::string describe() const;  // "device" or "operator:<id>"
};

// The remote operation a stakeholder's action needs in the credential's policy (select and
// deselect have none: only the device may choose its connectivity).
std::optional<pki::McimOperation> operation_for(Action a);

// Access control (docs/tre.md): the device may activate, select and deselect; a stakeholder may
// act only on credentials it owns (`owner`: the policy owner, the RO for the PCID credential) and
// only with an operation its policy grants. access_denied naming the rule otherwise.
Result<void> authorise(const Principal& who, Action action, const pki::McimPolicy& policy);

}  // namespace mcim::tre
