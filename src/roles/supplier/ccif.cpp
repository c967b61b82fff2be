#include "roles/supplier/ccif.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <unordered_set>
#include <utility>

#include "pki/certificate.h"

namespace mcim::supplier {
namespace {

// Seconds of 9999-12-31T23:59:59Z, as the package format: four-digit years for every tool.
constexpr std::uint64_t kMaxTime = 253402300799;
constexpr std::uint64_t kMaxInteger = (std::uint64_t{1} << 53) - 1;  // exact in any JSON reader
constexpr unsigned kMaxIndBits = 10;                                 // as aka::SqnPolicy
// An encoded record is at most 146 bytes and the rest at most 310 (docs/supplier.md).
constexpr std::size_t kMaxRecordBytes = 160;
constexpr std::size_t kMaxFrameBytes = 512;
constexpr std::size_t kMaxBatchBytes = kMaxFrameBytes + kMaxBatchRecords * kMaxRecordBytes;
// The canonical form ends with its type, the last key in byte order.
constexpr std::string_view kTypeSuffix = R"(,"type":"mcim-pcid-batch/1"})";

bool valid_pcid(std::string_view s) {
  return s.size() >= 6 && s.size() <= 15 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::int64_t seconds_of(std::chrono::sys_seconds t) { return t.time_since_epoch().count(); }

bool valid_time(std::chrono::sys_seconds t) {
  return seconds_of(t) >= 0 && static_cast<std::uint64_t>(seconds_of(t)) <= kMaxTime;
}

std::string record_path(std::size_t i) { return fmt::format("records[{}]", i); }

// =============================================================================================
// Validation

constexpr std::string_view kIdRule = "1..64 characters of A-Z a-z 0-9 . _ : -";

Result<void> validate_header(const PcidBatch& b, ErrorCode code) {
  const std::pair<std::string_view, const std::string*> ids[] = {
      {"batch_id", &b.batch_id}, {"supplier_id", &b.supplier_id}, {"ro_operator", &b.ro_operator}};
  for (const auto& [name, value] : ids) {
    if (!pki::valid_mcim_id(*value)) return fail(code, fmt::format("{}: {}", name, kIdRule));
  }
  if (!valid_time(b.created)) return fail(code, "created: must be 0..253402300799 (unix seconds)");
  if (b.records.empty() || b.records.size() > kMaxBatchRecords) {
    return fail(code, fmt::format("records: 1..{} records", kMaxBatchRecords));
  }
  return {};
}

Result<void> validate_record(const PcidRecord& r, std::size_t i, std::chrono::sys_seconds created,
                             ErrorCode code) {
  if (!valid_pcid(r.pcid)) {
    return fail(code, fmt::format("{}.pcid: 6 to 15 decimal digits", record_path(i)));
  }
  if (r.ind_bits > kMaxIndBits) {
    return fail(code, fmt::format("{}.ind_bits: must be 0..{}", record_path(i), kMaxIndBits));
  }
  if (!valid_time(r.not_after)) {
    return fail(
        code, fmt::format("{}.not_after: must be 0..253402300799 (unix seconds)", record_path(i)));
  }
  if (r.not_after <= created) {
    return fail(code, fmt::format("{}.not_after: must be later than created", record_path(i)));
  }
  return {};
}

// =============================================================================================
// Canonical writer: keys in byte order, written by hand (a change is a format change).

class Writer {
 public:
  explicit Writer(ByteVec& out) : out_(out) {}

  Writer& raw(std::string_view s) {
    out_.insert(out_.end(), s.begin(), s.end());
    return *this;
  }
  Writer& string(std::string_view s) { return raw("\"").raw(s).raw("\""); }
  Writer& integer(std::uint64_t v) {
    char buf[24];
    const auto n = fmt::format_to_n(buf, sizeof buf, "{}", v).size;
    return raw(std::string_view(buf, n));
  }
  Writer& hex(ByteView bytes) {
    static constexpr char kDigits[] = "0123456789abcdef";
    out_.push_back('"');
    for (std::uint8_t b : bytes) {
      out_.push_back(static_cast<std::uint8_t>(kDigits[b >> 4]));
      out_.push_back(static_cast<std::uint8_t>(kDigits[b & 0xf]));
    }
    out_.push_back('"');
    return *this;
  }

 private:
  ByteVec& out_;
};

void write_record(Writer& w, const PcidRecord& r) {
  w.raw(R"({"ind_bits":)").integer(r.ind_bits);
  w.raw(R"(,"k":)").hex(r.k.get());
  w.raw(R"(,"not_after":)").integer(static_cast<std::uint64_t>(seconds_of(r.not_after)));
  w.raw(R"(,"opc":)").hex(r.opc.get());
  w.raw(R"(,"pcid":)").string(r.pcid).raw("}");
}

void write_batch(Writer& w, const PcidBatch& b) {
  w.raw(R"({"batch_id":)").string(b.batch_id);
  w.raw(R"(,"created":)").integer(static_cast<std::uint64_t>(seconds_of(b.created)));
  w.raw(R"(,"records":[)");
  for (std::size_t i = 0; i < b.records.size(); ++i) {
    if (i > 0) w.raw(",");
    write_record(w, b.records[i]);
  }
  w.raw(R"(],"ro_operator":)").string(b.ro_operator);
  w.raw(R"(,"supplier_id":)").string(b.supplier_id);
  w.raw(kTypeSuffix);
}

// =============================================================================================
// Canonical reader: a cursor over the fixed schema, reading strings in place (K and OPc go from
// the decrypted buffer straight into Secret<>), every error naming the field, never a value.

std::unexpected<Error> bad(std::string_view path, std::string_view what) {
  return fail(ErrorCode::bad_format, fmt::format("{}: {}", path.empty() ? "batch" : path, what));
}

// A key we may repeat in a message: short, and made of the characters field names use.
std::string printable_key(std::string_view key) {
  const bool plain =
      !key.empty() && key.size() <= 24 && std::all_of(key.begin(), key.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
      });
  return plain ? std::string(key) : std::string("<unnamed>");
}

std::string child(std::string_view parent, std::string_view key) {
  return parent.empty() ? printable_key(key) : fmt::format("{}.{}", parent, printable_key(key));
}

int lower_hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // uppercase is hex but not canonical
}

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}

  bool at(char c) const { return pos_ < in_.size() && in_[pos_] == c; }
  bool done() const { return pos_ == in_.size(); }
  void skip() { ++pos_; }

  Result<void> expect(char c, std::string_view path, std::string_view what) {
    if (!at(c)) return bad(path, what);
    ++pos_;
    return {};
  }

  Result<std::string_view> string(std::string_view path) {
    if (!at('"')) return bad(path, value_error("a string"));
    const std::size_t start = ++pos_;
    while (pos_ < in_.size() && in_[pos_] != '"') {
      const char c = in_[pos_];
      if (c == '\\') return bad(path, "escape sequences are not canonical (no field needs one)");
      if (c < 0x20 || c > 0x7e) return bad(path, "character outside printable ASCII");
      ++pos_;
    }
    if (pos_ >= in_.size()) return bad(path, "truncated string");
    return in_.substr(start, pos_++ - start);
  }

  Result<std::uint64_t> integer(std::string_view path) {
    if (pos_ >= in_.size() || in_[pos_] < '0' || in_[pos_] > '9') {
      return bad(path, value_error("an integer"));
    }
    const std::size_t start = pos_;
    while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') ++pos_;
    const std::string_view digits = in_.substr(start, pos_ - start);
    if (digits.size() > 1 && digits[0] == '0') return bad(path, "leading zero in an integer");
    if (at('.') || at('e') || at('E')) return bad(path, "only integers are allowed");
    if (digits.size() > 16) return bad(path, "integer too large");
    std::uint64_t v = 0;
    for (char c : digits) v = v * 10 + static_cast<std::uint64_t>(c - '0');
    if (v > kMaxInteger) return bad(path, "integer too large (above 2^53-1)");
    return v;
  }

  // Exactly out.size() bytes as lowercase hex, decoded straight into `out`.
  Result<void> hex(std::string_view path, std::span<std::uint8_t> out) {
    auto text = string(path);
    if (!text) return std::unexpected(text.error());
    if (text->size() != 2 * out.size()) {
      return bad(path, fmt::format("expected {} lowercase hex digits ({} bytes)", 2 * out.size(),
                                   out.size()));
    }
    for (std::size_t i = 0; i < out.size(); ++i) {
      const int hi = lower_hex_value((*text)[2 * i]);
      const int lo = lower_hex_value((*text)[2 * i + 1]);
      if (hi < 0 || lo < 0) {
        secure_wipe(out);
        return bad(path, "not lowercase hex (canonical form)");
      }
      out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
    }
    return {};
  }

 private:
  // What the value at pos_ is instead of `expected`.
  std::string value_error(std::string_view expected) const {
    if (pos_ >= in_.size()) return "truncated";
    const char c = in_[pos_];
    if (c == '"' || c == '{' || c == '[' || (c >= '0' && c <= '9')) {
      return fmt::format("expected {}", expected);
    }
    return fmt::format("expected {} (canonical JSON: no whitespace, no true/false/null, no signs)",
                       expected);
  }

  std::string_view in_;
  std::size_t pos_ = 0;
};

