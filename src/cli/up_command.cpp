// `mcim up`: generates (once) the PKI of a whole system under a directory, writes the six
// services' config files and starts every service from them in this process (cli/up_command.h).
// Layout of the directory:
//   pki/            everything secret or certified, made once and reused (see make_pki)
//   supplier.json ro.json vno.json sho.json sho2.json pva.json   rewritten at every start (ports)
//   ro.db sho.db sho2.db pva.db                                 SQLite, unless --db names
//   PostgreSQL ro-eap.sock     the RO's EAP gateway (hostapd's eap_sim_db), while the system runs
//   hostapd/        hostapd's config, users, clients (with the RADIUS secret) and log files
//   references.json the reference measurements registered at the PVA (for describe_system)
//   batches/        the supplier's batch files
// Ports are chosen before the files are written, since the RO and the SHO each need the other's
// URL: free ones are picked (bound and released) unless given, and a start that loses a port to
// another process in between is retried with fresh ones. hostapd, when installed, starts right
// after the RO (whose EAP gateway it asks for vectors) and before the VNO (whose RADIUS relay
// sends to it); it is a child of this process and stops first.
#include "cli/up_command.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <ostream>
#include <thread>
#include <utility>

#include "cli/serve_command.h"
#include "cli/serve_config.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/process.h"
#include "common/random.h"
#include "common/secure.h"
#include "net/json_schema.h"
#include "net/tls.h"
#include "pki/attestation.h"
#include "pki/authority.h"
#include "pki/certificate.h"
#include "pki/openssl.h"
#include "roles/ro/hlr_gw.h"
#include "tre/state.h"
#include "tre/tre.h"

namespace mcim::cli {
namespace {

namespace fs = std::filesystem;
using net::Json;

constexpr std::string_view kApn = "m2m-prov.ro-1";
constexpr std::string_view kEapSocket = "ro-eap.sock";           // in the directory, beside ro.json
constexpr std::string_view kReferencesFile = "references.json";  // what the PVA was given
constexpr std::string_view kHostapdDir = "hostapd";              // hostapd's files
constexpr std::string_view kRadiusSecret = "pki/radius.secret";  // both RADIUS legs' secret
// hostapd binds its RADIUS port within milliseconds; a machine under load may take longer.
constexpr std::chrono::seconds kHostapdStartTimeout{10};
constexpr int kCaDays = 3650;
constexpr int kLeafDays = 825;
constexpr int kStartAttempts = 3;
// The supplier answers a batch order once the whole batch is made and handed over to the RO:
// ≈ 4 ms a device on the 2-core machine, several times that under load, so a batch of 10,000
// takes minutes, far over a client's default 10 s.
constexpr std::chrono::minutes kBatchOrderTimeout{15};

// The services by name (their config file dir/<name>.json), in start order: two SHOs.
struct Instance {
  std::string_view name;
  ServeRole role;
};
constexpr Instance kStartOrder[] = {{"pva", ServeRole::pva}, {"ro", ServeRole::ro},
                                    {"sho", ServeRole::sho}, {"sho2", ServeRole::sho},
                                    {"vno", ServeRole::vno}, {"supplier", ServeRole::supplier}};
// The roles that present a TLS client certificate, with the operator id it names.
const std::vector<std::pair<std::string, std::string_view>> kClients = {
    {"factory", kUpFactory}, {"supplier", kUpSupplier}, {"ro", kUpRo},    {"vno", kUpVno},
    {"sho", kUpSho},         {"sho2", kUpSho2},         {"pva", kUpPva},  {"vno2", kUpVno2}};

// 16 random bytes as hex in a private file; no copy of them is left in memory.
Result<void> write_random_hex(const std::string& path, RandomSource& rng) {
  Bytes<16> raw{};
  rng.fill(raw);
  std::string text = to_hex(raw) + "\n";
  auto w = write_file_atomic(path, text, 0600);
  secure_wipe(raw);
  secure_wipe(text.data(), text.size());
  return w;
}

// ---- The PKI (pure file work; made in pki.partial and renamed into place when complete) ------

class PkiMaker {
 public:
  explicit PkiMaker(std::string dir) : dir_(std::move(dir)) {}

  Result<void> make() {
    auto ops = pki::Authority::create(dir_ + "/operators-ca", "mcim up Operators CA", nullptr,
                                      kCaDays, "", clock_, rng_);
    if (!ops) return with_prefix(ops.error(), "operators CA");
    auto sup = pki::Authority::create(dir_ + "/supplier-ca", "mcim up Supplier CA", nullptr,
                                      kCaDays, "", clock_, rng_);
    if (!sup) return with_prefix(sup.error(), "supplier CA");
    if (auto r = make_tls(*ops); !r) return r;
    if (auto r = make_signers(*ops, *sup); !r) return r;
    if (auto r = make_secrets(); !r) return r;
    return {};
  }

  // A PKI made before the system had its second SHO: sho-2's certificates and OP, from the
  // operators CA already there.
  Result<void> add_second_sho() {
    auto ops = pki::Authority::open(dir_ + "/operators-ca");
    if (!ops) return with_prefix(ops.error(), "operators CA");
    const std::string id(kUpSho2);
    if (auto r = issue(*ops, pki::Profile::tls_server, "CN=sho2 server,O=mcim up",
                       {"IP:127.0.0.1", "DNS:localhost"}, "tls/sho2-server");
        !r) {
      return r;
    }
    const std::string san = fmt::format("URI:urn:mcim:operator:{}", id);
    if (auto r = issue(*ops, pki::Profile::tls_client, fmt::format("CN={},O=mcim up", id), {san},
                       "tls/sho2-client");
        !r) {
      return r;
    }
    if (auto r = issue(*ops, pki::Profile::package_signing, "CN=package signer,O=sho-2", {san},
                       "sho2-signer");
        !r) {
      return r;
    }
    return write_random_hex(dir_ + "/sho2-op.hex", rng_);
  }

 private:
  Result<void> issue(const pki::Authority& ca, pki::Profile profile, const std::string& subject,
                     std::vector<std::string> sans, const std::string& prefix) {
    pki::CertSpec spec;
    spec.profile = profile;
    spec.subject = subject;
    spec.sans = std::move(sans);
    spec.days = kLeafDays;
    auto issued = ca.issue(spec, clock_, rng_);
    if (!issued) return with_prefix(issued.error(), prefix);
    const std::string base = dir_ + "/" + prefix;
    if (auto w = pki::write_certificate(base + ".pem", issued->cert.get()); !w) return w;
    return pki::write_private_key(base + ".key", issued->key.get());
  }

  // Each service its own server key (the SHO pins the RO's as the DPF's); every client
  // certificate names its operator.
  Result<void> make_tls(const pki::Authority& ops) {
    fs::create_directories(dir_ + "/tls");
    for (const char* role : {"supplier", "ro", "vno", "sho", "sho2", "pva"}) {
      if (auto r = issue(ops, pki::Profile::tls_server, fmt::format("CN={} server,O=mcim up", role),
                         {"IP:127.0.0.1", "DNS:localhost"}, fmt::format("tls/{}-server", role));
          !r) {
        return r;
      }
    }
    for (const auto& [role, id] : kClients) {
      if (auto r = issue(ops, pki::Profile::tls_client, fmt::format("CN={},O=mcim up", id),
                         {fmt::format("URI:urn:mcim:operator:{}", id)},
                         fmt::format("tls/{}-client", role));
          !r) {
        return r;
      }
    }
    return {};
  }

