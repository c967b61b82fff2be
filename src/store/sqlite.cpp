// The SQLite driver of the SQL ports (sql_ports.h). Thread-safety: a pool of connections opened
// in multi-thread mode, each used by one thread at a time. Atomicity: reads run in autocommit
// mode; every write is a savepoint in the transaction of a batch (write_batches.h, docs/store.md
// "Batched commits"), begun with BEGIN IMMEDIATE, which takes the write lock up front so a
// transaction never has to upgrade a read snapshot (SQLITE_BUSY_SNAPSHOT).
#include "store/sqlite.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "store/sql_ports.h"
#include "store/write_batches.h"

namespace mcim::store {
namespace {

using sql::Q;

constexpr int kBusyTimeoutMs = 5000;
// Between two tries for the write lock a connection waits for another connection of this process
// to let go of it, or this long at most (a writer in another process is not signalled).
constexpr auto kBusyPoll = std::chrono::milliseconds(1);
constexpr std::size_t kPoolSize = 8;
constexpr int kAttempts = 3;  // a method that still found the database locked is run again
// A batch is committed once this many units wrote in it, whoever still waits for the write turn.
constexpr std::size_t kBatchMembers = 64;
// How long the last writer of a batch waits for units under way to join it before it commits
// alone (docs/store.md "Batched commits"): 1 ms took the services' flushes in F2 from 24 to 20
// per device and their CPU by 5 % (docs/performance.md).
constexpr std::chrono::microseconds kBatchLinger{1000};

// Values are always bound (?N), never spliced into the text.
const char* sql_of(Q q) {
  switch (q) {
    case Q::pcid_insert:
      return "INSERT INTO pcid_subscription (pcid, batch, k, opc, ind_bits, status, dormant_until, "
             "active_until, not_after, expired_at) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING";
    case Q::pcid_find:
      return "SELECT pcid, batch, k, opc, ind_bits, status, dormant_until, active_until, "
             "not_after, expired_at, renewal_package FROM pcid_subscription WHERE pcid = ?1";
    case Q::pcid_stage:
      return "UPDATE pcid_subscription SET renewal_package = ?2, renewal_k = ?3, renewal_opc = ?4, "
             "renewal_not_after = ?5 WHERE pcid = ?1";
    // Every right-hand side reads the row as it was: the staged values move in, then clear.
    case Q::pcid_complete:
      return "UPDATE pcid_subscription SET k = renewal_k, opc = renewal_opc, "
             "not_after = renewal_not_after, renewal_package = '', renewal_k = zeroblob(16), "
             "renewal_opc = zeroblob(16), renewal_not_after = 0 "
             "WHERE pcid = ?1 AND renewal_package = ?2 AND renewal_package <> ''";
    // F8: a PCID out of its quarantine and without a live session leaves for a new batch.
    case Q::pcid_release:
      return "DELETE FROM pcid_subscription WHERE pcid = ?1 AND ((status = 'expired' AND "
             "expired_at <> 0 AND expired_at + ?3 <= ?2) OR not_after + ?3 <= ?2) AND NOT EXISTS "
             "(SELECT 1 FROM session WHERE imsi = ?1 AND expires > ?2)";
    case Q::pcid_activate:
      return "UPDATE pcid_subscription SET status = 'active', active_until = ?2 "
             "WHERE pcid = ?1 AND status IN ('dormant', 'active')";
    case Q::pcid_status: return "SELECT status FROM pcid_subscription WHERE pcid = ?1";
    case Q::pcid_expire:
      return "UPDATE pcid_subscription SET status = 'expired', expired_at = ?1 "
             "WHERE status = 'dormant' AND dormant_until < ?1";
    case Q::pcid_count: return "SELECT count(*) FROM pcid_subscription";
    // The SQN advance: one statement, so the read-check-write of SEQ_HE cannot interleave.
    case Q::sqn_reserve:
      return "INSERT INTO sqn_state (imsi, seq_he) SELECT ?1, ?2 WHERE ?2 <= ?3 "
             "ON CONFLICT (imsi) DO UPDATE SET seq_he = seq_he + ?2 WHERE seq_he + ?2 <= ?3 "
             "RETURNING seq_he";
    case Q::sqn_resync:
      return "INSERT INTO sqn_state (imsi, seq_he) VALUES (?1, ?2) "
             "ON CONFLICT (imsi) DO UPDATE SET seq_he = max(seq_he, excluded.seq_he) "
             "RETURNING seq_he";
    case Q::sqn_current: return "SELECT seq_he FROM sqn_state WHERE imsi = ?1";
    case Q::reg_put:
      return "INSERT INTO registration (pcid, device_id, sho, dpf_url, dpf_key_pin, apn, created, "
             "bootstrap_key, refusal, refused) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
             "ON CONFLICT (pcid) DO UPDATE SET device_id = excluded.device_id, "
             "dpf_url = excluded.dpf_url, dpf_key_pin = excluded.dpf_key_pin, "
             "apn = excluded.apn, created = excluded.created, "
             "bootstrap_key = excluded.bootstrap_key, refusal = excluded.refusal, "
             "refused = excluded.refused WHERE sho = excluded.sho "
             "RETURNING pcid";
    case Q::reg_find:
      return "SELECT pcid, device_id, sho, dpf_url, dpf_key_pin, apn, created, bootstrap_key, "
             "refusal, refused, successor FROM registration "
             "WHERE pcid = ?1";
    case Q::reg_remove: return "DELETE FROM registration WHERE pcid = ?1 AND sho = ?2";
    case Q::reg_drop: return "DELETE FROM registration WHERE pcid = ?1";
    case Q::reg_holder: return "SELECT sho FROM registration WHERE pcid = ?1";
    case Q::reg_transfer:
      return "UPDATE registration SET sho = ?3, created = ?4, refusal = '', refused = 0, "
             "successor = '' WHERE pcid = ?1 AND sho = ?2";
    case Q::reg_successor: return "UPDATE registration SET successor = ?2 WHERE pcid = ?1";
    case Q::pkg_insert:
      return "INSERT INTO package (package_id, device_id, sho, package, status, report, created, "
             "updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
             "ON CONFLICT (package_id) DO NOTHING";
    case Q::pkg_next:
      return "SELECT package_id, device_id, sho, package, status, report, created, updated FROM "
             "package WHERE device_id = ?1 "
             "AND status <> 'reported' ORDER BY created, seq LIMIT 1";
    case Q::pkg_next_from:
      return "SELECT package_id, device_id, sho, package, status, report, created, updated FROM "
             "package WHERE device_id = ?1 AND sho <> '' AND sho IN (?2, ?3) "
             "AND status <> 'reported' ORDER BY created, seq LIMIT 1";
    case Q::pkg_find:
      return "SELECT package_id, device_id, sho, package, status, report, created, updated FROM "
             "package WHERE package_id = ?1";
    case Q::pkg_deliver:
      return "UPDATE package SET status = 'delivered', updated = ?2 "
             "WHERE package_id = ?1 AND status <> 'reported'";
    case Q::pkg_report:
      return "UPDATE package SET status = 'reported', report = ?2, updated = ?3 "
             "WHERE package_id = ?1 AND status <> 'reported'";
    case Q::pkg_status: return "SELECT status FROM package WHERE package_id = ?1";
    case Q::ses_drop_expired: return "DELETE FROM session WHERE imsi = ?1 AND expires <= ?2";
    case Q::ses_insert:
      return "INSERT INTO session (id, imsi, vno, restricted, created, expires) VALUES (?1, ?2, "
             "?3, ?4, ?5, ?6) "
             "ON CONFLICT DO NOTHING";
    case Q::ses_holder: return "SELECT vno FROM session WHERE imsi = ?1";
    case Q::ses_find:
      return "SELECT id, imsi, vno, restricted, created, expires FROM session WHERE id = ?1";
    case Q::ses_close: return "DELETE FROM session WHERE id = ?1";
    case Q::audit_append:
      return "INSERT INTO audit_record (at, service, event, subject, principal, outcome, detail) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING seq";
    case Q::audit_recent:
      return "SELECT seq, at, service, event, subject, principal, outcome, detail "
             "FROM audit_record ORDER BY seq DESC LIMIT ?1";
    case Q::att_insert:
      return "INSERT INTO attestation_request (request_id, pcid, device_id, sho, nonce, status, "
             "created, answered) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
             "ON CONFLICT (request_id) DO NOTHING";
    case Q::att_next:
      return "SELECT request_id, pcid, device_id, sho, nonce, status, created, answered FROM "
             "attestation_request WHERE device_id = ?1 AND status = 'pending' "
             "ORDER BY created, seq LIMIT 1";
    case Q::att_next_from:
      return "SELECT request_id, pcid, device_id, sho, nonce, status, created, answered FROM "
             "attestation_request WHERE device_id = ?1 AND status = 'pending' "
             "AND sho <> '' AND sho IN (?2, ?3) ORDER BY created, seq LIMIT 1";
    case Q::att_find:
      return "SELECT request_id, pcid, device_id, sho, nonce, status, created, answered FROM "
             "attestation_request WHERE request_id = ?1";
    case Q::att_answer:
      return "UPDATE attestation_request SET status = 'answered', answered = ?2 "
             "WHERE request_id = ?1 AND status = 'pending'";
    case Q::att_status: return "SELECT status FROM attestation_request WHERE request_id = ?1";
    case Q::sub_insert:
      return "INSERT INTO subscriber (device_id, pcid, owner, imsi, platform_cert, "
             "registration_nonce, nonce_expires, status, challenge_id, challenge_nonce, "
             "package_id, refusal, created, updated, replacing) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) "
             "ON CONFLICT DO NOTHING";
    case Q::sub_find:
      return "SELECT device_id, pcid, owner, imsi, platform_cert, registration_nonce, "
             "nonce_expires, status, challenge_id, challenge_nonce, package_id, refusal, created, "
             "updated, replacing FROM subscriber WHERE device_id = ?1";
    case Q::sub_find_pcid:
      return "SELECT device_id, pcid, owner, imsi, platform_cert, registration_nonce, "
             "nonce_expires, status, challenge_id, challenge_nonce, package_id, refusal, created, "
             "updated, replacing FROM subscriber WHERE pcid = ?1";
    case Q::sub_taken:
      return "SELECT CASE WHEN EXISTS (SELECT 1 FROM subscriber WHERE device_id = ?1) "
             "THEN 'device_id' WHEN EXISTS (SELECT 1 FROM subscriber WHERE pcid = ?2) THEN 'pcid' "
             "WHEN EXISTS (SELECT 1 FROM subscriber WHERE imsi = ?3) THEN 'imsi' ELSE '' END";
    case Q::sub_update:
      return "UPDATE subscriber SET status = ?3, challenge_id = ?4, challenge_nonce = ?5, "
             "package_id = ?6, refusal = ?7, updated = ?8 WHERE device_id = ?1 AND status = ?2";
    case Q::sub_status: return "SELECT status FROM subscriber WHERE device_id = ?1";
    case Q::sub_remove: return "DELETE FROM subscriber WHERE device_id = ?1";
    case Q::chl_insert:
      return "INSERT INTO challenge (challenge_id, sho, device_id, nonce, created, expires, used) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (challenge_id) DO NOTHING";
    case Q::chl_find:
      return "SELECT challenge_id, sho, device_id, nonce, created, expires, used FROM challenge "
             "WHERE challenge_id = ?1";
    case Q::chl_consume:
      return "UPDATE challenge SET used = 1 WHERE challenge_id = ?1 AND used = 0 "
             "RETURNING challenge_id, sho, device_id, nonce, created, expires, used";
    case Q::chl_used: return "SELECT challenge_id FROM challenge WHERE challenge_id = ?1";
    case Q::ref_put:
      return "INSERT INTO reference_set (model, issued, signed_text, stored) "
             "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (model) DO UPDATE SET "
             "issued = excluded.issued, signed_text = excluded.signed_text, "
             "stored = excluded.stored";
    case Q::ref_all:
      return "SELECT model, issued, signed_text, stored FROM reference_set ORDER BY model";
    case Q::ins_insert:
      return "INSERT INTO instruction (instruction_id, pcid, device_id, sho, instruction, "
             "sequence, action, credential, status, report, created, updated) VALUES (?1, "
             "?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (instruction_id) DO "
             "NOTHING";
    case Q::ins_find:
      return "SELECT instruction_id, pcid, device_id, sho, instruction, sequence, action, "
             "credential, status, report, created, updated, seq FROM instruction WHERE "
             "instruction_id = ?1";
    case Q::ins_collect:
      return "UPDATE instruction SET status = 'delivered', updated = ?3 WHERE status <> "
             "'answered' AND seq IN (SELECT seq FROM instruction WHERE device_id = ?1 AND "
             "status <> 'answered' ORDER BY seq LIMIT ?2) RETURNING instruction_id, pcid, "
             "device_id, sho, instruction, sequence, action, credential, status, report, "
             "created, updated, seq";
    case Q::ins_answer:
      return "UPDATE instruction SET status = 'answered', report = ?2, updated = ?3 WHERE "
             "instruction_id = ?1 AND status <> 'answered' RETURNING instruction_id, pcid, "
             "device_id, sho, instruction, sequence, action, credential, status, report, "
             "created, updated, seq";
    case Q::ins_status: return "SELECT status FROM instruction WHERE instruction_id = ?1";
    case Q::ins_count: return "SELECT count(*) FROM instruction";
    case Q::ins_prune_answered:
      return "DELETE FROM instruction WHERE seq IN (SELECT seq FROM instruction WHERE status "
             "= 'answered' ORDER BY seq LIMIT ?1)";
    case Q::ins_prune_oldest:
      return "DELETE FROM instruction WHERE seq IN (SELECT seq FROM instruction ORDER BY seq "
             "LIMIT ?1)";
    case Q::iss_insert:
      return "INSERT INTO issued_instruction (instruction_id, device_id, action, credential, "
             "sequence, created, owner, revert_to, status, report, answered) VALUES (?1, ?2, "
             "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (instruction_id) DO NOTHING";
    case Q::iss_find:
      return "SELECT instruction_id, device_id, action, credential, sequence, created, "
             "owner, revert_to, status, report, answered FROM issued_instruction WHERE "
             "instruction_id = ?1";
    case Q::iss_revert:
      return "SELECT instruction_id, device_id, action, credential, sequence, created, "
             "owner, revert_to, status, report, answered FROM issued_instruction WHERE "
             "device_id = ?1 AND revert_to <> '' ORDER BY seq DESC LIMIT 1";
    case Q::iss_answer:
      return "UPDATE issued_instruction SET status = ?4, report = ?2, answered = ?3 WHERE "
             "instruction_id = ?1 AND status = 'queued' RETURNING instruction_id, device_id, "
             "action, credential, sequence, created, owner, revert_to, status, report, "
             "answered";
    case Q::iss_status: return "SELECT status FROM issued_instruction WHERE instruction_id = ?1";
    case Q::iss_count: return "SELECT count(*) FROM issued_instruction";
    case Q::iss_prune_answered:
      return "DELETE FROM issued_instruction WHERE seq IN (SELECT seq FROM "
             "issued_instruction WHERE status <> 'queued' ORDER BY seq LIMIT ?1)";
    case Q::iss_prune_oldest:
      return "DELETE FROM issued_instruction WHERE seq IN (SELECT seq FROM "
             "issued_instruction ORDER BY seq LIMIT ?1)";
    case Q::ntc_insert:
      return "INSERT INTO notice (kind, subject, sho, path, body, created) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING seq";
    case Q::ntc_remove: return "DELETE FROM notice WHERE seq = ?1";
    case Q::ntc_pending:
      return "SELECT seq, kind, subject, sho, path, body, created FROM notice "
             "ORDER BY seq LIMIT ?1";
    case Q::ntc_count: return "SELECT count(*) FROM notice";
    case Q::version_read: return "SELECT coalesce(max(version), 0) FROM schema_version";
    case Q::version_record:
      return "INSERT INTO schema_version (version, applied_at, description) VALUES (?1, ?2, ?3)";
    case Q::count_: break;
  }
  return "";
}

ErrorCode code_of(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return ErrorCode::busy;
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
    case SQLITE_PROTOCOL:
    case SQLITE_NOLFS:
    case SQLITE_AUTH: return ErrorCode::io_error;
    case SQLITE_CONSTRAINT:
    case SQLITE_TOOBIG:
    case SQLITE_RANGE: return ErrorCode::invalid_argument;
    default: return ErrorCode::internal;
  }
}

// The connections of one database in this process that wait for its write lock, woken when
// another of them lets go of it. SQLite's own busy_timeout handler sleeps 1, 2, 5, 10, ... 100 ms
// between tries whatever the holder does, so with a commit (one fsync) every few milliseconds a
// waiting writer lost tens of milliseconds per turn, and more worker threads made it worse
// (docs/performance.md "Full provisioning"). Here a waiter tries again as soon as a writer of
// this process is done, or after kBusyPoll for a writer of another process.
class LockWaiters {
 public:
  void released() {
    {
      std::lock_guard lock(m_);
      ++releases_;
    }
    cv_.notify_all();
  }
  // Until the next release, or `most`.
  void wait(std::chrono::milliseconds most) {
    std::unique_lock lock(m_);
    const std::uint64_t seen = releases_;
    cv_.wait_for(lock, most, [&] { return releases_ != seen; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::uint64_t releases_ = 0;
};

// One sqlite3 handle and its prepared statements; used by one thread at a time.
class Connection {
 public:
  static Result<std::unique_ptr<Connection>> open(const std::string& path,
                                                  std::shared_ptr<LockWaiters> waiters);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() {
    for (auto* s : prepared_) sqlite3_finalize(s);
    for (auto& [text, s] : control_) sqlite3_finalize(s);
    sqlite3_close_v2(db_);
  }

  // The error of the last call on this handle. SQLite's messages name constraints and files,
  // never bound values; the operation names the port method.
  Error error(int rc) const {
    const char* detail = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    return Error(code_of(rc), fmt::format("sqlite {}: {}", op_, detail));
  }
  // Statements without values only: pragmas, BEGIN/COMMIT, migrations.
  Result<void> exec(std::string_view sql) {
    const std::string text(sql);
    const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return std::unexpected(error(rc));
    return {};
  }
  // One transaction or savepoint statement (BEGIN IMMEDIATE, COMMIT, SAVEPOINT unit, ...), a
  // static text, prepared once per connection: parsing them anew for every unit and call cost
  // about 2 % of the services' CPU (docs/performance.md).
  Result<void> control(std::string_view sql) {
    sqlite3_stmt* s = nullptr;
    for (const auto& [text, stmt] : control_) {
      if (text == sql) s = stmt;
    }
    if (s == nullptr) {
      const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                        SQLITE_PREPARE_PERSISTENT, &s, nullptr);
      if (rc != SQLITE_OK) return std::unexpected(error(rc));
      control_.emplace_back(sql, s);
    }
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return std::unexpected(error(rc));
    return {};
  }
  // sql::UnitCalls' statements that PostgreSQL sends with the next one; here, in-process, now.
  Result<void> defer(std::string_view sql) { return control(sql); }
  Result<sqlite3_stmt*> prepared(Q q) {
    auto& slot = prepared_[static_cast<std::size_t>(q)];
    if (slot == nullptr) {
      const int rc =
          sqlite3_prepare_v3(db_, sql_of(q), -1, SQLITE_PREPARE_PERSISTENT, &slot, nullptr);
      if (rc != SQLITE_OK) return std::unexpected(error(rc));
    }
    return slot;
  }
  void set_operation(std::string_view op) { op_ = op; }
  sqlite3* handle() const { return db_; }
  const std::shared_ptr<LockWaiters>& shared_waiters() const { return waiters_; }

 private:
  Connection(sqlite3* db, std::shared_ptr<LockWaiters> waiters)
      : db_(db), waiters_(std::move(waiters)) {}
  Result<void> configure(bool memory);
  Result<void> exec_while_busy(std::string_view sql);
  // sqlite3_busy_handler: true (try again) until kBusyTimeoutMs after the first refusal.
  static int on_busy(void* self, int count);

  sqlite3* db_;
  std::shared_ptr<LockWaiters> waiters_;
  std::chrono::steady_clock::time_point busy_since_{};
  std::array<sqlite3_stmt*, sql::kQueries> prepared_{};
  std::vector<std::pair<std::string_view, sqlite3_stmt*>> control_;  // static texts (control)
  std::string_view op_ = "open";
};

// A file holding K and OPc is created owner-only; SQLite gives its -wal and -shm files the same
// mode. Any failure (it exists, no such directory) is left for sqlite3_open_v2 to report.
void create_private_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) ::close(fd);
}

// SQLite keeps memory statistics (sqlite3_memory_used) by default, behind one mutex of the
// library's that every allocation of every connection takes: the threads of all the roles in a
// process then queue on it (in `mcim up` under load, one futex call in twelve was there). Nothing
// here reads them. The setting must precede SQLite's initialisation, which the first
// sqlite3_open_v2 does; every connection of the process opens here, after this.
void configure_library() {
  static const int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  (void)rc;  // SQLITE_MISUSE when SQLite was initialised before: the statistics stay on
}

Result<std::unique_ptr<Connection>> Connection::open(const std::string& path,
                                                     std::shared_ptr<LockWaiters> waiters) {
  configure_library();
  const bool memory = path == ":memory:";
  if (!memory) create_private_file(path);
  sqlite3* db = nullptr;
  const int flags =
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  // Owns the handle even on failure.
  std::unique_ptr<Connection> conn(new Connection(db, std::move(waiters)));
  if (rc != SQLITE_OK) return std::unexpected(conn->error(rc));
  if (auto r = conn->configure(memory); !r) return sql::pass(r);
  return conn;
}

// Switching a new file to WAL upgrades a read lock to an exclusive one; SQLite answers BUSY at
// once, without its busy handler (which could deadlock there), when another connection opening
// the same file at the same moment holds a lock. Two service instances starting together must
// both open, so the switch is tried again until the busy timeout.
Result<void> Connection::exec_while_busy(std::string_view sql) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
  for (;;) {
    auto r = exec(sql);
    if (r || r.error().code != ErrorCode::busy || std::chrono::steady_clock::now() > deadline) {
      return r;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

int Connection::on_busy(void* self, int count) {
  auto& c = *static_cast<Connection*>(self);
  const auto now = std::chrono::steady_clock::now();
  if (count == 0) {
    c.busy_since_ = now;
  } else if (now - c.busy_since_ > std::chrono::milliseconds(kBusyTimeoutMs)) {
    return 0;
  }
  c.waiters_->wait(kBusyPoll);
  return 1;
}

Result<void> Connection::configure(bool memory) {
  sqlite3_busy_handler(db_, &Connection::on_busy, this);
  // WAL: readers never block the writer. synchronous=FULL: a committed SQN reservation survives
  // a power cut, at the price of one fsync per commit (docs/store.md). secure_delete: removed
  // rows are overwritten, not left in free pages.
  for (const char* pragma :
       {"PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL", "PRAGMA foreign_keys = ON",
        "PRAGMA secure_delete = ON", "PRAGMA trusted_schema = OFF"}) {
    if (auto r = exec_while_busy(pragma); !r) return r;
  }
  if (memory) return {};
  sqlite3_stmt* s = nullptr;
  if (int rc = sqlite3_prepare_v2(db_, "PRAGMA journal_mode", -1, &s, nullptr); rc != SQLITE_OK) {
    return std::unexpected(error(rc));
  }
  const bool wal =
      sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0) != nullptr &&
      std::string_view(reinterpret_cast<const char*>(sqlite3_column_text(s, 0))) == "wal";
  sqlite3_finalize(s);
  if (!wal) return fail(ErrorCode::io_error, "sqlite open: the database cannot use WAL mode");
  return {};
}

// A prepared statement borrowed for one execution: bound, stepped, then reset and unbound.
class Stmt {
 public:
  Stmt(Connection& c, sqlite3_stmt* s) : c_(&c), s_(s) {}
  Stmt(Stmt&& o) noexcept : c_(o.c_), s_(std::exchange(o.s_, nullptr)), bind_rc_(o.bind_rc_) {}
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt() {
    if (s_ == nullptr) return;
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }

  // Bound values are not copied (SQLITE_STATIC): they outlive the Stmt in every caller, and no
  // copy of a key is left behind.
  Stmt& text(int i, std::string_view v) {
    if (v.size() > INT_MAX) return note(SQLITE_TOOBIG);
    return note(sqlite3_bind_text(s_, i, v.empty() ? "" : v.data(), static_cast<int>(v.size()),
                                  SQLITE_STATIC));
  }
  Stmt& integer(int i, std::int64_t v) { return note(sqlite3_bind_int64(s_, i, v)); }
  Stmt& boolean(int i, bool v) { return integer(i, v ? 1 : 0); }
  Stmt& blob(int i, ByteView v) {
    if (v.size() > INT_MAX) return note(SQLITE_TOOBIG);
    if (v.empty()) return note(sqlite3_bind_zeroblob(s_, i, 0));
    return note(sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC));
  }

  Result<bool> step() {  // true: a row is available
    if (bind_rc_ != SQLITE_OK) return std::unexpected(c_->error(bind_rc_));
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return std::unexpected(c_->error(rc));
  }
  // Runs to completion; in autocommit mode that is the commit, so its failure is reported.
  Result<void> finish() {
    for (;;) {
      auto r = step();
      if (!r) return sql::pass(r);
      if (!*r) return {};
    }
  }
  std::int64_t changes() const { return sqlite3_changes64(c_->handle()); }

  std::int64_t int_at(int i) const { return sqlite3_column_int64(s_, i); }
  bool bool_at(int i) const { return int_at(i) != 0; }
  std::string text_at(int i) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    return p == nullptr ? std::string() : std::string(p, column_size(i));
  }
  // Valid until the next step: callers copy it out (K and OPc straight into a Secret).
  ByteView blob_at(int i) const {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(s_, i));
    return p == nullptr ? ByteView() : ByteView(p, column_size(i));
  }

 private:
  std::size_t column_size(int i) const {
    return static_cast<std::size_t>(sqlite3_column_bytes(s_, i));
  }
  Stmt& note(int rc) {
    if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
    return *this;
  }

  Connection* c_;
  sqlite3_stmt* s_;
  int bind_rc_ = SQLITE_OK;
};

