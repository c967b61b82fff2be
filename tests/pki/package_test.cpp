// The MCIM package: the canonical "mcim/1" document codec (every refusal, no secret in any
// message), sealing and opening over a real PKI built with Authority, interoperability with
// `openssl cms` in both directions, a one-bit change at every byte of a package refused, every
// open-side check with its error code, and the `mcim pki package` commands end to end.
#include "pki/package.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/file.h"
#include "common/hex.h"
#include "pki/authority.h"
#include "pki/certificate.h"
#include "pki_test_util.h"

namespace mcim::pki {
namespace {

using namespace std::chrono_literals;
using testing::run_command;
using testing::TempDir;

constexpr std::string_view kK = "465b5ce8b199b49faa5f0a2ee238a6bc";
constexpr std::string_view kOpc = "cd63cb71954a9f4e48a5994e37a02baf";
constexpr std::string_view kK256 =
    "abababababababababababababababababababababababababababababababab";
constexpr std::string_view kTopc =
    "bd04d9530e87513c5d837ac2ad954623a8e2330c115305a73eb45d1f40cccbff";

template <std::size_t N>
Bytes<N> hex_bytes(std::string_view text) {
  return *parse_hex_fixed<N>(text, "test");
}

std::string text_of(ByteView b) { return std::string(b.begin(), b.end()); }
ByteVec bytes_of(std::string_view s) { return ByteVec(s.begin(), s.end()); }

// A fixed instant well inside every test certificate's validity.
const std::chrono::sys_seconds kNow =
    std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());

McimDocument milenage_doc(std::string device = "dev-a", std::string owner = "sho-a") {
  McimDocument d;
  d.package_id = "pkg-0001";
  d.device_id = std::move(device);
  d.imsi = "001010123456789";
  d.algorithm = McimAlgorithm::milenage;
  EXPECT_TRUE(d.set_key(hex_bytes<16>(kK)).has_value());
  d.opc = Secret<16>(hex_bytes<16>(kOpc));
  d.amf = {0x80, 0x00};
  d.sqn = {0, 0, 0, 0, 0, 0x20};
  d.ind_bits = 5;
  d.policy.owner = std::move(owner);
  d.policy.operations = {McimOperation::activate, McimOperation::block, McimOperation::delete_,
                         McimOperation::unblock};
  d.registration_nonce = hex_bytes<16>("0f1e2d3c4b5a69788796a5b4c3d2e1f0");
  d.not_before = kNow - std::chrono::hours(1);
  d.not_after = kNow + std::chrono::hours(24 * 30);
  d.sequence = 7;
  return d;
}

McimDocument tuak_doc() {
  McimDocument d = milenage_doc();
  d.algorithm = McimAlgorithm::tuak;
  EXPECT_TRUE(d.set_key(*parse_hex(kK256, "k")).has_value());
  d.topc = Secret<32>(hex_bytes<32>(kTopc));
  d.opc = Secret<16>();
  d.tuak = McimTuak{128, 256, 256, 128, 2};
  return d;
}

// The same field values as milenage_doc() at fixed times, in canonical form: pins the format.
constexpr std::string_view kGolden =
    R"({"algorithm":"milenage","amf":"8000","device_id":"dev-a","imsi":"001010123456789",)"
    R"("ind_bits":5,"k":"465b5ce8b199b49faa5f0a2ee238a6bc","milenage":{)"
    R"("c1":"00000000000000000000000000000000","c2":"00000000000000000000000000000001",)"
    R"("c3":"00000000000000000000000000000002","c4":"00000000000000000000000000000004",)"
    R"("c5":"00000000000000000000000000000008","r1":64,"r2":0,"r3":32,"r4":64,"r5":96},)"
    R"("not_after":1767225600,"not_before":1735689600,"opc":"cd63cb71954a9f4e48a5994e37a02baf",)"
    R"("package_id":"pkg-0001","policy":{"operations":["activate","block","delete","unblock"],)"
    R"("owner":"sho-a"},"registration_nonce":"0f1e2d3c4b5a69788796a5b4c3d2e1f0","sequence":7,)"
    R"("sqn":"000000000020","version":"mcim/1"})";

McimDocument golden_doc() {
  McimDocument d = milenage_doc();
  d.not_before = std::chrono::sys_seconds(1735689600s);  // 2025-01-01T00:00:00Z
  d.not_after = std::chrono::sys_seconds(1767225600s);   // 2026-01-01T00:00:00Z
  return d;
}

std::string encode_text(const McimDocument& d) {
  auto e = encode_document(d);
  EXPECT_TRUE(e.has_value()) << e.error().message;
  return e ? std::string(e->text()) : std::string();
}

std::string replace(std::string s, std::string_view from, std::string_view to) {
  const auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

// Neither secret appears in a message, in either case.
void expect_no_secret(const std::string& message) {
  for (std::string_view secret : {kK, kOpc, kK256, kTopc}) {
    std::string upper(secret);
    std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
    EXPECT_EQ(message.find(secret), std::string::npos) << message;
    EXPECT_EQ(message.find(upper), std::string::npos) << message;
    EXPECT_EQ(message.find(secret.substr(0, 12)), std::string::npos) << message;
  }
}

// ---------------------------------------------------------------------------------------------
// The document codec

TEST(McimDocumentCodec, GoldenEncodingPinsTheFormat) {
  EXPECT_EQ(encode_text(golden_doc()), kGolden);
  auto d = decode_document(bytes_of(kGolden));
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(d->imsi, "001010123456789");
  EXPECT_EQ(to_hex(d->key()), kK);
  EXPECT_EQ(to_hex(d->opc.get()), kOpc);
  EXPECT_EQ(d->policy.owner, "sho-a");
  EXPECT_TRUE(d->policy.allows(McimOperation::delete_));
  EXPECT_FALSE(d->policy.allows(McimOperation::retire));
  EXPECT_EQ(d->not_before.time_since_epoch().count(), 1735689600);
  EXPECT_EQ(d->milenage.r, (std::array<unsigned, 5>{64, 0, 32, 64, 96}));
}

TEST(McimDocumentCodec, RoundTripIsCanonicalForBothAlgorithms) {
  for (const McimDocument& doc : {milenage_doc(), tuak_doc()}) {
    const std::string text = encode_text(doc);
    auto back = decode_document(bytes_of(text));
    ASSERT_TRUE(back.has_value()) << back.error().message;
    EXPECT_EQ(encode_text(*back), text);
    EXPECT_EQ(back->algorithm, doc.algorithm);
    EXPECT_EQ(to_hex(back->key()), to_hex(doc.key()));
  }
  auto t = decode_document(bytes_of(encode_text(tuak_doc())));
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->k_size, 32u);
  EXPECT_EQ(to_hex(t->topc.get()), kTopc);
  EXPECT_EQ(t->tuak.mac_bits, 128u);
  EXPECT_EQ(t->tuak.res_bits, 256u);
  EXPECT_EQ(t->tuak.keccak_iterations, 2u);
  EXPECT_EQ(encode_text(tuak_doc()).find("\"opc\""), std::string::npos);
  EXPECT_EQ(encode_text(tuak_doc()).find("\"milenage\""), std::string::npos);
}

struct Refusal {
  const char* what;
  std::string text;
  const char* field;  // must be named in the message
};

std::vector<Refusal> refusals() {
  const std::string g(kGolden);
  const std::string tuak = encode_text(tuak_doc());
  return {
      {"unknown top-level field", replace(g, R"("sqn":)", R"("spare":1,"sqn":)"), "spare"},
      {"unknown nested field", replace(g, R"("owner":)", R"("other":1,"owner":)"), "policy.other"},
      {"missing field", replace(g, R"("imsi":"001010123456789",)", ""), "imsi"},
      {"missing nested field", replace(g, R"(,"r5":96)", ""), "milenage.r5"},
      {"opc in a TUAK document", replace(tuak, R"("package_id")", R"("opc":"00","package_id")"),
       "opc"},
      {"IMSI with a letter", replace(g, "001010123456789", "00101012345678a"), "imsi"},
      {"IMSI too short", replace(g, "001010123456789", "00101"), "imsi"},
      {"IMSI too long", replace(g, "001010123456789", "0010101234567890"), "imsi"},
      {"IMSI as a number", replace(g, R"("001010123456789")", "1010123456789"), "imsi"},
      {"K one byte short", replace(g, kK, kK.substr(2)), "k"},
      {"K uppercase", replace(g, kK, "465B5CE8B199B49FAA5F0A2EE238A6BC"), "k"},
      {"K not hex", replace(g, kK, "465b5ce8b199b49faa5f0a2ee238a6bz"), "k"},
      {"OPc one byte long", replace(g, kOpc, std::string(kOpc) + "00"), "opc"},
      {"AMF wrong length", replace(g, R"("amf":"8000")", R"("amf":"80")"), "amf"},
      {"SQN wrong length", replace(g, "000000000020", "0000000020"), "sqn"},
      {"nonce wrong length", replace(g, "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "0f1e"),
       "registration_nonce"},
      {"nonce all zero", replace(g, "0f1e2d3c4b5a69788796a5b4c3d2e1f0", std::string(32, '0')),
       "registration_nonce"},
      {"TUAK K of 24 bytes", replace(tuak, kK256, std::string(48, 'a')), "k"},
      {"TUAK bad MAC length", replace(tuak, R"("mac_bits":128)", R"("mac_bits":96)"),
       "tuak.mac_bits"},
      {"TUAK zero iterations",
       replace(tuak, R"("keccak_iterations":2)", R"("keccak_iterations":0)"),
       "tuak.keccak_iterations"},
      {"MILENAGE rotation above 127", replace(g, R"("r3":32)", R"("r3":128)"), "milenage.r3"},
      {"wrong version", replace(g, "mcim/1", "mcim/2"), "version"},
      {"unknown algorithm", replace(g, R"("algorithm":"milenage")", R"("algorithm":"comp128")"),
       "algorithm"},
      {"ind_bits too large", replace(g, R"("ind_bits":5)", R"("ind_bits":11)"), "ind_bits"},
      {"sequence zero", replace(g, R"("sequence":7)", R"("sequence":0)"), "sequence"},
      {"sequence beyond 2^53", replace(g, R"("sequence":7)", R"("sequence":9007199254740992)"),
       "sequence"},
      {"validity inverted", replace(g, "1767225600", "1735689600"), "not_after"},
      {"unknown operation", replace(g, R"("block",)", R"("erase",)"), "policy.operations"},
      {"operations unsorted", replace(g, R"("activate","block")", R"("block","activate")"),
       "policy.operations"},
      {"operation twice", replace(g, R"("activate","block")", R"("block","block")"),
       "policy.operations"},
      {"owner with a space", replace(g, R"("owner":"sho-a")", R"("owner":"sho a")"),
       "policy.owner"},
      {"device id empty", replace(g, R"("device_id":"dev-a")", R"("device_id":"")"), "device_id"},
      {"whitespace", replace(g, R"("amf":"8000",)", R"("amf": "8000",)"), "amf"},
      {"keys out of order",
       replace(g, R"("algorithm":"milenage","amf":"8000")",
               R"("amf":"8000","algorithm":"milenage")"),
       "algorithm"},
      {"duplicate key", replace(g, R"("amf":"8000",)", R"("amf":"8000","amf":"8000",)"), "amf"},
      {"leading zero", replace(g, R"("ind_bits":5)", R"("ind_bits":05)"), "ind_bits"},
      {"fraction", replace(g, R"("ind_bits":5)", R"("ind_bits":5.0)"), "ind_bits"},
      {"negative", replace(g, R"("ind_bits":5)", R"("ind_bits":-5)"), "ind_bits"},
      {"boolean", replace(g, R"("ind_bits":5)", R"("ind_bits":true)"), "ind_bits"},
      {"escape in a string", replace(g, R"("pkg-0001")", R"("pkg\u002d0001")"), "package_id"},
      {"trailing newline", g + "\n", "document"},
      {"not an object", "[1]", "document"},
      {"empty", "", "document"},
      {"too long", g + std::string(kMaxDocumentSize, ' '), "document"},
      {"policy too deep", replace(g, R"(["activate")", R"([["activate"])"), "policy.operations[0]"},
  };
}

TEST(McimDocumentCodec, EveryRefusalIsBadFormatNamingTheFieldWithoutSecrets) {
  for (const Refusal& r : refusals()) {
    auto d = decode_document(bytes_of(r.text));
    ASSERT_FALSE(d.has_value()) << r.what;
    EXPECT_EQ(d.error().code, ErrorCode::bad_format) << r.what;
    EXPECT_EQ(d.error().message.rfind(std::string(r.field) + ":", 0), 0u)
        << r.what << ": " << d.error().message;
    expect_no_secret(d.error().message);
  }
}

TEST(McimDocumentCodec, EveryPrefixIsRefused) {
  for (std::size_t n = 0; n < kGolden.size(); ++n) {
    auto d = decode_document(bytes_of(kGolden.substr(0, n)));
    ASSERT_FALSE(d.has_value()) << n;
    EXPECT_EQ(d.error().code, ErrorCode::bad_format);
    expect_no_secret(d.error().message);
  }
}

// Whatever a single changed character does, the decoder either refuses with bad_format or
// accepts a document whose canonical encoding is exactly the changed text: one encoding per
// document, no second spelling slips through.
TEST(McimDocumentCodec, AnyChangedCharacterIsRefusedOrCanonical) {
  std::size_t accepted = 0;
  for (std::size_t i = 0; i < kGolden.size(); ++i) {
    for (char c : std::string_view(" \"\\,:{}[]0179afAFz-\n\x01\xff")) {
      std::string t(kGolden);
      if (t[i] == c) continue;
      t[i] = c;
      auto d = decode_document(bytes_of(t));
      if (!d) {
        EXPECT_EQ(d.error().code, ErrorCode::bad_format);
        expect_no_secret(d.error().message);
        continue;
      }
      ++accepted;
      EXPECT_EQ(encode_text(*d), t) << "position " << i;
    }
  }
  EXPECT_GT(accepted, 0u);  // hex digits of K, OPc, ... can change: the property was exercised
}

TEST(McimDocumentCodec, EncodeRefusesInvalidDocumentsAsInvalidArgument) {
  McimDocument d = milenage_doc();
  d.imsi = "12345";
  auto e = encode_document(d);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(e.error().message.rfind("imsi:", 0), 0u);

  d = milenage_doc();
  EXPECT_TRUE(d.set_key(*parse_hex(kK256, "k")).has_value());  // 32-byte K is TUAK only
  EXPECT_EQ(encode_document(d).error().code, ErrorCode::invalid_argument);
  EXPECT_FALSE(d.set_key(ByteVec(24)).has_value());

  d = milenage_doc();
  d.policy.operations = {McimOperation::update, McimOperation::activate};
  EXPECT_EQ(encode_document(d).error().message.rfind("policy.operations:", 0), 0u);
}

TEST(McimDocumentCodec, OperationNames) {
  for (auto op : {McimOperation::activate, McimOperation::block, McimOperation::deactivate,
                  McimOperation::delete_, McimOperation::retire, McimOperation::unblock,
                  McimOperation::update}) {
    EXPECT_EQ(parse_operation(to_string(op)), op);
  }
  EXPECT_EQ(to_string(McimOperation::delete_), "delete");
  EXPECT_FALSE(parse_operation("Delete").has_value());
}

// ---------------------------------------------------------------------------------------------
// A PKI: operator root -> SHO CA -> package signers; supplier root -> supplier CA -> TREs;
// another operator's root and CA. Built once for the suite, with files for the CLI and openssl.

struct Party {
  X509Ptr cert;
  PkeyPtr key;
  std::string pem, key_file;  // written files
};

class Pki {
 public:
  Pki() {
    SystemClock clock;
    OsRandom rng;
    op_root = make_ca("op-root", "Operator Root", nullptr, clock, rng);
    sho_ca = make_ca("sho-ca", "SHO A CA", &*op_root, clock, rng);
    supplier_root = make_ca("sup-root", "Supplier Root", nullptr, clock, rng);
    supplier_ca = make_ca("sup-ca", "Supplier CA", &*supplier_root, clock, rng);
    other_root = make_ca("other-root", "Other Root", nullptr, clock, rng);
    other_ca = make_ca("other-ca", "Other CA", &*other_root, clock, rng);

    signer = issue(*sho_ca, signing_spec("sho-a"), "signer", clock, rng);
    signer_b = issue(*sho_ca, signing_spec("sho-b"), "signer-b", clock, rng);
    foreign_signer = issue(*other_ca, signing_spec("sho-a"), "foreign", clock, rng);
    CertSpec tls = signing_spec("sho-a");
    tls.profile = Profile::tls_client;
    tls_signer = issue(*sho_ca, tls, "tls", clock, rng);
    CertSpec result = signing_spec("sho-a");
    result.profile = Profile::result_signing;
    result_signer = issue(*sho_ca, result, "result", clock, rng);
    CertSpec no_urn = signing_spec("sho-a");
    no_urn.sans.clear();
    unnamed_signer = issue(*sho_ca, no_urn, "unnamed", clock, rng);

    tre_a = issue(*supplier_ca, platform_spec("dev-a"), "tre-a", clock, rng);
    tre_b = issue(*supplier_ca, platform_spec("dev-b"), "tre-b", clock, rng);
    // TRE A's key under a certificate naming another device.
    auto twin = supplier_ca->issue_for_key(platform_spec("dev-x"), tre_a.key.get(), clock, rng);
    tre_a_other_id.cert = std::move(*twin);
    tre_a_other_id.key = up_ref(tre_a.key.get());

    root_pem = dir / "op-root/ca.pem";
    chain_pem = dir / "sho-ca/ca.pem";  // the intermediate only
    anchors.emplace(*TrustAnchors::from_file(root_pem));
  }

  PackageSigner signer_of(const Party& p, bool with_chain = true) const {
    PackageSigner s{p.cert.get(), p.key.get(), {}};
    if (with_chain) s.chain.push_back(&p == &foreign_signer ? other_ca->cert() : sho_ca->cert());
    return s;
  }

  TempDir dir;
  std::optional<Authority> op_root, sho_ca, supplier_root, supplier_ca, other_root, other_ca;
  Party signer, signer_b, foreign_signer, tls_signer, result_signer, unnamed_signer;
  Party tre_a, tre_b, tre_a_other_id;
  std::string root_pem, chain_pem;
  std::optional<TrustAnchors> anchors;

 private:
  std::optional<Authority> make_ca(const std::string& d, const std::string& name,
                                   const Authority* parent, const Clock& clock, RandomSource& rng) {
    auto ca = Authority::create(dir / d, name, parent, 3650, "", clock, rng);
    EXPECT_TRUE(ca.has_value()) << ca.error().message;
    return std::move(*ca);
  }
  static CertSpec signing_spec(const std::string& op) {
    CertSpec s;
    s.profile = Profile::package_signing;
    s.subject = "CN=package signer " + op + ",O=" + op;
    s.sans = {"URI:urn:mcim:operator:" + op};
    return s;
  }
  static CertSpec platform_spec(const std::string& device) {
    CertSpec s;
    s.profile = Profile::platform;
    s.subject = "CN=" + device + ",O=supplier";
    s.device_id = device;
    s.model = "meter-v1";
    return s;
  }
  Party issue(const Authority& ca, const CertSpec& spec, const std::string& name,
              const Clock& clock, RandomSource& rng) {
    auto issued = ca.issue(spec, clock, rng);
    EXPECT_TRUE(issued.has_value()) << issued.error().message;
    Party p{std::move(issued->cert), std::move(issued->key), dir / (name + ".pem"),
            dir / (name + ".key")};
    EXPECT_TRUE(write_certificate(p.pem, p.cert.get()).has_value());
    EXPECT_TRUE(write_private_key(p.key_file, p.key.get()).has_value());
    return p;
  }
};

class PackageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new Pki(); }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  static Pki& pki() { return *pki_; }
  const TrustAnchors& anchors() const { return *pki_->anchors; }

