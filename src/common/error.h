// mcim::Error, the one error type of the project, and Result<T> = std::expected<T, Error>.
// Every refusal carries a documented code (its wire form is what services and the CLI's --json
// print) and a human message. Messages never contain secret material: callers name the argument
// or the check that failed, never its value. Thread-compatible value types.
#pragma once

#include <fmt/format.h>

#include <expected>
#include <optional>
#include <string>
#include <string_view>

namespace mcim {

enum class ErrorCode {
  invalid_argument,  // a value is malformed (wrong length, not hex, out of range)
  missing_argument,  // a required value is absent
  conflicting_arguments,
  mac_mismatch,      // MAC-A or MAC-S does not verify (TS 33.102 6.3.3, 6.3.5)
  sqn_out_of_range,  // SQN not fresh for the USIM (TS 33.102 Annex C.2) -> synchronisation failure
  sqn_exhausted,     // the home side's SEQ space is used up (wrap-around protection, Annex C.3)
  unsupported,       // a parameter combination this build does not support
  internal,          // a broken invariant or a failing library call
  // Files and encodings.
  not_found,         // a file or record does not exist
  io_error,          // reading or writing a file failed
  bad_format,        // unparseable input: truncated, wrong type, PEM/DER confusion, empty
  already_exists,    // refusing to overwrite (e.g. a CA directory)
  // PKI, attestation and packages (issue 4); also the services' HTTP error codes.
  chain_invalid,     // no valid chain to the trust anchor (or wrong purpose, bad CA)
  cert_revoked,
  cert_unknown,      // OCSP: the responder does not know the certificate
  cert_expired,      // outside notBefore/notAfter
  signature_invalid,
  nonce_mismatch,
  stale_report,      // an attestation report, references or a result too old or from the future
  measurement_mismatch,
  package_tampered,
  wrong_recipient,
  package_expired,
  replayed_package,
  ocsp_invalid,      // unsigned, wrong signer, malformed or unusable OCSP response
  // The TRE (issue 5, docs/tre.md).
  store_tampered,        // sealed TRE state fails authentication, or its audit log was edited
  rollback_detected,     // the TRE state is older than its monotonic counter
  lockdown,              // the TRE is locked down after tamper evidence; only reads remain
  transition_refused,    // a lifecycle rule forbids the change; the message names the rule
  access_denied,         // the caller is not the stakeholder entitled to the credential
  integrity_failed,      // an MCIM's stored credential no longer matches its digest
  credential_unusable,   // the credential's lifecycle state does not allow authentication
  replayed_instruction,  // a management instruction's sequence is not above the last one
  busy,                  // try again later: the TRE is held by another process, a database is
                         // locked, a bound on pending work is reached (HTTP 503)
  // The services (issue 6).
  pcid_expired,  // a PCID subscription is past its lifetime, or expired dormant (F7, F8)
  unauthenticated,  // the caller presented no identity (no TLS client certificate)
  // Issue 7.
  registration_expired,  // the owner's registration (its one-time nonce) lapsed before the
                         // device arrived to be provisioned (F1 -> F2 step 7)
};
inline constexpr ErrorCode kLastErrorCode = ErrorCode::registration_expired;

// The stable, lowercase wire name of a code, e.g. "mac_mismatch".
std::string_view to_string(ErrorCode code);
// The code of a wire name (as a peer's error envelope carries it); nullopt for an unknown name.
std::optional<ErrorCode> error_code_from_wire(std::string_view name);

// What a code means for the caller: bad input (fix the request; CLI exit 2), a refusal by a
// check on well-formed input (CLI exit 1), or an internal failure (CLI exit 3).
enum class ErrorKind { bad_input, refused, internal };
ErrorKind kind_of(ErrorCode code);

struct [[nodiscard]] Error {
  ErrorCode code;
  std::string message;

  Error(ErrorCode c, std::string m) : code(c), message(std::move(m)) {}
  std::string_view wire_code() const { return to_string(code); }
};

template <class T>
using Result = std::expected<T, Error>;

// Builds the unexpected value: `return fail(ErrorCode::invalid_argument, "--k: ...");`
inline std::unexpected<Error> fail(ErrorCode code, std::string message) {
  return std::unexpected<Error>(Error(code, std::move(message)));
}

// The error with "<prefix>: " before its message (the option, file, device or step it concerns).
inline std::unexpected<Error> with_prefix(const Error& e, std::string_view prefix) {
  std::string message(prefix);
  message += ": ";
  message += e.message;
  return fail(e.code, std::move(message));
}

}  // namespace mcim

template <>
struct fmt::formatter<mcim::Error> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(const mcim::Error& e, Ctx& ctx) const {
    return fmt::format_to(ctx.out(), "{}: {}", e.wire_code(), e.message);
  }
};
