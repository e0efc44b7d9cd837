// InstanceCounterService: the conformance scenarios of docs/instance_counters.md#origin that
// instance_counter_service_test.cc does not port (55-58, 60, 67-102) and one regression test per
// instance-aware original defect (1-8), each showing our result. In-process daemons
// (tests/support/icounter_daemon.h) on a real redis-server, one instance id each.
//
// Mapping to our API (docs/api.md#instancecounterservice):
//  - "dropping a counter" = a daemon stops without deregistering (Kill below: as after SIGKILL);
//  - inc_all / get_all / set_all(_if) / set_all_on_instance(_if) = one Batch RPC;
//  - the lax icounter scenarios (79-102) send CONSISTENCY_LAX on Inc, Get and SetOnInstance;
//    a "reader" is a daemon that joins later. LAX writes reach other daemons eventually: cross-
//    daemon reads poll with a deadline, then assert exact values. A STRICT call carries the
//    daemon's pending LAX work for the key (docs/api.md#strict-and-lax), so after one STRICT Get on
//    the writer its work is in Redis and STRICT reads anywhere are exact.
//  - a daemon "declared dead" without being killed (recovery scenarios) is simulated by setting
//    its heartbeat score to 0 in dk:{live}:instances.
//
// The last section, InstanceCounterRecoveryTest, needs recovery (docs/api.md#dead-instances: a
// finds it was declared dead restores all its slices, negative ones too, for keys whose epoch
// did not change).

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/icounter_daemon.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::Batch;
using testing::BatchOut;
using testing::CI;
using testing::Clear;
using testing::ClearOi;
using testing::Del;
using testing::DelOi;
using testing::DelOiReq;
using testing::DelReq;
using testing::Get;
using testing::GetReq;
using testing::Inc;
using testing::IncReq;
using testing::LaxGet;
using testing::LaxInc;
using testing::LaxSoi;
using testing::Op;
using testing::PollUntil;
using testing::R;
using testing::RedisServer;
using testing::Res;
using testing::Set;
using testing::SetReq;
using testing::Soi;
using testing::SoiReq;
using Daemon = testing::ICounterDaemon;

constexpr auto kOk = grpc::StatusCode::OK;
constexpr auto kLax = v1::CONSISTENCY_LAX;
constexpr auto kNil = v1::COMPARATOR_UNSPECIFIED;
constexpr auto kEq = v1::COMPARATOR_EQ;
constexpr auto kNe = v1::COMPARATOR_NE;
constexpr auto kLt = v1::COMPARATOR_LT;
constexpr auto kLe = v1::COMPARATOR_LE;
constexpr auto kGt = v1::COMPARATOR_GT;
constexpr auto kGe = v1::COMPARATOR_GE;
constexpr char kInstances[] = "dk:{live}:instances";
constexpr char kIncarnations[] = "dk:{live}:incarnations";
constexpr char kNs[] = "distkit";  // the daemons' default --namespace

// Convergence deadline for cross-daemon reads and reaping (generous: 2 shared cores).
constexpr auto kConverge = 20s;
// Short threshold for the death tests: heartbeat every 100 ms, reaper every 1 s.
constexpr int64_t kShortThreshold = 300;
// Threshold of the tests that watch live daemons for a while (heartbeat every 333 ms): far below
// the original's fixed 15 s heartbeat, with room for scheduling stalls on a loaded machine.
constexpr int64_t kWatchThreshold = 1000;

v1::InstanceIncRequest LaxIncReq(const std::string& key, int64_t delta, v1::Comparator op = kNil,
                                 int64_t operand = 0) {
  return IncReq(key, delta, "", op, operand, kLax);
}
v1::InstanceGetRequest LaxGetReq(const std::string& key) { return GetReq(key, "", kLax); }
v1::SetOnInstanceRequest LaxSoiReq(const std::string& key, int64_t v, v1::Comparator op = kNil,
                                   int64_t operand = 0) {
  return SoiReq(key, v, op, operand, kLax);
}

class ICounterTestBase : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_TRUE(redis_);
  }
  void TearDown() override { redis_.reset(); }

  std::unique_ptr<Daemon> Make(int64_t threshold_ms = 30000) {
    return std::make_unique<Daemon>(
        *redis_, redis_->dir() + "/d" + std::to_string(next_++) + ".sock", threshold_ms);
  }
  std::vector<std::unique_ptr<Daemon>> MakeN(int n, int64_t threshold_ms = 30000) {
    std::vector<std::unique_ptr<Daemon>> out;
    for (int i = 0; i < n; ++i) out.push_back(Make(threshold_ms));
    return out;
  }
  // Stops the daemon as if it were killed: no deregistration, its slices stay until reaped.
  static void Kill(std::unique_ptr<Daemon>& d) {
    d->MarkKilled();
    d.reset();
  }
  bool Registered(const std::string& id) {
    return redis_->Command({"ZSCORE", kInstances, id}) != "(nil)";
  }
  // The reapers remove an id from dk:{live}:instances only after every slice of it is gone.
  bool WaitUnregistered(const std::string& id) {
    return PollUntil([&] { return !Registered(id); }, kConverge);
  }
  // A field of the Redis hash of an instance-aware counter of the default namespace.
  std::string Field(const std::string& key, const std::string& field) {
    return redis_->Command({"HGET", core::InstanceCounterKey(kNs, key), field});
  }

  std::unique_ptr<RedisServer> redis_;
  int next_ = 0;
};

using InstanceCounterScenariosTest = ICounterTestBase;

// Polls `read` until it returns `want` (then the caller asserts exactly).
template <typename F>
CI PollFor(F read, CI want) {
  CI last;
  PollUntil(
      [&] {
        last = read();
        return last == want;
      },
      kConverge);
  return last;
}

// ============================================================================================
// 55-58, 60, 67: several instances, dead instances (STRICT)
// ============================================================================================

TEST_F(InstanceCounterScenariosTest, Scenario55FiveInstancesTenRoundsOfOne) {
  auto d = MakeN(5);
  for (int round = 0; round < 10; ++round) {
    for (auto& x : d) ASSERT_EQ(Inc(*x, "k", 1).code, kOk);
  }
  for (auto& x : d) EXPECT_EQ(Get(*x, "k").now(), CI(50, 10));
}

TEST_F(InstanceCounterScenariosTest, Scenario56FourOfFiveDropAndTheSurvivorSeesItsOwnSlice) {
  auto d = MakeN(5, kShortThreshold);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Inc(*d[i], "k", 10).cum, 10 * (i + 1));
  std::vector<std::string> ids;
  for (int i = 1; i < 5; ++i) {
    ids.push_back(d[i]->id());
    Kill(d[i]);
  }
  EXPECT_EQ(PollFor([&] { return Get(*d[0], "k").now(); }, CI(10, 10)), CI(10, 10));
  for (const auto& id : ids) EXPECT_TRUE(WaitUnregistered(id)) << id;
  EXPECT_EQ(Get(*d[0], "k").now(), CI(10, 10));
}

TEST_F(InstanceCounterScenariosTest, Scenario57DropThenANewInstanceAdds) {
  auto c1 = Make(kShortThreshold);
  auto c2 = Make(kShortThreshold);
  Inc(*c1, "k", 40);
  EXPECT_EQ(Inc(*c2, "k", 60).now(), CI(100, 60));
  Kill(c1);
  EXPECT_EQ(PollFor([&] { return Get(*c2, "k").now(); }, CI(60, 60)), CI(60, 60));
  auto c3 = Make(kShortThreshold);
  EXPECT_EQ(Inc(*c3, "k", 20), Res(80, 20, 60, 0, true));
}

