#include "roles/ro/dpf_sessions.h"

#include <algorithm>
#include <utility>

namespace mcim::ro {

void DpfSessions::put(store::Session s, store::Time now) {
  std::lock_guard lock(mu_);
  const std::size_t capacity = std::max<std::size_t>(capacity_, 1);
  while (!order_.empty()) {
    auto oldest = sessions_.find(order_.front());
    const bool expired = oldest == sessions_.end() || oldest->second.expires <= now;
    if (!expired && sessions_.size() < capacity) break;
    if (oldest != sessions_.end()) sessions_.erase(oldest);
    order_.pop_front();
  }
  order_.push_back(s.id);
  std::string id = s.id;
  sessions_.insert_or_assign(std::move(id), std::move(s));
}

std::optional<store::Session> DpfSessions::find(std::string_view id, store::Time now) const {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(std::string(id));
  if (it == sessions_.end() || it->second.expires <= now) return std::nullopt;
  return it->second;
}

std::size_t DpfSessions::size() const {
  std::lock_guard lock(mu_);
  return sessions_.size();
}

}  // namespace mcim::ro
