// The PostgreSQL driver of the SQL ports (sql_ports.h), over libpq. Thread-safety: a pool of
// connections, each used by one thread at a time, each preparing a statement on its first use.
// Every parameter and every result column travels in binary format: no value is ever spliced into
// SQL text, and K/OPc are sent from the caller's Secret without a copy. Transactions run at the
// server's default isolation (READ COMMITTED unless the operator chose otherwise): the statements
// are atomic by construction there (ON CONFLICT, conditional UPDATE), and serialisation failures
// or deadlocks, which a stricter level or lock order can raise, are retried.
#include "store/postgres.h"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <algorithm>
#include <array>
#include <bitset>
#include <charconv>
#include <chrono>
#include <climits>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/secure.h"
#include "store/sql_ports.h"

namespace mcim::store {
namespace {

using sql::Q;

constexpr std::size_t kPoolSize = 8;
constexpr int kAttempts = 5;    // for serialisation failures and deadlocks (SQLSTATE class 40)
constexpr int kMaxParams = 16;  // the widest statement, the subscriber insert, has 14

// Every parameter carries an explicit type: they are sent in binary, so the server must not guess.
const char* sql_of(Q q) {
  switch (q) {
    case Q::pcid_insert:
      return "INSERT INTO pcid_subscription (pcid, batch, k, opc, ind_bits, status, dormant_until, "
             "active_until, not_after, expired_at) VALUES ($1::text, $2::text, "
             "$3::bytea, $4::bytea, $5::bigint, $6::text, $7::bigint, $8::bigint, $9::bigint, "
             "$10::bigint) ON CONFLICT DO NOTHING";
    case Q::pcid_find:
      return "SELECT pcid, batch, k, opc, ind_bits, status, dormant_until, active_until, "
             "not_after, expired_at, renewal_package FROM pcid_subscription WHERE pcid = $1::text";
    case Q::pcid_stage:
      return "UPDATE pcid_subscription SET renewal_package = $2::text, renewal_k = $3::bytea, "
             "renewal_opc = $4::bytea, renewal_not_after = $5::bigint WHERE pcid = $1::text";
    // Every right-hand side reads the row as it was: the staged values move in, then clear.
    case Q::pcid_complete:
      return "UPDATE pcid_subscription SET k = renewal_k, opc = renewal_opc, "
             "not_after = renewal_not_after, renewal_package = '', "
             "renewal_k = decode('00000000000000000000000000000000', 'hex'), "
             "renewal_opc = decode('00000000000000000000000000000000', 'hex'), "
             "renewal_not_after = 0 "
             "WHERE pcid = $1::text AND renewal_package = $2::text AND renewal_package <> ''";
    // F8: a PCID out of its quarantine and without a live session leaves for a new batch.
    case Q::pcid_release:
      return "DELETE FROM pcid_subscription WHERE pcid = $1::text AND ((status = 'expired' AND "
             "expired_at <> 0 AND expired_at + $3::bigint <= $2::bigint) OR "
             "not_after + $3::bigint <= $2::bigint) AND NOT EXISTS "
             "(SELECT 1 FROM session WHERE imsi = $1::text AND expires > $2::bigint)";
    case Q::pcid_activate:
      return "UPDATE pcid_subscription SET status = 'active', active_until = $2::bigint "
             "WHERE pcid = $1::text AND status IN ('dormant', 'active')";
    case Q::pcid_status: return "SELECT status FROM pcid_subscription WHERE pcid = $1::text";
    case Q::pcid_expire:
      return "UPDATE pcid_subscription SET status = 'expired', expired_at = $1::bigint "
             "WHERE status = 'dormant' AND dormant_until < $1::bigint";
    case Q::pcid_count: return "SELECT count(*) FROM pcid_subscription";
    // The SQN advance: one statement; a concurrent one on the same IMSI waits for the row lock
    // and re-evaluates the WHERE on the committed SEQ_HE.
    case Q::sqn_reserve:
      return "INSERT INTO sqn_state AS s (imsi, seq_he) SELECT $1::text, $2::bigint "
             "WHERE $2::bigint <= $3::bigint ON CONFLICT (imsi) DO UPDATE "
             "SET seq_he = s.seq_he + $2::bigint WHERE s.seq_he + $2::bigint <= $3::bigint "
             "RETURNING s.seq_he";
    case Q::sqn_resync:
      return "INSERT INTO sqn_state AS s (imsi, seq_he) VALUES ($1::text, $2::bigint) "
             "ON CONFLICT (imsi) DO UPDATE SET seq_he = greatest(s.seq_he, excluded.seq_he) "
             "RETURNING s.seq_he";
    case Q::sqn_current: return "SELECT seq_he FROM sqn_state WHERE imsi = $1::text";
    case Q::reg_put:
      return "INSERT INTO registration AS r (pcid, device_id, sho, dpf_url, dpf_key_pin, apn, "
             "created, bootstrap_key, refusal, refused) VALUES ($1::text, $2::text, "
             "$3::text, $4::text, $5::bytea, $6::text, $7::bigint, $8::bytea, $9::text, "
             "$10::bigint) "
             "ON CONFLICT (pcid) DO UPDATE SET device_id = excluded.device_id, "
             "dpf_url = excluded.dpf_url, dpf_key_pin = excluded.dpf_key_pin, "
             "apn = excluded.apn, created = excluded.created, "
             "bootstrap_key = excluded.bootstrap_key, refusal = excluded.refusal, "
             "refused = excluded.refused WHERE r.sho = excluded.sho "
             "RETURNING r.pcid";
    case Q::reg_find:
      return "SELECT pcid, device_id, sho, dpf_url, dpf_key_pin, apn, created, bootstrap_key, "
             "refusal, refused, successor FROM registration "
             "WHERE pcid = $1::text";
    case Q::reg_remove: return "DELETE FROM registration WHERE pcid = $1::text AND sho = $2::text";
    case Q::reg_drop: return "DELETE FROM registration WHERE pcid = $1::text";
    case Q::reg_holder: return "SELECT sho FROM registration WHERE pcid = $1::text";
    case Q::reg_transfer:
      return "UPDATE registration SET sho = $3::text, created = $4::bigint, refusal = '', "
             "refused = 0, successor = '' WHERE pcid = $1::text AND sho = $2::text";
    case Q::reg_successor:
      return "UPDATE registration SET successor = $2::text WHERE pcid = $1::text";
    case Q::pkg_insert:
      return "INSERT INTO package (package_id, device_id, sho, package, status, report, created, "
             "updated) VALUES ($1::text, $2::text, $3::text, "
             "$4::bytea, $5::text, $6::text, $7::bigint, $8::bigint) "
             "ON CONFLICT (package_id) DO NOTHING";
    case Q::pkg_next:
      return "SELECT package_id, device_id, sho, package, status, report, created, updated FROM "
             "package WHERE device_id = $1::text "
             "AND status <> 'reported' ORDER BY created, seq LIMIT 1";
    case Q::pkg_next_from:
      return "SELECT package_id, device_id, sho, package, status, report, created, updated FROM "
             "package WHERE device_id = $1::text AND sho <> '' "
             "AND sho IN ($2::text, $3::text) "
             "AND status <> 'reported' ORDER BY created, seq LIMIT 1";
    case Q::pkg_find:
      return "SELECT package_id, device_id, sho, package, status, report, created, updated FROM "
             "package WHERE package_id = $1::text";
    case Q::pkg_deliver:
      return "UPDATE package SET status = 'delivered', updated = $2::bigint "
             "WHERE package_id = $1::text AND status <> 'reported'";
    case Q::pkg_report:
      return "UPDATE package SET status = 'reported', report = $2::text, updated = $3::bigint "
             "WHERE package_id = $1::text AND status <> 'reported'";
    case Q::pkg_status: return "SELECT status FROM package WHERE package_id = $1::text";
    case Q::ses_drop_expired:
      return "DELETE FROM session WHERE imsi = $1::text AND expires <= $2::bigint";
    case Q::ses_insert:
      return "INSERT INTO session (id, imsi, vno, restricted, created, expires) VALUES ($1::text, "
             "$2::text, $3::text, "
             "$4::boolean, $5::bigint, $6::bigint) ON CONFLICT DO NOTHING";
    case Q::ses_holder: return "SELECT vno FROM session WHERE imsi = $1::text";
    case Q::ses_find:
      return "SELECT id, imsi, vno, restricted, created, expires FROM session WHERE id = $1::text";
    case Q::ses_close: return "DELETE FROM session WHERE id = $1::text";
    case Q::audit_append:
      return "INSERT INTO audit_record (at, service, event, subject, principal, outcome, detail) "
             "VALUES ($1::bigint, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text) "
             "RETURNING seq";
    case Q::audit_recent:
      return "SELECT seq, at, service, event, subject, principal, outcome, detail "
             "FROM audit_record ORDER BY seq DESC LIMIT $1::bigint";
    case Q::att_insert:
      return "INSERT INTO attestation_request (request_id, pcid, device_id, sho, nonce, status, "
             "created, answered) VALUES ($1::text, $2::text, $3::text, $4::text, $5::bytea, "
             "$6::text, $7::bigint, $8::bigint) ON CONFLICT (request_id) DO NOTHING";
    case Q::att_next:
      return "SELECT request_id, pcid, device_id, sho, nonce, status, created, answered FROM "
             "attestation_request WHERE device_id = $1::text AND status = 'pending' "
             "ORDER BY created, seq LIMIT 1";
    case Q::att_next_from:
      return "SELECT request_id, pcid, device_id, sho, nonce, status, created, answered FROM "
             "attestation_request WHERE device_id = $1::text AND status = 'pending' "
             "AND sho <> '' AND sho IN ($2::text, $3::text) ORDER BY created, seq LIMIT 1";
    case Q::att_find:
      return "SELECT request_id, pcid, device_id, sho, nonce, status, created, answered FROM "
             "attestation_request WHERE request_id = $1::text";
    case Q::att_answer:
      return "UPDATE attestation_request SET status = 'answered', answered = $2::bigint "
             "WHERE request_id = $1::text AND status = 'pending'";
    case Q::att_status: return "SELECT status FROM attestation_request WHERE request_id = $1::text";
    case Q::sub_insert:
      return "INSERT INTO subscriber (device_id, pcid, owner, imsi, platform_cert, "
             "registration_nonce, nonce_expires, status, challenge_id, challenge_nonce, "
             "package_id, refusal, created, updated, replacing) VALUES ($1::text, $2::text, "
             "$3::text, $4::text, $5::bytea, $6::bytea, $7::bigint, $8::text, $9::text, "
             "$10::bytea, $11::text, $12::text, $13::bigint, $14::bigint, $15::boolean) "
             "ON CONFLICT DO NOTHING";
    case Q::sub_find:
      return "SELECT device_id, pcid, owner, imsi, platform_cert, registration_nonce, "
             "nonce_expires, status, challenge_id, challenge_nonce, package_id, refusal, created, "
             "updated, replacing FROM subscriber WHERE device_id = $1::text";
    case Q::sub_find_pcid:
      return "SELECT device_id, pcid, owner, imsi, platform_cert, registration_nonce, "
             "nonce_expires, status, challenge_id, challenge_nonce, package_id, refusal, created, "
             "updated, replacing FROM subscriber WHERE pcid = $1::text";
    case Q::sub_taken:
      return "SELECT (CASE WHEN EXISTS (SELECT 1 FROM subscriber WHERE device_id = $1::text) "
             "THEN 'device_id' WHEN EXISTS (SELECT 1 FROM subscriber WHERE pcid = $2::text) "
             "THEN 'pcid' WHEN EXISTS (SELECT 1 FROM subscriber WHERE imsi = $3::text) "
             "THEN 'imsi' ELSE '' END)::text";
    case Q::sub_update:
      return "UPDATE subscriber SET status = $3::text, challenge_id = $4::text, "
             "challenge_nonce = $5::bytea, package_id = $6::text, refusal = $7::text, "
             "updated = $8::bigint WHERE device_id = $1::text AND status = $2::text";
    case Q::sub_status: return "SELECT status FROM subscriber WHERE device_id = $1::text";
    case Q::sub_remove: return "DELETE FROM subscriber WHERE device_id = $1::text";
    case Q::chl_insert:
      return "INSERT INTO challenge (challenge_id, sho, device_id, nonce, created, expires, used) "
             "VALUES ($1::text, $2::text, $3::text, $4::bytea, $5::bigint, $6::bigint, "
             "$7::boolean) ON CONFLICT (challenge_id) DO NOTHING";
    case Q::chl_find:
      return "SELECT challenge_id, sho, device_id, nonce, created, expires, used FROM challenge "
             "WHERE challenge_id = $1::text";
    // A concurrent consumer waits for the row lock, then re-evaluates `NOT used` on the
    // committed row and matches nothing.
    case Q::chl_consume:
      return "UPDATE challenge SET used = true WHERE challenge_id = $1::text AND NOT used "
             "RETURNING challenge_id, sho, device_id, nonce, created, expires, used";
    case Q::chl_used: return "SELECT challenge_id FROM challenge WHERE challenge_id = $1::text";
    case Q::ref_put:
      return "INSERT INTO reference_set (model, issued, signed_text, stored) "
             "VALUES ($1::text, $2::bigint, $3::text, $4::bigint) ON CONFLICT (model) DO UPDATE "
             "SET issued = excluded.issued, signed_text = excluded.signed_text, "
             "stored = excluded.stored";
    // Byte order, as SQLite and the memory store sort, whatever the database's collation.
    case Q::ref_all:
      return "SELECT model, issued, signed_text, stored FROM reference_set "
             "ORDER BY model COLLATE \"C\"";
    case Q::ins_insert:
      return "INSERT INTO instruction (instruction_id, pcid, device_id, sho, instruction, "
             "sequence, action, credential, status, report, created, updated) VALUES "
             "($1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint, $7::text, "
             "$8::text, $9::text, $10::text, $11::bigint, $12::bigint) ON CONFLICT "
             "(instruction_id) DO NOTHING";
    case Q::ins_find:
      return "SELECT instruction_id, pcid, device_id, sho, instruction, sequence, action, "
             "credential, status, report, created, updated, seq FROM instruction WHERE "
             "instruction_id = $1::text";
    case Q::ins_collect:
      return "UPDATE instruction SET status = 'delivered', updated = $3::bigint WHERE status "
             "<> 'answered' AND seq IN (SELECT seq FROM instruction WHERE device_id = "
             "$1::text AND status <> 'answered' ORDER BY seq LIMIT $2::bigint) RETURNING "
             "instruction_id, pcid, device_id, sho, instruction, sequence, action, "
             "credential, status, report, created, updated, seq";
    case Q::ins_answer:
      return "UPDATE instruction SET status = 'answered', report = $2::text, updated = "
             "$3::bigint WHERE instruction_id = $1::text AND status <> 'answered' RETURNING "
             "instruction_id, pcid, device_id, sho, instruction, sequence, action, "
             "credential, status, report, created, updated, seq";
    case Q::ins_status: return "SELECT status FROM instruction WHERE instruction_id = $1::text";
    case Q::ins_count: return "SELECT count(*) FROM instruction";
    case Q::ins_prune_answered:
      return "DELETE FROM instruction WHERE seq IN (SELECT seq FROM instruction WHERE status "
             "= 'answered' ORDER BY seq LIMIT $1::bigint)";
    case Q::ins_prune_oldest:
      return "DELETE FROM instruction WHERE seq IN (SELECT seq FROM instruction ORDER BY seq "
             "LIMIT $1::bigint)";
    case Q::iss_insert:
      return "INSERT INTO issued_instruction (instruction_id, device_id, action, credential, "
             "sequence, created, owner, revert_to, status, report, answered) VALUES "
             "($1::text, $2::text, $3::text, $4::text, $5::bigint, $6::bigint, $7::text, "
             "$8::text, $9::text, $10::text, $11::bigint) ON CONFLICT (instruction_id) DO "
             "NOTHING";
    case Q::iss_find:
      return "SELECT instruction_id, device_id, action, credential, sequence, created, "
             "owner, revert_to, status, report, answered FROM issued_instruction WHERE "
             "instruction_id = $1::text";
    case Q::iss_revert:
      return "SELECT instruction_id, device_id, action, credential, sequence, created, "
             "owner, revert_to, status, report, answered FROM issued_instruction WHERE "
             "device_id = $1::text AND revert_to <> '' ORDER BY seq DESC LIMIT 1";
    case Q::iss_answer:
      return "UPDATE issued_instruction SET status = $4::text, report = $2::text, answered = "
             "$3::bigint WHERE instruction_id = $1::text AND status = 'queued' RETURNING "
             "instruction_id, device_id, action, credential, sequence, created, owner, "
             "revert_to, status, report, answered";
    case Q::iss_status:
      return "SELECT status FROM issued_instruction WHERE instruction_id = $1::text";
    case Q::iss_count: return "SELECT count(*) FROM issued_instruction";
    case Q::iss_prune_answered:
      return "DELETE FROM issued_instruction WHERE seq IN (SELECT seq FROM "
             "issued_instruction WHERE status <> 'queued' ORDER BY seq LIMIT $1::bigint)";
    case Q::iss_prune_oldest:
      return "DELETE FROM issued_instruction WHERE seq IN (SELECT seq FROM "
             "issued_instruction ORDER BY seq LIMIT $1::bigint)";
    case Q::ntc_insert:
      return "INSERT INTO notice (kind, subject, sho, path, body, created) "
             "VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint) "
             "RETURNING seq";
    case Q::ntc_remove: return "DELETE FROM notice WHERE seq = $1::bigint";
    case Q::ntc_pending:
      return "SELECT seq, kind, subject, sho, path, body, created FROM notice "
             "ORDER BY seq LIMIT $1::bigint";
    case Q::ntc_count: return "SELECT count(*) FROM notice";
    case Q::version_read: return "SELECT coalesce(max(version), 0) FROM schema_version";
    case Q::version_record:
      return "INSERT INTO schema_version (version, applied_at, description) "
             "VALUES ($1::bigint, $2::bigint, $3::text)";
    case Q::count_: break;
  }
  return "";
}

// Results that hold K/OPc: their PGresult copy is wiped before libpq frees it.
bool holds_keys(Q q) { return q == Q::pcid_find; }

std::string trimmed(const char* message) {
  std::string s = message != nullptr ? message : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (auto& ch : s) {
    if (ch == '\n' || ch == '\t') ch = ' ';
  }
  return s;
}

// Maps a failed result to the port's codes. Messages carry the SQLSTATE and, for the classes
// whose texts name only objects (connection, resources, schema), the server's primary message;
// data and constraint errors name the constraint, never the offending value.
ErrorCode code_of(std::string_view sqlstate) {
  const auto cls = sqlstate.substr(0, 2);
  if (cls == "08" || cls == "28" || cls == "3D" || cls == "53" || cls == "57" || cls == "58") {
    return ErrorCode::io_error;
  }
  if (cls == "40") return ErrorCode::busy;
  if (cls == "22" || cls == "23") return ErrorCode::invalid_argument;
  return ErrorCode::internal;
}

// One libpq connection and the statements it has prepared; used by one thread at a time.
class Connection {
 public:
  static Result<std::unique_ptr<Connection>> connect(const std::string& url);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { PQfinish(conn_); }