TEST_F(InstanceCounterScenariosTest, Scenario58AllKeysOfTheDroppedInstanceGoToZero) {
  auto c1 = Make(kShortThreshold);
  auto c2 = Make(kShortThreshold);
  Inc(*c1, "a", 10);
  Inc(*c1, "b", 20);
  Inc(*c1, "c", 30);
  EXPECT_EQ(Get(*c2, "a").now(), CI(10, 0));
  const std::string id = c1->id();
  Kill(c1);
  EXPECT_TRUE(PollUntil(
      [&] { return Get(*c2, "a").cum == 0 && Get(*c2, "b").cum == 0 && Get(*c2, "c").cum == 0; },
      kConverge));
  for (const char* k : {"a", "b", "c"}) EXPECT_EQ(Get(*c2, k).now(), CI(0, 0)) << k;
  EXPECT_TRUE(WaitUnregistered(id));
}

TEST_F(InstanceCounterScenariosTest, Scenario60KeysAreIndependentAcrossInstances) {
  auto d = MakeN(3);
  for (int i = 0; i < 3; ++i) {
    Inc(*d[i], "a", i + 1);
    Inc(*d[i], "b", 10 * (i + 1));
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Get(*d[i], "a").now(), CI(6, i + 1));
    EXPECT_EQ(Get(*d[i], "b").now(), CI(60, 10 * (i + 1)));
  }
}

// The original reaps lazily, inside the scripts of live callers; ours has a reaper thread in
// every daemon: the survivor makes no call at all until the dead slice is gone from Redis.
TEST_F(InstanceCounterScenariosTest, Scenario67CleanupNeedsNoCallFromTheSurvivor) {
  auto c1 = Make(kShortThreshold);
  auto c2 = Make(kShortThreshold);
  Inc(*c1, "k", 40);
  Inc(*c2, "k", 60);
  const std::string id = c1->id();
  Kill(c1);
  EXPECT_TRUE(PollUntil([&] { return Field("k", "c") == "60"; }, kConverge)) << Field("k", "c");
  EXPECT_EQ(Field("k", "s:" + id), "(nil)");
  EXPECT_TRUE(WaitUnregistered(id));
  EXPECT_EQ(Get(*c2, "k").now(), CI(60, 60));
}

// ============================================================================================
// 73-78: conditions and batches (STRICT)
// ============================================================================================

struct CondCase {
  v1::Comparator op;
  int64_t operand;
  bool holds;  // against 10
};
const CondCase kCondCases[] = {{kEq, 10, true},  {kLt, 11, true},    {kNe, 9, true},
                               {kNil, 0, true},  {kGt, 10, false},   {kLe, 10, true},
                               {kGe, 11, false}, {kNil, 12345, true}};

TEST_F(InstanceCounterScenariosTest, Scenario73IncIfFromTen) {
  auto c1 = Make();
  for (const auto& cc : kCondCases) {
    SCOPED_TRACE(::testing::Message() << "op " << cc.op << " operand " << cc.operand);
    ASSERT_EQ(Set(*c1, "k", 10).now(), CI(10, 10));
    R r = Inc(*c1, "k", 2, "", cc.op, cc.operand);
    EXPECT_EQ(r, cc.holds ? Res(12, 12, 10, 10, true) : Res(10, 10, 10, 10, false));
    EXPECT_EQ(Get(*c1, "k").now(), r.now());
  }
}

TEST_F(InstanceCounterScenariosTest, Scenario74IncAllEmptyAndDuplicates) {
  auto c1 = Make();
  BatchOut empty = Batch(*c1, {});
  EXPECT_TRUE(empty.status.ok()) << empty.status.error_message();
  EXPECT_TRUE(empty.results.empty());
  BatchOut b = Batch(*c1, {Op(IncReq("k", 1)), Op(IncReq("k", 2))});
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  ASSERT_EQ(b.results.size(), 2u);
  EXPECT_EQ(b.results[0], Res(1, 1, 0, 0, true));
  EXPECT_EQ(b.results[1], Res(3, 3, 1, 1, true));
  EXPECT_EQ(Get(*c1, "k").now(), CI(3, 3));
}

TEST_F(InstanceCounterScenariosTest, Scenario75IncAllIfSeesEarlierItems) {
  auto c1 = Make();
  auto c2 = Make();
  Inc(*c2, "b", 5);
  EXPECT_EQ(Set(*c1, "a", 0).now(), CI(0, 0));
  BatchOut b = Batch(*c1, {Op(IncReq("a", 1, "", kEq, 0)), Op(IncReq("a", 2, "", kEq, 1)),
                           Op(IncReq("b", 4, "", kGt, 10)), Op(IncReq("b", 3, "", kEq, 5))});
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  ASSERT_EQ(b.results.size(), 4u);
  EXPECT_EQ(b.results[0], Res(1, 1, 0, 0, true));
  EXPECT_EQ(b.results[1], Res(3, 3, 1, 1, true));
  EXPECT_EQ(b.results[2], Res(5, 0, 5, 0, false));
  EXPECT_EQ(b.results[3], Res(8, 3, 5, 0, true));
  EXPECT_EQ(Get(*c1, "a").now(), CI(3, 3));
  EXPECT_EQ(Get(*c1, "b").now(), CI(8, 3));
  EXPECT_EQ(Get(*c2, "b").now(), CI(8, 5));
}

TEST_F(InstanceCounterScenariosTest, Scenario76SetOnInstanceIfComparesTheOwnSlice) {
  auto c1 = Make();
  auto c2 = Make();
  Soi(*c1, "k", 7);
  EXPECT_EQ(Soi(*c2, "k", 5).now(), CI(12, 5));
  EXPECT_EQ(Soi(*c1, "k", 9, kGt, 6), Res(14, 9, 12, 7, true));
  EXPECT_EQ(Soi(*c1, "k", 50, kEq, 8), Res(14, 9, 14, 9, false));
  EXPECT_EQ(Soi(*c1, "k", 11, kNil, 0), Res(16, 11, 14, 9, true));
}

TEST_F(InstanceCounterScenariosTest, Scenario77SetAllIf) {
  auto c1 = Make();
  Set(*c1, "a", 10);
  Set(*c1, "b", 20);
  BatchOut b = Batch(*c1, {Op(SetReq("c", 30, kNil, 0)), Op(SetReq("a", 11, kGt, 5)),
                           Op(SetReq("b", 99, kLt, 10))});
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  ASSERT_EQ(b.results.size(), 3u);
  EXPECT_EQ(b.results[0], Res(30, 30, 0, 0, true));
  EXPECT_EQ(b.results[1], Res(11, 11, 10, 10, true));
  EXPECT_EQ(b.results[2], Res(20, 20, 20, 20, false));
  EXPECT_EQ(Get(*c1, "a").now(), CI(11, 11));
  EXPECT_EQ(Get(*c1, "b").now(), CI(20, 20));
  EXPECT_EQ(Get(*c1, "c").now(), CI(30, 30));
}

TEST_F(InstanceCounterScenariosTest, Scenario78SetAllOnInstanceIf) {
  auto c1 = Make();
  auto c2 = Make();
  Soi(*c1, "a", 4);
  Soi(*c2, "a", 5);
  Soi(*c2, "b", 3);
  BatchOut b = Batch(*c1, {Op(SoiReq("b", 10, kEq, 1)), Op(SoiReq("a", 7, kNil, 0))});
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  ASSERT_EQ(b.results.size(), 2u);
  EXPECT_EQ(b.results[0], Res(3, 0, 3, 0, false));
  EXPECT_EQ(b.results[1], Res(12, 7, 9, 4, true));
  EXPECT_EQ(Get(*c2, "a").now(), CI(12, 5));
  EXPECT_EQ(Get(*c2, "b").now(), CI(3, 3));
}

// ============================================================================================
// 79-102: LAX (consistency LAX on Inc / Get / SetOnInstance)
// ============================================================================================

