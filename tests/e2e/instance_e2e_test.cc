// Instance-aware counters end to end: three real distkitd processes (distinct --instance_id, a
// short --dead_instance_threshold_ms) on one real redis-server or Redis Cluster. SIGKILL,
// SIGSTOP/SIGCONT and SIGTERM of one daemon as seen from the others (docs/api.md#dead-instances,
// #shutdown), and the cleanup of a killed daemon with 20 000 keys. Cross-daemon effects are
// polled with generous deadlines, then asserted exactly.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "distkit/v1/instance_counter.grpc.pb.h"
#include "tests/support/daemon.h"
#include "tests/support/icounter_client.h"
#include "tests/support/process.h"
#include "tests/support/redis_backend.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::Batch;
using testing::BatchOut;
using testing::CI;
using testing::Daemon;
using testing::Get;
using testing::GetReq;
using testing::Inc;
using testing::IncReq;
using testing::LaxGet;
using testing::Op;
using testing::PollUntil;
using testing::RedisBackend;
using testing::Res;
using testing::Set;

constexpr char kInstances[] = "dk:{live}:instances";
constexpr char kIncarnations[] = "dk:{live}:incarnations";
constexpr char kThresholdMs[] = "600";  // heartbeat every 200 ms, reaper every 1 s
constexpr auto kConverge = 20s;
constexpr char kService[] = "distkit.v1.InstanceCounterService";

// A distkitd child process with instance id `id` (its socket named after it).
std::unique_ptr<Daemon> StartDaemon(const RedisBackend& redis, const std::string& id) {
  return std::make_unique<Daemon>(
      redis, id,
      std::vector<std::string>{"--instance_id", id, "--dead_instance_threshold_ms", kThresholdMs});
}

// On both backends (the cluster is shared by the suite: the daemons are per test).
class InstanceE2ETest : public testing::RedisBackendTest {
 protected:
  void SetUp() override {
    RedisBackendTest::SetUp();
    if (HasFatalFailure()) return;
    redis_ = &redis();
    a_ = StartDaemon(*redis_, "ida");
    b_ = StartDaemon(*redis_, "idb");
    c_ = StartDaemon(*redis_, "idc");
    ASSERT_TRUE(a_->WaitServing(kService)) << a_->Log();
    ASSERT_TRUE(b_->WaitServing(kService)) << b_->Log();
    ASSERT_TRUE(c_->WaitServing(kService)) << c_->Log();
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    c_.reset();
  }
  bool Registered(const std::string& id) {
    return redis_->Command({"ZSCORE", kInstances, id}) != "(nil)";
  }
  std::string Incarnation(const std::string& id) {
    return redis_->Command({"HGET", kIncarnations, id});
  }
  // Every Redis key of an instance's incarnations (key sets, namespace sets).
  std::string InstanceKeys(const std::string& id) {
    return redis_->Command({"KEYS", "dk:{I:" + id + ":*"});
  }
  // Writes k: a 10, b 20, c 5 (= 35) and j: a 3, c -7 (= -4).
  void WriteTwoKeys() {
    ASSERT_EQ(Inc(*a_, "k", 10).now(), CI(10, 10));
    ASSERT_EQ(Inc(*b_, "k", 20).now(), CI(30, 20));
    ASSERT_EQ(Inc(*c_, "k", 5).now(), CI(35, 5));
    ASSERT_EQ(Inc(*a_, "j", 3).now(), CI(3, 3));
    ASSERT_EQ(Inc(*c_, "j", -7).now(), CI(-4, -7));
  }
  // True once both a and b read k == `k` and j == `j`.
  bool SurvivorsSee(int64_t k, int64_t j) {
    return Get(*a_, "k").cum == k && Get(*b_, "k").cum == k && Get(*a_, "j").cum == j &&
           Get(*b_, "j").cum == j;
  }

  RedisBackend* redis_ = nullptr;
  std::unique_ptr<Daemon> a_, b_, c_;
};
INSTANTIATE_TEST_SUITE_P(Backends, InstanceE2ETest, testing::kAllBackends,
                         testing::BackendParamName);

