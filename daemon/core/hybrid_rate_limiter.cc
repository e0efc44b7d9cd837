#include "daemon/core/hybrid_rate_limiter.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "daemon/common/check.h"
#include "daemon/common/logging.h"
#include "daemon/common/strings.h"
#include "daemon/common/wait_until.h"
#include "daemon/core/rate_window.h"

namespace distkit::core {
namespace {

constexpr char kScript[] = "ratelimit_hybrid";
constexpr uint64_t kCumMask = (uint64_t{1} << 62) - 1;  // usage cumulatives wrap at 2^62
// Usage not yet confirmed by Redis stays below this (the script's differences must stay far
// below 2^61); declined units beyond it are not recorded (they only feed the factor).
constexpr uint64_t kMaxUnpushed = uint64_t{1} << 52;
constexpr uint64_t kMaxCount = uint64_t{1} << 53;  // SUPPRESSED counts must stay below (REDIS too)
constexpr int64_t kNsPerMs = 1'000'000;
constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

LogEvery g_sync_log(std::chrono::seconds(5));

uint64_t SatAdd(uint64_t a, uint64_t b) { return b > kU64Max - a ? kU64Max : a + b; }
uint64_t CumDiff(uint64_t newer, uint64_t older) { return (newer - older) & kCumMask; }

std::string Num(uint64_t v) { return absl::StrCat(v); }

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The suppression factor from the totals of the last sync (HYBRID knows the global window only
// as totals): no units → 0, else rate_window.h's formula.
double FactorFromTotals(uint64_t accepted, uint64_t observed, uint64_t last_second,
                        int64_t window_ms, SuppressedLimits limits) {
  if (observed == 0) return 0;
  return SuppressionFactorFromTotals(accepted, observed, last_second, window_ms, limits);
}

SuppressedLimits Clamp(SuppressedLimits l) {
  return {std::min(l.soft, kHybridMaxCapacity), std::min(l.hard, kHybridMaxCapacity)};
}

struct KeyRef {
  RateStrategy strategy;
  std::string_view ns, key;
};

}  // namespace

// ---------------------------------------------------------------- state

struct HybridRateLimiter::MapKey {
  RateStrategy strategy;
  std::string ns, key;
};

namespace {

using MapKey = HybridRateLimiter::MapKey;

struct MapKeyHash {
  using is_transparent = void;
  size_t operator()(const KeyRef& k) const {
    return absl::HashOf(static_cast<int>(k.strategy), AV(k.ns), AV(k.key));
  }
  size_t operator()(const MapKey& k) const { return (*this)(KeyRef{k.strategy, k.ns, k.key}); }
};

struct MapKeyEq {
  using is_transparent = void;
  static KeyRef Ref(const KeyRef& k) { return k; }
  static KeyRef Ref(const MapKey& k) { return {k.strategy, k.ns, k.key}; }
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    const KeyRef x = Ref(a), y = Ref(b);
    return x.strategy == y.strategy && x.ns == y.ns && x.key == y.key;
  }
};

}  // namespace

struct HybridRateLimiter::KeyState {
  MapKey map_key;         // its key in the shard's map
  std::string member;     // this state's name in Redis: dedup id + "." + serial
  std::string redis_key;  // HybridRateLimitKey
  bool dirty = false;     // in its shard's dirty list (looked at by the next sync pass)

  // Usage this state recorded (modulo 2^62) and how much of it Redis confirmed.
  uint64_t cum_acc = 0, cum_dec = 0;
  uint64_t stored_acc = 0, stored_dec = 0;

  // Lease: units that may still be admitted from memory, until lease_until_ns.
  uint64_t avail = 0;
  int64_t lease_until_ns = 0;

  // The global state from the last successful sync (sent at synced_ns).
  bool synced = false;
  int64_t synced_ns = 0;
  uint64_t g_acc = 0, g_dec = 0, g_last_second = 0;
  int64_t oldest_age_ms = -1;
  uint64_t oldest_acc = 0;
  int64_t n_active = 1;
  int64_t free = 0;  // capacity − used − every lease, after our grant
  double redis_rate = 0;
  // This state's usage since that sync was sent (not in the g_* totals).
  uint64_t acc_since = 0, dec_since = 0;

  // Every unit this state admitted or declined, by local time: the degraded budget, the
  // units of the unpushed usage that already left the window, retry hints.
  RateWindow own;
  FactorCache factor;        // over the global view
  FactorCache local_factor;  // over `own` (degraded decisions)

  uint64_t capacity = 0;  // lease capacity of the last request (ABSOLUTE capacity / hard limit)
  uint64_t synced_capacity = 0;  // the capacity of the last successful sync (its lease and free)
  double rate = 0;               // rate of the last request
  int64_t last_request_ns = 0;
  uint64_t requests_since_sync = 0;

