#include "roles/vno/radius_relay.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <thread>

#include "common/log.h"
#include "net/radius.h"

namespace mcim::roles {
namespace {

namespace radius = net::radius;
using Steady = std::chrono::steady_clock;

constexpr std::string_view kLog = "vno";

Result<sockaddr_in> ipv4(const std::string& host, std::uint16_t port, std::string_view what) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    return fail(ErrorCode::invalid_argument, fmt::format("{}: not an IPv4 address", what));
  }
  return a;
}

Result<int> udp_socket(const sockaddr_in& bind_to, std::string_view what) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::bind(fd, reinterpret_cast<const sockaddr*>(&bind_to), sizeof bind_to) != 0) {
    const int e = errno;
    if (fd >= 0) ::close(fd);
    return fail(ErrorCode::io_error, fmt::format("{}: {}", what, std::strerror(e)));
  }
  return fd;
}

bool same_peer(const sockaddr_in& a, const sockaddr_in& b) {
  return a.sin_addr.s_addr == b.sin_addr.s_addr && a.sin_port == b.sin_port;
}

// The MSK of an Access-Accept as hostapd's RADIUS server sends it (radius_msg_add_mppe_keys):
// MS-MPPE-Recv-Key = MSK[0..31], MS-MPPE-Send-Key = MSK[32..63].
Result<SecretBytes> msk_of(const radius::Packet& accept, const radius::Authenticator& request,
                           ByteView secret) {
  auto recv = radius::decrypt_mppe_key(accept, radius::MppeKey::recv, request, secret);
  if (!recv) return std::unexpected(recv.error());
  auto send = radius::decrypt_mppe_key(accept, radius::MppeKey::send, request, secret);
  if (!send) return std::unexpected(send.error());
  if (recv->view().size() != 32 || send->view().size() != 32) {
    return fail(ErrorCode::bad_format, "MS-MPPE keys: not 32 octets each (not an EAP-AKA MSK)");
  }
  ByteVec msk(recv->view().begin(), recv->view().end());
  msk.insert(msk.end(), send->view().begin(), send->view().end());
  return SecretBytes(std::move(msk));
}

constexpr std::uint8_t kState = 24;  // RFC 2865 §5.24
// Conversations in progress (EAP rounds between an identity and an Accept or Reject).
constexpr std::size_t kMaxConversations = 4096;

// The State attribute (RFC 2865 §5.24) that links the rounds of one EAP conversation; nullopt
// when absent, bad_format when repeated or empty.
Result<std::optional<ByteVec>> state_of(const radius::Packet& p) {
  std::optional<ByteVec> state;
  for (const radius::Attribute& a : p.attributes) {
    if (a.type != kState) continue;
    if (state) return fail(ErrorCode::bad_format, "State: more than one");
    if (a.value.empty()) return fail(ErrorCode::bad_format, "State: empty");
    state = a.value;
  }
  return state;
}

// The identity of an EAP-Response/Identity (code 2, type 1, RFC 3748 §5.1); nullopt for any
// other EAP packet.
std::optional<std::string> response_identity(const std::optional<ByteVec>& eap) {
  if (!eap || eap->size() < 5 || (*eap)[0] != 2 || (*eap)[4] != 1) return std::nullopt;
  return std::string(eap->begin() + 5, eap->end());
}

}  // namespace

struct RadiusRelay::State {
  struct Outstanding {
    sockaddr_in nas{};
    std::uint8_t nas_identifier = 0;  // the request's identifier as the NAS sent it
    radius::Authenticator request{};
    Steady::time_point at;
    // The EAP identity of the conversation the request belongs to, as the AAA saw it begin.
    std::optional<std::string> identity;
    std::optional<ByteVec> state;
  };
  struct Conversation {
    std::string identity;
    Steady::time_point at;
  };

