#include "pki/package.h"

#include <fmt/format.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>

#include "pki/certificate.h"

namespace mcim::pki {
namespace {

using CmsPtr = Owned<CMS_ContentInfo, CMS_ContentInfo_free>;

// =============================================================================================
// Names and field rules

constexpr std::array kOperationNames = {"activate", "block",   "deactivate", "delete",
                                        "retire",   "unblock", "update"};

// Seconds of 9999-12-31T23:59:59Z: times stay four-digit years whatever tool reads them.
constexpr std::uint64_t kMaxTime = 253402300799;
// Integers stay exact in every JSON implementation (IEEE doubles).
constexpr std::uint64_t kMaxSequence = (std::uint64_t{1} << 53) - 1;
constexpr unsigned kMaxIndBits = 10;  // as aka::SqnPolicy::kMaxIndBits
constexpr std::size_t kMaxIdLength = 64;
constexpr std::size_t kMaxPackageSize = 64 * 1024;

bool is_id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

bool valid_id(std::string_view s) { return valid_mcim_id(s); }

bool valid_imsi(std::string_view s) {
  return s.size() >= 6 && s.size() <= 15 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool one_of(unsigned v, std::initializer_list<unsigned> allowed) {
  return std::find(allowed.begin(), allowed.end(), v) != allowed.end();
}

std::uint64_t seconds_of(std::chrono::sys_seconds t) {
  return static_cast<std::uint64_t>(t.time_since_epoch().count());
}

Result<void> validate_tuak(const McimTuak& t, ErrorCode code) {
  if (!one_of(t.mac_bits, {64, 128, 256})) {
    return fail(code, "tuak.mac_bits: must be 64, 128 or 256");
  }
  if (!one_of(t.res_bits, {32, 64, 128, 256})) {
    return fail(code, "tuak.res_bits: must be 32, 64, 128 or 256");
  }
  if (!one_of(t.ck_bits, {128, 256})) return fail(code, "tuak.ck_bits: must be 128 or 256");
  if (!one_of(t.ik_bits, {128, 256})) return fail(code, "tuak.ik_bits: must be 128 or 256");
  if (t.keccak_iterations < 1 || t.keccak_iterations > kMaxKeccakIterations) {
    return fail(code, fmt::format("tuak.keccak_iterations: must be 1..{}", kMaxKeccakIterations));
  }
  return {};
}

Result<void> validate_algorithm(const McimDocument& d, ErrorCode code) {
  if (d.algorithm == McimAlgorithm::milenage) {
    if (d.k_size != 16) return fail(code, "k: MILENAGE needs 16 bytes");
    for (std::size_t i = 0; i < d.milenage.r.size(); ++i) {
      if (d.milenage.r[i] > 127) {
        return fail(code, fmt::format("milenage.r{}: must be 0..127", i + 1));
      }
    }
    return {};
  }
  if (d.algorithm != McimAlgorithm::tuak) return fail(code, "algorithm: must be milenage or tuak");
  if (d.k_size != 16 && d.k_size != 32) return fail(code, "k: TUAK needs 16 or 32 bytes");
  return validate_tuak(d.tuak, code);
}

Result<void> validate_policy(const McimPolicy& p, ErrorCode code) {
  if (!valid_id(p.owner)) {
    return fail(code, "policy.owner: 1..64 characters of A-Z a-z 0-9 . _ : -");
  }
  for (std::size_t i = 0; i < p.operations.size(); ++i) {
    if (p.operations[i] > McimOperation::update) {
      return fail(code, "policy.operations: unknown operation");
    }
    if (i > 0 && p.operations[i - 1] >= p.operations[i]) {
      return fail(code, "policy.operations: must be sorted and without duplicates");
    }
  }
  return {};
}

Result<void> validate_times(const McimDocument& d, ErrorCode code) {
  if (d.not_before.time_since_epoch().count() < 0 || seconds_of(d.not_before) > kMaxTime) {
    return fail(code, "not_before: must be 0..253402300799 (unix seconds)");
  }
  if (d.not_after.time_since_epoch().count() < 0 || seconds_of(d.not_after) > kMaxTime) {
    return fail(code, "not_after: must be 0..253402300799 (unix seconds)");
  }
  if (d.not_after <= d.not_before) return fail(code, "not_after: must be later than not_before");
  return {};
}

// =============================================================================================
// Canonical JSON writer: the caller emits keys in sorted order (encode_document does); the
// writer places separators and formats values.

class CanonicalWriter {
 public:
  explicit CanonicalWriter(ByteVec& out) : out_(out) {}

  void begin_object() { open('{'); }
  void end_object() { close('}'); }
  void begin_array() { open('['); }
  void end_array() { close(']'); }
  CanonicalWriter& key(std::string_view k) {
    comma();
    quoted(k);
    put(':');
    after_key_ = true;
    return *this;
  }
  void string(std::string_view s) {
    value_prefix();
    quoted(s);
  }
  void integer(std::uint64_t v) {
    value_prefix();
    char buf[24];
    const auto n = fmt::format_to_n(buf, sizeof buf, "{}", v).size;
    out_.insert(out_.end(), buf, buf + n);
  }
  void hex(ByteView bytes) {
    static constexpr char kDigits[] = "0123456789abcdef";
    value_prefix();
    put('"');
    for (std::uint8_t b : bytes) {
      put(kDigits[b >> 4]);
      put(kDigits[b & 0xf]);
    }
    put('"');
  }

 private:
  void put(char c) { out_.push_back(static_cast<std::uint8_t>(c)); }
  void quoted(std::string_view s) {
    put('"');
    for (char c : s) put(c);
    put('"');
  }
  void open(char c) {
    value_prefix();
    put(c);
    first_.push_back(true);
  }
  void close(char c) {
    put(c);
    first_.pop_back();
  }
  void value_prefix() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    comma();
  }
  void comma() {
    if (first_.empty()) return;
    if (!first_.back()) put(',');
    first_.back() = false;
  }

  ByteVec& out_;
  std::vector<bool> first_;
  bool after_key_ = false;
};

void write_milenage(CanonicalWriter& w, const McimMilenage& m) {
  w.begin_object();
  for (std::size_t i = 0; i < m.c.size(); ++i) {
    w.key(fmt::format("c{}", i + 1));
    w.hex(m.c[i]);
  }
  for (std::size_t i = 0; i < m.r.size(); ++i) {
    w.key(fmt::format("r{}", i + 1));
    w.integer(m.r[i]);
  }
  w.end_object();
}

void write_tuak(CanonicalWriter& w, const McimTuak& t) {
  w.begin_object();
  w.key("ck_bits").integer(t.ck_bits);
  w.key("ik_bits").integer(t.ik_bits);
  w.key("keccak_iterations").integer(t.keccak_iterations);
  w.key("mac_bits").integer(t.mac_bits);
  w.key("res_bits").integer(t.res_bits);
  w.end_object();
}

void write_policy(CanonicalWriter& w, const McimPolicy& p) {
  w.begin_object();
  w.key("operations");
  w.begin_array();
  for (McimOperation op : p.operations) w.string(to_string(op));
  w.end_array();
  w.key("owner").string(p.owner);
  w.end_object();
}

// Keys in byte order: the canonical form. A change here is a format change (a new version).
void write_document(CanonicalWriter& w, const McimDocument& d) {
  const bool milenage = d.algorithm == McimAlgorithm::milenage;
  w.begin_object();
  w.key("algorithm").string(to_string(d.algorithm));
  w.key("amf").hex(d.amf);
  w.key("device_id").string(d.device_id);
  w.key("imsi").string(d.imsi);
  w.key("ind_bits").integer(d.ind_bits);
  w.key("k").hex(d.key());
  if (milenage) {
    w.key("milenage");
    write_milenage(w, d.milenage);
  }
  w.key("not_after").integer(seconds_of(d.not_after));
  w.key("not_before").integer(seconds_of(d.not_before));
  if (milenage) w.key("opc").hex(d.opc.get());
  w.key("package_id").string(d.package_id);
  w.key("policy");
  write_policy(w, d.policy);
  w.key("registration_nonce").hex(d.registration_nonce);
  w.key("sequence").integer(d.sequence);
  w.key("sqn").hex(d.sqn);
  if (!milenage) w.key("topc").hex(d.topc.get());
  if (!milenage) {
    w.key("tuak");
    write_tuak(w, d.tuak);
  }
  w.key("version").string(kMcimVersion);
  w.end_object();
}

// =============================================================================================
// Canonical JSON parser: accepts exactly the writer's output language (objects, arrays,
// strings of printable ASCII without escapes, non-negative integers without leading zeros, no
// whitespace, keys strictly ascending) and nothing else. Strings are views into the input, so
// secrets are never copied; the caller wipes the input.

struct Node {
  enum class Kind { object, array, string, integer };
  Kind kind = Kind::object;
  std::string_view text;  // string content
  std::uint64_t number = 0;
  std::vector<std::string_view> keys;  // object: keys and values in the same order
  std::vector<Node> values;            // object values, or array items
};

std::string_view kind_name(Node::Kind k) {
  switch (k) {
    case Node::Kind::object: return "an object";
    case Node::Kind::array: return "an array";
    case Node::Kind::string: return "a string";
    case Node::Kind::integer: return "an integer";
  }
  return "a value";
}

// A key we may repeat in a message: short enough that it cannot be a 128-bit key in hex, and
// made of the characters field names use.
std::string printable_key(std::string_view key) {
  const bool plain =
      !key.empty() && key.size() <= 24 && std::all_of(key.begin(), key.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
      });
  return plain ? std::string(key) : std::string("<unnamed>");
}

std::string child_path(const std::string& parent, std::string_view key) {
  return parent.empty() ? printable_key(key) : parent + "." + printable_key(key);
}

class CanonicalParser {
 public:
  explicit CanonicalParser(std::string_view in) : in_(in) {}

