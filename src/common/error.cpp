#include "common/error.h"

namespace mcim {

std::string_view to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::missing_argument: return "missing_argument";
    case ErrorCode::conflicting_arguments: return "conflicting_arguments";
    case ErrorCode::mac_mismatch: return "mac_mismatch";
    case ErrorCode::sqn_out_of_range: return "sqn_out_of_range";
    case ErrorCode::sqn_exhausted: return "sqn_exhausted";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::internal: return "internal";
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::io_error: return "io_error";
    case ErrorCode::bad_format: return "bad_format";
    case ErrorCode::already_exists: return "already_exists";
    case ErrorCode::chain_invalid: return "chain_invalid";
    case ErrorCode::cert_revoked: return "cert_revoked";
    case ErrorCode::cert_unknown: return "cert_unknown";
    case ErrorCode::cert_expired: return "cert_expired";
    case ErrorCode::signature_invalid: return "signature_invalid";
    case ErrorCode::nonce_mismatch: return "nonce_mismatch";
    case ErrorCode::stale_report: return "stale_report";
    case ErrorCode::measurement_mismatch: return "measurement_mismatch";
    case ErrorCode::package_tampered: return "package_tampered";
    case ErrorCode::wrong_recipient: return "wrong_recipient";
    case ErrorCode::package_expired: return "package_expired";
    case ErrorCode::replayed_package: return "replayed_package";
    case ErrorCode::ocsp_invalid: return "ocsp_invalid";
    case ErrorCode::store_tampered: return "store_tampered";
    case ErrorCode::rollback_detected: return "rollback_detected";
    case ErrorCode::lockdown: return "lockdown";
    case ErrorCode::transition_refused: return "transition_refused";
    case ErrorCode::access_denied: return "access_denied";
    case ErrorCode::integrity_failed: return "integrity_failed";
    case ErrorCode::credential_unusable: return "credential_unusable";
    case ErrorCode::replayed_instruction: return "replayed_instruction";
    case ErrorCode::busy: return "busy";
    case ErrorCode::pcid_expired: return "pcid_expired";
    case ErrorCode::unauthenticated: return "unauthenticated";
    case ErrorCode::registration_expired: return "registration_expired";
  }
  return "internal";
}

std::optional<ErrorCode> error_code_from_wire(std::string_view name) {
  // Linear over ~40 names: called once per refused peer answer, never on a hot path.
  for (int i = 0; i <= static_cast<int>(kLastErrorCode); ++i) {
    const auto code = static_cast<ErrorCode>(i);
    if (to_string(code) == name) return code;
  }
  return std::nullopt;
}

ErrorKind kind_of(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
    case ErrorCode::missing_argument:
    case ErrorCode::conflicting_arguments:
    case ErrorCode::unsupported:
    case ErrorCode::not_found:
    case ErrorCode::io_error:
    case ErrorCode::bad_format:
    case ErrorCode::already_exists:
      return ErrorKind::bad_input;
    case ErrorCode::internal:
      return ErrorKind::internal;
    default:
      return ErrorKind::refused;
  }
}

}  // namespace mcim