  RadiusRelayOptions options;
  int nas_fd = -1;  // bound where NASes send
  int aaa_fd = -1;  // connected to the AAA
  std::string address;
  // By the RADIUS identifier towards the AAA: one octet, so 256 entries bound the table. Touched
  // by the thread only.
  std::array<std::optional<Outstanding>, 256> outstanding{};
  std::uint8_t next_identifier = 0;  // where the search for a free identifier starts
  // By the AAA's State: the identity of each conversation's EAP-Response/Identity, recorded when
  // the AAA answers it with an Access-Challenge. Touched by the thread only.
  std::map<ByteVec, Conversation> conversations;
  std::atomic<std::uint64_t> requests{0}, answers{0}, accepts{0}, dropped{0};
  std::array<std::uint8_t, radius::kMaxPacketSize + 1> buf{};
  std::jthread thread;  // last: stopped before the rest goes

  ~State() {
    stop();
    if (nas_fd >= 0) ::close(nas_fd);
    if (aaa_fd >= 0) ::close(aaa_fd);
  }
  void stop() {
    if (thread.joinable()) {
      thread.request_stop();
      thread.join();
    }
  }
  ByteView secret() const { return options.secret->view(); }

  void drop(std::string_view side, const Error& e) {
    dropped.fetch_add(1);
    log::warn(kLog, "radius: dropped a datagram from the {}: {}", side, e);
  }

  std::optional<Outstanding>& slot(std::uint8_t id) { return outstanding[id]; }
  bool live(const std::optional<Outstanding>& o, Steady::time_point now) const {
    return o && now - o->at < options.request_ttl;
  }

  void from_nas(ByteView wire, const sockaddr_in& from) {
    auto p = radius::parse(wire);
    if (!p) return drop("NAS side", p.error());
    if (p->code != radius::Code::access_request) {
      return drop("NAS side", Error(ErrorCode::invalid_argument,
                                    fmt::format("code {}: only Access-Requests are relayed",
                                                static_cast<int>(p->code))));
    }
    if (auto m = radius::verify_message_authenticator(wire, secret(), std::nullopt); !m) {
      return drop("NAS side", m.error());
    }
    auto identity = conversation_identity(*p);
    if (!identity) return drop("NAS side", identity.error());
    const auto now = Steady::now();
    const std::optional<std::uint8_t> id = identifier_for(*p, from, now);
    if (!id) {
      return drop("NAS side",
                  Error(ErrorCode::busy, "every identifier towards the AAA is held by a request"));
    }
    slot(*id) = Outstanding{from,
                            p->identifier,
                            p->authenticator,
                            now,
                            std::move(identity->first),
                            std::move(identity->second)};
    ByteVec out(wire.begin(), wire.end());
    if (*id != p->identifier) {
      // The Message-Authenticator covers the identifier; the Request Authenticator, on which the
      // answer's authenticators and the MPPE keys depend, stays the NAS's.
      out[1] = *id;
      if (auto signed_out = radius::sign(out, secret(), std::nullopt); !signed_out) {
        slot(*id).reset();
        return drop("NAS side", signed_out.error());
      }
    }
    // Counted before it leaves, so that whoever sees the packet sees the count too (a test, a
    // scrape right after the answer); taken back if the send fails.
    requests.fetch_add(1);
    if (::send(aaa_fd, out.data(), out.size(), 0) < 0) {
      requests.fetch_sub(1);
      log::warn(kLog, "radius: cannot forward to the AAA: {}", std::strerror(errno));
      return;
    }
  }

  // The identifier towards the AAA for request `p` of NAS `from`: the one its first copy got when
  // it is a retransmission (same NAS, identifier and authenticator), so that the AAA sees the
  // retransmission; else the NAS's own when free (a packet then passes unchanged); else the next
  // free one. NASes number their requests independently (every eapol_test starts at 0), so two
  // of them often use one identifier at once. nullopt when all 256 are held.
  std::optional<std::uint8_t> identifier_for(const radius::Packet& p, const sockaddr_in& from,
                                             Steady::time_point now) {
    for (std::size_t i = 0; i < outstanding.size(); ++i) {
      const auto& o = outstanding[i];
      if (live(o, now) && same_peer(o->nas, from) && o->nas_identifier == p.identifier &&
          o->request == p.authenticator) {
        return static_cast<std::uint8_t>(i);
      }
    }
    if (!live(slot(p.identifier), now)) return p.identifier;
    for (std::size_t n = 0; n < outstanding.size(); ++n) {
      const auto id = static_cast<std::uint8_t>(next_identifier + n);
      if (!live(slot(id), now)) {
        next_identifier = static_cast<std::uint8_t>(id + 1);
        return id;
      }
    }
    return std::nullopt;
  }

