#pragma once

#include <grpcpp/support/status_code_enum.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace distkit::core {
struct CountersStats;
struct InstanceCountersStats;
struct LocalRateLimiterStats;
struct RedisRateLimiterStats;
struct HybridRateLimiterStats;
}  // namespace distkit::core
namespace distkit::redis {
struct ExecutorStats;
class RedisClient;
}  // namespace distkit::redis
namespace prometheus {
class Collectable;
class Counter;
class Exposer;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace distkit::transport {

// Upper bounds of the RPC duration histogram, in seconds: 50 us to 5 s.
inline constexpr std::array<double, 16> kRpcDurationBuckets = {
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3,   2.5e-3, 5e-3, 10e-3,
    25e-3, 50e-3,  100e-3, 250e-3, 500e-3, 1.0,    2.5,  5.0};

// "OK", "INVALID_ARGUMENT", ...: the canonical name of a gRPC code; "UNKNOWN" out of range.
std::string_view GrpcCodeName(int code);

// The metric objects of one gRPC service, created up front (prometheus-cpp's Family::Add takes a
// lock): recording a call is two array lookups, an atomic add (a CAS loop on a double) and a
// histogram observation. prometheus-cpp 1.0's Histogram::Observe locks a mutex of that
// histogram: calls of the same method finishing at once on two threads briefly contend.
class RpcMetrics {
 public:
  static constexpr int kCodes = 17;  // grpc::StatusCode 0..16

  // One finished call of `method` (an index into the names given to Metrics::Rpc).
  void Record(size_t method, grpc::StatusCode code, std::chrono::nanoseconds elapsed) const;

 private:
  friend class Metrics;
  struct Method {
    std::array<prometheus::Counter*, kCodes> calls{};  // by code
    prometheus::Histogram* duration = nullptr;
  };
  std::vector<Method> methods_;  // fixed after construction
};

// Rate-limit decisions (docs/api.md#metrics, "degraded"), every series created up front:
//   distkit_ratelimit_decisions_total{provider,strategy,decision}
//   distkit_ratelimit_degraded_total{provider}
// provider: local, redis, hybrid; strategy: absolute, suppressed; decision: allowed, rejected,
// suppressed (a SUPPRESSED answer, admitted or not). Never a key.
class RateLimitMetrics {
 public:
  static constexpr size_t kProviders = 3, kStrategies = 2, kDecisions = 3;
  static constexpr std::array<std::string_view, kProviders> kProviderNames = {"local", "redis",
                                                                              "hybrid"};
  static constexpr std::array<std::string_view, kStrategies> kStrategyNames = {"absolute",
                                                                               "suppressed"};
  static constexpr std::array<std::string_view, kDecisions> kDecisionNames = {"allowed", "rejected",
                                                                              "suppressed"};

  // One answer; indexes into the name arrays above (out of range: ignored).
  void Record(size_t provider, size_t strategy, size_t decision, bool degraded) const;

 private:
  friend class Metrics;
  std::array<prometheus::Counter*, kProviders * kStrategies * kDecisions> decisions_{};
  std::array<prometheus::Counter*, kProviders> degraded_{};
};

// Prometheus metrics (docs/api.md#metrics), never with per-key labels:
//   distkit_rpc_total{service,method,code}, distkit_rpc_duration_seconds{service,method},
//   distkit_batch_items_total{service}, and, read from core and redis at scrape time,
//   distkit_lax_*, distkit_icounter_*, distkit_redis_* and the providers' distkit_ratelimit_*
//   (see StatsCollector in metrics.cc).
// Always counts; serves /metrics over HTTP only after Listen(). Recording and scraping are
// thread-safe; the constructor, Listen, Rpc and BatchItems are setup calls (one thread).
class Metrics {
 public:
  // Where the scrape-time metrics come from; each may be null (then not exported). Must outlive
  // this object.
  struct Sources {
    const core::CountersStats* counters = nullptr;
    const redis::ExecutorStats* redis = nullptr;
    const redis::RedisClient* redis_health = nullptr;  // distkit_redis_up = Healthy()
    const core::InstanceCountersStats* instance_counters = nullptr;
    const core::LocalRateLimiterStats* local_rate_limiter = nullptr;
    const core::RedisRateLimiterStats* redis_rate_limiter = nullptr;
    const core::HybridRateLimiterStats* hybrid_rate_limiter = nullptr;
  };

  Metrics();
  explicit Metrics(Sources sources);
  ~Metrics();  // stops the HTTP server first
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Serves GET /metrics on `address` (HOST:PORT; a host name or an IPv4 address) with two
  // threads of its own. An error names the address and the reason (e.g. address in use).
  // Call once, after the signal mask is set (the server threads inherit it).
  absl::Status Listen(const std::string& address);
  // "HOST:PORT" actually bound (the port resolved when 0 was asked), empty before Listen().
  const std::string& address() const { return address_; }

  // The per-method metrics of `service` (full gRPC name), every (method, code) series created
  // now with value 0. Setup time only; the result lives as long as this object.
  const RpcMetrics& Rpc(std::string_view service, std::span<const std::string_view> methods);
  // distkit_batch_items_total{service}; setup time only.
  prometheus::Counter& BatchItems(std::string_view service);
  // The rate-limit decision counters (created by the constructor).
  const RateLimitMetrics& RateLimit() const { return rate_limit_; }

  // The text exposition /metrics serves (for tests and debugging).
  std::string Text() const;

  // RLS (docs/rls.md): distkit_rls_decisions_total{domain,rule,code}, a series per label set the
  // rule files can name (never a request's value), created on first use; thread-safe.
  prometheus::Counter& RlsDecision(std::string_view domain, std::string_view rule,
                                   std::string_view code);
  // distkit_rls_config_reload_failures_total.
  prometheus::Counter& RlsReloadFailures() { return *rls_reload_failures_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> stats_;
  prometheus::Family<prometheus::Counter>* rpc_total_ = nullptr;
  prometheus::Family<prometheus::Histogram>* rpc_duration_ = nullptr;
  prometheus::Family<prometheus::Counter>* batch_items_ = nullptr;
  RateLimitMetrics rate_limit_;
  std::vector<std::unique_ptr<RpcMetrics>> rpc_;
  std::string address_;
  prometheus::Family<prometheus::Counter>* rls_decisions_ = nullptr;
  prometheus::Counter* rls_reload_failures_ = nullptr;
  std::unique_ptr<prometheus::Exposer> exposer_;  // last: destroyed first
};

}  // namespace distkit::transport
