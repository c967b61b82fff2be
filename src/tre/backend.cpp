#include "tre/backend.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "common/file.h"

namespace mcim::tre {
namespace {

constexpr std::string_view kSealMagic = "MTS1";
constexpr std::size_t kNonceSize = 12;
constexpr std::size_t kTagSize = 16;
constexpr std::string_view kAadLabel = "mcim-tre/1";
constexpr std::string_view kStorageInfo = "mcim-tre/1 storage";

constexpr std::uint8_t kRecordVersion = 1;
// Bounds of the platform record, so a decoder never allocates on a length it was handed.
constexpr std::size_t kMaxChain = 8;
constexpr std::size_t kMaxDer = 16 * 1024;
// Reasons are short messages of our own; a longer one is cut rather than refused, because
// refusing would leave a tampered TRE unlocked.
constexpr std::size_t kMaxLockdownReason = 1024;
// The counter a lockdown writes when the old one is unreadable: no state can be consistent
// with it again (every load is rollback_detected), which is what lockdown means.
constexpr std::uint64_t kPoisonedCounter = std::numeric_limits<std::uint64_t>::max();

constexpr std::string_view kSecretFile = "tre.secret";
constexpr std::string_view kPlatformFile = "platform.sealed";
constexpr std::string_view kCounterFile = "counter.sealed";
constexpr std::string_view kPlatformRecord = "platform";
constexpr std::string_view kCounterRecord = "counter";

using KdfPtr = pki::Owned<EVP_KDF, EVP_KDF_free>;
using KdfCtxPtr = pki::Owned<EVP_KDF_CTX, EVP_KDF_CTX_free>;
using CipherCtxPtr = pki::Owned<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>;
using Pkcs8Ptr = pki::Owned<PKCS8_PRIV_KEY_INFO, PKCS8_PRIV_KEY_INFO_free>;

ByteView view_of(std::string_view s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

void put_be(ByteVec& out, std::uint64_t v, std::size_t n) {
  for (std::size_t i = n; i-- > 0;) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void put_bytes(ByteVec& out, ByteView v) { out.insert(out.end(), v.begin(), v.end()); }

// The additional data: every variable part is length-prefixed, so no two (record, context)
// pairs give the same bytes.
ByteVec additional_data(std::string_view record, ByteView context) {
  ByteVec aad;
  aad.reserve(kAadLabel.size() + 10 + record.size() + context.size());
  put_bytes(aad, view_of(kAadLabel));
  aad.push_back(0);
  put_be(aad, record.size(), 4);
  put_bytes(aad, view_of(record));
  aad.push_back(0);
  put_be(aad, context.size(), 4);
  put_bytes(aad, context);
  return aad;
}

// HKDF-SHA256 (RFC 5869) without salt (HashLen zero bytes): the root secret is already uniform.
Result<void> derive_storage_key(const Secret<32>& root, Secret<32>& out) {
  KdfPtr kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  if (!kdf) return std::unexpected(pki::openssl_error(ErrorCode::internal, "EVP_KDF_fetch HKDF"));
  KdfCtxPtr ctx(EVP_KDF_CTX_new(kdf.get()));
  if (!ctx) return std::unexpected(pki::openssl_error(ErrorCode::internal, "EVP_KDF_CTX_new"));
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(
          OSSL_KDF_PARAM_KEY, const_cast<std::uint8_t*>(root.get().data()), root.get().size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(kStorageInfo.data()),
                                        kStorageInfo.size()),
      OSSL_PARAM_construct_end()};
  if (EVP_KDF_derive(ctx.get(), out.mut().data(), out.get().size(), params) != 1) {
    return std::unexpected(pki::openssl_error(ErrorCode::internal, "storage key derivation"));
  }
  return {};
}

Result<ByteVec> gcm_seal(const Secret<32>& key, const Bytes<kNonceSize>& nonce, ByteView aad,
                         ByteView plaintext) {
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return std::unexpected(pki::openssl_error(ErrorCode::internal, "EVP_CIPHER_CTX_new"));
  ByteVec out;
  out.reserve(kSealMagic.size() + kNonceSize + plaintext.size() + kTagSize);
  put_bytes(out, view_of(kSealMagic));
  put_bytes(out, nonce);
  const std::size_t body = out.size();
  out.resize(body + plaintext.size() + kTagSize);
  int n = 0;
  bool ok =
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.get().data(), nonce.data()) ==
          1 &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &n, aad.data(), static_cast<int>(aad.size())) == 1;
  if (ok && !plaintext.empty()) {
    ok = EVP_EncryptUpdate(ctx.get(), out.data() + body, &n, plaintext.data(),
                           static_cast<int>(plaintext.size())) == 1;
  }
  ok = ok && EVP_EncryptFinal_ex(ctx.get(), out.data() + body + plaintext.size(), &n) == 1 &&
       EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagSize),
                           out.data() + body + plaintext.size()) == 1;
  if (!ok) return std::unexpected(pki::openssl_error(ErrorCode::internal, "AES-GCM seal"));
  return out;
}