// (a) SIGKILL: the dead daemon's slices leave the cumulative as seen from both survivors.
TEST_P(InstanceE2ETest, SigkilledDaemonsSlicesLeaveTheCumulativeForBothSurvivors) {
  WriteTwoKeys();
  EXPECT_EQ(c_->Stop(SIGKILL, 5s), 128 + SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  EXPECT_TRUE(PollUntil([&] { return SurvivorsSee(30, 3); }, kConverge));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - killed);
  std::cout << "slices of the killed daemon left the cumulative after " << took.count()
            << " ms (threshold " << kThresholdMs << " ms)\n";
  EXPECT_EQ(Get(*a_, "k").now(), CI(30, 10));
  EXPECT_EQ(Get(*b_, "k").now(), CI(30, 20));
  EXPECT_EQ(Get(*a_, "j").now(), CI(3, 3));
  EXPECT_EQ(Get(*b_, "j").now(), CI(3, 0));
  EXPECT_TRUE(PollUntil([&] { return LaxGet(*b_, "k").now() == CI(30, 20); }, kConverge));
  EXPECT_TRUE(PollUntil([&] { return !Registered("idc"); }, kConverge));
  EXPECT_TRUE(PollUntil([&] { return InstanceKeys("idc").empty(); }, kConverge))
      << InstanceKeys("idc");
  EXPECT_EQ(Incarnation("idc"), "(nil)");
}

// (b) SIGSTOP longer than the threshold: the others drop the paused daemon's slices; after
// SIGCONT it finds it was declared dead and restores them (the negative one too), and they
// stay. Needs recovery.
TEST_P(InstanceE2ETest, RecoverySigstoppedDaemonGetsItsSlicesBack) {
  WriteTwoKeys();
  c_->process().Signal(SIGSTOP);
  EXPECT_TRUE(PollUntil([&] { return SurvivorsSee(30, 3); }, kConverge));
  // Fully reaped (a long pause): the id is gone from the registry too.
  EXPECT_TRUE(PollUntil([&] { return !Registered("idc"); }, kConverge));
  c_->process().Signal(SIGCONT);
  EXPECT_TRUE(PollUntil([&] { return SurvivorsSee(35, -4); }, kConverge))
      << "k " << Get(*a_, "k").cum << ", j " << Get(*a_, "j").cum;
  // It stays restored over several heartbeats and reaper passes.
  const auto until = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_EQ(Get(*a_, "k").now(), CI(35, 10));
    ASSERT_EQ(Get(*b_, "j").now(), CI(-4, 0));
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(Get(*c_, "k").now(), CI(35, 5));
  EXPECT_EQ(Get(*c_, "j").now(), CI(-4, -7));
  EXPECT_TRUE(Registered("idc"));
  // The restored slices are registered for reaping: killing c now removes them again.
  c_->Stop(SIGKILL, 5s);
  EXPECT_TRUE(PollUntil([&] { return SurvivorsSee(30, 3); }, kConverge))
      << "k " << Get(*a_, "k").cum << ", j " << Get(*a_, "j").cum;
}

// (c) SIGTERM: exit code 0, the slices are gone at once, the id is deregistered.
TEST_P(InstanceE2ETest, SigtermExitsZeroRemovesSlicesAtOnceAndDeregisters) {
  WriteTwoKeys();
  ASSERT_TRUE(Registered("idc"));
  EXPECT_EQ(c_->Stop(SIGTERM, 15s), 0) << c_->Log();
  EXPECT_EQ(Get(*a_, "k").now(), CI(30, 10));
  EXPECT_EQ(Get(*b_, "k").now(), CI(30, 20));
  EXPECT_EQ(Get(*a_, "j").now(), CI(3, 3));
  EXPECT_EQ(Get(*b_, "j").now(), CI(3, 0));
  EXPECT_FALSE(Registered("idc"));
  EXPECT_EQ(Incarnation("idc"), "(nil)");
  EXPECT_EQ(InstanceKeys("idc"), "");
}

