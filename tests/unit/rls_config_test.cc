// The RLS rule files (daemon/core/rls_config.h): envoyproxy/ratelimit's format, strict
// validation with file:line errors, and its matching rules (its README's examples as cases).

#include "daemon/core/rls_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace distkit::core {
namespace {

using ::testing::HasSubstr;

const std::string kFixtures = std::string(DISTKIT_SOURCE_DIR) + "/tests/fixtures/rls/";

RlsConfig One(std::string_view yaml) {
  auto d = ParseRlsDomain(yaml, "test.yaml");
  EXPECT_TRUE(d.ok()) << d.status();
  RlsConfig c;
  if (d.ok()) {
    EXPECT_TRUE(c.Add(*std::move(d)).ok());
  }
  return c;
}

const RlsRule* M(const RlsConfig& c, std::string_view domain,
                 std::vector<std::pair<std::string, std::string>> entries) {
  std::vector<RlsEntryView> v;
  for (const auto& [k, val] : entries) v.push_back({k, val});
  return c.Match(domain, v);
}

std::string Error(std::string_view yaml) {
  auto d = ParseRlsDomain(yaml, "t.yaml");
  EXPECT_FALSE(d.ok());
  return std::string(d.status().message());
}

TEST(RlsConfig, Example1ValuesAtTopLevel) {
  const RlsConfig c = One(R"(
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500
  - key: database
    value: default
    rate_limit:
      unit: second
      requests_per_unit: 500
)");
  const RlsRule* r = M(c, "mongo_cps", {{"database", "users"}});
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->requests_per_unit, 500u);
  EXPECT_EQ(r->unit, RlsUnit::kSecond);
  EXPECT_EQ(r->label(), "database_users");
  EXPECT_EQ(M(c, "mongo_cps", {{"database", "other"}}), nullptr);  // no key-only default
  EXPECT_EQ(M(c, "other_domain", {{"database", "users"}}), nullptr);
}

TEST(RlsConfig, Example2NestedAndDefaults) {
  auto d = LoadRlsConfig(kFixtures + "good/messaging.yaml");
  ASSERT_TRUE(d.ok()) << d.status();
  const RlsConfig& c = **d;
  const RlsRule* nested = M(c, "messaging", {{"message_type", "marketing"}, {"to_number", "206"}});
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->requests_per_unit, 5u);
  EXPECT_EQ(nested->unit, RlsUnit::kDay);
  EXPECT_EQ(nested->path, "message_type_marketing.to_number");
  const RlsRule* any = M(c, "messaging", {{"to_number", "206"}});
  ASSERT_NE(any, nullptr);
  EXPECT_EQ(any->requests_per_unit, 100u);
  // The placeholder level has no rule of its own; another message type has no nested rule.
  EXPECT_EQ(M(c, "messaging", {{"message_type", "marketing"}}), nullptr);
  EXPECT_EQ(M(c, "messaging", {{"message_type", "alert"}, {"to_number", "206"}}), nullptr);
}

TEST(RlsConfig, Example3ExactValueBeatsKeyOnly) {
  auto d = LoadRlsConfig(kFixtures + "good/edge.yml");
  ASSERT_TRUE(d.ok()) << d.status();
  const RlsRule* other = M(**d, "edge_proxy_per_ip", {{"remote_address", "50.0.0.1"}});
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->requests_per_unit, 10u);
  const RlsRule* banned = M(**d, "edge_proxy_per_ip", {{"remote_address", "50.0.0.5"}});
  ASSERT_NE(banned, nullptr);
  EXPECT_EQ(banned->requests_per_unit, 0u);
}

TEST(RlsConfig, Example4LevelsMustMatchEntryCount) {
  const RlsConfig flat = One(R"(
domain: example4
descriptors:
  - key: key
    value: value
    rate_limit: {requests_per_unit: 300, unit: second}
)");
  EXPECT_EQ(M(flat, "example4", {{"key", "value"}, {"subkey", "subvalue"}}), nullptr);
  const RlsConfig nested = One(R"(
domain: example4
descriptors:
  - key: key
    value: value
    descriptors:
      - key: subkey
        rate_limit: {requests_per_unit: 300, unit: second}
)");
  const RlsRule* r = M(nested, "example4", {{"key", "value"}, {"subkey", "subvalue"}});
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->requests_per_unit, 300u);
}

