// Attestation and validation (issue 4): the report, references and result codecs and their
// refusals, every PVA check alone and all together, tampering, the SHO's verification of the
// signed result, an openssl cross-check of the report signature, and the CLI end to end.
#include "pki/attestation.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/file.h"
#include "common/hex.h"
#include "pki/authority.h"
#include "pki_test_util.h"

namespace mcim::pki {
namespace {

using std::chrono::seconds;
using testing::run_command;
using testing::TempDir;
using Json = nlohmann::json;
using CheckCode = std::pair<Check, ErrorCode>;

const TimePoint kT0 =
    std::chrono::sys_days{std::chrono::year{2030} / 1 / 15} + std::chrono::hours(12);
constexpr std::string_view kDevice = "dev-0001";
constexpr std::string_view kModel = "meter-v1";

Bytes<32> digest_of(std::string_view s) {
  return sha256(ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()));
}

std::vector<Measurement> golden() {
  return {{"bootloader", digest_of("bl 1.2")},
          {"kernel", digest_of("linux 6.1")},
          {"tre", digest_of("tre 3.0")}};
}

std::vector<CheckCode> checks_of(const ValidationResult& r) {
  std::vector<CheckCode> out;
  for (const auto& f : r.failures) out.emplace_back(f.check, f.code);
  return out;
}

// Flips one bit of byte i: the smallest change, and never a no-op.
std::string flipped(std::string s, std::size_t i) {
  s[i] = static_cast<char>(s[i] ^ 0x01);
  return s;
}

ByteVec raw_signature(EVP_PKEY* key, std::string_view data) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  std::size_t len = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key);
  EVP_DigestSign(ctx, nullptr, &len, p, data.size());
  ByteVec sig(len);
  EVP_DigestSign(ctx, sig.data(), &len, p, data.size());
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  return sig;
}

class AttestationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sroot_ = make_ca("sroot", "Supplier Root", nullptr);
    sca_ = make_ca("sca", "Supplier CA", &*sroot_);
    platform_ = issue_platform(*sca_, std::string(kDevice), std::string(kModel));
    ref_signer_ = issue(*sca_, Profile::result_signing, "CN=Supplier references,O=Supplier");
    proot_ = make_ca("proot", "PVA Root", nullptr);
    pva_signer_ = issue(*proot_, Profile::result_signing, "CN=PVA results,O=PVA");
    validator_.emplace(anchors(*sroot_));
    auto refs = verify_references(references_doc(std::string(kModel), golden()),
                                  validator_->supplier(), {}, clock_);
    ASSERT_TRUE(refs.has_value()) << refs.error().message;
    ASSERT_TRUE(validator_->add_references(std::move(*refs)).has_value());
    nonce_ = ByteVec(32, 0x5a);
  }

  std::optional<Authority> make_ca(const std::string& dir, const std::string& name,
                                   const Authority* parent, int days = 3650) {
    auto ca = Authority::create(dir_ / dir, name, parent, days, "", clock_, rng_);
    EXPECT_TRUE(ca.has_value()) << ca.error().message;
    return ca ? std::optional<Authority>(std::move(*ca)) : std::nullopt;
  }
  Issued issue(const Authority& ca, Profile p, const std::string& subject, int days = 365) {
    CertSpec s;
    s.profile = p;
    s.subject = subject;
    s.days = days;
    auto issued = ca.issue(s, clock_, rng_);
    EXPECT_TRUE(issued.has_value()) << issued.error().message;
    return std::move(*issued);
  }
  Issued issue_platform(const Authority& ca, const std::string& device, const std::string& model,
                        int days = 365) {
    CertSpec s;
    s.profile = Profile::platform;
    s.subject = "CN=" + device;
    s.device_id = device;
    s.model = model;
    s.days = days;
    auto issued = ca.issue(s, clock_, rng_);
    EXPECT_TRUE(issued.has_value()) << issued.error().message;
    return std::move(*issued);
  }
  static TrustAnchors anchors(const Authority& root) {
    return *TrustAnchors::from_certs({root.cert()});
  }

  // References signed by the supplier's reference signer, with the supplier CA embedded.
  std::string references_doc(const std::string& model, std::vector<Measurement> ms,
                             std::optional<TimePoint> issued = std::nullopt) {
    ReferenceSet set{model, std::move(ms),
                     std::chrono::floor<seconds>(issued.value_or(clock_.now()))};
    auto doc = sign_references(set, ref_signer_.key.get(), {ref_signer_.cert.get(), sca_->cert()});
    EXPECT_TRUE(doc.has_value()) << doc.error().message;
    return doc.value_or("");
  }

  Report report() const {
    return Report{std::string(kDevice), TreState::pristine, golden(), nonce_,
                  std::chrono::floor<seconds>(clock_.now())};
  }
  std::string report_doc(const Report& r, EVP_PKEY* key = nullptr) {
    auto doc = sign_report(r, key != nullptr ? key : platform_.key.get());
    EXPECT_TRUE(doc.has_value()) << doc.error().message;
    return doc.value_or("");
  }
  SignedReport signed_report(const Report& r, EVP_PKEY* key = nullptr) {
    auto decoded = decode_signed_report(report_doc(r, key));
    EXPECT_TRUE(decoded.has_value()) << decoded.error().message;
    return std::move(*decoded);
  }
  RevocationAnswer good() const { return RevocationAnswer{CertStatus::good, clock_.now(), {}, {}}; }

  ValidationResult validate(const SignedReport& r, X509* leaf = nullptr,
                            std::optional<Result<RevocationAnswer>> revocation = std::nullopt,
                            std::optional<std::vector<X509*>> intermediates = std::nullopt) {
    return validator_->validate(r, leaf != nullptr ? leaf : platform_.cert.get(),
                                intermediates.value_or(std::vector<X509*>{sca_->cert()}),
                                revocation.value_or(good()), nonce_, clock_);
  }
  std::vector<CheckCode> validate_checks(const Report& r) {
    return checks_of(validate(signed_report(r)));
  }

  ResultSigner pva_result_signer() {
    std::vector<X509Ptr> certs;
    certs.push_back(up_ref(pva_signer_.cert.get()));
    auto s = ResultSigner::create(up_ref(pva_signer_.key.get()), std::move(certs));
    EXPECT_TRUE(s.has_value()) << s.error().message;
    return std::move(*s);
  }

  TempDir dir_;
  FakeClock clock_{kT0};
  OsRandom rng_;
  std::optional<Authority> sroot_, sca_, proot_;
  Issued platform_, ref_signer_, pva_signer_;
  std::optional<Validator> validator_;
  ByteVec nonce_;
};

// ---- The trusted path and each check alone ----------------------------------------------------

TEST_F(AttestationTest, GenuineFreshReportIsTrustedAndTheShoVerifiesTheSignedResult) {
  const ValidationResult r = validate(signed_report(report()));
  EXPECT_TRUE(r.trusted());
  EXPECT_EQ(checks_of(r), std::vector<CheckCode>{});
  EXPECT_EQ(r.device_id, kDevice);
  EXPECT_EQ(r.nonce, nonce_);
  EXPECT_EQ(r.time, std::chrono::floor<seconds>(kT0));

  auto doc = pva_result_signer().sign(r);
  ASSERT_TRUE(doc.has_value()) << doc.error().message;
  auto seen = verify_validation_result(*doc, anchors(*proot_), nonce_, clock_);
  ASSERT_TRUE(seen.has_value()) << seen.error().message;
  EXPECT_EQ(*seen, r);
}

