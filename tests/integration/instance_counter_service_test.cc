// InstanceCounterService end to end inside one process: real gRPC servers, core and executors
// on a real redis-server; each in-process daemon has its own instance id. Ports a subset of
// distkit-behaviour.md §12 scenarios 40-66 ("dropping a counter" = stopping a daemon without
// deregistering) and the worked example of product.md §4.2 with a short threshold.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "daemon/config/config.h"
#include "daemon/core/counters.h"
#include "daemon/core/instance_counters.h"
#include "daemon/redis/executor.h"
#include "daemon/redis/redis_url.h"
#include "daemon/transport/server.h"
#include "distkit/v1/instance_counter.grpc.pb.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::PollUntil;
using testing::RedisServer;

class Daemon {
 public:
  Daemon(const RedisServer& redis, const std::string& socket, int64_t threshold_ms) {
    config_.listen = {"unix:" + socket};
    config_.redis = redis.url();
    redis::ExecutorOptions eo;
    eo.endpoint = *redis::ParseRedisUrl(redis.url());
    eo.command_timeout = 2000ms;
    executor_ = std::make_unique<redis::Executor>(eo);
    executor_->Start();
    EXPECT_TRUE(PollUntil([&] { return executor_->Healthy(); }, 10s));
    core::CountersOptions co;
    co.dedup_id = config::NewUuidV4();
    counters_ = std::make_unique<core::Counters>(executor_.get(), co);
    counters_->Start();
    core::InstanceCountersOptions io;
    io.instance_id = config::NewUuidV4();
    io.dedup_id = co.dedup_id;
    io.dead_instance_threshold_ms = threshold_ms;
    icounters_ = std::make_unique<core::InstanceCounters>(executor_.get(), io);
    EXPECT_TRUE(icounters_->Start(2s).ok());
    auto server = transport::Server::Start(config_, counters_.get(), executor_.get(), nullptr,
                                           icounters_.get());
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    stub_ = v1::InstanceCounterService::NewStub(
        grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
  }
  ~Daemon() {
    server_->Shutdown(std::chrono::system_clock::now() + 1s);
    counters_->Shutdown(2s);
    if (killed_) {
      icounters_->StopWithoutDeregistering();
    } else {
      icounters_->Shutdown(2s);
    }
    executor_->Stop();
  }
  void MarkKilled() { killed_ = true; }
  core::InstanceCounters& icounters() { return *icounters_; }
  v1::InstanceCounterService::Stub* stub() { return stub_.get(); }

 private:
  bool killed_ = false;
  config::Config config_;
  std::unique_ptr<redis::Executor> executor_;
  std::unique_ptr<core::Counters> counters_;
  std::unique_ptr<core::InstanceCounters> icounters_;
  std::unique_ptr<transport::Server> server_;
  std::unique_ptr<v1::InstanceCounterService::Stub> stub_;
};

struct R {
  grpc::StatusCode code = grpc::StatusCode::OK;
  int64_t cum = 0, inst = 0, pcum = 0, pinst = 0;
  bool applied = false;
};
template <typename Resp>
R Out(const grpc::Status& s, const Resp& r) {
  return {s.error_code(), r.cumulative(), r.instance(), r.previous_cumulative(),
          r.previous_instance(), r.applied()};
}

R Inc(Daemon& d, const std::string& key, int64_t delta, const std::string& ns = "",
      v1::Comparator op = v1::COMPARATOR_UNSPECIFIED, int64_t operand = 0) {
  grpc::ClientContext ctx;
  v1::InstanceIncRequest req;
  req.set_namespace_(ns);
  req.set_key(key);
  req.set_delta(delta);
  req.mutable_condition()->set_op(op);
  req.mutable_condition()->set_operand(operand);
  v1::InstanceIncResponse resp;
  return Out(d.stub()->Inc(&ctx, req, &resp), resp);
}
R Get(Daemon& d, const std::string& key, const std::string& ns = "") {
  grpc::ClientContext ctx;
  v1::InstanceGetRequest req;
  req.set_namespace_(ns);
  req.set_key(key);
  v1::InstanceGetResponse resp;
  return Out(d.stub()->Get(&ctx, req, &resp), resp);
}
R Set(Daemon& d, const std::string& key, int64_t v) {
  grpc::ClientContext ctx;
  v1::InstanceSetRequest req;
  req.set_key(key);
  req.set_value(v);
  v1::InstanceSetResponse resp;
  return Out(d.stub()->Set(&ctx, req, &resp), resp);
}
R Soi(Daemon& d, const std::string& key, int64_t v,
      v1::Comparator op = v1::COMPARATOR_UNSPECIFIED, int64_t operand = 0) {
  grpc::ClientContext ctx;
  v1::SetOnInstanceRequest req;
  req.set_key(key);
  req.set_value(v);
  req.mutable_condition()->set_op(op);
  req.mutable_condition()->set_operand(operand);
  v1::SetOnInstanceResponse resp;
  return Out(d.stub()->SetOnInstance(&ctx, req, &resp), resp);
}
R Del(Daemon& d, const std::string& key) {
  grpc::ClientContext ctx;
  v1::InstanceDelRequest req;
  req.set_key(key);
  v1::InstanceDelResponse resp;
  return Out(d.stub()->Del(&ctx, req, &resp), resp);
}
R DelOi(Daemon& d, const std::string& key) {
  grpc::ClientContext ctx;
  v1::DelOnInstanceRequest req;
  req.set_key(key);
  v1::DelOnInstanceResponse resp;
  return Out(d.stub()->DelOnInstance(&ctx, req, &resp), resp);
}
grpc::StatusCode Clear(Daemon& d, const std::string& ns = "") {
  grpc::ClientContext ctx;
  v1::InstanceClearRequest req;
  req.set_namespace_(ns);
  v1::InstanceClearResponse resp;
  return d.stub()->Clear(&ctx, req, &resp).error_code();
}
grpc::StatusCode ClearOi(Daemon& d, const std::string& ns = "") {
  grpc::ClientContext ctx;
  v1::ClearOnInstanceRequest req;
  req.set_namespace_(ns);
  v1::ClearOnInstanceResponse resp;
  return d.stub()->ClearOnInstance(&ctx, req, &resp).error_code();
}

class InstanceCounterServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_TRUE(redis_);
    for (int i = 0; i < 3; ++i) d_.push_back(Make(i, 30000));
  }
  std::unique_ptr<Daemon> Make(int i, int64_t threshold_ms) {
    return std::make_unique<Daemon>(*redis_, redis_->dir() + "/d" + std::to_string(i) + "_" +
                                                 std::to_string(next_++) + ".sock",
                                    threshold_ms);
  }
  void TearDown() override { d_.clear(); }
  Daemon& c(int i) { return *d_[i]; }

  std::unique_ptr<RedisServer> redis_;
  std::vector<std::unique_ptr<Daemon>> d_;
  int next_ = 0;
};

