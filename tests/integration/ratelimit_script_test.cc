// lua/ratelimit.lua against a real redis-server. The contract is documented at the top of the
// script and in docs/rate_limiting.md (REDIS). The text under test is the embedded one
// (with the lua/lib files it requires prepended), exactly what the daemon loads.
//
// Redis time cannot be faked: every reply carries the script's `now`, and the hash carries the
// bucket timestamps, so expectations that depend on time are computed from what Redis saw, and
// "later" means polling Redis TIME (with a deadline) until it has passed a point.

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/core/redis_keys.h"
#include "daemon/core/redis_rate_limiter.h"
#include "daemon/redis/executor.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit::testing {
namespace {

using namespace std::chrono_literals;
using core::RateStrategy;

constexpr char kA[] = "dk:{00000000}:r:a:ns:key";
constexpr char kS[] = "dk:{00000000}:r:s:ns:key";
constexpr int64_t kTwo53 = int64_t{1} << 53;

// Settings of one call (ARGV 3..6) plus the inc arguments.
struct Params {
  int64_t window = 60000;
  int64_t bucket = 100;
  std::string hlf = "1";
  int64_t cache = 100;
};

struct IncReply {
  std::string error;  // an error reply, else empty
  std::string status, decision, factor;
  int64_t retry = -1, remaining = -1, allowed = -1, now = 0;
  double f() const { return std::stod(factor); }
};

struct GetReply {
  std::string error;
  std::string status, factor;
  int64_t total = -1, declined = -1, now = 0;
};

class RateLimitScriptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    script_ = redis::EmbeddedScripts().at("ratelimit");
    server_ = RedisServer::Start();
    ASSERT_NE(server_, nullptr);
    ctx_ = server_->Connect();
    ASSERT_NE(ctx_, nullptr);
  }
  void TearDown() override {
    if (ctx_ != nullptr) redisFree(ctx_);
  }

  redisReply* Eval(const std::vector<std::string>& keys, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"EVAL", script_, std::to_string(keys.size())};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (const auto& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    return static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(argv.size()), ptrs.data(), lens.data()));
  }

  // Runs the script and checks the reply's shape: strings where strings are promised (a Lua
  // number would be truncated by Redis), integers elsewhere.
  IncReply RawInc(const std::string& key, const std::vector<std::string>& args) {
    IncReply out;
    redisReply* r = Eval({key}, args);
    if (r == nullptr) {
      out.error = std::string("IOERROR:") + ctx_->errstr;
      return out;
    }
    out = ParseInc(r);
    freeReplyObject(r);
    return out;
  }

  static IncReply ParseInc(const redisReply* r) {
    IncReply out;
    if (r->type == REDIS_REPLY_ERROR) {
      out.error = std::string(r->str, r->len);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 7) {
      out.error = "BADSHAPE";
    } else {
      auto str = [&](size_t i, std::string* dst) {
        EXPECT_EQ(r->element[i]->type, REDIS_REPLY_STRING) << "element " << i;
        if (r->element[i]->type == REDIS_REPLY_STRING) {
          *dst = std::string(r->element[i]->str, r->element[i]->len);
        }
      };
      auto num = [&](size_t i, int64_t* dst) {
        EXPECT_EQ(r->element[i]->type, REDIS_REPLY_INTEGER) << "element " << i;
        if (r->element[i]->type == REDIS_REPLY_INTEGER) *dst = r->element[i]->integer;
      };
      str(0, &out.status);
      str(1, &out.decision);
      num(2, &out.retry);
      num(3, &out.remaining);
      str(4, &out.factor);
      num(5, &out.allowed);
      num(6, &out.now);
    }
    return out;
  }

  std::vector<std::string> Settings(const std::string& op, const std::string& strategy,
                                    const Params& p) {
    return {op,
            strategy,
            std::to_string(p.window),
            std::to_string(p.bucket),
            p.hlf,
            std::to_string(p.cache)};
  }

  IncReply Inc(const std::string& key, const std::string& rate, const std::string& count,
               const Params& p = {}, const std::string& random = "0") {
    auto args = Settings("inc", absl::StrContains(key, ":r:s:") ? "s" : "a", p);
    args.push_back(rate);
    args.push_back(count);
    args.push_back(random);
    IncReply r = RawInc(key, args);
    EXPECT_EQ(r.error, "");
    return r;
  }

  GetReply Get(const std::string& key, const Params& p = {}) {
    GetReply out;
    redisReply* r = Eval({key}, Settings("get", absl::StrContains(key, ":r:s:") ? "s" : "a", p));
    if (r == nullptr) {
      out.error = "IOERROR";
      return out;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      out.error = std::string(r->str, r->len);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 5 ||
               r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[1]->type != REDIS_REPLY_INTEGER ||
               r->element[2]->type != REDIS_REPLY_INTEGER ||
               r->element[3]->type != REDIS_REPLY_STRING ||
               r->element[4]->type != REDIS_REPLY_INTEGER) {
      out.error = "BADSHAPE";
    } else {
      out.status = r->element[0]->str;
      out.total = r->element[1]->integer;
      out.declined = r->element[2]->integer;
      out.factor = r->element[3]->str;
      out.now = r->element[4]->integer;
    }
    freeReplyObject(r);
    EXPECT_EQ(out.error, "");
    return out;
  }

  std::string Cmd(const std::vector<std::string>& argv) { return server_->Command(argv); }
  std::map<std::string, std::string> Hash(const std::string& key) {
    std::map<std::string, std::string> out;
    auto* r = static_cast<redisReply*>(redisCommand(ctx_, "HGETALL %s", key.c_str()));
    if (r != nullptr && r->type == REDIS_REPLY_ARRAY) {
      for (size_t i = 0; i + 1 < r->elements; i += 2) {
        out[r->element[i]->str] = r->element[i + 1]->str;
      }
    }
    if (r != nullptr) freeReplyObject(r);
    return out;
  }
  static int Buckets(const std::map<std::string, std::string>& h) {
    int n = 0;
    for (const auto& [f, v] : h) n += absl::StartsWith(f, "b:") ? 1 : 0;
    return n;
  }
  int64_t Field(const std::string& key, const std::string& field) {
    std::string v = Cmd({"HGET", key, field});
    return v == "(nil)" ? -1 : std::stoll(v);
  }
  int64_t Pttl(const std::string& key) { return std::stoll(Cmd({"PTTL", key})); }
  bool Exists(const std::string& key) { return Cmd({"EXISTS", key}) == "1"; }
  int64_t RedisNowMs() {
    auto* r = static_cast<redisReply*>(redisCommand(ctx_, "TIME"));
    int64_t ms = std::stoll(r->element[0]->str) * 1000 + std::stoll(r->element[1]->str) / 1000;
    freeReplyObject(r);
    return ms;
  }
  // Polls until Redis' clock is past `ms` (deadline: 10 s).
  void WaitRedisPast(int64_t ms) {
    ASSERT_TRUE(PollUntil([&] { return RedisNowMs() > ms; }, 10s)) << "Redis time stuck";
  }
  // Every written key carries a TTL in (0, window + bucket].
  void ExpectTtl(const std::string& key, const Params& p) {
    int64_t pttl = Pttl(key);
    EXPECT_GT(pttl, 0) << key;
    EXPECT_LE(pttl, p.window + p.bucket) << key;
  }

  // ---- several requests in one call (ARGV = settings + k triples)

  struct Triple {
    std::string rate, count, random = "0";
  };
  std::vector<std::string> IncArgs(const std::string& key, const Params& p,
                                   const std::vector<Triple>& triples) {
    auto args = Settings("inc", absl::StrContains(key, ":r:s:") ? "s" : "a", p);
    for (const auto& t : triples) {
      args.push_back(t.rate);
      args.push_back(t.count);
      args.push_back(t.random);
    }
    return args;
  }
  struct MultiReply {
    std::string error;  // an error reply (or a bad shape), else empty
    std::vector<IncReply> replies;
  };
  // The reply of a call with k > 1 triples: an array of k inc replies.
  static MultiReply ParseMulti(const redisReply* r) {
    MultiReply out;
    if (r->type == REDIS_REPLY_ERROR) {
      out.error = std::string(r->str, r->len);
    } else if (r->type != REDIS_REPLY_ARRAY) {
      out.error = "BADSHAPE";
    } else {
      for (size_t i = 0; i < r->elements; ++i) out.replies.push_back(ParseInc(r->element[i]));
    }
    return out;
  }
  MultiReply MultiInc(const std::string& key, const Params& p, const std::vector<Triple>& triples) {
    redisReply* r = Eval({key}, IncArgs(key, p, triples));
    if (r == nullptr) return {std::string("IOERROR:") + ctx_->errstr, {}};
    MultiReply out = ParseMulti(r);
    freeReplyObject(r);
    return out;
  }

  // The same triples as k single calls on one key and as one call on another, the two keys
  // holding the same state: in one MULTI/EXEC that also reads both hashes and TTLs. Redis' TIME
  // is real time even there, so when the calls did not all see the same ms both keys are put
  // back as they were and it runs again.
  struct Lockstep {
    std::vector<IncReply> singles;
    MultiReply multi;
    std::map<std::string, std::string> singles_hash, multi_hash;
    // PEXPIRETIME (absolute ms), not PTTL: two PTTLs read a moment apart differ by that moment,
    // which a loaded machine stretches to several ms even inside one EXEC.
    int64_t singles_expire_at = 0, multi_expire_at = 0;
    int attempts = 0;
    int64_t now() const { return singles.empty() ? 0 : singles[0].now; }
  };
  Lockstep RunLockstep(const std::string& singles_key, const std::string& multi_key,
                       const Params& p, const std::vector<Triple>& triples) {
    if (sha_.empty()) sha_ = Cmd({"SCRIPT", "LOAD", script_});
    const auto saved_hash = Hash(singles_key);
    const int64_t saved_pttl = Pttl(singles_key);
    EXPECT_EQ(saved_hash, Hash(multi_key)) << "lockstep keys must start equal";
    std::vector<std::vector<std::string>> cmds = {{"MULTI"}};
    const auto multi_args = IncArgs(multi_key, p, triples);
    for (const auto& t : triples) {
      std::vector<std::string> c = {"EVALSHA", sha_, "1", singles_key};
      auto single = IncArgs(singles_key, p, {t});
      c.insert(c.end(), single.begin(), single.end());
      cmds.push_back(c);
    }
    std::vector<std::string> c = {"EVALSHA", sha_, "1", multi_key};
    c.insert(c.end(), multi_args.begin(), multi_args.end());
    cmds.push_back(c);
    cmds.push_back({"HGETALL", singles_key});
    cmds.push_back({"HGETALL", multi_key});
    cmds.push_back({"PEXPIRETIME", singles_key});
    cmds.push_back({"PEXPIRETIME", multi_key});
    cmds.push_back({"EXEC"});
    Lockstep out;
    for (out.attempts = 1; out.attempts <= 200; ++out.attempts) {
      for (const auto& cmd : cmds) {
        std::vector<const char*> ptrs;
        std::vector<size_t> lens;
        for (const auto& a : cmd) {
          ptrs.push_back(a.data());
          lens.push_back(a.size());
        }
        redisAppendCommandArgv(ctx_, static_cast<int>(cmd.size()), ptrs.data(), lens.data());
      }
      redisReply* exec = nullptr;
      for (size_t i = 0; i < cmds.size(); ++i) {
        void* r = nullptr;
        if (redisGetReply(ctx_, &r) != REDIS_OK) {
          ADD_FAILURE() << "IOERROR: " << ctx_->errstr;
          return out;
        }
        if (i + 1 < cmds.size()) {
          freeReplyObject(r);
        } else {
          exec = static_cast<redisReply*>(r);
        }
      }
      const size_t k = triples.size();
      if (exec == nullptr || exec->type != REDIS_REPLY_ARRAY || exec->elements != k + 5) {
        ADD_FAILURE() << "EXEC failed";
        if (exec != nullptr) freeReplyObject(exec);
        return out;
      }
      out.singles.clear();
      for (size_t i = 0; i < k; ++i) out.singles.push_back(ParseInc(exec->element[i]));
      out.multi = ParseMulti(exec->element[k]);
      auto hash = [](const redisReply* r) {
        std::map<std::string, std::string> h;
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
          h[std::string(r->element[i]->str, r->element[i]->len)] =
              std::string(r->element[i + 1]->str, r->element[i + 1]->len);
        }
        return h;
      };
      out.singles_hash = hash(exec->element[k + 1]);
      out.multi_hash = hash(exec->element[k + 2]);
      out.singles_expire_at = exec->element[k + 3]->integer;
      out.multi_expire_at = exec->element[k + 4]->integer;
      freeReplyObject(exec);
      bool same_ms = out.multi.error.empty(), failed = !out.multi.error.empty();
      for (const auto& r : out.singles) {
        failed = failed || !r.error.empty();
        same_ms = same_ms && r.now == out.now();
      }
      for (const auto& r : out.multi.replies) same_ms = same_ms && r.now == out.now();
      if (same_ms || failed) return out;
      for (const auto& key : {singles_key, multi_key}) {  // put both back, run again
        Cmd({"DEL", key});
        if (saved_hash.empty()) continue;
        std::vector<std::string> hset = {"HSET", key};
        for (const auto& [f, v] : saved_hash) {
          hset.push_back(f);
          hset.push_back(v);
        }
        Cmd(hset);
        if (saved_pttl > 0) Cmd({"PEXPIRE", key, std::to_string(saved_pttl)});
      }
    }
    ADD_FAILURE() << "the calls never saw one Redis ms";
    return out;
  }
  // The multi call answered each request as its single call, and left the same hash and TTL.
  static void ExpectSame(const Lockstep& l) {
    ASSERT_EQ(l.multi.error, "");
    ASSERT_EQ(l.multi.replies.size(), l.singles.size());
    for (size_t i = 0; i < l.singles.size(); ++i) {
      const IncReply &s = l.singles[i], &m = l.multi.replies[i];
      EXPECT_EQ(s.error, "") << "request " << i;
      EXPECT_EQ(m.error, s.error) << "request " << i;
      EXPECT_EQ(m.status, s.status) << "request " << i;
      EXPECT_EQ(m.decision, s.decision) << "request " << i;
      EXPECT_EQ(m.retry, s.retry) << "request " << i;
      EXPECT_EQ(m.remaining, s.remaining) << "request " << i;
      EXPECT_EQ(m.factor, s.factor) << "request " << i;
      EXPECT_EQ(m.allowed, s.allowed) << "request " << i;
      EXPECT_EQ(m.now, s.now) << "request " << i;
    }
    EXPECT_EQ(l.multi_hash, l.singles_hash);
    if (l.singles_expire_at < 0 || l.multi_expire_at < 0) {
      EXPECT_EQ(l.multi_expire_at, l.singles_expire_at);
    } else {
      EXPECT_LE(std::abs(l.multi_expire_at - l.singles_expire_at), 1);
    }
  }

  std::string script_, sha_;
  std::unique_ptr<RedisServer> server_;
  redisContext* ctx_ = nullptr;
};

