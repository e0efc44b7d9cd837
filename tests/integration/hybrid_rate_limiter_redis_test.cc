// The HYBRID rate limiter against a real redis-server: lua/ratelimit_hybrid.lua on its own
// (exactly-once push, the lease rule, bucket expiry by last join, TTL, stale members, argument
// checks), then core::HybridRateLimiter with two or three instances in one process, each on its
// own Executor as if in separate daemons: sync between them, exactly-once after a lost reply and
// after a real timeout, the overshoot bound with three instances hammering one key, Redis paused
// or stopped (degraded answers, the degraded budget) and the re-sync after it returns.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/config/config.h"
#include "daemon/core/hybrid_rate_limiter.h"
#include "daemon/redis/executor.h"
#include "daemon/redis/redis_url.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit::testing {
namespace {

using namespace std::chrono_literals;
using core::HybridRateLimiter;
using core::RateDecision;
using core::RateIncRequest;
using core::RateIncResult;
using core::RateLimitSettings;
using core::RateStrategy;

constexpr auto kCommandTimeout = 300ms;
constexpr auto kAnswerBound = 20s;  // only a hang takes this long

std::unique_ptr<redis::Executor> MakeExecutor(const RedisServer& redis) {
  redis::ExecutorOptions o;
  o.seeds = {*redis::ParseRedisUrl(redis.url())};
  o.command_timeout = kCommandTimeout;
  o.ping_interval = 100ms;
  o.unhealthy_after = 500ms;
  o.max_backoff = 200ms;
  auto ex = std::make_unique<redis::Executor>(o);
  ex->Start();
  EXPECT_TRUE(PollUntil([&] { return ex->Healthy(); }, 10s));
  return ex;
}

absl::StatusOr<redis::Reply> RunScript(redis::RedisClient& client, const std::string& key,
                                       std::vector<std::string> args) {
  auto p = std::make_shared<std::promise<absl::StatusOr<redis::Reply>>>();
  auto f = p->get_future();
  client.Script("ratelimit_hybrid", {key}, std::move(args),
                [p](absl::StatusOr<redis::Reply> r) { p->set_value(std::move(r)); });
  if (f.wait_for(kAnswerBound) != std::future_status::ready) return absl::InternalError("hung");
  return f.get();
}

// ---------------------------------------------------------------- the script

struct SyncArgs {
  std::string mode = "sync", member = "m1";
  uint64_t cum_acc = 0, cum_dec = 0, acked_acc = 0, acked_dec = 0, expired_acc = 0, expired_dec = 0,
           held = 0;
  bool want = true;
  uint64_t need = 0, capacity = 100;
  int64_t window_ms = 10000, bucket_ms = 100, lease_ms = 1000;
  std::string rate;
  std::vector<std::string> Args() const {
    return {mode,
            member,
            absl::StrCat(cum_acc),
            absl::StrCat(cum_dec),
            absl::StrCat(acked_acc),
            absl::StrCat(acked_dec),
            absl::StrCat(expired_acc),
            absl::StrCat(expired_dec),
            absl::StrCat(held),
            want ? "1" : "0",
            absl::StrCat(need),
            absl::StrCat(capacity),
            absl::StrCat(window_ms),
            absl::StrCat(bucket_ms),
            absl::StrCat(lease_ms),
            rate};
  }
};

struct SyncResult {
  int64_t grant = 0, limit = 0, acc = 0, dec = 0, last_second = 0, oldest_age = 0, oldest_acc = 0,
          active = 0, free = 0, now = 0;
  std::string cum_acc, cum_dec, rate;
  int64_t taken = 0;
};

int64_t Int(const redis::Reply& r) {
  if (r.type == redis::Reply::Type::kInteger) return r.integer;
  int64_t v = 0;
  EXPECT_TRUE(absl::SimpleAtoi(r.str, &v)) << r.DebugString();
  return v;
}

class HybridScriptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_TRUE(redis_);
    executor_ = MakeExecutor(*redis_);
  }
  void TearDown() override {
    if (executor_) executor_->Stop();
  }
  SyncResult Sync(const SyncArgs& a, const std::string& key = kKey) {
    auto r = RunScript(*executor_, key, a.Args());
    EXPECT_TRUE(r.ok()) << r.status();
    SyncResult out;
    if (!r.ok()) return out;
    EXPECT_EQ(r->type, redis::Reply::Type::kArray) << r->DebugString();
    if (r->elements.size() != 14) {
      ADD_FAILURE() << r->DebugString();
      return out;
    }
    const auto& e = r->elements;
    out = {Int(e[0]), Int(e[1]), Int(e[2]),  Int(e[3]), Int(e[4]), Int(e[5]), Int(e[6]),
           Int(e[7]), Int(e[8]), Int(e[11]), e[9].str,  e[10].str, e[12].str, Int(e[13])};
    return out;
  }
  int64_t RedisNowMs() {
    const std::vector<std::string> t = absl::StrSplit(redis_->Command({"TIME"}), ',');
    return std::stoll(t.at(0)) * 1000 + std::stoll(t.at(1)) / 1000;
  }
  static inline const std::string kKey =
      core::HybridRateLimitKey("ns", "k", RateStrategy::kAbsolute);
  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<redis::Executor> executor_;
};

