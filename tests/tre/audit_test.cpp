// The TRE's audit log: a signed hash chain that verifies end to end, every kind of tampering
// refused as store_tampered naming the first bad line, the detail kept printable and short, and
// audit.log on disk (appends, torn-tail repair, mode 0600).
#include "tre/audit.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "../pki/pki_test_util.h"
#include "pki/signed_json.h"

namespace mcim::tre {
namespace {

using namespace std::chrono_literals;
using pki::testing::TempDir;

const std::chrono::sys_seconds kStart{std::chrono::seconds(1'800'000'000)};

pki::PkeyPtr new_key() {
  auto key = pki::generate_p256_key();
  EXPECT_TRUE(key.has_value());
  return std::move(*key);
}

AuditEntry make_entry(std::uint64_t seq, const Bytes<32>& prev) {
  static const char* const kEvents[] = {"install", "activate", "select", "block", "boot-check"};
  AuditEntry e;
  e.seq = seq;
  e.time = kStart + std::chrono::seconds(seq);
  e.event = {kEvents[seq % 5], fmt::format("00101{:010}", seq),
             seq % 2 == 0 ? "device" : "operator:sho-a", seq % 3 == 0 ? "access_denied" : "ok",
             fmt::format("entry {} \"quoted\" \\ µ", seq)};
  e.prev = prev;
  return e;
}

std::string sign_line(const AuditEntry& e, EVP_PKEY* key) {
  auto line = sign_audit_entry(e, key);
  EXPECT_TRUE(line.has_value()) << line.error().message;
  return line ? *line : std::string();
}

// A valid log of `n` entries: the lines (without newlines) and what they encode.
struct Chain {
  std::vector<std::string> lines;
  std::vector<AuditEntry> entries;

  static Chain build(std::size_t n, EVP_PKEY* key) {
    Chain c;
    Bytes<32> prev{};
    for (std::uint64_t seq = 1; seq <= n; ++seq) {
      c.entries.push_back(make_entry(seq, prev));
      c.lines.push_back(sign_line(c.entries.back(), key));
      prev = audit_line_hash(c.lines.back());
    }
    return c;
  }
  std::string text() const { return join(lines); }
  static std::string join(const std::vector<std::string>& lines) {
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
  }
};

class AuditLogTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    key_ = new_key().release();
    other_key_ = new_key().release();
  }
  static void TearDownTestSuite() {
    EVP_PKEY_free(key_);
    EVP_PKEY_free(other_key_);
  }
  static EVP_PKEY* key_;
  static EVP_PKEY* other_key_;
};
EVP_PKEY* AuditLogTest::key_ = nullptr;
EVP_PKEY* AuditLogTest::other_key_ = nullptr;

TEST_F(AuditLogTest, FiftyEntryChainRoundTrips) {
  const Chain chain = Chain::build(50, key_);
  auto log = verify_audit_log(chain.text(), key_);
  ASSERT_TRUE(log.has_value()) << log.error().message;
  ASSERT_EQ(log->entries.size(), 50u);
  for (std::size_t i = 0; i < 50; ++i) {
    const AuditEntry& want = chain.entries[i];
    const AuditEntry& got = log->entries[i];
    EXPECT_EQ(got.seq, want.seq);
    EXPECT_EQ(got.time, want.time);
    EXPECT_EQ(got.event.event, want.event.event);
    EXPECT_EQ(got.event.subject, want.event.subject);
    EXPECT_EQ(got.event.principal, want.event.principal);
    EXPECT_EQ(got.event.outcome, want.event.outcome);
    EXPECT_EQ(got.event.detail, want.event.detail);
    EXPECT_EQ(got.prev, i == 0 ? Bytes<32>{} : audit_line_hash(chain.lines[i - 1]));
  }
  EXPECT_EQ(log->last_hash, audit_line_hash(chain.lines.back()));
  EXPECT_EQ(chain.lines[0].find('\n'), std::string::npos);
  EXPECT_NE(chain.lines[0].find(R"("type":"mcim-audit/1")"), std::string::npos);
}

TEST_F(AuditLogTest, EmptyTextIsAnEmptyLog) {
  auto log = verify_audit_log("", key_);
  ASSERT_TRUE(log.has_value());
  EXPECT_TRUE(log->entries.empty());
  EXPECT_EQ(log->last_hash, Bytes<32>{});
}

TEST_F(AuditLogTest, PublicHalfOfThePlatformKeyIsEnough) {
  const Chain chain = Chain::build(3, key_);
  const ByteVec spki = pki::der_of<EVP_PKEY>(key_, i2d_PUBKEY);
  const unsigned char* p = spki.data();
  pki::PkeyPtr pub(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size())));
  ASSERT_TRUE(pub);
  EXPECT_TRUE(verify_audit_log(chain.text(), pub.get()).has_value());
}

