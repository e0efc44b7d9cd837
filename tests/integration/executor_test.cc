// The Redis executor against a real redis-server: scripts and NOSCRIPT, a Redis that stops
// answering, restarts, AUTH/SELECT from the URL, and pipelining under concurrency.

#include "daemon/redis/executor.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "daemon/redis/redis_url.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit::redis {
namespace {

using distkit::testing::PollUntil;
using distkit::testing::RedisServer;
using namespace std::chrono_literals;

// Runs one command and waits (bounded) for its completion.
absl::StatusOr<Reply> RunCmd(Executor& ex, std::vector<std::string> argv) {
  std::promise<absl::StatusOr<Reply>> p;
  auto f = p.get_future();
  ex.Command(std::move(argv), [&p](absl::StatusOr<Reply> r) { p.set_value(std::move(r)); });
  if (f.wait_for(10s) != std::future_status::ready) return absl::InternalError("hung");
  return f.get();
}

absl::StatusOr<Reply> RunScript(Executor& ex, std::string key) {
  std::promise<absl::StatusOr<Reply>> p;
  auto f = p.get_future();
  ex.Script("counter", {std::move(key)}, {"test", "0", "inc", "", "0", "1"},
            [&p](absl::StatusOr<Reply> r) { p.set_value(std::move(r)); });
  if (f.wait_for(10s) != std::future_status::ready) return absl::InternalError("hung");
  return f.get();
}

std::unique_ptr<Executor> MakeExecutor(const std::string& url, int timeout_ms = 300) {
  ExecutorOptions o;
  auto ep = ParseRedisUrl(url);
  EXPECT_TRUE(ep.ok()) << ep.status();
  o.seeds = {*ep};
  o.command_timeout = std::chrono::milliseconds(timeout_ms);
  o.ping_interval = 100ms;
  o.unhealthy_after = 500ms;
  o.max_backoff = 200ms;
  auto ex = std::make_unique<Executor>(o);
  ex->Start();
  return ex;
}

bool WaitHealthy(Executor& ex, bool want) {
  return PollUntil([&] { return ex.Healthy() == want; }, 10s);
}

TEST(Executor, RunsCommandsAndScripts) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url());
  ASSERT_TRUE(WaitHealthy(*ex, true));
  auto pong = RunCmd(*ex, {"PING"});
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(pong->str, "PONG");
  auto r = RunScript(*ex, "k1");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->type, Reply::Type::kArray) << r->DebugString();
  EXPECT_EQ(r->elements[1].str, "1");
  EXPECT_EQ(redis->Command({"HGET", "k1", "v"}), "1");
}

TEST(Executor, RecoversFromNoscript) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url());
  ASSERT_TRUE(WaitHealthy(*ex, true));
  ASSERT_TRUE(RunScript(*ex, "k").ok());
  EXPECT_EQ(redis->Command({"SCRIPT", "FLUSH"}), "OK");
  auto r = RunScript(*ex, "k");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->is_error()) << r->DebugString();
  EXPECT_EQ(r->elements[1].str, "2");
  EXPECT_EQ(ex->stats().noscript_retries.load(), 1u);
}

