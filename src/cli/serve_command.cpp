// `mcim serve supplier|ro|vno|sho|pva`: loads the service's config file (cli/serve_config.h),
// starts the service behind an HttpServer, announces the address in the log and the ready file,
// and serves until SIGINT or SIGTERM. The signals are blocked before any thread starts, so every
// thread inherits the mask and the main thread alone takes them with sigwait: no handler runs in
// a signal context, and the stop is an ordinary graceful HttpServer::stop.
#include "cli/serve_command.h"

#include <fmt/format.h>
#include <pthread.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>

#include "common/file.h"
#include "common/hex.h"
#include "net/http_server.h"
#include "store/store.h"

namespace mcim::cli {

std::string_view role_name(ServeRole r) {
  switch (r) {
    case ServeRole::supplier: return "supplier";
    case ServeRole::ro: return "ro";
    case ServeRole::vno: return "vno";
    case ServeRole::sho: return "sho";
    case ServeRole::pva: return "pva";
  }
  return "?";
}

BlockedSignals::BlockedSignals() {
  sigemptyset(&set_);
  sigaddset(&set_, SIGINT);
  sigaddset(&set_, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set_, &old_);
}

BlockedSignals::~BlockedSignals() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

int BlockedSignals::wait() const {
  int sig = 0;
  while (sigwait(&set_, &sig) != 0) {
  }
  return sig;
}

// What differs between the roles once loaded: the running service behind one handler. reset()
// stops the entry points (the server, the RO's EAP gateway), then the service, then closes the
// database.
struct ServedRole::State {
  ServeRole role = ServeRole::ro;
  // The loaded config lives as long as the service: it may hold what the service points into.
  std::variant<std::monostate, RoServeConfig, VnoServeConfig, SupplierServeConfig, ShoServeConfig,
               PvaServeConfig>
      config;
  std::unique_ptr<store::Database> db;  // ro, sho, pva; outlives the service
  std::unique_ptr<ro::RoService> ro;
  std::unique_ptr<sho::ShoService> sho;
  std::unique_ptr<pva::PvaService> pva;
  std::unique_ptr<roles::VnoService> vno;
  std::unique_ptr<supplier::SupplierService> supplier;
  std::unique_ptr<ro::HlrGateway> eap_gateway;  // ro with eap_gateway: over db, like the service
  std::string eap_socket;                       // its path while it serves
  const ServeCommon* common = nullptr;
  net::HttpHandler handler;
  std::shared_ptr<net::Metrics> metrics;
  std::size_t body_limit = net::HttpServerOptions{}.body_limit;
  std::string gateway;  // vno: the gateway's address
  std::unique_ptr<net::HttpServer> server;

  void stop_serving() {
    if (server) server->stop();
    eap_gateway.reset();
    eap_socket.clear();
  }