// ---- Tampering --------------------------------------------------------------------------------

// Re-serialises one line with a change and without re-signing it.
std::string edited(const std::string& line, const std::function<void(pki::Json&)>& change) {
  pki::Json j = pki::Json::parse(line);
  change(j);
  return pki::canonical(j);
}

struct TamperCase {
  const char* name;
  // Builds the tampered text from a valid 10-line chain.
  std::function<std::string(Chain, EVP_PKEY* key, EVP_PKEY* other)> tamper;
  std::string expected;  // the whole message
};

const TamperCase kTamperCases[] = {
    {"EditedOutcome",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines[3] = edited(c.lines[3], [](pki::Json& j) { j["entry"]["outcome"] = "ok2"; });
       return c.text();
     },
     "audit.log line 4: signature does not verify"},
    {"EditedDetail",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines[6] = edited(c.lines[6], [](pki::Json& j) { j["entry"]["detail"] = "nothing"; });
       return c.text();
     },
     "audit.log line 7: signature does not verify"},
    {"EditedSequence",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines[4] = edited(c.lines[4], [](pki::Json& j) { j["entry"]["seq"] = 9; });
       return c.text();
     },
     "audit.log line 5: signature does not verify"},
    {"ResignedByAnotherKey",
     [](Chain c, EVP_PKEY*, EVP_PKEY* other) {
       AuditEntry e = c.entries[5];
       e.event.outcome = "integrity_failed";
       c.lines[5] = sign_line(e, other);
       return c.text();
     },
     "audit.log line 6: signature does not verify"},
    {"DeletedMiddleLine",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines.erase(c.lines.begin() + 4);
       return c.text();
     },
     "audit.log line 5: sequence 5 expected, got 6"},
    {"SwappedLines",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       std::swap(c.lines[2], c.lines[3]);
       return c.text();
     },
     "audit.log line 3: sequence 3 expected, got 4"},
    {"DuplicatedLine",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines.insert(c.lines.begin() + 4, c.lines[3]);
       return c.text();
     },
     "audit.log line 5: sequence 5 expected, got 4"},
    {"InsertedForeignLine",
     [](Chain c, EVP_PKEY*, EVP_PKEY* other) {
       // Fits the chain perfectly, but is signed by someone else.
       c.lines.insert(c.lines.begin() + 5,
                      sign_line(make_entry(6, audit_line_hash(c.lines[4])), other));
       return c.text();
     },
     "audit.log line 6: signature does not verify"},
    {"ValidlySignedWithWrongPrev",
     [](Chain c, EVP_PKEY* key, EVP_PKEY*) {
       c.lines[7] = sign_line(make_entry(8, audit_line_hash(c.lines[5])), key);
       return c.text();
     },
     "audit.log line 8: prev does not name line 7"},
    {"FirstEntryWithNonZeroPrev",
     [](Chain c, EVP_PKEY* key, EVP_PKEY*) {
       c.lines[0] = sign_line(make_entry(1, audit_line_hash("x")), key);
       return c.text();
     },
     "audit.log line 1: prev of the first entry is not zeros"},
    {"TruncatedFinalLine",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       const std::string t = c.text();
       return t.substr(0, t.size() - 40);
     },
     "audit.log line 10: torn last line (no newline)"},
    {"FinalNewlineMissing",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       const std::string t = c.text();
       return t.substr(0, t.size() - 1);
     },
     "audit.log line 10: torn last line (no newline)"},
    {"SpaceAfterColon",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines[5].insert(c.lines[5].find(':') + 1, " ");
       return c.text();
     },
     "audit.log line 6: not a valid entry: audit entry: not in canonical form (sorted keys, no "
     "whitespace, no escapes, no repeated keys)"},
    {"TrailingSpace",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines[1] += " ";
       return c.text();
     },
     "audit.log line 2: not a valid entry: audit entry: not in canonical form (sorted keys, no "
     "whitespace, no escapes, no repeated keys)"},
    {"CrLfLineEnd",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines[0] += "\r";
       return c.text();
     },
     "audit.log line 1: not a valid entry: audit entry: not in canonical form (sorted keys, no "
     "whitespace, no escapes, no repeated keys)"},
    {"EmptyLine",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines.insert(c.lines.begin() + 2, "");
       return c.text();
     },
     "audit.log line 3: not a valid entry: audit entry: empty"},
    {"NotJson",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines[8] = c.lines[8].substr(0, 30);
       return c.text();
     },
     "audit.log line 9: not a valid entry: audit entry: not JSON (truncated or corrupted)"},
    {"UppercasePrev",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines[2] = edited(c.lines[2], [](pki::Json& j) {
         std::string prev = j["entry"]["prev"];
         for (char& ch : prev) ch = static_cast<char>(std::toupper(ch));
         j["entry"]["prev"] = prev;
       });
       return c.text();
     },
     "audit.log line 3: not a valid entry: entry.prev: expected 64 lowercase hex digits, got 64 "
     "characters"},
    {"UnknownMember",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines[1] = edited(c.lines[1], [](pki::Json& j) { j["entry"]["note"] = "x"; });
       return c.text();
     },
     "audit.log line 2: not a valid entry: entry: unknown field \"note\""},
    {"MissingMember",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines[1] = edited(c.lines[1], [](pki::Json& j) { j["entry"].erase("principal"); });
       return c.text();
     },
     "audit.log line 2: not a valid entry: entry.principal: missing"},
    {"WrongType",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines[9] = edited(c.lines[9], [](pki::Json& j) { j["entry"]["type"] = "mcim-status/1"; });
       return c.text();
     },
     "audit.log line 10: not a valid entry: entry.type: expected \"mcim-audit/1\""},
    {"SequenceAsString",
     [](Chain c, EVP_PKEY*, EVP_PKEY*) {
       c.lines[0] = edited(c.lines[0], [](pki::Json& j) { j["entry"]["seq"] = "1"; });
       return c.text();
     },
     "audit.log line 1: not a valid entry: entry.seq: expected an integer in 1..9007199254740991"},
};

