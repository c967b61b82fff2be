// The ports of store.h implemented once over SQL, for both adapters. A driver D (sqlite.cpp,
// postgres.cpp) supplies the dialect's text of every statement Q and four things:
//   D::Connection, D::Stmt (bind 1-based, step, read 0-based), D::Transaction (begin/commit,
//   rolled back unless committed), D::Backend::run(op, f) (a pooled connection and retries).
// Every method is one transaction: a single statement in autocommit, or the statements of one
// D::Transaction. Private to src/store.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <numeric>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "store/group_commit.h"
#include "store/migrations.h"
#include "store/sql_common.h"
#include "store/store.h"

namespace mcim::store::sql {

// Every statement the adapters run; each connection prepares one on its first use.
enum class Q : std::size_t {
  pcid_insert,
  pcid_find,
  pcid_release,
  pcid_stage,
  pcid_complete,
  pcid_activate,
  pcid_status,
  pcid_expire,
  pcid_count,
  sqn_reserve,
  sqn_resync,
  sqn_current,
  reg_put,
  reg_find,
  reg_remove,
  reg_drop,
  reg_holder,
  reg_transfer,
  reg_successor,
  pkg_insert,
  pkg_next,
  pkg_next_from,
  pkg_find,
  pkg_deliver,
  pkg_report,
  pkg_status,
  ses_drop_expired,
  ses_insert,
  ses_holder,
  ses_find,
  ses_close,
  audit_append,
  audit_recent,
  att_insert,
  att_next,
  att_next_from,
  att_find,
  att_answer,
  att_status,
  sub_insert,
  sub_find,
  sub_find_pcid,
  sub_taken,
  sub_update,
  sub_status,
  sub_remove,
  chl_insert,
  chl_find,
  chl_consume,
  chl_used,
  ref_put,
  ref_all,
  ins_insert,
  ins_find,
  ins_collect,
  ins_answer,
  ins_status,
  ins_count,
  ins_prune_answered,
  ins_prune_oldest,
  iss_insert,
  iss_find,
  iss_revert,
  iss_answer,
  iss_status,
  iss_count,
  iss_prune_answered,
  iss_prune_oldest,
  ntc_insert,
  ntc_remove,
  ntc_pending,
  ntc_count,
  version_read,
  version_record,
  count_
};
inline constexpr std::size_t kQueries = static_cast<std::size_t>(Q::count_);

template <class T>
std::unexpected<Error> pass(const Result<T>& r) {
  return std::unexpected(r.error());
}

// A statement expected to return at most one integer (count, RETURNING); nullopt without a row.
template <class Stmt>
Result<std::optional<std::int64_t>> single_int(Stmt& s) {
  auto row = s.step();
  if (!row) return pass(row);
  if (!*row) return std::optional<std::int64_t>();
  const std::int64_t v = s.int_at(0);
  if (auto done = s.finish(); !done) return pass(done);  // in autocommit: the commit
  return std::optional<std::int64_t>(v);
}

template <class Stmt>
Result<std::optional<std::string>> single_text(Stmt& s) {
  auto row = s.step();
  if (!row) return pass(row);
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(s.text_at(0));
}

inline Error corrupt_row(std::string_view table) {
  return Error(ErrorCode::internal, fmt::format("malformed row in table {}", table));
}

// ---- Row decoding ----------------------------------------------------------------------------

template <class Stmt>
Result<PcidSubscription> read_pcid(const Stmt& s) {
  PcidSubscription p;
  p.pcid = s.text_at(0);
  p.batch = s.text_at(1);
  const ByteView k = s.blob_at(2), opc = s.blob_at(3);
  const auto status = parse_pcid_status(s.text_at(5));
  if (k.size() != 16 || opc.size() != 16 || !status) {
    return std::unexpected(corrupt_row("pcid_subscription"));
  }
  std::copy(k.begin(), k.end(), p.k.mut().begin());  // straight into the self-wiping Secret
  std::copy(opc.begin(), opc.end(), p.opc.mut().begin());
  p.ind_bits = static_cast<unsigned>(s.int_at(4));
  p.status = *status;
  p.dormant_until = time_from_column(s.int_at(6));
  p.active_until = time_from_column(s.int_at(7));
  p.not_after = time_from_column(s.int_at(8));
  p.expired_at = time_from_column(s.int_at(9));
  p.renewal_package = s.text_at(10);
  return p;
}

template <class Stmt>
Result<Registration> read_registration(const Stmt& s) {
  Registration r;
  r.pcid = s.text_at(0);
  r.device_id = s.text_at(1);
  r.sho = s.text_at(2);
  r.dpf_url = s.text_at(3);
  const ByteView pin = s.blob_at(4);
  if (pin.size() != r.dpf_key_pin.size()) return std::unexpected(corrupt_row("registration"));
  std::copy(pin.begin(), pin.end(), r.dpf_key_pin.begin());
  r.apn = s.text_at(5);
  r.created = time_from_column(s.int_at(6));
  const ByteView key = s.blob_at(7);
  if (key.size() != r.bootstrap_key.get().size()) {
    return std::unexpected(corrupt_row("registration"));
  }
  std::copy(key.begin(), key.end(), r.bootstrap_key.mut().begin());
  r.refusal = s.text_at(8);
  r.refused = time_from_column(s.int_at(9));
  r.successor = s.text_at(10);
  return r;
}

template <class Stmt>
Result<StoredPackage> read_package(const Stmt& s) {
  StoredPackage p;
  p.package_id = s.text_at(0);
  p.device_id = s.text_at(1);
  p.sho = s.text_at(2);
  const ByteView bytes = s.blob_at(3);
  p.package.assign(bytes.begin(), bytes.end());
  const auto status = parse_package_status(s.text_at(4));
  if (!status) return std::unexpected(corrupt_row("package"));
  p.status = *status;
  p.report = s.text_at(5);
  p.created = time_from_column(s.int_at(6));
  p.updated = time_from_column(s.int_at(7));
  return p;
}

template <class Stmt>
Result<Session> read_session(const Stmt& s) {
  Session r;
  r.id = s.text_at(0);
  r.imsi = s.text_at(1);
  r.vno = s.text_at(2);
  r.restricted = s.bool_at(3);
  r.created = time_from_column(s.int_at(4));
  r.expires = time_from_column(s.int_at(5));
  return r;
}

template <class Stmt>
Result<AuditRecord> read_audit(const Stmt& s) {
  return AuditRecord{.seq = static_cast<std::uint64_t>(s.int_at(0)),
                     .time = time_from_column(s.int_at(1)),
                     .service = s.text_at(2),
                     .event = s.text_at(3),
                     .subject = s.text_at(4),
                     .principal = s.text_at(5),
                     .outcome = s.text_at(6),
                     .detail = s.text_at(7)};
}

template <class Stmt>
Result<AttestationRequest> read_attestation(const Stmt& s) {
  AttestationRequest r;
  r.request_id = s.text_at(0);
  r.pcid = s.text_at(1);
  r.device_id = s.text_at(2);
  r.sho = s.text_at(3);
  const ByteView nonce = s.blob_at(4);
  r.nonce.assign(nonce.begin(), nonce.end());
  const auto status = parse_attestation_status(s.text_at(5));
  if (!status) return std::unexpected(corrupt_row("attestation_request"));
  r.status = *status;
  r.created = time_from_column(s.int_at(6));
  r.answered = time_from_column(s.int_at(7));
  return r;
}

template <class Stmt>
Result<Subscriber> read_subscriber(const Stmt& s) {
  Subscriber r;
  r.device_id = s.text_at(0);
  r.pcid = s.text_at(1);
  r.owner = s.text_at(2);
  r.imsi = s.text_at(3);
  const ByteView cert = s.blob_at(4);
  r.platform_cert.assign(cert.begin(), cert.end());
  const ByteView nonce = s.blob_at(5);
  const auto status = parse_subscriber_status(s.text_at(7));
  if (nonce.size() != r.registration_nonce.size() || !status) {
    return std::unexpected(corrupt_row("subscriber"));
  }
  std::copy(nonce.begin(), nonce.end(), r.registration_nonce.begin());
  r.nonce_expires = time_from_column(s.int_at(6));
  r.status = *status;
  r.challenge_id = s.text_at(8);
  const ByteView challenge_nonce = s.blob_at(9);
  r.challenge_nonce.assign(challenge_nonce.begin(), challenge_nonce.end());
  r.package_id = s.text_at(10);
  r.refusal = s.text_at(11);
  r.created = time_from_column(s.int_at(12));
  r.updated = time_from_column(s.int_at(13));
  r.replacing = s.bool_at(14);
  return r;
}

template <class Stmt>
Result<Challenge> read_challenge(const Stmt& s) {
  Challenge c;
  c.challenge_id = s.text_at(0);
  c.sho = s.text_at(1);
  c.device_id = s.text_at(2);
  const ByteView nonce = s.blob_at(3);
  c.nonce.assign(nonce.begin(), nonce.end());
  c.created = time_from_column(s.int_at(4));
  c.expires = time_from_column(s.int_at(5));
  c.used = s.bool_at(6);
  return c;
}

template <class Stmt>
Result<StoredReferences> read_references(const Stmt& s) {
  return StoredReferences{.model = s.text_at(0),
                          .issued = time_from_column(s.int_at(1)),
                          .text = s.text_at(2),
                          .stored = time_from_column(s.int_at(3))};
}

template <class Stmt>
Result<QueuedInstruction> read_instruction(const Stmt& s) {
  QueuedInstruction q;
  q.instruction_id = s.text_at(0);
  q.pcid = s.text_at(1);
  q.device_id = s.text_at(2);
  q.sho = s.text_at(3);
  q.instruction = s.text_at(4);
  q.sequence = static_cast<std::uint64_t>(s.int_at(5));
  q.action = s.text_at(6);
  q.credential = s.text_at(7);
  const auto status = parse_instruction_status(s.text_at(8));
  if (!status) return std::unexpected(corrupt_row("instruction"));
  q.status = *status;
  q.report = s.text_at(9);
  q.created = time_from_column(s.int_at(10));
  q.updated = time_from_column(s.int_at(11));
  return q;
}

template <class Stmt>
Result<IssuedInstruction> read_issued(const Stmt& s) {
  IssuedInstruction i;
  i.instruction_id = s.text_at(0);
  i.device_id = s.text_at(1);
  i.action = s.text_at(2);
  i.credential = s.text_at(3);
  i.sequence = static_cast<std::uint64_t>(s.int_at(4));
  i.created = time_from_column(s.int_at(5));
  i.owner = s.text_at(6);
  i.revert_to = s.text_at(7);
  const auto status = parse_issued_status(s.text_at(8));
  if (!status) return std::unexpected(corrupt_row("issued_instruction"));
  i.status = *status;
  i.report = s.text_at(9);
  i.answered = time_from_column(s.int_at(10));
  return i;
}

template <class Stmt>
Result<StoredNotice> read_notice(const Stmt& s) {
  return StoredNotice{.seq = static_cast<std::uint64_t>(s.int_at(0)),
                      .kind = s.text_at(1),
                      .subject = s.text_at(2),
                      .sho = s.text_at(3),
                      .path = s.text_at(4),
                      .body = s.text_at(5),
                      .created = time_from_column(s.int_at(6))};
}

// A `SELECT count(*)` without parameters: the count, 0 without a row.
template <class D>
Result<std::uint64_t> count_of(typename D::Connection& c, Q q) {
  auto s = D::query(c, q);
  if (!s) return pass(s);
  auto n = single_int(*s);
  if (!n) return pass(n);
  return static_cast<std::uint64_t>(n->value_or(0));
}

// Steps `s` (bound) to its end and decodes every row with `read`, in the query's order.
template <class T, class Stmt, class Read>
Result<std::vector<T>> read_rows(Stmt& s, Read read) {
  std::vector<T> out;
  for (;;) {
    auto row = s.step();
    if (!row) return pass(row);
    if (!*row) return out;
    auto v = read(s);
    if (!v) return pass(v);
    out.push_back(std::move(*v));
  }
}

// Runs a lookup by its text keys (bound ?1, ?2, ... in order) and decodes its row with `read`;
// nullopt without a row.
template <class D, class T, class Read>
Result<std::optional<T>> find_by(typename D::Connection& c, Q q,
                                 std::initializer_list<std::string_view> keys, Read read) {
  auto s = D::query(c, q);
  if (!s) return pass(s);
  int i = 0;
  for (std::string_view key : keys) s->text(++i, key);
  auto row = s->step();
  if (!row) return pass(row);
  if (!*row) return std::optional<T>();
  auto v = read(*s);
  if (!v) return pass(v);
  return std::optional<T>(std::move(*v));
}

// find_by with one key.
template <class D, class T, class Read>
Result<std::optional<T>> find_one(typename D::Connection& c, Q q, std::string_view key, Read read) {
  return find_by<D, T>(c, q, {key}, std::move(read));
}

// Keeps at most `keep` (at least 1) rows in a table of the F9 records, in the caller's
// transaction: `count` counts them, `answered` deletes the oldest answered ones and `oldest` the
// oldest of all, each up to the number bound as parameter 1.
template <class D>
Result<void> prune(typename D::Connection& c, Q count, Q answered, Q oldest, std::size_t keep) {
  auto n = D::query(c, count);
  if (!n) return pass(n);
  auto rows = single_int(*n);
  if (!rows) return pass(rows);
  const auto bound = static_cast<std::int64_t>(std::clamp<std::size_t>(keep, 1, INT64_MAX));
  std::int64_t excess = rows->value_or(0) - bound;
  for (const Q q : {answered, oldest}) {
    if (excess <= 0) return {};
    auto s = D::query(c, q);
    if (!s) return pass(s);
    s->integer(1, excess);
    if (auto r = s->finish(); !r) return r;
    excess -= static_cast<std::int64_t>(s->changes());
  }
  return {};
}

// The queries of one table of the F9 records for prune.
struct PruneQueries {
  Q count, answered, oldest;
};

// The insert of one F9 record (`bind` sets its columns) and the pruning of its table to `keep`
// rows, in one transaction: the bound holds whatever fails. already_exists for a known `id`.
template <class D, class Bind>
Result<void> insert_bounded(typename D::Connection& c, Q insert, std::string_view id, Bind bind,
                            PruneQueries table, std::size_t keep) {
  typename D::Transaction tx(c);
  if (auto r = tx.begin(); !r) return r;
  auto s = D::query(c, insert);
  if (!s) return pass(s);
  bind(*s);
  if (auto r = s->finish(); !r) return r;
  if (s->changes() != 1) return fail(ErrorCode::already_exists, fmt::format("instruction {}", id));
  if (auto pruned = prune<D>(c, table.count, table.answered, table.oldest, keep); !pruned) {
    return pruned;
  }
  return tx.commit();
}

// One conditional UPDATE .. RETURNING of the row of `key` (parameter 1; `bind` sets the others),
// decoded with `read`, in a transaction: only a row in the expected state matches, so of two racing
// updates exactly one gets it back. When none came back, a look-up of `status` in the same
// transaction tells not_found from transition_refused (`refusal`); `what` names the record.
template <class D, class T, class Bind, class Read>
Result<T> update_returning(typename D::Connection& c, Q update, Q status, std::string_view key,
                           std::string_view what, std::string_view refusal, Bind bind, Read read) {
  typename D::Transaction tx(c);
  if (auto r = tx.begin(); !r) return pass(r);
  auto s = D::query(c, update);
  if (!s) return pass(s);
  s->text(1, key);
  bind(*s);
  auto row = s->step();
  if (!row) return pass(row);
  if (*row) {
    auto v = read(*s);
    if (!v) return pass(v);
    if (auto r = s->finish(); !r) return pass(r);
    if (auto r = tx.commit(); !r) return pass(r);
    return v;
  }
  auto found = lookup_text<D>(c, status, key);
  if (!found) return pass(found);
  if (!*found) return fail(ErrorCode::not_found, fmt::format("{} {}", what, key));
  return fail(ErrorCode::transition_refused, fmt::format("{} {}: {}", what, key, refusal));
}

// Reads the one text column of a lookup by key; nullopt without a row.
template <class D>
Result<std::optional<std::string>> lookup_text(typename D::Connection& c, Q q,
                                               std::string_view key) {
  auto s = D::query(c, q);
  if (!s) return pass(s);
  s->text(1, key);
  return single_text(*s);
}

// ---- Ports -----------------------------------------------------------------------------------

template <class D>
class SqlPcids final : public PcidStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlPcids(typename D::Backend& b) : b_(b) {}
  using PcidStore::add_batch;