TEST_F(InstanceCounterScenariosTest, Scenario79LaxOwnViewIsExact) {
  auto c1 = Make();
  EXPECT_EQ(LaxInc(*c1, "k", 5), Res(5, 5, 0, 0, true));
  EXPECT_EQ(LaxInc(*c1, "k", 3), Res(8, 8, 5, 5, true));
  LaxInc(*c1, "j", 10);
  LaxInc(*c1, "j", 5);
  EXPECT_EQ(LaxGet(*c1, "j").now(), CI(15, 15));
  LaxInc(*c1, "m", 10);
  EXPECT_EQ(LaxInc(*c1, "m", -3).now(), CI(7, 7));
  EXPECT_EQ(LaxGet(*c1, "m").now(), CI(7, 7));
  EXPECT_EQ(LaxGet(*c1, "unknown"), Res(0, 0, 0, 0, true));
}

TEST_F(InstanceCounterScenariosTest, Scenario80LaxWritesReachAReader) {
  auto c1 = Make();
  auto c2 = Make();
  LaxInc(*c1, "k", 20);
  auto reader = Make();
  EXPECT_EQ(PollFor([&] { return LaxGet(*reader, "k").now(); }, CI(20, 0)), CI(20, 0));
  LaxInc(*c1, "j", 10);
  LaxInc(*c2, "j", 7);
  EXPECT_EQ(PollFor([&] { return LaxGet(*reader, "j").now(); }, CI(17, 0)), CI(17, 0));
  auto reader2 = Make();
  EXPECT_EQ(PollFor([&] { return LaxGet(*reader2, "j").now(); }, CI(17, 0)), CI(17, 0));
  EXPECT_EQ(Get(*reader2, "j").now(), CI(17, 0));
}

// Set and Del are immediate and take the writer's pending LAX work into account first.
TEST_F(InstanceCounterScenariosTest, Scenario81LaxThenSetAndDel) {
  auto c1 = Make();
  auto c2 = Make();
  LaxInc(*c1, "k", 5);
  EXPECT_EQ(Set(*c1, "k", 100), Res(100, 100, 5, 5, true));
  EXPECT_EQ(Get(*c2, "k").now(), CI(100, 0));
  EXPECT_EQ(PollFor([&] { return LaxGet(*c2, "k").now(); }, CI(100, 0)), CI(100, 0));
  LaxInc(*c1, "j", 15);
  EXPECT_EQ(Del(*c1, "j"), Res(0, 0, 15, 15, true));
  EXPECT_EQ(Get(*c2, "j").now(), CI(0, 0));
  EXPECT_EQ(LaxGet(*c2, "j").now(), CI(0, 0));
  // Nothing pending comes back later.
  EXPECT_EQ(Get(*c1, "k").now(), CI(100, 100));
  EXPECT_EQ(Get(*c1, "j").now(), CI(0, 0));
}

// The original reaps an idle, live lax counter (its 15 s heartbeat is longer than the 300 ms
// threshold): a reader gets 0. Ours heartbeats every threshold/3 (here 1 s / 3) whether busy or
// not.
TEST_F(InstanceCounterScenariosTest, Scenario82IdleLaxWriterIsNotReaped) {
  auto c1 = Make(kWatchThreshold);
  const int64_t inc = c1->icounters().incarnation();
  LaxInc(*c1, "k", 30);
  auto reader = Make(kWatchThreshold);
  EXPECT_EQ(PollFor([&] { return LaxGet(*reader, "k").now(); }, CI(30, 0)), CI(30, 0));
  const auto until = std::chrono::steady_clock::now() + 2500ms;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_EQ(LaxGet(*reader, "k").now(), CI(30, 0));
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(Get(*reader, "k").now(), CI(30, 0));
  EXPECT_EQ(c1->icounters().incarnation(), inc) << "never declared dead";
}

TEST_F(InstanceCounterScenariosTest, Scenario83LaxThenClearAndClearOnInstance) {
  auto c1 = Make();
  auto c2 = Make();
  auto reader = Make();
  // clear: the writer's own pending work does not come back after its Clear.
  LaxInc(*c1, "a", 50);
  ASSERT_EQ(Clear(*c1), kOk);
  EXPECT_EQ(Get(*c1, "a").now(), CI(0, 0));  // STRICT: carries whatever c1 still had pending
  EXPECT_EQ(Get(*reader, "a").now(), CI(0, 0));
  EXPECT_EQ(LaxGet(*reader, "a").now(), CI(0, 0));
  // clear_on_instance after both flushed: the other slice stays.
  LaxInc(*c1, "b", 20);
  LaxInc(*c2, "b", 10);
  EXPECT_TRUE(PollUntil([&] { return Get(*reader, "b").cum == 30; }, kConverge));
  ASSERT_EQ(ClearOi(*c1), kOk);
  EXPECT_EQ(PollFor([&] { return LaxGet(*reader, "b").now(); }, CI(10, 0)), CI(10, 0));
  EXPECT_EQ(Get(*c1, "b").now(), CI(10, 0));
  EXPECT_EQ(Get(*reader, "b").now(), CI(10, 0));
  // clear_on_instance right after a LAX inc: the pending 50 is removed too.
  LaxInc(*c1, "c", 50);
  ASSERT_EQ(ClearOi(*c1), kOk);
  EXPECT_EQ(Get(*c1, "c").now(), CI(0, 0));
  EXPECT_EQ(Get(*reader, "c").now(), CI(0, 0));
  EXPECT_EQ(LaxGet(*reader, "c").now(), CI(0, 0));
}

TEST_F(InstanceCounterScenariosTest, Scenario84LaxThenDelOnInstance) {
  auto c1 = Make();
  auto c2 = Make();
  auto reader = Make();
  LaxInc(*c1, "k", 20);
  LaxInc(*c2, "k", 10);
  EXPECT_TRUE(PollUntil([&] { return Get(*reader, "k").cum == 30; }, kConverge));
  EXPECT_EQ(DelOi(*c1, "k"), Res(10, 0, 30, 20, true));
  EXPECT_EQ(Get(*reader, "k").now(), CI(10, 0));
  EXPECT_EQ(PollFor([&] { return LaxGet(*reader, "k").now(); }, CI(10, 0)), CI(10, 0));
}

TEST_F(InstanceCounterScenariosTest, Scenario85LaxSetOnInstance) {
  auto c1 = Make();
  LaxInc(*c1, "k", 10);
  EXPECT_EQ(LaxSoi(*c1, "k", 7), Res(7, 7, 10, 10, true));
  EXPECT_EQ(LaxGet(*c1, "k").now(), CI(7, 7));
  EXPECT_EQ(Get(*c1, "k").now(), CI(7, 7));
}

// 86 and 87 (the same with the writers in the other order): every daemon converges to the same
// cumulative and its own slice.
TEST_F(InstanceCounterScenariosTest, Scenario86And87InstancesConvergeOnTheCumulative) {
  auto c1 = Make();
  auto c2 = Make();
  auto reader = Make();
  // 86
  LaxInc(*c1, "k", 1);
  EXPECT_TRUE(PollUntil([&] { return Get(*reader, "k").cum == 1; }, kConverge));
  LaxInc(*c2, "k", 1);
  LaxInc(*c2, "k", 1);
  EXPECT_EQ(PollFor([&] { return LaxGet(*c1, "k").now(); }, CI(3, 1)), CI(3, 1));
  EXPECT_EQ(PollFor([&] { return LaxGet(*c2, "k").now(); }, CI(3, 2)), CI(3, 2));
  EXPECT_EQ(PollFor([&] { return LaxGet(*reader, "k").now(); }, CI(3, 0)), CI(3, 0));
  // 87
  LaxInc(*c2, "j", 1);
  LaxInc(*c2, "j", 1);
  EXPECT_TRUE(PollUntil([&] { return Get(*reader, "j").cum == 2; }, kConverge));
  LaxInc(*c1, "j", 1);
  EXPECT_EQ(PollFor([&] { return LaxGet(*c2, "j").now(); }, CI(3, 2)), CI(3, 2));
  EXPECT_EQ(PollFor([&] { return LaxGet(*c1, "j").now(); }, CI(3, 1)), CI(3, 1));
  EXPECT_EQ(PollFor([&] { return LaxGet(*reader, "j").now(); }, CI(3, 0)), CI(3, 0));
}

