#include "daemon/common/periodic_task.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>

#include "absl/time/clock.h"
#include "daemon/common/wait_until.h"

namespace distkit {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::chrono::steady_clock::time_point In(std::chrono::milliseconds d) {
  return std::chrono::steady_clock::now() + d;
}

TEST(PeriodicTaskTest, RunsRepeatedlyUntilStopped) {
  std::atomic<int> runs{0};
  PeriodicTask task(milliseconds(1), [&] { runs++; });
  task.Start();
  EXPECT_TRUE(WaitUntil([&] { return runs.load() >= 3; }, In(seconds(30))));
  task.Stop();
  const int after_stop = runs.load();
  EXPECT_FALSE(WaitUntil([&] { return runs.load() != after_stop; }, In(milliseconds(20))));
}

TEST(PeriodicTaskTest, StopEndsALongWait) {
  std::atomic<int> runs{0};
  PeriodicTask task(hours(1), [&] { runs++; });
  task.Start();
  task.Stop();  // returns although the next run is an hour away
  task.Stop();  // idempotent
  EXPECT_EQ(runs.load(), 0);
}

TEST(PeriodicTaskTest, DestructorStops) {
  std::atomic<int> runs{0};
  {
    PeriodicTask task(hours(1), [&] { runs++; });
    task.Start();
  }
  EXPECT_EQ(runs.load(), 0);
}

TEST(PeriodicTaskTest, WakeRunsAtOnce) {
  std::atomic<int> runs{0};
  PeriodicTask task(hours(1), [&] { runs++; });
  task.Start();
  task.Wake();
  EXPECT_TRUE(WaitUntil([&] { return runs.load() == 1; }, In(seconds(30))));
  task.Wake();
  EXPECT_TRUE(WaitUntil([&] { return runs.load() == 2; }, In(seconds(30))));
  task.Stop();
  EXPECT_EQ(runs.load(), 2);
}

TEST(PeriodicTaskTest, WakeBeforeStartRunsAtStart) {
  std::atomic<int> runs{0};
  PeriodicTask task(hours(1), [&] { runs++; });
  task.Wake();
  EXPECT_EQ(runs.load(), 0);
  task.Start();
  EXPECT_TRUE(WaitUntil([&] { return runs.load() == 1; }, In(seconds(30))));
}

TEST(PeriodicTaskTest, WakeDuringARunRunsOnceMore) {
  std::atomic<int> runs{0};
  std::atomic<bool> release{false};
  PeriodicTask task(hours(1), [&] {
    runs++;
    WaitUntil([&] { return release.load(); }, In(seconds(30)));
  });
  task.Start();
  task.Wake();
  ASSERT_TRUE(WaitUntil([&] { return runs.load() == 1; }, In(seconds(30))));
  task.Wake();  // while running: coalesced into one more run
  task.Wake();
  release = true;
  EXPECT_TRUE(WaitUntil([&] { return runs.load() == 2; }, In(seconds(30))));
  task.Stop();
  EXPECT_EQ(runs.load(), 2);
}

TEST(PeriodicTaskTest, StopWaitsForARunningRun) {
  std::atomic<bool> started{false}, finished{false};
  PeriodicTask task(hours(1), [&] {
    started = true;
    absl::SleepFor(absl::Milliseconds(50));
    finished = true;
  });
  task.Start();
  task.Wake();
  ASSERT_TRUE(WaitUntil([&] { return started.load(); }, In(seconds(30))));
  task.Stop();
  EXPECT_TRUE(finished.load());
}

TEST(PeriodicTaskTest, NothingRunsAfterStopOrWithoutStart) {
  std::atomic<int> runs{0};
  PeriodicTask never_started(milliseconds(1), [&] { runs++; });
  PeriodicTask stopped(milliseconds(1), [&] { runs++; });
  stopped.Stop();
  stopped.Start();  // after Stop: does nothing
  stopped.Wake();
  never_started.Wake();
  EXPECT_FALSE(WaitUntil([&] { return runs.load() > 0; }, In(milliseconds(20))));
}

TEST(WaitUntilTest, TrueWhenThePredicateHolds) {
  int calls = 0;
  EXPECT_TRUE(WaitUntil([&] { return ++calls == 3; }, In(seconds(30))));
  EXPECT_EQ(calls, 3);
}

TEST(WaitUntilTest, FalseAtTheDeadline) {
  EXPECT_FALSE(WaitUntil([] { return false; }, In(milliseconds(5))));
  EXPECT_FALSE(WaitUntil([] { return false; }, std::chrono::steady_clock::now()));
}

TEST(RetryUntilTest, SendsUntilSettledWaitingForIdleBetweenTries) {
  int sends = 0, idle_checks = 0;
  EXPECT_TRUE(RetryUntil([&] { ++sends; },
                         [&] {
                           ++idle_checks;
                           return true;
                         },
                         [&] { return sends == 3; }, In(seconds(30)), milliseconds(1)));
  EXPECT_EQ(sends, 3);
  EXPECT_GE(idle_checks, 3);
}

TEST(RetryUntilTest, FalseAtTheDeadlineAndNothingAfterAPassedOne) {
  int sends = 0;
  EXPECT_FALSE(RetryUntil([&] { ++sends; }, [] { return true; }, [] { return false; },
                          In(milliseconds(30)), milliseconds(1)));
  EXPECT_GE(sends, 1);
  const int before = sends;
  EXPECT_FALSE(RetryUntil([&] { ++sends; }, [] { return true; }, [] { return true; },
                          std::chrono::steady_clock::now() - seconds(1)));
  EXPECT_EQ(sends, before);
}

}  // namespace
}  // namespace distkit