  // One transaction, all or nothing. Rows go in in PCID order, so that two overlapping batches
  // take their unique-index locks in the same order and cannot deadlock (PostgreSQL would detect
  // it only after deadlock_timeout, 1 s by default). An insert that changes nothing met a PCID
  // already stored or repeated in the batch; the refusal names the first one in batch order.
  Result<std::uint64_t> add_batch(const std::vector<PcidSubscription>& batch,
                                  const std::optional<PcidReuse>& reuse) override {
    if (batch.empty()) return std::uint64_t{0};
    std::vector<std::size_t> order(batch.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return batch[a].pcid < batch[b].pcid; });
    return b_.write("pcids.add_batch", [&](Connection& c) -> Result<std::uint64_t> {
      typename D::Transaction tx(c);
      if (auto r = tx.begin(); !r) return pass(r);
      std::set<std::string_view> stored_before, inserted;
      std::uint64_t reused = 0;
      for (const std::size_t i : order) {
        if (reuse && !inserted.contains(batch[i].pcid)) {
          auto freed = release(c, batch[i].pcid, *reuse);
          if (!freed) return pass(freed);
          reused += *freed ? 1 : 0;
        }
        auto ok = insert(c, batch[i]);
        if (!ok) return pass(ok);
        if (*ok) {
          inserted.insert(batch[i].pcid);
        } else if (!inserted.contains(batch[i].pcid)) {
          stored_before.insert(batch[i].pcid);
        }
      }
      if (inserted.size() != batch.size()) {
        return first_duplicate(batch, stored_before);  // the transaction rolls back
      }
      if (auto r = tx.commit(); !r) return pass(r);
      return reused;
    });
  }

  Result<std::optional<PcidSubscription>> find(std::string_view pcid) override {
    return b_.run("pcids.find", [&](Connection& c) {
      return find_one<D, PcidSubscription>(c, Q::pcid_find, pcid,
                                           [](const auto& s) { return read_pcid(s); });
    });
  }

  Result<void> activate(std::string_view pcid, Time until) override {
    return b_.write("pcids.activate", [&](Connection& c) -> Result<void> {
      return conditional_update(c, Q::pcid_activate, pcid, "expired, cannot be activated",
                                [&](auto& s) { s.integer(2, to_column(until)); });
    });
  }

  Result<std::uint64_t> expire_dormant(Time now) override {
    return b_.write("pcids.expire_dormant", [&](Connection& c) -> Result<std::uint64_t> {
      auto s = D::query(c, Q::pcid_expire);
      if (!s) return pass(s);
      s->integer(1, to_column(now));
      if (auto r = s->finish(); !r) return pass(r);
      return static_cast<std::uint64_t>(s->changes());
    });
  }

  Result<void> stage_renewal(const PcidRenewal& r) override {
    return b_.write("pcids.stage_renewal", [&](Connection& c) -> Result<void> {
      auto s = D::query(c, Q::pcid_stage);
      if (!s) return pass(s);
      s->text(1, r.pcid).text(2, r.package_id).blob(3, r.k.get()).blob(4, r.opc.get());
      s->integer(5, to_column(r.not_after));
      if (auto done = s->finish(); !done) return done;
      if (s->changes() != 1) return fail(ErrorCode::not_found, fmt::format("pcid {}", r.pcid));
      return {};
    });
  }

  Result<void> complete_renewal(std::string_view pcid, std::string_view package_id) override {
    return b_.write("pcids.complete_renewal", [&](Connection& c) -> Result<void> {
      return conditional_update(c, Q::pcid_complete, pcid,
                                fmt::format("renewal {} is not the staged one", package_id),
                                [&](auto& s) { s.text(2, package_id); });
    });
  }

  Result<std::uint64_t> count() override {
    return b_.run("pcids.count", [&](Connection& c) { return count_of<D>(c, Q::pcid_count); });
  }

 private:
  // One conditional UPDATE of the PCID's row (parameter 1 the PCID, the others bound by `bind`),
  // in a transaction; when it changed nothing, a look-up in the same transaction tells not_found
  // from transition_refused (`refusal` says why).
  template <class Bind>
  static Result<void> conditional_update(Connection& c, Q q, std::string_view pcid,
                                         std::string_view refusal, Bind&& bind) {
    typename D::Transaction tx(c);
    if (auto r = tx.begin(); !r) return r;
    auto s = D::query(c, q);
    if (!s) return pass(s);
    s->text(1, pcid);
    bind(*s);
    if (auto r = s->finish(); !r) return r;
    if (s->changes() == 1) return tx.commit();
    auto status = lookup_text<D>(c, Q::pcid_status, pcid);
    if (!status) return pass(status);
    if (!*status) return fail(ErrorCode::not_found, fmt::format("pcid {}", pcid));
    return fail(ErrorCode::transition_refused, fmt::format("pcid {}: {}", pcid, refusal));
  }

  static std::unexpected<Error> first_duplicate(const std::vector<PcidSubscription>& batch,
                                                const std::set<std::string_view>& stored_before) {
    std::set<std::string_view> seen;
    for (const auto& p : batch) {
      if (stored_before.contains(p.pcid) || !seen.insert(p.pcid).second) {
        return fail(ErrorCode::already_exists, fmt::format("pcid {}: already present", p.pcid));
      }
    }
    return fail(ErrorCode::internal, "pcids.add_batch: a row was not inserted");
  }

  // A free PCID's row and its DRF registration go; false when it is not free (or not stored).
  static Result<bool> release(Connection& c, std::string_view pcid, const PcidReuse& reuse) {
    auto s = D::query(c, Q::pcid_release);
    if (!s) return pass(s);
    s->text(1, pcid).integer(2, to_column(reuse.now)).integer(3, reuse.quarantine.count());
    if (auto r = s->finish(); !r) return pass(r);
    if (s->changes() != 1) return false;
    auto drop = D::query(c, Q::reg_drop);
    if (!drop) return pass(drop);
    drop->text(1, pcid);
    if (auto r = drop->finish(); !r) return pass(r);
    return true;
  }

  // K and OPc are bound from the Secrets themselves: no copy of a key is made.
  static Result<bool> insert(Connection& c, const PcidSubscription& p) {
    auto s = D::query(c, Q::pcid_insert);
    if (!s) return pass(s);
    s->text(1, p.pcid).text(2, p.batch).blob(3, p.k.get()).blob(4, p.opc.get());
    s->integer(5, p.ind_bits).text(6, to_string(p.status)).integer(7, to_column(p.dormant_until));
    s->integer(8, to_column(p.active_until)).integer(9, to_column(p.not_after));
    s->integer(10, to_column(p.expired_at));
    if (auto r = s->finish(); !r) return pass(r);
    return s->changes() == 1;
  }

  typename D::Backend& b_;
};