  void from_aaa(ByteView wire) {
    auto p = radius::parse(wire);
    if (!p) return drop("AAA side", p.error());
    auto& o = slot(p->identifier);
    if (!live(o, Steady::now())) {
      return drop("AAA side", Error(ErrorCode::not_found, "answers no outstanding request"));
    }
    if (p->code != radius::Code::access_accept && p->code != radius::Code::access_reject &&
        p->code != radius::Code::access_challenge) {
      return drop("AAA side", Error(ErrorCode::invalid_argument,
                                    fmt::format("code {}: not an Access-Request's answer",
                                                static_cast<int>(p->code))));
    }
    if (auto r = radius::verify_response_authenticator(wire, o->request, secret()); !r) {
      return drop("AAA side", r.error());
    }
    if (auto m = radius::verify_message_authenticator(wire, secret(), o->request); !m) {
      return drop("AAA side", m.error());
    }
    const Outstanding request = *o;
    o.reset();
    if (p->code == radius::Code::access_challenge) {
      remember(*p, request);
    } else if (request.state) {
      conversations.erase(*request.state);  // the conversation is over
    }
    if (p->code == radius::Code::access_accept) accepted(*p, request);
    ByteVec out(wire.begin(), wire.end());
    if (request.nas_identifier != p->identifier) {
      // Back under the NAS's identifier, which both authenticators cover.
      out[1] = request.nas_identifier;
      if (auto signed_out = radius::sign(out, secret(), request.request); !signed_out) {
        return drop("AAA side", signed_out.error());
      }
    }
    answers.fetch_add(1);  // before it leaves, as requests
    if (::sendto(nas_fd, out.data(), out.size(), 0, reinterpret_cast<const sockaddr*>(&request.nas),
                 sizeof request.nas) < 0) {
      answers.fetch_sub(1);
      log::warn(kLog, "radius: cannot answer the NAS: {}", std::strerror(errno));
    }
  }

  // The identity a request continues: the one its State names (a conversation the AAA began with
  // an EAP-Response/Identity), or the one of its own EAP-Response/Identity when it begins one.
  // An identity inside a conversation is refused: it could make the relay's view differ from the
  // identity the AAA authenticates. Returns {identity, State}.
  Result<std::pair<std::optional<std::string>, std::optional<ByteVec>>> conversation_identity(
      const radius::Packet& p) {
    auto eap = radius::eap_message(p);
    if (!eap) return std::unexpected(eap.error());
    auto state = state_of(p);
    if (!state) return std::unexpected(state.error());
    std::optional<std::string> identity = response_identity(*eap);
    if (*state) {
      if (identity) {
        return fail(ErrorCode::invalid_argument,
                    "an EAP-Response/Identity inside a conversation (with a State)");
      }
      const auto it = conversations.find(**state);
      if (it != conversations.end()) identity = it->second.identity;
    }
    return std::pair{std::move(identity), std::move(*state)};
  }

  // An Access-Challenge continues the request's conversation under the State it carries.
  void remember(const radius::Packet& challenge, const Outstanding& request) {
    auto state = state_of(challenge);
    if (!state || !*state || !request.identity) return;
    const auto now = Steady::now();
    if (conversations.size() >= kMaxConversations) {
      std::erase_if(conversations,
                    [&](const auto& c) { return now - c.second.at >= options.request_ttl; });
    }
    if (conversations.size() >= kMaxConversations) {
      log::warn(kLog, "radius: too many EAP conversations in progress; one is not followed");
      return;
    }
    conversations.insert_or_assign(std::move(**state), Conversation{*request.identity, now});
  }

