#pragma once

// Exactly-once Batch pushes: a client that sets `client_id` and `seq` on a Batch (the C++
// client's LaxAggregator does) may resend it when the answer was lost; the daemon answers the
// resend with the first answer instead of applying the batch twice. Remembered answers are
// bounded (docs/api.md): at most Limits::max_entries pushes and Limits::max_bytes of answers per
// service, each for at most Limits::max_age, oldest dropped first. The memory is this process's:
// a restarted daemon does not know the pushes of its predecessor (docs/api.md says what the
// client does about it).

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "daemon/core/types.h"

namespace distkit::transport {

struct PushDedupLimits {
  size_t max_entries = 4096;
  size_t max_bytes = size_t{16} << 20;
  absl::Duration max_age = absl::Minutes(5);
};

template <typename Response>
class PushDedup {
 public:
  enum class Claim {
    kNew,       // not seen: run it, then Complete
    kReplayed,  // already applied: the response holds the first answer
    kBusy,      // the first send is still running
  };

  explicit PushDedup(PushDedupLimits limits = {}) : limits_(limits) {}

  Claim Begin(std::string_view client_id, uint64_t seq, Response* resp) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    Evict(now);
    Id id{std::string(client_id), seq};
    auto [it, inserted] = entries_.try_emplace(id);
    if (!inserted) {
      if (!it->second.done) return Claim::kBusy;
      *resp = it->second.response;
      return Claim::kReplayed;
    }
    it->second.at = now;
    order_.push_back(std::move(id));
    Evict(now);
    return Claim::kNew;
  }

  // The answer of a kNew push: remembered when OK; forgotten otherwise (nothing was applied: a
  // Batch fails as a whole only before running its items), so that a resend runs.
  void Complete(std::string_view client_id, uint64_t seq, const absl::Status& s,
                const Response& resp) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(Id{std::string(client_id), seq});
    if (it == entries_.end()) return;  // evicted meanwhile
    if (!s.ok()) {
      entries_.erase(it);  // its order_ slot is skipped when it comes up
      return;
    }
    it->second.done = true;
    it->second.response = resp;
    it->second.bytes = resp.ByteSizeLong();
    bytes_ += it->second.bytes;
    Evict(absl::Now());
  }

  size_t size() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return entries_.size();
  }

 private:
  using Id = std::pair<std::string, uint64_t>;
  struct Entry {
    bool done = false;
    Response response;
    size_t bytes = 0;
    absl::Time at;
  };

  void Evict(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (!order_.empty()) {
      auto it = entries_.find(order_.front());
      if (it != entries_.end()) {
        const bool over = entries_.size() > limits_.max_entries || bytes_ > limits_.max_bytes ||
                          now - it->second.at > limits_.max_age;
        if (!over) return;
        bytes_ -= it->second.bytes;
        entries_.erase(it);
      }
      order_.pop_front();
    }
  }

  const PushDedupLimits limits_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<Id, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::deque<Id> order_ ABSL_GUARDED_BY(mu_);  // oldest first; may name erased entries
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// Wraps Unary's `op` (unary.h) of a Batch RPC with PushDedup: a request without client_id runs
// as before; a replayed one is answered from memory; one still running is ABORTED (resend later).
template <typename Response, typename Request, typename Op>
auto Deduplicated(PushDedup<Response>* dedup, const Request* req, Response* resp, Op op) {
  return
      [dedup, req, resp, op = std::move(op)](const auto& callback) -> std::optional<absl::Status> {
        if (req->client_id().empty()) return op(callback);
        switch (dedup->Begin(req->client_id(), req->seq(), resp)) {
          case PushDedup<Response>::Claim::kReplayed:
            return absl::OkStatus();
          case PushDedup<Response>::Claim::kBusy:
            return absl::AbortedError(
                "this push (client_id, seq) is still being applied; resend it later");
          case PushDedup<Response>::Claim::kNew:
            break;
        }
        std::string client_id = req->client_id();
        const uint64_t seq = req->seq();
        auto remembering = [&]() -> core::StatusCallback {
          return [dedup, resp, client_id, seq, inner = callback()](absl::Status s) mutable {
            dedup->Complete(client_id, seq, s, *resp);  // before the request and response are freed
            inner(std::move(s));
          };
        };
        std::optional<absl::Status> now = op(remembering);
        if (now) dedup->Complete(client_id, seq, *now, *resp);
        return now;
      };
}

}  // namespace distkit::transport
