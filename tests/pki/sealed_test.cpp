// The generic sealed-and-signed envelope (sealed.h): arbitrary content round trips, the relay's
// check without the recipient's key, wrong recipients, tampering, signer policies (EKU, purpose,
// URN prefix, size), the verified-path cache keyed by purpose, concurrent opens, and
// interoperability with `openssl cms -verify` / `-decrypt`.
#include "pki/sealed.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/file.h"
#include "pki/authority.h"
#include "pki/certificate.h"
#include "pki_test_util.h"

namespace mcim::pki {
namespace {

using testing::run_command;
using testing::TempDir;

const TimePoint kNow = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());

constexpr SignerPolicy kOperatorPolicy{.what = "envelope", .urn_prefix = "urn:mcim:operator:"};
constexpr SignerPolicy kSupplierPolicy{.what = "batch", .urn_prefix = "urn:mcim:supplier:"};

ByteVec bytes_of(std::string_view s) { return ByteVec(s.begin(), s.end()); }

struct Party {
  X509Ptr cert;
  PkeyPtr key;
  std::string pem, key_file;
};

// Root -> CA -> signers of several profiles; supplier root -> CA -> recipients (platform
// certificates, which carry keyAgreement) and a TLS server certificate (which does not).
class Pki {
 public:
  Pki() {
    SystemClock clock;
    OsRandom rng;
    root = make_ca("root", "Sealed Root", nullptr, clock, rng);
    ca = make_ca("ca", "Sealed CA", &*root, clock, rng);
    other_root = make_ca("other-root", "Other Root", nullptr, clock, rng);
    signer = issue(signing("URI:urn:mcim:operator:op-a"), "signer", clock, rng);
    supplier = issue(signing("URI:urn:mcim:supplier:sup-1"), "supplier", clock, rng);
    CertSpec no_urn = signing("URI:urn:example:nobody");
    unnamed = issue(no_urn, "unnamed", clock, rng);
    CertSpec tls = signing("URI:urn:mcim:operator:op-a");
    tls.profile = Profile::tls_client;
    tls_signer = issue(tls, "tls-signer", clock, rng);
    recipient_a = issue(platform("dev-a"), "rcpt-a", clock, rng);
    recipient_b = issue(platform("dev-b"), "rcpt-b", clock, rng);
    CertSpec server;
    server.profile = Profile::tls_server;
    server.subject = "CN=icf.example,O=RO";
    server.sans = {"DNS:icf.example"};
    tls_server = issue(server, "server", clock, rng);
    CertSpec enc;
    enc.profile = Profile::encryption;
    enc.subject = "CN=icf.ro-a batch key,O=RO A";
    enc.sans = {"URI:urn:mcim:operator:ro-a"};
    icf = issue(enc, "icf", clock, rng);
    root_pem = dir / "root/ca.pem";
    anchors.emplace(*TrustAnchors::from_file(root_pem));
  }

  SealSigner signer_of(const Party& p) const { return {p.cert.get(), p.key.get(), {ca->cert()}}; }

  TempDir dir;
  std::optional<Authority> root, ca, other_root;
  Party signer, supplier, unnamed, tls_signer, recipient_a, recipient_b, tls_server, icf;
  std::string root_pem;
  std::optional<TrustAnchors> anchors;

 private:
  std::optional<Authority> make_ca(const std::string& d, const std::string& name,
                                   const Authority* parent, const Clock& clock, RandomSource& rng) {
    auto a = Authority::create(dir / d, name, parent, 3650, "", clock, rng);
    EXPECT_TRUE(a.has_value()) << a.error().message;
    return std::move(*a);
  }
  static CertSpec signing(const std::string& san) {
    CertSpec s;
    s.profile = Profile::package_signing;
    s.subject = "CN=sealed signer,O=mcim";
    s.sans = {san};
    return s;
  }
  static CertSpec platform(const std::string& device) {
    CertSpec s;
    s.profile = Profile::platform;
    s.subject = "CN=" + device + ",O=supplier";
    s.device_id = device;
    s.model = "m1";
    return s;
  }
  Party issue(const CertSpec& spec, const std::string& name, const Clock& clock,
              RandomSource& rng) {
    auto issued = ca->issue(spec, clock, rng);
    EXPECT_TRUE(issued.has_value()) << issued.error().message;
    Party p{std::move(issued->cert), std::move(issued->key), dir / (name + ".pem"),
            dir / (name + ".key")};
    EXPECT_TRUE(write_certificate(p.pem, p.cert.get()).has_value());
    EXPECT_TRUE(write_private_key(p.key_file, p.key.get()).has_value());
    return p;
  }
};

class SealedTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new Pki(); }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }
  static Pki& pki() { return *pki_; }
  const TrustAnchors& anchors() const { return *pki_->anchors; }

  ByteVec seal(ByteView content, const Party& signer, const Party& recipient) {
    auto s = seal_signed(content, pki().signer_of(signer), recipient.cert.get());
    EXPECT_TRUE(s.has_value()) << s.error().message;
    return s ? *s : ByteVec();
  }
  Result<OpenedEnvelope> open(ByteView der, const Party& recipient,
                              const SignerPolicy& policy = kOperatorPolicy) {
    return open_sealed(der, recipient.cert.get(), recipient.key.get(), anchors(), clock_, policy);
  }
  std::string write(const std::string& name, ByteView data) {
    const std::string path = pki().dir / name;
    EXPECT_TRUE(write_file_atomic(path, data).has_value());
    return path;
  }

  FakeClock clock_{kNow};
  static Pki* pki_;
};

