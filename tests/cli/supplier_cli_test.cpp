// `mcim supplier manufacture` in-process: the bundle it writes (0600, decodable, OPc from the
// given OP), output that never carries K, OPc, OP or PIN, and bad input refused with exit 2, a
// message naming the option, and no bundle written.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../pki/pki_test_util.h"
#include "aka/milenage.h"
#include "cli_test_util.h"
#include "common/file.h"
#include "common/hex.h"
#include "pki/certificate.h"
#include "pki/signed_json.h"
#include "tre/bundle.h"

namespace mcim::cli {
namespace {

using pki::testing::TempDir;
using testing::mcim;
using testing::Outcome;

constexpr std::string_view kOpHex = "cdc202d5123e20f62b6d676ac72cb318";

std::string pin_of(const tre::SupplierBundle& b) {
  return std::string(tre::pin_text(b));
}

class SupplierCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(mcim({"pki", "ca", "--name", "Supplier Root", "--out", d_ / "root"}).code, 0);
    ASSERT_EQ(mcim({"pki", "ca", "--name", "Supplier CA", "--out", d_ / "supplier", "--parent",
                    d_ / "root"})
                  .code,
              0);
    ASSERT_EQ(mcim({"pki", "ca", "--name", "RO Root", "--out", d_ / "ro-root"}).code, 0);
    ASSERT_TRUE(write_file_atomic(d_ / "op.hex", std::string(kOpHex) + "\n", 0600));
  }

  // The happy-path arguments, with `drop` left out and `extra` appended.
  std::vector<std::string> args(const std::string& out, std::vector<std::string> extra = {},
                                const std::string& drop = "") {
    std::vector<std::pair<std::string, std::string>> base = {
        {"--ca", d_ / "supplier"},
        {"--pcid", "001010000000042"},
        {"--out", d_ / out},
        {"--ro-id", "ro.example"},
        {"--operator-roots", d_ / "ro-root/ca.pem"},
        {"--op-file", d_ / "op.hex"},
    };
    std::vector<std::string> a = {"supplier", "manufacture"};
    for (const auto& [option, value] : base) {
      if (option == drop) continue;
      a.push_back(option);
      a.push_back(value);
    }
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  bool exists(const std::string& name) {
    struct stat st {};
    return ::stat((d_ / name).c_str(), &st) == 0;
  }

  std::size_t issued() {
    auto index = read_text_file(d_ / "supplier/index.txt");
    return index ? static_cast<std::size_t>(std::count(index->begin(), index->end(), '\n')) : 0;
  }

  TempDir d_;
};

TEST_F(SupplierCli, ManufactureWritesABundleAndPrintsNoSecret) {
  const Outcome r = mcim(args("dev.bundle", {"--model", "meter-v2", "--json"}));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["bundle"], d_ / "dev.bundle");
  EXPECT_EQ(j["device_id"], "dev-001010000000042");
  EXPECT_EQ(j["model"], "meter-v2");
  EXPECT_EQ(j["pcid"], "001010000000042");
  EXPECT_EQ(j["ro_operator"], "ro.example");
  EXPECT_TRUE(j.contains("serial"));
  EXPECT_TRUE(j.contains("pcid_not_after"));

