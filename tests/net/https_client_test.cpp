// The HTTPS client against our TLS server: verification by trust anchors with the host checked,
// by SPKI pin (the device's way to the DPF), both; keep-alive reuse and recovery from a
// connection the server closed; response size and time limits; URL parsing; thread safety;
// clients sharing TLS contexts without sharing their pins, host checks or identities; a client
// adopting another's idle connections only where it would have accepted them itself.
#include "net/https_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "net/metrics.h"
#include "net_test_util.h"

namespace mcim::net {
namespace {

using namespace std::chrono_literals;
using testing::echo;
using testing::make_client;
using testing::start_server;
using testing::TestPki;
using testing::tls_options;

Bytes<32> server_pin() { return pki::spki_sha256(TestPki::get().server().identity->key.get()); }

TlsServerOptions misnamed_tls() {
  TlsServerOptions o;
  o.identity = TestPki::get().misnamed_server().identity;
  return o;
}

// The echo server over TLS, counting the requests that reach it in `calls`.
std::unique_ptr<HttpServer> start_counting_server(std::atomic<int>& calls) {
  return start_server(
      [&calls](const HttpRequest& r) {
        ++calls;
        return echo(r);
      },
      tls_options());
}

TEST(HttpsClient, RightPinConnectsWithoutTrustAnchors) {
  auto server = start_server(echo, tls_options());
  ASSERT_TRUE(server);
  HttpsClientOptions o;
  o.spki_pin = server_pin();
  auto client = make_client("", o);
  const auto r = client->request("POST", server->url() + "/dpf", "hello", "text/plain");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "POST /dpf hello");
}

TEST(HttpsClient, WrongPinIsRefusedBeforeAnyRequest) {
  std::atomic<int> calls{0};
  auto server = start_counting_server(calls);
  ASSERT_TRUE(server);
  HttpsClientOptions o;
  o.spki_pin = server_pin();
  (*o.spki_pin)[0] ^= 1;
  const auto r = make_client("", o)->get(server->url() + "/dpf");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::chain_invalid);
  EXPECT_NE(r.error().message.find("pin"), std::string::npos) << r.error().message;
  // With trust anchors that do accept the server, a wrong pin still refuses it.
  o.trust = TestPki::get().anchors();
  EXPECT_EQ(make_client("", o)->get(server->url() + "/dpf").error().code, ErrorCode::chain_invalid);
  EXPECT_EQ(calls.load(), 0);
}

TEST(HttpsClient, UntrustedServerIsRefused) {
  auto server = start_server(echo, tls_options());
  ASSERT_TRUE(server);
  HttpsClientOptions o;
  o.trust = TestPki::get().stranger_anchors();
  const auto r = make_client("", o)->get(server->url() + "/");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::chain_invalid) << r.error().message;
}

TEST(HttpsClient, HostNameOrAddressIsChecked) {
  auto server = start_server(echo, misnamed_tls());  // certificate for elsewhere.test only
  ASSERT_TRUE(server);
  const auto r = make_client()->get(server->url() + "/");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::chain_invalid);
  EXPECT_NE(r.error().message.find("does not name the host"), std::string::npos)
      << r.error().message;
  // A pin names the key, not the host: the device pinning the DPF accepts it.
  HttpsClientOptions o;
  o.spki_pin = pki::spki_sha256(TestPki::get().misnamed_server().identity->key.get());
  EXPECT_TRUE(make_client("", o)->get(server->url() + "/").has_value());
}

TEST(HttpsClient, DnsNameMatchesTheCertificate) {
  auto server = start_server(echo, tls_options());  // DNS:localhost among its names
  ASSERT_TRUE(server);
  const auto r = make_client()->get("https://localhost:" + std::to_string(server->port()) + "/x");
  if (!r && r.error().code == ErrorCode::io_error) GTEST_SKIP() << "localhost does not resolve";
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->body, "GET /x ");
}

