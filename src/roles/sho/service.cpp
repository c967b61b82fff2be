#include "roles/sho/service.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <limits>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

#include "aka/milenage.h"
#include "common/ascii.h"
#include "common/hex.h"
#include "common/log.h"
#include "net/json_schema.h"
#include "net/peer_call.h"
#include "pki/attestation.h"
#include "pki/certificate.h"
#include "pki/package.h"
#include "roles/ro/audit.h"
#include "roles/ro/auth_routes.h"
#include "roles/ro/bootstrap.h"
#include "roles/ro/icf.h"
#include "roles/ro/service_util.h"
#include "roles/sho/logic.h"
#include "tre/instruction.h"

namespace mcim::sho {
namespace {

using net::HttpResponse;
using net::Json;
using net::JsonSchema;
using net::Request;
using net::RouteOptions;
using ro::detail::audited;
using store::Subscriber;
using store::SubscriberStatus;
using namespace ro::service_util;

constexpr std::string_view kComponent = "sho";
constexpr std::size_t kMaxJsonBody = 64 * 1024;
constexpr std::size_t kMaxTokenSize = 512;
constexpr std::int64_t kMaxActivationWindow = 2'592'000;  // 30 days, as the RO's default
// An owner's nonce_lifetime_s at registration: at most a year here, and never more than the
// SHO's own nonce_lifetime (checked against it).
constexpr std::int64_t kMaxNonceLifetimeS = 366LL * 24 * 3600;
constexpr std::uint64_t kMaxSequence = (std::uint64_t{1} << 53) - 1;
constexpr std::string_view kBearerRealm = "Bearer realm=\"mcim-sho\"";
// The AuC's IMSIs are imported as one batch id: the SHO's subscribers, not a supplier's batch.
constexpr std::string_view kAucBatch = "sho";
// Package validity starts a little in the past so that a device clock slightly behind accepts it.
constexpr std::chrono::minutes kPackageSkew{5};
// Remote management (F9): the instructions issued, their answers and the reverts (F5), kept in
// the database (store::IssuedInstructionStore), the latest 10,000: the oldest answered ones go
// first.
constexpr std::size_t kMaxIssuedInstructions = 10'000;
const std::vector<std::string> kInstructionActions = {"list",    "activate", "block",
                                                      "unblock", "retire",   "delete"};

HttpResponse answer(std::string_view what, const Result<Json>& result, int ok_status = 200) {
  return ro::service_util::answer(kComponent, what, result, ok_status);
}

std::string string_at(const Json& j, std::string_view key) {
  if (!j.is_object()) return {};
  auto it = j.find(std::string(key));
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<void> check_config(const ShoServiceConfig& c) {
  if (c.operator_id.empty()) return fail(ErrorCode::missing_argument, "operator_id: required");
  if (!pki::valid_mcim_id(c.operator_id)) {
    return fail(ErrorCode::invalid_argument, "operator_id: must be an id");
  }
  for (const Owner& o : c.owners) {
    if (!pki::valid_mcim_id(o.id)) {
      return fail(ErrorCode::invalid_argument, "owners: an owner id is not an id");
    }
  }
  for (const RoEndpoint& ro : c.ros) {
    if (!pki::valid_mcim_id(ro.operator_id)) {
      return fail(ErrorCode::invalid_argument, "ros: an operator_id is not an id");
    }
    if (!ascii_digits(ro.pcid_prefix) && !ro.pcid_prefix.empty()) {
      return fail(ErrorCode::invalid_argument,
                  fmt::format("ros.{}.pcid_prefix: must be digits", ro.operator_id));
    }
    auto url = net::parse_url(ro.base_url);
    if (!url || !url->tls || url->target != "/") {
      return fail(ErrorCode::invalid_argument,
                  fmt::format("ros.{}.base_url: must be https://host:port", ro.operator_id));
    }
    if (ro.dpf_url.empty() || ro.apn.empty()) {
      return fail(ErrorCode::missing_argument,
                  fmt::format("ros.{}: dpf_url and apn are required", ro.operator_id));
    }
  }
  if (c.imsi_digits < 6 || c.imsi_digits > 15) {
    return fail(ErrorCode::invalid_argument, "imsi_digits: must be 6..15");
  }
  if (!ascii_digits(c.imsi_prefix) || c.imsi_prefix.size() < 5 ||
      c.imsi_prefix.size() >= c.imsi_digits) {
    return fail(ErrorCode::invalid_argument,
                "imsi_prefix: 5 or more digits (MCC+MNC), shorter than imsi_digits");
  }
  if (c.ind_bits > 10) return fail(ErrorCode::invalid_argument, "ind_bits: must be 0..10");
  if (c.nonce_lifetime <= std::chrono::seconds(0) || c.mcim_lifetime <= std::chrono::seconds(0)) {
    return fail(ErrorCode::invalid_argument, "nonce_lifetime, mcim_lifetime: must be positive");
  }
  if (!c.supplier_roots) return fail(ErrorCode::missing_argument, "supplier_roots: required");
  if (!c.pva_roots) return fail(ErrorCode::missing_argument, "pva_roots: required");
  auto pva = net::parse_url(c.pva_url);
  if (!pva || !pva->tls || pva->target != "/") {
    return fail(ErrorCode::invalid_argument, "pva_url: must be https://host:port");
  }
  if (!c.package_signer || !c.package_signer->key || c.package_signer->certs.empty() ||
      !c.package_signer->cert()) {
    return fail(ErrorCode::missing_argument, "package_signer: a key and its certificate");
  }
  if (X509_check_private_key(c.package_signer->cert(), c.package_signer->key.get()) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::invalid_argument, "package_signer: the key is not its certificate's");
  }
  // Packages carry the SHO as their policy owner: a signer for another operator would make every
  // package fail to seal.
  if (pki::signer_operator_id(c.package_signer->cert()) != c.operator_id) {
    return fail(ErrorCode::invalid_argument,
                "package_signer: the certificate does not name this operator");
  }
  if (!c.client) return fail(ErrorCode::missing_argument, "client: required");
  return {};
}

}  // namespace

// ---- State ------------------------------------------------------------------------------------

struct ShoService::State {
  State(store::Database& database, ShoServiceConfig cfg, const Clock& clk)
      : db(database), config(std::move(cfg)), clock(clk), router(std::string(kComponent)) {
    icf_config.restricted_sessions = false;
    icf_config.max_activation = config.mcim_lifetime;
    icf_config.dormant_period = config.mcim_lifetime;
    icf_config.credential = "imsi";
    icf_config.inactive_reason =
        "not active yet: the home operator activates it on the device's status report (F2 step 14)";
  }

  store::Database& db;
  const ShoServiceConfig config;
  const Clock& clock;
  net::Router router;
  ro::IcfConfig icf_config;

  store::Time now() const { return ro::detail::seconds_of(clock.now()); }
  void flow(std::string_view step) const { router.metrics().flow_step(step); }
  ro::Icf icf() { return ro::Icf(db, clock, thread_random(), icf_config); }

  template <class T>
  Result<T> record(std::string_view event, std::string_view subject, std::string_view principal,
                   Result<T> result, std::string detail = {}) {
    return audited(db.audit(), now(), {"sho", event, subject, principal, std::move(detail)},
                   std::move(result));
  }
  // record() of a change (a repeatable callable returning Result<T>) made with its record in one
  // transaction: one commit instead of two, and a record that cannot be stored undoes the change.
  // The change must make no network call: it holds the database's write lock.
  template <class F>
  auto record_change(std::string_view event, std::string_view subject, std::string_view principal,
                     F&& change, const std::string& detail = {}) {
    return ro::detail::audited_change(db.audit(), now(), std::forward<F>(change), [&](const auto&) {
      return ro::detail::AuditEntry{"sho", event, subject, principal, detail};
    });
  }

  Result<void> add_routes();

  // Callers.
  Result<std::string> owner_of(const Request& r) const;
  Result<void> check_ro(const Request& r, const Subscriber& s) const;
  Result<Subscriber> subscriber(std::string_view device_id);
  Result<Subscriber> subscriber_by_pcid(std::string_view pcid);
  // The subscriber a notice of the RO's (arrival, attestation) is about: addressed to this SHO,
  // from the RO that holds the PCID, for the device registered with it.
  Result<Subscriber> noticed_subscriber(const Request& r, const std::string& pcid,
                                        const std::string& device_id);
  // A notice's `sho` names this SHO.
  Result<void> addressed_here(const Request& r) const;
  // The subscriber a relay of the RO's about a device (status, discard) is about: addressed to
  // this SHO, from the RO that holds the PCID.
  Result<Subscriber> relayed_subscriber(const Request& r);
  Result<Subscriber> owned(const Request& r, const std::string& owner);