// ---------------------------------------------------------------- key layout

TEST(RateLimitKeyTest, OneHashTaggedKeyPerNamespaceKeyAndStrategy) {
  const std::string tag = core::HashTag("ns", "key");
  EXPECT_EQ(core::RedisRateLimitKey("ns", "key", RateStrategy::kAbsolute),
            "dk:{" + tag + "}:r:a:ns:key");
  EXPECT_EQ(core::RedisRateLimitKey("ns", "key", RateStrategy::kSuppressed),
            "dk:{" + tag + "}:r:s:ns:key");
  // Braces in names cannot move the hash tag; distinct pairs differ.
  EXPECT_EQ(core::RedisRateLimitKey("{x}", "k}", RateStrategy::kAbsolute),
            "dk:{" + core::HashTag("{x}", "k}") + "}:r:a:{x}:k}");
  EXPECT_NE(core::RedisRateLimitKey("ns", "ab", RateStrategy::kAbsolute),
            core::RedisRateLimitKey("nsa", "b", RateStrategy::kAbsolute));
}

// ---------------------------------------------------------------- ABSOLUTE

TEST_F(RateLimitScriptTest, AbsoluteAdmitsAllOrNothing) {
  Params p;
  p.window = 10000;  // rate 1/s: capacity 10
  const std::string rate = "1";
  auto r = Inc(kA, rate, "9", p);
  EXPECT_EQ(r.decision, "allowed");
  EXPECT_EQ(r.allowed, 1);
  EXPECT_EQ(r.factor, "0");
  EXPECT_EQ(r.retry, 0);
  EXPECT_EQ(r.remaining, 0);
  auto before = Hash(kA);
  r = Inc(kA, rate, "2", p);
  EXPECT_EQ(r.decision, "rejected");
  EXPECT_EQ(r.allowed, 0);
  EXPECT_EQ(Hash(kA), before) << "a rejected request records nothing";
  EXPECT_EQ(Inc(kA, rate, "1", p).decision, "allowed");
  EXPECT_EQ(Inc(kA, rate, "1", p).decision, "rejected");
  EXPECT_EQ(Field(kA, "t"), 10);
  EXPECT_EQ(Get(kA, p).total, 10);
}

