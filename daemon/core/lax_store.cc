#include "daemon/core/lax_store.h"

#include <algorithm>

#include "daemon/core/int64_math.h"

namespace distkit::core {

std::optional<int64_t> LocalView(const LaxEntry& e) {
  std::optional<int64_t> v = e.remote;
  for (const auto& u : e.unacked) {
    if (u.seq > e.remote_seq) v = CheckedAdd(*v, u.delta);
    if (!v) return std::nullopt;
  }
  return CheckedAdd(*v, e.pending);
}

bool AddPending(LaxEntry& e, int64_t delta) {
  auto view = LocalView(e);
  if (!view || !CheckedAdd(*view, delta)) return false;
  auto p = CheckedAdd(e.pending, delta);
  if (!p) return false;
  e.pending = *p;
  return true;
}

bool AssignPending(LaxEntry& e, uint64_t next_seq) {
  if (e.pending == 0) return false;
  if (!e.unacked.empty() && !e.unacked.back().maybe_sent && e.carriers == 0) {
    if (auto merged = CheckedAdd(e.unacked.back().delta, e.pending)) {
      e.unacked.back().delta = *merged;
      e.pending = 0;
      return false;
    }
  }
  e.unacked.push_back(SeqDelta{next_seq, e.pending, false});
  e.pending = 0;
  return true;
}

void OnCarrierDone(LaxEntry& e, const std::vector<SeqDelta>& carried, bool ok, bool maybe_sent) {
  --e.carriers;
  if (!ok && !maybe_sent && e.carriers == 0) {
    // No command that may have reached Redis ever carried these: their resend bound starts
    // again with the next send (an outage longer than the bound must not make them stale).
    for (auto& u : e.unacked) {
      if (!u.maybe_sent) u.sent_ms = -1;
    }
  }
  if (ok || !maybe_sent || carried.empty()) return;
  const uint64_t last = carried.back().seq;
  for (auto& u : e.unacked) {
    if (u.seq <= last) u.maybe_sent = true;
  }
}

void OnRemoteValue(LaxEntry& e, int64_t value, uint64_t applied_seq, int64_t now_ns) {
  e.remote = value;
  e.remote_seq = std::max(e.remote_seq, applied_seq);
  e.initialized = true;
  e.refreshed_ns = now_ns;
  e.unacked.erase(std::remove_if(e.unacked.begin(), e.unacked.end(),
                                 [&](const SeqDelta& u) { return u.seq <= e.remote_seq; }),
                  e.unacked.end());
}

StaleOutcome OnStale(LaxEntry& e, const std::vector<SeqDelta>& carried, bool resolved,
                     absl::FunctionRef<uint64_t()> next_seq) {
  StaleOutcome out;
  auto was_carried = [&](uint64_t seq) {
    return std::any_of(carried.begin(), carried.end(),
                       [seq](const SeqDelta& c) { return c.seq == seq; });
  };
  for (auto it = e.unacked.begin(); it != e.unacked.end();) {
    if (it->seq <= e.remote_seq || !was_carried(it->seq)) {
      ++it;
    } else if (resolved) {
      it->seq = next_seq();
      it->sent_ms = -1;
      it->maybe_sent = false;
      ++out.resent;
      ++it;
    } else {
      ++out.given_up;
      if (out.sum) out.sum = CheckedAdd(*out.sum, it->delta);
      it = e.unacked.erase(it);
    }
  }
  std::sort(e.unacked.begin(), e.unacked.end(),
            [](const SeqDelta& a, const SeqDelta& b) { return a.seq < b.seq; });
  return out;
}

}  // namespace distkit::core
