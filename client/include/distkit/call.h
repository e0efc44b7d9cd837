#pragma once

// The one generic unary call path of the C++ client (distkit/client.h): a template over the stub
// method, its request and its response, in a blocking form (the generated blocking stub) and an
// asynchronous one (gRPC's callback stub, `Stub::async()`). Every RPC of the client goes through
// these two functions.

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string_view>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace distkit::internal {

// The same code and message (grpc::StatusCode and absl::StatusCode share the canonical 0..16).
inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

// `unix:PATH`, `HOST:PORT`, `[IPV6]:PORT` or another gRPC target URI; INVALID_ARGUMENT names
// the problem.
absl::Status ValidateAddress(std::string_view addr);

using Configure = absl::FunctionRef<void(grpc::ClientContext*)>;

// Blocking call of `method` (e.g. &v1::CounterService::Stub::Inc) on `stub`.
template <typename Stub, typename Req, typename Resp>
absl::StatusOr<Resp> Call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                          Stub* stub, const Req& request, Configure configure) {
  grpc::ClientContext context;
  configure(&context);
  Resp response;
  const grpc::Status status = (stub->*method)(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

// Asynchronous call of `method` (e.g. &v1::CounterService::Stub::async::Inc) on `async`
// (stub->async()): `done(convert(response))` or `done(error)` runs once, on a gRPC thread (keep
// it short, never block it on another call of this client). `request` is moved into the call's
// state, which lives until `done` returns.
template <typename Async, typename Req, typename Resp, typename Out>
void CallAsync(void (Async::*method)(grpc::ClientContext*, const Req*, Resp*,
                                     std::function<void(grpc::Status)>),
               Async* async, Req request, Configure configure,
               absl::AnyInvocable<absl::StatusOr<Out>(const Resp&)> convert,
               absl::AnyInvocable<void(absl::StatusOr<Out>)> done) {
  struct State {
    grpc::ClientContext context;
    Req request;
    Resp response;
    absl::AnyInvocable<absl::StatusOr<Out>(const Resp&)> convert;
    absl::AnyInvocable<void(absl::StatusOr<Out>)> done;
  };
  auto* state = new State{{}, std::move(request), {}, std::move(convert), std::move(done)};
  configure(&state->context);
  (async->*method)(&state->context, &state->request, &state->response,
                   [state](const grpc::Status& status) {
                     std::unique_ptr<State> owned(state);
                     if (!status.ok()) {
                       owned->done(FromGrpcStatus(status));
                     } else {
                       owned->done(owned->convert(owned->response));
                     }
                   });
}

}  // namespace distkit::internal
