#pragma once

// The C++ client of distkitd: typed results, the namespace set once, blocking and asynchronous
// calls, absl::Status errors carrying the gRPC code and message.
//
//   distkit::ClientOptions options;
//   options.address = "unix:/run/distkit/distkitd.sock";
//   options.ns = "shop";
//   auto client = distkit::Client::Create(options);
//   absl::StatusOr<distkit::CounterValue> r = (*client)->Inc("orders", 1);
//   (*client)->IncAsync("orders", 1, [](absl::StatusOr<distkit::CounterValue> r) { ... });
//
// A Client is thread-safe. Blocking calls wait for the answer or the deadline; asynchronous
// calls (the *Async methods, on gRPC's callback API) return at once and run their callback once,
// on a gRPC thread: keep it short and never wait in it for another call of the same client.
// For high-rate LAX increments use distkit::LaxAggregator (distkit/lax_aggregator.h): its Inc
// does not touch the socket.

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "distkit/channel.h"
#include "distkit/v1/counter.grpc.pb.h"
#include "distkit/v1/instance_counter.grpc.pb.h"
#include "distkit/v1/rate_limit.grpc.pb.h"

namespace distkit {

// STRICT: one atomic script in Redis per call. LAX: answered from the daemon's memory, flushed
// to Redis in batches (eventually consistent).
enum class Consistency { kStrict, kLax };

// "current <op> operand"; kNone = no condition.
enum class Comparator { kNone, kEq, kNe, kLt, kLe, kGt, kGe };
struct Condition {
  Comparator op = Comparator::kNone;
  int64_t operand = 0;
};

enum class Provider { kLocal, kRedis, kHybrid };
enum class Strategy { kAbsolute, kSuppressed };
enum class Decision { kAllowed, kRejected, kSuppressed };
std::string_view DecisionName(Decision decision);

// grpc.health.v1.HealthCheckResponse.ServingStatus.
enum class ServingStatus { kUnknown, kServing, kNotServing, kServiceUnknown };
std::string_view ServingStatusName(ServingStatus status);

struct ClientOptions {
  // `unix:PATH` or `HOST:PORT` (IPv6 as `[::1]:PORT`), as in the daemon's --listen; other gRPC
  // target URIs (`dns:///host:port`, ...) are passed through.
  std::string address;
  // The namespace of every call; empty = the daemon's --namespace.
  std::string ns;
  // Deadline of each call; zero = none.
  std::chrono::milliseconds deadline{5000};
  // Wait (within the deadline) for the daemon instead of failing fast with UNAVAILABLE while it
  // is unreachable.
  bool wait_for_ready = false;
  // TLS towards a TCP listener of a daemon started with --tls_cert (off when empty); other
  // credentials: build the channel yourself and use Client::FromChannel.
  TlsOptions tls;
};

// A plain counter after an operation (Get: value only).
struct CounterValue {
  int64_t value = 0;
  int64_t previous = 0;
  bool applied = false;  // false when the condition failed (then value == previous)
};

// An instance-aware counter after an operation: the cumulative (sum of the live instances'
// slices) and this daemon's slice, after and before.
struct InstanceValue {
  int64_t cumulative = 0;
  int64_t instance = 0;
  int64_t previous_cumulative = 0;
  int64_t previous_instance = 0;
  bool applied = false;
};

struct RateLimitResult {
  Decision decision = Decision::kAllowed;
  bool allowed = false;
  bool degraded = false;  // decided without Redis (--rate_limit_failure_mode)
  int64_t retry_after_ms = 0;
  uint64_t remaining_after_waiting = 0;
  double suppression_factor = 0;
};

struct RateLimitState {
  uint64_t total = 0;
  uint64_t declined = 0;
  double suppression_factor = 0;
};

// One item of Batch.
struct CounterOp {
  enum class Kind { kInc, kGet, kSet, kDel };
  Kind kind = Kind::kGet;
  std::string key;
  int64_t value = 0;  // the delta of kInc, the value of kSet
  Consistency consistency = Consistency::kStrict;
  Condition condition;

