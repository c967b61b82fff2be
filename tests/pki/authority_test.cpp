// The CA directory, certificate profiles and chain verification; every certificate is also
// accepted by `openssl verify`, and index.txt is what `openssl ca`/`openssl ocsp` expect.
#include "pki/authority.h"

#include <gtest/gtest.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include "common/file.h"
#include "pki/verify.h"
#include "pki_test_util.h"

namespace mcim::pki {
namespace {

using testing::run_command;
using testing::TempDir;

class AuthorityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Authority::create(dir_ / "root", "Test Root", nullptr, 3650, "", clock_, rng_);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    root_.emplace(std::move(*r));
    auto i = Authority::create(dir_ / "sub", "Test Supplier CA", &*root_, 1825,
                               "http://127.0.0.1:9999/ocsp", clock_, rng_);
    ASSERT_TRUE(i.has_value()) << i.error().message;
    sub_.emplace(std::move(*i));
  }

  CertSpec spec(Profile p) {
    CertSpec s;
    s.profile = p;
    s.subject = "CN=unit test,O=mcim";
    if (p == Profile::tls_server) s.sans = {"DNS:localhost", "IP:127.0.0.1"};
    if (p == Profile::platform) s.device_id = "dev-0001", s.model = "m2m-meter-v1";
    if (p == Profile::encryption) s.sans = {"URI:urn:mcim:operator:ro-a"};
    s.ocsp_url = "http://127.0.0.1:9999/ocsp";
    return s;
  }

  TempDir dir_;
  SystemClock clock_;
  OsRandom rng_;
  std::optional<Authority> root_, sub_;
};

TEST_F(AuthorityTest, DirectoryLayoutAndKeyMode) {
  for (const char* f : {"ca.pem", "ca.key", "chain.pem", "index.txt", "index.txt.attr"}) {
    EXPECT_EQ(::access((dir_ / ("sub/" + std::string(f))).c_str(), R_OK), 0) << f;
  }
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "sub/ca.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(sub_->chain().size(), 2u);
  auto again = Authority::create(dir_ / "root", "Other", nullptr, 10, "", clock_, rng_);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, ErrorCode::already_exists);
}

TEST_F(AuthorityTest, EveryProfileVerifiesHereAndWithOpensslVerify) {
  auto anchors = TrustAnchors::from_file(dir_ / "root/ca.pem");
  ASSERT_TRUE(anchors.has_value());
  for (Profile p :
       {Profile::platform, Profile::tls_server, Profile::tls_client, Profile::package_signing,
        Profile::ocsp_signing, Profile::result_signing, Profile::encryption}) {
    auto issued = sub_->issue(spec(p), clock_, rng_);
    ASSERT_TRUE(issued.has_value()) << to_string(p) << ": " << issued.error().message;
    const std::string pem = dir_ / (std::string(to_string(p)) + ".pem");
    ASSERT_TRUE(write_certificate(pem, issued->cert.get()).has_value());
    auto v = verify_chain(*anchors, issued->cert.get(), {sub_->cert()}, clock_.now());
    EXPECT_TRUE(v.has_value()) << to_string(p) << ": " << v.error().message;
    EXPECT_EQ(v->chain.size(), 3u);
    const auto r = run_command("openssl verify -x509_strict -CAfile " + (dir_ / "root/ca.pem") +
                               " -untrusted " + (dir_ / "sub/ca.pem") + " " + pem);
    EXPECT_EQ(r.status, 0) << to_string(p) << ": " << r.output;
  }
}

TEST_F(AuthorityTest, ExtensionsOfThePlatformProfile) {
  auto issued = sub_->issue(spec(Profile::platform), clock_, rng_);
  ASSERT_TRUE(issued.has_value());
  X509* c = issued->cert.get();
  EXPECT_EQ(platform_device_id(c), "dev-0001");
  EXPECT_EQ(platform_model(c), "m2m-meter-v1");
  EXPECT_EQ(X509_check_ca(c), 0);
  EXPECT_TRUE(X509_get_key_usage(c) & KU_KEY_AGREEMENT);
  EXPECT_TRUE(X509_get_key_usage(c) & KU_DIGITAL_SIGNATURE);
  EXPECT_NE(X509_get0_subject_key_id(c), nullptr);
  EXPECT_NE(X509_get0_authority_key_id(c), nullptr);
  auto* aia =
      static_cast<AUTHORITY_INFO_ACCESS*>(X509_get_ext_d2i(c, NID_info_access, nullptr, nullptr));
  ASSERT_NE(aia, nullptr);
  AUTHORITY_INFO_ACCESS_free(aia);
  EXPECT_EQ(X509_check_ca(sub_->cert()), 1);
}

