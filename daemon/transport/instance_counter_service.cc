#include "daemon/transport/instance_counter_service.h"

#include <prometheus/counter.h>

#include <array>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/transport/batch_run.h"
#include "daemon/transport/convert.h"
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

// InstanceCounterService's batch (BatchRun). Items on distinct keys are pipelined; an item waits
// while an earlier item on the same (namespace, key) is outstanding (a first write registers its
// key before its script runs, and a key due for restore waits for it, so two items of one key
// sent together could be reordered), and every later item waits behind it.
struct InstanceBatch {
  using Request = v1::InstanceBatchRequest;
  using Response = v1::InstanceBatchResponse;
  using Key = std::pair<std::string_view, std::string_view>;  // (namespace resolved, key)

  std::optional<Key> KeyOf(const v1::InstanceBatchOp& op) const {
    auto of = [&](const auto& req) -> Key { return {names->Resolve(req.namespace_()), req.key()}; };
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
        return std::nullopt;  // answered at once: no operation set
    }
  }
  static bool Alone(const v1::InstanceBatchOp& /*op*/) { return false; }

  std::optional<absl::Status> Start(int i, const v1::InstanceBatchOp& op,
                                    v1::InstanceBatchResult* res, MakeCallback callback) const {
    switch (op.op_case()) {
      case v1::InstanceBatchOp::kInc:
        return svc->StartInc(op.inc(), res->mutable_inc(), callback);
      case v1::InstanceBatchOp::kGet:
        svc->DoGet(op.get(), res->mutable_get(), callback());
        break;
      case v1::InstanceBatchOp::kSet:
        svc->DoSet(op.set(), res->mutable_set(), callback());
        break;
      case v1::InstanceBatchOp::kSetOnInstance:
        svc->DoSetOnInstance(op.set_on_instance(), res->mutable_set_on_instance(), callback());
        break;
      case v1::InstanceBatchOp::kDel:
        svc->DoDel(op.del(), res->mutable_del(), callback());
        break;
      case v1::InstanceBatchOp::kDelOnInstance:
        svc->DoDelOnInstance(op.del_on_instance(), res->mutable_del_on_instance(), callback());
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat("ops[", i, "]: no operation set"));
    }
    return std::nullopt;
  }

  InstanceCounterServiceImpl* svc;
  const NameResolver* names;  // the service's, which outlives every RPC
};

}  // namespace

InstanceCounterServiceImpl::InstanceCounterServiceImpl(core::InstanceCounters* counters,
                                                       std::string default_namespace,
                                                       InFlight* in_flight, Metrics* metrics)
    : counters_(counters),
      names_(std::move(default_namespace)),
      in_flight_(in_flight),
      rpc_metrics_(&metrics->Rpc(v1::InstanceCounterService::service_full_name(), kMethodNames)),
      batch_items_(&metrics->BatchItems(v1::InstanceCounterService::service_full_name())) {}

std::optional<absl::Status> InstanceCounterServiceImpl::StartInc(const v1::InstanceIncRequest& req,
                                                                 v1::InstanceIncResponse* resp,
                                                                 MakeCallback callback) {
  std::string ns;
  absl::Status s = names_.Names(req.namespace_(), req.key(), &ns);
  if (s.ok()) s = ValidConsistency(req.consistency());
  auto cond = FromProto(req.condition());
  if (s.ok()) s = cond.status();
  if (!s.ok()) return s;
  const core::Consistency c = FromProto(req.consistency());
  return InlineOr(
      c == core::Consistency::kLax
          ? counters_->TryLaxInc(ns, req.key(), req.delta(), *cond)  // known key
          : std::nullopt,
      [resp](const core::InstanceResult& r) { ToProto(r, resp); },
      [&](core::InstanceCallback done) {
        counters_->Inc(ns, req.key(), req.delta(), c, *cond, std::move(done));
      },
      callback);
}

