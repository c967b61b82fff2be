#include "pki/openssl.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/file.h"
#include "common/secure.h"
#include "pki/certificate_cache.h"

namespace mcim::pki {
namespace {

std::string bio_text(BIO* bio) {
  char* p = nullptr;
  const long n = BIO_get_mem_data(bio, &p);
  return std::string(p, static_cast<std::size_t>(n));
}

bool looks_like_pem(ByteView data) {
  static constexpr std::string_view kBegin = "-----BEGIN ";
  const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
  return text.find(kBegin) != std::string_view::npos;
}

}  // namespace

BioPtr memory_bio(ByteView data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

X509Ptr up_ref(X509* cert) {
  X509_up_ref(cert);
  return X509Ptr(cert);
}

PkeyPtr up_ref(EVP_PKEY* key) {
  EVP_PKEY_up_ref(key);
  return PkeyPtr(key);
}

Error openssl_error(ErrorCode code, std::string_view what) {
  const unsigned long e = ERR_peek_last_error();
  std::string reason;
  if (e != 0) {
    const char* r = ERR_reason_error_string(e);
    reason = r != nullptr ? r : fmt::format("error {:#x}", e);
  }
  ERR_clear_error();
  return Error(code, reason.empty() ? std::string(what) : fmt::format("{}: {}", what, reason));
}

Result<PkeyPtr> generate_p256_key() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return std::unexpected(openssl_error(ErrorCode::internal, "EC P-256 key generation"));
  return key;
}

Result<std::string> private_key_pem(const EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return std::unexpected(openssl_error(ErrorCode::internal, "encoding a private key"));
  }
  return bio_text(bio.get());
}

Result<void> write_private_key(const std::string& path, const EVP_PKEY* key) {
  auto pem = private_key_pem(key);
  if (!pem) return std::unexpected(pem.error());
  auto r = write_file_atomic(path, *pem, 0600);
  secure_wipe(pem->data(), pem->size());
  return r;
}

Result<PkeyPtr> parse_private_key(ByteView data, std::string_view name) {
  if (data.empty()) return fail(ErrorCode::bad_format, fmt::format("{}: empty", name));
  BioPtr bio = memory_bio(data);
  EVP_PKEY* key = looks_like_pem(data)
                      ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)
                      : d2i_PrivateKey_bio(bio.get(), nullptr);
  if (key == nullptr) {
    ERR_clear_error();
    return fail(ErrorCode::bad_format,
                fmt::format("{}: not a private key (PKCS#8 PEM or DER expected)", name));
  }
  return PkeyPtr(key);
}

Result<PkeyPtr> load_private_key(const std::string& path) {
  auto data = read_file(path);
  if (!data) return std::unexpected(data.error());
  auto key = parse_private_key(*data, path);
  secure_wipe(*data);
  return key;
}

// Through the cache: the hot paths (platform chains, envelope certificates, the SHO's stored
// platform certificates) parse the same few certificates for every device, and no caller changes
// the X509 it gets (certificate.cpp's issue_certificate builds its own with X509_new).
Result<X509Ptr> parse_certificate(ByteView data, std::string_view name) {
  return CertificateCache::process().parse(
      data, [name](ByteView in) { return parse_certificate_uncached(in, name); });
}

Result<X509Ptr> parse_certificate_uncached(ByteView data, std::string_view name) {
  if (data.empty()) return fail(ErrorCode::bad_format, fmt::format("{}: empty", name));
  BioPtr bio = memory_bio(data);
  X509* cert = looks_like_pem(data) ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)
                                    : d2i_X509_bio(bio.get(), nullptr);
  if (cert == nullptr) {
    ERR_clear_error();
    return fail(ErrorCode::bad_format,
                fmt::format("{}: not an X.509 certificate (PEM or DER expected)", name));
  }
  return X509Ptr(cert);
}

Result<X509Ptr> load_certificate(const std::string& path) {
  auto data = read_file(path);
  if (!data) return std::unexpected(data.error());
  return parse_certificate(*data, path);
}

