// WriteBatches (src/store/write_batches.h): writers that wait for the turn while a batch commits
// share the next batch and its one commit; each returns only once its batch is settled, with the
// batch's outcome; a lost member or a failed commit fails every member of that batch only.
#include "store/write_batches.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <mutex>
#include <thread>
#include <vector>

namespace mcim::store {
namespace {

using namespace std::chrono_literals;

// A fake transaction log: counts begins and ends, how many writes each batch took, and checks
// that batches never overlap. `hold_first_end` keeps the first commit waiting until released.
struct FakeLog {
  std::mutex mu;
  int begins = 0;
  std::vector<bool> ends;         // commit (true) or rollback, per batch
  std::vector<int> batch_writes;  // writes per ended batch
  int writes_in_open = 0;
  bool open = false;
  bool overlapped = false;
  int fail_begins = 0;         // so many next begins fail
  int fail_commit_number = 0;  // the commit with this number (1-based) fails
  std::latch* first_end_started = nullptr;
  std::latch* release_first_end = nullptr;

  WriteBatches::Hooks hooks() {
    return {[this]() -> Result<void> {
              std::lock_guard lock(mu);
              if (fail_begins > 0) {
                --fail_begins;
                return fail(ErrorCode::busy, "locked");
              }
              if (open) overlapped = true;
              open = true;
              ++begins;
              return {};
            },
            [this](bool commit) -> Result<void> {
              bool first;
              {
                std::lock_guard lock(mu);
                first = ends.empty();
              }
              if (first && first_end_started != nullptr) {
                first_end_started->count_down();
                release_first_end->wait();
              }
              std::lock_guard lock(mu);
              if (!open) overlapped = true;
              open = false;
              ends.push_back(commit);
              batch_writes.push_back(writes_in_open);
              writes_in_open = 0;
              if (commit && static_cast<int>(ends.size()) == fail_commit_number) {
                return fail(ErrorCode::io_error, "disk full");
              }
              return {};
            }};
  }
  // What a member does with the turn.
  void write() {
    std::lock_guard lock(mu);
    if (!open) overlapped = true;
    ++writes_in_open;
  }
};

// One write with the turn, as the SQLite backend's unit does.
Result<void> one_write(WriteBatches& b, FakeLog& log, std::optional<Error> lost = std::nullopt) {
  auto m = b.enter();
  if (!m) return std::unexpected(m.error());
  log.write();
  return b.leave(*m, std::move(lost));
}

// Starts `n` writers once the first batch's commit has begun and waits until all of them wait
// for the turn; the first writer's result goes to results[0].
std::vector<Result<void>> writers_behind_a_commit(WriteBatches& b, FakeLog& log, int n,
                                                  std::latch& started, std::latch& release,
                                                  int lost_one = -1) {
  std::vector<Result<void>> results(n + 1, fail(ErrorCode::internal, "not run"));
  std::thread first([&] { results[0] = one_write(b, log); });
  started.wait();
  std::vector<std::thread> others;
  for (int i = 1; i <= n; ++i) {
    others.emplace_back([&, i] {
      results[i] = one_write(
          b, log,
          i == lost_one ? std::optional<Error>(Error(ErrorCode::io_error, "lost")) : std::nullopt);
    });
  }
  while (b.waiting() != static_cast<std::size_t>(n)) std::this_thread::sleep_for(2ms);
  release.count_down();
  first.join();
  for (auto& t : others) t.join();
  return results;
}

TEST(WriteBatchesTest, AWriterAloneCommitsItsOwnBatch) {
  FakeLog log;
  WriteBatches b(log.hooks());
  ASSERT_TRUE(one_write(b, log));
  ASSERT_TRUE(one_write(b, log));
  EXPECT_EQ(log.begins, 2);
  EXPECT_EQ(log.ends, (std::vector<bool>{true, true}));
  EXPECT_EQ(log.batch_writes, (std::vector<int>{1, 1}));
  EXPECT_EQ(b.batches(), 2u);
}

TEST(WriteBatchesTest, WritersWaitingDuringACommitShareTheNextBatch) {
  FakeLog log;
  std::latch started(1), release(1);
  log.first_end_started = &started;
  log.release_first_end = &release;
  WriteBatches b(log.hooks());
  auto results = writers_behind_a_commit(b, log, 6, started, release);
  for (std::size_t i = 0; i < results.size(); ++i) EXPECT_TRUE(results[i]) << i;
  EXPECT_EQ(log.batch_writes, (std::vector<int>{1, 6}));
  EXPECT_EQ(log.ends, (std::vector<bool>{true, true}));
  EXPECT_FALSE(log.overlapped);
}

TEST(WriteBatchesTest, ABatchNeverExceedsItsLimit) {
  FakeLog log;
  std::latch started(1), release(1);
  log.first_end_started = &started;
  log.release_first_end = &release;
  WriteBatches b(log.hooks(), /*max_members=*/2);
  auto results = writers_behind_a_commit(b, log, 5, started, release);
  for (std::size_t i = 0; i < results.size(); ++i) EXPECT_TRUE(results[i]) << i;
  int total = 0;
  for (int n : log.batch_writes) {
    EXPECT_LE(n, 2);
    total += n;
  }
  EXPECT_EQ(total, 6);
  EXPECT_FALSE(log.overlapped);
}

// The second batch's commit fails: each of its members gets that error, the first batch's
// member does not.
TEST(WriteBatchesTest, AFailedCommitFailsEveryMemberOfItsBatchOnly) {
  FakeLog log;
  log.fail_commit_number = 2;
  std::latch started(1), release(1);
  log.first_end_started = &started;
  log.release_first_end = &release;
  WriteBatches b(log.hooks());
  auto results = writers_behind_a_commit(b, log, 4, started, release);
  EXPECT_TRUE(results[0]);
  for (std::size_t i = 1; i < results.size(); ++i) {
    ASSERT_FALSE(results[i]) << i;
    EXPECT_EQ(results[i].error().code, ErrorCode::io_error);
  }
  EXPECT_EQ(log.batch_writes, (std::vector<int>{1, 4}));
  ASSERT_TRUE(one_write(b, log));  // the next batch is a new one
  EXPECT_EQ(log.ends.size(), 3u);
}

// A member whose own writes could not be undone: its batch is rolled back, and every member of
// it gets the error; nobody of another batch does.
TEST(WriteBatchesTest, ALostMemberRollsBackItsWholeBatch) {
  FakeLog log;
  std::latch started(1), release(1);
  log.first_end_started = &started;
  log.release_first_end = &release;
  WriteBatches b(log.hooks());
  auto results = writers_behind_a_commit(b, log, 4, started, release, /*lost_one=*/2);
  EXPECT_TRUE(results[0]);
  ASSERT_GE(log.ends.size(), 2u);
  EXPECT_FALSE(log.ends[1]) << "the batch with the lost member must be rolled back";
  for (std::size_t i = 2; i < log.ends.size(); ++i) EXPECT_TRUE(log.ends[i]) << i;
  int failed = 0;
  for (std::size_t i = 1; i < results.size(); ++i) {
    if (!results[i]) {
      ++failed;
      EXPECT_EQ(results[i].error().message, "lost");
    }
  }
  // The lost member ends its batch at once: the members that had written before it share its
  // fate; those still waiting begin the next batch.
  EXPECT_GE(failed, 1);
  EXPECT_EQ(failed, log.batch_writes[1]);
  EXPECT_FALSE(log.overlapped);
}

TEST(WriteBatchesTest, ABeginThatFailsGivesTheTurnBack) {
  FakeLog log;
  log.fail_begins = 1;
  WriteBatches b(log.hooks());
  auto m = b.enter();
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, ErrorCode::busy);
  ASSERT_TRUE(one_write(b, log));
  EXPECT_EQ(log.begins, 1);
}

TEST(WriteBatchesTest, AWriterThatWaitsTooLongForTheTurnGivesUpWithBusy) {
  FakeLog log;
  WriteBatches b(log.hooks(), 64, /*patience=*/50ms);
  auto holder = b.enter();
  ASSERT_TRUE(holder);
  std::thread late([&] {
    auto m = b.enter();
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().code, ErrorCode::busy);
  });
  late.join();
  ASSERT_TRUE(b.leave(*holder));  // nobody waits any more: committed at once
  EXPECT_EQ(log.ends, (std::vector<bool>{true}));
}