TEST_F(InstanceCounterScenariosTest, Scenario88LaxGetAll) {
  auto c1 = Make();
  BatchOut b = Batch(*c1, {});
  EXPECT_TRUE(b.status.ok());
  EXPECT_TRUE(b.results.empty());
  b = Batch(*c1, {Op(LaxGetReq("a")), Op(LaxGetReq("b"))});
  ASSERT_EQ(b.results.size(), 2u);
  EXPECT_EQ(b.results[0].now(), CI(0, 0));
  EXPECT_EQ(b.results[1].now(), CI(0, 0));
  LaxInc(*c1, "a", 5);
  LaxInc(*c1, "b", 10);
  b = Batch(*c1, {Op(LaxGetReq("a")), Op(LaxGetReq("b"))});
  ASSERT_EQ(b.results.size(), 2u);
  EXPECT_EQ(b.results[0].now(), CI(5, 5));
  EXPECT_EQ(b.results[1].now(), CI(10, 10));
  LaxInc(*c1, "oa", 1);
  LaxInc(*c1, "ob", 2);
  LaxInc(*c1, "oc", 3);
  b = Batch(*c1, {Op(LaxGetReq("oc")), Op(LaxGetReq("oa")), Op(LaxGetReq("ob"))});
  ASSERT_EQ(b.results.size(), 3u);
  EXPECT_EQ(b.results[0], Res(3, 3, 3, 3, true));
  EXPECT_EQ(b.results[1].now(), CI(1, 1));
  EXPECT_EQ(b.results[2].now(), CI(2, 2));
}

TEST_F(InstanceCounterScenariosTest, Scenario89LaxGetAllOfAReader) {
  auto writer = Make();
  LaxInc(*writer, "k", 42);
  auto reader = Make();
  CI got = PollFor(
      [&] {
        BatchOut b = Batch(*reader, {Op(LaxGetReq("k"))});
        return b.results.size() == 1 ? b.results[0].now() : CI(-1, -1);
      },
      CI(42, 0));
  EXPECT_EQ(got, CI(42, 0));
}

// get_all_on_instance = the `instance` field of batch gets.
TEST_F(InstanceCounterScenariosTest, Scenario90LaxGetAllOnInstance) {
  auto c1 = Make();
  auto c2 = Make();
  BatchOut b = Batch(*c1, {Op(LaxGetReq("x")), Op(LaxGetReq("y"))});
  ASSERT_EQ(b.results.size(), 2u);
  EXPECT_EQ(b.results[0].inst, 0);
  EXPECT_EQ(b.results[1].inst, 0);
  LaxInc(*c1, "k", 5);
  b = Batch(*c1, {Op(LaxGetReq("k"))});
  ASSERT_EQ(b.results.size(), 1u);
  EXPECT_EQ(b.results[0].inst, 5);
  LaxInc(*c2, "j", 100);
  CI got = PollFor(
      [&] {
        BatchOut g = Batch(*c1, {Op(LaxGetReq("j"))});
        return g.results.size() == 1 ? g.results[0].now() : CI(-1, -1);
      },
      CI(100, 0));
  EXPECT_EQ(got, CI(100, 0));
}

TEST_F(InstanceCounterScenariosTest, Scenario91LaxSetAllOnInstance) {
  auto c1 = Make();
  BatchOut b = Batch(*c1, {});
  EXPECT_TRUE(b.results.empty());
  b = Batch(*c1, {Op(LaxSoiReq("a", 7)), Op(LaxSoiReq("b", 3))});
  ASSERT_TRUE(b.status.ok());
  ASSERT_EQ(b.results.size(), 2u);
  EXPECT_EQ(b.results[0], Res(7, 7, 0, 0, true));
  EXPECT_EQ(b.results[1], Res(3, 3, 0, 0, true));
  EXPECT_EQ(Get(*c1, "a").now(), CI(7, 7));
  EXPECT_EQ(Get(*c1, "b").now(), CI(3, 3));
}

TEST_F(InstanceCounterScenariosTest, Scenario92LaxSetAllOnInstanceReachesAReader) {
  auto c1 = Make();
  auto c2 = Make();
  LaxInc(*c2, "k", 10);
  EXPECT_EQ(PollFor([&] { return LaxGet(*c1, "k").now(); }, CI(10, 0)), CI(10, 0));
  BatchOut b = Batch(*c1, {Op(LaxSoiReq("k", 4))});
  ASSERT_EQ(b.results.size(), 1u);
  EXPECT_EQ(b.results[0], Res(14, 4, 10, 0, true));
  auto reader = Make();
  EXPECT_EQ(PollFor([&] { return LaxGet(*reader, "k").now(); }, CI(14, 0)), CI(14, 0));
}

TEST_F(InstanceCounterScenariosTest, Scenario93LaxSetAllOnInstanceSetsTheSlice) {
  auto c1 = Make();
  auto c2 = Make();
  LaxInc(*c2, "k", 5);
  EXPECT_EQ(PollFor([&] { return LaxGet(*c1, "k").now(); }, CI(5, 0)), CI(5, 0));
  BatchOut b = Batch(*c1, {Op(LaxSoiReq("k", 3))});
  ASSERT_EQ(b.results.size(), 1u);
  EXPECT_EQ(b.results[0], Res(8, 3, 5, 0, true));
}

TEST_F(InstanceCounterScenariosTest, Scenario94SetAllIsImmediate) {
  auto c1 = Make();
  auto c2 = Make();
  EXPECT_TRUE(Batch(*c1, {}).results.empty());
  BatchOut b = Batch(*c1, {Op(SetReq("a", 10)), Op(SetReq("b", 20))});
  ASSERT_EQ(b.results.size(), 2u);
  EXPECT_EQ(b.results[0], Res(10, 10, 0, 0, true));
  EXPECT_EQ(b.results[1], Res(20, 20, 0, 0, true));
  Batch(*c1, {Op(SetReq("c", 99))});
  EXPECT_EQ(Get(*c2, "c").now(), CI(99, 0));
  EXPECT_EQ(PollFor([&] { return LaxGet(*c2, "c").now(); }, CI(99, 0)), CI(99, 0));
  EXPECT_EQ(LaxInc(*c1, "c", 5).now(), CI(104, 104));
  b = Batch(*c1, {Op(SetReq("c", 20))});
  ASSERT_EQ(b.results.size(), 1u);
  EXPECT_EQ(b.results[0], Res(20, 20, 104, 104, true)) << "previous includes the pending 5";
  EXPECT_EQ(Get(*c2, "c").now(), CI(20, 0));
  EXPECT_EQ(PollFor([&] { return LaxGet(*c2, "c").now(); }, CI(20, 0)), CI(20, 0));
  EXPECT_EQ(Get(*c1, "c").now(), CI(20, 20)) << "the pending 5 does not come back";
}

