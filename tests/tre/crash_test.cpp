// Crash consistency of the TRE (issue 5): a child process runs a script of state changes
// (installs, an install replacing another operator's MCIM (F4), lifecycle transitions,
// instructions, authentications that advance the SQN, pristine)
// and is killed with SIGKILL at random instants, at least 1000 times. After each kill the TRE must
// open without lockdown, fsck must pass (the library's and, now and then, `mcim device fsck`), and
// the state must equal the reference state right before or right after the operation the child
// had started: never torn, never older than before, so the SQN never goes backwards.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "tre/tre.h"
#include "tre_fixture.h"

namespace mcim::tre {
namespace {

using testing::Network;
using testing::World;
namespace fs = std::filesystem;

constexpr int kKills = 1000;

struct Op {
  enum class Kind {
    authenticate,
    record_registration,
    install,
    replace,
    apply,
    instruction,
    pristine
  };
  explicit Op(Kind k, std::string credential = {}) : kind(k), id(std::move(credential)) {}
  Kind kind;
  std::string id;
  std::string replaced;  // replace: the credential the install discards
  Action action = Action::activate;
  ByteVec package;
  std::string instruction;
  aka::Rand rand{};
  aka::Autn autn{};
  Bytes<16> nonce{};
};

// Runs one operation; true when the TRE accepted it. Every operation is exactly one commit.
bool run(Tre& tre, const Op& op) {
  switch (op.kind) {
    case Op::Kind::authenticate: {
      auto a = tre.authenticate(op.id, op.rand, op.autn);
      return a && std::holds_alternative<aka::UsimSuccess>(*a);
    }
    case Op::Kind::record_registration: return tre.record_registration(op.nonce).has_value();
    case Op::Kind::install: return tre.install(op.package).result.has_value();
    case Op::Kind::replace:
      return tre.install_replacing(op.package, op.replaced).install.result.has_value();
    case Op::Kind::apply: return tre.apply(op.action, op.id).has_value();
    case Op::Kind::instruction: return tre.apply_instruction(op.instruction).result.has_value();
    case Op::Kind::pristine: return tre.pristine().has_value();
  }
  return false;
}

// The logical state: every credential's lifecycle state and SQN, and the generation.
std::string digest(const Tre& tre) {
  const Status s = tre.status();
  std::string out = std::to_string(s.generation) + "|";
  for (const auto& c : s.credentials) {
    out += c.id + ":" + std::string(to_string(c.state)) + ":" + c.package_id + ":" +
           std::to_string(c.sqn_ms) + ";";
  }
  return out;
}

class CrashTest : public ::testing::Test {
 protected:
  World world_;
  std::mt19937_64 prng_{20261126};

