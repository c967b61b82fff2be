#include "device/eap_access.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <stop_token>
#include <thread>

#include "aka/eap_keys.h"
#include "common/file.h"
#include "common/log.h"
#include "common/process.h"

namespace mcim::device {
namespace {

using Steady = std::chrono::steady_clock;
constexpr std::string_view kLog = "device";

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

std::string eapol_test_config(const std::string& ctrl_dir, roles::EapMethod method,
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
  const std::string text = eapol_test_config(ctrl_dir, o.method, *identity);
  if (auto w = write_file_atomic(conf, bytes_of(text), 0600); !w)
    return with_prefix(w.error(), "eap");

  const auto deadline = Steady::now() + o.timeout;
  auto peer = ChildProcess::spawn(
      {o.eapol_test, "-c" + conf, "-a" + o.radius_host, fmt::format("-p{}", o.radius_port),
       "-s" + std::string(o.radius_secret->text()), "-W", fmt::format("-t{}", o.timeout.count())},
      o.work_dir + "/eapol_test.log");
  if (!peer) return with_prefix(peer.error(), "eap");

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
    exit_status = peer->wait_until(deadline, abandon);
    if (!exit_status) peer->stop(std::chrono::milliseconds(0));  // out of time, or given up
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