TEST_F(HybridScriptTest, PushesEachUnitExactlyOnce) {
  SyncArgs a;
  a.cum_acc = 5;
  EXPECT_EQ(Sync(a).acc, 5);
  EXPECT_EQ(Sync(a).acc, 5);  // the same cumulative again: a retry, nothing new
  a.cum_acc = 8;
  auto r = Sync(a);
  EXPECT_EQ(r.acc, 8);
  EXPECT_EQ(r.cum_acc, "8");
  a.cum_acc = 3;  // an older, late sync: ignored
  r = Sync(a);
  EXPECT_EQ(r.acc, 8);
  EXPECT_EQ(r.cum_acc, "8");
  SyncArgs b;  // another member's usage adds up
  b.member = "m2";
  b.cum_acc = 4;
  b.cum_dec = 9;
  r = Sync(b);
  EXPECT_EQ(r.acc, 12);
  EXPECT_EQ(r.dec, 9);
  EXPECT_EQ(r.last_second, 21);
}

TEST_F(HybridScriptTest, CumulativesWrapAt2To62AndAckedIsTheBaseOfAForgottenMember) {
  SyncArgs a;
  a.acked_acc = (uint64_t{1} << 62) - 2;  // this member's field is gone: the last ack is the base
  a.cum_acc = 3;                          // 2 + 3 units later, wrapped
  EXPECT_EQ(Sync(a).acc, 5);
  EXPECT_EQ(Sync(a).acc, 5);
}

TEST_F(HybridScriptTest, UnitsOlderThanTheWindowAreRecordedButNotCounted) {
  SyncArgs a;
  a.cum_acc = 50;
  a.expired_acc = 45;
  auto r = Sync(a);
  EXPECT_EQ(r.acc, 5);
  EXPECT_EQ(r.cum_acc, "50");
}