class AuditTamperTest : public AuditLogTest, public ::testing::WithParamInterface<TamperCase> {};

TEST_P(AuditTamperTest, RefusedNamingTheFirstBadLine) {
  const Chain chain = Chain::build(10, key_);
  ASSERT_TRUE(verify_audit_log(chain.text(), key_).has_value());
  auto log = verify_audit_log(GetParam().tamper(chain, key_, other_key_), key_);
  ASSERT_FALSE(log.has_value());
  EXPECT_EQ(log.error().code, ErrorCode::store_tampered);
  EXPECT_EQ(log.error().message, GetParam().expected);
}

INSTANTIATE_TEST_SUITE_P(Cases, AuditTamperTest, ::testing::ValuesIn(kTamperCases),
                         [](const auto& p) { return std::string(p.param.name); });

TEST_F(AuditLogTest, WrongKeyRefusesTheFirstLine) {
  auto log = verify_audit_log(Chain::build(3, key_).text(), other_key_);
  ASSERT_FALSE(log.has_value());
  EXPECT_EQ(log.error().message, "audit.log line 1: signature does not verify");
}

// ---- The detail -------------------------------------------------------------------------------

struct DetailCase {
  const char* name;
  std::string in, out;
};

const DetailCase kDetailCases[] = {
    {"Plain", "install refused: rule owner-only", "install refused: rule owner-only"},
    {"Empty", "", ""},
    {"QuoteAndBackslashArePrintable", R"(a "b" \c)", R"(a "b" \c)"},
    // Octal escapes: a hex escape would swallow the letters after it.
    {"ControlCharacters", "a\nb\tc\001d\177e\r", "a?b?c?d?e?"},
    {"InvalidUtf8", "x\377y\303", "x?y?"},
    {"OverlongAndSurrogateBytewise", "\300\257|\355\240\200", "??|???"},
    {"C1Control", "a\302\205b", "a?b"},
    {"BidiOverrideAndLineSeparator", "ab\342\200\256cd\342\200\250", "ab?cd?"},
    {"PrintableNonAscii", "µ € \xf0\x9f\x98\x80", "µ € \xf0\x9f\x98\x80"},
    {"TruncatedTo256Bytes", std::string(300, 'a'), std::string(256, 'a')},
    {"TruncatedAtACharacterBoundary", std::string(255, 'a') + "é", std::string(255, 'a')},
    {"ExactlyFull", std::string(254, 'a') + "é", std::string(254, 'a') + "é"},
    {"ReplacementsCountTowardsTheLimit", std::string(300, '\n'), std::string(256, '?')},
};

