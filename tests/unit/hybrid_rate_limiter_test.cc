// HybridRateLimiter without Redis: a fake client runs a C++ model of lua/ratelimit_hybrid.lua
// (the real script is tested against a real redis-server in
// tests/integration/hybrid_rate_limiter_redis_test.cc), a manual clock drives time, and the test
// decides when each sync is answered, lost after being applied, or refused. Covers the lease
// accounting (held units, trimming to the fair share, release), exactly-once pushes, degraded
// decisions and recovery, SUPPRESSED, eviction, and randomized schedules of several daemons
// that check the overshoot bound of docs/rate_limiting.md (HYBRID).

#include "daemon/core/hybrid_rate_limiter.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daemon/core/rate_window.h"
#include "daemon/redis/reply.h"

namespace distkit {
namespace {

using core::HybridRateLimiter;
using core::HybridRateLimiterOptions;
using core::RateDecision;
using core::RateIncRequest;
using core::RateIncResult;
using core::RateStrategy;
using redis::Reply;

constexpr int64_t kNsPerMs = 1'000'000;

class ManualClock final : public core::Clock {
 public:
  int64_t NowNs() const override { return now_ns_.load(); }
  int64_t NowMs() const { return now_ns_.load() / kNsPerMs; }
  void AdvanceMs(int64_t ms) { now_ns_ += ms * kNsPerMs; }

 private:
  std::atomic<int64_t> now_ns_{1'700'000'000'000 * kNsPerMs};
};

class FixedRandom final : public core::RandomSource {
 public:
  double Uniform01() override { return value; }
  double value = 0.5;
};

// lua/ratelimit_hybrid.lua in C++ (same steps, same names), with the test's clock as Redis TIME.
class FakeHybridRedis {
 public:
  explicit FakeHybridRedis(const ManualClock* clock) : clock_(clock) {}

  Reply Run(const std::string& key, const std::vector<std::string>& a) {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_TRUE(a.size() >= 16u && a.size() <= 18u) << a.size();
    const int64_t demand = a.size() >= 17u ? static_cast<int64_t>(U(a[16])) : -1;  // -1: no cap
    const uint64_t take = a.size() >= 18u ? U(a[17]) : 0;
    const int64_t now = clock_->NowMs();
    const bool sync = a[0] == "sync";
    const std::string& member = a[1];
    const uint64_t cum_acc = U(a[2]), cum_dec = U(a[3]), acked_acc = U(a[4]), acked_dec = U(a[5]),
                   expired_acc = U(a[6]), expired_dec = U(a[7]), held = U(a[8]), need = U(a[10]),
                   cap = U(a[11]);
    const bool want = a[9] == "1";
    const int64_t window = I(a[12]), bucket = I(a[13]), lease_ms = I(a[14]);
    Key& k = keys_[key];
    // Evict (a bucket lives while now − its last join < window).
    for (auto it = k.buckets.begin(); it != k.buckets.end();) {
      it = now - it->second.stamp >= window ? k.buckets.erase(it) : std::next(it);
    }
    int64_t others_lease = 0, active = 0;
    for (auto it = k.members.begin(); it != k.members.end();) {
      if (it->first != member) {
        if (it->second.exp >= now) {
          others_lease += static_cast<int64_t>(it->second.lease);
          if (it->second.want) ++active;
        } else if (sync && now - it->second.exp > window + 60000) {
          it = k.members.erase(it);
          continue;
        }
      }
      ++it;
    }
    auto mine = k.members.find(member);
    uint64_t stored_acc = mine != k.members.end() ? mine->second.cum_acc : acked_acc;
    uint64_t stored_dec = mine != k.members.end() ? mine->second.cum_dec : acked_dec;
    if (sync) {
      uint64_t d_acc = Advance(stored_acc, cum_acc), d_dec = Advance(stored_dec, cum_dec);
      d_acc = d_acc > expired_acc ? d_acc - expired_acc : 0;
      d_dec = d_dec > expired_dec ? d_dec - expired_dec : 0;
      if (d_acc + d_dec > 0) {
        int64_t ts = now;
        if (k.newest && now - *k.newest >= 0 && now - *k.newest <= bucket) ts = *k.newest;
        k.newest = ts;
        k.buckets[ts].acc += d_acc;
        k.buckets[ts].dec += d_dec;
        k.buckets[ts].stamp = now;
        pushed_acc_ += d_acc;
      }
      if (!a[15].empty()) k.rate = a[15];
    }
    uint64_t acc = 0, dec = 0, last_second = 0;
    int64_t oldest_age = -1;
    uint64_t oldest_acc = 0;
    for (const auto& [ts, b] : k.buckets) {
      acc += b.acc;
      dec += b.dec;
      if (now - b.stamp <= 1000) last_second += b.acc + b.dec;
      if (now - b.stamp > oldest_age) {
        oldest_age = now - b.stamp;
        oldest_acc = b.acc;
      }
    }
    // take: the first waiting request, admitted here if it fits next to every lease.
    uint64_t taken = 0;
    if (sync && want && take > 0 &&
        static_cast<int64_t>(acc + take + held) + others_lease <= static_cast<int64_t>(cap)) {
      int64_t ts = now;
      if (k.newest && now - *k.newest >= 0 && now - *k.newest <= bucket) ts = *k.newest;
      k.newest = ts;
      k.buckets[ts].acc += take;
      k.buckets[ts].stamp = now;
      pushed_acc_ += take;
      acc += take;
      last_second += take;
      if (oldest_age < 0) {
        oldest_age = 0;
        oldest_acc = take;
      }
      stored_acc += take;
      taken = take;
    }
    int64_t grant = 0, limit = 0;
    if (sync && want) ++active;
    const int64_t left =
        std::max<int64_t>(0, static_cast<int64_t>(cap) - static_cast<int64_t>(acc));
    int64_t free = static_cast<int64_t>(cap) - static_cast<int64_t>(acc) - others_lease -
                   (sync ? static_cast<int64_t>(held) : 0);
    if (sync && want) {
      int64_t share = (left + active - 1) / active;
      if (demand >= 0 && demand < share) share = demand;
      limit = std::max<int64_t>(share, static_cast<int64_t>(need));
      grant = std::max<int64_t>(0, std::min(free, limit - static_cast<int64_t>(held)));
      free -= grant;
    }
    if (sync) {
      k.members[member] =
          Member{now + lease_ms, held + static_cast<uint64_t>(grant), want, stored_acc, stored_dec};
    }
    return Reply::Array({Reply::Integer(grant), Reply::Integer(limit),
                         Reply::String(absl::StrCat(acc)), Reply::String(absl::StrCat(dec)),
                         Reply::String(absl::StrCat(last_second)), Reply::Integer(oldest_age),
                         Reply::String(absl::StrCat(oldest_acc)), Reply::Integer(active),
                         Reply::Integer(free), Reply::String(absl::StrCat(stored_acc)),
                         Reply::String(absl::StrCat(stored_dec)), Reply::Integer(now),
                         Reply::String(k.rate), Reply::Integer(static_cast<int64_t>(taken))});
  }

