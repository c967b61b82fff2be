// The home interface a visited network calls (docs/protocol.md "The home interface the VNO
// calls"): POST /v1/auth/vectors, POST /v1/auth/resync, POST /v1/auth/sessions and
// DELETE /v1/auth/sessions/{session}, over an Icf. The RO serves it for its PCIDs and the SHO's
// AuC for its operational IMSIs (the AuC is the same logic over the SHO's own database), so both
// services mount these routes instead of each keeping a copy. Callers are authorised by their
// mTLS operator id against `roaming_partners`.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "net/router.h"
#include "roles/ro/icf.h"

namespace mcim::ro {

struct AuthRoutes {
  std::vector<std::string> roaming_partners;  // VNO operator ids allowed to call
  // Makes an Icf for one request on the calling thread (an Icf is thread-compatible and cheap:
  // references to the stores plus a per-thread RandomSource, e.g. service_util::thread_random()).
  std::function<Icf()> icf;
  // Counts a flow step (`vectors`, `resync`, `session_opened`); may be empty.
  std::function<void(std::string_view step)> flow;
};

// Adds the four routes, logging refusals under the router's service name; missing_argument
// without `icf`, the router's error for a route that exists already.
Result<void> add_auth_routes(net::Router& router, AuthRoutes routes);

}  // namespace mcim::ro
