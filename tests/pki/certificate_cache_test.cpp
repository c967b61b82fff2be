// The cache of parsed certificates (certificate_cache.h): a hit shares the X509 parsed first and
// outlives the caller's copy; other bytes, however close or however they hash, are other entries;
// failures are not kept; the limits evict the least recently used; threads may share it; and
// parse_certificate goes through it.
#include "pki/certificate_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/file.h"
#include "common/random.h"
#include "pki/certificate.h"
#include "pki/openssl.h"
#include "pki_test_util.h"

namespace mcim::pki {
namespace {

// Self-signed roots with distinct subjects: any certificate will do, the cache never looks inside.
class CertificateCacheTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto key = generate_p256_key();
    ASSERT_TRUE(key.has_value());
    SystemClock clock;
    OsRandom random;
    for (int i = 0; i < 6; ++i) {
      CertSpec spec;
      spec.profile = Profile::root_ca;
      spec.subject = "CN=cache test " + std::to_string(i) + ",O=mcim";
      auto cert = issue_certificate(spec, key->get(), nullptr, key->get(), clock, random);
      ASSERT_TRUE(cert.has_value()) << cert.error().message;
      ders_.push_back(certificate_der(cert->get()));
      pems_.push_back(*certificate_pem(cert->get()));
    }
  }
  static void TearDownTestSuite() {
    ders_.clear();
    pems_.clear();
  }

  static ByteView der(int i) { return ders_[static_cast<std::size_t>(i)]; }
  static ByteView pem(int i) { return bytes_of(pems_[static_cast<std::size_t>(i)]); }

  // The cache's parse with parse_certificate_uncached, counting the calls.
  Result<X509Ptr> parse(CertificateCache& cache, ByteView input) {
    return cache.parse(input, [this](ByteView in) {
      ++parses_;
      return parse_certificate_uncached(in, "input");
    });
  }

  static std::vector<ByteVec> ders_;
  static std::vector<std::string> pems_;
  int parses_ = 0;
};

std::vector<ByteVec> CertificateCacheTest::ders_;
std::vector<std::string> CertificateCacheTest::pems_;

Bytes<32> colliding_hash(ByteView) { return Bytes<32>{}; }

TEST_F(CertificateCacheTest, HitIsANewReferenceToTheSameObject) {
  CertificateCache cache;
  for (ByteView input : {pem(0), der(0)}) {
    auto first = parse(cache, input);
    ASSERT_TRUE(first.has_value()) << first.error().message;
    X509* const parsed = first->get();
    auto second = parse(cache, input);
    ASSERT_TRUE(second.has_value());
    EXPECT_EQ(second->get(), parsed);
    // Each caller owns a reference: freeing one leaves the other, and the cache's, usable.
    first->reset();
    EXPECT_EQ(certificate_der(second->get()), ders_[0]);
    second->reset();
    auto third = parse(cache, input);
    ASSERT_TRUE(third.has_value());
    EXPECT_EQ(third->get(), parsed);
    EXPECT_EQ(certificate_der(third->get()), ders_[0]);
  }
  // PEM and DER of one certificate are different bytes, hence two entries.
  EXPECT_EQ(parses_, 2);
  const CertificateCacheStats s = cache.stats();
  EXPECT_EQ(s.hits, 4u);
  EXPECT_EQ(s.misses, 2u);
  EXPECT_EQ(s.entries, 2u);
  EXPECT_EQ(s.bytes, pem(0).size() + der(0).size());
}

TEST_F(CertificateCacheTest, OneChangedByteIsAnotherCertificate) {
  CertificateCache cache;
  auto original = parse(cache, der(0));
  ASSERT_TRUE(original.has_value());
  // The last byte is in the signature, which parsing does not check: it still parses.
  ByteVec changed = ders_[0];
  changed.back() ^= 0x01;
  auto other = parse(cache, changed);
  ASSERT_TRUE(other.has_value()) << other.error().message;
  EXPECT_NE(other->get(), original->get());
  EXPECT_EQ(certificate_der(other->get()), changed);
  // A PEM with one more trailing newline parses to the same certificate, but as other bytes.
  const std::string longer = pems_[0] + "\n";
  auto from_pem = parse(cache, pem(0));
  auto from_longer = parse(cache, bytes_of(longer));
  ASSERT_TRUE(from_pem.has_value() && from_longer.has_value());
  EXPECT_NE(from_longer->get(), from_pem->get());
  EXPECT_EQ(parses_, 4);
}

