// The pure sliding-window math (daemon/core/rate_window.h): every formula and boundary, with
// explicit times (no clock) and a scripted random source. Scenario numbers are those of
// trypema's test list; where our decided semantics differ (docs/rate_limiting.md, "Origin and
// deviations") the test name or a comment says so.

#include "daemon/core/rate_window.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "tests/fakes/fake_random.h"

namespace distkit::core {
namespace {

using testing::ScriptedRandom;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
constexpr RateDecision kAllowed = RateDecision::kAllowed;
constexpr RateDecision kRejected = RateDecision::kRejected;
constexpr RateDecision kSuppressed = RateDecision::kSuppressed;

RateLimitSettings S(int64_t window_s, int64_t bucket_ms = 100, double hlf = 1.0,
                    int64_t cache_ms = 100) {
  RateLimitSettings s;
  s.window_ms = window_s * 1000;
  s.bucket_ms = bucket_ms;
  s.hard_limit_factor = hlf;
  s.suppression_cache_ms = cache_ms;
  return s;
}

// ---- limits ----

TEST(RateLimits, CapacityIsTheFloorOfRateTimesWindow) {
  EXPECT_EQ(RateCapacity(2.9, 1000), 2u);  // scenario 40
  EXPECT_EQ(RateCapacity(5, 10000), 50u);
  EXPECT_EQ(RateCapacity(1, 60000), 60u);  // scenario 2: 1/s × 60 s = 60/min × 1 min
  EXPECT_EQ(RateCapacity(60.0 / 60, 60000), 60u);
  EXPECT_EQ(RateCapacity(0.05, 10000), 0u);  // capacity < 1
  EXPECT_EQ(RateCapacity(0.1, 10000), 1u);
  EXPECT_EQ(RateCapacity(std::numeric_limits<double>::max(), 10000), kMax);
  EXPECT_EQ(RateCapacity(1e30, 1000), kMax);
  EXPECT_EQ(RateCapacity(std::numeric_limits<double>::infinity(), 1000), kMax);
}

TEST(RateLimits, SaturatingFloor) {
  EXPECT_EQ(SaturatingFloor(std::nan("")), 0u);
  EXPECT_EQ(SaturatingFloor(-1), 0u);
  EXPECT_EQ(SaturatingFloor(-0.0), 0u);
  EXPECT_EQ(SaturatingFloor(0.999), 0u);
  EXPECT_EQ(SaturatingFloor(7.999999), 7u);
  EXPECT_EQ(SaturatingFloor(9007199254740992.0), 9007199254740992u);        // 2^53
  EXPECT_EQ(SaturatingFloor(9223372036854775808.0), 9223372036854775808u);  // 2^63
  EXPECT_EQ(SaturatingFloor(18446744073709551616.0), kMax);                 // 2^64
}

TEST(RateLimits, SuppressedSoftAndHard) {
  // trypema's limits example (D6 keeps its result here): 0.5/s, 6 s, factor 1.5 → raw 4.5: soft 3,
  // hard 4.
  auto l = SuppressedLimitsFor(0.5, 6000, 1.5);
  EXPECT_EQ(l.soft, 3u);
  EXPECT_EQ(l.hard, 4u);
  l = SuppressedLimitsFor(1, 10000, 2);
  EXPECT_EQ(l.soft, 10u);
  EXPECT_EQ(l.hard, 20u);
  l = SuppressedLimitsFor(1.3, 1000, 2);  // scenario 77: raw 2.6 → soft 1, hard 2
  EXPECT_EQ(l.soft, 1u);
  EXPECT_EQ(l.hard, 2u);
  l = SuppressedLimitsFor(5, 10000, 10);
  EXPECT_EQ(l.soft, 50u);
  EXPECT_EQ(l.hard, 500u);
  // hlf = 1: soft = hard = the ABSOLUTE capacity, for any rate.
  for (double rate : {0.05, 0.3, 1.0, 2.9, 7.77, 1234.5}) {
    l = SuppressedLimitsFor(rate, 10000, 1.0);
    EXPECT_EQ(l.soft, RateCapacity(rate, 10000)) << rate;
    EXPECT_EQ(l.hard, RateCapacity(rate, 10000)) << rate;
  }
  // D6, docs/api.md#rate-limiting: soft = capacity, hard = floor(capacity × hlf). trypema derived
  // soft from the raw hard value and lost a unit to rounding (rate 3, W 10 s, hlf 1.1: soft 29, not
  // 30); every rate of 0.1..50 in steps of 0.1 with the common factors keeps soft = capacity here.
  for (int tenths = 1; tenths <= 500; ++tenths) {
    const double rate = tenths / 10.0;
    for (double hlf : {1.0, 1.1, 1.2, 1.25, 1.5, 2.0, 3.0, 10.0}) {
      l = SuppressedLimitsFor(rate, 10000, hlf);
      const uint64_t cap = RateCapacity(rate, 10000);
      ASSERT_EQ(l.soft, cap) << rate << " " << hlf;
      ASSERT_EQ(l.hard, static_cast<uint64_t>(static_cast<double>(cap) * hlf))
          << rate << " " << hlf;
    }
  }
  l = SuppressedLimitsFor(3, 10000, 1.1);
  EXPECT_EQ(l.soft, 30u);
  EXPECT_EQ(l.hard, 33u);
  l = SuppressedLimitsFor(9, 10000, 1.2);  // trypema: hard 107
  EXPECT_EQ(l.hard, 108u);
  l = SuppressedLimitsFor(0.15, 10000, 1.5);  // capacity 1: hard floor(1.5) = 1 (trypema: 2)
  EXPECT_EQ(l.soft, 1u);
  EXPECT_EQ(l.hard, 1u);
  l = SuppressedLimitsFor(0.05, 10000, 2);  // capacity 0: nothing (trypema: soft 0 < hard 1)
  EXPECT_EQ(l.soft, 0u);
  EXPECT_EQ(l.hard, 0u);
  l = SuppressedLimitsFor(std::numeric_limits<double>::max(), 10000, 2);
  EXPECT_EQ(l.hard, kMax);
}

// ---- the bucket list ----

TEST(RateWindowBuckets, CoalescingJoinsTheNewestBucketUpToBInclusive) {
  RateWindow w;
  w.Record(1000, 100, 3, 0);
  w.Record(1100, 100, 2, 0);  // now − ts = B: joins
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w.newest().count, 5u);
  EXPECT_EQ(w.newest().ts_ms, 1000);  // the timestamp never moves
  w.Record(1101, 100, 1, 0);          // B + 1: a new bucket stamped now
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w.newest().ts_ms, 1101);
  w.Record(1201, 100, 1, 0);  // joins the second (age 100), not the first
  EXPECT_EQ(w.size(), 2u);
  EXPECT_EQ(w.bucket(1).count, 2u);
  EXPECT_EQ(w.observed(), 7u);
}