// A unit that writes once and ends, on its own thread; returns once its write is made (it is
// then in its batch, lingering or waiting for its outcome).
std::thread first_unit_written(WriteBatches& b, FakeLog& log) {
  std::thread first([&] {
    EXPECT_TRUE(one_write(b, log));
    b.finished();
  });
  while (true) {
    std::this_thread::sleep_for(2ms);
    std::lock_guard lock(log.mu);
    if (log.writes_in_open == 1) break;
  }
  return first;
}

// The last writer of a batch lingers while a unit is under way (started, not yet at its first
// write): that one joins the batch, and one commit serves both.
TEST(WriteBatchesTest, TheLastWriterLingersForAUnitUnderWay) {
  FakeLog log;
  WriteBatches b(log.hooks(), 64, 5000ms, /*linger=*/std::chrono::minutes(10));
  b.started();  // the first unit
  b.started();  // the second, under way
  // The first has written and lingers: nothing is committed until the second has written.
  std::thread first = first_unit_written(b, log);
  EXPECT_TRUE(one_write(b, log));
  b.finished();
  first.join();
  EXPECT_EQ(log.batch_writes, (std::vector<int>{2}));
  EXPECT_EQ(log.ends, (std::vector<bool>{true}));
}

// A unit under way that ends without writing ends the linger too (with a linger of ten minutes,
// this test finishes only because it does), and with no unit under way there is none.
TEST(WriteBatchesTest, ALingerEndsWhenTheUnitUnderWayEndsWithoutWriting) {
  FakeLog log;
  WriteBatches b(log.hooks(), 64, 5000ms, /*linger=*/std::chrono::minutes(10));
  ASSERT_TRUE(one_write(b, log));  // nothing under way: committed at once
  b.started();
  b.started();
  std::thread first = first_unit_written(b, log);
  b.finished();  // the second unit wrote nothing
  first.join();
  EXPECT_EQ(log.batch_writes, (std::vector<int>{1, 1}));
}

// Many writers at once: batches never overlap, every write lands in exactly one committed batch
// and every writer succeeds.
TEST(WriteBatchesTest, ConcurrentWritersAllLandInCommittedBatches) {
  constexpr int kThreads = 8, kWrites = 300;
  FakeLog log;
  WriteBatches b(log.hooks(), 16);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kWrites; ++i) {
        if (!one_write(b, log)) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_FALSE(log.overlapped);
  int total = 0;
  for (int n : log.batch_writes) {
    EXPECT_LE(n, 16);
    total += n;
  }
  EXPECT_EQ(total, kThreads * kWrites);
  EXPECT_EQ(log.begins, static_cast<int>(log.ends.size()));
  EXPECT_EQ(b.batches(), log.ends.size());
}

}  // namespace
}  // namespace mcim::store
