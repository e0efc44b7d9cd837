#pragma once

// The daemon's object graph in one place: the Redis executor, plain and instance-aware
// counters, the three rate-limit providers, metrics and the gRPC server, built in dependency
// order from a Config and shut down in the order that loses nothing. daemon/main.cc and every
// in-process test daemon build it the same way.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "daemon/config/config.h"
#include "daemon/core/counters.h"
#include "daemon/core/hybrid_rate_limiter.h"
#include "daemon/core/instance_counters.h"
#include "daemon/core/local_rate_limiter.h"
#include "daemon/core/redis_rate_limiter.h"
#include "daemon/core/rls_limiter.h"
#include "daemon/redis/executor.h"
#include "daemon/transport/metrics.h"
#include "daemon/transport/server.h"

namespace distkit {

// Test seams; the daemon passes none. Everything given must outlive the App.
struct AppHooks {
  const core::Clock* local_rate_clock = nullptr;  // the LOCAL provider's clock
  core::RandomSource* random = nullptr;           // every rate-limit provider's random source
  int64_t local_sweep_interval_ms = 1000;         // 0 = no sweep thread (tests call Sweep)
  // What serves PROVIDER_REDIS / PROVIDER_HYBRID: unset = ours, nullptr = nothing (the server
  // answers UNIMPLEMENTED), else the given limiter (a fake).
  std::optional<core::RateLimiter*> redis_rate_limiter;
  std::optional<core::RateLimiter*> hybrid_rate_limiter;
};

// What Shutdown could not settle before the grace ran out (Redis unreachable), by component.
struct ShutdownReport {
  int64_t unflushed_lax_keys = 0;       // plain counters: LAX increments lost
  int64_t unsynced_hybrid_keys = 0;     // HYBRID usage the other daemons will not count
  int64_t unsettled_instance_keys = 0;  // instance slices left for the reapers
  int64_t broken_lax_keys = 0;  // of unflushed_lax_keys: refused by the key's data, not an outage
};

class App {
 public:
  // Builds and starts everything. An empty `config.listen` builds no gRPC server (tests of the
  // core alone); an empty `config.instance_id` gets a fresh UUID. Not being able to reach Redis
  // is not an error (the daemon serves and retries); a listen or metrics address that cannot
  // be bound is.
  static absl::StatusOr<std::unique_ptr<App>> Create(const config::Config& config,
                                                     AppHooks hooks = {});
  // Unless Shutdown ran: stops as Abandon() does.
  ~App();
  App(const App&) = delete;
  App& operator=(const App&) = delete;

  // The ordered shutdown of SIGTERM within `grace`:
  // 1. health NOT_SERVING, no new calls, running RPCs finish (at most half the grace);
  // 2. every pending LAX increment of plain counters is flushed (rest of the grace);
  // 3. HYBRID pushes its unsynced usage and releases its leases (rest, at least 200 ms);
  // 4. this instance's slices are removed and it deregisters (rest, at least 1 s);
  // 5. the executor stops.
  ShutdownReport Shutdown(std::chrono::milliseconds grace);
  // Stops serving and every background thread without flushing, pushing or deregistering: what
  // a killed daemon leaves behind (its slices stay until a reaper removes them).
  void Abandon();

  const config::Config& config() const { return config_; }
  redis::Executor& executor() { return *executor_; }
  core::Counters& counters() { return *counters_; }
  core::InstanceCounters& instance_counters() { return *icounters_; }
  core::LocalRateLimiter& local_rate_limiter() { return *local_rate_limiter_; }
  core::RedisRateLimiter& redis_rate_limiter() { return *redis_rate_limiter_; }
  core::HybridRateLimiter& hybrid_rate_limiter() { return *hybrid_rate_limiter_; }
  transport::Metrics& metrics() { return *metrics_; }

  // Re-reads --rls_config (SIGHUP, or a changed file): the new rules replace the old ones
  // atomically; a bad file keeps the old rules, is logged and counted
  // (distkit_rls_config_reload_failures_total), and its error returned. OK without --rls_config.
  absl::Status ReloadRls();

 private:
  explicit App(const config::Config& config) : config_(config) {}
  void StopServing(std::chrono::system_clock::time_point deadline);
  // Reloads when the files of --rls_config changed since the last load (the poll task's run).
  void ReloadRlsIfChanged();

  config::Config config_;
  bool stopped_ = false;
  // Declared in build order: destroyed in reverse, each after everything that uses it.
  std::unique_ptr<redis::Executor> executor_;
  std::unique_ptr<core::Counters> counters_;
  std::unique_ptr<core::InstanceCounters> icounters_;
  std::unique_ptr<core::LocalRateLimiter> local_rate_limiter_;
  std::unique_ptr<core::RedisRateLimiter> redis_rate_limiter_;
  std::unique_ptr<core::HybridRateLimiter> hybrid_rate_limiter_;
  std::unique_ptr<core::RlsLimiter> rls_limiter_;  // with --rls_config only
  // The file stamps of the rules in use, and the task polling them (stopped with the server).
  absl::Mutex rls_reload_mu_;
  std::vector<std::pair<std::string, int64_t>> rls_stamp_ ABSL_GUARDED_BY(rls_reload_mu_);
  std::unique_ptr<PeriodicTask> rls_reload_task_;
  std::unique_ptr<transport::Metrics> metrics_;
  std::unique_ptr<transport::Server> server_;
};

}  // namespace distkit
