#pragma once

// Small InstanceCounterService call helpers for tests (header-only). Every helper takes any
// object `d` with `d.stub()` (the in-process daemon of icounter_daemon.h) or `d.icounter_stub()`
// (a real distkitd, daemon.h) returning a v1::InstanceCounterService::Stub*, makes one call with
// a deadline and flattens the answer into `R`.

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "distkit/v1/instance_counter.grpc.pb.h"

namespace distkit::testing {

// (cumulative, instance)
using CI = std::pair<int64_t, int64_t>;

// The five fields of an instance-counter answer, with the call's status.
struct R {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;
  int64_t cum = 0, inst = 0, pcum = 0, pinst = 0;
  bool applied = false;

  CI now() const { return {cum, inst}; }
  CI prev() const { return {pcum, pinst}; }
};

// An OK answer, for EXPECT_EQ(Inc(...), Res(12, 12, 10, 10, true)).
inline R Res(int64_t cum, int64_t inst, int64_t pcum, int64_t pinst, bool applied) {
  R r;
  r.cum = cum;
  r.inst = inst;
  r.pcum = pcum;
  r.pinst = pinst;
  r.applied = applied;
  return r;
}

// The message is not compared.
inline bool operator==(const R& a, const R& b) {
  return a.code == b.code && a.cum == b.cum && a.inst == b.inst && a.pcum == b.pcum &&
         a.pinst == b.pinst && a.applied == b.applied;
}
inline void PrintTo(const R& r, std::ostream* os) {
  *os << "{code " << static_cast<int>(r.code);
  if (!r.message.empty()) *os << " '" << r.message << "'";
  *os << ", now (" << r.cum << ", " << r.inst << "), previous (" << r.pcum << ", " << r.pinst
      << "), applied " << (r.applied ? "true" : "false") << "}";
}
inline std::ostream& operator<<(std::ostream& os, const R& r) {
  PrintTo(r, &os);
  return os;
}

template <typename Resp>
R Out(const grpc::Status& s, const Resp& r) {
  R out;
  out.code = s.error_code();
  out.message = s.error_message();
  if (s.ok()) {
    out.cum = r.cumulative();
    out.inst = r.instance();
    out.pcum = r.previous_cumulative();
    out.pinst = r.previous_instance();
    out.applied = r.applied();
  }
  return out;
}

// The InstanceCounterService stub of `d`: d.icounter_stub() (a real distkitd, daemon.h) or
// d.stub() (the in-process ICounterDaemon).
template <typename D>
v1::InstanceCounterService::Stub* InstanceStub(D& d) {
  if constexpr (requires { d.icounter_stub(); }) {
    return d.icounter_stub();
  } else {
    return d.stub();
  }
}

inline constexpr std::chrono::seconds kCallDeadline{20};

inline void SetDeadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
}

// ---- request builders (also used for batch items) ----