  void reset() {
    stop_serving();
    server.reset();
    ro.reset();
    vno.reset();
    supplier.reset();
    sho.reset();
    pva.reset();
    db.reset();
  }
};

namespace {

using State = ServedRole::State;

struct ServeArgs {
  std::string config, db, listen, ready_file, log_level;
};

Result<ServeOverrides> check_overrides(const ServeArgs& a) {
  ServeOverrides o;
  if (!a.listen.empty()) {
    auto l = parse_listen(a.listen, "--listen");
    if (!l) return std::unexpected(l.error());
    o.listen = *l;
  }
  if (!a.log_level.empty()) {
    log::Level level;
    if (!log::parse_level(a.log_level, level)) {
      return fail(ErrorCode::invalid_argument, "--log-level: must be debug, info, warn or error");
    }
    o.level = level;
  }
  if (!a.db.empty()) {
    if (auto r = check_database_url(a.db, "--db"); !r) return std::unexpected(r.error());
    o.db = a.db;
  }
  return o;
}

void apply(ServeCommon& common, const ServeOverrides& o) {
  if (o.listen) common.listen = *o.listen;
  if (o.level) common.log_level = *o.level;
  log::set_level(common.log_level);
}

// The database of the file, or of --db.
Result<void> open_db(const ServeOverrides& o, std::string_view role, const ServeCommon& common,
                     std::string& url, State& run) {
  if (!o.db.empty()) url = o.db;
  // The URL may carry a password: only its kind is logged or repeated.
  auto db = store::open_database(url);
  if (!db) return with_prefix(db.error(), o.db.empty() ? common.path + ": db" : "--db");
  run.db = std::move(*db);
  log::info(role, "database: {}", database_kind(url));
  return {};
}

// hostapd's eap_sim_db socket over the RO's database (docs/eap.md), once the service has made
// the database ready. HlrGateway::start logs the socket's path.
Result<void> start_eap_gateway(const Clock& clock, const RoServeConfig& config, State& run) {
  auto gateway = ro::HlrGateway::start(*run.db, clock, *config.eap_gateway);
  if (!gateway) return with_prefix(gateway.error(), config.common.path + ": eap_gateway.socket");
  run.eap_gateway = std::move(*gateway);
  run.eap_socket = run.eap_gateway->socket_path();
  return {};
}

Result<void> start_ro(const ServeOverrides& o, const Clock& clock, RoServeConfig& config,
                      State& run) {
  apply(config.common, o);
  if (auto r = open_db(o, "ro", config.common, config.db_url, run); !r) return r;
  if (config.eap_gateway && config.eap_gateway->icf.amf != config.service.icf.amf) {
    log::warn("ro", "icf.amf {} has no separation bit: the EAP gateway's vectors carry {}",
              to_hex(config.service.icf.amf), to_hex(config.eap_gateway->icf.amf));
  }
  auto service = ro::RoService::create(*run.db, std::move(config.service), clock);
  if (!service) return with_prefix(service.error(), config.common.path);
  run.ro = std::move(*service);
  run.handler = run.ro->handler();
  run.metrics = run.ro->router().metrics_ptr();
  run.body_limit = run.ro->body_limit();
  if (config.eap_gateway) return start_eap_gateway(clock, config, run);
  return {};
}

Result<void> start_vno(const ServeOverrides& o, const Clock& clock, VnoServeConfig& config,
                       State& run) {
  apply(config.common, o);
  auto service = roles::VnoService::create(std::move(config.service), clock);
  if (!service) return with_prefix(service.error(), config.common.path);
  run.vno = std::move(*service);
  run.handler = run.vno->handler();
  run.metrics = run.vno->router().metrics_ptr();
  run.gateway = run.vno->gateway_address();
  return {};
}

Result<void> start_supplier(const ServeOverrides& o, const Clock& clock,
                            SupplierServeConfig& config, State& run) {
  apply(config.common, o);
  auto service = supplier::SupplierService::create(std::move(config.service), clock);
  if (!service) return with_prefix(service.error(), config.common.path);
  run.supplier = std::move(*service);
  run.handler = run.supplier->handler();
  run.metrics = run.supplier->router().metrics_ptr();
  return {};
}

Result<void> start_sho(const ServeOverrides& o, const Clock& clock, ShoServeConfig& config,
                       State& run) {
  apply(config.common, o);
  if (auto r = open_db(o, "sho", config.common, config.db_url, run); !r) return r;
  auto service = sho::ShoService::create(*run.db, std::move(config.service), clock);
  if (!service) return with_prefix(service.error(), config.common.path);
  run.sho = std::move(*service);
  run.handler = run.sho->handler();
  run.metrics = run.sho->router().metrics_ptr();
  return {};
}

Result<void> start_pva(const ServeOverrides& o, const Clock& clock, PvaServeConfig& config,
                       State& run) {
  apply(config.common, o);
  if (auto r = open_db(o, "pva", config.common, config.db_url, run); !r) return r;
  auto service = pva::PvaService::create(*run.db, std::move(config.service), clock);
  if (!service) return with_prefix(service.error(), config.common.path);
  run.pva = std::move(*service);
  run.handler = run.pva->handler();
  run.metrics = run.pva->router().metrics_ptr();
  run.body_limit = run.pva->body_limit();
  return {};
}

// Loads the role's file into run.config and starts its service (not yet its server).
template <typename Config>
Result<void> load_and_start(Result<Config> (*load)(const std::string&),
                            Result<void> (*start)(const ServeOverrides&, const Clock&, Config&,
                                                  State&),
                            const std::string& path, const ServeOverrides& o, const Clock& clock,
                            State& run) {
  auto c = load(path);
  if (!c) return std::unexpected(c.error());
  Config& config = run.config.template emplace<Config>(std::move(*c));
  run.common = &config.common;
  return start(o, clock, config, run);
}

Result<void> start_service(const std::string& path, const ServeOverrides& o, const Clock& clock,
                           State& run) {
  switch (run.role) {
    case ServeRole::ro: return load_and_start(&load_ro_config, &start_ro, path, o, clock, run);
    case ServeRole::vno: return load_and_start(&load_vno_config, &start_vno, path, o, clock, run);
    case ServeRole::supplier:
      return load_and_start(&load_supplier_config, &start_supplier, path, o, clock, run);
    case ServeRole::sho: return load_and_start(&load_sho_config, &start_sho, path, o, clock, run);
    case ServeRole::pva: return load_and_start(&load_pva_config, &start_pva, path, o, clock, run);
  }
  return fail(ErrorCode::internal, "unknown role");
}

}  // namespace

ServedRole::ServedRole(std::unique_ptr<State> state) : state_(std::move(state)) {}
ServedRole::~ServedRole() { state_->reset(); }

Result<std::unique_ptr<ServedRole>> ServedRole::start(ServeRole role, const std::string& config,
                                                      const ServeOverrides& overrides,
                                                      const Clock& clock) {
  auto run = std::make_unique<State>();
  run->role = role;
  if (auto r = start_service(config, overrides, clock, *run); !r) {
    run->reset();
    return std::unexpected(r.error());
  }
  net::HttpServerOptions options = run->common->server_options(run->body_limit);
  options.metrics = run->metrics;
  options.thread_name = fmt::format("{}-http", role_name(role));  // "supplier-http-a": 15 bytes
  auto server = net::HttpServer::start(options, run->handler);
  if (!server) {
    run->reset();
    return with_prefix(server.error(), overrides.listen ? "--listen" : config + ": listen");
  }
  run->server = std::move(*server);
  log::info(role_name(role), "listening on {}", run->server->url());  // the VNO logs its gateway
  return std::unique_ptr<ServedRole>(new ServedRole(std::move(run)));
}

ServeRole ServedRole::role() const { return state_->role; }
std::string ServedRole::url() const { return state_->server ? state_->server->url() : ""; }
std::string ServedRole::address() const { return state_->server ? state_->server->address() : ""; }
const std::string& ServedRole::gateway() const { return state_->gateway; }
const std::string& ServedRole::eap_socket() const { return state_->eap_socket; }
store::Database* ServedRole::database() const { return state_->db.get(); }
ro::RoService* ServedRole::ro_service() const { return state_->ro.get(); }
void ServedRole::stop_serving() { state_->stop_serving(); }
void ServedRole::stop() { state_->reset(); }

namespace {

Result<Fields> run_serve(ServeRole role, const ServeArgs& a) {
  if (auto r = require(a.config, "--config"); !r) return std::unexpected(r.error());
  const BlockedSignals signals;
  auto overrides = check_overrides(a);
  if (!overrides) return std::unexpected(overrides.error());
  // A ready file left by an earlier run must not announce this one before it listens.
  if (!a.ready_file.empty()) std::remove(a.ready_file.c_str());

  const std::string_view name = role_name(role);
  SystemClock clock;
  auto served = ServedRole::start(role, a.config, *overrides, clock);
  if (!served) return std::unexpected(served.error());
  const std::string url = (*served)->url();
  const std::string gateway = (*served)->gateway();

  if (!a.ready_file.empty()) {
    nlohmann::json ready = {{"url", url}};
    if (!gateway.empty()) ready["gateway"] = gateway;
    if (auto w = write_file_atomic(a.ready_file, ready.dump() + "\n"); !w) {
      return with_prefix(w.error(), "--ready-file");
    }
  }

  const int sig = signals.wait();
  log::info(name, "{} received, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
  served->reset();
  if (!a.ready_file.empty()) std::remove(a.ready_file.c_str());
  log::info(name, "stopped");
  Fields f;
  f.add("service", std::string(name))
      .add("url", url)
      .add("stopped_by", sig == SIGINT ? "SIGINT" : "SIGTERM");
  return f;
}

}  // namespace

void register_serve(CLI::App& app, Result<Fields>* result) {
  auto* serve = app.add_subcommand(
      "serve", "run one stakeholder's HTTPS service until SIGINT/SIGTERM (docs/operations.md)");
  serve->require_subcommand(1);
  struct Sub {
    ServeRole role;
    const char* help;
  };
  for (const Sub& s :
       {Sub{ServeRole::supplier, "the supplier: batch orders, CCIF, handover to the ICF"},
        Sub{ServeRole::ro, "the Registration Operator: ICF, DRF and DPF"},
        Sub{ServeRole::vno, "the visited network: attach endpoints and gateway"},
        Sub{ServeRole::sho, "the Selected Home Operator: subscribers, MCIMs, AuC"},
        Sub{ServeRole::pva, "the Platform Validation Authority: attestation, OCSP"}}) {
    auto args = std::make_shared<ServeArgs>();
    auto* sub = serve->add_subcommand(std::string(role_name(s.role)), s.help);
    sub->add_option("--config", args->config, "the service's JSON config file");
    if (s.role == ServeRole::ro || s.role == ServeRole::sho || s.role == ServeRole::pva) {
      sub->add_option("--db", args->db,
                      "database URL instead of the file's db (sqlite:PATH, postgresql://...)");
    }
    sub->add_option("--listen", args->listen, "IP:PORT instead of the file's listen (0: any port)");
    sub->add_option("--ready-file", args->ready_file,
                    "written (atomically) with {\"url\":...} once listening, removed at stop");
    sub->add_option("--log-level", args->log_level, "debug, info, warn or error");
    const ServeRole role = s.role;
    sub->callback([args, result, role] { *result = run_serve(role, *args); });
  }
}

}  // namespace mcim::cli
