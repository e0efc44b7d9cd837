// RateLimitService inside one process: the daemon's App (daemon/app.h) serving on a Unix
// socket, its LOCAL provider with a manual clock and a scripted random source (so decisions,
// retry_after and factors are exact), and a real redis-server for the executor the server's
// health follows. REDIS and HYBRID are left out of this server (AppHooks): they answer
// UNIMPLEMENTED, or REDIS is a fake.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "daemon/app.h"
#include "daemon/config/config.h"
#include "daemon/redis/redis_url.h"
#include "distkit/client.h"
#include "distkit/v1/rate_limit.grpc.pb.h"
#include "tests/fakes/fake_random.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::ManualClock;
using testing::PollUntil;
using testing::RedisServer;
using testing::ScriptedRandom;

bool HasLine(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

// A provider that always answers later, from its own thread, in a random order: it exercises
// the asynchronous paths of the service (REDIS/HYBRID). Answer n of a key carries
// remaining_after_waiting = n (so a test sees the order in which one key's calls were made);
// key "fail" answers UNAVAILABLE, key "deg" answers degraded.
class FakeAsyncLimiter final : public core::RateLimiter {
 public:
  FakeAsyncLimiter() : worker_([this] { Loop(); }) {}
  ~FakeAsyncLimiter() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  void Inc(const core::RateIncRequest& req, core::RateIncCallback done) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& p : pending_) same_key_overlaps_ += p.key == req.key ? 1 : 0;
    pending_.push_back({req.key, std::move(done)});
    max_outstanding_ = std::max(max_outstanding_, pending_.size());
    ++calls_;
    cv_.notify_one();
  }
  void Get(const std::string& ns, const std::string& key, core::RateStrategy strategy,
           core::RateGetCallback done) override {
    done(core::RateGetResult{7, 2, 0.5});
  }
  size_t max_outstanding() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_outstanding_;
  }
  int same_key_overlaps() {
    std::lock_guard<std::mutex> lock(mu_);
    return same_key_overlaps_;
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  struct Pending {
    std::string key;
    core::RateIncCallback done;
  };
  void Loop() {
    std::mt19937 gen(7);
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !pending_.empty(); });
      if (pending_.empty()) return;  // stopping
      const size_t i = gen() % pending_.size();
      Pending p = std::move(pending_[i]);
      pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
      const uint64_t n = ++seq_[p.key];
      lock.unlock();
      if (p.key == "fail") {
        p.done(absl::UnavailableError("fake: Redis is unreachable"));
      } else {
        core::RateIncResult r;
        r.remaining_after_waiting = n;
        r.degraded = p.key == "deg";
        p.done(r);
      }
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Pending> pending_;
  std::map<std::string, uint64_t> seq_;
  size_t max_outstanding_ = 0;
  int same_key_overlaps_ = 0, calls_ = 0;
  bool stop_ = false;
  std::thread worker_;
};

// W = 10 s, B = 100 ms, hard_limit_factor 2, cache 100 ms.
core::RateLimitSettings Settings() {
  core::RateLimitSettings s;
  s.window_ms = 10000;
  s.bucket_ms = 100;
  s.hard_limit_factor = 2.0;
  s.suppression_cache_ms = 100;
  return s;
}

class RateLimitServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_TRUE(redis_);
    const std::string socket = redis_->dir() + "/d.sock";
    config::Config config;
    config.listen = {"unix:" + socket};
    config.redis_seeds = {*redis::ParseRedisUrl(redis_->url())};
    config.redis_timeout_ms = 2000;
    config.default_namespace = "defns";
    const core::RateLimitSettings s = Settings();
    config.rate_window_seconds = s.window_ms / 1000;
    config.rate_bucket_ms = s.bucket_ms;
    config.hard_limit_factor = s.hard_limit_factor;
    config.suppression_cache_ms = s.suppression_cache_ms;
    AppHooks hooks;
    hooks.local_rate_clock = &clock_;
    hooks.random = &random_;
    hooks.local_sweep_interval_ms = 0;
    hooks.redis_rate_limiter = with_async_ ? &async_ : nullptr;
    hooks.hybrid_rate_limiter = nullptr;
    auto app = App::Create(config, hooks);
    ASSERT_TRUE(app.ok()) << app.status();
    app_ = *std::move(app);
    channel_ = grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
    stub_ = v1::RateLimitService::NewStub(channel_);
    ASSERT_TRUE(PollUntil([&] { return app_->executor().Healthy(); }, 10s));
  }
  void TearDown() override {
    if (app_) app_->Shutdown(4s);
  }
  core::LocalRateLimiter* local() { return &app_->local_rate_limiter(); }
  transport::Metrics& metrics() { return app_->metrics(); }

  static v1::RateLimitIncRequest IncReq(const std::string& key, double rate, uint64_t count,
                                        v1::Strategy strategy = v1::STRATEGY_UNSPECIFIED,
                                        v1::Provider provider = v1::PROVIDER_UNSPECIFIED,
                                        const std::string& ns = "") {
    v1::RateLimitIncRequest req;
    req.set_namespace_(ns);
    req.set_key(key);
    req.set_rate_per_second(rate);
    req.set_count(count);
    req.set_strategy(strategy);
    req.set_provider(provider);
    return req;
  }
  grpc::Status Call(const v1::RateLimitIncRequest& req, v1::RateLimitIncResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    return stub_->Inc(&ctx, req, resp);
  }
  v1::RateLimitIncResponse Inc(const std::string& key, double rate, uint64_t count,
                               v1::Strategy strategy = v1::STRATEGY_UNSPECIFIED,
                               const std::string& ns = "") {
    v1::RateLimitIncResponse resp;
    auto s = Call(IncReq(key, rate, count, strategy, v1::PROVIDER_UNSPECIFIED, ns), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }
  grpc::Status GetStatus(const std::string& key, v1::Strategy strategy, v1::Provider provider,
                         v1::RateLimitGetResponse* resp, const std::string& ns = "") {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::RateLimitGetRequest req;
    req.set_namespace_(ns);
    req.set_key(key);
    req.set_strategy(strategy);
    req.set_provider(provider);
    return stub_->Get(&ctx, req, resp);
  }
  v1::RateLimitGetResponse Get(const std::string& key,
                               v1::Strategy strategy = v1::STRATEGY_UNSPECIFIED,
                               const std::string& ns = "") {
    v1::RateLimitGetResponse resp;
    auto s = GetStatus(key, strategy, v1::PROVIDER_UNSPECIFIED, &resp, ns);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }
  grpc::Status Batch(const v1::RateLimitBatchRequest& req, v1::RateLimitBatchResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    return stub_->Batch(&ctx, req, resp);
  }

  bool with_async_ = false;
  FakeAsyncLimiter async_;
  ManualClock clock_;
  ScriptedRandom random_;
  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<App> app_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::RateLimitService::Stub> stub_;
};

TEST_F(RateLimitServiceTest, HealthEntryServing) {
  auto client = Client::FromChannel(channel_, {});
  // The entry follows Redis health (polled every 100 ms by the server): wait for SERVING.
  EXPECT_TRUE(PollUntil(
      [&] {
        const auto status = client->CheckHealth("distkit.v1.RateLimitService");
        return status.ok() && *status == ServingStatus::kServing;
      },
      10s));
}

