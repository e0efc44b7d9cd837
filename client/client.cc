#include "distkit/client.h"

#include <charconv>
#include <functional>
#include <string>
#include <type_traits>
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

namespace distkit {
namespace {

using internal::Call;
using internal::CallAsync;

v1::Consistency ToProto(Consistency c) {
  return c == Consistency::kLax ? v1::CONSISTENCY_LAX : v1::CONSISTENCY_STRICT;
}

v1::Condition ToProto(const Condition& condition) {
  v1::Condition out;
  // Comparator's order is the proto's (kNone = COMPARATOR_UNSPECIFIED = 0).
  out.set_op(static_cast<v1::Comparator>(condition.op));
  out.set_operand(condition.operand);
  return out;
}

v1::Provider ToProto(Provider p) {
  switch (p) {
    case Provider::kRedis:
      return v1::PROVIDER_REDIS;
    case Provider::kHybrid:
      return v1::PROVIDER_HYBRID;
    case Provider::kLocal:
      break;
  }
  return v1::PROVIDER_LOCAL;
}

v1::Strategy ToProto(Strategy s) {
  return s == Strategy::kSuppressed ? v1::STRATEGY_SUPPRESSED : v1::STRATEGY_ABSOLUTE;
}

Decision FromProto(v1::Decision d) {
  switch (d) {
    case v1::DECISION_REJECTED:
      return Decision::kRejected;
    case v1::DECISION_SUPPRESSED:
      return Decision::kSuppressed;
    default:
      return Decision::kAllowed;
  }
}

// Every counter response has value/previous/applied (GetResponse: value only).
template <typename R>
CounterValue ToCounterValue(const R& r) {
  CounterValue out;
  out.value = r.value();
  if constexpr (requires { r.previous(); }) {
    out.previous = r.previous();
    out.applied = r.applied();
  } else {
    out.previous = r.value();
    out.applied = true;
  }
  return out;
}

// Every instance-counter response carries the same five fields.
template <typename R>
InstanceValue ToInstanceValue(const R& r) {
  return {r.cumulative(), r.instance(), r.previous_cumulative(), r.previous_instance(),
          r.applied()};
}

RateLimitResult ToRateLimitResult(const v1::RateLimitIncResponse& r) {
  return {FromProto(r.decision()),     r.allowed(),           r.degraded(), r.retry_after_ms(),
          r.remaining_after_waiting(), r.suppression_factor()};
}

template <typename Item>
absl::Status ItemStatus(const Item& item) {
  if (item.code() == 0) return absl::OkStatus();
  return {static_cast<absl::StatusCode>(item.code()), item.message()};
}

BatchResults<CounterValue> FromBatch(const v1::BatchResponse& r) {
  BatchResults<CounterValue> out;
  out.reserve(r.results_size());
  for (const v1::BatchResult& item : r.results()) {
    if (absl::Status s = ItemStatus(item); !s.ok()) {
      out.emplace_back(std::move(s));
      continue;
    }
    switch (item.result_case()) {
      case v1::BatchResult::kInc:
        out.emplace_back(ToCounterValue(item.inc()));
        break;
      case v1::BatchResult::kGet:
        out.emplace_back(ToCounterValue(item.get()));
        break;
      case v1::BatchResult::kSet:
        out.emplace_back(ToCounterValue(item.set()));
        break;
      case v1::BatchResult::kDel:
        out.emplace_back(ToCounterValue(item.del()));
        break;
      default:
        out.emplace_back(absl::InternalError("batch result without a result"));
    }
  }
  return out;
}

BatchResults<InstanceValue> FromInstanceBatch(const v1::InstanceBatchResponse& r) {
  BatchResults<InstanceValue> out;
  out.reserve(r.results_size());
  for (const v1::InstanceBatchResult& item : r.results()) {
    if (absl::Status s = ItemStatus(item); !s.ok()) {
      out.emplace_back(std::move(s));
      continue;
    }
    switch (item.result_case()) {
      case v1::InstanceBatchResult::kInc:
        out.emplace_back(ToInstanceValue(item.inc()));
        break;
      case v1::InstanceBatchResult::kGet:
        out.emplace_back(ToInstanceValue(item.get()));
        break;
      case v1::InstanceBatchResult::kSet:
        out.emplace_back(ToInstanceValue(item.set()));
        break;
      case v1::InstanceBatchResult::kSetOnInstance:
        out.emplace_back(ToInstanceValue(item.set_on_instance()));
        break;
      case v1::InstanceBatchResult::kDel:
        out.emplace_back(ToInstanceValue(item.del()));
        break;
      case v1::InstanceBatchResult::kDelOnInstance:
        out.emplace_back(ToInstanceValue(item.del_on_instance()));
        break;
      default:
        out.emplace_back(absl::InternalError("batch result without a result"));
    }
  }
  return out;
}

BatchResults<RateLimitResult> FromRateLimitBatch(const v1::RateLimitBatchResponse& r) {
  BatchResults<RateLimitResult> out;
  out.reserve(r.results_size());
  for (const v1::RateLimitBatchResult& item : r.results()) {
    if (absl::Status s = ItemStatus(item); !s.ok()) {
      out.emplace_back(std::move(s));
    } else {
      out.emplace_back(ToRateLimitResult(item.inc()));
    }
  }
  return out;
}

// The blocking and asynchronous forms of one RPC, its response converted to the typed result.
template <typename Stub, typename Req, typename Resp, typename Convert>
auto Sync(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*), Stub* stub,
          const Req& req, internal::Configure configure, const Convert& convert)
    -> absl::StatusOr<std::remove_cvref_t<decltype(convert(std::declval<const Resp&>()))>> {
  absl::StatusOr<Resp> r = Call(method, stub, req, configure);
  if (!r.ok()) return r.status();
  return convert(*r);
}

template <typename AsyncStub, typename Req, typename Resp, typename Out, typename Convert>
void Async(void (AsyncStub::*method)(grpc::ClientContext*, const Req*, Resp*,
                                     std::function<void(grpc::Status)>),
           AsyncStub* async, Req req, internal::Configure configure, Convert convert,
           Callback<Out> done) {
  CallAsync<AsyncStub, Req, Resp, Out>(
      method, async, std::move(req), configure,
      [convert = std::move(convert)](const Resp& r) -> absl::StatusOr<Out> { return convert(r); },
      std::move(done));
}

}  // namespace