template <class D>
class SqlSqns final : public SqnStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlSqns(typename D::Backend& b) : b_(b) {}

  // The whole read-check-advance is Q::sqn_reserve, one INSERT .. ON CONFLICT DO UPDATE .. WHERE
  // .. RETURNING: no row back means the WHERE refused it and nothing changed.
  Result<std::uint64_t> reserve(std::string_view imsi, std::uint64_t count,
                                std::uint64_t seq_max) override {
    const std::uint64_t max = clamp_seq_max(seq_max);
    if (count > max) return exhausted(imsi, count);
    return b_.write("sqns.reserve", [&](Connection& c) -> Result<std::uint64_t> {
      auto s = D::query(c, Q::sqn_reserve);
      if (!s) return pass(s);
      s->text(1, imsi)
          .integer(2, static_cast<std::int64_t>(count))
          .integer(3, static_cast<std::int64_t>(max));
      auto seq_he = single_int(*s);
      if (!seq_he) return pass(seq_he);
      if (!*seq_he) return exhausted(imsi, count);
      return static_cast<std::uint64_t>(**seq_he) - count;
    });
  }

  Result<std::uint64_t> resynchronise(std::string_view imsi, std::uint64_t seq_ms) override {
    if (seq_ms > kSeqLimit) return fail(ErrorCode::invalid_argument, "SEQ_MS out of range");
    return b_.write("sqns.resynchronise", [&](Connection& c) -> Result<std::uint64_t> {
      auto s = D::query(c, Q::sqn_resync);
      if (!s) return pass(s);
      s->text(1, imsi).integer(2, static_cast<std::int64_t>(seq_ms));
      auto seq_he = single_int(*s);
      if (!seq_he) return pass(seq_he);
      if (!*seq_he) return fail(ErrorCode::internal, "sqns.resynchronise: no row returned");
      return static_cast<std::uint64_t>(**seq_he);
    });
  }

  Result<std::uint64_t> current(std::string_view imsi) override {
    return b_.run("sqns.current", [&](Connection& c) -> Result<std::uint64_t> {
      auto s = D::query(c, Q::sqn_current);
      if (!s) return pass(s);
      s->text(1, imsi);
      auto seq_he = single_int(*s);
      if (!seq_he) return pass(seq_he);
      return static_cast<std::uint64_t>(seq_he->value_or(0));
    });
  }

 private:
  static std::unexpected<Error> exhausted(std::string_view imsi, std::uint64_t count) {
    return fail(ErrorCode::sqn_exhausted,
                fmt::format("imsi {}: SEQ_HE cannot advance by {}", imsi, count));
  }

  typename D::Backend& b_;
};

