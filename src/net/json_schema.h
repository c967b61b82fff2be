// Strict validation of JSON request bodies: a JsonSchema says which members an object has and
// what each holds (strings with a length bound and an optional check, hex of N bytes, integer
// ranges, booleans, enumerations, arrays with a count bound, nested objects). Unknown members,
// missing required ones, wrong types, nulls, duplicate keys and out-of-range values are refused
// with a message naming the field, never its value (a value may be a key):
//   bad_format       not JSON, not an object, duplicate key, too deep, wrong type, unknown member
//   missing_argument a required member is absent
//   invalid_argument a value breaks its bound (length, range, hex size, count, check, enum)
// All map to HTTP 400 (net/http_error.h). Schemas are immutable values, shareable by threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace mcim::net {

using Json = nlohmann::json;

struct JsonMember;

class JsonSchema {
 public:
  using StringCheck = std::function<bool(std::string_view)>;

  // A string of min..max bytes (UTF-8, as JSON requires).
  static JsonSchema string(std::size_t max_length, std::size_t min_length = 1);
  // The same, and `check` must accept it; `expected` completes "field x: must be ..." (e.g.
  // "an operator id").
  static JsonSchema string(std::size_t max_length, StringCheck check, std::string expected,
                           std::size_t min_length = 1);
  // One of the given strings.
  static JsonSchema enumeration(std::vector<std::string> allowed);
  // Hex digits (either case) of exactly `bytes` bytes, or of min..max bytes.
  static JsonSchema hex(std::size_t bytes);
  static JsonSchema hex(std::size_t min_bytes, std::size_t max_bytes);
  // An integer (no fraction, no exponent form) within min..max.
  static JsonSchema integer(std::int64_t min, std::int64_t max);
  static JsonSchema boolean();
  static JsonSchema array(JsonSchema element, std::size_t max_count, std::size_t min_count = 0);
  static JsonSchema object(std::vector<JsonMember> members);

  // `value` conforms; errors say "<root>: ..." for the value itself, "field a.b[2]: ..." below.
  Result<void> validate(const Json& value, std::string_view root = "body") const;

  // Parses `text` strictly (duplicate keys and nesting deeper than 32 refused) and validates it.
  Result<Json> parse(std::string_view text) const;

  struct Node;  // json_schema.cpp
  const Node& node() const { return *node_; }

 private:
  explicit JsonSchema(std::shared_ptr<const Node> node) : node_(std::move(node)) {}
  std::shared_ptr<const Node> node_;
};

struct JsonMember {
  std::string name;
  JsonSchema schema;
  bool required = true;
};

inline JsonMember required(std::string name, JsonSchema schema) {
  return JsonMember{std::move(name), std::move(schema), true};
}
inline JsonMember optional(std::string name, JsonSchema schema) {
  return JsonMember{std::move(name), std::move(schema), false};
}

// Parses JSON text with the strict rules above but without a schema: bad_format when it is not
// JSON, repeats a key in an object, or nests deeper than 32.
Result<Json> parse_json_strict(std::string_view text, std::string_view what = "body");

}  // namespace mcim::net
