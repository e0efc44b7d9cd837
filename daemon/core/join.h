#pragma once

// Joins N asynchronous completions into one status: the first error wins, and `then` runs once
// the last one is done (on whichever thread completed it). Shared by the scans of Clear and the
// reaper's chunks.

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace distkit::core {

struct Join {
  absl::Mutex mu;
  // `remaining` and `then` are set before the first Done; after that only Done touches them.
  int remaining = 0;
  absl::AnyInvocable<void(absl::Status)> then;
  absl::Status status ABSL_GUARDED_BY(mu);

  void Done(const absl::Status& s) {
    absl::AnyInvocable<void(absl::Status)> cb;
    absl::Status out;
    {
      absl::MutexLock lock(&mu);
      if (status.ok() && !s.ok()) status = s;
      if (--remaining > 0) return;
      cb = std::move(then);
      out = status;
    }
    cb(out);
  }
};

}  // namespace distkit::core
