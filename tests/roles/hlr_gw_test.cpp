// The hlr_auc_gw protocol of the RO's EAP gateway (roles/ro/hlr_gw.h): request lines parsed as
// hostapd's eap_sim_db sends them, malformed ones refused without an answer, the answers
// formatted as hostapd parses them (checked by a USIM), FAILURE for PCIDs the ICF refuses, AUTS
// resynchronisation, and the socket adapter answering each datagram to its sender. Over the
// in-memory store; every refusal leaves SEQ_HE as it was.
#include "roles/ro/hlr_gw.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <thread>
#include <variant>

#include "../pki/pki_test_util.h"
#include "aka/milenage.h"
#include "aka/sqn.h"
#include "common/hex.h"
#include "hlr_gw_test_util.h"
#include "store/memory.h"

namespace mcim::ro {
namespace {

using std::chrono::hours;
using std::chrono::seconds;
using testing::HlrClient;
using testing::parse_aka_answer;

const std::string kPcid = "001019990000001";
const std::string kDormant = "001019990000002";
const TimePoint kT0 = std::chrono::sys_seconds(seconds(1'800'000'000));
const Bytes<16> kK = {0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f,
                      0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc};
const Bytes<16> kOp = {0xcd, 0xc2, 0x02, 0xd5, 0x12, 0x3e, 0x20, 0xf6,
                       0x2b, 0x6d, 0x67, 0x6a, 0xc7, 0x2c, 0xb3, 0x18};
const std::string kAuts(28, 'a');
const std::string kRand(32, 'b');

// ---- Parsing, table-driven ---------------------------------------------------------------------

struct ParseCase {
  const char* name;
  std::string line;
  bool ok;
  HlrCommand command = HlrCommand::aka_req_auth;
  std::string imsi = "";
};

std::vector<ParseCase> parse_cases() {
  return {
      {"aka_req", "AKA-REQ-AUTH 001019990000001", true, HlrCommand::aka_req_auth, kPcid},
      {"aka_req_newline", "AKA-REQ-AUTH 001019990000001\n", true, HlrCommand::aka_req_auth, kPcid},
      {"aka_req_crlf", "AKA-REQ-AUTH 001019990000001\r\n", true, HlrCommand::aka_req_auth, kPcid},
      {"aka_req_short_imsi", "AKA-REQ-AUTH 1", true, HlrCommand::aka_req_auth, "1"},
      {"aka_auts", "AKA-AUTS 001019990000001 " + kAuts + " " + kRand, true, HlrCommand::aka_auts,
       kPcid},
      {"aka_auts_upper_hex", "AKA-AUTS 001019990000001 " + std::string(28, 'A') + " " + kRand, true,
       HlrCommand::aka_auts, kPcid},
      {"sim_req", "SIM-REQ-AUTH 001019990000001", true, HlrCommand::sim_req_auth, kPcid},
      {"sim_req_max_chal", "SIM-REQ-AUTH 001019990000001 3", true, HlrCommand::sim_req_auth, kPcid},
      {"gsm_req", "GSM-AUTH-REQ 001019990000001 " + kRand + ":" + kRand, true,
       HlrCommand::gsm_auth_req, kPcid},
      // Malformed: no answer.
      {"empty", "", false},
      {"only_newline", "\n", false},
      {"command_only", "AKA-REQ-AUTH", false},
      {"empty_imsi", "AKA-REQ-AUTH ", false},
      {"double_space", "AKA-REQ-AUTH  001019990000001", false},
      {"trailing_space", "AKA-REQ-AUTH 001019990000001 ", false},
      {"extra_field", "AKA-REQ-AUTH 001019990000001 x", false},
      {"imsi_letters", "AKA-REQ-AUTH 00101999000000a", false},
      {"imsi_with_prefix", "AKA-REQ-AUTH 0001019990000001@realm", false},
      {"imsi_16_digits", "AKA-REQ-AUTH 0010199900000011", false},
      {"lowercase_command", "aka-req-auth 001019990000001", false},
      {"unknown_command", "AKA-RESP-AUTH 001019990000001 FAILURE", false},
      {"auts_missing_rand", "AKA-AUTS 001019990000001 " + kAuts, false},
      {"auts_short", "AKA-AUTS 001019990000001 " + std::string(26, 'a') + " " + kRand, false},
      {"auts_not_hex", "AKA-AUTS 001019990000001 " + std::string(28, 'g') + " " + kRand, false},
      {"rand_long", "AKA-AUTS 001019990000001 " + kAuts + " " + kRand + "00", false},
      {"auts_extra", "AKA-AUTS 001019990000001 " + kAuts + " " + kRand + " x", false},
      {"embedded_nul",
       std::string("AKA-REQ-AUTH 0010199\0"
                   "90000001",
                   28),
       false},
      {"embedded_newline", "AKA-REQ-AUTH 0010\n19990000001", false},
      {"two_lines", "AKA-REQ-AUTH 001019990000001\nAKA-REQ-AUTH 001019990000001", false},
      {"oversized", "AKA-REQ-AUTH 001019990000001" + std::string(1000, ' '), false},
      {"binary", std::string("\xff\xfe\x00\x01\x80", 5), false},
  };
}

class ParseTest : public ::testing::TestWithParam<ParseCase> {};

TEST_P(ParseTest, Line) {
  const ParseCase& c = GetParam();
  auto r = parse_hlr_request(c.line);
  ASSERT_EQ(r.has_value(), c.ok) << (r ? "accepted" : r.error().message);
  if (!c.ok) {
    EXPECT_EQ(r.error().code, ErrorCode::bad_format);
    EXPECT_EQ(r.error().message.find("001019990000001"), std::string::npos)
        << "the refusal quotes the input: " << r.error().message;
    return;
  }
  EXPECT_EQ(r->command, c.command);
  EXPECT_EQ(r->imsi, c.imsi);
}

INSTANTIATE_TEST_SUITE_P(HlrGw, ParseTest, ::testing::ValuesIn(parse_cases()),
                         [](const auto& tp) { return std::string(tp.param.name); });

TEST(HlrGwFormat, AutsFieldsAreDecoded) {
  auto r = parse_hlr_request("AKA-AUTS 001019990000001 " + kAuts + " " + kRand);
  ASSERT_TRUE(r);
  EXPECT_EQ(to_hex(r->auts), kAuts);
  EXPECT_EQ(to_hex(r->rand), kRand);
}

TEST(HlrGwFormat, AkaResponseAsHlrAucGwWritesIt) {
  aka::AuthVector av;
  for (std::size_t i = 0; i < 16; ++i) {
    av.rand[i] = static_cast<std::uint8_t>(i);
    av.autn[i] = static_cast<std::uint8_t>(0x10 + i);
    av.ik[i] = static_cast<std::uint8_t>(0x20 + i);
    av.ck[i] = static_cast<std::uint8_t>(0x30 + i);
  }
  const Bytes<8> res = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7};
  av.xres = aka::Res::of(res);
  const SecretBytes line = format_aka_response(kPcid, av);
  EXPECT_EQ(line.text(),
            "AKA-RESP-AUTH 001019990000001 000102030405060708090a0b0c0d0e0f "
            "101112131415161718191a1b1c1d1e1f 202122232425262728292a2b2c2d2e2f "
            "303132333435363738393a3b3c3d3e3f a0a1a2a3a4a5a6a7");
}

TEST(HlrGwFormat, FailureLines) {
  HlrRequest r;
  r.imsi = kPcid;
  r.command = HlrCommand::aka_req_auth;
  EXPECT_EQ(format_failure(r), "AKA-RESP-AUTH 001019990000001 FAILURE");
  r.command = HlrCommand::sim_req_auth;
  EXPECT_EQ(format_failure(r), "SIM-RESP-AUTH 001019990000001 FAILURE");
  r.command = HlrCommand::gsm_auth_req;
  EXPECT_EQ(format_failure(r), "GSM-AUTH-RESP 001019990000001 FAILURE");
  r.command = HlrCommand::aka_auts;
  EXPECT_FALSE(format_failure(r));
}

// ---- Over an ICF
// ---------------------------------------------------------------------------------

store::PcidSubscription subscription(const std::string& pcid) {
  store::PcidSubscription s;
  s.pcid = pcid;
  s.k = Secret<16>(kK);
  s.opc = Secret<16>(aka::Milenage::compute_opc(kK, kOp));
  s.ind_bits = 5;
  s.not_after = std::chrono::floor<seconds>(kT0) + hours(24 * 365);
  return s;
}

class HlrGwIcfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(icf_.import_batch("batch-1", {subscription(kPcid), subscription(kDormant)},
                                  "supplier:m2mes"));
    ASSERT_TRUE(icf_.activate(kPcid, hours(1), "operator:sho-a"));
  }
  std::optional<std::string> answer(std::string_view line) {
    auto a = answer_hlr_request(icf_, line, "eap:test");
    return a ? std::optional<std::string>(std::string(a->text())) : std::nullopt;
  }
  std::uint64_t seq_he(const std::string& pcid) { return *db_->sqns().current(pcid); }
  std::size_t audit_size() { return db_->audit().recent(1000)->size(); }
  aka::UsimAnswer usim_run(aka::UsimSqn& sqn, const testing::AkaAnswer& p) {
    const aka::Milenage algo(kK, aka::Milenage::compute_opc(kK, kOp));
    auto a = aka::usim_authenticate(algo, sqn, p.rand, p.autn);
    EXPECT_TRUE(a) << a.error().message;
    return a ? *a : aka::UsimAnswer{};
  }
  static aka::SqnPolicy policy() {
    aka::SqnPolicy p;
    p.ind_bits = 5;
    return p;
  }