TEST_F(AttestationTest, PlatformCertificateOfAnotherSupplierIsChainInvalidOnly) {
  auto other_root = make_ca("oroot", "Other Root", nullptr);
  auto other_ca = make_ca("oca", "Other CA", &*other_root);
  Issued foreign = issue_platform(*other_ca, std::string(kDevice), std::string(kModel));
  const auto r = validate(signed_report(report(), foreign.key.get()), foreign.cert.get(),
                          std::nullopt, std::vector<X509*>{other_ca->cert()});
  EXPECT_EQ(checks_of(r), (std::vector<CheckCode>{{Check::chain, ErrorCode::chain_invalid}}));
}

TEST_F(AttestationTest, MissingIntermediateIsChainInvalidOnly) {
  const auto r = validate(signed_report(report()), nullptr, std::nullopt, std::vector<X509*>{});
  EXPECT_EQ(checks_of(r), (std::vector<CheckCode>{{Check::chain, ErrorCode::chain_invalid}}));
}

TEST_F(AttestationTest, ExpiredPlatformCertificateIsCertExpiredOnly) {
  Issued short_lived = issue_platform(*sca_, std::string(kDevice), std::string(kModel), 1);
  clock_.advance(std::chrono::days(2));
  const auto r = validate(signed_report(report(), short_lived.key.get()), short_lived.cert.get());
  EXPECT_EQ(checks_of(r), (std::vector<CheckCode>{{Check::chain, ErrorCode::cert_expired}}));
}

TEST_F(AttestationTest, CertificateWithoutDeviceAndModelFailsTheChecksThatNeedThem) {
  Issued client = issue(*sca_, Profile::tls_client, "CN=not a platform");
  const auto r = validate(signed_report(report(), client.key.get()), client.cert.get());
  EXPECT_EQ(checks_of(r),
            (std::vector<CheckCode>{{Check::chain, ErrorCode::chain_invalid},
                                    {Check::device_id, ErrorCode::chain_invalid},
                                    {Check::measurements, ErrorCode::measurement_mismatch}}));
  EXPECT_NE(r.failures[0].message.find("not a platform certificate"), std::string::npos);
}

TEST_F(AttestationTest, RevokedAndUnknownStatusesHaveTheirCodes) {
  const SignedReport sr = signed_report(report());
  RevocationAnswer a = good();
  a.status = CertStatus::revoked;
  a.revoked_at = kT0 - std::chrono::hours(1);
  EXPECT_EQ(checks_of(validate(sr, nullptr, a)),
            (std::vector<CheckCode>{{Check::revocation, ErrorCode::cert_revoked}}));
  a.status = CertStatus::unknown;
  EXPECT_EQ(checks_of(validate(sr, nullptr, a)),
            (std::vector<CheckCode>{{Check::revocation, ErrorCode::cert_unknown}}));
}

TEST_F(AttestationTest, StaleOrMissingRevocationStatusIsOcspInvalid) {
  const SignedReport sr = signed_report(report());
  const std::vector<CheckCode> ocsp_invalid{{Check::revocation, ErrorCode::ocsp_invalid}};
  RevocationAnswer a = good();
  a.this_update = kT0 - seconds(600);  // exactly the limit
  EXPECT_TRUE(validate(sr, nullptr, a).trusted());
  a.this_update = kT0 - seconds(601);
  EXPECT_EQ(checks_of(validate(sr, nullptr, a)), ocsp_invalid);
  // The responder's clock may differ by 300 s either way, as the OCSP client allows.
  a.this_update = kT0 + seconds(300);
  EXPECT_TRUE(validate(sr, nullptr, a).trusted());
  a.this_update = kT0 + seconds(301);
  EXPECT_EQ(checks_of(validate(sr, nullptr, a)), ocsp_invalid);
  a = good();
  a.next_update = kT0 - seconds(300);
  EXPECT_TRUE(validate(sr, nullptr, a).trusted());
  a.next_update = kT0 - seconds(301);
  EXPECT_EQ(checks_of(validate(sr, nullptr, a)), ocsp_invalid);
  const Result<RevocationAnswer> none = fail(ErrorCode::ocsp_invalid, "responder unreachable");
  const auto r = validate(sr, nullptr, none);
  EXPECT_EQ(checks_of(r), ocsp_invalid);
  EXPECT_NE(r.failures[0].message.find("responder unreachable"), std::string::npos);
}

TEST_F(AttestationTest, ReportSignedByAnotherKeyIsSignatureInvalidOnly) {
  Issued other = issue_platform(*sca_, "dev-0002", std::string(kModel));
  const auto r = validate(signed_report(report(), other.key.get()));
  EXPECT_EQ(checks_of(r),
            (std::vector<CheckCode>{{Check::signature, ErrorCode::signature_invalid}}));
}

TEST_F(AttestationTest, DeviceIdOtherThanTheCertificatesIsRefused) {
  Report rep = report();
  rep.device_id = "dev-0002";
  const auto r = validate(signed_report(rep));
  EXPECT_EQ(checks_of(r), (std::vector<CheckCode>{{Check::device_id, ErrorCode::chain_invalid}}));
  EXPECT_EQ(r.device_id, kDevice) << "the result names the certified device";
}

TEST_F(AttestationTest, OtherNonceIsNonceMismatchOnly) {
  Report rep = report();
  rep.nonce = ByteVec(32, 0x5b);
  EXPECT_EQ(validate_checks(rep),
            (std::vector<CheckCode>{{Check::nonce, ErrorCode::nonce_mismatch}}));
  rep.nonce = ByteVec(16, 0x5a);  // a prefix of the expected one is not it either
  EXPECT_EQ(validate_checks(rep),
            (std::vector<CheckCode>{{Check::nonce, ErrorCode::nonce_mismatch}}));
}

TEST_F(AttestationTest, FreshnessWindowAndSkewAreExact) {
  const std::vector<CheckCode> stale{{Check::freshness, ErrorCode::stale_report}};
  Report rep = report();
  rep.time = std::chrono::floor<seconds>(kT0) - seconds(300);
  EXPECT_EQ(validate_checks(rep), std::vector<CheckCode>{});
  rep.time -= seconds(1);
  EXPECT_EQ(validate_checks(rep), stale);
  rep.time = std::chrono::floor<seconds>(kT0) + seconds(30);
  EXPECT_EQ(validate_checks(rep), std::vector<CheckCode>{});
  rep.time += seconds(1);
  EXPECT_EQ(validate_checks(rep), stale);
  // The same report ages out as the clock moves.
  rep = report();
  const SignedReport sr = signed_report(rep);
  clock_.advance(seconds(301));
  EXPECT_EQ(checks_of(validate(sr)), stale);
}

