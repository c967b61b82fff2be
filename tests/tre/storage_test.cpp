// The TRE's sealed storage: AES-GCM sealing bound to record and context (every byte region
// tampered, other record, context or device), the software backend's files, monotonic counter
// and sticky lockdown, the strict state codec (round trip, every truncation, every bound, random
// mutations), config_digest against its documented layout, and the state file's commit
// protocol (rollback, interrupted commit, relabelling, stale temporary).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../pki/pki_test_util.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/random.h"
#include "pki/certificate.h"
#include "pki/package.h"
#include "tre/backend.h"
#include "tre/state.h"

namespace mcim::tre {
namespace {

using namespace std::chrono_literals;
using pki::testing::TempDir;

ByteVec bytes_of(std::string_view s) { return ByteVec(s.begin(), s.end()); }
std::string text_of(ByteView b) { return std::string(b.begin(), b.end()); }

ByteVec read_bytes(const std::string& path) {
  auto b = read_file(path);
  EXPECT_TRUE(b.has_value()) << path;
  return b ? *b : ByteVec{};
}

void write_bytes(const std::string& path, ByteView b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

// A platform key and certificate under a root CA, as the supplier issues them.
struct TestPlatform {
  pki::PkeyPtr root_key, key;
  pki::X509Ptr root, cert;
  std::vector<X509*> chain() const { return {cert.get(), root.get()}; }
};

TestPlatform make_platform(const std::string& device = "dev-1") {
  const FakeClock clock(std::chrono::system_clock::now());
  OsRandom random;
  TestPlatform p;
  p.root_key = std::move(*pki::generate_p256_key());
  p.key = std::move(*pki::generate_p256_key());
  pki::CertSpec root_spec;
  root_spec.profile = pki::Profile::root_ca;
  root_spec.subject = "CN=Test Supplier CA";
  auto root =
      pki::issue_certificate(root_spec, p.root_key.get(), nullptr, p.root_key.get(), clock, random);
  EXPECT_TRUE(root.has_value()) << root.error().message;
  p.root = std::move(*root);
  pki::CertSpec spec;
  spec.profile = pki::Profile::platform;
  spec.subject = "CN=" + device;
  spec.device_id = device;
  spec.model = "m2m-x";
  auto cert =
      pki::issue_certificate(spec, p.key.get(), p.root.get(), p.root_key.get(), clock, random);
  EXPECT_TRUE(cert.has_value()) << cert.error().message;
  p.cert = std::move(*cert);
  return p;
}

// Hands out a recognisable byte pattern, to see where the backend puts what it draws.
class PatternRandom final : public RandomSource {
 public:
  void fill(std::span<std::uint8_t> out) override {
    for (auto& b : out) b = next_++;
  }
  std::uint8_t next_ = 0xa0;
};

class BackendFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    platform_ = make_platform();
    auto b = SoftwareBackend::create(dir_.path(), platform_.key.get(), platform_.chain(), random_);
    ASSERT_TRUE(b.has_value()) << b.error().message;
    backend_ = std::move(*b);
  }
  std::unique_ptr<SoftwareBackend> reopen() {
    backend_.reset();
    auto b = SoftwareBackend::open(dir_.path(), random_);
    EXPECT_TRUE(b.has_value()) << b.error().message;
    return b ? std::move(*b) : nullptr;
  }
  std::string root_secret_hex() { return to_hex(read_bytes(dir_ / "tre.secret")); }

  TempDir dir_;
  OsRandom random_;
  TestPlatform platform_;
  std::unique_ptr<SoftwareBackend> backend_;
};

// =============================================================================================
// Sealing

using SealTest = BackendFixture;

TEST_F(SealTest, RoundTripsAnyRecordContextAndSize) {
  const ByteVec ctx8 = {0, 0, 0, 0, 0, 0, 0, 7};
  for (std::size_t size : {0u, 1u, 15u, 16u, 17u, 1000u, 70000u}) {
    ByteVec plain(size);
    for (std::size_t i = 0; i < size; ++i) plain[i] = static_cast<std::uint8_t>(i * 7 + 1);
    for (ByteView ctx : {ByteView{}, ByteView(ctx8)}) {
      auto sealed = backend_->seal("state", ctx, plain);
      ASSERT_TRUE(sealed.has_value());
      EXPECT_EQ(sealed->size(), 4 + 12 + size + 16);
      EXPECT_EQ(text_of(ByteView(*sealed).first(4)), "MTS1");
      auto opened = backend_->unseal("state", ctx, *sealed);
      ASSERT_TRUE(opened.has_value()) << opened.error().message;
      EXPECT_TRUE(
          std::equal(plain.begin(), plain.end(), opened->view().begin(), opened->view().end()));
    }
  }
}

TEST_F(SealTest, FreshNonceEveryTimeFromTheRandomSource) {
  PatternRandom pattern;
  backend_.reset();
  auto b = SoftwareBackend::open(dir_.path(), pattern);
  ASSERT_TRUE(b.has_value());
  auto first = (*b)->seal("r", {}, bytes_of("same"));
  auto second = (*b)->seal("r", {}, bytes_of("same"));
  ASSERT_TRUE(first && second);
  EXPECT_EQ(to_hex(ByteView(*first).subspan(4, 12)), "a0a1a2a3a4a5a6a7a8a9aaab");
  EXPECT_EQ(to_hex(ByteView(*second).subspan(4, 12)), "acadaeafb0b1b2b3b4b5b6b7");
  EXPECT_NE(*first, *second);
}

struct Region {
  const char* name;
  std::size_t begin, end;  // [begin, end) in a blob of 4 + 12 + 20 + 16 bytes
};

TEST_F(SealTest, EveryByteOfEveryRegionIsAuthenticated) {
  const ByteVec plain = bytes_of("twenty bytes of text");
  auto sealed = backend_->seal("state", bytes_of("ctx"), plain);
  ASSERT_TRUE(sealed.has_value());
  ASSERT_EQ(sealed->size(), 52u);
  const Region regions[] = {
      {"magic", 0, 4}, {"nonce", 4, 16}, {"ciphertext", 16, 36}, {"tag", 36, 52}};
  for (const Region& r : regions) {
    for (std::size_t i = r.begin; i < r.end; ++i) {
      for (int bit : {0x01, 0x80}) {
        ByteVec edited = *sealed;
        edited[i] ^= static_cast<std::uint8_t>(bit);
        auto opened = backend_->unseal("state", bytes_of("ctx"), edited);
        ASSERT_FALSE(opened.has_value()) << r.name << " byte " << i;
        EXPECT_EQ(opened.error().code, ErrorCode::store_tampered) << r.name;
        EXPECT_NE(opened.error().message.find("state"), std::string::npos);
      }
    }
  }
}

TEST_F(SealTest, TruncatedExtendedOrEmptyBlobsAreTampered) {
  auto sealed = backend_->seal("state", {}, bytes_of("payload"));
  ASSERT_TRUE(sealed.has_value());
  for (std::size_t n = 0; n < sealed->size(); ++n) {
    auto opened = backend_->unseal("state", {}, ByteView(*sealed).first(n));
    ASSERT_FALSE(opened.has_value()) << n;
    EXPECT_EQ(opened.error().code, ErrorCode::store_tampered);
  }
  ByteVec longer = *sealed;
  longer.push_back(0);
  EXPECT_EQ(backend_->unseal("state", {}, longer).error().code, ErrorCode::store_tampered);
}

struct Binding {
  const char* name;
  std::string record;
  ByteVec context;
};

TEST_F(SealTest, OpensOnlyAsTheRecordAndContextItWasSealedAs) {
  auto sealed = backend_->seal("ab", bytes_of("c"), bytes_of("secret"));
  ASSERT_TRUE(sealed.has_value());
  const Binding wrong[] = {
      {"other record", "counter", bytes_of("c")},
      {"other context", "ab", bytes_of("d")},
      {"empty context", "ab", {}},
      {"record/context boundary moved left", "a", bytes_of("bc")},
      {"record/context boundary moved right", "abc", {}},
      {"record with a NUL", std::string("ab\0", 3), {}},
      {"context with a NUL", "ab", ByteVec{'c', 0}},
  };
  for (const Binding& w : wrong) {
    auto opened = backend_->unseal(w.record, w.context, *sealed);
    ASSERT_FALSE(opened.has_value()) << w.name;
    EXPECT_EQ(opened.error().code, ErrorCode::store_tampered) << w.name;
  }
  EXPECT_TRUE(backend_->unseal("ab", bytes_of("c"), *sealed).has_value());
}

// Without length prefixes, "label 0 record 0 context" would be the same bytes for both.
TEST_F(SealTest, PartsThatWouldConcatenateAlikeDoNotCollide) {
  auto sealed = backend_->seal(std::string("a\0b", 3), bytes_of("c"), bytes_of("secret"));
  ASSERT_TRUE(sealed.has_value());
  const ByteVec context = {'b', 0, 'c'};
  EXPECT_EQ(backend_->unseal("a", context, *sealed).error().code, ErrorCode::store_tampered);
  EXPECT_TRUE(backend_->unseal(std::string("a\0b", 3), bytes_of("c"), *sealed).has_value());
}

TEST_F(SealTest, AnotherDevicesSecretCannotOpen) {
  TempDir other_dir;
  auto other =
      SoftwareBackend::create(other_dir.path(), platform_.key.get(), platform_.chain(), random_);
  ASSERT_TRUE(other.has_value());
  auto sealed = (*other)->seal("state", {}, bytes_of("secret"));
  ASSERT_TRUE(sealed.has_value());
  auto opened = backend_->unseal("state", {}, *sealed);
  ASSERT_FALSE(opened.has_value());
  EXPECT_EQ(opened.error().code, ErrorCode::store_tampered);
  EXPECT_EQ(opened.error().message.find(root_secret_hex()), std::string::npos);
}

// =============================================================================================
// The software backend

using BackendTest = BackendFixture;

TEST_F(BackendTest, CreateWritesPrivateFilesAndOpenRestoresThePlatform) {
  EXPECT_EQ(mode_of(dir_ / "tre.secret"), 0600u);
  EXPECT_EQ(mode_of(dir_ / "platform.sealed"), 0600u);
  EXPECT_EQ(mode_of(dir_ / "counter.sealed"), 0600u);
  EXPECT_EQ(read_bytes(dir_ / "tre.secret").size(), SoftwareBackend::kRootSecretSize);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "tre.secret.tmp"));
  // The key is sealed, not stored in the clear.
  const ByteVec sealed = read_bytes(dir_ / "platform.sealed");
  const ByteVec cert_der = pki::certificate_der(platform_.cert.get());
  EXPECT_EQ(std::search(sealed.begin(), sealed.end(), cert_der.begin(), cert_der.end()),
            sealed.end());

  auto b = reopen();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(EVP_PKEY_eq(b->platform_key(), platform_.key.get()), 1);
  ASSERT_EQ(b->platform_chain().size(), 2u);
  EXPECT_EQ(pki::certificate_der(b->platform_chain()[0].get()), cert_der);
  EXPECT_EQ(pki::certificate_der(b->platform_chain()[1].get()),
            pki::certificate_der(platform_.root.get()));
  EXPECT_EQ(*b->counter(), 0u);
  EXPECT_EQ(*b->lockdown_reason(), std::nullopt);
  // The restored key signs for the certificate.
  auto sig = pki::ecdsa_sign(b->platform_key(), bytes_of("data"));
  ASSERT_TRUE(sig.has_value());
  EXPECT_TRUE(pki::ecdsa_verify(X509_get0_pubkey(platform_.cert.get()), bytes_of("data"), *sig));
}

