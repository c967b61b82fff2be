// Management instructions and status reports: round trips over a real PKI built with Authority,
// strict decoding naming the field, every signer check with its code (chain, expiry, profile,
// operator URN, signature), type confusion between the two documents, and freshness.
#include "tre/instruction.h"

#include <gtest/gtest.h>

#include <cctype>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "../pki/pki_test_util.h"
#include "common/hex.h"
#include "pki/authority.h"
#include "pki/certificate.h"
#include "pki/signed_json.h"

namespace mcim::tre {
namespace {

using namespace std::chrono_literals;
using pki::Json;
using pki::testing::TempDir;

constexpr Action kAllActions[] = {Action::activate, Action::select, Action::deselect, Action::block,
                                  Action::unblock,  Action::retire, Action::delete_};

// Operator root -> SHO CA -> signers of several profiles; another operator's root and CA;
// supplier root -> two platform certificates. Built once for the suite.
class Pki {
 public:
  Pki() {
    SystemClock clock;
    OsRandom rng;
    op_root = make_ca("op-root", "Operator Root", nullptr, clock, rng);
    sho_ca = make_ca("sho-ca", "SHO A CA", &*op_root, clock, rng);
    other_root = make_ca("other-root", "Other Root", nullptr, clock, rng);
    other_ca = make_ca("other-ca", "Other CA", &*other_root, clock, rng);
    supplier = make_ca("sup-root", "Supplier Root", nullptr, clock, rng);

    signer = issue(*sho_ca, signing_spec("sho-a"), clock, rng);
    foreign_signer = issue(*other_ca, signing_spec("sho-a"), clock, rng);
    CertSpec no_urn = signing_spec("sho-a");
    no_urn.sans.clear();
    unnamed_signer = issue(*sho_ca, no_urn, clock, rng);
    CertSpec result = signing_spec("sho-a");
    result.profile = pki::Profile::result_signing;
    result_signer = issue(*sho_ca, result, clock, rng);
    CertSpec tls = signing_spec("sho-a");
    tls.profile = pki::Profile::tls_client;
    tls_signer = issue(*sho_ca, tls, clock, rng);
    platform = issue(*supplier, platform_spec("dev-a"), clock, rng);
    other_platform = issue(*supplier, platform_spec("dev-b"), clock, rng);

    X509* root = op_root->cert();
    auto a = pki::TrustAnchors::from_certs({root});
    EXPECT_TRUE(a.has_value());
    anchors.emplace(std::move(*a));
  }

  using CertSpec = pki::CertSpec;
  TempDir dir;
  std::optional<pki::Authority> op_root, sho_ca, other_root, other_ca, supplier;
  pki::Issued signer, foreign_signer, unnamed_signer, result_signer, tls_signer;
  pki::Issued platform, other_platform;
  std::optional<pki::TrustAnchors> anchors;