  // Live accepted units of `key` now, and the leases Redis reserves.
  uint64_t Accepted(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t acc = 0;
    for (const auto& [ts, b] : keys_[key].buckets) acc += b.acc;
    return acc;
  }
  uint64_t Declined(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t dec = 0;
    for (const auto& [ts, b] : keys_[key].buckets) dec += b.dec;
    return dec;
  }
  uint64_t pushed_acc() {
    std::lock_guard<std::mutex> lock(mu_);
    return pushed_acc_;
  }

 private:
  struct Member {
    int64_t exp = 0;
    uint64_t lease = 0;
    bool want = false;
    uint64_t cum_acc = 0, cum_dec = 0;
  };
  struct Bucket {
    uint64_t acc = 0, dec = 0;
    int64_t stamp = 0;  // last join
  };
  struct Key {
    std::map<int64_t, Bucket> buckets;  // by opening time
    std::optional<int64_t> newest;
    std::map<std::string, Member> members;
    std::string rate;
  };
  static uint64_t U(const std::string& s) {
    uint64_t v = 0;
    EXPECT_TRUE(absl::SimpleAtoi(s, &v)) << s;
    return v;
  }
  static int64_t I(const std::string& s) {
    int64_t v = 0;
    EXPECT_TRUE(absl::SimpleAtoi(s, &v)) << s;
    return v;
  }
  static uint64_t Advance(uint64_t& stored, uint64_t cum) {
    constexpr uint64_t kMask = (uint64_t{1} << 62) - 1;
    const uint64_t d = (cum - stored) & kMask;
    if (d == 0 || d >= (uint64_t{1} << 61)) return 0;
    stored = cum;
    return d;
  }

  const ManualClock* clock_;
  std::mutex mu_;
  std::map<std::string, Key> keys_;
  uint64_t pushed_acc_ = 0;
};

// One daemon's connection: calls queue up (FIFO, like one pipelined connection) until the test
// answers them.
class FakeClient final : public redis::RedisClient {
 public:
  explicit FakeClient(FakeHybridRedis* redis) : redis_(redis) {}
  struct Call {
    std::string key;
    std::vector<std::string> args;
    redis::ReplyCallback done;
  };
  void Command(std::vector<std::string>, redis::ReplyCallback done) override {
    done(absl::InternalError("no raw commands expected"));
  }
  void Script(std::string_view name, std::vector<std::string> keys, std::vector<std::string> args,
              redis::ReplyCallback done) override {
    EXPECT_EQ(name, "ratelimit_hybrid");
    if (refuse_) return done(redis::NotSentError("not connected"));
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back({keys.at(0), std::move(args), std::move(done)});
  }
  bool Healthy() const override { return true; }

