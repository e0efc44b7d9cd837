#include "daemon/transport/metrics.h"

#include <CivetServer.h>
#include <civetweb.h>
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <exception>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/common/logging.h"
#include "daemon/core/counters.h"
#include "daemon/core/hybrid_rate_limiter.h"
#include "daemon/core/instance_counters.h"
#include "daemon/core/local_rate_limiter.h"
#include "daemon/core/redis_rate_limiter.h"
#include "daemon/redis/executor.h"
#include "daemon/redis/redis_client.h"

namespace distkit::transport {
namespace {

constexpr std::array<std::string_view, RpcMetrics::kCodes> kCodeNames = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

// The core and redis statistics are plain atomics owned by those layers; they are read at
// scrape time, so /metrics is always current and nothing runs between scrapes.
class StatsCollector final : public prometheus::Collectable {
 public:
  explicit StatsCollector(Metrics::Sources sources) : s_(sources) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out;
    if (s_.counters != nullptr) {
      const core::CountersStats& c = *s_.counters;
      AddGauge(&out, "distkit_lax_dirty_keys",
               "Keys holding LAX increments not yet flushed to Redis.",
               c.dirty_keys.load(std::memory_order_relaxed));
      AddGauge(&out, "distkit_lax_cached_keys",
               "Keys held in the LAX store (sampled once a second).",
               c.cached_keys.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_lax_flush_commands_total", "LAX flush scripts sent to Redis.",
                 c.flush_commands.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_lax_flush_failures_total",
                 "LAX flush scripts that failed (their deltas are kept and retried).",
                 c.flush_failures.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_lax_dropped_overflow_total",
                 "LAX deltas dropped because the Redis value would overflow int64.",
                 c.dropped_overflow.load(std::memory_order_relaxed));
    }
    if (s_.instance_counters != nullptr) {
      const core::InstanceCountersStats& i = *s_.instance_counters;
      AddGauge(&out, "distkit_icounter_lax_dirty_keys",
               "Instance-aware keys holding LAX work not yet flushed to Redis.",
               i.dirty_keys.load(std::memory_order_relaxed));
      AddGauge(&out, "distkit_icounter_cached_keys",
               "Instance-aware keys held in memory (sampled once a second).",
               i.cached_keys.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_icounter_flush_commands_total",
                 "Instance-aware LAX flush scripts sent to Redis.",
                 i.flush_commands.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_icounter_flush_failures_total",
                 "Instance-aware LAX flushes that failed (kept and retried).",
                 i.flush_failures.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_icounter_dropped_overflow_total",
                 "Instance-aware LAX operations dropped because a value would overflow int64.",
                 i.dropped_overflow.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_icounter_heartbeats_total", "Successful liveness heartbeats.",
                 i.heartbeats.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_icounter_reaper_passes_total", "Completed reaper passes.",
                 i.reaper_passes.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_icounter_reaped_instances_total",
                 "Dead instance incarnations fully cleaned up by this daemon.",
                 i.reaped_instances.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_icounter_reaped_slices_total",
                 "Slices of dead instances removed by this daemon's reaper.",
                 i.reaped_slices.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_icounter_declared_dead_total",
                 "Times this daemon found itself declared dead (then recovered).",
                 i.declared_dead.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_icounter_restored_slices_total", "Slices written back by recovery.",
                 i.restored_slices.load(std::memory_order_relaxed));
    }
    if (s_.local_rate_limiter != nullptr) {
      const core::LocalRateLimiterStats& l = *s_.local_rate_limiter;
      AddGauge(&out, "distkit_ratelimit_local_keys",
               "LOCAL rate-limit keys (namespace, key, strategy) held in memory.",
               l.keys.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_ratelimit_local_evicted_total",
                 "LOCAL rate-limit keys removed by the idle sweep.",
                 l.swept.load(std::memory_order_relaxed));
    }
    if (s_.redis_rate_limiter != nullptr) {
      AddCounter(&out, "distkit_ratelimit_redis_failures_total",
                 "REDIS rate-limit calls Redis could not answer (Inc answered by "
                 "--rate_limit_failure_mode, Get failed).",
                 s_.redis_rate_limiter->redis_failures.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_ratelimit_redis_inc_calls_total",
                 "REDIS rate-limit script calls for Inc (one per call, however many requests "
                 "it carried).",
                 s_.redis_rate_limiter->inc_calls.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_ratelimit_redis_coalesced_total",
                 "REDIS rate-limit Inc requests that shared a script call with other requests "
                 "of the same key.",
                 s_.redis_rate_limiter->coalesced.load(std::memory_order_relaxed));
    }
    if (s_.hybrid_rate_limiter != nullptr) {
      const core::HybridRateLimiterStats& h = *s_.hybrid_rate_limiter;
      AddGauge(&out, "distkit_ratelimit_hybrid_keys",
               "HYBRID rate-limit key states held in memory.",
               h.keys.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_ratelimit_hybrid_syncs_total",
                 "HYBRID sync scripts sent to Redis (usage pushed, lease renewed).",
                 h.syncs.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_ratelimit_hybrid_sync_failures_total",
                 "HYBRID syncs that failed (Redis down or late); answers are degraded until one "
                 "succeeds.",
                 h.sync_failures.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_ratelimit_hybrid_waited_total",
                 "HYBRID requests answered only after waiting for a sync (no valid lease).",
                 h.waited.load(std::memory_order_relaxed));
    }
    if (s_.redis != nullptr) {
      const redis::ExecutorStats& r = *s_.redis;
      AddCounter(&out, "distkit_redis_commands_total", "Commands written to Redis.",
                 r.commands.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_redis_timeouts_total",
                 "Redis commands that missed --redis_timeout_ms (the connection is then reset).",
                 r.timeouts.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_redis_reconnects_total",
                 "Redis connections lost or failed, each followed by a reconnection attempt.",
                 r.reconnects.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_redis_noscript_retries_total",
                 "Scripts resent as EVAL after a NOSCRIPT reply.",
                 r.noscript_retries.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_redis_inline_commands_total",
                 "Commands a gRPC handler thread ran itself (the inline path: alone, nothing "
                 "else in flight).",
                 r.inline_commands.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_redis_inline_lent_total",
                 "Inline commands whose reply came after --redis_inline_wait_us and was awaited "
                 "by the Redis loop thread.",
                 r.inline_lent.load(std::memory_order_relaxed));
      AddGauge(&out, "distkit_redis_nodes",
               "Redis primaries connected (standalone: 1 while connected).",
               static_cast<double>(r.nodes.load(std::memory_order_relaxed)));
      auto& redirects =
          Add(&out, "distkit_redis_redirects_total", "Redis Cluster redirects followed, by kind.",
              prometheus::MetricType::Counter);
      redirects.label = {{"kind", "moved"}};
      redirects.counter.value = static_cast<double>(r.moved.load(std::memory_order_relaxed));
      auto& ask = out.back().metric.emplace_back();
      ask.label = {{"kind", "ask"}};
      ask.counter.value = static_cast<double>(r.ask.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_redis_topology_refreshes_total",
                 "Redis Cluster topology reads (CLUSTER SHARDS): on MOVED, on a lost node and "
                 "every 10 s.",
                 r.topology_refreshes.load(std::memory_order_relaxed));
      AddCounter(&out, "distkit_redis_cluster_retries_total",
                 "Commands retried after TRYAGAIN or CLUSTERDOWN.",
                 r.tryagain.load(std::memory_order_relaxed));
    }
    if (s_.redis_health != nullptr) {
      AddGauge(&out, "distkit_redis_up", "1 while Redis is connected and answers its health PING.",
               s_.redis_health->Healthy() ? 1 : 0);
    }
    return out;
  }

