#include "net/radius.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstring>

namespace mcim::net::radius {
namespace {

// One attribute of a wire packet, located by walk().
struct AttrAt {
  std::uint8_t type;
  std::size_t offset;  // of the value
  std::size_t size;    // of the value
};

std::size_t be16(const std::uint8_t* p) { return (std::size_t{p[0]} << 8) | p[1]; }

// Validates the framing of a whole packet and lists its attributes.
Result<std::vector<AttrAt>> walk(ByteView d) {
  if (d.size() < kHeaderSize) {
    return fail(ErrorCode::bad_format, "RADIUS packet: shorter than the 20-octet header");
  }
  if (d.size() > kMaxPacketSize) {
    return fail(ErrorCode::bad_format, "RADIUS packet: over 4096 octets");
  }
  if (const std::size_t length = be16(d.data() + 2); length != d.size()) {
    return fail(ErrorCode::bad_format,
                fmt::format("RADIUS packet: Length field says {} octets, the datagram has {}",
                            length, d.size()));
  }
  std::vector<AttrAt> attrs;
  for (std::size_t at = kHeaderSize; at < d.size();) {
    const std::size_t index = attrs.size();
    if (d.size() - at < 2) {
      return fail(ErrorCode::bad_format,
                  fmt::format("RADIUS attribute #{}: truncated header at octet {}", index, at));
    }
    const std::uint8_t type = d[at];
    const std::size_t len = d[at + 1];
    if (len < 2) {
      return fail(ErrorCode::bad_format,
                  fmt::format("RADIUS attribute #{} (type {}): length {} below 2", index, type, len));
    }
    if (len > d.size() - at) {
      return fail(ErrorCode::bad_format,
                  fmt::format("RADIUS attribute #{} (type {}): length {} runs past the packet",
                              index, type, len));
    }
    attrs.push_back({type, at + 2, len - 2});
    at += len;
  }
  return attrs;
}

// The one attribute of `type` that must be there (Message-Authenticator).
Result<AttrAt> only_message_authenticator(const std::vector<AttrAt>& attrs) {
  std::optional<AttrAt> found;
  for (const AttrAt& a : attrs) {
    if (a.type != kMessageAuthenticator) continue;
    if (found) return fail(ErrorCode::bad_format, "Message-Authenticator: more than one");
    found = a;
  }
  if (!found) return fail(ErrorCode::bad_format, "Message-Authenticator: absent");
  if (found->size != 16) return fail(ErrorCode::bad_format, "Message-Authenticator: not 16 octets");
  return *found;
}

std::optional<Bytes<16>> md5(std::initializer_list<ByteView> parts) {
  Bytes<16> out{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_md5(), nullptr) == 1;
  for (ByteView p : parts) ok = ok && EVP_DigestUpdate(ctx, p.data(), p.size()) == 1;
  unsigned int len = 0;
  ok = ok && EVP_DigestFinal_ex(ctx, out.data(), &len) == 1 && len == out.size();
  EVP_MD_CTX_free(ctx);
  if (!ok) return std::nullopt;
  return out;
}

std::unexpected<Error> no_md5() {
  return fail(ErrorCode::internal, "RADIUS: MD5 is unavailable in this OpenSSL");
}

// HMAC-MD5 over `packet` with the Message-Authenticator value zeroed and, for a response, the
// request's authenticator in the header (RFC 3579 §3.2).
Result<Bytes<16>> message_authenticator(ByteView packet, const AttrAt& ma, ByteView secret,
                                        const std::optional<Authenticator>& request) {
  ByteVec buf(packet.begin(), packet.end());
  if (request) std::copy(request->begin(), request->end(), buf.begin() + 4);
  std::fill_n(buf.begin() + static_cast<std::ptrdiff_t>(ma.offset), 16, std::uint8_t{0});
  Bytes<16> out{};
  unsigned int len = 0;
  if (HMAC(EVP_md5(), secret.data(), static_cast<int>(secret.size()), buf.data(), buf.size(),
           out.data(), &len) == nullptr ||
      len != out.size()) {
    return fail(ErrorCode::internal, "RADIUS: HMAC-MD5 is unavailable in this OpenSSL");
  }
  return out;
}

// The vendor sub-attribute `vendor_type` of Microsoft's Vendor-Specific attributes (RFC 2865
// §5.26 allows several sub-attributes in one). not_found when absent, bad_format when malformed
// or repeated.
Result<ByteView> microsoft_attribute(const Packet& p, std::uint8_t vendor_type,
                                     std::string_view name) {
  std::optional<ByteView> found;
  for (const Attribute& a : p.attributes) {
    if (a.type != kVendorSpecific || a.value.size() < 4) continue;
    const ByteView v(a.value);
    const std::uint32_t vendor = (std::uint32_t{v[0]} << 24) | (std::uint32_t{v[1]} << 16) |
                                 (std::uint32_t{v[2]} << 8) | v[3];
    if (vendor != kVendorMicrosoft) continue;
    for (std::size_t at = 4; at < v.size();) {
      if (v.size() - at < 2 || v[at + 1] < 2 || v[at + 1] > v.size() - at) {
        return fail(ErrorCode::bad_format, "Microsoft Vendor-Specific: sub-attribute overruns");
      }
      if (v[at] == vendor_type) {
        if (found) return fail(ErrorCode::bad_format, fmt::format("{}: more than one", name));
        found = v.subspan(at + 2, v[at + 1] - 2u);
      }
      at += v[at + 1];
    }
  }
  if (!found) return fail(ErrorCode::not_found, fmt::format("{}: absent", name));
  return *found;
}

std::string_view mppe_name(MppeKey which) {
  return which == MppeKey::send ? "MS-MPPE-Send-Key" : "MS-MPPE-Recv-Key";
}

// RFC 2548 §2.4.2: b(1) = MD5(S | R | A), b(i) = MD5(S | c(i-1)); c(i) = p(i) xor b(i). The same
// chain decrypts, with c(i-1) taken from the ciphertext.
Result<void> mppe_crypt(ByteView in, ByteVec& out, bool encrypt, const Bytes<2>& salt,
                        const Authenticator& request, ByteView secret) {
  out.resize(in.size());
  std::optional<Bytes<16>> b = md5({secret, request, salt});
  for (std::size_t i = 0; i < in.size(); i += 16) {
    if (!b) return no_md5();
    for (std::size_t j = 0; j < 16; ++j) out[i + j] = static_cast<std::uint8_t>(in[i + j] ^ (*b)[j]);
    const ByteView cipher = encrypt ? ByteView(out).subspan(i, 16) : in.subspan(i, 16);
    secure_wipe(*b);
    b = md5({secret, cipher});
  }
  if (b) secure_wipe(*b);
  return {};
}

}  // namespace

Result<Packet> parse(ByteView d) {
  auto attrs = walk(d);
  if (!attrs) return std::unexpected(attrs.error());
  Packet p;
  p.code = static_cast<Code>(d[0]);
  p.identifier = d[1];
  std::copy_n(d.begin() + 4, 16, p.authenticator.begin());
  p.attributes.reserve(attrs->size());
  for (const AttrAt& a : *attrs) {
    const auto first = d.begin() + static_cast<std::ptrdiff_t>(a.offset);
    p.attributes.push_back({a.type, ByteVec(first, first + static_cast<std::ptrdiff_t>(a.size))});
  }
  return p;
}

Result<ByteVec> serialize(const Packet& p) {
  std::size_t size = kHeaderSize;
  for (std::size_t i = 0; i < p.attributes.size(); ++i) {
    if (p.attributes[i].value.size() > kMaxAttributeValue) {
      return fail(ErrorCode::invalid_argument,
                  fmt::format("RADIUS attribute #{} (type {}): value over 253 octets", i,
                              p.attributes[i].type));
    }
    size += 2 + p.attributes[i].value.size();
  }
  if (size > kMaxPacketSize) {
    return fail(ErrorCode::invalid_argument, "RADIUS packet: over 4096 octets");
  }
  ByteVec out;
  out.reserve(size);
  out.push_back(static_cast<std::uint8_t>(p.code));
  out.push_back(p.identifier);
  out.push_back(static_cast<std::uint8_t>(size >> 8));
  out.push_back(static_cast<std::uint8_t>(size));
  out.insert(out.end(), p.authenticator.begin(), p.authenticator.end());
  for (const Attribute& a : p.attributes) {
    out.push_back(a.type);
    out.push_back(static_cast<std::uint8_t>(2 + a.value.size()));
    out.insert(out.end(), a.value.begin(), a.value.end());
  }
  return out;
}

Result<Authenticator> response_authenticator(ByteView response, const Authenticator& request,
                                             ByteView secret) {
  if (auto w = walk(response); !w) return std::unexpected(w.error());
  auto digest = md5({response.first(4), request, response.subspan(kHeaderSize), secret});
  if (!digest) return no_md5();
  return *digest;
}

Result<void> verify_response_authenticator(ByteView response, const Authenticator& request,
                                           ByteView secret) {
  auto expected = response_authenticator(response, request, secret);
  if (!expected) return std::unexpected(expected.error());
  if (!constant_time_equal(*expected, response.subspan(4, 16))) {
    return fail(ErrorCode::mac_mismatch, "RADIUS Response Authenticator does not verify");
  }
  return {};
}

Result<void> verify_message_authenticator(ByteView packet, ByteView secret,
                                          const std::optional<Authenticator>& request) {
  auto attrs = walk(packet);
  if (!attrs) return std::unexpected(attrs.error());
  auto ma = only_message_authenticator(*attrs);
  if (!ma) return std::unexpected(ma.error());
  auto expected = message_authenticator(packet, *ma, secret, request);
  if (!expected) return std::unexpected(expected.error());
  if (!constant_time_equal(*expected, packet.subspan(ma->offset, 16))) {
    return fail(ErrorCode::mac_mismatch, "Message-Authenticator does not verify");
  }
  return {};
}

Result<void> sign(ByteVec& packet, ByteView secret, const std::optional<Authenticator>& request) {
  auto attrs = walk(packet);
  if (!attrs) return std::unexpected(attrs.error());
  const bool has_ma = std::any_of(attrs->begin(), attrs->end(),
                                  [](const AttrAt& a) { return a.type == kMessageAuthenticator; });
  if (has_ma) {
    auto ma = only_message_authenticator(*attrs);
    if (!ma) return std::unexpected(ma.error());
    auto value = message_authenticator(packet, *ma, secret, request);
    if (!value) return std::unexpected(value.error());
    std::copy(value->begin(), value->end(), packet.begin() + static_cast<std::ptrdiff_t>(ma->offset));
  }
  if (request) {
    auto auth = response_authenticator(packet, *request, secret);
    if (!auth) return std::unexpected(auth.error());
    std::copy(auth->begin(), auth->end(), packet.begin() + 4);
  }
  return {};
}

Result<std::optional<ByteVec>> eap_message(const Packet& p) {
  ByteVec eap;
  bool any = false;
  for (const Attribute& a : p.attributes) {
    if (a.type != kEapMessage) continue;
    any = true;
    eap.insert(eap.end(), a.value.begin(), a.value.end());
  }
  if (!any) return std::optional<ByteVec>();
  if (eap.size() < 4) return fail(ErrorCode::bad_format, "EAP-Message: shorter than an EAP header");
  if (be16(eap.data() + 2) != eap.size()) {
    return fail(ErrorCode::bad_format,
                fmt::format("EAP-Message: EAP Length says {} octets, the attributes hold {}",
                            be16(eap.data() + 2), eap.size()));
  }
  return std::optional<ByteVec>(std::move(eap));
}

Result<std::optional<std::string>> user_name(const Packet& p) {
  std::optional<std::string> name;
  for (const Attribute& a : p.attributes) {
    if (a.type != kUserName) continue;
    if (name) return fail(ErrorCode::bad_format, "User-Name: more than one");
    if (a.value.empty()) return fail(ErrorCode::bad_format, "User-Name: empty");
    name.emplace(a.value.begin(), a.value.end());
  }
  return name;
}

Result<SecretBytes> decrypt_mppe_key(const Packet& response, MppeKey which,
                                     const Authenticator& request, ByteView secret) {
  const std::string_view name = mppe_name(which);
  auto value = microsoft_attribute(response, static_cast<std::uint8_t>(which), name);
  if (!value) return std::unexpected(value.error());
  const ByteView v = *value;
  if (v.size() < 2 + 16 || (v.size() - 2) % 16 != 0) {
    return fail(ErrorCode::bad_format,
                fmt::format("{}: the encrypted string is not a positive multiple of 16", name));
  }
  if ((v[0] & 0x80) == 0) {
    return fail(ErrorCode::bad_format, fmt::format("{}: the salt's high bit is clear", name));
  }
  ByteVec plain;
  if (auto c = mppe_crypt(v.subspan(2), plain, false, {v[0], v[1]}, request, secret); !c) {
    secure_wipe(plain);
    return std::unexpected(c.error());
  }
  const std::size_t key_len = plain[0];
  if (key_len > plain.size() - 1) {
    secure_wipe(plain);
    return fail(ErrorCode::bad_format,
                fmt::format("{}: key length beyond the decrypted string (wrong secret?)", name));
  }
  ByteVec key(plain.begin() + 1, plain.begin() + 1 + static_cast<std::ptrdiff_t>(key_len));
  secure_wipe(plain);
  return SecretBytes(std::move(key));
}

Result<Attribute> encrypt_mppe_key(MppeKey which, ByteView key, std::uint16_t salt,
                                   const Authenticator& request, ByteView secret) {
  if (key.size() > 239) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("{}: a key of at most 239 octets fits an attribute", mppe_name(which)));
  }
  if ((salt & 0x8000) == 0) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("{}: the salt's high bit must be set", mppe_name(which)));
  }
  ByteVec plain((1 + key.size() + 15) / 16 * 16, 0);
  plain[0] = static_cast<std::uint8_t>(key.size());
  std::copy(key.begin(), key.end(), plain.begin() + 1);
  const Bytes<2> s = to_be<2>(salt);
  ByteVec cipher;
  auto c = mppe_crypt(plain, cipher, true, s, request, secret);
  secure_wipe(plain);
  if (!c) return std::unexpected(c.error());
  Attribute a{kVendorSpecific, {0, 0, 0x01, 0x37}};  // vendor 311
  a.value.push_back(static_cast<std::uint8_t>(which));
  a.value.push_back(static_cast<std::uint8_t>(2 + 2 + cipher.size()));
  a.value.insert(a.value.end(), s.begin(), s.end());
  a.value.insert(a.value.end(), cipher.begin(), cipher.end());
  return a;
}

}  // namespace mcim::net::radius