  Result<Node> parse() {
    auto root = value("", 0);
    if (!root) return root;
    if (pos_ != in_.size()) {
      return bad("", "data after the document (the canonical form ends with '}', no newline)");
    }
    return root;
  }

 private:
  static constexpr int kMaxDepth = 3;  // document > policy > operations

  static std::unexpected<Error> bad(const std::string& path, std::string_view what) {
    return fail(ErrorCode::bad_format,
                fmt::format("{}: {}", path.empty() ? "document" : path, what));
  }

  bool at(char c) const { return pos_ < in_.size() && in_[pos_] == c; }

  // Consumes the closing bracket of n.
  Node closed(Node n) {
    ++pos_;
    return n;
  }

  Result<Node> value(const std::string& path, int depth) {
    if (pos_ >= in_.size()) return bad(path, "truncated");
    const char c = in_[pos_];
    if (c == '{' || c == '[') {
      if (depth >= kMaxDepth) return bad(path, "nested too deep");
      return c == '{' ? object(path, depth + 1) : array(path, depth + 1);
    }
    if (c == '"') return string(path);
    if (c >= '0' && c <= '9') return integer(path);
    return bad(path,
               "expected a value (canonical JSON: no whitespace, no true/false/null, no signs)");
  }

  Result<Node> string(const std::string& path) {
    ++pos_;  // opening quote
    const std::size_t start = pos_;
    while (pos_ < in_.size() && in_[pos_] != '"') {
      const char c = in_[pos_];
      if (c == '\\') return bad(path, "escape sequences are not canonical (no field needs one)");
      if (c < 0x20 || c > 0x7e) return bad(path, "character outside printable ASCII");
      ++pos_;
    }
    if (pos_ >= in_.size()) return bad(path, "truncated string");
    Node n;
    n.kind = Node::Kind::string;
    n.text = in_.substr(start, pos_ - start);
    ++pos_;  // closing quote
    return n;
  }

  Result<Node> integer(const std::string& path) {
    const std::size_t start = pos_;
    while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') ++pos_;
    const std::string_view digits = in_.substr(start, pos_ - start);
    if (digits.size() > 1 && digits[0] == '0') return bad(path, "leading zero in an integer");
    if (at('.') || at('e') || at('E')) return bad(path, "only integers are allowed");
    if (digits.size() > 16) return bad(path, "integer too large");
    Node n;
    n.kind = Node::Kind::integer;
    for (char c : digits) n.number = n.number * 10 + static_cast<std::uint64_t>(c - '0');
    if (n.number > kMaxSequence) return bad(path, "integer too large (above 2^53-1)");
    return n;
  }

  Result<Node> object(const std::string& path, int depth) {
    ++pos_;  // '{'
    Node n;
    n.kind = Node::Kind::object;
    if (at('}')) return closed(std::move(n));
    for (;;) {
      if (!at('"')) return bad(path, "expected a quoted key");
      auto key = string(path);
      if (!key) return std::unexpected(key.error());
      const std::string member = child_path(path, key->text);
      if (!n.keys.empty() && key->text <= n.keys.back()) {
        return bad(member, "keys out of canonical order, or duplicated");
      }
      if (!at(':')) return bad(member, "expected ':' after the key");
      ++pos_;
      auto v = value(member, depth);
      if (!v) return v;
      n.keys.push_back(key->text);
      n.values.push_back(std::move(*v));
      if (at('}')) return closed(std::move(n));
      if (!at(',')) return bad(member, "expected ',' or '}' after the value");
      ++pos_;
    }
  }

  Result<Node> array(const std::string& path, int depth) {
    ++pos_;  // '['
    Node n;
    n.kind = Node::Kind::array;
    if (at(']')) return closed(std::move(n));
    for (;;) {
      auto v = value(fmt::format("{}[{}]", path, n.values.size()), depth);
      if (!v) return v;
      n.values.push_back(std::move(*v));
      if (at(']')) return closed(std::move(n));
      if (!at(',')) return bad(path, "expected ',' or ']' in the array");
      ++pos_;
    }
  }

  std::string_view in_;
  std::size_t pos_ = 0;
};

// =============================================================================================
// Document decoding: typed access to one parsed object, every error naming the field.

int lower_hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // uppercase is valid hex but not canonical
}

class ObjectReader {
 public:
  ObjectReader(const Node& node, std::string path) : node_(node), path_(std::move(path)) {}

  // The object's keys must be exactly `expected` (which is sorted): unknown keys first, then
  // missing ones, are refused.
  Result<void> expect_keys(std::initializer_list<std::string_view> expected) const {
    for (std::string_view k : node_.keys) {
      if (std::find(expected.begin(), expected.end(), k) == expected.end()) {
        return fail(ErrorCode::bad_format, fmt::format("{}: unknown field", name(k)));
      }
    }
    for (std::string_view k : expected) {
      if (find(k) == nullptr) {
        return fail(ErrorCode::bad_format, fmt::format("{}: missing field", name(k)));
      }
    }
    return {};
  }