  ByteVec seal(const McimDocument& doc, const Party& signer, const Party& recipient) {
    auto pkg = seal_package(doc, pki().signer_of(signer), recipient.cert.get());
    EXPECT_TRUE(pkg.has_value()) << pkg.error().message;
    return pkg ? *pkg : ByteVec();
  }
  ByteVec seal_default() { return seal(milenage_doc(), pki().signer, pki().tre_a); }

  Result<McimDocument> open(ByteView pkg, const Party& recipient, const OpenOptions& o = {}) {
    return open_package(pkg, recipient.cert.get(), recipient.key.get(), anchors(), clock_, o);
  }

  std::string write(const std::string& name, ByteView data) {
    const std::string path = pki().dir / name;
    EXPECT_TRUE(write_file_atomic(path, data).has_value());
    return path;
  }

  // A package built by the openssl command line from a document text: encrypt to `recipient`,
  // sign with `signer` (and the SHO CA). Empty when a command fails.
  ByteVec openssl_package(const std::string& doc_text, const Party& signer,
                          const Party& recipient) {
    const std::string doc = write("ossl-doc", bytes_of(doc_text));
    const std::string inner = pki().dir / "ossl-inner.der", pkg = pki().dir / "ossl-pkg.der";
    // -keyopt applies to the -recip before it.
    const auto enc =
        run_command("openssl cms -encrypt -binary -aes-256-gcm -recip " + recipient.pem +
                    " -keyopt ecdh_kdf_md:sha256 -in " + doc + " -outform DER -out " + inner);
    EXPECT_EQ(enc.status, 0) << enc.output;
    const auto sig = run_command("openssl cms -sign -binary -nodetach -md sha256 -signer " +
                                 signer.pem + " -inkey " + signer.key_file + " -certfile " +
                                 pki().chain_pem + " -in " + inner + " -outform DER -out " + pkg);
    EXPECT_EQ(sig.status, 0) << sig.output;
    auto data = read_file(pkg);
    return data ? *data : ByteVec();
  }

