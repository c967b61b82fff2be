// The ICF (roles/ro/icf.h) over the in-memory Database: vectors checked by a USIM
// (aka::usim_authenticate, as the TRE runs it), SQN management across instances, F7 delayed
// activation and expiry, AUTS resynchronisation, one session per PCID, import, audit.
#include "roles/ro/icf.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <variant>

#include "../store/audit_refusals.h"
#include "aka/milenage.h"
#include "aka/sqn.h"
#include "common/hex.h"
#include "store/memory.h"

namespace mcim::ro {
namespace {

using std::chrono::hours;
using std::chrono::seconds;

const std::string kPcid = "001019990000001";
const TimePoint kT0 = std::chrono::sys_seconds(seconds(1'800'000'000));
const Bytes<16> kK = {0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f,
                      0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc};
const Bytes<16> kOp = {0xcd, 0xc2, 0x02, 0xd5, 0x12, 0x3e, 0x20, 0xf6,
                       0x2b, 0x6d, 0x67, 0x6a, 0xc7, 0x2c, 0xb3, 0x18};

store::PcidSubscription subscription(const std::string& pcid, unsigned ind_bits = 5) {
  store::PcidSubscription s;
  s.pcid = pcid;
  s.k = Secret<16>(kK);
  s.opc = Secret<16>(aka::Milenage::compute_opc(kK, kOp));
  s.ind_bits = ind_bits;
  s.dormant_until = std::chrono::floor<seconds>(kT0) + hours(24 * 30);
  s.not_after = std::chrono::floor<seconds>(kT0) + hours(24 * 365);
  return s;
}

// The device side: the PCID credential's algorithm and the USIM's SQN array.
struct Usim {
  explicit Usim(unsigned ind_bits = 5)
      : algo(kK, aka::Milenage::compute_opc(kK, kOp)), sqn(policy(ind_bits)) {}
  static aka::SqnPolicy policy(unsigned ind_bits) {
    aka::SqnPolicy p;
    p.ind_bits = ind_bits;
    return p;
  }
  aka::UsimAnswer run(const aka::AuthVector& v) {
    auto a = aka::usim_authenticate(algo, sqn, v.rand, v.autn);
    EXPECT_TRUE(a) << a.error().message;
    return a ? *a : aka::UsimAnswer{};
  }
  aka::Milenage algo;
  aka::UsimSqn sqn;
};

// A USIM whose every IND slot accepted SEQ `seq` already (it was restored from a backup of the
// network side, say): SEQ_HE is behind, the next vector is not fresh.
void usim_ahead(Usim& usim, std::uint64_t seq) {
  for (unsigned ind = 0; ind < 32; ++ind) {
    usim.sqn.record(aka::sqn_bytes(usim.sqn.policy().join(seq, ind)));
  }
}

class IcfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(icf_.import_batch("batch-1", {subscription(kPcid)}, "supplier:m2mes"));
  }
  void activate(std::chrono::seconds window = hours(1)) {
    auto until = icf_.activate(kPcid, window, "operator:sho-a");
    ASSERT_TRUE(until) << until.error().message;
  }
  std::vector<aka::AuthVector> vectors(unsigned count, Icf* icf = nullptr) {
    auto v = (icf ? *icf : icf_).vectors(kPcid, count, "vno-1");
    EXPECT_TRUE(v) << v.error().message;
    return v ? *v : std::vector<aka::AuthVector>{};
  }
  ErrorCode refusal(const Result<std::vector<aka::AuthVector>>& r) {
    EXPECT_FALSE(r);
    return r ? ErrorCode::internal : r.error().code;
  }
  std::uint64_t seq_he() { return *db_->sqns().current(kPcid); }

  FakeClock clock_{kT0};
  OsRandom rng_;
  std::unique_ptr<store::Database> db_ = store::make_memory_database();
  Icf icf_{*db_, clock_, rng_};
};

TEST_F(IcfTest, VectorsVerifyWithTheUsim) {
  activate();
  Usim usim;
  const auto vs = vectors(5);
  ASSERT_EQ(vs.size(), 5u);
  for (const auto& v : vs) {
    EXPECT_EQ(v.amf, (aka::Amf{0x80, 0x00}));
    auto answer = usim.run(v);
    ASSERT_TRUE(std::holds_alternative<aka::UsimSuccess>(answer));
    const auto& ok = std::get<aka::UsimSuccess>(answer);
    EXPECT_EQ(ok.res, v.xres);
    EXPECT_EQ(ok.ck, v.ck);
    EXPECT_EQ(ok.ik, v.ik);
  }
  // Every RAND fresh.
  std::set<aka::Rand> rands;
  for (const auto& v : vs) rands.insert(v.rand);
  EXPECT_EQ(rands.size(), 5u);
}

TEST_F(IcfTest, SqnStrictlyIncreasesAcrossCallsAndInstances) {
  activate();
  OsRandom rng2;
  Icf other(*db_, clock_, rng2);
  std::vector<std::uint64_t> sqns;
  for (int i = 0; i < 6; ++i) {
    for (const auto& v : vectors(static_cast<unsigned>(1 + i % 3), i % 2 ? &other : nullptr)) {
      sqns.push_back(aka::sqn_value(v.sqn));
    }
  }
  ASSERT_EQ(sqns.size(), 12u);
  const aka::SqnPolicy p = Usim::policy(5);
  for (std::size_t i = 0; i < sqns.size(); ++i) {
    EXPECT_EQ(p.seq_of(sqns[i]), i + 1) << i;         // consecutive SEQ from 1
    EXPECT_EQ(p.ind_of(sqns[i]), (i + 1) % 32) << i;  // IND cycles with SEQ
    if (i > 0) {
      EXPECT_GT(sqns[i], sqns[i - 1]);
    }
  }
  EXPECT_EQ(seq_he(), 12u);
}

// IND cycling lets a USIM accept vectors of one batch used out of order (two VNOs, say).
TEST_F(IcfTest, VectorsUsedOutOfOrderAreAccepted) {
  activate();
  Usim usim;
  const auto vs = vectors(5);
  for (std::size_t i : {4u, 1u, 3u, 0u, 2u}) {
    EXPECT_TRUE(std::holds_alternative<aka::UsimSuccess>(usim.run(vs[i]))) << i;
  }
  // A replayed one is not fresh.
  EXPECT_TRUE(std::holds_alternative<aka::UsimSyncFailure>(usim.run(vs[2])));
}

TEST_F(IcfTest, DormantPcidIsRefused) {
  auto r = icf_.vectors(kPcid, 1, "vno-1");
  EXPECT_EQ(refusal(r), ErrorCode::credential_unusable);
  EXPECT_NE(r.error().message.find("dormant"), std::string::npos) << r.error().message;
  auto s = icf_.open_session(kPcid, "vno-1");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::credential_unusable);
  EXPECT_EQ(seq_he(), 0u);
}

TEST_F(IcfTest, UnknownPcidIsNotFound) {
  EXPECT_EQ(refusal(icf_.vectors("001019990000099", 1, "vno-1")), ErrorCode::not_found);
  EXPECT_EQ(icf_.activate("001019990000099", hours(1), "operator:sho-a").error().code,
            ErrorCode::not_found);
}

TEST_F(IcfTest, ActivationWindowBoundsTheService) {
  auto until = icf_.activate(kPcid, hours(1), "operator:sho-a");
  ASSERT_TRUE(until);
  EXPECT_EQ(*until, std::chrono::floor<seconds>(kT0) + hours(1));
  clock_.advance(hours(1));
  EXPECT_EQ(vectors(1).size(), 1u);  // the window's last second is inside
  clock_.advance(seconds(1));
  EXPECT_EQ(refusal(icf_.vectors(kPcid, 1, "vno-1")), ErrorCode::credential_unusable);
  activate(hours(2));  // announced again
  EXPECT_EQ(vectors(1).size(), 1u);
  EXPECT_EQ(icf_.activate(kPcid, seconds(0), "o").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(icf_.activate(kPcid, hours(24 * 31), "o").error().code, ErrorCode::invalid_argument);
  // Who announced it is on the record.
  auto audit = db_->audit().recent(10);
  ASSERT_TRUE(audit);
  const auto it = std::find_if(audit->begin(), audit->end(), [](const auto& r) {
    return r.event == "activate" && r.outcome == "ok";
  });
  ASSERT_NE(it, audit->end());
  EXPECT_EQ(it->principal, "operator:sho-a");
  EXPECT_EQ(it->service, "icf");
  EXPECT_EQ(it->subject, kPcid);
}

TEST_F(IcfTest, DormantPcidExpires) {
  clock_.advance(hours(24 * 30) + seconds(1));
  // Past dormant_until: refused as expired even before the sweep ran.
  EXPECT_EQ(refusal(icf_.vectors(kPcid, 1, "vno-1")), ErrorCode::pcid_expired);
  EXPECT_EQ(icf_.activate(kPcid, hours(1), "operator:sho-a").error().code, ErrorCode::pcid_expired);
  EXPECT_EQ(*icf_.expire_dormant(), 1u);
  EXPECT_EQ((*db_->pcids().find(kPcid))->status, store::PcidStatus::expired);
  EXPECT_EQ(*icf_.expire_dormant(), 0u);
  EXPECT_EQ(icf_.activate(kPcid, hours(1), "operator:sho-a").error().code, ErrorCode::pcid_expired);
}

// F8: an expired PCID returns to the pool only after its quarantine, never while a session on
// it is live, and its reallocation replaces the old subscription and DRF registration. kPcid is
// dormant until +30 d and lives until +365 d; the quarantine is 10 days (1 s with a session).
struct ReuseCase {
  const char* name;
  bool activate;                // the owner announced it (so the dormant sweep leaves it)
  std::chrono::seconds attach;  // when a session is opened (0: none), since kT0
  std::chrono::seconds import;  // when the new batch arrives, since kT0
  bool reallocated;
};

class IcfReuseTest : public IcfTest, public ::testing::WithParamInterface<ReuseCase> {};

constexpr auto kDay = hours(24);
const ReuseCase kReuseCases[] = {
    {"DormantInQuarantine", false, seconds(0), kDay * 41 - seconds(1), false},
    {"DormantOutOfQuarantine", false, seconds(0), kDay * 41, true},
    {"ActiveInItsLifetime", true, seconds(0), kDay * 300, false},
    {"LifetimeOverInQuarantine", true, seconds(0), kDay * 365 + kDay * 9, false},
    {"LifetimeOverOutOfQuarantine", true, seconds(0), kDay * 365 + kDay * 10, true},
    // A session opened at the very end of the lifetime outlives a quarantine shorter than it.
    {"LiveSessionHoldsIt", true, kDay * 365 - seconds(1), kDay * 365 + seconds(1), false},
};

TEST_P(IcfReuseTest, ExpiredPcidsAreReallocatedAfterTheirQuarantineOnly) {
  const ReuseCase& c = GetParam();
  IcfConfig config;
  config.quarantine = c.attach == seconds(0) ? kDay * 10 : seconds(1);
  Icf icf(*db_, clock_, rng_, config);
  store::Registration reg;
  reg.pcid = kPcid;
  reg.device_id = "dev-old";
  reg.sho = "sho-a";
  ASSERT_TRUE(db_->registrations().put(reg));
  if (c.activate) activate(hours(24 * 30));
  // The sweep runs a day after the dormant window closed (at kT0 + 31 d).
  clock_.set(kT0 + kDay * 31);
  ASSERT_TRUE(icf.expire_dormant());
  if (c.attach != seconds(0)) {
    clock_.set(kT0 + c.attach);
    activate(hours(1));
    ASSERT_TRUE(icf.open_session(kPcid, "vno-1"));
  }
  clock_.set(kT0 + c.import);
  auto fresh = subscription(kPcid);
  fresh.k = Secret<16>(Bytes<16>{1, 2, 3});
  fresh.dormant_until = std::chrono::floor<seconds>(clock_.now()) + kDay;
  fresh.not_after = std::chrono::floor<seconds>(clock_.now()) + kDay * 365;
  auto r = icf.import_batch("batch-2", {fresh}, "supplier:m2mes");
  auto stored = *db_->pcids().find(kPcid);
  auto still = *db_->registrations().find(kPcid);
  if (c.reallocated) {
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(stored->batch, "batch-2");
    EXPECT_EQ(stored->status, store::PcidStatus::dormant);
    EXPECT_EQ(stored->k.get(), fresh.k.get());
    EXPECT_FALSE(still) << "the old owner's registration must go with the old subscription";
    EXPECT_EQ((*db_->audit().recent(1)).front().detail, "1 pcids, 1 reallocated");
  } else {
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::already_exists);
    EXPECT_EQ(stored->batch, "batch-1");
    EXPECT_EQ(stored->k.get(), kK);
    EXPECT_TRUE(still);
  }
}

INSTANTIATE_TEST_SUITE_P(Reuse, IcfReuseTest, ::testing::ValuesIn(kReuseCases),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

TEST_F(IcfTest, TheDormantSweepRecordsWhenAPcidExpired) {
  clock_.advance(hours(24 * 30) + seconds(5));
  ASSERT_EQ(*icf_.expire_dormant(), 1u);
  EXPECT_EQ((*db_->pcids().find(kPcid))->expired_at,
            std::chrono::floor<seconds>(kT0) + hours(24 * 30) + seconds(5));
}

TEST_F(IcfTest, ActivePcidStopsAtTheEndOfItsLifetime) {
  activate();
  clock_.advance(hours(24 * 365) - hours(1));
  activate(hours(24 * 30));  // a window past the lifetime does not extend it
  EXPECT_EQ(vectors(1).size(), 1u);
  clock_.advance(hours(1));
  EXPECT_EQ(refusal(icf_.vectors(kPcid, 1, "vno-1")), ErrorCode::pcid_expired);
}

TEST_F(IcfTest, ResynchronisationFromAUsimAhead) {
  activate();
  Usim usim;
  const aka::SqnPolicy p = Usim::policy(5);
  usim_ahead(usim, 1000);
  const auto v = vectors(1).front();
  auto answer = usim.run(v);
  ASSERT_TRUE(std::holds_alternative<aka::UsimSyncFailure>(answer));
  const auto auts = std::get<aka::UsimSyncFailure>(answer).auts;
  auto fresh = icf_.resynchronise(kPcid, v.rand, auts, 2, "vno-1");
  ASSERT_TRUE(fresh) << fresh.error().message;
  ASSERT_EQ(fresh->size(), 2u);
  EXPECT_EQ(p.seq_of(aka::sqn_value((*fresh)[0].sqn)), 1001u);
  for (const auto& nv : *fresh) {
    EXPECT_TRUE(std::holds_alternative<aka::UsimSuccess>(usim.run(nv)));
  }
  EXPECT_EQ(seq_he(), 1002u);
}

TEST_F(IcfTest, ForgedAutsIsMacMismatchAndChangesNothing) {
  activate();
  Usim usim;
  usim_ahead(usim, 1000);
  const auto v = vectors(1).front();
  const auto auts = std::get<aka::UsimSyncFailure>(usim.run(v)).auts;
  const std::uint64_t before = seq_he();
  for (std::size_t byte = 0; byte < auts.size(); ++byte) {
    aka::Auts forged = auts;
    forged[byte] ^= 0x01;
    EXPECT_EQ(refusal(icf_.resynchronise(kPcid, v.rand, forged, 1, "vno-1")),
              ErrorCode::mac_mismatch)
        << byte;
  }
  aka::Rand other_rand = v.rand;
  other_rand[0] ^= 0x01;
  EXPECT_EQ(refusal(icf_.resynchronise(kPcid, other_rand, auts, 1, "vno-1")),
            ErrorCode::mac_mismatch);
  // AUTS made with another key.
  aka::Milenage stranger(Bytes<16>{1}, aka::Milenage::compute_opc(Bytes<16>{1}, kOp));
  const auto foreign = aka::make_auts(stranger, v.rand, aka::sqn_bytes(5000 << 5));
  EXPECT_EQ(refusal(icf_.resynchronise(kPcid, v.rand, foreign, 1, "vno-1")),
            ErrorCode::mac_mismatch);
  EXPECT_EQ(seq_he(), before);
}

TEST_F(IcfTest, CountIsOneToFive) {
  activate();
  EXPECT_EQ(refusal(icf_.vectors(kPcid, 0, "vno-1")), ErrorCode::invalid_argument);
  EXPECT_EQ(refusal(icf_.vectors(kPcid, 6, "vno-1")), ErrorCode::invalid_argument);
  EXPECT_EQ(seq_he(), 0u);
  EXPECT_EQ(vectors(1).size(), 1u);
  EXPECT_EQ(vectors(5).size(), 5u);
  EXPECT_EQ(seq_he(), 6u);
}

TEST_F(IcfTest, SqnSpaceExhaustionIsRefused) {
  ASSERT_TRUE(icf_.import_batch("batch-2", {subscription("001019990000002", 10)}, "s"));
  ASSERT_TRUE(icf_.activate("001019990000002", hours(1), "o"));
  const std::uint64_t seq_max = aka::kSqnMax >> 10;
  ASSERT_TRUE(db_->sqns().resynchronise("001019990000002", seq_max - 1));
  EXPECT_EQ(refusal(icf_.vectors("001019990000002", 2, "vno-1")), ErrorCode::sqn_exhausted);
  auto last = icf_.vectors("001019990000002", 1, "vno-1");
  ASSERT_TRUE(last);
  EXPECT_EQ(aka::sqn_value(last->front().sqn) >> 10, seq_max);
}

TEST_F(IcfTest, OneSessionPerPcidAtATime) {
  activate();
  auto s = icf_.open_session(kPcid, "vno-1");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->id.size(), 32u);
  EXPECT_TRUE(s->restricted);
  EXPECT_EQ(s->imsi, kPcid);
  auto second = icf_.open_session(kPcid, "vno-2");
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::already_exists);
  EXPECT_EQ(icf_.open_session(kPcid, "vno-1").error().code, ErrorCode::already_exists);
  EXPECT_EQ(icf_.close_session(s->id, "vno-2").error().code, ErrorCode::access_denied);
  EXPECT_EQ(icf_.close_session("00", "vno-1").error().code, ErrorCode::not_found);
  ASSERT_TRUE(icf_.close_session(s->id, "vno-1"));
  auto third = icf_.open_session(kPcid, "vno-2");
  ASSERT_TRUE(third);
  EXPECT_NE(third->id, s->id);
  // An expired session does not hold the PCID.
  clock_.advance(hours(1) + seconds(1));
  activate();
  EXPECT_TRUE(icf_.open_session(kPcid, "vno-1"));
}