  size_t pending() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_.size();
  }
  const Call& front() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_.front();
  }
  void Answer() {
    Call c = Pop();
    c.done(redis_->Run(c.key, c.args));
  }
  void AnswerAll() {
    while (pending() > 0) Answer();
  }
  void ApplyButTimeout() {  // Redis ran it, the reply was lost
    Call c = Pop();
    (void)redis_->Run(c.key, c.args);
    c.done(absl::DeadlineExceededError("timeout"));
  }
  void FailNotSent() {
    Call c = Pop();
    c.done(redis::NotSentError("down"));
  }
  void set_refuse(bool refuse) { refuse_ = refuse; }

 private:
  Call Pop() {
    std::lock_guard<std::mutex> lock(mu_);
    Call c = std::move(calls_.front());
    calls_.pop_front();
    return c;
  }
  FakeHybridRedis* redis_;
  std::mutex mu_;
  std::deque<Call> calls_;
  std::atomic<bool> refuse_{false};
};

core::RateLimitSettings Settings() {
  core::RateLimitSettings s;
  s.window_ms = 10000;
  s.bucket_ms = 100;
  s.sync_interval_ms = 10;
  s.suppression_cache_ms = 100;
  s.hard_limit_factor = 1.0;
  return s;
}

struct Node {
  Node(FakeHybridRedis* redis, ManualClock* clock, core::RateLimitSettings s = Settings(),
       core::RandomSource* random = nullptr, int64_t max_keys = 1000000)
      : client(redis) {
    HybridRateLimiterOptions o;
    o.max_keys = max_keys;
    o.settings = s;
    o.dedup_id = absl::StrCat("node", ++counter);
    o.random = random;
    rl = std::make_unique<HybridRateLimiter>(&client, o, clock);
  }
  ~Node() {  // the limiter waits for the replies it is owed: fail what the test left queued
    while (client.pending() > 0) client.FailNotSent();
    rl.reset();
  }
  // The answer to an Inc: from memory when possible, else after the client answered the syncs
  // it waits for (all of them, in order).
  absl::StatusOr<RateIncResult> Inc(const RateIncRequest& req) {
    if (auto r = rl->TryInc(req)) return *r;
    std::optional<absl::StatusOr<RateIncResult>> out;
    rl->Inc(req, [&](absl::StatusOr<RateIncResult> r) { out = std::move(r); });
    while (!out && client.pending() > 0) client.Answer();
    EXPECT_TRUE(out.has_value());
    return out.value_or(absl::InternalError("no answer"));
  }
  FakeClient client;
  std::unique_ptr<HybridRateLimiter> rl;
  static inline int counter = 0;
};

RateIncRequest Req(double rate, uint64_t count = 1, RateStrategy strategy = RateStrategy::kAbsolute,
                   std::string key = "k") {
  RateIncRequest r;
  r.ns = "ns";
  r.key = std::move(key);
  r.rate_per_second = rate;
  r.count = count;
  r.strategy = strategy;
  return r;
}

std::string KeyA(const std::string& key = "k") {
  return core::HybridRateLimitKey("ns", key, RateStrategy::kAbsolute);
}

class HybridUnitTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  FakeHybridRedis redis_{&clock_};
};

// The lease follows demand (twice the units requested recently): a burst on a fresh key waits
// for a sync only each time its demand doubles, then is answered from memory.
TEST_F(HybridUnitTest, FirstTouchSyncsThenTheLeaseGrowsWithDemand) {
  Node a(&redis_, &clock_);
  EXPECT_FALSE(a.rl->TryInc(Req(10)).has_value());  // unknown key: Redis first
  auto r = a.Inc(Req(10));                          // capacity 10/s × 10 s = 100
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->decision, RateDecision::kAllowed);
  EXPECT_FALSE(r->degraded);
  int from_memory = 0;
  for (int i = 0; i < 99; ++i) {
    if (a.rl->TryInc(Req(10)).has_value()) {
      ++from_memory;
      continue;
    }
    auto w = a.Inc(Req(10));  // waits for one sync
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(w->decision, RateDecision::kAllowed) << i;
  }
  // Lease 2, then 2 × 4 = 8, 2 × 16, 2 × 64 (capped by the capacity): 4 syncs in all.
  EXPECT_EQ(a.rl->stats().syncs.load(), 4u);
  EXPECT_EQ(from_memory, 96);
  EXPECT_EQ(a.client.pending(), 0u);
  auto rejected = a.rl->TryInc(Req(10));
  ASSERT_TRUE(rejected.has_value());  // capacity used, nothing free: rejected from memory
  EXPECT_EQ((*rejected)->decision, RateDecision::kRejected);
  EXPECT_FALSE((*rejected)->allowed);
  EXPECT_GT((*rejected)->retry_after_ms, 0);
  EXPECT_LE((*rejected)->retry_after_ms, 10000);
  a.rl->SyncNow();
  a.client.AnswerAll();
  EXPECT_EQ(redis_.Accepted(KeyA()), 100u);
}

