// The Redis executor against a real redis-server: scripts and NOSCRIPT, a Redis that stops
// answering, restarts, AUTH/SELECT from the URL, and pipelining under concurrency.

#include "daemon/redis/executor.h"

#include <gtest/gtest.h>

#include <functional>
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

std::unique_ptr<Executor> MakeExecutor(const std::string& url, int timeout_ms = 300,
                                       std::chrono::microseconds inline_wait = 5s) {
  ExecutorOptions o;
  o.inline_wait = inline_wait;
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

// ------------------------------------------------------------------ the inline path

// One command submitted in an InlineScope: where and when its callback ran.
struct InlineRun {
  bool done_before_scope_end = false;  // the command was not held back
  bool done_in_scope = false;          // the callback ran before the scope's end returned
  bool on_this_thread = false;         // ... on the submitting thread
  std::future<absl::StatusOr<Reply>> result;
};

InlineRun RunInScope(Executor& ex, const std::function<void(ReplyCallback)>& submit) {
  InlineRun run;
  auto p = std::make_shared<std::promise<absl::StatusOr<Reply>>>();
  run.result = p->get_future();
  const auto self = std::this_thread::get_id();
  auto thread = std::make_shared<std::atomic<bool>>(false);
  {
    InlineScope scope;
    submit([p, self, thread](absl::StatusOr<Reply> r) {
      *thread = std::this_thread::get_id() == self;
      p->set_value(std::move(r));
    });
    run.done_before_scope_end = run.result.wait_for(0s) == std::future_status::ready;
  }
  run.done_in_scope = run.result.wait_for(0s) == std::future_status::ready;
  run.on_this_thread = run.done_in_scope && thread->load();
  return run;
}

InlineRun InlineScript(Executor& ex, std::string key) {
  return RunInScope(ex, [&](ReplyCallback done) {
    ex.Script("counter", {std::move(key)}, {"test", "0", "inc", "", "0", "1"}, std::move(done));
  });
}

absl::StatusOr<Reply> Get(InlineRun& run) {
  if (run.result.wait_for(10s) != std::future_status::ready) return absl::InternalError("hung");
  return run.result.get();
}

TEST(ExecutorInline, ALoneCommandRunsOnTheSubmittingThread) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url());
  ASSERT_TRUE(WaitHealthy(*ex, true));
  for (int i = 1; i <= 3; ++i) {
    auto run = InlineScript(*ex, "k");
    EXPECT_FALSE(run.done_before_scope_end) << "held back until the scope ends";
    EXPECT_TRUE(run.done_in_scope);
    EXPECT_TRUE(run.on_this_thread);
    auto r = Get(run);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->type, Reply::Type::kArray) << r->DebugString();
    EXPECT_EQ(r->elements[1].str, std::to_string(i));
  }
  EXPECT_EQ(ex->stats().inline_commands.load(), 3u);
  EXPECT_EQ(redis->Command({"HGET", "k", "v"}), "3");
  // Outside a scope: the loop, as before.
  ASSERT_TRUE(RunScript(*ex, "k").ok());
  EXPECT_EQ(ex->stats().inline_commands.load(), 3u);
  EXPECT_EQ(redis->Command({"HGET", "k", "v"}), "4");
}

TEST(ExecutorInline, SeveralCommandsInOneScopeGoTogetherThroughTheLoop) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url());
  ASSERT_TRUE(WaitHealthy(*ex, true));
  std::promise<void> both;
  std::atomic<int> ok{0};
  {
    InlineScope scope;
    for (int i = 0; i < 2; ++i) {
      ex->Command({"INCR", "n"}, [&](absl::StatusOr<Reply> r) {
        if (r.ok() && !r->is_error() && ++ok == 2) both.set_value();
      });
    }
  }
  ASSERT_EQ(both.get_future().wait_for(10s), std::future_status::ready);
  EXPECT_EQ(ex->stats().inline_commands.load(), 0u);
  EXPECT_EQ(redis->Command({"GET", "n"}), "2");
}

TEST(ExecutorInline, NotWhileTheLoopHasACommandInFlight) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url(), 5000);
  ASSERT_TRUE(WaitHealthy(*ex, true));
  redis->Pause();
  std::promise<absl::StatusOr<Reply>> first;
  ex->Command({"SET", "order", "first"},
              [&](absl::StatusOr<Reply> r) { first.set_value(std::move(r)); });
  auto second = RunInScope(*ex, [&](ReplyCallback done) {
    ex->Command({"SET", "order", "second"}, std::move(done));
  });
  EXPECT_FALSE(second.done_in_scope);
  redis->Resume();
  ASSERT_TRUE(first.get_future().get().ok());
  ASSERT_TRUE(Get(second).ok());
  EXPECT_EQ(ex->stats().inline_commands.load(), 0u);
  EXPECT_EQ(redis->Command({"GET", "order"}), "second") << "submission order kept";
}