// The ICF's batch key: ECDH only, for one operator, P-256 (docs/pki.md).
TEST_F(AuthorityTest, ExtensionsOfTheEncryptionProfile) {
  auto issued = sub_->issue(spec(Profile::encryption), clock_, rng_);
  ASSERT_TRUE(issued.has_value()) << issued.error().message;
  X509* c = issued->cert.get();
  EXPECT_EQ(X509_check_ca(c), 0);
  EXPECT_EQ(X509_get_key_usage(c), static_cast<std::uint32_t>(KU_KEY_AGREEMENT));
  EXPECT_EQ(X509_get_extension_flags(c) & EXFLAG_XKUSAGE, 0u);  // no EKU
  EXPECT_EQ(san_uri_with_prefix(c, "urn:mcim:operator:"), "ro-a");
  EXPECT_TRUE(is_p256(X509_get0_pubkey(c)));

  const std::string pem = dir_ / "encryption.pem";
  ASSERT_TRUE(write_certificate(pem, c).has_value());
  const auto text = run_command("openssl x509 -noout -text -in " + pem);
  ASSERT_EQ(text.status, 0) << text.output;
  const auto ku = text.output.find("X509v3 Key Usage: critical");
  ASSERT_NE(ku, std::string::npos) << text.output;
  // The line after the extension's name lists its bits: key agreement alone.
  const auto line = text.output.find('\n', ku) + 1;
  std::string bits = text.output.substr(line, text.output.find('\n', line) - line);
  bits.erase(0, bits.find_first_not_of(' '));
  EXPECT_EQ(bits, "Key Agreement") << text.output;
  EXPECT_EQ(text.output.find("Digital Signature"), std::string::npos) << text.output;
  EXPECT_EQ(text.output.find("Extended Key Usage"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("URI:urn:mcim:operator:ro-a"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("prime256v1"), std::string::npos) << text.output;
}

TEST_F(AuthorityTest, EncryptionProfileNeedsAnOperatorAndP256) {
  CertSpec s = spec(Profile::encryption);
  s.sans = {"DNS:icf.example"};
  EXPECT_EQ(validate(s).error().code, ErrorCode::missing_argument);
  s.sans = {"URI:urn:mcim:operator:bad id"};  // a space: not an mcim id
  EXPECT_EQ(validate(s).error().code, ErrorCode::invalid_argument);
  s.sans = {"URI:urn:mcim:operator:ro/a"};
  EXPECT_EQ(validate(s).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(*parse_profile("encryption"), Profile::encryption);
  EXPECT_EQ(to_string(Profile::encryption), "encryption");

  const auto before = sub_->index();
  ASSERT_TRUE(before.has_value());
  EXPECT_FALSE(sub_->issue(s, clock_, rng_).has_value());
  // Another curve is refused before anything is recorded.
  PkeyPtr p384(EVP_EC_gen("secp384r1"));
  ASSERT_NE(p384, nullptr);
  auto refused = sub_->issue_for_key(spec(Profile::encryption), p384.get(), clock_, rng_);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(sub_->index()->size(), before->size());
}

TEST_F(AuthorityTest, IndexIsOpensslFormatAndRevocationMarksIt) {
  auto a = sub_->issue(spec(Profile::tls_client), clock_, rng_);
  auto b = sub_->issue(spec(Profile::platform), clock_, rng_);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(sub_->revoke(b->cert.get(), RevocationReason::key_compromise, clock_.now()));
  auto index = sub_->index();
  ASSERT_TRUE(index.has_value());
  ASSERT_EQ(index->size(), 2u);
  EXPECT_EQ((*index)[0].status, 'V');
  EXPECT_EQ((*index)[1].status, 'R');
  EXPECT_EQ((*index)[1].reason, RevocationReason::key_compromise);
  EXPECT_EQ((*index)[1].serial, index_serial(b->cert.get()));
  // Round trip of the codec.
  auto text = read_text_file(dir_ / "sub/index.txt");
  ASSERT_TRUE(text.has_value());
  EXPECT_EQ(format_index(*parse_index(*text)), *text);
}

TEST_F(AuthorityTest, RevokingACertificateOfAnotherCaIsNotFound) {
  auto foreign = root_->issue(spec(Profile::tls_client), clock_, rng_);
  ASSERT_TRUE(foreign.has_value());
  auto r = sub_->revoke(foreign->cert.get(), RevocationReason::unspecified, clock_.now());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::not_found);
}

TEST_F(AuthorityTest, ChainVerdicts) {
  auto anchors = TrustAnchors::from_file(dir_ / "root/ca.pem");
  auto issued = sub_->issue(spec(Profile::tls_client), clock_, rng_);
  ASSERT_TRUE(anchors && issued);
  // Without the intermediate: no chain.
  auto v = verify_chain(*anchors, issued->cert.get(), {}, clock_.now());
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::chain_invalid);
  // Far in the future: expired.
  v = verify_chain(*anchors, issued->cert.get(), {sub_->cert()},
                   clock_.now() + std::chrono::hours(24 * 400));
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::cert_expired);
  // Another root: no chain.
  TempDir other;
  auto stranger = Authority::create(other / "r", "Stranger", nullptr, 10, "", clock_, rng_);
  ASSERT_TRUE(stranger.has_value());
  auto foreign = TrustAnchors::from_certs({stranger->cert()});
  ASSERT_TRUE(foreign.has_value());
  EXPECT_EQ(verify_chain(*foreign, issued->cert.get(), {sub_->cert()}, clock_.now()).error().code,
            ErrorCode::chain_invalid);
  // Wrong purpose: a client certificate is no TLS server.
  EXPECT_EQ(
      verify_chain(*anchors, issued->cert.get(), {sub_->cert()}, clock_.now(), Purpose::tls_server)
          .error()
          .code,
      ErrorCode::chain_invalid);
}

