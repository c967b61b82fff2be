// The supplier bundle (F0, docs/tre.md "Supplier bundle"): its JSON encoding round-trips every
// field, the strict decoder names the field it refuses (never the value), random corruption
// never crashes it nor yields an inconsistent bundle, and manufacture() derives OPc from K and
// the RO's OP and certifies a fresh platform key under the supplier CA.
#include "tre/bundle.h"

#include <gtest/gtest.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../pki/pki_test_util.h"
#include "aka/milenage.h"
#include "common/file.h"
#include "common/hex.h"
#include "pki/certificate.h"
#include "pki/signed_json.h"
#include "pki/verify.h"

namespace mcim::tre {
namespace {

using nlohmann::json;
using pki::testing::TempDir;

constexpr Bytes<16> kOp = {0xcd, 0xc2, 0x02, 0xd5, 0x12, 0x3e, 0x20, 0xf6,
                           0x2b, 0x6d, 0x67, 0x6a, 0xc7, 0x2c, 0xb3, 0x18};
const TimePoint kNow =
    std::chrono::sys_days(std::chrono::year{2026} / 3 / 1) + std::chrono::hours(9);

std::string text_of(const SecretBytes& s) { return std::string(s.text()); }
ByteView view_of(const std::string& s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}
std::string pin_of(const SupplierBundle& b) {
  return std::string(pin_text(b));
}

// CAs are slow to make (key generation, fsync): one set for the whole suite.
struct Pki {
  TempDir dir;
  std::optional<pki::Authority> supplier_root, supplier, operator_root, other_root;
};

class BundleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_ = new Pki;
    FakeClock clock(kNow);
    OsRandom rng;
    auto root = pki::Authority::create(pki_->dir / "supplier-root", "Supplier Root", nullptr, 7300,
                                       "", clock, rng);
    ASSERT_TRUE(root) << root.error().message;
    pki_->supplier_root.emplace(std::move(*root));
    auto sub = pki::Authority::create(pki_->dir / "supplier", "Supplier CA", &*pki_->supplier_root,
                                      3650, "", clock, rng);
    ASSERT_TRUE(sub) << sub.error().message;
    pki_->supplier.emplace(std::move(*sub));
    for (auto [slot, name] :
         {std::pair{&pki_->operator_root, "RO Root"}, std::pair{&pki_->other_root, "SHO Root"}}) {
      auto r = pki::Authority::create(pki_->dir / name, name, nullptr, 3650, "", clock, rng);
      ASSERT_TRUE(r) << r.error().message;
      slot->emplace(std::move(*r));
    }
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  ManufactureSpec spec() const {
    ManufactureSpec s;
    s.pcid = "001010123456789";
    s.ro_operator = "ro.example";
    s.op = Secret<16>(kOp);
    s.operator_roots = {pki_->operator_root->cert(), pki_->other_root->cert()};
    s.ocsp_url = "http://127.0.0.1:9/ocsp";
    return s;
  }
  SupplierBundle make(const ManufactureSpec& s) {
    auto b = manufacture(*pki_->supplier, s, clock_, rng_);
    EXPECT_TRUE(b) << b.error().message;
    return b ? std::move(*b) : SupplierBundle{};
  }
  SupplierBundle make() { return make(spec()); }
  std::string encoded(const SupplierBundle& b) {
    auto e = encode_bundle(b);
    EXPECT_TRUE(e) << e.error().message;
    return e ? text_of(*e) : std::string();
  }
  static std::string pem(X509* cert) { return pki::certificate_pem(cert).value_or(""); }

