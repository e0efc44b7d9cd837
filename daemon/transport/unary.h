#pragma once

// Unary RPC glue shared by the callback services.

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/core/types.h"
#include "daemon/redis/redis_client.h"
#include "daemon/transport/in_flight.h"
#include "daemon/transport/metrics.h"
#include "daemon/transport/status_mapping.h"

namespace distkit::transport {

// The reactor of an admitted call: gives its bytes back to InFlight when gRPC is done with the
// call (the answer sent or the call cancelled), which can be long after Finish when the client
// does not read.
class AdmittedReactor final : public grpc::ServerUnaryReactor {
 public:
  AdmittedReactor(InFlight* in_flight, int64_t bytes) : in_flight_(in_flight), bytes_(bytes) {}
  void OnDone() override {
    in_flight_->Release(bytes_);
    delete this;
  }
  // Run OnDone on the thread that completes the call, as gRPC does for its DefaultReactor: it is
  // trivial, and otherwise gRPC schedules it on an executor, a thread hop per RPC (measured:
  // +10 us of daemon CPU per LAX Inc). gRPC 1.51 marks this "not API".
  bool InternalInlineable() override { return true; }

 private:
  InFlight* const in_flight_;
  const int64_t bytes_;
};

// From handler entry to Finish: counts the call in flight and records its code and duration
// (before Finish, so a client that got its answer also sees it counted). `op(callback)` either
// returns the final status at once, or returns nullopt after handing `callback()` to an
// asynchronous operation that calls it exactly once. The callback is built only then: its
// closure is larger than AnyInvocable's inline storage, and a LAX fast path must not allocate.
// The call is first admitted for `bytes` (InFlight::TryAdmit); over the budget it is refused
// with RESOURCE_EXHAUSTED without running `op`.
template <typename Op>
grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, InFlight* in_flight,
                                const RpcMetrics* metrics, size_t method, Op op,
                                int64_t bytes = kCallBytes) {
  const auto start = std::chrono::steady_clock::now();
  if (!in_flight->TryAdmit(bytes)) {
    grpc::Status refused(grpc::StatusCode::RESOURCE_EXHAUSTED,
                         "the daemon holds too many calls in flight (--max_memory_mb); retry "
                         "later");
    metrics->Record(method, refused.error_code(), std::chrono::steady_clock::now() - start);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(std::move(refused));
    return reactor;
  }
  auto* reactor = new AdmittedReactor(in_flight, bytes);
  in_flight->Enter();
  auto finish = [reactor, in_flight, metrics, method, start](const absl::Status& s) {
    grpc::Status status = ToGrpcStatus(s);
    metrics->Record(method, status.error_code(), std::chrono::steady_clock::now() - start);
    reactor->Finish(std::move(status));
    in_flight->Leave();
  };
  auto callback = [&finish]() -> core::StatusCallback {
    return [finish](absl::Status s) { finish(s); };
  };
  std::optional<absl::Status> now;
  {
    // A lone Redis command the call waits for runs on this thread when the scope ends
    // (docs/design.md "The inline path"): no hand-off to the Redis loop and back.
    redis::InlineScope inline_scope;
    now = op(callback);
    if (now) inline_scope.NoInline();  // answered already: nothing waits here
  }
  if (now) finish(*now);
  return reactor;
}

// For the RPCs that always complete through a callback.
template <typename Async>
auto Later(Async async) {
  return [async = std::move(async)](const auto& callback) -> std::optional<absl::Status> {
    async(callback());
    return std::nullopt;
  };
}

// A core completion (absl::StatusOr<R>) that stores an OK result with `fill(result)` and reports
// the status to `done`.
template <typename R, typename Fill>
auto Completion(Fill fill, core::StatusCallback done) {
  return [fill = std::move(fill), done = std::move(done)](absl::StatusOr<R> r) mutable {
    if (r.ok()) fill(*r);
    done(r.status());
  };
}

// The body of an `op` (Unary's, or a batch item's) for a call the core may answer from memory:
// `now` is the core's inline answer (nullopt when it needs its asynchronous path), stored with
// `fill` and returned as the final status, without building a callback (a LAX fast path must
// not allocate). Else `async(completion)` runs the asynchronous path with a Completion and the
// result is nullopt.
template <typename R, typename Fill, typename Async, typename MakeCallback>
std::optional<absl::Status> InlineOr(std::optional<absl::StatusOr<R>> now, const Fill& fill,
                                     Async&& async, const MakeCallback& callback) {
  if (now) {
    if (now->ok()) fill(**now);
    return now->status();
  }
  async(Completion<R>(fill, callback()));
  return std::nullopt;
}

}  // namespace distkit::transport
