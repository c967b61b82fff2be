// The supplier as an HTTPS service (`mcim serve supplier`): its operators order a batch of
// devices (F0); the CCIF manufactures them (supplier/ccif.h) into one bundle file per device,
// seals the batch's PCID credentials to the RO's ICF certificate, keeps the sealed batch, and
// hands it to the ICF over mTLS (POST {icf_url}/v1/icf/batches). A handover that fails (RO
// unreachable, refused) leaves the batch manufactured and stored; it can be retried. State lives
// in the output directory, so a restarted service knows its batches (docs/protocol.md
// "Supplier"). Thread-safe; one batch is manufactured at a time (503 busy for a second).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "net/https_client.h"
#include "net/router.h"
#include "pki/authority.h"
#include "pki/openssl.h"
#include "tre/bundle.h"

namespace mcim::supplier {

struct SupplierServiceConfig {
  std::string supplier_id;          // its batch-signing certificate's urn:mcim:supplier:<id>
  std::vector<std::string> admins;  // operator ids (mTLS) allowed to order batches
  std::shared_ptr<const pki::Authority> ca;     // certifies the platform keys
  std::shared_ptr<const pki::KeyPair> signer;   // batch signing key + certificate (+ chain)
  pki::X509Ptr icf_cert;                        // the RO's ICF certificate (encryption)
  std::string icf_url;                          // the RO's https base URL
  std::shared_ptr<net::HttpsClient> ro_client;  // mTLS with the supplier's tls-client cert
  std::string out_dir;  // DIR/<batch>/bundles/<device>.bundle (0600), DIR/<batch>/batch.cms,
                        // DIR/<batch>/state.json
  // Template for every device: ro_operator, op, model, lifetimes, operator_roots, ocsp_url.
  tre::ManufactureSpec device_template;
};

class SupplierService {
 public:
  // invalid_argument/missing_argument naming the field; io_error when out_dir cannot be made.
  static Result<std::unique_ptr<SupplierService>> create(SupplierServiceConfig config,
                                                         const Clock& clock);
  ~SupplierService();
  SupplierService(const SupplierService&) = delete;
  SupplierService& operator=(const SupplierService&) = delete;

  // The routes call into this service: it must outlive every server using handler().
  const net::Router& router() const;
  net::HttpHandler handler() const;

  struct State;

 private:
  explicit SupplierService(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace mcim::supplier
