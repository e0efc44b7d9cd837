// CounterService end to end inside one process: the real gRPC server, core and executor on a
// real redis-server. Two in-process daemons share one Redis where a scenario needs a second
// instance. Ports the original library's scenarios 2-39 (docs/instance_counters.md,
// "Origin") to our semantics (STRICT and LAX share
// one value per key; "a new LaxCounter" = another daemon; sleeps = polling with a deadline).

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "daemon/app.h"
#include "daemon/config/config.h"
#include "daemon/core/redis_keys.h"
#include "daemon/redis/redis_url.h"
#include "distkit/client.h"
#include "distkit/v1/counter.grpc.pb.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::PollUntil;
using testing::RedisServer;
using v1::Comparator;
using v1::Consistency;
constexpr auto kStrict = v1::CONSISTENCY_STRICT;
constexpr auto kLax = v1::CONSISTENCY_LAX;

// One daemon (the daemon's App, daemon/app.h) inside the test process.
class InProcessDaemon {
 public:
  InProcessDaemon(const RedisServer& redis, const std::string& socket, int flush_ms = 20) {
    config::Config config;
    config.listen = {"unix:" + socket};
    config.redis_seeds = {*redis::ParseRedisUrl(redis.url())};
    config.redis_timeout_ms = 2000;
    config.flush_interval_ms = flush_ms;
    config.allowed_lag_ms = 20;
    auto app = App::Create(config);
    EXPECT_TRUE(app.ok()) << app.status();
    app_ = *std::move(app);
    channel_ = grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
    stub_ = v1::CounterService::NewStub(channel_);
    EXPECT_TRUE(PollUntil([&] { return app_->executor().Healthy(); }, 10s));
  }
  ~InProcessDaemon() { app_->Shutdown(4s); }
  // For requests the typed client cannot express (unknown enum values).
  v1::CounterService::Stub* stub() { return stub_.get(); }
  // The C++ client in namespace `ns` ("" = the daemon's).
  std::unique_ptr<Client> client(const std::string& ns = "") {
    ClientOptions options;
    options.ns = ns;
    options.deadline = 20s;
    return Client::FromChannel(channel_, options);
  }
  core::Counters* counters() { return &app_->counters(); }

 private:
  std::unique_ptr<App> app_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::CounterService::Stub> stub_;
};

// The typed client's enums for the proto ones the tests are written with.
distkit::Consistency Typed(Consistency c) {
  return c == v1::CONSISTENCY_LAX ? distkit::Consistency::kLax : distkit::Consistency::kStrict;
}
// distkit::Comparator has the proto's order (kNone = COMPARATOR_UNSPECIFIED).
distkit::Condition Typed(Comparator op, int64_t operand) {
  return {static_cast<distkit::Comparator>(op), operand};
}

struct R {  // an op's outcome
  grpc::StatusCode code = grpc::StatusCode::OK;
  int64_t value = 0, previous = 0;
  bool applied = false;
};

R ToR(const absl::StatusOr<CounterValue>& r) {
  if (!r.ok()) return {static_cast<grpc::StatusCode>(r.status().code())};
  return {grpc::StatusCode::OK, r->value, r->previous, r->applied};
}

