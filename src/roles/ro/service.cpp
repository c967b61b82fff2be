#include "roles/ro/service.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "common/ascii.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/random.h"
#include "common/thread_name.h"
#include "net/json_schema.h"
#include "pki/sealed.h"
#include "roles/ro/audit.h"
#include "roles/ro/auth_routes.h"
#include "roles/ro/bootstrap.h"
#include "roles/ro/dpf.h"
#include "roles/ro/dpf_sessions.h"
#include "roles/ro/held_polls.h"
#include "roles/ro/management.h"
#include "roles/ro/service_util.h"
#include "roles/supplier/ccif.h"

namespace mcim::ro {
namespace {

using detail::audited;
using net::HttpResponse;
using net::Json;
using net::JsonSchema;
using net::Request;
using net::RouteOptions;
using SteadyTime = std::chrono::steady_clock::time_point;
using namespace service_util;

constexpr std::string_view kComponent = "ro";
constexpr std::string_view kCmsContentType = "application/cms";
constexpr std::size_t kMaxJsonBody = 64 * 1024;
constexpr std::size_t kMaxPackageBytes = 64 * 1024;
// The package route carries up to 64 KiB of bytes as hex (twice that) plus its ids.
constexpr std::size_t kMaxPackageBody = 2 * kMaxPackageBytes + 4 * 1024;
constexpr std::chrono::milliseconds kMaxRetryDelay{30'000};
constexpr std::size_t kMaxNotifyWorkers = 256;
// Delivered notices removed from the store in one transaction (NoticeQueue).
constexpr std::size_t kRemovalGroup = 32;
// What NoticeQueue sends (Notice::kind), each with its mcim_ro_notices_total series; "other"
// counts a kind an earlier version stored, taken up at start.
constexpr std::array<std::string_view, 6> kNoticeKinds = {
    "arrival", "attestation", "status", "discard", "instruction result", "other",
};
constexpr std::string_view kBearerRealm = "Bearer realm=\"mcim-ro\"";

// The service's logs are under kComponent.
void log_refusal(std::string_view what, const Error& e) {
  service_util::log_refusal(kComponent, what, e);
}
HttpResponse answer(std::string_view what, const Result<Json>& result, int ok_status = 200) {
  return service_util::answer(kComponent, what, result, ok_status);
}

// ---- Notices to the SHO (F2 steps 7, 9 and 14) ------------------------------------------------

struct Notice {
  std::string kind;     // "arrival", "status", ... for logs and the audit
  std::string subject;  // the PCID, package id, request id or instruction id
  std::string sho;
  std::string path;  // the SHO's route
  std::string url;
  std::string body;
  std::chrono::milliseconds delay{};  // before the next attempt after a failure
  unsigned attempts = 0;
};

// The outbox of notices to the home operators (docs/roles-ro.md "Notices"). A notice is stored
// (store::NoticeStore) before enqueue returns, so that what the RO has accepted and answered is
// told to the SHO even across a restart of the RO: start() takes up what an earlier run left, and
// stop() leaves what is not delivered for the next start. Delivery is at least once: a notice
// delivered just before a crash, whose removal was lost, goes again.
// `notify_workers` threads deliver in parallel (at hundreds of devices a second one connection at a
// time is the bottleneck of the flow; the SHO does not need the order): the earliest due notice
// first, a failed one again after its delay, which doubles up to kMaxRetryDelay. A 4xx answer
// other than 408/429 will not change on a retry: it is dropped and audited at once. Notices that
// cannot ever be delivered (no such SHO, no client) and those pushed out of a full outbox are
// audited and dropped too. Delivered and dropped notices leave the store in groups, one
// transaction for kRemovalGroup of them under load, or for those done so far when a worker finds
// nothing due.
class NoticeQueue final : public ArrivalNotifier,
                          public StatusRelay,
                          public AttestationRelay,
                          public InstructionResultRelay,
                          public DiscardRelay {
 public:
  NoticeQueue(store::NoticeStore& store, store::AuditStore& audit, const Clock& clock,
              const RoServiceConfig& config, net::Metrics& metrics)
      : store_(store),
        audit_(audit),
        clock_(clock),
        config_(config),
        pending_gauge_(metrics.gauge(
            "mcim_ro_notices_pending",
            "Notices to the home operators stored and not yet delivered or dropped.")) {
    for (std::string_view kind : kNoticeKinds) {
      std::string label(kind);
      std::replace(label.begin(), label.end(), ' ', '_');
      auto outcome = [&](const char* o) {
        return &metrics.counter(
            "mcim_ro_notices_total",
            "Notices to the home operators: deliveries, failed attempts retried, drops.",
            {{"kind", label}, {"outcome", o}});
      };
      counts_.emplace(std::string(kind),
                      KindCounts{outcome("delivered"), outcome("retried"), outcome("dropped")});
    }
  }
  ~NoticeQueue() override { stop(); }

  void start() {
    resume();
    const std::size_t n = std::max<std::size_t>(config_.notify_workers, 1);
    for (std::size_t i = 0; i < n; ++i) {
      workers_.emplace_back([this] { run(); });
      set_thread_name(workers_.back(), fmt::format("ro-notify-{}", i));
    }
  }

  void stop() {
    {
      std::lock_guard lock(mu_);
      if (stopped_) return;
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& w : workers_) {
      if (w.joinable()) w.join();
    }
    std::size_t left = 0;
    {
      std::lock_guard lock(mu_);
      left = pending_.size();
      pending_.clear();
      schedule_.clear();
      due_.clear();
      stopped_ = true;
      count_pending();
    }
    remove_done();
    if (left > 0) log::info(kComponent, "{} notice(s) kept for the next start", left);
    idle_.notify_all();
  }

  Result<void> device_arrived(const Arrival& a) override {
    Json body{{"pcid", a.pcid},
              {"device_id", a.device_id},
              {"sho", a.sho},
              {"time", unix_seconds(a.time)}};
    return enqueue("arrival", a.pcid, a.sho, "/v1/sho/arrivals", body);
  }

  Result<void> relay(const RelayedStatus& s) override {
    Json body{{"package_id", s.package_id},
              {"device_id", s.device_id},
              {"sho", s.sho},
              {"report", s.signed_report}};
    if (!s.discard_notice.empty()) body["discard_notice"] = s.discard_notice;  // F4
    return enqueue("status", s.package_id, s.sho, "/v1/sho/status", body);
  }

  // F4: to the old SHO, whose MCIM the TRE discarded.
  Result<void> relay_discard(const RelayedDiscard& d) override {
    Json body{{"device_id", d.device_id}, {"sho", d.sho}, {"report", d.signed_report}};
    return enqueue("discard", d.package_id, d.sho, "/v1/sho/discards", body);
  }

  Result<void> relay_instruction_result(const RelayedInstructionResult& r) override {
    Json body{{"instruction_id", r.instruction_id},
              {"device_id", r.device_id},
              {"sho", r.sho},
              {"report", r.signed_report}};
    return enqueue("instruction result", r.instruction_id, r.sho, "/v1/sho/instruction-results",
                   body);
  }

  Result<void> relay_attestation(const RelayedAttestation& a) override {
    Json body{{"request_id", a.request_id}, {"pcid", a.pcid},
              {"device_id", a.device_id},   {"sho", a.sho},
              {"report", a.report},         {"platform_chain", a.platform_chain}};
    return enqueue("attestation", a.request_id, a.sho, "/v1/sho/attestations", body);
  }

  std::size_t pending() const {
    std::lock_guard lock(mu_);
    return pending_.size() + in_flight_;
  }

  // Until every notice is delivered or dropped, and gone from the store.
  bool wait_idle(std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mu_);
    return idle_.wait_for(lock, timeout, [&] { return idle(); });
  }

 private:
  bool idle() const {  // under mu_
    return pending_.empty() && in_flight_ == 0 && done_.empty() && !removing_;
  }

  std::size_t capacity() const { return std::max<std::size_t>(config_.max_pending_notices, 1); }

  // Why `n` can never be delivered by this configuration, if it cannot; otherwise its URL.
  Result<std::string> url_of(const Notice& n) const {
    const auto endpoint = config_.shos.find(n.sho);
    if (endpoint == config_.shos.end()) {
      return fail(ErrorCode::not_found, fmt::format("notice: no endpoint for operator {}", n.sho));
    }
    if (!config_.notify_client) {
      return fail(ErrorCode::unsupported, "notice: no notify client configured");
    }
    return endpoint->second.base_url + n.path;
  }

  Result<void> enqueue(std::string kind, std::string_view subject, std::string_view sho,
                       std::string_view path, const Json& body) {
    Notice n{std::move(kind),
             std::string(subject),
             std::string(sho),
             std::string(path),
             "",
             body.dump(),
             {},
             0};
    auto url = url_of(n);
    if (!url) {
      drop(n, url.error());
      return std::unexpected(url.error());
    }
    n.url = std::move(*url);
    n.delay = config_.notify_retry;
    bool stopping = false;
    {
      std::lock_guard lock(mu_);
      stopping = stopping_;
    }
    if (stopping) {  // audited outside the lock, as every drop
      const Error e(ErrorCode::busy, "notice: the service is stopping");
      drop(n, e);
      return std::unexpected(e);
    }
    // Stored before anyone hears of it: the caller answers its own request after this. Inside
    // the audited change it reports, in that change's transaction, and handed to the workers
    // once it committed (detail::AfterCommit): a notice of a change undone is never sent.
    auto seq = store_.add(store::StoredNotice{0, n.kind, n.subject, n.sho, n.path, n.body,
                                              detail::seconds_of(clock_.now())});
    if (!seq) {
      drop(n, seq.error());
      return std::unexpected(seq.error());
    }
    detail::AfterCommit::defer([this, stored = *seq, n] { to_workers(stored, n); });
    return {};
  }

  // A stored notice to the workers.
  void to_workers(std::uint64_t seq, Notice n) {
    std::optional<Notice> evicted;
    {
      std::lock_guard lock(mu_);
      evicted = make_room();
      schedule(seq, std::move(n), std::chrono::steady_clock::now());
    }
    wake_.notify_one();
    if (evicted) {
      drop(*evicted, Error(ErrorCode::busy, "notice: the queue is full"));
      remove_done();
    }
  }

  // Under mu_: when the outbox is full, takes its oldest notice out (its removal from the store
  // goes with the next group).
  std::optional<Notice> make_room() {
    if (pending_.size() < capacity()) return std::nullopt;
    auto oldest = pending_.begin();
    schedule_.erase(schedule_.find({due_.at(oldest->first), oldest->first}));
    due_.erase(oldest->first);
    Notice n = std::move(oldest->second);
    done_.push_back(oldest->first);
    pending_.erase(oldest);
    count_pending();
    return n;
  }

  // What an earlier run left in the store, due now; beyond the capacity the oldest are dropped,
  // and so are those for an operator this configuration no longer knows.
  void resume() {
    auto stored = store_.pending(std::numeric_limits<std::size_t>::max());
    if (!stored) {
      log::error(kComponent, "notices left by an earlier run not read: {}", stored.error());
      return;
    }
    if (stored->empty()) return;
    std::vector<std::pair<Notice, Error>> dropped;
    std::size_t resumed = 0;
    {
      std::lock_guard lock(mu_);
      const auto now = std::chrono::steady_clock::now();
      for (store::StoredNotice& s : *stored) {
        Notice n{std::move(s.kind),
                 std::move(s.subject),
                 std::move(s.sho),
                 std::move(s.path),
                 "",
                 std::move(s.body),
                 config_.notify_retry,
                 0};
        auto url = url_of(n);
        if (!url) {
          done_.push_back(s.seq);
          dropped.emplace_back(std::move(n), url.error());
          continue;
        }
        n.url = std::move(*url);
        if (auto evicted = make_room()) {
          dropped.emplace_back(std::move(*evicted),
                               Error(ErrorCode::busy, "notice: the queue is full"));
        }
        schedule(s.seq, std::move(n), now);
        ++resumed;
      }
    }
    for (const auto& [n, e] : dropped) drop(n, e);
    remove_done();
    log::info(kComponent, "{} notice(s) left by an earlier run resumed", resumed);
  }

  // Under mu_.
  void schedule(std::uint64_t seq, Notice n, SteadyTime due) {
    pending_.emplace(seq, std::move(n));
    due_[seq] = due;
    schedule_.emplace(due, seq);
    count_pending();
  }

  void drop(const Notice& n, const Error& e) {
    count(n).dropped->inc();
    log::warn(kComponent, "notice {} for {} to {} dropped: {}", n.kind, n.subject,
              operator_principal(n.sho), e);
    (void)audited(audit_, detail::seconds_of(clock_.now()),
                  {"ro", "notice", n.subject, "ro",
                   fmt::format("{} to {}", n.kind, operator_principal(n.sho))},
                  Result<void>(std::unexpected(e)));
  }

  // Removes the delivered and dropped notices from the store, in one transaction, unless another
  // thread is doing so (it, or the next, takes these too). A failed removal is logged: those
  // notices would go again after a restart.
  void remove_done() {
    std::vector<std::uint64_t> seqs;
    {
      std::lock_guard lock(mu_);
      if (removing_ || done_.empty()) return;
      removing_ = true;
      seqs.swap(done_);
    }
    for (;;) {
      if (auto r = store_.remove(seqs); !r) {
        log::warn(kComponent, "{} delivered notice(s) not removed from the store: {}", seqs.size(),
                  r.error());
      }
      std::lock_guard lock(mu_);
      seqs.clear();
      if (done_.empty()) {
        removing_ = false;
        if (idle()) idle_.notify_all();
        return;
      }
      seqs.swap(done_);
    }
  }

  enum class Outcome { delivered, retry, permanent };

  void run() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      const bool nothing_due =
          schedule_.empty() || schedule_.begin()->first > std::chrono::steady_clock::now();
      if (nothing_due && !done_.empty() && !removing_) {  // a quiet moment: the removals now
        lock.unlock();
        remove_done();
        lock.lock();
        continue;
      }
      if (schedule_.empty()) {
        wake_.wait(lock, [&] { return stopping_ || !schedule_.empty(); });
        continue;
      }
      const auto [due, seq] = *schedule_.begin();
      if (due > std::chrono::steady_clock::now()) {
        wake_.wait_until(lock, due);
        continue;
      }
      schedule_.erase(schedule_.begin());
      due_.erase(seq);
      Notice n = std::move(pending_.at(seq));
      pending_.erase(seq);
      ++in_flight_;  // still pending: no count_pending()
      lock.unlock();
      const Outcome outcome = deliver(n);
      lock.lock();
      if (outcome == Outcome::retry) {
        // While stopping it stays in the store for the next start; stop() clears the schedule.
        const auto retry_at = std::chrono::steady_clock::now() + n.delay;
        n.delay = std::min(n.delay * 2, kMaxRetryDelay);
        --in_flight_;
        schedule(seq, std::move(n), retry_at);
      } else {
        done_.push_back(seq);
        --in_flight_;
        count_pending();
        if (done_.size() >= kRemovalGroup) {
          lock.unlock();
          remove_done();
          lock.lock();
        }
      }
      if (idle()) idle_.notify_all();
    }
  }