TEST_F(BackendTest, CreateTwiceIsAlreadyExists) {
  auto again =
      SoftwareBackend::create(dir_.path(), platform_.key.get(), platform_.chain(), random_);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, ErrorCode::already_exists);
}

TEST_F(BackendTest, CreateRefusesAKeyThatIsNotP256OrNotTheCertificates) {
  TempDir other;
  pki::PkeyPtr p384(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384"));
  ASSERT_TRUE(p384);
  auto stranger = pki::generate_p256_key();
  ASSERT_TRUE(stranger.has_value());
  struct Case {
    const char* name;
    EVP_PKEY* key;
    ErrorCode code;
  } cases[] = {{"P-384", p384.get(), ErrorCode::invalid_argument},
               {"another P-256 key", stranger->get(), ErrorCode::invalid_argument},
               {"no key", nullptr, ErrorCode::missing_argument}};
  for (const Case& c : cases) {
    auto b = SoftwareBackend::create(other.path(), c.key, platform_.chain(), random_);
    ASSERT_FALSE(b.has_value()) << c.name;
    EXPECT_EQ(b.error().code, c.code) << c.name;
    EXPECT_FALSE(std::filesystem::exists(other / "tre.secret")) << c.name;
  }
  auto empty = SoftwareBackend::create(other.path(), platform_.key.get(), {}, random_);
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code, ErrorCode::missing_argument);
}

TEST_F(BackendTest, OpenWithoutSecretIsNotFound) {
  TempDir empty;
  auto b = SoftwareBackend::open(empty.path(), random_);
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error().code, ErrorCode::not_found);
}

TEST_F(BackendTest, WrongSizeSecretIsRefusedWithoutShowingIt) {
  const ByteVec secret = read_bytes(dir_ / "tre.secret");
  backend_.reset();
  for (std::size_t size : {0u, 16u, 31u, 33u, 64u}) {
    ByteVec wrong(size, 0x5a);
    std::copy_n(secret.begin(), std::min<std::size_t>(size, secret.size()), wrong.begin());
    ASSERT_TRUE(write_file_atomic(dir_ / "tre.secret", wrong, 0600).has_value());
    auto b = SoftwareBackend::open(dir_.path(), random_);
    ASSERT_FALSE(b.has_value()) << size;
    EXPECT_EQ(b.error().code, ErrorCode::store_tampered) << size;
    EXPECT_NE(b.error().message.find("tre.secret"), std::string::npos);
    EXPECT_EQ(b.error().message.find(to_hex(secret)), std::string::npos);
  }
}

TEST_F(BackendTest, AnotherSecretCannotOpenThePlatformRecord) {
  ByteVec secret = read_bytes(dir_ / "tre.secret");
  secret[0] ^= 1;
  backend_.reset();
  ASSERT_TRUE(write_file_atomic(dir_ / "tre.secret", secret, 0600).has_value());
  auto b = SoftwareBackend::open(dir_.path(), random_);
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error().code, ErrorCode::store_tampered);
  EXPECT_NE(b.error().message.find("platform"), std::string::npos);
  EXPECT_EQ(b.error().message.find(to_hex(secret)), std::string::npos);
}

TEST_F(BackendTest, TamperedOrMissingPlatformRecordFailsOpen) {
  const ByteVec good = read_bytes(dir_ / "platform.sealed");
  backend_.reset();
  for (std::size_t i : {std::size_t{0}, std::size_t{10}, good.size() / 2, good.size() - 1}) {
    ByteVec edited = good;
    edited[i] ^= 0x40;
    write_bytes(dir_ / "platform.sealed", edited);
    auto b = SoftwareBackend::open(dir_.path(), random_);
    ASSERT_FALSE(b.has_value()) << i;
    EXPECT_EQ(b.error().code, ErrorCode::store_tampered) << i;
  }
  std::filesystem::remove(dir_ / "platform.sealed");
  auto b = SoftwareBackend::open(dir_.path(), random_);
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error().code, ErrorCode::store_tampered);
}

