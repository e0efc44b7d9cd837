#pragma once

// HYBRID rate limiting (docs/api.md#providers): decisions from daemon memory, usage synced with
// Redis every --sync_interval_ms by lua/ratelimit_hybrid.lua. The protocol, the lease rule that
// bounds the global overshoot, and the failure behaviour: docs/rate_limiting.md, section HYBRID.
//
// In short: each daemon key state holds a *lease*, units it may admit from memory until its
// next sync. Redis grants a lease only out of what is neither used in the window nor leased to
// another daemon, and at most a fair share ceil((capacity − used) / active daemons). Every unit
// admitted from memory is therefore covered by a lease until the sync that carries it lands in
// a bucket, and used + Σ leases ≤ capacity holds in Redis after every sync: with Redis
// reachable, no daemon count can admit more than the capacity in any window of W − B ms.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/common/periodic_task.h"
#include "daemon/common/sharded_map.h"
#include "daemon/core/rate_limit.h"
#include "daemon/core/redis_keys.h"  // HybridRateLimitKey
#include "daemon/core/types.h"
#include "daemon/redis/redis_client.h"

namespace distkit::core {

// Capacities (and SUPPRESSED hard limits) above this are taken as this: the script adds units
// as Lua doubles, and used + every lease must stay exact (far below 2^53).
inline constexpr uint64_t kHybridMaxCapacity = uint64_t{1} << 50;

struct HybridRateLimiterOptions {
  RateLimitSettings settings;
  // Names this daemon's key states in Redis; fresh per process start (a UUID), because the
  // usage counters behind the exactly-once push restart at 0.
  std::string dedup_id;
  // How long after a sync was sent its lease may be used; 0 = derived from the sync interval
  // (20 intervals, within [200 ms, 5 s], and at least 3 intervals). A daemon that cannot sync
  // for this long stops using its lease (and falls back to its degraded budget).
  int64_t lease_ms = 0;
  // Redis keeps a lease reserved (and its daemon counted as active) this much longer than the
  // daemon uses it: a margin for clock-rate differences. 0 = max(50 ms, lease_ms / 4).
  int64_t lease_grace_ms = 0;
  RandomSource* random = nullptr;  // nullptr = DefaultRandom()
  // Bound on the key states held (--max_rate_limit_keys): an Inc that would create one more gets
  // RESOURCE_EXHAUSTED; keys already held keep working. Concurrent first Incs may pass it by a few.
  int64_t max_keys = 1000000;
};

struct HybridRateLimiterStats {
  std::atomic<uint64_t> syncs{0};          // script calls sent
  std::atomic<uint64_t> sync_failures{0};  // of which failed (Redis down, timeout, bad reply)
  std::atomic<uint64_t> waited{0};         // requests answered after waiting for a sync
  std::atomic<uint64_t> degraded{0};       // answers with degraded = true
  std::atomic<int64_t> keys{0};            // key states held in memory
};

class HybridRateLimiter final : public RateLimiter {
 public:
  HybridRateLimiter(redis::RedisClient* redis, HybridRateLimiterOptions options,
                    const Clock* clock = &SystemClock());
  ~HybridRateLimiter() override;  // stops the sync thread and waits for outstanding replies

  void Start();  // starts the sync thread (every sync interval; idle keys evicted every second)
  // Stops the sync thread, then pushes the usage Redis has not seen yet and releases every lease,
  // until nothing is left or `timeout` passes. Returns the key states still holding usage.
  int64_t Shutdown(std::chrono::milliseconds timeout);

  std::optional<absl::StatusOr<RateIncResult>> TryInc(const RateIncRequest& req) override;
  void Inc(const RateIncRequest& req, RateIncCallback done) override;
  void Get(const std::string& ns, const std::string& key, RateStrategy strategy,
           RateGetCallback done) override;

  // One sync pass over every key state that needs one (the thread calls it; public for tests).
  void SyncNow();
  // Drops key states idle for the eviction period with nothing left to push, shrinking shards
  // left sparse (public for tests).
  void EvictIdle();
  // Slots allocated over all shards (tests: the maps shrink after an eviction).
  size_t capacity();

  int64_t lease_ms() const { return lease_ms_; }
  int64_t outstanding() const { return outstanding_.load(); }
  const HybridRateLimiterStats& stats() const { return stats_; }

  // Internals, defined in the .cc (public so its helpers can name them).
  struct MapKey;    // (strategy, namespace, key)
  struct KeyState;  // the state of one MapKey
  struct SyncCall;

 private:
  struct Shard;
  struct Outcome;

  Shard& ShardFor(RateStrategy strategy, std::string_view ns, std::string_view key);
  int64_t NowNs() const { return clock_->NowNs(); }
  // The decision for `req` from memory, or "needs a sync" when `may_sync` and a sync could
  // change the answer (no valid lease, or the request would fit in the free capacity).
  Outcome Decide(KeyState& st, const RateIncRequest& req, int64_t now_ns, bool may_sync);
  bool NeedsPeriodicSync(const KeyState& st, int64_t now_ns) const;
  // Marks `st` in flight and returns the script call to send (after the shard lock is released).
  SyncCall BeginSync(const MapKey& key, KeyState& st, int64_t now_ns);
  void Send(SyncCall call);
  void Complete(const SyncCall& call, absl::StatusOr<redis::Reply> raw);

  redis::RedisClient* const redis_;
  const HybridRateLimiterOptions options_;
  const RateLimitSettings& s_;
  const Clock* const clock_;
  RandomSource& random_;
  const int64_t lease_ms_;
  const int64_t lease_grace_ms_;
  const int64_t active_ms_;  // a key with a request this recent asks for a lease
  const int64_t idle_evict_ms_;
  HybridRateLimiterStats stats_;
  std::atomic<uint64_t> next_serial_{1};
  std::atomic<uint64_t> next_sync_id_{1};
  std::atomic<int64_t> outstanding_{0};
  std::atomic<bool> releasing_{false};  // Shutdown: every sync gives its lease back
  static constexpr int kShards = 64;
  Sharded<Shard, kShards> shards_;

  PeriodicTask sync_task_;  // SyncNow every sync interval, EvictIdle at most every second
};

}  // namespace distkit::core
