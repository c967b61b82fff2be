#include "device/agent.h"

#include <fmt/format.h>
#include <openssl/x509.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <thread>
#include <utility>
#include <variant>

#include "common/file.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/secure.h"
#include "net/json_schema.h"
#include "net/peer_call.h"
#include "pki/openssl.h"
#include "roles/ro/bootstrap.h"
#include "roles/ro/service_util.h"

namespace mcim::device {
namespace {

using net::Json;
using net::JsonSchema;
using net::optional;
using net::required;
using ro::service_util::id_schema;
using ro::service_util::imsi_schema;
using Steady = std::chrono::steady_clock;

constexpr std::string_view kLog = "device";
// The DPF's own bound on a package; a larger answer is not one.
constexpr std::size_t kMaxPackageBytes = 64 * 1024;

bool lower_hex_id(std::string_view s) {
  return s.size() == 32 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

const JsonSchema& challenge_schema() {
  static const JsonSchema schema = JsonSchema::object({
      required("attach_id", JsonSchema::string(32, lower_hex_id, "32 lowercase hex digits", 32)),
      required("rand", JsonSchema::hex(16)),
      required("autn", JsonSchema::hex(16)),
  });
  return schema;
}

// F2's journal beside the TRE (Impl::earlier_journal): what a run kept for the next one. Strict:
// the session goes into a request's path, so it must be a token and nothing else.
const JsonSchema& journal_schema() {
  static const JsonSchema schema = JsonSchema::object({
      optional("session", JsonSchema::string(32, lower_hex_id, "32 lowercase hex digits", 32)),
      optional("package_id", id_schema()),
      // Kept by agents before the TRE could sign an install's report again; read, not used.
      optional("report", JsonSchema::string(ro::service_util::kMaxReportSize)),
  });
  return schema;
}

// F4's mark beside the TRE (Impl::post_kept): the replaced MCIM's IMSI, or, as agents before
// Tre::replacement_reports kept, the three reports themselves.
const JsonSchema& change_mark_schema() {
  static const JsonSchema schema = JsonSchema::object({
      optional("replaced", imsi_schema()),
      optional("report", JsonSchema::string(ro::service_util::kMaxReportSize)),
      optional("discard_report", JsonSchema::string(ro::service_util::kMaxReportSize)),
      optional("discard_notice", JsonSchema::string(ro::service_util::kMaxReportSize)),
  });
  return schema;
}

const JsonSchema& attachment_schema() {
  static const JsonSchema token =
      JsonSchema::string(32, lower_hex_id, "32 lowercase hex digits", 32);
  static const JsonSchema schema = JsonSchema::object({
      required("session", token),
      required("home_session", token),
      required("imsi", imsi_schema()),
      required("restricted", JsonSchema::boolean()),
      optional("gateway", JsonSchema::string(64)),
      optional("drf_url", JsonSchema::string(256)),
  });
  return schema;
}

// The pending attestation request the SHO placed at the DPF (F2 step 8).
const JsonSchema& attestation_request_schema() {
  static const JsonSchema schema = JsonSchema::object({
      required("request_id", id_schema()),
      required("nonce", JsonSchema::hex(16, 64)),
  });
  return schema;
}

// The RO's direct-access answers (F3 without AKA).
JsonSchema hex_id_schema() {
  return JsonSchema::string(32, lower_hex_id, "32 lowercase hex digits", 32);
}

const JsonSchema& direct_challenge_schema() {
  static const JsonSchema schema = JsonSchema::object({
      required("challenge_id", hex_id_schema()),
      required("nonce", JsonSchema::hex(32)),
      required("expires", JsonSchema::integer(0, std::numeric_limits<std::int64_t>::max())),
  });
  return schema;
}

const JsonSchema& direct_session_schema() {
  static const JsonSchema schema = JsonSchema::object({
      required("home_session", hex_id_schema()),
      required("imsi", imsi_schema()),
      required("restricted", JsonSchema::boolean()),
      required("expires", JsonSchema::integer(0, std::numeric_limits<std::int64_t>::max())),
      optional("drf_url", JsonSchema::string(256)),
  });
  return schema;
}

// F9: what the DPF has for an operational device.
const JsonSchema& instructions_schema() {
  static const JsonSchema schema = JsonSchema::object({
      required("device_id", id_schema()),
      required("instructions",
               JsonSchema::array(JsonSchema::object({
                                     required("instruction_id", id_schema()),
                                     required("instruction", JsonSchema::string(16 * 1024)),
                                 }),
                                 16)),
  });
  return schema;
}

// F4: the DPF session of an operational device.
const JsonSchema& dpf_session_schema() {
  static const JsonSchema schema = JsonSchema::object({
      required("session", hex_id_schema()),
      required("expires", JsonSchema::integer(0, std::numeric_limits<std::int64_t>::max())),
  });
  return schema;
}

const JsonSchema& package_schema() {
  static const JsonSchema schema = JsonSchema::object({
      required("package_id", id_schema()),
      required("package", JsonSchema::hex(1, kMaxPackageBytes)),
  });
  return schema;
}

// One request with the device's session as its bearer token (none when empty). The body is text:
// it may be a bootstrap message.
Result<net::HttpResponse> exchange(net::HttpsClient& client, std::string_view method,
                                   const std::string& url, int expected, std::string_view peer,
                                   const Json& body = nullptr, const std::string& session = {},
                                   net::Headers headers = {}) {
  if (!session.empty()) headers.emplace_back("Authorization", "Bearer " + session);
  return net::exchange(client, method, url, body,
                       {.peer = peer, .ok_status = expected, .headers = std::move(headers)});
}

Result<Json> parse_answer(const net::HttpResponse& r, const JsonSchema& schema,
                          std::string_view peer) {
  auto json = schema.parse(r.body);
  // A peer that speaks nonsense is not the device's bad input: one code for every shape error.
  if (!json) {
    return fail(ErrorCode::bad_format, fmt::format("{}: answer: {}", peer, json.error().message));
  }
  return json;
}

Attachment attachment_of(const Json& j) {
  Attachment a;
  a.imsi = j["imsi"].get<std::string>();
  a.session = j["session"].get<std::string>();
  a.home_session = j["home_session"].get<std::string>();
  a.restricted = j["restricted"].get<bool>();
  a.gateway = j.value("gateway", "");
  a.drf_url = j.value("drf_url", "");
  return a;
}

// The id of the TRE's PCID credential (the factory's, or the RO's renewal of it).
Result<std::string> pcid_of(const tre::Status& status) {
  for (const auto& c : status.credentials) {
    if (c.kind == tre::CredentialKind::pcid) return c.id;
  }
  return fail(ErrorCode::not_found, "the TRE holds no PCID credential");
}

// The RO's one-time nonce for the PCID (POST `challenges`), the TRE's attestation over it with
// the platform chain, posted to `proof` with the challenge (the direct-access proof, F3, F4, F9):
// the RO's answer to the proof.
Result<net::HttpResponse> prove_platform(tre::Tre& tre, net::HttpsClient& client,
                                         const std::string& base, std::string_view peer,
                                         const std::string& pcid, const Json& chain,
                                         std::string_view challenges, std::string_view proof,
                                         int expected) {
  auto r =
      exchange(client, "POST", base + std::string(challenges), 201, peer, Json{{"pcid", pcid}});
  if (!r) return std::unexpected(r.error());
  auto challenge = parse_answer(*r, direct_challenge_schema(), peer);
  if (!challenge) return std::unexpected(challenge.error());
  // The schema checked the size and the digits.
  const auto nonce =
      *parse_hex_fixed<32>((*challenge)["nonce"].get_ref<const std::string&>(), "nonce");
  auto report = tre.attest(nonce);
  if (!report) return with_prefix(report.error(), "tre");
  return exchange(client, "POST", base + std::string(proof), expected, peer,
                  Json{{"pcid", pcid},
                       {"challenge_id", (*challenge)["challenge_id"]},
                       {"report", *report},
                       {"platform_chain", chain}});
}

// An answer the TRE gave that the DPF has not taken yet, kept beside the TRE until it is posted:
// a round that stops after the TRE acted posts that answer next time, instead of having the TRE
// answer the same instruction again with replayed_instruction (F9). For a change (F4) and a
// renewal (F8) a mark written just before the TRE's commit, whose reports the TRE signs again.
// Nothing kept holds a secret. An id that could name something else in the directory is not
// kept.
std::optional<std::string> kept_answer_path(const tre::Tre& t, const std::string& id) {
  if (id.empty() || id.front() == '.') return std::nullopt;
  return t.dir() + "/answers/" + id;
}

// Writes `text` as the kept answer at `kept` (warned, not fatal: the post may still succeed).
void keep_answer(const tre::Tre& t, const std::optional<std::string>& kept, std::string_view what,
                 const std::string& text) {
  if (!kept || text.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(t.dir() + "/answers", ec);
  if (auto w = write_file_atomic(*kept, text, 0600); !w) {
    log::warn(kLog, "{}: answer not kept: {}", what, w.error());
  }
}

// Whether a TRE's install that failed with `e` may still be in place: a write that failed (the
// change may be on disk, or is once the TRE is opened again, Tre::open) as opposed to a refusal,
// which changed nothing. A mark of the install stays then: what reads it checks the TRE anyway.
bool may_be_committed(const Error& e) { return e.code == ErrorCode::io_error; }

// The prefix of a renewal's mark in answers/ (F8); the package id follows. The mark says the TRE
// may hold that package and the RO may not have its report (renew_over); its content is not read
// (agents before Tre::install_report kept the report itself there).
constexpr std::string_view kRenewalKept = "renewal-";

void drop_answer(const std::optional<std::string>& kept) {
  if (!kept) return;
  std::error_code ec;
  std::filesystem::remove(*kept, ec);
}

std::chrono::milliseconds ms_of(std::chrono::microseconds us) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(us);
}

}  // namespace

std::string_view to_string(Step s) {
  switch (s) {
    case Step::attach_pcid: return "attach_pcid";
    case Step::discovery: return "discovery";
    case Step::attestation: return "attestation";
    case Step::package: return "package";
    case Step::install: return "install";
    case Step::report: return "report";
    case Step::attach_imsi: return "attach_imsi";
    case Step::connect_direct: return "connect_direct";
    case Step::attach_eap: return "attach_eap";
    case Step::connect_dpf: return "connect_dpf";
  }
  return "unknown";
}

std::string_view to_string(Access a) {
  switch (a) {
    case Access::threegpp: return "3gpp";
    case Access::direct: return "direct";
    case Access::eap_aka: return "eap-aka";
    case Access::eap_aka_prime: return "eap-aka-prime";
  }
  return "unknown";
}

// One run of provision(): the deadline, what the steps learnt, the timings.
struct Agent::Impl {
  Agent& agent;
  Steady::time_point deadline;
  Outcome out;
  std::string device_id;
  Attachment pcid_session;
  std::string dpf_url;
  std::unique_ptr<net::HttpsClient> dpf;
  Json chain;
  // F2's journal (Agent::provision): what this run keeps for its next one, string members only
  // ("session", "package_id"). Holds a bearer token: the file is 0600, never logged.
  Json journal = Json::object();

