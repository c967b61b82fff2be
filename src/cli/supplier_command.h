// `mcim supplier ...`: the supplier's offline tools (F0). `manufacture` builds one device's
// supplier bundle (docs/tre.md "Supplier bundle"); the supplier service (issue 6) reuses it.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/output.h"

namespace mcim::cli {

void register_supplier(CLI::App& app, Result<Fields>* result);

}  // namespace mcim::cli
