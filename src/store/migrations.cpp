#include "store/migrations.h"

#include <array>

namespace mcim::store {
namespace {

// v1: one table per aggregate of store.h. Times are Unix seconds; K/OPc are raw 16-byte blobs.
// session.imsi is UNIQUE: SessionStore::open deletes the IMSI's expired row and inserts in one
// transaction, so the constraint means "one live session per IMSI" (docs/store.md).
constexpr std::string_view kV1Sqlite = R"sql(
CREATE TABLE pcid_subscription (
  pcid          TEXT PRIMARY KEY NOT NULL,
  batch         TEXT NOT NULL,
  k             BLOB NOT NULL CHECK (length(k) = 16),
  opc           BLOB NOT NULL CHECK (length(opc) = 16),
  ind_bits      INTEGER NOT NULL CHECK (ind_bits >= 0),
  status        TEXT NOT NULL CHECK (status IN ('dormant', 'active', 'expired')),
  dormant_until INTEGER NOT NULL,
  active_until  INTEGER NOT NULL,
  not_after     INTEGER NOT NULL
) STRICT;
CREATE TABLE sqn_state (
  imsi   TEXT PRIMARY KEY NOT NULL,
  seq_he INTEGER NOT NULL CHECK (seq_he >= 0)
) STRICT;
CREATE TABLE registration (
  pcid        TEXT PRIMARY KEY NOT NULL,
  device_id   TEXT NOT NULL,
  sho         TEXT NOT NULL,
  dpf_url     TEXT NOT NULL,
  dpf_key_pin BLOB NOT NULL CHECK (length(dpf_key_pin) = 32),
  apn         TEXT NOT NULL,
  created     INTEGER NOT NULL
) STRICT;
CREATE TABLE package (
  seq        INTEGER PRIMARY KEY,
  package_id TEXT NOT NULL UNIQUE,
  device_id  TEXT NOT NULL,
  sho        TEXT NOT NULL,
  package    BLOB NOT NULL,
  status     TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'reported')),
  report     TEXT NOT NULL,
  created    INTEGER NOT NULL,
  updated    INTEGER NOT NULL
) STRICT;
CREATE TABLE session (
  id         TEXT PRIMARY KEY NOT NULL,
  imsi       TEXT NOT NULL UNIQUE,
  vno        TEXT NOT NULL,
  restricted INTEGER NOT NULL CHECK (restricted IN (0, 1)),
  created    INTEGER NOT NULL,
  expires    INTEGER NOT NULL
) STRICT;
CREATE TABLE audit_record (
  seq       INTEGER PRIMARY KEY AUTOINCREMENT,
  at        INTEGER NOT NULL,
  service   TEXT NOT NULL,
  event     TEXT NOT NULL,
  subject   TEXT NOT NULL,
  principal TEXT NOT NULL,
  outcome   TEXT NOT NULL,
  detail    TEXT NOT NULL
) STRICT;
)sql";

constexpr std::string_view kV1Postgresql = R"sql(
CREATE TABLE pcid_subscription (
  pcid          TEXT PRIMARY KEY,
  batch         TEXT NOT NULL,
  k             BYTEA NOT NULL CHECK (octet_length(k) = 16),
  opc           BYTEA NOT NULL CHECK (octet_length(opc) = 16),
  ind_bits      INTEGER NOT NULL CHECK (ind_bits >= 0),
  status        TEXT NOT NULL CHECK (status IN ('dormant', 'active', 'expired')),
  dormant_until BIGINT NOT NULL,
  active_until  BIGINT NOT NULL,
  not_after     BIGINT NOT NULL
);
CREATE TABLE sqn_state (
  imsi   TEXT PRIMARY KEY,
  seq_he BIGINT NOT NULL CHECK (seq_he >= 0)
);
CREATE TABLE registration (
  pcid        TEXT PRIMARY KEY,
  device_id   TEXT NOT NULL,
  sho         TEXT NOT NULL,
  dpf_url     TEXT NOT NULL,
  dpf_key_pin BYTEA NOT NULL CHECK (octet_length(dpf_key_pin) = 32),
  apn         TEXT NOT NULL,
  created     BIGINT NOT NULL
);
CREATE TABLE package (
  seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  package_id TEXT NOT NULL UNIQUE,
  device_id  TEXT NOT NULL,
  sho        TEXT NOT NULL,
  package    BYTEA NOT NULL,
  status     TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'reported')),
  report     TEXT NOT NULL,
  created    BIGINT NOT NULL,
  updated    BIGINT NOT NULL
);
CREATE TABLE session (
  id         TEXT PRIMARY KEY,
  imsi       TEXT NOT NULL UNIQUE,
  vno        TEXT NOT NULL,
  restricted BOOLEAN NOT NULL,
  created    BIGINT NOT NULL,
  expires    BIGINT NOT NULL
);
CREATE TABLE audit_record (
  seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at        BIGINT NOT NULL,
  service   TEXT NOT NULL,
  event     TEXT NOT NULL,
  subject   TEXT NOT NULL,
  principal TEXT NOT NULL,
  outcome   TEXT NOT NULL,
  detail    TEXT NOT NULL
);
)sql";

