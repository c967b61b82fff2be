// JsonSchema: every kind of member, nested paths in messages, the three error codes, strict
// parsing (duplicates, depth), and messages that never contain the offending value.
#include "net/json_schema.h"

#include <gtest/gtest.h>

#include "pki/package.h"

namespace mcim::net {
namespace {

JsonSchema device_schema() {
  return JsonSchema::object({
      required("device_id", JsonSchema::string(64, pki::valid_mcim_id, "an mcim id")),
      required("pin_hash", JsonSchema::hex(32)),
      optional("k", JsonSchema::hex(16, 32)),
      required("algorithm", JsonSchema::enumeration({"milenage", "tuak"})),
      required("active", JsonSchema::boolean()),
      required("offset", JsonSchema::integer(-5, 5)),
      optional("tags", JsonSchema::array(JsonSchema::string(8), 3)),
      optional("vectors", JsonSchema::array(
                              JsonSchema::object({required("rand", JsonSchema::hex(16))}), 4, 1)),
  });
}

Json good() {
  return {{"device_id", "dev-0001"},
          {"pin_hash", std::string(64, 'a')},
          {"algorithm", "milenage"},
          {"active", true},
          {"offset", 0}};
}

Error error_for(const Json& j) {
  auto r = device_schema().validate(j);
  EXPECT_FALSE(r.has_value()) << j.dump();
  return r ? Error(ErrorCode::internal, "accepted") : r.error();
}

TEST(JsonSchema, AcceptsAConformingDocument) {
  Json j = good();
  EXPECT_TRUE(device_schema().validate(j).has_value());
  j["k"] = std::string(64, 'F');  // 32 bytes, uppercase hex allowed
  j["tags"] = {"a", "b"};
  j["vectors"] = {{{"rand", std::string(32, '0')}}};
  j["offset"] = -5;
  EXPECT_TRUE(device_schema().validate(j).has_value());
}

TEST(JsonSchema, ErrorsNameTheFieldWithTheRightCode) {
  struct Case {
    std::string what;
    Json doc;
    ErrorCode code;
    std::string message;
  };
  auto with = [](const char* key, Json v) {
    Json j = good();
    j[key] = std::move(v);
    return j;
  };
  auto without = [](const char* key) {
    Json j = good();
    j.erase(key);
    return j;
  };
  const std::vector<Case> cases = {
      {"not an object", Json::array(), ErrorCode::bad_format, "body: expected an object"},
      {"unknown", with("SECRET", 1), ErrorCode::bad_format, "body: unknown member \"SECRET\""},
      {"missing", without("active"), ErrorCode::missing_argument, "field active: missing"},
      {"string type", with("device_id", 5), ErrorCode::bad_format,
       "field device_id: expected a string"},
      {"bool type", with("active", "true"), ErrorCode::bad_format,
       "field active: expected true or false"},
      {"int type", with("offset", 1.0), ErrorCode::bad_format, "field offset: expected an integer"},
      {"null", with("offset", nullptr), ErrorCode::bad_format, "field offset: expected an integer"},
      {"check", with("device_id", "has space"), ErrorCode::invalid_argument,
       "field device_id: must be an mcim id"},
      {"empty", with("device_id", ""), ErrorCode::invalid_argument, "field device_id: empty"},
      {"too long", with("device_id", std::string(65, 'x')), ErrorCode::invalid_argument,
       "field device_id: longer than 64 bytes"},
      {"hex size", with("pin_hash", "abcd"), ErrorCode::invalid_argument,
       "field pin_hash: must be 32 bytes of hex"},
      {"hex range", with("k", std::string(30, 'a')), ErrorCode::invalid_argument,
       "field k: must be 16..32 bytes of hex"},
      {"odd hex", with("pin_hash", std::string(63, 'a')), ErrorCode::invalid_argument,
       "field pin_hash: must be 32 bytes of hex"},
      {"enum", with("algorithm", "SECRET"), ErrorCode::invalid_argument,
       "field algorithm: must be one of milenage, tuak"},
      {"below", with("offset", -6), ErrorCode::invalid_argument,
       "field offset: must be an integer in -5..5"},
      {"huge", with("offset", std::uint64_t{1} << 63), ErrorCode::invalid_argument,
       "field offset: must be an integer in -5..5"},
      {"array count", with("tags", {"a", "b", "c", "d"}), ErrorCode::invalid_argument,
       "field tags: more than 3 elements"},
      {"array min", with("vectors", Json::array()), ErrorCode::invalid_argument,
       "field vectors: fewer than 1 elements"},
      {"element", with("tags", {"a", "SECRETSECRET"}), ErrorCode::invalid_argument,
       "field tags[1]: longer than 8 bytes"},
      {"nested", with("vectors", {{{"rand", "00"}}}), ErrorCode::invalid_argument,
       "field vectors[0].rand: must be 16 bytes of hex"},
      {"nested unknown", with("vectors", {{{"rand", std::string(32, '0')}, {"x", 1}}}),
       ErrorCode::bad_format, "field vectors[0]: unknown member \"x\""},
      {"nested missing", with("vectors", {Json::object()}), ErrorCode::missing_argument,
       "field vectors[0].rand: missing"},
  };
  for (const Case& c : cases) {
    const Error e = error_for(c.doc);
    EXPECT_EQ(e.code, c.code) << c.what << ": " << e.message;
    EXPECT_EQ(e.message, c.message) << c.what;
    if (c.what != "unknown") {
      EXPECT_EQ(e.message.find("SECRET"), std::string::npos) << c.what;
    }
  }
}

TEST(JsonSchema, UnprintableUnknownMemberNamesAreNotRepeated) {
  Json j = good();
  j[std::string(100, 'k')] = 1;
  EXPECT_EQ(error_for(j).message, "body: unknown member (unprintable)");
}

TEST(JsonSchema, ParseIsStrict) {
  const JsonSchema s = JsonSchema::object({required("a", JsonSchema::integer(0, 9))});
  EXPECT_TRUE(s.parse(R"({"a":1})").has_value());
  EXPECT_TRUE(s.parse(" {\"a\" : 1}\n").has_value());
  struct Case {
    std::string text, message;
  };
  const std::vector<Case> cases = {
      {"", "body: empty"},
      {"{", "body: not valid JSON"},
      {R"({"a":1} x)", "body: not valid JSON"},
      {"[1]", "body: not a JSON object"},
      {"\"s\"", "body: not a JSON object"},
      {R"({"a":1,"a":1})", "body: a member is repeated"},
      {"{\"a\":\"\xff\"}", "body: not valid JSON"},
      {"NaN", "body: not valid JSON"},
  };
  for (const Case& c : cases) {
    const auto r = s.parse(c.text);
    ASSERT_FALSE(r.has_value()) << c.text;
    EXPECT_EQ(r.error().code, ErrorCode::bad_format) << c.text;
    EXPECT_EQ(r.error().message, c.message) << c.text;
  }
}

TEST(JsonSchema, DuplicatesAndDepthAreFoundAtAnyLevel) {
  EXPECT_EQ(parse_json_strict(R"({"a":{"b":1,"b":2}})").error().message,
            "body: a member is repeated");
  EXPECT_TRUE(parse_json_strict(R"({"a":{"b":1},"c":{"b":2}})").has_value());
  EXPECT_TRUE(parse_json_strict(R"([{"b":1},{"b":1}])").has_value());
  const std::string deep = std::string(40, '[') + std::string(40, ']');
  EXPECT_EQ(parse_json_strict(deep).error().message, "body: nested too deeply");
  const std::string limit = std::string(32, '[') + std::string(32, ']');
  EXPECT_TRUE(parse_json_strict(limit).has_value());
  const std::string over = std::string(33, '[') + std::string(33, ']');
  EXPECT_FALSE(parse_json_strict(over).has_value());
}

TEST(JsonSchema, RootOfOtherKindsAndCustomRootName) {
  const JsonSchema list = JsonSchema::array(JsonSchema::integer(0, 1), 2);
  EXPECT_TRUE(list.validate(Json::parse("[0,1]")).has_value());
  EXPECT_EQ(list.validate(Json::parse("[0,2]"), "response").error().message,
            "field [1]: must be an integer in 0..1");
  EXPECT_EQ(list.validate(Json::parse("{}"), "response").error().message,
            "response: expected an array");
}

}  // namespace
}  // namespace mcim::net
