#include "cli/serve_config.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <map>
#include <utility>
#include <vector>

#include "cli/output.h"
#include "common/ascii.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/secure.h"
#include "net/json_schema.h"
#include "pki/sealed.h"

namespace mcim::cli {
namespace {

using net::Json;
using net::JsonMember;
using net::JsonSchema;

constexpr std::int64_t kYearSeconds = 366LL * 24 * 3600;

JsonSchema path_string() { return JsonSchema::string(4096); }
JsonSchema id_string() {
  return JsonSchema::string(64, pki::valid_mcim_id, "an mcim id (letters, digits, . _ : -)");
}
JsonSchema digit_string(std::size_t min, std::size_t max) {
  return JsonSchema::string(
      max, [](std::string_view s) { return ascii_digits(s); },
      fmt::format("{} to {} digits", min, max), min);
}
// A Unix socket's path: a control character (a NUL above all) would bind another path than the
// one later removed.
JsonSchema socket_path_string() {
  return JsonSchema::string(
      4096,
      [](std::string_view s) {
        return std::none_of(s.begin(), s.end(), [](char ch) {
          return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f;
        });
      },
      "a path without control characters");
}
JsonSchema file_list() { return JsonSchema::array(path_string(), 64, 1); }
JsonSchema id_list() { return JsonSchema::array(id_string(), 10'000); }

// The file being loaded: resolves its relative paths and names it in every message.
class ConfigFile {
 public:
  explicit ConfigFile(std::string path) : path_(std::move(path)) {
    const auto parent = std::filesystem::path(path_).parent_path();
    dir_ = parent.empty() ? std::string(".") : parent.string();
  }
  const std::string& path() const { return path_; }
  const std::string& dir() const { return dir_; }

  std::string resolve(const std::string& p) const {
    return !p.empty() && p.front() == '/' ? p : dir_ + "/" + p;
  }

  // "<file>: <key>: <message>"
  std::unexpected<Error> at(std::string_view key, const Error& e) const {
    return fail(e.code, fmt::format("{}: {}: {}", path_, key, e.message));
  }
  std::unexpected<Error> at(std::string_view key, ErrorCode code, std::string_view what) const {
    return fail(code, fmt::format("{}: {}: {}", path_, key, what));
  }

  // Reads and parses the file, then lifts the members whose keys are names (`maps`: JsonSchema
  // has fixed members only) out of it and validates the rest against `schema`.
  Result<Json> load(const JsonSchema& schema, const std::vector<std::string>& maps,
                    std::map<std::string, std::map<std::string, std::string>>& map_values) const {
    auto text = read_text_file(path_);
    if (!text) return fail(text.error().code, fmt::format("{}: {}", path_, text.error().message));
    auto json = net::parse_json_strict(*text, path_);
    if (!json) return std::unexpected(json.error());
    if (!json->is_object()) return fail(ErrorCode::bad_format, path_ + ": not a JSON object");
    for (const auto& name : maps) {
      const auto it = json->find(name);
      if (it == json->end()) continue;
      auto m = url_map(name, *it);
      if (!m) return std::unexpected(m.error());
      map_values[name] = std::move(*m);
      json->erase(it);
    }
    if (auto v = schema.validate(*json, path_); !v) {
      // JsonSchema says "field a.b: ..." below the root; the file's name stands in for "field".
      const std::string_view m = v.error().message;
      if (m.starts_with("field ")) {
        return fail(v.error().code, fmt::format("{}: {}", path_, m.substr(6)));
      }
      return std::unexpected(v.error());
    }
    return json;
  }

  // {name: "https://..."}: the SHOs of the RO, the homes of the VNO.
  Result<std::map<std::string, std::string>> url_map(const std::string& key,
                                                     const Json& value) const {
    if (!value.is_object()) return at(key, ErrorCode::bad_format, "expected an object");
    std::map<std::string, std::string> out;
    for (auto it = value.begin(); it != value.end(); ++it) {
      const std::string name = key + "." + it.key();
      if (!pki::valid_mcim_id(it.key())) {
        return at(key, ErrorCode::invalid_argument, "a key is not an mcim id");
      }
      if (!it->is_string()) return at(name, ErrorCode::bad_format, "expected a string");
      auto url = https_url(name, it->get<std::string>());
      if (!url) return std::unexpected(url.error());
      out.emplace(it.key(), std::move(*url));
    }
    return out;
  }

  Result<std::string> https_url(std::string_view key, const std::string& url) const {
    auto parsed = net::parse_url(url);
    if (!parsed || !parsed->tls) {
      return at(key, ErrorCode::invalid_argument, "must be an https:// URL");
    }
    return url;
  }

  Result<std::shared_ptr<const pki::TrustAnchors>> anchors(std::string_view key,
                                                           const Json& files) const {
    std::vector<pki::X509Ptr> certs;
    for (std::size_t i = 0; i < files.size(); ++i) {
      auto loaded = pki::load_certificates(resolve(files[i].get<std::string>()));
      if (!loaded) return at(fmt::format("{}[{}]", key, i), loaded.error());
      for (auto& c : *loaded) certs.push_back(std::move(c));
    }
    std::vector<X509*> raw;
    for (const auto& c : certs) raw.push_back(c.get());
    auto t = pki::TrustAnchors::from_certs(raw);
    if (!t) return at(key, t.error());
    return std::make_shared<const pki::TrustAnchors>(std::move(*t));
  }

  Result<std::shared_ptr<const pki::KeyPair>> key_pair(std::string_view key,
                                                       const std::string& prefix) const {
    auto kp = pki::load_key_pair(resolve(prefix));
    if (!kp) return at(key, kp.error());
    return std::make_shared<const pki::KeyPair>(std::move(*kp));
  }

 private:
  std::string path_, dir_;
};

std::vector<JsonMember> common_members(bool client_required) {
  using net::optional;
  using net::required;
  JsonSchema tls = JsonSchema::object({
      required("cert", path_string()),
      required("key", path_string()),
      optional("client_roots", file_list()),
      optional("client_auth", JsonSchema::enumeration({"none", "optional", "required"})),
  });
  JsonSchema client = JsonSchema::object({
      required("cert", path_string()),
      required("key", path_string()),
      required("roots", file_list()),
  });
  return {
      optional("listen", JsonSchema::string(64)),
      optional("threads", JsonSchema::integer(1, 256)),
      optional("log_level", JsonSchema::enumeration({"debug", "info", "warn", "error"})),
      required("tls", std::move(tls)),
      JsonMember{"client", std::move(client), client_required},
  };
}

std::vector<JsonMember> with_common(std::vector<JsonMember> role, bool client_required) {
  auto members = common_members(client_required);
  for (auto& m : role) members.push_back(std::move(m));
  return members;
}

Result<ServeCommon> load_common(const ConfigFile& file, const Json& j,
                                net::ClientAuth default_auth) {
  ServeCommon c;
  c.path = file.path();
  c.dir = file.dir();
  if (j.contains("listen")) {
    auto l = parse_listen(j["listen"].get<std::string>(), "listen");
    if (!l) return fail(l.error().code, fmt::format("{}: {}", file.path(), l.error().message));
    c.listen = *l;
  }
  c.threads = j.value("threads", 2);
  if (j.contains("log_level")) log::parse_level(j["log_level"].get<std::string>(), c.log_level);

  const Json& tls = j["tls"];
  auto identity = net::load_tls_identity(file.resolve(tls["cert"].get<std::string>()),
                                         file.resolve(tls["key"].get<std::string>()));
  if (!identity) return file.at("tls", identity.error());
  c.tls.identity = *identity;
  c.tls.client_auth = default_auth;
  if (tls.contains("client_auth")) {
    const auto& a = tls["client_auth"].get_ref<const std::string&>();
    c.tls.client_auth = a == "none"       ? net::ClientAuth::none
                        : a == "optional" ? net::ClientAuth::optional
                                          : net::ClientAuth::required;
  }
  if (tls.contains("client_roots")) {
    auto roots = file.anchors("tls.client_roots", tls["client_roots"]);
    if (!roots) return std::unexpected(roots.error());
    c.tls.client_trust = *roots;
  } else if (c.tls.client_auth != net::ClientAuth::none) {
    return file.at("tls.client_roots", ErrorCode::missing_argument,
                   "missing (this service takes client certificates: client_auth is not none)");
  }

  if (j.contains("client")) {
    const Json& cl = j["client"];
    net::HttpsClientOptions o;
    auto id = net::load_tls_identity(file.resolve(cl["cert"].get<std::string>()),
                                     file.resolve(cl["key"].get<std::string>()));
    if (!id) return file.at("client", id.error());
    o.identity = *id;
    auto roots = file.anchors("client.roots", cl["roots"]);
    if (!roots) return std::unexpected(roots.error());
    o.trust = *roots;
    auto client = net::HttpsClient::create(std::move(o));
    if (!client) return file.at("client", client.error());
    c.client = std::move(*client);
  }
  return c;
}

std::vector<std::string> strings(const Json& j, const char* key) {
  std::vector<std::string> out;
  if (j.contains(key)) {
    for (const auto& s : j[key]) out.push_back(s.get<std::string>());
  }
  return out;
}

// A sqlite: URL with a relative path names a file beside the config.
std::string resolve_db(const ConfigFile& file, const std::string& url) {
  constexpr std::string_view kSqlite = "sqlite:";
  if (!url.starts_with(kSqlite)) return url;
  const std::string path = url.substr(kSqlite.size());
  if (path.empty() || path.front() == '/' || path.front() == ':') return url;
  return std::string(kSqlite) + file.resolve(path);
}

// The file's "db", or an SQLite file `default_name` beside it.
Result<std::string> database_of(const ConfigFile& file, const Json& j,
                                const std::string& default_name) {
  std::string url = j.contains("db") ? resolve_db(file, j["db"].get<std::string>())
                                     : "sqlite:" + file.resolve(default_name);
  if (auto r = check_database_url(url, "db"); !r) {
    return fail(r.error().code, fmt::format("{}: {}", file.path(), r.error().message));
  }
  return url;
}

// A file holding a secret (an OP, an owner's token): only its owner may read it. Its name, never
// its content, goes into a message.
Result<SecretBytes> read_private(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return fail(ErrorCode::not_found, fmt::format("{}: cannot be read", path));
  }
  if (!S_ISREG(st.st_mode)) {
    return fail(ErrorCode::invalid_argument, fmt::format("{}: not a file", path));
  }
  if ((st.st_mode & 077) != 0) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("{}: readable or writable by others (chmod 600 it)", path));
  }
  auto data = read_file(path);
  if (!data) return std::unexpected(data.error());
  return SecretBytes(std::move(*data));
}

Result<SecretBytes> read_private_file(const ConfigFile& file, const std::string& key,
                                      const std::string& path) {
  auto data = read_private(path);
  if (!data) return file.at(key, data.error());
  return data;
}

// An OP: one line of 32 hex digits in a private file, since whoever reads it can compute OPc
// from any K.
Result<Secret<16>> read_op_file(const ConfigFile& file, const std::string& key,
                                const std::string& path) {
  auto raw = read_private_file(file, key, path);
  if (!raw) return std::unexpected(raw.error());
  auto op = parse_secret16_text(raw->text(), key);
  if (!op) {
    return file.at(key, ErrorCode::invalid_argument, "the file must hold 16 bytes of hex");
  }
  return op;
}

// hostapd's eap_sim_db socket (docs/eap.md), checked here so that the message names the key:
// the resolved path must fit a sockaddr_un. The modes offered never open the socket to others,
// who could draw vectors from it (and use up the PCIDs' sequence numbers).
Result<ro::HlrGatewayOptions> load_eap_gateway(const ConfigFile& file, const Json& g,
                                               const ro::IcfConfig& icf) {
  ro::HlrGatewayOptions o;
  o.socket_path = file.resolve(g["socket"].get<std::string>());
  if (o.socket_path.size() > ro::kMaxHlrSocketPath) {
    return file.at("eap_gateway.socket", ErrorCode::invalid_argument,
                   fmt::format("{} bytes once resolved against the file's directory; a Unix "
                               "socket path has at most {}",
                               o.socket_path.size(), ro::kMaxHlrSocketPath));
  }
  o.mode = g.value("mode", std::string("0600")) == "0660" ? 0660 : 0600;
  // The RO's own ICF settings, so that EAP and 3GPP access see one PCID lifecycle; the AMF with
  // its separation bit, without which an EAP-AKA' peer refuses the AUTN (RFC 5448 3.1).
  o.icf = icf;
  o.icf.amf[0] |= 0x80;
  return o;
}

// F3 without AKA at the DRF (roles/ro/direct.h): on unless `enabled` is false; the DRF's URL as
// devices on a non-3GPP access reach it, echoed in the session answer.
Result<void> load_direct(const ConfigFile& file, const Json& d, ro::RoServiceConfig& s) {
  s.direct_access = d.value("enabled", s.direct_access);
  if (d.contains("drf_url")) {
    auto url = file.https_url("direct.drf_url", d["drf_url"].get<std::string>());
    if (!url) return std::unexpected(url.error());
    s.direct_drf_url = *url;
  }
  if (d.contains("challenge_lifetime_s")) {
    s.direct.challenge_lifetime =
        std::chrono::seconds(d["challenge_lifetime_s"].get<std::int64_t>());
  }
  return {};
}

// The VNO's non-3GPP access (F3, docs/eap.md "The relay"): where NASes send, the AAA server, the
// shared secret of both legs.
Result<roles::RadiusRelayOptions> load_non3gpp(const ConfigFile& file, const Json& n) {
  roles::RadiusRelayOptions o;
  auto listen = parse_listen(n["radius_listen"].get<std::string>(), "non3gpp.radius_listen");
  if (!listen) return fail(listen.error().code, file.path() + ": " + listen.error().message);
  auto aaa = parse_listen(n["aaa"].get<std::string>(), "non3gpp.aaa");
  if (!aaa) return fail(aaa.error().code, file.path() + ": " + aaa.error().message);
  if (aaa->port == 0) return file.at("non3gpp.aaa", ErrorCode::invalid_argument, "port 0");
  o.listen_host = listen->host;
  o.listen_port = listen->port;
  o.aaa_host = aaa->host;
  o.aaa_port = aaa->port;
  auto secret = read_radius_secret(file.resolve(n["secret_file"].get<std::string>()));
  if (!secret) return file.at("non3gpp.secret_file", secret.error());
  o.secret = std::move(*secret);
  return o;
}

}  // namespace

