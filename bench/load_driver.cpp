// mcim_load: the end-to-end load driver of issue 6 (docs/performance.md "Load driver"). It runs
// the RO (ICF) and the VNO as in production, on net::HttpServer over TLS 1.3 on 127.0.0.1, over a
// real Database (SQLite file or PostgreSQL), and drives them with client threads that keep their
// connections alive:
//   vectors  POST /v1/auth/vectors at the RO as the VNO (mTLS), every vector checked as a device
//            would (MAC-A with f1; XRES, CK, IK with f2-f4): a broken vector is an error, not a
//            figure;
//   attach   a device's full attach at the VNO (challenge, USIM answer, response, detach), which
//            costs the VNO three calls to the RO per attach (vectors, session open, close).
// Everything runs in one process on loopback, so the figures include both ends of every TLS
// connection and the clients' own work; CPU time per operation (getrusage) says what one costs.
// Exit 0 only when no request failed; 2 for a bad command line; 1 otherwise.
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "aka/milenage.h"
#include "aka/sqn.h"
#include "aka/vector.h"
#include "bench_util.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/random.h"
#include "common/secure.h"
#include "net/http_error.h"
#include "net/http_server.h"
#include "net/https_client.h"
#include "net/tls.h"
#include "pki/authority.h"
#include "pki/certificate.h"
#include "pki/openssl.h"
#include "pki/verify.h"
#include "roles/ro/icf.h"
#include "roles/ro/service.h"
#include "roles/vno/service.h"
#include "sim/fleet.h"
#include "store/store.h"

namespace {

using namespace mcim;
using bench::die;
using bench::must;
namespace fs = std::filesystem;
using Json = nlohmann::json;
using Steady = std::chrono::steady_clock;

constexpr std::string_view kRoId = "ro-load";
constexpr std::string_view kVnoId = "vno-load";
constexpr std::string_view kSupplierId = "supplier-load";
// MCC 001 MNC 01 (the test network) and a PCID range the VNO routes to the RO.
constexpr std::string_view kPcidPrefix = "001019";
constexpr std::size_t kMaxDevices = 1'000'000;  // 6 digits of the PCID after the run number
constexpr std::size_t kErrorCodesShown = 5;

// ---- Command line ------------------------------------------------------------------------------

enum class Workload { vectors, attach, both };

struct Options {
  std::string db = "sqlite";
  Workload workload = Workload::both;
  int clients = 8;
  int server_threads = 2;
  double duration_s = 10;
  double warmup_s = 2;
  std::size_t devices = 1000;
  unsigned count = 1;
  bool json = false;
};

constexpr std::string_view kUsage =
    "usage: mcim_load [--db sqlite|sqlite:PATH|postgresql://...] [--workload vectors|attach|both]\n"
    "                 [--clients N] [--server-threads N] [--duration SECONDS] [--warmup SECONDS]\n"
    "                 [--devices N] [--count VECTORS_PER_REQUEST] [--json]\n"
    "  postgresql:// alone takes PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE from the\n"
    "  environment (as pg_virtualenv exports them). Defaults: sqlite (a file in a temporary\n"
    "  directory), both, 8 clients, 2 server threads, 10 s after 2 s of warm-up, 1000 devices,\n"
    "  count 1.\n";

[[noreturn]] void usage_error(std::string_view message) {
  fmt::print(stderr, "mcim_load: {}\n{}", message, kUsage);
  std::exit(2);
}

long long integer_arg(std::string_view name, const std::string& text, long long min,
                      long long max) {
  std::size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || v < min || v > max) {
    usage_error(fmt::format("{}: must be an integer in {}..{}", name, min, max));
  }
  return v;
}

