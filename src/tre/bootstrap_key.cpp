#include "tre/bootstrap_key.h"

#include <string>

#include "common/ascii.h"
#include "pki/package.h"
#include "pki/pbkdf2.h"

namespace mcim::tre {

Result<BootstrapKey> derive_bootstrap_key(std::string_view pin, std::string_view device_id) {
  if (pin.size() < kMinPinSize || pin.size() > kMaxPinSize || !ascii_digits(pin)) {
    return fail(ErrorCode::invalid_argument, "pin: must be 4-16 ASCII digits");
  }
  if (!pki::valid_mcim_id(device_id)) {
    return fail(ErrorCode::invalid_argument, "device: must be [A-Za-z0-9._:-]{1,64}");
  }
  std::string salt(kBootstrapLabel);
  salt += device_id;
  BootstrapKey key;
  if (auto r = pki::pbkdf2_hmac_sha256(
          ByteView(reinterpret_cast<const std::uint8_t*>(pin.data()), pin.size()),
          ByteView(reinterpret_cast<const std::uint8_t*>(salt.data()), salt.size()),
          kBootstrapKdfIterations, key.mut());
      !r) {
    return std::unexpected(r.error());
  }
  return key;
}

}  // namespace mcim::tre
