#include "aka/tuak.h"

#include <algorithm>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "aka/keccak.h"
#include "common/secure.h"

namespace mcim::aka {
namespace {

// The 1600-bit INOUT string of TS 35.231 §6 as 200 bytes. The spec fills INOUT bit by bit with
// each value reversed (e.g. INOUT[0..255] = TOP[255..0]) and Keccak reads byte j as bits
// 8j..8j+7 least significant first; together that is each big-endian value stored byte-reversed.
using Block = Secret<200>;

constexpr std::size_t kTopOffset = 0;  // TOP or TOPc in; TOPc, MAC or RES out
constexpr std::size_t kInstanceOffset = 32;
constexpr std::size_t kAlgonameOffset = 33;
constexpr std::size_t kRandOffset = 40;
constexpr std::size_t kAmfOffset = 56;
constexpr std::size_t kSqnOffset = 58;
constexpr std::size_t kKeyOffset = 64;  // K, zero-extended to 256 bits; IK out
constexpr std::size_t kCkOffset = 32;
constexpr std::size_t kAkOffset = 96;
// The constant bits INOUT[768..772] and INOUT[1087]: SHAKE-style padding for a 1088-bit rate.
constexpr std::size_t kPadFirstOffset = 96;
constexpr std::size_t kPadLastOffset = 135;

constexpr std::string_view kAlgoname = "TUAK1.0";

// INSTANCE (TS 35.231 §6): bits 7-6 select the function, bits 5-3 the MAC or RES length,
// bit 2 a 256-bit CK, bit 1 a 256-bit IK, bit 0 a 256-bit K.
constexpr std::uint8_t kInstanceTopc = 0x00;
constexpr std::uint8_t kInstanceF1 = 0x00;
constexpr std::uint8_t kInstanceF1star = 0x80;
constexpr std::uint8_t kInstanceF2345 = 0x40;
constexpr std::uint8_t kInstanceF5star = 0xc0;
constexpr std::uint8_t kInstanceCk256 = 0x04;
constexpr std::uint8_t kInstanceIk256 = 0x02;
constexpr std::uint8_t kInstanceK256 = 0x01;

// The variable inputs of one Keccak run besides TOP(c) and K; empty views stay zero.
struct Message {
  explicit Message(std::uint8_t inst, ByteView r = {}, ByteView s = {}, ByteView a = {})
      : instance(inst), rand(r), sqn(s), amf(a) {}

