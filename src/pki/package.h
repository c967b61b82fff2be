// The MCIM package (DESIGN.md §4, F2 steps 11-13): the canonical "mcim/1" document (IMSI, K,
// OPc/TOPc, algorithm, AMF, SQN, policy, nonce, validity, sequence) and its CMS sealing:
// SignedData (RFC 5652) by the SHO over AuthEnvelopedData (RFC 5083, AES-256-GCM, ECDH to a TRE),
// the generic envelope of sealed.h under the package signer policy. Thread-safe; opening keeps
// sealed.h's two bounded process-wide caches (parsed certificates, verified signer paths) that
// never change a verdict. Format and checks: docs/mcim-package.md.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/secure.h"
#include "pki/openssl.h"
#include "pki/sealed.h"
#include "pki/verify.h"

namespace mcim::pki {

inline constexpr std::string_view kMcimVersion = "mcim/1";
// Upper bound of an encoded document; the decoder refuses anything longer before parsing.
inline constexpr std::size_t kMaxDocumentSize = 4096;

// ---------------------------------------------------------------------------------------------
// The document

enum class McimAlgorithm { milenage, tuak };
std::string_view to_string(McimAlgorithm a);

// Remote management operations a policy may grant its owner (DESIGN.md §3, F9). Declared in the
// alphabetical order of their wire names, which is also their canonical order in a document.
enum class McimOperation : std::uint8_t {
  activate,
  block,
  deactivate,
  delete_,  // wire name "delete"
  retire,
  unblock,
  update,
};
std::string_view to_string(McimOperation op);
std::optional<McimOperation> parse_operation(std::string_view name);

// MILENAGE's operator constants (TS 35.206 §4.1); the defaults are the specification's.
struct McimMilenage {
  std::array<Bytes<16>, 5> c = {Bytes<16>{},
                                Bytes<16>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
                                Bytes<16>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2},
                                Bytes<16>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4},
                                Bytes<16>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8}};
  std::array<unsigned, 5> r = {64, 0, 32, 64, 96};  // rotations in bits, 0..127
};

// TUAK's operator choices (TS 35.231 §5.1, §7.2); the defaults fit the TS 33.102 vector.
struct McimTuak {
  unsigned mac_bits = 64;          // 64, 128, 256
  unsigned res_bits = 64;          // 32, 64, 128, 256
  unsigned ck_bits = 128;          // 128, 256
  unsigned ik_bits = 128;          // 128, 256
  unsigned keccak_iterations = 1;  // 1..kMaxKeccakIterations
};
inline constexpr unsigned kMaxKeccakIterations = 256;

struct McimPolicy {
  std::string owner;                      // operator id of the owning stakeholder (the SHO)
  std::vector<McimOperation> operations;  // what the owner may do remotely; sorted, unique
  bool allows(McimOperation op) const;
};

// One MCIM as the SHO issues it to one TRE. K and OPc/TOPc live in Secret<> members, which wipe
// themselves; the object is a value (copies wipe too). Ids use [A-Za-z0-9._:-]{1,64}.
struct McimDocument {
  std::string package_id;  // chosen by the SHO, unique per package
  std::string device_id;   // must equal the platform certificate's urn:mcim:device: id
  std::string imsi;        // 6..15 decimal digits
  McimAlgorithm algorithm = McimAlgorithm::milenage;
  McimMilenage milenage;  // meaningful when algorithm == milenage
  McimTuak tuak;          // meaningful when algorithm == tuak
  Secret<32> k;           // the first k_size bytes; MILENAGE 16, TUAK 16 or 32
  std::size_t k_size = 16;
  Secret<16> opc;   // MILENAGE OPc
  Secret<32> topc;  // TUAK TOPc
  Bytes<2> amf{};
  Bytes<6> sqn{};         // the initial SQN (SEQ || IND), TS 33.102 Annex C
  unsigned ind_bits = 5;  // IND length, 0..10 (as aka::SqnPolicy)
  McimPolicy policy;
  Bytes<16> registration_nonce{};                      // binds the package to its registration (F1)
  std::chrono::sys_seconds not_before{}, not_after{};  // valid in [not_before, not_after)
  std::uint64_t sequence = 0;                          // per owner, strictly increasing, 1..2^53-1

  ByteView key() const { return ByteView(k.get().data(), k_size); }
  // Copies k (16 or 32 bytes) into the Secret; invalid_argument for any other length.
  Result<void> set_key(ByteView k_bytes);
};

// The rules of docs/mcim-package.md on a document in memory; `code` is what a violation returns
// (invalid_argument for a caller's struct, bad_format for decoded input), the message names the
// field and never its value.
Result<void> validate_document(const McimDocument& doc,
                               ErrorCode code = ErrorCode::invalid_argument);

