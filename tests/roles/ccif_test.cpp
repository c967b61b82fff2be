// The supplier's CCIF (F0): the canonical "mcim-pcid-batch/1" codec (golden encoding, every
// refusal bad_format naming the field and no secret), sealing to the ICF and opening there (round
// trip of 1000 records, wrong ICF key, tampering, signer policy, supplier id binding),
// interoperability with `openssl cms`, and manufacture_batch over tre::manufacture.
#include "roles/supplier/ccif.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "../pki/pki_test_util.h"
#include "common/file.h"
#include "common/hex.h"
#include "pki/authority.h"
#include "pki/certificate.h"

namespace mcim::supplier {
namespace {

using namespace std::chrono_literals;
using pki::testing::run_command;
using pki::testing::TempDir;

constexpr std::string_view kK = "465b5ce8b199b49faa5f0a2ee238a6bc";
constexpr std::string_view kOpc = "cd63cb71954a9f4e48a5994e37a02baf";
constexpr std::string_view kK2 = "0396eb317b6d1c36f19c1c84cd6ffd16";
constexpr std::string_view kOpc2 = "53c15671c60a4b731c55b4a441c0bde2";

const std::chrono::sys_seconds kNow =
    std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());

template <std::size_t N>
Bytes<N> hex_bytes(std::string_view text) {
  return *parse_hex_fixed<N>(text, "test");
}

ByteVec bytes_of(std::string_view s) { return ByteVec(s.begin(), s.end()); }

PcidRecord record(std::string pcid, std::string_view k, std::string_view opc,
                  std::chrono::sys_seconds not_after, unsigned ind_bits = 5) {
  PcidRecord r;
  r.pcid = std::move(pcid);
  r.k = Secret<16>(hex_bytes<16>(k));
  r.opc = Secret<16>(hex_bytes<16>(opc));
  r.ind_bits = ind_bits;
  r.not_after = not_after;
  return r;
}

// Two records with TS 35.208 test set 1 and 2 keys at fixed times: pins the format.
PcidBatch golden_batch() {
  PcidBatch b;
  b.batch_id = "batch-0001";
  b.supplier_id = "sup-1";
  b.ro_operator = "ro-a";
  b.created = std::chrono::sys_seconds(1735689600s);  // 2025-01-01T00:00:00Z
  b.records.push_back(record("001010000000001", kK, kOpc, std::chrono::sys_seconds(1798761600s)));
  b.records.push_back(
      record("001010000000002", kK2, kOpc2, std::chrono::sys_seconds(1798761600s), 10));
  return b;
}

constexpr std::string_view kGolden =
    R"({"batch_id":"batch-0001","created":1735689600,"records":[)"
    R"({"ind_bits":5,"k":"465b5ce8b199b49faa5f0a2ee238a6bc","not_after":1798761600,)"
    R"("opc":"cd63cb71954a9f4e48a5994e37a02baf","pcid":"001010000000001"},)"
    R"({"ind_bits":10,"k":"0396eb317b6d1c36f19c1c84cd6ffd16","not_after":1798761600,)"
    R"("opc":"53c15671c60a4b731c55b4a441c0bde2","pcid":"001010000000002"}],)"
    R"("ro_operator":"ro-a","supplier_id":"sup-1","type":"mcim-pcid-batch/1"})";

std::string encode_text(const PcidBatch& b) {
  auto e = encode_batch(b);
  EXPECT_TRUE(e.has_value()) << e.error().message;
  return e ? std::string(e->text()) : std::string();
}

std::string replace(std::string s, std::string_view from, std::string_view to) {
  const auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

// No K or OPc of the golden batch (nor a prefix of one) in a message, in either case.
void expect_no_secret(const std::string& message, const std::vector<std::string>& more = {}) {
  std::vector<std::string> secrets = {std::string(kK), std::string(kOpc), std::string(kK2),
                                      std::string(kOpc2)};
  secrets.insert(secrets.end(), more.begin(), more.end());
  for (const std::string& secret : secrets) {
    std::string upper(secret);
    std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
    EXPECT_EQ(message.find(secret.substr(0, 12)), std::string::npos) << message;
    EXPECT_EQ(message.find(upper.substr(0, 12)), std::string::npos) << message;
  }
}

void expect_same_records(const PcidBatch& a, const PcidBatch& b) {
  ASSERT_EQ(a.records.size(), b.records.size());
  for (std::size_t i = 0; i < a.records.size(); ++i) {
    EXPECT_EQ(a.records[i].pcid, b.records[i].pcid) << i;
    EXPECT_EQ(a.records[i].k.get(), b.records[i].k.get()) << i;
    EXPECT_EQ(a.records[i].opc.get(), b.records[i].opc.get()) << i;
    EXPECT_EQ(a.records[i].ind_bits, b.records[i].ind_bits) << i;
    EXPECT_EQ(a.records[i].not_after, b.records[i].not_after) << i;
  }
}

// ---------------------------------------------------------------------------------------------
// The document codec

TEST(CcifBatchCodec, GoldenEncodingPinsTheFormat) {
  EXPECT_EQ(encode_text(golden_batch()), kGolden);
  auto d = decode_batch(bytes_of(kGolden));
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(d->batch_id, "batch-0001");
  EXPECT_EQ(d->supplier_id, "sup-1");
  EXPECT_EQ(d->ro_operator, "ro-a");
  EXPECT_EQ(d->created, std::chrono::sys_seconds(1735689600s));
  expect_same_records(*d, golden_batch());
  EXPECT_EQ(encode_text(*d), kGolden);
}

struct BadCase {
  const char* what;
  std::string text;
  const char* field;  // the message starts with "<field>:"
};

std::vector<BadCase> bad_cases() {
  const std::string g(kGolden);
  const std::string r0 = R"({"ind_bits":5,"k":"465b5ce8b199b49faa5f0a2ee238a6bc")";
  return {
      {"empty", "", "batch"},
      {"trailing newline", g + "\n", "batch"},
      {"not an object", "[]", "batch"},
      {"another type", replace(g, "mcim-pcid-batch/1", "mcim-pcid-batch/2"), "type"},
      {"an mcim/1 document", R"({"algorithm":"milenage","version":"mcim/1"})", "type"},
      {"missing batch_id", replace(g, R"("batch_id":"batch-0001",)", ""), "batch_id"},
      {"duplicated key",
       replace(g, R"("batch_id":"batch-0001",)", R"("batch_id":"batch-0001","batch_id":"x",)"),
       "batch_id"},
      {"unknown field", replace(g, R"("records":)", R"("extra":1,"records":)"), "extra"},
      {"unknown field at the end", replace(g, R"(,"type")", R"(,"zzz":1,"type")"), "zzz"},
      {"whitespace", replace(g, R"("batch_id":"batch)", R"("batch_id": "batch)"), "batch_id"},
      {"batch_id not an id", replace(g, "batch-0001", "batch 0001"), "batch_id"},
      {"batch_id too long", replace(g, "batch-0001", std::string(65, 'b')), "batch_id"},
      {"escape", replace(g, "batch-0001", "batch\\u0030"), "batch_id"},
      {"created negative", replace(g, "1735689600", "-1"), "created"},
      {"created fraction", replace(g, "1735689600", "1735689600.5"), "created"},
      {"created leading zero", replace(g, "1735689600", "01735689600"), "created"},
      {"created a string", replace(g, "1735689600", "\"1735689600\""), "created"},
      {"created true", replace(g, "1735689600", "true"), "created"},
      {"created too late", replace(g, "1735689600", "253402300800"), "created"},
      {"no records", replace(g, g.substr(g.find('[') + 1, g.find(']') - g.find('[') - 1), ""),
       "records"},
      {"records not an array", replace(g, R"("records":[)", R"("records":{)"), "records"},
      {"record unknown field", replace(g, R"([{"ind_bits")", R"([{"imsi":"1","ind_bits")"),
       "records[0].imsi"},
      {"record missing opc", replace(g, R"("opc":"cd63cb71954a9f4e48a5994e37a02baf",)", ""),
       "records[0].opc"},
      {"record unknown field at the end",
       replace(g, R"("001010000000001"})", R"("001010000000001","x":1})"), "records[0].x"},
      {"k uppercase", replace(g, kK, "465B5CE8B199B49FAA5F0A2EE238A6BC"), "records[0].k"},
      {"k short", replace(g, kK, kK.substr(0, 30)), "records[0].k"},
      {"k long", replace(g, kK, std::string(kK) + "00"), "records[0].k"},
      {"opc not hex", replace(g, kOpc2, "x3c15671c60a4b731c55b4a441c0bde2"), "records[1].opc"},
      {"pcid short", replace(g, "001010000000001", "00101"), "records[0].pcid"},
      {"pcid long", replace(g, "001010000000001", "0010100000000011"), "records[0].pcid"},
      {"pcid not digits", replace(g, "001010000000001", "00101000000000a"), "records[0].pcid"},
      {"pcid an integer", replace(g, R"("001010000000001")", "1010000000001"), "records[0].pcid"},
      {"pcid duplicated", replace(g, "001010000000002", "001010000000001"), "records[1].pcid"},
      {"ind_bits too large", replace(g, R"("ind_bits":10)", R"("ind_bits":11)"),
       "records[1].ind_bits"},
      {"ind_bits huge", replace(g, R"("ind_bits":10)", R"("ind_bits":70000)"),
       "records[1].ind_bits"},
      {"not_after before created", replace(g, "1798761600", "1735689600"), "records[0].not_after"},
      {"record keys out of order", replace(g, r0, R"({"k":"465b5ce8b199b49faa5f0a2ee238a6bc")"),
       "records[0].ind_bits"},
      {"ro_operator empty", replace(g, R"("ro_operator":"ro-a")", R"("ro_operator":"")"),
       "ro_operator"},
      {"supplier_id not an id", replace(g, R"("supplier_id":"sup-1")", R"("supplier_id":"s/1")"),
       "supplier_id"},
      {"missing supplier_id", replace(g, R"("supplier_id":"sup-1",)", ""), "supplier_id"},
      {"data after", g + "{}", "batch"},
  };
}

TEST(CcifBatchCodec, EveryRefusalIsBadFormatNamingTheFieldWithoutSecrets) {
  for (const BadCase& c : bad_cases()) {
    auto d = decode_batch(bytes_of(c.text));
    ASSERT_FALSE(d.has_value()) << c.what;
    EXPECT_EQ(d.error().code, ErrorCode::bad_format) << c.what;
    EXPECT_EQ(d.error().message.rfind(std::string(c.field) + ":", 0), 0u)
        << c.what << ": " << d.error().message;
    expect_no_secret(d.error().message);
  }
}

TEST(CcifBatchCodec, EveryPrefixIsRefused) {
  for (std::size_t n = 0; n < kGolden.size(); ++n) {
    auto d = decode_batch(bytes_of(kGolden.substr(0, n)));
    ASSERT_FALSE(d.has_value()) << n;
    EXPECT_EQ(d.error().code, ErrorCode::bad_format);
  }
}

// One encoding per batch: whatever one changed character does, the decoder refuses it or the
// result re-encodes to exactly the changed text.
TEST(CcifBatchCodec, AnyChangedCharacterIsRefusedOrCanonical) {
  std::size_t accepted = 0;
  for (std::size_t i = 0; i < kGolden.size(); ++i) {
    for (char c : std::string_view(" \"\\,:{}[]0179afAFz-\n\x01\xff")) {
      std::string t(kGolden);
      if (t[i] == c) continue;
      t[i] = c;
      auto d = decode_batch(bytes_of(t));
      if (!d) {
        EXPECT_EQ(d.error().code, ErrorCode::bad_format);
        expect_no_secret(d.error().message);
        continue;
      }
      ++accepted;
      EXPECT_EQ(encode_text(*d), t) << "position " << i;
    }
  }
  EXPECT_GT(accepted, 0u);
}

TEST(CcifBatchCodec, EncodeRefusesInvalidBatchesAsInvalidArgument) {
  auto check = [](const PcidBatch& b, std::string_view field) {
    auto e = encode_batch(b);
    ASSERT_FALSE(e.has_value()) << field;
    EXPECT_EQ(e.error().code, ErrorCode::invalid_argument);
    EXPECT_EQ(e.error().message.rfind(std::string(field) + ":", 0), 0u) << e.error().message;
    expect_no_secret(e.error().message);
  };
  PcidBatch b = golden_batch();
  b.records.clear();
  check(b, "records");
  b = golden_batch();
  b.records[1].pcid = b.records[0].pcid;
  check(b, "records[1].pcid");
  b = golden_batch();
  b.ro_operator.clear();
  check(b, "ro_operator");
  b = golden_batch();
  b.records[0].not_after = b.created;
  check(b, "records[0].not_after");
  b = golden_batch();
  b.created = std::chrono::sys_seconds(-1s);
  check(b, "created");
  b = golden_batch();
  b.records.resize(kMaxBatchRecords + 1, b.records[0]);
  check(b, "records");
}

// ---------------------------------------------------------------------------------------------
// A PKI: supplier root -> supplier CA -> the supplier's signers and the devices' platform
// certificates; RO root -> RO CA -> the ICF's certificates and an operator's package signer.

struct Party {
  pki::X509Ptr cert;
  pki::PkeyPtr key;
  std::string pem, key_file;
};

class Pki {
 public:
  Pki() {
    SystemClock clock;
    OsRandom rng;
    supplier_root = make_ca("sup-root", "Supplier Root", nullptr, clock, rng);
    supplier_ca = make_ca("sup-ca", "Supplier CA", &*supplier_root, clock, rng);
    ro_root = make_ca("ro-root", "RO Root", nullptr, clock, rng);
    ro_ca = make_ca("ro-ca", "RO CA", &*ro_root, clock, rng);
    supplier = issue(*supplier_ca, signing("urn:mcim:supplier:sup-1"), "supplier", clock, rng);
    supplier_2 = issue(*supplier_ca, signing("urn:mcim:supplier:sup-2"), "supplier-2", clock, rng);
    // Chains to the supplier root too: refused for its URN, not its chain.
    operator_signer = issue(*supplier_ca, signing("urn:mcim:operator:ro-a"), "op", clock, rng);
    // The ICF's batch key: the encryption profile (keyUsage keyAgreement only).
    icf = issue(*ro_ca, icf_spec("icf.ro-a"), "icf", clock, rng);
    icf_b = issue(*ro_ca, icf_spec("icf.ro-b"), "icf-b", clock, rng);
    pki::CertSpec tls;
    tls.profile = pki::Profile::tls_server;
    tls.subject = "CN=icf.ro-a.example,O=RO A";
    tls.sans = {"DNS:icf.ro-a.example"};
    icf_tls = issue(*ro_ca, tls, "icf-tls", clock, rng);
    supplier_anchors.emplace(*pki::TrustAnchors::from_file(dir / "sup-root/ca.pem"));
    ro_anchors.emplace(*pki::TrustAnchors::from_file(dir / "ro-root/ca.pem"));
  }

  pki::SealSigner signer_of(const Party& p) const {
    return {p.cert.get(), p.key.get(), {supplier_ca->cert()}};
  }

  TempDir dir;
  std::optional<pki::Authority> supplier_root, supplier_ca, ro_root, ro_ca;
  Party supplier, supplier_2, operator_signer, icf, icf_b, icf_tls;
  std::optional<pki::TrustAnchors> supplier_anchors, ro_anchors;

 private:
  std::optional<pki::Authority> make_ca(const std::string& d, const std::string& name,
                                        const pki::Authority* parent, const Clock& clock,
                                        RandomSource& rng) {
    auto ca = pki::Authority::create(dir / d, name, parent, 3650, "", clock, rng);
    EXPECT_TRUE(ca.has_value()) << ca.error().message;
    return std::move(*ca);
  }
  static pki::CertSpec signing(const std::string& urn) {
    pki::CertSpec s;
    s.profile = pki::Profile::package_signing;
    s.subject = "CN=batch signer,O=supplier";
    s.sans = {"URI:" + urn};
    return s;
  }
  static pki::CertSpec icf_spec(const std::string& id) {
    pki::CertSpec s;
    s.profile = pki::Profile::encryption;
    s.subject = "CN=" + id + " batch key,O=RO";
    s.sans = {"URI:urn:mcim:operator:" + id};
    return s;
  }
  Party issue(const pki::Authority& ca, const pki::CertSpec& spec, const std::string& name,
              const Clock& clock, RandomSource& rng) {
    auto issued = ca.issue(spec, clock, rng);
    EXPECT_TRUE(issued.has_value()) << issued.error().message;
    Party p{std::move(issued->cert), std::move(issued->key), dir / (name + ".pem"),
            dir / (name + ".key")};
    EXPECT_TRUE(pki::write_certificate(p.pem, p.cert.get()).has_value());
    EXPECT_TRUE(pki::write_private_key(p.key_file, p.key.get()).has_value());
    return p;
  }
};

class CcifTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new Pki(); }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }
  static Pki& pki() { return *pki_; }

  // n records with random K and OPc, PCIDs 00101 followed by 10 digits.
  PcidBatch random_batch(std::size_t n) {
    PcidBatch b;
    b.batch_id = "batch-random";
    b.supplier_id = "sup-1";
    b.ro_operator = "ro-a";
    b.created = kNow;
    for (std::size_t i = 0; i < n; ++i) {
      PcidRecord r;
      r.pcid = fmt::format("00101{:010}", 1000000 + i);
      rng_.fill(r.k.mut());
      rng_.fill(r.opc.mut());
      r.ind_bits = static_cast<unsigned>(i % 11);
      r.not_after = kNow + std::chrono::days(730);
      b.records.push_back(r);
    }
    return b;
  }

  ByteVec seal(const PcidBatch& b, const Party& signer = pki().supplier,
               const Party& icf = pki().icf) {
    auto s = seal_batch(b, pki().signer_of(signer), icf.cert.get());
    EXPECT_TRUE(s.has_value()) << s.error().message;
    return s ? *s : ByteVec();
  }
  Result<PcidBatch> open(ByteView sealed, const Party& icf = pki().icf) {
    return open_batch(sealed, icf.cert.get(), icf.key.get(), *pki().supplier_anchors, clock_);
  }
  std::string write(const std::string& name, ByteView data) {
    const std::string path = pki().dir / name;
    EXPECT_TRUE(write_file_atomic(path, data).has_value());
    return path;
  }

  FakeClock clock_{kNow};
  OsRandom rng_;
  static Pki* pki_;
};

