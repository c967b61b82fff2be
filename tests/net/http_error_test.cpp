// The ErrorCode → HTTP status table (docs/protocol.md) and the error envelope.
#include "net/http_error.h"

#include <gtest/gtest.h>

#include <set>

namespace mcim::net {
namespace {

TEST(HttpError, EveryCodeHasADocumentedStatus) {
  const std::set<int> allowed = {400, 401, 403, 404, 409, 422, 500, 503};
  for (int c = 0; c <= static_cast<int>(kLastErrorCode); ++c) {
    const auto code = static_cast<ErrorCode>(c);
    const int status = http_status(code);
    EXPECT_TRUE(allowed.contains(status)) << to_string(code) << " " << status;
    // Bad input is a 4xx, never a 422 (that is for refusals); internal failures are 5xx.
    if (kind_of(code) == ErrorKind::bad_input && code != ErrorCode::io_error) {
      EXPECT_TRUE(status == 400 || status == 404 || status == 409) << to_string(code);
    }
    if (kind_of(code) == ErrorKind::internal) {
      EXPECT_EQ(status, 500) << to_string(code);
    }
  }
}

TEST(HttpError, SpecificMappings) {
  EXPECT_EQ(http_status(ErrorCode::invalid_argument), 400);
  EXPECT_EQ(http_status(ErrorCode::bad_format), 400);
  EXPECT_EQ(http_status(ErrorCode::missing_argument), 400);
  EXPECT_EQ(http_status(ErrorCode::unauthenticated), 401);
  EXPECT_EQ(http_status(ErrorCode::access_denied), 403);
  EXPECT_EQ(http_status(ErrorCode::not_found), 404);
  EXPECT_EQ(http_status(ErrorCode::already_exists), 409);
  EXPECT_EQ(http_status(ErrorCode::replayed_package), 409);
  EXPECT_EQ(http_status(ErrorCode::transition_refused), 409);
  EXPECT_EQ(http_status(ErrorCode::pcid_expired), 409);
  EXPECT_EQ(http_status(ErrorCode::mac_mismatch), 422);
  EXPECT_EQ(http_status(ErrorCode::signature_invalid), 422);
  EXPECT_EQ(http_status(ErrorCode::chain_invalid), 422);
  EXPECT_EQ(http_status(ErrorCode::io_error), 500);
  EXPECT_EQ(http_status(ErrorCode::internal), 500);
  EXPECT_EQ(http_status(ErrorCode::busy), 503);
}

TEST(HttpError, EnvelopeShape) {
  const auto r = error_response(Error(ErrorCode::not_found, "pcid: unknown"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, R"({"error":{"code":"not_found","message":"pcid: unknown"}})");
  EXPECT_EQ(error_body("x", "quote \" and \xff"),
            "{\"error\":{\"code\":\"x\",\"message\":\"quote \\\" and \xEF\xBF\xBD\"}}");
}

TEST(HttpError, ServerErrorsHideTheirMessage) {
  const auto r = error_response(Error(ErrorCode::internal, "EVP_DigestSign failed at /etc/key"));
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body, R"({"error":{"code":"internal","message":"internal error"}})");
  const auto busy = error_response(Error(ErrorCode::busy, "lock held by pid 7"));
  EXPECT_EQ(busy.status, 503);
  EXPECT_EQ(busy.body.find("pid"), std::string::npos);
  bool retry_after = false;
  for (const auto& [n, v] : busy.headers) retry_after |= n == "Retry-After";
  EXPECT_TRUE(retry_after);
}

TEST(HttpError, RespondWrapsAResult) {
  EXPECT_EQ(respond(Json{{"a", 1}}, 201).status, 201);
  EXPECT_EQ(respond(Json{{"a", 1}}).body, R"({"a":1})");
  EXPECT_EQ(respond(fail(ErrorCode::access_denied, "not yours")).status, 403);
}

TEST(ErrorFromResponse, EnvelopeCodesComeBackAndEverythingElseIsIoError) {
  const Error e = error_from_response(error_response(fail(ErrorCode::already_exists, "attached")
                                                         .error()),
                                      "ro");
  EXPECT_EQ(e.code, ErrorCode::already_exists);
  EXPECT_EQ(e.message, "ro: attached");
  for (const std::string_view name : {"mac_mismatch", "pcid_expired", "unauthenticated"}) {
    EXPECT_EQ(to_string(*error_code_from_wire(name)), name);
  }
  EXPECT_FALSE(error_code_from_wire("no_such_code"));
  HttpResponse odd = error_response(418, "teapot", "short and stout");
  EXPECT_EQ(error_from_response(odd, "x").code, ErrorCode::io_error);
  EXPECT_EQ(error_from_response(odd, "x").message, "x: HTTP 418 teapot: short and stout");
  HttpResponse html{502, "text/html", "<html>bad gateway</html>", {}};
  EXPECT_EQ(error_from_response(html, "x").message, "x: HTTP 502");
  HttpResponse wrong{500, "application/json", R"({"error":{"code":1,"message":[]}})", {}};
  EXPECT_EQ(error_from_response(wrong, "x").code, ErrorCode::io_error);
}

}  // namespace
}  // namespace mcim::net
