#include "daemon/transport/status_mapping.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace distkit::transport {

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

core::Consistency FromProto(v1::Consistency c) {
  return c == v1::CONSISTENCY_LAX ? core::Consistency::kLax : core::Consistency::kStrict;
}

absl::Status ValidConsistency(v1::Consistency c) {
  if (!v1::Consistency_IsValid(c)) {
    return absl::InvalidArgumentError(absl::StrCat("consistency: unknown value ", c));
  }
  return absl::OkStatus();
}

absl::StatusOr<core::Condition> FromProto(const v1::Condition& c) {
  core::Condition out;
  out.operand = c.operand();
  switch (c.op()) {
    case v1::COMPARATOR_UNSPECIFIED:
      out.op = core::Comparator::kNone;
      break;
    case v1::COMPARATOR_EQ:
      out.op = core::Comparator::kEq;
      break;
    case v1::COMPARATOR_NE:
      out.op = core::Comparator::kNe;
      break;
    case v1::COMPARATOR_LT:
      out.op = core::Comparator::kLt;
      break;
    case v1::COMPARATOR_LE:
      out.op = core::Comparator::kLe;
      break;
    case v1::COMPARATOR_GT:
      out.op = core::Comparator::kGt;
      break;
    case v1::COMPARATOR_GE:
      out.op = core::Comparator::kGe;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("condition.op: unknown comparator ", c.op()));
  }
  return out;
}

}  // namespace distkit::transport
