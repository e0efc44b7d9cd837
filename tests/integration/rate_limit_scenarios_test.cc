// trypema's conformance scenarios (docs/rate_limiting.md, "Origin and deviations") ported to our
// semantics (docs/api.md#ratelimitservice), run against every provider through the
// core::RateLimiter interface: LOCAL, REDIS and HYBRID, built by the daemon's App (REDIS with
// failure mode `open` and the LOCAL provider as fallback; HYBRID with a fresh dedup id and its
// sync thread started), each "daemon" on its own Executor, against a private redis-server
// (tests/support/redis_server.h: Unix socket in a temp dir, one per test).
//
// Numbers are trypema's. Every scenario marked [R] or [H] (or [L,R,H]) that our API (Inc, Get;
// Batch = ordered Incs) can express is here; most run on all three providers, because our
// semantics are the same for every provider ("Semantics every provider keeps"). Scenarios about
// two instances sharing a limit run on REDIS and HYBRID (LOCAL is per daemon by definition).
// LOCAL-only scenarios ([L]) stay in tests/unit/local_rate_limiter_test.cc and rate_window_test.cc.
//
// Time. LOCAL runs on a ManualClock (tests/fakes/fake_random.h): "later" moves the clock, nothing
// sleeps. REDIS and HYBRID date their buckets with Redis TIME, which cannot be faked: "later" polls
// Redis TIME until it has passed a point (WaitPast), and "eventually" polls with a deadline
// (Eventually). No assertion depends on the machine being fast: an assertion that needs several
// requests to fall inside one window (or one last second) is made only when Redis TIME, read
// before the first and after the last request, proves they did (Within); lower bounds ("not before
// W") are always safe. Where trypema uses a 1 s window for a scenario that is not about expiry,
// we use W = 10 s with a tenth of the rate (same capacity), for the same reason.
//
// Randomness: every daemon's RandomSource is a ScriptedRandom; a test sets its fallback draw (0 =
// admit whenever the factor is below 1). LOCAL and HYBRID draw only in the SUPPRESSED band with a
// factor strictly between 0 and 1; REDIS draws one number per Inc and passes it to the script
// (docs/rate_limiting.md, REDIS "Randomness"), so "the RNG is not called" is checked on LOCAL and
// HYBRID only, and on REDIS as "the decision does not depend on the draw".
//
// Deviations from trypema (docs/rate_limiting.md D1-D11; each test says which one applies):
//  D1 rate per request, never sticky (trypema stores the first rate; no `w` key / stored limit).
//  D2 all-or-nothing for every provider (trypema's LOCAL admitted any count while below capacity).
//  D3 SUPPRESSED hard limit on ACCEPTED units (trypema: observed units, so declines pinned the
//     factor at 1); a request landing exactly on `hard` is drawn like any request of the band
//     (trypema: ALLOWED and factor 1 cached) — the "exact-hard answer".
//  D4 only the factor formula is cached; the deterministic cases (no bucket → 0, accepted ≥ hard
//     → 1, accepted < soft → 0) are evaluated on every call, so no cache can be pinned by a test.
//  D5 HYBRID decides out of leases reserved in Redis (docs: HYBRID): it never lets N daemons
//     admit N × capacity (as trypema's could), and a daemon's first request reserves its lease in
//     Redis (trypema's hybrid wrote nothing before the local budget overflowed).
//
// Skipped scenarios (not expressible in our API):
//  - 18 (builders reject a bad cleanup config / bucket > window): there is no builder; the flags
//    are validated at start (tests/unit/config_test.cc).
//  - 19, 46-58, 67-69, 90-92, 117-120, 132 (set_if, set_if_preserve_history and their raw state):
//    no conditional set / replace exists in RateLimitService.
//  - 21, 22, 71, 114 and the cleanup halves of 122, 129, 133 (cleanup loop start/stop/stale
//    entities, `ae` set): no cleanup loop; REDIS and HYBRID keys expire by their TTL (asserted in
//    Scenario60To66..., below) and LOCAL/HYBRID memory is swept (unit tests).
//  - 23 and the is_allowed half of 43 (is_allowed): there is no read-only admission check; Inc is
//    the only decision.
//  - the get_estimate halves of 115, 116, 130, 131: no get_estimate; HYBRID's Get always syncs.
//  - 106's "invalid cached sf values (2, -1) are recomputed" and "sf PTTL": raw-format details
//    of trypema's `sf` key; ours (f/ft/fk fields) is covered by ratelimit_script_test
//    (MalformedStateIsRebuiltFromTheBuckets, CachedFactorBelongsToTheLimitsItWasComputedFor).
//  - 128's "key validation": names are validated by the transport (rate_limit_service_test).
// Scenarios whose setup used set_if (59, 102, 109, 124) are ported with Inc doing the seeding.
//
// Findings: this port found three places where HYBRID answered differently from
// docs/rate_limiting.md and from REDIS (27: a higher rate later was refused until the next
// periodic sync; 41: an oversized request made the daemon lease the whole capacity; 115: an idle
// daemon's lease of the whole capacity kept a second daemon out for lease_ms + grace, with a
// retry hint of a whole window). All three are fixed (HYBRID syncs for a larger capacity, an
// oversized request records nothing, leases are sized by each daemon's recent demand) and the
// scenarios run on every provider they apply to.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/app.h"
#include "daemon/config/config.h"
#include "daemon/core/rate_limit.h"
#include "daemon/redis/redis_url.h"
#include "tests/fakes/fake_random.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit::testing {
namespace {

using namespace std::chrono_literals;
using core::RateDecision;
using core::RateGetResult;
using core::RateIncRequest;
using core::RateIncResult;
using core::RateLimitSettings;
using core::RateStrategy;

constexpr RateStrategy kAbs = RateStrategy::kAbsolute;
constexpr RateStrategy kSup = RateStrategy::kSuppressed;
// Only a hang takes this long; no assertion measures it.
constexpr auto kAnswerBound = 20s;
constexpr auto kPollBound = 30s;

enum class Provider { kLocal, kRedis, kHybrid };

std::string ProviderName(const ::testing::TestParamInfo<Provider>& info) {
  switch (info.param) {
    case Provider::kLocal:
      return "LOCAL";
    case Provider::kRedis:
      return "REDIS";
    case Provider::kHybrid:
      return "HYBRID";
  }
  return "?";
}

// Settings as the daemon flags give them (docs/api.md#flags defaults unless a scenario says so).
RateLimitSettings S(int64_t window_s, int64_t bucket_ms = 100, double hlf = 1.0,
                    int64_t cache_ms = 100) {
  RateLimitSettings s;
  s.window_ms = window_s * 1000;
  s.bucket_ms = bucket_ms;
  s.hard_limit_factor = hlf;
  s.suppression_cache_ms = cache_ms;
  s.sync_interval_ms = 10;
  return s;
}

// One distkitd's worth of rate limiters: the daemon's App (daemon/app.h) without a gRPC server,
// its own Executor, random source and three providers.
struct Daemon {
  Daemon(const RedisServer& server, const RateLimitSettings& s, const core::Clock* local_clock) {
    config::Config config;
    config.listen = {};  // core only
    config.redis_seeds = {*redis::ParseRedisUrl(server.url())};
    config.redis_timeout_ms = 2000;  // generous: a degraded answer would fail the scenario
    config.rate_window_seconds = s.window_ms / 1000;
    config.rate_bucket_ms = s.bucket_ms;
    config.hard_limit_factor = s.hard_limit_factor;
    config.suppression_cache_ms = s.suppression_cache_ms;
    config.sync_interval_ms = s.sync_interval_ms;
    AppHooks hooks;
    hooks.local_rate_clock = local_clock;
    hooks.random = &random;
    hooks.local_sweep_interval_ms = 0;  // the manual clock never reaches the sweep horizon anyway
    auto created = App::Create(config, hooks);
    EXPECT_TRUE(created.ok()) << created.status();
    app = *std::move(created);
    EXPECT_TRUE(PollUntil([&] { return app->executor().Healthy(); }, 10s));
    local = &app->local_rate_limiter();
    redis = &app->redis_rate_limiter();
    hybrid = &app->hybrid_rate_limiter();
  }
  core::RateLimiter& Get(Provider p) {
    switch (p) {
      case Provider::kLocal:
        return *local;
      case Provider::kRedis:
        return *redis;
      case Provider::kHybrid:
        break;
    }
    return *hybrid;
  }

