#pragma once

// Small InstanceCounterService call helpers for tests (header-only), on the C++ client
// (distkit/client.h), so that every tier exercises it. Every helper takes any object `d` with
// `d.client()` (the in-process daemon of icounter_daemon.h, or a real distkitd, daemon.h)
// returning a distkit::Client&, makes one call through it and flattens the answer into `R`.
// The request builders (IncReq, ...) still make protos: tests keep them for batches (converted
// to the client's InstanceOp) and for the raw-stub calls that test the wire itself.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "distkit/client.h"
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

inline R Out(const absl::StatusOr<InstanceValue>& r) {
  R out;
  out.code = static_cast<grpc::StatusCode>(r.status().code());  // same numbering
  out.message = std::string(r.status().message());
  if (r.ok()) {
    out.cum = r->cumulative;
    out.inst = r->instance;
    out.pcum = r->previous_cumulative;
    out.pinst = r->previous_instance;
    out.applied = r->applied;
  }
  return out;
}

inline constexpr std::chrono::seconds kCallDeadline{20};

// A client of `d` for namespace `ns` ("" = the daemon's --namespace), on d.client()'s channel.
template <typename D>
std::unique_ptr<Client> ClientOf(D& d, const std::string& ns) {
  ClientOptions options = d.client().options();
  options.ns = ns;
  options.deadline = kCallDeadline;
  return Client::FromChannel(d.client().channel(), std::move(options));
}

inline Consistency FromProto(v1::Consistency c) {
  return c == v1::CONSISTENCY_LAX ? Consistency::kLax : Consistency::kStrict;
}
inline Condition FromProto(v1::Comparator op, int64_t operand) {
  return {static_cast<Comparator>(op), operand};  // Comparator follows the proto's order
}
inline Condition FromProto(const v1::Condition& c) { return FromProto(c.op(), c.operand()); }

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
  return Out(ClientOf(d, ns)->InstanceInc(key, delta, FromProto(c), FromProto(op, operand)));
}
template <typename D>
R Get(D& d, const std::string& key, const std::string& ns = "",
      v1::Consistency c = v1::CONSISTENCY_UNSPECIFIED) {
  return Out(ClientOf(d, ns)->InstanceGet(key, FromProto(c)));
}
template <typename D>
R Set(D& d, const std::string& key, int64_t v, v1::Comparator op = v1::COMPARATOR_UNSPECIFIED,
      int64_t operand = 0, const std::string& ns = "") {
  return Out(ClientOf(d, ns)->InstanceSet(key, v, FromProto(op, operand)));
}
template <typename D>
R Soi(D& d, const std::string& key, int64_t v, v1::Comparator op = v1::COMPARATOR_UNSPECIFIED,
      int64_t operand = 0, v1::Consistency c = v1::CONSISTENCY_UNSPECIFIED) {
  return Out(ClientOf(d, "")->SetOnInstance(key, v, FromProto(c), FromProto(op, operand)));
}
template <typename D>
R Del(D& d, const std::string& key, const std::string& ns = "") {
  return Out(ClientOf(d, ns)->InstanceDel(key));
}
template <typename D>
R DelOi(D& d, const std::string& key, const std::string& ns = "") {
  return Out(ClientOf(d, ns)->DelOnInstance(key));
}
template <typename D>
grpc::StatusCode Clear(D& d, const std::string& ns = "") {
  return static_cast<grpc::StatusCode>(ClientOf(d, ns)->InstanceClear().code());
}
template <typename D>
grpc::StatusCode ClearOi(D& d, const std::string& ns = "") {
  return static_cast<grpc::StatusCode>(ClientOf(d, ns)->ClearOnInstance().code());
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

// A batch op as the client's InstanceOp (the namespace is the client's: items must have none).
inline InstanceOp FromProto(const v1::InstanceBatchOp& op) {
  InstanceOp out;
  auto common = [&](InstanceOp::Kind kind, const auto& r) {
    EXPECT_TRUE(r.namespace_().empty()) << "batch items take the client's namespace";
    out.kind = kind;
    out.key = r.key();
  };
  switch (op.op_case()) {
    case v1::InstanceBatchOp::kInc:
      common(InstanceOp::Kind::kInc, op.inc());
      out.value = op.inc().delta();
      out.consistency = FromProto(op.inc().consistency());
      out.condition = FromProto(op.inc().condition());
      break;
    case v1::InstanceBatchOp::kGet:
      common(InstanceOp::Kind::kGet, op.get());
      out.consistency = FromProto(op.get().consistency());
      break;
    case v1::InstanceBatchOp::kSet:
      common(InstanceOp::Kind::kSet, op.set());
      out.value = op.set().value();
      out.condition = FromProto(op.set().condition());
      break;
    case v1::InstanceBatchOp::kSetOnInstance:
      common(InstanceOp::Kind::kSetOnInstance, op.set_on_instance());
      out.value = op.set_on_instance().value();
      out.consistency = FromProto(op.set_on_instance().consistency());
      out.condition = FromProto(op.set_on_instance().condition());
      break;
    case v1::InstanceBatchOp::kDel:
      common(InstanceOp::Kind::kDel, op.del());
      break;
    case v1::InstanceBatchOp::kDelOnInstance:
      common(InstanceOp::Kind::kDelOnInstance, op.del_on_instance());
      break;
    default:
      ADD_FAILURE() << "a batch op without an operation: use the raw stub for that";
  }
  return out;
}

struct BatchOut {
  grpc::Status status;
  std::vector<R> results;
};

template <typename D>
BatchOut Batch(D& d, const v1::InstanceBatchRequest& req) {
  std::vector<InstanceOp> ops;
  ops.reserve(req.ops_size());
  for (const auto& op : req.ops()) ops.push_back(FromProto(op));
  auto r = ClientOf(d, "")->InstanceBatch(ops);
  BatchOut out;
  if (!r.ok()) {
    out.status = grpc::Status(static_cast<grpc::StatusCode>(r.status().code()),
                              std::string(r.status().message()));
    return out;
  }
  for (const auto& item : *r) out.results.push_back(Out(item));
  return out;
}
template <typename D>
BatchOut Batch(D& d, std::initializer_list<v1::InstanceBatchOp> ops) {
  v1::InstanceBatchRequest req;
  for (const auto& op : ops) *req.add_ops() = op;
  return Batch(d, req);
}

}  // namespace distkit::testing
