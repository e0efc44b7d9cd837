#pragma once

// N shards, each a mutex and the state it guards, picked by a hash of the key: callers touching
// different keys rarely contend. The one sharding helper of the core's in-memory stores.

#include <atomic>
#include <cstddef>
#include <memory>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

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

// absl's flat_hash_map keeps its capacity after erase: a store that once held a million keys
// would keep their slots after evicting all of them. After an eviction pass, this shrinks the
// map to its size when at most a quarter of the capacity is used (a factor that leaves room to
// grow again before the next rehash); returns the bytes of slots released.
template <typename Map>
size_t ShrinkIfSparse(Map& map) {
  constexpr size_t kMinCapacity = 64;  // small maps are not worth a rehash
  const size_t before = map.capacity();
  if (before <= kMinCapacity || map.size() * 4 > before) return 0;
  map.rehash(0);
  return (before - map.capacity()) * sizeof(typename Map::value_type);
}

// Gives freed heap pages back to the kernel once the stores released `released_bytes` more
// (summed over calls: evictions spread over many sweeps add up) since the last trim. glibc keeps
// freed memory in its arenas; without this a large eviction would not lower RSS. Below
// kTrimThreshold in total it does nothing, so an ordinary sweep costs no trim.
inline void TrimHeapAfterShrink(size_t released_bytes) {
  constexpr size_t kTrimThreshold = size_t{8} << 20;
  static std::atomic<size_t> pending{0};
  if (released_bytes == 0 || pending.fetch_add(released_bytes) + released_bytes < kTrimThreshold) {
    return;
  }
  pending = 0;
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace distkit