TEST_F(InstanceCounterServiceTest, Scenario40BasicWrites) {
  EXPECT_EQ(Inc(c(0), "k", 5).cum, 5);
  EXPECT_EQ(Inc(c(0), "k", 3).cum, 8);
  EXPECT_EQ(Inc(c(0), "j", 10).cum, 10);
  EXPECT_EQ(Inc(c(0), "j", 0).cum, 10);
  EXPECT_EQ(Set(c(0), "k", 99).cum, 99);
  R r = Soi(c(0), "new", 42);
  EXPECT_EQ(r.cum, 42);
  EXPECT_EQ(r.inst, 42);
}

TEST_F(InstanceCounterServiceTest, Scenario41GetAndDel) {
  R r = Get(c(0), "unknown");
  EXPECT_EQ(r.code, grpc::StatusCode::OK);
  EXPECT_EQ(r.cum, 0);
  EXPECT_EQ(r.inst, 0);
  Inc(c(0), "a", 7);
  r = Get(c(0), "a");
  EXPECT_EQ(r.cum, 7);
  EXPECT_EQ(r.inst, 7);
  Inc(c(0), "b", 42);
  EXPECT_EQ(Del(c(0), "b").pcum, 42);
  Inc(c(0), "c", 10);
  Del(c(0), "c");
  r = Get(c(0), "c");
  EXPECT_EQ(r.cum, 0);
  EXPECT_EQ(r.inst, 0);
}