std::string_view DecisionName(Decision decision) {
  switch (decision) {
    case Decision::kAllowed:
      return "ALLOWED";
    case Decision::kRejected:
      return "REJECTED";
    case Decision::kSuppressed:
      return "SUPPRESSED";
  }
  return "ALLOWED";
}

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

CounterOp CounterOp::Inc(std::string key, int64_t delta, Consistency c, Condition condition) {
  return {Kind::kInc, std::move(key), delta, c, condition};
}
CounterOp CounterOp::Get(std::string key, Consistency c) {
  return {Kind::kGet, std::move(key), 0, c, {}};
}
CounterOp CounterOp::Set(std::string key, int64_t value, Condition condition) {
  return {Kind::kSet, std::move(key), value, Consistency::kStrict, condition};
}
CounterOp CounterOp::Del(std::string key) {
  return {Kind::kDel, std::move(key), 0, Consistency::kStrict, {}};
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  if (absl::Status valid = internal::ValidateAddress(options.address); !valid.ok()) return valid;
  auto channel = NewChannel(options.address, options.tls);
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
  return absl::DeadlineExceededError("not connected to " + options_.address + " within " +
                                     std::to_string(timeout.count()) + " ms");
}

void Client::Configure(grpc::ClientContext* context) const {
  if (options_.deadline.count() > 0) {
    context->set_deadline(std::chrono::system_clock::now() + options_.deadline);
  }
  if (options_.wait_for_ready) context->set_wait_for_ready(true);
}

template <typename Req>
Req Client::Keyed(std::string_view key) const {
  Req req;
  req.set_namespace_(options_.ns);
  req.mutable_key()->assign(key.data(), key.size());
  return req;
}

namespace {

// ---- request parts (shared by the single calls and the batch items) ----

template <typename Req>
void FillInc(Req* req, int64_t delta, Consistency c, const Condition& condition) {
  req->set_delta(delta);
  req->set_consistency(ToProto(c));
  if (condition.op != Comparator::kNone) *req->mutable_condition() = ToProto(condition);
}

template <typename Req>
void FillSet(Req* req, int64_t value, const Condition& condition) {
  req->set_value(value);
  if (condition.op != Comparator::kNone) *req->mutable_condition() = ToProto(condition);
}

template <typename Req>
void FillGet(Req* req, Consistency c) {
  req->set_consistency(ToProto(c));
}

int64_t ValueOf(const v1::GetResponse& r) { return r.value(); }
// For RPCs whose response is empty: only the status matters.
bool Empty(const google::protobuf::Message& /*r*/) { return true; }

}  // namespace

using CounterStub = v1::CounterService::Stub;
using InstanceStub = v1::InstanceCounterService::Stub;
using RateLimitStub = v1::RateLimitService::Stub;

