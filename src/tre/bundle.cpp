#include "tre/bundle.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "aka/milenage.h"
#include "common/file.h"
#include "pki/certificate.h"
#include "pki/signed_json.h"
#include "tre/bootstrap_key.h"

namespace mcim::tre {
namespace {

using pki::Json;

#define MCIM_RETURN_IF_ERROR(expr)                                 \
  do {                                                             \
    if (auto r_ = (expr); !r_) return std::unexpected(r_.error()); \
  } while (0)

constexpr std::string_view kType = "mcim-supplier-bundle/1";
constexpr std::string_view kPath = "bundle";
constexpr std::size_t kMaxBundleSize = std::size_t{256} << 10;
constexpr std::size_t kMinPcid = 6, kMaxPcid = 15;
constexpr unsigned kMaxIndBits = 10;
constexpr std::size_t kMaxChain = 5;  // the leaf and up to four supplier intermediates
constexpr std::size_t kMaxOperatorRoots = 16;
// Device ids and models go into the platform certificate's subject CN (at most 64 characters,
// RFC 5280 ub-common-name) and SAN URIs (no commas in OpenSSL's configuration syntax).
constexpr std::size_t kMaxCertificateName = 64;
constexpr std::size_t kMaxOcspUrl = 1024;
constexpr std::string_view kKeyLabel = "PRIVATE KEY";
constexpr std::string_view kCertLabel = "CERTIFICATE";

bool all_digits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool digits_between(std::string_view s, std::size_t min, std::size_t max) {
  return s.size() >= min && s.size() <= max && all_digits(s);
}

std::unexpected<Error> field_error(ErrorCode code, std::string_view field,
                                   std::string_view problem) {
  return fail(code, fmt::format("{}.{}: {}", kPath, field, problem));
}

// A root the TRE may trust: a CA certificate that signed itself.
bool is_self_signed_ca(X509* cert) {
  const bool ok = cert != nullptr && X509_check_ca(cert) != 0 && X509_self_signed(cert, 1) == 1;
  ERR_clear_error();
  return ok;
}

// ---- Validation, shared by validate_bundle (invalid_argument) and decode_bundle (bad_format) ---

Result<void> check_scalars(const SupplierBundle& b, ErrorCode code) {
  for (auto [value, field] : {std::pair{&b.device_id, "device_id"},
                              {&b.model, "model"},
                              {&b.ro_operator, "ro_operator"}}) {
    if (!pki::valid_token(*value)) {
      return field_error(code, field,
                         "must be 1-128 printable ASCII characters without space, '\"' or '\\'");
    }
  }
  if (!digits_between(b.pcid, kMinPcid, kMaxPcid)) {
    return field_error(code, "pcid", "expected 6-15 decimal digits");
  }
  if (b.ind_bits > kMaxIndBits) return field_error(code, "ind_bits", "expected 0..10");
  const std::int64_t t = pki::utc_seconds(b.pcid_not_after);
  if (t < 0 || t > pki::kMaxUtcSeconds) {
    return field_error(code, "pcid_not_after", "outside 1970..9999");
  }
  if (b.pin_size > b.pin.get().size() || !digits_between(pin_text(b), kMinPinSize, kMaxPinSize)) {
    return field_error(code, "pin", "expected 4-16 decimal digits");
  }
  return {};
}

// The leaf: the platform profile (an end entity for signing and key agreement, see
// pki/certificate.cpp) naming this device and model, and certifying this very key.
Result<void> check_leaf(const SupplierBundle& b, X509* leaf, ErrorCode code) {
  if (X509_check_private_key(leaf, b.platform_key.get()) != 1) {
    ERR_clear_error();
    return field_error(code, "platform_key", "does not match the platform certificate");
  }
  const std::uint32_t usage = KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT;
  const bool platform_profile = X509_check_ca(leaf) == 0 &&
                                (X509_get_extension_flags(leaf) & EXFLAG_KUSAGE) != 0 &&
                                (X509_get_key_usage(leaf) & usage) == usage;
  const auto device = pki::platform_device_id(leaf);
  const auto model = pki::platform_model(leaf);
  ERR_clear_error();
  if (!platform_profile || !device || !model) {
    return field_error(code, "platform_chain[0]", "not a platform certificate");
  }
  if (*device != b.device_id) {
    return field_error(code, "device_id", "differs from the platform certificate's device id");
  }
  if (*model != b.model) {
    return field_error(code, "model", "differs from the platform certificate's model");
  }
  return {};
}

Result<void> check_credentials(const SupplierBundle& b, ErrorCode code) {
  if (!b.platform_key || !pki::is_p256(b.platform_key.get())) {
    return field_error(code, "platform_key", "expected an EC P-256 private key");
  }
  const auto& chain = b.platform_chain;
  if (chain.empty() || chain.size() > kMaxChain) {
    return field_error(code, "platform_chain", "expected 1-5 certificates, the leaf first");
  }
  for (std::size_t i = 0; i < chain.size(); ++i) {
    if (!chain[i]) return field_error(code, fmt::format("platform_chain[{}]", i), "missing");
  }
  MCIM_RETURN_IF_ERROR(check_leaf(b, chain[0].get(), code));
  // Each further certificate is the CA that signed the one before it.
  for (std::size_t i = 1; i < chain.size(); ++i) {
    X509* issuer = chain[i].get();
    const bool ok = X509_check_ca(issuer) != 0 &&
                    X509_check_issued(issuer, chain[i - 1].get()) == X509_V_OK &&
                    X509_verify(chain[i - 1].get(), X509_get0_pubkey(issuer)) == 1;
    ERR_clear_error();
    if (!ok) {
      return field_error(code, fmt::format("platform_chain[{}]", i),
                         "not the CA that issued the certificate before it");
    }
  }
  if (b.operator_roots.empty() || b.operator_roots.size() > kMaxOperatorRoots) {
    return field_error(code, "operator_roots", "expected 1-16 certificates");
  }
  for (std::size_t i = 0; i < b.operator_roots.size(); ++i) {
    if (!is_self_signed_ca(b.operator_roots[i].get())) {
      return field_error(code, fmt::format("operator_roots[{}]", i),
                         "not a self-signed CA certificate");
    }
  }
  return {};
}

Result<void> check_bundle(const SupplierBundle& b, ErrorCode code) {
  MCIM_RETURN_IF_ERROR(check_scalars(b, code));
  return check_credentials(b, code);
}

// ---- Encoding ----------------------------------------------------------------------------------

// Writes the bundle's JSON straight into one buffer reserved up front, so that the secrets (K,
// OPc, PIN, the private key) exist in exactly one place, the SecretBytes returned, and no
// reallocation leaves an unwiped copy behind. nlohmann::json is not used here: it would copy
// each secret into std::strings of its own (the value, then the dump) that it frees unwiped.
// Members are written in sorted order with no whitespace, as canonical() would.
class BundleWriter {
 public:
  explicit BundleWriter(std::size_t capacity) {
    out_.reserve(capacity);
    reserved_ = out_.capacity();
  }

