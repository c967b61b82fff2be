// PKI operations, one thread, with trust anchors, chains and keys parsed once as a service
// would keep them. Run: build/bench/mcim_bench_pki (figures in docs/performance.md).
#include <benchmark/benchmark.h>
#include <openssl/evp.h>

#include <array>
#include <filesystem>
#include <optional>
#include <string>

#include "pki/attestation.h"
#include "pki/authority.h"
#include "pki/ocsp.h"
#include "pki/package.h"
#include "pki/pbkdf2.h"
#include "pki/verify.h"

namespace {

using namespace mcim;
using namespace mcim::pki;

// A supplier root and CA, and one platform certificate, created once in a temporary directory.
struct Fixture {
  Fixture() {
    dir = std::filesystem::temp_directory_path() / ("mcim-bench-pki-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    root.emplace(*Authority::create(dir + "/root", "Bench Root", nullptr, 3650, "", clock, rng));
    ca.emplace(*Authority::create(dir + "/ca", "Bench CA", &*root, 3650, "", clock, rng));
    CertSpec spec;
    spec.profile = Profile::platform;
    spec.subject = "CN=bench device";
    spec.device_id = "dev-1";
    spec.model = "bench-model";
    platform.emplace(*ca->issue(spec, clock, rng));
    anchors.emplace(*TrustAnchors::from_certs({root->cert()}));

    op_root.emplace(*Authority::create(dir + "/op-root", "Bench SHO Root", nullptr, 3650, "", clock, rng));
    op_ca.emplace(*Authority::create(dir + "/op-ca", "Bench SHO CA", &*op_root, 3650, "", clock, rng));
    CertSpec signer_spec;
    signer_spec.profile = Profile::package_signing;
    signer_spec.subject = "CN=bench package signer";
    signer_spec.sans = {"URI:urn:mcim:operator:sho-bench"};
    package_signer.emplace(*op_ca->issue(signer_spec, clock, rng));
    operator_anchors.emplace(*TrustAnchors::from_certs({op_root->cert()}));

    CertSpec ref_spec;
    ref_spec.profile = Profile::result_signing;
    ref_spec.subject = "CN=bench reference signer";
    reference_signer.emplace(*ca->issue(ref_spec, clock, rng));
    pva_root.emplace(*Authority::create(dir + "/pva", "Bench PVA", nullptr, 3650, "", clock, rng));
    CertSpec ocsp_spec;
    ocsp_spec.profile = Profile::ocsp_signing;
    ocsp_spec.subject = "CN=bench ocsp responder";
    ocsp_signer.emplace(*ca->issue(ocsp_spec, clock, rng));
    ref_spec.subject = "CN=bench result signer";
    result_signer.emplace(*pva_root->issue(ref_spec, clock, rng));
  }
  ~Fixture() { std::filesystem::remove_all(dir); }

  std::string dir;
  SystemClock clock;
  OsRandom rng;
  std::optional<Authority> root, ca, op_root, op_ca, pva_root;
  std::optional<Issued> platform, package_signer, reference_signer, result_signer, ocsp_signer;
  std::optional<TrustAnchors> anchors, operator_anchors;
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// The platform chain check of every validation: two ECDSA verifications and path building.
void BM_ChainVerify(benchmark::State& state) {
  Fixture& f = fixture();
  for (auto _ : state) {
    auto v = verify_chain(*f.anchors, f.platform->cert.get(), {f.ca->cert()}, f.clock.now());
    if (!v) state.SkipWithError(v.error().message.c_str());
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_ChainVerify);

McimDocument bench_document() {
  McimDocument d;
  d.package_id = "pkg-bench";
  d.device_id = "dev-1";
  d.imsi = "001010000000001";
  (void)d.set_key(Bytes<16>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
  d.opc = Secret<16>(Bytes<16>{16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1});
  d.amf = {0x80, 0x00};
  d.sqn = {0, 0, 0, 0, 0, 0x20};
  d.policy.owner = "sho-bench";
  d.policy.operations = {McimOperation::activate, McimOperation::block};
  const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  d.not_before = now - std::chrono::hours(1);
  d.not_after = now + std::chrono::hours(24);
  d.sequence = 1;
  d.registration_nonce = OsRandom().draw<16>();
  return d;
}

PackageSigner signer_of(Fixture& f) {
  return PackageSigner{f.package_signer->cert.get(), f.package_signer->key.get(), {f.op_ca->cert()}};
}

// The SHO seals one MCIM for one TRE: ECDH + AES-256-GCM, then one ECDSA signature.
void BM_PackageSeal(benchmark::State& state) {
  Fixture& f = fixture();
  const McimDocument doc = bench_document();
  const PackageSigner signer = signer_of(f);
  for (auto _ : state) {
    auto pkg = seal_package(doc, signer, f.platform->cert.get());
    if (!pkg) state.SkipWithError(pkg.error().message.c_str());
    benchmark::DoNotOptimize(pkg);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_PackageSeal);

// The TRE opens it: signature and signer chain to the operator root, ECDH, AES-GCM, document
// decoding and every check. The recipient and anchors are parsed once, as a TRE keeps them.
void BM_PackageOpen(benchmark::State& state) {
  Fixture& f = fixture();
  const ByteVec pkg = *seal_package(bench_document(), signer_of(f), f.platform->cert.get());
  auto recipient = PackageRecipient::create(f.platform->cert.get(), f.platform->key.get());
  if (!recipient) {
    state.SkipWithError(recipient.error().message.c_str());
    return;
  }
  for (auto _ : state) {
    auto doc = open_package(pkg, *recipient, *f.operator_anchors, f.clock);
    if (!doc) state.SkipWithError(doc.error().message.c_str());
    benchmark::DoNotOptimize(doc);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_PackageOpen);

OcspResponder make_responder(Fixture& f) {
  return *OcspResponder::create(f.ca->dir(), f.ocsp_signer->cert.get(), f.ocsp_signer->key.get(),
                                f.clock);
}

// The supplier CA's responder answering one request: parse, index lookup, one ECDSA signature.
void BM_OcspRespond(benchmark::State& state) {
  Fixture& f = fixture();
  const OcspResponder responder = make_responder(f);
  ByteVec nonce;
  const ByteVec request = *make_ocsp_request(f.platform->cert.get(), f.ca->cert(), f.rng, &nonce);
  for (auto _ : state) {
    ByteVec response = responder.respond(request);
    benchmark::DoNotOptimize(response);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_OcspRespond);

// What the PVA does per device (F2 steps 8-10), everything parsed once kept: decode the signed
// report, verify the OCSP answer about the platform certificate (signature, delegated signer,
// nonce, freshness), validate (chain, revocation, report signature, device id, nonce,
// freshness, measurements) and sign the result.
void BM_AttestationValidate(benchmark::State& state) {
  Fixture& f = fixture();
  const OcspResponder responder = make_responder(f);
  ByteVec ocsp_nonce;
  const ByteVec request =
      *make_ocsp_request(f.platform->cert.get(), f.ca->cert(), f.rng, &ocsp_nonce);
  const ByteVec ocsp_response = responder.respond(request);

  std::vector<Measurement> measurements = {{"tre-firmware", sha256(ByteView())},
                                           {"tre-config", sha256(ByteVec{1, 2, 3})}};
  ReferenceSet refs{"bench-model", measurements,
                    std::chrono::floor<std::chrono::seconds>(f.clock.now())};
  const std::string refs_text = *sign_references(refs, f.reference_signer->key.get(),
                                                 {f.reference_signer->cert.get(), f.ca->cert()});
  Validator validator(*TrustAnchors::from_certs({f.root->cert()}));
  if (auto r = validator.add_intermediates({f.ca->cert()}, f.clock); !r) {
    state.SkipWithError(r.error().message.c_str());
    return;
  }
  (void)validator.add_references(*verify_references(refs_text, validator.supplier(), {}, f.clock));
  std::vector<X509Ptr> pva_certs;
  pva_certs.push_back(up_ref(f.result_signer->cert.get()));
  const ResultSigner signer = *ResultSigner::create(up_ref(f.result_signer->key.get()),
                                                    std::move(pva_certs));

  Report report;
  report.device_id = "dev-1";
  report.state = TreState::pristine;
  report.measurements = measurements;
  report.nonce = ByteVec(16, 0x5a);
  report.time = std::chrono::floor<std::chrono::seconds>(f.clock.now());
  const std::string report_text = *sign_report(report, f.platform->key.get());

  for (auto _ : state) {
    auto decoded = decode_signed_report(report_text);
    auto revocation = verify_ocsp_response(ocsp_response, f.platform->cert.get(), f.ca->cert(),
                                           &ocsp_nonce, f.clock);
    const ValidationResult result = validator.validate(*decoded, f.platform->cert.get(),
                                                       {f.ca->cert()}, revocation, report.nonce,
                                                       f.clock);
    if (!result.trusted()) {
      state.SkipWithError(result.failures.front().message.c_str());
      break;
    }
    auto signed_result = signer.sign(result);
    benchmark::DoNotOptimize(signed_result);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_AttestationValidate);

// The bootstrap key's PBKDF2-HMAC-SHA256 (tre/bootstrap_key.h: 8-digit PIN, 100,000 iterations,
// 32 bytes), by pki::pbkdf2_hmac_sha256 and by OpenSSL's PKCS5_PBKDF2_HMAC, which give the same
// key (pbkdf2_test).
constexpr std::string_view kPin = "12345678", kSalt = "mcim-bootstrap/1dev-0010199000001";
constexpr unsigned kIterations = 100'000;

void BM_Pbkdf2Mcim(benchmark::State& state) {
  std::array<std::uint8_t, 32> key{};
  for (auto _ : state) {
    auto r = pbkdf2_hmac_sha256(
        ByteView(reinterpret_cast<const std::uint8_t*>(kPin.data()), kPin.size()),
        ByteView(reinterpret_cast<const std::uint8_t*>(kSalt.data()), kSalt.size()), kIterations,
        key);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_Pbkdf2Mcim)->Unit(benchmark::kMillisecond);

void BM_Pbkdf2OpenSsl(benchmark::State& state) {
  std::array<std::uint8_t, 32> key{};
  for (auto _ : state) {
    const int ok = PKCS5_PBKDF2_HMAC(kPin.data(), static_cast<int>(kPin.size()),
                                     reinterpret_cast<const std::uint8_t*>(kSalt.data()),
                                     static_cast<int>(kSalt.size()), static_cast<int>(kIterations),
                                     EVP_sha256(), static_cast<int>(key.size()), key.data());
    benchmark::DoNotOptimize(ok);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_Pbkdf2OpenSsl)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
