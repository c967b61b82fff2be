#include "common/process.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstring>
#include <thread>
#include <utility>

extern char** environ;

namespace mcim {

Result<ChildProcess> ChildProcess::spawn(const std::vector<std::string>& args,
                                         const std::string& output) {
  if (args.empty()) return fail(ErrorCode::invalid_argument, "spawn: no program");
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    return fail(ErrorCode::io_error,
                fmt::format("cannot start {}: {}", args[0], std::strerror(rc)));
  }
  return ChildProcess(pid);
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)), status_(o.status_) {}

ChildProcess::~ChildProcess() { stop(); }

bool ChildProcess::reap(int flags) {
  if (pid_ <= 0) return true;
  int status = 0;
  if (::waitpid(pid_, &status, flags) != pid_) return false;
  status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  pid_ = -1;
  return true;
}

std::optional<int> ChildProcess::wait_until(std::chrono::steady_clock::time_point deadline,
                                            const std::stop_token& stop) {
  while (!reap(WNOHANG)) {
    if (std::chrono::steady_clock::now() >= deadline || stop.stop_requested()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return status_;
}

bool ChildProcess::running() { return !reap(WNOHANG); }

void ChildProcess::stop(std::chrono::milliseconds grace) {
  if (!running()) return;
  ::kill(pid_, SIGTERM);
  if (wait_for(grace)) return;
  ::kill(pid_, SIGKILL);
  reap(0);
}

}  // namespace mcim