// The SHO's AuC is this logic over operational IMSIs: its sessions are not limited to the RO.
TEST_F(IcfTest, SessionsAreRestrictedAsConfigured) {
  activate();
  IcfConfig unrestricted;
  unrestricted.restricted_sessions = false;
  Icf auc(*db_, clock_, rng_, unrestricted);
  auto s = auc.open_session(kPcid, "vno-1");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_FALSE(s->restricted);
  auto stored = db_->sessions().find(s->id);
  ASSERT_TRUE(stored && *stored);
  EXPECT_FALSE((*stored)->restricted);
  ASSERT_TRUE(auc.close_session(s->id, "vno-1"));
  auto restricted = icf_.open_session(kPcid, "vno-1");
  ASSERT_TRUE(restricted) << restricted.error().message;
  EXPECT_TRUE(restricted->restricted);
}

TEST_F(IcfTest, ImportIsAllOrNothingAndValidated) {
  auto dup = icf_.import_batch("batch-2", {subscription("001019990000002"), subscription(kPcid)},
                               "supplier:m2mes");
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, ErrorCode::already_exists);
  EXPECT_EQ(*db_->pcids().count(), 1u);
  auto twice = icf_.import_batch(
      "batch-2", {subscription("001019990000002"), subscription("001019990000002")}, "s");
  EXPECT_EQ(twice.error().code, ErrorCode::already_exists);
  auto bad = [&](auto change) {
    auto s = subscription("001019990000003");
    change(s);
    auto r = icf_.import_batch("batch-3", {subscription("001019990000002"), s}, "s");
    EXPECT_FALSE(r);
    return r ? ErrorCode::internal : r.error().code;
  };
  EXPECT_EQ(bad([](auto& s) {
              s.pcid = "0010199";
              s.pcid += "x";
            }),
            ErrorCode::invalid_argument);
  EXPECT_EQ(bad([](auto& s) { s.ind_bits = 11; }), ErrorCode::invalid_argument);
  EXPECT_EQ(bad([](auto& s) { s.not_after = std::chrono::floor<seconds>(kT0); }),
            ErrorCode::invalid_argument);
  EXPECT_EQ(bad([](auto& s) { s.dormant_until = s.not_after + seconds(1); }),
            ErrorCode::invalid_argument);
  EXPECT_EQ(icf_.import_batch("batch 4", {subscription("001019990000002")}, "s").error().code,
            ErrorCode::invalid_argument);
  EXPECT_EQ(icf_.import_batch("batch-4", {}, "s").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(*db_->pcids().count(), 1u);
  // Imported dormant whatever the supplier said; a zero dormant_until gets the default.
  auto s = subscription("001019990000002");
  s.status = store::PcidStatus::active;
  s.active_until = s.not_after;
  s.dormant_until = {};
  auto n = icf_.import_batch("batch-5", {s}, "s");
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 1u);
  auto stored = *db_->pcids().find("001019990000002");
  EXPECT_EQ(stored->status, store::PcidStatus::dormant);
  EXPECT_EQ(stored->batch, "batch-5");
  EXPECT_EQ(stored->dormant_until, std::chrono::floor<seconds>(kT0) + hours(24 * 365));
}

