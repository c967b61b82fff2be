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

void SuccessorRefusals::record(std::string_view pcid, std::string_view successor,
                               const store::Registration& r) {
  std::lock_guard lock(mu_);
  refusals_.insert_or_assign(std::string(pcid),
                             Refusal{std::string(successor), r.refusal, r.refused});
}

void SuccessorRefusals::forget(std::string_view pcid) {
  std::lock_guard lock(mu_);
  refusals_.erase(std::string(pcid));
}

std::string SuccessorRefusals::refused_by(const store::Registration& r) {
  std::lock_guard lock(mu_);
  auto it = refusals_.find(r.pcid);
  if (it == refusals_.end()) return {};
  if (r.refusal.empty() || it->second.code != r.refusal || it->second.at != r.refused) {
    refusals_.erase(it);  // the registration's refusal is another one now (or none)
    return {};
  }
  return it->second.by;
}

}  // namespace mcim::ro
