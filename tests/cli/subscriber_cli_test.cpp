// `mcim subscriber register|status|activate` against the SHO of a running system (start_system in
// this process): the owner's whole part of F1 and F7 on the command line, then the device's own
// (`mcim device init|register|run`) to an operational IMSI, which `status` shows. Bad input exits
// 2 and registers nothing, as do the SHO's 4xx for the input (already_exists, not_found); an
// unknown token exits 1 (unauthenticated); the PIN never reaches the output.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "../net/net_test_util.h"
#include "../pki/pki_test_util.h"
#include "cli/up_command.h"
#include "cli_test_util.h"
#include "common/file.h"
#include "net/http_error.h"
#include "net/json_schema.h"
#include "pki/certificate.h"
#include "tre/bundle.h"

namespace mcim::cli {
namespace {

namespace fs = std::filesystem;
using net::Json;
using pki::testing::TempDir;
using testing::mcim;

class SubscriberCli : public ::testing::Test {
 protected:
  void SetUp() override {
    SystemOptions o;
    o.dir = dir_ / "system";
    o.log_level = "warn";
    auto system = start_system(o);
    ASSERT_TRUE(system) << system.error().message;
    system_ = std::move(*system);
    // F0: one device from the supplier, handed over to the RO.
    const std::string first = o.pcid_prefix + "00000001";
    auto made = system_->factory_client()->request(
        "POST", system_->url("supplier") + "/v1/batches",
        Json{{"batch_id", "cli-1"}, {"first_pcid", first}, {"count", 2}}.dump(),
        net::kJsonContentType, {});
    ASSERT_TRUE(made) << made.error().message;
    ASSERT_EQ(made->status, 201) << made->body;
    for (const auto& e : fs::directory_iterator(system_->batches_dir() + "/cli-1/bundles")) {
      bundles_.push_back(e.path().string());
    }
    std::sort(bundles_.begin(), bundles_.end());
    ASSERT_EQ(bundles_.size(), 2u);
    auto b = tre::read_bundle(bundles_[0]);
    ASSERT_TRUE(b) << b.error().message;
    device_id_ = b->device_id;
    pcid_ = b->pcid;
    pin_ = std::string(tre::pin_text(*b));
    // What the device's label gives its owner: the PIN and the platform certificate.
    ASSERT_TRUE(write_file_atomic(dir_ / "pin", pin_ + "\n"));
    auto pem = pki::certificate_pem(b->platform_chain.front().get());
    ASSERT_TRUE(pem);
    ASSERT_TRUE(write_file_atomic(dir_ / "platform.pem", *pem));
  }

  std::vector<std::string> owner(std::vector<std::string> args) {
    for (std::string extra :
         std::vector<std::string>{"--sho", system_->url("sho"), "--trust", system_->tls_root_file(),
                                  "--token-file", system_->owner_token_file()}) {
      args.push_back(extra);
    }
    return args;
  }
  std::vector<std::string> registration(std::vector<std::string> more = {}) {
    std::vector<std::string> args = {
        "subscriber", "register",        "--device-id",         device_id_,   "--pcid",
        pcid_,        "--platform-cert", dir_ / "platform.pem", "--pin-file", dir_ / "pin"};
    args.insert(args.end(), more.begin(), more.end());
    return owner(args);
  }
  std::string status_json() {
    auto r = mcim(owner({"--json", "subscriber", "status", "--device-id", device_id_}));
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    return r.out;
  }

