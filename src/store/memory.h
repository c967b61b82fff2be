// An in-memory Database: every port over plain containers behind one mutex. For unit tests of
// the roles and for `memory:` URLs; nothing survives the process. Same semantics as the SQL
// adapters (the shared store test suite runs against it too).
#pragma once

#include <memory>

#include "store/store.h"

namespace mcim::store {

std::unique_ptr<Database> make_memory_database();

}  // namespace mcim::store