TEST_F(RateLimitScriptTest, CapacityIsFloorOfRateTimesWindow) {
  Params p;
  p.window = 1000;
  // 2.9/s over 1 s: capacity 2.
  EXPECT_EQ(Inc(kA, "2.9", "2", p).decision, "allowed");
  EXPECT_EQ(Inc(kA, "2.9", "1", p).decision, "rejected");
  // 0.05/s over 10 s: capacity 0, every request is rejected with (0, 0) and nothing is written.
  p.window = 10000;
  const std::string other = "dk:{00000000}:r:a:ns:other";
  auto r = Inc(other, "0.05", "1", p);
  EXPECT_EQ(r.decision, "rejected");
  EXPECT_EQ(r.retry, 0);
  EXPECT_EQ(r.remaining, 0);
  EXPECT_FALSE(Exists(other));
}

TEST_F(RateLimitScriptTest, RequestLargerThanCapacityIsRejectedWithZeros) {
  Params p;
  auto r = Inc(kA, "1", "61", p);  // capacity 60
  EXPECT_EQ(r.decision, "rejected");
  EXPECT_EQ(r.retry, 0);
  EXPECT_EQ(r.remaining, 0);
  EXPECT_FALSE(Exists(kA)) << "nothing written";
  ASSERT_EQ(Inc(kA, "1", "5", p).decision, "allowed");
  r = Inc(kA, "1", "61", p);
  EXPECT_EQ(r.decision, "rejected");
  EXPECT_EQ(r.retry, 0) << "even when a bucket is live";
  EXPECT_EQ(r.remaining, 0);
}

TEST_F(RateLimitScriptTest, RateIsPerRequestNotSticky) {
  Params p;                                              // 60 s
  EXPECT_EQ(Inc(kA, "1", "60", p).decision, "allowed");  // capacity 60
  EXPECT_EQ(Inc(kA, "1", "1", p).decision, "rejected");
  EXPECT_EQ(Inc(kA, "2", "1", p).decision, "allowed") << "capacity 120 for this request";
  EXPECT_EQ(Inc(kA, "0.5", "1", p).decision, "rejected") << "capacity 30 for this one";
}

TEST_F(RateLimitScriptTest, RejectedCarriesRetryAfterAndTheOldestBucketsUnits) {
  Params p;  // window 60 s, bucket 100 ms
  auto first = Inc(kA, "1", "3", p);
  ASSERT_EQ(first.decision, "allowed");
  const int64_t ts1 = Field(kA, "o");
  EXPECT_EQ(ts1, first.now) << "a new bucket is stamped with Redis' now";
  WaitRedisPast(ts1 + p.bucket);
  auto second = Inc(kA, "1", "57", p);  // capacity 60: full
  ASSERT_EQ(second.decision, "allowed");
  EXPECT_EQ(Buckets(Hash(kA)), 2);
  auto r = Inc(kA, "1", "1", p);
  ASSERT_EQ(r.decision, "rejected");
  EXPECT_EQ(r.retry, p.window - (r.now - ts1)) << "until the oldest bucket leaves the window";
  EXPECT_EQ(r.remaining, 3) << "what the oldest bucket frees";
  EXPECT_EQ(r.allowed, 0);
  EXPECT_EQ(r.factor, "0");
}

TEST_F(RateLimitScriptTest, IncrementsJoinTheNewestBucketWithinBucketMs) {
  Params p;
  p.bucket = 60000;  // = window: every increment of this test joins the first bucket
  auto a = Inc(kA, "10", "2", p);
  auto b = Inc(kA, "10", "3", p);
  ASSERT_LE(b.now - a.now, p.bucket);
  auto h = Hash(kA);
  EXPECT_EQ(Buckets(h), 1);
  EXPECT_EQ(h["b:" + std::to_string(a.now)], "5");
  EXPECT_EQ(h["o"], std::to_string(a.now));
  EXPECT_EQ(h["n"], std::to_string(a.now));
  EXPECT_EQ(h["t"], "5");

  // With 1 ms buckets, an increment a few ms later opens a new bucket stamped with its time.
  p.bucket = 1;
  const std::string other = "dk:{00000000}:r:a:ns:other";
  auto c = Inc(other, "10", "1", p);
  WaitRedisPast(c.now + 1);
  auto d = Inc(other, "10", "1", p);
  h = Hash(other);
  EXPECT_EQ(Buckets(h), 2);
  EXPECT_EQ(h["b:" + std::to_string(c.now)], "1");
  EXPECT_EQ(h["b:" + std::to_string(d.now)], "1");
  EXPECT_EQ(h["n"], std::to_string(d.now));
  EXPECT_EQ(h["o"], std::to_string(c.now));
}

TEST_F(RateLimitScriptTest, ExpiredBucketsAreEvictedAndFreeCapacity) {
  Params p;
  p.window = 1000;  // rate 10: capacity 10
  auto a = Inc(kA, "10", "6", p);
  ASSERT_EQ(a.decision, "allowed");
  EXPECT_EQ(Inc(kA, "10", "5", p).decision, "rejected");
  WaitRedisPast(a.now + p.window);  // the bucket is now older than the window
  EXPECT_EQ(Get(kA, p).total, 0) << "Get does not count expired buckets";
  auto b = Inc(kA, "10", "10", p);
  EXPECT_EQ(b.decision, "allowed") << "the whole capacity is free again";
  auto h = Hash(kA);
  EXPECT_EQ(Buckets(h), 1);
  EXPECT_EQ(h.count("b:" + std::to_string(a.now)), 0u) << "evicted";
  EXPECT_EQ(h["t"], "10");
  EXPECT_EQ(h["o"], std::to_string(b.now));
}

TEST_F(RateLimitScriptTest, RejectionAfterEvictionKeepsTheLiveState) {
  Params p;
  p.window = 1000;
  p.bucket = 1;
  auto a = Inc(kA, "10", "4", p);
  WaitRedisPast(a.now + p.bucket);
  auto b = Inc(kA, "10", "6", p);  // full (10)
  ASSERT_EQ(b.decision, "allowed");
  ASSERT_GT(b.now, a.now);
  WaitRedisPast(a.now + p.window);  // the first bucket expired, the second maybe not
  auto r = Inc(kA, "10", "7", p);
  const bool second_live = r.now - b.now < p.window;  // live while age < W
  if (second_live) {
    EXPECT_EQ(r.decision, "rejected");  // 6 + 7 > 10
    EXPECT_EQ(r.remaining, 6);
    EXPECT_EQ(r.retry, p.window - (r.now - b.now));
    EXPECT_EQ(Field(kA, "t"), 6) << "the eviction was written";
    EXPECT_EQ(Field(kA, "o"), b.now);
    ExpectTtl(kA, p);
  } else {
    EXPECT_EQ(r.decision, "allowed");  // the machine stalled for a whole window
  }
}

