// Runs the mcim command line in-process, as the binary would, capturing both streams.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "cli/app.h"

namespace mcim::cli::testing {

struct Outcome {
  int code;
  std::string out, err;
};

inline Outcome mcim(std::vector<std::string> args) {
  args.insert(args.begin(), "mcim");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  const int code = run(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

}  // namespace mcim::cli::testing
