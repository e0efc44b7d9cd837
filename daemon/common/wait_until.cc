#include "daemon/common/wait_until.h"

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace distkit {

bool WaitUntil(absl::FunctionRef<bool()> done, std::chrono::steady_clock::time_point deadline) {
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

}  // namespace distkit
