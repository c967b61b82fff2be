#include <iostream>

#include "cli/app.h"
#include "common/process.h"

int main(int argc, char** argv) {
  // Every command may hold many descriptors (a service's clients, a fleet's TREs).
  (void)mcim::raise_open_file_limit();
  return mcim::cli::run(argc, argv, std::cout, std::cerr);
}