  bool broken() const { return stuck_ || PQstatus(conn_) != CONNECTION_OK; }
  // No transaction, neither open nor deferred (a unit's BEGIN waiting for its first statement).
  bool idle() const { return deferred_.empty() && PQtransactionStatus(conn_) == PQTRANS_IDLE; }
  void set_operation(std::string_view op) { op_ = op; }

  Error error(const PGresult* r) const {
    const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    if (state == nullptr || broken()) {
      return Error(ErrorCode::io_error,
                   fmt::format("postgresql {}: {}", op_, trimmed(PQerrorMessage(conn_))));
    }
    const std::string_view code(state);
    const ErrorCode mapped = code_of(code);
    if (mapped == ErrorCode::busy) {
      return Error(mapped, fmt::format("postgresql {}: transaction conflict kept recurring "
                                       "(SQLSTATE {})",
                                       op_, code));
    }
    if (mapped == ErrorCode::invalid_argument) {
      const char* constraint = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
      return Error(mapped,
                   fmt::format("postgresql {}: value refused by the schema{} (SQLSTATE {})", op_,
                               constraint ? fmt::format(", {}", constraint) : "", code));
    }
    return Error(mapped,
                 fmt::format("postgresql {}: {} (SQLSTATE {})", op_,
                             trimmed(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)), code));
  }