TEST_F(InstanceCounterScenariosTest, Scenario95LaxIncIfFromTen) {
  auto c1 = Make();
  for (const auto& cc : kCondCases) {
    SCOPED_TRACE(::testing::Message() << "op " << cc.op << " operand " << cc.operand);
    ASSERT_EQ(Set(*c1, "k", 10).now(), CI(10, 10));
    R r = LaxInc(*c1, "k", 2, cc.op, cc.operand);
    EXPECT_EQ(r, cc.holds ? Res(12, 12, 10, 10, true) : Res(10, 10, 10, 10, false));
    EXPECT_EQ(LaxGet(*c1, "k").now(), r.now());
    EXPECT_EQ(Get(*c1, "k").now(), r.now());
  }
}

TEST_F(InstanceCounterScenariosTest, Scenario96SetIfAfterLaxInc) {
  auto c1 = Make();
  auto c2 = Make();
  LaxInc(*c1, "k", 5);
  EXPECT_EQ(Set(*c1, "k", 20, kEq, 5), Res(20, 20, 5, 5, true));
  EXPECT_EQ(PollFor([&] { return LaxGet(*c2, "k").now(); }, CI(20, 0)), CI(20, 0));
  Set(*c1, "k", 5);
  EXPECT_EQ(Set(*c1, "k", 20, kGt, 10), Res(5, 5, 5, 5, false));
  EXPECT_EQ(LaxGet(*c1, "k").now(), CI(5, 5));
  EXPECT_EQ(PollFor([&] { return LaxGet(*c2, "k").now(); }, CI(5, 0)), CI(5, 0));
}

TEST_F(InstanceCounterScenariosTest, Scenario97LaxSetOnInstanceIf) {
  auto c1 = Make();
  auto c2 = Make();
  LaxInc(*c1, "k", 7);
  LaxInc(*c2, "k", 5);
  EXPECT_EQ(PollFor([&] { return LaxGet(*c1, "k").now(); }, CI(12, 7)), CI(12, 7));
  EXPECT_EQ(LaxSoi(*c1, "k", 9, kGt, 6), Res(14, 9, 12, 7, true));
  EXPECT_EQ(LaxSoi(*c1, "k", 50, kEq, 8), Res(14, 9, 14, 9, false));
  EXPECT_EQ(Get(*c1, "k").now(), CI(14, 9));
}

TEST_F(InstanceCounterScenariosTest, Scenario98LaxIncAll) {
  auto c1 = Make();
  EXPECT_TRUE(Batch(*c1, {}).results.empty());
  BatchOut b = Batch(*c1, {Op(LaxIncReq("k", 1)), Op(LaxIncReq("k", 2))});
  ASSERT_EQ(b.results.size(), 2u);
  EXPECT_EQ(b.results[0], Res(1, 1, 0, 0, true));
  EXPECT_EQ(b.results[1], Res(3, 3, 1, 1, true));
  EXPECT_EQ(LaxGet(*c1, "k").now(), CI(3, 3));
}

TEST_F(InstanceCounterScenariosTest, Scenario99LaxIncAllIf) {
  auto c1 = Make();
  auto c2 = Make();
  LaxInc(*c2, "k", 5);
  EXPECT_EQ(PollFor([&] { return LaxGet(*c1, "k").now(); }, CI(5, 0)), CI(5, 0));
  BatchOut b = Batch(*c1, {Op(LaxIncReq("k", 1, kEq, 5)), Op(LaxIncReq("k", 2, kEq, 6)),
                           Op(LaxIncReq("k", 4, kGt, 20))});
  ASSERT_EQ(b.results.size(), 3u);
  EXPECT_EQ(b.results[0], Res(6, 1, 5, 0, true));
  EXPECT_EQ(b.results[1], Res(8, 3, 6, 1, true));
  EXPECT_EQ(b.results[2], Res(8, 3, 8, 3, false));
  EXPECT_EQ(LaxGet(*c1, "k").now(), CI(8, 3));
}

TEST_F(InstanceCounterScenariosTest, Scenario100LaxIncAllIfReachesAnotherDaemon) {
  auto c1 = Make();
  auto c2 = Make();
  BatchOut b = Batch(*c1, {Op(LaxIncReq("a", 4, kNil, 0)), Op(LaxIncReq("b", 7, kGt, 0))});
  ASSERT_EQ(b.results.size(), 2u);
  EXPECT_EQ(b.results[0], Res(4, 4, 0, 0, true));
  EXPECT_EQ(b.results[1], Res(0, 0, 0, 0, false));
  EXPECT_EQ(PollFor([&] { return LaxGet(*c2, "a").now(); }, CI(4, 0)), CI(4, 0));
  EXPECT_EQ(Get(*c1, "b").now(), CI(0, 0));
  EXPECT_EQ(Get(*c2, "b").now(), CI(0, 0));
}

TEST_F(InstanceCounterScenariosTest, Scenario101SetAllIfThenAnotherDaemonReads) {
  auto c1 = Make();
  auto c2 = Make();
  Batch(*c1, {Op(SetReq("a", 10)), Op(SetReq("b", 20))});
  BatchOut b = Batch(*c1, {Op(SetReq("a", 11, kNil, 0)), Op(SetReq("b", 99, kLt, 10))});
  ASSERT_EQ(b.results.size(), 2u);
  EXPECT_EQ(b.results[0], Res(11, 11, 10, 10, true));
  EXPECT_EQ(b.results[1], Res(20, 20, 20, 20, false));
  EXPECT_EQ(Get(*c2, "a").now(), CI(11, 0));
  EXPECT_EQ(Get(*c2, "b").now(), CI(20, 0));
  EXPECT_EQ(PollFor([&] { return LaxGet(*c2, "a").now(); }, CI(11, 0)), CI(11, 0));
}

TEST_F(InstanceCounterScenariosTest, Scenario102LaxSetAllOnInstanceIf) {
  auto c1 = Make();
  auto c2 = Make();
  LaxInc(*c2, "k", 5);
  EXPECT_EQ(PollFor([&] { return LaxGet(*c1, "k").now(); }, CI(5, 0)), CI(5, 0));
  BatchOut b = Batch(*c1, {Op(LaxSoiReq("k", 3, kEq, 0))});
  ASSERT_EQ(b.results.size(), 1u);
  EXPECT_EQ(b.results[0], Res(8, 3, 5, 0, true));
  EXPECT_EQ(LaxGet(*c1, "k").now(), CI(8, 3));
}

// ============================================================================================
// The original library's instance-aware defects 1-8 (docs/instance_counters.md): our results
// ============================================================================================

// Stale slices stay in other instances' hashes and are subtracted when that instance is reaped.
// Original: A+3, B+7, A.del, A+2, B dies -> -5 (ours 2); A+10, B+5, A.set 100, B dies -> 95
// (ours 100).
TEST_F(InstanceCounterScenariosTest, Defect1SetAndDelLeaveNoStaleSliceForTheReaper) {
  auto a = Make(kShortThreshold);
  auto b = Make(kShortThreshold);
  Inc(*a, "k", 3);
  Inc(*b, "k", 7);
  EXPECT_EQ(Del(*a, "k").pcum, 10);
  EXPECT_EQ(Inc(*a, "k", 2).now(), CI(2, 2));
  Inc(*a, "j", 10);
  Inc(*b, "j", 5);
  EXPECT_EQ(Set(*a, "j", 100).now(), CI(100, 100));
  EXPECT_EQ(Field("k", "s:" + b->id()), "(nil)") << "B's stale slice was deleted by the Del";
  const std::string id = b->id();
  Kill(b);
  ASSERT_TRUE(WaitUnregistered(id));  // B's key sets were reaped
  EXPECT_EQ(Get(*a, "k").now(), CI(2, 2));
  EXPECT_EQ(Get(*a, "j").now(), CI(100, 100));
}

