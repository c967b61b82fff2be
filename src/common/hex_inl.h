#pragma once
// Template part of hex.h.
#include <fmt/format.h>

#include <cstring>

#include "common/secure.h"

namespace mcim {

template <std::size_t N>
Result<Bytes<N>> parse_hex_fixed(std::string_view text, std::string_view name) {
  if (text.empty()) return fail(ErrorCode::missing_argument, fmt::format("{}: required", name));
  if (text.size() != 2 * N) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("{}: expected {} hex digits ({} bytes), got {} characters", name, 2 * N,
                            N, text.size()));
  }
  auto v = parse_hex(text, name);
  if (!v) return std::unexpected(std::move(v.error()));
  Bytes<N> out{};
  std::memcpy(out.data(), v->data(), N);
  secure_wipe(*v);
  return out;
}

}  // namespace mcim
