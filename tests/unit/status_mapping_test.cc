#include "daemon/transport/status_mapping.h"

#include <gtest/gtest.h>

#include "daemon/transport/convert.h"

namespace distkit::transport {
namespace {

TEST(StatusMapping, CodesAndMessagesPassThrough) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  auto g = ToGrpcStatus(absl::OutOfRangeError("too big"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(g.error_message(), "too big");
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("x")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcStatus(absl::DeadlineExceededError("x")).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("x")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("x")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(StatusMapping, ConditionsAndUnknownEnums) {
  v1::Condition c;
  c.set_op(v1::COMPARATOR_LE);
  c.set_operand(-3);
  auto core = FromProto(c);
  ASSERT_TRUE(core.ok());
  EXPECT_EQ(core->op, core::Comparator::kLe);
  EXPECT_EQ(core->operand, -3);
  c.set_op(static_cast<v1::Comparator>(42));
  EXPECT_EQ(FromProto(c).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidConsistency(static_cast<v1::Consistency>(9)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromProto(v1::CONSISTENCY_UNSPECIFIED), core::Consistency::kStrict);
  EXPECT_EQ(FromProto(v1::CONSISTENCY_LAX), core::Consistency::kLax);
}

}  // namespace
}  // namespace distkit::transport
