#include "client/distkit_client.h"

#include <charconv>
#include <string>
#include <utility>

#include "distkit/call.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace distkit::internal {
namespace {

absl::Status InvalidAddress(std::string_view addr, std::string_view why) {
  std::string message = "invalid address '";
  message.append(addr).append("': ").append(why);
  return absl::InvalidArgumentError(message);
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

}  // namespace

absl::Status ValidateAddress(std::string_view addr) {
  if (addr.empty()) return absl::InvalidArgumentError("empty address");
  if (StartsWith(addr, "unix:")) {
    std::string_view path = addr.substr(5);
    if (StartsWith(path, "//")) path.remove_prefix(2);
    if (path.empty()) return InvalidAddress(addr, "missing socket path");
    return absl::OkStatus();
  }
  // Other gRPC target URIs are gRPC's business.
  for (std::string_view scheme : {"unix-abstract:", "dns:", "ipv4:", "ipv6:", "vsock:"}) {
    if (StartsWith(addr, scheme)) return absl::OkStatus();
  }
  if (addr.find("://") != std::string_view::npos) return absl::OkStatus();

  std::string_view host;
  std::string_view port;
  if (addr.front() == '[') {
    const size_t close = addr.find(']');
    if (close == std::string_view::npos || close + 1 >= addr.size() || addr[close + 1] != ':') {
      return InvalidAddress(addr, "expected [IPV6]:PORT");
    }
    host = addr.substr(1, close - 1);
    port = addr.substr(close + 2);
  } else {
    const size_t colon = addr.rfind(':');
    if (colon == std::string_view::npos) {
      return InvalidAddress(addr, "expected unix:PATH or HOST:PORT");
    }
    host = addr.substr(0, colon);
    port = addr.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return InvalidAddress(addr, "IPv6 addresses need brackets, e.g. [::1]:50051");
    }
  }
  if (host.empty()) return InvalidAddress(addr, "missing host");
  int value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value < 1 ||
      value > 65535) {
    return InvalidAddress(addr, "port must be an integer in [1, 65535]");
  }
  return absl::OkStatus();
}

}  // namespace distkit::internal

