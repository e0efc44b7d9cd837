#pragma once

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "daemon/core/types.h"
#include "distkit/v1/common.pb.h"

namespace distkit::transport {

// absl and gRPC share the canonical code numbering; the message passes through.
grpc::Status ToGrpcStatus(const absl::Status& s);

core::Consistency FromProto(v1::Consistency c);
// Unknown enum values (a newer client) are INVALID_ARGUMENT, never a crash.
absl::StatusOr<core::Condition> FromProto(const v1::Condition& c);
absl::Status ValidConsistency(v1::Consistency c);

}  // namespace distkit::transport