TEST(RateWindowBuckets, Scenario34CoalescingAt50ms) {
  RateWindow w;
  w.Record(0, 50, 3, 0);
  w.Record(10, 50, 3, 0);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w.oldest().count, 6u);
  RateWindow v;
  v.Record(0, 50, 2, 0);
  v.Record(75, 50, 3, 0);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v.bucket(0).count, 2u);
  EXPECT_EQ(v.bucket(1).count, 3u);
}

TEST(RateWindowBuckets, ACountOfZeroStillOpensABucket) {
  RateWindow w;
  w.Record(5, 100, 0, 0);
  EXPECT_EQ(w.size(), 1u);
  EXPECT_EQ(w.observed(), 0u);
}

// A window of exactly W ms: a bucket stamped ts counts at ts .. ts + W − 1 (trypema kept it at
// ts + W too, which made its retry_after 1 ms early).
TEST(RateWindowBuckets, LiveWhileAgeBelowWEvictedAtW) {
  RateWindow w;
  w.Record(0, 100, 4, 1);
  w.Record(500, 100, 6, 2);
  EXPECT_FALSE(w.Evict(9999, 10000));  // age W − 1: live
  EXPECT_EQ(w.size(), 2u);
  EXPECT_TRUE(w.Evict(10000, 10000));  // age exactly W: gone
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w.observed(), 6u);
  EXPECT_EQ(w.declined(), 2u);
  EXPECT_EQ(w.accepted(), 4u);
  EXPECT_FALSE(w.Evict(10499, 10000));
  EXPECT_TRUE(w.Evict(10500, 10000));
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.observed(), 0u);
  EXPECT_EQ(w.declined(), 0u);
  w.Record(20000, 100, 1, 0);  // usable again after emptying
  EXPECT_EQ(w.observed(), 1u);
}

TEST(RateWindowBuckets, LastSecondIsAgeAtMost1000Inclusive) {
  RateWindow w;
  w.Record(0, 100, 5, 0);
  w.Record(600, 100, 7, 3);  // declined units are observed too
  w.Record(1500, 100, 11, 0);
  EXPECT_EQ(w.ObservedWithin(1600, 1000), 18u);  // ages 1000 and 100
  EXPECT_EQ(w.ObservedWithin(1601, 1000), 11u);
  EXPECT_EQ(w.ObservedWithin(1000, 1000), 23u);  // future buckets count as age ≤ 1000
}

TEST(RateWindowBuckets, DeclinedNeverExceedsCount) {
  RateWindow w;
  w.Record(0, 100, 2, 5);
  EXPECT_EQ(w.declined(), 2u);
  EXPECT_EQ(w.accepted(), 0u);
}

TEST(RateWindowBuckets, TotalsSaturateAndRecountAfterEviction) {
  RateWindow w;
  w.Record(0, 100, 7, 0);
  w.Record(0, 100, kMax - 5, kMax - 5);
  w.Record(200, 100, 10, 10);
  EXPECT_EQ(w.observed(), kMax);  // saturated, not wrapped
  EXPECT_EQ(w.declined(), kMax);
  EXPECT_EQ(w.accepted(), 7u);  // kept apart: exact whatever is declined
  EXPECT_EQ(w.newest().count, 10u);
  EXPECT_TRUE(w.Evict(10100, 10000));
  EXPECT_EQ(w.observed(), 10u);  // recounted from the remaining bucket
  EXPECT_EQ(w.declined(), 10u);
  EXPECT_EQ(w.accepted(), 0u);
  w.Record(10150, 100, kMax, 0);  // the bucket itself saturates
  EXPECT_EQ(w.newest().count, kMax);
  EXPECT_EQ(w.observed(), kMax);
}