TEST_F(HybridScriptTest, LeasesNeverExceedWhatIsLeftAndFollowTheFairShare) {
  SyncArgs a, b, c;
  a.member = "a";
  b.member = "b";
  c.member = "c";
  auto ra = Sync(a);
  EXPECT_EQ(ra.grant, 100);  // alone: everything
  auto rb = Sync(b);
  EXPECT_EQ(rb.grant, 0);  // all leased
  EXPECT_EQ(rb.limit, 50);
  EXPECT_EQ(rb.active, 2);
  // a used 20 and keeps 80 (held); its limit is now its share: it will trim to it.
  a.cum_acc = 20;
  a.held = 80;
  ra = Sync(a);
  EXPECT_EQ(ra.grant, 0);
  EXPECT_EQ(ra.limit, 40);  // ceil((100 - 20) / 2)
  a.held = 40;              // what a keeps after trimming
  ra = Sync(a);
  EXPECT_EQ(ra.free, 40);  // 100 - 20 used - 40 held by a
  rb = Sync(b);
  EXPECT_EQ(rb.grant, 40);
  EXPECT_EQ(rb.free, 0);
  auto rc = Sync(c);  // a third daemon: nothing left until the others shrink
  EXPECT_EQ(rc.grant, 0);
  EXPECT_EQ(rc.active, 3);
  EXPECT_EQ(rc.limit, 27);  // ceil(80 / 3)
  // A waiting request's need is granted from what nobody holds, never more.
  b.held = 10;  // b used 30 of its 40 (not pushed yet) and grows back to its share
  rb = Sync(b);
  EXPECT_EQ(rb.grant, 17);  // 27 - 10
  c.need = 35;
  rc = Sync(c);
  EXPECT_EQ(rc.grant, 13);  // 100 - 20 used - 40 (a) - 27 (b): all that nobody holds
  EXPECT_EQ(rc.limit, 35);
  EXPECT_EQ(rc.free, 0);
  // Releasing: want 0, nothing held.
  a.want = false;
  a.held = 0;
  ra = Sync(a);
  EXPECT_EQ(ra.grant, 0);
  EXPECT_EQ(ra.active, 2);
  EXPECT_EQ(ra.free, 40);
}

TEST_F(HybridScriptTest, ABucketLivesAWindowAfterItsLastJoin) {
  const int64_t now = RedisNowMs();
  const std::string joined = absl::StrCat(now - 15000), lone = absl::StrCat(now - 20000);
  redis_->Command({"HSET", kKey, "b:" + joined, "7", "e:" + joined, absl::StrCat(now - 500),
                   "b:" + lone, "3", "x:" + lone, "2"});
  SyncArgs a;
  a.want = false;
  auto r = Sync(a);
  EXPECT_EQ(r.acc, 7);  // opened 15 s ago, last joined 0.5 s ago: live
  EXPECT_EQ(r.dec, 0);
  EXPECT_GE(r.oldest_age, 500);
  EXPECT_EQ(r.oldest_acc, 7);
  EXPECT_EQ(redis_->Command({"HEXISTS", kKey, "b:" + lone}), "0");  // expired: deleted
  EXPECT_EQ(redis_->Command({"HEXISTS", kKey, "x:" + lone}), "0");
  // Units pushed within `bucket_ms` of a bucket's opening join it and move its last join.
  SyncArgs b;
  b.member = "b";
  b.cum_acc = 1;
  b.bucket_ms = 60000;
  b.window_ms = 60000;
  Sync(b);
  b.cum_acc = 2;
  r = Sync(b);
  EXPECT_EQ(r.acc, 9);
  const std::string fields = redis_->Command({"HKEYS", kKey});
  EXPECT_NE(fields.find("e:"), std::string::npos) << fields;
}

TEST_F(HybridScriptTest, KeyExpiresByItselfAndStaleMembersAreForgotten) {
  const int64_t now = RedisNowMs();
  redis_->Command({"HSET", kKey, "m:old", absl::StrCat(now - 80000, " 50 1 0 0"), "m:recent",
                   absl::StrCat(now - 1000, " 30 1 0 0")});
  SyncArgs a;
  auto r = Sync(a);
  EXPECT_EQ(r.grant, 100);  // neither lapsed member's lease counts
  EXPECT_EQ(r.active, 1);
  EXPECT_EQ(redis_->Command({"HEXISTS", kKey, "m:old"}), "0");     // past window + 60 s
  EXPECT_EQ(redis_->Command({"HEXISTS", kKey, "m:recent"}), "1");  // kept for its dedup
  const int64_t ttl = std::stoll(redis_->Command({"PTTL", kKey}));
  EXPECT_GT(ttl, 10000);                 // at least the window
  EXPECT_LE(ttl, 10000 + 1000 + 60000);  // window + lease + the stale horizon
}

TEST_F(HybridScriptTest, ReadWritesNothing) {
  SyncArgs a;
  a.mode = "read";
  a.cum_acc = 5;
  auto r = Sync(a);
  EXPECT_EQ(r.acc, 0);
  EXPECT_EQ(r.grant, 0);
  EXPECT_EQ(redis_->Command({"EXISTS", kKey}), "0");
}