  static CounterOp Inc(std::string key, int64_t delta, Consistency c = Consistency::kStrict,
                       Condition condition = {});
  static CounterOp Get(std::string key, Consistency c = Consistency::kStrict);
  static CounterOp Set(std::string key, int64_t value, Condition condition = {});
  static CounterOp Del(std::string key);
};

// One item of InstanceBatch.
struct InstanceOp {
  enum class Kind { kInc, kGet, kSet, kSetOnInstance, kDel, kDelOnInstance };
  Kind kind = Kind::kGet;
  std::string key;
  int64_t value = 0;
  Consistency consistency = Consistency::kStrict;
  Condition condition;
};

// One item of RateLimitBatch.
struct RateLimitOp {
  std::string key;
  double rate_per_second = 0;
  uint64_t count = 1;
  Provider provider = Provider::kLocal;
  Strategy strategy = Strategy::kAbsolute;
};

// Per-item results: each item has its own status (a failed item was not applied).
template <typename T>
using BatchResults = std::vector<absl::StatusOr<T>>;

template <typename T>
using Callback = absl::AnyInvocable<void(absl::StatusOr<T>)>;

// Exactly-once identity of a Batch (see LaxAggregator): a daemon that already applied
// (client_id, seq) answers a resend with the first answer instead of applying it again.
struct PushId {
  std::string client_id;
  uint64_t seq = 0;
};

class Client {
 public:
  // Only the address is checked: the connection is made on the first call.
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options);
  // Over an existing channel (tests, custom channel arguments); options.address is ignored.
  static std::unique_ptr<Client> FromChannel(std::shared_ptr<grpc::Channel> channel,
                                             ClientOptions options);

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const { return options_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  // Connects now; DEADLINE_EXCEEDED when not connected within `timeout`.
  absl::Status WaitForReady(std::chrono::milliseconds timeout);

  // ---- plain counters ----
  absl::StatusOr<CounterValue> Inc(std::string_view key, int64_t delta,
                                   Consistency c = Consistency::kStrict, Condition condition = {});
  void IncAsync(std::string_view key, int64_t delta, Callback<CounterValue> done,
                Consistency c = Consistency::kStrict, Condition condition = {});
  absl::StatusOr<int64_t> Get(std::string_view key, Consistency c = Consistency::kStrict);
  void GetAsync(std::string_view key, Callback<int64_t> done, Consistency c = Consistency::kStrict);
  absl::StatusOr<CounterValue> Set(std::string_view key, int64_t value, Condition condition = {});
  void SetAsync(std::string_view key, int64_t value, Callback<CounterValue> done,
                Condition condition = {});
  absl::StatusOr<CounterValue> Del(std::string_view key);
  void DelAsync(std::string_view key, Callback<CounterValue> done);
  absl::Status Clear();
  // The call fails as a whole only when the daemon refuses it (e.g. over 10 000 items).
  absl::StatusOr<BatchResults<CounterValue>> Batch(const std::vector<CounterOp>& ops,
                                                   const std::optional<PushId>& id = {});
  void BatchAsync(const std::vector<CounterOp>& ops, Callback<BatchResults<CounterValue>> done,
                  const std::optional<PushId>& id = {});

  // ---- instance-aware counters (conditions of Inc/Set on the cumulative, of SetOnInstance on
  // this daemon's slice) ----
  absl::StatusOr<InstanceValue> InstanceInc(std::string_view key, int64_t delta,
                                            Consistency c = Consistency::kStrict,
                                            Condition condition = {});
  void InstanceIncAsync(std::string_view key, int64_t delta, Callback<InstanceValue> done,
                        Consistency c = Consistency::kStrict, Condition condition = {});
  absl::StatusOr<InstanceValue> InstanceGet(std::string_view key,
                                            Consistency c = Consistency::kStrict);
  absl::StatusOr<InstanceValue> InstanceSet(std::string_view key, int64_t value,
                                            Condition condition = {});
  absl::StatusOr<InstanceValue> SetOnInstance(std::string_view key, int64_t value,
                                              Consistency c = Consistency::kStrict,
                                              Condition condition = {});
  absl::StatusOr<InstanceValue> InstanceDel(std::string_view key);
  absl::StatusOr<InstanceValue> DelOnInstance(std::string_view key);
  absl::Status InstanceClear();
  absl::Status ClearOnInstance();
  absl::StatusOr<BatchResults<InstanceValue>> InstanceBatch(const std::vector<InstanceOp>& ops,
                                                            const std::optional<PushId>& id = {});
  void InstanceBatchAsync(const std::vector<InstanceOp>& ops,
                          Callback<BatchResults<InstanceValue>> done,
                          const std::optional<PushId>& id = {});

  // ---- rate limits (a REJECTED decision is an OK call) ----
  absl::StatusOr<RateLimitResult> RateLimitInc(std::string_view key, double rate_per_second,
                                               uint64_t count = 1,
                                               Provider provider = Provider::kLocal,
                                               Strategy strategy = Strategy::kAbsolute);
  void RateLimitIncAsync(std::string_view key, double rate_per_second, uint64_t count,
                         Callback<RateLimitResult> done, Provider provider = Provider::kLocal,
                         Strategy strategy = Strategy::kAbsolute);
  absl::StatusOr<RateLimitState> RateLimitGet(std::string_view key,
                                              Provider provider = Provider::kLocal,
                                              Strategy strategy = Strategy::kAbsolute);
  absl::StatusOr<BatchResults<RateLimitResult>> RateLimitBatch(const std::vector<RateLimitOp>& ops);

  // ---- grpc.health.v1.Health/Check (the daemon's readiness) ----
  // `service` "" is the process itself; "distkit.v1.CounterService" etc. follow Redis. An
  // unknown service is NOT_FOUND, as the daemon answers it.
  absl::StatusOr<ServingStatus> CheckHealth(std::string_view service);

 private:
  Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options);
  void Configure(grpc::ClientContext* context) const;
  // The deadline and flags of every call (internal::Configure).
  auto Ctx() const {
    return [this](grpc::ClientContext* context) { Configure(context); };
  }
  // A request with this client's namespace and `key`.
  template <typename Req>
  Req Keyed(std::string_view key) const;
  v1::BatchRequest BatchRequest(const std::vector<CounterOp>& ops,
                                const std::optional<PushId>& id) const;
  v1::InstanceBatchRequest InstanceBatchRequest(const std::vector<InstanceOp>& ops,
                                                const std::optional<PushId>& id) const;

  std::shared_ptr<grpc::Channel> channel_;
  ClientOptions options_;
  std::unique_ptr<v1::CounterService::Stub> counter_;
  std::unique_ptr<v1::InstanceCounterService::Stub> instance_counter_;
  std::unique_ptr<v1::RateLimitService::Stub> rate_limit_;
};

}  // namespace distkit
