#include "cli/app.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <iostream>
#include <sstream>

#include "cli/aka_command.h"
#include "cli/aka_demo.h"
#include "cli/demo_command.h"
#include "cli/device_command.h"
#include "cli/operator_command.h"
#include "cli/output.h"
#include "cli/pki_command.h"
#include "cli/serve_command.h"
#include "cli/subscriber_command.h"
#include "cli/supplier_command.h"
#include "cli/up_command.h"

namespace mcim::cli {
namespace {

int exit_code_for(ErrorCode code) {
  switch (kind_of(code)) {
    case ErrorKind::bad_input: return kExitUsage;
    case ErrorKind::refused: return kExitRefused;
    case ErrorKind::internal: return kExitInternal;
  }
  return kExitInternal;
}

// A word we may repeat in a message: an option name, or a short word that cannot be a hex key
// or a numeric PIN typed in the wrong place.
bool echo_safe(const std::string& word) {
  if (word.rfind("-", 0) == 0) return true;
  const bool all_hex = std::all_of(word.begin(), word.end(), [](char c) {
    return std::isxdigit(static_cast<unsigned char>(c)) != 0;
  });
  return !all_hex && word.size() <= 24;
}

// CLI11 quotes unexpected arguments back; one of them may be a key typed after a misspelt
// option, so only option names and words that cannot be secrets are repeated.
std::string describe_extras(const std::vector<std::string>& extras) {
  std::string names;
  std::size_t values = 0;
  for (const auto& e : extras) {
    if (echo_safe(e)) {
      names += names.empty() ? "" : " ";
      names += e.substr(0, e.find('='));
    } else {
      ++values;
    }
  }
  std::ostringstream msg;
  msg << "unexpected arguments";
  if (!names.empty()) msg << ": " << names;
  if (values != 0) msg << (names.empty() ? ": " : " and ") << values << " unexpected value(s)";
  msg << " (see --help)";
  return msg.str();
}

int report_parse_error(const CLI::App& app, const CLI::ParseError& e, bool json, std::ostream& out,
                       std::ostream& err) {
  std::string message = e.what();
  if (const auto extras = app.remaining(true); !extras.empty()) {
    message += "; " + describe_extras(extras);
  }
  print_error(out, err, Error(ErrorCode::invalid_argument, message), json);
  return kExitUsage;
}

}  // namespace

int run(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"mcim: remote provisioning of M2M subscription credentials (3GPP TR 33.812)",
               "mcim"};
  app.require_subcommand(1);
  // Looked up before parsing, so that a parse error is reported as JSON too.
  bool json = std::any_of(argv + 1, argv + argc,
                          [](const char* a) { return std::string_view(a) == "--json"; });
  app.add_flag("--json", json, "print one JSON object instead of text")->configurable(false);
  // --json is accepted anywhere on the command line, after the subcommand too.
  app.fallthrough();

  Result<Fields> result = fail(ErrorCode::internal, "no command ran");
  register_aka(app, &result);
  register_pki(app, &result);
  register_supplier(app, &result);
  register_device(app, &result);
  register_subscriber(app, &result);
  register_operator(app, &result);
  register_serve(app, &result);
  register_up(app, &result, out);
  int demo_exit = -1;  // set when a demo ran to its report, which it printed itself
  register_aka_demo(*app.get_subcommand("aka"), json, &demo_exit, out, err);
  register_demo(app, json, &demo_exit, &result, out, err);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    out << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp& e) {
    out << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::ExtrasError& e) {
    print_error(out, err, Error(ErrorCode::invalid_argument, describe_extras(app.remaining())),
                json);
    return kExitUsage;
  } catch (const CLI::ParseError& e) {
    return report_parse_error(app, e, json, out, err);
  } catch (const std::exception& e) {
    // A bug, not bad input: say so plainly (the text is a library's, never a value we hold).
    print_error(out, err, Error(ErrorCode::internal, std::string("internal error: ") + e.what()),
                json);
    return kExitInternal;
  }
  if (demo_exit >= 0) return demo_exit;

  if (!result) {
    print_error(out, err, result.error(), json);
    return exit_code_for(result.error().code);
  }
  result->print(out, json);
  return result->is_refused() ? kExitRefused : kExitOk;
}

}  // namespace mcim::cli
