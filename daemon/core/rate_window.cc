#include "daemon/core/rate_window.h"

#include <algorithm>
#include <limits>
#include <random>

namespace distkit::core {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
constexpr int64_t kLastSecondMs = 1000;

uint64_t SatAdd(uint64_t a, uint64_t b) { return b > kMax - a ? kMax : a + b; }

double WindowSeconds(int64_t window_ms) { return static_cast<double>(window_ms) / 1000.0; }

// One mt19937_64 per thread (no lock, no sharing), seeded once from std::random_device.
class ThreadLocalRandom final : public RandomSource {
 public:
  double Uniform01() override {
    thread_local std::mt19937_64 gen([] {
      std::random_device rd;
      std::seed_seq seq{rd(), rd(), rd(), rd()};
      return std::mt19937_64(seq);
    }());
    return static_cast<double>(gen() >> 11) * 0x1.0p-53;  // 53 random bits: [0, 1)
  }
};

}  // namespace

RandomSource& DefaultRandom() {
  static ThreadLocalRandom random;
  return random;
}

uint64_t SaturatingFloor(double x) {
  if (!(x >= 0)) return 0;  // NaN, negative
  if (x >= 18446744073709551616.0) return kMax;
  return static_cast<uint64_t>(x);
}

uint64_t RateCapacity(double rate_per_second, int64_t window_ms) {
  return SaturatingFloor(rate_per_second * WindowSeconds(window_ms));
}

SuppressedLimits SuppressedLimitsFor(double rate_per_second, int64_t window_ms,
                                     double hard_limit_factor) {
  const uint64_t soft = RateCapacity(rate_per_second, window_ms);
  return {soft, std::max(soft, SaturatingFloor(static_cast<double>(soft) * hard_limit_factor))};
}

// ---- RateWindow ----

uint64_t RateWindow::observed() const { return SatAdd(accepted_, declined_); }

RateWindow::RateWindow(const RateWindow& other) { *this = other; }

RateWindow& RateWindow::operator=(const RateWindow& other) {
  if (this == &other) return *this;
  buf_.reset();
  cap_ = head_ = size_ = 0;
  if (other.size_ > 0) {
    cap_ = other.cap_;
    buf_ = std::make_unique<RateBucket[]>(cap_);
    for (uint32_t i = 0; i < other.size_; ++i) buf_[i] = other.bucket(i);
    size_ = other.size_;
  }
  accepted_ = other.accepted_;
  declined_ = other.declined_;
  return *this;
}

void RateWindow::Grow() {
  const uint32_t cap = cap_ == 0 ? 1 : cap_ * 2;
  auto buf = std::make_unique<RateBucket[]>(cap);
  for (uint32_t i = 0; i < size_; ++i) buf[i] = bucket(i);
  buf_ = std::move(buf);
  cap_ = cap;
  head_ = 0;
}

void RateWindow::Recount() {
  accepted_ = declined_ = 0;
  for (uint32_t i = 0; i < size_; ++i) {
    accepted_ = SatAdd(accepted_, bucket(i).accepted);
    declined_ = SatAdd(declined_, bucket(i).declined);
  }
}

bool RateWindow::Evict(int64_t now_ms, int64_t window_ms) {
  // A saturated total cannot be decremented: recount it from the buckets left.
  const bool saturated = accepted_ == kMax || declined_ == kMax;
  bool evicted = false;
  while (size_ > 0 && now_ms - oldest().ts_ms >= window_ms) {
    if (!saturated) {
      accepted_ -= oldest().accepted;
      declined_ -= oldest().declined;
    }
    head_ = (head_ + 1) & (cap_ - 1);
    --size_;
    evicted = true;
  }
  if (evicted && size_ == 0) {  // an idle key keeps no bucket memory
    buf_.reset();
    cap_ = head_ = 0;
  }
  if (evicted && saturated) Recount();
  return evicted;
}

void RateWindow::Record(int64_t now_ms, int64_t bucket_ms, uint64_t count, uint64_t declined) {
  declined = std::min(declined, count);
  if (size_ == 0 || now_ms - newest().ts_ms < 0 || now_ms - newest().ts_ms > bucket_ms) {
    if (size_ == cap_) Grow();
    at(size_) = RateBucket{now_ms, 0, 0, 0};
    ++size_;
  }
  RateBucket& b = at(size_ - 1);
  b.count = SatAdd(b.count, count);
  b.accepted = SatAdd(b.accepted, count - declined);
  b.declined = SatAdd(b.declined, declined);
  accepted_ = SatAdd(accepted_, count - declined);
  declined_ = SatAdd(declined_, declined);
}

uint64_t RateWindow::ObservedWithin(int64_t now_ms, int64_t age_ms) const {
  uint64_t sum = 0;
  for (size_t i = size_; i > 0; --i) {
    const RateBucket& b = bucket(i - 1);
    if (now_ms - b.ts_ms > age_ms) break;
    sum = SatAdd(sum, b.count);
  }
  return sum;
}

