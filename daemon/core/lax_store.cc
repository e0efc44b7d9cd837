#include "daemon/core/lax_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "daemon/common/logging.h"
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
  if (!ok && !maybe_sent && e.carriers == 0) ForgetUnsentStamps(e.unacked);
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
  return ResolveStale<SeqDelta>(e.unacked, e.remote_seq, carried, resolved, next_seq,
                                [](const SeqDelta& u) { return u.delta; });
}

void CountStale(const StaleOutcome& out, std::string_view ns, std::string_view key,
                std::string_view what, std::atomic<uint64_t>& resent,
                std::atomic<uint64_t>& given_up) {
  resent += out.resent;
  if (out.given_up == 0) return;
  given_up += out.given_up;
  spdlog::error(
      "{}/{}: {} {} (additions summing {}) stayed unacknowledged longer than "
      "--lax_resend_bound_ms and Redis can no longer tell whether they were applied; given up "
      "(LAX work may be lost, never counted twice)",
      ns, key, out.given_up, what, out.sum ? absl::StrCat(*out.sum) : std::string("beyond int64"));
}

}  // namespace distkit::core
