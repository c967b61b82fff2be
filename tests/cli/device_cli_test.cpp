// `mcim device ...` end to end through the command line only: CAs, the supplier bundle, a TRE,
// a package sealed by `mcim pki package seal`, the lifecycle, AKA with vectors from
// `mcim aka vector`, instructions, attestation, audit, fsck; then every kind of bad input, which
// must exit 2 with a message and leave the registry as it was.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../pki/pki_test_util.h"
#include "cli_test_util.h"
#include "common/file.h"
#include "common/hex.h"
#include "pki/package.h"

namespace mcim::cli {
namespace {

using pki::testing::TempDir;
using testing::mcim;
using testing::Outcome;
using Json = nlohmann::json;

const std::string kPcid = "001019990000042";
const std::string kImsi = "001020000000042";
const std::string kOp = "cdc202d5123e20f62b6d676ac72cb318";
const std::string kK = "465b5ce8b199b49faa5f0a2ee238a6bc";
const std::string kOpc = "cd63cb71954a9f4e48a5994e37a02baf";  // TS 35.208 set 1: f(kK, OP)
const std::string kNonce = "00112233445566778899aabbccddeeff";

Json json_of(const Outcome& o) {
  EXPECT_EQ(o.code, 0) << o.err;
  return Json::parse(o.out);
}

class DeviceCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(mcim({"pki", "ca", "--name", "Supplier CA", "--out", d_ / "supplier"}).code, 0);
    ASSERT_EQ(mcim({"pki", "ca", "--name", "Operator Root", "--out", d_ / "ops"}).code, 0);
    for (const char* op : {"sho-a", "sho-b"}) {
      ASSERT_EQ(mcim({"pki", "issue", "--ca", d_ / "ops", "--profile", "package-signing",
                      "--subject", std::string("CN=") + op + ",O=" + op, "--san",
                      std::string("URI:urn:mcim:operator:") + op, "--out", d_ / op})
                    .code,
                0);
    }
    const auto made = mcim({"supplier", "manufacture", "--ca", d_ / "supplier", "--pcid", kPcid,
                            "--ro-id", "ro-1", "--operator-roots", d_ / "ops/ca.pem", "--op", kOp,
                            "--out", d_ / "bundle.json"});
    ASSERT_EQ(made.code, 0) << made.err;
    const auto init = mcim({"device", "init", "--dir", tre(), "--from", d_ / "bundle.json"});
    ASSERT_EQ(init.code, 0) << init.err;
  }

  std::string tre() const { return d_ / "tre"; }

  // A RADIUS shared secret file for `device run --access eap-aka`, private as required.
  std::string radius_secret() const {
    const std::string path = d_ / "radius.secret";
    EXPECT_TRUE(write_file_atomic(path, std::string_view("radius-shared-1\n"), 0600));
    return path;
  }

  // An mcim/1 document for this device, written where `mcim pki package seal` reads it.
  std::string document(const std::string& owner, std::uint64_t sequence,
                       const std::string& imsi = kImsi) {
    pki::McimDocument d;
    d.package_id = "pkg-" + std::to_string(sequence);
    d.device_id = "dev-" + kPcid;
    d.imsi = imsi;
    EXPECT_TRUE(d.set_key(*parse_hex(kK, "k")));
    d.opc = Secret<16>(*parse_hex_fixed<16>(kOpc, "opc"));
    d.policy.owner = owner;
    d.policy.operations = {pki::McimOperation::activate, pki::McimOperation::block,
                           pki::McimOperation::unblock};
    d.registration_nonce = *parse_hex_fixed<16>(kNonce, "nonce");
    const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    d.not_before = now - std::chrono::hours(1);
    d.not_after = now + std::chrono::hours(24);
    d.sequence = sequence;
    auto text = pki::encode_document(d);
    EXPECT_TRUE(text);
    const std::string path = d_ / ("doc-" + std::to_string(sequence) + ".json");
    EXPECT_TRUE(write_file_atomic(path, text->view(), 0600));
    return path;
  }

  std::string package(const std::string& owner, std::uint64_t sequence,
                      const std::string& imsi = kImsi) {
    const std::string out = d_ / ("pkg-" + std::to_string(sequence) + ".der");
    const auto sealed =
        mcim({"pki", "package", "seal", "--signer", d_ / owner, "--recipient",
              tre() + "/platform.pem", "--in", document(owner, sequence, imsi), "--out", out});
    EXPECT_EQ(sealed.code, 0) << sealed.err;
    return out;
  }

  Json vector(const std::string& sqn) {
    return json_of(mcim({"aka", "vector", "--k", kK, "--opc", kOpc, "--sqn", sqn, "--json"}));
  }