class CounterServiceTest : public ::testing::TestWithParam<Consistency> {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_TRUE(redis_);
    a_ = std::make_unique<InProcessDaemon>(*redis_, redis_->dir() + "/a.sock");
    b_ = std::make_unique<InProcessDaemon>(*redis_, redis_->dir() + "/b.sock");
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
  }
  Consistency c() const { return GetParam(); }

  static R Inc(InProcessDaemon& d, const std::string& key, int64_t delta, Consistency c,
               Comparator op = v1::COMPARATOR_UNSPECIFIED, int64_t operand = 0,
               const std::string& ns = "") {
    return ToR(d.client(ns)->Inc(key, delta, Typed(c), Typed(op, operand)));
  }
  // Inc straight on the stub: for values the typed client cannot carry (unknown enums).
  static grpc::StatusCode RawInc(InProcessDaemon& d, Consistency c, Comparator op) {
    grpc::ClientContext ctx;
    v1::IncRequest req;
    req.set_key("k");
    req.set_delta(1);
    req.set_consistency(c);
    req.mutable_condition()->set_op(op);
    v1::IncResponse resp;
    return d.stub()->Inc(&ctx, req, &resp).error_code();
  }
  static R Set(InProcessDaemon& d, const std::string& key, int64_t value,
               Comparator op = v1::COMPARATOR_UNSPECIFIED, int64_t operand = 0,
               const std::string& ns = "") {
    return ToR(d.client(ns)->Set(key, value, Typed(op, operand)));
  }
  static int64_t Get(InProcessDaemon& d, const std::string& key, Consistency c,
                     const std::string& ns = "") {
    const absl::StatusOr<int64_t> r = d.client(ns)->Get(key, Typed(c));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.value_or(0);
  }
  static R Del(InProcessDaemon& d, const std::string& key, const std::string& ns = "") {
    return ToR(d.client(ns)->Del(key));
  }
  static grpc::StatusCode Clear(InProcessDaemon& d, const std::string& ns = "") {
    return static_cast<grpc::StatusCode>(d.client(ns)->Clear().code());
  }
  // The other daemon's STRICT read converges to `want` (flush + no cache on strict).
  bool Eventually(InProcessDaemon& d, const std::string& key, int64_t want,
                  const std::string& ns = "") {
    return PollUntil([&] { return Get(d, key, kStrict, ns) == want; }, 10s);
  }

  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<InProcessDaemon> a_, b_;
};

