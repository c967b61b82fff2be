// F3 over non-3GPP access with real EAP peers from Debian: hostapd 2.10 as the integrated
// RADIUS/EAP server (driver=none), its eap_sim_db socket served by the RO's ICF through
// ro::HlrGateway (hlr_auc_gw protocol) over a SQLite store, and eapol_test as the device's EAP
// peer with external_sim=1, its SIM requests answered by a real TRE through
// device::serve_external_sim. Cases: EAP-AKA and EAP-AKA' succeed (exit 0, the MSK the peer
// derived equals the one hostapd sent in MS-MPPE keys), resynchronisation from a TRE whose SQN is
// ahead, and a TRE with another K for the same PCID fails. Each case has its own processes,
// killed at the end, and bounded waits. scripts/install-deps installs hostapd and eapoltest;
// their absence is a failure. EapRelay.*: the same with a RADIUS relay in between that checks every
// packet with net/radius.h and compares the MS-MPPE keys of the Access-Accept with the MSK that
// aka/eap_keys.h derives from the identity and the TRE's CK and IK. EapAccess.*: the whole of F3's
// access over EAP: the VNO service's RADIUS relay in front of hostapd, the RO service over the same
// database, and the device agent, which runs eapol_test itself, claims its restricted session at
// the VNO with the MSK, and reaches the DRF's bootstrap through the gateway, and nothing else.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../common/udp_port_util.h"
#include "../device/test_sho.h"
#include "../net/net_test_util.h"
#include "../tre/tre_fixture.h"
#include "aka/eap_keys.h"
#include "aka/sqn.h"
#include "common/hex.h"
#include "common/process.h"
#include "device/agent.h"
#include "device/eap_access.h"
#include "device/eap_sim.h"
#include "net/peer_call.h"
#include "net/radius.h"
#include "roles/ro/bootstrap.h"
#include "roles/ro/hlr_gw.h"
#include "roles/ro/icf.h"
#include "roles/ro/service.h"
#include "roles/vno/service.h"
#include "store/store.h"
#include "tre/tre.h"

namespace mcim {
namespace {

using namespace std::chrono_literals;
using test_util::executable;
using test_util::free_udp_port;
using test_util::udp_port_taken;
using tre::testing::World;

constexpr const char* kHostapd = "/usr/sbin/hostapd";
constexpr const char* kEapolTest = "/usr/bin/eapol_test";
constexpr const char* kSecret = "mcim-radius";  // RADIUS shared secret, 127.0.0.1 only
constexpr const char* kRealm = "wlan.mnc001.mcc001.3gppnetwork.org";
constexpr auto kCaseTimeout = 15s;  // eapol_test's own -t is below it

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// A process of ours, output to a log file; SIGTERM then SIGKILL on destruction if still running.
using Child = ChildProcess;

enum class Method { aka, aka_prime };

// The permanent identity eapol_test presents (RFC 4187 §4.1.1.6, RFC 5448 §3).
std::string identity(const std::string& pcid, Method method) {
  return fmt::format("{}{}@{}", method == Method::aka_prime ? "6" : "0", pcid, kRealm);
}

struct CaseResult {
  std::optional<int> exit_status;  // eapol_test's; nullopt: killed after the timeout
  Result<device::ExternalSimReport> report = fail(ErrorCode::internal, "not run");
  std::string peer_log;
};

class EapInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(executable(kHostapd) && executable(kEapolTest))
        << "hostapd and eapol_test are required: run scripts/install-deps";
    auto db = store::open_database("sqlite:" + world_.path("ro.db"));
    ASSERT_TRUE(db) << db.error().message;
    db_ = std::move(*db);
    ro::HlrGatewayOptions o;
    o.socket_path = world_.path("hlr.sock");
    auto gw = ro::HlrGateway::start(*db_, clock_, o);
    ASSERT_TRUE(gw) << gw.error().message;
    gateway_ = std::move(*gw);
    start_hostapd();
  }

  void TearDown() override {
    if (HasFailure() && hostapd_) {
      std::printf("---- hostapd log (tail)\n%s\n",
                  tail(read_file(world_.path("hostapd.log"))).c_str());
    }
    hostapd_.reset();
  }

  static std::string tail(const std::string& s, std::size_t n = 6000) {
    return s.size() > n ? s.substr(s.size() - n) : s;
  }

  void start_hostapd() {
    write_file(world_.path("eap_users"), "\"0\"*\tAKA\n\"6\"*\tAKA'\n");
    write_file(world_.path("radius_clients"), fmt::format("127.0.0.1/32\t{}\n", kSecret));
    for (int attempt = 0; attempt < 3 && !hostapd_; ++attempt) {
      port_ = free_udp_port();
      ASSERT_GT(port_, 0);
      write_file(world_.path("hostapd.conf"), hostapd_conf());
      auto child =
          Child::spawn({kHostapd, world_.path("hostapd.conf")}, world_.path("hostapd.log"));
      ASSERT_TRUE(child) << child.error().message;
      const auto until = std::chrono::steady_clock::now() + 5s;
      while (child->running() && !udp_port_taken(port_) &&
             std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(20ms);
      }
      if (child->running() && udp_port_taken(port_)) hostapd_.emplace(std::move(*child));
    }
    ASSERT_TRUE(hostapd_) << "hostapd did not come up:\n" << read_file(world_.path("hostapd.log"));
  }

