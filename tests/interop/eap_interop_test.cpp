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
// aka/eap_keys.h derives from the identity and the TRE's CK and IK.
#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

#include "../tre/tre_fixture.h"
#include "aka/eap_keys.h"
#include "aka/sqn.h"
#include "common/hex.h"
#include "device/eap_sim.h"
#include "net/radius.h"
#include "roles/ro/hlr_gw.h"
#include "roles/ro/icf.h"
#include "store/store.h"
#include "tre/tre.h"

extern char** environ;

namespace mcim {
namespace {

using namespace std::chrono_literals;
using tre::testing::World;

constexpr const char* kHostapd = "/usr/sbin/hostapd";
constexpr const char* kEapolTest = "/usr/bin/eapol_test";
constexpr const char* kSecret = "mcim-radius";  // RADIUS shared secret, 127.0.0.1 only
constexpr const char* kRealm = "wlan.mnc001.mcc001.3gppnetwork.org";
constexpr auto kCaseTimeout = 15s;  // eapol_test's own -t is below it

bool executable(const char* path) { return ::access(path, X_OK) == 0; }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// A process of ours, output to a log file; SIGTERM then SIGKILL on destruction if still running.
class Child {
 public:
  static std::optional<Child> spawn(const std::vector<std::string>& args, const std::string& log) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return std::nullopt;
    return Child(pid);
  }
  Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)), status_(o.status_) {}
  Child& operator=(Child&&) = delete;
  ~Child() { stop(); }

  // The exit status once it ended within `wait`; nullopt while it runs.
  std::optional<int> wait_exit(std::chrono::milliseconds wait) {
    const auto until = std::chrono::steady_clock::now() + wait;
    while (pid_ > 0 && !reap(WNOHANG) && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(20ms);
    }
    return status_;
  }
  bool running() { return pid_ > 0 && !reap(WNOHANG); }

  void stop() {
    if (pid_ <= 0 || reap(WNOHANG)) return;
    ::kill(pid_, SIGTERM);
    if (wait_exit(2s)) return;
    ::kill(pid_, SIGKILL);
    reap(0);
  }

 private:
  explicit Child(pid_t pid) : pid_(pid) {}
  bool reap(int flags) {
    if (pid_ <= 0) return true;
    int status = 0;
    if (::waitpid(pid_, &status, flags) != pid_) return false;
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    pid_ = -1;
    return true;
  }
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// A UDP port nobody holds now; hostapd binds it on all addresses.
int free_udp_port() {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return -1;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

bool udp_port_taken(int port) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool taken = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0;
  ::close(fd);
  return taken;
}

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
      ASSERT_TRUE(child) << "cannot start hostapd";
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
  CaseResult run(tre::Tre& t, const std::string& pcid, Method method, const std::string& tag,
                 std::optional<int> server_port = std::nullopt,
                 std::function<void(const device::SimRequest&, const aka::UsimSuccess&)>
                     on_challenge = {}) {
    const std::string ctrl_dir = world_.path("ctrl-" + tag);
    const std::string conf = world_.path("peer-" + tag + ".conf");
    const bool prime = method == Method::aka_prime;
    write_file(conf,
               fmt::format("ctrl_interface={}\n"
                           "external_sim=1\n"
                           "network={{\n"
                           "  ssid=\"mcim-f3\"\n"
                           "  key_mgmt=WPA-EAP IEEE8021X\n"
                           "  eap={}\n"
                           "  identity=\"{}\"\n"
                           "}}\n",
                           ctrl_dir, prime ? "AKA'" : "AKA", identity(pcid, method)));
    CaseResult out;
    const std::string log = world_.path("eapol-" + tag + ".log");
    auto peer = Child::spawn({kEapolTest, "-c" + conf, "-a127.0.0.1",
                              fmt::format("-p{}", server_port.value_or(port_)),
                              std::string("-s") + kSecret, "-W", "-t10"},
                             log);
    if (!peer) {
      ADD_FAILURE() << "cannot start eapol_test";
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
      out.exit_status = peer->wait_exit(kCaseTimeout);
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
    const CaseResult r =
        run(t, bundle.pcid, method, tag, relay.port(),
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