  static Pki* pki_;
  FakeClock clock_{kNow};
  OsRandom rng_;
};

Pki* BundleTest::pki_ = nullptr;

void expect_same(const SupplierBundle& a, const SupplierBundle& b) {
  EXPECT_EQ(a.device_id, b.device_id);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.pcid, b.pcid);
  EXPECT_EQ(a.k.get(), b.k.get());
  EXPECT_EQ(a.opc.get(), b.opc.get());
  EXPECT_EQ(a.ind_bits, b.ind_bits);
  EXPECT_EQ(a.ro_operator, b.ro_operator);
  EXPECT_EQ(a.pcid_not_after, b.pcid_not_after);
  EXPECT_EQ(pin_of(a), pin_of(b));
  EXPECT_EQ(EVP_PKEY_eq(a.platform_key.get(), b.platform_key.get()), 1);
  ASSERT_EQ(a.platform_chain.size(), b.platform_chain.size());
  for (std::size_t i = 0; i < a.platform_chain.size(); ++i) {
    EXPECT_EQ(pki::certificate_der(a.platform_chain[i].get()),
              pki::certificate_der(b.platform_chain[i].get()));
  }
  ASSERT_EQ(a.operator_roots.size(), b.operator_roots.size());
  for (std::size_t i = 0; i < a.operator_roots.size(); ++i) {
    EXPECT_EQ(pki::certificate_der(a.operator_roots[i].get()),
              pki::certificate_der(b.operator_roots[i].get()));
  }
}

// ---- Encoding ----------------------------------------------------------------------------------

TEST_F(BundleTest, RoundTripKeepsEveryField) {
  SupplierBundle original = make();
  original.ind_bits = 7;
  const std::string text = encoded(original);
  auto decoded = decode_bundle(view_of(text));
  ASSERT_TRUE(decoded) << decoded.error().message;
  expect_same(original, *decoded);
  // Private key equality, not only the public half: the PKCS#8 encodings match.
  EXPECT_EQ(pki::private_key_pem(original.platform_key.get()).value_or("a"),
            pki::private_key_pem(decoded->platform_key.get()).value_or("b"));
  // Encoding is deterministic: decode then encode gives the same bytes.
  EXPECT_EQ(encoded(*decoded), text);
  // A file's one trailing newline is accepted.
  EXPECT_TRUE(decode_bundle(view_of(text + "\n")));
}

TEST_F(BundleTest, EncodingIsSortedJsonWithTheDocumentedMembers) {
  const SupplierBundle b = make();
  const std::string text = encoded(b);
  const json j = json::parse(text);
  EXPECT_EQ(j.dump(), text);  // sorted keys, no whitespace: canonical
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys,
            (std::vector<std::string>{"device_id", "ind_bits", "k", "model", "opc",
                                      "operator_roots", "pcid", "pcid_not_after", "pin",
                                      "platform_chain", "platform_key", "ro_operator", "type"}));
  EXPECT_EQ(j["type"], "mcim-supplier-bundle/1");
  EXPECT_EQ(j["k"], to_hex(b.k.get()));
  EXPECT_EQ(j["opc"], to_hex(b.opc.get()));
  EXPECT_EQ(j["pin"], pin_of(b));
  EXPECT_EQ(j["pcid_not_after"], pki::utc_seconds(b.pcid_not_after));
  EXPECT_EQ(j["ind_bits"], 5);
  EXPECT_EQ(j["platform_chain"].size(), 2u);
  EXPECT_EQ(j["platform_chain"][0], pem(b.platform_chain[0].get()));
  EXPECT_EQ(j["operator_roots"][1], pem(pki_->other_root->cert()));
  EXPECT_TRUE(j["platform_key"].get<std::string>().starts_with("-----BEGIN PRIVATE KEY-----\n"));
}

TEST_F(BundleTest, EncodeRefusesAnInvalidBundle) {
  SupplierBundle b = make();
  b.pcid = "12ab";
  auto e = encode_bundle(b);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(e.error().message.find("pcid"), std::string::npos) << e.error().message;
}

// ---- Strict decoding ---------------------------------------------------------------------------

struct BadCase {
  std::string name;
  std::function<void(json&)> mutate;
  std::string field;  // what the message must name
};

