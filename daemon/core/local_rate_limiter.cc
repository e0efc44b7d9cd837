#include "daemon/core/local_rate_limiter.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"

namespace distkit::core {

LocalRateLimiter::LocalRateLimiter(LocalRateLimiterOptions options)
    : options_(options),
      // A state with no live bucket reads exactly like an unknown key, so removing it is
      // invisible; idle_evict_ms may only delay that, never advance it.
      idle_ms_(std::max(options.settings.window_ms, options.settings.idle_evict_ms > 0
                                                        ? options.settings.idle_evict_ms
                                                        : options.settings.window_ms + 1000)),
      sweep_task_(std::chrono::milliseconds(options_.sweep_interval_ms), [this] { Sweep(); }) {
  if (options_.sweep_interval_ms > 0) sweep_task_.Start();
}

LocalRateLimiter::~LocalRateLimiter() { sweep_task_.Stop(); }

LocalRateLimiter::Shard& LocalRateLimiter::ShardFor(const KeyView& k) const {
  // The map mixes the same hash again internally; the top bits pick the shard.
  return shards_.ShardFor(KeyHash()(k) >> 32);
}

absl::StatusOr<RateIncResult> LocalRateLimiter::Decide(const RateIncRequest& req) {
  const KeyView kv{req.ns, req.key, req.strategy};
  Shard& shard = ShardFor(kv);
  const int64_t now = NowMs();
  absl::MutexLock lock(&shard.mu);
  auto it = shard.map.find(kv);
  const bool created = it == shard.map.end();
  if (created && stats_.keys.load(std::memory_order_relaxed) >= options_.max_keys) {
    return absl::ResourceExhaustedError(
        absl::StrCat("too many rate-limit keys held by the LOCAL provider (--max_rate_limit_keys=",
                     options_.max_keys,
                     "); keys already held keep working, new ones are refused until idle "
                     "keys are evicted"));
  }
  if (created) it = shard.map.emplace(Key{req.ns, req.key, req.strategy}, State{}).first;
  State& st = it->second;
  st.last_rate = req.rate_per_second;
  RateIncResult r =
      req.strategy == RateStrategy::kAbsolute
          ? AdmitAbsolute(st.window, options_.settings, now, req.rate_per_second, req.count)
          : AdmitSuppressed(st.window, st.cache, options_.settings, now, req.rate_per_second,
                            req.count, *options_.random);
  if (st.window.empty()) {
    // Rejected without recording (ABSOLUTE, count > capacity or an emptied window): keep no
    // state that reads like an unknown key.
    shard.map.erase(it);
    if (!created) stats_.keys.fetch_sub(1, std::memory_order_relaxed);
  } else if (created) {
    stats_.keys.fetch_add(1, std::memory_order_relaxed);
  }
  return r;
}

RateGetResult LocalRateLimiter::Read(std::string_view ns, std::string_view key,
                                     RateStrategy strategy) {
  const KeyView kv{ns, key, strategy};
  Shard& shard = ShardFor(kv);
  const int64_t now = NowMs();
  absl::MutexLock lock(&shard.mu);
  auto it = shard.map.find(kv);
  if (it == shard.map.end()) return RateGetResult{};  // unknown: zeros, nothing created
  State& st = it->second;
  return ReadWindow(st.window, st.cache, options_.settings, now, strategy, st.last_rate);
}

std::optional<absl::StatusOr<RateIncResult>> LocalRateLimiter::TryInc(const RateIncRequest& req) {
  return Decide(req);
}

void LocalRateLimiter::Inc(const RateIncRequest& req, RateIncCallback done) { done(Decide(req)); }

void LocalRateLimiter::Get(const std::string& ns, const std::string& key, RateStrategy strategy,
                           RateGetCallback done) {
  done(Read(ns, key, strategy));
}

size_t LocalRateLimiter::Sweep() {
  size_t removed = 0, released = 0;
  for (size_t i = 0; i < kShards; ++i) {
    Shard& shard = shards_[i];
    const int64_t now = NowMs();
    absl::MutexLock lock(&shard.mu);
    for (auto it = shard.map.begin(); it != shard.map.end();) {
      const RateWindow& w = it->second.window;
      if (w.empty() || now - w.newest().ts_ms > idle_ms_) {
        shard.map.erase(it++);
        ++removed;
      } else {
        ++it;
      }
    }
    released += ShrinkIfSparse(shard.map);
  }
  // The states freed count too (slots, keys, buckets): evictions spread over sweeps add up.
  TrimHeapAfterShrink(released + removed * (sizeof(Key) + sizeof(State)));
  stats_.keys.fetch_sub(static_cast<int64_t>(removed), std::memory_order_relaxed);
  stats_.swept.fetch_add(removed, std::memory_order_relaxed);
  stats_.sweeps.fetch_add(1, std::memory_order_relaxed);
  return removed;
}

size_t LocalRateLimiter::size() const {
  size_t n = 0;
  for (size_t i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    n += shards_[i].map.size();
  }
  return n;
}

size_t LocalRateLimiter::capacity() const {
  size_t n = 0;
  for (size_t i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    n += shards_[i].map.capacity();
  }
  return n;
}

}  // namespace distkit::core