  Result<const Node*> get(std::string_view key, Node::Kind kind) const {
    const Node* n = find(key);
    if (n == nullptr) {
      return fail(ErrorCode::bad_format, fmt::format("{}: missing field", name(key)));
    }
    if (n->kind != kind) {
      return fail(ErrorCode::bad_format,
                  fmt::format("{}: expected {}", name(key), kind_name(kind)));
    }
    return n;
  }

  Result<std::string_view> string(std::string_view key) const {
    auto n = get(key, Node::Kind::string);
    if (!n) return std::unexpected(n.error());
    return (*n)->text;
  }

  Result<unsigned> small_integer(std::string_view key) const {
    auto n = get(key, Node::Kind::integer);
    if (!n) return std::unexpected(n.error());
    if ((*n)->number > 0xffff) {
      return fail(ErrorCode::bad_format, fmt::format("{}: too large", name(key)));
    }
    return static_cast<unsigned>((*n)->number);
  }

  Result<std::uint64_t> integer(std::string_view key) const {
    auto n = get(key, Node::Kind::integer);
    if (!n) return std::unexpected(n.error());
    return (*n)->number;
  }

  // Exactly out.size() bytes as 2*out.size() lowercase hex digits, decoded straight into `out`
  // (a Secret's buffer for K and OPc).
  Result<void> hex(std::string_view key, std::span<std::uint8_t> out) const {
    auto text = string(key);
    if (!text) return std::unexpected(text.error());
    if (text->size() != 2 * out.size()) {
      return fail(ErrorCode::bad_format,
                  fmt::format("{}: expected {} lowercase hex digits ({} bytes)", name(key),
                              2 * out.size(), out.size()));
    }
    for (std::size_t i = 0; i < out.size(); ++i) {
      const int hi = lower_hex_value((*text)[2 * i]);
      const int lo = lower_hex_value((*text)[2 * i + 1]);
      if (hi < 0 || lo < 0) {
        secure_wipe(out);
        return fail(ErrorCode::bad_format,
                    fmt::format("{}: not lowercase hex (canonical form)", name(key)));
      }
      out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
    }
    return {};
  }

  Result<ObjectReader> object(std::string_view key) const {
    auto n = get(key, Node::Kind::object);
    if (!n) return std::unexpected(n.error());
    return ObjectReader(**n, name(key));
  }

  std::string name(std::string_view key) const { return child_path(path_, key); }

 private:
  const Node* find(std::string_view key) const {
    for (std::size_t i = 0; i < node_.keys.size(); ++i) {
      if (node_.keys[i] == key) return &node_.values[i];
    }
    return nullptr;
  }

  const Node& node_;
  std::string path_;
};

// Returns the error of a Result<void> (or any Result) from the enclosing function; for the long
// runs of field reads and checks below. #undef at the end of the file.
#define MCIM_RETURN_IF_ERROR(expr)                                 \
  do {                                                             \
    if (auto r_ = (expr); !r_) return std::unexpected(r_.error()); \
  } while (0)

Result<void> read_milenage(const ObjectReader& top, McimMilenage& m) {
  auto obj = top.object("milenage");
  if (!obj) return std::unexpected(obj.error());
  MCIM_RETURN_IF_ERROR(
      obj->expect_keys({"c1", "c2", "c3", "c4", "c5", "r1", "r2", "r3", "r4", "r5"}));
  for (std::size_t i = 0; i < 5; ++i) {
    MCIM_RETURN_IF_ERROR(obj->hex(fmt::format("c{}", i + 1), m.c[i]));
    auto r = obj->small_integer(fmt::format("r{}", i + 1));
    if (!r) return std::unexpected(r.error());
    m.r[i] = *r;
  }
  return {};
}

Result<void> read_tuak(const ObjectReader& top, McimTuak& t) {
  auto obj = top.object("tuak");
  if (!obj) return std::unexpected(obj.error());
  MCIM_RETURN_IF_ERROR(
      obj->expect_keys({"ck_bits", "ik_bits", "keccak_iterations", "mac_bits", "res_bits"}));
  const std::pair<std::string_view, unsigned*> fields[] = {
      {"ck_bits", &t.ck_bits},
      {"ik_bits", &t.ik_bits},
      {"keccak_iterations", &t.keccak_iterations},
      {"mac_bits", &t.mac_bits},
      {"res_bits", &t.res_bits}};
  for (const auto& [key, dst] : fields) {
    auto v = obj->small_integer(key);
    if (!v) return std::unexpected(v.error());
    *dst = *v;
  }
  return {};
}

Result<void> read_policy(const ObjectReader& top, McimPolicy& p) {
  auto obj = top.object("policy");
  if (!obj) return std::unexpected(obj.error());
  MCIM_RETURN_IF_ERROR(obj->expect_keys({"operations", "owner"}));
  auto owner = obj->string("owner");
  if (!owner) return std::unexpected(owner.error());
  p.owner = std::string(*owner);
  auto ops = obj->get("operations", Node::Kind::array);
  if (!ops) return std::unexpected(ops.error());
  for (const Node& item : (*ops)->values) {
    const auto op = item.kind == Node::Kind::string ? parse_operation(item.text) : std::nullopt;
    if (!op) {
      return fail(ErrorCode::bad_format,
                  "policy.operations: each must be one of activate block deactivate delete retire "
                  "unblock update");
    }
    p.operations.push_back(*op);
  }
  return {};
}

Result<McimAlgorithm> read_algorithm(const ObjectReader& top) {
  auto name = top.string("algorithm");
  if (!name) return std::unexpected(name.error());
  if (*name == "milenage") return McimAlgorithm::milenage;
  if (*name == "tuak") return McimAlgorithm::tuak;
  return fail(ErrorCode::bad_format, "algorithm: expected milenage or tuak");
}

Result<void> read_keys(const ObjectReader& top, McimDocument& d) {
  if (d.algorithm == McimAlgorithm::milenage) {
    d.k_size = 16;
    MCIM_RETURN_IF_ERROR(top.hex("k", std::span(d.k.mut().data(), 16)));
    return top.hex("opc", d.opc.mut());
  }
  auto k = top.string("k");
  if (!k) return std::unexpected(k.error());
  d.k_size = k->size() == 64 ? 32 : 16;  // a wrong length fails below, naming k
  if (k->size() != 32 && k->size() != 64) {
    return fail(ErrorCode::bad_format,
                "k: expected 32 or 64 lowercase hex digits (16 or 32 bytes)");
  }
  MCIM_RETURN_IF_ERROR(top.hex("k", std::span(d.k.mut().data(), d.k_size)));
  return top.hex("topc", d.topc.mut());
}

