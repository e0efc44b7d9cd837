#pragma once

// Joins N asynchronous completions into one status: the first error wins, and `then` runs once
// the last one is done (on whichever thread completed it). Shared by the scans of Clear (ScanEach,
// below) and the reaper's chunks.

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "daemon/core/types.h"
#include "daemon/redis/redis_client.h"

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

// What ScanEach does with one key: calls `done` exactly once, from any thread.
using EachKey = std::function<void(const std::string& key, StatusCallback done)>;

// What ScanEach walks: the keys matching `pattern` (SCAN ... MATCH), or, when `set` is not
// empty, the members of that set (SSCAN).
struct ScanOf {
  std::string pattern;
  std::string set;
};

// The walks of Clear and ClearOnInstance: SCAN / SSCAN from `cursor`, page by page (COUNT 1000);
// `each` runs for every key of a page, all of them at once, and the next page is asked for once
// they are all done. `done` gets the first error, or OK after the last page.
void ScanEach(redis::RedisClient* redis, ScanOf what, const std::string& cursor,
              std::shared_ptr<const EachKey> each, StatusCallback done);

}  // namespace distkit::core
