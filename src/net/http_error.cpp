#include "net/http_error.h"

#include <fmt/format.h>

namespace mcim::net {

// No default: a new ErrorCode must be given its status here (and in docs/protocol.md).
int http_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
    case ErrorCode::missing_argument:
    case ErrorCode::conflicting_arguments:
    case ErrorCode::unsupported:
    case ErrorCode::bad_format: return 400;
    case ErrorCode::unauthenticated: return 401;
    case ErrorCode::access_denied: return 403;
    case ErrorCode::not_found: return 404;
    case ErrorCode::already_exists:
    case ErrorCode::sqn_out_of_range:
    case ErrorCode::sqn_exhausted:
    case ErrorCode::replayed_package:
    case ErrorCode::replayed_instruction:
    case ErrorCode::store_tampered:
    case ErrorCode::rollback_detected:
    case ErrorCode::lockdown:
    case ErrorCode::transition_refused:
    case ErrorCode::integrity_failed:
    case ErrorCode::credential_unusable:
    case ErrorCode::pcid_expired:
    case ErrorCode::registration_expired: return 409;
    case ErrorCode::mac_mismatch:
    case ErrorCode::chain_invalid:
    case ErrorCode::cert_revoked:
    case ErrorCode::cert_unknown:
    case ErrorCode::cert_expired:
    case ErrorCode::signature_invalid:
    case ErrorCode::nonce_mismatch:
    case ErrorCode::stale_report:
    case ErrorCode::measurement_mismatch:
    case ErrorCode::package_tampered:
    case ErrorCode::wrong_recipient:
    case ErrorCode::package_expired:
    case ErrorCode::ocsp_invalid: return 422;
    case ErrorCode::io_error:
    case ErrorCode::internal: return 500;
    case ErrorCode::busy: return 503;
  }
  return 500;
}

std::string error_body(std::string_view code, std::string_view message) {
  const Json body = {{"error", {{"code", code}, {"message", message}}}};
  return body.dump(-1, ' ', false, Json::error_handler_t::replace);
}

HttpResponse error_response(int status, std::string_view code, std::string_view message) {
  HttpResponse r;
  r.status = status;
  r.content_type = std::string(kJsonContentType);
  r.body = error_body(code, message);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

HttpResponse error_response(const Error& e) {
  const int status = http_status(e.code);
  HttpResponse r =
      error_response(status, e.wire_code(), status >= 500 ? "internal error" : e.message);
  if (e.code == ErrorCode::busy) {
    r.body = error_body(e.wire_code(), "busy, retry later");
    r.headers.emplace_back("Retry-After", "1");
  }
  return r;
}

HttpResponse json_response(int status, const Json& body) {
  HttpResponse r;
  r.status = status;
  r.content_type = std::string(kJsonContentType);
  r.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

HttpResponse respond(const Result<Json>& result, int ok_status) {
  return result ? json_response(ok_status, *result) : error_response(result.error());
}

Error error_from_response(const HttpResponse& response, std::string_view what) {
  const auto body = Json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    const Json& e = body["error"];
    const auto* code = e.contains("code") ? e["code"].get_ptr<const std::string*>() : nullptr;
    const auto* message =
        e.contains("message") ? e["message"].get_ptr<const std::string*>() : nullptr;
    if (code != nullptr && message != nullptr) {
      if (const auto known = error_code_from_wire(*code)) {
        return Error(*known, fmt::format("{}: {}", what, *message));
      }
      return Error(ErrorCode::io_error,
                   fmt::format("{}: HTTP {} {}: {}", what, response.status, *code, *message));
    }
  }
  return Error(ErrorCode::io_error, fmt::format("{}: HTTP {}", what, response.status));
}

}  // namespace mcim::net
