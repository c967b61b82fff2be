// roles/vno/radius_relay.h between a fake NAS and a fake AAA server over UDP on 127.0.0.1: valid
// packets pass unchanged both ways, but for the identifier of a request that another NAS's
// holds; an Access-Accept's MSK (MS-MPPE-Recv-Key | -Send-Key) and the
// AAA's User-Name reach on_accept before the Accept goes on; malformed and unauthenticated
// packets are dropped and counted, on either side. Against real hostapd and eapol_test:
// tests/interop/eap_interop_test.cpp (EapAccess.*).
#include "roles/vno/radius_relay.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/hex.h"
#include "net/radius.h"

namespace mcim::roles {
namespace {

namespace radius = net::radius;
using namespace std::chrono_literals;

constexpr std::string_view kSecret = "relay-secret";
const std::string kIdentity = "0001019900000001@wlan.mnc001.mcc001.3gppnetwork.org";

// A UDP socket on 127.0.0.1 with a bounded receive.
class Udp {
 public:
  Udp() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = loopback(0);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~Udp() { ::close(fd_); }
  std::uint16_t port() const { return port_; }

  static sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    return a;
  }
  void send_to(std::uint16_t port, ByteView data) {
    const sockaddr_in a = loopback(port);
    ::sendto(fd_, data.data(), data.size(), 0, reinterpret_cast<const sockaddr*>(&a), sizeof a);
  }
  // The next datagram and the port it came from; nullopt when none within `wait`.
  std::optional<std::pair<ByteVec, std::uint16_t>> receive(std::chrono::milliseconds wait = 2s) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return std::nullopt;
    ByteVec buf(8192);
    sockaddr_in from{};
    socklen_t len = sizeof from;
    const ssize_t n =
        ::recvfrom(fd_, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
    if (n < 0) return std::nullopt;
    buf.resize(static_cast<std::size_t>(n));
    return std::pair{std::move(buf), ntohs(from.sin_port)};
  }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

ByteView secret() { return bytes_of(kSecret); }

// An EAP packet: code, identifier, length, then `type_data`.
ByteVec eap(std::uint8_t code, std::uint8_t id, ByteVec type_data = {}) {
  ByteVec out(4 + type_data.size());
  out[0] = code;
  out[1] = id;
  out[3] = static_cast<std::uint8_t>(out.size());
  std::copy(type_data.begin(), type_data.end(), out.begin() + 4);
  return out;
}

radius::Attribute message_authenticator() { return {radius::kMessageAuthenticator, ByteVec(16)}; }

// EAP-Response/Identity (type 1) with `identity`.
ByteVec identity_response(std::string_view identity = kIdentity) {
  ByteVec type_data = {1};
  type_data.insert(type_data.end(), identity.begin(), identity.end());
  return eap(2, 1, std::move(type_data));
}
// EAP-Response/AKA-Challenge (type 23, subtype 1) without attributes: the relay does not read it.
ByteVec aka_challenge_response() { return eap(2, 2, {23, 1, 0, 0}); }
constexpr std::uint8_t kStateType = 24;

// An Access-Request as eapol_test sends one: User-Name, EAP-Message, Message-Authenticator, and
// the State of the conversation it continues.
ByteVec access_request(std::uint8_t id, const radius::Authenticator& auth,
                       std::string_view key = kSecret,
                       const ByteVec& eap_packet = identity_response(),
                       const std::optional<ByteVec>& state = std::nullopt) {
  radius::Packet p{radius::Code::access_request, id, auth, {}};
  p.attributes.push_back({radius::kUserName, ByteVec(kIdentity.begin(), kIdentity.end())});
  p.attributes.push_back({radius::kEapMessage, eap_packet});
  if (state) p.attributes.push_back({kStateType, *state});
  p.attributes.push_back(message_authenticator());
  ByteVec wire = *radius::serialize(p);
  EXPECT_TRUE(radius::sign(wire, bytes_of(key), std::nullopt));
  return wire;
}

Bytes<64> test_msk() {
  Bytes<64> m{};
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<std::uint8_t>(0xa0 + i);
  return m;
}

// The AAA's answer to `request`; an Access-Accept carries the MSK as hostapd sends it.
ByteVec answer(radius::Code code, const ByteVec& request, bool with_user_name = true,
               std::string_view key = kSecret, const std::optional<ByteVec>& state = std::nullopt) {
  const auto req = *radius::parse(request);
  radius::Packet p{code, req.identifier, req.authenticator, {}};
  if (code == radius::Code::access_accept) {
    if (with_user_name) {
      p.attributes.push_back({radius::kUserName, ByteVec(kIdentity.begin(), kIdentity.end())});
    }
    const Bytes<64> msk = test_msk();
    const ByteView m(msk);
    p.attributes.push_back(*radius::encrypt_mppe_key(radius::MppeKey::send, m.subspan(32), 0x8001,
                                                     req.authenticator, bytes_of(key)));
    p.attributes.push_back(*radius::encrypt_mppe_key(radius::MppeKey::recv, m.first(32), 0x8002,
                                                     req.authenticator, bytes_of(key)));
    p.attributes.push_back({radius::kEapMessage, eap(3, 1)});
  } else {
    p.attributes.push_back({radius::kEapMessage, eap(1, 2, {23, 1})});
    if (state) p.attributes.push_back({kStateType, *state});
  }
  p.attributes.push_back(message_authenticator());
  ByteVec wire = *radius::serialize(p);
  EXPECT_TRUE(radius::sign(wire, bytes_of(key), req.authenticator));
  return wire;
}

class RadiusRelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RadiusRelayOptions o;
    o.aaa_port = aaa_.port();
    o.secret = std::make_shared<const SecretBytes>(ByteVec(kSecret.begin(), kSecret.end()));
    o.on_accept = [this](std::string_view identity, ByteView msk) -> Result<void> {
      std::lock_guard lock(mu_);
      accepted_.emplace_back(std::string(identity), to_hex(msk));
      return {};
    };
    auto r = RadiusRelay::start(std::move(o));
    ASSERT_TRUE(r) << r.error().message;
    relay_ = std::move(*r);
    const std::string a = relay_->address();
    relay_port_ = static_cast<std::uint16_t>(std::stoi(a.substr(a.rfind(':') + 1)));
  }