TEST_F(HybridScriptTest, BadArgumentsAreErrorsAndWriteNothing) {
  const std::vector<std::vector<std::string>> bad = {
      {"sync", "m"},  // too few
      {"nope", "m", "0", "0", "0", "0", "0", "0", "0", "1", "0", "100", "1000", "100", "10", ""},
      {"sync", "m", "-1", "0", "0", "0", "0", "0", "0", "1", "0", "100", "1000", "100", "10", ""},
      {"sync", "m", "4611686018427387904", "0", "0", "0", "0", "0", "0", "1", "0", "100", "1000",
       "100", "10", ""},  // 2^62: out of the cumulative range
      {"sync", "m", "0", "0", "0", "0", "0", "0", "0", "2", "0", "100", "1000", "100", "10", ""},
      {"sync", "m", "0", "0", "0", "0", "0", "0", "0", "1", "0", "100", "1000", "2000", "10", ""},
      {"sync", "m", "0", "0", "0", "0", "0", "0", "0", "1", "0", "100", "1000", "100", "10", "x"},
      {"sync", "a b", "0", "0", "0", "0", "0", "0", "0", "1", "0", "100", "1000", "100", "10", ""},
  };
  for (const auto& args : bad) {
    auto r = RunScript(*executor_, kKey, args);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->is_error()) << absl::StrJoin(args, " ");
  }
  EXPECT_EQ(redis_->Command({"EXISTS", kKey}), "0");
}

// ---------------------------------------------------------------- the provider

// Forwards to a real executor; can lose the reply of the next script call after Redis ran it.
class LossyClient final : public redis::RedisClient {
 public:
  explicit LossyClient(redis::RedisClient* inner) : inner_(inner) {}
  void Command(std::vector<std::string> argv, redis::ReplyCallback done) override {
    inner_->Command(std::move(argv), std::move(done));
  }
  void Script(std::string_view name, std::vector<std::string> keys, std::vector<std::string> args,
              redis::ReplyCallback done) override {
    if (lose_next_.exchange(false)) {
      inner_->Script(name, std::move(keys), std::move(args),
                     [this, done = std::move(done)](absl::StatusOr<redis::Reply> r) mutable {
                       EXPECT_TRUE(r.ok() && !r->is_error());  // Redis did run it
                       lost_++;
                       done(absl::DeadlineExceededError("test: the reply was lost"));
                     });
      return;
    }
    inner_->Script(name, std::move(keys), std::move(args), std::move(done));
  }
  bool Healthy() const override { return inner_->Healthy(); }
  void LoseNextReply() { lose_next_ = true; }
  int lost() const { return lost_.load(); }

 private:
  redis::RedisClient* inner_;
  std::atomic<bool> lose_next_{false};
  std::atomic<int> lost_{0};
};

RateLimitSettings Settings(int64_t window_ms = 10000) {
  RateLimitSettings s;
  s.window_ms = window_ms;
  s.bucket_ms = 100;
  s.sync_interval_ms = 10;
  s.hard_limit_factor = 2;
  s.suppression_cache_ms = 100;
  return s;
}

RateIncRequest Req(double rate, uint64_t count = 1,
                   RateStrategy strategy = RateStrategy::kAbsolute) {
  RateIncRequest r;
  r.ns = "ns";
  r.key = "k";
  r.rate_per_second = rate;
  r.count = count;
  r.strategy = strategy;
  return r;
}