// clear_on_instance subtracts stale slices. Original: A+10, B.set 100, A.clear_on_instance
// -> 90 (ours 100).
TEST_F(InstanceCounterScenariosTest, Defect2ClearOnInstanceIgnoresStaleSlices) {
  auto a = Make();
  auto b = Make();
  Inc(*a, "k", 10);
  EXPECT_EQ(Set(*b, "k", 100).now(), CI(100, 100));
  ASSERT_EQ(ClearOi(*a), kOk);
  EXPECT_EQ(Get(*b, "k").now(), CI(100, 100));
  EXPECT_EQ(Get(*a, "k").now(), CI(100, 0));
}

// get adopts a stale slice. Original: A+10, B.set 100, A.get -> (100, 10), A+1 -> (101, 11),
// A dies -> 90. Ours: (100, 0), (101, 1), 100.
TEST_F(InstanceCounterScenariosTest, Defect3StaleSliceReadsZeroAndIsNotReapedTwice) {
  auto a = Make(kShortThreshold);
  auto b = Make(kShortThreshold);
  Inc(*a, "k", 10);
  Set(*b, "k", 100);
  EXPECT_EQ(Get(*a, "k").now(), CI(100, 0));
  EXPECT_EQ(Inc(*a, "k", 1), Res(101, 1, 100, 0, true));
  const std::string id = a->id();
  Kill(a);
  EXPECT_EQ(PollFor([&] { return Get(*b, "k").now(); }, CI(100, 100)), CI(100, 100));
  ASSERT_TRUE(WaitUnregistered(id));
  EXPECT_EQ(Get(*b, "k").now(), CI(100, 100));
}

// A global clear deletes the epochs, and live instances resurrect their old slices. Original:
// A+5, B.clear, A+1 -> 6 (ours 1); after A's idle heartbeat the cumulative is 5 (ours: stays 0).
// Epochs never go backwards, also not across a Clear.
TEST_F(InstanceCounterScenariosTest, Defect4ClearIsNotUndoneAndEpochsStayMonotonic) {
  auto a = Make(kWatchThreshold);
  auto b = Make(kWatchThreshold);
  Inc(*a, "k", 5);
  Inc(*a, "j", 5);
  const std::string e1 = Field("k", "e");
  ASSERT_NE(e1, "(nil)");
  ASSERT_EQ(Clear(*b), kOk);
  EXPECT_EQ(Inc(*a, "k", 1), Res(1, 1, 0, 0, true));
  const std::string e2 = Field("k", "e");
  ASSERT_NE(e2, "(nil)");
  EXPECT_GT(std::stoll(e2), std::stoll(e1));
  // A stays idle on j for several heartbeats (every 333 ms): nothing comes back.
  const auto until = std::chrono::steady_clock::now() + 1500ms;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_EQ(Get(*b, "j").now(), CI(0, 0));
    ASSERT_EQ(Get(*b, "k").now(), CI(1, 0));
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(Get(*a, "j").now(), CI(0, 0));
}

// Defect 5 (partial recovery, negative slices never recovered) needs recovery: see
// InstanceCounterRecoveryTest.Defect5AllSlicesNegativeOnesTooComeBack below.

// Reaping is O(dead x keys) in one script and fails for good from ~8000 keys (Lua unpack
// limit): every script of every instance then fails. Ours: 10 000 keys of a dead instance are
// reaped in chunks and the survivor keeps working.
TEST_F(InstanceCounterScenariosTest, Defect6TenThousandKeysOfADeadInstanceAreReaped) {
  auto a = Make(kShortThreshold);
  auto b = Make(kShortThreshold);
  constexpr int kKeys = 10000;
  v1::InstanceBatchRequest writes;
  for (int i = 0; i < kKeys; ++i)
    *writes.add_ops() = Op(IncReq("k" + std::to_string(i), 1 + i % 3));
  BatchOut w = Batch(*a, writes);
  ASSERT_TRUE(w.status.ok()) << w.status.error_message();
  ASSERT_EQ(w.results.size(), static_cast<size_t>(kKeys));
  for (int i = 0; i < kKeys; ++i) ASSERT_EQ(w.results[i].code, kOk) << i;
  v1::InstanceBatchRequest bw;
  for (int i = 0; i < kKeys; i += 10) *bw.add_ops() = Op(IncReq("k" + std::to_string(i), 7));
  ASSERT_TRUE(Batch(*b, bw).status.ok());
  const std::string id = a->id();
  Kill(a);
  ASSERT_TRUE(WaitUnregistered(id));
  v1::InstanceBatchRequest reads;
  for (int i = 0; i < kKeys; ++i) *reads.add_ops() = Op(GetReq("k" + std::to_string(i)));
  BatchOut r = Batch(*b, reads);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.results.size(), static_cast<size_t>(kKeys));
  int wrong = 0;
  for (int i = 0; i < kKeys; ++i) {
    const int64_t want = i % 10 == 0 ? 7 : 0;
    if (r.results[i].now() != CI(want, want)) {
      if (++wrong <= 5) ADD_FAILURE() << "k" << i << ": " << r.results[i];
    }
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(Inc(*b, "k1", 1), Res(1, 1, 0, 0, true));
}

// The liveness threshold is per caller and the heartbeat a fixed 15 s that only fires when
// idle: a threshold below 15 s reaps live instances (original: the 40 disappears, then
// flaps). Ours: a 1 s threshold, idle live daemons heartbeat every 333 ms and stay.
TEST_F(InstanceCounterScenariosTest, Defect7IdleLiveInstancesAreNeverReaped) {
  auto a = Make(kWatchThreshold);
  auto b = Make(kWatchThreshold);
  const int64_t ia = a->icounters().incarnation(), ib = b->icounters().incarnation();
  Inc(*a, "k", 40);
  Inc(*b, "k", 60);
  const auto until = std::chrono::steady_clock::now() + 2000ms;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_EQ(Field("k", "c"), "100");
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(Get(*b, "k").now(), CI(100, 60));
  EXPECT_EQ(Get(*a, "k").now(), CI(100, 40));
  EXPECT_EQ(a->icounters().incarnation(), ia) << "a was declared dead";
  EXPECT_EQ(b->icounters().incarnation(), ib) << "b was declared dead";
}

// Lax set_on_instance is deferred as an inc: after a foreign epoch bump it sets the slice to
// the difference. Original: A slice 10, lax soi 7, B.set 100 before the flush -> (97, -3).
// Ours: a pending SetOnInstance is "slice := 7" whenever it lands, counted at the new epoch:
// (107, 7). (A does not flush on its own here; its STRICT Get carries the pending work.)
// Also from item 8: a Set right after a LAX inc takes that inc first (previous includes it,
// nothing survives the Set), and the own view never drops in-flight deltas.
TEST_F(InstanceCounterScenariosTest, Defect8LaxSetOnInstanceIsAnAssignmentAndNothingIsDropped) {
  auto a = std::make_unique<Daemon>(*redis_, redis_->dir() + "/noflush.sock", 30000,
                                    /*flush_interval_ms=*/600000);
  auto b = Make();
  EXPECT_EQ(Inc(*a, "k", 10).now(), CI(10, 10));
  EXPECT_EQ(LaxSoi(*a, "k", 7), Res(7, 7, 10, 10, true));
  EXPECT_EQ(Set(*b, "k", 100), Res(100, 100, 10, 0, true)) << "a's soi is still pending";
  EXPECT_EQ(Get(*a, "k").now(), CI(107, 7));
  EXPECT_EQ(Get(*b, "k").now(), CI(107, 100));

  LaxInc(*a, "j", 5);
  BatchOut s = Batch(*a, {Op(SetReq("j", 20, kGt, 0))});
  ASSERT_EQ(s.results.size(), 1u);
  EXPECT_EQ(s.results[0], Res(20, 20, 5, 5, true));
  EXPECT_EQ(Get(*a, "j").now(), CI(20, 20));
  EXPECT_EQ(Get(*b, "j").now(), CI(20, 0));

  // With flushes every 20 ms, many of these reads run while a flush is in flight.
  auto f = Make();
  for (int i = 1; i <= 300; ++i) {
    ASSERT_EQ(LaxInc(*f, "m", 1).now(), CI(i, i));
    ASSERT_EQ(LaxGet(*f, "m").now(), CI(i, i));
  }
  EXPECT_EQ(Get(*f, "m").now(), CI(300, 300));
  EXPECT_EQ(Get(*b, "m").now(), CI(300, 0));
}

