#include "cli/operator_command.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "common/ascii.h"
#include "net/https_client.h"
#include "net/peer_call.h"
#include "net/tls.h"
#include "pki/openssl.h"
#include "pki/sealed.h"
#include "pki/verify.h"

namespace mcim::cli {
namespace {

using net::Json;

constexpr std::int64_t kMaxWaitS = 600;
constexpr std::chrono::milliseconds kPollEvery{200};

struct Args {
  std::string sho, trust, cert, key, device_id, imsi, instruction_id;
  std::int64_t wait_s = 0;
};

struct Staff {
  std::unique_ptr<net::HttpsClient> client;
  std::string base;  // {sho}/v1/operator/devices/{device_id}/instructions
};

// Every option is checked before anything is sent.
Result<Staff> staff_of(const Args& a) {
  for (const auto& [value, option] :
       {std::pair{&a.sho, "--sho"}, std::pair{&a.trust, "--trust"}, std::pair{&a.cert, "--cert"},
        std::pair{&a.key, "--key"}, std::pair{&a.device_id, "--device-id"}}) {
    if (auto r = require(*value, option); !r) return std::unexpected(r.error());
  }
  if (!a.sho.starts_with("https://")) {
    return fail(ErrorCode::invalid_argument, "--sho: an https:// URL");
  }
  if (!pki::valid_mcim_id(a.device_id)) {
    return fail(ErrorCode::invalid_argument, "--device-id: [A-Za-z0-9._:-]{1,64}");
  }
  if (a.wait_s < 0 || a.wait_s > kMaxWaitS) {
    return fail(ErrorCode::invalid_argument, fmt::format("--wait: 0..{} seconds", kMaxWaitS));
  }
  auto anchors = pki::TrustAnchors::from_file(a.trust);
  if (!anchors) return with_prefix(anchors.error(), "--trust");
  auto identity = net::load_tls_identity(a.cert, a.key);
  if (!identity) return with_prefix(identity.error(), "--cert, --key");
  net::HttpsClientOptions options;
  options.trust = std::make_shared<const pki::TrustAnchors>(std::move(*anchors));
  options.identity = std::move(*identity);
  auto client = net::HttpsClient::create(std::move(options));
  if (!client) return std::unexpected(client.error());
  return Staff{std::move(*client),
               net::base_url(a.sho) + "/v1/operator/devices/" + a.device_id + "/instructions"};
}

// The SHO's record of an instruction as fields; a list's credentials as records. An answer that
// is a refusal by the TRE is a refused command (exit 1) with its fields.
Fields fields_of_instruction(const Json& j) {
  Json plain = j;
  plain.erase("credentials");
  plain.erase("report");  // the signed text: --json users fetch it with the API
  Fields f = fields_of(plain);
  if (j.contains("credentials")) {
    std::vector<Fields::Record> rows;
    for (const Json& c : j["credentials"]) {
      rows.push_back({{"id", c.value("id", "")},
                      {"state", c.value("state", "")},
                      {"package_id", c.value("package_id", "")}});
    }
    f.records("credentials", std::move(rows));
  }
  if (j.value("status", "") == "answered" && j.value("outcome", "") != "ok") f.refused();
  return f;
}

Result<Json> get(Staff& s, const std::string& id) {
  return net::call_json(*s.client, "GET", s.base + "/" + id, nullptr,
                        {.peer = "sho", .ok_status = 200});
}

// Polls until the TRE's answer is at the SHO or --wait is over (then the record as it is).
Result<Json> wait_for_answer(Staff& s, Json record, std::int64_t wait_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_s);
  const std::string id = record.value("instruction_id", "");
  while (record.value("status", "") != "answered" && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(kPollEvery);
    auto r = get(s, id);
    if (!r) return r;
    record = std::move(*r);
  }
  return record;
}

Result<Fields> run_instruction(const Args& a, std::string_view action) {
  Json body{{"action", action}};
  if (!a.imsi.empty()) {
    if (action == "list") {
      return fail(ErrorCode::invalid_argument, "--imsi: a list names no credential");
    }
    if (a.imsi.size() < 6 || a.imsi.size() > 15 || !ascii_digits(a.imsi)) {
      return fail(ErrorCode::invalid_argument, "--imsi: 6-15 decimal digits");
    }
    body["credential"] = a.imsi;
  }
  auto staff = staff_of(a);
  if (!staff) return std::unexpected(staff.error());
  auto issued =
      net::call_json(*staff->client, "POST", staff->base, body, {.peer = "sho", .ok_status = 202});
  if (!issued) return std::unexpected(issued.error());
  auto record = wait_for_answer(*staff, std::move(*issued), a.wait_s);
  if (!record) return std::unexpected(record.error());
  return fields_of_instruction(*record);
}

Result<Fields> run_result(const Args& a) {
  if (auto r = require(a.instruction_id, "--instruction-id"); !r) return std::unexpected(r.error());
  if (!pki::valid_mcim_id(a.instruction_id)) {
    return fail(ErrorCode::invalid_argument, "--instruction-id: [A-Za-z0-9._:-]{1,64}");
  }
  auto staff = staff_of(a);
  if (!staff) return std::unexpected(staff.error());
  auto record = get(*staff, a.instruction_id);
  if (!record) return std::unexpected(record.error());
  auto answered = wait_for_answer(*staff, std::move(*record), a.wait_s);
  if (!answered) return std::unexpected(answered.error());
  return fields_of_instruction(*answered);
}

CLI::App* with_staff(CLI::App* cmd, Args& a) {
  cmd->add_option("--sho", a.sho, "the home operator's https URL");
  cmd->add_option("--trust", a.trust, "PEM trust anchors for the SHO's certificate");
  cmd->add_option("--cert", a.cert, "the operator's TLS client certificate (PEM)");
  cmd->add_option("--key", a.key, "its private key (PEM)");
  cmd->add_option("--device-id", a.device_id, "the device");
  cmd->add_option("--wait", a.wait_s,
                  "seconds to wait for the TRE's signed answer (default 0: print the queued "
                  "instruction)");
  return cmd;
}

}  // namespace

void register_operator(CLI::App& app, Result<Fields>* result) {
  auto* op = app.add_subcommand("operator", "the home operator's staff (F9)");
  op->require_subcommand(1);
  auto* mcim = op->add_subcommand(
      "mcim", "remote management of the operator's MCIMs on a device, through the RO's DPF");
  mcim->require_subcommand(1);
  auto args = std::make_shared<Args>();
  Args& a = *args;
  struct Command {
    const char* name;
    const char* help;
  };
  const Command commands[] = {
      {"list", "the operator's MCIMs on the device and their states, as its TRE answers"},
      {"activate", "activate an Installed MCIM"},
      {"block", "block an Activated MCIM"},
      {"unblock", "unblock a Blocked MCIM"},
      {"retire", "retire an MCIM (it never authenticates again)"},
      {"delete", "delete an MCIM (keys wiped, a tombstone kept)"},
  };
  for (const Command& c : commands) {
    auto* cmd = with_staff(mcim->add_subcommand(c.name, c.help), a);
    if (std::string_view(c.name) != "list") {
      cmd->add_option("--imsi", a.imsi, "the MCIM (default: the device's subscription here)");
    }
    const std::string action = c.name;
    cmd->callback([args, result, action] { *result = run_instruction(*args, action); });
  }
  auto* res = with_staff(
      mcim->add_subcommand("result", "an instruction's state at the SHO and the TRE's answer"), a);
  res->add_option("--instruction-id", a.instruction_id, "as the instruction's command printed it");
  res->callback([args, result] { *result = run_result(*args); });
}

}  // namespace mcim::cli
