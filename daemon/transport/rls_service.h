#pragma once

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
  RlsServiceImpl(core::RlsLimiter* limiter, InFlight* in_flight, Metrics* metrics);

  grpc::ServerUnaryReactor* ShouldRateLimit(
      grpc::CallbackServerContext* ctx, const envoy::service::ratelimit::v3::RateLimitRequest* req,
      envoy::service::ratelimit::v3::RateLimitResponse* resp) override;

 private:
  core::RlsLimiter* const limiter_;
  InFlight* const in_flight_;
  Metrics* const metrics_;
  const RpcMetrics* const rpc_metrics_;
};

}  // namespace distkit::transport