  void begin() { put('{'); }
  BundleWriter& key(std::string_view k) {
    if (!first_) put(',');
    first_ = false;
    quoted(k);
    put(':');
    return *this;
  }
  void string(std::string_view s) { quoted(s); }
  void hex(ByteView bytes) {
    static constexpr char kDigits[] = "0123456789abcdef";
    put('"');
    for (std::uint8_t b : bytes) {
      put(kDigits[b >> 4]);
      put(kDigits[b & 0xf]);
    }
    put('"');
  }
  void integer(std::uint64_t v) {
    char buf[24];
    const auto n = fmt::format_to_n(buf, sizeof buf, "{}", v).size;
    out_.insert(out_.end(), buf, buf + n);
  }
  void strings(const std::vector<std::string>& items) {
    put('[');
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (i != 0) put(',');
      quoted(items[i]);
    }
    put(']');
  }
  Result<SecretBytes> finish() {
    put('}');
    const bool reallocated = out_.capacity() != reserved_;
    SecretBytes result(std::move(out_));
    if (reallocated) {
      // Unreachable with the bound encode_bundle computes; refuse rather than hand out a
      // bundle whose earlier copy was freed unwiped.
      return fail(ErrorCode::internal, "bundle: encoder buffer too small");
    }
    return result;
  }

