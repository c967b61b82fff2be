// For the tests of changes that commit with their audit records (ro::detail::audited_change)
// over a SQLite file database: a trigger that refuses some audit records stands in for a store
// that fails between a change and its record (a full disk, say). The store answers such a refusal
// (SQLITE_CONSTRAINT from RAISE(ABORT)) with invalid_argument.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "store/store.h"

namespace mcim::store::testing {

// From now on the database at `path` refuses every audit record of `service` and `event`; with
// `refuse` false, no longer. One such refusal at a time.
inline void refuse_audit_records(const std::string& path, bool refuse,
                                 std::string_view service = "", std::string_view event = "") {
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &raw), SQLITE_OK);
  const std::string sql =
      refuse ? fmt::format(
                   "CREATE TRIGGER refuse BEFORE INSERT ON audit_record WHEN NEW.service "
                   "= '{}' AND NEW.event = '{}' BEGIN SELECT RAISE(ABORT, 'refused by "
                   "the test'); END",
                   service, event)
             : std::string("DROP TRIGGER refuse");
  EXPECT_EQ(sqlite3_exec(raw, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(raw);
  sqlite3_close(raw);
}

// The audit records of `service` and `event` among the latest thousand.
inline std::size_t audit_records_of(AuditStore& audit, std::string_view service,
                                    std::string_view event) {
  auto all = audit.recent(1000);
  EXPECT_TRUE(all);
  if (!all) return 0;
  return static_cast<std::size_t>(std::count_if(
      all->begin(), all->end(),
      [&](const AuditRecord& r) { return r.service == service && r.event == event; }));
}

// The rows of `table` in the database at `path`, counted outside the store's ports.
inline std::int64_t rows_of(const std::string& path, std::string_view table) {
  sqlite3* raw = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &raw), SQLITE_OK);
  std::int64_t rows = -1;
  const std::string sql = fmt::format("SELECT count(*) FROM {}", table);
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(raw, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    rows = sqlite3_column_int64(stmt, 0);
  }
  EXPECT_GE(rows, 0) << sqlite3_errmsg(raw);
  sqlite3_finalize(stmt);
  sqlite3_close(raw);
  return rows;
}

}  // namespace mcim::store::testing
