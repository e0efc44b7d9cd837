#pragma once

// Client-side LAX aggregation (the seed's LaxCounter, in front of distkitd): Inc adds to a
// sharded map in process memory (no socket, no allocation for a known key), and a background
// thread pushes the per-key sums to the daemon as one Batch of LAX increments per interval
// (default 10 ms), plus on Flush() and on destruction.
//
//   distkit::LaxAggregator agg(client.get());           // plain counters
//   agg.Inc("page_views", 1);                            // ~ tens of ns
//   absl::StatusOr<int64_t> v = agg.Get("page_views");   // daemon's LAX value + unpushed
//
// Exactly once: every push carries (client_id, seq). A push whose answer did not arrive
// (deadline, connection lost, daemon paused) stays pending and is resent with the same seq
// until answered, and nothing else is pushed meanwhile; the daemon recognises a resend of a push
// it applied (PushDedup, docs/api.md) and answers it without applying it again. An item the
// daemon refused with a retryable code (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED,
// ABORTED) is returned to local memory and pushed again in a later push; any other item error
// drops that item's delta and is reported.
//
// Daemon down or restarted: Inc keeps working (until the key cap), the deltas stay in memory
// and the pending push is retried every interval with the same seq; each failure is reported to
// `on_error` and by last_status(). The daemon remembers pushes only while it runs: a push whose
// answer was lost exactly when the daemon process stopped is resent to its successor, which
// applies it (the one at-least-once window: docs/api.md).
//
// Bounded memory: at most `max_keys` distinct keys wait locally; Inc of a new key beyond it is
// RESOURCE_EXHAUSTED (the caller may drop, retry later or Flush). A pending push holds at most
// `max_batch` keys and the keys drained but not yet sent at most `max_keys`.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "distkit/client.h"

namespace distkit {

// What the aggregator needs from the daemon (a fake in unit tests).
class LaxTransport {
 public:
  using Deltas = std::vector<std::pair<std::string, int64_t>>;
  virtual ~LaxTransport() = default;
  // One push of LAX increments identified by `id`: the status of each item, or the error of the
  // whole call (then it may or may not have been applied: it is resent with the same id).
  virtual absl::StatusOr<std::vector<absl::Status>> Push(const PushId& id,
                                                         const Deltas& deltas) = 0;
  // The daemon's LAX value of `key` (the cumulative of an instance-aware counter).
  virtual absl::StatusOr<int64_t> Read(std::string_view key) = 0;
};

// Plain counters: CounterService Batch of LAX Inc; reads are LAX Get.
std::unique_ptr<LaxTransport> CounterTransport(Client* client);
// Instance-aware counters: InstanceCounterService Batch of LAX Inc on this daemon's slice;
// reads are the LAX cumulative.
std::unique_ptr<LaxTransport> InstanceCounterTransport(Client* client);

struct LaxAggregatorOptions {
  std::chrono::milliseconds interval{10};
  // Distinct keys waiting locally; Inc of one more is RESOURCE_EXHAUSTED.
  size_t max_keys = 100'000;
  // Keys per push (the daemon takes at most 10 000 items per Batch).
  size_t max_batch = 10'000;
  // Identifies this aggregator's pushes; empty = random (128 bits).
  std::string client_id;
  // On destruction, how long pending deltas are retried before they are given up (reported).
  std::chrono::milliseconds shutdown_timeout{5000};
  // Each failed push or dropped item, on the pusher thread (or the caller of Flush), with the
  // push lock held: keep it short and never call this aggregator's Flush or Get from it.
  absl::AnyInvocable<void(const absl::Status&)> on_error;
};

class LaxAggregator {
 public:
  // Plain counters through `client` (which must outlive the aggregator).
  explicit LaxAggregator(Client* client, LaxAggregatorOptions options = {});
  LaxAggregator(std::unique_ptr<LaxTransport> transport, LaxAggregatorOptions options);
  // Stops the pusher, then flushes, retrying for options.shutdown_timeout.
  ~LaxAggregator();
  LaxAggregator(const LaxAggregator&) = delete;
  LaxAggregator& operator=(const LaxAggregator&) = delete;

  // Adds `delta` to `key` locally. RESOURCE_EXHAUSTED when `key` is new and max_keys keys wait.
  absl::Status Inc(std::string_view key, int64_t delta);
  // Pushes everything added so far; OK once the daemon acknowledged all of it, else the first
  // error (the deltas stay and are retried).
  absl::Status Flush();
  // The daemon's LAX value plus what this aggregator has not had acknowledged yet.
  absl::StatusOr<int64_t> Get(std::string_view key);

  // The result of the last push (OK before the first).
  absl::Status last_status() const;
  // Keys waiting locally (not counting a pending push).
  size_t pending_keys() const { return keys_.load(std::memory_order_relaxed); }
  const std::string& client_id() const { return client_id_; }

 private:
  static constexpr size_t kShards = 64;
  struct alignas(64) Shard {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, int64_t> deltas ABSL_GUARDED_BY(mu);
  };

  Shard& ShardOf(std::string_view key);
  // Adds back deltas the daemon did not apply (no key cap: they were admitted once).
  void Restore(const std::string& key, int64_t delta);
  absl::Status PushAllLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(push_mu_);
  absl::Status SendPendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(push_mu_);
  void Report(const absl::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(push_mu_);
  void Run();

  // on_error is called under push_mu_.
  LaxAggregatorOptions options_;
  const std::string client_id_;
  std::unique_ptr<LaxTransport> transport_;
  std::array<Shard, kShards> shards_;
  std::atomic<size_t> keys_{0};

  // Held by the push that is in flight (and by Get, for a consistent read).
  mutable absl::Mutex push_mu_;
  uint64_t next_seq_ ABSL_GUARDED_BY(push_mu_) = 1;
  bool has_pending_ ABSL_GUARDED_BY(push_mu_) = false;
  PushId pending_id_ ABSL_GUARDED_BY(push_mu_);
  LaxTransport::Deltas pending_ ABSL_GUARDED_BY(push_mu_);  // sent, not yet acknowledged
  LaxTransport::Deltas backlog_ ABSL_GUARDED_BY(push_mu_);  // drained, not yet sent
  absl::Status last_status_ ABSL_GUARDED_BY(push_mu_);

  absl::Mutex stop_mu_;
  bool stopping_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread pusher_;
};

}  // namespace distkit