TEST_F(BackendTest, CounterOnlyGoesUpAndSurvivesReopen) {
  EXPECT_EQ(*backend_->counter(), 0u);
  for (std::uint64_t v : {1u, 2u, 5u, 5u, 1000u}) {
    ASSERT_TRUE(backend_->set_counter(v).has_value()) << v;
    EXPECT_EQ(*backend_->counter(), v);
  }
  for (std::uint64_t v : {999u, 1u, 0u}) {
    auto r = backend_->set_counter(v);
    ASSERT_FALSE(r.has_value()) << v;
    EXPECT_EQ(r.error().code, ErrorCode::internal);
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "counter.sealed.tmp"));
  auto b = reopen();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(*b->counter(), 1000u);
  EXPECT_EQ(b->set_counter(999).error().code, ErrorCode::internal);
}

TEST_F(BackendTest, LockdownIsStickyAndKeepsTheCounter) {
  ASSERT_TRUE(backend_->set_counter(7).has_value());
  ASSERT_TRUE(backend_->enter_lockdown("state.sealed: rollback").has_value());
  EXPECT_EQ(*backend_->lockdown_reason(), "state.sealed: rollback");
  EXPECT_EQ(*backend_->counter(), 7u);
  ASSERT_TRUE(backend_->enter_lockdown("a later reason").has_value());
  EXPECT_EQ(*backend_->lockdown_reason(), "state.sealed: rollback");
  ASSERT_TRUE(backend_->set_counter(8).has_value());  // advancing keeps the lockdown

  auto b = reopen();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(*b->lockdown_reason(), "state.sealed: rollback");
  EXPECT_EQ(*b->counter(), 8u);
}

TEST_F(BackendTest, CorruptedCounterRecordOpensButReportsTamper) {
  ByteVec counter = read_bytes(dir_ / "counter.sealed");
  counter[counter.size() - 3] ^= 0x10;
  write_bytes(dir_ / "counter.sealed", counter);
  auto b = reopen();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->counter().error().code, ErrorCode::store_tampered);
  EXPECT_EQ(b->lockdown_reason().error().code, ErrorCode::store_tampered);
  EXPECT_EQ(b->set_counter(1).error().code, ErrorCode::store_tampered);
  EXPECT_NE(b->counter().error().message.find("counter"), std::string::npos);

  // Lockdown still works, and leaves a counter no state can match.
  ASSERT_TRUE(b->enter_lockdown("counter.sealed: tampered").has_value());
  EXPECT_EQ(*b->lockdown_reason(), "counter.sealed: tampered");
  EXPECT_EQ(*b->counter(), std::numeric_limits<std::uint64_t>::max());
}