  explicit Impl(Agent& a) : agent(a), deadline(Steady::now() + a.config_.timeout) {}

  // Runs one step, timed; its error names it.
  template <class F>
  Result<void> step(Step s, F&& body) {
    if (agent.config_.interrupt) {
      if (auto stop = agent.config_.interrupt(s); !stop) {
        log::warn(kLog, "{}: interrupted before it: {}", to_string(s), stop.error());
        return with_prefix(stop.error(), to_string(s));
      }
    }
    const auto start = Steady::now();
    Result<void> r = body();
    if (!r) return with_prefix(r.error(), to_string(s));
    const StepTiming t{
        s, std::chrono::duration_cast<std::chrono::microseconds>(Steady::now() - start)};
    out.steps.push_back(t);
    log::info(kLog, "{}: done in {} ms", to_string(s), ms_of(t.took).count());
    if (agent.observer_) agent.observer_(t);
    return {};
  }

  // Waits before the next try (doubling from poll_first to poll_max; the last try is at the
  // deadline); false once the deadline has passed.
  bool wait(std::chrono::milliseconds& delay) {
    const auto now = Steady::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(std::min<Steady::duration>(delay, deadline - now));
    delay = std::min(delay * 2, agent.config_.poll_max);
    return true;
  }

  // Looks (`look`: true once what it waits for is there, false while not yet) again and again,
  // waiting as wait() says in between; busy once the deadline has passed, naming `nothing` ("no
  // package from ...").
  template <class F>
  Result<void> until_there(std::string_view nothing, F&& look) {
    std::chrono::milliseconds delay = agent.config_.poll_first;
    for (;;) {
      Result<bool> there = look();
      if (!there) return std::unexpected(there.error());
      if (*there) return {};
      if (!wait(delay)) {
        return fail(ErrorCode::busy, fmt::format("{} within the timeout ({} s)", nothing,
                                                 agent.config_.timeout.count()));
      }
    }
  }

  // F4: set when the DPF is reached over the device's own connectivity with a DPF session; a DPF
  // that went away (a connection refused or cut, 5xx) or forgot the session (401, restarted) is
  // then waited for, the session opened again, and the request repeated until the deadline.
  std::function<Result<void>()> reconnect;

  static bool transient(const Error& e) {
    return e.code == ErrorCode::io_error || e.code == ErrorCode::busy ||
           e.code == ErrorCode::unauthenticated;
  }

  // One request to the DPF with the session; retried as `reconnect` says.
  Result<net::HttpResponse> dpf_call(std::string_view method, const std::string& path, int expected,
                                     const Json& body = nullptr, net::Headers headers = {}) {
    std::chrono::milliseconds delay = agent.config_.poll_first;
    for (;;) {
      auto r = exchange(*dpf, method, dpf_url + path, expected, "dpf", body,
                        pcid_session.home_session, headers);
      if (r || !reconnect || !transient(r.error())) return r;
      log::warn(kLog, "dpf: {}; reconnecting", r.error());
      if (!wait(delay)) return r;
      if (auto again = reconnect(); !again) log::warn(kLog, "dpf: {}", again.error());
    }
  }

  // GET until the answer is 200: the DPF's 404 not_found means "nothing yet". Each GET asks
  // the DPF to hold it until something comes (`Prefer: wait=N`, docs/protocol.md "Held polls");
  // a DPF that does not hold answers at once, and the waits between GETs still double.
  Result<Json> poll(const std::string& path, const JsonSchema& schema, std::string_view what) {
    Json answer;
    auto got = until_there(fmt::format("no {}", what), [&]() -> Result<bool> {
      auto r = held_get(path, agent.config_.poll_hold);
      if (!r) return not_yet(r.error());
      auto a = parse_answer(*r, schema, "dpf");
      if (!a) return std::unexpected(a.error());
      answer = std::move(*a);
      return true;
    });
    if (!got) return std::unexpected(got.error());
    return answer;
  }