 private:
  std::optional<pki::Authority> make_ca(const std::string& d, const std::string& name,
                                        const pki::Authority* parent, const Clock& clock,
                                        RandomSource& rng) {
    auto ca = pki::Authority::create(dir / d, name, parent, 3650, "", clock, rng);
    EXPECT_TRUE(ca.has_value()) << ca.error().message;
    return std::move(*ca);
  }
  static CertSpec signing_spec(const std::string& op) {
    CertSpec s;
    s.profile = pki::Profile::package_signing;
    s.subject = "CN=instruction signer " + op + ",O=" + op;
    s.sans = {"URI:urn:mcim:operator:" + op};
    return s;
  }
  static CertSpec platform_spec(const std::string& device) {
    CertSpec s;
    s.profile = pki::Profile::platform;
    s.subject = "CN=" + device + ",O=supplier";
    s.device_id = device;
    s.model = "meter-v1";
    return s;
  }
  static pki::Issued issue(const pki::Authority& ca, const CertSpec& spec, const Clock& clock,
                           RandomSource& rng) {
    auto issued = ca.issue(spec, clock, rng);
    EXPECT_TRUE(issued.has_value()) << issued.error().message;
    return std::move(*issued);
  }
};

// Re-serialises a document with a change, keeping its signature.
std::string edited(const std::string& text, const std::function<void(Json&)>& change) {
  Json j = Json::parse(text);
  change(j);
  return pki::canonical(j);
}

class InstructionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new Pki(); }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }
  static Pki& pki() { return *pki_; }

  std::chrono::sys_seconds now() const { return pki::floor_seconds(clock_.now()); }

  Instruction instruction(Action action = Action::block) const {
    return Instruction{"dev-a", "001010123456789", action, 42, now()};
  }
  // The signer's certificate followed by its CA's.
  std::vector<X509*> chain_of(const pki::Issued& who, const pki::Authority& ca) const {
    return {who.cert.get(), ca.cert()};
  }
  std::string sign(const Instruction& in) {
    auto text = sign_instruction(in, pki().signer.key.get(), chain_of(pki().signer, *pki().sho_ca));
    EXPECT_TRUE(text.has_value()) << text.error().message;
    return text ? *text : std::string();
  }
  // Signs whatever inner object it is given, bypassing sign_instruction's checks.
  std::string sign_raw(const Json& inner, const pki::Issued& who, const pki::Authority& ca) {
    auto text = pki::sign_envelope("instruction", inner, who.key.get(), chain_of(who, ca));
    EXPECT_TRUE(text.has_value());
    return text ? *text : std::string();
  }
  Result<VerifiedInstruction> verify(std::string_view text) {
    return verify_instruction(text, *pki().anchors, clock_);
  }

  FakeClock clock_{SystemClock().now()};

 private:
  static Pki* pki_;
};
Pki* InstructionTest::pki_ = nullptr;

TEST_F(InstructionTest, EveryActionRoundTrips) {
  for (Action action : kAllActions) {
    SCOPED_TRACE(std::string(to_string(action)));
    const Instruction in = instruction(action);
    const std::string text = sign(in);
    EXPECT_NE(text.find(R"("type":"mcim-instruction/1")"), std::string::npos);
    auto v = verify(text);
    ASSERT_TRUE(v.has_value()) << v.error().message;
    EXPECT_EQ(v->operator_id, "sho-a");
    EXPECT_EQ(v->instruction.device_id, in.device_id);
    EXPECT_EQ(v->instruction.credential, in.credential);
    EXPECT_EQ(v->instruction.action, action);
    EXPECT_EQ(v->instruction.sequence, in.sequence);
    EXPECT_EQ(v->instruction.time, in.time);
  }
}

TEST_F(InstructionTest, DeleteIsSpelledDeleteAndATrailingNewlineIsAccepted) {
  const std::string text = sign(instruction(Action::delete_));
  EXPECT_NE(text.find(R"("action":"delete")"), std::string::npos);
  EXPECT_TRUE(verify(text + "\n").has_value());
  EXPECT_FALSE(verify(text + "\n\n").has_value());
}

TEST_F(InstructionTest, SequenceLimitsAreInclusive) {
  for (std::uint64_t seq : {std::uint64_t{1}, kMaxSequence}) {
    Instruction in = instruction();
    in.sequence = seq;
    auto v = verify(sign(in));
    ASSERT_TRUE(v.has_value()) << v.error().message;
    EXPECT_EQ(v->instruction.sequence, seq);
  }
}

TEST_F(InstructionTest, ListRoundTripsAndNamesNoCredential) {
  Instruction in = instruction();
  in.list = true;
  in.credential = "-";
  const std::string text = sign(in);
  EXPECT_NE(text.find(R"("action":"list")"), std::string::npos);
  auto v = verify(text);
  ASSERT_TRUE(v.has_value()) << v.error().message;
  EXPECT_TRUE(v->instruction.list);
  EXPECT_EQ(v->instruction.credential, "-");
  // A list names no credential, and only a list names none.
  in.credential = "001010123456789";
  EXPECT_EQ(sign_instruction(in, pki().signer.key.get(), chain_of(pki().signer, *pki().sho_ca))
                .error()
                .code,
            ErrorCode::invalid_argument);
  Instruction block = instruction();
  block.credential = "-";
  EXPECT_EQ(sign_instruction(block, pki().signer.key.get(), chain_of(pki().signer, *pki().sho_ca))
                .error()
                .code,
            ErrorCode::invalid_argument);
}