// rate 5/s × W 10 s = capacity 50, all-or-nothing, retry_after from the oldest live bucket.
TEST_F(RateLimitServiceTest, AbsoluteDecisionsAndRetryAfter) {
  auto r = Inc("k", 5, 30);
  EXPECT_EQ(r.decision(), v1::DECISION_ALLOWED);
  EXPECT_TRUE(r.allowed());
  EXPECT_FALSE(r.degraded());
  EXPECT_EQ(r.retry_after_ms(), 0);
  EXPECT_EQ(r.suppression_factor(), 0);
  clock_.AdvanceMs(500);  // a second bucket
  EXPECT_EQ(Inc("k", 5, 15).decision(), v1::DECISION_ALLOWED);
  clock_.AdvanceMs(1500);
  r = Inc("k", 5, 6);  // 45 + 6 > 50: rejected whole, records nothing
  EXPECT_EQ(r.decision(), v1::DECISION_REJECTED);
  EXPECT_FALSE(r.allowed());
  EXPECT_EQ(r.retry_after_ms(), 10000 - 2000);
  EXPECT_EQ(r.remaining_after_waiting(), 30u);  // the oldest bucket
  EXPECT_EQ(r.suppression_factor(), 0);
  EXPECT_EQ(Inc("k", 5, 5).decision(), v1::DECISION_ALLOWED);  // exactly 50
  EXPECT_EQ(Inc("k", 5, 1).decision(), v1::DECISION_REJECTED);
  auto g = Get("k");
  EXPECT_EQ(g.total(), 50u);
  EXPECT_EQ(g.declined(), 0u);
  EXPECT_EQ(g.suppression_factor(), 0);
  // The first bucket (30) is live while its age is below W: retry_after_ms is exact.
  clock_.AdvanceMs(7999);  // age of the first bucket: 9 999
  EXPECT_EQ(Inc("k", 5, 1).retry_after_ms(), 1);
  EXPECT_EQ(Get("k").total(), 50u);
  clock_.AdvanceMs(1);  // age W: gone
  EXPECT_EQ(Get("k").total(), 20u);
  EXPECT_EQ(Inc("k", 5, 30).decision(), v1::DECISION_ALLOWED);
}

TEST_F(RateLimitServiceTest, CountZeroMeansOneAndOversizedIsRejectedWithZeros) {
  EXPECT_EQ(Inc("z", 1, 0).decision(), v1::DECISION_ALLOWED);
  EXPECT_EQ(Get("z").total(), 1u);
  auto r = Inc("big", 1, 11);  // capacity 10: can never fit
  EXPECT_EQ(r.decision(), v1::DECISION_REJECTED);
  EXPECT_EQ(r.retry_after_ms(), 0);
  EXPECT_EQ(r.remaining_after_waiting(), 0u);
  EXPECT_EQ(Get("big").total(), 0u);
  // Capacity 0 (0.05/s × 10 s): every request is rejected with 0/0.
  r = Inc("tiny", 0.05, 1);
  EXPECT_EQ(r.decision(), v1::DECISION_REJECTED);
  EXPECT_EQ(r.retry_after_ms(), 0);
  EXPECT_EQ(local()->size(), 1u);  // only "z" holds state
}

TEST_F(RateLimitServiceTest, RateIsPerRequestNotSticky) {
  EXPECT_EQ(Inc("p", 1, 10).decision(), v1::DECISION_ALLOWED);  // capacity 10, full
  EXPECT_EQ(Inc("p", 1, 1).decision(), v1::DECISION_REJECTED);
  EXPECT_EQ(Inc("p", 2, 10).decision(), v1::DECISION_ALLOWED);  // capacity 20 for this call
}

TEST_F(RateLimitServiceTest, NamespacesKeysAndStrategiesAreIndependent) {
  EXPECT_EQ(Inc("same", 1, 10, v1::STRATEGY_ABSOLUTE, "a").decision(), v1::DECISION_ALLOWED);
  EXPECT_EQ(Inc("same", 1, 1, v1::STRATEGY_ABSOLUTE, "a").decision(), v1::DECISION_REJECTED);
  EXPECT_EQ(Inc("same", 1, 10, v1::STRATEGY_ABSOLUTE, "b").decision(), v1::DECISION_ALLOWED);
  EXPECT_EQ(Inc("same", 1, 10, v1::STRATEGY_ABSOLUTE).decision(), v1::DECISION_ALLOWED);
  EXPECT_EQ(Inc("same", 1, 10, v1::STRATEGY_ABSOLUTE, "defns").decision(),
            v1::DECISION_REJECTED);  // "" is the default namespace
  EXPECT_EQ(Inc("same", 1, 10, v1::STRATEGY_SUPPRESSED, "a").decision(), v1::DECISION_ALLOWED);
  EXPECT_EQ(Get("same", v1::STRATEGY_ABSOLUTE, "a").total(), 10u);
  EXPECT_EQ(Get("same", v1::STRATEGY_SUPPRESSED, "a").total(), 10u);
  EXPECT_EQ(Get("other", v1::STRATEGY_ABSOLUTE, "a").total(), 0u);
}

