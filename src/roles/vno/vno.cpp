#include "roles/vno/vno.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/hex.h"
#include "common/log.h"
#include "common/secure.h"

namespace mcim::roles {
namespace {

constexpr std::string_view kLog = "vno";

bool valid_imsi(std::string_view s) {
  return s.size() >= 6 && s.size() <= 15 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void wipe(aka::AuthVector& v) {
  secure_wipe(v.ck);
  secure_wipe(v.ik);
  secure_wipe(v.xres.bytes);
}

}  // namespace

Vno::Vno(VnoOptions options, std::vector<Route> routes, std::map<std::string, HomeAuth*> homes,
         const Clock& clock, RandomSource& random)
    : options_(std::move(options)),
      routes_(std::move(routes)),
      homes_(std::move(homes)),
      clock_(clock),
      random_(random) {
  // Longest prefix first, so the first match is the most specific (a PCID range inside the RO's
  // MCC/MNC wins over the MCC/MNC).
  std::stable_sort(routes_.begin(), routes_.end(), [](const Route& a, const Route& b) {
    return a.prefix.size() > b.prefix.size();
  });
}

Result<Route> Vno::route(std::string_view imsi) const {
  if (!valid_imsi(imsi)) return fail(ErrorCode::invalid_argument, "imsi: expected 6-15 digits");
  for (const Route& r : routes_) {
    if (imsi.substr(0, r.prefix.size()) == r.prefix) return r;
  }
  return fail(ErrorCode::not_found,
              fmt::format("no home network serves IMSI prefix {}",
                          imsi.substr(0, std::min<std::size_t>(6, imsi.size()))));
}

std::string Vno::new_id() {
  Bytes<16> b{};
  random_.fill(b);
  return to_hex(b);
}

void Vno::drop_expired(std::chrono::system_clock::time_point now) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.expires <= now) {
      wipe(it->second.vector);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

Result<Challenge> Vno::challenge(std::string imsi, std::string home, aka::AuthVector v) {
  const auto now = clock_.now();
  std::lock_guard lock(mu_);
  drop_expired(now);
  if (pending_.size() >= options_.max_pending) {
    wipe(v);
    return fail(ErrorCode::busy, "too many unanswered challenges; retry later");
  }
  Challenge c{new_id(), v.rand, v.autn};
  pending_.emplace(c.attach_id,
                   Pending{std::move(imsi), std::move(home), v, now + options_.challenge_ttl});
  wipe(v);
  return c;
}

Result<Challenge> Vno::attach(std::string_view imsi) {
  auto r = route(imsi);
  if (!r) return std::unexpected(r.error());
  const auto home = homes_.find(r->home);
  if (home == homes_.end()) {
    return fail(ErrorCode::internal, fmt::format("route to {} has no home client", r->home));
  }
  auto vectors = home->second->vectors(imsi, 1, options_.name);
  if (!vectors) return std::unexpected(vectors.error());
  if (vectors->empty()) return fail(ErrorCode::internal, "the home returned no vector");
  for (std::size_t i = 1; i < vectors->size(); ++i) wipe((*vectors)[i]);
  return challenge(std::string(imsi), r->home, (*vectors)[0]);
}

Result<VnoSession> Vno::complete(std::string_view attach_id, ByteView res) {
  Pending p;
  {
    std::lock_guard lock(mu_);
    drop_expired(clock_.now());
    auto it = pending_.find(attach_id);
    if (it == pending_.end()) {
      return fail(ErrorCode::not_found, "no pending challenge with this attach id (expired?)");
    }
    p = std::move(it->second);
    pending_.erase(it);  // one answer per challenge
  }
  const bool ok = constant_time_equal(res, p.vector.xres.view());
  wipe(p.vector);
  if (!ok) return fail(ErrorCode::mac_mismatch, "RES does not match: authentication failed");
  auto s = open_session(p.imsi, p.home);
  if (!s) return std::unexpected(s.error());
  std::lock_guard lock(mu_);
  sessions_.emplace(s->id, *s);
  return s;
}

Result<VnoSession> Vno::open_session(const std::string& imsi, const std::string& home) {
  auto home_session = homes_.at(home)->open_session(imsi, options_.name);
  if (!home_session) return std::unexpected(home_session.error());
  auto r = route(imsi);
  VnoSession s{new_id(), imsi, home, *home_session, r && r->provisioning, {}, clock_.now()};
  if (s.restricted) s.drf_url = r->drf_url;
  return s;
}

std::vector<VnoSession> Vno::take_expired_grants(std::chrono::system_clock::time_point now) {
  std::vector<VnoSession> out;
  for (auto it = eap_grants_.begin(); it != eap_grants_.end();) {
    if (it->second.expires <= now) {
      out.push_back(std::move(it->second.session));
      it = eap_grants_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

// A grant nobody claimed holds the IMSI's attach at its home: let it go, so that the device can
// authenticate again. A failure here leaves the home session to expire at the home.
void Vno::close_home_sessions(const std::vector<VnoSession>& sessions) {
  for (const VnoSession& s : sessions) {
    if (auto c = homes_.at(s.home)->close_session(s.home_session); !c) {
      log::warn(kLog, "EAP grant: closing the home session at {}: {}", s.home, c.error());
    }
  }
}

Result<void> Vno::grant_eap(std::string_view identity, ByteView msk) {
  auto id = parse_eap_identity(identity);
  if (!id) return std::unexpected(id.error());
  if (msk.size() != kMskSize) {
    return fail(ErrorCode::invalid_argument, "EAP grant: the MSK must be 64 octets");
  }
  auto r = route(id->imsi);
  if (!r) return std::unexpected(r.error());
  if (!homes_.contains(r->home)) {
    return fail(ErrorCode::internal, fmt::format("route to {} has no home client", r->home));
  }
  std::vector<VnoSession> stale;
  {
    std::lock_guard lock(mu_);
    stale = take_expired_grants(clock_.now());
    if (auto it = eap_grants_.find(identity); it != eap_grants_.end()) {
      stale.push_back(std::move(it->second.session));
      eap_grants_.erase(it);
    }
  }
  close_home_sessions(stale);
  auto s = open_session(id->imsi, r->home);
  if (!s) return std::unexpected(s.error());
  EapGrant g{eap_session_key(msk), std::move(*s), clock_.now() + options_.eap_grant_ttl};
  {
    std::lock_guard lock(mu_);
    if (eap_grants_.size() < options_.max_eap_grants) {
      eap_grants_.insert_or_assign(std::string(identity), std::move(g));
      return {};
    }
  }
  // Over the bound: nothing kept, and the home session just opened is closed again.
  close_home_sessions({g.session});
  return fail(ErrorCode::busy, "too many unclaimed EAP sessions; retry later");
}

Result<VnoSession> Vno::claim_eap(std::string_view identity, ByteView proof) {
  std::optional<EapGrant> g;
  std::vector<VnoSession> stale;
  {
    std::lock_guard lock(mu_);
    stale = take_expired_grants(clock_.now());
    if (auto it = eap_grants_.find(identity); it != eap_grants_.end()) {
      g.emplace(std::move(it->second));
      eap_grants_.erase(it);  // one claim per grant, right or wrong
    }
  }
  close_home_sessions(stale);
  if (!g) return fail(ErrorCode::not_found, "no EAP session to claim for this identity (expired?)");
  const Secret<32> expected = eap_claim_proof(g->key, identity);
  if (!constant_time_equal(proof, expected.get())) {
    close_home_sessions({g->session});
    return fail(ErrorCode::mac_mismatch,
                "the proof does not match the MSK of the EAP session; the grant is used up");
  }
  std::lock_guard lock(mu_);
  sessions_.emplace(g->session.id, g->session);
  return std::move(g->session);
}

Result<Challenge> Vno::resynchronise(std::string_view attach_id, const aka::Auts& auts) {
  Pending p;
  {
    std::lock_guard lock(mu_);
    drop_expired(clock_.now());
    auto it = pending_.find(attach_id);
    if (it == pending_.end()) {
      return fail(ErrorCode::not_found, "no pending challenge with this attach id (expired?)");
    }
    p = std::move(it->second);
    pending_.erase(it);
  }
  const aka::Rand rand = p.vector.rand;
  wipe(p.vector);
  auto vectors = homes_.at(p.home)->resynchronise(p.imsi, rand, auts, options_.name);
  if (!vectors) return std::unexpected(vectors.error());
  if (vectors->empty()) return fail(ErrorCode::internal, "the home returned no vector");
  for (std::size_t i = 1; i < vectors->size(); ++i) wipe((*vectors)[i]);
  return challenge(std::move(p.imsi), std::move(p.home), (*vectors)[0]);
}

Result<void> Vno::detach(std::string_view session_id) {
  VnoSession s;
  {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) return fail(ErrorCode::not_found, "no such session");
    s = std::move(it->second);
    sessions_.erase(it);
  }
  return homes_.at(s.home)->close_session(s.home_session);
}

Result<std::string> Vno::forward(std::string_view session_id, std::string_view destination) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return fail(ErrorCode::not_found, "no such session");
  if (it->second.restricted &&
      std::find(options_.restricted_destinations.begin(), options_.restricted_destinations.end(),
                destination) == options_.restricted_destinations.end()) {
    refused_forwards_.fetch_add(1);
    return fail(ErrorCode::access_denied,
                "a provisioning (PCID) session reaches only the Registration Operator and the PVA");
  }
  return it->second.imsi;
}

std::size_t Vno::eap_grants() const {
  std::lock_guard lock(mu_);
  return eap_grants_.size();
}

std::size_t Vno::pending() const {
  std::lock_guard lock(mu_);
  return pending_.size();
}

std::optional<VnoSession> Vno::session(std::string_view id) const {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return std::nullopt;
  return it->second;
}

}  // namespace mcim::roles