double seconds_arg(std::string_view name, const std::string& text, double min) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !(v >= min) || v > 86'400) {
    usage_error(fmt::format("{}: must be a number of seconds in {}..86400", name, min));
  }
  return v;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      o.json = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      fmt::print("{}", kUsage);
      std::exit(0);
    }
    // Both "--name value" and "--name=value".
    std::string name = arg, value;
    if (const auto eq = arg.find('='); eq != std::string::npos && arg.starts_with("--")) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      usage_error(fmt::format("{}: unknown option or missing value", arg));
    }
    if (name == "--db") {
      if (value != "sqlite" && !value.starts_with("sqlite:") &&
          !value.starts_with("postgresql://") && !value.starts_with("postgres://")) {
        usage_error("--db: must be sqlite, sqlite:PATH or postgresql://...");
      }
      o.db = value;
    } else if (name == "--workload") {
      if (value == "vectors") {
        o.workload = Workload::vectors;
      } else if (value == "attach") {
        o.workload = Workload::attach;
      } else if (value == "both") {
        o.workload = Workload::both;
      } else {
        usage_error("--workload: must be vectors, attach or both");
      }
    } else if (name == "--clients") {
      o.clients = static_cast<int>(integer_arg(name, value, 1, 1024));
    } else if (name == "--server-threads") {
      o.server_threads = static_cast<int>(integer_arg(name, value, 1, 256));
    } else if (name == "--duration") {
      o.duration_s = seconds_arg(name, value, 0.1);
    } else if (name == "--warmup") {
      o.warmup_s = seconds_arg(name, value, 0);
    } else if (name == "--devices") {
      o.devices = static_cast<std::size_t>(integer_arg(name, value, 1, kMaxDevices));
    } else if (name == "--count") {
      o.count = static_cast<unsigned>(integer_arg(name, value, 1, ro::kMaxVectorsPerRequest));
    } else {
      usage_error(fmt::format("{}: unknown option", name));
    }
  }
  // Each attach client owns a disjoint slice of the devices (a PCID attaches once at a time).
  if (o.workload != Workload::vectors && o.devices < static_cast<std::size_t>(o.clients)) {
    usage_error("--devices: the attach workload needs at least one device per client");
  }
  return o;
}

// ---- The throwaway PKI and the world ------------------------------------------------------------

struct TempDir {
  std::string path;
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base != nullptr && *base != 0 ? base : "/tmp") + "/mcim-load-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr)
      die("temporary directory", Error(ErrorCode::io_error, tmpl));
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// One root issues everything: the services' TLS certificates (IP:127.0.0.1, each its own key),
// the VNO's tls-client certificate and the ICF's batch key (unused here, but the RO needs one).
struct Pki {
  std::optional<pki::Authority> root;
  std::shared_ptr<const pki::TrustAnchors> anchors;
  std::shared_ptr<const net::TlsIdentity> ro_server, vno_server, vno_client;
  std::shared_ptr<const pki::KeyPair> icf_key;

  Pki(const std::string& dir, const Clock& clock, RandomSource& rng) {
    root.emplace(must(
        pki::Authority::create(dir + "/root", "Load Root", nullptr, 30, "", clock, rng), "root"));
    anchors = std::make_shared<const pki::TrustAnchors>(
        must(pki::TrustAnchors::from_certs({root->cert()}), "trust anchors"));
    ro_server = tls(pki::Profile::tls_server, "ro.load", {"IP:127.0.0.1"}, clock, rng);
    vno_server = tls(pki::Profile::tls_server, "vno.load", {"IP:127.0.0.1"}, clock, rng);
    vno_client = tls(pki::Profile::tls_client, std::string(kVnoId),
                     {"URI:urn:mcim:operator:" + std::string(kVnoId)}, clock, rng);
    pki::CertSpec icf;
    icf.profile = pki::Profile::platform;  // the profile with keyAgreement (issue 6 notes)
    icf.subject = "CN=icf.ro-load batch key,O=mcim load";
    icf.device_id = "icf.ro-load";
    icf.model = "icf";
    auto issued = must(root->issue(icf, clock, rng), "icf key");
    auto pair = std::make_shared<pki::KeyPair>();
    pair->key = std::move(issued.key);
    pair->certs.push_back(std::move(issued.cert));
    icf_key = std::move(pair);
  }

  std::shared_ptr<const net::TlsIdentity> tls(pki::Profile profile, const std::string& name,
                                              std::vector<std::string> sans, const Clock& clock,
                                              RandomSource& rng) {
    pki::CertSpec spec;
    spec.profile = profile;
    spec.subject = "CN=" + name + ",O=mcim load";
    spec.sans = std::move(sans);
    auto issued = must(root->issue(spec, clock, rng), name);
    return must(net::make_tls_identity(issued.key.get(), issued.cert.get()), name);
  }
};

// What the driver knows of a device: its PCID and its USIM (K, OPc and the SQN array). The
// Milenage object is immutable (shared by the vectors threads); the UsimSqn belongs to the one
// attach thread that owns the device.
struct Device {
  std::string pcid;
  aka::Milenage algo;
  aka::UsimSqn usim;
};

