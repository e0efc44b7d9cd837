#include "daemon/transport/instance_counter_service.h"

#include <prometheus/counter.h>

#include <array>
#include <memory>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "daemon/core/validation.h"
#include "daemon/transport/status_mapping.h"
#include "daemon/transport/unary.h"

namespace distkit::transport {
namespace {

enum Method : size_t {
  kInc,
  kGet,
  kSet,
  kSetOnInstance,
  kDel,
  kDelOnInstance,
  kClear,
  kClearOnInstance,
  kBatch
};
constexpr std::array<std::string_view, kBatch + 1> kMethodNames = {
    "Inc",  "Get", "Set", "SetOnInstance", "Del", "DelOnInstance", "Clear", "ClearOnInstance",
    "Batch"};

template <typename Resp>
core::InstanceCallback Fill(Resp* resp, core::StatusCallback done) {
  return [resp, done = std::move(done)](absl::StatusOr<core::InstanceResult> r) mutable {
    if (r.ok()) {
      resp->set_cumulative(r->cumulative);
      resp->set_instance(r->instance);
      resp->set_previous_cumulative(r->previous_cumulative);
      resp->set_previous_instance(r->previous_instance);
      resp->set_applied(r->applied);
    }
    done(r.status());
  };
}

// (namespace, key) of a batch item, the namespace resolved ("" for an item without an op).
std::pair<std::string, std::string> ItemKey(const v1::InstanceBatchOp& op,
                                            const std::string& default_ns) {
  auto of = [&](const auto& req) {
    return std::make_pair(req.namespace_().empty() ? default_ns : req.namespace_(), req.key());
  };
  switch (op.op_case()) {
    case v1::InstanceBatchOp::kInc:
      return of(op.inc());
    case v1::InstanceBatchOp::kGet:
      return of(op.get());
    case v1::InstanceBatchOp::kSet:
      return of(op.set());
    case v1::InstanceBatchOp::kSetOnInstance:
      return of(op.set_on_instance());
    case v1::InstanceBatchOp::kDel:
      return of(op.del());
    case v1::InstanceBatchOp::kDelOnInstance:
      return of(op.del_on_instance());
    default:
      return {};
  }
}

// Runs a batch in order. Items on distinct keys are pipelined; an item waits while an earlier
// item on the same (namespace, key) is outstanding (a first write registers its key before its
// script runs, and a key due for restore waits for it, so two items of one key sent together
// could be reordered), and every later item waits behind it; at most kMaxInFlight at once.
// Completions may arrive inline or on the Redis thread; a trampoline (`pumping_`) keeps the stack
// flat.
class BatchRun : public std::enable_shared_from_this<BatchRun> {
 public:
  // Items in flight at once: enough to pipeline, few enough that the last one's Redis commands
  // (up to three for a key's first write) are not queued behind tens of thousands of others
  // and miss --redis_timeout_ms, which counts from submission.
  static constexpr int kMaxInFlight = 256;

  BatchRun(InstanceCounterServiceImpl* svc, const v1::InstanceBatchRequest* req,
           v1::InstanceBatchResponse* resp, std::string default_ns, core::StatusCallback finish)
      : svc_(svc),
        req_(req),
        resp_(resp),
        default_ns_(std::move(default_ns)),
        finish_(std::move(finish)) {
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
      if (next_ < req_->ops_size()) {
        auto key = ItemKey(req_->ops(next_), default_ns_);
        if (!busy_.contains(key) && outstanding_ < kMaxInFlight) {
          const int i = next_++;
          ++busy_[key];
          ++outstanding_;
          lock.unlock();
          Dispatch(i, std::move(key));
          lock.lock();
          continue;
        }
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
  void Done(const std::pair<std::string, std::string>& key) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = busy_.find(key);
      if (--it->second == 0) busy_.erase(it);
      --outstanding_;
    }
    Pump();
  }

  static void SetError(v1::InstanceBatchResult* res, const absl::Status& s) {
    if (s.ok()) return;
    res->clear_result();
    res->set_code(static_cast<int32_t>(s.code()));
    res->set_message(std::string(s.message()));
  }

  void Dispatch(int i, std::pair<std::string, std::string> key) {
    const v1::InstanceBatchOp& op = req_->ops(i);
    v1::InstanceBatchResult* res = resp_->mutable_results(i);
    auto self = shared_from_this();
    auto done = [self, res, key = std::move(key)](absl::Status s) {
      SetError(res, s);
      self->Done(key);
    };
    switch (op.op_case()) {
      case v1::InstanceBatchOp::kInc:
        return svc_->DoInc(op.inc(), res->mutable_inc(), std::move(done));
      case v1::InstanceBatchOp::kGet:
        return svc_->DoGet(op.get(), res->mutable_get(), std::move(done));
      case v1::InstanceBatchOp::kSet:
        return svc_->DoSet(op.set(), res->mutable_set(), std::move(done));
      case v1::InstanceBatchOp::kSetOnInstance:
        return svc_->DoSetOnInstance(op.set_on_instance(), res->mutable_set_on_instance(),
                                     std::move(done));
      case v1::InstanceBatchOp::kDel:
        return svc_->DoDel(op.del(), res->mutable_del(), std::move(done));
      case v1::InstanceBatchOp::kDelOnInstance:
        return svc_->DoDelOnInstance(op.del_on_instance(), res->mutable_del_on_instance(),
                                     std::move(done));
      default:
        done(absl::InvalidArgumentError(absl::StrCat("ops[", i, "]: no operation set")));
    }
  }

