// The TRE's registry as data (everything the TRE knows except the audit log and the backend's
// secrets), its strict binary encoding, and the sealed state file with its commit protocol
// (docs/tre.md, "Storage"). The encoding holds every K and OPc: it only ever exists in
// SecretBytes and sealed on disk.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "aka/sqn.h"
#include "common/bytes.h"
#include "common/error.h"
#include "common/secure.h"
#include "pki/package.h"
#include "tre/backend.h"
#include "tre/bootstrap_key.h"
#include "tre/lifecycle.h"

namespace mcim::tre {

using UtcSeconds = std::chrono::sys_seconds;

// One credential: the PCID credential from the factory or an MCIM. The PCID credential is kept
// as an McimDocument too (package id "pcid", policy owner the RO), so one code path runs AKA and
// the integrity check for both.
struct Credential {
  std::string id;  // the IMSI (or PCID): unique in the registry
  CredentialKind kind = CredentialKind::mcim;
  McimState state = McimState::installed;
  std::string owner;       // the stakeholder: doc.policy.owner, kept for tombstones
  std::string package_id;  // likewise
  // Absent once deleted (keys wiped). The Tre keeps a retired credential's document: its policy
  // still governs who may delete it, and it can no longer authenticate.
  std::optional<pki::McimDocument> doc;
  Bytes<32> digest{};  // SHA-256 of encode_document(*doc) when installed (integrity check)
  std::vector<std::uint64_t> seq_ms;  // the USIM's SEQ_MS array, 2^ind_bits entries
  UtcSeconds installed{}, changed{};
};

// What the supplier configured (F0). Everything but the device id, PCID and PIN is the same for
// every device of a model, and config_digest() measures only that part ("tre.config").
struct Config {
  std::string device_id, model;
  std::string ro_operator;              // owner of the PCID credential
  std::vector<ByteVec> operator_roots;  // DER trust anchors of packages and instructions
  // The bootstrap message's MAC key, derived from the PIN at init (tre/bootstrap_key.h); the
  // PIN itself is not kept.
  BootstrapKey bootstrap_key;
  std::uint64_t sqn_delta = std::uint64_t{1} << 28;  // Δ of TS 33.102 C.2.1
  std::uint64_t sqn_limit_l = 0;                     // L of C.2.2 (0: not applied)
};
// SHA-256 over the model-wide configuration (model, RO, operator roots, Δ, L), in a fixed
// encoding so a supplier can compute the reference value ("tre.config"). The hashed bytes, in
// this order, integers big-endian:
//   "mcim-tre-config/1" (17 ASCII bytes) | 0x00
//   u32 len(model)       | model (bytes as given)
//   u32 len(ro_operator) | ro_operator
//   u32 n (number of operator roots)
//   n x (u32 len(der) | der), the roots' DER sorted in ascending unsigned-byte lexicographic
//     order (a prefix sorts first; duplicates are kept), so their order in Config is irrelevant
//   u64 sqn_delta | u64 sqn_limit_l
// device_id and bootstrap_key are not measured: they differ per device.
Bytes<32> config_digest(const Config& config);

// The head of the audit log as the state last committed it. `last_line` is the full text of the
// entry with sequence `seq` (without its newline): if a crash came between committing the state
// and appending that line to audit.log, opening the TRE appends it (redo).
struct AuditHead {
  std::uint64_t seq = 0;  // entries so far; 0: empty log
  Bytes<32> hash{};       // SHA-256 of the last line (zeros for an empty log)
  std::string last_line;
};

// F9: what a TRE answered an operator's last accepted instruction (its sequence is in
// State::instruction_sequence): the SHA-256 of the signed instruction as received, and the outcome
// ("ok" or an error's wire code). The same instruction delivered again, because its answer was
// lost after the commit, is answered with this outcome instead of replayed_instruction.
struct InstructionAnswer {
  Bytes<32> digest{};
  std::string outcome;
};

struct State {
  std::uint64_t generation = 0;  // +1 per commit; equals the backend counter when consistent
  Config config;
  std::vector<Credential> credentials;  // the PCID credential first, then in install order
  // Replay protection: the last sequence accepted from each operator, for packages and for
  // management instructions.
  std::map<std::string, std::uint64_t, std::less<>> package_sequence;
  std::map<std::string, std::uint64_t, std::less<>> instruction_sequence;
  // The answer to the instruction of that last sequence, per operator (a subset of
  // instruction_sequence's keys: a state written before version 3 has none).
  std::map<std::string, InstructionAnswer, std::less<>> last_instruction;
  // The one-time nonce of the pending registration (F1); consumed by a successful install.
  std::optional<Bytes<16>> registration_nonce;
  AuditHead audit;

  Credential* find(std::string_view id);
  const Credential* find(std::string_view id) const;
};

// Versioned, length-prefixed binary (docs/tre.md; the layout is at the top of state.cpp);
// documents inside are encode_document's canonical JSON. decode_state refuses anything but a
// valid encoding (bad_format naming the field): truncation, trailing bytes, unknown version,
// out-of-range values, an SQN array of the wrong size, duplicate ids. encode_state applies the
// same rules (invalid_argument), so a state that can be committed can be loaded again. Bounds:
// 64 credentials, 16 operator roots of 1..8192 bytes, 256 operators per sequence map, strings
// 128 bytes (audit last_line 4096, no newline), times 0..253402300799. decode_state also reads
// the version 1 encoding, which held the PIN instead of the key: it derives the key from it.
// A deleted credential has no document; one that is neither retired nor deleted has one.
Result<SecretBytes> encode_state(const State& state);
Result<State> decode_state(ByteView bytes);

// state.sealed in the TRE directory: an 8-byte big-endian generation followed by the sealed
// encoding (record "state", context the generation, so a blob cannot be relabelled).
class StateFile {
 public:
  StateFile(std::string dir, Backend& backend) : dir_(std::move(dir)), backend_(backend) {}

  // Reads, unseals and decodes; then compares the generation with the backend counter:
  // equal is consistent; one ahead means a crash between writing the state and advancing the
  // counter, and the counter is advanced now; behind is rollback_detected; further ahead is
  // store_tampered. not_found when there is no state file.
  // load() also removes a stale state.sealed.tmp left by a crash (never the committed state:
  // the rename is the commit point).
  Result<State> load();
  // Writes `state` (whose generation must be the last loaded or committed one plus one:
  // internal otherwise) atomically (temporary file, fsync, rename, fsync of the directory), then
  // advances the counter. When advancing the counter fails, the generation expected next stays
  // the same, so a retry rewrites that generation rather than running two ahead.
  Result<void> commit(const State& state);
  // The first state of a new TRE (generation 1; invalid_argument otherwise); already_exists if
  // there is one, or if the backend counter is not 0 (the backend has held a state before).
  Result<void> create(const State& state);

  // True when the last load() found an interrupted commit and advanced the counter (fsck
  // reports it as FsckReport::repaired_counter).
  bool repaired_counter() const { return repaired_counter_; }

  std::string path() const { return dir_ + "/state.sealed"; }

 private:
  std::string dir_;
  Backend& backend_;
  std::uint64_t generation_ = 0;  // of the last state loaded or committed
  bool repaired_counter_ = false;
};

}  // namespace mcim::tre