  FakeClock clock_{kNow};
  static Pki* pki_;
};

Pki* PackageTest::pki_ = nullptr;

void expect_code(const Result<McimDocument>& r, ErrorCode code, const char* what = "") {
  ASSERT_FALSE(r.has_value()) << what;
  EXPECT_EQ(r.error().code, code) << what << ": " << r.error().message;
  expect_no_secret(r.error().message);
}

// ---------------------------------------------------------------------------------------------
// Round trips and openssl interoperability

TEST_F(PackageTest, SealOpenRoundTripMilenageAndTuak) {
  for (const McimDocument& doc : {milenage_doc(), tuak_doc()}) {
    const ByteVec pkg = seal(doc, pki().signer, pki().tre_a);
    auto opened = open(pkg, pki().tre_a);
    ASSERT_TRUE(opened.has_value()) << opened.error().message;
    EXPECT_EQ(encode_text(*opened), encode_text(doc));
    // The document is encrypted: neither K nor the IMSI appears in the package.
    const std::string hay = text_of(pkg) + to_hex(pkg);
    EXPECT_EQ(hay.find(std::string(to_hex(doc.key()))), std::string::npos);
    EXPECT_EQ(hay.find(doc.imsi), std::string::npos);
  }
}

TEST_F(PackageTest, RelayVerifiesWithoutDecrypting) {
  const ByteVec pkg = seal_default();
  auto info = verify_package_signature(pkg, anchors(), clock_);
  ASSERT_TRUE(info.has_value()) << info.error().message;
  EXPECT_EQ(info->operator_id, "sho-a");
  EXPECT_EQ(X509_cmp(info->signer.get(), pki().signer.cert.get()), 0);
  EXPECT_EQ(info->chain.size(), 3u);
  // The sealed part is a view into the package, and is what `openssl cms -verify` outputs.
  EXPECT_GE(info->sealed.data(), pkg.data());
  EXPECT_LE(info->sealed.data() + info->sealed.size(), pkg.data() + pkg.size());
  const std::string pkg_file = write("relay.der", pkg), inner = pki().dir / "relay-inner.der";
  const auto v = run_command("openssl cms -verify -binary -inform DER -in " + pkg_file +
                             " -CAfile " + pki().root_pem + " -out " + inner);
  ASSERT_EQ(v.status, 0) << v.output;
  EXPECT_EQ(*read_file(inner), ByteVec(info->sealed.begin(), info->sealed.end()));
}

