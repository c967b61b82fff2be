// `mcim operator mcim list|block|unblock|retire|delete|result` against the SHO of a running
// system (start_system in this process), with `mcim device manage` as the device's management
// round (F9): a device provisioned for real, then its operator manages its MCIM through the
// RO's DPF, each answer being the TRE's signed report. Bad input exits 2 and changes nothing at
// the SHO (no sequence used), the RO or the TRE; another operator's certificate is refused (1).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "../pki/pki_test_util.h"
#include "cli/up_command.h"
#include "cli_test_util.h"
#include "common/file.h"
#include "net/http_error.h"
#include "net/json_schema.h"
#include "pki/certificate.h"
#include "tre/bundle.h"
#include "tre/tre.h"

namespace mcim::cli {
namespace {

namespace fs = std::filesystem;
using net::Json;
using pki::testing::TempDir;
using testing::mcim;

std::string line_of(const std::vector<std::string>& args) {
  std::string line;
  for (const auto& a : args) line += a + " ";
  return line;
}

class OperatorCli : public ::testing::Test {
 protected:
  void SetUp() override {
    SystemOptions o;
    o.dir = dir_ / "system";
    o.log_level = "warn";
    auto system = start_system(o);
    ASSERT_TRUE(system) << system.error().message;
    system_ = std::move(*system);
    // F0, F1, F2: one device, registered by its owner and provisioned.
    auto made = system_->factory_client()->request(
        "POST", system_->url("supplier") + "/v1/batches",
        Json{{"batch_id", "op-1"}, {"first_pcid", o.pcid_prefix + "00000001"}, {"count", 1}}.dump(),
        net::kJsonContentType, {});
    ASSERT_TRUE(made) << made.error().message;
    ASSERT_EQ(made->status, 201) << made->body;
    std::string bundle;
    for (const auto& e : fs::directory_iterator(system_->batches_dir() + "/op-1/bundles")) {
      bundle = e.path().string();
    }
    auto b = tre::read_bundle(bundle);
    ASSERT_TRUE(b) << b.error().message;
    device_id_ = b->device_id;
    pcid_ = b->pcid;
    ASSERT_TRUE(write_file_atomic(dir_ / "pin", std::string(tre::pin_text(*b)) + "\n"));
    auto pem = pki::certificate_pem(b->platform_chain.front().get());
    ASSERT_TRUE(pem);
    ASSERT_TRUE(write_file_atomic(dir_ / "platform.pem", *pem));
    auto reg = mcim({"--json", "subscriber", "register", "--device-id", device_id_, "--pcid",
                     b->pcid, "--platform-cert", dir_ / "platform.pem", "--pin-file", dir_ / "pin",
                     "--sho", system_->url("sho"), "--trust", system_->tls_root_file(),
                     "--token-file", system_->owner_token_file()});
    ASSERT_EQ(reg.code, 0) << reg.out << reg.err;
    const Json registered = Json::parse(reg.out);
    imsi_ = registered["imsi"];
    tre_ = dir_ / "tre";
    ASSERT_EQ(mcim({"device", "init", "--dir", tre_, "--from", bundle}).code, 0);
    ASSERT_EQ(mcim({"device", "register", "--dir", tre_, "--nonce",
                    registered["registration_nonce"].get<std::string>()})
                  .code,
              0);
    auto on = mcim({"subscriber", "activate", "--device-id", device_id_, "--window", "600", "--sho",
                    system_->url("sho"), "--trust", system_->tls_root_file(), "--token-file",
                    system_->owner_token_file()});
    ASSERT_EQ(on.code, 0) << on.out << on.err;
    auto run = mcim({"device", "run", "--dir", tre_, "--vno", system_->url("vno"), "--trust",
                     system_->tls_root_file(), "--timeout", "60"});
    ASSERT_EQ(run.code, 0) << run.out << run.err;
  }

