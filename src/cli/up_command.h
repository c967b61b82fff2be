// `mcim up`: the whole system on one machine (docs/operations.md "mcim up"). start_system
// generates a PKI under a directory (or reuses the one it made there before), writes one config
// file per role in the very format `mcim serve <role> --config` reads, and starts the supplier,
// RO, VNO, SHO and PVA from those files on 127.0.0.1, wired to each other: the printed
// `mcim serve` commands reproduce the same system as separate processes. The RO also serves its
// EAP gateway (docs/eap.md) on a Unix socket in the directory. The PVA is given the
// supplier's reference measurements for the model the supplier manufactures, computed for the
// binary the devices will run (tre.binary) and their configuration (tre.config).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cli/output.h"
#include "common/error.h"
#include "net/https_client.h"
#include "pki/verify.h"
#include "store/store.h"

namespace mcim::cli {

// Ports of the services; 0 picks free ones (the same in every config file written).
struct SystemPorts {
  std::uint16_t supplier = 0, ro = 0, vno = 0, gateway = 0, sho = 0, pva = 0;
};

struct SystemOptions {
  std::string dir;     // created if absent; holds pki/, the config files, the databases
  std::string db_url;  // empty: SQLite files dir/ro.db, sho.db, pva.db; else postgresql://...
                       // (one schema per role on that database: mcim_ro, mcim_sho, mcim_pva)
  SystemPorts ports;
  // What the devices' TREs measure as tre.binary: the PVA's reference is its SHA-256.
  std::string device_binary = "/proc/self/exe";
  std::string model = "mcim-sw-tre-1";
  std::string pcid_prefix = "0010199";  // the supplier's PCIDs (MCC/MNC of the RO)
  std::string imsi_prefix = "00102";    // the SHO's IMSIs
  std::string log_level = "info";
};

// The fixed identities of the system (operator ids in the certificates' URNs).
inline constexpr std::string_view kUpSupplier = "sup-1";
inline constexpr std::string_view kUpRo = "ro-1";
inline constexpr std::string_view kUpVno = "vno-1";
inline constexpr std::string_view kUpSho = "sho-1";
inline constexpr std::string_view kUpPva = "pva-1";
inline constexpr std::string_view kUpFactory = "factory";  // the supplier's admin
inline constexpr std::string_view kUpOwner = "owner-1";    // the SHO's owner account

class System {
 public:
  struct Service {
    std::string role, url, config;
  };

  ~System();  // stops every service (servers first), then closes the databases
  System(const System&) = delete;
  System& operator=(const System&) = delete;

  const std::vector<Service>& services() const;  // supplier, ro, vno, sho, pva
  std::string url(std::string_view role) const;  // empty for an unknown role
  const std::string& gateway() const;            // the VNO's gateway, "127.0.0.1:PORT"
  // The RO's EAP gateway (hostapd's eap_sim_db=unix:<path>): dir/ro-eap.sock; empty when that
  // path is longer than a Unix socket address takes (107 bytes), and the system runs without it.
  const std::string& eap_socket() const;
  const SystemOptions& options() const;

  // Paths under dir/pki: the CA certificate the TLS certificates chain to (what a device and a
  // client trust), the supplier CA directory, the owner's token file.
  std::string tls_root_file() const;
  std::string supplier_ca_dir() const;
  std::string owner_token_file() const;
  std::string owner_token() const;  // the bearer token for the SHO's owner routes
  std::string batches_dir() const;  // the supplier's output: <batch>/bundles/*.bundle

  // The database of "ro", "sho" or "pva" in this process (nullptr for another role).
  store::Database* database(std::string_view role) const;
  // mTLS as one of the system's operators ("supplier", "ro", "vno", "sho", "pva"), with its
  // client certificate under pki/tls: what that operator's own services present to the others.
  Result<std::shared_ptr<net::HttpsClient>> operator_client(std::string_view role) const;

  // mTLS as the supplier's admin (kUpFactory): batch orders and handovers.
  std::shared_ptr<net::HttpsClient> factory_client() const;
  // Server-authenticated only (an owner, a device): trusts tls_root_file().
  std::shared_ptr<net::HttpsClient> plain_client() const;
  // What a device trusts for the VNO and the DRF (the TLS root).
  std::shared_ptr<const pki::TrustAnchors> device_trust() const;

  struct State;
  explicit System(std::unique_ptr<State> state);

 private:
  std::unique_ptr<State> state_;
};

// io_error/invalid_argument naming what failed; a PKI directory that is not one this function
// wrote is refused rather than overwritten.
Result<std::unique_ptr<System>> start_system(const SystemOptions& options);

// The strict JSON of `mcim up --config FILE` over `options` (keys: dir, db, ports{supplier, ro,
// vno, gateway, sho, pva}, device_binary, model, pcid_prefix, imsi_prefix, log_level).
Result<void> load_system_options(const std::string& path, SystemOptions& options);

void register_up(CLI::App& app, Result<Fields>* result, std::ostream& out);

}  // namespace mcim::cli
