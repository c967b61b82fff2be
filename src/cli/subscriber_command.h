// `mcim subscriber register|change-operator|status|activate|revert`: the owner's client of the SHO
// (F1, F4, F5 and F7; docs/cli.md, docs/protocol.md "Owner endpoints"). Server-authenticated TLS
// against --trust, the owner's bearer token from --token-file. The PIN comes from --pin-file (or
// --pin) and is sent to the SHO only: never printed, logged or put in an error message.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/output.h"

namespace mcim::cli {

void register_subscriber(CLI::App& app, Result<Fields>* result);

}  // namespace mcim::cli