// BEGIN IMMEDIATE ... COMMIT; rolled back unless committed.
class Transaction {
 public:
  explicit Transaction(Connection& c) : c_(c) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (open_) (void)c_.control("ROLLBACK");
  }
  // Within a unit's transaction (AuditStore::atomically) a method's statements join it: its
  // begin and commit do nothing, and the savepoint the unit takes around each call undoes it
  // when it fails.
  Result<void> begin() {
    if (sqlite3_get_autocommit(c_.handle()) == 0) return {};
    auto r = c_.control("BEGIN IMMEDIATE");
    open_ = r.has_value();
    return r;
  }
  Result<void> begin_migration() { return begin(); }  // the write lock serialises openers
  Result<void> commit() {
    if (!open_) return {};
    auto r = c_.control("COMMIT");
    if (r) open_ = false;
    return r;
  }

 private:
  Connection& c_;
  bool open_ = false;
};

// The connection pool, the retry policy and the units of work shared by the ports of one
// database. Every write runs in a unit, and the units share commits (WriteBatches).
class Backend : public sql::UnitCalls<Backend, Connection, WriteBatches::Member> {
 public:
  static constexpr int kAttempts = store::kAttempts;
  static constexpr bool kLoneWritesInUnits = true;

  Backend(std::string path, std::size_t pool_size, std::unique_ptr<Connection> first)
      : waiters_(first->shared_waiters()),
        pool_(pool_size, [path = std::move(path),
                          w = first->shared_waiters()] { return Connection::open(path, w); }),
        batches_(
            {[this] { return begin_batch(); }, [this](bool commit) { return end_batch(commit); }},
            kBatchMembers, std::chrono::milliseconds(kBusyTimeoutMs), kBatchLinger) {
    pool_.adopt(std::move(first));
  }

