#include "common/file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/secure.h"

namespace mcim {
namespace {

Error io_failure(std::string_view what, const std::string& path) {
  const int e = errno;
  return Error(e == ENOENT ? ErrorCode::not_found : ErrorCode::io_error,
               fmt::format("{} {}: {}", what, path, std::strerror(e)));
}

std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

Result<void> sync_directory_of(const std::string& path) {
  const std::string dir = directory_of(path);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return std::unexpected(io_failure("cannot open the directory", dir));
  const bool ok = ::fsync(fd) == 0;
  auto err = ok ? Error(ErrorCode::internal, "") : io_failure("cannot sync the directory", dir);
  ::close(fd);
  if (!ok) return std::unexpected(err);
  return {};
}

Result<ByteVec> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::unexpected(io_failure("cannot open", path));
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    return fail(ErrorCode::io_error, fmt::format("{} is a directory", path));
  }
  ByteVec out;
  std::uint8_t buf[16384];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      auto err = io_failure("cannot read", path);
      ::close(fd);
      return std::unexpected(err);
    }
    out.insert(out.end(), buf, buf + n);
  }
  ::close(fd);
  // The file may be a key or a bundle: no copy of it stays on the stack.
  secure_wipe(buf, sizeof buf);
  return out;
}

Result<std::string> read_text_file(const std::string& path) {
  auto bytes = read_file(path);
  if (!bytes) return std::unexpected(bytes.error());
  return std::string(bytes->begin(), bytes->end());
}

Result<void> write_file_atomic(const std::string& path, ByteView data, mode_t mode) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return std::unexpected(io_failure("cannot create", tmp));
  ::fchmod(fd, mode);  // the umask may have removed bits; never added any
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      auto err = io_failure("cannot write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return std::unexpected(err);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    auto err = io_failure("cannot sync", tmp);
    ::unlink(tmp.c_str());
    return std::unexpected(err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto err = io_failure("cannot rename to", path);
    ::unlink(tmp.c_str());
    return std::unexpected(err);
  }
  // The rename is durable only once the directory is: a failure here is reported, since the
  // caller's crash-safety (the TRE's state, a CA's index) rests on it.
  return sync_directory_of(path);
}

}  // namespace mcim