  // 408 and 429 ask to come back later; any other 4xx refuses this notice for good.
  static bool permanent(int status) {
    return status >= 400 && status < 500 && status != 408 && status != 429;
  }

  Outcome deliver(Notice& n) {
    ++n.attempts;
    auto r = config_.notify_client->request("POST", n.url, n.body, net::kJsonContentType);
    if (r && r->status >= 200 && r->status < 300) {
      count(n).delivered->inc();
      log::info(kComponent, "notice {} for {} delivered to {} (attempt {})", n.kind, n.subject,
                operator_principal(n.sho), n.attempts);
      return Outcome::delivered;
    }
    if (r && permanent(r->status)) {
      // Audited before the count drops, so that wait_idle() sees the record.
      drop(n, net::error_from_response(*r, operator_principal(n.sho)));
      return Outcome::permanent;
    }
    count(n).retried->inc();
    const std::string why = r ? fmt::format("HTTP {}", r->status) : fmt::format("{}", r.error());
    log::warn(kComponent, "notice {} for {} to {} failed ({}), attempt {}, retry in {} ms", n.kind,
              n.subject, operator_principal(n.sho), why, n.attempts, n.delay.count());
    return Outcome::retry;
  }

  // The metrics of a notice's kind (one of kNoticeKinds).
  struct KindCounts {
    net::Counter *delivered, *retried, *dropped;
  };
  const KindCounts& count(const Notice& n) const {
    const auto it = counts_.find(n.kind);
    return it != counts_.end() ? it->second : counts_.at("other");
  }
  // Under mu_: the gauge follows pending() (waiting and being delivered).
  void count_pending() { pending_gauge_.set(static_cast<double>(pending_.size() + in_flight_)); }

