#include "daemon/transport/status_mapping.h"

#include <string>

namespace distkit::transport {

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace distkit::transport
