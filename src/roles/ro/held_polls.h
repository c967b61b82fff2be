// Held polls at the DPF (docs/protocol.md "Held polls"): a device's GET of its attestation
// request or package that finds nothing yet may wait, up to the deadline it asked for
// (`Prefer: wait=N`, RFC 7240), for the SHO to put something for its PCID, instead of asking
// again and again. The waiting requests are net::HttpResponse::hold's: PollWaiters keeps their
// wakes by PCID and calls them when something is put for that PCID, at their deadline, or when
// the service stops; each woken request then runs its handler again on its connection's worker.
// Thread-safe; one thread of its own for the deadlines.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "net/http_server.h"

namespace mcim::ro {

// The wait a client asks for in a Prefer header (RFC 7240 §4.3, `Prefer: wait=N`, N in
// delta-seconds), or 0 s without one. Preferences are comma-separated, names case-insensitive,
// parameters after ';' ignored, a quoted value accepted; a malformed wait counts as none.
std::chrono::seconds preferred_wait(std::string_view prefer);

class PollWaiters {
 public:
  using SteadyTime = std::chrono::steady_clock::time_point;

  explicit PollWaiters(std::size_t max_waiting = 10'000);
  ~PollWaiters();  // stop()
  PollWaiters(const PollWaiters&) = delete;
  PollWaiters& operator=(const PollWaiters&) = delete;

  // What has been put for `pcid` so far, as a number that changes with every notify(pcid).
  // Read it before looking for something to answer, and give it to wait(): something put in
  // between wakes the request at once instead of at its deadline.
  std::uint64_t version(std::string_view pcid) const;

  // Whether a request may hold now (not stopped, not full). A handler that finds nothing holds
  // only then, so that a request woken by a refusal here answers instead of holding again.
  bool accepting() const;

  // Keeps `wake` until notify(pcid), `deadline` or stop(), then calls it once (outside any lock).
  // When stopped or full, or when `pcid` changed since `seen`, calls it at once.
  void wait(const std::string& pcid, std::uint64_t seen, SteadyTime deadline, net::Wake wake);

  void notify(std::string_view pcid);

  // Wakes every waiting request; later waits are woken at once.
  void stop();

  std::size_t waiting() const;

 private:
  struct Waiter {
    std::string pcid;
    SteadyTime deadline;
    net::Wake wake;
  };

  void run();
  std::uint64_t version_locked(std::string_view pcid) const;  // under mu_
  // Under mu_: takes the waiter out of every index.
  net::Wake take(std::uint64_t id);

  const std::size_t max_waiting_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  // Guarded by mu_:
  std::map<std::uint64_t, Waiter> waiters_;  // by id
  std::multimap<std::string, std::uint64_t, std::less<>> by_pcid_;
  std::set<std::pair<SteadyTime, std::uint64_t>> by_deadline_;
  // notify() counts per PCID; cleared now and then (a cleared entry reads as a change).
  std::unordered_map<std::string, std::uint64_t> versions_;
  std::uint64_t cleared_ = 0;  // how many times versions_ was cleared
  std::uint64_t next_id_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace mcim::ro
