// Test-vector hex -> fixed-size array, for the table-driven tests of src/aka: a malformed table
// entry fails the test that reads it (and yields zeros) instead of aborting the whole binary.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <string_view>

#include "common/bytes.h"
#include "common/hex.h"

namespace mcim::aka::testdata {

template <std::size_t N>
Bytes<N> fixed(std::string_view hex, std::string_view what) {
  auto parsed = parse_hex_fixed<N>(hex, what);
  if (!parsed) {
    ADD_FAILURE() << "bad test vector field " << what << ": " << parsed.error().message;
    return Bytes<N>{};
  }
  return *parsed;
}

}  // namespace mcim::aka::testdata