  // Peers.
  Result<Json> call(std::string_view peer, std::string_view method, const std::string& url,
                    const Json& body);
  const RoEndpoint* ro_of(std::string_view pcid) const { return logic::ro_for(config.ros, pcid); }

  // Owner endpoints (F1, F7).
  Result<Json> register_subscriber(const Request& r, const std::string& owner);
  Result<Subscriber> allocate(const Request& r, const std::string& owner, Secret<16>& k);
  Result<void> register_at_ro(const Subscriber& s, const RoEndpoint& ro, const std::string& pin);
  Result<void> order_change_at_ro(const Subscriber& s, const RoEndpoint& ro,
                                  const std::string& pin);
  SubscriberStatus validate_now(const Subscriber& s);
  Result<Json> validate_again(const Request& r, const std::string& owner);
  SubscriberStatus back_to_registered(const Subscriber& s);
  Result<void> import_into_auc(const Subscriber& s, const Secret<16>& k);
  void undo_registration(const Subscriber& s, const RoEndpoint* ro, ErrorCode why);
  Result<Json> status_of(const Request& r, const std::string& owner);
  Result<Json> activate(const Request& r, const std::string& owner);

  // RO notices (F2 steps 7, 9-11, 14).
  Result<Json> arrival(const Request& r);
  Result<void> start_validation(const Subscriber& s);
  Result<Json> attestation(const Request& r);
  Result<Json> hand_over(const Subscriber& s, const RoEndpoint& ro);

  // Packages sealed ahead (ShoServiceConfig::max_prepared_packages), by device id. A package
  // belongs to one registration: its nonce is checked before it is used.
  struct Sealed {
    std::string package_id;
    ByteVec package;
    Bytes<16> registration_nonce{};
  };
  Result<Sealed> seal(const Subscriber& s);
  void prepare(const Subscriber& s);
  std::optional<Sealed> take_prepared(const Subscriber& s);
  std::mutex prepared_mu;
  std::unordered_map<std::string, Sealed> prepared;
  Result<Json> refuse(const Subscriber& s, SubscriberStatus from, ErrorCode code);
  void tell_dpf(const Subscriber& s, ErrorCode code);
  Result<Json> status(const Request& r);