TEST_F(HybridUnitTest, RequestLargerThanCapacityIsRejectedWithoutRedis) {
  Node a(&redis_, &clock_);
  auto r = a.Inc(Req(10, 101));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->decision, RateDecision::kRejected);
  EXPECT_EQ(r->retry_after_ms, 0);
  EXPECT_EQ(r->remaining_after_waiting, 0u);
  EXPECT_EQ(a.rl->stats().syncs.load(), 0u);
}

TEST_F(HybridUnitTest, UnitsAdmittedWhileASyncFliesAreChargedToTheNewLease) {
  Node a(&redis_, &clock_);
  ASSERT_TRUE(a.Inc(Req(10, 50)).ok());  // demand 100: lease 100, 50 used
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(a.rl->TryInc(Req(10)).has_value());
  a.rl->SyncNow();  // pushes 59, holds 41
  ASSERT_EQ(a.client.pending(), 1u);
  for (int i = 0; i < 20; ++i) {  // taken from the 41 held while the sync flies
    auto t = a.rl->TryInc(Req(10));
    ASSERT_TRUE(t.has_value());
    EXPECT_TRUE((*t)->allowed);
  }
  a.client.Answer();
  int allowed = 0;
  for (int i = 0; i < 100; ++i) {
    auto t = a.rl->TryInc(Req(10));
    ASSERT_TRUE(t.has_value());
    if ((*t)->allowed) ++allowed;
  }
  EXPECT_EQ(allowed, 21);  // 100 − 59 − 20: the reply did not hand out the 20 a second time
}

TEST_F(HybridUnitTest, RetriedSyncAfterALostReplyCountsOnce) {
  Node a(&redis_, &clock_);
  ASSERT_TRUE(a.Inc(Req(10, 30)).ok());  // admitted by its sync (take); demand 60: lease 60
  EXPECT_EQ(redis_.Accepted(KeyA()), 30u);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a.rl->TryInc(Req(10)).has_value());  // from the lease
  a.rl->SyncNow();
  a.client.ApplyButTimeout();  // 10 more applied, the daemon does not know
  EXPECT_EQ(redis_.Accepted(KeyA()), 40u);
  auto t = a.rl->TryInc(Req(10));  // the lease is still valid: answered, but degraded
  ASSERT_TRUE(t.has_value());
  EXPECT_TRUE((*t)->allowed);
  EXPECT_TRUE((*t)->degraded);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(a.rl->TryInc(Req(10)).has_value());
  clock_.AdvanceMs(10);
  a.rl->SyncNow();  // carries the cumulative 45: only 5 are new
  a.client.Answer();
  EXPECT_EQ(redis_.Accepted(KeyA()), 45u);
  auto after = a.rl->TryInc(Req(10));
  ASSERT_TRUE(after.has_value());
  EXPECT_FALSE((*after)->degraded);
  a.rl->SyncNow();
  a.client.AnswerAll();
  EXPECT_EQ(redis_.Accepted(KeyA()), 46u);
}

TEST_F(HybridUnitTest, LeaseIsTrimmedToTheFairShareSoOthersGetCapacity) {
  Node a(&redis_, &clock_), b(&redis_, &clock_);
  ASSERT_TRUE(a.Inc(Req(10, 60)).ok());  // a alone, demand 120: lease 100, 60 used
  auto rb = b.Inc(Req(10));              // everything is leased to a
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->decision, RateDecision::kRejected);
  // Both keep getting requests, so both sync: a's limit is now its share, its next sync
  // reserves only that, and b's syncs get the rest.
  int b_allowed = 0;
  for (int round = 0; round < 3; ++round) {
    clock_.AdvanceMs(10);
    for (Node* n : {&a, &b}) {
      auto r = n->Inc(Req(10));
      ASSERT_TRUE(r.ok());
      if (n == &b && r->allowed) ++b_allowed;
      n->rl->SyncNow();
      n->client.AnswerAll();
    }
  }
  for (int i = 0; i < 100; ++i) {
    auto t = b.Inc(Req(10));
    ASSERT_TRUE(t.ok());
    if (t->allowed) ++b_allowed;
  }
  // 100 − a's 60 − a's 3 round units = 37, shared by the two active daemons: about 18 each (b
  // would get 0 with a keeping its whole lease, 37 with no share rule).
  EXPECT_GE(b_allowed, 17);
  EXPECT_LE(b_allowed, 20);
}

