// core::RedisRateLimiter with a real Executor and redis-server: decisions, two daemons' worth
// of limiters sharing one limit, and the failure modes (open | closed | local) with Redis
// paused (SIGSTOP) or stopped. Reply handling that needs a misbehaving Redis uses a stub client.

#include "daemon/core/redis_rate_limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon/core/local_rate_limiter.h"
#include "daemon/redis/executor.h"
#include "daemon/redis/redis_url.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit::testing {
namespace {

using namespace std::chrono_literals;
using core::RateDecision;
using core::RateFailureMode;
using core::RateGetResult;
using core::RateIncRequest;
using core::RateIncResult;
using core::RateLimiter;
using core::RateLimitSettings;
using core::RateStrategy;
using core::RedisRateLimiter;

constexpr auto kCommandTimeout = 300ms;
// How long a test waits for any answer: far above the command deadline, so only a hang fails.
constexpr auto kAnswerBound = 20s;

class FixedRandom : public core::RandomSource {
 public:
  explicit FixedRandom(double v = 0) : v_(v) {}
  double Uniform01() override {
    calls_++;
    return v_.load();
  }
  void Set(double v) { v_ = v; }
  int calls() const { return calls_.load(); }

 private:
  std::atomic<double> v_;
  std::atomic<int> calls_{0};
};

// A fallback with a recognisable answer, counting its calls.
class StubLimiter : public RateLimiter {
 public:
  void Inc(const RateIncRequest& req, core::RateIncCallback done) override {
    calls++;
    last_key = req.key;
    RateIncResult r;
    r.decision = RateDecision::kRejected;
    r.retry_after_ms = 1234;
    r.remaining_after_waiting = 7;
    r.allowed = false;
    done(r);
  }
  void Get(const std::string&, const std::string&, RateStrategy,
           core::RateGetCallback done) override {
    done(RateGetResult{});
  }
  std::atomic<int> calls{0};
  std::string last_key;
};

std::unique_ptr<redis::Executor> MakeExecutor(const std::string& url) {
  redis::ExecutorOptions o;
  auto ep = redis::ParseRedisUrl(url);
  EXPECT_TRUE(ep.ok()) << ep.status();
  o.seeds = {*ep};
  o.command_timeout = kCommandTimeout;
  o.ping_interval = 100ms;
  o.unhealthy_after = 500ms;
  o.max_backoff = 200ms;
  auto ex = std::make_unique<redis::Executor>(o);
  ex->Start();
  return ex;
}

RateLimitSettings Settings(int64_t window_ms = 10000) {
  RateLimitSettings s;
  s.window_ms = window_ms;
  s.bucket_ms = 100;
  s.hard_limit_factor = 2;
  s.suppression_cache_ms = 100;
  return s;
}

RateIncRequest Req(std::string key, double rate, uint64_t count,
                   RateStrategy strategy = RateStrategy::kAbsolute) {
  RateIncRequest r;
  r.ns = "ns";
  r.key = std::move(key);
  r.rate_per_second = rate;
  r.count = count;
  r.strategy = strategy;
  return r;
}

absl::StatusOr<RateIncResult> IncSync(RateLimiter& l, const RateIncRequest& req) {
  auto p = std::make_shared<std::promise<absl::StatusOr<RateIncResult>>>();
  auto f = p->get_future();
  l.Inc(req, [p](absl::StatusOr<RateIncResult> r) { p->set_value(std::move(r)); });
  if (f.wait_for(kAnswerBound) != std::future_status::ready) {
    ADD_FAILURE() << "Inc did not answer";
    return absl::InternalError("test: Inc hung");
  }
  return f.get();
}

absl::StatusOr<RateGetResult> GetSync(RateLimiter& l, const std::string& key,
                                      RateStrategy s = RateStrategy::kAbsolute) {
  auto p = std::make_shared<std::promise<absl::StatusOr<RateGetResult>>>();
  auto f = p->get_future();
  l.Get("ns", key, s, [p](absl::StatusOr<RateGetResult> r) { p->set_value(std::move(r)); });
  if (f.wait_for(kAnswerBound) != std::future_status::ready) {
    ADD_FAILURE() << "Get did not answer";
    return absl::InternalError("test: Get hung");
  }
  return f.get();
}

class RedisRateLimiterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = RedisServer::Start();
    ASSERT_NE(server_, nullptr);
    executor_ = MakeExecutor(server_->url());
    ASSERT_TRUE(PollUntil([&] { return executor_->Healthy(); }, 10s));
  }
  void TearDown() override {
    if (server_) server_->Resume();  // a test may have left it stopped
    if (executor_) executor_->Stop();
  }
  std::unique_ptr<RedisRateLimiter> Make(RateFailureMode mode, RateLimiter* fallback = nullptr,
                                         RateLimitSettings s = Settings()) {
    return std::make_unique<RedisRateLimiter>(executor_.get(), s, mode, &random_, fallback);
  }

  FixedRandom random_;
  std::unique_ptr<RedisServer> server_;
  std::unique_ptr<redis::Executor> executor_;
};

