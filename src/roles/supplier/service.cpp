#include "roles/supplier/service.h"

#include <fmt/format.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <system_error>

#include "common/file.h"
#include "common/log.h"
#include "common/random.h"
#include "pki/sealed.h"
#include "pki/signed_json.h"
#include "roles/supplier/ccif.h"

namespace mcim::supplier {
namespace {

namespace fs = std::filesystem;
using net::Json;
using net::JsonSchema;

constexpr std::string_view kComponent = "supplier";
// A batch is manufactured while its order waits: 10,000 devices take minutes already.
constexpr std::int64_t kMaxDevicesPerOrder = 10'000;
constexpr std::int64_t kMaxPcidDays = 3650;
constexpr std::size_t kMaxOrderBody = 1024;
constexpr std::string_view kCmsContentType = "application/cms";
constexpr std::string_view kStateFile = "state.json";
constexpr std::string_view kSealedFile = "batch.cms";
constexpr std::string_view kBundlesDir = "bundles";

// The id names a directory: "." and ".." are mcim ids but not batch directories.
bool valid_batch_id(std::string_view id) {
  return pki::valid_mcim_id(id) && id != "." && id != "..";
}

bool valid_pcid(std::string_view s) {
  return s.size() >= 6 && s.size() <= 15 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

const JsonSchema& order_schema() {
  static const JsonSchema schema = JsonSchema::object({
      net::required("batch_id", JsonSchema::string(64, valid_batch_id, "an mcim id, not . or ..")),
      net::required("first_pcid", JsonSchema::string(15, valid_pcid, "6 to 15 decimal digits", 6)),
      net::required("count", JsonSchema::integer(1, kMaxDevicesPerOrder)),
      // F8: this batch's PCID credential lifetime, instead of the device template's.
      net::optional("pcid_days", JsonSchema::integer(1, kMaxPcidDays)),
  });
  return schema;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

Result<void> make_directory(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0) {
    const int e = errno;
    return fail(e == EEXIST ? ErrorCode::already_exists : ErrorCode::io_error,
                fmt::format("cannot create {}: {}", path, std::strerror(e)));
  }
  return {};
}

// A half-written batch holds bundles (secrets) that no ICF will ever know: it goes entirely.
void remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) log::error(kComponent, "cannot remove {}: {}", path, ec.message());
}

// Json::value throws when the member has another type: peers' answers and files are not trusted.
bool has_string(const Json& object, const char* name, std::string_view expected) {
  if (!object.is_object()) return false;
  const auto it = object.find(name);
  return it != object.end() && it->is_string() && it->get_ref<const std::string&>() == expected;
}

// Only what State::store writes (and write_file_atomic's temporaries): a directory holding
// anything else is somebody's, not a half-written batch, and is never removed.
bool only_batch_files(const std::string& dir) {
  const auto all_match = [](const std::string& d, auto&& allowed) {
    std::error_code ec;
    for (fs::directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec)) {
      if (!allowed(*it)) return false;
    }
    return !ec;
  };
  return all_match(dir, [&](const fs::directory_entry& e) {
    std::error_code ec;
    const std::string name = e.path().filename().string();
    if (name == kBundlesDir && e.is_directory(ec) && !e.is_symlink(ec)) {
      return all_match(e.path().string(), [](const fs::directory_entry& b) {
        std::error_code bec;
        const std::string n = b.path().filename().string();
        return b.is_regular_file(bec) && !b.is_symlink(bec) &&
               (n.ends_with(".bundle") || n.ends_with(".bundle.tmp"));
      });
    }
    return e.is_regular_file(ec) && !e.is_symlink(ec) &&
           (name == kSealedFile || name == fmt::format("{}.tmp", kSealedFile) ||
            name == fmt::format("{}.tmp", kStateFile));
  });
}

Json error_json(const Error& e) {
  return Json{{"code", std::string(e.wire_code())}, {"message", e.message}};
}