template <class D>
class SqlRegistrations final : public RegistrationStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlRegistrations(typename D::Backend& b) : b_(b) {}

  // One upsert whose DO UPDATE only applies when the holder is the same SHO: no row back means
  // another SHO holds the PCID.
  Result<void> put(const Registration& r) override {
    return b_.write("registrations.put", [&](Connection& c) -> Result<void> {
      auto s = D::query(c, Q::reg_put);
      if (!s) return pass(s);
      s->text(1, r.pcid).text(2, r.device_id).text(3, r.sho).text(4, r.dpf_url);
      s->blob(5, r.dpf_key_pin).text(6, r.apn).integer(7, to_column(r.created));
      s->blob(8, r.bootstrap_key.get()).text(9, r.refusal).integer(10, to_column(r.refused));
      auto row = s->step();
      if (!row) return pass(row);
      if (!*row) return denied(r.pcid);
      return s->finish();
    });
  }

  Result<std::optional<Registration>> find(std::string_view pcid) override {
    return b_.run("registrations.find", [&](Connection& c) {
      return find_one<D, Registration>(c, Q::reg_find, pcid,
                                       [](const auto& s) { return read_registration(s); });
    });
  }

  Result<void> remove(std::string_view pcid, std::string_view sho) override {
    return b_.write("registrations.remove", [&](Connection& c) {
      return holder_update(c, Q::reg_remove, pcid, [&](auto& s) { s.text(1, pcid).text(2, sho); });
    });
  }

  Result<void> transfer(std::string_view pcid, std::string_view from, std::string_view to,
                        Time at) override {
    return b_.write("registrations.transfer", [&](Connection& c) {
      return holder_update(c, Q::reg_transfer, pcid, [&](auto& s) {
        s.text(1, pcid).text(2, from).text(3, to).integer(4, to_column(at));
      });
    });
  }

  Result<void> set_successor(std::string_view pcid, std::string_view successor) override {
    return b_.write("registrations.set_successor", [&](Connection& c) -> Result<void> {
      auto s = D::query(c, Q::reg_successor);
      if (!s) return pass(s);
      s->text(1, pcid).text(2, successor);
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return {};
      return fail(ErrorCode::not_found, fmt::format("registration of pcid {}", pcid));
    });
  }

 private:
  // One update of the row conditional on its holder (`bind` sets the parameters); when it changed
  // nothing, why: not_found, or access_denied for another holder.
  template <class Bind>
  Result<void> holder_update(Connection& c, Q query, std::string_view pcid, Bind bind) {
    typename D::Transaction tx(c);
    if (auto r = tx.begin(); !r) return r;
    auto s = D::query(c, query);
    if (!s) return pass(s);
    bind(*s);
    if (auto r = s->finish(); !r) return r;
    if (s->changes() == 1) return tx.commit();
    auto holder = lookup_text<D>(c, Q::reg_holder, pcid);
    if (!holder) return pass(holder);
    if (!*holder) return fail(ErrorCode::not_found, fmt::format("registration of pcid {}", pcid));
    return denied(pcid);
  }

  // The holder is not named: one SHO does not learn which competitor holds a device (F4).
  static std::unexpected<Error> denied(std::string_view pcid) {
    return fail(ErrorCode::access_denied,
                fmt::format("pcid {}: registered by another operator", pcid));
  }

  typename D::Backend& b_;
};