TEST(Executor, RedisThatStopsAnsweringTimesOutAndRecovers) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url());
  ASSERT_TRUE(WaitHealthy(*ex, true));
  redis->Pause();
  auto r = RunCmd(*ex, {"PING"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(WaitHealthy(*ex, false));
  redis->Resume();
  EXPECT_TRUE(WaitHealthy(*ex, true));
  EXPECT_TRUE(PollUntil([&] { return RunCmd(*ex, {"PING"}).ok(); }, 10s));
  EXPECT_GE(ex->stats().timeouts.load(), 1u);
}

TEST(Executor, FailsFastWhileDownAndReconnectsAfterRestart) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url());
  ASSERT_TRUE(WaitHealthy(*ex, true));
  redis->Stop();
  ASSERT_TRUE(WaitHealthy(*ex, false));
  auto r = RunCmd(*ex, {"PING"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  redis->Restart();
  ASSERT_TRUE(WaitHealthy(*ex, true));
  auto s = RunScript(*ex, "k");  // scripts were lost with the restart
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(s->is_error()) << s->DebugString();
  EXPECT_GE(ex->stats().reconnects.load(), 1u);
}

TEST(Executor, AuthAndDbFromTheUrl) {
  RedisServer::Options opt;
  opt.tcp = true;
  auto redis = RedisServer::Start(opt);
  ASSERT_TRUE(redis);
  ASSERT_EQ(redis->Command({"CONFIG", "SET", "requirepass", "s3cret"}), "OK");
  auto ex = MakeExecutor("redis://:s3cret@127.0.0.1:" + std::to_string(redis->port()) + "/3");
  ASSERT_TRUE(WaitHealthy(*ex, true));
  ASSERT_TRUE(RunCmd(*ex, {"SET", "where", "db3"}).ok());
  redisContext* c = redis->Connect();
  ASSERT_NE(c, nullptr);
  freeReplyObject(redisCommand(c, "AUTH s3cret"));
  freeReplyObject(redisCommand(c, "SELECT 3"));
  auto* reply = static_cast<redisReply*>(redisCommand(c, "GET where"));
  ASSERT_NE(reply, nullptr);
  EXPECT_EQ(std::string(reply->str ? reply->str : ""), "db3");
  freeReplyObject(reply);
  redisFree(c);

  auto bad = MakeExecutor("redis://:wrong@127.0.0.1:" + std::to_string(redis->port()));
  EXPECT_FALSE(PollUntil([&] { return bad->Healthy(); }, 1s));
}

TEST(Executor, ConcurrentCommandsArePipelined) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url(), 5000);
  ASSERT_TRUE(WaitHealthy(*ex, true));
  constexpr int kThreads = 4, kPerThread = 2000;
  std::atomic<int> ok{0}, done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        ex->Command({"INCR", "n"}, [&](absl::StatusOr<Reply> r) {
          if (r.ok() && !r->is_error()) ok++;
          done++;
        });
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(PollUntil([&] { return done.load() == kThreads * kPerThread; }, 30s));
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
  EXPECT_EQ(redis->Command({"GET", "n"}), std::to_string(kThreads * kPerThread));
  // Many commands left per drain of the queue: they were written together.
  EXPECT_LT(ex->stats().writes.load(), ex->stats().commands.load());
}

TEST(Executor, BoundsOutstandingCommands) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  ExecutorOptions o;
  o.seeds = {*ParseRedisUrl(redis->url())};
  o.command_timeout = 5000ms;
  o.max_outstanding = 10;
  Executor ex(o);
  ex.Start();
  ASSERT_TRUE(PollUntil([&] { return ex.Healthy(); }, 10s));
  redis->Pause();  // nothing completes: the 11th command finds the bound reached
  std::atomic<int> exhausted{0}, done{0};
  for (int i = 0; i < 11; ++i) {
    ex.Command({"PING"}, [&](absl::StatusOr<Reply> r) {
      if (r.status().code() == absl::StatusCode::kResourceExhausted) {
        EXPECT_TRUE(IsNotSent(r.status()));
        exhausted++;
      }
      done++;
    });
  }
  EXPECT_EQ(exhausted.load(), 1);
  redis->Resume();
  EXPECT_TRUE(PollUntil([&] { return done.load() == 11; }, 10s));
  EXPECT_TRUE(PollUntil([&] { return RunCmd(ex, {"PING"}).ok(); }, 10s)) << "room again";
}

TEST(Executor, StopFailsQueuedWorkAndIsIdempotent) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url());
  ASSERT_TRUE(WaitHealthy(*ex, true));
  ex->Stop();
  ex->Stop();
  auto r = RunCmd(*ex, {"PING"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace distkit::redis