  struct stat st {};
  ASSERT_EQ(::stat((d_ / "dev.bundle").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto b = tre::read_bundle(d_ / "dev.bundle");
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(j["serial"], pki::serial_hex(b->platform_chain[0].get()));
  EXPECT_EQ(j["pcid_not_after"], pki::utc_text(b->pcid_not_after));
  const auto op = parse_hex_fixed<16>(kOpHex, "op");
  ASSERT_TRUE(op);
  EXPECT_EQ(b->opc.get(), aka::Milenage::compute_opc(b->k.get(), *op));
  EXPECT_EQ(b->platform_chain.size(), 2u);
  EXPECT_EQ(b->operator_roots.size(), 1u);
  EXPECT_EQ(pin_of(*b).size(), 8u);

  for (const std::string& secret :
       {to_hex(b->k.get()), to_hex(b->opc.get()), std::string(kOpHex), pin_of(*b)}) {
    EXPECT_EQ(r.out.find(secret), std::string::npos) << secret;
    EXPECT_EQ(r.err.find(secret), std::string::npos) << secret;
  }
}

TEST_F(SupplierCli, ExplicitValuesAndOpOnTheCommandLine) {
  const Outcome r =
      mcim(args("dev.bundle",
                {"--op", std::string(kOpHex), "--device-id", "meter-7", "--pin", "40414243",
                 "--days", "30", "--pcid-days", "10", "--ocsp-url", "http://127.0.0.1:9/ocsp"},
                "--op-file"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("device_id: meter-7"), std::string::npos) << r.out;
  auto b = tre::read_bundle(d_ / "dev.bundle");
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->device_id, "meter-7");
  EXPECT_EQ(pki::platform_device_id(b->platform_chain[0].get()), "meter-7");
  EXPECT_EQ(pin_of(*b), "40414243");
  for (const std::string& secret :
       {to_hex(b->k.get()), to_hex(b->opc.get()), std::string(kOpHex), std::string("40414243")}) {
    EXPECT_EQ(r.out.find(secret), std::string::npos) << secret;
    EXPECT_EQ(r.err.find(secret), std::string::npos) << secret;
  }
}

TEST_F(SupplierCli, BadInputExitsTwoNamingTheOptionAndWritesNothing) {
  ASSERT_TRUE(write_file_atomic(d_ / "empty.pem", std::string_view()));
  ASSERT_TRUE(write_file_atomic(d_ / "short.hex", std::string_view("cdc202\n")));
  const std::string op(kOpHex);
  struct Case {
    std::vector<std::string> argv;
    std::string option;
  };
  const std::vector<Case> cases = {
      {args("b", {}, "--ca"), "--ca"},
      {args("b", {}, "--pcid"), "--pcid"},
      {args("b", {}, "--ro-id"), "--ro-id"},
      {args("b", {}, "--operator-roots"), "--operator-roots"},
      {args("b", {}, "--op-file"), "--op"},
      {args("b", {"--op", op}), "--op, --op-file"},
      {args("b", {"--op", op.substr(2)}, "--op-file"), "--op"},
      {args("b", {"--op", std::string(32, 'x')}, "--op-file"), "--op"},
      {args("b", {"--op-file", d_ / "short.hex"}, "--op-file"), "--op-file"},
      {args("b", {"--op-file", d_ / "none.hex"}, "--op-file"), "--op-file"},
      {args("b", {"--pcid", "12345"}, "--pcid"), "--pcid"},
      {args("b", {"--pcid", "00101abc"}, "--pcid"), "--pcid"},
      {args("b", {"--pin", "123"}), "--pin"},
      {args("b", {"--pin", "12ab5678"}), "--pin"},
      {args("b", {"--device-id", "a,b"}), "--device-id"},
      {args("b", {"--model", "a b"}), "--model"},
      {args("b", {"--ro-id", "r\"o"}, "--ro-id"), "--ro-id"},
      {args("b", {"--days", "0"}), "--days"},
      {args("b", {"--days", "many"}), "--days"},
      {args("b", {"--pcid-days", "40000"}), "--pcid-days"},
      {args("b", {"--ocsp-url", "ftp://x"}), "--ocsp-url"},
      {args("b", {"--ca", d_ / "nowhere"}, "--ca"), "--ca"},
      {args("b", {"--operator-roots", d_ / "empty.pem"}, "--operator-roots"), "--operator-roots"},
      {args("b", {"--operator-roots", d_ / "supplier/ca.pem"}, "--operator-roots"),
       "--operator-roots"},
  };
  const std::size_t before = issued();
  for (const auto& c : cases) {
    const Outcome r = mcim(c.argv);
    EXPECT_EQ(r.code, 2) << c.option << ": " << r.err;
    EXPECT_NE(r.err.find(c.option), std::string::npos) << c.option << ": " << r.err;
    EXPECT_EQ(r.err.find(op), std::string::npos) << r.err;
    EXPECT_FALSE(exists("b")) << c.option;
  }
  // Refused before the CA certified anything.
  EXPECT_EQ(issued(), before);
}

TEST_F(SupplierCli, AnExistingOutIsNeverOverwritten) {
  ASSERT_TRUE(write_file_atomic(d_ / "taken", std::string_view("keep me"), 0600));
  const std::size_t before = issued();
  const Outcome r = mcim(args("taken", {"--json"}));
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["error"]["code"], "already_exists");
  EXPECT_NE(r.err.find("--out"), std::string::npos) << r.err;
  EXPECT_EQ(read_text_file(d_ / "taken").value_or(""), "keep me");
  EXPECT_EQ(issued(), before);
  // And a second manufacture into the same path as a first one is refused as well.
  ASSERT_EQ(mcim(args("dev.bundle")).code, 0);
  const auto first = read_file(d_ / "dev.bundle");
  EXPECT_EQ(mcim(args("dev.bundle")).code, 2);
  EXPECT_EQ(read_file(d_ / "dev.bundle").value_or(ByteVec{}), first.value_or(ByteVec{1}));
}

TEST_F(SupplierCli, MissingOutIsExitTwo) {
  const Outcome r = mcim(args("b", {}, "--out"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--out"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mcim::cli