  FakeClock clock_{kT0};
  OsRandom rng_;
  std::unique_ptr<store::Database> db_ = store::make_memory_database();
  Icf icf_{*db_, clock_, rng_};
};

TEST_F(HlrGwIcfTest, VectorForAnActivePcidVerifiesWithTheUsim) {
  auto line = answer("AKA-REQ-AUTH " + kPcid);
  ASSERT_TRUE(line);
  auto p = parse_aka_answer(*line);
  ASSERT_TRUE(p) << "unparseable answer";
  EXPECT_EQ(p->imsi, kPcid);
  EXPECT_EQ(p->autn[6] & 0x80, 0x80) << "AMF separation bit (EAP-AKA' needs it)";
  aka::UsimSqn sqn(policy());
  const aka::UsimAnswer a = usim_run(sqn, *p);
  const auto* ok = std::get_if<aka::UsimSuccess>(&a);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ByteVec(ok->res.view().begin(), ok->res.view().end()), p->res);
  EXPECT_EQ(ok->ck, p->ck);
  EXPECT_EQ(ok->ik, p->ik);
  EXPECT_EQ(seq_he(kPcid), 1u);
  // The ICF recorded who asked.
  auto audit = db_->audit().recent(1);
  ASSERT_TRUE(audit && !audit->empty());
  EXPECT_EQ(audit->front().event, "vectors");
  EXPECT_EQ(audit->front().principal, "eap:test");
}