// Canonical JSON: sorted keys, no whitespace, lowercase hex, integers only. One document has
// exactly one encoding, and decode_document accepts only that encoding (anything else, and any
// unknown, missing, mistyped or out-of-range field, is bad_format naming the field).
Result<SecretBytes> encode_document(const McimDocument& doc);
Result<McimDocument> decode_document(ByteView canonical_json);

// ---------------------------------------------------------------------------------------------
// Sealing and opening

// The SHO's package-signing certificate must carry SAN URI urn:mcim:operator:<id>: that id is
// the operator the signature speaks for, and a package's policy owner must equal it.
inline constexpr std::string_view kOperatorUrn = "urn:mcim:operator:";
std::optional<std::string> signer_operator_id(const X509* cert);
// (valid_mcim_id, the id syntax, is declared in sealed.h.)

// The signers of packages: the package-signing profile (emailProtection EKU, S/MIME signing
// purpose, as `openssl cms -verify` requires) naming its operator; packages up to 64 KiB.
inline constexpr SignerPolicy kPackageSignerPolicy{.what = "package",
                                                   .purpose = Purpose::smime_sign,
                                                   .eku = SignerEku::email_protection,
                                                   .profile = "package-signing",
                                                   .urn_prefix = kOperatorUrn,
                                                   .max_size = 64 * 1024,
                                                   .recipient = "platform certificate"};

// The SHO's package-signing certificate (with the operator URN), its key and intermediates.
using PackageSigner = SealSigner;

// Encrypts the canonical document to recipient_cert (a platform certificate whose device id is
// doc.device_id) and signs the result. invalid_argument for an invalid document, a signer whose
// operator is not doc.policy.owner, or a recipient for another device.
Result<ByteVec> seal_package(const McimDocument& doc, const PackageSigner& signer,
                             X509* recipient_cert);

// What a relay (the RO's DPF) learns without decrypting.
struct SignedPackageInfo {
  X509Ptr signer;              // the verified package-signing certificate
  std::string operator_id;     // from its urn:mcim:operator: SAN
  std::vector<X509Ptr> chain;  // the verified path, signer first, trust anchor last
  ByteView sealed;             // the AuthEnvelopedData DER, a view into the package bytes
};

// The relay-side check: strict DER and CMS profile, signer chain to operator_roots at
// clock.now() with the S/MIME signing purpose and emailProtection EKU, no certificate outside
// that chain, signature and content digest. Errors: bad_format, chain_invalid, cert_expired,
// signature_invalid, package_tampered.
Result<SignedPackageInfo> verify_package_signature(ByteView pkg, const TrustAnchors& operator_roots,
                                                   const Clock& clock);

// This TRE as a package recipient: its platform certificate and key, checked to belong together
// and the device id read once, so that opening many packages costs no re-parsing.
class PackageRecipient {
 public:
  // wrong_recipient when the key is not the certificate's; bad_format when the certificate has no
  // device id.
  static Result<PackageRecipient> create(X509* platform_cert, EVP_PKEY* platform_key);

  X509* cert() const { return recipient_.cert(); }
  EVP_PKEY* key() const { return recipient_.key(); }
  const std::string& device_id() const { return device_id_; }
  const SealedRecipient& sealed_recipient() const { return recipient_; }

 private:
  PackageRecipient(SealedRecipient r, std::string id)
      : recipient_(std::move(r)), device_id_(std::move(id)) {}
  SealedRecipient recipient_;
  std::string device_id_;
};

struct OpenOptions {
  // The last sequence number this TRE accepted from each operator (policy owner); a package whose
  // sequence is not greater is replayed_package. Operators absent here have no history.
  std::map<std::string, std::uint64_t, std::less<>> last_sequence;
  // When set, the document's registration nonce must equal it (nonce_mismatch otherwise).
  std::optional<Bytes<16>> registration_nonce;
};

// Everything verify_package_signature checks, then: the single recipient is this certificate
// (wrong_recipient), AES-GCM decryption (package_tampered), the document (bad_format), its owner is
// the signer's operator (signature_invalid), its device id is this TRE's (wrong_recipient), the
// validity window at clock.now() (package_expired), the nonce and sequence per `options`.
// The decrypted bytes are wiped before returning.
Result<McimDocument> open_package(ByteView pkg, const PackageRecipient& recipient,
                                  const TrustAnchors& operator_roots, const Clock& clock,
                                  const OpenOptions& options = {});
Result<McimDocument> open_package(ByteView pkg, X509* recipient_cert, EVP_PKEY* recipient_key,
                                  const TrustAnchors& operator_roots, const Clock& clock,
                                  const OpenOptions& options = {});

}  // namespace mcim::pki