TEST_F(PackageTest, OpensslCmsVerifiesThenDecryptsOurPackage) {
  const McimDocument doc = milenage_doc();
  const ByteVec pkg = seal(doc, pki().signer, pki().tre_a);
  const std::string pkg_file = write("ours.der", pkg);
  const std::string inner = pki().dir / "ours-inner.der", out = pki().dir / "ours-doc.json";
  const auto verify = run_command("openssl cms -verify -binary -inform DER -in " + pkg_file +
                                  " -CAfile " + pki().root_pem + " -out " + inner);
  ASSERT_EQ(verify.status, 0) << verify.output;
  const auto decrypt =
      run_command("openssl cms -decrypt -binary -inform DER -in " + inner + " -recip " +
                  pki().tre_a.pem + " -inkey " + pki().tre_a.key_file + " -out " + out);
  ASSERT_EQ(decrypt.status, 0) << decrypt.output;
  EXPECT_EQ(text_of(*read_file(out)), encode_text(doc));

  // The inner structure is what we claim: AuthEnvelopedData, ECDH with SHA-256 KDF, AES-256-GCM.
  const auto dump = run_command("openssl cms -cmsout -print -inform DER -in " + inner);
  ASSERT_EQ(dump.status, 0) << dump.output;
  EXPECT_NE(dump.output.find("id-smime-ct-authEnvelopedData"), std::string::npos);
  EXPECT_NE(dump.output.find("dhSinglePass-stdDH-sha256kdf-scheme"), std::string::npos);
  EXPECT_NE(dump.output.find("aes-256-gcm"), std::string::npos);

  // Another TRE's key cannot decrypt it, and a changed signed byte fails verification: exit codes.
  const auto other =
      run_command("openssl cms -decrypt -binary -inform DER -in " + inner + " -recip " +
                  pki().tre_b.pem + " -inkey " + pki().tre_b.key_file + " -out " + out + ".b");
  EXPECT_NE(other.status, 0);
  ByteVec bad = pkg;
  bad[bad.size() / 2] ^= 0x01;
  const auto tampered =
      run_command("openssl cms -verify -binary -inform DER -in " + write("bad.der", bad) +
                  " -CAfile " + pki().root_pem + " -out " + inner + ".bad");
  EXPECT_NE(tampered.status, 0);
}