  TempDir dir_;
  std::unique_ptr<System> system_;
  std::vector<std::string> bundles_;
  std::string device_id_, pcid_, pin_;
};

TEST_F(SubscriberCli, RegistersActivatesAndFollowsADeviceToOperational) {
  auto reg = mcim(registration({"--nonce-lifetime", "3600"}));
  ASSERT_EQ(reg.code, 0) << reg.out << reg.err;
  EXPECT_NE(reg.out.find("status: registered"), std::string::npos) << reg.out;
  EXPECT_EQ(reg.out.find(pin_), std::string::npos) << "the PIN reached the output";
  auto j = mcim(owner({"--json", "subscriber", "status", "--device-id", device_id_}));
  ASSERT_EQ(j.code, 0) << j.err;
  const Json status = Json::parse(j.out);
  EXPECT_EQ(status.value("status", ""), "registered") << j.out;

  // The nonce of the registration's answer goes to the device.
  const auto again =
      mcim(owner({"--json", "subscriber", "register", "--device-id", device_id_, "--pcid", pcid_,
                  "--platform-cert", dir_ / "platform.pem", "--pin-file", dir_ / "pin"}));
  EXPECT_EQ(again.code, 2) << again.out;  // registered already: the SHO's 409, bad input
  EXPECT_NE(again.out.find("already_exists"), std::string::npos) << again.out;
  std::string nonce;
  {
    const std::string key = "registration_nonce: ";
    const auto at = reg.out.find(key);
    ASSERT_NE(at, std::string::npos) << reg.out;
    nonce = reg.out.substr(at + key.size(), 32);
  }
  const std::string tre = dir_ / "tre";
  ASSERT_EQ(mcim({"device", "init", "--dir", tre, "--from", bundles_[0]}).code, 0);
  ASSERT_EQ(mcim({"device", "register", "--dir", tre, "--nonce", nonce}).code, 0);
  auto on = mcim(owner({"subscriber", "activate", "--device-id", device_id_, "--window", "600"}));
  ASSERT_EQ(on.code, 0) << on.out << on.err;

  auto run = mcim({"device", "run", "--dir", tre, "--vno", system_->url("vno"), "--trust",
                   system_->tls_root_file(), "--timeout", "60"});
  ASSERT_EQ(run.code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("outcome: operational"), std::string::npos) << run.out;
  EXPECT_EQ(Json::parse(status_json()).value("status", ""), "active");
}

TEST_F(SubscriberCli, BadInputExitsTwoAndRegistersNothing) {
  const std::vector<std::vector<std::string>> bad = {
      registration({"--pin", "1234"}),           // both PIN options
      registration({"--nonce-lifetime", "-5"}),  // negative
      owner({"subscriber", "register", "--device-id", device_id_, "--pcid", pcid_,
             "--platform-cert", dir_ / "platform.pem"}),  // no PIN
      owner({"subscriber", "register", "--device-id", device_id_, "--pcid", pcid_,
             "--platform-cert", dir_ / "pin", "--pin-file", dir_ / "pin"}),  // not a certificate
      owner({"subscriber", "register", "--device-id", device_id_, "--pcid", pcid_,
             "--platform-cert", dir_ / "platform.pem", "--pin", "12ab"}),  // not digits
      owner({"subscriber", "register", "--device-id", device_id_, "--pcid", "12", "--platform-cert",
             dir_ / "platform.pem", "--pin-file", dir_ / "pin"}),  // the SHO's 400
      {"subscriber", "status", "--device-id", device_id_},         // no SHO, trust or token
      owner({"subscriber", "activate", "--device-id", device_id_, "--window", "0"}),
      {"subscriber", "status", "--sho", "http://127.0.0.1:1", "--trust", "x", "--token-file", "y",
       "--device-id", device_id_},
      owner({"subscriber", "status", "--device-id", "../v1/operator"}),  // not an id: a path
      owner({"subscriber", "retry-validation", "--device-id", "dev 1"}),
  };
  for (const auto& args : bad) {
    const auto r = mcim(args);
    std::string line;
    for (const auto& a : args) line += a + " ";
    EXPECT_EQ(r.code, 2) << line << "\n" << r.out << r.err;
    EXPECT_EQ(r.out.find(pin_), std::string::npos) << line;
    EXPECT_EQ(r.err.find(pin_), std::string::npos) << line;
  }
  // A nonce lifetime above the SHO's is the SHO's invalid_argument, also exit 2.
  const auto longer = mcim(registration({"--nonce-lifetime", "999999"}));
  EXPECT_EQ(longer.code, 2) << longer.out << longer.err;
  EXPECT_NE(longer.err.find("nonce_lifetime_s"), std::string::npos) << longer.err;
  // Nothing was registered: the SHO does not know the device.
  const auto st = mcim(owner({"--json", "subscriber", "status", "--device-id", device_id_}));
  EXPECT_EQ(st.code, 2) << st.out;
  EXPECT_NE(st.out.find("not_found"), std::string::npos) << st.out;
  // Another owner's token is refused as such.
  ASSERT_TRUE(write_file_atomic(dir_ / "stranger", "not-the-owners-token\n"));
  auto args = registration();
  args.insert(args.begin(), "--json");
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--token-file") args[i + 1] = dir_ / "stranger";
  }
  const auto stranger = mcim(args);
  EXPECT_EQ(stranger.code, 1) << stranger.out << stranger.err;
  EXPECT_NE(stranger.out.find("\"unauthenticated\""), std::string::npos) << stranger.out;
}

// `retry-validation` is for an operator change whose validation did not start: for an F2
// registration the SHO refuses it (409 transition_refused, exit 1) and the subscriber stays
// registered. The accepted retry is in ChangeOperatorCli below.
TEST_F(SubscriberCli, ARetryOfTheValidationOfAnF2RegistrationIsRefused) {
  ASSERT_EQ(mcim(registration()).code, 0);
  const auto retry =
      mcim(owner({"--json", "subscriber", "retry-validation", "--device-id", device_id_}));
  EXPECT_EQ(retry.code, 1) << retry.out << retry.err;
  EXPECT_NE(retry.out.find("\"transition_refused\""), std::string::npos) << retry.out;
  EXPECT_EQ(Json::parse(status_json()).value("status", ""), "registered");
  const auto unknown =
      mcim(owner({"--json", "subscriber", "retry-validation", "--device-id", "dev-unknown"}));
  EXPECT_EQ(unknown.code, 2) << unknown.out << unknown.err;
  EXPECT_NE(unknown.out.find("\"not_found\""), std::string::npos) << unknown.out;
}

// `subscriber change-operator` (F4) against a fake SHO (an `mcim up` system cannot run F4 before
// the RO's change route exists): the registration's body with "change": true and the owner's
// token, the answer printed as `register` prints it, the PIN in no output. Bad input exits 2 and
// sends nothing; the SHO's already_exists exits 2, its access_denied (a PIN that is not the
// device's) 1.
class ChangeOperatorCli : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = net::testing::start_named_server(
        [this](const net::HttpRequest& r) {
          std::lock_guard lock(mu_);
          requests_.push_back(r);
          if (refusal_) return *refusal_;
          if (r.target.ends_with("/validation")) {
            return net::json_response(
                200, Json{{"device_id", "dev-001019900000001"}, {"status", "validating"}});
          }
          return net::json_response(201, Json{{"device_id", "dev-001019900000001"},
                                              {"pcid", "001019900000001"},
                                              {"imsi", "001020000000001"},
                                              {"registration_nonce", kNonce},
                                              {"nonce_expires", 4'000'000'000},
                                              {"status", "validating"},
                                              {"change", true}});
        },
        "sho", net::ClientAuth::none, 64 * 1024);
    ASSERT_TRUE(server_);
    ASSERT_TRUE(write_file_atomic(dir_ / "token", "owner-token-0123\n"));
    ASSERT_TRUE(write_file_atomic(dir_ / "pin", std::string(kPin) + "\n"));
  }