TEST_F(HybridUnitTest, AKeyWithoutRequestsIsNotSynced) {
  Node a(&redis_, &clock_);
  ASSERT_TRUE(a.Inc(Req(10)).ok());
  a.rl->SyncNow();  // the request's unit
  a.client.AnswerAll();
  const uint64_t syncs = a.rl->stats().syncs.load();
  for (int i = 0; i < 10; ++i) {
    clock_.AdvanceMs(10);
    a.rl->SyncNow();
  }
  EXPECT_EQ(a.rl->stats().syncs.load(), syncs);
  ASSERT_TRUE(a.rl->TryInc(Req(10)).has_value());  // still within its lease
  a.rl->SyncNow();
  EXPECT_EQ(a.rl->stats().syncs.load(), syncs + 1);
}

// A request on a fresh key costs one script: the sync that fetches the lease admits it too
// (`take`), so nothing is left to push and an idle daemon sends nothing more; its lease (sized by
// its demand: 2) lapses by itself in Redis after lease_ms + grace.
TEST_F(HybridUnitTest, FirstRequestIsAdmittedByItsSyncAndAnIdleLeaseLapses) {
  Node a(&redis_, &clock_), b(&redis_, &clock_);
  auto r = a.Inc(Req(10));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->allowed);
  EXPECT_FALSE(r->degraded);
  EXPECT_EQ(a.rl->stats().syncs.load(), 1u);
  EXPECT_EQ(redis_.Accepted(KeyA()), 1u);  // counted by that one script
  clock_.AdvanceMs(a.rl->lease_ms());      // longer than the active period
  a.rl->SyncNow();
  EXPECT_EQ(a.client.pending(), 0u);  // nothing to push: no script
  EXPECT_EQ(a.rl->stats().syncs.load(), 1u);
  clock_.AdvanceMs(std::max<int64_t>(50, a.rl->lease_ms() / 4) + 1);  // past the grace: lapsed
  int b_allowed = 0;
  for (int i = 0; i < 120; ++i) {
    auto t = b.Inc(Req(10));
    ASSERT_TRUE(t.ok());
    if (t->allowed) ++b_allowed;
  }
  EXPECT_EQ(b_allowed, 99);
}

// A lost reply of a sync that carried `take`: the request is admitted (degraded) and its unit
// joins the daemon's cumulative, so it is counted once whether or not the script ran.
TEST_F(HybridUnitTest, LostReplyOfASyncThatAdmittedARequestCountsItOnce) {
  for (const bool applied : {true, false}) {
    FakeHybridRedis redis(&clock_);
    Node a(&redis, &clock_);
    std::optional<absl::StatusOr<RateIncResult>> out;
    a.rl->Inc(Req(10, 3), [&](absl::StatusOr<RateIncResult> r) { out = std::move(r); });
    ASSERT_EQ(a.client.pending(), 1u);
    if (applied) {
      a.client.ApplyButTimeout();
    } else {
      a.client.FailNotSent();
    }
    ASSERT_TRUE(out.has_value() && out->ok());
    EXPECT_TRUE((*out)->allowed) << applied;
    EXPECT_TRUE((*out)->degraded) << applied;
    EXPECT_EQ(redis.Accepted(KeyA()), applied ? 3u : 0u);
    clock_.AdvanceMs(10);
    a.rl->SyncNow();  // the unpushed usage makes it sync again
    a.client.AnswerAll();
    EXPECT_EQ(redis.Accepted(KeyA()), 3u) << applied;
  }
}

TEST_F(HybridUnitTest, LargeRequestWaitsForASyncThatReservesItsCount) {
  Node a(&redis_, &clock_), b(&redis_, &clock_);
  ASSERT_TRUE(a.Inc(Req(10)).ok());  // lease 100
  ASSERT_TRUE(b.Inc(Req(10)).ok());  // rejected (all leased to a), but b now counts as active
  for (int round = 0; round < 2; ++round) {  // a's lease shrinks to its share ceil(98 / 2)
    clock_.AdvanceMs(10);
    ASSERT_TRUE(a.rl->TryInc(Req(10)).has_value());
    a.rl->SyncNow();
    a.client.AnswerAll();
  }
  // 50 in a's lease, 49 that nobody holds: 80 fits only with a sync that reserves it.
  EXPECT_FALSE(a.rl->TryInc(Req(10, 80)).has_value());
  const uint64_t syncs = a.rl->stats().syncs.load();
  auto big = a.Inc(Req(10, 80));
  ASSERT_TRUE(big.ok());
  EXPECT_TRUE(big->allowed);
  EXPECT_EQ(a.rl->stats().syncs.load(), syncs + 1);
  // 19 are left in the window, a holds none of them: more than that is rejected from memory.
  auto too_big = a.rl->TryInc(Req(10, 21));
  ASSERT_TRUE(too_big.has_value());
  EXPECT_EQ((*too_big)->decision, RateDecision::kRejected);
}