 private:
  static prometheus::ClientMetric& Add(std::vector<prometheus::MetricFamily>* out, std::string name,
                                       std::string help, prometheus::MetricType type) {
    out->push_back({std::move(name), std::move(help), type, {}});
    return out->back().metric.emplace_back();
  }
  static void AddGauge(std::vector<prometheus::MetricFamily>* out, std::string name,
                       std::string help, double value) {
    Add(out, std::move(name), std::move(help), prometheus::MetricType::Gauge).gauge.value = value;
  }
  static void AddCounter(std::vector<prometheus::MetricFamily>* out, std::string name,
                         std::string help, double value) {
    Add(out, std::move(name), std::move(help), prometheus::MetricType::Counter).counter.value =
        value;
  }

  const Metrics::Sources s_;
};

// Each civetweb thread serves one connection at a time, and a connection that sends nothing holds
// its thread until civetweb's request timeout (default 30 s): two idle TCP connections blocked
// every scrape of a 2-thread server. A request (headers) must now arrive within 3 s, far more
// than a scraper needs; a few more threads keep scrapes going beside a few idle connections.
constexpr int kMetricsThreads = 4;
constexpr int kMetricsRequestTimeoutMs = 3000;

// civetweb reports why it cannot listen only through its log callback. While Listen() builds the
// server, this thread collects the messages; later ones (request errors, from civetweb threads)
// go to our log.
thread_local std::vector<std::string>* t_listen_errors = nullptr;
LogEvery g_http_log(std::chrono::seconds(10));

int OnCivetLog(const mg_connection* /*conn*/, const char* message) {
  if (t_listen_errors != nullptr) {
    t_listen_errors->emplace_back(message);
  } else if (g_http_log.ShouldLog()) {
    spdlog::warn("metrics HTTP server: {}", message);
  }
  return 1;  // handled: civetweb prints nothing itself
}

}  // namespace