TEST(HttpsClient, KeepAliveReusesOneConnectionPerHost) {
  auto server = start_server(echo, tls_options());
  ASSERT_TRUE(server);
  auto client = make_client();
  for (int i = 0; i < 20; ++i) {
    const auto r = client->request(i % 2 ? "POST" : "GET", server->url() + "/k", "b");
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }
  EXPECT_EQ(client->connections_opened(), 1u);
  EXPECT_EQ(server->connections_accepted(), 1u);
  client->close_idle();
  ASSERT_TRUE(client->get(server->url() + "/k").has_value());
  EXPECT_EQ(server->connections_accepted(), 2u);
}

TEST(HttpsClient, ConnectionCloseIsNotPooled) {
  auto server = start_server(
      [](const HttpRequest& r) {
        auto resp = echo(r);
        resp.headers.emplace_back("Connection", "close");
        return resp;
      },
      tls_options());
  ASSERT_TRUE(server);
  auto client = make_client();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(client->get(server->url() + "/").has_value());
  EXPECT_EQ(server->connections_accepted(), 3u);
}

TEST(HttpsClient, ServerClosedIdleConnectionIsReplacedTransparently) {
  HttpServerOptions o;
  o.read_timeout = 50ms;  // the server drops idle keep-alive connections after this
  o.metrics = std::make_shared<Metrics>("t");
  auto server = start_server(echo, tls_options(), o);
  ASSERT_TRUE(server);
  auto client = make_client();
  ASSERT_TRUE(client->get(server->url() + "/1").has_value());
  // Until the server has closed the idle connection (bounded).
  Gauge& open = o.metrics->gauge("mcim_http_connections_open", "");
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (open.value() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(open.value(), 0);
  const auto r = client->get(server->url() + "/2");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->body, "GET /2 ");
  EXPECT_EQ(client->connections_opened(), 2u);
}

TEST(HttpsClient, OversizeResponseIsRefused) {
  auto server = start_server(
      [](const HttpRequest&) {
        return HttpResponse{200, "text/plain", std::string(4096, 'x'), {}};
      },
      tls_options());
  ASSERT_TRUE(server);
  HttpsClientOptions o;
  o.max_response_body = 1024;
  const auto r = make_client("", o)->get(server->url() + "/big");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::bad_format);
  o.max_response_body = 4096;
  EXPECT_TRUE(make_client("", o)->get(server->url() + "/big").has_value());
}

// The server holds its answer until the test lets it go (at most 10 s): a client that waited for
// it instead of its 100 ms would take seconds, so the bound has room for a loaded machine.
TEST(HttpsClient, RequestTimeoutIsHonoured) {
  std::mutex mu;
  std::condition_variable cv;
  bool released = false;
  auto server = start_server(
      [&](const HttpRequest& r) {
        std::unique_lock lock(mu);
        cv.wait_for(lock, 10s, [&] { return released; });
        return echo(r);
      },
      tls_options());
  ASSERT_TRUE(server);
  HttpsClientOptions o;
  o.request_timeout = 100ms;
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = make_client("", o)->get(server->url() + "/slow");
  const auto took = std::chrono::steady_clock::now() - t0;
  {
    std::lock_guard lock(mu);
    released = true;
  }
  cv.notify_all();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::io_error);
  EXPECT_NE(r.error().message.find("timed out"), std::string::npos) << r.error().message;
  EXPECT_LT(took, 3s);
}

TEST(HttpsClient, HandshakeTimeoutIsHonoured) {
  // A plain HTTP server never answers the ClientHello with TLS: the client gives up in time.
  auto server = start_server(echo, std::nullopt);
  ASSERT_TRUE(server);
  HttpsClientOptions o;
  o.connect_timeout = 150ms;
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = make_client("", o)->get("https://" + server->address() + "/");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::io_error);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST(HttpsClient, ConnectionRefusedIsAnIoError) {
  std::string url;
  {
    auto server = start_server(echo, tls_options());
    ASSERT_TRUE(server);
    url = server->url() + "/";
  }
  const auto r = make_client()->get(url);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::io_error);
}