// ---- Strict decoding --------------------------------------------------------------------------

struct FormatCase {
  const char* name;
  std::function<std::string(const std::string& valid)> mutate;
  std::string message;  // the bad_format message (its start, when a length varies)
};

std::function<std::string(const std::string&)> change(std::function<void(Json&)> f) {
  return [f](const std::string& text) { return edited(text, f); };
}
std::function<std::string(const std::string&)> set_field(const char* key, Json value) {
  return change([key, value](Json& j) { j["instruction"][key] = value; });
}
std::function<std::string(const std::string&)> drop(const char* key) {
  return change([key](Json& j) { j["instruction"].erase(key); });
}

const std::string kNotCanonical =
    "instruction document: not in canonical form (sorted keys, no whitespace, no escapes, no "
    "repeated keys)";
const std::string kTokenRule =
    ": must be 1-128 printable ASCII characters without space, '\"' or '\\'";

const FormatCase kFormatCases[] = {
    {"Empty", [](const std::string&) { return std::string(); }, "instruction document: empty"},
    {"NotJson", [](const std::string& t) { return t.substr(0, t.size() / 2); },
     "instruction document: not JSON (truncated or corrupted)"},
    {"NotAnObject", [](const std::string&) { return std::string("[1]"); },
     "instruction document: not a JSON object"},
    {"UnknownTopLevelMember", change([](Json& j) { j["extra"] = 1; }),
     "instruction document: unknown field \"extra\""},
    {"UnknownMember", set_field("priority", "high"), "instruction: unknown field \"priority\""},
    {"MissingCertificates", change([](Json& j) { j.erase("certificates"); }),
     "instruction document.certificates: missing"},
    {"MissingAction", drop("action"), "instruction.action: missing"},
    {"MissingCredential", drop("credential"), "instruction.credential: missing"},
    {"MissingDevice", drop("device"), "instruction.device: missing"},
    {"MissingSequence", drop("sequence"), "instruction.sequence: missing"},
    {"MissingTime", drop("time"), "instruction.time: missing"},
    {"MissingType", drop("type"), "instruction.type: missing"},
    {"InstructionNotAnObject", change([](Json& j) { j["instruction"] = "block"; }),
     "instruction: not an object"},
    {"ActionNotAString", set_field("action", 3), "instruction.action: not a string"},
    {"DeviceNotAString", set_field("device", 7), "instruction.device: not a string"},
    {"SequenceAsString", set_field("sequence", "42"),
     "instruction.sequence: expected an integer in 1..9007199254740991"},
    {"SequenceAsFloat", set_field("sequence", 42.0),
     "instruction.sequence: expected an integer in 1..9007199254740991"},
    {"SequenceZero", set_field("sequence", 0),
     "instruction.sequence: expected an integer in 1..9007199254740991"},
    {"SequenceTooBig", set_field("sequence", kMaxSequence + 1),
     "instruction.sequence: expected an integer in 1..9007199254740991"},
    {"SequenceNegative", set_field("sequence", -1),
     "instruction.sequence: expected an integer in 1..9007199254740991"},
    {"TimeNegative", set_field("time", -5),
     "instruction.time: expected UTC seconds as a non-negative integer"},
    {"TimeAfter9999", set_field("time", std::uint64_t{253402300800}),
     "instruction.time: expected UTC seconds as a non-negative integer"},
    {"BadActionName", set_field("action", "Block"), "instruction.action: not an action name"},
    {"ActionEnumSpelling", set_field("action", "delete_"),
     "instruction.action: not an action name"},
    {"DeviceWithSpace", set_field("device", "dev a"), "instruction.device" + kTokenRule},
    {"EmptyCredential", set_field("credential", ""), "instruction.credential" + kTokenRule},
    {"OtherType", set_field("type", "mcim-status/1"),
     "instruction.type: expected \"mcim-instruction/1\""},
    {"UppercaseSignatureHex", change([](Json& j) {
       std::string s = j["signature"];
       for (char& c : s) c = static_cast<char>(std::toupper(c));
       j["signature"] = s;
     }),
     "instruction document.signature: expected 16-144 lowercase hex digits, got 14"},
    {"NoCertificates", change([](Json& j) { j["certificates"] = Json::array(); }),
     "instruction document.certificates: expected 1-4 entries, got 0"},
    {"CertificateNotHex", change([](Json& j) { j["certificates"][1] = "zz"; }),
     "instruction document.certificates[1]: not lowercase hex"},
    {"CertificateUppercaseHex", change([](Json& j) {
       std::string t = j["certificates"][0].get<std::string>();
       for (char& ch : t) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
       j["certificates"][0] = t;
     }),
     "instruction document.certificates[0]: not lowercase hex"},
    {"SpaceAfterColon",
     [](const std::string& t) {
       std::string s = t;
       s.insert(s.find("\"instruction\":") + 14, " ");
       return s;
     },
     kNotCanonical},
    {"EscapedCharacter",
     [](const std::string& t) {
       std::string s = t;
       s.replace(s.find("dev-a"), 5, "dev\\u002da");
       return s;
     },
     kNotCanonical},
    {"RepeatedKey",
     [](const std::string& t) {
       std::string s = t;
       s.insert(s.find("\"action\":"), R"("action":"retire",)");
       return s;
     },
     kNotCanonical},
};