  Result<void> make_signers(const pki::Authority& ops, const pki::Authority& sup) {
    const std::string ro = fmt::format("URI:urn:mcim:operator:{}", kUpRo);
    const std::string sho = fmt::format("URI:urn:mcim:operator:{}", kUpSho);
    const std::string sho2 = fmt::format("URI:urn:mcim:operator:{}", kUpSho2);
    const std::string pva = fmt::format("URI:urn:mcim:operator:{}", kUpPva);
    const std::string supplier = fmt::format("URI:urn:mcim:supplier:{}", kUpSupplier);
    struct Row {
      const pki::Authority* ca;
      pki::Profile profile;
      std::string subject, san, prefix;
    };
    for (const Row& r : {
             Row{&ops, pki::Profile::encryption, "CN=icf batch key,O=ro-1", ro, "icf"},
             Row{&ops, pki::Profile::package_signing, "CN=package signer,O=sho-1", sho,
                 "sho-signer"},
             Row{&ops, pki::Profile::package_signing, "CN=pcid renewals,O=ro-1", ro, "ro-signer"},
             Row{&ops, pki::Profile::package_signing, "CN=package signer,O=sho-2", sho2,
                 "sho2-signer"},
             Row{&ops, pki::Profile::result_signing, "CN=validation results,O=pva-1", pva,
                 "pva-signer"},
             Row{&sup, pki::Profile::package_signing, "CN=batch signer,O=sup-1", supplier,
                 "supplier-signer"},
             Row{&sup, pki::Profile::result_signing, "CN=reference signer,O=sup-1", supplier,
                 "references-signer"},
             Row{&sup, pki::Profile::ocsp_signing, "CN=ocsp signer,O=sup-1", "", "ocsp-signer"},
         }) {
      std::vector<std::string> sans;
      if (!r.san.empty()) sans.push_back(r.san);
      if (auto done = issue(*r.ca, r.profile, r.subject, sans, r.prefix); !done) return done;
    }
    return {};
  }

  // The OPs (the RO's for its PCIDs, each SHO's for its AuC) and the owner's bearer token.
  Result<void> make_secrets() {
    for (const char* name : {"ro-op.hex", "sho-op.hex", "sho2-op.hex", "owner.token"}) {
      if (auto w = write_random_hex(dir_ + "/" + name, rng_); !w) return w;
    }
    return {};
  }

