// LaxAggregator (client/include/distkit/lax_aggregator.h) against a fake daemon that applies
// pushes, remembers (client_id, seq) like PushDedup, and can lose replies, be down, restart or
// refuse items: sums, exactly-once resends, retries, the key cap, reads and concurrency.

#include "distkit/lax_aggregator.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;

struct FakeDaemon {
  absl::Mutex mu;
  std::map<std::string, int64_t> values;
  std::set<std::pair<std::string, uint64_t>> seen;  // the daemon's dedup memory
  std::vector<uint64_t> seqs;                       // every push received, in order
  int lose_replies = 0;  // the next N pushes are applied but answered UNAVAILABLE
  int lose_every = 0;    // every Nth push's reply is lost (0: never)
  bool down = false;     // UNAVAILABLE, nothing applied
  std::map<std::string, absl::Status> item_errors;  // per key, once

  void Restart() {
    absl::MutexLock lock(&mu);
    seen.clear();
  }
  int64_t Value(const std::string& key) {
    absl::MutexLock lock(&mu);
    return values[key];
  }
};

class FakeTransport final : public LaxTransport {
 public:
  explicit FakeTransport(FakeDaemon* d) : d_(d) {}
  absl::StatusOr<std::vector<absl::Status>> Push(const PushId& id, const Deltas& deltas) override {
    absl::MutexLock lock(&d_->mu);
    if (d_->down) return absl::UnavailableError("daemon down");
    d_->seqs.push_back(id.seq);
    std::vector<absl::Status> out(deltas.size());
    if (d_->seen.insert({id.client_id, id.seq}).second) {
      for (size_t i = 0; i < deltas.size(); ++i) {
        auto err = d_->item_errors.find(deltas[i].first);
        if (err != d_->item_errors.end()) {
          out[i] = err->second;
          d_->item_errors.erase(err);
          continue;
        }
        d_->values[deltas[i].first] += deltas[i].second;
      }
    }
    const bool lose =
        d_->lose_replies > 0 || (d_->lose_every > 0 && d_->seqs.size() % d_->lose_every == 0);
    if (d_->lose_replies > 0) --d_->lose_replies;
    if (lose) return absl::UnavailableError("reply lost");
    return out;
  }
  absl::StatusOr<int64_t> Read(std::string_view key) override {
    absl::MutexLock lock(&d_->mu);
    if (d_->down) return absl::UnavailableError("daemon down");
    return d_->values[std::string(key)];
  }

 private:
  FakeDaemon* const d_;
};

// No background push within a test (an hour), unless the test sets its interval.
LaxAggregatorOptions Manual() {
  LaxAggregatorOptions o;
  o.interval = std::chrono::hours(1);
  o.shutdown_timeout = 0ms;
  return o;
}

TEST(LaxAggregatorTest, SumsPerKeyAndFlushPushesOneBatch) {
  FakeDaemon d;
  LaxAggregator agg(std::make_unique<FakeTransport>(&d), Manual());
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(agg.Inc(i % 2 == 0 ? "a" : "b", 1).ok());
  }
  ASSERT_TRUE(agg.Inc("c", -5).ok());
  EXPECT_EQ(agg.pending_keys(), 3u);
  ASSERT_TRUE(agg.Flush().ok());
  EXPECT_EQ(d.Value("a"), 500);
  EXPECT_EQ(d.Value("b"), 500);
  EXPECT_EQ(d.Value("c"), -5);
  EXPECT_EQ(d.seqs, std::vector<uint64_t>{1});
  EXPECT_EQ(agg.pending_keys(), 0u);
  ASSERT_TRUE(agg.Flush().ok());  // nothing to push: no call
  EXPECT_EQ(d.seqs.size(), 1u);
}

