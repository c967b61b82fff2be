// The fleet's pure parts (sim/fleet.h): the access mix of `mcim demo --access` and the
// round-robin that gives each device its access, the refusal of a mix whose endpoints are
// missing (before anything is made), and the nearest-rank percentiles of the report.
#include "sim/fleet.h"

#include <gtest/gtest.h>

#include <vector>

namespace mcim::sim {
namespace {

using device::Access;

TEST(FleetAccess, ParsesTheThreeMixes) {
  EXPECT_EQ(parse_access_mix("3gpp"), AccessMix::threegpp);
  EXPECT_EQ(parse_access_mix("non3gpp"), AccessMix::non3gpp);
  EXPECT_EQ(parse_access_mix("both"), AccessMix::both);
  for (const char* bad : {"", "3GPP", "wifi", "non-3gpp", "both "}) {
    auto r = parse_access_mix(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  }
}

TEST(FleetAccess, DevicesTakeTheVariantsInTurn) {
  struct Row {
    AccessMix mix;
    std::vector<Access> first;  // devices 0, 1, ...
  };
  const std::vector<Row> rows = {
      {AccessMix::threegpp, {Access::threegpp, Access::threegpp, Access::threegpp}},
      {AccessMix::non3gpp,
       {Access::direct, Access::eap_aka, Access::eap_aka_prime, Access::direct, Access::eap_aka,
        Access::eap_aka_prime, Access::direct}},
      {AccessMix::both,
       {Access::threegpp, Access::direct, Access::eap_aka, Access::eap_aka_prime, Access::threegpp,
        Access::direct, Access::eap_aka}},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(static_cast<int>(row.mix));
    for (std::size_t i = 0; i < row.first.size(); ++i) {
      EXPECT_EQ(access_of(row.mix, i), row.first[i]) << i;
    }
  }
  // Six devices of both: two over 3GPP, two direct, one over each EAP method.
  std::vector<int> count(4);
  for (std::size_t i = 0; i < 6; ++i) ++count[static_cast<int>(access_of(AccessMix::both, i))];
  EXPECT_EQ(count, (std::vector<int>{2, 2, 1, 1}));
}

// A mix that needs the DRF or the RADIUS server without them is refused before the supplier is
// asked for anything (no clients are given here: they would be the next refusal).
TEST(FleetAccess, AMixWithoutItsEndpointsIsRefusedFirst) {
  FleetEndpoints e;
  FleetOptions o;
  o.devices = 3;
  o.access = AccessMix::non3gpp;
  auto r = run_fleet(e, o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(r.error().message, "drf_url: required for direct access");

  e.drf_url = "https://127.0.0.1:1";
  r = run_fleet(e, o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(r.error().message, "radius_port and radius_secret: required for EAP access");

  // One device of non3gpp is direct only: no RADIUS server needed; both's first is 3GPP.
  o.devices = 1;
  EXPECT_EQ(run_fleet(e, o).error().code, ErrorCode::missing_argument);  // the clients
  o.access = AccessMix::both;
  e.drf_url.clear();
  EXPECT_EQ(run_fleet(e, o).error().code, ErrorCode::missing_argument);
}

TEST(FleetReport, PercentilesByNearestRank) {
  EXPECT_EQ(percentile_ms({}, 50), 0);
  EXPECT_EQ(percentile_ms({7}, 99), 7);
  const std::vector<double> samples = {5, 1, 4, 2, 3};
  EXPECT_EQ(percentile_ms(samples, 50), 3);
  EXPECT_EQ(percentile_ms(samples, 99), 5);
  EXPECT_EQ(percentile_ms(samples, 0), 1);
}

}  // namespace
}  // namespace mcim::sim