  // Statements without values only: BEGIN/COMMIT, locks, migrations. Deferred statements go
  // first, in a round trip of their own.
  Result<void> exec(std::string_view sql) {
    if (!deferred_.empty()) {
      if (auto r = check(pipelined(nullptr, 0, nullptr, nullptr, nullptr)); !r) return r;
    }
    const std::string text(sql);
    return check(PQexec(conn_, text.c_str()));
  }

  // A statement without values (one, from sql::UnitCalls: BEGIN and savepoints) that goes with
  // the next one, in the same round trip to the server.
  Result<void> defer(std::string_view sql) {
    deferred_.push_back(sql);
    return {};
  }
  // Forgets the deferred statements (a connection going back to the pool).
  void drop_deferred() { deferred_.clear(); }

  // Runs a prepared statement (preparing it on first use); binary parameters and results. The
  // deferred statements go with it.
  Result<PGresult*> execute(Q q, int n, const char* const* values, const int* lengths,
                            const int* formats) {
    if (auto r = prepare(q); !r) return sql::pass(r);
    const std::string name = statement_name(q);
    PGresult* res = deferred_.empty()
                        ? PQexecPrepared(conn_, name.c_str(), n, values, lengths, formats, 1)
                        : pipelined(name.c_str(), n, values, lengths, formats);
    const auto status = PQresultStatus(res);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return res;
    Error e = error(res);
    PQclear(res);
    return std::unexpected(std::move(e));
  }