TEST_F(RateLimitScriptTest, AbsoluteGetReadsWithoutWriting) {
  Params p;
  auto g = Get(kA, p);
  EXPECT_EQ(g.status, "ok");
  EXPECT_EQ(g.total, 0);
  EXPECT_EQ(g.declined, 0);
  EXPECT_EQ(g.factor, "0");
  EXPECT_FALSE(Exists(kA)) << "Get creates nothing";
  Inc(kA, "1", "7", p);
  auto before = Hash(kA);
  g = Get(kA, p);
  EXPECT_EQ(g.total, 7);
  EXPECT_EQ(g.declined, 0);
  EXPECT_EQ(Hash(kA), before);
}

// ---------------------------------------------------------------- expiry

TEST_F(RateLimitScriptTest, EveryWrittenKeyHasATtlOfWindowPlusBucket) {
  Params p;
  p.window = 5000;
  p.bucket = 250;
  Inc(kA, "100", "1", p);
  ExpectTtl(kA, p);
  Inc(kS, "100", "1", p);
  ExpectTtl(kS, p);
  // A declined SUPPRESSED request writes too (observed units).
  auto r = Inc(kS, "0.1", "5", p, "0.5");  // hard 0: declined
  EXPECT_EQ(r.allowed, 0);
  ExpectTtl(kS, p);
}

TEST_F(RateLimitScriptTest, KeysDisappearAfterTheWindow) {
  Params p;
  p.window = 1000;
  p.bucket = 100;
  auto a = Inc(kA, "100", "3", p);
  ASSERT_EQ(a.decision, "allowed");
  WaitRedisPast(a.now + p.bucket);
  Inc(kA, "100", "3", p);  // a second bucket
  Params ps = p;
  ps.hlf = "10";  // rate 10: soft 10, hard 100
  ASSERT_EQ(Inc(kS, "10", "10", ps).decision, "allowed");
  ASSERT_EQ(Inc(kS, "10", "5", ps, "0.999999").decision, "suppressed");  // cache fields
  ASSERT_EQ(Inc(kS, "10", "500", ps).allowed, 0);                        // declines
  ASSERT_EQ(Field(kS, "d"), 500);
  ASSERT_TRUE(Exists(kA));
  ASSERT_TRUE(Exists(kS));
  EXPECT_TRUE(PollUntil([&] { return !Exists(kA) && !Exists(kS); }, 10s))
      << "PTTL a=" << Pttl(kA) << " s=" << Pttl(kS);
  EXPECT_EQ(Cmd({"DBSIZE"}), "0");
}

TEST_F(RateLimitScriptTest, BucketsStayBoundedUnderSteadyTraffic) {
  Params p;
  p.window = 1000;
  p.bucket = 100;
  const int64_t start = RedisNowMs();
  int max_buckets = 0, calls = 0;
  // 1.6 windows of traffic: at most window/bucket + 1 = 11 live buckets at any time.
  while (RedisNowMs() < start + 1600) {
    auto r = Inc(kA, "1000000", "1", p);
    ASSERT_EQ(r.decision, "allowed");
    max_buckets = std::max(max_buckets, Buckets(Hash(kA)));
    ++calls;
  }
  EXPECT_LE(max_buckets, 11) << calls << " calls";
  EXPECT_GE(max_buckets, 2);
  auto h = Hash(kA);
  int64_t sum = 0;
  for (const auto& [f, v] : h) sum += absl::StartsWith(f, "b:") ? std::stoll(v) : 0;
  EXPECT_EQ(std::to_string(sum), h["t"]) << "t is the sum of the live buckets";
}

// ---------------------------------------------------------------- SUPPRESSED

TEST_F(RateLimitScriptTest, SuppressedBelowSoftIsAllowedWithFactorZero) {
  Params p;
  p.window = 10000;
  p.hlf = "2";  // rate 1: soft 10, hard 20
  for (int i = 0; i < 10; ++i) {
    auto r = Inc(kS, "1", "1", p, "0.999");
    EXPECT_EQ(r.decision, "allowed");
    EXPECT_EQ(r.factor, "0");
    EXPECT_EQ(r.allowed, 1);
  }
  auto g = Get(kS, p);
  EXPECT_EQ(g.total, 10);
  EXPECT_EQ(g.declined, 0);
}

TEST_F(RateLimitScriptTest, SuppressedFactorFollowsTheObservedRate) {
  Params p;
  p.window = 10000;
  p.bucket = 10000;  // one bucket
  p.hlf = "2";       // soft 10, hard 20
  ASSERT_EQ(Inc(kS, "1", "10", p).decision, "allowed");
  auto r = Inc(kS, "1", "1", p, "0");  // forecast 11: in the band
  ASSERT_EQ(r.decision, "suppressed");
  // docs/api.md#rate-limiting: 1 - (soft / window_s) / max(observed / window_s, observed in the
  // last second).
  const int64_t ts = Field(kS, "o");
  const double last_second = r.now - ts <= 1000 ? 10 : 0;
  const double expected = 1 - (10.0 / 10) / std::max(10.0 / 10, last_second);
  EXPECT_DOUBLE_EQ(r.f(), expected);
  EXPECT_EQ(r.allowed, 1) << "random 0 < 1 - factor";
  EXPECT_EQ(Cmd({"HGET", kS, "f"}), r.factor) << "cached";
  EXPECT_EQ(Field(kS, "ft"), r.now);
}

TEST_F(RateLimitScriptTest, SuppressedDrawUsesThePassedRandomNumber) {
  Params p;
  p.window = 10000;
  p.hlf = "10";      // rate 1: soft 10, hard 100
  p.cache = 600000;  // the factor computed first stays for the whole test
  ASSERT_EQ(Inc(kS, "1", "10", p).decision, "allowed");
  // Push observed units up with declines past the hard limit (forecast > hard: factor 1).
  auto big = Inc(kS, "1", "95", p, "0");
  EXPECT_EQ(big.decision, "suppressed");
  EXPECT_EQ(big.factor, "1");
  EXPECT_EQ(big.allowed, 0);
  auto first = Inc(kS, "1", "1", p, "0");
  ASSERT_EQ(first.decision, "suppressed");
  const double f = first.f();
  // observed 105 over 10 s: perceived >= 10.5 per second, soft rate 1: f in [0.9, 1).
  ASSERT_GE(f, 0.9);
  ASSERT_LT(f, 1.0);
  EXPECT_EQ(first.allowed, 1);
  char below[64], above[64];
  std::snprintf(below, sizeof(below), "%.17g", (1 - f) * 0.999);
  std::snprintf(above, sizeof(above), "%.17g", (1 - f) * 1.001);
  auto admitted = Inc(kS, "1", "2", p, below);
  EXPECT_EQ(admitted.decision, "suppressed");
  EXPECT_EQ(admitted.factor, first.factor) << "the cached factor";
  EXPECT_EQ(admitted.allowed, 1);
  auto declined = Inc(kS, "1", "3", p, above);
  EXPECT_EQ(declined.factor, first.factor);
  EXPECT_EQ(declined.allowed, 0);
  auto g = Get(kS, p);
  EXPECT_EQ(g.total, 10 + 95 + 1 + 2 + 3);
  EXPECT_EQ(g.declined, 95 + 3);
  EXPECT_EQ(g.factor, first.factor) << "Get reads the cached factor";
  EXPECT_EQ(Field(kS, "d"), 98);
}

TEST_F(RateLimitScriptTest, AcceptedUnitsNeverExceedTheHardLimit) {
  Params p;
  p.window = 10000;
  p.hlf = "2";  // soft 10, hard 20
  int64_t accepted = 0;
  for (int i = 0; i < 40; ++i) {
    auto r = Inc(kS, "1", "1", p, "0");  // random 0: admitted whenever the factor is < 1
    if (r.allowed == 1) ++accepted;
  }
  EXPECT_EQ(accepted, 20);
  auto r = Inc(kS, "1", "1", p, "0");
  EXPECT_EQ(r.decision, "suppressed");
  EXPECT_EQ(r.factor, "1");
  EXPECT_EQ(r.allowed, 0);
  auto g = Get(kS, p);
  EXPECT_EQ(g.total - g.declined, 20);
  EXPECT_EQ(g.total, 41);
}