TEST_F(BundleTest, DecodeRefusesEachBadFieldNamingIt) {
  const SupplierBundle b = make();
  const std::string text = encoded(b);
  const json valid = json::parse(text);
  const std::string leaf = pem(b.platform_chain[0].get());
  const std::string intermediate = pem(b.platform_chain[1].get());
  const std::string root = pem(pki_->operator_root->cert());
  const std::string key = valid["platform_key"];
  auto other_key = pki::generate_p256_key();
  ASSERT_TRUE(other_key);
  const std::string wrong_key = pki::private_key_pem(other_key->get()).value();
  const std::string k_hex = valid["k"], opc_hex = valid["opc"], pin = valid["pin"];

  const auto set = [](const char* name, json value) {
    return [name, value](json& j) { j[name] = value; };
  };
  std::vector<BadCase> cases = {
      {"unknown member", set("extra", 1), "unknown field \"extra\""},
      {"type", set("type", "mcim-supplier-bundle/2"), "bundle.type"},
      {"type not string", set("type", 1), "bundle.type"},
      {"device_id number", set("device_id", 5), "bundle.device_id"},
      {"device_id empty", set("device_id", ""), "bundle.device_id"},
      {"device_id space", set("device_id", "dev 1"), "bundle.device_id"},
      {"device_id not the certificate's", set("device_id", "dev-other"), "bundle.device_id"},
      {"model empty", set("model", ""), "bundle.model"},
      {"model not the certificate's", set("model", "other-model"), "bundle.model"},
      {"pcid short", set("pcid", "12345"), "bundle.pcid"},
      {"pcid long", set("pcid", "1234567890123456"), "bundle.pcid"},
      {"pcid letters", set("pcid", "00101012345678a"), "bundle.pcid"},
      {"pcid number", set("pcid", 1234567), "bundle.pcid"},
      {"k short", set("k", k_hex.substr(2)), "bundle.k"},
      {"k long", set("k", k_hex + "00"), "bundle.k"},
      {"k uppercase", set("k", std::string(32, 'A')), "bundle.k"},
      {"k not hex", set("k", std::string(32, 'g')), "bundle.k"},
      {"k number", set("k", 7), "bundle.k"},
      {"opc short", set("opc", opc_hex.substr(1)), "bundle.opc"},
      {"opc null", set("opc", nullptr), "bundle.opc"},
      {"ind_bits too large", set("ind_bits", 11), "bundle.ind_bits"},
      {"ind_bits negative", set("ind_bits", -1), "bundle.ind_bits"},
      {"ind_bits string", set("ind_bits", "5"), "bundle.ind_bits"},
      {"ind_bits fraction", set("ind_bits", 2.5), "bundle.ind_bits"},
      {"ro_operator empty", set("ro_operator", ""), "bundle.ro_operator"},
      {"ro_operator quote", set("ro_operator", "ro\"x"), "bundle.ro_operator"},
      {"pcid_not_after negative", set("pcid_not_after", -1), "bundle.pcid_not_after"},
      {"pcid_not_after text", set("pcid_not_after", "2030-01-01"), "bundle.pcid_not_after"},
      {"pcid_not_after past 9999", set("pcid_not_after", 253402300800ULL), "bundle.pcid_not_after"},
      {"pin short", set("pin", "123"), "bundle.pin"},
      {"pin long", set("pin", std::string(17, '1')), "bundle.pin"},
      {"pin letters", set("pin", "12a4"), "bundle.pin"},
      {"pin number", set("pin", 1234), "bundle.pin"},
      {"platform_key junk", set("platform_key", "junk"), "bundle.platform_key"},
      {"platform_key not PEM", set("platform_key", std::string(64, 'A')), "bundle.platform_key"},
      {"platform_key a certificate", set("platform_key", leaf), "bundle.platform_key"},
      {"platform_key two blocks", set("platform_key", key + wrong_key), "bundle.platform_key"},
      {"platform_key bad base64",
       set("platform_key", "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n"),
       "bundle.platform_key"},
      {"platform_key not the certificate's", set("platform_key", wrong_key), "bundle.platform_key"},
      {"platform_key array", set("platform_key", json::array()), "bundle.platform_key"},
      {"platform_chain empty", set("platform_chain", json::array()), "bundle.platform_chain"},
      {"platform_chain not array", set("platform_chain", leaf), "bundle.platform_chain"},
      {"platform_chain junk", set("platform_chain", json::array({"junk"})),
       "bundle.platform_chain[0]"},
      {"platform_chain number", set("platform_chain", json::array({leaf, 3})),
       "bundle.platform_chain[1]"},
      {"platform_chain too long",
       set("platform_chain", json::array({leaf, intermediate, intermediate, intermediate,
                                          intermediate, intermediate})),
       "bundle.platform_chain"},
      {"platform_chain wrong issuer", set("platform_chain", json::array({leaf, root})),
       "bundle.platform_chain[1]"},
      {"platform_chain a key", set("platform_chain", json::array({key})),
       "bundle.platform_chain[0]"},
      {"operator_roots empty", set("operator_roots", json::array()), "bundle.operator_roots"},
      {"operator_roots object", set("operator_roots", json::object()), "bundle.operator_roots"},
      {"operator_roots a leaf", set("operator_roots", json::array({root, leaf})),
       "bundle.operator_roots[1]"},
      {"operator_roots an intermediate", set("operator_roots", json::array({intermediate})),
       "bundle.operator_roots[0]"},
  };
  for (const char* member :
       {"device_id", "ind_bits", "k", "model", "opc", "operator_roots", "pcid", "pcid_not_after",
        "pin", "platform_chain", "platform_key", "ro_operator", "type"}) {
    cases.push_back({std::string("missing ") + member, [member](json& j) { j.erase(member); },
                     std::string("bundle.") + member});
  }
  for (const auto& c : cases) {
    json j = valid;
    c.mutate(j);
    const std::string bad = j.dump();
    auto r = decode_bundle(view_of(bad));
    ASSERT_FALSE(r) << c.name;
    EXPECT_EQ(r.error().code, ErrorCode::bad_format) << c.name;
    EXPECT_NE(r.error().message.find(c.field), std::string::npos)
        << c.name << ": " << r.error().message;
    for (const std::string& secret : {k_hex, opc_hex, pin}) {
      EXPECT_EQ(r.error().message.find(secret), std::string::npos) << c.name;
    }
  }
}