// ---------------------------------------------------------------- decisions

TEST_F(RedisRateLimiterTest, AbsoluteDecisionsAndGet) {
  auto l = Make(RateFailureMode::kClosed);
  // rate 1/s over 10 s: capacity 10.
  auto r = IncSync(*l, Req("k", 1, 9));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->decision, RateDecision::kAllowed);
  EXPECT_TRUE(r->allowed);
  EXPECT_FALSE(r->degraded);
  EXPECT_EQ(r->suppression_factor, 0);
  r = IncSync(*l, Req("k", 1, 2));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->decision, RateDecision::kRejected);
  EXPECT_FALSE(r->allowed);
  EXPECT_FALSE(r->degraded);
  EXPECT_GT(r->retry_after_ms, 0);
  EXPECT_LE(r->retry_after_ms, 10000);
  EXPECT_EQ(r->remaining_after_waiting, 9u);
  r = IncSync(*l, Req("k", 1, 1));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->decision, RateDecision::kAllowed);
  auto g = GetSync(*l, "k");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->total, 10u);
  EXPECT_EQ(g->declined, 0u);
  // The state lives in Redis under the documented key, with a TTL.
  const std::string key = core::RedisRateLimitKey("ns", "k", RateStrategy::kAbsolute);
  EXPECT_EQ(server_->Command({"HGET", key, "t"}), "10");
  EXPECT_GT(std::stoll(server_->Command({"PTTL", key})), 0);
  EXPECT_EQ(random_.calls(), 3) << "one draw per Inc, passed to the script";
}

TEST_F(RedisRateLimiterTest, SuppressedUsesTheInjectedRandomNumber) {
  auto l = Make(RateFailureMode::kClosed);
  // rate 1, hlf 2, 10 s: soft 10, hard 20.
  auto r = IncSync(*l, Req("s", 1, 10, RateStrategy::kSuppressed));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->decision, RateDecision::kAllowed);
  random_.Set(0.9999999);  // declines whenever the factor is > 0.0000001
  r = IncSync(*l, Req("s", 1, 1, RateStrategy::kSuppressed));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->decision, RateDecision::kSuppressed);
  // accepted 10 = soft: factor 1 - 1 / max(1, last second) — 0.9 unless a second passed.
  if (r->suppression_factor > 0) {
    EXPECT_FALSE(r->allowed);
  }
  random_.Set(0);  // admits whenever the factor is < 1
  r = IncSync(*l, Req("s", 1, 1, RateStrategy::kSuppressed));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->decision, RateDecision::kSuppressed);
  EXPECT_TRUE(r->allowed);
  EXPECT_LT(r->suppression_factor, 1);
  // Crossing the hard limit is declined whatever the draw.
  r = IncSync(*l, Req("s", 1, 20, RateStrategy::kSuppressed));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->decision, RateDecision::kSuppressed);
  EXPECT_EQ(r->suppression_factor, 1);
  EXPECT_FALSE(r->allowed);
  auto g = GetSync(*l, "s", RateStrategy::kSuppressed);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->total, 32u);
  EXPECT_GE(g->declined, 20u);
  EXPECT_LE(g->declined, 21u);
  EXPECT_GT(g->suppression_factor, 0);
}