TEST_F(RateLimitScriptTest, BatchCrossingTheHardLimitIsDeclinedWhole) {
  Params p;
  p.window = 10000;
  p.hlf = "2";  // soft 10, hard 20
  ASSERT_EQ(Inc(kS, "1", "10", p).decision, "allowed");
  auto r = Inc(kS, "1", "11", p, "0");
  EXPECT_EQ(r.decision, "suppressed");
  EXPECT_EQ(r.factor, "1");
  EXPECT_EQ(r.allowed, 0);
  auto g = Get(kS, p);
  EXPECT_EQ(g.total, 21);
  EXPECT_EQ(g.declined, 11);
}

// The fix over trypema (docs/rate_limiting.md D3): declined units do not pin the factor at 1 once
// the observed total passes the hard limit; only accepted units count against it.
TEST_F(RateLimitScriptTest, DeclinesPilingUpDoNotCollapseAdmission) {
  Params p;
  p.window = 10000;
  p.hlf = "2";  // soft 10, hard 20
  p.cache = 1;  // recompute on every call
  ASSERT_EQ(Inc(kS, "1", "10", p).decision, "allowed");
  for (int i = 0; i < 4; ++i) {
    auto r = Inc(kS, "1", "15", p, "0");  // forecast 25 > hard: declined
    ASSERT_EQ(r.allowed, 0);
  }
  ASSERT_GE(Get(kS, p).total, 70);  // observed 70 >= hard 20, accepted 10
  auto r = Inc(kS, "1", "1", p, "0");
  EXPECT_EQ(r.decision, "suppressed");
  EXPECT_LT(r.f(), 1.0) << "observed >= hard must not force factor 1";
  EXPECT_GE(r.f(), 0.8);  // perceived >= 7/s, soft 1/s
  EXPECT_EQ(r.allowed, 1);
}

TEST_F(RateLimitScriptTest, HardLimitFactorOneHasNoBand) {
  Params p;
  p.window = 10000;  // rate 1: soft = hard = 10
  ASSERT_EQ(Inc(kS, "1", "10", p, "0").decision, "allowed");
  auto r = Inc(kS, "1", "1", p, "0");
  EXPECT_EQ(r.decision, "suppressed");
  EXPECT_EQ(r.factor, "1");
  EXPECT_EQ(r.allowed, 0);
}

TEST_F(RateLimitScriptTest, FactorCacheExpiresAfterCacheMs) {
  Params p;
  p.window = 10000;
  p.hlf = "10";  // rate 1: soft 10, hard 100
  p.cache = 200;
  ASSERT_EQ(Inc(kS, "1", "10", p).decision, "allowed");
  auto a = Inc(kS, "1", "1", p, "0");  // accepted 10 = soft: the formula, cached
  ASSERT_EQ(a.decision, "suppressed");
  EXPECT_EQ(Field(kS, "ft"), a.now);
  EXPECT_EQ(Cmd({"HGET", kS, "fk"}), "10:100");
  EXPECT_EQ(Cmd({"HGET", kS, "r"}), "1") << "Get uses the last rate";
  auto b = Inc(kS, "1", "1", p, "0");
  if (b.now - a.now < p.cache) {
    EXPECT_EQ(b.factor, a.factor) << "fresh: the cached value";
    EXPECT_EQ(Field(kS, "ft"), a.now);
  }
  WaitRedisPast(a.now + p.cache);
  auto c = Inc(kS, "1", "1", p, "0");
  EXPECT_EQ(Field(kS, "ft"), c.now) << "expired: computed again";
}

TEST_F(RateLimitScriptTest, CachedFactorBelongsToTheLimitsItWasComputedFor) {
  Params p;
  p.window = 10000;
  p.bucket = 10000;  // one bucket
  p.hlf = "10";
  p.cache = 600000;
  ASSERT_EQ(Inc(kS, "1", "10", p).decision, "allowed");  // rate 1: soft 10, hard 100
  auto a = Inc(kS, "1", "1", p, "0");                    // band: computed and cached
  ASSERT_EQ(a.decision, "suppressed");
  EXPECT_EQ(Cmd({"HGET", kS, "fk"}), "10:100");
  // rate 0.5: soft 5, hard 50; accepted 11 is in its band too, but the factor cached for rate
  // 1's limits does not apply: 1 - (5/10) / perceived differs from 1 - (10/10) / perceived.
  auto b = Inc(kS, "0.5", "1", p, "0");
  ASSERT_EQ(b.decision, "suppressed");
  EXPECT_NE(b.factor, a.factor);
  EXPECT_EQ(Cmd({"HGET", kS, "fk"}), "5:50");
  EXPECT_EQ(Field(kS, "ft"), b.now);
  const double last_second = b.now - Field(kS, "o") <= 1000 ? 11 : 0;
  EXPECT_DOUBLE_EQ(b.f(), 1 - 0.5 / std::max(1.1, last_second));
}

TEST_F(RateLimitScriptTest, DeterministicFactorsAreNotCached) {
  Params p;
  p.window = 10000;
  p.hlf = "10";  // rate 1: soft 10, hard 100
  p.cache = 600000;
  ASSERT_EQ(Inc(kS, "1", "9", p).decision, "allowed");
  // In the band, but accepted 9 < soft: factor 0 without the formula, and nothing cached...
  auto a = Inc(kS, "1", "3", p, "0");
  EXPECT_EQ(a.decision, "suppressed");
  EXPECT_EQ(a.factor, "0");
  EXPECT_EQ(a.allowed, 1);
  EXPECT_FALSE(Cmd({"HEXISTS", kS, "f"}) == "1");
  // ...so with accepted 12 >= soft the next request gets the formula at once, not a cached 0.
  auto b = Inc(kS, "1", "1", p, "0.99999");
  EXPECT_GT(b.f(), 0);
  EXPECT_EQ(Cmd({"HGET", kS, "f"}), b.factor);
  EXPECT_EQ(b.allowed, 0);
}

TEST_F(RateLimitScriptTest, SuppressedGetOnUnknownKeyIsZeroAndWritesNothing) {
  auto g = Get(kS, {});
  EXPECT_EQ(g.total, 0);
  EXPECT_EQ(g.declined, 0);
  EXPECT_EQ(g.factor, "0");
  EXPECT_FALSE(Exists(kS));
}

TEST_F(RateLimitScriptTest, SuppressedGetComputesTheFactorWithTheLastRate) {
  Params p;
  p.window = 10000;
  p.bucket = 10000;  // one bucket
  p.hlf = "10";      // rate 1: soft 10, hard 100
  p.cache = 1;       // Get will have to compute
  ASSERT_EQ(Inc(kS, "1", "10", p).decision, "allowed");
  auto r = Inc(kS, "1", "40", p, "0");  // in the band, admitted
  ASSERT_EQ(r.allowed, 1);
  WaitRedisPast(r.now + p.cache);
  auto before = Hash(kS);
  auto g = Get(kS, p);
  // accepted 50 >= soft 10: 1 - 1 / max(5, last second), with last second 50 or 0.
  const double last_second = g.now - Field(kS, "o") <= 1000 ? 50 : 0;
  EXPECT_DOUBLE_EQ(std::stod(g.factor), 1 - 1.0 / std::max(5.0, last_second));
  EXPECT_EQ(Hash(kS), before) << "Get writes nothing, not even the cache";
}

TEST_F(RateLimitScriptTest, StrategiesAndKeysAreIndependent) {
  Params p;  // capacity 60 at rate 1
  ASSERT_EQ(Inc(kA, "1", "60", p).decision, "allowed");
  EXPECT_EQ(Inc(kA, "1", "1", p).decision, "rejected");
  EXPECT_EQ(Inc(kS, "1", "60", p).decision, "allowed") << "the SUPPRESSED state is another key";
  EXPECT_EQ(Inc("dk:{00000000}:r:a:ns:key2", "1", "60", p).decision, "allowed");
}

// ---------------------------------------------------------------- numbers

TEST_F(RateLimitScriptTest, UnitsStayExactUpTo2To53) {
  Params p;
  const std::string max = std::to_string(kTwo53 - 1);
  // A huge rate caps the capacity at 2^53 - 1: usage stays exact.
  auto r = Inc(kA, "1e300", max, p);
  EXPECT_EQ(r.decision, "allowed");
  EXPECT_EQ(Cmd({"HGET", kA, "t"}), max);
  EXPECT_EQ(Inc(kA, "1e300", "1", p).decision, "rejected");
  EXPECT_EQ(Get(kA, p).total, kTwo53 - 1);
  // SUPPRESSED: a request that would push observed units to 2^53 is refused, nothing written.
  ASSERT_EQ(Inc(kS, "1e300", max, p).decision, "allowed");
  auto before = Hash(kS);
  r = RawInc(kS, {"inc", "s", "60000", "100", "1", "100", "1e300", "1", "0"});
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.status, "range");
  EXPECT_EQ(Hash(kS), before);
}

