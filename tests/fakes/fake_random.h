#pragma once

// Test doubles for rate limiting: a scripted RandomSource and a settable fake clock.

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <random>

#include "daemon/core/rate_limit.h"
#include "daemon/core/types.h"

namespace distkit::testing {

// Returns the scripted values in order; once they run out, `fallback` (default 0.5) or, when
// seeded, a deterministic mt19937_64 stream. Counts every draw.
class ScriptedRandom final : public core::RandomSource {
 public:
  ScriptedRandom() = default;
  explicit ScriptedRandom(uint64_t seed) : seeded_(true), gen_(seed) {}

  void Push(double v) {
    std::lock_guard<std::mutex> lock(mu_);
    script_.push_back(v);
  }
  void set_fallback(double v) {
    std::lock_guard<std::mutex> lock(mu_);
    fallback_ = v;
  }
  int calls() const { return calls_.load(); }

  double Uniform01() override {
    ++calls_;
    std::lock_guard<std::mutex> lock(mu_);
    if (!script_.empty()) {
      const double v = script_.front();
      script_.pop_front();
      return v;
    }
    if (seeded_) return static_cast<double>(gen_() >> 11) * 0x1.0p-53;
    return fallback_;
  }

 private:
  std::mutex mu_;
  std::deque<double> script_;
  double fallback_ = 0.5;
  bool seeded_ = false;
  std::mt19937_64 gen_;
  std::atomic<int> calls_{0};
};

// A monotonic clock that only moves when told (ms resolution is all rate limiting needs).
class ManualClock final : public core::Clock {
 public:
  int64_t NowNs() const override { return now_ns_.load(); }
  int64_t NowMs() const { return now_ns_.load() / 1'000'000; }
  void AdvanceMs(int64_t ms) { now_ns_ += ms * 1'000'000; }

 private:
  std::atomic<int64_t> now_ns_{1'000'000'000'000};  // 1000 s: far from 0
};

}  // namespace distkit::testing