  ScriptedRandom random;
  std::unique_ptr<App> app;
  core::LocalRateLimiter* local = nullptr;
  core::RedisRateLimiter* redis = nullptr;
  core::HybridRateLimiter* hybrid = nullptr;
};

// Equal up to rounding (C++ and Lua compute factors with the same operations; 1e-12 is slack).
bool Near(double a, double b) {
  return std::fabs(a - b) <= 1e-12 * std::max({1.0, std::fabs(a), std::fabs(b)});
}

struct RawSums {
  uint64_t accepted = 0, declined = 0, buckets = 0;
};

::testing::AssertionResult IsAllowed(const RateIncResult& r) {
  if (r.decision == RateDecision::kAllowed && r.allowed && r.suppression_factor == 0 &&
      r.retry_after_ms == 0 && r.remaining_after_waiting == 0) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "expected ALLOWED, got decision " << static_cast<int>(r.decision) << " allowed "
         << r.allowed << " factor " << r.suppression_factor << " retry " << r.retry_after_ms
         << " remaining " << r.remaining_after_waiting;
}

::testing::AssertionResult IsRejected(const RateIncResult& r) {
  if (r.decision == RateDecision::kRejected && !r.allowed && r.suppression_factor == 0) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "expected REJECTED, got decision " << static_cast<int>(r.decision) << " allowed "
         << r.allowed << " factor " << r.suppression_factor;
}

// SUPPRESSED with this factor and outcome; a SUPPRESSED answer carries no retry hint.
::testing::AssertionResult IsSuppressed(const RateIncResult& r, double factor, bool allowed) {
  if (r.decision == RateDecision::kSuppressed && r.allowed == allowed &&
      Near(r.suppression_factor, factor) && r.retry_after_ms == 0 &&
      r.remaining_after_waiting == 0) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "expected SUPPRESSED{" << factor << ", " << allowed << "}, got decision "
         << static_cast<int>(r.decision) << " factor " << r.suppression_factor << " allowed "
         << r.allowed << " retry " << r.retry_after_ms << " remaining "
         << r.remaining_after_waiting;
}

::testing::AssertionResult Snapshot(const RateGetResult& g, uint64_t total, uint64_t declined,
                                    double factor) {
  if (g.total == total && g.declined == declined && Near(g.suppression_factor, factor)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "expected {" << total << ", " << declined << ", " << factor << "}, got {" << g.total
         << ", " << g.declined << ", " << g.suppression_factor << "}";
}

class RateLimitScenarios : public ::testing::TestWithParam<Provider> {
 protected:
  void SetUp() override {
    server_ = RedisServer::Start();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override { daemons_.clear(); }

  // Starts `n` daemons with the settings `s` (every test calls this once).
  void Start(const RateLimitSettings& s, int n = 1) {
    settings_ = s;
    for (int i = 0; i < n; ++i) {
      daemons_.push_back(std::make_unique<Daemon>(*server_, s, &clock_));
    }
  }

  // Every key in Redis but the daemons' liveness registry (dk:{live}:*), comma-separated.
  std::string RateLimitKeys() const {
    std::vector<std::string> out;
    for (absl::string_view k :
         absl::StrSplit(server_->Command({"KEYS", "*"}), ',', absl::SkipEmpty())) {
      if (!absl::StartsWith(k, "dk:{live}:")) out.emplace_back(k);
    }
    return absl::StrJoin(out, ",");
  }

  Provider P() const { return GetParam(); }
  bool IsLocal() const { return P() == Provider::kLocal; }
  bool IsRedis() const { return P() == Provider::kRedis; }
  bool IsHybrid() const { return P() == Provider::kHybrid; }
  int64_t W() const { return settings_.window_ms; }
  Daemon& D(int d = 0) { return *daemons_.at(d); }
  ScriptedRandom& Random(int d = 0) { return D(d).random; }

  static absl::StatusOr<RateIncResult> IncOn(core::RateLimiter& l, const RateIncRequest& req) {
    if (auto r = l.TryInc(req)) return std::move(*r);
    auto p = std::make_shared<std::promise<absl::StatusOr<RateIncResult>>>();
    auto f = p->get_future();
    l.Inc(req, [p](absl::StatusOr<RateIncResult> r) { p->set_value(std::move(r)); });
    if (f.wait_for(kAnswerBound) != std::future_status::ready) {
      return absl::InternalError("test: Inc did not answer");
    }
    return f.get();
  }

  // An Inc on daemon `d`'s provider under test; every answer here must be OK and not degraded.
  RateIncResult Inc(const std::string& key, double rate, uint64_t count,
                    RateStrategy strategy = kAbs, int d = 0, const std::string& ns = "ns") {
    RateIncRequest req;
    req.ns = ns;
    req.key = key;
    req.rate_per_second = rate;
    req.count = count;
    req.strategy = strategy;
    auto r = IncOn(D(d).Get(P()), req);
    if (!r.ok()) {
      ADD_FAILURE() << "Inc " << key << ": " << r.status();
      RateIncResult bad;
      bad.decision = RateDecision::kRejected;
      bad.allowed = false;
      bad.retry_after_ms = -1;
      return bad;
    }
    EXPECT_FALSE(r->degraded) << key;
    return *r;
  }

  RateGetResult GetOn(core::RateLimiter& l, const std::string& key, RateStrategy strategy,
                      const std::string& ns = "ns") {
    auto p = std::make_shared<std::promise<absl::StatusOr<RateGetResult>>>();
    auto f = p->get_future();
    l.Get(ns, key, strategy, [p](absl::StatusOr<RateGetResult> r) { p->set_value(std::move(r)); });
    if (f.wait_for(kAnswerBound) != std::future_status::ready) {
      ADD_FAILURE() << "Get " << key << " did not answer";
      return {};
    }
    auto r = f.get();
    if (!r.ok()) {
      ADD_FAILURE() << "Get " << key << ": " << r.status();
      return {};
    }
    return *r;
  }
  RateGetResult Get(const std::string& key, RateStrategy strategy = kAbs, int d = 0,
                    const std::string& ns = "ns") {
    return GetOn(D(d).Get(P()), key, strategy, ns);
  }

  // ---- time ----

  int64_t RedisNowMs() const {
    const std::vector<std::string> t = absl::StrSplit(server_->Command({"TIME"}), ',');
    if (t.size() != 2) {
      ADD_FAILURE() << "TIME";
      return 0;
    }
    return std::stoll(t[0]) * 1000 + std::stoll(t[1]) / 1000;
  }
  // The provider's clock in ms: the manual clock for LOCAL, Redis TIME (the clock that dates
  // REDIS's and HYBRID's buckets) otherwise.
  int64_t Now() const { return IsLocal() ? clock_.NowMs() : RedisNowMs(); }
  // Returns once the provider's clock is past `t_ms`.
  void WaitPast(int64_t t_ms) {
    if (IsLocal()) {
      if (clock_.NowMs() <= t_ms) clock_.AdvanceMs(t_ms + 1 - clock_.NowMs());
      return;
    }
    ASSERT_TRUE(PollUntil([&] { return RedisNowMs() > t_ms; }, kPollBound)) << t_ms;
  }
  // True when less than `ms` passed on the provider's clock since `since` (a Now() taken before
  // the requests concerned): then they all happened less than `ms` apart.
  // When false (a loaded machine), the assertions it guards are skipped, and this says so.
  bool Within(int64_t since, int64_t ms) const {
    const int64_t elapsed = Now() - since;
    if (elapsed < ms) return true;
    std::cout << "[ " << elapsed << " ms passed, not < " << ms
              << ": the assertion that needs them inside one window is skipped ]\n";
    return false;
  }
  // Polls `cond` until true: LOCAL moves its clock 10 ms per attempt (at most `max_ms`), the
  // others poll in real time with a deadline.
  bool Eventually(const std::function<bool()>& cond, int64_t max_ms = 30000) {
    if (IsLocal()) {
      for (int64_t waited = 0; waited <= max_ms; waited += 10) {
        if (cond()) return true;
        clock_.AdvanceMs(10);
      }
      return false;
    }
    return PollUntil(cond, kPollBound);
  }

  // ---- Redis state ----

  std::string RedisKey(const std::string& key, RateStrategy strategy,
                       const std::string& ns = "ns") const {
    return IsHybrid() ? core::HybridRateLimitKey(ns, key, strategy)
                      : core::RedisRateLimitKey(ns, key, strategy);
  }
  std::map<std::string, std::string> Hash(const std::string& redis_key) const {
    const std::string all = server_->Command({"HGETALL", redis_key});
    std::map<std::string, std::string> out;
    if (all.empty()) return out;
    const std::vector<std::string> parts = absl::StrSplit(all, ',');
    for (size_t i = 0; i + 1 < parts.size(); i += 2) out[parts[i]] = parts[i + 1];
    return out;
  }
  // Units in the key's buckets in Redis. REDIS: b: = observed, x: = declined; HYBRID: b: =
  // accepted, x: = declined.
  RawSums Raw(const std::string& key, RateStrategy strategy) const {
    RawSums s;
    uint64_t b = 0;
    for (const auto& [f, v] : Hash(RedisKey(key, strategy))) {
      if (f.rfind("b:", 0) == 0) {
        b += std::stoull(v);
        s.buckets++;
      } else if (f.rfind("x:", 0) == 0) {
        s.declined += std::stoull(v);
      }
    }
    s.accepted = IsHybrid() ? b : b - s.declined;
    return s;
  }
  // HYBRID: waits until Redis holds exactly these units of the key and every reply has been
  // processed (the daemons' last sync view includes them). LOCAL and REDIS are settled already.
  void Settle(const std::string& key, RateStrategy strategy, uint64_t accepted,
              uint64_t declined = 0) {
    if (!IsHybrid()) return;
    EXPECT_TRUE(PollUntil(
        [&] {
          const RawSums r = Raw(key, strategy);
          if (r.accepted != accepted || r.declined != declined) return false;
          for (auto& d : daemons_) {
            if (d->hybrid->outstanding() != 0) return false;
          }
          return true;
        },
        kPollBound))
        << key << ": Redis has " << Raw(key, strategy).accepted << "/"
        << Raw(key, strategy).declined << ", expected " << accepted << "/" << declined;
  }
  // How long HYBRID's Redis keeps an idle daemon's lease reserved after its last sync.
  int64_t LeaseReservedMs() const {
    const int64_t lease = daemons_.at(0)->hybrid->lease_ms();
    return lease + std::max<int64_t>(50, lease / 4);
  }

  // Scenario bodies (27: ABSOLUTE and SUPPRESSED).
  void Scenario27HigherRateLaterIsAdmittedBody() {
    Start(S(6));
    EXPECT_TRUE(IsAllowed(Inc("k", 1, 1)));    // capacity 6
    EXPECT_TRUE(IsAllowed(Inc("k", 100, 6)));  // capacity 600 for this request: 7 ≤ 600
    EXPECT_TRUE(IsRejected(Inc("k", 1, 1)));   // capacity 6 < 7 + 1
    EXPECT_EQ(Get("k").total, 7u);
  }
  // The same with SUPPRESSED (hlf 1: soft = hard = capacity): the second request is below its
  // soft limit (600), so it is ALLOWED with factor 0.
  void Scenario27SuppressedHigherRateLaterIsAllowedBody() {
    Start(S(6));
    EXPECT_TRUE(IsAllowed(Inc("k", 1, 1, kSup)));               // soft = hard = 6
    EXPECT_TRUE(IsAllowed(Inc("k", 100, 6, kSup)));             // soft = hard = 600: 7 ≤ 600
    EXPECT_TRUE(IsSuppressed(Inc("k", 1, 1, kSup), 1, false));  // hard 6 < 7 + 1
    EXPECT_TRUE(Snapshot(Get("k", kSup), 8, 1, 1));             // accepted 7 ≥ hard 6 (rate 1)
  }

  ManualClock clock_;
  RateLimitSettings settings_;
  std::unique_ptr<RedisServer> server_;
  std::vector<std::unique_ptr<Daemon>> daemons_;
};

// Every provider. (Aliases of the fixture select the providers a scenario applies to.)
class AllProviders : public RateLimitScenarios {};
// Two daemons sharing one limit through Redis.
class SharedProviders : public RateLimitScenarios {};

// ================================================================ ABSOLUTE

// 12 (build → first inc Allowed, second Rejected; W1 r1 there, W10 r0.1 here: capacity 1).
TEST_P(AllProviders, Scenario12FirstAllowedSecondRejected) {
  Start(S(10));
  EXPECT_TRUE(IsAllowed(Inc("k", 0.1, 1)));
  EXPECT_TRUE(IsRejected(Inc("k", 0.1, 1)));
}

// 25 [R] (W1 r2: inc 1, inc 1, the 3rd is Rejected), here W10 r0.2: capacity 2.
TEST_P(AllProviders, Scenario25ThirdUnitIncIsRejected) {
  Start(S(10));
  const int64_t t0 = Now();
  EXPECT_TRUE(IsAllowed(Inc("k", 0.2, 1)));
  EXPECT_TRUE(IsAllowed(Inc("k", 0.2, 1)));
  const RateIncResult r = Inc("k", 0.2, 1);
  EXPECT_TRUE(IsRejected(r));
  EXPECT_GT(r.retry_after_ms, 0);
  EXPECT_LE(r.retry_after_ms, W());
  // The oldest bucket holds one or both units (both when they joined one bucket).
  EXPECT_GE(r.remaining_after_waiting, 1u);
  EXPECT_LE(r.remaining_after_waiting, 2u);
  if (Within(t0, W())) {
    EXPECT_EQ(Get("k").total, 2u);
  }
}

// 26 [L,R,H] (a full key does not affect another) and 111 [H] (prefix isolation: here the
// namespace, our equivalent of trypema's Redis prefix); strategies are separate limits too.
TEST_P(AllProviders, Scenario26And111KeysNamespacesAndStrategiesAreIndependent) {
  Start(S(10));  // r0.2: capacity 2; hlf 1: SUPPRESSED soft = hard = 2
  EXPECT_TRUE(IsAllowed(Inc("full", 0.2, 2)));
  EXPECT_TRUE(IsRejected(Inc("full", 0.2, 1)));
  EXPECT_TRUE(IsAllowed(Inc("other", 0.2, 2)));
  EXPECT_TRUE(IsAllowed(Inc("full", 0.2, 2, kAbs, 0, "ns2")));
  EXPECT_TRUE(IsAllowed(Inc("full", 0.2, 2, kSup)));
  EXPECT_EQ(Get("full").total, 2u);
  EXPECT_EQ(Get("other").total, 2u);
  EXPECT_EQ(Get("full", kAbs, 0, "ns2").total, 2u);
  EXPECT_TRUE(Snapshot(Get("full", kSup), 2, 0, 1));  // accepted 2 = hard: factor 1
  EXPECT_EQ(Get("nothing").total, 0u);
}

// 27 [L,R,H], deviation D1: the rate is per request. trypema (W6) stores the first rate:
// inc(rate 1, 0) then inc(rate 100, 6) is Rejected there ([R]: `w` keeps its first value; [H]:
// the first request's limit wins). Ours: the second request has capacity 600 and fits.
TEST_P(AllProviders, Scenario27HigherRateLaterIsAdmitted) {
  Scenario27HigherRateLaterIsAdmittedBody();
}

// 27 with SUPPRESSED, D1 as above.
TEST_P(AllProviders, Scenario27SuppressedHigherRateLaterIsAllowed) {
  Scenario27SuppressedHigherRateLaterIsAllowedBody();
}

// 27 continued, D1: a LOWER rate later sees the usage recorded under the higher one (capacity 6
// < 6 used + 1). Every provider agrees here (HYBRID's "second check", docs: HYBRID Decisions).
TEST_P(AllProviders, Scenario27LowerRateLaterSeesTheUsage) {
  Start(S(6));
  EXPECT_TRUE(IsAllowed(Inc("k", 100, 6)));
  EXPECT_TRUE(IsRejected(Inc("k", 1, 1)));
  EXPECT_TRUE(IsAllowed(Inc("k", 100, 1)));
  EXPECT_EQ(Get("k").total, 7u);
  // SUPPRESSED (hlf 1): 6 admitted at rate 100; at rate 1 the hard limit is 6 < 6 + 1.
  EXPECT_TRUE(IsAllowed(Inc("s", 100, 6, kSup)));
  EXPECT_TRUE(IsSuppressed(Inc("s", 1, 1, kSup), 1, false));
  EXPECT_TRUE(IsAllowed(Inc("s", 100, 1, kSup)));
  EXPECT_TRUE(Snapshot(Get("s", kSup), 8, 1, 0));  // last rate 100: accepted 7 < soft 600
}

// 31 [R] (W6 B300: 2, sleep 50, 4 merge → the next inc gives remaining 6) and 112 [H] (2 and 4
// committed into one bucket → remaining 6). B = W here, so "within one bucket" does not depend on
// the machine's speed.
TEST_P(AllProviders, Scenario31And112MergedBucketReleasesEverything) {
  Start(S(6, 6000));  // r1: capacity 6
  const int64_t t0 = Now();
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 2)));
  WaitPast(Now() + 50);
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 4)));
  Settle("k", kAbs, 6);
  const RateIncResult r = Inc("k", 1, 1);
  EXPECT_TRUE(IsRejected(r));
  EXPECT_EQ(r.remaining_after_waiting, 6u);
  EXPECT_LE(r.retry_after_ms, W());
  if (IsHybrid()) {
    EXPECT_GT(r.retry_after_ms, W() / 2);  // from Redis' bucket, dated by the push (see 109)
  } else {
    EXPECT_GE(r.retry_after_ms, W() - (Now() - t0));
  }
  if (!IsLocal()) {
    EXPECT_EQ(Raw("k", kAbs).buckets, 1u);
  }
}

