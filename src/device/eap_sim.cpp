#include "device/eap_sim.h"

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
#include <thread>
#include <variant>

#include "common/hex.h"
#include "common/log.h"

namespace mcim::device {
namespace {

constexpr std::string_view kComponent = "eap-sim";
constexpr std::string_view kRequest = "CTRL-REQ-SIM-";
constexpr std::string_view kResponse = "CTRL-RSP-SIM-";

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// wpa_msg() prefixes events with "<level>"; command replies have none.
std::string_view strip_level(std::string_view m) {
  if (!m.starts_with('<')) return m;
  const auto close = m.find('>');
  return close == std::string_view::npos ? m : m.substr(close + 1);
}

Result<std::optional<SimRequest>> unreadable(std::string_view what) {
  return fail(ErrorCode::bad_format, fmt::format("CTRL-REQ-SIM: {}", what));
}

// "UMTS-AUTH:<RAND>:<AUTN>", then the end or " needed for SSID ...".
Result<void> parse_umts(std::string_view body, SimRequest& r) {
  constexpr std::size_t kHex = 32;
  if (body.size() < 2 * kHex + 1 || body[kHex] != ':' ||
      (body.size() > 2 * kHex + 1 && body[2 * kHex + 1] != ' ')) {
    return fail(ErrorCode::bad_format, "CTRL-REQ-SIM: UMTS-AUTH: expected <RAND>:<AUTN>");
  }
  auto rand = parse_hex_fixed<16>(body.substr(0, kHex), "RAND");
  auto autn = parse_hex_fixed<16>(body.substr(kHex + 1, kHex), "AUTN");
  if (!rand || !autn) return fail(ErrorCode::bad_format, "CTRL-REQ-SIM: UMTS-AUTH: not hex");
  r.rand = *rand;
  r.autn = *autn;
  return {};
}

void append_text(ByteVec& out, std::string_view s) { out.insert(out.end(), s.begin(), s.end()); }

void wipe(aka::UsimAnswer& answer) {
  if (auto* ok = std::get_if<aka::UsimSuccess>(&answer)) {
    secure_wipe(ok->res.bytes);
    secure_wipe(ok->ck);
    secure_wipe(ok->ik);
  }
}

}  // namespace

Result<std::optional<SimRequest>> parse_sim_request(std::string_view message) {
  const std::string_view m = strip_level(message);
  if (!m.starts_with(kRequest)) return std::optional<SimRequest>();
  const std::string_view rest = m.substr(kRequest.size());
  const auto colon = rest.find(':');
  if (colon == std::string_view::npos || colon > 10 || !all_digits(rest.substr(0, colon))) {
    return unreadable("network id");
  }
  SimRequest r;
  r.network = std::string(rest.substr(0, colon));
  const std::string_view body = rest.substr(colon + 1);
  if (body.starts_with("GSM-AUTH:")) {
    r.kind = SimRequestKind::gsm_auth;
    return std::optional<SimRequest>(std::move(r));
  }
  if (!body.starts_with("UMTS-AUTH:")) return unreadable("unknown request type");
  if (auto p = parse_umts(body.substr(10), r); !p) return std::unexpected(p.error());
  return std::optional<SimRequest>(std::move(r));
}

SecretBytes format_sim_response(std::string_view network, const Result<aka::UsimAnswer>& answer) {
  if (!answer) {
    const std::string f = format_sim_failure(network, SimRequestKind::umts_auth);
    return SecretBytes(ByteVec(f.begin(), f.end()));
  }
  ByteVec out;
  out.reserve(kResponse.size() + network.size() + 120);
  append_text(out, kResponse);
  append_text(out, network);
  if (const auto* sync = std::get_if<aka::UsimSyncFailure>(&*answer)) {
    append_text(out, ":UMTS-AUTS:");
    append_hex(out, sync->auts);
    return SecretBytes(std::move(out));
  }
  const auto& ok = std::get<aka::UsimSuccess>(*answer);
  append_text(out, ":UMTS-AUTH:");
  append_hex(out, ok.ik);
  out.push_back(':');
  append_hex(out, ok.ck);
  out.push_back(':');
  append_hex(out, ok.res.view());
  return SecretBytes(std::move(out));
}

std::string format_sim_failure(std::string_view network, SimRequestKind kind) {
  return fmt::format("{}{}:{}", kResponse, network,
                     kind == SimRequestKind::gsm_auth ? "GSM-FAIL" : "UMTS-FAIL");
}

// ---- The control-interface client --------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

Result<sockaddr_un> address_of(const std::string& path, std::string_view name) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("{}: 1..{} bytes", name, sizeof addr.sun_path - 1));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

// The client's own socket, closed and unlinked on every path out.
class CtrlClient {
 public:
  ~CtrlClient() {
    if (fd_ >= 0) ::close(fd_);
    if (!local_.empty()) ::unlink(local_.c_str());
  }

