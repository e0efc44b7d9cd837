#pragma once

// What a daemon keeps in memory per (namespace, key) of an instance-aware counter: the last
// Redis state it saw, its LAX work not yet in Redis (exactly-once flush, the same scheme as
// plain counters: lax_store.h), and what it believes its own slice holds (for recovery).
// Pure data and arithmetic: no locking, no I/O (instance_counters.cc owns both).

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "daemon/core/lax_store.h"  // KeyDataError

namespace distkit::core {

// One change to this daemon's slice: "add" (slice += value, a LAX Inc) or "set" (slice :=
// value, a LAX SetOnInstance, applied even if another daemon bumped the epoch meanwhile).
enum class SliceOpKind { kAdd, kSet };
struct SliceOp {
  SliceOpKind kind = SliceOpKind::kAdd;
  int64_t value = 0;
};
// A SliceOp given a sequence number (icounter.lua records the highest seq applied per daemon
// process and key and skips entries at or below it). maybe_sent: the command carrying it may
// have reached Redis (timed out, connection broken), so the entry is immutable.
struct SeqSliceOp {
  uint64_t seq = 0;
  SliceOp op;
  bool maybe_sent = false;
  // Redis time when a command first carried it; -1 = not yet (as SeqDelta::sent_ms).
  int64_t sent_ms = -1;
};

// slice after `op`, or nullopt on int64 overflow.
std::optional<int64_t> ApplySliceOp(int64_t slice, SliceOp op);
// `first` then `second` as one op, or nullopt when the combination overflows.
std::optional<SliceOp> CombineSliceOps(SliceOp first, SliceOp second);

struct InstanceView {
  int64_t cumulative = 0;
  int64_t instance = 0;
};

struct InstanceEntry {
  // Redis state from the last reply; it includes our entries up to remote_seq.
  int64_t remote_c = 0;
  int64_t remote_inst = 0;
  uint64_t remote_seq = 0;
  int64_t epoch = 0;         // the key's epoch in that reply (0: the key had none)
  bool initialized = false;  // a reply (or a failed first read) came back
  int64_t refreshed_ns = 0;
  int64_t last_access_ns = 0;

  std::optional<SliceOp> pending;   // LAX work not yet given a sequence number
  std::vector<SeqSliceOp> unacked;  // given a sequence number, not yet confirmed applied
  int carriers = 0;                 // outstanding Redis commands for this key

  bool refreshing = false;
  // Run after the current refresh or restore completes (with its status).
  std::vector<absl::AnyInvocable<void(absl::Status)>> waiters;

  // Recovery. `belief` is what our slice holds in Redis at `epoch` counting every operation
  // Redis acknowledged, whatever a reaper removed meanwhile; `restore` writes it back.
  int64_t belief = 0;
  bool belief_uncertain = false;  // a command may or may not have been applied: trust Redis
  int64_t registered_inc = 0;     // the incarnation whose key set holds this key (0: none)
  int64_t restore_inc = 0;        // != 0: restore the slice at this incarnation before any op
  bool restoring = false;

  KeyDataError data_error;  // the key's data in Redis cannot be read: LAX work refused, backoff

  bool dirty() const { return pending.has_value() || !unacked.empty(); }
  bool idle() const {
    return !dirty() && carriers == 0 && !refreshing && waiters.empty() && !restoring &&
           restore_inc == 0 && belief == 0 && remote_inst == 0;
  }
};

// (cumulative, instance) as this daemon shows them: Redis state + our entries not yet in it.
// nullopt if that leaves the int64 range (cannot happen for states we accept).
std::optional<InstanceView> LocalInstanceView(const InstanceEntry& e);

// Adds `op` to the pending work if the local view stays in range; false (nothing changed)
// otherwise.
bool AddPendingSliceOp(InstanceEntry& e, SliceOp op);

// Moves `pending` into `unacked` (merged into the last entry if that one never left the daemon
// and nothing carries it, else a new entry with `next_seq`). True if a seq was consumed.
bool AssignPendingSliceOp(InstanceEntry& e, uint64_t next_seq);

// Parsed icounter.lua reply (the fields the entry needs).
struct InstanceReply {
  int64_t cumulative = 0;
  int64_t instance = 0;
  int64_t previous_cumulative = 0;
  int64_t previous_instance = 0;
  bool applied = false;
  int64_t epoch = 0;
  uint64_t seen = 0;
  int64_t dropped = 0;
  int64_t before = 0;     // our slice before the carried entries
  bool overflow = false;  // the op was refused (entries applied)
  // "stale": carried entries past the resend bound were refused, nothing written; seen and the
  // state are Redis's. resolved as ScriptReply::resolved.
  bool stale = false;
  bool resolved = false;
  std::optional<int64_t> redis_now_ms;  // Redis TIME when the script ran (with a bound only)
};

// A command that carried `carried` (a prefix copy of unacked) for this key finished.
//  reply: Redis ran it (ok or overflow). `assigned`: the op, if applied, assigned our slice
//  (set, set_on_instance, del, del_on_instance, restore).
//  no reply: `maybe_sent` tells whether the command may have reached Redis.
void OnInstanceCarrierDone(InstanceEntry& e, const std::vector<SeqSliceOp>& carried,
                           const InstanceReply* reply, bool assigned, bool maybe_sent,
                           int64_t now_ns);

// icounter.lua refused `carried` as stale (call OnInstanceCarrierDone with its reply first):
// lax_store.h OnStale for instance entries; StaleOutcome::sum adds the given-up "add" values.
StaleOutcome OnInstanceStale(InstanceEntry& e, const std::vector<SeqSliceOp>& carried,
                             bool resolved, absl::FunctionRef<uint64_t()> next_seq);

}  // namespace distkit::core