// 31 [R] (W10 B200: 3, sleep 250, 7 → retry 8500..10000, remaining 3) and 112 [H] (separate
// buckets 3 and 7 → remaining 3).
TEST_P(AllProviders, Scenario31And112SeparateBucketsReleaseTheOldest) {
  Start(S(10, 200));  // r1: capacity 10
  const int64_t t0 = Now();
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 3)));
  Settle("k", kAbs, 3);  // HYBRID: the 3 are in Redis' bucket before the wait starts
  WaitPast(Now() + 250);
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 7)));
  Settle("k", kAbs, 10);
  const RateIncResult r = Inc("k", 1, 1);
  EXPECT_TRUE(IsRejected(r));
  EXPECT_EQ(r.remaining_after_waiting, 3u);
  EXPECT_LE(r.retry_after_ms, W());
  if (IsHybrid()) {
    EXPECT_GT(r.retry_after_ms, W() / 2);
  } else {
    EXPECT_GE(r.retry_after_ms, W() - (Now() - t0));  // trypema: 8500..10000 after 250 ms
  }
  if (!IsLocal()) {
    EXPECT_EQ(Raw("k", kAbs).buckets, 2u);
  }
}

// 32 [L,R,H] (W1 r3: inc 3 → the next is Rejected; after the window, Allowed) and 111's
// "unblock after the window (poll ≤ 3 s)". Never before W after the admission.
TEST_P(AllProviders, Scenario32UnblocksAfterTheWindow) {
  Start(S(1));
  const int64_t t0 = Now();
  EXPECT_TRUE(IsAllowed(Inc("k", 3, 3)));
  const RateIncResult r = Inc("k", 3, 1);
  if (Within(t0, W())) {
    EXPECT_TRUE(IsRejected(r));
    EXPECT_EQ(r.remaining_after_waiting, 3u);
    EXPECT_GT(r.retry_after_ms, 0);
    EXPECT_LE(r.retry_after_ms, W());
  }
  EXPECT_TRUE(Eventually([&] { return Inc("k", 3, 1).allowed; }));
  EXPECT_GE(Now() - t0, W()) << "admitted again before the window passed";
}

