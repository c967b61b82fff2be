// One suite for every adapter of the storage port (store.h): SQLite on a file, SQLite in memory,
// PostgreSQL (a throwaway server, pg_server.h) and the in-memory store. Each test gets a fresh,
// empty database. Then what only the SQL adapters have: URLs, migrations, file settings.
#include "store/store.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "pg_server.h"
#include "store/migrations.h"

namespace mcim::store {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::PgServer;

Time at(std::int64_t s) { return Time(std::chrono::seconds(s)); }

// ---- Where a test's database lives ---------------------------------------------------------

// A fresh temporary directory, removed with the object.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "mcim-store-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// One empty database of one backend, for one test.
class Location {
 public:
  virtual ~Location() = default;
  virtual std::string url() const = 0;
  // Whether opening url() again reaches the same data (two service instances on one database).
  virtual bool shared() const = 0;
};

class SqliteFile final : public Location {
 public:
  std::string url() const override { return "sqlite:" + file(); }
  bool shared() const override { return true; }
  std::string file() const { return dir_.path() + "/store.db"; }

 private:
  TempDir dir_;
};

class Fixed final : public Location {
 public:
  explicit Fixed(std::string url) : url_(std::move(url)) {}
  std::string url() const override { return url_; }
  bool shared() const override { return false; }

 private:
  std::string url_;
};

class PgSchema final : public Location {
 public:
  explicit PgSchema(std::string url) : url_(std::move(url)) {}
  ~PgSchema() override { PgServer::instance().drop_schema(url_); }
  std::string url() const override { return url_; }
  bool shared() const override { return true; }

 private:
  std::string url_;
};

struct BackendParam {
  std::string name;
  std::function<Result<std::unique_ptr<Location>>()> make;
  bool optional = false;  // skipped, not failed, when it cannot be opened (a stub adapter)
};

void PrintTo(const BackendParam& p, std::ostream* os) { *os << p.name; }

Result<std::unique_ptr<Location>> make_pg() {
  auto url = PgServer::instance().create_schema();
  if (!url) return std::unexpected(url.error());
  return std::make_unique<PgSchema>(*url);
}

const std::vector<BackendParam>& backends() {
  static const std::vector<BackendParam> all = {
      {"sqlite_file",
       [] { return Result<std::unique_ptr<Location>>(std::make_unique<SqliteFile>()); }},
      {"sqlite_memory",
       [] {
         return Result<std::unique_ptr<Location>>(std::make_unique<Fixed>("sqlite::memory:"));
       }},
      {"postgresql", make_pg},
      {"memory",
       [] { return Result<std::unique_ptr<Location>>(std::make_unique<Fixed>("memory:")); }, true},
  };
  return all;
}

// ---- The shared suite ------------------------------------------------------------------------

class StoreTest : public ::testing::TestWithParam<BackendParam> {
 protected:
  void SetUp() override {
    auto location = GetParam().make();
    ASSERT_TRUE(location) << GetParam().name << ": " << fmt::to_string(location.error());
    location_ = std::move(*location);
    auto db = open_database(location_->url());
    if (!db && GetParam().optional) GTEST_SKIP() << fmt::to_string(db.error());
    ASSERT_TRUE(db) << fmt::to_string(db.error());
    db_ = std::move(*db);
  }
  void TearDown() override {
    db_.reset();
    location_.reset();
  }

  // A second Database object on the same data when the backend has one (a second service
  // instance: its own connections); otherwise the same object.
  Database& second() {
    if (!location_->shared()) return *db_;
    if (second_ == nullptr) {
      auto db = open_database(location_->url());
      EXPECT_TRUE(db) << fmt::to_string(db.error());
      if (db) second_ = std::move(*db);
    }
    return second_ != nullptr ? *second_ : *db_;
  }

  std::unique_ptr<Location> location_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<Database> second_;
};

#define ASSERT_OK(expr)                                                         \
  do {                                                                          \
    auto&& r_ = (expr);                                                         \
    ASSERT_TRUE(r_.has_value()) << #expr << ": " << fmt::to_string(r_.error()); \
  } while (false)

#define EXPECT_CODE(expr, expected_code)                                     \
  do {                                                                       \
    auto&& r_ = (expr);                                                      \
    ASSERT_FALSE(r_.has_value()) << #expr << " succeeded";                   \
    EXPECT_EQ(r_.error().code, expected_code) << fmt::to_string(r_.error()); \
  } while (false)

PcidSubscription make_pcid(std::string id, std::uint8_t seed, std::int64_t dormant_until = 1000) {
  PcidSubscription p;
  p.pcid = std::move(id);
  p.batch = "batch-7";
  for (std::size_t i = 0; i < 16; ++i) {
    p.k.mut()[i] = static_cast<std::uint8_t>(seed + i);
    p.opc.mut()[i] = static_cast<std::uint8_t>(0xa0 + seed + i);
  }
  p.ind_bits = 5;
  p.dormant_until = at(dormant_until);
  p.not_after = at(10'000'000);
  return p;
}

std::vector<PcidSubscription> pcids(const std::string& prefix, int n) {
  std::vector<PcidSubscription> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(make_pcid(fmt::format("{}{:04}", prefix, i), static_cast<std::uint8_t>(i)));
  }
  return out;
}

TEST_P(StoreTest, ReportsItsBackendAndSchemaVersion) {
  const std::string expected = GetParam().name.starts_with("sqlite") ? "sqlite" : GetParam().name;
  EXPECT_EQ(db_->backend(), expected);
  if (expected == "memory") {
    EXPECT_GE(db_->schema_version(), 1);
  } else {
    EXPECT_EQ(db_->schema_version(), latest_schema_version());
  }
}

// ---- PCID subscriptions ----

TEST_P(StoreTest, PcidBatchRoundTripsEveryField) {
  auto batch = pcids("00101000000", 3);
  batch[1].status = PcidStatus::active;
  batch[1].active_until = at(4242);
  batch[2].ind_bits = 0;
  batch[2].batch = "";  // empty text is a value, not NULL
  batch[2].status = PcidStatus::expired;
  batch[2].expired_at = at(777);
  ASSERT_OK(db_->pcids().add_batch(batch));
  auto n = db_->pcids().count();
  ASSERT_OK(n);
  EXPECT_EQ(*n, 3u);
  for (const auto& want : batch) {
    auto got = db_->pcids().find(want.pcid);
    ASSERT_OK(got);
    ASSERT_TRUE(got->has_value()) << want.pcid;
    const PcidSubscription& p = **got;
    EXPECT_EQ(p.pcid, want.pcid);
    EXPECT_EQ(p.batch, want.batch);
    EXPECT_EQ(p.k.get(), want.k.get());
    EXPECT_EQ(p.opc.get(), want.opc.get());
    EXPECT_EQ(p.ind_bits, want.ind_bits);
    EXPECT_EQ(p.status, want.status);
    EXPECT_EQ(p.dormant_until, want.dormant_until);
    EXPECT_EQ(p.active_until, want.active_until);
    EXPECT_EQ(p.not_after, want.not_after);
    EXPECT_EQ(p.expired_at, want.expired_at);
  }
}

TEST_P(StoreTest, PcidFindUnknownIsEmpty) {
  auto got = db_->pcids().find("001010999999999");
  ASSERT_OK(got);
  EXPECT_FALSE(got->has_value());
  auto n = db_->pcids().count();
  ASSERT_OK(n);
  EXPECT_EQ(*n, 0u);
}

TEST_P(StoreTest, PcidBatchIsAllOrNothing) {
  ASSERT_OK(db_->pcids().add_batch({make_pcid("001010000000002", 2)}));
  std::vector<PcidSubscription> batch = {
      make_pcid("001010000000001", 1), make_pcid("001010000000003", 3),
      make_pcid("001010000000002", 0x77), make_pcid("001010000000004", 4)};
  auto r = db_->pcids().add_batch(batch);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::already_exists);
  EXPECT_THAT(r.error().message, HasSubstr("001010000000002"));
  EXPECT_THAT(r.error().message, Not(HasSubstr("7778797a")));  // never a key
  auto n = db_->pcids().count();
  ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
  auto first = db_->pcids().find("001010000000001");
  ASSERT_OK(first);
  EXPECT_FALSE(first->has_value());
  auto kept = db_->pcids().find("001010000000002");
  ASSERT_OK(kept);
  ASSERT_TRUE(kept->has_value());
  EXPECT_EQ((*kept)->k.get(), make_pcid("x", 2).k.get());  // the stored one, untouched
}

TEST_P(StoreTest, PcidBatchRefusesADuplicateWithinItself) {
  auto r = db_->pcids().add_batch({make_pcid("001010000000001", 1), make_pcid("001010000000005", 5),
                                   make_pcid("001010000000001", 9)});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::already_exists);
  EXPECT_THAT(r.error().message, HasSubstr("001010000000001"));
  auto n = db_->pcids().count();
  ASSERT_OK(n);
  EXPECT_EQ(*n, 0u);
}

TEST_P(StoreTest, PcidEmptyBatchChangesNothing) {
  ASSERT_OK(db_->pcids().add_batch({}));
  auto n = db_->pcids().count();
  ASSERT_OK(n);
  EXPECT_EQ(*n, 0u);
}

// F8: a renewal is staged without touching the credential and completed once, atomically.
TEST_P(StoreTest, PcidRenewalIsStagedThenCompletedOnce) {
  const std::string pcid = "001010000000001";
  ASSERT_OK(db_->pcids().add_batch({make_pcid(pcid, 1)}));
  PcidRenewal r;
  r.pcid = pcid;
  r.package_id = "renewal-1";
  for (std::size_t i = 0; i < 16; ++i) {
    r.k.mut()[i] = static_cast<std::uint8_t>(0x50 + i);
    r.opc.mut()[i] = static_cast<std::uint8_t>(0x70 + i);
  }
  r.not_after = at(20'000'000);
  EXPECT_CODE(db_->pcids().complete_renewal(pcid, "renewal-1"), ErrorCode::transition_refused);
  PcidRenewal unknown = r;
  unknown.pcid = "001010000000009";
  EXPECT_CODE(db_->pcids().stage_renewal(unknown), ErrorCode::not_found);
  EXPECT_CODE(db_->pcids().complete_renewal("001010000000009", "renewal-1"), ErrorCode::not_found);
  ASSERT_OK(db_->pcids().stage_renewal(r));
  const PcidSubscription before = make_pcid(pcid, 1);
  auto staged = db_->pcids().find(pcid);
  ASSERT_OK(staged);
  EXPECT_EQ((*staged)->renewal_package, "renewal-1");
  EXPECT_EQ((*staged)->k.get(), before.k.get());  // staged only
  EXPECT_EQ((*staged)->not_after, before.not_after);
  EXPECT_CODE(db_->pcids().complete_renewal(pcid, "renewal-0"), ErrorCode::transition_refused);
  ASSERT_OK(db_->pcids().complete_renewal(pcid, "renewal-1"));
  auto done = db_->pcids().find(pcid);
  ASSERT_OK(done);
  EXPECT_EQ((*done)->renewal_package, "");
  EXPECT_EQ((*done)->k.get(), r.k.get());
  EXPECT_EQ((*done)->opc.get(), r.opc.get());
  EXPECT_EQ((*done)->not_after, r.not_after);
  EXPECT_EQ((*done)->status, before.status);
  EXPECT_CODE(db_->pcids().complete_renewal(pcid, "renewal-1"), ErrorCode::transition_refused);
}

TEST_P(StoreTest, PcidActivateMakesDormantAndActiveOnesActiveUntil) {
  ASSERT_OK(db_->pcids().add_batch({make_pcid("001010000000001", 1)}));
  ASSERT_OK(db_->pcids().activate("001010000000001", at(5000)));
  auto p = db_->pcids().find("001010000000001");
  ASSERT_OK(p);
  EXPECT_EQ((*p)->status, PcidStatus::active);
  EXPECT_EQ((*p)->active_until, at(5000));
  ASSERT_OK(db_->pcids().activate("001010000000001", at(6000)));  // extended
  p = db_->pcids().find("001010000000001");
  ASSERT_OK(p);
  EXPECT_EQ((*p)->status, PcidStatus::active);
  EXPECT_EQ((*p)->active_until, at(6000));
}

TEST_P(StoreTest, PcidActivateUnknownIsNotFound) {
  EXPECT_CODE(db_->pcids().activate("001010000000009", at(5000)), ErrorCode::not_found);
}

TEST_P(StoreTest, PcidActivateExpiredIsRefusedAndChangesNothing) {
  ASSERT_OK(db_->pcids().add_batch({make_pcid("001010000000001", 1, 1000)}));
  auto n = db_->pcids().expire_dormant(at(2000));
  ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
  EXPECT_CODE(db_->pcids().activate("001010000000001", at(5000)), ErrorCode::transition_refused);
  auto p = db_->pcids().find("001010000000001");
  ASSERT_OK(p);
  EXPECT_EQ((*p)->status, PcidStatus::expired);
  EXPECT_EQ((*p)->active_until, Time{});
}

TEST_P(StoreTest, PcidExpireDormantTakesOnlyDormantOnesPastTheirDeadline) {
  ASSERT_OK(db_->pcids().add_batch({make_pcid("001010000000001", 1, 1000),
                                    make_pcid("001010000000002", 2, 3000),
                                    make_pcid("001010000000003", 3, 500)}));
  ASSERT_OK(db_->pcids().activate("001010000000003", at(9000)));
  auto n = db_->pcids().expire_dormant(at(1000));  // strictly before now
  ASSERT_OK(n);
  EXPECT_EQ(*n, 0u);
  n = db_->pcids().expire_dormant(at(2000));
  ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
  n = db_->pcids().expire_dormant(at(2000));
  ASSERT_OK(n);
  EXPECT_EQ(*n, 0u);
  const std::map<std::string, PcidStatus> want = {{"001010000000001", PcidStatus::expired},
                                                  {"001010000000002", PcidStatus::dormant},
                                                  {"001010000000003", PcidStatus::active}};
  for (const auto& [id, status] : want) {
    auto p = db_->pcids().find(id);
    ASSERT_OK(p);
    EXPECT_EQ((*p)->status, status) << id;
  }
}

// ---- SQN state ----

TEST_P(StoreTest, SqnReserveStartsAtZeroAndAdvances) {
  auto cur = db_->sqns().current("001011234567890");
  ASSERT_OK(cur);
  EXPECT_EQ(*cur, 0u);
  auto first = db_->sqns().reserve("001011234567890", 3, 100);
  ASSERT_OK(first);
  EXPECT_EQ(*first, 0u);  // the caller uses 1..3
  first = db_->sqns().reserve("001011234567890", 2, 100);
  ASSERT_OK(first);
  EXPECT_EQ(*first, 3u);
  cur = db_->sqns().current("001011234567890");
  ASSERT_OK(cur);
  EXPECT_EQ(*cur, 5u);
  first = db_->sqns().reserve("001011234567890", 0, 100);  // nothing reserved, nothing moves
  ASSERT_OK(first);
  EXPECT_EQ(*first, 5u);
}