TEST_F(BundleTest, DecodeRefusesWhatIsNotABundleObject) {
  for (const std::string& text :
       {std::string(), std::string("["), std::string("[1]"), std::string("\"x\""),
        std::string("{\"type\":\"mcim-supplier-bundle/1\"}"), std::string(300 << 10, ' ')}) {
    auto r = decode_bundle(view_of(text));
    ASSERT_FALSE(r) << text.substr(0, 40);
    EXPECT_EQ(r.error().code, ErrorCode::bad_format);
    EXPECT_EQ(r.error().message.rfind("bundle", 0), 0u) << r.error().message;
  }
}

// Corrupt a valid encoding one byte at a time (and truncate it): never a crash, and whatever
// still decodes is a consistent bundle (a changed K digit cannot be noticed without a MAC).
TEST_F(BundleTest, RandomMutationsNeverCrashNorYieldAnInconsistentBundle) {
  const SupplierBundle b = make();
  const std::string text = encoded(b);
  std::mt19937 gen(20260301);
  std::uniform_int_distribution<std::size_t> pos(0, text.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  int decoded = 0;
  for (int i = 0; i < 1000; ++i) {
    std::string m = text;
    const int edits = 1 + i % 3;
    for (int e = 0; e < edits; ++e) m[pos(gen)] = static_cast<char>(byte(gen));
    if (i % 10 == 0) m.resize(pos(gen));
    auto r = decode_bundle(view_of(m));
    if (!r) {
      EXPECT_EQ(r.error().code, ErrorCode::bad_format) << r.error().message;
      continue;
    }
    ++decoded;
    EXPECT_TRUE(validate_bundle(*r)) << validate_bundle(*r).error().message;
  }
  // Most single-byte changes break the JSON, the PEM or a check; a few (a hex digit) do not.
  EXPECT_LT(decoded, 1000);
}

// ---- validate_bundle ---------------------------------------------------------------------------

TEST_F(BundleTest, ValidateAcceptsAManufacturedBundle) {
  const SupplierBundle b = make();
  EXPECT_TRUE(validate_bundle(b));
}

TEST_F(BundleTest, ValidateRefusesAKeyThatIsNotTheCertificates) {
  SupplierBundle b = make();
  b.platform_key = std::move(*pki::generate_p256_key());
  auto r = validate_bundle(b);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(r.error().message.find("platform_key"), std::string::npos) << r.error().message;
}

TEST_F(BundleTest, ValidateRefusesACertificateForAnotherDevice) {
  SupplierBundle b = make();
  pki::CertSpec s;
  s.profile = pki::Profile::platform;
  s.subject = "CN=dev-other";
  s.device_id = "dev-other";
  s.model = b.model;
  auto cert = pki_->supplier->issue_for_key(s, b.platform_key.get(), clock_, rng_);
  ASSERT_TRUE(cert);
  b.platform_chain[0] = std::move(*cert);
  auto r = validate_bundle(b);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("bundle.device_id"), std::string::npos) << r.error().message;
}