Result<ListenAddress> parse_listen(std::string_view text, std::string_view what) {
  auto bad = [&](std::string_view why) {
    return fail(ErrorCode::invalid_argument, fmt::format("{}: {}", what, why));
  };
  ListenAddress out;
  std::string_view port;
  if (text.starts_with("[")) {
    const auto close = text.find("]:");
    if (close == std::string_view::npos) return bad("expected IP:PORT or [IPv6]:PORT");
    out.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
    in6_addr a6{};
    if (::inet_pton(AF_INET6, out.host.c_str(), &a6) != 1) return bad("not an IPv6 address");
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("expected IP:PORT or [IPv6]:PORT");
    out.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
    in_addr a4{};
    if (::inet_pton(AF_INET, out.host.c_str(), &a4) != 1) {
      return bad("not an IPv4 address (names are not resolved; [IPv6] in brackets)");
    }
  }
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return bad("the port must be 0..65535");
  }
  out.port = static_cast<std::uint16_t>(value);
  return out;
}

net::HttpServerOptions ServeCommon::server_options(std::size_t body_limit) const {
  net::HttpServerOptions o;
  o.host = listen.host;
  o.port = listen.port;
  o.threads = threads;
  o.body_limit = body_limit;
  o.tls = tls;
  return o;
}

