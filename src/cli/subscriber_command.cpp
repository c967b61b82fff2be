#include "cli/subscriber_command.h"

#include <fmt/format.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/ascii.h"
#include "common/file.h"
#include "common/secure.h"
#include "net/https_client.h"
#include "net/peer_call.h"
#include "pki/openssl.h"
#include "pki/sealed.h"
#include "pki/verify.h"

namespace mcim::cli {
namespace {

using net::Json;

struct Args {
  std::string sho, trust, token_file, device_id, pcid, pin, pin_file, platform_cert;
  std::string to;                     // revert: the operator the device moves to
  bool status = false;                // revert: read the revert's state instead of ordering one
  std::int64_t nonce_lifetime_s = 0;  // 0: the SHO's
  std::int64_t window_s = 3600;
};

struct Owner {
  std::unique_ptr<net::HttpsClient> client;
  std::string sho;  // base URL
  net::Headers bearer;
};

Result<Owner> owner_of(const Args& a) {
  if (auto r = require(a.sho, "--sho"); !r) return std::unexpected(r.error());
  if (auto r = require(a.trust, "--trust"); !r) return std::unexpected(r.error());
  if (auto r = require(a.token_file, "--token-file"); !r) return std::unexpected(r.error());
  if (auto r = require(a.device_id, "--device-id"); !r) return std::unexpected(r.error());
  // The id goes into the request's path: the SHO's own rule, checked before anything is sent.
  if (!pki::valid_mcim_id(a.device_id)) {
    return fail(ErrorCode::invalid_argument, "--device-id: an id ([A-Za-z0-9._:-]{1,64})");
  }
  if (!a.sho.starts_with("https://")) {
    return fail(ErrorCode::invalid_argument, "--sho: an https:// URL");
  }
  auto anchors = pki::TrustAnchors::from_file(a.trust);
  if (!anchors) return with_prefix(anchors.error(), "--trust");
  auto token = read_text_file(a.token_file);
  if (!token) return with_prefix(token.error(), "--token-file");
  const std::string_view t = trim_ascii_space(*token);
  if (t.empty() || t.size() > 512 || t.find_first_of(" \t\r\n\"\\") != std::string_view::npos) {
    secure_wipe(token->data(), token->size());
    return fail(ErrorCode::invalid_argument, "--token-file: not a bearer token");
  }
  Owner o;
  o.bearer = {{"Authorization", "Bearer " + std::string(t)}};
  secure_wipe(token->data(), token->size());
  net::HttpsClientOptions options;
  options.trust = std::make_shared<const pki::TrustAnchors>(std::move(*anchors));
  auto client = net::HttpsClient::create(std::move(options));
  if (!client) return std::unexpected(client.error());
  o.client = std::move(*client);
  o.sho = net::base_url(a.sho);
  return o;
}

Result<Json> call(Owner& o, std::string_view method, const std::string& path, const Json& body,
                  int ok_status) {
  return net::call_json(*o.client, method, o.sho + path, body,
                        {.peer = "sho", .ok_status = ok_status, .headers = o.bearer});
}

// The PIN from --pin or --pin-file (one of them), in a buffer wiped by the caller.
Result<std::string> pin_of(const Args& a) {
  if (!a.pin.empty() && !a.pin_file.empty()) {
    return fail(ErrorCode::conflicting_arguments, "--pin, --pin-file: give one of them, not both");
  }
  if (a.pin.empty() && a.pin_file.empty()) {
    return fail(ErrorCode::missing_argument,
                "--pin-file or --pin: required (the device's bootstrap PIN, from its label)");
  }
  std::string pin;
  if (!a.pin_file.empty()) {
    auto text = read_text_file(a.pin_file);
    if (!text) return with_prefix(text.error(), "--pin-file");
    pin = std::string(trim_ascii_space(*text));
    secure_wipe(text->data(), text->size());
  } else {
    pin = a.pin;
  }
  if (pin.size() < 4 || pin.size() > 16 || !ascii_digits(pin)) {
    secure_wipe(pin.data(), pin.size());
    return fail(ErrorCode::invalid_argument,
                std::string(a.pin_file.empty() ? "--pin" : "--pin-file") + ": 4-16 decimal digits");
  }
  return pin;
}

// F1, or with `change` F4: the same registration, at the SHO the device moves to while it runs
// on another operator's MCIM.
Result<Fields> run_register(const Args& a, bool change) {
  if (auto r = require(a.pcid, "--pcid"); !r) return std::unexpected(r.error());
  if (auto r = require(a.platform_cert, "--platform-cert"); !r) return std::unexpected(r.error());
  if (a.nonce_lifetime_s < 0) {
    return fail(ErrorCode::invalid_argument, "--nonce-lifetime: a positive number of seconds");
  }
  auto pem = read_text_file(a.platform_cert);
  if (!pem) return with_prefix(pem.error(), "--platform-cert");
  // Parsed here so that a wrong file is named before anything is sent.
  auto cert = pki::parse_certificate(
      ByteView(reinterpret_cast<const std::uint8_t*>(pem->data()), pem->size()), "--platform-cert");
  if (!cert) return std::unexpected(cert.error());
  auto pin = pin_of(a);
  if (!pin) return std::unexpected(pin.error());
  auto owner = owner_of(a);
  if (!owner) {
    secure_wipe(pin->data(), pin->size());
    return std::unexpected(owner.error());
  }
  Json body{{"device_id", a.device_id}, {"pcid", a.pcid}, {"pin", *pin}, {"platform_cert", *pem}};
  secure_wipe(pin->data(), pin->size());
  if (a.nonce_lifetime_s > 0) body["nonce_lifetime_s"] = a.nonce_lifetime_s;
  if (change) body["change"] = true;
  auto r = call(*owner, "POST", "/v1/subscribers", body, 201);
  // nlohmann keeps the PIN in a std::string of its own: overwrite it before the body is freed.
  std::string& sent = body["pin"].get_ref<std::string&>();
  secure_wipe(sent.data(), sent.size());
  if (!r) return std::unexpected(r.error());
  return fields_of(*r);
}

Result<Fields> run_status(const Args& a) {
  auto owner = owner_of(a);
  if (!owner) return std::unexpected(owner.error());
  auto r = call(*owner, "GET", "/v1/subscribers/" + a.device_id, nullptr, 200);
  if (!r) return std::unexpected(r.error());
  return fields_of(*r);
}

Result<Fields> run_activate(const Args& a) {
  if (a.window_s < 1) {
    return fail(ErrorCode::invalid_argument, "--window: a positive number of seconds");
  }
  auto owner = owner_of(a);
  if (!owner) return std::unexpected(owner.error());
  auto r = call(*owner, "POST", "/v1/subscribers/" + a.device_id + "/activation",
                Json{{"window_s", a.window_s}}, 200);
  if (!r) return std::unexpected(r.error());
  return fields_of(*r);
}

// F4 at the SHO the device moves to: starts again the validation of an operator change whose
// start failed (the subscriber left `registered`), as the change order did.
Result<Fields> run_retry_validation(const Args& a) {
  auto owner = owner_of(a);
  if (!owner) return std::unexpected(owner.error());
  auto r =
      call(*owner, "POST", "/v1/subscribers/" + a.device_id + "/validation", Json::object(), 200);
  if (!r) return std::unexpected(r.error());
  return fields_of(*r);
}

// F5 at the old SHO: it deletes its MCIM, then hands the PCID's registration to --to.
Result<Fields> run_revert(const Args& a) {
  if (a.status && !a.to.empty()) {
    return fail(ErrorCode::conflicting_arguments, "--to, --status: give one of them, not both");
  }
  if (!a.status) {
    if (auto r = require(a.to, "--to"); !r) return std::unexpected(r.error());
    if (!pki::valid_mcim_id(a.to)) {
      return fail(ErrorCode::invalid_argument, "--to: an operator id ([A-Za-z0-9._:-]{1,64})");
    }
  }
  auto owner = owner_of(a);
  if (!owner) return std::unexpected(owner.error());
  const std::string path = "/v1/subscribers/" + a.device_id + "/revert";
  auto r = a.status ? call(*owner, "GET", path, nullptr, 200)
                    : call(*owner, "POST", path, Json{{"to", a.to}}, 202);
  if (!r) return std::unexpected(r.error());
  return fields_of(*r);
}

CLI::App* with_owner(CLI::App* cmd, Args& a) {
  cmd->add_option("--sho", a.sho, "the home operator's https URL");
  cmd->add_option("--trust", a.trust, "PEM trust anchors for the SHO's certificate");
  cmd->add_option("--token-file", a.token_file, "a file holding the owner's bearer token");
  cmd->add_option("--device-id", a.device_id, "the device (as on its label)");
  return cmd;
}

}  // namespace

void register_subscriber(CLI::App& app, Result<Fields>* result) {
  auto* sub =
      app.add_subcommand("subscriber", "the owner's client of the home operator (F1, F4, F5, F7)");
  sub->require_subcommand(1);
  auto args = std::make_shared<Args>();
  Args& a = *args;

  // register and change-operator take the same options.
  auto with_registration = [&a](CLI::App* cmd) {
    with_owner(cmd, a);
    cmd->add_option("--pcid", a.pcid, "the device's provisional connectivity id (its label)");
    cmd->add_option("--platform-cert", a.platform_cert, "the device's platform certificate (PEM)");
    cmd->add_option("--pin-file", a.pin_file, "a file holding the bootstrap PIN (its label)");
    cmd->add_option("--pin", a.pin,
                    "the bootstrap PIN (visible to other users: prefer --pin-file)");
    cmd->add_option("--nonce-lifetime", a.nonce_lifetime_s,
                    "seconds the registration stays open (default: the SHO's)");
    return cmd;
  };
  auto* reg = with_registration(sub->add_subcommand(
      "register",
      "register a device at the SHO (F1): prints its IMSI and the registration nonce to give the "
      "device"));
  reg->callback([args, result] { *result = run_register(*args, false); });

  auto* change = with_registration(sub->add_subcommand(
      "change-operator",
      "at the SHO the device moves to, register a device that runs on another operator's MCIM "
      "(F4): its validation starts at once; prints what register prints"));
  change->callback([args, result] { *result = run_register(*args, true); });

  auto* retry = with_owner(
      sub->add_subcommand("retry-validation",
                          "at the SHO the device moves to, start again the validation of an "
                          "operator change that did not start (F4; the subscriber is left "
                          "registered)"),
      a);
  retry->callback([args, result] { *result = run_retry_validation(*args); });

  auto* status = with_owner(sub->add_subcommand("status", "the subscriber's state at the SHO"), a);
  status->callback([args, result] { *result = run_status(*args); });

  auto* activate = with_owner(
      sub->add_subcommand("activate", "announce the device's switch-on (F7): its PCID may attach"),
      a);
  activate->add_option("--window", a.window_s, "seconds the PCID may attach (default 3600)");
  activate->callback([args, result] { *result = run_activate(*args); });

  auto* revert = with_owner(
      sub->add_subcommand("revert",
                          "at the current SHO, revert the device to pristine and hand its PCID to "
                          "another operator (F5); then register it there"),
      a);
  revert->add_option("--to", a.to, "the operator id the device moves to");
  revert->add_flag("--status", a.status, "print the state of the latest revert instead");
  revert->callback([args, result] { *result = run_revert(*args); });
}

}  // namespace mcim::cli
