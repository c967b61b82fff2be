// The numbered schema migrations of the SQL adapters, one logical schema in two dialects
// (docs/store.md). Each migration is applied in one transaction and recorded in schema_version;
// a database whose version is above latest_schema_version() is refused (unsupported). Append
// new migrations at the end; never edit one that has shipped.
#pragma once

#include <span>
#include <string_view>

namespace mcim::store {

struct Migration {
  int version;
  std::string_view description;
  std::string_view sqlite;      // one or more statements, no values
  std::string_view postgresql;  // the same change in PostgreSQL's dialect
};

// The table every adapter creates first; its rows are the applied migrations.
inline constexpr std::string_view kSchemaVersionSqlite =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY NOT NULL,"
    " applied_at INTEGER NOT NULL,"
    " description TEXT NOT NULL) STRICT";
inline constexpr std::string_view kSchemaVersionPostgresql =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY,"
    " applied_at BIGINT NOT NULL,"
    " description TEXT NOT NULL)";

std::span<const Migration> migrations();  // ascending, 1..latest without gaps
int latest_schema_version();

}  // namespace mcim::store