// 37 [L,R,H] (80 × inc(1) at W1 r50 → 50 allowed, 30 rejected, get 50), here W10 r5.
TEST_P(AllProviders, Scenario37UnitVolume) {
  Start(S(10));
  int allowed = 0, rejected = 0;
  for (int i = 0; i < 80; ++i) {
    const RateIncResult r = Inc("k", 5, 1);
    if (r.decision == RateDecision::kAllowed) {
      ++allowed;
    } else if (r.decision == RateDecision::kRejected) {
      ++rejected;
    }
  }
  EXPECT_EQ(allowed, 50);
  EXPECT_EQ(rejected, 30);
  EXPECT_EQ(Get("k").total, 50u);
}

// 38 [R,H] (9 allowed, 2 rejected, 1 allowed), deviation D2 for LOCAL: trypema's LOCAL admitted
// 9 then 2 (total 11) and rejected the 1; every provider of ours is all-or-nothing.
TEST_P(AllProviders, Scenario38AllOrNothing) {
  Start(S(10));  // r1: capacity 10
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 9)));
  EXPECT_TRUE(IsRejected(Inc("k", 1, 2)));
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 1)));
  EXPECT_EQ(Get("k").total, 10u);
}

// 39 [L,R,H] (after 2 allowed at r2, 20 rejections do not consume: get 2; after the window, 2
// are allowed again).
TEST_P(AllProviders, Scenario39RejectionsDoNotConsume) {
  Start(S(1));
  const int64_t t0 = Now();
  EXPECT_TRUE(IsAllowed(Inc("k", 2, 1)));
  EXPECT_TRUE(IsAllowed(Inc("k", 2, 1)));
  int rejected = 0;
  for (int i = 0; i < 20; ++i) rejected += IsRejected(Inc("k", 2, 1)) ? 1 : 0;
  const uint64_t total = Get("k").total;
  if (Within(t0, W())) {
    EXPECT_EQ(rejected, 20);
    EXPECT_EQ(total, 2u);
  }
  EXPECT_TRUE(Eventually([&] { return Get("k").total == 0; }));
  const int64_t t1 = Now();
  EXPECT_TRUE(IsAllowed(Inc("k", 2, 1)));
  EXPECT_TRUE(IsAllowed(Inc("k", 2, 1)));
  const RateIncResult third = Inc("k", 2, 1);
  if (Within(t1, W())) {
    EXPECT_TRUE(IsRejected(third));
  }
}

// 40 [L,R,H] (r2.9 at W1 → capacity 2, the 3rd inc is rejected), here r0.29 × W10 = 2.9 → 2.
TEST_P(AllProviders, Scenario40FractionalCapacity) {
  Start(S(10));
  EXPECT_TRUE(IsAllowed(Inc("k", 0.29, 1)));
  EXPECT_TRUE(IsAllowed(Inc("k", 0.29, 1)));
  EXPECT_TRUE(IsRejected(Inc("k", 0.29, 1)));
}

// 41 [R,H] (inc(capacity + 1) on an empty key → Rejected{0 ms, 0}, get 0; nothing written).
// Also with live usage: a request that can never fit has nothing to wait for.
TEST_P(AllProviders, Scenario41OversizedRequestIsRejectedWithZeros) {
  Start(S(10));  // r1: capacity 10
  RateIncResult r = Inc("k", 1, 11);
  EXPECT_TRUE(IsRejected(r));
  EXPECT_EQ(r.retry_after_ms, 0);
  EXPECT_EQ(r.remaining_after_waiting, 0u);
  if (IsRedis()) {
    EXPECT_EQ(server_->Command({"EXISTS", RedisKey("k", kAbs)}), "0");
  }
  EXPECT_EQ(Get("k").total, 0u);
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 5)));
  r = Inc("k", 1, 11);
  EXPECT_TRUE(IsRejected(r));
  EXPECT_EQ(r.retry_after_ms, 0);
  EXPECT_EQ(r.remaining_after_waiting, 0u);
  EXPECT_EQ(Get("k").total, 5u);
}

// 42 [R] (r2: 1, then 2 is Rejected, then 1 is Allowed), here W10 r0.2.
TEST_P(AllProviders, Scenario42RejectedIncDoesNotConsume) {
  Start(S(10));
  EXPECT_TRUE(IsAllowed(Inc("k", 0.2, 1)));
  EXPECT_TRUE(IsRejected(Inc("k", 0.2, 2)));
  EXPECT_TRUE(IsAllowed(Inc("k", 0.2, 1)));
  EXPECT_EQ(Get("k").total, 2u);
}

// 43 [R] (W2 B200: inc evicts expired buckets and updates the total; is_allowed is not in our
// API) and 64 [R] ("after the window, inc evicts the old fields and t = the live count").
TEST_P(AllProviders, Scenario43And64IncAfterPartialExpirySeesOnlyLiveUsage) {
  Start(S(2, 200));  // r1: capacity 2
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 1)));
  Settle("k", kAbs, 1);
  std::string first_field;  // REDIS/HYBRID: the first bucket's field in Redis
  if (!IsLocal()) {
    for (const auto& [f, v] : Hash(RedisKey("k", kAbs))) {
      if (f.rfind("b:", 0) == 0) first_field = f;
    }
    EXPECT_FALSE(first_field.empty());
  }
  WaitPast(Now() + 1000);
  const int64_t t1 = Now();  // the second bucket is dated at or after t1
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 1)));
  Settle("k", kAbs, 2);
  EXPECT_TRUE(Eventually([&] { return Get("k").total < 2; }));
  const uint64_t live = Get("k").total;
  if (Within(t1, W())) {
    EXPECT_EQ(live, 1u);  // only the first bucket left
  }
  // The first bucket left: whatever else is live, one more unit fits (capacity 2).
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 1)));
  const uint64_t after = Get("k").total;
  if (Within(t1, W())) {
    EXPECT_EQ(after, 2u);
  }
  if (!IsLocal()) {
    EXPECT_EQ(Hash(RedisKey("k", kAbs)).count(first_field), 0u)
        << "the expired bucket is still in Redis";
  }
}

// 44 [L,R,H] (get of an unknown key is 0 and inserts nothing; 3 × inc(1) gives 3) and 87
// [L,R,H] (SUPPRESSED: a zero snapshot and no state; 3 × inc → {3, 0, 0}); 116/131 [H] (Get
// includes this daemon's usage not yet synced); 70/122/129 ("an unknown get stays absent").
TEST_P(AllProviders, Scenario44And87GetOfUnknownKeyIsZeroAndCreatesNothing) {
  Start(S(10, 100, 2));  // r1: capacity 10; SUPPRESSED soft 10, hard 20
  EXPECT_TRUE(Snapshot(Get("a"), 0, 0, 0));
  EXPECT_TRUE(Snapshot(Get("s", kSup), 0, 0, 0));
  EXPECT_EQ(D().local->size(), 0u);
  EXPECT_EQ(D().hybrid->stats().keys.load(), 0);
  EXPECT_EQ(RateLimitKeys(), "");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(IsAllowed(Inc("a", 1, 1)));
  EXPECT_TRUE(Snapshot(Get("a"), 3, 0, 0));  // at once: HYBRID adds its own unsynced units
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(IsAllowed(Inc("s", 1, 1, kSup)));
  EXPECT_TRUE(Snapshot(Get("s", kSup), 3, 0, 0));
}

