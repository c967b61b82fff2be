#include "common/error.h"

namespace mcim {

std::string_view to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::missing_argument: return "missing_argument";
    case ErrorCode::conflicting_arguments: return "conflicting_arguments";
    case ErrorCode::mac_mismatch: return "mac_mismatch";
    case ErrorCode::sqn_out_of_range: return "sqn_out_of_range";
    case ErrorCode::sqn_exhausted: return "sqn_exhausted";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::internal: return "internal";
  }
  return "internal";
}

}  // namespace mcim
