// core::InstanceCounters against a real redis-server, without gRPC: the LAX memory path and its
// exactly-once flush, recovery after this daemon was declared dead (including writes made
// after a reaper removed its slices and before it noticed), and the reaper: concurrent reapers,
// a reaper that crashed mid-way, 100 000 keys of one dead instance. Each "daemon" is the daemon's
// App without a gRPC server, with its own instance id; background threads run with long periods
// so the tests drive flushes, heartbeats and reaper passes themselves (FlushNow, BeatOnce,
// ReapOnce).

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <atomic>
#include <future>
#include <iostream>
#include <thread>

#include "daemon/app.h"
#include "daemon/config/config.h"
#include "daemon/redis/redis_url.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using core::Condition;
using core::Consistency;
using core::InstanceResult;
using testing::PollUntil;
using testing::RedisServer;

class Node {
 public:
  Node(const RedisServer& redis, std::chrono::milliseconds command_timeout = 2000ms,
       int64_t max_lax_keys = 1000000) {
    config::Config config;
    config.max_lax_keys = max_lax_keys;
    config.listen = {};  // core only
    config.redis_seeds = {*redis::ParseRedisUrl(redis.url())};
    config.redis_timeout_ms = command_timeout.count();
    config.dead_instance_threshold_ms = 3'600'000;  // heartbeats and reaper passes: by hand
    config.flush_interval_ms = 3'600'000;           // flushes: by hand
    config.allowed_lag_ms = 3'600'000;              // LAX reads: from memory once known
    auto app = App::Create(config);
    EXPECT_TRUE(app.ok()) << app.status();
    app_ = *std::move(app);
    EXPECT_TRUE(PollUntil([&] { return app_->executor().Healthy(); }, 10s));
    ic_ = &app_->instance_counters();
  }
  ~Node() { app_->Abandon(); }
  core::InstanceCounters& ic() { return *ic_; }

  absl::StatusOr<InstanceResult> Inc(const std::string& key, int64_t d, Consistency c) {
    return Wait(
        [&](core::InstanceCallback cb) { ic_->Inc("ns", key, d, c, Condition{}, std::move(cb)); });
  }
  absl::StatusOr<InstanceResult> Get(const std::string& key, Consistency c) {
    return Wait([&](core::InstanceCallback cb) { ic_->Get("ns", key, c, std::move(cb)); });
  }
  absl::StatusOr<InstanceResult> Soi(const std::string& key, int64_t v, Consistency c) {
    return Wait([&](core::InstanceCallback cb) {
      ic_->SetOnInstance("ns", key, v, c, Condition{}, std::move(cb));
    });
  }
  absl::StatusOr<InstanceResult> Set(const std::string& key, int64_t v) {
    return Wait(
        [&](core::InstanceCallback cb) { ic_->Set("ns", key, v, Condition{}, std::move(cb)); });
  }
  // Flushes and waits until nothing is pending.
  bool Flush() {
    return PollUntil(
        [&] {
          ic_->FlushNow();
          return ic_->stats().dirty_keys.load() == 0;
        },
        10s);
  }

 private:
  template <typename F>
  absl::StatusOr<InstanceResult> Wait(F start) {
    auto p = std::make_shared<std::promise<absl::StatusOr<InstanceResult>>>();
    auto f = p->get_future();
    start([p](absl::StatusOr<InstanceResult> r) { p->set_value(std::move(r)); });
    if (f.wait_for(10s) != std::future_status::ready) {
      return absl::DeadlineExceededError("no answer in 10 s");
    }
    return f.get();
  }

  std::unique_ptr<App> app_;
  core::InstanceCounters* ic_ = nullptr;
};

// EVALSHA/EVAL calls Redis has run so far.
int64_t ScriptCalls(const RedisServer& redis) {
  const std::string info = redis.Command({"INFO", "commandstats"});
  int64_t total = 0;
  for (const char* name : {"cmdstat_evalsha:calls=", "cmdstat_eval:calls="}) {
    const size_t at = info.find(name);
    if (at != std::string::npos) total += std::stoll(info.substr(at + std::strlen(name)));
  }
  return total;
}

class InstanceLaxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_TRUE(redis_);
  }
  // Makes `n` look dead to everyone (as if paused past the threshold).
  void DeclareDead(Node& n) {
    redis_->Command({"ZADD", "dk:{live}:instances", "0", n.ic().instance_id()});
  }
  std::unique_ptr<RedisServer> redis_;
};

