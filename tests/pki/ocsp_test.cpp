// OCSP (RFC 6960): the responder's answers and HTTP forms, the client's refusals (each check of
// verify_ocsp_response made to fail on its own, next to a positive control built the same way),
// and interoperability with the openssl command line both ways: `openssl ocsp` as a client of
// our server (POST and GET), and as a responder (network and -respout) for our client; then
// `mcim pki ocsp-serve` + `mcim pki verify --ocsp` + `mcim pki revoke` as processes.
#include "pki/ocsp.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/file.h"
#include "net/http_server.h"
#include "pki/authority.h"
#include "pki_test_util.h"

extern char** environ;

namespace mcim::pki {
namespace {

using namespace std::chrono_literals;
using testing::run_command;
using testing::TempDir;

using OcspRequestPtr = Owned<OCSP_REQUEST, OCSP_REQUEST_free>;
using OcspResponsePtr = Owned<OCSP_RESPONSE, OCSP_RESPONSE_free>;
using OcspBasicPtr = Owned<OCSP_BASICRESP, OCSP_BASICRESP_free>;
using Asn1TimePtr = Owned<ASN1_TIME, ASN1_TIME_free>;

// ---------------------------------------------------------------------------------------------
// Helpers: DER in and out of OpenSSL, files, an independent response forger, processes.

TimePoint whole_seconds(TimePoint t) { return std::chrono::floor<std::chrono::seconds>(t); }

template <class T>
ByteVec der_of(const T* object, int (*i2d)(const T*, unsigned char**)) {
  unsigned char* der = nullptr;
  const int n = i2d(object, &der);
  ByteVec out(der, der + std::max(n, 0));
  OPENSSL_free(der);
  return out;
}

OcspResponsePtr parse_response(ByteView der) {
  const unsigned char* p = der.data();
  return OcspResponsePtr(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size())));
}

int response_status(ByteView der) {
  auto r = parse_response(der);
  return r ? OCSP_response_status(r.get()) : -1;
}

OcspBasicPtr basic_of(ByteView der) {
  auto r = parse_response(der);
  return OcspBasicPtr(r ? OCSP_response_get1_basic(r.get()) : nullptr);
}

OcspRequestPtr parse_request(ByteView der) {
  const unsigned char* p = der.data();
  return OcspRequestPtr(d2i_OCSP_REQUEST(nullptr, &p, static_cast<long>(der.size())));
}

// The reason code of the first single response (-1 when absent).
int revocation_reason(ByteView der) {
  auto bs = basic_of(der);
  int reason = -2;
  ASN1_GENERALIZEDTIME *rev = nullptr, *thisupd = nullptr, *nextupd = nullptr;
  if (bs) OCSP_single_get0_status(OCSP_resp_get0(bs.get(), 0), &reason, &rev, &thisupd, &nextupd);
  return reason;
}

ByteVec request_for(const std::vector<std::pair<X509*, X509*>>& certs, const EVP_MD* md,
                    bool with_nonce) {
  OcspRequestPtr req(OCSP_REQUEST_new());
  for (auto [cert, issuer] : certs)
    OCSP_request_add0_id(req.get(), OCSP_cert_to_id(md, cert, issuer));
  if (with_nonce) OCSP_request_add1_nonce(req.get(), nullptr, 0);
  return der_of<OCSP_REQUEST>(req.get(), i2d_OCSP_REQUEST);
}

// A request whose Nonce extension holds `length` octets (extnValue = OCTET STRING { nonce }),
// assembled by hand: OpenSSL's own helpers refuse to encode an empty one.
ByteVec request_with_nonce_length(X509* cert, X509* issuer, int length) {
  OcspRequestPtr req(OCSP_REQUEST_new());
  OCSP_request_add0_id(req.get(), OCSP_cert_to_id(nullptr, cert, issuer));
  ByteVec value{0x04, static_cast<std::uint8_t>(length)};
  value.resize(value.size() + static_cast<std::size_t>(length), 'n');
  ASN1_OCTET_STRING* data = ASN1_OCTET_STRING_new();
  ASN1_OCTET_STRING_set(data, value.data(), static_cast<int>(value.size()));
  X509_EXTENSION* ext = X509_EXTENSION_create_by_NID(nullptr, NID_id_pkix_OCSP_Nonce, 0, data);
  OCSP_REQUEST_add_ext(req.get(), ext, -1);
  X509_EXTENSION_free(ext);
  ASN1_OCTET_STRING_free(data);
  return der_of<OCSP_REQUEST>(req.get(), i2d_OCSP_REQUEST);
}

ByteVec encode_basic(OCSP_BASICRESP* bs) {
  OcspResponsePtr resp(OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs));
  return der_of<OCSP_RESPONSE>(resp.get(), i2d_OCSP_RESPONSE);
}

struct ForgeSpec {
  X509* signer = nullptr;
  EVP_PKEY* key = nullptr;
  TimePoint this_update{};
  std::chrono::seconds validity = 1h;
  bool include_signer = true;
  bool copy_nonce = true;
};

// Answers `request` "good" for every entry, signed by whoever the spec says: what an attacker or
// a misconfigured responder could send. Written against OpenSSL directly, not our responder.
ByteVec forge(ByteView request, const ForgeSpec& s) {
  auto req = parse_request(request);
  OcspBasicPtr bs(OCSP_BASICRESP_new());
  Asn1TimePtr thisupd(ASN1_TIME_set(nullptr, std::chrono::system_clock::to_time_t(s.this_update)));
  Asn1TimePtr nextupd(
      ASN1_TIME_set(nullptr, std::chrono::system_clock::to_time_t(s.this_update + s.validity)));
  for (int i = 0; i < OCSP_request_onereq_count(req.get()); ++i) {
    OCSP_CERTID* id = OCSP_onereq_get0_id(OCSP_request_onereq_get0(req.get(), i));
    OCSP_basic_add1_status(bs.get(), id, V_OCSP_CERTSTATUS_GOOD, 0, nullptr, thisupd.get(),
                           nextupd.get());
  }
  if (s.copy_nonce) OCSP_copy_nonce(bs.get(), req.get());
  const unsigned long flags = OCSP_RESPID_KEY | (s.include_signer ? 0 : OCSP_NOCERTS);
  EXPECT_EQ(OCSP_basic_sign(bs.get(), s.signer, s.key, EVP_sha256(), nullptr, flags), 1);
  return encode_basic(bs.get());
}

// The same response with one bit of its signature flipped.
ByteVec with_flipped_signature(ByteView der) {
  auto bs = basic_of(der);
  auto* sig = const_cast<ASN1_OCTET_STRING*>(OCSP_resp_get0_signature(bs.get()));
  std::vector<unsigned char> bytes(ASN1_STRING_get0_data(sig),
                                   ASN1_STRING_get0_data(sig) + ASN1_STRING_length(sig));
  bytes[bytes.size() / 2] ^= 0x01;
  ASN1_BIT_STRING_set(sig, bytes.data(), static_cast<int>(bytes.size()));
  return encode_basic(bs.get());
}

