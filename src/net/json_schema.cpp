#include "net/json_schema.h"

#include <fmt/format.h>

#include <set>

#include "pki/signed_json.h"

namespace mcim::net {

struct JsonSchema::Node {
  enum class Kind { string, enumeration, hex, integer, boolean, array, object };
  Kind kind = Kind::string;
  std::size_t min = 0, max = 0;  // string bytes, hex bytes, array elements
  std::int64_t imin = 0, imax = 0;
  StringCheck check;
  std::string expected;                 // what `check` wants, for the message
  std::vector<std::string> allowed;     // enumeration
  std::shared_ptr<const Node> element;  // array
  std::vector<JsonMember> members;      // object
};

namespace {

using Node = JsonSchema::Node;
using Kind = Node::Kind;

constexpr int kMaxDepth = 32;

// Where a value sits, for messages: "body" for the root, "field a.b[2]" below it.
struct Path {
  std::string_view root;  // "body"
  std::string text;       // empty at the root
  std::string describe() const {
    return text.empty() ? std::string(root) : fmt::format("field {}", text);
  }
  Path member(std::string_view name) const {
    return {root, text.empty() ? std::string(name) : fmt::format("{}.{}", text, name)};
  }
  Path element(std::size_t i) const {
    return {root, text.empty() ? fmt::format("[{}]", i) : fmt::format("{}[{}]", text, i)};
  }
};

std::unexpected<Error> refuse(ErrorCode code, const Path& at, std::string_view what) {
  return fail(code, fmt::format("{}: {}", at.describe(), what));
}

std::string_view type_name(Kind k) {
  switch (k) {
    case Kind::string:
    case Kind::enumeration:
    case Kind::hex: return "expected a string";
    case Kind::integer: return "expected an integer";
    case Kind::boolean: return "expected true or false";
    case Kind::array: return "expected an array";
    case Kind::object: return "expected an object";
  }
  return "wrong type";
}

bool has_type(Kind k, const Json& v) {
  switch (k) {
    case Kind::string:
    case Kind::enumeration:
    case Kind::hex: return v.is_string();
    case Kind::integer: return v.is_number_integer();
    case Kind::boolean: return v.is_boolean();
    case Kind::array: return v.is_array();
    case Kind::object: return v.is_object();
  }
  return false;
}

bool is_hex_digit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

Result<void> check_value(const Node& n, const Json& v, const Path& at);

Result<void> check_string(const Node& n, const std::string& s, const Path& at) {
  if (s.size() < n.min) {
    return refuse(ErrorCode::invalid_argument, at,
                  n.min == 1 ? std::string("empty") : fmt::format("shorter than {} bytes", n.min));
  }
  if (s.size() > n.max) {
    return refuse(ErrorCode::invalid_argument, at, fmt::format("longer than {} bytes", n.max));
  }
  if (n.check && !n.check(s)) {
    return refuse(ErrorCode::invalid_argument, at, fmt::format("must be {}", n.expected));
  }
  return {};
}

Result<void> check_hex(const Node& n, const std::string& s, const Path& at) {
  const bool digits = s.size() % 2 == 0 && std::all_of(s.begin(), s.end(), is_hex_digit);
  const std::size_t bytes = s.size() / 2;
  if (!digits || bytes < n.min || bytes > n.max) {
    return refuse(ErrorCode::invalid_argument, at,
                  n.min == n.max ? fmt::format("must be {} bytes of hex", n.min)
                                 : fmt::format("must be {}..{} bytes of hex", n.min, n.max));
  }
  return {};
}

Result<void> check_integer(const Node& n, const Json& v, const Path& at) {
  bool in_range;
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    in_range = n.imax >= 0 && u <= static_cast<std::uint64_t>(n.imax) &&
               (n.imin <= 0 || u >= static_cast<std::uint64_t>(n.imin));
  } else {
    const auto i = v.get<std::int64_t>();
    in_range = i >= n.imin && i <= n.imax;
  }
  if (!in_range) {
    return refuse(ErrorCode::invalid_argument, at,
                  fmt::format("must be an integer in {}..{}", n.imin, n.imax));
  }
  return {};
}

Result<void> check_array(const Node& n, const Json& v, const Path& at) {
  if (v.size() < n.min) {
    return refuse(ErrorCode::invalid_argument, at, fmt::format("fewer than {} elements", n.min));
  }
  if (v.size() > n.max) {
    return refuse(ErrorCode::invalid_argument, at, fmt::format("more than {} elements", n.max));
  }
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (auto r = check_value(*n.element, v[i], at.element(i)); !r) return r;
  }
  return {};
}