  // The identity EAP authenticated: the User-Name of the Accept when the AAA sends one (hostapd
  // 2.10 does not), else the identity the conversation began with. The User-Name of the request
  // is the NAS's word and is not used.
  void accepted(const radius::Packet& accept, const Outstanding& request) {
    auto name = radius::user_name(accept);
    if (!name) {
      log::warn(kLog,
                "radius: an Access-Accept with an unreadable User-Name ({}): no session "
                "granted",
                name.error());
      return;
    }
    std::optional<std::string> identity = *name ? *name : request.identity;
    if (!identity) {
      log::warn(kLog, "radius: an Access-Accept for no known EAP identity: no session granted");
      return;
    }
    auto msk = msk_of(accept, request.request, secret());
    if (!msk) {
      log::warn(kLog, "radius: an Access-Accept without a usable MSK ({}): no session granted",
                msk.error());
      return;
    }
    accepts.fetch_add(1);
    if (!options.on_accept) return;
    if (auto g = options.on_accept(*identity, msk->view()); !g) {
      log::warn(kLog, "radius: no session granted after an Access-Accept: {}", g.error());
    }
  }

  void loop(const std::stop_token& stop) {
    while (!stop.stop_requested()) {
      pollfd fds[2] = {{nas_fd, POLLIN, 0}, {aaa_fd, POLLIN, 0}};
      if (::poll(fds, 2, 100) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        sockaddr_in from{};
        socklen_t len = sizeof from;
        const ssize_t n =
            ::recvfrom(nas_fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
        if (n > 0) from_nas(ByteView(buf.data(), static_cast<std::size_t>(n)), from);
      }
      if (fds[1].revents & POLLIN) {
        const ssize_t n = ::recv(aaa_fd, buf.data(), buf.size(), 0);
        if (n > 0) from_aaa(ByteView(buf.data(), static_cast<std::size_t>(n)));
      }
    }
  }
};

Result<std::unique_ptr<RadiusRelay>> RadiusRelay::start(RadiusRelayOptions options) {
  if (!options.secret || options.secret->view().empty()) {
    return fail(ErrorCode::invalid_argument, "radius relay: no shared secret");
  }
  auto listen = ipv4(options.listen_host, options.listen_port, "radius relay: listen");
  if (!listen) return std::unexpected(listen.error());
  auto aaa = ipv4(options.aaa_host, options.aaa_port, "radius relay: aaa");
  if (!aaa) return std::unexpected(aaa.error());
  auto state = std::make_unique<State>();
  state->options = std::move(options);
  auto nas = udp_socket(*listen, "radius relay: listen");
  if (!nas) return std::unexpected(nas.error());
  state->nas_fd = *nas;
  // The AAA leg leaves from the listen address, so that the AAA's clients list names it.
  sockaddr_in local = *listen;
  local.sin_port = 0;
  auto up = udp_socket(local, "radius relay: aaa");
  if (!up) return std::unexpected(up.error());
  state->aaa_fd = *up;
  if (::connect(state->aaa_fd, reinterpret_cast<const sockaddr*>(&*aaa), sizeof *aaa) != 0) {
    return fail(ErrorCode::io_error, fmt::format("radius relay: aaa: {}", std::strerror(errno)));
  }
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  ::getsockname(state->nas_fd, reinterpret_cast<sockaddr*>(&bound), &len);
  state->address = fmt::format("{}:{}", state->options.listen_host, ntohs(bound.sin_port));
  State* s = state.get();
  state->thread = std::jthread([s](std::stop_token stop) { s->loop(stop); });
  log::info(kLog, "radius relay listening on {}, AAA at {}:{}", state->address,
            state->options.aaa_host, state->options.aaa_port);
  return std::unique_ptr<RadiusRelay>(new RadiusRelay(std::move(state)));
}

RadiusRelay::RadiusRelay(std::unique_ptr<State> state) : state_(std::move(state)) {}
RadiusRelay::~RadiusRelay() = default;

std::string RadiusRelay::address() const { return state_->address; }

RadiusRelay::Counters RadiusRelay::counters() const {
  return {state_->requests.load(), state_->answers.load(), state_->accepts.load(),
          state_->dropped.load()};
}

void RadiusRelay::stop() { state_->stop(); }

}  // namespace mcim::roles
