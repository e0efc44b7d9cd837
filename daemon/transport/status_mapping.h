#pragma once

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace distkit::transport {

// absl and gRPC share the canonical code numbering; the message passes through.
grpc::Status ToGrpcStatus(const absl::Status& s);

}  // namespace distkit::transport
