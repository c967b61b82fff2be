#include "pg_server.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

extern char** environ;

namespace mcim::store::testing {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSchemaOption = "options=-csearch_path%3D";

// The server binaries: $MCIM_PG_BINDIR, else the newest /usr/lib/postgresql/N/bin (Debian).
std::string find_bindir() {
  if (const char* env = std::getenv("MCIM_PG_BINDIR"); env != nullptr && *env != '\0') {
    return fs::exists(fs::path(env) / "initdb") ? env : "";
  }
  std::string best;
  int best_version = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const int version = std::atoi(entry.path().filename().c_str());
    if (version > best_version && fs::exists(entry.path() / "bin" / "initdb") &&
        fs::exists(entry.path() / "bin" / "pg_ctl")) {
      best_version = version;
      best = (entry.path() / "bin").string();
    }
  }
  return best;
}

// As root, the server's commands run as `postgres` (initdb refuses root).
std::string as_server_user() { return ::geteuid() == 0 ? "runuser -u postgres -- " : ""; }

// Runs argv (as the server user) with stdin from /dev/null and stdout/stderr appended to `log`;
// returns the exit status, -1 when it could not run or was killed.
int run(std::vector<std::string> argv, const std::string& log) {
  if (::geteuid() == 0) argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Starts `sh -c script` in a session of its own, all output discarded; -1 on failure.
pid_t spawn_detached(const std::string& script) {
  std::string sh = "/bin/sh", c = "-c", text = script;
  char* args[] = {sh.data(), c.data(), text.data(), nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  for (int fd = 0; fd <= 2; ++fd) {
    posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
  pid_t pid = -1;
  if (posix_spawn(&pid, "/bin/sh", &actions, &attr, args, environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  return pid;
}

// Whether `pid` is still the watchdog of the server in `base` (a pid read from a stale file may
// have been reused by an unrelated process).
bool is_watchdog_of(pid_t pid, const std::string& base) {
  std::ifstream in(fmt::format("/proc/{}/cmdline", pid));
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return cmdline.starts_with("/bin/sh") && cmdline.find(base + "/data") != std::string::npos;
}

std::string tail_of(const std::string& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > 1500 ? text.substr(text.size() - 1500) : text;
}

Result<void> exec_on(const std::string& url, const std::string& sql) {
  PGconn* conn = PQconnectdb(url.c_str());
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string why = PQerrorMessage(conn);
    PQfinish(conn);
    return fail(ErrorCode::io_error, "test server: " + why);
  }
  PGresult* res = PQexec(conn, sql.c_str());
  const bool ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
  std::string why = ok ? "" : PQerrorMessage(conn);
  PQclear(res);
  PQfinish(conn);
  if (!ok) return fail(ErrorCode::internal, "test server: " + why);
  return {};
}

std::string maintenance_url(const std::string& base) {
  return fmt::format("postgresql:///postgres?host={}&user=mcim", base);
}

Result<void> prepare_directory(PgServerDir& s) {
  char tmpl[] = "/tmp/mcim-pg-XXXXXX";  // short: a socket path must fit in 107 bytes
  if (::mkdtemp(tmpl) == nullptr) return fail(ErrorCode::io_error, "mkdtemp failed");
  s.base = tmpl;
  if (::geteuid() != 0) return {};
  const passwd* pw = ::getpwnam("postgres");
  if (pw == nullptr) {
    return fail(ErrorCode::not_found,
                "running as root, but there is no `postgres` user to run the server as");
  }
  if (::chown(s.base.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
    return fail(ErrorCode::io_error, "cannot chown the server directory to postgres");
  }
  return {};
}

Result<void> initdb_and_start(const PgServerDir& s) {
  const std::string data = s.base + "/data", log = s.base + "/commands.log";
  if (run({s.bindir + "/initdb", "-D", data, "-U", "mcim", "--auth=trust", "-N", "-E", "UTF8",
           "--locale=C", "--no-instructions"},
          log) != 0) {
    return fail(ErrorCode::internal, "initdb failed:\n" + tail_of(log));
  }
  // Unix socket only, in our own directory; durability off: the data is thrown away.
  const std::string options = fmt::format(
      "-k {} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
      "-c full_page_writes=off -c max_connections=300",
      s.base);
  if (run({s.bindir + "/pg_ctl", "-D", data, "-l", s.base + "/server.log", "-o", options, "-w",
           "-t", "60", "start"},
          log) != 0) {
    return fail(ErrorCode::internal,
                "pg_ctl start failed:\n" + tail_of(log) + tail_of(s.base + "/server.log"));
  }
  return {};
}

}  // namespace

Result<PgServerDir> start_server(pid_t owner) {
  PgServerDir s;
  s.bindir = find_bindir();
  if (s.bindir.empty()) {
    return fail(ErrorCode::not_found,
                "PostgreSQL server binaries (initdb, pg_ctl) not found in $MCIM_PG_BINDIR or "
                "/usr/lib/postgresql/*/bin: run scripts/install-deps (package postgresql)");
  }
  auto r = prepare_directory(s);
  if (r) r = initdb_and_start(s);
  if (!r) {
    std::error_code ec;
    if (!s.base.empty()) fs::remove_all(s.base, ec);
    return std::unexpected(r.error());
  }
  // If the owner dies without stop_server(), the watchdog stops the server and cleans up.
  s.watchdog = spawn_detached(fmt::format(
      "while kill -0 {} 2>/dev/null; do sleep 1; done; {}{}/pg_ctl -D {}/data -m immediate stop; "
      "rm -rf {}",
      owner, as_server_user(), s.bindir, s.base, s.base));
  return s;
}

void stop_server(const PgServerDir& s) {
  (void)run({s.bindir + "/pg_ctl", "-D", s.base + "/data", "-m", "immediate", "-w", "stop"},
            "/dev/null");
  if (s.watchdog > 0 && is_watchdog_of(s.watchdog, s.base)) {
    ::kill(s.watchdog, SIGTERM);
    ::waitpid(s.watchdog, nullptr, 0);  // reaps it when it is our child
  }
  std::error_code ec;
  fs::remove_all(s.base, ec);
}

Result<void> write_server_file(const std::string& file, const PgServerDir& s) {
  std::ofstream out(file, std::ios::trunc);
  out << s.base << '\n' << s.bindir << '\n' << s.watchdog << '\n';
  out.close();
  if (!out) return fail(ErrorCode::io_error, "cannot write " + file);
  return {};
}

Result<PgServerDir> read_server_file(const std::string& file) {
  std::ifstream in(file);
  PgServerDir s;
  if (!(in >> s.base >> s.bindir >> s.watchdog)) {
    return fail(ErrorCode::not_found, "no shared test server described in " + file);
  }
  return s;
}

PgServer& PgServer::instance() {
  static PgServer server;
  return server;
}

// The schema comes first in search_path, so the adapter's unqualified tables land in it.
std::string PgServer::url_of(const std::string& schema) const {
  return fmt::format("{}&{}{}", maintenance_url(server_.base), kSchemaOption, schema);
}

Result<void> PgServer::attach_or_start_locked() {
  if (const char* file = std::getenv("MCIM_TEST_PG_SERVER"); file != nullptr) {
    auto shared = read_server_file(file);
    if (shared && exec_on(maintenance_url(shared->base), "SELECT 1")) {
      server_ = *shared;
      return {};
    }
    // The fixture did not run or failed: a server of our own says why, or works.
  }
  auto own = start_server(::getpid());
  if (!own) return std::unexpected(own.error());
  server_ = *own;
  owned_ = true;
  return {};
}

Result<std::string> PgServer::create_schema() {
  std::lock_guard lock(mu_);
  if (!ready_ && start_error_.empty()) {
    if (auto r = attach_or_start_locked(); !r) {
      start_error_ = r.error().message;
    } else {
      ready_ = true;
    }
  }
  if (!ready_) return fail(ErrorCode::io_error, start_error_);
  // Unique across the test processes that share one server under ctest -j.
  const std::string name = fmt::format("store_test_{}_{}", ::getpid(), next_schema_++);
  if (auto r = exec_on(maintenance_url(server_.base), "CREATE SCHEMA " + name); !r) {
    return std::unexpected(r.error());
  }
  return url_of(name);
}

void PgServer::drop_schema(const std::string& url) {
  const auto from = url.find(kSchemaOption) + kSchemaOption.size();
  const std::string name = url.substr(from, url.find('&', from) - from);
  std::lock_guard lock(mu_);
  if (ready_)
    (void)exec_on(maintenance_url(server_.base), "DROP SCHEMA IF EXISTS " + name + " CASCADE");
}

void PgServer::stop() {
  std::lock_guard lock(mu_);
  if (ready_ && owned_) stop_server(server_);
  ready_ = false;
}

}  // namespace mcim::store::testing