  // Runs `f` on a pooled connection, whatever unit the thread is in. A method that still found
  // the database locked after the busy timeout changed nothing (its transaction rolled back) and
  // is run again.
  template <class F>
  std::invoke_result_t<F&, Connection&> alone(std::string_view op, F&& f) {
    for (int attempt = 1;; ++attempt) {
      auto lease = pool_.acquire();
      if (!lease) return sql::pass(lease);
      Connection& c = **lease;
      c.set_operation(op);
      const auto changes = sqlite3_total_changes64(c.handle());
      auto r = f(c);
      if (sqlite3_get_autocommit(c.handle()) == 0) (void)c.control("ROLLBACK");
      // A write (committed or rolled back) has let go of the write lock: wake its waiters.
      if (sqlite3_total_changes64(c.handle()) != changes) waiters_->released();
      if (r || r.error().code != ErrorCode::busy || attempt == kAttempts) return r;
    }
  }

  // A unit's first write waits for the write turn and joins the open batch (or begins one); its
  // own writes are a savepoint in the batch's transaction.
  Result<void> open_unit(Unit& u, std::string_view op) {
    auto member = batches_.enter();
    if (!member) return sql::pass(member);
    Connection& c = **batch_;
    c.set_operation(op);
    // A transaction that SQLite rolled back on its own (an I/O error) is lost for the whole
    // batch; without this check the savepoint below would begin and commit one of its own.
    if (sqlite3_get_autocommit(c.handle()) != 0) {
      const Error lost(ErrorCode::io_error, fmt::format("sqlite {}: the batch's transaction was "
                                                        "rolled back",
                                                        op));
      (void)batches_.leave(*member, lost);
      return std::unexpected(lost);
    }
    if (auto sp = c.control("SAVEPOINT unit"); !sp) {
      (void)batches_.leave(*member, sp.error());
      return sp;
    }
    u.hold.emplace(std::move(*member));
    u.conn = &c;
    return {};
  }

