#include "daemon/core/instance_lax.h"

#include <gtest/gtest.h>

#include <limits>

namespace distkit::core {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
const SliceOp Add(int64_t v) { return {SliceOpKind::kAdd, v}; }
const SliceOp SetTo(int64_t v) { return {SliceOpKind::kSet, v}; }

InstanceReply Reply(int64_t c, int64_t inst, int64_t epoch, uint64_t seen, int64_t before,
                    bool applied = true) {
  InstanceReply r;
  r.cumulative = c;
  r.instance = inst;
  r.previous_cumulative = c;
  r.previous_instance = inst;
  r.applied = applied;
  r.epoch = epoch;
  r.seen = seen;
  r.before = before;
  return r;
}

TEST(InstanceLax, CombineAddsAndLetsASetWin) {
  EXPECT_EQ(CombineSliceOps(Add(2), Add(3))->value, 5);
  EXPECT_EQ(CombineSliceOps(Add(2), Add(3))->kind, SliceOpKind::kAdd);
  auto s = CombineSliceOps(SetTo(7), Add(3));
  EXPECT_EQ(s->kind, SliceOpKind::kSet);
  EXPECT_EQ(s->value, 10);
  s = CombineSliceOps(Add(7), SetTo(-1));
  EXPECT_EQ(s->kind, SliceOpKind::kSet);
  EXPECT_EQ(s->value, -1);
  EXPECT_FALSE(CombineSliceOps(Add(kMax), Add(1)));
}

TEST(InstanceLax, ViewIsTheOthersPlusOurSliceAsWeSeeIt) {
  InstanceEntry e;
  e.remote_c = 100;  // others 90 + ours 10
  e.remote_inst = 10;
  e.remote_seq = 3;
  e.unacked = {{3, Add(50), true}, {4, Add(5), true}};  // seq 3 is already in remote
  e.pending = SetTo(1);
  auto v = LocalInstanceView(e);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->instance, 1);
  EXPECT_EQ(v->cumulative, 91);
  e.pending = Add(2);
  EXPECT_EQ(LocalInstanceView(e)->instance, 17);
  EXPECT_EQ(LocalInstanceView(e)->cumulative, 107);
}

TEST(InstanceLax, PendingWorkIsRefusedWhenTheViewWouldOverflow) {
  InstanceEntry e;
  e.remote_c = kMax - 1;
  e.remote_inst = 0;
  EXPECT_TRUE(AddPendingSliceOp(e, Add(1)));
  EXPECT_FALSE(AddPendingSliceOp(e, Add(1)));  // the cumulative would leave the range
  EXPECT_EQ(e.pending->value, 1);
  EXPECT_TRUE(AddPendingSliceOp(e, SetTo(-5)));  // a set replaces the pending add
  EXPECT_EQ(e.pending->kind, SliceOpKind::kSet);
  EXPECT_EQ(LocalInstanceView(e)->cumulative, kMax - 6);
}

TEST(InstanceLax, AssignMergesOnlyIntoEntriesThatNeverLeft) {
  InstanceEntry e;
  e.pending = Add(5);
  EXPECT_TRUE(AssignPendingSliceOp(e, 1));
  e.pending = SetTo(2);
  EXPECT_FALSE(AssignPendingSliceOp(e, 2));  // merged: add 5 then set 2 = set 2
  ASSERT_EQ(e.unacked.size(), 1u);
  EXPECT_EQ(e.unacked[0].op.kind, SliceOpKind::kSet);
  EXPECT_EQ(e.unacked[0].op.value, 2);
  e.unacked[0].maybe_sent = true;
  e.pending = Add(1);
  EXPECT_TRUE(AssignPendingSliceOp(e, 3));  // may have reached Redis: immutable
  e.carriers = 1;
  e.pending = Add(1);
  EXPECT_TRUE(AssignPendingSliceOp(e, 4));  // being carried: immutable
  EXPECT_EQ(e.unacked.size(), 3u);
}

TEST(InstanceLax, ReplyConfirmsEntriesAndTracksTheBelief) {
  InstanceEntry e;
  e.unacked = {{1, Add(5), false}};
  e.carriers = 1;
  auto r = Reply(5, 5, 1000, 1, 0);
  OnInstanceCarrierDone(e, e.unacked, &r, false, true, 42);
  EXPECT_TRUE(e.unacked.empty());
  EXPECT_EQ(e.carriers, 0);
  EXPECT_EQ(e.belief, 5);  // a new epoch: Redis is the truth
  EXPECT_EQ(e.refreshed_ns, 42);
  // A strict inc of 3 on an untouched slice.
  e.carriers = 1;
  r = Reply(8, 8, 1000, 1, 5);
  OnInstanceCarrierDone(e, {}, &r, false, true, 43);
  EXPECT_EQ(e.belief, 8);
}

TEST(InstanceLax, BeliefSurvivesAReaperAndAdditionsAfterIt) {
  InstanceEntry e;
  e.epoch = 1000;
  e.belief = 40;
  e.remote_inst = 40;
  // A reaper removed our slice; our next inc of 5 sees nothing before it.
  e.carriers = 1;
  auto r = Reply(65, 5, 1000, 0, 0);
  OnInstanceCarrierDone(e, {}, &r, false, true, 1);
  EXPECT_EQ(e.remote_inst, 5);  // what Redis shows
  EXPECT_EQ(e.belief, 45);      // what recovery writes back
  // A refresh changes nothing of the belief.
  e.carriers = 1;
  r = Reply(65, 5, 1000, 0, 5);
  OnInstanceCarrierDone(e, {}, &r, false, true, 2);
  EXPECT_EQ(e.belief, 45);
}

