// Shared by the network tests: a small operator PKI made once per test program (a root, an
// intermediate that issues the TLS certificates, a stranger root for "wrong CA" cases), written
// to a temporary directory for the openssl and curl command lines too; servers on 127.0.0.1
// port 0; HTTPS clients with the right trust.
#pragma once

#include <gtest/gtest.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "../pki/pki_test_util.h"
#include "common/clock.h"
#include "common/random.h"
#include "net/http_server.h"
#include "net/https_client.h"
#include "net/tls.h"
#include "pki/authority.h"
#include "pki/verify.h"

namespace mcim::net::testing {

using pki::testing::run_command;
using pki::testing::TempDir;

struct Credential {
  std::shared_ptr<const TlsIdentity> identity;
  std::string cert_file, key_file;  // PEM: leaf then intermediate; PKCS#8 key
};

class TestPki {
 public:
  // Built on first use; shared by every test of the program (tests only read it).
  static TestPki& get() {
    static TestPki pki;
    return pki;
  }

  const TempDir& dir() const { return dir_; }
  std::string root_file() const { return dir_ / "root/ca.pem"; }
  std::string stranger_root_file() const { return dir_ / "stranger/ca.pem"; }
  std::shared_ptr<const pki::TrustAnchors> anchors() const { return anchors_; }
  std::shared_ptr<const pki::TrustAnchors> stranger_anchors() const { return stranger_anchors_; }

  // Server certificate for IP:127.0.0.1 and DNS:localhost.
  const Credential& server() const { return server_; }
  // Server certificate that names another host only (DNS:elsewhere.test).
  const Credential& misnamed_server() const { return misnamed_; }
  // Client certificates: urn:mcim:operator:vno-a, :vno-b, one naming no operator, and one for
  // vno-a from the stranger CA.
  const Credential& client(const std::string& name) const { return clients_.at(name); }
  // A tls-client certificate naming urn:mcim:operator:<id>, issued on first use (thread-safe;
  // "vno-a" and "vno-b" are the ones above).
  const Credential& operator_client(const std::string& id) {
    std::lock_guard lock(mu_);
    auto it = clients_.find(id);
    if (it == clients_.end()) {
      it = clients_.emplace(id, issue(*sub_, id, pki::Profile::tls_client,
                                      {"URI:urn:mcim:operator:" + id}))
               .first;
    }
    return it->second;
  }
  // A tls-server certificate for 127.0.0.1 and localhost whose key is its own (each service of
  // an integration test has a distinct key, so SPKI pins tell them apart), issued on first use.
  const Credential& named_server(const std::string& name) {
    std::lock_guard lock(mu_);
    auto it = servers_.find(name);
    if (it == servers_.end()) {
      it = servers_.emplace(name, issue(*sub_, "server-" + name, pki::Profile::tls_server,
                                        {"IP:127.0.0.1", "DNS:localhost"}))
               .first;
    }
    return it->second;
  }
  // The CA that issues the TLS certificates (to issue more in a test).
  const pki::Authority& tls_ca() const { return *sub_; }

 private:
  TestPki() {
    auto root =
        pki::Authority::create(dir_ / "root", "Operators Root", nullptr, 3650, "", clock_, rng_);
    EXPECT_TRUE(root.has_value()) << root.error().message;
    auto sub =
        pki::Authority::create(dir_ / "sub", "Operator TLS CA", &*root, 1825, "", clock_, rng_);
    EXPECT_TRUE(sub.has_value()) << sub.error().message;
    auto stranger =
        pki::Authority::create(dir_ / "stranger", "Stranger Root", nullptr, 3650, "", clock_, rng_);
    EXPECT_TRUE(stranger.has_value()) << stranger.error().message;
    anchors_ = std::make_shared<const pki::TrustAnchors>(
        std::move(*pki::TrustAnchors::from_certs({root->cert()})));
    stranger_anchors_ = std::make_shared<const pki::TrustAnchors>(
        std::move(*pki::TrustAnchors::from_certs({stranger->cert()})));
    sub_.emplace(std::move(*sub));
    server_ = issue(*sub_, "server", pki::Profile::tls_server, {"IP:127.0.0.1", "DNS:localhost"});
    misnamed_ = issue(*sub_, "misnamed", pki::Profile::tls_server, {"DNS:elsewhere.test"});
    clients_["vno-a"] =
        issue(*sub_, "vno-a", pki::Profile::tls_client, {"URI:urn:mcim:operator:vno-a"});
    clients_["vno-b"] =
        issue(*sub_, "vno-b", pki::Profile::tls_client, {"URI:urn:mcim:operator:vno-b"});
    clients_["anonymous"] = issue(*sub_, "anonymous", pki::Profile::tls_client, {});
    clients_["stranger"] =
        issue(*stranger, "stranger", pki::Profile::tls_client, {"URI:urn:mcim:operator:vno-a"});
  }