TEST_F(AttestationTest, MissingExtraOrDifferentMeasurementsAreMeasurementMismatch) {
  const std::vector<CheckCode> mismatch{{Check::measurements, ErrorCode::measurement_mismatch}};
  auto message_of = [&](std::vector<Measurement> ms) {
    Report rep = report();
    rep.measurements = std::move(ms);
    const auto r = validate(signed_report(rep));
    EXPECT_EQ(checks_of(r), mismatch);
    return r.failures.empty() ? std::string() : r.failures[0].message;
  };
  auto ms = golden();
  ms.pop_back();
  EXPECT_EQ(message_of(ms), "model meter-v1: missing tre");
  ms = golden();
  ms.push_back({"extra-module", digest_of("x")});
  EXPECT_EQ(message_of(ms), "model meter-v1: extra extra-module");
  ms = golden();
  ms[1].sha256[31] ^= 1;
  EXPECT_EQ(message_of(ms), "model meter-v1: different kernel");
  ms = golden();
  ms[0].name = "bootloader2";
  ms[2].sha256[0] ^= 1;
  EXPECT_EQ(message_of(ms), "model meter-v1: missing bootloader; extra bootloader2; different tre");
}

TEST_F(AttestationTest, ReferencesAreChosenByTheCertificatesModelNotByTheReport) {
  std::vector<Measurement> other_ms = {{"firmware", digest_of("other")}};
  auto other =
      verify_references(references_doc("gateway-v2", other_ms), validator_->supplier(), {}, clock_);
  ASSERT_TRUE(other.has_value()) << other.error().message;
  ASSERT_TRUE(validator_->add_references(std::move(*other)).has_value());
  Report rep = report();
  rep.measurements = other_ms;  // genuine for gateway-v2, but this device is a meter-v1
  EXPECT_EQ(validate_checks(rep),
            (std::vector<CheckCode>{{Check::measurements, ErrorCode::measurement_mismatch}}));

  Issued unknown_model = issue_platform(*sca_, std::string(kDevice), "no-such-model");
  const auto r =
      validate(signed_report(report(), unknown_model.key.get()), unknown_model.cert.get());
  EXPECT_EQ(checks_of(r),
            (std::vector<CheckCode>{{Check::measurements, ErrorCode::measurement_mismatch}}));
  EXPECT_EQ(r.failures[0].message, "no reference measurements for model no-such-model");
}

TEST_F(AttestationTest, TreInLockdownIsNotTrustedButProvisionedIs) {
  Report rep = report();
  rep.state = TreState::lockdown;
  EXPECT_EQ(validate_checks(rep),
            (std::vector<CheckCode>{{Check::tre_state, ErrorCode::measurement_mismatch}}));
  rep.state = TreState::provisioned;
  EXPECT_EQ(validate_checks(rep), std::vector<CheckCode>{});
}

TEST_F(AttestationTest, SeveralFailuresAreAllListedInCheckOrder) {
  Issued other = issue_platform(*sca_, "dev-0009", std::string(kModel));
  Report rep = report();
  rep.device_id = "dev-0002";
  rep.nonce = ByteVec(20, 1);
  rep.time -= seconds(3600);
  rep.measurements.pop_back();
  rep.state = TreState::lockdown;
  RevocationAnswer revoked = good();
  revoked.status = CertStatus::revoked;
  revoked.this_update = kT0 - std::chrono::hours(2);
  const auto r =
      validate(signed_report(rep, other.key.get()), nullptr, revoked, std::vector<X509*>{});
  EXPECT_FALSE(r.trusted());
  EXPECT_EQ(checks_of(r), (std::vector<CheckCode>{
                              {Check::chain, ErrorCode::chain_invalid},
                              {Check::revocation, ErrorCode::cert_revoked},
                              {Check::revocation, ErrorCode::ocsp_invalid},
                              {Check::signature, ErrorCode::signature_invalid},
                              {Check::device_id, ErrorCode::chain_invalid},
                              {Check::nonce, ErrorCode::nonce_mismatch},
                              {Check::freshness, ErrorCode::stale_report},
                              {Check::measurements, ErrorCode::measurement_mismatch},
                              {Check::tre_state, ErrorCode::measurement_mismatch},
                          }));
  // And the SHO sees exactly that list in the signed result.
  auto doc = pva_result_signer().sign(r);
  ASSERT_TRUE(doc.has_value());
  auto seen = verify_validation_result(*doc, anchors(*proot_), nonce_, clock_);
  ASSERT_TRUE(seen.has_value()) << seen.error().message;
  EXPECT_EQ(*seen, r);
  EXPECT_FALSE(seen->trusted());
}

TEST_F(AttestationTest, ValidationIsRepeatableOnTheSameState) {
  const SignedReport sr = signed_report(report());
  const auto first = validate(sr);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(validate(sr), first);
}

// ---- Pre-verified supplier CAs: the PVA's fast path --------------------------------------------

TEST_F(AttestationTest, PreVerifiedSupplierCaGivesTheSameVerdicts) {
  ASSERT_TRUE(validator_->add_intermediates({sca_->cert(), sroot_->cert()}, clock_).has_value());
  const SignedReport sr = signed_report(report());
  EXPECT_TRUE(validate(sr, nullptr, std::nullopt, std::vector<X509*>{}).trusted());
  EXPECT_TRUE(validate(sr).trusted());

  auto other_root = make_ca("oroot", "Other Root", nullptr);
  auto other_ca = make_ca("oca", "Other CA", &*other_root);
  Issued foreign = issue_platform(*other_ca, std::string(kDevice), std::string(kModel));
  EXPECT_EQ(checks_of(validate(signed_report(report(), foreign.key.get()), foreign.cert.get(),
                               std::nullopt, std::vector<X509*>{other_ca->cert()})),
            (std::vector<CheckCode>{{Check::chain, ErrorCode::chain_invalid}}));

  Issued short_lived = issue_platform(*sca_, std::string(kDevice), std::string(kModel), 1);
  clock_.advance(std::chrono::days(2));
  EXPECT_EQ(checks_of(validate(signed_report(report(), short_lived.key.get()),
                               short_lived.cert.get(), std::nullopt, std::vector<X509*>{})),
            (std::vector<CheckCode>{{Check::chain, ErrorCode::cert_expired}}));
}

// The chain verdicts for `device` of two Validators over `root` built now: one with `ca`
// pre-verified (the fast path), one without (full path validation every time).
class PathValidity : public AttestationTest {
 protected:
  void build(const Authority& root, const Authority& ca) {
    fast_.emplace(anchors(root));
    ASSERT_TRUE(fast_->add_intermediates({ca.cert()}, clock_).has_value());
    slow_.emplace(anchors(root));
  }
  std::vector<CheckCode> chain_checks(const Validator& v, const Authority& ca,
                                      const Issued& device) {
    std::vector<CheckCode> out;
    for (const auto& cc :
         checks_of(v.validate(signed_report(report(), device.key.get()), device.cert.get(),
                              {ca.cert()}, good(), nonce_, clock_))) {
      if (cc.first == Check::chain) out.push_back(cc);
    }
    return out;
  }
  std::optional<Validator> fast_, slow_;
};