  store::NoticeStore& store_;
  store::AuditStore& audit_;
  const Clock& clock_;
  const RoServiceConfig& config_;
  net::Gauge& pending_gauge_;
  std::map<std::string, KindCounts, std::less<>> counts_;  // fixed at construction
  mutable std::mutex mu_;
  std::condition_variable wake_;
  mutable std::condition_variable idle_;
  // Guarded by mu_:
  std::map<std::uint64_t, Notice> pending_;  // by store seq: the first is the oldest
  std::map<std::uint64_t, SteadyTime> due_;
  std::set<std::pair<SteadyTime, std::uint64_t>> schedule_;
  std::vector<std::uint64_t> done_;  // delivered or dropped, still in the store
  bool removing_ = false;
  std::size_t in_flight_ = 0;
  bool stopping_ = false, stopped_ = false;
  std::vector<std::thread> workers_;
};

Result<void> check_config(const RoServiceConfig& c) {
  if (c.operator_id.empty()) return fail(ErrorCode::missing_argument, "operator_id: required");
  if (!pki::valid_mcim_id(c.operator_id)) {
    return fail(ErrorCode::invalid_argument, "operator_id: must be an id");
  }
  if (!c.supplier_roots) return fail(ErrorCode::missing_argument, "supplier_roots: required");
  if (!c.operator_roots) return fail(ErrorCode::missing_argument, "operator_roots: required");
  if (!c.icf_key || !c.icf_key->key || c.icf_key->certs.empty() || !c.icf_key->cert()) {
    return fail(ErrorCode::missing_argument, "icf_key: a key and its certificate are required");
  }
  // Batches are sealed by ECDH to this certificate: an RSA or foreign-curve key, or one that is
  // not the certificate's, would refuse every batch at run time.
  if (!pki::is_p256(c.icf_key->key.get())) {
    return fail(ErrorCode::invalid_argument, "icf_key: must be an EC P-256 key (ECDH)");
  }
  if (X509_check_private_key(c.icf_key->cert(), c.icf_key->key.get()) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::invalid_argument, "icf_key: the key is not its certificate's");
  }
  for (const auto& [id, endpoint] : c.shos) {
    auto url = net::parse_url(endpoint.base_url);
    if (!url || !url->tls || url->target != "/") {
      return fail(ErrorCode::invalid_argument,
                  fmt::format("shos.{}.base_url: must be https://host:port", id));
    }
  }
  if (c.max_batch_bytes == 0) {
    return fail(ErrorCode::invalid_argument, "max_batch_bytes: must be positive");
  }
  if (c.notify_retry <= std::chrono::milliseconds(0)) {
    return fail(ErrorCode::invalid_argument, "notify_retry: must be positive");
  }
  if (c.max_poll_wait < std::chrono::seconds(0) || c.max_held_polls == 0) {
    return fail(ErrorCode::invalid_argument,
                "max_poll_wait, max_held_polls: must not be negative, resp. zero");
  }
  if (c.renewal.signer && (!c.renewal.signer->key || c.renewal.signer->certs.empty() ||
                           pki::signer_operator_id(c.renewal.signer->cert()) != c.operator_id)) {
    return fail(ErrorCode::invalid_argument,
                "renewal.package_signer: must name this RO (urn:mcim:operator:<operator_id>)");
  }
  if (c.drf.change_attempts == 0 || c.drf.change_window < std::chrono::seconds(1)) {
    return fail(ErrorCode::invalid_argument,
                "drf.change_attempts, drf.change_window: must be at least 1, resp. 1 s");
  }
  if (c.notify_workers == 0 || c.notify_workers > kMaxNotifyWorkers) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("notify_workers: must be 1..{}", kMaxNotifyWorkers));
  }
  return {};
}

}  // namespace

// ---- The service's state: shared by every handler thread ---------------------------------------

struct RoService::State {
  State(store::Database& database, RoServiceConfig c, const Clock& clk)
      : db(database),
        config(std::move(c)),
        clock(clk),
        router("ro"),
        notices(database.notices(), database.audit(), clk, config, router.metrics()),
        polls(config.max_held_polls),
        dpf_sessions(config.max_dpf_sessions) {}

  store::Database& db;
  const RoServiceConfig config;
  const Clock& clock;
  net::Router router;
  NoticeQueue notices;
  PollWaiters polls;
  InstructionQueue instructions{db.instructions()};  // F9 (management.h), in the database
  DpfSessions dpf_sessions;       // F4: operational devices' DPF sessions (dpf_sessions.h)
  SuccessorRefusals refusers;     // F4: who refused, when a successor did (dpf_sessions.h)
  ChangeAttempts change_attempts;  // F4: wrong PINs on change orders, by PCID (drf.h)

  std::mutex expiry_mu;
  std::condition_variable expiry_cv;
  bool expiry_stopping = false;
  std::thread expiry;

  store::Time now() const { return detail::seconds_of(clock.now()); }
  void flow(std::string_view step) const { router.metrics().flow_step(step); }

  Icf icf() { return Icf(db, clock, thread_random(), config.icf); }
  Drf drf() { return Drf(db, notices, clock, thread_random(), config.drf, &change_attempts); }
  Dpf dpf() {
    return Dpf(db, {notices, notices, notices}, *config.operator_roots, *config.supplier_roots,
               clock);
  }
  DirectAccess direct(Icf& icf) {
    return DirectAccess(db, icf, *config.supplier_roots, clock, thread_random(), config.direct);
  }
  Management management() {
    return Management(db.registrations(), db.audit(), instructions, notices, *config.operator_roots,
                      *config.supplier_roots, clock);
  }

