// `mcim serve supplier|ro|vno|sho|pva --config FILE [--db URL]`: runs one stakeholder's HTTPS
// service until SIGINT/SIGTERM (docs/operations.md "Running the services"). ServedRole is that
// service started from its config file, for `mcim up` to start all five the same way.
#pragma once

#include <signal.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cli/output.h"
#include "cli/serve_config.h"
#include "common/clock.h"
#include "common/log.h"
#include "store/store.h"

namespace mcim::cli {

enum class ServeRole { supplier, ro, vno, sho, pva };
std::string_view role_name(ServeRole r);

// What the command line may change in a config file (checked before the file is read).
struct ServeOverrides {
  std::optional<ListenAddress> listen;
  std::optional<log::Level> level;
  std::string db;  // ro, sho, pva: instead of the file's db
};

// One service loaded from its config file and listening: its database (ro, sho, pva), the
// service, its HttpServer (and the VNO's gateway, the RO's EAP gateway when its file has
// eap_gateway). Errors name the file and key, or the override. The destructor stops the server
// and the EAP gateway, then the service, then closes the database.
class ServedRole {
 public:
  static Result<std::unique_ptr<ServedRole>> start(ServeRole role, const std::string& config,
                                                   const ServeOverrides& overrides,
                                                   const Clock& clock);
  ~ServedRole();
  ServedRole(const ServedRole&) = delete;
  ServedRole& operator=(const ServedRole&) = delete;

  ServeRole role() const;
  std::string url() const;
  std::string address() const;            // "127.0.0.1:PORT"
  const std::string& gateway() const;     // vno: the gateway's address; empty otherwise
  const std::string& eap_socket() const;  // ro: the EAP gateway's socket; empty without one
  // ro, sho, pva: the service's own database (to inspect it, e.g. a scenario checking that a
  // refusal changed nothing); nullptr for the others. Valid until stop().
  store::Database* database() const;
  // ro: the service itself (a scenario runs its periodic task at once); nullptr for the others.
  // Valid until stop().
  ro::RoService* ro_service() const;
  // The entry points only: the server and the EAP gateway (the service stays); idempotent.
  void stop_serving();
  void stop();  // stop_serving(), then the service; idempotent

  struct State;

 private:
  explicit ServedRole(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// SIGINT and SIGTERM blocked for the life of the value (restored after, for in-process callers);
// threads started meanwhile inherit the mask, and wait() takes the signal on the calling thread:
// no handler runs in a signal context.
class BlockedSignals {
 public:
  BlockedSignals();
  ~BlockedSignals();
  BlockedSignals(const BlockedSignals&) = delete;
  BlockedSignals& operator=(const BlockedSignals&) = delete;
  int wait() const;  // the signal taken

 private:
  sigset_t set_{}, old_{};
};

void register_serve(CLI::App& app, Result<Fields>* result);

}  // namespace mcim::cli
