#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/random.h"
#include "common/secure.h"
#include "common/thread_name.h"

namespace mcim {
namespace {

TEST(Hex, RoundTripsAnyCase) {
  auto v = parse_hex("00aBcDeF09", "--x");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(to_hex(*v), "00abcdef09");
}

TEST(Hex, FixedLengthRefusesWrongLengthNamingTheArgument) {
  auto v = parse_hex_fixed<4>("001122", "--sqn");
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(v.error().message.find("--sqn"), std::string::npos);
  EXPECT_NE(v.error().message.find("8 hex digits"), std::string::npos);
}

TEST(Hex, EmptyIsMissing) {
  auto v = parse_hex_fixed<4>("", "--k");
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::missing_argument);
}

TEST(Hex, NonHexDigitIsRefusedWithoutEchoingTheValue) {
  const std::string secret = "0123456789abcdef0123456789abcdeg";
  auto v = parse_hex_fixed<16>(secret, "--k");
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(v.error().message.find("position 32"), std::string::npos);
  EXPECT_EQ(v.error().message.find("0123456789"), std::string::npos);
}

TEST(Hex, OddLengthAndSeparatorsAreRefused) {
  EXPECT_FALSE(parse_hex("abc", "x").has_value());
  EXPECT_FALSE(parse_hex("0x12", "x").has_value());
  EXPECT_FALSE(parse_hex("12 34", "x").has_value());
}

TEST(Hex, AllowedLengths) {
  EXPECT_TRUE(parse_hex_lengths(std::string(32, 'a'), "--k", {16, 32}).has_value());
  EXPECT_TRUE(parse_hex_lengths(std::string(64, 'a'), "--k", {16, 32}).has_value());
  auto bad = parse_hex_lengths(std::string(48, 'a'), "--k", {16, 32});
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("32 or 64"), std::string::npos);
}

TEST(Secure, ConstantTimeEqual) {
  const Bytes<4> a{1, 2, 3, 4}, b{1, 2, 3, 4}, c{1, 2, 3, 5};
  EXPECT_TRUE(constant_time_equal(a, b));
  EXPECT_FALSE(constant_time_equal(a, c));
  EXPECT_FALSE(constant_time_equal(ByteView(a), ByteView(a).first(3)));
  EXPECT_TRUE(constant_time_equal(ByteView(), ByteView()));
}

TEST(Secure, WipeZeroes) {
  Bytes<8> k{1, 2, 3, 4, 5, 6, 7, 8};
  secure_wipe(k);
  EXPECT_EQ(k, Bytes<8>{});
}

class CountingRandom final : public RandomSource {
 public:
  void fill(std::span<std::uint8_t> out) override {
    ++calls;
    for (auto& b : out) b = next++;
  }
  int calls = 0;
  std::uint8_t next = 0;
};

TEST(Random, BatchedHandsOutTheUpstreamStreamInOrder) {
  CountingRandom up;
  BatchedRandom batched(up, 64);
  auto a = batched.draw<16>();
  auto b = batched.draw<40>();
  auto c = batched.draw<16>();  // crosses the batch boundary
  EXPECT_EQ(a[0], 0);
  EXPECT_EQ(b[0], 16);
  EXPECT_EQ(c[0], 56);
  EXPECT_EQ(c[15], 71);
  EXPECT_EQ(up.calls, 2);
}

TEST(Random, OsRandomDiffers) {
  OsRandom os;
  EXPECT_NE(os.draw<16>(), os.draw<16>());
}

TEST(Error, WireCodesAreStable) {
  EXPECT_EQ(to_string(ErrorCode::mac_mismatch), "mac_mismatch");
  EXPECT_EQ(fmt::format("{}", Error(ErrorCode::invalid_argument, "--k: bad")),
            "invalid_argument: --k: bad");
}

}  // namespace
}  // namespace mcim

namespace mcim {
namespace {

TEST(Error, EveryCodeHasItsOwnWireNameAndKind) {
  std::set<std::string_view> names;
  for (int c = 0; c <= static_cast<int>(kLastErrorCode); ++c) {
    const auto code = static_cast<ErrorCode>(c);
    EXPECT_TRUE(names.insert(to_string(code)).second) << to_string(code);
  }
  EXPECT_EQ(kind_of(ErrorCode::bad_format), ErrorKind::bad_input);
  EXPECT_EQ(kind_of(ErrorCode::chain_invalid), ErrorKind::refused);
  EXPECT_EQ(kind_of(ErrorCode::mac_mismatch), ErrorKind::refused);
  EXPECT_EQ(kind_of(ErrorCode::internal), ErrorKind::internal);
}

TEST(Log, OneEscapedLinePerEventAboveTheLevel) {
  std::vector<std::string> lines;
  log::set_sink([&](std::string_view l) { lines.emplace_back(l); });
  log::set_level(log::Level::info);
  log::debug("ro", "hidden {}", 1);
  log::info("ro", "listening on {}", "https://127.0.0.1:1");
  log::warn("vno", "peer said {}", "a\nb");
  log::set_sink(nullptr);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find(" info ro: listening on https://127.0.0.1:1"), std::string::npos);
  EXPECT_EQ(lines[0].size(), 24 + std::string(" info ro: listening on https://127.0.0.1:1").size());
  EXPECT_EQ(lines[0][10], 'T');
  EXPECT_NE(lines[1].find(" warn vno: peer said a\\x0ab"), std::string::npos);
  log::Level l{};
  EXPECT_TRUE(log::parse_level("debug", l));
  EXPECT_EQ(l, log::Level::debug);
  EXPECT_FALSE(log::parse_level("verbose", l));
}

// The kernel keeps 15 bytes of a thread's name: a longer one is cut there, the role first.
TEST(ThreadName, NamesTheCallingThreadCutTo15Bytes) {
  auto name_of = [](std::string_view name) {
    std::string seen;
    std::thread([&] {
      set_thread_name(name);
      std::ifstream in("/proc/thread-self/comm");
      std::getline(in, seen);
    }).join();
    return seen;
  };
  EXPECT_EQ(name_of("ro-notify-1"), "ro-notify-1");
  EXPECT_EQ(name_of("supplier-http-12"), "supplier-http-1");
}

}  // namespace
}  // namespace mcim