// The ring buffer against a plain vector model: random records and evictions, growth and
// wrap-around included.
TEST(RateWindowBuckets, MatchesANaiveModel) {
  std::mt19937_64 gen(42);
  for (int round = 0; round < 50; ++round) {
    RateWindow w;
    std::vector<RateBucket> model;
    int64_t now = 0;
    const int64_t window = 200 + static_cast<int64_t>(gen() % 3000);
    const int64_t bucket = 1 + static_cast<int64_t>(gen() % 200);
    for (int step = 0; step < 2000; ++step) {
      now += static_cast<int64_t>(gen() % 60);
      if (gen() % 4 == 0) {
        const bool evicted = w.Evict(now, window);
        bool model_evicted = false;
        while (!model.empty() && now - model.front().ts_ms >= window) {
          model.erase(model.begin());
          model_evicted = true;
        }
        ASSERT_EQ(evicted, model_evicted);
        ASSERT_LE(w.size(), static_cast<size_t>(window / bucket + 1));  // just evicted
      } else {
        const uint64_t count = gen() % 10;
        const uint64_t declined = gen() % (count + 1);
        w.Record(now, bucket, count, declined);
        if (model.empty() || now - model.back().ts_ms > bucket) model.push_back({now, 0, 0, 0});
        model.back().count += count;
        model.back().accepted += count - declined;
        model.back().declined += declined;
      }
      ASSERT_EQ(w.size(), model.size());
      uint64_t observed = 0, declined = 0;
      for (size_t i = 0; i < model.size(); ++i) {
        ASSERT_EQ(w.bucket(i).ts_ms, model[i].ts_ms);
        ASSERT_EQ(w.bucket(i).count, model[i].count);
        ASSERT_EQ(w.bucket(i).accepted, model[i].accepted);
        ASSERT_EQ(w.bucket(i).declined, model[i].declined);
        observed += model[i].count;
        declined += model[i].declined;
      }
      ASSERT_EQ(w.observed(), observed);
      ASSERT_EQ(w.declined(), declined);
    }
  }
}

TEST(RateWindowBuckets, CopiesAreIndependent) {
  RateWindow a;
  a.Record(0, 10, 1, 0);
  a.Record(50, 10, 2, 1);
  RateWindow b = a;
  b.Record(100, 10, 4, 0);
  EXPECT_EQ(a.size(), 2u);
  EXPECT_EQ(a.observed(), 3u);
  EXPECT_EQ(b.size(), 3u);
  EXPECT_EQ(b.observed(), 7u);
  EXPECT_EQ(b.bucket(1).declined, 1u);
}

// ---- ABSOLUTE ----

struct Abs {
  RateLimitSettings s;
  RateWindow w;
  RateIncResult Inc(int64_t now, double rate, uint64_t count) {
    return AdmitAbsolute(w, s, now, rate, count);
  }
  uint64_t Get(int64_t now) {
    FactorCache c;
    return ReadWindow(w, c, s, now, RateStrategy::kAbsolute, 0).total;
  }
};

TEST(Absolute, Scenario24And25UnitIncrements) {
  Abs a{S(1), {}};
  EXPECT_EQ(a.Inc(0, 2, 1).decision, kAllowed);
  EXPECT_EQ(a.Inc(0, 2, 1).decision, kAllowed);
  auto r = a.Inc(0, 2, 1);
  EXPECT_EQ(r.decision, kRejected);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.suppression_factor, 0);
  // W6 and W10 variants: 11 + 1 and 19 + 1 at 2/s.
  Abs b{S(6), {}};
  EXPECT_EQ(b.Inc(0, 2, 11).decision, kAllowed);
  EXPECT_EQ(b.Inc(0, 2, 1).decision, kAllowed);
  EXPECT_EQ(b.Inc(0, 2, 1).decision, kRejected);
  Abs c{S(10), {}};
  EXPECT_EQ(c.Inc(0, 2, 19).decision, kAllowed);
  EXPECT_EQ(c.Inc(0, 2, 1).decision, kAllowed);
  EXPECT_EQ(c.Inc(0, 2, 1).decision, kRejected);
}

TEST(Absolute, Scenario28RetryAfterAndRemaining) {
  Abs a{S(1, 10), {}};
  EXPECT_EQ(a.Inc(0, 5, 1).decision, kAllowed);
  EXPECT_EQ(a.Inc(20, 5, 4).decision, kAllowed);  // 1 + 4 = 5 fits (all-or-nothing)
  auto r = a.Inc(20, 5, 1);
  EXPECT_EQ(r.decision, kRejected);
  EXPECT_EQ(r.retry_after_ms, 980);          // W − age of the oldest bucket
  EXPECT_EQ(r.remaining_after_waiting, 1u);  // the oldest bucket frees 1
  r = a.Inc(220, 5, 1);
  EXPECT_EQ(r.retry_after_ms, 780);
}