Result<void> read_scalars(const ObjectReader& top, McimDocument& d) {
  const std::pair<std::string_view, std::string*> ids[] = {
      {"package_id", &d.package_id}, {"device_id", &d.device_id}, {"imsi", &d.imsi}};
  for (const auto& [key, dst] : ids) {
    auto v = top.string(key);
    if (!v) return std::unexpected(v.error());
    *dst = std::string(*v);
  }
  MCIM_RETURN_IF_ERROR(top.hex("amf", d.amf));
  MCIM_RETURN_IF_ERROR(top.hex("sqn", d.sqn));
  MCIM_RETURN_IF_ERROR(top.hex("registration_nonce", d.registration_nonce));
  auto ind = top.small_integer("ind_bits");
  if (!ind) return std::unexpected(ind.error());
  d.ind_bits = *ind;
  auto nb = top.integer("not_before");
  auto na = top.integer("not_after");
  auto seq = top.integer("sequence");
  if (!nb) return std::unexpected(nb.error());
  if (!na) return std::unexpected(na.error());
  if (!seq) return std::unexpected(seq.error());
  d.not_before = std::chrono::sys_seconds(std::chrono::seconds(static_cast<std::int64_t>(*nb)));
  d.not_after = std::chrono::sys_seconds(std::chrono::seconds(static_cast<std::int64_t>(*na)));
  d.sequence = *seq;
  return {};
}

Result<void> check_version(const ObjectReader& top) {
  auto v = top.string("version");
  if (!v) return std::unexpected(v.error());
  if (*v != kMcimVersion) {
    return fail(ErrorCode::bad_format,
                fmt::format("version: unsupported (this build reads {})", kMcimVersion));
  }
  return {};
}

Result<void> read_document(const Node& root, McimDocument& d) {
  if (root.kind != Node::Kind::object) {
    return fail(ErrorCode::bad_format, "document: expected an object");
  }
  const ObjectReader top(root, "");
  MCIM_RETURN_IF_ERROR(check_version(top));
  auto algorithm = read_algorithm(top);
  if (!algorithm) return std::unexpected(algorithm.error());
  d.algorithm = *algorithm;
  if (d.algorithm == McimAlgorithm::milenage) {
    MCIM_RETURN_IF_ERROR(
        top.expect_keys({"algorithm", "amf", "device_id", "imsi", "ind_bits", "k", "milenage",
                         "not_after", "not_before", "opc", "package_id", "policy",
                         "registration_nonce", "sequence", "sqn", "version"}));
    MCIM_RETURN_IF_ERROR(read_milenage(top, d.milenage));
  } else {
    MCIM_RETURN_IF_ERROR(
        top.expect_keys({"algorithm", "amf", "device_id", "imsi", "ind_bits", "k", "not_after",
                         "not_before", "package_id", "policy", "registration_nonce", "sequence",
                         "sqn", "topc", "tuak", "version"}));
    MCIM_RETURN_IF_ERROR(read_tuak(top, d.tuak));
  }
  MCIM_RETURN_IF_ERROR(read_keys(top, d));
  MCIM_RETURN_IF_ERROR(read_scalars(top, d));
  return read_policy(top, d.policy);
}

// =============================================================================================
// The outer SignedData's profile. OpenSSL ignores some fields no signature covers (the CMS
// versions, the digestAlgorithms set, AlgorithmIdentifier parameters); checking them byte for
// byte means no single changed byte of a package goes unnoticed. Of the other unsigned bytes,
// the sid is compared byte for byte with the signer's certificate (find_signer), certificates
// carry their own signatures and must all be on the verified path, and the signature value is
// verified.

struct Der {
  std::uint8_t tag = 0;
  ByteView value, whole;
};

// One TLV with a definite, minimally encoded length (X.690 §10.1); nullopt otherwise.
std::optional<Der> read_der(ByteView& in, std::uint8_t expected_tag) {
  if (in.size() < 2 || in[0] != expected_tag) return std::nullopt;
  std::size_t len = in[1];
  std::size_t header = 2;
  if ((len & 0x80) != 0) {
    const std::size_t n = len & 0x7f;
    if (n == 0 || n > 3 || in.size() < 2 + n || in[2] == 0) return std::nullopt;
    len = 0;
    for (std::size_t i = 0; i < n; ++i) len = (len << 8) | in[2 + i];
    if (len < 0x80) return std::nullopt;
    header = 2 + n;
  }
  if (in.size() - header < len) return std::nullopt;
  Der d{expected_tag, in.subspan(header, len), in.first(header + len)};
  in = in.subspan(header + len);
  return d;
}

bool equals(ByteView a, ByteView b) { return std::equal(a.begin(), a.end(), b.begin(), b.end()); }

// DER of the fixed parts. OpenSSL writes SHA-256 and ECDSA-with-SHA-256 identifiers without
// parameters (RFC 5754 §2, §3.3).
constexpr std::array<std::uint8_t, 11> kOidSignedData = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                                         0xf7, 0x0d, 0x01, 0x07, 0x02};
constexpr std::array<std::uint8_t, 11> kOidData = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                                   0xf7, 0x0d, 0x01, 0x07, 0x01};
constexpr std::array<std::uint8_t, 13> kSha256 = {0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
                                                  0x01, 0x65, 0x03, 0x04, 0x02, 0x01};
constexpr std::array<std::uint8_t, 15> kDigestAlgorithms = {
    0x31, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01};
constexpr std::array<std::uint8_t, 12> kEcdsaSha256 = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                                                       0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
constexpr std::array<std::uint8_t, 1> kVersion1 = {0x01};

std::unexpected<Error> not_profile(std::string_view what) {
  return fail(ErrorCode::bad_format,
              fmt::format("package: not a DER CMS SignedData of the mcim profile ({})", what));
}

// SignerInfo ::= SEQUENCE { version 1, sid IssuerAndSerialNumber, digestAlgorithm sha256,
//   [0] signedAttrs, signatureAlgorithm ecdsa-with-SHA256, signature OCTET STRING } (RFC 5652 §5.3)
// Returns the sid's DER.
Result<ByteView> check_signer_info(ByteView set) {
  auto si = read_der(set, 0x30);
  if (!si || !set.empty()) return not_profile("exactly one SignerInfo");
  ByteView x = si->value;
  auto version = read_der(x, 0x02);
  if (!version || !equals(version->value, kVersion1)) return not_profile("SignerInfo version");
  auto sid = read_der(x, 0x30);
  if (!sid) return not_profile("signer identifier");
  auto digest = read_der(x, 0x30);
  if (!digest || !equals(digest->whole, kSha256)) return not_profile("digest algorithm");
  if (!read_der(x, 0xa0)) return not_profile("signed attributes");
  auto sigalg = read_der(x, 0x30);
  if (!sigalg || !equals(sigalg->whole, kEcdsaSha256)) return not_profile("signature algorithm");
  if (!read_der(x, 0x04) || !x.empty()) return not_profile("signature, no unsigned attributes");
  return sid->whole;
}

// Where the profile check found the parts the verification needs, as views into the package.
struct OuterParts {
  ByteView version, digests, encap, signers;  // whole TLVs of the SignedData
  ByteView certificates;                      // the content of [0] certificates
  ByteView content;                           // the eContent octets: the sealed AuthEnvelopedData
  ByteView sid;                               // the SignerInfo's IssuerAndSerialNumber
};

