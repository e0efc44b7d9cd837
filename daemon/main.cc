// distkitd: parse the configuration, build the object graph (redis -> core -> transport),
// wait for SIGTERM/SIGINT, shut down in order. Everything interesting lives in the layers.

#include <fmt/ranges.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "daemon/common/logging.h"
#include "daemon/config/config.h"
#include "daemon/core/counters.h"
#include "daemon/core/hybrid_rate_limiter.h"
#include "daemon/core/instance_counters.h"
#include "daemon/core/local_rate_limiter.h"
#include "daemon/core/rate_limit.h"
#include "daemon/core/redis_rate_limiter.h"
#include "daemon/redis/executor.h"
#include "daemon/redis/redis_url.h"
#include "daemon/transport/metrics.h"
#include "daemon/transport/server.h"

namespace {

constexpr int kExitConfig = 2;

int Run(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  auto config = distkit::config::ParseConfig(args, distkit::config::DistkitEnvironment());
  if (!config.ok()) {
    if (absl::IsNotFound(config.status())) {  // --help
      std::cout << config.status().message() << "\n";
      return 0;
    }
    std::cerr << "distkitd: " << config.status().message() << "\n";
    return kExitConfig;
  }
  auto endpoint = distkit::redis::ParseRedisUrl(config->redis);
  if (!endpoint.ok()) {
    std::cerr << "distkitd: --redis: " << endpoint.status().message() << "\n";
    return kExitConfig;
  }
  distkit::InitLogging(config->log_level);
  // Debian's abseil keeps Mutex deadlock detection on; it costs a graph lookup per lock.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  spdlog::info("distkitd starting with:\n{}", config->ToString());

  // Signals are taken synchronously by this thread; every other thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  distkit::redis::ExecutorOptions redis_options;
  redis_options.endpoint = *endpoint;
  redis_options.command_timeout = std::chrono::milliseconds(config->redis_timeout_ms);
  distkit::redis::Executor executor(redis_options);
  executor.Start();

  distkit::core::CountersOptions counter_options;
  counter_options.dedup_id = distkit::config::NewUuidV4();
  counter_options.flush_interval_ms = config->flush_interval_ms;
  counter_options.allowed_lag_ms = config->allowed_lag_ms;
  counter_options.max_pending_keys = config->max_pending_keys;
  distkit::core::Counters counters(&executor, counter_options);
  counters.Start();

  distkit::core::InstanceCountersOptions icounter_options;
  icounter_options.instance_id = config->instance_id;
  icounter_options.dedup_id = counter_options.dedup_id;
  icounter_options.dead_instance_threshold_ms = config->dead_instance_threshold_ms;
  icounter_options.flush_interval_ms = config->flush_interval_ms;
  icounter_options.allowed_lag_ms = config->allowed_lag_ms;
  icounter_options.max_pending_keys = config->max_pending_keys;
  distkit::core::InstanceCounters icounters(&executor, icounter_options);
  // Not fatal: without Redis the heartbeat thread keeps trying to register.
  if (auto st = icounters.Start(std::chrono::milliseconds(config->redis_timeout_ms)); !st.ok()) {
    spdlog::warn("{}", st.ToString());
  }

  // Rate limiting (docs/api.md#rate-limiting): the daemon-wide settings and one provider per
  // PROVIDER_*; declared before the server, which serves them until it is shut down.
  distkit::core::RateLimitSettings rate_settings;
  rate_settings.window_ms = config->rate_window_seconds * 1000;
  rate_settings.bucket_ms = config->rate_bucket_ms;
  rate_settings.hard_limit_factor = config->hard_limit_factor;
  rate_settings.suppression_cache_ms = config->suppression_cache_ms;
  rate_settings.sync_interval_ms = config->sync_interval_ms;
  distkit::core::LocalRateLimiterOptions local_rate_options;
  local_rate_options.settings = rate_settings;
  distkit::core::LocalRateLimiter local_rate_limiter(local_rate_options);
  distkit::transport::RateLimiters rate_limiters;
  rate_limiters.local = &local_rate_limiter;
  // REDIS provider: one ratelimit.lua call per Inc; when Redis cannot answer it follows
  // --rate_limit_failure_mode (`local` decides with the LOCAL provider's state).
  const auto redis_failure_mode =
      config->rate_limit_failure_mode == distkit::config::FailureMode::kClosed
          ? distkit::core::RateFailureMode::kClosed
      : config->rate_limit_failure_mode == distkit::config::FailureMode::kLocal
          ? distkit::core::RateFailureMode::kLocal
          : distkit::core::RateFailureMode::kOpen;
  distkit::core::RedisRateLimiter redis_rate_limiter(&executor, rate_settings, redis_failure_mode,
                                                     &distkit::core::DefaultRandom(),
                                                     &local_rate_limiter);
  rate_limiters.redis = &redis_rate_limiter;
  // HYBRID provider: decisions from memory against a lease, synced with Redis every
  // --sync_interval_ms by lua/ratelimit_hybrid.lua (docs/rate_limiting.md, HYBRID).
  distkit::core::HybridRateLimiterOptions hybrid_rate_options;
  hybrid_rate_options.settings = rate_settings;
  hybrid_rate_options.dedup_id = counter_options.dedup_id;  // fresh per process start
  distkit::core::HybridRateLimiter hybrid_rate_limiter(&executor, hybrid_rate_options);
  hybrid_rate_limiter.Start();
  rate_limiters.hybrid = &hybrid_rate_limiter;

  auto fail_start = [&](const absl::Status& status) {
    spdlog::error("{}", status.ToString());
    counters.Shutdown(std::chrono::milliseconds(0));
    icounters.StopWithoutDeregistering();
    executor.Stop();
    return 1;
  };
  // Declared after what it reads and before the server that records into it.
  distkit::transport::Metrics metrics({&counters.stats(), &executor.stats(), &executor,
                                       &icounters.stats(), &local_rate_limiter.stats(),
                                       &redis_rate_limiter.stats(), &hybrid_rate_limiter.stats()});
  if (!config->metrics_listen.empty()) {
    if (auto st = metrics.Listen(config->metrics_listen); !st.ok()) return fail_start(st);
    spdlog::info("Prometheus metrics on http://{}/metrics", metrics.address());
  }
  auto server = distkit::transport::Server::Start(*config, &counters, &executor, &metrics,
                                                  &icounters, rate_limiters);
  if (!server.ok()) return fail_start(server.status());
  spdlog::info("distkitd serving on {} (instance {})", fmt::join(config->listen, ","),
               config->instance_id);

  int sig = 0;
  sigwait(&signals, &sig);
  const auto start = std::chrono::steady_clock::now();
  const auto grace = std::chrono::milliseconds(config->shutdown_grace_ms);
  spdlog::info("signal {}: shutting down (grace {} ms)", sig, grace.count());

  // 1. NOT_SERVING, stop accepting, let in-flight RPCs finish (half the grace at most).
  (*server)->Shutdown(std::chrono::system_clock::now() + grace / 2);
  // 2. Flush every pending lax delta with what is left of the grace.
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      grace - (std::chrono::steady_clock::now() - start));
  const int64_t unflushed = counters.Shutdown(std::max(left, std::chrono::milliseconds(1)));
  auto grace_left = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
        grace - (std::chrono::steady_clock::now() - start));
  };
  // 3. HYBRID: push the usage Redis has not seen yet (admitted since the last sync) and give
  //    every lease back, so the other daemons can use the whole remaining capacity at once.
  if (const int64_t held =
          hybrid_rate_limiter.Shutdown(std::max(grace_left(), std::chrono::milliseconds(200)));
      held > 0) {
    spdlog::warn(
        "{} HYBRID rate-limit key(s) not synced before exit (Redis unreachable): their "
        "last usage is not counted by the other daemons",
        held);
  }
  // 4. Remove this instance's slices and deregister (what is left of the grace, at least 1 s).
  icounters.Shutdown(std::max(grace_left(), std::chrono::milliseconds(1000)));
  executor.Stop();
  if (unflushed > 0) {
    spdlog::error("exiting with {} key(s) of lax increments not flushed (Redis unreachable)",
                  unflushed);
    return 1;
  }
  spdlog::info("clean shutdown: every lax increment flushed");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
