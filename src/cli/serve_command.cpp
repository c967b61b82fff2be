// `mcim serve supplier|ro|vno`: loads the service's config file (cli/serve_config.h), starts
// the service behind an HttpServer, announces the address in the log and the ready file, and
// serves until SIGINT or SIGTERM. The signals are blocked before any thread starts, so every
// thread inherits the mask and the main thread alone takes them with sigwait: no handler runs
// in a signal context, and the stop is an ordinary graceful HttpServer::stop.
#include "cli/serve_command.h"

#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/serve_config.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/log.h"
#include "net/http_server.h"
#include "store/store.h"

namespace mcim::cli {
namespace {

enum class Role { supplier, ro, vno };

std::string_view role_name(Role r) {
  switch (r) {
    case Role::supplier: return "supplier";
    case Role::ro: return "ro";
    case Role::vno: return "vno";
  }
  return "?";
}

struct ServeArgs {
  std::string config, db, listen, ready_file, log_level;
};

// SIGINT and SIGTERM blocked for the life of the command (restored after, for in-process
// callers); the threads the services start inherit the mask.
class BlockedSignals {
 public:
  BlockedSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~BlockedSignals() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  BlockedSignals(const BlockedSignals&) = delete;
  BlockedSignals& operator=(const BlockedSignals&) = delete;

  int wait() const {
    int sig = 0;
    while (sigwait(&set_, &sig) != 0) {
    }
    return sig;
  }

