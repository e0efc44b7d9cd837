#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "daemon/core/rls_limiter.h"
#include "daemon/transport/in_flight.h"
#include "daemon/transport/metrics.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"

namespace distkit::transport {

// Envoy's global rate limit service, envoy.service.ratelimit.v3.RateLimitService (docs/rls.md):
// converts Envoy's request to core::RlsRequest, lets core::RlsLimiter decide (inline when the
// provider answers from memory, else from its completion), answers, and counts every decision
// in distkit_rls_decisions_total{domain,rule,code}. Never blocks a gRPC thread.
class RlsServiceImpl final
    : public envoy::service::ratelimit::v3::RateLimitService::CallbackService {
 public:
  // `headers`: answers carry the draft RateLimit-* headers (--rls_response_headers).
  RlsServiceImpl(core::RlsLimiter* limiter, InFlight* in_flight, Metrics* metrics,
                 bool headers = false);

  grpc::ServerUnaryReactor* ShouldRateLimit(
      grpc::CallbackServerContext* ctx, const envoy::service::ratelimit::v3::RateLimitRequest* req,
      envoy::service::ratelimit::v3::RateLimitResponse* resp) override;

 private:
  // Counts one descriptor's decision in distkit_rls_decisions_total.
  void Count(const core::RlsResult& r, const core::RlsStatus& st, std::string_view domain);

  // The counters of the rules of the config in use, by rule: building a series' labels costs
  // more than the decision (allocations, a family lock); dropped when the config changes.
  struct RuleCounters {
    prometheus::Counter* ok = nullptr;
    prometheus::Counter* over = nullptr;
  };
  absl::Mutex counters_mu_;
  // Held, so that no later config can reuse its address (or its rules').
  std::shared_ptr<const core::RlsConfig> counters_config_ ABSL_GUARDED_BY(counters_mu_);
  absl::flat_hash_map<const core::RlsRule*, RuleCounters> counters_ ABSL_GUARDED_BY(counters_mu_);

  core::RlsLimiter* const limiter_;
  const bool headers_;
  InFlight* const in_flight_;
  Metrics* const metrics_;
  const RpcMetrics* const rpc_metrics_;
};

}  // namespace distkit::transport