TEST(Absolute, Scenario29RemainingIsTheOldestBucket) {
  Abs a{S(6, 1), {}};
  a.Inc(0, 1, 2);
  a.Inc(10, 1, 4);
  auto r = a.Inc(10, 1, 1);
  EXPECT_EQ(r.decision, kRejected);
  EXPECT_EQ(r.remaining_after_waiting, 2u);
  EXPECT_EQ(r.retry_after_ms, 5990);
  Abs b{S(10, 1), {}};
  b.Inc(0, 1, 3);
  b.Inc(5, 1, 7);
  r = b.Inc(5, 1, 1);
  EXPECT_EQ(r.remaining_after_waiting, 3u);
  EXPECT_EQ(r.retry_after_ms, 9995);
  r = b.Inc(6, 1, 1);  // a rejected inc changes nothing
  EXPECT_EQ(r.remaining_after_waiting, 3u);
  EXPECT_EQ(b.Get(6), 10u);
}

TEST(Absolute, Scenario30BucketSizeDecidesWhatIsReleased) {
  Abs a{S(6, 200), {}};
  a.Inc(0, 1, 2);
  a.Inc(250, 1, 4);  // separate buckets
  EXPECT_EQ(a.Inc(250, 1, 1).remaining_after_waiting, 2u);
  Abs b{S(6, 200), {}};
  b.Inc(0, 1, 2);
  b.Inc(100, 1, 4);  // merged
  EXPECT_EQ(b.Inc(100, 1, 1).remaining_after_waiting, 6u);
}

TEST(Absolute, Scenario32UnblocksExactlyWhenTheBucketLeaves) {
  Abs a{S(1), {}};
  EXPECT_EQ(a.Inc(0, 3, 3).decision, kAllowed);
  EXPECT_EQ(a.Inc(500, 3, 1).decision, kRejected);
  auto r = a.Inc(999, 3, 1);  // age W − 1: still live, leaves in 1 ms
  EXPECT_EQ(r.decision, kRejected);
  EXPECT_EQ(r.retry_after_ms, 1);
  EXPECT_EQ(r.remaining_after_waiting, 3u);
  EXPECT_EQ(a.Inc(1000, 3, 1).decision, kAllowed);  // age W: gone (window of exactly W ms)
  Abs b{S(2, 200), {}};
  b.Inc(0, 1, 2);
  EXPECT_EQ(b.Inc(1999, 1, 1).decision, kRejected);
  EXPECT_EQ(b.Inc(2000, 1, 2).decision, kAllowed);
}

TEST(Absolute, Scenario33PartialExpiry) {
  Abs a{S(2, 200), {}};
  a.Inc(0, 1, 1);
  a.Inc(300, 1, 1);
  EXPECT_EQ(a.Get(2100), 1u);
  ASSERT_EQ(a.w.size(), 1u);
  EXPECT_EQ(a.w.oldest().count, 1u);
  EXPECT_EQ(a.w.oldest().ts_ms, 300);
}

TEST(Absolute, Scenario37UnitVolume) {
  Abs a{S(1), {}};
  int allowed = 0, rejected = 0;
  for (int i = 0; i < 80; ++i) {
    (a.Inc(i, 50, 1).decision == kAllowed ? allowed : rejected)++;
  }
  EXPECT_EQ(allowed, 50);
  EXPECT_EQ(rejected, 30);
  EXPECT_EQ(a.Get(80), 50u);
}

// Deviation D2 from trypema's LOCAL provider, which admits 9 then 2 (total 11): every
// provider of ours is all-or-nothing, like trypema's Redis and hybrid.
TEST(Absolute, Scenario38AllOrNothingNotLocalOvershoot) {
  Abs a{S(1), {}};
  EXPECT_EQ(a.Inc(0, 10, 9).decision, kAllowed);
  EXPECT_EQ(a.Inc(0, 10, 2).decision, kRejected);
  EXPECT_EQ(a.Inc(0, 10, 1).decision, kAllowed);
  EXPECT_EQ(a.Get(0), 10u);
}

TEST(Absolute, Scenario39RejectionsDoNotConsume) {
  Abs a{S(1), {}};
  a.Inc(0, 2, 1);
  a.Inc(0, 2, 1);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(a.Inc(i * 10, 2, 1).decision, kRejected);
  EXPECT_EQ(a.Get(200), 2u);
  EXPECT_EQ(a.w.size(), 1u);
  EXPECT_EQ(a.Inc(1001, 2, 1).decision, kAllowed);
  EXPECT_EQ(a.Inc(1001, 2, 1).decision, kAllowed);
  EXPECT_EQ(a.Inc(1001, 2, 1).decision, kRejected);
}

TEST(Absolute, Scenario40FractionalCapacity) {
  Abs a{S(1), {}};
  EXPECT_EQ(a.Inc(0, 2.9, 1).decision, kAllowed);
  EXPECT_EQ(a.Inc(0, 2.9, 1).decision, kAllowed);
  EXPECT_EQ(a.Inc(0, 2.9, 1).decision, kRejected);
}