TEST_F(PackageTest, PackageMadeByOpensslOpens) {
  const McimDocument doc = milenage_doc();
  const ByteVec pkg = openssl_package(encode_text(doc), pki().signer, pki().tre_a);
  auto opened = open(pkg, pki().tre_a);
  ASSERT_TRUE(opened.has_value()) << opened.error().message;
  EXPECT_EQ(encode_text(*opened), encode_text(doc));
}

// ---------------------------------------------------------------------------------------------
// Tampering

// Every single-bit change of a real package (each bit of each byte) is refused with a specific
// code, never accepted, never a crash.
TEST_F(PackageTest, EveryBitFlipIsRefused) {
  const ByteVec pkg = seal_default();
  ASSERT_TRUE(open(pkg, pki().tre_a).has_value());
  auto recipient = PackageRecipient::create(pki().tre_a.cert.get(), pki().tre_a.key.get());
  ASSERT_TRUE(recipient.has_value());
  std::map<ErrorCode, int> seen;
  for (std::size_t bit = 0; bit < pkg.size() * 8; ++bit) {
    const std::size_t i = bit / 8;
    ByteVec bad = pkg;
    bad[i] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    auto r = open_package(bad, *recipient, anchors(), clock_);
    ASSERT_FALSE(r.has_value()) << "byte " << i << " bit " << bit % 8 << " accepted";
    const ErrorCode c = r.error().code;
    EXPECT_TRUE(c == ErrorCode::package_tampered || c == ErrorCode::signature_invalid ||
                c == ErrorCode::bad_format || c == ErrorCode::chain_invalid)
        << "byte " << i << ": " << r.error().wire_code() << ": " << r.error().message;
    ++seen[c];
  }
  // Both the structure and the signed content were hit.
  EXPECT_GT(seen[ErrorCode::bad_format], 0);
  EXPECT_GT(seen[ErrorCode::package_tampered], 0);
  EXPECT_GT(seen[ErrorCode::signature_invalid], 0);
}