Pki* CcifTest::pki_ = nullptr;

void expect_refused(const Result<PcidBatch>& r, ErrorCode code, const std::string& what) {
  ASSERT_FALSE(r.has_value()) << what;
  EXPECT_EQ(r.error().code, code) << what << ": " << r.error().message;
  expect_no_secret(r.error().message);
}

// ---------------------------------------------------------------------------------------------
// Sealing and opening

TEST_F(CcifTest, ThousandRecordsRoundTrip) {
  const PcidBatch batch = random_batch(1000);
  const ByteVec sealed = seal(batch);
  auto opened = open(sealed);
  ASSERT_TRUE(opened.has_value()) << opened.error().message;
  EXPECT_EQ(opened->batch_id, batch.batch_id);
  EXPECT_EQ(opened->supplier_id, "sup-1");
  EXPECT_EQ(opened->ro_operator, "ro-a");
  EXPECT_EQ(opened->created, kNow);
  expect_same_records(*opened, batch);
  // Encrypted: neither a K nor a PCID appears in the sealed bytes.
  const std::string hay(sealed.begin(), sealed.end());
  EXPECT_EQ(hay.find(batch.records[0].pcid), std::string::npos);
  EXPECT_EQ(hay.find(to_hex(batch.records[0].k.get())), std::string::npos);
}