  // The NAS sends `request`; the AAA must receive it unchanged.
  void forwarded(const ByteVec& request) {
    nas_.send_to(relay_port_, request);
    auto got = aaa_.receive();
    ASSERT_TRUE(got) << "the relay did not forward the request";
    EXPECT_EQ(got->first, request);
    aaa_reply_port_ = got->second;
  }

  // The AAA answers; the NAS must receive the answer unchanged, from the relay's address.
  void answered(const ByteVec& reply) {
    aaa_.send_to(aaa_reply_port_, reply);
    auto back = nas_.receive();
    ASSERT_TRUE(back) << "the relay did not pass the answer on";
    EXPECT_EQ(back->first, reply);
    EXPECT_EQ(back->second, relay_port_);
  }

  // The counters once the relay has had time for what was sent (drops have no answer to wait for).
  RadiusRelay::Counters settle() {
    std::this_thread::sleep_for(150ms);
    return relay_->counters();
  }

  std::vector<std::pair<std::string, std::string>> accepted() {
    std::lock_guard lock(mu_);
    return accepted_;
  }

  Udp nas_, aaa_;
  std::uint16_t relay_port_ = 0, aaa_reply_port_ = 0;
  std::unique_ptr<RadiusRelay> relay_;
  std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> accepted_;  // guarded by mu_
};

TEST_F(RadiusRelayTest, AChallengeRoundTripPassesUnchanged) {
  const ByteVec request = access_request(7, {1, 2, 3});
  forwarded(request);
  answered(answer(radius::Code::access_challenge, request));
  const auto c = relay_->counters();
  EXPECT_EQ(c.requests, 1u);
  EXPECT_EQ(c.answers, 1u);
  EXPECT_EQ(c.dropped, 0u);
  EXPECT_TRUE(accepted().empty());
}