// (d) A global Set by a while b is SIGSTOPped (and declared dead): after SIGCONT, b's old slice
// does not come back; the cumulative is what the Set gave plus later incs, and b's later writes
// are reaped when b dies.
TEST_P(InstanceE2ETest, GlobalSetWhileStoppedIsNotUndoneWhenTheDaemonComesBack) {
  WriteTwoKeys();
  b_->process().Signal(SIGSTOP);
  EXPECT_TRUE(PollUntil([&] { return Get(*a_, "k").cum == 15; }, kConverge));
  EXPECT_TRUE(PollUntil([&] { return !Registered("idb"); }, kConverge));
  EXPECT_EQ(Set(*a_, "k", 100), Res(100, 100, 15, 10, true));
  b_->process().Signal(SIGCONT);
  EXPECT_TRUE(PollUntil([&] { return Registered("idb"); }, kConverge)) << "b re-registers";
  EXPECT_TRUE(PollUntil([&] { return Get(*b_, "k").code == grpc::StatusCode::OK; }, kConverge));
  EXPECT_EQ(Get(*b_, "k").now(), CI(100, 0));
  EXPECT_EQ(Inc(*c_, "k", 1), Res(101, 1, 100, 0, true));
  EXPECT_EQ(Inc(*b_, "k", 2), Res(103, 2, 101, 0, true));
  // Over several heartbeats and reaper passes nothing changes.
  const auto until = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_EQ(Get(*a_, "k").now(), CI(103, 100));
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(Get(*b_, "k").now(), CI(103, 2));
  EXPECT_EQ(Get(*c_, "k").now(), CI(103, 1));
  b_->Stop(SIGKILL, 5s);
  EXPECT_TRUE(PollUntil([&] { return Get(*a_, "k").cum == 101; }, kConverge)) << Get(*a_, "k").cum;
  EXPECT_TRUE(PollUntil([&] { return !Registered("idb"); }, kConverge));
  EXPECT_EQ(Get(*c_, "k").now(), CI(101, 1));
}

std::string Key(int i) { return "key" + std::to_string(i); }

// (e) 20 000 keys written by c, then SIGKILL: every key returns to what a and b contributed,
// and c's key sets are gone.
TEST_P(InstanceE2ETest, TwentyThousandKeysOfAKilledDaemonAreReaped) {
  constexpr int kKeys = 20000, kPerBatch = 10000;
  auto a_part = [](int i) -> int64_t { return i % 3 == 0 ? 2 : 0; };
  auto b_part = [](int i) -> int64_t { return i % 5 == 0 ? -1 : 0; };
  for (int from = 0; from < kKeys; from += kPerBatch) {
    v1::InstanceBatchRequest cw, aw, bw;
    for (int i = from; i < from + kPerBatch; ++i) {
      *cw.add_ops() = Op(IncReq(Key(i), 1 + i % 9));
      if (a_part(i) != 0) *aw.add_ops() = Op(IncReq(Key(i), a_part(i)));
      if (b_part(i) != 0) *bw.add_ops() = Op(IncReq(Key(i), b_part(i)));
    }
    const std::vector<std::pair<Daemon*, v1::InstanceBatchRequest*>> writes = {
        {c_.get(), &cw}, {a_.get(), &aw}, {b_.get(), &bw}};
    for (auto [d, req] : writes) {
      BatchOut out = Batch(*d, *req);
      ASSERT_TRUE(out.status.ok()) << d->name() << ": " << out.status.error_message();
      ASSERT_EQ(out.results.size(), static_cast<size_t>(req->ops_size()));
      for (const auto& r : out.results) ASSERT_EQ(r.code, grpc::StatusCode::OK) << r.message;
    }
  }
  const std::string inc = Incarnation("idc");
  ASSERT_NE(inc, "(nil)");
  const std::string key_set = "dk:{I:idc:" + inc + "}:keys:distkit";
  EXPECT_EQ(redis_->Command({"SCARD", key_set}), std::to_string(kKeys));
  c_->Stop(SIGKILL, 5s);
  EXPECT_TRUE(PollUntil([&] { return !Registered("idc"); }, kConverge));
  EXPECT_EQ(redis_->Command({"EXISTS", key_set}), "0");
  EXPECT_EQ(redis_->Command({"EXISTS", "dk:{I:idc:" + inc + "}:namespaces"}), "0");
  EXPECT_EQ(InstanceKeys("idc"), "");
  int wrong = 0;
  for (int from = 0; from < kKeys; from += kPerBatch) {
    v1::InstanceBatchRequest reads;
    for (int i = from; i < from + kPerBatch; ++i) *reads.add_ops() = Op(GetReq(Key(i)));
    BatchOut out = Batch(*a_, reads);
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    ASSERT_EQ(out.results.size(), static_cast<size_t>(kPerBatch));
    for (int i = from; i < from + kPerBatch; ++i) {
      const CI want(a_part(i) + b_part(i), a_part(i));
      if (out.results[i - from].now() != want && ++wrong <= 5) {
        ADD_FAILURE() << Key(i) << ": " << out.results[i - from] << ", want (" << want.first << ", "
                      << want.second << ")";
      }
    }
  }
  EXPECT_EQ(wrong, 0);
}

}  // namespace
}  // namespace distkit