// ============================================================================================
// Recovery (docs/api.md#dead-instances, scenarios 68-72, defect 5). A daemon is "declared dead" by
// setting its heartbeat score to 0. Its next heartbeat finds out and it re-registers; meanwhile
// a reaper (another daemon's, or its own) may already have removed its slices and its id. With
// recovery, it writes back every slice it held for keys whose epoch did not change. Either order
// must give the results below; after the expected state is reached, it must hold for more than
// two heartbeat and reaper periods (a late reap of the old registration, or a daemon that keeps
// being declared dead, would show there).
// The original's intermediate reads ("c2 get -> 0" while c1 is dead) are not asserted here: an
// in-process daemon keeps heartbeating, so that window is not observable reliably; the e2e test
// (tests/e2e/instance_e2e_test.cc) observes it with SIGSTOP.
// ============================================================================================

// Heartbeat and reaper every second: an operation right after the declaration usually runs
// before the dead daemon notices.
constexpr int64_t kRecoveryThreshold = 3000;
constexpr auto kHold = 2500ms;

class InstanceCounterRecoveryTest : public ICounterTestBase {
 protected:
  void DeclareDead(Daemon& d) {
    dead_incarnation_ = d.icounters().incarnation();
    redis_->Command({"ZADD", kInstances, "0", d.id()});
  }
  // Waits until `d` noticed and registered again (a heartbeat of a registered daemon never
  // writes over a score this old: a fresh score means a new registration), and until the
  // incarnation declared dead is reaped completely (its key sets are removed only after every
  // reap script of its keys has run). Before that, a read may see a slice of the dead
  // incarnation that a reaper then removes, and a restore then writes back: the expected value,
  // then 0, then the expected value again. After it, a slice of the dead incarnation no longer
  // exists, a restored one carries the new incarnation, and reaps of the old one are no-ops.
  void WaitReRegistered(Daemon& d) {
    ASSERT_TRUE(PollUntil(
        [&] {
          const std::string score = redis_->Command({"ZSCORE", kInstances, d.id()});
          return score != "(nil)" && score != "0";
        },
        kConverge))
        << "never registered again";
    if (dead_incarnation_ == 0) return;
    const std::string set =
        "dk:{I:" + d.id() + ":" + std::to_string(dead_incarnation_) + "}:namespaces";
    ASSERT_TRUE(PollUntil(
        [&] {
          return redis_->Command({"EXISTS", set}) == "0";
        },
        kConverge))
        << "incarnation " << dead_incarnation_ << " was never reaped";
    dead_incarnation_ = 0;
  }
  int64_t dead_incarnation_ = 0;
  // Asserts that `read` returns `want` for kHold.
  template <typename F>
  void Holds(F read, CI want) {
    const auto until = std::chrono::steady_clock::now() + kHold;
    while (std::chrono::steady_clock::now() < until) {
      const CI got = read();
      ASSERT_EQ(got, want);
      std::this_thread::sleep_for(50ms);
    }
  }
};

// 68: c1 inc 20; declared dead; c1 inc 5 -> 25; c1 get (25, 25).
TEST_F(InstanceCounterRecoveryTest, Scenario68RecoveryByInc) {
  auto c1 = Make(kRecoveryThreshold);
  auto c2 = Make(kRecoveryThreshold);
  Inc(*c1, "k", 20);
  DeclareDead(*c1);
  WaitReRegistered(*c1);
  EXPECT_EQ(PollFor([&] { return Get(*c2, "k").now(); }, CI(20, 0)), CI(20, 0));
  Holds([&] { return Get(*c2, "k").now(); }, CI(20, 0));
  EXPECT_EQ(Inc(*c1, "k", 5), Res(25, 25, 20, 20, true));
  EXPECT_EQ(Get(*c1, "k").now(), CI(25, 25));
  EXPECT_EQ(Get(*c2, "k").now(), CI(25, 0));
}

// 69: c1 inc 30; declared dead; c1 get -> (30, 30).
TEST_F(InstanceCounterRecoveryTest, Scenario69RecoveryByGet) {
  auto c1 = Make(kRecoveryThreshold);
  auto c2 = Make(kRecoveryThreshold);
  Inc(*c1, "k", 30);
  DeclareDead(*c1);
  WaitReRegistered(*c1);
  EXPECT_EQ(PollFor([&] { return Get(*c1, "k").now(); }, CI(30, 30)), CI(30, 30));
  Holds([&] { return Get(*c1, "k").now(); }, CI(30, 30));
  EXPECT_EQ(Get(*c2, "k").now(), CI(30, 0));
  EXPECT_EQ(LaxGet(*c1, "k").now(), CI(30, 30));
}

// 70: no recovery after an epoch bump: c1 20; declared dead; c2 set 100; c1 inc 5 -> 105,
// slice 5.
TEST_F(InstanceCounterRecoveryTest, Scenario70NoRecoveryAfterAnEpochBump) {
  auto c1 = Make(kRecoveryThreshold);
  auto c2 = Make(kRecoveryThreshold);
  Inc(*c1, "k", 20);
  DeclareDead(*c1);
  EXPECT_EQ(Set(*c2, "k", 100).now(), CI(100, 100));
  WaitReRegistered(*c1);
  Holds([&] { return Get(*c2, "k").now(); }, CI(100, 100));
  EXPECT_EQ(Inc(*c1, "k", 5), Res(105, 5, 100, 0, true));
  Holds([&] { return Get(*c2, "k").now(); }, CI(105, 100));
  EXPECT_EQ(Get(*c1, "k").now(), CI(105, 5));
}

// 71: recovery by the heartbeat alone (c1 makes no call): c2 sees c1's 20 again; on a key c2
// set meanwhile, c1's old slice stays out.
TEST_F(InstanceCounterRecoveryTest, Scenario71RecoveryByTheHeartbeatAlone) {
  auto c1 = Make(kRecoveryThreshold);
  auto c2 = Make(kRecoveryThreshold);
  Inc(*c1, "k", 20);
  Inc(*c1, "s", 20);
  DeclareDead(*c1);
  EXPECT_EQ(Set(*c2, "s", 100).now(), CI(100, 100));
  WaitReRegistered(*c1);
  EXPECT_EQ(PollFor([&] { return Get(*c2, "k").now(); }, CI(20, 0)), CI(20, 0));
  Holds([&] { return Get(*c2, "k").now(); }, CI(20, 0));
  EXPECT_EQ(Get(*c2, "s").now(), CI(100, 100));
  EXPECT_EQ(Get(*c1, "k").now(), CI(20, 20));
  EXPECT_EQ(Get(*c1, "s").now(), CI(100, 0));
}

// 72: no spurious recovery while alive: c1 inc 20, inc 5 -> c2 get (25, 0); c1 slice 25, and
// it stays so over many heartbeats. (Needs no recovery.)
TEST_F(InstanceCounterRecoveryTest, Scenario72NoSpuriousRecoveryWhileAlive) {
  auto c1 = Make(1000);
  auto c2 = Make(1000);
  const int64_t inc = c1->icounters().incarnation();
  Inc(*c1, "k", 20);
  EXPECT_EQ(Inc(*c1, "k", 5).now(), CI(25, 25));
  EXPECT_EQ(Get(*c2, "k").now(), CI(25, 0));
  EXPECT_EQ(Get(*c1, "k").now(), CI(25, 25));
  Holds([&] { return Get(*c2, "k").now(); }, CI(25, 0));
  EXPECT_EQ(Get(*c1, "k").now(), CI(25, 25));
  EXPECT_EQ(c1->icounters().incarnation(), inc);
}

