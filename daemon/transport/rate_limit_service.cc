#include "daemon/transport/rate_limit_service.h"

#include <prometheus/counter.h>

#include <array>
#include <cmath>
#include <memory>
#include <mutex>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "daemon/core/validation.h"
#include "daemon/transport/status_mapping.h"
#include "daemon/transport/unary.h"

namespace distkit::transport {
namespace {

enum Method : size_t { kInc, kGet, kBatch };
constexpr std::array<std::string_view, kBatch + 1> kMethodNames = {"Inc", "Get", "Batch"};

absl::StatusOr<core::RateStrategy> ToStrategy(v1::Strategy s) {
  switch (s) {
    case v1::STRATEGY_UNSPECIFIED:
    case v1::STRATEGY_ABSOLUTE:
      return core::RateStrategy::kAbsolute;
    case v1::STRATEGY_SUPPRESSED:
      return core::RateStrategy::kSuppressed;
    default:
      return absl::InvalidArgumentError(absl::StrCat("strategy: unknown value ", s));
  }
}

v1::Decision DecisionToProto(core::RateDecision d) {
  switch (d) {
    case core::RateDecision::kAllowed:
      return v1::DECISION_ALLOWED;
    case core::RateDecision::kRejected:
      return v1::DECISION_REJECTED;
    case core::RateDecision::kSuppressed:
      return v1::DECISION_SUPPRESSED;
  }
  return v1::DECISION_UNSPECIFIED;
}

// Indexes into RateLimitMetrics' label values (the request was validated).
size_t ProviderIndex(v1::Provider p) {
  return p == v1::PROVIDER_REDIS ? 1 : p == v1::PROVIDER_HYBRID ? 2 : 0;
}
size_t StrategyIndex(core::RateStrategy s) { return s == core::RateStrategy::kSuppressed ? 1 : 0; }

void Count(const RateLimitMetrics* metrics, size_t provider, size_t strategy,
           const core::RateIncResult& r) {
  metrics->Record(provider, strategy, static_cast<size_t>(r.decision), r.degraded);
}

// Fills the response from the provider's answer and counts it.
core::RateIncCallback FillInc(const RateLimitMetrics* metrics, v1::Provider provider,
                              core::RateStrategy strategy, v1::RateLimitIncResponse* resp,
                              core::StatusCallback done) {
  return [metrics, p = ProviderIndex(provider), s = StrategyIndex(strategy), resp,
          done = std::move(done)](absl::StatusOr<core::RateIncResult> r) mutable {
    if (r.ok()) {
      ToProto(*r, resp);
      Count(metrics, p, s, *r);
    }
    done(r.status());
  };
}

// The state a batch item touches: (provider, strategy, namespace, key), enums normalised
// (UNSPECIFIED = LOCAL / ABSOLUTE) and the namespace resolved. Providers and strategies keep
// independent state, so only items with equal keys must stay ordered.
using ItemKey = std::tuple<int, int, std::string, std::string>;

ItemKey KeyOf(const v1::RateLimitIncRequest& req, const std::string& default_ns) {
  const int provider =
      req.provider() == v1::PROVIDER_UNSPECIFIED ? v1::PROVIDER_LOCAL : req.provider();
  const int strategy =
      req.strategy() == v1::STRATEGY_UNSPECIFIED ? v1::STRATEGY_ABSOLUTE : req.strategy();
  return {provider, strategy, req.namespace_().empty() ? default_ns : req.namespace_(), req.key()};
}

// Runs a batch in order. An item answered inline (LOCAL, or any validation error) completes
// before the next item starts; an asynchronous item (REDIS, HYBRID needing Redis) is pipelined:
// later items go on, except one on the same state, which waits until the earlier one
// completed (and every item after it waits too, to keep the order). Completions may arrive
// inline or on the Redis thread; a trampoline (`pumping_`) keeps the stack flat.
class BatchRun : public std::enable_shared_from_this<BatchRun> {
 public:
  // Asynchronous items in flight at once (as the counter batches): enough to pipeline, few
  // enough that the last one does not queue behind thousands and miss --redis_timeout_ms.
  static constexpr int kMaxInFlight = 256;

  BatchRun(RateLimitServiceImpl* svc, const v1::RateLimitBatchRequest* req,
           v1::RateLimitBatchResponse* resp, core::StatusCallback finish)
      : svc_(svc), req_(req), resp_(resp), finish_(std::move(finish)) {
    for (int i = 0; i < req->ops_size(); ++i) resp->add_results();
  }

