#pragma once

// DK_CHECK: crash on a broken invariant, loudly. For bugs only: Redis, network and input errors
// are expected failures, handled and counted, never checked. Always on (not only in debug
// builds): carrying on from a state the code believes impossible risks wrong counters.
//
//   DK_CHECK(it != map.end());
//   DK_CHECK(redis != nullptr, "RedisRateLimiter needs a Redis client");

#include "absl/base/optimization.h"

namespace distkit::internal {
// Writes "check failed at FILE:LINE: CONDITION (MESSAGE)" to stderr, then aborts.
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const char* message);
}  // namespace distkit::internal

// The message, if given, must be a string literal.
#define DK_CHECK(condition, ...)                                                        \
  do {                                                                                  \
    if (ABSL_PREDICT_FALSE(!(condition))) {                                             \
      ::distkit::internal::CheckFailed(__FILE__, __LINE__, #condition, "" __VA_ARGS__); \
    }                                                                                   \
  } while (0)

// After a switch that handles every enumerator: a value outside the enum is a bug.
#define DK_UNREACHABLE() ::distkit::internal::CheckFailed(__FILE__, __LINE__, "unreachable", "")