  Result<void> add_routes();
  Result<std::uint64_t> expire_dormant();
  void expire_loop();
  void stop();

  // Operator endpoints.
  HttpResponse import_batch(const Request& r);
  Result<Json> register_pcid(const Request& r);
  Result<void> unregister(const Request& r);
  Result<Json> transfer(const Request& r);
  Result<Json> change_operator(const Request& r);
  Result<Json> activate(const Request& r);
  Result<Json> store_package(const Request& r);

  // Device endpoints. The ICF's sessions authenticate every device route; a DPF session (F4,
  // dpf_sessions.h) only those that accept it (`dpf_session_ok`).
  Result<store::Session> device_session(const Request& r, bool dpf_session_ok);
  Result<store::Registration> registration_of(std::string_view pcid);
  Result<Json> refuse_device(const Request& r);
  HttpResponse bootstrap(const store::Session& s);
  Result<Json> fetch_package(const store::Session& s);
  Result<Json> report(const Request& r, const Json& body, const store::Session& s);
  Result<Json> attestation_request(const store::Session& s);
  // look(), or when it finds nothing yet (not_found) and the device asked to wait, the request
  // held until the SHO puts something for the session's PCID or the wait is over.
  HttpResponse held_poll(const Request& r, const store::Session& s, std::string_view what,
                         const std::function<Result<Json>()>& look);
  Result<Json> answer_attestation(const Request& r, const Json& body, const store::Session& s);
  Result<Json> renewal_offer(const Request& r, const Json& body, const store::Session& s);
  Result<Json> renewal_report(const Request& r, const Json& body, const store::Session& s);
  PcidRenewer renewer() {
    return PcidRenewer(db, *config.supplier_roots, clock, thread_random(), config.renewal);
  }

  // SHO endpoints of the attestation (F2 step 7).
  Result<Json> request_attestation(const Request& r);

  // Direct access (F3 without AKA): no session yet, the platform key instead.
  Result<Json> direct_challenge(const Request& r);
  Result<Json> direct_session(const Request& r);
  Result<void> add_direct_routes();

  // A route answering fn's JSON with `ok` (json_handler over a member of this State).
  net::RouteHandler json_route(std::string_view what, Result<Json> (State::*fn)(const Request&),
                               int ok = 200);
  // The body of a platform-key proof (direct sessions, management collection): the attestation
  // over the RO's challenge, the platform chain, the PCID and the challenge's id.
  static JsonSchema direct_proof_schema();

  // Remote management (F9): the SHO queues, the operational device collects and answers.
  Result<Json> queue_instruction(const Request& r);
  Result<Json> collect_instructions(const Request& r);
  Result<Json> open_dpf_session(const Request& r);
  // The platform key's proof of a request body (direct_proof_schema), DirectAccess::prove audited
  // under `purpose`: the registration it proved.
  Result<store::Registration> prove_platform_key(const Request& r, std::string_view purpose);
  Result<Json> answer_instruction(const Request& r);
  Result<void> add_management_routes();
};

// ---- Operator endpoints ---------------------------------------------------------------------

HttpResponse RoService::State::import_batch(const Request& r) {
  if (!media_type_is(r.http.content_type, kCmsContentType)) {
    return net::error_response(415, net::kUnsupportedMediaType,
                               "body: Content-Type must be application/cms");
  }
  const std::string caller = caller_of(r);
  const std::string principal = fmt::format("supplier:{}", caller);
  const ByteView body(reinterpret_cast<const std::uint8_t*>(r.http.body.data()),
                      r.http.body.size());
  std::string subject = "-";
  auto opened = [&]() -> Result<supplier::PcidBatch> {
    auto batch = supplier::open_batch(body, config.icf_key->cert(), config.icf_key->key.get(),
                                      *config.supplier_roots, clock);
    if (!batch) return batch;
    subject = batch->batch_id;
    if (batch->supplier_id != caller) {
      return fail(ErrorCode::access_denied, "batch: signed by another supplier than the caller");
    }
    if (batch->ro_operator != config.operator_id) {
      return fail(ErrorCode::wrong_recipient, "batch: ro_operator is another operator");
    }
    return batch;
  }();
  if (!opened) {
    // The ICF audits imports; refusals of the envelope are recorded here.
    (void)audited(db.audit(), now(), {"icf", "import-batch", subject, principal, ""},
                  Result<void>(std::unexpected(opened.error())));
    return answer("batch", std::unexpected(opened.error()));
  }
  std::vector<store::PcidSubscription> subs;
  subs.reserve(opened->records.size());
  for (const supplier::PcidRecord& rec : opened->records) {
    store::PcidSubscription s;
    s.pcid = rec.pcid;
    s.k = rec.k;
    s.opc = rec.opc;
    s.ind_bits = rec.ind_bits;
    s.not_after = rec.not_after;
    subs.push_back(std::move(s));
  }
  auto imported = icf().import_batch(opened->batch_id, std::move(subs), principal);
  Result<Json> result = imported ? Result<Json>(Json{{"batch_id", opened->batch_id},
                                                     {"supplier", opened->supplier_id},
                                                     {"imported", *imported}})
                                 : std::unexpected(imported.error());
  if (result) {
    flow("batch_imported");
    log::info(kComponent, "batch {} of supplier {}: {} pcids imported", opened->batch_id, caller,
              *imported);
  }
  return answer("batch", result, 201);
}

Result<Json> RoService::State::register_pcid(const Request& r) {
  const std::string caller = caller_of(r);
  store::Registration reg;
  reg.pcid = std::string(r.param("pcid"));
  reg.device_id = r.json.at("device_id").get<std::string>();
  reg.sho = caller;
  reg.dpf_url = r.json.at("dpf_url").get<std::string>();
  auto pin = parse_hex_fixed<32>(r.json.at("dpf_key_pin").get<std::string>(), "dpf_key_pin");
  if (!pin) return std::unexpected(pin.error());
  reg.dpf_key_pin = *pin;
  reg.apn = r.json.at("apn").get<std::string>();
  const std::string& device_pin = r.json.at("pin").get_ref<const std::string&>();
  if (auto done = drf().register_pcid(reg, device_pin, caller); !done) {
    return std::unexpected(done.error());
  }
  flow("registered");
  return Json{{"pcid", reg.pcid}, {"sho", reg.sho}, {"device_id", reg.device_id}};
}

Result<void> RoService::State::unregister(const Request& r) {
  return drf().unregister(r.param("pcid"), caller_of(r));
}

// F5: only to a home operator this RO works with (it must be able to tell it of arrivals).
Result<Json> RoService::State::transfer(const Request& r) {
  const std::string pcid(r.param("pcid"));
  const std::string to = r.json.at("to").get<std::string>();
  if (!config.shos.contains(to)) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("to: {} is no home operator of this RO", to));
  }
  if (auto done = drf().transfer(pcid, caller_of(r), to); !done) {
    return std::unexpected(done.error());
  }
  flow("registration_transferred");
  log::info(kComponent, "pcid {}: registration handed from {} to {}", pcid, caller_of(r), to);
  return Json{{"pcid", pcid}, {"sho", to}};
}

