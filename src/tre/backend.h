// The TRE's hardware-rooted services behind one interface (DESIGN.md §3): sealing under a storage
// key that never leaves the backend, a monotonic counter that detects rollback of the sealed
// state, a sticky lockdown flag, and the platform key. The software backend keeps them in files of
// the TRE directory (docs/tre.md, "Layout"); a TPM 2.0 backend would keep the secret and counter
// in the TPM (NV counter) and hand out the platform key through OpenSSL's tpm2 provider, which
// gives the same EVP_PKEY. Not thread-safe: one Tre owns one backend.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/error.h"
#include "common/random.h"
#include "common/secure.h"
#include "pki/openssl.h"

namespace mcim::tre {

class Backend {
 public:
  virtual ~Backend() = default;

  // AES-256-GCM under the storage key with a fresh 96-bit nonce. The additional data binds
  // `record` (its name, e.g. "state") and `context` (e.g. its generation), so a blob opens only
  // as the record and version it was written as. unseal: store_tampered for any failure
  // (truncated, edited, other record, other context, other device).
  virtual Result<ByteVec> seal(std::string_view record, ByteView context, ByteView plaintext) = 0;
  virtual Result<SecretBytes> unseal(std::string_view record, ByteView context,
                                     ByteView sealed) const = 0;

  // The monotonic counter: it only goes up. set_counter refuses a lower value (internal), and is
  // durable when it returns. store_tampered when the counter's own record fails authentication.
  virtual Result<std::uint64_t> counter() const = 0;
  virtual Result<void> set_counter(std::uint64_t value) = 0;

  // Lockdown survives restarts and restores of the state: once entered it is never left (the
  // device goes back to its supplier). Empty when not locked down. Entering it again keeps the
  // first reason.
  virtual Result<std::optional<std::string>> lockdown_reason() const = 0;
  virtual Result<void> enter_lockdown(std::string_view reason) = 0;

  // The platform key (EC P-256) and its certificate path, leaf first, as the supplier issued it.
  virtual EVP_PKEY* platform_key() const = 0;
  virtual const std::vector<pki::X509Ptr>& platform_chain() const = 0;
};

// Files in `dir` (docs/tre.md): tre.secret (32 random bytes, 0600: the root secret a TPM would
// hold), platform.sealed (the platform key and chain, sealed as record "platform"),
// counter.sealed (the counter and lockdown reason, record "counter"). Storage keys are derived
// from the root secret with HKDF-SHA256 (info "mcim-tre/1 storage"). Sealed blob: "MTS1" |
// 12-byte nonce | ciphertext | 16-byte tag; AAD "mcim-tre/1" | 0x00 | u32 len | record | 0x00 |
// u32 len | context. A lockdown entered while counter.sealed is unreadable writes the counter
// as 2^64-1, so that no state is ever consistent with it again.
class SoftwareBackend final : public Backend {
 public:
  static constexpr std::size_t kRootSecretSize = 32;

  // A new backend in an existing, empty-of-these-files directory: already_exists when tre.secret
  // is there; invalid_argument when the key is not P-256 or does not match chain[0]. The
  // counter starts at 0. tre.secret is written last, so an interrupted create can be rerun.
  static Result<std::unique_ptr<SoftwareBackend>> create(const std::string& dir,
                                                         EVP_PKEY* platform_key,
                                                         const std::vector<X509*>& chain,
                                                         RandomSource& random);
  // not_found when there is no tre.secret; io_error when unreadable; store_tampered when the
  // secret has the wrong size or platform.sealed is missing or fails authentication (bad_format
  // if it opens but does not parse). A tampered (or missing) counter record does not fail
  // open: counter() reports it, so the Tre can lock down and still attest.
  static Result<std::unique_ptr<SoftwareBackend>> open(const std::string& dir,
                                                       RandomSource& random);

  ~SoftwareBackend() override;
  Result<ByteVec> seal(std::string_view record, ByteView context, ByteView plaintext) override;
  Result<SecretBytes> unseal(std::string_view record, ByteView context,
                             ByteView sealed) const override;
  Result<std::uint64_t> counter() const override;
  Result<void> set_counter(std::uint64_t value) override;
  Result<std::optional<std::string>> lockdown_reason() const override;
  Result<void> enter_lockdown(std::string_view reason) override;
  EVP_PKEY* platform_key() const override { return key_.get(); }
  const std::vector<pki::X509Ptr>& platform_chain() const override { return chain_; }

 private:
  SoftwareBackend(std::string dir, RandomSource& random) : dir_(std::move(dir)), random_(random) {}
  Result<void> write_counter_record(std::uint64_t value, const std::optional<std::string>& lock);

  std::string dir_;
  RandomSource& random_;
  Secret<32> storage_key_;
  pki::PkeyPtr key_;
  std::vector<pki::X509Ptr> chain_;
};

}  // namespace mcim::tre
