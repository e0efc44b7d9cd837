#pragma once

// The LOCAL rate-limit provider (docs/api.md#providers, docs/rate_limiting.md "LOCAL"): every
// decision from daemon memory, inline, exact under concurrency; idle keys are swept.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/synchronization/mutex.h"
#include "daemon/common/periodic_task.h"
#include "daemon/common/sharded_map.h"
#include "daemon/core/rate_limit.h"
#include "daemon/core/rate_window.h"
#include "daemon/core/types.h"

namespace distkit::core {

struct LocalRateLimiterOptions {
  RateLimitSettings settings;
  // Period of the idle-key sweep thread; 0 = no thread (tests call Sweep() themselves).
  int64_t sweep_interval_ms = 1000;
  const Clock* clock = &SystemClock();
  RandomSource* random = &DefaultRandom();
  // Bound on the states held (--max_rate_limit_keys): an Inc that would create one more gets
  // RESOURCE_EXHAUSTED; keys already held keep working. Checked without a global lock, so
  // concurrent first Incs may pass it by a few.
  int64_t max_keys = 1000000;
};

struct LocalRateLimiterStats {
  std::atomic<int64_t> keys{0};     // (namespace, key, strategy) states held now
  std::atomic<uint64_t> swept{0};   // states removed by the sweep
  std::atomic<uint64_t> sweeps{0};  // completed sweep passes
};

class LocalRateLimiter final : public RateLimiter {
 public:
  explicit LocalRateLimiter(LocalRateLimiterOptions options);
  ~LocalRateLimiter() override;  // stops the sweep thread
  LocalRateLimiter(const LocalRateLimiter&) = delete;
  LocalRateLimiter& operator=(const LocalRateLimiter&) = delete;

  // Always answers (memory only): never nullopt; an error only for a new key beyond max_keys.
  std::optional<absl::StatusOr<RateIncResult>> TryInc(const RateIncRequest& req) override;
  void Inc(const RateIncRequest& req, RateIncCallback done) override;
  void Get(const std::string& ns, const std::string& key, RateStrategy strategy,
           RateGetCallback done) override;

  // The synchronous forms of Inc and Get (also used by REDIS's failure mode `local`).
  absl::StatusOr<RateIncResult> Decide(const RateIncRequest& req);
  RateGetResult Read(std::string_view ns, std::string_view key, RateStrategy strategy);

  // Removes every state with no live bucket (idle longer than the eviction horizon), shrinking
  // shards left sparse; returns how many. The sweep thread calls it every sweep_interval_ms.
  size_t Sweep();
  // States held now (exact: counts every shard under its lock).
  size_t size() const;
  // Slots allocated over all shards (tests: the maps shrink after a sweep).
  size_t capacity() const;
  const LocalRateLimiterStats& stats() const { return stats_; }
  const RateLimitSettings& settings() const { return options_.settings; }

 private:
  struct Key {
    std::string ns;
    std::string key;
    RateStrategy strategy;
  };
  struct KeyView {
    std::string_view ns;
    std::string_view key;
    RateStrategy strategy;
  };
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(const KeyView& k) const { return absl::HashOf(k.ns, k.key, k.strategy); }
    size_t operator()(const Key& k) const { return (*this)(KeyView{k.ns, k.key, k.strategy}); }
  };
  struct KeyEq {
    using is_transparent = void;
    static KeyView View(const Key& k) { return {k.ns, k.key, k.strategy}; }
    static KeyView View(const KeyView& k) { return k; }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      const KeyView x = View(a), y = View(b);
      return x.strategy == y.strategy && x.ns == y.ns && x.key == y.key;
    }
  };
  struct State {
    RateWindow window;
    FactorCache cache;
    double last_rate = 0;  // the rate of the last Inc (Get's suppression factor)
  };
  using Shard = LockedMap<absl::flat_hash_map<Key, State, KeyHash, KeyEq>>;
  static constexpr size_t kShards = 64;

  Shard& ShardFor(const KeyView& k) const;
  int64_t NowMs() const { return options_.clock->NowNs() / 1000000; }

  const LocalRateLimiterOptions options_;
  const int64_t idle_ms_;  // a state whose newest bucket is older than this is removed
  LocalRateLimiterStats stats_;
  Sharded<Shard, kShards> shards_;

  PeriodicTask sweep_task_;  // Sweep every sweep interval (started only when it is > 0)
};

}  // namespace distkit::core