  std::string dir_;
  SystemClock clock_;
  OsRandom rng_;
};

// dir/pki as it is, or made now. A crash while making it leaves pki.partial, which is ours to
// remove; the rename publishes a complete PKI only.
Result<std::string> ensure_pki(const std::string& dir) {
  const std::string pki = dir + "/pki";
  std::error_code ec;
  if (fs::exists(pki, ec)) {
    if (!fs::exists(pki + "/operators-ca/ca.pem", ec) || !fs::exists(pki + "/owner.token", ec)) {
      return fail(ErrorCode::already_exists,
                  fmt::format("{}: not a PKI made by mcim up (move it away)", pki));
    }
    if (!fs::exists(pki + "/sho2-op.hex", ec)) {
      if (auto r = PkiMaker(pki).add_second_sho(); !r) return std::unexpected(r.error());
    }
    return pki;
  }
  const std::string partial = dir + "/pki.partial";
  fs::remove_all(partial, ec);
  fs::create_directories(partial, ec);
  if (ec) return fail(ErrorCode::io_error, fmt::format("{}: {}", partial, ec.message()));
  fs::permissions(partial, fs::perms::owner_all, ec);
  if (auto r = PkiMaker(partial).make(); !r) return std::unexpected(r.error());
  fs::rename(partial, pki, ec);
  if (ec) return fail(ErrorCode::io_error, fmt::format("{}: {}", pki, ec.message()));
  return pki;
}

// ---- Databases -------------------------------------------------------------------------------

// One schema per role on the given PostgreSQL database, created when absent; each role's URL
// puts its schema first in search_path. The URL is never repeated in a message (a password).
Result<std::map<std::string, std::string>> postgres_urls(const std::string& url) {
  if (url.find("options=") != std::string::npos) {
    return fail(ErrorCode::invalid_argument,
                "--db: the URL may not set options= (mcim up sets search_path per role)");
  }
  PGconn* conn = PQconnectdb(url.c_str());
  const bool ok = PQstatus(conn) == CONNECTION_OK;
  std::string why = ok ? "" : PQerrorMessage(conn);
  std::map<std::string, std::string> out;
  for (const char* role : {"ro", "sho", "sho2", "pva"}) {
    if (!ok) break;
    PGresult* r = PQexec(conn, fmt::format("CREATE SCHEMA IF NOT EXISTS mcim_{}", role).c_str());
    if (PQresultStatus(r) != PGRES_COMMAND_OK) why = PQresultErrorMessage(r);
    PQclear(r);
    if (!why.empty()) break;
    out[role] = fmt::format("{}{}options=-csearch_path%3Dmcim_{}", url,
                            url.find('?') == std::string::npos ? "?" : "&", role);
  }
  PQfinish(conn);
  if (!why.empty()) {
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    // libpq's messages name the host and the problem, never the password.
    return fail(ErrorCode::io_error, fmt::format("--db: {}", why));
  }
  return out;
}

// ---- Ports and config files ------------------------------------------------------------------

// A socket bound to a free port of `address` (kept open in `fds`), or 0.
std::uint16_t bind_free(int type, in_addr_t address, std::vector<int>& fds) {
  const int fd = ::socket(AF_INET, type, 0);
  if (fd < 0) return 0;
  fds.push_back(fd);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(address);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return 0;
  }
  return ntohs(a.sin_port);
}

// Free ports for those not given: all bound at once (so no two are the same), then released for
// the services to bind. A port left 0 (no socket) makes its service take any port, and the start
// fails or not. The UDP ones only with hostapd: the relay's on 127.0.0.1, hostapd's on every
// address, as hostapd binds it.
SystemPorts choose_ports(const SystemPorts& given, bool udp) {
  SystemPorts p = given;
  std::vector<int> fds;
  for (std::uint16_t* port : {&p.supplier, &p.ro, &p.vno, &p.sho, &p.sho2, &p.pva}) {
    if (*port == 0) *port = bind_free(SOCK_STREAM, INADDR_LOOPBACK, fds);
  }
  if (udp && p.radius == 0) p.radius = bind_free(SOCK_DGRAM, INADDR_LOOPBACK, fds);
  if (udp && p.aaa == 0) p.aaa = bind_free(SOCK_DGRAM, INADDR_ANY, fds);
  for (int fd : fds) ::close(fd);
  return p;  // the gateway is nobody's peer: 0 stays "any"
}

std::string listen_of(std::uint16_t port) { return fmt::format("127.0.0.1:{}", port); }
std::string url_of(std::uint16_t port) { return "https://" + listen_of(port); }

// What every file says: where it listens, its server identity, and (when it calls others) its
// client identity; every TLS certificate chains to the operators CA.
Json common_of(const std::string& role, std::uint16_t port, bool client_certs, bool client,
               const SystemOptions& o) {
  Json tls = {{"cert", fmt::format("pki/tls/{}-server.pem", role)},
              {"key", fmt::format("pki/tls/{}-server.key", role)}};
  if (client_certs) tls["client_roots"] = Json::array({"pki/operators-ca/ca.pem"});
  Json j = {{"listen", listen_of(port)}, {"log_level", o.log_level}, {"tls", tls}};
  if (client) {
    j["client"] = {{"cert", fmt::format("pki/tls/{}-client.pem", role)},
                   {"key", fmt::format("pki/tls/{}-client.key", role)},
                   {"roots", Json::array({"pki/operators-ca/ca.pem"})}};
  }
  return j;
}

struct Wiring {
  SystemPorts ports;
  std::map<std::string, std::string> db;  // by role; absent: SQLite beside the config
  bool eap_gateway = false;               // the RO serves kEapSocket
  bool hostapd = false;                   // hostapd runs, behind the VNO's RADIUS relay
};

Json ro_file(const SystemOptions& o, const Wiring& w) {
  Json j = common_of("ro", w.ports.ro, true, true, o);
  if (w.db.contains("ro")) j["db"] = w.db.at("ro");
  j["operator_id"] = kUpRo;
  j["roaming_partners"] = Json::array({kUpVno, kUpVno2});
  j["suppliers"] = Json::array({kUpSupplier});
  j["supplier_roots"] = Json::array({"pki/supplier-ca/ca.pem"});
  j["operator_roots"] = Json::array({"pki/operators-ca/ca.pem"});
  j["icf_key"] = "pki/icf";
  j["shos"] = {{std::string(kUpSho), url_of(w.ports.sho)},
               {std::string(kUpSho2), url_of(w.ports.sho2)}};
  if (w.eap_gateway) j["eap_gateway"] = {{"socket", kEapSocket}};
  // Devices on a non-3GPP access reach the DRF where everyone else reaches the RO.
  j["direct"] = {{"enabled", true}, {"drf_url", url_of(w.ports.ro)}};
  // F8: the RO renews its PCIDs with its own package signer (a PKI made before it has none).
  if (fs::exists(o.dir + "/pki/ro-signer.pem")) {
    j["pcid_renewal"] = {{"package_signer", "pki/ro-signer"}, {"op_file", "pki/ro-op.hex"}};
  }
  return j;
}

Json vno_file(const SystemOptions& o, const Wiring& w) {
  Json j = common_of("vno", w.ports.vno, false, true, o);
  j["name"] = kUpVno;
  j["routes"] = Json::array({
      {{"prefix", o.pcid_prefix},
       {"home", kUpRo},
       {"provisioning", true},
       {"drf_url", url_of(w.ports.ro)}},
      {{"prefix", o.imsi_prefix}, {"home", kUpSho}},
      {{"prefix", o.imsi_prefix2}, {"home", kUpSho2}},
  });
  j["homes"] = {{std::string(kUpRo), url_of(w.ports.ro)},
                {std::string(kUpSho), url_of(w.ports.sho)},
                {std::string(kUpSho2), url_of(w.ports.sho2)}};
  // Restricted sessions reach the RO (DRF, DPF) and the PVA only.
  j["restricted_destinations"] = Json::array({listen_of(w.ports.ro), listen_of(w.ports.pva)});
  j["gateway"] = {{"listen", listen_of(w.ports.gateway)}};
  // One secret for both legs: the relay forwards packets, re-signed at most (docs/eap.md).
  if (w.hostapd) {
    j["non3gpp"] = {{"radius_listen", listen_of(w.ports.radius)},
                    {"aaa", listen_of(w.ports.aaa)},
                    {"secret_file", kRadiusSecret}};
  }
  return j;
}

Json supplier_file(const SystemOptions& o, const Wiring& w) {
  Json j = common_of("supplier", w.ports.supplier, true, true, o);
  j["supplier_id"] = kUpSupplier;
  j["admins"] = Json::array({kUpFactory});
  j["ca"] = "pki/supplier-ca";
  j["signer"] = "pki/supplier-signer";
  j["icf_cert"] = "pki/icf.pem";
  j["icf_url"] = url_of(w.ports.ro);
  j["device"] = {{"ro_operator", kUpRo},
                 {"op_file", "pki/ro-op.hex"},
                 {"model", o.model},
                 {"operator_roots", Json::array({"pki/operators-ca/ca.pem"})},
                 {"ocsp_url", url_of(w.ports.pva) + "/v1/ocsp"}};
  return j;
}

// `name` is "sho" (sho-1) or "sho2" (sho-2): the files under pki/ and the database are named so.
Json sho_file(const SystemOptions& o, const Wiring& w, const std::string& name) {
  const bool second = name == "sho2";
  Json j = common_of(name, second ? w.ports.sho2 : w.ports.sho, true, true, o);
  // Without "db" a SHO's SQLite file is sho.db beside its file: the second one needs its own.
  if (w.db.contains(name)) {
    j["db"] = w.db.at(name);
  } else if (second) {
    j["db"] = "sqlite:sho2.db";
  }
  j["operator_id"] = second ? kUpSho2 : kUpSho;
  j["owners"] = Json::array({{{"id", kUpOwner}, {"token_file", "pki/owner.token"}}});
  j["ros"] = Json::array({{{"operator_id", kUpRo},
                           {"pcid_prefix", o.pcid_prefix},
                           {"url", url_of(w.ports.ro)},
                           {"dpf_cert", "pki/tls/ro-server.pem"},
                           {"apn", kApn}}});
  j["roaming_partners"] = Json::array({kUpVno});
  j["imsi_prefix"] = second ? o.imsi_prefix2 : o.imsi_prefix;
  j["op_file"] = fmt::format("pki/{}-op.hex", name);
  j["supplier_roots"] = Json::array({"pki/supplier-ca/ca.pem"});
  j["pva_roots"] = Json::array({"pki/operators-ca/ca.pem"});
  j["pva_url"] = url_of(w.ports.pva);
  j["package_signer"] = fmt::format("pki/{}-signer", name);
  return j;
}

Json pva_file(const SystemOptions& o, const Wiring& w) {
  Json j = common_of("pva", w.ports.pva, true, false, o);
  if (w.db.contains("pva")) j["db"] = w.db.at("pva");
  j["operator_id"] = kUpPva;
  j["suppliers"] = Json::array({kUpSupplier});
  j["shos"] = Json::array({kUpSho, kUpSho2});
  j["supplier_roots"] = Json::array({"pki/supplier-ca/ca.pem"});
  j["supplier_ca"] = "pki/supplier-ca";
  j["ocsp_signer"] = "pki/ocsp-signer";
  j["result_signer"] = "pki/pva-signer";
  return j;
}

Json file_of(const Instance& in, const SystemOptions& o, const Wiring& w) {
  switch (in.role) {
    case ServeRole::supplier: return supplier_file(o, w);
    case ServeRole::ro: return ro_file(o, w);
    case ServeRole::vno: return vno_file(o, w);
    case ServeRole::sho: return sho_file(o, w, std::string(in.name));
    case ServeRole::pva: return pva_file(o, w);
  }
  return Json::object();
}

// ---- hostapd: the RADIUS/EAP server of non-3GPP access (F3, docs/eap.md) ----------------------

// Why the system runs without EAP access, or "" when hostapd can run.
std::string eap_unavailable(const SystemOptions& o, bool eap_gateway) {
  if (!eap_gateway) {
    return "the directory's path is too long for the RO's EAP socket, which hostapd needs";
  }
  if (::access(o.hostapd.c_str(), X_OK) != 0) {
    return fmt::format("{} is not installed (Debian package hostapd)", o.hostapd);
  }
  return "";
}

// pki/radius.secret, made once (also for a PKI made before EAP access was part of the system).
Result<void> ensure_radius_secret(const std::string& dir) {
  const std::string path = dir + "/" + std::string(kRadiusSecret);
  std::error_code ec;
  if (fs::exists(path, ec)) return {};
  OsRandom rng;
  return write_random_hex(path, rng);
}

std::string hostapd_path(const std::string& dir, std::string_view file) {
  return fmt::format("{}/{}/{}", dir, kHostapdDir, file);
}

// The files that do not depend on the ports: the EAP methods by identity prefix (RFC 4187,
// RFC 5448) and the one RADIUS client, the relay (which sends from 127.0.0.1), with the secret:
// that file is as private as the secret's own.
Result<void> write_hostapd_files(const std::string& dir) {
  std::error_code ec;
  const std::string home = fmt::format("{}/{}", dir, kHostapdDir);
  fs::create_directories(home, ec);
  if (!ec) fs::permissions(home, fs::perms::owner_all, ec);
  if (ec) return fail(ErrorCode::io_error, fmt::format("{}: {}", home, ec.message()));
  const std::string_view users = "\"0\"*\tAKA\n\"6\"*\tAKA'\n";
  if (auto w = write_file_atomic(hostapd_path(dir, "eap_users"), users, 0600); !w) return w;
  auto secret = read_radius_secret(dir + "/" + std::string(kRadiusSecret));
  if (!secret) return std::unexpected(secret.error());
  std::string clients = "127.0.0.1/32\t" + std::string((*secret)->text()) + "\n";
  auto w = write_file_atomic(hostapd_path(dir, "radius_clients"), clients, 0600);
  secure_wipe(clients.data(), clients.size());
  return w;
}

// hostapd as an integrated RADIUS server only (driver=none), EAP-AKA/AKA' with the RO's vectors.
std::string hostapd_conf(const std::string& dir, std::uint16_t aaa_port) {
  return fmt::format(
      "driver=none\n"
      "interface=mcim-as\n"
      "logger_stdout=-1\n"
      "logger_stdout_level=2\n"
      "logger_syslog=0\n"
      "eap_server=1\n"
      "eap_user_file={}\n"
      "eap_sim_db=unix:{}/{}\n"
      "eap_sim_aka_result_ind=1\n"
      "radius_server_clients={}\n"
      "radius_server_auth_port={}\n",
      hostapd_path(dir, "eap_users"), dir, kEapSocket, hostapd_path(dir, "radius_clients"),
      aaa_port);
}

// Whether something holds UDP `port` on some address (hostapd binds its RADIUS port on all).
bool udp_port_taken(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(port);
  const bool taken = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0;
  ::close(fd);
  return taken;
}

// Starts hostapd on w.ports.aaa and waits until its RADIUS port is bound. io_error naming the log
// when it ends or does not bind in time (a port lost to another process among the reasons).
Result<ChildProcess> start_hostapd(const SystemOptions& o, const Wiring& w) {
  const std::string conf = hostapd_path(o.dir, "hostapd.conf");
  const std::string log_file = hostapd_path(o.dir, "hostapd.log");
  if (auto r = write_file_atomic(conf, hostapd_conf(o.dir, w.ports.aaa), 0600); !r) {
    return std::unexpected(r.error());
  }
  // Bound to this thread (the one that owns the System), so that no hostapd outlives a `mcim up`
  // or `mcim demo` killed by a signal it does not handle.
  auto child = ChildProcess::spawn({o.hostapd, conf}, log_file, {.die_with_parent = true});
  if (!child) return std::unexpected(child.error());
  const auto until = std::chrono::steady_clock::now() + kHostapdStartTimeout;
  while (child->running() && !udp_port_taken(w.ports.aaa) &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!child->running()) {
    return fail(
        ErrorCode::io_error,
        fmt::format("hostapd ended at its start (RADIUS port {}): see {}", w.ports.aaa, log_file));
  }
  if (!udp_port_taken(w.ports.aaa)) {
    return fail(ErrorCode::io_error,
                fmt::format("hostapd did not bind its RADIUS port {} within {} s: see {}",
                            w.ports.aaa, kHostapdStartTimeout.count(), log_file));
  }
  log::info("up", "hostapd: RADIUS/EAP server on UDP port {} (all addresses), log {}", w.ports.aaa,
            log_file);
  return child;
}

// ---- The reference measurements --------------------------------------------------------------

// What a TRE of this system measures: the binary it runs and the model-wide configuration the
// supplier gives it (tre::Config as Tre::init builds it from the supplier's bundle).
Result<std::vector<pki::Measurement>> golden_measurements(const SystemOptions& o,
                                                          const std::string& pki_dir) {
  auto binary = tre::measure_file(o.device_binary);
  if (!binary) return with_prefix(binary.error(), "device_binary");
  auto root = pki::load_certificate(pki_dir + "/operators-ca/ca.pem");
  if (!root) return std::unexpected(root.error());
  tre::Config config;
  config.model = o.model;
  config.ro_operator = kUpRo;
  config.operator_roots.push_back(pki::certificate_der(root->get()));
  std::vector<pki::Measurement> ms = {
      {"tre.binary", *binary},
      {"tre.config", tre::config_digest(config)},
  };
  return ms;
}

// dir/references.json: the measurements registered at the PVA, as hex, for describe_system to
// compare with its own (the devices of `mcim demo --system` must measure what the PVA expects).
Json references_json(const std::vector<pki::Measurement>& ms) {
  Json j = Json::object();
  for (const pki::Measurement& m : ms) j[m.name] = to_hex(m.sha256);
  return j;
}

// The supplier registers them at the PVA as it would in production: signed, over mTLS; then
// writes them to dir/references.json.
Result<void> register_references(const SystemOptions& o, const std::string& pki_dir,
                                 const std::string& pva_url, net::HttpsClient& supplier) {
  auto ms = golden_measurements(o, pki_dir);
  if (!ms) return std::unexpected(ms.error());
  const std::string written = references_json(*ms).dump(2) + "\n";
  auto signer = pki::load_key_pair(pki_dir + "/references-signer");
  if (!signer) return std::unexpected(signer.error());
  SystemClock clock;
  pki::ReferenceSet refs{o.model, std::move(*ms),
                         std::chrono::floor<std::chrono::seconds>(clock.now())};
  auto text = pki::sign_references(refs, signer->key.get(), {signer->cert()});
  if (!text) return std::unexpected(text.error());
  auto answer =
      supplier.request("POST", pva_url + "/v1/pva/references", *text, net::kJsonContentType, {});
  if (!answer) return with_prefix(answer.error(), "registering the references at the PVA");
  if (answer->status != 201) {
    return fail(ErrorCode::io_error, fmt::format("registering the references at the PVA: {} {}",
                                                 answer->status, answer->body.substr(0, 200)));
  }
  return write_file_atomic(o.dir + "/" + std::string(kReferencesFile), written);
}

// ---- Clients ---------------------------------------------------------------------------------

Result<std::shared_ptr<const pki::TrustAnchors>> load_anchors(const std::string& file) {
  auto cert = pki::load_certificate(file);
  if (!cert) return std::unexpected(cert.error());
  auto t = pki::TrustAnchors::from_certs({cert->get()});
  if (!t) return std::unexpected(t.error());
  return std::make_shared<const pki::TrustAnchors>(std::move(*t));
}

Result<std::shared_ptr<net::HttpsClient>> make_client(
    std::shared_ptr<const pki::TrustAnchors> trust, const std::string& identity_prefix,
    std::chrono::milliseconds request_timeout = net::HttpsClientOptions{}.request_timeout) {
  net::HttpsClientOptions o;
  o.trust = std::move(trust);
  o.request_timeout = request_timeout;
  if (!identity_prefix.empty()) {
    auto id = net::load_tls_identity(identity_prefix + ".pem", identity_prefix + ".key");
    if (!id) return std::unexpected(id.error());
    o.identity = *id;
  }
  auto c = net::HttpsClient::create(std::move(o));
  if (!c) return std::unexpected(c.error());
  return std::shared_ptr<net::HttpsClient>(std::move(*c));
}

// The clients every description holds: trust in the operators CA, the factory admin's mTLS
// client, and a server-authenticated one.
Result<void> make_clients(SystemDescription::Parts& p) {
  auto trust = load_anchors(p.pki + "/operators-ca/ca.pem");
  if (!trust) return std::unexpected(trust.error());
  p.trust = *trust;
  auto factory = make_client(p.trust, p.pki + "/tls/factory-client", kBatchOrderTimeout);
  if (!factory) return std::unexpected(factory.error());
  auto plain = make_client(p.trust, "");
  if (!plain) return std::unexpected(plain.error());
  p.factory = *factory;
  p.plain = *plain;
  return {};
}

// The directory as every path of the system names it: absolute, normalised, no trailing '/'.
std::string absolute_dir(const std::string& dir) {
  std::string d = fs::absolute(dir).lexically_normal().string();
  if (d.size() > 1 && d.back() == '/') d.pop_back();
  return d;
}

}  // namespace

