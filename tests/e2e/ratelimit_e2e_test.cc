// End to end for the REDIS rate-limit provider: real distkitd processes against a real
// redis-server (RateLimitE2E: also a Redis Cluster). Two daemons share one limit exactly; with
// Redis paused every daemon answers by its --rate_limit_failure_mode (open | closed | local) within
// the Redis deadline, degraded; the Redis keys disappear by themselves after the window.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "distkit/v1/rate_limit.grpc.pb.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"
#include "tests/support/redis_backend.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::Daemon;
using testing::PollUntil;
using testing::RedisBackend;
using testing::RedisServer;

constexpr char kRedisTimeoutMs[] = "300";

constexpr char kService[] = "distkit.v1.RateLimitService";

// The flags of every daemon here: `extra` and the Redis deadline.
std::vector<std::string> Flags(std::vector<std::string> extra = {}) {
  extra.insert(extra.begin(), {"--redis_timeout_ms", kRedisTimeoutMs});
  return extra;
}

// A REDIS-provider Inc that must succeed.
v1::RateLimitIncResponse RedisInc(Daemon& d, const std::string& key, double rate, uint64_t count,
                                  v1::Strategy strategy = v1::STRATEGY_ABSOLUTE) {
  v1::RateLimitIncResponse resp;
  auto s = d.RateLimitInc(key, rate, count, v1::PROVIDER_REDIS, strategy, &resp);
  EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  return resp;
}

// Keys of the REDIS rate limiter for the default namespace (SCAN: the test does not
// re-implement the hash tag).
std::vector<std::string> RateKeys(const RedisBackend& redis) {
  std::string scan =
      redis.Command({"SCAN", "0", "MATCH", "dk:{*}:r:?:distkit:*", "COUNT", "100000"});
  std::vector<std::string> keys;
  // "cursor,key1,key2,..." ("0," when none).
  size_t pos = scan.find(',');
  while (pos != std::string::npos) {
    size_t next = scan.find(',', pos + 1);
    std::string k = scan.substr(pos + 1, next == std::string::npos ? next : next - pos - 1);
    if (!k.empty()) keys.push_back(k);
    pos = next;
  }
  return keys;
}

// On both backends; FailureModeE2E (Redis paused) is standalone only: the cluster is shared by
// the suite, and pausing every node has no faithful equivalent.
class RateLimitE2E : public testing::RedisBackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, RateLimitE2E, testing::kAllBackends, testing::BackendParamName);