TEST(Absolute, Scenario41OversizedRequestIsRejectedWithZeros) {
  Abs a{S(10), {}};
  auto r = a.Inc(0, 1, 11);
  EXPECT_EQ(r.decision, kRejected);
  EXPECT_EQ(r.retry_after_ms, 0);
  EXPECT_EQ(r.remaining_after_waiting, 0u);
  EXPECT_TRUE(a.w.empty());
  a.Inc(0, 1, 5);
  r = a.Inc(10, 1, 11);  // even with live buckets: waiting never helps
  EXPECT_EQ(r.retry_after_ms, 0);
  EXPECT_EQ(r.remaining_after_waiting, 0u);
  EXPECT_EQ(a.Get(10), 5u);
}

// Deviation D10 (trypema's LOCAL admits the first request of a new key): capacity 0
// rejects everything, with 0/0.
TEST(Absolute, CapacityZeroRejectsEverything) {
  Abs a{S(10), {}};
  for (int i = 0; i < 5; ++i) {
    auto r = a.Inc(i * 1000, 0.05, 1);
    EXPECT_EQ(r.decision, kRejected);
    EXPECT_EQ(r.retry_after_ms, 0);
    EXPECT_EQ(r.remaining_after_waiting, 0u);
  }
  EXPECT_TRUE(a.w.empty());
}

TEST(Absolute, RateIsPerRequestAndALowerRateSeesTheUsage) {
  Abs a{S(10), {}};
  EXPECT_EQ(a.Inc(0, 1, 10).decision, kAllowed);  // full at 1/s
  auto r = a.Inc(100, 0.5, 1);                    // capacity 5 < used 10: no underflow
  EXPECT_EQ(r.decision, kRejected);
  EXPECT_EQ(r.retry_after_ms, 9900);
  EXPECT_EQ(r.remaining_after_waiting, 10u);
  EXPECT_EQ(a.Inc(100, 100, 990).decision, kAllowed);  // capacity 1000 for this request
  EXPECT_EQ(a.Get(100), 1000u);
}

TEST(Absolute, HugeCountsNeverWrap) {
  Abs a{S(10), {}};
  const double huge = std::numeric_limits<double>::max();
  EXPECT_EQ(a.Inc(0, huge, kMax).decision, kAllowed);
  auto r = a.Inc(1, huge, 1);
  EXPECT_EQ(r.decision, kRejected);
  EXPECT_EQ(r.remaining_after_waiting, kMax);
  EXPECT_EQ(a.Get(1), kMax);
  EXPECT_EQ(a.Inc(10001, huge, kMax).decision, kAllowed);  // the first one left
}

TEST(Absolute, MemoryPerKeyStaysAtMostWOverBPlusOne) {
  Abs a{S(1, 100), {}};
  for (int64_t t = 0; t < 60000; t += 7) a.Inc(t, 1e9, 1);
  EXPECT_LE(a.w.size(), 11u);
}

// ---- SUPPRESSED ----

struct Sup {
  RateLimitSettings s;
  ScriptedRandom random;
  RateWindow w;
  FactorCache cache;
  double last_rate = 0;
  explicit Sup(RateLimitSettings settings) : s(settings) {}
  RateIncResult Inc(int64_t now, double rate, uint64_t count) {
    last_rate = rate;
    return AdmitSuppressed(w, cache, s, now, rate, count, random);
  }
  RateGetResult Get(int64_t now) {
    return ReadWindow(w, cache, s, now, RateStrategy::kSuppressed, last_rate);
  }
  void Pin(int64_t now, double factor, double rate) {
    cache = {true, now, factor, SuppressedLimitsFor(rate, s.window_ms, s.hard_limit_factor)};
  }
};

void ExpectSuppressed(const RateIncResult& r, double factor, bool allowed) {
  EXPECT_EQ(r.decision, kSuppressed);
  EXPECT_DOUBLE_EQ(r.suppression_factor, factor);
  EXPECT_EQ(r.allowed, allowed);
  EXPECT_EQ(r.retry_after_ms, 0);
  EXPECT_EQ(r.remaining_after_waiting, 0u);
}

void ExpectAllowed(const RateIncResult& r) {
  EXPECT_EQ(r.decision, kAllowed);
  EXPECT_EQ(r.suppression_factor, 0);
  EXPECT_TRUE(r.allowed);
}

TEST(Suppressed, Scenario72BelowSoftIsAllowed) {
  Sup x(S(10, 100, 10));  // r5: soft 50, hard 500
  ExpectAllowed(x.Inc(0, 5, 49));
  ExpectAllowed(x.Inc(0, 5, 1));
  auto g = x.Get(0);
  EXPECT_EQ(g.total, 50u);
  EXPECT_EQ(g.declined, 0u);
}

TEST(Suppressed, Scenario73FactorFromTheWindowAverage) {
  Sup x(S(10, 100, 10));                       // r1: soft 10, hard 100
  ExpectSuppressed(x.Inc(0, 1, 20), 0, true);  // empty window: factor 0, no draw
  EXPECT_EQ(x.random.calls(), 0);
  // After 1.05 s: 20 observed over 10 s = 2/s, nothing in the last second: 1 − 1/2.
  EXPECT_DOUBLE_EQ(x.Get(1050).suppression_factor, 0.5);
}

