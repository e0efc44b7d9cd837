// Every distkit.v1 request message through its service's conversion and validation code and on
// into the core, with no network and no Redis: a fake RedisClient answers the core's Redis calls
// with replies decoded from the input (fuzz/resp.h), then "not sent" once they run out.
//
// Input: byte 0 picks the request type (kTypes below), bytes 1-2 (little endian) are the length
// of the serialized message that follows; the rest is RESP, the replies. A message that does not
// parse is dropped (gRPC refuses it before any handler runs). Batches go item by item through the
// same entry points their BatchRun specs call. Everything is rebuilt per input, so a crash
// reproduces from its input alone.

#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "daemon/core/counters.h"
#include "daemon/core/hybrid_rate_limiter.h"
#include "daemon/core/instance_counters.h"
#include "daemon/core/local_rate_limiter.h"
#include "daemon/core/redis_rate_limiter.h"
#include "daemon/redis/redis_client.h"
#include "daemon/transport/counter_service.h"
#include "daemon/transport/instance_counter_service.h"
#include "daemon/transport/metrics.h"
#include "daemon/transport/rate_limit_service.h"
#include "fuzz/resp.h"

namespace distkit::fuzz {
namespace {

// Queues the core's calls; Drain answers them in order with the input's replies.
class ScriptedRedis : public redis::RedisClient {
 public:
  explicit ScriptedRedis(std::vector<redis::Reply> replies)
      : replies_(replies.begin(), replies.end()) {}

  void Command(std::vector<std::string> argv, redis::ReplyCallback done) override {
    Push(std::move(done));
  }
  void Script(std::string_view name, std::vector<std::string> keys, std::vector<std::string> args,
              redis::ReplyCallback done) override {
    Push(std::move(done));
  }
  bool Healthy() const override { return true; }

  // Answers queued calls (also those queued while answering), at most `limit` of them.
  void Drain(int limit) {
    for (int i = 0; i < limit; ++i) {
      redis::ReplyCallback done;
      absl::StatusOr<redis::Reply> reply;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (calls_.empty()) return;
        done = std::move(calls_.front());
        calls_.pop_front();
        if (replies_.empty()) {
          reply = redis::NotSentError("fuzz: no reply left");
        } else {
          reply = std::move(replies_.front());
          replies_.pop_front();
        }
      }
      done(std::move(reply));
    }
  }

 private:
  void Push(redis::ReplyCallback done) {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back(std::move(done));
  }

  std::mutex mu_;
  std::deque<redis::ReplyCallback> calls_;
  std::deque<redis::Reply> replies_;
};

// The daemon's object graph as daemon/app.cc builds it, minus the executor, the threads and the
// gRPC server.
struct Graph {
  explicit Graph(ScriptedRedis* redis)
      : counters(redis, CounterOptions()),
        icounters(redis, InstanceOptions()),
        local(LocalOptions()),
        redis_limiter(redis, core::RateLimitSettings{}, core::RateFailureMode::kLocal,
                      &core::DefaultRandom(), &local),
        hybrid(redis, HybridOptions()),
        metrics(),
        counter_svc(&counters, "ns", &in_flight, &metrics),
        icounter_svc(&icounters, "ns", &in_flight, &metrics),
        rate_svc(transport::RateLimiters{&local, &redis_limiter, &hybrid}, "ns", &in_flight,
                 &metrics) {}

  static core::CountersOptions CounterOptions() {
    core::CountersOptions o;
    o.dedup_id = "fuzz-dedup";
    o.max_pending_keys = 64;
    return o;
  }
  static core::InstanceCountersOptions InstanceOptions() {
    core::InstanceCountersOptions o;
    o.instance_id = "fuzz-instance";
    o.dedup_id = "fuzz-dedup";
    o.max_pending_keys = 64;
    return o;
  }
  static core::LocalRateLimiterOptions LocalOptions() {
    core::LocalRateLimiterOptions o;
    o.sweep_interval_ms = 0;  // no thread
    return o;
  }
  static core::HybridRateLimiterOptions HybridOptions() {
    core::HybridRateLimiterOptions o;
    o.dedup_id = "fuzz-dedup";
    return o;
  }

  core::Counters counters;
  core::InstanceCounters icounters;  // never started: its calls answer "not registered"
  core::LocalRateLimiter local;
  core::RedisRateLimiter redis_limiter;
  core::HybridRateLimiter hybrid;  // never started: no sync thread
  transport::InFlight in_flight;
  transport::Metrics metrics;
  transport::CounterServiceImpl counter_svc;
  transport::InstanceCounterServiceImpl icounter_svc;
  transport::RateLimitServiceImpl rate_svc;
};

// Counts completions; a second completion of one call would be a bug.
struct Calls {
  int started = 0;
  int completed = 0;

