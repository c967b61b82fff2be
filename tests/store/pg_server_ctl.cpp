// The ctest fixture around the store tests' PostgreSQL server (pg_server.h):
//   pg_server_ctl start FILE   starts a server for this ctest run, describes it in FILE
//   pg_server_ctl stop FILE    stops it (immediate mode), removes its directory and FILE
// The server's watchdog follows the ctest process (our parent): an interrupted run leaves
// nothing behind.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <string_view>

#include "pg_server.h"

using namespace mcim::store::testing;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fputs("usage: pg_server_ctl start|stop FILE\n", stderr);
    return 2;
  }
  const std::string_view action = argv[1];
  const std::string file = argv[2];
  if (action == "start") {
    if (auto old = read_server_file(file)) stop_server(*old);  // left by an interrupted run
    auto server = start_server(::getppid());
    if (!server) {
      fmt::print(stderr, "store tests: cannot start PostgreSQL: {}\n", server.error().message);
      return 1;
    }
    if (auto r = write_server_file(file, *server); !r) {
      stop_server(*server);
      fmt::print(stderr, "{}\n", r.error().message);
      return 1;
    }
    fmt::print("PostgreSQL test server in {}\n", server->base);
    return 0;
  }
  if (action == "stop") {
    auto server = read_server_file(file);
    if (!server) return 0;  // never started: nothing to do
    stop_server(*server);
    std::remove(file.c_str());
    return 0;
  }
  std::fputs("usage: pg_server_ctl start|stop FILE\n", stderr);
  return 2;
}