TEST_F(InstanceLaxTest, LaxIncIsAnsweredFromMemoryAndFlushedOnce) {
  Node a(*redis_), b(*redis_);
  ASSERT_EQ(b.Inc("k", 100, Consistency::kStrict)->cumulative, 100);
  // The first LAX touch reads the key once.
  auto first = a.Inc("k", 1, Consistency::kLax);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->cumulative, 101);
  EXPECT_EQ(first->instance, 1);
  const int64_t calls = ScriptCalls(*redis_);
  for (int i = 0; i < 999; ++i) {
    auto r = a.ic().TryLaxInc("ns", "k", 1, Condition{});
    ASSERT_TRUE(r.has_value());
    ASSERT_TRUE(r->ok());
  }
  auto got = a.Get("k", Consistency::kLax);
  EXPECT_EQ(got->cumulative, 1100);
  EXPECT_EQ(got->instance, 1000);
  EXPECT_EQ(ScriptCalls(*redis_), calls) << "LAX work must not reach Redis before a flush";
  // Not yet visible to others.
  EXPECT_EQ(b.Get("k", Consistency::kStrict)->cumulative, 100);
  ASSERT_TRUE(a.Flush());
  EXPECT_EQ(ScriptCalls(*redis_), calls + 1 + 1) << "one flush script (+ b's Get)";
  auto seen = b.Get("k", Consistency::kStrict);
  EXPECT_EQ(seen->cumulative, 1100);
  EXPECT_EQ(seen->instance, 100);
  EXPECT_TRUE(seen->applied) << "applied is false only when a condition failed";
  EXPECT_TRUE(got->applied);
}

// Issue #11 finding 5: at most --max_lax_keys keys in memory; a LAX call on a new key beyond it
// is RESOURCE_EXHAUSTED naming the flag, known keys keep working.
TEST_F(InstanceLaxTest, LaxKeyCapRefusesNewKeysOnly) {
  Node a(*redis_, 2000ms, 3);
  for (const char* key : {"k1", "k2", "k3"}) {
    ASSERT_TRUE(a.Inc(key, 1, Consistency::kLax).ok()) << key;
  }
  const auto over = a.Inc("k4", 1, Consistency::kLax);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted) << over.status();
  EXPECT_NE(over.status().message().find("--max_lax_keys"), std::string::npos);
  EXPECT_EQ(a.Get("k4", Consistency::kLax).status().code(), absl::StatusCode::kResourceExhausted);
  const auto known = a.Inc("k1", 1, Consistency::kLax);
  ASSERT_TRUE(known.ok()) << known.status();
  EXPECT_EQ(known->instance, 2);
  EXPECT_TRUE(a.Flush());
}

TEST_F(InstanceLaxTest, StrictOpFoldsThePendingLaxWorkFirst) {
  Node a(*redis_);
  ASSERT_TRUE(a.Inc("k", 5, Consistency::kLax).ok());
  ASSERT_TRUE(a.Soi("k", 7, Consistency::kLax).ok());
  ASSERT_TRUE(a.Inc("k", 1, Consistency::kLax).ok());
  auto r = a.Inc("k", 10, Consistency::kStrict);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->previous_instance, 8);
  EXPECT_EQ(r->instance, 18);
  EXPECT_EQ(a.ic().stats().dirty_keys.load(), 0);
}

// Original defect 8 (docs/instance_counters.md): a pending LAX SetOnInstance is "slice := v" even
// after another daemon's Set moved the epoch (the original applied it as an increment: 97 / -3).
TEST_F(InstanceLaxTest, PendingSetOnInstanceAfterForeignSetIsAnAssignment) {
  Node a(*redis_), b(*redis_);
  ASSERT_TRUE(a.Inc("k", 10, Consistency::kStrict).ok());
  auto soi = a.Soi("k", 7, Consistency::kLax);
  ASSERT_TRUE(soi.ok());
  EXPECT_EQ(soi->instance, 7);
  ASSERT_EQ(b.Set("k", 100)->cumulative, 100);
  ASSERT_TRUE(a.Flush());
  auto r = b.Get("k", Consistency::kStrict);
  EXPECT_EQ(r->cumulative, 107);
  EXPECT_EQ(a.Get("k", Consistency::kStrict)->instance, 7);
}