// ---- SystemDescription and System --------------------------------------------------------------

SystemDescription::SystemDescription(Parts parts) : parts_(std::move(parts)) {}
SystemDescription::~SystemDescription() = default;

const std::vector<SystemDescription::Service>& SystemDescription::services() const {
  return parts_.services;
}
std::string SystemDescription::url(std::string_view role) const {
  for (const auto& s : parts_.services) {
    if (s.role == role) return s.url;
  }
  return "";
}
const std::string& SystemDescription::gateway() const { return parts_.gateway; }
const Non3gppAccess& SystemDescription::non3gpp() const { return parts_.non3gpp; }
const SystemOptions& SystemDescription::options() const { return parts_.options; }
std::string SystemDescription::tls_root_file() const { return parts_.pki + "/operators-ca/ca.pem"; }
std::string SystemDescription::supplier_ca_dir() const { return parts_.pki + "/supplier-ca"; }
std::string SystemDescription::batches_dir() const { return parts_.options.dir + "/batches"; }
std::string SystemDescription::owner_token_file() const { return parts_.pki + "/owner.token"; }
std::string SystemDescription::owner_token() const {
  auto text = read_text_file(owner_token_file());
  if (!text) return "";
  std::string t = *text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  return t;
}
std::shared_ptr<net::HttpsClient> SystemDescription::factory_client() const {
  return parts_.factory;
}
std::shared_ptr<net::HttpsClient> SystemDescription::plain_client() const { return parts_.plain; }
Result<std::shared_ptr<net::HttpsClient>> SystemDescription::operator_client(
    std::string_view role) const {
  for (const auto& [name, id] : kClients) {
    if (name == role && name != "factory") {
      return make_client(parts_.trust, fmt::format("{}/tls/{}-client", parts_.pki, name));
    }
  }
  return fail(ErrorCode::invalid_argument, fmt::format("{}: not an operator of the system", role));
}
std::shared_ptr<const pki::TrustAnchors> SystemDescription::device_trust() const {
  return parts_.trust;
}

