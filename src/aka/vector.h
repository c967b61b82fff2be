// Authentication vectors and the two ends of TS 33.102 §6.3: the home environment builds
// AV = RAND || XRES || CK || IK || AUTN (§6.3.2) and resynchronises from AUTS (§6.3.5); the
// USIM verifies AUTN, checks SQN freshness and answers RES or AUTS (§6.3.3). Pure: RAND comes
// in from the caller (drawn from a RandomSource), SQN state lives in sqn.h objects. Every
// function requires algo.usable_for_av() (checked where the algorithm is configured).
#pragma once

#include <variant>

#include "aka/algorithm.h"
#include "aka/sqn.h"
#include "aka/types.h"
#include "common/error.h"

namespace mcim::aka {

struct AuthVector {
  Rand rand;
  Res xres;
  Ck ck;
  Ik ik;
  Autn autn;
  Ak ak;
  Mac mac_a;
  Sqn sqn;
  Amf amf;

  Bytes<6> sqn_xor_ak() const { return take<6>(ByteView(autn)); }
};

// AUTN = SQN xor AK || AMF || MAC-A.
Autn build_autn(const Sqn& sqn, const Ak& ak, const Amf& amf, const Mac& mac_a);

AuthVector make_vector(const Algorithm& algo, const Rand& rand, const Sqn& sqn, const Amf& amf);

// AMF* of the resynchronisation MAC-S: all zeros (TS 33.102 §6.3.3).
inline constexpr Amf kResyncAmf{0, 0};

// AUTS = SQN_MS xor AK* || MAC-S, MAC-S = f1*(K, SQN_MS || RAND || AMF*).
Auts make_auts(const Algorithm& algo, const Rand& rand, const Sqn& sqn_ms);

// Home side: recovers SQN_MS from AUTS (AK* = f5*(RAND)) and verifies MAC-S in constant time;
// mac_mismatch when it does not verify.
Result<Sqn> recover_sqn_ms(const Algorithm& algo, const Rand& rand, const Auts& auts);

// What the USIM answers to (RAND, AUTN).
struct UsimSuccess {
  Res res;
  Ck ck;
  Ik ik;
  Sqn sqn;  // the accepted SQN, now recorded in the UsimSqn state
};
struct UsimSyncFailure {
  Auts auts;
  SqnRefusal reason;
};
using UsimAnswer = std::variant<UsimSuccess, UsimSyncFailure>;

// Verifies MAC-A (mac_mismatch error: the network is not authentic, no AUTS is sent), then SQN
// freshness: a fresh SQN is recorded in `state` and RES/CK/IK returned; otherwise AUTS.
Result<UsimAnswer> usim_authenticate(const Algorithm& algo, UsimSqn& state, const Rand& rand,
                                     const Autn& autn);

}  // namespace mcim::aka