TEST_F(HybridUnitTest, RedisDownDecidesLocallyDegradedThenResyncs) {
  Node a(&redis_, &clock_), b(&redis_, &clock_);
  ASSERT_TRUE(a.Inc(Req(10)).ok());
  ASSERT_TRUE(b.Inc(Req(10)).ok());
  for (int round = 0; round < 3; ++round) {  // both active: N = 2 everywhere
    clock_.AdvanceMs(10);
    for (Node* n : {&a, &b}) {
      ASSERT_TRUE(n->Inc(Req(10)).ok());
      n->rl->SyncNow();
      n->client.AnswerAll();
    }
  }
  a.client.set_refuse(true);    // a loses Redis
  auto first = a.Inc(Req(10));  // from the lease
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->allowed);
  a.rl->SyncNow();  // refused at once: degraded from now on
  auto second = a.rl->TryInc(Req(10));
  ASSERT_TRUE(second.has_value() && second->ok());
  EXPECT_TRUE((*second)->allowed);  // still from the lease, but degraded
  EXPECT_TRUE((*second)->degraded);
  clock_.AdvanceMs(a.rl->lease_ms() + 1);  // the lease may no longer be used
  int allowed = 0;
  for (int i = 0; i < 200; ++i) {
    auto t = a.Inc(Req(10));
    ASSERT_TRUE(t.ok());
    EXPECT_TRUE(t->degraded);
    if (t->allowed) ++allowed;
  }
  // The degraded budget: LOCAL over a's own window with 1/N of the rate = 50, minus what a
  // admitted before (1 + its lease-covered units, all in its own window).
  EXPECT_GE(allowed, 1);
  EXPECT_LE(allowed, 50);
  const uint64_t before = redis_.Accepted(KeyA());
  a.client.set_refuse(false);
  clock_.AdvanceMs(10);
  a.rl->SyncNow();
  a.client.AnswerAll();
  // Re-synced once: the two lease units and the degraded budget's.
  EXPECT_EQ(redis_.Accepted(KeyA()), before + 2 + static_cast<uint64_t>(allowed));
  auto t = a.Inc(Req(10));
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->degraded);
}

TEST_F(HybridUnitTest, UnknownKeyWithRedisDownIsDecidedLocally) {
  Node a(&redis_, &clock_);
  a.client.set_refuse(true);
  auto r = a.Inc(Req(10));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->allowed);
  EXPECT_TRUE(r->degraded);
  int allowed = 1;
  for (int i = 0; i < 150; ++i) {
    auto t = a.Inc(Req(10));
    ASSERT_TRUE(t.ok());
    if (t->allowed) ++allowed;
  }
  EXPECT_EQ(allowed, 100);  // never synced: N = 1, LOCAL with the full rate
}

TEST_F(HybridUnitTest, DegradedBudgetCountsEachUnitForAWholeWindowAfterIt) {
  Node a(&redis_, &clock_);
  a.client.set_refuse(true);  // never synced: N = 1, budget = capacity 100 per 10 s
  ASSERT_TRUE(a.Inc(Req(10)).value().allowed);  // opens a bucket at t0
  clock_.AdvanceMs(90);
  for (int i = 0; i < 99; ++i) ASSERT_TRUE(a.Inc(Req(10)).value().allowed);  // join it at t0+90
  clock_.AdvanceMs(9960);  // t0 + 10050: the bucket opened more than W ago, but 99 of its
                           // units were admitted less than W ago
  auto r = a.Inc(Req(10));
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->allowed);
  EXPECT_TRUE(r->degraded);
  EXPECT_EQ(r->retry_after_ms, 50);  // when the last of them is a window old
  clock_.AdvanceMs(51);
  EXPECT_TRUE(a.Inc(Req(10)).value().allowed);
}

TEST_F(HybridUnitTest, UsageOlderThanTheWindowIsNotPushedAfterAnOutage) {
  Node a(&redis_, &clock_);
  a.client.set_refuse(true);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(a.Inc(Req(10)).ok());
  clock_.AdvanceMs(10101);  // all 40 left the window (kept W + B, see EvictOwn)
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(a.Inc(Req(10)).ok());
  a.client.set_refuse(false);
  a.rl->SyncNow();
  a.client.AnswerAll();
  EXPECT_EQ(redis_.Accepted(KeyA()), 5u);
}

