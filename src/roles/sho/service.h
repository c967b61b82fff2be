// The Selected Home Operator as an HTTPS service (`mcim serve sho`; DESIGN.md §1-§2 F1, F2 steps
// 7-14; docs/protocol.md "SHO"):
//   - owners register their devices (F1: device id, PCID, PIN, platform certificate): the SHO
//     checks the platform certificate against the supplier roots and the device id, allocates an
//     IMSI and a random K (OPc from the SHO's OP) in its AuC, inactive, registers "PCID -> SHO,
//     DPF address, PIN" at the RO's DRF, and answers the one-time registration nonce that the
//     owner gives the device (it binds this registration to the install). A registration the RO
//     refuses leaves nothing behind at the SHO. Owners also read the status and announce
//     imminent switch-on (F7, relayed to the RO's ICF);
//   - on the RO's arrival notice (step 7) it asks the PVA for a challenge and the RO to fetch the
//     device's attestation over it; on the RO's relay of that attestation (steps 8-10) it has the
//     PVA validate it and checks the PVA's signed result; when trusted it builds the mcim/1
//     document (IMSI, K, OPc, the registration nonce, device id, policy), seals it to the
//     registered platform certificate, signs it and hands it to the DPF (step 11);
//   - on the RO's status relay (step 14) it checks the TRE's signed report with the registered
//     platform certificate and activates the IMSI in its AuC: the device is operational;
//   - its AuC serves vectors, resynchronisation and sessions for active IMSIs to its roaming
//     partners: ro/auth_routes.h over an ro::Icf on the SHO's database (sessions unrestricted).
// Owners authenticate with `Authorization: Bearer <token>` (the configured SHA-256 of each
// owner's token); operators (RO, VNOs) with mTLS. Thread-safe.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/secure.h"
#include "net/https_client.h"
#include "net/router.h"
#include "pki/openssl.h"
#include "pki/verify.h"
#include "store/store.h"

namespace mcim::sho {

// The RO that holds a range of PCIDs: its DRF and DPF, and what the SHO registers for devices.
struct RoEndpoint {
  std::string operator_id;  // the RO's mTLS operator id: only it may send notices
  std::string pcid_prefix;  // PCIDs it holds (longest prefix wins)
  std::string base_url;     // https: DRF registrations, ICF activation, DPF packages, requests
  std::string dpf_url;      // what the device is told (bootstrap); usually base_url
  Bytes<32> dpf_key_pin{};  // SHA-256 of the DPF's SPKI, for the bootstrap
  std::string apn;          // the restricted APN of the bootstrap
};

struct Owner {
  std::string id;             // [A-Za-z0-9._:-]{1,64}
  Bytes<32> token_sha256{};   // SHA-256 of the owner's bearer token (the token is not stored)
};

struct ShoServiceConfig {
  std::string operator_id;                   // its certificates' urn:mcim:operator:<id>
  std::vector<Owner> owners;
  std::vector<RoEndpoint> ros;
  std::vector<std::string> roaming_partners;  // VNOs allowed to fetch vectors for its IMSIs
  std::string imsi_prefix;                    // MCC+MNC(+more); IMSIs are prefix + serial
  unsigned imsi_digits = 15;
  Secret<16> op;                              // the AuC's OP: OPc = f(K, OP) per subscriber
  unsigned ind_bits = 5;
  std::chrono::seconds nonce_lifetime{std::chrono::hours(24)};      // registration nonce
  std::chrono::seconds mcim_lifetime{std::chrono::hours(24 * 365 * 5)};
  std::shared_ptr<const pki::TrustAnchors> supplier_roots;  // platform certificates
  std::shared_ptr<const pki::TrustAnchors> pva_roots;       // validation result signers
  std::string pva_url;                                      // https base URL of the PVA
  std::shared_ptr<const pki::KeyPair> package_signer;       // package_signing cert, this operator
  // mTLS client (the SHO's tls-client certificate) for the RO and the PVA.
  std::shared_ptr<net::HttpsClient> client;
  // Packages prepared in advance: at registration the SHO seals the device's package at once and
  // keeps it, in memory, until the device is validated; then it hands that one over instead of
  // sealing (F2 then waits for neither the sealing nor its sequence's commit). At most this many
  // are kept (a batch of registrations beyond it is sealed at validation, as with 0); a restart
  // forgets them, which costs only the sealing. Sealed to the TRE, they hold no secret in clear.
  std::size_t max_prepared_packages = 100'000;
};

class ShoService {
 public:
  // invalid_argument/missing_argument naming the field. The Database and Clock must outlive it.
  static Result<std::unique_ptr<ShoService>> create(store::Database& db, ShoServiceConfig config,
                                                    const Clock& clock);
  ~ShoService();
  ShoService(const ShoService&) = delete;
  ShoService& operator=(const ShoService&) = delete;

  const net::Router& router() const;
  net::HttpHandler handler() const;  // stop the server before destroying the service

  struct State;

 private:
  explicit ShoService(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace mcim::sho
