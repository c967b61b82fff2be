// The six TUAK test sets of TS 35.233 (§6.3 to §6.8), inputs and every output, as lowercase hex.
// Each set fixes one MAC length for f1/f1* and one RES/CK/IK length for f2-f5; f5* has no
// length parameter. Cross-checked against the transcriptions in libosmocore
// (tests/auth/tuak_test.c) and CryptoMobile (test/test_TUAK.py), which agree value for value.
#pragma once

#include <array>
#include <cstddef>
#include <string_view>

namespace mcim::aka::testdata {

struct TuakTestSet {
  int number;
  // Inputs
  std::string_view k;
  std::string_view rand;
  std::string_view sqn;
  std::string_view amf;
  std::string_view top;
  unsigned keccak_iterations;
  std::size_t mac_bits;
  std::size_t res_bits;
  std::size_t ck_bits;
  std::size_t ik_bits;
  // Outputs
  std::string_view topc;
  std::string_view f1;      // MAC-A
  std::string_view f1star;  // MAC-S
  std::string_view f2;      // RES
  std::string_view f3;      // CK
  std::string_view f4;      // IK
  std::string_view f5;      // AK
  std::string_view f5star;  // AK for resynchronisation
};

inline constexpr std::array<TuakTestSet, 6> kTuakTestSets = {{
    // Ref: TS 35.233 §6.3, test set 1: 128-bit K, 64-bit MAC, 32-bit RES.
    {.number = 1,
     .k = "abababababababababababababababab",
     .rand = "42424242424242424242424242424242",
     .sqn = "111111111111",
     .amf = "ffff",
     .top = "5555555555555555555555555555555555555555555555555555555555555555",
     .keccak_iterations = 1,
     .mac_bits = 64,
     .res_bits = 32,
     .ck_bits = 128,
     .ik_bits = 128,
     .topc = "bd04d9530e87513c5d837ac2ad954623a8e2330c115305a73eb45d1f40cccbff",
     .f1 = "f9a54e6aeaa8618d",
     .f1star = "e94b4dc6c7297df3",
     .f2 = "657acd64",
     .f3 = "d71a1e5c6caffe986a26f783e5c78be1",
     .f4 = "be849fa2564f869aecee6f62d4337e72",
     .f5 = "719f1e9b9054",
     .f5star = "e7af6b3d0e38"},
    // Ref: TS 35.233 §6.4, test set 2: 256-bit K, 128-bit MAC, 64-bit RES.
    {.number = 2,
     .k = "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0efeeedecebeae9e8e7e6e5e4e3e2e1e0",
     .rand = "0123456789abcdef0123456789abcdef",
     .sqn = "0123456789ab",
     .amf = "abcd",
     .top = "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
     .keccak_iterations = 1,
     .mac_bits = 128,
     .res_bits = 64,
     .ck_bits = 128,
     .ik_bits = 128,
     .topc = "305425427e18c503c8a4b294ea72c95d0c36c6c6b29d0c65de5974d5977f8524",
     .f1 = "c0b8c2d4148ec7aa5f1d78a97e4d1d58",
     .f1star = "ef81af7290f7842c6ceafa537fa0745b",
     .f2 = "e9d749dc4eea0035",
     .f3 = "a4cb6f6529ab17f8337f27baa8234d47",
     .f4 = "2274155ccf4199d5e2abcbf621907f90",
     .f5 = "480a9345cc1e",
     .f5star = "f84eb338848c"},
    // Ref: TS 35.233 §6.5, test set 3: inputs of set 2, 256-bit MAC, 256-bit IK.
    {.number = 3,
     .k = "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0efeeedecebeae9e8e7e6e5e4e3e2e1e0",
     .rand = "0123456789abcdef0123456789abcdef",
     .sqn = "0123456789ab",
     .amf = "abcd",
     .top = "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
     .keccak_iterations = 1,
     .mac_bits = 256,
     .res_bits = 64,
     .ck_bits = 128,
     .ik_bits = 256,
     .topc = "305425427e18c503c8a4b294ea72c95d0c36c6c6b29d0c65de5974d5977f8524",
     .f1 = "d97b75a1776065271b1e212bc3b1bf173f438b21e6c64a55a96c372e085e5cc5",
     .f1star = "427bbf07c6e3a86c54f8c5216499f3909a6fd4a164c9fe235b1550258111b821",
     .f2 = "07021c73e7635c7d",
     .f3 = "4d59ac796834eb85d11fa148a5058c3c",
     .f4 = "126d47500136fdc5ddfd14f19ebf16749ce4b6435323fbb5715a3a796a6082bd",
     .f5 = "1d6622c4e59a",
     .f5star = "f84eb338848c"},
    // Ref: TS 35.233 §6.6, test set 4: 128-bit K, 128-bit MAC, 128-bit RES.
    {.number = 4,
     .k = "b8da837a50652d6ac7c97da14f6acc61",
     .rand = "6887e55425a966bd86c9661a5fa72be8",
     .sqn = "0dea2ee2c5af",
     .amf = "df1e",
     .top = "0952be13556c32ebc58195d9dd930493e12a9003669988ffde5fa1f0fe35cc01",
     .keccak_iterations = 1,
     .mac_bits = 128,
     .res_bits = 128,
     .ck_bits = 128,
     .ik_bits = 128,
     .topc = "2bc16eb657a68e1f446f08f57c0efb1d493527a2e652ce281eb6ca0e4487760a",
     .f1 = "749214087958dd8f58bfcdf869d8ae3f",
     .f1star = "619e865afe80e382aee13063f9dfb56d",
     .f2 = "4041ce438e3e38e8aa96562eed83ac43",
     .f3 = "3e3bc01bea0cd914c4c2c83ce2d92757",
     .f4 = "666a8e6f577b1aa77b7fd53cebb8a3d6",
     .f5 = "1f880d005119",
     .f5star = "45e617d77fe5"},
    // Ref: TS 35.233 §6.7, test set 5: 256-bit K, 64-bit MAC, 256-bit RES and CK.
    {.number = 5,
     .k = "1574ca56881d05c189c82880f789c9cd4244955f4426aa2b69c29f15770e5aa5",
     .rand = "c570aac68cde651fb1e3088322498bef",
     .sqn = "c89bb71f3a41",
     .amf = "297d",
     .top = "e59f6eb10ea406813f4991b0b9e02f181edf4c7e17b480f66d34da35ee88c95e",
     .keccak_iterations = 1,
     .mac_bits = 64,
     .res_bits = 256,
     .ck_bits = 256,
     .ik_bits = 128,
     .topc = "3c6052e41532a28a47aa3cbb89f223e8f3aaa976aecd48bc3e7d6165a55eff62",
     .f1 = "d7340dad02b4cb01",
     .f1star = "c6021e2e66accb15",
     .f2 = "84d89b41db1867ffd4c7ba1d82163f4d526a20fbae5418fbb526940b1eeb905c",
     .f3 = "d419676afe5ab58c1d8bee0d43523a4d2f52ef0b31a4676a0c334427a988fe65",
     .f4 = "205533e505661b61d05cc0eac87818f4",
     .f5 = "d7b3d2d4980a",
     .f5star = "ca9655264986"},
    // Ref: TS 35.233 §6.8, test set 6: inputs of set 5, every output 256 bits, 2 Keccak
    // iterations (TOPc included).
    {.number = 6,
     .k = "1574ca56881d05c189c82880f789c9cd4244955f4426aa2b69c29f15770e5aa5",
     .rand = "c570aac68cde651fb1e3088322498bef",
     .sqn = "c89bb71f3a41",
     .amf = "297d",
     .top = "e59f6eb10ea406813f4991b0b9e02f181edf4c7e17b480f66d34da35ee88c95e",
     .keccak_iterations = 2,
     .mac_bits = 256,
     .res_bits = 256,
     .ck_bits = 256,
     .ik_bits = 256,
     .topc = "b04a66f26c62fcd6c82de22a179ab65506ecf47f56245cd149966cfa9cec7a51",
     .f1 = "90d2289ed1ca1c3dbc2247bb480d431ac71d2e4a7677f6e997cfddb0cbad88b7",
     .f1star = "427355dbac30e825063aba61b556e87583abac638e3ab01c4c884ad9d458dc2f",
     .f2 = "d67e6e64590d22eecba7324afa4af4460c93f01b24506d6e12047d789a94c867",
     .f3 = "ede57edfc57cdffe1aae75066a1b7479bbc3837438e88d37a801cccc9f972b89",
     .f4 = "48ed9299126e5057402fe01f9201cf25249f9c5c0ed2afcf084755daff1d3999",
     .f5 = "6aae8d18c448",
     .f5star = "8c5f33b61f4e"},
}};

}  // namespace mcim::aka::testdata
