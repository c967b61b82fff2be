#include "tre/tre.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include "aka/milenage.h"
#include "aka/tuak.h"
#include "common/file.h"
#include "pki/signed_json.h"

namespace mcim::tre {
namespace {

constexpr std::size_t kMaxCredentials = 64;  // state.h's codec bound, tombstones included
// Deleted credentials are remembered (status shows what became of them) but only the latest few:
// otherwise tombstones would fill the registry of a long-lived device.
constexpr std::size_t kMaxTombstones = 16;
constexpr std::string_view kPcidPackageId = "pcid";
constexpr std::string_view kMeasureBinary = "tre.binary";
constexpr std::string_view kMeasureConfig = "tre.config";

std::chrono::sys_seconds now_seconds(const Clock& clock) { return pki::floor_seconds(clock.now()); }

// One process at a time: a second `mcim device` on the same directory would otherwise commit
// from a stale copy of the state. flock is released by the kernel when the holder dies.
class DirLock {
 public:
  static Result<DirLock> take(const std::string& dir) {
    const std::string path = dir + "/lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      return fail(ErrorCode::io_error,
                  fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);
      return fail(ErrorCode::busy, fmt::format("{}: another process holds this TRE", dir));
    }
    return DirLock(fd);
  }
  DirLock(DirLock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  DirLock& operator=(DirLock&& o) noexcept {
    if (this != &o) {
      release();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~DirLock() { release(); }

 private:
  explicit DirLock(int fd) : fd_(fd) {}
  void release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
};

// The identity of one version of a file: a rewrite in place changes its times or size, a
// replacement its inode. (The running image behind /proc/self/exe cannot be written at all.)
constexpr std::int64_t kRacyWindowNs = 2'000'000'000;

struct FileVersion {
  dev_t dev;
  ino_t ino;
  off_t size;
  std::int64_t mtime_ns, ctime_ns;
  auto operator<=>(const FileVersion&) const = default;
};

// Measurements of file versions already hashed in this process, as a measured boot takes each
// component's digest once: a TRE attests many times, and many simulated TREs share one binary
// (hundreds of megabytes with debug information), whose re-hashing would dominate every
// attestation's cost.
class MeasurementCache {
 public:
  std::optional<Bytes<32>> find(const FileVersion& v) {
    std::lock_guard lock(mu_);
    const auto it = digests_.find(v);
    if (it == digests_.end()) return std::nullopt;
    return it->second;
  }
  void add(const FileVersion& v, const Bytes<32>& digest) {
    std::lock_guard lock(mu_);
    if (digests_.size() >= kMaxEntries) digests_.clear();
    digests_[v] = digest;
  }
  // Held while a file that will be remembered is hashed: TREs attesting at the same moment wait
  // for the first one's digest instead of each hashing the same hundreds of megabytes.
  std::mutex& hashing() { return hashing_; }

 private:
  static constexpr std::size_t kMaxEntries = 64;
  std::mutex mu_;
  std::mutex hashing_;
  std::map<FileVersion, Bytes<32>> digests_;
};

MeasurementCache& measurement_cache() {
  static MeasurementCache cache;
  return cache;
}

// SHA-256 of a file, streamed: the binary may be tens of megabytes. Each version of a file is
// hashed once per process (MeasurementCache).
Result<Bytes<32>> file_sha256(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return fail(ErrorCode::io_error,
                fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  }
  struct stat st {};
  std::optional<FileVersion> version;
  std::unique_lock<std::mutex> hashing;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    version = FileVersion{st.st_dev, st.st_ino, st.st_size,
                          std::int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec,
                          std::int64_t{st.st_ctim.tv_sec} * 1'000'000'000 + st.st_ctim.tv_nsec};
    // A file changed within the last seconds may change again within the file system's
    // timestamp granularity without its times moving: such a version is not remembered (git's
    // "racy" rule), and is hashed without waiting for others.
    const std::int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
    if (std::max(version->mtime_ns, version->ctime_ns) >= now_ns - kRacyWindowNs) {
      version.reset();
    } else {
      if (auto known = measurement_cache().find(*version)) {
        ::close(fd);
        return *known;
      }
      hashing = std::unique_lock(measurement_cache().hashing());
      if (auto known = measurement_cache().find(*version)) {  // hashed while we waited
        ::close(fd);
        return *known;
      }
    }
  }
  pki::MdCtxPtr ctx(EVP_MD_CTX_new());
  bool ok = ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
  std::vector<std::uint8_t> buf(1 << 16);
  while (ok) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ok = false;
    if (n <= 0) break;
    ok = EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(n)) == 1;
  }
  ::close(fd);
  Bytes<32> out{};
  unsigned len = 0;
  if (!ok || EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1 || len != out.size()) {
    return fail(ErrorCode::io_error, fmt::format("{}: cannot read to measure it", path));
  }
  if (version) measurement_cache().add(*version, out);
  return out;
}

Result<Bytes<32>> document_digest(const pki::McimDocument& doc) {
  auto encoded = pki::encode_document(doc);
  if (!encoded) return std::unexpected(encoded.error());
  return pki::sha256(encoded->view());
}

aka::SqnPolicy sqn_policy(const Config& config, const pki::McimDocument& doc) {
  aka::SqnPolicy p;
  p.ind_bits = doc.ind_bits;
  p.delta = config.sqn_delta;
  p.limit_l = config.sqn_limit_l;
  return p;
}

// The USIM starts from the document's SQN: every SEQ_MS(i) is its SEQ, so the network's first
// vector must carry a higher one.
std::vector<std::uint64_t> initial_seq_array(const pki::McimDocument& doc) {
  aka::SqnPolicy p;
  p.ind_bits = doc.ind_bits;
  return std::vector<std::uint64_t>(std::size_t{1} << doc.ind_bits,
                                    p.seq_of(aka::sqn_value(doc.sqn)));
}

CredentialInfo info_of(const Credential& c, const Config& config) {
  CredentialInfo i;
  i.id = c.id;
  i.kind = c.kind;
  i.state = c.state;
  i.owner = c.owner;
  i.package_id = c.package_id;
  i.installed = c.installed;
  i.changed = c.changed;
  if (c.doc) {
    i.algorithm = std::string(pki::to_string(c.doc->algorithm));
    i.sequence = c.doc->sequence;
    i.not_after = c.doc->not_after;
    if (auto usim = aka::UsimSqn::restore(sqn_policy(config, *c.doc), c.seq_ms)) {
      i.sqn_ms = aka::sqn_value(usim->sqn_ms());
    }
  } else {
    i.algorithm = "-";
  }
  return i;
}

bool usable_state(McimState s) { return s == McimState::activated || s == McimState::selected; }

// The token an audit subject must be; anything else (an unreadable id) is logged as "-".
std::string subject_token(std::string_view id) {
  return pki::valid_token(id, 64) ? std::string(id) : std::string("-");
}

// A credential deleted: keys and document wiped, the tombstone kept.
void wipe(Credential& c, std::chrono::sys_seconds now) {
  c.state = McimState::deleted;
  c.doc.reset();
  c.seq_ms.clear();
  c.digest = {};
  c.changed = now;
}

}  // namespace

