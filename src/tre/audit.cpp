#include "tre/audit.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "common/file.h"
#include "common/hex.h"
#include "pki/signed_json.h"

namespace mcim::tre {
namespace {

using pki::Json;

// The type tag keeps an audit signature from being passed off as any other platform-signed
// document (a status report, an attestation report) and the reverse.
constexpr std::string_view kAuditType = "mcim-audit/1";
constexpr std::string_view kWhat = "audit entry";  // the envelope, in messages
constexpr std::string_view kPath = "entry";        // its members
constexpr std::size_t kMaxDetail = 256;
// Integers above 2^53 are not exact in every JSON reader.
constexpr std::uint64_t kMaxSeq = (std::uint64_t{1} << 53) - 1;
// An entry at its limits (four 128-byte tokens, a detail of escaped quotes) is under 2 KiB; a
// longer line is refused before parsing.
constexpr std::size_t kMaxLine = 4096;

// ---- The detail: printable UTF-8 only, at most 256 bytes --------------------------------------

// Length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong forms, surrogates or
// values above U+10FFFF) and its code point; 0 when ill-formed.
std::size_t utf8_char(std::string_view s, std::size_t i, char32_t& cp) {
  const auto lead = static_cast<unsigned char>(s[i]);
  if (lead < 0x80) {
    cp = lead;
    return 1;
  }
  const std::size_t n = lead >= 0xf8   ? 0
                        : lead >= 0xf0 ? 4
                        : lead >= 0xe0 ? 3
                        : lead >= 0xc0 ? 2
                                       : 0;
  if (n == 0 || i + n > s.size()) return 0;
  cp = lead & (0x7fu >> n);
  for (std::size_t k = 1; k < n; ++k) {
    const auto next = static_cast<unsigned char>(s[i + k]);
    if ((next & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (next & 0x3fu);
  }
  constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  return cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? 0 : n;
}

// Controls (C0, DEL, C1) and the invisible characters that break or reorder a displayed line
// (zero-width and direction marks, line and paragraph separators, bidi embeddings and
// isolates) would let a detail disguise the lines around it in a terminal or viewer.
bool printable(char32_t cp) {
  if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) return false;
  return !((cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
           (cp >= 0x2066 && cp <= 0x2069));
}

// What is signed: every ill-formed byte and unprintable character becomes '?', then the text is
// cut to 256 bytes at a character boundary. Decoding accepts only a detail this leaves unchanged.
std::string clean_detail(std::string_view in) {
  std::string out;
  for (std::size_t i = 0; i < in.size();) {
    char32_t cp = 0;
    const std::size_t n = utf8_char(in, i, cp);
    const std::string_view piece = n != 0 && printable(cp) ? in.substr(i, n) : "?";
    if (out.size() + piece.size() > kMaxDetail) break;
    out += piece;
    i += n != 0 ? n : 1;
  }
  return out;
}

// ---- The entry ------------------------------------------------------------------------------

Json entry_json(const AuditEntry& e) {
  Json j = Json::object();
  j["type"] = kAuditType;
  j["seq"] = e.seq;
  // A negative time wraps to a value above kMaxUtcSeconds, which decoding refuses.
  j["time"] = static_cast<std::uint64_t>(pki::utc_seconds(e.time));
  j["event"] = e.event.event;
  j["subject"] = e.event.subject;
  j["principal"] = e.event.principal;
  j["outcome"] = e.event.outcome;
  j["detail"] = clean_detail(e.event.detail);
  j["prev"] = to_hex(e.prev);
  return j;
}

Result<void> token_into(const Json& j, std::string_view key, std::string& out) {
  auto v = pki::token_member(j, kPath, key);
  if (!v) return std::unexpected(v.error());
  out = std::move(*v);
  return {};
}

Result<AuditEntry> decode_entry(const Json& j) {
  if (auto r = pki::expect_members(
          j, kPath,
          {"detail", "event", "outcome", "prev", "principal", "seq", "subject", "time", "type"});
      !r) {
    return std::unexpected(r.error());
  }
  if (auto r = pki::type_member(j, kPath, kAuditType); !r) return std::unexpected(r.error());
  AuditEntry out;
  for (auto [key, field] :
       {std::pair{"event", &out.event.event}, std::pair{"subject", &out.event.subject},
        std::pair{"principal", &out.event.principal}, std::pair{"outcome", &out.event.outcome}}) {
    if (auto r = token_into(j, key, *field); !r) return std::unexpected(r.error());
  }
  auto detail = pki::string_member(j, kPath, "detail");
  if (!detail) return std::unexpected(detail.error());
  if (clean_detail(**detail) != **detail) {
    return std::unexpected(pki::bad(
        fmt::format("entry.detail: must be at most {} bytes of printable characters", kMaxDetail)));
  }
  out.event.detail = **detail;
  auto seq = pki::uint_member(j, kPath, "seq", 1, kMaxSeq);
  if (!seq) return std::unexpected(seq.error());
  out.seq = *seq;
  auto time = pki::time_member(j, kPath, "time");
  if (!time) return std::unexpected(time.error());
  out.time = *time;
  auto prev = pki::hex_member(j, kPath, "prev", 32, 32);
  if (!prev) return std::unexpected(prev.error());
  std::copy(prev->begin(), prev->end(), out.prev.begin());
  return out;
}

// bad_format for anything but an exact encoder output, signature_invalid for a good encoding
// under another key or over other bytes.
Result<AuditEntry> decode_line(std::string_view line, EVP_PKEY* key) {
  if (line.size() > kMaxLine) {
    return std::unexpected(pki::bad(fmt::format("longer than {} bytes", kMaxLine)));
  }
  auto env = pki::decode_envelope(line, kWhat, "entry", /*with_certificates=*/false);
  if (!env) return std::unexpected(env.error());
  auto entry = decode_entry(env->doc["entry"]);
  if (!entry) return std::unexpected(entry.error());
  auto inner = pki::canonical_inner(*env, line, kWhat, "entry");
  if (!inner) return std::unexpected(inner.error());
  if (!pki::verify_bytes(key, *inner, env->signature)) {
    return fail(ErrorCode::signature_invalid, "signature does not verify");
  }
  return entry;
}

std::unexpected<Error> tampered(std::size_t line, std::string_view problem) {
  return fail(ErrorCode::store_tampered, fmt::format("audit.log line {}: {}", line, problem));
}

// ---- Files ------------------------------------------------------------------------------------

Error io_failure(std::string_view what, const std::string& path) {
  const int e = errno;
  return Error(ErrorCode::io_error, fmt::format("{} {}: {}", what, path, std::strerror(e)));
}

// Closes on every early return; close() is called explicitly where its result matters.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int close() { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_;
};

Result<void> write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::unexpected(io_failure("cannot write", path));
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

}  // namespace

Result<std::string> sign_audit_entry(const AuditEntry& entry, EVP_PKEY* platform_key) {
  if (platform_key == nullptr) return fail(ErrorCode::missing_argument, "audit entry: no key");
  const Json j = entry_json(entry);
  // Checked by the decoder itself, so the TRE never writes a line it would refuse to read.
  if (auto r = decode_entry(j); !r) {
    return fail(ErrorCode::invalid_argument, "audit " + r.error().message);
  }
  return pki::sign_envelope("entry", j, platform_key);
}

Bytes<32> audit_line_hash(std::string_view line) {
  return pki::sha256(ByteView(reinterpret_cast<const std::uint8_t*>(line.data()), line.size()));
}

Result<AuditLog> verify_audit_log(std::string_view text, EVP_PKEY* platform_key) {
  if (platform_key == nullptr) return fail(ErrorCode::missing_argument, "audit.log: no key");
  AuditLog log;
  for (std::size_t number = 1; !text.empty(); ++number) {
    const std::size_t end = text.find('\n');
    if (end == std::string_view::npos) return tampered(number, "torn last line (no newline)");
    const std::string_view line = text.substr(0, end);
    text.remove_prefix(end + 1);
    auto entry = decode_line(line, platform_key);
    if (!entry) {
      return tampered(number, entry.error().code == ErrorCode::bad_format
                                  ? "not a valid entry: " + entry.error().message
                                  : entry.error().message);
    }
    if (entry->seq != number) {
      return tampered(number, fmt::format("sequence {} expected, got {}", number, entry->seq));
    }
    if (entry->prev != log.last_hash) {
      return tampered(number, number == 1 ? std::string("prev of the first entry is not zeros")
                                          : fmt::format("prev does not name line {}", number - 1));
    }
    log.last_hash = audit_line_hash(line);
    log.entries.push_back(std::move(*entry));
  }
  return log;
}

Result<std::string> AuditFile::read() const {
  auto text = read_text_file(path_);
  if (!text && text.error().code == ErrorCode::not_found) return std::string();
  if (!text) return fail(ErrorCode::io_error, text.error().message);
  return text;
}

Result<bool> AuditFile::repair_torn_tail() {
  auto text = read();
  if (!text) return std::unexpected(text.error());
  if (text->empty() || text->back() == '\n') return false;
  const std::size_t last = text->rfind('\n');
  const off_t keep = last == std::string::npos ? 0 : static_cast<off_t>(last + 1);
  Fd fd(::open(path_.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.get() < 0) return std::unexpected(io_failure("cannot open", path_));
  if (::ftruncate(fd.get(), keep) != 0) {
    return std::unexpected(io_failure("cannot truncate", path_));
  }
  if (::fsync(fd.get()) != 0 || fd.close() != 0) {
    return std::unexpected(io_failure("cannot sync", path_));
  }
  return true;
}

Result<void> AuditFile::append(std::string_view line) {
  if (line.find('\n') != std::string_view::npos) {
    return fail(ErrorCode::invalid_argument, "audit line: contains a newline");
  }
  // The file is there at every append but the first: opened as it is, and created (O_EXCL, to
  // know that this append made it and must sync the directory) only when it is absent.
  constexpr int kFlags = O_WRONLY | O_APPEND | O_CLOEXEC;
  bool created = false;
  int raw = ::open(path_.c_str(), kFlags);
  if (raw < 0 && errno == ENOENT) {
    created = true;
    raw = ::open(path_.c_str(), kFlags | O_CREAT | O_EXCL, 0600);
    if (raw < 0 && errno == EEXIST) {  // made meanwhile by someone else: append to it
      created = false;
      raw = ::open(path_.c_str(), kFlags);
    }
  }
  Fd fd(raw);
  if (fd.get() < 0) return std::unexpected(io_failure("cannot open", path_));
  // The umask may have removed bits from 0600 (never added any): the TRE must still write it.
  if (created && ::fchmod(fd.get(), 0600) != 0) {
    return std::unexpected(io_failure("cannot set the mode of", path_));
  }
  std::string record;
  record.reserve(line.size() + 1);
  record.append(line).push_back('\n');
  if (auto r = write_all(fd.get(), record, path_); !r) return r;
  if (::fsync(fd.get()) != 0 || fd.close() != 0) {
    return std::unexpected(io_failure("cannot sync", path_));
  }
  return created ? sync_directory_of(path_) : Result<void>();
}

}  // namespace mcim::tre
