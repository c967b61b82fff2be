// Randomness as a port (STYLE.md §5): pure code takes a RandomSource&, production passes
// OsRandom (OpenSSL's CSPRNG, seeded from the OS) or BatchedRandom over it, tests pass a fake.
// Instances are not thread-safe; use one per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/bytes.h"

namespace mcim {

class RandomSource {
 public:
  virtual ~RandomSource() = default;
  // Fills `out` entirely; aborts the process if the CSPRNG fails (never returns weak bytes).
  virtual void fill(std::span<std::uint8_t> out) = 0;

  template <std::size_t N>
  Bytes<N> draw() {
    Bytes<N> b{};
    fill(b);
    return b;
  }
};

// One RAND_bytes call per request.
class OsRandom final : public RandomSource {
 public:
  void fill(std::span<std::uint8_t> out) override;
};

// Draws from an upstream source in large batches and hands out slices, so that a 16-byte RAND
// costs a memcpy instead of a DRBG call (~1.8 us). Consumed bytes are wiped from the buffer.
class BatchedRandom final : public RandomSource {
 public:
  explicit BatchedRandom(RandomSource& upstream, std::size_t batch_bytes = 4096);
  ~BatchedRandom() override;
  BatchedRandom(const BatchedRandom&) = delete;
  BatchedRandom& operator=(const BatchedRandom&) = delete;

  void fill(std::span<std::uint8_t> out) override;

 private:
  RandomSource& upstream_;
  std::vector<std::uint8_t> buffer_;
  std::size_t pos_;
};

}  // namespace mcim