 private:
  void put(char c) { out_.push_back(static_cast<std::uint8_t>(c)); }
  // JSON string escaping; PEM text only needs "\n", tokens and digits need nothing.
  void quoted(std::string_view s) {
    put('"');
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        put('\\');
        put(c);
      } else if (c == '\n') {
        put('\\');
        put('n');
      } else if (u < 0x20) {
        char buf[8];
        const auto n = fmt::format_to_n(buf, sizeof buf, "\\u{:04x}", u).size;
        out_.insert(out_.end(), buf, buf + n);
      } else {
        put(c);
      }
    }
    put('"');
  }

  std::size_t reserved_ = 0;
  ByteVec out_;
  bool first_ = true;
};

Result<std::vector<std::string>> pem_list(const std::vector<pki::X509Ptr>& certs) {
  std::vector<std::string> out;
  for (const auto& c : certs) {
    auto pem = pki::certificate_pem(c.get());
    if (!pem) return std::unexpected(pem.error());
    out.push_back(std::move(*pem));
  }
  return out;
}

std::size_t text_size(const std::vector<std::string>& items) {
  std::size_t n = 0;
  for (const auto& s : items) n += s.size();
  return n;
}

void write_members(BundleWriter& w, const SupplierBundle& b, std::string_view key_pem,
                   const std::vector<std::string>& roots, const std::vector<std::string>& chain) {
  w.begin();
  w.key("device_id").string(b.device_id);
  w.key("ind_bits").integer(b.ind_bits);
  w.key("k").hex(b.k.get());
  w.key("model").string(b.model);
  w.key("opc").hex(b.opc.get());
  w.key("operator_roots").strings(roots);
  w.key("pcid").string(b.pcid);
  w.key("pcid_not_after").integer(static_cast<std::uint64_t>(pki::utc_seconds(b.pcid_not_after)));
  w.key("pin").string(pin_text(b));
  w.key("platform_chain").strings(chain);
  w.key("platform_key").string(key_pem);
  w.key("ro_operator").string(b.ro_operator);
  w.key("type").string(kType);
}

// ---- Decoding ----------------------------------------------------------------------------------

// nlohmann::json holds every member's text in a std::string of its own, freed without wiping:
// the secret members are wiped in place before the document goes away, on every path. What this
// cannot reach is the parser's own token buffer (it held each string while lexing it); that
// residue is the price of a standard JSON parser and is accepted: the bundle is read once, at
// `mcim device init`, by the process that seals it into the TRE.
class JsonWiper {
 public:
  explicit JsonWiper(Json& j) : j_(j) {}
  JsonWiper(const JsonWiper&) = delete;
  JsonWiper& operator=(const JsonWiper&) = delete;
  ~JsonWiper() { wipe(j_); }

 private:
  static void wipe(Json& j) {
    if (j.is_string()) {
      auto& s = j.get_ref<std::string&>();
      secure_wipe(s.data(), s.size());
    } else if (j.is_structured()) {
      for (auto& v : j) wipe(v);
    }
  }
  Json& j_;
};

