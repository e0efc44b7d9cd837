#pragma once

#include <atomic>
#include <chrono>

#include "daemon/common/wait_until.h"

namespace distkit::transport {

// Counts RPCs between handler entry and Finish. gRPC's Server::Shutdown(deadline) waits for
// the full deadline while any client keeps a connection open, even when no call is running, so
// the shutdown sequence waits on this count instead and then shuts down with a short deadline.
class InFlight {
 public:
  void Enter() { n_.fetch_add(1, std::memory_order_relaxed); }
  void Leave() { n_.fetch_sub(1, std::memory_order_acq_rel); }
  int64_t count() const { return n_.load(std::memory_order_acquire); }

  // True when no RPC is in flight before `deadline`.
  bool WaitIdle(std::chrono::steady_clock::time_point deadline) const {
    return WaitUntil([this] { return count() <= 0; }, deadline);
  }

 private:
  std::atomic<int64_t> n_{0};
};

}  // namespace distkit::transport
