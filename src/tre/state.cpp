#include "tre/state.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "common/file.h"
#include "pki/openssl.h"

namespace mcim::tre {
namespace {

// The encoding (docs/tre.md, "Storage"), all integers big-endian:
//   "MST1" | u8 version (3) | u64 generation
//   config:      str device_id | str model | str ro_operator
//                | u16 n, n x (u32 len | DER root) | 32 bootstrap_key
//                | u64 sqn_delta | u64 sqn_limit_l
//   credentials: u16 n, n x (str id | u8 kind | u8 state | str owner | str package_id
//                | u8 has_doc (0/1) | has_doc: u32 len | encode_document bytes
//                | 32 digest | u16 n, n x u64 seq_ms | i64 installed | i64 changed)
//   u16 n, n x (str operator | u64 sequence)   package_sequence, keys strictly ascending
//   u16 n, n x (str operator | u64 sequence)   instruction_sequence, likewise
//   u16 n, n x (str operator | 32 digest | str outcome)   last_instruction, likewise; each
//                operator also in instruction_sequence; outcome "ok" or an error's wire code
//   u8 has_nonce (0/1) | has_nonce: 16 nonce
//   u64 audit seq | 32 audit hash | u16 len | audit last_line
// where str = u16 len | bytes. Nothing may follow. Versions 1 and 2 are read, no longer written:
// version 2 had no last_instruction (it reads as empty); version 1 had none either, and had
// u8 pin_size | pin_size ASCII digits (4..16) in place of the bootstrap key: reading it derives
// the key from that PIN and the device id. The next commit writes version 3.
constexpr std::string_view kMagic = "MST1";
constexpr std::uint8_t kVersion = 3;
constexpr std::uint8_t kVersionWithoutAnswers = 2;
constexpr std::uint8_t kVersionWithPin = 1;

constexpr std::size_t kMaxString = 128;
constexpr std::size_t kMaxCredentials = 64;
constexpr std::size_t kMaxRoots = 16;
constexpr std::size_t kMaxRootSize = 8 * 1024;
constexpr std::size_t kMaxOperators = 256;
constexpr std::size_t kMaxAuditLine = 4096;
constexpr std::int64_t kMaxTime = 253402300799;  // 9999-12-31T23:59:59Z, as documents

// Wire values, fixed here rather than taken from the enums' declaration order, so that
// reordering an enum cannot silently reinterpret stored states.
constexpr std::array kKinds = {CredentialKind::pcid, CredentialKind::mcim};
constexpr std::array kStates = {McimState::installed, McimState::activated, McimState::selected,
                                McimState::blocked,   McimState::retired,   McimState::deleted};

template <class E, std::size_t N>
std::optional<std::uint8_t> wire_of(const std::array<E, N>& table, E value) {
  for (std::size_t i = 0; i < N; ++i) {
    if (table[i] == value) return static_cast<std::uint8_t>(i);
  }
  return std::nullopt;
}

ByteView view_of(std::string_view s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

// ---------------------------------------------------------------------------------------------
// Validation, shared by the encoder (invalid_argument: the caller's state) and the decoder
// (bad_format: stored input), so that whatever is committed can be loaded again.

struct Check {
  ErrorCode code;
  std::unexpected<Error> bad(std::string_view field, std::string_view what) const {
    return fail(code, fmt::format("state: {}: {}", field, what));
  }
};

#define MCIM_TRY(expr)                                             \
  do {                                                             \
    if (auto r_ = (expr); !r_) return std::unexpected(r_.error()); \
  } while (0)

Result<void> check_string(const Check& c, std::string_view field, std::string_view s,
                          std::size_t min, std::size_t max) {
  if (s.size() < min || s.size() > max) {
    return c.bad(field, fmt::format("length must be {}..{}", min, max));
  }
  return {};
}

Result<void> check_config(const Check& c, const Config& cfg) {
  MCIM_TRY(check_string(c, "config.device_id", cfg.device_id, 0, kMaxString));
  MCIM_TRY(check_string(c, "config.model", cfg.model, 0, kMaxString));
  MCIM_TRY(check_string(c, "config.ro_operator", cfg.ro_operator, 0, kMaxString));
  if (cfg.operator_roots.size() > kMaxRoots) {
    return c.bad("config.operator_roots", fmt::format("more than {}", kMaxRoots));
  }
  for (std::size_t i = 0; i < cfg.operator_roots.size(); ++i) {
    const std::size_t n = cfg.operator_roots[i].size();
    if (n == 0 || n > kMaxRootSize) {
      return c.bad(fmt::format("config.operator_roots[{}]", i),
                   fmt::format("length must be 1..{}", kMaxRootSize));
    }
  }
  if (cfg.sqn_delta == 0) return c.bad("config.sqn_delta", "must be at least 1");
  return {};
}

Result<void> check_time(const Check& c, std::string_view field, UtcSeconds t) {
  const auto s = t.time_since_epoch().count();
  if (s < 0 || s > kMaxTime) return c.bad(field, "must be 0..253402300799 (unix seconds)");
  return {};
}

Result<void> check_credential(const Check& c, const Credential& cr, std::size_t i) {
  const std::string f = fmt::format("credentials[{}]", i);
  MCIM_TRY(check_string(c, f + ".id", cr.id, 1, kMaxString));
  MCIM_TRY(check_string(c, f + ".owner", cr.owner, 0, kMaxString));
  MCIM_TRY(check_string(c, f + ".package_id", cr.package_id, 0, kMaxString));
  if (!wire_of(kKinds, cr.kind)) return c.bad(f + ".kind", "out of range");
  if (!wire_of(kStates, cr.state)) return c.bad(f + ".state", "out of range");
  // A deleted credential's keys are gone; a usable one needs its keys. Retired may be either
  // (the Tre decides when a retired credential's keys are wiped).
  if (cr.state == McimState::deleted && cr.doc) {
    return c.bad(f + ".doc", "must be absent once deleted");
  }
  const bool may_lack_doc = cr.state == McimState::retired || cr.state == McimState::deleted;
  if (!may_lack_doc && !cr.doc) return c.bad(f + ".doc", "required unless retired or deleted");
  if (cr.doc) {
    if (auto v = pki::validate_document(*cr.doc, c.code); !v) {
      return c.bad(f + ".doc", v.error().message);
    }
    const aka::SqnPolicy policy{cr.doc->ind_bits};
    if (cr.seq_ms.size() != (std::size_t{1} << cr.doc->ind_bits)) {
      return c.bad(f + ".seq_ms", "must have 2^ind_bits entries");
    }
    for (std::size_t j = 0; j < cr.seq_ms.size(); ++j) {
      if (cr.seq_ms[j] > policy.seq_max()) {
        return c.bad(fmt::format("{}.seq_ms[{}]", f, j), "above the SEQ range");
      }
    }
  } else if (!cr.seq_ms.empty()) {
    return c.bad(f + ".seq_ms", "must be empty without a document");
  }
  MCIM_TRY(check_time(c, f + ".installed", cr.installed));
  MCIM_TRY(check_time(c, f + ".changed", cr.changed));
  return {};
}

Result<void> check_sequences(const Check& c, std::string_view field,
                             const std::map<std::string, std::uint64_t, std::less<>>& m) {
  if (m.size() > kMaxOperators) return c.bad(field, fmt::format("more than {}", kMaxOperators));
  for (const auto& [op, seq] : m) {
    MCIM_TRY(check_string(c, fmt::format("{} key", field), op, 1, kMaxString));
  }
  return {};
}

Result<void> check_answers(const Check& c, const State& s) {
  // Its keys are instruction_sequence's, checked there.
  for (const auto& [op, answer] : s.last_instruction) {
    if (!s.instruction_sequence.contains(op)) {
      return c.bad("last_instruction", fmt::format("{} has no instruction sequence", op));
    }
    if (answer.outcome != "ok" && !error_code_from_wire(answer.outcome)) {
      return c.bad("last_instruction.outcome", "not ok or an error code");
    }
  }
  return {};
}

Result<void> check_audit(const Check& c, const AuditHead& a) {
  MCIM_TRY(check_string(c, "audit.last_line", a.last_line, 0, kMaxAuditLine));
  if (a.last_line.find('\n') != std::string::npos) {
    return c.bad("audit.last_line", "contains a newline");
  }
  const bool zero_hash = std::all_of(a.hash.begin(), a.hash.end(), [](auto b) { return b == 0; });
  if (a.seq == 0 && (!a.last_line.empty() || !zero_hash)) {
    return c.bad("audit", "an empty log has no last line and a zero hash");
  }
  if (a.seq != 0 && a.last_line.empty()) return c.bad("audit.last_line", "empty");
  return {};
}

Result<void> check_state(const State& s, ErrorCode code) {
  const Check c{code};
  MCIM_TRY(check_config(c, s.config));
  if (s.credentials.size() > kMaxCredentials) {
    return c.bad("credentials", fmt::format("more than {}", kMaxCredentials));
  }
  std::set<std::string_view> ids;
  for (std::size_t i = 0; i < s.credentials.size(); ++i) {
    MCIM_TRY(check_credential(c, s.credentials[i], i));
    if (!ids.insert(s.credentials[i].id).second) {
      return c.bad(fmt::format("credentials[{}].id", i), "duplicate");
    }
  }
  MCIM_TRY(check_sequences(c, "package_sequence", s.package_sequence));
  MCIM_TRY(check_sequences(c, "instruction_sequence", s.instruction_sequence));
  MCIM_TRY(check_answers(c, s));
  return check_audit(c, s.audit);
}

// ---------------------------------------------------------------------------------------------
// Encoding

// Appends without ever leaving an unwiped copy behind: growing copies into a fresh allocation
// and wipes the old one (std::vector's own reallocation would free it as it is).
class SecretWriter {
 public:
  SecretWriter() { buf_.reserve(4096); }
  ~SecretWriter() { secure_wipe(buf_); }
  SecretWriter(const SecretWriter&) = delete;
  SecretWriter& operator=(const SecretWriter&) = delete;

  void bytes(ByteView v) {
    grow(v.size());
    buf_.insert(buf_.end(), v.begin(), v.end());
  }
  template <std::size_t N>
  void be(std::uint64_t v) {
    const Bytes<N> b = to_be<N>(v);
    bytes(b);
  }
  void u8(std::uint64_t v) { be<1>(v); }
  void u16(std::uint64_t v) { be<2>(v); }
  void u32(std::uint64_t v) { be<4>(v); }
  void u64(std::uint64_t v) { be<8>(v); }
  void str(std::string_view s) {
    u16(s.size());
    bytes(view_of(s));
  }
  SecretBytes finish() { return SecretBytes(std::move(buf_)); }

 private:
  void grow(std::size_t extra) {
    if (buf_.size() + extra <= buf_.capacity()) return;
    ByteVec bigger;
    bigger.reserve(std::max(buf_.capacity() * 2, buf_.size() + extra));
    bigger.assign(buf_.begin(), buf_.end());
    secure_wipe(buf_);
    buf_.swap(bigger);
  }

  ByteVec buf_;
};

void write_config(SecretWriter& w, const Config& cfg) {
  w.str(cfg.device_id);
  w.str(cfg.model);
  w.str(cfg.ro_operator);
  w.u16(cfg.operator_roots.size());
  for (const ByteVec& der : cfg.operator_roots) {
    w.u32(der.size());
    w.bytes(der);
  }
  w.bytes(cfg.bootstrap_key.get());
  w.u64(cfg.sqn_delta);
  w.u64(cfg.sqn_limit_l);
}

Result<void> write_credential(SecretWriter& w, const Credential& cr, std::size_t i) {
  w.str(cr.id);
  w.u8(*wire_of(kKinds, cr.kind));
  w.u8(*wire_of(kStates, cr.state));
  w.str(cr.owner);
  w.str(cr.package_id);
  w.u8(cr.doc ? 1 : 0);
  if (cr.doc) {
    auto doc = pki::encode_document(*cr.doc);
    if (!doc) {
      return fail(doc.error().code,
                  fmt::format("state: credentials[{}].doc: {}", i, doc.error().message));
    }
    w.u32(doc->view().size());
    w.bytes(doc->view());
  }
  w.bytes(cr.digest);
  w.u16(cr.seq_ms.size());
  for (std::uint64_t seq : cr.seq_ms) w.u64(seq);
  w.u64(static_cast<std::uint64_t>(cr.installed.time_since_epoch().count()));
  w.u64(static_cast<std::uint64_t>(cr.changed.time_since_epoch().count()));
  return {};
}

void write_sequences(SecretWriter& w, const std::map<std::string, std::uint64_t, std::less<>>& m) {
  w.u16(m.size());
  for (const auto& [op, seq] : m) {
    w.str(op);
    w.u64(seq);
  }
}

void write_answers(SecretWriter& w,
                   const std::map<std::string, InstructionAnswer, std::less<>>& m) {
  w.u16(m.size());
  for (const auto& [op, answer] : m) {
    w.str(op);
    w.bytes(answer.digest);
    w.str(answer.outcome);
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding

// A strict reader with a sticky error: after the first failure every read yields zero/empty,
// so decoding code reads straight through and checks once per variable-size item (before
// trusting a count).
class Reader {
 public:
  explicit Reader(ByteView b) : b_(b) {}

  std::uint64_t be(std::size_t n, std::string_view field) {
    ByteView v = take(n, field);
    std::uint64_t x = 0;
    for (std::uint8_t byte : v) x = (x << 8) | byte;
    return x;
  }
  std::uint8_t u8(std::string_view field) { return static_cast<std::uint8_t>(be(1, field)); }
  std::size_t u16(std::string_view field) { return be(2, field); }
  std::size_t u32(std::string_view field) { return be(4, field); }
  std::uint64_t u64(std::string_view field) { return be(8, field); }
  bool flag(std::string_view field) {
    const std::uint8_t v = u8(field);
    if (v > 1) set_error(field, "must be 0 or 1");
    return v == 1;
  }
  // A fixed-size field: zeros after an error, never a read past the input.
  template <std::size_t N>
  Bytes<N> fixed(std::string_view field) {
    ByteView v = take(N, field);
    return v.size() == N ? mcim::take<N>(v) : Bytes<N>{};
  }
  ByteView take(std::size_t n, std::string_view field) {
    if (error_) return {};
    if (b_.size() - pos_ < n) {
      set_error(field, "truncated");
      return {};
    }
    ByteView v = b_.subspan(pos_, n);
    pos_ += n;
    return v;
  }
  // A u16-length-prefixed string; the bound is checked before the bytes are taken.
  std::string str(std::string_view field, std::size_t max = kMaxString) {
    const std::size_t n = u16(field);
    if (n > max) {
      set_error(field, fmt::format("longer than {}", max));
      return {};
    }
    ByteView v = take(n, field);
    return std::string(v.begin(), v.end());
  }
  // A count read before allocating for it.
  std::size_t count(std::size_t n_bytes, std::string_view field, std::size_t max) {
    const std::size_t n = be(n_bytes, field);
    if (n > max) {
      set_error(field, fmt::format("more than {}", max));
      return 0;
    }
    return n;
  }
  void set_error(std::string_view field, std::string_view what) {
    if (!error_) error_ = Error(ErrorCode::bad_format, fmt::format("state: {}: {}", field, what));
  }
  bool ok() const { return !error_; }
  bool at_end() const { return pos_ == b_.size(); }
  Error error() const { return *error_; }

 private:
  ByteView b_;
  std::size_t pos_ = 0;
  std::optional<Error> error_;
};

void read_config(Reader& r, Config& cfg, std::uint8_t version) {
  cfg.device_id = r.str("config.device_id");
  cfg.model = r.str("config.model");
  cfg.ro_operator = r.str("config.ro_operator");
  const std::size_t roots = r.count(2, "config.operator_roots", kMaxRoots);
  for (std::size_t i = 0; i < roots && r.ok(); ++i) {
    const std::string f = fmt::format("config.operator_roots[{}]", i);
    const std::size_t n = r.count(4, f, kMaxRootSize);
    ByteView der = r.take(n, f);
    cfg.operator_roots.emplace_back(der.begin(), der.end());
  }
  if (version == kVersionWithPin) {
    const std::size_t n = r.count(1, "config.pin_size", kMaxPinSize);
    ByteView pin = r.take(n, "config.pin");
    if (r.ok()) {
      // A view into the caller's (wiped) buffer: the PIN is not copied.
      auto key = derive_bootstrap_key(
          std::string_view(reinterpret_cast<const char*>(pin.data()), pin.size()), cfg.device_id);
      if (key) {
        cfg.bootstrap_key = *key;
      } else {
        r.set_error("config.pin", "must be 4-16 ASCII digits, with a valid device id");
      }
    }
  } else {
    ByteView key = r.take(cfg.bootstrap_key.get().size(), "config.bootstrap_key");
    std::copy(key.begin(), key.end(), cfg.bootstrap_key.mut().begin());
  }
  cfg.sqn_delta = r.u64("config.sqn_delta");
  cfg.sqn_limit_l = r.u64("config.sqn_limit_l");
}

std::optional<McimState> state_of(std::uint8_t v) {
  if (v >= kStates.size()) return std::nullopt;
  return kStates[v];
}

void read_doc(Reader& r, Credential& cr, const std::string& f) {
  if (!r.flag(f + ".has_doc")) return;
  const std::size_t n = r.count(4, f + ".doc", pki::kMaxDocumentSize);
  ByteView json = r.take(n, f + ".doc");
  if (!r.ok()) return;
  auto doc = pki::decode_document(json);
  if (!doc) {
    r.set_error(f + ".doc", doc.error().message);
    return;
  }
  cr.doc = std::move(*doc);
}

UtcSeconds read_time(Reader& r, const std::string& field) {
  return UtcSeconds(std::chrono::seconds(static_cast<std::int64_t>(r.u64(field))));
}

void read_credential(Reader& r, Credential& cr, std::size_t i) {
  const std::string f = fmt::format("credentials[{}]", i);
  cr.id = r.str(f + ".id");
  const std::uint8_t kind = r.u8(f + ".kind");
  if (kind >= kKinds.size()) r.set_error(f + ".kind", "out of range");
  cr.kind = kKinds[kind < kKinds.size() ? kind : 0];
  const auto state = state_of(r.u8(f + ".state"));
  if (!state) r.set_error(f + ".state", "out of range");
  cr.state = state.value_or(McimState::installed);
  cr.owner = r.str(f + ".owner");
  cr.package_id = r.str(f + ".package_id");
  read_doc(r, cr, f);
  cr.digest = r.fixed<32>(f + ".digest");
  const std::size_t expected = cr.doc ? (std::size_t{1} << cr.doc->ind_bits) : 0;
  const std::size_t n = r.u16(f + ".seq_ms");
  if (r.ok() && n != expected) r.set_error(f + ".seq_ms", "must have 2^ind_bits entries");
  for (std::size_t j = 0; j < n && r.ok(); ++j) cr.seq_ms.push_back(r.u64(f + ".seq_ms"));
  cr.installed = read_time(r, f + ".installed");
  cr.changed = read_time(r, f + ".changed");
}

// A map keyed by operator: u16 n, n x (str operator | value), `read_value` reading the value.
template <class V, class ReadValue>
void read_by_operator(Reader& r, std::string_view field, std::map<std::string, V, std::less<>>& m,
                      ReadValue read_value) {
  const std::size_t n = r.count(2, field, kMaxOperators);
  for (std::size_t i = 0; i < n && r.ok(); ++i) {
    std::string op = r.str(field);
    V value = read_value();
    // Strictly ascending keys: one encoding per map, and no duplicate can hide a value.
    if (r.ok() && !m.empty() && m.rbegin()->first >= op) {
      r.set_error(field, "keys not in strictly ascending order");
    }
    if (r.ok()) m.emplace_hint(m.end(), std::move(op), std::move(value));
  }
}

void read_sequences(Reader& r, std::string_view field,
                    std::map<std::string, std::uint64_t, std::less<>>& m) {
  read_by_operator(r, field, m, [&] { return r.u64(field); });
}

void read_answers(Reader& r, std::map<std::string, InstructionAnswer, std::less<>>& m) {
  constexpr std::string_view field = "last_instruction";
  read_by_operator(r, field, m, [&] {
    InstructionAnswer answer;
    answer.digest = r.fixed<32>(field);
    answer.outcome = r.str(field);
    return answer;
  });
}

void read_state(Reader& r, State& s) {
  const ByteView magic = r.take(kMagic.size(), "magic");
  if (r.ok() && !std::equal(magic.begin(), magic.end(), kMagic.begin())) {
    r.set_error("magic", "not a TRE state");
  }
  const std::uint8_t version = r.u8("version");
  if (version != kVersion && version != kVersionWithoutAnswers && version != kVersionWithPin &&
      r.ok()) {
    r.set_error("version", "unsupported");
  }
  s.generation = r.u64("generation");
  read_config(r, s.config, version);
  const std::size_t n = r.count(2, "credentials", kMaxCredentials);
  for (std::size_t i = 0; i < n && r.ok(); ++i) read_credential(r, s.credentials.emplace_back(), i);
  read_sequences(r, "package_sequence", s.package_sequence);
  read_sequences(r, "instruction_sequence", s.instruction_sequence);
  if (version > kVersionWithoutAnswers) read_answers(r, s.last_instruction);
  if (r.flag("registration_nonce")) s.registration_nonce = r.fixed<16>("registration_nonce");
  s.audit.seq = r.u64("audit.seq");
  s.audit.hash = r.fixed<32>("audit.hash");
  s.audit.last_line = r.str("audit.last_line", kMaxAuditLine);
}

void put_be(ByteVec& out, std::uint64_t v, std::size_t n) {
  for (std::size_t i = n; i-- > 0;) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void put_part(ByteVec& out, ByteView v) {
  put_be(out, v.size(), 4);
  out.insert(out.end(), v.begin(), v.end());
}

constexpr std::string_view kStateRecord = "state";
constexpr std::size_t kHeaderSize = 8;

Result<void> remove_stale_temporary(const std::string& path) {
  const std::string tmp = path + ".tmp";
  if (::unlink(tmp.c_str()) == 0 || errno == ENOENT) return {};
  return fail(ErrorCode::io_error, fmt::format("cannot remove {}: {}", tmp, std::strerror(errno)));
}

}  // namespace

const Credential* State::find(std::string_view id) const {
  auto it = std::find_if(credentials.begin(), credentials.end(),
                         [&](const Credential& c) { return c.id == id; });
  return it == credentials.end() ? nullptr : &*it;
}

Credential* State::find(std::string_view id) {
  return const_cast<Credential*>(std::as_const(*this).find(id));
}

Bytes<32> config_digest(const Config& config) {
  ByteVec m;
  constexpr std::string_view kLabel = "mcim-tre-config/1";
  m.insert(m.end(), kLabel.begin(), kLabel.end());
  m.push_back(0);
  put_part(m, view_of(config.model));
  put_part(m, view_of(config.ro_operator));
  std::vector<ByteView> roots(config.operator_roots.begin(), config.operator_roots.end());
  std::sort(roots.begin(), roots.end(), [](ByteView a, ByteView b) {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
  });
  put_be(m, roots.size(), 4);
  for (ByteView der : roots) put_part(m, der);
  put_be(m, config.sqn_delta, 8);
  put_be(m, config.sqn_limit_l, 8);
  return pki::sha256(m);
}

Result<SecretBytes> encode_state(const State& state) {
  MCIM_TRY(check_state(state, ErrorCode::invalid_argument));
  SecretWriter w;
  w.bytes(view_of(kMagic));
  w.u8(kVersion);
  w.u64(state.generation);
  write_config(w, state.config);
  w.u16(state.credentials.size());
  for (std::size_t i = 0; i < state.credentials.size(); ++i) {
    MCIM_TRY(write_credential(w, state.credentials[i], i));
  }
  write_sequences(w, state.package_sequence);
  write_sequences(w, state.instruction_sequence);
  write_answers(w, state.last_instruction);
  w.u8(state.registration_nonce ? 1 : 0);
  if (state.registration_nonce) w.bytes(*state.registration_nonce);
  w.u64(state.audit.seq);
  w.bytes(state.audit.hash);
  w.u16(state.audit.last_line.size());
  w.bytes(view_of(state.audit.last_line));
  return w.finish();
}

Result<State> decode_state(ByteView bytes) {
  Reader r(bytes);
  State s;
  read_state(r, s);
  if (!r.ok()) return std::unexpected(r.error());
  if (!r.at_end()) return fail(ErrorCode::bad_format, "state: trailing bytes");
  MCIM_TRY(check_state(s, ErrorCode::bad_format));
  return s;
}

// ---------------------------------------------------------------------------------------------
// StateFile

namespace {

Result<ByteVec> seal_state(Backend& backend, const State& state) {
  auto plain = encode_state(state);
  if (!plain) return std::unexpected(plain.error());
  const Bytes<kHeaderSize> header = to_be<kHeaderSize>(state.generation);
  auto sealed = backend.seal(kStateRecord, header, plain->view());
  if (!sealed) return std::unexpected(sealed.error());
  ByteVec file(header.begin(), header.end());
  file.insert(file.end(), sealed->begin(), sealed->end());
  return file;
}

}  // namespace

Result<State> StateFile::load() {
  repaired_counter_ = false;
  const std::string file = path();
  MCIM_TRY(remove_stale_temporary(file));
  auto bytes = read_file(file);
  if (!bytes) return std::unexpected(bytes.error());
  if (bytes->size() < kHeaderSize) {
    return fail(ErrorCode::store_tampered, fmt::format("{}: truncated", file));
  }
  const Bytes<kHeaderSize> header = take<kHeaderSize>(*bytes);
  const std::uint64_t generation = from_be(header);
  auto plain = backend_.unseal(kStateRecord, header, ByteView(*bytes).subspan(kHeaderSize));
  if (!plain) {
    return fail(ErrorCode::store_tampered, fmt::format("{}: {}", file, plain.error().message));
  }
  auto state = decode_state(plain->view());
  if (!state) {
    return fail(state.error().code, fmt::format("{}: {}", file, state.error().message));
  }
  if (state->generation != generation) {
    return fail(ErrorCode::store_tampered, fmt::format("{}: generation does not match", file));
  }
  auto counter = backend_.counter();
  if (!counter) return std::unexpected(counter.error());
  if (generation < *counter) {
    return fail(
        ErrorCode::rollback_detected,
        fmt::format("{}: generation {} is older than the counter {}", file, generation, *counter));
  }
  if (generation - *counter > 1) {
    return fail(
        ErrorCode::store_tampered,
        fmt::format("{}: generation {} is ahead of the counter {}", file, generation, *counter));
  }
  if (generation == *counter + 1) {
    MCIM_TRY(backend_.set_counter(generation));
    repaired_counter_ = true;
  }
  generation_ = generation;
  return state;
}

Result<void> StateFile::commit(const State& state) {
  if (generation_ == 0) return fail(ErrorCode::internal, "state commit: nothing loaded or created");
  if (state.generation != generation_ + 1) {
    return fail(ErrorCode::internal, fmt::format("state commit: generation {} does not follow {}",
                                                 state.generation, generation_));
  }
  auto file = seal_state(backend_, state);
  if (!file) return std::unexpected(file.error());
  MCIM_TRY(write_file_atomic(path(), *file, 0600));
  // generation_ advances only with the counter: if set_counter fails, a retry rewrites the
  // same generation (one ahead of the counter, which load() repairs) instead of a second one.
  MCIM_TRY(backend_.set_counter(state.generation));
  generation_ = state.generation;
  return {};
}

Result<void> StateFile::create(const State& state) {
  const std::string file = path();
  if (::access(file.c_str(), F_OK) == 0) {
    return fail(ErrorCode::already_exists, fmt::format("{}: exists", file));
  }
  if (state.generation != 1) {
    return fail(ErrorCode::invalid_argument, "state create: the first generation must be 1");
  }
  auto counter = backend_.counter();
  if (!counter) return std::unexpected(counter.error());
  if (*counter != 0) {
    // The backend has seen states before: creating generation 1 now would be a rollback.
    return fail(ErrorCode::already_exists,
                fmt::format("{}: the backend counter shows an earlier state", file));
  }
  MCIM_TRY(remove_stale_temporary(file));
  auto sealed = seal_state(backend_, state);
  if (!sealed) return std::unexpected(sealed.error());
  MCIM_TRY(write_file_atomic(file, *sealed, 0600));
  MCIM_TRY(backend_.set_counter(1));
  generation_ = 1;
  return {};
}

#undef MCIM_TRY

}  // namespace mcim::tre
