// The device's side of EAP-AKA / EAP-AKA' over non-3GPP access (F3, DESIGN.md §2): the TRE as
// the external SIM of wpa_supplicant or eapol_test (global option external_sim=1). The EAP peer
// asks over its control interface (a Unix datagram socket, <ctrl_interface>/<ifname>) with the
// event "CTRL-REQ-SIM-<id>:UMTS-AUTH:<RAND>:<AUTN> needed for SSID ..." and takes the answer as
// the command "CTRL-RSP-SIM-<id>:UMTS-AUTH:<IK>:<CK>:<RES>" (or ":UMTS-AUTS:<AUTS>" on a
// synchronisation failure, ":UMTS-FAIL" when AUTN does not verify: the peer then sends
// AKA-Authentication-Reject). Formats per wpa_supplicant's eap_aka_ext_sim_req/_result
// (src/eap_peer/eap_aka.c). EAP-AKA' needs nothing more here: the peer derives CK'/IK'.
// The parsing and formatting are pure; serve_external_sim is the socket loop, one thread, over a
// Tre that it does not share while it runs. docs/eap.md.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

#include "aka/types.h"
#include "aka/vector.h"
#include "common/error.h"
#include "common/secure.h"
#include "tre/tre.h"

namespace mcim::device {

// A SIM request of the peer. `network` is the id of its network block, echoed in the answer.
enum class SimRequestKind { umts_auth, gsm_auth };
struct SimRequest {
  std::string network;
  SimRequestKind kind = SimRequestKind::umts_auth;
  aka::Rand rand{};  // umts_auth only
  aka::Autn autn{};  // umts_auth only
};

// One control-interface message (events carry a "<level>" prefix). nullopt for anything that is
// not a CTRL-REQ-SIM; bad_format for a CTRL-REQ-SIM that cannot be read. A GSM-AUTH request
// (EAP-SIM) is returned without its RANDs: the TRE holds no GSM credential, it gets GSM-FAIL.
Result<std::optional<SimRequest>> parse_sim_request(std::string_view message);

// The CTRL-RSP-SIM command answering `network` with what the TRE said: RES/CK/IK, AUTS, or
// UMTS-FAIL for any error (a MAC-A mismatch, an unusable credential, a locked-down TRE). Holds
// CK and IK: wiped when dropped.
SecretBytes format_sim_response(std::string_view network, const Result<aka::UsimAnswer>& answer);
// "CTRL-RSP-SIM-<id>:UMTS-FAIL" or "...:GSM-FAIL": the request is refused, the peer gives up.
std::string format_sim_failure(std::string_view network, SimRequestKind kind);

struct ExternalSimOptions {
  std::string ctrl_path;   // the peer's control socket, e.g. /run/wpa_supplicant/wlan0
  std::string local_path;  // where this client binds; replaced if stale, removed at the end
  std::optional<std::string> credential;  // the TRE credential to use; the selected one if unset
  // The whole session: attaching (the peer's socket may not exist yet: eapol_test -W waits for
  // this ATTACH before it starts EAP) and serving until the peer terminates.
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  // Optional: called on the serving thread for each UMTS-AUTH that the TRE answered with RES, CK
  // and IK, before they are wiped; the references are valid during the call only. For a caller
  // that derives the EAP keys itself (the interop test checks the MSK a RADIUS server sent).
  std::function<void(const SimRequest&, const aka::UsimSuccess&)> on_challenge;
};

struct ExternalSimReport {
  unsigned challenges = 0;   // answered with RES, CK, IK
  unsigned resyncs = 0;      // answered with AUTS
  unsigned rejects = 0;      // answered UMTS-FAIL
  bool eap_success = false;  // CTRL-EVENT-EAP-SUCCESS seen
  bool eap_failure = false;  // CTRL-EVENT-EAP-FAILURE seen
  bool terminated = false;   // the peer said CTRL-EVENT-TERMINATING
  bool timed_out = false;
};

// Attaches to the peer's control interface and answers its SIM requests with tre.authenticate
// until the peer terminates, `stop` is requested, or the timeout passes (timed_out). io_error
// when the peer's socket does not answer ATTACH before the timeout; invalid_argument for a path
// that does not fit a sockaddr_un.
Result<ExternalSimReport> serve_external_sim(tre::Tre& tre, const ExternalSimOptions& options,
                                             std::stop_token stop = {});

}  // namespace mcim::device