  void Pump() {
    std::unique_lock<std::mutex> lock(mu_);
    if (pumping_) {
      repump_ = true;
      return;
    }
    pumping_ = true;
    while (true) {
      std::optional<ItemKey> key;
      if (next_ < req_->ops_size() && Ready(req_->ops(next_), &key)) {
        const int i = next_++;
        const v1::RateLimitBatchOp& op = req_->ops(i);
        v1::RateLimitBatchResult* res = resp_->mutable_results(i);
        if (!op.has_inc()) {
          SetError(res, absl::InvalidArgumentError(absl::StrCat("ops[", i, "]: no operation set")));
          continue;
        }
        core::RateIncRequest creq;
        core::RateLimiter* limiter = nullptr;
        if (auto st = svc_->Start(op.inc(), res->mutable_inc(), &creq, &limiter)) {
          SetError(res, *st);  // answered inline: no callback, no allocation
          continue;
        }
        if (!key) key = KeyOf(op.inc(), svc_->default_namespace());
        ++busy_[*key];
        ++outstanding_;
        lock.unlock();
        Dispatch(res, limiter, op.inc().provider(), creq, std::move(*key));
        lock.lock();
        continue;
      }
      if (repump_) {
        repump_ = false;
        continue;
      }
      pumping_ = false;
      const bool done = next_ == req_->ops_size() && outstanding_ == 0 && !finished_;
      if (done) finished_ = true;
      lock.unlock();
      if (done) finish_(absl::OkStatus());
      return;
    }
  }

 private:
  // False while kMaxInFlight items or an earlier item on the same state are outstanding. Builds the
  // item's key only when some item is outstanding (the all-inline LOCAL batch never does).
  bool Ready(const v1::RateLimitBatchOp& op, std::optional<ItemKey>* key) const {
    if (outstanding_ >= kMaxInFlight) return false;
    if (busy_.empty() || !op.has_inc()) return true;
    *key = KeyOf(op.inc(), svc_->default_namespace());
    return !busy_.contains(**key);
  }

  static void SetError(v1::RateLimitBatchResult* res, const absl::Status& s) {
    if (s.ok()) return;
    res->clear_result();
    res->set_code(static_cast<int32_t>(s.code()));
    res->set_message(std::string(s.message()));
  }

  void Dispatch(v1::RateLimitBatchResult* res, core::RateLimiter* limiter, v1::Provider provider,
                const core::RateIncRequest& creq, ItemKey key) {
    auto self = shared_from_this();
    auto done = [self, res, key = std::move(key)](absl::Status s) {
      SetError(res, s);
      {
        std::lock_guard<std::mutex> lock(self->mu_);
        auto it = self->busy_.find(key);
        if (--it->second == 0) self->busy_.erase(it);
        --self->outstanding_;
      }
      self->Pump();
    };
    limiter->Inc(creq, FillInc(svc_->rate_limit_metrics(), provider, creq.strategy,
                               res->mutable_inc(), std::move(done)));
  }