TEST(HttpsClient, ManyThreadsShareOneClient) {
  HttpServerOptions so;
  so.threads = 2;
  auto server = start_server(echo, tls_options(ClientAuth::required), so);
  ASSERT_TRUE(server);
  HttpsClientOptions o;
  o.max_idle_per_host = 8;
  auto client = make_client("vno-a", o);
  constexpr int kThreads = 6, kRequests = 15;
  std::vector<std::future<int>> done;
  for (int t = 0; t < kThreads; ++t) {
    done.push_back(std::async(std::launch::async, [&, t] {
      int ok = 0;
      for (int i = 0; i < kRequests; ++i) {
        const std::string body = std::to_string(t) + "." + std::to_string(i);
        auto r = client->request("POST", server->url() + "/m", body, "text/plain");
        ok += r && r->body == "POST /m " + body;
      }
      return ok;
    }));
  }
  for (auto& d : done) EXPECT_EQ(d.get(), kRequests);
  EXPECT_LE(client->connections_opened(), static_cast<std::uint64_t>(kThreads));
  EXPECT_EQ(server->connections_accepted(), client->connections_opened());
}

// A TrustAnchors object of the test's own (the test root again): contexts are shared by object,
// so the counts below are not disturbed by clients of TestPki's anchors.
std::shared_ptr<const pki::TrustAnchors> own_anchors() {
  auto anchors = pki::TrustAnchors::from_file(TestPki::get().root_file());
  EXPECT_TRUE(anchors.has_value()) << anchors.error().message;
  return std::make_shared<const pki::TrustAnchors>(std::move(*anchors));
}

std::string operator_of(const HttpRequest& r) {
  const std::string* id = r.peer.operator_id();
  return id != nullptr ? *id : "none";
}

TEST(HttpsClient, ClientsWithTheSameAnchorsShareOneContext) {
  auto server = start_server(echo, tls_options());
  ASSERT_TRUE(server);
  const std::size_t before = HttpsClient::live_client_contexts();
  HttpsClientOptions o;
  o.trust = own_anchors();
  auto a = make_client("", o);
  auto b = make_client("", o);
  EXPECT_EQ(HttpsClient::live_client_contexts(), before + 1);
  EXPECT_TRUE(a->get(server->url() + "/a").has_value());
  EXPECT_TRUE(b->get(server->url() + "/b").has_value());
  // The same certificates in another object: contexts are not compared by content.
  HttpsClientOptions same_content;
  same_content.trust = own_anchors();
  auto c = make_client("", same_content);
  EXPECT_EQ(HttpsClient::live_client_contexts(), before + 2);
  EXPECT_TRUE(c->get(server->url() + "/c").has_value());
  // A context lives as long as its last client.
  a.reset();
  EXPECT_EQ(HttpsClient::live_client_contexts(), before + 2);
  b.reset();
  EXPECT_EQ(HttpsClient::live_client_contexts(), before + 1);
  c.reset();
  EXPECT_EQ(HttpsClient::live_client_contexts(), before);
  // Clients with a pin only share theirs too (made here or by an earlier test), kept for the
  // process's life: it holds no caller's objects.
  HttpsClientOptions pinned;
  pinned.spki_pin = server_pin();
  auto p = make_client("", pinned);
  const std::size_t with_pinned = HttpsClient::live_client_contexts();
  EXPECT_LE(with_pinned, before + 1);
  auto q = make_client("", pinned);
  EXPECT_EQ(HttpsClient::live_client_contexts(), with_pinned);
  EXPECT_TRUE(q->get(server->url() + "/q").has_value());
  p.reset();
  q.reset();
  EXPECT_EQ(HttpsClient::live_client_contexts(), with_pinned);
}

