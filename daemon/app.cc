#include "daemon/app.h"

#include <algorithm>
#include <utility>

#include "daemon/common/logging.h"

namespace distkit {
namespace {

using std::chrono::milliseconds;

core::RateFailureMode ToCore(config::FailureMode mode) {
  switch (mode) {
    case config::FailureMode::kClosed:
      return core::RateFailureMode::kClosed;
    case config::FailureMode::kLocal:
      return core::RateFailureMode::kLocal;
    case config::FailureMode::kOpen:
      break;
  }
  return core::RateFailureMode::kOpen;
}

}  // namespace

absl::StatusOr<std::unique_ptr<App>> App::Create(const config::Config& config, AppHooks hooks) {
  std::unique_ptr<App> app(new App(config));
  config::Config& c = app->config_;
  if (c.instance_id.empty()) c.instance_id = config::NewUuidV4();
  // Names this process's LAX flushes and HYBRID usage in Redis: fresh per start, because the
  // sequence numbers behind both restart at 1 (never --instance_id, which may be reused).
  const std::string dedup_id = config::NewUuidV4();

  redis::ExecutorOptions redis_options;
  redis_options.seeds = c.redis_seeds;
  redis_options.mode = c.redis_mode;
  redis_options.tls = c.redis_tls;
  redis_options.command_timeout = milliseconds(c.redis_timeout_ms);
  app->executor_ = std::make_unique<redis::Executor>(redis_options);
  app->executor_->Start();
  // Cluster or standalone: the first seed that answers decides (or contradicts --redis_mode).
  if (auto mode = app->executor_->AwaitMode(milliseconds(c.redis_timeout_ms)); !mode.ok()) {
    if (mode.status().code() != absl::StatusCode::kDeadlineExceeded) return mode.status();
    spdlog::warn("{}; serving anyway (LAX answers from memory) and retrying",
                 std::string(mode.status().message()));
  }

  core::CountersOptions counter_options;
  counter_options.dedup_id = dedup_id;
  counter_options.flush_interval_ms = c.flush_interval_ms;
  counter_options.allowed_lag_ms = c.allowed_lag_ms;
  counter_options.max_pending_keys = c.max_pending_keys;
  counter_options.max_keys = c.max_lax_keys;
  counter_options.resend_bound_ms = c.lax_resend_bound_ms;
  app->counters_ = std::make_unique<core::Counters>(app->executor_.get(), counter_options);
  app->counters_->Start();

  core::InstanceCountersOptions icounter_options;
  icounter_options.instance_id = c.instance_id;
  icounter_options.dedup_id = dedup_id;
  icounter_options.dead_instance_threshold_ms = c.dead_instance_threshold_ms;
  icounter_options.flush_interval_ms = c.flush_interval_ms;
  icounter_options.allowed_lag_ms = c.allowed_lag_ms;
  icounter_options.max_pending_keys = c.max_pending_keys;
  icounter_options.max_keys = c.max_lax_keys;
  icounter_options.resend_bound_ms = c.lax_resend_bound_ms;
  app->icounters_ =
      std::make_unique<core::InstanceCounters>(app->executor_.get(), icounter_options);
  // Not fatal: without Redis the heartbeat keeps trying to register. Registered before the
  // listeners serve (an instance-counter call never finds it unregistered); a start that fails
  // later deregisters it again (`failed` below).
  if (auto st = app->icounters_->Start(milliseconds(c.redis_timeout_ms)); !st.ok()) {
    spdlog::warn("{}", st.ToString());
  }
  // A daemon that cannot listen leaves no instance behind in Redis.
  auto failed = [&app, &c](absl::Status st) {
    app->icounters_->Shutdown(milliseconds(c.redis_timeout_ms));
    return st;
  };

  core::RateLimitSettings rate_settings;
  rate_settings.window_ms = c.rate_window_seconds * 1000;
  rate_settings.bucket_ms = c.rate_bucket_ms;
  rate_settings.hard_limit_factor = c.hard_limit_factor;
  rate_settings.suppression_cache_ms = c.suppression_cache_ms;
  rate_settings.sync_interval_ms = c.sync_interval_ms;
  core::RandomSource* random = hooks.random != nullptr ? hooks.random : &core::DefaultRandom();

  core::LocalRateLimiterOptions local_options;
  local_options.settings = rate_settings;
  local_options.sweep_interval_ms = hooks.local_sweep_interval_ms;
  if (hooks.local_rate_clock != nullptr) local_options.clock = hooks.local_rate_clock;
  local_options.random = random;
  local_options.max_keys = c.max_rate_limit_keys;
  app->local_rate_limiter_ = std::make_unique<core::LocalRateLimiter>(local_options);
  // REDIS: one ratelimit.lua call per Inc; when Redis cannot answer it follows
  // --rate_limit_failure_mode (`local` decides with the LOCAL provider's state).
  app->redis_rate_limiter_ = std::make_unique<core::RedisRateLimiter>(
      app->executor_.get(), rate_settings, ToCore(c.rate_limit_failure_mode), random,
      app->local_rate_limiter_.get());
  // HYBRID: decisions from memory against a lease, synced every --sync_interval_ms.
  core::HybridRateLimiterOptions hybrid_options;
  hybrid_options.settings = rate_settings;
  hybrid_options.dedup_id = dedup_id;
  hybrid_options.random = random;
  hybrid_options.max_keys = c.max_rate_limit_keys;
  app->hybrid_rate_limiter_ =
      std::make_unique<core::HybridRateLimiter>(app->executor_.get(), hybrid_options);
  app->hybrid_rate_limiter_->Start();

  app->metrics_ = std::make_unique<transport::Metrics>(transport::Metrics::Sources{
      &app->counters_->stats(), &app->executor_->stats(), app->executor_.get(),
      &app->icounters_->stats(), &app->local_rate_limiter_->stats(),
      &app->redis_rate_limiter_->stats(), &app->hybrid_rate_limiter_->stats()});
  if (!c.metrics_listen.empty()) {
    if (auto st = app->metrics_->Listen(c.metrics_listen); !st.ok()) return failed(st);
    spdlog::info("Prometheus metrics on http://{}/metrics", app->metrics_->address());
  }

  if (!c.listen.empty()) {
    transport::RateLimiters limiters;
    limiters.local = app->local_rate_limiter_.get();
    limiters.redis = hooks.redis_rate_limiter.value_or(app->redis_rate_limiter_.get());
    limiters.hybrid = hooks.hybrid_rate_limiter.value_or(app->hybrid_rate_limiter_.get());
    auto server = transport::Server::Start(c, app->counters_.get(), app->executor_.get(),
                                           app->metrics_.get(), app->icounters_.get(), limiters);
    if (!server.ok()) return failed(server.status());
    app->server_ = std::move(*server);
  }
  return app;
}

App::~App() {
  if (!stopped_) Abandon();
}

void App::StopServing(std::chrono::system_clock::time_point deadline) {
  if (server_) server_->Shutdown(deadline);
}

ShutdownReport App::Shutdown(milliseconds grace) {
  ShutdownReport report;
  if (stopped_) return report;
  stopped_ = true;
  const auto start = std::chrono::steady_clock::now();
  auto left = [&](milliseconds at_least) {
    return std::max(at_least, std::chrono::duration_cast<milliseconds>(
                                  grace - (std::chrono::steady_clock::now() - start)));
  };
  StopServing(std::chrono::system_clock::now() + grace / 2);
  report.unflushed_lax_keys = counters_->Shutdown(left(milliseconds(1)), &report.broken_lax_keys);
  report.unsynced_hybrid_keys = hybrid_rate_limiter_->Shutdown(left(milliseconds(200)));
  report.unsettled_instance_keys = icounters_->Shutdown(left(milliseconds(1000)));
  executor_->Stop();
  return report;
}

void App::Abandon() {
  if (stopped_) return;
  stopped_ = true;
  // Also the end of a Create that failed half-way: only what was built exists.
  StopServing(std::chrono::system_clock::now());
  if (counters_) counters_->Shutdown(milliseconds(0));
  if (icounters_) icounters_->StopWithoutDeregistering();
  if (executor_) executor_->Stop();
}

}  // namespace distkit
