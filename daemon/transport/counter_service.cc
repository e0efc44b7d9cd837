#include "daemon/transport/counter_service.h"

#include <prometheus/counter.h>

#include <array>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/transport/batch_run.h"
#include "daemon/transport/convert.h"
#include "daemon/transport/unary.h"

namespace distkit::transport {
namespace {

// Method indexes into RpcMetrics, in the order of kMethodNames.
enum Method : size_t { kInc, kGet, kSet, kDel, kClear, kBatch };
constexpr std::array<std::string_view, kBatch + 1> kMethodNames = {"Inc", "Get",   "Set",
                                                                   "Del", "Clear", "Batch"};

bool IsLax(const v1::BatchOp& op) {
  return (op.has_inc() && op.inc().consistency() == v1::CONSISTENCY_LAX) ||
         (op.has_get() && op.get().consistency() == v1::CONSISTENCY_LAX);
}

// CounterService's batch (BatchRun). STRICT items are pipelined (one Redis connection keeps their
// order). A LAX item runs alone: answered from memory, it waits until every earlier item has
// completed so it observes them; and a later item waits for it, because a LAX inc of a key this
// daemon has not read yet is applied only when that read returns (a STRICT item on the key sent
// meanwhile would overtake it).
struct CounterBatch {
  using Request = v1::BatchRequest;
  using Response = v1::BatchResponse;
  using Key = NoKey;

  static std::optional<Key> KeyOf(const v1::BatchOp& /*op*/) { return std::nullopt; }
  static bool Alone(const v1::BatchOp& op) { return IsLax(op); }

  std::optional<absl::Status> Start(int i, const v1::BatchOp& op, v1::BatchResult* res,
                                    MakeCallback callback) const {
    switch (op.op_case()) {
      case v1::BatchOp::kInc:
        return svc->StartInc(op.inc(), res->mutable_inc(), callback);
      case v1::BatchOp::kGet:
        svc->DoGet(op.get(), res->mutable_get(), callback());
        return std::nullopt;
      case v1::BatchOp::kSet:
        svc->DoSet(op.set(), res->mutable_set(), callback());
        return std::nullopt;
      case v1::BatchOp::kDel:
        svc->DoDel(op.del(), res->mutable_del(), callback());
        return std::nullopt;
      default:
        return absl::InvalidArgumentError(absl::StrCat("ops[", i, "]: no operation set"));
    }
  }

  CounterServiceImpl* svc;
};

}  // namespace

CounterServiceImpl::CounterServiceImpl(core::Counters* counters, std::string default_namespace,
                                       InFlight* in_flight, Metrics* metrics)
    : counters_(counters),
      names_(std::move(default_namespace)),
      in_flight_(in_flight),
      rpc_metrics_(&metrics->Rpc(v1::CounterService::service_full_name(), kMethodNames)),
      batch_items_(&metrics->BatchItems(v1::CounterService::service_full_name())) {}

std::optional<absl::Status> CounterServiceImpl::StartInc(const v1::IncRequest& req,
                                                         v1::IncResponse* resp,
                                                         MakeCallback callback) {
  std::string ns;
  absl::Status s = names_.Names(req.namespace_(), req.key(), &ns);
  if (s.ok()) s = ValidConsistency(req.consistency());
  auto cond = FromProto(req.condition());
  if (s.ok()) s = cond.status();
  if (!s.ok()) return s;
  const core::Consistency c = FromProto(req.consistency());
  return InlineOr(
      counters_->TryInc(ns, req.key(), req.delta(), c, *cond),  // LAX, known key
      [resp](const core::CounterResult& r) { ToProto(r, resp); },
      [&](core::CounterCallback done) {
        counters_->Inc(ns, req.key(), req.delta(), c, *cond, std::move(done));
      },
      callback);
}

void CounterServiceImpl::DoGet(const v1::GetRequest& req, v1::GetResponse* resp,
                               core::StatusCallback done) {
  std::string ns;
  absl::Status s = names_.Names(req.namespace_(), req.key(), &ns);
  if (s.ok()) s = ValidConsistency(req.consistency());
  if (!s.ok()) return done(s);
  counters_->Get(ns, req.key(), FromProto(req.consistency()),
                 Fill<core::CounterResult>(resp, std::move(done)));
}

void CounterServiceImpl::DoSet(const v1::SetRequest& req, v1::SetResponse* resp,
                               core::StatusCallback done) {
  std::string ns;
  absl::Status s = names_.Names(req.namespace_(), req.key(), &ns);
  auto cond = FromProto(req.condition());
  if (s.ok()) s = cond.status();
  if (!s.ok()) return done(s);
  counters_->Set(ns, req.key(), req.value(), *cond,
                 Fill<core::CounterResult>(resp, std::move(done)));
}

void CounterServiceImpl::DoDel(const v1::DelRequest& req, v1::DelResponse* resp,
                               core::StatusCallback done) {
  std::string ns;
  absl::Status s = names_.Names(req.namespace_(), req.key(), &ns);
  if (!s.ok()) return done(s);
  counters_->Del(ns, req.key(), Fill<core::CounterResult>(resp, std::move(done)));
}

grpc::ServerUnaryReactor* CounterServiceImpl::Inc(grpc::CallbackServerContext* ctx,
                                                  const v1::IncRequest* req,
                                                  v1::IncResponse* resp) {
  return Unary(ctx, in_flight_, rpc_metrics_, kInc,
               [&](const auto& callback) { return StartInc(*req, resp, callback); });
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
                 std::string ns;
                 if (auto s = names_.Namespace(req->namespace_(), &ns); !s.ok()) return s;
                 counters_->Clear(ns, callback());
                 return std::nullopt;
               });
}

grpc::ServerUnaryReactor* CounterServiceImpl::Batch(grpc::CallbackServerContext* ctx,
                                                    const v1::BatchRequest* req,
                                                    v1::BatchResponse* resp) {
  return Unary(
      ctx, in_flight_, rpc_metrics_, kBatch,
      Deduplicated(&dedup_, req, resp, RunBatch(CounterBatch{this}, req, resp, batch_items_)),
      BatchCallBytes(req->ops_size()));
}

}  // namespace distkit::transport