// v2: partial indexes for the two scans the services run often: the F7 sweep of dormant PCIDs
// and the DPF's "next package for this device". Identical text in both dialects.
constexpr std::string_view kV2 = R"sql(
CREATE INDEX pcid_subscription_dormant ON pcid_subscription (dormant_until)
  WHERE status = 'dormant';
CREATE INDEX package_open_by_device ON package (device_id, created, seq)
  WHERE status <> 'reported';
)sql";

// v3: the DRF keeps the bootstrap MAC key (PBKDF2 of the device's PIN, roles/ro/bootstrap.h)
// with the registration. Rows from before have none: all zeros, which the DRF refuses to use.
constexpr std::string_view kV3Sqlite = R"sql(
ALTER TABLE registration ADD COLUMN bootstrap_key BLOB NOT NULL
  DEFAULT x'0000000000000000000000000000000000000000000000000000000000000000'
  CHECK (length(bootstrap_key) = 32);
)sql";
constexpr std::string_view kV3Postgresql = R"sql(
ALTER TABLE registration ADD COLUMN bootstrap_key BYTEA NOT NULL
  DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
  CHECK (length(bootstrap_key) = 32);
)sql";

// v4 (issue 7): the DPF's attestation requests (RO), the subscribers (SHO), the challenges and
// reference sets (PVA). The constraints carry the ports' promises: UNIQUE request_id and
// challenge_id make put() refuse a known id; subscriber's device_id, pcid and imsi are each
// UNIQUE, so SubscriberStore::add cannot register one twice even when two SHO instances race;
// the compare-and-set updates (subscriber status, answered, used) are conditional UPDATEs.
constexpr std::string_view kV4Sqlite = R"sql(
CREATE TABLE attestation_request (
  seq        INTEGER PRIMARY KEY,
  request_id TEXT NOT NULL UNIQUE,
  pcid       TEXT NOT NULL,
  device_id  TEXT NOT NULL,
  sho        TEXT NOT NULL,
  nonce      BLOB NOT NULL,
  status     TEXT NOT NULL CHECK (status IN ('pending', 'answered')),
  created    INTEGER NOT NULL,
  answered   INTEGER NOT NULL
) STRICT;
CREATE INDEX attestation_request_pending_by_device ON attestation_request (device_id, created, seq)
  WHERE status = 'pending';
CREATE TABLE subscriber (
  device_id          TEXT PRIMARY KEY NOT NULL,
  pcid               TEXT NOT NULL UNIQUE,
  owner              TEXT NOT NULL,
  imsi               TEXT NOT NULL UNIQUE,
  platform_cert      BLOB NOT NULL,
  registration_nonce BLOB NOT NULL CHECK (length(registration_nonce) = 16),
  nonce_expires      INTEGER NOT NULL,
  status             TEXT NOT NULL
    CHECK (status IN ('registered', 'validating', 'provisioning', 'active', 'refused')),
  challenge_id       TEXT NOT NULL,
  challenge_nonce    BLOB NOT NULL,
  package_id         TEXT NOT NULL,
  refusal            TEXT NOT NULL,
  created            INTEGER NOT NULL,
  updated            INTEGER NOT NULL
) STRICT;
CREATE TABLE challenge (
  challenge_id TEXT PRIMARY KEY NOT NULL,
  sho          TEXT NOT NULL,
  device_id    TEXT NOT NULL,
  nonce        BLOB NOT NULL,
  created      INTEGER NOT NULL,
  expires      INTEGER NOT NULL,
  used         INTEGER NOT NULL CHECK (used IN (0, 1))
) STRICT;
CREATE TABLE reference_set (
  model       TEXT PRIMARY KEY NOT NULL,
  issued      INTEGER NOT NULL,
  signed_text TEXT NOT NULL,
  stored      INTEGER NOT NULL
) STRICT;
)sql";