TEST_F(CertificateCacheTest, CollidingDigestsAreComparedInFull) {
  CertificateCache cache({}, colliding_hash);
  auto a = parse(cache, der(0));
  auto b = parse(cache, der(1));
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_NE(b->get(), a->get());
  EXPECT_EQ(certificate_der(b->get()), ders_[1]);
  // The digest now names der(1)'s entry: der(0) is a miss, parsed again, never der(1)'s object.
  auto again = parse(cache, der(0));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(certificate_der(again->get()), ders_[0]);
  EXPECT_EQ(parses_, 3);
  EXPECT_EQ(cache.stats().hits, 0u);
  EXPECT_EQ(cache.stats().entries, 1u);
}

TEST_F(CertificateCacheTest, BadInputFailsAsUncachedAndIsNotKept) {
  CertificateCache cache;
  ByteVec truncated(ders_[0].begin(), ders_[0].begin() + 100);
  const std::string not_pem = "-----BEGIN CERTIFICATE-----\nnot base64\n";
  for (ByteView input : {ByteView(truncated), bytes_of(not_pem), ByteView()}) {
    const auto expected = parse_certificate_uncached(input, "input");
    ASSERT_FALSE(expected.has_value());
    for (int i = 0; i < 2; ++i) {
      const auto r = parse(cache, input);
      ASSERT_FALSE(r.has_value());
      EXPECT_EQ(r.error().code, ErrorCode::bad_format);
      EXPECT_EQ(r.error().message, expected.error().message);
    }
  }
  EXPECT_EQ(parses_, 6);
  EXPECT_EQ(cache.stats().entries, 0u);
  EXPECT_EQ(cache.stats().bytes, 0u);
}

TEST_F(CertificateCacheTest, EntryLimitEvictsTheLeastRecentlyUsed) {
  CertificateCache cache({.max_entries = 2});
  ASSERT_TRUE(parse(cache, der(0)).has_value());
  ASSERT_TRUE(parse(cache, der(1)).has_value());
  ASSERT_TRUE(parse(cache, der(0)).has_value());  // a hit: der(1) is now the oldest
  ASSERT_TRUE(parse(cache, der(2)).has_value());
  EXPECT_EQ(parses_, 3);
  EXPECT_EQ(cache.stats().entries, 2u);
  ASSERT_TRUE(parse(cache, der(0)).has_value());
  ASSERT_TRUE(parse(cache, der(2)).has_value());
  EXPECT_EQ(parses_, 3);
  ASSERT_TRUE(parse(cache, der(1)).has_value());
  EXPECT_EQ(parses_, 4);
  EXPECT_EQ(cache.stats().entries, 2u);
}

TEST_F(CertificateCacheTest, ByteLimitEvictsAndLargeInputsAreNotKept) {
  // Room for any two of the first three DER certificates (ECDSA signatures vary in length by a
  // byte or two) but not for all three.
  const std::size_t all = der(0).size() + der(1).size() + der(2).size();
  CertificateCache cache({.max_input = pem(0).size() - 1, .max_bytes = all - 1});
  for (int i : {0, 1, 2}) ASSERT_TRUE(parse(cache, der(i)).has_value());
  EXPECT_EQ(cache.stats().entries, 2u);
  EXPECT_EQ(cache.stats().bytes, der(1).size() + der(2).size());
  ASSERT_TRUE(parse(cache, der(0)).has_value());  // evicted first
  EXPECT_EQ(parses_, 4);
  // Over max_input: parsed every time, never held.
  auto big = parse(cache, pem(0));
  auto again = parse(cache, pem(0));
  ASSERT_TRUE(big.has_value() && again.has_value());
  EXPECT_NE(again->get(), big->get());
  EXPECT_EQ(parses_, 6);
  EXPECT_EQ(cache.stats().entries, 2u);
}

