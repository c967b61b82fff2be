// The bootstrap message (roles/ro/bootstrap.h): round trip, the format and KDF checked against the
// openssl command line, and every way a message can be forged, altered, misdirected or stale.
#include "roles/ro/bootstrap.h"

#include <gtest/gtest.h>

#include <functional>

#include "../pki/pki_test_util.h"
#include "common/hex.h"

namespace mcim::ro {
namespace {

using std::chrono::seconds;

const std::string kPin = "73914628";
const std::string kDevice = "dev-001019990000001";
const std::chrono::sys_seconds kNow{seconds(1'800'000'000)};
constexpr seconds kMaxAge{300};

BootstrapFields fields() {
  BootstrapFields f;
  f.pcid = "001019990000001";
  f.device_id = kDevice;
  f.dpf_url = "https://dpf.ro.example:8443/mcim";
  f.dpf_key_pin.fill(0xab);
  f.apn = "m2m-prov.ro.mnc001.mcc001.gprs";
  f.sho = "sho-a";
  f.issued = kNow;
  for (std::size_t i = 0; i < f.nonce.size(); ++i) f.nonce[i] = static_cast<std::uint8_t>(i);
  return f;
}

// Derived once: the stretching costs ~0.1 s.
const BootstrapKey& key() {
  static const BootstrapKey k = *derive_bootstrap_key(kPin, kDevice);
  return k;
}

std::string make(const BootstrapFields& f) {
  auto text = make_bootstrap(f, key());
  EXPECT_TRUE(text) << text.error().message;
  return text ? *text : std::string();
}

Result<BootstrapFields> verify(const std::string& text, TimePoint now = kNow) {
  return verify_bootstrap(text, key(), kDevice, now, kMaxAge);
}

std::string mac_of(const std::string& text) {
  const auto at = text.rfind(R"("mac":")");
  return text.substr(at + 7, 64);
}

std::string with_mac(std::string text, const std::string& mac) {
  const auto at = text.rfind(R"("mac":")");
  return text.replace(at + 7, 64, mac);
}

ErrorCode code_of(const Result<BootstrapFields>& r) {
  EXPECT_FALSE(r);
  if (r) return ErrorCode::internal;
  return r.error().code;
}

TEST(Bootstrap, RoundTripWithThePin) {
  auto text = make_bootstrap(fields(), kPin);
  ASSERT_TRUE(text) << text.error().message;
  auto back = verify_bootstrap(*text, kPin, kDevice, kNow, kMaxAge);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, fields());
  EXPECT_EQ(*text, make(fields()));  // the PIN overload derives the same key
}

TEST(Bootstrap, CanonicalTextWithTheDocumentedLayout) {
  const std::string text = make(fields());
  const std::string inner =
      R"({"apn":"m2m-prov.ro.mnc001.mcc001.gprs","device":"dev-001019990000001","dpf_key_pin":")" +
      to_hex(fields().dpf_key_pin) +
      R"(","dpf_url":"https://dpf.ro.example:8443/mcim","issued":1800000000,"nonce":")" +
      to_hex(fields().nonce) +
      R"(","pcid":"001019990000001","sho":"sho-a","type":"mcim-bootstrap/1"})";
  EXPECT_EQ(text, R"({"bootstrap":)" + inner + R"(,"mac":")" + mac_of(text) + R"("})");
}