 private:
  explicit Connection(PGconn* conn) : conn_(conn) {}

  static std::string statement_name(Q q) {
    return fmt::format("mcim_{}", static_cast<std::size_t>(q));
  }

  Result<void> prepare(Q q) {
    const auto i = static_cast<std::size_t>(q);
    if (prepared_.test(i)) return {};
    const std::string name = statement_name(q);
    if (auto r = check(PQprepare(conn_, name.c_str(), sql_of(q), 0, nullptr)); !r) return r;
    prepared_.set(i);
    return {};
  }

  // The deferred statements, then the prepared statement `name` when there is one, in one round
  // trip (libpq's pipeline mode). The result is the first failure among them (those after it were
  // not run), else the last statement's; null when the connection failed before any.
  PGresult* pipelined(const char* name, int n, const char* const* values, const int* lengths,
                      const int* formats) {
    const std::vector<std::string_view> sent = std::exchange(deferred_, {});
    if (PQenterPipelineMode(conn_) != 1) return nullptr;
    bool ok = true;
    for (std::string_view s : sent) {
      const std::string text(s);
      ok = ok &&
           PQsendQueryParams(conn_, text.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) == 1;
    }
    if (name != nullptr) {
      ok = ok && PQsendQueryPrepared(conn_, name, n, values, lengths, formats, 1) == 1;
    }
    ok = ok && PQpipelineSync(conn_) == 1;
    PGresult* out = nullptr;
    bool failed = false;
    // Each statement's results end with a null; the sync point ends them all.
    while (true) {
      PGresult* r = PQgetResult(conn_);
      if (r == nullptr) {
        if (!ok || broken()) break;
        continue;
      }
      const auto status = PQresultStatus(r);
      if (status == PGRES_PIPELINE_SYNC) {
        PQclear(r);
        break;
      }
      const bool success = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
      if (!failed && status != PGRES_PIPELINE_ABORTED) {
        PQclear(out);
        out = r;
        failed = !success;
      } else {
        PQclear(r);
      }
    }
    // Still in pipeline mode (a send failed midway): no synchronous call would work on it again.
    if (PQexitPipelineMode(conn_) != 1) stuck_ = true;
    return out;
  }