  // One round's script from a pristine TRE: each cycle installs an operator's MCIM, replaces it
  // with another operator's (F4), moves them through the lifecycle, authenticates with the PCID
  // and the selected MCIM, and ends with a revert to pristine.
  std::vector<Op> script(const SupplierBundle& bundle, X509* platform, int cycles) {
    std::vector<Op> ops;
    Network pcid(bundle.k.get(), bundle.opc.get(), bundle.ind_bits);
    std::uint64_t seq_a = 0, seq_b = 0, ins = 0;
    auto auth = [&](Network& net, const std::string& id, int n) {
      for (int i = 0; i < n; ++i) {
        auto av = net.next(world_.rng(), static_cast<unsigned>(i % 4));
        Op op{Op::Kind::authenticate, id};
        op.rand = av.rand;
        op.autn = av.autn;
        ops.push_back(op);
      }
    };
    auto install = [&](const std::string& imsi, const std::string& owner, std::uint64_t seq,
                       const std::string& replaced = {}) {
      Bytes<16> nonce{};
      world_.rng().fill(nonce);
      Op reg{Op::Kind::record_registration};
      reg.nonce = nonce;
      ops.push_back(reg);
      auto doc = world_.document(bundle.device_id, imsi, owner, seq, nonce);
      Op op{replaced.empty() ? Op::Kind::install : Op::Kind::replace, imsi};
      op.replaced = replaced;
      op.package = world_.seal(doc, world_.signer(owner), platform);
      ops.push_back(op);
      return doc;
    };
    auto device = [&](Action a, const std::string& id) {
      Op op{Op::Kind::apply, id};
      op.action = a;
      ops.push_back(op);
    };
    auto instruct = [&](const std::string& owner, Action a, const std::string& id) {
      Op op{Op::Kind::instruction, id};
      op.instruction = world_.instruction(world_.signer(owner), bundle.device_id, id, a, ++ins);
      ops.push_back(op);
    };
    const std::string a = "001020000000001", b = "001030000000002";
    for (int c = 0; c < cycles; ++c) {
      auth(pcid, bundle.pcid, 2);
      auto doc_a = install(a, "sho-a", ++seq_a);
      Network net_a(doc_a);
      device(Action::activate, a);
      device(Action::select, a);
      auth(net_a, a, 4);
      device(Action::deselect, a);
      instruct("sho-a", Action::block, a);
      instruct("sho-a", Action::unblock, a);
      install(b, "sho-b", ++seq_b, a);  // F4: b installed and a discarded, in one commit
      device(Action::activate, b);
      instruct("sho-b", Action::retire, b);
      instruct("sho-b", Action::delete_, b);
      device(Action::select, bundle.pcid);
      auth(pcid, bundle.pcid, 2);
      device(Action::deselect, bundle.pcid);
      ops.push_back(Op{Op::Kind::pristine});
    }
    return ops;
  }
};

TEST_F(CrashTest, SigkillAtRandomInstantsNeverTearsTheState) {
  int kills = 0, rounds = 0, mid_operation = 0;
  std::uniform_int_distribution<int> delay_us(0, 12000);
  while (kills < kKills) {
    // A fresh TRE, its script, and the reference states from an uninterrupted run on a copy.
    const std::string dir = world_.path("crash-" + std::to_string(rounds));
    const std::string ref_dir = dir + "-ref";
    auto bundle = world_.bundle("00101" + std::to_string(1000000000 + rounds));
    ASSERT_TRUE(Tre::init(Options{dir}, bundle));
    fs::copy(dir, ref_dir, fs::copy_options::recursive);
    std::vector<Op> ops;
    std::vector<std::string> reference;
    {
      auto tre = Tre::open(Options{ref_dir});
      ASSERT_TRUE(tre) << tre.error().message;
      ops = script(bundle, tre->platform_certificate(), 3);
      reference.push_back(digest(*tre));
      for (std::size_t i = 0; i < ops.size(); ++i) {
        ASSERT_TRUE(run(*tre, ops[i])) << "reference run, operation " << i;
        reference.push_back(digest(*tre));
      }
    }
    ++rounds;

    std::size_t position = 0;  // operations committed so far
    std::uint64_t pcid_sqn = 0;
    while (position < ops.size() && kills < kKills) {
      int pipefd[2];
      ASSERT_EQ(::pipe(pipefd), 0);
      const pid_t pid = ::fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        ::close(pipefd[0]);
        auto tre = Tre::open(Options{dir});
        if (!tre) ::_exit(3);
        for (std::size_t i = tre->status().generation - 1; i < ops.size(); ++i) {
          const std::uint64_t started = i;
          if (::write(pipefd[1], &started, sizeof started) != sizeof started) ::_exit(4);
          if (!run(*tre, ops[i])) ::_exit(5);
        }
        ::_exit(0);
      }
      ::close(pipefd[1]);
      // The clock starts when the child has opened its TRE and begins its first operation, so
      // that the kills land among the operations however slow the start of a process is (a
      // loaded machine or a sanitizer build takes longer to fork and open than the whole range
      // of delays). The child that has nothing left to do closes the pipe without writing.
      std::optional<std::uint64_t> started;
      std::uint64_t value = 0;
      if (::read(pipefd[0], &value, sizeof value) == sizeof value) started = value;
      std::this_thread::sleep_for(std::chrono::microseconds(delay_us(prng_)));
      ::kill(pid, SIGKILL);
      int status = 0;
      ASSERT_EQ(::waitpid(pid, &status, 0), pid);
      while (::read(pipefd[0], &value, sizeof value) == sizeof value) started = value;
      ::close(pipefd[0]);
      if (WIFEXITED(status)) {
        ASSERT_EQ(WEXITSTATUS(status), 0) << "the child failed an operation on its own";
      } else {
        ++kills;
      }

      {
        auto tre = Tre::open(Options{dir});
        ASSERT_TRUE(tre) << tre.error().message;
        ASSERT_NE(tre->status().state, pki::TreState::lockdown)
            << "kill " << kills << ": " << tre->status().lockdown_reason;
        auto fsck = tre->fsck();
        ASSERT_TRUE(fsck) << "kill " << kills << ": " << fsck.error().message;
        const std::size_t now = tre->status().generation - 1;
        ASSERT_LE(now, ops.size());
        ASSERT_EQ(digest(*tre), reference[now]) << "kill " << kills << " at operation " << now;
        ASSERT_GE(now, position) << "the state went back";
        if (started) {
          ASSERT_TRUE(now == *started || now == *started + 1)
              << "started " << *started << ", state after " << now;
          mid_operation += now == *started;
        } else {
          ASSERT_EQ(now, position);
        }
        const auto pcid_now = tre->status().credentials.front().sqn_ms;
        ASSERT_GE(pcid_now, pcid_sqn) << "the PCID's SQN went back";
        pcid_sqn = pcid_now;
        position = now;
      }
      // Now and then the command line's fsck as well, as an operator would run it.
      if (kills % 100 == 0 && !WIFEXITED(status)) {
        const std::string cmd = std::string(MCIM_EXE) + " device fsck --dir " + dir + " >/dev/null";
        ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
      }
    }
    fs::remove_all(dir);
    fs::remove_all(ref_dir);
  }
  // The kills must have landed inside operations often enough to mean something.
  EXPECT_GT(mid_operation, kKills / 10) << "rounds " << rounds;
  std::printf("crash test: %d kills over %d rounds, %d inside an operation\n", kills, rounds,
              mid_operation);
}

}  // namespace
}  // namespace mcim::tre
