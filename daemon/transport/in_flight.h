#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>

#include "daemon/common/wait_until.h"
#include "daemon/core/validation.h"

namespace distkit::transport {

// What a call is charged against InFlight's budget from handler entry until gRPC is done with
// it: an estimate of the parsed request, the answer and gRPC's per-call state. Measured with
// tests/e2e/transport_limits_e2e_test.cc: a Batch of ~1 000 LAX increments (20 KB on the wire)
// whose answer cannot be sent holds ≈ 240 KB, about 240 bytes per item; the charge doubles it.
inline constexpr int64_t kCallBytes = 8 << 10;
inline constexpr int64_t kBatchItemBytes = 512;
// Larger batches are refused as invalid right after admission: they are charged as the largest.
inline constexpr int64_t BatchCallBytes(int64_t items) {
  return kCallBytes + std::min(items, static_cast<int64_t>(core::kMaxBatchItems)) * kBatchItemBytes;
}

// Counts RPCs, for two purposes.
//
// Running (Enter/Leave): from handler entry to Finish. gRPC's Server::Shutdown(deadline) waits
// for the full deadline while any client keeps a connection open, even when no call is running,
// so the shutdown sequence waits on this count instead and then shuts down with a short deadline.
//
// Admitted (TryAdmit/Release): from handler entry until gRPC is done with the call (OnDone: its
// answer sent, or the call cancelled), each call holding its estimated bytes. A finished call
// whose answer the client never reads (HTTP/2 window 0) keeps its request and answer in memory
// until then, so this, not Running, is what bounds the memory of calls: beyond the budget, new
// calls are refused (RESOURCE_EXHAUSTED) instead of held.
class InFlight {
 public:
  void Enter() { n_.fetch_add(1, std::memory_order_relaxed); }
  void Leave() { n_.fetch_sub(1, std::memory_order_acq_rel); }
  int64_t count() const { return n_.load(std::memory_order_acquire); }

  // True when no RPC is in flight before `deadline`.
  bool WaitIdle(std::chrono::steady_clock::time_point deadline) const {
    return WaitUntil([this] { return count() <= 0; }, deadline);
  }

  // The bytes admitted calls may hold together (default: unbounded). A setup call, before any
  // RPC.
  void set_budget(int64_t bytes) { budget_ = bytes; }
  int64_t budget() const { return budget_; }

  // Reserves `bytes` for a call; false (nothing reserved) when that would pass the budget. Calls
  // charged more than kCallBytes (batches) may fill only 3/4 of it: a flood of batches cannot
  // starve the single-operation calls of other clients. A call larger than its share is admitted
  // only when nothing else is, so the largest legal request is never refused on an idle daemon.
  bool TryAdmit(int64_t bytes) {
    const int64_t limit = bytes > kCallBytes ? budget_ / 4 * 3 : budget_;
    int64_t held = admitted_bytes_.load(std::memory_order_relaxed);
    do {
      if (held > 0 && held + bytes > limit) return false;
    } while (!admitted_bytes_.compare_exchange_weak(held, held + bytes, std::memory_order_relaxed));
    return true;
  }
  void Release(int64_t bytes) { admitted_bytes_.fetch_sub(bytes, std::memory_order_relaxed); }
  int64_t admitted_bytes() const { return admitted_bytes_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> n_{0};
  int64_t budget_ = std::numeric_limits<int64_t>::max();
  std::atomic<int64_t> admitted_bytes_{0};
};

}  // namespace distkit::transport
