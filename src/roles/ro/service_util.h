// Small pieces the HTTPS services over the RO's logic share (the RO's routes, the home interface of
// auth_routes.h, the SHO): answering a Result as JSON with the refusal logged at the right level,
// the id and IMSI schemas, the platform report body, per-thread randomness. Internal to the
// role services: header-only, no state. Thread-safe.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aka/vector.h"
#include "common/ascii.h"
#include "common/error.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/random.h"
#include "net/http_error.h"
#include "net/json_schema.h"
#include "net/router.h"
#include "pki/openssl.h"
#include "pki/sealed.h"
#include "store/store.h"

namespace mcim::ro::service_util {

inline constexpr std::size_t kMaxReportSize = 16 * 1024;
inline constexpr std::size_t kMaxPemSize = 16 * 1024;
inline constexpr std::size_t kMaxPlatformChain = 4;

// RandomSource is not thread-safe: one per handler thread.
inline RandomSource& thread_random() {
  thread_local OsRandom os;
  thread_local BatchedRandom batched(os);
  return batched;
}

inline bool media_type_is(std::string_view content_type, std::string_view expected) {
  std::string_view media = content_type.substr(0, content_type.find(';'));
  while (!media.empty() && (media.back() == ' ' || media.back() == '\t')) media.remove_suffix(1);
  return ascii_iequals(media, expected);
}

inline std::int64_t unix_seconds(store::Time t) { return t.time_since_epoch().count(); }

// The credential of an `Authorization: Bearer <token>` header (RFC 6750 §2.1; the scheme's case
// does not matter); nullopt when the header is absent, of another scheme or has no token.
inline std::optional<std::string_view> bearer_token(const net::Request& r) {
  constexpr std::string_view kScheme = "bearer ";
  const std::string_view header = r.http.header("Authorization");
  if (header.size() <= kScheme.size() ||
      !ascii_iequals(header.substr(0, kScheme.size()), kScheme)) {
    return std::nullopt;
  }
  return header.substr(kScheme.size());
}

inline std::string operator_principal(std::string_view id) {
  return fmt::format("operator:{}", id);
}

// The caller's operator id; the route's authoriser has already required one.
inline std::string caller_of(const net::Request& r) {
  const std::string* id = r.peer().operator_id();
  return id != nullptr ? *id : std::string();
}

inline net::JsonSchema imsi_schema() {
  return net::JsonSchema::string(15, ascii_digits, "6-15 decimal digits", 6);
}
inline net::JsonSchema id_schema() {
  return net::JsonSchema::string(64, pki::valid_mcim_id, "an id ([A-Za-z0-9._:-]{1,64})");
}

// The fields of a TRE-signed text with the platform chain that verifies it (leaf first): the
// install status report and the attestation report share them.
inline std::vector<net::JsonMember> platform_report_fields() {
  return {
      net::required("report", net::JsonSchema::string(kMaxReportSize)),
      net::required("platform_chain", net::JsonSchema::array(net::JsonSchema::string(kMaxPemSize),
                                                             kMaxPlatformChain, 1))};
}

// platform_chain PEMs (schema-checked) as certificates; bad_format naming the entry.
inline Result<std::vector<pki::X509Ptr>> parse_platform_chain(const net::Json& pems) {
  std::vector<pki::X509Ptr> chain;
  for (std::size_t i = 0; i < pems.size(); ++i) {
    const std::string& pem = pems[i].get_ref<const std::string&>();
    auto cert = pki::parse_certificate(
        ByteView(reinterpret_cast<const std::uint8_t*>(pem.data()), pem.size()),
        fmt::format("platform_chain[{}]", i));
    if (!cert) return std::unexpected(cert.error());
    chain.push_back(std::move(*cert));
  }
  return chain;
}

inline std::vector<X509*> raw_chain(const std::vector<pki::X509Ptr>& chain) {
  std::vector<X509*> raw;
  raw.reserve(chain.size());
  for (const auto& c : chain) raw.push_back(c.get());
  return raw;
}

inline net::Json vectors_json(const std::vector<aka::AuthVector>& vectors) {
  net::Json out = net::Json::array();
  for (const aka::AuthVector& v : vectors) {
    out.push_back({{"rand", to_hex(v.rand)},
                   {"autn", to_hex(v.autn)},
                   {"xres", to_hex(v.xres.view())},
                   {"ck", to_hex(v.ck)},
                   {"ik", to_hex(v.ik)}});
  }
  return net::Json{{"vectors", std::move(out)}};
}

// A refusal is the caller's business (debug); a 5xx is ours (error, with the message the answer
// hides).
inline void log_refusal(std::string_view component, std::string_view what, const Error& e) {
  if (net::http_status(e.code) >= 500) {
    log::error(component, "{}: {}", what, e);
  } else {
    log::debug(component, "{}: refused: {}", what, e);
  }
}

inline net::HttpResponse answer(std::string_view component, std::string_view what,
                                const Result<net::Json>& result, int ok_status = 200) {
  if (!result) log_refusal(component, what, result.error());
  return net::respond(result, ok_status);
}

// For routes whose caller is known from a header (a device's session, an owner's token) rather
// than the TLS peer: the body checks the router makes for other routes, made by the handler after
// it has authenticated the caller, so that a stranger learns nothing of the schema. nullopt when
// the body is a JSON object of `schema` (then in `out`), else the answer to send: 415 for another
// media type, the schema's refusal.
inline std::optional<net::HttpResponse> check_json_body(std::string_view component,
                                                        std::string_view what,
                                                        const net::Request& r,
                                                        const net::JsonSchema& schema,
                                                        net::Json& out) {
  if (!media_type_is(r.http.content_type, net::kJsonContentType)) {
    return net::error_response(415, net::kUnsupportedMediaType,
                               "body: Content-Type must be application/json");
  }
  auto body = schema.parse(r.http.body);
  if (!body) return answer(component, what, std::unexpected(body.error()));
  out = std::move(*body);
  return std::nullopt;
}

inline net::HttpResponse no_content() {
  net::HttpResponse r;
  r.status = 204;
  return r;
}

// Route handlers over a function of the request: its JSON answer, or 204 for a removal.
template <class Fn>
net::RouteHandler json_handler(std::string_view component, std::string_view what, Fn fn,
                               int ok_status = 200) {
  return [component, what, fn = std::move(fn), ok_status](const net::Request& r) {
    return answer(component, what, fn(r), ok_status);
  };
}

template <class Fn>
net::RouteHandler void_handler(std::string_view component, std::string_view what, Fn fn) {
  return [component, what, fn = std::move(fn)](const net::Request& r) {
    Result<void> done = fn(r);
    if (!done) {
      log_refusal(component, what, done.error());
      return net::error_response(done.error());
    }
    return no_content();
  };
}

}  // namespace mcim::ro::service_util