TEST_F(BundleTest, ValidateRefusesANonPlatformCertificate) {
  SupplierBundle b = make();
  pki::CertSpec s;
  s.profile = pki::Profile::tls_client;
  s.subject = "CN=" + b.device_id;
  s.sans = {"URI:urn:mcim:device:" + b.device_id, "URI:urn:mcim:model:" + b.model};
  auto cert = pki_->supplier->issue_for_key(s, b.platform_key.get(), clock_, rng_);
  ASSERT_TRUE(cert);
  b.platform_chain[0] = std::move(*cert);
  auto r = validate_bundle(b);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("bundle.platform_chain[0]: not a platform certificate"),
            std::string::npos)
      << r.error().message;
}

TEST_F(BundleTest, ValidateRefusesBadScalarsAndRoots) {
  const std::vector<std::pair<std::function<void(SupplierBundle&)>, std::string>> cases = {
      {[](SupplierBundle& b) { b.pin_size = 3; }, "bundle.pin"},
      {[](SupplierBundle& b) { b.pin_size = 17; }, "bundle.pin"},
      {[](SupplierBundle& b) { b.pin.mut()[0] = 'x'; }, "bundle.pin"},
      {[](SupplierBundle& b) { b.ind_bits = 11; }, "bundle.ind_bits"},
      {[](SupplierBundle& b) { b.pcid = "12345"; }, "bundle.pcid"},
      {[](SupplierBundle& b) { b.ro_operator = "ro x"; }, "bundle.ro_operator"},
      {[](SupplierBundle& b) { b.model = ""; }, "bundle.model"},
      {[](SupplierBundle& b) {
         b.pcid_not_after = std::chrono::sys_seconds(-std::chrono::seconds(1));
       },
       "bundle.pcid_not_after"},
      {[](SupplierBundle& b) { b.operator_roots.clear(); }, "bundle.operator_roots"},
      {[](SupplierBundle& b) {
         b.operator_roots.push_back(pki::up_ref(b.platform_chain[0].get()));
       },
       "bundle.operator_roots[2]"},
      {[](SupplierBundle& b) { b.platform_chain.clear(); }, "bundle.platform_chain"},
      {[](SupplierBundle& b) {
         b.platform_chain.pop_back();
         b.platform_chain.push_back(pki::up_ref(pki_->other_root->cert()));
       },
       "bundle.platform_chain[1]"},
      {[](SupplierBundle& b) { b.platform_key.reset(); }, "bundle.platform_key"},
  };
  for (const auto& [mutate, field] : cases) {
    SupplierBundle b = make();
    mutate(b);
    auto r = validate_bundle(b);
    ASSERT_FALSE(r) << field;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << field;
    EXPECT_NE(r.error().message.find(field), std::string::npos) << r.error().message;
  }
}

// ---- Files -------------------------------------------------------------------------------------

