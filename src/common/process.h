// A child process of ours (the EAP peer a device runs, the third-party servers of the interop
// tests): started with posix_spawn, stdin from /dev/null, stdout and stderr into one file (0600),
// waited for with a deadline, and stopped (SIGTERM, then SIGKILL after a grace period) when it
// outlives its owner. Not thread-safe: one owner, which may wait on another thread than the one
// that started it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "common/error.h"

namespace mcim {

class ChildProcess {
 public:
  // argv[0] is the executable's path (no PATH search). io_error when it cannot be started.
  static Result<ChildProcess> spawn(const std::vector<std::string>& argv,
                                    const std::string& output);
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

}  // namespace mcim