// The members of one object whose keys must be exactly `keys`, in this (byte) order.
class Members {
 public:
  Members(Reader& r, std::string_view path, std::span<const std::string_view> keys)
      : r_(r), path_(path), keys_(keys) {}

  Result<void> open() { return r_.expect('{', path_, "expected an object"); }

  // Positions the reader at the value of keys_[i]; i counts up from 0.
  Result<void> next(std::size_t i) {
    if (r_.at('}')) return bad(child(path_, keys_[i]), "missing field");
    if (i > 0) {
      if (auto c =
              r_.expect(',', child(path_, keys_[i - 1]), "expected ',' or '}' after the value");
          !c) {
        return c;
      }
    }
    auto key = r_.string(path_.empty() ? "batch" : path_);
    if (!key) return std::unexpected(key.error());
    if (*key != keys_[i]) return wrong_key(*key, i);
    return r_.expect(':', child(path_, *key), "expected ':' after the key");
  }

  // After the last value: nothing but the closing brace.
  Result<void> close() {
    if (r_.at(',')) {
      r_.skip();
      auto key = r_.string(path_.empty() ? "batch" : path_);
      if (!key) return std::unexpected(key.error());
      return known(*key) ? bad(child(path_, *key), "keys out of canonical order, or duplicated")
                         : bad(child(path_, *key), "unknown field");
    }
    return r_.expect('}', child(path_, keys_.back()), "expected ',' or '}' after the value");
  }