constexpr std::string_view kV4Postgresql = R"sql(
CREATE TABLE attestation_request (
  seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  request_id TEXT NOT NULL UNIQUE,
  pcid       TEXT NOT NULL,
  device_id  TEXT NOT NULL,
  sho        TEXT NOT NULL,
  nonce      BYTEA NOT NULL,
  status     TEXT NOT NULL CHECK (status IN ('pending', 'answered')),
  created    BIGINT NOT NULL,
  answered   BIGINT NOT NULL
);
CREATE INDEX attestation_request_pending_by_device ON attestation_request (device_id, created, seq)
  WHERE status = 'pending';
CREATE TABLE subscriber (
  device_id          TEXT PRIMARY KEY,
  pcid               TEXT NOT NULL UNIQUE,
  owner              TEXT NOT NULL,
  imsi               TEXT NOT NULL UNIQUE,
  platform_cert      BYTEA NOT NULL,
  registration_nonce BYTEA NOT NULL CHECK (octet_length(registration_nonce) = 16),
  nonce_expires      BIGINT NOT NULL,
  status             TEXT NOT NULL
    CHECK (status IN ('registered', 'validating', 'provisioning', 'active', 'refused')),
  challenge_id       TEXT NOT NULL,
  challenge_nonce    BYTEA NOT NULL,
  package_id         TEXT NOT NULL,
  refusal            TEXT NOT NULL,
  created            BIGINT NOT NULL,
  updated            BIGINT NOT NULL
);
CREATE TABLE challenge (
  challenge_id TEXT PRIMARY KEY,
  sho          TEXT NOT NULL,
  device_id    TEXT NOT NULL,
  nonce        BYTEA NOT NULL,
  created      BIGINT NOT NULL,
  expires      BIGINT NOT NULL,
  used         BOOLEAN NOT NULL
);
CREATE TABLE reference_set (
  model       TEXT PRIMARY KEY,
  issued      BIGINT NOT NULL,
  signed_text TEXT NOT NULL,
  stored      BIGINT NOT NULL
);
)sql";

// v5 (issue 7): the SHO's refusal of a registered device, which the DPF tells the device.
constexpr std::string_view kV5Sqlite = R"sql(
ALTER TABLE registration ADD COLUMN refusal TEXT NOT NULL DEFAULT '';
ALTER TABLE registration ADD COLUMN refused INTEGER NOT NULL DEFAULT 0;
)sql";
constexpr std::string_view kV5Postgresql = R"sql(
ALTER TABLE registration ADD COLUMN refusal TEXT NOT NULL DEFAULT '',
  ADD COLUMN refused BIGINT NOT NULL DEFAULT 0;
)sql";

// v6 (issue 8, F7/F8): when the dormant sweep expired a PCID, the start of its quarantine before
// a new batch may reuse it. Rows expired before v6 did so after their dormant_until, the earliest
// their expiry can have been: their quarantine is cut short by at most the sweep's interval. And
// the renewed credential staged for a PCID until its device installs it (package '' : none).
constexpr std::string_view kV6Sqlite = R"sql(
ALTER TABLE pcid_subscription ADD COLUMN expired_at INTEGER NOT NULL DEFAULT 0;
UPDATE pcid_subscription SET expired_at = dormant_until WHERE status = 'expired';
ALTER TABLE pcid_subscription ADD COLUMN renewal_package TEXT NOT NULL DEFAULT '';
ALTER TABLE pcid_subscription ADD COLUMN renewal_k BLOB NOT NULL
  DEFAULT x'00000000000000000000000000000000' CHECK (length(renewal_k) = 16);