TEST(InstanceLax, AssignmentsAndEpochChangesTakeRedisAsTheTruth) {
  InstanceEntry e;
  e.epoch = 1000;
  e.belief = 40;
  e.carriers = 1;
  auto r = Reply(12, 12, 1000, 0, 0);  // set_on_instance 12 after a reap
  OnInstanceCarrierDone(e, {}, &r, /*assigned=*/true, true, 1);
  EXPECT_EQ(e.belief, 12);
  // A carried lax "set" entry is an assignment too.
  e.unacked = {{7, SetTo(3), false}};
  e.carriers = 1;
  r = Reply(3, 3, 1000, 7, 0);
  OnInstanceCarrierDone(e, e.unacked, &r, false, true, 2);
  EXPECT_EQ(e.belief, 3);
  // Another daemon's Set moved the epoch: our slice is whatever Redis says.
  e.carriers = 1;
  r = Reply(100, 0, 2000, 7, 0);
  OnInstanceCarrierDone(e, {}, &r, false, true, 3);
  EXPECT_EQ(e.belief, 0);
  EXPECT_EQ(e.epoch, 2000);
}

TEST(InstanceLax, AnUnansweredCommandMakesTheBeliefUncertain) {
  InstanceEntry e;
  e.epoch = 1000;
  e.belief = 10;
  e.unacked = {{1, Add(5), false}, {2, Add(1), false}};
  e.carriers = 1;
  std::vector<SeqSliceOp> carried = {e.unacked[0]};
  OnInstanceCarrierDone(e, carried, nullptr, false, /*maybe_sent=*/true, 1);
  EXPECT_TRUE(e.unacked[0].maybe_sent);
  EXPECT_FALSE(e.unacked[1].maybe_sent);
  EXPECT_TRUE(e.belief_uncertain);
  // The next reply is the truth (it says whether entry 1 was applied).
  e.carriers = 1;
  auto r = Reply(15, 15, 1000, 1, 15);
  OnInstanceCarrierDone(e, {}, &r, false, true, 2);
  EXPECT_EQ(e.belief, 15);
  EXPECT_FALSE(e.belief_uncertain);
  EXPECT_EQ(e.unacked.size(), 1u);  // entry 1 confirmed, entry 2 still to send
  // Surely not sent: nothing is uncertain.
  e.carriers = 1;
  OnInstanceCarrierDone(e, e.unacked, nullptr, false, /*maybe_sent=*/false, 3);
  EXPECT_FALSE(e.belief_uncertain);
  EXPECT_FALSE(e.unacked[0].maybe_sent);
}

TEST(InstanceLax, IdleOnlyWithNothingToRemember) {
  InstanceEntry e;
  EXPECT_TRUE(e.idle());
  e.belief = 3;
  EXPECT_FALSE(e.idle());  // recovery and shutdown need it
  e.belief = 0;
  e.pending = Add(1);
  EXPECT_FALSE(e.idle());
}

// A flush refused as stale (icounter.lua, past --lax_resend_bound_ms): as plain counters
// (lax_store_test), with slice ops; the given-up sum counts only additions.
TEST(InstanceLax, StaleCarriedOpsAreResentUnderNewSeqsOrGivenUp) {
  for (bool resolved : {true, false}) {
    SCOPED_TRACE(resolved);
    InstanceEntry e;
    e.epoch = 1000;
    e.unacked = {{5, Add(1), true, 100},
                 {9, Add(2), true, 100},
                 {10, SetTo(7), true, 100},
                 {12, Add(4), false, 200}};
    e.carriers = 1;
    const std::vector<SeqSliceOp> carried = {e.unacked[0], e.unacked[1], e.unacked[2]};
    auto r = Reply(1, 1, 1000, /*seen=*/5, 1, /*applied=*/false);
    r.stale = true;
    OnInstanceCarrierDone(e, carried, &r, false, /*maybe_sent=*/true, 1);
    uint64_t next = 100;
    const StaleOutcome out = OnInstanceStale(e, carried, resolved, [&] { return next++; });
    if (resolved) {
      EXPECT_EQ(out.resent, 2);
      ASSERT_EQ(e.unacked.size(), 3u);
      EXPECT_EQ(e.unacked[0].seq, 12u);  // sorted by seq
      EXPECT_EQ(e.unacked[1].seq, 100u);
      EXPECT_EQ(e.unacked[2].seq, 101u);
      EXPECT_EQ(e.unacked[1].sent_ms, -1) << "a fresh entry: stamped again when sent";
      EXPECT_FALSE(e.unacked[1].maybe_sent);
    } else {
      EXPECT_EQ(out.given_up, 2);
      EXPECT_EQ(out.sum, 2);
      ASSERT_EQ(e.unacked.size(), 1u);
      EXPECT_EQ(e.unacked[0].seq, 12u);
    }
  }
}

// A command surely not sent (and no other out) forgets the send stamps of entries that never
// left: an outage longer than the bound must not make them stale.
TEST(InstanceLax, UnsentEntriesForgetTheirSendTime) {
  InstanceEntry e;
  e.unacked = {{1, Add(1), true, 100}, {2, Add(1), false, 100}};
  e.carriers = 1;
  OnInstanceCarrierDone(e, e.unacked, nullptr, false, /*maybe_sent=*/false, 3);
  EXPECT_EQ(e.unacked[0].sent_ms, 100);
  EXPECT_EQ(e.unacked[1].sent_ms, -1);
}

}  // namespace
}  // namespace distkit::core
