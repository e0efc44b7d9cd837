#pragma once

// The Batch RPC pump shared by the callback services.

#include <prometheus/counter.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "daemon/core/types.h"
#include "daemon/core/validation.h"

namespace distkit::transport {

// Items of one batch in flight at once: enough to pipeline, few enough that the last one's Redis
// commands (up to three for an instance counter's first write) are not queued behind thousands
// of others and miss --redis_timeout_ms, which counts from submission (a 10 000-item batch on a
// loaded machine did, before this bound).
inline constexpr int kMaxBatchInFlight = 256;

// How a batch item (or an RPC) gets its completion, built only when it goes asynchronous:
// Unary's contract (unary.h).
using MakeCallback = absl::FunctionRef<core::StatusCallback()>;

// The key of a Spec whose items never wait for one another per key.
struct NoKey {
  friend bool operator==(NoKey, NoKey) { return true; }
  template <typename H>
  friend H AbslHashValue(H h, NoKey) {
    return h;
  }
};

// Runs a batch's items in order and finishes the RPC (OK) once every item has its result or
// its code and message. Item i starts after items 0..i-1 have started, while fewer than
// kMaxBatchInFlight items are outstanding and none it must wait for is (Spec::KeyOf,
// Spec::Alone); an item answered inline completes before the next one starts. Completions may
// arrive inline or on any thread; a trampoline (`pumping_`) keeps the stack flat for 10 000
// inline completions. Each result has one writer; the finish comes after all of them.
//
// `Spec` is what differs between the services, a small value copied into the run:
//   using Request = ...;   // ops_size(), ops(i)
//   using Response = ...;  // add_results(), mutable_results(i); a result has clear_result(),
//                          // set_code(), set_message()
//   using Key = ...;       // hashable and cheap to copy (views into the request), or NoKey
//   // The state the item touches: it waits while an earlier item with an equal key is
//   // outstanding. nullopt: it never waits per key.
//   std::optional<Key> KeyOf(const Op& op) const;
//   // An item that runs alone: it waits until every earlier item completed, and every later
//   // item waits until it completed.
//   bool Alone(const Op& op) const;
//   // Starts item i with Unary's contract: the final status when answered at once (no callback
//   // built, nothing allocated), else nullopt after handing `callback()` to an asynchronous
//   // operation that calls it exactly once.
//   std::optional<absl::Status> Start(int i, const Op& op, Result* result,
//                                     MakeCallback callback) const;
template <typename Spec>
class BatchRun : public std::enable_shared_from_this<BatchRun<Spec>> {
 public:
  using Request = typename Spec::Request;
  using Response = typename Spec::Response;
  using Key = typename Spec::Key;
  using Op = std::remove_cvref_t<decltype(std::declval<const Request&>().ops(0))>;
  using Result = std::remove_pointer_t<decltype(std::declval<Response&>().mutable_results(0))>;

  // `req` and `resp` must outlive the run (until `finish` is called).
  BatchRun(Spec spec, const Request* req, Response* resp, core::StatusCallback finish)
      : spec_(std::move(spec)),
        req_(req),
        resp_(resp),
        size_(req->ops_size()),
        finish_(std::move(finish)) {
    for (int i = 0; i < size_; ++i) resp->add_results();
  }

  // Starts every item that may start; finishes the RPC when none is left.
  void Pump() ABSL_LOCKS_EXCLUDED(mu_) {
    mu_.Lock();
    if (pumping_) {
      repump_ = true;
      mu_.Unlock();
      return;
    }
    pumping_ = true;
    while (true) {
      if (next_ < size_ && Ready(req_->ops(next_))) {
        const int i = next_++;
        mu_.Unlock();  // only this thread starts items; completions only release them
        Start(i);
        mu_.Lock();
        continue;
      }
      if (repump_) {
        repump_ = false;
        continue;
      }
      pumping_ = false;
      const bool done = next_ == size_ && outstanding_ == 0 && !finished_;
      if (done) finished_ = true;
      mu_.Unlock();
      if (done) finish_(absl::OkStatus());
      return;
    }
  }

 private:
  bool Ready(const Op& op) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (outstanding_ >= kMaxBatchInFlight || alone_) return false;
    if (spec_.Alone(op)) return outstanding_ == 0;
    if (busy_.empty()) return true;  // no key to build
    const std::optional<Key> key = spec_.KeyOf(op);
    return !key || !busy_.contains(*key);
  }

  void Start(int i) ABSL_LOCKS_EXCLUDED(mu_) {
    const Op& op = req_->ops(i);
    Result* result = resp_->mutable_results(i);
    // Called, if at all, before the asynchronous operation starts: the item is outstanding
    // before it can complete.
    auto callback = [this, &op, i]() -> core::StatusCallback {
      {
        absl::MutexLock lock(&mu_);
        ++outstanding_;
        if (spec_.Alone(op)) {
          alone_ = true;
        } else if (std::optional<Key> key = spec_.KeyOf(op)) {
          ++busy_[*key];
        }
      }
      return [self = this->shared_from_this(), i](absl::Status s) { self->Done(i, s); };
    };
    if (std::optional<absl::Status> now = spec_.Start(i, op, result, callback)) {
      SetError(result, *now);
    }
  }

  void Done(int i, const absl::Status& s) ABSL_LOCKS_EXCLUDED(mu_) {
    const Op& op = req_->ops(i);
    SetError(resp_->mutable_results(i), s);
    {
      absl::MutexLock lock(&mu_);
      --outstanding_;
      if (spec_.Alone(op)) {
        alone_ = false;
      } else if (std::optional<Key> key = spec_.KeyOf(op)) {
        auto it = busy_.find(*key);
        if (--it->second == 0) busy_.erase(it);
      }
    }
    Pump();
  }

  static void SetError(Result* result, const absl::Status& s) {
    if (s.ok()) return;
    result->clear_result();
    result->set_code(static_cast<int32_t>(s.code()));
    result->set_message(std::string(s.message()));
  }

  const Spec spec_;
  const Request* const req_;
  Response* const resp_;
  // The request's size, kept: once finished, gRPC may free the request while a late Pump (from
  // the completion that let the finish happen on another thread) still checks for work.
  const int size_;
  core::StatusCallback finish_;
  absl::Mutex mu_;
  absl::flat_hash_map<Key, int> busy_ ABSL_GUARDED_BY(mu_);  // outstanding items per key
  int next_ ABSL_GUARDED_BY(mu_) = 0;
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  bool alone_ ABSL_GUARDED_BY(mu_) = false;  // an Alone item is outstanding
  bool pumping_ ABSL_GUARDED_BY(mu_) = false;
  bool repump_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// Unary's `op` (unary.h) for a Batch RPC: refuses more than core::kMaxBatchItems items, counts
// the items in `items` (distkit_batch_items_total), then runs them with BatchRun<Spec>.
template <typename Spec>
auto RunBatch(Spec spec, const typename Spec::Request* req, typename Spec::Response* resp,
              prometheus::Counter* items) {
  return [spec = std::move(spec), req, resp,
          items](const auto& callback) -> std::optional<absl::Status> {
    if (static_cast<size_t>(req->ops_size()) > core::kMaxBatchItems) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ops: a batch holds at most ", core::kMaxBatchItems, " items, got ", req->ops_size()));
    }
    items->Increment(req->ops_size());
    std::make_shared<BatchRun<Spec>>(spec, req, resp, callback())->Pump();
    return std::nullopt;
  };
}

}  // namespace distkit::transport