Pki* SealedTest::pki_ = nullptr;

template <class T>
void expect_code(const Result<T>& r, ErrorCode code, const std::string& what = "") {
  ASSERT_FALSE(r.has_value()) << what;
  EXPECT_EQ(r.error().code, code) << what << ": " << r.error().message;
}

// ---------------------------------------------------------------------------------------------
// Round trips

TEST_F(SealedTest, ArbitraryContentRoundTrips) {
  ByteVec all_bytes;
  for (int i = 0; i < 256; ++i) all_bytes.push_back(static_cast<std::uint8_t>(i));
  const ByteVec contents[] = {ByteVec{}, ByteVec{0}, bytes_of("hello\r\n"), all_bytes,
                              ByteVec(40000, 0xa5)};
  for (const ByteVec& content : contents) {
    const ByteVec der = seal(content, pki().signer, pki().recipient_a);
    auto opened = open(der, pki().recipient_a);
    ASSERT_TRUE(opened.has_value()) << content.size() << ": " << opened.error().message;
    EXPECT_EQ(ByteVec(opened->content.view().begin(), opened->content.view().end()), content);
    EXPECT_EQ(opened->signer.signer_id, "op-a");
    EXPECT_EQ(X509_cmp(opened->signer.signer.get(), pki().signer.cert.get()), 0);
    EXPECT_EQ(opened->signer.chain.size(), 3u);
    EXPECT_EQ(opened->signer.verified_at, kNow);
  }
}

TEST_F(SealedTest, ContentIsEncrypted) {
  const std::string secret = "a secret that must not appear in the envelope";
  const ByteVec der = seal(bytes_of(secret), pki().signer, pki().recipient_a);
  EXPECT_EQ(std::string(der.begin(), der.end()).find("must not appear"), std::string::npos);
}

TEST_F(SealedTest, LargeContentNeedsALargerPolicyLimit) {
  const ByteVec content(200 * 1024, 0x42);
  const ByteVec der = seal(content, pki().signer, pki().recipient_a);
  expect_code(open(der, pki().recipient_a), ErrorCode::bad_format, "default 64 KiB limit");
  SignerPolicy large = kOperatorPolicy;
  large.max_size = 1024 * 1024;
  auto opened = open(der, pki().recipient_a, large);
  ASSERT_TRUE(opened.has_value()) << opened.error().message;
  EXPECT_EQ(opened->content.view().size(), content.size());
}

TEST_F(SealedTest, RelayVerifiesWithoutTheRecipientKey) {
  const ByteVec der = seal(bytes_of("relay me"), pki().signer, pki().recipient_a);
  auto info = verify_sealed_signature(der, anchors(), clock_, kOperatorPolicy);
  ASSERT_TRUE(info.has_value()) << info.error().message;
  EXPECT_EQ(info->signer_id, "op-a");
  EXPECT_GE(info->sealed.data(), der.data());
  EXPECT_LE(info->sealed.data() + info->sealed.size(), der.data() + der.size());
  // The inner part alone is not an envelope.
  expect_code(verify_sealed_signature(info->sealed, anchors(), clock_, kOperatorPolicy),
              ErrorCode::bad_format, "inner");
}

// ---------------------------------------------------------------------------------------------
// Recipients

