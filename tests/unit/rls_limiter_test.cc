// core::RlsLimiter with the LOCAL provider and a manual clock: exact capacities for every unit,
// bounded state keys, and the sliding window at a fixed window's boundary, deterministically.

#include "daemon/core/rls_limiter.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "daemon/core/local_rate_limiter.h"
#include "daemon/core/rate_window.h"
#include "daemon/core/validation.h"
#include "tests/fakes/fake_random.h"

namespace distkit::core {
namespace {

using testing::ManualClock;

std::shared_ptr<const RlsConfig> Rules(std::string_view yaml) {
  auto d = ParseRlsDomain(yaml, "t.yaml");
  EXPECT_TRUE(d.ok()) << d.status();
  auto c = std::make_shared<RlsConfig>();
  if (d.ok()) {
    EXPECT_TRUE(c->Add(*std::move(d)).ok());
  }
  return c;
}

class RlsLimiterTest : public ::testing::Test {
 protected:
  RlsLimiterTest()
      : limiter_(Rules(R"(
domain: d
descriptors:
  - {key: s, rate_limit: {unit: second, requests_per_unit: 10}}
  - {key: y, rate_limit: {unit: year, requests_per_unit: 3}}
)"),
                 RateLimitSettings{}, [this](const RateLimitSettings& s) {
                   settings_.push_back(s);
                   LocalRateLimiterOptions o;
                   o.settings = s;
                   o.sweep_interval_ms = 0;
                   o.clock = &clock_;
                   return std::make_unique<LocalRateLimiter>(o);
                 }) {}

  // One descriptor {key: value}, decided inline (LOCAL always is).
  RlsStatus One(std::string key, uint64_t hits = 1) {
    entries_ = {{key, "v"}};
    RlsRequest req;
    req.domain = "d";
    req.descriptors.resize(1);
    req.descriptors[0].entries.assign(entries_.begin(), entries_.end());
    req.descriptors[0].hits = hits;
    auto r = limiter_.Decide(req, [] { return RlsCallback([](auto) {}); });
    EXPECT_TRUE(r.has_value());
    if (!r || !r->ok()) return {};
    return (*r)->statuses[0];
  }

  ManualClock clock_;
  std::vector<RateLimitSettings> settings_;
  std::vector<RlsEntryView> entries_;
  RlsLimiter limiter_;
};

TEST_F(RlsLimiterTest, SlidingWindowAtAFixedWindowsBoundary) {
  clock_.AdvanceMs(10'000'900);  // 100 ms before a whole second
  for (int i = 0; i < 10; ++i) EXPECT_EQ(One("s").code, RlsCode::kOk) << i;
  const RlsStatus full = One("s");
  EXPECT_EQ(full.code, RlsCode::kOverLimit);
  EXPECT_EQ(full.duration_until_reset_ms, 1000);
  clock_.AdvanceMs(200);  // past the second boundary: a fixed window would start over here
  const RlsStatus after = One("s");
  EXPECT_EQ(after.code, RlsCode::kOverLimit) << "the 10 hits are 200 ms old";
  EXPECT_EQ(after.duration_until_reset_ms, 800) << "when the first hits leave the window";
  clock_.AdvanceMs(800);
  const RlsStatus again = One("s");
  EXPECT_EQ(again.code, RlsCode::kOk);
  EXPECT_EQ(again.limit_remaining, 9u);
}

TEST_F(RlsLimiterTest, HitsAllOrNothingAndYearWindowsStayBounded) {
  EXPECT_EQ(One("y", 2).code, RlsCode::kOk);
  EXPECT_EQ(One("y", 2).code, RlsCode::kOverLimit) << "2 + 2 > 3: nothing recorded";
  const RlsStatus last = One("y", 1);
  EXPECT_EQ(last.code, RlsCode::kOk);
  EXPECT_EQ(last.limit_remaining, 0u);
  EXPECT_EQ(One("y", 4).duration_until_reset_ms, RlsUnitMs(RlsUnit::kYear)) << "never fits";
  for (const RateLimitSettings& s : settings_) {
    EXPECT_LE(s.window_ms / s.bucket_ms, kRlsBucketsPerWindow) << s.window_ms;
  }
}

TEST(RlsLimiter, RateForGivesTheExactCapacityForEveryUnit) {
  for (int u = 1; u < kRlsUnits; ++u) {
    const int64_t w = RlsUnitMs(static_cast<RlsUnit>(u));
    for (uint32_t rpu : {1u, 3u, 7u, 10u, 999u, 1000u, 86399u, 1000003u, 4294967295u}) {
      EXPECT_EQ(RateCapacity(RlsLimiter::RateFor(rpu, w), w), rpu) << u << " " << rpu;
    }
  }
}

TEST(RlsLimiter, StateKeysAreBoundedDistinctAndColonFree) {
  const std::vector<RlsEntryView> a = {{"k", "a:b"}}, b = {{"k:a", "b"}}, c = {{"k", "a%3Ab"}};
  const std::string ka = RlsLimiter::StateKey(RlsUnit::kSecond, "d", a);
  EXPECT_EQ(ka.find(':'), std::string::npos);
  EXPECT_NE(ka, RlsLimiter::StateKey(RlsUnit::kSecond, "d", b));
  EXPECT_NE(ka, RlsLimiter::StateKey(RlsUnit::kSecond, "d", c));
  EXPECT_NE(ka, RlsLimiter::StateKey(RlsUnit::kMinute, "d", a));
  const std::string big(1000, 'x');
  const std::string bigger = big + "y";  // RlsEntryView holds views: the strings must outlive it
  const std::vector<RlsEntryView> long1 = {{"k", big}}, long2 = {{"k", bigger}};
  const std::string h1 = RlsLimiter::StateKey(RlsUnit::kDay, "d", long1);
  EXPECT_LE(h1.size(), kMaxNameBytes);
  EXPECT_NE(h1, RlsLimiter::StateKey(RlsUnit::kDay, "d", long2));
}

}  // namespace
}  // namespace distkit::core
