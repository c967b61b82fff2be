// The RO's ICF as the EAP-SIM/AKA database of a RADIUS/EAP server (F3, DESIGN.md §2: EAP-AKA
// with the PCID credentials over non-3GPP access). hostapd's eap_sim_db=unix:PATH talks a text
// protocol over a Unix datagram socket to an HLR/AuC gateway (hostapd/hlr_auc_gw.c, its server
// side src/eap_server/eap_sim_db.c); this file holds the pure protocol (one datagram in, at most
// one out) and HlrGateway, the thin adapter serving it on a socket from one thread with its own
// Icf over a store::Database. Only the AKA subset is served: EAP-SIM requests are refused.
// docs/eap.md.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "aka/types.h"
#include "aka/vector.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/secure.h"
#include "roles/ro/icf.h"
#include "store/store.h"

namespace mcim::ro {

// hlr_auc_gw and eap_sim_db both read into 1000-byte buffers: nothing longer is a request.
inline constexpr std::size_t kMaxHlrDatagram = 1000;
// The longest socket path: a sockaddr_un's sun_path less its terminating NUL. Configs check it
// before anything starts, so that the message names their key.
inline constexpr std::size_t kMaxHlrSocketPath = 107;

enum class HlrCommand {
  aka_req_auth,  // AKA-REQ-AUTH <IMSI>
  aka_auts,      // AKA-AUTS <IMSI> <AUTS> <RAND>
  sim_req_auth,  // SIM-REQ-AUTH <IMSI> [<max_chal>]     (EAP-SIM: refused)
  gsm_auth_req,  // GSM-AUTH-REQ <IMSI> RAND1:RAND2[:RAND3] (EAP-SIM: refused)
};

struct HlrRequest {
  HlrCommand command = HlrCommand::aka_req_auth;
  std::string imsi;  // 1..15 decimal digits
  aka::Auts auts{};  // aka_auts only
  aka::Rand rand{};  // aka_auts only
};

// One datagram (a single trailing "\n" or "\r\n" is tolerated for hand-typed requests). bad_format
// naming the part that is wrong; the message never quotes the input beyond the command name.
Result<HlrRequest> parse_hlr_request(std::string_view datagram);

// "AKA-RESP-AUTH <IMSI> <RAND> <AUTN> <IK> <CK> <RES>", lowercase hex as hlr_auc_gw writes it.
// Holds IK and CK: a SecretBytes, wiped when dropped.
SecretBytes format_aka_response(std::string_view imsi, const aka::AuthVector& av);

// What hlr_auc_gw answers when it has nothing for the IMSI: "AKA-RESP-AUTH <IMSI> FAILURE",
// "SIM-RESP-AUTH <IMSI> FAILURE", "GSM-AUTH-RESP <IMSI> FAILURE"; nullopt for AKA-AUTS, which
// has no answer in the protocol.
std::optional<std::string> format_failure(const HlrRequest& request);

// The gateway's whole behaviour for one datagram, over `icf` (`caller` is recorded by the ICF):
//   AKA-REQ-AUTH: one vector, or FAILURE when the ICF refuses the PCID (unknown, dormant, expired,
//     SQN exhausted, a store error);
//   AKA-AUTS: Icf::resynchronise, and no answer either way (hostapd asks AKA-REQ-AUTH again
//     right after sending it). The ICF hands out at least one vector per resynchronisation
//     (count 0 is invalid_argument there); that vector is dropped: it costs one SEQ value and
//     the next AKA-REQ-AUTH gets a fresh one;
//   SIM-REQ-AUTH / GSM-AUTH-REQ: FAILURE (no GSM triplets for PCID credentials);
//   anything malformed: no answer.
// Every refusal is logged (component "hlr-gw") with the IMSI and the error code, never a value.
std::optional<SecretBytes> answer_hlr_request(Icf& icf, std::string_view datagram,
                                              std::string_view caller);

struct HlrGatewayOptions {
  std::string socket_path;  // at most kMaxHlrSocketPath bytes; a stale socket there is
                            // replaced, one a live process serves is not (already_exists)
  // hostapd connects as whatever user it runs as: 0600 suits the same user (or root). Put the
  // socket in a directory only the RO and hostapd can enter: the mode is set just after bind.
  mode_t mode = 0600;
  std::string caller;  // recorded by the ICF; default "eap:<file name of socket_path>"
  IcfConfig icf;       // its AMF keeps the separation bit set, which EAP-AKA' requires
};

// Serves the protocol on a Unix datagram socket from one thread, answering each datagram to its
// sender. The Icf lives on that thread (Icf is thread-compatible) over `db`, which must be safe
// to share between threads as the services share it. `db` and `clock` outlive the gateway.
class HlrGateway {
 public:
  // io_error when the socket cannot be created, bound or given its mode; invalid_argument for a
  // path that does not fit a sockaddr_un.
  static Result<std::unique_ptr<HlrGateway>> start(store::Database& db, const Clock& clock,
                                                   HlrGatewayOptions options);
  ~HlrGateway();  // stops the thread, closes and removes the socket
  HlrGateway(const HlrGateway&) = delete;
  HlrGateway& operator=(const HlrGateway&) = delete;

  const std::string& socket_path() const { return options_.socket_path; }
  std::uint64_t datagrams() const { return datagrams_.load(); }  // received so far
  std::uint64_t answers() const { return answers_.load(); }      // sent so far

 private:
  HlrGateway(store::Database& db, const Clock& clock, HlrGatewayOptions options, int fd);
  void serve(std::stop_token stop);
  void serve_one(Icf& icf);

  store::Database& db_;
  const Clock& clock_;
  HlrGatewayOptions options_;
  int fd_ = -1;
  std::atomic<std::uint64_t> datagrams_{0}, answers_{0};
  std::jthread thread_;  // last: started when everything above is ready, joined first
};

}  // namespace mcim::ro