// A PEM member holds exactly one block of the expected label and nothing else, so that OpenSSL's
// reader never skips to another block (nor asks a terminal for the password of an encrypted key).
Result<ByteView> pem_text(const Json& v, std::string_view field, std::string_view label) {
  if (!v.is_string()) return field_error(ErrorCode::bad_format, field, "not a string");
  const auto& s = v.get_ref<const std::string&>();
  const std::string begin = fmt::format("-----BEGIN {}-----\n", label);
  const std::string end = fmt::format("-----END {}-----\n", label);
  const bool one_block = s.starts_with(begin) && s.ends_with(end) && s.size() > begin.size() &&
                         s.find("-----", begin.size()) == s.size() - end.size();
  if (!one_block) {
    return field_error(ErrorCode::bad_format, field, fmt::format("expected one PEM {}", label));
  }
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

Result<std::vector<pki::X509Ptr>> certificates_member(const Json& doc, std::string_view field,
                                                      std::size_t max) {
  auto arr = pki::array_member(doc, kPath, field, 1, max);
  if (!arr) return std::unexpected(arr.error());
  std::vector<pki::X509Ptr> out;
  for (std::size_t i = 0; i < (*arr)->size(); ++i) {
    const std::string where = fmt::format("{}[{}]", field, i);
    auto pem = pem_text((**arr)[i], where, kCertLabel);
    if (!pem) return std::unexpected(pem.error());
    auto cert = pki::parse_certificate(*pem, fmt::format("{}.{}", kPath, where));
    if (!cert) return std::unexpected(cert.error());
    out.push_back(std::move(*cert));
  }
  return out;
}

Result<void> read_secret(const Json& doc, std::string_view field, Secret<16>& out) {
  auto bytes = pki::hex_member(doc, kPath, field, 16, 16);
  if (!bytes) return std::unexpected(bytes.error());
  std::copy(bytes->begin(), bytes->end(), out.mut().begin());
  secure_wipe(*bytes);
  return {};
}

Result<void> read_pin(const Json& doc, SupplierBundle& b) {
  auto s = pki::string_member(doc, kPath, "pin");
  if (!s) return std::unexpected(s.error());
  if (!digits_between(**s, kMinPinSize, kMaxPinSize)) {
    return field_error(ErrorCode::bad_format, "pin", "expected 4-16 decimal digits");
  }
  std::copy((*s)->begin(), (*s)->end(), b.pin.mut().begin());
  b.pin_size = (*s)->size();
  return {};
}

Result<void> read_scalars(const Json& doc, SupplierBundle& b) {
  for (auto [out, field] : {std::pair{&b.device_id, "device_id"},
                            {&b.model, "model"},
                            {&b.ro_operator, "ro_operator"}}) {
    auto v = pki::token_member(doc, kPath, field);
    if (!v) return std::unexpected(v.error());
    *out = std::move(*v);
  }
  auto pcid = pki::string_member(doc, kPath, "pcid");
  if (!pcid) return std::unexpected(pcid.error());
  if (!digits_between(**pcid, kMinPcid, kMaxPcid)) {
    return field_error(ErrorCode::bad_format, "pcid", "expected 6-15 decimal digits");
  }
  b.pcid = **pcid;
  auto ind = pki::uint_member(doc, kPath, "ind_bits", 0, kMaxIndBits);
  if (!ind) return std::unexpected(ind.error());
  b.ind_bits = static_cast<unsigned>(*ind);
  auto not_after = pki::time_member(doc, kPath, "pcid_not_after");
  if (!not_after) return std::unexpected(not_after.error());
  b.pcid_not_after = *not_after;
  return {};
}

Result<void> read_credentials(const Json& doc, SupplierBundle& b) {
  auto pem = pem_text(doc["platform_key"], "platform_key", kKeyLabel);
  if (!pem) return std::unexpected(pem.error());
  auto key = pki::parse_private_key(*pem, "bundle.platform_key");
  if (!key) return std::unexpected(key.error());
  b.platform_key = std::move(*key);
  auto chain = certificates_member(doc, "platform_chain", kMaxChain);
  if (!chain) return std::unexpected(chain.error());
  b.platform_chain = std::move(*chain);
  auto roots = certificates_member(doc, "operator_roots", kMaxOperatorRoots);
  if (!roots) return std::unexpected(roots.error());
  b.operator_roots = std::move(*roots);
  return {};
}

// ---- Manufacture -------------------------------------------------------------------------------

std::unexpected<Error> spec_error(ErrorCode code, std::string_view field,
                                  std::string_view problem) {
  return fail(code, fmt::format("{}: {}", field, problem));
}

Result<void> check_certificate_name(const std::string& value, std::string_view field) {
  if (value.empty()) return spec_error(ErrorCode::missing_argument, field, "required");
  if (!pki::valid_token(value, kMaxCertificateName) || value.find(',') != std::string::npos) {
    return spec_error(ErrorCode::invalid_argument, field,
                      "must be 1-64 printable ASCII characters without space, ',', '\"' or '\\'");
  }
  return {};
}

Result<void> check_ocsp_url(const std::string& url) {
  if (url.empty()) return {};
  const bool ok = pki::valid_token(url, kMaxOcspUrl) && url.find(',') == std::string::npos &&
                  (url.starts_with("http://") || url.starts_with("https://"));
  if (!ok) {
    return spec_error(ErrorCode::invalid_argument, "ocsp_url",
                      "expected an http:// or https:// URL without spaces or commas");
  }
  return {};
}

Result<void> check_spec(const ManufactureSpec& spec, const std::string& device_id) {
  if (spec.pcid.empty()) return spec_error(ErrorCode::missing_argument, "pcid", "required");
  if (!digits_between(spec.pcid, kMinPcid, kMaxPcid)) {
    return spec_error(ErrorCode::invalid_argument, "pcid", "expected 6-15 decimal digits");
  }
  MCIM_RETURN_IF_ERROR(check_certificate_name(device_id, "device_id"));
  MCIM_RETURN_IF_ERROR(check_certificate_name(spec.model, "model"));
  if (spec.ro_operator.empty()) {
    return spec_error(ErrorCode::missing_argument, "ro_operator", "required");
  }
  if (!pki::valid_token(spec.ro_operator)) {
    return spec_error(ErrorCode::invalid_argument, "ro_operator",
                      "must be 1-128 printable ASCII characters without space, '\"' or '\\'");
  }
  if (spec.pin && !digits_between(*spec.pin, kMinPinSize, kMaxPinSize)) {
    return spec_error(ErrorCode::invalid_argument, "pin", "expected 4-16 decimal digits");
  }
  for (auto [days, field] :
       {std::pair{spec.certificate_days, "certificate_days"}, {spec.pcid_days, "pcid_days"}}) {
    if (days < 1 || days > 36500) {
      return spec_error(ErrorCode::invalid_argument, field, "must be 1..36500");
    }
  }
  MCIM_RETURN_IF_ERROR(check_ocsp_url(spec.ocsp_url));
  if (spec.operator_roots.empty()) {
    return spec_error(ErrorCode::missing_argument, "operator_roots", "at least one required");
  }
  if (spec.operator_roots.size() > kMaxOperatorRoots) {
    return spec_error(ErrorCode::invalid_argument, "operator_roots", "at most 16");
  }
  for (std::size_t i = 0; i < spec.operator_roots.size(); ++i) {
    if (!is_self_signed_ca(spec.operator_roots[i])) {
      return spec_error(ErrorCode::invalid_argument, fmt::format("operator_roots[{}]", i),
                        "not a self-signed CA certificate");
    }
  }
  return {};
}

// Uniform decimal digits: bytes of 250 and above are drawn again, so that each digit comes from
// exactly 25 byte values (a plain `% 10` would favour 0-5).
void random_pin(RandomSource& random, std::size_t digits, SupplierBundle& b) {
  for (std::size_t i = 0; i < digits;) {
    Bytes<1> byte = random.draw<1>();
    if (byte[0] < 250) b.pin.mut()[i++] = static_cast<std::uint8_t>('0' + byte[0] % 10);
    secure_wipe(byte);
  }
  b.pin_size = digits;
}

void set_pin(const ManufactureSpec& spec, RandomSource& random, SupplierBundle& b) {
  if (!spec.pin) {
    random_pin(random, 8, b);
    return;
  }
  std::copy(spec.pin->begin(), spec.pin->end(), b.pin.mut().begin());
  b.pin_size = spec.pin->size();
}

// The platform key and its certificate; the chain adds the supplier CA's intermediates (its
// chain() runs from itself up to the root), without the self-signed root: relying parties
// (the PVA) hold that as their trust anchor.
Result<void> certify_platform(const pki::Authority& ca, const ManufactureSpec& spec,
                              const Clock& clock, RandomSource& random, SupplierBundle& b) {
  pki::CertSpec cert_spec;
  cert_spec.profile = pki::Profile::platform;
  cert_spec.subject = "CN=" + b.device_id;
  cert_spec.ocsp_url = spec.ocsp_url;
  cert_spec.days = spec.certificate_days;
  cert_spec.device_id = b.device_id;
  cert_spec.model = b.model;
  MCIM_RETURN_IF_ERROR(pki::validate(cert_spec));
  auto key = pki::generate_p256_key();
  if (!key) return std::unexpected(key.error());
  auto cert = ca.issue_for_key(cert_spec, key->get(), clock, random);
  if (!cert) return std::unexpected(cert.error());
  b.platform_key = std::move(*key);
  b.platform_chain.push_back(std::move(*cert));
  for (const auto& c : ca.chain()) {
    const bool root = X509_self_signed(c.get(), 0) == 1;
    ERR_clear_error();
    if (!root) b.platform_chain.push_back(pki::up_ref(c.get()));
  }
  return {};
}

}  // namespace

