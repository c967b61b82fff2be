#include "roles/vno/vno.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/hex.h"
#include "common/secure.h"

namespace mcim::roles {
namespace {

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
  HomeAuth* home = homes_.at(p.home);
  auto home_session = home->open_session(p.imsi, options_.name);
  if (!home_session) return std::unexpected(home_session.error());
  auto r = route(p.imsi);
  VnoSession s{new_id(), p.imsi, p.home, *home_session, r && r->provisioning, {}, clock_.now()};
  if (s.restricted) s.drf_url = r->drf_url;
  std::lock_guard lock(mu_);
  sessions_.emplace(s.id, s);
  return s;
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