template <class D>
class SqlPackages final : public PackageStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlPackages(typename D::Backend& b) : b_(b) {}

  Result<void> put(const StoredPackage& p) override {
    return b_.write("packages.put", [&](Connection& c) -> Result<void> {
      auto s = D::query(c, Q::pkg_insert);
      if (!s) return pass(s);
      s->text(1, p.package_id).text(2, p.device_id).text(3, p.sho).blob(4, p.package);
      s->text(5, to_string(p.status)).text(6, p.report).integer(7, to_column(p.created));
      s->integer(8, to_column(p.updated));
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return {};
      return fail(ErrorCode::already_exists, fmt::format("package {}", p.package_id));
    });
  }

  Result<std::optional<StoredPackage>> next_for_device(std::string_view device_id) override {
    return one("packages.next_for_device", Q::pkg_next, device_id);
  }

  Result<std::optional<StoredPackage>> next_for_device_from(std::string_view device_id,
                                                            std::string_view sho,
                                                            std::string_view successor) override {
    return b_.run("packages.next_for_device_from", [&](Connection& c) {
      return find_by<D, StoredPackage>(c, Q::pkg_next_from, {device_id, sho, successor},
                                       [](const auto& s) { return read_package(s); });
    });
  }

  Result<std::optional<StoredPackage>> find(std::string_view package_id) override {
    return one("packages.find", Q::pkg_find, package_id);
  }

  Result<void> mark_delivered(std::string_view package_id, Time at) override {
    return b_.write("packages.mark_delivered", [&](Connection& c) -> Result<void> {
      typename D::Transaction tx(c);
      if (auto r = tx.begin(); !r) return r;
      auto s = D::query(c, Q::pkg_deliver);
      if (!s) return pass(s);
      s->text(1, package_id).integer(2, to_column(at));
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return tx.commit();
      return refusal(c, package_id);
    });
  }

  Result<void> store_report(std::string_view package_id, std::string_view report,
                            Time at) override {
    return b_.write("packages.store_report", [&](Connection& c) -> Result<void> {
      typename D::Transaction tx(c);
      if (auto r = tx.begin(); !r) return r;
      auto s = D::query(c, Q::pkg_report);
      if (!s) return pass(s);
      s->text(1, package_id).text(2, report).integer(3, to_column(at));
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return tx.commit();
      return refusal(c, package_id);
    });
  }

 private:
  Result<std::optional<StoredPackage>> one(std::string_view op, Q q, std::string_view key) {
    return b_.run(op, [&](Connection& c) {
      return find_one<D, StoredPackage>(c, q, key, [](const auto& s) { return read_package(s); });
    });
  }

  // Why an update of a package changed nothing: it does not exist, or it is already reported.
  static Result<void> refusal(Connection& c, std::string_view package_id) {
    auto status = lookup_text<D>(c, Q::pkg_status, package_id);
    if (!status) return pass(status);
    if (!*status) return fail(ErrorCode::not_found, fmt::format("package {}", package_id));
    return fail(ErrorCode::transition_refused,
                fmt::format("package {}: already reported", package_id));
  }

  typename D::Backend& b_;
};

template <class D>
class SqlSessions final : public SessionStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlSessions(typename D::Backend& b) : b_(b) {}

  // One transaction: drop the IMSI's expired session, insert. session.imsi is UNIQUE, so an
  // insert that changes nothing met a live session (or a reused id). On PostgreSQL a concurrent
  // opener of the same IMSI waits on the unique index and then finds the winner's row.
  Result<void> open(const Session& session, Time now) override {
    return b_.write("sessions.open", [&](Connection& c) -> Result<void> {
      typename D::Transaction tx(c);
      if (auto r = tx.begin(); !r) return r;
      auto d = D::query(c, Q::ses_drop_expired);
      if (!d) return pass(d);
      d->text(1, session.imsi).integer(2, to_column(now));
      if (auto r = d->finish(); !r) return r;
      auto s = D::query(c, Q::ses_insert);
      if (!s) return pass(s);
      s->text(1, session.id).text(2, session.imsi).text(3, session.vno);
      s->boolean(4, session.restricted).integer(5, to_column(session.created));
      s->integer(6, to_column(session.expires));
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return tx.commit();
      auto vno = lookup_text<D>(c, Q::ses_holder, session.imsi);
      if (!vno) return pass(vno);
      if (!*vno) return fail(ErrorCode::already_exists, fmt::format("session {}", session.id));
      return fail(ErrorCode::already_exists,
                  fmt::format("imsi {}: already attached at {}", session.imsi, **vno));
    });
  }

  Result<std::optional<Session>> find(std::string_view id) override {
    return b_.run("sessions.find", [&](Connection& c) {
      return find_one<D, Session>(c, Q::ses_find, id,
                                  [](const auto& s) { return read_session(s); });
    });
  }

  Result<void> close(std::string_view id) override {
    return b_.write("sessions.close", [&](Connection& c) -> Result<void> {
      auto s = D::query(c, Q::ses_close);
      if (!s) return pass(s);
      s->text(1, id);
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return {};
      return fail(ErrorCode::not_found, fmt::format("session {}", id));
    });
  }

 private:
  typename D::Backend& b_;
};

template <class D>
class SqlAudit final : public AuditStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlAudit(typename D::Backend& b) : b_(b) {}

  // Concurrent appends share one transaction (group_commit.h): each returns once its record is
  // committed, as if alone, but a burst of them costs one flush of the log instead of one each.
  // In a unit, the record is one of the unit's writes instead (opening its transaction when it
  // is the first).
  Result<std::uint64_t> append(const AuditRecord& r) override {
    if (!b_.in_unit()) return group_.submit(r);
    return b_.write("audit.append", [&](Connection& c) { return insert(c, r); });
  }

  Result<void> atomically(const std::function<Result<void>()>& work) override {
    return b_.atomically(work);
  }

  Result<std::vector<AuditRecord>> recent(std::size_t limit) override {
    const auto n = static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX));
    return b_.run("audit.recent", [&](Connection& c) -> Result<std::vector<AuditRecord>> {
      auto s = D::query(c, Q::audit_recent);
      if (!s) return pass(s);
      s->integer(1, n);
      return read_rows<AuditRecord>(*s, [](const auto& row) { return read_audit(row); });
    });
  }

 private:
  Result<std::vector<std::uint64_t>> append_all(std::span<const AuditRecord* const> records) {
    return b_.write("audit.append", [&](Connection& c) -> Result<std::vector<std::uint64_t>> {
      typename D::Transaction tx(c);
      if (records.size() > 1) {
        if (auto r = tx.begin(); !r) return pass(r);
      }
      std::vector<std::uint64_t> seqs;
      seqs.reserve(records.size());
      for (const AuditRecord* r : records) {
        auto seq = insert(c, *r);
        if (!seq) return pass(seq);
        seqs.push_back(*seq);
      }
      if (records.size() > 1) {
        if (auto r = tx.commit(); !r) return pass(r);
      }
      return seqs;
    });
  }

  static Result<std::uint64_t> insert(Connection& c, const AuditRecord& r) {
    auto s = D::query(c, Q::audit_append);
    if (!s) return pass(s);
    s->integer(1, to_column(r.time)).text(2, r.service).text(3, r.event);
    s->text(4, r.subject).text(5, r.principal).text(6, r.outcome).text(7, r.detail);
    auto seq = single_int(*s);
    if (!seq) return pass(seq);
    if (!*seq) return fail(ErrorCode::internal, "audit.append: no row returned");
    return static_cast<std::uint64_t>(**seq);
  }

  typename D::Backend& b_;
  GroupCommit<AuditRecord, std::uint64_t> group_{
      [this](std::span<const AuditRecord* const> records) { return append_all(records); }};
};

