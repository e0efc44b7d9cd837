#include "daemon/core/validation.h"

#include <gtest/gtest.h>

#include <string>

namespace distkit::core {
namespace {

TEST(Validation, AcceptsOrdinaryNames) {
  for (const char* ok : {"a", "user 1", "{tag}", "emoji🙂", "ns-x.y_z", "\xc3\xa9"}) {
    EXPECT_TRUE(ValidateName("key", ok).ok()) << ok;
  }
  EXPECT_TRUE(ValidateName("key", std::string(255, 'x')).ok());
}

TEST(Validation, RejectsWithTheFieldName) {
  auto s = ValidateName("namespace", "");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("namespace"), std::string::npos);
  EXPECT_EQ(ValidateName("key", std::string(256, 'x')).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateName("key", "a:b").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ValidateName("key", "a:b").message().find("key"), std::string::npos);
}

TEST(Validation, RejectsInvalidUtf8) {
  for (const char* bad : {"\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"}) {
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
    EXPECT_EQ(ValidateName("key", bad).code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(IsValidUtf8("\xf0\x9f\x99\x82"));
}

}  // namespace
}  // namespace distkit::core