TEST_P(RateLimitE2E, TwoDaemonsShareOneRedisLimitExactly) {
  Daemon a(redis(), "a", Flags()), b(redis(), "b", Flags());
  ASSERT_TRUE(a.WaitServing(kService)) << a.Log();
  ASSERT_TRUE(b.WaitServing(kService)) << b.Log();
  // 5/s over the default 10 s window: capacity 50. 4 clients × 40 requests, both daemons.
  std::atomic<int> allowed{0}, rejected{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Daemon& d = t % 2 == 0 ? a : b;
      for (int i = 0; i < 40; ++i) {
        v1::RateLimitIncResponse resp;
        auto s = d.RateLimitInc("shared", 5, 1, v1::PROVIDER_REDIS, v1::STRATEGY_ABSOLUTE, &resp);
        if (!s.ok() || resp.degraded()) {
          other++;
        } else if (resp.decision() == v1::DECISION_ALLOWED) {
          allowed++;
        } else if (resp.decision() == v1::DECISION_REJECTED) {
          rejected++;
        } else {
          other++;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(allowed.load(), 50);
  EXPECT_EQ(rejected.load(), 110);
  for (Daemon* d : {&a, &b}) {
    v1::RateLimitGetResponse g;
    ASSERT_TRUE(d->RateLimitGet("shared", v1::PROVIDER_REDIS, v1::STRATEGY_ABSOLUTE, &g).ok());
    EXPECT_EQ(g.total(), 50u);
  }
  // The LOCAL provider of either daemon has its own, untouched state.
  v1::RateLimitGetResponse g;
  ASSERT_TRUE(a.RateLimitGet("shared", v1::PROVIDER_LOCAL, v1::STRATEGY_ABSOLUTE, &g).ok());
  EXPECT_EQ(g.total(), 0u);
}

TEST_P(RateLimitE2E, KeysDisappearFromRedisAfterTheWindow) {
  RedisBackend& redis = this->redis();
  Daemon d(redis, "d", Flags({"--rate_window_seconds", "1", "--rate_bucket_ms", "100"}));
  ASSERT_TRUE(d.WaitServing(kService)) << d.Log();
  EXPECT_EQ(RedisInc(d, "k1", 100, 5).decision(), v1::DECISION_ALLOWED);
  EXPECT_EQ(RedisInc(d, "k2", 100, 5, v1::STRATEGY_SUPPRESSED).decision(), v1::DECISION_ALLOWED);
  EXPECT_EQ(RedisInc(d, "k2", 1, 500, v1::STRATEGY_SUPPRESSED).allowed(), false);
  auto keys = RateKeys(redis);
  ASSERT_EQ(keys.size(), 2u);
  for (const auto& k : keys) {
    int64_t pttl = std::stoll(redis.Command({"PTTL", k}));
    EXPECT_GT(pttl, 0) << k;
    EXPECT_LE(pttl, 1100) << k;
  }
  EXPECT_TRUE(PollUntil([&] { return RateKeys(redis).empty(); }, 10s));
}

// Redis paused (SIGSTOP): connected, but no answer. Each daemon answers by its failure mode
// within the Redis deadline, degraded; after Resume, Redis answers again (not degraded).
class FailureModeE2E : public ::testing::TestWithParam<std::string> {};

TEST_P(FailureModeE2E, RedisPausedAnswersByTheFailureMode) {
  const std::string mode = GetParam();
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  // A 60 s window: nothing expires while the test runs.
  Daemon d(*redis, "d", Flags({"--rate_limit_failure_mode", mode, "--rate_window_seconds", "60"}));
  ASSERT_TRUE(d.WaitServing(kService)) << d.Log();
  // Fill the REDIS limit (1/6 per second × 60 s = 10): a Redis answer would now be REJECTED.
  const double rate = 1.0 / 6;
  ASSERT_EQ(RedisInc(d, "k", rate, 10).decision(), v1::DECISION_ALLOWED);
  auto full = RedisInc(d, "k", rate, 1);
  ASSERT_EQ(full.decision(), v1::DECISION_REJECTED);
  ASSERT_GT(full.retry_after_ms(), 0);
  ASSERT_FALSE(full.degraded());
  // The LOCAL provider's state for the key: 3 of its 10 used.
  v1::RateLimitIncResponse local;
  ASSERT_TRUE(d.RateLimitInc("k", rate, 3, v1::PROVIDER_LOCAL, v1::STRATEGY_ABSOLUTE, &local).ok());
  ASSERT_EQ(local.decision(), v1::DECISION_ALLOWED);

  redis->Pause();
  for (int i = 0; i < 3; ++i) {
    auto r = RedisInc(d, "k", rate, 4);
    EXPECT_TRUE(r.degraded()) << mode << " #" << i;
    if (mode == "open") {
      EXPECT_EQ(r.decision(), v1::DECISION_ALLOWED);
      EXPECT_TRUE(r.allowed());
    } else if (mode == "closed") {
      EXPECT_EQ(r.decision(), v1::DECISION_REJECTED);
      EXPECT_FALSE(r.allowed());
      EXPECT_EQ(r.retry_after_ms(), 0);
    } else {
      // LOCAL's state decides: 3 + 4 fits its capacity of 10, 7 + 4 does not.
      EXPECT_EQ(r.decision(), i == 0 ? v1::DECISION_ALLOWED : v1::DECISION_REJECTED) << i;
      if (i > 0) {
        EXPECT_GT(r.retry_after_ms(), 0) << "LOCAL's own bucket, not the closed answer";
        // LOCAL's oldest bucket: the 3, or 3 + 4 if both landed within one bucket period.
        EXPECT_TRUE(r.remaining_after_waiting() == 3 || r.remaining_after_waiting() == 7)
            << r.remaining_after_waiting();
      }
    }
  }
  // SUPPRESSED takes the same path.
  auto s = RedisInc(d, "s", rate, 1, v1::STRATEGY_SUPPRESSED);
  EXPECT_TRUE(s.degraded());
  // Get has no failure mode.
  v1::RateLimitGetResponse g;
  auto gs = d.RateLimitGet("k", v1::PROVIDER_REDIS, v1::STRATEGY_ABSOLUTE, &g);
  EXPECT_TRUE(gs.error_code() == grpc::StatusCode::UNAVAILABLE ||
              gs.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
      << gs.error_code() << " " << gs.error_message();

  redis->Resume();
  EXPECT_TRUE(PollUntil(
      [&] {
        v1::RateLimitIncResponse r;
        auto st = d.RateLimitInc("k", rate, 1, v1::PROVIDER_REDIS, v1::STRATEGY_ABSOLUTE, &r);
        return st.ok() && !r.degraded() && r.decision() == v1::DECISION_REJECTED;
      },
      15s))
      << "Redis still holds the full window; degraded answers wrote nothing there";
  ASSERT_TRUE(d.RateLimitGet("k", v1::PROVIDER_REDIS, v1::STRATEGY_ABSOLUTE, &g).ok());
  EXPECT_EQ(g.total(), 10u);
}

INSTANTIATE_TEST_SUITE_P(Modes, FailureModeE2E, ::testing::Values("open", "closed", "local"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace distkit
