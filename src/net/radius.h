// A strict, bounded RADIUS codec (RFC 2865 §3, §5) for a non-3GPP access provider that relays
// EAP (F3, docs/eap.md): packets parsed and serialized byte for byte (no normalisation, so a relay
// forwards what it verified), the Response Authenticator (RFC 2865 §3), Message-Authenticator
// (RFC 3579 §3.2), EAP-Message reassembly, User-Name, and the MS-MPPE-Send/Recv-Key attributes
// that carry the EAP MSK (RFC 2548 §2.4.2-2.4.3). Pure (no sockets), thread-safe. Errors name the
// part that is wrong and never quote attribute values or the shared secret.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/error.h"
#include "common/secure.h"

namespace mcim::net::radius {

inline constexpr std::size_t kHeaderSize = 20;
inline constexpr std::size_t kMaxPacketSize = 4096;  // RFC 2865 §3
inline constexpr std::size_t kMaxAttributeValue = 253;

// Codes of RFC 2865 §3 (and Status-Server, RFC 5997). The parser accepts any code octet; what to
// do with an unknown one is the caller's decision (RFC 2865: silently discard).
enum class Code : std::uint8_t {
  access_request = 1,
  access_accept = 2,
  access_reject = 3,
  accounting_request = 4,
  accounting_response = 5,
  access_challenge = 11,
  status_server = 12,
};

// Attribute types used here.
inline constexpr std::uint8_t kUserName = 1;
inline constexpr std::uint8_t kVendorSpecific = 26;
inline constexpr std::uint8_t kEapMessage = 79;           // RFC 3579 §3.1
inline constexpr std::uint8_t kMessageAuthenticator = 80;  // RFC 3579 §3.2
inline constexpr std::uint32_t kVendorMicrosoft = 311;     // RFC 2548

using Authenticator = Bytes<16>;

struct Attribute {
  std::uint8_t type = 0;
  ByteVec value;  // 0..253 octets
};

struct Packet {
  Code code = Code::access_request;
  std::uint8_t identifier = 0;
  Authenticator authenticator{};  // Request Authenticator, or Response Authenticator
  std::vector<Attribute> attributes;
};

// bad_format: fewer than 20 or more than 4096 octets, a Length field that disagrees with the
// datagram (RFC 2865 says to drop trailing octets past Length; this codec refuses them, a relay has
// no reason to forward them), an attribute shorter than 2 octets or running past the end.
Result<Packet> parse(ByteView datagram);
// invalid_argument: an attribute value over 253 octets or a packet over 4096 octets.
Result<ByteVec> serialize(const Packet& packet);

// MD5(Code | Identifier | Length | Request Authenticator | Attributes | Secret) over the wire
// octets of a response, whose own authenticator field is ignored (RFC 2865 §3).
Result<Authenticator> response_authenticator(ByteView response, const Authenticator& request,
                                             ByteView secret);
// mac_mismatch when the response's authenticator field is not that value (compared in constant
// time); bad_format when `response` does not parse.
Result<void> verify_response_authenticator(ByteView response, const Authenticator& request,
                                           ByteView secret);

// Message-Authenticator (RFC 3579 §3.2): HMAC-MD5 keyed with the secret over the packet with the
// attribute's value zeroed and, in a response, the request's authenticator in the header. Pass
// `request` = nullopt for an Access-Request (its own authenticator is used). bad_format when the
// packet does not parse, has no Message-Authenticator (RFC 3579 requires one wherever an
// EAP-Message is), has two, or one whose value is not 16 octets; mac_mismatch when it does not
// verify (constant-time comparison).
Result<void> verify_message_authenticator(ByteView packet, ByteView secret,
                                          const std::optional<Authenticator>& request);

// Fills in a serialized packet's authenticators, as its sender does: the Message-Authenticator if
// the packet has one, then, for a response (request given), the Response Authenticator over the
// result. An Access-Request keeps the random Request Authenticator its builder chose.
Result<void> sign(ByteVec& packet, ByteView secret, const std::optional<Authenticator>& request);

// The EAP packet of the EAP-Message attributes in order (RFC 3579 §3.1); nullopt when there are
// none. bad_format when the result is shorter than an EAP header or its EAP Length disagrees.
Result<std::optional<ByteVec>> eap_message(const Packet& packet);
// The User-Name; nullopt when absent, bad_format when there are several or it is empty.
Result<std::optional<std::string>> user_name(const Packet& packet);

// MS-MPPE-Send-Key (vendor type 16) and MS-MPPE-Recv-Key (17) of RFC 2548: a Salt whose high bit
// is set, then the key's length octet, the key and padding, encrypted with MD5 of the secret, the
// Request Authenticator and the salt. hostapd's RADIUS server puts MSK[0..31] in Recv-Key and
// MSK[32..63] in Send-Key.
enum class MppeKey : std::uint8_t { send = 16, recv = 17 };

// not_found when the response carries no such attribute; bad_format when it is malformed (the
// salt's high bit clear, the encrypted part not a positive multiple of 16, several of them, or a
// key length octet beyond the plaintext: the usual sign of a wrong secret, though a wrong secret
// can also yield a wrong key of plausible length, which only the Response Authenticator reveals).
Result<SecretBytes> decrypt_mppe_key(const Packet& response, MppeKey which,
                                     const Authenticator& request, ByteView secret);
// The Vendor-Specific attribute for `key` (at most 239 octets; invalid_argument beyond, or when
// the salt's high bit is clear). The salt is the caller's: unique per attribute of a response.
Result<Attribute> encrypt_mppe_key(MppeKey which, ByteView key, std::uint16_t salt,
                                   const Authenticator& request, ByteView secret);

}  // namespace mcim::net::radius
