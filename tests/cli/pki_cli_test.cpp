// `mcim pki ca|issue|revoke|verify` in-process: files written, the verdicts and exit codes, and
// bad input refused with exit 2 and a message naming the argument or file.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../pki/pki_test_util.h"
#include "cli/app.h"
#include "cli_test_util.h"
#include "common/file.h"

namespace mcim::cli {
namespace {

using pki::testing::run_command;
using pki::testing::TempDir;

using testing::mcim;
using testing::Outcome;

class PkiCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(mcim({"pki", "ca", "--name", "Operator Root", "--out", d_ / "root"}).code, 0);
    ASSERT_EQ(mcim({"pki", "ca", "--name", "SHO CA", "--out", d_ / "sho", "--parent", d_ / "root",
                    "--ocsp-url", "http://127.0.0.1:1/ocsp"})
                  .code,
              0);
  }
  Outcome issue(const std::string& profile, const std::string& out,
                std::vector<std::string> extra = {}) {
    std::vector<std::string> a = {"pki", "issue", "--ca", d_ / "sho", "--profile", profile,
                                  "--subject", "CN=" + out + ",O=Test", "--out", d_ / out};
    a.insert(a.end(), extra.begin(), extra.end());
    return mcim(a);
  }
  Outcome verify(const std::string& cert) {
    return mcim({"pki", "verify", "--ca-file", d_ / "root/ca.pem", "--untrusted",
                 d_ / "sho/chain.pem", "--cert", d_ / cert, "--json"});
  }
  TempDir d_;
};