TEST_P(CounterServiceTest, AKeyOfAnotherTypeIsAFailedPreconditionNotInternal) {
  // Someone else wrote our key as a string: a broken key, not a bug of ours (STRICT calls in
  // both instances: LAX answers from memory, issue #11 finding 4).
  ASSERT_EQ(redis_->Command({"SET", core::PlainCounterKey("distkit", "wt"), "x"}), "OK");
  EXPECT_EQ(Inc(*a_, "wt", 1, kStrict).code, grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(a_->client()->Get("wt").status().code(), absl::StatusCode::kFailedPrecondition);
}

INSTANTIATE_TEST_SUITE_P(Both, CounterServiceTest, ::testing::Values(kStrict, kLax),
                         [](const auto& info) {
                           return info.param == kStrict ? std::string("Strict")
                                                        : std::string("Lax");
                         });

// 2-9: arithmetic.
TEST_P(CounterServiceTest, Arithmetic) {
  EXPECT_EQ(Get(*a_, "unknown", c()), 0);
  EXPECT_EQ(Inc(*a_, "k3", 5, c()).value, 5);
  EXPECT_EQ(Get(*a_, "k3", c()), 5);
  Inc(*a_, "k4", 3, c());
  Inc(*a_, "k4", 7, c());
  EXPECT_EQ(Inc(*a_, "k4", 10, c()).value, 20);
  Inc(*a_, "k5", 10, c());
  EXPECT_EQ(Inc(*a_, "k5", 0, c()).value, 10);
  EXPECT_EQ(Get(*a_, "k5", c()), 10);
  Inc(*a_, "k6", 100, c());
  EXPECT_EQ(Inc(*a_, "k6", -30, c()).value, 70);
  Inc(*a_, "k7", 10, c());
  EXPECT_EQ(Inc(*a_, "k7", -25, c()).value, -15);
  EXPECT_EQ(Get(*a_, "k7", c()), -15);
  Inc(*a_, "k8", 55, c());
  EXPECT_EQ(Inc(*a_, "k8", 0, c()).value, 55);
  for (int64_t d : {10, -3, 5, -2}) Inc(*a_, "k9", d, c());
  EXPECT_EQ(Get(*a_, "k9", c()), 10);
  EXPECT_EQ(Inc(*a_, "big", 1'000'000'000'000, c()).value, 1'000'000'000'000);
}

// 10-11: keys and namespaces are independent.
TEST_P(CounterServiceTest, Isolation) {
  Inc(*a_, "alpha", 42, c());
  Inc(*a_, "beta", 7, c());
  EXPECT_EQ(Get(*a_, "alpha", c()), 42);
  EXPECT_EQ(Get(*a_, "beta", c()), 7);
  Inc(*a_, "same", 100, c(), v1::COMPARATOR_UNSPECIFIED, 0, "nsA");
  Inc(*a_, "same", 1, c(), v1::COMPARATOR_UNSPECIFIED, 0, "nsB");
  EXPECT_EQ(Get(*a_, "same", c(), "nsA"), 100);
  EXPECT_EQ(Get(*a_, "same", c(), "nsB"), 1);
  EXPECT_TRUE(Eventually(*b_, "same", 100, "nsA"));
  EXPECT_TRUE(Eventually(*b_, "same", 1, "nsB"));
}

// 13: Set is immediate and absolute; `previous` includes this daemon's pending delta.
TEST_P(CounterServiceTest, SetOverwrites) {
  EXPECT_EQ(Set(*a_, "s", 99).value, 99);
  Inc(*a_, "s", 10, c());
  auto r = Set(*a_, "s", 50);
  EXPECT_EQ(r.previous, 109);
  EXPECT_EQ(Get(*a_, "s", c()), 50);
  Inc(*a_, "s", 20, c());
  Set(*a_, "s", 0);
  EXPECT_EQ(Get(*a_, "s", c()), 0);
  Set(*a_, "s", -5);
  EXPECT_EQ(Get(*a_, "s", c()), -5);
  Set(*a_, "fresh", 77);
  EXPECT_EQ(Get(*a_, "fresh", c()), 77);
  EXPECT_TRUE(Eventually(*b_, "s", -5));
}

// 14, 24, 25, 30: Del returns the previous value (pending delta included) and sticks.
TEST_P(CounterServiceTest, Del) {
  Inc(*a_, "d", 42, c());
  auto r = Del(*a_, "d");
  EXPECT_EQ(r.code, grpc::StatusCode::OK);
  EXPECT_EQ(r.previous, 42);
  EXPECT_EQ(r.value, 0);
  EXPECT_TRUE(r.applied);
  EXPECT_EQ(Del(*a_, "never").previous, 0);
  Inc(*a_, "d2", 10, c());
  Del(*a_, "d2");
  EXPECT_EQ(Get(*a_, "d2", c()), 0);
  EXPECT_EQ(Del(*a_, "d2").previous, 0);
  Inc(*a_, "a", 5, c());
  Inc(*a_, "b", 20, c());
  Del(*a_, "a");
  EXPECT_EQ(Get(*a_, "b", c()), 20);
  Inc(*a_, "d3", 99, c());
  Del(*a_, "d3");
  EXPECT_EQ(Inc(*a_, "d3", 1, c()).value, 1);
  Set(*a_, "d4", 77);
  EXPECT_EQ(Del(*a_, "d4").previous, 77);
  // 26: the deleted delta is not flushed afterwards.
  EXPECT_TRUE(PollUntil([&] { return a_->counters()->stats().dirty_keys.load() == 0; }, 10s));
  EXPECT_EQ(Get(*b_, "d", kStrict), 0);
}

// 15, 27: Clear empties one namespace only.
TEST_P(CounterServiceTest, Clear) {
  for (auto [k, v] : {std::pair{"x", 1}, {"y", 2}, {"z", 3}}) Inc(*a_, k, v, c(), {}, 0, "cl");
  Inc(*a_, "keep", 99, c(), {}, 0, "other");
  EXPECT_EQ(Clear(*a_, "cl"), grpc::StatusCode::OK);
  for (auto k : {"x", "y", "z"}) EXPECT_EQ(Get(*a_, k, c(), "cl"), 0) << k;
  EXPECT_EQ(Clear(*a_, "empty"), grpc::StatusCode::OK);
  EXPECT_EQ(Get(*a_, "keep", c(), "other"), 99);
  EXPECT_TRUE(Eventually(*b_, "keep", 99, "other"));
  EXPECT_EQ(Inc(*a_, "x", 1, c(), {}, 0, "cl").value, 1);
  EXPECT_TRUE(PollUntil([&] { return a_->counters()->stats().dirty_keys.load() == 0; }, 10s));
  EXPECT_EQ(Get(*b_, "y", kStrict, "cl"), 0);
  EXPECT_EQ(Get(*b_, "x", kStrict, "cl"), 1);
}

// 16-17 with all six comparators.
TEST_P(CounterServiceTest, Conditions) {
  struct Case {
    Comparator op;
    int64_t operand;
    bool applies;
  };
  const Case cases[] = {{v1::COMPARATOR_EQ, 10, true},
                        {v1::COMPARATOR_EQ, 9, false},
                        {v1::COMPARATOR_NE, 9, true},
                        {v1::COMPARATOR_NE, 10, false},
                        {v1::COMPARATOR_LT, 11, true},
                        {v1::COMPARATOR_LT, 10, false},
                        {v1::COMPARATOR_LE, 10, true},
                        {v1::COMPARATOR_LE, 9, false},
                        {v1::COMPARATOR_GT, 9, true},
                        {v1::COMPARATOR_GT, 10, false},
                        {v1::COMPARATOR_GE, 10, true},
                        {v1::COMPARATOR_GE, 11, false},
                        {v1::COMPARATOR_UNSPECIFIED, 12345, true}};
  for (const auto& t : cases) {
    SCOPED_TRACE(v1::Comparator_Name(t.op) + " " + std::to_string(t.operand));
    Set(*a_, "c", 10);
    auto r = Inc(*a_, "c", 2, c(), t.op, t.operand);
    EXPECT_EQ(r.applied, t.applies);
    EXPECT_EQ(r.previous, 10);
    EXPECT_EQ(r.value, t.applies ? 12 : 10);
    EXPECT_EQ(Get(*a_, "c", c()), r.value);
    Set(*a_, "c", 10);
    auto s = Set(*a_, "c", 99, t.op, t.operand);
    EXPECT_EQ(s.applied, t.applies);
    EXPECT_EQ(s.previous, 10);
    EXPECT_EQ(s.value, t.applies ? 99 : 10);
  }
}

// docs/api.md#numbers: int64 exact over the whole range; overflow refused with nothing changed.
TEST_P(CounterServiceTest, Int64Extremes) {
  const int64_t kMax = INT64_MAX, kMin = INT64_MIN;
  Set(*a_, "max", kMax);
  EXPECT_EQ(Get(*a_, "max", c()), kMax);
  EXPECT_EQ(Inc(*a_, "max", 1, c()).code, grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(Get(*a_, "max", kStrict), kMax);
  Set(*a_, "min", kMin);
  EXPECT_EQ(Inc(*a_, "min", -1, c()).code, grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(Inc(*a_, "min", kMax, c()).value, -1);
  Set(*a_, "p53", 9007199254740992);
  EXPECT_EQ(Inc(*a_, "p53", 1, c()).value, 9007199254740993);
  EXPECT_TRUE(Eventually(*b_, "p53", 9007199254740993));
  EXPECT_EQ(Inc(*a_, "neg", kMin, c()).value, kMin);
}

TEST_P(CounterServiceTest, InvalidInput) {
  EXPECT_EQ(Inc(*a_, "", 1, c()).code, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Inc(*a_, "a:b", 1, c()).code, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Inc(*a_, std::string(256, 'k'), 1, c()).code, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Inc(*a_, "k", 1, c(), {}, 0, "bad:ns").code, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(RawInc(*a_, c(), static_cast<Comparator>(77)), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(RawInc(*a_, static_cast<Consistency>(5), v1::COMPARATOR_UNSPECIFIED),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Inc(*a_, "{weird} 🙂", 3, c(), {}, 0, "{ns}").value, 3);
  EXPECT_EQ(Get(*a_, "{weird} 🙂", c(), "{ns}"), 3);
}

// 18-21, 31-39: batches.
TEST_P(CounterServiceTest, Batch) {
  auto run = [&](const std::vector<CounterOp>& ops) {
    auto r = a_->client()->Batch(ops);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.value_or(BatchResults<CounterValue>());
  };
  auto inc = [&](const std::string& k, int64_t d, Comparator op = v1::COMPARATOR_UNSPECIFIED,
                 int64_t operand = 0) {
    return CounterOp::Inc(k, d, Typed(c()), Typed(op, operand));
  };
  auto set = [&](const std::string& k, int64_t v, Comparator op = v1::COMPARATOR_UNSPECIFIED,
                 int64_t operand = 0) { return CounterOp::Set(k, v, Typed(op, operand)); };
  auto get = [&](const std::string& k) { return CounterOp::Get(k, Typed(c())); };
  EXPECT_EQ(run({}).size(), 0u);
  auto r = run({inc("k", 1), inc("k", 2), get("k")});
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0]->value, 1);
  EXPECT_EQ(r[1]->value, 3);
  EXPECT_EQ(r[2]->value, 3);
  // 20
  Set(*a_, "b", 10);
  r = run({inc("a", 1, v1::COMPARATOR_EQ, 0), inc("a", 2, v1::COMPARATOR_EQ, 1),
           inc("b", 5, v1::COMPARATOR_GT, 20), inc("b", 3)});
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0]->value, 1);
  EXPECT_EQ(r[1]->value, 3);
  EXPECT_EQ(r[1]->previous, 1);
  EXPECT_FALSE(r[2]->applied);
  EXPECT_EQ(r[2]->value, 10);
  EXPECT_EQ(r[3]->value, 13);
  // 21: duplicates keep their own results; one bad item fails alone.
  Set(*a_, "sa", 10);
  Set(*a_, "sb", 20);
  r = run({set("sc", 30), set("sa", 11, v1::COMPARATOR_GT, 5), inc("bad:key", 1),
           set("sb", 99, v1::COMPARATOR_LT, 10), set("sc", 31), get("sc")});
  ASSERT_EQ(r.size(), 6u);
  EXPECT_EQ(r[0]->value, 30);
  EXPECT_EQ(r[0]->previous, 0);
  EXPECT_EQ(r[1]->value, 11);
  EXPECT_EQ(r[2].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(r[2].status().message().empty());
  EXPECT_FALSE(r[3]->applied);
  EXPECT_EQ(r[3]->value, 20);
  EXPECT_EQ(r[4]->previous, 30);
  EXPECT_EQ(r[5]->value, 31);
  EXPECT_TRUE(r[0].ok());

  const std::vector<CounterOp> big(10001, get("x"));
  EXPECT_EQ(a_->client()->Batch(big).status().code(), absl::StatusCode::kInvalidArgument);
}

// A STRICT item after a LAX inc of the same key observes it, even when the LAX inc is the key's
// first touch (answered only after a Redis read): the batch keeps its order.
TEST_F(CounterServiceTest, BatchStrictItemAfterAFirstTouchLaxIncObservesIt) {
  std::vector<CounterOp> ops;
  constexpr int kKeys = 20;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = "first" + std::to_string(i);
    ops.push_back(CounterOp::Inc(key, 5, distkit::Consistency::kLax));
    ops.push_back(CounterOp::Set(key, 100));
    ops.push_back(CounterOp::Get(key, distkit::Consistency::kStrict));
  }
  const auto r = a_->client()->Batch(ops);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u * kKeys);
  for (int i = 0; i < kKeys; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ((*r)[3 * i]->value, 5);
    EXPECT_EQ((*r)[3 * i + 1]->previous, 5);
    EXPECT_EQ((*r)[3 * i + 2]->value, 100);
  }
  EXPECT_TRUE(PollUntil(
      [&] {
        for (int i = 0; i < kKeys; ++i) {
          if (Get(*b_, "first" + std::to_string(i), kStrict) != 100) return false;
        }
        return true;
      },
      10s));
}