// One "daemon": its own executor, a lossy wrapper, a HybridRateLimiter.
class Daemon {
 public:
  Daemon(const RedisServer& redis, RateLimitSettings s, bool background,
         core::RandomSource* random = nullptr)
      : executor_(MakeExecutor(redis)), lossy_(executor_.get()) {
    core::HybridRateLimiterOptions o;
    o.settings = s;
    o.dedup_id = config::NewUuidV4();
    o.random = random;
    limiter_ = std::make_unique<HybridRateLimiter>(&lossy_, o);
    if (background) limiter_->Start();
  }
  ~Daemon() {
    limiter_.reset();  // waits for its outstanding replies (the executor answers them)
    executor_->Stop();
  }
  absl::StatusOr<RateIncResult> Inc(const RateIncRequest& req) {
    if (auto r = limiter_->TryInc(req)) return *r;
    auto p = std::make_shared<std::promise<absl::StatusOr<RateIncResult>>>();
    auto f = p->get_future();
    limiter_->Inc(req, [p](absl::StatusOr<RateIncResult> r) { p->set_value(std::move(r)); });
    if (f.wait_for(kAnswerBound) != std::future_status::ready) return absl::InternalError("hung");
    return f.get();
  }
  absl::StatusOr<core::RateGetResult> Get(RateStrategy strategy = RateStrategy::kAbsolute) {
    auto p = std::make_shared<std::promise<absl::StatusOr<core::RateGetResult>>>();
    auto f = p->get_future();
    limiter_->Get("ns", "k", strategy,
                  [p](absl::StatusOr<core::RateGetResult> r) { p->set_value(std::move(r)); });
    if (f.wait_for(kAnswerBound) != std::future_status::ready) return absl::InternalError("hung");
    return f.get();
  }
  // Syncs until every sync sent has been answered.
  void SyncAndWait() {
    limiter_->SyncNow();
    EXPECT_TRUE(PollUntil([&] { return limiter_->outstanding() == 0; }, kAnswerBound));
  }
  HybridRateLimiter& limiter() { return *limiter_; }
  LossyClient& lossy() { return lossy_; }

 private:
  std::unique_ptr<redis::Executor> executor_;
  LossyClient lossy_;
  std::unique_ptr<HybridRateLimiter> limiter_;
};

class HybridProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_TRUE(redis_);
  }
  // Live accepted units of the key in Redis, read straight from the hash.
  int64_t RedisAccepted(RateStrategy strategy = RateStrategy::kAbsolute) {
    const std::string all =
        redis_->Command({"HGETALL", core::HybridRateLimitKey("ns", "k", strategy)});
    const std::vector<std::string> parts = absl::StrSplit(all, ',');
    int64_t sum = 0;
    for (size_t i = 0; i + 1 < parts.size(); i += 2) {
      if (parts[i].rfind("b:", 0) == 0) sum += std::stoll(parts[i + 1]);
    }
    return sum;
  }
  std::unique_ptr<RedisServer> redis_;
};

TEST_F(HybridProviderTest, UsageOfOneDaemonReachesTheOthers) {
  Daemon a(*redis_, Settings(), true), b(*redis_, Settings(), true);
  for (int i = 0; i < 30; ++i) {
    auto r = a.Inc(Req(10));  // capacity 100 per 10 s
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->allowed);
  }
  EXPECT_TRUE(PollUntil(
      [&] {
        auto g = b.Get();
        return g.ok() && g->total == 30;
      },
      10s));
  // a uses the rest; b, which never admitted anything, finds nothing left.
  int a_allowed = 30;
  while (a_allowed < 200) {
    auto r = a.Inc(Req(10));
    ASSERT_TRUE(r.ok());
    if (!r->allowed) break;
    ++a_allowed;
  }
  EXPECT_EQ(a_allowed, 100);
  auto rb = b.Inc(Req(10));
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->decision, RateDecision::kRejected);
  EXPECT_FALSE(rb->degraded);
  EXPECT_GT(rb->retry_after_ms, 0);
  EXPECT_TRUE(PollUntil([&] { return RedisAccepted() == 100; }, 10s));
}

