// The in-memory Database against the contract of store.h, port by port.
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "store/memory.h"

namespace mcim::store {
namespace {

using std::chrono::seconds;

const Time kT0{seconds(1'800'000'000)};

PcidSubscription pcid(const std::string& id, Time dormant_until = kT0 + seconds(100)) {
  PcidSubscription p;
  p.pcid = id;
  p.batch = "b1";
  p.k.mut().fill(0x11);
  p.opc.mut().fill(0x22);
  p.dormant_until = dormant_until;
  p.not_after = kT0 + seconds(1'000'000);
  return p;
}

class MemoryStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<Database> db_ = make_memory_database();
};

TEST_F(MemoryStoreTest, AddBatchIsAllOrNothing) {
  ASSERT_TRUE(db_->pcids().add_batch({pcid("001019990000001"), pcid("001019990000002")}));
  auto dup = db_->pcids().add_batch({pcid("001019990000003"), pcid("001019990000002")});
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, ErrorCode::already_exists);
  EXPECT_NE(dup.error().message.find("001019990000002"), std::string::npos);
  EXPECT_EQ(*db_->pcids().count(), 2u);
  EXPECT_FALSE(db_->pcids().find("001019990000003")->has_value());
  auto twice = db_->pcids().add_batch({pcid("001019990000004"), pcid("001019990000004")});
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, ErrorCode::already_exists);
  EXPECT_EQ(*db_->pcids().count(), 2u);
}

TEST_F(MemoryStoreTest, FindReturnsWhatWasStored) {
  ASSERT_TRUE(db_->pcids().add_batch({pcid("001019990000001")}));
  auto found = db_->pcids().find("001019990000001");
  ASSERT_TRUE(found && found->has_value());
  EXPECT_EQ((*found)->k.get()[0], 0x11);
  EXPECT_EQ((*found)->opc.get()[15], 0x22);
  EXPECT_EQ((*found)->status, PcidStatus::dormant);
  EXPECT_FALSE(db_->pcids().find("001019990000009")->has_value());
}

TEST_F(MemoryStoreTest, ActivateAndExpireDormant) {
  ASSERT_TRUE(db_->pcids().add_batch({pcid("001019990000001"), pcid("001019990000002"),
                                      pcid("001019990000003", kT0 + seconds(500))}));
  ASSERT_TRUE(db_->pcids().activate("001019990000001", kT0 + seconds(50)));
  EXPECT_EQ(db_->pcids().activate("001019990000009", kT0).error().code, ErrorCode::not_found);
  // dormant_until < now expires; equal does not.
  EXPECT_EQ(*db_->pcids().expire_dormant(kT0 + seconds(100)), 0u);
  EXPECT_EQ(*db_->pcids().expire_dormant(kT0 + seconds(101)), 1u);
  EXPECT_EQ((*db_->pcids().find("001019990000001"))->status, PcidStatus::active);
  EXPECT_EQ((*db_->pcids().find("001019990000001"))->active_until, kT0 + seconds(50));
  EXPECT_EQ((*db_->pcids().find("001019990000002"))->status, PcidStatus::expired);
  EXPECT_EQ((*db_->pcids().find("001019990000003"))->status, PcidStatus::dormant);
  EXPECT_EQ(db_->pcids().activate("001019990000002", kT0).error().code,
            ErrorCode::transition_refused);
  EXPECT_EQ(*db_->pcids().expire_dormant(kT0 + seconds(101)), 0u);
}

TEST_F(MemoryStoreTest, SqnReserveAdvancesAndStopsAtSeqMax) {
  EXPECT_EQ(*db_->sqns().current("001019990000001"), 0u);
  EXPECT_EQ(*db_->sqns().reserve("001019990000001", 3, 100), 0u);
  EXPECT_EQ(*db_->sqns().reserve("001019990000001", 2, 100), 3u);
  EXPECT_EQ(*db_->sqns().current("001019990000001"), 5u);
  auto over = db_->sqns().reserve("001019990000001", 96, 100);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, ErrorCode::sqn_exhausted);
  EXPECT_EQ(*db_->sqns().current("001019990000001"), 5u);
  EXPECT_EQ(*db_->sqns().reserve("001019990000001", 95, 100), 5u);
  EXPECT_EQ(*db_->sqns().current("001019990000001"), 100u);
  EXPECT_EQ(*db_->sqns().current("001019990000002"), 0u);  // per IMSI
}