// F4 steps 1-2: the new SHO, on the owner's order (the device's PIN), becomes the successor. Only
// a home operator this RO works with: it must be able to take the notices that follow.
Result<Json> RoService::State::change_operator(const Request& r) {
  const std::string caller = caller_of(r);
  const std::string pcid(r.param("pcid"));
  if (!config.shos.contains(caller)) {
    return audited(
        db.audit(), now(), {"drf", "change", pcid, operator_principal(caller), ""},
        Result<Json>(fail(ErrorCode::access_denied,
                          fmt::format("operator {}: no home operator of this RO", caller))));
  }
  const std::string& pin = r.json.at("pin").get_ref<const std::string&>();
  if (auto done = drf().change(pcid, r.json.at("device_id").get<std::string>(), pin, caller);
      !done) {
    return std::unexpected(done.error());
  }
  refusers.forget(pcid);  // the order cleared the refusal
  flow("change_ordered");
  log::info(kComponent, "pcid {}: change to {} ordered", pcid, operator_principal(caller));
  // Nothing of the holder: the new SHO learns nothing of the old subscription.
  return Json{{"pcid", pcid}, {"successor", caller}, {"status", "pending"}};
}

Result<Json> RoService::State::activate(const Request& r) {
  const std::string caller = caller_of(r);
  const std::string pcid(r.param("pcid"));
  // The ICF records who asked but leaves the authorisation to us: only the PCID's home.
  auto allowed = [&]() -> Result<void> {
    auto reg = db.registrations().find(pcid);
    if (!reg) return std::unexpected(reg.error());
    if (!*reg) return fail(ErrorCode::not_found, fmt::format("pcid {}: not registered", pcid));
    if ((*reg)->sho != caller) {
      return fail(ErrorCode::access_denied,
                  fmt::format("pcid {}: registered by another SHO", pcid));
    }
    return {};
  }();
  if (!allowed) {
    (void)audited(db.audit(), now(), {"icf", "activate", pcid, operator_principal(caller), ""},
                  Result<void>(allowed));
    return std::unexpected(allowed.error());
  }
  const std::int64_t window = r.json.at("window_s").get<std::int64_t>();
  auto until = icf().activate(pcid, std::chrono::seconds(window), operator_principal(caller));
  if (!until) return std::unexpected(until.error());
  return Json{{"pcid", pcid}, {"active_until", unix_seconds(*until)}};
}

Result<Json> RoService::State::store_package(const Request& r) {
  PackageHandover h;
  h.pcid = r.json.at("pcid").get<std::string>();
  h.device_id = r.json.at("device_id").get<std::string>();
  h.package_id = r.json.at("package_id").get<std::string>();
  auto bytes = parse_hex(r.json.at("package").get<std::string>(), "package");
  if (!bytes) return std::unexpected(bytes.error());
  h.package = std::move(*bytes);
  if (auto stored = dpf().store_package(h, caller_of(r)); !stored) {
    return std::unexpected(stored.error());
  }
  flow("package_stored");
  polls.notify(h.pcid);
  return Json{{"package_id", h.package_id}, {"status", "pending"}};
}

Result<Json> RoService::State::request_attestation(const Request& r) {
  AttestationAsk ask;
  ask.pcid = r.json.at("pcid").get<std::string>();
  ask.device_id = r.json.at("device_id").get<std::string>();
  ask.request_id = r.json.at("request_id").get<std::string>();
  auto nonce = parse_hex(r.json.at("nonce").get<std::string>(), "nonce");
  if (!nonce) return std::unexpected(nonce.error());
  ask.nonce = std::move(*nonce);
  if (auto asked = dpf().request_attestation(ask, caller_of(r)); !asked) {
    return std::unexpected(asked.error());
  }
  flow("attestation_requested");
  polls.notify(ask.pcid);
  return Json{{"request_id", ask.request_id}, {"status", "pending"}};
}

Result<Json> RoService::State::refuse_device(const Request& r) {
  const std::string pcid = r.json.at("pcid").get<std::string>();
  const std::string device_id = r.json.at("device_id").get<std::string>();
  const std::string code = r.json.at("code").get<std::string>();
  auto refused = dpf().refuse(pcid, device_id, code, caller_of(r));
  if (!refused) return std::unexpected(refused.error());
  if (refused->sho != caller_of(r)) {
    refusers.record(pcid, caller_of(r), *refused);
  } else {
    refusers.forget(pcid);
  }
  flow("refusal_recorded");
  polls.notify(pcid);  // a held poll answers with the refusal now
  return Json{{"pcid", pcid}, {"refusal", code}};
}

// ---- Device endpoints -----------------------------------------------------------------------

// The VNO opened the session after AKA: holding its id is what authenticates the device, so the
// id is checked for shape before it reaches the store and never appears in a message.
Result<store::Session> RoService::State::device_session(const Request& r, bool dpf_session_ok) {
  if (r.http.header("Authorization").empty()) {
    return fail(ErrorCode::unauthenticated, "Authorization: a Bearer session is required");
  }
  const auto bearer = bearer_token(r);
  if (!bearer) return fail(ErrorCode::unauthenticated, "Authorization: must be Bearer <session>");
  const std::string_view token = *bearer;
  const bool well_formed =
      token.size() == 32 && std::all_of(token.begin(), token.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      });
  if (!well_formed) {
    return fail(ErrorCode::unauthenticated, "Authorization: not a session id");
  }
  if (dpf_session_ok) {
    if (auto dpf_session = dpf_sessions.find(token, now())) return std::move(*dpf_session);
  }
  auto found = db.sessions().find(token);
  if (!found) return std::unexpected(found.error());
  if (!*found || (*found)->expires <= now()) {
    return fail(ErrorCode::unauthenticated, "session: unknown or expired");
  }
  return std::move(**found);
}

Result<store::Registration> RoService::State::registration_of(std::string_view pcid) {
  auto reg = db.registrations().find(pcid);
  if (!reg) return std::unexpected(reg.error());
  if (!*reg) return fail(ErrorCode::not_found, fmt::format("pcid {}: not registered", pcid));
  return std::move(**reg);
}

HttpResponse RoService::State::bootstrap(const store::Session& s) {
  auto text = drf().discover(s.imsi, s.imsi);
  if (!text) {
    log_refusal("discovery", text.error());
    return net::error_response(text.error());
  }
  flow("discovery");
  HttpResponse out;
  out.content_type = std::string(net::kJsonContentType);
  out.body = std::move(*text);
  out.headers.emplace_back("Cache-Control", "no-store");
  return out;
}

Result<Json> RoService::State::fetch_package(const store::Session& s) {
  auto reg = registration_of(s.imsi);
  if (!reg) return std::unexpected(reg.error());
  if (auto refused = Dpf::refusal_of(*reg, refusers.refused_by(*reg)); !refused) {
    return std::unexpected(refused.error());
  }
  auto p = dpf().fetch(*reg, reg->device_id);
  if (!p) return std::unexpected(p.error());
  flow("package_delivered");
  return Json{{"package_id", p->package_id}, {"package", to_hex(p->package)}};
}