TEST_F(RedisRateLimiterTest, CountsBeyond2To53) {
  auto l = Make(RateFailureMode::kOpen);
  server_->Stop();  // the ABSOLUTE answer needs no Redis
  auto r = IncSync(*l, Req("k", 1e300, uint64_t{1} << 53));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->decision, RateDecision::kRejected);
  EXPECT_EQ(r->retry_after_ms, 0);
  EXPECT_EQ(r->remaining_after_waiting, 0u);
  EXPECT_FALSE(r->degraded);
  r = IncSync(*l, Req("k", 1e300, ~uint64_t{0}, RateStrategy::kSuppressed));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kOutOfRange) << r.status();
}

TEST_F(RedisRateLimiterTest, TwoLimitersShareOneExactLimit) {
  // Two executors = two daemons' connections to the same Redis.
  auto executor2 = MakeExecutor(server_->url());
  ASSERT_TRUE(PollUntil([&] { return executor2->Healthy(); }, 10s));
  auto a = Make(RateFailureMode::kOpen);
  RedisRateLimiter b(executor2.get(), Settings(), RateFailureMode::kOpen, &random_);
  // capacity 50 (5/s over 10 s); 4 threads × 40 requests of 1 unit, pipelined.
  std::atomic<int> allowed{0}, rejected{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      RateLimiter& l = t % 2 == 0 ? static_cast<RateLimiter&>(*a) : b;
      std::vector<std::future<absl::StatusOr<RateIncResult>>> futures;
      for (int i = 0; i < 40; ++i) {
        auto p = std::make_shared<std::promise<absl::StatusOr<RateIncResult>>>();
        futures.push_back(p->get_future());
        l.Inc(Req("shared", 5, 1), [p](absl::StatusOr<RateIncResult> r) { p->set_value(r); });
      }
      for (auto& f : futures) {
        if (f.wait_for(kAnswerBound) != std::future_status::ready) {
          other++;
          continue;
        }
        auto r = f.get();
        if (!r.ok() || r->degraded) {
          other++;
        } else if (r->decision == RateDecision::kAllowed) {
          allowed++;
        } else {
          rejected++;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(allowed.load(), 50);
  EXPECT_EQ(rejected.load(), 110);
  auto g = GetSync(b, "shared");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->total, 50u);
  executor2->Stop();
}

TEST_F(RedisRateLimiterTest, KeysExpireAfterTheWindow) {
  auto l = Make(RateFailureMode::kClosed, nullptr, Settings(1000));
  ASSERT_TRUE(IncSync(*l, Req("gone", 100, 5)).ok());
  ASSERT_TRUE(IncSync(*l, Req("gone", 100, 500, RateStrategy::kSuppressed)).ok());
  EXPECT_EQ(server_->Command({"DBSIZE"}), "2");
  EXPECT_TRUE(PollUntil([&] { return server_->Command({"DBSIZE"}) == "0"; }, 10s));
}

// ---------------------------------------------------------------- failure modes

// Sends one Inc with Redis unable to answer and checks the degraded answer.
void ExpectDegradedAnswers(RedisRateLimiter& l,
                           const std::function<void(const RateIncResult&)>& check) {
  for (auto strategy : {RateStrategy::kAbsolute, RateStrategy::kSuppressed}) {
    auto r = IncSync(l, Req("k", 1, 1, strategy));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->degraded);
    check(*r);
  }
}

TEST_F(RedisRateLimiterTest, OpenModeAllowsWhileRedisIsPausedOrDown) {
  auto l = Make(RateFailureMode::kOpen);
  // Use up the capacity first, so an ALLOWED can only come from the failure mode.
  ASSERT_EQ(IncSync(*l, Req("k", 1, 10))->decision, RateDecision::kAllowed);
  ASSERT_EQ(IncSync(*l, Req("k", 1, 1))->decision, RateDecision::kRejected);
  auto check = [](const RateIncResult& r) {
    EXPECT_EQ(r.decision, RateDecision::kAllowed);
    EXPECT_TRUE(r.allowed);
    EXPECT_EQ(r.suppression_factor, 0);
  };
  server_->Pause();  // SIGSTOP: connected, no answers: the command deadline decides
  ExpectDegradedAnswers(*l, check);
  server_->Resume();
  // Back to Redis' own answers once the executor reconnected.
  EXPECT_TRUE(PollUntil(
      [&] {
        auto r = IncSync(*l, Req("k", 1, 1));
        return r.ok() && !r->degraded && r->decision == RateDecision::kRejected;
      },
      10s));
  server_->Stop();  // connection refused: fails fast
  ExpectDegradedAnswers(*l, check);
  EXPECT_GE(l->stats().degraded.load(), 4u);
}

TEST_F(RedisRateLimiterTest, ClosedModeRejectsWhileRedisIsPaused) {
  auto l = Make(RateFailureMode::kClosed);
  auto check = [](const RateIncResult& r) {
    EXPECT_EQ(r.decision, RateDecision::kRejected);
    EXPECT_FALSE(r.allowed);
    EXPECT_EQ(r.retry_after_ms, 0);
    EXPECT_EQ(r.remaining_after_waiting, 0u);
  };
  server_->Pause();
  ExpectDegradedAnswers(*l, check);
  server_->Resume();
  EXPECT_TRUE(PollUntil(
      [&] {
        auto r = IncSync(*l, Req("k", 1, 1));
        return r.ok() && !r->degraded && r->decision == RateDecision::kAllowed;
      },
      10s));
}

TEST_F(RedisRateLimiterTest, LocalModeAnswersWithTheFallback) {
  StubLimiter local;
  auto l = Make(RateFailureMode::kLocal, &local);
  ASSERT_EQ(IncSync(*l, Req("k", 1, 1))->decision, RateDecision::kAllowed);
  EXPECT_EQ(local.calls.load(), 0) << "the fallback is not asked while Redis answers";
  server_->Pause();
  auto check = [](const RateIncResult& r) {
    EXPECT_EQ(r.decision, RateDecision::kRejected);
    EXPECT_EQ(r.retry_after_ms, 1234);
    EXPECT_EQ(r.remaining_after_waiting, 7u);
  };
  ExpectDegradedAnswers(*l, check);
  EXPECT_EQ(local.calls.load(), 2);
  EXPECT_EQ(local.last_key, "k");
  server_->Resume();
}

TEST_F(RedisRateLimiterTest, LocalModeSharesTheLocalProvidersState) {
  core::LocalRateLimiterOptions lo;
  lo.settings = Settings();
  lo.sweep_interval_ms = 0;
  lo.random = &random_;
  core::LocalRateLimiter local(lo);
  auto l = Make(RateFailureMode::kLocal, &local);
  // LOCAL requests use 8 of the key's 10 (1/s over 10 s); REDIS still has all 10.
  ASSERT_EQ(local.Decide(Req("k", 1, 8))->decision, RateDecision::kAllowed);
  server_->Pause();
  auto r = IncSync(*l, Req("k", 1, 2));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->degraded);
  EXPECT_EQ(r->decision, RateDecision::kAllowed);  // 8 + 2 = 10
  r = IncSync(*l, Req("k", 1, 1));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->degraded);
  EXPECT_EQ(r->decision, RateDecision::kRejected) << "LOCAL's window is full";
  EXPECT_GT(r->retry_after_ms, 0);
  EXPECT_EQ(local.Read("ns", "k", RateStrategy::kAbsolute).total, 10u)
      << "degraded answers are recorded in the LOCAL state";
  server_->Resume();
  // Redis' own state: the second call was never sent (the executor had dropped the connection:
  // fail fast); the first one timed out but sat in the socket, so the resumed Redis may still
  // run it: an outcome unknown to the daemon (docs/rate_limiting.md, REDIS failure modes).
  absl::StatusOr<RateGetResult> g;
  EXPECT_TRUE(PollUntil(
      [&] {
        g = GetSync(*l, "k");
        return g.ok();
      },
      10s));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->total == 0 || g->total == 2) << g->total;
}

