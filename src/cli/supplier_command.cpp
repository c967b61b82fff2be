#include "cli/supplier_command.h"

namespace mcim::cli {

void register_supplier(CLI::App& app, Result<Fields>* result) {
  (void)app;
  (void)result;
}

}  // namespace mcim::cli
