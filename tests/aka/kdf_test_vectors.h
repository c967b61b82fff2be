// Published test data for the key derivations of aka/kdf.h, as lowercase hex. Every table names
// the specification that defines the function and the public source the values were taken from;
// inputs and expected outputs are as those sources state them (no expected value here was
// computed for this project), except where a row says "by hand from the definition".
#pragma once

#include <array>
#include <string_view>

namespace mcim::aka::testdata {

// ---------------------------------------------------------------------------------------------
// CK' and IK' for EAP-AKA'.
// Ref: RFC 5448 §3.3 (= TS 33.402 Annex A.2, FC 0x20), test vectors of RFC 5448 Appendix C,
// repeated in RFC 9048 Appendix D. Transcriptions agreeing value for value: free5gc
// (util/ueauth/ueauth_test.go: case 1; ausf EAP-AKA' test: cases 1-3, its "case 4" repeats case
// 3), 1239t/swu-go (cases 1-4), and three more projects citing RFC 9048 for cases 3-4.
// Identity "0555444333222111" in all cases; the EAP keys that follow (K_encr, K_aut, K_re, MSK,
// EMSK) are not derived here. SQN xor AK is the first 6 octets of AUTN.
struct CkIkPrimeVector {
  std::string_view name;
  std::string_view network_name;  // access network identity, the KDF's P0
  std::string_view rand;
  std::string_view autn;
  std::string_view ik;
  std::string_view ck;
  std::string_view res;
  std::string_view ck_prime;
  std::string_view ik_prime;
};

inline constexpr std::array<CkIkPrimeVector, 4> kRfc5448Vectors = {{
    {.name = "case1_wlan",
     .network_name = "WLAN",
     .rand = "81e92b6c0ee0e12ebceba8d92a99dfa5",
     .autn = "bb52e91c747ac3ab2a5c23d15ee351d5",
     .ik = "9744871ad32bf9bbd1dd5ce54e3e2e5a",
     .ck = "5349fbe098649f948f5d2e973a81c00f",
     .res = "28d7b0f2a2ec3de5",
     .ck_prime = "0093962d0dd84aa5684b045c9edffa04",
     .ik_prime = "ccfc230ca74fcc96c0a5d61164f5a76c"},
    {.name = "case2_hrpd",
     .network_name = "HRPD",
     .rand = "81e92b6c0ee0e12ebceba8d92a99dfa5",
     .autn = "bb52e91c747ac3ab2a5c23d15ee351d5",
     .ik = "9744871ad32bf9bbd1dd5ce54e3e2e5a",
     .ck = "5349fbe098649f948f5d2e973a81c00f",
     .res = "28d7b0f2a2ec3de5",
     .ck_prime = "3820f0277fa5f77732b1fb1d90c1a0da",
     .ik_prime = "db94a0ab557ef6c9ab48619ca05b9a9f"},
    {.name = "case3_wlan_artificial",
     .network_name = "WLAN",
     .rand = "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0",
     .autn = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0",
     .ik = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0",
     .ck = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0",
     .res = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0",
     .ck_prime = "cd4c8e5c68f57dd1d7d7dfd0c538e577",
     .ik_prime = "3ece6b705dbbf7dfc459a11280c65524"},
    {.name = "case4_hrpd_artificial",
     .network_name = "HRPD",
     .rand = "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0",
     .autn = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0",
     .ik = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0",
     .ck = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0",
     .res = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0",
     .ck_prime = "8310a71ce6f754889613da8f64d5fb46",
     .ik_prime = "5adf14360ae838192db23f6fcb7f8c76"},
}};

// ---------------------------------------------------------------------------------------------
// XRES* (RES*) of 5G AKA.
// Ref: TS 33.501 Annex A.4 (FC 0x6B; the 128 least significant bits of the KDF output); serving
// network name per TS 33.501 §6.1.1.4 / TS 24.501 §9.12.1 (3-digit MNC).
struct XresStarVector {
  std::string_view name;
  std::string_view serving_network_name;
  std::string_view ck;
  std::string_view ik;
  std::string_view rand;
  std::string_view res;
  std::string_view xres_star;
};

inline constexpr std::array<XresStarVector, 2> kXresStarVectors = {{
    // Source: oxirush-security (Rust crate) README, "5G AKA" example; CK/IK/RAND/RES are the
    // MILENAGE outputs of TS 35.208 test set 1. The README states free5GC and CryptoMobile give
    // the same values.
    {.name = "ts35208_set1_plmn20893",
     .serving_network_name = "5G:mnc093.mcc208.3gppnetwork.org",
     .ck = "b40ba9a3c58b2a05bbf0d987b21bf8cb",
     .ik = "f769bcd751044604127672711c6d3441",
     .rand = "23553cbe9637a89d218ae64dae47bf35",
     .res = "a54211d5e3ba50bf",
     .xres_star = "5cc9527f4d21c43bee83a15443acf1c4"},
    // Source: wmnsk/MilenageKT (MilenageUnitTest.kt, computeResStar("001", "01")) with
    // K = OP = RAND = 00112233445566778899aabbccddeeff; the same XRES* is printed in a published
    // 5G AKA walk-through ("main.go output": UDM/AUSF/SEAF example, IMSI 001 01 0123456789).
    {.name = "milenagekt_dummy_plmn00101",
     .serving_network_name = "5G:mnc001.mcc001.3gppnetwork.org",
     .ck = "b379874b3d183d2a21291d439e7761e1",
     .ik = "f4706f66629cf7ddf881d80025bf1255",
     .rand = "00112233445566778899aabbccddeeff",
     .res = "700eb2300b2c4799",
     .xres_star = "31b6d938a5290ccc65bc829f9820a8d9"},
}};

// ---------------------------------------------------------------------------------------------
// KAUSF of 5G AKA.
// Ref: TS 33.501 Annex A.2 (FC 0x6A, P0 = serving network name, P1 = SQN xor AK).
struct KausfVector {
  std::string_view name;
  std::string_view serving_network_name;
  std::string_view ck;
  std::string_view ik;
  std::string_view sqn_xor_ak;
  std::string_view kausf;
};

inline constexpr std::array<KausfVector, 2> kKausfVectors = {{
    // Source: oxirush-security README (as above); SQN xor AK = ff9bb4d0b607 xor aa689c648370
    // (SQN and AK of TS 35.208 test set 1), as the README writes it.
    {.name = "ts35208_set1_plmn20893",
     .serving_network_name = "5G:mnc093.mcc208.3gppnetwork.org",
     .ck = "b40ba9a3c58b2a05bbf0d987b21bf8cb",
     .ik = "f769bcd751044604127672711c6d3441",
     .sqn_xor_ak = "55f328b43577",
     .kausf = "f2e35260f85194d4f891504d02111e56689ac23dd393bee3abbcc5bfbc013ef9"},
    // Source: frankurcrazy/helloworld 5g/keys/ReadMe.txt ("Test Algorithm" chain, PLMN 001.01):
    // SQN 0000000000ff, AK 030405060708, so SQN xor AK = 0304050607f7.
    {.name = "helloworld_readme_plmn00101",
     .serving_network_name = "5G:mnc001.mcc001.3gppnetwork.org",
     .ck = "0102030405060708090a0b0c0d0e0f00",
     .ik = "02030405060708090a0b0c0d0e0f0001",
     .sqn_xor_ak = "0304050607f7",
     .kausf = "20de4eb2b75c8dac301ad52773e2e37bd7b4b0c2fdb1c3751b98dd0df846aed5"},
}};

// ---------------------------------------------------------------------------------------------
// KASME of EPS AKA.
// Ref: TS 33.401 Annex A.2 (FC 0x10, P0 = serving network ID = PLMN ID, P1 = SQN xor AK); PLMN ID
// octets per TS 24.301 §9.9.3.32 / TS 24.008 §10.5.1.13. `mccmnc` is the PLMN written as
// digits: the test checks parse_plmn(mccmnc) == plmn before deriving.
struct KasmeVector {
  std::string_view name;
  std::string_view mccmnc;
  std::string_view plmn;
  std::string_view ck;
  std::string_view ik;
  std::string_view sqn;
  std::string_view ak;
  std::string_view kasme;
};

inline constexpr std::array<KasmeVector, 7> kKasmeVectors = {{
    // Source: OpenAirInterface openair-cn TEST/test_kdf.c (six do_derive_kasme cases, CK/IK/AK of
    // TS 35.208 test set 1). The first case is also in Open5GS tests/unit/security-test.c
    // (security_test3), its predecessor nextepc, and Ella Networks core (udm KASME test).
    // Note: OAI's comment calls 024830 "20834"; the octets decode to MCC 208, MNC 034.
    {.name = "oai_1_208034",
     .mccmnc = "208034",
     .plmn = "024830",
     .ck = "b40ba9a3c58b2a05bbf0d987b21bf8cb",
     .ik = "f769bcd751044604127672711c6d3441",
     .sqn = "fd8eef40df7d",
     .ak = "aa689c648370",
     .kasme = "238e457e0f758badbca8d34bb2612c10428d426757cb5553b2b184fa64bfc549"},
    {.name = "oai_2_20834",
     .mccmnc = "20834",
     .plmn = "02f843",
     .ck = "b40ba9a3c58b2a05bbf0d987b21bf8cb",
     .ik = "f769bcd751044604127672711c6d3441",
     .sqn = "fd8eef40df7d",
     .ak = "aa689c648370",
     .kasme = "bd7a0903a7d0f68767ee2f5c90cb7d7d835998d940afdbf73173e63567c5b894"},
    {.name = "oai_3_12345",
     .mccmnc = "12345",
     .plmn = "21f354",
     .ck = "b40ba9a3c58b2a05bbf0d987b21bf8cb",
     .ik = "f769bcd751044604127672711c6d3441",
     .sqn = "fd8eef40df7d",
     .ak = "aa689c648370",
     .kasme = "546a79bc6d1613a72a4d631ee0351d66036b2a0c44a3831be6d365e24f023013"},
    {.name = "oai_4_208034",
     .mccmnc = "208034",
     .plmn = "024830",
     .ck = "b40ba9a3c58b2a05bbf0d987b21bf8cb",
     .ik = "f769bcd751044604127672711c6d3441",
     .sqn = "ff9bb4d0b607",
     .ak = "aa689c648370",
     .kasme = "564cb4d2007e4f293b67d9b29392a64add4c776b133d895af6499aa6882aab62"},
    {.name = "oai_5_20834",
     .mccmnc = "20834",
     .plmn = "02f843",
     .ck = "b40ba9a3c58b2a05bbf0d987b21bf8cb",
     .ik = "f769bcd751044604127672711c6d3441",
     .sqn = "ff9bb4d0b607",
     .ak = "aa689c648370",
     .kasme = "34865eb0dc9a6d788a905c0514529bf588485da817ffbe92e9a9b4d033b8cc6f"},
    {.name = "oai_6_12345",
     .mccmnc = "12345",
     .plmn = "21f354",
     .ck = "b40ba9a3c58b2a05bbf0d987b21bf8cb",
     .ik = "f769bcd751044604127672711c6d3441",
     .sqn = "ff9bb4d0b607",
     .ak = "aa689c648370",
     .kasme = "9ea141da4b24cdebc8f5fb3f61a0511216681f121199b23ebcfacc75b358be43"},
    // Source: srsRAN_4G lib/test/common/test_security_kdf.cc (test_generate_k_asme), MCC 001
    // MNC 01 given as BCD integers; the octets 00f110 are their TS 24.301 encoding.
    {.name = "srsran_00101",
     .mccmnc = "00101",
     .plmn = "00f110",
     .ck = "7bc15d69309cf3ec5d324404edd6f0f9",
     .ik = "c15d69309cf3ec5d324404edd6f0f97b",
     .sqn = "0000000012d9",
     .ak = "5d69309cf3ec",
     .kasme = "d5ef4d8f33266902295d42f322a2f2cf11fb2ccc124c09b4d88d361597037990"},
}};

// ---------------------------------------------------------------------------------------------
// GSM conversion functions c2 (SRES from XRES) and c3 (Kc from CK, IK).
// Ref: TS 33.102 §6.8.1.2. RES/CK/IK are MILENAGE outputs of TS 35.208 §4.3 test sets; SRES
// ("SRES#1") and Kc are the GSM-MILENAGE outputs of TS 55.205 for the same K/RAND/OPc (55.205
// set 1 = 35.208 set 1, 55.205 set n = 35.208 set n+1 for n >= 2), both as transcribed in
// hostapd tests/test-milenage.c. Every row was also reproduced with osmo-auc-gen (libosmocore
// 1.7.0, `-3 -a milenage -k K -o OPc -r RAND`), which prints RES/CK/IK/SRES/Kc.
struct GsmConversionVector {
  std::string_view name;
  std::string_view res;
  std::string_view ck;
  std::string_view ik;
  std::string_view sres;
  std::string_view kc;
};

inline constexpr std::array<GsmConversionVector, 6> kGsmConversionVectors = {{
    {.name = "ts35208_set1",
     .res = "a54211d5e3ba50bf",
     .ck = "b40ba9a3c58b2a05bbf0d987b21bf8cb",
     .ik = "f769bcd751044604127672711c6d3441",
     .sres = "46f8416a",
     .kc = "eae4be823af9a08b"},
    {.name = "ts35208_set3",
     .res = "8011c48c0c214ed2",
     .ck = "5dbdbb2954e8f3cde665b046179a5098",
     .ik = "59a92d3b476a0443487055cf88b2307b",
     .sres = "8c308a5e",
     .kc = "aa01739b8caa976d"},
    {.name = "ts35208_set4",
     .res = "f365cd683cd92e96",
     .ck = "e203edb3971574f5a94b0d61b816345d",
     .ik = "0c4524adeac041c4dd830d20854fc46b",
     .sres = "cfbce3fe",
     .kc = "9a8ec95f408cc507"},
    {.name = "ts35208_set6",
     .res = "16c8233f05a0ac28",
     .ck = "3f8c7587fe8e4b233af676aede30ba3b",
     .ik = "a7466cc1e6b2a1337d49d3b66e95d7b4",
     .sres = "13688f17",
     .kc = "df75bc5ea899879f"},
    {.name = "ts35208_set19",
     .res = "28d7b0f2a2ec3de5",
     .ck = "5349fbe098649f948f5d2e973a81c00f",
     .ik = "9744871ad32bf9bbd1dd5ce54e3e2e5a",
     .sres = "8a3b8d17",
     .kc = "9a8d0e883ff0887a"},
    {.name = "ts35208_set20",
     .res = "a95100e2760952cd",
     .ck = "b5f2da03883b69f96bf52e029ed9ac45",
     .ik = "b4721368bc16ea67875c5598688bb0ef",
     .sres = "df58522f",
     .kc = "ed29b2f1c27f9f34"},
}};

// c2 for RES lengths other than 64 bits, by hand from the definition of TS 33.102 §6.8.1.2:
// XRES is zero-padded to 128 bits and its four 32-bit words are XORed together.
struct C2Vector {
  std::string_view name;
  std::string_view res;
  std::string_view sres;
};

inline constexpr std::array<C2Vector, 3> kC2ByHandVectors = {{
    // 32 bits: the three padding words are zero, so SRES = RES.
    {.name = "res32", .res = "a54211d5", .sres = "a54211d5"},
    // 128 bits: 6a3b9e2c ^ 15d47f08 ^ c3a1e95b ^ 7f2d8046 = c3638839.
    {.name = "res128", .res = "6a3b9e2c15d47f08c3a1e95b7f2d8046", .sres = "c3638839"},
    // 96 bits: 01020304 ^ 10203040 ^ a0b0c0d0 ^ 00000000 = b192f394.
    {.name = "res96", .res = "0102030410203040a0b0c0d0", .sres = "b192f394"},
}};

// ---------------------------------------------------------------------------------------------
// PLMN ID octets from MCC/MNC digits.
// Ref: TS 24.301 §9.9.3.32 and TS 24.008 §10.5.1.13, Figure 10.5.3: octet 1 = MCC2|MCC1,
// octet 2 = MNC3|MCC3 (MNC3 = 0xf for a 2-digit MNC), octet 3 = MNC2|MNC1 (high|low nibble).
// Sources for the octets: 00f110 (MCC 001, MNC 01, the test PLMN), 02f839 (208/93, free5gc test
// SUCI 01 02 f8 39 ...), 21f354 (123/45, gnbsim ngap_test.go encPLMNIdentity(123, 45)),
// 02f843 and 024830 (OAI test_kdf.c); 130014 (310/410) by hand from the figure.
struct PlmnVector {
  std::string_view mccmnc;
  std::string_view plmn;
};

inline constexpr std::array<PlmnVector, 6> kPlmnVectors = {{
    {.mccmnc = "00101", .plmn = "00f110"},
    {.mccmnc = "310410", .plmn = "130014"},
    {.mccmnc = "20893", .plmn = "02f839"},
    {.mccmnc = "12345", .plmn = "21f354"},
    {.mccmnc = "20834", .plmn = "02f843"},
    {.mccmnc = "208034", .plmn = "024830"},
}};

// Refused by parse_plmn with ErrorCode::invalid_argument.
inline constexpr std::array<std::string_view, 9> kBadPlmns = {
    "",         // empty
    "0010",     // 4 digits
    "0010123",  // 7 digits
    "00a01",    // letter
    "abcdef",   // letters only
    "001 01",   // separator
    "-0101",    // sign
    "00101\n",  // trailing newline
    "0x0101",   // hex prefix
};

}  // namespace mcim::aka::testdata