TEST(RlsConfig, Example5Unlimited) {
  const RlsConfig c = One(R"(
domain: internal
descriptors:
  - key: ldap
    rate_limit:
      unlimited: true
  - key: azure
    rate_limit:
      unit: minute
      requests_per_unit: 100
)");
  const RlsRule* ldap = M(c, "internal", {{"ldap", "x"}});
  ASSERT_NE(ldap, nullptr);
  EXPECT_TRUE(ldap->unlimited);
  const RlsRule* azure = M(c, "internal", {{"azure", "x"}});
  ASSERT_NE(azure, nullptr);
  EXPECT_FALSE(azure->unlimited);
  EXPECT_EQ(azure->unit, RlsUnit::kMinute);
}

TEST(RlsConfig, Example6ShadowMode) {
  const RlsConfig c = One(R"(
domain: example6
descriptors:
  - key: service
    descriptors:
      - key: user
        value: user-a
        rate_limit:
          requests_per_unit: 10
          unit: second
        shadow_mode: true
      - key: user
        value: user-b
        rate_limit:
          requests_per_unit: 20
          unit: second
)");
  const RlsRule* a = M(c, "example6", {{"service", "auth-service"}, {"user", "user-a"}});
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(a->shadow_mode);
  const RlsRule* b = M(c, "example6", {{"service", "auth-service"}, {"user", "user-b"}});
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(b->shadow_mode);
  EXPECT_EQ(b->requests_per_unit, 20u);
}

TEST(RlsConfig, Example7ReplacesAndNames) {
  const RlsConfig c = One(R"(
domain: example7
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          name: specific_limit
          requests_per_unit: 5
          unit: second
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces:
            - name: specific_limit
          requests_per_unit: 10
          unit: second
)");
  const RlsRule* one = M(c, "example7", {{"key_1", "value_1"}, {"user", "bkthomps"}});
  ASSERT_NE(one, nullptr);
  EXPECT_EQ(one->label(), "specific_limit");
  const RlsRule* two = M(c, "example7", {{"key_2", "value_2"}, {"user", "bkthomps"}});
  ASSERT_NE(two, nullptr);
  EXPECT_EQ(two->replaces, std::vector<std::string>{"specific_limit"});
  EXPECT_EQ(two->label(), "key_2_value_2.user_bkthomps");
}

TEST(RlsConfig, Example8DetailedMetricAcceptedAllUnits) {
  const RlsConfig c = One(R"(
domain: example8
descriptors:
  - key: key1
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 10}
  - {key: w, rate_limit: {unit: WEEK, requests_per_unit: 1}}
  - {key: m, rate_limit: {unit: month, requests_per_unit: 1}}
  - {key: y, rate_limit: {unit: Year, requests_per_unit: 4294967295}}
  - {key: h, rate_limit: {unit: hour, requests_per_unit: 1}}
)");
  EXPECT_EQ(M(c, "example8", {{"w", "1"}})->unit, RlsUnit::kWeek);
  EXPECT_EQ(M(c, "example8", {{"m", "1"}})->unit, RlsUnit::kMonth);
  EXPECT_EQ(M(c, "example8", {{"y", "1"}})->requests_per_unit, 4294967295u);
  EXPECT_EQ(RlsUnitMs(RlsUnit::kWeek), 7 * 86400000LL);
  EXPECT_EQ(RlsUnitMs(RlsUnit::kMonth), 30 * 86400000LL);
  EXPECT_EQ(RlsUnitMs(RlsUnit::kYear), 365 * 86400000LL);
  EXPECT_EQ(static_cast<int>(RlsUnit::kWeek), 7);
}