// The same response with its thisUpdate moved a minute on after signing: a replayed old answer
// made to look fresh.
ByteVec with_altered_this_update(ByteView der) {
  auto bs = basic_of(der);
  int reason = 0;
  ASN1_GENERALIZEDTIME *rev = nullptr, *thisupd = nullptr, *nextupd = nullptr;
  OCSP_single_get0_status(OCSP_resp_get0(bs.get(), 0), &reason, &rev, &thisupd, &nextupd);
  std::tm tm{};
  ASN1_TIME_to_tm(thisupd, &tm);
  ASN1_GENERALIZEDTIME_set(thisupd, timegm(&tm) + 60);
  return encode_basic(bs.get());
}

std::string base64(ByteView der) {
  std::string out(4 * ((der.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), der.data(),
                                static_cast<int>(der.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string url_encode(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      out += c;
    } else {
      out += fmt::format("%{:02X}", static_cast<unsigned char>(c));
    }
  }
  return out;
}

ByteView bytes_of(const std::string& s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

void write_der(const std::string& path, ByteView der) {
  ASSERT_TRUE(write_file_atomic(path, der).has_value());
}

// "X.pem: good" -> "good"; the status line `openssl ocsp` prints per certificate. (No
// std::regex: GCC 12 warns inside it under the sanitizer build.)
std::string openssl_status(const std::string& output, const std::string& cert_path) {
  const std::string text = "\n" + output, key = "\n" + cert_path + ": ";
  const auto at = text.find(key);
  if (at == std::string::npos) return "<no status line>";
  const auto begin = at + key.size();
  return text.substr(begin, text.find_first_of("\r\n", begin) - begin);
}

// The byKey ResponderID as `openssl ocsp -resp_text` prints it: 40 hex digits.
bool prints_key_hash_responder_id(const std::string& output) {
  constexpr std::string_view kLabel = "Responder Id: ";
  const auto at = output.find(kLabel);
  if (at == std::string::npos || output.size() < at + kLabel.size() + 41) return false;
  const std::string id = output.substr(at + kLabel.size(), 40);
  return std::all_of(id.begin(), id.end(), [](unsigned char c) { return std::isxdigit(c) != 0; }) &&
         output[at + kLabel.size() + 40] == '\n';
}

// A child process with stdout+stderr on a pipe; killed and reaped when the object goes away.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    int fds[2];
    if (::pipe(fds) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    if (posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    fd_ = fds[0];
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) ::close(fd_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool started() const { return pid_ > 0; }

  // The next output line, or nullopt when none arrives within the timeout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (const auto nl = pending_.find('\n'); nl != std::string::npos) {
        std::string line = pending_.substr(0, nl);
        pending_.erase(0, nl + 1);
        return line;
      }
      if (!read_some(deadline)) return std::nullopt;
    }
  }

  // Sends `signal`, waits for the exit; the exit status and the rest of the output.
  std::pair<int, std::string> stop(int signal, std::chrono::milliseconds timeout) {
    ::kill(pid_, signal);
    return wait(timeout);
  }

  std::pair<int, std::string> wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (read_some(deadline)) {
    }
    // The pipe closes as the process exits; reaping it may take a moment longer.
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) != pid_) {
      if (std::chrono::steady_clock::now() >= deadline) return {-1, pending_};
      std::this_thread::sleep_for(10ms);
    }
    pid_ = -1;
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, pending_};
  }

 private:
  bool read_some(std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd_, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) return false;
    pending_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  std::string pending_;
};

// A port that was free a moment ago (for `openssl ocsp -port`, which cannot take 0).
std::uint16_t free_port() {
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::acceptor a(
      ioc, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

// Whether something listens on `port`, from the kernel's table: probing with a connection would
// count as one of `openssl ocsp -nrequest`'s requests.
bool listening(std::uint16_t port) {
  const std::string hex_port = fmt::format(":{:04X} ", port);
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    for (std::string line; std::getline(in, line);) {
      std::istringstream fields(line);
      std::string slot, local, remote, state;
      fields >> slot >> local >> remote >> state;
      if (state == "0A" && (local + " ").find(hex_port) != std::string::npos) return true;
    }
  }
  return false;
}

bool wait_listening(std::uint16_t port) {
  for (int i = 0; i < 200; ++i) {
    if (listening(port)) return true;
    std::this_thread::sleep_for(25ms);
  }
  return false;
}

struct HttpResult {
  unsigned status = 0;
  std::string content_type, body;
};

// A GET with "Connection: close", read to the end: status, content type and body. Written by
// hand (not with Beast's parser) so that the client shares no code with the server under test.
HttpResult http_get(std::uint16_t port, const std::string& target) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{5, 0};  // POSIX calls: a timeout Asio's synchronous reads would ignore
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string raw;
  const std::string request =
      "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    char buf[8192];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      raw.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  HttpResult r;
  const auto head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.1 ", 0) != 0 || head_end == std::string::npos) return r;
  r.status = static_cast<unsigned>(std::stoul(raw.substr(9, 3)));
  const std::string head = raw.substr(0, head_end) + "\r\n";
  constexpr std::string_view kType = "\r\nContent-Type: ";
  if (const auto at = head.find(kType); at != std::string::npos) {
    r.content_type = head.substr(at + kType.size(), head.find("\r\n", at + 2) - at - kType.size());
  }
  r.body = raw.substr(head_end + 4);
  return r;
}

// Our responder behind our HTTP server: the same glue as `mcim pki ocsp-serve`.
std::unique_ptr<net::HttpServer> serve(const OcspResponder& responder) {
  auto server = net::HttpServer::start({}, [&responder](const net::HttpRequest& r) {
    auto reply = responder.respond_http(r.method, r.target, bytes_of(r.body));
    return net::HttpResponse{reply.status, reply.content_type,
                             std::string(reply.body.begin(), reply.body.end()), reply.headers};
  });
  EXPECT_TRUE(server.has_value()) << server.error().message;
  return server ? std::move(*server) : nullptr;
}

// ---------------------------------------------------------------------------------------------
// Fixture: root -> sub CA (the issuer under test) with a delegated ocsp-signing certificate, two
// leaf certificates a and b; an independent CA "other" with its own signer.

class OcspTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_.emplace(make_ca("root", "OCSP Root", nullptr));
    sub_.emplace(make_ca("sub", "OCSP Sub", &*root_));
    other_.emplace(make_ca("other", "Other Root", nullptr));
    signer_ = issue(*sub_, Profile::ocsp_signing, "signer");
    a_ = issue(*sub_, Profile::tls_client, "a");
    b_ = issue(*sub_, Profile::tls_client, "b");
  }

  Authority make_ca(const std::string& dir, const std::string& name, const Authority* parent) {
    auto ca = Authority::create(dir_ / dir, name, parent, 3650, "", system_, rng_);
    EXPECT_TRUE(ca.has_value()) << ca.error().message;
    return std::move(*ca);
  }

  // Issues and writes PREFIX.pem / PREFIX.key in the temp dir (the openssl tests read them).
  Issued issue(const Authority& ca, Profile p, const std::string& name, int days = 365,
               const std::string& ocsp_url = "") {
    CertSpec spec;
    spec.profile = p;
    spec.subject = "CN=" + name + ",O=mcim";
    spec.days = days;
    spec.ocsp_url = ocsp_url;
    auto issued = ca.issue(spec, system_, rng_);
    EXPECT_TRUE(issued.has_value()) << issued.error().message;
    EXPECT_TRUE(write_certificate(dir_ / (name + ".pem"), issued->cert.get()).has_value());
    EXPECT_TRUE(write_private_key(dir_ / (name + ".key"), issued->key.get()).has_value());
    return std::move(*issued);
  }

  OcspResponder responder(const Clock& clock, std::chrono::seconds validity = 1h) {
    return responder_signed_by(signer_.cert.get(), signer_.key.get(), clock, validity);
  }

  OcspResponder responder_signed_by(X509* cert, EVP_PKEY* key, const Clock& clock,
                                    std::chrono::seconds validity = 1h) {
    auto r = OcspResponder::create(dir_ / "sub", cert, key, clock, {validity});
    EXPECT_TRUE(r.has_value()) << r.error().message;
    return std::move(*r);
  }

  struct Exchange {
    ByteVec request, nonce, response;
  };

  Exchange ask(const OcspResponder& r, X509* cert) {
    Exchange e;
    auto req = make_ocsp_request(cert, sub_->cert(), rng_, &e.nonce);
    EXPECT_TRUE(req.has_value());
    e.request = *req;
    e.response = r.respond(e.request);
    return e;
  }

  Result<RevocationAnswer> verify(const Exchange& e, X509* cert, const Clock& clock,
                                  std::chrono::seconds max_age = 10min) {
    return verify_ocsp_response(e.response, cert, sub_->cert(), &e.nonce, clock, max_age);
  }

  // Asserts that verification fails with `code` and a message containing `check`.
  void expect_refused(const Result<RevocationAnswer>& r, ErrorCode code, const std::string& check) {
    ASSERT_FALSE(r.has_value()) << "accepted; expected a refusal for: " << check;
    EXPECT_EQ(r.error().code, code) << r.error().message;
    EXPECT_NE(r.error().message.find(check), std::string::npos) << r.error().message;
  }

  TempDir dir_;
  SystemClock system_;
  FakeClock clock_{whole_seconds(std::chrono::system_clock::now())};
  OsRandom rng_;
  std::optional<Authority> root_, sub_, other_;
  Issued signer_, a_, b_;
};

// ---------------------------------------------------------------------------------------------
// Responder

TEST_F(OcspTest, GoodWithThisUpdateNowAndNextUpdateAfterValidity) {
  const auto r = responder(clock_, 90min);
  const auto e = ask(r, a_.cert.get());
  auto answer = verify(e, a_.cert.get(), clock_);
  ASSERT_TRUE(answer.has_value()) << answer.error().message;
  EXPECT_EQ(answer->status, CertStatus::good);
  EXPECT_EQ(answer->this_update, clock_.now());
  ASSERT_TRUE(answer->next_update.has_value());
  EXPECT_EQ(*answer->next_update, clock_.now() + 90min);
  EXPECT_FALSE(answer->revoked_at.has_value());
}

TEST_F(OcspTest, RevokedWithTimeAndReason) {
  const TimePoint when = clock_.now() - 2h;
  ASSERT_TRUE(sub_->revoke(b_.cert.get(), RevocationReason::key_compromise, when).has_value());
  ASSERT_TRUE(sub_->revoke(a_.cert.get(), RevocationReason::unspecified, when).has_value());
  const auto r = responder(clock_);
  const auto eb = ask(r, b_.cert.get());
  auto answer = verify(eb, b_.cert.get(), clock_);
  ASSERT_TRUE(answer.has_value()) << answer.error().message;
  EXPECT_EQ(answer->status, CertStatus::revoked);
  EXPECT_EQ(answer->revoked_at, when);
  EXPECT_EQ(revocation_reason(eb.response), OCSP_REVOKED_STATUS_KEYCOMPROMISE);
  // "unspecified" is said by leaving the reason out (RFC 5280 §5.3.1).
  const auto ea = ask(r, a_.cert.get());
  EXPECT_EQ(verify(ea, a_.cert.get(), clock_)->status, CertStatus::revoked);
  EXPECT_EQ(revocation_reason(ea.response), OCSP_REVOKED_STATUS_NOSTATUS);
}

TEST_F(OcspTest, UnknownForASerialTheIndexDoesNotHold) {
  // Signed with the CA's key but never recorded: the responder must not vouch for it.
  auto key = generate_p256_key();
  ASSERT_TRUE(key.has_value());
  CertSpec spec;
  spec.profile = Profile::tls_client;
  spec.subject = "CN=unrecorded";
  auto stray = issue_certificate(spec, key->get(), sub_->cert(), sub_->key(), system_, rng_);
  ASSERT_TRUE(stray.has_value());
  const auto r = responder(clock_);
  auto answer = verify(ask(r, stray->get()), stray->get(), clock_);
  ASSERT_TRUE(answer.has_value()) << answer.error().message;
  EXPECT_EQ(answer->status, CertStatus::unknown);
}

TEST_F(OcspTest, NonceEchoedResponderIdByKeyHashSignerIncluded) {
  const auto r = responder(clock_);
  const auto e = ask(r, a_.cert.get());
  auto bs = basic_of(e.response);
  ASSERT_TRUE(bs);
  const int at = OCSP_BASICRESP_get_ext_by_NID(bs.get(), NID_id_pkix_OCSP_Nonce, -1);
  ASSERT_GE(at, 0);
  auto req = parse_request(e.request);
  EXPECT_EQ(OCSP_check_nonce(req.get(), bs.get()), 1);  // OpenSSL's own comparison
  EXPECT_EQ(e.nonce.size(), 16u);

  const ASN1_OCTET_STRING* key_hash = nullptr;
  const X509_NAME* name = nullptr;
  ASSERT_EQ(OCSP_resp_get0_id(bs.get(), &key_hash, &name), 1);
  ASSERT_NE(key_hash, nullptr);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  X509_pubkey_digest(signer_.cert.get(), EVP_sha1(), md, &len);
  EXPECT_EQ(ByteVec(md, md + len),
            ByteVec(ASN1_STRING_get0_data(key_hash),
                    ASN1_STRING_get0_data(key_hash) + ASN1_STRING_length(key_hash)));
  const STACK_OF(X509)* certs = OCSP_resp_get0_certs(bs.get());
  ASSERT_EQ(sk_X509_num(certs), 1);
  EXPECT_EQ(X509_cmp(sk_X509_value(certs, 0), signer_.cert.get()), 0);

  std::tm tm{};
  ASSERT_EQ(ASN1_TIME_to_tm(OCSP_resp_get0_produced_at(bs.get()), &tm), 1);
  EXPECT_EQ(std::chrono::system_clock::from_time_t(timegm(&tm)), clock_.now());
  EXPECT_EQ(OBJ_obj2nid(OCSP_resp_get0_tbs_sigalg(bs.get())->algorithm), NID_ecdsa_with_SHA256);
}