TEST(Suppressed, Scenario74FactorFromTheLastSecond) {
  Sup x(S(10, 100, 10));
  ExpectAllowed(x.Inc(0, 1, 10));
  ExpectSuppressed(x.Inc(1001, 1, 20), 0, true);  // avg 1/s = soft rate: factor 0
  // 20 in the last second: 1 − 1/20.
  EXPECT_DOUBLE_EQ(x.Get(1200).suppression_factor, 0.95);
}

TEST(Suppressed, Scenario75ExactBoundaryThenDeclined) {
  Sup x(S(10, 100, 1));  // r1: soft = hard = 10
  ExpectAllowed(x.Inc(0, 1, 9));
  ExpectAllowed(x.Inc(0, 1, 1));
  ExpectSuppressed(x.Inc(0, 1, 1), 1, false);
  auto g = x.Get(0);
  EXPECT_EQ(g.total, 11u);
  EXPECT_EQ(g.declined, 1u);
  EXPECT_EQ(g.suppression_factor, 1);
}

TEST(Suppressed, Scenario76NeverRejected) {
  Sup x(S(1, 100, 1));  // r5: soft = hard = 5
  for (int i = 0; i < 10; ++i) {
    auto r = x.Inc(0, 5, 1);
    EXPECT_NE(r.decision, kRejected);
    if (i < 5) {
      ExpectAllowed(r);
    } else {
      ExpectSuppressed(r, 1, false);
    }
  }
  auto g = x.Get(0);
  EXPECT_EQ(g.total, 10u);
  EXPECT_EQ(g.declined, 5u);
  EXPECT_EQ(g.suppression_factor, 1);
  EXPECT_EQ(x.random.calls(), 0);
}

// Deviation D3: trypema answers the request landing exactly on the hard limit with ALLOWED; ours
// treats it like any request in the band (SUPPRESSED, admitted with probability 1 − factor).
TEST(Suppressed, Scenario77ExactHardIsInTheBandNotAllowed) {
  Sup x(S(1, 100, 2));  // r1.3: soft 1, hard 2
  ExpectAllowed(x.Inc(0, 1.3, 1));
  // avg 1/1 s, last second 1: factor 1 − 1/1 = 0 → admitted without a draw.
  ExpectSuppressed(x.Inc(0, 1.3, 1), 0, true);
  ExpectSuppressed(x.Inc(0, 1.3, 1), 1, false);
  auto g = x.Get(0);
  EXPECT_EQ(g.total, 3u);
  EXPECT_EQ(g.declined, 1u);
  EXPECT_EQ(g.suppression_factor, 1);
}

TEST(Suppressed, Scenario78ABatchCrossingHardIsDeclinedWhole) {
  Sup x(S(10, 100, 2));  // r1: soft 10, hard 20
  ExpectSuppressed(x.Inc(0, 1, 19), 0, true);
  ExpectSuppressed(x.Inc(0, 1, 2), 1, false);
  EXPECT_EQ(x.w.observed(), 21u);
  EXPECT_EQ(x.w.declined(), 2u);
  EXPECT_EQ(x.w.accepted(), 19u);
  // A smaller one still fits (19 + 1 = hard): drawn with 1 − (10/10) / 21 (last second: 21).
  x.random.Push(0.0);
  ExpectSuppressed(x.Inc(0, 1, 1), 1 - 1.0 / 21, true);
}

TEST(Suppressed, Scenario79PinnedFactorDrawsOnceWithOneMinusFactor) {
  Sup x(S(10, 100, 2));
  for (int i = 0; i < 5; ++i) x.Inc(0, 1, 1);
  x.Inc(0, 1, 10);  // accepted 15: in the band
  x.Pin(0, 0.25, 1);
  const int before = x.random.calls();
  x.random.Push(0.75);  // not < 0.75: declined
  ExpectSuppressed(x.Inc(0, 1, 1), 0.25, false);
  EXPECT_EQ(x.random.calls(), before + 1);
  x.random.Push(0.7499);  // < 0.75: admitted
  ExpectSuppressed(x.Inc(0, 1, 1), 0.25, true);
  EXPECT_EQ(x.random.calls(), before + 2);
  auto g = x.Get(0);
  EXPECT_EQ(g.total, 17u);
  EXPECT_EQ(g.declined, 1u);
  EXPECT_EQ(g.suppression_factor, 0.25);
}

// Deviation as in 77: 18 reaching hard exactly is SUPPRESSED (factor 0 here), not ALLOWED.
TEST(Suppressed, Scenario80StaleCacheIsRecomputed) {
  Sup x(S(10, 100, 2, 1));  // cache 1 ms
  ExpectAllowed(x.Inc(0, 1, 1));
  ExpectAllowed(x.Inc(0, 1, 1));
  ExpectSuppressed(x.Inc(0, 1, 18), 0, true);
  x.Pin(0, 0.25, 1);
  // At 1 ms the pinned value is stale: recomputed from accepted 20 = hard → 1.
  EXPECT_EQ(x.Get(1).suppression_factor, 1);
  ExpectSuppressed(x.Inc(2, 1, 1), 1, false);
  auto g = x.Get(2);
  EXPECT_EQ(g.total, 21u);
  EXPECT_EQ(g.declined, 1u);
}

