#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "daemon/core/int64_math.h"

namespace distkit::core {

// The key's data in Redis cannot be read (FAILED_PRECONDITION: another Redis type, a value that
// is not an int64, a corrupt dedup mark): a permanent problem, not an outage. New LAX work on the
// key is refused with `status`; flushes and reads of the key are retried from retry_at_ns on,
// with a backoff doubling from kMinBackoffMs up to kMaxBackoffMs, so a repaired key gets flushed
// (nothing acknowledged is dropped). Used by plain and instance-aware counters.
struct KeyDataError {
  static constexpr int64_t kMinBackoffMs = 100;
  static constexpr int64_t kMaxBackoffMs = 5000;

  absl::Status status;  // OK: the key is readable (as far as we know)
  int64_t retry_at_ns = 0;
  int64_t backoff_ms = 0;

  bool ok() const { return status.ok(); }
  // Whether a flush or read of the key may go now (no error, or its backoff has passed).
  bool Due(int64_t now_ns) const { return status.ok() || now_ns >= retry_at_ns; }
  // A flush or read found the data unreadable: remember why, schedule the next attempt.
  void Fail(absl::Status s, int64_t now_ns) {
    backoff_ms = backoff_ms == 0 ? kMinBackoffMs : std::min(2 * backoff_ms, kMaxBackoffMs);
    retry_at_ns = now_ns + backoff_ms * 1'000'000;
    status = std::move(s);
  }
  // A flush or read succeeded: readable (again).
  void Clear() { *this = KeyDataError{}; }
};

// One lax delta that was given a sequence number. The Redis script records, per daemon and key,
// the highest sequence applied, and skips entries at or below it: a retried entry is applied
// exactly once. An entry that may have reached Redis (its command timed out or the connection
// broke) is immutable; one that surely did not may still absorb later increments.
struct SeqDelta {
  uint64_t seq = 0;
  int64_t delta = 0;
  bool maybe_sent = false;
  // Redis time (the daemon's lower estimate) when a command first carried it; -1 = not yet.
  // counter.lua refuses it from sent_ms + the resend bound on (docs/design.md, "Dedup marks").
  int64_t sent_ms = -1;
};

// What this daemon knows about one (namespace, key) of a plain counter. All fields are guarded
// by the owning shard's mutex.
struct LaxEntry {
  // Last value read from Redis and the highest of our sequence numbers it includes.
  int64_t remote = 0;
  uint64_t remote_seq = 0;
  bool initialized = false;  // the first read was attempted (remote stays 0 if it failed)
  int64_t refreshed_ns = 0;  // when `remote` was last read
  int64_t last_access_ns = 0;

  int64_t pending = 0;            // increments not yet given a sequence number
  std::vector<SeqDelta> unacked;  // given a sequence, not yet confirmed applied
  int carriers = 0;               // outstanding Redis commands carrying `unacked`

  bool refreshing = false;
  std::vector<absl::AnyInvocable<void()>> waiters;  // run after the current refresh

  KeyDataError data_error;
  absl::Status last_error;  // the last failed flush or read (any cause), for the shutdown log