namespace distkit::client {
namespace {

void CopyNamespaceAndKey(std::string_view ns, std::string_view key, std::string* ns_out,
                         std::string* key_out) {
  ns_out->assign(ns.data(), ns.size());
  key_out->assign(key.data(), key.size());
}

}  // namespace

std::string_view ServingStatusName(ServingStatus status) {
  switch (status) {
    case ServingStatus::kUnknown:
      return "UNKNOWN";
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    case ServingStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
  }
  return "UNKNOWN";
}

absl::Status FromGrpcStatus(const grpc::Status& status) { return internal::FromGrpcStatus(status); }

v1::Condition MakeCondition(v1::Comparator op, int64_t operand) {
  v1::Condition condition;
  condition.set_op(op);
  condition.set_operand(operand);
  return condition;
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(std::string_view addr,
                                                        ClientOptions options) {
  const absl::Status valid = internal::ValidateAddress(addr);
  if (!valid.ok()) return valid;
  auto channel = distkit::NewChannel(addr, options.tls);
  if (!channel.ok()) return channel.status();
  return FromChannel(*std::move(channel), std::move(options));
}

std::unique_ptr<Client> Client::FromChannel(std::shared_ptr<grpc::Channel> channel,
                                            ClientOptions options) {
  return std::unique_ptr<Client>(new Client(std::move(channel), std::move(options)));
}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : channel_(std::move(channel)),
      options_(std::move(options)),
      counter_(v1::CounterService::NewStub(channel_)),
      instance_counter_(v1::InstanceCounterService::NewStub(channel_)),
      rate_limit_(v1::RateLimitService::NewStub(channel_)) {}

absl::Status Client::WaitForReady(std::chrono::milliseconds timeout) {
  if (channel_->WaitForConnected(std::chrono::system_clock::now() + timeout)) {
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError("the channel did not become ready within " +
                                     std::to_string(timeout.count()) + " ms");
}

void Client::Configure(grpc::ClientContext* context, const CallOptions& call) const {
  const std::chrono::milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  if (timeout.count() > 0) context->set_deadline(std::chrono::system_clock::now() + timeout);
  if (call.wait_for_ready) context->set_wait_for_ready(true);
}

absl::StatusOr<v1::IncResponse> Client::Inc(std::string_view ns, std::string_view key,
                                            int64_t delta, v1::Consistency consistency,
                                            const std::optional<v1::Condition>& condition,
                                            const CallOptions& call) {
  v1::IncRequest request;
  CopyNamespaceAndKey(ns, key, request.mutable_namespace_(), request.mutable_key());
  request.set_delta(delta);
  request.set_consistency(consistency);
  if (condition.has_value()) *request.mutable_condition() = *condition;
  return internal::Call(&v1::CounterService::Stub::Inc, counter_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<v1::GetResponse> Client::Get(std::string_view ns, std::string_view key,
                                            v1::Consistency consistency, const CallOptions& call) {
  v1::GetRequest request;
  CopyNamespaceAndKey(ns, key, request.mutable_namespace_(), request.mutable_key());
  request.set_consistency(consistency);
  return internal::Call(&v1::CounterService::Stub::Get, counter_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<v1::SetResponse> Client::Set(std::string_view ns, std::string_view key,
                                            int64_t value,
                                            const std::optional<v1::Condition>& condition,
                                            const CallOptions& call) {
  v1::SetRequest request;
  CopyNamespaceAndKey(ns, key, request.mutable_namespace_(), request.mutable_key());
  request.set_value(value);
  if (condition.has_value()) *request.mutable_condition() = *condition;
  return internal::Call(&v1::CounterService::Stub::Set, counter_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<v1::DelResponse> Client::Del(std::string_view ns, std::string_view key,
                                            const CallOptions& call) {
  v1::DelRequest request;
  CopyNamespaceAndKey(ns, key, request.mutable_namespace_(), request.mutable_key());
  return internal::Call(&v1::CounterService::Stub::Del, counter_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::Status Client::Clear(std::string_view ns, const CallOptions& call) {
  v1::ClearRequest request;
  request.mutable_namespace_()->assign(ns.data(), ns.size());
  return internal::Call(&v1::CounterService::Stub::Clear, counter_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); })
      .status();
}

absl::StatusOr<v1::BatchResponse> Client::Batch(const v1::BatchRequest& request,
                                                const CallOptions& call) {
  return internal::Call(&v1::CounterService::Stub::Batch, counter_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<v1::InstanceIncResponse> Client::InstanceInc(
    std::string_view ns, std::string_view key, int64_t delta, v1::Consistency consistency,
    const std::optional<v1::Condition>& condition, const CallOptions& call) {
  v1::InstanceIncRequest request;
  CopyNamespaceAndKey(ns, key, request.mutable_namespace_(), request.mutable_key());
  request.set_delta(delta);
  request.set_consistency(consistency);
  if (condition.has_value()) *request.mutable_condition() = *condition;
  return internal::Call(&v1::InstanceCounterService::Stub::Inc, instance_counter_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<v1::InstanceGetResponse> Client::InstanceGet(std::string_view ns,
                                                            std::string_view key,
                                                            v1::Consistency consistency,
                                                            const CallOptions& call) {
  v1::InstanceGetRequest request;
  CopyNamespaceAndKey(ns, key, request.mutable_namespace_(), request.mutable_key());
  request.set_consistency(consistency);
  return internal::Call(&v1::InstanceCounterService::Stub::Get, instance_counter_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<v1::InstanceSetResponse> Client::InstanceSet(
    std::string_view ns, std::string_view key, int64_t value,
    const std::optional<v1::Condition>& condition, const CallOptions& call) {
  v1::InstanceSetRequest request;
  CopyNamespaceAndKey(ns, key, request.mutable_namespace_(), request.mutable_key());
  request.set_value(value);
  if (condition.has_value()) *request.mutable_condition() = *condition;
  return internal::Call(&v1::InstanceCounterService::Stub::Set, instance_counter_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<v1::SetOnInstanceResponse> Client::SetOnInstance(
    std::string_view ns, std::string_view key, int64_t value, v1::Consistency consistency,
    const std::optional<v1::Condition>& condition, const CallOptions& call) {
  v1::SetOnInstanceRequest request;
  CopyNamespaceAndKey(ns, key, request.mutable_namespace_(), request.mutable_key());
  request.set_value(value);
  request.set_consistency(consistency);
  if (condition.has_value()) *request.mutable_condition() = *condition;
  return internal::Call(&v1::InstanceCounterService::Stub::SetOnInstance, instance_counter_.get(),
                        request, [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<v1::InstanceDelResponse> Client::InstanceDel(std::string_view ns,
                                                            std::string_view key,
                                                            const CallOptions& call) {
  v1::InstanceDelRequest request;
  CopyNamespaceAndKey(ns, key, request.mutable_namespace_(), request.mutable_key());
  return internal::Call(&v1::InstanceCounterService::Stub::Del, instance_counter_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<v1::DelOnInstanceResponse> Client::DelOnInstance(std::string_view ns,
                                                                std::string_view key,
                                                                const CallOptions& call) {
  v1::DelOnInstanceRequest request;
  CopyNamespaceAndKey(ns, key, request.mutable_namespace_(), request.mutable_key());
  return internal::Call(&v1::InstanceCounterService::Stub::DelOnInstance, instance_counter_.get(),
                        request, [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::Status Client::InstanceClear(std::string_view ns, const CallOptions& call) {
  v1::InstanceClearRequest request;
  request.mutable_namespace_()->assign(ns.data(), ns.size());
  return internal::Call(&v1::InstanceCounterService::Stub::Clear, instance_counter_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); })
      .status();
}

absl::Status Client::ClearOnInstance(std::string_view ns, const CallOptions& call) {
  v1::ClearOnInstanceRequest request;
  request.mutable_namespace_()->assign(ns.data(), ns.size());
  return internal::Call(&v1::InstanceCounterService::Stub::ClearOnInstance, instance_counter_.get(),
                        request, [&](grpc::ClientContext* c) { Configure(c, call); })
      .status();
}

absl::StatusOr<v1::InstanceBatchResponse> Client::InstanceBatch(
    const v1::InstanceBatchRequest& request, const CallOptions& call) {
  return internal::Call(&v1::InstanceCounterService::Stub::Batch, instance_counter_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<v1::RateLimitIncResponse> Client::RateLimitInc(
    std::string_view ns, std::string_view key, double rate_per_second, uint64_t count,
    v1::Provider provider, v1::Strategy strategy, const CallOptions& call) {
  v1::RateLimitIncRequest request;
  CopyNamespaceAndKey(ns, key, request.mutable_namespace_(), request.mutable_key());
  request.set_rate_per_second(rate_per_second);
  request.set_count(count);
  request.set_provider(provider);
  request.set_strategy(strategy);
  return internal::Call(&v1::RateLimitService::Stub::Inc, rate_limit_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<v1::RateLimitGetResponse> Client::RateLimitGet(std::string_view ns,
                                                              std::string_view key,
                                                              v1::Provider provider,
                                                              v1::Strategy strategy,
                                                              const CallOptions& call) {
  v1::RateLimitGetRequest request;
  CopyNamespaceAndKey(ns, key, request.mutable_namespace_(), request.mutable_key());
  request.set_provider(provider);
  request.set_strategy(strategy);
  return internal::Call(&v1::RateLimitService::Stub::Get, rate_limit_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<v1::RateLimitBatchResponse> Client::RateLimitBatch(
    const v1::RateLimitBatchRequest& request, const CallOptions& call) {
  return internal::Call(&v1::RateLimitService::Stub::Batch, rate_limit_.get(), request,
                        [&](grpc::ClientContext* c) { Configure(c, call); });
}

absl::StatusOr<ServingStatus> Client::CheckHealth(std::string_view service,
                                                  const CallOptions& call) {
  grpc::health::v1::HealthCheckRequest request;
  request.mutable_service()->assign(service.data(), service.size());
  grpc::ClientContext context;
  Configure(&context, call);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status =
      grpc::health::v1::Health::NewStub(channel_)->Check(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  switch (response.status()) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return ServingStatus::kServing;
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return ServingStatus::kNotServing;
    case grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN:
      return ServingStatus::kServiceUnknown;
    default:
      return ServingStatus::kUnknown;
  }
}

absl::StatusOr<bool> Client::Health(std::string_view service, const CallOptions& call) {
  absl::StatusOr<ServingStatus> status = CheckHealth(service, call);
  if (!status.ok()) return status.status();
  return *status == ServingStatus::kServing;
}

}  // namespace distkit::client