Result<Bytes<32>> measure_file(const std::string& path) { return file_sha256(path); }

Result<std::unique_ptr<aka::Algorithm>> algorithm_of(const pki::McimDocument& doc) {
  if (doc.algorithm == pki::McimAlgorithm::milenage) {
    if (doc.k_size != 16) return fail(ErrorCode::invalid_argument, "MILENAGE needs a 128-bit K");
    aka::MilenageConstants constants;
    constants.c = doc.milenage.c;
    constants.r = doc.milenage.r;
    aka::K128 k{};
    std::copy_n(doc.k.get().begin(), 16, k.begin());
    auto algo = std::make_unique<aka::Milenage>(k, doc.opc.get(), constants);
    secure_wipe(k);
    return std::unique_ptr<aka::Algorithm>(std::move(algo));
  }
  aka::TuakParams params;
  params.mac_bits = doc.tuak.mac_bits;
  params.res_bits = doc.tuak.res_bits;
  params.ck_bits = doc.tuak.ck_bits;
  params.ik_bits = doc.tuak.ik_bits;
  params.keccak_iterations = doc.tuak.keccak_iterations;
  auto t = aka::Tuak::create(doc.key(), doc.topc.get(), params);
  if (!t) return std::unexpected(t.error());
  return std::unique_ptr<aka::Algorithm>(std::make_unique<aka::Tuak>(std::move(*t)));
}

// Drops the oldest tombstones beyond kMaxTombstones (registry order is install order, and a
// credential's `changed` says when it was deleted).
void prune_tombstones(State& s) {
  std::vector<std::size_t> tombs;
  for (std::size_t i = 0; i < s.credentials.size(); ++i)
    if (s.credentials[i].state == McimState::deleted) tombs.push_back(i);
  if (tombs.size() <= kMaxTombstones) return;
  std::stable_sort(tombs.begin(), tombs.end(), [&](std::size_t a, std::size_t b) {
    return s.credentials[a].changed < s.credentials[b].changed;
  });
  tombs.resize(tombs.size() - kMaxTombstones);
  std::sort(tombs.rbegin(), tombs.rend());
  for (std::size_t i : tombs)
    s.credentials.erase(s.credentials.begin() + static_cast<std::ptrdiff_t>(i));
}

// ---------------------------------------------------------------------------------------------

struct Tre::Impl {
  Options options;
  SystemClock system_clock;
  OsRandom os_random;
  const Clock* clock = nullptr;
  RandomSource* random = nullptr;
  std::optional<DirLock> lock;
  std::unique_ptr<SoftwareBackend> backend;
  std::unique_ptr<StateFile> file;
  std::unique_ptr<AuditFile> audit;
  std::optional<State> state;  // empty in lockdown
  std::string lockdown_reason;
  std::optional<pki::TrustAnchors> operators;
  std::optional<pki::PackageRecipient> recipient;
  std::vector<std::string> blocked_at_boot;
  FsckReport repairs;
  // Set when a commit's outcome on disk is unknown (an I/O error half-way): every later change
  // is refused until the TRE is opened again, which recovers from what the disk holds.
  bool broken = false;

  explicit Impl(Options o) : options(std::move(o)) {
    clock = options.clock != nullptr ? options.clock : &system_clock;
    random = options.random != nullptr ? options.random : &os_random;
  }

  bool locked_down() const { return !state.has_value(); }

  Result<void> writable() const {
    if (locked_down()) {
      return fail(ErrorCode::lockdown, "the TRE is locked down (" + lockdown_reason + ")");
    }
    if (broken) {
      return fail(ErrorCode::io_error, "an earlier write failed; open the TRE again to recover");
    }
    return {};
  }

  // The audit line for `ev` that follows `head`.
  Result<std::string> audit_line(const AuditHead& head, AuditEvent ev) {
    AuditEntry entry;
    entry.seq = head.seq + 1;
    entry.time = now_seconds(*clock);
    entry.event = std::move(ev);
    entry.prev = head.hash;
    return sign_audit_entry(entry, backend->platform_key());
  }

  // The one way the state changes: `next` (a modified copy of the state) with one audit event,
  // committed (state first, then the audit line; opening again redoes a missing line).
  Result<void> commit(State next, std::optional<AuditEvent> ev) {
    next.generation = state->generation + 1;
    prune_tombstones(next);
    std::string line;
    if (ev) {
      auto l = audit_line(state->audit, std::move(*ev));
      if (!l) return std::unexpected(l.error());
      line = std::move(*l);
      next.audit = AuditHead{state->audit.seq + 1, audit_line_hash(line), line};
    }
    if (auto r = file->commit(next); !r) {
      broken = true;
      return r;
    }
    state = std::move(next);
    if (ev) {
      if (auto r = audit->append(line); !r) {
        broken = true;
        return fail(r.error().code, "the change is committed but its audit line is not written (" +
                                        r.error().message + "); open the TRE again to redo it");
      }
    }
    return {};
  }

  // A refusal changes nothing but the audit log.
  Error refuse(Error e, std::string event, std::string_view subject, std::string principal) {
    if (!locked_down() && !broken) {
      AuditEvent ev{std::move(event), subject_token(subject), std::move(principal),
                    std::string(e.wire_code()), e.message};
      (void)commit(*state, std::move(ev));
    }
    return e;
  }

  Result<void> enter_lockdown(std::string reason) {
    lockdown_reason = std::move(reason);
    state.reset();
    (void)backend->enter_lockdown(lockdown_reason);
    // Chain the lockdown event to whatever the log holds: if the log itself was edited the chain
    // is broken anyway, and the event still tells the story to whoever reads it.
    auto text = audit->read();
    AuditHead head;
    if (text) {
      if (auto log = verify_audit_log(*text, backend->platform_key())) {
        head.seq = log->entries.size();
        head.hash = log->last_hash;
      }
    }
    auto line = audit_line(head, AuditEvent{"lockdown", "-", "tre", "ok", lockdown_reason});
    if (line) (void)audit->append(*line);
    return {};
  }