  // The credentials as status reports them: what bad input must not change.
  std::string registry() {
    const Json s = json_of(mcim({"device", "status", "--dir", tre(), "--json"}));
    return s["credential"].dump() + s["selected"].dump();
  }

  TempDir d_;
};

TEST_F(DeviceCli, FromBundleToAnActiveMcimAndBack) {
  Json s = json_of(mcim({"device", "status", "--dir", tre(), "--json"}));
  EXPECT_EQ(s["state"], "pristine");
  EXPECT_EQ(s["device_id"], "dev-" + kPcid);
  ASSERT_EQ(s["credential"].size(), 1u);
  EXPECT_EQ(s["credential"][0]["id"], kPcid);
  EXPECT_EQ(s["credential"][0]["state"], "activated");

  ASSERT_EQ(mcim({"device", "register", "--dir", tre(), "--nonce", kNonce}).code, 0);
  const auto installed = mcim({"device", "install", "--dir", tre(), "--package",
                               package("sho-a", 1), "--report", d_ / "report.json", "--json"});
  ASSERT_EQ(installed.code, 0) << installed.err;
  EXPECT_EQ(Json::parse(installed.out)["state"], "installed");
  EXPECT_NE(read_text_file(d_ / "report.json")->find("\"outcome\":\"ok\""), std::string::npos);

  ASSERT_EQ(mcim({"device", "activate", "--dir", tre(), "--id", kImsi}).code, 0);
  ASSERT_EQ(mcim({"device", "select", "--dir", tre(), "--id", kImsi}).code, 0);
  s = json_of(mcim({"device", "status", "--dir", tre(), "--json"}));
  EXPECT_EQ(s["state"], "provisioned");
  EXPECT_EQ(s["selected"], kImsi);

  const Json av = vector("000000000040");
  const auto auth =
      mcim({"device", "authenticate", "--dir", tre(), "--rand", av["rand"].get<std::string>(),
            "--autn", av["autn"].get<std::string>(), "--json"});
  ASSERT_EQ(auth.code, 0) << auth.err;
  const Json answer = Json::parse(auth.out);
  EXPECT_EQ(answer["res"], av["xres"]);
  EXPECT_EQ(answer["ck"], av["ck"]);
  EXPECT_EQ(answer["ik"], av["ik"]);

  // The same challenge again: AUTS, exit 1, and the home side recovers SQN_MS from it.
  const auto replay =
      mcim({"device", "authenticate", "--dir", tre(), "--rand", av["rand"].get<std::string>(),
            "--autn", av["autn"].get<std::string>(), "--json"});
  ASSERT_EQ(replay.code, 1) << replay.err;
  const Json sync = Json::parse(replay.out);
  const auto resync =
      mcim({"aka", "resync", "--k", kK, "--opc", kOpc, "--rand", av["rand"].get<std::string>(),
            "--auts", sync["auts"].get<std::string>(), "--json"});
  ASSERT_EQ(resync.code, 0) << resync.err;
  EXPECT_EQ(Json::parse(resync.out)["sqn_ms"], "000000000040");

  // The device may not block; its owner may, sho-b may not.
  EXPECT_EQ(mcim({"device", "deselect", "--dir", tre(), "--id", kImsi}).code, 0);
  EXPECT_EQ(mcim({"device", "block", "--dir", tre(), "--id", kImsi}).code, 1);
  EXPECT_EQ(mcim({"device", "block", "--dir", tre(), "--id", kImsi, "--signer", d_ / "sho-b"}).code,
            1);
  const auto blocked =
      mcim({"device", "block", "--dir", tre(), "--id", kImsi, "--signer", d_ / "sho-a", "--json"});
  ASSERT_EQ(blocked.code, 0) << blocked.err;
  EXPECT_EQ(Json::parse(blocked.out)["state"], "blocked");

  const Json audit =
      json_of(mcim({"device", "audit", "--dir", tre(), "--verify", "--show", "--json"}));
  EXPECT_GE(audit["entry"].size(), 8u);
  const Json fsck = json_of(mcim({"device", "fsck", "--dir", tre(), "--json"}));
  EXPECT_EQ(fsck["fsck"], "ok");
  const Json attest =
      json_of(mcim({"device", "attest", "--dir", tre(), "--nonce", kNonce + kNonce, "--json"}));
  EXPECT_NE(attest["report"].get<std::string>().find("tre.binary"), std::string::npos);

  ASSERT_EQ(mcim({"device", "pristine", "--dir", tre()}).code, 0);
  s = json_of(mcim({"device", "status", "--dir", tre(), "--json"}));
  EXPECT_EQ(s["state"], "pristine");
  EXPECT_EQ(s["credential"][1]["state"], "deleted");
}