class InstructionFormatTest : public InstructionTest,
                              public ::testing::WithParamInterface<FormatCase> {};

TEST_P(InstructionFormatTest, RefusedAsBadFormatNamingTheField) {
  const std::string valid = sign(instruction());
  ASSERT_TRUE(verify(valid).has_value());
  auto v = verify(GetParam().mutate(valid));
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::bad_format);
  EXPECT_TRUE(v.error().message.starts_with(GetParam().message)) << v.error().message;
}

INSTANTIATE_TEST_SUITE_P(Cases, InstructionFormatTest, ::testing::ValuesIn(kFormatCases),
                         [](const auto& p) { return std::string(p.param.name); });

// ---- The signer -------------------------------------------------------------------------------

TEST_F(InstructionTest, SignerFromAnotherOperatorRootIsChainInvalid) {
  const Pki& k = pki();
  auto text = sign_instruction(instruction(), k.foreign_signer.key.get(),
                               chain_of(k.foreign_signer, *k.other_ca));
  ASSERT_TRUE(text.has_value()) << text.error().message;
  auto v = verify(*text);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::chain_invalid);
}

TEST_F(InstructionTest, SignerWithoutItsIntermediateIsChainInvalid) {
  auto text = sign_instruction(instruction(), pki().signer.key.get(), {pki().signer.cert.get()});
  ASSERT_TRUE(text.has_value());
  auto v = verify(*text);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::chain_invalid);
}

TEST_F(InstructionTest, ExpiredSignerIsCertExpired) {
  clock_.advance(std::chrono::days(400));  // the signer's 365 days are over, the CAs' are not
  auto v = verify(sign(instruction()));
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::cert_expired) << v.error().message;
}

TEST_F(InstructionTest, SignerMustBeAPackageSignerNamingAnOperator) {
  struct Case {
    const char* name;
    const pki::Issued& who;
    std::string message_part;
  };
  const Pki& k = pki();
  const Case cases[] = {
      {"no operator URN", k.unnamed_signer, "names no operator"},
      {"result-signing profile, no EKU", k.result_signer, "no emailProtection EKU"},
      {"tls-client profile", k.tls_signer, "unsuitable certificate purpose"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto v = verify(sign_raw(Json::parse(sign(instruction()))["instruction"], c.who, *k.sho_ca));
    ASSERT_FALSE(v.has_value());
    EXPECT_EQ(v.error().code, ErrorCode::chain_invalid);
    EXPECT_NE(v.error().message.find(c.message_part), std::string::npos) << v.error().message;
  }
}

TEST_F(InstructionTest, CertificateOutsideTheSignersChainIsRefused) {
  auto text =
      sign_instruction(instruction(), pki().signer.key.get(),
                       {pki().signer.cert.get(), pki().sho_ca->cert(), pki().other_ca->cert()});
  ASSERT_TRUE(text.has_value());
  auto v = verify(*text);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::bad_format);
  EXPECT_EQ(v.error().message, "instruction: a certificate outside the signer's chain");
}