TEST(RlsConfig, Example9PrefixWildcard) {
  const RlsConfig c = One(R"(
domain: example9
descriptors:
  - key: key1
    value: value*
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: key1
    value: value_exact
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: key1
    rate_limit: {unit: minute, requests_per_unit: 1}
)");
  EXPECT_EQ(M(c, "example9", {{"key1", "value_1"}})->requests_per_unit, 20u);
  EXPECT_EQ(M(c, "example9", {{"key1", "value"}})->requests_per_unit, 20u);
  EXPECT_EQ(M(c, "example9", {{"key1", "value_exact"}})->requests_per_unit, 5u);
  EXPECT_EQ(M(c, "example9", {{"key1", "other"}})->requests_per_unit, 1u);
  EXPECT_THAT(Error("domain: d\ndescriptors:\n  - {key: a, value: x*}\n  - {key: a, value: x*}\n"),
              HasSubstr("t.yaml:4: duplicate descriptor 'a_x*'"));
}

TEST(RlsConfig, DirectoryLoadsEveryYamlFile) {
  auto c = LoadRlsConfig(kFixtures + "good");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->domains().size(), 2u);  // ignored.txt is not read
}

TEST(RlsConfig, BadFilesNameFileLineAndProblem) {
  struct Case {
    std::string file, want;
  };
  for (const Case& t : std::vector<Case>{
           {"duplicate.yaml", "duplicate.yaml:6: duplicate descriptor 'a_x'"},
           {"unit.yaml", "unit.yaml:5: rate_limit.unit: unknown unit 'fortnight'"},
           {"negative.yaml", "negative.yaml:6: rate_limit.requests_per_unit: must be an integer"},
           {"missing_rpu.yaml", "missing_rpu.yaml:5: rate_limit: requests_per_unit missing"},
           {"unknown_key.yaml", "unknown_key.yaml:4: unknown key 'rate_limt' in descriptor"},
           {"no_domain.yaml", "no_domain.yaml:1: domain missing"},
           {"repeated", "b.yaml:1: domain 'same' is already defined in"},
       }) {
    auto c = LoadRlsConfig(kFixtures + "bad/" + t.file);
    ASSERT_FALSE(c.ok()) << t.file;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(t.want)) << t.file;
  }
}

TEST(RlsConfig, MoreErrors) {
  EXPECT_THAT(Error("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: true, unit: "
                    "second}\n"),
              HasSubstr("t.yaml:4: rate_limit: unlimited: true takes no unit"));
  EXPECT_THAT(Error("domain: d\nextra: 1\n"), HasSubstr("t.yaml:2: unknown key 'extra'"));
  EXPECT_THAT(Error("domain: [\n"), HasSubstr("not valid YAML"));
  EXPECT_THAT(Error("domain: d\ndescriptors:\n  - value: v\n"),
              HasSubstr("t.yaml:3: descriptor: key missing"));
  EXPECT_THAT(Error("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, "
                    "requests_per_unit: 4294967296}\n"),
              HasSubstr("requests_per_unit: must be an integer in [0, 4294967295]"));
  EXPECT_THAT(Error("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {requests_per_unit: "
                    "1}\n"),
              HasSubstr("t.yaml:4: rate_limit: unit missing"));
  EXPECT_FALSE(LoadRlsConfig(kFixtures + "does-not-exist.yaml").ok());
}

TEST(RlsConfig, KeyOnlyAndValueAreDistinctAtOneLevel) {
  // "a" with value "b_c" and key "a_b" with value "c" must never collide.
  const RlsConfig c = One(R"(
domain: d
descriptors:
  - {key: a, value: b_c, rate_limit: {unit: second, requests_per_unit: 1}}
  - {key: a_b, value: c, rate_limit: {unit: second, requests_per_unit: 2}}
)");
  EXPECT_EQ(M(c, "d", {{"a", "b_c"}})->requests_per_unit, 1u);
  EXPECT_EQ(M(c, "d", {{"a_b", "c"}})->requests_per_unit, 2u);
  EXPECT_EQ(M(c, "d", {}), nullptr);
}

}  // namespace
}  // namespace distkit::core