const JsonMember* find_member(const Node& n, std::string_view name) {
  for (const JsonMember& m : n.members) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

Result<void> check_object(const Node& n, const Json& v, const Path& at) {
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (find_member(n, it.key()) == nullptr) {
      return refuse(ErrorCode::bad_format, at,
                    fmt::format("unknown member {}", pki::describe_key(it.key())));
    }
  }
  for (const JsonMember& m : n.members) {
    const auto it = v.find(m.name);
    if (it == v.end()) {
      if (m.required) return refuse(ErrorCode::missing_argument, at.member(m.name), "missing");
      continue;
    }
    if (auto r = check_value(m.schema.node(), *it, at.member(m.name)); !r) return r;
  }
  return {};
}

Result<void> check_value(const Node& n, const Json& v, const Path& at) {
  if (!has_type(n.kind, v)) return refuse(ErrorCode::bad_format, at, type_name(n.kind));
  switch (n.kind) {
    case Kind::string: return check_string(n, v.get_ref<const std::string&>(), at);
    case Kind::enumeration: {
      const auto& s = v.get_ref<const std::string&>();
      if (std::find(n.allowed.begin(), n.allowed.end(), s) != n.allowed.end()) return {};
      return refuse(ErrorCode::invalid_argument, at,
                    fmt::format("must be one of {}", fmt::join(n.allowed, ", ")));
    }
    case Kind::hex: return check_hex(n, v.get_ref<const std::string&>(), at);
    case Kind::integer: return check_integer(n, v, at);
    case Kind::boolean: return {};
    case Kind::array: return check_array(n, v, at);
    case Kind::object: return check_object(n, v, at);
  }
  return {};
}

std::shared_ptr<Node> make_node(Kind k) {
  auto n = std::make_shared<Node>();
  n->kind = k;
  return n;
}

}  // namespace

JsonSchema JsonSchema::string(std::size_t max_length, std::size_t min_length) {
  auto n = make_node(Kind::string);
  n->min = min_length;
  n->max = max_length;
  return JsonSchema(std::move(n));
}

JsonSchema JsonSchema::string(std::size_t max_length, StringCheck check, std::string expected,
                              std::size_t min_length) {
  auto n = make_node(Kind::string);
  n->min = min_length;
  n->max = max_length;
  n->check = std::move(check);
  n->expected = std::move(expected);
  return JsonSchema(std::move(n));
}

JsonSchema JsonSchema::enumeration(std::vector<std::string> allowed) {
  auto n = make_node(Kind::enumeration);
  n->allowed = std::move(allowed);
  return JsonSchema(std::move(n));
}

JsonSchema JsonSchema::hex(std::size_t bytes) { return hex(bytes, bytes); }

JsonSchema JsonSchema::hex(std::size_t min_bytes, std::size_t max_bytes) {
  auto n = make_node(Kind::hex);
  n->min = min_bytes;
  n->max = max_bytes;
  return JsonSchema(std::move(n));
}

JsonSchema JsonSchema::integer(std::int64_t min, std::int64_t max) {
  auto n = make_node(Kind::integer);
  n->imin = min;
  n->imax = max;
  return JsonSchema(std::move(n));
}

JsonSchema JsonSchema::boolean() { return JsonSchema(make_node(Kind::boolean)); }

JsonSchema JsonSchema::array(JsonSchema element, std::size_t max_count, std::size_t min_count) {
  auto n = make_node(Kind::array);
  n->min = min_count;
  n->max = max_count;
  n->element = std::move(element.node_);
  return JsonSchema(std::move(n));
}

JsonSchema JsonSchema::object(std::vector<JsonMember> members) {
  auto n = make_node(Kind::object);
  n->members = std::move(members);
  return JsonSchema(std::move(n));
}

Result<void> JsonSchema::validate(const Json& value, std::string_view root) const {
  return check_value(*node_, value, Path{root, {}});
}

Result<Json> JsonSchema::parse(std::string_view text) const {
  auto j = parse_json_strict(text);
  if (!j) return j;
  if (node_->kind == Kind::object && !j->is_object()) {
    return fail(ErrorCode::bad_format, "body: not a JSON object");
  }
  if (auto r = validate(*j); !r) return std::unexpected(r.error());
  return j;
}

Result<Json> parse_json_strict(std::string_view text, std::string_view what) {
  if (text.empty()) return fail(ErrorCode::bad_format, fmt::format("{}: empty", what));
  std::vector<std::set<std::string>> keys;  // one set per open object
  bool duplicate = false, too_deep = false;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    using E = Json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth >= kMaxDepth) {
      too_deep = true;
    }
    if (event == E::object_start) keys.emplace_back();
    if (event == E::object_end && !keys.empty()) keys.pop_back();
    if (event == E::key && !keys.empty() && parsed.is_string() &&
        !keys.back().insert(parsed.get<std::string>()).second) {
      duplicate = true;
    }
    return true;
  };
  Json j = Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/false);
  if (j.is_discarded()) return fail(ErrorCode::bad_format, fmt::format("{}: not valid JSON", what));
  if (too_deep) return fail(ErrorCode::bad_format, fmt::format("{}: nested too deeply", what));
  if (duplicate) return fail(ErrorCode::bad_format, fmt::format("{}: a member is repeated", what));
  return j;
}

}  // namespace mcim::net