TEST_F(DeviceCli, SecretsNeverReachTheOutput) {
  ASSERT_EQ(mcim({"device", "register", "--dir", tre(), "--nonce", kNonce}).code, 0);
  const std::string pkg = package("sho-a", 1);
  std::string all;
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"device", "install", "--dir", tre(), "--package", pkg},
           {"device", "status", "--dir", tre(), "--json"},
           {"device", "audit", "--dir", tre(), "--verify", "--show"},
           {"device", "list", "--dir", tre()}}) {
    const auto o = mcim(args);
    all += o.out + o.err;
  }
  for (const auto& secret : {kK, kOpc, std::string("12345678")}) {
    EXPECT_EQ(all.find(secret), std::string::npos);
  }
  // Nor the bundle's K and OPc, which only the TRE's sealed state holds.
  const auto bundle = read_text_file(d_ / "bundle.json");
  ASSERT_TRUE(bundle);
  const auto k_at = bundle->find("\"k\":\"");
  ASSERT_NE(k_at, std::string::npos);
  EXPECT_EQ(all.find(bundle->substr(k_at + 5, 32)), std::string::npos);
}

// F4's TRE step on the command line: sho-b's package installed in place of sho-a's MCIM, with the
// two acknowledgements written where asked.
TEST_F(DeviceCli, InstallReplacingDiscardsTheOldMcimAndWritesBothAcknowledgements) {
  ASSERT_EQ(mcim({"device", "register", "--dir", tre(), "--nonce", kNonce}).code, 0);
  ASSERT_EQ(mcim({"device", "install", "--dir", tre(), "--package", package("sho-a", 1)}).code, 0);
  ASSERT_EQ(mcim({"device", "activate", "--dir", tre(), "--id", kImsi}).code, 0);
  ASSERT_EQ(mcim({"device", "register", "--dir", tre(), "--nonce", kNonce}).code, 0);
  const std::string other = "001030000000002";
  const auto replaced =
      mcim({"device", "install", "--dir", tre(), "--package", package("sho-b", 2, other),
            "--replacing", kImsi, "--report", d_ / "install.json", "--discard-report",
            d_ / "old.json", "--discard-notice", d_ / "new.json", "--json"});
  ASSERT_EQ(replaced.code, 0) << replaced.out << replaced.err;
  EXPECT_EQ(Json::parse(replaced.out)["discarded"], kImsi);
  const Json s = json_of(mcim({"device", "status", "--dir", tre(), "--json"}));
  ASSERT_EQ(s["credential"].size(), 3u);
  EXPECT_EQ(s["credential"][1]["state"], "deleted");
  EXPECT_EQ(s["credential"][2]["id"], other);
  EXPECT_EQ(s["credential"][2]["state"], "installed");
  const auto old_ack = read_text_file(d_ / "old.json");
  const auto new_ack = read_text_file(d_ / "new.json");
  ASSERT_TRUE(old_ack && new_ack);
  EXPECT_NE(old_ack->find("\"event\":\"discard\""), std::string::npos) << *old_ack;
  EXPECT_NE(old_ack->find(kImsi), std::string::npos) << *old_ack;
  EXPECT_NE(new_ack->find("\"event\":\"discard\""), std::string::npos) << *new_ack;
  EXPECT_EQ(new_ack->find(kImsi), std::string::npos) << *new_ack;
  EXPECT_EQ(new_ack->find("pkg-1"), std::string::npos) << *new_ack;
}

