#include "roles/ro/hlr_gw.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/hex.h"
#include "common/log.h"
#include "common/random.h"
#include "common/thread_name.h"

namespace mcim::ro {
namespace {

constexpr std::string_view kComponent = "hlr-gw";

// hostapd sends the IMSI it took from the permanent identity ("0<IMSI>" or "6<IMSI>"); the ICF
// knows PCIDs of 6..15 digits, but a shorter all-digit IMSI is well formed and simply unknown.
bool valid_imsi(std::string_view s) {
  return !s.empty() && s.size() <= 15 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string_view strip_line_end(std::string_view s) {
  if (s.ends_with("\r\n")) return s.substr(0, s.size() - 2);
  if (s.ends_with('\n')) return s.substr(0, s.size() - 1);
  return s;
}

// Splits on single spaces, as hlr_auc_gw's strchr(' ') does: an empty field is malformed.
std::vector<std::string_view> fields_of(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t sp = s.find(' ', start);
    out.push_back(s.substr(start, sp == std::string_view::npos ? sp : sp - start));
    if (sp == std::string_view::npos) return out;
    start = sp + 1;
  }
}

Result<HlrRequest> malformed(std::string_view what) {
  return fail(ErrorCode::bad_format, fmt::format("hlr request: {}", what));
}

struct CommandSpec {
  std::string_view name;
  HlrCommand command;
  std::size_t min_fields, max_fields;  // including the command and the IMSI
};

// The command set of hlr_auc_gw.c's process_cmd(). SIM-REQ-AUTH's max_chal is optional.
constexpr std::array<CommandSpec, 4> kCommands = {{
    {"AKA-REQ-AUTH", HlrCommand::aka_req_auth, 2, 2},
    {"AKA-AUTS", HlrCommand::aka_auts, 4, 4},
    {"SIM-REQ-AUTH", HlrCommand::sim_req_auth, 2, 3},
    {"GSM-AUTH-REQ", HlrCommand::gsm_auth_req, 3, 3},
}};

Result<void> parse_auts_fields(const std::vector<std::string_view>& f, HlrRequest& r) {
  auto auts = parse_hex_fixed<14>(f[2], "AUTS");
  if (!auts)
    return std::unexpected(Error(ErrorCode::bad_format, "hlr request: AUTS: 28 hex digits"));
  auto rand = parse_hex_fixed<16>(f[3], "RAND");
  if (!rand)
    return std::unexpected(Error(ErrorCode::bad_format, "hlr request: RAND: 32 hex digits"));
  r.auts = *auts;
  r.rand = *rand;
  return {};
}

void append_text(ByteVec& out, std::string_view text) {
  out.insert(out.end(), text.begin(), text.end());
}

void wipe(aka::AuthVector& av) {
  secure_wipe(av.xres.bytes);
  secure_wipe(av.ck);
  secure_wipe(av.ik);
  secure_wipe(av.ak);
}

std::optional<SecretBytes> answer_aka_request(Icf& icf, const HlrRequest& req,
                                              std::string_view caller) {
  auto vectors = icf.vectors(req.imsi, 1, caller);
  if (!vectors) {
    log::warn(kComponent, "AKA-REQ-AUTH {}: refused: {}", req.imsi, vectors.error().wire_code());
    const std::string failure = *format_failure(req);
    return SecretBytes(ByteVec(failure.begin(), failure.end()));
  }
  SecretBytes answer = format_aka_response(req.imsi, vectors->front());
  for (aka::AuthVector& av : *vectors) wipe(av);
  log::debug(kComponent, "AKA-REQ-AUTH {}: vector sent", req.imsi);
  return answer;
}

void resynchronise(Icf& icf, const HlrRequest& req, std::string_view caller) {
  auto vectors = icf.resynchronise(req.imsi, req.rand, req.auts, 1, caller);
  if (!vectors) {
    log::warn(kComponent, "AKA-AUTS {}: refused: {}", req.imsi, vectors.error().wire_code());
    return;
  }
  for (aka::AuthVector& av : *vectors) wipe(av);
  log::info(kComponent, "AKA-AUTS {}: resynchronised", req.imsi);
}

}  // namespace

Result<HlrRequest> parse_hlr_request(std::string_view datagram) {
  if (datagram.size() > kMaxHlrDatagram) return malformed("longer than 1000 bytes");
  const std::string_view line = strip_line_end(datagram);
  if (line.find_first_of(std::string_view("\0\r\n", 3)) != std::string_view::npos) {
    return malformed("a control character inside the line");
  }
  const std::vector<std::string_view> f = fields_of(line);
  const auto spec = std::find_if(kCommands.begin(), kCommands.end(),
                                 [&](const CommandSpec& c) { return c.name == f[0]; });
  if (spec == kCommands.end()) return malformed("unknown command");
  if (f.size() < spec->min_fields || f.size() > spec->max_fields) {
    return malformed(fmt::format("{}: wrong number of fields", spec->name));
  }
  if (!valid_imsi(f[1])) return malformed(fmt::format("{}: IMSI: 1-15 digits", spec->name));
  HlrRequest r;
  r.command = spec->command;
  r.imsi = std::string(f[1]);
  if (r.command == HlrCommand::aka_auts) {
    if (auto p = parse_auts_fields(f, r); !p) return std::unexpected(p.error());
  }
  return r;
}

SecretBytes format_aka_response(std::string_view imsi, const aka::AuthVector& av) {
  ByteVec out;
  out.reserve(14 + imsi.size() + 5 * 33);
  append_text(out, "AKA-RESP-AUTH ");
  append_text(out, imsi);
  for (ByteView part :
       {ByteView(av.rand), ByteView(av.autn), ByteView(av.ik), ByteView(av.ck), av.xres.view()}) {
    out.push_back(' ');
    append_hex(out, part);
  }
  return SecretBytes(std::move(out));
}

std::optional<std::string> format_failure(const HlrRequest& request) {
  switch (request.command) {
    case HlrCommand::aka_req_auth: return fmt::format("AKA-RESP-AUTH {} FAILURE", request.imsi);
    case HlrCommand::sim_req_auth: return fmt::format("SIM-RESP-AUTH {} FAILURE", request.imsi);
    case HlrCommand::gsm_auth_req: return fmt::format("GSM-AUTH-RESP {} FAILURE", request.imsi);
    case HlrCommand::aka_auts: break;
  }
  return std::nullopt;
}

std::optional<SecretBytes> answer_hlr_request(Icf& icf, std::string_view datagram,
                                              std::string_view caller) {
  auto req = parse_hlr_request(datagram);
  if (!req) {
    log::warn(kComponent, "request refused: {}", req.error().message);
    return std::nullopt;
  }
  switch (req->command) {
    case HlrCommand::aka_req_auth: return answer_aka_request(icf, *req, caller);
    case HlrCommand::aka_auts: resynchronise(icf, *req, caller); return std::nullopt;
    case HlrCommand::sim_req_auth:
    case HlrCommand::gsm_auth_req:
      log::warn(kComponent, "{}: EAP-SIM is not served", req->imsi);
      break;
  }
  auto failure = format_failure(*req);
  return SecretBytes(ByteVec(failure->begin(), failure->end()));
}

// ---- The socket adapter ------------------------------------------------------------------------

namespace {

static_assert(sizeof(sockaddr_un{}.sun_path) == kMaxHlrSocketPath + 1);

Result<sockaddr_un> address_of(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("socket_path: 1..{} bytes", sizeof addr.sun_path - 1));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

// A leftover socket from a gateway that died is replaced; one that a live process still serves
// (a datagram connect succeeds) is not taken over, and any other file there is not ours.
Result<void> remove_stale(const std::string& path, const sockaddr_un& addr) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return {};
  if (!S_ISSOCK(st.st_mode)) {
    return fail(ErrorCode::already_exists, fmt::format("{}: exists and is not a socket", path));
  }
  const int probe = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return fail(ErrorCode::io_error, fmt::format("socket: {}", std::strerror(errno)));
  const int live = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int e = errno;
  ::close(probe);
  if (live == 0) {
    return fail(ErrorCode::already_exists,
                fmt::format("{}: another process serves this socket", path));
  }
  if (e != ECONNREFUSED) {
    return fail(ErrorCode::io_error, fmt::format("{}: {}", path, std::strerror(e)));
  }
  ::unlink(path.c_str());
  return {};
}

Result<int> bind_socket(const HlrGatewayOptions& o) {
  auto addr = address_of(o.socket_path);
  if (!addr) return std::unexpected(addr.error());
  if (auto r = remove_stale(o.socket_path, *addr); !r) return std::unexpected(r.error());
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(ErrorCode::io_error, fmt::format("socket: {}", std::strerror(errno)));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0 ||
      ::chmod(o.socket_path.c_str(), o.mode) != 0) {
    const int e = errno;
    ::close(fd);
    ::unlink(o.socket_path.c_str());
    return fail(ErrorCode::io_error, fmt::format("{}: {}", o.socket_path, std::strerror(e)));
  }
  return fd;
}

}  // namespace

