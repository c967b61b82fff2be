// Shared by the benchmark programs and the load driver: ending the program when its setup fails
// (a CA, a server, a database it needs). A benchmark's own failures are State::SkipWithError.
#pragma once

#include <fmt/format.h>

#include <cerrno>  // program_invocation_short_name (glibc)
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "common/error.h"

namespace mcim::bench {

// "<program>: <what>: <code>: <message>" on stderr, then exit status 1.
[[noreturn]] inline void die(std::string_view what, const Error& e) {
  fmt::print(stderr, "{}: {}: {}\n", program_invocation_short_name, what, e);
  std::exit(1);
}

template <class T>
T must(Result<T> r, std::string_view what) {
  if (!r) die(what, r.error());
  return std::move(*r);
}

inline void must(const Result<void>& r, std::string_view what) {
  if (!r) die(what, r.error());
}

}  // namespace mcim::bench
