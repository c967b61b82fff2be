#include "cli/aka_demo.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "aka/kdf.h"
#include "aka/milenage.h"
#include "aka/vector.h"
#include "common/hex.h"
#include "common/random.h"
#include "common/secure.h"

namespace mcim::cli {
namespace {

using namespace mcim::aka;
using Clock = std::chrono::steady_clock;

struct Step {
  std::string party, action, result;
  bool ok;
  double micros;
};

class Recorder {
 public:
  template <class F>
  void step(std::string party, std::string action, F&& f) {
    const auto t0 = Clock::now();
    auto [ok, result] = f();
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    steps_.push_back({std::move(party), std::move(action), std::move(result), ok, us});
  }
  const std::vector<Step>& steps() const { return steps_; }
  bool all_ok() const {
    return std::all_of(steps_.begin(), steps_.end(), [](const Step& s) { return s.ok; });
  }

 private:
  std::vector<Step> steps_;
};

std::string short_hex(ByteView v) {
  return to_hex(v.first(std::min<std::size_t>(v.size(), 6))) + "…";
}

std::string sqn_text(const SqnPolicy& p, const Sqn& sqn) {
  const auto v = sqn_value(sqn);
  return fmt::format("SQN {} (SEQ {}, IND {})", to_hex(sqn), p.seq_of(v), p.ind_of(v));
}

// The scenario; every step records what was expected to happen and whether it did.
void run_scenario(Recorder& rec, RandomSource& rng) {
  const SqnPolicy policy;
  Secret<16> k(rng.draw<16>());
  Secret<16> op(rng.draw<16>());
  const Milenage auc_algo = Milenage::with_op(k.get(), op.get());
  const Milenage usim_algo =
      Milenage::with_op(k.get(), op.get());  // the same credential, in the TRE
  HomeSqn he(policy);
  UsimSqn usim(policy);
  const std::string snn = "5G:mnc001.mcc001.3gppnetwork.org";
  const PlmnId plmn = *parse_plmn("00101");
  AuthVector av{};

  rec.step("AuC", "generate vector", [&] {
    av = make_vector(auc_algo, rng.draw<16>(), *he.next(0), Amf{0x80, 0x00});
    return std::pair{true, sqn_text(policy, av.sqn) + ", RAND " + short_hex(av.rand)};
  });
  Res res{};
  Ck ck{};
  Ik ik{};
  rec.step("USIM", "verify AUTN (MAC-A, SQN fresh), answer", [&] {
    auto a = usim_authenticate(usim_algo, usim, av.rand, av.autn);
    if (!a || !std::holds_alternative<UsimSuccess>(*a))
      return std::pair{false, std::string("refused")};
    const auto& s = std::get<UsimSuccess>(*a);
    res = s.res, ck = s.ck, ik = s.ik;
    return std::pair{true, "RES " + short_hex(res.view())};
  });
  rec.step("network", "compare RES with XRES (constant time)", [&] {
    const bool ok = constant_time_equal(res.view(), av.xres.view());
    return std::pair{ok, std::string(ok ? "authenticated" : "mismatch")};
  });
  rec.step("both", "derive KASME (EPS) and XRES*/RES* (5G)", [&] {
    const bool kasme = derive_kasme(ck, ik, plmn, av.sqn_xor_ak()) ==
                       derive_kasme(av.ck, av.ik, plmn, av.sqn_xor_ak());
    const bool star = derive_xres_star(ck, ik, snn, av.rand, res) ==
                      derive_xres_star(av.ck, av.ik, snn, av.rand, av.xres);
    return std::pair{kasme && star, std::string(kasme && star ? "equal on both sides" : "differ")};
  });
  rec.step("USIM", "replayed vector", [&] {
    auto a = usim_authenticate(usim_algo, usim, av.rand, av.autn);
    const bool ok = a && std::holds_alternative<UsimSyncFailure>(*a);
    return std::pair{ok, std::string(ok ? "synchronisation failure, AUTS sent" : "accepted!")};
  });
  rec.step("USIM", "forged AUTN (one bit flipped)", [&] {
    Autn forged = av.autn;
    forged[15] ^= 1;
    auto a = usim_authenticate(usim_algo, usim, av.rand, forged);
    const bool ok = !a && a.error().code == ErrorCode::mac_mismatch;
    return std::pair{ok, std::string(ok ? "MAC failure, no answer" : "accepted!")};
  });

  // The device was used with another AuC instance meanwhile: its SQN is far ahead.
  usim.record(sqn_bytes(policy.join(5000, 0)));
  AuthVector stale{};
  Auts auts{};
  rec.step("AuC", "generate vector (USIM is ahead)", [&] {
    stale = make_vector(auc_algo, rng.draw<16>(), *he.next(0), Amf{0x80, 0x00});
    return std::pair{true, sqn_text(policy, stale.sqn)};
  });
  rec.step("USIM", "verify AUTN", [&] {
    auto a = usim_authenticate(usim_algo, usim, stale.rand, stale.autn);
    const bool ok = a && std::holds_alternative<UsimSyncFailure>(*a);
    if (ok) auts = std::get<UsimSyncFailure>(*a).auts;
    return std::pair{ok, std::string(ok ? "not fresh: AUTS " + short_hex(auts) : "accepted!")};
  });
  rec.step("AuC", "verify MAC-S, recover SQN_MS, resynchronise", [&] {
    auto sqn_ms = recover_sqn_ms(auc_algo, stale.rand, auts);
    if (!sqn_ms) return std::pair{false, sqn_ms.error().message};
    he.resynchronise(*sqn_ms);
    return std::pair{true, fmt::format("SQN_MS {}, SEQ_HE now {}", to_hex(*sqn_ms), he.seq_he())};
  });
  rec.step("AuC+USIM", "new vector after resynchronisation", [&] {
    const AuthVector fresh = make_vector(auc_algo, rng.draw<16>(), *he.next(3), Amf{0x80, 0x00});
    auto a = usim_authenticate(usim_algo, usim, fresh.rand, fresh.autn);
    const bool ok =
        a && std::holds_alternative<UsimSuccess>(*a) && std::get<UsimSuccess>(*a).res == fresh.xres;
    return std::pair{ok, (ok ? "accepted, " : "refused, ") + sqn_text(policy, fresh.sqn)};
  });
}

struct Throughput {
  std::size_t vectors;
  double seconds;
};

Throughput measure(RandomSource& os, std::size_t n, std::ostream& progress, bool show) {
  BatchedRandom rng(os, 16 * 4096);
  const Milenage algo(rng.draw<16>(), rng.draw<16>());
  HomeSqn he(SqnPolicy{});
  const std::size_t chunk = std::max<std::size_t>(n / 40, 1);
  const auto t0 = Clock::now();
  volatile std::uint8_t sink = 0;  // keeps the vectors observable to the optimiser
  for (std::size_t i = 0; i < n; ++i) {
    const AuthVector av = make_vector(algo, rng.draw<16>(), *he.next(0), Amf{0x80, 0x00});
    sink = static_cast<std::uint8_t>(sink ^ av.autn[15]);
    if (show && (i + 1) % chunk == 0) {
      const std::size_t bars = (i + 1) * 40 / n;
      progress << "\r  [" << std::string(bars, '#') << std::string(40 - bars, ' ') << "] "
               << (i + 1) * 100 / n << "%" << std::flush;
    }
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (show) progress << "\r" << std::string(50, ' ') << "\r" << std::flush;
  return {n, s};
}

void print_text(std::ostream& out, const Recorder& rec, const Throughput& t) {
  out << "mcim aka demo: 3GPP AKA (TS 33.102 §6.3) between a home AuC and a device's USIM\n"
      << "subscriber: MILENAGE, K and OP random (never printed), IND length 5, AMF 8000\n\n";
  out << fmt::format(" {:>2}  {:<8}  {:<44}  {:>9}  {}\n", "#", "party", "step", "time µs",
                     "result");
  int n = 0;
  for (const Step& s : rec.steps()) {
    out << fmt::format(" {:>2}  {:<8}  {:<44}  {:>9.1f}  {} {}\n", ++n, s.party, s.action, s.micros,
                       s.ok ? "ok  " : "FAIL", s.result);
  }
  out << fmt::format(
      "\nvector generation, one thread: {} vectors in {:.3f} s = {:.2f} M vectors/s\n", t.vectors,
      t.seconds, static_cast<double>(t.vectors) / t.seconds / 1e6);
  out << (rec.all_ok() ? "result: every step behaved as TS 33.102 requires\n"
                       : "result: FAILED, see the steps marked FAIL\n");
}

void print_json(std::ostream& out, const Recorder& rec, const Throughput& t) {
  nlohmann::ordered_json j;
  j["ok"] = rec.all_ok();
  j["steps"] = nlohmann::ordered_json::array();
  for (const Step& s : rec.steps()) {
    j["steps"].push_back({{"party", s.party},
                          {"step", s.action},
                          {"ok", s.ok},
                          {"us", s.micros},
                          {"result", s.result}});
  }
  j["vectors"] = t.vectors;
  j["vectors_per_s"] = static_cast<double>(t.vectors) / t.seconds;
  out << j.dump() << '\n';
}

}  // namespace

void register_aka_demo(CLI::App& aka, const bool& json, int* exit_code, std::ostream& out,
                   std::ostream& err) {
  auto vectors = std::make_shared<std::size_t>(10'000'000);
  auto* demo = aka.add_subcommand(
      "demo", "an AuC and a USIM: vector, replay, forged AUTN, resynchronisation, throughput");
  demo->add_option("--vectors", *vectors, "vectors for the throughput run (default 10000000)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000'000}));
  demo->callback([vectors, &json, exit_code, &out, &err] {
    OsRandom os;
    Recorder rec;
    run_scenario(rec, os);
    const bool progress = !json && isatty(STDERR_FILENO) == 1;
    if (progress) err << "measuring vector generation (" << *vectors << " vectors)\n";
    const Throughput t = measure(os, *vectors, err, progress);
    if (json) {
      print_json(out, rec, t);
    } else {
      print_text(out, rec, t);
    }
    *exit_code = rec.all_ok() ? kExitOk : kExitRefused;
  });
}

}  // namespace mcim::cli
