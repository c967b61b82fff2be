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
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "store/migrations.h"
#include "store/sql_common.h"
#include "store/store.h"

namespace mcim::store::sql {

// Every statement the adapters run; each connection prepares one on its first use.
enum class Q : std::size_t {
  pcid_insert,
  pcid_find,
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
  reg_holder,
  pkg_insert,
  pkg_next,
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

// Runs a one-key lookup and decodes its row with `read`; nullopt without a row.
template <class D, class T, class Read>
Result<std::optional<T>> find_one(typename D::Connection& c, Q q, std::string_view key, Read read) {
  auto s = D::query(c, q);
  if (!s) return pass(s);
  s->text(1, key);
  auto row = s->step();
  if (!row) return pass(row);
  if (!*row) return std::optional<T>();
  auto v = read(*s);
  if (!v) return pass(v);
  return std::optional<T>(std::move(*v));
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

  // One transaction, all or nothing. Rows go in in PCID order, so that two overlapping batches
  // take their unique-index locks in the same order and cannot deadlock (PostgreSQL would detect
  // it only after deadlock_timeout, 1 s by default). An insert that changes nothing met a PCID
  // already stored or repeated in the batch; the refusal names the first one in batch order.
  Result<void> add_batch(const std::vector<PcidSubscription>& batch) override {
    if (batch.empty()) return {};
    std::vector<std::size_t> order(batch.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return batch[a].pcid < batch[b].pcid; });
    return b_.run("pcids.add_batch", [&](Connection& c) -> Result<void> {
      typename D::Transaction tx(c);
      if (auto r = tx.begin(); !r) return r;
      std::set<std::string_view> stored_before, inserted;
      for (const std::size_t i : order) {
        auto ok = insert(c, batch[i]);
        if (!ok) return pass(ok);
        if (*ok) {
          inserted.insert(batch[i].pcid);
        } else if (!inserted.contains(batch[i].pcid)) {
          stored_before.insert(batch[i].pcid);
        }
      }
      if (inserted.size() == batch.size()) return tx.commit();
      return first_duplicate(batch, stored_before);  // the transaction rolls back
    });
  }

  Result<std::optional<PcidSubscription>> find(std::string_view pcid) override {
    return b_.run("pcids.find", [&](Connection& c) {
      return find_one<D, PcidSubscription>(c, Q::pcid_find, pcid,
                                           [](const auto& s) { return read_pcid(s); });
    });
  }

  Result<void> activate(std::string_view pcid, Time until) override {
    return b_.run("pcids.activate", [&](Connection& c) -> Result<void> {
      typename D::Transaction tx(c);
      if (auto r = tx.begin(); !r) return r;
      auto s = D::query(c, Q::pcid_activate);
      if (!s) return pass(s);
      s->text(1, pcid).integer(2, to_column(until));
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return tx.commit();
      auto status = lookup_text<D>(c, Q::pcid_status, pcid);
      if (!status) return pass(status);
      if (!*status) return fail(ErrorCode::not_found, fmt::format("pcid {}", pcid));
      return fail(ErrorCode::transition_refused,
                  fmt::format("pcid {}: expired, cannot be activated", pcid));
    });
  }

  Result<std::uint64_t> expire_dormant(Time now) override {
    return b_.run("pcids.expire_dormant", [&](Connection& c) -> Result<std::uint64_t> {
      auto s = D::query(c, Q::pcid_expire);
      if (!s) return pass(s);
      s->integer(1, to_column(now));
      if (auto r = s->finish(); !r) return pass(r);
      return static_cast<std::uint64_t>(s->changes());
    });
  }

  Result<std::uint64_t> count() override {
    return b_.run("pcids.count", [&](Connection& c) -> Result<std::uint64_t> {
      auto s = D::query(c, Q::pcid_count);
      if (!s) return pass(s);
      auto n = single_int(*s);
      if (!n) return pass(n);
      return static_cast<std::uint64_t>(n->value_or(0));
    });
  }