// ---- plain counters ----

absl::StatusOr<CounterValue> Client::Inc(std::string_view key, int64_t delta, Consistency c,
                                         Condition condition) {
  auto req = Keyed<v1::IncRequest>(key);
  FillInc(&req, delta, c, condition);
  return Sync(&CounterStub::Inc, counter_.get(), req, Ctx(), ToCounterValue<v1::IncResponse>);
}

void Client::IncAsync(std::string_view key, int64_t delta, Callback<CounterValue> done,
                      Consistency c, Condition condition) {
  auto req = Keyed<v1::IncRequest>(key);
  FillInc(&req, delta, c, condition);
  Async(&CounterStub::async::Inc, counter_->async(), std::move(req), Ctx(),
        ToCounterValue<v1::IncResponse>, std::move(done));
}

absl::StatusOr<int64_t> Client::Get(std::string_view key, Consistency c) {
  auto req = Keyed<v1::GetRequest>(key);
  FillGet(&req, c);
  return Sync(&CounterStub::Get, counter_.get(), req, Ctx(), ValueOf);
}

void Client::GetAsync(std::string_view key, Callback<int64_t> done, Consistency c) {
  auto req = Keyed<v1::GetRequest>(key);
  FillGet(&req, c);
  Async(&CounterStub::async::Get, counter_->async(), std::move(req), Ctx(), ValueOf,
        std::move(done));
}

absl::StatusOr<CounterValue> Client::Set(std::string_view key, int64_t value, Condition condition) {
  auto req = Keyed<v1::SetRequest>(key);
  FillSet(&req, value, condition);
  return Sync(&CounterStub::Set, counter_.get(), req, Ctx(), ToCounterValue<v1::SetResponse>);
}

void Client::SetAsync(std::string_view key, int64_t value, Callback<CounterValue> done,
                      Condition condition) {
  auto req = Keyed<v1::SetRequest>(key);
  FillSet(&req, value, condition);
  Async(&CounterStub::async::Set, counter_->async(), std::move(req), Ctx(),
        ToCounterValue<v1::SetResponse>, std::move(done));
}

absl::StatusOr<CounterValue> Client::Del(std::string_view key) {
  return Sync(&CounterStub::Del, counter_.get(), Keyed<v1::DelRequest>(key), Ctx(),
              ToCounterValue<v1::DelResponse>);
}

void Client::DelAsync(std::string_view key, Callback<CounterValue> done) {
  Async(&CounterStub::async::Del, counter_->async(), Keyed<v1::DelRequest>(key), Ctx(),
        ToCounterValue<v1::DelResponse>, std::move(done));
}

absl::Status Client::Clear() {
  v1::ClearRequest req;
  req.set_namespace_(options_.ns);
  return Sync(&CounterStub::Clear, counter_.get(), req, Ctx(), Empty).status();
}

v1::BatchRequest Client::BatchRequest(const std::vector<CounterOp>& ops,
                                      const std::optional<PushId>& id) const {
  v1::BatchRequest req;
  for (const CounterOp& op : ops) {
    v1::BatchOp* out = req.add_ops();
    switch (op.kind) {
      case CounterOp::Kind::kInc: {
        auto* r = out->mutable_inc();
        *r = Keyed<v1::IncRequest>(op.key);
        FillInc(r, op.value, op.consistency, op.condition);
        break;
      }
      case CounterOp::Kind::kGet: {
        auto* r = out->mutable_get();
        *r = Keyed<v1::GetRequest>(op.key);
        FillGet(r, op.consistency);
        break;
      }
      case CounterOp::Kind::kSet: {
        auto* r = out->mutable_set();
        *r = Keyed<v1::SetRequest>(op.key);
        FillSet(r, op.value, op.condition);
        break;
      }
      case CounterOp::Kind::kDel:
        *out->mutable_del() = Keyed<v1::DelRequest>(op.key);
        break;
    }
  }
  if (id) {
    req.set_client_id(id->client_id);
    req.set_seq(id->seq);
  }
  return req;
}

absl::StatusOr<BatchResults<CounterValue>> Client::Batch(const std::vector<CounterOp>& ops,
                                                         const std::optional<PushId>& id) {
  return Sync(&CounterStub::Batch, counter_.get(), BatchRequest(ops, id), Ctx(), FromBatch);
}

void Client::BatchAsync(const std::vector<CounterOp>& ops,
                        Callback<BatchResults<CounterValue>> done,
                        const std::optional<PushId>& id) {
  Async(&CounterStub::async::Batch, counter_->async(), BatchRequest(ops, id), Ctx(), FromBatch,
        std::move(done));
}

