// The visited network (VNO, DESIGN.md F2 steps 1-4): routes the IMSI a device presents by its
// MCC/MNC prefix to the right home (the RO's ICF for PCIDs, an SHO for operational IMSIs), runs
// the AKA challenge/response with the device (with resynchronisation), opens a session at the
// home (which refuses a second simultaneous attach of a PCID) and, for a PCID session, lets the
// device reach only the RO and the PVA (the restricted APN): its gateway refuses and counts
// anything else and asserts the authenticated PCID to the allowed destinations. Pure logic over
// the HomeAuth port (an HTTPS client in the service); thread-safe.
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

  // The gateway: may this session's traffic go to `destination`? Restricted (PCID) sessions reach
  // only the configured destinations; refusals are counted. Returns the identity to assert to the
  // destination (the authenticated IMSI). not_found for an unknown session, access_denied for a
  // refused destination.
  Result<std::string> forward(std::string_view session_id, std::string_view destination);

  std::uint64_t refused_forwards() const { return refused_forwards_.load(); }
  std::size_t pending() const;
  std::optional<VnoSession> session(std::string_view id) const;

 private:
  struct Pending {
    std::string imsi, home;
    aka::AuthVector vector;
    std::chrono::system_clock::time_point expires;
  };
  std::string new_id();
  Result<Challenge> challenge(std::string imsi, std::string home, aka::AuthVector v);
  void drop_expired(std::chrono::system_clock::time_point now);

  VnoOptions options_;
  std::vector<Route> routes_;
  std::map<std::string, HomeAuth*> homes_;
  const Clock& clock_;
  RandomSource& random_;
  mutable std::mutex mu_;
  std::map<std::string, Pending, std::less<>> pending_;
  std::map<std::string, VnoSession, std::less<>> sessions_;
  std::atomic<std::uint64_t> refused_forwards_{0};
};

}  // namespace mcim::roles