TEST_F(BackendTest, MissingOrForeignCounterRecordIsTampered) {
  TempDir other_dir;
  auto other =
      SoftwareBackend::create(other_dir.path(), platform_.key.get(), platform_.chain(), random_);
  ASSERT_TRUE(other.has_value());
  std::filesystem::copy_file(other_dir / "counter.sealed", dir_ / "counter.sealed",
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_EQ(backend_->counter().error().code, ErrorCode::store_tampered);
  std::filesystem::remove(dir_ / "counter.sealed");
  EXPECT_EQ(backend_->counter().error().code, ErrorCode::store_tampered);
  // A platform record cannot stand in for the counter record (same key, other record name).
  std::filesystem::copy_file(dir_ / "platform.sealed", dir_ / "counter.sealed");
  EXPECT_EQ(backend_->counter().error().code, ErrorCode::store_tampered);
}

TEST_F(BackendTest, InterruptedCreateCanBeRerun) {
  // Everything but tre.secret is there: not a TRE yet.
  std::filesystem::remove(dir_ / "tre.secret");
  backend_.reset();
  EXPECT_EQ(SoftwareBackend::open(dir_.path(), random_).error().code, ErrorCode::not_found);
  auto b = SoftwareBackend::create(dir_.path(), platform_.key.get(), platform_.chain(), random_);
  ASSERT_TRUE(b.has_value()) << b.error().message;
  EXPECT_EQ(*(*b)->counter(), 0u);
}

// =============================================================================================
// The state codec

constexpr std::string_view kK = "465b5ce8b199b49faa5f0a2ee238a6bc";
constexpr std::string_view kOpc = "cd63cb71954a9f4e48a5994e37a02baf";
constexpr std::string_view kK256 =
    "0123456789abcdef0123456789abcdeffedcba9876543210fedcba9876543210";
constexpr std::string_view kTopc =
    "bd04d9530e87513c5d837ac2ad954623a8e2330c115305a73eb45d1f40cccbff";

template <std::size_t N>
Bytes<N> hex_fixed(std::string_view text) {
  return *parse_hex_fixed<N>(text, "test");
}

pki::McimDocument milenage_doc(std::string imsi, std::string owner, std::string package) {
  pki::McimDocument d;
  d.package_id = std::move(package);
  d.device_id = "dev-1";
  d.imsi = std::move(imsi);
  d.algorithm = pki::McimAlgorithm::milenage;
  EXPECT_TRUE(d.set_key(hex_fixed<16>(kK)).has_value());
  d.opc = Secret<16>(hex_fixed<16>(kOpc));
  d.amf = {0x80, 0x00};
  d.sqn = {0, 0, 0, 0, 0, 0x20};
  d.ind_bits = 5;
  d.policy.owner = std::move(owner);
  d.policy.operations = {pki::McimOperation::activate, pki::McimOperation::delete_};
  d.registration_nonce = hex_fixed<16>("0f1e2d3c4b5a69788796a5b4c3d2e1f0");
  d.not_before = UtcSeconds(1735689600s);
  d.not_after = UtcSeconds(1767225600s);
  d.sequence = 7;
  return d;
}

pki::McimDocument tuak_doc() {
  pki::McimDocument d = milenage_doc("001010000000002", "sho-b", "pkg-tuak");
  d.algorithm = pki::McimAlgorithm::tuak;
  EXPECT_TRUE(d.set_key(*parse_hex(kK256, "k")).has_value());
  d.opc = Secret<16>();
  d.topc = Secret<32>(hex_fixed<32>(kTopc));
  d.tuak = pki::McimTuak{128, 256, 256, 128, 2};
  d.ind_bits = 3;
  return d;
}

Credential credential(std::string id, CredentialKind kind, McimState state,
                      std::optional<pki::McimDocument> doc) {
  Credential c;
  c.id = std::move(id);
  c.kind = kind;
  c.state = state;
  if (doc) {
    c.owner = doc->policy.owner;
    c.package_id = doc->package_id;
    c.digest = pki::sha256(encode_document(*doc)->view());
    for (std::size_t i = 0; i < (std::size_t{1} << doc->ind_bits); ++i) {
      c.seq_ms.push_back(i * 1000 + 3);
    }
  }
  c.doc = std::move(doc);
  c.installed = UtcSeconds(1735700000s);
  c.changed = UtcSeconds(1735800000s);
  return c;
}

State rich_state() {
  State s;
  s.generation = 42;
  s.config.device_id = "dev-1";
  s.config.model = "m2m-x";
  s.config.ro_operator = "ro-1";
  s.config.operator_roots = {ByteVec(300, 0x30), ByteVec{0x30, 0x82, 0x01}};
  s.config.bootstrap_key =
      Secret(hex_fixed<32>("0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff"));
  s.config.sqn_delta = 1u << 20;
  s.config.sqn_limit_l = 50;
  s.credentials.push_back(credential("pcid-0001", CredentialKind::pcid, McimState::activated,
                                     milenage_doc("001019999999999", "ro-1", "pcid")));
  s.credentials.push_back(credential("001010123456789", CredentialKind::mcim, McimState::selected,
                                     milenage_doc("001010123456789", "sho-a", "pkg-0001")));
  s.credentials.push_back(
      credential("001010000000002", CredentialKind::mcim, McimState::blocked, tuak_doc()));
  Credential tomb =
      credential("001010000000003", CredentialKind::mcim, McimState::deleted, std::nullopt);
  tomb.owner = "sho-b";
  tomb.package_id = "pkg-old";
  s.credentials.push_back(std::move(tomb));
  s.package_sequence = {{"sho-a", 7}, {"sho-b", 3}};
  s.instruction_sequence = {{"ro-1", 2}, {"sho-a", 12}};
  s.last_instruction = {{"ro-1", {pki::sha256(bytes_of("ro-1's list")), "ok"}},
                        {"sho-a", {pki::sha256(bytes_of("sho-a's block")), "transition_refused"}}};
  s.registration_nonce = hex_fixed<16>("00112233445566778899aabbccddeeff");
  s.audit.seq = 17;
  s.audit.hash = pki::sha256(bytes_of("line 17"));
  s.audit.last_line = R"({"entry":{"seq":17},"signature":"3045"})";
  return s;
}

std::string doc_text(const std::optional<pki::McimDocument>& doc) {
  if (!doc) return "<none>";
  auto e = encode_document(*doc);
  return e ? std::string(e->text()) : "<invalid>";
}

void expect_same_state(const State& a, const State& b) {
  EXPECT_EQ(a.generation, b.generation);
  EXPECT_EQ(a.config.device_id, b.config.device_id);
  EXPECT_EQ(a.config.model, b.config.model);
  EXPECT_EQ(a.config.ro_operator, b.config.ro_operator);
  EXPECT_EQ(a.config.operator_roots, b.config.operator_roots);
  EXPECT_EQ(a.config.bootstrap_key.get(), b.config.bootstrap_key.get());
  EXPECT_EQ(a.config.sqn_delta, b.config.sqn_delta);
  EXPECT_EQ(a.config.sqn_limit_l, b.config.sqn_limit_l);
  ASSERT_EQ(a.credentials.size(), b.credentials.size());
  for (std::size_t i = 0; i < a.credentials.size(); ++i) {
    const Credential &x = a.credentials[i], &y = b.credentials[i];
    SCOPED_TRACE("credential " + x.id);
    EXPECT_EQ(x.id, y.id);
    EXPECT_EQ(x.kind, y.kind);
    EXPECT_EQ(x.state, y.state);
    EXPECT_EQ(x.owner, y.owner);
    EXPECT_EQ(x.package_id, y.package_id);
    EXPECT_EQ(x.doc.has_value(), y.doc.has_value());
    EXPECT_EQ(doc_text(x.doc), doc_text(y.doc));  // canonical: equal text iff equal documents
    if (x.doc && y.doc) {
      EXPECT_EQ(to_hex(x.doc->key()), to_hex(y.doc->key()));
      EXPECT_EQ(x.doc->algorithm, y.doc->algorithm);
      EXPECT_EQ(x.doc->ind_bits, y.doc->ind_bits);
    }
    EXPECT_EQ(x.digest, y.digest);
    EXPECT_EQ(x.seq_ms, y.seq_ms);
    EXPECT_EQ(x.installed, y.installed);
    EXPECT_EQ(x.changed, y.changed);
  }
  EXPECT_TRUE(a.package_sequence == b.package_sequence);
  EXPECT_TRUE(a.instruction_sequence == b.instruction_sequence);
  EXPECT_EQ(a.registration_nonce, b.registration_nonce);
  EXPECT_EQ(a.audit.seq, b.audit.seq);
  EXPECT_EQ(a.audit.hash, b.audit.hash);
  EXPECT_EQ(a.audit.last_line, b.audit.last_line);
  ASSERT_EQ(a.last_instruction.size(), b.last_instruction.size());
  for (auto x = a.last_instruction.begin(), y = b.last_instruction.begin();
       x != a.last_instruction.end(); ++x, ++y) {
    EXPECT_EQ(x->first, y->first);
    EXPECT_EQ(x->second.digest, y->second.digest);
    EXPECT_EQ(x->second.outcome, y->second.outcome);
  }
}

ByteVec encoded(const State& s) {
  auto e = encode_state(s);
  EXPECT_TRUE(e.has_value()) << e.error().message;
  return e ? ByteVec(e->view().begin(), e->view().end()) : ByteVec{};
}

// An independent writer of the documented layout (state.cpp) that writes whatever the State
// holds, valid or not, plus byte-level deviations a State cannot express.
using Pairs = std::vector<std::pair<std::string, std::uint64_t>>;

struct Tweaks {
  std::string magic = "MST1";
  std::uint8_t version = 3;
  // Version 1 held the PIN (u8 size | digits) where later versions hold the bootstrap key;
  // versions 1 and 2 have no last_instruction.
  std::string pin = "12345678";
  std::optional<std::uint8_t> kind, state, has_doc, has_nonce;  // credential 0 / the nonce flag
  std::optional<std::string> doc_text;                          // credential 0's document bytes
  std::optional<Pairs> package_sequence;
  std::optional<std::string> first_outcome;  // last_instruction's first outcome
  bool trailing = false;
};

class RawWriter {
 public:
  void be(std::uint64_t v, std::size_t n) {
    for (std::size_t i = n; i-- > 0;) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void raw(ByteView v) { out.insert(out.end(), v.begin(), v.end()); }
  void raw(std::string_view s) {
    raw(ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()));
  }
  void str(std::string_view s) {
    be(s.size(), 2);
    raw(s);
  }
  ByteVec out;
};

ByteVec raw_encode(const State& s, const Tweaks& t = {}) {
  RawWriter w;
  w.raw(t.magic);
  w.be(t.version, 1);
  w.be(s.generation, 8);
  w.str(s.config.device_id);
  w.str(s.config.model);
  w.str(s.config.ro_operator);
  w.be(s.config.operator_roots.size(), 2);
  for (const ByteVec& r : s.config.operator_roots) {
    w.be(r.size(), 4);
    w.raw(r);
  }
  if (t.version == 1) {
    w.be(t.pin.size(), 1);
    w.raw(t.pin);
  } else {
    w.raw(s.config.bootstrap_key.get());
  }
  w.be(s.config.sqn_delta, 8);
  w.be(s.config.sqn_limit_l, 8);
  w.be(s.credentials.size(), 2);
  for (std::size_t i = 0; i < s.credentials.size(); ++i) {
    const Credential& c = s.credentials[i];
    const bool first = i == 0;
    w.str(c.id);
    w.be(first && t.kind ? *t.kind : static_cast<std::uint8_t>(c.kind), 1);
    w.be(first && t.state ? *t.state : static_cast<std::uint8_t>(c.state), 1);
    w.str(c.owner);
    w.str(c.package_id);
    w.be(first && t.has_doc ? *t.has_doc : (c.doc ? 1 : 0), 1);
    if (c.doc) {
      const std::string text = first && t.doc_text ? *t.doc_text : doc_text(c.doc);
      w.be(text.size(), 4);
      w.raw(text);
    }
    w.raw(c.digest);
    w.be(c.seq_ms.size(), 2);
    for (std::uint64_t v : c.seq_ms) w.be(v, 8);
    w.be(static_cast<std::uint64_t>(c.installed.time_since_epoch().count()), 8);
    w.be(static_cast<std::uint64_t>(c.changed.time_since_epoch().count()), 8);
  }
  const Pairs packages = t.package_sequence
                             ? *t.package_sequence
                             : Pairs(s.package_sequence.begin(), s.package_sequence.end());
  w.be(packages.size(), 2);
  for (const auto& [k, v] : packages) {
    w.str(k);
    w.be(v, 8);
  }
  w.be(s.instruction_sequence.size(), 2);
  for (const auto& [k, v] : s.instruction_sequence) {
    w.str(k);
    w.be(v, 8);
  }
  if (t.version >= 3) {
    w.be(s.last_instruction.size(), 2);
    bool first = true;
    for (const auto& [k, v] : s.last_instruction) {
      w.str(k);
      w.raw(v.digest);
      w.str(first && t.first_outcome ? *t.first_outcome : v.outcome);
      first = false;
    }
  }
  w.be(t.has_nonce ? *t.has_nonce : (s.registration_nonce ? 1 : 0), 1);
  if (s.registration_nonce) w.raw(*s.registration_nonce);
  w.be(s.audit.seq, 8);
  w.raw(s.audit.hash);
  w.str(s.audit.last_line);
  if (t.trailing) w.out.push_back(0);
  return w.out;
}

void expect_no_secret(const std::string& message) {
  for (std::string_view secret : {kK, kOpc, kK256, kTopc, std::string_view("12345678")}) {
    EXPECT_EQ(message.find(secret), std::string::npos) << message;
  }
}

using StateCodecTest = ::testing::Test;

TEST_F(StateCodecTest, RichStateRoundTripsFieldByField) {
  const State s = rich_state();
  const ByteVec bytes = encoded(s);
  auto back = decode_state(bytes);
  ASSERT_TRUE(back.has_value()) << back.error().message;
  expect_same_state(s, *back);
  EXPECT_EQ(encoded(*back), bytes);  // one encoding per state
  EXPECT_EQ(text_of(ByteView(bytes).first(5)), std::string("MST1\x03", 5));
}

TEST_F(StateCodecTest, MatchesTheDocumentedLayout) {
  EXPECT_EQ(encoded(rich_state()), raw_encode(rich_state()));
  State minimal;
  minimal.generation = 1;
  minimal.config = rich_state().config;
  EXPECT_EQ(encoded(minimal), raw_encode(minimal));
}

TEST_F(StateCodecTest, ReadsVersion1DerivingTheKeyFromItsPin) {
  // A state that a TRE of the first layout committed: the PIN where the key is now. It loads
  // with the key of (PIN, device id), and its next encoding is version 3 without the PIN.
  const State s = rich_state();
  Tweaks v1;
  v1.version = 1;
  auto back = decode_state(raw_encode(s, v1));
  ASSERT_TRUE(back.has_value()) << back.error().message;
  auto key = derive_bootstrap_key("12345678", s.config.device_id);
  ASSERT_TRUE(key);
  EXPECT_EQ(back->config.bootstrap_key.get(), key->get());
  State expected = rich_state();
  expected.config.bootstrap_key = *key;
  expected.last_instruction.clear();  // version 1 has none
  expect_same_state(expected, *back);
  const ByteVec again = encoded(*back);
  EXPECT_EQ(again, raw_encode(expected));  // version 3: the key, and no PIN
}

TEST_F(StateCodecTest, ReadsVersion2WithoutTheLastInstructionsAnswers) {
  // A state committed before the TRE kept its answers to instructions (F9): it loads with none,
  // so the last instruction delivered again is a replay, as it was; the next commit writes
  // version 3.
  State s = rich_state();
  s.last_instruction.clear();
  Tweaks v2;
  v2.version = 2;
  const ByteVec old = raw_encode(s, v2);
  auto back = decode_state(old);
  ASSERT_TRUE(back.has_value()) << back.error().message;
  expect_same_state(s, *back);
  const ByteVec again = encoded(*back);
  EXPECT_EQ(again, raw_encode(s));
  EXPECT_EQ(again.size(), old.size() + 2);  // an empty last_instruction
}

TEST_F(StateCodecTest, AcceptsValuesAtTheirBounds) {
  State s = rich_state();
  s.config.model = std::string(128, 'm');
  s.config.operator_roots.assign(16, ByteVec(8192, 0x42));
  s.credentials.resize(4);
  for (std::size_t i = s.credentials.size(); i < 64; ++i) {
    s.credentials.push_back(credential(fmt::format("{:0>128}", i), CredentialKind::mcim,
                                       McimState::retired, std::nullopt));
  }
  s.package_sequence.clear();
  for (int i = 0; i < 256; ++i) s.package_sequence[fmt::format("op-{:03}", i)] = 1;
  s.audit.last_line = std::string(4096, 'x');
  auto back = decode_state(encoded(s));
  ASSERT_TRUE(back.has_value()) << back.error().message;
  expect_same_state(s, *back);

  // ind_bits 0 and 10: 1 and 1024 SEQ_MS entries.
  for (unsigned ind : {0u, 10u}) {
    auto doc = milenage_doc("001010123456789", "sho-a", "pkg-0001");
    doc.ind_bits = ind;
    s.credentials[1] =
        credential("001010123456789", CredentialKind::mcim, McimState::installed, doc);
    s.credentials[1].seq_ms.back() = aka::SqnPolicy{ind}.seq_max();
    auto again = decode_state(encoded(s));
    ASSERT_TRUE(again.has_value()) << again.error().message;
    EXPECT_EQ(again->credentials[1].seq_ms.size(), std::size_t{1} << ind);
  }
}

TEST_F(StateCodecTest, RetiredCredentialsMayKeepOrDropTheirDocument) {
  State s = rich_state();
  s.credentials[1].state = McimState::retired;
  s.credentials[3].state = McimState::retired;  // the tombstone, without a document
  auto back = decode_state(encoded(s));
  ASSERT_TRUE(back.has_value()) << back.error().message;
  expect_same_state(s, *back);
}

TEST_F(StateCodecTest, EveryTruncationIsBadFormat) {
  const ByteVec bytes = encoded(rich_state());
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    auto r = decode_state(ByteView(bytes).first(n));
    ASSERT_FALSE(r.has_value()) << "prefix of " << n << " bytes decoded";
    EXPECT_EQ(r.error().code, ErrorCode::bad_format) << n;
    EXPECT_EQ(r.error().message.rfind("state: ", 0), 0u) << r.error().message;
    expect_no_secret(r.error().message);
  }
}