Result<Json> RoService::State::report(const Request& r, const Json& body, const store::Session& s) {
  const std::string package_id(r.param("package_id"));
  auto reg = registration_of(s.imsi);
  if (!reg) return std::unexpected(reg.error());
  auto package = db.packages().find(package_id);
  if (!package) return std::unexpected(package.error());
  if (!*package) {
    return fail(ErrorCode::not_found, fmt::format("package {}: unknown", package_id));
  }
  if ((*package)->device_id != reg->device_id) {
    return audited(db.audit(), now(),
                   {"dpf", "report", package_id, fmt::format("pcid:{}", s.imsi), ""},
                   Result<Json>(fail(ErrorCode::access_denied,
                                     fmt::format("package {}: not this device's", package_id))));
  }
  auto chain = parse_platform_chain(body.at("platform_chain"));
  if (!chain) return std::unexpected(chain.error());
  const std::vector<X509*> raw = raw_chain(*chain);
  DiscardAcks acks;
  if (body.contains("discard_report")) acks.report = body.at("discard_report").get<std::string>();
  if (body.contains("discard_notice")) acks.notice = body.at("discard_notice").get<std::string>();
  auto reported = dpf().report(*reg, package_id, body.at("report").get<std::string>(), raw, acks);
  if (!reported) return std::unexpected(reported.error());
  flow("status_reported");
  if (reported->operator_changed) {
    flow("operator_changed");
    log::info(kComponent, "pcid {}: registration handed to {} (F4)", s.imsi,
              operator_principal((*package)->sho));
  }
  return Json{{"package_id", package_id}, {"outcome", reported->report.outcome}};
}

Result<Json> RoService::State::attestation_request(const store::Session& s) {
  auto reg = registration_of(s.imsi);
  if (!reg) return std::unexpected(reg.error());
  if (auto refused = Dpf::refusal_of(*reg, refusers.refused_by(*reg)); !refused) {
    return std::unexpected(refused.error());
  }
  auto next = dpf().next_attestation_request(*reg);
  if (!next) return std::unexpected(next.error());
  return Json{{"request_id", next->request_id}, {"nonce", to_hex(next->nonce)}};
}

HttpResponse RoService::State::held_poll(const Request& r, const store::Session& s,
                                         std::string_view what,
                                         const std::function<Result<Json>()>& look) {
  const std::uint64_t seen = polls.version(s.imsi);
  Result<Json> result = look();
  if (!result && result.error().code == ErrorCode::not_found && polls.accepting()) {
    const auto wait = std::min(preferred_wait(r.http.header("Prefer")), config.max_poll_wait);
    const auto deadline = r.http.received + wait;
    if (wait > std::chrono::seconds(0) && deadline > std::chrono::steady_clock::now()) {
      HttpResponse held;
      held.hold = [this, pcid = s.imsi, seen, deadline](net::Wake wake) {
        polls.wait(pcid, seen, deadline, std::move(wake));
      };
      return held;
    }
  }
  return answer(what, std::move(result));
}

Result<Json> RoService::State::answer_attestation(const Request& r, const Json& body,
                                                  const store::Session& s) {
  const std::string request_id(r.param("request_id"));
  auto reg = registration_of(s.imsi);
  if (!reg) return std::unexpected(reg.error());
  std::vector<std::string> chain;
  for (const Json& pem : body.at("platform_chain")) chain.push_back(pem.get<std::string>());
  auto answered = dpf().answer_attestation(request_id, reg->device_id,
                                           body.at("report").get<std::string>(), std::move(chain));
  if (!answered) return std::unexpected(answered.error());
  flow("attestation_relayed");
  return Json{{"request_id", request_id}, {"status", "relayed"}};
}

// ---- PCID renewal (F8) -------------------------------------------------------------------------

// The device on its PCID session; the RO decides whether its credential is due.
Result<Json> RoService::State::renewal_offer(const Request&, const Json& body,
                                             const store::Session& s) {
  auto chain = parse_platform_chain(body.at("platform_chain"));
  if (!chain) return std::unexpected(chain.error());
  auto offer = renewer().offer(s.imsi, raw_chain(*chain));
  if (!offer) return std::unexpected(offer.error());
  flow("pcid_renewal_offered");
  return Json{{"package_id", offer->package_id},
              {"package", to_hex(offer->package)},
              {"not_after", unix_seconds(offer->not_after)}};
}

Result<Json> RoService::State::renewal_report(const Request& r, const Json& body,
                                              const store::Session& s) {
  const std::string package_id(r.param("package_id"));
  auto chain = parse_platform_chain(body.at("platform_chain"));
  if (!chain) return std::unexpected(chain.error());
  auto outcome =
      renewer().report(s.imsi, package_id, body.at("report").get<std::string>(), raw_chain(*chain));
  if (!outcome) return std::unexpected(outcome.error());
  flow("pcid_renewal_reported");
  return Json{{"package_id", package_id}, {"outcome", *outcome}};
}

// ---- Direct access (F3 without AKA) ------------------------------------------------------------

// Nobody is authenticated here yet: the DirectAccess decides, and audits, everything.
Result<Json> RoService::State::direct_challenge(const Request& r) {
  Icf sessions = icf();
  auto c = direct(sessions).issue_challenge(r.json.at("pcid").get<std::string>());
  if (!c) return std::unexpected(c.error());
  flow("direct_challenge");
  return Json{{"challenge_id", c->challenge_id},
              {"nonce", to_hex(c->nonce)},
              {"expires", unix_seconds(c->expires)}};
}

Result<Json> RoService::State::direct_session(const Request& r) {
  const std::string pcid = r.json.at("pcid").get<std::string>();
  auto chain = parse_platform_chain(r.json.at("platform_chain"));
  if (!chain) {
    // A PEM that does not parse is a refused proof like any other: on the DRF's record.
    return audited(db.audit(), now(),
                   {"drf", "direct-session", pcid, fmt::format("pcid:{}", pcid), ""},
                   Result<Json>(std::unexpected(chain.error())));
  }
  Icf sessions = icf();
  auto s =
      direct(sessions).open_session({pcid, r.json.at("challenge_id").get<std::string>(),
                                     r.json.at("report").get<std::string>(), raw_chain(*chain)});
  if (!s) return std::unexpected(s.error());
  flow("direct_session");
  // The answer of a restricted attach, without the VNO's parts (no VNO session, no gateway).
  Json out{{"home_session", s->id},
           {"imsi", s->imsi},
           {"restricted", s->restricted},
           {"expires", unix_seconds(s->expires)}};
  if (!config.direct_drf_url.empty()) out["drf_url"] = config.direct_drf_url;
  return out;
}

net::RouteHandler RoService::State::json_route(std::string_view what,
                                               Result<Json> (State::*fn)(const Request&), int ok) {
  return json_handler(
      kComponent, what, [s = this, fn](const Request& r) { return (s->*fn)(r); }, ok);
}

JsonSchema RoService::State::direct_proof_schema() {
  std::vector<net::JsonMember> proof = platform_report_fields();
  proof.push_back(net::required("pcid", imsi_schema()));
  proof.push_back(net::required("challenge_id", JsonSchema::hex(16)));
  return JsonSchema::object(std::move(proof));
}

Result<void> RoService::State::add_direct_routes() {
  using net::required;
  // No authoriser: the device has no identity yet. The body bound is the device routes'.
  const std::array<Result<void>, 2> added = {
      router.add("POST", "/v1/drf/direct/challenges",
                 json_route("direct challenge", &State::direct_challenge, 201),
                 RouteOptions{nullptr, JsonSchema::object({required("pcid", imsi_schema())}),
                              kMaxJsonBody}),
      router.add("POST", "/v1/drf/direct/sessions",
                 json_route("direct session", &State::direct_session, 201),
                 RouteOptions{nullptr, direct_proof_schema(), kMaxJsonBody}),
  };
  for (const auto& a : added) {
    if (!a) return a;
  }
  return {};
}

// ---- Remote management (F9) ---------------------------------------------------------------------

