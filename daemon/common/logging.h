#pragma once

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <string_view>

namespace distkit {

// Sets the global spdlog level from a name (trace..off); returns false for an unknown name.
bool InitLogging(std::string_view level);

// Allows one message per `period`; used for errors that may repeat at request rate
// (Redis down, flush failures) so logs stay readable. Thread-safe, lock-free.
class LogEvery {
 public:
  explicit LogEvery(std::chrono::milliseconds period) : period_(period) {}
  bool ShouldLog();

 private:
  std::chrono::milliseconds period_;
  std::atomic<int64_t> next_ns_{0};
};

}  // namespace distkit
