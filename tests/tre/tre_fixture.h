// A small world for TRE tests, benchmarks and the crash test: a supplier CA, an operator root
// with package-signing certificates for the RO ("ro-1") and two home operators ("sho-a",
// "sho-b"), a rogue root, supplier bundles, MCIM documents and packages, and the network side of
// AKA (vectors from the credential's K and OPc).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>

#include "../pki/pki_test_util.h"
#include "aka/milenage.h"
#include "aka/sqn.h"
#include "aka/vector.h"
#include "common/clock.h"
#include "common/random.h"
#include "pki/authority.h"
#include "pki/certificate.h"
#include "pki/package.h"
#include "tre/bundle.h"
#include "tre/instruction.h"
#include "tre/tre.h"

namespace mcim::tre::testing {

using pki::testing::TempDir;

inline const Bytes<16> kOp = {0xcd, 0xc2, 0x02, 0xd5, 0x12, 0x3e, 0x20, 0xf6,
                              0x2b, 0x6d, 0x67, 0x6a, 0xc7, 0x2c, 0xb3, 0x18};

struct Signer {
  pki::X509Ptr cert;
  pki::PkeyPtr key;
  std::string prefix;  // PREFIX.pem / PREFIX.key on disk, for the CLI
};

class World {
 public:
  World() {
    auto supplier =
        pki::Authority::create(dir_ / "supplier", "Supplier CA", nullptr, 3650, "", clock_, rng_);
    EXPECT_TRUE(supplier) << supplier.error().message;
    supplier_.emplace(std::move(*supplier));
    auto ops = pki::Authority::create(dir_ / "operators", "Operator Root", nullptr, 3650, "",
                                      clock_, rng_);
    EXPECT_TRUE(ops) << ops.error().message;
    operators_.emplace(std::move(*ops));
    auto rogue =
        pki::Authority::create(dir_ / "rogue", "Rogue Root", nullptr, 3650, "", clock_, rng_);
    EXPECT_TRUE(rogue) << rogue.error().message;
    rogue_.emplace(std::move(*rogue));
    for (const char* op : {"ro-1", "sho-a", "sho-b", "sho-c"})
      signers_[op] = issue(*operators_, op);
    rogue_signer_ = issue(*rogue_, "sho-a", "rogue-sho-a");
  }

  const std::string& dir() const { return dir_.path(); }
  std::string path(const std::string& name) const { return dir_ / name; }
  const pki::Authority& supplier() const { return *supplier_; }
  const pki::Authority& operators() const { return *operators_; }
  std::string operator_roots_pem() const { return operators_->dir() + "/ca.pem"; }
  const Signer& signer(const std::string& op) const { return signers_.at(op); }
  const Signer& rogue_signer() const { return rogue_signer_; }
  RandomSource& rng() { return rng_; }
  const Clock& clock() const { return clock_; }

  SupplierBundle bundle(const std::string& pcid, const std::string& device_id = "") {
    ManufactureSpec spec;
    spec.pcid = pcid;
    spec.device_id = device_id;
    spec.ro_operator = "ro-1";
    spec.op = Secret<16>(kOp);
    spec.pin = "12345678";
    spec.operator_roots = {operators_->cert()};
    auto b = manufacture(*supplier_, spec, clock_, rng_);
    EXPECT_TRUE(b) << b.error().message;
    return std::move(*b);
  }

  // A TRE from a fresh bundle of `pcid` (for `device_id`, or the bundle's own device) in a new
  // directory below dir(); nullopt after a failure, which the test has recorded.
  std::optional<Tre> make_tre(const std::string& pcid, const std::string& device_id = "") {
    const std::string tre_dir = path("tre-made-" + std::to_string(made_++));
    EXPECT_TRUE(Tre::init(Options{tre_dir}, bundle(pcid, device_id)));
    auto t = Tre::open(Options{tre_dir});
    EXPECT_TRUE(t) << t.error().message;
    if (!t) return std::nullopt;
    return std::move(*t);
  }

