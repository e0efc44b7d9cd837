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

bool RetryUntil(absl::FunctionRef<void()> send, absl::FunctionRef<bool()> idle,
                absl::FunctionRef<bool()> settled, std::chrono::steady_clock::time_point deadline,
                std::chrono::milliseconds retry) {
  while (std::chrono::steady_clock::now() < deadline) {
    send();
    WaitUntil(idle, deadline);
    if (settled()) return true;
    absl::SleepFor(absl::FromChrono(retry));
  }
  return false;
}

}  // namespace distkit