TEST_F(InstanceCounterServiceTest, Scenario42DelOnInstance) {
  Inc(c(0), "k", 15);
  R r = DelOi(c(0), "k");
  EXPECT_EQ(r.cum, 0);
  EXPECT_EQ(r.pinst, 15);
  r = DelOi(c(0), "unknown");
  EXPECT_EQ(r.cum, 0);
  EXPECT_EQ(r.inst, 0);
}

TEST_F(InstanceCounterServiceTest, Scenario43ClearAndNamespaces) {
  Inc(c(0), "a", 5);
  Inc(c(1), "b", 10);
  EXPECT_EQ(Clear(c(0)), grpc::StatusCode::OK);
  EXPECT_EQ(Get(c(1), "a").cum, 0);
  EXPECT_EQ(Get(c(1), "b").cum, 0);
  Inc(c(0), "x", 20);
  EXPECT_EQ(ClearOi(c(0)), grpc::StatusCode::OK);
  EXPECT_EQ(Get(c(0), "x").cum, 0);
  EXPECT_EQ(Inc(c(0), "p", 100, "A").cum, 100);
  EXPECT_EQ(Get(c(1), "p", "B").cum, 0);
  EXPECT_EQ(Get(c(1), "p", "A").cum, 100);
}

TEST_F(InstanceCounterServiceTest, Scenario44And46SlicesSumAndLeaveInTurn) {
  Inc(c(0), "k", 10);
  Inc(c(1), "k", 20);
  EXPECT_EQ(Inc(c(2), "k", 30).cum, 60);
  EXPECT_EQ(DelOi(c(0), "k").cum, 50);
  EXPECT_EQ(DelOi(c(1), "k").cum, 30);
  EXPECT_EQ(DelOi(c(2), "k").cum, 0);
  Inc(c(0), "k", 10);
  Inc(c(1), "k", 20);
  Inc(c(2), "k", 30);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(ClearOi(c(i)), grpc::StatusCode::OK);
    EXPECT_EQ(Get(c(2), "k").cum, (i == 0 ? 50 : i == 1 ? 30 : 0));
  }
}

TEST_F(InstanceCounterServiceTest, Scenario47And48StaleSlicesRestartFromTheDelta) {
  for (int i = 0; i < 3; ++i) Soi(c(i), "k", 100);
  EXPECT_EQ(Get(c(0), "k").cum, 300);
  EXPECT_EQ(Set(c(0), "k", 50).cum, 50);
  EXPECT_EQ(Inc(c(1), "k", 5).cum, 55);
  EXPECT_EQ(Inc(c(2), "k", 5).cum, 60);
  for (int i = 0; i < 3; ++i) Inc(c(i), "m", 100);
  Del(c(0), "m");
  Inc(c(1), "m", 10);
  EXPECT_EQ(Inc(c(2), "m", 10).cum, 20);
}

