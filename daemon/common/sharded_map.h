#pragma once

// N shards, each a mutex and the state it guards, picked by a hash of the key: callers touching
// different keys rarely contend. The one sharding helper of the core's in-memory stores.

#include <cstddef>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace distkit {

// The usual shard: a map guarded by its mutex.
template <typename Map>
struct LockedMap {
  absl::Mutex mu;
  Map map ABSL_GUARDED_BY(mu);
};

// `N` shards of type `Shard` (a LockedMap, or any type with its own mutex). The caller hashes:
// each store has its own key type and hash.
template <typename Shard, size_t N>
class Sharded {
 public:
  static constexpr size_t kShards = N;

  Shard& ShardFor(size_t hash) const { return shards_[hash % N]; }
  Shard& operator[](size_t i) const { return shards_[i]; }

 private:
  // On the heap: shards are large and hold a Mutex, which cannot move.
  const std::unique_ptr<Shard[]> shards_ = std::make_unique<Shard[]>(N);
};

}  // namespace distkit
