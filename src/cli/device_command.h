// `mcim device ...`: the TRE on the command line (docs/cli.md, docs/tre.md): init from a supplier
// bundle, status, install, lifecycle actions, authenticate, attest, audit, fsck, pristine; and
// `run`, the device agent (device/agent.h) through F2 over the network.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/output.h"

namespace mcim::cli {

void register_device(CLI::App& app, Result<Fields>* result);

}  // namespace mcim::cli