  // A held GET's refusal: not_found is "nothing yet" (false), anything else the error.
  static Result<bool> not_yet(const Error& e) {
    if (e.code == ErrorCode::not_found) return false;
    return std::unexpected(e);
  }

  std::optional<std::string> journal_path() const {
    return provisioning_journal_path(agent.tre_);
  }
  void keep_journal() { keep_answer(agent.tre_, journal_path(), "provisioning", journal.dump()); }
  void drop_journal() { drop_answer(journal_path()); }

  // An earlier run's journal; empty when there is none, or it is unreadable (warned and dropped:
  // the next run starts over).
  Json earlier_journal() {
    auto text = read_text_file(*journal_path());
    if (!text) return Json::object();
    auto j = journal_schema().parse(*text);
    if (!j) {
      log::warn(kLog, "{}: journal unreadable ({}); dropped", *journal_path(), j.error());
      drop_journal();
      return Json::object();
    }
    return std::move(*j);
  }

  // The restricted session an earlier run left open, ended at the VNO: until it expires the RO
  // refuses the PCID's next attach (already_exists). A VNO that forgot it is fine.
  void end_earlier_session(const Json& earlier) {
    if (!earlier.contains("session") || agent.config_.vno_url.empty()) return;
    Attachment old;
    old.session = earlier["session"].get<std::string>();
    auto d = agent.detach(old);
    if (d) {
      log::info(kLog, "provisioning: ended the restricted session an earlier run left open");
    } else if (d.error().code != ErrorCode::not_found) {
      log::warn(kLog, "provisioning: ending an earlier run's session: {}", d.error());
    }
  }

  // One GET of the DPF, held up to `max_hold` (and config.poll_hold, and the time left).
  Result<net::HttpResponse> held_get(const std::string& path, std::chrono::seconds max_hold) {
    net::Headers prefer;
    const auto left = std::chrono::duration_cast<std::chrono::seconds>(deadline - Steady::now());
    const auto hold = std::min({agent.config_.poll_hold, max_hold, left});
    if (hold > std::chrono::seconds(0)) {
      prefer.emplace_back("Prefer", fmt::format("wait={}", hold.count()));
    }
    return dpf_call("GET", path, 200, nullptr, std::move(prefer));
  }

  Result<void> attach_pcid(const std::string& pcid) {
    return restricted_session(agent.attach(pcid));
  }

  Result<void> attach_eap(const std::string& pcid) {
    return restricted_session(agent.attach_eap(pcid));
  }

  // F2 and F3 alike end steps 1-4 with a restricted session whose gateway leads to the DRF.
  Result<void> restricted_session(Result<Attachment> a) {
    if (!a) return std::unexpected(a.error());
    pcid_session = std::move(*a);
    // Journalled before anything else can stop the run: its next run ends the session.
    journal["session"] = pcid_session.session;
    keep_journal();
    if (!pcid_session.restricted || pcid_session.gateway.empty() || pcid_session.drf_url.empty()) {
      return fail(ErrorCode::bad_format,
                  "vno: a PCID attach must open a restricted session with a gateway and a DRF");
    }
    return {};
  }

  // F3 without AKA: the RO's one-time nonce for the PCID, the TRE's attestation over it with the
  // platform chain, and the restricted session the RO opens for it. The DRF is the configured
  // one, trusted with the device's anchors: there is no VNO to introduce it, and no gateway.
  Result<void> connect_direct(const std::string& pcid) {
    auto client = net::HttpsClient::create(agent.config_.tls);
    if (!client) return std::unexpected(client.error());
    const std::string drf = net::base_url(agent.config_.drf_url);
    auto r = prove_platform(agent.tre_, **client, drf, "drf", pcid, chain,
                            "/v1/drf/direct/challenges", "/v1/drf/direct/sessions", 201);
    if (!r) return std::unexpected(r.error());
    auto j = parse_answer(*r, direct_session_schema(), "drf");
    if (!j) return std::unexpected(j.error());
    pcid_session = Attachment{};
    pcid_session.imsi = (*j)["imsi"].get<std::string>();
    pcid_session.home_session = (*j)["home_session"].get<std::string>();
    pcid_session.restricted = (*j)["restricted"].get<bool>();
    pcid_session.drf_url = drf;
    if (pcid_session.imsi != pcid || !pcid_session.restricted) {
      return fail(ErrorCode::bad_format,
                  "drf: a direct session must be a restricted one on the PCID");
    }
    log::info(kLog, "connected to the DRF directly with {}", pcid);
    return {};
  }

  // Steps 5-6 (7 is the RO's): the bootstrap, verified with the TRE's key before any of it is
  // used; then the DPF client pinned to the key it names.
  Result<void> discovery(const std::string& pcid) {
    net::HttpsClientOptions o = agent.config_.tls;
    o.proxy = pcid_session.gateway;
    o.proxy_credential = pcid_session.session;
    auto drf = net::HttpsClient::create(o);
    if (!drf) return std::unexpected(drf.error());
    auto r = exchange(**drf, "GET", net::base_url(pcid_session.drf_url) + "/v1/drf/bootstrap", 200,
                      "drf", nullptr, pcid_session.home_session);
    if (!r) return std::unexpected(r.error());
    auto key = agent.tre_.bootstrap_key();
    if (!key) return std::unexpected(key.error());
    auto fields = ro::verify_bootstrap(r->body, *key, device_id, agent.clock_.now(),
                                       agent.config_.bootstrap_max_age);
    if (!fields) return with_prefix(fields.error(), "bootstrap");
    if (fields->pcid != pcid) {
      return fail(ErrorCode::wrong_recipient, "bootstrap: made for another PCID");
    }
    dpf_url = net::base_url(fields->dpf_url);
    // The DPF is trusted by the pin alone: the bootstrap is the only introduction the device has.
    net::HttpsClientOptions pinned;
    pinned.spki_pin = fields->dpf_key_pin;
    pinned.connect_timeout = agent.config_.tls.connect_timeout;
    pinned.request_timeout = agent.config_.tls.request_timeout;
    pinned.max_response_body =
        std::max<std::size_t>(agent.config_.tls.max_response_body, 2 * kMaxPackageBytes + 1024);
    pinned.proxy = pcid_session.gateway;
    pinned.proxy_credential = pcid_session.session;
    auto client = net::HttpsClient::create(std::move(pinned));
    if (!client) return std::unexpected(client.error());
    dpf = std::move(*client);
    // When the DPF is the server the bootstrap came from (its key hashes to the pin), the DRF
    // connection, verified by the anchors and host name, serves the DPF too: one handshake and
    // one tunnel fewer. Another server or another key moves nothing (net/https_client.h).
    const bool reused = dpf->adopt_idle(**drf) > 0;
    log::info(kLog, "discovery: home operator {}, DPF {} ({})", fields->sho, dpf_url,
              reused ? "on the DRF's connection" : "new connection");
    return {};
  }

  // Steps 8-10 at the device: the request, the TRE's report over its nonce, the answer.
  Result<void> attestation() {
    auto request = poll("/v1/dpf/attestation-request", attestation_request_schema(),
                        "attestation request from the home operator");
    if (!request) return std::unexpected(request.error());
    return answer_attestation(*request);
  }

