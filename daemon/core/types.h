#pragma once

#include <cstdint>
#include <functional>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"

namespace distkit::core {

enum class Consistency { kStrict, kLax };
enum class Comparator { kNone, kEq, kNe, kLt, kLe, kGt, kGe };

// "current <op> operand"; kNone is always true.
struct Condition {
  Comparator op = Comparator::kNone;
  int64_t operand = 0;
};

// Result of every plain-counter operation.
struct CounterResult {
  int64_t value = 0;     // after
  int64_t previous = 0;  // before
  bool applied = true;   // false when the condition failed (then value == previous)
};

using CounterCallback = absl::AnyInvocable<void(absl::StatusOr<CounterResult>)>;
using StatusCallback = absl::AnyInvocable<void(absl::Status)>;

// Monotonic time source; injectable for unit tests.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowNs() const = 0;
};
const Clock& SystemClock();

}  // namespace distkit::core