TEST_F(RedisRateLimiterTest, GetFailsWhileRedisIsDown) {
  auto l = Make(RateFailureMode::kOpen);
  ASSERT_TRUE(IncSync(*l, Req("k", 1, 1)).ok());
  server_->Pause();
  auto g = GetSync(*l, "k");
  EXPECT_TRUE(g.status().code() == absl::StatusCode::kDeadlineExceeded ||
              g.status().code() == absl::StatusCode::kUnavailable)
      << g.status();
  server_->Resume();
  server_->Stop();
  g = GetSync(*l, "k");
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnavailable) << g.status();
}

// ---------------------------------------------------------------- replies of a misbehaving Redis

// Answers every script call with a fixed reply.
class ReplyingClient : public redis::RedisClient {
 public:
  explicit ReplyingClient(redis::Reply reply) : reply_(std::move(reply)) {}
  void Command(std::vector<std::string>, redis::ReplyCallback done) override { done(reply_); }
  void Script(std::string_view, std::vector<std::string>, std::vector<std::string> args,
              redis::ReplyCallback done) override {
    last_args = args;
    done(reply_);
  }
  bool Healthy() const override { return true; }
  std::vector<std::string> last_args;

 private:
  redis::Reply reply_;
};

TEST(RedisRateLimiterReplies, TransientRedisErrorsDegradeScriptErrorsDoNot) {
  FixedRandom random(0.25);
  StubLimiter local;
  for (const char* transient : {"LOADING Redis is loading", "BUSY running a script",
                                "OOM command not allowed", "READONLY replica"}) {
    ReplyingClient client(redis::Reply::Error(transient));
    RedisRateLimiter l(&client, Settings(), RateFailureMode::kLocal, &random, &local);
    auto r = IncSync(l, Req("k", 1, 1));
    ASSERT_TRUE(r.ok()) << transient << ": " << r.status();
    EXPECT_TRUE(r->degraded) << transient;
  }
  ReplyingClient broken(redis::Reply::Error("ERR distkit: unknown op"));
  RedisRateLimiter l(&broken, Settings(), RateFailureMode::kOpen, &random);
  auto r = IncSync(l, Req("k", 1, 1));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
  ReplyingClient odd(redis::Reply::Array({redis::Reply::String("ok")}));
  RedisRateLimiter l2(&odd, Settings(), RateFailureMode::kOpen, &random);
  r = IncSync(l2, Req("k", 1, 1));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
}