  std::string hostapd_conf() const {
    return fmt::format(
        "driver=none\n"
        "interface=mcim-as\n"
        "logger_stdout=-1\n"
        "logger_stdout_level=0\n"
        "logger_syslog=0\n"
        "eap_server=1\n"
        "eap_user_file={}\n"
        "eap_sim_db=unix:{}\n"
        "eap_sim_aka_result_ind=1\n"
        "radius_server_clients={}\n"
        "radius_server_auth_port={}\n",
        world_.path("eap_users"), gateway_->socket_path(), world_.path("radius_clients"), port_);
  }

  // F0: the supplier's PCID subscription for `bundle` at the ICF; F7: its owner switched it on.
  void subscribe(const tre::SupplierBundle& bundle) {
    store::PcidSubscription s;
    s.pcid = bundle.pcid;
    s.k = bundle.k;
    s.opc = bundle.opc;
    s.ind_bits = bundle.ind_bits;
    s.not_after = bundle.pcid_not_after;
    ro::Icf icf(*db_, clock_, world_.rng());
    ASSERT_TRUE(icf.import_batch("batch-" + bundle.pcid, {s}, "supplier:sup-1"));
    ASSERT_TRUE(icf.activate(bundle.pcid, std::chrono::hours(1), "operator:sho-a"));
  }

  tre::Tre make_tre(const tre::SupplierBundle& bundle, const std::string& name) {
    const tre::Options o{world_.path(name)};
    auto init = tre::Tre::init(o, bundle);
    EXPECT_TRUE(init) << init.error().message;
    auto t = tre::Tre::open(o);
    EXPECT_TRUE(t) << t.error().message;
    return std::move(*t);
  }

  std::uint64_t tre_seq(const tre::Tre& t, const tre::SupplierBundle& b) {
    for (const auto& c : t.status().credentials) {
      if (c.id == b.pcid) return c.sqn_ms >> b.ind_bits;
    }
    ADD_FAILURE() << "no PCID credential in the TRE";
    return 0;
  }

  // One EAP run: eapol_test against hostapd, the TRE answering its SIM requests.
  // `server_port` replaces hostapd's port (a relay in between); `on_challenge` sees the TRE's
  // CK and IK (device::ExternalSimOptions::on_challenge).
  CaseResult run(
      tre::Tre& t, const std::string& pcid, Method method, const std::string& tag,
      std::optional<int> server_port = std::nullopt,
      std::function<void(const device::SimRequest&, const aka::UsimSuccess&)> on_challenge = {}) {
    const std::string ctrl_dir = world_.path("ctrl-" + tag);
    const std::string conf = world_.path("peer-" + tag + ".conf");
    write_file(
        conf, device::eapol_test_config(
                  ctrl_dir,
                  method == Method::aka_prime ? roles::EapMethod::aka_prime : roles::EapMethod::aka,
                  identity(pcid, method)));
    CaseResult out;
    const std::string log = world_.path("eapol-" + tag + ".log");
    auto peer = Child::spawn(
        {kEapolTest, "-c" + conf, "-a127.0.0.1", fmt::format("-p{}", server_port.value_or(port_)),
         std::string("-s") + kSecret, "-W", "-t10"},
        log);
    if (!peer) {
      ADD_FAILURE() << peer.error().message;
      return out;
    }
    device::ExternalSimOptions o;
    o.ctrl_path = ctrl_dir + "/test";  // eapol_test's interface is called "test"
    o.local_path = world_.path("dev-" + tag);
    o.credential = pcid;
    o.timeout = kCaseTimeout;
    o.on_challenge = std::move(on_challenge);
    {
      std::jthread device(
          [&](std::stop_token stop) { out.report = device::serve_external_sim(t, o, stop); });
      out.exit_status = peer->wait_for(kCaseTimeout);
      peer->stop();
    }  // the device's thread is stopped and joined here
    out.peer_log = read_file(log);
    return out;
  }

  void expect_success(const CaseResult& r, Method method) {
    EXPECT_EQ(r.exit_status, 0) << tail(r.peer_log);
    ASSERT_TRUE(r.report) << r.report.error().message;
    EXPECT_TRUE(r.report->eap_success);
    EXPECT_FALSE(r.report->eap_failure);
    EXPECT_EQ(r.report->rejects, 0u);
    // The peer derived an MSK with the method asked for (EAP-AKA shares EAP-SIM's key derivation
    // and its log label), and it equals the one hostapd derived from the ICF's vector: eapol_test
    // compares it with the RADIUS MS-MPPE keys.
    const std::string msk = method == Method::aka_prime
                                ? "EAP-AKA': MSK - hexdump(len=64)"
                                : "EAP-SIM: keying material (MSK) - hexdump(len=64)";
    EXPECT_NE(r.peer_log.find(msk), std::string::npos) << "no MSK line: " << tail(r.peer_log);
    EXPECT_NE(r.peer_log.find("MPPE keys OK: 1  mismatch: 0\nSUCCESS"), std::string::npos)
        << tail(r.peer_log);
  }

  World world_;
  SystemClock clock_;
  std::unique_ptr<store::Database> db_;
  std::unique_ptr<ro::HlrGateway> gateway_;
  int port_ = 0;
  std::optional<Child> hostapd_;
};

