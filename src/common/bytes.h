// Byte-string vocabulary: fixed-size arrays for every value whose length a specification fixes
// (so that a wrong length cannot be represented), and small helpers over them. Pure, no I/O.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace mcim {

template <std::size_t N>
using Bytes = std::array<std::uint8_t, N>;

using ByteVec = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

// The bytes of a text (PEM, a token, a file's contents), without a copy.
inline ByteView bytes_of(std::string_view s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

template <std::size_t N>
constexpr Bytes<N> xor_of(const Bytes<N>& a, const Bytes<N>& b) {
  Bytes<N> out{};
  for (std::size_t i = 0; i < N; ++i) out[i] = static_cast<std::uint8_t>(a[i] ^ b[i]);
  return out;
}

// Big-endian encoding of the low 8*N bits of v.
template <std::size_t N>
constexpr Bytes<N> to_be(std::uint64_t v) {
  static_assert(N <= 8);
  Bytes<N> out{};
  for (std::size_t i = 0; i < N; ++i) out[N - 1 - i] = static_cast<std::uint8_t>(v >> (8 * i));
  return out;
}

template <std::size_t N>
constexpr std::uint64_t from_be(const Bytes<N>& b) {
  static_assert(N <= 8);
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < N; ++i) v = (v << 8) | b[i];
  return v;
}

// Copies the first M bytes of a view into an array; the caller guarantees the size.
template <std::size_t M>
Bytes<M> take(ByteView v, std::size_t offset = 0) {
  Bytes<M> out{};
  for (std::size_t i = 0; i < M; ++i) out[i] = v[offset + i];
  return out;
}

}  // namespace mcim