  std::uint8_t instance;
  ByteView rand;
  ByteView sqn;
  ByteView amf;
};

void put_reversed(Bytes<200>& block, std::size_t offset, ByteView value) {
  std::reverse_copy(value.begin(), value.end(), block.begin() + offset);
}

VarBytes get_reversed(const Bytes<200>& block, std::size_t offset, std::size_t size) {
  VarBytes out;
  out.size = static_cast<std::uint8_t>(size);
  std::reverse_copy(block.begin() + offset, block.begin() + offset + size, out.bytes.begin());
  return out;
}

template <std::size_t N>
Bytes<N> get_reversed(const Bytes<200>& block, std::size_t offset) {
  Bytes<N> out{};
  std::reverse_copy(block.begin() + offset, block.begin() + offset + N, out.begin());
  return out;
}

void fill_input(Bytes<200>& block, const Bytes<32>& top, const Message& m, ByteView k) {
  put_reversed(block, kTopOffset, top);
  block[kInstanceOffset] = m.instance;
  const auto* name = reinterpret_cast<const std::uint8_t*>(kAlgoname.data());
  put_reversed(block, kAlgonameOffset, ByteView(name, kAlgoname.size()));
  put_reversed(block, kRandOffset, m.rand);
  put_reversed(block, kAmfOffset, m.amf);
  put_reversed(block, kSqnOffset, m.sqn);
  put_reversed(block, kKeyOffset, k);
  block[kPadFirstOffset] = 0x1f;
  block[kPadLastOffset] = 0x80;
}

// Keccak-f applied `iterations` times to the block, with FIPS 202 little-endian lanes.
void permute(Bytes<200>& block, unsigned iterations) {
  KeccakState state{};
  for (std::size_t i = 0; i < block.size(); ++i) {
    state[i / 8] |= std::uint64_t{block[i]} << (8 * (i % 8));
  }
  for (unsigned n = 0; n < iterations; ++n) keccak_f1600(state);
  for (std::size_t i = 0; i < block.size(); ++i) {
    block[i] = static_cast<std::uint8_t>(state[i / 8] >> (8 * (i % 8)));
  }
  secure_wipe(&state, sizeof state);
}

// The output state must be wiped like K itself: Keccak-f is invertible, so it reveals K.
Block run(const Bytes<32>& top, const Message& m, ByteView k, unsigned iterations) {
  Block block;
  fill_input(block.mut(), top, m, k);
  permute(block.mut(), iterations);
  return block;
}

std::uint8_t key_bit(std::size_t k_size) { return k_size == 32 ? kInstanceK256 : 0; }

// Bits 5-3 of INSTANCE for a MAC or RES length (TS 35.231 §6.2, §6.4).
std::uint8_t length_bits(std::size_t bits) {
  switch (bits) {
    case 64: return 0x08;
    case 128: return 0x10;
    case 256: return 0x20;
    default: return 0x00;  // 32-bit RES
  }
}

bool one_of(std::size_t value, std::initializer_list<std::size_t> allowed) {
  return std::find(allowed.begin(), allowed.end(), value) != allowed.end();
}

Result<void> check_key(ByteView k) {
  if (!one_of(k.size(), {16, 32})) {
    return fail(ErrorCode::invalid_argument,
                fmt::format("k: must be 16 or 32 bytes, got {}", k.size()));
  }
  return {};
}

Result<void> check_iterations(unsigned iterations) {
  if (iterations < 1) {
    return fail(ErrorCode::invalid_argument, "keccak_iterations: must be at least 1, got 0");
  }
  return {};
}

Result<void> check_length(std::string_view name, std::size_t bits,
                          std::initializer_list<std::size_t> allowed) {
  if (one_of(bits, allowed)) return {};
  std::string list;
  for (std::size_t a : allowed) list += fmt::format("{}{}", list.empty() ? "" : ", ", a);
  return fail(ErrorCode::invalid_argument,
              fmt::format("{}: must be one of {} bits, got {}", name, list, bits));
}

Result<void> check_params(const TuakParams& p) {
  if (auto r = check_length("mac_bits", p.mac_bits, {64, 128, 256}); !r) return r;
  if (auto r = check_length("res_bits", p.res_bits, {32, 64, 128, 256}); !r) return r;
  if (auto r = check_length("ck_bits", p.ck_bits, {128, 256}); !r) return r;
  if (auto r = check_length("ik_bits", p.ik_bits, {128, 256}); !r) return r;
  return check_iterations(p.keccak_iterations);
}

void wipe(Tuak::Outputs& o) {
  secure_wipe(o.res.bytes);
  secure_wipe(o.ck.bytes);
  secure_wipe(o.ik.bytes);
  secure_wipe(o.ak);
}

}  // namespace

Result<Tuak> Tuak::create(ByteView k, const Bytes<32>& topc, TuakParams params) {
  if (auto r = check_key(k); !r) return std::unexpected(std::move(r.error()));
  if (auto r = check_params(params); !r) return std::unexpected(std::move(r.error()));
  return Tuak(k, topc, params);
}

Result<Bytes<32>> Tuak::compute_topc(ByteView k, const Bytes<32>& top, unsigned keccak_iterations) {
  if (auto r = check_key(k); !r) return std::unexpected(std::move(r.error()));
  if (auto r = check_iterations(keccak_iterations); !r)
    return std::unexpected(std::move(r.error()));
  const Message m(kInstanceTopc | key_bit(k.size()));
  return get_reversed<32>(run(top, m, k, keccak_iterations).get(), kTopOffset);
}

Tuak::Tuak(ByteView k, const Bytes<32>& topc, const TuakParams& params)
    : k_size_(k.size()), topc_(topc), params_(params) {
  std::copy(k.begin(), k.end(), k_.begin());
}

Tuak::~Tuak() {
  secure_wipe(k_);
  secure_wipe(topc_);
}

bool Tuak::usable_for_av() const {
  return params_.mac_bits == 64 && params_.ck_bits == 128 && params_.ik_bits == 128;
}

VarBytes Tuak::f1_full(const Rand& rand, const Sqn& sqn, const Amf& amf) const {
  const Message m(kInstanceF1 | length_bits(params_.mac_bits) | key_bit(k_size_), rand, sqn, amf);
  return get_reversed(run(topc_, m, key(), params_.keccak_iterations).get(), kTopOffset,
                      params_.mac_bits / 8);
}

VarBytes Tuak::f1star_full(const Rand& rand, const Sqn& sqn, const Amf& amf) const {
  const Message m(kInstanceF1star | length_bits(params_.mac_bits) | key_bit(k_size_), rand, sqn,
                  amf);
  return get_reversed(run(topc_, m, key(), params_.keccak_iterations).get(), kTopOffset,
                      params_.mac_bits / 8);
}

Tuak::Outputs Tuak::f2345_full(const Rand& rand) const {
  std::uint8_t instance = kInstanceF2345 | length_bits(params_.res_bits) | key_bit(k_size_);
  if (params_.ck_bits == 256) instance |= kInstanceCk256;
  if (params_.ik_bits == 256) instance |= kInstanceIk256;
  const Block out = run(topc_, Message(instance, rand), key(), params_.keccak_iterations);
  return Outputs{.res = get_reversed(out.get(), kTopOffset, params_.res_bits / 8),
                 .ck = get_reversed(out.get(), kCkOffset, params_.ck_bits / 8),
                 .ik = get_reversed(out.get(), kKeyOffset, params_.ik_bits / 8),
                 .ak = get_reversed<6>(out.get(), kAkOffset)};
}

Mac Tuak::f1(const Rand& rand, const Sqn& sqn, const Amf& amf) const {
  return take<8>(f1_full(rand, sqn, amf).view());
}

Mac Tuak::f1star(const Rand& rand, const Sqn& sqn, const Amf& amf) const {
  return take<8>(f1star_full(rand, sqn, amf).view());
}

F2345 Tuak::f2345(const Rand& rand) const {
  Outputs full = f2345_full(rand);
  F2345 out{.res = full.res,
            .ck = take<16>(full.ck.view()),
            .ik = take<16>(full.ik.view()),
            .ak = full.ak};
  wipe(full);
  return out;
}

Ak Tuak::f5star(const Rand& rand) const {
  const Message m(kInstanceF5star | key_bit(k_size_), rand);
  return get_reversed<6>(run(topc_, m, key(), params_.keccak_iterations).get(), kAkOffset);
}

}  // namespace mcim::aka