// A flush whose reply is lost (Redis paused past the command deadline, the command still
// queued in Redis) is retried and counted once.
TEST_F(InstanceLaxTest, TimedOutFlushIsAppliedExactlyOnce) {
  Node a(*redis_, 300ms), b(*redis_);
  ASSERT_TRUE(a.Inc("k", 5, Consistency::kLax).ok());
  ASSERT_TRUE(a.ic().TryLaxInc("ns", "k", 5, Condition{}).has_value());
  redis_->Command({"CLIENT", "PAUSE", "1500", "ALL"});
  a.ic().FlushNow();  // times out; Redis runs it when the pause ends
  EXPECT_TRUE(PollUntil([&] { return a.ic().stats().flush_failures.load() >= 1; }, 5s));
  ASSERT_TRUE(a.Flush());
  auto r = b.Get("k", Consistency::kStrict);
  EXPECT_EQ(r->cumulative, 10);
  EXPECT_EQ(a.Get("k", Consistency::kStrict)->instance, 10);
}

// Recovery: declared dead and reaped, the daemon writes its slices back, negative ones and
// LAX ones included; a key whose epoch moved meanwhile is not restored.
TEST_F(InstanceLaxTest, RecoveryRestoresEverySliceWhoseEpochDidNotMove) {
  Node a(*redis_), b(*redis_);
  ASSERT_TRUE(a.Inc("pos", 8, Consistency::kStrict).ok());
  ASSERT_TRUE(a.Inc("neg", -3, Consistency::kLax).ok());
  ASSERT_TRUE(a.Inc("moved", 4, Consistency::kStrict).ok());
  ASSERT_TRUE(a.Flush());
  ASSERT_TRUE(b.Inc("pos", 1, Consistency::kStrict).ok());
  DeclareDead(a);
  ASSERT_TRUE(b.ic().ReapOnce(5s).ok());
  EXPECT_EQ(b.Get("pos", Consistency::kStrict)->cumulative, 1);
  EXPECT_EQ(b.Get("neg", Consistency::kStrict)->cumulative, 0);
  ASSERT_EQ(b.Set("moved", 50)->cumulative, 50);
  const int64_t inc = a.ic().incarnation();
  ASSERT_TRUE(a.ic().BeatOnce(2s).ok());
  EXPECT_EQ(a.ic().incarnation(), inc + 1);
  ASSERT_TRUE(a.ic().ReapOnce(5s).ok());  // runs the recovery
  EXPECT_EQ(a.ic().stats().restored_slices.load(), 2u);
  EXPECT_EQ(b.Get("pos", Consistency::kStrict)->cumulative, 9);
  EXPECT_EQ(b.Get("neg", Consistency::kStrict)->cumulative, -3);
  EXPECT_EQ(b.Get("moved", Consistency::kStrict)->cumulative, 50);
  auto moved = a.Inc("moved", 1, Consistency::kStrict);
  EXPECT_EQ(moved->cumulative, 51);
  EXPECT_EQ(moved->instance, 1);
  // The restored slices are in the new incarnation's key set: a later death reaps them.
  EXPECT_EQ(redis_->Command(
                {"SISMEMBER", core::InstanceKeySet(a.ic().instance_id(), inc + 1, "ns"), "neg"}),
            "1");
}

// Writes made after a reaper removed the slice and before the daemon noticed are not lost:
// recovery writes back the slice the daemon believes in (old value + the late writes).
TEST_F(InstanceLaxTest, WritesBetweenTheReapAndTheHeartbeatAreKept) {
  Node a(*redis_), b(*redis_);
  ASSERT_TRUE(a.Inc("k", 40, Consistency::kStrict).ok());
  ASSERT_TRUE(b.Inc("k", 60, Consistency::kStrict).ok());
  DeclareDead(a);
  ASSERT_TRUE(b.ic().ReapOnce(5s).ok());
  ASSERT_EQ(b.Get("k", Consistency::kStrict)->cumulative, 60);
  // `a` has not noticed yet: its write lands on the old incarnation, after the reap.
  auto late = a.Inc("k", 5, Consistency::kStrict);
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->cumulative, 65);  // what Redis holds now
  ASSERT_TRUE(a.Inc("k", 2, Consistency::kLax).ok());
  ASSERT_TRUE(a.Flush());
  ASSERT_TRUE(a.ic().BeatOnce(2s).ok());  // notices, re-registers
  ASSERT_TRUE(a.ic().ReapOnce(5s).ok());  // restores, reaps its own old incarnation
  ASSERT_TRUE(b.ic().ReapOnce(5s).ok());
  auto r = b.Get("k", Consistency::kStrict);
  EXPECT_EQ(r->cumulative, 107);
  EXPECT_EQ(a.Get("k", Consistency::kStrict)->instance, 47);
}