TEST_F(StateCodecTest, TrailingBytesAreBadFormat) {
  ByteVec bytes = encoded(rich_state());
  bytes.push_back(0);
  auto r = decode_state(bytes);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::bad_format);
  EXPECT_NE(r.error().message.find("trailing"), std::string::npos);
  Tweaks t;
  t.trailing = true;
  EXPECT_EQ(decode_state(raw_encode(rich_state(), t)).error().code, ErrorCode::bad_format);
}

// One refused encoding: the State edit (when a State can express it, encode_state refuses it
// too), the byte-level tweak, and the field the error must name.
struct Refusal {
  const char* name;
  std::function<void(State&)> edit;
  Tweaks tweaks;
  std::string field;
  bool encoder_refuses = true;
};

Tweaks tweak(std::function<void(Tweaks&)> f) {
  Tweaks t;
  f(t);
  return t;
}

std::vector<Refusal> refusals() {
  const auto none = [](State&) {};
  // Exactly one over each bound, so that an off-by-one bound fails too.
  const auto many_tombstones = [](State& s) {
    for (std::size_t i = s.credentials.size(); i < 65; ++i) {
      s.credentials.push_back(credential(fmt::format("t{}", i), CredentialKind::mcim,
                                         McimState::deleted, std::nullopt));
    }
  };
  return {
      {"bad magic", none, tweak([](Tweaks& t) { t.magic = "MST2"; }), "magic", false},
      {"unknown version", none, tweak([](Tweaks& t) { t.version = 4; }), "version", false},
      {"version 0", none, tweak([](Tweaks& t) { t.version = 0; }), "version", false},
      {"65 credentials", many_tombstones, {}, "credentials"},
      {"17 operator roots",
       [](State& s) { s.config.operator_roots.assign(17, ByteVec(10, 1)); },
       {},
       "config.operator_roots"},
      {"root over 8 KiB",
       [](State& s) { s.config.operator_roots[1] = ByteVec(8193, 1); },
       {},
       "config.operator_roots[1]"},
      {"empty root",
       [](State& s) { s.config.operator_roots[0].clear(); },
       {},
       "config.operator_roots[0]"},
      {"257 package operators",
       [](State& s) {
         s.package_sequence.clear();
         for (int i = 0; i < 257; ++i) s.package_sequence[fmt::format("op{}", i)] = 1;
       },
       {},
       "package_sequence"},
      {"257 instruction operators",
       [](State& s) {
         s.instruction_sequence.clear();
         for (int i = 0; i < 257; ++i) s.instruction_sequence[fmt::format("op{}", i)] = 1;
       },
       {},
       "instruction_sequence"},
      {"empty operator name",
       [](State& s) { s.instruction_sequence[""] = 1; },
       {},
       "instruction_sequence"},
      {"an answer without a sequence",
       [](State& s) {
         s.last_instruction["sho-z"] = {Bytes<32>{}, "ok"};
       },
       {},
       "last_instruction"},
      {"an answer's empty operator name",
       [](State& s) {
         s.instruction_sequence[""] = 1;
         s.last_instruction[""] = {Bytes<32>{}, "ok"};
       },
       {},
       "instruction_sequence"},
      {"an answer's outcome not a code",
       [](State& s) { s.last_instruction["sho-a"].outcome = "applied"; },
       {},
       "last_instruction.outcome"},
      {"an answer's empty outcome",
       [](State& s) { s.last_instruction["sho-a"].outcome.clear(); },
       {},
       "last_instruction.outcome"},
      {"an answer's outcome over 128 bytes", none,
       tweak([](Tweaks& t) { t.first_outcome = std::string(129, 'o'); }), "last_instruction",
       false},
      {"long operator name",
       [](State& s) { s.package_sequence[std::string(129, 'o')] = 1; },
       {},
       "package_sequence"},
      {"long device id",
       [](State& s) { s.config.device_id = std::string(129, 'd'); },
       {},
       "config.device_id"},
      {"long model", [](State& s) { s.config.model = std::string(129, 'm'); }, {}, "config.model"},
      {"long RO",
       [](State& s) { s.config.ro_operator = std::string(129, 'r'); },
       {},
       "config.ro_operator"},
      {"long id",
       [](State& s) { s.credentials[0].id = std::string(129, '1'); },
       {},
       "credentials[0].id"},
      {"empty id", [](State& s) { s.credentials[2].id.clear(); }, {}, "credentials[2].id"},
      {"long owner",
       [](State& s) { s.credentials[3].owner = std::string(129, 'o'); },
       {},
       "credentials[3].owner"},
      {"long package id",
       [](State& s) { s.credentials[3].package_id = std::string(129, 'p'); },
       {},
       "credentials[3].package_id"},
      {"long audit line",
       [](State& s) { s.audit.last_line = std::string(4097, 'x'); },
       {},
       "audit.last_line"},
      {"audit line with a newline",
       [](State& s) { s.audit.last_line += "\n"; },
       {},
       "audit.last_line"},
      {"empty log with a line", [](State& s) { s.audit.seq = 0; }, {}, "audit"},
      {"log without its last line",
       [](State& s) { s.audit.last_line.clear(); },
       {},
       "audit.last_line"},
      // Version 1's PIN: 4..16 ASCII digits, from which the key is derived.
      {"v1 PIN of 3", none, tweak([](Tweaks& t) {
         t.version = 1;
         t.pin = "123";
       }),
       "config.pin", false},
      {"v1 PIN of 17", none, tweak([](Tweaks& t) {
         t.version = 1;
         t.pin = std::string(17, '1');
       }),
       "config.pin_size", false},
      {"v1 PIN of 0", none, tweak([](Tweaks& t) {
         t.version = 1;
         t.pin = "";
       }),
       "config.pin", false},
      {"v1 non-digit PIN", none, tweak([](Tweaks& t) {
         t.version = 1;
         t.pin = "123a5678";
       }),
       "config.pin", false},
      {"v1 PIN with a NUL", none, tweak([](Tweaks& t) {
         t.version = 1;
         t.pin = std::string("1234567\0", 8);
       }),
       "config.pin", false},
      {"delta 0", [](State& s) { s.config.sqn_delta = 0; }, {}, "config.sqn_delta"},
      {"SQN array too short",
       [](State& s) { s.credentials[1].seq_ms.pop_back(); },
       {},
       "credentials[1].seq_ms"},
      {"SQN array too long",
       [](State& s) { s.credentials[2].seq_ms.push_back(0); },
       {},
       "credentials[2].seq_ms"},
      {"SEQ above its range",
       [](State& s) { s.credentials[2].seq_ms[5] = aka::SqnPolicy{3}.seq_max() + 1; },
       {},
       "credentials[2].seq_ms[5]"},
      {"tombstone with an SQN array",
       [](State& s) { s.credentials[3].seq_ms = {1}; },
       {},
       "credentials[3].seq_ms"},
      {"duplicate id",
       [](State& s) { s.credentials[2].id = s.credentials[1].id; },
       {},
       "credentials[2].id"},
      {"active credential without document",
       [](State& s) {
         s.credentials[1].doc.reset();
         s.credentials[1].seq_ms.clear();
       },
       {},
       "credentials[1].doc"},
      {"deleted credential with its keys",
       [](State& s) { s.credentials[1].state = McimState::deleted; },
       {},
       "credentials[1].doc"},
      {"negative time",
       [](State& s) { s.credentials[0].installed = UtcSeconds(std::chrono::seconds(-1)); },
       {},
       "credentials[0].installed"},
      {"time after 9999",
       [](State& s) { s.credentials[0].changed = UtcSeconds(std::chrono::seconds(253402300800)); },
       {},
       "credentials[0].changed"},
      {"kind out of range", none, tweak([](Tweaks& t) { t.kind = 2; }), "credentials[0].kind",
       false},
      {"state out of range", none, tweak([](Tweaks& t) { t.state = 6; }), "credentials[0].state",
       false},
      {"doc flag 2", none, tweak([](Tweaks& t) { t.has_doc = 2; }), "credentials[0].has_doc",
       false},
      {"nonce flag 2", none, tweak([](Tweaks& t) { t.has_nonce = 2; }), "registration_nonce",
       false},
      {"document not canonical", none, tweak([](Tweaks& t) { t.doc_text = "{}"; }),
       "credentials[0].doc", false},
      {"sequence keys out of order", none, tweak([](Tweaks& t) {
         t.package_sequence = Pairs{{"sho-b", 1}, {"sho-a", 2}};
       }),
       "package_sequence", false},
      {"duplicate sequence key", none, tweak([](Tweaks& t) {
         t.package_sequence = Pairs{{"sho-a", 1}, {"sho-a", 2}};
       }),
       "package_sequence", false},
  };
}