// 59 [R] (the `absolute` and `hybrid_absolute` keyspaces do not cross; set 40 there, Inc 40
// here) and 125 [H] (Redis `suppressed` state does not poison the hybrid keyspace): each provider
// and each strategy is its own limit (docs: "each provider keeps its own state").
TEST_P(AllProviders, Scenario59And125ProvidersAndStrategiesDoNotShareState) {
  Start(S(10));  // r10: capacity 100
  EXPECT_TRUE(IsAllowed(Inc("k", 10, 40)));
  EXPECT_TRUE(IsAllowed(Inc("k", 10, 40, kSup)));
  EXPECT_EQ(Get("k").total, 40u);
  EXPECT_TRUE(Snapshot(Get("k", kSup), 40, 0, 0));
  for (Provider other : {Provider::kLocal, Provider::kRedis, Provider::kHybrid}) {
    if (other == P()) continue;
    SCOPED_TRACE(ProviderName({other, 0}));
    EXPECT_TRUE(Snapshot(GetOn(D().Get(other), "k", kAbs), 0, 0, 0));
    EXPECT_TRUE(Snapshot(GetOn(D().Get(other), "k", kSup), 0, 0, 0));
  }
  // In Redis: only this provider's keys (LOCAL: none).
  const std::string keys = RateLimitKeys();
  if (IsLocal()) {
    EXPECT_EQ(keys, "");
  } else {
    const std::vector<std::string> list = absl::StrSplit(keys, ',');
    EXPECT_EQ(list.size(), 2u) << keys;
    for (const auto& k : list) {
      EXPECT_TRUE(k == RedisKey("k", kAbs) || k == RedisKey("k", kSup)) << k;
    }
  }
}

// 107 [H] (up to capacity, then Rejected; never Suppressed in 200 calls).
TEST_P(AllProviders, Scenario107AbsoluteNeverAnswersSuppressed) {
  Start(S(10));  // r5: capacity 50
  int allowed = 0, rejected = 0, other = 0;
  for (int i = 0; i < 200; ++i) {
    const RateIncResult r = Inc("k", 5, 1);
    EXPECT_EQ(r.suppression_factor, 0);
    if (IsAllowed(r)) {
      ++allowed;
    } else if (IsRejected(r)) {
      ++rejected;
    } else {
      ++other;
    }
  }
  EXPECT_EQ(allowed, 50);
  EXPECT_EQ(rejected, 150);
  EXPECT_EQ(other, 0);
}

// 108 [H] (W1 r5: 5 then 1 → retry 900..1000 ms, remaining 5: the whole count is one releasable
// bucket), here W10 r0.5 right after the admission (HYBRID: before or after its first push).
TEST_P(AllProviders, Scenario108RejectionRightAfterAnAdmission) {
  Start(S(10));
  const int64_t t0 = Now();
  EXPECT_TRUE(IsAllowed(Inc("k", 0.5, 5)));
  const RateIncResult r = Inc("k", 0.5, 1);
  EXPECT_TRUE(IsRejected(r));
  EXPECT_EQ(r.remaining_after_waiting, 5u);
  EXPECT_GT(r.retry_after_ms, 0);
  EXPECT_LE(r.retry_after_ms, W());
  if (IsLocal()) {
    EXPECT_EQ(r.retry_after_ms, W());  // no time passed on the manual clock
  } else if (IsRedis()) {
    EXPECT_GE(r.retry_after_ms, W() - (Now() - t0));
  }
}

// 113 [H] (concurrent smoke test) and 121 [H] (concurrent increments stay exact across
// background refreshes): 8 threads × 50 unit incs, capacity 100.
TEST_P(AllProviders, Scenario113And121ConcurrentIncsAdmitExactlyTheCapacity) {
  Start(S(10));  // r10: capacity 100
  std::atomic<int> allowed{0}, rejected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        const RateIncResult r = Inc("k", 10, 1);
        (r.allowed ? allowed : rejected)++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(allowed.load(), 100);  // one daemon, all-or-nothing units: exactly the capacity
  EXPECT_EQ(rejected.load(), 300);
  EXPECT_EQ(Get("k").total, 100u);
  Settle("k", kAbs, 100);
  if (!IsLocal()) {
    EXPECT_EQ(Raw("k", kAbs).accepted, 100u);
  }
}

// ================================================================ SUPPRESSED

// 73 [L,R] (hlf10 W10 r1: inc 20 → Suppressed{0, true}; after 1.05 s the factor is 0.5).
// Right after the inc the last second holds the 20: 1 − 1/20.
TEST_P(AllProviders, Scenario73FactorFromTheWindowAverage) {
  Start(S(10, 100, 10));  // soft 10, hard 100
  const int64_t t0 = Now();
  EXPECT_TRUE(IsSuppressed(Inc("k", 1, 20, kSup), 0, true));  // empty window: factor 0, D3 band
  const RateGetResult g = Get("k", kSup);
  EXPECT_EQ(g.total, 20u);
  EXPECT_EQ(g.declined, 0u);
  if (Within(t0, 1000)) {
    EXPECT_DOUBLE_EQ(g.suppression_factor, 1 - 1.0 / 20);
  }
  Settle("k", kSup, 20);
  WaitPast(Now() + 1000);
  const RateGetResult later = Get("k", kSup);
  if (Within(t0, W())) {
    EXPECT_TRUE(Snapshot(later, 20, 0, 0.5));  // 20 over 10 s = 2/s, nothing in the last second
  }
}

// 74 [L,R] (inc 10 Allowed; after 1 s, inc 20 → Suppressed{0, true}; the recomputed factor is
// 0.95). The cache period is 1 ms so that "recomputed" is one ms away, not 100.
TEST_P(AllProviders, Scenario74FactorFromTheLastSecond) {
  Start(S(10, 100, 10, 1));  // soft 10, hard 100
  const int64_t t0 = Now();
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 10, kSup)));
  Settle("k", kSup, 10);
  WaitPast(Now() + 1000);
  const int64_t t1 = Now();
  // avg 10/10 s = 1/s = the soft rate, nothing in the last second: factor 0, admitted.
  const RateIncResult r = Inc("k", 1, 20, kSup);
  if (Within(t0, W())) {
    EXPECT_TRUE(IsSuppressed(r, 0, true));
  }
  WaitPast(Now());  // the factor cached by that inc (REDIS, LOCAL) is stale now
  const RateGetResult g = Get("k", kSup);
  EXPECT_EQ(g.total, 30u);
  EXPECT_EQ(g.declined, 0u);
  if (Within(t1, 1000)) {
    EXPECT_DOUBLE_EQ(g.suppression_factor, 1 - 1.0 / 20);
  }
}

// 75 [L,H] (hlf1 W10 r1: 9 then 1 both Allowed; the next is Suppressed{1, false}; total 11,
// declined 1). D4: no factor is cached; the snapshot's factor 1 is live (accepted ≥ hard).
TEST_P(AllProviders, Scenario75ExactBoundaryThenDeclined) {
  Start(S(10, 100, 1));  // soft = hard = 10
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 9, kSup)));
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 1, kSup)));
  EXPECT_TRUE(IsSuppressed(Inc("k", 1, 1, kSup), 1, false));
  EXPECT_TRUE(Snapshot(Get("k", kSup), 11, 1, 1));
}

// 76 [L,R,H] (W1 r5 hlf1: 10 × inc(1) → 5 Allowed, then Suppressed{1, false}; snapshot
// {10, 5, 1}; Rejected never appears), here W10 r0.5.
TEST_P(AllProviders, Scenario76SuppressedNeverRejects) {
  Start(S(10, 100, 1));  // soft = hard = 5
  for (int i = 0; i < 10; ++i) {
    const RateIncResult r = Inc("k", 0.5, 1, kSup);
    EXPECT_NE(r.decision, RateDecision::kRejected);
    if (i < 5) {
      EXPECT_TRUE(IsAllowed(r)) << i;
    } else {
      EXPECT_TRUE(IsSuppressed(r, 1, false)) << i;
    }
  }
  EXPECT_TRUE(Snapshot(Get("k", kSup), 10, 5, 1));
}

// 77 [R,H] (r0.5 W6 hlf1.5: soft 3, hard 4: 4 Allowed, the 5th Suppressed{1, false}; snapshot
// {5, 1, 1}). Deviation D3 (exact-hard answer): the 4th lands exactly on hard and is drawn like
// any request of the band: SUPPRESSED with factor 1 − (3/6) / 3 = 5/6 (3 units in the last
// second), admitted here because the draw is 0. trypema answered it ALLOWED.
TEST_P(AllProviders, Scenario77ExactHardIsInTheBandNotAllowed) {
  Start(S(6, 100, 1.5));
  Random().set_fallback(0.0);
  const int64_t t0 = Now();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(IsAllowed(Inc("k", 0.5, 1, kSup))) << i;
  const RateIncResult r = Inc("k", 0.5, 1, kSup);
  if (Within(t0, 1000)) {
    EXPECT_TRUE(IsSuppressed(r, 1 - 0.5 / 3, true));
  } else {
    EXPECT_EQ(r.decision, RateDecision::kSuppressed);
    EXPECT_TRUE(r.allowed);
  }
  EXPECT_TRUE(IsSuppressed(Inc("k", 0.5, 1, kSup), 1, false));
  EXPECT_TRUE(Snapshot(Get("k", kSup), 5, 1, 1));
}