std::string database_url(const Options& o, const TempDir& dir) {
  if (o.db == "sqlite") return "sqlite:" + dir.path + "/ro.db";
  return o.db;
}

// N PCIDs with random K and OPc, imported as one supplier batch and activated (F7), straight
// into the Database through the ICF. A run number in the PCIDs keeps a reused database (a
// sqlite:PATH given twice) from refusing the batch as a duplicate.
std::vector<Device> seed_devices(store::Database& db, std::size_t n, const Clock& clock,
                                 RandomSource& rng) {
  ro::Icf icf(db, clock, rng);
  const auto now = std::chrono::floor<std::chrono::seconds>(clock.now());
  for (int attempt = 0; attempt < 5; ++attempt) {
    const auto run = from_be(rng.draw<2>()) % 1000;
    std::vector<store::PcidSubscription> subs;
    std::vector<Device> devices;
    subs.reserve(n);
    devices.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      store::PcidSubscription s;
      s.pcid = fmt::format("{}{:03}{:06}", kPcidPrefix, run, i);
      s.k = Secret<16>(rng.draw<16>());
      s.opc = Secret<16>(rng.draw<16>());
      s.ind_bits = aka::SqnPolicy{}.ind_bits;
      s.not_after = now + std::chrono::hours(24 * 365);
      devices.push_back(
          Device{s.pcid, aka::Milenage(s.k.get(), s.opc.get()), aka::UsimSqn(aka::SqnPolicy{})});
      subs.push_back(std::move(s));
    }
    auto imported = icf.import_batch(fmt::format("load-{:03}", run), std::move(subs), kSupplierId);
    if (!imported && imported.error().code == ErrorCode::already_exists) continue;
    must(std::move(imported), "import the PCID batch");
    for (const auto& d : devices) {
      must(icf.activate(d.pcid, std::chrono::hours(24), kSupplierId), "activate a PCID");
    }
    return devices;
  }
  die("import the PCID batch", Error(ErrorCode::already_exists, "no free run number in 5 draws"));
}

// The RO and the VNO on loopback with TLS; members in construction order, so the servers stop
// before the services their handlers use, and those before the database.
struct Services {
  std::unique_ptr<store::Database> db;
  std::unique_ptr<ro::RoService> ro;
  std::unique_ptr<net::HttpServer> ro_server;
  std::shared_ptr<net::HttpsClient> home_client;  // the VNO's, to the RO
  std::unique_ptr<roles::VnoService> vno;
  std::unique_ptr<net::HttpServer> vno_server;
};

void start_services(Services& s, const Pki& pki, const Options& o, const Clock& clock) {
  ro::RoServiceConfig rc;
  rc.operator_id = std::string(kRoId);
  rc.roaming_partners = {std::string(kVnoId)};
  rc.suppliers = {std::string(kSupplierId)};
  rc.supplier_roots = pki.anchors;
  rc.operator_roots = pki.anchors;
  rc.icf_key = pki.icf_key;
  rc.expire_interval = std::chrono::seconds(0);  // nothing expires during a run
  s.ro = must(ro::RoService::create(*s.db, std::move(rc), clock), "RO service");

  net::HttpServerOptions ro_opts;
  ro_opts.threads = o.server_threads;
  ro_opts.body_limit = s.ro->body_limit();
  // optional: the VNO authenticates with its certificate, devices with their session.
  ro_opts.tls = net::TlsServerOptions{pki.ro_server, net::ClientAuth::optional, pki.anchors};
  s.ro_server = must(net::HttpServer::start(ro_opts, s.ro->handler()), "RO server");

  net::HttpsClientOptions hc;
  hc.trust = pki.anchors;
  hc.identity = pki.vno_client;
  // Every VNO worker may have a call to the RO in flight for each of its connections; a pool
  // smaller than the concurrency would close and reopen connections all the time.
  hc.max_idle_per_host = static_cast<std::size_t>(std::max(4, o.clients));
  s.home_client = must(net::HttpsClient::create(std::move(hc)), "VNO home client");

  roles::VnoServiceConfig vc;
  vc.options.name = std::string(kVnoId);
  vc.options.restricted_destinations = {s.ro_server->address()};
  vc.routes = {roles::Route{std::string(kPcidPrefix), "ro", true}};
  vc.homes = {{"ro", s.ro_server->url()}};
  vc.home_client = s.home_client;
  s.vno = must(roles::VnoService::create(std::move(vc), clock), "VNO service");

  net::HttpServerOptions vno_opts;
  vno_opts.threads = o.server_threads;
  vno_opts.tls = net::TlsServerOptions{pki.vno_server, net::ClientAuth::none, nullptr};
  s.vno_server = must(net::HttpServer::start(vno_opts, s.vno->handler()), "VNO server");
}