// Stronger than trypema's scenario 82 (a stale 0.9 recomputed to 0): with no bucket the factor is 0
// even while a cached value is fresh (the edges are evaluated live, only the formula is cached).
TEST(Suppressed, Scenario82NoBucketsIsZeroWhateverIsCached) {
  Sup x(S(10, 100, 2));
  x.last_rate = 1;
  x.Pin(0, 0.9, 1);
  EXPECT_EQ(x.Get(0).suppression_factor, 0);
  EXPECT_EQ(x.Get(100).suppression_factor, 0);
}

TEST(Suppressed, Scenario84FactorZeroAndOneDoNotDraw) {
  Sup x(S(10, 100, 2));
  x.Inc(0, 1, 15);
  x.Pin(0, 0, 1);
  ExpectSuppressed(x.Inc(0, 1, 1), 0, true);
  x.Pin(0, 1, 1);
  ExpectSuppressed(x.Inc(0, 1, 1), 1, false);
  EXPECT_EQ(x.random.calls(), 0);
  for (double f : {0.1, 0.25, 0.5, 0.9}) {
    x.Pin(0, f, 1);
    const int before = x.random.calls();
    x.random.Push(std::nextafter(1 - f, 0.0));  // just below 1 − f: admitted
    ExpectSuppressed(x.Inc(0, 1, 0), f, true);
    x.random.Push(1 - f);  // exactly 1 − f: declined
    ExpectSuppressed(x.Inc(0, 1, 0), f, false);
    EXPECT_EQ(x.random.calls(), before + 2) << f;
  }
}

TEST(Suppressed, Scenario85PinnedZeroAboveSoft) {
  Sup x(S(10, 100, 2));
  for (int i = 0; i < 10; ++i) ExpectAllowed(x.Inc(0, 1, 1));
  x.Pin(0, 0, 1);
  ExpectSuppressed(x.Inc(0, 1, 1), 0, true);
  EXPECT_EQ(x.Get(0).total, 11u);
}

// Deviation as in 77 for the first request (20 = hard on a fresh key).
TEST(Suppressed, Scenario86FreshKeyToHardThenDeclined) {
  Sup x(S(10, 100, 2));
  ExpectSuppressed(x.Inc(0, 1, 20), 0, true);
  ExpectSuppressed(x.Inc(0, 1, 1), 1, false);
  auto g = x.Get(0);
  EXPECT_EQ(g.total, 21u);
  EXPECT_EQ(g.declined, 1u);
  EXPECT_EQ(g.suppression_factor, 1);
  Sup y(S(10, 100, 10));  // r1: soft 10, hard 100
  ExpectSuppressed(y.Inc(0, 1, 100), 0, true);
  ExpectSuppressed(y.Inc(0, 1, 1), 1, false);
  EXPECT_EQ(y.Get(0).total, 101u);
}

TEST(Suppressed, Scenario88EvictionOfDeclinedBuckets) {
  Sup k2(S(1, 50, 1));  // r10: soft = hard = 10
  ExpectAllowed(k2.Inc(0, 10, 10));
  for (int i = 0; i < 6; ++i) ExpectSuppressed(k2.Inc(0, 10, 1), 1, false);
  Sup k(S(1, 50, 1));
  ExpectAllowed(k.Inc(0, 10, 10));
  for (int i = 0; i < 7; ++i) ExpectSuppressed(k.Inc(300, 10, 1), 1, false);
  auto g = k.Get(1100);
  EXPECT_EQ(g.total, 7u);
  EXPECT_EQ(g.declined, 7u);
  EXPECT_EQ(g.suppression_factor, 0);
  ASSERT_EQ(k.w.size(), 1u);
  EXPECT_EQ(k.w.oldest().declined, 7u);
  g = k2.Get(1100);
  EXPECT_EQ(g.total, 0u);
  EXPECT_EQ(g.declined, 0u);
  EXPECT_EQ(g.suppression_factor, 0);
}

// The worked examples of the factor formula (docs/api.md#rate-limiting), as trypema gives them.
TEST(Suppressed, FactorWorkedExamples) {
  const SuppressedLimits l{10, 20};
  RateWindow old;
  old.Record(0, 100, 20, 10);  // accepted 10 = soft
  EXPECT_DOUBLE_EQ(ComputeSuppressionFactor(old, 1500, 10000, l), 0.5);
  EXPECT_DOUBLE_EQ(ComputeSuppressionFactor(old, 500, 10000, l), 0.95);
  RateWindow below;
  below.Record(0, 100, 9, 0);
  EXPECT_EQ(ComputeSuppressionFactor(below, 0, 10000, l), 0);
  RateWindow at_hard;
  at_hard.Record(0, 100, 20, 0);
  EXPECT_EQ(ComputeSuppressionFactor(at_hard, 0, 10000, l), 1);
  EXPECT_EQ(ComputeSuppressionFactor(RateWindow(), 0, 10000, l), 0);
  // soft == hard (hlf 1) and accepted == soft: 1.
  RateWindow full;
  full.Record(0, 100, 10, 0);
  EXPECT_EQ(ComputeSuppressionFactor(full, 0, 10000, {10, 10}), 1);
}