std::string_view pin_text(const SupplierBundle& b) {
  const std::size_t n = std::min(b.pin_size, b.pin.get().size());
  return std::string_view(reinterpret_cast<const char*>(b.pin.get().data()), n);
}

Result<void> validate_bundle(const SupplierBundle& bundle) {
  return check_bundle(bundle, ErrorCode::invalid_argument);
}

Result<SecretBytes> encode_bundle(const SupplierBundle& bundle) {
  MCIM_RETURN_IF_ERROR(validate_bundle(bundle));
  auto roots = pem_list(bundle.operator_roots);
  if (!roots) return std::unexpected(roots.error());
  auto chain = pem_list(bundle.platform_chain);
  if (!chain) return std::unexpected(chain.error());
  auto key_pem = pki::private_key_pem(bundle.platform_key.get());
  if (!key_pem) return std::unexpected(key_pem.error());
  // Every character may become a six-character escape; the rest is names and punctuation.
  const std::size_t text = bundle.device_id.size() + bundle.model.size() + bundle.pcid.size() +
                           bundle.ro_operator.size() + key_pem->size() + text_size(*roots) +
                           text_size(*chain) + kType.size() + kMaxPinSize;
  BundleWriter w(6 * text + 1024);
  write_members(w, bundle, *key_pem, *roots, *chain);
  secure_wipe(key_pem->data(), key_pem->size());
  return w.finish();
}

