#include "cli/output.h"

#include <nlohmann/json.hpp>
#include <ostream>

namespace mcim::cli {

void Fields::print(std::ostream& out, bool json) const {
  if (json) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    for (const auto& [name, value] : items_) j[name] = value;
    out << j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << '\n';
    return;
  }
  for (const auto& [name, value] : items_) out << name << ": " << value << '\n';
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
