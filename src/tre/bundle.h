// The supplier bundle (F0, docs/tre.md "Supplier bundle"): everything the supplier puts into a
// pristine TRE at the factory, as one file: the PCID credential (IMSI in the RO's MCC/MNC, K and
// OPc for MILENAGE with the standard constants), the platform key and its certificate from the
// supplier CA, the operator trust anchors, the RO's operator id, the bootstrap PIN, the device id
// and model. It holds secrets: written 0600, read once by `mcim device init`, and its encoding
// only ever lives in SecretBytes.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/random.h"
#include "common/secure.h"
#include "pki/authority.h"
#include "pki/openssl.h"

namespace mcim::tre {

struct SupplierBundle {
  std::string device_id;  // as in the platform certificate's urn:mcim:device: SAN
  std::string model;      // as in its urn:mcim:model: SAN
  std::string pcid;       // 6..15 digits
  Secret<16> k;
  Secret<16> opc;
  unsigned ind_bits = 5;    // the PCID credential's SQN IND length (aka::SqnPolicy)
  std::string ro_operator;  // the Registration Operator's operator id: owns the PCID
  std::chrono::sys_seconds pcid_not_after{};  // lifetime of the PCID credential (F8)
  Secret<16> pin;                             // bootstrap PIN, ASCII digits
  std::size_t pin_size = 0;                   // 4..16
  pki::PkeyPtr platform_key;
  std::vector<pki::X509Ptr> platform_chain;  // leaf first, then supplier intermediates
  std::vector<pki::X509Ptr> operator_roots;  // trust anchors for packages and instructions
};

// The PIN as text: a view into bundle.pin (which must outlive it).
std::string_view pin_text(const SupplierBundle& bundle);

// Checks what decode_bundle checks (invalid_argument naming the field): ids, PCID digits, PIN,
// ind_bits, key P-256 and matching the leaf, leaf is a platform certificate whose device id and
// model are these, each further chain entry the CA that issued the one before, 1-16 operator
// roots that are self-signed CAs.
Result<void> validate_bundle(const SupplierBundle& bundle);

// JSON, "type":"mcim-supplier-bundle/1", keys and certificates in PEM, secrets in hex.
Result<SecretBytes> encode_bundle(const SupplierBundle& bundle);
Result<SupplierBundle> decode_bundle(ByteView bytes);  // bad_format naming the field
Result<void> write_bundle(const std::string& path, const SupplierBundle& bundle);  // 0600
Result<SupplierBundle> read_bundle(const std::string& path);

struct ManufactureSpec {
  std::string pcid;       // required
  std::string device_id;  // default "dev-<pcid>"; <= 64 chars, no comma (CN, SAN)
  std::string model = "mcim-sw-tre-1";
  std::string ro_operator;         // required
  Secret<16> op;                   // the RO's OP, common to its PCIDs; OPc = f(K, OP)
  std::optional<std::string> pin;  // default: 8 random digits
  int certificate_days = 3650;
  int pcid_days = 730;                // PCID credential lifetime
  std::vector<X509*> operator_roots;  // required, at least one
  std::string ocsp_url;               // into the platform certificate's AIA when not empty
};

// F0 for one device: a fresh platform key certified by `supplier_ca` (platform profile), a
// random K, OPc from K and OP, the PIN. A bad spec is refused before anything is certified:
// missing_argument or invalid_argument, the message starting with the field's name as spelt
// here ("pcid: ...", "operator_roots[1]: ...") so that the CLI can name its option instead.
Result<SupplierBundle> manufacture(const pki::Authority& supplier_ca, const ManufactureSpec& spec,
                                   const Clock& clock, RandomSource& random);

}  // namespace mcim::tre