  std::vector<std::string> change(std::vector<std::string> more = {}) {
    std::vector<std::string> args = {
        "subscriber",      "change-operator",
        "--sho",           server_->url(),
        "--trust",         net::testing::TestPki::get().root_file(),
        "--token-file",    dir_ / "token",
        "--device-id",     "dev-001019900000001",
        "--pcid",          "001019900000001",
        "--platform-cert", net::testing::TestPki::get().named_server("pva").cert_file};
    args.insert(args.end(), more.begin(), more.end());
    return args;
  }
  std::vector<net::HttpRequest> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

  static constexpr std::string_view kPin = "48151623";
  static constexpr std::string_view kNonce = "00112233445566778899aabbccddeeff";
  TempDir dir_;
  std::unique_ptr<net::HttpServer> server_;
  std::mutex mu_;
  std::vector<net::HttpRequest> requests_;    // guarded by mu_
  std::optional<net::HttpResponse> refusal_;  // guarded by mu_
};

TEST_F(ChangeOperatorCli, SendsTheRegistrationWithChangeAndPrintsTheAnswer) {
  auto r = mcim(change({"--pin-file", dir_ / "pin", "--nonce-lifetime", "600"}));
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("status: validating"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("registration_nonce: " + std::string(kNonce)), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("imsi: 001020000000001"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(kPin), std::string::npos) << "the PIN reached the output";
  EXPECT_EQ(r.err.find(kPin), std::string::npos);
  const auto got = requests();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].method, "POST");
  EXPECT_EQ(got[0].target, "/v1/subscribers");
  EXPECT_EQ(got[0].header("Authorization"), "Bearer owner-token-0123");
  const Json body = Json::parse(got[0].body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << got[0].body;
  EXPECT_EQ(body.value("change", false), true);
  EXPECT_EQ(body.value("device_id", ""), "dev-001019900000001");
  EXPECT_EQ(body.value("pcid", ""), "001019900000001");
  EXPECT_EQ(body.value("pin", ""), kPin);
  EXPECT_EQ(body.value("nonce_lifetime_s", 0), 600);
  EXPECT_NE(body.value("platform_cert", "").find("BEGIN CERTIFICATE"), std::string::npos);
  // `register` sends no "change".
  ASSERT_EQ(mcim(change({"--pin-file", dir_ / "pin"})).code, 0);
  auto reg = change({"--pin-file", dir_ / "pin"});
  reg[1] = "register";
  ASSERT_EQ(mcim(reg).code, 0);
  const Json plain = Json::parse(requests().back().body, nullptr, false);
  EXPECT_FALSE(plain.contains("change")) << plain.dump();
}