TEST_F(OcspTest, RequestWithoutNonceGetsAnswerWithoutNonce) {
  const auto r = responder(clock_);
  const auto response = r.respond(request_for({{a_.cert.get(), sub_->cert()}}, EVP_sha1(), false));
  auto bs = basic_of(response);
  ASSERT_TRUE(bs);
  EXPECT_LT(OCSP_BASICRESP_get_ext_by_NID(bs.get(), NID_id_pkix_OCSP_Nonce, -1), 0);
  auto answer = verify_ocsp_response(response, a_.cert.get(), sub_->cert(), nullptr, clock_);
  ASSERT_TRUE(answer.has_value()) << answer.error().message;
  EXPECT_EQ(answer->status, CertStatus::good);
}

TEST_F(OcspTest, MalformedRequestsGetMalformedRequestStatus) {
  const auto r = responder(clock_);
  const ByteVec good = request_for({{a_.cert.get(), sub_->cert()}}, EVP_sha1(), true);
  ByteVec trailing = good;
  trailing.push_back(0);
  OcspRequestPtr empty_list(OCSP_REQUEST_new());
  const std::vector<std::pair<std::string, ByteVec>> cases = {
      {"empty", {}},
      {"garbage", {0xde, 0xad, 0xbe, 0xef}},
      {"truncated", ByteVec(good.begin(), good.end() - 5)},
      {"trailing byte", trailing},
      {"no request entries", der_of<OCSP_REQUEST>(empty_list.get(), i2d_OCSP_REQUEST)},
      {"empty nonce", request_with_nonce_length(a_.cert.get(), sub_->cert(), 0)},
      {"33-octet nonce", request_with_nonce_length(a_.cert.get(), sub_->cert(), 33)},
  };
  for (const auto& [name, der] : cases) {
    EXPECT_EQ(response_status(r.respond(der)), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST) << name;
  }
  // The bounds themselves are fine (RFC 8954: 1..32 octets).
  EXPECT_EQ(response_status(r.respond(request_with_nonce_length(a_.cert.get(), sub_->cert(), 32))),
            OCSP_RESPONSE_STATUS_SUCCESSFUL);
  EXPECT_EQ(response_status(r.respond(good)), OCSP_RESPONSE_STATUS_SUCCESSFUL);
}

TEST_F(OcspTest, ForeignIssuerIsUnauthorizedAloneAndUnknownBesideOurs) {
  const auto r = responder(clock_);
  // sub's own certificate is issued by root: not this responder's business.
  const ByteVec foreign = request_for({{sub_->cert(), root_->cert()}}, EVP_sha1(), true);
  EXPECT_EQ(response_status(r.respond(foreign)), OCSP_RESPONSE_STATUS_UNAUTHORIZED);

  const ByteVec mixed = request_for({{a_.cert.get(), sub_->cert()}, {sub_->cert(), root_->cert()}},
                                    EVP_sha1(), false);
  const ByteVec response = r.respond(mixed);
  ASSERT_EQ(response_status(response), OCSP_RESPONSE_STATUS_SUCCESSFUL);
  EXPECT_EQ(verify_ocsp_response(response, a_.cert.get(), sub_->cert(), nullptr, clock_)->status,
            CertStatus::good);
  auto bs = basic_of(response);
  ASSERT_EQ(OCSP_resp_count(bs.get()), 2);
  int reason = 0;
  ASN1_GENERALIZEDTIME *rev = nullptr, *thisupd = nullptr, *nextupd = nullptr;
  EXPECT_EQ(OCSP_single_get0_status(OCSP_resp_get0(bs.get(), 1), &reason, &rev, &thisupd, &nextupd),
            V_OCSP_CERTSTATUS_UNKNOWN);
}

TEST_F(OcspTest, Sha256CertIdIsAnsweredAndVerified) {
  const auto r = responder(clock_);
  const ByteVec response =
      r.respond(request_for({{b_.cert.get(), sub_->cert()}}, EVP_sha256(), false));
  auto answer = verify_ocsp_response(response, b_.cert.get(), sub_->cert(), nullptr, clock_);
  ASSERT_TRUE(answer.has_value()) << answer.error().message;
  EXPECT_EQ(answer->status, CertStatus::good);
  auto bs = basic_of(response);
  ASN1_OBJECT* hash = nullptr;
  OCSP_id_get0_info(nullptr, &hash, nullptr, nullptr,
                    const_cast<OCSP_CERTID*>(OCSP_SINGLERESP_get0_id(OCSP_resp_get0(bs.get(), 0))));
  EXPECT_EQ(OBJ_obj2nid(hash), NID_sha256);
}

TEST_F(OcspTest, IndexIsReadOnceAndReloadedWhenItChanges) {
  const auto r = responder(clock_);
  for (int i = 0; i < 50; ++i)
    ASSERT_EQ(verify(ask(r, a_.cert.get()), a_.cert.get(), clock_)->status, CertStatus::good);
  EXPECT_EQ(r.index_loads(), 1u);
  // Revocation by another Authority object, as `mcim pki revoke` in another process would.
  auto again = Authority::open(dir_ / "sub");
  ASSERT_TRUE(again.has_value());
  ASSERT_TRUE(again->revoke(a_.cert.get(), RevocationReason::superseded, clock_.now()).has_value());
  EXPECT_EQ(verify(ask(r, a_.cert.get()), a_.cert.get(), clock_)->status, CertStatus::revoked);
  EXPECT_EQ(r.index_loads(), 2u);
  auto fresh = issue(*sub_, Profile::tls_client, "fresh");
  EXPECT_EQ(verify(ask(r, fresh.cert.get()), fresh.cert.get(), clock_)->status, CertStatus::good);
  EXPECT_EQ(r.index_loads(), 3u);
}

TEST_F(OcspTest, UnreadableIndexGivesInternalErrorUntilRepaired) {
  const auto r = responder(clock_);
  auto original = read_text_file(dir_ / "sub/index.txt");
  ASSERT_TRUE(original.has_value());
  ASSERT_TRUE(write_file_atomic(dir_ / "sub/index.txt", std::string_view("not an index\n")));
  EXPECT_EQ(response_status(ask(r, a_.cert.get()).response), OCSP_RESPONSE_STATUS_INTERNALERROR);
  ASSERT_TRUE(write_file_atomic(dir_ / "sub/index.txt", *original));
  EXPECT_EQ(verify(ask(r, a_.cert.get()), a_.cert.get(), clock_)->status, CertStatus::good);
}