TEST_F(EapInterop, EapAkaSucceeds) {
  tre::SupplierBundle bundle = world_.bundle("001019900000001");
  subscribe(bundle);
  tre::Tre t = make_tre(bundle, "tre-1");
  const CaseResult r = run(t, bundle.pcid, Method::aka, "aka");
  expect_success(r, Method::aka);
  ASSERT_TRUE(r.report);
  EXPECT_EQ(r.report->challenges, 1u);
  EXPECT_EQ(r.report->resyncs, 0u);
  EXPECT_EQ(tre_seq(t, bundle), *db_->sqns().current(bundle.pcid));
}

TEST_F(EapInterop, EapAkaPrimeSucceeds) {
  tre::SupplierBundle bundle = world_.bundle("001019900000002");
  subscribe(bundle);
  tre::Tre t = make_tre(bundle, "tre-2");
  const CaseResult r = run(t, bundle.pcid, Method::aka_prime, "akap");
  expect_success(r, Method::aka_prime);
  ASSERT_TRUE(r.report);
  EXPECT_EQ(r.report->challenges, 1u);
}

// The TRE accepted SQNs far above the ICF's SEQ_HE (in every IND slot, TS 33.102 C.2.2): the
// first challenge gets AUTS, hostapd hands it to the gateway, the ICF resynchronises, and the
// second challenge succeeds.
TEST_F(EapInterop, ResynchronisationFromADeviceAhead) {
  tre::SupplierBundle bundle = world_.bundle("001019900000003");
  subscribe(bundle);
  tre::Tre t = make_tre(bundle, "tre-3");
  constexpr std::uint64_t kAhead = 5000;
  tre::testing::Network local(bundle.k.get(), bundle.opc.get(), bundle.ind_bits);
  aka::SqnPolicy policy;
  policy.ind_bits = bundle.ind_bits;
  local.home() = aka::HomeSqn(policy, kAhead - 1);
  for (unsigned ind = 0; ind < (1u << policy.ind_bits); ++ind) {
    const aka::AuthVector av = local.next(world_.rng(), ind);
    auto a = t.authenticate(bundle.pcid, av.rand, av.autn);
    ASSERT_TRUE(a && std::holds_alternative<aka::UsimSuccess>(*a)) << ind;
  }
  const std::uint64_t ahead = tre_seq(t, bundle);
  ASSERT_GE(ahead, kAhead);

  const CaseResult r = run(t, bundle.pcid, Method::aka, "resync");
  expect_success(r, Method::aka);
  ASSERT_TRUE(r.report);
  EXPECT_EQ(r.report->resyncs, 1u);
  EXPECT_EQ(r.report->challenges, 1u);
  EXPECT_GT(tre_seq(t, bundle), ahead);
  EXPECT_GE(*db_->sqns().current(bundle.pcid), tre_seq(t, bundle));
}

// The ICF holds one bundle's K for the PCID, the device another's: AUTN does not verify in the
// TRE, the peer rejects the network, eapol_test fails.
TEST_F(EapInterop, WrongKeyFails) {
  tre::SupplierBundle at_icf = world_.bundle("001019900000004");
  tre::SupplierBundle in_device = world_.bundle("001019900000004");
  ASSERT_NE(at_icf.k.get(), in_device.k.get());
  subscribe(at_icf);
  tre::Tre t = make_tre(in_device, "tre-4");
  const CaseResult r = run(t, in_device.pcid, Method::aka, "wrong");
  EXPECT_TRUE(r.exit_status.has_value()) << "eapol_test did not finish";
  EXPECT_NE(r.exit_status.value_or(0), 0) << tail(r.peer_log);
  ASSERT_TRUE(r.report) << r.report.error().message;
  EXPECT_FALSE(r.report->eap_success);
  EXPECT_GE(r.report->rejects, 1u);
  EXPECT_EQ(r.report->challenges, 0u);
  EXPECT_EQ(tre_seq(t, in_device), 0u) << "the TRE accepted a SQN from a network it cannot verify";
}

// ---- F3's access provider: a RADIUS relay that sees the keys ----------------------------------

// A non-3GPP access provider's RADIUS hop in miniature: eapol_test (the NAS side) sends to this
// relay, which forwards every datagram unchanged to hostapd and back (127.0.0.1 only, the same
// shared secret on both legs). On the way it checks each packet with net/radius.h: it parses, the
// Message-Authenticator of every packet and the Response Authenticator of every answer verify, and
// on Access-Accept it decrypts MS-MPPE-Recv-Key and MS-MPPE-Send-Key. One thread; the results are
// read after stop().
class RadiusRelay {
 public:
  struct Seen {
    unsigned requests = 0, challenges = 0, accepts = 0, rejects = 0;
    std::vector<std::string> refusals;  // every check that failed
    std::optional<std::string> user_name;
    std::optional<std::string> eap_identity;  // of the EAP-Response/Identity
    std::optional<SecretBytes> recv_key, send_key;
  };