TEST_P(StoreTest, SqnReserveReachesSeqMaxExactlyThenIsExhausted) {
  const std::string imsi = "001011234567890";
  auto first = db_->sqns().reserve(imsi, 10, 10);
  ASSERT_OK(first);
  EXPECT_EQ(*first, 0u);
  EXPECT_CODE(db_->sqns().reserve(imsi, 1, 10), ErrorCode::sqn_exhausted);
  EXPECT_CODE(db_->sqns().reserve(imsi, 5, 14), ErrorCode::sqn_exhausted);
  auto cur = db_->sqns().current(imsi);
  ASSERT_OK(cur);
  EXPECT_EQ(*cur, 10u);  // nothing changed
  first = db_->sqns().reserve(imsi, 4, 14);
  ASSERT_OK(first);
  EXPECT_EQ(*first, 10u);
}

TEST_P(StoreTest, SqnReserveBeyondSeqMaxOnANewImsiCreatesNothing) {
  EXPECT_CODE(db_->sqns().reserve("001011234567891", 11, 10), ErrorCode::sqn_exhausted);
  auto cur = db_->sqns().current("001011234567891");
  ASSERT_OK(cur);
  EXPECT_EQ(*cur, 0u);
}

TEST_P(StoreTest, SqnHandlesRealisticAndUnboundedLimits) {
  const std::uint64_t max_seq = (std::uint64_t{1} << 43) - 1;  // 48-bit SQN, IND of 5 bits
  auto he = db_->sqns().resynchronise("001011234567890", max_seq - 1);
  ASSERT_OK(he);
  auto first = db_->sqns().reserve("001011234567890", 1, max_seq);
  ASSERT_OK(first);
  EXPECT_EQ(*first, max_seq - 1);
  EXPECT_CODE(db_->sqns().reserve("001011234567890", 1, max_seq), ErrorCode::sqn_exhausted);
  first = db_->sqns().reserve("001011234567892", 7, UINT64_MAX);  // "no limit"
  ASSERT_OK(first);
  EXPECT_EQ(*first, 0u);
}

TEST_P(StoreTest, SqnResynchroniseKeepsTheMaximum) {
  const std::string imsi = "001011234567890";
  ASSERT_OK(db_->sqns().reserve(imsi, 5, 1000));
  auto he = db_->sqns().resynchronise(imsi, 3);  // SEQ_MS below SEQ_HE: unchanged
  ASSERT_OK(he);
  EXPECT_EQ(*he, 5u);
  he = db_->sqns().resynchronise(imsi, 40);
  ASSERT_OK(he);
  EXPECT_EQ(*he, 40u);
  auto first = db_->sqns().reserve(imsi, 1, 1000);
  ASSERT_OK(first);
  EXPECT_EQ(*first, 40u);                                // the next vector is above SEQ_MS
  he = db_->sqns().resynchronise("001011234567899", 7);  // no row yet
  ASSERT_OK(he);
  EXPECT_EQ(*he, 7u);
}

TEST_P(StoreTest, SqnStateIsPerImsi) {
  ASSERT_OK(db_->sqns().reserve("001011234567890", 5, 100));
  auto first = db_->sqns().reserve("001011234567891", 2, 100);
  ASSERT_OK(first);
  EXPECT_EQ(*first, 0u);
  auto cur = db_->sqns().current("001011234567890");
  ASSERT_OK(cur);
  EXPECT_EQ(*cur, 5u);
}

// Two service instances (two Database objects: their own connections) reserving on one IMSI
// from several threads each: every range is disjoint and together they tile 1..SEQ_HE.
TEST_P(StoreTest, ConcurrentReservationsAreDisjointAndAddUp) {
  constexpr int kThreadsPerInstance = 4, kRounds = 25;
  const std::string imsi = "001019999999999";
  Database* instances[] = {db_.get(), &second()};
  std::mutex mu;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;  // (first, count), guarded by mu
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2 * kThreadsPerInstance; ++t) {
    threads.emplace_back([&, t] {
      Database& db = *instances[t % 2];
      for (int i = 0; i < kRounds; ++i) {
        const std::uint64_t count = 1 + static_cast<std::uint64_t>((t + i) % 4);
        auto first = db.sqns().reserve(imsi, count, 1'000'000);
        if (!first) {
          ++failures;
          ADD_FAILURE() << fmt::to_string(first.error());
          continue;
        }
        std::lock_guard lock(mu);
        ranges.emplace_back(*first, count);
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  std::sort(ranges.begin(), ranges.end());
  std::uint64_t next = 0;
  for (const auto& [first, count] : ranges) {
    ASSERT_EQ(first, next) << "ranges overlap or leave a gap";
    next = first + count;
  }
  auto cur = db_->sqns().current(imsi);
  ASSERT_OK(cur);
  EXPECT_EQ(*cur, next);
}

// The seq_max check is part of the atomic statement: racing reservations never overshoot.
TEST_P(StoreTest, ConcurrentReservationsStopExactlyAtSeqMax) {
  constexpr std::uint64_t kMax = 100, kCount = 3;
  const std::string imsi = "001019999999998";
  Database* instances[] = {db_.get(), &second()};
  std::atomic<std::uint64_t> granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (;;) {
        auto first = instances[t % 2]->sqns().reserve(imsi, kCount, kMax);
        if (!first) {
          EXPECT_EQ(first.error().code, ErrorCode::sqn_exhausted) << fmt::to_string(first.error());
          return;
        }
        granted += kCount;
      }
    });
  }
  for (auto& th : threads) th.join();
  auto cur = db_->sqns().current(imsi);
  ASSERT_OK(cur);
  EXPECT_EQ(*cur, granted.load());
  EXPECT_EQ(*cur, kMax - kMax % kCount);
}

// ---- Registrations ----

Registration make_registration(std::string pcid, std::string sho) {
  Registration r;
  r.pcid = std::move(pcid);
  r.device_id = "device-1";
  r.sho = std::move(sho);
  r.dpf_url = "https://dpf.ro.example:8443/packages";
  for (std::size_t i = 0; i < r.dpf_key_pin.size(); ++i) {
    r.dpf_key_pin[i] = static_cast<std::uint8_t>(255 - i);
  }
  r.apn = "provisioning.ro";
  r.created = at(1700000000);
  for (std::size_t i = 0; i < r.bootstrap_key.get().size(); ++i) {
    r.bootstrap_key.mut()[i] = static_cast<std::uint8_t>(i * 7 + 1);
  }
  return r;
}

TEST_P(StoreTest, RegistrationPutFindAndReplaceBySameSho) {
  auto r = make_registration("001010000000001", "sho-a");
  ASSERT_OK(db_->registrations().put(r));
  auto got = db_->registrations().find(r.pcid);
  ASSERT_OK(got);
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->device_id, r.device_id);
  EXPECT_EQ((*got)->sho, r.sho);
  EXPECT_EQ((*got)->dpf_url, r.dpf_url);
  EXPECT_EQ((*got)->dpf_key_pin, r.dpf_key_pin);
  EXPECT_EQ((*got)->apn, r.apn);
  EXPECT_EQ((*got)->created, r.created);
  EXPECT_EQ((*got)->bootstrap_key.get(), r.bootstrap_key.get());
  EXPECT_EQ((*got)->refusal, "");
  // The SHO's refusal is kept with the registration; a new registration carries its own (none).
  r.refusal = "measurement_mismatch";
  r.refused = at(1700000050);
  ASSERT_OK(db_->registrations().put(r));
  got = db_->registrations().find(r.pcid);
  ASSERT_OK(got);
  EXPECT_EQ((*got)->refusal, "measurement_mismatch");
  EXPECT_EQ((*got)->refused, r.refused);
  r.refusal.clear();
  r.refused = {};
  r.dpf_url = "https://dpf2.ro.example/packages";
  r.bootstrap_key.mut()[0] ^= 0xff;
  r.device_id = "device-2";
  r.created = at(1700000100);
  ASSERT_OK(db_->registrations().put(r));
  got = db_->registrations().find(r.pcid);
  ASSERT_OK(got);
  EXPECT_EQ((*got)->dpf_url, r.dpf_url);
  EXPECT_EQ((*got)->device_id, "device-2");
  EXPECT_EQ((*got)->created, r.created);
  EXPECT_EQ((*got)->bootstrap_key.get(), r.bootstrap_key.get());
  EXPECT_EQ((*got)->refusal, "");
  auto none = db_->registrations().find("001010000000002");
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
}

TEST_P(StoreTest, RegistrationHeldByAnotherShoCannotBeReplaced) {
  ASSERT_OK(db_->registrations().put(make_registration("001010000000001", "sho-a")));
  auto other = make_registration("001010000000001", "sho-b");
  other.dpf_url = "https://evil.example/";
  auto r = db_->registrations().put(other);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::access_denied);
  EXPECT_THAT(r.error().message, Not(HasSubstr("sho-a")));  // the holder is not disclosed
  auto got = db_->registrations().find("001010000000001");
  ASSERT_OK(got);
  EXPECT_EQ((*got)->sho, "sho-a");
  EXPECT_EQ((*got)->dpf_url, "https://dpf.ro.example:8443/packages");
}

TEST_P(StoreTest, RegistrationRemoveOnlyByItsSho) {
  ASSERT_OK(db_->registrations().put(make_registration("001010000000001", "sho-a")));
  EXPECT_CODE(db_->registrations().remove("001010000000001", "sho-b"), ErrorCode::access_denied);
  auto got = db_->registrations().find("001010000000001");
  ASSERT_OK(got);
  EXPECT_TRUE(got->has_value());
  ASSERT_OK(db_->registrations().remove("001010000000001", "sho-a"));
  got = db_->registrations().find("001010000000001");
  ASSERT_OK(got);
  EXPECT_FALSE(got->has_value());
  EXPECT_CODE(db_->registrations().remove("001010000000001", "sho-a"), ErrorCode::not_found);
}

TEST_P(StoreTest, RegistrationTransferOnlyByItsHolderKeepsTheDeviceAndKey) {
  auto r = make_registration("001010000000001", "sho-a");
  r.refusal = "measurement_mismatch";
  r.refused = at(1700000050);
  ASSERT_OK(db_->registrations().put(r));
  // Neither a third SHO nor the receiving one may move it; an unknown PCID is not_found.
  EXPECT_CODE(db_->registrations().transfer(r.pcid, "sho-c", "sho-c", at(1700000100)),
              ErrorCode::access_denied);
  EXPECT_CODE(db_->registrations().transfer(r.pcid, "sho-b", "sho-b", at(1700000100)),
              ErrorCode::access_denied);
  EXPECT_CODE(db_->registrations().transfer("001010000000002", "sho-a", "sho-b", at(1700000100)),
              ErrorCode::not_found);
  auto got = db_->registrations().find(r.pcid);
  ASSERT_OK(got);
  EXPECT_EQ((*got)->sho, "sho-a");
  EXPECT_EQ((*got)->created, r.created);

  ASSERT_OK(db_->registrations().transfer(r.pcid, "sho-a", "sho-b", at(1700000100)));
  got = db_->registrations().find(r.pcid);
  ASSERT_OK(got);
  EXPECT_EQ((*got)->sho, "sho-b");
  EXPECT_EQ((*got)->created, at(1700000100));
  EXPECT_EQ((*got)->device_id, r.device_id);
  EXPECT_EQ((*got)->dpf_url, r.dpf_url);
  EXPECT_EQ((*got)->bootstrap_key.get(), r.bootstrap_key.get());
  EXPECT_EQ((*got)->refusal, "");
  // Now the old holder is a stranger to it, and the new one replaces it with put().
  EXPECT_CODE(db_->registrations().put(r), ErrorCode::access_denied);
  EXPECT_CODE(db_->registrations().transfer(r.pcid, "sho-a", "sho-a", at(1700000200)),
              ErrorCode::access_denied);
  auto mine = make_registration(r.pcid, "sho-b");
  mine.dpf_url = "https://dpf.ro.example:8443/b";
  ASSERT_OK(db_->registrations().put(mine));
  got = db_->registrations().find(r.pcid);
  ASSERT_OK(got);
  EXPECT_EQ((*got)->dpf_url, "https://dpf.ro.example:8443/b");
}

TEST_P(StoreTest, RegistrationSuccessorIsKeptByPutAndClearedByTransfer) {
  auto r = make_registration("001010000000001", "sho-a");
  ASSERT_OK(db_->registrations().put(r));
  EXPECT_CODE(db_->registrations().set_successor("001010000000002", "sho-b"), ErrorCode::not_found);
  ASSERT_OK(db_->registrations().set_successor(r.pcid, "sho-b"));
  auto got = db_->registrations().find(r.pcid);
  ASSERT_OK(got);
  EXPECT_EQ((*got)->successor, "sho-b");
  // The holder refreshing its registration does not end the change; the successor is no holder.
  ASSERT_OK(db_->registrations().put(r));
  EXPECT_CODE(db_->registrations().put(make_registration(r.pcid, "sho-b")),
              ErrorCode::access_denied);
  got = db_->registrations().find(r.pcid);
  ASSERT_OK(got);
  EXPECT_EQ((*got)->sho, "sho-a");
  EXPECT_EQ((*got)->successor, "sho-b");
  // Another order replaces it; an empty one clears it.
  ASSERT_OK(db_->registrations().set_successor(r.pcid, "sho-c"));
  got = db_->registrations().find(r.pcid);
  ASSERT_OK(got);
  EXPECT_EQ((*got)->successor, "sho-c");
  ASSERT_OK(db_->registrations().set_successor(r.pcid, ""));
  got = db_->registrations().find(r.pcid);
  ASSERT_OK(got);
  EXPECT_EQ((*got)->successor, "");
  // The change done: the successor holds it, and none is left.
  ASSERT_OK(db_->registrations().set_successor(r.pcid, "sho-b"));
  ASSERT_OK(db_->registrations().transfer(r.pcid, "sho-a", "sho-b", at(1700000100)));
  got = db_->registrations().find(r.pcid);
  ASSERT_OK(got);
  EXPECT_EQ((*got)->sho, "sho-b");
  EXPECT_EQ((*got)->successor, "");
}

// ---- Packages ----

StoredPackage make_package(std::string id, std::string device, std::int64_t created) {
  StoredPackage p;
  p.package_id = std::move(id);
  p.device_id = std::move(device);
  p.sho = "sho-a";
  p.package = {0x30, 0x82, 0x00, 0x00, 0xff, 0x00};  // binary, with NUL bytes
  p.created = at(created);
  p.updated = at(created);
  return p;
}

