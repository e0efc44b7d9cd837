#pragma once

#include <chrono>

#include "absl/functional/function_ref.h"

namespace distkit {

// Polls `done` every millisecond until it holds (true) or `deadline` passes (false; `done` is
// checked once more at the deadline). For shutdown waits on counts that nothing signals, such
// as commands still in flight; time_point::max() waits without a deadline.
bool WaitUntil(absl::FunctionRef<bool()> done, std::chrono::steady_clock::time_point deadline);

}  // namespace distkit
