// OpenSSL 3 behind small RAII owners, and the conversion of its error queue into mcim::Error.
// Loading functions accept PEM or DER and say which they expected when neither parses, so a
// truncated file, an empty one, a key given where a certificate belongs, or PEM/DER confusion
// is a bad_format error naming the file, never a crash. No secrets in messages.
#pragma once

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/error.h"

namespace mcim::pki {

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
template <class T, void (*Free)(T*)>
using Owned = std::unique_ptr<T, Deleter<T, Free>>;

using PkeyPtr = Owned<EVP_PKEY, EVP_PKEY_free>;
using X509Ptr = Owned<X509, X509_free>;
using BioPtr = Owned<BIO, BIO_free_all>;
using X509StorePtr = Owned<X509_STORE, X509_STORE_free>;
using X509StoreCtxPtr = Owned<X509_STORE_CTX, X509_STORE_CTX_free>;
using MdCtxPtr = Owned<EVP_MD_CTX, EVP_MD_CTX_free>;

// Shares ownership: a X509 that both the caller and a stack hold.
X509Ptr up_ref(X509* cert);
PkeyPtr up_ref(EVP_PKEY* key);

// A read-only memory BIO over `data` (which must outlive it).
BioPtr memory_bio(ByteView data);

// The DER encoding of any OpenSSL object through its i2d function; empty when encoding fails.
template <class T>
ByteVec der_of(const T* object, int (*i2d)(const T*, unsigned char**)) {
  unsigned char* der = nullptr;
  const int n = i2d(object, &der);
  if (n <= 0) return {};
  ByteVec out(der, der + n);
  OPENSSL_free(der);
  return out;
}

// An Error with `what` and the reason at the top of OpenSSL's error queue; clears the queue.
Error openssl_error(ErrorCode code, std::string_view what);

// Keys: EC P-256 everywhere (DESIGN.md §4).
Result<PkeyPtr> generate_p256_key();
// PKCS#8 PEM. write_private_key sets mode 0600 before any byte is written.
Result<std::string> private_key_pem(const EVP_PKEY* key);
Result<void> write_private_key(const std::string& path, const EVP_PKEY* key);
Result<PkeyPtr> load_private_key(const std::string& path);
Result<PkeyPtr> parse_private_key(ByteView pem_or_der, std::string_view name);

// Certificates. parse_certificate (and load_certificate) go through CertificateCache::process()
// (certificate_cache.h): the same bytes again give a new reference to the same X509, shared with
// every other caller, so it must not be mutated. parse_certificate_uncached always parses anew:
// for a caller that means to change the certificate, and what the cache calls on a miss.
Result<X509Ptr> parse_certificate(ByteView pem_or_der, std::string_view name);
Result<X509Ptr> parse_certificate_uncached(ByteView pem_or_der, std::string_view name);
Result<X509Ptr> load_certificate(const std::string& path);
// Every certificate of a PEM bundle (at least one), or a single DER one; through the cache as
// parse_certificate, so not to be changed either.
Result<std::vector<X509Ptr>> load_certificates(const std::string& path);
Result<std::string> certificate_pem(const X509* cert);
ByteVec certificate_der(const X509* cert);
Result<void> write_certificate(const std::string& path, const X509* cert);

// What `mcim pki issue --out PREFIX` writes: PREFIX.key and PREFIX.pem, the certificate first,
// optionally followed by its intermediates.
struct KeyPair {
  PkeyPtr key;
  std::vector<X509Ptr> certs;  // at least one
  X509* cert() const { return certs.front().get(); }
};
Result<KeyPair> load_key_pair(const std::string& prefix);

// True for an EC key on P-256 (prime256v1), the only curve mcim signs with.
bool is_p256(const EVP_PKEY* key);
// ECDSA with SHA-256 over `data`; the signature is a DER ECDSA-Sig-Value. ecdsa_verify is false
// for any failure (wrong key, malformed signature) and leaves OpenSSL's error queue empty.
Result<ByteVec> ecdsa_sign(EVP_PKEY* key, ByteView data);
bool ecdsa_verify(EVP_PKEY* key, ByteView data, ByteView signature);

// SHA-256 of the DER SubjectPublicKeyInfo: the pin of a public key (RFC 7469 style).
Bytes<32> spki_sha256(const EVP_PKEY* key);
Bytes<32> sha256(ByteView data);

// The certificate's serial number as lowercase hex without leading zeros (OpenSSL's index form
// uses uppercase; see ca.h).
std::string serial_hex(const X509* cert);
std::string subject_text(const X509* cert);  // RFC 2253 form

}  // namespace mcim::pki
