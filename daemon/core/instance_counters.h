#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/core/types.h"
#include "daemon/redis/redis_client.h"

namespace distkit::core {

struct InstanceCountersOptions {
  std::string instance_id;  // --instance_id
  std::string dedup_id;     // fresh per process (lax flush marks; unused while LAX is strict)
  int64_t dead_instance_threshold_ms = 30000;
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

// Redis key of an instance-aware counter: "dk:{TTTTTTTT}:i:<namespace>:<key>".
std::string InstanceCounterKey(std::string_view ns, std::string_view key);
std::string InstanceCounterPattern(std::string_view ns);
// This instance's key set of `ns`: "dk:{I:<id>:<inc>}:keys:<ns>".
std::string InstanceKeySet(std::string_view id, int64_t incarnation, std::string_view ns);

// Instance-aware counters (product.md §4.2), STRICT path only: every operation is one
// lua/icounter.lua call (LAX requests are served the same way). Registration, heartbeat and the
// reaper use lua/liveness.lua with Redis time. Thread-safe; callbacks run on the Redis loop
// thread (or inline when refused), never under a lock of ours.
class InstanceCounters {
 public:
  InstanceCounters(redis::RedisClient* redis, InstanceCountersOptions options);
  ~InstanceCounters();

  // Registers this id (new incarnation) and starts the heartbeat and reaper threads. An error
  // is not fatal: the heartbeat thread retries the registration; until then operations fail
  // with UNAVAILABLE.
  absl::Status Start(std::chrono::milliseconds timeout);
  // Stops the threads, removes this instance's slices (del_on_instance) and deregisters.
  // Returns the number of keys whose slice could not be removed.
  int64_t Shutdown(std::chrono::milliseconds timeout);
  // Test hook: stops the threads without removing anything (as if the process were killed).
  void StopWithoutDeregistering();

  // Names must already be validated.
  void Inc(const std::string& ns, const std::string& key, int64_t delta, Condition cond,
           InstanceCallback done);
  void Get(const std::string& ns, const std::string& key, InstanceCallback done);
  void Set(const std::string& ns, const std::string& key, int64_t value, Condition cond,
           InstanceCallback done);
  void SetOnInstance(const std::string& ns, const std::string& key, int64_t value,
                     Condition cond, InstanceCallback done);
  void Del(const std::string& ns, const std::string& key, InstanceCallback done);
  void DelOnInstance(const std::string& ns, const std::string& key, InstanceCallback done);
  void Clear(const std::string& ns, StatusCallback done);
  void ClearOnInstance(const std::string& ns, StatusCallback done);

  // One reaper pass (the reaper thread calls it; public for tests). Blocks until done.
  absl::Status ReapOnce(std::chrono::milliseconds timeout);

  const std::string& instance_id() const { return options_.instance_id; }
  int64_t incarnation() const { return incarnation_.load(); }

 private:
  using MapKey = std::pair<std::string, std::string>;

  void Run(const MapKey& k, std::string_view op, Condition cond, int64_t arg,
           InstanceCallback done);
  void Script(const MapKey& k, std::string_view op, Condition cond, int64_t arg,
              int64_t incarnation, InstanceCallback done);
  void ClearScan(const std::string& ns, const std::string& cursor, StatusCallback done);
  void ClearOnInstanceScan(const std::string& ns, std::string set, const std::string& cursor,
                           StatusCallback done);
  bool Register(std::chrono::milliseconds timeout);
  void BeatLoop();
  void ReapLoop();
  void StopThreads();
  // Blocking Redis call helper for the background threads (never called on the Redis thread).
  absl::StatusOr<redis::Reply> Call(std::vector<std::string> argv,
                                    std::chrono::milliseconds timeout);
  absl::StatusOr<redis::Reply> Live(std::vector<std::string> args,
                                    std::chrono::milliseconds timeout);
  absl::Status ReapInstance(const std::string& id, const std::string& inc,
                            std::chrono::milliseconds timeout);

  redis::RedisClient* const redis_;
  const InstanceCountersOptions options_;
  std::atomic<int64_t> incarnation_{0};

  absl::Mutex mu_;
  // Key -> the incarnation whose key set it was SADDed to (a write at another incarnation
  // registers the key again first).
  absl::flat_hash_map<MapKey, int64_t> registered_ ABSL_GUARDED_BY(mu_);
  // Own older incarnations left behind by a re-registration: the heartbeat refreshed the id's
  // score, so no other daemon sees them dead; our reaper reaps them.
  std::vector<int64_t> own_dead_incarnations_ ABSL_GUARDED_BY(mu_);

  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  bool stop_ = false;
  std::thread beat_thread_, reap_thread_;
};

}  // namespace distkit::core