// An operation on a key due for restore waits for the restore (no lost slice even when the
// first thing after re-registration is a write).
TEST_F(InstanceLaxTest, FirstWriteAfterReRegistrationRestoresFirst) {
  Node a(*redis_), b(*redis_);
  ASSERT_TRUE(a.Inc("k", 40, Consistency::kStrict).ok());
  DeclareDead(a);
  ASSERT_TRUE(b.ic().ReapOnce(5s).ok());
  ASSERT_TRUE(a.ic().BeatOnce(2s).ok());
  // No ReapOnce on `a`: the write itself triggers the key's restore.
  auto r = a.Inc("k", 1, Consistency::kStrict);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->previous_instance, 40);
  EXPECT_EQ(r->instance, 41);
  EXPECT_EQ(b.Get("k", Consistency::kStrict)->cumulative, 41);
  auto lax = a.Inc("k", 1, Consistency::kLax);
  EXPECT_EQ(lax->instance, 42);
}

// ---------------------------------------------------------------- the reaper

// `count` STRICT incs of `delta` on keys prefix0..prefix<count-1>, at most 2000 in flight.
bool BulkInc(Node& n, int count, const std::string& prefix, int64_t delta) {
  auto outstanding = std::make_shared<std::atomic<int>>(0);
  auto failed = std::make_shared<std::atomic<int>>(0);
  for (int i = 0; i < count; ++i) {
    if (!PollUntil([&] { return outstanding->load() < 2000; }, 60s)) return false;
    ++*outstanding;
    n.ic().Inc("ns", prefix + std::to_string(i), delta, Consistency::kStrict, Condition{},
               [outstanding, failed](absl::StatusOr<InstanceResult> r) {
                 if (!r.ok()) ++*failed;
                 --*outstanding;
               });
  }
  return PollUntil([&] { return outstanding->load() == 0; }, 60s) && failed->load() == 0;
}

// HGET <counter hash> c for every key (pipelined); "(nil)" for an absent field.
std::vector<std::string> Cumulatives(const RedisServer& redis, int count,
                                     const std::string& prefix) {
  redisContext* ctx = redis.Connect();
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    const std::string key = core::InstanceCounterKey("ns", prefix + std::to_string(i));
    redisAppendCommand(ctx, "HGET %b c", key.data(), key.size());
  }
  for (int i = 0; i < count; ++i) {
    void* raw = nullptr;
    if (redisGetReply(ctx, &raw) != REDIS_OK) break;
    auto* r = static_cast<redisReply*>(raw);
    out.push_back(r->type == REDIS_REPLY_STRING ? std::string(r->str, r->len) : "(nil)");
    freeReplyObject(r);
  }
  redisFree(ctx);
  return out;
}

int CountNot(const std::vector<std::string>& values, const std::string& expected) {
  int n = 0;
  for (const auto& v : values) n += v != expected;
  return n;
}

// Two daemons reap the same dead instance at the same time: every slice leaves exactly once.
TEST_F(InstanceLaxTest, ConcurrentReapersRemoveEachSliceOnce) {
  constexpr int kKeys = 3000;
  Node dead(*redis_), b(*redis_), c(*redis_);
  ASSERT_TRUE(BulkInc(dead, kKeys, "k", 5));
  ASSERT_TRUE(BulkInc(b, kKeys, "k", 2));
  ASSERT_EQ(CountNot(Cumulatives(*redis_, kKeys, "k"), "7"), 0);
  DeclareDead(dead);
  dead.ic().StopWithoutDeregistering();
  absl::Status sb, sc;
  std::thread tb([&] { sb = b.ic().ReapOnce(60s); });
  std::thread tc([&] { sc = c.ic().ReapOnce(60s); });
  tb.join();
  tc.join();
  EXPECT_TRUE(sb.ok()) << sb;
  EXPECT_TRUE(sc.ok()) << sc;
  const auto values = Cumulatives(*redis_, kKeys, "k");
  ASSERT_EQ(values.size(), static_cast<size_t>(kKeys));
  EXPECT_EQ(CountNot(values, "2"), 0) << "first: " << values[0];
  EXPECT_EQ(b.ic().stats().reaped_slices.load() + c.ic().stats().reaped_slices.load(),
            static_cast<uint64_t>(kKeys));
  EXPECT_EQ(redis_->Command({"ZSCORE", "dk:{live}:instances", dead.ic().instance_id()}), "(nil)");
  EXPECT_EQ(redis_->Command({"KEYS", "dk:{I:" + dead.ic().instance_id() + ":*"}), "");
}

