#pragma once

// Joins N asynchronous completions into one status: the first error wins, and `then` runs once
// the last one is done (on whichever thread completed it). Shared by the scans of Clear and the
// reaper's chunks.

#include <mutex>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"

namespace distkit::core {

struct Join {
  std::mutex mu;
  int remaining = 0;
  absl::Status status;
  absl::AnyInvocable<void(absl::Status)> then;

  void Done(const absl::Status& s) {
    absl::AnyInvocable<void(absl::Status)> cb;
    absl::Status out;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (status.ok() && !s.ok()) status = s;
      if (--remaining > 0) return;
      cb = std::move(then);
      out = status;
    }
    cb(out);
  }
};

}  // namespace distkit::core
