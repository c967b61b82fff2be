// PKI operations, one thread, with trust anchors, chains and keys parsed once as a service
// would keep them. Run: build/bench/mcim_bench_pki (figures in docs/performance.md).
#include <benchmark/benchmark.h>

#include <filesystem>
#include <optional>
#include <string>

#include "pki/authority.h"
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
  }
  ~Fixture() { std::filesystem::remove_all(dir); }

  std::string dir;
  SystemClock clock;
  OsRandom rng;
  std::optional<Authority> root, ca;
  std::optional<Issued> platform;
  std::optional<TrustAnchors> anchors;
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

}  // namespace

BENCHMARK_MAIN();