  // A MILENAGE MCIM for `device` owned by `owner`, K random.
  pki::McimDocument document(const std::string& device, const std::string& imsi,
                             const std::string& owner, std::uint64_t sequence,
                             const Bytes<16>& nonce) {
    pki::McimDocument d;
    d.package_id = "pkg-" + imsi + "-" + std::to_string(sequence);
    d.device_id = device;
    d.imsi = imsi;
    d.algorithm = pki::McimAlgorithm::milenage;
    Bytes<16> k{};
    rng_.fill(k);
    EXPECT_TRUE(d.set_key(k));
    d.opc = Secret<16>(aka::Milenage::compute_opc(k, kOp));
    d.amf = {0x80, 0x00};
    d.ind_bits = 5;
    d.policy.owner = owner;
    d.policy.operations = {pki::McimOperation::activate, pki::McimOperation::block,
                           pki::McimOperation::delete_, pki::McimOperation::retire,
                           pki::McimOperation::unblock};
    d.registration_nonce = nonce;
    const auto now = std::chrono::floor<std::chrono::seconds>(clock_.now());
    d.not_before = now - std::chrono::hours(1);
    d.not_after = now + std::chrono::hours(24 * 365);
    d.sequence = sequence;
    return d;
  }

  ByteVec seal(const pki::McimDocument& doc, const Signer& by, X509* platform_cert) {
    pki::PackageSigner s{by.cert.get(), by.key.get(), {}};
    auto pkg = pki::seal_package(doc, s, platform_cert);
    EXPECT_TRUE(pkg) << pkg.error().message;
    return pkg ? *pkg : ByteVec();
  }

  std::string instruction(const Signer& by, const std::string& device, const std::string& id,
                          Action action, std::uint64_t sequence) {
    Instruction ins{device, id, action, sequence,
                    std::chrono::floor<std::chrono::seconds>(clock_.now())};
    auto text = sign_instruction(ins, by.key.get(), {by.cert.get()});
    EXPECT_TRUE(text) << text.error().message;
    return text ? *text : std::string();
  }
  // The discovery instruction (F6, F9): the signer's own credentials.
  std::string list_instruction(const Signer& by, const std::string& device,
                               std::uint64_t sequence) {
    Instruction ins{device,
                    "-",
                    Action::block,
                    sequence,
                    std::chrono::floor<std::chrono::seconds>(clock_.now()),
                    true};
    auto text = sign_instruction(ins, by.key.get(), {by.cert.get()});
    EXPECT_TRUE(text) << text.error().message;
    return text ? *text : std::string();
  }

 private:
  Signer issue(const pki::Authority& ca, const std::string& op, std::string name = "") {
    if (name.empty()) name = op;
    pki::CertSpec s;
    s.profile = pki::Profile::package_signing;
    s.subject = "CN=package signer " + op + ",O=" + op;
    s.sans = {"URI:urn:mcim:operator:" + op};
    auto issued = ca.issue(s, clock_, rng_);
    EXPECT_TRUE(issued) << issued.error().message;
    Signer out{std::move(issued->cert), std::move(issued->key), dir_ / name};
    EXPECT_TRUE(pki::write_certificate(out.prefix + ".pem", out.cert.get()));
    EXPECT_TRUE(pki::write_private_key(out.prefix + ".key", out.key.get()));
    return out;
  }

  TempDir dir_;
  SystemClock clock_;
  OsRandom rng_;
  std::optional<pki::Authority> supplier_, operators_, rogue_;
  std::map<std::string, Signer> signers_;
  Signer rogue_signer_;
  int made_ = 0;  // make_tre's directories
};

// The home side of one credential: its algorithm and SEQ_HE, handing out vectors as an AuC does.
class Network {
 public:
  Network(const pki::McimDocument& doc) : home_(policy(doc.ind_bits)) {
    aka::K128 k{};
    std::copy_n(doc.k.get().begin(), 16, k.begin());
    algo_.emplace(k, doc.opc.get());
  }
  Network(const Bytes<16>& k, const Bytes<16>& opc, unsigned ind_bits) : home_(policy(ind_bits)) {
    algo_.emplace(k, opc);
  }
  aka::AuthVector next(RandomSource& rng, unsigned ind = 0) {
    aka::Rand rand{};
    rng.fill(rand);
    auto sqn = home_.next(ind);
    EXPECT_TRUE(sqn);
    return aka::make_vector(*algo_, rand, *sqn, {0x80, 0x00});
  }
  const aka::Milenage& algorithm() const { return *algo_; }
  aka::HomeSqn& home() { return home_; }

 private:
  static aka::SqnPolicy policy(unsigned ind_bits) {
    aka::SqnPolicy p;
    p.ind_bits = ind_bits;
    return p;
  }
  std::optional<aka::Milenage> algo_;
  aka::HomeSqn home_;
};

}  // namespace mcim::tre::testing