TEST(HttpsClient, ClientsShareAContextOnlyWithTheSameIdentity) {
  auto server = start_server(
      [](const HttpRequest& r) {
        return HttpResponse{200, "text/plain", operator_of(r), {}};
      },
      tls_options(ClientAuth::required));
  ASSERT_TRUE(server);
  const std::size_t before = HttpsClient::live_client_contexts();
  HttpsClientOptions o;
  o.trust = own_anchors();
  auto a = make_client("vno-a", o);
  auto a2 = make_client("vno-a", o);
  EXPECT_EQ(HttpsClient::live_client_contexts(), before + 1);
  auto b = make_client("vno-b", o);
  EXPECT_EQ(HttpsClient::live_client_contexts(), before + 2);
  const std::vector<std::pair<HttpsClient*, std::string>> cases = {
      {a.get(), "vno-a"}, {a2.get(), "vno-a"}, {b.get(), "vno-b"}};
  for (const auto& [client, expected] : cases) {
    const auto r = client->get(server->url() + "/who");
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->body, expected);
  }
}

// Clients of one context with the right and a wrong pin, with and without trust anchors: the
// callback checks each connection against its own client's pin, whichever connects first.
TEST(HttpsClient, PinIsCheckedPerClientOnASharedContext) {
  std::atomic<int> calls{0};
  auto server = start_counting_server(calls);
  ASSERT_TRUE(server);
  const auto anchors = own_anchors();
  for (const bool with_anchors : {true, false}) {
    SCOPED_TRACE(with_anchors ? "with anchors" : "pin only");
    HttpsClientOptions right;
    if (with_anchors) right.trust = anchors;
    right.spki_pin = server_pin();
    HttpsClientOptions wrong = right;
    (*wrong.spki_pin)[0] ^= 1;
    for (const bool wrong_first : {true, false}) {
      auto r = make_client("", right);
      auto w = make_client("", wrong);
      const auto expect_right = [&] {
        const auto a = r->get(server->url() + "/right");
        ASSERT_TRUE(a.has_value()) << a.error().message;
        EXPECT_EQ(a->body, "GET /right ");
      };
      const auto expect_wrong = [&] {
        const auto a = w->get(server->url() + "/wrong");
        ASSERT_FALSE(a.has_value());
        EXPECT_EQ(a.error().code, ErrorCode::chain_invalid);
        EXPECT_NE(a.error().message.find("pin"), std::string::npos) << a.error().message;
      };
      if (wrong_first) {
        expect_wrong();
        expect_right();
      } else {
        expect_right();
        expect_wrong();
      }
    }
  }
  EXPECT_EQ(calls.load(), 4);
}

// Fresh clients from several threads at once, so that contexts are shared, made and freed while
// other threads' handshakes verify pins through them.
TEST(HttpsClient, PinsOnSharedContextsHoldUnderConcurrency) {
  HttpServerOptions so;
  so.threads = 2;
  auto server = start_server(echo, tls_options(), so);
  ASSERT_TRUE(server);
  std::vector<HttpsClientOptions> variants(
      4);  // anchors + right, anchors + wrong, pin right, wrong
  variants[0].trust = variants[1].trust = own_anchors();
  for (auto& v : variants) v.spki_pin = server_pin();
  (*variants[1].spki_pin)[0] ^= 1;
  (*variants[3].spki_pin)[0] ^= 1;
  constexpr int kThreads = 8, kRounds = 10;
  std::vector<std::future<int>> done;
  for (int t = 0; t < kThreads; ++t) {
    done.push_back(std::async(std::launch::async, [&, t] {
      const HttpsClientOptions& o = variants[static_cast<std::size_t>(t) % variants.size()];
      const bool right = t % 2 == 0;
      int as_expected = 0;
      for (int i = 0; i < kRounds; ++i) {
        auto client = HttpsClient::create(o);
        if (!client) continue;
        const auto r = (*client)->get(server->url() + "/c");
        as_expected += right ? r.has_value() && r->body == "GET /c "
                             : !r && r.error().code == ErrorCode::chain_invalid &&
                                   r.error().message.find("pin") != std::string::npos;
      }
      return as_expected;
    }));
  }
  for (auto& d : done) EXPECT_EQ(d.get(), kRounds);
}