TEST_F(PackageTest, TruncatedAndMisencodedPackagesAreBadFormat) {
  const ByteVec pkg = seal_default();
  for (std::size_t n = 0; n < pkg.size(); n += 7) {
    expect_code(open(ByteView(pkg.data(), n), pki().tre_a), ErrorCode::bad_format, "truncated");
  }
  ByteVec longer = pkg;
  longer.push_back(0);
  expect_code(open(longer, pki().tre_a), ErrorCode::bad_format, "trailing byte");
  // PEM instead of DER, a certificate instead of a package, a document instead of a package.
  const std::string pem = "-----BEGIN CMS-----\n" + std::string(64, 'A') + "\n-----END CMS-----\n";
  expect_code(open(bytes_of(pem), pki().tre_a), ErrorCode::bad_format, "PEM");
  expect_code(open(certificate_der(pki().tre_a.cert.get()), pki().tre_a), ErrorCode::bad_format,
              "certificate");
  expect_code(open(bytes_of(kGolden), pki().tre_a), ErrorCode::bad_format, "document");
  // The inner AuthEnvelopedData alone (what `openssl cms -verify` outputs) is not a package.
  auto info = verify_package_signature(pkg, anchors(), clock_);
  ASSERT_TRUE(info.has_value());
  expect_code(open(info->sealed, pki().tre_a), ErrorCode::bad_format, "inner");
}

// ---------------------------------------------------------------------------------------------
// Recipient, validity, replay

TEST_F(PackageTest, WrongRecipientIsRefused) {
  const ByteVec pkg = seal_default();  // for TRE A
  expect_code(open(pkg, pki().tre_b), ErrorCode::wrong_recipient, "TRE B's cert and key");
  // TRE A's certificate with TRE B's key.
  expect_code(open_package(pkg, pki().tre_a.cert.get(), pki().tre_b.key.get(), anchors(), clock_),
              ErrorCode::wrong_recipient, "TRE B's key");
  // TRE A's key under a certificate naming another device.
  expect_code(open(pkg, pki().tre_a_other_id), ErrorCode::wrong_recipient, "other device id");
}

TEST_F(PackageTest, DocumentForAnotherDeviceIsRefused) {
  // seal_package refuses to build it, so the openssl command line does.
  McimDocument doc = milenage_doc("dev-b");
  auto refused = seal_package(doc, pki().signer_of(pki().signer), pki().tre_a.cert.get());
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::invalid_argument);
  const ByteVec pkg = openssl_package(encode_text(doc), pki().signer, pki().tre_a);
  expect_code(open(pkg, pki().tre_a), ErrorCode::wrong_recipient, "device id");
}

TEST_F(PackageTest, ValidityWindow) {
  McimDocument doc = milenage_doc();
  doc.not_before = kNow + std::chrono::hours(1);
  doc.not_after = kNow + std::chrono::hours(2);
  const ByteVec pkg = seal(doc, pki().signer, pki().tre_a);
  expect_code(open(pkg, pki().tre_a), ErrorCode::package_expired, "not yet valid");
  clock_.set(kNow + std::chrono::hours(1) - 1s);
  expect_code(open(pkg, pki().tre_a), ErrorCode::package_expired, "not yet valid");
  clock_.set(kNow + std::chrono::hours(1));
  EXPECT_TRUE(open(pkg, pki().tre_a).has_value());
  clock_.set(kNow + std::chrono::hours(2) - 1s);
  EXPECT_TRUE(open(pkg, pki().tre_a).has_value());
  clock_.set(kNow + std::chrono::hours(2));
  expect_code(open(pkg, pki().tre_a), ErrorCode::package_expired, "expired");
  // Beyond the signer's certificate (365 days) the chain no longer verifies, although the same
  // path was accepted (and cached) a moment earlier; likewise before the certificates existed.
  const ByteVec long_lived = seal_default();
  clock_.set(kNow);
  ASSERT_TRUE(open(long_lived, pki().tre_a).has_value());
  clock_.set(kNow + std::chrono::hours(24 * 400));
  expect_code(open(long_lived, pki().tre_a), ErrorCode::cert_expired, "signer expired");
  clock_.set(kNow - std::chrono::hours(1));
  expect_code(open(long_lived, pki().tre_a), ErrorCode::cert_expired, "signer not yet valid");
}

TEST_F(PackageTest, ReplayByOperatorSequence) {
  const ByteVec pkg = seal_default();  // sequence 7, owner sho-a
  OpenOptions o;
  o.last_sequence["sho-b"] = 100;  // another operator's history does not matter
  EXPECT_TRUE(open(pkg, pki().tre_a, o).has_value());
  o.last_sequence["sho-a"] = 6;
  EXPECT_TRUE(open(pkg, pki().tre_a, o).has_value());
  o.last_sequence["sho-a"] = 7;
  expect_code(open(pkg, pki().tre_a, o), ErrorCode::replayed_package, "same sequence");
  o.last_sequence["sho-a"] = 8;
  expect_code(open(pkg, pki().tre_a, o), ErrorCode::replayed_package, "older sequence");
}

