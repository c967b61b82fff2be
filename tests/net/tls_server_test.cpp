// The HTTP server over TLS 1.3 with certificates from pki::Authority: handshakes with our client
// and with independent peers (openssl s_client, curl), TLS 1.2 refused, client certificates in
// the three modes (none, optional, required), the peer identity handed to the handler, keep-alive
// over TLS, and the graceful stop with TLS connections open.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "net/http_error.h"
#include "net/metrics.h"
#include "net_test_util.h"

namespace mcim::net {
namespace {

using namespace std::chrono_literals;
using testing::make_client;
using testing::run_command;
using testing::start_server;
using testing::TestPki;
using testing::tls_options;

// Answers who the peer is, as the handler saw it.
HttpResponse whoami(const HttpRequest& r) {
  const PeerCertificate* cert = r.peer.certificate.get();
  Json j = {{"tls", r.peer.tls},
            {"address", r.peer.address},
            {"operator", r.peer.operator_id() ? Json(*r.peer.operator_id()) : Json()},
            {"subject", cert ? Json(cert->subject) : Json()},
            {"chain", cert ? cert->chain.size() : 0},
            {"target", r.target}};
  return json_response(200, j);
}

Json body_of(const Result<HttpResponse>& r) {
  EXPECT_TRUE(r.has_value()) << r.error().message;
  return r ? Json::parse(r->body) : Json();
}

std::string port_arg(const HttpServer& s) { return "127.0.0.1:" + std::to_string(s.port()); }

// A raw loopback TCP connection with a 5 s receive timeout.
int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST(TlsServer, HandshakeWithACertificateFromTheAuthority) {
  auto server = start_server(whoami, tls_options());
  ASSERT_TRUE(server);
  EXPECT_TRUE(server->tls());
  EXPECT_EQ(server->url(), "https://" + port_arg(*server));
  auto client = make_client();
  const Json j = body_of(client->get(server->url() + "/who?x=1"));
  EXPECT_EQ(j["tls"], true);
  EXPECT_EQ(j["target"], "/who?x=1");
  EXPECT_TRUE(j["operator"].is_null());
  EXPECT_EQ(j["chain"], 0);
  EXPECT_TRUE(j["address"].get<std::string>().starts_with("127.0.0.1:"));
}

TEST(TlsServer, OpensslClientNegotiatesTls13AndTls12IsRefused) {
  auto server = start_server(whoami, tls_options());
  ASSERT_TRUE(server);
  const auto& pki = TestPki::get();
  const auto ok = run_command(
      "printf 'GET /s HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'"
      " | openssl s_client -tls1_3 -verify_return_error -ign_eof -CAfile " +
      pki.root_file() + " -connect " + port_arg(*server));
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_NE(ok.output.find("TLSv1.3"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("Verify return code: 0 (ok)"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("HTTP/1.1 200 OK"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("\"target\":\"/s\""), std::string::npos) << ok.output;

  const auto old = run_command("openssl s_client -tls1_2 -CAfile " + pki.root_file() +
                               " -connect " + port_arg(*server) + " </dev/null");
  EXPECT_NE(old.status, 0) << old.output;
  EXPECT_NE(old.output.find("alert protocol version"), std::string::npos) << old.output;
  // The server still serves after the refused handshake.
  EXPECT_TRUE(make_client()->get(server->url() + "/after").has_value());
}

TEST(TlsServer, CurlInteroperatesIncludingClientCertificates) {
  if (!testing::have_command("curl")) GTEST_SKIP() << "curl not installed";
  auto server = start_server(whoami, tls_options(ClientAuth::optional));
  ASSERT_TRUE(server);
  const auto& pki = TestPki::get();
  const std::string curl = "curl -sS --max-time 5 --cacert " + pki.root_file() + " ";
  const auto plain = run_command(curl + server->url() + "/c");
  EXPECT_EQ(plain.status, 0) << plain.output;
  EXPECT_NE(plain.output.find("\"operator\":null"), std::string::npos) << plain.output;
  const auto& vno = pki.client("vno-a");
  const auto mtls = run_command(curl + "--cert " + vno.cert_file + " --key " + vno.key_file + " " +
                                server->url() + "/c");
  EXPECT_EQ(mtls.status, 0) << mtls.output;
  EXPECT_NE(mtls.output.find("\"operator\":\"vno-a\""), std::string::npos) << mtls.output;
  const auto tls12 = run_command(curl + "--tlsv1.2 --tls-max 1.2 " + server->url() + "/c");
  EXPECT_NE(tls12.status, 0) << tls12.output;
}

TEST(TlsServer, PeerOperatorIdReachesTheHandler) {
  auto server = start_server(whoami, tls_options(ClientAuth::required));
  ASSERT_TRUE(server);
  const Json j = body_of(make_client("vno-a")->get(server->url() + "/who"));
  EXPECT_EQ(j["operator"], "vno-a");
  EXPECT_NE(j["subject"].get<std::string>().find("CN=vno-a"), std::string::npos);
  EXPECT_EQ(j["chain"], 3);  // leaf, intermediate, root
  const Json none = body_of(make_client("anonymous")->get(server->url() + "/who"));
  EXPECT_TRUE(none["operator"].is_null());  // a certificate, but no operator URN
  EXPECT_EQ(none["chain"], 3);
}

TEST(TlsServer, RequiredClientAuthWithoutACertificateFailsTheHandshake) {
  std::atomic<int> calls{0};
  auto metrics = std::make_shared<Metrics>("t");
  HttpServerOptions o;
  o.metrics = metrics;
  auto server = start_server(
      [&](const HttpRequest& r) {
        ++calls;
        return whoami(r);
      },
      tls_options(ClientAuth::required), o);
  ASSERT_TRUE(server);
  const auto r = make_client()->get(server->url() + "/who");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::unauthenticated) << r.error().message;
  EXPECT_EQ(calls.load(), 0);
  server->stop();  // the worker has counted the failure once it has stopped
  EXPECT_NE(metrics->render().find("mcim_tls_handshake_failures_total 1"), std::string::npos);
}

TEST(TlsServer, ClientCertificateFromAnotherCaIsRefused) {
  std::atomic<int> calls{0};
  for (ClientAuth mode : {ClientAuth::optional, ClientAuth::required}) {
    auto server = start_server(
        [&](const HttpRequest& r) {
          ++calls;
          return whoami(r);
        },
        tls_options(mode));
    ASSERT_TRUE(server);
    const auto r = make_client("stranger")->get(server->url() + "/who");
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, ErrorCode::chain_invalid) << r.error().message;
  }
  EXPECT_EQ(calls.load(), 0);
}

TEST(TlsServer, ServerCertificateIsNoClientCertificate) {
  // The server's certificate has serverAuth only: not acceptable as a client's identity.
  auto server = start_server(whoami, tls_options(ClientAuth::required));
  ASSERT_TRUE(server);
  HttpsClientOptions o;
  o.identity = TestPki::get().server().identity;
  const auto r = make_client("", o)->get(server->url() + "/who");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::chain_invalid) << r.error().message;
}

TEST(TlsServer, OptionalClientAuthAdmitsClientsWithAndWithout) {
  auto server = start_server(whoami, tls_options(ClientAuth::optional));
  ASSERT_TRUE(server);
  EXPECT_TRUE(body_of(make_client()->get(server->url() + "/")).at("operator").is_null());
  EXPECT_EQ(body_of(make_client("vno-b")->get(server->url() + "/")).at("operator"), "vno-b");
}

TEST(TlsServer, KeepAliveServesManyRequestsOnOneConnection) {
  auto server = start_server(whoami, tls_options(ClientAuth::required));
  ASSERT_TRUE(server);
  auto client = make_client("vno-a");
  for (int i = 0; i < 10; ++i) {
    const Json j = body_of(client->get(server->url() + "/n/" + std::to_string(i)));
    EXPECT_EQ(j["operator"], "vno-a");  // the identity holds on every request
  }
  EXPECT_EQ(server->connections_accepted(), 1u);
  EXPECT_EQ(client->connections_opened(), 1u);
}

TEST(TlsServer, PlainTextOnATlsPortIsDroppedAndServingGoesOn) {
  auto server = start_server(whoami, tls_options());
  ASSERT_TRUE(server);
  HttpsClientOptions o;
  o.allow_plain_http = true;
  const auto r = make_client("", o)->get("http://" + port_arg(*server) + "/plain");
  EXPECT_FALSE(r.has_value());
  EXPECT_TRUE(make_client()->get(server->url() + "/tls").has_value());
}

TEST(TlsServer, PlainHttpServerReportsAPlainPeer) {
  auto server = start_server(whoami, std::nullopt);
  ASSERT_TRUE(server);
  EXPECT_FALSE(server->tls());
  HttpsClientOptions o;
  o.allow_plain_http = true;
  const Json j = body_of(make_client("", o)->get(server->url() + "/p"));
  EXPECT_EQ(j["tls"], false);
  EXPECT_TRUE(j["address"].get<std::string>().starts_with("127.0.0.1:"));
}

TEST(TlsServer, WorkersServeTlsConnectionsInParallel) {
  constexpr int kClients = 4;
  std::mutex mu;
  std::condition_variable cv;
  int inside = 0, max_inside = 0;
  HttpServerOptions o;
  o.threads = kClients;
  auto server = start_server(
      [&](const HttpRequest& r) {
        std::unique_lock lock(mu);
        max_inside = std::max(max_inside, ++inside);
        cv.notify_all();
        cv.wait_for(lock, 5s, [&] { return max_inside == kClients; });
        --inside;
        return whoami(r);
      },
      tls_options(), o);
  ASSERT_TRUE(server);
  auto client = make_client();
  std::vector<std::future<bool>> results;
  for (int i = 0; i < kClients; ++i) {
    results.push_back(std::async(std::launch::async, [&] {
      auto r = client->get(server->url() + "/");
      return r.has_value() && r->status == 200;
    }));
  }
  for (auto& r : results) EXPECT_TRUE(r.get());
  EXPECT_EQ(max_inside, kClients);
}

TEST(TlsServer, GracefulStopWithTlsConnectionsOpen) {
  std::promise<void> entered;
  HttpServerOptions o;
  o.threads = 2;
  o.stop_grace = 20s;  // idle and half-open connections must not make stop() wait this out
  auto server = start_server(
      [&](const HttpRequest& r) {
        if (r.target == "/slow") {
          entered.set_value();
          std::this_thread::sleep_for(200ms);
        }
        return whoami(r);
      },
      tls_options(ClientAuth::required), o);
  ASSERT_TRUE(server);
  auto idle = make_client("vno-a");
  ASSERT_TRUE(idle->get(server->url() + "/warm").has_value());  // now idle in the pool
  const int silent = connect_loopback(server->port());          // never starts its handshake
  ASSERT_GE(silent, 0);
  auto busy = make_client("vno-b");
  auto slow = std::async(std::launch::async, [&] { return busy->get(server->url() + "/slow"); });
  entered.get_future().wait();
  const auto t0 = std::chrono::steady_clock::now();
  server->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  const auto r = slow.get();
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->status, 200);  // the request in progress completed
  const auto again = idle->get(server->url() + "/late");
  EXPECT_FALSE(again.has_value());  // the server is gone, and so is the pooled connection
  char c;
  EXPECT_EQ(::recv(silent, &c, 1, 0), 0);  // closed by the stop
  ::close(silent);
}

TEST(TlsServer, IncompleteTlsOptionsAreErrors) {
  TlsServerOptions no_identity;
  HttpServerOptions o;
  o.tls = no_identity;
  EXPECT_EQ(HttpServer::start(o, whoami).error().code, ErrorCode::missing_argument);
  TlsServerOptions no_trust = tls_options();
  no_trust.client_auth = ClientAuth::required;
  o.tls = no_trust;
  EXPECT_EQ(HttpServer::start(o, whoami).error().code, ErrorCode::missing_argument);
}

TEST(TlsIdentity, LoadsFromFilesAndRefusesAMismatchedKey) {
  const auto& pki = TestPki::get();
  auto id = load_tls_identity(pki.server().cert_file, pki.server().key_file);
  ASSERT_TRUE(id.has_value()) << id.error().message;
  EXPECT_EQ((*id)->certs.size(), 2u);  // leaf + intermediate
  auto mismatch = load_tls_identity(pki.server().cert_file, pki.client("vno-a").key_file);
  ASSERT_FALSE(mismatch.has_value());
  EXPECT_EQ(mismatch.error().code, ErrorCode::invalid_argument);
  auto missing = load_tls_identity(pki.dir() / "nope.pem", pki.server().key_file);
  EXPECT_FALSE(missing.has_value());
}

}  // namespace
}  // namespace mcim::net