TEST_F(HybridUnitTest, IdleKeysAreEvictedOnlyWhenNothingIsLeftToPush) {
  core::RateLimitSettings settings = Settings();
  settings.idle_evict_ms = 1000;  // shorter than the window: usage may still be live
  Node a(&redis_, &clock_, settings);
  ASSERT_TRUE(a.Inc(Req(10)).ok());
  ASSERT_TRUE(a.Inc(Req(10, 1, RateStrategy::kAbsolute, "other")).ok());
  a.rl->SyncNow();
  a.client.AnswerAll();  // both pushed
  ASSERT_TRUE(a.Inc(Req(10, 1, RateStrategy::kAbsolute, "other")).ok());
  a.client.set_refuse(true);  // "other" can no longer push its second unit
  clock_.AdvanceMs(20);
  a.rl->SyncNow();
  clock_.AdvanceMs(500);
  a.rl->EvictIdle();
  EXPECT_EQ(a.rl->stats().keys.load(), 2);  // not idle long enough
  clock_.AdvanceMs(600);
  a.rl->EvictIdle();
  EXPECT_EQ(a.rl->stats().keys.load(), 1);  // "other" keeps its unconfirmed unit
  a.client.set_refuse(false);
  a.rl->SyncNow();
  a.client.AnswerAll();
  a.rl->EvictIdle();
  EXPECT_EQ(a.rl->stats().keys.load(), 0);
  EXPECT_EQ(redis_.Accepted(KeyA()), 1u);
  EXPECT_EQ(redis_.Accepted(KeyA("other")), 2u);
}

// Issue #11 finding 5: at most --max_rate_limit_keys key states (a new key beyond it is refused
// naming the flag, without a Redis call; known keys keep working), and eviction frees the maps.
TEST_F(HybridUnitTest, KeyCapRefusesNewKeysOnlyAndEvictionShrinksTheMaps) {
  constexpr int kKeys = 20000;
  core::RateLimitSettings settings = Settings();
  settings.idle_evict_ms = 1000;
  Node a(&redis_, &clock_, settings, nullptr, kKeys);
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_TRUE(a.Inc(Req(10, 1, RateStrategy::kAbsolute, absl::StrCat("k", i))).ok()) << i;
  }
  const absl::StatusOr<RateIncResult> over = a.Inc(Req(10, 1, RateStrategy::kAbsolute, "more"));
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().message().find("--max_rate_limit_keys"), std::string_view::npos);
  EXPECT_EQ(a.client.pending(), 0u);
  EXPECT_TRUE(a.Inc(Req(10, 1, RateStrategy::kAbsolute, "k0")).ok()) << "known key";
  const size_t full = a.rl->capacity();
  EXPECT_GE(full, static_cast<size_t>(kKeys));

  a.rl->SyncNow();
  a.client.AnswerAll();
  clock_.AdvanceMs(6000);  // past the idle period and every lease
  a.rl->SyncNow();
  a.client.AnswerAll();
  a.rl->EvictIdle();
  EXPECT_EQ(a.rl->stats().keys.load(), 0);
  EXPECT_LT(a.rl->capacity(), full / 8) << "the maps keep their slots after eviction";
  EXPECT_TRUE(a.Inc(Req(10, 1, RateStrategy::kAbsolute, "more")).ok()) << "room again";
}

TEST_F(HybridUnitTest, GetIsTheGlobalWindowPlusOwnUsageNotYetInIt) {
  Node a(&redis_, &clock_), c(&redis_, &clock_);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a.Inc(Req(10)).ok());
  std::optional<absl::StatusOr<core::RateGetResult>> got;
  a.rl->Get("ns", "k", RateStrategy::kAbsolute, [&](auto r) { got = std::move(r); });
  ASSERT_EQ(a.client.pending(), 1u);                                           // Get syncs first
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(a.rl->TryInc(Req(10)).has_value());  // after the send
  a.client.AnswerAll();
  ASSERT_TRUE(got.has_value() && got->ok());
  EXPECT_EQ((*got)->total, 12u);  // 10 from Redis + 2 not pushed yet
  got.reset();
  c.rl->Get("ns", "k", RateStrategy::kAbsolute, [&](auto r) { got = std::move(r); });
  c.client.AnswerAll();  // c never touched the key: a read, nothing created
  ASSERT_TRUE(got.has_value() && got->ok());
  EXPECT_EQ((*got)->total, 10u);
  EXPECT_EQ(c.rl->stats().keys.load(), 0);
}

TEST_F(HybridUnitTest, SuppressedAllowsBelowSoftDrawsInTheBandNeverExceedsHard) {
  core::RateLimitSettings s = Settings();
  s.hard_limit_factor = 2.0;  // 10/s × 10 s: soft 100, hard 200
  FixedRandom random;
  Node a(&redis_, &clock_, s, &random);
  for (int i = 0; i < 100; ++i) {
    auto r = a.Inc(Req(10, 1, RateStrategy::kSuppressed));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->decision, RateDecision::kAllowed) << i;
    EXPECT_EQ(r->suppression_factor, 0);
  }
  random.value = 0.999;  // every draw in the band declines unless the factor is 0
  auto d = a.Inc(Req(10, 1, RateStrategy::kSuppressed));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->decision, RateDecision::kSuppressed);
  EXPECT_FALSE(d->allowed);
  EXPECT_GT(d->suppression_factor, 0);
  random.value = 0.0;  // every draw admits unless the factor is 1
  int admitted = 100;
  for (int i = 0; i < 300; ++i) {
    auto r = a.Inc(Req(10, 1, RateStrategy::kSuppressed));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->decision, RateDecision::kSuppressed);
    if (r->allowed) ++admitted;
  }
  EXPECT_EQ(admitted, 200);  // the hard limit, on accepted units
  a.rl->SyncNow();
  a.client.AnswerAll();
  const std::string key = core::HybridRateLimitKey("ns", "k", RateStrategy::kSuppressed);
  EXPECT_EQ(redis_.Accepted(key), 200u);
  EXPECT_EQ(redis_.Declined(key), 201u);
}

