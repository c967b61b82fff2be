// The visited network (VNO, DESIGN.md F2 steps 1-4): routes the IMSI a device presents by its
// MCC/MNC prefix to the right home (the RO's ICF for PCIDs, an SHO for operational IMSIs), runs
// the AKA challenge/response with the device (with resynchronisation), opens a session at the
// home (which refuses a second simultaneous attach of a PCID) and, for a PCID session, lets the
// device reach only the RO and the PVA (the restricted APN): its gateway refuses and counts
// anything else and asserts the authenticated PCID to the allowed destinations. F3 over EAP-AKA /
// EAP-AKA' ends the same way: once the AAA server has accepted the peer (the service's RADIUS
// relay saw the Access-Accept and its MSK), the home opens the session as after a 3GPP AKA and
// the VNO holds it as a one-time grant that the device claims with a proof of the MSK
// (eap_session.h). Pure logic over the HomeAuth port (an HTTPS client in the service);
// thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aka/vector.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/random.h"
#include "common/secure.h"
#include "roles/vno/eap_session.h"

namespace mcim::roles {

// What a home network does for a visited one (the ICF for PCIDs, an SHO's AuC for operational
// IMSIs), as the VNO sees it.
class HomeAuth {
 public:
  virtual ~HomeAuth() = default;
  virtual Result<std::vector<aka::AuthVector>> vectors(std::string_view imsi, unsigned count,
                                                       std::string_view vno) = 0;
  // After the device answered AUTS to `rand`: the home verifies it, resynchronises and returns
  // fresh vectors.
  virtual Result<std::vector<aka::AuthVector>> resynchronise(std::string_view imsi,
                                                             const aka::Rand& rand,
                                                             const aka::Auts& auts,
                                                             std::string_view vno) = 0;
  // After a successful AKA: the home records the attach (already_exists when the IMSI is
  // attached elsewhere) and returns its session id.
  virtual Result<std::string> open_session(std::string_view imsi, std::string_view vno) = 0;
  virtual Result<void> close_session(std::string_view session_id) = 0;
};

// A routing entry: IMSIs starting with `prefix` (MCC+MNC, 5 or 6 digits, or longer for a PCID
// range) belong to `home`.
struct Route {
  std::string prefix;
  std::string home;           // the home's name, the key of the HomeAuth map
  bool provisioning = false;  // a PCID range: sessions are restricted
  // For a provisioning route: the https base URL of the RO's DRF, told to the device in the
  // attach answer so that it knows where to discover its home operator (F2 step 5). Initialised
  // so that the routes written before it, {prefix, home, provisioning}, stay complete.
  std::string drf_url{};
};

struct Challenge {
  std::string attach_id;  // 32 hex digits
  aka::Rand rand;
  aka::Autn autn;
};

struct VnoSession {
  std::string id;  // the VNO's session id (32 hex digits)
  std::string imsi;
  std::string home;
  std::string home_session;  // the home's session id
  bool restricted = false;
  std::string drf_url{};  // the route's, for restricted sessions
  std::chrono::system_clock::time_point created;
};

struct VnoOptions {
  std::string name = "vno";                          // this VNO's operator id, sent to homes
  std::chrono::seconds challenge_ttl{60};            // an unanswered challenge expires
  std::size_t max_pending = 100000;                  // bound on unanswered challenges
  std::vector<std::string> restricted_destinations;  // what a PCID session may reach
  // F3: an unclaimed EAP grant expires (its home session is closed), and they are bounded.
  std::chrono::seconds eap_grant_ttl{60};
  std::size_t max_eap_grants = 100000;
};

class Vno {
 public:
  Vno(VnoOptions options, std::vector<Route> routes, std::map<std::string, HomeAuth*> homes,
      const Clock& clock, RandomSource& random);

  // Longest-prefix match; not_found for an IMSI no route covers, invalid_argument for one that
  // is not 6..15 digits.
  Result<Route> route(std::string_view imsi) const;