// ---- Measurement ------------------------------------------------------------------------------

enum Phase : int { warmup = 0, measure = 1, stop = 2 };

struct StepStats {
  std::vector<double> ms;  // latencies of the successes measured
  std::uint64_t errors = 0;
};

// One client thread's record; merged after the threads end (no sharing while they run).
struct ThreadRecord {
  std::vector<StepStats> steps;
  std::uint64_t warmup_errors = 0;
  std::map<std::string, std::uint64_t> error_codes;  // "step: status code" → how many
  std::uint64_t connections = 0;
};

struct Run {
  const Options& options;
  std::atomic<int> phase{warmup};
  std::atomic<std::uint64_t> requests{0};  // every request answered, for the progress line
};

double ms_since(Steady::time_point t0) {
  return std::chrono::duration<double, std::milli>(Steady::now() - t0).count();
}

class Recorder {
 public:
  Recorder(Run& run, ThreadRecord& rec, std::size_t steps) : run_(run), rec_(rec) {
    rec_.steps.resize(steps);
  }
  // The phase when an operation started decides where it counts: one started in the warm-up is
  // never measured, one started before the stop finishes and is.
  int begin() const { return run_.phase.load(std::memory_order_relaxed); }
  void ok(int phase, std::size_t step, double ms) {
    if (phase == measure) rec_.steps[step].ms.push_back(ms);
  }
  void error(int phase, std::size_t step, std::string_view step_name, std::string code) {
    if (phase == measure) {
      ++rec_.steps[step].errors;
    } else {
      ++rec_.warmup_errors;
    }
    ++rec_.error_codes[fmt::format("{}: {}", step_name, code)];
  }
  void answered() { run_.requests.fetch_add(1, std::memory_order_relaxed); }

 private:
  Run& run_;
  ThreadRecord& rec_;
};

// "404 not_found" for a refusal, the Error's code for a transport failure; never the message,
// which names fields only but is not needed to count.
std::string error_code_of(const net::HttpResponse& r) {
  return fmt::format("{} {}", r.status, net::error_from_response(r, "peer").wire_code());
}
std::string error_code_of(const Error& e) { return std::string(e.wire_code()); }
bool ok_status(int status) { return status >= 200 && status < 300; }

template <std::size_t N>
Result<Bytes<N>> hex_member(const Json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || !it->is_string()) {
    return fail(ErrorCode::bad_format, fmt::format("answer: {} missing", name));
  }
  return parse_hex_fixed<N>(it->get_ref<const std::string&>(), name);
}

Result<std::string> string_member(const Json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
    return fail(ErrorCode::bad_format, fmt::format("answer: {} missing", name));
  }
  return it->get<std::string>();
}

Result<Json> parse_object(const std::string& body) {
  Json j = Json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(ErrorCode::bad_format, "answer: not JSON");
  return j;
}

// What a USIM would do with one vector from the ICF: AUTN's MAC-A must be f1 over the SQN it
// hides, and XRES, CK, IK must be what f2, f3, f4 give for RAND.
Result<void> check_vector(const aka::Algorithm& algo, const Json& v) {
  auto rand = hex_member<16>(v, "rand");
  auto autn = hex_member<16>(v, "autn");
  auto ck = hex_member<16>(v, "ck");
  auto ik = hex_member<16>(v, "ik");
  if (!rand || !autn || !ck || !ik) return fail(ErrorCode::bad_format, "vector: member missing");
  const auto xres_it = v.find("xres");
  if (xres_it == v.end() || !xres_it->is_string()) {
    return fail(ErrorCode::bad_format, "vector: xres missing");
  }
  auto xres = parse_hex(xres_it->get_ref<const std::string&>(), "xres");
  if (!xres) return std::unexpected(xres.error());
  const aka::F2345 f = algo.f2345(*rand);
  const aka::Sqn sqn = xor_of(take<6>(ByteView(*autn)), f.ak);
  const aka::Amf amf = take<2>(ByteView(*autn), 6);
  const aka::Mac mac = algo.f1(*rand, sqn, amf);
  if (!constant_time_equal(mac, ByteView(*autn).subspan(8))) {
    return fail(ErrorCode::mac_mismatch, "vector: MAC-A does not verify");
  }
  if (!constant_time_equal(f.res.view(), *xres) || *ck != f.ck || *ik != f.ik) {
    return fail(ErrorCode::mac_mismatch, "vector: XRES, CK or IK not from this K");
  }
  return {};
}

