#include "daemon/core/lax_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <vector>

namespace distkit::core {
namespace {

TEST(LaxStore, ViewCountsOnlyDeltasNotYetInRedis) {
  LaxEntry e;
  e.remote = 100;
  e.remote_seq = 3;
  e.unacked = {{3, 10, true}, {4, 5, true}};
  e.pending = 2;
  EXPECT_EQ(LocalView(e), 107);  // seq 3 is already in `remote`
}

TEST(LaxStore, AssignMergesOnlyIntoEntriesThatNeverLeft) {
  LaxEntry e;
  e.pending = 5;
  EXPECT_TRUE(AssignPending(e, 1));
  e.pending = 2;
  EXPECT_FALSE(AssignPending(e, 2));  // entry 1 never left the daemon: merge
  ASSERT_EQ(e.unacked.size(), 1u);
  EXPECT_EQ(e.unacked[0].delta, 7);
  e.unacked[0].maybe_sent = true;
  e.pending = 1;
  EXPECT_TRUE(AssignPending(e, 3));  // may have reached Redis: immutable
  ASSERT_EQ(e.unacked.size(), 2u);
  e.carriers = 1;
  e.pending = 1;
  EXPECT_TRUE(AssignPending(e, 4));  // being carried: immutable
  EXPECT_EQ(e.unacked.size(), 3u);
}

TEST(LaxStore, CarrierOutcomes) {
  LaxEntry e;
  e.unacked = {{1, 5, false}, {2, 6, false}};
  e.carriers = 1;
  std::vector<SeqDelta> carried = {e.unacked[0]};
  OnCarrierDone(e, carried, /*ok=*/false, /*maybe_sent=*/true);
  EXPECT_EQ(e.carriers, 0);
  EXPECT_TRUE(e.unacked[0].maybe_sent);
  EXPECT_FALSE(e.unacked[1].maybe_sent);
  OnRemoteValue(e, 5, 1, 1);
  ASSERT_EQ(e.unacked.size(), 1u);
  EXPECT_EQ(e.unacked[0].seq, 2u);
  EXPECT_EQ(LocalView(e), 11);
}

TEST(LaxStore, AddPendingRefusesOverflowOfViewOrPending) {
  LaxEntry e;
  e.remote = INT64_MAX;
  EXPECT_FALSE(AddPending(e, 1));
  EXPECT_EQ(e.pending, 0);
  e.remote = INT64_MIN + 10;
  EXPECT_TRUE(AddPending(e, INT64_MAX));
  EXPECT_FALSE(AddPending(e, 1)) << "the pending sum itself would overflow";
}

TEST(KeyDataErrorTest, BacksOffDoublingUpToTheCapAndClears) {
  KeyDataError d;
  EXPECT_TRUE(d.ok());
  EXPECT_TRUE(d.Due(0));
  int64_t now = 1'000'000'000;
  d.Fail(absl::FailedPreconditionError("broken"), now);
  EXPECT_FALSE(d.ok());
  EXPECT_FALSE(d.Due(now));
  EXPECT_TRUE(d.Due(now + KeyDataError::kMinBackoffMs * 1'000'000));
  std::vector<int64_t> backoffs;
  for (int i = 0; i < 10; ++i) {
    backoffs.push_back(d.backoff_ms);
    d.Fail(absl::FailedPreconditionError("broken"), now);
  }
  EXPECT_EQ(backoffs,
            (std::vector<int64_t>{100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000}));
  d.Clear();
  EXPECT_TRUE(d.ok());
  EXPECT_TRUE(d.Due(now));
  d.Fail(absl::FailedPreconditionError("again"), now);
  EXPECT_EQ(d.backoff_ms, KeyDataError::kMinBackoffMs);
}

// A flush refused as stale (past --lax_resend_bound_ms): what Redis applied is settled; when the
// answer is authoritative the rest is resent under fresh seqs (never under the old ones), else
// given up and counted. Entries the refused command did not carry are untouched.
TEST(LaxStore, StaleCarriedEntriesAreResentUnderNewSeqsOrGivenUp) {
  for (bool resolved : {true, false}) {
    SCOPED_TRACE(resolved);
    LaxEntry e;
    e.unacked = {{5, 1, true, 100}, {9, 2, true, 100}, {12, 4, false, 200}};
    e.carriers = 1;
    const std::vector<SeqDelta> carried = {e.unacked[0], e.unacked[1]};
    OnCarrierDone(e, carried, /*ok=*/true, /*maybe_sent=*/true);
    OnRemoteValue(e, 1, /*applied_seq=*/5, 1);  // seq 5 was applied, 9 was not
    uint64_t next = 100;
    const StaleOutcome out = OnStale(e, carried, resolved, [&] { return next++; });
    if (resolved) {
      EXPECT_EQ(out.resent, 1);
      EXPECT_EQ(out.given_up, 0);
      ASSERT_EQ(e.unacked.size(), 2u);
      EXPECT_EQ(e.unacked[0].seq, 12u);  // sorted by seq
      EXPECT_EQ(e.unacked[1].seq, 100u);
      EXPECT_EQ(e.unacked[1].delta, 2);
      EXPECT_EQ(e.unacked[1].sent_ms, -1) << "a fresh entry: stamped again when sent";
      EXPECT_FALSE(e.unacked[1].maybe_sent);
      EXPECT_EQ(LocalView(e), 7);
    } else {
      EXPECT_EQ(out.resent, 0);
      EXPECT_EQ(out.given_up, 1);
      EXPECT_EQ(out.sum, 2);
      ASSERT_EQ(e.unacked.size(), 1u);
      EXPECT_EQ(e.unacked[0].seq, 12u);
      EXPECT_EQ(LocalView(e), 5);
    }
  }
}

// Counters and InstanceCounters report a stale outcome through CountStale: both stats grow by
// the outcome's counts (the give-up is also logged, with "beyond int64" for a sum that overflowed).
TEST(LaxStore, CountStaleAddsTheOutcomeToTheStats) {
  std::atomic<uint64_t> resent{1}, given_up{2};
  CountStale({3, 0, 0}, "ns", "k", "LAX counter operation(s)", resent, given_up);
  EXPECT_EQ(resent.load(), 4u);
  EXPECT_EQ(given_up.load(), 2u);
  CountStale({0, 2, std::nullopt}, "ns", "k", "LAX counter operation(s)", resent, given_up);
  EXPECT_EQ(resent.load(), 4u);
  EXPECT_EQ(given_up.load(), 4u);
}

}  // namespace
}  // namespace distkit::core