TEST_F(RateLimitScriptTest, InvalidArgumentsAreRefusedBeforeAnyWrite) {
  const std::vector<std::string> good = {"inc", "a", "1000", "100", "1.5", "100", "5", "1", "0.5"};
  ASSERT_EQ(RawInc(kA, good).error, "");
  ASSERT_EQ(Cmd({"DEL", kA}), "1");
  struct Case {
    size_t index;
    std::string value;
  };
  const std::vector<Case> cases = {{0, "set"},  {1, "x"},
                                   {1, "s"},    {2, "0"},
                                   {2, "-5"},   {2, "1.5"},
                                   {3, "0"},    {3, "1001"},
                                   {4, "0.5"},  {4, "inf"},
                                   {4, "nan"},  {4, "abc"},
                                   {5, "0"},    {6, "0"},
                                   {6, "-1"},   {6, "nan"},
                                   {6, "inf"},  {6, "1e999"},
                                   {6, "0x10"}, {6, " 5"},
                                   {7, "0"},    {7, "-1"},
                                   {7, "1.5"},  {7, "abc"},
                                   {7, "01"},   {7, std::to_string(kTwo53)},
                                   {8, "1"},    {8, "-0.1"},
                                   {8, "x"}};
  for (const auto& c : cases) {
    auto args = good;
    args[c.index] = c.value;
    auto r = RawInc(kA, args);
    EXPECT_TRUE(absl::StartsWith(r.error, "ERR distkit: "))
        << "ARGV[" << c.index + 1 << "] = '" << c.value << "': " << r.error;
    EXPECT_FALSE(Exists(kA)) << c.value;
  }
  // Argument count, key count.
  auto shorter = good;
  shorter.pop_back();
  EXPECT_TRUE(absl::StartsWith(RawInc(kA, shorter).error, "ERR distkit: "));
  redisReply* r = Eval({kA, kS}, good);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->type, REDIS_REPLY_ERROR);
  freeReplyObject(r);
  EXPECT_FALSE(Exists(kA));
  EXPECT_FALSE(Exists(kS));
}

// The script checks a usual ARGV with one pattern and names a bad argument with the checks one
// by one: unusual spellings the checks accept are accepted, and a ',' (the pattern's separator)
// inside an argument cannot shift the other arguments into place.
TEST_F(RateLimitScriptTest, UnusualButValidNumbersAreAccepted) {
  // rate 5/s over 1 s: capacity 5, however the rate is spelled.
  for (const std::string rate : {"5", "+5", "5.", "5.0", ".5e1", "5E0", "50e-1", "0.5e+01"}) {
    SCOPED_TRACE(rate);
    Cmd({"DEL", kA});
    auto r = RawInc(kA, {"inc", "a", "1000", "1000", "1", "100", rate, "5", "0"});
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(r.decision, "allowed");
    EXPECT_EQ(RawInc(kA, {"inc", "a", "1000", "1000", "1", "100", rate, "1", "0"}).decision,
              "rejected");
  }
  // hard_limit_factor and random spelled otherwise; the largest integers below 2^53.
  const std::string max = std::to_string(kTwo53 - 1);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"inc", "s", "1000", "100", "1.0", "100", "1", "1", "-0"},
           {"inc", "s", "1000", "100", "+1", "100", "1", "1", "0.5e-1"},
           {"inc", "s", "1000", "100", "1e0", "100", "1", "1", "0E5"},
           {"inc", "s", max, max, "2", max, "1", "1", "0.99999999999999989"},
           {"inc", "s", "1000", "100", "1", "100", "1e300", max, "0"}}) {
    Cmd({"DEL", kS});
    auto r = RawInc(kS, args);
    EXPECT_EQ(r.error, "") << args[4] << " " << args[8];
    EXPECT_EQ(r.status, "ok");
  }
  // A ',' anywhere is refused, and the error names that argument.
  Cmd({"DEL", kA});
  const std::vector<std::string> good = {"inc", "a", "1000", "100", "1.5", "100", "5", "1", "0.5"};
  const std::vector<std::pair<size_t, std::string>> named = {
      {2, "window_ms"}, {3, "bucket_ms"}, {4, "hard_limit_factor"}, {5, "cache_ms"}, {6, "rate"},
      {7, "count"},     {8, "random"}};
  for (const auto& [index, name] : named) {
    for (const std::string bad : {",", "1,5", "5,", ",5"}) {
      auto args = good;
      args[index] = bad;
      auto r = RawInc(kA, args);
      EXPECT_TRUE(absl::StartsWith(r.error, "ERR distkit: " + name))
          << "ARGV[" << index + 1 << "] = '" << bad << "': " << r.error;
    }
  }
  EXPECT_TRUE(absl::StartsWith(RawInc(kA, {"get", "a", "1000", "100", "1,5", "100"}).error,
                               "ERR distkit: hard_limit"));
  EXPECT_FALSE(Exists(kA));
}

// The common request writes only the fields that change and reuses the stored text of the
// others, which it may only do when that text is what the script writes: numeric but
// non-canonical fields are rewritten canonical by the next Inc, as they always were.
TEST_F(RateLimitScriptTest, NonCanonicalFieldsAreRewrittenCanonical) {
  Params p;
  p.bucket = 60000;  // every Inc of this test joins the first bucket
  auto a = Inc(kA, "10", "2", p);
  ASSERT_EQ(a.decision, "allowed");
  const std::string ts = std::to_string(a.now);
  Cmd({"HSET", kA, "t", "2e0", "o", "0" + ts, "n", ts + ".0"});
  auto b = Inc(kA, "10", "3", p);
  ASSERT_EQ(b.decision, "allowed");
  auto h = Hash(kA);
  EXPECT_EQ(h["t"], "5");
  EXPECT_EQ(h["o"], ts);
  EXPECT_EQ(h["n"], ts);
  EXPECT_EQ(h["b:" + ts], "5");
  EXPECT_EQ(Buckets(h), 1);
  // SUPPRESSED: d as well.
  auto s = Inc(kS, "10", "2", p);
  ASSERT_EQ(s.decision, "allowed");
  const std::string sts = std::to_string(s.now);
  Cmd({"HSET", kS, "d", "00", "o", " " + sts});
  ASSERT_EQ(Inc(kS, "10", "1", p).decision, "allowed");
  h = Hash(kS);
  EXPECT_EQ(h["t"], "3");
  EXPECT_EQ(h["d"], "0");
  EXPECT_EQ(h["o"], sts);
  EXPECT_EQ(h["n"], sts);
}

// Within one bucket: every Inc records its rate, a declined one its units in d and x:<ts>, an
// admitted one leaves both alone.
TEST_F(RateLimitScriptTest, SuppressedIncsInOneBucketKeepRateAndDeclinesExact) {
  Params p;
  p.window = 10000;
  p.bucket = 10000;                // one bucket
  auto a = Inc(kS, "1", "10", p);  // hlf 1, rate 1: soft = hard = 10
  ASSERT_EQ(a.decision, "allowed");
  const std::string x = "x:" + std::to_string(a.now);
  auto b = Inc(kS, "1", "1", p);
  ASSERT_EQ(b.decision, "suppressed");  // forecast 11 > hard 10: declined
  ASSERT_EQ(b.allowed, 0);
  auto h = Hash(kS);
  EXPECT_EQ(h["t"], "11");
  EXPECT_EQ(h["d"], "1");
  EXPECT_EQ(h[x], "1");
  EXPECT_EQ(h["r"], "1");
  auto c = Inc(kS, "2", "3", p);  // rate 2: soft = hard = 20, forecast 13: admitted
  ASSERT_EQ(c.decision, "allowed");
  h = Hash(kS);
  EXPECT_EQ(h["t"], "14");
  EXPECT_EQ(h["d"], "1");
  EXPECT_EQ(h[x], "1");
  EXPECT_EQ(h["r"], "2") << "the last Inc's rate";
  ASSERT_EQ(Inc(kS, "2", "1", p).decision, "allowed");
  h = Hash(kS);
  EXPECT_EQ(h["t"], "15");
  EXPECT_EQ(h["r"], "2");
  EXPECT_EQ(Buckets(h), 1);
  auto g = Get(kS, p);
  EXPECT_EQ(g.total, 15);
  EXPECT_EQ(g.declined, 1);
  ExpectTtl(kS, p);
}

