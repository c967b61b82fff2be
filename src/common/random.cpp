#include "common/random.h"

#include <openssl/rand.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "common/secure.h"

namespace mcim {

void OsRandom::fill(std::span<std::uint8_t> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    const std::size_t chunk =
        std::min<std::size_t>(out.size() - done, std::numeric_limits<int>::max());
    if (RAND_bytes(out.data() + done, static_cast<int>(chunk)) != 1) {
      std::fputs("mcim: the CSPRNG failed; refusing to continue\n", stderr);
      std::abort();
    }
    done += chunk;
  }
}

BatchedRandom::BatchedRandom(RandomSource& upstream, std::size_t batch_bytes)
    : upstream_(upstream), buffer_(batch_bytes == 0 ? 1 : batch_bytes), pos_(buffer_.size()) {}

BatchedRandom::~BatchedRandom() { secure_wipe(buffer_); }

void BatchedRandom::fill(std::span<std::uint8_t> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    if (pos_ == buffer_.size()) {
      upstream_.fill(buffer_);
      pos_ = 0;
    }
    const std::size_t n = std::min(out.size() - done, buffer_.size() - pos_);
    std::memcpy(out.data() + done, buffer_.data() + pos_, n);
    secure_wipe(buffer_.data() + pos_, n);
    pos_ += n;
    done += n;
  }
}

}  // namespace mcim
