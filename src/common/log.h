// The services' log: one line per event on stderr (or a sink a test installs), with a UTC
// timestamp, a level and the component, e.g.
//   2026-11-26T15:04:05.123Z info ro: listening on https://127.0.0.1:8443
// Thread-safe (lines never interleave). What is logged are events and error messages, which by
// the project's rule never carry key material, PINs or vectors: callers pass ids and codes only.
#pragma once

#include <fmt/format.h>

#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace mcim::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };
std::string_view to_string(Level level);
// "debug" "info" "warn" "error"; false for anything else.
bool parse_level(std::string_view text, Level& out);

// Lines below this level are dropped (default info).
void set_level(Level level);
Level level();

// Where lines go (without the trailing newline); null restores stderr. For tests.
void set_sink(std::function<void(std::string_view line)> sink);

void write(Level level, std::string_view component, std::string_view message);

template <class... A>
void debug(std::string_view component, fmt::format_string<A...> f, A&&... args) {
  if (level() <= Level::debug) write(Level::debug, component, fmt::format(f, std::forward<A>(args)...));
}
template <class... A>
void info(std::string_view component, fmt::format_string<A...> f, A&&... args) {
  if (level() <= Level::info) write(Level::info, component, fmt::format(f, std::forward<A>(args)...));
}
template <class... A>
void warn(std::string_view component, fmt::format_string<A...> f, A&&... args) {
  if (level() <= Level::warn) write(Level::warn, component, fmt::format(f, std::forward<A>(args)...));
}
template <class... A>
void error(std::string_view component, fmt::format_string<A...> f, A&&... args) {
  write(Level::error, component, fmt::format(f, std::forward<A>(args)...));
}

}  // namespace mcim::log