TEST(RedisRateLimiterReplies, PassesSettingsRateCountAndRandomAsArguments) {
  FixedRandom random(0.25);
  ReplyingClient client(redis::Reply::Error("ERR distkit: x"));
  RateLimitSettings s = Settings();
  s.hard_limit_factor = 1.5;
  RedisRateLimiter l(&client, s, RateFailureMode::kOpen, &random);
  (void)IncSync(l, Req("k", 0.1, 3, RateStrategy::kSuppressed));
  EXPECT_EQ(client.last_args, (std::vector<std::string>{"inc", "s", "10000", "100", "1.5", "100",
                                                        "0.1", "3", "0.25"}));
  (void)GetSync(l, "k");
  EXPECT_EQ(client.last_args, (std::vector<std::string>{"get", "a", "10000", "100", "1.5", "100"}));
}

// ---------------------------------------------------------------- coalescing

// Holds every script call until the test answers it.
class HoldingClient : public redis::RedisClient {
 public:
  struct Call {
    std::vector<std::string> keys, args;
    redis::ReplyCallback done;
  };
  void Command(std::vector<std::string>, redis::ReplyCallback done) override {
    done(absl::UnavailableError("no commands here"));
  }
  void Script(std::string_view, std::vector<std::string> keys, std::vector<std::string> args,
              redis::ReplyCallback done) override {
    calls.push_back({std::move(keys), std::move(args), std::move(done)});
  }
  bool Healthy() const override { return true; }
  std::vector<Call> calls;
};

redis::Reply IncReply(const char* decision, int64_t retry, int64_t remaining) {
  return redis::Reply::Array({redis::Reply::String("ok"), redis::Reply::String(decision),
                              redis::Reply::Integer(retry), redis::Reply::Integer(remaining),
                              redis::Reply::String("0"),
                              redis::Reply::Integer(std::string(decision) == "allowed" ? 1 : 0),
                              redis::Reply::Integer(1000)});
}

