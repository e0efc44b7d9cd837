// The client-side LAX aggregator (distkit/lax_aggregator.h) against the real distkitd and Redis:
// app threads count every increment through it while the daemon's Redis is paused (pushes that
// hold a key new to the daemon wait for its read and outlive their deadline: the daemon applies
// them, the answer is lost, the aggregator resends with the same seq and the daemon recognises
// it; without the daemon's PushDedup these tests count double) or the daemon itself is paused
// (SIGSTOP: pushes time out, nothing may be lost); after the aggregator's last flush, Redis holds
// exactly the sum of the increments.

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon/core/redis_keys.h"
#include "distkit/client.h"
#include "distkit/lax_aggregator.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::Daemon;
using testing::PollUntil;
using testing::RedisServer;

constexpr int kKeys = 16;

std::string Key(int i) { return "agg" + std::to_string(i); }

std::unique_ptr<Client> Connect(const Daemon& d) {
  ClientOptions options;
  options.address = d.addr();
  options.deadline = 200ms;  // short: a paused daemon loses the answers of pushes in flight
  auto client = Client::Create(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return *std::move(client);
}

// App threads incrementing through `agg` until stopped; `counted` is what they were told OK.
class Writers {
 public:
  Writers(LaxAggregator* agg, int threads) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, agg, t] {
        for (int i = 0; !stop_.load(); ++i) {
          const int64_t delta = 1 + (i % 3);
          if (agg->Inc(Key((i + t) % kKeys), delta).ok()) counted_ += delta;
          // Leave the 2-core machine's CPU to the daemon and Redis as an app would.
          if (i % 64 == 0) std::this_thread::sleep_for(200us);
        }
      });
    }
  }
  ~Writers() { Stop(); }
  int64_t Stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    return counted_.load();
  }
  int64_t counted() const { return counted_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> counted_{0};
  std::vector<std::thread> threads_;
};

