// The gRPC receive limit (transport::kMaxReceiveMessageBytes) sits just above the largest legal
// request, computed from the protos: every Batch type with core::kMaxBatchItems items, each item
// the largest variant of its oneof with every field at its widest (names of core::kMaxNameBytes
// bytes, integers whose varint takes 10 bytes).

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <iostream>
#include <memory>
#include <string>

#include "daemon/core/validation.h"
#include "daemon/transport/server.h"
#include "distkit/v1/counter.pb.h"
#include "distkit/v1/instance_counter.pb.h"
#include "distkit/v1/rate_limit.pb.h"

namespace distkit::transport {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// Sets every field of `m` (recursively) to its widest legal value; oneofs are handled by the
// caller, which tries each variant.
void Widen(Message* m) {
  const auto* d = m->GetDescriptor();
  const auto* r = m->GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    ASSERT_FALSE(f->is_repeated()) << f->full_name() << ": a repeated field inside an op";
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        r->SetString(m, f, std::string(core::kMaxNameBytes, 'x'));
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        r->SetInt64(m, f, INT64_MIN);
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        r->SetUInt64(m, f, UINT64_MAX);
        break;
      case FieldDescriptor::CPPTYPE_INT32:
        r->SetInt32(m, f, INT32_MIN);
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        r->SetUInt32(m, f, UINT32_MAX);
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE:
        r->SetDouble(m, f, 1e300);
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        r->SetFloat(m, f, 1e30F);
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        r->SetBool(m, f, true);
        break;
      case FieldDescriptor::CPPTYPE_ENUM: {
        const auto* e = f->enum_type();
        r->SetEnumValue(m, f, e->value(e->value_count() - 1)->number());
        break;
      }
      case FieldDescriptor::CPPTYPE_MESSAGE:
        Widen(r->MutableMessage(m, f));
        break;
    }
  }
}

// The encoded size of the largest op: its oneof's widest variant.
size_t LargestOp(const Message& prototype) {
  const auto* d = prototype.GetDescriptor();
  size_t largest = 0;
  for (int i = 0; i < d->field_count(); ++i) {
    std::unique_ptr<Message> op(prototype.New());
    Widen(op->GetReflection()->MutableMessage(op.get(), d->field(i)));
    largest = std::max(largest, op->ByteSizeLong());
  }
  return largest;
}

// A Batch request (`repeated <Op> ops = 1`) of kMaxBatchItems copies of the largest op.
size_t LargestBatch(const Message& op) {
  const size_t one = LargestOp(op);
  // Each item: the field tag (1 byte) + its length varint + the op itself.
  const size_t len_varint = one < 128 ? 1 : (one < 16384 ? 2 : 3);
  return core::kMaxBatchItems * (1 + len_varint + one);
}

TEST(MaxMessage, LimitIsJustAboveTheLargestLegalRequest) {
  const size_t counter = LargestBatch(v1::BatchOp());
  const size_t instance = LargestBatch(v1::InstanceBatchOp());
  const size_t ratelimit = LargestBatch(v1::RateLimitBatchOp());
  const size_t largest = std::max({counter, instance, ratelimit});
  std::cout << "largest legal batches (bytes): counter " << counter << ", instance " << instance
            << ", rate limit " << ratelimit << "; limit " << kMaxReceiveMessageBytes << "\n";
  EXPECT_LT(largest, static_cast<size_t>(kMaxReceiveMessageBytes));
  // "Just above": no more than 20 % headroom.
  EXPECT_GT(largest * 12 / 10, static_cast<size_t>(kMaxReceiveMessageBytes));
}

TEST(MaxMessage, ComputedSizeMatchesARealBatch) {
  // The arithmetic of LargestBatch against protobuf's own size of a real (smaller) batch.
  v1::BatchRequest req;
  v1::BatchOp op;
  Widen(op.mutable_set());
  for (int i = 0; i < 100; ++i) *req.add_ops() = op;
  const size_t one = op.ByteSizeLong();
  EXPECT_EQ(req.ByteSizeLong(), 100 * (1 + (one < 128 ? 1 : 2) + one));
}

}  // namespace
}  // namespace distkit::transport