Result<void> check_config(const SupplierServiceConfig& c) {
  const auto missing = [](std::string_view field) {
    return fail(ErrorCode::missing_argument, fmt::format("{}: required", field));
  };
  if (c.supplier_id.empty()) return missing("supplier_id");
  if (!pki::valid_mcim_id(c.supplier_id)) {
    return fail(ErrorCode::invalid_argument, "supplier_id: must be an mcim id");
  }
  if (c.admins.empty()) return missing("admins");
  for (std::size_t i = 0; i < c.admins.size(); ++i) {
    if (!pki::valid_mcim_id(c.admins[i])) {
      return fail(ErrorCode::invalid_argument,
                  fmt::format("admins[{}]: must be an operator id", i));
    }
  }
  if (!c.ca) return missing("ca");
  if (!c.signer || !c.signer->key || c.signer->certs.empty()) return missing("signer");
  if (signer_supplier_id(c.signer->cert()) != c.supplier_id) {
    return fail(ErrorCode::invalid_argument,
                "signer: its certificate does not name supplier_id (SAN URI "
                "urn:mcim:supplier:<id>)");
  }
  if (X509_check_private_key(c.signer->cert(), c.signer->key.get()) != 1) {
    return fail(ErrorCode::invalid_argument, "signer: the key does not match the certificate");
  }
  if (!c.icf_cert) return missing("icf_cert");
  const EVP_PKEY* icf_key = X509_get0_pubkey(c.icf_cert.get());
  if (icf_key == nullptr || EVP_PKEY_get_base_id(icf_key) != EVP_PKEY_EC ||
      (X509_get_key_usage(c.icf_cert.get()) & KU_KEY_AGREEMENT) == 0) {
    return fail(ErrorCode::invalid_argument,
                "icf_cert: an EC certificate allowing keyAgreement (pki profile encryption)");
  }
  if (c.icf_url.empty()) return missing("icf_url");
  auto url = net::parse_url(c.icf_url);
  if (!url || !url->tls) return fail(ErrorCode::invalid_argument, "icf_url: an https URL");
  if (!c.ro_client) return missing("ro_client");
  if (c.out_dir.empty()) return missing("out_dir");
  // manufacture_batch checks these too, but only once an order arrives.
  const tre::ManufactureSpec& d = c.device_template;
  if (d.ro_operator.empty()) return missing("device_template.ro_operator");
  if (!pki::valid_mcim_id(d.ro_operator)) {
    return fail(ErrorCode::invalid_argument, "device_template.ro_operator: must be an mcim id");
  }
  if (d.operator_roots.empty()) return missing("device_template.operator_roots");
  if (!d.pcid.empty() || !d.device_id.empty() || d.pin) {
    return fail(ErrorCode::invalid_argument,
                "device_template: pcid, device_id and pin must be unset (set per device)");
  }
  return {};
}

}  // namespace

struct SupplierService::State {
  SupplierServiceConfig config;
  const Clock& clock;
  net::Router router{"supplier"};
  pki::SealSigner signer;
  std::string icf_batches_url;
  // One batch at a time, manufactured or handed over: a second caller gets busy instead of
  // waiting on a request that may take minutes. Also guards `random`.
  std::mutex work;
  OsRandom random;

  State(SupplierServiceConfig c, const Clock& k) : config(std::move(c)), clock(k) {}

  std::string batch_dir(std::string_view id) const {
    return fmt::format("{}/{}", config.out_dir, id);
  }
  std::string state_path(std::string_view id) const {
    return fmt::format("{}/{}", batch_dir(id), kStateFile);
  }

  Result<void> prepare_out_dir();
  Result<Json> read_state(std::string_view id) const;
  Result<void> write_state(std::string_view id, const Json& state) const;
  Result<Json> manufacture(const Json& order);
  Result<void> store(const ManufacturedBatch& made, ByteView sealed, const Json& state) const;
  Json hand_over(std::string_view id, Json state) const;
  Result<Json> retry_handover(std::string_view id);

