#include "device/eap_access.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <stop_token>
#include <thread>
#include <vector>

#include "aka/eap_keys.h"
#include "common/file.h"
#include "common/log.h"

extern char** environ;

namespace mcim::device {
namespace {

using Steady = std::chrono::steady_clock;
constexpr std::string_view kLog = "device";

// The peer's configuration (docs/eap.md "Configuration files"); external_sim is global.
std::string peer_config(const std::string& ctrl_dir, roles::EapMethod method,
                        const std::string& identity) {
  return fmt::format(
      "ctrl_interface={}\n"
      "external_sim=1\n"
      "network={{\n"
      "  ssid=\"mcim-f3\"\n"
      "  key_mgmt=WPA-EAP IEEE8021X\n"
      "  eap={}\n"
      "  identity=\"{}\"\n"
      "}}\n",
      ctrl_dir, method == roles::EapMethod::aka_prime ? "AKA'" : "AKA", identity);
}

Result<void> check(const EapAccessOptions& o) {
  if (!o.radius_secret || o.radius_secret->view().empty()) {
    return fail(ErrorCode::invalid_argument, "eap: no RADIUS shared secret");
  }
  const ByteView s = o.radius_secret->view();
  if (std::any_of(s.begin(), s.end(), [](std::uint8_t c) { return c < 0x20 || c == 0x7f; })) {
    return fail(ErrorCode::invalid_argument,
                "eap: the RADIUS secret holds control characters (eapol_test takes it as an "
                "argument)");
  }
  if (o.work_dir.empty()) return fail(ErrorCode::invalid_argument, "eap: no work_dir");
  if (::access(o.eapol_test.c_str(), X_OK) != 0) {
    return fail(ErrorCode::not_found, fmt::format("eap: {} is not executable", o.eapol_test));
  }
  return {};
}

// eapol_test as a child process: its output to a log file, SIGKILL if it outlives the deadline.
class Peer {
 public:
  static Result<Peer> spawn(const std::vector<std::string>& args, const std::string& log) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      return fail(ErrorCode::io_error, fmt::format("eap: cannot start {}: {}", args[0],
                                                   std::strerror(rc)));
    }
    return Peer(pid);
  }
  Peer(Peer&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
  Peer& operator=(Peer&&) = delete;
  ~Peer() { kill(); }

  // The exit status once the peer ended; nullopt when it was killed at the deadline or because
  // the caller gave up (`abandon`).
  std::optional<int> wait(Steady::time_point deadline, const std::stop_token& abandon) {
    while (pid_ > 0) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (Steady::now() >= deadline || abandon.stop_requested()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill();
    return std::nullopt;
  }

 private:
  explicit Peer(pid_t pid) : pid_(pid) {}
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  pid_t pid_ = -1;
};

// What the TRE answered to the challenge that succeeded, kept for the key derivation.
struct Captured {
  unsigned count = 0;
  Secret<16> ck, ik;
  aka::Autn autn{};
};

Secret<64> derive_msk(const EapAccessOptions& o, const std::string& identity, const Captured& c) {
  if (o.method == roles::EapMethod::aka_prime) {
    Bytes<6> sqn_xor_ak{};
    std::copy_n(c.autn.begin(), 6, sqn_xor_ak.begin());
    return aka::derive_eap_aka_prime_keys(identity, c.ck.get(), c.ik.get(), o.network_name,
                                          sqn_xor_ak)
        .msk;
  }
  return aka::derive_eap_aka_keys(identity, c.ck.get(), c.ik.get()).msk;
}

// eapol_test's exit and the TRE's report as the error the caller can act on.
Error outcome_error(std::optional<int> exit_status, const Result<ExternalSimReport>& report) {
  if (!report) return with_prefix(report.error(), "eap: external SIM").error();
  if (report->rejects > 0) {
    return Error(ErrorCode::mac_mismatch,
                 "eap: the TRE refused the network's authentication (AUTN did not verify)");
  }
  if (report->eap_failure) {
    return Error(ErrorCode::access_denied, "eap: the server ended EAP with a failure");
  }
  if (!exit_status) return Error(ErrorCode::io_error, "eap: eapol_test did not finish in time");
  return Error(ErrorCode::io_error,
               fmt::format("eap: eapol_test exited with status {} without success", *exit_status));
}

}  // namespace

Result<EapAuthentication> authenticate_eap(tre::Tre& tre, std::string_view pcid,
                                           const EapAccessOptions& o) {
  if (auto c = check(o); !c) return std::unexpected(c.error());
  auto identity = roles::eap_permanent_identity(o.method, pcid, o.mnc_digits);
  if (!identity) return with_prefix(identity.error(), "eap");
  if (::mkdir(o.work_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail(ErrorCode::io_error, fmt::format("eap: {}: {}", o.work_dir, std::strerror(errno)));
  }
  const std::string ctrl_dir = o.work_dir + "/ctrl";
  const std::string conf = o.work_dir + "/peer.conf";
  const std::string text = peer_config(ctrl_dir, o.method, *identity);
  if (auto w = write_file_atomic(conf, bytes_of(text), 0600); !w) return with_prefix(w.error(), "eap");

  const auto deadline = Steady::now() + o.timeout;
  auto peer = Peer::spawn({o.eapol_test, "-c" + conf, "-a" + o.radius_host,
                           fmt::format("-p{}", o.radius_port),
                           "-s" + std::string(o.radius_secret->text()), "-W",
                           fmt::format("-t{}", o.timeout.count())},
                          o.work_dir + "/eapol_test.log");
  if (!peer) return std::unexpected(peer.error());

  Captured captured;
  ExternalSimOptions sim;
  sim.ctrl_path = ctrl_dir + "/test";  // eapol_test's interface is called "test"
  sim.local_path = o.work_dir + "/sim";
  sim.credential = std::string(pcid);
  sim.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(o.timeout);
  sim.on_challenge = [&captured](const SimRequest& req, const aka::UsimSuccess& ok) {
    ++captured.count;
    captured.ck.mut() = ok.ck;
    captured.ik.mut() = ok.ik;
    captured.autn = req.autn;
  };
  // The peer's exit ends the SIM service too: an eapol_test that dies before it attaches would
  // otherwise keep serve_external_sim retrying until the timeout.
  std::stop_source stop;
  std::optional<int> exit_status;
  std::jthread watcher([&](std::stop_token abandon) {
    exit_status = peer->wait(deadline, abandon);
    stop.request_stop();
  });
  Result<ExternalSimReport> report = serve_external_sim(tre, sim, stop.get_token());
  if (!report) watcher.request_stop();  // nothing will answer the peer's SIM requests
  watcher.join();

  if (exit_status != 0 || !report || captured.count == 0) {
    Error e = outcome_error(exit_status, report);
    if (exit_status == 0 && report && captured.count == 0) {
      e = Error(ErrorCode::internal, "eap: success without a challenge the TRE answered");
    }
    log::warn(kLog, "EAP ({}) with {}: {}", roles::to_string(o.method), pcid, e);
    return std::unexpected(std::move(e));
  }
  EapAuthentication out{*identity, derive_msk(o, *identity, captured), *report};
  log::info(kLog, "EAP ({}) with {}: success ({} challenge(s), {} resync(s))",
            roles::to_string(o.method), pcid, report->challenges, report->resyncs);
  return out;
}

}  // namespace mcim::device
