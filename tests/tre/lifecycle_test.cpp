#include "tre/lifecycle.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <utility>

namespace mcim::tre {
namespace {

using S = McimState;
using A = Action;

constexpr S kAllStates[] = {S::installed, S::activated, S::selected,
                            S::blocked,   S::retired,   S::deleted};
constexpr A kAllActions[] = {A::activate, A::select, A::deselect, A::block,
                             A::unblock,  A::retire, A::delete_};

// DESIGN.md §3, written out independently of the implementation's table: Installed → Activated ⇄
// Selected; Activated ⇄ Blocked; Installed/Activated/Blocked → Retired; any but Selected →
// Deleted (a deleted credential is gone, so not again).
const std::map<std::pair<S, A>, S>& allowed() {
  static const std::map<std::pair<S, A>, S> m = {
      {{S::installed, A::activate}, S::activated}, {{S::activated, A::select}, S::selected},
      {{S::selected, A::deselect}, S::activated},  {{S::activated, A::block}, S::blocked},
      {{S::blocked, A::unblock}, S::activated},    {{S::installed, A::retire}, S::retired},
      {{S::activated, A::retire}, S::retired},     {{S::blocked, A::retire}, S::retired},
      {{S::installed, A::delete_}, S::deleted},    {{S::activated, A::delete_}, S::deleted},
      {{S::blocked, A::delete_}, S::deleted},      {{S::retired, A::delete_}, S::deleted},
  };
  return m;
}

TEST(Lifecycle, EveryStateActionPairFollowsTheDesign) {
  for (S from : kAllStates) {
    for (A action : kAllActions) {
      SCOPED_TRACE(std::string(to_string(from)) + " " + std::string(to_string(action)));
      const auto r = transition(from, action);
      const auto it = allowed().find({from, action});
      if (it != allowed().end()) {
        ASSERT_TRUE(r.has_value()) << r.error().message;
        EXPECT_EQ(*r, it->second);
      } else {
        ASSERT_FALSE(r.has_value());
        EXPECT_EQ(r.error().code, ErrorCode::transition_refused);
        EXPECT_EQ(r.error().message.rfind("rule ", 0), 0u) << r.error().message;
        EXPECT_NE(r.error().message.find(std::string(to_string(from))), std::string::npos);
      }
    }
  }
}

TEST(Lifecycle, RefusalsNameTheirRule) {
  EXPECT_NE(transition(S::selected, A::delete_).error().message.find("delete-not-selected"),
            std::string::npos);
  EXPECT_NE(transition(S::blocked, A::select).error().message.find("select-from-activated"),
            std::string::npos);
  EXPECT_NE(transition(S::deleted, A::activate).error().message.find("deleted-is-final"),
            std::string::npos);
  EXPECT_NE(transition(S::selected, A::block).error().message.find("block-from-activated"),
            std::string::npos);
}

TEST(Lifecycle, NamesRoundTrip) {
  std::set<std::string_view> names;
  for (S s : kAllStates) {
    EXPECT_EQ(parse_mcim_state(to_string(s)), s);
    EXPECT_TRUE(names.insert(to_string(s)).second);
  }
  for (A a : kAllActions) EXPECT_EQ(parse_action(to_string(a)), a);
  EXPECT_EQ(to_string(A::delete_), "delete");
  EXPECT_FALSE(parse_action("Delete").has_value());
  EXPECT_FALSE(parse_action("").has_value());
  EXPECT_FALSE(parse_mcim_state("active").has_value());
}

pki::McimPolicy policy(std::string owner, std::vector<pki::McimOperation> ops) {
  return pki::McimPolicy{std::move(owner), std::move(ops)};
}

TEST(AccessControl, TheDeviceChoosesConnectivityOnly) {
  const auto p = policy("sho-a", {pki::McimOperation::block, pki::McimOperation::delete_});
  const auto device = Principal::device();
  EXPECT_TRUE(authorise(device, A::activate, p));
  EXPECT_TRUE(authorise(device, A::select, p));
  EXPECT_TRUE(authorise(device, A::deselect, p));
  for (A a : {A::block, A::unblock, A::retire, A::delete_}) {
    const auto r = authorise(device, a, p);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::access_denied);
  }
}

TEST(AccessControl, OnlyTheOwnerAndOnlyWhatItsPolicyGrants) {
  const auto p = policy("sho-a", {pki::McimOperation::block, pki::McimOperation::unblock});
  EXPECT_TRUE(authorise(Principal::stakeholder("sho-a"), A::block, p));
  EXPECT_TRUE(authorise(Principal::stakeholder("sho-a"), A::unblock, p));
  struct Case {
    Principal who;
    A action;
    std::string_view rule;
  };
  const Case cases[] = {
      {Principal::stakeholder("sho-b"), A::block, "owner-only"},
      {Principal::stakeholder("sho-a-"), A::block, "owner-only"},
      {Principal::stakeholder(""), A::block, "owner-only"},
      {Principal::stakeholder("sho-a"), A::delete_, "policy-grants"},
      {Principal::stakeholder("sho-a"), A::retire, "policy-grants"},
      {Principal::stakeholder("sho-a"), A::select, "device-chooses-connectivity"},
      {Principal::stakeholder("sho-a"), A::deselect, "device-chooses-connectivity"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.who.describe() + " " + std::string(to_string(c.action)));
    const auto r = authorise(c.who, c.action, p);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::access_denied);
    EXPECT_NE(r.error().message.find(c.rule), std::string::npos) << r.error().message;
  }
}

TEST(AccessControl, DescribesPrincipals) {
  EXPECT_EQ(Principal::device().describe(), "device");
  EXPECT_EQ(Principal::stakeholder("ro-1").describe(), "operator:ro-1");
}

}  // namespace
}  // namespace mcim::tre