TEST_F(OcspTest, ResponderRefusesSignersThatMayNotSignForTheCa) {
  auto client = issue(*sub_, Profile::tls_client, "client-no-eku");
  auto foreign = issue(*other_, Profile::ocsp_signing, "foreign-signer");
  struct Case {
    std::string name;
    X509* cert;
    EVP_PKEY* key;
  };
  for (const Case& c : {Case{"tls-client of the CA", client.cert.get(), client.key.get()},
                        Case{"ocsp-signing of another CA", foreign.cert.get(), foreign.key.get()},
                        Case{"the parent CA", root_->cert(), root_->key()},
                        Case{"key of another certificate", signer_.cert.get(), a_.key.get()}}) {
    auto r = OcspResponder::create(dir_ / "sub", c.cert, c.key, clock_);
    ASSERT_FALSE(r.has_value()) << c.name;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << c.name;
  }
  EXPECT_EQ(OcspResponder::create(dir_ / "sub", signer_.cert.get(), signer_.key.get(), clock_, {0s})
                .error()
                .code,
            ErrorCode::invalid_argument);
  EXPECT_EQ(OcspResponder::create(dir_ / "nowhere", signer_.cert.get(), signer_.key.get(), clock_)
                .error()
                .code,
            ErrorCode::not_found);
  EXPECT_EQ(OcspResponder::open(dir_ / "sub", dir_ / "missing", clock_).error().code,
            ErrorCode::not_found);
  EXPECT_TRUE(OcspResponder::open(dir_ / "sub", dir_ / "signer", clock_).has_value());
}

TEST_F(OcspTest, TheCaCanSignItsOwnAnswers) {
  const auto r = responder_signed_by(sub_->cert(), sub_->key(), clock_);
  auto answer = verify(ask(r, a_.cert.get()), a_.cert.get(), clock_);
  ASSERT_TRUE(answer.has_value()) << answer.error().message;
  EXPECT_EQ(answer->status, CertStatus::good);
}