TEST_F(MemoryStoreTest, SqnReserveNeverOverlapsAcrossThreads) {
  std::vector<std::uint64_t> firsts[4];
  std::vector<std::thread> threads;
  for (auto& out : firsts) {
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i)
        out.push_back(*db_->sqns().reserve("001019990000001", 2, 1u << 20));
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::uint64_t> all;
  for (const auto& v : firsts) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), 2000u);
  EXPECT_EQ(*db_->sqns().current("001019990000001"), 4000u);
}

TEST_F(MemoryStoreTest, SqnResynchroniseOnlyRaises) {
  ASSERT_TRUE(db_->sqns().reserve("001019990000001", 10, 100));
  EXPECT_EQ(*db_->sqns().resynchronise("001019990000001", 4), 10u);
  EXPECT_EQ(*db_->sqns().resynchronise("001019990000001", 40), 40u);
  EXPECT_EQ(*db_->sqns().current("001019990000001"), 40u);
  EXPECT_EQ(*db_->sqns().resynchronise("001019990000002", 7), 7u);
}

Registration registration(const std::string& sho, const std::string& device = "dev-1") {
  Registration r;
  r.pcid = "001019990000001";
  r.device_id = device;
  r.sho = sho;
  r.dpf_url = "https://dpf.example";
  r.apn = "m2m.ro";
  r.bootstrap_key.mut().fill(0x5a);
  r.created = kT0;
  return r;
}

TEST_F(MemoryStoreTest, RegistrationsBelongToTheirSho) {
  auto& regs = db_->registrations();
  ASSERT_TRUE(regs.put(registration("sho-a")));
  ASSERT_TRUE(regs.put(registration("sho-a", "dev-2")));  // the holder replaces
  EXPECT_EQ((*regs.find("001019990000001"))->device_id, "dev-2");
  EXPECT_EQ((*regs.find("001019990000001"))->bootstrap_key.get()[0], 0x5a);
  EXPECT_EQ(regs.put(registration("sho-b")).error().code, ErrorCode::access_denied);
  EXPECT_EQ(regs.remove("001019990000001", "sho-b").error().code, ErrorCode::access_denied);
  EXPECT_EQ((*regs.find("001019990000001"))->sho, "sho-a");
  ASSERT_TRUE(regs.remove("001019990000001", "sho-a"));
  EXPECT_FALSE(regs.find("001019990000001")->has_value());
  EXPECT_EQ(regs.remove("001019990000001", "sho-a").error().code, ErrorCode::not_found);
  ASSERT_TRUE(regs.put(registration("sho-b")));  // free again after removal
}

StoredPackage package(const std::string& id, const std::string& device, Time created) {
  StoredPackage p;
  p.package_id = id;
  p.device_id = device;
  p.sho = "sho-a";
  p.package = {1, 2, 3};
  p.created = p.updated = created;
  return p;
}