TEST_F(IcfTest, AuditNamesCallersAndHoldsNoSecrets) {
  activate();
  const auto vs = vectors(2);
  (void)icf_.vectors(kPcid, 9, "vno-2");
  auto audit = db_->audit().recent(100);
  ASSERT_TRUE(audit);
  ASSERT_GE(audit->size(), 4u);
  EXPECT_EQ((*audit)[0].event, "vectors");
  EXPECT_EQ((*audit)[0].outcome, "invalid_argument");
  EXPECT_EQ((*audit)[0].principal, "vno-2");
  EXPECT_EQ((*audit)[1].outcome, "ok");
  EXPECT_EQ((*audit)[1].principal, "vno-1");
  EXPECT_EQ(audit->back().event, "import-batch");
  EXPECT_EQ(audit->back().principal, "supplier:m2mes");
  std::vector<std::string> secrets = {to_hex(kK), to_hex(aka::Milenage::compute_opc(kK, kOp))};
  for (const auto& v : vs) {
    secrets.push_back(to_hex(v.ck));
    secrets.push_back(to_hex(v.ik));
    secrets.push_back(to_hex(v.xres.view()));
  }
  for (const auto& r : *audit) {
    const std::string all = r.service + r.event + r.subject + r.principal + r.outcome + r.detail;
    for (const auto& s : secrets) EXPECT_EQ(all.find(s), std::string::npos) << all;
  }
}