// Decrypts into a buffer that is wiped unless the tag verified.
bool gcm_open(const Secret<32>& key, ByteView sealed, ByteView aad, ByteVec& plain) {
  const ByteView nonce = sealed.subspan(kSealMagic.size(), kNonceSize);
  const ByteView body = sealed.subspan(kSealMagic.size() + kNonceSize,
                                       sealed.size() - kSealMagic.size() - kNonceSize - kTagSize);
  Bytes<kTagSize> tag = take<kTagSize>(sealed, sealed.size() - kTagSize);
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return false;
  plain.assign(body.size(), 0);
  int n = 0;
  bool ok =
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.get().data(), nonce.data()) ==
          1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &n, aad.data(), static_cast<int>(aad.size())) == 1;
  if (ok && !body.empty()) {
    ok = EVP_DecryptUpdate(ctx.get(), plain.data(), &n, body.data(),
                           static_cast<int>(body.size())) == 1;
  }
  ok = ok &&
       EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagSize),
                           tag.data()) == 1 &&
       EVP_DecryptFinal_ex(ctx.get(), plain.data() + plain.size(), &n) == 1;
  if (!ok) {
    secure_wipe(plain);
    plain.clear();
    ERR_clear_error();
  }
  return ok;
}

// A strict reader over an authenticated record: its own bytes, so a malformed one is a bug or
// a format from another version, reported as bad_format naming the file.
class RecordReader {
 public:
  RecordReader(ByteView bytes, std::string_view file) : bytes_(bytes), file_(file) {}

  bool u(std::size_t n, std::uint64_t& v) {
    if (bytes_.size() - pos_ < n) return false;
    v = 0;
    for (std::size_t i = 0; i < n; ++i) v = (v << 8) | bytes_[pos_++];
    return true;
  }
  bool take(std::size_t n, ByteView& v) {
    if (bytes_.size() - pos_ < n) return false;
    v = bytes_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == bytes_.size(); }
  std::unexpected<Error> bad(std::string_view what) const {
    return fail(ErrorCode::bad_format, fmt::format("{}: {}", file_, what));
  }

 private:
  ByteView bytes_;
  std::size_t pos_ = 0;
  std::string_view file_;
};

// PKCS#8 DER of the key in a buffer the caller wipes.
Result<ByteVec> pkcs8_der(EVP_PKEY* key) {
  Pkcs8Ptr p8(EVP_PKEY2PKCS8(key));
  if (!p8) return std::unexpected(pki::openssl_error(ErrorCode::internal, "EVP_PKEY2PKCS8"));
  unsigned char* der = nullptr;
  const int n = i2d_PKCS8_PRIV_KEY_INFO(p8.get(), &der);
  if (n <= 0) return std::unexpected(pki::openssl_error(ErrorCode::internal, "i2d_PKCS8"));
  ByteVec out(der, der + n);
  OPENSSL_clear_free(der, static_cast<std::size_t>(n));
  return out;
}

// version u8 | u32 len | PKCS#8 DER | u8 count | count x (u32 len | certificate DER)
Result<SecretBytes> encode_platform(EVP_PKEY* key, const std::vector<X509*>& chain) {
  auto key_der = pkcs8_der(key);
  if (!key_der) return std::unexpected(key_der.error());
  std::vector<ByteVec> certs;
  std::size_t total = 1 + 4 + key_der->size() + 1;
  for (X509* c : chain) {
    certs.push_back(pki::certificate_der(c));
    total += 4 + certs.back().size();
  }
  ByteVec out;
  out.reserve(total);  // no reallocation, so no unwiped copy of the key is left behind
  out.push_back(kRecordVersion);
  put_be(out, key_der->size(), 4);
  put_bytes(out, *key_der);
  secure_wipe(*key_der);
  out.push_back(static_cast<std::uint8_t>(certs.size()));
  for (const ByteVec& der : certs) {
    put_be(out, der.size(), 4);
    put_bytes(out, der);
  }
  return SecretBytes(std::move(out));
}