Result<Json> RoService::State::queue_instruction(const Request& r) {
  InstructionHandover h;
  h.pcid = r.json.at("pcid").get<std::string>();
  h.device_id = r.json.at("device_id").get<std::string>();
  h.instruction_id = r.json.at("instruction_id").get<std::string>();
  h.instruction = r.json.at("instruction").get<std::string>();
  auto q = management().queue(h, caller_of(r));
  if (!q) return std::unexpected(q.error());
  flow("instruction_queued");
  return Json{{"instruction_id", q->instruction_id},
              {"sequence", q->sequence},
              {"status", to_string(q->status)}};
}

Result<store::Registration> RoService::State::prove_platform_key(const Request& r,
                                                                 std::string_view purpose) {
  const std::string pcid = r.json.at("pcid").get<std::string>();
  auto chain = parse_platform_chain(r.json.at("platform_chain"));
  if (!chain) {
    return audited(db.audit(), now(), {"dpf", purpose, pcid, fmt::format("pcid:{}", pcid), ""},
                   Result<store::Registration>(std::unexpected(chain.error())));
  }
  Icf sessions = icf();
  return direct(sessions).prove({pcid, r.json.at("challenge_id").get<std::string>(),
                                 r.json.at("report").get<std::string>(), raw_chain(*chain)},
                                purpose);
}

// The device is operational: no session, its platform key instead (the direct-access proof).
Result<Json> RoService::State::collect_instructions(const Request& r) {
  auto reg = prove_platform_key(r, "instruction-collect");
  if (!reg) return std::unexpected(reg.error());
  auto collected = management().collect(*reg);
  if (!collected) return std::unexpected(collected.error());
  Json list = Json::array();
  for (const QueuedInstruction& q : *collected) {
    list.push_back(Json{{"instruction_id", q.instruction_id}, {"instruction", q.instruction}});
  }
  flow("instructions_collected");
  return Json{{"device_id", reg->device_id}, {"instructions", std::move(list)}};
}

// F4 step 4: the operational device, attached with its old SHO's IMSI, proves its platform key
// and gets a session for the DPF's provisioning routes only. The id is a bearer token: never
// logged, audited or echoed anywhere but in this answer.
Result<Json> RoService::State::open_dpf_session(const Request& r) {
  auto reg = prove_platform_key(r, "management-session");
  if (!reg) return std::unexpected(reg.error());
  store::Session s;
  s.id = to_hex(thread_random().draw<16>());
  s.imsi = reg->pcid;
  s.vno = std::string(kDpfSessionHolder);
  s.restricted = true;
  s.created = now();
  s.expires = s.created + config.icf.session_lifetime;
  Json out{{"session", s.id}, {"expires", unix_seconds(s.expires)}};
  dpf_sessions.put(std::move(s), now());
  flow("management_session");
  return out;
}

// The TRE's signed answer authenticates itself: it verifies only with the device's platform key.
Result<Json> RoService::State::answer_instruction(const Request& r) {
  const std::string id(r.param("instruction_id"));
  auto chain = parse_platform_chain(r.json.at("platform_chain"));
  if (!chain) return std::unexpected(chain.error());
  auto report = management().answer(id, r.json.at("report").get<std::string>(), raw_chain(*chain));
  if (!report) return std::unexpected(report.error());
  flow("instruction_answered");
  return Json{{"instruction_id", id}, {"outcome", report->outcome}};
}

Result<void> RoService::State::add_management_routes() {
  using net::required;
  const std::array<Result<void>, 5> added = {
      router.add(
          "POST", "/v1/dpf/instructions", json_route("instruction", &State::queue_instruction, 201),
          RouteOptions{net::require_operator_if([](std::string_view) { return true; }),
                       JsonSchema::object(
                           {required("pcid", imsi_schema()), required("device_id", id_schema()),
                            required("instruction_id", id_schema()),
                            required("instruction", JsonSchema::string(kMaxReportSize))}),
                       kMaxJsonBody}),
      // The direct-access challenge, served whether or not direct access is.
      router.add("POST", "/v1/dpf/management/challenges",
                 json_route("management challenge", &State::direct_challenge, 201),
                 RouteOptions{nullptr, JsonSchema::object({required("pcid", imsi_schema())}),
                              kMaxJsonBody}),
      router.add("POST", "/v1/dpf/management/instructions",
                 json_route("instruction collect", &State::collect_instructions, 200),
                 RouteOptions{nullptr, direct_proof_schema(), kMaxJsonBody}),
      router.add("POST", "/v1/dpf/management/sessions",
                 json_route("management session", &State::open_dpf_session, 201),
                 RouteOptions{nullptr, direct_proof_schema(), kMaxJsonBody}),
      router.add("POST", "/v1/dpf/instructions/{instruction_id}/result",
                 json_route("instruction result", &State::answer_instruction, 200),
                 RouteOptions{nullptr, JsonSchema::object(platform_report_fields()), kMaxJsonBody}),
  };
  for (const auto& a : added) {
    if (!a) return a;
  }
  return {};
}

// ---- Routes -----------------------------------------------------------------------------------

