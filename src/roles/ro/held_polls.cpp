#include "roles/ro/held_polls.h"

#include <charconv>

#include "common/ascii.h"
#include "common/thread_name.h"

namespace mcim::ro {
namespace {

// versions_ is forgotten this often: it only has to bridge the moment between a handler's
// lookup and its wait(), and must not grow with every PCID ever notified.
constexpr std::chrono::seconds kForgetVersions{10};

}  // namespace

std::chrono::seconds preferred_wait(std::string_view prefer) {
  while (!prefer.empty()) {
    const auto comma = prefer.find(',');
    std::string_view item = prefer.substr(0, comma);
    prefer = comma == std::string_view::npos ? std::string_view{} : prefer.substr(comma + 1);
    item = trim_ascii_space(item.substr(0, item.find(';')));
    const auto eq = item.find('=');
    if (eq == std::string_view::npos ||
        !ascii_iequals(trim_ascii_space(item.substr(0, eq)), "wait")) {
      continue;
    }
    std::string_view value = trim_ascii_space(item.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    if (value.empty() || value.size() > 9 || !ascii_digits(value)) return std::chrono::seconds(0);
    std::int64_t n = 0;
    std::from_chars(value.data(), value.data() + value.size(), n);
    return std::chrono::seconds(n);
  }
  return std::chrono::seconds(0);
}

PollWaiters::PollWaiters(std::size_t max_waiting) : max_waiting_(max_waiting) {
  thread_ = std::thread([this] { run(); });
  set_thread_name(thread_, "ro-polls");
}

PollWaiters::~PollWaiters() {
  stop();
  if (thread_.joinable()) thread_.join();
}

std::uint64_t PollWaiters::version(std::string_view pcid) const {
  std::lock_guard lock(mu_);
  return version_locked(pcid);
}

std::uint64_t PollWaiters::version_locked(std::string_view pcid) const {
  const auto it = versions_.find(std::string(pcid));
  const std::uint64_t count = it == versions_.end() ? 0 : it->second;
  return (cleared_ << 32) | (count & 0xffff'ffffu);
}

bool PollWaiters::accepting() const {
  std::lock_guard lock(mu_);
  return !stopping_ && waiters_.size() < max_waiting_;
}

void PollWaiters::wait(const std::string& pcid, std::uint64_t seen, SteadyTime deadline,
                       net::Wake wake) {
  {
    std::unique_lock lock(mu_);
    const bool at_once = stopping_ || waiters_.size() >= max_waiting_ ||
                         version_locked(pcid) != seen ||
                         deadline <= std::chrono::steady_clock::now();
    if (!at_once) {
      const std::uint64_t id = next_id_++;
      const bool earliest = by_deadline_.empty() || deadline < by_deadline_.begin()->first;
      waiters_.emplace(id, Waiter{pcid, deadline, std::move(wake)});
      by_pcid_.emplace(pcid, id);
      by_deadline_.emplace(deadline, id);
      if (earliest) changed_.notify_one();
      return;
    }
  }
  wake();
}

net::Wake PollWaiters::take(std::uint64_t id) {
  auto it = waiters_.find(id);
  net::Wake wake = std::move(it->second.wake);
  by_deadline_.erase({it->second.deadline, id});
  auto [first, last] = by_pcid_.equal_range(it->second.pcid);
  for (auto p = first; p != last; ++p) {
    if (p->second == id) {
      by_pcid_.erase(p);
      break;
    }
  }
  waiters_.erase(it);
  return wake;
}

void PollWaiters::notify(std::string_view pcid) {
  std::vector<net::Wake> woken;
  {
    std::lock_guard lock(mu_);
    ++versions_[std::string(pcid)];
    auto [first, last] = by_pcid_.equal_range(pcid);
    std::vector<std::uint64_t> ids;
    for (auto p = first; p != last; ++p) ids.push_back(p->second);
    for (const std::uint64_t id : ids) woken.push_back(take(id));
  }
  for (auto& w : woken) w();
}

void PollWaiters::stop() {
  std::vector<net::Wake> woken;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    while (!waiters_.empty()) woken.push_back(take(waiters_.begin()->first));
  }
  changed_.notify_all();
  for (auto& w : woken) w();
}

std::size_t PollWaiters::waiting() const {
  std::lock_guard lock(mu_);
  return waiters_.size();
}

void PollWaiters::run() {
  auto forget_at = std::chrono::steady_clock::now() + kForgetVersions;
  std::unique_lock lock(mu_);
  while (!stopping_) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= forget_at) {
      versions_.clear();
      ++cleared_;
      forget_at = now + kForgetVersions;
    }
    std::vector<net::Wake> woken;
    while (!by_deadline_.empty() && by_deadline_.begin()->first <= now) {
      woken.push_back(take(by_deadline_.begin()->second));
    }
    if (!woken.empty()) {
      lock.unlock();
      for (auto& w : woken) w();
      lock.lock();
      continue;
    }
    const auto next =
        by_deadline_.empty() ? forget_at : std::min(forget_at, by_deadline_.begin()->first);
    changed_.wait_until(lock, next);
  }
}

}  // namespace mcim::ro
