#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/common/periodic_task.h"
#include "daemon/common/sharded_map.h"
#include "daemon/core/instance_lax.h"
#include "daemon/core/redis_keys.h"  // InstanceCounterKey, InstanceKeySet
#include "daemon/core/types.h"
#include "daemon/redis/redis_client.h"

namespace distkit::core {

struct InstanceCountersOptions {
  std::string instance_id;  // --instance_id
  std::string dedup_id;     // fresh per process: marks of lax flushes (seqs restart at 1)
  int64_t dead_instance_threshold_ms = 30000;
  int64_t flush_interval_ms = 20;
  int64_t allowed_lag_ms = 20;
  int64_t max_pending_keys = 1000000;  // keys with unflushed lax work; more = RESOURCE_EXHAUSTED
  int64_t idle_evict_ms = 10000;       // entries with nothing to remember, idle this long, go
  // Entries held (--max_lax_keys): a LAX call on a new key beyond it gets RESOURCE_EXHAUSTED.
  int64_t max_keys = 1000000;
  // --lax_resend_bound_ms, as CountersOptions::resend_bound_ms (icounter.lua's q: marks).
  int64_t resend_bound_ms = 0;
};

struct InstanceCountersStats {
  std::atomic<uint64_t> flush_commands{0};
  std::atomic<uint64_t> flush_failures{0};
  std::atomic<uint64_t> dropped_overflow{0};  // lax ops Redis refused (int64 overflow)
  std::atomic<uint64_t> heartbeats{0};        // successful heartbeats
  std::atomic<uint64_t> reaper_passes{0};     // completed reaper passes
  std::atomic<uint64_t> reaped_instances{0};  // dead (id, incarnation)s fully cleaned up
  std::atomic<uint64_t> reaped_slices{0};     // slices removed by this daemon's reaper
  std::atomic<uint64_t> declared_dead{0};     // times this daemon found itself declared dead
  std::atomic<uint64_t> restored_slices{0};   // slices written back by recovery
  std::atomic<int64_t> dirty_keys{0};
  std::atomic<int64_t> cached_keys{0};
  std::atomic<uint64_t> flush_data_errors{0};  // flushes refused by the key's data (backed off)
  std::atomic<uint64_t> resent_stale{0};       // entries past the resend bound sent under new seqs
  std::atomic<uint64_t> given_up{0};           // entries past the bound whose fate was unknown
};

// The five fields of every instance-counter response.
struct InstanceResult {
  int64_t cumulative = 0;
  int64_t instance = 0;
  int64_t previous_cumulative = 0;
  int64_t previous_instance = 0;
  bool applied = true;
};
using InstanceCallback = absl::AnyInvocable<void(absl::StatusOr<InstanceResult>)>;

// Instance-aware counters (docs/api.md#instancecounterservice; layout and protocol:
// docs/instance_counters.md).
// STRICT operations are one lua/icounter.lua call each, which first applies this daemon's LAX
// work for the key. LAX Inc / Get / SetOnInstance are answered from a sharded in-memory store
// and flushed every flush interval, exactly once. Registration, heartbeat, the reaper and
// recovery use lua/liveness.lua with Redis time. Thread-safe; callbacks run inline (LAX from
// memory, refusals) or on the Redis loop thread, never under a lock of ours.
class InstanceCounters {
 public:
  InstanceCounters(redis::RedisClient* redis, InstanceCountersOptions options,
                   const Clock* clock = &SystemClock());
  ~InstanceCounters();

  // Registers this id (new incarnation) and starts the heartbeat, reaper and flush threads. An
  // error is not fatal: the heartbeat thread retries the registration; until then operations
  // fail with UNAVAILABLE.
  absl::Status Start(std::chrono::milliseconds timeout);
  // Stops the threads, flushes the LAX work, removes this instance's slices (del_on_instance)
  // and deregisters. Returns the number of keys whose work or slice could not be settled.
  int64_t Shutdown(std::chrono::milliseconds timeout);
  // Test hook: stops the threads without flushing or removing anything (as if killed).
  void StopWithoutDeregistering();

  // Names must already be validated.
  void Inc(const std::string& ns, const std::string& key, int64_t delta, Consistency c,
           Condition cond, InstanceCallback done);
  void Get(const std::string& ns, const std::string& key, Consistency c, InstanceCallback done);
  void Set(const std::string& ns, const std::string& key, int64_t value, Condition cond,
           InstanceCallback done);
  void SetOnInstance(const std::string& ns, const std::string& key, int64_t value, Consistency c,
                     Condition cond, InstanceCallback done);
  void Del(const std::string& ns, const std::string& key, InstanceCallback done);
  void DelOnInstance(const std::string& ns, const std::string& key, InstanceCallback done);
  void Clear(const std::string& ns, StatusCallback done);
  void ClearOnInstance(const std::string& ns, StatusCallback done);
  // The synchronous fast path of a LAX Inc: the result when memory can answer right now,
  // nullopt when the caller must use Inc.
  std::optional<absl::StatusOr<InstanceResult>> TryLaxInc(const std::string& ns,
                                                          const std::string& key, int64_t delta,
                                                          Condition cond);

  // Sends every key's pending LAX work (the flush thread calls it; public for tests).
  void FlushNow();
  // One heartbeat (the heartbeat thread calls it; public for tests). When it finds this instance
  // declared dead it re-registers and schedules the recovery.
  absl::Status BeatOnce(std::chrono::milliseconds timeout);
  // Any pending recovery, then one reaper pass (the reaper thread calls it; public for tests).
  absl::Status ReapOnce(std::chrono::milliseconds timeout);