  InstanceCounterServiceImpl* const svc_;
  const v1::InstanceBatchRequest* const req_;
  v1::InstanceBatchResponse* const resp_;
  const std::string default_ns_;
  core::StatusCallback finish_;
  std::mutex mu_;
  absl::flat_hash_map<std::pair<std::string, std::string>, int> busy_;  // outstanding per key
  int next_ = 0;
  int outstanding_ = 0;
  bool pumping_ = false, repump_ = false, finished_ = false;
};

}  // namespace

InstanceCounterServiceImpl::InstanceCounterServiceImpl(core::InstanceCounters* counters,
                                                       std::string default_namespace,
                                                       InFlight* in_flight, Metrics* metrics)
    : counters_(counters),
      default_namespace_(std::move(default_namespace)),
      in_flight_(in_flight),
      rpc_metrics_(&metrics->Rpc(v1::InstanceCounterService::service_full_name(), kMethodNames)),
      batch_items_(&metrics->BatchItems(v1::InstanceCounterService::service_full_name())) {}

absl::Status InstanceCounterServiceImpl::Namespace(const std::string& ns_in,
                                                   std::string* ns) const {
  *ns = ns_in.empty() ? default_namespace_ : ns_in;
  if (!ns_in.empty()) return core::ValidateName("namespace", ns_in);
  return absl::OkStatus();
}

absl::Status InstanceCounterServiceImpl::Names(const std::string& ns_in, const std::string& key,
                                               std::string* ns) const {
  if (auto s = Namespace(ns_in, ns); !s.ok()) return s;
  return core::ValidateName("key", key);
}

void InstanceCounterServiceImpl::DoInc(const v1::InstanceIncRequest& req,
                                       v1::InstanceIncResponse* resp, core::StatusCallback done) {
  if (auto st = TryInc(req, resp)) return done(*st);
  IncAsync(req, resp, std::move(done));
}

void InstanceCounterServiceImpl::IncAsync(const v1::InstanceIncRequest& req,
                                          v1::InstanceIncResponse* resp,
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

std::optional<absl::Status> InstanceCounterServiceImpl::TryInc(const v1::InstanceIncRequest& req,
                                                               v1::InstanceIncResponse* resp) {
  if (req.consistency() != v1::CONSISTENCY_LAX) return std::nullopt;
  std::string ns;
  absl::Status s = Names(req.namespace_(), req.key(), &ns);
  auto cond = FromProto(req.condition());
  if (s.ok()) s = cond.status();
  if (!s.ok()) return s;
  auto r = counters_->TryLaxInc(ns, req.key(), req.delta(), *cond);
  if (!r) return std::nullopt;
  if (r->ok()) {
    resp->set_cumulative((*r)->cumulative);
    resp->set_instance((*r)->instance);
    resp->set_previous_cumulative((*r)->previous_cumulative);
    resp->set_previous_instance((*r)->previous_instance);
    resp->set_applied((*r)->applied);
  }
  return r->status();
}

void InstanceCounterServiceImpl::DoGet(const v1::InstanceGetRequest& req,
                                       v1::InstanceGetResponse* resp, core::StatusCallback done) {
  std::string ns;
  absl::Status s = Names(req.namespace_(), req.key(), &ns);
  if (s.ok()) s = ValidConsistency(req.consistency());
  if (!s.ok()) return done(s);
  counters_->Get(ns, req.key(), FromProto(req.consistency()), Fill(resp, std::move(done)));
}

void InstanceCounterServiceImpl::DoSet(const v1::InstanceSetRequest& req,
                                       v1::InstanceSetResponse* resp, core::StatusCallback done) {
  std::string ns;
  absl::Status s = Names(req.namespace_(), req.key(), &ns);
  auto cond = FromProto(req.condition());
  if (s.ok()) s = cond.status();
  if (!s.ok()) return done(s);
  counters_->Set(ns, req.key(), req.value(), *cond, Fill(resp, std::move(done)));
}

void InstanceCounterServiceImpl::DoSetOnInstance(const v1::SetOnInstanceRequest& req,
                                                 v1::SetOnInstanceResponse* resp,
                                                 core::StatusCallback done) {
  std::string ns;
  absl::Status s = Names(req.namespace_(), req.key(), &ns);
  if (s.ok()) s = ValidConsistency(req.consistency());
  auto cond = FromProto(req.condition());
  if (s.ok()) s = cond.status();
  if (!s.ok()) return done(s);
  counters_->SetOnInstance(ns, req.key(), req.value(), FromProto(req.consistency()), *cond,
                           Fill(resp, std::move(done)));
}

void InstanceCounterServiceImpl::DoDel(const v1::InstanceDelRequest& req,
                                       v1::InstanceDelResponse* resp, core::StatusCallback done) {
  std::string ns;
  absl::Status s = Names(req.namespace_(), req.key(), &ns);
  if (!s.ok()) return done(s);
  counters_->Del(ns, req.key(), Fill(resp, std::move(done)));
}

void InstanceCounterServiceImpl::DoDelOnInstance(const v1::DelOnInstanceRequest& req,
                                                 v1::DelOnInstanceResponse* resp,
                                                 core::StatusCallback done) {
  std::string ns;
  absl::Status s = Names(req.namespace_(), req.key(), &ns);
  if (!s.ok()) return done(s);
  counters_->DelOnInstance(ns, req.key(), Fill(resp, std::move(done)));
}

#define DK_UNARY(Name, Req, Resp, Method)                                                          \
  grpc::ServerUnaryReactor* InstanceCounterServiceImpl::Name(grpc::CallbackServerContext* ctx,     \
                                                             const v1::Req* req, v1::Resp* resp) { \
    return Unary(ctx, in_flight_, rpc_metrics_, Method, Later([&](core::StatusCallback done) {     \
                   Do##Name(*req, resp, std::move(done));                                          \
                 }));                                                                              \
  }

DK_UNARY(Get, InstanceGetRequest, InstanceGetResponse, kGet)
DK_UNARY(Set, InstanceSetRequest, InstanceSetResponse, kSet)
DK_UNARY(SetOnInstance, SetOnInstanceRequest, SetOnInstanceResponse, kSetOnInstance)
DK_UNARY(Del, InstanceDelRequest, InstanceDelResponse, kDel)
DK_UNARY(DelOnInstance, DelOnInstanceRequest, DelOnInstanceResponse, kDelOnInstance)
#undef DK_UNARY

grpc::ServerUnaryReactor* InstanceCounterServiceImpl::Inc(grpc::CallbackServerContext* ctx,
                                                          const v1::InstanceIncRequest* req,
                                                          v1::InstanceIncResponse* resp) {
  return Unary(ctx, in_flight_, rpc_metrics_, kInc,
               [&](const auto& callback) -> std::optional<absl::Status> {
                 if (auto st = TryInc(*req, resp)) return st;  // LAX, known key: no callback
                 IncAsync(*req, resp, callback());
                 return std::nullopt;
               });
}

grpc::ServerUnaryReactor* InstanceCounterServiceImpl::Clear(grpc::CallbackServerContext* ctx,
                                                            const v1::InstanceClearRequest* req,
                                                            v1::InstanceClearResponse* /*resp*/) {
  return Unary(ctx, in_flight_, rpc_metrics_, kClear,
               [&](const auto& callback) -> std::optional<absl::Status> {
                 std::string ns;
                 if (auto s = Namespace(req->namespace_(), &ns); !s.ok()) return s;
                 counters_->Clear(ns, callback());
                 return std::nullopt;
               });
}

grpc::ServerUnaryReactor* InstanceCounterServiceImpl::ClearOnInstance(
    grpc::CallbackServerContext* ctx, const v1::ClearOnInstanceRequest* req,
    v1::ClearOnInstanceResponse* /*resp*/) {
  return Unary(ctx, in_flight_, rpc_metrics_, kClearOnInstance,
               [&](const auto& callback) -> std::optional<absl::Status> {
                 std::string ns;
                 if (auto s = Namespace(req->namespace_(), &ns); !s.ok()) return s;
                 counters_->ClearOnInstance(ns, callback());
                 return std::nullopt;
               });
}

grpc::ServerUnaryReactor* InstanceCounterServiceImpl::Batch(grpc::CallbackServerContext* ctx,
                                                            const v1::InstanceBatchRequest* req,
                                                            v1::InstanceBatchResponse* resp) {
  return Unary(
      ctx, in_flight_, rpc_metrics_, kBatch,
      [&](const auto& callback) -> std::optional<absl::Status> {
        if (static_cast<size_t>(req->ops_size()) > core::kMaxBatchItems) {
          return absl::InvalidArgumentError(absl::StrCat("ops: a batch holds at most ",
                                                         core::kMaxBatchItems, " items, got ",
                                                         req->ops_size()));
        }
        batch_items_->Increment(req->ops_size());
        std::make_shared<BatchRun>(this, req, resp, default_namespace_, callback())->Pump();
        return std::nullopt;
      });
}

}  // namespace distkit::transport