// ---- instance-aware counters ----

absl::StatusOr<InstanceValue> Client::InstanceInc(std::string_view key, int64_t delta,
                                                  Consistency c, Condition condition) {
  auto req = Keyed<v1::InstanceIncRequest>(key);
  FillInc(&req, delta, c, condition);
  return Sync(&InstanceStub::Inc, instance_counter_.get(), req, Ctx(),
              ToInstanceValue<v1::InstanceIncResponse>);
}

void Client::InstanceIncAsync(std::string_view key, int64_t delta, Callback<InstanceValue> done,
                              Consistency c, Condition condition) {
  auto req = Keyed<v1::InstanceIncRequest>(key);
  FillInc(&req, delta, c, condition);
  Async(&InstanceStub::async::Inc, instance_counter_->async(), std::move(req), Ctx(),
        ToInstanceValue<v1::InstanceIncResponse>, std::move(done));
}

absl::StatusOr<InstanceValue> Client::InstanceGet(std::string_view key, Consistency c) {
  auto req = Keyed<v1::InstanceGetRequest>(key);
  FillGet(&req, c);
  return Sync(&InstanceStub::Get, instance_counter_.get(), req, Ctx(),
              ToInstanceValue<v1::InstanceGetResponse>);
}

absl::StatusOr<InstanceValue> Client::InstanceSet(std::string_view key, int64_t value,
                                                  Condition condition) {
  auto req = Keyed<v1::InstanceSetRequest>(key);
  FillSet(&req, value, condition);
  return Sync(&InstanceStub::Set, instance_counter_.get(), req, Ctx(),
              ToInstanceValue<v1::InstanceSetResponse>);
}

absl::StatusOr<InstanceValue> Client::SetOnInstance(std::string_view key, int64_t value,
                                                    Consistency c, Condition condition) {
  auto req = Keyed<v1::SetOnInstanceRequest>(key);
  FillSet(&req, value, condition);
  req.set_consistency(ToProto(c));
  return Sync(&InstanceStub::SetOnInstance, instance_counter_.get(), req, Ctx(),
              ToInstanceValue<v1::SetOnInstanceResponse>);
}

absl::StatusOr<InstanceValue> Client::InstanceDel(std::string_view key) {
  return Sync(&InstanceStub::Del, instance_counter_.get(), Keyed<v1::InstanceDelRequest>(key),
              Ctx(), ToInstanceValue<v1::InstanceDelResponse>);
}

absl::StatusOr<InstanceValue> Client::DelOnInstance(std::string_view key) {
  return Sync(&InstanceStub::DelOnInstance, instance_counter_.get(),
              Keyed<v1::DelOnInstanceRequest>(key), Ctx(),
              ToInstanceValue<v1::DelOnInstanceResponse>);
}

absl::Status Client::InstanceClear() {
  v1::InstanceClearRequest req;
  req.set_namespace_(options_.ns);
  return Sync(&InstanceStub::Clear, instance_counter_.get(), req, Ctx(), Empty).status();
}

absl::Status Client::ClearOnInstance() {
  v1::ClearOnInstanceRequest req;
  req.set_namespace_(options_.ns);
  return Sync(&InstanceStub::ClearOnInstance, instance_counter_.get(), req, Ctx(), Empty).status();
}

v1::InstanceBatchRequest Client::InstanceBatchRequest(const std::vector<InstanceOp>& ops,
                                                      const std::optional<PushId>& id) const {
  v1::InstanceBatchRequest req;
  for (const InstanceOp& op : ops) {
    v1::InstanceBatchOp* out = req.add_ops();
    switch (op.kind) {
      case InstanceOp::Kind::kInc: {
        auto* r = out->mutable_inc();
        *r = Keyed<v1::InstanceIncRequest>(op.key);
        FillInc(r, op.value, op.consistency, op.condition);
        break;
      }
      case InstanceOp::Kind::kGet: {
        auto* r = out->mutable_get();
        *r = Keyed<v1::InstanceGetRequest>(op.key);
        FillGet(r, op.consistency);
        break;
      }
      case InstanceOp::Kind::kSet: {
        auto* r = out->mutable_set();
        *r = Keyed<v1::InstanceSetRequest>(op.key);
        FillSet(r, op.value, op.condition);
        break;
      }
      case InstanceOp::Kind::kSetOnInstance: {
        auto* r = out->mutable_set_on_instance();
        *r = Keyed<v1::SetOnInstanceRequest>(op.key);
        FillSet(r, op.value, op.condition);
        r->set_consistency(ToProto(op.consistency));
        break;
      }
      case InstanceOp::Kind::kDel:
        *out->mutable_del() = Keyed<v1::InstanceDelRequest>(op.key);
        break;
      case InstanceOp::Kind::kDelOnInstance:
        *out->mutable_del_on_instance() = Keyed<v1::DelOnInstanceRequest>(op.key);
        break;
    }
  }
  if (id) {
    req.set_client_id(id->client_id);
    req.set_seq(id->seq);
  }
  return req;
}