TEST_F(PackageTest, RegistrationNonceWhenExpected) {
  const ByteVec pkg = seal_default();
  OpenOptions o;
  o.registration_nonce = milenage_doc().registration_nonce;
  EXPECT_TRUE(open(pkg, pki().tre_a, o).has_value());
  (*o.registration_nonce)[0] ^= 1;
  expect_code(open(pkg, pki().tre_a, o), ErrorCode::nonce_mismatch);
}

// ---------------------------------------------------------------------------------------------
// The caches (parsed certificates, verified signer paths) never change a verdict

TEST_F(PackageTest, AcceptedPathIsNotTrustedUnderOtherAnchors) {
  const ByteVec pkg = seal_default();
  for (int round = 0; round < 20; ++round) {
    // Trust stores come and go (their addresses may be reused); only the operator root accepts.
    {
      auto op = TrustAnchors::from_file(pki().root_pem);
      ASSERT_TRUE(op.has_value());
      ASSERT_TRUE(open_package(pkg, pki().tre_a.cert.get(), pki().tre_a.key.get(), *op, clock_)
                      .has_value());
    }
    auto other = TrustAnchors::from_certs({pki().other_root->cert(), pki().supplier_root->cert()});
    ASSERT_TRUE(other.has_value());
    expect_code(open_package(pkg, pki().tre_a.cert.get(), pki().tre_a.key.get(), *other, clock_),
                ErrorCode::chain_invalid, "other anchors");
  }
}

TEST_F(PackageTest, ConcurrentOpensAgree) {
  const ByteVec pkg = seal_default();
  ByteVec bad = pkg;
  bad[bad.size() - 100] ^= 0x10;
  auto recipient = PackageRecipient::create(pki().tre_a.cert.get(), pki().tre_a.key.get());
  ASSERT_TRUE(recipient.has_value());
  std::atomic<int> opened{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        if (open_package(pkg, *recipient, anchors(), clock_).has_value()) ++opened;
        if (!open_package(bad, *recipient, anchors(), clock_).has_value()) ++refused;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(opened.load(), 200);
  EXPECT_EQ(refused.load(), 200);
}

// ---------------------------------------------------------------------------------------------
// Signers

TEST_F(PackageTest, SignerMustChainToTheOperatorRoot) {
  const ByteVec pkg = seal(milenage_doc(), pki().foreign_signer, pki().tre_a);
  expect_code(open(pkg, pki().tre_a), ErrorCode::chain_invalid);
  auto relay = verify_package_signature(pkg, anchors(), clock_);
  ASSERT_FALSE(relay.has_value());
  EXPECT_EQ(relay.error().code, ErrorCode::chain_invalid);
  // Without its intermediate the chain does not build either.
  auto bare =
      seal_package(milenage_doc(), pki().signer_of(pki().signer, false), pki().tre_a.cert.get());
  ASSERT_TRUE(bare.has_value());
  expect_code(open(*bare, pki().tre_a), ErrorCode::chain_invalid, "no intermediate");
}

TEST_F(PackageTest, SignerMustHaveThePackageSigningProfile) {
  for (const Party* p : {&pki().tls_signer, &pki().result_signer, &pki().tre_a}) {
    // openssl signs whatever it is given (seal_package would refuse the platform certificate:
    // it names no operator).
    const ByteVec pkg = openssl_package(encode_text(milenage_doc()), *p, pki().tre_a);
    ASSERT_FALSE(pkg.empty());
    expect_code(open(pkg, pki().tre_a), ErrorCode::chain_invalid, p->pem.c_str());
  }
}

TEST_F(PackageTest, SignerSpeaksOnlyForItsOperator) {
  // seal_package refuses a signer of another operator, and one that names none.
  auto r = seal_package(milenage_doc(), pki().signer_of(pki().signer_b), pki().tre_a.cert.get());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  r = seal_package(milenage_doc(), pki().signer_of(pki().unnamed_signer), pki().tre_a.cert.get());
  ASSERT_FALSE(r.has_value());
  // Built anyway: SHO B's key signing a package owned by SHO A is refused on open.
  ByteVec pkg = openssl_package(encode_text(milenage_doc()), pki().signer_b, pki().tre_a);
  expect_code(open(pkg, pki().tre_a), ErrorCode::signature_invalid, "owner");
  pkg = openssl_package(encode_text(milenage_doc()), pki().unnamed_signer, pki().tre_a);
  expect_code(open(pkg, pki().tre_a), ErrorCode::chain_invalid, "no operator");
}

TEST_F(PackageTest, SealRefusesBadInputs) {
  const McimDocument doc = milenage_doc();
  PackageSigner mismatched = pki().signer_of(pki().signer);
  mismatched.key = pki().signer_b.key.get();
  auto r = seal_package(doc, mismatched, pki().tre_a.cert.get());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  r = seal_package(doc, pki().signer_of(pki().signer), pki().signer.cert.get());  // not a TRE
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  r = seal_package(doc, pki().signer_of(pki().signer), nullptr);
  EXPECT_EQ(r.error().code, ErrorCode::missing_argument);
  McimDocument bad = doc;
  bad.sequence = 0;
  r = seal_package(bad, pki().signer_of(pki().signer), pki().tre_a.cert.get());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message.rfind("sequence:", 0), 0u);
}

