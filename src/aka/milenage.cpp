#include "aka/milenage.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "common/secure.h"

namespace mcim::aka {
namespace {

// Cyclic left rotation of a 128-bit big-endian value by r bits (TS 35.206 §4.1 "rot").
Block rotate_left(const Block& x, unsigned r) {
  r %= 128;
  if (r == 0) return x;
  const unsigned bytes = r / 8, bits = r % 8;
  Block out;
  for (unsigned i = 0; i < 16; ++i) {
    const std::uint8_t hi = x[(i + bytes) % 16];
    const std::uint8_t lo = x[(i + bytes + 1) % 16];
    out[i] = bits == 0 ? hi : static_cast<std::uint8_t>((hi << bits) | (lo >> (8 - bits)));
  }
  return out;
}

inline void xor_into(Block& a, const Block& b) {
  for (std::size_t i = 0; i < 16; ++i) a[i] ^= b[i];
}

Mac first_half(const Block& b) { return take<8>(ByteView(b)); }
Mac second_half(const Block& b) { return take<8>(ByteView(b), 8); }

}  // namespace

Result<void> MilenageConstants::validate() const {
  for (std::size_t i = 0; i < r.size(); ++i) {
    if (r[i] > 127) {
      return fail(ErrorCode::invalid_argument,
                  fmt::format("r{}: rotation must be 0..127 bits, got {}", i + 1, r[i]));
    }
  }
  return {};
}

Milenage::Milenage(const K128& k, const Opc& opc, const MilenageConstants& constants)
    : aes_(k), opc_(opc), constants_(constants) {
  for (std::size_t i = 0; i < 5; ++i) rotations_[i] = plan_rotation(constants_.r[i]);
}

Milenage::RotationPlan Milenage::plan_rotation(unsigned r) {
  r %= 128;
  RotationPlan p{};
  for (unsigned i = 0; i < 16; ++i) {
    p.shuffle_hi[i] = static_cast<std::uint8_t>((i + r / 8) % 16);
    p.shuffle_lo[i] = static_cast<std::uint8_t>((i + r / 8 + 1) % 16);
  }
  p.bits = r % 8;
  return p;
}

Milenage Milenage::with_op(const K128& k, const Op& op, const MilenageConstants& constants) {
  Opc opc = compute_opc(k, op);
  Milenage m(k, opc, constants);
  secure_wipe(opc);
  return m;
}

Milenage::~Milenage() { secure_wipe(opc_); }

Opc Milenage::compute_opc(const K128& k, const Op& op) {
  Opc opc = Aes128(k).encrypt(op);
  xor_into(opc, op);
  return opc;
}

Block Milenage::temp(const Rand& rand) const {
  Block in = xor_of(rand, opc_);
  Block t = aes_.encrypt(in);
  secure_wipe(in);
  return t;
}

Block Milenage::out1(const Block& temp, const Sqn& sqn, const Amf& amf) const {
  Block in1;
  std::memcpy(in1.data(), sqn.data(), 6);
  std::memcpy(in1.data() + 6, amf.data(), 2);
  std::memcpy(in1.data() + 8, in1.data(), 8);
  xor_into(in1, opc_);
  Block x = rotate_left(in1, constants_.r[0]);
  xor_into(x, temp);
  xor_into(x, constants_.c[0]);
  return x;
}

Block Milenage::out_input(const Block& temp, int index) const {
  Block x = rotate_left(xor_of(temp, opc_), constants_.r[index]);
  xor_into(x, constants_.c[index]);
  return x;
}

void Milenage::finish(Block& out) const { xor_into(out, opc_); }

Mac Milenage::f1(const Rand& rand, const Sqn& sqn, const Amf& amf) const {
  Block out = aes_.encrypt(out1(temp(rand), sqn, amf));
  finish(out);
  return first_half(out);
}

Mac Milenage::f1star(const Rand& rand, const Sqn& sqn, const Amf& amf) const {
  Block out = aes_.encrypt(out1(temp(rand), sqn, amf));
  finish(out);
  return second_half(out);
}

F2345 Milenage::f2345(const Rand& rand) const {
  const Block t = temp(rand);
  Block in[3] = {out_input(t, 1), out_input(t, 2), out_input(t, 3)};
  Block out[3];
  aes_.encrypt_blocks(in, out, 3);
  F2345 r;
  for (Block& o : out) finish(o);
  r.res = Res::of(ByteView(out[0]).subspan(8, 8));
  r.ak = take<6>(ByteView(out[0]));
  r.ck = out[1];
  r.ik = out[2];
  secure_wipe(in, sizeof in);
  secure_wipe(out, sizeof out);
  return r;
}

Ak Milenage::f5star(const Rand& rand) const {
  Block out = aes_.encrypt(out_input(temp(rand), 4));
  finish(out);
  return take<6>(ByteView(out));
}

VectorOutputs Milenage::vector_outputs(const Rand& rand, const Sqn& sqn, const Amf& amf) const {
  if (aes_.aesni_schedule() != nullptr) return vector_outputs_aesni(rand, sqn, amf);
  const Block t = temp(rand);
  Block in[4] = {out1(t, sqn, amf), out_input(t, 1), out_input(t, 2), out_input(t, 3)};
  Block out[4];
  aes_.encrypt_blocks(in, out, 4);
  for (Block& o : out) finish(o);
  VectorOutputs v;
  v.mac_a = first_half(out[0]);
  v.f2345.res = Res::of(ByteView(out[1]).subspan(8, 8));
  v.f2345.ak = take<6>(ByteView(out[1]));
  v.f2345.ck = out[2];
  v.f2345.ik = out[3];
  secure_wipe(in, sizeof in);
  secure_wipe(out, sizeof out);
  return v;
}

}  // namespace mcim::aka
