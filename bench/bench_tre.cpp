// The TRE's throughput on this machine's disk (issue 5): authentications with the durable SQN
// update (one sealed commit each), package installs (registration + install, two commits), and
// the raw cost those are made of: one crash-safe file replacement (write, fsync, rename, fsync of
// the directory). Results and the command line: docs/performance.md.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aka/milenage.h"
#include "aka/vector.h"
#include "bench_util.h"
#include "common/file.h"
#include "pki/authority.h"
#include "tre/tre.h"

namespace {

using namespace mcim;
using bench::die;
using bench::must;
namespace fs = std::filesystem;

const Bytes<16> kOp = {0xcd, 0xc2, 0x02, 0xd5, 0x12, 0x3e, 0x20, 0xf6,
                       0x2b, 0x6d, 0x67, 0x6a, 0xc7, 0x2c, 0xb3, 0x18};

// Supplier and operator CAs, one package signer, one TRE; under $MCIM_BENCH_DIR (default: the
// working directory, so that the disk measured is the one the TRE would use) and removed after.
struct Bench {
  std::string root;
  SystemClock clock;
  OsRandom rng;
  std::optional<pki::Authority> supplier, operators;
  pki::Issued signer;
  tre::SupplierBundle bundle;
  std::string tre_dir;

  Bench() {
    const char* base = std::getenv("MCIM_BENCH_DIR");
    std::string tmpl = std::string(base != nullptr ? base : ".") + "/mcim-bench-tre-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) std::exit(1);
    root = tmpl;
    supplier = must(
        pki::Authority::create(root + "/supplier", "Supplier CA", nullptr, 3650, "", clock, rng),
        "supplier CA");
    operators = must(
        pki::Authority::create(root + "/operators", "Operator Root", nullptr, 3650, "", clock, rng),
        "operator CA");
    pki::CertSpec spec;
    spec.profile = pki::Profile::package_signing;
    spec.subject = "CN=package signer sho-a,O=sho-a";
    spec.sans = {"URI:urn:mcim:operator:sho-a"};
    signer = must(operators->issue(spec, clock, rng), "signer");
    tre::ManufactureSpec m;
    m.pcid = "001019990000001";
    m.ro_operator = "ro-1";
    m.op = Secret<16>(kOp);
    m.operator_roots = {operators->cert()};
    bundle = must(tre::manufacture(*supplier, m, clock, rng), "manufacture");
    tre_dir = root + "/tre";
    must(tre::Tre::init(tre::Options{tre_dir}, bundle), "init");
  }
  ~Bench() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }

  ByteVec package(X509* platform, std::uint64_t seq, const Bytes<16>& nonce) {
    pki::McimDocument d;
    d.package_id = "pkg-" + std::to_string(seq);
    d.device_id = bundle.device_id;
    d.imsi = "00102" + std::to_string(1000000000 + seq);
    Bytes<16> k{};
    rng.fill(k);
    must(d.set_key(k), "key");
    d.opc = Secret<16>(aka::Milenage::compute_opc(k, kOp));
    d.policy.owner = "sho-a";
    d.registration_nonce = nonce;
    const auto now = std::chrono::floor<std::chrono::seconds>(clock.now());
    d.not_before = now - std::chrono::hours(1);
    d.not_after = now + std::chrono::hours(24);
    d.sequence = seq;
    pki::PackageSigner s{signer.cert.get(), signer.key.get(), {}};
    return must(pki::seal_package(d, s, platform), "seal");
  }
};

void BM_TreAuthenticate(benchmark::State& st) {
  Bench b;
  auto tre = must(tre::Tre::open(tre::Options{b.tre_dir}), "open");
  aka::K128 k = b.bundle.k.get();
  aka::Milenage algo(k, b.bundle.opc.get());
  aka::SqnPolicy policy;
  aka::HomeSqn home(policy);
  for (auto _ : st) {
    st.PauseTiming();
    aka::Rand rand{};
    b.rng.fill(rand);
    const auto av = aka::make_vector(algo, rand, must(home.next(0), "sqn"), {0x80, 0x00});
    st.ResumeTiming();
    auto answer = must(tre.authenticate(b.bundle.pcid, av.rand, av.autn), "authenticate");
    if (!std::holds_alternative<aka::UsimSuccess>(answer))
      die("authenticate", Error(ErrorCode::internal, "AUTS"));
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_TreAuthenticate)->Unit(benchmark::kMillisecond)->Iterations(500)->UseRealTime();

void BM_TreInstall(benchmark::State& st) {
  Bench b;
  auto tre = must(tre::Tre::open(tre::Options{b.tre_dir}), "open");
  std::uint64_t seq = 0;
  for (auto _ : st) {
    st.PauseTiming();
    // The registry holds 48 live credentials: empty it now and then, outside the measurement.
    if (seq % 40 == 39) must(tre.pristine(), "pristine");
    Bytes<16> nonce{};
    b.rng.fill(nonce);
    const ByteVec pkg = b.package(tre.platform_certificate(), ++seq, nonce);
    st.ResumeTiming();
    must(tre.record_registration(nonce), "register");
    auto out = tre.install(pkg);
    if (!out.result) die("install", out.result.error());
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_TreInstall)->Unit(benchmark::kMillisecond)->Iterations(200)->UseRealTime();

// What every commit pays: write_file_atomic of a state-sized file.
void BM_AtomicReplace(benchmark::State& st) {
  Bench b;
  const std::string path = b.root + "/replace.bin";
  const ByteVec data(static_cast<std::size_t>(st.range(0)), 0x5a);
  for (auto _ : st) must(write_file_atomic(path, data, 0600), "write");
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_AtomicReplace)
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(500)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
