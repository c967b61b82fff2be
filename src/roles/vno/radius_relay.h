// The visited network's RADIUS hop for non-3GPP access (F3 over EAP-AKA / EAP-AKA', docs/eap.md
// "The relay"): a relay between the NASes (access points; eapol_test in the tests) and the AAA
// server (hostapd's integrated RADIUS server), as a WLAN access network's AAA proxy. Packets pass
// unchanged (the same shared secret on both legs) but for the identifier: NASes number their
// requests independently, so a request whose identifier another NAS's request holds goes to the
// AAA under a free one (its Message-Authenticator recomputed), and the answer goes back under the
// NAS's (its authenticators recomputed). Each packet is checked with net/radius.h first, and
// anything that fails is dropped and counted: a request without a valid
// Message-Authenticator, an answer without a valid Response Authenticator and
// Message-Authenticator or that answers no outstanding request. The relay follows each EAP
// conversation from its EAP-Response/Identity through the AAA's State attributes, because
// hostapd's Access-Accept carries no User-Name. On an Access-Accept the MSK (MS-MPPE-Recv-Key |
// MS-MPPE-Send-Key) and the identity (the Accept's User-Name, else the conversation's) go to
// `on_accept` before the answer is passed on, so that the session exists when the device learns
// it succeeded. One thread, UDP over IPv4; the shared secret is never logged.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/secure.h"

namespace mcim::roles {

struct RadiusRelayOptions {
  std::string listen_host = "127.0.0.1";  // where NASes send Access-Requests (IPv4)
  std::uint16_t listen_port = 0;          // 0: any free port (address() tells)
  std::string aaa_host = "127.0.0.1";     // the AAA server (IPv4)
  std::uint16_t aaa_port = 1812;
  // The RADIUS shared secret, the same with the NASes and the AAA (packets pass unchanged).
  std::shared_ptr<const SecretBytes> secret;
  // An answer later than this no longer finds its request (RADIUS clients retransmit within
  // seconds); the identifier is then free for another NAS.
  std::chrono::seconds request_ttl{30};
  // Called on the relay's thread for each verified Access-Accept, with the authenticated identity
  // and the 64-octet MSK (wiped after the call). Its failure is logged; the Accept passes anyway.
  std::function<Result<void>(std::string_view identity, ByteView msk)> on_accept;
};

class RadiusRelay {
 public:
  struct Counters {
    std::uint64_t requests = 0;  // forwarded to the AAA
    std::uint64_t answers = 0;   // passed back to a NAS
    std::uint64_t accepts = 0;   // Access-Accepts handed to on_accept
    std::uint64_t dropped = 0;   // datagrams that failed a check
  };

  // invalid_argument for an address that is not IPv4 or no secret; io_error when a socket
  // cannot be bound.
  static Result<std::unique_ptr<RadiusRelay>> start(RadiusRelayOptions options);
  ~RadiusRelay();
  RadiusRelay(const RadiusRelay&) = delete;
  RadiusRelay& operator=(const RadiusRelay&) = delete;

  std::string address() const;  // "IP:PORT" where NASes send
  Counters counters() const;
  void stop();  // joins the thread; idempotent

  struct State;

 private:
  explicit RadiusRelay(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace mcim::roles