  std::string tls(const std::string& name) const {
    return system_->options().dir + "/pki/tls/" + name;
  }
  // The operator's staff: mTLS with the SHO's own client certificate.
  std::vector<std::string> staff(std::vector<std::string> args,
                                 const std::string& who = "sho-client") const {
    args.insert(args.begin(), {"--json", "operator", "mcim"});
    for (std::string extra :
         {std::string("--sho"), system_->url("sho"), std::string("--trust"),
          system_->tls_root_file(), std::string("--cert"), tls(who + ".pem"), std::string("--key"),
          tls(who + ".key"), std::string("--device-id"), device_id_}) {
      args.push_back(extra);
    }
    return args;
  }
  testing::Outcome manage() {
    return mcim({"--json", "device", "manage", "--dir", tre_, "--ro", system_->url("ro"), "--trust",
                 system_->tls_root_file()});
  }
  // Issues, lets the device run its round, then waits for the answer at the SHO.
  Json instruct(const std::vector<std::string>& args, int want_code) {
    auto issued = mcim(staff(args));
    EXPECT_EQ(issued.code, 0) << issued.out << issued.err;
    const Json queued = Json::parse(issued.out);
    EXPECT_EQ(queued.value("status", ""), "queued") << issued.out;
    auto round = manage();
    EXPECT_EQ(round.code, 0) << round.out << round.err;
    auto result = mcim(
        staff({"result", "--instruction-id", queued.value("instruction_id", "?"), "--wait", "20"}));
    EXPECT_EQ(result.code, want_code) << result.out << result.err;
    return Json::parse(result.out);
  }
  std::string tre_state() {
    auto r = mcim({"--json", "device", "list", "--dir", tre_});
    EXPECT_EQ(r.code, 0) << r.err;
    const Json list = Json::parse(r.out);
    for (const auto& c : list["credential"]) {
      if (c["id"] == imsi_) return c["state"];
    }
    return "absent";
  }
  std::uint64_t sequences_used() {
    auto n = system_->database("sho")->sqns().current("instruction-sequence:" + device_id_);
    EXPECT_TRUE(n);
    return n ? *n : 0;
  }