Result<void> check_database_url(std::string_view url, std::string_view what) {
  if (url.starts_with("sqlite:")) {
    if (url.size() == 7) {
      return fail(ErrorCode::invalid_argument, fmt::format("{}: sqlite: without a path", what));
    }
    return {};
  }
  if (url.starts_with("postgresql://") || url.starts_with("postgres://") || url == "memory:") {
    return {};
  }
  return fail(ErrorCode::invalid_argument,
              fmt::format("{}: unknown database URL scheme (expected sqlite:PATH, "
                          "postgresql://... or memory:)",
                          what));
}

std::string database_kind(std::string_view url) {
  if (url.starts_with("sqlite:")) return "sqlite";
  if (url.starts_with("postgres")) return "postgresql";
  if (url == "memory:") return "memory";
  return "unknown";
}

// F8 (roles/ro/renewal.h): the RO's package signer and its OP, the PCIDs' common one.
Result<void> load_renewal(const ConfigFile& file, const Json& j, ro::RenewalConfig& r) {
  auto signer =
      file.key_pair("pcid_renewal.package_signer", j["package_signer"].get<std::string>());
  if (!signer) return std::unexpected(signer.error());
  r.signer = *signer;
  auto op =
      read_op_file(file, "pcid_renewal.op_file", file.resolve(j["op_file"].get<std::string>()));
  if (!op) return std::unexpected(op.error());
  r.op = *op;
  if (j.contains("threshold_s"))
    r.threshold = std::chrono::seconds(j["threshold_s"].get<std::int64_t>());
  if (j.contains("lifetime_s"))
    r.lifetime = std::chrono::seconds(j["lifetime_s"].get<std::int64_t>());
  return {};
}