template <class D>
class SqlAttestations final : public AttestationRequestStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlAttestations(typename D::Backend& b) : b_(b) {}

  Result<void> put(const AttestationRequest& r) override {
    return b_.write("attestation_requests.put", [&](Connection& c) -> Result<void> {
      auto s = D::query(c, Q::att_insert);
      if (!s) return pass(s);
      s->text(1, r.request_id).text(2, r.pcid).text(3, r.device_id).text(4, r.sho);
      s->blob(5, r.nonce).text(6, to_string(r.status)).integer(7, to_column(r.created));
      s->integer(8, to_column(r.answered));
      if (auto done = s->finish(); !done) return done;
      if (s->changes() == 1) return {};
      return fail(ErrorCode::already_exists, fmt::format("attestation request {}", r.request_id));
    });
  }

  Result<std::optional<AttestationRequest>> next_for_device(std::string_view device_id) override {
    return one("attestation_requests.next_for_device", Q::att_next, device_id);
  }

  Result<std::optional<AttestationRequest>> next_for_device_from(
      std::string_view device_id, std::string_view sho, std::string_view successor) override {
    return b_.run("attestation_requests.next_for_device_from", [&](Connection& c) {
      return find_by<D, AttestationRequest>(c, Q::att_next_from, {device_id, sho, successor},
                                            [](const auto& s) { return read_attestation(s); });
    });
  }

  Result<std::optional<AttestationRequest>> find(std::string_view request_id) override {
    return one("attestation_requests.find", Q::att_find, request_id);
  }

  // The UPDATE only matches a pending request, so of two racing answers exactly one changes a
  // row; the other learns why from the status it then reads.
  Result<void> mark_answered(std::string_view request_id, Time at) override {
    return b_.write("attestation_requests.mark_answered", [&](Connection& c) -> Result<void> {
      typename D::Transaction tx(c);
      if (auto r = tx.begin(); !r) return r;
      auto s = D::query(c, Q::att_answer);
      if (!s) return pass(s);
      s->text(1, request_id).integer(2, to_column(at));
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return tx.commit();
      auto status = lookup_text<D>(c, Q::att_status, request_id);
      if (!status) return pass(status);
      if (!*status) {
        return fail(ErrorCode::not_found, fmt::format("attestation request {}", request_id));
      }
      return fail(ErrorCode::transition_refused,
                  fmt::format("attestation request {}: already answered", request_id));
    });
  }

 private:
  Result<std::optional<AttestationRequest>> one(std::string_view op, Q q, std::string_view key) {
    return b_.run(op, [&](Connection& c) {
      return find_one<D, AttestationRequest>(c, q, key,
                                             [](const auto& s) { return read_attestation(s); });
    });
  }

  typename D::Backend& b_;
};

template <class D>
class SqlSubscribers final : public SubscriberStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlSubscribers(typename D::Backend& b) : b_(b) {}

  // device_id, pcid and imsi are each UNIQUE: an insert that changes nothing met one of them
  // (on PostgreSQL after waiting for a concurrent inserter to commit), and the lookup in the
  // same transaction names which.
  Result<void> add(const Subscriber& sub) override {
    return b_.write("subscribers.add", [&](Connection& c) -> Result<void> {
      typename D::Transaction tx(c);
      if (auto r = tx.begin(); !r) return r;
      auto s = D::query(c, Q::sub_insert);
      if (!s) return pass(s);
      s->text(1, sub.device_id).text(2, sub.pcid).text(3, sub.owner).text(4, sub.imsi);
      s->blob(5, sub.platform_cert).blob(6, sub.registration_nonce);
      s->integer(7, to_column(sub.nonce_expires)).text(8, to_string(sub.status));
      s->text(9, sub.challenge_id).blob(10, sub.challenge_nonce).text(11, sub.package_id);
      s->text(12, sub.refusal).integer(13, to_column(sub.created));
      s->integer(14, to_column(sub.updated)).boolean(15, sub.replacing);
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return tx.commit();
      return taken(c, sub);
    });
  }

  Result<std::optional<Subscriber>> find(std::string_view device_id) override {
    return one("subscribers.find", Q::sub_find, device_id);
  }

  Result<std::optional<Subscriber>> find_by_pcid(std::string_view pcid) override {
    return one("subscribers.find_by_pcid", Q::sub_find_pcid, pcid);
  }

  // Compare and set: the UPDATE matches only while the stored status is `expected`.
  Result<void> update(const Subscriber& sub, SubscriberStatus expected) override {
    return b_.write("subscribers.update", [&](Connection& c) -> Result<void> {
      typename D::Transaction tx(c);
      if (auto r = tx.begin(); !r) return r;
      auto s = D::query(c, Q::sub_update);
      if (!s) return pass(s);
      s->text(1, sub.device_id).text(2, to_string(expected)).text(3, to_string(sub.status));
      s->text(4, sub.challenge_id).blob(5, sub.challenge_nonce).text(6, sub.package_id);
      s->text(7, sub.refusal).integer(8, to_column(sub.updated));
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return tx.commit();
      auto status = lookup_text<D>(c, Q::sub_status, sub.device_id);
      if (!status) return pass(status);
      if (!*status) return fail(ErrorCode::not_found, fmt::format("subscriber {}", sub.device_id));
      return fail(
          ErrorCode::transition_refused,
          fmt::format("subscriber {}: {}, not {}", sub.device_id, **status, to_string(expected)));
    });
  }

  Result<void> remove(std::string_view device_id) override {
    return b_.write("subscribers.remove", [&](Connection& c) -> Result<void> {
      auto s = D::query(c, Q::sub_remove);
      if (!s) return pass(s);
      s->text(1, device_id);
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return {};
      return fail(ErrorCode::not_found, fmt::format("subscriber {}", device_id));
    });
  }

 private:
  Result<std::optional<Subscriber>> one(std::string_view op, Q q, std::string_view key) {
    return b_.run(op, [&](Connection& c) {
      return find_one<D, Subscriber>(c, q, key, [](const auto& s) { return read_subscriber(s); });
    });
  }

  // Which unique field an insert that changed nothing met, in the order device_id, pcid, imsi.
  static Result<void> taken(Connection& c, const Subscriber& sub) {
    auto s = D::query(c, Q::sub_taken);
    if (!s) return pass(s);
    s->text(1, sub.device_id).text(2, sub.pcid).text(3, sub.imsi);
    auto field = single_text(*s);
    if (!field) return pass(field);
    if (*field == "device_id") {
      return fail(ErrorCode::already_exists,
                  fmt::format("device_id {}: already registered", sub.device_id));
    }
    if (*field == "pcid") {
      return fail(ErrorCode::already_exists, fmt::format("pcid {}: already registered", sub.pcid));
    }
    if (*field == "imsi") {
      return fail(ErrorCode::already_exists, fmt::format("imsi {}: already allocated", sub.imsi));
    }
    return fail(ErrorCode::internal, "subscribers.add: a row was not inserted");
  }

  typename D::Backend& b_;
};