  TempDir dir_;
  std::unique_ptr<System> system_;
  std::string device_id_, pcid_, imsi_, tre_;
};

TEST_F(OperatorCli, ListsAndManagesItsMcimThroughTheDpf) {
  const Json list = instruct({"list"}, 0);
  EXPECT_EQ(list.value("outcome", ""), "ok") << list.dump();
  ASSERT_EQ(list["credentials"].size(), 1u) << list.dump();
  EXPECT_EQ(list["credentials"][0]["id"], imsi_);
  EXPECT_EQ(list["credentials"][0]["state"], "selected");
  // The MCIM carries connectivity: the TRE refuses to block it, and says so (exit 1).
  const Json selected = instruct({"block"}, 1);
  EXPECT_EQ(selected.value("outcome", ""), "transition_refused") << selected.dump();
  ASSERT_EQ(mcim({"device", "deselect", "--dir", tre_, "--id", imsi_}).code, 0);
  struct Row {
    const char* action;
    const char* state;
  };
  for (const Row& row : {Row{"block", "blocked"}, Row{"unblock", "activated"},
                         Row{"retire", "retired"}, Row{"delete", "deleted"}}) {
    SCOPED_TRACE(row.action);
    const Json done = instruct({row.action, "--imsi", imsi_}, 0);
    EXPECT_EQ(done.value("outcome", ""), "ok") << done.dump();
    EXPECT_EQ(done.value("state", ""), row.state) << done.dump();
    EXPECT_EQ(tre_state(), row.state);
  }
  // Nothing pending: a round applies nothing.
  auto idle = manage();
  ASSERT_EQ(idle.code, 0) << idle.err;
  EXPECT_EQ(Json::parse(idle.out).value("instructions", ""), "0") << idle.out;
  EXPECT_EQ(sequences_used(), 6u);
}

TEST_F(OperatorCli, BadInputExitsTwoAndChangesNothing) {
  const std::string state = tre_state();
  const std::vector<std::vector<std::string>> bad = {
      staff({"block", "--imsi", "12ab"}),
      staff({"block", "--imsi", "123"}),
      staff({"list", "--wait", "-1"}),
      staff({"list", "--wait", "601"}),
      staff({"result"}),
      staff({"result", "--instruction-id", "a b"}),
      {"operator", "mcim", "list", "--device-id", device_id_},  // no SHO, trust, certificate
      {"operator", "mcim", "list", "--sho", "http://127.0.0.1:1", "--trust", "x", "--cert", "y",
       "--key", "z", "--device-id", device_id_},
      {"operator", "mcim", "list", "--sho", system_->url("sho"), "--trust",
       system_->tls_root_file(), "--cert", "/nonexistent.pem", "--key", "/nonexistent.key",
       "--device-id", device_id_},
      {"operator", "mcim", "frobnicate"},
      // The device's round: no RO, not https, no trust, no TRE.
      {"device", "manage", "--dir", tre_, "--trust", system_->tls_root_file()},
      {"device", "manage", "--dir", tre_, "--ro", "http://127.0.0.1:1", "--trust",
       system_->tls_root_file()},
      {"device", "manage", "--dir", tre_, "--ro", system_->url("ro")},
      {"device", "manage", "--dir", dir_ / "no-tre", "--ro", system_->url("ro"), "--trust",
       system_->tls_root_file()},
  };
  for (const auto& args : bad) {
    const auto r = mcim(args);
    EXPECT_EQ(r.code, 2) << line_of(args) << "\n" << r.out << r.err;
  }
  // The SHO's 4xx for the input: an unknown device, an unknown instruction.
  auto unknown = staff({"list"});
  for (std::size_t i = 0; i + 1 < unknown.size(); ++i) {
    if (unknown[i] == "--device-id") unknown[i + 1] = "dev-nobody";
  }
  const auto nobody = mcim(unknown);
  EXPECT_EQ(nobody.code, 2) << nobody.out;
  EXPECT_NE(nobody.out.find("\"not_found\""), std::string::npos) << nobody.out;
  const auto no_such = mcim(staff({"result", "--instruction-id", "ins-0000000000000000"}));
  EXPECT_EQ(no_such.code, 2) << no_such.out;
  EXPECT_NE(no_such.out.find("\"not_found\""), std::string::npos) << no_such.out;
  // Another operator's certificate (the RO's): refused by the SHO, exit 1.
  const auto ro = mcim(staff({"list"}, "ro-client"));
  EXPECT_EQ(ro.code, 1) << ro.out << ro.err;
  EXPECT_NE(ro.out.find("\"access_denied\""), std::string::npos) << ro.out;
  // Nothing was issued: no sequence used, nothing pending for the device, its TRE as it was.
  EXPECT_EQ(sequences_used(), 0u);
  auto round = manage();
  ASSERT_EQ(round.code, 0) << round.err;
  EXPECT_EQ(Json::parse(round.out).value("instructions", ""), "0") << round.out;
  EXPECT_EQ(tre_state(), state);
}

// F5 on the command line: the owner reverts the device at its SHO (sho-1), the device's management
// round carries out the SHO's delete, the SHO hands the PCID to sho-2; the owner registers it
// there, and the device provisions again, now on sho-2's IMSI. Bad revert orders exit 2 and change
// nothing.
TEST_F(OperatorCli, RevertsToPristineAndProvisionsAtTheSecondSho) {
  auto owner = [&](std::vector<std::string> args, const std::string& sho = "sho") {
    args.insert(args.begin(), "--json");
    for (std::string extra :
         {std::string("--sho"), system_->url(sho), std::string("--trust"), system_->tls_root_file(),
          std::string("--token-file"), system_->owner_token_file()}) {
      args.push_back(extra);
    }
    return args;
  };
  auto revert = [&](std::vector<std::string> more, const std::string& device) {
    std::vector<std::string> args = {"subscriber", "revert", "--device-id", device};
    args.insert(args.end(), more.begin(), more.end());
    return owner(args);
  };
  const std::vector<std::vector<std::string>> bad = {
      revert({}, device_id_),                             // no --to
      revert({"--to", "a b"}, device_id_),                // not an id
      revert({"--to", "sho-2", "--status"}, device_id_),  // both
      revert({"--to", "sho-1"}, device_id_),              // the SHO itself (its 4xx)
      revert({"--to", "sho-2"}, "dev-nobody"),            // not_found
      revert({"--status"}, device_id_),                   // no revert yet: not_found
      {"subscriber", "revert", "--device-id", device_id_, "--to", "sho-2"},  // no SHO
  };
  for (const auto& args : bad) {
    const auto r = mcim(args);
    EXPECT_EQ(r.code, 2) << line_of(args) << "\n" << r.out << r.err;
  }
  EXPECT_EQ(sequences_used(), 0u);
  EXPECT_EQ(tre_state(), "selected");

  // The device ends its session: a selected MCIM cannot be deleted (rule delete-not-selected).
  ASSERT_EQ(mcim({"device", "deselect", "--dir", tre_, "--id", imsi_}).code, 0);
  auto ordered = mcim(revert({"--to", "sho-2"}, device_id_));
  ASSERT_EQ(ordered.code, 0) << ordered.out << ordered.err;
  EXPECT_EQ(Json::parse(ordered.out).value("status", ""), "queued") << ordered.out;
  EXPECT_EQ(mcim(revert({"--to", "sho-2"}, device_id_)).code, 2) << "a second revert in flight";
  auto round = manage();
  ASSERT_EQ(round.code, 0) << round.out << round.err;
  std::string status;
  for (int i = 0; i < 200 && status != "released"; ++i) {
    auto r = mcim(revert({"--status"}, device_id_));
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    status = Json::parse(r.out).value("status", "");
    if (status != "released") std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(status, "released");
  EXPECT_EQ(tre_state(), "deleted");
  auto reg = system_->database("ro")->registrations().find(pcid_);
  ASSERT_TRUE(reg && *reg);
  EXPECT_EQ((*reg)->sho, "sho-2");
  const auto gone = mcim(owner({"subscriber", "status", "--device-id", device_id_}));
  EXPECT_EQ(gone.code, 2) << gone.out;
  EXPECT_NE(gone.out.find("\"not_found\""), std::string::npos) << gone.out;

  // F1 and F2 again, towards sho-2.
  auto again = mcim(owner({"subscriber", "register", "--device-id", device_id_, "--pcid", pcid_,
                           "--platform-cert", dir_ / "platform.pem", "--pin-file", dir_ / "pin"},
                          "sho2"));
  ASSERT_EQ(again.code, 0) << again.out << again.err;
  const Json registered = Json::parse(again.out);
  const std::string new_imsi = registered["imsi"];
  EXPECT_TRUE(new_imsi.starts_with(system_->options().imsi_prefix2)) << new_imsi;
  ASSERT_EQ(mcim({"device", "register", "--dir", tre_, "--nonce",
                  registered["registration_nonce"].get<std::string>()})
                .code,
            0);
  ASSERT_EQ(
      mcim(owner({"subscriber", "activate", "--device-id", device_id_, "--window", "600"}, "sho2"))
          .code,
      0);
  auto run = mcim({"device", "run", "--dir", tre_, "--vno", system_->url("vno"), "--trust",
                   system_->tls_root_file(), "--timeout", "60"});
  ASSERT_EQ(run.code, 0) << run.out << run.err;
  auto st = mcim(owner({"subscriber", "status", "--device-id", device_id_}, "sho2"));
  ASSERT_EQ(st.code, 0) << st.out;
  EXPECT_EQ(Json::parse(st.out).value("status", ""), "active") << st.out;
}

}  // namespace
}  // namespace mcim::cli