 private:
  bool known(std::string_view key) const {
    return std::find(keys_.begin(), keys_.end(), key) != keys_.end();
  }

  std::unexpected<Error> wrong_key(std::string_view key, std::size_t i) const {
    if (!known(key)) return bad(child(path_, key), "unknown field");
    if (key > keys_[i]) return bad(child(path_, keys_[i]), "missing field");
    return bad(child(path_, key), "keys out of canonical order, or duplicated");
  }

  Reader& r_;
  std::string_view path_;
  std::span<const std::string_view> keys_;
};

std::chrono::sys_seconds as_time(std::uint64_t v) {
  return std::chrono::sys_seconds(std::chrono::seconds(static_cast<std::int64_t>(v)));
}

constexpr std::array<std::string_view, 5> kRecordKeys = {"ind_bits", "k", "not_after", "opc",
                                                         "pcid"};
constexpr std::array<std::string_view, 6> kBatchKeys = {"batch_id",    "created",     "records",
                                                        "ro_operator", "supplier_id", "type"};

// Returns the error of a Result from the enclosing function; #undef at the end of the file.
#define MCIM_RETURN_IF_ERROR(expr)                                 \
  do {                                                             \
    if (auto r_ = (expr); !r_) return std::unexpected(r_.error()); \
  } while (0)