// The largest batch (100,000 records with the longest PCIDs and times) fits the envelope's limit.
TEST_F(CcifTest, LargestBatchFitsTheEnvelope) {
  PcidBatch batch = random_batch(kMaxBatchRecords);
  for (PcidRecord& r : batch.records) {
    r.ind_bits = 10;
    r.not_after = std::chrono::sys_seconds(253402300799s);
  }
  const ByteVec sealed = seal(batch);
  ASSERT_FALSE(sealed.empty());
  EXPECT_LT(sealed.size(), kSupplierSignerPolicy.max_size);
  auto opened = open(sealed);
  ASSERT_TRUE(opened.has_value()) << opened.error().message;
  EXPECT_EQ(opened->records.size(), kMaxBatchRecords);
  EXPECT_EQ(opened->records.back().k.get(), batch.records.back().k.get());
}

TEST_F(CcifTest, GoldenBatchRoundTripsAndOpensslReadsIt) {
  const PcidBatch batch = golden_batch();
  const std::string der = write("golden.der", seal(batch));
  const std::string inner = pki().dir / "golden-inner.der", out = pki().dir / "golden.json";
  const auto verify = run_command("openssl cms -verify -binary -inform DER -in " + der +
                                  " -CAfile " + (pki().dir / "sup-root/ca.pem") + " -out " + inner);
  ASSERT_EQ(verify.status, 0) << verify.output;
  const auto decrypt =
      run_command("openssl cms -decrypt -binary -inform DER -in " + inner + " -recip " +
                  pki().icf.pem + " -inkey " + pki().icf.key_file + " -out " + out);
  ASSERT_EQ(decrypt.status, 0) << decrypt.output;
  EXPECT_EQ(*read_text_file(out), kGolden);
}