  // Remote management (F9): the operator's own staff (mTLS as this operator) instruct a device's
  // TRE through the RO's DPF; the TRE's signed answer comes back through the RO.
  // The record is the database's, so that an SHO restart loses no instruction, no answer and no
  // revert's release. F5: the delete of an owner's revert (revert_to: the operator the owner
  // moves to) and, once the TRE deleted the MCIM, the release that followed (IMSI deactivated,
  // registration handed over, subscriber removed): status released.
  using Issued = store::IssuedInstruction;
  Result<Json> instruct(const Request& r);
  Result<Issued> issue(const Subscriber& s, const tre::Instruction& ins, Issued issued);
  // F5, the owner's revert to pristine at this, the old, SHO.
  Result<Json> revert(const Request& r, const std::string& owner);
  Result<Json> revert_status(const Request& r, const std::string& owner);
  Result<void> release_to(const Subscriber& s, const std::string& to);
  // The release's steps, shared with F4's discard.
  Result<void> end_window(const Subscriber& s, std::string_view why);
  Result<void> remove_released(const Subscriber& s, std::string detail);
  // F4, at the old SHO: the RO's relay of the TRE's discard report.
  Result<Json> discard(const Request& r);
  static Result<Json> revert_json(const Issued& i);
  Result<tre::Instruction> instruction_for(const Request& r, const Subscriber& s);
  Result<void> stamp(tre::Instruction& ins);
  Result<Json> instruction_status(const Request& r);
  Result<Json> instruction_result(const Request& r);
  Result<Issued> issued(std::string_view instruction_id, std::string_view device_id);
  // The TRE's answer as it was verified when it came (nullopt while queued).
  static Result<std::optional<tre::StatusReport>> report_of(const Issued& i);
  static Result<Json> issued_json(const Issued& i);
};

// ---- Callers ----------------------------------------------------------------------------------

// Owners hold a bearer token; only its SHA-256 is configured, compared in constant time so that
// the answer's timing tells nothing about how close a guess was.
Result<std::string> ShoService::State::owner_of(const Request& r) const {
  const auto bearer = bearer_token(r);
  if (!bearer) {
    return fail(ErrorCode::unauthenticated, "Authorization: an owner's Bearer token is required");
  }
  const std::string_view token = *bearer;
  if (token.size() > kMaxTokenSize) {
    return fail(ErrorCode::unauthenticated, "Authorization: not an owner token");
  }
  const Bytes<32> digest = pki::sha256(bytes_of(token));
  const Owner* found = nullptr;
  for (const Owner& o : config.owners) {
    if (constant_time_equal(digest, o.token_sha256)) found = &o;
  }
  if (found == nullptr) return fail(ErrorCode::unauthenticated, "owner token: unknown");
  return found->id;
}

// Notices about a subscriber come from the RO that holds its PCID, no other.
Result<void> ShoService::State::check_ro(const Request& r, const Subscriber& s) const {
  const RoEndpoint* ro = ro_of(s.pcid);
  if (ro == nullptr || ro->operator_id != caller_of(r)) {
    return fail(ErrorCode::access_denied,
                fmt::format("pcid {}: held by another registration operator", s.pcid));
  }
  return {};
}

Result<Subscriber> ShoService::State::subscriber(std::string_view device_id) {
  auto s = db.subscribers().find(device_id);
  if (!s) return std::unexpected(s.error());
  if (!*s) return fail(ErrorCode::not_found, fmt::format("device {}: not registered", device_id));
  return std::move(**s);
}

Result<Subscriber> ShoService::State::subscriber_by_pcid(std::string_view pcid) {
  auto s = db.subscribers().find_by_pcid(pcid);
  if (!s) return std::unexpected(s.error());
  if (!*s) return fail(ErrorCode::not_found, fmt::format("pcid {}: no subscriber", pcid));
  return std::move(**s);
}

Result<Subscriber> ShoService::State::noticed_subscriber(const Request& r, const std::string& pcid,
                                                         const std::string& device_id) {
  if (auto here = addressed_here(r); !here) return std::unexpected(here.error());
  auto s = subscriber_by_pcid(pcid);
  if (!s) return std::unexpected(s.error());
  if (auto ok = check_ro(r, *s); !ok) return std::unexpected(ok.error());
  if (s->device_id != device_id) {
    return fail(ErrorCode::wrong_recipient,
                fmt::format("pcid {}: registered for another device", pcid));
  }
  return s;
}

Result<void> ShoService::State::addressed_here(const Request& r) const {
  if (r.json.at("sho").get<std::string>() != config.operator_id) {
    return fail(ErrorCode::wrong_recipient, "sho: another home operator");
  }
  return {};
}

Result<Subscriber> ShoService::State::relayed_subscriber(const Request& r) {
  if (auto here = addressed_here(r); !here) return std::unexpected(here.error());
  auto s = subscriber(r.json.at("device_id").get<std::string>());
  if (!s) return s;
  if (auto ok = check_ro(r, *s); !ok) return std::unexpected(ok.error());
  return s;
}

Result<Subscriber> ShoService::State::owned(const Request& r, const std::string& owner) {
  auto s = subscriber(r.param("device_id"));
  if (!s) return s;
  if (s->owner != owner) {
    return fail(ErrorCode::access_denied,
                fmt::format("device {}: registered by another owner", s->device_id));
  }
  return s;
}

// ---- Peers ------------------------------------------------------------------------------------

// One call to the RO or the PVA. A peer's refusal keeps its code (the owner learns that the RO
// does not know the PCID); a peer we cannot reach or that answers nonsense is our failure.
Result<Json> ShoService::State::call(std::string_view peer, std::string_view method,
                                     const std::string& url, const Json& body) {
  return net::call_json(*config.client, method, url, body,
                        {.peer = peer, .faults_as_io_error = true});
}

// ---- F1: registration -------------------------------------------------------------------------

// Checks, allocates, then commits in the order that can be undone: the subscriber row (it holds
// the device id, PCID and IMSI against a racing duplicate), the RO's registration, the AuC entry.
// With "change" (F4: the device is operational with another SHO's MCIM) the RO is asked to make
// this SHO the registration's successor instead, and the validation starts at once: such a device
// announces no arrival.
Result<Json> ShoService::State::register_subscriber(const Request& r, const std::string& owner) {
  const std::string pcid = r.json.at("pcid").get<std::string>();
  const bool change = r.json.contains("change") && r.json.at("change").get<bool>();
  const RoEndpoint* ro = ro_of(pcid);
  if (ro == nullptr) {
    return fail(ErrorCode::not_found,
                fmt::format("pcid {}: no registration operator holds it", pcid));
  }
  Secret<16> k;
  // The IMSI's serial and the subscriber row that holds it commit together, in one commit (the
  // checks before the serial write nothing). A registration refused after its serial was reserved
  // (a racing duplicate, a nonce lifetime too long) gives the serial back: nobody has seen it.
  std::optional<Subscriber> s;
  auto added = db.audit().atomically([&]() -> Result<void> {
    auto allocated = allocate(r, owner, k);
    if (!allocated) return std::unexpected(allocated.error());
    allocated->replacing = change;
    s = std::move(*allocated);
    return db.subscribers().add(*s);
  });
  if (!added) return std::unexpected(added.error());
  // The PIN goes to the RO only: it is in no store, log or answer of ours.
  const std::string& pin = r.json.at("pin").get_ref<const std::string&>();
  auto at_ro = change ? order_change_at_ro(*s, *ro, pin) : register_at_ro(*s, *ro, pin);
  if (!at_ro) {
    undo_registration(*s, nullptr, at_ro.error().code);
    return std::unexpected(at_ro.error());
  }
  if (auto done = import_into_auc(*s, k); !done) {
    undo_registration(*s, ro, done.error().code);
    return std::unexpected(done.error());
  }
  if (auto recorded = record(
          "register", s->device_id, fmt::format("owner:{}", owner), Result<void>{},
          fmt::format("pcid {}, imsi {}{}", s->pcid, s->imsi, change ? ", operator change" : ""));
      !recorded) {
    undo_registration(*s, ro, recorded.error().code);
    return std::unexpected(recorded.error());
  }
  flow("subscriber_registered");
  prepare(*s);
  log::info(kComponent, "device {} registered by owner {}: pcid {}, imsi {}{}", s->device_id, owner,
            s->pcid, s->imsi, change ? ", replacing another operator's MCIM" : "");
  Json out{{"device_id", s->device_id},
           {"pcid", s->pcid},
           {"imsi", s->imsi},
           {"registration_nonce", to_hex(s->registration_nonce)},
           {"nonce_expires", unix_seconds(s->nonce_expires)},
           {"status", store::to_string(s->status)}};
  if (change) {
    out["status"] = store::to_string(validate_now(*s));
    out["change"] = true;
  }
  return out;
}

// The certificate checks, then a fresh IMSI, K and nonce; nothing is stored but the IMSI's serial,
// in the caller's unit of work with the subscriber row.
Result<Subscriber> ShoService::State::allocate(const Request& r, const std::string& owner,
                                               Secret<16>& k) {
  Subscriber s;
  s.device_id = r.json.at("device_id").get<std::string>();
  s.pcid = r.json.at("pcid").get<std::string>();
  s.owner = owner;
  auto cert = pki::parse_certificate(
      bytes_of(r.json.at("platform_cert").get_ref<const std::string&>()), "platform_cert");
  if (!cert) return std::unexpected(cert.error());
  // Whatever OpenSSL disliked about the path (a bad signature included), the certificate is not
  // one of the suppliers': chain_invalid, unless it is merely out of date.
  if (auto chain = pki::verify_chain(*config.supplier_roots, cert->get(), {}, clock.now());
      !chain) {
    const ErrorCode code = chain.error().code == ErrorCode::cert_expired ? ErrorCode::cert_expired
                                                                         : ErrorCode::chain_invalid;
    return fail(code, "platform_cert: " + chain.error().message);
  }
  const auto device = pki::platform_device_id(cert->get());
  if (!device) {
    return fail(ErrorCode::chain_invalid, "platform_cert: not a platform certificate");
  }
  if (*device != s.device_id) {
    return fail(ErrorCode::invalid_argument, "platform_cert: names another device");
  }
  auto by_device = db.subscribers().find(s.device_id);
  if (!by_device) return std::unexpected(by_device.error());
  if (*by_device) {
    return fail(ErrorCode::already_exists,
                fmt::format("device {}: registered already", s.device_id));
  }
  auto by_pcid = db.subscribers().find_by_pcid(s.pcid);
  if (!by_pcid) return std::unexpected(by_pcid.error());
  if (*by_pcid) {
    return fail(ErrorCode::already_exists, fmt::format("pcid {}: registered already", s.pcid));
  }
  const std::uint64_t max = logic::max_serial(config.imsi_prefix, config.imsi_digits);
  auto serial = db.sqns().reserve("imsi-serial:" + config.imsi_prefix, 1, max);
  if (!serial) return std::unexpected(serial.error());
  s.imsi = logic::imsi_of(config.imsi_prefix, config.imsi_digits, *serial + 1);
  s.platform_cert = pki::certificate_der(cert->get());
  thread_random().fill(k.mut());
  s.registration_nonce = thread_random().draw<16>();
  s.created = s.updated = now();
  // The owner may ask for a shorter window than the SHO's, never a longer one.
  std::chrono::seconds lifetime = config.nonce_lifetime;
  if (r.json.contains("nonce_lifetime_s")) {
    const std::chrono::seconds asked(r.json.at("nonce_lifetime_s").get<std::int64_t>());
    if (asked > lifetime) {
      return fail(ErrorCode::invalid_argument,
                  fmt::format("nonce_lifetime_s: at most {} (this SHO's nonce lifetime)",
                              lifetime.count()));
    }
    lifetime = asked;
  }
  s.nonce_expires = s.created + lifetime;
  return s;
}

Result<void> ShoService::State::register_at_ro(const Subscriber& s, const RoEndpoint& ro,
                                               const std::string& pin) {
  auto put = call("ro", "PUT", ro.base_url + "/v1/drf/registrations/" + s.pcid,
                  Json{{"device_id", s.device_id},
                       {"dpf_url", ro.dpf_url},
                       {"dpf_key_pin", to_hex(ro.dpf_key_pin)},
                       {"apn", ro.apn},
                       {"pin", pin}});
  if (!put) return std::unexpected(put.error());
  return {};
}

// F4: the RO records this SHO as the registration's successor if the PIN proves the owner's
// possession of the device; the holder's subscription is untouched until the device reports the
// new install.
Result<void> ShoService::State::order_change_at_ro(const Subscriber& s, const RoEndpoint& ro,
                                                   const std::string& pin) {
  auto ordered = call("ro", "POST", ro.base_url + "/v1/drf/registrations/" + s.pcid + "/change",
                      Json{{"device_id", s.device_id}, {"pin", pin}});
  if (!ordered) return std::unexpected(ordered.error());
  return {};
}

// F4: the validation an arrival would start (the device, operational on the old SHO's IMSI, makes
// none). A failure leaves the subscriber registered (put back if it had moved to validating):
// the change ordered at the RO stands, and the owner sees the status. The status answered is the
// stored one: an attestation request the RO kept although its answer was lost may have moved the
// subscriber on meanwhile.
SubscriberStatus ShoService::State::validate_now(const Subscriber& s) {
  auto started = start_validation(s);
  if (started) return SubscriberStatus::validating;
  log::warn(kComponent, "device {}: the validation did not start: {}", s.device_id,
            started.error());
  return back_to_registered(s);
}

// F4: the owner's retry of a change whose validation did not start (`registered` with
// `replacing`). An F2 registration's validation starts at the device's arrival instead.
Result<Json> ShoService::State::validate_again(const Request& r, const std::string& owner) {
  auto s = owned(r, owner);
  if (!s) return std::unexpected(s.error());
  if (!s->replacing) {
    return fail(ErrorCode::transition_refused,
                fmt::format("device {}: not an operator change; its validation starts when the "
                            "device arrives",
                            s->device_id));
  }
  if (s->status != SubscriberStatus::registered) {
    return fail(
        ErrorCode::transition_refused,
        fmt::format("device {}: {}, not registered", s->device_id, store::to_string(s->status)));
  }
  if (auto started = start_validation(*s); !started) {
    (void)back_to_registered(*s);
    return std::unexpected(started.error());
  }
  return Json{{"device_id", s->device_id}, {"status", "validating"}};
}

// A validation that did not start: `validating` goes back to `registered` (compare and set), so
// that the owner may start it again. The status the subscriber is left in.
SubscriberStatus ShoService::State::back_to_registered(const Subscriber& s) {
  Subscriber back = s;
  back.updated = now();
  auto moved = db.subscribers().update(back, SubscriberStatus::validating);
  if (!moved && moved.error().code != ErrorCode::transition_refused) {
    log::error(kComponent, "device {}: back to registered: {}", s.device_id, moved.error());
  }
  auto stored = db.subscribers().find(s.device_id);
  return stored && *stored ? (*stored)->status : back.status;
}

// The IMSI enters the AuC dormant: it serves no vector until the device reports the install.
Result<void> ShoService::State::import_into_auc(const Subscriber& s, const Secret<16>& k) {
  store::PcidSubscription sub;
  sub.pcid = s.imsi;
  sub.k = k;
  sub.opc = Secret<16>(aka::Milenage::compute_opc(k.get(), config.op.get()));
  sub.ind_bits = config.ind_bits;
  sub.not_after = s.created + config.mcim_lifetime;
  auto imported = icf().import_batch(kAucBatch, {std::move(sub)}, fmt::format("owner:{}", s.owner));
  if (!imported) return std::unexpected(imported.error());
  return {};
}

// Best effort: a failure here is logged; the owner's answer is the original refusal. An operator
// change (F4) is not undone with a DELETE, which is the holder's: this SHO, the successor, refuses
// the change at the DPF instead, which ends it there.
void ShoService::State::undo_registration(const Subscriber& s, const RoEndpoint* ro,
                                          ErrorCode why) {
  if (ro != nullptr && s.replacing) {
    tell_dpf(s, why);
  } else if (ro != nullptr) {
    auto removed = call("ro", "DELETE", ro->base_url + "/v1/drf/registrations/" + s.pcid, nullptr);
    if (!removed) {
      log::error(kComponent, "undo registration of pcid {} at {}: {}", s.pcid, ro->operator_id,
                 removed.error());
    }
  }
  if (auto removed = db.subscribers().remove(s.device_id); !removed) {
    log::error(kComponent, "undo subscriber {}: {}", s.device_id, removed.error());
  }
}

Result<Json> ShoService::State::status_of(const Request& r, const std::string& owner) {
  auto s = owned(r, owner);
  if (!s) return std::unexpected(s.error());
  Json out{{"device_id", s->device_id},
           {"pcid", s->pcid},
           {"imsi", s->imsi},
           {"status", store::to_string(s->status)},
           {"created", unix_seconds(s->created)},
           {"updated", unix_seconds(s->updated)}};
  if (!s->package_id.empty()) out["package_id"] = s->package_id;
  if (!s->refusal.empty()) out["refusal"] = s->refusal;
  if (s->replacing) out["change"] = true;  // F4: registered by a change order
  return out;
}

// F7: relayed to the RO's ICF in the SHO's name (the RO only takes it from the PCID's home).
Result<Json> ShoService::State::activate(const Request& r, const std::string& owner) {
  auto s = owned(r, owner);
  if (!s) return std::unexpected(s.error());
  const RoEndpoint* ro = ro_of(s->pcid);
  if (ro == nullptr) {
    return fail(ErrorCode::not_found, fmt::format("pcid {}: no registration operator", s->pcid));
  }
  auto answer = call("ro", "POST", ro->base_url + "/v1/icf/pcids/" + s->pcid + "/activation",
                     Json{{"window_s", r.json.at("window_s")}});
  if (!answer) return std::unexpected(answer.error());
  if (!answer->contains("active_until") || !answer->at("active_until").is_number_integer()) {
    return fail(ErrorCode::io_error, "ro: the answer is not an activation");
  }
  return Json{
      {"device_id", s->device_id}, {"pcid", s->pcid}, {"active_until", answer->at("active_until")}};
}

// ---- F2 step 7: arrival -----------------------------------------------------------------------

Result<Json> ShoService::State::arrival(const Request& r) {
  const std::string pcid = r.json.at("pcid").get<std::string>();
  const std::string device_id = r.json.at("device_id").get<std::string>();
  auto s = noticed_subscriber(r, pcid, device_id);
  if (!s) return std::unexpected(s.error());
  if (auto ok = logic::arrival_allowed(*s, now()); !ok) {
    // The registration is over for good: the device stops waiting for an attestation request.
    if (ok.error().code == ErrorCode::registration_expired) {
      tell_dpf(*s, ok.error().code);
      (void)take_prepared(*s);  // this registration will have no package
    }
    return std::unexpected(ok.error());
  }
  flow("arrival");
  if (auto started = start_validation(*s); !started) return std::unexpected(started.error());
  return Json::object();
}

// A PVA challenge, the subscriber `validating` with it, then the RO asked to fetch the device's
// attestation over its nonce: on an arrival (F2 step 7) and at once after an operator change was
// ordered (F4).
Result<void> ShoService::State::start_validation(const Subscriber& s) {
  const std::string& pcid = s.pcid;
  const std::string& device_id = s.device_id;
  const RoEndpoint* ro = ro_of(pcid);
  if (ro == nullptr) {
    return fail(ErrorCode::not_found, fmt::format("pcid {}: no registration operator", pcid));
  }
  auto challenge =
      call("pva", "POST", config.pva_url + "/v1/pva/challenges", Json{{"device_id", device_id}});
  if (!challenge) return std::unexpected(challenge.error());
  const std::string challenge_id = string_at(*challenge, "challenge_id");
  auto nonce = parse_hex(string_at(*challenge, "nonce"), "pva: nonce");
  if (!pki::valid_mcim_id(challenge_id) || !nonce || nonce->size() < 16 || nonce->size() > 64) {
    return fail(ErrorCode::io_error, "pva: the answer is not a challenge");
  }
  flow("challenge_requested");
  Subscriber next = s;
  next.status = SubscriberStatus::validating;
  next.challenge_id = challenge_id;
  next.challenge_nonce = *nonce;
  next.package_id.clear();
  next.refusal.clear();
  next.updated = now();
  // Compare and set: of two arrivals racing, one moves on; the other is told so.
  if (auto moved = db.subscribers().update(next, s.status); !moved) {
    return std::unexpected(moved.error());
  }
  // Validating before the request exists: the attestation cannot overtake the state change. A
  // failure here leaves it validating: the RO's retry of the arrival asks afresh (F4 puts it back
  // to registered itself).
  auto requested = call("ro", "POST", ro->base_url + "/v1/dpf/attestation-requests",
                        Json{{"pcid", pcid},
                             {"device_id", device_id},
                             {"request_id", challenge_id},
                             {"nonce", to_hex(*nonce)}});
  if (!requested) return std::unexpected(requested.error());
  log::info(kComponent, "device {}: validation started at {}, challenge {} requested", device_id,
            ro->operator_id, challenge_id);
  return {};
}

// ---- F2 steps 9-11: attestation, validation, package -------------------------------------------

Result<Json> ShoService::State::attestation(const Request& r) {
  const std::string request_id = r.json.at("request_id").get<std::string>();
  const std::string pcid = r.json.at("pcid").get<std::string>();
  const std::string device_id = r.json.at("device_id").get<std::string>();
  auto s = noticed_subscriber(r, pcid, device_id);
  if (!s) return std::unexpected(s.error());
  if (auto ok = logic::attestation_allowed(*s, request_id); !ok) {
    return std::unexpected(ok.error());
  }
  // The platform is the one the owner registered: a chain for another key is not this device's,
  // whatever the PVA would say about it.
  auto chain = parse_platform_chain(r.json.at("platform_chain"));
  if (!chain) return std::unexpected(chain.error());
  if (pki::certificate_der(chain->front().get()) != s->platform_cert) {
    return fail(ErrorCode::wrong_recipient,
                "platform_chain: the leaf is not the registered platform certificate");
  }
  auto validation = call("pva", "POST", config.pva_url + "/v1/pva/validations",
                         Json{{"challenge_id", request_id},
                              {"report", r.json.at("report")},
                              {"platform_chain", r.json.at("platform_chain")}});
  if (!validation) return std::unexpected(validation.error());
  // Only the signed result counts; the PVA's plain "trusted" is a convenience for others.
  auto result = pki::verify_validation_result(string_at(*validation, "result"), *config.pva_roots,
                                              s->challenge_nonce, clock);
  if (!result) {
    // A verdict the SHO cannot rely on ends this provisioning with its code, for the owner to
    // see: the challenge is used up at the PVA, so a retry of the notice could never succeed.
    log::warn(kComponent, "device {}: the PVA's result does not verify: {}", s->device_id,
              result.error());
    return refuse(*s, SubscriberStatus::validating, result.error().code);
  }
  flow("validated");
  if (result->device_id != s->device_id) {
    return refuse(*s, SubscriberStatus::validating, ErrorCode::wrong_recipient);
  }
  if (!result->trusted()) {
    return refuse(*s, SubscriberStatus::validating, result->failures.front().code);
  }
  const RoEndpoint* ro = ro_of(pcid);
  return hand_over(*s, *ro);
}

// The DPF keeps the refusal and answers the device's next poll with it. Best effort: without it
// the device gives up at its own timeout, and the SHO's decision stands either way.
void ShoService::State::tell_dpf(const Subscriber& s, ErrorCode code) {
  const RoEndpoint* ro = ro_of(s.pcid);
  if (ro == nullptr) return;
  auto told = call(
      "ro", "POST", ro->base_url + "/v1/dpf/refusals",
      Json{{"pcid", s.pcid}, {"device_id", s.device_id}, {"code", std::string(to_string(code))}});
  if (!told)
    log::warn(kComponent, "device {}: telling the DPF of the refusal: {}", s.device_id,
              told.error());
}

Result<Json> ShoService::State::refuse(const Subscriber& s, SubscriberStatus from, ErrorCode code) {
  Subscriber next = s;
  next.status = SubscriberStatus::refused;
  next.refusal = std::string(to_string(code));
  next.updated = now();
  auto moved = record_change(
      "refuse", s.device_id, operator_principal(config.operator_id),
      [&] { return db.subscribers().update(next, from); }, next.refusal);
  if (!moved) return std::unexpected(moved.error());
  (void)take_prepared(s);  // no package for a refused device
  flow("refused");
  log::info(kComponent, "device {} refused: {}", s.device_id, next.refusal);
  tell_dpf(s, code);
  return Json{{"outcome", next.refusal}};
}

// The document binds the install to this registration (its nonce) and this TRE (sealed to the
// registered platform certificate); the sequence is the SHO's, increasing across its packages so
// that the TRE's replay check holds for every device.
Result<ShoService::State::Sealed> ShoService::State::seal(const Subscriber& s) {
  auto auc = db.pcids().find(s.imsi);
  if (!auc) return std::unexpected(auc.error());
  if (!*auc) return fail(ErrorCode::internal, fmt::format("imsi {}: not in the AuC", s.imsi));
  auto sequence = db.sqns().reserve("mcim-sequence", 1, kMaxSequence);
  if (!sequence) return std::unexpected(sequence.error());

  pki::McimDocument doc;
  doc.package_id = logic::package_id_of(config.operator_id, s.device_id, s.imsi, *sequence + 1);
  doc.device_id = s.device_id;
  doc.imsi = s.imsi;
  doc.algorithm = pki::McimAlgorithm::milenage;
  if (auto k = doc.set_key((*auc)->k.get()); !k) return std::unexpected(k.error());
  doc.opc = (*auc)->opc;
  doc.amf = icf_config.amf;
  doc.ind_bits = (*auc)->ind_bits;
  doc.policy.owner = config.operator_id;
  doc.policy.operations = {pki::McimOperation::activate,   pki::McimOperation::block,
                           pki::McimOperation::deactivate, pki::McimOperation::delete_,
                           pki::McimOperation::retire,     pki::McimOperation::unblock,
                           pki::McimOperation::update};
  doc.registration_nonce = s.registration_nonce;
  const store::Time t = now();
  doc.not_before = t - kPackageSkew;
  doc.not_after = t + config.mcim_lifetime;
  doc.sequence = *sequence + 1;

  auto cert = pki::parse_certificate(s.platform_cert, "platform_cert");
  if (!cert) return std::unexpected(cert.error());
  std::vector<X509*> intermediates;
  for (std::size_t i = 1; i < config.package_signer->certs.size(); ++i) {
    intermediates.push_back(config.package_signer->certs[i].get());
  }
  auto package =
      pki::seal_package(doc,
                        pki::PackageSigner{config.package_signer->cert(),
                                           config.package_signer->key.get(), intermediates},
                        cert->get());
  if (!package) return std::unexpected(package.error());
  return Sealed{doc.package_id, std::move(*package), s.registration_nonce};
}

// After a registration: the package sealed now, kept for the validation. Best effort: a failure
// is logged, and the package is sealed at validation instead.
void ShoService::State::prepare(const Subscriber& s) {
  if (config.max_prepared_packages == 0) return;
  {
    std::lock_guard lock(prepared_mu);
    if (prepared.size() >= config.max_prepared_packages) return;
  }
  auto sealed = seal(s);
  if (!sealed) {
    log::warn(kComponent, "device {}: package not prepared ahead: {}", s.device_id, sealed.error());
    return;
  }
  std::lock_guard lock(prepared_mu);
  if (prepared.size() < config.max_prepared_packages) {
    prepared.insert_or_assign(s.device_id, std::move(*sealed));
    flow("package_prepared");
  }
}

std::optional<ShoService::State::Sealed> ShoService::State::take_prepared(const Subscriber& s) {
  std::lock_guard lock(prepared_mu);
  auto it = prepared.find(s.device_id);
  if (it == prepared.end()) return std::nullopt;
  Sealed sealed = std::move(it->second);
  prepared.erase(it);
  // Another registration of the same device id (the first one lapsed): not this one's package.
  if (sealed.registration_nonce != s.registration_nonce) return std::nullopt;
  return sealed;
}

Result<Json> ShoService::State::hand_over(const Subscriber& s, const RoEndpoint& ro) {
  std::optional<Sealed> ready = take_prepared(s);
  if (!ready) {
    auto sealed = seal(s);
    if (!sealed) return std::unexpected(sealed.error());
    ready = std::move(*sealed);
  }
  const Sealed& doc = *ready;
  const store::Time t = now();

  // Provisioning first: of two relays of the same attestation, one seals and hands over.
  Subscriber next = s;
  next.status = SubscriberStatus::provisioning;
  next.package_id = doc.package_id;
  next.updated = t;
  if (auto moved = db.subscribers().update(next, SubscriberStatus::validating); !moved) {
    return std::unexpected(moved.error());
  }
  auto stored = call("ro", "POST", ro.base_url + "/v1/dpf/packages",
                     Json{{"pcid", s.pcid},
                          {"device_id", s.device_id},
                          {"package_id", doc.package_id},
                          {"package", to_hex(doc.package)}});
  if (!stored) {
    // Back to validating: a new arrival restarts the validation (the PVA's challenge is spent).
    Subscriber back = s;
    back.updated = now();
    if (auto moved = db.subscribers().update(back, SubscriberStatus::provisioning); !moved) {
      log::error(kComponent, "device {}: back to validating: {}", s.device_id, moved.error());
    }
    return std::unexpected(stored.error());
  }
  flow("package_handed_over");
  (void)record("package", doc.package_id, operator_principal(ro.operator_id), Result<void>{},
               fmt::format("device {}", s.device_id));
  log::info(kComponent, "device {} trusted: package {} handed to {}", s.device_id, doc.package_id,
            ro.operator_id);
  return Json{{"outcome", "trusted"}};
}

// ---- F2 step 14: the install report ------------------------------------------------------------

Result<Json> ShoService::State::status(const Request& r) {
  const std::string package_id = r.json.at("package_id").get<std::string>();
  auto s = relayed_subscriber(r);
  if (!s) return std::unexpected(s.error());
  if (auto ok = logic::status_allowed(*s, package_id); !ok) return std::unexpected(ok.error());
  const bool has_notice = r.json.contains("discard_notice");
  if (has_notice && !s->replacing) {
    return fail(
        ErrorCode::invalid_argument,
        fmt::format("discard_notice: device {} replaced no other operator's MCIM", s->device_id));
  }
  // The DPF checked the report already; the SHO trusts only the registered platform key.
  auto cert = pki::parse_certificate(s->platform_cert, "platform_cert");
  if (!cert) return std::unexpected(cert.error());
  auto report = tre::verify_install_report(r.json.at("report").get<std::string>(), cert->get(),
                                           s->device_id, package_id);
  if (!report) return std::unexpected(report.error());
  if (report->outcome != "ok") {
    const auto code = error_code_from_wire(report->outcome);
    return refuse(*s, SubscriberStatus::provisioning, code.value_or(ErrorCode::internal));
  }
  // F4: the TRE installed this package in place of another operator's MCIM; its notice of the
  // discard is what makes this IMSI the device's only one.
  if (s->replacing && !has_notice) {
    return fail(ErrorCode::missing_argument,
                "discard_notice: required for a device that replaced another operator's MCIM");
  }
  if (has_notice) {
    auto notice = tre::verify_discard_notice(r.json.at("discard_notice").get<std::string>(),
                                             cert->get(), s->device_id, package_id);
    if (!notice) return std::unexpected(notice.error());
  }
  // Active first, so that of two relays of the same report one activates; an AuC that fails
  // puts the subscriber back, for the RO's retry. The move, the AuC's activation and both their
  // records are one transaction (nothing between them leaves this process): a compare and set
  // that fails changes nothing, an AuC refusal commits with the subscriber put back and both
  // refusals recorded, and a record that cannot be stored undoes it all.
  const std::string principal = operator_principal(caller_of(r));
  const std::string detail = fmt::format("device {}, package {}", s->device_id, package_id);
  std::optional<Result<store::Time>> until;  // the AuC's answer, as recorded
  auto unit = db.audit().atomically([&]() -> Result<void> {
    until.reset();  // of an earlier run, which met a conflict
    Subscriber next = *s;
    next.status = SubscriberStatus::active;
    next.updated = now();
    if (auto moved = db.subscribers().update(next, SubscriberStatus::provisioning); !moved) {
      return std::unexpected(moved.error());
    }
    auto activated =
        icf().activate(s->imsi, config.mcim_lifetime, operator_principal(config.operator_id));
    const bool auc_activated = activated.has_value();
    until = record("activate", s->imsi, principal, std::move(activated), detail);
    if (*until) return {};
    if (auc_activated) return std::unexpected(until->error());  // not recorded: undo it all
    Subscriber back = *s;
    back.updated = now();
    if (auto moved = db.subscribers().update(back, SubscriberStatus::active); !moved) {
      log::error(kComponent, "device {}: back to provisioning: {}", s->device_id, moved.error());
    }
    return {};
  });
  if (until && !*until) {
    // The AuC's refusal, recorded alone when its transaction could not commit (as
    // audited_change records a refusal).
    if (!unit) (void)record("activate", s->imsi, principal, *until, detail);
    return std::unexpected(until->error());
  }
  if (!unit) return std::unexpected(unit.error());
  flow("activated");
  log::info(kComponent, "device {} operational: imsi {} active", s->device_id, s->imsi);
  return Json{{"outcome", "ok"}};
}

// ---- Remote management (F9) ---------------------------------------------------------------------

// What the operator asked, as the TRE will read it. The credential is the subscriber's MCIM unless
// another is named: the TRE, not the SHO, knows what else the device holds and whose it is (F6).
Result<tre::Instruction> ShoService::State::instruction_for(const Request& r, const Subscriber& s) {
  tre::Instruction ins;
  ins.device_id = s.device_id;
  const std::string action = r.json.at("action").get<std::string>();
  ins.list = action == tre::kListAction;
  if (!ins.list) ins.action = *tre::parse_action(action);  // the schema allows only actions
  ins.credential = ins.list ? "-" : s.imsi;
  if (r.json.contains("credential")) {
    if (ins.list) return fail(ErrorCode::invalid_argument, "credential: a list names none");
    ins.credential = r.json.at("credential").get<std::string>();
  }
  if (auto stamped = stamp(ins); !stamped) return std::unexpected(stamped.error());
  return ins;
}

// The time and the next sequence of the device's instructions: per device, increasing,
// persistent, so that a restart never reuses a sequence the TRE has seen.
Result<void> ShoService::State::stamp(tre::Instruction& ins) {
  ins.time = std::chrono::floor<std::chrono::seconds>(clock.now());
  auto sequence = db.sqns().reserve("instruction-sequence:" + ins.device_id, 1, kMaxSequence);
  if (!sequence) return std::unexpected(sequence.error());
  ins.sequence = *sequence + 1;
  return {};
}

Result<Json> ShoService::State::instruct(const Request& r) {
  auto s = subscriber(r.param("device_id"));
  if (!s) return std::unexpected(s.error());
  if (auto ok = logic::operational(*s); !ok) return std::unexpected(ok.error());
  auto ins = instruction_for(r, *s);
  if (!ins) return std::unexpected(ins.error());
  Issued issued;
  issued.action = r.json.at("action").get<std::string>();
  auto done = issue(*s, *ins, std::move(issued));
  if (!done) return std::unexpected(done.error());
  return issued_json(*done);
}

// Signs `ins` and queues it at the RO that holds the subscriber's PCID; remembered for its answer.
Result<ShoService::State::Issued> ShoService::State::issue(const Subscriber& s,
                                                           const tre::Instruction& ins,
                                                           Issued issued) {
  const RoEndpoint* ro = ro_of(s.pcid);
  if (ro == nullptr) {
    return fail(ErrorCode::not_found, fmt::format("pcid {}: no registration operator", s.pcid));
  }
  std::vector<X509*> certs;
  for (const auto& c : config.package_signer->certs) certs.push_back(c.get());
  auto text = tre::sign_instruction(ins, config.package_signer->key.get(), certs);
  if (!text) return std::unexpected(text.error());
  issued.instruction_id = fmt::format("ins-{}", to_hex(thread_random().draw<8>()));
  issued.device_id = s.device_id;
  issued.credential = ins.credential;
  issued.sequence = ins.sequence;
  issued.created = now();
  auto queued = call("ro", "POST", ro->base_url + "/v1/dpf/instructions",
                     Json{{"pcid", s.pcid},
                          {"device_id", s.device_id},
                          {"instruction_id", issued.instruction_id},
                          {"instruction", *text}});
  auto recorded = record("instruction", issued.instruction_id,
                         operator_principal(config.operator_id), std::move(queued),
                         fmt::format("device {}, {} {}, sequence {}", issued.device_id,
                                     issued.action, issued.credential, issued.sequence));
  if (!recorded) return std::unexpected(recorded.error());
  flow("instruction_issued");
  log::info(kComponent, "device {}: instruction {} ({} {}, sequence {}) queued at {}",
            issued.device_id, issued.instruction_id, issued.action, issued.credential,
            issued.sequence, ro->operator_id);
  if (auto put = db.issued_instructions().put(issued, kMaxIssuedInstructions); !put) {
    return std::unexpected(put.error());
  }
  return issued;
}

Result<ShoService::State::Issued> ShoService::State::issued(std::string_view instruction_id,
                                                            std::string_view device_id) {
  auto found = db.issued_instructions().find(instruction_id);
  if (!found) return std::unexpected(found.error());
  if (!*found || (*found)->device_id != device_id) {
    return fail(ErrorCode::not_found,
                fmt::format("instruction {}: none for device {}", instruction_id, device_id));
  }
  return std::move(**found);
}

Result<std::optional<tre::StatusReport>> ShoService::State::report_of(const Issued& i) {
  if (i.status == store::IssuedStatus::queued) return std::optional<tre::StatusReport>();
  auto report = tre::decode_status_report(i.report);
  if (!report) {
    return fail(ErrorCode::internal,
                fmt::format("instruction {}: the stored answer does not decode", i.instruction_id));
  }
  return std::optional<tre::StatusReport>(std::move(*report));
}

Result<Json> ShoService::State::issued_json(const Issued& i) {
  auto report = report_of(i);
  if (!report) return std::unexpected(report.error());
  Json out{{"instruction_id", i.instruction_id},
           {"device_id", i.device_id},
           {"action", i.action},
           {"credential", i.credential},
           {"sequence", i.sequence},
           {"created", unix_seconds(i.created)},
           {"status", *report ? "answered" : "queued"}};
  if (!*report) return out;
  out["outcome"] = (*report)->outcome;
  out["state"] = (*report)->state;
  out["answered"] = unix_seconds(i.answered);
  out["report"] = i.report;
  if ((*report)->event == tre::kListAction) {
    Json list = Json::array();
    for (const auto& c : (*report)->credentials) {
      list.push_back(Json{{"id", c.id}, {"state", c.state}, {"package_id", c.package_id}});
    }
    out["credentials"] = std::move(list);
  }
  return out;
}

Result<Json> ShoService::State::instruction_status(const Request& r) {
  auto i = issued(r.param("instruction_id"), r.param("device_id"));
  if (!i) return std::unexpected(i.error());
  return issued_json(*i);
}

// From the RO that holds the device's PCID, about an instruction this SHO issued for it; the
// TRE's report must verify with the registered platform key and answer that instruction.
Result<Json> ShoService::State::instruction_result(const Request& r) {
  const std::string id = r.json.at("instruction_id").get<std::string>();
  const std::string device_id = r.json.at("device_id").get<std::string>();
  if (auto here = addressed_here(r); !here) return std::unexpected(here.error());
  auto i = issued(id, device_id);
  if (!i) return std::unexpected(i.error());
  auto s = subscriber(device_id);
  if (!s) return std::unexpected(s.error());
  if (auto ok = check_ro(r, *s); !ok) return std::unexpected(ok.error());
  auto cert = pki::parse_certificate(s->platform_cert, "platform_cert");
  if (!cert) return std::unexpected(cert.error());
  const std::string text = r.json.at("report").get<std::string>();
  auto report = tre::verify_instruction_report(text, cert->get(), device_id, i->sequence);
  if (!report) return std::unexpected(report.error());
  // The revert's delete done in the TRE: the release before the answer is recorded, so that a
  // release that fails is retried with the RO's retry of this relay.
  const bool releases = !i->revert_to.empty() && report->outcome == "ok";
  if (releases) {
    if (auto done = release_to(*s, i->revert_to); !done) return std::unexpected(done.error());
  }
  // Recorded before it is shown: whoever reads the answer finds its audit record.
  auto still = db.issued_instructions().find(id);
  if (!still) return std::unexpected(still.error());
  if (!*still) return fail(ErrorCode::not_found, fmt::format("instruction {}: forgotten", id));
  if ((*still)->status != store::IssuedStatus::queued) {
    return fail(ErrorCode::transition_refused, fmt::format("instruction {}: answered", id));
  }
  auto recorded = record(
      "instruction-result", id, operator_principal(caller_of(r)), Result<void>{},
      fmt::format("device {}, outcome {}, state {}", device_id, report->outcome, report->state));
  if (!recorded) return std::unexpected(recorded.error());
  // Compare and set: of two racing relays of the answer, one is taken.
  auto answered = db.issued_instructions().answer(id, text, now(), releases);
  if (!answered) return std::unexpected(answered.error());
  flow("instruction_answered");
  log::info(kComponent, "device {}: instruction {} answered: {}", device_id, id, report->outcome);
  return Json{{"instruction_id", id}, {"outcome", report->outcome}};
}

// ---- F5: revert to pristine ---------------------------------------------------------------------

// The owner ends the subscription here and moves the device to `to`: this SHO deletes its MCIM
// with its own signed instruction (the TRE obeys no one else about it), through the F9 channel.
// Nothing else changes until the TRE has answered that it deleted it (release).
Result<Json> ShoService::State::revert(const Request& r, const std::string& owner) {
  auto s = owned(r, owner);
  if (!s) return std::unexpected(s.error());
  const std::string to = r.json.at("to").get<std::string>();
  if (to == config.operator_id) {
    return fail(ErrorCode::invalid_argument, "to: another operator than this one");
  }
  if (auto ok = logic::operational(*s); !ok) return std::unexpected(ok.error());
  auto latest = db.issued_instructions().latest_revert(s->device_id);
  if (!latest) return std::unexpected(latest.error());
  if (*latest && (*latest)->status == store::IssuedStatus::queued) {
    return fail(ErrorCode::already_exists, fmt::format("device {}: revert {} in progress",
                                                       s->device_id, (*latest)->instruction_id));
  }
  tre::Instruction ins;
  ins.device_id = s->device_id;
  ins.credential = s->imsi;
  ins.action = tre::Action::delete_;
  if (auto stamped = stamp(ins); !stamped) return std::unexpected(stamped.error());
  Issued issued;
  issued.action = "delete";
  issued.owner = owner;
  issued.revert_to = to;
  auto done = issue(*s, ins, std::move(issued));
  if (!done) return std::unexpected(done.error());
  (void)record("revert", s->device_id, fmt::format("owner:{}", owner), Result<void>{},
               fmt::format("to {}, instruction {}", operator_principal(to), done->instruction_id));
  return revert_json(*done);
}

Result<Json> ShoService::State::revert_json(const Issued& i) {
  auto report = report_of(i);
  if (!report) return std::unexpected(report.error());
  Json out{{"device_id", i.device_id},
           {"instruction_id", i.instruction_id},
           {"imsi", i.credential},
           {"to", i.revert_to},
           {"status", i.status == store::IssuedStatus::released ? "released"
                      : *report                                 ? "refused"
                                                                : "queued"}};
  if (*report) out["outcome"] = (*report)->outcome;
  return out;
}

// The owner's latest revert of the device (kept in the database like every instruction):
// queued, released, or refused with the TRE's code.
Result<Json> ShoService::State::revert_status(const Request& r, const std::string& owner) {
  const std::string device_id(r.param("device_id"));
  auto latest = db.issued_instructions().latest_revert(device_id);
  if (!latest) return std::unexpected(latest.error());
  if (!*latest || (*latest)->owner != owner) {
    return fail(ErrorCode::not_found, fmt::format("device {}: no revert of yours", device_id));
  }
  return revert_json(**latest);
}

// The TRE deleted the MCIM: the release (below) with the revert's own step between its two: the
// DRF registration goes to the operator the owner named (this SHO's authorisation of the move: it
// holds the registration). Each step may be repeated: a failure is retried with the RO's relay.
Result<void> ShoService::State::release_to(const Subscriber& s, const std::string& to) {
  if (auto ended = end_window(s, "revert"); !ended) return ended;
  const RoEndpoint* ro = ro_of(s.pcid);
  if (ro == nullptr) {
    return fail(ErrorCode::not_found, fmt::format("pcid {}: no registration operator", s.pcid));
  }
  auto moved = call("ro", "POST", ro->base_url + "/v1/drf/registrations/" + s.pcid + "/transfer",
                    Json{{"to", to}});
  if (!moved) return std::unexpected(moved.error());
  auto removed = remove_released(
      s, fmt::format("pcid {}, imsi {}, to {}", s.pcid, s.imsi, operator_principal(to)));
  if (!removed) return removed;
  log::info(kComponent, "device {} released to {}: imsi {} deactivated, pcid {} handed over",
            s.device_id, to, s.imsi, s.pcid);
  return {};
}

// The release's first step (F5, F4): the IMSI stops authenticating (its AuC window ends).
Result<void> ShoService::State::end_window(const Subscriber& s, std::string_view why) {
  return record_change(
      "deactivate", s.imsi, operator_principal(config.operator_id),
      [&] { return db.pcids().activate(s.imsi, now() - std::chrono::seconds(1)); },
      fmt::format("device {}, {}", s.device_id, why));
}

// The release's last step (F5, F4): the subscriber is removed, which frees its PCID and device id
// here.
Result<void> ShoService::State::remove_released(const Subscriber& s, std::string detail) {
  auto removed = record_change(
      "release", s.device_id, operator_principal(config.operator_id),
      [&] { return db.subscribers().remove(s.device_id); }, detail);
  if (!removed) return removed;
  flow("released");
  return {};
}

// ---- F4: the old SHO's part ---------------------------------------------------------------------

// The device installed another operator's MCIM in place of this SHO's, and its TRE signed the
// discard of this SHO's IMSI; the RO moved the registration to the new SHO already. What is left
// here is the release without the transfer. A retry of the RO's relay repeats the steps.
Result<Json> ShoService::State::discard(const Request& r) {
  auto s = relayed_subscriber(r);
  if (!s) return std::unexpected(s.error());
  if (auto ok = logic::operational(*s); !ok) return std::unexpected(ok.error());
  auto cert = pki::parse_certificate(s->platform_cert, "platform_cert");
  if (!cert) return std::unexpected(cert.error());
  auto report = tre::verify_discard_report(r.json.at("report").get<std::string>(), cert->get(),
                                           s->device_id, s->imsi);
  if (!report) return std::unexpected(report.error());
  if (auto ended = end_window(*s, "discarded (F4)"); !ended) return std::unexpected(ended.error());
  auto removed =
      remove_released(*s, fmt::format("pcid {}, imsi {}, discarded (F4)", s->pcid, s->imsi));
  if (!removed) return std::unexpected(removed.error());
  log::info(kComponent, "device {} released: its TRE discarded imsi {} (package {})", s->device_id,
            s->imsi, report->package_id);
  return Json{{"device_id", s->device_id}, {"outcome", "released"}};
}

// ---- Routes -----------------------------------------------------------------------------------

Result<void> ShoService::State::add_routes() {
  using net::required;
  State* s = this;
  auto from_ro = [s] {
    return net::require_operator_if([s](std::string_view id) {
      return std::any_of(s->config.ros.begin(), s->config.ros.end(),
                         [&](const RoEndpoint& ro) { return ro.operator_id == id; });
    });
  };
  auto json = [](net::Authorizer a, JsonSchema schema) {
    return RouteOptions{std::move(a), std::move(schema), kMaxJsonBody};
  };
  // Owner routes: the Bearer token first (its refusal carries the challenge), then the body.
  auto owner_route = [s](std::string_view what,
                         Result<Json> (State::*fn)(const Request&, const std::string&),
                         int ok = 200, std::optional<JsonSchema> schema = std::nullopt) {
    return [s, what, fn, ok, schema](const Request& r) -> HttpResponse {
      auto owner = s->owner_of(r);
      if (!owner) {
        ro::service_util::log_refusal(kComponent, what, owner.error());
        HttpResponse out = net::error_response(owner.error());
        out.headers.emplace_back("WWW-Authenticate", kBearerRealm);
        return out;
      }
      if (!schema) return answer(what, (s->*fn)(r, *owner), ok);
      Request with_body = r;
      if (auto refused = check_json_body(kComponent, what, r, *schema, with_body.json)) {
        return *refused;
      }
      return answer(what, (s->*fn)(with_body, *owner), ok);
    };
  };
  const RouteOptions owner_options{nullptr, std::nullopt, kMaxJsonBody};
  auto ro_route = [s](std::string_view what, Result<Json> (State::*fn)(const Request&)) {
    return json_handler(kComponent, what, [s, fn](const Request& r) { return (s->*fn)(r); });
  };
  const auto pcid = [] { return required("pcid", imsi_schema()); };
  const auto device = [] { return required("device_id", id_schema()); };
  const auto sho = [] { return required("sho", id_schema()); };
  std::vector<net::JsonMember> attestation_fields = {required("request_id", id_schema()), pcid(),
                                                     device(), sho()};
  for (auto& f : platform_report_fields()) attestation_fields.push_back(std::move(f));
  // The operator's own staff: mTLS with a certificate of this operator.
  auto from_operator = [s] {
    return net::require_operator_if(
        [s](std::string_view id) { return id == s->config.operator_id; });
  };

  const std::array<Result<void>, 13> added = {
      router.add(
          "POST", "/v1/subscribers",
          owner_route(
              "registration", &State::register_subscriber, 201,
              JsonSchema::object(
                  {device(), pcid(),
                   required("pin", JsonSchema::string(ro::kMaxPinSize, ascii_digits,
                                                      "4-16 decimal digits", ro::kMinPinSize)),
                   required("platform_cert", JsonSchema::string(kMaxPemSize)),
                   net::optional("nonce_lifetime_s", JsonSchema::integer(1, kMaxNonceLifetimeS)),
                   net::optional("change", JsonSchema::boolean())})),
          owner_options),
      router.add("GET", "/v1/subscribers/{device_id}", owner_route("status", &State::status_of),
                 owner_options),
      router.add("POST", "/v1/subscribers/{device_id}/activation",
                 owner_route("activation", &State::activate, 200,
                             JsonSchema::object({required(
                                 "window_s", JsonSchema::integer(1, kMaxActivationWindow))})),
                 owner_options),
      router.add("POST", "/v1/subscribers/{device_id}/validation",
                 owner_route("validation", &State::validate_again, 200, JsonSchema::object({})),
                 owner_options),
      router.add("POST", "/v1/subscribers/{device_id}/revert",
                 owner_route("revert", &State::revert, 202,
                             JsonSchema::object({required("to", id_schema())})),
                 owner_options),
      router.add("GET", "/v1/subscribers/{device_id}/revert",
                 owner_route("revert status", &State::revert_status), owner_options),
      router.add("POST", "/v1/sho/arrivals", ro_route("arrival", &State::arrival),
                 json(from_ro(),
                      JsonSchema::object(
                          {pcid(), device(), sho(),
                           required("time", JsonSchema::integer(
                                                0, std::numeric_limits<std::int64_t>::max()))}))),
      router.add("POST", "/v1/sho/attestations", ro_route("attestation", &State::attestation),
                 json(from_ro(), JsonSchema::object(std::move(attestation_fields)))),
      router.add("POST", "/v1/sho/status", ro_route("status report", &State::status),
                 json(from_ro(),
                      JsonSchema::object(
                          {required("package_id", id_schema()), device(), sho(),
                           required("report", JsonSchema::string(kMaxReportSize)),
                           net::optional("discard_notice", JsonSchema::string(kMaxReportSize))}))),
      router.add("POST", "/v1/sho/discards",
                 json_handler(kComponent, "discard",
                              [s](const Request& r) {
                                return s->record("discard", string_at(r.json, "device_id"),
                                                 operator_principal(caller_of(r)), s->discard(r));
                              }),
                 json(from_ro(), JsonSchema::object(
                                     {device(), sho(),
                                      required("report", JsonSchema::string(kMaxReportSize))}))),
      router.add(
          "POST", "/v1/operator/devices/{device_id}/instructions",
          json_handler(
              kComponent, "instruction", [s](const Request& r) { return s->instruct(r); }, 202),
          json(from_operator(),
               JsonSchema::object({required("action", JsonSchema::enumeration(kInstructionActions)),
                                   net::optional("credential", id_schema())}))),
      router.add("GET", "/v1/operator/devices/{device_id}/instructions/{instruction_id}",
                 ro_route("instruction status", &State::instruction_status),
                 RouteOptions{from_operator(), std::nullopt, kMaxJsonBody}),
      router.add("POST", "/v1/sho/instruction-results",
                 ro_route("instruction result", &State::instruction_result),
                 json(from_ro(), JsonSchema::object(
                                     {required("instruction_id", id_schema()), device(), sho(),
                                      required("report", JsonSchema::string(kMaxReportSize))}))),
  };
  for (const auto& a : added) {
    if (!a) return a;
  }
  auto auth =
      ro::add_auth_routes(router, ro::AuthRoutes{config.roaming_partners, [s] { return s->icf(); },
                                                 [s](std::string_view step) { s->flow(step); }});
  if (!auth) return auth;
  router.set_health_check([s]() -> Result<void> {
    auto n = s->db.pcids().count();
    if (!n) return std::unexpected(n.error());
    return {};
  });
  return {};
}

// ---- ShoService -------------------------------------------------------------------------------

Result<std::unique_ptr<ShoService>> ShoService::create(store::Database& db, ShoServiceConfig config,
                                                       const Clock& clock) {
  if (auto c = check_config(config); !c) return std::unexpected(c.error());
  auto state = std::make_unique<State>(db, std::move(config), clock);
  if (auto routes = state->add_routes(); !routes) return std::unexpected(routes.error());
  return std::unique_ptr<ShoService>(new ShoService(std::move(state)));
}

ShoService::ShoService(std::unique_ptr<State> state) : state_(std::move(state)) {}
ShoService::~ShoService() = default;

const net::Router& ShoService::router() const { return state_->router; }
net::HttpHandler ShoService::handler() const { return state_->router.handler(); }

}  // namespace mcim::sho
