// A throwaway PostgreSQL server for the store tests (docs/store.md, "Tests"): initdb into a fresh
// temporary directory, listening on a Unix socket in that directory only; as root, the server
// runs as the `postgres` user. Each test gets a schema of its own.
//
// Under ctest one server serves the whole run: the fixture test `store_pg_server_start`
// (pg_server_ctl start FILE) starts it and writes where it is to FILE, the PostgreSQL tests find
// FILE in $MCIM_TEST_PG_SERVER, and `store_pg_server_stop` stops it (immediate mode). Run
// directly, store_test starts a server of its own on first use and its global test environment
// stops it. Either way a watchdog stops the server and removes its directory if its owner (the
// ctest or store_test process) dies without tearing down.
#pragma once

#include <sys/types.h>

#include <mutex>
#include <string>

#include "common/error.h"

namespace mcim::store::testing {

// Where a running server is: its directory (data/, the socket, logs) and binaries.
struct PgServerDir {
  std::string base;
  std::string bindir;
  pid_t watchdog = -1;
};

// Starts a server that lives until stop_server() or until process `owner` exits.
Result<PgServerDir> start_server(pid_t owner);
void stop_server(const PgServerDir& server);

// The shared server of a ctest run, described in a small file.
Result<void> write_server_file(const std::string& file, const PgServerDir& server);
Result<PgServerDir> read_server_file(const std::string& file);

class PgServer {
 public:
  static PgServer& instance();

  // The URL of a new, empty schema (first in the connection's search_path); starts the server
  // on first use. The error says why the server cannot run (e.g. PostgreSQL is not installed).
  Result<std::string> create_schema();
  void drop_schema(const std::string& url);
  void stop();  // stops the server only if this process started it

 private:
  PgServer() = default;
  Result<void> attach_or_start_locked();
  std::string url_of(const std::string& schema) const;

  std::mutex mu_;
  bool ready_ = false;        // guarded by mu_
  bool owned_ = false;        // guarded by mu_: started by this process
  std::string start_error_;   // guarded by mu_: sticky, a failed start is not retried
  PgServerDir server_;        // guarded by mu_
  unsigned next_schema_ = 0;  // guarded by mu_
};

}  // namespace mcim::store::testing