// While a key's call is in flight, its later Incs wait and go together in the next call (ARGV:
// the settings once, then a (rate, count, random) triple per request in arrival order); each gets
// its own part of the reply. Another key is not held up.
TEST(RedisRateLimiterCoalescing, WaitingIncsOfAKeyGoInOneCallInArrivalOrder) {
  FixedRandom random(0.25);
  HoldingClient client;
  RedisRateLimiter l(&client, Settings(), RateFailureMode::kOpen, &random);
  std::vector<absl::StatusOr<RateIncResult>> got(5, absl::UnknownError("no answer"));
  auto answer = [&](int i) { return [&got, i](absl::StatusOr<RateIncResult> r) { got[i] = r; }; };
  l.Inc(Req("k", 1, 1), answer(0));
  ASSERT_EQ(client.calls.size(), 1u);
  l.Inc(Req("k", 2, 2), answer(1));
  l.Inc(Req("k", 3, 3), answer(2));
  l.Inc(Req("k", 4, 4), answer(3));
  l.Inc(Req("other", 1, 1), answer(4));  // another key: sent at once
  ASSERT_EQ(client.calls.size(), 2u);
  EXPECT_EQ(client.calls[1].keys[0],
            core::RedisRateLimitKey("ns", "other", RateStrategy::kAbsolute));

  client.calls[0].done(IncReply("allowed", 0, 0));
  ASSERT_EQ(client.calls.size(), 3u) << "the waiting Incs go out when the call comes back";
  EXPECT_EQ(client.calls[2].args,
            (std::vector<std::string>{"inc", "a", "10000", "100", "2", "100", "2", "2", "0.25", "3",
                                      "3", "0.25", "4", "4", "0.25"}));
  ASSERT_TRUE(got[0].ok());
  EXPECT_EQ(got[0]->decision, RateDecision::kAllowed);
  EXPECT_FALSE(got[1].ok()) << "answered before its call came back";

  client.calls[2].done(redis::Reply::Array(
      {IncReply("allowed", 0, 0), IncReply("rejected", 900, 2), IncReply("rejected", 800, 3)}));
  ASSERT_TRUE(got[1].ok() && got[2].ok() && got[3].ok());
  EXPECT_EQ(got[1]->decision, RateDecision::kAllowed);
  EXPECT_EQ(got[2]->decision, RateDecision::kRejected);
  EXPECT_EQ(got[2]->retry_after_ms, 900);
  EXPECT_EQ(got[3]->remaining_after_waiting, 3u);
  EXPECT_EQ(client.calls.size(), 3u);  // nobody waits: no call

  // The key is free again: the next Inc is sent at once, alone.
  l.Inc(Req("k", 1, 1), answer(0));
  ASSERT_EQ(client.calls.size(), 4u);
  EXPECT_EQ(client.calls[3].args.size(), 9u);
  EXPECT_EQ(l.stats().inc_calls.load(), 4u);
  EXPECT_EQ(l.stats().coalesced.load(), 3u);

  // A reply of the wrong shape fails each request of the call, not the daemon.
  l.Inc(Req("k", 1, 1), answer(1));
  l.Inc(Req("k", 1, 1), answer(2));
  client.calls[3].done(IncReply("allowed", 0, 0));
  ASSERT_EQ(client.calls.size(), 5u);
  client.calls[4].done(redis::Reply::Array({IncReply("allowed", 0, 0)}));  // 1 part for 2
  EXPECT_EQ(got[1].status().code(), absl::StatusCode::kInternal) << got[1].status();
  EXPECT_EQ(got[2].status().code(), absl::StatusCode::kInternal) << got[2].status();
  client.calls[1].done(IncReply("allowed", 0, 0));
  EXPECT_TRUE(got[4].ok());
}

