// A fleet of devices through the whole provisioning path (DESIGN.md §5 src/sim): the supplier
// manufactures a batch (F0), the owner registers every device at the SHO and announces its
// switch-on (F1), and every device's agent provisions it concurrently, over 3GPP access (F2),
// non-3GPP access (F3: direct, EAP-AKA, EAP-AKA') or a mix (FleetOptions::access), and attaches
// with its new IMSI. Each step of each device is timed; the report gives count, p50 and p99 per
// step and the provisioning throughput. `mcim demo` and the load driver (bench/) both run it,
// against services in this process or anywhere the endpoints point. Devices' TREs live under `dir`.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/secure.h"
#include "device/agent.h"
#include "net/https_client.h"
#include "tre/bundle.h"
#include "tre/tre.h"

namespace mcim::sim {

struct FleetEndpoints {
  std::string supplier_url;                   // POST /v1/batches (factory admin, mTLS)
  std::string sho_url;                        // POST /v1/subscribers (owner, Bearer token)
  std::string vno_url;                        // the devices' visited network
  std::shared_ptr<net::HttpsClient> factory;  // mTLS as one of the supplier's admins
  std::shared_ptr<net::HttpsClient> owner;    // TLS to the SHO (no client certificate)
  std::string owner_token;                    // a bearer token: never printed
  net::HttpsClientOptions device_tls;         // the devices' trust for the VNO and the DRF
  std::string supplier_out_dir;  // the supplier's output directory (bundles), on this machine
  // Non-3GPP access (F3), needed only by an access mix that uses it: the RO's DRF for direct
  // access; the RADIUS server (the VNO's relay, an IPv4 literal) and its shared secret for EAP.
  std::string drf_url;
  std::string radius_host = "127.0.0.1";
  std::uint16_t radius_port = 0;
  std::shared_ptr<const SecretBytes> radius_secret;
};

// How the devices of a fleet reach the RO for their provisioning: all over 3GPP access (F2), all
// over non-3GPP access (F3) in its three variants in turn, or the four in turn.
enum class AccessMix { threegpp, non3gpp, both };
// "3gpp", "non3gpp", "both" (`mcim demo --access`); invalid_argument otherwise.
Result<AccessMix> parse_access_mix(std::string_view text);
// Device i's access, round-robin: non3gpp gives direct, eap-aka, eap-aka-prime, direct, ...;
// both gives 3gpp, direct, eap-aka, eap-aka-prime, 3gpp, ...
device::Access access_of(AccessMix mix, std::size_t i);

struct FleetOptions {
  std::size_t devices = 10;
  std::size_t concurrency = 16;  // devices provisioned at the same time
  std::string dir;               // DIR/tre/<device id>/ per device
  std::string batch_id;          // default: "fleet-<unix time>"
  std::string first_pcid;        // the batch's first PCID (IMSI-shaped, in the RO's MCC/MNC)
  int pcid_days = 0;             // the PCID credentials' lifetime; 0: the supplier's default
  std::chrono::seconds activation_window{std::chrono::hours(1)};  // F7 switch-on announcement
  std::string tre_binary = "/proc/self/exe";  // measured as tre.binary (the PVA's reference)
  // vno_url, tls, drf_url, access and eap's server, secret and work_dir (DIR/eap/<device id>) are
  // set from the endpoints and `access` for each device.
  device::AgentConfig agent;
  AccessMix access = AccessMix::threegpp;
  // F4 after F2: the owner's SHO URL to move every operational device to (the owner's change
  // order there, then the device's Agent::change_operator through endpoints.drf_url, the RO),
  // the same concurrency, timed. Empty: no change.
  std::string change_to_url;
  // Called after each finished device (provisioned or failed), from the worker threads.
  std::function<void(std::size_t done, std::size_t failed, std::size_t total)> progress;
  // Called from the calling thread as each phase begins: "register" (F1 and F7, after the
  // batch is made), "provision" (F2), "change" (F4, with change_to_url), "done".
  std::function<void(std::string_view phase)> phase;
};

struct StepStats {
  std::string step;
  std::size_t count = 0;
  double p50_ms = 0, p99_ms = 0;
};

struct FleetReport {
  std::size_t devices = 0, provisioned = 0, failed = 0;
  double provision_seconds = 0;  // wall time of the concurrent provisioning phase
  double throughput_per_s = 0;   // provisioned / provision_seconds
  // The TR's order: manufacture, register, activate, the F2 steps (device::Step), then
  // "provision" (the whole of F2 for one device, successful ones only).
  std::vector<StepStats> steps;
  std::map<std::string, std::size_t> failures;  // "step: code" -> devices
  std::map<std::string, std::size_t> access;    // device::to_string(Access) -> devices
  // F4 (FleetOptions::change_to_url): the devices moved, the wall time of the concurrent change
  // phase, changed / change_seconds; per step "change_order" (the owner's at the new SHO), the
  // change's device::Step names, and "change" (the whole of one, successful ones only).
  std::size_t changed = 0, change_failed = 0;
  double change_seconds = 0, changes_per_s = 0;
  std::vector<StepStats> change_steps;
  std::map<std::string, std::size_t> change_failures;  // "step: code" -> devices
};

// One device of a fleet: what the supplier made, and its TRE once initialised.
struct FleetDevice {
  tre::SupplierBundle bundle;
  std::optional<tre::Tre> tre;
};

// F0: orders `options.devices` devices in batch `batch` (from `options.first_pcid`) and reads
// their bundles back, sorted by PCID; the TREs are not initialised yet.
Result<std::vector<FleetDevice>> manufacture(const FleetEndpoints& endpoints,
                                             const FleetOptions& options, const std::string& batch);
// The device's TRE under options.dir/tre/<device id>, measuring options.tre_binary.
Result<void> init_tre(FleetDevice& device, const FleetOptions& options);

struct RegisterOptions {
  std::string pin{};     // empty: the bundle's PIN (a scenario gives another)
  bool activate = true;  // announce the switch-on (F7) after the registration
  // The registration nonce's lifetime the owner asks for (nonce_lifetime_s); none: the SHO's.
  std::optional<std::chrono::seconds> nonce_lifetime{};
  std::function<void(std::string_view step, double ms)> timed{};  // "register", "activate"
  // F4: the device is operational at another SHO, and this registration orders its change
  // (`"change": true`); no switch-on is announced (its PCID is not used again).
  bool change = false;
};
// F1 for one device: the owner registers it at the SHO, gives the registration nonce to the
// device's TRE, and announces its switch-on.
Result<void> register_device(FleetDevice& device, const FleetEndpoints& endpoints,
                             const FleetOptions& options, const RegisterOptions& how = {});

// F7: the owner announces the device's switch-on at the SHO, which relays it to the RO's ICF: its
// PCID may attach for `window`.
Result<void> announce_switch_on(const FleetDevice& device, const FleetEndpoints& endpoints,
                                std::chrono::seconds window);

// The bundle's bootstrap PIN as the owner types it.
std::string pin_of(const tre::SupplierBundle& bundle);

// Manufacture, registration and activation failures end the run (the error names the device and
// step); a device whose provisioning fails is counted and the others go on. Before anything is
// made: invalid_argument when the access mix needs an endpoint that is not given (drf_url for
// direct access, radius_port and radius_secret for EAP).
Result<FleetReport> run_fleet(const FleetEndpoints& endpoints, const FleetOptions& options);

// p-th percentile (0..100) by nearest rank: the smallest sample at or above p percent of them;
// 0 for none. percentile_of_sorted wants ascending samples (to take several percentiles of one
// sort); percentile_ms sorts a copy.
double percentile_of_sorted(const std::vector<double>& sorted, double p);
double percentile_ms(std::vector<double> samples, double p);

}  // namespace mcim::sim