Result<std::unique_ptr<HlrGateway>> HlrGateway::start(store::Database& db, const Clock& clock,
                                                      HlrGatewayOptions options) {
  if (options.caller.empty()) {
    options.caller = "eap:" + std::filesystem::path(options.socket_path).filename().string();
  }
  auto fd = bind_socket(options);
  if (!fd) return std::unexpected(fd.error());
  log::info(kComponent, "serving hostapd's eap_sim_db on {}", options.socket_path);
  return std::unique_ptr<HlrGateway>(new HlrGateway(db, clock, std::move(options), *fd));
}

HlrGateway::HlrGateway(store::Database& db, const Clock& clock, HlrGatewayOptions options, int fd)
    : db_(db), clock_(clock), options_(std::move(options)), fd_(fd) {
  thread_ = std::jthread([this](std::stop_token stop) {
    set_thread_name("ro-eap");
    serve(stop);
  });
}

HlrGateway::~HlrGateway() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
  ::unlink(options_.socket_path.c_str());
}

// Polls with a short timeout so that a stop request is seen without a wake-up channel.
void HlrGateway::serve(std::stop_token stop) {
  OsRandom random;
  Icf icf(db_, clock_, random, options_.icf);
  while (!stop.stop_requested()) {
    pollfd p{fd_, POLLIN, 0};
    const int n = ::poll(&p, 1, 100);
    if (n < 0 && errno != EINTR) {
      log::error(kComponent, "poll: {}", std::strerror(errno));
      return;
    }
    if (n > 0) serve_one(icf);
  }
}

void HlrGateway::serve_one(Icf& icf) {
  std::array<char, kMaxHlrDatagram + 1> buf{};  // one more: an oversized datagram is seen as such
  sockaddr_un from{};
  socklen_t from_len = sizeof from;
  const ssize_t n = ::recvfrom(fd_, buf.data(), buf.size(), MSG_TRUNC,
                               reinterpret_cast<sockaddr*>(&from), &from_len);
  if (n < 0) return;
  ++datagrams_;
  // With MSG_TRUNC, n is the datagram's real size: a longer one stays longer than the limit.
  const std::size_t size = std::min<std::size_t>(static_cast<std::size_t>(n), buf.size());
  auto answer = answer_hlr_request(icf, std::string_view(buf.data(), size), options_.caller);
  secure_wipe(buf.data(), buf.size());
  if (!answer) return;
  if (from_len <= sizeof(sa_family_t)) {
    log::warn(kComponent, "a request from an unbound socket: nowhere to answer");
    return;
  }
  const ByteView a = answer->view();
  if (::sendto(fd_, a.data(), a.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&from),
               from_len) < 0) {
    log::warn(kComponent, "answer not delivered: {}", std::strerror(errno));
    return;
  }
  ++answers_;
}

}  // namespace mcim::ro
