// `mcim aka demo`: the AKA core at work between a home AuC and a device's USIM: a vector
// accepted, a replay refused with AUTS, the home side resynchronised, a forged AUTN refused, the
// EPS and 5G keys agreeing on both sides, then single-thread vector throughput with a progress
// bar.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/output.h"

namespace mcim::cli {

// Adds `demo` under `aka`; when it runs it prints its report itself and sets *exit_code.
void register_aka_demo(CLI::App& aka, const bool& json, int* exit_code, std::ostream& out,
                   std::ostream& err);

}  // namespace mcim::cli
