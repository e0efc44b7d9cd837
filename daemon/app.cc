#include "daemon/app.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/common/logging.h"

namespace distkit {
namespace {

using std::chrono::milliseconds;

// REDIS for the RLS rules of one unit, with the LOCAL state its `local` failure mode decides
// with (a provider's window is fixed, so each unit has its own pair).
class RlsRedisProvider final : public core::RateLimiter {
 public:
  RlsRedisProvider(redis::RedisClient* redis, const core::RateLimitSettings& settings,
                   core::RateFailureMode mode, core::RandomSource* random,
                   core::LocalRateLimiterOptions local)
      : fallback_(std::move(local)), redis_(redis, settings, mode, random, &fallback_) {}
  void Inc(const core::RateIncRequest& req, core::RateIncCallback done) override {
    redis_.Inc(req, std::move(done));
  }
  void Get(const std::string& ns, const std::string& key, core::RateStrategy strategy,
           core::RateGetCallback done) override {
    redis_.Get(ns, key, strategy, std::move(done));
  }

 private:
  core::LocalRateLimiter fallback_;
  core::RedisRateLimiter redis_;
};

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
  // The RLS rules first: a bad file exits 2 at once, before any connection is tried.
  std::shared_ptr<const core::RlsConfig> rls_rules;
  if (!c.rls_config.empty()) {
    auto rules = core::LoadRlsConfig(c.rls_config);
    if (!rules.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--rls_config: ", rules.status().message()));
    }
    rls_rules = *std::move(rules);
    absl::MutexLock lock(&app->rls_reload_mu_);
    app->rls_stamp_ = core::RlsConfigStamp(c.rls_config);
  }

  redis::ExecutorOptions redis_options;
  redis_options.seeds = c.redis_seeds;
  redis_options.mode = c.redis_mode;
  redis_options.tls = c.redis_tls;
  redis_options.command_timeout = milliseconds(c.redis_timeout_ms);
  redis_options.inline_wait = std::chrono::microseconds(c.redis_inline_wait_us);
  redis_options.inline_spin = std::chrono::microseconds(c.redis_inline_spin_us);
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

  if (rls_rules != nullptr) {
    // One provider per unit of the rules, built on first use, with the daemon's provider
    // settings but the unit's window (docs/rls.md).
    core::RlsLimiter::Factory factory =
        [a = app.get(), &c, hooks,
         random](const core::RateLimitSettings& s) -> std::unique_ptr<core::RateLimiter> {
      core::LocalRateLimiterOptions local;
      local.settings = s;
      local.sweep_interval_ms = hooks.local_sweep_interval_ms;
      if (hooks.local_rate_clock != nullptr) local.clock = hooks.local_rate_clock;
      local.random = random;
      local.max_keys = c.max_rate_limit_keys;
      switch (c.rls_provider) {
        case config::RlsProvider::kLocal:
          return std::make_unique<core::LocalRateLimiter>(local);
        case config::RlsProvider::kHybrid: {
          core::HybridRateLimiterOptions o;
          o.settings = s;
          o.dedup_id = config::NewUuidV4();
          o.random = random;
          o.max_keys = c.max_rate_limit_keys;
          auto h = std::make_unique<core::HybridRateLimiter>(a->executor_.get(), o);
          h->Start();
          return h;
        }
        case config::RlsProvider::kRedis:
          break;
      }
      return std::make_unique<RlsRedisProvider>(a->executor_.get(), s,
                                                ToCore(c.rate_limit_failure_mode), random, local);
    };
    app->rls_limiter_ =
        std::make_unique<core::RlsLimiter>(std::move(rls_rules), rate_settings, std::move(factory));
  }

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
    auto server =
        transport::Server::Start(c, app->counters_.get(), app->executor_.get(), app->metrics_.get(),
                                 app->icounters_.get(), limiters, app->rls_limiter_.get());
    if (!server.ok()) return failed(server.status());
    app->server_ = std::move(*server);
  }
  if (app->rls_limiter_) {
    // A changed rule file is picked up within a second (SIGHUP: at once, see main.cc).
    app->rls_reload_task_ = std::make_unique<PeriodicTask>(
        milliseconds(1000), [a = app.get()] { a->ReloadRlsIfChanged(); });
    app->rls_reload_task_->Start();
  }
  return app;
}

absl::Status App::ReloadRls() {
  if (!rls_limiter_) return absl::OkStatus();
  absl::MutexLock lock(&rls_reload_mu_);
  // Stamped before reading: a write racing the load is seen again by the next poll.
  auto stamp = core::RlsConfigStamp(config_.rls_config);
  auto rules = core::LoadRlsConfig(config_.rls_config);
  rls_stamp_ = std::move(stamp);
  if (!rules.ok()) {
    metrics_->RlsReloadFailures().Increment();
    spdlog::error("--rls_config reload refused, keeping the previous rules: {}",
                  std::string(rules.status().message()));
    return rules.status();
  }
  rls_limiter_->Swap(*std::move(rules));
  spdlog::info("--rls_config reloaded from {}", config_.rls_config);
  return absl::OkStatus();
}

void App::ReloadRlsIfChanged() {
  {
    absl::MutexLock lock(&rls_reload_mu_);
    if (core::RlsConfigStamp(config_.rls_config) == rls_stamp_) return;
  }
  (void)ReloadRls();
}

App::~App() {
  if (!stopped_) Abandon();
}

void App::StopServing(std::chrono::system_clock::time_point deadline) {
  if (rls_reload_task_) rls_reload_task_->Stop();
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
  if (rls_limiter_) {
    rls_limiter_->ForEachProvider([&](core::RateLimiter& p) {
      if (auto* h = dynamic_cast<core::HybridRateLimiter*>(&p)) {
        report.unsynced_hybrid_keys += h->Shutdown(left(milliseconds(200)));
      }
    });
  }
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