TEST_F(StateCodecTest, RefusesEveryOutOfBoundsField) {
  for (const Refusal& r : refusals()) {
    SCOPED_TRACE(r.name);
    State s = rich_state();
    r.edit(s);
    auto d = decode_state(raw_encode(s, r.tweaks));
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error().code, ErrorCode::bad_format);
    EXPECT_NE(d.error().message.find(r.field), std::string::npos) << d.error().message;
    expect_no_secret(d.error().message);
    if (r.encoder_refuses) {
      auto e = encode_state(s);
      ASSERT_FALSE(e.has_value());
      EXPECT_EQ(e.error().code, ErrorCode::invalid_argument);
      EXPECT_NE(e.error().message.find(r.field), std::string::npos) << e.error().message;
    }
  }
}

TEST_F(StateCodecTest, RandomMutationsNeverCrash) {
  const ByteVec good = encoded(rich_state());
  std::mt19937 rng(20240611);
  int decoded = 0;
  for (int iteration = 0; iteration < 2000; ++iteration) {
    ByteVec b = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !b.empty(); ++e) {
      const std::size_t at = rng() % b.size();
      switch (rng() % 4) {
        case 0: b[at] ^= static_cast<std::uint8_t>(1u << (rng() % 8)); break;
        case 1: b[at] = static_cast<std::uint8_t>(rng()); break;
        case 2: b.erase(b.begin() + static_cast<std::ptrdiff_t>(at)); break;
        default:
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), static_cast<std::uint8_t>(rng()));
          break;
      }
    }
    auto r = decode_state(b);
    if (r) {
      ++decoded;
      // Whatever decodes is a valid state: it encodes again, to the same bytes.
      auto again = encode_state(*r);
      ASSERT_TRUE(again.has_value()) << again.error().message;
      EXPECT_TRUE(std::equal(b.begin(), b.end(), again->view().begin(), again->view().end()));
    } else {
      EXPECT_EQ(r.error().code, ErrorCode::bad_format);
      expect_no_secret(r.error().message);
    }
  }
  // Mutations in free-form bytes (digests, hashes, SEQ values) decode: the test saw both paths.
  EXPECT_GT(decoded, 0);
  EXPECT_LT(decoded, 2000);
}

