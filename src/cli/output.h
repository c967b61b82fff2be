// Command output: an ordered list of named hex/text fields printed either as plain text
// ("name: value" lines) or as one JSON object with lowercase hex fields (--json). Errors go to
// stderr as text and, with --json, also as {"error":{"code","message"}} on stdout.
#pragma once

#include <iosfwd>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/hex.h"
#include "common/secure.h"

namespace mcim::cli {

class Fields {
 public:
  template <std::size_t N>
  Fields& hex(std::string name, const Bytes<N>& value) {
    return add(std::move(name), to_hex(value));
  }
  Fields& hex(std::string name, ByteView value) { return add(std::move(name), to_hex(value)); }
  Fields& add(std::string name, std::string value) {
    items_.emplace_back(std::move(name), std::move(value));
    return *this;
  }
  // A list of records (e.g. the credentials of a TRE): a JSON array of objects under `name`, or
  // one "name: key=value key=value" line per record in text.
  using Record = std::vector<std::pair<std::string, std::string>>;
  Fields& records(std::string name, std::vector<Record> rows) {
    lists_.emplace_back(std::move(name), std::move(rows));
    return *this;
  }
  const std::vector<std::pair<std::string, std::string>>& items() const { return items_; }

  // A command whose answer is a refusal with data to show (an AUTS, a list of failed checks)
  // prints its fields and exits with kExitRefused.
  Fields& refused() {
    refused_ = true;
    return *this;
  }
  bool is_refused() const { return refused_; }

  void print(std::ostream& out, bool json) const;

 private:
  std::vector<std::pair<std::string, std::string>> items_;
  std::vector<std::pair<std::string, std::vector<Record>>> lists_;
  bool refused_ = false;
};

// Exit codes of every mcim command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRefused = 1;   // the input was well-formed but a check failed
inline constexpr int kExitUsage = 2;     // bad input: malformed, missing or conflicting arguments
inline constexpr int kExitInternal = 3;  // a bug or a failing library call, never the input's fault

void print_error(std::ostream& out, std::ostream& err, const Error& e, bool json);

// A service's JSON answer as fields, in its order: strings as they are, anything else as JSON text.
Fields fields_of(const nlohmann::json& answer);

// missing_argument "<option>: required" when a required option was not given.
Result<void> require(const std::string& value, std::string_view option);

// A 16-byte secret (the RO's OP) as a file holds it: 32 hex digits, surrounding whitespace
// ignored; parse_hex_fixed's error naming `name` otherwise. `text` is the caller's wiped buffer.
Result<Secret<16>> parse_secret16_text(std::string_view text, std::string_view name);

}  // namespace mcim::cli
