// What the two SQL adapters share and nothing else sees: the connection pool (thread-safe, lazy,
// bounded), the column encodings of enums and times, and the bounds on SEQ values that keep the
// atomic SQN statements free of integer overflow. Private to src/store.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/error.h"
#include "store/store.h"

namespace mcim::store::sql {

// Times are stored as Unix seconds (BIGINT / INTEGER) in both dialects.
inline std::int64_t to_column(Time t) { return t.time_since_epoch().count(); }
inline Time time_from_column(std::int64_t v) { return Time(std::chrono::seconds(v)); }

// SEQ values live in signed 64-bit columns; the statements compute seq_he + count, so both
// operands stay below 2^62 and the sum cannot overflow. Real SEQs are < 2^43 (TS 33.102 C.3).
inline constexpr std::uint64_t kSeqLimit = std::uint64_t{1} << 62;
inline std::uint64_t clamp_seq_max(std::uint64_t seq_max) {
  return seq_max < kSeqLimit ? seq_max : kSeqLimit;
}

std::optional<PcidStatus> parse_pcid_status(std::string_view s);
std::optional<PackageStatus> parse_package_status(std::string_view s);
std::optional<AttestationStatus> parse_attestation_status(std::string_view s);
std::optional<SubscriberStatus> parse_subscriber_status(std::string_view s);
std::optional<InstructionStatus> parse_instruction_status(std::string_view s);
std::optional<IssuedStatus> parse_issued_status(std::string_view s);

// A bounded pool of connections opened on demand. acquire() hands one connection to one thread;
// the Lease gives it back (or drops it when the holder found it broken). Thread-safe.
template <class Conn>
class ConnectionPool {
 public:
  using Factory = std::function<Result<std::unique_ptr<Conn>>()>;

  class Lease {
   public:
    Lease(ConnectionPool* pool, std::unique_ptr<Conn> conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)), conn_(std::move(o.conn_)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (pool_ != nullptr) pool_->release(std::move(conn_), discard_);
    }
    Conn& operator*() const { return *conn_; }
    Conn* operator->() const { return conn_.get(); }
    void discard() { discard_ = true; }  // the connection is broken: close it, don't reuse it

   private:
    ConnectionPool* pool_;
    std::unique_ptr<Conn> conn_;
    bool discard_ = false;
  };

  ConnectionPool(std::size_t capacity, Factory factory)
      : capacity_(capacity == 0 ? 1 : capacity), factory_(std::move(factory)) {}
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // Gives the pool an already opened connection (the one that ran the migrations).
  void adopt(std::unique_ptr<Conn> conn) {
    std::lock_guard lock(mu_);
    ++open_;
    idle_.push_back(std::move(conn));
  }

  // Closes every idle connection: once one is found broken (the server restarted), the others
  // most likely are too, and the next callers should not each find out with a failed request.
  void drop_idle() {
    std::vector<std::unique_ptr<Conn>> dropped;
    {
      std::lock_guard lock(mu_);
      dropped.swap(idle_);
      open_ -= dropped.size();
    }
    cv_.notify_all();
  }

  Result<Lease> acquire() {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return !idle_.empty() || open_ < capacity_; });
      if (!idle_.empty()) {
        auto conn = std::move(idle_.back());
        idle_.pop_back();
        return Lease(this, std::move(conn));
      }
      ++open_;  // reserve the slot, connect outside the lock
    }
    auto conn = factory_();
    if (!conn) {
      release(nullptr, true);
      return std::unexpected(conn.error());
    }
    return Lease(this, std::move(*conn));
  }

 private:
  void release(std::unique_ptr<Conn> conn, bool discard) {
    {
      std::lock_guard lock(mu_);
      if (discard || conn == nullptr) {
        --open_;
      } else {
        idle_.push_back(std::move(conn));
      }
    }
    cv_.notify_one();
    // A discarded connection closes here, outside the lock.
  }

  const std::size_t capacity_;
  const Factory factory_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Conn>> idle_;  // guarded by mu_
  std::size_t open_ = 0;                     // idle + leased, guarded by mu_
};

