#pragma once

// A thin convenience wrapper over the generated distkit.v1 stubs: one method per CounterService,
// InstanceCounterService and RateLimitService RPC with plain arguments, absl::Status errors (same
// code and message as the gRPC status), per-call deadlines, and the standard health check.
//
//   auto client = distkit::client::Client::Connect("unix:/tmp/distkitd.sock");
//   if (!client.ok()) ...;
//   absl::StatusOr<distkit::v1::IncResponse> r = (*client)->Inc("", "requests", 1);
//
// A Client is thread-safe; every method blocks until the RPC finishes or its deadline passes.

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "distkit/channel.h"
#include "distkit/v1/counter.grpc.pb.h"
#include "distkit/v1/instance_counter.grpc.pb.h"
#include "distkit/v1/rate_limit.grpc.pb.h"

namespace distkit::client {

struct ClientOptions {
  // Deadline of each call that does not set its own; zero or negative = no deadline.
  std::chrono::milliseconds default_timeout{0};
  // TLS towards a TCP listener of a daemon started with --tls_cert (off when empty).
  distkit::TlsOptions tls;
};

struct CallOptions {
  // Overrides ClientOptions::default_timeout for this call; zero or negative = no deadline.
  std::optional<std::chrono::milliseconds> timeout;
  // Wait for the channel to become ready (within the deadline) instead of failing fast with
  // UNAVAILABLE while the daemon is unreachable.
  bool wait_for_ready = false;
};

// grpc.health.v1.HealthCheckResponse.ServingStatus.
enum class ServingStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };

std::string_view ServingStatusName(ServingStatus status);

// The same code and message.
absl::Status FromGrpcStatus(const grpc::Status& status);

