// InFlight's admission budget: calls are charged until gRPC is done with them, batches may fill
// only 3/4 of the budget, and a call larger than its share is admitted only on an empty budget.

#include "daemon/transport/in_flight.h"

#include <gtest/gtest.h>

namespace distkit::transport {
namespace {

TEST(InFlightTest, UnboundedByDefault) {
  InFlight f;
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(f.TryAdmit(BatchCallBytes(10000)));
}

TEST(InFlightTest, UnaryCallsFillTheWholeBudgetThenAreRefusedUntilReleased) {
  InFlight f;
  f.set_budget(10 * kCallBytes);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(f.TryAdmit(kCallBytes)) << i;
  EXPECT_FALSE(f.TryAdmit(kCallBytes));
  EXPECT_EQ(f.admitted_bytes(), 10 * kCallBytes);
  f.Release(kCallBytes);
  EXPECT_TRUE(f.TryAdmit(kCallBytes));
}

TEST(InFlightTest, BatchesLeaveAQuarterForUnaryCalls) {
  InFlight f;
  const int64_t batch = BatchCallBytes(100);
  f.set_budget(8 * batch);
  int admitted = 0;
  while (f.TryAdmit(batch)) ++admitted;
  EXPECT_EQ(admitted, 6);  // 3/4 of 8
  // The rest is for single-operation calls.
  int unary = 0;
  while (f.TryAdmit(kCallBytes)) ++unary;
  EXPECT_EQ(unary, (8 * batch - 6 * batch) / kCallBytes);
}

TEST(InFlightTest, OversizedCallIsAdmittedOnlyAlone) {
  InFlight f;
  f.set_budget(kCallBytes * 4);
  EXPECT_TRUE(f.TryAdmit(BatchCallBytes(10000)));  // nothing else held
  EXPECT_FALSE(f.TryAdmit(kCallBytes));
  f.Release(BatchCallBytes(10000));
  EXPECT_TRUE(f.TryAdmit(kCallBytes));
  EXPECT_FALSE(f.TryAdmit(BatchCallBytes(10000)));
}

TEST(InFlightTest, BatchesAreChargedByItemsUpToTheLargestLegalBatch) {
  EXPECT_EQ(BatchCallBytes(0), kCallBytes);
  EXPECT_EQ(BatchCallBytes(10), kCallBytes + 10 * kBatchItemBytes);
  EXPECT_EQ(BatchCallBytes(1 << 24), BatchCallBytes(10000));
}

}  // namespace
}  // namespace distkit::transport
