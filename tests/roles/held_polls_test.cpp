// Held polls (roles/ro/held_polls.h): the Prefer header's wait, and the waiters woken by a
// notify for their PCID, at their deadline, at stop, or at once when something came between the
// lookup and the wait.
#include "roles/ro/held_polls.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace mcim::ro {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

TEST(PreferredWaitTest, ReadsTheWaitPreferenceAndNothingElse) {
  const struct {
    const char* header;
    long seconds;
  } cases[] = {
      {"", 0},
      {"wait=5", 5},
      {"WAIT=7", 7},
      {"  wait = 3 ", 3},
      {"respond-async, wait=10", 10},
      {"wait=10; foo=bar", 10},
      {"return=minimal, wait=\"4\"", 4},
      {"return=minimal", 0},
      {"waiting=5", 0},
      {"wait=", 0},
      {"wait=-1", 0},
      {"wait=1.5", 0},
      {"wait=abc", 0},
      {"wait=9999999999", 0},  // more digits than any sane wait: ignored, not overflowed
      {"wait=0", 0},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(preferred_wait(c.header), std::chrono::seconds(c.seconds)) << c.header;
  }
}

struct Counter {
  std::atomic<int> n{0};
  net::Wake wake() {
    return [this] { ++n; };
  }
};

bool eventually(const std::function<bool()>& f) {
  for (int i = 0; i < 500; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return f();
}

TEST(PollWaitersTest, ANotifyWakesOnlyThatPcidsWaiters) {
  PollWaiters w;
  Counter a1, a2, b;
  w.wait("001", w.version("001"), Steady::now() + 10s, a1.wake());
  w.wait("001", w.version("001"), Steady::now() + 10s, a2.wake());
  w.wait("002", w.version("002"), Steady::now() + 10s, b.wake());
  EXPECT_EQ(w.waiting(), 3u);
  w.notify("001");
  EXPECT_EQ(a1.n, 1);
  EXPECT_EQ(a2.n, 1);
  EXPECT_EQ(b.n, 0);
  EXPECT_EQ(w.waiting(), 1u);
  w.notify("001");  // nobody waits for it any more: nothing is called twice
  EXPECT_EQ(a1.n, 1);
}

TEST(PollWaitersTest, AWaiterIsWokenAtItsDeadline) {
  PollWaiters w;
  Counter soon, late;
  w.wait("001", w.version("001"), Steady::now() + 30ms, soon.wake());
  w.wait("001", w.version("001"), Steady::now() + 10s, late.wake());
  EXPECT_TRUE(eventually([&] { return soon.n == 1; }));
  EXPECT_EQ(late.n, 0);
  EXPECT_EQ(w.waiting(), 1u);
}

// Something put between the handler's lookup and its wait: the request is woken at once.
TEST(PollWaitersTest, ANotifyBeforeTheWaitWakesAtOnce) {
  PollWaiters w;
  Counter c;
  const std::uint64_t seen = w.version("001");
  w.notify("001");
  w.wait("001", seen, Steady::now() + 10s, c.wake());
  EXPECT_EQ(c.n, 1);
  EXPECT_EQ(w.waiting(), 0u);
  // Another PCID's news does not count.
  Counter d;
  const std::uint64_t seen2 = w.version("002");
  w.notify("003");
  w.wait("002", seen2, Steady::now() + 10s, d.wake());
  EXPECT_EQ(d.n, 0);
  EXPECT_EQ(w.waiting(), 1u);
}

TEST(PollWaitersTest, FullOrStoppedWakesAtOnceAndStopWakesEveryone) {
  PollWaiters w(/*max_waiting=*/2);
  Counter a, b, c;
  w.wait("001", w.version("001"), Steady::now() + 10s, a.wake());
  w.wait("002", w.version("002"), Steady::now() + 10s, b.wake());
  EXPECT_FALSE(w.accepting());
  w.wait("003", w.version("003"), Steady::now() + 10s, c.wake());
  EXPECT_EQ(c.n, 1);  // full: answered at once
  w.stop();
  EXPECT_EQ(a.n, 1);
  EXPECT_EQ(b.n, 1);
  EXPECT_FALSE(w.accepting());
  Counter d;
  w.wait("004", w.version("004"), Steady::now() + 10s, d.wake());
  EXPECT_EQ(d.n, 1);
  EXPECT_EQ(w.waiting(), 0u);
}

}  // namespace
}  // namespace mcim::ro
