#include "daemon/core/lax_store.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace distkit::core