TEST_F(InstanceCounterServiceTest, Scenario50To54) {
  Set(c(0), "a", 100);
  R r = Soi(c(1), "a", 50);
  EXPECT_EQ(r.cum, 150);
  EXPECT_EQ(r.inst, 50);
  Inc(c(0), "b", 10);
  Inc(c(1), "b", 5);
  EXPECT_EQ(Set(c(0), "b", 20).cum, 20);
  EXPECT_EQ(Inc(c(1), "b", 3).cum, 23);
  EXPECT_EQ(Inc(c(2), "b", 7).cum, 30);
  Soi(c(1), "d", 200);
  Soi(c(2), "d", 300);
  EXPECT_EQ(Set(c(0), "d", 100).cum, 100);
  Inc(c(1), "d", 10);
  EXPECT_EQ(Inc(c(2), "d", 10).cum, 120);
  EXPECT_EQ(Get(c(1), "d").inst, 10);
  EXPECT_EQ(Get(c(2), "d").inst, 10);
  Inc(c(0), "e", 50);
  Inc(c(1), "e", 30);
  Del(c(2), "e");
  Inc(c(0), "e", 5);
  Inc(c(1), "e", 7);
  EXPECT_EQ(Inc(c(2), "e", 3).cum, 15);
}

TEST_F(InstanceCounterServiceTest, Scenario61To66) {
  for (int i = 0; i < 3; ++i) {
    Inc(c(i), "k1", 10);
    Inc(c(i), "k2", 10);
  }
  EXPECT_EQ(Set(c(0), "k1", 5).cum, 5);
  EXPECT_EQ(Inc(c(1), "k2", 1).cum, 31);
  EXPECT_EQ(Inc(c(2), "k2", 1).cum, 32);
  EXPECT_EQ(Inc(c(1), "k1", 7).cum, 12);
  // 63
  Inc(c(1), "x", 40);
  Inc(c(2), "x", 60);
  Set(c(1), "x", 10);
  EXPECT_EQ(DelOi(c(2), "x").cum, 10);
  // 64
  Soi(c(2), "y", 50);
  Set(c(1), "y", 100);
  R r = Soi(c(2), "y", 30);
  EXPECT_EQ(r.cum, 130);
  EXPECT_EQ(r.inst, 30);
  Soi(c(2), "y", 100);
  Set(c(1), "y", 5);
  EXPECT_EQ(Inc(c(2), "y", 3).cum, 8);
  // 65
  Inc(c(1), "z", 10);
  EXPECT_EQ(Inc(c(2), "z", 20).cum, 30);
  EXPECT_EQ(Soi(c(1), "z", 5).cum, 25);
  EXPECT_EQ(Soi(c(2), "z", 10).cum, 15);
  Soi(c(1), "z", 30);
  Soi(c(2), "z", 50);
  r = DelOi(c(1), "z");
  EXPECT_EQ(r.cum, 50);
  EXPECT_EQ(r.pcum, 80);
  EXPECT_EQ(r.pinst, 30);
}