TEST(HttpsClient, HostNameIsCheckedOnASharedContext) {
  auto good = start_server(echo, tls_options());
  auto misnamed = start_server(echo, misnamed_tls());  // certificate for elsewhere.test only
  ASSERT_TRUE(good && misnamed);
  const std::size_t before = HttpsClient::live_client_contexts();
  HttpsClientOptions o;
  o.trust = own_anchors();
  auto a = make_client("", o);
  auto b = make_client("", o);
  // With the misnamed server's pin as well: both must hold, and the name still does not.
  HttpsClientOptions pinned = o;
  pinned.spki_pin = pki::spki_sha256(TestPki::get().misnamed_server().identity->key.get());
  auto c = make_client("", pinned);
  EXPECT_EQ(HttpsClient::live_client_contexts(), before + 1);
  const auto expect_misnamed = [&](HttpsClient& client) {
    const auto r = client.get(misnamed->url() + "/");
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, ErrorCode::chain_invalid);
    EXPECT_NE(r.error().message.find("does not name the host"), std::string::npos)
        << r.error().message;
  };
  EXPECT_TRUE(a->get(good->url() + "/").has_value());
  expect_misnamed(*b);
  expect_misnamed(*a);
  EXPECT_TRUE(b->get(good->url() + "/").has_value());
  expect_misnamed(*c);
}

// The test root in an anchors object of its own.
std::shared_ptr<const pki::TrustAnchors> fresh_anchors() {
  auto anchors = pki::TrustAnchors::from_file(TestPki::get().root_file());
  EXPECT_TRUE(anchors.has_value()) << anchors.error().message;
  return std::make_shared<const pki::TrustAnchors>(std::move(*anchors));
}

// The device's DRF then DPF on one server: a client with anchors makes the connection, a client
// pinned to the server's key adopts it and opens none of its own.
TEST(HttpsClient, PinnedClientAdoptsAVerifiedIdleConnection) {
  auto server = start_server(echo, tls_options());
  ASSERT_TRUE(server);
  auto drf = make_client();
  ASSERT_TRUE(drf->get(server->url() + "/bootstrap").has_value());
  HttpsClientOptions pinned;
  pinned.spki_pin = server_pin();
  auto dpf = make_client("", pinned);
  EXPECT_EQ(dpf->adopt_idle(*drf), 1u);
  EXPECT_EQ(dpf->adopt_idle(*drf), 0u);  // moved, not copied
  const auto r = dpf->request("POST", server->url() + "/dpf", "x", "text/plain");
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->body, "POST /dpf x");
  EXPECT_EQ(dpf->connections_opened(), 0u);
  EXPECT_EQ(server->connections_accepted(), 1u);
  // The connection went back to the adopting client's pool; the other has none left.
  ASSERT_TRUE(drf->get(server->url() + "/bootstrap").has_value());
  EXPECT_EQ(drf->connections_opened(), 2u);
  EXPECT_EQ(server->connections_accepted(), 2u);
  EXPECT_EQ(dpf->adopt_idle(*dpf), 0u);  // itself: nothing to do, no deadlock
}

TEST(HttpsClient, AdoptedConnectionOutlivesTheClientThatMadeIt) {
  auto server = start_server(echo, tls_options());
  ASSERT_TRUE(server);
  HttpsClientOptions pinned;
  pinned.spki_pin = server_pin();
  auto dpf = make_client("", pinned);
  {
    // Anchors of its own, so that its TLS context goes with it.
    HttpsClientOptions o;
    o.trust = fresh_anchors();
    auto drf = make_client("", o);
    ASSERT_TRUE(drf->get(server->url() + "/bootstrap").has_value());
    EXPECT_EQ(dpf->adopt_idle(*drf), 1u);
  }
  for (int i = 0; i < 3; ++i) {
    const auto r = dpf->get(server->url() + "/dpf");
    ASSERT_TRUE(r.has_value()) << r.error().message;
  }
  EXPECT_EQ(dpf->connections_opened(), 0u);
  EXPECT_EQ(server->connections_accepted(), 1u);
}