// A unit of work of one thread on one backend (AuditStore::atomically): the connection of its
// transaction, from its first write on, what the backend keeps for it while it is open (`Hold`:
// the pooled connection on PostgreSQL, the batch it joined on SQLite), and the error that lost the
// transaction. Each backend keeps the unit of the calling thread in a thread_local pointer and
// runs a call there when the unit is its own.
template <class Conn, class Hold>
struct Unit {
  explicit Unit(const void* b) : backend(b) {}
  const void* backend;
  Conn* conn = nullptr;  // set once the transaction is open
  std::optional<Hold> hold;
  std::optional<Error> failed;
  // What the next call takes with its savepoint (call_in_unit): the BEGIN that open_unit may
  // leave to it, and the release of the last call's savepoint, which is otherwise left to the
  // unit's end (COMMIT, ROLLBACK, or SQLite's RELEASE of the unit's own savepoint).
  bool begin_deferred = false;
  bool call_savepoint_held = false;
  static inline thread_local Unit* current = nullptr;

  // The calling thread's unit on `backend`, if it has one.
  static Unit* of(const void* b) {
    return current != nullptr && current->backend == b ? current : nullptr;
  }
  // `r`, an error that lost the transaction; the first one fails the unit.
  template <class R>
  R note(R r) {
    if (!r && !failed) failed = r.error();
    return r;
  }
};

// Makes `u` the calling thread's unit for as long as it lives.
template <class U>
class UnitScope {
 public:
  explicit UnitScope(U& u) : saved_(std::exchange(U::current, &u)) {}
  UnitScope(const UnitScope&) = delete;
  UnitScope& operator=(const UnitScope&) = delete;
  ~UnitScope() { U::current = saved_; }

 private:
  U* saved_;
};

// The units of work of a backend (AuditStore::atomically), the same for both SQL adapters: which
// calls join the calling thread's unit, the savepoint around each, and the unit's run. `Derived`
// (CRTP) provides:
//   alone(op, f)          runs `f` on a pooled connection of its own, with its retry policy;
//   open_unit(unit, op)   begins the unit's transaction, or joins one (unit.conn, unit.hold),
//                         or leaves its BEGIN to the first call (unit.begin_deferred);
//   end_unit(unit, r)     ends the unit: commits when `r` is success, else rolls back what it
//                         wrote, and returns `r` or the commit's error;
//   pause(attempt)        waits before a unit that met a conflict runs again;
//   unit_started(), unit_finished()  a unit begins and ends (the batches' linger, SQLite);
//   kAttempts             how many times a unit runs at most;
//   kLoneWritesInUnits    a write outside any unit runs as a unit of its own (SQLite, whose
//                         units share commits: docs/store.md "Batched commits") rather than
//                         alone.
template <class Derived, class Conn, class Hold>
class UnitCalls {
 public:
  using Unit = sql::Unit<Conn, Hold>;

  // Runs `f`, a call that only reads: in the calling thread's unit once that has written, else
  // alone.
  template <class F>
  std::invoke_result_t<F&, Conn&> run(std::string_view op, F&& f) {
    if (Unit* u = Unit::of(key()); u != nullptr && u->conn != nullptr) {
      return call_in_unit(*u, op, f);
    }
    return derived().alone(op, f);
  }

