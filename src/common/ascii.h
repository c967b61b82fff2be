// ASCII helpers for protocol text (HTTP field names, schemes, media types, auth schemes), where
// case folding must not depend on the locale. Pure, header-only.
#pragma once

#include <cstddef>
#include <string_view>

namespace mcim {

// Equality ignoring ASCII case only.
inline bool ascii_iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
    if ((x >= 'A' && x <= 'Z' ? x + 32 : x) != (y >= 'A' && y <= 'Z' ? y + 32 : y)) return false;
  }
  return true;
}

// Every character is a decimal digit (true for the empty string; callers bound the length).
inline bool ascii_digits(std::string_view s) {
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Without the spaces, tabs, carriage returns and newlines at either end (a value read from a
// file, such as a token or a PIN with its trailing newline).
inline std::string_view trim_ascii_space(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

}  // namespace mcim