TEST_P(StoreTest, PackagePutFindRoundTripsAndRefusesADuplicateId) {
  auto p = make_package("pkg-1", "device-1", 100);
  p.package.resize(70'000);
  for (std::size_t i = 6; i < p.package.size(); ++i) p.package[i] = static_cast<std::uint8_t>(i);
  ASSERT_OK(db_->packages().put(p));
  auto got = db_->packages().find("pkg-1");
  ASSERT_OK(got);
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->device_id, "device-1");
  EXPECT_EQ((*got)->sho, "sho-a");
  EXPECT_EQ((*got)->package, p.package);
  EXPECT_EQ((*got)->status, PackageStatus::pending);
  EXPECT_EQ((*got)->report, "");
  EXPECT_EQ((*got)->created, at(100));
  EXPECT_EQ((*got)->updated, at(100));
  auto again = make_package("pkg-1", "device-9", 200);
  auto r = db_->packages().put(again);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::already_exists);
  EXPECT_THAT(r.error().message, HasSubstr("pkg-1"));
  got = db_->packages().find("pkg-1");
  ASSERT_OK(got);
  EXPECT_EQ((*got)->device_id, "device-1");
  auto none = db_->packages().find("pkg-2");
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
}

TEST_P(StoreTest, PackageNextForDeviceIsTheOldestOpenOne) {
  ASSERT_OK(db_->packages().put(make_package("pkg-late", "device-1", 100)));
  ASSERT_OK(db_->packages().put(make_package("pkg-early-1", "device-1", 50)));
  ASSERT_OK(db_->packages().put(make_package("pkg-early-2", "device-1", 50)));
  ASSERT_OK(db_->packages().put(make_package("pkg-other", "device-2", 10)));
  auto next_id = [&]() -> std::string {
    auto n = db_->packages().next_for_device("device-1");
    EXPECT_TRUE(n) << fmt::to_string(n.error());
    return n && n->has_value() ? (*n)->package_id : "";
  };
  EXPECT_EQ(next_id(), "pkg-early-1");  // equal times: the one stored first
  ASSERT_OK(db_->packages().mark_delivered("pkg-early-1", at(60)));
  EXPECT_EQ(next_id(), "pkg-early-1");  // delivered but not reported: still open
  ASSERT_OK(db_->packages().store_report("pkg-early-1", "ok", at(61)));
  EXPECT_EQ(next_id(), "pkg-early-2");
  ASSERT_OK(db_->packages().store_report("pkg-early-2", "ok", at(62)));
  EXPECT_EQ(next_id(), "pkg-late");
  ASSERT_OK(db_->packages().store_report("pkg-late", "ok", at(63)));
  EXPECT_EQ(next_id(), "");
  auto none = db_->packages().next_for_device("device-3");
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
}

// F4: the DPF serves a device only its registration's holder's and successor's packages; an older
// one of another SHO is passed over, not in the way.
TEST_P(StoreTest, PackageNextForDeviceFromOnlyTheNamedShos) {
  auto of = [](std::string id, std::int64_t created, std::string sho) {
    auto p = make_package(std::move(id), "device-1", created);
    p.sho = std::move(sho);
    return p;
  };
  ASSERT_OK(db_->packages().put(of("pkg-b", 10, "sho-b")));
  ASSERT_OK(db_->packages().put(of("pkg-a", 20, "sho-a")));
  ASSERT_OK(db_->packages().put(of("pkg-c", 30, "sho-c")));
  auto next_id = [&](std::string_view sho, std::string_view successor) -> std::string {
    auto n = db_->packages().next_for_device_from("device-1", sho, successor);
    EXPECT_TRUE(n) << fmt::to_string(n.error());
    return n && n->has_value() ? (*n)->package_id : "";
  };
  EXPECT_EQ(next_id("sho-a", "sho-c"), "pkg-a");  // sho-b's, older, passed over
  EXPECT_EQ(next_id("sho-c", ""), "pkg-c");
  EXPECT_EQ(next_id("sho-a", "sho-b"), "pkg-b");
  EXPECT_EQ(next_id("sho-x", ""), "");
  ASSERT_OK(db_->packages().store_report("pkg-a", "ok", at(40)));
  EXPECT_EQ(next_id("sho-a", "sho-c"), "pkg-c");
  auto other = db_->packages().next_for_device_from("device-2", "sho-a", "sho-c");
  ASSERT_OK(other);
  EXPECT_FALSE(other->has_value());
}

TEST_P(StoreTest, PackageMarkDelivered) {
  ASSERT_OK(db_->packages().put(make_package("pkg-1", "device-1", 100)));
  ASSERT_OK(db_->packages().mark_delivered("pkg-1", at(150)));
  auto got = db_->packages().find("pkg-1");
  ASSERT_OK(got);
  EXPECT_EQ((*got)->status, PackageStatus::delivered);
  EXPECT_EQ((*got)->updated, at(150));
  EXPECT_EQ((*got)->created, at(100));
  ASSERT_OK(db_->packages().mark_delivered("pkg-1", at(160)));  // a retried download
  EXPECT_CODE(db_->packages().mark_delivered("pkg-2", at(150)), ErrorCode::not_found);
  ASSERT_OK(db_->packages().store_report("pkg-1", "installed", at(170)));
  EXPECT_CODE(db_->packages().mark_delivered("pkg-1", at(180)), ErrorCode::transition_refused);
  got = db_->packages().find("pkg-1");
  ASSERT_OK(got);
  EXPECT_EQ((*got)->status, PackageStatus::reported);
  EXPECT_EQ((*got)->updated, at(170));
}

TEST_P(StoreTest, PackageReportIsStoredOnceAndAReplayIsRefused) {
  ASSERT_OK(db_->packages().put(make_package("pkg-1", "device-1", 100)));
  const std::string report = R"({"status":"installed","sig":"MEUCIQ..."})";
  ASSERT_OK(db_->packages().store_report("pkg-1", report, at(200)));
  auto got = db_->packages().find("pkg-1");
  ASSERT_OK(got);
  EXPECT_EQ((*got)->status, PackageStatus::reported);
  EXPECT_EQ((*got)->report, report);
  EXPECT_EQ((*got)->updated, at(200));
  EXPECT_CODE(db_->packages().store_report("pkg-1", "forged", at(300)),
              ErrorCode::transition_refused);
  got = db_->packages().find("pkg-1");
  ASSERT_OK(got);
  EXPECT_EQ((*got)->report, report);
  EXPECT_EQ((*got)->updated, at(200));
  EXPECT_CODE(db_->packages().store_report("pkg-2", report, at(200)), ErrorCode::not_found);
}

// ---- Sessions ----

Session make_session(std::string id, std::string imsi, std::string vno, std::int64_t expires) {
  Session s;
  s.id = std::move(id);
  s.imsi = std::move(imsi);
  s.vno = std::move(vno);
  s.restricted = true;
  s.created = at(100);
  s.expires = at(expires);
  return s;
}

// F8 reuse: make_pcid's PCIDs are dormant until 1000 and live until 10,000,000; the sweep at
// 2000 expires the dormant one. Quarantine 500 s.
struct StoreReuseCase {
  const char* name;
  std::int64_t now;
  bool sweep, session;  // the sweep ran at 2000; a session until 5000 is open
  bool reused;
};
constexpr StoreReuseCase kStoreReuseCases[] = {
    {"NotExpired", 3000, false, false, false},
    {"InQuarantine", 2499, true, false, false},
    {"OutOfQuarantine", 2500, true, false, true},
    {"OutOfQuarantineButInSession", 2500, true, true, false},
    {"LifetimeAndQuarantineOver", 10'000'500, false, false, true},
    {"LifetimeOverInQuarantine", 10'000'499, false, false, false},
};

TEST_P(StoreTest, PcidBatchReusesOnlyFreePcidsAndDropsTheirRegistration) {
  std::uint64_t count = 0;
  for (std::size_t i = 0; i < std::size(kStoreReuseCases); ++i) {
    const StoreReuseCase& c = kStoreReuseCases[i];
    SCOPED_TRACE(c.name);
    const std::string old_pcid = fmt::format("0010100000{}01", i);
    Database& db = *db_;
    ASSERT_OK(db.pcids().add_batch({make_pcid(old_pcid, 1)}));
    ++count;
    ASSERT_OK(db.registrations().put(make_registration(old_pcid, "sho-a")));
    if (c.sweep) ASSERT_OK(db.pcids().expire_dormant(at(2000)));
    if (c.session) {
      ASSERT_OK(db.sessions().open(make_session(fmt::format("s{}", i), old_pcid, "vno-a", 5000),
                                   at(1500)));
    }
    auto next = make_pcid(old_pcid, 9);
    next.batch = "batch-8";
    const PcidReuse reuse{at(c.now), std::chrono::seconds(500)};
    auto r = db.pcids().add_batch({make_pcid(fmt::format("0010100000{}02", i), 2), next}, reuse);
    auto stored = db.pcids().find(old_pcid);
    ASSERT_OK(stored);
    auto reg = db.registrations().find(old_pcid);
    ASSERT_OK(reg);
    if (c.reused) {
      ASSERT_OK(r);
      EXPECT_EQ(*r, 1u);
      EXPECT_EQ((*stored)->batch, "batch-8");
      EXPECT_EQ((*stored)->status, PcidStatus::dormant);
      EXPECT_EQ((*stored)->expired_at, Time{});
      EXPECT_FALSE(reg->has_value());
      ++count;
    } else {
      EXPECT_CODE(r, ErrorCode::already_exists);
      EXPECT_EQ((*stored)->batch, "batch-7");
      EXPECT_TRUE(reg->has_value());
    }
    EXPECT_EQ(*db.pcids().count(), count) << "all or nothing: the other PCID comes with it";
  }
}

TEST_P(StoreTest, SessionOpenFindClose) {
  auto s = make_session("0123456789abcdef0123456789abcdef", "001010000000001", "vno-a", 200);
  s.restricted = false;
  ASSERT_OK(db_->sessions().open(s, at(100)));
  auto got = db_->sessions().find(s.id);
  ASSERT_OK(got);
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->imsi, s.imsi);
  EXPECT_EQ((*got)->vno, "vno-a");
  EXPECT_FALSE((*got)->restricted);
  EXPECT_EQ((*got)->created, at(100));
  EXPECT_EQ((*got)->expires, at(200));
  ASSERT_OK(db_->sessions().close(s.id));
  got = db_->sessions().find(s.id);
  ASSERT_OK(got);
  EXPECT_FALSE(got->has_value());
  EXPECT_CODE(db_->sessions().close(s.id), ErrorCode::not_found);
  // Closed: the IMSI may attach again.
  ASSERT_OK(db_->sessions().open(make_session("s2", "001010000000001", "vno-b", 300), at(150)));
}

TEST_P(StoreTest, SessionSecondLiveSessionOfAnImsiIsRefusedNamingItsVno) {
  ASSERT_OK(db_->sessions().open(make_session("s1", "001010000000001", "vno-a", 200), at(100)));
  auto r = db_->sessions().open(make_session("s2", "001010000000001", "vno-b", 300), at(199));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::already_exists);
  EXPECT_THAT(r.error().message, HasSubstr("vno-a"));
  auto got = db_->sessions().find("s2");
  ASSERT_OK(got);
  EXPECT_FALSE(got->has_value());
  // Another IMSI is independent.
  ASSERT_OK(db_->sessions().open(make_session("s3", "001010000000002", "vno-b", 300), at(150)));
}

TEST_P(StoreTest, SessionAnExpiredSessionIsReplaced) {
  ASSERT_OK(db_->sessions().open(make_session("s1", "001010000000001", "vno-a", 200), at(100)));
  ASSERT_OK(db_->sessions().open(make_session("s2", "001010000000001", "vno-b", 400), at(200)));
  auto old = db_->sessions().find("s1");
  ASSERT_OK(old);
  EXPECT_FALSE(old->has_value());
  auto now = db_->sessions().find("s2");
  ASSERT_OK(now);
  ASSERT_TRUE(now->has_value());
  EXPECT_EQ((*now)->vno, "vno-b");
}

TEST_P(StoreTest, SessionAReusedIdIsRefused) {
  ASSERT_OK(db_->sessions().open(make_session("s1", "001010000000001", "vno-a", 200), at(100)));
  EXPECT_CODE(db_->sessions().open(make_session("s1", "001010000000002", "vno-a", 200), at(100)),
              ErrorCode::already_exists);
  auto got = db_->sessions().find("s1");
  ASSERT_OK(got);
  EXPECT_EQ((*got)->imsi, "001010000000001");
}

// Many attaches of one IMSI at once, through two instances, one of them replacing an expired
// session: exactly one wins.
TEST_P(StoreTest, ConcurrentSessionOpensOfOneImsiHaveExactlyOneWinner) {
  constexpr int kThreads = 16;
  const std::string imsi = "001010000000042";
  ASSERT_OK(db_->sessions().open(make_session("stale", imsi, "vno-old", 50), at(10)));
  Database* instances[] = {db_.get(), &second()};
  std::atomic<int> won{0}, refused{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto s = make_session(fmt::format("session-{}", t), imsi, fmt::format("vno-{}", t), 500);
      auto r = instances[t % 2]->sessions().open(s, at(100));
      if (r) {
        ++won;
      } else if (r.error().code == ErrorCode::already_exists) {
        ++refused;
      } else {
        ++other;
        ADD_FAILURE() << fmt::to_string(r.error());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(refused.load(), kThreads - 1);
  EXPECT_EQ(other.load(), 0);
  auto stale = db_->sessions().find("stale");
  ASSERT_OK(stale);
  EXPECT_FALSE(stale->has_value());
}

// ---- Audit ----

TEST_P(StoreTest, AuditAppendsWithIncreasingSeqAndListsNewestFirst) {
  std::uint64_t last = 0;
  for (int i = 0; i < 5; ++i) {
    AuditRecord r{.seq = 999,  // ignored: the store assigns it
                  .time = at(1000 + i),
                  .service = "ro",
                  .event = "icf.vectors",
                  .subject = fmt::format("00101000000000{}", i),
                  .principal = "vno-a",
                  .outcome = i == 3 ? "refused" : "ok",
                  .detail = i == 0 ? "" : "n=2"};
    auto seq = db_->audit().append(r);
    ASSERT_OK(seq);
    EXPECT_GT(*seq, last);
    last = *seq;
  }
  auto recent = db_->audit().recent(3);
  ASSERT_OK(recent);
  ASSERT_EQ(recent->size(), 3u);
  EXPECT_EQ((*recent)[0].seq, last);
  EXPECT_EQ((*recent)[0].subject, "001010000000004");
  EXPECT_EQ((*recent)[1].outcome, "refused");
  EXPECT_EQ((*recent)[2].time, at(1002));
  EXPECT_GT((*recent)[0].seq, (*recent)[1].seq);
  EXPECT_EQ((*recent)[0].service, "ro");
  EXPECT_EQ((*recent)[0].event, "icf.vectors");
  EXPECT_EQ((*recent)[0].principal, "vno-a");
  EXPECT_EQ((*recent)[0].detail, "n=2");
  auto all = db_->audit().recent(100);
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 5u);
  EXPECT_EQ(all->back().detail, "");
  auto none = db_->audit().recent(0);
  ASSERT_OK(none);
  EXPECT_TRUE(none->empty());
}

// Appends from many threads (sharing commits, store/group_commit.h) each get their own seq, and
// every record is stored once with its own fields.
TEST_P(StoreTest, ConcurrentAuditAppendsEachLandOnceWithTheirOwnSeq) {
  constexpr int kThreads = 8, kRounds = 20;
  std::mutex mu;
  std::map<std::uint64_t, std::string> seqs;  // seq -> subject, guarded by mu
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        const std::string subject = fmt::format("t{}-{}", t, i);
        auto seq = db_->audit().append(AuditRecord{.time = at(1000),
                                                   .service = "ro",
                                                   .event = "dpf.fetch",
                                                   .subject = subject,
                                                   .principal = "device:d",
                                                   .outcome = "ok",
                                                   .detail = ""});
        if (!seq) {
          ADD_FAILURE() << fmt::to_string(seq.error());
          continue;
        }
        std::lock_guard lock(mu);
        EXPECT_TRUE(seqs.emplace(*seq, subject).second) << "seq " << *seq << " given twice";
      }
    });
  }
  for (auto& th : threads) th.join();
  auto all = db_->audit().recent(1000);
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), static_cast<std::size_t>(kThreads * kRounds));
  for (const AuditRecord& r : *all) {
    auto it = seqs.find(r.seq);
    ASSERT_NE(it, seqs.end()) << "record " << r.seq << " nobody was told of";
    EXPECT_EQ(r.subject, it->second);
  }
}