TEST_F(StateCodecTest, FindLooksUpById) {
  State s = rich_state();
  ASSERT_NE(s.find("001010000000002"), nullptr);
  EXPECT_EQ(s.find("001010000000002")->state, McimState::blocked);
  s.find("pcid-0001")->state = McimState::blocked;
  EXPECT_EQ(s.credentials[0].state, McimState::blocked);
  const State& cs = s;
  EXPECT_EQ(cs.find("nope"), nullptr);
  EXPECT_NE(cs.find("001010000000003"), nullptr);
}

// =============================================================================================
// config_digest

// The layout documented in state.h, written out independently.
Bytes<32> documented_digest(const Config& c) {
  RawWriter w;
  w.raw(std::string_view("mcim-tre-config/1"));
  w.be(0, 1);
  w.be(c.model.size(), 4);
  w.raw(c.model);
  w.be(c.ro_operator.size(), 4);
  w.raw(c.ro_operator);
  std::vector<ByteVec> roots = c.operator_roots;
  std::sort(roots.begin(), roots.end());
  w.be(roots.size(), 4);
  for (const ByteVec& r : roots) {
    w.be(r.size(), 4);
    w.raw(r);
  }
  w.be(c.sqn_delta, 8);
  w.be(c.sqn_limit_l, 8);
  return pki::sha256(w.out);
}

TEST(ConfigDigestTest, IsTheDocumentedEncoding) {
  const Config c = rich_state().config;
  EXPECT_EQ(config_digest(c), documented_digest(c));
  EXPECT_EQ(config_digest(Config{}), documented_digest(Config{}));
}

TEST(ConfigDigestTest, ChangesWithEveryModelWideField) {
  const Config base = rich_state().config;
  const Bytes<32> d0 = config_digest(base);
  const std::pair<const char*, std::function<void(Config&)>> edits[] = {
      {"model", [](Config& c) { c.model += "2"; }},
      {"ro_operator", [](Config& c) { c.ro_operator = "ro-2"; }},
      {"a root added", [](Config& c) { c.operator_roots.push_back({0x30}); }},
      {"a root removed", [](Config& c) { c.operator_roots.pop_back(); }},
      {"a root byte", [](Config& c) { c.operator_roots[0][5] ^= 1; }},
      {"sqn_delta", [](Config& c) { c.sqn_delta += 1; }},
      {"sqn_limit_l", [](Config& c) { c.sqn_limit_l += 1; }},
      // Length prefixes: moving bytes between model and RO changes the digest.
      {"model/RO boundary",
       [](Config& c) {
         c.model += c.ro_operator.substr(0, 1);
         c.ro_operator.erase(0, 1);
       }},
  };
  for (const auto& [name, edit] : edits) {
    Config c = base;
    edit(c);
    EXPECT_NE(config_digest(c), d0) << name;
  }
}

TEST(ConfigDigestTest, IgnoresPerDeviceFieldsAndRootOrder) {
  const Config base = rich_state().config;
  const Bytes<32> d0 = config_digest(base);
  Config c = base;
  c.device_id = "dev-2";
  c.bootstrap_key.mut()[0] ^= 0xff;
  std::reverse(c.operator_roots.begin(), c.operator_roots.end());
  EXPECT_EQ(config_digest(c), d0);
}

// =============================================================================================
// The state file

// Passes everything to a real backend, except that set_counter can be skipped (a crash between
// writing the state and advancing the counter) or made to fail.
class CrashingBackend final : public Backend {
 public:
  explicit CrashingBackend(Backend& inner) : inner_(inner) {}
  Result<ByteVec> seal(std::string_view r, ByteView c, ByteView p) override {
    return inner_.seal(r, c, p);
  }
  Result<SecretBytes> unseal(std::string_view r, ByteView c, ByteView s) const override {
    return inner_.unseal(r, c, s);
  }
  Result<std::uint64_t> counter() const override { return inner_.counter(); }
  Result<void> set_counter(std::uint64_t value) override {
    if (fail_counter) return fail(ErrorCode::io_error, "counter.sealed: injected failure");
    if (skip_counter) return {};
    return inner_.set_counter(value);
  }
  Result<std::optional<std::string>> lockdown_reason() const override {
    return inner_.lockdown_reason();
  }
  Result<void> enter_lockdown(std::string_view reason) override {
    return inner_.enter_lockdown(reason);
  }
  EVP_PKEY* platform_key() const override { return inner_.platform_key(); }
  const std::vector<pki::X509Ptr>& platform_chain() const override {
    return inner_.platform_chain();
  }

  bool skip_counter = false;
  bool fail_counter = false;

 private:
  Backend& inner_;
};

class StateFileTest : public BackendFixture {
 protected:
  State first_state() {
    State s = rich_state();
    s.generation = 1;
    return s;
  }
  // Loads with a fresh StateFile (as a restarted TRE would).
  Result<State> load_fresh() { return StateFile(dir_.path(), *backend_).load(); }
  std::string state_path() { return dir_ / "state.sealed"; }
};

TEST_F(StateFileTest, CreateThenLoad) {
  StateFile file(dir_.path(), *backend_);
  EXPECT_EQ(file.load().error().code, ErrorCode::not_found);
  ASSERT_TRUE(file.create(first_state()).has_value());
  EXPECT_EQ(*backend_->counter(), 1u);
  EXPECT_EQ(mode_of(state_path()), 0600u);
  auto s = load_fresh();
  ASSERT_TRUE(s.has_value()) << s.error().message;
  expect_same_state(first_state(), *s);
  // The file holds no key in the clear.
  const std::string on_disk = text_of(read_bytes(state_path()));
  EXPECT_EQ(on_disk.find(kK), std::string::npos);
  EXPECT_EQ(on_disk.find("12345678"), std::string::npos);
}

TEST_F(StateFileTest, CreateRefusesASecondStateOrAnotherGeneration) {
  StateFile file(dir_.path(), *backend_);
  State s = first_state();
  s.generation = 2;
  EXPECT_EQ(file.create(s).error().code, ErrorCode::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(state_path()));
  ASSERT_TRUE(file.create(first_state()).has_value());
  EXPECT_EQ(file.create(first_state()).error().code, ErrorCode::already_exists);
  // A deleted state file does not let a new generation 1 in: the counter remembers.
  std::filesystem::remove(state_path());
  EXPECT_EQ(StateFile(dir_.path(), *backend_).create(first_state()).error().code,
            ErrorCode::already_exists);
}

TEST_F(StateFileTest, CommitAdvancesGenerationAndCounter) {
  StateFile file(dir_.path(), *backend_);
  ASSERT_TRUE(file.create(first_state()).has_value());
  State s = first_state();
  for (std::uint64_t g = 2; g <= 5; ++g) {
    s.generation = g;
    s.audit.seq = g + 100;
    ASSERT_TRUE(file.commit(s).has_value()) << g;
    EXPECT_EQ(*backend_->counter(), g);
  }
  auto loaded = load_fresh();
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
  EXPECT_EQ(loaded->generation, 5u);
  EXPECT_EQ(loaded->audit.seq, 105u);
  EXPECT_FALSE(std::filesystem::exists(state_path() + ".tmp"));
}

TEST_F(StateFileTest, CommitRefusesAnyGenerationButTheNext) {
  StateFile fresh(dir_.path(), *backend_);
  State s = first_state();
  s.generation = 2;
  EXPECT_EQ(fresh.commit(s).error().code, ErrorCode::internal);  // nothing loaded
  ASSERT_TRUE(fresh.create(first_state()).has_value());
  for (std::uint64_t g : {0u, 1u, 3u, 100u}) {
    s.generation = g;
    EXPECT_EQ(fresh.commit(s).error().code, ErrorCode::internal) << g;
  }
  EXPECT_EQ(*backend_->counter(), 1u);
  StateFile loaded(dir_.path(), *backend_);
  ASSERT_TRUE(loaded.load().has_value());
  s.generation = 2;
  EXPECT_TRUE(loaded.commit(s).has_value());
}

