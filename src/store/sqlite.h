// The SQLite adapter of the storage port (docs/store.md): WAL, synchronous=FULL, a small pool of
// connections with their statements prepared once. Private to src/store: callers use
// open_database("sqlite:PATH").
#pragma once

#include <memory>
#include <string_view>

#include "common/error.h"
#include "store/store.h"

namespace mcim::store {

// `path` is a file name or ":memory:" (one connection, nothing survives the Database).
Result<std::unique_ptr<Database>> open_sqlite(std::string_view path);

}  // namespace mcim::store