  RateLimitServiceImpl* const svc_;
  const v1::RateLimitBatchRequest* const req_;
  v1::RateLimitBatchResponse* const resp_;
  core::StatusCallback finish_;
  std::mutex mu_;
  absl::flat_hash_map<ItemKey, int> busy_;  // outstanding items per state
  int next_ = 0;
  int outstanding_ = 0;
  bool pumping_ = false, repump_ = false, finished_ = false;
};

}  // namespace

void ToProto(const core::RateIncResult& r, v1::RateLimitIncResponse* resp) {
  resp->set_decision(DecisionToProto(r.decision));
  resp->set_retry_after_ms(r.retry_after_ms);
  resp->set_remaining_after_waiting(r.remaining_after_waiting);
  resp->set_suppression_factor(r.suppression_factor);
  resp->set_allowed(r.allowed);
  resp->set_degraded(r.degraded);
}

RateLimitServiceImpl::RateLimitServiceImpl(RateLimiters limiters, std::string default_namespace,
                                           InFlight* in_flight, Metrics* metrics)
    : limiters_(limiters),
      default_namespace_(std::move(default_namespace)),
      in_flight_(in_flight),
      rpc_metrics_(&metrics->Rpc(v1::RateLimitService::service_full_name(), kMethodNames)),
      batch_items_(&metrics->BatchItems(v1::RateLimitService::service_full_name())),
      rate_limit_metrics_(&metrics->RateLimit()) {}

absl::Status RateLimitServiceImpl::Names(const std::string& ns_in, const std::string& key,
                                         std::string* ns) const {
  if (!ns_in.empty()) {
    if (auto s = core::ValidateName("namespace", ns_in); !s.ok()) return s;
  }
  if (auto s = core::ValidateName("key", key); !s.ok()) return s;
  *ns = ns_in.empty() ? default_namespace_ : ns_in;
  return absl::OkStatus();
}

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
  if (auto s = Names(req.namespace_(), req.key(), &out->ns); !s.ok()) return s;
  const double rate = req.rate_per_second();
  if (!std::isfinite(rate) || !(rate > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate_per_second: must be finite and > 0, got ", rate));
  }
  auto strategy = ToStrategy(req.strategy());
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

std::optional<absl::Status> RateLimitServiceImpl::Start(const v1::RateLimitIncRequest& req,
                                                        v1::RateLimitIncResponse* resp,
                                                        core::RateIncRequest* creq,
                                                        core::RateLimiter** limiter) {
  if (auto s = Convert(req, creq, limiter); !s.ok()) return s;
  if (*limiter == nullptr) return absl::InternalError("provider: none picked");  // a bug
  auto r = (*limiter)->TryInc(*creq);
  if (!r) return std::nullopt;
  if (r->ok()) {
    ToProto(**r, resp);
    Count(rate_limit_metrics_, ProviderIndex(req.provider()), StrategyIndex(creq->strategy), **r);
  }
  return r->status();
}

void RateLimitServiceImpl::DoInc(const v1::RateLimitIncRequest& req, v1::RateLimitIncResponse* resp,
                                 core::StatusCallback done) {
  core::RateIncRequest creq;
  core::RateLimiter* limiter = nullptr;
  if (auto st = Start(req, resp, &creq, &limiter)) return done(*st);
  limiter->Inc(creq,
               FillInc(rate_limit_metrics_, req.provider(), creq.strategy, resp, std::move(done)));
}

void RateLimitServiceImpl::DoGet(const v1::RateLimitGetRequest& req, v1::RateLimitGetResponse* resp,
                                 core::StatusCallback done) {
  std::string ns;
  absl::Status s = Names(req.namespace_(), req.key(), &ns);
  auto strategy = ToStrategy(req.strategy());
  if (s.ok()) s = strategy.status();
  auto limiter = Pick(req.provider());
  if (s.ok()) s = limiter.status();
  if (!s.ok()) return done(s);
  (*limiter)->Get(ns, req.key(), *strategy,
                  [resp, done = std::move(done)](absl::StatusOr<core::RateGetResult> r) mutable {
                    if (r.ok()) {
                      resp->set_total(r->total);
                      resp->set_declined(r->declined);
                      resp->set_suppression_factor(r->suppression_factor);
                    }
                    done(r.status());
                  });
}

grpc::ServerUnaryReactor* RateLimitServiceImpl::Inc(grpc::CallbackServerContext* ctx,
                                                    const v1::RateLimitIncRequest* req,
                                                    v1::RateLimitIncResponse* resp) {
  return Unary(ctx, in_flight_, rpc_metrics_, kInc,
               [&](const auto& callback) -> std::optional<absl::Status> {
                 core::RateIncRequest creq;
                 core::RateLimiter* limiter = nullptr;
                 if (auto st = Start(*req, resp, &creq, &limiter)) return st;  // inline
                 limiter->Inc(creq, FillInc(rate_limit_metrics_, req->provider(), creq.strategy,
                                            resp, callback()));
                 return std::nullopt;
               });
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
               [&](const auto& callback) -> std::optional<absl::Status> {
                 if (static_cast<size_t>(req->ops_size()) > core::kMaxBatchItems) {
                   return absl::InvalidArgumentError(absl::StrCat("ops: a batch holds at most ",
                                                                  core::kMaxBatchItems,
                                                                  " items, got ", req->ops_size()));
                 }
                 batch_items_->Increment(req->ops_size());
                 std::make_shared<BatchRun>(this, req, resp, callback())->Pump();
                 return std::nullopt;
               });
}

}  // namespace distkit::transport