// audited_change over SQLite: a change and its record commit together. A trigger that refuses
// some records stands in for a store that fails between the two (a full disk, say): the change
// is undone with its record, and the caller gets the store's error.
class IcfSqliteTest : public IcfTest {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            fmt::format("mcim-icf-{}-{}.db", ::getpid(),
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove(path_);
    auto db = store::open_database("sqlite:" + path_.string());
    ASSERT_TRUE(db) << db.error().message;
    sqlite_ = std::move(*db);
    icf_ = std::make_unique<Icf>(*sqlite_, clock_, rng_);
    ASSERT_TRUE(icf_->import_batch("batch-1", {subscription(kPcid)}, "supplier:m2mes"));
    ASSERT_TRUE(icf_->activate(kPcid, hours(1), "operator:sho-a"));
  }
  void TearDown() override {
    icf_.reset();
    sqlite_.reset();
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::filesystem::remove(path_.string() + suffix);
    }
  }
  // audit_refusals.h for this database and the ICF's records.
  void refuse_records(bool refuse, std::string_view event = "") {
    store::testing::refuse_audit_records(path_.string(), refuse, "icf", event);
  }
  std::size_t records_of(std::string_view event) {
    return store::testing::audit_records_of(sqlite_->audit(), "icf", event);
  }

  std::filesystem::path path_;
  std::unique_ptr<store::Database> sqlite_;
  std::unique_ptr<Icf> icf_;
};

