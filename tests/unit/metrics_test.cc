// Metrics without HTTP: what the exposition holds after recording, and the scrape-time stats.

#include "daemon/transport/metrics.h"

#include <gtest/gtest.h>
#include <prometheus/counter.h>

#include <algorithm>
#include <array>

#include "daemon/core/counters.h"
#include "daemon/core/hybrid_rate_limiter.h"
#include "daemon/core/local_rate_limiter.h"
#include "daemon/core/redis_rate_limiter.h"
#include "daemon/redis/executor.h"
#include "daemon/redis/redis_client.h"

namespace distkit::transport {
namespace {

using namespace std::chrono_literals;

class StubRedis : public redis::RedisClient {
 public:
  void Command(std::vector<std::string>, redis::ReplyCallback) override {}
  void Script(std::string_view, std::vector<std::string>, std::vector<std::string>,
              redis::ReplyCallback) override {}
  bool Healthy() const override { return healthy; }
  bool healthy = true;
};

bool Has(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

size_t Count(const std::string& text, const std::string& prefix) {
  size_t n = 0;
  for (size_t pos = text.find("\n" + prefix); pos != std::string::npos;
       pos = text.find("\n" + prefix, pos + 1)) {
    ++n;
  }
  return n;
}

TEST(GrpcCodeName, CanonicalNamesAndUnknownOutOfRange) {
  EXPECT_EQ(GrpcCodeName(0), "OK");
  EXPECT_EQ(GrpcCodeName(3), "INVALID_ARGUMENT");
  EXPECT_EQ(GrpcCodeName(8), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(GrpcCodeName(14), "UNAVAILABLE");
  EXPECT_EQ(GrpcCodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(GrpcCodeName(17), "UNKNOWN");
  EXPECT_EQ(GrpcCodeName(-1), "UNKNOWN");
}

TEST(RpcDurationBuckets, From50MicrosecondsTo5SecondsAscending) {
  EXPECT_EQ(kRpcDurationBuckets.front(), 50e-6);
  EXPECT_EQ(kRpcDurationBuckets.back(), 5.0);
  EXPECT_TRUE(std::is_sorted(kRpcDurationBuckets.begin(), kRpcDurationBuckets.end()));
}

TEST(Metrics, RecordsCallsByMethodAndCodeWithEverySeriesPrecreated) {
  Metrics m;
  constexpr std::array<std::string_view, 2> kMethods = {"A", "B"};
  const RpcMetrics& rpc = m.Rpc("svc", kMethods);
  EXPECT_EQ(Count(m.Text(), "distkit_rpc_total{"), 2u * RpcMetrics::kCodes);
  EXPECT_TRUE(Has(m.Text(), R"(distkit_rpc_total{code="OK",method="A",service="svc"} 0)"));

  rpc.Record(0, grpc::StatusCode::OK, 10us);
  rpc.Record(0, grpc::StatusCode::OK, 30ms);
  rpc.Record(1, grpc::StatusCode::INVALID_ARGUMENT, 2ms);
  rpc.Record(1, static_cast<grpc::StatusCode>(99), 1us);  // counted as UNKNOWN
  m.BatchItems("svc").Increment(7);

  const std::string text = m.Text();
  EXPECT_TRUE(Has(text, R"(distkit_rpc_total{code="OK",method="A",service="svc"} 2)")) << text;
  EXPECT_TRUE(
      Has(text, R"(distkit_rpc_total{code="INVALID_ARGUMENT",method="B",service="svc"} 1)"));
  EXPECT_TRUE(Has(text, R"(distkit_rpc_total{code="UNKNOWN",method="B",service="svc"} 1)"));
  EXPECT_TRUE(Has(text, R"(distkit_rpc_total{code="OK",method="B",service="svc"} 0)"));
  EXPECT_TRUE(Has(text, R"(distkit_rpc_duration_seconds_count{method="A",service="svc"} 2)"));
  EXPECT_TRUE(
      Has(text, R"(distkit_rpc_duration_seconds_bucket{method="A",service="svc",le="5e-05"} 1)"))
      << text;
  EXPECT_TRUE(
      Has(text, R"(distkit_rpc_duration_seconds_bucket{method="A",service="svc",le="0.025"} 1)"));
  EXPECT_TRUE(
      Has(text, R"(distkit_rpc_duration_seconds_bucket{method="A",service="svc",le="0.05"} 2)"));
  EXPECT_TRUE(Has(text, R"(distkit_batch_items_total{service="svc"} 7)"));
  EXPECT_EQ(text.find("distkit_redis_up"), std::string::npos) << "no sources, no stats";
  EXPECT_TRUE(m.address().empty());
}

TEST(Metrics, ReadsCoreAndRedisStatsAtScrapeTime) {
  core::CountersStats counters;
  redis::ExecutorStats executor;
  StubRedis health;
  Metrics m({&counters, &executor, &health});
  EXPECT_TRUE(Has(m.Text(), "distkit_redis_up 1"));
  EXPECT_TRUE(Has(m.Text(), "distkit_lax_flush_commands_total 0"));

  counters.dirty_keys = 3;
  counters.cached_keys = 5;
  counters.flush_commands = 11;
  counters.flush_failures = 2;
  counters.dropped_overflow = 1;
  executor.commands = 40;
  executor.timeouts = 4;
  executor.reconnects = 6;
  executor.noscript_retries = 7;
  health.healthy = false;
  const std::string text = m.Text();
  for (const char* line :
       {"distkit_lax_dirty_keys 3", "distkit_lax_cached_keys 5",
        "distkit_lax_flush_commands_total 11", "distkit_lax_flush_failures_total 2",
        "distkit_lax_dropped_overflow_total 1", "distkit_redis_commands_total 40",
        "distkit_redis_timeouts_total 4", "distkit_redis_reconnects_total 6",
        "distkit_redis_noscript_retries_total 7", "distkit_redis_up 0"}) {
    EXPECT_TRUE(Has(text, line)) << line << "\n" << text;
  }
  EXPECT_TRUE(Has(text, "# TYPE distkit_redis_up gauge"));
  EXPECT_TRUE(Has(text, "# TYPE distkit_redis_timeouts_total counter"));
}

TEST(Metrics, ReadsTheRateLimitProvidersStatsAtScrapeTime) {
  core::LocalRateLimiterStats local;
  core::RedisRateLimiterStats redis;
  core::HybridRateLimiterStats hybrid;
  Metrics::Sources sources;
  sources.local_rate_limiter = &local;
  sources.redis_rate_limiter = &redis;
  sources.hybrid_rate_limiter = &hybrid;
  Metrics m(sources);
  EXPECT_TRUE(Has(m.Text(), "distkit_ratelimit_hybrid_syncs_total 0"));
  EXPECT_FALSE(Has(m.Text(), "distkit_redis_up 1"));  // not a source here

  local.keys = 12;
  local.swept = 3;
  redis.redis_failures = 4;
  redis.inc_calls = 8;
  redis.coalesced = 9;
  hybrid.keys = 5;
  hybrid.syncs = 100;
  hybrid.sync_failures = 6;
  hybrid.waited = 7;
  const std::string text = m.Text();
  for (const char* line :
       {"distkit_ratelimit_local_keys 12", "distkit_ratelimit_local_evicted_total 3",
        "distkit_ratelimit_redis_failures_total 4", "distkit_ratelimit_redis_inc_calls_total 8",
        "distkit_ratelimit_redis_coalesced_total 9", "distkit_ratelimit_hybrid_keys 5",
        "distkit_ratelimit_hybrid_syncs_total 100",
        "distkit_ratelimit_hybrid_sync_failures_total 6", "distkit_ratelimit_hybrid_waited_total 7",
        "# TYPE distkit_ratelimit_hybrid_keys gauge",
        "# TYPE distkit_ratelimit_hybrid_sync_failures_total counter"}) {
    EXPECT_TRUE(Has(text, line)) << line << "\n" << text;
  }
}

}  // namespace
}  // namespace distkit::transport