  net::HttpResponse post_batch(const net::Request& request);
  net::HttpResponse get_batch(const net::Request& request) const;
  net::HttpResponse post_handover(const net::Request& request);
};

// Creates out_dir, and removes what a crash left between a batch's first file and its
// state.json: such a batch was never answered, its id may be ordered again.
Result<void> SupplierService::State::prepare_out_dir() {
  std::error_code ec;
  fs::create_directories(config.out_dir, ec);
  if (ec || !fs::is_directory(config.out_dir, ec)) {
    return fail(ErrorCode::io_error, fmt::format("out_dir: cannot create {}", config.out_dir));
  }
  for (fs::directory_iterator it(config.out_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code type_ec;
    if (!valid_batch_id(name) || !it->is_directory(type_ec) || it->is_symlink(type_ec)) continue;
    if (exists(state_path(name))) continue;
    if (!only_batch_files(batch_dir(name))) {
      log::warn(kComponent, "{}: no {} but files of another kind: left alone, id unavailable",
                batch_dir(name), kStateFile);
      continue;
    }
    log::warn(kComponent, "batch {}: removing a half-written batch directory (no {})", name,
              kStateFile);
    remove_tree(batch_dir(name));
  }
  if (ec) return fail(ErrorCode::io_error, fmt::format("out_dir: cannot list {}", config.out_dir));
  return {};
}

Result<Json> SupplierService::State::read_state(std::string_view id) const {
  std::error_code ec;
  // An entry of out_dir that is not a directory (a file named like a batch) is no batch either.
  auto text = fs::is_directory(batch_dir(id), ec)
                  ? read_text_file(state_path(id))
                  : Result<std::string>(fail(ErrorCode::not_found, "no batch directory"));
  if (!text) {
    if (text.error().code == ErrorCode::not_found) {
      return fail(ErrorCode::not_found, fmt::format("batch {}: unknown", id));
    }
    return std::unexpected(text.error());
  }
  auto state = net::parse_json_strict(*text, kStateFile);
  const bool usable =
      state && has_string(*state, "batch_id", id) &&
      (has_string(*state, "handover", "pending") || has_string(*state, "handover", "failed") ||
       has_string(*state, "handover", "done"));
  if (!usable) {
    return fail(ErrorCode::io_error, fmt::format("batch {}: {} is unreadable", id, kStateFile));
  }
  return state;
}

Result<void> SupplierService::State::write_state(std::string_view id, const Json& state) const {
  return write_file_atomic(state_path(id), std::string_view(state.dump()), 0600);
}

// Bundles, then the sealed batch, then state.json last: its presence marks a complete batch.
// The directory appears on mkdir; on any failure it is removed again.
Result<void> SupplierService::State::store(const ManufacturedBatch& made, ByteView sealed,
                                           const Json& state) const {
  const std::string& id = made.batch.batch_id;
  const std::string dir = batch_dir(id);
  if (auto r = make_directory(dir); !r) return r;
  const auto written = [&]() -> Result<void> {
    const std::string bundles = fmt::format("{}/{}", dir, kBundlesDir);
    if (auto r = make_directory(bundles); !r) return r;
    for (const tre::SupplierBundle& b : made.bundles) {
      auto w = tre::write_bundle(fmt::format("{}/{}.bundle", bundles, b.device_id), b);
      if (!w) return w;
    }
    if (auto r = sync_directory_of(bundles); !r) return r;
    auto w = write_file_atomic(fmt::format("{}/{}", dir, kSealedFile), sealed, 0600);
    if (!w) return w;
    if (auto r = write_state(id, state); !r) return r;
    return sync_directory_of(dir);
  }();
  if (!written) remove_tree(dir);
  return written;
}

Result<Json> SupplierService::State::manufacture(const Json& order) {
  BatchSpec spec;
  spec.batch_id = order["batch_id"].get<std::string>();
  spec.supplier_id = config.supplier_id;
  spec.first_pcid = order["first_pcid"].get<std::string>();
  spec.count = order["count"].get<std::size_t>();
  spec.device = config.device_template;
  if (order.contains("pcid_days")) spec.device.pcid_days = order["pcid_days"].get<int>();
  const std::string& id = spec.batch_id;
  // Before anything is certified: an existing id costs nothing and changes nothing.
  if (exists(batch_dir(id))) {
    return fail(ErrorCode::already_exists, fmt::format("batch {}: already exists", id));
  }
  auto made = manufacture_batch(*config.ca, spec, clock, random);
  if (!made) return std::unexpected(made.error());
  auto sealed = seal_batch(made->batch, signer, config.icf_cert.get());
  if (!sealed) return std::unexpected(sealed.error());

  const std::size_t devices = made->batch.records.size();
  Json state = {{"batch_id", id},
                {"devices", devices},
                {"first_pcid", made->batch.records.front().pcid},
                {"last_pcid", made->batch.records.back().pcid},
                {"created", pki::utc_text(made->batch.created)},
                {"handover", "pending"}};
  if (auto r = store(*made, *sealed, state); !r) return std::unexpected(r.error());
  router.metrics().flow_step("batch_manufactured");
  log::info(kComponent, "batch {} manufactured: {} devices, PCIDs {}..{}", id, devices,
            state["first_pcid"].get<std::string>(), state["last_pcid"].get<std::string>());
  return hand_over(id, std::move(state));
}

// POSTs batch.cms to the ICF and records the outcome in state.json. A refusal or an unreachable
// RO is an outcome, not an error of this request: the batch stays, its handover can be retried.
Json SupplierService::State::hand_over(std::string_view id, Json state) const {
  std::optional<Error> failure;
  std::optional<std::int64_t> imported;
  auto sealed = read_file(fmt::format("{}/{}", batch_dir(id), kSealedFile));
  if (!sealed) {
    failure = sealed.error();
  } else {
    const std::string_view body(reinterpret_cast<const char*>(sealed->data()), sealed->size());
    auto response = config.ro_client->request("POST", icf_batches_url, body, kCmsContentType);
    if (!response) {
      failure = Error(response.error().code, fmt::format("ro: {}", response.error().message));
    } else if (response->status < 200 || response->status > 299) {
      failure = net::error_from_response(*response, "ro");
    } else {
      const auto answer = Json::parse(response->body, nullptr, /*allow_exceptions=*/false);
      const bool ok = has_string(answer, "batch_id", id) && answer.contains("imported") &&
                      answer["imported"].is_number_integer();
      if (ok) {
        imported = answer["imported"].get<std::int64_t>();
      } else {
        failure = Error(ErrorCode::bad_format, "ro: the answer is not a batch import");
      }
    }
  }
  state.erase("error");
  state.erase("imported");
  if (failure) {
    state["handover"] = "failed";
    state["error"] = error_json(*failure);
    log::warn(kComponent, "batch {}: handover to the RO failed: {}", id, *failure);
  } else {
    state["handover"] = "done";
    state["imported"] = *imported;
    router.metrics().flow_step("batch_handed_over");
    log::info(kComponent, "batch {} handed over to the RO: {} PCIDs imported", id, *imported);
  }
  if (auto w = write_state(id, state); !w) {
    // The next retry finds the previous outcome; the RO refuses a second import if it had one.
    log::error(kComponent, "batch {}: cannot record the handover: {}", id, w.error());
  }
  return state;
}

Result<Json> SupplierService::State::retry_handover(std::string_view id) {
  auto state = read_state(id);
  if (!state) return state;
  if (has_string(*state, "handover", "done")) {
    return fail(ErrorCode::transition_refused, fmt::format("batch {}: already handed over", id));
  }
  return hand_over(id, std::move(*state));
}

net::HttpResponse SupplierService::State::post_batch(const net::Request& request) {
  std::unique_lock lock(work, std::try_to_lock);
  if (!lock.owns_lock()) {
    return net::error_response(Error(ErrorCode::busy, "a batch is in progress"));
  }
  auto state = manufacture(request.json);
  if (!state) {
    if (net::http_status(state.error().code) >= 500) {
      log::error(kComponent, "batch order refused: {}", state.error());
    }
    return net::error_response(state.error());
  }
  Json answer = std::move(*state);
  answer.erase("created");
  return net::json_response(201, answer);
}

net::HttpResponse SupplierService::State::get_batch(const net::Request& request) const {
  const std::string_view id = request.param("batch_id");
  if (!valid_batch_id(id)) {
    return net::error_response(Error(ErrorCode::invalid_argument, "batch_id: must be an mcim id"));
  }
  auto state = read_state(id);
  if (!state && net::http_status(state.error().code) >= 500) {
    log::error(kComponent, "batch {}: {}", id, state.error());
  }
  return net::respond(state);
}

net::HttpResponse SupplierService::State::post_handover(const net::Request& request) {
  const std::string_view id = request.param("batch_id");
  if (!valid_batch_id(id)) {
    return net::error_response(Error(ErrorCode::invalid_argument, "batch_id: must be an mcim id"));
  }
  // No parameters: an empty body, or an empty JSON object for clients that always send one.
  if (!request.http.body.empty()) {
    static const JsonSchema empty = JsonSchema::object({});
    if (auto body = empty.parse(request.http.body); !body) {
      return net::error_response(body.error());
    }
  }
  std::unique_lock lock(work, std::try_to_lock);
  if (!lock.owns_lock()) {
    return net::error_response(Error(ErrorCode::busy, "a batch is in progress"));
  }
  auto state = retry_handover(id);
  if (!state && net::http_status(state.error().code) >= 500) {
    log::error(kComponent, "batch {}: {}", id, state.error());
  }
  return net::respond(state);
}

Result<std::unique_ptr<SupplierService>> SupplierService::create(SupplierServiceConfig config,
                                                                 const Clock& clock) {
  if (auto r = check_config(config); !r) return std::unexpected(r.error());
  auto state = std::make_unique<State>(std::move(config), clock);
  State* s = state.get();
  const SupplierServiceConfig& c = s->config;
  s->signer.cert = c.signer->cert();
  s->signer.key = c.signer->key.get();
  for (std::size_t i = 1; i < c.signer->certs.size(); ++i) {
    s->signer.chain.push_back(c.signer->certs[i].get());
  }
  s->icf_batches_url = net::base_url(c.icf_url) + "/v1/icf/batches";
  if (auto r = s->prepare_out_dir(); !r) return std::unexpected(r.error());

  const net::Authorizer admins = net::require_operator(c.admins);
  net::RouteOptions order{admins, order_schema(), kMaxOrderBody};
  net::RouteOptions by_id{admins, std::nullopt, kMaxOrderBody};
  // The handlers live inside *state, which the router's own state does not own: no cycle.
  auto added = s->router.add(
      "POST", "/v1/batches", [s](const net::Request& r) { return s->post_batch(r); }, order);
  if (added) {
    added = s->router.add(
        "GET", "/v1/batches/{batch_id}", [s](const net::Request& r) { return s->get_batch(r); },
        by_id);
  }
  if (added) {
    added = s->router.add(
        "POST", "/v1/batches/{batch_id}/handover",
        [s](const net::Request& r) { return s->post_handover(r); }, by_id);
  }
  if (!added) return std::unexpected(added.error());
  return std::unique_ptr<SupplierService>(new SupplierService(std::move(state)));
}

SupplierService::SupplierService(std::unique_ptr<State> state) : state_(std::move(state)) {}
SupplierService::~SupplierService() = default;

const net::Router& SupplierService::router() const { return state_->router; }

net::HttpHandler SupplierService::handler() const { return state_->router.handler(); }

}  // namespace mcim::supplier
