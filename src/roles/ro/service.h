// The Registration Operator as an HTTPS service (`mcim serve ro`): the ICF, DRF and DPF of
// icf.h, drf.h and dpf.h behind one net::Router, with the callers' identities taken from the
// transport (docs/protocol.md "Registration Operator"):
//   - operators and suppliers by their mTLS client certificate (urn:mcim:operator:<id>): batches
//     only from the configured suppliers, vectors and sessions only for VNOs with a roaming
//     agreement, registrations, activations, packages and attestation requests by the SHO that is
//     (or becomes) the PCID's registered home;
//   - devices by the ICF session their VNO opened after AKA (`Authorization: Bearer <session>`,
//     the `home_session` of the attach answer): the session's PCID is the authenticated identity
//     (the VNO asserts it by opening the session; the RO checks it in its own store), and the
//     registration of that PCID names the device for the DPF.
// Arrival notices (F2 step 7), attestation answers (step 9) and status relays (step 14) go to the
// SHO over mTLS from a background queue, delivered by parallel workers with retries. A periodic
// task expires dormant PCIDs (F7). Handlers are thread-safe: they build an Icf/Drf/Dpf per
// request over the shared Database with a per-thread RandomSource.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "net/https_client.h"
#include "net/router.h"
#include "pki/openssl.h"
#include "pki/verify.h"
#include "roles/ro/direct.h"
#include "roles/ro/drf.h"
#include "roles/ro/icf.h"
#include "roles/ro/renewal.h"
#include "store/store.h"

namespace mcim::ro {

// Where the SHO of an operator id takes notices: POST {base_url}/v1/sho/arrivals,
// /v1/sho/attestations, /v1/sho/status, /v1/sho/instruction-results and (F4) /v1/sho/discards.
struct ShoEndpoint {
  std::string base_url;  // https://host:port
};

struct RoServiceConfig {
  std::string operator_id;                     // the RO's own id
  std::vector<std::string> roaming_partners;   // VNO operator ids: vectors, resync, sessions
  std::vector<std::string> suppliers;          // supplier ids: batches (peer id == signer id)
  std::shared_ptr<const pki::TrustAnchors> supplier_roots;  // batch signers, platform certs
  std::shared_ptr<const pki::TrustAnchors> operator_roots;  // package signers (SHOs)
  // The ICF's key agreement certificate and key: batches are encrypted to it.
  std::shared_ptr<const pki::KeyPair> icf_key;
  std::map<std::string, ShoEndpoint> shos;     // by SHO operator id
  // mTLS client (the RO's tls-client certificate) for notices; null: notices are not sent and
  // each is audited as undeliverable.
  std::shared_ptr<net::HttpsClient> notify_client;
  IcfConfig icf;
  DrfConfig drf;
  std::size_t max_batch_bytes = 16 * 1024 * 1024;   // POST /v1/icf/batches body limit
  std::chrono::seconds expire_interval{60};         // how often expire_dormant runs; 0: never
  std::chrono::milliseconds notify_retry{500};      // first retry delay, doubling to 30 s
  std::size_t max_pending_notices = 100'000;        // beyond: the oldest is dropped and audited
  std::size_t notify_workers = 4;                   // threads delivering notices (1..256)
  // Held polls (roles/ro/held_polls.h): the longest `Prefer: wait=N` honoured on the device's
  // GET /v1/dpf/attestation-request and /v1/dpf/package (0: never hold, answer at once), and
  // how many may be held at once (beyond: answered at once).
  std::chrono::seconds max_poll_wait{5};
  std::size_t max_held_polls = 10'000;
  // F3 without AKA (roles/ro/direct.h): POST /v1/drf/direct/challenges and /sessions, for devices
  // that reach the RO over a non-3GPP access with no VNO. `direct_drf_url` is the DRF's https
  // base URL as such devices reach it, echoed as `drf_url` in the session answer (omitted when
  // empty: the device keeps the URL it came to).
  bool direct_access = true;
  DirectConfig direct;
  std::string direct_drf_url;
  // F8: PCID credentials renewed before they expire (roles/ro/renewal.h). Without a signer the
  // device endpoints answer unsupported. operator_id is filled in from the RO's own.
  RenewalConfig renewal;
  // F4 step 4 (roles/ro/dpf_sessions.h): how many DPF sessions of operational devices may be live
  // at once; beyond, the oldest goes. Their lifetime is icf.session_lifetime.
  std::size_t max_dpf_sessions = 100'000;
};

class RoService {
 public:
  // invalid_argument/missing_argument naming the field for an unusable config (no operator id,
  // no icf_key or roots, an icf_key that cannot do ECDH, a SHO URL that is not https,
  // notify_workers 0 or above 256). The Database and Clock must outlive the service. Starts the
  // notice and expiry threads; the notice threads first take up what an earlier run left in the
  // database.
  static Result<std::unique_ptr<RoService>> create(store::Database& db, RoServiceConfig config,
                                                   const Clock& clock);
  // Stops the background threads; notices not delivered stay in the database for the next
  // start. Waiting notices do not delay it; a notice being sent at that moment does, up to the
  // notify client's timeouts.
  ~RoService();
  RoService(const RoService&) = delete;
  RoService& operator=(const RoService&) = delete;

  // The handlers point into this service: stop the HttpServer before destroying it.
  const net::Router& router() const;
  net::HttpHandler handler() const;  // for net::HttpServer::start
  // The server body limit this service needs (the batch endpoint's).
  std::size_t body_limit() const;

  // The periodic task at once, as its thread runs it every expire_interval: dormant PCIDs past
  // their window expire (F7). Returns how many.
  Result<std::uint64_t> expire_dormant_now();

  // Notices queued and not yet delivered; blocks up to `timeout` until none are and the
  // delivered ones have left the database (tests).
  std::size_t pending_notices() const;
  bool wait_notices_delivered(std::chrono::milliseconds timeout) const;

  struct State;

 private:
  explicit RoService(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace mcim::ro