  // Releases the unit's savepoint when `r` is success, else undoes it, then waits for its batch
  // to be committed: the unit's outcome is `r`, or why the batch was not committed.
  Result<void> end_unit(Unit& u, Result<void> r) {
    Connection& c = *u.conn;
    if (r) {
      if (auto released = c.control("RELEASE unit"); !released) {
        r = std::unexpected(released.error());
      }
    }
    std::optional<Error> lost;
    if (!r) {
      if (auto undone = c.exec("ROLLBACK TO unit; RELEASE unit"); !undone) lost = undone.error();
    }
    auto settled = batches_.leave(*u.hold, std::move(lost));
    u.hold.reset();
    u.conn = nullptr;
    if (r && !settled) return settled;
    return r;
  }

  void pause(int) {}  // the busy handler has waited already
  void unit_started() { batches_.started(); }
  void unit_finished() { batches_.finished(); }

 private:
  // WriteBatches' hooks, called with the write turn held: the batch's connection and write lock.
  Result<void> begin_batch() {
    auto lease = pool_.acquire();
    if (!lease) return sql::pass(lease);
    (*lease)->set_operation("batch");
    if (auto begun = (*lease)->control("BEGIN IMMEDIATE"); !begun) return begun;
    batch_.emplace(std::move(*lease));
    return {};
  }
  Result<void> end_batch(bool commit) {
    Connection& c = **batch_;
    c.set_operation("batch");
    Result<void> r = commit ? c.control("COMMIT") : Result<void>{};
    if (sqlite3_get_autocommit(c.handle()) == 0) (void)c.control("ROLLBACK");
    waiters_->released();
    batch_.reset();  // back to the pool
    return r;
  }

