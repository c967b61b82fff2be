#include "pki/certificate_cache.h"

#include <algorithm>
#include <cstring>

namespace mcim::pki {

CertificateCache::CertificateCache(CertificateCacheLimits limits, Hash hash)
    : limits_(limits), hash_(hash) {}

CertificateCache& CertificateCache::process() {
  static auto* cache = new CertificateCache();
  return *cache;
}

std::size_t CertificateCache::DigestHash::operator()(const Bytes<32>& d) const {
  // Already a uniform hash (SHA-256 in production); a stub's collisions only cost a bucket.
  std::size_t h = 0;
  std::memcpy(&h, d.data(), sizeof h);
  return h;
}

X509Ptr CertificateCache::find(const Bytes<32>& digest, ByteView input) {
  {
    std::lock_guard lock(mutex_);
    const auto it = index_.find(digest);
    // The digest only finds the candidate: the bytes decide, so a collision is a miss.
    if (it != index_.end() && std::ranges::equal(it->second->input, input)) {
      lru_.splice(lru_.begin(), lru_, it->second);
      hits_.fetch_add(1, std::memory_order_relaxed);
      return up_ref(it->second->cert.get());
    }
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  return nullptr;
}

void CertificateCache::insert(const Bytes<32>& digest, ByteView input, X509* cert) {
  // Built and freed outside the lock: only list and index updates happen under it.
  Lru fresh;
  fresh.push_back(Entry{digest, ByteVec(input.begin(), input.end()), up_ref(cert)});
  Lru evicted;
  {
    std::lock_guard lock(mutex_);
    // Another thread may have parsed the same bytes meanwhile, or (with a colliding stub) other
    // bytes with this digest: the newest entry wins either way.
    if (const auto it = index_.find(digest); it != index_.end()) {
      bytes_ -= it->second->input.size();
      evicted.splice(evicted.end(), lru_, it->second);
      index_.erase(it);
    }
    index_.emplace(digest, fresh.begin());  // the iterator stays valid through the splice
    lru_.splice(lru_.begin(), fresh);
    bytes_ += input.size();
    evict_into(evicted);
  }
}

void CertificateCache::evict_into(Lru& out) {
  while (!lru_.empty() && (lru_.size() > limits_.max_entries || bytes_ > limits_.max_bytes)) {
    const auto last = std::prev(lru_.end());
    index_.erase(last->digest);
    bytes_ -= last->input.size();
    out.splice(out.end(), lru_, last);
  }
}

CertificateCacheStats CertificateCache::stats() const {
  CertificateCacheStats s;
  s.hits = hits_.load(std::memory_order_relaxed);
  s.misses = misses_.load(std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  s.entries = lru_.size();
  s.bytes = bytes_;
  return s;
}

}  // namespace mcim::pki
