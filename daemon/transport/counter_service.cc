#include "daemon/transport/counter_service.h"

#include <prometheus/counter.h>

#include <array>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "daemon/core/validation.h"
#include "daemon/transport/status_mapping.h"
#include "daemon/transport/unary.h"

namespace distkit::transport {
namespace {

// Method indexes into RpcMetrics, in the order of kMethodNames.
enum Method : size_t { kInc, kGet, kSet, kDel, kClear, kBatch };
constexpr std::array<std::string_view, kBatch + 1> kMethodNames = {"Inc", "Get",   "Set",
                                                                   "Del", "Clear", "Batch"};

// Fills a response from a core result and reports the status.
template <typename Resp>
core::CounterCallback Fill(Resp* resp, core::StatusCallback done) {
  return [resp, done = std::move(done)](absl::StatusOr<core::CounterResult> r) mutable {
    if (r.ok()) {
      resp->set_value(r->value);
      if constexpr (requires { resp->set_previous(0); }) {
        resp->set_previous(r->previous);
        resp->set_applied(r->applied);
      }
    }
    done(r.status());
  };
}

bool IsLax(const v1::BatchOp& op) {
  return (op.has_inc() && op.inc().consistency() == v1::CONSISTENCY_LAX) ||
         (op.has_get() && op.get().consistency() == v1::CONSISTENCY_LAX);
}

// Runs a batch in order. STRICT items are pipelined (one Redis connection keeps their order);
// a LAX item, answered from memory at once, waits until every earlier item has completed so it
// observes them. Completions may arrive inline or on the Redis thread; a trampoline (`pumping`)
// keeps the stack flat for 10 000 inline completions.
class BatchRun : public std::enable_shared_from_this<BatchRun> {
 public:
  // STRICT items in flight at once: enough to pipeline, few enough that the last one is not
  // queued behind thousands of others and misses --redis_timeout_ms (counted from submission).
  static constexpr int kMaxInFlight = 256;