TEST_F(InstructionTest, AnyChangeBreaksTheSignature) {
  const std::string valid = sign(instruction());
  const std::vector<std::function<std::string(const std::string&)>> tampering = {
      set_field("sequence", 43),
      set_field("action", "delete"),
      set_field("device", "dev-b"),
      set_field("time", pki::utc_seconds(now()) + 1),
      [](const std::string& t) {  // one byte of the signature's r
        std::string s = t;
        char& c = s[s.find("\"signature\":\"") + 22];
        c = c == '0' ? '1' : '0';
        return s;
      },
  };
  for (std::size_t i = 0; i < tampering.size(); ++i) {
    SCOPED_TRACE(i);
    auto v = verify(tampering[i](valid));
    ASSERT_FALSE(v.has_value());
    EXPECT_EQ(v.error().code, ErrorCode::signature_invalid) << v.error().message;
  }
}

// An operator's signature over an object of another type, and the platform key's status report
// dressed as an instruction: the type tag and the strict members refuse both before any trust.
TEST_F(InstructionTest, TypeConfusionIsRefused) {
  Json inner = Json::parse(sign(instruction()))["instruction"];
  inner["type"] = "mcim-status/1";
  auto v = verify(sign_raw(inner, pki().signer, *pki().sho_ca));
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::bad_format);
  EXPECT_EQ(v.error().message, "instruction.type: expected \"mcim-instruction/1\"");

  const StatusReport report{"dev-a", "block", "001010123456789", "-", "ok", "blocked", 42, now()};
  auto signed_report = sign_status_report(report, pki().platform.key.get());
  ASSERT_TRUE(signed_report.has_value());
  v = verify(*signed_report);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::bad_format);

  // The report's exact signed bytes and signature inside an instruction envelope.
  const Json r = Json::parse(*signed_report);
  const std::string disguised = pki::envelope(
      pki::canonical(pki::certificates_json({pki().platform.cert.get()})), "instruction",
      pki::canonical(r["report"]), *parse_hex(r["signature"].get<std::string>(), "signature"));
  v = verify(disguised);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::bad_format);
  EXPECT_EQ(v.error().message, "instruction: unknown field \"event\"");
}

// ---- Freshness --------------------------------------------------------------------------------

TEST_F(InstructionTest, TimeMustBeWithinMaxAgeEitherWay) {
  struct Case {
    std::chrono::seconds offset;
    bool accepted;
  };
  for (const Case c : {Case{0s, true}, Case{-600s, true}, Case{600s, true}, Case{-601s, false},
                       Case{601s, false}, Case{-24h, false}, Case{24h, false}}) {
    SCOPED_TRACE(c.offset.count());
    Instruction in = instruction();
    in.time = now() + c.offset;
    auto v = verify(sign(in));
    EXPECT_EQ(v.has_value(), c.accepted);
    if (!v) {
      EXPECT_EQ(v.error().code, ErrorCode::stale_report) << v.error().message;
    }
  }
  Instruction in = instruction();
  in.time = now() - 90s;
  EXPECT_FALSE(verify_instruction(sign(in), *pki().anchors, clock_, 60s).has_value());
  EXPECT_TRUE(verify_instruction(sign(in), *pki().anchors, clock_, 120s).has_value());
}

// ---- Signing refuses what verification would --------------------------------------------------