  // Step 1-3: gets a vector from the IMSI's home and challenges the device.
  Result<Challenge> attach(std::string_view imsi);
  // The device's RES: compared with XRES in constant time (mac_mismatch: authentication failed,
  // the challenge is used up). On success the home opens its session (already_exists for a
  // second attach of the same IMSI) and the VNO its own.
  Result<VnoSession> complete(std::string_view attach_id, ByteView res);
  // The device answered AUTS: the home resynchronises, and the device is challenged again
  // (under a new attach id).
  Result<Challenge> resynchronise(std::string_view attach_id, const aka::Auts& auts);
  Result<void> detach(std::string_view session_id);

  // F3, after the AAA server accepted `identity` (an NAI, eap_session.h) with this 64-octet MSK:
  // the home opens its session exactly as after a 3GPP AKA (already_exists for an IMSI attached
  // elsewhere), and the VNO keeps it, with key = HMAC-SHA-256(MSK, "mcim-eap-session") and
  // nothing else of the MSK, for eap_grant_ttl. A grant still pending for the same identity is
  // replaced (its home session closed first: the peer authenticated again). invalid_argument for
  // an identity that is not a permanent EAP-AKA/AKA' NAI or an MSK of another size, not_found
  // for an IMSI no route covers, busy beyond max_eap_grants.
  Result<void> grant_eap(std::string_view identity, ByteView msk);
  // The device claims the grant with HMAC-SHA-256(key, "mcim-eap-session-claim" | identity),
  // compared in constant time. Every claim uses the grant up, so that a proof cannot be guessed
  // at: a wrong proof is mac_mismatch and closes the home session; a second claim, an unknown
  // identity or an expired grant are not_found. On success the session is the VNO's like an
  // attach's (restricted for a PCID, with its route's drf_url).
  Result<VnoSession> claim_eap(std::string_view identity, ByteView proof);

  // The gateway: may this session's traffic go to `destination`? Restricted (PCID) sessions reach
  // only the configured destinations; refusals are counted. Returns the identity to assert to the
  // destination (the authenticated IMSI). not_found for an unknown session, access_denied for a
  // refused destination.
  Result<std::string> forward(std::string_view session_id, std::string_view destination);

  std::uint64_t refused_forwards() const { return refused_forwards_.load(); }
  std::size_t pending() const;
  std::size_t eap_grants() const;
  std::optional<VnoSession> session(std::string_view id) const;

 private:
  struct Pending {
    std::string imsi, home;
    aka::AuthVector vector;
    std::chrono::system_clock::time_point expires;
  };
  struct EapGrant {
    Secret<32> key;  // HMAC-SHA-256(MSK, "mcim-eap-session")
    VnoSession session;
    std::chrono::system_clock::time_point expires;
  };
  std::string new_id();
  Result<Challenge> challenge(std::string imsi, std::string home, aka::AuthVector v);
  void drop_expired(std::chrono::system_clock::time_point now);
  // After a successful authentication, by AKA here or EAP at the AAA: the home's session and
  // the VNO's (not yet in sessions_).
  Result<VnoSession> open_session(const std::string& imsi, const std::string& home);
  // Unclaimed grants past their expiry, taken out under mu_ (their home sessions are closed by
  // the caller, outside it).
  std::vector<VnoSession> take_expired_grants(std::chrono::system_clock::time_point now);
  void close_home_sessions(const std::vector<VnoSession>& sessions);

  VnoOptions options_;
  std::vector<Route> routes_;
  std::map<std::string, HomeAuth*> homes_;
  const Clock& clock_;
  RandomSource& random_;
  mutable std::mutex mu_;
  std::map<std::string, Pending, std::less<>> pending_;
  std::map<std::string, VnoSession, std::less<>> sessions_;
  std::map<std::string, EapGrant, std::less<>> eap_grants_;  // by identity; guarded by mu_
  std::atomic<std::uint64_t> refused_forwards_{0};
};

}  // namespace mcim::roles