 private:
  sigset_t set_{}, old_{};
};

// What differs between the roles once loaded: the running service behind one handler.
struct Running {
  std::unique_ptr<store::Database> db;  // ro only; outlives the service
  std::unique_ptr<ro::RoService> ro;
  std::unique_ptr<roles::VnoService> vno;
  std::unique_ptr<supplier::SupplierService> supplier;
  std::shared_ptr<const pki::TrustAnchors> keep;  // what a config's raw pointers point into
  const ServeCommon* common = nullptr;
  net::HttpHandler handler;
  std::shared_ptr<net::Metrics> metrics;
  std::size_t body_limit = net::HttpServerOptions{}.body_limit;
  std::string gateway;  // vno: the gateway's address
};

// The overrides of the command line, checked before the file is read.
struct Overrides {
  std::optional<ListenAddress> listen;
  std::optional<log::Level> level;
};

Result<Overrides> check_overrides(const ServeArgs& a) {
  Overrides o;
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
  }
  return o;
}

void apply(ServeCommon& common, const Overrides& o) {
  if (o.listen) common.listen = *o.listen;
  if (o.level) common.log_level = *o.level;
  log::set_level(common.log_level);
}

Result<void> start_ro(const ServeArgs& a, const Overrides& o, const Clock& clock,
                      RoServeConfig& config, Running& run) {
  apply(config.common, o);
  if (!a.db.empty()) config.db_url = a.db;
  // The URL may carry a password: only its kind is logged or repeated.
  auto db = store::open_database(config.db_url);
  if (!db) return with_prefix(db.error(), a.db.empty() ? config.common.path + ": db" : "--db");
  run.db = std::move(*db);
  log::info("ro", "database: {}", database_kind(config.db_url));
  auto service = ro::RoService::create(*run.db, std::move(config.service), clock);
  if (!service) return with_prefix(service.error(), config.common.path);
  run.ro = std::move(*service);
  run.handler = run.ro->handler();
  run.metrics = run.ro->router().metrics_ptr();
  run.body_limit = run.ro->body_limit();
  return {};
}

Result<void> start_vno(const Overrides& o, const Clock& clock, VnoServeConfig& config,
                       Running& run) {
  apply(config.common, o);
  auto service = roles::VnoService::create(std::move(config.service), clock);
  if (!service) return with_prefix(service.error(), config.common.path);
  run.vno = std::move(*service);
  run.handler = run.vno->handler();
  run.metrics = run.vno->router().metrics_ptr();
  run.gateway = run.vno->gateway_address();
  return {};
}

Result<void> start_supplier(const Overrides& o, const Clock& clock, SupplierServeConfig& config,
                            Running& run) {
  apply(config.common, o);
  run.keep = config.operator_roots;
  auto service = supplier::SupplierService::create(std::move(config.service), clock);
  if (!service) return with_prefix(service.error(), config.common.path);
  run.supplier = std::move(*service);
  run.handler = run.supplier->handler();
  run.metrics = run.supplier->router().metrics_ptr();
  return {};
}

Result<Fields> run_serve(Role role, const ServeArgs& a) {
  if (auto r = require(a.config, "--config"); !r) return std::unexpected(r.error());
  const BlockedSignals signals;
  auto overrides = check_overrides(a);
  if (!overrides) return std::unexpected(overrides.error());
  // A ready file left by an earlier run must not announce this one before it listens.
  if (!a.ready_file.empty()) std::remove(a.ready_file.c_str());

  const std::string_view name = role_name(role);
  SystemClock clock;
  Running run;
  // The loaded configs live here: a config may hold what the service points into.
  std::optional<RoServeConfig> ro_config;
  std::optional<VnoServeConfig> vno_config;
  std::optional<SupplierServeConfig> supplier_config;
  Result<void> started;
  switch (role) {
    case Role::ro: {
      auto c = load_ro_config(a.config);
      if (!c) return std::unexpected(c.error());
      ro_config.emplace(std::move(*c));
      run.common = &ro_config->common;
      started = start_ro(a, *overrides, clock, *ro_config, run);
      break;
    }
    case Role::vno: {
      auto c = load_vno_config(a.config);
      if (!c) return std::unexpected(c.error());
      vno_config.emplace(std::move(*c));
      run.common = &vno_config->common;
      started = start_vno(*overrides, clock, *vno_config, run);
      break;
    }
    case Role::supplier: {
      auto c = load_supplier_config(a.config);
      if (!c) return std::unexpected(c.error());
      supplier_config.emplace(std::move(*c));
      run.common = &supplier_config->common;
      started = start_supplier(*overrides, clock, *supplier_config, run);
      break;
    }
  }
  if (!started) return std::unexpected(started.error());

  net::HttpServerOptions options = run.common->server_options(run.body_limit);
  options.metrics = run.metrics;
  auto server = net::HttpServer::start(options, run.handler);
  if (!server) return with_prefix(server.error(), a.listen.empty() ? "listen" : "--listen");
  log::info(name, "listening on {}", (*server)->url());
  if (!run.gateway.empty()) log::info(name, "gateway listening on {}", run.gateway);

  if (!a.ready_file.empty()) {
    nlohmann::json ready = {{"url", (*server)->url()}};
    if (!run.gateway.empty()) ready["gateway"] = run.gateway;
    if (auto w = write_file_atomic(a.ready_file, ready.dump() + "\n"); !w) {
      (*server)->stop();
      return with_prefix(w.error(), "--ready-file");
    }
  }

  const int sig = signals.wait();
  log::info(name, "{} received, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
  const std::string url = (*server)->url();
  (*server)->stop();
  server->reset();
  // The service before its database, then the files that announced it.
  run.ro.reset();
  run.vno.reset();
  run.supplier.reset();
  run.db.reset();
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
    Role role;
    const char* help;
  };
  for (const Sub& s : {Sub{Role::supplier, "the supplier: batch orders, CCIF, handover to the ICF"},
                       Sub{Role::ro, "the Registration Operator: ICF, DRF and DPF"},
                       Sub{Role::vno, "the visited network: attach endpoints and gateway"}}) {
    auto args = std::make_shared<ServeArgs>();
    auto* sub = serve->add_subcommand(std::string(role_name(s.role)), s.help);
    sub->add_option("--config", args->config, "the service's JSON config file");
    if (s.role == Role::ro) {
      sub->add_option("--db", args->db,
                      "database URL instead of the file's db (sqlite:PATH, postgresql://...)");
    }
    sub->add_option("--listen", args->listen, "IP:PORT instead of the file's listen (0: any port)");
    sub->add_option("--ready-file", args->ready_file,
                    "written (atomically) with {\"url\":...} once listening, removed at stop");
    sub->add_option("--log-level", args->log_level, "debug, info, warn or error");
    const Role role = s.role;
    sub->callback([args, result, role] { *result = run_serve(role, *args); });
  }
}

}  // namespace mcim::cli
