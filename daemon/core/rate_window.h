#pragma once

// The sliding-window math of rate limiting (docs/rate_limiting.md), pure and
// clock-free: every call takes `now_ms` (any monotonic millisecond clock) and the daemon-wide
// RateLimitSettings; randomness comes from a RandomSource passed in. No locking: the owner
// (LOCAL: a shard mutex; HYBRID: its own) serialises calls on one RateWindow.
//
// Vocabulary (W = settings.window_ms, B = settings.bucket_ms):
//  - A bucket {ts, count, declined} holds the units of the increments that joined it. An
//    increment joins the newest bucket if 0 ≤ now − newest.ts ≤ B, else it opens a bucket
//    stamped `now`. A bucket is live while now − ts < W; Evict drops the others. At most
//    W/B + 1 live buckets exist (when the clock never goes backwards).
//  - accepted = Σ accepted of the buckets, declined = Σ declined, observed = accepted +
//    declined. ABSOLUTE records only admitted units (declined stays 0, observed = used);
//    SUPPRESSED records every request (docs/api.md#rate-limiting) and marks the declined ones.
//  - Limits come from the request's rate (never sticky): RateCapacity / SuppressedLimitsFor.

#include <cstdint>
#include <memory>

#include "daemon/core/rate_limit.h"

namespace distkit::core {

// ⌊rate × W/1000⌋, saturating: NaN or negative → 0, ≥ 2^64 (e.g. DBL_MAX) → UINT64_MAX.
uint64_t RateCapacity(double rate_per_second, int64_t window_ms);

// SUPPRESSED limits (docs/api.md#rate-limiting): soft = RateCapacity, hard = ⌊soft × hlf⌋
// (hlf ≥ 1, so soft ≤ hard; with hlf = 1 both equal RateCapacity). Not trypema's (deviation D6
// in docs/rate_limiting.md: hard = ⌊rate × hlf × W_s⌋, soft = ⌊hard_raw / hlf⌋): its round trip
// through hlf made soft one below the capacity for common rates (rate 3, W 10 s, hlf 1.1: soft 29).
struct SuppressedLimits {
  uint64_t soft = 0;
  uint64_t hard = 0;
};
SuppressedLimits SuppressedLimitsFor(double rate_per_second, int64_t window_ms,
                                     double hard_limit_factor);

// ⌊x⌋ as uint64, saturating (NaN and x < 0 → 0, x ≥ 2^64 → UINT64_MAX).
uint64_t SaturatingFloor(double x);

struct RateBucket {
  int64_t ts_ms = 0;      // creation time; never moves
  uint64_t count = 0;     // units observed in this bucket (admitted + declined), saturating
  uint64_t declined = 0;  // of which declined (SUPPRESSED only), saturating
  uint64_t accepted = 0;  // of which admitted (exact: admission keeps it ≤ a limit)
};

// Cached suppression factor of one key (docs/api.md#rate-limiting): fresh while
// 0 ≤ now − computed_at_ms < settings.suppression_cache_ms; dropped when Evict removes a bucket.
// The cache also remembers the limits it was computed for: a request with another rate (rates
// are per request) recomputes.
struct FactorCache {
  bool valid = false;
  int64_t computed_at_ms = 0;
  double factor = 0;
  SuppressedLimits limits;
};

// The bucket list of one key with its running totals. Accepted and declined units are kept
// apart, so huge declined requests (they saturate at UINT64_MAX; Evict then recounts from the
// buckets) never disturb the accepted total that admission relies on.
class RateWindow {
 public:
  RateWindow() = default;
  RateWindow(RateWindow&&) noexcept = default;
  RateWindow& operator=(RateWindow&&) noexcept = default;
  RateWindow(const RateWindow& other);
  RateWindow& operator=(const RateWindow& other);

  // Drops the buckets with now − ts ≥ window_ms (oldest first); true if any was dropped.
  bool Evict(int64_t now_ms, int64_t window_ms);
  // Adds `count` units, `declined` (≤ count) of them declined, with coalescing (see above).
  // `count` 0 still opens or reuses a bucket (the transport never sends 0).
  void Record(int64_t now_ms, int64_t bucket_ms, uint64_t count, uint64_t declined);
  // Σ count of the buckets with now − ts ≤ age_ms (the "last second" with age_ms = 1000).
  uint64_t ObservedWithin(int64_t now_ms, int64_t age_ms) const;

