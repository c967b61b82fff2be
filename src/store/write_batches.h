// Batched commits for a database that has one writer at a time (SQLite; docs/store.md "Batched
// commits"). Every write of the process takes the write turn in order; the first one to find no
// transaction open begins one, each writes within its own savepoint and passes the turn on, and
// the last one in line, the one that finds nobody waiting (after lingering a moment for units
// under way, `linger`), commits for all of them: one flush of the log for the whole batch. As in
// GroupCommit (group_commit.h) and LevelDB's DBImpl::Write, a member returns only once its batch
// has been committed (or rolled back), so durability is that of a commit each. Pure
// synchronisation, no I/O of its own: beginning and ending the transaction are the store's
// hooks. Thread-safe.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "common/error.h"

namespace mcim::store {

class WriteBatches {
 public:
  struct Hooks {
    std::function<Result<void>()> begin;           // opens the batch's transaction
    std::function<Result<void>(bool commit)> end;  // commits it (true) or rolls it back (false)
  };

  // One batch: the members that wrote in its transaction wait for its outcome.
  struct Batch {
    bool settled = false;
    std::optional<Error> error;  // why it was not committed
    std::size_t members = 0;
    std::condition_variable settled_cv;  // its members that wait for its outcome
  };
  using Member = std::shared_ptr<Batch>;

  // `max_members`: a batch is committed once it has that many, waiters or not, which bounds how
  // long its first member waits. `patience`: how long a writer waits for its turn before it gives
  // up with `busy` (a turn is held by one write plus at most one commit).
  // `linger`: how long the last writer of a batch waits for writers that are on their way (units
  // begun, not yet at their first write: started()) before it commits alone; zero never waits.
  explicit WriteBatches(Hooks hooks, std::size_t max_members = 64,
                        std::chrono::milliseconds patience = std::chrono::milliseconds(5000),
                        std::chrono::microseconds linger = std::chrono::microseconds(0))
      : hooks_(std::move(hooks)),
        max_members_(std::max<std::size_t>(max_members, 1)),
        patience_(patience),
        linger_(linger) {}

  // A unit of work begins or ends: while one runs, it may write soon.
  void started() {
    std::lock_guard lock(mu_);
    ++active_;
  }
  void finished() {
    std::lock_guard lock(mu_);
    --active_;
    if (lingering_) arrival_cv_.notify_one();
  }
  WriteBatches(const WriteBatches&) = delete;
  WriteBatches& operator=(const WriteBatches&) = delete;

  // Waits for the write turn and joins the open batch, beginning one when none is open. On
  // success the caller holds the turn and must call leave() exactly once, whatever happens.
  Result<Member> enter() {
    std::unique_lock lock(mu_);
    ++waiting_;
    if (lingering_) arrival_cv_.notify_one();
    const bool turn = turn_cv_.wait_for(lock, patience_, [&] { return !held_; });
    --waiting_;
    if (!turn) return fail(ErrorCode::busy, "write turn: still taken after the busy timeout");
    held_ = true;
    if (!open_) {
      lock.unlock();
      auto begun = hooks_.begin();
      lock.lock();
      if (!begun) {
        pass_turn();
        return std::unexpected(begun.error());
      }
      open_ = std::make_shared<Batch>();
    }
    ++open_->members;
    return open_;
  }

  // Gives the turn back after the caller's own writes are released or undone. `lost`: they could
  // not be undone, so the batch's transaction cannot be trusted and is rolled back for every
  // member. The batch is committed here when nobody waits for the turn (or it is full), else left
  // to the next writer; either way this returns once the batch is settled: success when it was
  // committed, else why not.
  Result<void> leave(const Member& batch, std::optional<Error> lost = std::nullopt) {
    std::unique_lock lock(mu_);
    if (lost && !batch->error) batch->error = std::move(lost);
    // Units under way that have not written yet (active, neither in this batch nor waiting for
    // the turn) are likely to write soon: a moment's wait lets them share this commit.
    auto on_their_way = [&] { return active_ > batch->members + waiting_; };
    if (linger_.count() > 0 && waiting_ == 0 && !batch->error && batch->members < max_members_ &&
        on_their_way()) {
      lingering_ = true;
      arrival_cv_.wait_for(lock, linger_, [&] { return waiting_ > 0 || !on_their_way(); });
      lingering_ = false;
    }
    if (waiting_ > 0 && batch->members < max_members_ && !batch->error) {
      pass_turn();
      batch->settled_cv.wait(lock, [&] { return batch->settled; });
      return outcome(*batch);
    }
    open_.reset();  // the next writer begins a new batch, once this one is settled
    const bool commit = !batch->error;
    lock.unlock();
    auto ended = hooks_.end(commit);
    lock.lock();
    if (!ended && !batch->error) batch->error = ended.error();
    batch->settled = true;
    ++settled_;
    held_ = false;
    auto result = outcome(*batch);
    // Woken after the lock is let go: the members and the next writer all need it at once, and
    // woken under it each would first go back to sleep on it. `batch` stays alive: the caller
    // holds it.
    lock.unlock();
    batch->settled_cv.notify_all();
    turn_cv_.notify_one();
    return result;
  }

  // Batches settled so far, and writers waiting for the turn now (for tests and metrics).
  std::uint64_t batches() const {
    std::lock_guard lock(mu_);
    return settled_;
  }
  std::size_t waiting() const {
    std::lock_guard lock(mu_);
    return waiting_;
  }

 private:
  static Result<void> outcome(const Batch& b) {
    if (b.error) return std::unexpected(*b.error);
    return {};
  }
  // Under mu_: the turn is free. One waiter is woken: whoever takes the turn first has it, and
  // the others would only go back to sleep (each release wakes one, so none is forgotten).
  void pass_turn() {
    held_ = false;
    turn_cv_.notify_one();
  }

  const Hooks hooks_;
  const std::size_t max_members_;
  const std::chrono::milliseconds patience_;
  const std::chrono::microseconds linger_;
  mutable std::mutex mu_;
  std::condition_variable turn_cv_;     // writers waiting for the turn
  std::condition_variable arrival_cv_;  // the last writer lingering for others
  bool lingering_ = false;
  std::size_t active_ = 0;   // units begun and not finished (started/finished)
  bool held_ = false;        // a writer has the turn (writing, or settling its batch)
  std::size_t waiting_ = 0;  // writers waiting for the turn
  Member open_;              // the batch whose transaction is open, if any
  std::uint64_t settled_ = 0;
};

}  // namespace mcim::store