TEST_F(RadiusRelayTest, AnAcceptGivesTheAaasIdentityAndTheMskBeforeItGoesOn) {
  const ByteVec request = access_request(9, {9});
  forwarded(request);
  const ByteVec accept = answer(radius::Code::access_accept, request);
  answered(accept);
  // on_accept ran before the Accept was sent on.
  const auto seen = accepted();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].first, kIdentity);
  EXPECT_EQ(seen[0].second, to_hex(test_msk()));  // Recv-Key | Send-Key
  EXPECT_EQ(relay_->counters().accepts, 1u);
  // The answer used the request up: a replay of it finds nothing.
  aaa_.send_to(aaa_reply_port_, accept);
  EXPECT_FALSE(nas_.receive(300ms));
  EXPECT_EQ(settle().dropped, 1u);
  EXPECT_EQ(accepted().size(), 1u);
}

// hostapd's Accept has no User-Name: the identity is the one the conversation began with, followed
// from the EAP-Response/Identity through the AAA's State.
TEST_F(RadiusRelayTest, WithoutTheAaasUserNameTheConversationsIdentityIsGranted) {
  const ByteVec state = {'s', 1};
  const ByteVec first = access_request(10, {10});
  forwarded(first);
  answered(answer(radius::Code::access_challenge, first, true, kSecret, state));
  const ByteVec second = access_request(11, {11}, kSecret, aka_challenge_response(), state);
  forwarded(second);
  answered(answer(radius::Code::access_accept, second, false));
  const auto seen = accepted();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].first, kIdentity);
  EXPECT_EQ(seen[0].second, to_hex(test_msk()));
}

// The identity cannot change inside a conversation, and an Accept for a conversation the relay
// did not see begin (and without User-Name) grants nothing.
TEST_F(RadiusRelayTest, NoIdentityIsGrantedThatTheConversationDidNotBeginWith) {
  const ByteVec state = {'s', 2};
  const ByteVec first = access_request(12, {12});
  forwarded(first);
  answered(answer(radius::Code::access_challenge, first, true, kSecret, state));
  nas_.send_to(relay_port_,
               access_request(13, {13}, kSecret, identity_response("0001019900000002@x"), state));
  EXPECT_FALSE(aaa_.receive(300ms)) << "an identity switched inside a conversation";
  EXPECT_EQ(settle().dropped, 1u);

  const ByteVec stranger =
      access_request(14, {14}, kSecret, aka_challenge_response(), ByteVec{'n', 'o'});
  forwarded(stranger);
  answered(answer(radius::Code::access_accept, stranger, false));  // passed on; no session
  EXPECT_TRUE(accepted().empty());
  EXPECT_EQ(relay_->counters().accepts, 0u);
}

TEST_F(RadiusRelayTest, UnauthenticatedOrMalformedRequestsAreDropped) {
  const radius::Authenticator auth{4, 4};
  ByteVec tampered = access_request(1, auth);
  tampered[tampered.size() - 20] ^= 1;  // inside the EAP-Message: the MAC no longer matches
  ByteVec no_ma;
  {
    radius::Packet p{radius::Code::access_request, 2, auth, {}};
    p.attributes.push_back({radius::kEapMessage, identity_response()});
    no_ma = *radius::serialize(p);
  }
  ByteVec status = access_request(3, auth);
  status[0] = static_cast<std::uint8_t>(radius::Code::status_server);
  ASSERT_TRUE(radius::sign(status, secret(), std::nullopt));
  ByteVec truncated = access_request(4, auth);
  truncated.resize(truncated.size() - 3);
  const std::vector<ByteVec> bad = {access_request(5, auth, "another-secret"),
                                    tampered,
                                    no_ma,
                                    status,
                                    truncated,
                                    ByteVec{1, 2, 3},
                                    ByteVec(5000, 0)};
  for (const ByteVec& d : bad) nas_.send_to(relay_port_, d);
  EXPECT_FALSE(aaa_.receive(300ms)) << "an unauthenticated request reached the AAA";
  const auto c = settle();
  EXPECT_EQ(c.dropped, bad.size());  // the 5000-octet datagram too: over RADIUS's 4096
  EXPECT_EQ(c.requests, 0u);
}

