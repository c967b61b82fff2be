// Cross-checks against libosmocore, an independent implementation Debian ships:
//  - 1000 random (K, OPc, SQN, RAND, AMF) tuples through the osmo-auc-gen program: RES, CK, IK,
//    AUTN, SRES and Kc must equal ours;
//  - resynchronisation both ways: AUTS made by our USIM side is accepted by `osmo-auc-gen -A`,
//    which reports the same SQN_MS as our home side and then generates the same next vector as
//    our HomeSqn after resynchronise();
//  - KASME against libosmogsm's osmo_kdf_kasme.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <sstream>
#include <string>

extern "C" {
#include <osmocom/crypt/kdf.h>
}

#include "aka/kdf.h"
#include "aka/milenage.h"
#include "aka/vector.h"
#include "common/hex.h"
#include "common/random.h"

namespace mcim::aka {
namespace {

constexpr const char* kOsmoAucGen = "/usr/bin/osmo-auc-gen";
constexpr int kTuples = 1000;

// Runs a command and returns its "Name:\tvalue" lines as a map, plus the exit status.
struct Output {
  int status = -1;
  std::map<std::string, std::string> fields;
};

Output run(const std::string& cmd) {
  Output out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return out;
  std::string text;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) text += buf;
  out.status = pclose(p);
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const auto colon = line.find(":\t");
    if (colon != std::string::npos) out.fields[line.substr(0, colon)] = line.substr(colon + 2);
  }
  return out;
}

std::string osmo_base(const K128& k, const Opc& opc) {
  return std::string(kOsmoAucGen) + " -3 -a milenage -k " + to_hex(k) + " -o " + to_hex(opc);
}

class OsmoAucGen : public ::testing::Test {
 protected:
  void SetUp() override {
    if (FILE* f = std::fopen(kOsmoAucGen, "r")) {
      std::fclose(f);
    } else {
      FAIL() << kOsmoAucGen << " missing: scripts/install-deps installs libosmocore-utils";
    }
  }
  OsRandom rng_;
};

TEST_F(OsmoAucGen, ThousandRandomVectorsAgree) {
  for (int i = 0; i < kTuples; ++i) {
    const auto k = rng_.draw<16>(), opc = rng_.draw<16>(), rand = rng_.draw<16>();
    const std::uint64_t sqn = from_be(rng_.draw<6>());
    const Amf amf = rng_.draw<2>();
    const AuthVector av = make_vector(Milenage(k, opc), rand, sqn_bytes(sqn), amf);

    const Output o = run(osmo_base(k, opc) + " -s " + std::to_string(sqn) + " -f " + to_hex(amf) +
                         " -r " + to_hex(rand));
    ASSERT_EQ(o.status, 0) << "tuple " << i;
    ASSERT_EQ(o.fields.at("SQN"), std::to_string(sqn)) << i;
    ASSERT_EQ(o.fields.at("RES"), to_hex(av.xres.view())) << i;
    ASSERT_EQ(o.fields.at("CK"), to_hex(av.ck)) << i;
    ASSERT_EQ(o.fields.at("IK"), to_hex(av.ik)) << i;
    ASSERT_EQ(o.fields.at("AUTN"), to_hex(av.autn)) << i;
    ASSERT_EQ(o.fields.at("SRES"), to_hex(c2_sres(av.xres))) << i;
    ASSERT_EQ(o.fields.at("Kc"), to_hex(c3_kc(av.ck, av.ik))) << i;
  }
}

TEST_F(OsmoAucGen, ResynchronisationBothWays) {
  const SqnPolicy policy;  // IND length 5, as osmo-auc-gen's default
  for (int i = 0; i < kTuples; ++i) {
    const auto k = rng_.draw<16>(), opc = rng_.draw<16>(), rand = rng_.draw<16>();
    const Milenage m(k, opc);
    // A USIM whose highest accepted SQN is random (below the top of the space).
    const std::uint64_t sqn_ms = from_be(rng_.draw<6>()) % (kSqnMax - 4096);
    const Auts auts = make_auts(m, rand, sqn_bytes(sqn_ms));
    const unsigned ind = rng_.draw<1>()[0] % 32;

    // Our AUTS, checked by osmo: it must accept it and find the same SQN_MS ...
    const Output o = run(osmo_base(k, opc) + " -f 8000 -A " + to_hex(auts) + " -r " + to_hex(rand) +
                         " -i " + std::to_string(ind));
    ASSERT_EQ(o.status, 0) << "osmo refused our AUTS, tuple " << i;
    ASSERT_EQ(o.fields.at("SQN.MS"), std::to_string(sqn_ms)) << i;

    // ... as does our home side, which then continues exactly as osmo does.
    auto recovered = recover_sqn_ms(m, rand, auts);
    ASSERT_TRUE(recovered.has_value()) << i;
    ASSERT_EQ(sqn_value(*recovered), sqn_ms) << i;
    HomeSqn he(policy, 0);
    he.resynchronise(*recovered);
    const Sqn next = *he.next(ind);
    ASSERT_EQ(o.fields.at("SQN"), std::to_string(sqn_value(next))) << i;
    const AuthVector av = make_vector(m, rand, next, Amf{0x80, 0x00});
    ASSERT_EQ(o.fields.at("AUTN"), to_hex(av.autn)) << i;

    // A USIM at SQN_MS accepts what osmo generated after the resynchronisation.
    UsimSqn usim(policy);
    usim.record(*recovered);
    auto osmo_autn = parse_hex_fixed<16>(o.fields.at("AUTN"), "osmo AUTN");
    ASSERT_TRUE(osmo_autn.has_value());
    auto answer = usim_authenticate(m, usim, rand, *osmo_autn);
    ASSERT_TRUE(answer.has_value() && std::holds_alternative<UsimSuccess>(*answer)) << i;
  }
}

TEST_F(OsmoAucGen, TamperedAutsIsRefusedByBoth) {
  const auto k = rng_.draw<16>(), opc = rng_.draw<16>(), rand = rng_.draw<16>();
  const Milenage m(k, opc);
  Auts auts = make_auts(m, rand, sqn_bytes(12345));
  auts[9] ^= 0x01;
  EXPECT_NE(run(osmo_base(k, opc) + " -A " + to_hex(auts) + " -r " + to_hex(rand)).status, 0);
  EXPECT_FALSE(recover_sqn_ms(m, rand, auts).has_value());
}

TEST(OsmoKdf, KasmeAgreesWithLibosmogsm) {
  OsRandom rng;
  for (const char* mccmnc : {"00101", "26201", "310410", "90170"}) {
    const PlmnId plmn = *parse_plmn(mccmnc);
    for (int i = 0; i < 200; ++i) {
      const auto ck = rng.draw<16>(), ik = rng.draw<16>();
      const auto sqn = rng.draw<6>(), ak = rng.draw<6>();
      Bytes<32> theirs{};
      osmo_kdf_kasme(ck.data(), ik.data(), plmn.data(), sqn.data(), ak.data(), theirs.data());
      ASSERT_EQ(to_hex(derive_kasme(ck, ik, plmn, xor_of(sqn, ak))), to_hex(theirs)) << mccmnc;
    }
  }
}

}  // namespace
}  // namespace mcim::aka