class AuditDetailTest : public AuditLogTest, public ::testing::WithParamInterface<DetailCase> {};

TEST_P(AuditDetailTest, SignedDetailIsPrintableAndAtMost256Bytes) {
  AuditEntry e = make_entry(1, {});
  e.event.detail = GetParam().in;
  const std::string line = sign_line(e, key_);
  auto log = verify_audit_log(line + "\n", key_);
  ASSERT_TRUE(log.has_value()) << log.error().message;
  EXPECT_EQ(log->entries[0].event.detail, GetParam().out);
  EXPECT_LE(log->entries[0].event.detail.size(), 256u);
}

INSTANTIATE_TEST_SUITE_P(Cases, AuditDetailTest, ::testing::ValuesIn(kDetailCases),
                         [](const auto& p) { return std::string(p.param.name); });

// The decoder holds a detail to the encoder's rule even under a good signature.
TEST_F(AuditLogTest, SignedUncleanDetailIsRefused) {
  for (const std::string& detail : {std::string("a\tb"), std::string(257, 'a')}) {
    pki::Json j = pki::Json::parse(sign_line(make_entry(1, {}), key_))["entry"];
    j["detail"] = detail;
    auto line = pki::sign_envelope("entry", j, key_);
    ASSERT_TRUE(line.has_value());
    auto log = verify_audit_log(*line + "\n", key_);
    ASSERT_FALSE(log.has_value());
    EXPECT_EQ(log.error().message,
              "audit.log line 1: not a valid entry: entry.detail: must be at most 256 bytes of "
              "printable characters");
  }
}