  bool dirty() const { return pending != 0 || !unacked.empty(); }
  bool idle() const { return !dirty() && carriers == 0 && !refreshing && waiters.empty(); }
};

// The value this daemon shows for the key: Redis value + our deltas not yet in it.
// nullopt if the sum leaves the int64 range (cannot happen for states we accept).
std::optional<int64_t> LocalView(const LaxEntry& e);

// Adds `delta` to the pending increments if both the pending sum and the local view stay in
// range; returns false (nothing changed) otherwise.
bool AddPending(LaxEntry& e, int64_t delta);

// Moves `pending` into `unacked` (a new entry with `next_seq`, or merged into the last entry if
// that one never left the daemon and nothing carries it). Returns true if a seq was consumed.
bool AssignPending(LaxEntry& e, uint64_t next_seq);

// A command that carried `carried` (a prefix copy of unacked, by seq) finished.
//  ok: Redis applied every entry up to `applied_seq` (and reports value `remote`).
//  otherwise: `maybe_sent` tells whether the command may have reached Redis (when it surely did
//  not and no other command is out, entries never possibly sent forget their sent_ms).
void OnCarrierDone(LaxEntry& e, const std::vector<SeqDelta>& carried, bool ok, bool maybe_sent);

// A reply told us Redis holds `value` and includes our entries up to `applied_seq`.
void OnRemoteValue(LaxEntry& e, int64_t value, uint64_t applied_seq, int64_t now_ns);

// counter.lua refused `carried` as stale after applying our entries up to `seen` (call
// OnRemoteValue with it first). `resolved`: the other carried entries were never applied and no
// longer can be under their seqs, so each gets a fresh seq from `next_seq` (sent again as new
// work); otherwise their fate is unknown and they are given up (dropped, counted).
struct StaleOutcome {
  int resent = 0;                  // entries given fresh seqs
  int given_up = 0;                // entries dropped
  std::optional<int64_t> sum = 0;  // sum of the dropped deltas (nullopt: beyond int64)
};
StaleOutcome OnStale(LaxEntry& e, const std::vector<SeqDelta>& carried, bool resolved,
                     absl::FunctionRef<uint64_t()> next_seq);

// Adds `out` to the `resent` and `given_up` stats; entries given up are logged as an error for
// key `ns`/`key` (`what` names them, e.g. "LAX counter operation(s)"): the operator's one trace
// of work that may be lost.
void CountStale(const StaleOutcome& out, std::string_view ns, std::string_view key,
                std::string_view what, std::atomic<uint64_t>& resent,
                std::atomic<uint64_t>& given_up);

// The resend-bound bookkeeping shared by plain (SeqDelta) and instance (SeqSliceOp) entries:
// any Item with seq, maybe_sent and sent_ms.

// Stamps the entries a command is about to carry for the first time with Redis time `now_ms`.
template <typename Item>
void StampFirstSend(std::vector<Item>& unacked, int64_t now_ms) {
  for (auto& u : unacked) {
    if (u.sent_ms < 0) u.sent_ms = now_ms;
  }
}

// No command that may have reached Redis ever carried the entries not maybe_sent: their resend
// bound starts again with the next send (an outage longer than the bound must not make them
// stale). Call when a command surely not sent finished and no other carries the key's entries.
template <typename Item>
void ForgetUnsentStamps(std::vector<Item>& unacked) {
  for (auto& u : unacked) {
    if (!u.maybe_sent) u.sent_ms = -1;
  }
}

// OnStale's work on any entry type: `unacked` already lost the entries up to `remote_seq`;
// `amount` is what a given-up entry adds to StaleOutcome::sum.
template <typename Item>
StaleOutcome ResolveStale(std::vector<Item>& unacked, uint64_t remote_seq,
                          const std::vector<Item>& carried, bool resolved,
                          absl::FunctionRef<uint64_t()> next_seq,
                          absl::FunctionRef<int64_t(const Item&)> amount) {
  StaleOutcome out;
  auto was_carried = [&](uint64_t seq) {
    return std::any_of(carried.begin(), carried.end(),
                       [seq](const Item& c) { return c.seq == seq; });
  };
  for (auto it = unacked.begin(); it != unacked.end();) {
    if (it->seq <= remote_seq || !was_carried(it->seq)) {
      ++it;
    } else if (resolved) {
      it->seq = next_seq();
      it->sent_ms = -1;
      it->maybe_sent = false;
      ++out.resent;
      ++it;
    } else {
      ++out.given_up;
      if (out.sum) out.sum = CheckedAdd(*out.sum, amount(*it));
      it = unacked.erase(it);
    }
  }
  std::sort(unacked.begin(), unacked.end(),
            [](const Item& a, const Item& b) { return a.seq < b.seq; });
  return out;
}

// Redis time as this daemon estimates it: the TIME of the latest script reply plus the daemon's
// own clock since (a lower bound of Redis time). Thread-safe.
class RedisTimeEstimate {
 public:
  // nullopt before the first reply with a time.
  std::optional<int64_t> NowMs(int64_t now_ns) const {
    absl::MutexLock lock(&mu_);
    if (redis_ms_ < 0) return std::nullopt;
    return redis_ms_ + (now_ns - at_ns_) / 1'000'000;
  }
  void Note(std::optional<int64_t> redis_ms, int64_t now_ns) {
    if (!redis_ms) return;
    absl::MutexLock lock(&mu_);
    // Each reply's time is a lower bound of Redis time when it arrives: keep the larger estimate.
    if (redis_ms_ < 0 || *redis_ms > redis_ms_ + (now_ns - at_ns_) / 1'000'000) {
      redis_ms_ = *redis_ms;
      at_ns_ = now_ns;
    }
  }

 private:
  mutable absl::Mutex mu_;
  int64_t redis_ms_ ABSL_GUARDED_BY(mu_) = -1;  // Redis TIME of the latest reply ...
  int64_t at_ns_ ABSL_GUARDED_BY(mu_) = 0;      // ... and our clock when it came
};

}  // namespace distkit::core