TEST_F(CcifTest, WrongIcfKeyIsRefused) {
  const ByteVec sealed = seal(golden_batch());
  expect_refused(open(sealed, pki().icf_b), ErrorCode::wrong_recipient, "another ICF");
  expect_refused(open_batch(sealed, pki().icf.cert.get(), pki().icf_b.key.get(),
                            *pki().supplier_anchors, clock_),
                 ErrorCode::wrong_recipient, "the ICF's certificate with another key");
}

TEST_F(CcifTest, EveryTamperedByteIsRefused) {
  const ByteVec sealed = seal(golden_batch());
  ASSERT_TRUE(open(sealed).has_value());
  std::map<ErrorCode, int> seen;
  for (std::size_t i = 0; i < sealed.size(); ++i) {
    ByteVec bad = sealed;
    bad[i] ^= static_cast<std::uint8_t>(1u << (i % 8));
    auto r = open(bad);
    ASSERT_FALSE(r.has_value()) << "byte " << i << " accepted";
    const ErrorCode c = r.error().code;
    EXPECT_TRUE(c == ErrorCode::package_tampered || c == ErrorCode::signature_invalid ||
                c == ErrorCode::bad_format || c == ErrorCode::chain_invalid)
        << "byte " << i << ": " << r.error().wire_code() << ": " << r.error().message;
    expect_no_secret(r.error().message);
    ++seen[c];
  }
  EXPECT_GT(seen[ErrorCode::bad_format], 0);
  EXPECT_GT(seen[ErrorCode::package_tampered], 0);
}