TEST_F(PathValidity, PreVerifiedCaIsHeldToItsOwnValidityPeriod) {
  auto short_ca = make_ca("shortca", "Short CA", &*sroot_, 1);
  Issued device = issue_platform(*short_ca, std::string(kDevice), std::string(kModel));
  build(*sroot_, *short_ca);
  EXPECT_EQ(chain_checks(*fast_, *short_ca, device), std::vector<CheckCode>{});
  EXPECT_EQ(chain_checks(*slow_, *short_ca, device), std::vector<CheckCode>{});
  clock_.advance(std::chrono::days(2));
  const std::vector<CheckCode> expired{{Check::chain, ErrorCode::cert_expired}};
  EXPECT_EQ(chain_checks(*fast_, *short_ca, device), expired);
  EXPECT_EQ(chain_checks(*slow_, *short_ca, device), expired);
}

TEST_F(PathValidity, PreVerifiedCaIsHeldToItsRootsValidityPeriod) {
  // The root expires before the CA it issued. The partial chain of the fast path ends at the CA,
  // so OpenSSL never looks at the root: only the window the Validator kept catches it.
  auto short_root = make_ca("shortroot", "Short Root", nullptr, 1);
  auto ca = make_ca("longca", "Long CA", &*short_root, 3650);
  Issued device = issue_platform(*ca, std::string(kDevice), std::string(kModel));
  build(*short_root, *ca);
  EXPECT_EQ(chain_checks(*fast_, *ca, device), std::vector<CheckCode>{});
  EXPECT_EQ(chain_checks(*slow_, *ca, device), std::vector<CheckCode>{});
  clock_.advance(std::chrono::days(2));
  const std::vector<CheckCode> expired{{Check::chain, ErrorCode::cert_expired}};
  EXPECT_EQ(chain_checks(*fast_, *ca, device), expired);
  EXPECT_EQ(chain_checks(*slow_, *ca, device), expired);
}

TEST_F(AttestationTest, OnlySupplierCasArePreVerified) {
  auto other_root = make_ca("oroot", "Other Root", nullptr);
  auto other_ca = make_ca("oca", "Other CA", &*other_root);
  auto foreign = validator_->add_intermediates({other_ca->cert()}, clock_);
  ASSERT_FALSE(foreign.has_value());
  EXPECT_EQ(foreign.error().code, ErrorCode::chain_invalid);
  auto leaf = validator_->add_intermediates({sca_->cert(), platform_.cert.get()}, clock_);
  ASSERT_FALSE(leaf.has_value());
  EXPECT_EQ(leaf.error().code, ErrorCode::chain_invalid);
  // Nothing was kept from the refused calls: without the intermediate the chain is incomplete.
  EXPECT_EQ(
      checks_of(validate(signed_report(report()), nullptr, std::nullopt, std::vector<X509*>{})),
      (std::vector<CheckCode>{{Check::chain, ErrorCode::chain_invalid}}));
  // Roots are skipped, not promoted.
  ASSERT_TRUE(validator_->add_intermediates({other_root->cert()}, clock_).has_value());
  Issued under_other_root = issue_platform(*other_root, std::string(kDevice), std::string(kModel));
  EXPECT_EQ(checks_of(validate(signed_report(report(), under_other_root.key.get()),
                               under_other_root.cert.get(), std::nullopt, std::vector<X509*>{})),
            (std::vector<CheckCode>{{Check::chain, ErrorCode::chain_invalid}}));
}

// ---- Tampering ----------------------------------------------------------------------------------

TEST_F(AttestationTest, EveryTamperedReportByteIsBadFormatOrSignatureInvalid) {
  const std::string doc = report_doc(report()) + "\n";
  std::size_t refused_as_format = 0, refused_as_signature = 0;
  for (std::size_t i = 0; i < doc.size(); ++i) {
    auto decoded = decode_signed_report(flipped(doc, i));
    if (!decoded) {
      EXPECT_EQ(decoded.error().code, ErrorCode::bad_format) << "byte " << i;
      ++refused_as_format;
      continue;
    }
    const auto r = validate(*decoded);
    const auto cs = checks_of(r);
    EXPECT_NE(
        std::find(cs.begin(), cs.end(), CheckCode{Check::signature, ErrorCode::signature_invalid}),
        cs.end())
        << "byte " << i << " of " << doc;
    ++refused_as_signature;
  }
  EXPECT_GT(refused_as_format, 0u);
  EXPECT_GT(refused_as_signature, 0u);
}

// ---- References ---------------------------------------------------------------------------------

TEST_F(AttestationTest, ReferencesFromAnotherSupplierAreRefused) {
  auto other_root = make_ca("oroot", "Other Root", nullptr);
  Issued signer = issue(*other_root, Profile::result_signing, "CN=other references");
  auto doc = sign_references({std::string(kModel), golden(), std::chrono::floor<seconds>(kT0)},
                             signer.key.get(), {signer.cert.get()});
  ASSERT_TRUE(doc.has_value());
  auto v = verify_references(*doc, validator_->supplier(), {}, clock_);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::chain_invalid);
}

TEST_F(AttestationTest, ReferencesSignedByAPlatformOrCaKeyOfTheSupplierAreRefused) {
  // Both chain to the supplier root, but a device must not vouch for itself and the CA key
  // signs certificates only.
  auto by_platform =
      sign_references({std::string(kModel), golden(), std::chrono::floor<seconds>(kT0)},
                      platform_.key.get(), {platform_.cert.get(), sca_->cert()});
  auto by_ca = sign_references({std::string(kModel), golden(), std::chrono::floor<seconds>(kT0)},
                               sca_->key(), {sca_->cert()});
  for (const auto* doc : {&by_platform, &by_ca}) {
    ASSERT_TRUE(doc->has_value());
    auto v = verify_references(**doc, validator_->supplier(), {}, clock_);
    ASSERT_FALSE(v.has_value());
    EXPECT_EQ(v.error().code, ErrorCode::chain_invalid) << v.error().message;
  }
}

TEST_F(AttestationTest, ReferencesNeedTheirIntermediateEmbeddedOrGiven) {
  auto doc = sign_references({std::string(kModel), golden(), std::chrono::floor<seconds>(kT0)},
                             ref_signer_.key.get(), {ref_signer_.cert.get()});
  ASSERT_TRUE(doc.has_value());
  auto alone = verify_references(*doc, validator_->supplier(), {}, clock_);
  ASSERT_FALSE(alone.has_value());
  EXPECT_EQ(alone.error().code, ErrorCode::chain_invalid);
  auto given = verify_references(*doc, validator_->supplier(), {sca_->cert()}, clock_);
  ASSERT_TRUE(given.has_value()) << given.error().message;
  EXPECT_EQ(given->signer(), "O=Supplier,CN=Supplier references");
  EXPECT_EQ(given->set().measurements, golden());
}

TEST_F(AttestationTest, ReferencesWithAnExpiredSignerAreCertExpired) {
  Issued signer = issue(*sca_, Profile::result_signing, "CN=short", 1);
  auto doc = sign_references({std::string(kModel), golden(), std::chrono::floor<seconds>(kT0)},
                             signer.key.get(), {signer.cert.get(), sca_->cert()});
  ASSERT_TRUE(doc.has_value());
  clock_.advance(std::chrono::days(2));
  auto v = verify_references(*doc, validator_->supplier(), {}, clock_);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::cert_expired);
}

