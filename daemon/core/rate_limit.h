#pragma once

// Rate limiting (docs/api.md#ratelimitservice): the provider interface shared by LOCAL, REDIS
// and HYBRID, and the types the transport layer maps to RateLimitService. Design and the semantics
// each provider keeps: docs/rate_limiting.md.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"

namespace distkit::core {

enum class RateStrategy { kAbsolute, kSuppressed };
enum class RateDecision { kAllowed, kRejected, kSuppressed };

// Daemon-wide settings (docs/api.md#flags), the same for every key.
struct RateLimitSettings {
  int64_t window_ms = 10000;           // --rate_window_seconds × 1000
  int64_t bucket_ms = 100;             // --rate_bucket_ms
  double hard_limit_factor = 1.0;      // --hard_limit_factor (≥ 1)
  int64_t suppression_cache_ms = 100;  // --suppression_cache_ms
  int64_t sync_interval_ms = 10;       // --sync_interval_ms (HYBRID)
  int64_t idle_evict_ms = 0;           // LOCAL/HYBRID memory: 0 = the window + 1 s
};

// A validated request: names checked, rate finite and > 0, count ≥ 1 (0 was mapped to 1).
struct RateIncRequest {
  std::string ns;
  std::string key;
  double rate_per_second = 0;
  uint64_t count = 1;
  RateStrategy strategy = RateStrategy::kAbsolute;
};

struct RateIncResult {
  RateDecision decision = RateDecision::kAllowed;
  int64_t retry_after_ms = 0;            // REJECTED only
  uint64_t remaining_after_waiting = 0;  // REJECTED only
  double suppression_factor = 0;         // SUPPRESSED only (0 on ALLOWED and ABSOLUTE)
  bool allowed = true;                   // ALLOWED, or an admitted SUPPRESSED
  bool degraded = false;                 // not answered by the configured provider
  // ABSOLUTE ALLOWED: units in the live window with this Inc's, when the provider knows them
  // (LOCAL); -1 = not known (REDIS and HYBRID do not report it). Read by RLS's limit_remaining.
  int64_t used = -1;
};

struct RateGetResult {
  uint64_t total = 0;     // ABSOLUTE: units used in the live window; SUPPRESSED: observed
  uint64_t declined = 0;  // SUPPRESSED: declined units of the live window
  double suppression_factor = 0;
};

using RateIncCallback = absl::AnyInvocable<void(absl::StatusOr<RateIncResult>)>;
using RateGetCallback = absl::AnyInvocable<void(absl::StatusOr<RateGetResult>)>;

// Uniform random numbers in [0, 1); injectable so tests are deterministic.
class RandomSource {
 public:
  virtual ~RandomSource() = default;
  virtual double Uniform01() = 0;  // thread-safe
};
RandomSource& DefaultRandom();  // a thread-local PRNG seeded from std::random_device

// One provider. Thread-safe; callbacks run inline or on the Redis loop thread, never under a
// lock of the provider. Each provider keeps its own state: the same (namespace, key) under
// LOCAL, REDIS and HYBRID (and under ABSOLUTE and SUPPRESSED) are independent limits.
class RateLimiter {
 public:
  virtual ~RateLimiter() = default;
  // The result when memory can answer right now (no allocation, no callback), else nullopt and
  // the caller uses Inc. Providers that always need Redis return nullopt.
  virtual std::optional<absl::StatusOr<RateIncResult>> TryInc(const RateIncRequest& req) {
    return std::nullopt;
  }
  virtual void Inc(const RateIncRequest& req, RateIncCallback done) = 0;
  virtual void Get(const std::string& ns, const std::string& key, RateStrategy strategy,
                   RateGetCallback done) = 0;
};

}  // namespace distkit::core