TEST_F(OcspTest, HttpFormsPostGetAndOtherMethods) {
  const auto r = responder(clock_);
  const auto e = ask(r, a_.cert.get());
  const auto post = r.respond_http("POST", "/anything", e.request);
  EXPECT_EQ(post.status, 200);
  EXPECT_EQ(post.content_type, "application/ocsp-response");
  EXPECT_TRUE(verify_ocsp_response(post.body, a_.cert.get(), sub_->cert(), &e.nonce, clock_));

  // GET: URL-encoded base64 under the responder's own path; also with raw '/' and '+' in it.
  ByteVec nonce, request;
  std::string b64;
  for (int i = 0;
       i < 200 && (b64.find('/') == std::string::npos || b64.find('+') == std::string::npos); ++i) {
    request = *make_ocsp_request(a_.cert.get(), sub_->cert(), rng_, &nonce);
    b64 = base64(request);
  }
  ASSERT_NE(b64.find('/'), std::string::npos);
  for (const std::string& target :
       {"/" + url_encode(b64), "/ocsp/v1/" + url_encode(b64), "/ocsp/" + b64}) {
    const auto get = r.respond_http("GET", target, {});
    EXPECT_EQ(get.status, 200);
    auto answer = verify_ocsp_response(get.body, a_.cert.get(), sub_->cert(), &nonce, clock_);
    EXPECT_TRUE(answer.has_value()) << target << ": " << answer.error().message;
  }
  EXPECT_EQ(response_status(r.respond_http("GET", "/", {}).body),
            OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  EXPECT_EQ(response_status(r.respond_http("GET", "/%zz", {}).body),
            OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  const auto put = r.respond_http("PUT", "/", e.request);
  EXPECT_EQ(put.status, 405);
  ASSERT_EQ(put.headers.size(), 1u);
  EXPECT_EQ(put.headers[0], (std::pair<std::string, std::string>("Allow", "GET, POST")));
}

// ---------------------------------------------------------------------------------------------
// Client refusals

TEST_F(OcspTest, StaleAnswersAreRefused) {
  const auto r = responder(clock_, 1min);
  const auto e = ask(r, a_.cert.get());
  FakeClock later(clock_.now());
  later.advance(5min);
  EXPECT_TRUE(verify(e, a_.cert.get(), later, 10min).has_value());  // control
  expect_refused(verify(e, a_.cert.get(), later, 4min), ErrorCode::ocsp_invalid, "max_age");
  // nextUpdate (+1 min) passed by more than the 5-minute skew, while within max_age.
  later.set(clock_.now() + 1min + kOcspClockSkew + 1s);
  expect_refused(verify(e, a_.cert.get(), later, 1h), ErrorCode::ocsp_invalid,
                 "nextUpdate has passed");
  later.set(clock_.now() + 1min + kOcspClockSkew);
  EXPECT_TRUE(verify(e, a_.cert.get(), later, 1h).has_value());  // at the skew's edge
}

TEST_F(OcspTest, ThisUpdateInTheFutureIsRefusedBeyondTheSkew) {
  FakeClock ahead(clock_.now() + kOcspClockSkew + 1s);
  expect_refused(verify(ask(responder(ahead), a_.cert.get()), a_.cert.get(), clock_),
                 ErrorCode::ocsp_invalid, "in the future");
  FakeClock slightly(clock_.now() + kOcspClockSkew);
  EXPECT_TRUE(verify(ask(responder(slightly), a_.cert.get()), a_.cert.get(), clock_));
}

TEST_F(OcspTest, GarbledUnsignedAndErrorAnswersAreRefused) {
  const auto r = responder(clock_);
  const auto e = ask(r, a_.cert.get());
  const auto check = [&](ByteView der, const std::string& what) {
    expect_refused(verify_ocsp_response(der, a_.cert.get(), sub_->cert(), &e.nonce, clock_),
                   ErrorCode::ocsp_invalid, what);
  };
  check({}, "empty");
  check(ByteVec{0x30, 0x82, 0x01}, "not a DER OCSPResponse");
  check(ByteView(e.response).first(e.response.size() - 1), "not a DER OCSPResponse");
  check(ByteVec{0x30, 0x03, 0x0a, 0x01, 0x03}, "responder status trylater");
  check(with_flipped_signature(e.response), "signature does not verify");
  check(with_altered_this_update(e.response), "signature does not verify");
  // Control: the forger with the legitimate signer produces an acceptable answer.
  EXPECT_TRUE(
      verify_ocsp_response(forge(e.request, {signer_.cert.get(), signer_.key.get(), clock_.now()}),
                           a_.cert.get(), sub_->cert(), &e.nonce, clock_));
}

TEST_F(OcspTest, WrongSignersAreRefused) {
  const auto e = ask(responder(clock_), a_.cert.get());
  auto client = issue(*sub_, Profile::tls_client, "client-no-eku");
  auto foreign_signer = issue(*other_, Profile::ocsp_signing, "foreign-signer");
  auto foreign_client = issue(*other_, Profile::tls_client, "foreign-client");
  auto root_signer = issue(*root_, Profile::ocsp_signing, "root-signer");
  const auto refused = [&](X509* cert, EVP_PKEY* key, const std::string& why) {
    expect_refused(verify_ocsp_response(forge(e.request, {cert, key, clock_.now()}), a_.cert.get(),
                                        sub_->cert(), &e.nonce, clock_),
                   ErrorCode::ocsp_invalid, why);
  };
  refused(client.cert.get(), client.key.get(), "lacks the OCSPSigning");
  refused(foreign_signer.cert.get(), foreign_signer.key.get(),
          "not issued by the certificate's issuer");
  refused(foreign_client.cert.get(), foreign_client.key.get(),
          "not issued by the certificate's issuer");
  // OCSPSigning under the issuer's parent is not delegation by the issuer (RFC 6960 §4.2.2.2).
  refused(root_signer.cert.get(), root_signer.key.get(), "not issued by the certificate's issuer");
  refused(root_->cert(), root_->key(), "not issued by the certificate's issuer");
  // A forged delegate: issuer name and authority key id of the issuer, OCSPSigning, but signed
  // by another CA's key. Only the signature check tells it apart.
  auto forged_key = generate_p256_key();
  CertSpec spec;
  spec.profile = Profile::ocsp_signing;
  spec.subject = "CN=forged responder";
  auto forged =
      issue_certificate(spec, forged_key->get(), sub_->cert(), other_->key(), system_, rng_);
  ASSERT_TRUE(forged.has_value());
  ASSERT_EQ(X509_check_issued(sub_->cert(), forged->get()), X509_V_OK);
  refused(forged->get(), forged_key->get(), "not issued by the certificate's issuer");

  // A delegated signer whose certificate is not in the response cannot be found.
  ForgeSpec bare{signer_.cert.get(), signer_.key.get(), clock_.now()};
  bare.include_signer = false;
  expect_refused(
      verify_ocsp_response(forge(e.request, bare), a_.cert.get(), sub_->cert(), &e.nonce, clock_),
      ErrorCode::ocsp_invalid, "names neither the issuer");
  // An expired delegated signer (1-day certificate, answer and check two days later).
  auto short_lived = issue(*sub_, Profile::ocsp_signing, "short-lived", 1);
  FakeClock later(clock_.now() + 48h);
  expect_refused(verify_ocsp_response(
                     forge(e.request, {short_lived.cert.get(), short_lived.key.get(), later.now()}),
                     a_.cert.get(), sub_->cert(), &e.nonce, later),
                 ErrorCode::ocsp_invalid, "expired or not yet valid");
}

TEST_F(OcspTest, NonceMismatchIsRefused) {
  const auto r = responder(clock_);
  const auto first = ask(r, a_.cert.get());
  const auto second = ask(r, a_.cert.get());
  expect_refused(
      verify_ocsp_response(first.response, a_.cert.get(), sub_->cert(), &second.nonce, clock_),
      ErrorCode::nonce_mismatch, "not the request's");
  ForgeSpec no_nonce{signer_.cert.get(), signer_.key.get(), clock_.now()};
  no_nonce.copy_nonce = false;
  const ByteVec unnonced = forge(first.request, no_nonce);
  expect_refused(verify_ocsp_response(unnonced, a_.cert.get(), sub_->cert(), &first.nonce, clock_),
                 ErrorCode::nonce_mismatch, "no nonce");
  // Without an expected nonce (e.g. a cached or stapled answer) the same bytes are fine.
  EXPECT_TRUE(verify_ocsp_response(unnonced, a_.cert.get(), sub_->cert(), nullptr, clock_));
}

TEST_F(OcspTest, AnswerAboutAnotherCertificateIsRefused) {
  const auto e = ask(responder(clock_), a_.cert.get());
  expect_refused(verify(e, b_.cert.get(), clock_), ErrorCode::ocsp_invalid,
                 "no single response about this certificate");
  // The right certificate under the wrong issuer: the delegation check fails first.
  expect_refused(verify_ocsp_response(e.response, a_.cert.get(), root_->cert(), &e.nonce, clock_),
                 ErrorCode::ocsp_invalid, "not issued by the certificate's issuer");
}

// ---------------------------------------------------------------------------------------------
// Client transport

TEST_F(OcspTest, QueryOcspOverHttpUsesAiaAndReportsTransportFailures) {
  const auto r = responder(system_);
  auto server = serve(r);
  ASSERT_TRUE(server);
  const std::string url = "http://" + server->address() + "/ocsp";
  auto with_aia = issue(*sub_, Profile::tls_client, "with-aia", 365, url);
  auto answer = query_ocsp(with_aia.cert.get(), sub_->cert(), "", system_, rng_);
  ASSERT_TRUE(answer.has_value()) << answer.error().message;
  EXPECT_EQ(answer->status, CertStatus::good);
  ASSERT_TRUE(sub_->revoke(with_aia.cert.get(), RevocationReason::key_compromise, system_.now()));
  EXPECT_EQ(query_ocsp(with_aia.cert.get(), sub_->cert(), "", system_, rng_)->status,
            CertStatus::revoked);

  auto no_aia = query_ocsp(a_.cert.get(), sub_->cert(), "", system_, rng_);
  ASSERT_FALSE(no_aia.has_value());
  EXPECT_EQ(no_aia.error().code, ErrorCode::ocsp_invalid);
  EXPECT_EQ(
      query_ocsp(a_.cert.get(), sub_->cert(), "https://127.0.0.1:1/", system_, rng_).error().code,
      ErrorCode::unsupported);
  EXPECT_EQ(query_ocsp(a_.cert.get(), sub_->cert(), "ftp://127.0.0.1/", system_, rng_).error().code,
            ErrorCode::invalid_argument);
}

TEST_F(OcspTest, QueryOcspRefusesWhatIsNotAnOcspAnswer) {
  auto server = net::HttpServer::start({}, [](const net::HttpRequest& r) {
    if (r.target == "/500") return net::HttpResponse{500, "text/plain", "oops\n", {}};
    if (r.target == "/text") return net::HttpResponse{200, "text/html", "<html/>", {}};
    if (r.target == "/big") {
      return net::HttpResponse{
          200, "application/ocsp-response", std::string(kOcspMaxResponseBytes + 1, '\x30'), {}};
    }
    return net::HttpResponse{200, "application/ocsp-response", "\x30\x03\x0a\x01\x06", {}};
  });
  ASSERT_TRUE(server.has_value());
  const std::string base = "http://" + (*server)->address();
  for (const std::string path : {"/500", "/text", "/big", "/unauthorized"}) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = query_ocsp(a_.cert.get(), sub_->cert(), base + path, system_, rng_);
    ASSERT_FALSE(r.has_value()) << path;
    EXPECT_EQ(r.error().code, ErrorCode::ocsp_invalid) << path << ": " << r.error().message;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, kOcspHttpTimeout / 2) << path;  // no retrying
  }
}

