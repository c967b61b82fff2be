// The PostgreSQL adapter of the storage port (docs/store.md): libpq, a pool of connections with
// their statements prepared once, every method one transaction, serialisation failures and
// deadlocks retried. Private to src/store: callers use open_database("postgresql://...").
#pragma once

#include <memory>
#include <string_view>

#include "common/error.h"
#include "store/store.h"

namespace mcim::store {

// `url` is a libpq connection URI (postgresql:// or postgres://).
Result<std::unique_ptr<Database>> open_postgres(std::string_view url);

}  // namespace mcim::store