// The fix (docs/rate_limiting.md, D3): the hard-limit check uses ACCEPTED usage. With
// declined units piled up past the hard limit, trypema's factor would be 1 forever (the admitted
// rate collapses to 0); ours keeps 1 − soft_rate / observed_rate.
TEST(Suppressed, DeclinedUnitsDoNotPinTheFactorAtOne) {
  Sup x(S(10, 100, 2));  // r1: soft 10, hard 20
  ExpectAllowed(x.Inc(0, 1, 10));
  for (int i = 0; i < 9; ++i) ExpectSuppressed(x.Inc(0, 1, 50), 1, false);  // > hard
  EXPECT_EQ(x.w.observed(), 460u);                                          // ≫ hard
  EXPECT_EQ(x.w.accepted(), 10u);
  // Later (cache stale, nothing in the last second): 1 − 1/46.
  x.random.Push(0.0);
  auto r = x.Inc(2000, 1, 1);
  ExpectSuppressed(r, 1 - 1.0 / 46, true);
  EXPECT_EQ(x.random.calls(), 1);
}

TEST(Suppressed, EvictionDropsTheCache) {
  Sup x(S(1, 100, 2));  // r10: soft 10, hard 20
  x.Inc(0, 10, 15);
  x.Pin(0, 0.9, 10);
  x.s.suppression_cache_ms = 100000;  // would stay fresh
  EXPECT_EQ(x.Get(500).suppression_factor, 0.9);
  EXPECT_EQ(x.Get(1001).suppression_factor, 0);  // the bucket left: recomputed
}

TEST(Suppressed, CacheIsFreshStrictlyBelowThePeriodAndPerLimits) {
  Sup x(S(10, 100, 2, 100));
  x.Inc(0, 1, 15);
  x.Pin(0, 0.3, 1);
  EXPECT_EQ(x.Get(99).suppression_factor, 0.3);
  EXPECT_NE(x.Get(100).suppression_factor, 0.3);  // age = period: recomputed
  x.Pin(100, 0.3, 1);
  x.last_rate = 1.5;  // other limits (soft 15, hard 30): not this cache's value
  EXPECT_DOUBLE_EQ(x.Get(100).suppression_factor, 1 - 1.5 / 15);  // last second: 15
  x.last_rate = 2;                                                // soft 20 > accepted 15
  EXPECT_EQ(x.Get(100).suppression_factor, 0);
}

TEST(Suppressed, CapacityZeroDeclinesEverythingWhateverTheFactor) {
  Sup x(S(10, 100, 2));  // r0.05: capacity 0, so soft = hard = 0 (trypema: soft 0 < hard 1)
  ExpectSuppressed(x.Inc(0, 0.05, 1), 1, false);
  ExpectSuppressed(x.Inc(0, 0.05, 1), 1, false);
  EXPECT_EQ(x.Get(0).suppression_factor, 1);
}

TEST(Suppressed, CapacityZeroDeclinesEverything) {
  Sup x(S(10, 100, 1));  // r0.05: soft = hard = 0
  for (int i = 0; i < 3; ++i) ExpectSuppressed(x.Inc(i, 0.05, 1), 1, false);
  auto g = x.Get(3);
  EXPECT_EQ(g.total, 3u);
  EXPECT_EQ(g.declined, 3u);
  EXPECT_EQ(g.suppression_factor, 1);  // accepted 0 ≥ hard 0
}

TEST(Suppressed, HugeDeclinedCountsNeverDisturbAccepted) {
  Sup x(S(10, 100, 2));  // r1: soft 10, hard 20
  ExpectAllowed(x.Inc(0, 1, 10));
  ExpectSuppressed(x.Inc(0, 1, kMax), 1, false);
  ExpectSuppressed(x.Inc(0, 1, kMax), 1, false);
  EXPECT_EQ(x.w.observed(), kMax);
  EXPECT_EQ(x.w.accepted(), 10u);
  // In the band; 10 more would reach hard; 11 more never fit.
  ExpectSuppressed(x.Inc(0, 1, 11), 1, false);
  EXPECT_EQ(x.w.accepted(), 10u);
  EXPECT_EQ(x.Get(0).total, kMax);
}

TEST(ReadWindowTest, AbsoluteReportsUsedOnly) {
  RateWindow w;
  FactorCache c;
  const auto s = S(10);
  AdmitAbsolute(w, s, 0, 1, 7);
  auto g = ReadWindow(w, c, s, 0, RateStrategy::kAbsolute, 1);
  EXPECT_EQ(g.total, 7u);
  EXPECT_EQ(g.declined, 0u);
  EXPECT_EQ(g.suppression_factor, 0);
  g = ReadWindow(w, c, s, 10001, RateStrategy::kAbsolute, 1);
  EXPECT_EQ(g.total, 0u);
  EXPECT_TRUE(w.empty());
}

TEST(DefaultRandomTest, UniformInHalfOpenUnitInterval) {
  RandomSource& r = DefaultRandom();
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    const double v = r.Uniform01();
    ASSERT_GE(v, 0.0);
    ASSERT_LT(v, 1.0);
    sum += v;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.01);
}

}  // namespace
}  // namespace distkit::core
