// GroupCommit (src/store/group_commit.h): callers queued behind a leader's commit share the next
// one; every caller gets its own result; a failing group is retried item by item.
#include "store/group_commit.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace mcim::store {
namespace {

// A log whose commit appends the items and returns their positions, recording each group's size.
struct FakeLog {
  std::mutex mu;
  std::vector<int> rows;
  std::vector<std::size_t> group_sizes;
  int refuse = -1;  // an item the log refuses: the whole transaction fails

  Result<std::vector<std::size_t>> commit(std::span<const int* const> items) {
    std::lock_guard lock(mu);
    for (const int* i : items) {
      if (*i == refuse) return fail(ErrorCode::invalid_argument, "refused");
    }
    group_sizes.push_back(items.size());
    std::vector<std::size_t> out;
    for (const int* i : items) {
      out.push_back(rows.size());
      rows.push_back(*i);
    }
    return out;
  }
};

TEST(GroupCommitTest, OneCallerAloneIsOneCommitOfOne) {
  FakeLog log;
  GroupCommit<int, std::size_t> g([&](auto items) { return log.commit(items); });
  auto a = g.submit(7);
  auto b = g.submit(8);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, 0u);
  EXPECT_EQ(*b, 1u);
  EXPECT_EQ(log.group_sizes, (std::vector<std::size_t>{1, 1}));
  EXPECT_EQ(g.groups(), 2u);
}

// The first caller's commit is held until every other caller has queued: they all go in the
// second commit, which is one group, and each gets the position of its own item.
TEST(GroupCommitTest, CallersQueuedDuringACommitShareTheNext) {
  constexpr int kFollowers = 6;
  FakeLog log;
  std::latch first_started(1), others_queued(1);
  std::atomic<int> commits{0};
  GroupCommit<int, std::size_t> g([&](auto items) {
    if (commits++ == 0) {
      first_started.count_down();
      others_queued.wait();
    }
    return log.commit(items);
  });

  std::vector<Result<std::size_t>> results(kFollowers + 1, fail(ErrorCode::internal, "not run"));
  std::thread leader([&] { results[0] = g.submit(100); });
  first_started.wait();
  std::vector<std::thread> followers;
  for (int i = 1; i <= kFollowers; ++i) {
    followers.emplace_back([&, i] { results[i] = g.submit(100 + i); });
  }
  // Each follower is queued once it waits; give them the time to get there, then let go.
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (g.queued() == kFollowers + 1) break;
  }
  others_queued.count_down();
  leader.join();
  for (auto& t : followers) t.join();

  EXPECT_EQ(log.group_sizes, (std::vector<std::size_t>{1, kFollowers}));
  std::set<std::size_t> positions;
  for (int i = 0; i <= kFollowers; ++i) {
    ASSERT_TRUE(results[i]) << i;
    EXPECT_EQ(log.rows[*results[i]], 100 + i) << "caller " << i << " got another's position";
    positions.insert(*results[i]);
  }
  EXPECT_EQ(positions.size(), static_cast<std::size_t>(kFollowers + 1));
}

TEST(GroupCommitTest, AGroupNeverExceedsItsLimit) {
  FakeLog log;
  std::latch first_started(1), others_queued(1);
  std::atomic<int> commits{0};
  GroupCommit<int, std::size_t> g(
      [&](auto items) {
        if (commits++ == 0) {
          first_started.count_down();
          others_queued.wait();
        }
        return log.commit(items);
      },
      /*max_group=*/2);
  std::thread leader([&] { (void)g.submit(0); });
  first_started.wait();
  std::vector<std::thread> followers;
  for (int i = 1; i <= 5; ++i) followers.emplace_back([&, i] { (void)g.submit(i); });
  while (g.queued() != 6) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  others_queued.count_down();
  leader.join();
  for (auto& t : followers) t.join();
  EXPECT_EQ(log.rows.size(), 6u);
  for (std::size_t n : log.group_sizes) EXPECT_LE(n, 2u);
  EXPECT_EQ(log.group_sizes.front(), 1u);
}

// One item the log refuses fails its group's transaction; the others are written alone and only
// the refused caller sees the error.
TEST(GroupCommitTest, ARefusedItemFailsOnlyItsOwnCaller) {
  FakeLog log;
  log.refuse = 3;
  std::latch first_started(1), others_queued(1);
  std::atomic<int> commits{0};
  GroupCommit<int, std::size_t> g([&](auto items) {
    if (commits++ == 0) {
      first_started.count_down();
      others_queued.wait();
    }
    return log.commit(items);
  });
  std::vector<Result<std::size_t>> results(5, fail(ErrorCode::internal, "not run"));
  std::thread leader([&] { results[0] = g.submit(0); });
  first_started.wait();
  std::vector<std::thread> followers;
  for (int i = 1; i <= 4; ++i) followers.emplace_back([&, i] { results[i] = g.submit(i); });
  while (g.queued() != 5) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  others_queued.count_down();
  leader.join();
  for (auto& t : followers) t.join();

  for (int i = 0; i <= 4; ++i) {
    if (i == 3) {
      ASSERT_FALSE(results[i]);
      EXPECT_EQ(results[i].error().code, ErrorCode::invalid_argument);
    } else {
      ASSERT_TRUE(results[i]) << i;
      EXPECT_EQ(log.rows[*results[i]], i);
    }
  }
  EXPECT_EQ(log.rows.size(), 4u);
}

}  // namespace
}  // namespace mcim::store
