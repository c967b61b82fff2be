// Authentication-vector generation as an AuC runs it, one thread: per-subscriber state cached
// (the K/OPc key schedule, SEQ_HE), RAND from the OS CSPRNG drawn in batches, SQN advanced per
// vector, and the GSM values (SRES, Kc) computed as libosmocore does. BM_LibosmocoreVector runs
// libosmocore's osmo_auth_gen_vec on the same subscribers, RAND source and thread.
// Run: build/bench/mcim_bench_aka (docs/performance.md has the figures).
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

extern "C" {
#include <osmocom/crypt/auth.h>
}

#include "aka/kdf.h"
#include "aka/milenage.h"
#include "aka/sqn.h"
#include "aka/vector.h"
#include "common/random.h"

namespace {

using namespace mcim;
using namespace mcim::aka;

constexpr std::size_t kSubscribers = 4096;
constexpr std::size_t kRandBatchBytes = 16 * 4096;

struct Subscriber {
  Milenage algo;
  HomeSqn sqn;
};

std::vector<Subscriber> make_subscribers(RandomSource& rng) {
  std::vector<Subscriber> subs;
  subs.reserve(kSubscribers);
  for (std::size_t i = 0; i < kSubscribers; ++i) {
    subs.push_back({Milenage(rng.draw<16>(), rng.draw<16>()), HomeSqn(SqnPolicy{}, 0)});
  }
  return subs;
}

void BM_MilenageVector(benchmark::State& state) {
  OsRandom os;
  BatchedRandom rng(os, kRandBatchBytes);
  std::vector<Subscriber> subs = make_subscribers(os);
  const Amf amf{0x80, 0x00};
  std::size_t i = 0;
  for (auto _ : state) {
    Subscriber& s = subs[i++ % kSubscribers];
    const Rand rand = rng.draw<16>();
    const AuthVector av = make_vector(s.algo, rand, *s.sqn.next(0), amf);
    const auto sres = c2_sres(av.xres);
    const auto kc = c3_kc(av.ck, av.ik);
    benchmark::DoNotOptimize(av);
    benchmark::DoNotOptimize(sres);
    benchmark::DoNotOptimize(kc);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_MilenageVector);

void BM_LibosmocoreVector(benchmark::State& state) {
  OsRandom os;
  BatchedRandom rng(os, kRandBatchBytes);
  std::vector<osmo_sub_auth_data> subs(kSubscribers);
  for (auto& a : subs) {
    std::memset(&a, 0, sizeof a);
    a.type = OSMO_AUTH_TYPE_UMTS;
    a.algo = OSMO_AUTH_ALG_MILENAGE;
    const auto k = os.draw<16>(), opc = os.draw<16>();
    std::memcpy(a.u.umts.k, k.data(), 16);
    std::memcpy(a.u.umts.opc, opc.data(), 16);
    a.u.umts.amf[0] = 0x80;
    a.u.umts.ind_bitlen = 5;
  }
  std::size_t i = 0;
  for (auto _ : state) {
    osmo_sub_auth_data& a = subs[i++ % kSubscribers];
    const Rand rand = rng.draw<16>();
    osmo_auth_vector vec;
    if (osmo_auth_gen_vec(&vec, &a, rand.data()) != 0) {
      state.SkipWithError("osmo_auth_gen_vec failed");
      break;
    }
    benchmark::DoNotOptimize(vec);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_LibosmocoreVector);

// What an EPS vector adds: KASME is one HMAC-SHA-256 (TS 33.401 A.2).
void BM_MilenageVectorWithKasme(benchmark::State& state) {
  OsRandom os;
  BatchedRandom rng(os, kRandBatchBytes);
  std::vector<Subscriber> subs = make_subscribers(os);
  const PlmnId plmn = *parse_plmn("00101");
  std::size_t i = 0;
  for (auto _ : state) {
    Subscriber& s = subs[i++ % kSubscribers];
    const AuthVector av = make_vector(s.algo, rng.draw<16>(), *s.sqn.next(0), Amf{0x80, 0x00});
    benchmark::DoNotOptimize(derive_kasme(av.ck, av.ik, plmn, av.sqn_xor_ak()));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_MilenageVectorWithKasme);

// The cost this benchmark avoids by batching: one DRBG call per RAND.
void BM_RandBytes16(benchmark::State& state) {
  OsRandom os;
  for (auto _ : state) benchmark::DoNotOptimize(os.draw<16>());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_RandBytes16);

}  // namespace

BENCHMARK_MAIN();
