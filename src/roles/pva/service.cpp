#include "roles/pva/service.h"

#include <fmt/format.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <map>
#include <mutex>
#include <utility>

#include "common/hex.h"
#include "common/log.h"
#include "net/json_schema.h"
#include "net/ocsp_http.h"
#include "pki/ocsp.h"
#include "roles/ro/audit.h"
#include "roles/ro/service_util.h"

namespace mcim::pva {
namespace {

using net::HttpResponse;
using net::Json;
using net::JsonSchema;
using net::Request;
using net::RouteOptions;
using ro::service_util::answer;
using ro::service_util::caller_of;
using ro::service_util::raw_chain;
using ro::service_util::thread_random;
using ro::service_util::unix_seconds;

constexpr std::string_view kComponent = "pva";
constexpr std::size_t kMaxJsonBody = 4 * 1024;
constexpr std::size_t kMaxReferencesBody = 256 * 1024;
// A report and four PEMs at their limits, with JSON escapes (every PEM line ends in "\n").
constexpr std::size_t kMaxValidationBody = 128 * 1024;
constexpr std::size_t kMaxOcspRequest = 16 * 1024;
constexpr std::size_t kChallengeIdBytes = 16;
constexpr std::size_t kNonceBytes = 32;

using ReferenceMap = std::map<std::string, pki::VerifiedReferences, std::less<>>;

store::Time now_seconds(const Clock& clock) {
  return std::chrono::floor<std::chrono::seconds>(clock.now());
}

Json failures_json(const std::vector<pki::Failure>& failures) {
  Json out = Json::array();
  for (const pki::Failure& f : failures) {
    out.push_back({{"check", std::string(pki::to_string(f.check))},
                   {"code", std::string(to_string(f.code))},
                   {"message", f.message}});
  }
  return out;
}

// The challenge names the device the SHO asked about: a report from any other device (however
// valid) does not answer it. Listed with the Validator's own device_id failures, in check order.
void require_device(pki::ValidationResult& result, std::string_view device_id) {
  if (result.device_id == device_id) return;
  const auto after =
      std::find_if(result.failures.begin(), result.failures.end(),
                   [](const pki::Failure& f) { return f.check > pki::Check::device_id; });
  result.failures.insert(
      after, pki::Failure{pki::Check::device_id, ErrorCode::chain_invalid,
                          fmt::format("the challenge was issued for device {}, not {}", device_id,
                                      result.device_id)});
}

Result<void> check_config(const PvaServiceConfig& c) {
  if (c.operator_id.empty()) return fail(ErrorCode::missing_argument, "operator_id: required");
  if (!c.supplier_roots) return fail(ErrorCode::missing_argument, "supplier_roots: required");
  if (!c.result_signer || c.result_signer->certs.empty() || !c.result_signer->key) {
    return fail(ErrorCode::missing_argument, "result_signer: required");
  }
  if (c.supplier_ca_dir.empty()) {
    return fail(ErrorCode::missing_argument, "supplier_ca_dir: required");
  }
  if (c.ocsp_signer_prefix.empty()) {
    return fail(ErrorCode::missing_argument, "ocsp_signer_prefix: required");
  }
  if (c.challenge_lifetime <= std::chrono::seconds(0)) {
    return fail(ErrorCode::invalid_argument, "challenge_lifetime: must be positive");
  }
  return {};
}

}  // namespace

// ---- The service's state: shared by every handler thread ---------------------------------------

struct PvaService::State {
  State(store::Database& database, PvaServiceConfig c, const Clock& clk, pki::OcspResponder r,
        pki::X509Ptr issuer, pki::ResultSigner s)
      : db(database),
        config(std::move(c)),
        clock(clk),
        router("pva"),
        ocsp(std::move(r)),
        ocsp_issuer(std::move(issuer)),
        signer(std::move(s)),
        intermediates(raw_chain(config.supplier_intermediates)) {}

  store::Database& db;
  const PvaServiceConfig config;
  const Clock& clock;
  net::Router router;
  const pki::OcspResponder ocsp;
  const pki::X509Ptr ocsp_issuer;  // the CA the responder answers for (supplier_ca_dir/ca.pem)
  const pki::ResultSigner signer;
  const std::vector<X509*> intermediates;  // into config.supplier_intermediates

  // Reference registrations are rare and validations frequent: each accepted set builds a new
  // immutable Validator, and a validation works on the one that was current when it started.
  std::mutex references_mu;  // serialises registrations; guards `references`
  ReferenceMap references;
  mutable std::mutex validator_mu;  // guards `validator` (the pointer, not the Validator)
  std::shared_ptr<const pki::Validator> validator;