TEST_F(InstructionTest, SignRefusesFieldsOutsideTheirLimits) {
  struct Case {
    const char* name;
    std::function<void(Instruction&)> change;
    std::string field;
  };
  const Case cases[] = {
      {"empty device", [](Instruction& i) { i.device_id = ""; }, "instruction.device"},
      {"device with quote", [](Instruction& i) { i.device_id = "a\"b"; }, "instruction.device"},
      {"long credential", [](Instruction& i) { i.credential = std::string(129, '1'); },
       "instruction.credential"},
      {"sequence 0", [](Instruction& i) { i.sequence = 0; }, "instruction.sequence"},
      {"sequence too big", [](Instruction& i) { i.sequence = kMaxSequence + 1; },
       "instruction.sequence"},
      {"negative time", [](Instruction& i) { i.time = std::chrono::sys_seconds(-1s); },
       "instruction.time"},
      {"time after 9999", [](Instruction& i) { i.time = std::chrono::sys_seconds(253402300800s); },
       "instruction.time"},
      {"unknown action", [](Instruction& i) { i.action = static_cast<Action>(99); },
       "instruction.action"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    Instruction in = instruction();
    c.change(in);
    auto text = sign_instruction(in, pki().signer.key.get(), chain_of(pki().signer, *pki().sho_ca));
    ASSERT_FALSE(text.has_value());
    EXPECT_EQ(text.error().code, ErrorCode::invalid_argument);
    EXPECT_EQ(text.error().message.rfind(c.field + ":", 0), 0u) << text.error().message;
  }
}

TEST_F(InstructionTest, SignRefusesAnUnfitSignerOrKey) {
  const Pki& k = pki();
  auto p384 = pki::PkeyPtr(EVP_EC_gen("P-384"));
  ASSERT_TRUE(p384);
  struct Case {
    const char* name;
    EVP_PKEY* key;
    std::vector<X509*> certs;
    ErrorCode code;
  };
  const Case cases[] = {
      {"no key", nullptr, {k.signer.cert.get()}, ErrorCode::missing_argument},
      {"no certificate", k.signer.key.get(), {}, ErrorCode::missing_argument},
      {"another signer's key",
       k.foreign_signer.key.get(),
       {k.signer.cert.get()},
       ErrorCode::invalid_argument},
      {"not P-256", p384.get(), {k.signer.cert.get()}, ErrorCode::invalid_argument},
      {"no operator URN",
       k.unnamed_signer.key.get(),
       {k.unnamed_signer.cert.get()},
       ErrorCode::invalid_argument},
      {"result-signing certificate",
       k.result_signer.key.get(),
       {k.result_signer.cert.get()},
       ErrorCode::invalid_argument},
      {"platform certificate",
       k.platform.key.get(),
       {k.platform.cert.get()},
       ErrorCode::invalid_argument},
      {"CA certificate", k.sho_ca->key(), {k.sho_ca->cert()}, ErrorCode::invalid_argument},
      {"five certificates",
       k.signer.key.get(),
       {k.signer.cert.get(), k.sho_ca->cert(), k.sho_ca->cert(), k.sho_ca->cert(),
        k.sho_ca->cert()},
       ErrorCode::invalid_argument},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto text = sign_instruction(instruction(), c.key, c.certs);
    ASSERT_FALSE(text.has_value());
    EXPECT_EQ(text.error().code, c.code) << text.error().message;
  }
}

// ---- Status reports ---------------------------------------------------------------------------

class StatusReportTest : public InstructionTest {
 protected:
  StatusReport report() const {
    return {"dev-a", "install", "001010123456789", "pkg-7", "ok", "installed", 7, now()};
  }
  std::string sign_report(const StatusReport& r) {
    auto text = sign_status_report(r, pki().platform.key.get());
    EXPECT_TRUE(text.has_value()) << text.error().message;
    return text ? *text : std::string();
  }
  Result<StatusReport> verify_report(std::string_view text, X509* cert = nullptr) {
    return verify_status_report(text, cert != nullptr ? cert : pki().platform.cert.get());
  }
};

TEST_F(StatusReportTest, RoundTrips) {
  const StatusReport unreadable{"dev-a", "install", "-", "-", "bad_format", "-", 0, now()};
  const StatusReport refused{
      "dev-a", "delete", "001010123456789", "-", "access_denied", "activated", 12, now()};
  // What the TRE answers to an instruction it could not verify: the action is not known.
  const StatusReport unverified{"dev-a", "instruction", "-", "-", "stale_report", "-", 0, now()};
  for (const StatusReport& want : {report(), unreadable, refused, unverified}) {
    SCOPED_TRACE(want.outcome);
    const std::string text = sign_report(want);
    EXPECT_NE(text.find(R"("type":"mcim-status/1")"), std::string::npos);
    EXPECT_EQ(text.find("certificates"), std::string::npos);
    auto got = verify_report(text + "\n");
    ASSERT_TRUE(got.has_value()) << got.error().message;
    EXPECT_EQ(got->device_id, want.device_id);
    EXPECT_EQ(got->event, want.event);
    EXPECT_EQ(got->credential, want.credential);
    EXPECT_EQ(got->package_id, want.package_id);
    EXPECT_EQ(got->outcome, want.outcome);
    EXPECT_EQ(got->state, want.state);
    EXPECT_EQ(got->sequence, want.sequence);
    EXPECT_EQ(got->time, want.time);
  }
}

TEST_F(StatusReportTest, AListRoundTripsWithItsCredentialsAndOnlyAListCarriesThem) {
  StatusReport list{"dev-a", "list", "-", "-", "ok", "-", 9, now()};
  list.credentials = {{"001010000000001", "activated", "pkg-1"},
                      {"001010000000002", "deleted", "pkg-2"}};
  const std::string text = sign_report(list);
  auto got = verify_report(text);
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got->credentials, list.credentials);
  StatusReport empty = list;
  empty.credentials.clear();
  auto none = verify_report(sign_report(empty));
  ASSERT_TRUE(none.has_value()) << none.error().message;
  EXPECT_TRUE(none->credentials.empty());
  EXPECT_EQ(sign_report(report()).find("credentials"), std::string::npos);
  struct Case {
    const char* name;
    std::function<void(Json&)> change;
    std::string message;
  };
  const Case cases[] = {
      {"list without credentials", [](Json& j) { j["report"].erase("credentials"); },
       "report.credentials: missing"},
      {"install with credentials", [](Json& j) { j["report"]["event"] = "install"; },
       "report: unknown field \"credentials\""},
      {"unsorted",
       [](Json& j) { std::swap(j["report"]["credentials"][0], j["report"]["credentials"][1]); },
       "report.credentials: not sorted by id"},
      {"not a state", [](Json& j) { j["report"]["credentials"][0]["state"] = "gone"; },
       "report.credentials[].state: not a state"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto bad = verify_report(edited(text, c.change));
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().code, ErrorCode::bad_format);
    EXPECT_EQ(bad.error().message, c.message);
  }
}

