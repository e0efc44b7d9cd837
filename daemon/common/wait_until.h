#pragma once

#include <chrono>

#include "absl/functional/function_ref.h"

namespace distkit {

// Polls `done` every millisecond until it holds (true) or `deadline` passes (false; `done` is
// checked once more at the deadline). For shutdown waits on counts that nothing signals, such
// as commands still in flight; time_point::max() waits without a deadline.
bool WaitUntil(absl::FunctionRef<bool()> done, std::chrono::steady_clock::time_point deadline);

// Shutdown's "send what is left, wait for the replies, retry while Redis is down": until the
// deadline, runs `send`, waits until `idle` (nothing in flight), and returns true once `settled`;
// between tries it pauses `retry` (Redis down: a send fails at once). False at the deadline.
bool RetryUntil(absl::FunctionRef<void()> send, absl::FunctionRef<bool()> idle,
                absl::FunctionRef<bool()> settled, std::chrono::steady_clock::time_point deadline,
                std::chrono::milliseconds retry = std::chrono::milliseconds(20));

}  // namespace distkit