  Result<void> check(PGresult* res) {
    const auto status = PQresultStatus(res);
    const bool ok = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
    Error e = ok ? Error(ErrorCode::internal, "") : error(res);
    PQclear(res);
    if (!ok) return std::unexpected(std::move(e));
    return {};
  }

  PGconn* conn_;
  std::bitset<sql::kQueries> prepared_;     // server-side prepared statements of this session
  std::vector<std::string_view> deferred_;  // static texts (defer)
  bool stuck_ = false;                      // left in pipeline mode: discard it
  std::string_view op_ = "open";
};

Result<std::unique_ptr<Connection>> Connection::connect(const std::string& url) {
  // Settings before "dbname" are defaults the URL may override.
  const char* const keys[] = {"connect_timeout", "application_name", "client_encoding", "dbname",
                              nullptr};
  const char* const values[] = {"10", "mcim", "UTF8", url.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keys, values, 1);
  if (conn == nullptr) return fail(ErrorCode::internal, "postgresql connect: out of memory");
  std::unique_ptr<Connection> c(new Connection(conn));
  if (c->broken()) {
    return fail(ErrorCode::io_error,
                fmt::format("postgresql connect: {}", trimmed(PQerrorMessage(conn))));
  }
  // Notices ("relation already exists, skipping") are expected, not worth stderr.
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  return c;
}

// A prepared statement's parameters and, once executed, its result rows.
class Stmt {
 public:
  Stmt(Connection& c, Q q) : c_(&c), q_(q) {}
  Stmt(Stmt&& o) noexcept
      : c_(o.c_),
        q_(o.q_),
        n_(o.n_),
        lengths_(o.lengths_),
        formats_(o.formats_),
        ints_(o.ints_),
        res_(std::exchange(o.res_, nullptr)),
        row_(o.row_),
        bind_error_(std::move(o.bind_error_)) {
    // Integer parameters point into ints_: rebase them onto this object's copy.
    const char* base = o.ints_.data()->data();
    const std::less<const char*> before;
    for (std::size_t i = 0; i < static_cast<std::size_t>(n_); ++i) {
      const char* p = o.values_[i];
      const bool own = p != nullptr && !before(p, base) && before(p, base + sizeof(ints_));
      values_[i] = own ? ints_.data()->data() + (p - base) : p;
    }
  }
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt() {
    if (res_ == nullptr) return;
    if (holds_keys(q_)) wipe_result();
    PQclear(res_);
  }

