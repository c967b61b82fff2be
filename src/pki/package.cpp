#include "pki/package.h"

#include <fmt/format.h>
#include <openssl/err.h>

#include <algorithm>

#include "pki/certificate.h"

namespace mcim::pki {
namespace {

// =============================================================================================
// Names and field rules

constexpr std::array kOperationNames = {"activate", "block",   "deactivate", "delete",
                                        "retire",   "unblock", "update"};

// Seconds of 9999-12-31T23:59:59Z: times stay four-digit years whatever tool reads them.
constexpr std::uint64_t kMaxTime = 253402300799;
// Integers stay exact in every JSON implementation (IEEE doubles).
constexpr std::uint64_t kMaxSequence = (std::uint64_t{1} << 53) - 1;
constexpr unsigned kMaxIndBits = 10;  // as aka::SqnPolicy::kMaxIndBits
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
// Sealing and opening: the envelope is sealed.h's; what is package-specific is the document, the
// binding of its owner to the signer's operator and of its device id to the recipient.

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

Result<void> check_document(const McimDocument& doc, const SignedEnvelopeInfo& info,
                            const PackageRecipient& r, const OpenOptions& options) {
  const TimePoint now = info.verified_at;
  if (doc.policy.owner != info.signer_id) {
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
  return seal_signed(plaintext->view(), signer, recipient_cert);
}

Result<SignedPackageInfo> verify_package_signature(ByteView pkg, const TrustAnchors& operator_roots,
                                                   const Clock& clock) {
  auto info = verify_sealed_signature(pkg, operator_roots, clock, kPackageSignerPolicy);
  if (!info) return std::unexpected(info.error());
  return SignedPackageInfo{std::move(info->signer), std::move(info->signer_id),
                           std::move(info->chain), info->sealed};
}

Result<PackageRecipient> PackageRecipient::create(X509* platform_cert, EVP_PKEY* platform_key) {
  auto recipient = SealedRecipient::create(platform_cert, platform_key);
  if (!recipient) return std::unexpected(recipient.error());
  auto device = platform_device_id(platform_cert);
  if (!device) {
    return fail(ErrorCode::bad_format, "recipient: not a platform certificate (no device id)");
  }
  return PackageRecipient(std::move(*recipient), std::move(*device));
}

Result<McimDocument> open_package(ByteView pkg, const PackageRecipient& recipient,
                                  const TrustAnchors& operator_roots, const Clock& clock,
                                  const OpenOptions& options) {
  auto opened =
      open_sealed(pkg, recipient.sealed_recipient(), operator_roots, clock, kPackageSignerPolicy);
  if (!opened) return std::unexpected(opened.error());
  auto doc = decode_document(opened->content.view());
  if (!doc) return doc;
  MCIM_RETURN_IF_ERROR(check_document(*doc, opened->signer, recipient, options));
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

}  // namespace mcim::pki