// ---- Units of work: a change and its record in one transaction (AuditStore::atomically) ----

AuditRecord unit_record(std::string subject) {
  return AuditRecord{.time = at(1000),
                     .service = "icf",
                     .event = "open-session",
                     .subject = std::move(subject),
                     .principal = "vno-a",
                     .outcome = "ok",
                     .detail = ""};
}

std::size_t audit_count(Database& db) {
  auto all = db.audit().recent(100'000);
  EXPECT_TRUE(all) << fmt::to_string(all.error());
  return all ? all->size() : 0;
}

bool session_stored(Database& db, std::string_view id) {
  auto found = db.sessions().find(id);
  EXPECT_TRUE(found) << fmt::to_string(found.error());
  return found && found->has_value();
}

TEST_P(StoreTest, AUnitCommitsAChangeAndItsRecordTogether) {
  std::uint64_t seq = 0;
  ASSERT_OK(db_->audit().atomically([&]() -> Result<void> {
    if (auto r = db_->sessions().open(make_session("s1", "001010000000001", "vno-a", 500), at(100));
        !r) {
      return r;
    }
    // A read after the first write sees the unit's own change.
    auto found = db_->sessions().find("s1");
    if (!found) return std::unexpected(found.error());
    EXPECT_TRUE(found->has_value());
    auto appended = db_->audit().append(unit_record("001010000000001"));
    if (!appended) return std::unexpected(appended.error());
    seq = *appended;
    return {};
  }));
  EXPECT_GT(seq, 0u);
  EXPECT_TRUE(session_stored(second(), "s1"));
  auto recent = second().audit().recent(10);
  ASSERT_OK(recent);
  ASSERT_EQ(recent->size(), 1u);
  EXPECT_EQ(recent->front().seq, seq);
  EXPECT_EQ(recent->front().subject, "001010000000001");
}

TEST_P(StoreTest, AUnitThatFailsLeavesNeitherTheChangeNorItsRecord) {
  if (GetParam().name == "memory") GTEST_SKIP() << "memory runs a unit's calls as they come";
  auto r = db_->audit().atomically([&]() -> Result<void> {
    EXPECT_TRUE(db_->sessions().open(make_session("s1", "001010000000001", "vno-a", 500), at(100)));
    EXPECT_TRUE(db_->audit().append(unit_record("001010000000001")));
    return fail(ErrorCode::access_denied, "the caller changed its mind");
  });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::access_denied);
  EXPECT_FALSE(session_stored(*db_, "s1"));
  EXPECT_EQ(audit_count(*db_), 0u);
  // The database takes the next change as usual.
  ASSERT_OK(db_->sessions().open(make_session("s2", "001010000000001", "vno-a", 500), at(100)));
  EXPECT_TRUE(session_stored(second(), "s2"));
}

// A call that fails inside the transaction leaves nothing of itself (a savepoint), and the unit
// goes on: on PostgreSQL the failed statement would otherwise have lost the whole transaction.
TEST_P(StoreTest, ACallThatFailsInAUnitLeavesNothingOfItselfAndTheUnitGoesOn) {
  ASSERT_OK(db_->sessions().open(make_session("old", "001010000000002", "vno-a", 150), at(100)));
  ASSERT_OK(db_->audit().atomically([&]() -> Result<void> {
    EXPECT_TRUE(db_->sessions().open(make_session("s1", "001010000000001", "vno-a", 500), at(100)));
    // Refused after its first statement dropped the expired session "old" of the IMSI.
    auto refused =
        db_->sessions().open(make_session("s1", "001010000000002", "vno-b", 500), at(200));
    EXPECT_FALSE(refused);
    if (!refused) {
      EXPECT_EQ(refused.error().code, ErrorCode::already_exists);
    }
    auto a = db_->audit().append(unit_record("001010000000001"));
    if (!a) return std::unexpected(a.error());
    return {};
  }));
  EXPECT_TRUE(session_stored(second(), "s1"));
  EXPECT_TRUE(session_stored(second(), "old"));  // the refused call's drop was undone
  EXPECT_EQ(audit_count(second()), 1u);
}

// On PostgreSQL a unit's BEGIN and each call's savepoint go with the call's first statement, in
// one round trip (store.md "Units of work"): a first statement that the server refuses there
// is rolled back to its savepoint, and the unit goes on and commits the rest.
TEST_P(StoreTest, AUnitWhoseFirstStatementTheServerRefusesGoesOn) {
  if (GetParam().name != "postgresql") GTEST_SKIP() << "a text with a NUL is PostgreSQL's refusal";
  const std::string nul_imsi("00101\0", 6);
  ASSERT_OK(db_->audit().atomically([&]() -> Result<void> {
    auto refused = db_->sessions().open(make_session("s0", nul_imsi, "vno-a", 500), at(100));
    EXPECT_FALSE(refused);
    if (!refused) {
      EXPECT_EQ(refused.error().code, ErrorCode::invalid_argument) << refused.error().message;
    }
    EXPECT_TRUE(db_->sessions().open(make_session("s1", "001010000000001", "vno-a", 500), at(100)));
    EXPECT_FALSE(db_->sessions().open(make_session("s2", nul_imsi, "vno-a", 500), at(100)));
    auto a = db_->audit().append(unit_record("001010000000001"));
    if (!a) return std::unexpected(a.error());
    return {};
  }));
  EXPECT_TRUE(session_stored(second(), "s1"));
  EXPECT_FALSE(session_stored(second(), "s0"));
  EXPECT_FALSE(session_stored(second(), "s2"));
  EXPECT_EQ(audit_count(second()), 1u);
  // The connection went back to the pool clean: a lone write commits.
  ASSERT_OK(db_->sessions().open(make_session("s3", "001010000000003", "vno-a", 500), at(100)));
  EXPECT_TRUE(session_stored(second(), "s3"));
}

TEST_P(StoreTest, AUnitWithinAUnitJoinsIt) {
  if (GetParam().name == "memory") GTEST_SKIP() << "memory runs a unit's calls as they come";
  auto r = db_->audit().atomically([&]() -> Result<void> {
    EXPECT_TRUE(db_->sessions().open(make_session("s1", "001010000000001", "vno-a", 500), at(100)));
    auto inner = db_->audit().atomically([&]() -> Result<void> {
      auto a = db_->audit().append(unit_record("inner"));
      if (!a) return std::unexpected(a.error());
      return {};
    });
    EXPECT_TRUE(inner);  // joined: nothing committed yet
    return fail(ErrorCode::busy, "the outer unit gives up");
  });
  ASSERT_FALSE(r);
  EXPECT_FALSE(session_stored(*db_, "s1"));
  EXPECT_EQ(audit_count(*db_), 0u);
}

// An exception out of a unit rolls it back: the connection it held goes back to the pool without
// an open transaction, and the next calls commit as usual.
TEST_P(StoreTest, AUnitLeftByAnExceptionIsRolledBack) {
  if (GetParam().name == "memory") GTEST_SKIP() << "memory runs a unit's calls as they come";
  EXPECT_THROW((void)db_->audit().atomically([&]() -> Result<void> {
    EXPECT_TRUE(db_->sessions().open(make_session("s1", "001010000000001", "vno-a", 500), at(100)));
    throw std::runtime_error("thrown in the middle of a unit");
  }),
               std::runtime_error);
  EXPECT_FALSE(session_stored(*db_, "s1"));
  for (int i = 0; i < 10; ++i) {  // more calls than the pool has connections
    ASSERT_OK(db_->audit().append(unit_record(fmt::format("after-{}", i))));
  }
  EXPECT_EQ(audit_count(second()), 10u);
}

// A unit that only reads (a look-up) and records it: the record is its one write.
TEST_P(StoreTest, AUnitThatOnlyReadsCommitsItsRecord) {
  ASSERT_OK(db_->audit().atomically([&]() -> Result<void> {
    auto found = db_->sessions().find("nobody");
    if (!found) return std::unexpected(found.error());
    EXPECT_FALSE(found->has_value());
    auto a = db_->audit().append(unit_record("lookup"));
    if (!a) return std::unexpected(a.error());
    return {};
  }));
  EXPECT_EQ(audit_count(second()), 1u);
}

// Units on many threads, beside plain appends (group commit): every unit's change and record land
// once, and the SQN reservations they made never overlap.
TEST_P(StoreTest, ConcurrentUnitsAndAppendsEachLandOnce) {
  constexpr int kThreads = 6, kRounds = 15;
  std::mutex mu;
  std::set<std::uint64_t> firsts;  // guarded by mu
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        if (t % 3 == 2) {  // a plain append, through the group commit
          auto a = db_->audit().append(unit_record(fmt::format("plain-{}-{}", t, i)));
          EXPECT_TRUE(a) << fmt::to_string(a.error());
          continue;
        }
        std::uint64_t first = 0;
        auto r = db_->audit().atomically([&]() -> Result<void> {
          auto reserved = db_->sqns().reserve("001010000000009", 1, 1'000'000);
          if (!reserved) return std::unexpected(reserved.error());
          first = *reserved;
          auto a = db_->audit().append(unit_record(fmt::format("unit-{}-{}", t, i)));
          if (!a) return std::unexpected(a.error());
          return {};
        });
        if (!r) {
          ADD_FAILURE() << fmt::to_string(r.error());
          continue;
        }
        std::lock_guard lock(mu);
        EXPECT_TRUE(firsts.insert(first).second) << "SEQ " << first << " reserved twice";
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(audit_count(*db_), static_cast<std::size_t>(kThreads * kRounds));
  auto current = db_->sqns().current("001010000000009");
  ASSERT_OK(current);
  EXPECT_EQ(*current, firsts.size());
}

// Units that fail after writing, among concurrent ones that succeed (on SQLite they share
// batches, docs/store.md "Batched commits"): each failed unit leaves nothing, each successful one
// everything, whatever batch they shared; so do concurrent writes made outside any unit.
TEST_P(StoreTest, ConcurrentUnitsThatFailLeaveNothingAndTheOthersEverything) {
  if (GetParam().name == "memory") GTEST_SKIP() << "memory runs a unit's calls as they come";
  constexpr int kThreads = 6, kRounds = 20;
  std::atomic<int> landed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        const bool fails = (t + i) % 3 == 0;
        const std::string imsi = fmt::format("00101{:010}", t * 100 + i);
        auto r = db_->audit().atomically([&]() -> Result<void> {
          auto reserved = db_->sqns().reserve(imsi, 5, 1'000'000);
          if (!reserved) return std::unexpected(reserved.error());
          auto a = db_->audit().append(unit_record(fmt::format("unit-{}-{}", t, i)));
          if (!a) return std::unexpected(a.error());
          if (fails) return fail(ErrorCode::transition_refused, "refused after writing");
          return {};
        });
        EXPECT_EQ(static_cast<bool>(r), !fails) << t << "/" << i;
        if (r) ++landed;
        if (t % 2 == 0) {  // and a write of its own, outside any unit
          auto lone = db_->sqns().reserve(fmt::format("00102{:010}", t * 100 + i), 1, 1'000'000);
          EXPECT_TRUE(lone) << fmt::to_string(lone.error());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(audit_count(*db_), static_cast<std::size_t>(landed.load()));
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kRounds; ++i) {
      auto seq = db_->sqns().current(fmt::format("00101{:010}", t * 100 + i));
      ASSERT_OK(seq);
      EXPECT_EQ(*seq, (t + i) % 3 == 0 ? 0u : 5u) << t << "/" << i;
      if (t % 2 == 0) {
        auto lone = db_->sqns().current(fmt::format("00102{:010}", t * 100 + i));
        ASSERT_OK(lone);
        EXPECT_EQ(*lone, 1u);
      }
    }
  }
}

// ---- Attestation requests (the RO's DPF) ----

AttestationRequest make_request(std::string id, std::string device, std::int64_t created) {
  AttestationRequest r;
  r.request_id = std::move(id);
  r.pcid = "001010000000001";
  r.device_id = std::move(device);
  r.sho = "sho-a";
  r.nonce = ByteVec(32, 0x5a);
  r.nonce[0] = 0x00;  // binary, with a NUL byte
  r.created = at(created);
  return r;
}

std::optional<AttestationRequest> find_request(Database& db, std::string_view id) {
  auto r = db.attestation_requests().find(id);
  EXPECT_TRUE(r) << fmt::to_string(r.error());
  return r ? *r : std::nullopt;
}

TEST_P(StoreTest, AttestationRequestRoundTripsEveryFieldAndRefusesAKnownId) {
  auto r = make_request("challenge.1:a-B_9", "device-1", 100);
  r.nonce.resize(64, 0xee);
  ASSERT_OK(db_->attestation_requests().put(r));
  auto got = find_request(*db_, r.request_id);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->request_id, r.request_id);
  EXPECT_EQ(got->pcid, "001010000000001");
  EXPECT_EQ(got->device_id, "device-1");
  EXPECT_EQ(got->sho, "sho-a");
  EXPECT_EQ(got->nonce, r.nonce);
  EXPECT_EQ(got->status, AttestationStatus::pending);
  EXPECT_EQ(got->created, at(100));
  EXPECT_EQ(got->answered, Time{});

  auto again = make_request(r.request_id, "device-9", 200);
  auto refused = db_->attestation_requests().put(again);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::already_exists);
  EXPECT_THAT(refused.error().message, HasSubstr(r.request_id));
  got = find_request(*db_, r.request_id);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->device_id, "device-1");
  EXPECT_EQ(got->nonce, r.nonce);
  EXPECT_FALSE(find_request(*db_, "unknown").has_value());
}