TEST_F(SealedTest, WrongRecipientIsRefused) {
  const ByteVec der = seal(bytes_of("for a"), pki().signer, pki().recipient_a);
  expect_code(open(der, pki().recipient_b), ErrorCode::wrong_recipient, "b's cert and key");
  expect_code(open_sealed(der, pki().recipient_a.cert.get(), pki().recipient_b.key.get(), anchors(),
                          clock_, kOperatorPolicy),
              ErrorCode::wrong_recipient, "a's cert, b's key");
  expect_code(
      open_sealed(der, nullptr, pki().recipient_a.key.get(), anchors(), clock_, kOperatorPolicy),
      ErrorCode::missing_argument, "no cert");
}

TEST_F(SealedTest, SealRefusesBadInputs) {
  const ByteVec content = bytes_of("x");
  const SealSigner good = pki().signer_of(pki().signer);
  expect_code(seal_signed(content, good, nullptr), ErrorCode::missing_argument, "no recipient");
  expect_code(seal_signed(content, SealSigner{}, pki().recipient_a.cert.get()),
              ErrorCode::missing_argument, "no signer");
  SealSigner mismatched = good;
  mismatched.key = pki().supplier.key.get();
  expect_code(seal_signed(content, mismatched, pki().recipient_a.cert.get()),
              ErrorCode::invalid_argument, "key of another certificate");
  // A TLS server certificate's key usage is digitalSignature only: no ECDH to it.
  auto r = seal_signed(content, good, pki().tls_server.cert.get());
  expect_code(r, ErrorCode::invalid_argument, "no keyAgreement");
  EXPECT_NE(r.error().message.find("keyAgreement"), std::string::npos);
}

// The encryption profile (keyAgreement only, no EKU) is what a recipient needs: a supplier's
// batch to the ICF opens with its key and with `openssl cms -decrypt`, and not with a TRE's.
TEST_F(SealedTest, EncryptionProfileRecipientOpens) {
  const ByteVec content = bytes_of("{\"type\":\"mcim-pcid-batch/1\"}");
  auto sealed = seal_signed(content, pki().signer_of(pki().supplier), pki().icf.cert.get());
  ASSERT_TRUE(sealed.has_value()) << sealed.error().message;
  auto opened = open(*sealed, pki().icf, kSupplierPolicy);
  ASSERT_TRUE(opened.has_value()) << opened.error().message;
  EXPECT_EQ(opened->content.text(), "{\"type\":\"mcim-pcid-batch/1\"}");
  EXPECT_EQ(opened->signer.signer_id, "sup-1");
  expect_code(open(*sealed, pki().recipient_a, kSupplierPolicy), ErrorCode::wrong_recipient,
              "a TRE's key");

  auto info = verify_sealed_signature(*sealed, anchors(), clock_, kSupplierPolicy);
  ASSERT_TRUE(info.has_value()) << info.error().message;
  const std::string inner = write("icf-inner.der", info->sealed);
  const std::string out = pki().dir / "icf.out";
  const auto decrypt =
      run_command("openssl cms -decrypt -binary -inform DER -in " + inner + " -recip " +
                  pki().icf.pem + " -inkey " + pki().icf.key_file + " -out " + out);
  ASSERT_EQ(decrypt.status, 0) << decrypt.output;
  EXPECT_EQ(*read_file(out), content);
}

// ---------------------------------------------------------------------------------------------
// Tampering

TEST_F(SealedTest, EveryChangedByteIsRefused) {
  const ByteVec der = seal(bytes_of("tamper with me"), pki().signer, pki().recipient_a);
  auto recipient =
      SealedRecipient::create(pki().recipient_a.cert.get(), pki().recipient_a.key.get());
  ASSERT_TRUE(recipient.has_value());
  ASSERT_TRUE(open_sealed(der, *recipient, anchors(), clock_, kOperatorPolicy).has_value());
  std::map<ErrorCode, int> seen;
  for (std::size_t i = 0; i < der.size(); ++i) {
    for (int mask : {0x01, 0x80}) {
      ByteVec bad = der;
      bad[i] ^= static_cast<std::uint8_t>(mask);
      auto r = open_sealed(bad, *recipient, anchors(), clock_, kOperatorPolicy);
      ASSERT_FALSE(r.has_value()) << "byte " << i << " accepted";
      const ErrorCode c = r.error().code;
      EXPECT_TRUE(c == ErrorCode::package_tampered || c == ErrorCode::signature_invalid ||
                  c == ErrorCode::bad_format || c == ErrorCode::chain_invalid)
          << "byte " << i << ": " << r.error().wire_code() << ": " << r.error().message;
      ++seen[c];
    }
  }
  EXPECT_GT(seen[ErrorCode::bad_format], 0);
  EXPECT_GT(seen[ErrorCode::package_tampered], 0);
  EXPECT_GT(seen[ErrorCode::signature_invalid], 0);
}

