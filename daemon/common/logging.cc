#include "daemon/common/logging.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "daemon/common/check.h"

namespace distkit {

bool InitLogging(std::string_view level) {
  auto parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") return false;
  spdlog::set_level(parsed);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  return true;
}

bool LogEvery::ShouldLog() {
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t next = next_ns_.load(std::memory_order_relaxed);
  if (now < next) return false;
  return next_ns_.compare_exchange_strong(
      next, now + std::chrono::duration_cast<std::chrono::nanoseconds>(period_).count());
}

namespace internal {

void CheckFailed(const char* file, int line, const char* condition, const char* message) {
  spdlog::default_logger()->flush();  // what was logged before the crash comes first
  // stderr, unbuffered, no allocation: the process may be in any state.
  std::fprintf(stderr, "distkitd: check failed at %s:%d: %s%s%s%s\n", file, line, condition,
               *message != '\0' ? " (" : "", message, *message != '\0' ? ")" : "");
  std::abort();
}

}  // namespace internal
}  // namespace distkit