struct Platform {
  pki::PkeyPtr key;
  std::vector<pki::X509Ptr> chain;
};

Result<Platform> decode_platform(ByteView record) {
  RecordReader r(record, kPlatformFile);
  std::uint64_t version = 0, len = 0, count = 0;
  ByteView der;
  if (!r.u(1, version) || version != kRecordVersion) return r.bad("unknown record version");
  if (!r.u(4, len) || len > kMaxDer || !r.take(len, der)) return r.bad("key: truncated");
  Platform p;
  const unsigned char* q = der.data();
  Pkcs8Ptr p8(d2i_PKCS8_PRIV_KEY_INFO(nullptr, &q, static_cast<long>(der.size())));
  if (p8) p.key.reset(EVP_PKCS82PKEY(p8.get()));
  if (!p.key || q != der.data() + der.size()) {
    ERR_clear_error();
    return r.bad("key: not a PKCS#8 private key");
  }
  if (!r.u(1, count) || count == 0 || count > kMaxChain) return r.bad("chain: bad count");
  for (std::uint64_t i = 0; i < count; ++i) {
    if (!r.u(4, len) || len > kMaxDer || !r.take(len, der)) return r.bad("chain: truncated");
    q = der.data();
    pki::X509Ptr cert(d2i_X509(nullptr, &q, static_cast<long>(der.size())));
    if (!cert || q != der.data() + der.size()) {
      ERR_clear_error();
      return r.bad(fmt::format("chain[{}]: not a DER certificate", i));
    }
    p.chain.push_back(std::move(cert));
  }
  if (!r.done()) return r.bad("trailing bytes");
  return p;
}

struct CounterRecord {
  std::uint64_t value = 0;
  std::optional<std::string> lockdown;
};

// version u8 | u64 counter | u8 locked (0/1) | locked: u16 len | reason
ByteVec encode_counter(const CounterRecord& c) {
  ByteVec out;
  out.push_back(kRecordVersion);
  put_be(out, c.value, 8);
  out.push_back(c.lockdown ? 1 : 0);
  if (c.lockdown) {
    const std::size_t n = std::min(c.lockdown->size(), kMaxLockdownReason);
    put_be(out, n, 2);
    put_bytes(out, view_of(std::string_view(*c.lockdown).substr(0, n)));
  }
  return out;
}

Result<CounterRecord> decode_counter(ByteView record) {
  RecordReader r(record, kCounterFile);
  std::uint64_t version = 0, locked = 0, len = 0;
  CounterRecord c;
  if (!r.u(1, version) || version != kRecordVersion) return r.bad("unknown record version");
  if (!r.u(8, c.value) || !r.u(1, locked)) return r.bad("counter: truncated");
  if (locked > 1) return r.bad("lockdown flag: must be 0 or 1");
  if (locked == 1) {
    ByteView reason;
    if (!r.u(2, len) || len > kMaxLockdownReason || !r.take(len, reason)) {
      return r.bad("lockdown reason: truncated");
    }
    c.lockdown = std::string(reason.begin(), reason.end());
  }
  if (!r.done()) return r.bad("trailing bytes");
  return c;
}

Result<bool> file_exists(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return true;
  if (errno == ENOENT) return false;
  return fail(ErrorCode::io_error, fmt::format("cannot stat {}: {}", path, std::strerror(errno)));
}

// A file that must exist once the TRE does: its absence is tamper evidence, not "no TRE".
Result<ByteVec> read_required(const std::string& path) {
  auto bytes = read_file(path);
  if (!bytes && bytes.error().code == ErrorCode::not_found) {
    return fail(ErrorCode::store_tampered, fmt::format("{}: missing", path));
  }
  return bytes;
}