Result<RoServeConfig> load_ro_config(const std::string& path) {
  using net::optional;
  using net::required;
  const ConfigFile file(path);
  static const JsonSchema kSchema = JsonSchema::object(with_common(
      {
          optional("db", JsonSchema::string(4096)),
          required("operator_id", id_string()),
          optional("roaming_partners", id_list()),
          optional("suppliers", id_list()),
          required("supplier_roots", file_list()),
          required("operator_roots", file_list()),
          required("icf_key", path_string()),
          optional("expire_interval_s", JsonSchema::integer(0, kYearSeconds)),
          optional("notify_retry_ms", JsonSchema::integer(1, 3'600'000)),
          optional("notify_workers", JsonSchema::integer(1, 256)),
          optional("max_pending_notices", JsonSchema::integer(1, 100'000'000)),
          optional("max_poll_wait_s", JsonSchema::integer(0, 300)),
          optional("max_held_polls", JsonSchema::integer(1, 1'000'000)),
          optional("max_batch_bytes", JsonSchema::integer(1024, 1LL << 30)),
          optional("icf",
                   JsonSchema::object({
                       optional("amf", JsonSchema::hex(2)),
                       optional("max_activation_s", JsonSchema::integer(1, 10 * kYearSeconds)),
                       optional("dormant_period_s", JsonSchema::integer(1, 10 * kYearSeconds)),
                       optional("session_lifetime_s", JsonSchema::integer(1, kYearSeconds)),
                       optional("quarantine_s", JsonSchema::integer(0, 10 * kYearSeconds)),
                       optional("max_batch", JsonSchema::integer(1, 10'000'000)),
                   })),
          optional("drf", JsonSchema::object({
                              optional("require_known_pcid", JsonSchema::boolean()),
                              optional("change_attempts", JsonSchema::integer(1, 1000)),
                              optional("change_window_s", JsonSchema::integer(1, kYearSeconds)),
                          })),
          optional("direct", JsonSchema::object({
                                 optional("enabled", JsonSchema::boolean()),
                                 optional("drf_url", JsonSchema::string(256)),
                                 optional("challenge_lifetime_s", JsonSchema::integer(1, 3600)),
                             })),
          optional("eap_gateway", JsonSchema::object({
                                      required("socket", socket_path_string()),
                                      optional("mode", JsonSchema::enumeration({"0600", "0660"})),
                                  })),
          optional("pcid_renewal",
                   JsonSchema::object({
                       required("package_signer", path_string()),
                       required("op_file", path_string()),
                       optional("threshold_s", JsonSchema::integer(1, 10 * kYearSeconds)),
                       optional("lifetime_s", JsonSchema::integer(3600, 10 * kYearSeconds)),
                   })),
      },
      false));
  std::map<std::string, std::map<std::string, std::string>> maps;
  auto j = file.load(kSchema, {"shos"}, maps);
  if (!j) return std::unexpected(j.error());

  RoServeConfig c;
  auto common = load_common(file, *j, net::ClientAuth::optional);
  if (!common) return std::unexpected(common.error());
  c.common = std::move(*common);
  // The RO's handlers wait for database commits on their worker thread, so commits in flight
  // = workers: more workers than cores let the database group them (docs/performance.md).
  if (!j->contains("threads")) c.common.threads = kRoDefaultThreads;

  auto db = database_of(file, *j, "ro.db");
  if (!db) return std::unexpected(db.error());
  c.db_url = std::move(*db);

  ro::RoServiceConfig& s = c.service;
  s.operator_id = (*j)["operator_id"].get<std::string>();
  s.roaming_partners = strings(*j, "roaming_partners");
  s.suppliers = strings(*j, "suppliers");
  auto supplier_roots = file.anchors("supplier_roots", (*j)["supplier_roots"]);
  if (!supplier_roots) return std::unexpected(supplier_roots.error());
  s.supplier_roots = *supplier_roots;
  auto operator_roots = file.anchors("operator_roots", (*j)["operator_roots"]);
  if (!operator_roots) return std::unexpected(operator_roots.error());
  s.operator_roots = *operator_roots;
  auto icf_key = file.key_pair("icf_key", (*j)["icf_key"].get<std::string>());
  if (!icf_key) return std::unexpected(icf_key.error());
  s.icf_key = *icf_key;
  for (auto& [id, url] : maps["shos"]) s.shos[id] = ro::ShoEndpoint{url};
  s.notify_client = c.common.client;
  s.expire_interval = std::chrono::seconds(j->value("expire_interval_s", 60));
  s.notify_retry = std::chrono::milliseconds(j->value("notify_retry_ms", 500));
  s.notify_workers = j->value("notify_workers", s.notify_workers);
  s.max_pending_notices = j->value("max_pending_notices", s.max_pending_notices);
  s.max_poll_wait = std::chrono::seconds(j->value("max_poll_wait_s", s.max_poll_wait.count()));
  s.max_held_polls = j->value("max_held_polls", s.max_held_polls);
  s.max_batch_bytes = j->value("max_batch_bytes", s.max_batch_bytes);
  if (j->contains("icf")) {
    const Json& icf = (*j)["icf"];
    if (icf.contains("amf")) {
      auto amf = parse_hex_fixed<2>(icf["amf"].get<std::string>(), "icf.amf");
      if (!amf) return fail(amf.error().code, fmt::format("{}: {}", path, amf.error().message));
      s.icf.amf = *amf;
    }
    if (icf.contains("max_activation_s")) {
      s.icf.max_activation = std::chrono::seconds(icf["max_activation_s"].get<std::int64_t>());
    }
    if (icf.contains("dormant_period_s")) {
      s.icf.dormant_period = std::chrono::seconds(icf["dormant_period_s"].get<std::int64_t>());
    }
    if (icf.contains("session_lifetime_s")) {
      s.icf.session_lifetime = std::chrono::seconds(icf["session_lifetime_s"].get<std::int64_t>());
    }
    if (icf.contains("quarantine_s")) {
      s.icf.quarantine = std::chrono::seconds(icf["quarantine_s"].get<std::int64_t>());
    }
    s.icf.max_batch = icf.value("max_batch", s.icf.max_batch);
  }
  if (j->contains("drf")) {
    const Json& drf = (*j)["drf"];
    s.drf.require_known_pcid = drf.value("require_known_pcid", true);
    s.drf.change_attempts = drf.value("change_attempts", s.drf.change_attempts);
    if (drf.contains("change_window_s")) {
      s.drf.change_window = std::chrono::seconds(drf["change_window_s"].get<std::int64_t>());
    }
  }
  if (j->contains("direct")) {
    if (auto d = load_direct(file, (*j)["direct"], s); !d) return std::unexpected(d.error());
  }
  if (j->contains("eap_gateway")) {
    auto gateway = load_eap_gateway(file, (*j)["eap_gateway"], s.icf);
    if (!gateway) return std::unexpected(gateway.error());
    c.eap_gateway = std::move(*gateway);
  }
  if (j->contains("pcid_renewal")) {
    if (auto r = load_renewal(file, (*j)["pcid_renewal"], s.renewal); !r) {
      return std::unexpected(r.error());
    }
  }
  return c;
}

