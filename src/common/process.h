// A child process of ours (the EAP peer a device runs, hostapd under `mcim up`, the third-party
// servers of the interop tests): stdin from /dev/null, stdout and stderr into one file (0600), no
// signal blocked and SIGINT and SIGTERM at their default action whatever the parent's mask (a
// server blocks them to sigwait), waited for with a deadline, and stopped (SIGTERM, then SIGKILL
// after a grace period) when it outlives its owner. Not thread-safe: one owner, which may wait on
// another thread than the one that started it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "common/error.h"

namespace mcim {

struct SpawnOptions {
  // SIGTERM to the child when its parent dies, however it dies (SIGKILL, an unhandled Ctrl-C):
  // for a server that would otherwise run on forever. Linux's PR_SET_PDEATHSIG, which fires when
  // the *thread* that spawned the child ends: spawn from a thread that lives as long as the child
  // should.
  bool die_with_parent = false;
};

class ChildProcess {
 public:
  // argv[0] is the executable's path (no PATH search). io_error when it cannot be started.
  static Result<ChildProcess> spawn(const std::vector<std::string>& argv, const std::string& output,
                                    SpawnOptions options = {});
  ChildProcess(ChildProcess&& o) noexcept;
  ChildProcess& operator=(ChildProcess&&) = delete;
  ~ChildProcess();  // stop()

  // The exit status (128 + the signal for one killed by a signal) once the process has ended;
  // nullopt when it still runs at the deadline or when `stop` is asked first.
  std::optional<int> wait_until(std::chrono::steady_clock::time_point deadline,
                                const std::stop_token& stop = {});
  std::optional<int> wait_for(std::chrono::milliseconds wait) {
    return wait_until(std::chrono::steady_clock::now() + wait);
  }
  bool running();
  // SIGTERM, then SIGKILL if it has not ended after `grace`; reaps it.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(2));

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  bool reap(int flags);
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// Raises this process's soft limit on open files (RLIMIT_NOFILE) to its hard limit, as a
// program that holds many descriptors should (`mcim demo` keeps every device's TRE open, a
// service one socket per client): Debian's default soft limit is 1,024, its hard limit far
// higher. Returns the soft limit in force afterwards; io_error when it cannot be read. Children
// started later inherit the raised limit (they open few descriptors; none uses select()).
Result<std::uint64_t> raise_open_file_limit();

}  // namespace mcim