// A reaper that died after reaping some keys but before SREMing them: the next pass reaps the
// rest and subtracts nothing twice.
TEST_F(InstanceLaxTest, InterruptedReapResumesWithoutDoubleSubtraction) {
  constexpr int kKeys = 2500;
  Node dead(*redis_), b(*redis_);
  ASSERT_TRUE(BulkInc(dead, kKeys, "k", 5));
  ASSERT_TRUE(BulkInc(b, kKeys, "k", 2));
  DeclareDead(dead);
  dead.ic().StopWithoutDeregistering();
  // The crashed reaper's work: reap (no SREM) of the first 1200 keys.
  const std::string script = redis::EmbeddedScripts().at("icounter");
  const std::string inc = std::to_string(dead.ic().incarnation());
  for (int i = 0; i < 1200; ++i) {
    const std::string r = redis_->Command(
        {"EVAL", script, "1", core::InstanceCounterKey("ns", "k" + std::to_string(i)), "reaper",
         "1", "reaper-dedup", "0", "reap", "", "0", "0", dead.ic().instance_id(), inc});
    ASSERT_EQ(r.rfind("ok,", 0), 0u) << r;
  }
  ASSERT_EQ(redis_->Command({"SCARD", core::InstanceKeySet(dead.ic().instance_id(),
                                                           dead.ic().incarnation(), "ns")}),
            std::to_string(kKeys));
  ASSERT_TRUE(b.ic().ReapOnce(60s).ok());
  EXPECT_EQ(CountNot(Cumulatives(*redis_, kKeys, "k"), "2"), 0);
  EXPECT_EQ(b.ic().stats().reaped_slices.load(), static_cast<uint64_t>(kKeys - 1200));
  EXPECT_EQ(redis_->Command({"KEYS", "dk:{I:" + dead.ic().instance_id() + ":*"}), "");
}

// A dead instance with 100 000 keys (20 000 under the sanitizers) is cleaned up by one reaper
// pass in chunks of 1000 scripts; other daemons' calls keep being served meanwhile.
TEST_F(InstanceLaxTest, HundredThousandKeysOfADeadInstanceAreReaped) {
#if defined(__SANITIZE_ADDRESS__)
  constexpr int kKeys = 20000;
#else
  constexpr int kKeys = 100000;
#endif
  Node dead(*redis_), b(*redis_);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(BulkInc(dead, kKeys, "k", 3));
  const auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(b.Inc("k0", 1, Consistency::kStrict).ok());
  DeclareDead(dead);
  dead.ic().StopWithoutDeregistering();
  std::atomic<bool> reaping{true};
  std::atomic<int> served{0};
  std::thread other([&] {
    while (reaping.load()) {
      if (b.Inc("other", 1, Consistency::kStrict).ok()) ++served;
    }
  });
  const absl::Status reaped = b.ic().ReapOnce(300s);
  const auto t2 = std::chrono::steady_clock::now();
  reaping = false;
  other.join();
  ASSERT_TRUE(reaped.ok()) << reaped;
  const auto values = Cumulatives(*redis_, kKeys, "k");
  EXPECT_EQ(values[0], "1");
  EXPECT_EQ(CountNot(values, "(nil)"), 1) << "only k0 keeps a cumulative (b's slice)";
  EXPECT_EQ(b.ic().stats().reaped_slices.load(), static_cast<uint64_t>(kKeys));
  EXPECT_GT(served.load(), 0) << "calls are served while the reaper runs";
  EXPECT_EQ(redis_->Command({"KEYS", "dk:{I:" + dead.ic().instance_id() + ":*"}), "");
  std::cout << "[ measure  ] " << kKeys << " keys: written in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(t1 - t0).count()
            << " ms, reaped in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(t2 - t1).count() << " ms; "
            << served.load() << " other calls served meanwhile\n";
}

}  // namespace
}  // namespace distkit
