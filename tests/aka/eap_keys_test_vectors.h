// Published test data for aka/eap_keys.h, as lowercase hex (spaces of the sources removed). Each
// table names the specification and where the values were taken from; no expected value here was
// computed for this project.
#pragma once

#include <array>
#include <string_view>

namespace mcim::aka::testdata {

// ---------------------------------------------------------------------------------------------
// The FIPS 186-2 PRF (change notice 1, SHA-1 G function, XSEED = 0).
// Ref: RFC 4186 Appendix A.5 (MK -> K_encr | K_aut | MSK | EMSK of a full authentication, 160
// octets) and A.9 (XKEY' -> MSK | EMSK of a fast re-authentication, 128 octets), read from the RFC
// text (FreeRADIUS doc/rfc/rfc4186.txt). EAP-AKA uses the same PRF and the same split (RFC 4187
// §7); RFC 4187 itself publishes no vectors. "nist_example": the 1024-bit DSA example of FIPS
// 186-2 (csrc.nist.gov Examples-1024bit.pdf, one round, 40 octets) as hostap's
// tests/test_eap_sim_common.c and crypto_module_tests.c carry it.
struct FipsPrfVector {
  std::string_view name;
  std::string_view xkey;
  std::string_view output;
};

inline constexpr std::array<FipsPrfVector, 3> kFipsPrfVectors = {{
    {.name = "rfc4186_a5_full_auth",
     .xkey = "e576d5ca332e9930018bf1baee2763c795b3c712",
     .output = "536e5ebc4465582aa6a8ec9986ebb620"                                  // K_encr
               "25af1942efcbf4bc72b3943421f2a974"                                  // K_aut
               "39d45aeaf4e30601983e972b6cfd46d1c363773365690d09cd44976b525f47d3"  // MSK
               "a60a985e955c53b090b2e4b73719196a402542968fd14a888f46b9a7886e4488"
               "5949eab0fff69d52315c6c634fd14a7f0d52023d56f79698fa6596abeed4f93f"  // EMSK
               "bb48eb534d985414ceed0d9a8ed33c387c9dfdab92ffbdf240fcecf65a2c93b9"},
    {.name = "rfc4186_a9_reauth",
     .xkey = "863dc12032e08343c1a2308db48377f6801f58d4",
     .output = "6263f614973895e1335f7e30cff028ee2176f519002c9abe732fe0ef00cf167c"  // MSK
               "756d9e4ced6d5ed640eb3fe38565ca076e7fb8a817cfe8d9adbce441d47c4f5e"
               "3d8ff7863a630b2b06e2cf209684c13f6b82f992f2b06f1b54bf51ef237f2a40"  // EMSK
               "1ef5e0d7e098a34c533eaebf34578854b772152620a777f0e0340884a294fb73"},
    {.name = "nist_example",
     .xkey = "bd029bbe7f51960bcf9edb2b61f06f0feb5a38b6",
     .output = "2070b3223dba372fde1c0ffc7b2e3b498b2606143c6c18bacb0f6c55babb13788e20d737a3275116"},
}};

// ---------------------------------------------------------------------------------------------
// EAP-AKA' keys.
// Ref: RFC 5448 Appendix C, repeated in RFC 9048 (the CK'/IK' half of these cases is
// kRfc5448Vectors in kdf_test_vectors.h). Transcriptions agreeing value for value: free5gc's
// ausf EAP-AKA' PRF test (cases 1-3; its case 4 repeats case 3), 1239t/swu-go (cases 1-4, as one
// concatenated key block), and two more projects citing RFC 9048 Appendix D for case 4.
// Identity "0555444333222111" in all cases (the RFC uses the EAP-AKA prefix for its examples).
struct EapAkaPrimeVector {
  std::string_view name;
  std::string_view identity;
  std::string_view ck_prime;
  std::string_view ik_prime;
  std::string_view k_encr;
  std::string_view k_aut;
  std::string_view k_re;
  std::string_view msk;
  std::string_view emsk;
};

inline constexpr std::array<EapAkaPrimeVector, 4> kEapAkaPrimeVectors = {{
    {.name = "case1_wlan",
     .identity = "0555444333222111",
     .ck_prime = "0093962d0dd84aa5684b045c9edffa04",
     .ik_prime = "ccfc230ca74fcc96c0a5d61164f5a76c",
     .k_encr = "766fa0a6c317174b812d52fbcd11a179",
     .k_aut = "0842ea722ff6835bfa2032499fc3ec23c2f0e388b4f07543ffc677f1696d71ea",
     .k_re = "cf83aa8bc7e0aced892acc98e76a9b2095b558c7795c7094715cb3393aa7d17a",
     .msk = "67c42d9aa56c1b79e295e3459fc3d187d42be0bf818d3070e362c5e967a4d544"
            "e8ecfe19358ab3039aff03b7c930588c055babee58a02650b067ec4e9347c75a",
     .emsk = "f861703cd775590e16c7679ea3874ada866311de290764d760cf76df647ea01c"
             "313f69924bdd7650ca9bac141ea075c4ef9e8029c0e290cdbad5638b63bc23fb"},
    {.name = "case2_hrpd",
     .identity = "0555444333222111",
     .ck_prime = "3820f0277fa5f77732b1fb1d90c1a0da",
     .ik_prime = "db94a0ab557ef6c9ab48619ca05b9a9f",
     .k_encr = "05ad73ac915fce89ac77e1520d82187b",
     .k_aut = "5b4acaef62c6ebb8882b2f3d534c4b35277337a00184f20ff25d224c04be2afd",
     .k_re = "3f90bf5c6e5ef325ff04eb5ef6539fa8cca8398194fbd00be425b3f40dba10ac",
     .msk = "87b321570117cd6c95ab6c436fb5073ff15cf85505d2bc5bb7355fc21ea8a757"
            "57e8f86a2b138002e05752913bb43b82f868a96117e91a2d95f526677d572900",
     .emsk = "c891d5f20f148a1007553e2dea555c9cb672e9675f4a66b4bafa027379f93aee"
             "539a5979d0a0042b9d2ae28bed3b17a31dc8ab75072b80bd0c1da612466e402c"},
    {.name = "case3_wlan_artificial",
     .identity = "0555444333222111",
     .ck_prime = "cd4c8e5c68f57dd1d7d7dfd0c538e577",
     .ik_prime = "3ece6b705dbbf7dfc459a11280c65524",
     .k_encr = "897d302fa2847416488c28e20dcb7be4",
     .k_aut = "c40700e7722483ae3dc7139eb0b88bb558cb3081eccd057f9207d1286ee7dd53",
     .k_re = "0a591a22dd8b5b1cf29e3d508c91dbbdb4aee23051892c42b6a2de66ea504473",
     .msk = "9f7dca9e37bb22029ed986e7cd09d4a70d1ac76d95535c5cac40a7504699bb89"
            "61a29ef6f3e90f183de5861ad1bedc81ce9916391b401aa006c98785a5756df7",
     .emsk = "724de00bdb9e568187be3fe746114557d5018779537ee37f4d3c6c738cb97b9d"
             "c651bc19bfadc344ffe2b52ca78bd8316b51dacc5f2b1440cb9515521cc7ba23"},
    {.name = "case4_hrpd_artificial",
     .identity = "0555444333222111",
     .ck_prime = "8310a71ce6f754889613da8f64d5fb46",
     .ik_prime = "5adf14360ae838192db23f6fcb7f8c76",
     .k_encr = "745e7439ba238f50fcac4d15d47cd1d9",
     .k_aut = "3e1d2aa4e677025cfd862a4be18361a13a645765571463df833a9759e8099879",
     .k_re = "99da835e2ae82462576fe6516fad1f802f0fa1191655dd0a273da96d04e0fcd3",
     .msk = "c6d3a6e0ceea951eb20d74f32c3061d0680a04b0b086ee8700ace3e0b95fa026"
            "83c287beee44432294ff98af26d2cc783bace75c4b0af7fdfeb5511ba8e4cbd0",
     .emsk = "7fb56813838adafa99d140c2f198f6dacebfb6afee444961105402b508c7f363"
             "352cb2919644b50463e6a69354150147ae09cbc54b8a651d8787a6893ed8536d"},
}};

}  // namespace mcim::aka::testdata