TEST_F(CcifTest, OperatorSignedBatchIsRefused) {
  const PcidBatch batch = golden_batch();
  // seal_batch refuses a signer that names no supplier ...
  auto refused = seal_batch(batch, pki().signer_of(pki().operator_signer), pki().icf.cert.get());
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::invalid_argument);
  // ... and the ICF refuses one built anyway with the generic envelope.
  auto encoded = encode_batch(batch);
  ASSERT_TRUE(encoded.has_value());
  auto sealed = pki::seal_signed(encoded->view(), pki().signer_of(pki().operator_signer),
                                 pki().icf.cert.get());
  ASSERT_TRUE(sealed.has_value()) << sealed.error().message;
  auto r = open(*sealed);
  expect_refused(r, ErrorCode::chain_invalid, "operator signer");
  EXPECT_NE(r.error().message.find("urn:mcim:supplier:"), std::string::npos) << r.error().message;
}

TEST_F(CcifTest, SupplierIdMustBeTheSigners) {
  PcidBatch batch = golden_batch();
  batch.supplier_id = "sup-2";
  auto refused = seal_batch(batch, pki().signer_of(pki().supplier), pki().icf.cert.get());
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::invalid_argument);
  // Supplier 1 signing a batch in supplier 2's name, built anyway.
  auto encoded = encode_batch(batch);
  ASSERT_TRUE(encoded.has_value());
  auto sealed =
      pki::seal_signed(encoded->view(), pki().signer_of(pki().supplier), pki().icf.cert.get());
  ASSERT_TRUE(sealed.has_value());
  expect_refused(open(*sealed), ErrorCode::signature_invalid, "supplier id mismatch");
  // Supplier 2 in its own name is fine.
  auto own = open(seal(batch, pki().supplier_2));
  ASSERT_TRUE(own.has_value()) << own.error().message;
  EXPECT_EQ(own->supplier_id, "sup-2");
}

