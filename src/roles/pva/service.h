// The Platform Validation Authority as an HTTPS service (`mcim serve pva`; DESIGN.md §1-§2 F2
// steps 8-10, docs/protocol.md "PVA"):
//   - suppliers register the signed reference measurements of their models (verified against the
//     supplier roots; a set never rolls back; kept in the database and re-verified at start);
//   - a home operator (SHO) asks for a challenge for a device: a fresh one-time nonce, which
//     travels to the device's TRE through the RO (the RO's attestation requests) and comes back
//     inside the TRE's signed attestation report;
//   - the SHO then submits that report with the device's platform chain: the PVA consumes the
//     challenge (one validation each, only by the SHO that asked, before it expires), checks the
//     chain to the supplier root, the certificate's revocation status from its own OCSP responder
//     (a real RFC 6960 request and response, verified), the signature, the device id, the nonce,
//     freshness, the measurements against the model's references and the TRE state
//     (pki::Validator), and answers the signed result (pki::ResultSigner), trusted or not;
//   - the OCSP responder for the supplier CA, for anyone (POST /v1/ocsp, GET /v1/ocsp/{request}).
// Thread-safe: handlers run on the server's workers over the shared Database.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "net/router.h"
#include "pki/attestation.h"
#include "pki/openssl.h"
#include "pki/verify.h"
#include "store/store.h"

namespace mcim::pva {

struct PvaServiceConfig {
  std::string operator_id;             // the PVA's own id (its certificates' URN)
  std::vector<std::string> suppliers;  // supplier ids (mTLS operator ids) allowed to register
  std::vector<std::string> shos;       // operator ids allowed to ask for validations
  std::shared_ptr<const pki::TrustAnchors> supplier_roots;  // platform chains and references
  // Supplier intermediate CAs (pki::Validator::add_intermediates), may be empty.
  std::vector<pki::X509Ptr> supplier_intermediates;
  std::string supplier_ca_dir;     // the supplier CA (ca.pem, index.txt) the OCSP responder serves
  std::string ocsp_signer_prefix;  // PREFIX.pem/PREFIX.key (pki::OcspResponder::open)
  std::shared_ptr<const pki::KeyPair> result_signer;  // document signer for results
  pki::ValidationPolicy policy;
  std::chrono::seconds challenge_lifetime{300};
};

class PvaService {
 public:
  // invalid_argument/missing_argument naming the field; the errors of OcspResponder::open and of
  // re-verifying stored references (a stored set that no longer verifies is skipped and logged).
  // The Database and Clock must outlive the service.
  static Result<std::unique_ptr<PvaService>> create(store::Database& db, PvaServiceConfig config,
                                                    const Clock& clock);
  ~PvaService();
  PvaService(const PvaService&) = delete;
  PvaService& operator=(const PvaService&) = delete;

  const net::Router& router() const;
  net::HttpHandler handler() const;  // stop the server before destroying the service
  // The server body limit this service needs (the references endpoint's, 256 KiB).
  std::size_t body_limit() const;

  struct State;

 private:
  explicit PvaService(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace mcim::pva
