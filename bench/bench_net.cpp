// What a new TLS connection costs, ours against OpenSSL's own floor. A fresh device opens two
// (the VNO's, and the RO's through the VNO's gateway) and has no session to resume, so in F2 the
// handshakes are a third of the simulated devices' CPU (docs/performance.md). Three cases, each
// with both ends in this process on 127.0.0.1 and the CPU time of every thread of the process:
//   BM_OpenSslHandshake   SSL_do_handshake between two in-memory BIO pairs: OpenSSL's work alone
//                         (TLS 1.3, X25519, the same P-256 server certificate and trust anchors)
//   BM_HttpsNewConnection what a device agent does per connection: HttpsClient::create, one GET
//                         over a new TCP + TLS connection to a net::HttpServer, the client gone
//   BM_HttpsKeepAlive     one more request on a kept-alive connection
// Run: build/bench/mcim_bench_net (figures in docs/performance.md).
#include <benchmark/benchmark.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "bench_util.h"
#include "common/clock.h"
#include "common/random.h"
#include "net/http_server.h"
#include "net/https_client.h"
#include "net/tls.h"
#include "pki/authority.h"
#include "pki/verify.h"

namespace {

using namespace mcim;
using bench::must;

// A root that issues the server's certificate (IP:127.0.0.1, as the services' in `mcim up`), and
// an echo server with two workers.
struct Fixture {
  std::filesystem::path dir;
  SystemClock clock;
  OsRandom rng;
  std::optional<pki::Authority> root;
  std::shared_ptr<const pki::TrustAnchors> anchors;
  pki::Issued server_cert;
  std::unique_ptr<net::HttpServer> server;

  Fixture() {
    dir = std::filesystem::temp_directory_path() / ("mcim-bench-net-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    root.emplace(must(
        pki::Authority::create(dir.string() + "/root", "Bench Root", nullptr, 30, "", clock, rng),
        "root"));
    anchors = std::make_shared<const pki::TrustAnchors>(
        must(pki::TrustAnchors::from_certs({root->cert()}), "anchors"));
    pki::CertSpec spec;
    spec.profile = pki::Profile::tls_server;
    spec.subject = "CN=server.bench,O=mcim bench";
    spec.sans = {"IP:127.0.0.1"};
    server_cert = must(root->issue(spec, clock, rng), "server certificate");
    net::TlsServerOptions tls;
    tls.identity = must(net::make_tls_identity(server_cert.key.get(), server_cert.cert.get()),
                        "server identity");
    net::HttpServerOptions o;
    o.threads = 2;
    o.tls = std::move(tls);
    server =
        must(net::HttpServer::start(o,
                                    [](const net::HttpRequest& r) {
                                      return net::HttpResponse{200, "text/plain", r.target, {}};
                                    }),
             "server");
  }
  ~Fixture() {
    server.reset();
    std::filesystem::remove_all(dir);
  }

  net::HttpsClientOptions client_options() const {
    net::HttpsClientOptions o;
    o.trust = anchors;
    return o;
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// Moves what each side wrote to the other; true when anything moved.
bool pump(BIO* client_end, BIO* server_end) {
  char buf[16384];
  bool moved = false;
  int n = 0;
  while ((n = BIO_read(client_end, buf, sizeof buf)) > 0) {
    BIO_write(server_end, buf, n);
    moved = true;
  }
  while ((n = BIO_read(server_end, buf, sizeof buf)) > 0) {
    BIO_write(client_end, buf, n);
    moved = true;
  }
  return moved;
}

void BM_OpenSslHandshake(benchmark::State& state) {
  Fixture& f = fixture();
  SSL_CTX* server = SSL_CTX_new(TLS_server_method());
  SSL_CTX* client = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(server, TLS1_3_VERSION);
  SSL_CTX_set_min_proto_version(client, TLS1_3_VERSION);
  SSL_CTX_use_certificate(server, f.server_cert.cert.get());
  SSL_CTX_use_PrivateKey(server, f.server_cert.key.get());
  SSL_CTX_set_session_cache_mode(server, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(server, 0);
  SSL_CTX_set1_verify_cert_store(client, f.anchors->store());
  SSL_CTX_set_verify(client, SSL_VERIFY_PEER, nullptr);
  for (auto _ : state) {
    SSL* c = SSL_new(client);
    SSL* s = SSL_new(server);
    BIO *c_in = nullptr, *c_out = nullptr, *s_in = nullptr, *s_out = nullptr;
    BIO_new_bio_pair(&c_in, 0, &c_out, 0);
    BIO_new_bio_pair(&s_in, 0, &s_out, 0);
    SSL_set_bio(c, c_in, c_in);
    SSL_set_bio(s, s_in, s_in);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c), "127.0.0.1");
    for (;;) {
      const int rc = SSL_do_handshake(c);
      const int rs = SSL_do_handshake(s);
      const bool moved = pump(c_out, s_out);
      if (rc == 1 && rs == 1) break;
      if (!moved) {
        state.SkipWithError("the handshake stalled");
        break;
      }
    }
    SSL_free(c);
    SSL_free(s);
    BIO_free(c_out);
    BIO_free(s_out);
  }
  SSL_CTX_free(client);
  SSL_CTX_free(server);
}
BENCHMARK(BM_OpenSslHandshake)->MeasureProcessCPUTime()->UseRealTime();

void BM_HttpsNewConnection(benchmark::State& state) {
  Fixture& f = fixture();
  const std::string url = f.server->url() + "/healthz";
  // In a fleet other devices' clients hold the shared SSL_CTX (net::HttpsClient's context cache
  // keeps one while a client with the same anchors lives): so does this one.
  auto holder = must(net::HttpsClient::create(f.client_options()), "client");
  for (auto _ : state) {
    auto client = must(net::HttpsClient::create(f.client_options()), "client");
    auto r = client->get(url);
    if (!r || r->status != 200) state.SkipWithError("the request failed");
  }
}
BENCHMARK(BM_HttpsNewConnection)->MeasureProcessCPUTime()->UseRealTime();

void BM_HttpsKeepAlive(benchmark::State& state) {
  Fixture& f = fixture();
  const std::string url = f.server->url() + "/healthz";
  auto client = must(net::HttpsClient::create(f.client_options()), "client");
  for (auto _ : state) {
    auto r = client->get(url);
    if (!r || r->status != 200) state.SkipWithError("the request failed");
  }
}
BENCHMARK(BM_HttpsKeepAlive)->MeasureProcessCPUTime()->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