TEST_F(CcifTest, SignerMustChainToTheSupplierRoots) {
  const ByteVec sealed = seal(golden_batch());
  expect_refused(
      open_batch(sealed, pki().icf.cert.get(), pki().icf.key.get(), *pki().ro_anchors, clock_),
      ErrorCode::chain_invalid, "RO anchors");
}

TEST_F(CcifTest, DecryptedContentMustBeABatch) {
  auto sealed = pki::seal_signed(bytes_of(R"({"type":"something else"})"),
                                 pki().signer_of(pki().supplier), pki().icf.cert.get());
  ASSERT_TRUE(sealed.has_value());
  expect_refused(open(*sealed), ErrorCode::bad_format, "not a batch");
}

TEST_F(CcifTest, SealRefusesBadInputs) {
  const PcidBatch batch = golden_batch();
  auto r = seal_batch(batch, pki().signer_of(pki().supplier), nullptr);
  EXPECT_EQ(r.error().code, ErrorCode::missing_argument);
  r = seal_batch(batch, pki::SealSigner{}, pki().icf.cert.get());
  EXPECT_EQ(r.error().code, ErrorCode::missing_argument);
  // The ICF's TLS certificate: keyUsage digitalSignature only, no ECDH to it.
  r = seal_batch(batch, pki().signer_of(pki().supplier), pki().icf_tls.cert.get());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(r.error().message.find("keyAgreement"), std::string::npos) << r.error().message;
  PcidBatch invalid = batch;
  invalid.records[0].pcid = "12";
  r = seal_batch(invalid, pki().signer_of(pki().supplier), pki().icf.cert.get());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(r.error().message.rfind("records[0].pcid:", 0), 0u) << r.error().message;
  pki::SealSigner mismatched = pki().signer_of(pki().supplier);
  mismatched.key = pki().supplier_2.key.get();
  r = seal_batch(batch, mismatched, pki().icf.cert.get());
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Manufacturing

class CcifManufactureTest : public CcifTest {
 protected:
  BatchSpec spec(std::size_t count, std::string first = "001010000000098") {
    BatchSpec s;
    s.batch_id = "batch-m1";
    s.supplier_id = "sup-1";
    s.first_pcid = std::move(first);
    s.count = count;
    s.device.ro_operator = "ro-a";
    s.device.op = Secret<16>(hex_bytes<16>("cdc202d5123e20f62b6d676ac72cb318"));
    s.device.operator_roots = {pki().ro_root->cert()};
    return s;
  }
};

TEST_F(CcifManufactureTest, RecordsEqualTheBundles) {
  auto made = manufacture_batch(*pki().supplier_ca, spec(4), clock_, rng_);
  ASSERT_TRUE(made.has_value()) << made.error().message;
  ASSERT_EQ(made->bundles.size(), 4u);
  const PcidBatch& batch = made->batch;
  EXPECT_EQ(batch.batch_id, "batch-m1");
  EXPECT_EQ(batch.supplier_id, "sup-1");
  EXPECT_EQ(batch.ro_operator, "ro-a");
  EXPECT_EQ(batch.created, kNow);
  ASSERT_EQ(batch.records.size(), 4u);
  const std::vector<std::string> pcids = {"001010000000098", "001010000000099", "001010000000100",
                                          "001010000000101"};
  std::set<std::string> keys;
  for (std::size_t i = 0; i < 4; ++i) {
    const tre::SupplierBundle& b = made->bundles[i];
    const PcidRecord& r = batch.records[i];
    EXPECT_EQ(b.pcid, pcids[i]);
    EXPECT_EQ(r.pcid, b.pcid);
    EXPECT_EQ(b.device_id, "dev-" + b.pcid);
    EXPECT_EQ(b.ro_operator, "ro-a");
    EXPECT_EQ(r.k.get(), b.k.get());
    EXPECT_EQ(r.opc.get(), b.opc.get());
    EXPECT_EQ(r.ind_bits, b.ind_bits);
    EXPECT_EQ(r.not_after, b.pcid_not_after);
    EXPECT_GT(r.not_after, batch.created);
    EXPECT_TRUE(tre::validate_bundle(b).has_value());
    keys.insert(to_hex(b.k.get()));
  }
  EXPECT_EQ(keys.size(), 4u);  // each device its own K
  // What the ICF receives is what the devices hold.
  auto opened = open(seal(batch));
  ASSERT_TRUE(opened.has_value()) << opened.error().message;
  expect_same_records(*opened, batch);
}

TEST_F(CcifManufactureTest, BadSpecsAreRefusedBeforeAnythingIsIssued) {
  const auto before = pki().supplier_ca->index();
  ASSERT_TRUE(before.has_value());
  auto check = [&](BatchSpec s, std::string_view field) {
    auto r = manufacture_batch(*pki().supplier_ca, s, clock_, rng_);
    ASSERT_FALSE(r.has_value()) << field;
    EXPECT_TRUE(r.error().code == ErrorCode::invalid_argument ||
                r.error().code == ErrorCode::missing_argument);
    EXPECT_EQ(r.error().message.rfind(std::string(field) + ":", 0), 0u) << r.error().message;
  };
  check(spec(0), "count");
  check(spec(kMaxBatchRecords + 1), "count");
  check(spec(3, "999998"), "count");  // 999998, 999999, then a seventh digit
  check(spec(1, "12345"), "first_pcid");
  BatchSpec s = spec(1);
  s.batch_id = "bad id";
  check(s, "batch_id");
  s = spec(1);
  s.supplier_id.clear();
  check(s, "supplier_id");
  s = spec(1);
  s.device.pin = "1234";
  check(s, "device.pin");
  s = spec(1);
  s.device.device_id = "dev-same";
  check(s, "device.device_id");
  s = spec(1);
  s.device.pcid = "001010000000001";
  check(s, "device.pcid");
  s = spec(1);
  s.device.ro_operator.clear();
  check(s, "device.ro_operator");
  s = spec(1);
  s.device.operator_roots.clear();
  check(s, "device.operator_roots");  // tre::manufacture's check, before it certifies
  const auto after = pki().supplier_ca->index();
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->size(), before->size());
}

}  // namespace
}  // namespace mcim::supplier