// Each certificate of a bundle through the cache too: the CA certificates of a device's platform
// chain are the same text in every device's platform.pem. Blocks of other kinds (a key beside
// the certificate) are passed over, as PEM_read_bio_X509 passes over them; a certificate block
// that does not parse fails the whole load.
Result<std::vector<X509Ptr>> load_certificates(const std::string& path) {
  auto data = read_file(path);
  if (!data) return std::unexpected(data.error());
  if (!looks_like_pem(*data)) {
    auto one = parse_certificate(*data, path);
    if (!one) return std::unexpected(one.error());
    std::vector<X509Ptr> v;
    v.push_back(std::move(*one));
    return v;
  }
  static constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
  static constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
  const std::string_view text(reinterpret_cast<const char*>(data->data()), data->size());
  std::vector<X509Ptr> certs;
  for (std::size_t at = text.find(kBegin); at != std::string_view::npos;
       at = text.find(kBegin, at)) {
    const std::size_t end = text.find(kEnd, at);
    if (end == std::string_view::npos) {
      return fail(ErrorCode::bad_format,
                  fmt::format("{}: certificate {} has no END line", path, certs.size() + 1));
    }
    std::size_t stop = end + kEnd.size();
    if (stop < text.size() && text[stop] == '\n') ++stop;
    auto cert = parse_certificate(ByteView(data->data() + at, stop - at), path);
    if (!cert) {
      return fail(
          ErrorCode::bad_format,
          fmt::format("{}: certificate {} is not an X.509 certificate", path, certs.size() + 1));
    }
    certs.push_back(std::move(*cert));
    at = stop;
  }
  if (certs.empty()) {
    return fail(ErrorCode::bad_format, fmt::format("{}: no PEM certificate in it", path));
  }
  return certs;
}

Result<std::string> certificate_pem(const X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return std::unexpected(openssl_error(ErrorCode::internal, "encoding a certificate"));
  }
  return bio_text(bio.get());
}

ByteVec certificate_der(const X509* cert) { return der_of(cert, i2d_X509); }

Result<void> write_certificate(const std::string& path, const X509* cert) {
  auto pem = certificate_pem(cert);
  if (!pem) return std::unexpected(pem.error());
  return write_file_atomic(path, *pem, 0644);
}

Result<KeyPair> load_key_pair(const std::string& prefix) {
  auto key = load_private_key(prefix + ".key");
  if (!key) return std::unexpected(key.error());
  auto certs = load_certificates(prefix + ".pem");
  if (!certs) return std::unexpected(certs.error());
  return KeyPair{std::move(*key), std::move(*certs)};
}

Bytes<32> sha256(ByteView data) {
  Bytes<32> out{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

Bytes<32> spki_sha256(const EVP_PKEY* key) {
  const ByteVec der = der_of(key, i2d_PUBKEY);
  if (der.empty()) return {};
  return sha256(der);
}

std::string serial_hex(const X509* cert) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  char* hex = bn != nullptr ? BN_bn2hex(bn) : nullptr;
  std::string out = hex != nullptr ? hex : "";
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

std::string subject_text(const X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  return bio_text(bio.get());
}

// Fetched once: OpenSSL 3's implicit fetch behind EVP_sha256() on every signature costs more
// than hashing a report.
static const EVP_MD* sha256_md() {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

bool is_p256(const EVP_PKEY* key) {
  if (key == nullptr || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) return false;
  char group[32] = {};
  std::size_t len = 0;
  return EVP_PKEY_get_group_name(key, group, sizeof group, &len) == 1 &&
         std::string_view(group, len) == "prime256v1";
}

Result<ByteVec> ecdsa_sign(EVP_PKEY* key, ByteView data) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  std::size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, sha256_md(), nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, data.data(), data.size()) != 1) {
    return std::unexpected(openssl_error(ErrorCode::internal, "ECDSA signing"));
  }
  ByteVec sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, data.data(), data.size()) != 1) {
    return std::unexpected(openssl_error(ErrorCode::internal, "ECDSA signing"));
  }
  sig.resize(len);
  return sig;
}

bool ecdsa_verify(EVP_PKEY* key, ByteView data, ByteView signature) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  const bool ok = ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, sha256_md(), nullptr, key) == 1 &&
                  EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), data.data(),
                                   data.size()) == 1;
  ERR_clear_error();
  return ok;
}

}  // namespace mcim::pki