// The owner's retry of a change whose validation did not start: an empty body with the token.
TEST_F(ChangeOperatorCli, RetryValidationPostsToTheSubscribersValidation) {
  const std::vector<std::string> retry = {"subscriber",   "retry-validation",
                                          "--sho",        server_->url(),
                                          "--trust",      net::testing::TestPki::get().root_file(),
                                          "--token-file", dir_ / "token",
                                          "--device-id",  "dev-001019900000001"};
  const auto r = mcim(retry);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("status: validating"), std::string::npos) << r.out;
  const auto got = requests();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].method, "POST");
  EXPECT_EQ(got[0].target, "/v1/subscribers/dev-001019900000001/validation");
  EXPECT_EQ(got[0].header("Authorization"), "Bearer owner-token-0123");
  EXPECT_EQ(Json::parse(got[0].body, nullptr, false), Json::object()) << got[0].body;
}

TEST_F(ChangeOperatorCli, BadInputExitsTwoAndSendsNothing) {
  const std::vector<std::vector<std::string>> bad = {
      change(),                                                               // no PIN
      change({"--pin-file", dir_ / "pin", "--pin", "1234"}),                  // both PIN options
      change({"--pin", "12ab"}),                                              // not digits
      change({"--pin-file", dir_ / "pin", "--nonce-lifetime", "-5"}),         // negative
      change({"--pin-file", dir_ / "pin", "--platform-cert", dir_ / "pin"}),  // not a certificate
      {"subscriber", "change-operator", "--device-id", "dev-001019900000001", "--pcid",
       "001019900000001", "--pin-file", dir_ / "pin"},  // no SHO, trust, token or certificate
  };
  for (const auto& args : bad) {
    std::string line;
    for (const auto& a : args) line += a + " ";
    const auto r = mcim(args);
    EXPECT_EQ(r.code, 2) << line << "\n" << r.out << r.err;
    EXPECT_EQ(r.out.find(kPin), std::string::npos) << line;
    EXPECT_EQ(r.err.find(kPin), std::string::npos) << line;
  }
  EXPECT_TRUE(requests().empty());
  // The SHO's refusals keep their codes.
  {
    std::lock_guard lock(mu_);
    refusal_ = net::error_response(409, "already_exists", "device registered already");
  }
  auto taken = change({"--pin-file", dir_ / "pin"});
  taken.insert(taken.begin(), "--json");
  const auto exists = mcim(taken);
  EXPECT_EQ(exists.code, 2) << exists.out << exists.err;
  EXPECT_NE(exists.out.find("already_exists"), std::string::npos) << exists.out;
  {
    std::lock_guard lock(mu_);
    refusal_ = net::error_response(403, "access_denied", "pin: not the device's");
  }
  const auto denied = mcim(change({"--pin-file", dir_ / "pin"}));
  EXPECT_EQ(denied.code, 1) << denied.out << denied.err;
  EXPECT_EQ(requests().size(), 2u);
}

}  // namespace
}  // namespace mcim::cli