  explicit RadiusRelay(int server_port) {
    client_fd_ = bound_udp_socket();
    server_fd_ = bound_udp_socket();
    sockaddr_in server = loopback(server_port);
    if (client_fd_ < 0 || server_fd_ < 0 ||
        ::connect(server_fd_, reinterpret_cast<sockaddr*>(&server), sizeof server) != 0) {
      return;
    }
    sockaddr_in a{};
    socklen_t len = sizeof a;
    ::getsockname(client_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::jthread([this](std::stop_token stop) { loop(stop); });
  }
  ~RadiusRelay() {
    stop();
    if (client_fd_ >= 0) ::close(client_fd_);
    if (server_fd_ >= 0) ::close(server_fd_);
  }
  RadiusRelay(const RadiusRelay&) = delete;
  RadiusRelay& operator=(const RadiusRelay&) = delete;

  int port() const { return port_; }  // 0 when the sockets could not be set up
  Seen& stop() {
    if (thread_.joinable()) {
      thread_.request_stop();
      thread_.join();
    }
    return seen_;
  }

 private:
  static sockaddr_in loopback(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    return a;
  }
  static int bound_udp_socket() {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = loopback(0);
    if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  }

  void loop(const std::stop_token& stop) {
    std::array<std::uint8_t, 8192> buf{};
    while (!stop.stop_requested()) {
      pollfd fds[2] = {{client_fd_, POLLIN, 0}, {server_fd_, POLLIN, 0}};
      if (::poll(fds, 2, 50) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        socklen_t len = sizeof client_;
        const ssize_t n = ::recvfrom(client_fd_, buf.data(), buf.size(), 0,
                                     reinterpret_cast<sockaddr*>(&client_), &len);
        if (n > 0) from_client(ByteView(buf.data(), static_cast<std::size_t>(n)));
      }
      if (fds[1].revents & POLLIN) {
        const ssize_t n = ::recv(server_fd_, buf.data(), buf.size(), 0);
        if (n > 0) from_server(ByteView(buf.data(), static_cast<std::size_t>(n)));
      }
    }
  }

  void refuse(std::string what, const Error& e) {
    seen_.refusals.push_back(fmt::format("{}: {}", what, e));
  }

  void from_client(ByteView wire) {
    auto p = net::radius::parse(wire);
    if (!p) return refuse("request", p.error());
    ++seen_.requests;
    if (auto m = net::radius::verify_message_authenticator(wire, bytes_of(kSecret), std::nullopt);
        !m) {
      refuse("request Message-Authenticator", m.error());
    }
    requests_[p->identifier] = p->authenticator;
    if (auto name = net::radius::user_name(*p); !name) {
      refuse("User-Name", name.error());
    } else if (*name && !seen_.user_name) {
      seen_.user_name = **name;
    }
    auto eap = net::radius::eap_message(*p);
    if (!eap) return refuse("request EAP-Message", eap.error());
    // EAP-Response (2) / Identity (1): code, id, length, type, then the identity.
    if (*eap && (*eap)->size() > 5 && (**eap)[0] == 2 && (**eap)[4] == 1 && !seen_.eap_identity) {
      seen_.eap_identity.emplace((*eap)->begin() + 5, (*eap)->end());
    }
    ::send(server_fd_, wire.data(), wire.size(), 0);
  }

  void from_server(ByteView wire) {
    auto p = net::radius::parse(wire);
    if (!p) return refuse("answer", p.error());
    const std::optional<net::radius::Authenticator> request = requests_[p->identifier];
    if (!request) return refuse("answer", Error(ErrorCode::not_found, "no request with its id"));
    if (auto r = net::radius::verify_response_authenticator(wire, *request, bytes_of(kSecret));
        !r) {
      refuse("Response Authenticator", r.error());
    }
    if (auto m = net::radius::verify_message_authenticator(wire, bytes_of(kSecret), request); !m) {
      refuse("answer Message-Authenticator", m.error());
    }
    if (p->code == net::radius::Code::access_challenge) ++seen_.challenges;
    if (p->code == net::radius::Code::access_reject) ++seen_.rejects;
    if (p->code == net::radius::Code::access_accept) {
      ++seen_.accepts;
      for (auto [which, slot] : {std::pair{net::radius::MppeKey::recv, &seen_.recv_key},
                                 std::pair{net::radius::MppeKey::send, &seen_.send_key}}) {
        auto key = net::radius::decrypt_mppe_key(*p, which, *request, bytes_of(kSecret));
        if (!key) {
          refuse("MS-MPPE key", key.error());
        } else {
          slot->emplace(std::move(*key));
        }
      }
    }
    ::sendto(client_fd_, wire.data(), wire.size(), 0, reinterpret_cast<sockaddr*>(&client_),
             sizeof client_);
  }

  int client_fd_ = -1;
  int server_fd_ = -1;
  int port_ = 0;
  sockaddr_in client_{};  // eapol_test's address, from its last datagram
  std::array<std::optional<net::radius::Authenticator>, 256> requests_{};  // by identifier
  Seen seen_;
  std::jthread thread_;  // last: stopped before the members it uses go
};

// What the TRE answered, kept past the wipe for the key derivation below.
struct TreAnswer {
  unsigned count = 0;
  Secret<16> ck, ik;
  aka::Autn autn{};
};

// eapol_test and hostapd through the relay; the relay's view of the exchange checked against the
// keys derived here with aka/eap_keys.h from the identity and the TRE's CK and IK.
class EapRelay : public EapInterop {
 protected:
  void run_and_check(Method method, const std::string& pcid, const std::string& tag) {
    tre::SupplierBundle bundle = world_.bundle(pcid);
    subscribe(bundle);
    tre::Tre t = make_tre(bundle, "tre-" + tag);
    RadiusRelay relay(port_);
    ASSERT_GT(relay.port(), 0) << "relay sockets";
    TreAnswer tre_answer;
    const CaseResult r = run(t, bundle.pcid, method, tag, relay.port(),
                             [&](const device::SimRequest& req, const aka::UsimSuccess& ok) {
                               ++tre_answer.count;
                               tre_answer.ck.mut() = ok.ck;
                               tre_answer.ik.mut() = ok.ik;
                               tre_answer.autn = req.autn;
                             });
    RadiusRelay::Seen& seen = relay.stop();
    expect_success(r, method);
    EXPECT_TRUE(seen.refusals.empty()) << fmt::format("{}", fmt::join(seen.refusals, "\n"));
    EXPECT_GE(seen.challenges, 1u);
    EXPECT_EQ(seen.accepts, 1u);
    EXPECT_EQ(seen.rejects, 0u);
    ASSERT_EQ(tre_answer.count, 1u);

    const std::string id = identity(bundle.pcid, method);
    EXPECT_EQ(seen.user_name, id);
    EXPECT_EQ(seen.eap_identity, id);
    ASSERT_TRUE(seen.recv_key && seen.send_key);
    const Secret<64> msk =
        method == Method::aka
            ? aka::derive_eap_aka_keys(id, tre_answer.ck.get(), tre_answer.ik.get()).msk
            : aka::derive_eap_aka_prime_keys(id, tre_answer.ck.get(), tre_answer.ik.get(), "WLAN",
                                             take<6>(ByteView(tre_answer.autn)))
                  .msk;
    // hostapd's RADIUS server: MS-MPPE-Recv-Key = MSK[0..31], MS-MPPE-Send-Key = MSK[32..63].
    const ByteView m(msk.get());
    EXPECT_EQ(seen.recv_key->view().size(), 32u);
    EXPECT_TRUE(constant_time_equal(seen.recv_key->view(), m.first(32)))
        << "Recv-Key is not MSK[0..31]"
        << (constant_time_equal(seen.recv_key->view(), m.subspan(32)) ? " (it is MSK[32..63])"
                                                                      : "");
    EXPECT_TRUE(constant_time_equal(seen.send_key->view(), m.subspan(32)))
        << "Send-Key is not MSK[32..63]";
  }
};

TEST_F(EapRelay, EapAkaMskReachesTheAccessNetwork) {
  run_and_check(Method::aka, "001019900000011", "relay-aka");
}

// hostapd 2.10 sends the access network name "WLAN" in AT_KDF_INPUT (eap_server_aka.c,
// eap_aka_prime_init); the MSK is derived from CK'/IK' for that name and SQN xor AK of AUTN.
TEST_F(EapRelay, EapAkaPrimeMskReachesTheAccessNetwork) {
  run_and_check(Method::aka_prime, "001019900000012", "relay-akap");
}

// ---- F3's access over EAP, end to end: hostapd behind the VNO's relay, the RO, the agent -------

// The RO service on the database the HLR gateway serves (one PCID lifecycle for both), the VNO
// service with its RADIUS relay in front of hostapd (the same shared secret on both legs), and
// the device agent with access eap_aka or eap_aka_prime.
class EapAccess : public EapInterop {
 protected:
  void SetUp() override {
    EapInterop::SetUp();
    if (HasFatalFailure()) return;
    auto auc = store::open_database("sqlite:" + world_.path("auc.db"));
    ASSERT_TRUE(auc) << auc.error().message;
    auc_db_ = std::move(*auc);
    sho_ = std::make_unique<device::testing::TestSho>(world_, *auc_db_, clock_,
                                                      device::testing::TestSho::Behaviour{});
    start_ro();
    if (HasFatalFailure()) return;
    sho_->connect(ro_server_->url());
    start_vno();
  }