TEST(ExecutorInline, RecoversFromNoscript) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url(), 6000);
  ASSERT_TRUE(WaitHealthy(*ex, true));
  auto warm = InlineScript(*ex, "k");
  ASSERT_TRUE(Get(warm).ok());
  EXPECT_EQ(redis->Command({"SCRIPT", "FLUSH"}), "OK");
  auto run = InlineScript(*ex, "k");
  EXPECT_TRUE(run.on_this_thread);
  auto r = Get(run);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->type, Reply::Type::kArray) << r->DebugString();
  EXPECT_EQ(r->elements[1].str, "2");
  EXPECT_EQ(ex->stats().noscript_retries.load(), 1u);
  EXPECT_EQ(ex->stats().inline_commands.load(), 2u);
}

TEST(ExecutorInline, ALateReplyIsAwaitedByTheLoop) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url(), 10000, 1ms);
  ASSERT_TRUE(WaitHealthy(*ex, true));
  redis->Pause();
  auto run = InlineScript(*ex, "k");
  EXPECT_FALSE(run.done_in_scope) << "the thread went on after inline_wait";
  EXPECT_EQ(ex->stats().inline_lent.load(), 1u);
  redis->Resume();
  auto r = Get(run);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->type, Reply::Type::kArray) << r->DebugString();
  EXPECT_EQ(r->elements[1].str, "1");
  // The connection came back from the loop: the next command runs inline again.
  ASSERT_TRUE(WaitHealthy(*ex, true));
  auto next = InlineScript(*ex, "k");
  ASSERT_TRUE(Get(next).ok());
  EXPECT_EQ(redis->Command({"HGET", "k", "v"}), "2");
  EXPECT_EQ(ex->stats().inline_commands.load(), 2u);
}

TEST(ExecutorInline, ALateReplyPastTheDeadlineTimesOutAndTheNextCommandReconnects) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url(), 300);
  ASSERT_TRUE(WaitHealthy(*ex, true));
  redis->Pause();
  auto run = InlineScript(*ex, "k");
  auto r = Get(run);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  redis->Resume();
  ASSERT_TRUE(WaitHealthy(*ex, true));
  ASSERT_TRUE(PollUntil(
      [&] {
        auto next = InlineScript(*ex, "k");
        return next.on_this_thread && Get(next).ok();
      },
      10s));
  EXPECT_GE(ex->stats().timeouts.load(), 1u);
}

TEST(ExecutorInline, AfterARedisRestartNothingIsWrittenIntoTheDeadConnection) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url());
  ASSERT_TRUE(WaitHealthy(*ex, true));
  auto before = InlineScript(*ex, "k");
  ASSERT_TRUE(Get(before).ok());
  redis->Restart();  // the data goes with the server (no persistence)
  ASSERT_TRUE(PollUntil([&] { return RunCmd(*ex, {"PING"}).ok(); }, 10s));
  ASSERT_TRUE(WaitHealthy(*ex, true));
  auto after = InlineScript(*ex, "k");
  EXPECT_TRUE(after.on_this_thread);
  auto r = Get(after);
  ASSERT_TRUE(r.ok()) << r.status() << ": the idle inline connection was found closed";
  EXPECT_EQ(redis->Command({"HGET", "k", "v"}), "1");
}

TEST(ExecutorInline, AuthAndDbFromTheUrl) {
  RedisServer::Options opt;
  opt.tcp = true;
  auto redis = RedisServer::Start(opt);
  ASSERT_TRUE(redis);
  ASSERT_EQ(redis->Command({"CONFIG", "SET", "requirepass", "s3cret"}), "OK");
  auto ex = MakeExecutor("redis://:s3cret@127.0.0.1:" + std::to_string(redis->port()) + "/3");
  ASSERT_TRUE(WaitHealthy(*ex, true));
  auto run = RunInScope(*ex, [&](ReplyCallback done) {
    ex->Command({"SET", "where", "db3-inline"}, std::move(done));
  });
  EXPECT_TRUE(run.on_this_thread);
  ASSERT_TRUE(Get(run).ok());
  auto check = RunCmd(*ex, {"GET", "where"});  // the loop's connection, on db 3 too
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(check->str, "db3-inline");
}

TEST(ExecutorInline, StopFailsALentCommandAsOutcomeUnknown) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  auto ex = MakeExecutor(redis->url(), 10000, 1ms);
  ASSERT_TRUE(WaitHealthy(*ex, true));
  redis->Pause();
  auto run = InlineScript(*ex, "k");
  ASSERT_FALSE(run.done_in_scope);
  ex->Stop();
  auto r = Get(run);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_FALSE(IsNotSent(r.status()));
  redis->Resume();
}

TEST(ExecutorInline, OffWithAZeroWait) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  ExecutorOptions o;
  o.seeds = {*ParseRedisUrl(redis->url())};
  o.inline_wait = 0us;
  Executor ex(o);
  ex.Start();
  ASSERT_TRUE(WaitHealthy(ex, true));
  auto run = InlineScript(ex, "k");
  EXPECT_FALSE(run.on_this_thread);
  ASSERT_TRUE(Get(run).ok());
  EXPECT_EQ(ex.stats().inline_commands.load(), 0u);
}

}  // namespace
}  // namespace distkit::redis