Result<SupplierBundle> decode_bundle(ByteView bytes) {
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  auto doc = pki::parse_document(pki::document_text(text), kPath, kMaxBundleSize);
  if (!doc) return std::unexpected(doc.error());
  const JsonWiper wiper(*doc);
  MCIM_RETURN_IF_ERROR(pki::expect_members(
      *doc, kPath,
      {"device_id", "ind_bits", "k", "model", "opc", "operator_roots", "pcid", "pcid_not_after",
       "pin", "platform_chain", "platform_key", "ro_operator", "type"}));
  MCIM_RETURN_IF_ERROR(pki::type_member(*doc, kPath, kType));
  SupplierBundle b;
  MCIM_RETURN_IF_ERROR(read_scalars(*doc, b));
  MCIM_RETURN_IF_ERROR(read_secret(*doc, "k", b.k));
  MCIM_RETURN_IF_ERROR(read_secret(*doc, "opc", b.opc));
  MCIM_RETURN_IF_ERROR(read_pin(*doc, b));
  MCIM_RETURN_IF_ERROR(read_credentials(*doc, b));
  MCIM_RETURN_IF_ERROR(check_bundle(b, ErrorCode::bad_format));
  return b;
}

Result<void> write_bundle(const std::string& path, const SupplierBundle& bundle) {
  auto encoded = encode_bundle(bundle);
  if (!encoded) return std::unexpected(encoded.error());
  return write_file_atomic(path, encoded->view(), 0600);
}

Result<SupplierBundle> read_bundle(const std::string& path) {
  auto data = read_file(path);
  if (!data) return std::unexpected(data.error());
  const SecretBytes raw(std::move(*data));
  auto bundle = decode_bundle(raw.view());
  if (!bundle)
    return fail(bundle.error().code, fmt::format("{}: {}", path, bundle.error().message));
  return bundle;
}

Result<SupplierBundle> manufacture(const pki::Authority& supplier_ca, const ManufactureSpec& spec,
                                   const Clock& clock, RandomSource& random) {
  SupplierBundle b;
  b.device_id = spec.device_id.empty() ? "dev-" + spec.pcid : spec.device_id;
  MCIM_RETURN_IF_ERROR(check_spec(spec, b.device_id));
  b.model = spec.model;
  b.pcid = spec.pcid;
  b.ro_operator = spec.ro_operator;
  b.pcid_not_after = pki::floor_seconds(clock.now()) + std::chrono::days(spec.pcid_days);
  set_pin(spec, random, b);
  random.fill(b.k.mut());
  aka::Opc opc = aka::Milenage::compute_opc(b.k.get(), spec.op.get());
  b.opc.mut() = opc;
  secure_wipe(opc);
  MCIM_RETURN_IF_ERROR(certify_platform(supplier_ca, spec, clock, random, b));
  for (X509* root : spec.operator_roots) b.operator_roots.push_back(pki::up_ref(root));
  MCIM_RETURN_IF_ERROR(validate_bundle(b));
  return b;
}

#undef MCIM_RETURN_IF_ERROR

}  // namespace mcim::tre
