#include "daemon/transport/rate_limit_service.h"

#include <prometheus/counter.h>

#include <array>
#include <cmath>
#include <optional>
#include <string_view>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/transport/batch_run.h"
#include "daemon/transport/convert.h"
#include "daemon/transport/unary.h"

namespace distkit::transport {
namespace {

enum Method : size_t { kInc, kGet, kBatch };
constexpr std::array<std::string_view, kBatch + 1> kMethodNames = {"Inc", "Get", "Batch"};

// Indexes into RateLimitMetrics' label values (the request was validated).
size_t ProviderIndex(v1::Provider p) {
  return p == v1::PROVIDER_REDIS ? 1 : p == v1::PROVIDER_HYBRID ? 2 : 0;
}
size_t StrategyIndex(core::RateStrategy s) { return s == core::RateStrategy::kSuppressed ? 1 : 0; }

// RateLimitService's batch (BatchRun). An item answered inline (LOCAL, or any validation error)
// completes before the next item starts; an asynchronous item (REDIS, HYBRID needing Redis) is
// pipelined: later items go on, except one on the same state, which waits until the earlier one
// completed (and every item after it waits too, to keep the order).
struct RateLimitBatch {
  using Request = v1::RateLimitBatchRequest;
  using Response = v1::RateLimitBatchResponse;
  // The state an item touches: (provider, strategy, namespace, key), enums normalised
  // (UNSPECIFIED = LOCAL / ABSOLUTE) and the namespace resolved. Providers and strategies keep
  // independent state, so only items with equal keys must stay ordered.
  using Key = std::tuple<int, int, std::string_view, std::string_view>;

  std::optional<Key> KeyOf(const v1::RateLimitBatchOp& op) const {
    if (!op.has_inc()) return std::nullopt;  // answered at once: no operation set
    const v1::RateLimitIncRequest& req = op.inc();
    const int provider =
        req.provider() == v1::PROVIDER_UNSPECIFIED ? v1::PROVIDER_LOCAL : req.provider();
    const int strategy =
        req.strategy() == v1::STRATEGY_UNSPECIFIED ? v1::STRATEGY_ABSOLUTE : req.strategy();
    return Key{provider, strategy, names->Resolve(req.namespace_()), req.key()};
  }
  static bool Alone(const v1::RateLimitBatchOp& /*op*/) { return false; }

  std::optional<absl::Status> Start(int i, const v1::RateLimitBatchOp& op,
                                    v1::RateLimitBatchResult* res, MakeCallback callback) const {
    if (!op.has_inc()) {
      return absl::InvalidArgumentError(absl::StrCat("ops[", i, "]: no operation set"));
    }
    return svc->StartInc(op.inc(), res->mutable_inc(), callback);
  }

  RateLimitServiceImpl* svc;
  const NameResolver* names;  // the service's, which outlives every RPC
};

}  // namespace

RateLimitServiceImpl::RateLimitServiceImpl(RateLimiters limiters, std::string default_namespace,
                                           InFlight* in_flight, Metrics* metrics)
    : limiters_(limiters),
      names_(std::move(default_namespace)),
      in_flight_(in_flight),
      rpc_metrics_(&metrics->Rpc(v1::RateLimitService::service_full_name(), kMethodNames)),
      batch_items_(&metrics->BatchItems(v1::RateLimitService::service_full_name())),
      rate_limit_metrics_(&metrics->RateLimit()) {}

absl::StatusOr<core::RateLimiter*> RateLimitServiceImpl::Pick(v1::Provider p) const {
  core::RateLimiter* limiter = nullptr;
  switch (p) {
    case v1::PROVIDER_UNSPECIFIED:
    case v1::PROVIDER_LOCAL:
      limiter = limiters_.local;
      p = v1::PROVIDER_LOCAL;
      break;
    case v1::PROVIDER_REDIS:
      limiter = limiters_.redis;
      break;
    case v1::PROVIDER_HYBRID:
      limiter = limiters_.hybrid;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("provider: unknown value ", p));
  }
  if (limiter == nullptr) {
    return absl::UnimplementedError(
        absl::StrCat("provider: ", v1::Provider_Name(p), " is not available in this daemon"));
  }
  return limiter;
}

