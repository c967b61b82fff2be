#include "cli/output.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <ostream>

#include "common/ascii.h"

namespace mcim::cli {

void Fields::print(std::ostream& out, bool json) const {
  if (json) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    for (const auto& [name, value] : items_) j[name] = value;
    for (const auto& [name, rows] : lists_) {
      auto arr = nlohmann::ordered_json::array();
      for (const auto& row : rows) {
        nlohmann::ordered_json o = nlohmann::ordered_json::object();
        for (const auto& [k, v] : row) o[k] = v;
        arr.push_back(std::move(o));
      }
      j[name] = std::move(arr);
    }
    out << j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << '\n';
    return;
  }
  for (const auto& [name, value] : items_) out << name << ": " << value << '\n';
  for (const auto& [name, rows] : lists_) {
    for (const auto& row : rows) {
      out << name << ':';
      for (const auto& [k, v] : row) out << ' ' << k << '=' << v;
      out << '\n';
    }
  }
}

Result<Secret<16>> parse_secret16_text(std::string_view text, std::string_view name) {
  text = trim_ascii_space(text);
  auto parsed = parse_hex_fixed<16>(text, name);
  if (!parsed) return std::unexpected(parsed.error());
  Secret<16> secret(*parsed);
  secure_wipe(*parsed);
  return secret;
}

Fields fields_of(const nlohmann::json& answer) {
  Fields f;
  for (const auto& [key, value] : answer.items()) {
    f.add(key, value.is_string() ? value.get<std::string>() : value.dump());
  }
  return f;
}

Result<void> require(const std::string& value, std::string_view option) {
  if (value.empty()) return fail(ErrorCode::missing_argument, std::string(option) + ": required");
  return {};
}

void print_error(std::ostream& out, std::ostream& err, const Error& e, bool json) {
  err << "mcim: error: " << e.message << '\n';
  if (json) {
    nlohmann::ordered_json j;
    j["error"]["code"] = std::string(e.wire_code());
    j["error"]["message"] = e.message;
    out << j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << '\n';
  }
}

}  // namespace mcim::cli