TEST_F(InstanceCounterServiceTest, ConditionsOverflowAndValidation) {
  EXPECT_EQ(Inc(c(0), "k", 5).cum, 5);
  R r = Inc(c(0), "k", 1, "", v1::COMPARATOR_GT, 10);
  EXPECT_EQ(r.code, grpc::StatusCode::OK);
  EXPECT_FALSE(r.applied);
  EXPECT_EQ(r.cum, 5);
  r = Soi(c(0), "k", 9, v1::COMPARATOR_EQ, 5);
  EXPECT_TRUE(r.applied);
  EXPECT_EQ(r.inst, 9);
  EXPECT_EQ(Inc(c(0), "k", INT64_MAX).code, grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(Get(c(0), "k").cum, 9);
  EXPECT_EQ(Inc(c(0), "", 1).code, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Inc(c(0), "a:b", 1).code, grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(InstanceCounterServiceTest, BatchRunsInOrder) {
  grpc::ClientContext ctx;
  v1::InstanceBatchRequest req;
  auto* i1 = req.add_ops()->mutable_inc();
  i1->set_key("b");
  i1->set_delta(4);
  req.add_ops()->mutable_get()->set_key("b");
  req.add_ops()->mutable_set_on_instance()->set_key("b");  // value 0
  req.add_ops()->mutable_inc()->set_key("bad:key");
  req.add_ops();
  v1::InstanceBatchResponse resp;
  ASSERT_TRUE(c(0).stub()->Batch(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 5);
  EXPECT_EQ(resp.results(0).inc().cumulative(), 4);
  EXPECT_EQ(resp.results(1).get().instance(), 4);
  EXPECT_EQ(resp.results(2).set_on_instance().cumulative(), 0);
  EXPECT_EQ(resp.results(3).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(resp.results(4).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));

  grpc::ClientContext ctx2;
  v1::InstanceBatchRequest big;
  for (int i = 0; i < 10001; ++i) big.add_ops()->mutable_get()->set_key("b");
  EXPECT_EQ(c(0).stub()->Batch(&ctx2, big, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

// product.md §4.2 worked example with a 300 ms threshold; scenarios 56/57: a daemon stops
// without deregistering, the survivor's reads converge to its own slice, a new writer adds.
TEST_F(InstanceCounterServiceTest, DeadInstanceSlicesLeaveTheCumulative) {
  d_.clear();
  auto a = Make(0, 300);
  auto b = Make(1, 300);
  Inc(*a, "k", 40);
  EXPECT_EQ(Inc(*b, "k", 60).cum, 100);
  a->MarkKilled();
  a.reset();
  EXPECT_TRUE(PollUntil([&] { return Get(*b, "k").cum == 60; }, 10s));
  R r = Get(*b, "k");
  EXPECT_EQ(r.inst, 60);
  auto c3 = Make(2, 300);
  EXPECT_EQ(Inc(*c3, "k", 20).cum, 80);
}

// A daemon whose heartbeat finds it was declared dead re-registers (no recovery yet): its old
// incarnation's slices leave the cumulative and its new writes count from 0.
TEST_F(InstanceCounterServiceTest, DeclaredDeadDaemonReRegistersAndItsOldSlicesAreReaped) {
  d_.clear();
  auto a = Make(0, 300);
  auto b = Make(1, 300);
  Inc(*a, "k", 40);
  Inc(*b, "k", 60);
  const int64_t inc = a->icounters().incarnation();
  // As if `a` had been paused for longer than the threshold.
  redis_->Command({"ZADD", "dk:{live}:instances", "0", a->icounters().instance_id()});
  EXPECT_TRUE(PollUntil([&] { return a->icounters().incarnation() > inc; }, 5s));
  EXPECT_TRUE(PollUntil([&] { return Get(*b, "k").cum == 60; }, 10s));
  R r = Inc(*a, "k", 5);
  EXPECT_EQ(r.cum, 65);
  EXPECT_EQ(r.inst, 5);
  // The old incarnation's key sets are gone once reaped.
  EXPECT_TRUE(PollUntil(
      [&] {
        return redis_->Command({"EXISTS", "dk:{I:" + a->icounters().instance_id() + ":" +
                                              std::to_string(inc) + "}:namespaces"}) == "0";
      },
      10s));
}

// Scenario 59: live daemons are not reaped (heartbeats every threshold/3).
TEST_F(InstanceCounterServiceTest, LiveInstancesAreNotReaped) {
  d_.clear();
  auto a = Make(0, 500);
  auto b = Make(1, 500);
  Inc(*a, "k", 40);
  Inc(*b, "k", 60);
  const auto until = std::chrono::steady_clock::now() + 2500ms;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_EQ(Get(*b, "k").cum, 100);
    std::this_thread::sleep_for(100ms);
  }
}

// A clean shutdown removes the daemon's slices at once.
TEST_F(InstanceCounterServiceTest, ShutdownRemovesSlicesAtOnce) {
  Inc(c(0), "k", 40);
  Inc(c(0), "j", -3);
  Inc(c(1), "k", 60);
  d_[0].reset();
  EXPECT_EQ(Get(c(1), "k").cum, 60);
  EXPECT_EQ(Get(c(1), "j").cum, 0);
}

}  // namespace
}  // namespace distkit