  // No copy: the pointers stay valid until execution, which happens before the caller's values
  // go out of scope.
  Stmt& text(int i, std::string_view v) { return set(i, v.empty() ? "" : v.data(), v.size()); }
  Stmt& blob(int i, ByteView v) {
    return set(i, v.empty() ? "" : reinterpret_cast<const char*>(v.data()), v.size());
  }
  Stmt& integer(int i, std::int64_t v) {
    if (i < 1 || i > kMaxParams) return set(i, nullptr, 0);
    auto& slot = ints_[static_cast<std::size_t>(i - 1)];
    for (int b = 0; b < 8; ++b) {
      slot[static_cast<std::size_t>(7 - b)] =
          static_cast<char>(static_cast<std::uint64_t>(v) >> (8 * b));
    }
    return set(i, slot.data(), 8);
  }
  Stmt& boolean(int i, bool v) {
    if (i < 1 || i > kMaxParams) return set(i, nullptr, 0);
    auto& slot = ints_[static_cast<std::size_t>(i - 1)];
    slot[0] = v ? 1 : 0;
    return set(i, slot.data(), 1);
  }

  Result<bool> step() {  // the first step executes; true: a row is available
    if (res_ == nullptr) {
      if (auto r = run(); !r) return sql::pass(r);
    }
    ++row_;
    return row_ < PQntuples(res_);
  }
  Result<void> finish() {
    if (res_ != nullptr) return {};
    return run();
  }
  std::int64_t changes() const {
    const std::string_view n = res_ != nullptr ? PQcmdTuples(res_) : "";
    std::int64_t v = 0;
    std::from_chars(n.data(), n.data() + n.size(), v);
    return v;
  }

