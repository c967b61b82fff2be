// Known-answer tests for aka/eap_keys.h: the FIPS 186-2 PRF against RFC 4186 Appendix A and the
// NIST example, EAP-AKA' keys against RFC 5448 Appendix C (from CK'/IK' and from CK/IK). RFC 4187
// publishes no EAP-AKA vector: MK's input order and the split are checked here, and the whole
// derivation against hostapd in tests/interop/eap_interop_test.cpp (EapRelay.*).
#include "aka/eap_keys.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <ostream>
#include <string>
#include <string_view>

#include "common/hex.h"
#include "eap_keys_test_vectors.h"
#include "kdf_test_vectors.h"
#include "test_hex.h"

namespace mcim::aka::testdata {
void PrintTo(const FipsPrfVector& row, std::ostream* os) { *os << row.name; }
void PrintTo(const EapAkaPrimeVector& row, std::ostream* os) { *os << row.name; }
}  // namespace mcim::aka::testdata

namespace mcim::aka {
namespace {

using testdata::EapAkaPrimeVector;
using testdata::FipsPrfVector;

using testdata::fixed;

template <std::size_t N>
std::string hex_of(const Secret<N>& s) {
  return to_hex(s.get());
}

template <class Row>
std::string row_name(const testing::TestParamInfo<Row>& row) {
  return std::string(row.param.name);
}

// --- FIPS 186-2 PRF ----------------------------------------------------------------------------

class FipsPrfTest : public testing::TestWithParam<FipsPrfVector> {};

TEST_P(FipsPrfTest, MatchesPublishedOutput) {
  const FipsPrfVector& v = GetParam();
  const SecretBytes out = fips186_2_prf(fixed<20>(v.xkey, "xkey"), v.output.size() / 2);
  EXPECT_EQ(to_hex(out.view()), v.output);
}

INSTANTIATE_TEST_SUITE_P(Rfc4186AppendixA, FipsPrfTest,
                         testing::ValuesIn(testdata::kFipsPrfVectors), row_name<FipsPrfVector>);

// Any length is a prefix of the longer output: rounds are cut, not re-seeded.
TEST(FipsPrf, ShorterOutputIsAPrefix) {
  const Bytes<20> xkey = fixed<20>(testdata::kFipsPrfVectors[0].xkey, "xkey");
  const std::string full = to_hex(fips186_2_prf(xkey, 160).view());
  for (std::size_t n : {0u, 1u, 20u, 39u, 40u, 41u, 159u}) {
    EXPECT_EQ(to_hex(fips186_2_prf(xkey, n).view()), full.substr(0, 2 * n)) << n;
  }
}

// --- EAP-AKA (RFC 4187 §7) ---------------------------------------------------------------------

Bytes<20> openssl_sha1(std::string_view data) {
  Bytes<20> out{};
  unsigned int len = 0;
  EXPECT_EQ(EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha1(), nullptr), 1);
  return out;
}

// MK = SHA1(Identity | IK | CK): IK before CK, the identity's octets without a NUL.
TEST(EapAkaKeys, MasterKeyHashesIdentityThenIkThenCk) {
  const Ck ck = fixed<16>("5349fbe098649f948f5d2e973a81c00f", "ck");
  const Ik ik = fixed<16>("9744871ad32bf9bbd1dd5ce54e3e2e5a", "ik");
  const std::string identity = "0001019900000001@wlan.mnc001.mcc001.3gppnetwork.org";
  std::string input = identity;
  input.append(reinterpret_cast<const char*>(ik.data()), ik.size());
  input.append(reinterpret_cast<const char*>(ck.data()), ck.size());
  const EapAkaKeys keys = derive_eap_aka_keys(identity, ck, ik);
  EXPECT_EQ(hex_of(keys.mk), to_hex(openssl_sha1(input)));
  EXPECT_NE(hex_of(derive_eap_aka_keys(identity, ik, ck).mk), hex_of(keys.mk))
      << "CK and IK are not symmetric in MK";
  EXPECT_NE(hex_of(derive_eap_aka_keys("6" + identity.substr(1), ck, ik).mk), hex_of(keys.mk));
}

// K_encr | K_aut | MSK | EMSK are the PRF's first 160 octets over MK, in that order.
TEST(EapAkaKeys, SplitsThePrfOutputInRfcOrder) {
  const EapAkaKeys keys = derive_eap_aka_keys("0555444333222111", Ck{}, Ik{});
  const std::string block = to_hex(fips186_2_prf(keys.mk.get(), 160).view());
  EXPECT_EQ(hex_of(keys.k_encr), block.substr(0, 32));
  EXPECT_EQ(hex_of(keys.k_aut), block.substr(32, 32));
  EXPECT_EQ(hex_of(keys.msk), block.substr(64, 128));
  EXPECT_EQ(hex_of(keys.emsk), block.substr(192, 128));
}

// --- EAP-AKA' (RFC 9048 §3.3) ------------------------------------------------------------------

void expect_keys(const EapAkaPrimeKeys& got, const EapAkaPrimeVector& v) {
  EXPECT_EQ(hex_of(got.k_encr), v.k_encr);
  EXPECT_EQ(hex_of(got.k_aut), v.k_aut);
  EXPECT_EQ(hex_of(got.k_re), v.k_re);
  EXPECT_EQ(hex_of(got.msk), v.msk);
  EXPECT_EQ(hex_of(got.emsk), v.emsk);
}

class EapAkaPrimeTest : public testing::TestWithParam<EapAkaPrimeVector> {};

TEST_P(EapAkaPrimeTest, FromCkIkPrimeMatchesRfc5448) {
  const EapAkaPrimeVector& v = GetParam();
  const CkIkPrime prime{fixed<16>(v.ck_prime, "ck_prime"), fixed<16>(v.ik_prime, "ik_prime")};
  expect_keys(derive_eap_aka_prime_keys(v.identity, prime), v);
}

// From the SIM's CK and IK, as a peer or a relay holds them: the CK'/IK' table of
// kdf_test_vectors.h lists the same four cases in the same order.
TEST_P(EapAkaPrimeTest, FromCkIkMatchesRfc5448) {
  const EapAkaPrimeVector& v = GetParam();
  const testdata::CkIkPrimeVector* in = nullptr;
  for (const auto& c : testdata::kRfc5448Vectors) {
    if (c.name == v.name) in = &c;
  }
  ASSERT_NE(in, nullptr) << "no CK/IK row named " << v.name;
  ASSERT_EQ(in->ck_prime, v.ck_prime);
  const Autn autn = fixed<16>(in->autn, "autn");
  expect_keys(
      derive_eap_aka_prime_keys(v.identity, fixed<16>(in->ck, "ck"), fixed<16>(in->ik, "ik"),
                                in->network_name, take<6>(ByteView(autn))),
      v);
}

INSTANTIATE_TEST_SUITE_P(Rfc5448AppendixC, EapAkaPrimeTest,
                         testing::ValuesIn(testdata::kEapAkaPrimeVectors),
                         row_name<EapAkaPrimeVector>);

}  // namespace
}  // namespace mcim::aka