TEST_F(CertificateCacheTest, ParseCertificateGoesThroughTheProcessCache) {
  const CertificateCacheStats before = CertificateCache::process().stats();
  auto a = parse_certificate(der(3), "a");
  auto b = parse_certificate(der(3), "b");
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(b->get(), a->get());
  auto fresh = parse_certificate_uncached(der(3), "c");
  ASSERT_TRUE(fresh.has_value());
  EXPECT_NE(fresh->get(), a->get());
  // Errors as before the cache, each time, and nothing kept for them.
  for (int i = 0; i < 2; ++i) {
    const auto bad = parse_certificate(bytes_of("junk"), "x");
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().code, ErrorCode::bad_format);
    EXPECT_EQ(bad.error().message, "x: not an X.509 certificate (PEM or DER expected)");
  }
  const CertificateCacheStats after = CertificateCache::process().stats();
  EXPECT_EQ(after.hits, before.hits + 1);
  EXPECT_EQ(after.misses, before.misses + 3);
  EXPECT_EQ(after.entries, before.entries + 1);
}

// A PEM bundle: its certificates in order, each through the process cache (the same text in two
// files is one X509), blocks of other kinds passed over; a broken certificate block or none at all
// is bad_format naming the file.
TEST_F(CertificateCacheTest, LoadCertificatesTakesEachOfABundleThroughTheProcessCache) {
  testing::TempDir dir;
  const std::string key_block = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
  ASSERT_TRUE(write_file_atomic(dir / "a.pem", pems_[4] + key_block + pems_[5]).has_value());
  ASSERT_TRUE(write_file_atomic(dir / "b.pem", pems_[5]).has_value());
  auto a = load_certificates(dir / "a.pem");
  ASSERT_TRUE(a.has_value()) << a.error().message;
  ASSERT_EQ(a->size(), 2u);
  EXPECT_EQ(certificate_der((*a)[0].get()), ders_[4]);
  EXPECT_EQ(certificate_der((*a)[1].get()), ders_[5]);
  const CertificateCacheStats before = CertificateCache::process().stats();
  auto b = load_certificates(dir / "b.pem");
  ASSERT_TRUE(b.has_value()) << b.error().message;
  ASSERT_EQ(b->size(), 1u);
  EXPECT_EQ((*b)[0].get(), (*a)[1].get());
  EXPECT_EQ(CertificateCache::process().stats().hits, before.hits + 1);

  std::string broken = pems_[5];
  broken[broken.size() / 2] = '*';
  const std::pair<std::string, std::string> bad[] = {
      {pems_[4] + broken, "c.pem: certificate 2 is not an X.509 certificate"},
      {pems_[4] + pems_[5].substr(0, pems_[5].find("-----END")),
       "c.pem: certificate 2 has no END line"},
      {key_block, "c.pem: no PEM certificate in it"},
  };
  for (const auto& [text, message] : bad) {
    ASSERT_TRUE(write_file_atomic(dir / "c.pem", text).has_value());
    auto r = load_certificates(dir / "c.pem");
    ASSERT_FALSE(r.has_value()) << message;
    EXPECT_EQ(r.error().code, ErrorCode::bad_format);
    EXPECT_EQ(r.error().message, dir / message);
  }
}

// Threads hitting shared and private keys through a cache small enough to evict all the time.
TEST_F(CertificateCacheTest, ThreadsShareOneCache) {
  CertificateCache cache({.max_entries = 3});
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int n = 0; n < 300; ++n) {
        const int i = n % 3 == 0 ? t % 2 + 4 : n % 4;  // 0-3 shared, 4-5 by half of the threads
        auto cert = cache.parse(
            der(i), [](ByteView in) { return parse_certificate_uncached(in, "input"); });
        if (!cert || certificate_der(cert->get()) != ders_[static_cast<std::size_t>(i)]) ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  const CertificateCacheStats s = cache.stats();
  EXPECT_EQ(s.hits + s.misses, 1200u);
  EXPECT_LE(s.entries, 3u);
}

}  // namespace
}  // namespace mcim::pki