  void TearDown() override {
    vno_server_.reset();
    vno_.reset();
    ro_server_.reset();
    ro_.reset();
    sho_.reset();
    EapInterop::TearDown();
  }

  void start_ro() {
    auto c = device::testing::ro_config(world_, sho_->url());
    ASSERT_TRUE(c) << c.error().message;
    auto service = ro::RoService::create(*db_, std::move(*c), clock_);
    ASSERT_TRUE(service) << service.error().message;
    ro_ = std::move(*service);
    ro_server_ = net::testing::start_named_server(ro_->handler(), "ro", net::ClientAuth::optional,
                                                  ro_->body_limit());
    ASSERT_TRUE(ro_server_);
  }

  void start_vno() {
    roles::VnoServiceConfig c;
    c.options.name = "vno-a";
    c.options.restricted_destinations = {ro_server_->address()};
    c.routes = {roles::Route{"00101990", "ro", true},
                roles::Route{device::testing::kImsiRange, "sho", false}};
    c.homes = {{"ro", ro_server_->url()}, {"sho", sho_->url()}};
    c.home_client = device::testing::operator_client("vno-a");
    roles::RadiusRelayOptions relay;
    relay.aaa_port = static_cast<std::uint16_t>(port_);
    relay.secret = secret();
    c.non3gpp = relay;
    auto service = roles::VnoService::create(std::move(c), clock_);
    ASSERT_TRUE(service) << service.error().message;
    vno_ = std::move(*service);
    vno_server_ =
        net::testing::start_named_server(vno_->handler(), "vno", net::ClientAuth::none, 64 * 1024);
    ASSERT_TRUE(vno_server_);
    ASSERT_NE(vno_->radius_relay(), nullptr);
  }

