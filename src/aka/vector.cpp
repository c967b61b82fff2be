#include "aka/vector.h"

#include <cassert>
#include <cstring>

#include "common/secure.h"

namespace mcim::aka {

Autn build_autn(const Sqn& sqn, const Ak& ak, const Amf& amf, const Mac& mac_a) {
  Autn autn;
  for (std::size_t i = 0; i < 6; ++i) autn[i] = static_cast<std::uint8_t>(sqn[i] ^ ak[i]);
  autn[6] = amf[0];
  autn[7] = amf[1];
  std::memcpy(autn.data() + 8, mac_a.data(), 8);
  return autn;
}

AuthVector make_vector(const Algorithm& algo, const Rand& rand, const Sqn& sqn, const Amf& amf) {
  assert(algo.usable_for_av());
  const VectorOutputs out = algo.vector_outputs(rand, sqn, amf);
  return AuthVector{.rand = rand,
                    .xres = out.f2345.res,
                    .ck = out.f2345.ck,
                    .ik = out.f2345.ik,
                    .autn = build_autn(sqn, out.f2345.ak, amf, out.mac_a),
                    .ak = out.f2345.ak,
                    .mac_a = out.mac_a,
                    .sqn = sqn,
                    .amf = amf};
}

Auts make_auts(const Algorithm& algo, const Rand& rand, const Sqn& sqn_ms) {
  const Ak ak_star = algo.f5star(rand);
  const Mac mac_s = algo.f1star(rand, sqn_ms, kResyncAmf);
  Auts auts;
  for (std::size_t i = 0; i < 6; ++i) auts[i] = static_cast<std::uint8_t>(sqn_ms[i] ^ ak_star[i]);
  std::memcpy(auts.data() + 6, mac_s.data(), 8);
  return auts;
}

Result<Sqn> recover_sqn_ms(const Algorithm& algo, const Rand& rand, const Auts& auts) {
  const Ak ak_star = algo.f5star(rand);
  Sqn sqn_ms;
  for (std::size_t i = 0; i < 6; ++i) sqn_ms[i] = static_cast<std::uint8_t>(auts[i] ^ ak_star[i]);
  const Mac expected = algo.f1star(rand, sqn_ms, kResyncAmf);
  if (!constant_time_equal(expected, ByteView(auts).subspan(6, 8))) {
    return fail(ErrorCode::mac_mismatch, "AUTS: MAC-S does not verify");
  }
  return sqn_ms;
}

Result<UsimAnswer> usim_authenticate(const Algorithm& algo, UsimSqn& state, const Rand& rand,
                                     const Autn& autn) {
  assert(algo.usable_for_av());
  F2345 out = algo.f2345(rand);
  Sqn sqn;
  for (std::size_t i = 0; i < 6; ++i) sqn[i] = static_cast<std::uint8_t>(autn[i] ^ out.ak[i]);
  const Amf amf{autn[6], autn[7]};
  const Mac xmac = algo.f1(rand, sqn, amf);
  if (!constant_time_equal(xmac, ByteView(autn).subspan(8, 8))) {
    secure_wipe(out.ck);
    secure_wipe(out.ik);
    return fail(ErrorCode::mac_mismatch, "AUTN: MAC-A does not verify");
  }
  if (auto refusal = state.check(sqn)) {
    secure_wipe(out.ck);
    secure_wipe(out.ik);
    return UsimAnswer{UsimSyncFailure{make_auts(algo, rand, state.sqn_ms()), *refusal}};
  }
  state.record(sqn);
  return UsimAnswer{UsimSuccess{out.res, out.ck, out.ik, sqn}};
}

}  // namespace mcim::aka
