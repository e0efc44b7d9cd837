#pragma once

#include <optional>
#include <string>

#include "daemon/core/instance_counters.h"
#include "daemon/transport/batch_run.h"
#include "daemon/transport/convert.h"
#include "daemon/transport/in_flight.h"
#include "daemon/transport/metrics.h"
#include "daemon/transport/push_dedup.h"
#include "distkit/v1/instance_counter.grpc.pb.h"

namespace distkit::transport {

// gRPC callback service for instance-aware counters: STRICT (one icounter.lua call) and LAX
// (answered from memory when it can: core/instance_lax.h). Never blocks a gRPC thread.
class InstanceCounterServiceImpl final : public v1::InstanceCounterService::CallbackService {
 public:
  InstanceCounterServiceImpl(core::InstanceCounters* counters, std::string default_namespace,
                             InFlight* in_flight, Metrics* metrics);

  grpc::ServerUnaryReactor* Inc(grpc::CallbackServerContext* ctx, const v1::InstanceIncRequest* req,
                                v1::InstanceIncResponse* resp) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const v1::InstanceGetRequest* req,
                                v1::InstanceGetResponse* resp) override;
  grpc::ServerUnaryReactor* Set(grpc::CallbackServerContext* ctx, const v1::InstanceSetRequest* req,
                                v1::InstanceSetResponse* resp) override;
  grpc::ServerUnaryReactor* SetOnInstance(grpc::CallbackServerContext* ctx,
                                          const v1::SetOnInstanceRequest* req,
                                          v1::SetOnInstanceResponse* resp) override;
  grpc::ServerUnaryReactor* Del(grpc::CallbackServerContext* ctx, const v1::InstanceDelRequest* req,
                                v1::InstanceDelResponse* resp) override;
  grpc::ServerUnaryReactor* DelOnInstance(grpc::CallbackServerContext* ctx,
                                          const v1::DelOnInstanceRequest* req,
                                          v1::DelOnInstanceResponse* resp) override;
  grpc::ServerUnaryReactor* Clear(grpc::CallbackServerContext* ctx,
                                  const v1::InstanceClearRequest* req,
                                  v1::InstanceClearResponse* resp) override;
  grpc::ServerUnaryReactor* ClearOnInstance(grpc::CallbackServerContext* ctx,
                                            const v1::ClearOnInstanceRequest* req,
                                            v1::ClearOnInstanceResponse* resp) override;
  grpc::ServerUnaryReactor* Batch(grpc::CallbackServerContext* ctx,
                                  const v1::InstanceBatchRequest* req,
                                  v1::InstanceBatchResponse* resp) override;

  // Inc, shared by the unary RPC and Batch, with Unary's contract: the final status when
  // answered at once (LAX inc of a known key, validation error), else nullopt after handing
  // `callback()` to the core.
  std::optional<absl::Status> StartInc(const v1::InstanceIncRequest& req,
                                       v1::InstanceIncResponse* resp, MakeCallback callback);
  // Single-op entry points shared by the unary RPCs and Batch; `done` gets the final status.
  void DoGet(const v1::InstanceGetRequest& req, v1::InstanceGetResponse* resp,
             core::StatusCallback done);
  void DoSet(const v1::InstanceSetRequest& req, v1::InstanceSetResponse* resp,
             core::StatusCallback done);
  void DoSetOnInstance(const v1::SetOnInstanceRequest& req, v1::SetOnInstanceResponse* resp,
                       core::StatusCallback done);
  void DoDel(const v1::InstanceDelRequest& req, v1::InstanceDelResponse* resp,
             core::StatusCallback done);
  void DoDelOnInstance(const v1::DelOnInstanceRequest& req, v1::DelOnInstanceResponse* resp,
                       core::StatusCallback done);

 private:
  core::InstanceCounters* const counters_;
  const NameResolver names_;
  InFlight* const in_flight_;
  const RpcMetrics* const rpc_metrics_;
  prometheus::Counter* const batch_items_;
  PushDedup<v1::InstanceBatchResponse> dedup_;  // Batch pushes with a client_id
};

}  // namespace distkit::transport