TEST_F(StatusReportTest, AnInstructionReportAnswersItsSequenceOnDevice) {
  const StatusReport ok{"dev-a", "block", "001010123456789", "-", "ok", "blocked", 12, now()};
  const StatusReport unverified{"dev-a", "instruction", "-", "-", "stale_report", "-", 0, now()};
  X509* cert = pki().platform.cert.get();
  EXPECT_TRUE(verify_instruction_report(sign_report(ok), cert, "dev-a", 12).has_value());
  EXPECT_TRUE(verify_instruction_report(sign_report(unverified), cert, "dev-a", 12).has_value());
  EXPECT_EQ(verify_instruction_report(sign_report(ok), cert, "dev-a", 13).error().code,
            ErrorCode::invalid_argument);
  EXPECT_EQ(verify_instruction_report(sign_report(ok), cert, "dev-b", 12).error().code,
            ErrorCode::wrong_recipient);
  EXPECT_EQ(verify_instruction_report(sign_report(report()), cert, "dev-a", 7).error().code,
            ErrorCode::invalid_argument);
}

TEST_F(StatusReportTest, TamperingBreaksTheSignature) {
  const std::string valid = sign_report(report());
  for (const auto& [key, value] : {std::pair<const char*, Json>{"outcome", "access_denied"},
                                   {"state", "deleted"},
                                   {"sequence", 8},
                                   {"device", "dev-b"}}) {
    SCOPED_TRACE(key);
    auto got = verify_report(edited(valid, [&](Json& j) { j["report"][key] = value; }));
    ASSERT_FALSE(got.has_value());
    EXPECT_EQ(got.error().code, ErrorCode::signature_invalid);
  }
}

TEST_F(StatusReportTest, AnotherPlatformCertificateDoesNotVerify) {
  auto got = verify_report(sign_report(report()), pki().other_platform.cert.get());
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code, ErrorCode::signature_invalid);
  EXPECT_EQ(got.error().message,
            "status report: the signature does not verify with the platform key");
}

