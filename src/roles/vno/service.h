// The visited network as an HTTPS service (`mcim serve vno`): the attach endpoints a device
// calls (TLS server-authenticated: on a real network this is the radio link) in front of the
// Vno of vno.h, its HomeAuth ports as HTTPS clients of the homes' /v1/auth endpoints (the RO's
// ICF for PCIDs, an SHO's AuC later) authenticated with the VNO's mTLS certificate, and the
// gateway of restricted sessions as a net::ConnectProxy (started and owned by the service) whose
// authoriser is Vno::forward (docs/protocol.md "Visited network"), and for non-3GPP access (F3)
// the RADIUS relay in front of the AAA server (radius_relay.h) whose Access-Accepts become EAP
// grants that devices claim at POST /v1/access/eap-sessions. Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "net/connect_proxy.h"
#include "net/https_client.h"
#include "net/router.h"
#include "roles/vno/radius_relay.h"
#include "roles/vno/vno.h"

namespace mcim::roles {

// HomeAuth over HTTPS: POST {base_url}/v1/auth/vectors, /v1/auth/resync, /v1/auth/sessions and
// DELETE /v1/auth/sessions/{id} (ro/service.h). The home's error envelope comes back as the
// same ErrorCode and message (so a second attach is already_exists at the device too); a
// transport failure is io_error, an answer that does not parse bad_format. `name` (the Route::home;
// the URL when empty) prefixes the messages: "home ro: ...".
class HttpHomeAuth final : public HomeAuth {
 public:
  HttpHomeAuth(std::shared_ptr<net::HttpsClient> client, std::string base_url,
               std::string name = {});
  Result<std::vector<aka::AuthVector>> vectors(std::string_view imsi, unsigned count,
                                               std::string_view vno) override;
  Result<std::vector<aka::AuthVector>> resynchronise(std::string_view imsi, const aka::Rand& rand,
                                                     const aka::Auts& auts,
                                                     std::string_view vno) override;
  Result<std::string> open_session(std::string_view imsi, std::string_view vno) override;
  Result<void> close_session(std::string_view session_id) override;

 private:
  // The home's answer when it has `expected_status`; its error envelope's Error otherwise.
  Result<net::HttpResponse> call(std::string_view method, std::string_view path,
                                 const net::Json& body, int expected_status);
  // The body validated against `schema` (then wiped: it may hold XRES, CK, IK).
  Result<net::Json> parse_answer(net::HttpResponse& response, const net::JsonSchema& schema);
  Result<std::vector<aka::AuthVector>> parse_vectors(net::HttpResponse& response, unsigned count);

  std::shared_ptr<net::HttpsClient> client_;
  std::string base_url_;
  std::string name_;
};

struct VnoServiceConfig {
  // options.name is the VNO's operator id; options.restricted_destinations are the "ip:port"
  // authorities a PCID session may reach through the gateway (the RO's and the PVA's).
  VnoOptions options;
  std::vector<Route> routes;
  std::map<std::string, std::string> homes;       // home name (Route::home) → https base URL
  std::shared_ptr<net::HttpsClient> home_client;  // mTLS with the VNO's tls-client certificate
  // The gateway the service starts (its authoriser is gateway_authorizer()); the attach answer
  // of a restricted session tells the device its address (and the route's drf_url).
  net::ConnectProxyOptions gateway;
  // F3 over EAP-AKA/AKA': the RADIUS relay the service starts (its on_accept is set to
  // Vno::grant_eap); absent: no non-3GPP access.
  std::optional<RadiusRelayOptions> non3gpp;
};

class VnoService {
 public:
  // invalid_argument naming the field: a route whose home has no URL, a URL (home or drf_url)
  // that is not https, a drf_url on a route that is not a provisioning one, no home_client;
  // io_error when the gateway cannot bind. A provisioning route without a drf_url gets its
  // home's URL (the RO serves its DRF beside its ICF). The Clock must outlive the service.
  static Result<std::unique_ptr<VnoService>> create(VnoServiceConfig config, const Clock& clock);
  ~VnoService();
  VnoService(const VnoService&) = delete;
  VnoService& operator=(const VnoService&) = delete;

  const net::Router& router() const;
  net::HttpHandler handler() const;
  // Vno::forward as a tunnel authoriser: credential = the VNO session id, authority = the
  // destination.
  net::TunnelAuthorizer gateway_authorizer() const;
  std::string gateway_address() const;  // "127.0.0.1:PORT" of the running gateway
  RadiusRelay* radius_relay();          // null without non3gpp
  Vno& vno();

  struct State;

 private:
  explicit VnoService(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace mcim::roles