TEST_F(BundleTest, WriteIsMode0600AndReadsBack) {
  TempDir d;
  const SupplierBundle b = make();
  ASSERT_TRUE(write_bundle(d / "bundle.json", b));
  struct stat st {};
  ASSERT_EQ(::stat((d / "bundle.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto back = read_bundle(d / "bundle.json");
  ASSERT_TRUE(back) << back.error().message;
  expect_same(b, *back);

  auto missing = read_bundle(d / "none.json");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
  ASSERT_TRUE(write_file_atomic(d / "cut.json", encoded(b).substr(0, 100), 0600));
  auto cut = read_bundle(d / "cut.json");
  ASSERT_FALSE(cut);
  EXPECT_EQ(cut.error().code, ErrorCode::bad_format);
  EXPECT_NE(cut.error().message.find(d / "cut.json"), std::string::npos) << cut.error().message;
}

// ---- manufacture -------------------------------------------------------------------------------

TEST_F(BundleTest, ManufactureDerivesOpcFromKAndTheRosOp) {
  const SupplierBundle b = make();
  EXPECT_EQ(b.opc.get(), aka::Milenage::compute_opc(b.k.get(), kOp));
  EXPECT_NE(b.k.get(), Bytes<16>{});
  // K is fresh per device.
  const SupplierBundle other = make();
  EXPECT_NE(b.k.get(), other.k.get());
  EXPECT_NE(b.opc.get(), other.opc.get());
  EXPECT_EQ(b.ind_bits, 5u);
  EXPECT_EQ(b.ro_operator, "ro.example");
}

TEST_F(BundleTest, ManufactureCertifiesAFreshPlatformKeyUnderTheSupplierCa) {
  const SupplierBundle b = make();
  ASSERT_EQ(b.platform_chain.size(), 2u);  // the leaf and the supplier intermediate, no root
  X509* leaf = b.platform_chain[0].get();
  EXPECT_EQ(pki::certificate_der(b.platform_chain[1].get()),
            pki::certificate_der(pki_->supplier->cert()));
  auto anchors = pki::TrustAnchors::from_certs({pki_->supplier_root->cert()});
  ASSERT_TRUE(anchors);
  auto chain = pki::verify_chain(*anchors, leaf, {b.platform_chain[1].get()}, clock_.now());
  ASSERT_TRUE(chain) << chain.error().message;
  EXPECT_EQ(chain->chain.size(), 3u);
  EXPECT_EQ(pki::platform_device_id(leaf), b.device_id);
  EXPECT_EQ(pki::platform_model(leaf), "mcim-sw-tre-1");
  EXPECT_EQ(X509_check_private_key(leaf, b.platform_key.get()), 1);
  EXPECT_TRUE(pki::is_p256(b.platform_key.get()));
  EXPECT_EQ(pki::not_after(leaf) - pki::not_before(leaf),
            std::chrono::days(3650) + std::chrono::minutes(1));
  // The OCSP URL is in AIA.
  STACK_OF(OPENSSL_STRING)* ocsp = X509_get1_ocsp(leaf);
  ASSERT_NE(ocsp, nullptr);
  EXPECT_EQ(std::string(sk_OPENSSL_STRING_value(ocsp, 0)), "http://127.0.0.1:9/ocsp");
  X509_email_free(ocsp);
  // Recorded in the CA's index, so it can be revoked and answered for by OCSP.
  auto found = pki_->supplier->find(pki::index_serial(leaf));
  ASSERT_TRUE(found);
  EXPECT_TRUE(found->has_value());
  // The PCID lifetime counts from now.
  EXPECT_EQ(b.pcid_not_after, pki::floor_seconds(kNow) + std::chrono::days(730));
  // Two devices never share a platform key.
  const SupplierBundle other = make();
  EXPECT_NE(EVP_PKEY_eq(b.platform_key.get(), other.platform_key.get()), 1);
}

TEST_F(BundleTest, ManufactureUnderARootSupplierCaCarriesTheLeafOnly) {
  auto b = manufacture(*pki_->supplier_root, spec(), clock_, rng_);
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->platform_chain.size(), 1u);
  EXPECT_TRUE(validate_bundle(*b));
}

TEST_F(BundleTest, ManufactureDefaultsAndExplicitValues) {
  const SupplierBundle d = make();
  EXPECT_EQ(d.device_id, "dev-001010123456789");
  EXPECT_EQ(d.model, "mcim-sw-tre-1");
  const std::string pin = pin_of(d);
  EXPECT_EQ(pin.size(), 8u);
  EXPECT_EQ(pin.find_first_not_of("0123456789"), std::string::npos) << pin;

  ManufactureSpec s = spec();
  s.device_id = "meter-42";
  s.model = "meter-v2";
  s.pin = "0123456789012345";
  s.certificate_days = 30;
  s.pcid_days = 7;
  s.ocsp_url.clear();
  const SupplierBundle e = make(s);
  EXPECT_EQ(e.device_id, "meter-42");
  EXPECT_EQ(pki::platform_device_id(e.platform_chain[0].get()), "meter-42");
  EXPECT_EQ(pki::platform_model(e.platform_chain[0].get()), "meter-v2");
  EXPECT_EQ(pin_of(e), "0123456789012345");
  EXPECT_EQ(e.pcid_not_after, pki::floor_seconds(kNow) + std::chrono::days(7));
  EXPECT_EQ(X509_get1_ocsp(e.platform_chain[0].get()), nullptr);
}

// Eight digits each from rejection sampling: over 200 PINs every digit appears, about equally.
TEST_F(BundleTest, ManufacturePinsAreUniformDigits) {
  std::map<char, int> counts;
  for (int i = 0; i < 200; ++i) {
    const SupplierBundle b = make();
    ASSERT_EQ(b.pin_size, 8u);
    for (char c : pin_of(b)) ++counts[c];
  }
  ASSERT_EQ(counts.size(), 10u);
  for (const auto& [digit, n] : counts) {
    EXPECT_TRUE(digit >= '0' && digit <= '9') << digit;
    EXPECT_GT(n, 80) << digit;  // expected 160 of 1600
    EXPECT_LT(n, 240) << digit;
  }
}

TEST_F(BundleTest, ManufactureRefusesABadSpecBeforeIssuing) {
  const auto before = pki_->supplier->index();
  ASSERT_TRUE(before);
  using Mutate = std::function<void(ManufactureSpec&)>;
  const std::vector<std::tuple<Mutate, ErrorCode, std::string>> cases = {
      {[](ManufactureSpec& s) { s.pcid.clear(); }, ErrorCode::missing_argument, "pcid:"},
      {[](ManufactureSpec& s) { s.pcid = "12345"; }, ErrorCode::invalid_argument, "pcid:"},
      {[](ManufactureSpec& s) { s.pcid = "1234567890123456"; }, ErrorCode::invalid_argument,
       "pcid:"},
      {[](ManufactureSpec& s) { s.device_id = "a,b"; }, ErrorCode::invalid_argument, "device_id:"},
      {[](ManufactureSpec& s) { s.device_id = std::string(65, 'd'); }, ErrorCode::invalid_argument,
       "device_id:"},
      {[](ManufactureSpec& s) { s.model = "a b"; }, ErrorCode::invalid_argument, "model:"},
      {[](ManufactureSpec& s) { s.model.clear(); }, ErrorCode::missing_argument, "model:"},
      {[](ManufactureSpec& s) { s.ro_operator.clear(); }, ErrorCode::missing_argument,
       "ro_operator:"},
      {[](ManufactureSpec& s) { s.ro_operator = "r\\o"; }, ErrorCode::invalid_argument,
       "ro_operator:"},
      {[](ManufactureSpec& s) { s.pin = "123"; }, ErrorCode::invalid_argument, "pin:"},
      {[](ManufactureSpec& s) { s.pin = "12345678901234567"; }, ErrorCode::invalid_argument,
       "pin:"},
      {[](ManufactureSpec& s) { s.pin = "1234a"; }, ErrorCode::invalid_argument, "pin:"},
      {[](ManufactureSpec& s) { s.certificate_days = 0; }, ErrorCode::invalid_argument,
       "certificate_days:"},
      {[](ManufactureSpec& s) { s.pcid_days = 36501; }, ErrorCode::invalid_argument, "pcid_days:"},
      {[](ManufactureSpec& s) { s.ocsp_url = "ftp://x"; }, ErrorCode::invalid_argument,
       "ocsp_url:"},
      {[](ManufactureSpec& s) { s.ocsp_url = "http://a,b"; }, ErrorCode::invalid_argument,
       "ocsp_url:"},
      {[](ManufactureSpec& s) { s.operator_roots.clear(); }, ErrorCode::missing_argument,
       "operator_roots:"},
      {[](ManufactureSpec& s) { s.operator_roots.push_back(nullptr); }, ErrorCode::invalid_argument,
       "operator_roots[2]:"},
      {[](ManufactureSpec& s) { s.operator_roots = {pki_->supplier->cert()}; },
       ErrorCode::invalid_argument, "operator_roots[0]:"},
  };
  for (const auto& [mutate, code, prefix] : cases) {
    ManufactureSpec s = spec();
    mutate(s);
    auto r = manufacture(*pki_->supplier, s, clock_, rng_);
    ASSERT_FALSE(r) << prefix;
    EXPECT_EQ(r.error().code, code) << r.error().message;
    EXPECT_EQ(r.error().message.rfind(prefix, 0), 0u) << r.error().message;
  }
  const auto after = pki_->supplier->index();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->size(), before->size());  // nothing was certified
}

}  // namespace
}  // namespace mcim::tre
