// The `mcim` command line as a function of its arguments and streams, so tests can run it
// in-process. Exit codes: 0 success, 1 refused by a check (e.g. MAC-S does not verify),
// 2 bad input (malformed, missing or conflicting arguments), with a message naming the argument.
#pragma once

#include <iosfwd>

namespace mcim::cli {

int run(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace mcim::cli