  // After a committed state: the log must end at the state's head, or one line before it when a
  // crash came between the two writes (the line is in the state: append it).
  Result<void> recover_audit() {
    auto torn = audit->repair_torn_tail();
    if (!torn) return std::unexpected(torn.error());
    auto text = audit->read();
    if (!text) return std::unexpected(text.error());
    auto log = verify_audit_log(*text, backend->platform_key());
    if (!log) return std::unexpected(log.error());
    const AuditHead& head = state->audit;
    if (log->entries.size() == head.seq && log->last_hash == head.hash) {
      repairs.repaired_audit = *torn;
      return {};
    }
    if (log->entries.size() + 1 == head.seq && !head.last_line.empty()) {
      if (auto r = audit->append(head.last_line); !r) return r;
      auto again = audit->read();
      if (!again) return std::unexpected(again.error());
      auto relog = verify_audit_log(*again, backend->platform_key());
      if (!relog) return std::unexpected(relog.error());
      if (relog->last_hash != head.hash) {
        return fail(ErrorCode::store_tampered, "audit.log does not lead to the sealed head");
      }
      repairs.repaired_audit = true;
      return {};
    }
    return fail(ErrorCode::store_tampered,
                fmt::format("audit.log holds {} entries but the sealed state counts {}",
                            log->entries.size(), head.seq));
  }

  Result<void> load_trust() {
    std::vector<pki::X509Ptr> roots;
    for (const auto& der : state->config.operator_roots) {
      auto c = pki::parse_certificate(der, "operator root");
      if (!c) return std::unexpected(c.error());
      roots.push_back(std::move(*c));
    }
    std::vector<X509*> raw;
    for (auto& r : roots) raw.push_back(r.get());
    auto anchors = pki::TrustAnchors::from_certs(raw);
    if (!anchors) return std::unexpected(anchors.error());
    operators = std::move(*anchors);
    auto rec = pki::PackageRecipient::create(backend->platform_chain().front().get(),
                                             backend->platform_key());
    if (!rec) return std::unexpected(rec.error());
    recipient = std::move(*rec);
    return {};
  }

  // The integrity check: the stored credential still encodes to the digest taken when it was
  // installed. A failure blocks the credential (forcefully: even a selected one).
  Result<bool> credential_intact(const Credential& c) const {
    if (!c.doc) return true;
    auto d = document_digest(*c.doc);
    if (!d) return std::unexpected(d.error());
    return constant_time_equal(*d, c.digest);
  }

  Result<void> block_for_integrity(std::string_view id, std::string_view when) {
    State next = *state;
    Credential* c = next.find(id);
    c->state = McimState::blocked;
    c->changed = now_seconds(*clock);
    return commit(
        std::move(next),
        AuditEvent{"integrity-check", subject_token(id), "tre",
                   std::string(to_string(ErrorCode::integrity_failed)),
                   fmt::format("credential failed its integrity check {}; blocked", when)});
  }

  Result<void> boot_check() {
    std::vector<std::string> failed;
    for (const auto& c : state->credentials) {
      if (c.state == McimState::blocked || c.state == McimState::deleted) continue;
      auto ok = credential_intact(c);
      if (!ok) return std::unexpected(ok.error());
      if (!*ok) failed.push_back(c.id);
    }
    for (const auto& id : failed) {
      if (auto r = block_for_integrity(id, "at boot"); !r) return r;
      blocked_at_boot.push_back(id);
    }
    return {};
  }

