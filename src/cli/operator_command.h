// `mcim operator mcim list|activate|block|unblock|retire|delete|result`: the home operator's
// staff managing the MCIMs of theirs on a device remotely (F9; docs/cli.md, docs/protocol.md
// "Operator endpoints"). Mutual TLS to the SHO with a client certificate of the operator itself
// (--cert, --key) against --trust. The SHO signs each instruction and queues it at the RO's DPF;
// the device collects it on its next management round, and the TRE's signed answer comes back.
// --wait polls the SHO for that answer.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/output.h"

namespace mcim::cli {

void register_operator(CLI::App& app, Result<Fields>* result);

}  // namespace mcim::cli