// hlf 2, rate 1/s, W 10 s: soft 10, hard 20.
TEST_F(RateLimitServiceTest, SuppressedFieldsAndGet) {
  auto r = Inc("s", 1, 10, v1::STRATEGY_SUPPRESSED);
  EXPECT_EQ(r.decision(), v1::DECISION_ALLOWED);
  EXPECT_EQ(r.suppression_factor(), 0);
  EXPECT_TRUE(r.allowed());
  clock_.AdvanceMs(2000);
  // In the band; factor = 1 − (10/10)/max(10/10, 0 in the last second) = 0: admitted, no draw.
  r = Inc("s", 1, 2, v1::STRATEGY_SUPPRESSED);
  EXPECT_EQ(r.decision(), v1::DECISION_SUPPRESSED);
  EXPECT_TRUE(r.allowed());
  EXPECT_EQ(r.suppression_factor(), 0);
  EXPECT_EQ(random_.calls(), 0);
  clock_.AdvanceMs(200);  // cache expired; avg 12/10, last second 2 → 1 − 1/max(1.2, 2)
  random_.Push(0.9);      // ≥ 1 − f: declined
  r = Inc("s", 1, 1, v1::STRATEGY_SUPPRESSED);
  EXPECT_EQ(r.decision(), v1::DECISION_SUPPRESSED);
  EXPECT_FALSE(r.allowed());
  EXPECT_EQ(r.suppression_factor(), 0.5);
  EXPECT_EQ(random_.calls(), 1);
  r = Inc("s", 1, 9, v1::STRATEGY_SUPPRESSED);  // 12 + 9 > hard 20: declined, factor 1
  EXPECT_EQ(r.decision(), v1::DECISION_SUPPRESSED);
  EXPECT_FALSE(r.allowed());
  EXPECT_EQ(r.suppression_factor(), 1);
  EXPECT_EQ(r.retry_after_ms(), 0);
  auto g = Get("s", v1::STRATEGY_SUPPRESSED);
  EXPECT_EQ(g.total(), 22u);               // observed: 10 + 2 + 1 + 9
  EXPECT_EQ(g.declined(), 10u);            // 1 + 9
  EXPECT_EQ(g.suppression_factor(), 0.5);  // still cached
  auto unknown = Get("nothing", v1::STRATEGY_SUPPRESSED);
  EXPECT_EQ(unknown.total(), 0u);
  EXPECT_EQ(unknown.declined(), 0u);
  EXPECT_EQ(unknown.suppression_factor(), 0);
}

