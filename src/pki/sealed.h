// Sealed and signed content (DESIGN.md §4): any byte string encrypted to one recipient's EC P-256
// key (CMS AuthEnvelopedData, RFC 5083: AES-256-GCM, ephemeral-static ECDH with the X9.63 KDF over
// SHA-256, RFC 5753) and then signed (CMS SignedData, RFC 5652) by a signer whose certificate
// names, as a SAN URN, the party it speaks for. MCIM packages (package.h) and the supplier's PCID
// batches (roles/supplier/ccif.h) are both this envelope around their own documents.
// Thread-safe; verification keeps two bounded process-wide caches (parsed certificates, verified
// signer paths) that never change a verdict. Profile and checks: docs/mcim-package.md.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/secure.h"
#include "pki/openssl.h"
#include "pki/verify.h"

namespace mcim::pki {

// The id syntax of packages, devices, operators and suppliers: [A-Za-z0-9._:-]{1,64}.
bool valid_mcim_id(std::string_view s);

// The extended key usage a signer must carry explicitly (a purpose check alone also passes
// certificates without any EKU extension).
enum class SignerEku { email_protection, server_auth, client_auth, code_signing };
std::string_view to_string(SignerEku eku);  // RFC 5280 short names: "emailProtection", ...

// Which signers an envelope of one kind accepts, its size limit, and how messages name things.
struct SignerPolicy {
  std::string_view what = "sealed content";  // names the object in messages: "package", "batch"
  Purpose purpose = Purpose::smime_sign;     // of the signer's path (S/MIME: openssl cms -verify)
  SignerEku eku = SignerEku::email_protection;
  std::string_view profile = "package-signing";  // the certificate profile, for messages
  // The signer's identity: the rest of its first SAN URI with this prefix, a valid_mcim_id.
  // The word before the prefix's last ':' names the role in messages ("operator", "supplier").
  std::string_view urn_prefix;
  std::size_t max_size = 64 * 1024;  // the whole DER envelope; larger is bad_format unread
  std::string_view recipient = "recipient certificate";  // for messages: "platform certificate"
};

struct SealSigner {
  X509* cert = nullptr;  // carries the policy's EKU and URN (not checked when sealing)
  EVP_PKEY* key = nullptr;
  std::vector<X509*> chain;  // intermediates up to (not including) the root; may be empty
};

// Encrypts `content` to `recipient` (an EC certificate whose key usage, when present, allows
// keyAgreement) and signs the result: SHA-256, ECDSA, signed attributes contentType,
// signingTime and messageDigest, the signer's certificate and chain included.
// missing_argument for a null signer or recipient; invalid_argument for a signer key that is not
// its certificate's, or a recipient that cannot do ECDH.
Result<ByteVec> seal_signed(ByteView content, const SealSigner& signer, X509* recipient);

// What anybody learns from an envelope without its recipient's key.
struct SignedEnvelopeInfo {
  X509Ptr signer;              // the verified signing certificate
  std::string signer_id;       // from its SAN URI with the policy's prefix
  std::vector<X509Ptr> chain;  // the verified path, signer first, trust anchor last
  ByteView sealed;             // the AuthEnvelopedData DER, a view into the envelope bytes
  TimePoint verified_at;       // the clock's time the path was verified at
};

// The strict DER and CMS profile (one signer, SHA-256, ECDSA, no CRLs, no unsigned attributes,
// nothing after), the signer's path to `anchors` at clock.now() with the policy's purpose and
// EKU, no certificate outside that path, the signer's URN, the signature and the content digest.
// Errors: bad_format, chain_invalid, cert_expired, signature_invalid, package_tampered.
Result<SignedEnvelopeInfo> verify_sealed_signature(ByteView der, const TrustAnchors& anchors,
                                                   const Clock& clock, const SignerPolicy& policy);

// A recipient's certificate and key, checked once to belong together.
class SealedRecipient {
 public:
  // missing_argument for a null one; wrong_recipient when the key is not the certificate's.
  static Result<SealedRecipient> create(X509* cert, EVP_PKEY* key);

  X509* cert() const { return cert_.get(); }
  EVP_PKEY* key() const { return key_.get(); }

 private:
  SealedRecipient(X509Ptr c, PkeyPtr k) : cert_(std::move(c)), key_(std::move(k)) {}
  X509Ptr cert_;
  PkeyPtr key_;
};

struct OpenedEnvelope {
  SecretBytes content;  // the decrypted content, wiped when destroyed
  SignedEnvelopeInfo signer;
};

// Everything verify_sealed_signature checks, then: the content is a DER AuthEnvelopedData with
// one key-agreement recipient (bad_format), that recipient is this certificate (wrong_recipient),
// ECDH, key unwrap and AES-GCM with its tag (package_tampered). The plaintext only ever lives in
// buffers that are cleansed when freed, and is returned only when decryption succeeded.
Result<OpenedEnvelope> open_sealed(ByteView der, const SealedRecipient& recipient,
                                   const TrustAnchors& anchors, const Clock& clock,
                                   const SignerPolicy& policy);
Result<OpenedEnvelope> open_sealed(ByteView der, X509* recipient_cert, EVP_PKEY* recipient_key,
                                   const TrustAnchors& anchors, const Clock& clock,
                                   const SignerPolicy& policy);

}  // namespace mcim::pki
