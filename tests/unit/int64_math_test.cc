#include "daemon/core/int64_math.h"

#include <gtest/gtest.h>

#include "daemon/core/redis_keys.h"

namespace distkit::core {
namespace {

TEST(Int64Math, CheckedAddAtTheEdges) {
  EXPECT_EQ(CheckedAdd(INT64_MAX - 1, 1), INT64_MAX);
  EXPECT_EQ(CheckedAdd(INT64_MAX, 1), std::nullopt);
  EXPECT_EQ(CheckedAdd(INT64_MIN, -1), std::nullopt);
  EXPECT_EQ(CheckedAdd(INT64_MIN, INT64_MAX), -1);
  EXPECT_EQ(CheckedAdd(9007199254740992, 1), 9007199254740993);  // above 2^53: exact
}

// The original library's scenario 1 (docs/instance_counters.md, "Origin"), extended to LE/GE.
TEST(Int64Math, Comparators) {
  EXPECT_TRUE(Holds({Comparator::kEq, 5}, 5));
  EXPECT_TRUE(Holds({Comparator::kLt, 5}, 4));
  EXPECT_TRUE(Holds({Comparator::kGt, 5}, 6));
  EXPECT_TRUE(Holds({Comparator::kNe, 5}, 4));
  EXPECT_TRUE(Holds({Comparator::kLe, 5}, 5));
  EXPECT_TRUE(Holds({Comparator::kGe, 5}, 5));
  EXPECT_TRUE(Holds({Comparator::kNone, 42}, -99));
  EXPECT_FALSE(Holds({Comparator::kEq, 5}, 4));
  EXPECT_FALSE(Holds({Comparator::kLt, 5}, 5));
  EXPECT_FALSE(Holds({Comparator::kGt, 5}, 5));
  EXPECT_FALSE(Holds({Comparator::kNe, 5}, 5));
  EXPECT_FALSE(Holds({Comparator::kLe, 5}, 6));
  EXPECT_FALSE(Holds({Comparator::kGe, 5}, 4));
}

TEST(Int64Math, ParseInt64IsStrict) {
  EXPECT_EQ(ParseInt64("0"), 0);
  EXPECT_EQ(ParseInt64("-9223372036854775808"), INT64_MIN);
  EXPECT_EQ(ParseInt64("9223372036854775807"), INT64_MAX);
  EXPECT_EQ(ParseInt64("9223372036854775808"), std::nullopt);
  for (const char* bad : {"", "-", "-0", "01", "+1", " 1", "1 ", "1e3", "0x10"}) {
    EXPECT_EQ(ParseInt64(bad), std::nullopt) << bad;
  }
}

TEST(CounterKeys, LayoutHashTagAndPattern) {
  const std::string k = PlainCounterKey("my{ns}", "key 🙂");
  EXPECT_EQ(k.rfind("dk:{", 0), 0u);
  EXPECT_EQ(k.substr(12), "}:c:my{ns}:key 🙂");  // names follow the tag literally
  EXPECT_NE(PlainCounterKey("a", "bc"), PlainCounterKey("ab", "c"));
  EXPECT_EQ(HashTag("a", "b"), HashTag("a", "b"));
  EXPECT_NE(HashTag("a", "b"), HashTag("a", "c"));
  EXPECT_EQ(PlainCounterPattern("a*b?[c]\\"), "dk:{????????}:c:a\\*b\\?\\[c\\]\\\\:*");
}

}  // namespace
}  // namespace distkit::core