TEST_F(IcfSqliteTest, AChangeAndItsRecordCommitTogether) {
  auto s = icf_->open_session(kPcid, "vno-1");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(records_of("open-session"), 1u);
  ASSERT_TRUE(icf_->vectors(kPcid, 2, "vno-1"));
  EXPECT_EQ(*sqlite_->sqns().current(kPcid), 2u);
  EXPECT_EQ(records_of("vectors"), 1u);
  // A refusal is recorded alone, and changes nothing.
  auto again = icf_->open_session(kPcid, "vno-2");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::already_exists);
  EXPECT_EQ(records_of("open-session"), 2u);
}

TEST_F(IcfSqliteTest, AChangeWhoseRecordCannotBeStoredIsUndone) {
  refuse_records(true, "open-session");
  auto s = icf_->open_session(kPcid, "vno-1");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::invalid_argument);  // the store's: a constraint
  EXPECT_EQ(records_of("open-session"), 0u);

  refuse_records(false);
  refuse_records(true, "vectors");
  auto v = icf_->vectors(kPcid, 3, "vno-1");
  ASSERT_FALSE(v);
  EXPECT_EQ(*sqlite_->sqns().current(kPcid), 0u);  // no SEQ spent on vectors nobody got

  // Nothing of either stayed: without the trigger the PCID has no session to refuse a new one.
  refuse_records(false);
  auto later = icf_->open_session(kPcid, "vno-1");
  ASSERT_TRUE(later) << later.error().message;
  EXPECT_EQ(records_of("open-session"), 1u);
}

}  // namespace
}  // namespace mcim::ro
