// The error envelope every mcim service answers with, `{"error":{"code":"...","message":"..."}}`,
// and the HTTP status of each ErrorCode (docs/protocol.md "Network layer" has the table). Codes
// are ErrorCode wire names, plus a few transport codes for refusals that happen before a handler
// runs. Messages name the field or check, never a value. Pure functions, thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/error.h"
#include "net/http_server.h"

namespace mcim::net {

using Json = nlohmann::json;

// Transport codes: no ErrorCode stands behind them.
inline constexpr std::string_view kBadRequest = "bad_request";               // 400 malformed HTTP
inline constexpr std::string_view kMethodNotAllowed = "method_not_allowed";  // 405, with Allow
inline constexpr std::string_view kPayloadTooLarge = "payload_too_large";    // 413
inline constexpr std::string_view kUnsupportedMediaType = "unsupported_media_type";  // 415
inline constexpr std::string_view kHeaderTooLarge = "header_too_large";              // 431

inline constexpr std::string_view kJsonContentType = "application/json";

// bad input → 400 (not_found 404, already_exists 409, io_error 500); unauthenticated 401;
// access_denied 403; refusals of the request's content (a MAC, signature, chain, nonce,
// measurement check failed) → 422; refusals because of the target's current state (replay,
// lifecycle, SQN, tamper lockdown) → 409; busy 503; internal 500.
int http_status(ErrorCode code);

// The envelope text.
std::string error_body(std::string_view code, std::string_view message);
HttpResponse error_response(int status, std::string_view code, std::string_view message);
// Status from http_status(e.code). A 5xx answer hides the message (it may describe internals):
// the caller logs it.
HttpResponse error_response(const Error& e);

// The client side: the Error a peer's non-2xx answer stands for. An error envelope gives its code
// (an unknown code becomes io_error, the peer's name kept in the message) and message, prefixed
// with `what` ("ro: ..."); anything else is io_error "<what>: HTTP <status>".
Error error_from_response(const HttpResponse& response, std::string_view what);

// A JSON body (compact, invalid UTF-8 replaced) with Cache-Control: no-store, since answers may
// carry key material (authentication vectors, packages).
HttpResponse json_response(int status, const Json& body);
// The value with ok_status, or the error's envelope.
HttpResponse respond(const Result<Json>& result, int ok_status = 200);

}  // namespace mcim::net
