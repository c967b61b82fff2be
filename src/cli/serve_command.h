// `mcim serve supplier|ro|vno --config FILE [--db URL]`: runs one stakeholder's HTTPS service
// until SIGINT/SIGTERM (docs/operations.md "Running the services").
#pragma once

#include <CLI/CLI.hpp>

#include "cli/output.h"

namespace mcim::cli {

void register_serve(CLI::App& app, Result<Fields>* result);

}  // namespace mcim::cli