struct System::State {
  std::string eap_socket;                           // empty: the RO serves no EAP gateway
  OffsetClock clock;  // outlives the services; the scenarios move it (advance_clock)
  std::vector<std::unique_ptr<ServedRole>> served;  // in start order
  std::vector<std::string> names;                   // of `served`, kStartOrder's
  std::optional<ChildProcess> hostapd;              // with EAP access
  // stop_service's, until start_service: the role, and a socket bound (not listening) to its
  // port so that no other process takes the port meanwhile.
  struct Stopped {
    ServeRole role;
    int port_keeper = -1;
  };
  std::map<std::string, Stopped> stopped;

  // hostapd (a client of the RO's EAP gateway) first; then every server stops before any service
  // goes: no request may reach a half-destroyed peer.
  void stop() {
    for (auto& [name, s] : stopped) {
      if (s.port_keeper >= 0) ::close(s.port_keeper);
    }
    stopped.clear();
    hostapd.reset();
    for (auto it = served.rbegin(); it != served.rend(); ++it) {
      if (*it) (*it)->stop_serving();
    }
    for (auto it = served.rbegin(); it != served.rend(); ++it) it->reset();
    served.clear();
    names.clear();
  }
  ~State() { stop(); }
};

// The services go (state_, a member) before the description's clients (the base).
System::System(Parts parts, std::unique_ptr<State> state)
    : SystemDescription(std::move(parts)), state_(std::move(state)) {}