TEST_F(PackageTest, RecipientMustHoldAPlatformCertificateAndItsKey) {
  auto r = PackageRecipient::create(pki().tre_a.cert.get(), pki().tre_b.key.get());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::wrong_recipient);
  r = PackageRecipient::create(pki().signer.cert.get(), pki().signer.key.get());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::bad_format);
  r = PackageRecipient::create(pki().tre_a.cert.get(), pki().tre_a.key.get());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->device_id(), "dev-a");
}

// ---------------------------------------------------------------------------------------------
// `mcim pki package` through the binary

std::string mcim_binary() { return std::string(MCIM_BINARY_DIR) + "/src/cli/mcim"; }

std::string field(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + ": ", 0) == 0) return line.substr(name.size() + 2);
  }
  return "<missing " + name + ">";
}

TEST_F(PackageTest, CliSealVerifyOpen) {
  ASSERT_EQ(::access(mcim_binary().c_str(), X_OK), 0) << "build the mcim target first";
  const std::string doc_text = encode_text(milenage_doc());
  const std::string doc = write("cli-doc", bytes_of(doc_text));
  const std::string pkg = pki().dir / "cli-pkg.der", out = pki().dir / "cli-out";
  const std::string signer_prefix = pki().dir / "signer";

  const auto sealed = run_command(mcim_binary() + " pki package seal --signer " + signer_prefix +
                                  " --recipient " + pki().tre_a.pem + " --in " + doc + " --out " +
                                  pkg + " --chain " + pki().chain_pem);
  ASSERT_EQ(sealed.status, 0) << sealed.output;
  EXPECT_EQ(field(sealed.output, "package_id"), "pkg-0001");
  expect_no_secret(sealed.output);

  const auto verify = run_command(mcim_binary() + " pki package verify --ca-file " +
                                  pki().root_pem + " --in " + pkg);
  ASSERT_EQ(verify.status, 0) << verify.output;
  EXPECT_EQ(field(verify.output, "operator"), "sho-a");
  EXPECT_EQ(field(verify.output, "status"), "valid");

  const std::string open_args = " --recipient-key " + pki().tre_a.key_file + " --recipient-cert " +
                                pki().tre_a.pem + " --ca-file " + pki().root_pem;
  const auto opened = run_command(mcim_binary() + " pki package open" + open_args + " --in " + pkg +
                                  " --out " + out);
  ASSERT_EQ(opened.status, 0) << opened.output;
  EXPECT_EQ(field(opened.output, "imsi"), "001010123456789");
  expect_no_secret(opened.output);
  EXPECT_EQ(text_of(*read_file(out)), doc_text);
  struct stat st {};
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // Refusals exit 1: another TRE, a changed byte.
  const auto wrong =
      run_command(mcim_binary() + " pki package open --recipient-key " + pki().tre_b.key_file +
                  " --recipient-cert " + pki().tre_b.pem + " --ca-file " + pki().root_pem +
                  " --in " + pkg + " --out " + out + ".b");
  EXPECT_EQ(wrong.status, 1) << wrong.output;
  EXPECT_NE(wrong.output.find("another platform certificate"), std::string::npos) << wrong.output;
  ByteVec bad = *read_file(pkg);
  bad[bad.size() - 10] ^= 0x04;
  const std::string bad_pkg = write("cli-bad.der", bad);
  const auto tampered = run_command(mcim_binary() + " pki package open" + open_args + " --in " +
                                    bad_pkg + " --out " + out + ".bad");
  EXPECT_EQ(tampered.status, 1) << tampered.output;
  EXPECT_NE(::access((out + ".bad").c_str(), F_OK), 0);  // nothing written on refusal
}

TEST_F(PackageTest, CliBadInputExitsTwo) {
  ASSERT_EQ(::access(mcim_binary().c_str(), X_OK), 0);
  const std::string seal_cmd = mcim_binary() + " pki package seal --signer " +
                               (pki().dir / "signer") + " --recipient " + pki().tre_a.pem +
                               " --out " + (pki().dir / "x.der");
  // Missing --in; a non-canonical document (K must not be echoed); an unreadable one.
  auto r = run_command(seal_cmd);
  EXPECT_EQ(r.status, 2) << r.output;
  const std::string pretty = write("pretty", bytes_of(encode_text(milenage_doc()) + "\n"));
  r = run_command(seal_cmd + " --in " + pretty);
  EXPECT_EQ(r.status, 2) << r.output;
  expect_no_secret(r.output);
  r = run_command(seal_cmd + " --in " + (pki().dir / "no-such-file"));
  EXPECT_EQ(r.status, 2) << r.output;
  // A document for another device than the recipient certificate.
  const std::string other = write("other-doc", bytes_of(encode_text(milenage_doc("dev-b"))));
  r = run_command(seal_cmd + " --in " + other);
  EXPECT_EQ(r.status, 2) << r.output;

  const std::string open_cmd = mcim_binary() + " pki package open --recipient-key " +
                               pki().tre_a.key_file + " --recipient-cert " + pki().tre_a.pem +
                               " --ca-file " + pki().root_pem + " --out " + (pki().dir / "y");
  r = run_command(open_cmd);  // missing --in
  EXPECT_EQ(r.status, 2) << r.output;
  r = run_command(open_cmd + " --in " + write("empty", ByteVec{}));
  EXPECT_EQ(r.status, 2) << r.output;
  r = run_command(open_cmd + " --in " + pki().tre_a.pem);  // PEM certificate, not a package
  EXPECT_EQ(r.status, 2) << r.output;
  r = run_command(mcim_binary() + " pki package open --recipient-key " + pki().tre_a.pem +
                  " --recipient-cert " + pki().tre_a.pem + " --ca-file " + pki().root_pem +
                  " --in x --out y");  // a certificate where the key belongs
  EXPECT_EQ(r.status, 2) << r.output;
}

}  // namespace
}  // namespace mcim::pki
