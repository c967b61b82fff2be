// AES-128 block encryption with the key schedule expanded once and kept (DESIGN.md §4: "a key
// schedule cached per subscriber"). Uses AES-NI when the CPU has it (chosen once at run time)
// and OpenSSL's portable AES otherwise. Immutable after construction, so one instance may be
// used from several threads; the round keys are wiped on destruction. No I/O.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "common/bytes.h"

namespace mcim::aka {

using Block = Bytes<16>;

class Aes128 {
 public:
  enum class Backend { automatic, aesni, portable };

  explicit Aes128(const Bytes<16>& key, Backend backend = Backend::automatic);
  ~Aes128();
  Aes128(const Aes128&) = default;
  Aes128& operator=(const Aes128&) = default;

  Block encrypt(const Block& in) const;
  // Encrypts n independent blocks; with AES-NI up to four are interleaved in the pipeline, which
  // is what makes MILENAGE's OUT1-OUT4 cost little more than one block.
  void encrypt_blocks(const Block* in, Block* out, std::size_t n) const;

  Backend backend() const { return aesni_ ? Backend::aesni : Backend::portable; }
  // The 11 round keys for detail::aesni_encrypt, or nullptr with the portable backend.
  const std::uint8_t* aesni_schedule() const { return aesni_ ? schedule_.data() : nullptr; }
  static bool cpu_has_aesni();

 private:
  // 11 round keys for AES-NI, or OpenSSL's AES_KEY layout (rounds + 60 words) for portable.
  alignas(16) std::array<std::uint8_t, 256> schedule_{};
  bool aesni_ = false;
};

}  // namespace mcim::aka