TEST_F(StatusReportTest, StrictDecoding) {
  const std::string valid = sign_report(report());
  struct Case {
    const char* name;
    std::function<void(Json&)> change;
    std::string message;
  };
  const Case cases[] = {
      {"unknown member", [](Json& j) { j["report"]["note"] = "x"; },
       "report: unknown field \"note\""},
      {"missing state", [](Json& j) { j["report"].erase("state"); }, "report.state: missing"},
      {"certificates", [](Json& j) { j["certificates"] = Json::array(); },
       "status report: unknown field \"certificates\""},
      {"event with space", [](Json& j) { j["report"]["event"] = "re boot"; },
       "report.event" + kTokenRule},
      {"outcome with space", [](Json& j) { j["report"]["outcome"] = "not ok"; },
       "report.outcome" + kTokenRule},
      {"empty state", [](Json& j) { j["report"]["state"] = ""; }, "report.state" + kTokenRule},
      {"sequence too big", [](Json& j) { j["report"]["sequence"] = kMaxSequence + 1; },
       "report.sequence: expected an integer in 0..9007199254740991"},
      {"instruction type", [](Json& j) { j["report"]["type"] = "mcim-instruction/1"; },
       "report.type: expected \"mcim-status/1\""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto got = verify_report(edited(valid, c.change));
    ASSERT_FALSE(got.has_value());
    EXPECT_EQ(got.error().code, ErrorCode::bad_format);
    EXPECT_EQ(got.error().message, c.message);
  }
  auto instruction_text = verify_report(sign(instruction()));
  ASSERT_FALSE(instruction_text.has_value());
  EXPECT_EQ(instruction_text.error().code, ErrorCode::bad_format);
}

// For a report verified when it arrived: the same fields and the same strict decoding, without
// a key (and so without a signature check).
TEST_F(StatusReportTest, DecodingAloneReadsAStoredReportStrictly) {
  StatusReport list{"dev-a", "list", "-", "-", "ok", "-", 9, now()};
  list.credentials = {{"001010000000001", "activated", "pkg-1"}};
  const std::string text = sign_report(list);
  auto got = decode_status_report(text);
  ASSERT_TRUE(got.has_value()) << got.error().message;
  auto verified = verify_report(text);
  ASSERT_TRUE(verified.has_value()) << verified.error().message;
  EXPECT_EQ(got->device_id, verified->device_id);
  EXPECT_EQ(got->event, verified->event);
  EXPECT_EQ(got->outcome, verified->outcome);
  EXPECT_EQ(got->state, verified->state);
  EXPECT_EQ(got->sequence, verified->sequence);
  EXPECT_EQ(got->time, verified->time);
  EXPECT_EQ(got->credentials, list.credentials);
  auto unknown = decode_status_report(edited(text, [](Json& j) { j["report"]["note"] = "x"; }));
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code, ErrorCode::bad_format);
  auto instruction_text = decode_status_report(sign(instruction()));
  ASSERT_FALSE(instruction_text.has_value());
  EXPECT_EQ(instruction_text.error().code, ErrorCode::bad_format);
}

TEST_F(StatusReportTest, SignRefusesFieldsOutsideTheirLimits) {
  struct Case {
    const char* name;
    std::function<void(StatusReport&)> change;
    std::string field;
  };
  const Case cases[] = {
      {"empty event", [](StatusReport& r) { r.event = ""; }, "report.event"},
      {"empty device", [](StatusReport& r) { r.device_id = ""; }, "report.device"},
      {"outcome with newline", [](StatusReport& r) { r.outcome = "ok\n"; }, "report.outcome"},
      {"empty package", [](StatusReport& r) { r.package_id = ""; }, "report.package"},
      {"sequence too big", [](StatusReport& r) { r.sequence = kMaxSequence + 1; },
       "report.sequence"},
      {"negative time", [](StatusReport& r) { r.time = std::chrono::sys_seconds(-1s); },
       "report.time"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    StatusReport r = report();
    c.change(r);
    auto text = sign_status_report(r, pki().platform.key.get());
    ASSERT_FALSE(text.has_value());
    EXPECT_EQ(text.error().code, ErrorCode::invalid_argument);
    EXPECT_EQ(text.error().message.rfind(c.field + ":", 0), 0u) << text.error().message;
  }
  EXPECT_EQ(sign_status_report(report(), nullptr).error().code, ErrorCode::missing_argument);
}

}  // namespace
}  // namespace mcim::tre