// Not a trypema scenario (D6): docs/api.md sets soft = capacity and hard = floor(capacity ×
// hlf). trypema took soft back from the raw hard value through hlf and lost a unit to rounding
// for common rates (r3 W10 hlf1.1: soft 29, so the 30th request within the capacity was drawn).
TEST_P(AllProviders, SuppressedSoftLimitIsTheCapacityHardIsCapacityTimesFactor) {
  Start(S(10, 100, 1.1));      // r3: capacity 30 = soft, hard floor(33.000000000000004) = 33
  Random().set_fallback(0.0);  // in the band every draw admits while the factor is below 1
  for (int i = 0; i < 30; ++i) EXPECT_TRUE(IsAllowed(Inc("k", 3, 1, kSup))) << i;
  for (int i = 0; i < 3; ++i) {
    const RateIncResult r = Inc("k", 3, 1, kSup);
    EXPECT_EQ(r.decision, RateDecision::kSuppressed) << i;
    EXPECT_TRUE(r.allowed) << i;
  }
  EXPECT_TRUE(IsSuppressed(Inc("k", 3, 1, kSup), 1, false));  // accepted 33 = hard
  EXPECT_TRUE(Snapshot(Get("k", kSup), 34, 1, 1));
}

// 85 [L,R,H] (hlf2 W10 r1: 10 × inc(1) Allowed; the 11th with a pinned factor 0 →
// Suppressed{0, true}, total 11). D4: no factor can be pinned; it is 0 naturally once the last
// second is empty (avg 1/s = the soft rate). Admitted without a draw: the draw would decline.
TEST_P(AllProviders, Scenario85FactorZeroAboveSoftAdmits) {
  Start(S(10, 100, 2));  // soft 10, hard 20
  Random().set_fallback(0.99);
  const int64_t t0 = Now();
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(IsAllowed(Inc("k", 1, 1, kSup))) << i;
  Settle("k", kSup, 10);
  WaitPast(Now() + 1000);
  const int draws = Random().calls();
  const RateIncResult r = Inc("k", 1, 1, kSup);
  if (Within(t0, W())) {
    EXPECT_TRUE(IsSuppressed(r, 0, true));
    if (!IsRedis()) {
      EXPECT_EQ(Random().calls(), draws);  // REDIS draws for every Inc
    }
    EXPECT_EQ(Get("k", kSup).total, 11u);
  }
}

// 86 [L,R] (inc 20 on a fresh key, hlf2 → Allowed with factor 1 cached; the next inc →
// Suppressed{1, false}; snapshot {21, 1, 1}). D3: 20 = hard is in the band, drawn with the
// factor of an empty window (0): SUPPRESSED{0, true}; D4: factor 1 is live, not cached.
TEST_P(AllProviders, Scenario86FreshKeyToHardThenDeclined) {
  Start(S(10, 100, 2));  // r1: soft 10, hard 20
  EXPECT_TRUE(IsSuppressed(Inc("k", 1, 20, kSup), 0, true));
  EXPECT_TRUE(IsSuppressed(Inc("k", 1, 1, kSup), 1, false));
  EXPECT_TRUE(Snapshot(Get("k", kSup), 21, 1, 1));
}

// 86 [R] second half (hlf10 W10 r1: inc 100 Allowed, then {101, 1, 1}); D3 as above.
TEST_P(AllProviders, Scenario86HardLimitFactor10) {
  Start(S(10, 100, 10));  // soft 10, hard 100
  EXPECT_TRUE(IsSuppressed(Inc("k", 1, 100, kSup), 0, true));
  EXPECT_TRUE(IsSuppressed(Inc("k", 1, 1, kSup), 1, false));
  EXPECT_TRUE(Snapshot(Get("k", kSup), 101, 1, 1));
}

// 100 [L,H] (concurrent increments record every observation exactly; hybrid total 16 × 50).
TEST_P(AllProviders, Scenario100ConcurrentSuppressedIncsAreRecordedExactly) {
  Start(S(10, 100, 2));  // r10: soft 100, hard 200
  Random().set_fallback(0.5);
  std::atomic<uint64_t> admitted{0}, declined{0}, rejected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        const RateIncResult r = Inc("k", 10, 1, kSup);
        if (r.decision == RateDecision::kRejected) {
          rejected++;
        } else {
          (r.allowed ? admitted : declined)++;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(rejected.load(), 0u);
  EXPECT_GE(admitted.load(), 100u);  // everything up to soft is admitted deterministically
  EXPECT_LE(admitted.load(), 200u);  // D3: accepted never beyond hard
  const RateGetResult g = Get("k", kSup);
  EXPECT_EQ(g.total, 800u);
  EXPECT_EQ(g.declined, declined.load());
  Settle("k", kSup, admitted.load(), declined.load());
  if (!IsLocal()) {
    const RawSums raw = Raw("k", kSup);
    EXPECT_EQ(raw.accepted, admitted.load());
    EXPECT_EQ(raw.declined, declined.load());
  }
}

// 102 [R] (the factor of a fresh key is 0; with 11 (soft 10, hard 20) it is 1 − 1/11): "set 11"
// is an inc of 11 here (on an empty window: factor 0, admitted).
TEST_P(AllProviders, Scenario102FactorOfAFreshKeyAndAfterEleven) {
  Start(S(10, 100, 2));  // r1: soft 10, hard 20
  EXPECT_TRUE(Snapshot(Get("k", kSup), 0, 0, 0));
  const int64_t t0 = Now();
  EXPECT_TRUE(IsSuppressed(Inc("k", 1, 11, kSup), 0, true));
  const RateGetResult g = Get("k", kSup);
  EXPECT_EQ(g.total, 11u);
  EXPECT_EQ(g.declined, 0u);
  if (Within(t0, 1000)) {
    EXPECT_DOUBLE_EQ(g.suppression_factor, 1 - 1.0 / 11);
  }
}

// 103 [R] (W1 hlf2 r1: inc 2 is Allowed; after the window and the cache expired the factor is 0
// and the next inc is Allowed). D3: 2 = hard (soft 1) is SUPPRESSED{0, true}.
TEST_P(AllProviders, Scenario103AfterTheWindowTheFactorIsZeroAgain) {
  Start(S(1, 100, 2));  // r1: soft 1, hard 2
  const int64_t t0 = Now();
  EXPECT_TRUE(IsSuppressed(Inc("k", 1, 2, kSup), 0, true));
  const RateGetResult g = Get("k", kSup);
  if (Within(t0, W())) {
    EXPECT_TRUE(Snapshot(g, 2, 0, 1));  // accepted 2 = hard
  }
  EXPECT_TRUE(Eventually([&] { return Snapshot(Get("k", kSup), 0, 0, 0); }));
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 1, kSup)));
}

// 104 [R] (hlf1 W1 r5, inc 5: the factor is 1 before expiry and 0 after; the next inc is
// Allowed).
TEST_P(AllProviders, Scenario104FactorOneBeforeExpiryZeroAfter) {
  Start(S(1, 100, 1));  // r5: soft = hard = 5
  const int64_t t0 = Now();
  EXPECT_TRUE(IsAllowed(Inc("k", 5, 5, kSup)));
  const RateGetResult g = Get("k", kSup);
  if (Within(t0, W())) {
    EXPECT_TRUE(Snapshot(g, 5, 0, 1));
  }
  EXPECT_TRUE(Eventually([&] { return Snapshot(Get("k", kSup), 0, 0, 0); }));
  EXPECT_TRUE(IsAllowed(Inc("k", 5, 1, kSup)));
}

