// The configuration files of `mcim serve supplier|ro|vno|sho|pva` (docs/operations.md "Running the
// services"): one strict JSON file per service, loaded into the service's config struct with
// every certificate, key and trust anchor read, so that a service starts from a value that is
// already known to be usable. Kept apart from the command so that `mcim up` can load the same
// files. Unknown members, wrong types and missing required members are refused with a message
// "<file>: <key path>: <problem>" (bad_format / missing_argument / invalid_argument), and so is a
// file the config names that cannot be read (its loader's code, e.g. not_found). Relative paths
// (and a relative sqlite: URL) are relative to the config file's directory. Messages never
// carry a secret: the OP is read from a file whose name, not content, is reported.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/log.h"
#include "common/secure.h"
#include "net/http_server.h"
#include "net/https_client.h"
#include "net/tls.h"
#include "roles/pva/service.h"
#include "roles/ro/hlr_gw.h"
#include "roles/ro/service.h"
#include "roles/sho/service.h"
#include "roles/supplier/service.h"
#include "roles/vno/service.h"

namespace mcim::cli {

// "IPv4:port" or "[IPv6]:port" (port 0 = ephemeral); invalid_argument "<what>: ..." otherwise.
// Names are refused: the servers bind address literals only.
struct ListenAddress {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
};
Result<ListenAddress> parse_listen(std::string_view text, std::string_view what);

// What every service file has besides its role's members.
// Worker threads of `mcim serve ro` when its file does not say: its handlers block on the
// database, so it wants more workers than cores.
inline constexpr int kRoDefaultThreads = 8;
// And of `mcim serve sho`: its writes share SQLite commits with the units of its other workers
// (docs/store.md "Batched commits"), which two workers left to at most two at a time.
inline constexpr int kShoDefaultThreads = 4;

struct ServeCommon {
  std::string path;  // the config file, as given
  std::string dir;   // its directory, against which relative paths were resolved
  ListenAddress listen;
  int threads = 2;  // the RO's default is kRoDefaultThreads, the SHO's kShoDefaultThreads
  log::Level log_level = log::Level::info;
  net::TlsServerOptions tls;                 // identity loaded, client_trust when asked for
  std::shared_ptr<net::HttpsClient> client;  // the outgoing mTLS client; null without `client`

  // The HttpServer options for this file (listen, threads, TLS) with the service's body limit.
  net::HttpServerOptions server_options(std::size_t body_limit) const;
};

struct RoServeConfig {
  ServeCommon common;
  std::string db_url;  // default sqlite:<dir>/ro.db; may carry a password: never log it
  ro::RoServiceConfig service;
  // The file's "eap_gateway": hostapd's eap_sim_db socket served from the same database (F3,
  // docs/eap.md); absent: no gateway. Its icf is service.icf with the AMF separation bit set,
  // which EAP-AKA' needs whatever the VNOs' vectors carry.
  std::optional<ro::HlrGatewayOptions> eap_gateway;
};

struct VnoServeConfig {
  ServeCommon common;
  roles::VnoServiceConfig service;
  std::string radius_secret_file;  // non3gpp.secret_file resolved; empty without non3gpp
};

struct SupplierServeConfig {
  ServeCommon common;
  supplier::SupplierServiceConfig service;
  // Owns the certificates service.device_template.operator_roots points to: keep this value
  // alive as long as the service.
  std::shared_ptr<const pki::TrustAnchors> operator_roots;
};

struct ShoServeConfig {
  ServeCommon common;
  std::string db_url;  // default sqlite:<dir>/sho.db; may carry a password: never log it
  sho::ShoServiceConfig service;
};

struct PvaServeConfig {
  ServeCommon common;
  std::string db_url;  // default sqlite:<dir>/pva.db; may carry a password: never log it
  pva::PvaServiceConfig service;
};

Result<RoServeConfig> load_ro_config(const std::string& path);
Result<ShoServeConfig> load_sho_config(const std::string& path);
Result<PvaServeConfig> load_pva_config(const std::string& path);
Result<VnoServeConfig> load_vno_config(const std::string& path);
Result<SupplierServeConfig> load_supplier_config(const std::string& path);

// invalid_argument "<what>: ..." unless the URL's scheme is one store::open_database knows.
// The URL itself is never repeated (it may carry a password).
Result<void> check_database_url(std::string_view url, std::string_view what);

// The scheme of a database URL for logs ("sqlite", "postgresql", "memory").
std::string database_kind(std::string_view url);

// A RADIUS shared secret (vno.json's non3gpp, `mcim device run --radius-secret-file`): the file's
// content without one trailing newline, 1-128 octets, in a file private to its owner (whoever
// reads it can forge Access-Accepts and read the MSKs in them). not_found, invalid_argument
// "<path>: ..."; the secret is never quoted.
Result<std::shared_ptr<const SecretBytes>> read_radius_secret(const std::string& path);

}  // namespace mcim::cli