std::string_view GrpcCodeName(int code) {
  if (code < 0 || code >= RpcMetrics::kCodes) return "UNKNOWN";
  return kCodeNames[code];
}

void RpcMetrics::Record(size_t method, grpc::StatusCode code,
                        std::chrono::nanoseconds elapsed) const {
  const Method& m = methods_[method];
  const auto c = static_cast<unsigned>(code);
  m.calls[c < kCodes ? c : static_cast<unsigned>(grpc::StatusCode::UNKNOWN)]->Increment();
  m.duration->Observe(std::chrono::duration<double>(elapsed).count());
}

void RateLimitMetrics::Record(size_t provider, size_t strategy, size_t decision,
                              bool degraded) const {
  if (provider >= kProviders || strategy >= kStrategies || decision >= kDecisions) return;
  decisions_[(provider * kStrategies + strategy) * kDecisions + decision]->Increment();
  if (degraded) degraded_[provider]->Increment();
}

Metrics::Metrics() : Metrics(Sources{}) {}

Metrics::Metrics(Sources sources)
    : registry_(std::make_shared<prometheus::Registry>()),
      stats_(std::make_shared<StatsCollector>(sources)) {
  rpc_total_ = &prometheus::BuildCounter()
                    .Name("distkit_rpc_total")
                    .Help("Finished RPCs by service, method and gRPC status code.")
                    .Register(*registry_);
  rpc_duration_ = &prometheus::BuildHistogram()
                       .Name("distkit_rpc_duration_seconds")
                       .Help("RPC duration from handler entry to completion, in seconds.")
                       .Register(*registry_);
  batch_items_ = &prometheus::BuildCounter()
                      .Name("distkit_batch_items_total")
                      .Help("Operations received in Batch RPCs.")
                      .Register(*registry_);
  auto& decisions = prometheus::BuildCounter()
                        .Name("distkit_ratelimit_decisions_total")
                        .Help(
                            "Rate-limit Inc answers by provider, strategy and decision "
                            "(suppressed = a SUPPRESSED answer, admitted or declined).")
                        .Register(*registry_);
  auto& degraded = prometheus::BuildCounter()
                       .Name("distkit_ratelimit_degraded_total")
                       .Help(
                           "Rate-limit answers not given by the configured provider "
                           "(degraded = true, e.g. Redis unreachable).")
                       .Register(*registry_);
  using R = RateLimitMetrics;
  for (size_t p = 0; p < R::kProviders; ++p) {
    const std::string provider(R::kProviderNames[p]);
    rate_limit_.degraded_[p] = &degraded.Add({{"provider", provider}});
    for (size_t s = 0; s < R::kStrategies; ++s) {
      for (size_t d = 0; d < R::kDecisions; ++d) {
        rate_limit_.decisions_[(p * R::kStrategies + s) * R::kDecisions + d] =
            &decisions.Add({{"provider", provider},
                            {"strategy", std::string(R::kStrategyNames[s])},
                            {"decision", std::string(R::kDecisionNames[d])}});
      }
    }
  }
  rls_decisions_ = &prometheus::BuildCounter()
                        .Name("distkit_rls_decisions_total")
                        .Help(
                            "ShouldRateLimit descriptor decisions by domain, rule (the rule's "
                            "name or path in its file) and code (OVER_LIMIT also when "
                            "shadow_mode answered OK).")
                        .Register(*registry_);
  rls_reload_failures_ = &prometheus::BuildCounter()
                              .Name("distkit_rls_config_reload_failures_total")
                              .Help("RLS rule reloads refused (the previous rules kept).")
                              .Register(*registry_)
                              .Add({});
}

