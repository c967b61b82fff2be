// Parsed certificates by their exact input bytes: the services see the same few supplier/model CA
// certificates in every device's platform chain and the same signer certificates in every signed
// envelope, and OpenSSL 3 spends most of a parse decoding the public key through its providers.
// A hit is a new reference (X509_up_ref) to the X509 parsed the first time, shared by everyone who
// asked for the same bytes: callers must not mutate it (OpenSSL 3 locks the extension data it
// computes lazily, so checking, verifying and encoding are fine). Thread-safe; the lock is held
// for the lookup and the insert, never while parsing. Bounded, see CertificateCacheLimits.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "common/bytes.h"
#include "common/error.h"
#include "pki/openssl.h"

namespace mcim::pki {

// What the cache may hold, so that certificates an attacker sends (a platform chain, an
// envelope's certificates) cannot grow it without bound: at most max_entries inputs of at most
// max_input bytes each (larger ones are parsed and not kept), and at most max_bytes of input in
// all; the least recently used entries go first. A parsed X509 takes a few times its DER size,
// so the defaults keep the cache's memory within some tens of MiB whatever it is given.
struct CertificateCacheLimits {
  std::size_t max_entries = 4096;
  std::size_t max_input = 16 * 1024;
  std::size_t max_bytes = 8 * 1024 * 1024;
};

struct CertificateCacheStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;  // parses, whether they failed, were too large or were kept
  std::size_t entries = 0;
  std::size_t bytes = 0;  // input bytes held
};

class CertificateCache {
 public:
  // The hash is a seam for tests (a colliding one); entries are always compared in full.
  using Hash = Bytes<32> (*)(ByteView);

  explicit CertificateCache(CertificateCacheLimits limits = {}, Hash hash = sha256);
  CertificateCache(const CertificateCache&) = delete;
  CertificateCache& operator=(const CertificateCache&) = delete;

  // The one parse_certificate uses. Never destroyed: it would free X509 objects during static
  // destruction, perhaps after OpenSSL's own cleanup.
  static CertificateCache& process();

  // The certificate `input` parses to: a shared reference when the same bytes were parsed
  // before, else parse(input), which is kept if it succeeds. Failures are never cached: the
  // next call parses again and gets parse's own error.
  template <class Parse>
  Result<X509Ptr> parse(ByteView input, Parse&& parse_uncached) {
    if (input.size() > limits_.max_input) {
      misses_.fetch_add(1, std::memory_order_relaxed);
      return parse_uncached(input);
    }
    const Bytes<32> digest = hash_(input);
    if (X509Ptr hit = find(digest, input)) return hit;
    Result<X509Ptr> parsed = parse_uncached(input);
    if (parsed && *parsed) insert(digest, input, parsed->get());
    return parsed;
  }

  CertificateCacheStats stats() const;

 private:
  struct Entry {
    Bytes<32> digest;
    ByteVec input;
    X509Ptr cert;
  };
  struct DigestHash {
    std::size_t operator()(const Bytes<32>& d) const;
  };
  using Lru = std::list<Entry>;  // most recently used first

  // A new reference to the entry for exactly `input`, or null (and a miss counted).
  X509Ptr find(const Bytes<32>& digest, ByteView input);
  void insert(const Bytes<32>& digest, ByteView input, X509* cert);
  // Moves entries past the limits (oldest first) into `out`, to be freed after the unlock.
  void evict_into(Lru& out);

  const CertificateCacheLimits limits_;
  const Hash hash_;
  std::atomic<std::uint64_t> hits_{0}, misses_{0};
  mutable std::mutex mutex_;
  Lru lru_;                                                         // guarded by mutex_
  std::unordered_map<Bytes<32>, Lru::iterator, DigestHash> index_;  // guarded by mutex_
  std::size_t bytes_ = 0;                                           // guarded by mutex_
};

}  // namespace mcim::pki