// 72 after a real recovery: the restore is an assignment, counted once, and it stays so.
TEST_F(InstanceCounterRecoveryTest, Scenario72RestoredSliceIsCountedOnce) {
  auto c1 = Make(kRecoveryThreshold);
  auto c2 = Make(kRecoveryThreshold);
  Inc(*c1, "k", 20);
  Inc(*c1, "k", 5);
  Inc(*c2, "k", 1);
  DeclareDead(*c1);
  WaitReRegistered(*c1);
  EXPECT_EQ(PollFor([&] { return Get(*c2, "k").now(); }, CI(26, 1)), CI(26, 1));
  Holds([&] { return Get(*c2, "k").now(); }, CI(26, 1));
  EXPECT_EQ(Get(*c1, "k").now(), CI(26, 25));
}

// Original: only the key of the first call after the reaping is recovered, and negative
// slices never are: with c1 k1 20, k2 7, k3 -3 and c2 k1 5, k2 1, k3 10, it ends with
// k2 -> 1 (expected 8) and k3 -> 10 (expected 7). Ours: all three come back, 25, 8, 7.
TEST_F(InstanceCounterRecoveryTest, Defect5AllSlicesNegativeOnesTooComeBack) {
  auto c1 = Make(kRecoveryThreshold);
  auto c2 = Make(kRecoveryThreshold);
  Inc(*c1, "k1", 20);
  Inc(*c1, "k2", 7);
  Inc(*c1, "k3", -3);
  Inc(*c2, "k1", 5);
  Inc(*c2, "k2", 1);
  Inc(*c2, "k3", 10);
  DeclareDead(*c1);
  WaitReRegistered(*c1);
  auto sums = [&] {
    return CI(Get(*c2, "k1").cum * 1000000 + Get(*c2, "k2").cum * 1000 + Get(*c2, "k3").cum, 0);
  };
  const CI want(25 * 1000000 + 8 * 1000 + 7, 0);
  EXPECT_EQ(PollFor(sums, want), want);
  Holds(sums, want);
  EXPECT_EQ(Get(*c2, "k1").now(), CI(25, 5));
  EXPECT_EQ(Get(*c2, "k2").now(), CI(8, 1));
  EXPECT_EQ(Get(*c2, "k3").now(), CI(7, 10));
  EXPECT_EQ(Get(*c1, "k1").now(), CI(25, 20));
  EXPECT_EQ(Get(*c1, "k2").now(), CI(8, 7));
  EXPECT_EQ(Get(*c1, "k3").now(), CI(7, -3));
}

// Defect 4 with recovery: a Clear while the daemon is declared dead is not undone by its
// recovery (the epoch moved), also not by later heartbeats.
TEST_F(InstanceCounterRecoveryTest, Defect4ClearWhileDeadIsNotUndoneByRecovery) {
  auto c1 = Make(kRecoveryThreshold);
  auto c2 = Make(kRecoveryThreshold);
  Inc(*c1, "k", 5);
  Inc(*c2, "k", 1);
  DeclareDead(*c1);
  ASSERT_EQ(Clear(*c2), kOk);
  WaitReRegistered(*c1);
  Holds([&] { return Get(*c2, "k").now(); }, CI(0, 0));
  EXPECT_EQ(Get(*c1, "k").now(), CI(0, 0));
  EXPECT_EQ(Inc(*c1, "k", 2), Res(2, 2, 0, 0, true));
  Holds([&] { return Get(*c2, "k").now(); }, CI(2, 0));
}

// After a recovery, the restored slices are listed in the key sets of the new registration:
// when the daemon is then killed, the reapers remove them again.
TEST_F(InstanceCounterRecoveryTest, RestoredSlicesAreReapedWhenTheDaemonDiesLater) {
  auto c1 = Make(kRecoveryThreshold);
  auto c2 = Make(kRecoveryThreshold);
  Inc(*c1, "k", 20);
  Inc(*c1, "n", -4);
  Inc(*c2, "k", 1);
  DeclareDead(*c1);
  WaitReRegistered(*c1);
  auto both = [&] { return CI(Get(*c2, "k").cum, Get(*c2, "n").cum); };
  EXPECT_EQ(PollFor(both, CI(21, -4)), CI(21, -4));
  Holds(both, CI(21, -4));
  const std::string id = c1->id();
  Kill(c1);
  EXPECT_EQ(PollFor(both, CI(1, 0)), CI(1, 0));
  ASSERT_TRUE(WaitUnregistered(id));
  EXPECT_EQ(Get(*c2, "k").now(), CI(1, 1));
  EXPECT_EQ(Get(*c2, "n").now(), CI(0, 0));
}

// The id of a daemon declared dead is removed completely (slices, key sets, its entries in
// dk:{live}:instances and dk:{live}:incarnations) before the daemon notices, as after any pause
// longer than the threshold plus a reaper period. Then it comes back and must get its slices
// back and keep them, and its later writes must be reapable.
//
// Regression: liveness.lua `remove` HDELs the id's incarnation counter. Before register took
// the caller's last incarnation as a floor, the next `register` got incarnation 1 again - the
// number the daemon already had; its own reaper then reaped that "old" incarnation, i.e. the
// daemon's fresh slices, and removed the live id, every heartbeat: the slices flapped in and out
// of the cumulative for good. (Also without a foreign reaper: a daemon's own reaper lists its own
// stale id as dead.)
TEST_F(InstanceCounterRecoveryTest, RecoveryAfterTheIdWasFullyReaped) {
  auto c1 = Make(kRecoveryThreshold);
  auto c2 = Make(kRecoveryThreshold);
  Inc(*c1, "k", 20);
  Inc(*c1, "m", 5);
  EXPECT_EQ(DelOi(*c1, "m").now(), CI(0, 0));  // a key c1 wrote, with no slice now
  Inc(*c2, "k", 1);
  // Declared dead and reaped by c2 before c1's next heartbeat (one per second; retried if the
  // heartbeat won the race).
  bool removed = false;
  for (int attempt = 0; attempt < 3 && !removed; ++attempt) {
    WaitReRegistered(*c1);
    DeclareDead(*c1);
    ASSERT_TRUE(c2->icounters().ReapOnce(5s).ok());
    removed = !Registered(c1->id());
  }
  ASSERT_TRUE(removed);
  EXPECT_EQ(redis_->Command({"HGET", kIncarnations, c1->id()}), "(nil)");
  EXPECT_EQ(Get(*c2, "k").now(), CI(1, 1));
  WaitReRegistered(*c1);
  EXPECT_EQ(PollFor([&] { return Get(*c2, "k").now(); }, CI(21, 1)), CI(21, 1));
  Holds([&] { return Get(*c2, "k").now(); }, CI(21, 1));
  EXPECT_TRUE(Registered(c1->id()));
  EXPECT_EQ(Inc(*c1, "m", 3).now(), CI(3, 3));
  Holds([&] { return Get(*c2, "m").now(); }, CI(3, 0));
  const std::string id = c1->id();
  Kill(c1);
  auto both = [&] { return CI(Get(*c2, "k").cum, Get(*c2, "m").cum); };
  EXPECT_EQ(PollFor(both, CI(1, 0)), CI(1, 0)) << "c1's slices are reaped after it dies";
  EXPECT_TRUE(WaitUnregistered(id));
}

}  // namespace
}  // namespace distkit
