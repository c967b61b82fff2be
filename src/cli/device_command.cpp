#include "cli/device_command.h"

namespace mcim::cli {

void register_device(CLI::App& app, Result<Fields>* result) {
  (void)app;
  (void)result;
}

}  // namespace mcim::cli