// ---- The workloads -------------------------------------------------------------------------

struct WorkloadSpec {
  std::string name;
  std::vector<std::string> steps;  // the last one is the operation the rate is quoted for
};

const WorkloadSpec kVectors{"vectors", {"vectors"}};
// challenge = POST /v1/attach, response = POST /v1/attach/{id}/response, attach = both with the
// USIM's work between (the device attached), detach = DELETE /v1/sessions/{id}, cycle = all.
const WorkloadSpec kAttach{"attach", {"challenge", "response", "detach", "attach", "cycle"}};
enum AttachStep : std::size_t { challenge = 0, response = 1, detach = 2, attach = 3, cycle = 4 };

std::unique_ptr<net::HttpsClient> client_for(const Pki& pki, bool as_vno) {
  net::HttpsClientOptions o;
  o.trust = pki.anchors;
  if (as_vno) o.identity = pki.vno_client;
  return must(net::HttpsClient::create(std::move(o)), "client");
}

void vectors_client(Run& run, ThreadRecord& rec, const Pki& pki, const std::string& url,
                    const std::vector<Device>& devices, std::size_t first) {
  auto client = client_for(pki, true);
  Recorder r(run, rec, kVectors.steps.size());
  const unsigned count = run.options.count;
  for (std::size_t i = first; r.begin() != stop; i = (i + 1) % devices.size()) {
    const Device& d = devices[i];
    const std::string body = Json{{"imsi", d.pcid}, {"count", count}}.dump();
    const int phase = r.begin();
    const auto t0 = Steady::now();
    auto resp = client->post_json(url, body);
    const double ms = ms_since(t0);
    r.answered();
    if (!resp) {
      r.error(phase, 0, "vectors", error_code_of(resp.error()));
      continue;
    }
    if (!ok_status(resp->status)) {
      r.error(phase, 0, "vectors", error_code_of(*resp));
      continue;
    }
    auto j = parse_object(resp->body);
    Result<void> checked = j ? Result<void>{} : Result<void>(std::unexpected(j.error()));
    if (j) {
      const auto it = j->find("vectors");
      if (it == j->end() || !it->is_array() || it->size() != count) {
        checked = fail(ErrorCode::bad_format, "answer: vectors missing or not `count` of them");
      } else {
        for (const auto& v : *it) {
          if (checked = check_vector(d.algo, v); !checked) break;
        }
      }
    }
    if (!checked) {
      r.error(phase, 0, "vectors", "bad vector: " + error_code_of(checked.error()));
      continue;
    }
    r.ok(phase, 0, ms);
  }
  rec.connections = client->connections_opened();
}