TEST_F(SealedTest, TruncatedOrExtendedIsBadFormat) {
  const ByteVec der = seal(bytes_of("whole"), pki().signer, pki().recipient_a);
  for (std::size_t n = 0; n < der.size(); n += 11) {
    expect_code(open(ByteView(der.data(), n), pki().recipient_a), ErrorCode::bad_format,
                "truncated");
  }
  ByteVec longer = der;
  longer.push_back(0);
  expect_code(open(longer, pki().recipient_a), ErrorCode::bad_format, "trailing byte");
}

// ---------------------------------------------------------------------------------------------
// Signer policies

TEST_F(SealedTest, SignerNeedsThePolicysEku) {
  const ByteVec der = seal(bytes_of("x"), pki().tls_signer, pki().recipient_a);
  auto r = open(der, pki().recipient_a);
  expect_code(r, ErrorCode::chain_invalid, "clientAuth EKU");
  EXPECT_NE(r.error().message.find("emailProtection"), std::string::npos) << r.error().message;
  // A policy asking for clientAuth accepts the EKU, but then the path must fit its purpose too.
  SignerPolicy client = kOperatorPolicy;
  client.eku = SignerEku::client_auth;
  client.purpose = Purpose::tls_client;
  client.profile = "tls-client";
  auto ok = open(der, pki().recipient_a, client);
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  EXPECT_EQ(ok->signer.signer_id, "op-a");
}

TEST_F(SealedTest, SignerNeedsThePolicysUrn) {
  const ByteVec unnamed = seal(bytes_of("x"), pki().unnamed, pki().recipient_a);
  auto r = open(unnamed, pki().recipient_a);
  expect_code(r, ErrorCode::chain_invalid, "no operator URN");
  EXPECT_NE(r.error().message.find("names no operator (SAN URI urn:mcim:operator:<id>)"),
            std::string::npos)
      << r.error().message;
  // An operator's signer is no supplier, and a supplier's no operator.
  const ByteVec by_operator = seal(bytes_of("x"), pki().signer, pki().recipient_a);
  r = open(by_operator, pki().recipient_a, kSupplierPolicy);
  expect_code(r, ErrorCode::chain_invalid, "operator under supplier policy");
  EXPECT_NE(r.error().message.find("names no supplier"), std::string::npos) << r.error().message;
  const ByteVec by_supplier = seal(bytes_of("x"), pki().supplier, pki().recipient_a);
  expect_code(open(by_supplier, pki().recipient_a), ErrorCode::chain_invalid,
              "supplier under operator policy");
  auto ok = open(by_supplier, pki().recipient_a, kSupplierPolicy);
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  EXPECT_EQ(ok->signer.signer_id, "sup-1");
  // A policy without a prefix accepts nobody.
  SignerPolicy none = kOperatorPolicy;
  none.urn_prefix = "";
  expect_code(open(by_operator, pki().recipient_a, none), ErrorCode::chain_invalid, "no prefix");
}

TEST_F(SealedTest, SignerMustChainToTheAnchors) {
  const ByteVec der = seal(bytes_of("x"), pki().signer, pki().recipient_a);
  auto other = TrustAnchors::from_certs({pki().other_root->cert()});
  ASSERT_TRUE(other.has_value());
  expect_code(open_sealed(der, pki().recipient_a.cert.get(), pki().recipient_a.key.get(), *other,
                          clock_, kOperatorPolicy),
              ErrorCode::chain_invalid, "other anchors");
  clock_.set(kNow + std::chrono::days(400));  // the signer's certificate lasts 365 days
  expect_code(open(der, pki().recipient_a), ErrorCode::cert_expired, "expired signer");
}

// A path accepted under one purpose is not answered from the cache under another.
TEST_F(SealedTest, PathCacheIsKeyedByPurpose) {
  const ByteVec der = seal(bytes_of("x"), pki().signer, pki().recipient_a);
  SignerPolicy server = kOperatorPolicy;
  server.purpose = Purpose::tls_server;
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(verify_sealed_signature(der, anchors(), clock_, kOperatorPolicy).has_value());
    expect_code(verify_sealed_signature(der, anchors(), clock_, server), ErrorCode::chain_invalid,
                "serverAuth purpose");
  }
}