Metrics::~Metrics() { exposer_.reset(); }  // no scrape may run while the rest is destroyed

absl::Status Metrics::Listen(const std::string& address) {
  auto fail = [&](const std::string& why) {
    return absl::UnavailableError(
        absl::StrCat("--metrics_listen ", address, ": cannot serve /metrics: ", why));
  };
  if (!address.empty() && address.front() == '[' && mg_check_feature(8 /* IPv6 */) == 0) {
    return fail(
        "IPv6 is not supported (the system's civetweb is built without it); use an IPv4 "
        "address or a host name");
  }
  CivetCallbacks callbacks;
  callbacks.log_message = &OnCivetLog;
  std::vector<std::string> errors;
  t_listen_errors = &errors;
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", address, "num_threads",
                                 std::to_string(kMetricsThreads), "request_timeout_ms",
                                 std::to_string(kMetricsRequestTimeoutMs)},
        &callbacks);
  } catch (const std::exception& e) {
    if (errors.empty()) errors.emplace_back(e.what());
  }
  t_listen_errors = nullptr;
  if (!exposer_) return fail(absl::StrJoin(errors, "; "));
  exposer_->RegisterCollectable(registry_);
  exposer_->RegisterCollectable(stats_);
  const std::vector<int> ports = exposer_->GetListeningPorts();
  address_ =
      ports.empty() ? address : absl::StrCat(address.substr(0, address.rfind(':')), ":", ports[0]);
  return absl::OkStatus();
}

const RpcMetrics& Metrics::Rpc(std::string_view service,
                               std::span<const std::string_view> methods) {
  const prometheus::Histogram::BucketBoundaries buckets(kRpcDurationBuckets.begin(),
                                                        kRpcDurationBuckets.end());
  auto rpc = std::make_unique<RpcMetrics>();
  for (std::string_view method : methods) {
    RpcMetrics::Method& m = rpc->methods_.emplace_back();
    const prometheus::Labels labels = {{"service", std::string(service)},
                                       {"method", std::string(method)}};
    for (int code = 0; code < RpcMetrics::kCodes; ++code) {
      prometheus::Labels with_code = labels;
      with_code.emplace("code", std::string(GrpcCodeName(code)));
      m.calls[code] = &rpc_total_->Add(with_code);
    }
    m.duration = &rpc_duration_->Add(labels, buckets);
  }
  rpc_.push_back(std::move(rpc));
  return *rpc_.back();
}

prometheus::Counter& Metrics::RlsDecision(std::string_view domain, std::string_view rule,
                                          std::string_view code) {
  return rls_decisions_->Add(
      {{"domain", std::string(domain)}, {"rule", std::string(rule)}, {"code", std::string(code)}});
}

prometheus::Counter& Metrics::BatchItems(std::string_view service) {
  return batch_items_->Add({{"service", std::string(service)}});
}

std::string Metrics::Text() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (auto& f : stats_->Collect()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace distkit::transport