TEST_F(RateLimitScriptTest, MalformedStateIsRebuiltFromTheBuckets) {
  Params p;
  p.bucket = 60000;
  auto a = Inc(kA, "1", "5", p);
  ASSERT_EQ(a.decision, "allowed");
  Cmd({"HSET", kA, "t", "garbage"});
  Cmd({"HDEL", kA, "o"});
  auto r = Inc(kA, "1", "55", p);  // capacity 60: fits exactly when t is rebuilt as 5
  EXPECT_EQ(r.decision, "allowed");
  EXPECT_EQ(Field(kA, "t"), 60);
  EXPECT_EQ(Field(kA, "o"), a.now);
  EXPECT_EQ(Inc(kA, "1", "1", p).decision, "rejected");
}

// ---------------------------------------------------------------- several requests in one call

// The multi-request mode (k > 1 triples) must answer each request as k consecutive single calls
// at the same Redis ms would, and leave the same hash and TTL: every test below drives two keys
// in lockstep, one with k single calls and one with one call (RunLockstep, ExpectSame).
constexpr char kA1[] = "dk:{00000000}:r:a:ns:singles";
constexpr char kA2[] = "dk:{00000000}:r:a:ns:multi";
constexpr char kS1[] = "dk:{00000000}:r:s:ns:singles";
constexpr char kS2[] = "dk:{00000000}:r:s:ns:multi";

TEST_F(RateLimitScriptTest, MultiAbsoluteEqualsSinglesWithRejectionsInTheBatch) {
  Params p;
  p.window = 10000;  // rate 0.5/s: capacity 5
  const std::vector<Triple> eight(8, Triple{"0.5", "1", "0"});
  auto l = RunLockstep(kA1, kA2, p, eight);
  ExpectSame(l);
  ASSERT_EQ(l.multi.replies.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    const auto& r = l.multi.replies[i];
    EXPECT_EQ(r.status, "ok");
    EXPECT_EQ(r.decision, i < 5 ? "allowed" : "rejected") << i;
    EXPECT_EQ(r.allowed, i < 5 ? 1 : 0) << i;
    EXPECT_EQ(r.factor, "0");
    // The batch's bucket leaves the window in a whole window, freeing all 5 units.
    EXPECT_EQ(r.retry, i < 5 ? 0 : p.window) << i;
    EXPECT_EQ(r.remaining, i < 5 ? 0 : 5) << i;
  }
  EXPECT_EQ(l.multi_hash["t"], "5");
  EXPECT_EQ(l.multi_hash["b:" + std::to_string(l.now())], "5");
  EXPECT_EQ(Buckets(l.multi_hash), 1);
  ExpectTtl(kA2, p);

  // Counts above one, a count above the capacity ((0, 0), nothing recorded), other rates in the
  // same batch (capacity 10 at 1/s, 20 at 2/s), against the bucket already there.
  l = RunLockstep(kA1, kA2, p,
                  {{"0.5", "1"}, {"1", "3"}, {"1", "11"}, {"2", "12"}, {"1", "1"}, {"2", "1"}});
  ExpectSame(l);
  ASSERT_EQ(l.multi.replies.size(), 6u);
  const std::vector<std::string> decisions = {"rejected", "allowed",  "rejected",
                                              "allowed",  "rejected", "rejected"};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(l.multi.replies[i].decision, decisions[i]) << i;
  EXPECT_EQ(l.multi.replies[2].retry, 0);
  EXPECT_EQ(l.multi.replies[2].remaining, 0);
  EXPECT_EQ(l.multi_hash["t"], "20");
}

TEST_F(RateLimitScriptTest, MultiSuppressedEqualsSinglesThroughTheBand) {
  Params p;
  p.window = 10000;
  p.bucket = 10000;  // one bucket
  p.hlf = "2";       // rate 1: soft 10, hard 20
  p.cache = 600000;  // the factor computed first is reused by the later requests
  // Draws around the factors the band will produce, in the daemon's spellings.
  const std::vector<std::string> draws = {"0",
                                          "0.5",
                                          "0.99",
                                          "0.0001",
                                          "0.73",
                                          "0.25",
                                          "0.9",
                                          "0.12345678901234567",
                                          "0.99999999999999989",
                                          "4.2e-06",
                                          "0.6",
                                          "0.05"};
  // 40 requests in batches of 8 (the 8 single calls of a lockstep must fit in one ms).
  int accepted = 0, band = 0, declined = 0;
  Lockstep l;
  for (int b = 0; b < 5; ++b) {
    std::vector<Triple> batch;
    for (int i = 8 * b; i < 8 * b + 8; ++i) batch.push_back({"1", "1", draws[i % draws.size()]});
    l = RunLockstep(kS1, kS2, p, batch);
    ExpectSame(l);
    ASSERT_EQ(l.multi.replies.size(), 8u);
    for (int i = 0; i < 8; ++i) {
      const auto& r = l.multi.replies[i];
      if (8 * b + i < 10) {
        EXPECT_EQ(r.decision, "allowed") << 8 * b + i;
      }
      if (r.decision == "suppressed" && r.factor != "1") ++band;
      accepted += r.allowed;
      declined += 1 - r.allowed;
    }
  }
  EXPECT_GT(band, 0) << "some requests were decided by the factor and their draw";
  EXPECT_LE(accepted, 20) << "hard limit";
  EXPECT_EQ(l.multi_hash["t"], "40");
  EXPECT_EQ(l.multi_hash["d"], std::to_string(declined));
  EXPECT_EQ(l.multi_hash["o"], l.multi_hash["n"]) << "one bucket";
  EXPECT_EQ(l.multi_hash["x:" + l.multi_hash["o"]], std::to_string(declined));
  EXPECT_EQ(l.multi_hash["r"], "1");
  ExpectTtl(kS2, p);

  // Another rate in the batch (other limits: the cached factor does not apply), counts above
  // one, a batch crossing the hard limit, then the last rate stays in r.
  p.cache = 1;
  std::vector<Triple> batch = {{"2", "3", "0.5"}, {"1", "2", "0.1"}, {"2", "1", "0.7"},
                               {"3", "50", "0"},  {"2", "5", "0.3"}, {"0.5", "1", "0.2"}};
  l = RunLockstep(kS1, kS2, p, batch);
  ExpectSame(l);
  EXPECT_EQ(l.multi_hash["r"], "0.5");
  EXPECT_EQ(l.multi_hash["t"], std::to_string(40 + 3 + 2 + 1 + 50 + 5 + 1));
}

TEST_F(RateLimitScriptTest, MultiBatchOpensANewBucket) {
  Params p;
  p.window = 60000;
  p.bucket = 1;
  const std::vector<Triple> three = {{"10", "1"}, {"10", "2"}, {"10", "3"}};
  auto first = RunLockstep(kA1, kA2, p, three);
  ExpectSame(first);
  WaitRedisPast(first.now() + p.bucket);
  auto second = RunLockstep(kA1, kA2, p, three);
  ExpectSame(second);
  ASSERT_GT(second.now(), first.now() + p.bucket);
  auto h = second.multi_hash;
  EXPECT_EQ(Buckets(h), 2);
  EXPECT_EQ(h["b:" + std::to_string(first.now())], "6");
  EXPECT_EQ(h["b:" + std::to_string(second.now())], "6");
  EXPECT_EQ(h["o"], std::to_string(first.now()));
  EXPECT_EQ(h["n"], std::to_string(second.now()));
  EXPECT_EQ(h["t"], "12");
  // The same for SUPPRESSED (declines in the new bucket's x:).
  Params ps = p;
  ps.window = 10000;  // rate 1: soft = hard = 10
  auto s1 = RunLockstep(kS1, kS2, ps, {{"1", "8"}, {"1", "1"}});
  ExpectSame(s1);
  WaitRedisPast(s1.now() + ps.bucket);
  auto s2 = RunLockstep(kS1, kS2, ps, {{"1", "1"}, {"1", "4"}, {"1", "1"}});
  ExpectSame(s2);
  EXPECT_EQ(s2.multi_hash["x:" + std::to_string(s2.now())], "5");  // 4 + 1 over hard
  EXPECT_EQ(s2.multi_hash["n"], std::to_string(s2.now()));
}

