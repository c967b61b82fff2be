// common/process.h with /bin/sleep as the child: a child starts with no signal blocked even when
// its parent blocks SIGTERM (as `mcim up` does to sigwait), so stop() ends it with SIGTERM and not
// the SIGKILL after the grace period; with die_with_parent the child gets SIGTERM when the thread
// that spawned it ends; a program that cannot be started is an io_error in both modes.
#include "common/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>
#include <vector>

namespace mcim {
namespace {

using namespace std::chrono_literals;
constexpr int kTerminated = 128 + SIGTERM;

std::string output_file(const char* name) {
  return (std::filesystem::temp_directory_path() /
          (std::string("mcim-process-test-") + name + "-" + std::to_string(::getpid())))
      .string();
}

// SIGTERM blocked on this thread for the life of the value.
class BlockedTerm {
 public:
  BlockedTerm() {
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, &old_);
  }
  ~BlockedTerm() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

 private:
  sigset_t old_{};
};

// A descriptor the parent opened without close-on-exec (as asio opens its sockets) does not reach
// the child: the child's /proc/self/fd lists 0, 1, 2 and the directory it reads, nothing else.
TEST(ChildProcess, InheritsNothingButItsStandardDescriptors) {
  // Deliberately not O_CLOEXEC, and above what ls opens itself (the lowest free descriptor).
  const int opened = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(opened, 3);
  const int leaked = ::dup2(opened, 100);
  ::close(opened);
  ASSERT_EQ(leaked, 100);
  for (const bool die_with_parent : {false, true}) {
    SCOPED_TRACE(die_with_parent);
    const std::string out = output_file("fds");
    auto c = ChildProcess::spawn({"/bin/ls", "/proc/self/fd"}, out, {die_with_parent});
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->wait_for(10s), 0);
    std::ifstream listing(out);
    std::vector<int> fds;
    for (int fd; listing >> fd;) fds.push_back(fd);
    // ls opens the directory it lists: one descriptor beyond the standard three.
    EXPECT_LE(fds.size(), 4u);
    EXPECT_EQ(std::count(fds.begin(), fds.end(), leaked), 0) << "fd " << leaked << " inherited";
    std::filesystem::remove(out);
  }
  ::close(leaked);
}

TEST(ChildProcess, StartsWithNoSignalBlockedWhateverTheParentBlocks) {
  for (const bool die_with_parent : {false, true}) {
    SCOPED_TRACE(die_with_parent);
    std::optional<ChildProcess> child;
    {
      const BlockedTerm blocked;
      auto c = ChildProcess::spawn({"/bin/sleep", "30"}, output_file("mask"), {die_with_parent});
      ASSERT_TRUE(c) << c.error().message;
      child.emplace(std::move(*c));
    }
    ASSERT_TRUE(child->running());
    const auto t0 = std::chrono::steady_clock::now();
    child->stop(10s);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "SIGTERM did not end the child";
    EXPECT_EQ(child->wait_for(0ms), kTerminated);
  }
  std::filesystem::remove(output_file("mask"));
}

TEST(ChildProcess, DiesWithTheThreadThatSpawnedItWhenAsked) {
  std::optional<ChildProcess> dies, lives;
  std::thread([&] {
    auto d =
        ChildProcess::spawn({"/bin/sleep", "30"}, output_file("dies"), {.die_with_parent = true});
    auto l = ChildProcess::spawn({"/bin/sleep", "30"}, output_file("lives"));
    ASSERT_TRUE(d && l);
    dies.emplace(std::move(*d));
    lives.emplace(std::move(*l));
  }).join();
  ASSERT_TRUE(dies && lives);
  EXPECT_EQ(dies->wait_for(5s), kTerminated);
  EXPECT_TRUE(lives->running());
  lives->stop();
  std::filesystem::remove(output_file("dies"));
  std::filesystem::remove(output_file("lives"));
}

TEST(ChildProcess, AProgramThatCannotStartIsAnIoError) {
  for (const bool die_with_parent : {false, true}) {
    SCOPED_TRACE(die_with_parent);
    auto c = ChildProcess::spawn({"/nonexistent/program"}, output_file("none"), {die_with_parent});
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().code, ErrorCode::io_error);
    EXPECT_NE(c.error().message.find("cannot start /nonexistent/program"), std::string::npos)
        << c.error().message;
  }
  std::filesystem::remove(output_file("none"));
  EXPECT_EQ(ChildProcess::spawn({}, output_file("none")).error().code, ErrorCode::invalid_argument);
}

// The soft limit on open files goes up to the hard one (Debian's 1,024 is too few for a fleet);
// a limit already at its ceiling stays.
TEST(OpenFileLimit, TheSoftLimitIsRaisedToTheHardOne) {
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  if (before.rlim_max < 128) GTEST_SKIP() << "hard open-file limit " << before.rlim_max;
  const rlimit low{64, before.rlim_max};
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  auto raised = raise_open_file_limit();
  ASSERT_TRUE(raised) << raised.error().message;
  EXPECT_EQ(*raised, before.rlim_max);
  rlimit now{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &now), 0);
  EXPECT_EQ(now.rlim_cur, before.rlim_max);
  EXPECT_EQ(now.rlim_max, before.rlim_max);
  auto again = raise_open_file_limit();
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, before.rlim_max);
}

}  // namespace
}  // namespace mcim