TEST(HttpsClient, WrongPinAdoptsNothing) {
  auto server = start_server(echo, tls_options());
  ASSERT_TRUE(server);
  auto drf = make_client();
  ASSERT_TRUE(drf->get(server->url() + "/bootstrap").has_value());
  HttpsClientOptions o;
  o.spki_pin = server_pin();
  (*o.spki_pin)[0] ^= 1;
  auto dpf = make_client("", o);
  EXPECT_EQ(dpf->adopt_idle(*drf), 0u);
  const auto r = dpf->get(server->url() + "/dpf");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::chain_invalid);
  EXPECT_NE(r.error().message.find("pin"), std::string::npos) << r.error().message;
  // With the same anchors too: the pin is still checked.
  o.trust = TestPki::get().anchors();
  EXPECT_EQ(make_client("", o)->adopt_idle(*drf), 0u);
  // The connection stayed where it was.
  ASSERT_TRUE(drf->get(server->url() + "/bootstrap").has_value());
  EXPECT_EQ(drf->connections_opened(), 1u);
}

TEST(HttpsClient, AnchorsMustBeTheSameObjectToAdopt) {
  auto server = start_server(echo, tls_options());
  ASSERT_TRUE(server);
  auto from = make_client();
  ASSERT_TRUE(from->get(server->url() + "/").has_value());
  // The same certificates in another object: not known to have checked the same way.
  HttpsClientOptions copy;
  copy.trust = fresh_anchors();
  EXPECT_EQ(make_client("", copy)->adopt_idle(*from), 0u);
  HttpsClientOptions stranger;
  stranger.trust = TestPki::get().stranger_anchors();
  EXPECT_EQ(make_client("", stranger)->adopt_idle(*from), 0u);
  // From a client verifying by pin only, a client with anchors takes nothing.
  HttpsClientOptions pinned;
  pinned.spki_pin = server_pin();
  auto pin_only = make_client("", pinned);
  ASSERT_TRUE(pin_only->get(server->url() + "/").has_value());
  EXPECT_EQ(make_client()->adopt_idle(*pin_only), 0u);
  // The same anchors object: moves.
  EXPECT_EQ(make_client()->adopt_idle(*from), 1u);
}

TEST(HttpsClient, AdoptionNeedsTheSameRouteAndIdentity) {
  auto server = start_server(echo, tls_options());
  ASSERT_TRUE(server);
  HttpsClientOptions base;
  base.spki_pin = server_pin();
  base.proxy_credential = "session-a";  // unused without a proxy, but compared all the same
  auto from = make_client("", base);
  ASSERT_TRUE(from->get(server->url() + "/").has_value());
  HttpsClientOptions other_credential = base;
  other_credential.proxy_credential = "session-b";
  EXPECT_EQ(make_client("", other_credential)->adopt_idle(*from), 0u);
  HttpsClientOptions via_proxy = base;
  via_proxy.proxy = "127.0.0.1:9";
  EXPECT_EQ(make_client("", via_proxy)->adopt_idle(*from), 0u);
  HttpsClientOptions with_identity = base;
  with_identity.identity = TestPki::get().client("vno-a").identity;
  EXPECT_EQ(make_client("", with_identity)->adopt_idle(*from), 0u);
  EXPECT_EQ(make_client("", base)->adopt_idle(*from), 1u);
}

