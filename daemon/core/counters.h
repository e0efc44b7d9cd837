#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "daemon/common/periodic_task.h"
#include "daemon/common/sharded_map.h"
#include "daemon/core/counter_script.h"
#include "daemon/core/lax_store.h"
#include "daemon/core/types.h"
#include "daemon/redis/redis_client.h"

namespace distkit::core {

struct CountersOptions {
  // Identity of this daemon process in the dedup marks of lax flushes. Must be fresh per
  // process start (sequence numbers restart at 1), so it is not the --instance_id.
  std::string dedup_id;
  int64_t flush_interval_ms = 20;
  int64_t allowed_lag_ms = 20;
  int64_t max_pending_keys = 1000000;  // keys with unflushed lax work; more = RESOURCE_EXHAUSTED
  int64_t idle_evict_ms = 10000;       // clean cache entries idle this long are dropped
  int64_t max_keys = 1000000;  // LAX entries held (--max_lax_keys); a new key beyond it is refused
  // --lax_resend_bound_ms: an unacknowledged LAX entry is sent under its seq for this long after
  // its first send (Redis time); counter.lua refuses it later, and collects our dedup mark
  // 2 × this after its last write (docs/design.md, "Dedup marks"). 0 = no bound (tests with a
  // fake Redis): entries are resent forever and our marks are never collected.
  int64_t resend_bound_ms = 0;
};

struct CountersStats {
  std::atomic<uint64_t> flush_commands{0};
  std::atomic<uint64_t> flush_failures{0};
  std::atomic<uint64_t> dropped_overflow{0};   // lax deltas Redis refused (int64 overflow)
  std::atomic<int64_t> dirty_keys{0};          // keys with unflushed lax work
  std::atomic<int64_t> cached_keys{0};         // entries held (the count --max_lax_keys bounds)
  std::atomic<uint64_t> flush_data_errors{0};  // flushes refused by the key's data (backed off)
  std::atomic<uint64_t> resent_stale{0};       // entries past the resend bound sent under new seqs
  std::atomic<uint64_t> given_up{0};           // entries past the bound whose fate was unknown
};

// Plain counters (docs/api.md#strict-and-lax). STRICT operations are one counter.lua call each; LAX
// increments live in a sharded in-memory store and are flushed by a background thread every
// flush interval, exactly once (see lax_store.h). Thread-safe. Callbacks run either inline
// (LAX answered from memory) or on the Redis loop thread, never under a lock of ours.
class Counters {
 public:
  Counters(redis::RedisClient* redis, CountersOptions options, const Clock* clock = &SystemClock());
  ~Counters();

  void Start();  // starts the flush thread
  // Stops the flush thread, then flushes until nothing is pending or `timeout` passes (a key
  // whose data cannot be read gets one more try, not the whole grace). Logs each key left with
  // its delta and cause. Returns the number of keys still holding unflushed work (0 = nothing
  // lost); `broken`, if given, gets how many of them failed on their data, not on an outage.
  int64_t Shutdown(std::chrono::milliseconds timeout, int64_t* broken = nullptr);

  // Names must already be validated (see validation.h).
  void Inc(const std::string& ns, const std::string& key, int64_t delta, Consistency c,
           Condition cond, CounterCallback done);
  void Get(const std::string& ns, const std::string& key, Consistency c, CounterCallback done);
  // The synchronous fast path of Inc: the result when it can be given from memory right now
  // (LAX, key already known), nullopt when the caller must use Inc. Saves the callback.
  std::optional<absl::StatusOr<CounterResult>> TryInc(const std::string& ns, const std::string& key,
                                                      int64_t delta, Consistency c, Condition cond);
  void Set(const std::string& ns, const std::string& key, int64_t value, Condition cond,
           CounterCallback done);
  void Del(const std::string& ns, const std::string& key, CounterCallback done);
  void Clear(const std::string& ns, StatusCallback done);

  // Sends every key's pending work (called by the flush thread; public for tests).
  void FlushNow();
  // Drops clean entries idle longer than idle_evict_ms, shrinking shards left sparse (called by
  // the flush thread every second; public for tests).
  void EvictIdleNow() { EvictIdle(); }
  // Slots allocated over all shards (tests: the maps shrink after an eviction).
  size_t capacity();

  const CountersStats& stats() const { return stats_; }

 private:
  // Keyed by the (namespace, key) pair, not a joined string: either may contain NUL.
  using MapKey = std::pair<std::string, std::string>;
  using Shard = LockedMap<absl::flat_hash_map<MapKey, LaxEntry>>;

  Shard& ShardFor(const MapKey& k);
  int64_t Now() const { return clock_->NowNs(); }
  bool Fresh(const LaxEntry& e, int64_t now) const;

  // Strict path: one counter.lua call that first applies this daemon's lax work for the key.
  void RunStrict(const MapKey& k, std::string_view op, Condition cond, int64_t arg,
                 CounterCallback done);
  // Lax path helpers.
  // may_read: a key with a data error whose backoff passed may be re-read first (false after
  // that read, so one call reads at most once).
  void LaxInc(const MapKey& k, int64_t delta, Condition cond, CounterCallback done,
              bool may_read = true);
  std::optional<absl::StatusOr<CounterResult>> TryLaxInc(const MapKey& k, int64_t delta,
                                                         Condition cond, bool may_read);
  void LaxGet(const MapKey& k, CounterCallback done);
  // Starts a shared refresh of `k` unless one is running; runs `then` after it (any outcome).
  void RefreshThen(const MapKey& k, absl::AnyInvocable<void()> then);
  void SendFlush(const MapKey& k, std::vector<SeqDelta> carried);
  void ClearScan(const std::string& ns, StatusCallback done);
  // A command that carried `carried` for `k` finished with `r`: update the entry.
  void SettleCarrier(const MapKey& k, const std::vector<SeqDelta>& carried,
                     const absl::StatusOr<ScriptReply>& r, bool maybe_sent);
  // counter.lua refused `carried` as past the resend bound: resolve them (lax_store.h OnStale).
  void SettleStale(const MapKey& k, const std::vector<SeqDelta>& carried, const ScriptReply& r);
  void EvictIdle();
  // Keys with unflushed work: {total, with a data error}; logs each (key, delta, cause) if
  // `log` (at most kMaxLoggedKeys lines, then a summary).
  std::pair<int64_t, int64_t> CountUnflushed(bool log);
  // Redis time now, estimated from the last script reply (a lower bound); nullopt before one.
  std::optional<int64_t> RedisNowMs();
  void NoteRedisTime(const absl::StatusOr<ScriptReply>& r);
  // The entry of `k`, created unless that would pass max_keys (then RESOURCE_EXHAUSTED).
  absl::StatusOr<LaxEntry*> FindOrCreate(Shard& shard, const MapKey& k)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void UpdateDirty(bool was_dirty, bool is_dirty);

  redis::RedisClient* const redis_;
  const CountersOptions options_;
  const Clock* const clock_;
  CountersStats stats_;
  std::atomic<uint64_t> next_seq_{1};
  std::atomic<int64_t> outstanding_flushes_{0};
  RedisTimeEstimate redis_time_;
  static constexpr int kShards = 64;
  Sharded<Shard, kShards> shards_;

  PeriodicTask flush_task_;  // FlushNow every flush interval, EvictIdle at most every second
};

}  // namespace distkit::core