  // Units requested (admitted or not) in the current and the previous period of active_ms / 2:
  // a sync asks for a lease of twice that at most (docs/rate_limiting.md, lease sizing), so a
  // quiet daemon does not hold capacity that another one's requests need.
  uint64_t demand_cur = 0, demand_prev = 0;
  int64_t demand_since_ns = 0;
  void RollDemand(int64_t now_ns, int64_t period_ns) {
    if (now_ns - demand_since_ns < period_ns) return;
    demand_prev = now_ns - demand_since_ns < 2 * period_ns ? demand_cur : 0;
    demand_cur = 0;
    demand_since_ns = now_ns;
  }
  uint64_t Demand() const { return std::max<uint64_t>(1, SatAdd(demand_cur, demand_prev) * 2); }

  // Sync bookkeeping: one script call in flight at a time.
  bool in_flight = false;
  uint64_t sync_id = 0;
  bool last_failed = false;  // the last sync failed: answers are degraded
  uint64_t need = 0;         // largest count waiting for the next sync

  struct IncWaiter {
    RateIncRequest req;
    RateIncCallback done;
    bool synced_for = false;  // a sync that carried its count completed
  };
  std::vector<IncWaiter> inc_waiters;
  std::vector<RateGetCallback> get_waiters;

  // `own` keeps ABSOLUTE units W + B: a unit shares its bucket's opening time (up to B before
  // the unit), and must count for at least W after its admission in the degraded budget.
  // SUPPRESSED keeps rate_window.h's W (AdmitSuppressed evicts by it).
  bool EvictOwn(int64_t now_ms, const RateLimitSettings& s) {
    return own.Evict(now_ms,
                     strategy == RateStrategy::kAbsolute ? s.window_ms + s.bucket_ms : s.window_ms);
  }
  RateStrategy strategy = RateStrategy::kAbsolute;