// ContentInfo { signedData, [0] SignedData { version 1, {sha256}, { data, [0] OCTET STRING },
//   [0] certificates, signerInfos } } (RFC 5652 §5.1), no CRLs, nothing after.
Result<OuterParts> check_outer_profile(ByteView pkg) {
  auto ci = read_der(pkg, 0x30);
  if (!ci || !pkg.empty()) return not_profile("ContentInfo");
  ByteView c = ci->value;
  auto type = read_der(c, 0x06);
  if (!type || !equals(type->whole, kOidSignedData)) return not_profile("content type");
  auto explicit0 = read_der(c, 0xa0);
  if (!explicit0 || !c.empty()) return not_profile("content");
  ByteView e = explicit0->value;
  auto sd = read_der(e, 0x30);
  if (!sd || !e.empty()) return not_profile("SignedData");
  ByteView s = sd->value;
  auto version = read_der(s, 0x02);
  if (!version || !equals(version->value, kVersion1)) return not_profile("SignedData version");
  auto digests = read_der(s, 0x31);
  if (!digests || !equals(digests->whole, kDigestAlgorithms)) {
    return not_profile("digestAlgorithms");
  }
  auto encap = read_der(s, 0x30);
  if (!encap) return not_profile("encapsulated content");
  ByteView ec = encap->value;
  auto etype = read_der(ec, 0x06);
  if (!etype || !equals(etype->whole, kOidData)) return not_profile("eContentType");
  auto econtent = read_der(ec, 0xa0);
  if (!econtent || !ec.empty()) return not_profile("eContent");
  ByteView oct = econtent->value;
  auto octets = read_der(oct, 0x04);
  if (!octets || !oct.empty()) return not_profile("eContent octets");
  auto certs = read_der(s, 0xa0);
  if (!certs) return not_profile("certificates");
  auto signers = read_der(s, 0x31);
  if (!signers || !s.empty()) return not_profile("signerInfos, no CRLs");
  auto sid = check_signer_info(signers->value);
  if (!sid) return std::unexpected(sid.error());
  return OuterParts{version->whole, digests->whole, encap->whole, signers->whole,
                    certs->value,   octets->value,  *sid};
}

// DER length octets (X.690 §8.1.3.4-5): the short form below 128, else the minimal long form.
void append_length(ByteVec& out, std::size_t n) {
  if (n < 0x80) {
    out.push_back(static_cast<std::uint8_t>(n));
    return;
  }
  std::uint8_t octets[sizeof n];
  std::size_t count = 0;
  for (std::size_t v = n; v != 0; v >>= 8) octets[count++] = static_cast<std::uint8_t>(v & 0xff);
  out.push_back(static_cast<std::uint8_t>(0x80 | count));
  while (count > 0) out.push_back(octets[--count]);
}

void append_tlv(ByteVec& out, std::uint8_t tag, ByteView content) {
  out.push_back(tag);
  append_length(out, content.size());
  out.insert(out.end(), content.begin(), content.end());
}

// The package without its certificates field, for d2i: OpenSSL 3.0 spends ~90 us decoding each
// certificate's public key, so certificates go through the cache below instead.
ByteVec without_certificates(const OuterParts& p) {
  ByteVec sd;
  for (ByteView part : {p.version, p.digests, p.encap, p.signers}) {
    sd.insert(sd.end(), part.begin(), part.end());
  }
  ByteVec explicit0, content_info(kOidSignedData.begin(), kOidSignedData.end()), out;
  append_tlv(explicit0, 0x30, sd);
  append_tlv(content_info, 0xa0, explicit0);
  append_tlv(out, 0x30, content_info);
  return out;
}

// =============================================================================================
// OpenSSL plumbing

ByteVec cms_der(CMS_ContentInfo* cms) { return der_of<CMS_ContentInfo>(cms, i2d_CMS_ContentInfo); }

// Parses one CMS ContentInfo that must span all of `der` and re-encode to the same bytes.
CmsPtr parse_cms_exact(ByteView der) {
  const unsigned char* p = der.data();
  CmsPtr cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(der.size())));
  if (!cms || p != der.data() + der.size()) return nullptr;
  const ByteVec again = cms_der(cms.get());
  if (!std::equal(again.begin(), again.end(), der.begin(), der.end())) return nullptr;
  return cms;
}

// Parsed certificates by the SHA-256 of their DER. A TRE or a relay sees the same few signer
// chains again and again, and parsing is a pure function of the bytes; X509 objects are safe to
// share between threads once parsed (OpenSSL locks their lazily computed fields). Bounded: it
// starts over when full.
class CertificateCache {
 public:
  // Certificates in DER (X.690 §10): one that does not re-encode to the same bytes is refused.
  std::optional<X509Ptr> parse(ByteView der) {
    const Bytes<32> id = sha256(der);
    {
      std::lock_guard lock(mutex_);
      if (auto it = certs_.find(id); it != certs_.end()) return up_ref(it->second.get());
    }
    const unsigned char* p = der.data();
    X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
    if (!cert || p != der.data() + der.size()) return std::nullopt;
    const ByteVec again = certificate_der(cert.get());
    if (!std::equal(again.begin(), again.end(), der.begin(), der.end())) return std::nullopt;
    std::lock_guard lock(mutex_);
    if (certs_.size() >= kMaxEntries) certs_.clear();
    certs_.emplace(id, up_ref(cert.get()));
    return cert;
  }

 private:
  static constexpr std::size_t kMaxEntries = 256;
  std::mutex mutex_;
  std::map<Bytes<32>, X509Ptr> certs_;  // guarded by mutex_
};

// Never destroyed: it would free X509 objects during static destruction, perhaps after
// OpenSSL's own cleanup.
CertificateCache& certificate_cache() {
  static auto* cache = new CertificateCache();
  return *cache;
}

std::int64_t unix_seconds(TimePoint t) {
  return std::chrono::floor<std::chrono::seconds>(t).time_since_epoch().count();
}

VerifiedChain copy_of(const VerifiedChain& path) {
  VerifiedChain out;
  for (const auto& c : path.chain) out.chain.push_back(up_ref(c.get()));
  return out;
}

// Signer paths verify_chain accepted, so that opening many packages from the same SHO pays for
// the path's two certificate signatures once. An entry is keyed by the trust store (held by a
// reference, so its address cannot be reused while the entry exists) and the SHA-256 of the
// package's certificates field and signer identifier; it answers only at times inside every
// certificate's validity window, which is the only input verify_chain's verdict depends on
// beyond those. Failures are never cached (they are recomputed, with their precise error).
// Bounded: it starts over when full. Thread-safe.
class VerifiedPathCache {
 public:
  std::optional<VerifiedChain> find(X509_STORE* store, const Bytes<32>& key, TimePoint at) {
    const std::int64_t t = unix_seconds(at);
    std::lock_guard lock(mutex_);
    const auto it = entries_.find({store, key});
    if (it == entries_.end() || t < it->second.valid_from || t >= it->second.valid_until) {
      return std::nullopt;
    }
    return copy_of(it->second.path);
  }

  void add(X509_STORE* store, const Bytes<32>& key, const VerifiedChain& path) {
    Entry e{X509StorePtr(store), copy_of(path), INT64_MIN, INT64_MAX};
    X509_STORE_up_ref(store);
    for (const auto& c : path.chain) {
      e.valid_from = std::max(e.valid_from, unix_seconds(not_before(c.get())));
      e.valid_until = std::min(e.valid_until, unix_seconds(not_after(c.get())));
    }
    std::lock_guard lock(mutex_);
    if (entries_.size() >= kMaxEntries) entries_.clear();
    entries_.insert_or_assign({store, key}, std::move(e));
  }