TEST_F(RateLimitServiceTest, ValidationErrorsAreInvalidArgumentNamingTheField) {
  struct Case {
    v1::RateLimitIncRequest req;
    std::string field;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<Case> cases = {
      {IncReq("k", 0, 1), "rate_per_second"},
      {IncReq("k", -1, 1), "rate_per_second"},
      {IncReq("k", nan, 1), "rate_per_second"},
      {IncReq("k", inf, 1), "rate_per_second"},
      {IncReq("k", -inf, 1), "rate_per_second"},
      {IncReq("", 1, 1), "key"},
      {IncReq("a:b", 1, 1), "key"},
      {IncReq(std::string(256, 'x'), 1, 1), "key"},
      {IncReq("k", 1, 1, v1::STRATEGY_UNSPECIFIED, v1::PROVIDER_UNSPECIFIED, "n:s"), "namespace"},
      {IncReq("k", 1, 1, static_cast<v1::Strategy>(7)), "strategy"},
      {IncReq("k", 1, 1, v1::STRATEGY_UNSPECIFIED, static_cast<v1::Provider>(9)), "provider"},
  };
  // (Invalid UTF-8 never gets here: protobuf's parser refuses it first, see README.)
  for (const auto& c : cases) {
    v1::RateLimitIncResponse resp;
    auto s = Call(c.req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_NE(s.error_message().find(c.field), std::string::npos) << s.error_message();
  }
  v1::RateLimitGetResponse g;
  EXPECT_EQ(GetStatus("a:b", v1::STRATEGY_UNSPECIFIED, v1::PROVIDER_UNSPECIFIED, &g).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  auto s = GetStatus("k", static_cast<v1::Strategy>(5), v1::PROVIDER_UNSPECIFIED, &g);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("strategy"), std::string::npos);
  s = GetStatus("k", v1::STRATEGY_UNSPECIFIED, static_cast<v1::Provider>(4), &g);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("provider"), std::string::npos);
  EXPECT_EQ(local()->size(), 0u);  // nothing reached the provider
}

TEST_F(RateLimitServiceTest, ProvidersNotGivenAreUnimplemented) {
  for (auto p : {v1::PROVIDER_REDIS, v1::PROVIDER_HYBRID}) {
    v1::RateLimitIncResponse resp;
    auto s = Call(IncReq("k", 1, 1, v1::STRATEGY_ABSOLUTE, p), &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
    EXPECT_NE(s.error_message().find(v1::Provider_Name(p)), std::string::npos) << s.error_message();
    v1::RateLimitGetResponse g;
    s = GetStatus("k", v1::STRATEGY_ABSOLUTE, p, &g);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
  // PROVIDER_LOCAL and PROVIDER_UNSPECIFIED are the same provider.
  v1::RateLimitIncResponse resp;
  ASSERT_TRUE(Call(IncReq("l", 1, 10, v1::STRATEGY_ABSOLUTE, v1::PROVIDER_LOCAL), &resp).ok());
  EXPECT_EQ(Inc("l", 1, 1).decision(), v1::DECISION_REJECTED);
}

TEST_F(RateLimitServiceTest, BatchInOrderWithPerItemErrors) {
  v1::RateLimitBatchRequest req;
  *req.add_ops()->mutable_inc() = IncReq("b", 1, 6);  // ALLOWED (6/10)
  *req.add_ops()->mutable_inc() = IncReq("b", 1, 5);  // REJECTED
  *req.add_ops()->mutable_inc() = IncReq("b", 0, 1);  // INVALID_ARGUMENT
  req.add_ops();                                      // no op: INVALID_ARGUMENT
  *req.add_ops()->mutable_inc() =
      IncReq("b", 1, 1, v1::STRATEGY_ABSOLUTE, v1::PROVIDER_REDIS);            // UNIMPLEMENTED
  *req.add_ops()->mutable_inc() = IncReq("b", 1, 4);                           // ALLOWED (10/10)
  *req.add_ops()->mutable_inc() = IncReq("b", 1, 1);                           // REJECTED
  *req.add_ops()->mutable_inc() = IncReq("c", 1, 1, v1::STRATEGY_SUPPRESSED);  // ALLOWED
  v1::RateLimitBatchResponse resp;
  ASSERT_TRUE(Batch(req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 8);
  auto decision = [&](int i) { return resp.results(i).inc().decision(); };
  EXPECT_EQ(resp.results(0).code(), 0);
  EXPECT_EQ(decision(0), v1::DECISION_ALLOWED);
  EXPECT_EQ(decision(1), v1::DECISION_REJECTED);
  EXPECT_EQ(resp.results(1).inc().remaining_after_waiting(), 6u);
  EXPECT_EQ(resp.results(2).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_NE(resp.results(2).message().find("rate_per_second"), std::string::npos);
  EXPECT_FALSE(resp.results(2).has_inc());
  EXPECT_EQ(resp.results(3).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(resp.results(4).code(), static_cast<int>(grpc::StatusCode::UNIMPLEMENTED));
  EXPECT_EQ(decision(5), v1::DECISION_ALLOWED);
  EXPECT_EQ(decision(6), v1::DECISION_REJECTED);
  EXPECT_EQ(decision(7), v1::DECISION_ALLOWED);
  EXPECT_EQ(Get("b").total(), 10u);
}

TEST_F(RateLimitServiceTest, BatchOfTenThousandCountsExactlyAndMoreIsRefused) {
  v1::RateLimitBatchRequest req;
  for (int i = 0; i < 10000; ++i) *req.add_ops()->mutable_inc() = IncReq("many", 300, 1);
  v1::RateLimitBatchResponse resp;
  ASSERT_TRUE(Batch(req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 10000);
  int allowed = 0;
  for (const auto& r : resp.results()) allowed += r.inc().allowed() ? 1 : 0;
  EXPECT_EQ(allowed, 3000);  // capacity 300 × 10
  for (int i = 0; i < 3000; ++i) ASSERT_TRUE(resp.results(i).inc().allowed()) << i;
  *req.add_ops()->mutable_inc() = IncReq("many", 300, 1);
  auto s = Batch(req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("10000"), std::string::npos);
}

// The same server with an asynchronous provider as REDIS.
class RateLimitServiceAsyncTest : public RateLimitServiceTest {
 protected:
  RateLimitServiceAsyncTest() { with_async_ = true; }
};

TEST_F(RateLimitServiceAsyncTest, UnaryCallsCompleteFromTheProvidersThread) {
  v1::RateLimitIncResponse resp;
  ASSERT_TRUE(Call(IncReq("x", 1, 1, v1::STRATEGY_SUPPRESSED, v1::PROVIDER_REDIS), &resp).ok());
  EXPECT_EQ(resp.remaining_after_waiting(), 1u);
  ASSERT_TRUE(Call(IncReq("x", 1, 1, v1::STRATEGY_ABSOLUTE, v1::PROVIDER_REDIS), &resp).ok());
  EXPECT_EQ(resp.remaining_after_waiting(), 2u);
  auto s = Call(IncReq("fail", 1, 1, v1::STRATEGY_ABSOLUTE, v1::PROVIDER_REDIS), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(s.error_message(), "fake: Redis is unreachable");
  v1::RateLimitGetResponse g;
  ASSERT_TRUE(GetStatus("x", v1::STRATEGY_SUPPRESSED, v1::PROVIDER_REDIS, &g).ok());
  EXPECT_EQ(g.total(), 7u);
  EXPECT_EQ(g.declined(), 2u);
  EXPECT_EQ(g.suppression_factor(), 0.5);
  // HYBRID is still not given.
  s = Call(IncReq("x", 1, 1, v1::STRATEGY_ABSOLUTE, v1::PROVIDER_HYBRID), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

// Items of one state run one at a time and in order (answer n of a key is its n-th item);
// items of distinct states are pipelined (never more than 256 at once); inline LOCAL items
// and failed items keep their places.
TEST_F(RateLimitServiceAsyncTest, BatchPipelinesDistinctStatesAndKeepsEachStatesOrder) {
  v1::RateLimitBatchRequest req;
  std::vector<std::string> keys;
  for (int i = 0; i < 3000; ++i) {
    const std::string key = i % 7 == 0   ? "fail"
                            : i % 5 == 0 ? "deg"
                            : i % 3 == 0 ? "a"
                                         : "k" + std::to_string(i % 1000);
    keys.push_back(key);
    const auto provider = i % 11 == 0 ? v1::PROVIDER_LOCAL : v1::PROVIDER_REDIS;
    *req.add_ops()->mutable_inc() = IncReq(key, 1e6, 1, v1::STRATEGY_ABSOLUTE, provider);
  }
  v1::RateLimitBatchResponse resp;
  ASSERT_TRUE(Batch(req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 3000);
  std::map<std::string, uint64_t> seen;
  int local = 0;
  for (int i = 0; i < 3000; ++i) {
    const auto& r = resp.results(i);
    if (i % 11 == 0) {  // LOCAL: answered inline
      EXPECT_EQ(r.code(), 0) << i;
      EXPECT_EQ(r.inc().decision(), v1::DECISION_ALLOWED);
      ++local;
      continue;
    }
    if (keys[i] == "fail") {
      ++seen[keys[i]];
      EXPECT_EQ(r.code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE)) << i;
      EXPECT_FALSE(r.has_inc());
      continue;
    }
    ASSERT_EQ(r.code(), 0) << i << ": " << r.message();
    EXPECT_EQ(r.inc().remaining_after_waiting(), ++seen[keys[i]]) << i << " " << keys[i];
    EXPECT_EQ(r.inc().degraded(), keys[i] == "deg");
  }
  EXPECT_EQ(async_.calls(), 3000 - local);
  EXPECT_EQ(async_.same_key_overlaps(), 0);
  EXPECT_LE(async_.max_outstanding(), 256u);
  EXPECT_GE(async_.max_outstanding(), 2u);  // pipelined
  EXPECT_TRUE(HasLine(metrics().Text(), R"(distkit_ratelimit_degraded_total{provider="redis"} )" +
                                            std::to_string(seen["deg"])));
}

// distkit_ratelimit_decisions_total{provider,strategy,decision}: every answer of Inc and of
// Batch items, never a key in a label; errors are not decisions.
TEST_F(RateLimitServiceTest, DecisionsAreCountedByProviderStrategyAndDecision) {
  const std::string before = metrics().Text();
  EXPECT_TRUE(HasLine(before, R"(distkit_ratelimit_decisions_total{decision="allowed",)"
                              R"(provider="hybrid",strategy="suppressed"} 0)"))
      << before;
  EXPECT_TRUE(HasLine(before, R"(distkit_ratelimit_degraded_total{provider="redis"} 0)"));
  Inc("secret-key", 1, 10);                           // allowed
  Inc("secret-key", 1, 1);                            // rejected
  Inc("secret-key", 1, 10, v1::STRATEGY_SUPPRESSED);  // allowed (soft 10)
  Inc("secret-key", 1, 11, v1::STRATEGY_SUPPRESSED);  // suppressed (> hard 20)
  v1::RateLimitIncResponse resp;
  EXPECT_FALSE(Call(IncReq("secret-key", 0, 1), &resp).ok());  // not a decision
  v1::RateLimitBatchRequest req;
  *req.add_ops()->mutable_inc() = IncReq("other", 1, 1, v1::STRATEGY_ABSOLUTE, v1::PROVIDER_LOCAL);
  *req.add_ops()->mutable_inc() = IncReq("secret-key", 1, 1);
  v1::RateLimitBatchResponse batch;
  ASSERT_TRUE(Batch(req, &batch).ok());
  const std::string text = metrics().Text();
  auto line = [](const char* decision, const char* strategy, int n) {
    return std::string("distkit_ratelimit_decisions_total{decision=\"") + decision +
           "\",provider=\"local\",strategy=\"" + strategy + "\"} " + std::to_string(n);
  };
  EXPECT_TRUE(HasLine(text, line("allowed", "absolute", 2))) << text;
  EXPECT_TRUE(HasLine(text, line("rejected", "absolute", 2))) << text;
  EXPECT_TRUE(HasLine(text, line("allowed", "suppressed", 1))) << text;
  EXPECT_TRUE(HasLine(text, line("suppressed", "suppressed", 1))) << text;
  EXPECT_TRUE(HasLine(text, line("rejected", "suppressed", 0))) << text;
  EXPECT_TRUE(HasLine(text, R"(distkit_ratelimit_degraded_total{provider="local"} 0)"));
  EXPECT_EQ(text.find("secret-key"), std::string::npos);
}

}  // namespace
}  // namespace distkit