TEST_F(DeviceCli, BadInputExitsTwoAndChangesNothing) {
  ASSERT_TRUE(write_file_atomic(d_ / "garbage.der", std::string_view("not a package"), 0644));
  ASSERT_TRUE(write_file_atomic(d_ / "garbage.json", std::string_view("{}"), 0600));
  const std::string before = registry();
  const std::vector<std::vector<std::string>> cases = {
      {"device", "status"},
      {"device", "status", "--dir", d_ / "nowhere"},
      {"device", "init", "--dir", d_ / "tre2"},
      {"device", "init", "--dir", d_ / "tre2", "--from", d_ / "garbage.json"},
      {"device", "init", "--dir", tre(), "--from", d_ / "bundle.json"},
      {"device", "register", "--dir", tre(), "--nonce", "0011"},
      {"device", "register", "--dir", tre(), "--nonce", "zz112233445566778899aabbccddeeff"},
      {"device", "install", "--dir", tre()},
      {"device", "install", "--dir", tre(), "--package", d_ / "missing.der"},
      {"device", "install", "--dir", tre(), "--package", d_ / "garbage.der"},
      {"device", "install", "--dir", tre(), "--package", d_ / "garbage.der", "--replacing",
       "bad id with spaces"},
      {"device", "install", "--dir", tre(), "--package", d_ / "garbage.der", "--replacing", kPcid},
      {"device", "install", "--dir", tre(), "--package", d_ / "garbage.der", "--discard-report",
       d_ / "old.json"},
      {"device", "activate", "--dir", tre()},
      {"device", "activate", "--dir", tre(), "--id", "bad id with spaces"},
      {"device", "activate", "--dir", tre(), "--id", kPcid, "--sequence", "5"},
      {"device", "block", "--dir", tre(), "--id", kPcid, "--signer", d_ / "nobody"},
      {"device", "block", "--dir", tre(), "--id", kPcid, "--signer", d_ / "sho-a", "--sequence",
       "-1"},
      {"device", "authenticate", "--dir", tre(), "--rand", "00", "--autn",
       "00112233445566778899aabbccddeeff"},
      {"device", "authenticate", "--dir", tre(), "--rand", "00112233445566778899aabbccddeeff"},
      {"device", "authenticate", "--dir", tre(), "--rand", "00112233445566778899aabbccddeeff",
       "--autn", "00112233445566778899aabbccddeeffaa"},
      {"device", "attest", "--dir", tre(), "--nonce", "0011"},
      {"device", "attest", "--dir", tre()},
      {"device", "audit", "--dir", tre()},
      {"device", "instruct", "--dir", tre(), "--instruction", d_ / "garbage.json"},
      {"device", "fsck", "--dir", tre(), "--bogus"},
      {"device", "frobnicate", "--dir", tre()},
      // `device run`: everything is checked before the TRE is opened or the network is used.
      {"device", "run", "--vno", "https://127.0.0.1:1", "--trust", d_ / "ops/ca.pem"},
      {"device", "run", "--dir", tre(), "--trust", d_ / "ops/ca.pem"},
      {"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1"},
      {"device", "run", "--dir", tre(), "--vno", "http://127.0.0.1:1", "--trust",
       d_ / "ops/ca.pem"},
      {"device", "run", "--dir", tre(), "--vno", "not a url", "--trust", d_ / "ops/ca.pem"},
      {"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
       d_ / "missing.pem"},
      {"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
       d_ / "garbage.der"},
      {"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
       d_ / "ops/ca.pem", "--timeout", "0"},
      {"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
       d_ / "ops/ca.pem", "--timeout", "86401"},
      {"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
       d_ / "ops/ca.pem", "--timeout", "soon"},
      {"device", "run", "--dir", d_ / "nowhere", "--vno", "https://127.0.0.1:1", "--trust",
       d_ / "ops/ca.pem"},
      // --access direct (F3 without AKA) needs the DRF; the VNO only for the later attach.
      {"device", "run", "--dir", tre(), "--access", "direct", "--trust", d_ / "ops/ca.pem"},
      {"device", "run", "--dir", tre(), "--access", "direct", "--drf", "http://127.0.0.1:1",
       "--trust", d_ / "ops/ca.pem"},
      {"device", "run", "--dir", tre(), "--access", "direct", "--drf", "https://127.0.0.1:1",
       "--vno", "not a url", "--trust", d_ / "ops/ca.pem"},
      {"device", "run", "--dir", tre(), "--access", "3gpp", "--drf", "https://127.0.0.1:1", "--vno",
       "https://127.0.0.1:1", "--trust", d_ / "ops/ca.pem"},
      {"device", "run", "--dir", tre(), "--access", "wifi", "--drf", "https://127.0.0.1:1",
       "--trust", d_ / "ops/ca.pem"},
      // F3 over EAP: the access kind, the RADIUS server and its secret file.
      {"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
       d_ / "ops/ca.pem", "--access", "eap-aka", "--radius-secret-file", radius_secret()},
      {"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
       d_ / "ops/ca.pem", "--access", "eap-aka", "--radius", "127.0.0.1:1812"},
      {"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
       d_ / "ops/ca.pem", "--access", "eap-aka-prime", "--radius", "localhost:1812",
       "--radius-secret-file", radius_secret()},
      {"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
       d_ / "ops/ca.pem", "--access", "eap-aka", "--radius", "127.0.0.1:0", "--radius-secret-file",
       radius_secret()},
      {"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
       d_ / "ops/ca.pem", "--access", "eap-aka", "--radius", "127.0.0.1:1812",
       "--radius-secret-file", d_ / "missing.secret"},
      {"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
       d_ / "ops/ca.pem", "--access", "eap-aka", "--radius", "127.0.0.1:1812",
       "--radius-secret-file", radius_secret(), "--mnc-digits", "4"},
  };
  for (const auto& args : cases) {
    std::string line;
    for (const auto& a : args) line += a + " ";
    SCOPED_TRACE(line);
    const auto o = mcim(args);
    EXPECT_EQ(o.code, 2) << o.out << o.err;
    EXPECT_NE(o.err.find("mcim: error: "), std::string::npos);
    EXPECT_EQ(registry(), before);
  }
  EXPECT_FALSE(std::filesystem::exists(d_ / "tre2/state.sealed"));
  EXPECT_EQ(json_of(mcim({"device", "fsck", "--dir", tre(), "--json"}))["fsck"], "ok");
}