// distkitd calls Shutdown on SIGTERM: the usage admitted since the last sync reaches Redis and the
// lease is given back, so another daemon can use the rest of the capacity at once (without the
// release it would wait for the lease to lapse: 5 s with a 250 ms sync interval).
TEST_F(HybridProviderTest, ShutdownPushesTheLastUsageAndReleasesTheLease) {
  RateLimitSettings s = Settings();  // capacity 100 per 10 s at rate 10
  s.sync_interval_ms = 250;
  Daemon a(*redis_, s, /*background=*/false), b(*redis_, s, /*background=*/false);
  for (int i = 0; i < 30; ++i) {
    auto r = a.Inc(Req(10));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->allowed) << i;
  }
  EXPECT_LT(RedisAccepted(), 30);  // no periodic sync: most of it only in a's memory
  EXPECT_EQ(a.limiter().Shutdown(10s), 0);
  EXPECT_EQ(RedisAccepted(), 30);
  int b_allowed = 0;
  for (int i = 0; i < 100; ++i) {
    auto r = b.Inc(Req(10));
    ASSERT_TRUE(r.ok()) << r.status();
    if (!r->allowed) break;
    ++b_allowed;
  }
  EXPECT_EQ(b_allowed, 70);
  b.SyncAndWait();
  EXPECT_EQ(RedisAccepted(), 100);
}

TEST_F(HybridProviderTest, AfterOneDaemonExhaustsTheCapacityTheOthersReject) {
  Daemon a(*redis_, Settings(), true), b(*redis_, Settings(), true), c(*redis_, Settings(), true);
  int total = 0;
  // a arrives first and gets the whole capacity as its lease; b and c get a share once a's
  // syncs trimmed it (they count as active from their first request on).
  for (Daemon* d : {&a, &b, &c}) {
    EXPECT_TRUE(PollUntil(
        [&] {
          auto r = d->Inc(Req(10));
          if (r.ok() && r->allowed) ++total;
          return r.ok() && r->allowed;
        },
        kAnswerBound));
  }
  for (int i = 0; i < 1000; ++i) {  // a uses everything it can get
    auto r = a.Inc(Req(10));
    ASSERT_TRUE(r.ok());
    if (r->allowed) ++total;
  }
  // b and c may use what is left of their leases, then reject, from memory.
  for (Daemon* d : {&b, &c}) {
    EXPECT_TRUE(PollUntil(
        [&] {
          auto r = d->Inc(Req(10));
          if (r.ok() && r->allowed) ++total;
          return r.ok() && r->decision == RateDecision::kRejected && !r->degraded;
        },
        kAnswerBound));
  }
  EXPECT_LE(total, 100);
  EXPECT_TRUE(PollUntil([&] { return RedisAccepted() == total; }, 10s)) << RedisAccepted();
}

TEST_F(HybridProviderTest, ALostSyncReplyIsNotCountedTwice) {
  Daemon a(*redis_, Settings(), false);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(a.Inc(Req(10)).ok());
  a.lossy().LoseNextReply();
  a.SyncAndWait();
  EXPECT_EQ(a.lossy().lost(), 1);
  EXPECT_EQ(RedisAccepted(), 40);  // applied; the daemon does not know
  auto r = a.Inc(Req(10));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->allowed);
  EXPECT_TRUE(r->degraded);  // the last sync failed
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(a.Inc(Req(10)).ok());
  a.SyncAndWait();
  EXPECT_EQ(RedisAccepted(), 45);
  auto after = a.Inc(Req(10));
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->degraded);
}

TEST_F(HybridProviderTest, ASyncThatTimedOutInAPausedRedisIsNotCountedTwice) {
  Daemon a(*redis_, Settings(), false);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a.Inc(Req(10)).ok());
  redis_->Pause();
  a.limiter().SyncNow();  // stuck in the paused server, then times out
  EXPECT_TRUE(PollUntil([&] { return a.limiter().stats().sync_failures.load() >= 1; }, 10s));
  redis_->Resume();  // the server reads the stuck command: it may run after all
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(a.Inc(Req(10)).ok());
  EXPECT_TRUE(PollUntil(
      [&] {
        a.SyncAndWait();
        return RedisAccepted() == 15;
      },
      10s))
      << RedisAccepted();
  a.SyncAndWait();
  EXPECT_EQ(RedisAccepted(), 15);
}