// ---- admission ----

RateIncResult AdmitAbsolute(RateWindow& w, const RateLimitSettings& s, int64_t now_ms,
                            double rate_per_second, uint64_t count) {
  w.Evict(now_ms, s.window_ms);
  const uint64_t capacity = RateCapacity(rate_per_second, s.window_ms);
  RateIncResult r;
  if (count > capacity) {  // can never fit: nothing to wait for
    r.decision = RateDecision::kRejected;
    r.allowed = false;
    return r;
  }
  const uint64_t used = w.observed();
  if (used <= capacity && count <= capacity - used) {
    w.Record(now_ms, s.bucket_ms, count, 0);
    r.used = static_cast<int64_t>(std::min<uint64_t>(used + count, kMax >> 1));
    return r;  // ALLOWED
  }
  r.decision = RateDecision::kRejected;
  r.allowed = false;
  if (!w.empty()) {
    r.retry_after_ms = std::max<int64_t>(0, s.window_ms - (now_ms - w.oldest().ts_ms));
    r.remaining_after_waiting = w.oldest().count;
  }
  return r;
}

double SuppressionFactorFromTotals(uint64_t accepted, uint64_t observed, uint64_t last_second,
                                   int64_t window_ms, SuppressedLimits limits) {
  if (accepted >= limits.hard) return 1;  // accepted, not observed: docs/rate_limiting.md D3
  if (accepted < limits.soft) return 0;
  const double window_s = WindowSeconds(window_ms);
  const double perceived =
      std::max(static_cast<double>(observed) / window_s, static_cast<double>(last_second));
  if (!(perceived > 0)) return limits.soft == 0 ? 1 : 0;
  const double f = 1 - (static_cast<double>(limits.soft) / window_s) / perceived;
  return std::clamp(f, 0.0, 1.0);
}

double ComputeSuppressionFactor(const RateWindow& w, int64_t now_ms, int64_t window_ms,
                                SuppressedLimits limits) {
  if (w.empty()) return 0;
  return SuppressionFactorFromTotals(w.accepted(), w.observed(),
                                     w.ObservedWithin(now_ms, kLastSecondMs), window_ms, limits);
}

double SuppressionFactor(const RateWindow& w, FactorCache& cache, const RateLimitSettings& s,
                         int64_t now_ms, SuppressedLimits limits) {
  // The deterministic cases are cheap and always current; only the formula is cached.
  if (w.empty()) return 0;
  if (w.accepted() >= limits.hard) return 1;
  if (w.accepted() < limits.soft) return 0;
  if (cache.valid && now_ms - cache.computed_at_ms >= 0 &&
      now_ms - cache.computed_at_ms < s.suppression_cache_ms && cache.limits.soft == limits.soft &&
      cache.limits.hard == limits.hard && cache.factor >= 0 && cache.factor <= 1) {
    return cache.factor;
  }
  cache.factor = ComputeSuppressionFactor(w, now_ms, s.window_ms, limits);
  cache.computed_at_ms = now_ms;
  cache.limits = limits;
  cache.valid = true;
  return cache.factor;
}

RateIncResult AdmitSuppressed(RateWindow& w, FactorCache& cache, const RateLimitSettings& s,
                              int64_t now_ms, double rate_per_second, uint64_t count,
                              RandomSource& random) {
  if (w.Evict(now_ms, s.window_ms)) cache.valid = false;
  const SuppressedLimits limits =
      SuppressedLimitsFor(rate_per_second, s.window_ms, s.hard_limit_factor);
  const uint64_t forecast = SatAdd(w.accepted(), count);
  RateIncResult r;
  if (forecast <= limits.soft) {
    w.Record(now_ms, s.bucket_ms, count, 0);
    return r;  // ALLOWED, factor 0
  }
  r.decision = RateDecision::kSuppressed;
  if (forecast > limits.hard) {
    r.suppression_factor = 1;
    r.allowed = false;
  } else {
    r.suppression_factor = SuppressionFactor(w, cache, s, now_ms, limits);
    if (r.suppression_factor <= 0) {
      r.allowed = true;
    } else if (r.suppression_factor >= 1) {
      r.allowed = false;
    } else {
      r.allowed = random.Uniform01() < 1 - r.suppression_factor;
    }
  }
  w.Record(now_ms, s.bucket_ms, count, r.allowed ? 0 : count);
  return r;
}

RateGetResult ReadWindow(RateWindow& w, FactorCache& cache, const RateLimitSettings& s,
                         int64_t now_ms, RateStrategy strategy, double last_rate) {
  if (w.Evict(now_ms, s.window_ms)) cache.valid = false;
  RateGetResult r;
  r.total = w.observed();
  if (strategy == RateStrategy::kSuppressed) {
    r.declined = w.declined();
    r.suppression_factor = SuppressionFactor(
        w, cache, s, now_ms, SuppressedLimitsFor(last_rate, s.window_ms, s.hard_limit_factor));
  }
  return r;
}

}  // namespace distkit::core
