// The TRE's append-only audit log (DESIGN.md §3, docs/tre.md "Audit log"): one signed JSON line
// per event, each naming the SHA-256 of the line before it, so that editing, deleting, inserting
// or reordering any line breaks either a signature or the chain, and the sealed state's audit
// head (sequence and hash of the last line) catches a truncated tail. Lines hold no secrets:
// ids, stakeholders, outcomes (error codes) and short messages.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.h"
#include "common/error.h"
#include "pki/openssl.h"

namespace mcim::tre {

struct AuditEvent {
  std::string event;      // token: init, install, activate, select, ..., boot-check, lockdown
  std::string subject;    // token: the credential id, or "-"
  std::string principal;  // token: "device", "operator:<id>", "tre"
  std::string outcome;    // "ok" or an error code's wire name
  std::string detail;     // up to 256 printable characters (truncated), never a secret
};

struct AuditEntry {
  std::uint64_t seq = 0;  // 1, 2, 3, ...
  std::chrono::sys_seconds time{};
  AuditEvent event;
  Bytes<32> prev{};  // SHA-256 of the previous line; zeros for the first entry
};

// {"entry":{"detail":…,"event":…,"outcome":…,"prev":"<hex>","principal":…,"seq":n,
// "subject":…,"time":n,"type":"mcim-audit/1"},"signature":"<DER ECDSA hex>"}, canonical JSON
// (pki/signed_json.h), no newline. invalid_argument for a field outside its limits.
Result<std::string> sign_audit_entry(const AuditEntry& entry, EVP_PKEY* platform_key);

// SHA-256 of one line's text (without its newline): what the next entry's prev names.
Bytes<32> audit_line_hash(std::string_view line);

struct AuditLog {
  std::vector<AuditEntry> entries;
  Bytes<32> last_hash{};  // zeros when empty
};

// Verifies a whole log (every line ends with '\n'): each line decodes strictly and is signed by
// `platform_key` (its public half is enough), sequences run 1, 2, 3, ... and each prev is the
// hash of the line before. store_tampered naming the first bad line ("audit.log line 7: ...").
Result<AuditLog> verify_audit_log(std::string_view text, EVP_PKEY* platform_key);

// audit.log on disk. Appends are single write(2) calls of line + '\n' with O_APPEND followed by
// fsync; a crash may leave a partial last line, which repair_torn_tail removes.
class AuditFile {
 public:
  explicit AuditFile(std::string path) : path_(std::move(path)) {}

  // The whole file; an absent file reads as empty.
  Result<std::string> read() const;
  // Truncates a last line that has no newline (a torn append); true when it did.
  Result<bool> repair_torn_tail();
  // invalid_argument when `line` contains a newline.
  Result<void> append(std::string_view line);

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace mcim::tre
