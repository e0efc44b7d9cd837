#include "daemon/core/instance_lax.h"

#include <algorithm>
#include <limits>

#include "daemon/core/int64_math.h"

namespace distkit::core {
namespace {

std::optional<int64_t> Narrow(__int128 v) {
  if (v < std::numeric_limits<int64_t>::min() || v > std::numeric_limits<int64_t>::max()) {
    return std::nullopt;
  }
  return static_cast<int64_t>(v);
}

}  // namespace

std::optional<int64_t> ApplySliceOp(int64_t slice, SliceOp op) {
  if (op.kind == SliceOpKind::kSet) return op.value;
  return CheckedAdd(slice, op.value);
}

std::optional<SliceOp> CombineSliceOps(SliceOp first, SliceOp second) {
  if (second.kind == SliceOpKind::kSet) return second;
  auto v = CheckedAdd(first.value, second.value);
  if (!v) return std::nullopt;
  return SliceOp{first.kind, *v};
}

std::optional<InstanceView> LocalInstanceView(const InstanceEntry& e) {
  std::optional<int64_t> inst = e.remote_inst;
  for (const auto& u : e.unacked) {
    if (u.seq > e.remote_seq) inst = ApplySliceOp(*inst, u.op);
    if (!inst) return std::nullopt;
  }
  if (e.pending) inst = ApplySliceOp(*inst, *e.pending);
  if (!inst) return std::nullopt;
  // The other slices' sum (remote_c - remote_inst) plus our slice as we see it.
  auto c = Narrow(static_cast<__int128>(e.remote_c) - e.remote_inst + *inst);
  if (!c) return std::nullopt;
  return InstanceView{*c, *inst};
}

bool AddPendingSliceOp(InstanceEntry& e, SliceOp op) {
  std::optional<SliceOp> next = op;
  if (e.pending) next = CombineSliceOps(*e.pending, op);
  if (!next) return false;
  std::optional<SliceOp> saved = e.pending;
  e.pending = next;
  if (!LocalInstanceView(e)) {
    e.pending = saved;
    return false;
  }
  return true;
}

bool AssignPendingSliceOp(InstanceEntry& e, uint64_t next_seq) {
  if (!e.pending) return false;
  if (!e.unacked.empty() && !e.unacked.back().maybe_sent && e.carriers == 0) {
    if (auto merged = CombineSliceOps(e.unacked.back().op, *e.pending)) {
      e.unacked.back().op = *merged;
      e.pending.reset();
      return false;
    }
  }
  e.unacked.push_back(SeqSliceOp{next_seq, *e.pending, false});
  e.pending.reset();
  return true;
}

void OnInstanceCarrierDone(InstanceEntry& e, const std::vector<SeqSliceOp>& carried,
                           const InstanceReply* reply, bool assigned, bool maybe_sent,
                           int64_t now_ns) {
  --e.carriers;
  if (reply == nullptr) {
    if (!maybe_sent && e.carriers == 0) ForgetUnsentStamps(e.unacked);
    if (!maybe_sent || carried.empty()) {
      // Surely not applied, or applied without entries: the op's own effect is unknown only
      // when it may have run.
      if (maybe_sent) e.belief_uncertain = true;
      return;
    }
    const uint64_t last = carried.back().seq;
    for (auto& u : e.unacked) {
      if (u.seq <= last) u.maybe_sent = true;
    }
    e.belief_uncertain = true;
    return;
  }
  // A command that assigned our slice makes Redis's value the truth, reaped or not.
  bool assignment = assigned && reply->applied && !reply->overflow;
  for (const auto& u : carried) {
    if (u.seq > e.remote_seq && u.seq <= reply->seen && u.op.kind == SliceOpKind::kSet) {
      assignment = true;
    }
  }
  if (e.belief_uncertain || reply->epoch != e.epoch || assignment || reply->dropped > 0) {
    e.belief = reply->instance;
  } else {
    // Only additions: what they changed, on top of what the slice held. `before` differs from
    // the belief only when a reaper removed the slice (we were declared dead).
    auto b = Narrow(static_cast<__int128>(e.belief) + reply->instance - reply->before);
    e.belief = b.value_or(reply->instance);
  }
  e.belief_uncertain = false;
  e.remote_c = reply->cumulative;
  e.remote_inst = reply->instance;
  e.epoch = reply->epoch;
  e.remote_seq = std::max(e.remote_seq, reply->seen);
  e.initialized = true;
  e.refreshed_ns = now_ns;
  e.unacked.erase(std::remove_if(e.unacked.begin(), e.unacked.end(),
                                 [&](const SeqSliceOp& u) { return u.seq <= e.remote_seq; }),
                  e.unacked.end());
}

StaleOutcome OnInstanceStale(InstanceEntry& e, const std::vector<SeqSliceOp>& carried,
                             bool resolved, absl::FunctionRef<uint64_t()> next_seq) {
  return ResolveStale<SeqSliceOp>(
      e.unacked, e.remote_seq, carried, resolved, next_seq,
      [](const SeqSliceOp& u) { return u.op.kind == SliceOpKind::kAdd ? u.op.value : 0; });
}

}  // namespace distkit::core
