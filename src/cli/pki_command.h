// `mcim pki ...`: the PKI on the command line: certificate authorities, issuance, revocation,
// verification (with OCSP), the OCSP responder, MCIM packages, attestation and validation.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/output.h"

namespace mcim::cli {

void register_pki(CLI::App& app, Result<Fields>* result);

// The parts that live in their own files, registered on the `pki` subcommand.
void register_pki_ocsp(CLI::App& pki, Result<Fields>* result);         // ocsp-serve
void register_pki_package(CLI::App& pki, Result<Fields>* result);      // package seal|open
void register_pki_attestation(CLI::App& pki, Result<Fields>* result);  // attest, validate

}  // namespace mcim::cli