  BatchRun(CounterServiceImpl* svc, const v1::BatchRequest* req, v1::BatchResponse* resp,
           core::StatusCallback finish)
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
      if (next_ < req_->ops_size() && outstanding_ < kMaxInFlight &&
          !(IsLax(req_->ops(next_)) && outstanding_ > 0)) {
        const int i = next_++;
        if (TrySync(i)) continue;  // answered from memory: no callback, no allocation
        ++outstanding_;
        lock.unlock();
        Dispatch(i);
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
  // LAX incs of known keys complete inline (the common case in big batches).
  bool TrySync(int i) {
    const v1::BatchOp& op = req_->ops(i);
    if (!op.has_inc()) return false;
    v1::BatchResult* res = resp_->mutable_results(i);
    auto st = svc_->TryInc(op.inc(), res->mutable_inc());
    if (!st) return false;
    SetError(res, *st);
    return true;
  }

  static void SetError(v1::BatchResult* res, const absl::Status& s) {
    if (s.ok()) return;
    res->clear_result();
    res->set_code(static_cast<int32_t>(s.code()));
    res->set_message(std::string(s.message()));
  }

  void Dispatch(int i) {
    const v1::BatchOp& op = req_->ops(i);
    v1::BatchResult* res = resp_->mutable_results(i);
    auto self = shared_from_this();
    auto done = [self, res](absl::Status s) {
      SetError(res, s);
      {
        std::lock_guard<std::mutex> lock(self->mu_);
        --self->outstanding_;
      }
      self->Pump();
    };
    switch (op.op_case()) {
      case v1::BatchOp::kInc:
        svc_->DoInc(op.inc(), res->mutable_inc(), std::move(done));
        break;
      case v1::BatchOp::kGet:
        svc_->DoGet(op.get(), res->mutable_get(), std::move(done));
        break;
      case v1::BatchOp::kSet:
        svc_->DoSet(op.set(), res->mutable_set(), std::move(done));
        break;
      case v1::BatchOp::kDel:
        svc_->DoDel(op.del(), res->mutable_del(), std::move(done));
        break;
      default:
        done(absl::InvalidArgumentError(absl::StrCat("ops[", i, "]: no operation set")));
    }
  }

  CounterServiceImpl* const svc_;
  const v1::BatchRequest* const req_;
  v1::BatchResponse* const resp_;
  core::StatusCallback finish_;
  std::mutex mu_;
  int next_ = 0;
  int outstanding_ = 0;
  bool pumping_ = false, repump_ = false, finished_ = false;
};

}  // namespace

CounterServiceImpl::CounterServiceImpl(core::Counters* counters, std::string default_namespace,
                                       InFlight* in_flight, Metrics* metrics)
    : counters_(counters),
      default_namespace_(std::move(default_namespace)),
      in_flight_(in_flight),
      rpc_metrics_(&metrics->Rpc(v1::CounterService::service_full_name(), kMethodNames)),
      batch_items_(&metrics->BatchItems(v1::CounterService::service_full_name())) {}

absl::Status CounterServiceImpl::Names(const std::string& ns_in, const std::string& key,
                                       std::string* ns) const {
  *ns = ns_in.empty() ? default_namespace_ : ns_in;
  if (!ns_in.empty()) {
    if (auto s = core::ValidateName("namespace", ns_in); !s.ok()) return s;
  }
  return core::ValidateName("key", key);
}

void CounterServiceImpl::DoInc(const v1::IncRequest& req, v1::IncResponse* resp,
                               core::StatusCallback done) {
  if (auto st = TryInc(req, resp)) return done(*st);
  IncAsync(req, resp, std::move(done));
}

void CounterServiceImpl::IncAsync(const v1::IncRequest& req, v1::IncResponse* resp,
                                  core::StatusCallback done) {
  std::string ns;
  absl::Status s = Names(req.namespace_(), req.key(), &ns);
  if (s.ok()) s = ValidConsistency(req.consistency());
  auto cond = FromProto(req.condition());
  if (s.ok()) s = cond.status();
  if (!s.ok()) return done(s);
  counters_->Inc(ns, req.key(), req.delta(), FromProto(req.consistency()), *cond,
                 Fill(resp, std::move(done)));
}

std::optional<absl::Status> CounterServiceImpl::TryInc(const v1::IncRequest& req,
                                                       v1::IncResponse* resp) {
  if (req.consistency() != v1::CONSISTENCY_LAX) return std::nullopt;
  std::string ns;
  absl::Status s = Names(req.namespace_(), req.key(), &ns);
  auto cond = FromProto(req.condition());
  if (s.ok()) s = cond.status();
  if (!s.ok()) return s;
  auto r = counters_->TryInc(ns, req.key(), req.delta(), core::Consistency::kLax, *cond);
  if (!r) return std::nullopt;
  if (r->ok()) {
    resp->set_value((*r)->value);
    resp->set_previous((*r)->previous);
    resp->set_applied((*r)->applied);
  }
  return r->status();
}

void CounterServiceImpl::DoGet(const v1::GetRequest& req, v1::GetResponse* resp,
                               core::StatusCallback done) {
  std::string ns;
  absl::Status s = Names(req.namespace_(), req.key(), &ns);
  if (s.ok()) s = ValidConsistency(req.consistency());
  if (!s.ok()) return done(s);
  counters_->Get(ns, req.key(), FromProto(req.consistency()), Fill(resp, std::move(done)));
}

void CounterServiceImpl::DoSet(const v1::SetRequest& req, v1::SetResponse* resp,
                               core::StatusCallback done) {
  std::string ns;
  absl::Status s = Names(req.namespace_(), req.key(), &ns);
  auto cond = FromProto(req.condition());
  if (s.ok()) s = cond.status();
  if (!s.ok()) return done(s);
  counters_->Set(ns, req.key(), req.value(), *cond, Fill(resp, std::move(done)));
}

void CounterServiceImpl::DoDel(const v1::DelRequest& req, v1::DelResponse* resp,
                               core::StatusCallback done) {
  std::string ns;
  absl::Status s = Names(req.namespace_(), req.key(), &ns);
  if (!s.ok()) return done(s);
  counters_->Del(ns, req.key(), Fill(resp, std::move(done)));
}

grpc::ServerUnaryReactor* CounterServiceImpl::Inc(grpc::CallbackServerContext* ctx,
                                                  const v1::IncRequest* req,
                                                  v1::IncResponse* resp) {
  return Unary(ctx, in_flight_, rpc_metrics_, kInc,
               [&](const auto& callback) -> std::optional<absl::Status> {
                 if (auto st = TryInc(*req, resp)) return st;  // LAX, known key: no callback
                 IncAsync(*req, resp, callback());
                 return std::nullopt;
               });
}

grpc::ServerUnaryReactor* CounterServiceImpl::Get(grpc::CallbackServerContext* ctx,
                                                  const v1::GetRequest* req,
                                                  v1::GetResponse* resp) {
  return Unary(ctx, in_flight_, rpc_metrics_, kGet,
               Later([&](core::StatusCallback done) { DoGet(*req, resp, std::move(done)); }));
}

grpc::ServerUnaryReactor* CounterServiceImpl::Set(grpc::CallbackServerContext* ctx,
                                                  const v1::SetRequest* req,
                                                  v1::SetResponse* resp) {
  return Unary(ctx, in_flight_, rpc_metrics_, kSet,
               Later([&](core::StatusCallback done) { DoSet(*req, resp, std::move(done)); }));
}

grpc::ServerUnaryReactor* CounterServiceImpl::Del(grpc::CallbackServerContext* ctx,
                                                  const v1::DelRequest* req,
                                                  v1::DelResponse* resp) {
  return Unary(ctx, in_flight_, rpc_metrics_, kDel,
               Later([&](core::StatusCallback done) { DoDel(*req, resp, std::move(done)); }));
}

grpc::ServerUnaryReactor* CounterServiceImpl::Clear(grpc::CallbackServerContext* ctx,
                                                    const v1::ClearRequest* req,
                                                    v1::ClearResponse* /*resp*/) {
  return Unary(ctx, in_flight_, rpc_metrics_, kClear,
               [&](const auto& callback) -> std::optional<absl::Status> {
                 std::string ns =
                     req->namespace_().empty() ? default_namespace_ : req->namespace_();
                 if (auto s = core::ValidateName("namespace", ns); !s.ok()) return s;
                 counters_->Clear(ns, callback());
                 return std::nullopt;
               });
}

grpc::ServerUnaryReactor* CounterServiceImpl::Batch(grpc::CallbackServerContext* ctx,
                                                    const v1::BatchRequest* req,
                                                    v1::BatchResponse* resp) {
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