System::~System() = default;
const std::string& System::eap_socket() const { return state_->eap_socket; }
void System::advance_clock(std::chrono::seconds by) const { state_->clock.advance(by); }
std::chrono::seconds System::clock_offset() const { return state_->clock.offset(); }
Result<std::uint64_t> System::expire_dormant_now() const {
  for (const auto& served : state_->served) {
    if (!served) continue;
    if (auto* ro = served->ro_service(); ro != nullptr) return ro->expire_dormant_now();
  }
  return fail(ErrorCode::not_found, "the system runs no RO");
}
namespace {

// A TCP socket bound to the port of `address` ("127.0.0.1:PORT") with SO_REUSEADDR and not
// listening: connections to the port are refused, as to a dead service, and no other process's
// bind(0) or connect gets the port; -1 when it cannot be had (the restart may then find the port
// taken).
int keep_port(const std::string& address) {
  const auto colon = address.rfind(':');
  const int port = colon == std::string::npos ? 0 : std::atoi(address.c_str() + colon + 1);
  if (port <= 0 || port > 65535) return -1;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int on = 1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

Result<void> System::stop_service(std::string_view role) const {
  for (std::size_t i = 0; i < state_->served.size(); ++i) {
    if (state_->names[i] != role || !state_->served[i]) continue;
    const std::string address = state_->served[i]->address();
    System::State::Stopped stopped{state_->served[i]->role()};
    state_->served[i]->stop();
    state_->served[i].reset();
    stopped.port_keeper = keep_port(address);
    state_->stopped.emplace(std::string(role), stopped);
    log::info("up", "{} stopped", role);
    return {};
  }
  return fail(ErrorCode::not_found, fmt::format("{}: the system runs no such service", role));
}

Result<void> System::start_service(std::string_view role) const {
  for (std::size_t i = 0; i < state_->served.size(); ++i) {
    if (state_->names[i] != role) continue;
    const auto stopped = state_->stopped.find(std::string(role));
    if (state_->served[i] || stopped == state_->stopped.end()) {
      return fail(ErrorCode::transition_refused, fmt::format("{}: running", role));
    }
    // Both sockets allow address reuse and the keeper does not listen: the service binds beside it.
    auto again = ServedRole::start(stopped->second.role, services()[i].config, {}, state_->clock);
    if (!again) return with_prefix(again.error(), fmt::format("starting {} again", role));
    state_->served[i] = std::move(*again);
    if (stopped->second.port_keeper >= 0) ::close(stopped->second.port_keeper);
    state_->stopped.erase(stopped);
    log::info("up", "{} started again", role);
    return {};
  }
  return fail(ErrorCode::not_found, fmt::format("{}: the system runs no such service", role));
}

store::Database* System::database(std::string_view role) const {
  for (std::size_t i = 0; i < state_->served.size(); ++i) {
    if (state_->names[i] == role) {
      return state_->served[i] ? state_->served[i]->database() : nullptr;
    }
  }
  return nullptr;
}

namespace {

Result<void> check_options(const SystemOptions& o) {
  if (o.dir.empty()) return fail(ErrorCode::missing_argument, "dir: required");
  if (!o.db_url.empty() && !o.db_url.starts_with("postgresql://") &&
      !o.db_url.starts_with("postgres://")) {
    return fail(ErrorCode::invalid_argument,
                "--db: a postgresql:// URL (SQLite files in the directory without it)");
  }
  auto digits = [](const std::string& s, std::size_t min, std::size_t max) {
    return s.size() >= min && s.size() <= max &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (!digits(o.pcid_prefix, 5, 14)) {
    return fail(ErrorCode::invalid_argument, "pcid_prefix: 5 to 14 digits");
  }
  if (!digits(o.imsi_prefix, 5, 14)) {
    return fail(ErrorCode::invalid_argument, "imsi_prefix: 5 to 14 digits");
  }
  if (o.pcid_prefix.starts_with(o.imsi_prefix) || o.imsi_prefix.starts_with(o.pcid_prefix)) {
    return fail(ErrorCode::invalid_argument,
                "imsi_prefix: must not overlap pcid_prefix (the VNO routes them apart)");
  }
  if (!digits(o.imsi_prefix2, 5, 14)) {
    return fail(ErrorCode::invalid_argument, "imsi_prefix2: 5 to 14 digits");
  }
  for (const std::string* other : {&o.pcid_prefix, &o.imsi_prefix}) {
    if (other->starts_with(o.imsi_prefix2) || o.imsi_prefix2.starts_with(*other)) {
      return fail(ErrorCode::invalid_argument,
                  "imsi_prefix2: must not overlap pcid_prefix or imsi_prefix (the VNO routes them "
                  "apart)");
    }
  }
  log::Level level;
  if (!log::parse_level(o.log_level, level)) {
    return fail(ErrorCode::invalid_argument, "log_level: must be debug, info, warn or error");
  }
  return {};
}

// One attempt on one set of ports: the files, then each service from its file.
Result<void> start_services(SystemDescription::Parts& p, System::State& s, const Wiring& w) {
  for (const Instance& in : kStartOrder) {
    const ServeRole role = in.role;
    const std::string name(in.name);
    const std::string config = p.options.dir + "/" + name + ".json";
    if (auto r = write_file_atomic(config, file_of(in, p.options, w).dump(2) + "\n", 0600); !r) {
      return r;
    }
    auto served = ServedRole::start(role, config, {}, s.clock);
    if (!served) return std::unexpected(served.error());
    p.services.push_back({name, (*served)->url(), config});
    s.names.push_back(name);
    if (role == ServeRole::vno) p.gateway = (*served)->gateway();
    if (role == ServeRole::ro) s.eap_socket = (*served)->eap_socket();
    s.served.push_back(std::move(*served));
    if (role == ServeRole::ro && w.hostapd) {
      auto hostapd = start_hostapd(p.options, w);
      if (!hostapd) return std::unexpected(hostapd.error());
      s.hostapd.emplace(std::move(*hostapd));
    }
  }
  return {};
}

// The RO's EAP gateway at dir/kEapSocket, unless that path does not fit a Unix socket address:
// then the system runs without it (warned), since F3 is optional and everything else works.
bool eap_socket_fits(const std::string& dir) {
  const std::string path = fmt::format("{}/{}", dir, kEapSocket);
  if (path.size() <= ro::kMaxHlrSocketPath) return true;
  log::warn("up",
            "{}: {} bytes, over the {} of a Unix socket path: no EAP gateway (use a shorter --dir)",
            path, path.size(), ro::kMaxHlrSocketPath);
  return false;
}

}  // namespace

Result<std::unique_ptr<System>> start_system(const SystemOptions& options) {
  if (auto r = check_options(options); !r) return std::unexpected(r.error());
  SystemDescription::Parts parts;
  parts.options = options;
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) return fail(ErrorCode::io_error, fmt::format("{}: {}", options.dir, ec.message()));
  parts.options.dir = absolute_dir(options.dir);
  auto pki = ensure_pki(parts.options.dir);
  if (!pki) return std::unexpected(pki.error());
  parts.pki = *pki;

  Wiring w;
  w.eap_gateway = eap_socket_fits(parts.options.dir);
  parts.non3gpp.eap_unavailable = eap_unavailable(parts.options, w.eap_gateway);
  w.hostapd = parts.non3gpp.eap_unavailable.empty();
  if (w.hostapd) {
    if (auto r = ensure_radius_secret(parts.options.dir); !r) return std::unexpected(r.error());
    if (auto r = write_hostapd_files(parts.options.dir); !r) return std::unexpected(r.error());
  } else {
    log::warn("up", "no EAP access (3GPP and direct access only): {}",
              parts.non3gpp.eap_unavailable);
  }
  if (!options.db_url.empty()) {
    auto urls = postgres_urls(options.db_url);
    if (!urls) return std::unexpected(urls.error());
    w.db = std::move(*urls);
  }
  if (auto r = make_clients(parts); !r) return std::unexpected(r.error());
  auto supplier = make_client(parts.trust, parts.pki + "/tls/supplier-client");
  if (!supplier) return std::unexpected(supplier.error());

  // A port taken by someone else between choosing and binding: choose again.
  auto state = std::make_unique<System::State>();
  const bool fixed = options.ports.supplier && options.ports.ro && options.ports.vno &&
                     options.ports.sho && options.ports.sho2 && options.ports.pva &&
                     (!w.hostapd || (options.ports.radius && options.ports.aaa));
  Result<void> started;
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    w.ports = choose_ports(options.ports, w.hostapd);
    started = start_services(parts, *state, w);
    if (started || fixed || started.error().code != ErrorCode::io_error) break;
    state->stop();
    parts.services.clear();
  }
  if (!started) return std::unexpected(started.error());
  parts.non3gpp.drf_url = url_of(w.ports.ro);
  if (w.hostapd) {
    parts.non3gpp.radius = listen_of(w.ports.radius);
    parts.non3gpp.radius_secret_file = parts.options.dir + "/" + std::string(kRadiusSecret);
    parts.non3gpp.hostapd_log = hostapd_path(parts.options.dir, "hostapd.log");
  }
  const std::string pva_url = state->served.front()->url();  // kStartOrder: the PVA first
  if (auto r = register_references(parts.options, parts.pki, pva_url, **supplier); !r) {
    return std::unexpected(r.error());
  }
  return std::make_unique<System>(std::move(parts), std::move(state));
}

// ---- A running system, from its directory (describe_system) ---------------------------------

namespace {

std::string url_of(const ListenAddress& l) {
  return l.host.find(':') == std::string::npos ? fmt::format("https://{}:{}", l.host, l.port)
                                               : fmt::format("https://[{}]:{}", l.host, l.port);
}

// A role's config file, read as `mcim serve` reads it; its service joins p.services.
template <typename Config>
Result<Config> load_service(Result<Config> (*load)(const std::string&), std::string_view role,
                            SystemDescription::Parts& p) {
  const std::string name(role);
  const std::string config = p.options.dir + "/" + name + ".json";
  auto c = load(config);
  if (!c) return std::unexpected(c.error());
  p.services.push_back({name, url_of(c->common.listen), config});
  return c;
}

// EAP access as vno.json's non3gpp describes it, if hostapd answers behind the relay: `mcim up`
// writes non3gpp only when it runs hostapd, which binds the relay's AAA port on every address.
void read_non3gpp(const VnoServeConfig& vno, Non3gppAccess& out) {
  if (!vno.service.non3gpp) {
    out.eap_unavailable = "vno.json has no non3gpp: `mcim up` runs no hostapd (its table says why)";
    return;
  }
  const roles::RadiusRelayOptions& r = *vno.service.non3gpp;
  if (!udp_port_taken(r.aaa_port)) {
    out.eap_unavailable = fmt::format(
        "nothing listens on hostapd's RADIUS port {}: hostapd is not running", r.aaa_port);
    return;
  }
  out.radius = fmt::format("{}:{}", r.listen_host, r.listen_port);
  out.radius_secret_file = vno.radius_secret_file;
}

// The six files in start order (kStartOrder), and what the options of `mcim up` were as far as
// its clients care: the prefixes, the model, the kind of database, the non-3GPP access.
Result<void> read_configs(SystemDescription::Parts& p) {
  auto pva = load_service(&load_pva_config, "pva", p);
  if (!pva) return std::unexpected(pva.error());
  auto ro = load_service(&load_ro_config, "ro", p);
  if (!ro) return std::unexpected(ro.error());
  // The RO's own URL (with its schema): only its kind is ever shown.
  if (database_kind(ro->db_url) == "postgresql") p.options.db_url = ro->db_url;
  if (ro->service.direct_access) {
    p.non3gpp.drf_url =
        ro->service.direct_drf_url.empty() ? p.services.back().url : ro->service.direct_drf_url;
  }
  auto sho = load_service(&load_sho_config, "sho", p);
  if (!sho) return std::unexpected(sho.error());
  p.options.imsi_prefix = sho->service.imsi_prefix;
  if (!sho->service.ros.empty()) p.options.pcid_prefix = sho->service.ros.front().pcid_prefix;
  auto sho2 = load_service(&load_sho_config, "sho2", p);
  if (!sho2) return std::unexpected(sho2.error());
  p.options.imsi_prefix2 = sho2->service.imsi_prefix;
  auto vno = load_service(&load_vno_config, "vno", p);
  if (!vno) return std::unexpected(vno.error());
  const net::ConnectProxyOptions& gw = vno->service.gateway;
  if (gw.port != 0) p.gateway = fmt::format("{}:{}", gw.host, gw.port);  // else known to up only
  read_non3gpp(*vno, p.non3gpp);
  auto supplier = load_service(&load_supplier_config, "supplier", p);
  if (!supplier) return std::unexpected(supplier.error());
  p.options.model = supplier->service.device_template.model;
  return {};
}

// Every service answers GET /healthz with 200.
Result<void> check_answers(const SystemDescription::Parts& p) {
  for (const auto& s : p.services) {
    auto health = p.plain->get(s.url + "/healthz");
    if (!health) {
      return fail(
          ErrorCode::io_error,
          fmt::format("{}: the {} at {} does not answer (is `mcim up --dir {}` running?): {}",
                      p.options.dir, s.role, s.url, p.options.dir, health.error().message));
    }
    if (health->status != 200) {
      return fail(ErrorCode::io_error,
                  fmt::format("{}: the {} at {} is not healthy: {} {}", p.options.dir, s.role,
                              s.url, health->status, health->body.substr(0, 200)));
    }
  }
  return {};
}

// The devices run in this process: they must measure what `mcim up` registered at the PVA, or
// every attestation would fail (a binary rebuilt since `mcim up` started, say).
Result<void> check_references(const SystemDescription::Parts& p) {
  const std::string path = p.options.dir + "/" + std::string(kReferencesFile);
  auto text = read_text_file(path);
  if (!text) return with_prefix(text.error(), path);
  auto registered = net::parse_json_strict(*text, path);
  if (!registered) return std::unexpected(registered.error());
  auto mine = golden_measurements(p.options, p.pki);
  if (!mine) return std::unexpected(mine.error());
  const Json here = references_json(*mine);
  if (*registered == here) return {};
  return fail(ErrorCode::conflicting_arguments,
              fmt::format("{}: the PVA's references were made for another binary or PKI than this "
                          "process's {} (tre.binary {} here, {} there; rebuilt since `mcim up` "
                          "started?): restart `mcim up --dir {}` with this mcim",
                          path, p.options.device_binary, here.value("tre.binary", ""),
                          registered->value("tre.binary", "?"), p.options.dir));
}

}  // namespace

Result<std::unique_ptr<SystemDescription>> describe_system(const std::string& dir) {
  if (dir.empty()) return fail(ErrorCode::missing_argument, "--system: required");
  SystemDescription::Parts p;
  p.options.dir = absolute_dir(dir);
  p.pki = p.options.dir + "/pki";
  const std::string_view needed[] = {"pki/operators-ca/ca.pem", "pki/owner.token", "pva.json",
                                     kReferencesFile};
  for (std::string_view f : needed) {
    std::error_code ec;
    if (!fs::exists(fmt::format("{}/{}", p.options.dir, f), ec)) {
      return fail(ErrorCode::not_found,
                  fmt::format("{}: no system of `mcim up` here ({} is missing)", dir, f));
    }
  }
  if (auto r = read_configs(p); !r) return std::unexpected(r.error());
  if (auto r = make_clients(p); !r) return std::unexpected(r.error());
  if (auto r = check_answers(p); !r) return std::unexpected(r.error());
  if (auto r = check_references(p); !r) return std::unexpected(r.error());
  return std::make_unique<SystemDescription>(std::move(p));
}

// ---- Options file and the command ------------------------------------------------------------

Result<void> load_system_options(const std::string& path, SystemOptions& o) {
  using net::JsonSchema;
  using net::optional;
  static const JsonSchema kPort = JsonSchema::integer(0, 65535);
  static const JsonSchema kSchema = JsonSchema::object({
      optional("dir", JsonSchema::string(4096)),
      optional("db", JsonSchema::string(4096)),
      optional("ports", JsonSchema::object({
                            optional("supplier", kPort),
                            optional("ro", kPort),
                            optional("vno", kPort),
                            optional("gateway", kPort),
                            optional("sho", kPort),
                            optional("sho2", kPort),
                            optional("pva", kPort),
                            optional("radius", kPort),
                            optional("aaa", kPort),
                        })),
      optional("device_binary", JsonSchema::string(4096)),
      optional("model", JsonSchema::string(64)),
      optional("pcid_prefix", JsonSchema::string(14)),
      optional("imsi_prefix", JsonSchema::string(14)),
      optional("imsi_prefix2", JsonSchema::string(14)),
      optional("log_level", JsonSchema::enumeration({"debug", "info", "warn", "error"})),
      optional("hostapd", JsonSchema::string(4096)),
  });
  auto text = read_text_file(path);
  if (!text) return with_prefix(text.error(), path);
  auto j = net::parse_json_strict(*text, path);
  if (!j) return std::unexpected(j.error());
  if (auto v = kSchema.validate(*j, path); !v) {
    const std::string_view m = v.error().message;
    return fail(v.error().code, m.starts_with("field ") ? fmt::format("{}: {}", path, m.substr(6))
                                                        : std::string(m));
  }
  const auto parent = fs::path(path).parent_path();
  auto resolve = [&](const std::string& p) {
    return p.starts_with("/") || parent.empty() ? p : (parent / p).string();
  };
  if (j->contains("dir")) o.dir = resolve((*j)["dir"].get<std::string>());
  o.db_url = j->value("db", o.db_url);
  if (j->contains("ports")) {
    const Json& p = (*j)["ports"];
    o.ports.supplier = p.value("supplier", o.ports.supplier);
    o.ports.ro = p.value("ro", o.ports.ro);
    o.ports.vno = p.value("vno", o.ports.vno);
    o.ports.gateway = p.value("gateway", o.ports.gateway);
    o.ports.sho = p.value("sho", o.ports.sho);
    o.ports.sho2 = p.value("sho2", o.ports.sho2);
    o.ports.pva = p.value("pva", o.ports.pva);
    o.ports.radius = p.value("radius", o.ports.radius);
    o.ports.aaa = p.value("aaa", o.ports.aaa);
  }
  if (j->contains("hostapd")) o.hostapd = resolve((*j)["hostapd"].get<std::string>());
  if (j->contains("device_binary")) {
    o.device_binary = resolve((*j)["device_binary"].get<std::string>());
  }
  o.model = j->value("model", o.model);
  o.pcid_prefix = j->value("pcid_prefix", o.pcid_prefix);
  o.imsi_prefix = j->value("imsi_prefix", o.imsi_prefix);
  o.imsi_prefix2 = j->value("imsi_prefix2", o.imsi_prefix2);
  o.log_level = j->value("log_level", o.log_level);
  return {};
}

namespace {

struct UpArgs {
  std::string dir, db, config, hostapd;
};

// Where devices on a non-3GPP access go (F3): the DRF directly, or EAP through the VNO's relay.
void print_non3gpp(std::ostream& out, const Non3gppAccess& n) {
  out << fmt::format("{:<9} {}\n", "direct", n.drf_url.empty() ? "none" : n.drf_url);
  if (n.radius.empty()) {
    out << fmt::format("{:<9} none (no EAP access: {})\n", "radius", n.eap_unavailable);
    return;
  }
  out << fmt::format("{:<9} {} secret file {} (the VNO's relay to hostapd, log {})\n", "radius",
                     n.radius, n.radius_secret_file, n.hostapd_log);
}

void print_table(std::ostream& out, const System& system) {
  out << fmt::format("{:<9} {:<24} {}\n", "role", "url", "config");
  for (const auto& s : system.services()) {
    out << fmt::format("{:<9} {:<24} {}\n", s.role, s.url, s.config);
  }
  out << fmt::format("{:<9} {}\n", "gateway", system.gateway());
  out << fmt::format("{:<9} {}\n", "eap",
                     system.eap_socket().empty() ? "none (the directory's path is too long for a "
                                                   "Unix socket)"
                                                 : system.eap_socket());
  print_non3gpp(out, system.non3gpp());
  out << "owner token file: " << system.owner_token_file() << "\n";
  out << "each service alone: mcim serve <role> --config <config>\n";
  out.flush();
}

Result<Fields> run_up(const UpArgs& a, std::ostream& out) {
  SystemOptions o;
  o.dir = "mcim-up";
  if (!a.config.empty()) {
    if (auto r = load_system_options(a.config, o); !r) return std::unexpected(r.error());
  }
  if (!a.dir.empty()) o.dir = a.dir;
  if (!a.db.empty()) o.db_url = a.db;
  if (!a.hostapd.empty()) o.hostapd = a.hostapd;
  if (auto r = check_options(o); !r) return std::unexpected(r.error());
  log::Level level;
  log::parse_level(o.log_level, level);
  log::set_level(level);

  const BlockedSignals signals;  // before any service thread starts
  auto system = start_system(o);
  if (!system) return std::unexpected(system.error());
  print_table(out, **system);
  const int sig = signals.wait();
  log::info("up", "{} received, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
  const std::string dir = (*system)->options().dir;
  system->reset();
  Fields f;
  f.add("dir", dir).add("stopped_by", sig == SIGINT ? "SIGINT" : "SIGTERM");
  return f;
}

}  // namespace

void register_up(CLI::App& app, Result<Fields>* result, std::ostream& out) {
  auto args = std::make_shared<UpArgs>();
  auto* up = app.add_subcommand(
      "up",
      "start the whole system (supplier, RO, VNO, SHO, PVA, and hostapd for EAP access) on "
      "loopback until SIGINT/SIGTERM");
  up->add_option("--dir", args->dir, "the system's directory: PKI, config files, databases");
  up->add_option("--db", args->db, "postgresql://... (one schema per role) instead of SQLite");
  up->add_option("--config", args->config, "a JSON file of options (dir, db, ports, ...)");
  up->add_option("--hostapd", args->hostapd,
                 "hostapd for EAP access (default /usr/sbin/hostapd; without it: no EAP access)");
  up->callback([args, result, &out] { *result = run_up(*args, out); });
}

}  // namespace mcim::cli