  static std::shared_ptr<const SecretBytes> secret() {
    const ByteView s = bytes_of(kSecret);
    return std::make_shared<const SecretBytes>(ByteVec(s.begin(), s.end()));
  }

  // F1 at the DRF as the SHO does it, with the device's PIN and the RO's key as the DPF pin.
  void register_at_drf(const tre::SupplierBundle& b) {
    const std::string pin(tre::pin_text(b));
    const net::Json reg = {
        {"device_id", b.device_id},
        {"dpf_url", ro_server_->url()},
        {"dpf_key_pin", to_hex(pki::spki_sha256(
                            net::testing::TestPki::get().named_server("ro").identity->key.get()))},
        {"apn", "m2m-prov.ro-1"},
        {"pin", pin}};
    auto r = device::testing::operator_client("sho-a")->request(
        "PUT", ro_server_->url() + "/v1/drf/registrations/" + b.pcid, reg.dump(),
        net::kJsonContentType);
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_EQ(r->status, 200) << r->body;
  }

  // F0, F7 and F1 at the RO for `bundle`, and its TRE.
  tre::Tre registered_device(const tre::SupplierBundle& bundle, const std::string& tag) {
    subscribe(bundle);
    register_at_drf(bundle);
    return make_tre(bundle, "tre-" + tag);
  }

  device::AgentConfig agent_config(device::Access access, const std::string& tag) {
    device::AgentConfig c;
    c.vno_url = vno_server_->url();
    c.tls.trust = net::testing::TestPki::get().anchors();
    c.access = access;
    c.eap.eapol_test = kEapolTest;
    const std::string relay = vno_->radius_relay()->address();
    c.eap.radius_host = "127.0.0.1";
    c.eap.radius_port = static_cast<std::uint16_t>(std::stoi(relay.substr(relay.rfind(':') + 1)));
    c.eap.radius_secret = secret();
    c.eap.work_dir = world_.path("eap-" + tag);
    c.eap.timeout = std::chrono::seconds(10);
    return c;
  }

  // Through the VNO's gateway with the device's session.
  std::unique_ptr<net::HttpsClient> through_gateway(const device::Attachment& a) {
    net::HttpsClientOptions o;
    o.trust = net::testing::TestPki::get().anchors();
    o.proxy = a.gateway;
    o.proxy_credential = a.session;
    return net::testing::make_client("", std::move(o));
  }

  // F3 from the agent's side: EAP through the relay, the session claimed, the bootstrap fetched
  // through the gateway and verified with the TRE's key, and the VNO's own API out of reach.
  void provision_until_bootstrap(device::Access access, const std::string& pcid,
                                 const std::string& tag) {
    tre::SupplierBundle bundle = world_.bundle(pcid);
    tre::Tre t = registered_device(bundle, tag);
    ASSERT_FALSE(HasFatalFailure());
    device::Agent agent(t, agent_config(access, tag), clock_);
    auto a = agent.attach_eap(bundle.pcid);
    ASSERT_TRUE(a) << a.error().message << "\n"
                   << tail(read_file(world_.path("eap-" + tag + "/eapol_test.log")));
    EXPECT_EQ(a->imsi, bundle.pcid);
    EXPECT_TRUE(a->restricted);
    EXPECT_EQ(a->gateway, vno_->gateway_address());
    EXPECT_EQ(a->drf_url, ro_server_->url());
    EXPECT_EQ(vno_->vno().eap_grants(), 0u);
    const auto relayed = vno_->radius_relay()->counters();
    EXPECT_EQ(relayed.accepts, 1u);
    EXPECT_EQ(relayed.dropped, 0u);
    // The ICF's session is open: the same one a 3GPP attach gets.
    auto home = db_->sessions().find(a->home_session);
    ASSERT_TRUE(home && *home);
    EXPECT_EQ((*home)->imsi, bundle.pcid);
    EXPECT_EQ((*home)->vno, "vno-a");

    auto client = through_gateway(*a);
    ASSERT_TRUE(client);
    auto boot = net::exchange(*client, "GET", a->drf_url + "/v1/drf/bootstrap", nullptr,
                              {.peer = "drf",
                               .ok_status = 200,
                               .headers = {{"Authorization", "Bearer " + a->home_session}}});
    ASSERT_TRUE(boot) << boot.error().message;
    auto key = t.bootstrap_key();
    ASSERT_TRUE(key);
    auto fields = ro::verify_bootstrap(boot->body, *key, bundle.device_id, clock_.now(),
                                       std::chrono::seconds(300));
    ASSERT_TRUE(fields) << fields.error().message;
    EXPECT_EQ(fields->pcid, bundle.pcid);

    auto elsewhere = client->request("GET", vno_server_->url() + "/metrics");
    ASSERT_FALSE(elsewhere) << "a restricted session reached the VNO's own API";
    EXPECT_EQ(elsewhere.error().code, ErrorCode::access_denied) << elsewhere.error().message;
    EXPECT_GE(vno_->vno().refused_forwards(), 1u);
  }