Result<void> read_record(Reader& r, const std::string& path, PcidRecord& rec) {
  Members m(r, path, kRecordKeys);
  MCIM_RETURN_IF_ERROR(m.open());
  MCIM_RETURN_IF_ERROR(m.next(0));
  auto ind = r.integer(child(path, "ind_bits"));
  if (!ind) return std::unexpected(ind.error());
  if (*ind > 0xffff) return bad(child(path, "ind_bits"), "too large");
  rec.ind_bits = static_cast<unsigned>(*ind);
  MCIM_RETURN_IF_ERROR(m.next(1));
  MCIM_RETURN_IF_ERROR(r.hex(child(path, "k"), rec.k.mut()));
  MCIM_RETURN_IF_ERROR(m.next(2));
  auto not_after = r.integer(child(path, "not_after"));
  if (!not_after) return std::unexpected(not_after.error());
  rec.not_after = as_time(*not_after);
  MCIM_RETURN_IF_ERROR(m.next(3));
  MCIM_RETURN_IF_ERROR(r.hex(child(path, "opc"), rec.opc.mut()));
  MCIM_RETURN_IF_ERROR(m.next(4));
  auto pcid = r.string(child(path, "pcid"));
  if (!pcid) return std::unexpected(pcid.error());
  rec.pcid = std::string(*pcid);
  return m.close();
}

Result<void> read_records(Reader& r, std::vector<PcidRecord>& records) {
  MCIM_RETURN_IF_ERROR(r.expect('[', "records", "expected an array"));
  if (r.at(']')) {
    r.skip();
    return {};
  }
  for (;;) {
    if (records.size() == kMaxBatchRecords) {
      return bad("records", fmt::format("more than {} records", kMaxBatchRecords));
    }
    const std::string path = record_path(records.size());
    MCIM_RETURN_IF_ERROR(read_record(r, path, records.emplace_back()));
    if (r.at(']')) {
      r.skip();
      return {};
    }
    MCIM_RETURN_IF_ERROR(r.expect(',', "records", "expected ',' or ']' in the array"));
  }
}

Result<void> read_id(Reader& r, std::string_view key, std::string& out) {
  auto v = r.string(key);
  if (!v) return std::unexpected(v.error());
  out = std::string(*v);
  return {};
}

Result<void> read_batch(Reader& r, PcidBatch& b) {
  Members m(r, "", kBatchKeys);
  MCIM_RETURN_IF_ERROR(m.open());
  MCIM_RETURN_IF_ERROR(m.next(0));
  MCIM_RETURN_IF_ERROR(read_id(r, "batch_id", b.batch_id));
  MCIM_RETURN_IF_ERROR(m.next(1));
  auto created = r.integer("created");
  if (!created) return std::unexpected(created.error());
  b.created = as_time(*created);
  MCIM_RETURN_IF_ERROR(m.next(2));
  MCIM_RETURN_IF_ERROR(read_records(r, b.records));
  MCIM_RETURN_IF_ERROR(m.next(3));
  MCIM_RETURN_IF_ERROR(read_id(r, "ro_operator", b.ro_operator));
  MCIM_RETURN_IF_ERROR(m.next(4));
  MCIM_RETURN_IF_ERROR(read_id(r, "supplier_id", b.supplier_id));
  MCIM_RETURN_IF_ERROR(m.next(5));
  auto type = r.string("type");
  if (!type) return std::unexpected(type.error());
  if (*type != kPcidBatchType) {
    return bad("type", fmt::format("unsupported (this build reads {})", kPcidBatchType));
  }
  MCIM_RETURN_IF_ERROR(m.close());
  if (!r.done()) return bad("", "data after the document (the canonical form ends with '}')");
  return {};
}

// Before parsing: the document's type, so that another document (an mcim/1 package document, a
// bundle) is named as such rather than by its first unexpected field.
Result<void> check_frame(std::string_view text) {
  if (text.empty()) return bad("", "empty");
  if (text.size() > kMaxBatchBytes) {
    return bad("", fmt::format("longer than {} bytes", kMaxBatchBytes));
  }
  if (text.back() != '}') {
    return bad("", "truncated, or data after the document (the canonical form ends with '}')");
  }
  if (!text.ends_with(kTypeSuffix)) {
    if (text.find(kTypeSuffix) != std::string_view::npos) {
      return bad("", "data after the document (the canonical form ends with its type)");
    }
    return bad("type", fmt::format("expected {} as the last field", kPcidBatchType));
  }
  return {};
}