TEST_F(SealedTest, ConcurrentOpensAgree) {
  const ByteVec der = seal(bytes_of("concurrent"), pki().signer, pki().recipient_a);
  const ByteVec sup = seal(bytes_of("concurrent"), pki().supplier, pki().recipient_a);
  ByteVec bad = der;
  bad[bad.size() - 80] ^= 0x04;
  auto recipient =
      SealedRecipient::create(pki().recipient_a.cert.get(), pki().recipient_a.key.get());
  ASSERT_TRUE(recipient.has_value());
  std::atomic<int> opened{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 40; ++i) {
        if (open_sealed(der, *recipient, anchors(), clock_, kOperatorPolicy).has_value()) ++opened;
        if (open_sealed(sup, *recipient, anchors(), clock_, kSupplierPolicy).has_value()) ++opened;
        if (!open_sealed(bad, *recipient, anchors(), clock_, kOperatorPolicy).has_value()) {
          ++refused;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(opened.load(), 320);
  EXPECT_EQ(refused.load(), 160);
}

// ---------------------------------------------------------------------------------------------
// openssl interoperability

TEST_F(SealedTest, OpensslVerifiesAndDecryptsWhatSealSignedMakes) {
  ByteVec content = bytes_of("{\"type\":\"interop\"}\n");
  for (int i = 0; i < 256; ++i) content.push_back(static_cast<std::uint8_t>(i));
  const std::string der = write("interop.der", seal(content, pki().signer, pki().recipient_a));
  const std::string inner = pki().dir / "interop-inner.der", out = pki().dir / "interop.out";
  const auto verify = run_command("openssl cms -verify -binary -inform DER -in " + der +
                                  " -CAfile " + pki().root_pem + " -out " + inner);
  ASSERT_EQ(verify.status, 0) << verify.output;
  const auto decrypt =
      run_command("openssl cms -decrypt -binary -inform DER -in " + inner + " -recip " +
                  pki().recipient_a.pem + " -inkey " + pki().recipient_a.key_file + " -out " + out);
  ASSERT_EQ(decrypt.status, 0) << decrypt.output;
  EXPECT_EQ(*read_file(out), content);
  const auto dump = run_command("openssl cms -cmsout -print -inform DER -in " + inner);
  ASSERT_EQ(dump.status, 0) << dump.output;
  EXPECT_NE(dump.output.find("id-smime-ct-authEnvelopedData"), std::string::npos);
  EXPECT_NE(dump.output.find("dhSinglePass-stdDH-sha256kdf-scheme"), std::string::npos);
  EXPECT_NE(dump.output.find("aes-256-gcm"), std::string::npos);
  // The other recipient's key cannot decrypt it.
  const auto other = run_command("openssl cms -decrypt -binary -inform DER -in " + inner +
                                 " -recip " + pki().recipient_b.pem + " -inkey " +
                                 pki().recipient_b.key_file + " -out " + out + ".b");
  EXPECT_NE(other.status, 0);
}

TEST_F(SealedTest, EnvelopeMadeByOpensslOpens) {
  const std::string plain = write("ossl-plain", bytes_of("made by openssl"));
  const std::string inner = pki().dir / "ossl-inner.der", der = pki().dir / "ossl.der";
  const auto enc =
      run_command("openssl cms -encrypt -binary -aes-256-gcm -recip " + pki().recipient_a.pem +
                  " -keyopt ecdh_kdf_md:sha256 -in " + plain + " -outform DER -out " + inner);
  ASSERT_EQ(enc.status, 0) << enc.output;
  const auto sig =
      run_command("openssl cms -sign -binary -nodetach -md sha256 -signer " + pki().supplier.pem +
                  " -inkey " + pki().supplier.key_file + " -certfile " + (pki().dir / "ca/ca.pem") +
                  " -in " + inner + " -outform DER -out " + der);
  ASSERT_EQ(sig.status, 0) << sig.output;
  auto opened = open(*read_file(der), pki().recipient_a, kSupplierPolicy);
  ASSERT_TRUE(opened.has_value()) << opened.error().message;
  EXPECT_EQ(opened->content.text(), "made by openssl");
  EXPECT_EQ(opened->signer.signer_id, "sup-1");
}

}  // namespace
}  // namespace mcim::pki