absl::StatusOr<BatchResults<InstanceValue>> Client::InstanceBatch(
    const std::vector<InstanceOp>& ops, const std::optional<PushId>& id) {
  return Sync(&InstanceStub::Batch, instance_counter_.get(), InstanceBatchRequest(ops, id), Ctx(),
              FromInstanceBatch);
}

void Client::InstanceBatchAsync(const std::vector<InstanceOp>& ops,
                                Callback<BatchResults<InstanceValue>> done,
                                const std::optional<PushId>& id) {
  Async(&InstanceStub::async::Batch, instance_counter_->async(), InstanceBatchRequest(ops, id),
        Ctx(), FromInstanceBatch, std::move(done));
}

// ---- rate limits ----

namespace {
v1::RateLimitIncRequest RateLimitRequest(v1::RateLimitIncRequest req, double rate, uint64_t count,
                                         Provider provider, Strategy strategy) {
  req.set_rate_per_second(rate);
  req.set_count(count);
  req.set_provider(ToProto(provider));
  req.set_strategy(ToProto(strategy));
  return req;
}
}  // namespace

absl::StatusOr<RateLimitResult> Client::RateLimitInc(std::string_view key, double rate_per_second,
                                                     uint64_t count, Provider provider,
                                                     Strategy strategy) {
  return Sync(&RateLimitStub::Inc, rate_limit_.get(),
              RateLimitRequest(Keyed<v1::RateLimitIncRequest>(key), rate_per_second, count,
                               provider, strategy),
              Ctx(), ToRateLimitResult);
}

void Client::RateLimitIncAsync(std::string_view key, double rate_per_second, uint64_t count,
                               Callback<RateLimitResult> done, Provider provider,
                               Strategy strategy) {
  Async(&RateLimitStub::async::Inc, rate_limit_->async(),
        RateLimitRequest(Keyed<v1::RateLimitIncRequest>(key), rate_per_second, count, provider,
                         strategy),
        Ctx(), ToRateLimitResult, std::move(done));
}

absl::StatusOr<RateLimitState> Client::RateLimitGet(std::string_view key, Provider provider,
                                                    Strategy strategy) {
  auto req = Keyed<v1::RateLimitGetRequest>(key);
  req.set_provider(ToProto(provider));
  req.set_strategy(ToProto(strategy));
  return Sync(&RateLimitStub::Get, rate_limit_.get(), req, Ctx(),
              [](const v1::RateLimitGetResponse& r) {
                return RateLimitState{r.total(), r.declined(), r.suppression_factor()};
              });
}

absl::StatusOr<BatchResults<RateLimitResult>> Client::RateLimitBatch(
    const std::vector<RateLimitOp>& ops) {
  v1::RateLimitBatchRequest req;
  for (const RateLimitOp& op : ops) {
    *req.add_ops()->mutable_inc() =
        RateLimitRequest(Keyed<v1::RateLimitIncRequest>(op.key), op.rate_per_second, op.count,
                         op.provider, op.strategy);
  }
  return Sync(&RateLimitStub::Batch, rate_limit_.get(), req, Ctx(), FromRateLimitBatch);
}

// ---- health ----

absl::StatusOr<ServingStatus> Client::CheckHealth(std::string_view service) {
  using grpc::health::v1::HealthCheckResponse;
  grpc::health::v1::HealthCheckRequest req;
  req.mutable_service()->assign(service.data(), service.size());
  // A stub per call: health checks are rare, and the public header stays free of health.proto.
  const auto stub = grpc::health::v1::Health::NewStub(channel_);
  return Sync(&grpc::health::v1::Health::Stub::Check, stub.get(), req, Ctx(),
              [](const HealthCheckResponse& r) {
                switch (r.status()) {
                  case HealthCheckResponse::SERVING:
                    return ServingStatus::kServing;
                  case HealthCheckResponse::NOT_SERVING:
                    return ServingStatus::kNotServing;
                  case HealthCheckResponse::SERVICE_UNKNOWN:
                    return ServingStatus::kServiceUnknown;
                  default:
                    return ServingStatus::kUnknown;
                }
              });
}

}  // namespace distkit