TEST(HttpsClient, AdoptionTakesNoPlainOrDeadConnectionsAndKeepsTheLimit) {
  HttpServerOptions so;
  so.threads = 4;
  auto plain = start_server(echo, std::nullopt);
  ASSERT_TRUE(plain);
  HttpsClientOptions o;
  o.trust = TestPki::get().anchors();
  o.allow_plain_http = true;
  auto from = make_client("", o);
  ASSERT_TRUE(from->get(plain->url() + "/").has_value());
  EXPECT_EQ(make_client("", o)->adopt_idle(*from), 0u);

  // Three idle connections to one server, at most two adopted.
  auto server = start_server(echo, tls_options(), so);
  ASSERT_TRUE(server);
  std::vector<std::unique_ptr<HttpsClient>> makers;
  for (int i = 0; i < 3; ++i) {
    makers.push_back(make_client());
    ASSERT_TRUE(makers.back()->get(server->url() + "/").has_value());
    EXPECT_EQ(from->adopt_idle(*makers.back()), 1u);
  }
  HttpsClientOptions limited;
  limited.trust = TestPki::get().anchors();
  limited.max_idle_per_host = 2;
  auto to = make_client("", limited);
  EXPECT_EQ(to->adopt_idle(*from), 2u);
  EXPECT_EQ(to->adopt_idle(*from), 0u);

  // A connection the server closed stays behind.
  HttpServerOptions quick;
  quick.read_timeout = 50ms;  // the server drops idle keep-alive connections after this
  quick.metrics = std::make_shared<Metrics>("t");
  auto closing = start_server(echo, tls_options(), quick);
  ASSERT_TRUE(closing);
  auto maker = make_client();
  ASSERT_TRUE(maker->get(closing->url() + "/").has_value());
  Gauge& open = quick.metrics->gauge("mcim_http_connections_open", "");
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (open.value() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(open.value(), 0);
  EXPECT_EQ(make_client()->adopt_idle(*maker), 0u);
}

TEST(HttpsClient, OptionsAndRequestsAreCheckedLocally) {
  EXPECT_EQ(HttpsClient::create({}).error().code, ErrorCode::missing_argument);
  auto client = make_client();
  EXPECT_EQ(client->get("http://127.0.0.1:1/").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(client->request("GE T", "https://127.0.0.1:1/").error().code,
            ErrorCode::invalid_argument);
  EXPECT_EQ(client->request("GET", "https://127.0.0.1:1/", "", "", {{"X-A", "b\r\nInjected: 1"}})
                .error()
                .code,
            ErrorCode::invalid_argument);
  HttpsClientOptions plain;
  plain.allow_plain_http = true;
  auto plain_only = HttpsClient::create(plain);
  ASSERT_TRUE(plain_only.has_value());
  EXPECT_EQ((*plain_only)->get("https://127.0.0.1:1/").error().code, ErrorCode::missing_argument);
}

TEST(ParseUrl, Table) {
  struct Case {
    std::string url;
    bool tls;
    std::string host;
    std::uint16_t port;
    std::string target;
  };
  const std::vector<Case> valid = {
      {"https://127.0.0.1:8443/v1/x?y=1", true, "127.0.0.1", 8443, "/v1/x?y=1"},
      {"https://dpf.ro.example", true, "dpf.ro.example", 443, "/"},
      {"HTTP://h:80", false, "h", 80, "/"},
      {"http://h", false, "h", 80, "/"},
      {"https://[::1]:9000/a", true, "::1", 9000, "/a"},
      {"https://h?q", true, "h", 443, "/?q"},
  };
  for (const Case& c : valid) {
    const auto u = parse_url(c.url);
    ASSERT_TRUE(u.has_value()) << c.url;
    EXPECT_EQ(u->tls, c.tls) << c.url;
    EXPECT_EQ(u->host, c.host) << c.url;
    EXPECT_EQ(u->port, c.port) << c.url;
    EXPECT_EQ(u->target, c.target) << c.url;
  }
  for (const char* bad :
       {"ftp://h/", "https//h/", "https://user@h/", "https://h:0/", "https://h:65536/",
        "https://h:/", "https://h:12x/", "https:///x", "https://[::1/", "https://[nothex]/",
        "https://h/a b", "https://h/a#frag", "https://h_bad/", "https://[::1]x/"}) {
    const auto u = parse_url(bad);
    EXPECT_FALSE(u.has_value()) << bad;
    if (!u) {
      EXPECT_EQ(u.error().code, ErrorCode::invalid_argument) << bad;
    }
  }
}

}  // namespace
}  // namespace mcim::net