TEST_F(AuditLogTest, SignRefusesFieldsOutsideTheirLimits) {
  struct Case {
    const char* name;
    std::function<void(AuditEntry&)> change;
    std::string field;
  };
  const Case cases[] = {
      {"empty event", [](AuditEntry& e) { e.event.event = ""; }, "entry.event"},
      {"space in subject", [](AuditEntry& e) { e.event.subject = "a b"; }, "entry.subject"},
      {"long principal", [](AuditEntry& e) { e.event.principal = std::string(129, 'p'); },
       "entry.principal"},
      {"newline in outcome", [](AuditEntry& e) { e.event.outcome = "ok\n"; }, "entry.outcome"},
      {"sequence 0", [](AuditEntry& e) { e.seq = 0; }, "entry.seq"},
      {"sequence 2^53", [](AuditEntry& e) { e.seq = std::uint64_t{1} << 53; }, "entry.seq"},
      {"negative time", [](AuditEntry& e) { e.time = std::chrono::sys_seconds(-1s); },
       "entry.time"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    AuditEntry e = make_entry(1, {});
    c.change(e);
    auto line = sign_audit_entry(e, key_);
    ASSERT_FALSE(line.has_value());
    EXPECT_EQ(line.error().code, ErrorCode::invalid_argument);
    EXPECT_EQ(line.error().message.rfind("audit " + c.field + ":", 0), 0u) << line.error().message;
  }
}

// ---- audit.log on disk ------------------------------------------------------------------------

class AuditFileTest : public AuditLogTest {
 protected:
  TempDir dir_;
  AuditFile file_{dir_ / "audit.log"};

  void write_raw(const std::string& bytes) {
    std::ofstream out(file_.path(), std::ios::binary | std::ios::app);
    out << bytes;
  }
};

TEST_F(AuditFileTest, AbsentFileReadsAsEmpty) {
  auto text = file_.read();
  ASSERT_TRUE(text.has_value());
  EXPECT_EQ(*text, "");
}

TEST_F(AuditFileTest, AppendsLinesAndReadsThemBack) {
  const Chain chain = Chain::build(5, key_);
  for (const auto& line : chain.lines) ASSERT_TRUE(file_.append(line).has_value());
  auto text = file_.read();
  ASSERT_TRUE(text.has_value());
  EXPECT_EQ(*text, chain.text());
  auto log = verify_audit_log(*text, key_);
  ASSERT_TRUE(log.has_value()) << log.error().message;
  EXPECT_EQ(log->entries.size(), 5u);
}

TEST_F(AuditFileTest, CreatedWithMode0600) {
  const mode_t old = ::umask(0);  // the mode must not depend on the caller's umask
  auto r = file_.append("line");
  ::umask(old);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  struct stat st {};
  ASSERT_EQ(::stat(file_.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(AuditFileTest, AppendRefusesAnEmbeddedNewline) {
  auto r = file_.append("one\ntwo");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  struct stat st {};
  EXPECT_NE(::stat(file_.path().c_str(), &st), 0);  // nothing written, not even created
}

TEST_F(AuditFileTest, AppendToAMissingDirectoryIsAnIoErrorNamingThePath) {
  AuditFile file(dir_ / "missing/audit.log");
  auto r = file.append("secret-free line");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::io_error);
  EXPECT_NE(r.error().message.find(file.path()), std::string::npos);
  EXPECT_EQ(r.error().message.find("secret-free line"), std::string::npos);
}

TEST_F(AuditFileTest, RepairRemovesATornTail) {
  const Chain chain = Chain::build(3, key_);
  for (const auto& line : chain.lines) ASSERT_TRUE(file_.append(line).has_value());
  write_raw(chain.lines[0].substr(0, 57));  // a crash in the middle of the fourth append
  auto torn = file_.read();
  ASSERT_TRUE(torn.has_value());
  EXPECT_FALSE(verify_audit_log(*torn, key_).has_value());

  auto repaired = file_.repair_torn_tail();
  ASSERT_TRUE(repaired.has_value()) << repaired.error().message;
  EXPECT_TRUE(*repaired);
  auto text = file_.read();
  ASSERT_TRUE(text.has_value());
  EXPECT_EQ(*text, chain.text());
  EXPECT_TRUE(verify_audit_log(*text, key_).has_value());
  // Appending continues the chain after the repair.
  ASSERT_TRUE(
      file_.append(sign_line(make_entry(4, audit_line_hash(chain.lines[2])), key_)).has_value());
  auto log = verify_audit_log(*file_.read(), key_);
  ASSERT_TRUE(log.has_value()) << log.error().message;
  EXPECT_EQ(log->entries.size(), 4u);
}

TEST_F(AuditFileTest, RepairOfAFileWithOnlyATornLineEmptiesIt) {
  write_raw("{\"entry\":{\"deta");
  auto repaired = file_.repair_torn_tail();
  ASSERT_TRUE(repaired.has_value());
  EXPECT_TRUE(*repaired);
  EXPECT_EQ(*file_.read(), "");
}

TEST_F(AuditFileTest, RepairIsANoOpOnACleanFile) {
  auto absent = file_.repair_torn_tail();
  ASSERT_TRUE(absent.has_value());
  EXPECT_FALSE(*absent);

  write_raw("");
  auto empty = file_.repair_torn_tail();
  ASSERT_TRUE(empty.has_value());
  EXPECT_FALSE(*empty);

  const Chain chain = Chain::build(2, key_);
  for (const auto& line : chain.lines) ASSERT_TRUE(file_.append(line).has_value());
  auto clean = file_.repair_torn_tail();
  ASSERT_TRUE(clean.has_value());
  EXPECT_FALSE(*clean);
  EXPECT_EQ(*file_.read(), chain.text());
}

}  // namespace
}  // namespace mcim::tre
