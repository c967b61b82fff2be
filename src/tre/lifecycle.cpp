#include "tre/lifecycle.h"

#include <fmt/format.h>

#include <array>
#include <utility>

namespace mcim::tre {
namespace {

constexpr std::array kStates = {
    std::pair{McimState::installed, "installed"}, std::pair{McimState::activated, "activated"},
    std::pair{McimState::selected, "selected"},   std::pair{McimState::blocked, "blocked"},
    std::pair{McimState::retired, "retired"},     std::pair{McimState::deleted, "deleted"},
};

constexpr std::array kActions = {
    std::pair{Action::activate, "activate"}, std::pair{Action::select, "select"},
    std::pair{Action::deselect, "deselect"}, std::pair{Action::block, "block"},
    std::pair{Action::unblock, "unblock"},   std::pair{Action::retire, "retire"},
    std::pair{Action::delete_, "delete"},
};

// The permitted transitions of DESIGN.md §3, one row per action: the states it starts from and
// the state it leads to, with the rule a refusal names.
struct Edge {
  Action action;
  std::initializer_list<McimState> from;
  McimState to;
  std::string_view rule;
  std::string_view explanation;
};

const std::array<Edge, 7>& edges() {
  using S = McimState;
  static const std::array<Edge, 7> table = {{
      {Action::activate,
       {S::installed},
       S::activated,
       "activate-from-installed",
       "only an Installed credential can be activated"},
      {Action::select,
       {S::activated},
       S::selected,
       "select-from-activated",
       "only an Activated credential can be selected"},
      {Action::deselect,
       {S::selected},
       S::activated,
       "deselect-from-selected",
       "only the Selected credential can be deselected"},
      {Action::block,
       {S::activated},
       S::blocked,
       "block-from-activated",
       "only an Activated credential can be blocked (deselect it first)"},
      {Action::unblock,
       {S::blocked},
       S::activated,
       "unblock-from-blocked",
       "only a Blocked credential can be unblocked"},
      {Action::retire,
       {S::installed, S::activated, S::blocked},
       S::retired,
       "retire-from-installed-activated-blocked",
       "only an Installed, Activated or Blocked credential can be retired"},
      {Action::delete_,
       {S::installed, S::activated, S::blocked, S::retired},
       S::deleted,
       "delete-not-selected",
       "a Selected credential cannot be deleted (deselect it first)"},
  }};
  return table;
}

}  // namespace

std::string_view to_string(McimState s) {
  for (const auto& [v, name] : kStates)
    if (v == s) return name;
  return "unknown";
}

std::optional<McimState> parse_mcim_state(std::string_view name) {
  for (const auto& [v, n] : kStates)
    if (n == name) return v;
  return std::nullopt;
}

std::string_view to_string(CredentialKind k) { return k == CredentialKind::pcid ? "pcid" : "mcim"; }

std::string_view to_string(Action a) {
  for (const auto& [v, name] : kActions)
    if (v == a) return name;
  return "unknown";
}

std::optional<Action> parse_action(std::string_view name) {
  for (const auto& [v, n] : kActions)
    if (n == name) return v;
  return std::nullopt;
}

Result<McimState> transition(McimState from, Action action) {
  for (const Edge& e : edges()) {
    if (e.action != action) continue;
    for (McimState s : e.from)
      if (s == from) return e.to;
    // A deleted credential is gone whatever was asked: say that rather than the action's rule.
    if (from == McimState::deleted) {
      return fail(ErrorCode::transition_refused,
                  fmt::format("rule deleted-is-final: the credential was deleted; {} refused",
                              to_string(action)));
    }
    return fail(ErrorCode::transition_refused,
                fmt::format("rule {}: {}; it is {}", e.rule, e.explanation, to_string(from)));
  }
  return fail(ErrorCode::internal, "no lifecycle rule for the action");
}

std::string Principal::describe() const {
  return kind == Kind::device ? std::string("device") : "operator:" + operator_id;
}

std::optional<pki::McimOperation> operation_for(Action a) {
  using Op = pki::McimOperation;
  switch (a) {
    case Action::activate: return Op::activate;
    case Action::block: return Op::block;
    case Action::unblock: return Op::unblock;
    case Action::retire: return Op::retire;
    case Action::delete_: return Op::delete_;
    case Action::select:
    case Action::deselect: return std::nullopt;
  }
  return std::nullopt;
}

Result<void> authorise(const Principal& who, Action action, const pki::McimPolicy& policy) {
  if (who.kind == Principal::Kind::device) {
    if (action == Action::activate || action == Action::select || action == Action::deselect) {
      return {};
    }
    return fail(ErrorCode::access_denied,
                fmt::format("rule device-chooses-connectivity-only: the device may activate, "
                            "select and deselect; {} needs a signed instruction from the "
                            "credential's owner",
                            to_string(action)));
  }
  if (who.operator_id != policy.owner) {
    return fail(
        ErrorCode::access_denied,
        fmt::format("rule owner-only: operator {} does not own this credential", who.operator_id));
  }
  const auto op = operation_for(action);
  if (!op) {
    return fail(ErrorCode::access_denied,
                fmt::format("rule device-chooses-connectivity: {} is the device's choice",
                            to_string(action)));
  }
  if (!policy.allows(*op)) {
    return fail(ErrorCode::access_denied,
                fmt::format("rule policy-grants: the credential's policy does not grant {}",
                            pki::to_string(*op)));
  }
  return {};
}

}  // namespace mcim::tre