inline v1::InstanceIncRequest IncReq(const std::string& key, int64_t delta,
                                     const std::string& ns = "",
                                     v1::Comparator op = v1::COMPARATOR_UNSPECIFIED,
                                     int64_t operand = 0,
                                     v1::Consistency c = v1::CONSISTENCY_UNSPECIFIED) {
  v1::InstanceIncRequest req;
  req.set_namespace_(ns);
  req.set_key(key);
  req.set_delta(delta);
  req.set_consistency(c);
  req.mutable_condition()->set_op(op);
  req.mutable_condition()->set_operand(operand);
  return req;
}
inline v1::InstanceGetRequest GetReq(const std::string& key, const std::string& ns = "",
                                     v1::Consistency c = v1::CONSISTENCY_UNSPECIFIED) {
  v1::InstanceGetRequest req;
  req.set_namespace_(ns);
  req.set_key(key);
  req.set_consistency(c);
  return req;
}
inline v1::InstanceSetRequest SetReq(const std::string& key, int64_t v,
                                     v1::Comparator op = v1::COMPARATOR_UNSPECIFIED,
                                     int64_t operand = 0, const std::string& ns = "") {
  v1::InstanceSetRequest req;
  req.set_namespace_(ns);
  req.set_key(key);
  req.set_value(v);
  req.mutable_condition()->set_op(op);
  req.mutable_condition()->set_operand(operand);
  return req;
}
inline v1::SetOnInstanceRequest SoiReq(const std::string& key, int64_t v,
                                       v1::Comparator op = v1::COMPARATOR_UNSPECIFIED,
                                       int64_t operand = 0,
                                       v1::Consistency c = v1::CONSISTENCY_UNSPECIFIED,
                                       const std::string& ns = "") {
  v1::SetOnInstanceRequest req;
  req.set_namespace_(ns);
  req.set_key(key);
  req.set_value(v);
  req.set_consistency(c);
  req.mutable_condition()->set_op(op);
  req.mutable_condition()->set_operand(operand);
  return req;
}
inline v1::InstanceDelRequest DelReq(const std::string& key, const std::string& ns = "") {
  v1::InstanceDelRequest req;
  req.set_namespace_(ns);
  req.set_key(key);
  return req;
}
inline v1::DelOnInstanceRequest DelOiReq(const std::string& key, const std::string& ns = "") {
  v1::DelOnInstanceRequest req;
  req.set_namespace_(ns);
  req.set_key(key);
  return req;
}

// ---- single calls ----

template <typename D>
R Inc(D& d, const std::string& key, int64_t delta, const std::string& ns = "",
      v1::Comparator op = v1::COMPARATOR_UNSPECIFIED, int64_t operand = 0,
      v1::Consistency c = v1::CONSISTENCY_UNSPECIFIED) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::InstanceIncResponse resp;
  return Out(InstanceStub(d)->Inc(&ctx, IncReq(key, delta, ns, op, operand, c), &resp), resp);
}
template <typename D>
R Get(D& d, const std::string& key, const std::string& ns = "",
      v1::Consistency c = v1::CONSISTENCY_UNSPECIFIED) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::InstanceGetResponse resp;
  return Out(InstanceStub(d)->Get(&ctx, GetReq(key, ns, c), &resp), resp);
}
template <typename D>
R Set(D& d, const std::string& key, int64_t v, v1::Comparator op = v1::COMPARATOR_UNSPECIFIED,
      int64_t operand = 0, const std::string& ns = "") {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::InstanceSetResponse resp;
  return Out(InstanceStub(d)->Set(&ctx, SetReq(key, v, op, operand, ns), &resp), resp);
}
template <typename D>
R Soi(D& d, const std::string& key, int64_t v, v1::Comparator op = v1::COMPARATOR_UNSPECIFIED,
      int64_t operand = 0, v1::Consistency c = v1::CONSISTENCY_UNSPECIFIED) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::SetOnInstanceResponse resp;
  return Out(InstanceStub(d)->SetOnInstance(&ctx, SoiReq(key, v, op, operand, c), &resp), resp);
}
template <typename D>
R Del(D& d, const std::string& key, const std::string& ns = "") {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::InstanceDelResponse resp;
  return Out(InstanceStub(d)->Del(&ctx, DelReq(key, ns), &resp), resp);
}
template <typename D>
R DelOi(D& d, const std::string& key, const std::string& ns = "") {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::DelOnInstanceResponse resp;
  return Out(InstanceStub(d)->DelOnInstance(&ctx, DelOiReq(key, ns), &resp), resp);
}
template <typename D>
grpc::StatusCode Clear(D& d, const std::string& ns = "") {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::InstanceClearRequest req;
  req.set_namespace_(ns);
  v1::InstanceClearResponse resp;
  return InstanceStub(d)->Clear(&ctx, req, &resp).error_code();
}
template <typename D>
grpc::StatusCode ClearOi(D& d, const std::string& ns = "") {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::ClearOnInstanceRequest req;
  req.set_namespace_(ns);
  v1::ClearOnInstanceResponse resp;
  return InstanceStub(d)->ClearOnInstance(&ctx, req, &resp).error_code();
}