  uint64_t observed() const;
  uint64_t declined() const { return declined_; }
  uint64_t accepted() const { return accepted_; }
  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  // i = 0 is the oldest bucket; requires i < size().
  const RateBucket& bucket(size_t i) const { return buf_[(head_ + i) & (cap_ - 1)]; }
  const RateBucket& oldest() const { return bucket(0); }
  const RateBucket& newest() const { return bucket(size_ - 1); }

 private:
  RateBucket& at(size_t i) { return buf_[(head_ + i) & (cap_ - 1)]; }
  void Grow();
  void Recount();

  // Ring buffer of buckets, oldest at head_; cap_ is 0 or a power of two.
  std::unique_ptr<RateBucket[]> buf_;
  uint32_t cap_ = 0, head_ = 0, size_ = 0;
  uint64_t accepted_ = 0, declined_ = 0;
};

// ABSOLUTE admission (every provider): evicts, then admits iff used + count ≤ capacity
// (capacity = RateCapacity(rate, W)), all-or-nothing. Admitted: recorded, ALLOWED. Rejected:
// nothing recorded; retry_after_ms = W − (now − oldest.ts) (≥ 0) and remaining_after_waiting =
// oldest.count; count > capacity → REJECTED with 0 and 0.
RateIncResult AdmitAbsolute(RateWindow& w, const RateLimitSettings& s, int64_t now_ms,
                            double rate_per_second, uint64_t count);

// The one suppression-factor formula (docs/api.md#rate-limiting; the hard-limit checks use
// ACCEPTED usage, docs/rate_limiting.md D3), from a window's totals, for a window holding at least
// one bucket:
//   accepted ≥ hard → 1; accepted < soft → 0;
//   else 1 − (soft / W_s) / max(observed / W_s, last_second), clamped to [0, 1].
// Pure. LOCAL applies it to a RateWindow (below), HYBRID to the totals of its last sync, and
// lua/ratelimit.lua (REDIS) repeats it in Lua.
double SuppressionFactorFromTotals(uint64_t accepted, uint64_t observed, uint64_t last_second,
                                   int64_t window_ms, SuppressedLimits limits);

// The suppression factor for the window as it is now: no bucket → 0, else
// SuppressionFactorFromTotals with last_second = ObservedWithin(now, 1000).
// Pure: no cache (see SuppressionFactor).
double ComputeSuppressionFactor(const RateWindow& w, int64_t now_ms, int64_t window_ms,
                                SuppressedLimits limits);

// The factor to apply now: no bucket → 0, accepted ≥ hard → 1, accepted < soft → 0 (these
// are always evaluated live), else the formula's value through `cache` (reused while fresh and
// computed for the same limits, else computed and stored). Call after Evict (and drop the
// cache when Evict returned true).
double SuppressionFactor(const RateWindow& w, FactorCache& cache, const RateLimitSettings& s,
                         int64_t now_ms, SuppressedLimits limits);

// SUPPRESSED admission: evicts (an eviction drops the cache), then with forecast =
// accepted + count:
//   forecast ≤ soft → ALLOWED (factor 0), recorded as accepted;
//   forecast > hard → SUPPRESSED, factor 1, declined (not cached: a smaller request may still
//                     fit below the hard limit);
//   otherwise      → SUPPRESSED with the (cached) factor f: admitted when f = 0, declined when
//                     f = 1, else admitted iff random.Uniform01() < 1 − f (one draw).
// Every request is recorded as observed; declined ones also as declined.
RateIncResult AdmitSuppressed(RateWindow& w, FactorCache& cache, const RateLimitSettings& s,
                              int64_t now_ms, double rate_per_second, uint64_t count,
                              RandomSource& random);

// Get (docs/api.md#rate-limiting): evicts (dropping the cache on eviction), then ABSOLUTE
// {used, 0, 0}; SUPPRESSED {observed, declined, factor through `cache`} with the limits of
// `last_rate` (the rate of the key's last Inc; Get carries none).
RateGetResult ReadWindow(RateWindow& w, FactorCache& cache, const RateLimitSettings& s,
                         int64_t now_ms, RateStrategy strategy, double last_rate);

}  // namespace distkit::core