  const std::string& instance_id() const { return options_.instance_id; }
  int64_t incarnation() const { return incarnation_.load(); }
  const InstanceCountersStats& stats() const { return stats_; }

 private:
  using MapKey = std::pair<std::string, std::string>;
  using Shard = LockedMap<absl::flat_hash_map<MapKey, InstanceEntry>>;
  enum class Op { kGet, kInc, kSet, kSetOnInstance, kDel, kDelOnInstance, kRestore };
  using Waiter = absl::AnyInvocable<void(absl::Status)>;

  Shard& ShardFor(const MapKey& k);
  int64_t Now() const { return clock_->NowNs(); }

  // Strict path: one icounter.lua call carrying this daemon's LAX work for the key.
  void RunStrict(const MapKey& k, Op op, Condition cond, int64_t arg, InstanceCallback done);
  // Sends the script (after registering the key in this incarnation's key set when it may
  // write a slice). `carried` is already counted in the entry's carriers (if `tracked`).
  void Send(const MapKey& k, Op op, Condition cond, int64_t arg, int64_t inc,
            std::vector<SeqSliceOp> carried, bool needs_register, InstanceCallback done);
  void SendScript(const MapKey& k, Op op, Condition cond, int64_t arg, int64_t inc,
                  std::vector<SeqSliceOp> carried, InstanceCallback done);
  // A command for `k` finished: update the entry, start a due restore.
  void Settle(const MapKey& k, Op op, int64_t inc, const std::vector<SeqSliceOp>& carried,
              const InstanceReply* reply, bool maybe_sent,
              const absl::Status& status = absl::OkStatus());
  // LAX path.
  // may_read: a key with a data error whose backoff passed may be re-read first (false after
  // that read, so one call reads at most once).
  std::optional<absl::StatusOr<InstanceResult>> TryLax(const MapKey& k, SliceOp op, Condition cond,
                                                       bool may_read = true);
  void LaxWrite(const MapKey& k, SliceOp op, Condition cond, InstanceCallback done,
                bool may_read = true);
  void LaxGet(const MapKey& k, InstanceCallback done);
  void RefreshThen(const MapKey& k, Waiter then);
  // Recovery: writes the believed slice of `k` back (at the incarnation it is due for).
  void StartRestore(const MapKey& k);
  // Marks every entry with a slice to remember for restore at `inc`.
  void MarkForRestore(int64_t inc);
  // Starts due restores, at most `max_outstanding` at a time; waits for them.
  absl::Status RestoreAll(std::chrono::milliseconds timeout);
  void ClearScan(const std::string& ns, StatusCallback done);
  void ClearOnInstanceScan(const std::string& ns, std::string set, StatusCallback done);
  bool Register(std::chrono::milliseconds timeout);
  // While unregistered (Redis was down at the start): registers, at most once per backoff
  // (100 ms doubling to 2 s), so LAX work taken meanwhile is flushed soon after Redis returns.
  void RegisterIfDue();
  // Keys with unflushed LAX work: {total, with a data error}; logs each (key, delta, cause)
  // if `log` (at most 100 lines, then a summary).
  std::pair<int64_t, int64_t> CountUnflushed(bool log);
  void EvictIdle();
  // The entry of `k`, created unless that would pass max_keys (then RESOURCE_EXHAUSTED).
  absl::StatusOr<InstanceEntry*> FindOrCreate(Shard& shard, const MapKey& k)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void StopThreads();
  std::vector<MapKey> KeysOf(const std::string& ns);
  // Blocking Redis call helper for the background threads (never called on the Redis thread).
  absl::StatusOr<redis::Reply> Call(std::vector<std::string> argv,
                                    std::chrono::milliseconds timeout);
  absl::StatusOr<redis::Reply> Live(std::vector<std::string> args,
                                    std::chrono::milliseconds timeout);
  absl::Status ReapInstance(const std::string& id, const std::string& inc,
                            std::chrono::milliseconds timeout);

  redis::RedisClient* const redis_;
  const InstanceCountersOptions options_;
  const Clock* const clock_;
  InstanceCountersStats stats_;
  std::atomic<int64_t> incarnation_{0};
  std::atomic<uint64_t> next_seq_{1};
  std::atomic<int64_t> outstanding_{0};  // flush and restore commands in flight
  RedisTimeEstimate redis_time_;         // for the resend bound (lax_store.h)
  static constexpr int kShards = 64;
  Sharded<Shard, kShards> shards_;

  absl::Mutex own_mu_;
  // Own older incarnations left behind by a re-registration: the heartbeat refreshed the id's
  // score, so no other daemon sees them dead; our reaper reaps them.
  std::vector<int64_t> own_dead_incarnations_ ABSL_GUARDED_BY(own_mu_);
  absl::Mutex register_mu_;  // one registration attempt at a time (heartbeat, flush thread)
  std::chrono::steady_clock::time_point next_register_ ABSL_GUARDED_BY(register_mu_);
  std::chrono::milliseconds register_backoff_ ABSL_GUARDED_BY(register_mu_){0};

  PeriodicTask beat_task_;   // BeatOnce three times per dead-instance threshold
  PeriodicTask reap_task_;   // ReapOnce; woken when a recovery is due
  PeriodicTask flush_task_;  // FlushNow every flush interval, EvictIdle at most every second
};

}  // namespace distkit::core