// LAX forms of the three RPCs that take a consistency (default namespace).
template <typename D>
R LaxInc(D& d, const std::string& key, int64_t delta,
         v1::Comparator op = v1::COMPARATOR_UNSPECIFIED, int64_t operand = 0) {
  return Inc(d, key, delta, "", op, operand, v1::CONSISTENCY_LAX);
}
template <typename D>
R LaxGet(D& d, const std::string& key) {
  return Get(d, key, "", v1::CONSISTENCY_LAX);
}
template <typename D>
R LaxSoi(D& d, const std::string& key, int64_t v, v1::Comparator op = v1::COMPARATOR_UNSPECIFIED,
         int64_t operand = 0) {
  return Soi(d, key, v, op, operand, v1::CONSISTENCY_LAX);
}

// ---- batches ----

inline v1::InstanceBatchOp Op(v1::InstanceIncRequest r) {
  v1::InstanceBatchOp op;
  *op.mutable_inc() = std::move(r);
  return op;
}
inline v1::InstanceBatchOp Op(v1::InstanceGetRequest r) {
  v1::InstanceBatchOp op;
  *op.mutable_get() = std::move(r);
  return op;
}
inline v1::InstanceBatchOp Op(v1::InstanceSetRequest r) {
  v1::InstanceBatchOp op;
  *op.mutable_set() = std::move(r);
  return op;
}
inline v1::InstanceBatchOp Op(v1::SetOnInstanceRequest r) {
  v1::InstanceBatchOp op;
  *op.mutable_set_on_instance() = std::move(r);
  return op;
}
inline v1::InstanceBatchOp Op(v1::InstanceDelRequest r) {
  v1::InstanceBatchOp op;
  *op.mutable_del() = std::move(r);
  return op;
}
inline v1::InstanceBatchOp Op(v1::DelOnInstanceRequest r) {
  v1::InstanceBatchOp op;
  *op.mutable_del_on_instance() = std::move(r);
  return op;
}

// One batch result flattened like a single call (code and message from the item).
inline R FromBatchResult(const v1::InstanceBatchResult& b) {
  R out;
  out.code = static_cast<grpc::StatusCode>(b.code());
  out.message = b.message();
  auto fill = [&](const auto& r) {
    out.cum = r.cumulative();
    out.inst = r.instance();
    out.pcum = r.previous_cumulative();
    out.pinst = r.previous_instance();
    out.applied = r.applied();
  };
  switch (b.result_case()) {
    case v1::InstanceBatchResult::kInc:
      fill(b.inc());
      break;
    case v1::InstanceBatchResult::kGet:
      fill(b.get());
      break;
    case v1::InstanceBatchResult::kSet:
      fill(b.set());
      break;
    case v1::InstanceBatchResult::kSetOnInstance:
      fill(b.set_on_instance());
      break;
    case v1::InstanceBatchResult::kDel:
      fill(b.del());
      break;
    case v1::InstanceBatchResult::kDelOnInstance:
      fill(b.del_on_instance());
      break;
    default:
      break;
  }
  return out;
}

struct BatchOut {
  grpc::Status status;
  std::vector<R> results;
};

template <typename D>
BatchOut Batch(D& d, const v1::InstanceBatchRequest& req) {
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  v1::InstanceBatchResponse resp;
  BatchOut out;
  out.status = InstanceStub(d)->Batch(&ctx, req, &resp);
  for (const auto& r : resp.results()) out.results.push_back(FromBatchResult(r));
  return out;
}
template <typename D>
BatchOut Batch(D& d, std::initializer_list<v1::InstanceBatchOp> ops) {
  v1::InstanceBatchRequest req;
  for (const auto& op : ops) *req.add_ops() = op;
  return Batch(d, req);
}

}  // namespace distkit::testing