TEST_F(AuthorityTest, ReopenedAuthorityIssuesIntoTheSameIndex) {
  auto reopened = Authority::open(dir_ / "sub");
  ASSERT_TRUE(reopened.has_value()) << reopened.error().message;
  ASSERT_TRUE(reopened->issue(spec(Profile::tls_client), clock_, rng_).has_value());
  ASSERT_TRUE(sub_->issue(spec(Profile::tls_client), clock_, rng_).has_value());
  EXPECT_EQ(reopened->index()->size(), 2u);
}

TEST(Certificate, SpecValidation) {
  CertSpec s;
  s.profile = Profile::tls_server;
  s.subject = "CN=x";
  EXPECT_EQ(validate(s).error().code, ErrorCode::missing_argument);  // no SAN
  s.sans = {"DNS:x,DNS:y"};
  EXPECT_EQ(validate(s).error().code, ErrorCode::invalid_argument);
  s.sans = {"FTP:x"};
  EXPECT_EQ(validate(s).error().code, ErrorCode::invalid_argument);
  s.sans = {"DNS:x"};
  EXPECT_TRUE(validate(s).has_value());
  s.subject = "CN";
  EXPECT_EQ(validate(s).error().code, ErrorCode::invalid_argument);
  s.subject = "/CN=a/O=b";
  EXPECT_TRUE(validate(s).has_value());
  s.days = 0;
  EXPECT_FALSE(validate(s).has_value());
  EXPECT_FALSE(parse_profile("root-ca").has_value());  // CAs come from `pki ca`
  EXPECT_EQ(*parse_profile("ocsp-signing"), Profile::ocsp_signing);
}

TEST(Index, RefusesGarbage) {
  EXPECT_EQ(parse_index("V\tnot a time\t\t01\tunknown\t/CN=x\n").error().code,
            ErrorCode::bad_format);
  EXPECT_EQ(parse_index("X\t300101000000Z\t\t01\tunknown\t/CN=x\n").error().code,
            ErrorCode::bad_format);
  EXPECT_EQ(parse_index("V\t300101000000Z\n").error().code, ErrorCode::bad_format);
  EXPECT_TRUE(parse_index("").has_value());
}

TEST(Loading, BadFilesAreBadFormatNotCrashes) {
  TempDir d;
  ASSERT_TRUE(write_file_atomic(d / "empty", std::string_view()));
  ASSERT_TRUE(write_file_atomic(d / "junk", std::string_view("hello")));
  ASSERT_TRUE(
      write_file_atomic(d / "truncated", std::string_view("-----BEGIN CERTIFICATE-----\nMIIB\n")));
  auto key = generate_p256_key();
  ASSERT_TRUE(write_private_key(d / "key.pem", key->get()));
  for (const char* f : {"empty", "junk", "truncated", "key.pem"}) {
    auto c = load_certificate(d / f);
    ASSERT_FALSE(c.has_value()) << f;
    EXPECT_EQ(c.error().code, ErrorCode::bad_format) << f;
    EXPECT_NE(c.error().message.find(f), std::string::npos);
  }
  EXPECT_EQ(load_certificate(d / "missing").error().code, ErrorCode::not_found);
  EXPECT_EQ(load_private_key(d / "junk").error().code, ErrorCode::bad_format);
  EXPECT_TRUE(load_private_key(d / "key.pem").has_value());
}

}  // namespace
}  // namespace mcim::pki
