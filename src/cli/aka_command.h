// `mcim aka ...`: the AKA core on the command line (vector, auts, resync, opc, functions).
// Each run_* function validates its arguments, computes, and returns the fields to print, or an
// Error whose message names the offending argument and never contains a secret value.
#pragma once

#include <CLI/CLI.hpp>
#include <array>
#include <optional>
#include <string>

#include "cli/output.h"
#include "common/random.h"

namespace mcim::cli {

struct AlgorithmArgs {
  std::string algo = "milenage";
  std::string k, op, opc;                    // MILENAGE
  std::array<std::string, 5> c;              // c1..c5 (hex), empty = TS 35.206 default
  std::array<std::optional<unsigned>, 5> r;  // r1..r5, unset = TS 35.206 default
  std::string top, topc;                     // TUAK
  unsigned keccak_iterations = 1;
  unsigned mac_len = 64, res_len = 64, ck_len = 128, ik_len = 128;
};

struct VectorArgs {
  AlgorithmArgs alg;
  std::string sqn, rand, amf = "8000", snn, plmn;
};
struct AutsArgs {
  AlgorithmArgs alg;
  std::string rand, sqn_ms;
};
struct ResyncArgs {
  AlgorithmArgs alg;
  std::string rand, auts;
};
struct FunctionsArgs {
  AlgorithmArgs alg;
  std::string rand, sqn, amf = "8000";
};

Result<Fields> run_vector(const VectorArgs& args, RandomSource& random);
Result<Fields> run_auts(const AutsArgs& args);
Result<Fields> run_resync(const ResyncArgs& args);
Result<Fields> run_opc(const AlgorithmArgs& args);
Result<Fields> run_functions(const FunctionsArgs& args);

// Adds `aka` and its subcommands to `app`; the one that runs sets `*result`.
void register_aka(CLI::App& app, Result<Fields>* result);

}  // namespace mcim::cli