Result<void> check_unique_pcids(const PcidBatch& b, ErrorCode code) {
  std::unordered_set<std::string_view> seen;
  seen.reserve(b.records.size());
  for (std::size_t i = 0; i < b.records.size(); ++i) {
    if (!seen.insert(b.records[i].pcid).second) {
      return fail(code,
                  fmt::format("{}.pcid: duplicated (PCIDs are unique in a batch)", record_path(i)));
    }
  }
  return {};
}

// =============================================================================================
// Sealing and manufacturing

Result<void> check_seal_inputs(const PcidBatch& batch, const pki::SealSigner& supplier,
                               X509* icf_cert) {
  if (supplier.cert == nullptr || supplier.key == nullptr) {
    return fail(ErrorCode::missing_argument, "signer: certificate and key required");
  }
  if (icf_cert == nullptr) {
    return fail(ErrorCode::missing_argument, "recipient: the ICF's certificate required");
  }
  if (signer_supplier_id(supplier.cert) != batch.supplier_id) {
    return fail(ErrorCode::invalid_argument,
                "signer: its certificate's urn:mcim:supplier: id is not the batch's supplier_id");
  }
  return {};
}

// pcid + n in decimal, keeping its length; nullopt when it would need another digit.
std::optional<std::string> pcid_plus(std::string pcid, std::size_t n) {
  for (std::size_t i = pcid.size(); i-- > 0 && n > 0;) {
    const std::size_t sum = static_cast<std::size_t>(pcid[i] - '0') + n;
    pcid[i] = static_cast<char>('0' + sum % 10);
    n = sum / 10;
  }
  if (n > 0) return std::nullopt;
  return pcid;
}

Result<void> check_batch_spec(const BatchSpec& spec) {
  constexpr auto bad_arg = ErrorCode::invalid_argument;
  if (!pki::valid_mcim_id(spec.batch_id)) {
    return fail(bad_arg, fmt::format("batch_id: {}", kIdRule));
  }
  if (!pki::valid_mcim_id(spec.supplier_id)) {
    return fail(bad_arg, fmt::format("supplier_id: {}", kIdRule));
  }
  if (!valid_pcid(spec.first_pcid)) return fail(bad_arg, "first_pcid: 6 to 15 decimal digits");
  if (spec.count < 1 || spec.count > kMaxBatchRecords) {
    return fail(bad_arg, fmt::format("count: must be 1..{}", kMaxBatchRecords));
  }
  if (!pcid_plus(spec.first_pcid, spec.count - 1)) {
    return fail(bad_arg, "count: the batch runs past the last PCID of first_pcid's length");
  }
  // The batch's rule for ids is stricter than the bundle's: check it before anything is issued.
  if (spec.device.ro_operator.empty()) {
    return fail(ErrorCode::missing_argument, "device.ro_operator: required");
  }
  if (!pki::valid_mcim_id(spec.device.ro_operator)) {
    return fail(bad_arg, fmt::format("device.ro_operator: {}", kIdRule));
  }
  if (!spec.device.pcid.empty()) {
    return fail(bad_arg, "device.pcid: must be empty (each device gets the next PCID)");
  }
  if (!spec.device.device_id.empty()) {
    return fail(bad_arg, "device.device_id: must be empty (each device is dev-<pcid>)");
  }
  if (spec.device.pin) {
    return fail(bad_arg, "device.pin: must be unset (each device draws its own PIN)");
  }
  return {};
}

PcidRecord record_of(const tre::SupplierBundle& b) {
  PcidRecord r;
  r.pcid = b.pcid;
  r.k = b.k;
  r.opc = b.opc;
  r.ind_bits = b.ind_bits;
  r.not_after = b.pcid_not_after;
  return r;
}

}  // namespace

// =============================================================================================
// Public API