  std::shared_ptr<LockWaiters> waiters_;  // shared by every connection of the pool
  sql::ConnectionPool<Connection> pool_;
  // The connection of the open batch; only the holder of the write turn touches it.
  std::optional<sql::ConnectionPool<Connection>::Lease> batch_;
  WriteBatches batches_;
};

struct Driver {
  using Connection = store::Connection;
  using Stmt = store::Stmt;
  using Transaction = store::Transaction;
  using Backend = store::Backend;
  static constexpr std::string_view kName = "sqlite";
  static constexpr std::string_view kSchemaVersionTable = kSchemaVersionSqlite;

  static Result<Stmt> query(Connection& c, Q q) {
    auto s = c.prepared(q);
    if (!s) return sql::pass(s);
    return Stmt(c, *s);
  }
  static std::string_view migration_text(const Migration& m) { return m.sqlite; }
};

}  // namespace

Result<std::unique_ptr<Database>> open_sqlite(std::string_view path_view) {
  std::string path(path_view);
  if (path.find('\0') != std::string::npos) {
    return fail(ErrorCode::invalid_argument, "sqlite path contains a NUL byte");
  }
  if (sqlite3_threadsafe() == 0) {  // connections are shared between threads through the pool
    return fail(ErrorCode::unsupported, "sqlite: the library was built without thread support");
  }
  auto first = Connection::open(path, std::make_shared<LockWaiters>());
  if (!first) return sql::pass(first);
  auto version = sql::migrate<Driver>(**first);
  if (!version) return sql::pass(version);
  // Each connection to ":memory:" would be a database of its own: that pool stays at one.
  const std::size_t pool_size = path == ":memory:" ? 1 : kPoolSize;
  return std::make_unique<sql::SqlDatabase<Driver>>(*version, std::move(path), pool_size,
                                                    std::move(*first));
}

}  // namespace mcim::store
