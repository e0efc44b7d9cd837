#pragma once

#include <optional>
#include <string>

#include "daemon/core/counters.h"
#include "daemon/transport/batch_run.h"
#include "daemon/transport/convert.h"
#include "daemon/transport/in_flight.h"
#include "daemon/transport/metrics.h"
#include "daemon/transport/push_dedup.h"
#include "distkit/v1/counter.grpc.pb.h"

namespace distkit::transport {

// gRPC callback service for plain counters: validates, converts to core calls, and finishes
// the reactor from the core completion (any thread). Never blocks a gRPC thread. Every RPC is
// counted in `in_flight` and recorded in `metrics` (both must outlive the service).
class CounterServiceImpl final : public v1::CounterService::CallbackService {
 public:
  CounterServiceImpl(core::Counters* counters, std::string default_namespace, InFlight* in_flight,
                     Metrics* metrics);

  grpc::ServerUnaryReactor* Inc(grpc::CallbackServerContext* ctx, const v1::IncRequest* req,
                                v1::IncResponse* resp) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const v1::GetRequest* req,
                                v1::GetResponse* resp) override;
  grpc::ServerUnaryReactor* Set(grpc::CallbackServerContext* ctx, const v1::SetRequest* req,
                                v1::SetResponse* resp) override;
  grpc::ServerUnaryReactor* Del(grpc::CallbackServerContext* ctx, const v1::DelRequest* req,
                                v1::DelResponse* resp) override;
  grpc::ServerUnaryReactor* Clear(grpc::CallbackServerContext* ctx, const v1::ClearRequest* req,
                                  v1::ClearResponse* resp) override;
  grpc::ServerUnaryReactor* Batch(grpc::CallbackServerContext* ctx, const v1::BatchRequest* req,
                                  v1::BatchResponse* resp) override;

  // Inc, shared by the unary RPC and Batch, with Unary's contract: the final status when
  // answered at once (LAX inc of a known key, validation error), else nullopt after handing
  // `callback()` to the core.
  std::optional<absl::Status> StartInc(const v1::IncRequest& req, v1::IncResponse* resp,
                                       MakeCallback callback);
  // Single-op entry points shared by the unary RPCs and Batch; `done` gets the final status.
  void DoGet(const v1::GetRequest& req, v1::GetResponse* resp, core::StatusCallback done);
  void DoSet(const v1::SetRequest& req, v1::SetResponse* resp, core::StatusCallback done);
  void DoDel(const v1::DelRequest& req, v1::DelResponse* resp, core::StatusCallback done);

 private:
  core::Counters* const counters_;
  const NameResolver names_;
  InFlight* const in_flight_;
  const RpcMetrics* const rpc_metrics_;
  prometheus::Counter* const batch_items_;
  PushDedup<v1::BatchResponse> dedup_;  // Batch pushes with a client_id
};

}  // namespace distkit::transport