ALTER TABLE pcid_subscription ADD COLUMN renewal_opc BLOB NOT NULL
  DEFAULT x'00000000000000000000000000000000' CHECK (length(renewal_opc) = 16);
ALTER TABLE pcid_subscription ADD COLUMN renewal_not_after INTEGER NOT NULL DEFAULT 0;
)sql";
constexpr std::string_view kV6Postgresql = R"sql(
ALTER TABLE pcid_subscription ADD COLUMN expired_at BIGINT NOT NULL DEFAULT 0;
UPDATE pcid_subscription SET expired_at = dormant_until WHERE status = 'expired';
ALTER TABLE pcid_subscription ADD COLUMN renewal_package TEXT NOT NULL DEFAULT '',
  ADD COLUMN renewal_k BYTEA NOT NULL DEFAULT '\x00000000000000000000000000000000'::bytea
    CHECK (octet_length(renewal_k) = 16),
  ADD COLUMN renewal_opc BYTEA NOT NULL DEFAULT '\x00000000000000000000000000000000'::bytea
    CHECK (octet_length(renewal_opc) = 16),
  ADD COLUMN renewal_not_after BIGINT NOT NULL DEFAULT 0;
)sql";

// v7 (issue 8, F4): the SHO a registered device is moving to, and whether a SHO's subscriber
// replaces another operator's MCIM.
constexpr std::string_view kV7Sqlite = R"sql(
ALTER TABLE registration ADD COLUMN successor TEXT NOT NULL DEFAULT '';
ALTER TABLE subscriber ADD COLUMN replacing INTEGER NOT NULL DEFAULT 0 CHECK (replacing IN (0, 1));
)sql";
constexpr std::string_view kV7Postgresql = R"sql(
ALTER TABLE registration ADD COLUMN successor TEXT NOT NULL DEFAULT '';
ALTER TABLE subscriber ADD COLUMN replacing BOOLEAN NOT NULL DEFAULT false;
)sql";

// v8 (F9, F5): the remote-management records, which lived in each service's memory. At the RO the
// SHOs' instructions queued for devices and the TREs' answers; at the SHO the instructions it
// issued, their answers and the reverts (revert_to, owner). The UNIQUE instruction_id makes put()
// refuse a known id; the answers are conditional UPDATEs (compare and set). seq orders both
// tables (oldest first: collect's order, and the order in which put() prunes beyond its bound);
// the partial indexes serve the device's collect, the pruning of answered rows and the owner's
// latest revert.
constexpr std::string_view kV8Sqlite = R"sql(
CREATE TABLE instruction (
  seq            INTEGER PRIMARY KEY,
  instruction_id TEXT NOT NULL UNIQUE,
  pcid           TEXT NOT NULL,
  device_id      TEXT NOT NULL,
  sho            TEXT NOT NULL,
  instruction    TEXT NOT NULL,
  sequence       INTEGER NOT NULL CHECK (sequence >= 0),
  action         TEXT NOT NULL,
  credential     TEXT NOT NULL,
  status         TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'answered')),
  report         TEXT NOT NULL,
  created        INTEGER NOT NULL,
  updated        INTEGER NOT NULL
) STRICT;
CREATE INDEX instruction_open_by_device ON instruction (device_id, seq)
  WHERE status <> 'answered';
CREATE INDEX instruction_answered ON instruction (seq) WHERE status = 'answered';
CREATE TABLE issued_instruction (
  seq            INTEGER PRIMARY KEY,
  instruction_id TEXT NOT NULL UNIQUE,
  device_id      TEXT NOT NULL,
  action         TEXT NOT NULL,
  credential     TEXT NOT NULL,
  sequence       INTEGER NOT NULL CHECK (sequence >= 0),
  created        INTEGER NOT NULL,
  owner          TEXT NOT NULL,
  revert_to      TEXT NOT NULL,
  status         TEXT NOT NULL CHECK (status IN ('queued', 'answered', 'released')),
  report         TEXT NOT NULL,
  answered       INTEGER NOT NULL
) STRICT;
CREATE INDEX issued_instruction_revert_by_device ON issued_instruction (device_id, seq)
  WHERE revert_to <> '';