// Several server threads share one responder while the index keeps changing: every answer must
// verify and be right (under TSan this also checks the reload's locking).
TEST_F(OcspTest, ConcurrentQueriesWhileTheIndexChanges) {
  const auto r = responder(system_);
  net::HttpServerOptions options;
  options.threads = 3;
  auto server = net::HttpServer::start(options, [&r](const net::HttpRequest& req) {
    auto reply = r.respond_http(req.method, req.target, bytes_of(req.body));
    return net::HttpResponse{reply.status, reply.content_type,
                             std::string(reply.body.begin(), reply.body.end()), reply.headers};
  });
  ASSERT_TRUE(server.has_value());
  const std::string url = "http://" + (*server)->address();
  std::atomic<int> good{0}, bad{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 3; ++t) {
    clients.emplace_back([&] {
      OsRandom rng;  // one per thread
      for (int i = 0; i < 20; ++i) {
        auto answer = query_ocsp(a_.cert.get(), sub_->cert(), url, system_, rng);
        (answer && answer->status == CertStatus::good ? good : bad)++;
      }
    });
  }
  for (int i = 0; i < 5; ++i) issue(*sub_, Profile::tls_client, "churn" + std::to_string(i));
  for (auto& c : clients) c.join();
  EXPECT_EQ(good.load(), 60);
  EXPECT_EQ(bad.load(), 0);
  auto churned = issue(*sub_, Profile::tls_client, "churned");
  EXPECT_EQ(query_ocsp(churned.cert.get(), sub_->cert(), url, system_, rng_)->status,
            CertStatus::good);
  EXPECT_GE(r.index_loads(), 2u);
}

// OpenSSL retries a refused connection (a responder restarting) until the timeout, so this
// takes kOcspHttpTimeout; what matters is that it ends, with ocsp_invalid.
TEST_F(OcspTest, QueryOcspGivesUpOnAnUnreachableResponderWithinTheTimeout) {
  const std::uint16_t port = [] {
    auto s =
        net::HttpServer::start({}, [](const net::HttpRequest&) { return net::HttpResponse{}; });
    return (*s)->port();  // closed again when s goes out of scope
  }();
  const auto t0 = std::chrono::steady_clock::now();
  auto refused = query_ocsp(a_.cert.get(), sub_->cert(), "http://127.0.0.1:" + std::to_string(port),
                            system_, rng_);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::ocsp_invalid);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, kOcspHttpTimeout + 2s);
}

// ---------------------------------------------------------------------------------------------
// Interoperability with the openssl command line

TEST_F(OcspTest, OpensslClientReadsOurServerOverPost) {
  ASSERT_TRUE(sub_->revoke(b_.cert.get(), RevocationReason::key_compromise, system_.now()));
  auto key = generate_p256_key();
  CertSpec spec;
  spec.profile = Profile::tls_client;
  spec.subject = "CN=unrecorded";
  auto stray = issue_certificate(spec, key->get(), sub_->cert(), sub_->key(), system_, rng_);
  ASSERT_TRUE(write_certificate(dir_ / "stray.pem", stray->get()));
  const auto r = responder(system_);
  auto server = serve(r);
  ASSERT_TRUE(server);
  const auto out = run_command("openssl ocsp -issuer " + (dir_ / "sub/ca.pem") + " -cert " +
                               (dir_ / "a.pem") + " -cert " + (dir_ / "b.pem") + " -cert " +
                               (dir_ / "stray.pem") + " -timeout 10 -url http://" +
                               server->address() + "/ocsp -CAfile " + (dir_ / "root/ca.pem") +
                               " -verify_other " + (dir_ / "sub/ca.pem") + " -resp_text");
  EXPECT_EQ(out.status, 0) << out.output;
  EXPECT_NE(out.output.find("Response verify OK"), std::string::npos) << out.output;
  EXPECT_EQ(openssl_status(out.output, dir_ / "a.pem"), "good") << out.output;
  EXPECT_EQ(openssl_status(out.output, dir_ / "b.pem"), "revoked") << out.output;
  EXPECT_EQ(openssl_status(out.output, dir_ / "stray.pem"), "unknown") << out.output;
  EXPECT_NE(out.output.find("Reason: keyCompromise"), std::string::npos) << out.output;
  EXPECT_TRUE(prints_key_hash_responder_id(out.output)) << out.output;
}

TEST_F(OcspTest, OpensslVerifiesOurAnswerToAGetRequest) {
  const auto r = responder(system_);
  auto server = serve(r);
  ASSERT_TRUE(server);
  const auto req = run_command("openssl ocsp -issuer " + (dir_ / "sub/ca.pem") + " -cert " +
                               (dir_ / "a.pem") + " -no_nonce -reqout " + (dir_ / "req.der"));
  ASSERT_EQ(req.status, 0) << req.output;
  auto der = read_file(dir_ / "req.der");
  ASSERT_TRUE(der.has_value());
  const auto got = http_get(server->port(), "/ocsp/" + url_encode(base64(*der)));
  ASSERT_EQ(got.status, 200u);
  EXPECT_EQ(got.content_type, "application/ocsp-response");
  const ByteVec body(got.body.begin(), got.body.end());
  write_der(dir_ / "resp.der", body);
  const auto out = run_command("openssl ocsp -respin " + (dir_ / "resp.der") + " -issuer " +
                               (dir_ / "sub/ca.pem") + " -cert " + (dir_ / "a.pem") + " -CAfile " +
                               (dir_ / "root/ca.pem") + " -verify_other " + (dir_ / "sub/ca.pem"));
  EXPECT_NE(out.output.find("Response verify OK"), std::string::npos) << out.output;
  EXPECT_EQ(openssl_status(out.output, dir_ / "a.pem"), "good") << out.output;
  auto ours = verify_ocsp_response(body, a_.cert.get(), sub_->cert(), nullptr, system_);
  ASSERT_TRUE(ours.has_value()) << ours.error().message;
  EXPECT_EQ(ours->status, CertStatus::good);
}