TEST_F(AttestationTest, EveryTamperedReferencesByteIsRefused) {
  const std::string doc = references_doc(std::string(kModel), golden());
  for (std::size_t i = 0; i < doc.size(); ++i) {
    auto v = verify_references(flipped(doc, i), validator_->supplier(), {}, clock_);
    ASSERT_FALSE(v.has_value()) << "byte " << i;
    const ErrorCode c = v.error().code;
    EXPECT_TRUE(c == ErrorCode::bad_format || c == ErrorCode::signature_invalid ||
                c == ErrorCode::chain_invalid)
        << "byte " << i << ": " << v.error().message;
  }
}

TEST_F(AttestationTest, NewerReferencesReplaceOlderOnesAndCannotBeRolledBack) {
  std::vector<Measurement> updated = golden();
  updated[1].sha256 = digest_of("linux 6.2");
  auto add = [&](const std::vector<Measurement>& ms, TimePoint issued) {
    auto v = verify_references(references_doc(std::string(kModel), ms, issued),
                               validator_->supplier(), {}, clock_);
    EXPECT_TRUE(v.has_value());
    return validator_->add_references(std::move(*v));
  };
  ASSERT_TRUE(add(updated, kT0 + seconds(10)).has_value());
  EXPECT_EQ(validator_->references_for(kModel)->measurements, updated);
  EXPECT_EQ(validate_checks(report()),
            (std::vector<CheckCode>{{Check::measurements, ErrorCode::measurement_mismatch}}));

  auto rollback = add(golden(), kT0);
  ASSERT_FALSE(rollback.has_value());
  EXPECT_EQ(rollback.error().code, ErrorCode::stale_report);
  auto same_time_other_content = add(golden(), kT0 + seconds(10));
  ASSERT_FALSE(same_time_other_content.has_value());
  EXPECT_TRUE(add(updated, kT0 + seconds(10)).has_value()) << "the same set again is harmless";
  EXPECT_EQ(validator_->references_for(kModel)->measurements, updated);
  EXPECT_EQ(validator_->references_for("unknown"), nullptr);
}

// ---- The signed result as the SHO sees it -------------------------------------------------------

TEST_F(AttestationTest, EveryTamperedResultByteIsRefusedByTheSho) {
  Report rep = report();
  rep.nonce = ByteVec(16, 7);  // an untrusted result, so the failures list is tampered too
  const auto r = validate(signed_report(rep));
  auto doc = pva_result_signer().sign(r);
  ASSERT_TRUE(doc.has_value());
  const TrustAnchors pva = anchors(*proot_);
  for (std::size_t i = 0; i < doc->size(); ++i) {
    auto seen = verify_validation_result(flipped(*doc, i), pva, nonce_, clock_);
    ASSERT_FALSE(seen.has_value()) << "byte " << i;
    const ErrorCode c = seen.error().code;
    EXPECT_TRUE(c == ErrorCode::bad_format || c == ErrorCode::signature_invalid ||
                c == ErrorCode::chain_invalid)
        << "byte " << i << ": " << seen.error().message;
  }
}

TEST_F(AttestationTest, ResultOfAnotherPvaWrongNonceOrOldIsRefused) {
  auto doc = pva_result_signer().sign(validate(signed_report(report())));
  ASSERT_TRUE(doc.has_value());
  auto other_pva = make_ca("opva", "Other PVA Root", nullptr);
  auto wrong_pva = verify_validation_result(*doc, anchors(*other_pva), nonce_, clock_);
  ASSERT_FALSE(wrong_pva.has_value());
  EXPECT_EQ(wrong_pva.error().code, ErrorCode::chain_invalid);

  auto wrong_nonce = verify_validation_result(*doc, anchors(*proot_), ByteVec(32, 0x5b), clock_);
  ASSERT_FALSE(wrong_nonce.has_value());
  EXPECT_EQ(wrong_nonce.error().code, ErrorCode::nonce_mismatch);

  clock_.advance(seconds(300));
  EXPECT_TRUE(verify_validation_result(*doc, anchors(*proot_), nonce_, clock_).has_value());
  clock_.advance(seconds(1));
  auto old = verify_validation_result(*doc, anchors(*proot_), nonce_, clock_);
  ASSERT_FALSE(old.has_value());
  EXPECT_EQ(old.error().code, ErrorCode::stale_report);
  clock_.set(kT0 - seconds(31));
  auto future = verify_validation_result(*doc, anchors(*proot_), nonce_, clock_);
  ASSERT_FALSE(future.has_value());
  EXPECT_EQ(future.error().code, ErrorCode::stale_report);
}

TEST_F(AttestationTest, OnlyDocumentSignersSignResults) {
  auto signer_for = [&](EVP_PKEY* key, X509* cert) {
    std::vector<X509Ptr> certs;
    certs.push_back(up_ref(cert));
    return ResultSigner::create(up_ref(key), std::move(certs));
  };
  Issued tls = issue(*proot_, Profile::tls_client, "CN=pva tls");
  EXPECT_FALSE(signer_for(tls.key.get(), tls.cert.get()).has_value());
  EXPECT_FALSE(signer_for(proot_->key(), proot_->cert()).has_value());
  EXPECT_FALSE(signer_for(platform_.key.get(), platform_.cert.get()).has_value());
  EXPECT_FALSE(signer_for(tls.key.get(), pva_signer_.cert.get()).has_value()) << "key mismatch";
  EXPECT_TRUE(signer_for(pva_signer_.key.get(), pva_signer_.cert.get()).has_value());

  // A result signed by a TLS key of the PVA's own PKI, assembled by hand, is refused too.
  auto good_doc = pva_result_signer().sign(validate(signed_report(report())));
  ASSERT_TRUE(good_doc.has_value());
  const Json j = Json::parse(*good_doc);
  const std::string inner = j["result"].dump();
  const std::string forged = R"({"certificates":[")" + to_hex(certificate_der(tls.cert.get())) +
                             R"("],"result":)" + inner + R"(,"signature":")" +
                             to_hex(raw_signature(tls.key.get(), inner)) + R"("})";
  auto seen = verify_validation_result(forged, anchors(*proot_), nonce_, clock_);
  ASSERT_FALSE(seen.has_value());
  EXPECT_EQ(seen.error().code, ErrorCode::chain_invalid) << seen.error().message;
}

// ---- Codecs -------------------------------------------------------------------------------------

TEST_F(AttestationTest, ReportRoundTripsAndIsSortedCanonicalJson) {
  Report rep = report();
  std::reverse(rep.measurements.begin(), rep.measurements.end());
  const std::string doc = report_doc(rep);
  auto back = decode_signed_report(doc + "\n");
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(back->report.measurements, golden());
  EXPECT_EQ(back->report.device_id, rep.device_id);
  EXPECT_EQ(back->report.nonce, rep.nonce);
  EXPECT_EQ(back->report.time, rep.time);
  EXPECT_EQ(back->report.state, rep.state);
  EXPECT_EQ(doc, Json::parse(doc).dump()) << "sorted keys, no whitespace";
  EXPECT_EQ(doc.substr(0, 10), R"({"report":)");
  EXPECT_EQ(back->signed_bytes, Json::parse(doc)["report"].dump());
}