  core::StatusCallback Callback() {
    ++started;
    return [this](absl::Status) { ++completed; };
  }
  // Unary's contract: an inline status, or a callback handed out exactly once.
  template <typename Start>
  void RunStart(Start start) {
    bool made = false;
    auto make = [&]() -> core::StatusCallback {
      if (made) __builtin_trap();
      made = true;
      return Callback();
    };
    std::optional<absl::Status> now = start(absl::FunctionRef<core::StatusCallback()>(make));
    if (now.has_value() == made) __builtin_trap();
  }
};

// The requests and responses of one input: like gRPC's, they live until every completion ran.
struct Held {
  template <typename Msg>
  Msg& Make() {
    auto msg = std::make_unique<Msg>();
    Msg& out = *msg;
    messages.push_back(std::move(msg));
    return out;
  }
  std::vector<std::unique_ptr<google::protobuf::Message>> messages;
};

template <typename Msg>
bool Parse(std::string_view bytes, Msg* msg) {
  return msg->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
}

void Counter(Graph& g, Calls& calls, const v1::BatchOp& op, v1::BatchResult* res) {
  switch (op.op_case()) {
    case v1::BatchOp::kInc:
      calls.RunStart(
          [&](auto cb) { return g.counter_svc.StartInc(op.inc(), res->mutable_inc(), cb); });
      break;
    case v1::BatchOp::kGet:
      g.counter_svc.DoGet(op.get(), res->mutable_get(), calls.Callback());
      break;
    case v1::BatchOp::kSet:
      g.counter_svc.DoSet(op.set(), res->mutable_set(), calls.Callback());
      break;
    case v1::BatchOp::kDel:
      g.counter_svc.DoDel(op.del(), res->mutable_del(), calls.Callback());
      break;
    default:
      break;
  }
}

void Instance(Graph& g, Calls& calls, const v1::InstanceBatchOp& op, v1::InstanceBatchResult* res) {
  auto& svc = g.icounter_svc;
  switch (op.op_case()) {
    case v1::InstanceBatchOp::kInc:
      calls.RunStart([&](auto cb) { return svc.StartInc(op.inc(), res->mutable_inc(), cb); });
      break;
    case v1::InstanceBatchOp::kGet:
      svc.DoGet(op.get(), res->mutable_get(), calls.Callback());
      break;
    case v1::InstanceBatchOp::kSet:
      svc.DoSet(op.set(), res->mutable_set(), calls.Callback());
      break;
    case v1::InstanceBatchOp::kSetOnInstance:
      svc.DoSetOnInstance(op.set_on_instance(), res->mutable_set_on_instance(), calls.Callback());
      break;
    case v1::InstanceBatchOp::kDel:
      svc.DoDel(op.del(), res->mutable_del(), calls.Callback());
      break;
    case v1::InstanceBatchOp::kDelOnInstance:
      svc.DoDelOnInstance(op.del_on_instance(), res->mutable_del_on_instance(), calls.Callback());
      break;
    default:
      break;
  }
}

// One request of type `type`, parsed from `bytes`. Returns false when the bytes do not parse.
bool Run(Graph& g, Calls& calls, Held& held, int type, std::string_view bytes) {
  switch (type) {
    case 0: {
      auto& op = held.Make<v1::BatchOp>();
      if (!Parse(bytes, op.mutable_inc())) return false;
      auto& res = held.Make<v1::BatchResult>();
      Counter(g, calls, op, &res);
      return true;
    }
    case 1: {
      auto& op = held.Make<v1::BatchOp>();
      if (!Parse(bytes, op.mutable_get())) return false;
      auto& res = held.Make<v1::BatchResult>();
      Counter(g, calls, op, &res);
      return true;
    }
    case 2: {
      auto& op = held.Make<v1::BatchOp>();
      if (!Parse(bytes, op.mutable_set())) return false;
      auto& res = held.Make<v1::BatchResult>();
      Counter(g, calls, op, &res);
      return true;
    }
    case 3: {
      auto& op = held.Make<v1::BatchOp>();
      if (!Parse(bytes, op.mutable_del())) return false;
      auto& res = held.Make<v1::BatchResult>();
      Counter(g, calls, op, &res);
      return true;
    }
    case 4: {
      auto& req = held.Make<v1::ClearRequest>();
      if (!Parse(bytes, &req)) return false;
      std::string ns;
      transport::NameResolver names("ns");
      if (names.Namespace(req.namespace_(), &ns).ok()) g.counters.Clear(ns, calls.Callback());
      return true;
    }
    case 5: {
      auto& req = held.Make<v1::BatchRequest>();
      if (!Parse(bytes, &req)) return false;
      auto& resp = held.Make<v1::BatchResponse>();
      for (const auto& op : req.ops()) Counter(g, calls, op, resp.add_results());
      return true;
    }
    case 6: {
      auto& op = held.Make<v1::InstanceBatchOp>();
      if (!Parse(bytes, op.mutable_inc())) return false;
      auto& res = held.Make<v1::InstanceBatchResult>();
      Instance(g, calls, op, &res);
      return true;
    }
    case 7: {
      auto& op = held.Make<v1::InstanceBatchOp>();
      if (!Parse(bytes, op.mutable_get())) return false;
      auto& res = held.Make<v1::InstanceBatchResult>();
      Instance(g, calls, op, &res);
      return true;
    }
    case 8: {
      auto& op = held.Make<v1::InstanceBatchOp>();
      if (!Parse(bytes, op.mutable_set())) return false;
      auto& res = held.Make<v1::InstanceBatchResult>();
      Instance(g, calls, op, &res);
      return true;
    }
    case 9: {
      auto& op = held.Make<v1::InstanceBatchOp>();
      if (!Parse(bytes, op.mutable_set_on_instance())) return false;
      auto& res = held.Make<v1::InstanceBatchResult>();
      Instance(g, calls, op, &res);
      return true;
    }
    case 10: {
      auto& op = held.Make<v1::InstanceBatchOp>();
      if (!Parse(bytes, op.mutable_del())) return false;
      auto& res = held.Make<v1::InstanceBatchResult>();
      Instance(g, calls, op, &res);
      return true;
    }
    case 11: {
      auto& op = held.Make<v1::InstanceBatchOp>();
      if (!Parse(bytes, op.mutable_del_on_instance())) return false;
      auto& res = held.Make<v1::InstanceBatchResult>();
      Instance(g, calls, op, &res);
      return true;
    }
    case 12: {
      auto& req = held.Make<v1::InstanceClearRequest>();
      if (!Parse(bytes, &req)) return false;
      std::string ns;
      transport::NameResolver names("ns");
      if (names.Namespace(req.namespace_(), &ns).ok()) g.icounters.Clear(ns, calls.Callback());
      return true;
    }
    case 13: {
      auto& req = held.Make<v1::ClearOnInstanceRequest>();
      if (!Parse(bytes, &req)) return false;
      std::string ns;
      transport::NameResolver names("ns");
      if (names.Namespace(req.namespace_(), &ns).ok()) {
        g.icounters.ClearOnInstance(ns, calls.Callback());
      }
      return true;
    }
    case 14: {
      auto& req = held.Make<v1::InstanceBatchRequest>();
      if (!Parse(bytes, &req)) return false;
      auto& resp = held.Make<v1::InstanceBatchResponse>();
      for (const auto& op : req.ops()) Instance(g, calls, op, resp.add_results());
      return true;
    }
    case 15: {
      auto& req = held.Make<v1::RateLimitIncRequest>();
      if (!Parse(bytes, &req)) return false;
      auto& resp = held.Make<v1::RateLimitIncResponse>();
      calls.RunStart([&](auto cb) { return g.rate_svc.StartInc(req, &resp, cb); });
      return true;
    }
    case 16: {
      auto& req = held.Make<v1::RateLimitGetRequest>();
      if (!Parse(bytes, &req)) return false;
      auto& resp = held.Make<v1::RateLimitGetResponse>();
      g.rate_svc.DoGet(req, &resp, calls.Callback());
      return true;
    }
    case 17: {
      auto& req = held.Make<v1::RateLimitBatchRequest>();
      if (!Parse(bytes, &req)) return false;
      auto& resp = held.Make<v1::RateLimitBatchResponse>();
      for (const auto& op : req.ops()) {
        if (!op.has_inc()) continue;
        auto* res = resp.add_results()->mutable_inc();
        calls.RunStart([&](auto cb) { return g.rate_svc.StartInc(op.inc(), res, cb); });
      }
      return true;
    }
    default:
      return false;
  }
}

constexpr int kTypes = 18;

}  // namespace
}  // namespace distkit::fuzz

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  spdlog::set_level(spdlog::level::off);  // the core logs every failed Redis call
  // protobuf logs every string field with invalid UTF-8 (the parse fails, the input is dropped).
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace distkit::fuzz;
  if (size < 3) return 0;
  const int type = data[0] % kTypes;
  const size_t len = data[1] | (size_t{data[2]} << 8);
  if (3 + len > size) return 0;
  const std::string_view msg(reinterpret_cast<const char*>(data) + 3, len);
  const std::string_view rest(reinterpret_cast<const char*>(data) + 3 + len, size - 3 - len);

  ScriptedRedis redis(DecodeReplies(rest));
  Calls calls;  // outlives the graph: its destructors may still complete calls
  Held held;    // likewise the messages the completions write into
  {
    Graph graph(&redis);
    if (!Run(graph, calls, held, type, msg)) return 0;
    graph.counters.FlushNow();
    // Every Redis call is answered before the graph goes (HYBRID's destructor waits for its
    // replies); once the input's replies are used up, each answer is "not sent".
    redis.Drain(10000);
  }
  if (calls.completed > calls.started) __builtin_trap();
  return 0;
}
