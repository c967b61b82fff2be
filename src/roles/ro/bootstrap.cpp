#include "roles/ro/bootstrap.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>

#include "common/hex.h"
#include "pki/package.h"
#include "pki/signed_json.h"

namespace mcim::ro {
namespace {

using pki::Json;

constexpr std::string_view kWhat = "bootstrap";
constexpr std::string_view kInner = "bootstrap.bootstrap";
constexpr std::size_t kMaxUrl = 256;
constexpr std::size_t kMaxApn = 100;  // TS 23.003 §9.1: the APN network identifier

bool digits(std::string_view s, std::size_t min, std::size_t max) {
  return s.size() >= min && s.size() <= max &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Labels of letters, digits and hyphens joined by single dots (TS 23.003 §9.1).
bool valid_apn(std::string_view s) {
  if (s.empty() || s.size() > kMaxApn) return false;
  std::size_t label = 0;
  for (char c : s) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-') {
      if (++label > 63) return false;
    } else {
      return false;
    }
  }
  return label != 0;
}

bool valid_url(std::string_view s) {
  return s.size() > 8 && s.starts_with("https://") && pki::valid_token(s, kMaxUrl);
}

// The field rules; `code` is invalid_argument for a caller's struct, bad_format for a message.
Result<void> validate_fields(const BootstrapFields& f, ErrorCode code, std::string_view path) {
  std::string_view field;
  if (!digits(f.pcid, 6, 15)) {
    field = "pcid: must be 6-15 decimal digits";
  } else if (!pki::valid_mcim_id(f.device_id)) {
    field = "device: must be [A-Za-z0-9._:-]{1,64}";
  } else if (!pki::valid_mcim_id(f.sho)) {
    field = "sho: must be [A-Za-z0-9._:-]{1,64}";
  } else if (!valid_url(f.dpf_url)) {
    field = "dpf_url: must be https://... of at most 256 printable characters without space";
  } else if (!valid_apn(f.apn)) {
    field = "apn: must be dot-separated labels of letters, digits and '-', at most 100";
  } else if (f.issued.time_since_epoch().count() < 0 ||
             f.issued.time_since_epoch().count() > pki::kMaxUtcSeconds) {
    field = "issued: out of range";
  }
  if (field.empty()) return {};
  return fail(code, path.empty() ? std::string(field) : fmt::format("{}.{}", path, field));
}

std::string inner_text(const BootstrapFields& f) {
  Json j = Json::object();
  j["apn"] = f.apn;
  j["device"] = f.device_id;
  j["dpf_key_pin"] = to_hex(f.dpf_key_pin);
  j["dpf_url"] = f.dpf_url;
  j["issued"] = static_cast<std::uint64_t>(pki::utc_seconds(f.issued));
  j["nonce"] = to_hex(f.nonce);
  j["pcid"] = f.pcid;
  j["sho"] = f.sho;
  j["type"] = std::string(kBootstrapType);
  return pki::canonical(j);
}

std::string outer_text(std::string_view inner, const Bytes<32>& mac) {
  return fmt::format(R"({{"bootstrap":{},"mac":"{}"}})", inner, to_hex(mac));
}

Result<Bytes<32>> hmac(const BootstrapKey& key, std::string_view data) {
  Bytes<32> out{};
  unsigned int size = 0;
  if (HMAC(EVP_sha256(), key.get().data(), static_cast<int>(key.get().size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(),
           &size) == nullptr ||
      size != out.size()) {
    return fail(ErrorCode::internal, "bootstrap: HMAC-SHA256 failed");
  }
  return out;
}

template <std::size_t N>
Result<Bytes<N>> fixed_hex(const Json& obj, std::string_view path, std::string_view key) {
  auto v = pki::hex_member(obj, path, key, N, N);
  if (!v) return std::unexpected(v.error());
  return take<N>(*v);
}

Result<BootstrapFields> decode_inner(const Json& j) {
  if (auto m = pki::expect_members(
          j, kInner,
          {"apn", "device", "dpf_key_pin", "dpf_url", "issued", "nonce", "pcid", "sho", "type"});
      !m) {
    return std::unexpected(m.error());
  }
  if (auto t = pki::type_member(j, kInner, kBootstrapType); !t) return std::unexpected(t.error());
  BootstrapFields f;
  for (auto [key, out] :
       {std::pair{"apn", &f.apn}, std::pair{"device", &f.device_id},
        std::pair{"dpf_url", &f.dpf_url}, std::pair{"pcid", &f.pcid}, std::pair{"sho", &f.sho}}) {
    auto s = pki::string_member(j, kInner, key);
    if (!s) return std::unexpected(s.error());
    *out = **s;
  }
  auto pin = fixed_hex<32>(j, kInner, "dpf_key_pin");
  if (!pin) return std::unexpected(pin.error());
  f.dpf_key_pin = *pin;
  auto nonce = fixed_hex<16>(j, kInner, "nonce");
  if (!nonce) return std::unexpected(nonce.error());
  f.nonce = *nonce;
  auto issued = pki::time_member(j, kInner, "issued");
  if (!issued) return std::unexpected(issued.error());
  f.issued = *issued;
  if (auto v = validate_fields(f, ErrorCode::bad_format, kInner); !v) {
    return std::unexpected(v.error());
  }
  return f;
}

struct Decoded {
  BootstrapFields fields;
  std::string inner;  // the MACed bytes
  Bytes<32> mac{};
};

// Strict decoding, then the text must be exactly what make_bootstrap writes.
Result<Decoded> decode(std::string_view text) {
  auto doc = pki::parse_document(text, kWhat, kMaxBootstrapSize);
  if (!doc) return std::unexpected(doc.error());
  if (auto m = pki::expect_members(*doc, kWhat, {"bootstrap", "mac"}); !m) {
    return std::unexpected(m.error());
  }
  auto mac = fixed_hex<32>(*doc, kWhat, "mac");
  if (!mac) return std::unexpected(mac.error());
  auto fields = decode_inner((*doc)["bootstrap"]);
  if (!fields) return std::unexpected(fields.error());
  std::string inner = inner_text(*fields);
  Decoded d{std::move(*fields), std::move(inner), *mac};
  if (outer_text(d.inner, d.mac) != text) {
    return fail(ErrorCode::bad_format,
                "bootstrap: not in canonical form (sorted keys, no whitespace, no escapes, no "
                "repeated keys)");
  }
  return d;
}

}  // namespace

Result<void> validate_bootstrap_fields(const BootstrapFields& fields) {
  return validate_fields(fields, ErrorCode::invalid_argument, "");
}

Result<std::string> make_bootstrap(const BootstrapFields& fields, const BootstrapKey& key) {
  if (auto v = validate_bootstrap_fields(fields); !v) return std::unexpected(v.error());
  const std::string inner = inner_text(fields);
  auto mac = hmac(key, inner);
  if (!mac) return std::unexpected(mac.error());
  return outer_text(inner, *mac);
}

Result<std::string> make_bootstrap(const BootstrapFields& fields, std::string_view pin) {
  if (auto v = validate_bootstrap_fields(fields); !v) return std::unexpected(v.error());
  auto key = derive_bootstrap_key(pin, fields.device_id);
  if (!key) return std::unexpected(key.error());
  return make_bootstrap(fields, *key);
}

Result<BootstrapFields> verify_bootstrap(std::string_view text, const BootstrapKey& key,
                                         std::string_view expected_device_id, TimePoint now,
                                         std::chrono::seconds max_age) {
  auto d = decode(text);
  if (!d) return std::unexpected(d.error());
  auto mac = hmac(key, d->inner);
  if (!mac) return std::unexpected(mac.error());
  if (!constant_time_equal(*mac, d->mac)) {
    return fail(ErrorCode::signature_invalid,
                "bootstrap: the MAC does not verify (altered, or made for another PIN or device)");
  }
  if (d->fields.device_id != expected_device_id) {
    return fail(ErrorCode::wrong_recipient, "bootstrap: made for another device");
  }
  const auto age = std::chrono::floor<std::chrono::seconds>(now) - d->fields.issued;
  if (age > max_age || -age > max_age) {
    return fail(ErrorCode::stale_report,
                fmt::format("bootstrap: issued {} s from now, more than the {} s allowed",
                            age.count(), max_age.count()));
  }
  return std::move(d->fields);
}

Result<BootstrapFields> verify_bootstrap(std::string_view text, std::string_view pin,
                                         std::string_view expected_device_id, TimePoint now,
                                         std::chrono::seconds max_age) {
  // Format first: a malformed message costs no key stretching.
  if (auto d = decode(text); !d) return std::unexpected(d.error());
  auto key = derive_bootstrap_key(pin, expected_device_id);
  if (!key) return std::unexpected(key.error());
  return verify_bootstrap(text, *key, expected_device_id, now, max_age);
}

}  // namespace mcim::ro