TEST_F(AttestationTest, SignRefusesWhatDecodingWouldRefuse) {
  auto refused = [&](auto mutate) {
    Report rep = report();
    mutate(rep);
    auto doc = sign_report(rep, platform_.key.get());
    return !doc.has_value() && doc.error().code == ErrorCode::invalid_argument;
  };
  EXPECT_TRUE(refused([](Report& r) { r.device_id = "has space"; }));
  EXPECT_TRUE(refused([](Report& r) { r.device_id.clear(); }));
  EXPECT_TRUE(refused([](Report& r) { r.nonce.resize(15); }));
  EXPECT_TRUE(refused([](Report& r) { r.nonce.resize(65); }));
  EXPECT_TRUE(refused([](Report& r) { r.measurements.clear(); }));
  EXPECT_TRUE(refused([](Report& r) { r.measurements.push_back(r.measurements[0]); }));
  EXPECT_TRUE(refused([](Report& r) { r.measurements[0].name = "quote\"d"; }));
  EXPECT_TRUE(refused([](Report& r) { r.time = UtcSeconds(seconds(-1)); }));
}

struct ReportDefect {
  const char* what;
  std::function<void(Json&)> mutate;  // on the parsed document; re-dumped canonically
  const char* expected;               // a part of the message
};

TEST_F(AttestationTest, ReportDecodingRefusesEachDefectNamingTheField) {
  const Json base = Json::parse(report_doc(report()));
  const std::vector<ReportDefect> defects = {
      {"unknown top-level", [](Json& j) { j["extra"] = 1; },
       "report document: unknown field \"extra\""},
      {"no signature", [](Json& j) { j.erase("signature"); }, "report document.signature: missing"},
      {"unknown field", [](Json& j) { j["report"]["model"] = "x"; },
       "report: unknown field \"model\""},
      {"missing nonce", [](Json& j) { j["report"].erase("nonce"); }, "report.nonce: missing"},
      {"time as string", [](Json& j) { j["report"]["time"] = "1"; }, "report.time"},
      {"negative time", [](Json& j) { j["report"]["time"] = -1; }, "report.time"},
      {"float time", [](Json& j) { j["report"]["time"] = 1.5; }, "report.time"},
      {"nonce 15 bytes", [](Json& j) { j["report"]["nonce"] = std::string(30, 'a'); },
       "report.nonce"},
      {"nonce 65 bytes", [](Json& j) { j["report"]["nonce"] = std::string(130, 'a'); },
       "report.nonce"},
      {"nonce odd", [](Json& j) { j["report"]["nonce"] = std::string(33, 'a'); }, "report.nonce"},
      {"uppercase hex", [](Json& j) { j["report"]["nonce"] = std::string(32, 'A'); },
       "report.nonce"},
      {"nonce number", [](Json& j) { j["report"]["nonce"] = 5; }, "report.nonce: not a string"},
      {"short digest",
       [](Json& j) { j["report"]["measurements"][0]["sha256"] = std::string(62, '0'); },
       "report.measurements[0].sha256"},
      {"digest not hex",
       [](Json& j) { j["report"]["measurements"][2]["sha256"] = std::string(64, 'g'); },
       "report.measurements[2].sha256"},
      {"duplicate name", [](Json& j) { j["report"]["measurements"][1]["name"] = "bootloader"; },
       "report.measurements[1].name: duplicate"},
      {"unsorted", [](Json& j) { j["report"]["measurements"][1]["name"] = "a"; },
       "report.measurements[1].name: measurements not sorted"},
      {"measurement field", [](Json& j) { j["report"]["measurements"][0]["size"] = 1; },
       "report.measurements[0]: unknown field \"size\""},
      {"measurement not object", [](Json& j) { j["report"]["measurements"][0] = "x"; },
       "report.measurements[0]: not an object"},
      {"no measurements", [](Json& j) { j["report"]["measurements"] = Json::array(); },
       "report.measurements: expected 1-1024"},
      {"measurements object", [](Json& j) { j["report"]["measurements"] = Json::object(); },
       "report.measurements: not an array"},
      {"state", [](Json& j) { j["report"]["state"] = "broken"; }, "report.state"},
      {"type", [](Json& j) { j["report"]["type"] = "mcim-result/1"; }, "report.type"},
      {"device id space", [](Json& j) { j["report"]["device_id"] = "dev 1"; }, "report.device_id"},
      {"device id empty", [](Json& j) { j["report"]["device_id"] = ""; }, "report.device_id"},
      {"report not object", [](Json& j) { j["report"] = Json::array(); }, "report: not an object"},
      {"short signature", [](Json& j) { j["signature"] = "3000"; }, "report document.signature"},
  };
  for (const auto& d : defects) {
    Json j = base;
    d.mutate(j);
    auto r = decode_signed_report(j.dump());
    ASSERT_FALSE(r.has_value()) << d.what;
    EXPECT_EQ(r.error().code, ErrorCode::bad_format) << d.what;
    EXPECT_NE(r.error().message.find(d.expected), std::string::npos)
        << d.what << ": " << r.error().message;
  }
}

TEST_F(AttestationTest, ReportDecodingRefusesNonCanonicalAndBrokenText) {
  const std::string doc = report_doc(report());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "empty"},
      {"{", "not JSON"},
      {doc.substr(0, doc.size() / 2), "not JSON"},
      {"[1]", "not a JSON object"},
      {"\"text\"", "not a JSON object"},
      {doc + "x", "not JSON"},
      {doc + "\n\n", "canonical"},
      {" " + doc, "canonical"},
      {"{\"report\": " + doc.substr(10), "canonical"},
      // Out of order, but the missing field is what the message names: fields come first.
      {R"({"signature":")" + std::string(140, 'a') + R"(","report":{}})",
       "report.device_id: missing"},
  };
  for (const auto& [text, expected] : cases) {
    auto r = decode_signed_report(text);
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_EQ(r.error().code, ErrorCode::bad_format);
    EXPECT_NE(r.error().message.find(expected), std::string::npos) << r.error().message;
  }
  // Size and depth: refused without exhausting memory or the stack.
  auto huge = decode_signed_report(std::string((std::size_t{1} << 20) + 1, ' '));
  ASSERT_FALSE(huge.has_value());
  EXPECT_NE(huge.error().message.find("larger than"), std::string::npos);
  const std::size_t depth = 200000;
  auto deep = decode_signed_report(R"({"report":)" + std::string(depth, '[') +
                                   std::string(depth, ']') + R"(,"signature":"00"})");
  ASSERT_FALSE(deep.has_value());
  EXPECT_EQ(deep.error().code, ErrorCode::bad_format);
  // A repeated key (JSON keeps the last) and an escaped character are not canonical either.
  std::string repeated = doc;
  repeated.insert(repeated.find("\"nonce\""), "\"nonce\":\"" + std::string(32, 'b') + "\",");
  std::string escaped = doc;
  escaped.replace(escaped.find("\"kernel\""), 8, "\"\\u006bernel\"");
  for (const auto& text : {repeated, escaped}) {
    auto r = decode_signed_report(text);
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message.find("canonical"), std::string::npos) << r.error().message;
  }
}