TEST_F(HybridProviderTest, ThreeDaemonsHammeringOneKeyStayWithinTheBound) {
  // W = 1 s, capacity 100: many windows in a short run.
  const RateLimitSettings s = Settings(1000);
  std::vector<std::unique_ptr<Daemon>> daemons;
  for (int i = 0; i < 3; ++i) daemons.push_back(std::make_unique<Daemon>(*redis_, s, true));
  std::vector<std::vector<int64_t>> admitted(3);  // steady-clock ns of each admitted unit
  std::atomic<int64_t> rejected{0}, errors{0};
  const auto end = std::chrono::steady_clock::now() + 4s;
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      while (std::chrono::steady_clock::now() < end) {
        auto r = daemons[i]->Inc(Req(100));
        const int64_t t = std::chrono::steady_clock::now().time_since_epoch().count();
        if (!r.ok()) {
          errors++;
        } else if (r->allowed) {
          admitted[i].push_back(t);
        } else {
          rejected++;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<int64_t> all;
  for (const auto& v : admitted) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  size_t max_in_window = 0, lo = 0;
  for (size_t hi = 0; hi < all.size(); ++hi) {
    while (all[hi] - all[lo] >= 1'000'000'000) ++lo;
    max_in_window = std::max(max_in_window, hi - lo + 1);
  }
  std::cout << "[ 3 daemons, capacity 100 per 1 s window, 4 s ] admitted " << all.size() << " ("
            << admitted[0].size() << "/" << admitted[1].size() << "/" << admitted[2].size()
            << "), rejected " << rejected.load() << ", max admitted in any 1 s window "
            << max_in_window << "\n";
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(rejected.load(), 0);
  EXPECT_GE(all.size(), 100u);         // the limit was reached
  EXPECT_LE(max_in_window, 2 * 100u);  // docs/api.md#providers; at most C while Redis answers
}

TEST_F(HybridProviderTest, RedisPausedAnswersDegradedThenResyncsExactlyOnce) {
  Daemon a(*redis_, Settings(), true);
  int64_t allowed = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = a.Inc(Req(10));
    ASSERT_TRUE(r.ok());
    if (r->allowed) ++allowed;
  }
  redis_->Pause();
  bool degraded = false;
  EXPECT_TRUE(PollUntil(
      [&] {
        auto r = a.Inc(Req(10));
        if (!r.ok()) return false;
        if (r->allowed) ++allowed;
        degraded = r->degraded;
        return degraded;
      },
      10s));
  for (int i = 0; i < 20; ++i) {  // still answered while Redis is paused, degraded
    auto r = a.Inc(Req(10));
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->degraded);
    if (r->allowed) ++allowed;
  }
  redis_->Resume();
  EXPECT_TRUE(PollUntil(
      [&] {
        auto r = a.Inc(Req(10));
        if (r.ok() && r->allowed) ++allowed;
        return r.ok() && !r->degraded;
      },
      10s));
  EXPECT_LE(allowed, 100);
  EXPECT_TRUE(PollUntil([&] { return RedisAccepted() == allowed; }, 10s))
      << RedisAccepted() << " vs " << allowed;
}

TEST_F(HybridProviderTest, RedisDownLongerThanALeaseUsesTheDegradedShare) {
  // W = 1 s, capacity 100; two active daemons, so a's degraded budget is 50 per window.
  Daemon a(*redis_, Settings(1000), true), b(*redis_, Settings(1000), true);
  for (Daemon* d : {&a, &b}) {  // b is admitted once a's lease was trimmed to its share
    EXPECT_TRUE(PollUntil(
        [&] {
          auto r = d->Inc(Req(100));
          return r.ok() && r->allowed;
        },
        kAnswerBound));
  }
  // a's degraded share is C / (active daemons at a's last successful sync): make sure that
  // sync was sent after b became active (on a loaded machine a's syncs may all predate b's).
  // Two successful syncs completed from here on: at most one was in flight before (one per key).
  auto succeeded = [&] {
    const int64_t outstanding = a.limiter().outstanding();
    return static_cast<int64_t>(a.limiter().stats().syncs.load() -
                                a.limiter().stats().sync_failures.load()) -
           outstanding;
  };
  const int64_t before = succeeded();
  EXPECT_TRUE(PollUntil(
      [&] {
        (void)a.Inc(Req(100));
        return succeeded() >= before + 2 && a.limiter().outstanding() == 0;
      },
      kAnswerBound))
      << "syncs " << a.limiter().stats().syncs.load() << ", failures "
      << a.limiter().stats().sync_failures.load() << ", successes " << before << " -> "
      << succeeded();
  redis_->Stop();
  const auto stopped = std::chrono::steady_clock::now();
  const auto lapsed = stopped + std::chrono::milliseconds(a.limiter().lease_ms());
  // a's last successful sync was sent before `stopped`: from `lapsed` on, its lease is gone and
  // every admission comes from the degraded budget.
  // Each admission happened between its call's start and return: a window holds for sure the
  // admissions whose whole call lies inside it, so counting those never blames the limiter for
  // the test thread being descheduled.
  std::vector<std::pair<int64_t, int64_t>> budget_admissions;  // ns: call start, call return
  int64_t degraded_answers = 0;
  while (std::chrono::steady_clock::now() < stopped + 2500ms) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = a.Inc(Req(100));
    ASSERT_TRUE(r.ok()) << r.status();
    const auto t1 = std::chrono::steady_clock::now();
    if (r->degraded) ++degraded_answers;
    if (r->allowed && t0 >= lapsed) {
      budget_admissions.emplace_back(t0.time_since_epoch().count(), t1.time_since_epoch().count());
    }
    std::this_thread::sleep_for(1ms);  // ~1000 requests per second: the budget, not the loop
  }
  size_t max_in_window = 0;  // admissions surely inside one window of W = 1 s
  for (const auto& [start, unused] : budget_admissions) {
    size_t n = 0;
    for (const auto& [s0, s1] : budget_admissions) {
      if (s0 >= start && s1 < start + 1'000'000'000) ++n;
    }
    max_in_window = std::max(max_in_window, n);
  }
  std::cout << "[ Redis down ] degraded answers " << degraded_answers << ", admitted from the "
            << "degraded budget " << budget_admissions.size() << ", at most " << max_in_window
            << " in a 1 s window (budget 50)\n";
  EXPECT_GT(degraded_answers, 0);
  EXPECT_GE(budget_admissions.size(), 1u);  // keeps deciding: not closed
  EXPECT_LE(max_in_window, 50u);
  redis_->Restart();
  EXPECT_TRUE(PollUntil(
      [&] {
        auto r = a.Inc(Req(100));
        return r.ok() && !r->degraded;
      },
      10s));
}

TEST_F(HybridProviderTest, SuppressedHardLimitHoldsAcrossDaemons) {
  class AlwaysAdmit final : public core::RandomSource {
   public:
    double Uniform01() override { return 0; }
  } random;
  // 10/s × 10 s: soft 100, hard 200 (factor 2). Draws always admit inside the band.
  Daemon a(*redis_, Settings(), true, &random), b(*redis_, Settings(), true, &random);
  int64_t accepted = 0, declined = 0;
  for (int i = 0; i < 600; ++i) {
    Daemon& d = i % 2 == 0 ? a : b;
    auto r = d.Inc(Req(10, 1, RateStrategy::kSuppressed));
    ASSERT_TRUE(r.ok());
    EXPECT_NE(r->decision, RateDecision::kRejected);
    if (r->allowed) {
      ++accepted;
    } else {
      ++declined;
    }
  }
  EXPECT_LE(accepted, 200);
  EXPECT_GE(accepted, 100);
  EXPECT_TRUE(PollUntil(
      [&] {
        auto g = a.Get(RateStrategy::kSuppressed);
        return g.ok() && g->total == 600 && g->declined == static_cast<uint64_t>(declined);
      },
      10s));
  EXPECT_TRUE(PollUntil([&] { return RedisAccepted(RateStrategy::kSuppressed) == accepted; }, 10s));
}

}  // namespace
}  // namespace distkit::testing