  uint64_t unpushed_acc() const { return CumDiff(cum_acc, stored_acc); }
  uint64_t unpushed_dec() const { return CumDiff(cum_dec, stored_dec); }
};

struct HybridRateLimiter::Shard {
  absl::Mutex mu;
  absl::flat_hash_map<MapKey, std::unique_ptr<KeyState>, MapKeyHash, MapKeyEq> map
      ABSL_GUARDED_BY(mu);
  // States that may need a periodic sync (a request since their last sync, or a sync that left
  // usage unpushed): a sync pass looks at these only, not at every key held (an idle key costs
  // nothing between the once-a-second eviction walks).
  std::vector<KeyState*> dirty ABSL_GUARDED_BY(mu);
  void MarkDirty(KeyState& st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (st.dirty) return;
    st.dirty = true;
    dirty.push_back(&st);
  }
};

struct HybridRateLimiter::SyncCall {
  MapKey key;
  uint64_t id = 0;
  std::string redis_key;
  std::vector<std::string> args;
  int64_t send_ns = 0;
  uint64_t acc_since_at_send = 0, dec_since_at_send = 0;
  uint64_t need = 0;
  uint64_t held = 0;
  uint64_t capacity = 0;
  uint64_t take = 0;  // count of the first waiting request, admitted by the script if it fits
};

struct HybridRateLimiter::Outcome {
  bool need_sync = false;
  absl::StatusOr<RateIncResult> result;
};

namespace {

int64_t DerivedLeaseMs(const RateLimitSettings& s) {
  return std::max(std::clamp<int64_t>(20 * s.sync_interval_ms, 200, 5000), 3 * s.sync_interval_ms);
}

// Parsed ratelimit_hybrid.lua reply.
struct SyncReply {
  uint64_t grant = 0, limit = 0, acc = 0, dec = 0, last_second = 0, oldest_acc = 0;
  int64_t oldest_age = -1, active = 1, free = 0;
  uint64_t cum_acc = 0, cum_dec = 0;
  double rate = 0;
  uint64_t taken = 0;  // units of the call's `take` admitted by the script
};

bool ParseU64(const redis::Reply& r, uint64_t* out) {
  if (r.type == redis::Reply::Type::kInteger) {
    if (r.integer < 0) return false;
    *out = static_cast<uint64_t>(r.integer);
    return true;
  }
  return r.type == redis::Reply::Type::kString && absl::SimpleAtoi(r.str, out);
}

bool ParseI64(const redis::Reply& r, int64_t* out) {
  if (r.type == redis::Reply::Type::kInteger) {
    *out = r.integer;
    return true;
  }
  return r.type == redis::Reply::Type::kString && absl::SimpleAtoi(r.str, out);
}

absl::StatusOr<SyncReply> ParseSyncReply(absl::StatusOr<redis::Reply> raw) {
  if (!raw.ok()) return raw.status();
  const redis::Reply& r = *raw;
  if (r.is_error()) return absl::InternalError(absl::StrCat("ratelimit_hybrid.lua: ", r.str));
  SyncReply out;
  const auto& e = r.elements;
  int64_t now = 0;
  if (r.type != redis::Reply::Type::kArray || (e.size() != 13 && e.size() != 14) ||
      !ParseU64(e[0], &out.grant) || !ParseU64(e[1], &out.limit) || !ParseU64(e[2], &out.acc) ||
      !ParseU64(e[3], &out.dec) || !ParseU64(e[4], &out.last_second) ||
      !ParseI64(e[5], &out.oldest_age) || !ParseU64(e[6], &out.oldest_acc) ||
      !ParseI64(e[7], &out.active) || !ParseI64(e[8], &out.free) || !ParseU64(e[9], &out.cum_acc) ||
      !ParseU64(e[10], &out.cum_dec) || !ParseI64(e[11], &now) ||
      e[12].type != redis::Reply::Type::kString) {
    return absl::InternalError(
        absl::StrCat("unexpected ratelimit_hybrid.lua reply: ", r.DebugString()));
  }
  if (!e[12].str.empty() && !absl::SimpleAtod(e[12].str, &out.rate)) out.rate = 0;
  if (e.size() == 14 && !ParseU64(e[13], &out.taken)) {
    return absl::InternalError(
        absl::StrCat("unexpected ratelimit_hybrid.lua reply: ", r.DebugString()));
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------- construction

HybridRateLimiter::HybridRateLimiter(redis::RedisClient* redis, HybridRateLimiterOptions options,
                                     const Clock* clock)
    : redis_(redis),
      options_(std::move(options)),
      s_(options_.settings),
      clock_(clock),
      random_(options_.random != nullptr ? *options_.random : DefaultRandom()),
      lease_ms_(options_.lease_ms > 0 ? options_.lease_ms : DerivedLeaseMs(options_.settings)),
      lease_grace_ms_(options_.lease_grace_ms > 0 ? options_.lease_grace_ms
                                                  : std::max<int64_t>(50, lease_ms_ / 4)),
      active_ms_(std::max<int64_t>(lease_ms_ / 2, 2 * options_.settings.sync_interval_ms)),
      idle_evict_ms_(options_.settings.idle_evict_ms > 0 ? options_.settings.idle_evict_ms
                                                         : options_.settings.window_ms + 1000),
      sync_task_(std::chrono::milliseconds(s_.sync_interval_ms),
                 [this, next_evict = std::chrono::steady_clock::now()]() mutable {
                   SyncNow();
                   if (std::chrono::steady_clock::now() >= next_evict) {
                     EvictIdle();
                     next_evict = std::chrono::steady_clock::now() + std::chrono::seconds(1);
                   }
                 }) {}

HybridRateLimiter::~HybridRateLimiter() {
  sync_task_.Stop();
  // Replies capture `this`: the client answers every command (its deadline), so this ends.
  WaitUntil([this] { return outstanding_.load() <= 0; },
            std::chrono::steady_clock::time_point::max());
}

void HybridRateLimiter::Start() { sync_task_.Start(); }

HybridRateLimiter::Shard& HybridRateLimiter::ShardFor(RateStrategy strategy, std::string_view ns,
                                                      std::string_view key) {
  return shards_.ShardFor(MapKeyHash{}(KeyRef{strategy, ns, key}));
}

// ---------------------------------------------------------------- decisions

HybridRateLimiter::Outcome HybridRateLimiter::Decide(KeyState& st, const RateIncRequest& req,
                                                     int64_t now_ns, bool may_sync) {
  const int64_t now_ms = now_ns / kNsPerMs;
  const bool suppressed = req.strategy == RateStrategy::kSuppressed;
  const uint64_t count = req.count;
  const bool degraded = st.last_failed;
  RateIncResult r;
  r.degraded = degraded;
  auto answer = [&](RateIncResult res) -> Outcome {
    if (res.degraded) stats_.degraded++;
    return {false, res};
  };

  SuppressedLimits limits;
  uint64_t capacity = 0;
  if (suppressed) {
    if (count >= kMaxCount) {
      return {false, absl::OutOfRangeError("count must be below 2^53 for SUPPRESSED")};
    }
    limits = Clamp(SuppressedLimitsFor(req.rate_per_second, s_.window_ms, s_.hard_limit_factor));
    capacity = limits.hard;
  } else {
    capacity = std::min(RateCapacity(req.rate_per_second, s_.window_ms), kHybridMaxCapacity);
  }
  if (!suppressed && count > capacity) {
    // Can never fit: REJECTED (0, 0). Nothing recorded, and not a request of this key either:
    // it must not make the next sync ask for (and reserve) a lease.
    r.decision = RateDecision::kRejected;
    r.allowed = false;
    return answer(r);
  }
  st.capacity = capacity;
  st.last_request_ns = now_ns;
  st.requests_since_sync++;
  st.rate = req.rate_per_second;
  st.RollDemand(now_ns, active_ms_ * kNsPerMs / 2);
  st.demand_cur = SatAdd(st.demand_cur, count);
  if (st.EvictOwn(now_ms, s_)) st.local_factor.valid = false;
  const bool lease_valid = st.synced && now_ns < st.lease_until_ns;
  // First touch, or the lease ran out while Redis answers: ask Redis before deciding.
  if (!lease_valid && !degraded && may_sync) return {true, r};

  // Degraded (the last sync failed) and the lease lapsed (no sync for lease_ms): decide like
  // LOCAL over this daemon's own usage, with 1/N of the rate (N = daemons active at the last
  // successful sync). While the lease is valid, a failed sync changes nothing but `degraded`.
  const double local_rate =
      req.rate_per_second / static_cast<double>(std::max<int64_t>(1, st.n_active));
  const uint64_t view_acc = SatAdd(st.g_acc, st.acc_since);
  const auto fits_lease = [&](uint64_t c) {
    return lease_valid && c <= st.avail && c <= capacity && view_acc <= capacity - c;
  };
  // A sync may grant more: worth waiting for when the request fits in what no one holds.
  const auto sync_may_help = [&](uint64_t c) {
    if (degraded || !may_sync) return false;
    if (!lease_valid) return true;
    // A higher rate than the last sync's: Redis may grant from the larger capacity.
    if (capacity > st.synced_capacity) return true;
    return st.free > 0 && c <= SatAdd(st.avail, static_cast<uint64_t>(st.free));
  };
  const auto take = [&](uint64_t c, bool from_lease) {
    if (from_lease) st.avail -= c;
    st.cum_acc = (st.cum_acc + c) & kCumMask;
    st.acc_since = SatAdd(st.acc_since, c);
    st.own.Record(now_ms, s_.bucket_ms, c, 0);
  };
  const auto record_declined = [&](uint64_t c) {
    if (st.unpushed_dec() + c > kMaxUnpushed) return;  // see kMaxUnpushed
    st.cum_dec = (st.cum_dec + c) & kCumMask;
    st.dec_since = SatAdd(st.dec_since, c);
    st.own.Record(now_ms, s_.bucket_ms, c, c);
  };
  // A SUPPRESSED answer of the degraded budget (AdmitSuppressed recorded it in `own`).
  const auto local_suppressed = [&]() -> Outcome {
    RateIncResult local =
        AdmitSuppressed(st.own, st.local_factor, s_, now_ms, local_rate, count, random_);
    if (local.allowed) {
      st.cum_acc = (st.cum_acc + count) & kCumMask;
      st.acc_since = SatAdd(st.acc_since, count);
    } else if (st.unpushed_dec() + count <= kMaxUnpushed) {
      st.cum_dec = (st.cum_dec + count) & kCumMask;
      st.dec_since = SatAdd(st.dec_since, count);
    }
    local.degraded = true;
    return answer(local);
  };

  if (!suppressed) {
    if (fits_lease(count)) {
      take(count, true);
      return answer(r);
    }
    if (sync_may_help(count)) return {true, r};
    if (degraded && !lease_valid) {
      // Cut off for longer than a lease: the degraded budget, all-or-nothing over this daemon's
      // own units of the last W (+ B, see EvictOwn).
      const uint64_t budget = std::min(RateCapacity(local_rate, s_.window_ms), kHybridMaxCapacity);
      if (count <= budget && st.own.accepted() <= budget - count) {
        take(count, /*from_lease=*/false);
        return answer(r);
      }
      r.decision = RateDecision::kRejected;
      r.allowed = false;
      if (count <= budget && !st.own.empty()) {
        r.retry_after_ms =
            std::max<int64_t>(0, s_.window_ms + s_.bucket_ms - (now_ms - st.own.oldest().ts_ms));
        r.remaining_after_waiting = st.own.oldest().count - st.own.oldest().declined;
      }
      return answer(r);
    }
    r.decision = RateDecision::kRejected;
    r.allowed = false;
    // Retry hint: the window has room but other daemons hold it as leases: they shrink to their
    // demand at their next sync (one interval); else the oldest live bucket of the last synced
    // state, else our own oldest, else the next sync.
    const int64_t since_sync_ms = (now_ns - st.synced_ns) / kNsPerMs;
    if (st.synced && view_acc <= capacity - count) {
      r.retry_after_ms = s_.sync_interval_ms;
      r.remaining_after_waiting = capacity - view_acc;
    } else if (st.synced && st.oldest_age_ms >= 0 &&
               st.oldest_age_ms + since_sync_ms < s_.window_ms) {
      r.retry_after_ms = s_.window_ms - (st.oldest_age_ms + since_sync_ms);
      r.remaining_after_waiting = st.oldest_acc;
    } else if (!st.own.empty()) {
      r.retry_after_ms = std::max<int64_t>(0, s_.window_ms - (now_ms - st.own.oldest().ts_ms));
      r.remaining_after_waiting = st.own.oldest().count - st.own.oldest().declined;
    } else {
      r.retry_after_ms = s_.sync_interval_ms;
    }
    return answer(r);
  }

  // SUPPRESSED (rate_window.h AdmitSuppressed over the global view; the hard limit is leased).
  if (!lease_valid && degraded) return local_suppressed();
  const uint64_t forecast = SatAdd(view_acc, count);
  double f = 0;
  bool admit = true;
  if (forecast > limits.soft) {
    r.decision = RateDecision::kSuppressed;
    if (forecast > limits.hard) {
      f = 1;
    } else {
      const int64_t since_sync_ms = (now_ns - st.synced_ns) / kNsPerMs;
      const uint64_t observed =
          SatAdd(SatAdd(st.g_acc, st.g_dec), SatAdd(st.acc_since, st.dec_since));
      const uint64_t last_second =
          SatAdd(since_sync_ms <= 1000 ? st.g_last_second : 0, SatAdd(st.acc_since, st.dec_since));
      if (st.factor.valid && now_ms - st.factor.computed_at_ms >= 0 &&
          now_ms - st.factor.computed_at_ms < s_.suppression_cache_ms &&
          st.factor.limits.soft == limits.soft && st.factor.limits.hard == limits.hard) {
        f = st.factor.factor;
      } else {
        f = FactorFromTotals(view_acc, observed, last_second, s_.window_ms, limits);
        st.factor = FactorCache{true, now_ms, f, limits};
      }
    }
    admit = f <= 0 ? true : (f >= 1 ? false : random_.Uniform01() < 1 - f);
  }
  if (admit) {
    if (fits_lease(count)) {
      take(count, true);
      r.suppression_factor = r.decision == RateDecision::kSuppressed ? f : 0;
      return answer(r);
    }
    if (sync_may_help(count)) return {true, r};
    f = 1;  // the rest of the hard limit is leased to other daemons
  }
  record_declined(count);
  r.decision = RateDecision::kSuppressed;
  r.suppression_factor = f;
  r.allowed = false;
  return answer(r);
}

std::optional<absl::StatusOr<RateIncResult>> HybridRateLimiter::TryInc(const RateIncRequest& req) {
  Shard& shard = ShardFor(req.strategy, req.ns, req.key);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.map.find(KeyRef{req.strategy, req.ns, req.key});
  if (it == shard.map.end()) return std::nullopt;
  KeyState& st = *it->second;
  if (!st.inc_waiters.empty()) return std::nullopt;  // keep the order of waiting requests
  Outcome o = Decide(st, req, NowNs(), /*may_sync=*/true);
  if (st.requests_since_sync > 0) shard.MarkDirty(st);
  if (o.need_sync) return std::nullopt;
  return std::move(o.result);
}

void HybridRateLimiter::Inc(const RateIncRequest& req, RateIncCallback done) {
  std::optional<SyncCall> call;
  std::optional<absl::StatusOr<RateIncResult>> now_result;
  {
    Shard& shard = ShardFor(req.strategy, req.ns, req.key);
    absl::MutexLock lock(&shard.mu);
    auto it = shard.map.find(KeyRef{req.strategy, req.ns, req.key});
    if (it == shard.map.end() && stats_.keys.load() >= options_.max_keys) {
      now_result = absl::ResourceExhaustedError(absl::StrCat(
          "too many rate-limit keys held by the HYBRID provider (--max_rate_limit_keys=",
          options_.max_keys,
          "); keys already held keep working, new ones are refused until idle keys are "
          "evicted"));
    } else if (it == shard.map.end()) {
      auto st = std::make_unique<KeyState>();
      st->map_key = MapKey{req.strategy, req.ns, req.key};
      st->member = absl::StrCat(options_.dedup_id, ".", next_serial_++);
      st->redis_key = HybridRateLimitKey(req.ns, req.key, req.strategy);
      st->strategy = req.strategy;
      it = shard.map.emplace(MapKey{req.strategy, req.ns, req.key}, std::move(st)).first;
      stats_.keys++;
    }
    if (!now_result) {
      KeyState& st = *it->second;
      const int64_t now = NowNs();
      Outcome o;
      if (st.inc_waiters.empty()) o = Decide(st, req, now, /*may_sync=*/true);
      if (st.requests_since_sync > 0) shard.MarkDirty(st);
      if (!st.inc_waiters.empty() || o.need_sync) {
        st.need = std::max(st.need, req.count);
        st.last_request_ns = now;
        st.inc_waiters.push_back({req, std::move(done)});
        if (!st.in_flight) call = BeginSync(it->first, st, now);
      } else {
        now_result = std::move(o.result);
      }
    }
  }
  if (now_result) {
    done(std::move(*now_result));  // NOLINT(bugprone-use-after-move): moved only when waiting
    return;
  }
  if (call) Send(std::move(*call));
}

void HybridRateLimiter::Get(const std::string& ns, const std::string& key, RateStrategy strategy,
                            RateGetCallback done) {
  std::optional<SyncCall> call;
  bool known = false;
  {
    Shard& shard = ShardFor(strategy, ns, key);
    absl::MutexLock lock(&shard.mu);
    auto it = shard.map.find(KeyRef{strategy, ns, key});
    if (it != shard.map.end()) {
      // Known key: answer after a sync (pushes our usage, reads everyone's).
      known = true;
      KeyState& st = *it->second;
      st.get_waiters.push_back(std::move(done));
      if (!st.in_flight) call = BeginSync(it->first, st, NowNs());
    }
  }
  if (known) {
    if (call) Send(std::move(*call));
    return;
  }
  // Unknown here: read the global state without creating anything.
  std::vector<std::string> args = {"read",
                                   absl::StrCat(options_.dedup_id, ".read"),
                                   "0",
                                   "0",
                                   "0",
                                   "0",
                                   "0",
                                   "0",
                                   "0",
                                   "0",
                                   "0",
                                   "0",
                                   Num(s_.window_ms),
                                   Num(s_.bucket_ms),
                                   "1",
                                   ""};
  outstanding_++;
  redis_->Script(
      kScript, {HybridRateLimitKey(ns, key, strategy)}, std::move(args),
      // NOLINTNEXTLINE(bugprone-use-after-move): moved above only for a known key (returned).
      [this, strategy, done = std::move(done)](absl::StatusOr<redis::Reply> raw) mutable {
        auto r = ParseSyncReply(std::move(raw));
        if (!r.ok()) {
          done(r.status());
        } else {
          RateGetResult g;
          if (strategy == RateStrategy::kSuppressed) {
            g.total = SatAdd(r->acc, r->dec);
            g.declined = r->dec;
            const auto limits =
                Clamp(SuppressedLimitsFor(r->rate, s_.window_ms, s_.hard_limit_factor));
            g.suppression_factor =
                FactorFromTotals(r->acc, g.total, r->last_second, s_.window_ms, limits);
          } else {
            g.total = r->acc;
          }
          done(g);
        }
        outstanding_--;
      });
}

// ---------------------------------------------------------------- sync

bool HybridRateLimiter::NeedsPeriodicSync(const KeyState& st, int64_t now_ns) const {
  if (st.in_flight) return false;
  if (st.unpushed_acc() != 0 || st.unpushed_dec() != 0) return true;
  if (!st.inc_waiters.empty() || !st.get_waiters.empty()) return true;
  if (releasing_.load()) return st.avail > 0 && now_ns < st.lease_until_ns;  // give it back
  // Requests (admitted or not) since the last sync: push, renew the lease, see what was freed.
  // A key without requests costs nothing: its lease lapses by itself.
  return st.requests_since_sync > 0;
}

HybridRateLimiter::SyncCall HybridRateLimiter::BeginSync(const MapKey& key, KeyState& st,
                                                         int64_t now_ns) {
  const int64_t now_ms = now_ns / kNsPerMs;
  if (st.EvictOwn(now_ms, s_)) st.local_factor.valid = false;
  const bool want = !releasing_.load() && (now_ns - st.last_request_ns <= active_ms_ * kNsPerMs ||
                                           !st.inc_waiters.empty());
  if (!want || !(st.synced && now_ns < st.lease_until_ns)) st.avail = 0;  // released or expired
  // Usage older than the window (admitted while Redis was unreachable) is not put in a bucket.
  const uint64_t un_acc = st.unpushed_acc(), un_dec = st.unpushed_dec();
  const uint64_t live_acc = st.own.accepted(), live_dec = st.own.declined();
  SyncCall call;
  call.key = key;
  call.id = next_sync_id_++;
  call.send_ns = now_ns;
  call.acc_since_at_send = st.acc_since;
  call.dec_since_at_send = st.dec_since;
  call.need = want ? std::min(st.need, st.capacity) : 0;
  call.held = st.avail;
  call.capacity = st.capacity;
  // The first waiting ABSOLUTE request may be admitted by the script itself (when its rate is
  // the one the sync carries): a key touched once then costs one script, not a lease sync and
  // a push. Not while degraded: that request is decided from the degraded budget.
  if (want && !st.last_failed && !st.inc_waiters.empty() &&
      st.strategy == RateStrategy::kAbsolute) {
    const RateIncRequest& first = st.inc_waiters.front().req;
    if (std::min(RateCapacity(first.rate_per_second, s_.window_ms), kHybridMaxCapacity) ==
            st.capacity &&
        first.count <= st.capacity) {
      call.take = first.count;
    }
  }
  st.RollDemand(now_ns, active_ms_ * kNsPerMs / 2);
  call.redis_key = st.redis_key;
  call.args = {"sync",
               st.member,
               Num(st.cum_acc),
               Num(st.cum_dec),
               Num(st.stored_acc),
               Num(st.stored_dec),
               Num(un_acc > live_acc ? un_acc - live_acc : 0),
               Num(un_dec > live_dec ? un_dec - live_dec : 0),
               Num(st.avail),
               want ? "1" : "0",
               Num(call.need),
               Num(st.capacity),
               Num(s_.window_ms),
               Num(s_.bucket_ms),
               Num(lease_ms_ + lease_grace_ms_),
               st.rate > 0 ? FormatDouble(st.rate) : "",
               Num(want ? st.Demand() : 0),
               Num(call.take)};
  st.in_flight = true;
  st.sync_id = call.id;
  st.need = 0;
  st.requests_since_sync = 0;
  return call;
}

void HybridRateLimiter::Send(SyncCall call) {
  stats_.syncs++;
  outstanding_++;
  auto keys = std::vector<std::string>{call.redis_key};
  auto args = std::move(call.args);
  redis_->Script(kScript, std::move(keys), std::move(args),
                 [this, call = std::move(call)](absl::StatusOr<redis::Reply> raw) {
                   Complete(call, std::move(raw));
                   outstanding_--;
                 });
}

void HybridRateLimiter::Complete(const SyncCall& call, absl::StatusOr<redis::Reply> raw) {
  auto reply = ParseSyncReply(std::move(raw));
  if (!reply.ok()) {
    stats_.sync_failures++;
    if (g_sync_log.ShouldLog()) {
      spdlog::warn("HYBRID rate limit sync of {}/{} failed (deciding locally, will retry): {}",
                   call.key.ns, call.key.key, reply.status().ToString());
    }
  }
  struct IncReady {
    RateIncCallback done;
    absl::StatusOr<RateIncResult> result;
  };
  std::vector<IncReady> inc_ready;
  std::vector<std::pair<RateGetCallback, RateGetResult>> get_ready;
  std::optional<SyncCall> next;
  {
    Shard& shard = ShardFor(call.key.strategy, call.key.ns, call.key.key);
    absl::MutexLock lock(&shard.mu);
    auto it = shard.map.find(call.key);
    // A state with a sync in flight is never evicted, and only its own reply clears in_flight.
    DK_CHECK(it != shard.map.end() && it->second->in_flight && it->second->sync_id == call.id,
             "a HYBRID sync reply finds its key state waiting for it");
    KeyState& st = *it->second;
    st.in_flight = false;
    const int64_t now = NowNs();
    if (reply.ok()) {
      const SyncReply& r = *reply;
      st.stored_acc = r.cum_acc & kCumMask;
      st.stored_dec = r.cum_dec & kCumMask;
      // Lease units used since the send (x) were taken from `held`, which Redis kept reserved;
      // beyond the member's limit (its fair share) the lease is trimmed, and the next sync
      // reserves only what is left.
      const uint64_t x = call.held - std::min(call.held, st.avail);
      st.avail = std::min(SatAdd(st.avail, r.grant), r.limit > x ? r.limit - x : 0);
      st.lease_until_ns = call.send_ns + lease_ms_ * kNsPerMs;
      st.synced = true;
      st.synced_ns = call.send_ns;
      st.synced_capacity = call.capacity;
      st.g_acc = r.acc;
      st.g_dec = r.dec;
      st.g_last_second = r.last_second;
      st.oldest_age_ms = r.oldest_age;
      st.oldest_acc = r.oldest_acc;
      st.n_active = std::max<int64_t>(1, r.active);
      st.free = r.free;
      st.redis_rate = r.rate;
      st.acc_since -= std::min(st.acc_since, call.acc_since_at_send);
      st.dec_since -= std::min(st.dec_since, call.dec_since_at_send);
      st.factor.valid = false;
      st.last_failed = false;
    } else {
      st.last_failed = true;
    }
    // The first waiting request, when the script admitted it (`take`). A lost reply may or may
    // not have admitted it: it is admitted here either way (degraded), and its units join this
    // state's cumulative, so the next sync pushes them or finds them already counted: exactly
    // once. (At most one request per failed sync is admitted without Redis deciding it.)
    std::vector<KeyState::IncWaiter> waiting;
    waiting.swap(st.inc_waiters);
    size_t first = 0;
    const uint64_t taken = !reply.ok() ? call.take : reply->taken == call.take ? call.take : 0;
    if (taken > 0) {
      st.cum_acc = (st.cum_acc + taken) & kCumMask;
      if (!reply.ok()) st.acc_since = SatAdd(st.acc_since, taken);  // not in the g_* totals
      st.own.Record(now / kNsPerMs, s_.bucket_ms, taken, 0);
      if (!waiting.empty() && waiting.front().req.count == taken) {
        RateIncResult r;
        r.decision = RateDecision::kAllowed;
        r.allowed = true;
        r.degraded = !reply.ok();
        if (r.degraded) stats_.degraded++;
        stats_.waited++;
        inc_ready.push_back({std::move(waiting.front().done), r});
        first = 1;
      }
    }
    // Waiting requests: decided now; one whose count this sync did not carry may ask once more.
    for (size_t i = first; i < waiting.size(); ++i) {
      auto& w = waiting[i];
      const bool may_sync = reply.ok() && !w.synced_for && w.req.count > call.need;
      Outcome o = Decide(st, w.req, now, may_sync);
      if (o.need_sync) {
        w.synced_for = true;
        st.need = std::max(st.need, w.req.count);
        st.inc_waiters.push_back(std::move(w));
      } else {
        stats_.waited++;
        inc_ready.push_back({std::move(w.done), std::move(o.result)});
      }
    }
    for (auto& done : st.get_waiters) {
      RateGetResult g;
      const uint64_t acc = SatAdd(st.g_acc, st.acc_since);
      const uint64_t dec = SatAdd(st.g_dec, st.dec_since);
      if (call.key.strategy == RateStrategy::kSuppressed) {
        g.total = SatAdd(acc, dec);
        g.declined = dec;
        const double rate = st.rate > 0 ? st.rate : st.redis_rate;
        const auto limits = Clamp(SuppressedLimitsFor(rate, s_.window_ms, s_.hard_limit_factor));
        g.suppression_factor = FactorFromTotals(
            acc, g.total, SatAdd(st.g_last_second, SatAdd(st.acc_since, st.dec_since)),
            s_.window_ms, limits);
      } else {
        g.total = acc;
      }
      get_ready.emplace_back(std::move(done), g);
    }
    st.get_waiters.clear();
    if (!st.inc_waiters.empty()) {
      next = BeginSync(it->first, st, now);
    } else if (NeedsPeriodicSync(st, now)) {
      shard.MarkDirty(st);  // requests while it flew, or usage this sync could not push
    }
  }
  for (auto& r : inc_ready) r.done(std::move(r.result));
  for (auto& [done, g] : get_ready) done(g);
  if (next) Send(std::move(*next));
}

void HybridRateLimiter::SyncNow() {
  std::vector<SyncCall> calls;
  const int64_t now = NowNs();
  const bool every_key = releasing_.load();  // Shutdown: every lease is given back
  std::vector<KeyState*> dirty;
  for (int i = 0; i < kShards; ++i) {
    Shard& shard = shards_[i];
    absl::MutexLock lock(&shard.mu);
    if (every_key) {
      for (auto& [k, st] : shard.map) {
        if (NeedsPeriodicSync(*st, now)) calls.push_back(BeginSync(k, *st, now));
      }
      continue;
    }
    // A state in flight leaves the list: its completion puts it back if it still needs a sync.
    dirty.swap(shard.dirty);
    for (KeyState* st : dirty) {
      st->dirty = false;
      if (NeedsPeriodicSync(*st, now)) calls.push_back(BeginSync(st->map_key, *st, now));
    }
    dirty.clear();
  }
  // All enqueued at once: the executor writes them as one pipeline.
  for (auto& c : calls) Send(std::move(c));
}

void HybridRateLimiter::EvictIdle() {
  const int64_t now = NowNs();
  const int64_t now_ms = now / kNsPerMs;
  int64_t total = 0;
  size_t released = 0, removed = 0;
  for (int i = 0; i < kShards; ++i) {
    Shard& shard = shards_[i];
    absl::MutexLock lock(&shard.mu);
    removed += absl::erase_if(shard.map, [&](auto& kv) {
      KeyState& st = *kv.second;
      if (st.in_flight || !st.inc_waiters.empty() || !st.get_waiters.empty()) return false;
      if (now - st.last_request_ns <= idle_evict_ms_ * kNsPerMs) return false;
      if (st.avail > 0 && now < st.lease_until_ns) return false;  // release it first
      st.EvictOwn(now_ms, s_);
      // Usage Redis has not confirmed is kept until pushed, unless all of it left the window.
      if (!((st.unpushed_acc() == 0 && st.unpushed_dec() == 0) || st.own.empty())) return false;
      if (st.dirty) std::erase(shard.dirty, &st);
      return true;
    });
    released += ShrinkIfSparse(shard.map);
    if (shard.dirty.capacity() > 64 && shard.dirty.size() * 4 < shard.dirty.capacity()) {
      shard.dirty.shrink_to_fit();
    }
    total += static_cast<int64_t>(shard.map.size());
  }
  stats_.keys = total;
  TrimHeapAfterShrink(released + removed * sizeof(KeyState));
}

size_t HybridRateLimiter::capacity() {
  size_t n = 0;
  for (int i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    n += shards_[i].map.capacity();
  }
  return n;
}

int64_t HybridRateLimiter::Shutdown(std::chrono::milliseconds timeout) {
  sync_task_.Stop();
  releasing_ = true;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left = [&] {
    int64_t n = 0;
    const int64_t now = NowNs();
    for (int i = 0; i < kShards; ++i) {
      absl::MutexLock lock(&shards_[i].mu);
      for (auto& [k, st] : shards_[i].map) {
        if (st->in_flight || NeedsPeriodicSync(*st, now)) ++n;
      }
    }
    return n;
  };
  if (RetryUntil([this] { SyncNow(); }, [this] { return outstanding_.load() <= 0; },
                 [&] { return left() == 0; }, deadline)) {
    return 0;
  }
  return left();
}

}  // namespace distkit::core
