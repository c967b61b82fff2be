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

constexpr std::array kMigrations = {
    Migration{1, "tables of the ICF, DRF, DPF, VNO and audit", kV1Sqlite, kV1Postgresql},
    Migration{2, "indexes for the dormant sweep and open packages", kV2, kV2},
    Migration{3, "the bootstrap key of a registration", kV3Sqlite, kV3Postgresql},
};

}  // namespace

std::span<const Migration> migrations() { return kMigrations; }

int latest_schema_version() { return kMigrations.back().version; }

}  // namespace mcim::store