// read_file would leave copies of the secret in its stack buffer and in freed vector storage:
// read straight into a buffer that is wiped. One byte more than the size detects a longer file.
Result<void> read_root_secret(const std::string& path, Secret<32>& out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return fail(e == ENOENT ? ErrorCode::not_found : ErrorCode::io_error,
                fmt::format("cannot open {}: {}", path, std::strerror(e)));
  }
  Secret<33> buf;
  std::size_t got = 0;
  while (got < buf.get().size()) {
    const ssize_t n = ::read(fd, buf.mut().data() + got, buf.get().size() - got);
    if (n == 0) break;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      return fail(ErrorCode::io_error, fmt::format("cannot read {}: {}", path, std::strerror(e)));
    }
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  if (got != out.get().size()) {
    return fail(ErrorCode::store_tampered,
                fmt::format("{}: must be {} bytes", path, out.get().size()));
  }
  std::copy_n(buf.get().begin(), out.get().size(), out.mut().begin());
  return {};
}

Result<void> check_platform(EVP_PKEY* key, X509* leaf, ErrorCode code, std::string_view what) {
  if (key == nullptr || leaf == nullptr) {
    return fail(ErrorCode::missing_argument, fmt::format("{}: key and certificate required", what));
  }
  if (!pki::is_p256(key)) return fail(code, fmt::format("{}: key is not EC P-256", what));
  if (X509_check_private_key(leaf, key) != 1) {
    ERR_clear_error();
    return fail(code, fmt::format("{}: key does not match the leaf certificate", what));
  }
  return {};
}

}  // namespace

SoftwareBackend::~SoftwareBackend() = default;

Result<std::unique_ptr<SoftwareBackend>> SoftwareBackend::create(const std::string& dir,
                                                                 EVP_PKEY* platform_key,
                                                                 const std::vector<X509*>& chain,
                                                                 RandomSource& random) {
  const std::string secret_path = dir + "/" + std::string(kSecretFile);
  auto exists = file_exists(secret_path);
  if (!exists) return std::unexpected(exists.error());
  if (*exists) return fail(ErrorCode::already_exists, fmt::format("{}: exists", secret_path));
  if (chain.empty()) return fail(ErrorCode::missing_argument, "platform chain: empty");
  if (chain.size() > kMaxChain) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("platform chain: more than {} certificates", kMaxChain));
  }
  for (X509* c : chain) {
    if (c == nullptr) return fail(ErrorCode::missing_argument, "platform chain: null certificate");
    if (pki::certificate_der(c).size() > kMaxDer) {
      return fail(ErrorCode::invalid_argument, "platform chain: certificate too large");
    }
  }
  if (auto ok = check_platform(platform_key, chain[0], ErrorCode::invalid_argument, "platform");
      !ok) {
    return std::unexpected(ok.error());
  }

  std::unique_ptr<SoftwareBackend> b(new SoftwareBackend(dir, random));
  Secret<32> root;
  random.fill(root.mut());
  if (auto ok = derive_storage_key(root, b->storage_key_); !ok) return std::unexpected(ok.error());
  b->key_ = pki::up_ref(platform_key);
  for (X509* c : chain) b->chain_.push_back(pki::up_ref(c));

  // tre.secret is written last: it is what makes the directory a TRE, so a create interrupted
  // before it can simply be run again.
  auto plain = encode_platform(platform_key, chain);
  if (!plain) return std::unexpected(plain.error());
  auto sealed = b->seal(kPlatformRecord, {}, plain->view());
  if (!sealed) return std::unexpected(sealed.error());
  if (auto ok = write_file_atomic(dir + "/" + std::string(kPlatformFile), *sealed, 0600); !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = b->write_counter_record(0, std::nullopt); !ok) return std::unexpected(ok.error());
  if (auto ok = write_file_atomic(secret_path, root.get(), 0600); !ok) {
    return std::unexpected(ok.error());
  }
  return b;
}

