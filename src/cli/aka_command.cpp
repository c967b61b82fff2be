#include "cli/aka_command.h"

#include <fmt/format.h>

#include <memory>

#include "aka/kdf.h"
#include "aka/milenage.h"
#include "aka/tuak.h"
#include "aka/vector.h"
#include "common/secure.h"

namespace mcim::cli {
namespace {

using namespace mcim::aka;

// Unwraps a Result inside a function returning Result<Fields>.
#define MCIM_TRY(var, expr)                                        \
  auto var##_result = (expr);                                      \
  if (!var##_result) return std::unexpected(var##_result.error()); \
  auto var = std::move(*var##_result)

bool is_tuak(const AlgorithmArgs& a) { return a.algo == "tuak"; }

Result<void> check_algo(const AlgorithmArgs& a) {
  if (a.algo != "milenage" && a.algo != "tuak") {
    return fail(ErrorCode::invalid_argument, "--algo: must be milenage or tuak");
  }
  const bool milenage_keys = !a.op.empty() || !a.opc.empty();
  const bool tuak_keys = !a.top.empty() || !a.topc.empty();
  if (is_tuak(a) && milenage_keys) {
    return fail(ErrorCode::conflicting_arguments, "--op/--opc: TUAK takes --top or --topc");
  }
  if (!is_tuak(a) && tuak_keys) {
    return fail(ErrorCode::conflicting_arguments,
                "--top/--topc: MILENAGE takes --op or --opc (use --algo tuak for TUAK)");
  }
  return {};
}

// Exactly one of two alternatives must be given.
Result<bool> choose(const std::string& first, const std::string& second, std::string_view n1,
                    std::string_view n2) {
  if (!first.empty() && !second.empty()) {
    return fail(ErrorCode::conflicting_arguments, fmt::format("{} and {}: give only one", n1, n2));
  }
  if (first.empty() && second.empty()) {
    return fail(ErrorCode::missing_argument, fmt::format("{} or {}: one is required", n1, n2));
  }
  return !first.empty();
}

Result<MilenageConstants> milenage_constants(const AlgorithmArgs& a) {
  MilenageConstants c;
  for (std::size_t i = 0; i < 5; ++i) {
    if (!a.c[i].empty()) {
      MCIM_TRY(ci, parse_hex_fixed<16>(a.c[i], fmt::format("--c{}", i + 1)));
      c.c[i] = ci;
    }
    if (a.r[i]) c.r[i] = *a.r[i];
  }
  if (auto v = c.validate(); !v) {
    return fail(ErrorCode::invalid_argument, "--" + v.error().message);
  }
  return c;
}

Result<std::unique_ptr<Algorithm>> make_milenage(const AlgorithmArgs& a) {
  MCIM_TRY(constants, milenage_constants(a));
  MCIM_TRY(use_op, choose(a.op, a.opc, "--op", "--opc"));
  MCIM_TRY(k, parse_hex_fixed<16>(a.k, "--k"));
  Secret<16> key(k);
  secure_wipe(k);
  if (use_op) {
    MCIM_TRY(op, parse_hex_fixed<16>(a.op, "--op"));
    auto m = std::make_unique<Milenage>(Milenage::with_op(key.get(), op, constants));
    secure_wipe(op);
    return m;
  }
  MCIM_TRY(opc, parse_hex_fixed<16>(a.opc, "--opc"));
  auto m = std::make_unique<Milenage>(key.get(), opc, constants);
  secure_wipe(opc);
  return m;
}

TuakParams tuak_params(const AlgorithmArgs& a) {
  return TuakParams{.mac_bits = a.mac_len,
                    .res_bits = a.res_len,
                    .ck_bits = a.ck_len,
                    .ik_bits = a.ik_len,
                    .keccak_iterations = a.keccak_iterations};
}

Result<Bytes<32>> tuak_topc(const AlgorithmArgs& a, ByteView k) {
  MCIM_TRY(use_top, choose(a.top, a.topc, "--top", "--topc"));
  if (!use_top) return parse_hex_fixed<32>(a.topc, "--topc");
  MCIM_TRY(top, parse_hex_fixed<32>(a.top, "--top"));
  auto topc = Tuak::compute_topc(k, top, a.keccak_iterations);
  secure_wipe(top);
  return topc;
}

Result<std::unique_ptr<Tuak>> make_tuak(const AlgorithmArgs& a) {
  MCIM_TRY(k, parse_hex_lengths(a.k, "--k", {16, 32}));
  auto topc = tuak_topc(a, k);
  if (!topc) {
    secure_wipe(k);
    return std::unexpected(topc.error());
  }
  auto t = Tuak::create(k, *topc, tuak_params(a));
  secure_wipe(k);
  secure_wipe(*topc);
  if (!t) return std::unexpected(t.error());
  return std::make_unique<Tuak>(std::move(*t));
}

// The algorithm as used in AUTN/AUTS and vectors: 64-bit MAC, 128-bit CK and IK.
Result<std::unique_ptr<Algorithm>> make_algorithm(const AlgorithmArgs& a) {
  if (auto v = check_algo(a); !v) return std::unexpected(v.error());
  if (a.k.empty()) return fail(ErrorCode::missing_argument, "--k: required");
  if (!is_tuak(a)) return make_milenage(a);
  if (a.mac_len != 64 || a.ck_len != 128 || a.ik_len != 128) {
    return fail(ErrorCode::unsupported,
                "--mac-len/--ck-len/--ik-len: AUTN and vectors use a 64-bit MAC and 128-bit CK "
                "and IK; use `mcim aka functions` for other output lengths");
  }
  MCIM_TRY(t, make_tuak(a));
  return std::unique_ptr<Algorithm>(std::move(t));
}

}  // namespace

Result<Fields> run_vector(const VectorArgs& args, RandomSource& random) {
  MCIM_TRY(algo, make_algorithm(args.alg));
  MCIM_TRY(sqn, parse_hex_fixed<6>(args.sqn, "--sqn"));
  MCIM_TRY(amf, parse_hex_fixed<2>(args.amf, "--amf"));
  Rand rand{};
  if (args.rand.empty()) {
    rand = random.draw<16>();
  } else {
    MCIM_TRY(r, parse_hex_fixed<16>(args.rand, "--rand"));
    rand = r;
  }
  std::optional<PlmnId> plmn;
  if (!args.plmn.empty()) {
    auto p = parse_plmn(args.plmn);
    if (!p) return fail(ErrorCode::invalid_argument, "--" + p.error().message);
    plmn = *p;
  }
  AuthVector av = make_vector(*algo, rand, sqn, amf);
  Fields f;
  f.hex("rand", av.rand).hex("xres", av.xres.view()).hex("ck", av.ck).hex("ik", av.ik);
  f.hex("autn", av.autn).hex("ak", av.ak).hex("mac_a", av.mac_a);
  f.hex("sres", c2_sres(av.xres)).hex("kc", c3_kc(av.ck, av.ik));
  if (!args.snn.empty()) {
    f.hex("xres_star", derive_xres_star(av.ck, av.ik, args.snn, av.rand, av.xres));
    f.hex("kausf", derive_kausf(av.ck, av.ik, args.snn, av.sqn_xor_ak()));
  }
  if (plmn) f.hex("kasme", derive_kasme(av.ck, av.ik, *plmn, av.sqn_xor_ak()));
  secure_wipe(av.ck);
  secure_wipe(av.ik);
  return f;
}

Result<Fields> run_auts(const AutsArgs& args) {
  MCIM_TRY(algo, make_algorithm(args.alg));
  MCIM_TRY(rand, parse_hex_fixed<16>(args.rand, "--rand"));
  MCIM_TRY(sqn_ms, parse_hex_fixed<6>(args.sqn_ms, "--sqn-ms"));
  Fields f;
  f.hex("auts", make_auts(*algo, rand, sqn_ms));
  return f;
}

Result<Fields> run_resync(const ResyncArgs& args) {
  MCIM_TRY(algo, make_algorithm(args.alg));
  MCIM_TRY(rand, parse_hex_fixed<16>(args.rand, "--rand"));
  MCIM_TRY(auts, parse_hex_fixed<14>(args.auts, "--auts"));
  MCIM_TRY(sqn_ms, recover_sqn_ms(*algo, rand, auts));
  Fields f;
  f.hex("sqn_ms", sqn_ms);
  return f;
}

Result<Fields> run_opc(const AlgorithmArgs& a) {
  if (auto v = check_algo(a); !v) return std::unexpected(v.error());
  if (a.k.empty()) return fail(ErrorCode::missing_argument, "--k: required");
  Fields f;
  if (is_tuak(a)) {
    if (a.top.empty()) return fail(ErrorCode::missing_argument, "--top: required");
    if (!a.topc.empty()) return fail(ErrorCode::conflicting_arguments, "--topc: not an input");
    MCIM_TRY(k, parse_hex_lengths(a.k, "--k", {16, 32}));
    auto topc = tuak_topc(a, k);
    secure_wipe(k);
    if (!topc) return std::unexpected(topc.error());
    return f.hex("topc", *topc);
  }
  if (a.op.empty()) return fail(ErrorCode::missing_argument, "--op: required");
  if (!a.opc.empty()) return fail(ErrorCode::conflicting_arguments, "--opc: not an input");
  MCIM_TRY(k, parse_hex_fixed<16>(a.k, "--k"));
  MCIM_TRY(op, parse_hex_fixed<16>(a.op, "--op"));
  f.hex("opc", Milenage::compute_opc(k, op));
  secure_wipe(k);
  return f;
}

Result<Fields> run_functions(const FunctionsArgs& args) {
  if (auto v = check_algo(args.alg); !v) return std::unexpected(v.error());
  if (args.alg.k.empty()) return fail(ErrorCode::missing_argument, "--k: required");
  MCIM_TRY(rand, parse_hex_fixed<16>(args.rand, "--rand"));
  MCIM_TRY(sqn, parse_hex_fixed<6>(args.sqn, "--sqn"));
  MCIM_TRY(amf, parse_hex_fixed<2>(args.amf, "--amf"));
  Fields f;
  if (is_tuak(args.alg)) {
    MCIM_TRY(t, make_tuak(args.alg));
    const auto out = t->f2345_full(rand);
    f.hex("f1", t->f1_full(rand, sqn, amf).view())
        .hex("f1star", t->f1star_full(rand, sqn, amf).view());
    f.hex("f2", out.res.view()).hex("f3", out.ck.view()).hex("f4", out.ik.view());
    f.hex("f5", out.ak).hex("f5star", t->f5star(rand));
    return f;
  }
  MCIM_TRY(m, make_milenage(args.alg));
  const F2345 out = m->f2345(rand);
  f.hex("f1", m->f1(rand, sqn, amf)).hex("f1star", m->f1star(rand, sqn, amf));
  f.hex("f2", out.res.view()).hex("f3", out.ck).hex("f4", out.ik);
  f.hex("f5", out.ak).hex("f5star", m->f5star(rand));
  return f;
}

namespace {

void add_algorithm_options(CLI::App* cmd, AlgorithmArgs& a, bool with_opc_inputs = true) {
  cmd->add_option("--algo", a.algo, "milenage (default) or tuak");
  cmd->add_option("--k", a.k, "subscriber key K (hex; TUAK: 16 or 32 bytes)");
  cmd->add_option("--op", a.op, "MILENAGE operator variant OP (hex, 16 bytes)");
  cmd->add_option("--top", a.top, "TUAK operator variant TOP (hex, 32 bytes)");
  if (with_opc_inputs) {
    cmd->add_option("--opc", a.opc, "MILENAGE OPc (hex, 16 bytes)");
    cmd->add_option("--topc", a.topc, "TUAK TOPc (hex, 32 bytes)");
  }
  auto* m = cmd->add_option_group("MILENAGE constants", "TS 35.206 §4.1; defaults as there");
  for (std::size_t i = 0; i < 5; ++i) {
    m->add_option(fmt::format("--c{}", i + 1), a.c[i], fmt::format("c{} (hex, 16 bytes)", i + 1));
    m->add_option(fmt::format("--r{}", i + 1), a.r[i], fmt::format("r{} (bits, 0..127)", i + 1));
  }
  auto* t = cmd->add_option_group("TUAK parameters", "TS 35.231");
  t->add_option("--keccak-iterations", a.keccak_iterations, "Keccak iterations (default 1)");
  t->add_option("--mac-len", a.mac_len, "MAC length in bits: 64, 128 or 256");
  t->add_option("--res-len", a.res_len, "RES length in bits: 32, 64, 128 or 256");
  t->add_option("--ck-len", a.ck_len, "CK length in bits: 128 or 256");
  t->add_option("--ik-len", a.ik_len, "IK length in bits: 128 or 256");
}

}  // namespace

void register_aka(CLI::App& app, Result<Fields>* result) {
  auto* aka =
      app.add_subcommand("aka", "3GPP AKA core: MILENAGE, TUAK, vectors, resynchronisation");
  aka->require_subcommand(1);

  auto vector_args = std::make_shared<VectorArgs>();
  auto* vector = aka->add_subcommand("vector", "generate an authentication vector (home side)");
  add_algorithm_options(vector, vector_args->alg);
  vector->add_option("--sqn", vector_args->sqn, "SQN (12 hex digits)");
  vector->add_option("--rand", vector_args->rand, "RAND (32 hex digits; random when omitted)");
  vector->add_option("--amf", vector_args->amf, "AMF (4 hex digits, default 8000)");
  vector->add_option("--snn", vector_args->snn, "5G serving network name: adds xres_star, kausf");
  vector->add_option("--plmn", vector_args->plmn, "serving PLMN as MCCMNC: adds kasme");
  vector->callback([vector_args, result] {
    OsRandom os;
    *result = run_vector(*vector_args, os);
  });

  auto auts_args = std::make_shared<AutsArgs>();
  auto* auts =
      aka->add_subcommand("auts", "compute AUTS for a synchronisation failure (USIM side)");
  add_algorithm_options(auts, auts_args->alg);
  auts->add_option("--rand", auts_args->rand, "RAND of the refused challenge (32 hex digits)");
  auts->add_option("--sqn-ms", auts_args->sqn_ms, "SQN_MS, highest accepted SQN (12 hex digits)");
  auts->callback([auts_args, result] { *result = run_auts(*auts_args); });

  auto resync_args = std::make_shared<ResyncArgs>();
  auto* resync = aka->add_subcommand("resync", "recover SQN_MS from AUTS (home side)");
  add_algorithm_options(resync, resync_args->alg);
  resync->add_option("--rand", resync_args->rand, "RAND of the refused challenge (32 hex digits)");
  resync->add_option("--auts", resync_args->auts, "AUTS (28 hex digits)");
  resync->callback([resync_args, result] { *result = run_resync(*resync_args); });

  auto opc_args = std::make_shared<AlgorithmArgs>();
  auto* opc = aka->add_subcommand("opc", "derive OPc from K and OP (TUAK: TOPc from K and TOP)");
  add_algorithm_options(opc, *opc_args, /*with_opc_inputs=*/false);
  opc->callback([opc_args, result] { *result = run_opc(*opc_args); });

  auto fn_args = std::make_shared<FunctionsArgs>();
  auto* fn = aka->add_subcommand("functions", "raw f1, f1*, f2-f5, f5* at their full lengths");
  add_algorithm_options(fn, fn_args->alg);
  fn->add_option("--rand", fn_args->rand, "RAND (32 hex digits)");
  fn->add_option("--sqn", fn_args->sqn, "SQN (12 hex digits)");
  fn->add_option("--amf", fn_args->amf, "AMF (4 hex digits, default 8000)");
  fn->callback([fn_args, result] { *result = run_functions(*fn_args); });
}

}  // namespace mcim::cli
