// Refusal scenarios over a running system (issue 7 "Refusals", issue 8 F5, F6 and F9; `mcim demo
// --scenario NAME`). Each scenario drives real services and real TREs into one of the TR's attacks
// or mistakes and checks three things: the refusal comes from the party that must refuse, with
// its specific code; no MCIM is installed by it; and nothing that describes the device changed in
// any database or TRE, except the records of the refusal itself, which the scenario names (e.g.
// the SHO's subscriber becoming `refused`). The management and operator change scenarios (F5, F6,
// F9) also run the operations that must succeed before their attack and check every party's view
// of them (`checked`). The databases are inspected in this process, so the services must run in
// it (cli::start_system). docs/scenarios.md lists them.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "net/https_client.h"
#include "sim/fleet.h"
#include "store/store.h"

namespace mcim::sim {

struct ScenarioWorld {
  FleetEndpoints endpoints;
  // dir (TREs), tre_binary (what the PVA's reference is for), agent settings (a scenario's
  // devices wait at most agent.timeout), activation window. `devices` and `first_pcid` are set
  // per batch by the scenario.
  FleetOptions fleet;
  // A fresh first PCID for each batch a scenario orders (PCIDs are never reused).
  std::function<std::string(std::size_t count)> next_pcids;
  std::string supplier_ca_dir;               // the CA of the platform certificates (revocation)
  std::string operators_ca_dir;  // the CA of the services' TLS certificates (a DRF impostor's)
  std::string sho_operator;                  // the SHO's operator id
  std::shared_ptr<net::HttpsClient> as_sho;  // mTLS as the SHO (a misbehaving SHO)
  std::string ro_url;                        // the RO's base URL (the DPF; remote management, F9)
  store::Database* ro_db = nullptr;
  store::Database* sho_db = nullptr;
  // The flows over time (F7, F8): a second visited network's mTLS identity (a roaming partner of
  // the RO), the services' clock moved forward (a negative value moves it back), the RO's periodic
  // expiry run at once, and the RO's ICF settings they wait out.
  std::shared_ptr<net::HttpsClient> as_vno2;
  std::function<void(std::chrono::seconds)> advance_clock;
  std::function<Result<std::uint64_t>()> expire_dormant;
  std::chrono::seconds dormant_period{std::chrono::hours(24 * 365)};
  std::chrono::seconds quarantine{std::chrono::hours(24 * 90)};
  // The second home operator, the one an owner moves a device to (F5): its operator id, its URL
  // for the owner (endpoints.owner and owner_token, the same owner account) and its database.
  std::string sho2_operator, sho2_url;
  store::Database* sho2_db = nullptr;
  // F4's fault "kill the DPF mid-download": the RO stopped as a crash stops it, and started again
  // from its configuration (start_ro points ro_db at the new service's database).
  std::function<Result<void>()> stop_ro, start_ro;
};

struct ScenarioInfo {
  std::string_view name, what;
  std::string_view party, code;  // who must refuse, with which code
};
std::span<const ScenarioInfo> scenarios();

struct ScenarioReport {
  std::string name, what;
  std::string expected_party, expected_code;
  std::string party, code, message;     // the refusal observed (empty: nothing was refused)
  bool mcim_installed = false;          // an MCIM appeared in a TRE the scenario attacked
  std::vector<std::string> recorded;    // changes that are the refusal's own records
  std::vector<std::string> unexpected;  // any other change: "key: before -> after"; or a check
                                        // that failed: "check failed: ..."
  std::vector<std::string> checked;     // what was checked and held, at which party
  bool passed = false;
};

// invalid_argument for an unknown name; errors of the set-up (manufacture, registration) as
// they are. A refusal that is not the expected one is a report with passed == false.
Result<ScenarioReport> run_scenario(std::string_view name, const ScenarioWorld& world);

}  // namespace mcim::sim
