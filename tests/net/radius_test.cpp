// net/radius.h: the RFC 2865 §7.1 example packets (parsed, re-serialized byte for byte, and the
// Access-Accept's Response Authenticator checked with the RFC's secret), a table of malformed
// packets, Message-Authenticator, EAP-Message reassembly, User-Name and the MS-MPPE keys. The
// codec against a real RADIUS server (hostapd) is tests/interop/eap_interop_test.cpp (EapRelay.*).
#include "net/radius.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/hex.h"

namespace mcim::net::radius {
namespace {

const ByteView kRfcSecret = bytes_of("xyzzy5461");

ByteVec hex(std::string_view text) {
  std::string digits;
  for (char c : text) {
    if (c != ' ' && c != '\n') digits.push_back(c);
  }
  auto parsed = parse_hex(digits, "test packet");
  EXPECT_TRUE(parsed) << parsed.error().message;
  return parsed ? *parsed : ByteVec{};
}

// RFC 2865 §7.1 "User Telnet to Specified Host": the NAS at 192.168.1.16 sends an Access-Request
// for "nemo" (password "arctangent"), shared secret "xyzzy5461"; the server accepts.
const ByteVec kRfcRequest = hex(
    "01 00 00 38 0f 40 3f 94 73 97 80 57 bd 83 d5 cb"
    "98 f4 22 7a 01 06 6e 65 6d 6f 02 12 0d be 70 8d"
    "93 d4 13 ce 31 96 e4 3f 78 2a 0a ee 04 06 c0 a8"
    "01 10 05 06 00 00 00 03");
const ByteVec kRfcAccept = hex(
    "02 00 00 26 86 fe 22 0e 76 24 ba 2a 10 05 f6 bf"
    "9b 55 e0 b2 06 06 00 00 00 01 0f 06 00 00 00 00"
    "0e 06 c0 a8 01 03");

TEST(RadiusRfc2865, ParsesAndReserializesTheExamplePackets) {
  auto request = parse(kRfcRequest);
  ASSERT_TRUE(request) << request.error().message;
  EXPECT_EQ(request->code, Code::access_request);
  EXPECT_EQ(request->identifier, 0);
  EXPECT_EQ(to_hex(request->authenticator), "0f403f9473978057bd83d5cb98f4227a");
  ASSERT_EQ(request->attributes.size(), 4u);
  EXPECT_EQ(request->attributes[1].type, 2);  // User-Password, 16 octets
  EXPECT_EQ(request->attributes[1].value.size(), 16u);
  auto name = user_name(*request);
  ASSERT_TRUE(name);
  EXPECT_EQ(*name, "nemo");
  EXPECT_EQ(serialize(*request), kRfcRequest);

  auto accept = parse(kRfcAccept);
  ASSERT_TRUE(accept) << accept.error().message;
  EXPECT_EQ(accept->code, Code::access_accept);
  ASSERT_EQ(accept->attributes.size(), 3u);
  EXPECT_EQ(serialize(*accept), kRfcAccept);
}

TEST(RadiusRfc2865, ResponseAuthenticatorOfTheExampleAccept) {
  const Authenticator request = parse(kRfcRequest)->authenticator;
  auto computed = response_authenticator(kRfcAccept, request, kRfcSecret);
  ASSERT_TRUE(computed);
  EXPECT_EQ(to_hex(*computed), "86fe220e7624ba2a1005f6bf9b55e0b2");
  EXPECT_TRUE(verify_response_authenticator(kRfcAccept, request, kRfcSecret));

  auto wrong_secret = verify_response_authenticator(kRfcAccept, request, bytes_of("xyzzy5462"));
  ASSERT_FALSE(wrong_secret);
  EXPECT_EQ(wrong_secret.error().code, ErrorCode::mac_mismatch);
  EXPECT_EQ(wrong_secret.error().message.find("xyzzy"), std::string::npos);

  ByteVec tampered = kRfcAccept;
  tampered.back() ^= 0x01;  // Login-IP-Host 192.168.1.3 -> .2
  EXPECT_EQ(verify_response_authenticator(tampered, request, kRfcSecret).error().code,
            ErrorCode::mac_mismatch);
  Authenticator other_request = request;
  other_request[0] ^= 0x80;
  EXPECT_EQ(verify_response_authenticator(kRfcAccept, other_request, kRfcSecret).error().code,
            ErrorCode::mac_mismatch);
}

// --- Malformed packets -------------------------------------------------------------------------

struct MalformedCase {
  const char* name;
  ByteVec packet;
  const char* names;  // a word the message must contain: the part that is wrong
};

ByteVec with_length(ByteVec p, std::size_t length) {
  p[2] = static_cast<std::uint8_t>(length >> 8);
  p[3] = static_cast<std::uint8_t>(length);
  return p;
}

ByteVec appended(ByteVec p, std::initializer_list<std::uint8_t> tail) {
  p.insert(p.end(), tail);
  const std::size_t n = p.size();
  return with_length(std::move(p), n);
}

TEST(RadiusParse, MalformedPacketsAreRefused) {
  const ByteVec header = with_length(ByteVec(kRfcAccept.begin(), kRfcAccept.begin() + 20), 20);
  ByteVec big(4097, 0);
  big = with_length(big, 4097);
  big[0] = 2;
  const std::vector<MalformedCase> cases = {
      {"empty", {}, "header"},
      {"short_header", ByteVec(header.begin(), header.begin() + 19), "header"},
      {"length_above_datagram", with_length(kRfcAccept, kRfcAccept.size() + 1), "Length"},
      {"length_below_datagram", with_length(kRfcAccept, kRfcAccept.size() - 6), "Length"},
      {"trailing_octet", [] {
         ByteVec p = kRfcAccept;
         p.push_back(0);
         return p;
       }(), "Length"},
      {"over_4096", big, "4096"},
      {"attribute_length_0", appended(header, {1, 0}), "below 2"},
      {"attribute_length_1", appended(header, {1, 1}), "below 2"},
      {"attribute_overruns", appended(header, {1, 5, 'a', 'b'}), "runs past"},
      {"attribute_header_cut", appended(header, {1}), "truncated"},
      {"last_of_several_overruns", appended(kRfcAccept, {79, 3}), "#3"},
  };
  for (const MalformedCase& c : cases) {
    SCOPED_TRACE(c.name);
    auto p = parse(c.packet);
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code, ErrorCode::bad_format);
    EXPECT_NE(p.error().message.find(c.names), std::string::npos) << p.error().message;
    // Every wire-level helper refuses the same packet the same way.
    EXPECT_EQ(response_authenticator(c.packet, Authenticator{}, kRfcSecret).error().code,
              ErrorCode::bad_format);
    EXPECT_EQ(verify_message_authenticator(c.packet, kRfcSecret, std::nullopt).error().code,
              ErrorCode::bad_format);
  }
  // The largest packet is accepted, and the bounds of serialize mirror those of parse.
  ByteVec largest(4096, 0);
  largest = with_length(largest, 4096);
  std::size_t at = 20;
  for (; at + 255 <= 4096; at += 255) largest[at + 1] = 255;
  largest[at + 1] = static_cast<std::uint8_t>(4096 - at);
  auto ok = parse(largest);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(serialize(*ok), largest);
  ok->attributes.push_back({kUserName, {'x'}});
  EXPECT_EQ(serialize(*ok).error().code, ErrorCode::invalid_argument);
  Packet long_value;
  long_value.attributes.push_back({kEapMessage, ByteVec(254, 0)});
  EXPECT_EQ(serialize(long_value).error().code, ErrorCode::invalid_argument);
}

// --- Message-Authenticator (RFC 3579 §3.2) ------------------------------------------------------

Packet eap_request(std::size_t eap_size) {
  Packet p;
  p.code = Code::access_request;
  p.identifier = 7;
  for (std::uint8_t i = 0; i < 16; ++i) p.authenticator[i] = static_cast<std::uint8_t>(0xa0 + i);
  p.attributes.push_back({kUserName, ByteVec{'0', '0', '0', '1'}});
  ByteVec eap(eap_size, 0x5a);
  eap[0] = 2, eap[1] = 1;
  eap[2] = static_cast<std::uint8_t>(eap_size >> 8), eap[3] = static_cast<std::uint8_t>(eap_size);
  for (std::size_t at = 0; at < eap.size(); at += kMaxAttributeValue) {
    const std::size_t n = std::min(kMaxAttributeValue, eap.size() - at);
    p.attributes.push_back({kEapMessage, ByteVec(eap.begin() + at, eap.begin() + at + n)});
  }
  p.attributes.push_back({kMessageAuthenticator, ByteVec(16, 0)});
  return p;
}

ByteVec signed_wire(const Packet& p, ByteView secret, const std::optional<Authenticator>& req) {
  ByteVec wire = *serialize(p);
  EXPECT_TRUE(sign(wire, secret, req));
  return wire;
}

TEST(RadiusMessageAuthenticator, RequestAndResponse) {
  const ByteView secret = bytes_of("mcim-radius");
  const Packet req = eap_request(40);
  const ByteVec request = signed_wire(req, secret, std::nullopt);
  EXPECT_TRUE(verify_message_authenticator(request, secret, std::nullopt));
  EXPECT_EQ(ByteView(request).subspan(4, 16).size(), 16u);
  EXPECT_EQ(to_hex(parse(request)->authenticator), to_hex(req.authenticator))
      << "signing a request must keep its random authenticator";

  Packet accept;
  accept.code = Code::access_accept;
  accept.identifier = req.identifier;
  accept.attributes.push_back({kEapMessage, {3, 1, 0, 4}});
  accept.attributes.push_back({kMessageAuthenticator, ByteVec(16, 0)});
  const ByteVec response = signed_wire(accept, secret, req.authenticator);
  EXPECT_TRUE(verify_message_authenticator(response, secret, req.authenticator));
  EXPECT_TRUE(verify_response_authenticator(response, req.authenticator, secret));
  // The response's MAC is over the request's authenticator, not its own.
  EXPECT_EQ(verify_message_authenticator(response, secret, std::nullopt).error().code,
            ErrorCode::mac_mismatch);
}

TEST(RadiusMessageAuthenticator, RefusalsTable) {
  const ByteView secret = bytes_of("mcim-radius");
  const ByteVec good = signed_wire(eap_request(40), secret, std::nullopt);
  struct Case {
    const char* name;
    ByteVec packet;
    ByteView secret;
    ErrorCode code;
  };
  ByteVec tampered = good;
  tampered[30] ^= 0x01;
  ByteVec mac_flipped = good;
  mac_flipped.back() ^= 0x01;
  Packet none = eap_request(40);
  none.attributes.pop_back();
  Packet two = eap_request(40);
  two.attributes.push_back({kMessageAuthenticator, ByteVec(16, 0)});
  Packet short_ma = eap_request(40);
  short_ma.attributes.back().value.resize(15);
  const std::vector<Case> cases = {
      {"wrong_secret", good, bytes_of("mcim-radiuz"), ErrorCode::mac_mismatch},
      {"empty_secret", good, ByteView(), ErrorCode::mac_mismatch},
      {"tampered_attribute", tampered, secret, ErrorCode::mac_mismatch},
      {"tampered_mac", mac_flipped, secret, ErrorCode::mac_mismatch},
      {"absent", *serialize(none), secret, ErrorCode::bad_format},
      {"two", *serialize(two), secret, ErrorCode::bad_format},
      {"fifteen_octets", *serialize(short_ma), secret, ErrorCode::bad_format},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = verify_message_authenticator(c.packet, c.secret, std::nullopt);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, c.code) << r.error().message;
  }
  ByteVec two_wire = *serialize(two);
  EXPECT_EQ(sign(two_wire, secret, std::nullopt).error().code, ErrorCode::bad_format);
}