// A visited network that cannot be reached: the run is refused at its first step (exit 1), the
// code and the steps done so far printed, the TRE untouched.
TEST_F(DeviceCli, RunAgainstAnUnreachableNetworkIsRefusedAtTheFirstStep) {
  const std::string before = registry();
  const auto o = mcim({"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
                       d_ / "ops/ca.pem", "--timeout", "5", "--json"});
  EXPECT_EQ(o.code, 1) << o.out << o.err;
  const Json j = Json::parse(o.out);
  EXPECT_EQ(j["outcome"], "refused");
  EXPECT_EQ(j["code"], "io_error");
  EXPECT_TRUE(j["message"].get<std::string>().starts_with("attach_pcid: ")) << j.dump();
  EXPECT_TRUE(j["step"].empty());
  EXPECT_TRUE(j.contains("total_ms"));
  EXPECT_EQ(registry(), before);

  const auto text = mcim({"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1",
                          "--trust", d_ / "ops/ca.pem", "--timeout", "5"});
  EXPECT_EQ(text.code, 1);
  EXPECT_NE(text.out.find("outcome: refused\ncode: io_error\n"), std::string::npos) << text.out;
}

// Direct access to a DRF that cannot be reached: refused at connect_direct, nothing attached.
TEST_F(DeviceCli, RunOverDirectAccessToAnUnreachableDrfIsRefusedAtTheFirstStep) {
  const std::string before = registry();
  const auto o =
      mcim({"device", "run", "--dir", tre(), "--access", "direct", "--drf", "https://127.0.0.1:1",
            "--trust", d_ / "ops/ca.pem", "--timeout", "5", "--json"});
  EXPECT_EQ(o.code, 1) << o.out << o.err;
  const Json j = Json::parse(o.out);
  EXPECT_EQ(j["outcome"], "refused");
  EXPECT_EQ(j["code"], "io_error");
  EXPECT_TRUE(j["message"].get<std::string>().starts_with("connect_direct: ")) << j.dump();
  EXPECT_TRUE(j["step"].empty());
  EXPECT_EQ(registry(), before);
}

// F3 over EAP with an EAP peer that is not there: refused at the first step, attach_eap (exit 1),
// with the TRE untouched.
TEST_F(DeviceCli, RunOverEapWithoutAnEapPeerIsRefusedAtTheFirstStep) {
  const std::string before = registry();
  const auto o = mcim({"device", "run", "--dir", tre(), "--vno", "https://127.0.0.1:1", "--trust",
                       d_ / "ops/ca.pem", "--access", "eap-aka", "--radius", "127.0.0.1:1812",
                       "--radius-secret-file", radius_secret(), "--eapol-test",
                       d_ / "no-eapol-test", "--json"});
  EXPECT_EQ(o.code, 1) << o.out << o.err;
  const Json j = Json::parse(o.out);
  EXPECT_EQ(j["outcome"], "refused");
  EXPECT_EQ(j["code"], "not_found");
  EXPECT_TRUE(j["message"].get<std::string>().starts_with("attach_eap: eap: ")) << j.dump();
  EXPECT_EQ(o.out.find("radius-shared"), std::string::npos) << "the secret in the output";
  EXPECT_EQ(registry(), before);
}

TEST_F(DeviceCli, AnErrorIsMachineReadableWithJson) {
  const auto o = mcim({"device", "select", "--dir", tre(), "--id", "001020000000999", "--json"});
  EXPECT_EQ(o.code, 2);  // not_found: the id names nothing
  const Json e = Json::parse(o.out);
  EXPECT_EQ(e["error"]["code"], "not_found");
  const auto refused = mcim({"device", "delete", "--dir", tre(), "--id", kPcid, "--json"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_EQ(Json::parse(refused.out)["error"]["code"], "access_denied");
}

}  // namespace
}  // namespace mcim::cli