// The KDF and MAC as docs/roles-ro.md states them, computed by the openssl command line.
TEST(Bootstrap, KdfAndMacMatchOpensslCommandLine) {
  const std::string text = make(fields());
  const auto kdf = pki::testing::run_command(
      "openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt pass:" + kPin +
      " -kdfopt salt:mcim-bootstrap/1" + kDevice + " -kdfopt iter:100000 PBKDF2");
  ASSERT_EQ(kdf.status, 0) << kdf.output;
  std::string hex_key;
  for (char c : kdf.output) {
    if (std::isxdigit(static_cast<unsigned char>(c))) hex_key += static_cast<char>(std::tolower(c));
  }
  EXPECT_EQ(hex_key, to_hex(key().get()));
  pki::testing::TempDir dir;
  const std::string inner = text.substr(13, text.rfind(R"(,"mac":")") - 13);
  {
    std::FILE* f = std::fopen((dir / "inner").c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(inner.data(), 1, inner.size(), f);
    std::fclose(f);
  }
  const auto mac = pki::testing::run_command(
      "openssl mac -digest SHA256 -macopt hexkey:" + hex_key + " -in " + (dir / "inner") + " HMAC");
  ASSERT_EQ(mac.status, 0) << mac.output;
  std::string hex_mac;
  for (char c : mac.output) {
    if (std::isxdigit(static_cast<unsigned char>(c))) hex_mac += static_cast<char>(std::tolower(c));
  }
  EXPECT_EQ(hex_mac, mac_of(text));
}

// Each field changed in turn, the text still canonical, the original MAC kept.
TEST(Bootstrap, EveryAlteredFieldIsSignatureInvalid) {
  const std::string original = make(fields());
  const std::vector<std::function<void(BootstrapFields&)>> changes = {
      [](BootstrapFields& f) { f.pcid = "001019990000002"; },
      [](BootstrapFields& f) { f.device_id = "dev-001019990000002"; },
      [](BootstrapFields& f) { f.dpf_url = "https://evil.example/mcim"; },
      [](BootstrapFields& f) { f.dpf_key_pin[31] ^= 1; },
      [](BootstrapFields& f) { f.apn = "internet"; },
      [](BootstrapFields& f) { f.sho = "sho-b"; },
      [](BootstrapFields& f) { f.issued += seconds(1); },
      [](BootstrapFields& f) { f.nonce[0] ^= 0x80; },
  };
  for (std::size_t i = 0; i < changes.size(); ++i) {
    BootstrapFields f = fields();
    changes[i](f);
    const std::string forged = with_mac(make(f), mac_of(original));
    EXPECT_EQ(code_of(verify(forged)), ErrorCode::signature_invalid) << "change " << i;
  }
  // And each hex digit of the MAC.
  for (std::size_t i = 0; i < 64; ++i) {
    std::string mac = mac_of(original);
    mac[i] = mac[i] == '0' ? '1' : '0';
    EXPECT_EQ(code_of(verify(with_mac(original, mac))), ErrorCode::signature_invalid) << i;
  }
}

// Any single changed byte: never accepted, and only a format or MAC error.
TEST(Bootstrap, EveryChangedByteIsRefused) {
  const std::string original = make(fields());
  for (std::size_t i = 0; i < original.size(); ++i) {
    for (char c : {'x', '0', '"', ' '}) {
      if (original[i] == c) continue;
      std::string t = original;
      t[i] = c;
      auto r = verify(t);
      ASSERT_FALSE(r) << "position " << i;
      EXPECT_TRUE(r.error().code == ErrorCode::bad_format ||
                  r.error().code == ErrorCode::signature_invalid)
          << i << ": " << r.error().message;
    }
  }
}

TEST(Bootstrap, WrongPinIsSignatureInvalid) {
  const std::string text = make(fields());
  auto r = verify_bootstrap(text, "73914629", kDevice, kNow, kMaxAge);
  EXPECT_EQ(code_of(r), ErrorCode::signature_invalid);
}

TEST(Bootstrap, AnotherDevicesMessageIsRefused) {
  // Same PIN, another device: the salt differs, so the MAC does not verify.
  auto text = make_bootstrap(fields(), kPin);
  ASSERT_TRUE(text);
  EXPECT_EQ(code_of(verify_bootstrap(*text, kPin, "dev-001019990000002", kNow, kMaxAge)),
            ErrorCode::signature_invalid);
  // A MAC under this device's key over a message naming another device: wrong_recipient.
  BootstrapFields other = fields();
  other.device_id = "dev-001019990000002";
  EXPECT_EQ(code_of(verify(make(other))), ErrorCode::wrong_recipient);
}

TEST(Bootstrap, StaleAndFutureMessagesAreRefused) {
  const std::string text = make(fields());
  EXPECT_TRUE(verify(text, kNow + kMaxAge));
  EXPECT_TRUE(verify(text, kNow - kMaxAge));
  EXPECT_EQ(code_of(verify(text, kNow + kMaxAge + seconds(1))), ErrorCode::stale_report);
  EXPECT_EQ(code_of(verify(text, kNow - kMaxAge - seconds(1))), ErrorCode::stale_report);
}

TEST(Bootstrap, NonCanonicalTextIsBadFormat) {
  const std::string text = make(fields());
  const std::string inner_start = R"({"bootstrap":{)";
  std::vector<std::string> variants = {
      text + "\n",
      " " + text,
      std::string(text).insert(13, " "),
      // members of the outer object swapped
      R"({"mac":")" + mac_of(text) + R"(","bootstrap":)" +
          text.substr(13, text.rfind(R"(,"mac":")") - 13) + "}",
      // a repeated key (the last one wins in the parser, the text is not canonical)
      std::string(text).insert(inner_start.size(), R"("apn":"x",)"),
      // an escape that decodes to the same character
      [&] {
        std::string t = text;
        const auto at = t.find("sho-a");
        return t.replace(at, 1, "\\u0073");
      }(),
      // uppercase hex
      [&] {
        std::string t = text;
        const auto at = t.find("abababab");
        return t.replace(at, 2, "AB");
      }(),
      std::string(text).insert(inner_start.size(), R"("extra":"1",)"),
      [&] {
        std::string t = text;
        const auto at = t.find(R"("sho":"sho-a",)");
        return t.erase(at, std::string(R"("sho":"sho-a",)").size());
      }(),
      [&] {
        std::string t = text;
        const auto at = t.find("mcim-bootstrap/1");
        return t.replace(at, 16, "mcim-bootstrap/2");
      }(),
      [&] {
        std::string t = text;
        const auto at = t.find("1800000000");
        return t.replace(at, 10, "\"1800000000\"");
      }(),
      [&] {
        std::string t = text;
        const auto at = t.find("https://");
        return t.replace(at, 8, "http://");
      }(),
      "",
      "[]",
      "{",
      std::string(kMaxBootstrapSize + 1, ' '),
  };
  for (std::size_t i = 0; i < variants.size(); ++i) {
    EXPECT_EQ(code_of(verify(variants[i])), ErrorCode::bad_format) << "variant " << i;
  }
}

TEST(Bootstrap, MakeRefusesFieldsOutsideTheirSyntax) {
  const std::vector<std::pair<std::string, std::function<void(BootstrapFields&)>>> cases = {
      {"pcid", [](BootstrapFields& f) { f.pcid = "00101x"; }},
      {"pcid", [](BootstrapFields& f) { f.pcid = "12345"; }},
      {"device", [](BootstrapFields& f) { f.device_id = "dev 1"; }},
      {"dpf_url", [](BootstrapFields& f) { f.dpf_url = "http://dpf.example"; }},
      {"dpf_url", [](BootstrapFields& f) { f.dpf_url = "https://dpf.example/a b"; }},
      {"apn", [](BootstrapFields& f) { f.apn = "m2m..ro"; }},
      {"apn", [](BootstrapFields& f) { f.apn = ""; }},
      {"sho", [](BootstrapFields& f) { f.sho = "sho\"a"; }},
  };
  for (const auto& [field, change] : cases) {
    BootstrapFields f = fields();
    change(f);
    auto r = make_bootstrap(f, key());
    ASSERT_FALSE(r) << field;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    EXPECT_TRUE(r.error().message.starts_with(field)) << r.error().message;
  }
}

TEST(Bootstrap, PinMustBeFourToSixteenDigits) {
  for (const std::string pin : {"123", "12345678901234567", "1234abcd", ""}) {
    auto k = derive_bootstrap_key(pin, kDevice);
    ASSERT_FALSE(k);
    EXPECT_EQ(k.error().code, ErrorCode::invalid_argument);
    auto v = verify_bootstrap(make(fields()), pin, kDevice, kNow, kMaxAge);
    EXPECT_EQ(code_of(v), ErrorCode::invalid_argument);
  }
  EXPECT_TRUE(derive_bootstrap_key("1234", kDevice));
  EXPECT_EQ(derive_bootstrap_key(kPin, "bad device").error().code, ErrorCode::invalid_argument);
}

TEST(Bootstrap, KeyDependsOnPinAndDevice) {
  EXPECT_NE(derive_bootstrap_key("73914629", kDevice)->get(), key().get());
  EXPECT_NE(derive_bootstrap_key(kPin, "dev-001019990000002")->get(), key().get());
  EXPECT_EQ(derive_bootstrap_key(kPin, kDevice)->get(), key().get());
}

// Refusals of every kind, with the PIN and key about: none of their messages contains either.
TEST(Bootstrap, NoErrorMessageContainsThePinOrTheKey) {
  const std::string text = make(fields());
  std::vector<Error> errors;
  auto collect = [&](auto r) {
    ASSERT_FALSE(r);
    errors.push_back(r.error());
  };
  collect(verify_bootstrap(text, "73914629", kDevice, kNow, kMaxAge));
  collect(verify_bootstrap(text, kPin, "dev-001019990000002", kNow, kMaxAge));
  collect(verify_bootstrap(text, kPin + "0", kDevice, kNow, kMaxAge));
  collect(verify_bootstrap(text, kPin + "x", kDevice, kNow, kMaxAge));
  collect(verify_bootstrap(text, kPin, kDevice, kNow + kMaxAge * 2, kMaxAge));
  collect(verify_bootstrap(text + " ", kPin, kDevice, kNow, kMaxAge));
  collect(verify_bootstrap(with_mac(text, std::string(64, '0')), kPin, kDevice, kNow, kMaxAge));
  collect(derive_bootstrap_key(kPin + "x", kDevice));
  collect(derive_bootstrap_key(kPin + "123456789", kDevice));
  BootstrapFields f = fields();
  f.apn = kPin + "!";
  collect(make_bootstrap(f, kPin));
  f = fields();
  f.device_id = "dev " + kPin;
  collect(make_bootstrap(f, kPin));
  // A message whose fields carry the PIN where the format forbids it.
  std::string t = text;
  t.replace(t.find("sho-a"), 5, kPin + " x");
  collect(verify_bootstrap(t, kPin, kDevice, kNow, kMaxAge));
  for (const auto& e : errors) {
    EXPECT_EQ(e.message.find(kPin), std::string::npos) << e.message;
    EXPECT_EQ(e.message.find(to_hex(key().get()).substr(0, 16)), std::string::npos) << e.message;
  }
  EXPECT_EQ(errors.size(), 12u);
}

}  // namespace
}  // namespace mcim::ro
