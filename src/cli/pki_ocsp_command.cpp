#include "cli/pki_command.h"

namespace mcim::cli {

void register_pki_ocsp(CLI::App& /*pki*/, Result<Fields>* /*result*/) {}

}  // namespace mcim::cli
