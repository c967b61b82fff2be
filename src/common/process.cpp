#include "common/process.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

extern char** environ;

namespace mcim {

namespace {

// The child's side of a fork with die_with_parent: only async-signal-safe calls until execve.
// Whatever fails is written to `report` as an errno (the pipe closes on a successful exec).
[[noreturn]] void exec_child(char* const* argv, const char* output, pid_t parent, int report) {
  int err = 0;
  sigset_t none;
  sigemptyset(&none);
  if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) err = errno;
  if (err == 0 && ::getppid() != parent) err = ESRCH;  // the parent died before prctl
  const int in = err == 0 ? ::open("/dev/null", O_RDONLY) : -1;
  const int out = in >= 0 ? ::open(output, O_WRONLY | O_CREAT | O_TRUNC, 0600) : -1;
  if (err == 0 &&
      (in < 0 || out < 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0)) {
    err = errno;
  }
  if (in > 2) ::close(in);
  if (out > 2) ::close(out);
  // Nothing of the parent's but stdin, stdout and stderr: a listening socket the child kept open
  // would hold the parent's port after it closed it (asio does not open sockets close-on-exec).
  if (err == 0 && ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) err = errno;
  if (err == 0) {
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(argv[0], argv, environ);
    err = errno;
  }
  while (::write(report, &err, sizeof err) < 0 && errno == EINTR) {
  }
  ::_exit(127);
}

// fork and exec, the child bound to this thread's life (SpawnOptions::die_with_parent).
Result<pid_t> fork_exec(const std::vector<char*>& argv, const std::string& output) {
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return fail(ErrorCode::io_error, std::strerror(errno));
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(report[0]);
    exec_child(argv.data(), output.c_str(), parent, report[1]);
  }
  const int fork_errno = errno;
  ::close(report[1]);
  if (pid < 0) {
    ::close(report[0]);
    return fail(ErrorCode::io_error, std::strerror(fork_errno));
  }
  int err = 0;
  ssize_t n = 0;
  while ((n = ::read(report[0], &err, sizeof err)) < 0 && errno == EINTR) {
  }
  ::close(report[0]);
  if (n > 0) {
    ::waitpid(pid, nullptr, 0);
    return fail(ErrorCode::io_error, std::strerror(err));
  }
  return pid;
}

Result<pid_t> posix_spawn_child(const std::vector<char*>& argv, const std::string& output) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);  // as exec_child: nothing else inherited
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return fail(ErrorCode::io_error, std::strerror(rc));
  return pid;
}

}  // namespace

Result<ChildProcess> ChildProcess::spawn(const std::vector<std::string>& args,
                                         const std::string& output, SpawnOptions options) {
  if (args.empty()) return fail(ErrorCode::invalid_argument, "spawn: no program");
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  auto pid = options.die_with_parent ? fork_exec(argv, output) : posix_spawn_child(argv, output);
  if (!pid) {
    return fail(ErrorCode::io_error,
                fmt::format("cannot start {}: {}", args[0], pid.error().message));
  }
  return ChildProcess(*pid);
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

Result<std::uint64_t> raise_open_file_limit() {
  rlimit l{};
  if (::getrlimit(RLIMIT_NOFILE, &l) != 0) {
    return fail(ErrorCode::io_error,
                fmt::format("the open-file limit cannot be read: {}", std::strerror(errno)));
  }
  if (l.rlim_cur < l.rlim_max) {
    rlimit raised{l.rlim_max, l.rlim_max};
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) l = raised;
  }
  return static_cast<std::uint64_t>(l.rlim_cur);
}

}  // namespace mcim