  // After an earlier run, whose attestation may have been answered already (the DPF serves a
  // request once: no other comes) with the package on its way, or at the DPF already: asks for
  // either in turn until one is there. A package is taken into `waiting`; a request is answered.
  // The request's GET is held for a second at most, so that a package is seen soon after it came.
  Result<void> attestation_or_package(std::optional<Json>& waiting, std::string_view from) {
    std::optional<Json> request;
    auto got = until_there(
        fmt::format("no attestation request and no package from {}", from), [&]() -> Result<bool> {
          auto w = package_waiting();
          if (!w) return std::unexpected(w.error());
          if (*w) {
            waiting = std::move(*w);
            log::info(kLog, "attestation: the package was at the DPF already");
            return true;
          }
          auto r = held_get("/v1/dpf/attestation-request", std::chrono::seconds(1));
          if (!r) return not_yet(r.error());
          auto a = parse_answer(*r, attestation_request_schema(), "dpf");
          if (!a) return std::unexpected(a.error());
          request = std::move(*a);
          return true;
        });
    if (!got) return got;
    if (request) return answer_attestation(*request);
    return {};
  }

  Result<void> answer_attestation(const Json& request) {
    auto nonce = parse_hex(request["nonce"].get_ref<const std::string&>(), "nonce");
    if (!nonce) return std::unexpected(nonce.error());
    auto report = agent.tre_.attest(*nonce);
    if (!report) return with_prefix(report.error(), "tre");
    const std::string id = request["request_id"].get<std::string>();
    auto r = dpf_call("POST", "/v1/dpf/attestations/" + id, 202,
                      Json{{"report", *report}, {"platform_chain", chain}});
    if (!r) return std::unexpected(r.error());
    log::info(kLog, "attestation: request {} answered", id);
    return {};
  }

  // Steps 8-12: the home operator's attestation request answered, then its package. With
  // `after_earlier` (an earlier run may have got this far) the request and a package the DPF may
  // hold already are asked for in turn (attestation_or_package): more GETs, so only then. `from`
  // names the operator in errors.
  Result<ByteVec> validated_package(bool after_earlier, std::string_view from) {
    std::optional<Json> waiting;
    if (auto r = step(Step::attestation,
                      [&]() -> Result<void> {
                        return after_earlier ? attestation_or_package(waiting, from)
                                             : attestation();
                      });
        !r) {
      return std::unexpected(r.error());
    }
    ByteVec package;
    if (auto r = step(Step::package,
                      [&]() -> Result<void> {
                        if (!waiting) {
                          auto p = poll("/v1/dpf/package", package_schema(),
                                        fmt::format("package from {}", from));
                          if (!p) return std::unexpected(p.error());
                          waiting = std::move(*p);
                        }
                        auto bytes = package_of(*waiting);
                        if (!bytes) return std::unexpected(bytes.error());
                        package = std::move(*bytes);
                        return {};
                      });
        !r) {
      return std::unexpected(r.error());
    }
    return package;
  }

  Result<ByteVec> package_of(const Json& p) {
    out.package_id = p["package_id"].get<std::string>();
    return parse_hex(p["package"].get_ref<const std::string&>(), "package");
  }

  // Step 13: the TRE's signed status report goes to the DPF whatever the install's outcome.
  // `more`: F4's discard acknowledgements beside it.
  Result<void> report(const std::string& text, Json more = Json::object()) {
    more["report"] = text;
    more["platform_chain"] = chain;
    auto r = dpf_call("POST", "/v1/dpf/packages/" + out.package_id + "/report", 200, more);
    if (!r) return std::unexpected(r.error());
    return {};
  }

  // After step 14 the SHO's AuC knows the IMSI; until then its home answers credential_unusable
  // and the device asks again.
  Result<void> attach_imsi() {
    // A direct session has no VNO side; the RO's ends when it expires.
    if (!pcid_session.session.empty()) {
      auto d = agent.detach(pcid_session);
      // The provisioning session is useless from here on; a VNO that lost it already is fine.
      if (d || d.error().code == ErrorCode::not_found) {
        drop_journal();  // the report was taken before: nothing is left for a next run
      } else {
        log::warn(kLog, "attach_imsi: detaching the PCID session: {}", d.error());
      }
    }
    if (auto a = activate_mcim(); !a) return a;
    return until_there(fmt::format("the home operator did not activate IMSI {}", out.imsi),
                       [&]() -> Result<bool> {
                         auto a = agent.attach(out.imsi);
                         if (!a && a.error().code == ErrorCode::credential_unusable) return false;
                         if (!a) return std::unexpected(a.error());
                         out.operational = std::move(*a);
                         return true;
                       });
  }

  // The MCIM activated and selected, each unless it is already (a resumed run may find either
  // done: the TRE would refuse it again as transition_refused).
  Result<void> activate_mcim() {
    const tre::Status status = agent.tre_.status();
    const auto it = std::find_if(status.credentials.begin(), status.credentials.end(),
                                 [&](const tre::CredentialInfo& c) { return c.id == out.imsi; });
    const bool selected = it != status.credentials.end() && it->state == tre::McimState::selected;
    const bool activated =
        selected || (it != status.credentials.end() && it->state == tre::McimState::activated);
    if (!activated) {
      if (auto done = agent.tre_.apply(tre::Action::activate, out.imsi); !done) {
        return with_prefix(done.error(), "tre");
      }
    }
    if (!selected) {
      if (auto done = agent.tre_.apply(tre::Action::select, out.imsi); !done) {
        return with_prefix(done.error(), "tre");
      }
    }
    return {};
  }

  // The first step: F2's attach through a VNO, or F3's direct connection to the DRF.
  Result<void> connect(const std::string& pcid) {
    switch (agent.config_.access) {
      case Access::direct: return step(Step::connect_direct, [&] { return connect_direct(pcid); });
      case Access::eap_aka:
      case Access::eap_aka_prime: return step(Step::attach_eap, [&] { return attach_eap(pcid); });
      case Access::threegpp: break;
    }
    return step(Step::attach_pcid, [&] { return attach_pcid(pcid); });
  }

  // What every run starts from: a TRE that is not locked down, its device id, its PCID and its
  // platform chain. The TRE's status.
  Result<tre::Status> begin() {
    tre::Status status = agent.tre_.status();
    if (status.state == pki::TreState::lockdown) {
      return fail(ErrorCode::lockdown, "the TRE is locked down (" + status.lockdown_reason + ")");
    }
    device_id = status.device_id;
    auto pcid = pcid_of(status);
    if (!pcid) return std::unexpected(pcid.error());
    out.pcid = std::move(*pcid);
    auto pems = platform_chain_pems(agent.tre_);
    if (!pems) return std::unexpected(pems.error());
    chain = std::move(*pems);
    return status;
  }