TEST_F(RadiusRelayTest, UnauthenticatedOrUnexpectedAnswersAreDropped) {
  const ByteVec request = access_request(20, {20});
  forwarded(request);
  ByteVec forged = answer(radius::Code::access_accept, request, true, "another-secret");
  ByteVec altered = answer(radius::Code::access_accept, request);
  altered[altered.size() - 30] ^= 1;
  ByteVec unknown_id = answer(radius::Code::access_challenge, access_request(21, {21}));
  ByteVec request_back = request;  // a request is no answer
  ByteVec other_request_auth = answer(radius::Code::access_challenge, access_request(20, {99}));
  for (const ByteVec& d : {forged, altered, unknown_id, request_back, other_request_auth}) {
    aaa_.send_to(aaa_reply_port_, d);
  }
  EXPECT_FALSE(nas_.receive(300ms)) << "an unauthenticated answer reached the NAS";
  auto c = settle();
  EXPECT_EQ(c.dropped, 5u);
  EXPECT_EQ(c.answers, 0u);
  EXPECT_TRUE(accepted().empty());
  // The genuine answer still finds its request.
  answered(answer(radius::Code::access_reject, request));
}

// Two NASes with one identifier at once (every eapol_test numbers its requests from 0): the
// second request goes to the AAA under another identifier with its Message-Authenticator
// recomputed, a retransmission of it under the same one, and each answer goes back to its own NAS
// under the NAS's identifier with valid authenticators and MPPE keys.
TEST_F(RadiusRelayTest, TwoNasesUsingOneIdentifierAreToldApart) {
  const ByteVec first = access_request(30, {30});
  forwarded(first);
  forwarded(first);  // a retransmission passes unchanged
  Udp other_nas;
  const radius::Authenticator other_auth{31};
  const ByteVec second = access_request(30, other_auth);
  other_nas.send_to(relay_port_, second);
  auto got = aaa_.receive();
  ASSERT_TRUE(got) << "the relay did not forward the other NAS's request";
  const std::uint8_t id = got->first.at(1);
  EXPECT_NE(id, 30);
  ByteVec renumbered = second;
  renumbered[1] = id;
  ASSERT_TRUE(radius::sign(renumbered, secret(), std::nullopt));
  EXPECT_EQ(got->first, renumbered);
  other_nas.send_to(relay_port_, second);
  auto again = aaa_.receive();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->first, renumbered) << "a retransmission under another identifier";

  aaa_.send_to(aaa_reply_port_, answer(radius::Code::access_accept, got->first));
  auto back = other_nas.receive();
  ASSERT_TRUE(back) << "the answer did not reach the other NAS";
  auto p = radius::parse(back->first);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->identifier, 30);
  EXPECT_TRUE(radius::verify_response_authenticator(back->first, other_auth, secret()));
  EXPECT_TRUE(radius::verify_message_authenticator(back->first, secret(), other_auth));
  auto recv = radius::decrypt_mppe_key(*p, radius::MppeKey::recv, other_auth, secret());
  ASSERT_TRUE(recv) << recv.error().message;
  EXPECT_EQ(to_hex(recv->view()), to_hex(ByteView(test_msk()).first(32)));
  ASSERT_EQ(accepted().size(), 1u);
  EXPECT_EQ(accepted()[0].second, to_hex(test_msk()));
  EXPECT_FALSE(nas_.receive(300ms)) << "the other NAS's answer reached the first";

  answered(answer(radius::Code::access_reject, first));
  EXPECT_EQ(relay_->counters().dropped, 0u);
}

TEST(RadiusRelayStart, RefusesUnusableOptions) {
  RadiusRelayOptions o;
  EXPECT_EQ(RadiusRelay::start(o).error().code, ErrorCode::invalid_argument);  // no secret
  o.secret = std::make_shared<const SecretBytes>(ByteVec{'s'});
  o.listen_host = "localhost";
  EXPECT_EQ(RadiusRelay::start(o).error().code, ErrorCode::invalid_argument);
  o.listen_host = "127.0.0.1";
  o.aaa_host = "::1";
  EXPECT_EQ(RadiusRelay::start(o).error().code, ErrorCode::invalid_argument);
  o.aaa_host = "127.0.0.1";
  o.listen_host = "192.0.2.1";  // not ours
  EXPECT_EQ(RadiusRelay::start(o).error().code, ErrorCode::io_error);
}

}  // namespace
}  // namespace mcim::roles
