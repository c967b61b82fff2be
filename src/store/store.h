// The storage port of the services (DESIGN.md §5): one interface per aggregate, so that role
// logic (src/roles) never sees SQL. Two adapters implement every port: SQLite (WAL; the embedded
// default) and PostgreSQL (libpq), opened by URL through open_database(). Every method is one
// transaction; the adapters are thread-safe (a service calls them from all its worker threads).
// Secrets (K, OPc) are stored as given: the database is the operator's HSS-grade store and is
// protected as such (docs/store.md); they never appear in errors.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/error.h"
#include "common/secure.h"

namespace mcim::store {

using Time = std::chrono::sys_seconds;

// ---- PCID subscriptions (the RO's ICF) -------------------------------------------------------

// F7: a PCID is manufactured dormant; the owner or SHO announces imminent switch-on, which makes
// it active until `active_until`; a dormant one not activated by `dormant_until` expires and, after
// a quarantine, returns to the pool (F8).
enum class PcidStatus { dormant, active, expired };
std::string_view to_string(PcidStatus s);

struct PcidSubscription {
  std::string pcid;   // IMSI, 6..15 digits
  std::string batch;  // the supplier batch it came in
  Secret<16> k;
  Secret<16> opc;
  unsigned ind_bits = 5;
  PcidStatus status = PcidStatus::dormant;
  Time dormant_until{};  // a dormant PCID expires after this
  Time active_until{};   // an active one stops serving vectors after this (0: not active)
  Time not_after{};      // end of the PCID credential's lifetime (F8)
  Time expired_at{};     // when the dormant sweep expired it (0: not expired by the sweep)
  // F8: the package id of a renewed credential staged for this PCID and not yet installed by the
  // device (empty: none). Its K and OPc are the store's, never read back but by complete_renewal.
  std::string renewal_package;
};

// F8: a renewed PCID credential, staged until the device's TRE reports it installed.
struct PcidRenewal {
  std::string pcid;
  std::string package_id;
  Secret<16> k, opc;
  Time not_after{};
};

// F8 "PCIDs no longer needed are reallocated": a stored PCID may be replaced by a new batch once
// it is free, i.e. (expired by the sweep and expired_at + quarantine <= now) or (its lifetime
// over: not_after + quarantine <= now), and no session on it is live at `now`.
struct PcidReuse {
  Time now{};
  std::chrono::seconds quarantine{};
};
// The rule above without the session check (the in-memory adapter's; the SQL adapters say the
// same in SQL).
bool pcid_free(const PcidSubscription& p, const PcidReuse& reuse);

class PcidStore {
 public:
  virtual ~PcidStore() = default;
  // All or nothing: already_exists (naming the first duplicate PCID) when any PCID is present.
  Result<void> add_batch(const std::vector<PcidSubscription>& batch);
  // The same, except that a stored PCID that is free under `reuse` is replaced (its row and its
  // DRF registration go, in the same transaction); already_exists for one that is not free.
  // Returns how many PCIDs were reallocated.
  virtual Result<std::uint64_t> add_batch(const std::vector<PcidSubscription>& batch,
                                          const std::optional<PcidReuse>& reuse) = 0;
  virtual Result<std::optional<PcidSubscription>> find(std::string_view pcid) = 0;
  // dormant/active -> active until `until`; not_found; transition_refused for an expired one.
  virtual Result<void> activate(std::string_view pcid, Time until) = 0;
  // Marks every dormant PCID whose dormant_until < now as expired at `now` (expired_at); returns
  // how many.
  virtual Result<std::uint64_t> expire_dormant(Time now) = 0;
  virtual Result<std::uint64_t> count() = 0;
  // F8: stages `r` for its PCID, replacing one staged before; the subscription is unchanged.
  // not_found for an unknown PCID.
  virtual Result<void> stage_renewal(const PcidRenewal& r) = 0;
  // F8: the device installed the staged renewal `package_id`: its K, OPc and not_after become the
  // subscription's and the staging is cleared, atomically. not_found (unknown PCID);
  // transition_refused when that renewal is not the staged one (another, none, done already).
  virtual Result<void> complete_renewal(std::string_view pcid, std::string_view package_id) = 0;
};

// ---- SQN state (the home side's SEQ_HE per IMSI: ICF for PCIDs, SHO's AuC later) -------------

class SqnStore {
 public:
  virtual ~SqnStore() = default;
  // Reserves `count` consecutive SEQ values in ONE atomic statement and returns the first: SEQ_HE
  // moves from s to s + count and the caller may use s+1 .. s+count. Two service instances on
  // one database never get the same SEQ. An IMSI without a row starts at 0.
  // sqn_exhausted when s + count > seq_max (nothing changes).
  virtual Result<std::uint64_t> reserve(std::string_view imsi, std::uint64_t count,
                                        std::uint64_t seq_max) = 0;
  // After a verified AUTS: SEQ_HE = max(SEQ_HE, seq_ms) atomically (TS 33.102 §6.3.5: the next
  // vector must be above SEQ_MS). Returns the new SEQ_HE.
  virtual Result<std::uint64_t> resynchronise(std::string_view imsi, std::uint64_t seq_ms) = 0;
  virtual Result<std::uint64_t> current(std::string_view imsi) = 0;  // 0 when absent
};

// ---- Registrations (the RO's DRF: F1 "PCID -> SHO, DPF address") -----------------------------

struct Registration {
  std::string pcid;
  std::string device_id;
  std::string sho;            // operator id of the home operator
  std::string dpf_url;        // where the package will be (https://...)
  Bytes<32> dpf_key_pin{};    // SHA-256 of the DPF's SubjectPublicKeyInfo
  std::string apn;            // the restricted APN for provisioning
  // The MAC key of the bootstrap message, PBKDF2 of the device's bootstrap PIN
  // (roles/ro/bootstrap.h): a secret, stored instead of the PIN, never in errors or logs.
  Secret<32> bootstrap_key;
  Time created{};
  // The SHO's refusal of the device (an ErrorCode wire name, e.g. "measurement_mismatch"), so that
  // the DPF can answer the device's polls with it instead of "nothing yet"; empty while the
  // provisioning may go on. A new put() by the SHO (a new registration) carries its own.
  std::string refusal;
  Time refused{};
  // F4: the SHO the owner is moving the device to (empty: none). While set, it may place
  // attestation requests and packages for the device beside the holder; the holder stays the
  // holder until the device reports the new MCIM installed (transfer() then clears it).
  std::string successor;
};

class RegistrationStore {
 public:
  virtual ~RegistrationStore() = default;
  // Creates or replaces the registration of a PCID (F4 re-points it at a new SHO). Only the SHO
  // that holds a registration may replace or remove it: access_denied otherwise.
  virtual Result<void> put(const Registration& r) = 0;
  virtual Result<std::optional<Registration>> find(std::string_view pcid) = 0;
  virtual Result<void> remove(std::string_view pcid, std::string_view sho) = 0;
  // F5: the holder `from` hands the registration to the SHO `to` (the owner's move, which the
  // holder authorised): sho becomes `to`, created `at`, the refusal is cleared; the device, the
  // DPF fields and the bootstrap key stay, so `to` may replace them with put() as their holder.
  // One conditional update: not_found, access_denied when `from` does not hold it.
  // Also clears the successor (F4: the change it was waiting for is done).
  virtual Result<void> transfer(std::string_view pcid, std::string_view from, std::string_view to,
                                Time at) = 0;
  // F4: records `successor` as the registration's successor, replacing any earlier one; empty
  // clears it. put() keeps it. not_found without a registration.
  virtual Result<void> set_successor(std::string_view pcid, std::string_view successor) = 0;
};

// ---- Packages (the RO's DPF) -----------------------------------------------------------------

enum class PackageStatus { pending, delivered, reported };
std::string_view to_string(PackageStatus s);

struct StoredPackage {
  std::string package_id;
  std::string device_id;
  std::string sho;
  ByteVec package;  // the CMS bytes, as the SHO handed them over
  PackageStatus status = PackageStatus::pending;
  std::string report;  // the device's signed status report, once it arrived
  Time created{}, updated{};
};

class PackageStore {
 public:
  virtual ~PackageStore() = default;
  virtual Result<void> put(const StoredPackage& p) = 0;  // already_exists for a known package_id
  // The oldest pending or delivered package for a device.
  virtual Result<std::optional<StoredPackage>> next_for_device(std::string_view device_id) = 0;
  // F4: the same among the packages handed over by `sho` or `successor` (a registration's holder
  // and successor; an empty one matches none): what the DPF serves, so that a package of an SHO
  // that provisions the device no more (a successor that refused or was replaced) blocks nothing.
  virtual Result<std::optional<StoredPackage>> next_for_device_from(std::string_view device_id,
                                                                    std::string_view sho,
                                                                    std::string_view successor) = 0;
  virtual Result<std::optional<StoredPackage>> find(std::string_view package_id) = 0;
  virtual Result<void> mark_delivered(std::string_view package_id, Time at) = 0;
  // Records the report; transition_refused when already reported (a replay).
  virtual Result<void> store_report(std::string_view package_id, std::string_view report,
                                    Time at) = 0;
};

// ---- Sessions (the VNO; and "one attach at a time per PCID" at the ICF) ----------------------

struct Session {
  std::string id;    // random, 32 hex digits
  std::string imsi;  // the authenticated identity
  std::string vno;   // the visited network holding it
  bool restricted = true;  // a PCID session: only the RO (DRF, DPF) and the PVA are reachable
  Time created{}, expires{};
};

class SessionStore {
 public:
  virtual ~SessionStore() = default;
  // Atomically: refuses (already_exists, naming the VNO) when the IMSI has an unexpired session
  // anywhere; otherwise creates it (expired sessions of that IMSI are removed first).
  virtual Result<void> open(const Session& s, Time now) = 0;
  virtual Result<std::optional<Session>> find(std::string_view id) = 0;
  virtual Result<void> close(std::string_view id) = 0;
};

// ---- Audit (each service's record of what it did) --------------------------------------------

struct AuditRecord {
  std::uint64_t seq = 0;  // assigned by the store, increasing
  Time time{};
  std::string service, event, subject, principal, outcome, detail;
};

class AuditStore {
 public:
  virtual ~AuditStore() = default;
  virtual Result<std::uint64_t> append(const AuditRecord& r) = 0;  // returns seq
  virtual Result<std::vector<AuditRecord>> recent(std::size_t limit) = 0;  // newest first