// 105 [R] (over 3 windows at 10× the rate, r10 W1 hlf1.5: the total allowed is ≥ soft × 3).
// D3 is what keeps it true under sustained overload (declines do not pin the factor at 1). Run
// for 4 windows; the requests are paced 10 ms apart (~100/s = 10 × the soft rate). On a machine
// too loaded to keep that pace the total is not asserted; what is asserted whatever the load
// (LOCAL, REDIS: their buckets are dated by the request): a request is declined only when at
// least `soft` admitted units may be in its window — admission never collapses below soft.
TEST_P(AllProviders, Scenario105ThroughputOverWindowsUnderOverload) {
  Start(S(1, 100, 1.5));  // soft 10, hard 15 per 1 s
  Random().set_fallback(0.5);
  struct Call {
    int64_t before, after;  // provider clock around the call
    bool allowed, declined;
  };
  std::vector<Call> calls;
  const int64_t start = Now();
  uint64_t admitted = 0, rejected = 0;
  int64_t max_gap_ms = 0;
  auto last = std::chrono::steady_clock::now();
  while (calls.empty() || calls.back().after - start < 4 * W()) {
    Call c;
    c.before = Now();
    const RateIncResult r = Inc("k", 10, 1, kSup);
    c.after = Now();
    c.allowed = r.allowed;
    c.declined = r.decision == RateDecision::kSuppressed && !r.allowed;
    calls.push_back(c);
    if (r.decision == RateDecision::kRejected) ++rejected;
    if (r.allowed) ++admitted;
    if (IsLocal()) {
      clock_.AdvanceMs(10);
    } else {
      std::this_thread::sleep_for(10ms);
    }
    const auto now = std::chrono::steady_clock::now();
    max_gap_ms = std::max<int64_t>(
        max_gap_ms, std::chrono::duration_cast<std::chrono::milliseconds>(now - last).count());
    last = now;
  }
  const int64_t elapsed = calls.back().after - start;
  EXPECT_EQ(rejected, 0u);
  // Never more than hard in any window: at most hard per started window.
  EXPECT_LE(admitted, 15u * static_cast<uint64_t>(elapsed / W() + 1));
  if (!IsHybrid()) {  // HYBRID dates units by their push, later than the request
    int collapsed = 0;
    for (size_t i = 0; i < calls.size(); ++i) {
      if (!calls[i].declined) continue;
      uint64_t possible = 0;  // admitted units that may still be in request i's window
      for (size_t j = 0; j < i; ++j) {
        if (calls[j].allowed && calls[j].after >= calls[i].before - W()) ++possible;
      }
      if (possible < 10) ++collapsed;
    }
    EXPECT_EQ(collapsed, 0) << "declined while fewer than soft units were admitted in the window";
  }
  if (IsLocal() || max_gap_ms < W() / 4) {
    EXPECT_GE(admitted, 10u * 3) << calls.size() << " requests";
  } else {
    std::cout << "[ paced requests were " << max_gap_ms << " ms apart at worst: the total over 3 "
              << "windows is not asserted ]\n";
  }
}

// 125 [H] (after hard, 100% are denied: 0 of 10) and 126 [H] (factor 1 skips the RNG; the
// hard-cap guard denies without the RNG): with a draw of 0 (which admits any factor < 1) every
// request beyond hard is still declined; LOCAL and HYBRID do not even draw.
TEST_P(AllProviders, Scenario125And126BeyondHardEveryRequestIsDeclined) {
  Start(S(10, 100, 2));  // r1: soft 10, hard 20
  EXPECT_TRUE(IsSuppressed(Inc("k", 1, 20, kSup), 0, true));
  Random().set_fallback(0.0);
  const int draws = Random().calls();
  int allowed = 0;
  for (int i = 0; i < 10; ++i) {
    const RateIncResult r = Inc("k", 1, 1, kSup);
    EXPECT_TRUE(IsSuppressed(r, 1, false)) << i;
    allowed += r.allowed ? 1 : 0;
  }
  EXPECT_EQ(allowed, 0);
  if (!IsRedis()) {
    EXPECT_EQ(Random().calls(), draws);
  }
  EXPECT_TRUE(Snapshot(Get("k", kSup), 30, 10, 1));
}

// 127 [H] (a batch at the soft boundary: 2 Allowed, then an exact hit Allowed, then one crossing
// Suppressed{1, false}), with hlf1 W10 r0.5: soft = hard = 5.
TEST_P(AllProviders, Scenario127SoftBoundary) {
  Start(S(10, 100, 1));
  EXPECT_TRUE(IsAllowed(Inc("k", 0.5, 2, kSup)));
  EXPECT_TRUE(IsAllowed(Inc("k", 0.5, 3, kSup)));
  EXPECT_TRUE(IsSuppressed(Inc("k", 0.5, 1, kSup), 1, false));
  EXPECT_TRUE(Snapshot(Get("k", kSup), 6, 1, 1));
}

// 128 [H] (SUPPRESSED unblocks after the window; eviction allows a fresh burst) and 130 [H]
// (Get does not resurrect an expired baseline: after expiry {0, 0, 0}).
TEST_P(AllProviders, Scenario128And130FreshBurstAfterTheWindow) {
  Start(S(1, 100, 1));  // r5: soft = hard = 5
  const int64_t t0 = Now();
  EXPECT_TRUE(IsAllowed(Inc("k", 5, 5, kSup)));
  const RateIncResult r = Inc("k", 5, 1, kSup);
  if (Within(t0, W())) {
    EXPECT_TRUE(IsSuppressed(r, 1, false));
  }
  EXPECT_TRUE(Eventually([&] { return Snapshot(Get("k", kSup), 0, 0, 0); }));
  const int64_t t1 = Now();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(IsAllowed(Inc("k", 5, 1, kSup))) << i;
  const RateIncResult sixth = Inc("k", 5, 1, kSup);
  if (Within(t1, W())) {
    EXPECT_TRUE(IsSuppressed(sixth, 1, false));
  }
}

// ================================================================ two daemons, one limit

// 109 [H] (seeded full in Redis, another instance's request gets retry 50..60 s of W60 and
// remaining = capacity: the retry comes from Redis' bucket, not from the sync interval). Seeded
// here by daemon 0's Inc; daemon 1 asks.
TEST_P(SharedProviders, Scenario109AnotherDaemonSeesTheOldestBucket) {
  Start(S(10), 2);  // r1: capacity 10
  const int64_t t0 = Now();
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 10, kAbs, 0)));
  Settle("k", kAbs, 10);
  const int64_t tb = Now();
  const RateIncResult r = Inc("k", 1, 1, kAbs, 1);
  const int64_t t_end = Now();
  EXPECT_TRUE(IsRejected(r));
  EXPECT_EQ(r.remaining_after_waiting, 10u);
  EXPECT_LE(r.retry_after_ms, W());
  // W − the bucket's age; HYBRID measures the age at its sync plus the time since the sync was
  // sent, so it may count that sync's round trip in addition (≤ t_end − tb).
  EXPECT_GE(r.retry_after_ms, W() - (t_end - t0) - (t_end - tb) - 2);
}

// 110 [H] (filling the local budget writes nothing, so another instance sees Allowed until the
// overflow commits). Deviation D5: ours never lets the second daemon admit what the first one
// used (or holds as its lease): it rejects at once, and together they admit at most capacity.
TEST_P(SharedProviders, Scenario110AfterOneDaemonUsedTheCapacityTheOtherRejects) {
  Start(S(10), 2);  // r1: capacity 10
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(IsAllowed(Inc("k", 1, 1, kAbs, 0))) << i;
  EXPECT_TRUE(IsRejected(Inc("k", 1, 1, kAbs, 1)));
  EXPECT_TRUE(IsRejected(Inc("k", 1, 1, kAbs, 0)));
  Settle("k", kAbs, 10);
  EXPECT_EQ(Get("k", kAbs, 0).total, 10u);
  EXPECT_EQ(Get("k", kAbs, 1).total, 10u);
}

// 115 [H] (after more increments elsewhere, get = 9; get_estimate is not in our API). REDIS:
// exact at once. HYBRID: a daemon sees another's units after that daemon's next sync (docs:
// "Get ... reads everyone's"); the second daemon is admitted at once
// (Scenario115SecondDaemonIsAdmittedAtOnce).
TEST_P(SharedProviders, Scenario115GetSeesEveryDaemonsUsage) {
  Start(S(10), 2);  // r10: capacity 100
  EXPECT_TRUE(IsAllowed(Inc("k", 10, 5, kAbs, 0)));
  bool first_try = true;
  EXPECT_TRUE(Eventually([&] {
    const RateIncResult r = Inc("k", 10, 4, kAbs, 1);
    if (first_try) {
      EXPECT_TRUE(IsAllowed(r));  // HYBRID too: daemon 0 holds a lease of its demand only
    }
    first_try = false;
    return r.allowed;
  }));
  if (IsRedis()) {
    EXPECT_EQ(Get("k", kAbs, 0).total, 9u);
    EXPECT_EQ(Get("k", kAbs, 1).total, 9u);
  }
  EXPECT_TRUE(Eventually([&] { return Get("k", kAbs, 0).total == 9; }));
  EXPECT_TRUE(Eventually([&] { return Get("k", kAbs, 1).total == 9; }));
}