TEST_F(HlrGwIcfTest, RefusedPcidsGetFailureAndChangeNothing) {
  for (const std::string& imsi : {kDormant, std::string("001019990000099"), std::string("1")}) {
    EXPECT_EQ(answer("AKA-REQ-AUTH " + imsi), "AKA-RESP-AUTH " + imsi + " FAILURE");
    EXPECT_EQ(seq_he(imsi), 0u);
  }
  EXPECT_EQ(seq_he(kPcid), 0u);
}

TEST_F(HlrGwIcfTest, EapSimIsRefusedWithFailure) {
  EXPECT_EQ(answer("SIM-REQ-AUTH " + kPcid + " 3"), "SIM-RESP-AUTH " + kPcid + " FAILURE");
  EXPECT_EQ(answer("GSM-AUTH-REQ " + kPcid + " " + kRand), "GSM-AUTH-RESP " + kPcid + " FAILURE");
  EXPECT_EQ(seq_he(kPcid), 0u);
}

TEST_F(HlrGwIcfTest, MalformedLinesGetNoAnswerAndChangeNothing) {
  const std::size_t before = audit_size();
  for (const ParseCase& c : parse_cases()) {
    if (!c.ok) {
      EXPECT_FALSE(answer(c.line)) << c.name;
    }
  }
  EXPECT_EQ(seq_he(kPcid), 0u);
  EXPECT_EQ(audit_size(), before) << "a malformed line reached the ICF";
}

TEST_F(HlrGwIcfTest, AutsResynchronisesWithoutAnAnswer) {
  // A USIM far ahead of SEQ_HE in every IND slot.
  aka::UsimSqn sqn(policy());
  for (unsigned ind = 0; ind < 32; ++ind) sqn.record(aka::sqn_bytes(policy().join(5000, ind)));
  auto p = parse_aka_answer(*answer("AKA-REQ-AUTH " + kPcid));
  ASSERT_TRUE(p);
  const aka::UsimAnswer stale = usim_run(sqn, *p);
  const auto* sync = std::get_if<aka::UsimSyncFailure>(&stale);
  ASSERT_TRUE(sync);
  EXPECT_FALSE(answer("AKA-AUTS " + kPcid + " " + to_hex(sync->auts) + " " + to_hex(p->rand)));
  EXPECT_GE(seq_he(kPcid), 5000u);
  // hostapd asks again: the new vector is fresh.
  auto again = parse_aka_answer(*answer("AKA-REQ-AUTH " + kPcid));
  ASSERT_TRUE(again);
  EXPECT_TRUE(std::holds_alternative<aka::UsimSuccess>(usim_run(sqn, *again)));
}