  std::int64_t int_at(int col) const {  // int2, int4, int8 or bool, big-endian
    const auto* p = reinterpret_cast<const unsigned char*>(PQgetvalue(res_, row_, col));
    const int n = PQgetlength(res_, row_, col);
    std::uint64_t v = 0;
    for (int k = 0; k < n && k < 8; ++k) v = (v << 8) | p[k];
    if (n > 0 && n < 8 && (p[0] & 0x80) != 0) v |= ~std::uint64_t{0} << (8 * n);
    return static_cast<std::int64_t>(v);
  }
  bool bool_at(int col) const { return int_at(col) != 0; }
  std::string text_at(int col) const {
    return std::string(PQgetvalue(res_, row_, col), length(col));
  }
  ByteView blob_at(int col) const {
    return ByteView(reinterpret_cast<const std::uint8_t*>(PQgetvalue(res_, row_, col)),
                    length(col));
  }

 private:
  std::size_t length(int col) const {
    return static_cast<std::size_t>(PQgetlength(res_, row_, col));
  }

  Stmt& set(int i, const char* data, std::size_t size) {
    if (i < 1 || i > kMaxParams || size > INT_MAX) {
      if (!bind_error_) bind_error_ = "parameter out of range or too large";
      return *this;
    }
    const auto k = static_cast<std::size_t>(i - 1);
    values_[k] = data;
    lengths_[k] = static_cast<int>(size);
    formats_[k] = 1;
    n_ = std::max(n_, i);
    return *this;
  }

  Result<void> run() {
    if (bind_error_) return fail(ErrorCode::invalid_argument, *bind_error_);
    auto res = c_->execute(q_, n_, values_.data(), lengths_.data(), formats_.data());
    if (!res) return sql::pass(res);
    res_ = *res;
    row_ = -1;
    return {};
  }

  // The result is libpq's heap copy of the row; its key bytes are cleared before PQclear.
  void wipe_result() {
    for (int r = 0; r < PQntuples(res_); ++r) {
      for (int c = 0; c < PQnfields(res_); ++c) {
        secure_wipe(PQgetvalue(res_, r, c), static_cast<std::size_t>(PQgetlength(res_, r, c)));
      }
    }
  }

  Connection* c_;
  Q q_;
  int n_ = 0;
  std::array<const char*, kMaxParams> values_{};
  std::array<int, kMaxParams> lengths_{};
  std::array<int, kMaxParams> formats_{};
  std::array<std::array<char, 8>, kMaxParams> ints_{};
  PGresult* res_ = nullptr;
  int row_ = -1;
  std::optional<std::string> bind_error_;
};

// BEGIN ... COMMIT; rolled back unless committed.
class Transaction {
 public:
  explicit Transaction(Connection& c) : c_(c) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (open_) (void)c_.exec("ROLLBACK");
  }
  // Within a unit's transaction (AuditStore::atomically) a method's statements join it: its
  // begin and commit do nothing, and the savepoint the unit takes around each call undoes it
  // when it fails.
  Result<void> begin() {
    if (!c_.idle()) return {};
    auto r = c_.exec("BEGIN");
    open_ = r.has_value();
    return r;
  }
  // Serialises every process migrating this database (released at commit or rollback).
  Result<void> begin_migration() {
    if (auto r = begin(); !r) return r;
    return c_.exec("SELECT pg_advisory_xact_lock(7161132361541218669)");  // "mcim-sch"
  }
  Result<void> commit() {
    if (!open_) return {};
    auto r = c_.exec("COMMIT");
    open_ = false;  // a failed COMMIT has ended the transaction too
    return r;
  }

 private:
  Connection& c_;
  bool open_ = false;
};