TEST_F(StateFileTest, CommitOfAnInvalidStateWritesNothing) {
  StateFile file(dir_.path(), *backend_);
  ASSERT_TRUE(file.create(first_state()).has_value());
  const ByteVec before = read_bytes(state_path());
  State s = first_state();
  s.generation = 2;
  s.config.sqn_delta = 0;
  EXPECT_EQ(file.commit(s).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(read_bytes(state_path()), before);
  EXPECT_EQ(*backend_->counter(), 1u);
}

TEST_F(StateFileTest, RestoredOldCopyIsRollback) {
  StateFile file(dir_.path(), *backend_);
  ASSERT_TRUE(file.create(first_state()).has_value());
  State s = first_state();
  s.generation = 2;
  ASSERT_TRUE(file.commit(s).has_value());
  const ByteVec gen2 = read_bytes(state_path());
  s.generation = 3;
  ASSERT_TRUE(file.commit(s).has_value());
  write_bytes(state_path(), gen2);
  auto r = load_fresh();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::rollback_detected);
  EXPECT_NE(r.error().message.find("state.sealed"), std::string::npos);
}

TEST_F(StateFileTest, InterruptedCommitIsRepairedOnLoad) {
  StateFile file(dir_.path(), *backend_);
  ASSERT_TRUE(file.create(first_state()).has_value());
  CrashingBackend crashing(*backend_);
  StateFile before_crash(dir_.path(), crashing);
  ASSERT_TRUE(before_crash.load().has_value());
  crashing.skip_counter = true;
  State s = first_state();
  s.generation = 2;
  ASSERT_TRUE(before_crash.commit(s).has_value());
  EXPECT_EQ(*backend_->counter(), 1u);  // the "crash": state 2 on disk, counter still 1

  StateFile after(dir_.path(), *backend_);
  auto loaded = after.load();
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
  EXPECT_EQ(loaded->generation, 2u);
  EXPECT_TRUE(after.repaired_counter());
  EXPECT_EQ(*backend_->counter(), 2u);
  ASSERT_TRUE(after.load().has_value());
  EXPECT_FALSE(after.repaired_counter());
}

TEST_F(StateFileTest, StateTwoAheadOfTheCounterIsTampered) {
  StateFile file(dir_.path(), *backend_);
  ASSERT_TRUE(file.create(first_state()).has_value());
  CrashingBackend crashing(*backend_);
  crashing.skip_counter = true;
  StateFile skipping(dir_.path(), crashing);
  ASSERT_TRUE(skipping.load().has_value());
  State s = first_state();
  for (std::uint64_t g : {2u, 3u}) {
    s.generation = g;
    ASSERT_TRUE(skipping.commit(s).has_value());
  }
  auto r = load_fresh();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::store_tampered);
  EXPECT_EQ(*backend_->counter(), 1u);
}

TEST_F(StateFileTest, FailedCounterUpdateIsRetriedWithTheSameGeneration) {
  StateFile file(dir_.path(), *backend_);
  ASSERT_TRUE(file.create(first_state()).has_value());
  CrashingBackend crashing(*backend_);
  StateFile f(dir_.path(), crashing);
  ASSERT_TRUE(f.load().has_value());
  crashing.fail_counter = true;
  State s = first_state();
  s.generation = 2;
  EXPECT_EQ(f.commit(s).error().code, ErrorCode::io_error);
  crashing.fail_counter = false;
  s.generation = 3;
  EXPECT_EQ(f.commit(s).error().code, ErrorCode::internal);
  s.generation = 2;
  ASSERT_TRUE(f.commit(s).has_value());
  EXPECT_EQ(*backend_->counter(), 2u);
  EXPECT_TRUE(load_fresh().has_value());
}

TEST_F(StateFileTest, RelabelledHeaderIsTampered) {
  StateFile file(dir_.path(), *backend_);
  ASSERT_TRUE(file.create(first_state()).has_value());
  State s = first_state();
  s.generation = 2;
  ASSERT_TRUE(file.commit(s).has_value());
  const ByteVec good = read_bytes(state_path());
  // Every other generation in the header, including the counter's own and the next one.
  for (std::uint64_t g : {0ull, 1ull, 3ull, 0x0100000000000002ull}) {
    ByteVec edited = good;
    const Bytes<8> header = to_be<8>(g);
    std::copy(header.begin(), header.end(), edited.begin());
    write_bytes(state_path(), edited);
    auto r = load_fresh();
    ASSERT_FALSE(r.has_value()) << g;
    EXPECT_EQ(r.error().code, ErrorCode::store_tampered) << g;
  }
  for (std::size_t n : {0u, 7u, 8u, 20u}) {
    write_bytes(state_path(), ByteView(good).first(n));
    EXPECT_EQ(load_fresh().error().code, ErrorCode::store_tampered) << n;
  }
}

TEST_F(StateFileTest, BlobOfAnotherRecordIsTampered) {
  StateFile file(dir_.path(), *backend_);
  ASSERT_TRUE(file.create(first_state()).has_value());
  // A valid encoding of generation 1, sealed under the right context but as another record.
  auto plain = encode_state(first_state());
  ASSERT_TRUE(plain.has_value());
  const Bytes<8> header = to_be<8>(1);
  auto sealed = backend_->seal("counter", header, plain->view());
  ASSERT_TRUE(sealed.has_value());
  ByteVec forged(header.begin(), header.end());
  forged.insert(forged.end(), sealed->begin(), sealed->end());
  write_bytes(state_path(), forged);
  auto r = load_fresh();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::store_tampered);
}

TEST_F(StateFileTest, HeaderAndContentGenerationsMustAgree) {
  StateFile file(dir_.path(), *backend_);
  ASSERT_TRUE(file.create(first_state()).has_value());
  // Sealed with a matching context, but the state inside claims another generation: only a
  // holder of the storage key could do this, and it is still refused.
  State s = first_state();
  s.generation = 2;
  auto plain = encode_state(s);
  ASSERT_TRUE(plain.has_value());
  const Bytes<8> header = to_be<8>(1);
  auto sealed = backend_->seal("state", header, plain->view());
  ASSERT_TRUE(sealed.has_value());
  ByteVec forged(header.begin(), header.end());
  forged.insert(forged.end(), sealed->begin(), sealed->end());
  write_bytes(state_path(), forged);
  EXPECT_EQ(load_fresh().error().code, ErrorCode::store_tampered);
}

TEST_F(StateFileTest, StaleTemporaryIsRemovedOnLoad) {
  StateFile file(dir_.path(), *backend_);
  ASSERT_TRUE(file.create(first_state()).has_value());
  write_bytes(state_path() + ".tmp", bytes_of("half a state"));
  ASSERT_TRUE(load_fresh().has_value());
  EXPECT_FALSE(std::filesystem::exists(state_path() + ".tmp"));
}

TEST_F(StateFileTest, TamperedCounterStopsLoad) {
  StateFile file(dir_.path(), *backend_);
  ASSERT_TRUE(file.create(first_state()).has_value());
  ByteVec counter = read_bytes(dir_ / "counter.sealed");
  counter.back() ^= 1;
  write_bytes(dir_ / "counter.sealed", counter);
  EXPECT_EQ(load_fresh().error().code, ErrorCode::store_tampered);
}

TEST_F(StateFileTest, LockdownAfterUnreadableCounterMakesEveryStateARollback) {
  StateFile file(dir_.path(), *backend_);
  ASSERT_TRUE(file.create(first_state()).has_value());
  std::filesystem::remove(dir_ / "counter.sealed");
  ASSERT_TRUE(backend_->enter_lockdown("counter.sealed: missing").has_value());
  EXPECT_EQ(load_fresh().error().code, ErrorCode::rollback_detected);
}

}  // namespace
}  // namespace mcim::tre