TEST_F(AttestationTest, DocumentsOfOneKindAreNotAcceptedAsAnother) {
  const std::string report_text = report_doc(report());
  const std::string refs = references_doc(std::string(kModel), golden());
  auto result = pva_result_signer().sign(validate(signed_report(report())));
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(decode_signed_report(refs).has_value());
  EXPECT_FALSE(decode_signed_report(*result).has_value());
  EXPECT_FALSE(verify_references(report_text, validator_->supplier(), {}, clock_).has_value());
  EXPECT_FALSE(verify_references(*result, validator_->supplier(), {}, clock_).has_value());
  EXPECT_FALSE(verify_validation_result(refs, anchors(*sroot_), nonce_, clock_).has_value());
}

TEST(MeasurementLines, ParsesSortsAndRefusesMalformedLines) {
  const std::string a(64, 'a'), b(64, 'B');
  auto ok = parse_measurement_lines("# firmware\n\nkernel " + b + "\r\n  boot\t" + a + "  \n");
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[0].name, "boot");
  EXPECT_EQ((*ok)[1].name, "kernel");
  EXPECT_EQ((*ok)[1].sha256[0], 0xbb);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "1-1024 lines"},
      {"# only a comment\n", "1-1024 lines"},
      {"kernel\n", "line 1: expected"},
      {"kernel " + a + " extra\n", "line 1: expected"},
      {"x " + a + "\nkernel " + a.substr(2) + "\n", "line 2: the SHA-256"},
      {"kernel " + std::string(64, 'z') + "\n", "line 1: the SHA-256"},
      {"ker\"nel " + a + "\n", "line 1: the name"},
      {"kernel " + a + "\nboot " + a + "\nkernel " + b + "\n",
       "line 3: repeats the name of line 1"},
  };
  for (const auto& [text, expected] : bad) {
    auto r = parse_measurement_lines(text);
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_EQ(r.error().code, ErrorCode::bad_format);
    EXPECT_NE(r.error().message.find(expected), std::string::npos) << r.error().message;
  }
}

TEST(TreStates, NamesRoundTrip) {
  for (TreState s : {TreState::pristine, TreState::provisioned, TreState::lockdown}) {
    EXPECT_EQ(parse_tre_state(to_string(s)).value(), s);
  }
  EXPECT_FALSE(parse_tre_state("Pristine").has_value());
}

// ---- Independent check: openssl verifies the report signature over the exact bytes ------------

TEST_F(AttestationTest, OpensslVerifiesTheReportSignatureOverTheCanonicalBytes) {
  const std::string doc = report_doc(report());
  // Sliced by hand, not by our decoder: {"report":<signed bytes>,"signature":"<hex>"}.
  const std::string marker = R"(,"signature":")";
  const std::size_t sig_at = doc.rfind(marker);
  ASSERT_NE(sig_at, std::string::npos);
  const std::string inner = doc.substr(10, sig_at - 10);
  const std::string sig_hex =
      doc.substr(sig_at + marker.size(), doc.size() - sig_at - marker.size() - 2);
  ASSERT_TRUE(write_file_atomic(dir_ / "inner.json", inner).has_value());
  ASSERT_TRUE(
      write_file_atomic(dir_ / "sig.der", ByteView(*parse_hex(sig_hex, "sig"))).has_value());
  ASSERT_TRUE(write_certificate(dir_ / "platform.pem", platform_.cert.get()).has_value());
  const auto pub = run_command("openssl x509 -in " + (dir_ / "platform.pem") +
                               " -pubkey -noout -out " + (dir_ / "pub.pem"));
  ASSERT_EQ(pub.status, 0) << pub.output;
  const std::string verify = "openssl dgst -sha256 -verify " + (dir_ / "pub.pem") + " -signature " +
                             (dir_ / "sig.der") + " ";
  const auto ok = run_command(verify + (dir_ / "inner.json"));
  EXPECT_EQ(ok.status, 0) << ok.output;
  ASSERT_TRUE(
      write_file_atomic(dir_ / "inner2.json", flipped(inner, inner.size() / 2)).has_value());
  EXPECT_NE(run_command(verify + (dir_ / "inner2.json")).status, 0);
}

// ---- The command line, running the mcim binary --------------------------------------------------

class AttestationCli : public ::testing::Test {
 protected:
  static std::string mcim() { return MCIM_BINARY_DIR "/src/cli/mcim"; }

  void SetUp() override {
    ASSERT_EQ(::access(mcim().c_str(), X_OK), 0) << mcim() << " not built";
    ok("pki ca --name SupplierRoot --out " + d_ / "sroot");
    ok("pki ca --name SupplierCA --out " + d_ / "sca" + " --parent " + d_ / "sroot");
    ok("pki issue --ca " + d_ / "sca" +
       " --profile platform --subject CN=dev --device-id dev-0001 --model meter-v1 --out " +
       d_ / "plat");
    ok("pki issue --ca " + d_ / "sca" + " --profile result-signing --subject CN=refs --out " +
       d_ / "refsigner");
    ok("pki ca --name PVARoot --out " + d_ / "proot");
    ok("pki issue --ca " + d_ / "proot" + " --profile result-signing --subject CN=pva --out " +
       d_ / "pva");
    ASSERT_TRUE(write_file_atomic(d_ / "m.txt", "bootloader " + std::string(64, '1') + "\nkernel " +
                                                    std::string(64, '2') + "\n")
                    .has_value());
    ok("pki reference --signer " + d_ / "refsigner" + " --model meter-v1 --measurements " +
       d_ / "m.txt" + " --chain " + d_ / "sca/chain.pem --out " + d_ / "refs.json");
    ok("pki attest --key " + d_ / "plat.key" + " --cert " + d_ / "plat.pem" + " --nonce " + kNonce +
       " --measurements " + d_ / "m.txt" + " --out " + d_ / "report.json");
  }

  testing::Command run(const std::string& args) { return run_command(mcim() + " " + args); }
  void ok(const std::string& args) {
    const auto c = run(args);
    ASSERT_EQ(c.status, 0) << args << "\n" << c.output;
  }
  std::string validate_args(const std::string& report, const std::string& nonce = kNonce) {
    return "pki validate --report " + report + " --platform-cert " + d_ / "plat.pem" +
           " --untrusted " + d_ / "sca/chain.pem" + " --ca-file " + d_ / "sroot/ca.pem" +
           " --references " + d_ / "refs.json" + " --nonce " + nonce + " --signer " + d_ / "pva" +
           " --out " + d_ / "result.json";
  }
  std::string verify_result_args(const std::string& nonce = kNonce) {
    return "pki verify-result --result " + d_ / "result.json" + " --ca-file " +
           d_ / "proot/ca.pem" + " --nonce " + nonce;
  }

  static constexpr const char* kNonce = "000102030405060708090a0b0c0d0e0f";
  TempDir d_;
};

TEST_F(AttestationCli, TrustedDeviceExitsZeroAndTheShoAcceptsTheResult) {
  const auto v = run(validate_args(d_ / "report.json") + " --ocsp-status good --json");
  ASSERT_EQ(v.status, 0) << v.output;
  const Json out = Json::parse(v.output);
  EXPECT_EQ(out["verdict"], "trusted");
  EXPECT_EQ(out["device_id"], "dev-0001");
  const auto s = run(verify_result_args());
  EXPECT_EQ(s.status, 0) << s.output;
  EXPECT_NE(s.output.find("verdict: trusted"), std::string::npos);
}

