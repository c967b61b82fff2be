#include "net/peer_call.h"

#include <fmt/format.h>

namespace mcim::net {
namespace {

Error fault(const PeerCall& call, ErrorCode client_code, std::string message) {
  return Error(call.faults_as_io_error ? ErrorCode::io_error : client_code,
               fmt::format("{}: {}", call.peer, message));
}

}  // namespace

Result<HttpResponse> exchange(HttpsClient& client, std::string_view method, const std::string& url,
                              const Json& body, const PeerCall& call) {
  const std::string text = body.is_null() ? std::string() : body.dump();
  auto r = client.request(method, url, text, body.is_null() ? "" : kJsonContentType, call.headers);
  if (!r) return std::unexpected(fault(call, r.error().code, r.error().message));
  const bool success = r->status >= 200 && r->status <= 299;
  if (!success) return std::unexpected(error_from_response(*r, call.peer));
  if (call.ok_status != 0 && r->status != call.ok_status) {
    return std::unexpected(
        fault(call, ErrorCode::bad_format,
              fmt::format("answered HTTP {} where {} was expected", r->status, call.ok_status)));
  }
  return std::move(*r);
}

Result<Json> call_json(HttpsClient& client, std::string_view method, const std::string& url,
                       const Json& body, const PeerCall& call) {
  auto r = exchange(client, method, url, body, call);
  if (!r) return std::unexpected(r.error());
  if (r->body.empty()) return Json::object();
  Json answer = Json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  if (answer.is_discarded() || !answer.is_object()) {
    return std::unexpected(fault(call, ErrorCode::bad_format, "the answer is not a JSON object"));
  }
  return answer;
}

}  // namespace mcim::net