class Client {
 public:
  // `addr` is `unix:PATH` or `HOST:PORT` (IPv6 as `[::1]:PORT`), as in the daemon's --listen;
  // any other gRPC target URI (`dns:///host:port`, `unix-abstract:name`, ...) is passed through.
  // Only the address is checked: the connection is made lazily, on the first call (see
  // WaitForReady).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(std::string_view addr,
                                                         ClientOptions options = {});
  // Wraps an existing channel (tests, custom credentials or channel arguments).
  static std::unique_ptr<Client> FromChannel(std::shared_ptr<grpc::Channel> channel,
                                             ClientOptions options = {});

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Connects now; DEADLINE_EXCEEDED when the channel is not ready within `timeout`.
  absl::Status WaitForReady(std::chrono::milliseconds timeout);

  // ---- CounterService ----
  // An empty namespace means the daemon's --namespace.
  absl::StatusOr<v1::IncResponse> Inc(std::string_view ns, std::string_view key, int64_t delta,
                                      v1::Consistency consistency = v1::CONSISTENCY_UNSPECIFIED,
                                      const std::optional<v1::Condition>& condition = std::nullopt,
                                      const CallOptions& call = {});
  absl::StatusOr<v1::GetResponse> Get(std::string_view ns, std::string_view key,
                                      v1::Consistency consistency = v1::CONSISTENCY_UNSPECIFIED,
                                      const CallOptions& call = {});
  absl::StatusOr<v1::SetResponse> Set(std::string_view ns, std::string_view key, int64_t value,
                                      const std::optional<v1::Condition>& condition = std::nullopt,
                                      const CallOptions& call = {});
  absl::StatusOr<v1::DelResponse> Del(std::string_view ns, std::string_view key,
                                      const CallOptions& call = {});
  absl::Status Clear(std::string_view ns, const CallOptions& call = {});
  // Per-item failures are reported in the results (code, message); the returned status fails
  // only when the whole call does (e.g. more than 10 000 items).
  absl::StatusOr<v1::BatchResponse> Batch(const v1::BatchRequest& request,
                                          const CallOptions& call = {});

  // ---- InstanceCounterService ----
  // Every response carries (cumulative, instance) after and before the operation and `applied`.
  // An empty namespace means the daemon's --namespace. The condition of InstanceInc and
  // InstanceSet is checked against the cumulative, that of SetOnInstance against this
  // instance's slice.
  absl::StatusOr<v1::InstanceIncResponse> InstanceInc(
      std::string_view ns, std::string_view key, int64_t delta,
      v1::Consistency consistency = v1::CONSISTENCY_UNSPECIFIED,
      const std::optional<v1::Condition>& condition = std::nullopt, const CallOptions& call = {});
  absl::StatusOr<v1::InstanceGetResponse> InstanceGet(
      std::string_view ns, std::string_view key,
      v1::Consistency consistency = v1::CONSISTENCY_UNSPECIFIED, const CallOptions& call = {});
  absl::StatusOr<v1::InstanceSetResponse> InstanceSet(
      std::string_view ns, std::string_view key, int64_t value,
      const std::optional<v1::Condition>& condition = std::nullopt, const CallOptions& call = {});
  absl::StatusOr<v1::SetOnInstanceResponse> SetOnInstance(
      std::string_view ns, std::string_view key, int64_t value,
      v1::Consistency consistency = v1::CONSISTENCY_UNSPECIFIED,
      const std::optional<v1::Condition>& condition = std::nullopt, const CallOptions& call = {});
  absl::StatusOr<v1::InstanceDelResponse> InstanceDel(std::string_view ns, std::string_view key,
                                                      const CallOptions& call = {});
  absl::StatusOr<v1::DelOnInstanceResponse> DelOnInstance(std::string_view ns, std::string_view key,
                                                          const CallOptions& call = {});
  absl::Status InstanceClear(std::string_view ns, const CallOptions& call = {});
  absl::Status ClearOnInstance(std::string_view ns, const CallOptions& call = {});
  // Per-item failures are reported in the results, as for Batch.
  absl::StatusOr<v1::InstanceBatchResponse> InstanceBatch(const v1::InstanceBatchRequest& request,
                                                          const CallOptions& call = {});

  // ---- RateLimitService ----
  // `count` 0 means 1; PROVIDER_UNSPECIFIED is LOCAL, STRATEGY_UNSPECIFIED is ABSOLUTE. The
  // decision is in the response (REJECTED is an OK call); the status fails for bad input
  // (INVALID_ARGUMENT), a provider the daemon does not serve (UNIMPLEMENTED), etc.
  absl::StatusOr<v1::RateLimitIncResponse> RateLimitInc(
      std::string_view ns, std::string_view key, double rate_per_second, uint64_t count = 1,
      v1::Provider provider = v1::PROVIDER_UNSPECIFIED,
      v1::Strategy strategy = v1::STRATEGY_UNSPECIFIED, const CallOptions& call = {});
  absl::StatusOr<v1::RateLimitGetResponse> RateLimitGet(
      std::string_view ns, std::string_view key, v1::Provider provider = v1::PROVIDER_UNSPECIFIED,
      v1::Strategy strategy = v1::STRATEGY_UNSPECIFIED, const CallOptions& call = {});
  // Per-item failures are reported in the results, as for Batch.
  absl::StatusOr<v1::RateLimitBatchResponse> RateLimitBatch(
      const v1::RateLimitBatchRequest& request, const CallOptions& call = {});

  // ---- grpc.health.v1.Health/Check ----
  // `service` "" is the process itself; "distkit.v1.CounterService" etc. follow Redis.
  // An unknown service is NOT_FOUND (as the server answers it).
  absl::StatusOr<ServingStatus> CheckHealth(std::string_view service, const CallOptions& call = {});
  // True when SERVING.
  absl::StatusOr<bool> Health(std::string_view service, const CallOptions& call = {});

  // ---- raw access ----
  v1::CounterService::Stub* counter_stub() { return counter_.get(); }
  v1::InstanceCounterService::Stub* instance_counter_stub() { return instance_counter_.get(); }
  v1::RateLimitService::Stub* rate_limit_stub() { return rate_limit_.get(); }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  // Prepares `context` with the deadline and flags of `call` (for calls made on the raw stubs).
  void Configure(grpc::ClientContext* context, const CallOptions& call) const;

 private:
  Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options);

  std::shared_ptr<grpc::Channel> channel_;
  ClientOptions options_;
  std::unique_ptr<v1::CounterService::Stub> counter_;
  std::unique_ptr<v1::InstanceCounterService::Stub> instance_counter_;
  std::unique_ptr<v1::RateLimitService::Stub> rate_limit_;
};

// Builds a Condition ("current <op> operand").
v1::Condition MakeCondition(v1::Comparator op, int64_t operand);

}  // namespace distkit::client