Result<std::unique_ptr<SoftwareBackend>> SoftwareBackend::open(const std::string& dir,
                                                               RandomSource& random) {
  const std::string secret_path = dir + "/" + std::string(kSecretFile);
  Secret<kRootSecretSize> root;
  if (auto ok = read_root_secret(secret_path, root); !ok) return std::unexpected(ok.error());

  std::unique_ptr<SoftwareBackend> b(new SoftwareBackend(dir, random));
  if (auto ok = derive_storage_key(root, b->storage_key_); !ok) return std::unexpected(ok.error());
  const std::string platform_path = dir + "/" + std::string(kPlatformFile);
  auto sealed = read_required(platform_path);
  if (!sealed) return std::unexpected(sealed.error());
  auto plain = b->unseal(kPlatformRecord, {}, *sealed);
  if (!plain) return std::unexpected(plain.error());
  auto platform = decode_platform(plain->view());
  if (!platform) return std::unexpected(platform.error());
  if (auto ok = check_platform(platform->key.get(), platform->chain[0].get(), ErrorCode::bad_format,
                               platform_path);
      !ok) {
    return std::unexpected(ok.error());
  }
  b->key_ = std::move(platform->key);
  b->chain_ = std::move(platform->chain);
  return b;
}

Result<ByteVec> SoftwareBackend::seal(std::string_view record, ByteView context,
                                      ByteView plaintext) {
  // OpenSSL takes int lengths; the AAD u32 ones.
  if (plaintext.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
      record.size() > std::numeric_limits<std::uint32_t>::max() ||
      context.size() > std::numeric_limits<std::uint32_t>::max()) {
    return fail(ErrorCode::invalid_argument, fmt::format("seal {}: too large", record));
  }
  Bytes<kNonceSize> nonce{};
  random_.fill(nonce);
  return gcm_seal(storage_key_, nonce, additional_data(record, context), plaintext);
}

Result<SecretBytes> SoftwareBackend::unseal(std::string_view record, ByteView context,
                                            ByteView sealed) const {
  const auto tampered = [&] {
    return fail(ErrorCode::store_tampered,
                fmt::format("sealed record {}: authentication failed", record));
  };
  const std::size_t overhead = kSealMagic.size() + kNonceSize + kTagSize;
  if (sealed.size() < overhead ||
      sealed.size() - overhead > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
      !std::equal(kSealMagic.begin(), kSealMagic.end(), sealed.begin())) {
    return tampered();
  }
  ByteVec plain;
  if (!gcm_open(storage_key_, sealed, additional_data(record, context), plain)) return tampered();
  return SecretBytes(std::move(plain));
}

namespace {

Result<CounterRecord> read_counter(const SoftwareBackend& b, const std::string& path) {
  auto sealed = read_required(path);
  if (!sealed) return std::unexpected(sealed.error());
  auto plain = b.unseal(kCounterRecord, {}, *sealed);
  if (!plain) return std::unexpected(plain.error());
  return decode_counter(plain->view());
}

}  // namespace

// Read from disk on every call rather than cached at open: the file is the single source of
// truth, and a counter record damaged while the TRE runs is noticed at the next commit.
Result<std::uint64_t> SoftwareBackend::counter() const {
  auto c = read_counter(*this, dir_ + "/" + std::string(kCounterFile));
  if (!c) return std::unexpected(c.error());
  return c->value;
}

Result<void> SoftwareBackend::set_counter(std::uint64_t value) {
  auto c = read_counter(*this, dir_ + "/" + std::string(kCounterFile));
  if (!c) return std::unexpected(c.error());
  if (value < c->value) {
    return fail(ErrorCode::internal, "monotonic counter: refusing to go down");
  }
  if (value == c->value) return {};
  return write_counter_record(value, c->lockdown);
}

Result<std::optional<std::string>> SoftwareBackend::lockdown_reason() const {
  auto c = read_counter(*this, dir_ + "/" + std::string(kCounterFile));
  if (!c) return std::unexpected(c.error());
  return c->lockdown;
}

Result<void> SoftwareBackend::enter_lockdown(std::string_view reason) {
  auto c = read_counter(*this, dir_ + "/" + std::string(kCounterFile));
  if (c && c->lockdown) return {};  // sticky: the first evidence is the one that counts
  if (!c && c.error().code != ErrorCode::store_tampered) return std::unexpected(c.error());
  const std::uint64_t value = c ? c->value : kPoisonedCounter;
  return write_counter_record(value, std::string(reason));
}

Result<void> SoftwareBackend::write_counter_record(std::uint64_t value,
                                                   const std::optional<std::string>& lock) {
  auto sealed = seal(kCounterRecord, {}, encode_counter(CounterRecord{value, lock}));
  if (!sealed) return std::unexpected(sealed.error());
  return write_file_atomic(dir_ + "/" + std::string(kCounterFile), *sealed, 0600);
}

}  // namespace mcim::tre