// --- EAP-Message, User-Name ---------------------------------------------------------------------

TEST(RadiusEapMessage, ReassemblesSplitAttributes) {
  const Packet p = eap_request(600);  // 253 + 253 + 94
  ASSERT_EQ(p.attributes.size(), 5u);
  auto eap = eap_message(*parse(signed_wire(p, bytes_of("s"), std::nullopt)));
  ASSERT_TRUE(eap) << eap.error().message;
  ASSERT_TRUE(eap->has_value());
  EXPECT_EQ((*eap)->size(), 600u);
  EXPECT_EQ((**eap)[0], 2);

  Packet missing_piece = p;
  missing_piece.attributes.erase(missing_piece.attributes.begin() + 2);
  auto cut = eap_message(missing_piece);
  ASSERT_FALSE(cut);
  EXPECT_EQ(cut.error().code, ErrorCode::bad_format);
  Packet tiny;
  tiny.attributes.push_back({kEapMessage, {1, 2, 0}});
  EXPECT_EQ(eap_message(tiny).error().code, ErrorCode::bad_format);
  EXPECT_FALSE(eap_message(*parse(kRfcAccept))->has_value());
}

TEST(RadiusUserName, AbsentDuplicateEmpty) {
  Packet p;
  EXPECT_FALSE(user_name(p)->has_value());
  p.attributes.push_back({kUserName, {}});
  EXPECT_EQ(user_name(p).error().code, ErrorCode::bad_format);
  p.attributes[0].value = {'a'};
  p.attributes.push_back({kUserName, {'b'}});
  EXPECT_EQ(user_name(p).error().code, ErrorCode::bad_format);
}