// One more app thread with a new key every millisecond: keys the daemon has not seen, so a push
// holding one waits for the daemon's read of it from Redis.
class FreshKeys {
 public:
  explicit FreshKeys(LaxAggregator* agg)
      : thread_([this, agg] {
          for (int i = 0; !stop_.load(); ++i) {
            if (agg->Inc("fresh" + std::to_string(i), 1).ok()) ++counted_;
            keys_ = i + 1;
            std::this_thread::sleep_for(1ms);
          }
        }) {}
  ~FreshKeys() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int keys() const { return keys_.load(); }
  int64_t counted() const { return counted_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> keys_{0};
  std::atomic<int64_t> counted_{0};
  std::thread thread_;
};

// The sum over `keys` keys named `prefix`<i> of hash field `field` of `key_of`(ns, name).
int64_t RedisSum(const RedisServer& redis, const std::string& prefix, int keys,
                 std::string (*key_of)(std::string_view, std::string_view), const char* field) {
  int64_t sum = 0;
  for (int k = 0; k < keys; ++k) {
    const std::string v =
        redis.Command({"HGET", key_of("distkit", prefix + std::to_string(k)), field});
    if (v != "(nil)") sum += std::stoll(v);
  }
  return sum;
}

int64_t RedisSum(const RedisServer& redis) {
  return RedisSum(redis, "agg", kKeys, core::PlainCounterKey, "v");
}

void PauseRedis(RedisServer& redis, int sig) {
  if (sig == SIGSTOP) {
    redis.Pause();
  } else {
    redis.Resume();
  }
}

// Pauses a process until a push of `agg` failed (its answer lost), then resumes it and waits
// until a push succeeded again.
void PauseUntilAPushFails(const std::function<void(int)>& signal, std::atomic<int>* failures,
                          LaxAggregator* agg) {
  const int before = failures->load();
  signal(SIGSTOP);
  const bool failed = PollUntil([&] { return failures->load() > before; }, 20s);
  signal(SIGCONT);
  EXPECT_TRUE(failed);
  EXPECT_TRUE(PollUntil([&] { return agg->last_status().ok(); }, 30s)) << agg->last_status();
}

// The aggregator options of every scenario: a long last flush, push failures counted.
LaxAggregatorOptions Counting(std::atomic<int>* failures) {
  LaxAggregatorOptions options;
  options.shutdown_timeout = 30s;
  options.on_error = [failures](const absl::Status&) { ++*failures; };
  return options;
}

// What the app threads of a scenario were told OK.
struct Counted {
  int64_t writers = 0;
  int64_t fresh = 0;
  int fresh_keys = 0;
};

// `threads` app threads (Writers) and a thread of new keys (FreshKeys) count through `agg` until
// `warmup` increments are in; Redis is paused until a push fails, then resumed; the threads stop
// and `agg` flushes.
void CountWhileRedisIsPaused(LaxAggregator& agg, RedisServer& redis, std::atomic<int>* failures,
                             int threads, int64_t warmup, Counted* out) {
  Writers writers(&agg, threads);
  FreshKeys fresh(&agg);
  ASSERT_TRUE(PollUntil([&] { return writers.counted() > warmup; }, 20s));
  PauseUntilAPushFails([&](int sig) { PauseRedis(redis, sig); }, failures, &agg);
  fresh.Stop();
  out->fresh = fresh.counted();
  out->fresh_keys = fresh.keys();
  out->writers = writers.Stop();
  ASSERT_TRUE(agg.Flush().ok()) << agg.last_status();
}

TEST(LaxAggregatorE2ETest, ExactlyOnceWhileTheDaemonIsPausedAndResumed) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  Daemon d(*redis, "d");
  ASSERT_TRUE(d.WaitServing());
  auto client = Connect(d);
  std::atomic<int> failures{0};
  int64_t counted = 0;
  {
    LaxAggregator agg(client.get(), Counting(&failures));
    Writers writers(&agg, 4);
    ASSERT_TRUE(PollUntil([&] { return writers.counted() > 10'000; }, 20s));
    for (int round = 0; round < 3; ++round) {
      PauseUntilAPushFails([&](int sig) { d.process().Signal(sig); }, &failures, &agg);
    }
    counted = writers.Stop();
    ASSERT_TRUE(agg.Flush().ok()) << agg.last_status();
    EXPECT_EQ(agg.Get(Key(0)).ok(), true);
  }
  EXPECT_GE(failures.load(), 3);
  EXPECT_EQ(d.Stop(SIGTERM, 20s), 0) << d.Log();
  EXPECT_EQ(RedisSum(*redis), counted);
}

// The app-shaped check of issue #12: every increment counted through the aggregator while the
// daemon's Redis is paused (the test's own redis-server PID) and resumed; new keys keep coming,
// so the daemon must read Redis for some of them and pushes fail until it returns.
TEST(LaxAggregatorE2ETest, CountsEveryIncrementWhileRedisIsPausedAndResumed) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  Daemon d(*redis, "d", {"--redis_timeout_ms", "300"});
  ASSERT_TRUE(d.WaitServing());
  auto client = Connect(d);
  std::atomic<int> failures{0};
  Counted counted;
  {
    LaxAggregator agg(client.get(), Counting(&failures));
    ASSERT_NO_FATAL_FAILURE(CountWhileRedisIsPaused(agg, *redis, &failures, 4, 10'000, &counted));
  }
  EXPECT_EQ(d.Stop(SIGTERM, 20s), 0) << d.Log();
  EXPECT_EQ(RedisSum(*redis), counted.writers);
  EXPECT_EQ(RedisSum(*redis, "fresh", counted.fresh_keys, core::PlainCounterKey, "v"),
            counted.fresh);
}

TEST(LaxAggregatorE2ETest, InstanceAwareCountsEveryIncrementOnceWhileRedisIsPaused) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  Daemon d(*redis, "d", {"--redis_timeout_ms", "300"});
  ASSERT_TRUE(d.WaitServing("distkit.v1.InstanceCounterService"));
  auto client = Connect(d);
  std::atomic<int> failures{0};
  Counted counted;
  {
    LaxAggregator agg(InstanceCounterTransport(client.get()), Counting(&failures));
    ASSERT_NO_FATAL_FAILURE(CountWhileRedisIsPaused(agg, *redis, &failures, 2, 5'000, &counted));
    auto read = agg.Get(Key(0));
    ASSERT_TRUE(read.ok()) << read.status();
  }
  // The daemon flushes its LAX slices every 20 ms: the cumulatives in Redis reach the counts
  // (the daemon still runs: a graceful stop deregisters its slices).
  int64_t sum = 0, fresh_sum = 0;
  EXPECT_TRUE(PollUntil(
      [&] {
        sum = RedisSum(*redis, "agg", kKeys, core::InstanceCounterKey, "c");
        fresh_sum = RedisSum(*redis, "fresh", counted.fresh_keys, core::InstanceCounterKey, "c");
        return sum == counted.writers && fresh_sum == counted.fresh;
      },
      20s))
      << sum << " != " << counted.writers << " or " << fresh_sum << " != " << counted.fresh;
}

}  // namespace
}  // namespace distkit