 private:
  struct Entry {
    X509StorePtr store;  // keeps the key's address in use
    VerifiedChain path;
    std::int64_t valid_from, valid_until;  // [from, until), as OpenSSL compares
  };
  static constexpr std::size_t kMaxEntries = 64;
  std::mutex mutex_;
  std::map<std::pair<X509_STORE*, Bytes<32>>, Entry> entries_;  // guarded by mutex_
};

VerifiedPathCache& verified_path_cache() {
  static auto* cache = new VerifiedPathCache();  // never destroyed, as certificate_cache()
  return *cache;
}

// The certificates field's content: a SET OF Certificate, nothing else (no attribute certs).
Result<std::vector<X509Ptr>> parse_certificates(ByteView set) {
  std::vector<X509Ptr> certs;
  while (!set.empty()) {
    auto tlv = read_der(set, 0x30);
    auto cert = tlv ? certificate_cache().parse(tlv->whole) : std::nullopt;
    if (!cert) {
      ERR_clear_error();
      return fail(ErrorCode::bad_format, "package: a certificate is not a DER X.509 certificate");
    }
    certs.push_back(std::move(*cert));
  }
  return certs;
}

// The package-signing profile (certificate.h): an explicit emailProtection EKU. The S/MIME
// purpose alone would also pass certificates without any EKU (result-signing).
bool has_package_signing_eku(X509* cert) {
  return (X509_get_extension_flags(cert) & EXFLAG_XKUSAGE) != 0 &&
         (X509_get_extended_key_usage(cert) & XKU_SMIME) != 0;
}

// =============================================================================================
// Sealing

Result<ByteVec> encrypt_to(ByteView plaintext, X509* recipient) {
  CmsPtr cms(CMS_AuthEnvelopedData_create(EVP_aes_256_gcm()));
  // Created with detached content (CMS_encrypt would attach it): the ciphertext belongs inside.
  if (!cms || CMS_set_detached(cms.get(), 0) != 1) {
    return std::unexpected(openssl_error(ErrorCode::internal, "AuthEnvelopedData"));
  }
  CMS_RecipientInfo* ri = CMS_add1_recipient_cert(cms.get(), recipient, CMS_KEY_PARAM);
  EVP_PKEY_CTX* pctx = ri != nullptr ? CMS_RecipientInfo_get0_pkey_ctx(ri) : nullptr;
  // OpenSSL's ECDH KDF defaults to SHA-1; SHA-256 (dhSinglePass-stdDH-sha256kdf-scheme,
  // RFC 5753) matches P-256 and AES-256, and is what docs/mcim-package.md names.
  if (pctx == nullptr || EVP_PKEY_CTX_set_ecdh_kdf_md(pctx, EVP_sha256()) <= 0) {
    return std::unexpected(
        openssl_error(ErrorCode::invalid_argument, "recipient: ECDH key agreement"));
  }
  BioPtr in = memory_bio(plaintext);
  if (!in || CMS_final(cms.get(), in.get(), nullptr, CMS_BINARY) != 1) {
    return std::unexpected(openssl_error(ErrorCode::internal, "encrypting the document"));
  }
  ByteVec der = cms_der(cms.get());
  if (der.empty()) {
    return std::unexpected(openssl_error(ErrorCode::internal, "encoding AuthEnvelopedData"));
  }
  return der;
}

Result<ByteVec> sign_content(ByteView content, const PackageSigner& signer) {
  STACK_OF(X509)* chain = sk_X509_new_null();
  for (X509* c : signer.chain) sk_X509_push(chain, c);
  BioPtr in = memory_bio(content);
  // No S/MIME capabilities attribute: nothing in mcim negotiates by it.
  CmsPtr cms(CMS_sign(signer.cert, signer.key, chain, in.get(), CMS_BINARY | CMS_NOSMIMECAP));
  sk_X509_free(chain);
  if (!cms) return std::unexpected(openssl_error(ErrorCode::internal, "signing the package"));
  ByteVec der = cms_der(cms.get());
  if (der.empty()) {
    return std::unexpected(openssl_error(ErrorCode::internal, "encoding SignedData"));
  }
  return der;
}

Result<void> check_seal_inputs(const McimDocument& doc, const PackageSigner& signer,
                               X509* recipient) {
  if (signer.cert == nullptr || signer.key == nullptr) {
    return fail(ErrorCode::missing_argument, "signer: certificate and key required");
  }
  if (recipient == nullptr) {
    return fail(ErrorCode::missing_argument, "recipient: certificate required");
  }
  if (X509_check_private_key(signer.cert, signer.key) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::invalid_argument, "signer: the key does not belong to the certificate");
  }
  if (signer_operator_id(signer.cert) != doc.policy.owner) {
    return fail(
        ErrorCode::invalid_argument,
        "signer: its certificate's urn:mcim:operator: id is not the document's policy.owner");
  }
  if (EVP_PKEY_get_base_id(X509_get0_pubkey(recipient)) != EVP_PKEY_EC) {
    return fail(ErrorCode::invalid_argument, "recipient: not an EC platform certificate");
  }
  const auto device = platform_device_id(recipient);
  if (!device) {
    return fail(ErrorCode::invalid_argument,
                "recipient: not a platform certificate (no device id)");
  }
  if (*device != doc.device_id) {
    return fail(ErrorCode::invalid_argument,
                "recipient: certificate of another device than device_id");
  }
  return {};
}

// =============================================================================================
// Verifying and opening

// DER of IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber INTEGER } for cert.
ByteVec issuer_and_serial(X509* cert) {
  unsigned char* name = nullptr;
  unsigned char* serial = nullptr;
  const int n = i2d_X509_NAME(X509_get_issuer_name(cert), &name);
  const int m = i2d_ASN1_INTEGER(X509_get0_serialNumber(cert), &serial);
  ByteVec out;
  if (n > 0 && m > 0) {
    ByteVec content(name, name + n);
    content.insert(content.end(), serial, serial + m);
    append_tlv(out, 0x30, content);
  }
  OPENSSL_free(name);
  OPENSSL_free(serial);
  return out;
}

// The certificate whose issuer and serial are exactly the sid's bytes. OpenSSL's own match
// (CMS_SignerInfo_cert_cmp) compares names case- and space-insensitively, so a changed letter in
// the unsigned sid would go unnoticed.
Result<X509*> find_signer(ByteView sid, const std::vector<X509Ptr>& certs) {
  for (const auto& c : certs) {
    const ByteVec expected = issuer_and_serial(c.get());
    if (std::equal(sid.begin(), sid.end(), expected.begin(), expected.end())) return c.get();
  }
  return fail(ErrorCode::signature_invalid,
              "package: no certificate matches the signer identifier");
}

// Every certificate carried must be on the verified path: an unused one could be altered
// without any signature noticing.
Result<void> check_all_on_path(const std::vector<X509Ptr>& certs, const VerifiedChain& path) {
  for (const auto& c : certs) {
    const bool on_path = std::any_of(path.chain.begin(), path.chain.end(), [&](const X509Ptr& p) {
      return X509_cmp(p.get(), c.get()) == 0;
    });
    if (!on_path) {
      return fail(ErrorCode::bad_format, "package: a certificate outside the signer's chain");
    }
  }
  return {};
}