  store::Time now() const { return now_seconds(clock); }
  void flow(std::string_view step) const { router.metrics().flow_step(step); }
  // One audit record per operation, accepted or refused (docs/roles-pva.md "Audit").
  template <class T>
  Result<T> record(std::string_view event, std::string_view subject, std::string_view principal,
                   Result<T> result, std::string detail = {}) {
    return ro::detail::audited(db.audit(), now(),
                               {kComponent, event, subject, principal, std::move(detail)},
                               std::move(result));
  }

  std::shared_ptr<const pki::Validator> current_validator() const {
    std::lock_guard lock(validator_mu);
    return validator;
  }
  Result<std::unique_ptr<pki::Validator>> build_validator(const ReferenceMap& refs) const;
  Result<void> load_references();

  Result<void> add_routes();
  HttpResponse register_references(const Request& r);
  Result<Json> store_references(const Request& r);
  Result<Json> issue_challenge(const Request& r);
  Result<Json> validate(const Request& r);
  Result<Json> validate_unaudited(const Request& r, const std::string& id, std::string& detail);
  Result<store::Challenge> usable_challenge(std::string_view id, std::string_view caller);
  Result<pki::RevocationAnswer> revocation_status(X509* leaf) const;
};

// ---- References ---------------------------------------------------------------------------------

Result<std::unique_ptr<pki::Validator>> PvaService::State::build_validator(
    const ReferenceMap& refs) const {
  auto anchors = pki::TrustAnchors::from_certs(raw_chain(config.supplier_roots->roots()));
  if (!anchors) return std::unexpected(anchors.error());
  auto v = std::make_unique<pki::Validator>(std::move(*anchors), config.policy);
  if (!intermediates.empty()) {
    if (auto added = v->add_intermediates(intermediates, clock); !added) {
      return fail(added.error().code, "supplier_intermediates: " + added.error().message);
    }
  }
  for (const auto& [model, set] : refs) {
    if (auto added = v->add_references(set); !added) return std::unexpected(added.error());
  }
  return v;
}

// A stored set is trusted again only if it still verifies: a signer revoked from the supplier
// roots or expired since it was registered no longer vouches for its measurements.
Result<void> PvaService::State::load_references() {
  auto stored = db.references().all();
  if (!stored) return std::unexpected(stored.error());
  for (const store::StoredReferences& s : *stored) {
    auto refs = pki::verify_references(s.text, *config.supplier_roots, intermediates, clock);
    if (!refs) {
      log::warn(kComponent, "stored references of model {} skipped: {}", s.model, refs.error());
      continue;
    }
    std::string model = refs->set().model;
    references.insert_or_assign(std::move(model), std::move(*refs));
  }
  auto built = build_validator(references);
  if (!built) return std::unexpected(built.error());
  validator = std::move(*built);
  log::info(kComponent, "{} reference set(s) loaded", references.size());
  return {};
}

HttpResponse PvaService::State::register_references(const Request& r) {
  if (!ro::service_util::media_type_is(r.http.content_type, net::kJsonContentType)) {
    return net::error_response(415, net::kUnsupportedMediaType,
                               "body: Content-Type must be application/json");
  }
  Result<Json> stored = store_references(r);
  const std::string model = stored ? stored->at("model").get<std::string>() : "-";
  return answer(
      kComponent, "references",
      record("references", model, fmt::format("supplier:{}", caller_of(r)), std::move(stored)),
      201);
}

Result<Json> PvaService::State::store_references(const Request& r) {
  auto refs = pki::verify_references(r.http.body, *config.supplier_roots, intermediates, clock);
  if (!refs) return std::unexpected(refs.error());
  const pki::ReferenceSet set = refs->set();
  std::lock_guard lock(references_mu);
  auto next = build_validator(references);
  if (!next) return std::unexpected(next.error());
  // The Validator refuses a rollback (an older set, or another with the same issue time).
  if (auto added = (*next)->add_references(*refs); !added) return std::unexpected(added.error());
  store::StoredReferences stored{set.model, set.issued, r.http.body, now()};
  if (auto put = db.references().put(stored); !put) return std::unexpected(put.error());
  references.insert_or_assign(set.model, std::move(*refs));
  {
    std::lock_guard swap(validator_mu);
    validator = std::move(*next);
  }
  flow("references_registered");
  log::info(kComponent, "references of model {} issued {} registered by supplier {}", set.model,
            unix_seconds(set.issued), caller_of(r));
  return Json{{"model", set.model}, {"issued", unix_seconds(set.issued)}};
}

// ---- Challenges and validations -----------------------------------------------------------------

Result<Json> PvaService::State::issue_challenge(const Request& r) {
  store::Challenge c;
  c.challenge_id = to_hex(thread_random().draw<kChallengeIdBytes>());
  c.sho = caller_of(r);
  c.device_id = r.json.at("device_id").get<std::string>();
  const auto nonce = thread_random().draw<kNonceBytes>();
  c.nonce.assign(nonce.begin(), nonce.end());
  c.created = now();
  c.expires = c.created + config.challenge_lifetime;
  // The challenge and its record commit together: one commit, and no challenge without its
  // record.
  const std::string principal = ro::service_util::operator_principal(c.sho);
  const std::string detail = fmt::format("device {}", c.device_id);
  auto put = ro::detail::audited_change(
      db.audit(), now(), [&] { return db.challenges().put(c); },
      [&](const auto&) {
        return ro::detail::AuditEntry{kComponent, "challenge", c.challenge_id, principal, detail};
      });
  if (!put) return std::unexpected(put.error());
  flow("challenge_issued");
  log::info(kComponent, "challenge {} for device {} issued to {}", c.challenge_id, c.device_id,
            c.sho);
  return Json{{"challenge_id", c.challenge_id},
              {"nonce", to_hex(c.nonce)},
              {"expires", unix_seconds(c.expires)}};
}

// Every refusal here leaves the challenge as it was: only the SHO that asked can use it up.
Result<store::Challenge> PvaService::State::usable_challenge(std::string_view id,
                                                             std::string_view caller) {
  auto found = db.challenges().find(id);
  if (!found) return std::unexpected(found.error());
  if (!*found) return fail(ErrorCode::not_found, fmt::format("challenge {}: unknown", id));
  if ((*found)->sho != caller) {
    return fail(ErrorCode::access_denied, fmt::format("challenge {}: issued to another SHO", id));
  }
  if ((*found)->used) {
    return fail(ErrorCode::transition_refused, fmt::format("challenge {}: already used", id));
  }
  if ((*found)->expires <= now()) {
    return fail(ErrorCode::stale_report, fmt::format("challenge {}: expired", id));
  }
  return std::move(**found);
}

// A real RFC 6960 exchange with the PVA's own responder, verified as any OCSP client would, so
// that the status the Validator sees is exactly what index.txt says at this instant.
Result<pki::RevocationAnswer> PvaService::State::revocation_status(X509* leaf) const {
  if (X509_check_issued(ocsp_issuer.get(), leaf) != X509_V_OK) {
    return fail(ErrorCode::ocsp_invalid,
                "the platform certificate is not issued by the CA this PVA answers for");
  }
  ByteVec nonce;
  auto request = pki::make_ocsp_request(leaf, ocsp_issuer.get(), thread_random(), &nonce);
  if (!request) return std::unexpected(request.error());
  const ByteVec response = ocsp.respond(*request);
  return pki::verify_ocsp_response(response, leaf, ocsp_issuer.get(), &nonce, clock,
                                   config.policy.revocation_max_age);
}

Result<Json> PvaService::State::validate(const Request& r) {
  // Answers carry ids in lowercase; requests may use either case.
  std::string id = r.json.at("challenge_id").get<std::string>();
  std::transform(id.begin(), id.end(), id.begin(), [](char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  });
  const std::string principal = ro::service_util::operator_principal(caller_of(r));
  std::string detail;
  auto verdict = validate_unaudited(r, id, detail);
  if (!verdict) return record("validation", id, principal, std::move(verdict), detail);
  // Consumed with its record in one transaction, once the verdict is signed: the crypto stays out
  // of the transaction, which holds the database's write lock. Of two submissions racing, one
  // consumes the challenge and gets its verdict; the other is transition_refused, as it would
  // have been before its checks ran.
  auto consumed = ro::detail::audited_change(
      db.audit(), now(),
      [&]() -> Result<Json> {
        if (auto used = db.challenges().consume(id); !used) return std::unexpected(used.error());
        return *verdict;  // a copy: the change may run again
      },
      [&](const auto&) {
        return ro::detail::AuditEntry{kComponent, "validation", id, principal, detail};
      });
  if (!consumed) return consumed;
  flow(consumed->at("trusted").get<bool>() ? "validated" : "refused");
  log::info(kComponent, "challenge {} of {}: {}", id, caller_of(r), detail);
  return consumed;
}

// The verdict, trusted or not, is an answer; `detail` says which, for the audit record. Nothing
// is written: the caller consumes the challenge with the record.
Result<Json> PvaService::State::validate_unaudited(const Request& r, const std::string& id,
                                                   std::string& detail) {
  const std::string caller = caller_of(r);
  auto challenge = usable_challenge(id, caller);
  if (!challenge) return std::unexpected(challenge.error());
  auto report = pki::decode_signed_report(r.json.at("report").get<std::string>());
  if (!report) return fail(report.error().code, "report: " + report.error().message);
  auto chain = ro::service_util::parse_platform_chain(r.json.at("platform_chain"));
  if (!chain) return std::unexpected(chain.error());

  X509* leaf = chain->front().get();
  std::vector<X509*> untrusted = raw_chain(*chain);
  untrusted.erase(untrusted.begin());
  const auto revocation = revocation_status(leaf);
  pki::ValidationResult result =
      current_validator()->validate(*report, leaf, untrusted, revocation, challenge->nonce, clock);
  require_device(result, challenge->device_id);
  auto signed_result = signer.sign(result);
  if (!signed_result) return std::unexpected(signed_result.error());
  detail = fmt::format("device {} {}", result.device_id,
                       result.trusted()
                           ? std::string("trusted")
                           : fmt::format("untrusted ({})", to_string(result.failures[0].code)));
  return Json{{"trusted", result.trusted()},
              {"failures", failures_json(result.failures)},
              {"result", std::move(*signed_result)}};
}

// ---- Routes -------------------------------------------------------------------------------------

Result<void> PvaService::State::add_routes() {
  namespace util = ro::service_util;
  const auto sho = [this] { return net::require_operator(config.shos); };
  std::vector<net::JsonMember> validation = util::platform_report_fields();
  validation.push_back(net::required("challenge_id", JsonSchema::hex(kChallengeIdBytes)));
  State* s = this;
  auto ocsp_route = [s](const Request& r) {
    const ByteView body(reinterpret_cast<const std::uint8_t*>(r.http.body.data()),
                        r.http.body.size());
    return net::to_http(s->ocsp.respond_http(r.http.method, r.http.target, body));
  };

  const std::array<Result<void>, 5> added = {
      router.add(
          "POST", "/v1/pva/references", [s](const Request& r) { return s->register_references(r); },
          RouteOptions{net::require_operator(config.suppliers), std::nullopt, kMaxReferencesBody}),
      router.add(
          "POST", "/v1/pva/challenges",
          util::json_handler(
              kComponent, "challenge", [s](const Request& r) { return s->issue_challenge(r); },
              201),
          RouteOptions{sho(), JsonSchema::object({net::required("device_id", util::id_schema())}),
                       kMaxJsonBody}),
      router.add(
          "POST", "/v1/pva/validations",
          util::json_handler(kComponent, "validation",
                             [s](const Request& r) { return s->validate(r); }),
          RouteOptions{sho(), JsonSchema::object(std::move(validation)), kMaxValidationBody}),
      router.add("POST", "/v1/ocsp", ocsp_route,
                 RouteOptions{nullptr, std::nullopt, kMaxOcspRequest}),
      router.add("GET", "/v1/ocsp/{request}", ocsp_route, RouteOptions{}),
  };
  for (const auto& a : added) {
    if (!a) return a;
  }
  router.set_health_check([s]() -> Result<void> {
    auto found = s->db.challenges().find("0");
    if (!found) return std::unexpected(found.error());
    return {};
  });
  return {};
}

// ---- PvaService ---------------------------------------------------------------------------------

Result<std::unique_ptr<PvaService>> PvaService::create(store::Database& db, PvaServiceConfig config,
                                                       const Clock& clock) {
  if (auto c = check_config(config); !c) return std::unexpected(c.error());
  auto responder =
      pki::OcspResponder::open(config.supplier_ca_dir, config.ocsp_signer_prefix, clock);
  if (!responder) return std::unexpected(responder.error());
  auto issuer = pki::load_certificate(config.supplier_ca_dir + "/ca.pem");
  if (!issuer) return std::unexpected(issuer.error());
  std::vector<pki::X509Ptr> certs;
  for (const auto& c : config.result_signer->certs) certs.push_back(pki::up_ref(c.get()));
  auto signer =
      pki::ResultSigner::create(pki::up_ref(config.result_signer->key.get()), std::move(certs));
  if (!signer) return fail(signer.error().code, "result_signer: " + signer.error().message);
  auto state = std::make_unique<State>(db, std::move(config), clock, std::move(*responder),
                                       std::move(*issuer), std::move(*signer));
  if (auto loaded = state->load_references(); !loaded) return std::unexpected(loaded.error());
  if (auto routes = state->add_routes(); !routes) return std::unexpected(routes.error());
  return std::unique_ptr<PvaService>(new PvaService(std::move(state)));
}

PvaService::PvaService(std::unique_ptr<State> state) : state_(std::move(state)) {}
PvaService::~PvaService() = default;

const net::Router& PvaService::router() const { return state_->router; }
net::HttpHandler PvaService::handler() const { return state_->router.handler(); }
std::size_t PvaService::body_limit() const { return kMaxReferencesBody; }

}  // namespace mcim::pva