Result<void> validate_batch(const PcidBatch& batch, ErrorCode code) {
  MCIM_RETURN_IF_ERROR(validate_header(batch, code));
  for (std::size_t i = 0; i < batch.records.size(); ++i) {
    MCIM_RETURN_IF_ERROR(validate_record(batch.records[i], i, batch.created, code));
  }
  return check_unique_pcids(batch, code);
}

Result<SecretBytes> encode_batch(const PcidBatch& batch) {
  MCIM_RETURN_IF_ERROR(validate_batch(batch, ErrorCode::invalid_argument));
  ByteVec out;
  // Reserved up front so that it never reallocates: no unwiped copy of K or OPc is left behind.
  out.reserve(kMaxFrameBytes + batch.records.size() * kMaxRecordBytes);
  const std::size_t capacity = out.capacity();
  Writer w(out);
  write_batch(w, batch);
  SecretBytes encoded(std::move(out));
  if (encoded.view().size() > capacity) {
    return fail(ErrorCode::internal, "batch: encoding outgrew its reserved buffer");
  }
  return encoded;
}

Result<PcidBatch> decode_batch(ByteView json) {
  const std::string_view text(reinterpret_cast<const char*>(json.data()), json.size());
  MCIM_RETURN_IF_ERROR(check_frame(text));
  Reader r(text);
  PcidBatch batch;
  MCIM_RETURN_IF_ERROR(read_batch(r, batch));
  MCIM_RETURN_IF_ERROR(validate_batch(batch, ErrorCode::bad_format));
  return batch;
}

std::optional<std::string> signer_supplier_id(const X509* cert) {
  return pki::san_uri_with_prefix(cert, kSupplierUrn);
}

Result<ByteVec> seal_batch(const PcidBatch& batch, const pki::SealSigner& supplier,
                           X509* icf_cert) {
  MCIM_RETURN_IF_ERROR(check_seal_inputs(batch, supplier, icf_cert));
  auto encoded = encode_batch(batch);
  if (!encoded) return std::unexpected(encoded.error());
  return pki::seal_signed(encoded->view(), supplier, icf_cert);
}

Result<PcidBatch> open_batch(ByteView sealed, X509* icf_cert, EVP_PKEY* icf_key,
                             const pki::TrustAnchors& supplier_roots, const Clock& clock) {
  auto opened =
      pki::open_sealed(sealed, icf_cert, icf_key, supplier_roots, clock, kSupplierSignerPolicy);
  if (!opened) return std::unexpected(opened.error());
  auto batch = decode_batch(opened->content.view());
  if (!batch) return batch;
  if (batch->supplier_id != opened->signer.signer_id) {
    return fail(ErrorCode::signature_invalid, "batch: supplier_id is not the signer's supplier");
  }
  return batch;
}

Result<ManufacturedBatch> manufacture_batch(const pki::Authority& supplier_ca,
                                            const BatchSpec& spec, const Clock& clock,
                                            RandomSource& random) {
  MCIM_RETURN_IF_ERROR(check_batch_spec(spec));
  ManufacturedBatch out;
  out.batch.batch_id = spec.batch_id;
  out.batch.supplier_id = spec.supplier_id;
  out.batch.ro_operator = spec.device.ro_operator;
  out.batch.created = std::chrono::floor<std::chrono::seconds>(clock.now());
  out.bundles.reserve(spec.count);
  out.batch.records.reserve(spec.count);
  tre::ManufactureSpec device = spec.device;
  for (std::size_t i = 0; i < spec.count; ++i) {
    device.pcid = *pcid_plus(spec.first_pcid, i);
    auto bundle = tre::manufacture(supplier_ca, device, clock, random);
    if (!bundle) {
      return fail(bundle.error().code, fmt::format("device.{}", bundle.error().message));
    }
    out.batch.records.push_back(record_of(*bundle));
    out.bundles.push_back(std::move(*bundle));
  }
  MCIM_RETURN_IF_ERROR(validate_batch(out.batch, ErrorCode::invalid_argument));
  return out;
}

#undef MCIM_RETURN_IF_ERROR

}  // namespace mcim::supplier