void attach_client(Run& run, ThreadRecord& rec, const Pki& pki, const std::string& base,
                   std::vector<Device>& devices, std::size_t first, std::size_t end) {
  auto client = client_for(pki, false);
  Recorder r(run, rec, kAttach.steps.size());
  const auto& names = kAttach.steps;
  for (std::size_t i = first; r.begin() != stop; i = i + 1 == end ? first : i + 1) {
    Device& d = devices[i];
    const int phase = r.begin();
    const auto t0 = Steady::now();
    auto resp = client->post_json(base + "/v1/attach", Json{{"imsi", d.pcid}}.dump());
    const double challenge_ms = ms_since(t0);
    r.answered();
    if (!resp || !ok_status(resp->status)) {
      r.error(phase, challenge, names[challenge],
              resp ? error_code_of(*resp) : error_code_of(resp.error()));
      continue;
    }
    auto j = parse_object(resp->body);
    Result<std::string> attach_id =
        j ? string_member(*j, "attach_id") : Result<std::string>(std::unexpected(j.error()));
    auto rand = j ? hex_member<16>(*j, "rand") : Result<aka::Rand>(std::unexpected(j.error()));
    auto autn = j ? hex_member<16>(*j, "autn") : Result<aka::Autn>(std::unexpected(j.error()));
    if (!attach_id || !rand || !autn) {
      r.error(phase, challenge, names[challenge], "bad answer");
      continue;
    }
    r.ok(phase, challenge, challenge_ms);

    // The USIM: MAC-A, then SQN freshness; a refusal of either is the network's fault here.
    auto answer = aka::usim_authenticate(d.algo, d.usim, *rand, *autn);
    if (!answer || !std::holds_alternative<aka::UsimSuccess>(*answer)) {
      r.error(phase, response, names[response],
              answer ? "usim: sqn not fresh" : "usim: " + error_code_of(answer.error()));
      continue;
    }
    const auto& res = std::get<aka::UsimSuccess>(*answer).res;
    const auto t1 = Steady::now();
    resp = client->post_json(base + "/v1/attach/" + *attach_id + "/response",
                             Json{{"res", to_hex(res.view())}}.dump());
    const double response_ms = ms_since(t1);
    r.answered();
    if (!resp || !ok_status(resp->status)) {
      r.error(phase, response, names[response],
              resp ? error_code_of(*resp) : error_code_of(resp.error()));
      continue;
    }
    j = parse_object(resp->body);
    auto session =
        j ? string_member(*j, "session") : Result<std::string>(std::unexpected(j.error()));
    if (!session) {
      r.error(phase, response, names[response], "bad answer");
      continue;
    }
    r.ok(phase, response, response_ms);
    r.ok(phase, attach, ms_since(t0));

    const auto t2 = Steady::now();
    resp = client->request("DELETE", base + "/v1/sessions/" + *session);
    const double detach_ms = ms_since(t2);
    r.answered();
    if (!resp || !ok_status(resp->status)) {
      r.error(phase, detach, names[detach],
              resp ? error_code_of(*resp) : error_code_of(resp.error()));
      continue;
    }
    r.ok(phase, detach, detach_ms);
    r.ok(phase, cycle, ms_since(t0));
  }
  rec.connections = client->connections_opened();
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return s(u.ru_utime) + s(u.ru_stime);
}

struct StepResult {
  std::string step;
  std::uint64_t count = 0, errors = 0;
  double rate = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};

struct WorkloadResult {
  const WorkloadSpec* spec = nullptr;
  std::string name;
  double elapsed_s = 0;
  std::vector<StepResult> steps;
  std::uint64_t warmup_errors = 0;
  std::vector<std::pair<std::string, std::uint64_t>> error_codes;  // the first few, by count
  std::uint64_t client_connections = 0, home_connections = 0;
  std::uint64_t ro_accepted = 0, vno_accepted = 0;
  double cpu_s = 0;
  double cpu_ms_per_op = 0;  // per operation of the last step
  std::uint64_t total_errors() const {
    std::uint64_t n = warmup_errors;
    for (const auto& s : steps) n += s.errors;
    return n;
  }
};