TEST_F(HlrGwIcfTest, AutsWithABadMacChangesNothing) {
  auto p = parse_aka_answer(*answer("AKA-REQ-AUTH " + kPcid));
  ASSERT_TRUE(p);
  EXPECT_FALSE(answer("AKA-AUTS " + kPcid + " " + kAuts + " " + to_hex(p->rand)));
  EXPECT_EQ(seq_he(kPcid), 1u);
  auto audit = db_->audit().recent(1);
  ASSERT_TRUE(audit && !audit->empty());
  EXPECT_EQ(audit->front().event, "resynchronise");
  EXPECT_EQ(audit->front().outcome, "mac_mismatch");
}

// ---- The socket adapter ------------------------------------------------------------------------

class HlrGwSocketTest : public HlrGwIcfTest {
 protected:
  pki::testing::TempDir dir_;
};

TEST_F(HlrGwSocketTest, AnswersEachDatagramToItsSender) {
  HlrGatewayOptions o;
  o.socket_path = dir_ / "hlr.sock";
  auto gw = HlrGateway::start(*db_, clock_, o);
  ASSERT_TRUE(gw) << gw.error().message;
  struct stat st {};
  ASSERT_EQ(::stat(o.socket_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  HlrClient c(dir_ / "client");
  c.send(o.socket_path, "AKA-REQ-AUTH " + kPcid);
  auto a = c.receive();
  ASSERT_TRUE(a);
  EXPECT_TRUE(parse_aka_answer(*a)) << "unparseable answer";
  // A malformed one gets nothing, and the gateway goes on.
  c.send(o.socket_path, "AKA-REQ-AUTH");
  c.send(o.socket_path, std::string(3000, 'x'));
  c.send(o.socket_path, "AKA-REQ-AUTH " + kDormant);
  EXPECT_EQ(c.receive(), "AKA-RESP-AUTH " + kDormant + " FAILURE");
  // The counters move just after the answer leaves: give the gateway's thread a moment.
  for (int i = 0; i < 100 && (*gw)->answers() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ((*gw)->datagrams(), 4u);
  EXPECT_EQ((*gw)->answers(), 2u);
  EXPECT_EQ(seq_he(kPcid), 1u);
  EXPECT_EQ(seq_he(kDormant), 0u);
  // The default caller names the socket.
  auto audit = db_->audit().recent(1);
  ASSERT_TRUE(audit && !audit->empty());
  EXPECT_EQ(audit->front().principal, "eap:hlr.sock");

  gw->reset();
  EXPECT_NE(::stat(o.socket_path.c_str(), &st), 0) << "socket left behind";
}

TEST_F(HlrGwSocketTest, StaleSocketIsReplacedALiveOneAndOtherFilesAreNot) {
  HlrGatewayOptions o;
  o.socket_path = dir_ / "hlr.sock";
  { HlrClient stale(o.socket_path); }  // unlinked by its destructor: recreate one that stays
  {
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, o.socket_path.c_str(), sizeof a.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ::close(fd);
  }
  auto gw = HlrGateway::start(*db_, clock_, o);
  ASSERT_TRUE(gw) << gw.error().message;
  // A second gateway on a socket that one serves does not take it over.
  auto second = HlrGateway::start(*db_, clock_, o);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::already_exists);
  HlrClient c(dir_ / "client");
  c.send(o.socket_path, "AKA-REQ-AUTH " + kDormant);
  EXPECT_EQ(c.receive(), "AKA-RESP-AUTH " + kDormant + " FAILURE");
  gw->reset();

  o.socket_path = dir_ / "plain-file";
  std::ofstream(o.socket_path) << "keep me";
  auto refused = HlrGateway::start(*db_, clock_, o);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::already_exists);
  std::ifstream in(o.socket_path);
  std::string kept;
  std::getline(in, kept);
  EXPECT_EQ(kept, "keep me");

  o.socket_path = dir_.path() + "/" + std::string(120, 'p');
  auto too_long = HlrGateway::start(*db_, clock_, o);
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error().code, ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace mcim::ro