Result<void> RoService::State::add_routes() {
  using net::required;
  auto any_operator = [] {
    return net::require_operator_if([](std::string_view) { return true; });
  };
  auto json = [](net::Authorizer a, JsonSchema schema, std::size_t max = kMaxJsonBody) {
    return RouteOptions{std::move(a), std::move(schema), max};
  };
  auto bare = [](net::Authorizer a) {
    return RouteOptions{std::move(a), std::nullopt, kMaxJsonBody};
  };
  const JsonSchema report_schema = JsonSchema::object(platform_report_fields());
  // F4: the install report may come with the TRE's two discard acknowledgements.
  std::vector<net::JsonMember> package_report = platform_report_fields();
  package_report.push_back(net::optional("discard_report", JsonSchema::string(kMaxReportSize)));
  package_report.push_back(net::optional("discard_notice", JsonSchema::string(kMaxReportSize)));
  const JsonSchema package_report_schema = JsonSchema::object(std::move(package_report));
  State* s = this;

  // A JSON answer (json_route), or 204 for the removals.
  auto void_route = [s](std::string_view what, Result<void> (State::*fn)(const Request&)) {
    return void_handler(kComponent, what, [s, fn](const Request& r) { return (s->*fn)(r); });
  };
  // Device routes: the Bearer session first; its refusal carries the challenge. Those of the
  // provisioning (`dpf`) take an operational device's DPF session too (F4).
  auto device_route = [s](std::string_view what, auto fn, bool dpf = false) {
    return [s, what, fn, dpf](const Request& r) -> HttpResponse {
      auto session = s->device_session(r, dpf);
      if (!session) {
        log_refusal(what, session.error());
        HttpResponse out = net::error_response(session.error());
        if (out.status == 401) out.headers.emplace_back("WWW-Authenticate", kBearerRealm);
        return out;
      }
      return fn(r, *session);
    };
  };
  // Device routes with a JSON body: the session is checked before the body is parsed, so that a
  // device without one learns that first; the body then gets the router's checks by hand.
  using DeviceJsonFn = Result<Json> (State::*)(const Request&, const Json&, const store::Session&);
  auto device_json_route = [s, device_route](std::string_view what, const JsonSchema& schema,
                                             DeviceJsonFn fn, int ok, bool dpf = false) {
    return device_route(
        what,
        [s, what, schema, fn, ok](const Request& r, const store::Session& ses) {
          Json body;
          if (auto refused = check_json_body(kComponent, what, r, schema, body)) return *refused;
          return answer(what, (s->*fn)(r, body, ses), ok);
        },
        dpf);
  };

  const JsonSchema chain_schema = JsonSchema::object({platform_report_fields().back()});
  const JsonSchema pin_schema =
      JsonSchema::string(kMaxPinSize, ascii_digits, "4-16 decimal digits", kMinPinSize);
  const std::array<Result<void>, 16> added = {
      router.add(
          "POST", "/v1/icf/batches", [s](const Request& r) { return s->import_batch(r); },
          RouteOptions{net::require_operator(config.suppliers), std::nullopt,
                       config.max_batch_bytes}),
      router.add(
          "PUT", "/v1/drf/registrations/{pcid}", json_route("registration", &State::register_pcid),
          json(
              any_operator(),
              JsonSchema::object(
                  {required("device_id", id_schema()), required("dpf_url", JsonSchema::string(256)),
                   required("dpf_key_pin", JsonSchema::hex(32)),
                   required("apn", JsonSchema::string(253)),
                   required("pin", pin_schema)}))),
      router.add("DELETE", "/v1/drf/registrations/{pcid}",
                 void_route("unregister", &State::unregister), bare(any_operator())),
      router.add("POST", "/v1/drf/registrations/{pcid}/transfer",
                 json_route("transfer", &State::transfer),
                 json(any_operator(), JsonSchema::object({required("to", id_schema())}))),
      router.add("POST", "/v1/drf/registrations/{pcid}/change",
                 json_route("change", &State::change_operator),
                 json(any_operator(), JsonSchema::object({required("device_id", id_schema()),
                                                          required("pin", pin_schema)}))),
      router.add(
          "POST", "/v1/icf/pcids/{pcid}/activation", json_route("activation", &State::activate),
          json(any_operator(),
               JsonSchema::object({required(
                   "window_s", JsonSchema::integer(1, config.icf.max_activation.count()))}))),
      router.add("POST", "/v1/dpf/packages", json_route("package", &State::store_package, 201),
                 json(any_operator(),
                      JsonSchema::object(
                          {required("pcid", imsi_schema()), required("device_id", id_schema()),
                           required("package_id", id_schema()),
                           required("package", JsonSchema::hex(1, kMaxPackageBytes))}),
                      kMaxPackageBody)),
      router.add("GET", "/v1/drf/bootstrap",
                 device_route(
                     "discovery",
                     [s](const Request&, const store::Session& ses) { return s->bootstrap(ses); }),
                 bare(nullptr)),
      router.add("GET", "/v1/dpf/package",
                 device_route(
                     "fetch",
                     [s](const Request& r, const store::Session& ses) {
                       return s->held_poll(r, ses, "fetch", [&] { return s->fetch_package(ses); });
                     },
                     true),
                 bare(nullptr)),
      router.add("POST", "/v1/dpf/packages/{package_id}/report",
                 device_json_route("report", package_report_schema, &State::report, 200, true),
                 bare(nullptr)),
      router.add(
          "POST", "/v1/dpf/attestation-requests",
          json_route("attestation request", &State::request_attestation, 201),
          json(any_operator(), JsonSchema::object({required("pcid", imsi_schema()),
                                                   required("device_id", id_schema()),
                                                   required("request_id", id_schema()),
                                                   required("nonce", JsonSchema::hex(16, 64))}))),
      router.add("POST", "/v1/dpf/refusals", json_route("refusal", &State::refuse_device, 201),
                 json(any_operator(), JsonSchema::object({required("pcid", imsi_schema()),
                                                          required("device_id", id_schema()),
                                                          required("code", id_schema())}))),
      router.add("GET", "/v1/dpf/attestation-request",
                 device_route(
                     "attestation fetch",
                     [s](const Request& r, const store::Session& ses) {
                       return s->held_poll(r, ses, "attestation fetch",
                                           [&] { return s->attestation_request(ses); });
                     },
                     true),
                 bare(nullptr)),
      router.add(
          "POST", "/v1/dpf/attestations/{request_id}",
          device_json_route("attestation", report_schema, &State::answer_attestation, 202, true),
          bare(nullptr)),
      router.add("POST", "/v1/dpf/pcid-renewal",
                 device_json_route("pcid renewal", chain_schema, &State::renewal_offer, 200),
                 bare(nullptr)),
      router.add(
          "POST", "/v1/dpf/pcid-renewal/{package_id}/report",
          // F8: also with an operational device's DPF session (F4's platform-key proof): a device
          // whose report was lost holds the renewed K, which the ICF's vectors do not match yet, so
          // it cannot attach with the PCID to send it again.
          device_json_route("pcid renewal report", report_schema, &State::renewal_report, 200,
                            true),
          bare(nullptr)),
  };
  for (const auto& a : added) {
    if (!a) return a;
  }
  auto auth = add_auth_routes(router, AuthRoutes{config.roaming_partners, [s] { return s->icf(); },
                                                 [s](std::string_view step) { s->flow(step); }});
  if (!auth) return auth;
  if (config.direct_access) {
    if (auto direct = add_direct_routes(); !direct) return direct;
  }
  if (auto managed = add_management_routes(); !managed) return managed;
  router.set_health_check([s]() -> Result<void> {
    auto n = s->db.pcids().count();
    if (!n) return std::unexpected(n.error());
    return {};
  });
  return {};
}

Result<std::uint64_t> RoService::State::expire_dormant() {
  OsRandom random;  // expire_dormant draws nothing; the Icf wants a source all the same
  auto expired = Icf(db, clock, random, config.icf).expire_dormant();
  if (!expired) {
    log::error(kComponent, "expire dormant pcids: {}", expired.error());
  } else if (*expired > 0) {
    log::info(kComponent, "{} dormant pcids expired", *expired);
  }
  return expired;
}

void RoService::State::expire_loop() {
  std::unique_lock lock(expiry_mu);
  const auto interval = config.expire_interval;
  while (!expiry_cv.wait_for(lock, interval, [&] { return expiry_stopping; })) {
    lock.unlock();
    (void)expire_dormant();
    lock.lock();
  }
}

void RoService::State::stop() {
  polls.stop();
  {
    std::lock_guard lock(expiry_mu);
    expiry_stopping = true;
  }
  expiry_cv.notify_all();
  if (expiry.joinable()) expiry.join();
  notices.stop();
}

// ---- RoService --------------------------------------------------------------------------------

Result<std::unique_ptr<RoService>> RoService::create(store::Database& db, RoServiceConfig config,
                                                     const Clock& clock) {
  config.renewal.operator_id = config.operator_id;
  if (auto c = check_config(config); !c) return std::unexpected(c.error());
  auto state = std::make_unique<State>(db, std::move(config), clock);
  if (auto routes = state->add_routes(); !routes) return std::unexpected(routes.error());
  state->notices.start();
  if (state->config.expire_interval > std::chrono::seconds(0)) {
    State* s = state.get();
    state->expiry = std::thread([s] { s->expire_loop(); });
    set_thread_name(state->expiry, "ro-expiry");
  }
  return std::unique_ptr<RoService>(new RoService(std::move(state)));
}

RoService::RoService(std::unique_ptr<State> state) : state_(std::move(state)) {}

RoService::~RoService() { state_->stop(); }

const net::Router& RoService::router() const { return state_->router; }
net::HttpHandler RoService::handler() const { return state_->router.handler(); }

std::size_t RoService::body_limit() const {
  return std::max(state_->config.max_batch_bytes, kMaxPackageBody);
}

Result<std::uint64_t> RoService::expire_dormant_now() { return state_->expire_dormant(); }

std::size_t RoService::pending_notices() const { return state_->notices.pending(); }

bool RoService::wait_notices_delivered(std::chrono::milliseconds timeout) const {
  return state_->notices.wait_idle(timeout);
}

}  // namespace mcim::ro