TEST_F(PkiCli, IssueWritesKeyAndCertThatVerifyHereAndWithOpenssl) {
  const auto r = issue("tls-server", "server", {"--san", "DNS:localhost", "--san", "IP:127.0.0.1"});
  ASSERT_EQ(r.code, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::stat((d_ / "server.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const auto v = verify("server.pem");
  ASSERT_EQ(v.code, 0) << v.err;
  EXPECT_EQ(nlohmann::json::parse(v.out)["status"], "valid");
  EXPECT_EQ(nlohmann::json::parse(v.out)["chain"], "3");
  const auto o = run_command("openssl verify -purpose sslserver -CAfile " + (d_ / "root/ca.pem") +
                             " -untrusted " + (d_ / "sho/ca.pem") + " " + (d_ / "server.pem"));
  EXPECT_EQ(o.status, 0) << o.output;
  // The key is a PKCS#8 P-256 key that openssl reads and matches to the certificate.
  const auto k = run_command("openssl pkey -in " + (d_ / "server.key") + " -noout -text");
  EXPECT_EQ(k.status, 0);
  EXPECT_NE(k.output.find("prime256v1"), std::string::npos) << k.output;
}

TEST_F(PkiCli, PlatformProfileNeedsDeviceIdAndModel) {
  auto r = issue("platform", "dev");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("device id"), std::string::npos) << r.err;
  r = issue("platform", "dev", {"--device-id", "dev-42", "--model", "meter-v2"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto t = run_command("openssl x509 -noout -ext subjectAltName -in " + (d_ / "dev.pem"));
  EXPECT_NE(t.output.find("urn:mcim:device:dev-42"), std::string::npos) << t.output;
  EXPECT_NE(t.output.find("urn:mcim:model:meter-v2"), std::string::npos) << t.output;
}

TEST_F(PkiCli, RevokeThenIndexSaysRevoked) {
  ASSERT_EQ(issue("tls-client", "client").code, 0);
  const auto r = mcim({"pki", "revoke", "--ca", d_ / "sho", "--cert", d_ / "client.pem",
                       "--reason", "keyCompromise"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto index = read_text_file(d_ / "sho/index.txt");
  ASSERT_TRUE(index.has_value());
  EXPECT_EQ(index->rfind("R\t", 0), 0u) << *index;
  EXPECT_NE(index->find("keyCompromise"), std::string::npos);
  // Revoking a certificate of another CA changes nothing.
  ASSERT_EQ(mcim({"pki", "issue", "--ca", d_ / "root", "--profile", "tls-client", "--subject",
                  "CN=other", "--out", d_ / "other"})
                .code,
            0);
  const auto before = read_text_file(d_ / "sho/index.txt");
  const auto bad = mcim({"pki", "revoke", "--ca", d_ / "sho", "--cert", d_ / "other.pem"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_EQ(read_text_file(d_ / "sho/index.txt").value_or("x"), before.value_or("y"));
}

TEST_F(PkiCli, VerifyRefusalsExitOneWithTheirCode) {
  ASSERT_EQ(issue("tls-client", "client").code, 0);
  // Trusting only the intermediate is not a path to a root.
  auto r = mcim({"pki", "verify", "--ca-file", d_ / "sho/ca.pem", "--cert", d_ / "client.pem",
                 "--json"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(nlohmann::json::parse(r.out)["error"]["code"], "chain_invalid");
  // Another root.
  ASSERT_EQ(mcim({"pki", "ca", "--name", "Stranger", "--out", d_ / "stranger"}).code, 0);
  r = mcim({"pki", "verify", "--ca-file", d_ / "stranger/ca.pem", "--untrusted",
            d_ / "sho/chain.pem", "--cert", d_ / "client.pem"});
  EXPECT_EQ(r.code, 1);
}

TEST_F(PkiCli, BadInputExitsTwo) {
  ASSERT_TRUE(write_file_atomic(d_ / "empty.pem", std::string_view()));
  ASSERT_TRUE(write_file_atomic(d_ / "junk.pem", std::string_view("-----BEGIN CERTIFICATE-----\nAAAA\n")));
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"pki", "ca", "--out", d_ / "x"}, "--name"},
      {{"pki", "ca", "--name", "X"}, "--out"},
      {{"pki", "ca", "--name", "X", "--out", d_ / "root"}, "already"},
      {{"pki", "ca", "--name", "X", "--out", d_ / "y", "--parent", d_ / "missing"}, "missing"},
      {{"pki", "ca", "--name", "a,b", "--out", d_ / "z"}, "--name"},
      {{"pki", "issue", "--ca", d_ / "sho", "--profile", "root-ca", "--subject", "CN=x", "--out",
        d_ / "x"},
       "--profile"},
      {{"pki", "issue", "--ca", d_ / "sho", "--profile", "tls-server", "--subject", "CN=x",
        "--out", d_ / "x"},
       "--san"},
      {{"pki", "issue", "--ca", d_ / "sho", "--profile", "tls-client", "--subject", "nonsense",
        "--out", d_ / "x"},
       "subject"},
      {{"pki", "issue", "--ca", d_ / "sho", "--profile", "tls-client", "--subject", "CN=x",
        "--days", "0", "--out", d_ / "x"},
       "--days"},
      {{"pki", "issue", "--ca", d_ / "nowhere", "--profile", "tls-client", "--subject", "CN=x",
        "--out", d_ / "x"},
       "nowhere"},
      {{"pki", "revoke", "--ca", d_ / "sho", "--cert", d_ / "empty.pem"}, "empty"},
      {{"pki", "revoke", "--ca", d_ / "sho", "--cert", d_ / "junk.pem", "--reason", "bored"},
       "--reason"},
      {{"pki", "verify", "--ca-file", d_ / "junk.pem", "--cert", d_ / "root/ca.pem"}, "junk.pem"},
      {{"pki", "verify", "--ca-file", d_ / "sho/ca.key", "--cert", d_ / "root/ca.pem"}, "ca.key"},
      {{"pki", "verify", "--ca-file", d_ / "root/ca.pem", "--cert", d_ / "sho/ca.key"}, "ca.key"},
      {{"pki", "verify", "--ca-file", d_ / "root/ca.pem"}, "--cert"},
  };
  for (const auto& [args, names] : cases) {
    const auto r = mcim(args);
    EXPECT_EQ(r.code, 2) << names << ": " << r.err;
    EXPECT_NE(r.err.find(names), std::string::npos) << names << ": " << r.err;
  }
  // Nothing was created by the refused commands.
  EXPECT_NE(::access((d_ / "x.pem").c_str(), F_OK), 0);
  EXPECT_NE(::access((d_ / "z").c_str(), F_OK), 0);
}

}  // namespace
}  // namespace mcim::cli