template <class D>
class SqlChallenges final : public ChallengeStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlChallenges(typename D::Backend& b) : b_(b) {}

  Result<void> put(const Challenge& ch) override {
    return b_.write("challenges.put", [&](Connection& c) -> Result<void> {
      auto s = D::query(c, Q::chl_insert);
      if (!s) return pass(s);
      s->text(1, ch.challenge_id).text(2, ch.sho).text(3, ch.device_id).blob(4, ch.nonce);
      s->integer(5, to_column(ch.created)).integer(6, to_column(ch.expires));
      s->boolean(7, ch.used);
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return {};
      return fail(ErrorCode::already_exists, fmt::format("challenge {}", ch.challenge_id));
    });
  }

  Result<std::optional<Challenge>> find(std::string_view challenge_id) override {
    return b_.run("challenges.find", [&](Connection& c) {
      return find_one<D, Challenge>(c, Q::chl_find, challenge_id,
                                    [](const auto& s) { return read_challenge(s); });
    });
  }

  // One conditional UPDATE .. RETURNING: only an unused challenge matches, so of two racing
  // validations exactly one gets the row back.
  Result<Challenge> consume(std::string_view challenge_id) override {
    return b_.write("challenges.consume", [&](Connection& c) -> Result<Challenge> {
      typename D::Transaction tx(c);
      if (auto r = tx.begin(); !r) return pass(r);
      auto s = D::query(c, Q::chl_consume);
      if (!s) return pass(s);
      s->text(1, challenge_id);
      auto row = s->step();
      if (!row) return pass(row);
      if (*row) {
        auto ch = read_challenge(*s);
        if (!ch) return pass(ch);
        if (auto r = s->finish(); !r) return pass(r);
        if (auto r = tx.commit(); !r) return pass(r);
        return ch;
      }
      auto used = lookup_text<D>(c, Q::chl_used, challenge_id);
      if (!used) return pass(used);
      if (!*used) return fail(ErrorCode::not_found, fmt::format("challenge {}", challenge_id));
      return fail(ErrorCode::transition_refused,
                  fmt::format("challenge {}: already used", challenge_id));
    });
  }

 private:
  typename D::Backend& b_;
};

template <class D>
class SqlReferences final : public ReferenceStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlReferences(typename D::Backend& b) : b_(b) {}

  Result<void> put(const StoredReferences& r) override {
    return b_.write("references.put", [&](Connection& c) -> Result<void> {
      auto s = D::query(c, Q::ref_put);
      if (!s) return pass(s);
      s->text(1, r.model).integer(2, to_column(r.issued)).text(3, r.text);
      s->integer(4, to_column(r.stored));
      return s->finish();
    });
  }

  Result<std::vector<StoredReferences>> all() override {
    return b_.run("references.all", [&](Connection& c) -> Result<std::vector<StoredReferences>> {
      auto s = D::query(c, Q::ref_all);
      if (!s) return pass(s);
      return read_rows<StoredReferences>(*s, [](const auto& row) { return read_references(row); });
    });
  }

 private:
  typename D::Backend& b_;
};

template <class D>
class SqlInstructions final : public InstructionStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlInstructions(typename D::Backend& b) : b_(b) {}

  Result<void> put(const QueuedInstruction& q, std::size_t keep) override {
    return b_.write("instructions.put", [&](Connection& c) -> Result<void> {
      return insert_bounded<D>(
          c, Q::ins_insert, q.instruction_id,
          [&](auto& s) {
            s.text(1, q.instruction_id).text(2, q.pcid).text(3, q.device_id).text(4, q.sho);
            s.text(5, q.instruction).integer(6, static_cast<std::int64_t>(q.sequence));
            s.text(7, q.action).text(8, q.credential).text(9, to_string(q.status));
            s.text(10, q.report).integer(11, to_column(q.created));
            s.integer(12, to_column(q.updated));
          },
          {Q::ins_count, Q::ins_prune_answered, Q::ins_prune_oldest}, keep);
    });
  }

  Result<std::optional<QueuedInstruction>> find(std::string_view instruction_id) override {
    return b_.run("instructions.find", [&](Connection& c) {
      return find_one<D, QueuedInstruction>(c, Q::ins_find, instruction_id,
                                            [](const auto& s) { return read_instruction(s); });
    });
  }

  // One UPDATE .. RETURNING marks them delivered; RETURNING promises no order, so the rows are
  // put in queue order (seq, the last column) here.
  Result<std::vector<QueuedInstruction>> collect(std::string_view device_id, std::size_t limit,
                                                 Time at) override {
    const auto n = static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX));
    return b_.write("instructions.collect",
                    [&](Connection& c) -> Result<std::vector<QueuedInstruction>> {
                      auto s = D::query(c, Q::ins_collect);
                      if (!s) return pass(s);
                      s->text(1, device_id).integer(2, n).integer(3, to_column(at));
                      std::vector<std::pair<std::int64_t, QueuedInstruction>> rows;
                      for (;;) {
                        auto row = s->step();
                        if (!row) return pass(row);
                        if (!*row) break;
                        auto q = read_instruction(*s);
                        if (!q) return pass(q);
                        rows.emplace_back(s->int_at(12), std::move(*q));
                      }
                      std::sort(rows.begin(), rows.end(),
                                [](const auto& a, const auto& b) { return a.first < b.first; });
                      std::vector<QueuedInstruction> out;
                      out.reserve(rows.size());
                      for (auto& r : rows) out.push_back(std::move(r.second));
                      return out;
                    });
  }

  Result<QueuedInstruction> answer(std::string_view instruction_id, std::string_view report,
                                   Time at) override {
    return b_.write("instructions.answer", [&](Connection& c) {
      return update_returning<D, QueuedInstruction>(
          c, Q::ins_answer, Q::ins_status, instruction_id, "instruction", "already answered",
          [&](auto& s) { s.text(2, report).integer(3, to_column(at)); },
          [](const auto& s) { return read_instruction(s); });
    });
  }

  Result<std::uint64_t> count() override {
    return b_.run("instructions.count",
                  [&](Connection& c) { return count_of<D>(c, Q::ins_count); });
  }

 private:
  typename D::Backend& b_;
};