WorkloadResult run_workload(const WorkloadSpec& spec, const Options& o, Services& s, const Pki& pki,
                            std::vector<Device>& devices) {
  Run run{o};
  std::vector<ThreadRecord> records(static_cast<std::size_t>(o.clients));
  const std::uint64_t home_before = s.home_client->connections_opened();
  const std::uint64_t ro_before = s.ro_server->connections_accepted();
  const std::uint64_t vno_before = s.vno_server->connections_accepted();
  std::vector<std::thread> threads;
  const std::size_t n = devices.size(), clients = records.size();
  for (std::size_t t = 0; t < clients; ++t) {
    if (&spec == &kVectors) {
      threads.emplace_back(vectors_client, std::ref(run), std::ref(records[t]), std::cref(pki),
                           s.ro_server->url() + "/v1/auth/vectors", std::cref(devices),
                           t * n / clients);
    } else {
      threads.emplace_back(attach_client, std::ref(run), std::ref(records[t]), std::cref(pki),
                           s.vno_server->url(), std::ref(devices), t * n / clients,
                           (t + 1) * n / clients);
    }
  }

  // Progress once a second; the phase switches happen on this thread, so the CPU time and the
  // elapsed time are taken exactly at them.
  const auto start = Steady::now();
  const auto warm_end = start + std::chrono::duration_cast<Steady::duration>(
                                    std::chrono::duration<double>(o.warmup_s));
  const auto end = warm_end + std::chrono::duration_cast<Steady::duration>(
                                  std::chrono::duration<double>(o.duration_s));
  auto next_tick = start + std::chrono::seconds(1);
  std::uint64_t last_requests = 0;
  auto last_tick = start;
  double cpu_start = cpu_seconds();
  Steady::time_point measure_start = start;
  if (o.warmup_s == 0) run.phase = measure;
  for (;;) {
    const auto now = Steady::now();
    if (run.phase == warmup && now >= warm_end) {
      cpu_start = cpu_seconds();
      measure_start = Steady::now();
      run.phase = measure;
    }
    if (now >= end) break;
    if (now >= next_tick) {
      const std::uint64_t done = run.requests.load();
      const double dt = std::chrono::duration<double>(now - last_tick).count();
      fmt::print(stderr, "[{} {:>7}] {:5.0f} s: {:>9} requests, {:>8.0f}/s\n", spec.name,
                 run.phase == warmup ? "warm-up" : "measure",
                 std::chrono::duration<double>(now - start).count(), done,
                 static_cast<double>(done - last_requests) / dt);
      last_requests = done;
      last_tick = now;
      next_tick += std::chrono::seconds(1);
    }
    std::this_thread::sleep_until(std::min({next_tick, end, run.phase == warmup ? warm_end : end}));
  }
  const double cpu_end = cpu_seconds();
  const auto measure_end = Steady::now();
  run.phase = stop;
  for (auto& t : threads) t.join();

  WorkloadResult w;
  w.spec = &spec;
  w.name = spec.name;
  w.elapsed_s = std::chrono::duration<double>(measure_end - measure_start).count();
  w.cpu_s = cpu_end - cpu_start;
  std::map<std::string, std::uint64_t> codes;
  for (std::size_t i = 0; i < spec.steps.size(); ++i) {
    StepResult r;
    r.step = spec.steps[i];
    std::vector<double> all;
    for (auto& rec : records) {
      all.insert(all.end(), rec.steps[i].ms.begin(), rec.steps[i].ms.end());
      r.errors += rec.steps[i].errors;
    }
    std::sort(all.begin(), all.end());
    r.count = all.size();
    r.rate = static_cast<double>(r.count) / w.elapsed_s;
    r.p50 = sim::percentile_of_sorted(all, 50);
    r.p90 = sim::percentile_of_sorted(all, 90);
    r.p99 = sim::percentile_of_sorted(all, 99);
    r.max = all.empty() ? 0 : all.back();
    w.steps.push_back(std::move(r));
  }
  for (const auto& rec : records) {
    w.warmup_errors += rec.warmup_errors;
    w.client_connections += rec.connections;
    for (const auto& [code, k] : rec.error_codes) codes[code] += k;
  }
  w.error_codes.assign(codes.begin(), codes.end());
  std::stable_sort(w.error_codes.begin(), w.error_codes.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  if (w.error_codes.size() > kErrorCodesShown) w.error_codes.resize(kErrorCodesShown);
  w.home_connections = s.home_client->connections_opened() - home_before;
  w.ro_accepted = s.ro_server->connections_accepted() - ro_before;
  w.vno_accepted = s.vno_server->connections_accepted() - vno_before;
  const auto ops = w.steps.back().count;
  w.cpu_ms_per_op = ops == 0 ? 0 : w.cpu_s * 1000 / static_cast<double>(ops);
  return w;
}

// ---- Output -----------------------------------------------------------------------------------

void print_table(const std::vector<WorkloadResult>& results, const Options& o,
                 std::string_view backend) {
  fmt::print(
      "backend {}, {} clients, {} server threads, {} s after {} s warm-up, {} devices, "
      "count {}\n",
      backend, o.clients, o.server_threads, o.duration_s, o.warmup_s, o.devices, o.count);
  fmt::print("{:<8} {:<10} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}\n", "workload", "step",
             "count", "rate/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors");
  for (const auto& w : results) {
    for (const auto& s : w.steps) {
      fmt::print("{:<8} {:<10} {:>8} {:>9.1f} {:>8.2f} {:>8.2f} {:>8.2f} {:>8.2f} {:>7}\n", w.name,
                 s.step, s.count, s.rate, s.p50, s.p90, s.p99, s.max, s.errors);
    }
  }
  for (const auto& w : results) {
    fmt::print(
        "{}: connections opened by the {} clients {}, VNO to RO {}; accepted by RO {}, "
        "VNO {}; CPU {:.2f} s in {:.2f} s ({:.0f} % of {} cores), {:.3f} ms per {}\n",
        w.name, o.clients, w.client_connections, w.home_connections, w.ro_accepted, w.vno_accepted,
        w.cpu_s, w.elapsed_s, 100 * w.cpu_s / w.elapsed_s / std::thread::hardware_concurrency(),
        std::thread::hardware_concurrency(), w.cpu_ms_per_op, w.steps.back().step);
    if (w.spec == &kVectors) {
      fmt::print("vectors: {:.1f} vectors/s ({} per request)\n", w.steps.back().rate * o.count,
                 o.count);
    }
    if (w.warmup_errors > 0)
      fmt::print("{}: {} errors during the warm-up\n", w.name, w.warmup_errors);
    for (const auto& [code, n] : w.error_codes) fmt::print("{}: error {} x{}\n", w.name, code, n);
  }
}

void print_json(const std::vector<WorkloadResult>& results, const Options& o,
                std::string_view backend) {
  Json out{{"backend", backend},
           {"clients", o.clients},
           {"server_threads", o.server_threads},
           {"duration_s", o.duration_s},
           {"warmup_s", o.warmup_s},
           {"devices", o.devices},
           {"count", o.count},
           {"cores", std::thread::hardware_concurrency()}};
  Json rows = Json::array(), workloads = Json::array();
  bool ok = true;
  for (const auto& w : results) {
    for (const auto& s : w.steps) {
      rows.push_back(Json{{"workload", w.name},
                          {"step", s.step},
                          {"count", s.count},
                          {"rate_per_s", s.rate},
                          {"p50_ms", s.p50},
                          {"p90_ms", s.p90},
                          {"p99_ms", s.p99},
                          {"max_ms", s.max},
                          {"errors", s.errors}});
    }
    if (w.spec == &kVectors) rows.back()["vectors_per_s"] = w.steps.back().rate * o.count;
    Json codes = Json::array();
    for (const auto& [code, n] : w.error_codes)
      codes.push_back(Json{{"error", code}, {"count", n}});
    workloads.push_back(Json{{"workload", w.name},
                             {"elapsed_s", w.elapsed_s},
                             {"client_connections", w.client_connections},
                             {"home_connections", w.home_connections},
                             {"ro_connections_accepted", w.ro_accepted},
                             {"vno_connections_accepted", w.vno_accepted},
                             {"cpu_s", w.cpu_s},
                             {"cpu_ms_per_op", w.cpu_ms_per_op},
                             {"warmup_errors", w.warmup_errors},
                             {"errors", codes}});
    ok = ok && w.total_errors() == 0;
  }
  out["results"] = std::move(rows);
  out["workloads"] = std::move(workloads);
  out["ok"] = ok;
  fmt::print("{}\n", out.dump(2));
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  // The services log refusals and events; the driver counts them itself.
  log::set_level(log::Level::warn);
  SystemClock clock;
  OsRandom rng;
  TempDir dir;

  const auto t0 = Steady::now();
  const Pki pki(dir.path, clock, rng);
  Services s;
  s.db = must(store::open_database(database_url(o, dir)), "open the database");
  std::vector<Device> devices = seed_devices(*s.db, o.devices, clock, rng);
  start_services(s, pki, o, clock);
  fmt::print(stderr,
             "mcim_load: {} database, {} PCIDs imported and active, RO at {}, VNO at {} "
             "(set up in {:.1f} s)\n",
             s.db->backend(), devices.size(), s.ro_server->url(), s.vno_server->url(),
             std::chrono::duration<double>(Steady::now() - t0).count());

  std::vector<WorkloadResult> results;
  if (o.workload != Workload::attach) results.push_back(run_workload(kVectors, o, s, pki, devices));
  if (o.workload != Workload::vectors) results.push_back(run_workload(kAttach, o, s, pki, devices));

  const std::string backend(s.db->backend());
  if (o.json) {
    print_json(results, o, backend);
  } else {
    print_table(results, o, backend);
  }
  bool ok = true;
  for (const auto& w : results) ok = ok && w.total_errors() == 0;
  return ok ? 0 : 1;
}