// 23, 28, 29, 32, 34: another daemon sees lax writes after the flush.
TEST_F(CounterServiceTest, LaxWritesReachOtherDaemons) {
  Inc(*a_, "w", 42, kLax);
  EXPECT_TRUE(Eventually(*b_, "w", 42));
  Set(*a_, "w2", 100);
  Inc(*a_, "w2", -30, kLax);
  EXPECT_TRUE(Eventually(*b_, "w2", 70));
  // Both daemons increment the same key concurrently: nothing lost, nothing doubled.
  std::vector<std::thread> threads;
  for (auto* d : {a_.get(), b_.get()}) {
    threads.emplace_back([d] {
      for (int i = 0; i < 500; ++i) Inc(*d, "shared", 1, i % 2 ? kLax : kStrict);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(Eventually(*a_, "shared", 1000));
  // b's lax view catches up after its own cache refresh.
  EXPECT_TRUE(PollUntil([&] { return Get(*b_, "shared", kLax) == 1000; }, 10s));
}

TEST_F(CounterServiceTest, LaxAndStrictShareOneValue) {
  Inc(*a_, "m", 5, kLax);
  EXPECT_EQ(Get(*a_, "m", kStrict), 5);  // the strict read folds the pending lax delta
  Inc(*a_, "m", 2, kStrict);
  EXPECT_EQ(Get(*a_, "m", kLax), 7);
  Set(*a_, "m2", 0);
  Inc(*a_, "m2", 5, kLax);
  EXPECT_EQ(Set(*a_, "m2", 100).previous, 5);  // docs/api.md#strict-and-lax example
}

}  // namespace
}  // namespace distkit