TEST_F(MemoryStoreTest, PackagesInOrderUntilReported) {
  auto& pkgs = db_->packages();
  ASSERT_TRUE(pkgs.put(package("p2", "dev-1", kT0 + seconds(5))));
  ASSERT_TRUE(pkgs.put(package("p1", "dev-1", kT0)));
  ASSERT_TRUE(pkgs.put(package("p3", "dev-2", kT0)));
  EXPECT_EQ(pkgs.put(package("p1", "dev-9", kT0)).error().code, ErrorCode::already_exists);
  EXPECT_EQ((*pkgs.next_for_device("dev-1"))->package_id, "p1");
  ASSERT_TRUE(pkgs.mark_delivered("p1", kT0 + seconds(1)));
  EXPECT_EQ((*pkgs.find("p1"))->status, PackageStatus::delivered);
  EXPECT_EQ((*pkgs.find("p1"))->updated, kT0 + seconds(1));
  EXPECT_EQ((*pkgs.next_for_device("dev-1"))->package_id, "p1");  // delivered: still served
  ASSERT_TRUE(pkgs.store_report("p1", "report-1", kT0 + seconds(2)));
  EXPECT_EQ(pkgs.store_report("p1", "report-2", kT0 + seconds(3)).error().code,
            ErrorCode::transition_refused);
  EXPECT_EQ((*pkgs.find("p1"))->report, "report-1");
  EXPECT_EQ((*pkgs.find("p1"))->status, PackageStatus::reported);
  EXPECT_EQ((*pkgs.next_for_device("dev-1"))->package_id, "p2");
  EXPECT_EQ(pkgs.mark_delivered("p9", kT0).error().code, ErrorCode::not_found);
  EXPECT_EQ(pkgs.store_report("p9", "r", kT0).error().code, ErrorCode::not_found);
  EXPECT_FALSE(pkgs.next_for_device("dev-9")->has_value());
  EXPECT_FALSE(pkgs.find("p9")->has_value());
}

TEST_F(MemoryStoreTest, PackagesWithEqualTimesComeInInsertionOrder) {
  auto& pkgs = db_->packages();
  ASSERT_TRUE(pkgs.put(package("b", "dev-1", kT0)));
  ASSERT_TRUE(pkgs.put(package("a", "dev-1", kT0)));
  EXPECT_EQ((*pkgs.next_for_device("dev-1"))->package_id, "b");
}

Session session(const std::string& id, const std::string& imsi, const std::string& vno,
                Time expires) {
  return Session{id, imsi, vno, true, kT0, expires};
}

TEST_F(MemoryStoreTest, OneUnexpiredSessionPerImsi) {
  auto& s = db_->sessions();
  ASSERT_TRUE(s.open(session("s1", "001019990000001", "vno-1", kT0 + seconds(60)), kT0));
  auto second = s.open(session("s2", "001019990000001", "vno-2", kT0 + seconds(60)), kT0);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::already_exists);
  EXPECT_NE(second.error().message.find("vno-1"), std::string::npos);
  ASSERT_TRUE(s.open(session("s3", "001019990000002", "vno-2", kT0 + seconds(60)), kT0));
  EXPECT_EQ(s.open(session("s3", "001019990000003", "vno-2", kT0 + seconds(60)), kT0).error().code,
            ErrorCode::already_exists);  // the id is taken
  // Once s1 expired, a new session replaces it.
  ASSERT_TRUE(
      s.open(session("s4", "001019990000001", "vno-2", kT0 + seconds(200)), kT0 + seconds(60)));
  EXPECT_FALSE(s.find("s1")->has_value());
  EXPECT_EQ((*s.find("s4"))->vno, "vno-2");
  ASSERT_TRUE(s.close("s4"));
  EXPECT_FALSE(s.find("s4")->has_value());
  EXPECT_EQ(s.close("s4").error().code, ErrorCode::not_found);
  ASSERT_TRUE(s.open(session("s5", "001019990000001", "vno-1", kT0 + seconds(300)), kT0));
}

TEST_F(MemoryStoreTest, AuditNewestFirstWithIncreasingSeq) {
  for (int i = 0; i < 5; ++i) {
    AuditRecord r;
    r.seq = 99;  // ignored: the store assigns it
    r.event = "e" + std::to_string(i);
    EXPECT_EQ(*db_->audit().append(r), static_cast<std::uint64_t>(i + 1));
  }
  auto recent = db_->audit().recent(3);
  ASSERT_TRUE(recent);
  ASSERT_EQ(recent->size(), 3u);
  EXPECT_EQ((*recent)[0].event, "e4");
  EXPECT_EQ((*recent)[0].seq, 5u);
  EXPECT_EQ((*recent)[2].event, "e2");
  EXPECT_EQ(db_->audit().recent(100)->size(), 5u);
  EXPECT_EQ(db_->backend(), "memory");
}

}  // namespace
}  // namespace mcim::store