TEST_F(RateLimitScriptTest, MultiBatchAfterExpiredBuckets) {
  Params p;
  p.window = 300;  // rate 10/s: capacity 3
  p.bucket = 100;
  auto fill = RunLockstep(kA1, kA2, p, {{"10", "2"}, {"10", "1"}});
  ExpectSame(fill);
  WaitRedisPast(fill.now() + p.window);  // the bucket has left the window
  auto l = RunLockstep(kA1, kA2, p, std::vector<Triple>(5, Triple{"10", "1"}));
  ExpectSame(l);
  ASSERT_EQ(l.multi.replies.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(l.multi.replies[i].decision, i < 3 ? "allowed" : "rejected") << i;
  }
  EXPECT_EQ(l.multi.replies[3].retry, p.window);
  EXPECT_EQ(l.multi.replies[3].remaining, 3);
  EXPECT_EQ(l.multi_hash.count("b:" + std::to_string(fill.now())), 0u) << "evicted";
  EXPECT_EQ(l.multi_hash["t"], "3");
  EXPECT_EQ(l.multi_hash["o"], std::to_string(l.now()));

  // A batch of rejections only, after expiry: the eviction is written (or the key deleted).
  WaitRedisPast(l.now() + p.window);
  l = RunLockstep(kA1, kA2, p, {{"10", "4"}, {"10", "5"}});
  ExpectSame(l);
  EXPECT_TRUE(l.multi_hash.empty()) << "left without buckets: deleted";

  // SUPPRESSED: the factor cached before the eviction is forgotten.
  Params ps;
  ps.window = 300;
  ps.bucket = 100;
  ps.hlf = "10";  // rate 10: soft 3, hard 30
  ps.cache = 600000;
  auto s = RunLockstep(kS1, kS2, ps, {{"10", "3"}, {"10", "1", "0.5"}});
  ExpectSame(s);
  ASSERT_EQ(s.multi_hash["ft"], std::to_string(s.now()));
  WaitRedisPast(s.now() + ps.window);
  s = RunLockstep(kS1, kS2, ps, {{"10", "1"}, {"10", "2"}, {"10", "1", "0.9"}, {"10", "1"}});
  ExpectSame(s);
  EXPECT_EQ(s.multi_hash["t"], "5");
}

// Fields this script does not write (names, values) make a batch read Redis request by request
// as single calls do: still the same answers and the same hash.
TEST_F(RateLimitScriptTest, MultiOnMalformedStateEqualsSingles) {
  Params p;
  p.bucket = 60000;
  auto fill = RunLockstep(kA1, kA2, p, {{"1", "2"}, {"1", "3"}});
  ExpectSame(fill);
  const int64_t ts = fill.now();
  for (const std::string& key : {std::string(kA1), std::string(kA2)}) {
    Cmd({"HSET", key, "t", "garbage", "b:0" + std::to_string(ts), "7", "x:" + std::to_string(ts),
         "2"});
  }
  auto l = RunLockstep(kA1, kA2, p, {{"1", "20"}, {"1", "30"}, {"1", "10"}, {"1", "1"}});
  ExpectSame(l);
  EXPECT_NE(l.multi_hash["t"], "garbage");

  Params ps = p;
  ps.hlf = "3";  // rate 1 over 60 s: soft 60, hard 180
  fill = RunLockstep(kS1, kS2, ps, {{"1", "25"}, {"1", "25"}});
  ExpectSame(fill);
  const int64_t sts = fill.now();
  for (const std::string& key : {std::string(kS1), std::string(kS2)}) {
    Cmd({"HSET", key, "d", "abc", "b: " + std::to_string(sts), "20", "f", "0.5"});
  }
  l = RunLockstep(kS1, kS2, ps, {{"1", "5", "0.5"}, {"1", "10", "0.1"}, {"1", "100", "0.9"}});
  ExpectSame(l);
}

TEST_F(RateLimitScriptTest, MultiBadTripleFailsLikeItsSingleCallAndWritesNothing) {
  Params p;
  ASSERT_EQ(Inc(kA, "10", "3", p).decision, "allowed");
  const auto before = Hash(kA);
  struct Case {
    size_t field;  // 0 rate, 1 count, 2 random
    std::string value;
  };
  const std::vector<Case> cases = {{0, "0"},
                                   {0, "inf"},
                                   {0, "nan"},
                                   {0, "1,5"},
                                   {0, "-1"},
                                   {0, " 5"},
                                   {1, "0"},
                                   {1, "1.5"},
                                   {1, "01"},
                                   {1, "abc"},
                                   {1, std::to_string(kTwo53)},
                                   {2, "1"},
                                   {2, "-0.1"},
                                   {2, "0x0.8"},
                                   {2, "0.99999999999999999"},
                                   {2, "nan"},
                                   {2, ""}};
  for (const auto& c : cases) {
    std::vector<Triple> batch(5, Triple{"10", "1", "0.5"});
    Triple bad = batch[2];
    (c.field == 0 ? bad.rate : c.field == 1 ? bad.count : bad.random) = c.value;
    batch[2] = bad;
    batch[3] = Triple{"10", "1", "x"};  // a later bad triple: the first one is named
    const IncReply single = RawInc(kA, IncArgs(kA, p, {bad}));
    ASSERT_TRUE(absl::StartsWith(single.error, "ERR distkit: ")) << c.value;
    EXPECT_EQ(MultiInc(kA, p, batch).error, single.error) << "'" << c.value << "'";
    EXPECT_EQ(Hash(kA), before) << "nothing written: " << c.value;
  }
  // A bad setting is named as in a single call, whatever the triples.
  Params bad = p;
  bad.bucket = p.window + 1;
  const std::string error = RawInc(kA, IncArgs(kA, bad, {{"10", "1"}})).error;
  EXPECT_TRUE(absl::StartsWith(error, "ERR distkit: bucket_ms")) << error;
  EXPECT_EQ(MultiInc(kA, bad, {{"10", "1"}, {"10", "1"}}).error, error);
  EXPECT_EQ(Hash(kA), before);
}

TEST_F(RateLimitScriptTest, MultiTakesAtMost1000Requests) {
  Params p;
  auto r = MultiInc(kA, p, std::vector<Triple>(1000, Triple{"1", "1"}));  // capacity 60
  ASSERT_EQ(r.error, "");
  ASSERT_EQ(r.replies.size(), 1000u);
  EXPECT_EQ(r.replies[59].decision, "allowed");
  EXPECT_EQ(r.replies[60].decision, "rejected");
  EXPECT_EQ(r.replies[999].decision, "rejected");
  const auto before = Hash(kA);
  EXPECT_EQ(MultiInc(kA, p, std::vector<Triple>(1001, Triple{"1000", "1"})).error,
            "ERR distkit: too many requests");
  EXPECT_EQ(Hash(kA), before) << "nothing written";
  // ARGV must be 6 + 3k.
  auto args = IncArgs(kA, p, {{"1", "1"}, {"1", "1"}});
  args.pop_back();
  EXPECT_EQ(RawInc(kA, args).error, "ERR distkit: wrong number of arguments");
  args.pop_back();
  EXPECT_EQ(RawInc(kA, args).error, "ERR distkit: wrong number of arguments");
  redisReply* g = Eval({kA}, {"get", "a", "60000", "100", "1", "100", "1", "1", "0"});
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(std::string(g->str, g->len), "ERR distkit: wrong number of arguments") << "get: 6";
  freeReplyObject(g);
  EXPECT_EQ(Hash(kA), before);
}

}  // namespace
}  // namespace distkit::testing
