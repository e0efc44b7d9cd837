// InstanceCounterService end to end inside one process: real gRPC servers, core and executors
// on a real redis-server; each in-process daemon has its own instance id. Ports a subset of
// the original scenarios 40-66 (docs/instance_counters.md#origin; "dropping a counter" = stopping
// a daemon without deregistering) and the example of docs/api.md#dead-instances, shorter.

#include <gtest/gtest.h>

#include <thread>

#include "tests/support/icounter_daemon.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::Clear;
using testing::ClearOi;
using testing::Del;
using testing::DelOi;
using testing::Get;
using testing::Inc;
using testing::PollUntil;
using testing::R;
using testing::RedisServer;
using testing::Set;
using testing::Soi;
using Daemon = testing::ICounterDaemon;

class InstanceCounterServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_TRUE(redis_);
    for (int i = 0; i < 3; ++i) d_.push_back(Make(i, 30000));
  }
  std::unique_ptr<Daemon> Make(int i, int64_t threshold_ms) {
    return std::make_unique<Daemon>(
        *redis_, redis_->dir() + "/d" + std::to_string(i) + "_" + std::to_string(next_++) + ".sock",
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
  EXPECT_EQ(c(0).stub()->Batch(&ctx2, big, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// The docs/api.md#dead-instances example with a 300 ms threshold; scenarios 56/57: a daemon stops
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

// A daemon whose heartbeat finds it was declared dead re-registers with a new incarnation and
// restores its slice (recovery); the old incarnation's key sets are reaped.
TEST_F(InstanceCounterServiceTest, DeclaredDeadDaemonReRegistersAndRestoresItsSlices) {
  d_.clear();
  auto a = Make(0, 300);
  auto b = Make(1, 300);
  Inc(*a, "k", 40);
  Inc(*a, "neg", -7);
  Inc(*b, "k", 60);
  const int64_t inc = a->icounters().incarnation();
  // As if `a` had been paused for longer than the threshold.
  redis_->Command({"ZADD", "dk:{live}:instances", "0", a->icounters().instance_id()});
  EXPECT_TRUE(PollUntil([&] { return a->icounters().incarnation() > inc; }, 5s));
  EXPECT_TRUE(PollUntil([&] { return a->icounters().stats().restored_slices.load() == 2; }, 10s));
  // The old incarnation's key sets are gone once reaped, and nothing was lost.
  EXPECT_TRUE(PollUntil(
      [&] {
        return redis_->Command({"EXISTS", "dk:{I:" + a->icounters().instance_id() + ":" +
                                              std::to_string(inc) + "}:namespaces"}) == "0";
      },
      10s));
  EXPECT_EQ(Get(*b, "k").cum, 100);
  EXPECT_EQ(Get(*b, "neg").cum, -7);
  R r = Inc(*a, "k", 5);
  EXPECT_EQ(r.cum, 105);
  EXPECT_EQ(r.inst, 45);
  EXPECT_EQ(Get(*a, "neg").inst, -7);
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
