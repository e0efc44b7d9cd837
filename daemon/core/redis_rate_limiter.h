#pragma once

// The REDIS rate-limit provider (docs/api.md#providers): every Inc is one atomic lua/ratelimit.lua
// call, so all daemons share one exact limit per (namespace, key, strategy). Layout, script
// steps and failure modes: docs/rate_limiting.md, section REDIS.

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "daemon/common/sharded_map.h"
#include "daemon/core/rate_limit.h"
#include "daemon/core/redis_keys.h"  // RedisRateLimitKey
#include "daemon/redis/redis_client.h"

namespace distkit::core {

// What Inc answers when Redis cannot (--rate_limit_failure_mode). core/ does not depend on
// config/, so main.cc maps config's FailureMode onto this.
enum class RateFailureMode {
  kOpen,    // ALLOWED, degraded
  kClosed,  // REJECTED (retry_after_ms 0), degraded
  kLocal,   // the fallback provider's answer (the LOCAL provider's state), degraded
};

// At most this many Inc requests of one key go into one script call (the script takes 1000).
inline constexpr size_t kMaxCoalescedIncs = 128;

// Units are exact in the script below 2^53 (Lua numbers are doubles): a count at or above it
// is answered REJECTED (ABSOLUTE: it exceeds every capacity, which is capped at 2^53 - 1) or
// OUT_OF_RANGE (SUPPRESSED: it would have to be recorded as observed).
inline constexpr uint64_t kMaxRateUnits = (uint64_t{1} << 53) - 1;

struct RedisRateLimiterStats {
  std::atomic<uint64_t> redis_failures{0};  // Inc/Get calls Redis could not answer
  std::atomic<uint64_t> degraded{0};        // Inc answers given by the failure mode
  std::atomic<uint64_t> inc_calls{0};       // ratelimit.lua inc calls sent (one per batch)
  std::atomic<uint64_t> coalesced{0};       // Inc requests that shared a call with others
};

// Coalescing: while a key has an inc call in flight, later Incs of that key wait and then go
// together in one call (up to kMaxCoalescedIncs): the script decides them one after the other,
// in arrival order, at one Redis TIME, exactly as that many consecutive calls would. A hot key
// costs Redis one script run per round trip instead of one per request; a key with one caller
// at a time is sent at once, as before. When the call in flight fails because Redis is down,
// the waiting requests are answered by the failure mode at once (not sent to wait again), so
// every answer comes within the Redis deadline of its request.
class RedisRateLimiter final : public RateLimiter {
 public:
  // `redis` and `random` must outlive this object; `fallback` too, and it is required for
  // kLocal (ignored otherwise). Settings must be valid (docs/api.md#flags).
  RedisRateLimiter(redis::RedisClient* redis, RateLimitSettings settings,
                   RateFailureMode failure_mode, RandomSource* random,
                   RateLimiter* fallback = nullptr);

  void Inc(const RateIncRequest& req, RateIncCallback done) override;
  // Redis unreachable: the transport status (UNAVAILABLE, or DEADLINE_EXCEEDED when Redis did
  // not answer in time); no failure mode applies to reads.
  void Get(const std::string& ns, const std::string& key, RateStrategy strategy,
           RateGetCallback done) override;

  const RedisRateLimiterStats& stats() const { return stats_; }

 private:
  // One Inc waiting for (or riding in) a script call: its ARGV triple and its caller.
  struct PendingInc {
    std::string rate, count, random;
    RateIncRequest req;  // kept only for the LOCAL failure mode
    RateIncCallback done;
  };
  // Keys with an inc call in flight, and the Incs waiting for it to come back.
  using Shard = LockedMap<absl::flat_hash_map<std::string, std::vector<PendingInc>>>;
  static constexpr size_t kShards = 16;
  Shard& ShardFor(const std::string& key);

  // Sends one call for `batch` (1..kMaxCoalescedIncs Incs of `key`, strategy `strategy`).
  void SendIncs(std::string key, RateStrategy strategy, std::vector<PendingInc> batch);
  // The call for `key` came back: the next batch of waiting Incs, empty when none is left (the
  // key leaves the in-flight map). `redis_down`: answer them all by the failure mode instead.
  std::vector<PendingInc> NextBatch(const std::string& key, bool redis_down);
  // Answers `p` from its part of the reply (or the call's failure).
  void Answer(PendingInc& p, absl::StatusOr<RateIncResult> r);
  // Answers `req` by the failure mode after Redis failed with `why`.
  void Degrade(const RateIncRequest& req, const absl::Status& why, RateIncCallback done);

  redis::RedisClient* const redis_;
  const RateLimitSettings settings_;
  const RateFailureMode failure_mode_;
  RandomSource* const random_;
  RateLimiter* const fallback_;
  // The settings as the script's ARGV 3..6, formatted once.
  std::string window_arg_, bucket_arg_, hlf_arg_, cache_arg_;
  RedisRateLimiterStats stats_;
  Sharded<Shard, kShards> shards_;
};

}  // namespace distkit::core
