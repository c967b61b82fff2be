// `mcim demo`: the main job (docs/cli.md). Starts the whole system in this process as `mcim up`
// does (supplier, RO, VNO, SHO, PVA on 127.0.0.1, a generated PKI, SQLite or PostgreSQL), then
// runs a fleet through it (sim/fleet.h): the supplier manufactures N devices, the owner registers
// them at the SHO and announces their switch-on, and every device's agent provisions its TRE
// concurrently over the real services and attaches with its new IMSI. A progress bar runs on a
// terminal; the report is a table of the TR's steps (count, p50, p99) and the provisioning
// throughput, or one JSON object with --json. Exit 0 only when every device ended operational,
// 1 when some did not; bad options exit 2 and a system that does not start exits with its
// error's code.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/output.h"

namespace mcim::cli {

// Adds `demo`. When it ran to a report, it printed the report itself and set *exit_code; when it
// could not (bad options, the system did not start) it set *result to the error instead.
void register_demo(CLI::App& app, const bool& json, int* exit_code, Result<Fields>* result,
                   std::ostream& out, std::ostream& err);

}  // namespace mcim::cli