// More than kMaxCoalescedIncs waiting: they go in calls of at most that many, in order.
TEST(RedisRateLimiterCoalescing, BatchesAreCapped) {
  FixedRandom random(0.5);
  HoldingClient client;
  RedisRateLimiter l(&client, Settings(), RateFailureMode::kOpen, &random);
  const size_t n = core::kMaxCoalescedIncs + 10;
  int answered = 0;
  for (size_t i = 0; i <= n; ++i) {
    l.Inc(Req("k", 1, i + 1), [&](absl::StatusOr<RateIncResult> r) { answered += r.ok(); });
  }
  ASSERT_EQ(client.calls.size(), 1u);
  auto parts = [](size_t k) {
    std::vector<redis::Reply> v(k, IncReply("allowed", 0, 0));
    return redis::Reply::Array(std::move(v));
  };
  client.calls[0].done(IncReply("allowed", 0, 0));
  ASSERT_EQ(client.calls.size(), 2u);
  ASSERT_EQ(client.calls[1].args.size(), 6 + 3 * core::kMaxCoalescedIncs);
  EXPECT_EQ(client.calls[1].args[7], "2");  // count of the second request
  client.calls[1].done(parts(core::kMaxCoalescedIncs));
  ASSERT_EQ(client.calls.size(), 3u);
  ASSERT_EQ(client.calls[2].args.size(), 6u + 3 * 10);
  EXPECT_EQ(client.calls[2].args[7], absl::StrCat(core::kMaxCoalescedIncs + 2));
  client.calls[2].done(parts(10));
  EXPECT_EQ(answered, static_cast<int>(n + 1));
}

// Redis does not answer the call in flight: the Incs waiting behind it are answered by the
// failure mode at once (degraded), not sent to wait for the same Redis again.
TEST(RedisRateLimiterCoalescing, RedisDownAnswersTheWaitingByTheFailureMode) {
  FixedRandom random(0.5);
  HoldingClient client;
  RedisRateLimiter l(&client, Settings(), RateFailureMode::kClosed, &random);
  std::vector<absl::StatusOr<RateIncResult>> got(3, absl::UnknownError("no answer"));
  for (int i = 0; i < 3; ++i) {
    l.Inc(Req("k", 1, 1), [&got, i](absl::StatusOr<RateIncResult> r) { got[i] = r; });
  }
  ASSERT_EQ(client.calls.size(), 1u);
  client.calls[0].done(absl::DeadlineExceededError("no answer in time"));
  EXPECT_EQ(client.calls.size(), 1u);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(got[i].ok()) << i << ": " << got[i].status();
    EXPECT_TRUE(got[i]->degraded) << i;
    EXPECT_EQ(got[i]->decision, RateDecision::kRejected) << i;
  }
  EXPECT_EQ(l.stats().degraded.load(), 3u);
  l.Inc(Req("k", 1, 1), [&got](absl::StatusOr<RateIncResult> r) { got[0] = r; });
  EXPECT_EQ(client.calls.size(), 2u) << "the key is free after the failure";
}

// With a real Redis: many threads on one key admit exactly the capacity, whatever calls the
// requests shared, and Redis holds exactly the admitted units.
TEST_F(RedisRateLimiterTest, ConcurrentIncsOnAHotKeyAdmitExactlyTheCapacity) {
  for (RateStrategy strategy : {RateStrategy::kAbsolute, RateStrategy::kSuppressed}) {
    auto l = Make(RateFailureMode::kClosed);
    const std::string key = strategy == RateStrategy::kAbsolute ? "hot-a" : "hot-s";
    random_.Set(0.999);  // SUPPRESSED: a draw in the band declines (hard 2 × 50 = 100)
    std::atomic<int> allowed{0}, answered{0}, failed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 40; ++i) {
          auto r = IncSync(*l, Req(key, 5, 1, strategy));  // capacity 50 per 10 s
          if (!r.ok() || r->degraded) {
            failed++;
            continue;
          }
          answered++;
          allowed += r->allowed;
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(failed.load(), 0);
    EXPECT_EQ(answered.load(), 320);
    if (strategy == RateStrategy::kAbsolute) {
      EXPECT_EQ(allowed.load(), 50);
      EXPECT_EQ(GetSync(*l, key)->total, 50u);
    } else {
      // 50 below the soft limit; in the band the factor is at least 1 − 5/32 (the soft rate
      // over the observed one), so a draw of 0.999 declines every other request.
      EXPECT_EQ(allowed.load(), 50);
      auto g = GetSync(*l, key, strategy);
      ASSERT_TRUE(g.ok());
      EXPECT_EQ(g->total, 320u);
      EXPECT_EQ(g->declined, 270u);
    }
    EXPECT_LE(l->stats().inc_calls.load(), 320u);
  }
}

}  // namespace
}  // namespace distkit::testing