TEST_F(OcspTest, OurClientReadsTheOpensslResponder) {
  ASSERT_TRUE(sub_->revoke(b_.cert.get(), RevocationReason::ca_compromise, system_.now()));
  const std::uint16_t port = free_port();
  Child responder_process({"openssl", "ocsp", "-index", dir_ / "sub/index.txt", "-CA",
                           dir_ / "sub/ca.pem", "-rsigner", dir_ / "signer.pem", "-rkey",
                           dir_ / "signer.key", "-port", std::to_string(port), "-nrequest", "2",
                           "-nmin", "10"});
  ASSERT_TRUE(responder_process.started());
  ASSERT_TRUE(wait_listening(port)) << responder_process.wait(100ms).second;
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  auto good = query_ocsp(a_.cert.get(), sub_->cert(), url, system_, rng_);
  ASSERT_TRUE(good.has_value()) << good.error().message;
  EXPECT_EQ(good->status, CertStatus::good);
  auto revoked = query_ocsp(b_.cert.get(), sub_->cert(), url, system_, rng_);
  ASSERT_TRUE(revoked.has_value()) << revoked.error().message;
  EXPECT_EQ(revoked->status, CertStatus::revoked);
  EXPECT_EQ(responder_process.wait(5s).first, 0);  // -nrequest 2: it is done
}

TEST_F(OcspTest, VerifyAcceptsOpensslRespoutSignedByDelegateOrByTheCa) {
  ASSERT_TRUE(sub_->revoke(b_.cert.get(), RevocationReason::superseded, system_.now()));
  struct Case {
    std::string signer, extra;
  };
  // openssl names its responder byName by default, byKey with -resp_key_id.
  for (const Case& c : {Case{"signer", ""}, Case{"signer", " -resp_key_id"}, Case{"sub/ca", ""}}) {
    for (Issued* leaf : {&a_, &b_}) {
      ByteVec nonce;
      auto request = make_ocsp_request(leaf->cert.get(), sub_->cert(), rng_, &nonce);
      write_der(dir_ / "req.der", *request);
      const auto out = run_command(
          "openssl ocsp -index " + (dir_ / "sub/index.txt") + " -CA " + (dir_ / "sub/ca.pem") +
          " -rsigner " + (dir_ / (c.signer + ".pem")) + " -rkey " + (dir_ / (c.signer + ".key")) +
          c.extra + " -reqin " + (dir_ / "req.der") + " -respout " + (dir_ / "resp.der"));
      ASSERT_EQ(out.status, 0) << out.output;
      auto der = read_file(dir_ / "resp.der");
      ASSERT_TRUE(der.has_value());
      auto answer = verify_ocsp_response(*der, leaf->cert.get(), sub_->cert(), &nonce, system_);
      ASSERT_TRUE(answer.has_value()) << c.signer << c.extra << ": " << answer.error().message;
      EXPECT_EQ(answer->status, leaf == &b_ ? CertStatus::revoked : CertStatus::good);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The command line, as processes: ocsp-serve, verify --ocsp, revoke

const std::string kMcim = std::string(MCIM_BINARY_DIR) + "/src/cli/mcim";

TEST_F(OcspTest, CliServesAndVerifyOcspSeesRevocationsWithoutRestart) {
  ASSERT_EQ(::access(kMcim.c_str(), X_OK), 0) << kMcim << ": build the mcim target first";
  Child server({kMcim, "pki", "ocsp-serve", "--ca", dir_ / "sub", "--signer", dir_ / "signer",
                "--listen", "127.0.0.1:0", "--validity", "600"});
  ASSERT_TRUE(server.started());
  const auto line = server.read_line(10s);
  ASSERT_TRUE(line.has_value());
  const std::string prefix = "listening: 127.0.0.1:";
  ASSERT_EQ(line->rfind(prefix, 0), 0u) << *line;
  const std::string port = line->substr(prefix.size());
  ASSERT_TRUE(!port.empty() && std::all_of(port.begin(), port.end(), [](unsigned char c) {
    return std::isdigit(c) != 0;
  })) << *line;
  const std::string url = "http://127.0.0.1:" + port + "/ocsp";

  const auto issued = run_command(kMcim + " pki issue --ca " + (dir_ / "sub") +
                                  " --profile tls-client --subject CN=device --ocsp-url " + url +
                                  " --out " + (dir_ / "device"));
  ASSERT_EQ(issued.status, 0) << issued.output;
  const std::string verify = kMcim + " pki verify --ca-file " + (dir_ / "root/ca.pem") +
                             " --untrusted " + (dir_ / "sub/ca.pem") + " --cert " +
                             (dir_ / "device.pem") + " --ocsp";
  const auto good = run_command(verify);
  EXPECT_EQ(good.status, 0) << good.output;
  EXPECT_NE(good.output.find("ocsp: good"), std::string::npos) << good.output;

  const auto revoke = run_command(kMcim + " pki revoke --ca " + (dir_ / "sub") + " --cert " +
                                  (dir_ / "device.pem") + " --reason keyCompromise");
  ASSERT_EQ(revoke.status, 0) << revoke.output;
  const auto revoked = run_command(verify + " --json");
  EXPECT_EQ(revoked.status, 1) << revoked.output;
  EXPECT_NE(revoked.output.find("\"cert_revoked\""), std::string::npos) << revoked.output;
  const auto by_openssl =
      run_command("openssl ocsp -issuer " + (dir_ / "sub/ca.pem") + " -cert " +
                  (dir_ / "device.pem") + " -timeout 10 -url " + url + " -CAfile " +
                  (dir_ / "root/ca.pem") + " -verify_other " + (dir_ / "sub/ca.pem"));
  EXPECT_EQ(openssl_status(by_openssl.output, dir_ / "device.pem"), "revoked") << by_openssl.output;

  const auto [code, rest] = server.stop(SIGTERM, 10s);
  EXPECT_EQ(code, 0) << rest;
  EXPECT_NE(rest.find("requests: 3"), std::string::npos) << rest;
  EXPECT_NE(rest.find("stopped: SIGTERM"), std::string::npos) << rest;
}

TEST_F(OcspTest, CliRefusesBadArgumentsWithExit2) {
  ASSERT_EQ(::access(kMcim.c_str(), X_OK), 0) << kMcim << ": build the mcim target first";
  auto client = issue(*sub_, Profile::tls_client, "client-no-eku");
  const std::string serve = kMcim + " pki ocsp-serve ";
  const std::string ca = "--ca " + (dir_ / "sub");
  for (const std::string& args :
       {std::string("--listen 127.0.0.1:0"), ca + " --listen 127.0.0.1", ca + " --listen :80",
        ca + " --listen 127.0.0.1:65536", ca + " --listen localhost:0", ca + " --validity 0",
        ca + " --validity soon", ca + " --threads 0", ca + " --signer " + (dir_ / "client-no-eku"),
        ca + " --signer " + (dir_ / "absent"), "--ca " + (dir_ / "absent")}) {
    const auto out = run_command("timeout 10 " + serve + args);
    EXPECT_EQ(out.status, 2) << args << "\n" << out.output;
    EXPECT_EQ(out.output.find("listening"), std::string::npos) << args;
  }
}

}  // namespace
}  // namespace mcim::pki
