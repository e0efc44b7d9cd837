#pragma once

// The decisions of Envoy's global rate limit service (RLS v3, docs/rls.md): each request
// descriptor is matched against the rules (rls_config.h) and its rule decided as a sliding window
// of one unit with capacity requests_per_unit, by the daemon's rate-limit providers (LOCAL,
// REDIS or HYBRID: one provider instance per unit, since a provider's window is fixed at
// construction). Envoy's request and answer stay in transport/rls_service.cc.

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/inlined_vector.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/core/rate_limit.h"
#include "daemon/core/rls_config.h"

namespace distkit::core {

// The namespace of every RLS state (the key carries unit, domain and the entries).
inline constexpr char kRlsNamespace[] = "rls";
// Buckets per window: a key holds at most this many + 1 live buckets for every unit, from
// SECOND (20 ms buckets) to YEAR (~7.3 days).
inline constexpr int64_t kRlsBucketsPerWindow = 50;

struct RlsOverride {
  uint32_t requests_per_unit = 0;
  RlsUnit unit = RlsUnit::kUnknown;
};

// One request descriptor; the views point into the caller's request, which outlives the call.
struct RlsDescriptorRequest {
  absl::InlinedVector<RlsEntryView, 4> entries;
  std::optional<RlsOverride> limit;
  uint64_t hits = 1;  // the descriptor's hits_addend, else the request's (0 there = 1)
};

struct RlsRequest {
  std::string_view domain;
  absl::InlinedVector<RlsDescriptorRequest, 3> descriptors;
};

enum class RlsCode { kOk = 1, kOverLimit = 2 };  // Envoy's numbers

struct RlsStatus {
  RlsCode code = RlsCode::kOk;
  bool has_limit = false;  // a limit applied: current_limit is set
  RlsUnit unit = RlsUnit::kUnknown;
  uint32_t requests_per_unit = 0;
  std::string_view name;  // the rule's name (into RlsResult::config)
  uint32_t limit_remaining = 0;
  int64_t duration_until_reset_ms = 0;  // when the next hit would fit (0: now)
  // The metrics label: the rule's name or path ("override" for a request's own limit); empty
  // when no rule applied.
  std::string_view rule;
  bool over_limit = false;  // the limit was exceeded (also when shadow_mode answered OK)
  // The config's rule behind `rule` (nullptr for a request's limit no rule matched): an identity
  // for caching per rule while RlsResult::config lives.
  const RlsRule* matched = nullptr;
};

struct RlsResult {
  std::shared_ptr<const RlsConfig> config;  // the rules decided with; owns the names above
  RlsCode overall = RlsCode::kOk;
  absl::InlinedVector<RlsStatus, 3> statuses;  // one per request descriptor, in order
  bool degraded = false;                       // some descriptor was answered by the failure mode
};

using RlsCallback = absl::AnyInvocable<void(absl::StatusOr<RlsResult>)>;

class RlsLimiter {
 public:
  // Builds the provider for one unit's settings (window = the unit, bucket = window / 50).
  using Factory = absl::AnyInvocable<std::unique_ptr<RateLimiter>(const RateLimitSettings&)>;

  RlsLimiter(std::shared_ptr<const RlsConfig> config, RateLimitSettings base, Factory factory);
  ~RlsLimiter();

  // Installs new rules atomically: calls that started keep the rules they started with.
  void Swap(std::shared_ptr<const RlsConfig> config);
  std::shared_ptr<const RlsConfig> config() const;

  // Decides `req`: the result when every descriptor was answered inline (no provider needed
  // Redis), else nullopt after handing `callback()` to the asynchronous path (called once, on
  // any thread). An error (e.g. RESOURCE_EXHAUSTED: too many keys) fails the whole request.
  std::optional<absl::StatusOr<RlsResult>> Decide(const RlsRequest& req,
                                                  absl::FunctionRef<RlsCallback()> callback);

  // The state key of a descriptor under `unit`: "<unit number>|<domain>|<key>=<value>|..."
  // escaped, or a hash of it beyond 255 bytes (tests; never a ':').
  static std::string StateKey(RlsUnit unit, std::string_view domain,
                              std::span<const RlsEntryView> entries);
  // The rate whose capacity over `window_ms` is exactly `requests_per_unit`.
  static double RateFor(uint32_t requests_per_unit, int64_t window_ms);

  // Calls `f` on each provider built so far (shutdown).
  void ForEachProvider(absl::FunctionRef<void(RateLimiter&)> f);

 private:
  RateLimiter* Provider(RlsUnit unit);

  const RateLimitSettings base_;
  Factory factory_ ABSL_GUARDED_BY(build_mu_);
  mutable absl::Mutex config_mu_;
  std::shared_ptr<const RlsConfig> config_ ABSL_GUARDED_BY(config_mu_);
  absl::Mutex build_mu_;
  std::array<std::unique_ptr<RateLimiter>, kRlsUnits> owned_ ABSL_GUARDED_BY(build_mu_);
  std::array<std::atomic<RateLimiter*>, kRlsUnits> providers_{};
};

}  // namespace distkit::core