CREATE INDEX issued_instruction_answered ON issued_instruction (seq) WHERE status <> 'queued';
)sql";
constexpr std::string_view kV8Postgresql = R"sql(
CREATE TABLE instruction (
  seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  instruction_id TEXT NOT NULL UNIQUE,
  pcid           TEXT NOT NULL,
  device_id      TEXT NOT NULL,
  sho            TEXT NOT NULL,
  instruction    TEXT NOT NULL,
  sequence       BIGINT NOT NULL CHECK (sequence >= 0),
  action         TEXT NOT NULL,
  credential     TEXT NOT NULL,
  status         TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'answered')),
  report         TEXT NOT NULL,
  created        BIGINT NOT NULL,
  updated        BIGINT NOT NULL
);
CREATE INDEX instruction_open_by_device ON instruction (device_id, seq)
  WHERE status <> 'answered';
CREATE INDEX instruction_answered ON instruction (seq) WHERE status = 'answered';
CREATE TABLE issued_instruction (
  seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  instruction_id TEXT NOT NULL UNIQUE,
  device_id      TEXT NOT NULL,
  action         TEXT NOT NULL,
  credential     TEXT NOT NULL,
  sequence       BIGINT NOT NULL CHECK (sequence >= 0),
  created        BIGINT NOT NULL,
  owner          TEXT NOT NULL,
  revert_to      TEXT NOT NULL,
  status         TEXT NOT NULL CHECK (status IN ('queued', 'answered', 'released')),
  report         TEXT NOT NULL,
  answered       BIGINT NOT NULL
);
CREATE INDEX issued_instruction_revert_by_device ON issued_instruction (device_id, seq)
  WHERE revert_to <> '';
CREATE INDEX issued_instruction_answered ON issued_instruction (seq) WHERE status <> 'queued';
)sql";

// v9: the RO's outbox of notices to the home operators (docs/store.md "Notices"), which lived in
// the RO's memory: a notice is stored when the RO accepts what it reports and removed once it is
// delivered or given up, so that a restart of the RO loses none. seq orders the outbox (oldest
// first) and is never reused: AUTOINCREMENT in SQLite (a plain INTEGER PRIMARY KEY would give the
// highest seq again once its row was removed), an identity in PostgreSQL.
constexpr std::string_view kV9Sqlite = R"sql(
CREATE TABLE notice (
  seq     INTEGER PRIMARY KEY AUTOINCREMENT,
  kind    TEXT NOT NULL,
  subject TEXT NOT NULL,
  sho     TEXT NOT NULL,
  path    TEXT NOT NULL,
  body    TEXT NOT NULL,
  created INTEGER NOT NULL
) STRICT;
)sql";
constexpr std::string_view kV9Postgresql = R"sql(
CREATE TABLE notice (
  seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind    TEXT NOT NULL,
  subject TEXT NOT NULL,
  sho     TEXT NOT NULL,
  path    TEXT NOT NULL,
  body    TEXT NOT NULL,
  created BIGINT NOT NULL
);
)sql";

constexpr std::array kMigrations = {
    Migration{1, "tables of the ICF, DRF, DPF, VNO and audit", kV1Sqlite, kV1Postgresql},
    Migration{2, "indexes for the dormant sweep and open packages", kV2, kV2},
    Migration{3, "the bootstrap key of a registration", kV3Sqlite, kV3Postgresql},
    Migration{4, "attestation requests, subscribers, challenges and reference sets", kV4Sqlite,
              kV4Postgresql},
    Migration{5, "the SHO's refusal of a registered device", kV5Sqlite, kV5Postgresql},
    Migration{6, "a PCID's expiry time and its staged renewal", kV6Sqlite, kV6Postgresql},
    Migration{7, "a registration's successor and a subscriber replacing another's MCIM (F4)",
              kV7Sqlite, kV7Postgresql},
    Migration{8, "remote-management instructions at the RO and at the SHO (F9, F5)", kV8Sqlite,
              kV8Postgresql},
    Migration{9, "the RO's outbox of notices to home operators", kV9Sqlite, kV9Postgresql},
};

}  // namespace

std::span<const Migration> migrations() { return kMigrations; }

int latest_schema_version() { return kMigrations.back().version; }

}  // namespace mcim::store