TEST_P(StoreTest, AttestationNextForDeviceIsTheOldestPendingOne) {
  ASSERT_OK(db_->attestation_requests().put(make_request("late", "device-1", 100)));
  ASSERT_OK(db_->attestation_requests().put(make_request("early-1", "device-1", 50)));
  ASSERT_OK(db_->attestation_requests().put(make_request("early-2", "device-1", 50)));
  ASSERT_OK(db_->attestation_requests().put(make_request("other", "device-2", 10)));
  auto next_id = [&]() -> std::string {
    auto n = db_->attestation_requests().next_for_device("device-1");
    EXPECT_TRUE(n) << fmt::to_string(n.error());
    return n && n->has_value() ? (*n)->request_id : "";
  };
  EXPECT_EQ(next_id(), "early-1");  // equal times: the one stored first
  ASSERT_OK(db_->attestation_requests().mark_answered("early-1", at(60)));
  EXPECT_EQ(next_id(), "early-2");
  ASSERT_OK(db_->attestation_requests().mark_answered("early-2", at(61)));
  EXPECT_EQ(next_id(), "late");
  ASSERT_OK(db_->attestation_requests().mark_answered("late", at(101)));
  EXPECT_EQ(next_id(), "");
  auto other = db_->attestation_requests().next_for_device("device-2");
  ASSERT_OK(other);
  ASSERT_TRUE(other->has_value());
  EXPECT_EQ((*other)->request_id, "other");
  auto none = db_->attestation_requests().next_for_device("device-3");
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
}

TEST_P(StoreTest, AttestationNextForDeviceFromOnlyTheNamedShos) {
  auto of = [](std::string id, std::int64_t created, std::string sho) {
    auto r = make_request(std::move(id), "device-1", created);
    r.sho = std::move(sho);
    return r;
  };
  ASSERT_OK(db_->attestation_requests().put(of("req-b", 10, "sho-b")));
  ASSERT_OK(db_->attestation_requests().put(of("req-c", 20, "sho-c")));
  ASSERT_OK(db_->attestation_requests().put(of("req-a", 30, "sho-a")));
  auto next_id = [&](std::string_view sho, std::string_view successor) -> std::string {
    auto n = db_->attestation_requests().next_for_device_from("device-1", sho, successor);
    EXPECT_TRUE(n) << fmt::to_string(n.error());
    return n && n->has_value() ? (*n)->request_id : "";
  };
  EXPECT_EQ(next_id("sho-a", "sho-c"), "req-c");  // sho-b's, older, passed over
  EXPECT_EQ(next_id("sho-a", ""), "req-a");
  EXPECT_EQ(next_id("sho-x", ""), "");
  ASSERT_OK(db_->attestation_requests().mark_answered("req-c", at(40)));
  EXPECT_EQ(next_id("sho-a", "sho-c"), "req-a");
  auto other = db_->attestation_requests().next_for_device_from("device-2", "sho-a", "sho-c");
  ASSERT_OK(other);
  EXPECT_FALSE(other->has_value());
}