void InstanceCounterServiceImpl::DoGet(const v1::InstanceGetRequest& req,
                                       v1::InstanceGetResponse* resp, core::StatusCallback done) {
  std::string ns;
  absl::Status s = names_.Names(req.namespace_(), req.key(), &ns);
  if (s.ok()) s = ValidConsistency(req.consistency());
  if (!s.ok()) return done(s);
  counters_->Get(ns, req.key(), FromProto(req.consistency()),
                 Fill<core::InstanceResult>(resp, std::move(done)));
}

void InstanceCounterServiceImpl::DoSet(const v1::InstanceSetRequest& req,
                                       v1::InstanceSetResponse* resp, core::StatusCallback done) {
  std::string ns;
  absl::Status s = names_.Names(req.namespace_(), req.key(), &ns);
  auto cond = FromProto(req.condition());
  if (s.ok()) s = cond.status();
  if (!s.ok()) return done(s);
  counters_->Set(ns, req.key(), req.value(), *cond,
                 Fill<core::InstanceResult>(resp, std::move(done)));
}

void InstanceCounterServiceImpl::DoSetOnInstance(const v1::SetOnInstanceRequest& req,
                                                 v1::SetOnInstanceResponse* resp,
                                                 core::StatusCallback done) {
  std::string ns;
  absl::Status s = names_.Names(req.namespace_(), req.key(), &ns);
  if (s.ok()) s = ValidConsistency(req.consistency());
  auto cond = FromProto(req.condition());
  if (s.ok()) s = cond.status();
  if (!s.ok()) return done(s);
  counters_->SetOnInstance(ns, req.key(), req.value(), FromProto(req.consistency()), *cond,
                           Fill<core::InstanceResult>(resp, std::move(done)));
}

void InstanceCounterServiceImpl::DoDel(const v1::InstanceDelRequest& req,
                                       v1::InstanceDelResponse* resp, core::StatusCallback done) {
  std::string ns;
  absl::Status s = names_.Names(req.namespace_(), req.key(), &ns);
  if (!s.ok()) return done(s);
  counters_->Del(ns, req.key(), Fill<core::InstanceResult>(resp, std::move(done)));
}

void InstanceCounterServiceImpl::DoDelOnInstance(const v1::DelOnInstanceRequest& req,
                                                 v1::DelOnInstanceResponse* resp,
                                                 core::StatusCallback done) {
  std::string ns;
  absl::Status s = names_.Names(req.namespace_(), req.key(), &ns);
  if (!s.ok()) return done(s);
  counters_->DelOnInstance(ns, req.key(), Fill<core::InstanceResult>(resp, std::move(done)));
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
               [&](const auto& callback) { return StartInc(*req, resp, callback); });
}

grpc::ServerUnaryReactor* InstanceCounterServiceImpl::Clear(grpc::CallbackServerContext* ctx,
                                                            const v1::InstanceClearRequest* req,
                                                            v1::InstanceClearResponse* /*resp*/) {
  return Unary(ctx, in_flight_, rpc_metrics_, kClear,
               [&](const auto& callback) -> std::optional<absl::Status> {
                 std::string ns;
                 if (auto s = names_.Namespace(req->namespace_(), &ns); !s.ok()) return s;
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
                 if (auto s = names_.Namespace(req->namespace_(), &ns); !s.ok()) return s;
                 counters_->ClearOnInstance(ns, callback());
                 return std::nullopt;
               });
}

grpc::ServerUnaryReactor* InstanceCounterServiceImpl::Batch(grpc::CallbackServerContext* ctx,
                                                            const v1::InstanceBatchRequest* req,
                                                            v1::InstanceBatchResponse* resp) {
  return Unary(ctx, in_flight_, rpc_metrics_, kBatch,
               Deduplicated(&dedup_, req, resp,
                            RunBatch(InstanceBatch{this, &names_}, req, resp, batch_items_)),
               BatchCallBytes(req->ops_size()));
}

}  // namespace distkit::transport