// ---------------------------------------------------------------- randomized schedules

// Every admission with its (fake) time. The bound of docs/rate_limiting.md: at most `capacity`
// in any window of W while every sync is answered; with lost and refused syncs (degraded
// answers), at most 2 × capacity.
struct Ledger {
  std::vector<int64_t> times;  // ms, non-decreasing
  uint64_t MaxIn(int64_t span_ms) const {
    uint64_t best = 0;
    size_t lo = 0;
    for (size_t hi = 0; hi < times.size(); ++hi) {
      while (times[hi] - times[lo] >= span_ms) ++lo;
      best = std::max<uint64_t>(best, hi - lo + 1);
    }
    return best;
  }
};

struct Schedule {
  int daemons;
  uint32_t seed;
  bool faults;  // lost replies and refused sends
};

class HybridScheduleTest : public ::testing::TestWithParam<Schedule> {};

TEST_P(HybridScheduleTest, NoWindowAdmitsMoreThanTheCapacity) {
  const Schedule p = GetParam();
  ManualClock clock;
  FakeHybridRedis redis(&clock);
  core::RateLimitSettings s = Settings();
  s.window_ms = 2000;
  s.bucket_ms = 100;
  std::vector<std::unique_ptr<Node>> nodes;
  for (int i = 0; i < p.daemons; ++i) nodes.push_back(std::make_unique<Node>(&redis, &clock, s));
  std::mt19937 rng(p.seed);
  Ledger ledger;
  uint64_t rejected = 0;
  const double rate = 50;  // capacity 100 per 2 s window
  int64_t last_sync_ms = clock.NowMs();
  // 8 windows of traffic: each step one daemon receives a request, answers arrive late and
  // out of order across daemons, syncs run every 10 ms of fake time.
  for (int step = 0; step < 80000; ++step) {
    Node& n = *nodes[rng() % nodes.size()];
    const int action = static_cast<int>(rng() % 100);
    if (action < 70) {
      RateIncRequest req = Req(rate, 1 + rng() % 3);
      if (auto t = n.rl->TryInc(req)) {
        ASSERT_TRUE(t->ok());
        if ((*t)->allowed) {
          for (uint64_t u = 0; u < req.count; ++u) ledger.times.push_back(clock.NowMs());
        } else {
          ++rejected;
        }
      } else {
        const int64_t at = clock.NowMs();
        n.rl->Inc(req, [&ledger, &rejected, &clock, at, count = req.count](auto r) {
          ASSERT_TRUE(r.ok());
          // Admitted when answered (at ≤ now): the later time is the conservative one.
          if (r->allowed) {
            for (uint64_t u = 0; u < count; ++u) ledger.times.push_back(clock.NowMs());
          } else {
            ++rejected;
          }
          (void)at;
        });
      }
    } else if (action < 90) {
      if (n.client.pending() > 0) {
        const int fate = static_cast<int>(rng() % 20);
        if (p.faults && fate == 0) {
          n.client.ApplyButTimeout();
        } else if (p.faults && fate == 1) {
          n.client.FailNotSent();
        } else {
          n.client.Answer();
        }
      }
    } else {
      clock.AdvanceMs(1 + rng() % 3);
    }
    if (clock.NowMs() - last_sync_ms >= s.sync_interval_ms) {
      last_sync_ms = clock.NowMs();
      for (auto& node : nodes) node->rl->SyncNow();
    }
  }
  for (auto& node : nodes) node->client.AnswerAll();
  std::sort(ledger.times.begin(), ledger.times.end());
  const uint64_t in_w = ledger.MaxIn(s.window_ms);
  std::cout << "[ daemons " << p.daemons << " seed " << p.seed << (p.faults ? " faults" : "")
            << " ] admitted " << ledger.times.size() << ", rejected " << rejected
            << "; max in any window of W " << in_w << " (capacity 100)\n";
  EXPECT_GT(ledger.times.size(), 600u);  // the limit is used, not starved: about 8 windows
  EXPECT_LE(in_w, p.faults ? 200u : 100u);
}

INSTANTIATE_TEST_SUITE_P(Schedules, HybridScheduleTest,
                         ::testing::Values(Schedule{1, 1, false}, Schedule{3, 2, false},
                                           Schedule{8, 3, false}, Schedule{20, 4, false},
                                           Schedule{3, 5, true}, Schedule{8, 6, true}));

}  // namespace
}  // namespace distkit