TEST_P(StoreTest, AttestationMarkAnsweredOnceThenRefused) {
  ASSERT_OK(db_->attestation_requests().put(make_request("req-1", "device-1", 100)));
  ASSERT_OK(db_->attestation_requests().mark_answered("req-1", at(150)));
  auto got = find_request(*db_, "req-1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->status, AttestationStatus::answered);
  EXPECT_EQ(got->answered, at(150));
  EXPECT_EQ(got->created, at(100));

  auto second_answer = db_->attestation_requests().mark_answered("req-1", at(200));
  ASSERT_FALSE(second_answer);
  EXPECT_EQ(second_answer.error().code, ErrorCode::transition_refused);
  EXPECT_THAT(second_answer.error().message, HasSubstr("req-1"));
  got = find_request(*db_, "req-1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->answered, at(150));

  EXPECT_CODE(db_->attestation_requests().mark_answered("req-2", at(150)), ErrorCode::not_found);
  EXPECT_FALSE(find_request(*db_, "req-2").has_value());
}

// A device answering twice at once through two RO instances: exactly one answer is relayed.
TEST_P(StoreTest, ConcurrentAnswersOfOneRequestHaveExactlyOneWinner) {
  constexpr int kThreads = 16;
  ASSERT_OK(db_->attestation_requests().put(make_request("req-1", "device-1", 100)));
  Database* instances[] = {db_.get(), &second()};
  std::atomic<int> won{0}, refused{0};
  std::atomic<std::int64_t> winner_time{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto r = instances[t % 2]->attestation_requests().mark_answered("req-1", at(1000 + t));
      if (r) {
        ++won;
        winner_time = 1000 + t;
      } else if (r.error().code == ErrorCode::transition_refused) {
        ++refused;
      } else {
        ADD_FAILURE() << fmt::to_string(r.error());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(refused.load(), kThreads - 1);
  auto got = find_request(*db_, "req-1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->answered, at(winner_time.load()));
}

// ---- Subscribers (the SHO) ----

Subscriber make_subscriber(std::string device, std::string pcid, std::string imsi) {
  Subscriber s;
  s.device_id = std::move(device);
  s.pcid = std::move(pcid);
  s.owner = "owner-7";
  s.imsi = std::move(imsi);
  s.platform_cert = {0x30, 0x82, 0x01, 0x00, 0x00, 0xff};  // DER: binary, with NUL bytes
  for (std::size_t i = 0; i < s.registration_nonce.size(); ++i) {
    s.registration_nonce[i] = static_cast<std::uint8_t>(0xc0 + i);
  }
  s.nonce_expires = at(5000);
  s.created = at(100);
  s.updated = at(100);
  return s;
}

std::optional<Subscriber> find_subscriber(Database& db, std::string_view device_id) {
  auto r = db.subscribers().find(device_id);
  EXPECT_TRUE(r) << fmt::to_string(r.error());
  return r ? *r : std::nullopt;
}

void expect_same_subscriber(const Subscriber& got, const Subscriber& want) {
  EXPECT_EQ(got.device_id, want.device_id);
  EXPECT_EQ(got.pcid, want.pcid);
  EXPECT_EQ(got.owner, want.owner);
  EXPECT_EQ(got.imsi, want.imsi);
  EXPECT_EQ(got.platform_cert, want.platform_cert);
  EXPECT_EQ(got.registration_nonce, want.registration_nonce);
  EXPECT_EQ(got.nonce_expires, want.nonce_expires);
  EXPECT_EQ(got.status, want.status);
  EXPECT_EQ(got.challenge_id, want.challenge_id);
  EXPECT_EQ(got.challenge_nonce, want.challenge_nonce);
  EXPECT_EQ(got.package_id, want.package_id);
  EXPECT_EQ(got.refusal, want.refusal);
  EXPECT_EQ(got.created, want.created);
  EXPECT_EQ(got.updated, want.updated);
  EXPECT_EQ(got.replacing, want.replacing);
}

TEST_P(StoreTest, SubscriberRoundTripsEveryFieldByDeviceAndByPcid) {
  auto s = make_subscriber("device-1", "001010000000001", "001020000000001");
  s.platform_cert.resize(16384, 0x00);
  for (std::size_t i = 6; i < s.platform_cert.size(); ++i) {
    s.platform_cert[i] = static_cast<std::uint8_t>(i * 7);
  }
  // Every field away from its default, so a column that is not stored shows.
  s.status = SubscriberStatus::validating;
  s.challenge_id = "0123456789abcdef0123456789abcdef";
  s.challenge_nonce = ByteVec(32, 0x00);
  s.challenge_nonce[31] = 0x42;
  s.package_id = "device-1-1";
  s.refusal = "measurement_mismatch";
  s.updated = at(150);
  s.replacing = true;
  ASSERT_OK(db_->subscribers().add(s));
  auto by_device = find_subscriber(*db_, "device-1");
  ASSERT_TRUE(by_device.has_value());
  expect_same_subscriber(*by_device, s);
  auto by_pcid = db_->subscribers().find_by_pcid("001010000000001");
  ASSERT_OK(by_pcid);
  ASSERT_TRUE(by_pcid->has_value());
  expect_same_subscriber(**by_pcid, s);
}

TEST_P(StoreTest, SubscriberFindUnknownIsEmpty) {
  ASSERT_OK(db_->subscribers().add(make_subscriber("device-1", "001010000000001", "1")));
  EXPECT_FALSE(find_subscriber(*db_, "device-2").has_value());
  EXPECT_FALSE(find_subscriber(*db_, "").has_value());
  auto by_pcid = db_->subscribers().find_by_pcid("001010000000002");
  ASSERT_OK(by_pcid);
  EXPECT_FALSE(by_pcid->has_value());
}

TEST_P(StoreTest, SubscriberAddRefusesATakenDeviceIdPcidOrImsiNamingIt) {
  const auto first = make_subscriber("device-1", "001010000000001", "001020000000001");
  ASSERT_OK(db_->subscribers().add(first));
  struct Case {
    Subscriber s;
    std::string field;
  };
  const Case cases[] = {
      {make_subscriber("device-1", "001010000000002", "001020000000002"), "device_id"},
      {make_subscriber("device-2", "001010000000001", "001020000000002"), "pcid"},
      {make_subscriber("device-2", "001010000000002", "001020000000001"), "imsi"},
  };
  for (const auto& c : cases) {
    auto r = db_->subscribers().add(c.s);
    ASSERT_FALSE(r) << c.field;
    EXPECT_EQ(r.error().code, ErrorCode::already_exists) << c.field;
    EXPECT_THAT(r.error().message, HasSubstr(c.field));
  }
  // Nothing of the refused ones was stored, and the first is intact.
  EXPECT_FALSE(find_subscriber(*db_, "device-2").has_value());
  auto by_pcid = db_->subscribers().find_by_pcid("001010000000002");
  ASSERT_OK(by_pcid);
  EXPECT_FALSE(by_pcid->has_value());
  auto stored = find_subscriber(*db_, "device-1");
  ASSERT_TRUE(stored.has_value());
  expect_same_subscriber(*stored, first);
}

TEST_P(StoreTest, SubscriberUpdateIsACompareAndSetOfTheProvisioningState) {
  const auto s = make_subscriber("device-1", "001010000000001", "001020000000001");
  ASSERT_OK(db_->subscribers().add(s));
  auto next = s;
  next.status = SubscriberStatus::validating;
  next.challenge_id = "c1";
  next.challenge_nonce = ByteVec(32, 0x11);
  next.updated = at(200);
  // Fields outside the provisioning state are not the update's to change.
  next.owner = "someone-else";
  next.imsi = "001029999999999";
  next.platform_cert = {0x01};
  ASSERT_OK(db_->subscribers().update(next, SubscriberStatus::registered));
  auto got = find_subscriber(*db_, "device-1");
  ASSERT_TRUE(got.has_value());
  auto want = s;
  want.status = SubscriberStatus::validating;
  want.challenge_id = "c1";
  want.challenge_nonce = next.challenge_nonce;
  want.updated = at(200);
  expect_same_subscriber(*got, want);

  // A stale expectation changes nothing.
  auto late = want;
  late.status = SubscriberStatus::provisioning;
  late.package_id = "device-1-1";
  late.updated = at(300);
  auto refused = db_->subscribers().update(late, SubscriberStatus::registered);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::transition_refused);
  EXPECT_THAT(refused.error().message, HasSubstr("device-1"));
  got = find_subscriber(*db_, "device-1");
  ASSERT_TRUE(got.has_value());
  expect_same_subscriber(*got, want);

  ASSERT_OK(db_->subscribers().update(late, SubscriberStatus::validating));
  auto refusal = late;
  refusal.status = SubscriberStatus::refused;
  refusal.refusal = "signature_invalid";
  refusal.challenge_id.clear();
  refusal.challenge_nonce.clear();
  refusal.updated = at(400);
  ASSERT_OK(db_->subscribers().update(refusal, SubscriberStatus::provisioning));
  got = find_subscriber(*db_, "device-1");
  ASSERT_TRUE(got.has_value());
  auto final_state = want;
  final_state.status = SubscriberStatus::refused;
  final_state.refusal = "signature_invalid";
  final_state.challenge_id.clear();
  final_state.challenge_nonce.clear();
  final_state.package_id = "device-1-1";
  final_state.updated = at(400);
  expect_same_subscriber(*got, final_state);

  auto unknown = make_subscriber("device-2", "001010000000002", "001020000000002");
  EXPECT_CODE(db_->subscribers().update(unknown, SubscriberStatus::registered),
              ErrorCode::not_found);
  EXPECT_FALSE(find_subscriber(*db_, "device-2").has_value());
}

TEST_P(StoreTest, SubscriberRemoveFreesItsDeviceIdPcidAndImsi) {
  const auto s = make_subscriber("device-1", "001010000000001", "001020000000001");
  ASSERT_OK(db_->subscribers().add(s));
  ASSERT_OK(db_->subscribers().add(make_subscriber("device-2", "001010000000002", "2")));
  ASSERT_OK(db_->subscribers().remove("device-1"));
  EXPECT_FALSE(find_subscriber(*db_, "device-1").has_value());
  EXPECT_TRUE(find_subscriber(*db_, "device-2").has_value());
  EXPECT_CODE(db_->subscribers().remove("device-1"), ErrorCode::not_found);
  EXPECT_CODE(db_->subscribers().remove("device-3"), ErrorCode::not_found);
  EXPECT_TRUE(find_subscriber(*db_, "device-2").has_value());
  ASSERT_OK(db_->subscribers().add(s));  // an undone F1 may be registered again
}

// Two notices racing to advance one subscriber (two SHO instances): exactly one moves it.
TEST_P(StoreTest, ConcurrentSubscriberUpdatesHaveExactlyOneWinner) {
  constexpr int kThreads = 16;
  const auto s = make_subscriber("device-1", "001010000000001", "001020000000001");
  ASSERT_OK(db_->subscribers().add(s));
  Database* instances[] = {db_.get(), &second()};
  std::atomic<int> won{0}, refused{0}, winner{-1};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto next = s;
      next.status = SubscriberStatus::validating;
      next.challenge_id = fmt::format("challenge-{}", t);
      next.updated = at(200 + t);
      auto r = instances[t % 2]->subscribers().update(next, SubscriberStatus::registered);
      if (r) {
        ++won;
        winner = t;
      } else if (r.error().code == ErrorCode::transition_refused) {
        ++refused;
      } else {
        ADD_FAILURE() << fmt::to_string(r.error());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(refused.load(), kThreads - 1);
  auto got = find_subscriber(*db_, "device-1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->status, SubscriberStatus::validating);
  EXPECT_EQ(got->challenge_id, fmt::format("challenge-{}", winner.load()));
}

// Two owners registering one PCID at once: exactly one registration lands.
TEST_P(StoreTest, ConcurrentSubscriberAddsOfOnePcidHaveExactlyOneWinner) {
  constexpr int kThreads = 16;
  Database* instances[] = {db_.get(), &second()};
  std::atomic<int> won{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto s = make_subscriber(fmt::format("device-{}", t), "001010000000001",
                               fmt::format("0010200000000{:02}", t));
      auto r = instances[t % 2]->subscribers().add(s);
      if (r) {
        ++won;
      } else if (r.error().code == ErrorCode::already_exists) {
        ++refused;
        EXPECT_THAT(r.error().message, HasSubstr("pcid"));
      } else {
        ADD_FAILURE() << fmt::to_string(r.error());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(refused.load(), kThreads - 1);
  auto by_pcid = db_->subscribers().find_by_pcid("001010000000001");
  ASSERT_OK(by_pcid);
  EXPECT_TRUE(by_pcid->has_value());
}

// ---- Challenges (the PVA) ----

Challenge make_challenge(std::string id) {
  Challenge c;
  c.challenge_id = std::move(id);
  c.sho = "sho-a";
  c.device_id = "device-1";
  c.nonce = ByteVec(32, 0x00);
  c.nonce[1] = 0x99;
  c.created = at(100);
  c.expires = at(400);
  return c;
}

TEST_P(StoreTest, ChallengePutFindRoundTripsAndRefusesAKnownId) {
  const auto c = make_challenge("0123456789abcdef0123456789abcdef");
  ASSERT_OK(db_->challenges().put(c));
  auto got = db_->challenges().find(c.challenge_id);
  ASSERT_OK(got);
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->challenge_id, c.challenge_id);
  EXPECT_EQ((*got)->sho, "sho-a");
  EXPECT_EQ((*got)->device_id, "device-1");
  EXPECT_EQ((*got)->nonce, c.nonce);
  EXPECT_EQ((*got)->created, at(100));
  EXPECT_EQ((*got)->expires, at(400));
  EXPECT_FALSE((*got)->used);

  auto again = make_challenge(c.challenge_id);
  again.sho = "sho-b";
  auto refused = db_->challenges().put(again);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::already_exists);
  EXPECT_THAT(refused.error().message, HasSubstr(c.challenge_id));
  got = db_->challenges().find(c.challenge_id);
  ASSERT_OK(got);
  EXPECT_EQ((*got)->sho, "sho-a");
  auto none = db_->challenges().find("ffffffffffffffffffffffffffffffff");
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
}

TEST_P(StoreTest, ChallengeIsConsumedOnce) {
  const auto c = make_challenge("c1");
  ASSERT_OK(db_->challenges().put(c));
  auto used = db_->challenges().consume("c1");
  ASSERT_OK(used);
  EXPECT_EQ(used->challenge_id, "c1");
  EXPECT_EQ(used->sho, "sho-a");
  EXPECT_EQ(used->device_id, "device-1");
  EXPECT_EQ(used->nonce, c.nonce);
  EXPECT_EQ(used->created, at(100));
  EXPECT_EQ(used->expires, at(400));
  EXPECT_TRUE(used->used);
  auto got = db_->challenges().find("c1");
  ASSERT_OK(got);
  EXPECT_TRUE((*got)->used);

  auto again = db_->challenges().consume("c1");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::transition_refused);
  EXPECT_THAT(again.error().message, HasSubstr("c1"));
  EXPECT_CODE(db_->challenges().consume("c2"), ErrorCode::not_found);
  auto none = db_->challenges().find("c2");
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
  // A put of a used challenge keeps it used (an import, a test fixture).
  auto spent = make_challenge("c3");
  spent.used = true;
  ASSERT_OK(db_->challenges().put(spent));
  EXPECT_CODE(db_->challenges().consume("c3"), ErrorCode::transition_refused);
}

TEST_P(StoreTest, ConcurrentConsumesOfOneChallengeHaveExactlyOneWinner) {
  constexpr int kThreads = 16;
  ASSERT_OK(db_->challenges().put(make_challenge("c1")));
  Database* instances[] = {db_.get(), &second()};
  std::atomic<int> won{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto r = instances[t % 2]->challenges().consume("c1");
      if (r) {
        ++won;
        EXPECT_TRUE(r->used);
      } else if (r.error().code == ErrorCode::transition_refused) {
        ++refused;
      } else {
        ADD_FAILURE() << fmt::to_string(r.error());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(refused.load(), kThreads - 1);
}

// ---- Reference sets (the PVA) ----

TEST_P(StoreTest, ReferencesPutCreatesOrReplacesAndAllListsByModel) {
  auto empty = db_->references().all();
  ASSERT_OK(empty);
  EXPECT_TRUE(empty->empty());
  const std::string big(200'000, 'x');  // signed text is up to 256 KiB
  ASSERT_OK(db_->references().put({"model-b", at(10), "text b", at(11)}));
  ASSERT_OK(db_->references().put({"Zeta", at(20), big, at(21)}));
  ASSERT_OK(db_->references().put({"model-a", at(30), "text a", at(31)}));
  ASSERT_OK(db_->references().put({"model-b", at(40), "text b v2", at(41)}));  // replaced
  auto all = db_->references().all();
  ASSERT_OK(all);
  ASSERT_EQ(all->size(), 3u);
  // Byte order, whatever a database's collation: upper case before lower case.
  EXPECT_EQ((*all)[0].model, "Zeta");
  EXPECT_EQ((*all)[0].text, big);
  EXPECT_EQ((*all)[0].issued, at(20));
  EXPECT_EQ((*all)[0].stored, at(21));
  EXPECT_EQ((*all)[1].model, "model-a");
  EXPECT_EQ((*all)[1].text, "text a");
  EXPECT_EQ((*all)[2].model, "model-b");
  EXPECT_EQ((*all)[2].issued, at(40));
  EXPECT_EQ((*all)[2].text, "text b v2");
  EXPECT_EQ((*all)[2].stored, at(41));
}

TEST_P(StoreTest, NewPortsAreSeenByAnotherInstanceAndAfterReopening) {
  if (!location_->shared()) GTEST_SKIP() << "one Database object is the whole database";
  const auto s = make_subscriber("device-1", "001010000000001", "001020000000001");
  ASSERT_OK(db_->subscribers().add(s));
  ASSERT_OK(db_->attestation_requests().put(make_request("req-1", "device-1", 100)));
  ASSERT_OK(db_->challenges().put(make_challenge("c1")));
  ASSERT_OK(db_->references().put({"model-a", at(30), "text a", at(31)}));
  EXPECT_TRUE(find_subscriber(second(), "device-1").has_value());
  EXPECT_CODE(second().challenges().put(make_challenge("c1")), ErrorCode::already_exists);
  db_.reset();
  second_.reset();
  auto reopened = open_database(location_->url());
  ASSERT_TRUE(reopened) << fmt::to_string(reopened.error());
  auto got = find_subscriber(**reopened, "device-1");
  ASSERT_TRUE(got.has_value());
  expect_same_subscriber(*got, s);
  EXPECT_TRUE(find_request(**reopened, "req-1").has_value());
  ASSERT_OK((*reopened)->challenges().consume("c1"));
  auto refs = (*reopened)->references().all();
  ASSERT_OK(refs);
  EXPECT_EQ(refs->size(), 1u);
}

// ---- Management instructions (F9: the RO's queue, the SHO's record) ----

QueuedInstruction make_instruction(std::string id, std::string device, std::int64_t created = 100) {
  QueuedInstruction q;
  q.instruction_id = std::move(id);
  q.pcid = "001010000000001";
  q.device_id = std::move(device);
  q.sho = "sho-a";
  q.instruction = R"({"instruction":{"action":"block"},"signature":"c2ln"})";
  q.sequence = (std::uint64_t{1} << 53) - 1;  // the SHO's largest
  q.action = "block";
  q.credential = "001020000000001";
  q.created = q.updated = at(created);
  return q;
}

std::optional<QueuedInstruction> find_instruction(Database& db, std::string_view id) {
  auto r = db.instructions().find(id);
  EXPECT_TRUE(r) << fmt::to_string(r.error());
  return r ? *r : std::nullopt;
}

std::vector<std::string> ids_of(const std::vector<QueuedInstruction>& v) {
  std::vector<std::string> out;
  for (const auto& q : v) out.push_back(q.instruction_id);
  return out;
}

IssuedInstruction make_issued(std::string id, std::string device, std::string revert_to = "") {
  IssuedInstruction i;
  i.instruction_id = std::move(id);
  i.device_id = std::move(device);
  i.action = revert_to.empty() ? "block" : "delete";
  i.credential = "001020000000001";
  i.sequence = 42;
  i.created = at(100);
  if (!revert_to.empty()) i.owner = "owner-7";
  i.revert_to = std::move(revert_to);
  return i;
}

std::optional<IssuedInstruction> find_issued(Database& db, std::string_view id) {
  auto r = db.issued_instructions().find(id);
  EXPECT_TRUE(r) << fmt::to_string(r.error());
  return r ? *r : std::nullopt;
}

TEST_P(StoreTest, InstructionRoundTripsEveryFieldAndRefusesAKnownId) {
  const auto q = make_instruction("ins-1", "device-1");
  ASSERT_OK(db_->instructions().put(q, 10));
  auto got = find_instruction(*db_, "ins-1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->instruction_id, q.instruction_id);
  EXPECT_EQ(got->pcid, q.pcid);
  EXPECT_EQ(got->device_id, q.device_id);
  EXPECT_EQ(got->sho, q.sho);
  EXPECT_EQ(got->instruction, q.instruction);
  EXPECT_EQ(got->sequence, q.sequence);
  EXPECT_EQ(got->action, q.action);
  EXPECT_EQ(got->credential, q.credential);
  EXPECT_EQ(got->status, InstructionStatus::pending);
  EXPECT_EQ(got->report, "");
  EXPECT_EQ(got->created, at(100));
  EXPECT_EQ(got->updated, at(100));
  EXPECT_FALSE(find_instruction(*db_, "ins-2").has_value());
  auto again = make_instruction("ins-1", "device-2");
  EXPECT_CODE(db_->instructions().put(again, 10), ErrorCode::already_exists);
  EXPECT_EQ(find_instruction(*db_, "ins-1")->device_id, "device-1");
  auto n = db_->instructions().count();
  ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
}

TEST_P(StoreTest, InstructionCollectMarksDeliveredOldestFirstWithALimit) {
  for (const char* id : {"ins-c", "ins-a", "ins-b"}) {  // queue order, not id order
    ASSERT_OK(db_->instructions().put(make_instruction(id, "device-1"), 10));
  }
  ASSERT_OK(db_->instructions().put(make_instruction("other", "device-2"), 10));
  auto first = db_->instructions().collect("device-1", 2, at(200));
  ASSERT_OK(first);
  EXPECT_EQ(ids_of(*first), (std::vector<std::string>{"ins-c", "ins-a"}));
  for (const auto& q : *first) {
    EXPECT_EQ(q.status, InstructionStatus::delivered);
    EXPECT_EQ(q.updated, at(200));
  }
  EXPECT_EQ(find_instruction(*db_, "ins-c")->status, InstructionStatus::delivered);
  EXPECT_EQ(find_instruction(*db_, "ins-b")->status, InstructionStatus::pending);
  EXPECT_EQ(find_instruction(*db_, "other")->status, InstructionStatus::pending);
  // Delivered ones are collected again until answered (the device may have lost them).
  ASSERT_OK(db_->instructions().answer("ins-a", "report a", at(300)));
  auto second = db_->instructions().collect("device-1", 16, at(400));
  ASSERT_OK(second);
  EXPECT_EQ(ids_of(*second), (std::vector<std::string>{"ins-c", "ins-b"}));
  auto none = db_->instructions().collect("device-3", 16, at(400));
  ASSERT_OK(none);
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(find_instruction(*db_, "ins-a")->status, InstructionStatus::answered);
}

TEST_P(StoreTest, InstructionAnswerIsACompareAndSet) {
  ASSERT_OK(db_->instructions().put(make_instruction("ins-1", "device-1"), 10));
  auto answered = db_->instructions().answer("ins-1", "the TRE's report", at(500));
  ASSERT_OK(answered);
  EXPECT_EQ(answered->instruction_id, "ins-1");
  EXPECT_EQ(answered->sho, "sho-a");
  EXPECT_EQ(answered->status, InstructionStatus::answered);
  EXPECT_EQ(answered->report, "the TRE's report");
  EXPECT_EQ(answered->updated, at(500));
  EXPECT_CODE(db_->instructions().answer("ins-1", "another", at(600)),
              ErrorCode::transition_refused);
  EXPECT_CODE(db_->instructions().answer("ins-9", "r", at(600)), ErrorCode::not_found);
  auto got = find_instruction(*db_, "ins-1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->report, "the TRE's report");
  EXPECT_EQ(got->updated, at(500));
}

TEST_P(StoreTest, InstructionPutKeepsItsBoundOldestAnsweredFirstThenOldest) {
  ASSERT_OK(db_->instructions().put(make_instruction("a", "device-1"), 2));
  ASSERT_OK(db_->instructions().put(make_instruction("b", "device-1"), 2));
  ASSERT_OK(db_->instructions().answer("b", "report", at(200)));
  ASSERT_OK(db_->instructions().put(make_instruction("c", "device-1"), 2));  // b goes, answered
  EXPECT_TRUE(find_instruction(*db_, "a").has_value());
  EXPECT_FALSE(find_instruction(*db_, "b").has_value());
  ASSERT_OK(db_->instructions().put(make_instruction("d", "device-1"), 2));  // none answered: a
  EXPECT_FALSE(find_instruction(*db_, "a").has_value());
  auto n = db_->instructions().count();
  ASSERT_OK(n);
  EXPECT_EQ(*n, 2u);
  // A refused put prunes nothing; a bound of 0 is taken as 1.
  EXPECT_CODE(db_->instructions().put(make_instruction("c", "device-1"), 1),
              ErrorCode::already_exists);
  EXPECT_EQ(*db_->instructions().count(), 2u);
  ASSERT_OK(db_->instructions().put(make_instruction("e", "device-1"), 0));
  EXPECT_EQ(*db_->instructions().count(), 1u);
  EXPECT_TRUE(find_instruction(*db_, "e").has_value());
}

TEST_P(StoreTest, ConcurrentAnswersOfOneInstructionHaveExactlyOneWinner) {
  constexpr int kThreads = 16;
  ASSERT_OK(db_->instructions().put(make_instruction("ins-1", "device-1"), 10));
  ASSERT_OK(db_->issued_instructions().put(make_issued("ins-1", "device-1", "sho-b"), 10));
  Database* instances[] = {db_.get(), &second()};
  std::atomic<int> won{0}, refused{0}, issued_won{0}, issued_refused{0};
  std::atomic<int> winner{-1}, issued_winner{-1};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Database& db = *instances[t % 2];
      auto r = db.instructions().answer("ins-1", fmt::format("report {}", t), at(1000 + t));
      if (r) {
        ++won;
        winner = t;
      } else if (r.error().code == ErrorCode::transition_refused) {
        ++refused;
      } else {
        ADD_FAILURE() << fmt::to_string(r.error());
      }
      auto i = db.issued_instructions().answer("ins-1", fmt::format("report {}", t), at(1000 + t),
                                               t % 3 == 0);
      if (i) {
        ++issued_won;
        issued_winner = t;
      } else if (i.error().code == ErrorCode::transition_refused) {
        ++issued_refused;
      } else {
        ADD_FAILURE() << fmt::to_string(i.error());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(refused.load(), kThreads - 1);
  auto got = find_instruction(*db_, "ins-1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->report, fmt::format("report {}", winner.load()));
  EXPECT_EQ(got->updated, at(1000 + winner.load()));
  EXPECT_EQ(issued_won.load(), 1);
  EXPECT_EQ(issued_refused.load(), kThreads - 1);
  auto issued = db_->issued_instructions().find("ins-1");
  ASSERT_OK(issued);
  ASSERT_TRUE(issued->has_value());
  EXPECT_EQ((*issued)->report, fmt::format("report {}", issued_winner.load()));
  EXPECT_EQ((*issued)->status,
            issued_winner.load() % 3 == 0 ? IssuedStatus::released : IssuedStatus::answered);
}

TEST_P(StoreTest, IssuedInstructionRoundTripsEveryFieldAndIsAnsweredOnce) {
  const auto i = make_issued("ins-1", "device-1", "sho-b");
  ASSERT_OK(db_->issued_instructions().put(i, 10));
  EXPECT_CODE(db_->issued_instructions().put(make_issued("ins-1", "device-2"), 10),
              ErrorCode::already_exists);
  auto got = find_issued(*db_, "ins-1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->instruction_id, "ins-1");
  EXPECT_EQ(got->device_id, "device-1");
  EXPECT_EQ(got->action, "delete");
  EXPECT_EQ(got->credential, i.credential);
  EXPECT_EQ(got->sequence, 42u);
  EXPECT_EQ(got->created, at(100));
  EXPECT_EQ(got->owner, "owner-7");
  EXPECT_EQ(got->revert_to, "sho-b");
  EXPECT_EQ(got->status, IssuedStatus::queued);
  EXPECT_EQ(got->report, "");
  EXPECT_EQ(got->answered, Time{});
  EXPECT_FALSE(find_issued(*db_, "ins-2").has_value());

  auto answered = db_->issued_instructions().answer("ins-1", "signed report", at(300), true);
  ASSERT_OK(answered);
  EXPECT_EQ(answered->status, IssuedStatus::released);
  EXPECT_EQ(answered->report, "signed report");
  EXPECT_EQ(answered->answered, at(300));
  EXPECT_EQ(answered->revert_to, "sho-b");
  EXPECT_CODE(db_->issued_instructions().answer("ins-1", "again", at(400), false),
              ErrorCode::transition_refused);
  EXPECT_CODE(db_->issued_instructions().answer("ins-9", "r", at(400), false),
              ErrorCode::not_found);
  got = find_issued(*db_, "ins-1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->status, IssuedStatus::released);
  EXPECT_EQ(got->answered, at(300));
}

TEST_P(StoreTest, IssuedLatestRevertIsTheDevicesNewest) {
  auto none = db_->issued_instructions().latest_revert("device-1");
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
  ASSERT_OK(db_->issued_instructions().put(make_issued("r-1", "device-1", "sho-b"), 10));
  ASSERT_OK(db_->issued_instructions().put(make_issued("r-2", "device-1", "sho-c"), 10));
  ASSERT_OK(db_->issued_instructions().put(make_issued("i-3", "device-1"), 10));  // not a revert
  ASSERT_OK(db_->issued_instructions().put(make_issued("r-4", "device-2", "sho-d"), 10));
  auto latest = db_->issued_instructions().latest_revert("device-1");
  ASSERT_OK(latest);
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->instruction_id, "r-2");
  EXPECT_EQ((*latest)->revert_to, "sho-c");
}

TEST_P(StoreTest, IssuedPutKeepsItsBoundOldestAnsweredFirstThenOldest) {
  ASSERT_OK(db_->issued_instructions().put(make_issued("a", "device-1"), 2));
  ASSERT_OK(db_->issued_instructions().put(make_issued("b", "device-1"), 2));
  ASSERT_OK(db_->issued_instructions().answer("b", "report", at(200), false));
  ASSERT_OK(db_->issued_instructions().put(make_issued("c", "device-1"), 2));
  EXPECT_TRUE(find_issued(*db_, "a").has_value());
  EXPECT_FALSE(find_issued(*db_, "b").has_value());
  ASSERT_OK(db_->issued_instructions().put(make_issued("d", "device-1"), 2));
  EXPECT_FALSE(find_issued(*db_, "a").has_value());
  EXPECT_TRUE(find_issued(*db_, "c").has_value());
  EXPECT_TRUE(find_issued(*db_, "d").has_value());
}

TEST_P(StoreTest, InstructionsAreSeenByAnotherInstanceAndAfterReopening) {
  if (!location_->shared()) GTEST_SKIP() << "one Database object is the whole database";
  ASSERT_OK(db_->instructions().put(make_instruction("ins-1", "device-1"), 10));
  ASSERT_OK(db_->issued_instructions().put(make_issued("ins-1", "device-1", "sho-b"), 10));
  auto collected = second().instructions().collect("device-1", 16, at(200));
  ASSERT_OK(collected);
  EXPECT_EQ(collected->size(), 1u);
  db_.reset();
  second_.reset();
  auto reopened = open_database(location_->url());
  ASSERT_TRUE(reopened) << fmt::to_string(reopened.error());
  auto q = find_instruction(**reopened, "ins-1");
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->status, InstructionStatus::delivered);
  ASSERT_OK((*reopened)->instructions().answer("ins-1", "report", at(300)));
  auto revert = (*reopened)->issued_instructions().latest_revert("device-1");
  ASSERT_OK(revert);
  ASSERT_TRUE(revert->has_value());
  EXPECT_EQ((*revert)->revert_to, "sho-b");
}

// ---- Notices (the RO's outbox) ----

StoredNotice make_notice(std::string kind, std::string subject, std::int64_t created = 100) {
  StoredNotice n;
  n.seq = 999;  // ignored by add
  n.kind = std::move(kind);
  n.subject = std::move(subject);
  n.sho = "sho-a";
  n.path = "/v1/sho/status";
  n.body = R"({"pcid":"001010000000001","text":"é \" \n","n":[1,2]})";
  n.created = at(created);
  return n;
}

std::vector<std::uint64_t> seqs_of(const std::vector<StoredNotice>& v) {
  std::vector<std::uint64_t> out;
  for (const auto& n : v) out.push_back(n.seq);
  return out;
}

std::uint64_t notice_count(Database& db) {
  auto n = db.notices().count();
  EXPECT_TRUE(n) << fmt::to_string(n.error());
  return n ? *n : 0;
}

TEST_P(StoreTest, NoticesGetIncreasingSeqsAndComeBackOldestFirstWithEveryField) {
  auto empty = db_->notices().pending(10);
  ASSERT_OK(empty);
  EXPECT_TRUE(empty->empty());
  EXPECT_EQ(notice_count(*db_), 0u);
  std::vector<std::uint64_t> given;
  for (int i = 0; i < 4; ++i) {
    auto n = make_notice(i % 2 == 0 ? "arrival" : "status", fmt::format("subject-{}", i), 100 + i);
    n.sho = fmt::format("sho-{}", i);
    auto seq = db_->notices().add(n);
    ASSERT_OK(seq);
    if (!given.empty()) {
      EXPECT_GT(*seq, given.back());
    }
    given.push_back(*seq);
  }
  EXPECT_EQ(notice_count(*db_), 4u);
  auto all = db_->notices().pending(10);
  ASSERT_OK(all);
  EXPECT_EQ(seqs_of(*all), given);
  ASSERT_EQ(all->size(), 4u);
  for (int i = 0; i < 4; ++i) {
    const StoredNotice& got = (*all)[static_cast<std::size_t>(i)];
    const StoredNotice want =
        make_notice(i % 2 == 0 ? "arrival" : "status", fmt::format("subject-{}", i), 100 + i);
    EXPECT_EQ(got.kind, want.kind);
    EXPECT_EQ(got.subject, want.subject);
    EXPECT_EQ(got.sho, fmt::format("sho-{}", i));
    EXPECT_EQ(got.path, want.path);
    EXPECT_EQ(got.body, want.body);
    EXPECT_EQ(got.created, want.created);
  }
  auto two = db_->notices().pending(2);
  ASSERT_OK(two);
  EXPECT_EQ(seqs_of(*two), (std::vector<std::uint64_t>{given[0], given[1]}));
  auto none = db_->notices().pending(0);
  ASSERT_OK(none);
  EXPECT_TRUE(none->empty());
}

TEST_P(StoreTest, NoticesAreRemovedSeveralAtOnceIgnoringUnknownSeqs) {
  std::vector<std::uint64_t> given;
  for (int i = 0; i < 5; ++i) {
    auto seq = db_->notices().add(make_notice("status", fmt::format("pkg-{}", i)));
    ASSERT_OK(seq);
    given.push_back(*seq);
  }
  const std::vector<std::uint64_t> none;
  auto zero = db_->notices().remove(none);
  ASSERT_OK(zero);
  EXPECT_EQ(*zero, 0u);
  EXPECT_EQ(notice_count(*db_), 5u);
  const std::vector<std::uint64_t> some = {given[3], given[1], given.back() + 1000, given[1],
                                           std::numeric_limits<std::uint64_t>::max()};
  auto removed = db_->notices().remove(some);
  ASSERT_OK(removed);
  EXPECT_EQ(*removed, 2u);
  EXPECT_EQ(notice_count(*db_), 3u);
  auto left = db_->notices().pending(10);
  ASSERT_OK(left);
  EXPECT_EQ(seqs_of(*left), (std::vector<std::uint64_t>{given[0], given[2], given[4]}));
  auto again = db_->notices().remove(some);  // gone already
  ASSERT_OK(again);
  EXPECT_EQ(*again, 0u);
}

TEST_P(StoreTest, ANoticeSeqIsNotReusedAfterTheHighestIsRemoved) {
  auto a = db_->notices().add(make_notice("arrival", "a"));
  auto b = db_->notices().add(make_notice("arrival", "b"));
  ASSERT_OK(a);
  ASSERT_OK(b);
  const std::vector<std::uint64_t> highest = {*b};
  ASSERT_OK(db_->notices().remove(highest));
  auto c = db_->notices().add(make_notice("arrival", "c"));
  ASSERT_OK(c);
  EXPECT_GT(*c, *b);
  if (!location_->shared()) return;
  // Not after reopening either: remove every notice, the highest last.
  const std::vector<std::uint64_t> all = {*a, *c};
  ASSERT_OK(db_->notices().remove(all));
  db_.reset();
  second_.reset();
  auto reopened = open_database(location_->url());
  ASSERT_TRUE(reopened) << fmt::to_string(reopened.error());
  auto d = (*reopened)->notices().add(make_notice("arrival", "d"));
  ASSERT_OK(d);
  EXPECT_GT(*d, *c);
}

TEST_P(StoreTest, NoticesAreSeenByAnotherInstanceAndAfterReopening) {
  if (!location_->shared()) GTEST_SKIP() << "one Database object is the whole database";
  auto a = db_->notices().add(make_notice("arrival", "001010000000001", 100));
  auto b = second().notices().add(make_notice("status", "pkg-1", 200));
  ASSERT_OK(a);
  ASSERT_OK(b);
  EXPECT_GT(*b, *a);
  auto seen = second().notices().pending(10);
  ASSERT_OK(seen);
  EXPECT_EQ(seqs_of(*seen), (std::vector<std::uint64_t>{*a, *b}));
  db_.reset();
  second_.reset();
  auto reopened = open_database(location_->url());
  ASSERT_TRUE(reopened) << fmt::to_string(reopened.error());
  auto kept = (*reopened)->notices().pending(10);
  ASSERT_OK(kept);
  ASSERT_EQ(seqs_of(*kept), (std::vector<std::uint64_t>{*a, *b}));
  EXPECT_EQ((*kept)[1].kind, "status");
  EXPECT_EQ((*kept)[1].subject, "pkg-1");
  EXPECT_EQ((*kept)[1].body, make_notice("status", "pkg-1").body);
  EXPECT_EQ((*kept)[1].created, at(200));
  const std::vector<std::uint64_t> first = {*a};
  auto removed = (*reopened)->notices().remove(first);
  ASSERT_OK(removed);
  EXPECT_EQ(*removed, 1u);
  EXPECT_EQ(notice_count(**reopened), 1u);
}

// ---- Across instances and threads ----

TEST_P(StoreTest, DataWrittenByOneInstanceIsSeenByAnotherAndAfterReopening) {
  if (!location_->shared()) GTEST_SKIP() << "one Database object is the whole database";
  ASSERT_OK(db_->pcids().add_batch({make_pcid("001010000000001", 1)}));
  ASSERT_OK(db_->sqns().reserve("001010000000001", 9, 100));
  auto p = second().pcids().find("001010000000001");
  ASSERT_OK(p);
  EXPECT_TRUE(p->has_value());
  db_.reset();
  second_.reset();
  auto reopened = open_database(location_->url());
  ASSERT_TRUE(reopened) << fmt::to_string(reopened.error());
  auto cur = (*reopened)->sqns().current("001010000000001");
  ASSERT_OK(cur);
  EXPECT_EQ(*cur, 9u);
  p = (*reopened)->pcids().find("001010000000001");
  ASSERT_OK(p);
  ASSERT_TRUE(p->has_value());
  EXPECT_EQ((*p)->opc.get(), make_pcid("x", 1).opc.get());
}

TEST_P(StoreTest, ConcurrentDisjointBatchesAllLand) {
  constexpr int kThreads = 8, kPerBatch = 20;
  std::vector<std::thread> threads;
  Database* instances[] = {db_.get(), &second()};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto r = instances[t % 2]->pcids().add_batch(pcids(fmt::format("0010{}", t), kPerBatch));
      EXPECT_TRUE(r) << fmt::to_string(r.error());
    });
  }
  for (auto& th : threads) th.join();
  auto n = db_->pcids().count();
  ASSERT_OK(n);
  EXPECT_EQ(*n, static_cast<std::uint64_t>(kThreads * kPerBatch));
}

// The same PCIDs in opposite orders from two instances (a lock-order deadlock on PostgreSQL,
// which is retried): exactly one batch lands, whole.
TEST_P(StoreTest, ConcurrentOverlappingBatchesLandOnce) {
  constexpr int kRounds = 4;
  for (int round = 0; round < kRounds; ++round) {
    auto forward = pcids(fmt::format("0019{}", round), 30);
    auto backward = forward;
    std::reverse(backward.begin(), backward.end());
    Result<void> a, b;
    std::thread ta([&] { a = db_->pcids().add_batch(forward); });
    std::thread tb([&] { b = second().pcids().add_batch(backward); });
    ta.join();
    tb.join();
    EXPECT_NE(a.has_value(), b.has_value()) << "round " << round;
    for (const auto* r : {&a, &b}) {
      if (!*r) {
        EXPECT_EQ(r->error().code, ErrorCode::already_exists) << fmt::to_string(r->error());
      }
    }
  }
  auto n = db_->pcids().count();
  ASSERT_OK(n);
  EXPECT_EQ(*n, static_cast<std::uint64_t>(kRounds * 30));
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreTest, ::testing::ValuesIn(backends()),
                         [](const auto& p) { return p.param.name; });

// ---- URLs --------------------------------------------------------------------------------------

TEST(OpenDatabaseTest, RefusesUnknownOrIncompleteUrls) {
  for (const char* url : {"", "mysql://localhost/db", "sqlite:", "SQLITE:/tmp/x.db", "memory:x",
                          "postgresql", "file:/tmp/x.db"}) {
    auto db = open_database(url);
    ASSERT_FALSE(db) << url;
    EXPECT_EQ(db.error().code, ErrorCode::invalid_argument) << url;
  }
}

TEST(OpenDatabaseTest, MalformedPostgresUrlIsInvalidArgument) {
  auto db = open_database("postgresql:///db?host=/tmp&no_such_option=1");
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().code, ErrorCode::invalid_argument) << fmt::to_string(db.error());
}

TEST(OpenDatabaseTest, UnreachableDatabasesAreIoErrors) {
  auto sqlite = open_database("sqlite:/nonexistent-mcim-dir/store.db");
  ASSERT_FALSE(sqlite);
  EXPECT_EQ(sqlite.error().code, ErrorCode::io_error) << fmt::to_string(sqlite.error());
  auto pg = open_database("postgresql://mcim:s3cr3t-pw@/postgres?host=/nonexistent-mcim-socket");
  ASSERT_FALSE(pg);
  EXPECT_EQ(pg.error().code, ErrorCode::io_error) << fmt::to_string(pg.error());
  EXPECT_THAT(pg.error().message, Not(HasSubstr("s3cr3t-pw")));
}

TEST(OpenDatabaseTest, AFileThatIsNotADatabaseIsAnIoError) {
  TempDir dir;
  const std::string file = dir.path() + "/notes.txt";
  FILE* f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("this is not an SQLite database, just text long enough to have a header\n", f);
  std::fclose(f);
  auto db = open_database("sqlite:" + file);
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().code, ErrorCode::io_error) << fmt::to_string(db.error());
}

TEST(OpenDatabaseTest, MemoryUrlOpensTheInMemoryStore) {
  auto db = open_database("memory:");
  if (!db) GTEST_SKIP() << fmt::to_string(db.error());
  EXPECT_EQ((*db)->backend(), "memory");
}

TEST(SqliteFileTest, IsInWalModeAndReadableByItsOwnerOnly) {
  SqliteFile location;
  {
    auto db = open_database(location.url());
    ASSERT_TRUE(db) << fmt::to_string(db.error());
    ASSERT_OK((*db)->pcids().add_batch({make_pcid("001010000000001", 1)}));
  }
  struct stat st {};
  ASSERT_EQ(::stat(location.file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(location.file().c_str(), &raw), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &s, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), "wal");
  sqlite3_finalize(s);
  sqlite3_close(raw);
}

// The store turns SQLite's memory statistics off (sqlite.cpp, configure_library): they put a
// mutex of the library's around every allocation of every connection. Checked in a process of
// its own, where the store's open is the first use of SQLite, as in a service.
TEST(SqliteFileTest, KeepsNoMemoryStatistics) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        auto db = open_database("sqlite::memory:");
        if (!db || !(*db)->pcids().add_batch({make_pcid("001010000000001", 1)})) std::_Exit(2);
        std::_Exit(sqlite3_memory_used() == 0 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// ---- Migrations (the SQL adapters) ---------------------------------------------------------

// Raw SQL on a test database, bypassing the adapter: to build old or future schemas by hand.
class RawSql {
 public:
  virtual ~RawSql() = default;
  virtual void exec(const std::string& sql) = 0;
  virtual std::int64_t integer(const std::string& sql) = 0;  // first column of the first row
};

class RawSqlite final : public RawSql {
 public:
  explicit RawSqlite(const std::string& file) {
    EXPECT_EQ(sqlite3_open(file.c_str(), &db_), SQLITE_OK);
  }
  ~RawSqlite() override { sqlite3_close(db_); }
  void exec(const std::string& sql) override {
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
        << (err ? err : "") << "\n"
        << sql;
    sqlite3_free(err);
  }
  std::int64_t integer(const std::string& sql) override {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sql;
    std::int64_t v = -1;
    if (s != nullptr && sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
  }

 private:
  sqlite3* db_ = nullptr;
};

class RawPostgres final : public RawSql {
 public:
  explicit RawPostgres(const std::string& url) : conn_(PQconnectdb(url.c_str())) {
    EXPECT_EQ(PQstatus(conn_), CONNECTION_OK) << PQerrorMessage(conn_);
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);
  }
  ~RawPostgres() override { PQfinish(conn_); }
  void exec(const std::string& sql) override {
    PGresult* r = PQexec(conn_, sql.c_str());
    EXPECT_TRUE(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK)
        << PQerrorMessage(conn_) << "\n"
        << sql;
    PQclear(r);
  }
  std::int64_t integer(const std::string& sql) override {
    PGresult* r = PQexec(conn_, sql.c_str());
    std::int64_t v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
      v = std::atoll(PQgetvalue(r, 0, 0));
    } else {
      ADD_FAILURE() << PQerrorMessage(conn_) << "\n" << sql;
    }
    PQclear(r);
    return v;
  }

 private:
  PGconn* conn_;
};

struct SqlParam {
  std::string name;
  std::string version_table;
  std::string index_count_sql;  // how many of v2's indexes exist
  std::function<std::string_view(const Migration&)> text;
};

void PrintTo(const SqlParam& p, std::ostream* os) { *os << p.name; }

class SqlSchemaTest : public ::testing::TestWithParam<SqlParam> {
 protected:
  void SetUp() override {
    if (GetParam().name == "sqlite_file") {
      auto file = std::make_unique<SqliteFile>();
      raw_ = std::make_unique<RawSqlite>(file->file());
      location_ = std::move(file);
    } else {
      auto pg = make_pg();
      ASSERT_TRUE(pg) << fmt::to_string(pg.error());
      location_ = std::move(*pg);
      raw_ = std::make_unique<RawPostgres>(location_->url());
    }
  }
  void TearDown() override {
    raw_.reset();
    location_.reset();
  }

  std::int64_t applied() { return raw_->integer("SELECT count(*) FROM schema_version"); }

  std::unique_ptr<Location> location_;
  std::unique_ptr<RawSql> raw_;
};

TEST_P(SqlSchemaTest, AFreshDatabaseRecordsEveryMigration) {
  auto db = open_database(location_->url());
  ASSERT_TRUE(db) << fmt::to_string(db.error());
  EXPECT_EQ((*db)->schema_version(), latest_schema_version());
  EXPECT_EQ(applied(), latest_schema_version());
  EXPECT_EQ(raw_->integer("SELECT max(version) FROM schema_version"), latest_schema_version());
  db->reset();
  auto again = open_database(location_->url());  // nothing to do the second time
  ASSERT_TRUE(again) << fmt::to_string(again.error());
  EXPECT_EQ(applied(), latest_schema_version());
}

TEST_P(SqlSchemaTest, ADatabaseAtVersion1IsMigratedKeepingItsData) {
  // Version 1 as an older build left it, with a subscription in it.
  raw_->exec(std::string(GetParam().version_table));
  raw_->exec(std::string(GetParam().text(migrations()[0])));
  raw_->exec("INSERT INTO schema_version (version, applied_at, description) VALUES (1, 0, 'v1')");
  raw_->exec(
      "INSERT INTO pcid_subscription (pcid, batch, k, opc, ind_bits, status, dormant_until, "
      "active_until, not_after) VALUES ('001010000000001', 'old', " +
      std::string(GetParam().name == "sqlite_file"
                      ? "zeroblob(16), zeroblob(16)"
                      : "'\\x00000000000000000000000000000000'::bytea, "
                        "'\\x00000000000000000000000000000000'::bytea") +
      ", 5, 'dormant', 10, 0, 99)");
  raw_->exec(
      "INSERT INTO pcid_subscription (pcid, batch, k, opc, ind_bits, status, dormant_until, "
      "active_until, not_after) VALUES ('001010000000002', 'old', " +
      std::string(GetParam().name == "sqlite_file"
                      ? "zeroblob(16), zeroblob(16)"
                      : "'\\x00000000000000000000000000000000'::bytea, "
                        "'\\x00000000000000000000000000000000'::bytea") +
      ", 5, 'expired', 7, 0, 99)");
  ASSERT_EQ(raw_->integer(GetParam().index_count_sql), 0);
  auto db = open_database(location_->url());
  ASSERT_TRUE(db) << fmt::to_string(db.error());
  EXPECT_EQ((*db)->schema_version(), latest_schema_version());
  EXPECT_EQ(applied(), latest_schema_version());
  EXPECT_EQ(raw_->integer(GetParam().index_count_sql), 2);
  auto p = (*db)->pcids().find("001010000000001");
  ASSERT_OK(p);
  ASSERT_TRUE(p->has_value());
  EXPECT_EQ((*p)->batch, "old");
  // v6: a PCID expired before it starts its quarantine at its dormant_until.
  auto expired = (*db)->pcids().find("001010000000002");
  ASSERT_OK(expired);
  EXPECT_EQ((*expired)->expired_at, at(7));
  auto n = (*db)->pcids().expire_dormant(at(11));  // the v2 index serves this sweep
  ASSERT_OK(n);
  EXPECT_EQ(*n, 1u);
  // v4's tables are there, empty, and usable.
  for (const char* table : {"attestation_request", "subscriber", "challenge", "reference_set"}) {
    EXPECT_EQ(raw_->integer(fmt::format("SELECT count(*) FROM {}", table)), 0) << table;
  }
  ASSERT_OK((*db)->subscribers().add(make_subscriber("device-1", "001010000000001", "1")));
  EXPECT_EQ(raw_->integer("SELECT count(*) FROM subscriber"), 1);
  // v8's tables too.
  for (const char* table : {"instruction", "issued_instruction"}) {
    EXPECT_EQ(raw_->integer(fmt::format("SELECT count(*) FROM {}", table)), 0) << table;
  }
  ASSERT_OK((*db)->instructions().put(make_instruction("ins-1", "device-1"), 10));
  ASSERT_OK((*db)->issued_instructions().put(make_issued("ins-1", "device-1", "sho-b"), 10));
  EXPECT_EQ(raw_->integer("SELECT count(*) FROM instruction WHERE status = 'pending'"), 1);
  EXPECT_EQ(raw_->integer("SELECT count(*) FROM issued_instruction WHERE status = 'queued'"), 1);
  // v9's outbox too.
  EXPECT_EQ(raw_->integer("SELECT count(*) FROM notice"), 0);
  auto seq = (*db)->notices().add(make_notice("arrival", "001010000000001"));
  ASSERT_OK(seq);
  EXPECT_EQ(raw_->integer(fmt::format("SELECT count(*) FROM notice WHERE seq = {}", *seq)), 1);
}

// The uniqueness SubscriberStore::add relies on is the schema's, not the adapter's: a second
// row with a taken pcid or imsi is refused even by raw SQL.
TEST_P(SqlSchemaTest, SubscriberPcidAndImsiAreUniqueInTheSchema) {
  auto db = open_database(location_->url());
  ASSERT_TRUE(db) << fmt::to_string(db.error());
  ASSERT_OK((*db)->subscribers().add(make_subscriber("device-1", "001010000000001", "1")));
  auto taken = make_subscriber("device-2", "001010000000001", "2");
  EXPECT_CODE((*db)->subscribers().add(taken), ErrorCode::already_exists);
  const auto unique_indexes =
      GetParam().name == "sqlite_file"
          ? raw_->integer("SELECT count(*) FROM pragma_index_list('subscriber') WHERE \"unique\"")
          // The catalogs, not pg_indexes: its indexdef runs pg_get_indexdef() on other schemas'
          // rows too, which fails with "could not open relation" while a test running beside
          // this one drops its schema.
          : raw_->integer(
                "SELECT count(*) FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = current_schema() "
                "AND t.relname = 'subscriber' AND i.indisunique");
  EXPECT_EQ(unique_indexes, 3);  // device_id (the key), pcid, imsi
}

TEST_P(SqlSchemaTest, ANewerSchemaIsRefusedAndLeftAlone) {
  {
    auto db = open_database(location_->url());
    ASSERT_TRUE(db) << fmt::to_string(db.error());
  }
  const int future = latest_schema_version() + 1;
  raw_->exec(fmt::format(
      "INSERT INTO schema_version (version, applied_at, description) VALUES ({}, 0, 'future')",
      future));
  auto db = open_database(location_->url());
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().code, ErrorCode::unsupported);
  EXPECT_THAT(db.error().message, HasSubstr(std::to_string(future)));
  EXPECT_EQ(applied(), latest_schema_version() + 1);
}

TEST_P(SqlSchemaTest, ConcurrentOpenersMigrateOnce) {
  std::vector<std::thread> threads;
  std::atomic<int> opened{0};
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      auto db = open_database(location_->url());
      EXPECT_TRUE(db) << fmt::to_string(db.error());
      if (db) ++opened;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(opened.load(), 6);
  EXPECT_EQ(applied(), latest_schema_version());
}

INSTANTIATE_TEST_SUITE_P(
    Sql, SqlSchemaTest,
    ::testing::Values(
        SqlParam{"sqlite_file", std::string(kSchemaVersionSqlite),
                 "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN "
                 "('pcid_subscription_dormant', 'package_open_by_device')",
                 [](const Migration& m) { return m.sqlite; }},
        SqlParam{"postgresql", std::string(kSchemaVersionPostgresql),
                 "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE n.nspname = current_schema() AND c.relkind = 'i' AND "
                 "c.relname IN ('pcid_subscription_dormant', 'package_open_by_device')",
                 [](const Migration& m) { return m.postgresql; }}),
    [](const auto& p) { return p.param.name; });

// Stops the throwaway PostgreSQL server, if a test started it.
class PgEnvironment final : public ::testing::Environment {
 public:
  void TearDown() override { PgServer::instance().stop(); }
};
[[maybe_unused]] const auto* const kPgEnvironment =
    ::testing::AddGlobalTestEnvironment(new PgEnvironment);

}  // namespace
}  // namespace mcim::store