// The signed attributes: contentType id-data and a messageDigest over eContent (RFC 5652 §11).
Result<void> check_signed_attributes(CMS_SignerInfo* si, ByteView content) {
  const auto* type = static_cast<const ASN1_OBJECT*>(
      CMS_signed_get0_data_by_OBJ(si, OBJ_nid2obj(NID_pkcs9_contentType), -3, V_ASN1_OBJECT));
  if (type == nullptr || OBJ_obj2nid(type) != NID_pkcs7_data) {
    ERR_clear_error();
    return fail(ErrorCode::bad_format,
                "package: signed contentType attribute missing or not id-data");
  }
  const auto* digest = static_cast<const ASN1_OCTET_STRING*>(CMS_signed_get0_data_by_OBJ(
      si, OBJ_nid2obj(NID_pkcs9_messageDigest), -3, V_ASN1_OCTET_STRING));
  if (digest == nullptr) {
    ERR_clear_error();
    return fail(ErrorCode::bad_format, "package: signed messageDigest attribute missing");
  }
  const Bytes<32> actual = sha256(content);
  const ByteView signed_digest(ASN1_STRING_get0_data(digest),
                               static_cast<std::size_t>(ASN1_STRING_length(digest)));
  if (!std::equal(actual.begin(), actual.end(), signed_digest.begin(), signed_digest.end())) {
    return fail(ErrorCode::package_tampered, "package: content does not match the signed digest");
  }
  return {};
}

// `parts` are views into the package bytes, equal to the parsed CMS's since the package
// re-encodes to itself.
// The signer's path to the operator root with the S/MIME signing purpose, from the cache when
// this store accepted the same certificates before.
Result<VerifiedChain> verify_signer_path(const TrustAnchors& anchors, X509* signer,
                                         const std::vector<X509Ptr>& certs, const OuterParts& parts,
                                         TimePoint now) {
  ByteVec id(parts.certificates.begin(), parts.certificates.end());
  id.insert(id.end(), parts.sid.begin(), parts.sid.end());
  const Bytes<32> key = sha256(id);
  if (auto hit = verified_path_cache().find(anchors.store(), key, now)) return std::move(*hit);
  std::vector<X509*> untrusted;
  for (const auto& c : certs) untrusted.push_back(c.get());
  auto path = verify_chain(anchors, signer, untrusted, now, Purpose::smime_sign);
  if (path) verified_path_cache().add(anchors.store(), key, *path);
  return path;
}

Result<SignedPackageInfo> verify_signer(CMS_ContentInfo* cms, const OuterParts& parts,
                                        TimePoint now, const TrustAnchors& anchors) {
  CMS_SignerInfo* si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);
  auto parsed = parse_certificates(parts.certificates);
  if (!parsed) return std::unexpected(parsed.error());
  const std::vector<X509Ptr>& certs = *parsed;
  auto signer = find_signer(parts.sid, certs);
  if (!signer) return std::unexpected(signer.error());
  if (!has_package_signing_eku(*signer)) {
    return fail(ErrorCode::chain_invalid,
                "signer: not a package-signing certificate (no emailProtection EKU)");
  }
  auto path = verify_signer_path(anchors, *signer, certs, parts, now);
  if (!path) return std::unexpected(path.error());
  MCIM_RETURN_IF_ERROR(check_all_on_path(certs, *path));
  auto operator_id = signer_operator_id(*signer);
  if (!operator_id || !valid_id(*operator_id)) {
    return fail(ErrorCode::chain_invalid,
                "signer: certificate names no operator (SAN URI urn:mcim:operator:<id>)");
  }
  CMS_SignerInfo_set1_signer_cert(si, *signer);
  if (CMS_SignerInfo_verify(si) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::signature_invalid, "package: the signer's signature does not verify");
  }
  MCIM_RETURN_IF_ERROR(check_signed_attributes(si, parts.content));
  return SignedPackageInfo{up_ref(*signer), std::move(*operator_id), std::move(path->chain),
                           parts.content};
}

Result<SignedPackageInfo> verify_signed(ByteView pkg, const TrustAnchors& anchors, TimePoint now) {
  if (pkg.empty()) return fail(ErrorCode::bad_format, "package: empty");
  if (pkg.size() > kMaxPackageSize) {
    return fail(ErrorCode::bad_format, "package: larger than 64 KiB");
  }
  auto parts = check_outer_profile(pkg);
  if (!parts) return std::unexpected(parts.error());
  CmsPtr cms = parse_cms_exact(without_certificates(*parts));
  if (!cms) {
    ERR_clear_error();
    return fail(ErrorCode::bad_format, "package: not a DER CMS ContentInfo");
  }
  return verify_signer(cms.get(), *parts, now, anchors);
}

// The signed content: AuthEnvelopedData with one key-agreement recipient holding one key.
Result<CmsPtr> parse_sealed(ByteView der) {
  CmsPtr cms = parse_cms_exact(der);
  if (!cms || OBJ_obj2nid(CMS_get0_type(cms.get())) != NID_id_smime_ct_authEnvelopedData) {
    ERR_clear_error();
    return fail(ErrorCode::bad_format, "package: signed content is not a DER AuthEnvelopedData");
  }
  STACK_OF(CMS_RecipientInfo)* ris = CMS_get0_RecipientInfos(cms.get());
  if (sk_CMS_RecipientInfo_num(ris) != 1 ||
      CMS_RecipientInfo_type(sk_CMS_RecipientInfo_value(ris, 0)) != CMS_RECIPINFO_AGREE ||
      sk_CMS_RecipientEncryptedKey_num(
          CMS_RecipientInfo_kari_get0_reks(sk_CMS_RecipientInfo_value(ris, 0))) != 1) {
    return fail(ErrorCode::bad_format, "package: expected exactly one key-agreement recipient");
  }
  return cms;
}

Result<void> check_recipient(CMS_ContentInfo* sealed, X509* cert) {
  CMS_RecipientInfo* ri = sk_CMS_RecipientInfo_value(CMS_get0_RecipientInfos(sealed), 0);
  CMS_RecipientEncryptedKey* rek =
      sk_CMS_RecipientEncryptedKey_value(CMS_RecipientInfo_kari_get0_reks(ri), 0);
  if (CMS_RecipientEncryptedKey_cert_cmp(rek, cert) != 0) {
    return fail(ErrorCode::wrong_recipient, "package: encrypted to another platform certificate");
  }
  return {};
}

// Decrypts and decodes; the plaintext stays in an OpenSSL buffer that is cleansed when freed,
// and is used only when CMS_decrypt succeeded (it writes output even on a bad GCM tag).
Result<McimDocument> decrypt_document(CMS_ContentInfo* sealed, const PackageRecipient& r) {
  BioPtr out(BIO_new(BIO_s_secmem()));
  if (!out) return std::unexpected(openssl_error(ErrorCode::internal, "BIO_new"));
  if (CMS_decrypt(sealed, r.key(), r.cert(), nullptr, out.get(), CMS_BINARY) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::package_tampered, "package: decryption failed (key unwrap or GCM tag)");
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(out.get(), &data);
  return decode_document(
      ByteView(reinterpret_cast<const std::uint8_t*>(data), static_cast<std::size_t>(n)));
}