 private:
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

  // K and OPc are bound from the Secrets themselves: no copy of a key is made.
  static Result<bool> insert(Connection& c, const PcidSubscription& p) {
    auto s = D::query(c, Q::pcid_insert);
    if (!s) return pass(s);
    s->text(1, p.pcid).text(2, p.batch).blob(3, p.k.get()).blob(4, p.opc.get());
    s->integer(5, p.ind_bits).text(6, to_string(p.status)).integer(7, to_column(p.dormant_until));
    s->integer(8, to_column(p.active_until)).integer(9, to_column(p.not_after));
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
    return b_.run("sqns.reserve", [&](Connection& c) -> Result<std::uint64_t> {
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
    return b_.run("sqns.resynchronise", [&](Connection& c) -> Result<std::uint64_t> {
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
    return b_.run("registrations.put", [&](Connection& c) -> Result<void> {
      auto s = D::query(c, Q::reg_put);
      if (!s) return pass(s);
      s->text(1, r.pcid).text(2, r.device_id).text(3, r.sho).text(4, r.dpf_url);
      s->blob(5, r.dpf_key_pin).text(6, r.apn).integer(7, to_column(r.created));
      s->blob(8, r.bootstrap_key.get());
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
    return b_.run("registrations.remove", [&](Connection& c) -> Result<void> {
      typename D::Transaction tx(c);
      if (auto r = tx.begin(); !r) return r;
      auto s = D::query(c, Q::reg_remove);
      if (!s) return pass(s);
      s->text(1, pcid).text(2, sho);
      if (auto r = s->finish(); !r) return r;
      if (s->changes() == 1) return tx.commit();
      auto holder = lookup_text<D>(c, Q::reg_holder, pcid);
      if (!holder) return pass(holder);
      if (!*holder) return fail(ErrorCode::not_found, fmt::format("registration of pcid {}", pcid));
      return denied(pcid);
    });
  }

 private:
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
    return b_.run("packages.put", [&](Connection& c) -> Result<void> {
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

  Result<std::optional<StoredPackage>> find(std::string_view package_id) override {
    return one("packages.find", Q::pkg_find, package_id);
  }

  Result<void> mark_delivered(std::string_view package_id, Time at) override {
    return b_.run("packages.mark_delivered", [&](Connection& c) -> Result<void> {
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
    return b_.run("packages.store_report", [&](Connection& c) -> Result<void> {
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
    return b_.run("sessions.open", [&](Connection& c) -> Result<void> {
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
    return b_.run("sessions.close", [&](Connection& c) -> Result<void> {
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

  Result<std::uint64_t> append(const AuditRecord& r) override {
    return b_.run("audit.append", [&](Connection& c) -> Result<std::uint64_t> {
      auto s = D::query(c, Q::audit_append);
      if (!s) return pass(s);
      s->integer(1, to_column(r.time)).text(2, r.service).text(3, r.event).text(4, r.subject);
      s->text(5, r.principal).text(6, r.outcome).text(7, r.detail);
      auto seq = single_int(*s);
      if (!seq) return pass(seq);
      if (!*seq) return fail(ErrorCode::internal, "audit.append: no row returned");
      return static_cast<std::uint64_t>(**seq);
    });
  }

  Result<std::vector<AuditRecord>> recent(std::size_t limit) override {
    const auto n = static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX));
    return b_.run("audit.recent", [&](Connection& c) -> Result<std::vector<AuditRecord>> {
      auto s = D::query(c, Q::audit_recent);
      if (!s) return pass(s);
      s->integer(1, n);
      std::vector<AuditRecord> out;
      for (;;) {
        auto row = s->step();
        if (!row) return pass(row);
        if (!*row) return out;
        auto r = read_audit(*s);
        if (!r) return pass(r);
        out.push_back(std::move(*r));
      }
    });
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
};

}  // namespace mcim::store::sql
