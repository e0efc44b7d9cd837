#pragma once

#include <optional>
#include <string>

#include "daemon/core/rate_limit.h"
#include "daemon/core/types.h"
#include "daemon/transport/batch_run.h"
#include "daemon/transport/convert.h"
#include "daemon/transport/in_flight.h"
#include "daemon/transport/metrics.h"
#include "distkit/v1/rate_limit.grpc.pb.h"

namespace distkit::transport {

// The rate-limit providers the daemon serves; a null one answers UNIMPLEMENTED.
struct RateLimiters {
  core::RateLimiter* local = nullptr;
  core::RateLimiter* redis = nullptr;
  core::RateLimiter* hybrid = nullptr;

  bool any() const { return local != nullptr || redis != nullptr || hybrid != nullptr; }
};

// gRPC callback service for rate limiting (docs/api.md#ratelimitservice): validates, picks the
// provider (PROVIDER_UNSPECIFIED = LOCAL) and strategy (STRATEGY_UNSPECIFIED = ABSOLUTE), and
// answers inline when the provider can (RateLimiter::TryInc: no callback, no allocation), else from
// the provider's completion (any thread). Never blocks a gRPC thread.
class RateLimitServiceImpl final : public v1::RateLimitService::CallbackService {
 public:
  RateLimitServiceImpl(RateLimiters limiters, std::string default_namespace, InFlight* in_flight,
                       Metrics* metrics);

  grpc::ServerUnaryReactor* Inc(grpc::CallbackServerContext* ctx,
                                const v1::RateLimitIncRequest* req,
                                v1::RateLimitIncResponse* resp) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx,
                                const v1::RateLimitGetRequest* req,
                                v1::RateLimitGetResponse* resp) override;
  grpc::ServerUnaryReactor* Batch(grpc::CallbackServerContext* ctx,
                                  const v1::RateLimitBatchRequest* req,
                                  v1::RateLimitBatchResponse* resp) override;

  // Inc, shared by the unary RPC and Batch, with Unary's contract: validates `req` and tries the
  // provider's inline path; the final status when answered (validation errors included, `resp`
  // filled and the decision counted when OK), else nullopt after handing `callback()` to the
  // provider.
  std::optional<absl::Status> StartInc(const v1::RateLimitIncRequest& req,
                                       v1::RateLimitIncResponse* resp, MakeCallback callback);
  // Single-op entry point; `done` gets the final status.
  void DoGet(const v1::RateLimitGetRequest& req, v1::RateLimitGetResponse* resp,
             core::StatusCallback done);

 private:
  // Validates and converts an Inc request; on success also returns its provider.
  absl::Status Convert(const v1::RateLimitIncRequest& req, core::RateIncRequest* out,
                       core::RateLimiter** limiter) const;
  absl::StatusOr<core::RateLimiter*> Pick(v1::Provider p) const;

  const RateLimiters limiters_;
  const NameResolver names_;
  InFlight* const in_flight_;
  const RpcMetrics* const rpc_metrics_;
  prometheus::Counter* const batch_items_;
  const RateLimitMetrics* const rate_limit_metrics_;
};

}  // namespace distkit::transport