// Waits a little before retrying a conflicting transaction, longer each time, with jitter so
// two conflicting callers do not collide again in lockstep.
void back_off(int attempt) {
  const auto jitter = static_cast<std::uint64_t>(
      std::chrono::steady_clock::now().time_since_epoch().count() % 1000);
  std::this_thread::sleep_for(std::chrono::microseconds(500ULL * attempt * attempt + jitter));
}

// The connection pool, the retry policy and the units of work shared by the ports of one
// database.
class Backend : public sql::UnitCalls<Backend, Connection, sql::ConnectionPool<Connection>::Lease> {
 public:
  static constexpr int kAttempts = store::kAttempts;
  // Concurrent transactions share the server's flushes of its log already.
  static constexpr bool kLoneWritesInUnits = false;

  Backend(std::string url, std::size_t pool_size, std::unique_ptr<Connection> first)
      : pool_(pool_size, [url = std::move(url)] { return Connection::connect(url); }) {
    pool_.adopt(std::move(first));
  }

  // Runs `f` on a pooled connection, whatever unit the thread is in; a transaction that hit a
  // serialisation failure or a deadlock (rolled back by then) is run again. A broken connection
  // is closed, with the idle ones, so that the next call connects afresh.
  template <class F>
  std::invoke_result_t<F&, Connection&> alone(std::string_view op, F&& f) {
    for (int attempt = 1;; ++attempt) {
      {
        auto lease = pool_.acquire();
        if (!lease) return sql::pass(lease);
        Connection& c = **lease;
        c.set_operation(op);
        auto r = f(c);
        settle(*lease);
        if (r || r.error().code != ErrorCode::busy || attempt == kAttempts) return r;
      }
      back_off(attempt);
    }
  }

  // A unit's first write takes a connection; the transaction begins with that write's call.
  Result<void> open_unit(Unit& u, std::string_view op) {
    auto lease = pool_.acquire();
    if (!lease) return sql::pass(lease);
    (*lease)->set_operation(op);
    // BEGIN goes with the first call's first statement (sql::UnitCalls, Connection::defer); a
    // BEGIN that fails fails that call, and the unit.
    u.hold.emplace(std::move(*lease));
    u.conn = &**u.hold;
    u.begin_deferred = true;
    return {};
  }

  Result<void> end_unit(Unit& u, Result<void> r) {
    auto& lease = *u.hold;
    if (r) r = lease->exec("COMMIT");  // a failed COMMIT has ended the transaction too
    settle(lease);
    return r;
  }

  void pause(int attempt) { back_off(attempt); }
  void unit_started() {}
  void unit_finished() {}

 private:
  // Rolls back what a call left open; a broken connection is discarded with the idle ones.
  void settle(sql::ConnectionPool<Connection>::Lease& lease) {
    Connection& c = *lease;
    c.drop_deferred();  // a BEGIN never sent leaves nothing to roll back
    if (!c.broken() && !c.idle()) (void)c.exec("ROLLBACK");
    if (c.broken()) {
      lease.discard();
      pool_.drop_idle();
    }
  }

  sql::ConnectionPool<Connection> pool_;
};

struct Driver {
  using Connection = store::Connection;
  using Stmt = store::Stmt;
  using Transaction = store::Transaction;
  using Backend = store::Backend;
  static constexpr std::string_view kName = "postgresql";
  static constexpr std::string_view kSchemaVersionTable = kSchemaVersionPostgresql;

  static Result<Stmt> query(Connection& c, Q q) { return Stmt(c, q); }
  static std::string_view migration_text(const Migration& m) { return m.postgresql; }
};

// A malformed URI is the caller's mistake, not an unreachable server.
Result<void> check_uri(const std::string& url) {
  char* message = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &message);
  if (options == nullptr) {
    const std::string why = message != nullptr ? trimmed(message) : "out of memory";
    PQfreemem(message);
    return fail(ErrorCode::invalid_argument, fmt::format("postgresql URL: {}", why));
  }
  PQconninfoFree(options);
  return {};
}

}  // namespace

Result<std::unique_ptr<Database>> open_postgres(std::string_view url_view) {
  std::string url(url_view);
  if (url.find('\0') != std::string::npos) {
    return fail(ErrorCode::invalid_argument, "postgresql URL contains a NUL byte");
  }
  if (auto r = check_uri(url); !r) return sql::pass(r);
  auto first = Connection::connect(url);
  if (!first) return sql::pass(first);
  auto version = sql::migrate<Driver>(**first);
  if (!version) return sql::pass(version);
  return std::make_unique<sql::SqlDatabase<Driver>>(*version, std::move(url), kPoolSize,
                                                    std::move(*first));
}

}  // namespace mcim::store