  // F6, F9 discovery: the stakeholder's own credentials (tombstones included), nobody else's.
  std::vector<ListedCredential> listed_for(const Principal& who) const {
    std::vector<ListedCredential> out;
    for (const Credential& c : state->credentials) {
      if (c.owner != who.operator_id) continue;
      out.push_back({c.id, std::string(to_string(c.state)), c.package_id});
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return out;
  }

  static CredentialInfo listed_placeholder() {
    CredentialInfo none;
    none.id = "-";
    none.package_id = "-";
    none.algorithm = "-";
    return none;
  }

  // A list uses up the sequence and is audited like any instruction.
  InstructionOutcome list_for(const Principal& who, std::uint64_t seq, const Bytes<32>& digest,
                              StatusReport rep) {
    State next = *state;
    next.instruction_sequence[who.operator_id] = seq;
    next.last_instruction[who.operator_id] = InstructionAnswer{digest, "ok"};
    rep.credentials = listed_for(who);
    AuditEvent ev{rep.event, "-", who.describe(), "ok",
                  fmt::format("{} credentials listed", rep.credentials.size())};
    if (auto r = commit(std::move(next), std::move(ev)); !r) {
      rep.outcome = std::string(r.error().wire_code());
      rep.credentials.clear();
      return InstructionOutcome{std::unexpected(r.error()), report(rep)};
    }
    rep.outcome = "ok";
    return InstructionOutcome{listed_placeholder(), report(rep)};
  }

  // F9: the operator's last accepted instruction delivered again (its answer was lost after the
  // commit): answered with the outcome it had, the credential's state now (a list: the
  // credentials now). Changes nothing, so it is not audited.
  InstructionOutcome answer_again(const Instruction& ins, const Principal& who,
                                  const std::string& outcome, StatusReport rep) const {
    rep.outcome = outcome;
    if (ins.list) {
      rep.credentials = listed_for(who);
      return InstructionOutcome{listed_placeholder(), report(rep)};
    }
    const Credential* c = state->find(ins.credential);
    if (c != nullptr) rep.state = std::string(to_string(c->state));
    if (outcome == "ok" && c != nullptr) {
      return InstructionOutcome{info_of(*c, state->config), report(rep)};
    }
    const ErrorCode code = error_code_from_wire(outcome).value_or(ErrorCode::internal);
    return InstructionOutcome{
        std::unexpected(Error(code, fmt::format("sequence {} from {} was answered {} already; "
                                                "this is that answer again",
                                                ins.sequence, who.operator_id, outcome))),
        report(rep)};
  }

  // The package opened for this TRE (operator roots, recipient, device, validity, per-operator
  // sequence; the registration nonce only `with_nonce`), named in `rep` as soon as it is open.
  Result<pki::McimDocument> open(ByteView package, StatusReport& rep, bool with_nonce) const;
  Result<State> admit(ByteView package, StatusReport& rep, bool frees_a_slot);

  // The report of an install before anything is known of the package.
  static StatusReport install_report() {
    StatusReport r;
    r.event = "install";
    r.credential = "-";
    r.package_id = "-";
    r.state = "-";
    return r;
  }

  // F4's acknowledgement of a discarded credential (event "discard", state "deleted").
  static StatusReport discard_report(std::string credential, std::string package,
                                     std::uint64_t sequence) {
    StatusReport r;
    r.event = std::string(kDiscardEvent);
    r.credential = std::move(credential);
    r.package_id = std::move(package);
    r.outcome = "ok";
    r.state = std::string(to_string(McimState::deleted));
    r.sequence = sequence;
    return r;
  }

  // An install that failed without being refused (lockdown, a write that failed): answered with
  // its code, not audited.
  InstallOutcome failed_install(Error e, StatusReport& rep) const {
    rep.outcome = std::string(e.wire_code());
    return InstallOutcome{std::unexpected(std::move(e)), report(rep)};
  }
  // A refused install: audited as `event`, answered with a signed report naming what is known.
  InstallOutcome refused_install(Error e, std::string event, StatusReport& rep) {
    rep.outcome = std::string(e.wire_code());
    Error logged = refuse(std::move(e), std::move(event), rep.credential, "device");
    std::string text = report(rep);
    return InstallOutcome{std::unexpected(std::move(logged)), std::move(text)};
  }

  std::string report(StatusReport r) const {
    r.device_id = state ? state->config.device_id : device_id_from_certificate();
    r.time = now_seconds(*clock);
    auto text = sign_status_report(r, backend->platform_key());
    return text ? *text : std::string();
  }

  std::string device_id_from_certificate() const {
    auto id = pki::platform_device_id(backend->platform_chain().front().get());
    return id ? *id : std::string("-");
  }

  // A lifecycle action by `who`; `extra` adds the instruction's sequence and outcome ("ok" or
  // the refusal's wire code) to the same commit.
  Result<CredentialInfo> act(const Principal& who, Action action, std::string_view id,
                             const std::function<void(State&, std::string_view)>& extra) {
    const std::string event(to_string(action));
    auto refused = [&](Error e) -> Result<CredentialInfo> {
      if (extra) {
        // An authentic instruction's sequence is used up even when refused, so it cannot be
        // replayed later when the state would allow it.
        State next = *state;
        extra(next, e.wire_code());
        AuditEvent ev{event, subject_token(id), who.describe(), std::string(e.wire_code()),
                      e.message};
        (void)commit(std::move(next), std::move(ev));
        return std::unexpected(std::move(e));
      }
      return std::unexpected(refuse(std::move(e), event, id, who.describe()));
    };
    const Credential* c = state->find(id);
    if (c == nullptr) {
      return refused(
          Error(ErrorCode::not_found, fmt::format("no credential {}", subject_token(id))));
    }
    const pki::McimPolicy tombstone{c->owner, {}};
    if (auto a = authorise(who, action, c->doc ? c->doc->policy : tombstone); !a) {
      return refused(a.error());
    }
    auto to = transition(c->state, action);
    if (!to) return refused(to.error());
    if (action == Action::select) {
      for (const auto& other : state->credentials) {
        if (other.state == McimState::selected) {
          return refused(Error(ErrorCode::transition_refused,
                               fmt::format("rule one-selected: {} carries connectivity; deselect "
                                           "it first",
                                           other.id)));
        }
      }
    }
    if (action == Action::select || action == Action::activate) {
      auto ok = credential_intact(*c);
      if (!ok) return std::unexpected(ok.error());
      if (!*ok) {
        const std::string failed_id = c->id;  // c dies with the state the block replaces
        if (auto r = block_for_integrity(id, "before " + event); !r) {
          return std::unexpected(r.error());
        }
        return std::unexpected(Error(ErrorCode::integrity_failed,
                                     fmt::format("credential {} failed its integrity check and "
                                                 "is now blocked",
                                                 failed_id)));
      }
    }
    State next = *state;
    Credential* n = next.find(id);
    n->state = *to;
    n->changed = now_seconds(*clock);
    if (*to == McimState::deleted) wipe(*n, n->changed);
    if (extra) extra(next, "ok");
    if (auto r = commit(std::move(next), AuditEvent{event, c->id, who.describe(), "ok", ""}); !r) {
      return std::unexpected(r.error());
    }
    return info_of(*state->find(id), state->config);
  }
};

// ---------------------------------------------------------------------------------------------

Tre::Tre(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tre::Tre(Tre&&) noexcept = default;
Tre& Tre::operator=(Tre&&) noexcept = default;
Tre::~Tre() = default;

const std::string& Tre::dir() const { return impl_->options.dir; }
X509* Tre::platform_certificate() const { return impl_->backend->platform_chain().front().get(); }

Result<void> Tre::init(const Options& options, const SupplierBundle& bundle) {
  if (auto v = validate_bundle(bundle); !v) return v;
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) {
    return fail(ErrorCode::io_error,
                fmt::format("{}: cannot create: {}", options.dir, ec.message()));
  }
  ::chmod(options.dir.c_str(), 0700);
  if (std::filesystem::exists(options.dir + "/state.sealed", ec)) {
    return fail(ErrorCode::already_exists, options.dir + ": already holds a TRE");
  }
  Impl impl(options);
  auto lock = DirLock::take(options.dir);
  if (!lock) return std::unexpected(lock.error());

  std::vector<X509*> chain;
  for (const auto& c : bundle.platform_chain) chain.push_back(c.get());
  auto backend =
      SoftwareBackend::create(options.dir, bundle.platform_key.get(), chain, *impl.random);
  if (!backend) return std::unexpected(backend.error());
  impl.backend = std::move(*backend);

  const auto now = now_seconds(*impl.clock);
  State s;
  s.generation = 1;
  s.config.device_id = bundle.device_id;
  s.config.model = bundle.model;
  s.config.ro_operator = bundle.ro_operator;
  for (const auto& r : bundle.operator_roots)
    s.config.operator_roots.push_back(pki::certificate_der(r.get()));
  // The PIN is stretched once, here, and only its key is kept (tre/bootstrap_key.h).
  auto key = derive_bootstrap_key(pin_text(bundle), bundle.device_id);
  if (!key) return std::unexpected(key.error());
  s.config.bootstrap_key = *key;

  // The PCID credential as a document of its own: the RO owns it and may block, unblock, retire
  // or replace it (F8 renewal).
  pki::McimDocument pcid;
  pcid.package_id = std::string(kPcidPackageId);
  pcid.device_id = bundle.device_id;
  pcid.imsi = bundle.pcid;
  pcid.algorithm = pki::McimAlgorithm::milenage;
  std::copy_n(bundle.k.get().begin(), 16, pcid.k.mut().begin());
  pcid.k_size = 16;
  pcid.opc = bundle.opc;
  pcid.ind_bits = bundle.ind_bits;
  pcid.policy.owner = bundle.ro_operator;
  pcid.policy.operations = {pki::McimOperation::block, pki::McimOperation::retire,
                            pki::McimOperation::unblock, pki::McimOperation::update};
  pcid.not_before = now - std::chrono::minutes(1);
  pcid.not_after = bundle.pcid_not_after;
  pcid.sequence = 1;
  // No registration precedes the factory credential; a random value keeps the document valid
  // and means nothing.
  impl.random->fill(pcid.registration_nonce);
  if (pcid.not_after <= pcid.not_before) {
    return fail(ErrorCode::invalid_argument, "the PCID credential's lifetime has already ended");
  }
  if (auto v = pki::validate_document(pcid); !v) return std::unexpected(v.error());
  auto digest = document_digest(pcid);
  if (!digest) return std::unexpected(digest.error());

  Credential c;
  c.id = bundle.pcid;
  c.kind = CredentialKind::pcid;
  c.state = McimState::activated;
  c.owner = bundle.ro_operator;
  c.package_id = pcid.package_id;
  c.seq_ms = initial_seq_array(pcid);
  c.digest = *digest;
  c.doc = std::move(pcid);
  c.installed = c.changed = now;
  s.credentials.push_back(std::move(c));

  auto line = impl.audit_line(AuditHead{}, AuditEvent{"init", bundle.pcid, "tre", "ok",
                                                      "pristine TRE from the supplier bundle"});
  if (!line) return std::unexpected(line.error());
  s.audit = AuditHead{1, audit_line_hash(*line), *line};
  StateFile file(options.dir, *impl.backend);
  if (auto r = file.create(s); !r) return r;
  AuditFile audit(options.dir + "/audit.log");
  if (auto r = audit.append(*line); !r) return r;
  // A public copy of the platform certificate and chain, for the owner's registration (F1); the
  // sealed one in platform.sealed is what the TRE itself uses.
  std::string pem;
  for (X509* cert : chain) {
    auto p = pki::certificate_pem(cert);
    if (!p) return std::unexpected(p.error());
    pem += *p;
  }
  return write_file_atomic(options.dir + "/platform.pem", pem, 0644);
}

Result<Tre> Tre::open(const Options& options) {
  std::error_code ec;
  if (!std::filesystem::exists(options.dir + "/tre.secret", ec)) {
    return fail(ErrorCode::not_found, options.dir + ": no TRE here (mcim device init makes one)");
  }
  auto impl = std::make_unique<Impl>(options);
  auto lock = DirLock::take(options.dir);
  if (!lock) return std::unexpected(lock.error());
  impl->lock = std::move(*lock);
  auto backend = SoftwareBackend::open(options.dir, *impl->random);
  if (!backend) return std::unexpected(backend.error());
  impl->backend = std::move(*backend);
  impl->file = std::make_unique<StateFile>(options.dir, *impl->backend);
  impl->audit = std::make_unique<AuditFile>(options.dir + "/audit.log");

  auto sticky = impl->backend->lockdown_reason();
  if (!sticky) {
    (void)impl->enter_lockdown("monotonic counter: " + sticky.error().message);
    return Tre(std::move(impl));
  }
  if (*sticky) {
    impl->lockdown_reason = **sticky;
    return Tre(std::move(impl));
  }
  auto state = impl->file->load();
  if (!state) {
    const ErrorCode code = state.error().code;
    if (code == ErrorCode::io_error || code == ErrorCode::internal) {
      return std::unexpected(state.error());
    }
    // Missing, unauthentic, undecodable or rolled-back state: tamper evidence.
    (void)impl->enter_lockdown(
        fmt::format("{}: {}", state.error().wire_code(), state.error().message));
    return Tre(std::move(impl));
  }
  impl->repairs.repaired_counter = impl->file->repaired_counter();
  impl->state = std::move(*state);
  if (auto r = impl->recover_audit(); !r) {
    if (r.error().code == ErrorCode::io_error) return std::unexpected(r.error());
    (void)impl->enter_lockdown(fmt::format("{}: {}", r.error().wire_code(), r.error().message));
    return Tre(std::move(impl));
  }
  if (auto r = impl->load_trust(); !r) return std::unexpected(r.error());
  if (auto r = impl->boot_check(); !r) return std::unexpected(r.error());
  return Tre(std::move(impl));
}

Status Tre::status() const {
  Status s;
  const Impl& i = *impl_;
  if (i.locked_down()) {
    s.device_id = i.device_id_from_certificate();
    auto model = pki::platform_model(i.backend->platform_chain().front().get());
    s.model = model ? *model : "-";
    s.state = pki::TreState::lockdown;
    s.lockdown_reason = i.lockdown_reason;
    if (auto text = i.audit->read()) {
      s.audit_entries = static_cast<std::uint64_t>(std::count(text->begin(), text->end(), '\n'));
    }
    return s;
  }
  s.device_id = i.state->config.device_id;
  s.model = i.state->config.model;
  s.generation = i.state->generation;
  s.audit_entries = i.state->audit.seq;
  s.blocked_at_boot = i.blocked_at_boot;
  for (const auto& c : i.state->credentials) {
    s.credentials.push_back(info_of(c, i.state->config));
    if (c.state == McimState::selected) s.selected = c.id;
    if (c.kind == CredentialKind::mcim && c.state != McimState::deleted) {
      s.state = pki::TreState::provisioned;
    }
  }
  return s;
}

Result<std::string> Tre::install_report(std::string_view id) const {
  const Impl& i = *impl_;
  if (i.locked_down()) {
    return fail(ErrorCode::lockdown, "the TRE is locked down (" + i.lockdown_reason + ")");
  }
  const Credential* c = i.state->find(id);
  const bool renewed_pcid =
      c != nullptr && c->kind == CredentialKind::pcid && c->package_id != kPcidPackageId;
  if (c == nullptr || (c->kind != CredentialKind::mcim && !renewed_pcid) ||
      c->state == McimState::deleted || !c->doc) {
    return fail(ErrorCode::not_found,
                fmt::format("no MCIM or renewed PCID credential {}", subject_token(id)));
  }
  StatusReport rep = Impl::install_report();
  rep.credential = c->id;
  rep.package_id = c->package_id;
  rep.sequence = c->doc->sequence;
  rep.outcome = "ok";
  rep.state = std::string(to_string(c->state));
  std::string text = i.report(std::move(rep));
  if (text.empty()) return fail(ErrorCode::internal, "install report: not signed");
  return text;
}

Result<ReplaceOutcome> Tre::replacement_reports(std::string_view id,
                                                std::string_view replaced) const {
  const Impl& i = *impl_;
  auto install = install_report(id);
  if (!install) return std::unexpected(install.error());
  const Credential* c = i.state->find(id);
  const Credential* old = i.state->find(replaced);
  if (c->kind != CredentialKind::mcim || old == nullptr || old->kind != CredentialKind::mcim ||
      old->state != McimState::deleted) {
    return fail(ErrorCode::not_found,
                fmt::format("no discarded MCIM {} beside {}", subject_token(replaced), c->id));
  }
  return ReplaceOutcome{InstallOutcome{info_of(*c, i.state->config), std::move(*install)},
                        i.report(Impl::discard_report(old->id, old->package_id, 0)),
                        i.report(Impl::discard_report("-", c->package_id, c->doc->sequence))};
}

Result<std::vector<CredentialInfo>> Tre::list() const {
  if (impl_->locked_down()) {
    return fail(ErrorCode::lockdown, "the TRE is locked down (" + impl_->lockdown_reason + ")");
  }
  return status().credentials;
}

Result<void> Tre::record_registration(const Bytes<16>& nonce) {
  Impl& i = *impl_;
  if (auto w = i.writable(); !w) return w;
  State next = *i.state;
  next.registration_nonce = nonce;
  return i.commit(std::move(next),
                  AuditEvent{"register", "-", "device", "ok", "registration nonce recorded (F1)"});
}

Result<pki::McimDocument> Tre::Impl::open(ByteView package, StatusReport& rep,
                                          bool with_nonce) const {
  pki::OpenOptions opts;
  opts.last_sequence = state->package_sequence;
  if (with_nonce) opts.registration_nonce = state->registration_nonce;
  auto doc = pki::open_package(package, *recipient, *operators, *clock, opts);
  if (!doc) return doc;
  rep.credential = doc->imsi;
  rep.package_id = doc->package_id;
  rep.sequence = doc->sequence;
  return doc;
}

// The checks of an install (the package opened for this TRE, a pending registration, a free IMSI,
// room in the registry unless `frees_a_slot`) and the new credential, Installed, in `next` (a copy
// of the state, the registration nonce used up). `rep` names the package as soon as it is open.
Result<State> Tre::Impl::admit(ByteView package, StatusReport& rep, bool frees_a_slot) {
  auto doc = open(package, rep, true);
  if (!doc) return std::unexpected(doc.error());
  // Checked after opening, so that a malformed package is reported as such.
  if (!state->registration_nonce) {
    return fail(ErrorCode::nonce_mismatch,
                "no registration is pending: record the registration nonce from the home operator "
                "first (F1)");
  }
  const Credential* existing = state->find(doc->imsi);
  if (existing != nullptr && existing->state != McimState::deleted) {
    return fail(ErrorCode::already_exists,
                fmt::format("the registry already holds credential {} ({})", doc->imsi,
                            to_string(existing->state)));
  }
  const auto live =
      std::count_if(state->credentials.begin(), state->credentials.end(),
                    [](const Credential& x) { return x.state != McimState::deleted; });
  if (existing == nullptr && !frees_a_slot &&
      static_cast<std::size_t>(live) >= kMaxCredentials - kMaxTombstones) {
    return fail(ErrorCode::unsupported, fmt::format("the registry is full ({} credentials)",
                                                    kMaxCredentials - kMaxTombstones));
  }
  auto digest = document_digest(*doc);
  if (!digest) return std::unexpected(digest.error());

  State next = *state;
  Credential c;
  c.id = doc->imsi;
  c.kind = CredentialKind::mcim;
  c.state = McimState::installed;
  c.owner = doc->policy.owner;
  c.package_id = doc->package_id;
  c.seq_ms = initial_seq_array(*doc);
  c.digest = *digest;
  c.installed = c.changed = now_seconds(*clock);
  next.package_sequence[c.owner] = doc->sequence;
  c.doc = std::move(*doc);
  if (Credential* tomb = next.find(c.id)) {
    *tomb = std::move(c);
  } else {
    next.credentials.push_back(std::move(c));
  }
  next.registration_nonce.reset();
  return next;
}

InstallOutcome Tre::install(ByteView package) {
  Impl& i = *impl_;
  StatusReport rep = Impl::install_report();
  if (auto w = i.writable(); !w) return i.failed_install(w.error(), rep);
  auto next = i.admit(package, rep, false);
  if (!next) return i.refused_install(next.error(), "install", rep);
  const std::string id = rep.credential;
  const std::string owner = next->find(id)->owner;
  if (auto r = i.commit(std::move(*next), AuditEvent{"install", id, "operator:" + owner, "ok",
                                                     "package " + rep.package_id});
      !r) {
    return i.failed_install(r.error(), rep);
  }
  rep.outcome = "ok";
  rep.state = std::string(to_string(McimState::installed));
  return InstallOutcome{info_of(*i.state->find(id), i.state->config), i.report(rep)};
}

// F4: the old credential may go only if it is a live MCIM that does not carry connectivity (the
// rule of delete), and the new package is installable; then one commit does both.
ReplaceOutcome Tre::install_replacing(ByteView package, std::string_view replaced) {
  Impl& i = *impl_;
  StatusReport rep = Impl::install_report();
  auto refused = [&](Error e) {
    return ReplaceOutcome{i.refused_install(std::move(e), "replace", rep), "", ""};
  };
  if (auto w = i.writable(); !w) return ReplaceOutcome{i.failed_install(w.error(), rep), "", ""};
  auto next = i.admit(package, rep, true);
  if (!next) return refused(next.error());
  const Credential* old = i.state->find(replaced);
  if (old == nullptr || old->kind != CredentialKind::mcim || old->state == McimState::deleted) {
    return refused(Error(ErrorCode::not_found,
                         fmt::format("no live MCIM {} to replace", subject_token(replaced))));
  }
  if (old->state == McimState::selected) {
    return refused(Error(ErrorCode::transition_refused,
                         fmt::format("rule delete-not-selected: {} carries connectivity; deselect "
                                     "it first",
                                     old->id)));
  }
  const std::string id = rep.credential;
  const std::string old_id = old->id, old_owner = old->owner, old_package = old->package_id;
  const std::string new_owner = next->find(id)->owner;
  wipe(*next->find(old_id), now_seconds(*i.clock));
  if (auto r = i.commit(std::move(*next),
                        AuditEvent{"replace", id, "device", "ok",
                                   fmt::format("package {} of operator:{}; {} of operator:{} "
                                               "discarded",
                                               rep.package_id, new_owner, old_id, old_owner)});
      !r) {
    return ReplaceOutcome{i.failed_install(r.error(), rep), "", ""};
  }
  rep.outcome = "ok";
  rep.state = std::string(to_string(McimState::installed));
  // For the old owner: its credential, gone. For the new one: that one was discarded, nothing of
  // which or whose.
  StatusReport full = Impl::discard_report(old_id, old_package, 0);
  StatusReport filtered = Impl::discard_report("-", rep.package_id, rep.sequence);
  return ReplaceOutcome{InstallOutcome{info_of(*i.state->find(id), i.state->config), i.report(rep)},
                        i.report(full), i.report(filtered)};
}

// F8: the RO's renewed PCID credential replaces the factory's in one commit, so the TRE holds the
// old one or the new one at every instant, never neither.
InstallOutcome Tre::renew_pcid(ByteView package) {
  Impl& i = *impl_;
  StatusReport rep = Impl::install_report();
  auto refused = [&](Error e) { return i.refused_install(std::move(e), "update", rep); };
  if (auto w = i.writable(); !w) return i.failed_install(w.error(), rep);
  auto doc = i.open(package, rep, false);
  if (!doc) return refused(doc.error());
  const Credential* pcid = nullptr;
  for (const Credential& c : i.state->credentials) {
    if (c.kind == CredentialKind::pcid) pcid = &c;
  }
  if (pcid == nullptr || !pcid->doc || pcid->id != doc->imsi) {
    return refused(Error(
        ErrorCode::wrong_recipient,
        fmt::format("credential {}: not this TRE's PCID credential", subject_token(doc->imsi))));
  }
  // The owner of the PCID credential (the RO), with its policy's update, may replace it: the
  // rules owner-only and policy-grants of lifecycle.h, for a package rather than an instruction.
  if (pcid->owner != doc->policy.owner) {
    return refused(Error(ErrorCode::access_denied,
                         "rule owner-only: only the PCID credential's owner renews it"));
  }
  if (!pcid->doc->policy.allows(pki::McimOperation::update)) {
    return refused(Error(ErrorCode::access_denied,
                         "rule policy-grants: the PCID credential's policy grants no update"));
  }
  if (!usable_state(pcid->state)) {
    return refused(Error(
        ErrorCode::transition_refused,
        fmt::format("rule renew-usable-only: the PCID credential is {}", to_string(pcid->state))));
  }
  auto digest = document_digest(*doc);
  if (!digest) return refused(digest.error());
  State next = *i.state;
  Credential& c = *next.find(pcid->id);
  c.package_id = doc->package_id;
  c.seq_ms = initial_seq_array(*doc);
  c.digest = *digest;
  c.changed = now_seconds(*i.clock);
  const std::string owner = doc->policy.owner;
  next.package_sequence[owner] = doc->sequence;
  c.doc = std::move(*doc);
  const std::string id = c.id;
  if (auto r = i.commit(std::move(next), AuditEvent{"update", id, "operator:" + owner, "ok",
                                                    "package " + rep.package_id});
      !r) {
    return i.failed_install(r.error(), rep);
  }
  const Credential& renewed = *i.state->find(id);
  rep.outcome = "ok";
  rep.state = std::string(to_string(renewed.state));
  return InstallOutcome{info_of(renewed, i.state->config), i.report(rep)};
}

Result<CredentialInfo> Tre::apply(Action action, std::string_view id) {
  Impl& i = *impl_;
  if (auto w = i.writable(); !w) return std::unexpected(w.error());
  return i.act(Principal::device(), action, id, nullptr);
}

InstructionOutcome Tre::apply_instruction(std::string_view signed_instruction) {
  Impl& i = *impl_;
  StatusReport rep;
  rep.event = "instruction";
  rep.credential = "-";
  rep.package_id = "-";
  rep.state = "-";
  if (auto w = i.writable(); !w) {
    rep.outcome = std::string(w.error().wire_code());
    return InstructionOutcome{std::unexpected(w.error()), i.report(rep)};
  }
  // The same bytes as an operator's last accepted instruction: delivered again because its
  // answer was lost (below). It may come after the 10 minutes an instruction is fresh for.
  const std::string_view document = pki::document_text(signed_instruction);
  const Bytes<32> digest = pki::sha256(
      ByteView(reinterpret_cast<const std::uint8_t*>(document.data()), document.size()));
  const auto answered =
      std::find_if(i.state->last_instruction.begin(), i.state->last_instruction.end(),
                   [&](const auto& last) { return last.second.digest == digest; });
  const bool answered_before = answered != i.state->last_instruction.end();
  // A century: no age limit that a device's life can reach.
  constexpr std::chrono::seconds kAnyAge = std::chrono::hours(24 * 366 * 100);
  auto verified = answered_before
                      ? verify_instruction(signed_instruction, *i.operators, *i.clock, kAnyAge)
                      : verify_instruction(signed_instruction, *i.operators, *i.clock);
  if (!verified) {
    rep.outcome = std::string(verified.error().wire_code());
    Error e = i.refuse(verified.error(), "instruction", "-", "unknown");
    return InstructionOutcome{std::unexpected(std::move(e)), i.report(rep)};
  }
  const Instruction& ins = verified->instruction;
  const Principal who = Principal::stakeholder(verified->operator_id);
  rep.event = ins.list ? std::string(kListAction) : std::string(to_string(ins.action));
  rep.credential = ins.credential;
  rep.sequence = ins.sequence;
  auto refused = [&](Error e) {
    rep.outcome = std::string(e.wire_code());
    Error logged = i.refuse(std::move(e), rep.event, ins.credential, who.describe());
    return InstructionOutcome{std::unexpected(std::move(logged)), i.report(rep)};
  };
  if (ins.device_id != i.state->config.device_id) {
    return refused(Error(ErrorCode::wrong_recipient,
                         fmt::format("the instruction is for device {}", ins.device_id)));
  }
  const std::string op = verified->operator_id;
  const std::uint64_t seq = ins.sequence;
  const auto last = i.state->instruction_sequence.find(op);
  if (last != i.state->instruction_sequence.end() && seq <= last->second) {
    // The very instruction last accepted from this operator, whose answer may have been lost:
    // its answer again. Anything else at or below the last sequence is a replay.
    if (answered_before && answered->first == op && seq == last->second) {
      return i.answer_again(ins, who, answered->second.outcome, std::move(rep));
    }
    return refused(Error(ErrorCode::replayed_instruction,
                         fmt::format("sequence {} is not above {}, the last accepted from {}", seq,
                                     last->second, op)));
  }
  if (ins.list) return i.list_for(who, seq, digest, std::move(rep));
  auto result = i.act(who, ins.action, ins.credential, [&](State& s, std::string_view outcome) {
    s.instruction_sequence[op] = seq;
    s.last_instruction[op] = InstructionAnswer{digest, std::string(outcome)};
  });
  rep.outcome = result ? "ok" : std::string(result.error().wire_code());
  if (const Credential* c = i.state ? i.state->find(ins.credential) : nullptr) {
    rep.state = std::string(to_string(c->state));
  }
  std::string text = i.report(rep);
  return InstructionOutcome{std::move(result), std::move(text)};
}

Result<aka::UsimAnswer> Tre::authenticate(std::optional<std::string_view> id, const aka::Rand& rand,
                                          const aka::Autn& autn) {
  Impl& i = *impl_;
  if (auto w = i.writable(); !w) return std::unexpected(w.error());
  const Credential* c = nullptr;
  if (id) {
    c = i.state->find(*id);
    if (c == nullptr) {
      return fail(ErrorCode::not_found, fmt::format("no credential {}", subject_token(*id)));
    }
  } else {
    for (const auto& x : i.state->credentials)
      if (x.state == McimState::selected) c = &x;
    if (c == nullptr) return fail(ErrorCode::not_found, "no credential is selected");
  }
  if (!usable_state(c->state) || !c->doc) {
    return fail(ErrorCode::credential_unusable,
                fmt::format("credential {} is {}: only an Activated or Selected credential "
                            "authenticates",
                            c->id, to_string(c->state)));
  }
  // F8: the PCID credential's lifetime ends at its not_after (exclusive, as the ICF's); the RO
  // renews it before then (renew_pcid). MCIMs live as their operator manages them.
  if (c->kind == CredentialKind::pcid && now_seconds(*i.clock) >= c->doc->not_after) {
    return fail(ErrorCode::pcid_expired,
                fmt::format("credential {}: the PCID credential's lifetime is over", c->id));
  }
  auto algo = algorithm_of(*c->doc);
  if (!algo) return std::unexpected(algo.error());
  auto usim = aka::UsimSqn::restore(sqn_policy(i.state->config, *c->doc), c->seq_ms);
  if (!usim) return fail(ErrorCode::internal, "stored SQN state: " + usim.error().message);
  auto answer = aka::usim_authenticate(**algo, *usim, rand, autn);
  if (!answer) return std::unexpected(answer.error());
  if (std::holds_alternative<aka::UsimSuccess>(*answer)) {
    // Durable before RES leaves the TRE: a crash after this point cannot let the same SQN be
    // accepted again.
    State next = *i.state;
    Credential* n = next.find(c->id);
    const auto seqs = usim->seq_array();
    n->seq_ms.assign(seqs.begin(), seqs.end());
    if (auto r = i.commit(std::move(next), std::nullopt); !r) {
      auto& s = std::get<aka::UsimSuccess>(*answer);
      secure_wipe(s.ck);
      secure_wipe(s.ik);
      return std::unexpected(r.error());
    }
  }
  return answer;
}

Result<std::string> Tre::attest(ByteView nonce) {
  Impl& i = *impl_;
  pki::Report report;
  const Status st = status();
  report.device_id = st.device_id;
  report.state = st.state;
  report.nonce.assign(nonce.begin(), nonce.end());
  report.time = now_seconds(*i.clock);
  auto binary = measure_file(i.options.binary);
  if (!binary) return std::unexpected(binary.error());
  report.measurements.push_back({std::string(kMeasureBinary), *binary});
  if (i.state)
    report.measurements.push_back({std::string(kMeasureConfig), config_digest(i.state->config)});
  return pki::sign_report(report, i.backend->platform_key());
}

Result<void> Tre::pristine() {
  Impl& i = *impl_;
  if (auto w = i.writable(); !w) return w;
  State next = *i.state;
  std::size_t deleted = 0;
  const auto now = now_seconds(*i.clock);
  for (auto& c : next.credentials) {
    if (c.kind == CredentialKind::pcid || c.state == McimState::deleted) continue;
    wipe(c, now);
    ++deleted;
  }
  next.registration_nonce.reset();
  return i.commit(
      std::move(next),
      AuditEvent{"pristine", "-", "device", "ok",
                 fmt::format("{} MCIM(s) deleted; the PCID credential is kept", deleted)});
}

Result<BootstrapKey> Tre::bootstrap_key() const {
  const Impl& i = *impl_;
  if (i.locked_down()) {
    return fail(ErrorCode::lockdown, "the TRE is locked down (" + i.lockdown_reason + ")");
  }
  return i.state->config.bootstrap_key;
}

Result<FsckReport> Tre::fsck() {
  Impl& i = *impl_;
  if (i.locked_down()) {
    return fail(ErrorCode::lockdown, "the TRE is locked down (" + i.lockdown_reason + ")");
  }
  FsckReport rep = i.repairs;
  // Read back what is on disk with a fresh reader: the in-memory copy must equal it.
  StateFile reader(i.options.dir, *i.backend);
  auto disk = reader.load();
  if (!disk) return std::unexpected(disk.error());
  if (disk->generation != i.state->generation) {
    return fail(ErrorCode::store_tampered,
                fmt::format("state.sealed is at generation {}, this TRE at {}", disk->generation,
                            i.state->generation));
  }
  auto counter = i.backend->counter();
  if (!counter) return std::unexpected(counter.error());
  if (*counter != disk->generation) {
    return fail(
        ErrorCode::store_tampered,
        fmt::format("the counter is {}, the state's generation {}", *counter, disk->generation));
  }
  for (const auto& c : disk->credentials) {
    auto ok = i.credential_intact(c);
    if (!ok) return std::unexpected(ok.error());
    if (!*ok && c.state != McimState::blocked) {
      return fail(ErrorCode::integrity_failed,
                  fmt::format("credential {} fails its integrity check", c.id));
    }
    if (c.doc) {
      if (!aka::UsimSqn::restore(sqn_policy(disk->config, *c.doc), c.seq_ms)) {
        return fail(ErrorCode::store_tampered, fmt::format("credential {}: SQN array", c.id));
      }
    }
  }
  auto audit = verify_audit();
  if (!audit) return std::unexpected(audit.error());
  rep.generation = disk->generation;
  rep.credentials = disk->credentials.size();
  rep.audit_entries = audit->log.entries.size();
  return rep;
}

Result<Tre::AuditCheck> Tre::verify_audit() const {
  const Impl& i = *impl_;
  auto text = i.audit->read();
  if (!text) return std::unexpected(text.error());
  auto log = verify_audit_log(*text, i.backend->platform_key());
  if (!log) return std::unexpected(log.error());
  AuditCheck out;
  if (i.state) {
    if (log->entries.size() != i.state->audit.seq || log->last_hash != i.state->audit.hash) {
      return fail(ErrorCode::store_tampered,
                  fmt::format("audit.log ends at entry {}, the sealed state at entry {}",
                              log->entries.size(), i.state->audit.seq));
    }
    out.tail_checked = true;
  }
  out.log = std::move(*log);
  return out;
}

}  // namespace mcim::tre