  // Runs `f`, a call that writes: in the calling thread's unit, whose transaction the first such
  // call opens; else alone, or as a unit of its own.
  template <class F>
  std::invoke_result_t<F&, Conn&> write(std::string_view op, F&& f) {
    using R = std::invoke_result_t<F&, Conn&>;
    Unit* u = Unit::of(key());
    if (u == nullptr) {
      if constexpr (!Derived::kLoneWritesInUnits) {
        return derived().alone(op, f);
      } else {
        std::optional<R> out;
        auto r = atomically([&]() -> Result<void> {
          out.emplace(write(op, f));
          if (!*out) return std::unexpected(out->error());
          return {};
        });
        if (!r && (!out || *out)) return R(std::unexpected(r.error()));  // not committed
        return std::move(*out);
      }
    }
    if (u->conn == nullptr) {
      // Nothing written yet: a failure to begin leaves the unit as it was.
      if (auto r = derived().open_unit(*u, op); !r) return std::unexpected(r.error());
    }
    return call_in_unit(*u, op, f);
  }

  bool in_unit() const { return Unit::of(key()) != nullptr; }

  // AuditStore::atomically. A unit whose transaction met a conflict (busy) is run again, as
  // alone() runs a method again, which is why `work` must be safe to repeat.
  Result<void> atomically(const std::function<Result<void>()>& work) {
    if (Unit::of(key()) != nullptr) return work();  // a unit within a unit joins it
    struct Running {
      Derived& d;
      explicit Running(Derived& b) : d(b) { d.unit_started(); }
      ~Running() { d.unit_finished(); }
      Running(const Running&) = delete;
      Running& operator=(const Running&) = delete;
    } running(derived());
    for (int attempt = 1;; ++attempt) {
      {
        Unit u(key());
        Result<void> r;
        try {
          UnitScope<Unit> scope(u);
          r = work();
        } catch (...) {  // rolled back, so that the connection goes back to the pool clean
          if (u.conn != nullptr) {
            (void)derived().end_unit(u, fail(ErrorCode::internal, "unit: thrown"));
          }
          throw;
        }
        if (r && u.failed) r = std::unexpected(*u.failed);
        if (u.conn == nullptr) return r;  // wrote nothing
        u.conn->set_operation("unit");
        r = derived().end_unit(u, std::move(r));
        if (r || r.error().code != ErrorCode::busy || attempt == Derived::kAttempts) return r;
      }  // the connection goes back before the pause
      derived().pause(attempt);
    }
  }

 private:
  Derived& derived() { return static_cast<Derived&>(*this); }
  const void* key() const { return static_cast<const Derived*>(this); }

  // A call in a unit's transaction keeps its own all or nothing: it runs within a savepoint,
  // which its failure rolls back, so that the unit may go on (on PostgreSQL a failed statement
  // would otherwise have lost the whole transaction). A unit whose savepoint could not be taken
  // or undone is lost: it fails, and so does every later call in it.
  // The savepoint of a call that succeeded is not released at once: the next call releases it as
  // it takes its own, or the unit's end does, and at most one is held at a time as before. On
  // PostgreSQL the BEGIN, the release and the savepoint go with the call's first statement, in
  // one round trip to the server (libpq's pipeline mode), instead of round trips of their own.
  template <class F>
  std::invoke_result_t<F&, Conn&> call_in_unit(Unit& u, std::string_view op, F& f) {
    using R = std::invoke_result_t<F&, Conn&>;
    if (u.failed) return std::unexpected(*u.failed);
    Conn& c = *u.conn;
    c.set_operation(op);
    // Conn::defer: SQLite runs it now; PostgreSQL sends it with the call's first statement.
    const bool begin = std::exchange(u.begin_deferred, false);
    const bool held = std::exchange(u.call_savepoint_held, false);
    Result<void> sp = begin ? c.defer("BEGIN") : Result<void>{};
    if (sp && held) sp = c.defer("RELEASE call");
    if (sp) sp = c.defer("SAVEPOINT call");
    if (!sp) return u.note(R(std::unexpected(sp.error())));
    u.call_savepoint_held = true;
    auto r = f(c);
    if (!r) {
      u.call_savepoint_held = false;
      if (auto undone = c.exec("ROLLBACK TO call; RELEASE call"); !undone) {
        return u.note(R(std::unexpected(undone.error())));
      }
    }
    return r;
  }
};

}  // namespace mcim::store::sql
