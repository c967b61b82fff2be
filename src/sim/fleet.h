// A fleet of devices through the whole provisioning path (DESIGN.md §5 src/sim): the supplier
// manufactures a batch (F0), the owner registers every device at the SHO and announces its
// switch-on (F1), and every device's agent provisions it concurrently (F2) and attaches with its
// new IMSI. Each step of each device is timed; the report gives count, p50 and p99 per step and
// the provisioning throughput. `mcim demo` and the load driver (bench/) both run it, against
// services in this process or anywhere the endpoints point. Devices' TREs live under `dir`.
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
#include "device/agent.h"
#include "tre/bundle.h"
#include "tre/tre.h"
#include "net/https_client.h"

namespace mcim::sim {

struct FleetEndpoints {
  std::string supplier_url;  // POST /v1/batches (factory admin, mTLS)
  std::string sho_url;       // POST /v1/subscribers (owner, Bearer token)
  std::string vno_url;       // the devices' visited network
  std::shared_ptr<net::HttpsClient> factory;  // mTLS as one of the supplier's admins
  std::shared_ptr<net::HttpsClient> owner;    // TLS to the SHO (no client certificate)
  std::string owner_token;                    // a bearer token: never printed
  net::HttpsClientOptions device_tls;         // the devices' trust for the VNO and the DRF
  std::string supplier_out_dir;  // the supplier's output directory (bundles), on this machine
};

struct FleetOptions {
  std::size_t devices = 10;
  std::size_t concurrency = 16;  // devices provisioned at the same time
  std::string dir;               // DIR/tre/<device id>/ per device
  std::string batch_id;          // default: "fleet-<unix time>"
  std::string first_pcid;        // the batch's first PCID (IMSI-shaped, in the RO's MCC/MNC)
  std::chrono::seconds activation_window{std::chrono::hours(1)};  // F7 switch-on announcement
  std::string tre_binary = "/proc/self/exe";  // measured as tre.binary (the PVA's reference)
  device::AgentConfig agent;     // vno_url and tls are set from the endpoints
  // Called after each finished device (provisioned or failed), from the worker threads.
  std::function<void(std::size_t done, std::size_t failed, std::size_t total)> progress;
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
};
// F1 for one device: the owner registers it at the SHO, gives the registration nonce to the
// device's TRE, and announces its switch-on.
Result<void> register_device(FleetDevice& device, const FleetEndpoints& endpoints,
                             const FleetOptions& options, const RegisterOptions& how = {});

// The bundle's bootstrap PIN as the owner types it.
std::string pin_of(const tre::SupplierBundle& bundle);

// Manufacture, registration and activation failures end the run (the error names the device and
// step); a device whose provisioning fails is counted and the others go on.
Result<FleetReport> run_fleet(const FleetEndpoints& endpoints, const FleetOptions& options);

// p-th percentile (0..100) by nearest rank: the smallest sample at or above p percent of them;
// 0 for none. percentile_of_sorted wants ascending samples (to take several percentiles of one
// sort); percentile_ms sorts a copy.
double percentile_of_sorted(const std::vector<double>& sorted, double p);
double percentile_ms(std::vector<double> samples, double p);

}  // namespace mcim::sim
