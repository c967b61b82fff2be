// `mcim up`: the whole system on one machine (docs/operations.md "mcim up"). start_system
// generates a PKI under a directory (or reuses the one it made there before), writes one config
// file per role in the very format `mcim serve <role> --config` reads, and starts the supplier,
// RO, VNO, SHO and PVA from those files on 127.0.0.1, wired to each other: the printed
// `mcim serve` commands reproduce the same system as separate processes. The RO also serves its
// EAP gateway (docs/eap.md) on a Unix socket in the directory and direct access at its DRF; when
// hostapd is installed, start_system runs it as a child process, the RADIUS/EAP server of
// non-3GPP access (F3) behind the VNO's RADIUS relay, its vectors from the RO's EAP gateway. The
// PVA is given the
// supplier's reference measurements for the model the supplier manufactures, computed for the
// binary the devices will run (tre.binary) and their configuration (tre.config).
// describe_system reads a running system back from its directory, for clients in another process
// (`mcim demo --system`).
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
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
  std::uint16_t sho2 = 0;  // the second home operator (operator change, F4/F5)
  // UDP, with hostapd only: the VNO's RADIUS relay on 127.0.0.1 (where the devices' EAP peers
  // send), and hostapd's RADIUS server behind it (hostapd binds it on every address).
  std::uint16_t radius = 0, aaa = 0;
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
  std::string imsi_prefix2 = "00103";   // the second SHO's IMSIs
  std::string log_level = "info";
  // The RADIUS/EAP server of non-3GPP access; when it is not executable the system runs without
  // EAP access (3GPP and direct access only) and says so.
  std::string hostapd = "/usr/sbin/hostapd";
};

// What a device needs for non-3GPP access (F3, docs/eap.md): the DRF for direct access; the
// RADIUS server (the VNO's relay in front of hostapd) and its shared secret for EAP-AKA/AKA'.
struct Non3gppAccess {
  std::string drf_url;             // the RO's DRF (direct access); empty when the RO has it off
  std::string radius;              // "127.0.0.1:PORT" of the VNO's relay; empty: no EAP access
  std::string radius_secret_file;  // the RADIUS shared secret (mode 0600), with radius
  std::string eap_unavailable;     // without radius: why (hostapd not installed, ...)
  std::string hostapd_log;         // with radius, from start_system: hostapd's output
};

// The fixed identities of the system (operator ids in the certificates' URNs).
inline constexpr std::string_view kUpSupplier = "sup-1";
inline constexpr std::string_view kUpRo = "ro-1";
inline constexpr std::string_view kUpVno = "vno-1";
// A second visited network's identity, a roaming partner of the RO with no service of its own:
// the scenarios attach one PCID through both (F8: never two sessions at once).
inline constexpr std::string_view kUpVno2 = "vno-2";
inline constexpr std::string_view kUpSho = "sho-1";
// The second home operator, role name "sho2": the one an owner moves a device to (F4, F5). Same
// configuration as sho-1 but its own identity, signer, OP and IMSI range; the same owner account.
inline constexpr std::string_view kUpSho2 = "sho-2";
inline constexpr std::string_view kUpPva = "pva-1";
inline constexpr std::string_view kUpFactory = "factory";  // the supplier's admin
inline constexpr std::string_view kUpOwner = "owner-1";    // the SHO's owner account

// A system as its clients see it: the services' URLs, the files under its directory
// (docs/operations.md "Directory layout") and clients that trust its PKI. start_system's System is
// one; describe_system reads one back from the directory of a system that `mcim up` runs in
// another process. Holds no service: destroying it stops nothing.
class SystemDescription {
 public:
  struct Service {
    std::string role, url, config;
  };
  // What start_system and describe_system fill in.
  struct Parts {
    SystemOptions options;          // dir absolute; from a directory: prefixes, model, db kind
    std::string pki;                // dir/pki
    std::vector<Service> services;  // pva, ro, sho, sho2, vno, supplier (their start order)
    std::string gateway;            // "127.0.0.1:PORT"; from a directory only when it was fixed
    Non3gppAccess non3gpp;
    std::shared_ptr<const pki::TrustAnchors> trust;
    std::shared_ptr<net::HttpsClient> factory, plain;
  };

  explicit SystemDescription(Parts parts);
  virtual ~SystemDescription();
  SystemDescription(const SystemDescription&) = delete;
  SystemDescription& operator=(const SystemDescription&) = delete;