  // The whole of F3 then F2 steps 5-14 from the agent's side: EAP through the relay, the claimed
  // session, discovery, attestation, package, install, report, and the attach with the new IMSI.
  void provision_until_operational(device::Access access, const std::string& pcid,
                                   const std::string& tag) {
    tre::SupplierBundle bundle = world_.bundle(pcid);
    tre::Tre t = registered_device(bundle, tag);
    ASSERT_FALSE(HasFatalFailure());
    ASSERT_TRUE(t.record_registration(device::testing::kNonce));  // F1: the owner's registration
    device::Agent agent(t, agent_config(access, tag), clock_);
    auto out = agent.provision();
    ASSERT_TRUE(out) << out.error().message << "\n"
                     << tail(read_file(world_.path("eap-" + tag + "/eapol_test.log")));
    EXPECT_EQ(sho_->failure(), "");
    using device::Step;
    std::vector<Step> steps;
    for (const auto& s : out->steps) steps.push_back(s.step);
    EXPECT_EQ(steps,
              (std::vector<Step>{Step::attach_eap, Step::discovery, Step::attestation,
                                 Step::package, Step::install, Step::report, Step::attach_imsi}));
    EXPECT_EQ(out->pcid, bundle.pcid);
    EXPECT_EQ(out->imsi, device::testing::kImsi);
    EXPECT_FALSE(out->operational.restricted);
    const tre::Status status = t.status();
    ASSERT_TRUE(status.selected);
    EXPECT_EQ(*status.selected, device::testing::kImsi);
    EXPECT_EQ(sho_->statuses(), 1);
  }

  std::unique_ptr<store::Database> auc_db_;
  std::unique_ptr<device::testing::TestSho> sho_;
  std::unique_ptr<ro::RoService> ro_;
  std::unique_ptr<net::HttpServer> ro_server_;
  std::unique_ptr<roles::VnoService> vno_;
  std::unique_ptr<net::HttpServer> vno_server_;
};

TEST_F(EapAccess, EapAkaEndsInARestrictedSessionThatReachesOnlyTheRo) {
  provision_until_bootstrap(device::Access::eap_aka, "001019900000021", "acc-aka");
}

TEST_F(EapAccess, EapAkaPrimeEndsInARestrictedSessionThatReachesOnlyTheRo) {
  provision_until_bootstrap(device::Access::eap_aka_prime, "001019900000022", "acc-akap");
}

TEST_F(EapAccess, EapAkaProvisionsTheDeviceUntilItIsOperational) {
  provision_until_operational(device::Access::eap_aka, "001019900000025", "full-aka");
}

TEST_F(EapAccess, EapAkaPrimeProvisionsTheDeviceUntilItIsOperational) {
  provision_until_operational(device::Access::eap_aka_prime, "001019900000026", "full-akap");
}

// Another K in the device: the TRE refuses AUTN, hostapd sends no Accept, no grant exists.
TEST_F(EapAccess, AWrongKeyGetsNoSession) {
  tre::SupplierBundle at_icf = world_.bundle("001019900000023");
  tre::SupplierBundle in_device = world_.bundle("001019900000023");
  subscribe(at_icf);
  tre::Tre t = make_tre(in_device, "tre-acc-wrong");
  device::Agent agent(t, agent_config(device::Access::eap_aka, "acc-wrong"), clock_);
  auto a = agent.attach_eap(in_device.pcid);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, ErrorCode::mac_mismatch) << a.error().message;
  EXPECT_EQ(vno_->vno().eap_grants(), 0u);
  EXPECT_EQ(vno_->radius_relay()->counters().accepts, 0u);
}

// Someone who saw the Access-Accept go by but holds no MSK (a NAS, a wire tap of the device's
// link) claims the session first: refused, and the grant is gone for the device too.
TEST_F(EapAccess, AClaimWithoutTheMskGetsNothingAndUsesTheGrantUp) {
  tre::SupplierBundle bundle = world_.bundle("001019900000024");
  subscribe(bundle);
  tre::Tre t = make_tre(bundle, "tre-acc-claim");
  device::AgentConfig c = agent_config(device::Access::eap_aka, "acc-claim");
  auto eap = device::authenticate_eap(t, bundle.pcid, c.eap);
  ASSERT_TRUE(eap) << eap.error().message;
  EXPECT_EQ(vno_->vno().eap_grants(), 1u);
  auto client = net::testing::make_client();
  auto claim = [&](const std::string& proof) {
    return client->request("POST", vno_server_->url() + "/v1/access/eap-sessions",
                           net::Json{{"identity", eap->identity}, {"proof", proof}}.dump(),
                           net::kJsonContentType);
  };
  auto guessed = claim(std::string(64, '0'));
  ASSERT_TRUE(guessed);
  EXPECT_EQ(guessed->status, 422) << guessed->body;
  EXPECT_NE(guessed->body.find("mac_mismatch"), std::string::npos) << guessed->body;
  const Secret<32> proof =
      roles::eap_claim_proof(roles::eap_session_key(eap->msk.get()), eap->identity);
  auto late = claim(to_hex(proof.get()));
  ASSERT_TRUE(late);
  EXPECT_EQ(late->status, 404) << late->body;
  // The ICF's session opened for the grant is closed again: the device may authenticate anew.
  EXPECT_EQ(vno_->vno().eap_grants(), 0u);
}

// ---- The device side's protocol, without peers ------------------------------------------------

const std::string kRandHex = "000102030405060708090a0b0c0d0e0f";
const std::string kAutnHex = "101112131415161718191a1b1c1d1e1f";

