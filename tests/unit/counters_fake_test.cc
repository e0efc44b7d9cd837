// Unit tests of core::Counters against FakeRedisClient and a fake clock: the lax machinery
// (first read shared, zero round trips in steady state, exactly-once flushing under lost
// replies and refused sends, folding into strict ops, backpressure).

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "daemon/core/counters.h"
#include "daemon/core/redis_keys.h"
#include "tests/fakes/fake_redis.h"

namespace distkit::core {
namespace {

using testing::FakeClock;
using testing::FakeRedisClient;

class CountersTest : public ::testing::Test {
 protected:
  CountersTest() { Make(1000000); }
  void Make(int64_t max_pending, int64_t max_keys = 1000000) {
    CountersOptions o;
    o.dedup_id = "me";
    o.allowed_lag_ms = 20;
    o.max_pending_keys = max_pending;
    o.max_keys = max_keys;
    counters_ = std::make_unique<Counters>(&redis_, o, &clock_);
  }
  // Runs an op whose callback may be deferred; returns the captured result.
  struct Capture {
    std::optional<absl::StatusOr<CounterResult>> r;
    CounterCallback cb() {
      return [this](absl::StatusOr<CounterResult> res) { r = std::move(res); };
    }
  };
  const std::string key_ = PlainCounterKey("ns", "k");
  FakeRedisClient redis_;
  FakeClock clock_;
  std::unique_ptr<Counters> counters_;
};

TEST_F(CountersTest, FirstLaxTouchReadsOnceSharedByConcurrentCallers) {
  redis_.Store(key_, 10);
  Capture a, b;
  counters_->Inc("ns", "k", 5, Consistency::kLax, {}, a.cb());
  counters_->Inc("ns", "k", 3, Consistency::kLax, {}, b.cb());
  EXPECT_FALSE(a.r.has_value());
  ASSERT_EQ(redis_.pending(), 1u);  // one read for both
  redis_.Answer();
  ASSERT_TRUE(a.r && b.r);
  EXPECT_EQ((*a.r)->value, 15);
  EXPECT_EQ((*a.r)->previous, 10);
  EXPECT_EQ((*b.r)->value, 18);
  EXPECT_EQ(redis_.pending(), 0u);
}

TEST_F(CountersTest, SteadyStateLaxIncMakesNoRoundTrip) {
  Capture c;
  counters_->Inc("ns", "k", 1, Consistency::kLax, {}, c.cb());
  redis_.AnswerAll();
  for (int i = 0; i < 1000; ++i) {
    Capture d;
    counters_->Inc("ns", "k", 1, Consistency::kLax, {}, d.cb());
    ASSERT_TRUE(d.r.has_value());
    EXPECT_EQ((*d.r)->value, i + 2);
  }
  EXPECT_EQ(redis_.pending(), 0u);
  counters_->FlushNow();
  EXPECT_EQ(redis_.pending(), 1u);  // one flush for the key
  redis_.AnswerAll();
  EXPECT_EQ(redis_.Stored(key_), 1001);
  EXPECT_EQ(counters_->stats().dirty_keys.load(), 0);
}

TEST_F(CountersTest, FlushWhoseReplyIsLostIsNotDoubled) {
  Capture c;
  counters_->Inc("ns", "k", 7, Consistency::kLax, {}, c.cb());
  redis_.AnswerAll();
  counters_->FlushNow();
  redis_.ApplyButTimeout();  // applied, but we were told "timeout"
  EXPECT_EQ(redis_.Stored(key_), 7);
  Capture d;
  counters_->Inc("ns", "k", 2, Consistency::kLax, {}, d.cb());
  counters_->FlushNow();  // resends seq of the 7 (skipped by Redis) + a new seq for the 2
  redis_.AnswerAll();
  EXPECT_EQ(redis_.Stored(key_), 9);
  EXPECT_EQ(counters_->stats().dirty_keys.load(), 0);
  Capture g;
  counters_->Get("ns", "k", Consistency::kLax, g.cb());
  redis_.AnswerAll();
  EXPECT_EQ((*g.r)->value, 9);
}

TEST_F(CountersTest, RefusedSendsMergeInsteadOfPilingUp) {
  Capture c;
  counters_->Inc("ns", "k", 1, Consistency::kLax, {}, c.cb());
  redis_.AnswerAll();
  for (int round = 0; round < 50; ++round) {  // Redis down: every flush is refused
    Capture d;
    counters_->Inc("ns", "k", 1, Consistency::kLax, {}, d.cb());
    counters_->FlushNow();
    ASSERT_EQ(redis_.pending(), 1u);
    redis_.FailNotSent();
  }
  counters_->FlushNow();
  auto call = redis_.Pop();
  EXPECT_EQ(call.args[1], "1") << "refused entries must merge into one";
  EXPECT_EQ(call.args[3], "51");
  redis_.Script(call.script, call.keys, call.args, std::move(call.done));
  redis_.AnswerAll();
  EXPECT_EQ(redis_.Stored(key_), 51);
}

TEST_F(CountersTest, StrictOpFoldsPendingLaxDelta) {
  Capture c;
  counters_->Inc("ns", "k", 5, Consistency::kLax, {}, c.cb());
  redis_.AnswerAll();
  Capture s;
  counters_->Set("ns", "k", 100, {}, s.cb());
  redis_.AnswerAll();
  ASSERT_TRUE(s.r && s.r->ok());
  EXPECT_EQ((*s.r)->previous, 5);  // docs/api.md#strict-and-lax example
  EXPECT_EQ((*s.r)->value, 100);
  EXPECT_EQ(redis_.Stored(key_), 100);
  counters_->FlushNow();
  EXPECT_EQ(redis_.pending(), 0u) << "the 5 was applied by the Set; nothing left to flush";
}

TEST_F(CountersTest, StrictOpAndInFlightFlushApplyTheDeltaOnce) {
  Capture c;
  counters_->Inc("ns", "k", 5, Consistency::kLax, {}, c.cb());
  redis_.AnswerAll();
  counters_->FlushNow();  // flush in flight, carrying +5
  Capture s;
  counters_->Inc("ns", "k", 1, Consistency::kStrict, {}, s.cb());  // also carries +5
  redis_.ApplyButTimeout();                                        // the flush: applied, reply lost
  redis_.Answer();                                                 // the strict inc
  ASSERT_TRUE(s.r && s.r->ok());
  EXPECT_EQ((*s.r)->value, 6);
  EXPECT_EQ((*s.r)->previous, 5);
  counters_->FlushNow();
  redis_.AnswerAll();
  EXPECT_EQ(redis_.Stored(key_), 6);
}

TEST_F(CountersTest, LaxGetRefreshesOncePerAllowedLag) {
  redis_.Store(key_, 3);
  Capture a;
  counters_->Get("ns", "k", Consistency::kLax, a.cb());
  redis_.AnswerAll();
  EXPECT_EQ((*a.r)->value, 3);
  redis_.Store(key_, 4);  // another daemon wrote
  Capture b;
  counters_->Get("ns", "k", Consistency::kLax, b.cb());
  EXPECT_EQ(redis_.pending(), 0u);
  EXPECT_EQ((*b.r)->value, 3) << "fresh cache: no read";
  clock_.AdvanceMs(21);
  Capture c, d;
  counters_->Get("ns", "k", Consistency::kLax, c.cb());
  counters_->Get("ns", "k", Consistency::kLax, d.cb());
  EXPECT_EQ(redis_.pending(), 1u) << "one read shared by concurrent callers";
  redis_.AnswerAll();
  EXPECT_EQ((*c.r)->value, 4);
  EXPECT_EQ((*d.r)->value, 4);
}

TEST_F(CountersTest, LaxIncAcceptedWhenFirstReadFails) {
  Capture c;
  counters_->Inc("ns", "k", 5, Consistency::kLax, {}, c.cb());
  redis_.FailNotSent();
  ASSERT_TRUE(c.r && c.r->ok());
  EXPECT_EQ((*c.r)->value, 5);  // last known value 0 + 5
  counters_->FlushNow();
  redis_.AnswerAll();
  EXPECT_EQ(redis_.Stored(key_), 5);
}

TEST_F(CountersTest, LaxConditionUsesLocalView) {
  Capture c;
  counters_->Inc("ns", "k", 10, Consistency::kLax, {}, c.cb());
  redis_.AnswerAll();
  Capture no, yes;
  counters_->Inc("ns", "k", 2, Consistency::kLax, {Comparator::kGt, 10}, no.cb());
  counters_->Inc("ns", "k", 2, Consistency::kLax, {Comparator::kGe, 10}, yes.cb());
  EXPECT_FALSE((*no.r)->applied);
  EXPECT_EQ((*no.r)->value, 10);
  EXPECT_EQ((*no.r)->previous, 10);
  EXPECT_TRUE((*yes.r)->applied);
  EXPECT_EQ((*yes.r)->value, 12);
}

TEST_F(CountersTest, LaxOverflowIsOutOfRangeAndChangesNothing) {
  redis_.Store(key_, INT64_MAX - 1);
  Capture a, b, g;
  counters_->Inc("ns", "k", 1, Consistency::kLax, {}, a.cb());
  redis_.AnswerAll();
  EXPECT_EQ((*a.r)->value, INT64_MAX);
  counters_->Inc("ns", "k", 1, Consistency::kLax, {}, b.cb());
  EXPECT_EQ(b.r->status().code(), absl::StatusCode::kOutOfRange);
  counters_->FlushNow();
  redis_.AnswerAll();
  EXPECT_EQ(redis_.Stored(key_), INT64_MAX);
}

TEST_F(CountersTest, TooManyDirtyKeysIsResourceExhausted) {
  Make(2);
  for (const char* k : {"a", "b"}) {
    Capture c;
    counters_->Inc("ns", k, 1, Consistency::kLax, {}, c.cb());
    redis_.AnswerAll();
    ASSERT_TRUE(c.r->ok());
  }
  Capture c;
  counters_->Inc("ns", "c", 1, Consistency::kLax, {}, c.cb());
  redis_.AnswerAll();
  EXPECT_EQ(c.r->status().code(), absl::StatusCode::kResourceExhausted);
  Capture again;  // an already-dirty key still takes increments
  counters_->Inc("ns", "a", 1, Consistency::kLax, {}, again.cb());
  EXPECT_TRUE(again.r->ok());
  counters_->FlushNow();
  redis_.AnswerAll();
  Capture after;
  counters_->Inc("ns", "c", 1, Consistency::kLax, {}, after.cb());
  redis_.AnswerAll();
  EXPECT_TRUE(after.r->ok()) << "room again once flushed";
}

// Issue #11 finding 5: the LAX store holds at most --max_lax_keys entries (a new key beyond it is
// refused naming the flag, known keys keep working), and flushed idle entries are dropped with
// the map's memory.
TEST_F(CountersTest, KeyCapRefusesNewKeysOnlyAndEvictionFreesTheMaps) {
  constexpr int kKeys = 20000;
  Make(1000000, kKeys);
  for (int i = 0; i < kKeys; ++i) {
    Capture c;
    counters_->Inc("ns", absl::StrCat("k", i), 1, Consistency::kLax, {}, c.cb());
    redis_.AnswerAll();
    ASSERT_TRUE(c.r && c.r->ok()) << i;
  }
  Capture over, get_over, known;
  counters_->Inc("ns", "one-more", 1, Consistency::kLax, {}, over.cb());
  counters_->Get("ns", "one-more", Consistency::kLax, get_over.cb());
  counters_->Inc("ns", "k0", 1, Consistency::kLax, {}, known.cb());
  ASSERT_TRUE(over.r && get_over.r && known.r);
  EXPECT_EQ(over.r->status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(over.r->status().message()), ::testing::HasSubstr("--max_lax_keys"));
  EXPECT_EQ(get_over.r->status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(known.r->ok());
  EXPECT_EQ((*known.r)->value, 2);
  EXPECT_EQ(redis_.pending(), 0u) << "a refused key costs no Redis call";
  const size_t full = counters_->capacity();
  EXPECT_GE(full, static_cast<size_t>(kKeys));

  counters_->FlushNow();
  redis_.AnswerAll();
  counters_->EvictIdleNow();
  EXPECT_EQ(counters_->stats().cached_keys.load(), kKeys) << "recently used: kept";
  clock_.AdvanceMs(11000);  // past idle_evict_ms (10 s)
  counters_->EvictIdleNow();
  EXPECT_EQ(counters_->stats().cached_keys.load(), 0);
  EXPECT_LT(counters_->capacity(), full / 8) << "the maps keep their slots after eviction";
  Capture again;
  counters_->Inc("ns", "one-more", 1, Consistency::kLax, {}, again.cb());
  redis_.AnswerAll();
  ASSERT_TRUE(again.r && again.r->ok()) << "room again after eviction";
  EXPECT_EQ(redis_.Stored(PlainCounterKey("ns", "k0")), 2);
}

TEST_F(CountersTest, ShutdownFlushesEverything) {
  for (int i = 0; i < 10; ++i) {
    Capture c;
    counters_->Inc("ns", "k" + std::to_string(i), i + 1, Consistency::kLax, {}, c.cb());
    redis_.AnswerAll();
  }
  std::atomic<bool> stop{false};
  std::thread redis_thread([&] {
    while (!stop) {
      redis_.AnswerAll();
      std::this_thread::yield();
    }
  });
  EXPECT_EQ(counters_->Shutdown(std::chrono::seconds(10)), 0);
  stop = true;
  redis_thread.join();
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(redis_.Stored(PlainCounterKey("ns", "k" + std::to_string(i))), i + 1);
  }
}

TEST_F(CountersTest, ClearDeletesLocalAndScannedKeys) {
  Capture c;
  counters_->Inc("ns", "k", 5, Consistency::kLax, {}, c.cb());
  redis_.AnswerAll();
  redis_.Store(PlainCounterKey("ns", "other"), 9);
  absl::Status st = absl::UnknownError("not called");
  counters_->Clear("ns", [&](absl::Status s) { st = s; });
  redis_.AnswerAll();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(redis_.Stored(key_), 0);
  EXPECT_EQ(redis_.Stored(PlainCounterKey("ns", "other")), 0);
  counters_->FlushNow();
  redis_.AnswerAll();
  EXPECT_EQ(redis_.Stored(key_), 0) << "the pending 5 must not come back after Clear";
}

}  // namespace
}  // namespace distkit::core
