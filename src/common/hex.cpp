#include "common/hex.h"

#include <algorithm>

namespace mcim {
namespace {

int nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

constexpr char kDigits[] = "0123456789abcdef";

std::string to_hex(ByteView bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

void append_hex(ByteVec& out, ByteView bytes) {
  out.reserve(out.size() + bytes.size() * 2);
  for (std::uint8_t b : bytes) {
    out.push_back(static_cast<std::uint8_t>(kDigits[b >> 4]));
    out.push_back(static_cast<std::uint8_t>(kDigits[b & 0xf]));
  }
}

Result<ByteVec> parse_hex(std::string_view text, std::string_view name) {
  if (text.size() % 2 != 0) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("{}: odd number of hex digits ({})", name, text.size()));
  }
  ByteVec out(text.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(text[2 * i]);
    const int lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      secure_wipe(out);
      const std::size_t pos = hi < 0 ? 2 * i : 2 * i + 1;
      return fail(ErrorCode::invalid_argument,
                  fmt::format("{}: not a hex digit at position {}", name, pos + 1));
    }
    out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return out;
}

Result<ByteVec> parse_hex_lengths(std::string_view text, std::string_view name,
                                  std::initializer_list<std::size_t> allowed_lengths) {
  if (text.empty()) return fail(ErrorCode::missing_argument, fmt::format("{}: required", name));
  const bool ok = std::any_of(allowed_lengths.begin(), allowed_lengths.end(),
                              [&](std::size_t n) { return text.size() == 2 * n; });
  if (!ok) {
    std::string allowed;
    for (std::size_t n : allowed_lengths) {
      allowed += allowed.empty() ? "" : " or ";
      allowed += std::to_string(2 * n);
    }
    return fail(
        ErrorCode::invalid_argument,
        fmt::format("{}: expected {} hex digits, got {} characters", name, allowed, text.size()));
  }
  return parse_hex(text, name);
}

}  // namespace mcim
