// Whole-file reads and crash-safe writes (write to a temporary, fsync, rename, fsync the
// directory), with the file mode set before any byte is written, so a key file is never
// readable by others even for an instant. Errors name the path, never the content.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/bytes.h"
#include "common/error.h"

namespace mcim {

Result<ByteVec> read_file(const std::string& path);
// fsync of the directory holding `path`: makes a created or renamed entry durable.
Result<void> sync_directory_of(const std::string& path);
Result<std::string> read_text_file(const std::string& path);
Result<void> write_file_atomic(const std::string& path, ByteView data, mode_t mode = 0644);
inline Result<void> write_file_atomic(const std::string& path, std::string_view text,
                                      mode_t mode = 0644) {
  return write_file_atomic(
      path, ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()), mode);
}

}  // namespace mcim