template <class D>
class SqlIssuedInstructions final : public IssuedInstructionStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlIssuedInstructions(typename D::Backend& b) : b_(b) {}

  Result<void> put(const IssuedInstruction& i, std::size_t keep) override {
    return b_.write("issued_instructions.put", [&](Connection& c) -> Result<void> {
      return insert_bounded<D>(
          c, Q::iss_insert, i.instruction_id,
          [&](auto& s) {
            s.text(1, i.instruction_id).text(2, i.device_id).text(3, i.action);
            s.text(4, i.credential).integer(5, static_cast<std::int64_t>(i.sequence));
            s.integer(6, to_column(i.created)).text(7, i.owner).text(8, i.revert_to);
            s.text(9, to_string(i.status)).text(10, i.report).integer(11, to_column(i.answered));
          },
          {Q::iss_count, Q::iss_prune_answered, Q::iss_prune_oldest}, keep);
    });
  }

  Result<std::optional<IssuedInstruction>> find(std::string_view instruction_id) override {
    return one("issued_instructions.find", Q::iss_find, instruction_id);
  }

  Result<std::optional<IssuedInstruction>> latest_revert(std::string_view device_id) override {
    return one("issued_instructions.latest_revert", Q::iss_revert, device_id);
  }

  Result<IssuedInstruction> answer(std::string_view instruction_id, std::string_view report,
                                   Time at, bool released) override {
    const IssuedStatus to = released ? IssuedStatus::released : IssuedStatus::answered;
    return b_.write("issued_instructions.answer", [&](Connection& c) {
      return update_returning<D, IssuedInstruction>(
          c, Q::iss_answer, Q::iss_status, instruction_id, "instruction", "already answered",
          [&](auto& s) { s.text(2, report).integer(3, to_column(at)).text(4, to_string(to)); },
          [](const auto& s) { return read_issued(s); });
    });
  }

 private:
  Result<std::optional<IssuedInstruction>> one(std::string_view op, Q q, std::string_view key) {
    return b_.run(op, [&](Connection& c) {
      return find_one<D, IssuedInstruction>(c, q, key,
                                            [](const auto& s) { return read_issued(s); });
    });
  }

  typename D::Backend& b_;
};

template <class D>
class SqlNotices final : public NoticeStore {
 public:
  using Connection = typename D::Connection;
  explicit SqlNotices(typename D::Backend& b) : b_(b) {}

  Result<std::uint64_t> add(const StoredNotice& n) override {
    return b_.write("notices.add", [&](Connection& c) -> Result<std::uint64_t> {
      auto s = D::query(c, Q::ntc_insert);
      if (!s) return pass(s);
      s->text(1, n.kind).text(2, n.subject).text(3, n.sho).text(4, n.path).text(5, n.body);
      s->integer(6, to_column(n.created));
      auto seq = single_int(*s);
      if (!seq) return pass(seq);
      if (!*seq) return fail(ErrorCode::internal, "notices.add: no row returned");
      return static_cast<std::uint64_t>(**seq);
    });
  }

  // One DELETE per seq, all in one transaction; none without a seq.
  Result<std::size_t> remove(std::span<const std::uint64_t> seqs) override {
    if (seqs.empty()) return std::size_t{0};
    return b_.write("notices.remove", [&](Connection& c) -> Result<std::size_t> {
      typename D::Transaction tx(c);
      if (auto r = tx.begin(); !r) return pass(r);
      std::size_t removed = 0;
      for (const std::uint64_t seq : seqs) {
        if (seq > static_cast<std::uint64_t>(INT64_MAX)) continue;  // never given: not stored
        auto s = D::query(c, Q::ntc_remove);
        if (!s) return pass(s);
        s->integer(1, static_cast<std::int64_t>(seq));
        if (auto r = s->finish(); !r) return pass(r);
        removed += static_cast<std::size_t>(s->changes());
      }
      if (auto r = tx.commit(); !r) return pass(r);
      return removed;
    });
  }

  Result<std::vector<StoredNotice>> pending(std::size_t limit) override {
    const auto n = static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX));
    return b_.run("notices.pending", [&](Connection& c) -> Result<std::vector<StoredNotice>> {
      auto s = D::query(c, Q::ntc_pending);
      if (!s) return pass(s);
      s->integer(1, n);
      return read_rows<StoredNotice>(*s, [](const auto& row) { return read_notice(row); });
    });
  }

  Result<std::uint64_t> count() override {
    return b_.run("notices.count", [&](Connection& c) { return count_of<D>(c, Q::ntc_count); });
  }

 private:
  typename D::Backend& b_;
};

// ---- Migrations ------------------------------------------------------------------------------

template <class D>
Result<int> read_version(typename D::Connection& c) {
  auto s = D::query(c, Q::version_read);
  if (!s) return pass(s);
  auto v = single_int(*s);
  if (!v) return pass(v);
  return static_cast<int>(v->value_or(0));
}

template <class D>
Result<void> record_version(typename D::Connection& c, const Migration& m) {
  auto s = D::query(c, Q::version_record);
  if (!s) return pass(s);
  const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  s->integer(1, m.version).integer(2, to_column(now)).text(3, m.description);
  return s->finish();
}

// Applies the missing migrations, each in its own transaction. D::Transaction::begin_migration()
// takes a lock that serialises every opener of the database (SQLite: the write lock; PostgreSQL:
// an advisory lock), and the version is read under it, so no migration is applied twice.
template <class D>
Result<int> migrate(typename D::Connection& c) {
  c.set_operation("migrate");
  const int latest = latest_schema_version();
  for (;;) {
    typename D::Transaction tx(c);
    if (auto r = tx.begin_migration(); !r) return pass(r);
    if (auto r = c.exec(D::kSchemaVersionTable); !r) return pass(r);
    auto version = read_version<D>(c);
    if (!version) return pass(version);
    if (*version > latest) {
      return fail(ErrorCode::unsupported,
                  fmt::format("{}: database schema version {} is newer than this build supports "
                              "({}); upgrade mcim",
                              D::kName, *version, latest));
    }
    if (*version == latest) {
      if (auto r = tx.commit(); !r) return pass(r);
      return latest;
    }
    const Migration& m = migrations()[static_cast<std::size_t>(*version)];
    if (auto r = c.exec(D::migration_text(m)); !r) return pass(r);
    if (auto r = record_version<D>(c, m); !r) return pass(r);
    if (auto r = tx.commit(); !r) return pass(r);
  }
}

// ---- The database ----------------------------------------------------------------------------

template <class D>
class SqlDatabase final : public Database {
 public:
  template <class... Args>
  explicit SqlDatabase(int version, Args&&... backend_args)
      : backend_(std::forward<Args>(backend_args)...), version_(version) {}

  PcidStore& pcids() override { return pcids_; }
  SqnStore& sqns() override { return sqns_; }
  RegistrationStore& registrations() override { return registrations_; }
  PackageStore& packages() override { return packages_; }
  SessionStore& sessions() override { return sessions_; }
  AuditStore& audit() override { return audit_; }
  AttestationRequestStore& attestation_requests() override { return attestations_; }
  SubscriberStore& subscribers() override { return subscribers_; }
  ChallengeStore& challenges() override { return challenges_; }
  ReferenceStore& references() override { return references_; }
  InstructionStore& instructions() override { return instructions_; }
  IssuedInstructionStore& issued_instructions() override { return issued_; }
  NoticeStore& notices() override { return notices_; }
  int schema_version() override { return version_; }  // as migrated at open
  std::string_view backend() const override { return D::kName; }

 private:
  typename D::Backend backend_;
  const int version_;
  SqlPcids<D> pcids_{backend_};
  SqlSqns<D> sqns_{backend_};
  SqlRegistrations<D> registrations_{backend_};
  SqlPackages<D> packages_{backend_};
  SqlSessions<D> sessions_{backend_};
  SqlAudit<D> audit_{backend_};
  SqlAttestations<D> attestations_{backend_};
  SqlSubscribers<D> subscribers_{backend_};
  SqlChallenges<D> challenges_{backend_};
  SqlReferences<D> references_{backend_};
  SqlInstructions<D> instructions_{backend_};
  SqlIssuedInstructions<D> issued_{backend_};
  SqlNotices<D> notices_{backend_};
};

}  // namespace mcim::store::sql