Result<void> check_document(const McimDocument& doc, const SignedPackageInfo& info,
                            const PackageRecipient& r, TimePoint now, const OpenOptions& options) {
  if (doc.policy.owner != info.operator_id) {
    return fail(ErrorCode::signature_invalid, "package: policy.owner is not the signer's operator");
  }
  if (doc.device_id != r.device_id()) {
    return fail(ErrorCode::wrong_recipient, "package: device_id is not this TRE's device");
  }
  if (now < doc.not_before) {
    return fail(ErrorCode::package_expired, "package: not yet valid (not_before)");
  }
  if (now >= doc.not_after) return fail(ErrorCode::package_expired, "package: expired (not_after)");
  if (options.registration_nonce &&
      !constant_time_equal(*options.registration_nonce, doc.registration_nonce)) {
    return fail(ErrorCode::nonce_mismatch,
                "package: registration_nonce is not this registration's");
  }
  const auto last = options.last_sequence.find(doc.policy.owner);
  if (last != options.last_sequence.end() && doc.sequence <= last->second) {
    return fail(ErrorCode::replayed_package,
                fmt::format("package: sequence {} not above the last accepted {} for this operator",
                            doc.sequence, last->second));
  }
  return {};
}

}  // namespace

// =============================================================================================
// Public API

std::string_view to_string(McimAlgorithm a) {
  return a == McimAlgorithm::milenage ? "milenage" : "tuak";
}

std::string_view to_string(McimOperation op) {
  const auto i = static_cast<std::size_t>(op);
  return i < kOperationNames.size() ? kOperationNames[i] : "unknown";
}

std::optional<McimOperation> parse_operation(std::string_view name) {
  for (std::size_t i = 0; i < kOperationNames.size(); ++i) {
    if (name == kOperationNames[i]) return static_cast<McimOperation>(i);
  }
  return std::nullopt;
}

bool McimPolicy::allows(McimOperation op) const {
  return std::find(operations.begin(), operations.end(), op) != operations.end();
}

Result<void> McimDocument::set_key(ByteView k_bytes) {
  if (k_bytes.size() != 16 && k_bytes.size() != 32) {
    return fail(ErrorCode::invalid_argument, "k: must be 16 or 32 bytes");
  }
  secure_wipe(k.mut());
  std::copy(k_bytes.begin(), k_bytes.end(), k.mut().begin());
  k_size = k_bytes.size();
  return {};
}

Result<void> validate_document(const McimDocument& d, ErrorCode code) {
  if (!valid_id(d.package_id)) {
    return fail(code, "package_id: 1..64 characters of A-Z a-z 0-9 . _ : -");
  }
  if (!valid_id(d.device_id)) {
    return fail(code, "device_id: 1..64 characters of A-Z a-z 0-9 . _ : -");
  }
  if (!valid_imsi(d.imsi)) return fail(code, "imsi: 6 to 15 decimal digits");
  MCIM_RETURN_IF_ERROR(validate_algorithm(d, code));
  if (d.ind_bits > kMaxIndBits) {
    return fail(code, fmt::format("ind_bits: must be 0..{}", kMaxIndBits));
  }
  MCIM_RETURN_IF_ERROR(validate_policy(d.policy, code));
  if (std::all_of(d.registration_nonce.begin(), d.registration_nonce.end(),
                  [](std::uint8_t b) { return b == 0; })) {
    return fail(code, "registration_nonce: all zero (never drawn)");
  }
  MCIM_RETURN_IF_ERROR(validate_times(d, code));
  if (d.sequence < 1 || d.sequence > kMaxSequence) return fail(code, "sequence: must be 1..2^53-1");
  return {};
}

Result<SecretBytes> encode_document(const McimDocument& doc) {
  MCIM_RETURN_IF_ERROR(validate_document(doc, ErrorCode::invalid_argument));
  ByteVec out;
  out.reserve(kMaxDocumentSize);  // never reallocates, so no unwiped copy is left behind
  CanonicalWriter w(out);
  write_document(w, doc);
  return SecretBytes(std::move(out));
}

Result<McimDocument> decode_document(ByteView json) {
  if (json.empty()) return fail(ErrorCode::bad_format, "document: empty");
  if (json.size() > kMaxDocumentSize) {
    return fail(ErrorCode::bad_format,
                fmt::format("document: longer than {} bytes", kMaxDocumentSize));
  }
  const std::string_view text(reinterpret_cast<const char*>(json.data()), json.size());
  auto root = CanonicalParser(text).parse();
  if (!root) return std::unexpected(root.error());
  McimDocument doc;
  MCIM_RETURN_IF_ERROR(read_document(*root, doc));
  MCIM_RETURN_IF_ERROR(validate_document(doc, ErrorCode::bad_format));
  return doc;
}

std::optional<std::string> signer_operator_id(const X509* cert) {
  return san_uri_with_prefix(cert, kOperatorUrn);
}

Result<ByteVec> seal_package(const McimDocument& doc, const PackageSigner& signer,
                             X509* recipient_cert) {
  MCIM_RETURN_IF_ERROR(check_seal_inputs(doc, signer, recipient_cert));
  auto plaintext = encode_document(doc);
  if (!plaintext) return std::unexpected(plaintext.error());
  auto sealed = encrypt_to(plaintext->view(), recipient_cert);
  if (!sealed) return std::unexpected(sealed.error());
  return sign_content(*sealed, signer);
}

Result<SignedPackageInfo> verify_package_signature(ByteView pkg, const TrustAnchors& operator_roots,
                                                   const Clock& clock) {
  return verify_signed(pkg, operator_roots, clock.now());
}

Result<PackageRecipient> PackageRecipient::create(X509* platform_cert, EVP_PKEY* platform_key) {
  if (platform_cert == nullptr || platform_key == nullptr) {
    return fail(ErrorCode::missing_argument, "recipient: certificate and key required");
  }
  if (X509_check_private_key(platform_cert, platform_key) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::wrong_recipient,
                "recipient: the key does not belong to the certificate");
  }
  auto device = platform_device_id(platform_cert);
  if (!device) {
    return fail(ErrorCode::bad_format, "recipient: not a platform certificate (no device id)");
  }
  return PackageRecipient(up_ref(platform_cert), up_ref(platform_key), std::move(*device));
}

Result<McimDocument> open_package(ByteView pkg, const PackageRecipient& recipient,
                                  const TrustAnchors& operator_roots, const Clock& clock,
                                  const OpenOptions& options) {
  const TimePoint now = clock.now();
  auto verified = verify_signed(pkg, operator_roots, now);
  if (!verified) return std::unexpected(verified.error());
  auto sealed = parse_sealed(verified->sealed);
  if (!sealed) return std::unexpected(sealed.error());
  MCIM_RETURN_IF_ERROR(check_recipient(sealed->get(), recipient.cert()));
  auto doc = decrypt_document(sealed->get(), recipient);
  if (!doc) return doc;
  MCIM_RETURN_IF_ERROR(check_document(*doc, *verified, recipient, now, options));
  return doc;
}

Result<McimDocument> open_package(ByteView pkg, X509* recipient_cert, EVP_PKEY* recipient_key,
                                  const TrustAnchors& operator_roots, const Clock& clock,
                                  const OpenOptions& options) {
  auto recipient = PackageRecipient::create(recipient_cert, recipient_key);
  if (!recipient) return std::unexpected(recipient.error());
  return open_package(pkg, *recipient, operator_roots, clock, options);
}

#undef MCIM_RETURN_IF_ERROR

bool valid_mcim_id(std::string_view s) {
  return !s.empty() && s.size() <= kMaxIdLength && std::all_of(s.begin(), s.end(), is_id_char);
}

}  // namespace mcim::pki