  Result<void> bind(const std::string& local) {
    auto addr = address_of(local, "local_path");
    if (!addr) return std::unexpected(addr.error());
    struct stat st {};
    if (::lstat(local.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(local.c_str());
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
      return fail(ErrorCode::io_error, fmt::format("{}: {}", local, std::strerror(errno)));
    }
    local_ = local;
    return {};
  }

  // The peer may not have created its socket yet: retried until the deadline.
  Result<void> attach(const sockaddr_un& peer, Clock::time_point deadline,
                      const std::stop_token& stop) {
    while (Clock::now() < deadline && !stop.stop_requested()) {
      if (::connect(fd_, reinterpret_cast<const sockaddr*>(&peer), sizeof peer) == 0 &&
          send("ATTACH")) {
        if (auto reply = receive(std::chrono::milliseconds(500)); reply && *reply == "OK\n") {
          return {};
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return fail(ErrorCode::io_error, "the EAP peer's control interface did not accept ATTACH");
  }

  bool send(std::string_view m) { return ::send(fd_, m.data(), m.size(), MSG_NOSIGNAL) >= 0; }
  bool send(ByteView m) { return ::send(fd_, m.data(), m.size(), MSG_NOSIGNAL) >= 0; }

  // nullopt when nothing arrived within `wait`.
  std::optional<std::string> receive(std::chrono::milliseconds wait) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return std::nullopt;
    const ssize_t n = ::recv(fd_, buf_.data(), buf_.size(), 0);
    if (n < 0) return std::nullopt;
    return std::string(buf_.data(), static_cast<std::size_t>(n));
  }

 private:
  int fd_ = -1;
  std::string local_;
  std::array<char, 8192> buf_{};
};

void answer(CtrlClient& client, tre::Tre& tre, const ExternalSimOptions& o, const SimRequest& req,
            ExternalSimReport& report) {
  if (req.kind == SimRequestKind::gsm_auth) {
    log::warn(kComponent, "network {}: GSM-AUTH (EAP-SIM) refused", req.network);
    ++report.rejects;
    client.send(format_sim_failure(req.network, req.kind));
    return;
  }
  Result<aka::UsimAnswer> usim = tre.authenticate(o.credential, req.rand, req.autn);
  if (!usim) {
    log::warn(kComponent, "network {}: UMTS-AUTH refused: {}", req.network,
              usim.error().wire_code());
    ++report.rejects;
  } else if (std::holds_alternative<aka::UsimSyncFailure>(*usim)) {
    log::info(kComponent, "network {}: synchronisation failure, AUTS sent", req.network);
    ++report.resyncs;
  } else {
    ++report.challenges;
    if (o.on_challenge) o.on_challenge(req, std::get<aka::UsimSuccess>(*usim));
  }
  const SecretBytes response = format_sim_response(req.network, usim);
  if (usim) wipe(*usim);
  if (!client.send(response.view())) {
    log::warn(kComponent, "network {}: answer not delivered: {}", req.network,
              std::strerror(errno));
  }
}

// One message from the peer; false when the session is over.
bool handle(CtrlClient& client, tre::Tre& tre, const ExternalSimOptions& o, std::string_view m,
            ExternalSimReport& report) {
  const std::string_view event = strip_level(m);
  if (event.starts_with("CTRL-EVENT-EAP-SUCCESS")) report.eap_success = true;
  if (event.starts_with("CTRL-EVENT-EAP-FAILURE")) report.eap_failure = true;
  if (event.starts_with("CTRL-EVENT-TERMINATING")) {
    report.terminated = true;
    return false;
  }
  if (event.starts_with("FAIL")) log::warn(kComponent, "the EAP peer refused an answer");
  auto req = parse_sim_request(m);
  if (!req) {
    log::warn(kComponent, "unreadable SIM request: {}", req.error().message);
  } else if (*req) {
    answer(client, tre, o, **req, report);
  }
  return true;
}

}  // namespace

Result<ExternalSimReport> serve_external_sim(tre::Tre& tre, const ExternalSimOptions& options,
                                             std::stop_token stop) {
  auto peer = address_of(options.ctrl_path, "ctrl_path");
  if (!peer) return std::unexpected(peer.error());
  CtrlClient client;
  if (auto b = client.bind(options.local_path); !b) return std::unexpected(b.error());
  const Clock::time_point deadline = Clock::now() + options.timeout;
  if (auto a = client.attach(*peer, deadline, stop); !a) return std::unexpected(a.error());
  log::info(kComponent, "attached to {}", options.ctrl_path);
  ExternalSimReport report;
  while (!stop.stop_requested()) {
    if (Clock::now() >= deadline) {
      report.timed_out = true;
      break;
    }
    auto m = client.receive(std::chrono::milliseconds(100));
    if (m && !handle(client, tre, options, *m, report)) break;
  }
  if (!report.terminated) client.send("DETACH");
  return report;
}

}  // namespace mcim::device