TEST_F(AttestationCli, UntrustedDeviceExitsOneListingEveryFailedCheck) {
  const std::string other_nonce(40, 'e');
  const auto v = run(validate_args(d_ / "report.json", other_nonce) + " --ocsp-status revoked");
  EXPECT_EQ(v.status, 1) << v.output;
  EXPECT_NE(v.output.find("revocation cert_revoked"), std::string::npos) << v.output;
  EXPECT_NE(v.output.find("nonce nonce_mismatch"), std::string::npos) << v.output;
  // The untrusted result is signed all the same, and the SHO reads the same verdict.
  const auto s = run(verify_result_args(other_nonce));
  EXPECT_EQ(s.status, 1) << s.output;
  EXPECT_NE(s.output.find("nonce nonce_mismatch"), std::string::npos) << s.output;
  // Asking about another request's nonce is refused.
  EXPECT_EQ(run(verify_result_args()).status, 1);
}

TEST_F(AttestationCli, OcspWithoutAResponderIsAnOcspInvalidFailureNotACrash) {
  const auto v = run(validate_args(d_ / "report.json") + " --ocsp");
  EXPECT_EQ(v.status, 1) << v.output;
  EXPECT_NE(v.output.find("revocation ocsp_invalid"), std::string::npos) << v.output;
}

TEST_F(AttestationCli, TamperedResultIsRefusedByTheSho) {
  ASSERT_EQ(run(validate_args(d_ / "report.json") + " --ocsp-status good").status, 0);
  std::string text = *read_text_file(d_ / "result.json");
  text.replace(text.find("\"trusted\""), 9, "\"trustee\"");
  ASSERT_TRUE(write_file_atomic(d_ / "result.json", text).has_value());
  const auto s = run(verify_result_args());
  EXPECT_EQ(s.status, 2) << s.output;  // bad_format: not a verdict
  text = *read_text_file(d_ / "result.json");
  text.replace(text.find("\"trustee\""), 9, "\"trusted\"");
  const auto t = text.find("\"time\":") + 8;
  text[t] = text[t] == '1' ? '2' : '1';
  ASSERT_TRUE(write_file_atomic(d_ / "result.json", text).has_value());
  const auto s2 = run(verify_result_args());
  EXPECT_EQ(s2.status, 1) << s2.output;
  EXPECT_NE(s2.output.find("signature"), std::string::npos) << s2.output;
}

TEST_F(AttestationCli, BadFilesAndArgumentsExitTwoWithAMessage) {
  const std::string report = *read_text_file(d_ / "report.json");
  ASSERT_TRUE(write_file_atomic(d_ / "empty.json", std::string_view()).has_value());
  ASSERT_TRUE(
      write_file_atomic(d_ / "truncated.json", report.substr(0, report.size() / 2)).has_value());
  ASSERT_TRUE(write_file_atomic(d_ / "plat.der",
                                ByteView(certificate_der(load_certificate(d_ / "plat.pem")->get())))
                  .has_value());
  const std::string good = " --ocsp-status good";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {validate_args(d_ / "empty.json") + good, "empty"},
      {validate_args(d_ / "truncated.json") + good, "not JSON"},
      {validate_args(d_ / "plat.pem") + good, "not JSON"},
      {validate_args(d_ / "plat.der") + good, "not JSON"},
      {validate_args(d_ / "refs.json") + good, "unknown field"},
      {validate_args(d_ / "missing.json") + good, "missing.json"},
      {validate_args(d_ / "report.json", "abcd") + good, "--nonce"},
      {validate_args(d_ / "report.json"), "--ocsp"},
      {validate_args(d_ / "report.json") + good + " --ocsp", "--ocsp"},
      {validate_args(d_ / "report.json") + " --ocsp-status maybe", "--ocsp-status"},
      {validate_args(d_ / "report.json") + good + " --references " + d_ / "report.json",
       "unknown field"},
      {"pki validate --report " + d_ / "report.json" + " --platform-cert " + d_ / "plat.key" +
           " --ca-file " + d_ / "sroot/ca.pem" + " --references " + d_ / "refs.json" + " --nonce " +
           kNonce + " --signer " + d_ / "pva --out " + d_ / "r.json" + good,
       "plat.key"},
      {"pki validate --report " + d_ / "report.json" + " --platform-cert " + d_ / "plat.pem" +
           " --ca-file " + d_ / "empty.json" + " --references " + d_ / "refs.json" + " --nonce " +
           kNonce + " --signer " + d_ / "pva --out " + d_ / "r.json" + good,
       "empty"},
      {"pki attest --key " + d_ / "pva.key" + " --cert " + d_ / "plat.pem" + " --nonce " + kNonce +
           " --measurements " + d_ / "m.txt --out " + d_ / "x.json",
       "--key does not match"},
      {"pki attest --key " + d_ / "plat.key" + " --cert " + d_ / "plat.pem" + " --nonce " + kNonce +
           " --measurements " + d_ / "truncated.json --out " + d_ / "x.json",
       "line 1"},
      {"pki attest --key " + d_ / "plat.key" + " --cert " + d_ / "plat.pem" + " --nonce " + kNonce +
           " --measurements " + d_ / "m.txt --state broken --out " + d_ / "x.json",
       "--state"},
      {"pki attest --key " + d_ / "plat.pem" + " --cert " + d_ / "plat.key" + " --nonce " + kNonce +
           " --measurements " + d_ / "m.txt --out " + d_ / "x.json",
       "not a private key"},
      {"pki reference --signer " + d_ / "nothing" + " --model m --measurements " + d_ / "m.txt" +
           " --out " + d_ / "x.json",
       "nothing.key"},
      {"pki verify-result --result " + d_ / "truncated.json" + " --ca-file " + d_ / "proot/ca.pem" +
           " --nonce " + kNonce,
       "not JSON"},
  };
  for (const auto& [args, expected] : cases) {
    const auto c = run(args);
    EXPECT_EQ(c.status, 2) << args << "\n" << c.output;
    EXPECT_NE(c.output.find(expected), std::string::npos) << args << "\n" << c.output;
    EXPECT_EQ(c.output.find("terminate"), std::string::npos) << c.output;
  }
}

TEST_F(AttestationCli, ReferencesNotSignedByTheSupplierAreRefused) {
  // The PVA's own signer is a perfectly good document signer, but not the supplier's.
  ok("pki reference --signer " + d_ / "pva" + " --model meter-v1 --measurements " + d_ / "m.txt" +
     " --out " + d_ / "refs.json");
  const auto v = run(validate_args(d_ / "report.json") + " --ocsp-status good --json");
  EXPECT_EQ(v.status, 1) << v.output;
  EXPECT_NE(v.output.find(R"("code":"chain_invalid")"), std::string::npos) << v.output;
  EXPECT_NE(v.output.find("refs.json"), std::string::npos) << v.output;
}

}  // namespace
}  // namespace mcim::pki