// --- MS-MPPE keys (RFC 2548 §2.4.2-2.4.3) -----------------------------------------------------

TEST(RadiusMppe, RoundTripAndRefusals) {
  const ByteView secret = bytes_of("mcim-radius");
  Authenticator request{};
  request.fill(0x42);
  ByteVec msk(64);
  for (std::size_t i = 0; i < msk.size(); ++i) msk[i] = static_cast<std::uint8_t>(i * 7);
  Packet accept;
  accept.code = Code::access_accept;
  auto send = encrypt_mppe_key(MppeKey::send, ByteView(msk).subspan(32), 0x8001, request, secret);
  auto recv = encrypt_mppe_key(MppeKey::recv, ByteView(msk).first(32), 0x9234, request, secret);
  ASSERT_TRUE(send && recv);
  EXPECT_EQ(send->value.size(), 4u + 2 + 2 + 48) << "1 + 32 octets pad to 48";
  EXPECT_EQ(std::search(send->value.begin(), send->value.end(), msk.begin() + 32, msk.begin() + 40),
            send->value.end())
      << "the key is not in clear";
  accept.attributes = {*send, *recv};
  auto p = parse(*serialize(accept));
  ASSERT_TRUE(p);
  auto got_send = decrypt_mppe_key(*p, MppeKey::send, request, secret);
  auto got_recv = decrypt_mppe_key(*p, MppeKey::recv, request, secret);
  ASSERT_TRUE(got_send && got_recv);
  EXPECT_EQ(to_hex(got_send->view()), to_hex(ByteView(msk).subspan(32)));
  EXPECT_EQ(to_hex(got_recv->view()), to_hex(ByteView(msk).first(32)));

  // A wrong secret or request authenticator never yields the key.
  for (const auto& [s, r] : {std::pair{bytes_of("mcim-radiuz"), request},
                             std::pair{secret, Authenticator{}}}) {
    auto wrong = decrypt_mppe_key(*p, MppeKey::send, r, s);
    if (wrong) {
      EXPECT_NE(to_hex(wrong->view()), to_hex(ByteView(msk).subspan(32)));
    } else {
      EXPECT_EQ(wrong.error().code, ErrorCode::bad_format);
    }
  }

  Packet empty;
  EXPECT_EQ(decrypt_mppe_key(empty, MppeKey::send, request, secret).error().code,
            ErrorCode::not_found);
  Packet salt_clear = accept;
  salt_clear.attributes[0].value[6] &= 0x7f;
  EXPECT_EQ(decrypt_mppe_key(salt_clear, MppeKey::send, request, secret).error().code,
            ErrorCode::bad_format);
  Packet cut = accept;
  cut.attributes[0].value.pop_back();
  cut.attributes[0].value[5] = static_cast<std::uint8_t>(cut.attributes[0].value[5] - 1);
  EXPECT_EQ(decrypt_mppe_key(cut, MppeKey::send, request, secret).error().code,
            ErrorCode::bad_format);
  Packet overrun = accept;
  overrun.attributes[0].value[5] = 200;
  EXPECT_EQ(decrypt_mppe_key(overrun, MppeKey::send, request, secret).error().code,
            ErrorCode::bad_format);
  Packet twice = accept;
  twice.attributes.push_back(*send);
  EXPECT_EQ(decrypt_mppe_key(twice, MppeKey::send, request, secret).error().code,
            ErrorCode::bad_format);

  EXPECT_EQ(encrypt_mppe_key(MppeKey::send, msk, 0x1234, request, secret).error().code,
            ErrorCode::invalid_argument);
  EXPECT_TRUE(encrypt_mppe_key(MppeKey::send, ByteVec(239, 1), 0x8000, request, secret));
  EXPECT_EQ(encrypt_mppe_key(MppeKey::send, ByteVec(240, 1), 0x8000, request, secret).error().code,
            ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace mcim::net::radius