  // A unit of work on the database this trail is in, so that a change and its record commit
  // together (docs/store.md "A change and its record in one transaction"). The calls `work` makes
  // on this thread to this database's ports run as they would alone until the first one that
  // writes; that one opens a transaction which every later call joins (an append too). Each call
  // in it stays all or nothing (a savepoint): one that fails leaves nothing of itself and the unit
  // goes on. The transaction commits when `work` returns success and rolls back otherwise; a unit
  // that wrote nothing has nothing to commit. Returns `work`'s error, else the commit's (or that
  // of a savepoint the store could not take or undo, which loses the unit). A unit within a unit
  // joins it. `work` may run again when the transaction met a conflict (busy), so it must be safe
  // to repeat; it must make no calls that wait on another thread's store calls, and should keep
  // what follows its first write short: the transaction holds the database's write lock (SQLite).
  // This default, for stores with nothing to roll back (memory), runs `work` as it comes.
  virtual Result<void> atomically(const std::function<Result<void>()>& work) { return work(); }
};

// ---- Attestation requests (the RO's DPF: the PVA's challenge on its way to the device) -------

// F2 step 8: the SHO of a PCID asks the RO to fetch a fresh attestation from its device; the
// device collects the request on its session and answers it, and the RO relays the answer to the
// SHO. request_id is the PVA's challenge id.
enum class AttestationStatus { pending, answered };
std::string_view to_string(AttestationStatus s);

struct AttestationRequest {
  std::string request_id;  // [A-Za-z0-9._:-]{1,64}
  std::string pcid, device_id, sho;
  ByteVec nonce;  // the PVA's challenge, 16..64 bytes
  AttestationStatus status = AttestationStatus::pending;
  Time created{}, answered{};
};

class AttestationRequestStore {
 public:
  virtual ~AttestationRequestStore() = default;
  virtual Result<void> put(const AttestationRequest& r) = 0;  // already_exists for a known id
  // The oldest pending request for a device.
  virtual Result<std::optional<AttestationRequest>> next_for_device(
      std::string_view device_id) = 0;
  // F4: the same among the requests of `sho` or `successor` (as PackageStore's).
  virtual Result<std::optional<AttestationRequest>> next_for_device_from(
      std::string_view device_id, std::string_view sho, std::string_view successor) = 0;
  virtual Result<std::optional<AttestationRequest>> find(std::string_view request_id) = 0;
  // pending -> answered at `at`, atomically: not_found; transition_refused when already answered
  // (a second answer, or two racing: exactly one wins).
  virtual Result<void> mark_answered(std::string_view request_id, Time at) = 0;
};

// ---- Subscribers (the SHO: F1 registrations and their provisioning state) --------------------

// registered (F1 done) -> validating (challenge sent through the RO) -> provisioning (package
// handed to the DPF) -> active (the device reported the install; the IMSI serves vectors), or
// refused (the PVA's or the TRE's refusal, with its code) from validating or provisioning.
enum class SubscriberStatus { registered, validating, provisioning, active, refused };
std::string_view to_string(SubscriberStatus s);

struct Subscriber {
  std::string device_id;  // unique
  std::string pcid;       // unique
  std::string owner;      // the owner's account id at the SHO
  std::string imsi;       // allocated by the SHO at registration; unique
  ByteVec platform_cert;  // DER, as the owner registered it
  Bytes<16> registration_nonce{};  // one-time; binds F1 to the install (not a secret, not logged)
  Time nonce_expires{};
  SubscriberStatus status = SubscriberStatus::registered;
  std::string challenge_id;  // the PVA challenge in flight (validating)
  ByteVec challenge_nonce;   // its nonce: the validation result must carry it
  std::string package_id;    // the package handed to the DPF (provisioning, active)
  std::string refusal;       // the error code of a refusal (refused)
  Time created{}, updated{};
  // F4: the device holds another operator's MCIM, which its TRE discards when it installs this
  // SHO's: the install report must come with the TRE's (privacy-filtered) discard notice. Set at
  // add(), never changed by update().
  bool replacing = false;
};

class SubscriberStore {
 public:
  virtual ~SubscriberStore() = default;
  // already_exists naming what is taken (device_id, pcid or imsi).
  virtual Result<void> add(const Subscriber& s) = 0;
  virtual Result<std::optional<Subscriber>> find(std::string_view device_id) = 0;
  virtual Result<std::optional<Subscriber>> find_by_pcid(std::string_view pcid) = 0;
  // Replaces status, challenge_id, challenge_nonce, package_id, refusal and updated of
  // s.device_id, atomically and only while its stored status is `expected` (compare and set:
  // two notices racing cannot both advance it): not_found; transition_refused otherwise.
  virtual Result<void> update(const Subscriber& s, SubscriberStatus expected) = 0;
  // Removes a registration (an F1 undone when the RO refused it): not_found.
  virtual Result<void> remove(std::string_view device_id) = 0;
};

// ---- Challenges (the PVA; the RO's direct access) and references (the PVA) -------------------

struct Challenge {
  std::string challenge_id;  // 32 lowercase hex digits
  // Who asked; only it may use the challenge: the SHO's operator id at the PVA, "pcid:<PCID>"
  // for the RO's direct-access nonces (roles/ro/direct.h).
  std::string sho;
  std::string device_id;
  ByteVec nonce;  // 16..64 bytes
  Time created{}, expires{};
  bool used = false;
};

class ChallengeStore {
 public:
  virtual ~ChallengeStore() = default;
  virtual Result<void> put(const Challenge& c) = 0;  // already_exists
  virtual Result<std::optional<Challenge>> find(std::string_view challenge_id) = 0;
  // Marks it used and returns it, atomically (one validation per challenge): not_found;
  // transition_refused when already used. Expiry is the caller's check (it gets `expires`).
  virtual Result<Challenge> consume(std::string_view challenge_id) = 0;
};

// The supplier-signed reference measurements of one device model, kept as signed text so the
// PVA re-verifies them when it starts.
struct StoredReferences {
  std::string model;
  Time issued{};
  std::string text;  // pki::sign_references output
  Time stored{};
};

class ReferenceStore {
 public:
  virtual ~ReferenceStore() = default;
  // Creates or replaces the model's set (the PVA refuses rollbacks before calling this).
  virtual Result<void> put(const StoredReferences& r) = 0;
  virtual Result<std::vector<StoredReferences>> all() = 0;  // by model
};

// ---- Management instructions (F9: the RO's DPF queue, the SHO's record of what it issued) ----

// At the RO: an SHO's signed instruction queued for a device, until the device's TRE answers it.
enum class InstructionStatus { pending, delivered, answered };
std::string_view to_string(InstructionStatus s);

struct QueuedInstruction {
  std::string instruction_id;  // the SHO's, [A-Za-z0-9._:-]{1,64}
  std::string pcid, device_id, sho;
  std::string instruction;  // the signed mcim-instruction/1 text, verbatim
  std::uint64_t sequence = 0;
  std::string action, credential;  // as the instruction says, for the records
  InstructionStatus status = InstructionStatus::pending;
  std::string report;  // the TRE's signed answer, once it came
  Time created{}, updated{};
};

class InstructionStore {
 public:
  virtual ~InstructionStore() = default;
  // already_exists for a known id. At most `keep` (>= 1) are kept: in the same transaction, the
  // oldest answered ones go first, then the oldest of all (by then long past the TRE's 10
  // minutes).
  virtual Result<void> put(const QueuedInstruction& q, std::size_t keep) = 0;
  virtual Result<std::optional<QueuedInstruction>> find(std::string_view instruction_id) = 0;
  // The device's unanswered instructions, oldest (first queued) first, at most `limit`; marked
  // delivered at `at` in the same statement.
  virtual Result<std::vector<QueuedInstruction>> collect(std::string_view device_id,
                                                         std::size_t limit, Time at) = 0;
  // Records the TRE's answer, compare and set: not_found; transition_refused when already
  // answered (of two racing answers exactly one wins). Returns the answered instruction.
  virtual Result<QueuedInstruction> answer(std::string_view instruction_id, std::string_view report,
                                           Time at) = 0;
  virtual Result<std::uint64_t> count() = 0;
};

// At the SHO: an instruction it signed and queued at the RO, and the TRE's answer; for F5 the
// delete of an owner's revert (revert_to: the operator the owner moves to) and whether the
// release followed it (IMSI deactivated, registration handed over, subscriber removed).
// queued -> answered, or -> released (answered "ok" for a revert, and the release done).
enum class IssuedStatus { queued, answered, released };
std::string_view to_string(IssuedStatus s);

struct IssuedInstruction {
  std::string instruction_id;  // the SHO's, unique
  std::string device_id, action, credential;
  std::uint64_t sequence = 0;
  Time created{};
  std::string owner, revert_to;  // F5 only; empty otherwise
  IssuedStatus status = IssuedStatus::queued;
  std::string report;  // the TRE's signed answer, verified before it was stored
  Time answered{};
};

class IssuedInstructionStore {
 public:
  virtual ~IssuedInstructionStore() = default;
  // already_exists for a known id; at most `keep` (>= 1) kept, as InstructionStore::put.
  virtual Result<void> put(const IssuedInstruction& i, std::size_t keep) = 0;
  virtual Result<std::optional<IssuedInstruction>> find(std::string_view instruction_id) = 0;
  // The device's latest revert (revert_to not empty), whoever's it is.
  virtual Result<std::optional<IssuedInstruction>> latest_revert(std::string_view device_id) = 0;
  // queued -> answered or released (`released`), with the report, compare and set: not_found;
  // transition_refused when answered already (of two racing answers exactly one wins).
  virtual Result<IssuedInstruction> answer(std::string_view instruction_id, std::string_view report,
                                           Time at, bool released) = 0;
};

// ---- Notices (the RO's outbox to the home operators) ------------------------------------------

// At the RO: a notice to a home operator (an arrival, an attestation, a status report, a discard,
// an instruction's result), kept from the moment the RO accepts what it reports until it is
// delivered or given up, so that a restart of the RO loses none (docs/store.md "Notices").
struct StoredNotice {
  std::uint64_t seq = 0;  // given by add: greater than every seq given before, never reused
  std::string kind;       // "arrival", "status", ... for logs and the audit
  std::string subject;    // the PCID, package id, request id or instruction id
  std::string sho;        // the operator id it goes to
  std::string path;       // the SHO's route, e.g. "/v1/sho/status"
  std::string body;       // the JSON text, verbatim
  Time created{};
};

class NoticeStore {
 public:
  virtual ~NoticeStore() = default;
  // Stores `n` (its seq is ignored) and returns its seq.
  virtual Result<std::uint64_t> add(const StoredNotice& n) = 0;
  // Removes these notices in one transaction; a seq that is not stored is ignored. How many went.
  virtual Result<std::size_t> remove(std::span<const std::uint64_t> seqs) = 0;
  // The stored notices, oldest (lowest seq) first, at most `limit`.
  virtual Result<std::vector<StoredNotice>> pending(std::size_t limit) = 0;
  virtual Result<std::uint64_t> count() = 0;
};

// ---- The database ----------------------------------------------------------------------------

class Database {
 public:
  virtual ~Database() = default;
  virtual PcidStore& pcids() = 0;
  virtual SqnStore& sqns() = 0;
  virtual RegistrationStore& registrations() = 0;
  virtual PackageStore& packages() = 0;
  virtual SessionStore& sessions() = 0;
  virtual AuditStore& audit() = 0;
  virtual AttestationRequestStore& attestation_requests() = 0;  // RO
  virtual SubscriberStore& subscribers() = 0;                    // SHO
  virtual ChallengeStore& challenges() = 0;                      // PVA
  virtual ReferenceStore& references() = 0;                      // PVA
  virtual InstructionStore& instructions() = 0;                  // RO (F9)
  virtual IssuedInstructionStore& issued_instructions() = 0;     // SHO (F9, F5)
  virtual NoticeStore& notices() = 0;                            // RO (outbox of notices)
  virtual int schema_version() = 0;
  virtual std::string_view backend() const = 0;  // "sqlite" or "postgresql"
};

// "sqlite:PATH" (":memory:" allowed), or "postgresql://..." / "postgres://..." (libpq URI).
// Creates the schema or migrates it to the current version (numbered migrations, each in one
// transaction, recorded in schema_version). invalid_argument for an unknown scheme; io_error
// when the database cannot be reached.
Result<std::unique_ptr<Database>> open_database(std::string_view url);

}  // namespace mcim::store
