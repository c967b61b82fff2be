// Group commit (docs/store.md "Group commit of audit records"): callers that each want one item
// made durable queue up; the caller at the front of the queue becomes the leader, takes every
// item queued so far (up to a limit) and writes them with one `commit` call (one transaction, one
// flush of the log), then hands each follower its own result. As in LevelDB's DBImpl::Write, a
// caller returns only once its item is committed, so durability is the same as one transaction
// each; under concurrency the flushes are shared. Pure synchronisation, no I/O of its own: the
// commit function is the store's. Thread-safe.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

#include "common/error.h"

namespace mcim::store {

template <class Item, class Out>
class GroupCommit {
 public:
  // Writes `items` in one transaction and returns one Out per item, in order, or the error that
  // rolled all of them back.
  using CommitFn = std::function<Result<std::vector<Out>>(std::span<const Item* const> items)>;

  explicit GroupCommit(CommitFn commit, std::size_t max_group = 64)
      : commit_(std::move(commit)), max_group_(std::max<std::size_t>(max_group, 1)) {}

  // Blocks until `item` is committed (alone or with others) and returns its Out. When a group of
  // several fails, each of its items is tried again alone, so that one item the store refuses
  // does not fail the others.
  Result<Out> submit(const Item& item) {
    Waiter self{&item};
    std::unique_lock lock(mu_);
    queue_.push_back(&self);
    while (!self.done && queue_.front() != &self) self.cv.wait(lock);
    if (self.done) return std::move(self.result);

    // The leader: everything queued behind it so far joins its group.
    const std::size_t n = std::min(queue_.size(), max_group_);
    std::vector<Waiter*> group(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
    lock.unlock();
    write(group);
    lock.lock();
    for (std::size_t i = 0; i < n; ++i) {
      Waiter* w = queue_.front();
      queue_.pop_front();
      w->done = true;
      if (w != &self) w->cv.notify_one();
    }
    if (!queue_.empty()) queue_.front()->cv.notify_one();  // the next leader
    ++groups_;
    return std::move(self.result);
  }

  // How many commits have been made, and how many callers are in the queue now (the leader
  // writing included): for tests and metrics.
  std::size_t groups() const {
    std::lock_guard lock(mu_);
    return groups_;
  }
  std::size_t queued() const {
    std::lock_guard lock(mu_);
    return queue_.size();
  }

 private:
  struct Waiter {
    explicit Waiter(const Item* i) : item(i) {}
    const Item* item;
    Result<Out> result{fail(ErrorCode::internal, "group commit: not written")};
    bool done = false;
    std::condition_variable cv;
  };

  // Outside the lock: only the leader touches its group's results until it marks them done.
  void write(const std::vector<Waiter*>& group) {
    std::vector<const Item*> items;
    items.reserve(group.size());
    for (const Waiter* w : group) items.push_back(w->item);
    auto outs = commit_(items);
    if (outs && outs->size() == group.size()) {
      for (std::size_t i = 0; i < group.size(); ++i) group[i]->result = std::move((*outs)[i]);
      return;
    }
    if (outs) {
      for (Waiter* w : group) {
        w->result = fail(ErrorCode::internal, "group commit: result count");
      }
      return;
    }
    if (group.size() == 1) {
      group[0]->result = std::unexpected(outs.error());
      return;
    }
    for (Waiter* w : group) {
      const Item* one[] = {w->item};
      auto alone = commit_(one);
      if (!alone) {
        w->result = std::unexpected(alone.error());
      } else if (alone->size() != 1) {
        w->result = fail(ErrorCode::internal, "group commit: result count");
      } else {
        w->result = std::move(alone->front());
      }
    }
  }

  CommitFn commit_;
  const std::size_t max_group_;
  mutable std::mutex mu_;
  std::deque<Waiter*> queue_;
  std::size_t groups_ = 0;
};

}  // namespace mcim::store