// 41 with two daemons: a request larger than the capacity is REJECTED (0, 0) and reserves
// nothing: another daemon is admitted at once. (HYBRID used to count it as a request of the key,
// so its next sync leased this daemon the whole capacity for lease_ms + grace: found by this port.)
TEST_P(SharedProviders, Scenario41OversizedRequestReservesNothing) {
  Start(S(10), 2);  // r1: capacity 10
  const RateIncResult r = Inc("k", 1, 11, kAbs, 0);
  EXPECT_TRUE(IsRejected(r));
  EXPECT_EQ(r.retry_after_ms, 0);
  if (IsHybrid()) {  // a periodic sync pass of daemon 0 (it has nothing to sync), answered
    D(0).hybrid->SyncNow();
    EXPECT_TRUE(PollUntil([&] { return D(0).hybrid->outstanding() == 0; }, kPollBound));
    EXPECT_EQ(D(0).hybrid->stats().syncs.load(), 0u);
  }
  EXPECT_TRUE(IsAllowed(Inc("k", 1, 1, kAbs, 1)));  // nothing is used: 0 + 1 ≤ 10
}

// 115 with two daemons: capacity 100, daemon 0 used 5, daemon 1's Inc(4) is ALLOWED at once
// (used + count ≤ capacity). HYBRID used to reject it for ~260 ms with a retry hint of a whole
// window: daemon 0, alone at its first sync, leased the whole capacity and kept it while idle.
// Leases are now capped by each daemon's recent demand (docs/rate_limiting.md, lease sizing).
TEST_P(SharedProviders, Scenario115SecondDaemonIsAdmittedAtOnce) {
  Start(S(10), 2);  // r10: capacity 100
  EXPECT_TRUE(IsAllowed(Inc("k", 10, 5, kAbs, 0)));
  EXPECT_TRUE(IsAllowed(Inc("k", 10, 4, kAbs, 1)));  // 5 + 4 ≤ 100
  EXPECT_TRUE(Eventually([&] { return Get("k", kAbs, 0).total == 9; }));
}

// 124 [H] (a mid factor seeded in Redis → a fresh instance draws exactly once and answers
// Suppressed with 0 < f < 1). Seeded by daemon 0's inc of 15 (soft 10, hard 20). HYBRID, D5:
// daemon 1 can admit only out of a lease, so it asks once daemon 0's idle lease has lapsed in
// Redis (daemon 0's inc of 15 makes its demand 30, so it leases all of the hard limit that is
// left; before it lapses daemon 1 declines with factor 1).
TEST_P(SharedProviders, Scenario124FreshDaemonInTheBandDrawsOnce) {
  Start(S(10, 100, 2), 2);
  const int64_t t0 = Now();
  EXPECT_TRUE(IsSuppressed(Inc("k", 1, 15, kSup, 0), 0, true));
  Settle("k", kSup, 15);
  if (IsHybrid()) WaitPast(Now() + LeaseReservedMs());
  Random(1).set_fallback(0.0);
  const int draws = Random(1).calls();
  const RateIncResult r = Inc("k", 1, 1, kSup, 1);
  EXPECT_EQ(Random(1).calls(), draws + 1);
  EXPECT_EQ(r.decision, RateDecision::kSuppressed);
  EXPECT_TRUE(r.allowed);
  EXPECT_GT(r.suppression_factor, 0);
  EXPECT_LT(r.suppression_factor, 1);
  if (Within(t0, 1000)) {
    EXPECT_DOUBLE_EQ(r.suppression_factor, 1 - 1.0 / 15);
  }
}

// 128 [H] ("a full denial seeded from Redis does not call the RNG"): daemon 0 reached hard;
// daemon 1's request is declined with factor 1 whatever the draw (HYBRID draws nothing).
TEST_P(SharedProviders, Scenario128FullDenialSeededByAnotherDaemon) {
  Start(S(10, 100, 2), 2);  // r1: soft 10, hard 20
  EXPECT_TRUE(IsSuppressed(Inc("k", 1, 20, kSup, 0), 0, true));
  Settle("k", kSup, 20);
  Random(1).set_fallback(0.0);
  const int draws = Random(1).calls();
  EXPECT_TRUE(IsSuppressed(Inc("k", 1, 1, kSup, 1), 1, false));
  if (IsHybrid()) {
    EXPECT_EQ(Random(1).calls(), draws);
  }
  EXPECT_TRUE(Eventually([&] { return Snapshot(Get("k", kSup, 1), 21, 1, 1); }));
}

// 100 [H] and 130 [H] ("local Accepting does not hide newer Redis suppression"): two daemons
// alternate on one SUPPRESSED key with draws that admit any factor < 1; together they never
// admit beyond hard (D3), never answer REJECTED, and both read the same totals in the end.
TEST_P(SharedProviders, Scenario100And130TwoDaemonsNeverAdmitBeyondHardTogether) {
  Start(S(10, 100, 2), 2);  // r1: soft 10, hard 20
  Random(0).set_fallback(0.0);
  Random(1).set_fallback(0.0);
  uint64_t admitted = 0, declined = 0;
  for (int i = 0; i < 60; ++i) {
    const RateIncResult r = Inc("k", 1, 1, kSup, i % 2);
    EXPECT_NE(r.decision, RateDecision::kRejected);
    (r.allowed ? admitted : declined)++;
  }
  EXPECT_GT(admitted, 0u);
  EXPECT_LE(admitted, 20u);
  Settle("k", kSup, admitted, declined);
  for (int d = 0; d < 2; ++d) {
    EXPECT_TRUE(Eventually([&] {
      const RateGetResult g = Get("k", kSup, d);
      return g.total == 60 && g.declined == declined;
    })) << "daemon "
        << d;
  }
}

// ================================================================ what Redis holds

// 60-66 [R] (raw state after incs: total = Σ buckets, one field per bucket, TTL; a rejected inc
// leaves everything unchanged), 70 [R] / 122 [H] / 129 [H] (an unknown get stays absent), 106
// [R] / 133 [H] (Σ buckets == total and Σ declined == declined, with denials). In our layout
// (docs/rate_limiting.md): one HASH per (namespace, key, strategy), no stored limit (D1: no `w`),
// no `ae` set and no cleanup: every key expires by itself (REDIS W + B after the last write,
// HYBRID W + lease + 60 s after the last sync). D5: HYBRID writes the key at the first request
// (its lease is reserved there), where trypema's hybrid wrote nothing before an overflow.
TEST_P(SharedProviders, Scenario60To66And70And106And122And133RedisHoldsTheAdmittedUnits) {
  Start(S(10, 100, 2));  // r5: capacity 50; r1 SUPPRESSED: soft 10, hard 20
  EXPECT_TRUE(Snapshot(Get("a"), 0, 0, 0));
  EXPECT_TRUE(Snapshot(Get("s", kSup), 0, 0, 0));
  EXPECT_EQ(RateLimitKeys(), "") << "a Get created state in Redis";

  EXPECT_TRUE(IsAllowed(Inc("a", 5, 3)));
  Settle("a", kAbs, 3);
  const std::string key = RedisKey("a", kAbs);
  RawSums raw = Raw("a", kAbs);
  EXPECT_EQ(raw.accepted, 3u);
  EXPECT_EQ(raw.buckets, 1u);
  EXPECT_EQ(Hash(key).count("w"), 0u);  // D1: no stored limit
  const int64_t ttl = std::stoll(server_->Command({"PTTL", key}));
  if (IsRedis()) {
    EXPECT_GT(ttl, 0);
    EXPECT_LE(ttl, W() + 100);
  } else {
    EXPECT_GT(ttl, W());
    EXPECT_LE(ttl, W() + LeaseReservedMs() + 60000);
  }
  // 63: a rejected inc changes nothing (REDIS: not a byte, not even the TTL).
  const auto before = Hash(key);
  EXPECT_TRUE(IsRejected(Inc("a", 5, 48)));
  if (IsRedis()) {
    EXPECT_EQ(Hash(key), before);
    EXPECT_LE(std::stoll(server_->Command({"PTTL", key})), ttl);
  }
  Settle("a", kAbs, 3);
  EXPECT_EQ(Raw("a", kAbs).accepted, 3u);
  EXPECT_EQ(Get("a").total, 3u);

  // SUPPRESSED with a denial: 15 admitted (band, empty window), 10 declined (25 > hard).
  EXPECT_TRUE(IsSuppressed(Inc("s", 1, 15, kSup), 0, true));
  EXPECT_TRUE(IsSuppressed(Inc("s", 1, 10, kSup), 1, false));
  Settle("s", kSup, 15, 10);
  raw = Raw("s", kSup);
  EXPECT_EQ(raw.accepted, 15u);
  EXPECT_EQ(raw.declined, 10u);
  const RateGetResult g = Get("s", kSup);
  EXPECT_EQ(g.total, 25u);
  EXPECT_EQ(g.declined, 10u);
}

INSTANTIATE_TEST_SUITE_P(Providers, AllProviders,
                         ::testing::Values(Provider::kLocal, Provider::kRedis, Provider::kHybrid),
                         ProviderName);
INSTANTIATE_TEST_SUITE_P(Providers, SharedProviders,
                         ::testing::Values(Provider::kRedis, Provider::kHybrid), ProviderName);

}  // namespace
}  // namespace distkit::testing
