// The supplier's CCIF (DESIGN.md F0, issue 6 "Supplier / CCIF"; TR 33.812 Alternative 1a): it
// manufactures devices in batches (one tre::SupplierBundle each) and hands the batch's PCID
// credentials (PCID, K, OPc, IND length, lifetime) to the Registration Operator's ICF as one
// "mcim-pcid-batch/1" document, encrypted to the ICF's certificate and signed by the supplier
// (the envelope of pki/sealed.h). K and OPc only ever live in Secret<> and SecretBytes. Pure apart
// from manufacture_batch's key generation; thread-compatible values. Format: docs/supplier.md.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/random.h"
#include "common/secure.h"
#include "pki/authority.h"
#include "pki/openssl.h"
#include "pki/sealed.h"
#include "pki/verify.h"
#include "tre/bundle.h"

namespace mcim::supplier {

inline constexpr std::string_view kPcidBatchType = "mcim-pcid-batch/1";
inline constexpr std::size_t kMaxBatchRecords = 100'000;
// The supplier's signing certificate carries SAN URI urn:mcim:supplier:<id>.
inline constexpr std::string_view kSupplierUrn = "urn:mcim:supplier:";

// Batch signers: the package-signing profile (emailProtection, S/MIME signing purpose, so that
// `openssl cms -verify` accepts it) naming a supplier; 100,000 records fit in 16 MiB.
inline constexpr pki::SignerPolicy kSupplierSignerPolicy{.what = "batch",
                                                         .purpose = pki::Purpose::smime_sign,
                                                         .eku = pki::SignerEku::email_protection,
                                                         .profile = "package-signing",
                                                         .urn_prefix = kSupplierUrn,
                                                         .max_size = 16 * 1024 * 1024,
                                                         .recipient = "ICF certificate"};

// One device's PCID credential as the ICF needs it (MILENAGE with the RO's OP: OPc = f(K, OP)).
struct PcidRecord {
  std::string pcid;  // 6..15 decimal digits, IMSI-shaped in the RO's MCC/MNC
  Secret<16> k, opc;
  unsigned ind_bits = 5;                 // SQN IND length, 0..10 (TS 33.102 Annex C)
  std::chrono::sys_seconds not_after{};  // end of the credential's lifetime (F8); > created
};

struct PcidBatch {
  std::string batch_id;     // ids: [A-Za-z0-9._:-]{1,64}
  std::string supplier_id;  // the signer's urn:mcim:supplier: id
  std::string ro_operator;  // the RO the batch is for
  std::chrono::sys_seconds created{};
  std::vector<PcidRecord> records;  // 1..kMaxBatchRecords, PCIDs unique
};

// The rules of docs/supplier.md on a batch in memory; `code` is what a violation returns, the
// message names the field ("records[17].pcid: ...") and never a value.
Result<void> validate_batch(const PcidBatch& batch, ErrorCode code = ErrorCode::invalid_argument);

// Canonical JSON (sorted keys, no whitespace, lowercase hex, integers only): one encoding per
// batch, and decode_batch accepts only it (anything else is bad_format naming the field).
Result<SecretBytes> encode_batch(const PcidBatch& batch);
Result<PcidBatch> decode_batch(ByteView canonical_json);

std::optional<std::string> signer_supplier_id(const X509* cert);

// Encrypts the encoded batch to icf_cert (an EC certificate whose key usage allows keyAgreement)
// and signs it. missing_argument for a null signer or certificate; invalid_argument for an invalid
// batch, a signer whose urn:mcim:supplier: id is not batch.supplier_id, a signer key that is not
// its certificate's, an ICF certificate that cannot do ECDH.
Result<ByteVec> seal_batch(const PcidBatch& batch, const pki::SealSigner& supplier, X509* icf_cert);

// The ICF's side: the envelope's checks under kSupplierSignerPolicy (bad_format, chain_invalid,
// cert_expired, signature_invalid, package_tampered, wrong_recipient), then the document
// (bad_format), then its supplier_id is the signer's (signature_invalid). The caller checks that
// ro_operator is itself.
Result<PcidBatch> open_batch(ByteView sealed, X509* icf_cert, EVP_PKEY* icf_key,
                             const pki::TrustAnchors& supplier_roots, const Clock& clock);

struct BatchSpec {
  std::string batch_id;
  std::string supplier_id;
  std::string first_pcid;  // the batch's PCIDs are first_pcid, +1, +2, ... of the same length
  std::size_t count = 0;   // 1..kMaxBatchRecords
  // Every device's template: ro_operator, op, model, lifetimes, operator roots, OCSP URL. Its
  // pcid, device_id and pin must be unset: each device gets its PCID, "dev-<pcid>", its own PIN.
  tre::ManufactureSpec device;
};

struct ManufacturedBatch {
  std::vector<tre::SupplierBundle> bundles;  // for the devices, in PCID order
  PcidBatch batch;                           // for the ICF: the bundles' PCID credentials
};

// F0 for `count` devices through tre::manufacture; a bad spec is refused before anything is
// certified (invalid_argument or missing_argument naming the field).
Result<ManufacturedBatch> manufacture_batch(const pki::Authority& supplier_ca,
                                            const BatchSpec& spec, const Clock& clock,
                                            RandomSource& random);

}  // namespace mcim::supplier