Result<VnoServeConfig> load_vno_config(const std::string& path) {
  using net::optional;
  using net::required;
  const ConfigFile file(path);
  static const JsonSchema kSchema = JsonSchema::object(with_common(
      {
          required("name", id_string()),
          optional("challenge_ttl_s", JsonSchema::integer(1, 3600)),
          optional("max_pending", JsonSchema::integer(1, 10'000'000)),
          required("routes",
                   JsonSchema::array(
                       JsonSchema::object({
                           required("prefix", digit_string(5, 15)),
                           required("home", id_string()),
                           optional("provisioning", JsonSchema::boolean()),
                           optional("drf_url", JsonSchema::string(2048)),
                       }),
                       10'000, 1)),
          optional("restricted_destinations", JsonSchema::array(JsonSchema::string(64), 1'000)),
          optional("gateway", JsonSchema::object({
                                  optional("listen", JsonSchema::string(64)),
                                  optional("threads", JsonSchema::integer(1, 256)),
                                  optional("header_limit", JsonSchema::integer(256, 1 << 20)),
                                  optional("head_timeout_ms", JsonSchema::integer(1, 3'600'000)),
                                  optional("connect_timeout_ms", JsonSchema::integer(1, 3'600'000)),
                                  optional("idle_timeout_ms", JsonSchema::integer(1, 86'400'000)),
                                  optional("max_tunnels", JsonSchema::integer(1, 10'000'000)),
                              })),
          optional("non3gpp", JsonSchema::object({
                                  required("radius_listen", JsonSchema::string(64)),
                                  required("aaa", JsonSchema::string(64)),
                                  required("secret_file", path_string()),
                                  optional("grant_ttl_s", JsonSchema::integer(1, 3600)),
                              })),
      },
      true));
  std::map<std::string, std::map<std::string, std::string>> maps;
  auto j = file.load(kSchema, {"homes"}, maps);
  if (!j) return std::unexpected(j.error());
  if (!maps.contains("homes")) return file.at("homes", ErrorCode::missing_argument, "missing");

  VnoServeConfig c;
  auto common = load_common(file, *j, net::ClientAuth::none);
  if (!common) return std::unexpected(common.error());
  c.common = std::move(*common);

  roles::VnoServiceConfig& s = c.service;
  s.options.name = (*j)["name"].get<std::string>();
  s.options.challenge_ttl = std::chrono::seconds(j->value("challenge_ttl_s", 60));
  s.options.max_pending = j->value("max_pending", s.options.max_pending);
  for (std::size_t i = 0; i < (*j)["restricted_destinations"].size(); ++i) {
    const auto d = (*j)["restricted_destinations"][i].get<std::string>();
    const auto key = fmt::format("restricted_destinations[{}]", i);
    if (auto a = parse_listen(d, key); !a) {
      return fail(a.error().code, fmt::format("{}: {}", path, a.error().message));
    }
    s.options.restricted_destinations.push_back(d);
  }
  s.homes = std::move(maps["homes"]);
  const Json& routes = (*j)["routes"];
  for (std::size_t i = 0; i < routes.size(); ++i) {
    roles::Route r;
    r.prefix = routes[i]["prefix"].get<std::string>();
    r.home = routes[i]["home"].get<std::string>();
    r.provisioning = routes[i].value("provisioning", false);
    if (routes[i].contains("drf_url")) {
      const auto key = fmt::format("routes[{}].drf_url", i);
      auto url = file.https_url(key, routes[i]["drf_url"].get<std::string>());
      if (!url) return std::unexpected(url.error());
      if (!r.provisioning) {
        return file.at(key, ErrorCode::invalid_argument, "only for a provisioning route");
      }
      r.drf_url = *url;
    }
    if (!s.homes.contains(r.home)) {
      return file.at(fmt::format("routes[{}].home", i), ErrorCode::invalid_argument,
                     "not a key of homes");
    }
    s.routes.push_back(std::move(r));
  }
  s.home_client = c.common.client;
  if (j->contains("gateway")) {
    const Json& g = (*j)["gateway"];
    if (g.contains("listen")) {
      auto l = parse_listen(g["listen"].get<std::string>(), "gateway.listen");
      if (!l) return fail(l.error().code, fmt::format("{}: {}", path, l.error().message));
      s.gateway.host = l->host;
      s.gateway.port = l->port;
    }
    s.gateway.threads = g.value("threads", s.gateway.threads);
    s.gateway.header_limit = g.value("header_limit", s.gateway.header_limit);
    auto ms = [&](const char* key, std::chrono::milliseconds& out) {
      if (g.contains(key)) out = std::chrono::milliseconds(g[key].get<std::int64_t>());
    };
    ms("head_timeout_ms", s.gateway.head_timeout);
    ms("connect_timeout_ms", s.gateway.connect_timeout);
    ms("idle_timeout_ms", s.gateway.idle_timeout);
    s.gateway.max_tunnels = g.value("max_tunnels", s.gateway.max_tunnels);
  }
  if (j->contains("non3gpp")) {
    auto relay = load_non3gpp(file, (*j)["non3gpp"]);
    if (!relay) return std::unexpected(relay.error());
    s.non3gpp = std::move(*relay);
    c.radius_secret_file = file.resolve((*j)["non3gpp"]["secret_file"].get<std::string>());
    s.options.eap_grant_ttl =
        std::chrono::seconds((*j)["non3gpp"].value("grant_ttl_s", s.options.eap_grant_ttl.count()));
  }
  return c;
}

Result<SupplierServeConfig> load_supplier_config(const std::string& path) {
  using net::optional;
  using net::required;
  const ConfigFile file(path);
  static const JsonSchema kSchema = JsonSchema::object(with_common(
      {
          required("supplier_id", id_string()),
          required("admins", JsonSchema::array(id_string(), 10'000, 1)),
          required("ca", path_string()),
          required("signer", path_string()),
          required("icf_cert", path_string()),
          required("icf_url", JsonSchema::string(2048)),
          optional("out_dir", path_string()),
          required("device", JsonSchema::object({
                                 required("ro_operator", id_string()),
                                 required("op_file", path_string()),
                                 optional("model", JsonSchema::string(64)),
                                 optional("certificate_days", JsonSchema::integer(1, 36'500)),
                                 optional("pcid_days", JsonSchema::integer(1, 36'500)),
                                 required("operator_roots", file_list()),
                                 optional("ocsp_url", JsonSchema::string(2048)),
                             })),
      },
      true));
  std::map<std::string, std::map<std::string, std::string>> maps;
  auto j = file.load(kSchema, {}, maps);
  if (!j) return std::unexpected(j.error());

  SupplierServeConfig c;
  auto common = load_common(file, *j, net::ClientAuth::optional);
  if (!common) return std::unexpected(common.error());
  c.common = std::move(*common);

  supplier::SupplierServiceConfig& s = c.service;
  s.supplier_id = (*j)["supplier_id"].get<std::string>();
  s.admins = strings(*j, "admins");
  auto ca = pki::Authority::open(file.resolve((*j)["ca"].get<std::string>()));
  if (!ca) return file.at("ca", ca.error());
  s.ca = std::make_shared<const pki::Authority>(std::move(*ca));
  auto signer = file.key_pair("signer", (*j)["signer"].get<std::string>());
  if (!signer) return std::unexpected(signer.error());
  s.signer = *signer;
  auto icf_cert = pki::load_certificate(file.resolve((*j)["icf_cert"].get<std::string>()));
  if (!icf_cert) return file.at("icf_cert", icf_cert.error());
  s.icf_cert = std::move(*icf_cert);
  auto icf_url = file.https_url("icf_url", (*j)["icf_url"].get<std::string>());
  if (!icf_url) return std::unexpected(icf_url.error());
  s.icf_url = *icf_url;
  s.ro_client = c.common.client;
  s.out_dir = file.resolve(j->value("out_dir", std::string("batches")));

  const Json& d = (*j)["device"];
  tre::ManufactureSpec& t = s.device_template;
  t.ro_operator = d["ro_operator"].get<std::string>();
  auto op = read_op_file(file, "device.op_file", file.resolve(d["op_file"].get<std::string>()));
  if (!op) return std::unexpected(op.error());
  t.op = *op;
  t.model = d.value("model", t.model);
  t.certificate_days = d.value("certificate_days", t.certificate_days);
  t.pcid_days = d.value("pcid_days", t.pcid_days);
  t.ocsp_url = d.value("ocsp_url", std::string());
  auto roots = file.anchors("device.operator_roots", d["operator_roots"]);
  if (!roots) return std::unexpected(roots.error());
  c.operator_roots = *roots;
  for (const auto& r : c.operator_roots->roots()) t.operator_roots.push_back(r.get());
  return c;
}

namespace {

// An owner's bearer token is configured by its SHA-256 (hex), or as a private file holding the
// token itself, hashed here: the SHO never keeps a token.
Result<sho::Owner> load_owner(const ConfigFile& file, const Json& o, std::size_t i) {
  const auto key = fmt::format("owners[{}]", i);
  sho::Owner owner;
  owner.id = o["id"].get<std::string>();
  if (o.contains("token_sha256") == o.contains("token_file")) {
    return file.at(key, ErrorCode::invalid_argument, "give one of token_sha256 and token_file");
  }
  if (o.contains("token_sha256")) {
    auto h = parse_hex_fixed<32>(o["token_sha256"].get<std::string>(), key + ".token_sha256");
    if (!h) return fail(h.error().code, fmt::format("{}: {}", file.path(), h.error().message));
    owner.token_sha256 = *h;
    return owner;
  }
  const auto token_key = key + ".token_file";
  auto raw = read_private_file(file, token_key, file.resolve(o["token_file"].get<std::string>()));
  if (!raw) return std::unexpected(raw.error());
  std::string_view token = raw->text();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back())) != 0) {
    token.remove_suffix(1);
  }
  if (token.empty()) return file.at(token_key, ErrorCode::invalid_argument, "the file is empty");
  owner.token_sha256 =
      pki::sha256(ByteView(reinterpret_cast<const std::uint8_t*>(token.data()), token.size()));
  return owner;
}

// The DPF's key pin: given as hex, or as the DPF's certificate whose public key is pinned.
Result<Bytes<32>> load_dpf_pin(const ConfigFile& file, const Json& r, const std::string& key) {
  if (r.contains("dpf_key_pin") == r.contains("dpf_cert")) {
    return file.at(key, ErrorCode::invalid_argument, "give one of dpf_key_pin and dpf_cert");
  }
  if (r.contains("dpf_key_pin")) {
    auto pin = parse_hex_fixed<32>(r["dpf_key_pin"].get<std::string>(), key + ".dpf_key_pin");
    if (!pin) return fail(pin.error().code, fmt::format("{}: {}", file.path(), pin.error().message));
    return *pin;
  }
  auto cert = pki::load_certificate(file.resolve(r["dpf_cert"].get<std::string>()));
  if (!cert) return file.at(key + ".dpf_cert", cert.error());
  return pki::spki_sha256(X509_get0_pubkey(cert->get()));
}

Result<sho::RoEndpoint> load_ro_endpoint(const ConfigFile& file, const Json& r, std::size_t i) {
  const auto key = fmt::format("ros[{}]", i);
  sho::RoEndpoint ro;
  ro.operator_id = r["operator_id"].get<std::string>();
  ro.pcid_prefix = r["pcid_prefix"].get<std::string>();
  auto url = file.https_url(key + ".url", r["url"].get<std::string>());
  if (!url) return std::unexpected(url.error());
  ro.base_url = *url;
  ro.dpf_url = ro.base_url;
  if (r.contains("dpf_url")) {
    auto dpf = file.https_url(key + ".dpf_url", r["dpf_url"].get<std::string>());
    if (!dpf) return std::unexpected(dpf.error());
    ro.dpf_url = *dpf;
  }
  auto pin = load_dpf_pin(file, r, key);
  if (!pin) return std::unexpected(pin.error());
  ro.dpf_key_pin = *pin;
  ro.apn = r["apn"].get<std::string>();
  return ro;
}

Result<std::shared_ptr<const pki::TrustAnchors>> anchors_at(const ConfigFile& file, const Json& j,
                                                           const char* key) {
  return file.anchors(key, j[key]);
}

}  // namespace

Result<ShoServeConfig> load_sho_config(const std::string& path) {
  using net::optional;
  using net::required;
  const ConfigFile file(path);
  static const JsonSchema kSchema = JsonSchema::object(with_common(
      {
          optional("db", JsonSchema::string(4096)),
          required("operator_id", id_string()),
          required("owners",
                   JsonSchema::array(
                       JsonSchema::object({
                           required("id", id_string()),
                           optional("token_sha256", JsonSchema::hex(32)),
                           optional("token_file", path_string()),
                       }),
                       10'000, 1)),
          required("ros", JsonSchema::array(
                              JsonSchema::object({
                                  required("operator_id", id_string()),
                                  required("pcid_prefix", digit_string(1, 15)),
                                  required("url", JsonSchema::string(2048)),
                                  optional("dpf_url", JsonSchema::string(256)),
                                  optional("dpf_key_pin", JsonSchema::hex(32)),
                                  optional("dpf_cert", path_string()),
                                  required("apn", JsonSchema::string(253)),
                              }),
                              1'000, 1)),
          optional("roaming_partners", id_list()),
          required("imsi_prefix", digit_string(5, 14)),
          optional("imsi_digits", JsonSchema::integer(6, 15)),
          required("op_file", path_string()),
          optional("ind_bits", JsonSchema::integer(0, 10)),
          optional("nonce_lifetime_s", JsonSchema::integer(60, kYearSeconds)),
          optional("mcim_lifetime_s", JsonSchema::integer(3600, 30 * kYearSeconds)),
          optional("max_prepared_packages", JsonSchema::integer(0, 10'000'000)),
          required("supplier_roots", file_list()),
          required("pva_roots", file_list()),
          required("pva_url", JsonSchema::string(2048)),
          required("package_signer", path_string()),
      },
      true));
  std::map<std::string, std::map<std::string, std::string>> maps;
  auto j = file.load(kSchema, {}, maps);
  if (!j) return std::unexpected(j.error());

  ShoServeConfig c;
  auto common = load_common(file, *j, net::ClientAuth::optional);
  if (!common) return std::unexpected(common.error());
  c.common = std::move(*common);
  if (!j->contains("threads")) c.common.threads = kShoDefaultThreads;
  auto db = database_of(file, *j, "sho.db");
  if (!db) return std::unexpected(db.error());
  c.db_url = std::move(*db);

  sho::ShoServiceConfig& s = c.service;
  s.operator_id = (*j)["operator_id"].get<std::string>();
  const Json& owners = (*j)["owners"];
  for (std::size_t i = 0; i < owners.size(); ++i) {
    auto owner = load_owner(file, owners[i], i);
    if (!owner) return std::unexpected(owner.error());
    s.owners.push_back(std::move(*owner));
  }
  const Json& ros = (*j)["ros"];
  for (std::size_t i = 0; i < ros.size(); ++i) {
    auto ro = load_ro_endpoint(file, ros[i], i);
    if (!ro) return std::unexpected(ro.error());
    s.ros.push_back(std::move(*ro));
  }
  s.roaming_partners = strings(*j, "roaming_partners");
  s.imsi_prefix = (*j)["imsi_prefix"].get<std::string>();
  s.imsi_digits = j->value("imsi_digits", s.imsi_digits);
  if (s.imsi_prefix.size() >= s.imsi_digits) {
    return file.at("imsi_prefix", ErrorCode::invalid_argument,
                   "must be shorter than imsi_digits (the serial needs a digit)");
  }
  auto op = read_op_file(file, "op_file", file.resolve((*j)["op_file"].get<std::string>()));
  if (!op) return std::unexpected(op.error());
  s.op = *op;
  s.ind_bits = j->value("ind_bits", s.ind_bits);
  if (j->contains("nonce_lifetime_s")) {
    s.nonce_lifetime = std::chrono::seconds((*j)["nonce_lifetime_s"].get<std::int64_t>());
  }
  if (j->contains("max_prepared_packages")) {
    s.max_prepared_packages = (*j)["max_prepared_packages"].get<std::size_t>();
  }
  if (j->contains("mcim_lifetime_s")) {
    s.mcim_lifetime = std::chrono::seconds((*j)["mcim_lifetime_s"].get<std::int64_t>());
  }
  auto supplier_roots = anchors_at(file, *j, "supplier_roots");
  if (!supplier_roots) return std::unexpected(supplier_roots.error());
  s.supplier_roots = *supplier_roots;
  auto pva_roots = anchors_at(file, *j, "pva_roots");
  if (!pva_roots) return std::unexpected(pva_roots.error());
  s.pva_roots = *pva_roots;
  auto pva_url = file.https_url("pva_url", (*j)["pva_url"].get<std::string>());
  if (!pva_url) return std::unexpected(pva_url.error());
  s.pva_url = *pva_url;
  auto signer = file.key_pair("package_signer", (*j)["package_signer"].get<std::string>());
  if (!signer) return std::unexpected(signer.error());
  s.package_signer = *signer;
  s.client = c.common.client;
  return c;
}

Result<PvaServeConfig> load_pva_config(const std::string& path) {
  using net::optional;
  using net::required;
  const ConfigFile file(path);
  static const JsonSchema kSchema = JsonSchema::object(with_common(
      {
          optional("db", JsonSchema::string(4096)),
          required("operator_id", id_string()),
          optional("suppliers", id_list()),
          optional("shos", id_list()),
          required("supplier_roots", file_list()),
          optional("supplier_intermediates", file_list()),
          required("supplier_ca", path_string()),
          required("ocsp_signer", path_string()),
          required("result_signer", path_string()),
          optional("challenge_lifetime_s", JsonSchema::integer(1, 86'400)),
          optional("policy",
                   JsonSchema::object({
                       optional("report_max_age_s", JsonSchema::integer(1, 86'400)),
                       optional("max_skew_s", JsonSchema::integer(0, 3600)),
                       optional("revocation_max_age_s", JsonSchema::integer(1, 30 * 86'400)),
                       optional("revocation_skew_s", JsonSchema::integer(0, 3600)),
                   })),
      },
      false));
  std::map<std::string, std::map<std::string, std::string>> maps;
  auto j = file.load(kSchema, {}, maps);
  if (!j) return std::unexpected(j.error());

  PvaServeConfig c;
  auto common = load_common(file, *j, net::ClientAuth::optional);
  if (!common) return std::unexpected(common.error());
  c.common = std::move(*common);
  auto db = database_of(file, *j, "pva.db");
  if (!db) return std::unexpected(db.error());
  c.db_url = std::move(*db);

  pva::PvaServiceConfig& s = c.service;
  s.operator_id = (*j)["operator_id"].get<std::string>();
  s.suppliers = strings(*j, "suppliers");
  s.shos = strings(*j, "shos");
  auto roots = anchors_at(file, *j, "supplier_roots");
  if (!roots) return std::unexpected(roots.error());
  s.supplier_roots = *roots;
  if (j->contains("supplier_intermediates")) {
    const Json& files = (*j)["supplier_intermediates"];
    for (std::size_t i = 0; i < files.size(); ++i) {
      auto certs = pki::load_certificates(file.resolve(files[i].get<std::string>()));
      if (!certs) return file.at(fmt::format("supplier_intermediates[{}]", i), certs.error());
      for (auto& cert : *certs) s.supplier_intermediates.push_back(std::move(cert));
    }
  }
  // The responder reads the CA's files itself: check here that they are there, so that the
  // message names the key.
  s.supplier_ca_dir = file.resolve((*j)["supplier_ca"].get<std::string>());
  if (auto ca = pki::Authority::open(s.supplier_ca_dir); !ca) return file.at("supplier_ca", ca.error());
  s.ocsp_signer_prefix = file.resolve((*j)["ocsp_signer"].get<std::string>());
  if (auto kp = file.key_pair("ocsp_signer", (*j)["ocsp_signer"].get<std::string>()); !kp) {
    return std::unexpected(kp.error());
  }
  auto signer = file.key_pair("result_signer", (*j)["result_signer"].get<std::string>());
  if (!signer) return std::unexpected(signer.error());
  s.result_signer = *signer;
  if (j->contains("challenge_lifetime_s")) {
    s.challenge_lifetime = std::chrono::seconds((*j)["challenge_lifetime_s"].get<std::int64_t>());
  }
  if (j->contains("policy")) {
    const Json& p = (*j)["policy"];
    auto secs = [&](const char* key, std::chrono::seconds& out) {
      if (p.contains(key)) out = std::chrono::seconds(p[key].get<std::int64_t>());
    };
    secs("report_max_age_s", s.policy.report_max_age);
    secs("max_skew_s", s.policy.max_skew);
    secs("revocation_max_age_s", s.policy.revocation_max_age);
    secs("revocation_skew_s", s.policy.revocation_skew);
  }
  return c;
}

Result<std::shared_ptr<const SecretBytes>> read_radius_secret(const std::string& path) {
  auto raw = read_private(path);
  if (!raw) return std::unexpected(raw.error());
  std::string_view text = raw->text();
  if (text.ends_with('\n')) text.remove_suffix(1);
  if (text.ends_with('\r')) text.remove_suffix(1);
  if (text.empty() || text.size() > 128) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("{}: the secret must be 1-128 octets", path));
  }
  const ByteView secret = bytes_of(text);
  return std::make_shared<const SecretBytes>(ByteVec(secret.begin(), secret.end()));
}

}  // namespace mcim::cli