  const std::vector<Service>& services() const;
  std::string url(std::string_view role) const;  // empty for an unknown role
  const std::string& gateway() const;            // the VNO's gateway, "127.0.0.1:PORT"
  const Non3gppAccess& non3gpp() const;
  const SystemOptions& options() const;

  // Paths under dir/pki: the CA certificate the TLS certificates chain to (what a device and a
  // client trust), the supplier CA directory, the owner's token file.
  std::string tls_root_file() const;
  std::string supplier_ca_dir() const;
  std::string owner_token_file() const;
  std::string owner_token() const;  // the bearer token for the SHO's owner routes
  std::string batches_dir() const;  // the supplier's output: <batch>/bundles/*.bundle

  // mTLS as one of the system's operators ("supplier", "ro", "vno", "sho", "sho2", "pva"), with its
  // client certificate under pki/tls: what that operator's own services present to the others.
  Result<std::shared_ptr<net::HttpsClient>> operator_client(std::string_view role) const;

  // mTLS as the supplier's admin (kUpFactory): batch orders and handovers.
  std::shared_ptr<net::HttpsClient> factory_client() const;
  // Server-authenticated only (an owner, a device): trusts tls_root_file().
  std::shared_ptr<net::HttpsClient> plain_client() const;
  // What a device trusts for the VNO and the DRF (the TLS root).
  std::shared_ptr<const pki::TrustAnchors> device_trust() const;

 private:
  Parts parts_;
};

// The running system of start_system: its services live as long as this object; hostapd as long
// as this object and the thread that called start_system (it gets SIGTERM when that thread ends).
class System : public SystemDescription {
 public:
  struct State;  // the services and what they share (up_command.cpp)
  System(Parts parts, std::unique_ptr<State> state);
  ~System() override;  // stops hostapd, every service (servers first), then the databases

  // The RO's EAP gateway (hostapd's eap_sim_db=unix:<path>): dir/ro-eap.sock; empty when that
  // path is longer than a Unix socket address takes (107 bytes), and the system runs without it.
  const std::string& eap_socket() const;
  // The database of "ro", "sho", "sho2" or "pva" in this process (nullptr for another role).
  store::Database* database(std::string_view role) const;
  // The simulator's time machine (`mcim demo --scenario`): every service of this system reads
  // one clock, the system clock plus an offset; this moves the offset forward. The devices' TREs
  // and agents keep their own clocks.
  void advance_clock(std::chrono::seconds by) const;
  std::chrono::seconds clock_offset() const;
  // The fault a scenario injects (F4 "kill the DPF mid-download"): stop_service ends the service
  // of `role` ("ro", "sho", ...) as a crash ends it for its clients (connections cut, what it
  // held in memory gone, what it committed kept in its database); start_service starts it again
  // from its config file on the same port. database(role) is another object afterwards. Both
  // not_found for a role the system does not run; start_service the start's error, or
  // transition_refused when the service runs.
  Result<void> stop_service(std::string_view role) const;
  Result<void> start_service(std::string_view role) const;
  // The RO's periodic expiry of dormant PCIDs, now (RoService::expire_dormant_now).
  Result<std::uint64_t> expire_dormant_now() const;

 private:
  std::unique_ptr<State> state_;
};

// io_error/invalid_argument naming what failed (io_error naming its log when hostapd, installed,
// does not come up); a PKI directory that is not one this function wrote is refused rather than
// overwritten.
Result<std::unique_ptr<System>> start_system(const SystemOptions& options);

// The strict JSON of `mcim up --config FILE` over `options` (keys: dir, db, ports{supplier, ro,
// vno, gateway, sho, sho2, pva, radius, aaa}, device_binary, model, pcid_prefix, imsi_prefix,
// log_level, hostapd).
Result<void> load_system_options(const std::string& path, SystemOptions& options);

// The system that `mcim up --dir DIR` made and runs (in any process on this machine), read from
// DIR: the services' URLs from their config files, the PKI, the prefixes and model, the
// non-3GPP access (the DRF of ro.json's direct access, the RADIUS relay of vno.json's non3gpp
// when hostapd answers behind it). Checks that every service answers GET /healthz, and that this
// process's binary (options.device_binary, /proc/self/exe) measures as the references `mcim up`
// registered at the PVA (DIR/references.json), since the devices run here. not_found when DIR holds
// no such system; io_error when a service does not answer; conflicting_arguments when the
// references were made for another binary.
Result<std::unique_ptr<SystemDescription>> describe_system(const std::string& dir);

void register_up(CLI::App& app, Result<Fields>* result, std::ostream& out);

}  // namespace mcim::cli
