// DK_CHECK (daemon/common/check.h): a broken invariant ends the process with a message naming
// the place and the condition; a holding one costs nothing and evaluates its condition once.

#include "daemon/common/check.h"

#include <gtest/gtest.h>

namespace distkit {
namespace {

TEST(CheckDeathTest, FailedCheckAbortsNamingConditionAndMessage) {
  const int answer = 41;
  EXPECT_DEATH(DK_CHECK(answer == 42, "the answer is 42"),
               "check failed at .*check_test.cc:[0-9]+: answer == 42 \\(the answer is 42\\)");
  EXPECT_DEATH(DK_CHECK(answer > 100), "check failed at .*: answer > 100");
}

TEST(CheckDeathTest, UnreachableAborts) { EXPECT_DEATH(DK_UNREACHABLE(), "unreachable"); }

TEST(CheckTest, HoldingCheckEvaluatesItsConditionOnce) {
  int calls = 0;
  DK_CHECK(++calls == 1, "once");
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace distkit
