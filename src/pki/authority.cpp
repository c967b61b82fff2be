#include "pki/authority.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/x509v3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <ctime>
#include <sstream>

#include "common/file.h"

namespace mcim::pki {
namespace {

constexpr std::array kReasons = {
    std::pair{RevocationReason::unspecified, "unspecified"},
    std::pair{RevocationReason::key_compromise, "keyCompromise"},
    std::pair{RevocationReason::ca_compromise, "CACompromise"},
    std::pair{RevocationReason::affiliation_changed, "affiliationChanged"},
    std::pair{RevocationReason::superseded, "superseded"},
    std::pair{RevocationReason::cessation_of_operation, "cessationOfOperation"},
    std::pair{RevocationReason::certificate_hold, "certificateHold"},
};

std::string utc_time(TimePoint t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%y%m%d%H%M%SZ", &tm);
  return buf;
}

Result<TimePoint> parse_utc_time(std::string_view s) {
  if (s.size() != 13 || s.back() != 'Z') {
    return fail(ErrorCode::bad_format, "index.txt: time is not YYMMDDHHMMSSZ");
  }
  std::tm tm{};
  const std::string text(s);
  if (strptime(text.c_str(), "%y%m%d%H%M%SZ", &tm) == nullptr) {
    return fail(ErrorCode::bad_format, "index.txt: time is not YYMMDDHHMMSSZ");
  }
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::vector<std::string_view> split_tabs(std::string_view line) {
  std::vector<std::string_view> out;
  for (;;) {
    const auto tab = line.find('\t');
    out.push_back(line.substr(0, tab));
    if (tab == std::string_view::npos) break;
    line.remove_prefix(tab + 1);
  }
  return out;
}

std::string path_in(const std::string& dir, std::string_view name) {
  return fmt::format("{}/{}", dir, name);
}

// An exclusive advisory lock on <dir>/index.lock for the lifetime of the object.
class DirLock {
 public:
  explicit DirLock(const std::string& dir)
      : fd_(::open(path_in(dir, "index.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (fd_ >= 0) ::flock(fd_, LOCK_EX);
  }
  ~DirLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

Result<std::vector<IndexEntry>> read_index(const std::string& dir) {
  auto text = read_text_file(path_in(dir, "index.txt"));
  if (!text) return std::unexpected(text.error());
  return parse_index(*text);
}

std::string chain_pem(const std::vector<X509Ptr>& chain) {
  std::string out;
  for (const auto& c : chain) out += certificate_pem(c.get()).value_or("");
  return out;
}

}  // namespace

Result<RevocationReason> parse_revocation_reason(std::string_view name) {
  for (const auto& [reason, n] : kReasons) {
    if (name == n) return reason;
  }
  return fail(ErrorCode::invalid_argument,
              "--reason: one of unspecified keyCompromise CACompromise affiliationChanged "
              "superseded cessationOfOperation certificateHold");
}

std::string_view index_name(RevocationReason r) {
  for (const auto& [reason, n] : kReasons) {
    if (reason == r) return n;
  }
  return "unspecified";
}

Result<std::vector<IndexEntry>> parse_index(std::string_view text) {
  std::vector<IndexEntry> out;
  std::size_t line_no = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    if (line.empty()) continue;
    const auto f = split_tabs(line);
    if (f.size() != 6 || f[0].size() != 1 ||
        std::string_view("VRE").find(f[0][0]) == std::string_view::npos) {
      return fail(ErrorCode::bad_format,
                  fmt::format("index.txt line {}: not an index entry", line_no));
    }
    IndexEntry e;
    e.status = f[0][0];
    auto expiry = parse_utc_time(f[1]);
    if (!expiry) return std::unexpected(expiry.error());
    e.expiry = *expiry;
    if (!f[2].empty()) {
      const auto comma = f[2].find(',');
      auto at = parse_utc_time(f[2].substr(0, comma));
      if (!at) return std::unexpected(at.error());
      e.revoked_at = *at;
      if (comma != std::string_view::npos) {
        auto reason = parse_revocation_reason(f[2].substr(comma + 1));
        if (!reason)
          return fail(ErrorCode::bad_format, fmt::format("index.txt line {}: reason", line_no));
        e.reason = *reason;
      }
    }
    e.serial = std::string(f[3]);
    e.subject = std::string(f[5]);
    out.push_back(std::move(e));
  }
  return out;
}

std::string format_index(const std::vector<IndexEntry>& entries) {
  std::string out;
  for (const auto& e : entries) {
    std::string revoked;
    if (e.revoked_at) revoked = utc_time(*e.revoked_at) + "," + std::string(index_name(e.reason));
    out += fmt::format("{}\t{}\t{}\t{}\tunknown\t{}\n", e.status, utc_time(e.expiry), revoked,
                       e.serial, e.subject);
  }
  return out;
}

std::string index_serial(const X509* cert) {
  std::string s = serial_hex(cert);
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

IndexEntry index_entry_for(const X509* cert) {
  IndexEntry e;
  e.status = 'V';
  e.expiry = not_after(cert);
  e.serial = index_serial(cert);
  char* one = X509_NAME_oneline(X509_get_subject_name(cert), nullptr, 0);
  e.subject = one != nullptr ? one : "";
  OPENSSL_free(one);
  return e;
}

Result<Authority> Authority::create(const std::string& dir, std::string_view name,
                                    const Authority* parent, int days, std::string_view ocsp_url,
                                    const Clock& clock, RandomSource& random) {
  if (name.empty() || name.find_first_of(",/=") != std::string_view::npos) {
    return fail(ErrorCode::invalid_argument, "--name: required, without , / or =");
  }
  if (days < 1 || days > 36500) return fail(ErrorCode::invalid_argument, "--days: must be 1..36500");
  if (::access(path_in(dir, "ca.pem").c_str(), F_OK) == 0) {
    return fail(ErrorCode::already_exists, fmt::format("{} already holds a CA", dir));
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail(ErrorCode::io_error,
                fmt::format("cannot create {}: {}", dir, std::strerror(errno)));
  }
  if (::mkdir(path_in(dir, "certs").c_str(), 0755) != 0 && errno != EEXIST) {
    return fail(ErrorCode::io_error, fmt::format("cannot create {}/certs", dir));
  }
  auto key = generate_p256_key();
  if (!key) return std::unexpected(key.error());
  CertSpec spec;
  spec.profile = parent ? Profile::intermediate_ca : Profile::root_ca;
  spec.subject = fmt::format("CN={},O=mcim", name);
  spec.ocsp_url = std::string(ocsp_url);
  spec.days = days;
  auto cert = parent ? parent->issue_for_key(spec, key->get(), clock, random)
                     : issue_certificate(spec, key->get(), nullptr, nullptr, clock, random);
  if (!cert) return std::unexpected(cert.error());
  std::vector<X509Ptr> chain;
  chain.push_back(up_ref(cert->get()));
  if (parent) {
    for (const auto& c : parent->chain()) chain.push_back(up_ref(c.get()));
  }
  if (auto r = write_private_key(path_in(dir, "ca.key"), key->get()); !r)
    return std::unexpected(r.error());
  if (auto r = write_file_atomic(path_in(dir, "chain.pem"), chain_pem(chain)); !r)
    return std::unexpected(r.error());
  if (auto r = write_file_atomic(path_in(dir, "index.txt"), std::string_view()); !r)
    return std::unexpected(r.error());
  if (auto r = write_file_atomic(path_in(dir, "index.txt.attr"),
                                 std::string_view("unique_subject = no\n"));
      !r) {
    return std::unexpected(r.error());
  }
  // ca.pem last: its presence marks a complete CA directory.
  if (auto r = write_certificate(path_in(dir, "ca.pem"), cert->get()); !r)
    return std::unexpected(r.error());
  return Authority(dir, std::move(*cert), std::move(*key), std::move(chain));
}

Result<Authority> Authority::open(const std::string& dir) {
  auto cert = load_certificate(path_in(dir, "ca.pem"));
  if (!cert) return std::unexpected(cert.error());
  auto key = load_private_key(path_in(dir, "ca.key"));
  if (!key) return std::unexpected(key.error());
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    return std::unexpected(
        openssl_error(ErrorCode::bad_format, fmt::format("{}: ca.key does not match ca.pem", dir)));
  }
  auto chain = load_certificates(path_in(dir, "chain.pem"));
  if (!chain) return std::unexpected(chain.error());
  return Authority(dir, std::move(*cert), std::move(*key), std::move(*chain));
}

Result<X509Ptr> Authority::issue_for_key(const CertSpec& spec, EVP_PKEY* key, const Clock& clock,
                                         RandomSource& random) const {
  auto cert = issue_certificate(spec, key, cert_.get(), key_.get(), clock, random);
  if (!cert) return std::unexpected(cert.error());
  if (auto r = record(cert->get()); !r) return std::unexpected(r.error());
  return cert;
}

Result<Issued> Authority::issue(const CertSpec& spec, const Clock& clock,
                                RandomSource& random) const {
  if (auto v = validate(spec); !v) return std::unexpected(v.error());
  auto key = generate_p256_key();
  if (!key) return std::unexpected(key.error());
  auto cert = issue_for_key(spec, key->get(), clock, random);
  if (!cert) return std::unexpected(cert.error());
  return Issued{std::move(*cert), std::move(*key)};
}

Result<void> Authority::record(const X509* cert) const {
  DirLock lock(dir_);
  if (!lock.ok()) return fail(ErrorCode::io_error, fmt::format("cannot lock {}", dir_));
  const IndexEntry entry = index_entry_for(cert);
  if (auto r = write_certificate(path_in(dir_, "certs/" + entry.serial + ".pem"), cert); !r)
    return r;
  auto entries = read_index(dir_);
  if (!entries) return std::unexpected(entries.error());
  entries->push_back(entry);
  return write_file_atomic(path_in(dir_, "index.txt"), format_index(*entries));
}

Result<void> Authority::revoke(const X509* cert, RevocationReason reason, TimePoint when) const {
  DirLock lock(dir_);
  if (!lock.ok()) return fail(ErrorCode::io_error, fmt::format("cannot lock {}", dir_));
  auto entries = read_index(dir_);
  if (!entries) return std::unexpected(entries.error());
  const std::string serial = index_serial(cert);
  auto it = std::find_if(entries->begin(), entries->end(),
                         [&](const IndexEntry& e) { return e.serial == serial; });
  if (it == entries->end() ||
      X509_check_issued(cert_.get(), const_cast<X509*>(cert)) != X509_V_OK) {
    return fail(ErrorCode::not_found, fmt::format("serial {} was not issued by this CA", serial));
  }
  if (it->status == 'R') return {};
  it->status = 'R';
  it->revoked_at = when;
  it->reason = reason;
  return write_file_atomic(path_in(dir_, "index.txt"), format_index(*entries));
}

Result<std::vector<IndexEntry>> Authority::index() const {
  DirLock lock(dir_);
  return read_index(dir_);
}

Result<std::optional<IndexEntry>> Authority::find(std::string_view serial_upper) const {
  auto entries = index();
  if (!entries) return std::unexpected(entries.error());
  for (auto& e : *entries) {
    if (e.serial == serial_upper) return std::optional<IndexEntry>(std::move(e));
  }
  return std::optional<IndexEntry>();
}

}  // namespace mcim::pki
