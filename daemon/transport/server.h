#pragma once

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/common/periodic_task.h"
#include "daemon/config/config.h"
#include "daemon/core/counters.h"
#include "daemon/core/instance_counters.h"
#include "daemon/redis/redis_client.h"
#include "daemon/transport/counter_service.h"
#include "daemon/transport/in_flight.h"
#include "daemon/transport/instance_counter_service.h"
#include "daemon/transport/metrics.h"
#include "daemon/transport/rate_limit_service.h"
#include "daemon/transport/rls_service.h"

namespace distkit::transport {

// gRPC refuses larger requests (RESOURCE_EXHAUSTED) before parsing them. Just above the largest
// legal request: a Batch of core::kMaxBatchItems items with 255-byte names, ≈ 5.6 MB
// (tests/unit/max_message_test.cc computes it from the protos). 64 MB let a client make the
// daemon parse 16.7 M items (2 GB) before refusing them.
inline constexpr int kMaxReceiveMessageBytes = 6 << 20;

// Streams one client connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
// A stream whose answer the client does not read stays open, so this bounds what one connection
// can pin; more streams need more connections, which the --max_memory_mb budget bounds.
inline constexpr int kMaxConcurrentStreams = 100;

// The gRPC server: the distkit.v1 services, grpc.health.v1 and server reflection on every
// --listen address (TCP ones with TLS when --tls_cert is set), and grpc.health.v1 alone on
// --health_listen. Health: "" is SERVING while the process serves; each implemented
// distkit.v1 service is SERVING only while Redis is healthy (polled every 100 ms).
class Server {
 public:
  // InstanceCounterService is served when `icounters` is given (else UNIMPLEMENTED);
  // RateLimitService when any of `rate_limiters` is given (a missing provider answers
  // UNIMPLEMENTED); Envoy's envoy.service.ratelimit.v3.RateLimitService only when `rls` is
  // given (--rls_config). Everything passed in must outlive the server. The services record their
  // RPCs in `metrics`; without one (tests) they record in a private Metrics that nothing exports.
  static absl::StatusOr<std::unique_ptr<Server>> Start(
      const config::Config& config, core::Counters* counters, const redis::RedisClient* redis,
      Metrics* metrics = nullptr, core::InstanceCounters* icounters = nullptr,
      RateLimiters rate_limiters = {}, core::RlsLimiter* rls = nullptr);
  ~Server();

  // Turns every health entry NOT_SERVING, stops accepting calls and waits for in-flight RPCs
  // (cancelled after `deadline`).
  void Shutdown(std::chrono::system_clock::time_point deadline);

  static const std::vector<std::string>& ServiceNames();

 private:
  Server() = default;

  std::unique_ptr<grpc::Server> StartHealthServer(const std::string& addr);
  // Sets a grpc.health.v1 entry on the main server and on the health port.
  void SetHealth(const std::string& service, bool serving);

  const redis::RedisClient* redis_ = nullptr;
  std::unique_ptr<Metrics> own_metrics_;  // when Start() got none
  InFlight in_flight_;
  std::unique_ptr<CounterServiceImpl> counter_service_;
  std::unique_ptr<InstanceCounterServiceImpl> instance_counter_service_;
  std::unique_ptr<RateLimitServiceImpl> rate_limit_service_;
  std::unique_ptr<RlsServiceImpl> rls_service_;
  std::vector<std::string> health_names_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::CallbackGenericService> health_port_only_;  // outlives health_server_
  std::unique_ptr<grpc::Server> health_server_;  // --health_listen; null when off
  std::vector<std::string> unix_paths_;
  std::atomic<bool> stopping_{false};
  // Mirrors Redis health into the distkit.v1.* health entries every 100 ms.
  std::unique_ptr<PeriodicTask> readiness_task_;
};

}  // namespace distkit::transport
