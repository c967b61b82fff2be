// The device's side of F3 over EAP-AKA / EAP-AKA' (docs/eap.md, docs/device.md "Non-3GPP
// access"): runs the EAP peer (eapol_test, as Debian's eapoltest package installs it) against the
// access network's RADIUS server with the TRE as its external SIM (eap_sim.h), and on success
// derives the MSK the access network also received (aka/eap_keys.h) from the identity and the CK
// and IK the TRE returned, so that the device can claim its session at the VNO
// (roles/vno/eap_session.h). One call at a time per TRE; CK, IK and the MSK live in wiped
// containers and are never logged.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/secure.h"
#include "device/eap_sim.h"
#include "roles/vno/eap_session.h"
#include "tre/tre.h"

namespace mcim::device {

struct EapAccessOptions {
  roles::EapMethod method = roles::EapMethod::aka;
  std::string eapol_test = "/usr/bin/eapol_test";
  std::string radius_host = "127.0.0.1";  // the access network's RADIUS server (IPv4 literal)
  std::uint16_t radius_port = 1812;
  // The RADIUS shared secret. eapol_test takes it on its command line (-s): on a shared machine
  // other users can read it in the process list while EAP runs.
  std::shared_ptr<const SecretBytes> radius_secret;
  // A private directory for the peer's configuration, control sockets and log (created 0700).
  std::string work_dir;
  unsigned mnc_digits = 2;  // of the PCID, for the realm (TS 23.003 §14.3)
  // EAP-AKA' only: the access network name in AT_KDF_INPUT. hostapd 2.10 always sends "WLAN".
  std::string network_name = "WLAN";
  std::chrono::seconds timeout{20};  // the whole EAP run
};

struct EapAuthentication {
  std::string identity;  // the NAI the peer authenticated with
  Secret<64> msk;
  ExternalSimReport report;
};

// The peer's configuration file (docs/eap.md "Configuration files"): its control interface in
// `ctrl_dir`, the TRE as external SIM (a global option), one network with the method and identity.
std::string eapol_test_config(const std::string& ctrl_dir, roles::EapMethod method,
                              const std::string& identity);

// EAP with the PCID credential `pcid`. invalid_argument for unusable options (no secret, no
// work_dir, a secret with control characters, a path too long for a socket); not_found when
// eapol_test is not executable; mac_mismatch when the TRE refused the network's AUTN (another
// K); access_denied when the server sent EAP-Failure; io_error when eapol_test ended otherwise
// without success or did not finish within the timeout.
Result<EapAuthentication> authenticate_eap(tre::Tre& tre, std::string_view pcid,
                                           const EapAccessOptions& options);

}  // namespace mcim::device