  Result<Outcome> run() {
    if (agent.config_.access == Access::direct && agent.config_.drf_url.empty()) {
      return fail(ErrorCode::missing_argument, "drf_url: required for direct access");
    }
    auto started = begin();
    if (!started) return std::unexpected(started.error());
    const Json earlier = earlier_journal();
    end_earlier_session(earlier);
    if (auto mcim = earlier_mcim(*started)) return resume(*mcim, earlier);

    if (auto r = connect(out.pcid); !r) return fail_with(r);
    if (auto r = step(Step::discovery, [&] { return discovery(out.pcid); }); !r)
      return fail_with(r);
    auto package = validated_package(!earlier.empty(), "the home operator");
    if (!package) return fail_with(Result<void>(std::unexpected(package.error())));
    tre::InstallOutcome installed{fail(ErrorCode::internal, "not installed"), {}};
    // The install step succeeds when the TRE answered: a refusal is reported first, then returned.
    if (auto r = step(Step::install,
                      [&]() -> Result<void> {
                        // Kept before the commit: a run stopped at any point after it finds the
                        // package named, and has the TRE sign its report again (resume).
                        journal["package_id"] = out.package_id;
                        keep_journal();
                        installed = agent.tre_.install(*package);
                        if (!installed.result && !may_be_committed(installed.result.error())) {
                          journal.erase("package_id");
                          keep_journal();
                        }
                        return {};
                      });
        !r) {
      return fail_with(r);  // stopped before it (Agent::config.interrupt)
    }
    if (!installed.result && may_be_committed(installed.result.error())) {
      // Not reported: the MCIM may be in the TRE once it is opened again, and a report of the
      // failure would end at the home operator a provisioning that took place. The journal
      // names the package; the next run finds out which it was (resume, or the package again).
      return fail_with(Result<void>(with_prefix(installed.result.error(), "install")));
    }
    if (installed.report.empty()) {
      return fail_with(Result<void>(with_prefix(installed.result.error(), "install")));
    }
    if (auto r = step(Step::report, [&] { return report(installed.report); }); !r)
      return fail_with(r);
    if (!installed.result) {
      return fail_with(Result<void>(with_prefix(installed.result.error(), "install")));
    }
    out.imsi = installed.result->id;
    return operational();
  }

  // The MCIM an earlier run installed, which this one resumes with: the selected one, else an
  // activated one, else one only installed.
  static std::optional<tre::CredentialInfo> earlier_mcim(const tre::Status& status) {
    std::optional<tre::CredentialInfo> found;
    auto rank = [](tre::McimState s) {
      switch (s) {
        case tre::McimState::selected: return 3;
        case tre::McimState::activated: return 2;
        case tre::McimState::installed: return 1;
        default: return 0;
      }
    };
    for (const auto& c : status.credentials) {
      if (c.kind != tre::CredentialKind::mcim || rank(c.state) == 0) continue;
      if (!found || rank(c.state) > rank(found->state)) found = c;
    }
    return found;
  }

  // F2 after an earlier run committed the install of `mcim`. While the journal names its package
  // the report may not have reached the DPF: the TRE signs it again and it goes there (the DPF
  // may have it already: transition_refused); then what is left is done.
  Result<Outcome> resume(const tre::CredentialInfo& mcim, const Json& earlier) {
    out.resumed = true;
    out.imsi = mcim.id;
    out.package_id = mcim.package_id;
    log::info(kLog, "provisioning: resuming with {} ({}), installed by an earlier run", out.imsi,
              tre::to_string(mcim.state));
    if (earlier.value("package_id", "") != mcim.package_id) {
      drop_journal();  // the report was taken before the journal went, or it names another package
      return operational();
    }
    journal = Json{{"package_id", mcim.package_id}};  // its session was ended above
    if (auto r = reach_dpf(); !r) return fail_with(r);
    if (auto r = step(Step::report,
                      [&]() -> Result<void> {
                        auto signed_again = agent.tre_.install_report(mcim.id);
                        if (!signed_again) return with_prefix(signed_again.error(), "tre");
                        auto posted = report(*signed_again);
                        if (posted || posted.error().code == ErrorCode::transition_refused) {
                          return {};
                        }
                        return posted;
                      });
        !r) {
      return fail_with(r);
    }
    return operational();
  }

  // A resumed run's way to the DPF for the kept report: a new restricted session and the
  // bootstrap, as F2 starts; with direct access a DPF session opened with the platform key (the
  // RO would refuse a new direct session while the earlier run's lasts, and the device cannot end
  // that one).
  Result<void> reach_dpf() {
    if (agent.config_.access == Access::direct) {
      if (auto c = direct_dpf_client(); !c) return c;
      return step(Step::connect_dpf, [&] { return connect_dpf(out.pcid); });
    }
    if (auto r = connect(out.pcid); !r) return r;
    return step(Step::discovery, [&] { return discovery(out.pcid); });
  }

  // After the report was taken: the MCIM made operational. Without a restricted session to end
  // (direct access) the journal goes now; attach_imsi drops it once it ended the session.
  Result<Outcome> operational() {
    if (pcid_session.session.empty()) drop_journal();
    if (agent.config_.access == Access::direct && agent.config_.vno_url.empty()) {
      // Direct access and no 3GPP network configured: the MCIM is ready for the first one.
      if (auto r = activate_mcim(); !r)
        return fail_with(Result<void>(with_prefix(r.error(), "activate")));
      log::info(kLog, "provisioned {} without a visited network: not attached", out.imsi);
      return std::move(out);
    }
    if (auto r = step(Step::attach_imsi, [&] { return attach_imsi(); }); !r) return fail_with(r);
    return std::move(out);
  }

  static std::unexpected<Error> fail_with(const Result<void>& r) {
    log::warn(kLog, "provisioning failed: {}", r.error());
    return std::unexpected(r.error());
  }

  // ---- F4 ----------------------------------------------------------------------------------

  // The RO's DPF at config.drf_url over the device's own connectivity, trusted with config.tls,
  // for DPF sessions (connect_dpf): F4, and F2 resumed with direct access.
  Result<void> direct_dpf_client() {
    net::HttpsClientOptions o = agent.config_.tls;
    o.max_response_body = std::max<std::size_t>(o.max_response_body, 2 * kMaxPackageBytes + 1024);
    auto client = net::HttpsClient::create(std::move(o));
    if (!client) return std::unexpected(client.error());
    dpf = std::move(*client);
    dpf_url = net::base_url(agent.config_.drf_url);
    reconnect = [this] { return connect_dpf(out.pcid); };
    return {};
  }

  // F4 step 4 at the device: the platform key proven to the DPF (the management challenge) for a
  // DPF session, the bearer of the device routes for a device that has no ICF session.
  Result<void> connect_dpf(const std::string& pcid) {
    auto r = prove_platform(agent.tre_, *dpf, dpf_url, "dpf", pcid, chain,
                            "/v1/dpf/management/challenges", "/v1/dpf/management/sessions", 201);
    if (!r) return std::unexpected(r.error());
    auto j = parse_answer(*r, dpf_session_schema(), "dpf");
    if (!j) return std::unexpected(j.error());
    pcid_session = Attachment{};
    pcid_session.home_session = (*j)["session"].get<std::string>();
    log::info(kLog, "dpf session opened with the platform key");
    return {};
  }

  // The package, if the DPF holds one for the device already (an earlier run was validated):
  // one GET, not held.
  Result<std::optional<Json>> package_waiting() {
    auto r = dpf_call("GET", "/v1/dpf/package", 200);
    if (!r && r.error().code == ErrorCode::not_found) return std::optional<Json>();
    if (!r) return std::unexpected(r.error());
    auto j = parse_answer(*r, package_schema(), "dpf");
    if (!j) return std::unexpected(j.error());
    return std::optional<Json>(std::move(*j));
  }

  // The reports of a replacement, as kept and as posted.
  static Json change_reports(const tre::ReplaceOutcome& r) {
    return Json{{"report", r.install.report},
                {"discard_report", r.discard_report},
                {"discard_notice", r.discard_notice}};
  }

  // Posts the reports of a committed replacement (change_reports' members); the DPF taking them
  // now or before (transition_refused) ends their keeping at `kept`.
  Result<void> post_reports(Json reports, const std::optional<std::string>& kept) {
    std::string install = reports["report"].get<std::string>();
    reports.erase("report");
    auto posted = report(install, std::move(reports));
    if (posted || posted.error().code == ErrorCode::transition_refused) {
      drop_answer(kept);
      return {};
    }
    return posted;
  }

