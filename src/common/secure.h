// Handling of secret material: wiping that the compiler may not elide, comparison whose time
// does not depend on where the inputs differ, and Secret<N>, a fixed-size key that wipes itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "common/bytes.h"

namespace mcim {

void secure_wipe(void* p, std::size_t n);
inline void secure_wipe(std::span<std::uint8_t> s) { secure_wipe(s.data(), s.size()); }
inline void secure_wipe(std::vector<std::uint8_t>& v) { secure_wipe(v.data(), v.size()); }
template <std::size_t N>
void secure_wipe(Bytes<N>& b) {
  secure_wipe(b.data(), N);
}

// True when both have the same length and content; time depends on the length only.
bool constant_time_equal(ByteView a, ByteView b);

// Key material that is wiped when it goes out of scope. Copyable on purpose (values), but each
// copy wipes itself as well.
template <std::size_t N>
class Secret {
 public:
  Secret() = default;
  explicit Secret(const Bytes<N>& b) : bytes_(b) {}
  Secret(const Secret&) = default;
  Secret& operator=(const Secret&) = default;
  ~Secret() { secure_wipe(bytes_); }

  const Bytes<N>& get() const { return bytes_; }
  Bytes<N>& mut() { return bytes_; }

 private:
  Bytes<N> bytes_{};
};

// A heap buffer wiped when destroyed, for encodings that hold keys (an MCIM document holds K and
// OPc in hex; the TRE state holds every credential).
class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(ByteVec bytes) : bytes_(std::move(bytes)) {}
  SecretBytes(SecretBytes&& o) noexcept : bytes_(std::move(o.bytes_)) { o.bytes_.clear(); }
  SecretBytes& operator=(SecretBytes&& o) noexcept {
    if (this != &o) {
      secure_wipe(bytes_);
      bytes_ = std::move(o.bytes_);
      o.bytes_.clear();
    }
    return *this;
  }
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes() { secure_wipe(bytes_); }

  ByteView view() const { return bytes_; }
  std::string_view text() const {
    return std::string_view(reinterpret_cast<const char*>(bytes_.data()), bytes_.size());
  }

 private:
  ByteVec bytes_;
};

}  // namespace mcim