absl::Status RateLimitServiceImpl::Convert(const v1::RateLimitIncRequest& req,
                                           core::RateIncRequest* out,
                                           core::RateLimiter** limiter) const {
  if (auto s = names_.Names(req.namespace_(), req.key(), &out->ns); !s.ok()) return s;
  const double rate = req.rate_per_second();
  if (!std::isfinite(rate) || !(rate > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate_per_second: must be finite and > 0, got ", rate));
  }
  auto strategy = FromProto(req.strategy());
  if (!strategy.ok()) return strategy.status();
  auto picked = Pick(req.provider());
  if (!picked.ok()) return picked.status();
  out->key = req.key();
  out->rate_per_second = rate;
  out->count = req.count() == 0 ? 1 : req.count();
  out->strategy = *strategy;
  *limiter = *picked;
  return absl::OkStatus();
}

std::optional<absl::Status> RateLimitServiceImpl::StartInc(const v1::RateLimitIncRequest& req,
                                                           v1::RateLimitIncResponse* resp,
                                                           MakeCallback callback) {
  core::RateIncRequest creq;
  core::RateLimiter* limiter = nullptr;
  if (auto s = Convert(req, &creq, &limiter); !s.ok()) return s;
  if (limiter == nullptr) return absl::InternalError("provider: none picked");  // a bug
  // Stores the answer and counts it (the request was validated).
  auto fill = [metrics = rate_limit_metrics_, p = ProviderIndex(req.provider()),
               s = StrategyIndex(creq.strategy), resp](const core::RateIncResult& r) {
    ToProto(r, resp);
    metrics->Record(p, s, static_cast<size_t>(r.decision), r.degraded);
  };
  return InlineOr(
      limiter->TryInc(creq), fill,
      [&](core::RateIncCallback done) { limiter->Inc(creq, std::move(done)); }, callback);
}

void RateLimitServiceImpl::DoGet(const v1::RateLimitGetRequest& req, v1::RateLimitGetResponse* resp,
                                 core::StatusCallback done) {
  std::string ns;
  absl::Status s = names_.Names(req.namespace_(), req.key(), &ns);
  auto strategy = FromProto(req.strategy());
  if (s.ok()) s = strategy.status();
  auto limiter = Pick(req.provider());
  if (s.ok()) s = limiter.status();
  if (!s.ok()) return done(s);
  (*limiter)->Get(ns, req.key(), *strategy, Fill<core::RateGetResult>(resp, std::move(done)));
}

grpc::ServerUnaryReactor* RateLimitServiceImpl::Inc(grpc::CallbackServerContext* ctx,
                                                    const v1::RateLimitIncRequest* req,
                                                    v1::RateLimitIncResponse* resp) {
  return Unary(ctx, in_flight_, rpc_metrics_, kInc,
               [&](const auto& callback) { return StartInc(*req, resp, callback); });
}

grpc::ServerUnaryReactor* RateLimitServiceImpl::Get(grpc::CallbackServerContext* ctx,
                                                    const v1::RateLimitGetRequest* req,
                                                    v1::RateLimitGetResponse* resp) {
  return Unary(ctx, in_flight_, rpc_metrics_, kGet,
               Later([&](core::StatusCallback done) { DoGet(*req, resp, std::move(done)); }));
}

grpc::ServerUnaryReactor* RateLimitServiceImpl::Batch(grpc::CallbackServerContext* ctx,
                                                      const v1::RateLimitBatchRequest* req,
                                                      v1::RateLimitBatchResponse* resp) {
  return Unary(ctx, in_flight_, rpc_metrics_, kBatch,
               RunBatch(RateLimitBatch{this, &names_}, req, resp, batch_items_),
               BatchCallBytes(req->ops_size()));
}

}  // namespace distkit::transport