TEST(LaxAggregatorTest, LostReplyIsResentWithTheSameSeqAndAppliedOnce) {
  FakeDaemon d;
  d.lose_replies = 2;
  std::vector<absl::Status> errors;
  LaxAggregatorOptions o = Manual();
  o.on_error = [&](const absl::Status& s) { errors.push_back(s); };
  LaxAggregator agg(std::make_unique<FakeTransport>(&d), std::move(o));
  ASSERT_TRUE(agg.Inc("k", 7).ok());
  EXPECT_TRUE(absl::IsUnavailable(agg.Flush()));
  EXPECT_EQ(d.Value("k"), 7);  // applied, but the aggregator cannot know
  // Meanwhile more increments: they wait until the in-doubt push is answered.
  ASSERT_TRUE(agg.Inc("k", 3).ok());
  EXPECT_TRUE(absl::IsUnavailable(agg.Flush()));
  ASSERT_TRUE(agg.Flush().ok());
  EXPECT_EQ(d.Value("k"), 10);
  EXPECT_EQ(d.seqs, (std::vector<uint64_t>{1, 1, 1, 2}));
  EXPECT_EQ(errors.size(), 2u);
  EXPECT_TRUE(agg.last_status().ok());
}

TEST(LaxAggregatorTest, DaemonDownKeepsDeltasRetriesAndReports) {
  FakeDaemon d;
  d.down = true;
  std::atomic<int> errors{0};
  LaxAggregatorOptions o = Manual();
  o.interval = 1ms;
  o.on_error = [&](const absl::Status&) { ++errors; };
  LaxAggregator agg(std::make_unique<FakeTransport>(&d), std::move(o));
  ASSERT_TRUE(agg.Inc("k", 1).ok());
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (errors.load() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_GE(errors.load(), 3);  // the background pusher retried and reported each failure
  EXPECT_TRUE(absl::IsUnavailable(agg.last_status()));
  ASSERT_TRUE(agg.Inc("k", 1).ok());
  {
    absl::MutexLock lock(&d.mu);
    d.down = false;
  }
  ASSERT_TRUE(agg.Flush().ok());
  EXPECT_EQ(d.Value("k"), 2);
}

TEST(LaxAggregatorTest, DaemonRestartWhileDownLosesNothing) {
  FakeDaemon d;
  LaxAggregator agg(std::make_unique<FakeTransport>(&d), Manual());
  ASSERT_TRUE(agg.Inc("k", 1).ok());
  ASSERT_TRUE(agg.Flush().ok());
  {
    absl::MutexLock lock(&d.mu);
    d.down = true;
  }
  ASSERT_TRUE(agg.Inc("k", 5).ok());
  EXPECT_FALSE(agg.Flush().ok());
  d.Restart();  // forgets every (client_id, seq)
  {
    absl::MutexLock lock(&d.mu);
    d.down = false;
  }
  ASSERT_TRUE(agg.Flush().ok());
  EXPECT_EQ(d.Value("k"), 6);
}

TEST(LaxAggregatorTest, RetryableItemErrorsComeBackOthersAreDroppedAndReported) {
  FakeDaemon d;
  d.item_errors["busy"] = absl::ResourceExhaustedError("daemon full");
  d.item_errors["bad"] = absl::InvalidArgumentError("bad key");
  std::vector<absl::Status> errors;
  LaxAggregatorOptions o = Manual();
  o.on_error = [&](const absl::Status& s) { errors.push_back(s); };
  LaxAggregator agg(std::make_unique<FakeTransport>(&d), std::move(o));
  ASSERT_TRUE(agg.Inc("busy", 4).ok());
  ASSERT_TRUE(agg.Inc("bad", 9).ok());
  ASSERT_TRUE(agg.Inc("fine", 1).ok());
  EXPECT_FALSE(agg.Flush().ok());
  EXPECT_EQ(d.Value("fine"), 1);
  EXPECT_EQ(d.Value("busy"), 0);
  EXPECT_EQ(agg.pending_keys(), 1u);  // "busy" is back
  ASSERT_TRUE(agg.Flush().ok());
  EXPECT_EQ(d.Value("busy"), 4);
  EXPECT_EQ(d.Value("bad"), 0);
  bool dropped_reported = false;
  for (const auto& s : errors) dropped_reported |= absl::IsInvalidArgument(s);
  EXPECT_TRUE(dropped_reported);
}

TEST(LaxAggregatorTest, KeyCapIsResourceExhaustedUntilAPush) {
  FakeDaemon d;
  LaxAggregatorOptions o = Manual();
  o.max_keys = 10;
  LaxAggregator agg(std::make_unique<FakeTransport>(&d), std::move(o));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(agg.Inc("k" + std::to_string(i), 1).ok());
  EXPECT_TRUE(absl::IsResourceExhausted(agg.Inc("k10", 1)));
  EXPECT_TRUE(agg.Inc("k3", 1).ok());  // a waiting key still counts
  ASSERT_TRUE(agg.Flush().ok());
  EXPECT_TRUE(agg.Inc("k10", 1).ok());
  EXPECT_EQ(d.Value("k3"), 2);
}

TEST(LaxAggregatorTest, MaxBatchSplitsAPushIntoSeveral) {
  FakeDaemon d;
  LaxAggregatorOptions o = Manual();
  o.max_batch = 3;
  LaxAggregator agg(std::make_unique<FakeTransport>(&d), std::move(o));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(agg.Inc("k" + std::to_string(i), i + 1).ok());
  ASSERT_TRUE(agg.Flush().ok());
  EXPECT_EQ(d.seqs, (std::vector<uint64_t>{1, 2, 3, 4}));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(d.Value("k" + std::to_string(i)), i + 1);
}

TEST(LaxAggregatorTest, GetIsTheDaemonValuePlusWhatIsNotAcknowledged) {
  FakeDaemon d;
  LaxAggregator agg(std::make_unique<FakeTransport>(&d), Manual());
  ASSERT_TRUE(agg.Inc("k", 5).ok());
  ASSERT_TRUE(agg.Flush().ok());
  ASSERT_TRUE(agg.Inc("k", 2).ok());
  EXPECT_EQ(agg.Get("k").value_or(-1), 7);
  EXPECT_EQ(d.Value("k"), 5);
  {
    absl::MutexLock lock(&d.mu);
    d.down = true;
  }
  EXPECT_FALSE(agg.Flush().ok());  // pending now
  {
    absl::MutexLock lock(&d.mu);
    d.down = false;
  }
  EXPECT_EQ(agg.Get("k").value_or(-1), 7);  // counted once, from the pending push
}

TEST(LaxAggregatorTest, DestructionFlushes) {
  FakeDaemon d;
  {
    LaxAggregator agg(std::make_unique<FakeTransport>(&d), Manual());
    ASSERT_TRUE(agg.Inc("k", 42).ok());
  }
  EXPECT_EQ(d.Value("k"), 42);
}

TEST(LaxAggregatorTest, ConcurrentIncWithLostRepliesCountsEveryIncrementOnce) {
  FakeDaemon d;
  d.lose_every = 3;
  LaxAggregatorOptions o = Manual();
  o.interval = 1ms;
  o.shutdown_timeout = 10s;
  constexpr int kThreads = 8;
  constexpr int kPerThread = 50'000;
  constexpr int kKeys = 37;
  {
    LaxAggregator agg(std::make_unique<FakeTransport>(&d), std::move(o));
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&agg, t] {
        for (int i = 0; i < kPerThread; ++i) {
          ASSERT_TRUE(agg.Inc("k" + std::to_string((i + t) % kKeys), 1).ok());
        }
      });
    }
    for (auto& t : threads) t.join();
    // Destruction: the last push may lose its reply too; the resend is recognised.
  }
  int64_t total = 0;
  for (int k = 0; k < kKeys; ++k) total += d.Value("k" + std::to_string(k));
  EXPECT_EQ(total, int64_t{kThreads} * kPerThread);
  absl::MutexLock lock(&d.mu);
  EXPECT_GT(d.seqs.size(), 3u);
}

}  // namespace
}  // namespace distkit
