// Names of the services' threads, so that what reads /proc/<pid>/task/*/comm (top -H, perf,
// bench/run_f2.sh) can tell their roles apart: "<role>-<what>[-<n>]", e.g. "ro-http-0",
// "ro-notify-1", "vno-gw-a". The kernel keeps 15 bytes of a name and the rest is cut, so the role
// comes first and survives.
#pragma once

#include <cstddef>
#include <string_view>
#include <thread>

namespace mcim {

inline constexpr std::size_t kMaxThreadName = 15;

// Names the calling thread, or `thread`, cut to kMaxThreadName bytes. Best effort: a failure
// leaves the name it had (the process's); an empty name changes nothing. Naming a thread from
// the one that starts it means the name is there as soon as the start returns.
void set_thread_name(std::string_view name);
void set_thread_name(std::thread& thread, std::string_view name);

}  // namespace mcim