  // What an earlier run kept at `kept` for a committed replacement (resume): the replaced
  // credential's id, whose reports the TRE signs again, or (agents before
  // Tre::replacement_reports) the reports themselves; posted. Nothing kept: taken before.
  Result<void> post_kept(const std::optional<std::string>& kept) {
    auto text = kept ? read_text_file(*kept) : Result<std::string>(fail(ErrorCode::not_found, ""));
    if (!text) return {};  // none kept: posted before, or never made
    auto j = change_mark_schema().parse(*text);
    if (j && j->size() == 1 && j->contains("replaced")) {
      auto again = agent.tre_.replacement_reports(out.imsi, (*j)["replaced"].get<std::string>());
      if (!again) return with_prefix(again.error(), "tre");
      return post_reports(change_reports(*again), kept);
    }
    if (!j || j->contains("replaced") || j->size() != 3) {
      log::warn(kLog, "{}: kept mark unreadable ({}); dropped", *kept,
                j ? "neither a replaced IMSI nor three reports" : j.error().message);
      drop_answer(kept);
      return {};
    }
    return post_reports(std::move(*j), kept);
  }

  Result<ChangeOutcome> change() {
    if (agent.config_.drf_url.empty()) {
      return fail(ErrorCode::missing_argument, "drf_url: required for an operator change");
    }
    auto started = begin();
    if (!started) return std::unexpected(started.error());
    const tre::Status& status = *started;
    // The operational MCIM is the one to replace: the selected one, else the one activated. An
    // MCIM only installed, with none operational, is an earlier run's, committed: resume it.
    const tre::CredentialInfo* operational = nullptr;
    const tre::CredentialInfo* installed = nullptr;
    for (const auto& c : status.credentials) {
      if (c.kind != tre::CredentialKind::mcim) continue;
      if (c.state == tre::McimState::selected ||
          (c.state == tre::McimState::activated && operational == nullptr)) {
        operational = &c;
      }
      if (c.state == tre::McimState::installed) installed = &c;
    }
    if (operational == nullptr && installed == nullptr) {
      return fail(ErrorCode::not_found, "the TRE holds no operational MCIM to replace");
    }
    ChangeOutcome result;
    if (auto c = direct_dpf_client(); !c) return std::unexpected(c.error());
    if (auto r = step(Step::connect_dpf, [&] { return connect_dpf(out.pcid); }); !r)
      return fail_with(r);

    if (operational == nullptr) {
      result.resumed = true;
      out.imsi = installed->id;
      out.package_id = installed->package_id;
      if (auto r = step(Step::report,
                        [&] { return post_kept(change_mark_path(agent.tre_, out.package_id)); });
          !r) {
        return fail_with(r);
      }
      log::info(kLog, "change: resumed with {} installed before", out.imsi);
    } else {
      result.replaced = operational->id;
      const bool was_selected = operational->state == tre::McimState::selected;
      // Whether an earlier run got as far as the attestation or the package cannot be told here.
      auto validated = validated_package(true, "the new home operator");
      if (!validated) return fail_with(Result<void>(std::unexpected(validated.error())));
      const ByteVec package = std::move(*validated);
      tre::ReplaceOutcome replaced{{fail(ErrorCode::internal, "not installed"), {}}, {}, {}};
      const auto kept = change_mark_path(agent.tre_, out.package_id);
      if (auto r = step(Step::install,
                        [&]() -> Result<void> {
                          // A credential carrying connectivity cannot be discarded: the TRE ends
                          // its use first (the device's IP session lasts until it detaches).
                          if (was_selected) {
                            auto d = agent.tre_.apply(tre::Action::deselect, result.replaced);
                            if (!d) return with_prefix(d.error(), "tre");
                          }
                          // Marked before the commit: a run stopped at any point after it has
                          // the TRE sign the reports again (post_kept).
                          keep_answer(agent.tre_, kept, "change",
                                      Json{{"replaced", result.replaced}}.dump());
                          replaced = agent.tre_.install_replacing(package, result.replaced);
                          if (!replaced.install.result &&
                              !may_be_committed(replaced.install.result.error())) {
                            drop_answer(kept);
                          }
                          return {};
                        });
          !r) {
        return fail_with(r);
      }
      if (!replaced.install.result && may_be_committed(replaced.install.result.error())) {
        // Not reported, as in provision(): the replacement may be in the TRE once it is opened
        // again. The mark stays; the next run resumes it (post_kept) or, finding the old MCIM
        // still there, changes again.
        return fail_with(Result<void>(with_prefix(replaced.install.result.error(), "install")));
      }
      if (!replaced.install.result && was_selected) {
        // Refused: nothing changed but the selection, which comes back.
        if (auto s = agent.tre_.apply(tre::Action::select, result.replaced); !s) {
          log::warn(kLog, "change: selecting {} again: {}", result.replaced, s.error());
        }
      }
      if (replaced.install.report.empty()) {
        return fail_with(Result<void>(with_prefix(replaced.install.result.error(), "install")));
      }
      if (auto r = step(Step::report,
                        [&]() -> Result<void> {
                          if (!replaced.install.result) return report(replaced.install.report);
                          return post_reports(change_reports(replaced), kept);
                        });
          !r) {
        return fail_with(r);
      }
      if (!replaced.install.result) {
        return fail_with(Result<void>(with_prefix(replaced.install.result.error(), "install")));
      }
      out.imsi = replaced.install.result->id;
      log::info(kLog, "change: {} replaced by {}", result.replaced, out.imsi);
    }
    if (agent.config_.vno_url.empty()) {
      if (auto r = activate_mcim(); !r)
        return fail_with(Result<void>(with_prefix(r.error(), "activate")));
    } else if (auto r = step(Step::attach_imsi, [&] { return attach_imsi(); }); !r) {
      return fail_with(r);
    }
    result.imsi = out.imsi;
    result.package_id = out.package_id;
    result.operational = std::move(out.operational);
    result.steps = std::move(out.steps);
    return result;
  }
};

Result<Json> platform_chain_pems(const tre::Tre& tre) {
  auto certs = pki::load_certificates(tre.dir() + "/platform.pem");
  if (!certs) return std::unexpected(certs.error());
  if (certs->empty() || X509_cmp(certs->front().get(), tre.platform_certificate()) != 0) {
    return fail(ErrorCode::integrity_failed,
                "platform.pem does not start with the TRE's platform certificate");
  }
  Json out = Json::array();
  for (const auto& c : *certs) {
    auto pem = pki::certificate_pem(c.get());
    if (!pem) return std::unexpected(pem.error());
    out.push_back(std::move(*pem));
  }
  return out;
}

std::string provisioning_journal_path(const tre::Tre& tre) {
  return tre.dir() + "/answers/.provisioning";  // no kept answer's name starts with '.'
}

std::optional<std::string> change_mark_path(const tre::Tre& tre, std::string_view package_id) {
  return kept_answer_path(tre, std::string(package_id));
}

std::string renewal_mark_path(const tre::Tre& tre, std::string_view package_id) {
  return *kept_answer_path(tre, std::string(kRenewalKept) + std::string(package_id));
}

Agent::Agent(tre::Tre& tre, AgentConfig config, const Clock& clock)
    : tre_(tre), config_(std::move(config)), clock_(clock) {}

namespace {

const JsonSchema& renewal_schema() {
  static const JsonSchema schema = JsonSchema::object({
      required("package_id", id_schema()),
      required("package", JsonSchema::hex(1, kMaxPackageBytes)),
      required("not_after", JsonSchema::integer(0, 253402300799)),
  });
  return schema;
}

// The offer and, when there is one, the TRE's install and its report; over `session`.
Result<RenewalOutcome> renew_over(tre::Tre& tre, net::HttpsClient& ro, const std::string& base,
                                  const Attachment& session, const Json& chain,
                                  const std::function<Result<void>(Step)>& interrupt) {
  auto r = exchange(ro, "POST", base + "/v1/dpf/pcid-renewal", 200, "ro",
                    Json{{"platform_chain", chain}}, session.home_session);
  if (!r && r.error().code == ErrorCode::not_found) return RenewalOutcome{};
  if (!r) return std::unexpected(r.error());
  auto offer = parse_answer(*r, renewal_schema(), "ro");
  if (!offer) return std::unexpected(offer.error());
  RenewalOutcome out;
  out.package_id = (*offer)["package_id"].get<std::string>();
  out.not_after =
      std::chrono::sys_seconds(std::chrono::seconds((*offer)["not_after"].get<std::int64_t>()));
  auto package = parse_hex((*offer)["package"].get<std::string>(), "package");
  if (!package) return std::unexpected(package.error());
  // Once the TRE holds the new K, the ICF's vectors do not verify until it has the report: so the
  // renewal is marked before the commit, and the mark stays until the RO took the report
  // (send_kept_renewals has the TRE sign it again for a run stopped in between).
  if (interrupt) {
    if (auto stop = interrupt(Step::install); !stop) return with_prefix(stop.error(), "install");
  }
  const auto kept = renewal_mark_path(tre, out.package_id);
  keep_answer(tre, kept, "renewal " + out.package_id, Json{{"package_id", out.package_id}}.dump());
  tre::InstallOutcome installed = tre.renew_pcid(*package);
  if (!installed.result && may_be_committed(installed.result.error())) {
    // Not reported: a failure report would end the renewal at the ICF while the TRE may hold the
    // new K once opened again. The mark stays; the next run sends the report if the TRE has the
    // package, and drops the mark if not (send_kept_renewals).
    return with_prefix(installed.result.error(), "tre");
  }
  if (!installed.result) drop_answer(kept);  // nothing changed: the refusal is only reported
  if (installed.report.empty()) return with_prefix(installed.result.error(), "tre");
  if (interrupt) {
    if (auto stop = interrupt(Step::report); !stop) return with_prefix(stop.error(), "report");
  }
  auto reported =
      exchange(ro, "POST", base + "/v1/dpf/pcid-renewal/" + out.package_id + "/report", 200, "ro",
               Json{{"report", installed.report}, {"platform_chain", chain}}, session.home_session);
  if (reported || reported.error().code == ErrorCode::transition_refused) drop_answer(kept);
  if (!installed.result) return with_prefix(installed.result.error(), "tre");
  if (!reported) return with_prefix(reported.error(), "report");
  out.renewed = true;
  return out;
}

// A renewal report that may not have reached the RO (F8, a mark renew_over left): the TRE has the
// new K, the ICF the old one with the new one staged, so an attach with the PCID fails at the TRE
// (the network's AUTN does not verify). The TRE signs the report again when its PCID credential is
// that package's (else the renewal never committed and the mark goes); it goes over a DPF
// session, which the platform key opens without AKA.
Result<void> send_kept_renewals(tre::Tre& tre, const AgentConfig& config, const std::string& pcid,
                                const Json& chain) {
  std::string renewed;  // the package of the TRE's PCID credential now
  for (const auto& c : tre.status().credentials) {
    if (c.id == pcid) renewed = c.package_id;
  }
  // Only the mark of that package can have a report to send; any other is dropped.
  bool marked = false;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(tre.dir() + "/answers", ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with(kRenewalKept)) continue;
    if (name.substr(kRenewalKept.size()) == renewed) {
      marked = true;
    } else {
      drop_answer(kept_answer_path(tre, name));  // not installed: nothing to report
    }
  }
  if (!marked) return {};
  if (config.drf_url.empty()) {
    return fail(ErrorCode::missing_argument, "drf_url: needed to send a kept renewal report");
  }
  auto client = net::HttpsClient::create(config.tls);
  if (!client) return std::unexpected(client.error());
  const std::string dpf = net::base_url(config.drf_url);
  auto r = prove_platform(tre, **client, dpf, "dpf", pcid, chain, "/v1/dpf/management/challenges",
                          "/v1/dpf/management/sessions", 201);
  if (!r) return std::unexpected(r.error());
  auto session = parse_answer(*r, dpf_session_schema(), "dpf");
  if (!session) return std::unexpected(session.error());
  const std::string bearer = (*session)["session"].get<std::string>();
  auto text = tre.install_report(pcid);
  if (!text) return with_prefix(text.error(), "renewal " + renewed + ": tre");
  auto posted = exchange(**client, "POST", dpf + "/v1/dpf/pcid-renewal/" + renewed + "/report", 200,
                         "dpf", Json{{"report", *text}, {"platform_chain", chain}}, bearer);
  // Taken now or before; or no longer the staged one (transition_refused), nothing to repeat.
  if (!posted && posted.error().code != ErrorCode::transition_refused) {
    return with_prefix(posted.error(), "renewal " + renewed);
  }
  drop_answer(renewal_mark_path(tre, renewed));
  log::info(kLog, "renewal {}: its kept report reached the RO", renewed);
  return {};
}

}  // namespace

Result<RenewalOutcome> Agent::renew_pcid() {
  auto found = pcid_of(tre_.status());
  if (!found) return std::unexpected(found.error());
  const std::string pcid = std::move(*found);
  auto chain = platform_chain_pems(tre_);
  if (!chain) return std::unexpected(chain.error());
  if (auto sent = send_kept_renewals(tre_, config_, pcid, *chain); !sent) {
    log::warn(kLog, "renew_pcid: a kept renewal report not sent: {}", sent.error());
  }
  auto session = attach(pcid);
  if (!session) return with_prefix(session.error(), "attach_pcid");
  if (!session->restricted || session->gateway.empty() || session->drf_url.empty()) {
    (void)detach(*session);
    return fail(ErrorCode::bad_format,
                "vno: a PCID attach must open a restricted session with a gateway and a DRF");
  }
  net::HttpsClientOptions o = config_.tls;
  o.proxy = session->gateway;
  o.proxy_credential = session->session;
  o.max_response_body = std::max<std::size_t>(o.max_response_body, 2 * kMaxPackageBytes + 1024);
  auto ro = net::HttpsClient::create(std::move(o));
  Result<RenewalOutcome> out =
      ro ? renew_over(tre_, **ro, net::base_url(session->drf_url), *session, *chain,
                      config_.interrupt)
         : Result<RenewalOutcome>(std::unexpected(ro.error()));
  if (auto d = detach(*session); !d) log::warn(kLog, "renew_pcid: detaching: {}", d.error());
  if (out && out->renewed)
    log::info(kLog, "pcid {} renewed until {}", pcid, out->not_after.time_since_epoch().count());
  return out;
}

void Agent::on_step(std::function<void(const StepTiming&)> observer) {
  observer_ = std::move(observer);
}

Result<Outcome> Agent::provision() { return Impl(*this).run(); }

Result<ChangeOutcome> Agent::change_operator() { return Impl(*this).change(); }



namespace {

// The kept answer to m's instruction, if there is one that verifies with this TRE's key.
bool earlier_answer(const tre::Tre& t, const std::optional<std::string>& kept,
                    ManagedInstruction& m) {
  if (!kept) return false;
  auto text = read_text_file(*kept);
  if (!text) return false;
  auto report = tre::verify_status_report(*text, t.platform_certificate());
  if (!report) return false;
  m.report = std::move(*text);
  m.outcome = report->outcome;
  return true;
}

void apply_and_keep(tre::Tre& t, const std::optional<std::string>& kept, ManagedInstruction& m) {
  tre::InstructionOutcome applied = t.apply_instruction(m.instruction);
  m.outcome = applied.result ? "ok" : std::string(applied.result.error().wire_code());
  m.report = std::move(applied.report);
  keep_answer(t, kept, "instruction " + m.instruction_id, m.report);
}

}  // namespace

Result<std::vector<ManagedInstruction>> Agent::manage() {
  if (config_.drf_url.empty()) {
    return fail(ErrorCode::missing_argument, "drf_url: required for remote management");
  }
  auto found = pcid_of(tre_.status());
  if (!found) return std::unexpected(found.error());
  const std::string pcid = std::move(*found);
  auto chain = platform_chain_pems(tre_);
  if (!chain) return std::unexpected(chain.error());
  auto client = net::HttpsClient::create(config_.tls);
  if (!client) return std::unexpected(client.error());
  const std::string dpf = net::base_url(config_.drf_url);
  auto r = prove_platform(tre_, **client, dpf, "dpf", pcid, *chain, "/v1/dpf/management/challenges",
                          "/v1/dpf/management/instructions", 200);
  if (!r) return std::unexpected(r.error());
  auto pending = parse_answer(*r, instructions_schema(), "dpf");
  if (!pending) return std::unexpected(pending.error());
  std::vector<ManagedInstruction> out;
  for (const Json& item : (*pending)["instructions"]) {
    ManagedInstruction m;
    m.instruction_id = item["instruction_id"].get<std::string>();
    m.instruction = item["instruction"].get<std::string>();
    const auto kept = kept_answer_path(tre_, m.instruction_id);
    if (!earlier_answer(tre_, kept, m)) apply_and_keep(tre_, kept, m);
    log::info(kLog, "instruction {}: {}", m.instruction_id, m.outcome);
    if (m.report.empty()) {
      out.push_back(std::move(m));
      continue;  // a TRE that cannot sign has nothing to say; the operator's copy stays queued
    }
    auto posted =
        exchange(**client, "POST", dpf + "/v1/dpf/instructions/" + m.instruction_id + "/result",
                 200, "dpf", Json{{"report", m.report}, {"platform_chain", *chain}});
    // Taken now, taken before (transition_refused) or forgotten by the DPF (not_found): the kept
    // answer has served.
    if (posted || posted.error().code == ErrorCode::transition_refused ||
        posted.error().code == ErrorCode::not_found) {
      drop_answer(kept);
    }
    if (!posted) return with_prefix(posted.error(), "instruction " + m.instruction_id);
    out.push_back(std::move(m));
  }
  return out;
}

// One client towards the VNO for the agent's life: its attaches, polls for activation and
// detaches reuse the kept-alive connection instead of a TLS handshake each.
Result<net::HttpsClient*> Agent::vno_client() {
  if (!vno_) {
    auto client = net::HttpsClient::create(config_.tls);
    if (!client) return std::unexpected(client.error());
    vno_ = std::move(*client);
  }
  return vno_.get();
}

Result<Attachment> Agent::attach(std::string_view id) {
  auto client = vno_client();
  if (!client) return std::unexpected(client.error());
  const std::string vno = net::base_url(config_.vno_url);
  const std::string imsi(id);
  auto r = exchange(**client, "POST", vno + "/v1/attach", 200, "vno", Json{{"imsi", imsi}});
  if (!r) return std::unexpected(r.error());
  for (unsigned resyncs = 0;; ++resyncs) {
    auto c = parse_answer(*r, challenge_schema(), "vno");
    if (!c) return std::unexpected(c.error());
    const std::string attach_id = (*c)["attach_id"].get<std::string>();
    // The schema checked the sizes and the digits.
    const auto rand = *parse_hex_fixed<16>((*c)["rand"].get_ref<const std::string&>(), "rand");
    const auto autn = *parse_hex_fixed<16>((*c)["autn"].get_ref<const std::string&>(), "autn");
    auto answer = tre_.authenticate(imsi, rand, autn);
    if (!answer) return with_prefix(answer.error(), "tre");
    if (auto* ok = std::get_if<aka::UsimSuccess>(&*answer)) {
      secure_wipe(ok->ck);
      secure_wipe(ok->ik);
      auto s = exchange(**client, "POST", vno + "/v1/attach/" + attach_id + "/response", 201, "vno",
                        Json{{"res", to_hex(ok->res.view())}});
      if (!s) return std::unexpected(s.error());
      auto j = parse_answer(*s, attachment_schema(), "vno");
      if (!j) return std::unexpected(j.error());
      Attachment a = attachment_of(*j);
      if (a.imsi != imsi) return fail(ErrorCode::bad_format, "vno: the session names another IMSI");
      log::info(kLog, "attached with {} ({})", imsi, a.restricted ? "restricted" : "operational");
      return a;
    }
    if (resyncs >= config_.max_resyncs) {
      return fail(
          ErrorCode::sqn_out_of_range,
          fmt::format("tre: the network's SQN is still not fresh after {} resynchronisations",
                      resyncs));
    }
    const auto& sync = std::get<aka::UsimSyncFailure>(*answer);
    r = exchange(**client, "POST", vno + "/v1/attach/" + attach_id + "/auts", 200, "vno",
                 Json{{"auts", to_hex(sync.auts)}});
    if (!r) return std::unexpected(r.error());
    log::info(kLog, "attach with {}: resynchronised", imsi);
  }
}

Result<Attachment> Agent::attach_eap(std::string_view pcid) {
  EapAccessOptions o = config_.eap;
  o.method =
      config_.access == Access::eap_aka_prime ? roles::EapMethod::aka_prime : roles::EapMethod::aka;
  auto eap = authenticate_eap(tre_, pcid, o);
  if (!eap) return std::unexpected(eap.error());
  const Secret<32> proof =
      roles::eap_claim_proof(roles::eap_session_key(eap->msk.get()), eap->identity);
  auto client = vno_client();
  if (!client) return std::unexpected(client.error());
  auto s = exchange(**client, "POST", net::base_url(config_.vno_url) + "/v1/access/eap-sessions",
                    201, "vno", Json{{"identity", eap->identity}, {"proof", to_hex(proof.get())}});
  if (!s) return std::unexpected(s.error());
  auto j = parse_answer(*s, attachment_schema(), "vno");
  if (!j) return std::unexpected(j.error());
  Attachment a = attachment_of(*j);
  if (a.imsi != pcid) return fail(ErrorCode::bad_format, "vno: the session names another IMSI");
  log::info(kLog, "attached with {} over {} ({})", pcid, roles::to_string(o.method),
            a.restricted ? "restricted" : "operational");
  return a;
}

Result<void> Agent::detach(const Attachment& a) {
  auto client = vno_client();
  if (!client) return std::unexpected(client.error());
  auto r = exchange(**client, "DELETE",
                    net::base_url(config_.vno_url) + "/v1/sessions/" + a.session, 204, "vno");
  if (!r) return std::unexpected(r.error());
  return {};
}

}  // namespace mcim::device