  Credential issue(const pki::Authority& ca, const std::string& name, pki::Profile profile,
                   std::vector<std::string> sans) {
    pki::CertSpec spec;
    spec.profile = profile;
    spec.subject = "CN=" + name + ",O=mcim test";
    spec.sans = std::move(sans);
    auto issued = ca.issue(spec, clock_, rng_);
    EXPECT_TRUE(issued.has_value()) << name << ": " << issued.error().message;
    // The intermediate travels with the leaf; a self-signed root stays out of the chain.
    std::vector<X509*> chain;
    if (X509_check_issued(ca.cert(), ca.cert()) != X509_V_OK) chain.push_back(ca.cert());
    Credential c;
    c.identity = *make_tls_identity(issued->key.get(), issued->cert.get(), chain);
    c.cert_file = dir_ / (name + ".pem");
    c.key_file = dir_ / (name + ".key");
    std::string pem = *pki::certificate_pem(issued->cert.get());
    for (X509* x : chain) pem += *pki::certificate_pem(x);
    EXPECT_TRUE(write_file(c.cert_file, pem));
    EXPECT_TRUE(pki::write_private_key(c.key_file, issued->key.get()).has_value());
    return c;
  }

  static bool write_file(const std::string& path, const std::string& text) {
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) return false;
    const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    return std::fclose(f) == 0 && ok;
  }

  TempDir dir_;
  SystemClock clock_;
  OsRandom rng_;
  std::shared_ptr<const pki::TrustAnchors> anchors_, stranger_anchors_;
  Credential server_, misnamed_;
  std::optional<pki::Authority> sub_;
  std::mutex mu_;  // guards clients_ and servers_ after construction
  std::map<std::string, Credential> clients_, servers_;
};

inline TlsServerOptions tls_options(ClientAuth auth = ClientAuth::none) {
  TlsServerOptions o;
  o.identity = TestPki::get().server().identity;
  o.client_auth = auth;
  if (auth != ClientAuth::none) o.client_trust = TestPki::get().anchors();
  return o;
}

inline std::unique_ptr<HttpServer> start_server(HttpHandler handler,
                                                std::optional<TlsServerOptions> tls,
                                                HttpServerOptions options = {}) {
  options.tls = std::move(tls);
  auto server = HttpServer::start(options, std::move(handler));
  EXPECT_TRUE(server.has_value()) << server.error().message;
  return server ? std::move(*server) : nullptr;
}

// A service's HTTPS server on 127.0.0.1 port 0 with TestPki's certificate for `name`: each
// service has its own key, so that SPKI pins tell them apart. Two worker threads.
inline std::unique_ptr<HttpServer> start_named_server(HttpHandler handler, const std::string& name,
                                                      ClientAuth auth, std::size_t body_limit) {
  auto tls = tls_options(auth);
  tls.identity = TestPki::get().named_server(name).identity;
  HttpServerOptions options;
  options.threads = 2;
  options.body_limit = body_limit;
  return start_server(std::move(handler), std::move(tls), options);
}

// A client trusting the test root, optionally presenting a client certificate.
inline std::unique_ptr<HttpsClient> make_client(const std::string& client_cert = "",
                                                HttpsClientOptions o = {}) {
  if (!o.trust && !o.spki_pin) o.trust = TestPki::get().anchors();
  if (!client_cert.empty()) o.identity = TestPki::get().client(client_cert).identity;
  auto c = HttpsClient::create(std::move(o));
  EXPECT_TRUE(c.has_value()) << c.error().message;
  return c ? std::move(*c) : nullptr;
}

// A handler answering "METHOD TARGET BODY" as text/plain: what the server received.
inline HttpResponse echo(const HttpRequest& r) {
  return HttpResponse{200, "text/plain", r.method + " " + r.target + " " + r.body, {}};
}

inline bool have_command(const std::string& name) {
  return run_command("command -v " + name).status == 0;
}

}  // namespace mcim::net::testing
