// Hexadecimal text <-> bytes. Parsing is case-insensitive and strict (no separators, no "0x"),
// and its errors name the argument but never echo the text, which may be a key.
#pragma once

#include <string>
#include <string_view>

#include "common/bytes.h"
#include "common/error.h"

namespace mcim {

std::string to_hex(ByteView bytes);  // lowercase

// Appends the lowercase hex digits of `bytes` to `out` (for texts that hold secrets: a ByteVec
// can be wiped, a std::string's old buffers cannot).
void append_hex(ByteVec& out, ByteView bytes);

template <std::size_t N>
std::string to_hex(const Bytes<N>& b) {
  return to_hex(ByteView(b.data(), b.size()));
}

// Parses any even number of hex digits. `name` is used in the error message only.
Result<ByteVec> parse_hex(std::string_view text, std::string_view name);

// Parses exactly N bytes (2N hex digits).
template <std::size_t N>
Result<Bytes<N>> parse_hex_fixed(std::string_view text, std::string_view name);

// Parses one of several allowed byte lengths (e.g. TUAK's 16- or 32-byte K).
Result<ByteVec> parse_hex_lengths(std::string_view text, std::string_view name,
                                  std::initializer_list<std::size_t> allowed_lengths);

}  // namespace mcim

#include "common/hex_inl.h"