struct SimParseCase {
  const char* name;
  std::string message;
  enum { request, ignored, refused } expect;
  device::SimRequestKind kind = device::SimRequestKind::umts_auth;
};

TEST(EapSimProtocol, ParseTable) {
  const std::string umts = "UMTS-AUTH:" + kRandHex + ":" + kAutnHex;
  const std::vector<SimParseCase> cases = {
      {"event", "<3>CTRL-REQ-SIM-0:" + umts + " needed for SSID mcim-f3", SimParseCase::request},
      {"no_level", "CTRL-REQ-SIM-12:" + umts, SimParseCase::request},
      {"gsm", "<3>CTRL-REQ-SIM-0:GSM-AUTH:" + kRandHex + " needed for SSID x",
       SimParseCase::request, device::SimRequestKind::gsm_auth},
      {"other_event", "<3>CTRL-EVENT-EAP-STARTED EAP authentication started",
       SimParseCase::ignored},
      {"reply", "OK\n", SimParseCase::ignored},
      {"empty", "", SimParseCase::ignored},
      {"no_id", "<3>CTRL-REQ-SIM-:" + umts, SimParseCase::refused},
      {"id_letters", "<3>CTRL-REQ-SIM-a:" + umts, SimParseCase::refused},
      {"no_colon", "<3>CTRL-REQ-SIM-0", SimParseCase::refused},
      {"unknown_type", "<3>CTRL-REQ-SIM-0:UMTS-FOO:" + kRandHex, SimParseCase::refused},
      {"short_rand", "<3>CTRL-REQ-SIM-0:UMTS-AUTH:" + kRandHex.substr(2) + ":" + kAutnHex,
       SimParseCase::refused},
      {"no_autn", "<3>CTRL-REQ-SIM-0:UMTS-AUTH:" + kRandHex, SimParseCase::refused},
      {"not_hex", "<3>CTRL-REQ-SIM-0:UMTS-AUTH:" + std::string(32, 'z') + ":" + kAutnHex,
       SimParseCase::refused},
      {"trailing_junk", "<3>CTRL-REQ-SIM-0:" + umts + "00", SimParseCase::refused},
      {"truncated_level", "<3CTRL-REQ-SIM-0:" + umts, SimParseCase::ignored},
  };
  for (const SimParseCase& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = device::parse_sim_request(c.message);
    if (c.expect == SimParseCase::refused) {
      ASSERT_FALSE(r);
      EXPECT_EQ(r.error().code, ErrorCode::bad_format);
      continue;
    }
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_EQ(r->has_value(), c.expect == SimParseCase::request);
    if (!*r) continue;
    EXPECT_EQ((*r)->kind, c.kind);
    if (c.kind == device::SimRequestKind::umts_auth) {
      EXPECT_EQ(to_hex((*r)->rand), kRandHex);
      EXPECT_EQ(to_hex((*r)->autn), kAutnHex);
    }
  }
}

TEST(EapSimProtocol, ResponsesAsWpaSupplicantReadsThem) {
  aka::UsimSuccess ok;
  for (std::uint8_t i = 0; i < 16; ++i) {
    ok.ik[i] = i;
    ok.ck[i] = static_cast<std::uint8_t>(0x10 + i);
  }
  const Bytes<8> res = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7};
  ok.res = aka::Res::of(res);
  EXPECT_EQ(device::format_sim_response("0", aka::UsimAnswer(ok)).text(),
            "CTRL-RSP-SIM-0:UMTS-AUTH:000102030405060708090a0b0c0d0e0f:"
            "101112131415161718191a1b1c1d1e1f:a0a1a2a3a4a5a6a7");
  aka::UsimSyncFailure sync;
  sync.auts.fill(0xab);
  EXPECT_EQ(device::format_sim_response("7", aka::UsimAnswer(sync)).text(),
            "CTRL-RSP-SIM-7:UMTS-AUTS:abababababababababababababab");
  const Result<aka::UsimAnswer> refused = fail(ErrorCode::mac_mismatch, "MAC-A");
  EXPECT_EQ(device::format_sim_response("0", refused).text(), "CTRL-RSP-SIM-0:UMTS-FAIL");
  EXPECT_EQ(device::format_sim_failure("3", device::SimRequestKind::gsm_auth),
            "CTRL-RSP-SIM-3:GSM-FAIL");
}

// No peer behind the control path: io_error once the timeout has passed, nothing left behind.
TEST(EapSimProtocol, NoPeerTimesOut) {
  pki::testing::TempDir dir;
  tre::testing::World world;
  tre::SupplierBundle bundle = world.bundle("001019900000009");
  ASSERT_TRUE(tre::Tre::init(tre::Options{dir / "tre"}, bundle));
  auto t = tre::Tre::open(tre::Options{dir / "tre"});
  ASSERT_TRUE(t);
  device::ExternalSimOptions o;
  o.ctrl_path = dir / "nobody";
  o.local_path = dir / "dev";
  o.timeout = 300ms;
  auto r = device::serve_external_sim(*t, o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::io_error);
  EXPECT_NE(::access(o.local_path.c_str(), F_OK), 0) << "client socket left behind";
  o.ctrl_path = dir.path() + "/" + std::string(120, 'c');
  auto bad = device::serve_external_sim(*t, o);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace mcim
