#include "daemon/config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"

namespace distkit::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using Env = std::map<std::string, std::string>;

absl::StatusOr<Config> Parse(std::vector<std::string> flags, const Env& env = {}) {
  flags.insert(flags.begin(), "distkitd");
  return ParseConfig(flags, env);
}

Config MustParse(std::vector<std::string> flags, const Env& env = {}) {
  auto config = Parse(flags, env);
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : Config{};
}

// The InvalidArgument message of a failing parse ("" and a test failure otherwise).
std::string ErrorOf(std::vector<std::string> flags, const Env& env = {}) {
  auto config = Parse(flags, env);
  EXPECT_FALSE(config.ok()) << "parsed: " << ::testing::PrintToString(flags);
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  return std::string(config.status().message());
}

bool IsUuidV4(const std::string& s) {
  static const std::regex kUuid(
      "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  return std::regex_match(s, kUuid);
}

// ---- defaults ----

TEST(ConfigTest, Defaults) {
  const Config c = MustParse({});
  EXPECT_THAT(c.listen, ElementsAre("unix:/tmp/distkitd.sock"));
  ASSERT_EQ(c.redis_seeds.size(), 1u);
  EXPECT_EQ(c.redis_seeds[0].Redacted(), "redis://127.0.0.1:6379/0");
  EXPECT_FALSE(c.redis_given);
  EXPECT_EQ(c.redis_mode, redis::RedisMode::kAuto);
  EXPECT_EQ(c.redis_tls.ca_file, "");
  EXPECT_EQ(c.redis_tls.cert_file, "");
  EXPECT_EQ(c.redis_tls.key_file, "");
  EXPECT_EQ(c.redis_tls.server_name, "");
  EXPECT_EQ(c.default_namespace, "distkit");
  EXPECT_TRUE(IsUuidV4(c.instance_id)) << c.instance_id;
  EXPECT_EQ(c.flush_interval_ms, 20);
  EXPECT_EQ(c.allowed_lag_ms, 20);
  EXPECT_EQ(c.dead_instance_threshold_ms, 30000);
  EXPECT_EQ(c.redis_timeout_ms, 1000);
  EXPECT_EQ(c.rate_window_seconds, 10);
  EXPECT_EQ(c.rate_bucket_ms, 100);
  EXPECT_EQ(c.hard_limit_factor, 1.0);
  EXPECT_EQ(c.sync_interval_ms, 10);
  EXPECT_EQ(c.suppression_cache_ms, 100);
  EXPECT_EQ(c.rate_limit_failure_mode, FailureMode::kOpen);
  EXPECT_EQ(c.metrics_listen, "");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.shutdown_grace_ms, 10000);
  EXPECT_EQ(c.socket_mode, 0660u);
  EXPECT_EQ(c.max_pending_keys, 1000000);
  EXPECT_EQ(c.max_rate_limit_keys, 100000);
  EXPECT_EQ(c.max_lax_keys, 100000);
  EXPECT_EQ(c.lax_resend_bound_ms, 600000);
  EXPECT_EQ(c.max_memory_mb, 128);
}

TEST(ConfigTest, EmptyArgvIsFine) {
  auto config = ParseConfig({}, {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->default_namespace, "distkit");
}

TEST(ConfigTest, ArgvZeroIsSkipped) {
  // argv[0] is never read as a flag or an argument, whatever it looks like.
  auto config = ParseConfig({"--unknown"}, {});
  EXPECT_TRUE(config.ok()) << config.status();
}

TEST(ConfigTest, InstanceIdIsAFreshUuidPerParse) {
  EXPECT_NE(MustParse({}).instance_id, MustParse({}).instance_id);
}

TEST(ConfigTest, NewUuidV4IsWellFormedAndUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 2000; ++i) {
    const std::string id = NewUuidV4();
    ASSERT_TRUE(IsUuidV4(id)) << id;
    ASSERT_EQ(id.size(), 36u);
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 2000u);
}

TEST(ConfigTest, GeneratedInstanceIdPassesInstanceIdValidation) {
  const std::string id = NewUuidV4();
  EXPECT_EQ(MustParse({"--instance_id=" + id}).instance_id, id);
}

// ---- flag forms ----

TEST(ConfigTest, EqualsForm) {
  const Config c = MustParse({"--flush_interval_ms=5", "--namespace=app", "--log_level=debug"});
  EXPECT_EQ(c.flush_interval_ms, 5);
  EXPECT_EQ(c.default_namespace, "app");
  EXPECT_EQ(c.log_level, "debug");
}

TEST(ConfigTest, SpaceForm) {
  const Config c =
      MustParse({"--flush_interval_ms", "5", "--namespace", "app", "--log_level", "debug"});
  EXPECT_EQ(c.flush_interval_ms, 5);
  EXPECT_EQ(c.default_namespace, "app");
  EXPECT_EQ(c.log_level, "debug");
}

TEST(ConfigTest, MixedForms) {
  const Config c =
      MustParse({"--redis", "redis://r:1", "--instance_id=a", "--allowed_lag_ms", "0"});
  EXPECT_EQ(c.redis_seeds[0].Redacted(), "redis://r:1/0");
  EXPECT_EQ(c.instance_id, "a");
  EXPECT_EQ(c.allowed_lag_ms, 0);
}

TEST(ConfigTest, ValueMayContainEqualsSign) {
  EXPECT_EQ(MustParse({"--namespace=a=b"}).default_namespace, "a=b");
  EXPECT_EQ(MustParse({"--redis=redis://:p=w@h"}).redis_seeds[0].password, "p=w");
}

TEST(ConfigTest, EmptyValueWithEqualsIsAValue) {
  EXPECT_EQ(MustParse({"--metrics_listen=0.0.0.0:9090", "--metrics_listen="}).metrics_listen, "");
  EXPECT_THAT(ErrorOf({"--namespace="}), HasSubstr("--namespace:"));
}

TEST(ConfigTest, SpaceFormTakesTheNextArgumentVerbatim) {
  EXPECT_EQ(ErrorOf({"--allowed_lag_ms", "-1"}), "--allowed_lag_ms: must be >= 0, got -1");
  // A value that looks like a flag is still the value (as with absl/gflags).
  EXPECT_EQ(MustParse({"--namespace", "--help"}).default_namespace, "--help");
}

TEST(ConfigTest, MissingValue) {
  EXPECT_EQ(ErrorOf({"--flush_interval_ms"}), "--flush_interval_ms: missing value");
  EXPECT_EQ(ErrorOf({"--log_level=info", "--redis"}), "--redis: missing value");
}

TEST(ConfigTest, LastOccurrenceWins) {
  EXPECT_EQ(MustParse({"--flush_interval_ms=5", "--flush_interval_ms", "7"}).flush_interval_ms, 7);
}

// ---- precedence: command line > environment > default ----

TEST(ConfigTest, EnvironmentIsUsed) {
  const Config c = MustParse({}, {{"DISTKIT_FLUSH_INTERVAL_MS", "5"},
                                  {"DISTKIT_NAMESPACE", "envns"},
                                  {"DISTKIT_LISTEN", "unix:/a,127.0.0.1:1"}});
  EXPECT_EQ(c.flush_interval_ms, 5);
  EXPECT_EQ(c.default_namespace, "envns");
  EXPECT_THAT(c.listen, ElementsAre("unix:/a", "127.0.0.1:1"));
}

TEST(ConfigTest, CommandLineBeatsEnvironment) {
  const Env env = {{"DISTKIT_FLUSH_INTERVAL_MS", "5"}, {"DISTKIT_NAMESPACE", "envns"}};
  const Config c = MustParse({"--flush_interval_ms=9"}, env);
  EXPECT_EQ(c.flush_interval_ms, 9);
  EXPECT_EQ(c.default_namespace, "envns");
}

TEST(ConfigTest, CommandLineBeatsAnInvalidEnvironmentValue) {
  EXPECT_EQ(MustParse({"--flush_interval_ms=9"}, {{"DISTKIT_FLUSH_INTERVAL_MS", "junk"}})
                .flush_interval_ms,
            9);
}

TEST(ConfigTest, InvalidEnvironmentValueNamesFlagAndVariable) {
  EXPECT_EQ(ErrorOf({}, {{"DISTKIT_FLUSH_INTERVAL_MS", "0"}}),
            "--flush_interval_ms: must be >= 1, got 0 (from DISTKIT_FLUSH_INTERVAL_MS)");
}

TEST(ConfigTest, EmptyEnvironmentValueCountsAsUnset) {
  const Config c = MustParse(
      {}, {{"DISTKIT_INSTANCE_ID", ""}, {"DISTKIT_REDIS", ""}, {"DISTKIT_FLUSH_INTERVAL_MS", ""}});
  EXPECT_TRUE(IsUuidV4(c.instance_id));
  EXPECT_FALSE(c.redis_given);
  EXPECT_EQ(c.flush_interval_ms, 20);
}

TEST(ConfigTest, UnrelatedEnvironmentIsIgnored) {
  const Config c = MustParse({}, {{"DISTKIT_ADDR", "unix:/x"},
                                  {"DISTKIT_SOMETHING_ELSE", "1"},
                                  {"FLUSH_INTERVAL_MS", "5"},
                                  {"distkit_flush_interval_ms", "5"}});
  EXPECT_EQ(c.flush_interval_ms, 20);
}

TEST(ConfigTest, RedisGiven) {
  EXPECT_FALSE(MustParse({}).redis_given);
  EXPECT_TRUE(MustParse({"--redis=redis://r:1"}).redis_given);
  EXPECT_TRUE(MustParse({"--redis", "redis://127.0.0.1:6379"}).redis_given);
  EXPECT_TRUE(MustParse({}, {{"DISTKIT_REDIS", "unix:/r.sock"}}).redis_given);
  EXPECT_EQ(MustParse({}, {{"DISTKIT_REDIS", "unix:/r.sock"}}).redis_seeds[0].path, "/r.sock");
}

TEST(ConfigTest, RedisMustNotBeEmpty) {
  EXPECT_EQ(ErrorOf({"--redis="}), "--redis: must not be empty");
}

// Every flag, through both sources, with the documented variable name.
struct FlagCase {
  std::string name;
  std::string value;
  std::string expected;  // as printed by ToString
};

class EveryFlagTest : public ::testing::TestWithParam<FlagCase> {};

std::string Line(const Config& c, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(c.ToString(), '\n')) {
    if (absl::StartsWith(line, "--" + name + "=")) return std::string(line);
  }
  return "";
}

TEST_P(EveryFlagTest, CommandLineEqualsForm) {
  const FlagCase& f = GetParam();
  EXPECT_EQ(Line(MustParse({"--" + f.name + "=" + f.value}), f.name),
            "--" + f.name + "=" + f.expected);
}

TEST_P(EveryFlagTest, CommandLineSpaceForm) {
  const FlagCase& f = GetParam();
  EXPECT_EQ(Line(MustParse({"--" + f.name, f.value}), f.name), "--" + f.name + "=" + f.expected);
}

TEST_P(EveryFlagTest, Environment) {
  const FlagCase& f = GetParam();
  std::string env_name = "DISTKIT_";
  for (char c : f.name) env_name += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(Line(MustParse({}, {{env_name, f.value}}), f.name), "--" + f.name + "=" + f.expected);
}

TEST_P(EveryFlagTest, UnknownSpellingsAreRejected) {
  const FlagCase& f = GetParam();
  EXPECT_THAT(ErrorOf({"--" + f.name + "x=1"}), HasSubstr("unknown flag --" + f.name + "x"));
}

INSTANTIATE_TEST_SUITE_P(
    Flags, EveryFlagTest,
    ::testing::Values(
        FlagCase{"listen", "unix:/a.sock,[::1]:5", "unix:/a.sock,[::1]:5"},
        FlagCase{"redis", "redis://h:1/2", "redis://h:1/2"},
        FlagCase{"redis_mode", "Cluster", "cluster"}, FlagCase{"namespace", "ns1", "ns1"},
        FlagCase{"instance_id", "pod-7.a_b", "pod-7.a_b"}, FlagCase{"flush_interval_ms", "3", "3"},
        FlagCase{"allowed_lag_ms", "0", "0"},
        FlagCase{"dead_instance_threshold_ms", "5000", "5000"},
        FlagCase{"redis_timeout_ms", "250", "250"}, FlagCase{"rate_window_seconds", "60", "60"},
        FlagCase{"rate_bucket_ms", "50", "50"}, FlagCase{"hard_limit_factor", "1.5", "1.5"},
        FlagCase{"sync_interval_ms", "25", "25"}, FlagCase{"suppression_cache_ms", "7", "7"},
        FlagCase{"rate_limit_failure_mode", "closed", "closed"},
        FlagCase{"metrics_listen", "0.0.0.0:9090", "0.0.0.0:9090"},
        FlagCase{"log_level", "warn", "warn"}, FlagCase{"shutdown_grace_ms", "1", "1"},
        FlagCase{"socket_mode", "0600", "0600"}, FlagCase{"max_pending_keys", "42", "42"},
        FlagCase{"max_rate_limit_keys", "7", "7"}, FlagCase{"max_lax_keys", "9", "9"},
        FlagCase{"lax_resend_bound_ms", "100", "100"}, FlagCase{"max_memory_mb", "64", "64"},
        FlagCase{"rls_config", "/etc/rls", "/etc/rls"},
        FlagCase{"rls_provider", "HYBRID", "hybrid"},
        FlagCase{"rls_response_headers", "TRUE", "true"},
        FlagCase{"redis_inline_wait_us", "0", "0"}, FlagCase{"redis_inline_spin_us", "7", "7"}),
    [](const ::testing::TestParamInfo<FlagCase>& info) { return info.param.name; });

// ---- unknown flags, stray arguments, --help ----

TEST(ConfigTest, UnknownFlag) {
  EXPECT_EQ(ErrorOf({"--x"}), "unknown flag --x");
  EXPECT_EQ(ErrorOf({"--nope=1"}), "unknown flag --nope");
  EXPECT_EQ(ErrorOf({"--flush-interval-ms=5"}), "unknown flag --flush-interval-ms");
  EXPECT_EQ(ErrorOf({"--=5"}), "unknown flag --");
}

TEST(ConfigTest, UnknownFlagIsReportedBeforeBadValues) {
  EXPECT_EQ(ErrorOf({"--flush_interval_ms=0", "--bogus"}), "unknown flag --bogus");
}

TEST(ConfigTest, StrayArguments) {
  EXPECT_THAT(ErrorOf({"serve"}), HasSubstr("unexpected argument 'serve'"));
  EXPECT_THAT(ErrorOf({"-x"}), HasSubstr("unexpected argument '-x'"));
  EXPECT_THAT(ErrorOf({"--"}), HasSubstr("unexpected argument '--'"));
  EXPECT_THAT(ErrorOf({"--flush_interval_ms", "5", "6"}), HasSubstr("unexpected argument '6'"));
}

TEST(ConfigTest, HelpYieldsNotFoundWithUsage) {
  for (const std::string flag : {"--help", "-h"}) {
    auto config = Parse({flag});
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(config.status().message(), Usage());
  }
}

TEST(ConfigTest, HelpWinsOverOtherErrors) {
  auto config = Parse({"--bogus", "--flush_interval_ms=0", "--help"});
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
}

TEST(ConfigTest, UsageMentionsEveryFlagAndVariable) {
  const std::string usage = Usage();
  for (const std::string name :
       {"listen", "redis", "namespace", "instance_id", "flush_interval_ms", "allowed_lag_ms",
        "dead_instance_threshold_ms", "redis_timeout_ms", "rate_window_seconds", "rate_bucket_ms",
        "hard_limit_factor", "sync_interval_ms", "suppression_cache_ms", "rate_limit_failure_mode",
        "metrics_listen", "log_level", "shutdown_grace_ms", "socket_mode", "max_pending_keys"}) {
    EXPECT_THAT(usage, HasSubstr("--" + name + " ")) << name;
  }
  for (const std::string name : {"max_rate_limit_keys", "max_lax_keys", "lax_resend_bound_ms"}) {
    EXPECT_THAT(usage, HasSubstr("--" + name + " ")) << name;
  }
  EXPECT_THAT(usage, HasSubstr("--max_memory_mb "));
  EXPECT_THAT(usage, HasSubstr("--rls_config "));
  EXPECT_THAT(usage, HasSubstr("--rls_provider "));
  EXPECT_THAT(usage, HasSubstr("--rls_response_headers "));
  for (const std::string name :
       {"redis_mode", "redis_tls_ca", "redis_tls_cert", "redis_tls_key", "redis_tls_server_name"}) {
    EXPECT_THAT(usage, HasSubstr("--" + name + " ")) << name;
  }
  EXPECT_THAT(usage, HasSubstr("DISTKIT_FLUSH_INTERVAL_MS"));
  EXPECT_THAT(usage, HasSubstr("DISTKIT_REDIS_TLS_SERVER_NAME"));
  EXPECT_THAT(usage, HasSubstr("--help"));
}

// ---- integer flags: ranges, garbage, overflow ----

struct IntFlag {
  std::string name;
  int64_t min;
  int64_t max;
  int64_t Config::*field;
};

class IntFlagTest : public ::testing::TestWithParam<IntFlag> {};

TEST_P(IntFlagTest, MinimumIsAccepted) {
  const IntFlag& f = GetParam();
  EXPECT_EQ(MustParse({"--" + f.name + "=" + std::to_string(f.min)}).*f.field, f.min);
}

TEST_P(IntFlagTest, BelowMinimumIsRejectedWithTheDocumentedMessage) {
  const IntFlag& f = GetParam();
  EXPECT_EQ(ErrorOf({"--" + f.name + "=" + std::to_string(f.min - 1)}),
            "--" + f.name + ": must be >= " + std::to_string(f.min) + ", got " +
                std::to_string(f.min - 1));
}

TEST_P(IntFlagTest, NegativeIsRejected) {
  const IntFlag& f = GetParam();
  EXPECT_THAT(ErrorOf({"--" + f.name + "=-5"}), HasSubstr("--" + f.name + ": must be >= "));
}

TEST_P(IntFlagTest, MaximumIsAcceptedAndAboveIsRejected) {
  const IntFlag& f = GetParam();
  EXPECT_EQ(MustParse({"--" + f.name + "=" + std::to_string(f.max)}).*f.field, f.max);
  if (f.max < std::numeric_limits<int64_t>::max()) {
    EXPECT_EQ(ErrorOf({"--" + f.name + "=" + std::to_string(f.max + 1)}),
              "--" + f.name + ": must be <= " + std::to_string(f.max) + ", got " +
                  std::to_string(f.max + 1));
  }
}

TEST_P(IntFlagTest, GarbageIsRejected) {
  const IntFlag& f = GetParam();
  for (const std::string bad :
       {"", "abc", "10ms", "1.5", " 10", "10 ", "+5", "0x10", "1e3", "--", "5,000", "١"}) {
    EXPECT_THAT(ErrorOf({"--" + f.name + "=" + bad}),
                HasSubstr("--" + f.name + ": not an integer: '" + bad + "'"))
        << bad;
  }
}

TEST_P(IntFlagTest, OverflowIsRejected) {
  const IntFlag& f = GetParam();
  for (const std::string big :
       {"9223372036854775808", "-9223372036854775809", "99999999999999999999999999"}) {
    EXPECT_THAT(ErrorOf({"--" + f.name + "=" + big}),
                HasSubstr("--" + f.name + ": out of the int64 range"))
        << big;
  }
}

constexpr int64_t kMaxMs = 1'000'000'000'000;

INSTANTIATE_TEST_SUITE_P(
    Ranges, IntFlagTest,
    ::testing::Values(
        IntFlag{"flush_interval_ms", 1, kMaxMs, &Config::flush_interval_ms},
        IntFlag{"allowed_lag_ms", 0, kMaxMs, &Config::allowed_lag_ms},
        IntFlag{"dead_instance_threshold_ms", 1, kMaxMs, &Config::dead_instance_threshold_ms},
        IntFlag{"redis_timeout_ms", 1, kMaxMs, &Config::redis_timeout_ms},
        IntFlag{"rate_window_seconds", 1, kMaxMs / 1000, &Config::rate_window_seconds},
        IntFlag{"sync_interval_ms", 1, kMaxMs, &Config::sync_interval_ms},
        IntFlag{"suppression_cache_ms", 1, kMaxMs, &Config::suppression_cache_ms},
        IntFlag{"shutdown_grace_ms", 1, kMaxMs, &Config::shutdown_grace_ms},
        IntFlag{"max_pending_keys", 1, std::numeric_limits<int64_t>::max(),
                &Config::max_pending_keys},
        IntFlag{"max_rate_limit_keys", 1, std::numeric_limits<int64_t>::max(),
                &Config::max_rate_limit_keys},
        IntFlag{"max_lax_keys", 1, std::numeric_limits<int64_t>::max(), &Config::max_lax_keys},
        IntFlag{"lax_resend_bound_ms", 10, 12 * 3600 * 1000, &Config::lax_resend_bound_ms},
        IntFlag{"max_memory_mb", 16, 1 << 20, &Config::max_memory_mb},
        IntFlag{"redis_inline_wait_us", 0, 1'000'000, &Config::redis_inline_wait_us},
        IntFlag{"redis_inline_spin_us", 0, 1'000'000, &Config::redis_inline_spin_us}),
    [](const ::testing::TestParamInfo<IntFlag>& info) { return info.param.name; });

TEST(ConfigTest, DocumentedExampleMessage) {
  EXPECT_EQ(ErrorOf({"--flush_interval_ms=0"}), "--flush_interval_ms: must be >= 1, got 0");
}

// ---- rate limiter settings ----

TEST(ConfigTest, RateBucketBounds) {
  EXPECT_EQ(MustParse({"--rate_bucket_ms=1"}).rate_bucket_ms, 1);
  EXPECT_EQ(MustParse({"--rate_bucket_ms=10000"}).rate_bucket_ms, 10000);  // == default window
  EXPECT_THAT(ErrorOf({"--rate_bucket_ms=10001"}),
              HasSubstr("--rate_bucket_ms: must be <= the window"));
  EXPECT_THAT(ErrorOf({"--rate_bucket_ms=0"}), HasSubstr("--rate_bucket_ms: must be >= 1"));
  EXPECT_THAT(ErrorOf({"--rate_bucket_ms=x"}), HasSubstr("--rate_bucket_ms: not an integer"));
}

TEST(ConfigTest, RateBucketIsCheckedAgainstTheConfiguredWindow) {
  EXPECT_EQ(MustParse({"--rate_window_seconds=1", "--rate_bucket_ms=1000"}).rate_bucket_ms, 1000);
  EXPECT_EQ(ErrorOf({"--rate_window_seconds=1", "--rate_bucket_ms=1001"}),
            "--rate_bucket_ms: must be <= the window (--rate_window_seconds=1 is 1000 ms), got "
            "1001");
  // The default bucket (100 ms) fits any window >= 1 s; a big window admits a big bucket.
  EXPECT_EQ(MustParse({"--rate_window_seconds=3600", "--rate_bucket_ms=3600000"}).rate_bucket_ms,
            3600000);
  // Window from the environment, bucket from the command line.
  EXPECT_THAT(ErrorOf({"--rate_bucket_ms=2001"}, {{"DISTKIT_RATE_WINDOW_SECONDS", "2"}}),
              HasSubstr("--rate_bucket_ms"));
}

TEST(ConfigTest, HardLimitFactor) {
  EXPECT_EQ(MustParse({"--hard_limit_factor=1"}).hard_limit_factor, 1.0);
  EXPECT_EQ(MustParse({"--hard_limit_factor=1.0"}).hard_limit_factor, 1.0);
  EXPECT_EQ(MustParse({"--hard_limit_factor=2.5"}).hard_limit_factor, 2.5);
  EXPECT_EQ(MustParse({"--hard_limit_factor=1e3"}).hard_limit_factor, 1000.0);
  EXPECT_EQ(ErrorOf({"--hard_limit_factor=0.999"}), "--hard_limit_factor: must be >= 1, got 0.999");
  EXPECT_THAT(ErrorOf({"--hard_limit_factor=0"}), HasSubstr("--hard_limit_factor: must be >= 1"));
  EXPECT_THAT(ErrorOf({"--hard_limit_factor=-2"}), HasSubstr("--hard_limit_factor: must be >= 1"));
  for (const std::string bad : {"inf", "-inf", "nan", "infinity", "NaN"}) {
    EXPECT_THAT(ErrorOf({"--hard_limit_factor=" + bad}),
                HasSubstr("--hard_limit_factor: must be finite"))
        << bad;
  }
  for (const std::string bad : {"", "abc", "1.5x", " 2", "1,5"}) {
    EXPECT_THAT(ErrorOf({"--hard_limit_factor=" + bad}),
                HasSubstr("--hard_limit_factor: not a number"))
        << bad;
  }
  EXPECT_THAT(ErrorOf({"--hard_limit_factor=1e400"}), HasSubstr("--hard_limit_factor: out of"));
}

TEST(ConfigTest, FailureMode) {
  EXPECT_EQ(MustParse({"--rate_limit_failure_mode=open"}).rate_limit_failure_mode,
            FailureMode::kOpen);
  EXPECT_EQ(MustParse({"--rate_limit_failure_mode=closed"}).rate_limit_failure_mode,
            FailureMode::kClosed);
  EXPECT_EQ(MustParse({"--rate_limit_failure_mode=local"}).rate_limit_failure_mode,
            FailureMode::kLocal);
  EXPECT_EQ(MustParse({"--rate_limit_failure_mode=CLOSED"}).rate_limit_failure_mode,
            FailureMode::kClosed);
  for (const std::string bad : {"", "half", "opened", "redis"}) {
    EXPECT_THAT(ErrorOf({"--rate_limit_failure_mode=" + bad}),
                HasSubstr("--rate_limit_failure_mode: must be open, closed or local"))
        << bad;
  }
}

TEST(ConfigTest, RlsProvider) {
  EXPECT_EQ(MustParse({}).rls_provider, RlsProvider::kRedis);
  EXPECT_EQ(MustParse({"--rls_provider=local"}).rls_provider, RlsProvider::kLocal);
  EXPECT_EQ(MustParse({"--rls_provider=hybrid"}).rls_provider, RlsProvider::kHybrid);
  EXPECT_THAT(ErrorOf({"--rls_provider=memcached"}),
              HasSubstr("--rls_provider: must be redis, hybrid or local"));
  EXPECT_FALSE(MustParse({}).rls_response_headers);
  EXPECT_TRUE(MustParse({"--rls_response_headers=true"}).rls_response_headers);
  EXPECT_THAT(ErrorOf({"--rls_response_headers=yes"}),
              HasSubstr("--rls_response_headers: must be true or false"));
}

// ---- identity, namespace, logging ----

TEST(ConfigTest, InstanceIdBoundaries) {
  EXPECT_EQ(MustParse({"--instance_id=a"}).instance_id, "a");
  const std::string max(64, 'x');
  EXPECT_EQ(MustParse({"--instance_id=" + max}).instance_id, max);
  EXPECT_THAT(ErrorOf({"--instance_id=" + max + "x"}),
              HasSubstr("--instance_id: must be 1-64 characters of [A-Za-z0-9._-]"));
  EXPECT_THAT(ErrorOf({"--instance_id="}), HasSubstr("--instance_id: must be 1-64"));
  const std::string all = "ABCXYZabcxyz0189._-";
  EXPECT_EQ(MustParse({"--instance_id=" + all}).instance_id, all);
}

TEST(ConfigTest, InstanceIdCharacters) {
  for (const std::string bad : {"a b", "a/b", "a:b", "a@b", "a*b", "é", "😀", "a\nb", "{x}"}) {
    EXPECT_THAT(ErrorOf({"--instance_id=" + bad}), HasSubstr("--instance_id:")) << bad;
  }
}

TEST(ConfigTest, NamespaceBoundaries) {
  EXPECT_EQ(MustParse({"--namespace=a"}).default_namespace, "a");
  const std::string max(255, 'n');
  EXPECT_EQ(MustParse({"--namespace=" + max}).default_namespace, max);
  EXPECT_EQ(ErrorOf({"--namespace=" + max + "n"}), "--namespace: must be 1-255 bytes, got 256");
  EXPECT_EQ(ErrorOf({"--namespace="}), "--namespace: must be 1-255 bytes, got 0");
  // 255 bytes of multi-byte characters are fine; the limit is in bytes.
  std::string emoji;
  for (int i = 0; i < 63; ++i) emoji += "😀";  // 252 bytes
  EXPECT_EQ(MustParse({"--namespace=" + emoji}).default_namespace, emoji);
  EXPECT_THAT(ErrorOf({"--namespace=" + emoji + "😀"}), HasSubstr("1-255 bytes, got 256"));
}

TEST(ConfigTest, NamespaceCharacters) {
  for (const std::string ok : {"{tag}", "with space", "😀", "日本", "a.b-c_d/e", "a=b"}) {
    EXPECT_EQ(MustParse({"--namespace=" + ok}).default_namespace, ok);
  }
  EXPECT_THAT(ErrorOf({"--namespace=a:b"}), HasSubstr("--namespace: must not contain ':'"));
  EXPECT_THAT(ErrorOf({"--namespace=:"}), HasSubstr("--namespace: must not contain ':'"));
}

TEST(ConfigTest, NamespaceMustBeValidUtf8) {
  for (const std::string& bad : {std::string("\xff"), std::string("a\x80"),
                                 std::string("\xc0\xaf"),          // overlong '/'
                                 std::string("\xe0\x80\xaf"),      // overlong
                                 std::string("\xed\xa0\x80"),      // surrogate
                                 std::string("\xf4\x90\x80\x80"),  // > U+10FFFF
                                 std::string("\xe2\x82"),          // truncated
                                 std::string("\xf8\x88\x80\x80\x80")}) {
    EXPECT_EQ(ErrorOf({"--namespace=" + bad}), "--namespace: must be valid UTF-8");
  }
  EXPECT_EQ(MustParse({"--namespace=\xf4\x8f\xbf\xbf"}).default_namespace, "\xf4\x8f\xbf\xbf");
}

TEST(ConfigTest, LogLevels) {
  for (const std::string level : {"trace", "debug", "info", "warn", "error", "critical", "off"}) {
    EXPECT_EQ(MustParse({"--log_level=" + level}).log_level, level);
  }
  EXPECT_EQ(MustParse({"--log_level=WARN"}).log_level, "warn");
  for (const std::string bad : {"", "verbose", "fatal", "information"}) {
    EXPECT_THAT(ErrorOf({"--log_level=" + bad}), HasSubstr("--log_level: must be one of")) << bad;
  }
}

// ---- addresses ----

TEST(ConfigTest, ListenForms) {
  EXPECT_THAT(MustParse({"--listen=unix:/run/d.sock"}).listen, ElementsAre("unix:/run/d.sock"));
  EXPECT_THAT(MustParse({"--listen=unix:rel.sock"}).listen, ElementsAre("unix:rel.sock"));
  EXPECT_THAT(MustParse({"--listen=unix:///run/d.sock"}).listen, ElementsAre("unix:///run/d.sock"));
  EXPECT_THAT(MustParse({"--listen=127.0.0.1:50051"}).listen, ElementsAre("127.0.0.1:50051"));
  EXPECT_THAT(MustParse({"--listen=localhost:1"}).listen, ElementsAre("localhost:1"));
  EXPECT_THAT(MustParse({"--listen=0.0.0.0:65535"}).listen, ElementsAre("0.0.0.0:65535"));
  EXPECT_THAT(MustParse({"--listen=[::1]:50051"}).listen, ElementsAre("[::1]:50051"));
  EXPECT_THAT(MustParse({"--listen=[::]:50051"}).listen, ElementsAre("[::]:50051"));
  EXPECT_THAT(MustParse({"--listen=my-pod.svc.cluster.local:8080"}).listen,
              ElementsAre("my-pod.svc.cluster.local:8080"));
}

TEST(ConfigTest, ListenList) {
  EXPECT_THAT(MustParse({"--listen=unix:/a.sock,127.0.0.1:1,[::1]:2"}).listen,
              ElementsAre("unix:/a.sock", "127.0.0.1:1", "[::1]:2"));
  EXPECT_THAT(MustParse({"--listen= unix:/a.sock , 127.0.0.1:1 "}).listen,
              ElementsAre("unix:/a.sock", "127.0.0.1:1"));
}

TEST(ConfigTest, ListenErrors) {
  for (const std::string bad : {"",
                                ",",
                                "unix:/a.sock,",
                                ",unix:/a.sock",
                                "unix:/a,,unix:/b",
                                "unix:",
                                "unix://",
                                "localhost",
                                "localhost:",
                                "localhost:0",
                                "localhost:65536",
                                "localhost:-1",
                                "localhost:http",
                                ":50051",
                                "::1:50051",
                                "[::1]",
                                "[::1]50051",
                                "[::1:50051",
                                "[]:1",
                                "[zz]:1",
                                "bad host:1",
                                "tcp://h:1",
                                "h:1:2"}) {
    EXPECT_THAT(ErrorOf({"--listen=" + bad}), HasSubstr("--listen: ")) << bad;
  }
  EXPECT_THAT(ErrorOf({"--listen=localhost:0"}),
              HasSubstr("port must be an integer in [1, 65535]"));
  EXPECT_THAT(ErrorOf({"--listen=::1:5"}), HasSubstr("brackets"));
}

TEST(ConfigTest, ListenUnixPathLength) {
  const std::string path = "/" + std::string(106, 'p');  // 107 bytes: the sun_path limit
  EXPECT_THAT(MustParse({"--listen=unix:" + path}).listen, ElementsAre("unix:" + path));
  EXPECT_THAT(ErrorOf({"--listen=unix:" + path + "p"}), HasSubstr("longer than 107 bytes"));
}

TEST(ConfigTest, MetricsListen) {
  EXPECT_EQ(MustParse({"--metrics_listen=0.0.0.0:9090"}).metrics_listen, "0.0.0.0:9090");
  EXPECT_EQ(MustParse({"--metrics_listen=[::]:9090"}).metrics_listen, "[::]:9090");
  EXPECT_EQ(MustParse({"--metrics_listen="}).metrics_listen, "");
  for (const std::string bad : {"9090", ":9090", "unix:/m.sock", "h:0", "h:1,h:2"}) {
    EXPECT_THAT(ErrorOf({"--metrics_listen=" + bad}), HasSubstr("--metrics_listen: ")) << bad;
  }
}

TEST(ConfigTest, HealthListen) {
  EXPECT_EQ(MustParse({"--health_listen=0.0.0.0:8081"}).health_listen, "0.0.0.0:8081");
  EXPECT_EQ(MustParse({}).health_listen, "");
  for (const std::string bad : {"8081", "unix:/h.sock", "h:0", "h:1,h:2"}) {
    EXPECT_THAT(ErrorOf({"--health_listen=" + bad}), HasSubstr("--health_listen: ")) << bad;
  }
  EXPECT_THAT(ErrorOf({"--listen=unix:/a,127.0.0.1:7", "--health_listen=127.0.0.1:7"}),
              HasSubstr("--health_listen: '127.0.0.1:7' is also a --listen address"));
}

// ---- daemon extras ----

TEST(ConfigTest, SocketMode) {
  EXPECT_EQ(MustParse({"--socket_mode=0660"}).socket_mode, 0660u);
  EXPECT_EQ(MustParse({"--socket_mode=600"}).socket_mode, 0600u);
  EXPECT_EQ(MustParse({"--socket_mode=0777"}).socket_mode, 0777u);
  EXPECT_EQ(MustParse({"--socket_mode=0"}).socket_mode, 0u);
  EXPECT_EQ(MustParse({"--socket_mode", "0666"}).socket_mode, 0666u);
  for (const std::string bad :
       {"", "0800", "0680", "1000", "01000", "07777", "rw", "0x1b6", "-0660", "438"}) {
    EXPECT_THAT(ErrorOf({"--socket_mode=" + bad}), HasSubstr("--socket_mode: must be an octal"))
        << bad;
  }
}

// ---- ToString ----

TEST(ConfigTest, ToStringHasOneLinePerFlag) {
  Config c = MustParse({"--instance_id=me"});
  const std::vector<std::string> lines = absl::StrSplit(c.ToString(), '\n');
  EXPECT_THAT(
      lines,
      ElementsAre("--listen=unix:/tmp/distkitd.sock", "--redis=redis://127.0.0.1:6379/0",
                  "--redis_mode=auto", "--redis_tls_ca=", "--redis_tls_cert=", "--redis_tls_key=",
                  "--redis_tls_server_name=", "--namespace=distkit", "--instance_id=me",
                  "--flush_interval_ms=20", "--allowed_lag_ms=20",
                  "--dead_instance_threshold_ms=30000", "--redis_timeout_ms=1000",
                  "--rate_window_seconds=10", "--rate_bucket_ms=100", "--hard_limit_factor=1",
                  "--sync_interval_ms=10", "--suppression_cache_ms=100",
                  "--rate_limit_failure_mode=open", "--metrics_listen=", "--log_level=info",
                  "--shutdown_grace_ms=10000", "--socket_mode=0660", "--max_pending_keys=1000000",
                  "--max_rate_limit_keys=100000", "--max_lax_keys=100000",
                  "--lax_resend_bound_ms=600000", "--max_memory_mb=128",
                  "--tls_cert=", "--tls_key=", "--tls_client_ca=", "--tls_reload_seconds=10",
                  "--health_listen=", "--rls_config=", "--rls_provider=redis",
                  "--rls_response_headers=false", "--redis_inline_wait_us=1000",
                  "--redis_inline_spin_us=100"));
}

TEST(ConfigTest, ToStringOutputParsesBackToTheSameConfig) {
  const Config c = MustParse({"--listen=unix:/a,[::1]:7", "--hard_limit_factor=1.25",
                              "--rate_limit_failure_mode=local", "--socket_mode=0640",
                              "--metrics_listen=127.0.0.1:9"});
  const std::vector<std::string> lines = absl::StrSplit(c.ToString(), '\n');
  auto again = Parse(lines);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ToString(), c.ToString());
}

TEST(ConfigTest, ToStringRedactsThePassword) {
  EXPECT_EQ(Line(MustParse({"--redis=redis://alice:s3cret@h:1/2"}), "redis"),
            "--redis=redis://alice:***@h:1/2");
  EXPECT_EQ(Line(MustParse({"--redis=redis://:s3cret@h"}), "redis"),
            "--redis=redis://:***@h:6379/0");
  EXPECT_EQ(Line(MustParse({"--redis=redis://:p@ss@h"}), "redis"), "--redis=redis://:***@h:6379/0");
  EXPECT_EQ(Line(MustParse({"--redis=unix:/r.sock?db=1&password=s3cret"}), "redis"),
            "--redis=unix:/r.sock?db=1&password=***");
  EXPECT_EQ(Line(MustParse({"--redis=unix:/r.sock?password=s3cret&db=1"}), "redis"),
            "--redis=unix:/r.sock?db=1&password=***");
  EXPECT_EQ(Line(MustParse({"--redis=redis://h:1"}), "redis"), "--redis=redis://h:1/0");
  EXPECT_THAT(MustParse({"--redis=redis://u:s3cret@h"}).ToString(), Not(HasSubstr("s3cret")));
}

// ---- Redis seeds, mode and TLS ----

// A directory of small files for the --redis_tls_* flags (their content is read by the TLS
// layer, not here: the flags only check that the paths are readable files).
class TlsFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "config_test_tls_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    for (const char* name : {"ca.pem", "cert.pem", "key.pem"}) {
      std::ofstream(dir_ + "/" + name) << "-----BEGIN TEST-----\n";
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_;
};

TEST(ConfigTest, RedisSeedList) {
  const Config c = MustParse({"--redis=redis://a:7000, redis://:pw@b:7001,redis://c"});
  ASSERT_EQ(c.redis_seeds.size(), 3u);
  EXPECT_EQ(c.redis_seeds[0].host, "a");
  EXPECT_EQ(c.redis_seeds[1].password, "pw");
  EXPECT_EQ(c.redis_seeds[2].port, 6379);
  EXPECT_EQ(Line(c, "redis"), "--redis=redis://a:7000/0,redis://:***@b:7001/0,redis://c:6379/0");
  EXPECT_THAT(c.ToString(), Not(HasSubstr("pw")));
  EXPECT_EQ(MustParse({}, {{"DISTKIT_REDIS", "redis://a:1,redis://b:2"}}).redis_seeds.size(), 2u);
}

TEST(ConfigTest, RedisSeedListErrors) {
  EXPECT_EQ(ErrorOf({"--redis=redis://a:1,"}),
            "--redis: seed 2 of 2 is empty (two ',' in a row, or one at an end)");
  EXPECT_EQ(ErrorOf({"--redis=redis://a:1,redis://u:s3cret@b:0"}),
            "--redis: seed 2 ('redis://u:***@b:0'): the port must be an integer in [1, 65535], "
            "got '0'");
  EXPECT_THAT(ErrorOf({"--redis=redis://a:1,unix:/r.sock"}),
              HasSubstr("--redis: seed 2 ('unix:/r.sock'): several seeds must all be TCP"));
  EXPECT_THAT(ErrorOf({"--redis=rediss://a:1,redis://b:1"}),
              HasSubstr("--redis: seed 2 ('redis://b:1'): seeds mix rediss:// (TLS) and redis://"));
  EXPECT_THAT(ErrorOf({}, {{"DISTKIT_REDIS", "redis://a:1,,redis://b:1"}}),
              HasSubstr("(from DISTKIT_REDIS)"));
}

TEST(ConfigTest, RedissSeed) {
  const Config c = MustParse({"--redis=rediss://u:s3cret@h:6380/1"});
  ASSERT_EQ(c.redis_seeds.size(), 1u);
  EXPECT_TRUE(c.redis_seeds[0].tls);
  EXPECT_EQ(Line(c, "redis"), "--redis=rediss://u:***@h:6380/1");
}

TEST(ConfigTest, RedisMode) {
  EXPECT_EQ(MustParse({"--redis_mode=auto"}).redis_mode, redis::RedisMode::kAuto);
  EXPECT_EQ(MustParse({"--redis_mode=standalone"}).redis_mode, redis::RedisMode::kStandalone);
  EXPECT_EQ(MustParse({"--redis_mode", "CLUSTER"}).redis_mode, redis::RedisMode::kCluster);
  EXPECT_EQ(MustParse({}, {{"DISTKIT_REDIS_MODE", "cluster"}}).redis_mode,
            redis::RedisMode::kCluster);
  EXPECT_EQ(MustParse({"--redis_mode=standalone"}, {{"DISTKIT_REDIS_MODE", "cluster"}}).redis_mode,
            redis::RedisMode::kStandalone);
  EXPECT_EQ(ErrorOf({"--redis_mode=sentinel"}),
            "--redis_mode: must be auto, standalone or cluster, got 'sentinel'");
  EXPECT_EQ(ErrorOf({"--redis_mode="}),
            "--redis_mode: must be auto, standalone or cluster, got ''");
  EXPECT_EQ(ErrorOf({}, {{"DISTKIT_REDIS_MODE", "clustered"}}),
            "--redis_mode: must be auto, standalone or cluster, got 'clustered' "
            "(from DISTKIT_REDIS_MODE)");
}

TEST(ConfigTest, ClusterModeNeedsTcpSeeds) {
  EXPECT_THAT(ErrorOf({"--redis=unix:/r.sock", "--redis_mode=cluster"}),
              HasSubstr("--redis_mode=cluster: cluster nodes announce TCP addresses"));
  EXPECT_EQ(MustParse({"--redis=unix:/r.sock", "--redis_mode=standalone"}).redis_mode,
            redis::RedisMode::kStandalone);
  EXPECT_EQ(MustParse({"--redis=unix:/r.sock"}).redis_mode, redis::RedisMode::kAuto);
  EXPECT_EQ(MustParse({"--redis=redis://a:1,redis://b:1", "--redis_mode=cluster"}).redis_mode,
            redis::RedisMode::kCluster);
}

// The files' contents are checked when the server starts (e2e listen_tls_e2e_test); here the
// flags' combinations.
TEST_F(TlsFilesTest, ListenTlsFlags) {
  const std::string file = Path("cert.pem");
  const Config c =
      MustParse({"--listen=unix:/a,0.0.0.0:7", "--tls_cert=" + file, "--tls_key=" + file,
                 "--tls_client_ca=" + file, "--tls_reload_seconds=2"});
  EXPECT_TRUE(c.listen_tls.enabled());
  EXPECT_EQ(c.listen_tls.cert_file, file);
  EXPECT_EQ(c.listen_tls.client_ca_file, file);
  EXPECT_EQ(c.listen_tls.reload_seconds, 2);
  EXPECT_FALSE(MustParse({}).listen_tls.enabled());
  EXPECT_THAT(ErrorOf({"--listen=0.0.0.0:7", "--tls_cert=" + file}),
              HasSubstr("--tls_cert: needs --tls_key"));
  EXPECT_THAT(ErrorOf({"--listen=0.0.0.0:7", "--tls_key=" + file}),
              HasSubstr("--tls_key: needs --tls_cert"));
  EXPECT_THAT(ErrorOf({"--listen=0.0.0.0:7", "--tls_client_ca=" + file}),
              HasSubstr("--tls_client_ca: mutual TLS needs server TLS"));
  EXPECT_THAT(ErrorOf({"--tls_cert=" + file, "--tls_key=" + file}),
              HasSubstr("TLS only applies to TCP --listen addresses"));
  EXPECT_THAT(ErrorOf({"--listen=0.0.0.0:7", "--tls_cert=/nonexistent/c.pem"}),
              HasSubstr("--tls_cert: cannot read"));
  for (const std::string bad : {"0", "86401", "x"}) {
    EXPECT_THAT(ErrorOf({"--tls_reload_seconds=" + bad}), HasSubstr("--tls_reload_seconds: "))
        << bad;
  }
}

TEST_F(TlsFilesTest, AllTlsFlags) {
  const Config c =
      MustParse({"--redis=rediss://h:6380", "--redis_tls_ca=" + Path("ca.pem"), "--redis_tls_cert",
                 Path("cert.pem"), "--redis_tls_key=" + Path("key.pem"),
                 "--redis_tls_server_name=redis.example.com"});
  EXPECT_EQ(c.redis_tls.ca_file, Path("ca.pem"));
  EXPECT_EQ(c.redis_tls.cert_file, Path("cert.pem"));
  EXPECT_EQ(c.redis_tls.key_file, Path("key.pem"));
  EXPECT_EQ(c.redis_tls.server_name, "redis.example.com");
  EXPECT_EQ(Line(c, "redis_tls_ca"), "--redis_tls_ca=" + Path("ca.pem"));
  EXPECT_EQ(Line(c, "redis_tls_server_name"), "--redis_tls_server_name=redis.example.com");
  // ToString parses back (the start-up log is a valid command line).
  const std::vector<std::string> lines = absl::StrSplit(c.ToString(), '\n');
  auto again = Parse(lines);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ToString(), c.ToString());
}

TEST_F(TlsFilesTest, TlsFlagsFromTheEnvironment) {
  const Config c = MustParse({}, {{"DISTKIT_REDIS", "rediss://a:1,rediss://b:2"},
                                  {"DISTKIT_REDIS_TLS_CA", Path("ca.pem")},
                                  {"DISTKIT_REDIS_TLS_CERT", Path("cert.pem")},
                                  {"DISTKIT_REDIS_TLS_KEY", Path("key.pem")},
                                  {"DISTKIT_REDIS_TLS_SERVER_NAME", "n"}});
  EXPECT_EQ(c.redis_tls.ca_file, Path("ca.pem"));
  EXPECT_EQ(c.redis_tls.cert_file, Path("cert.pem"));
  EXPECT_EQ(c.redis_tls.key_file, Path("key.pem"));
  EXPECT_EQ(c.redis_tls.server_name, "n");
}

TEST_F(TlsFilesTest, CaAloneAndNoFlagsAreFine) {
  EXPECT_EQ(MustParse({"--redis=rediss://h", "--redis_tls_ca=" + Path("ca.pem")}).redis_tls.ca_file,
            Path("ca.pem"));
  EXPECT_EQ(MustParse({"--redis=rediss://h"}).redis_tls.ca_file, "");  // the system's CAs
  EXPECT_EQ(MustParse({"--redis=rediss://h", "--redis_tls_ca="}).redis_tls.ca_file, "");
}

TEST_F(TlsFilesTest, CertAndKeyGoTogether) {
  EXPECT_EQ(ErrorOf({"--redis=rediss://h", "--redis_tls_cert=" + Path("cert.pem")}),
            "--redis_tls_cert: needs --redis_tls_key (the certificate's private key)");
  EXPECT_EQ(ErrorOf({"--redis=rediss://h", "--redis_tls_key=" + Path("key.pem")}),
            "--redis_tls_key: needs --redis_tls_cert (the client certificate)");
}

TEST_F(TlsFilesTest, FilesMustBeReadable) {
  const std::string missing = Path("missing.pem");
  EXPECT_EQ(ErrorOf({"--redis=rediss://h", "--redis_tls_ca=" + missing}),
            "--redis_tls_ca: cannot read '" + missing + "': No such file or directory");
  EXPECT_THAT(ErrorOf({"--redis=rediss://h", "--redis_tls_cert=" + missing,
                       "--redis_tls_key=" + Path("key.pem")}),
              HasSubstr("--redis_tls_cert: cannot read '" + missing + "'"));
  EXPECT_THAT(ErrorOf({"--redis=rediss://h", "--redis_tls_cert=" + Path("cert.pem"),
                       "--redis_tls_key=" + missing}),
              HasSubstr("--redis_tls_key: cannot read '" + missing + "'"));
  EXPECT_EQ(ErrorOf({"--redis=rediss://h"}, {{"DISTKIT_REDIS_TLS_CA", missing}}),
            "--redis_tls_ca: cannot read '" + missing +
                "': No such file or directory (from DISTKIT_REDIS_TLS_CA)");
  EXPECT_EQ(ErrorOf({"--redis=rediss://h", "--redis_tls_ca=" + dir_}),
            "--redis_tls_ca: '" + dir_ + "' is not a regular file");
  if (::geteuid() != 0) {  // root reads any file
    ASSERT_EQ(::chmod(Path("ca.pem").c_str(), 0), 0);
    EXPECT_THAT(ErrorOf({"--redis=rediss://h", "--redis_tls_ca=" + Path("ca.pem")}),
                HasSubstr("Permission denied"));
  }
}

TEST_F(TlsFilesTest, TlsFlagsNeedARedissSeed) {
  for (const std::vector<std::string>& flags : std::vector<std::vector<std::string>>{
           {"--redis_tls_ca=" + Path("ca.pem")},
           {"--redis_tls_cert=" + Path("cert.pem"), "--redis_tls_key=" + Path("key.pem")},
           {"--redis_tls_server_name=n"}}) {
    EXPECT_THAT(ErrorOf(flags), HasSubstr("flags only apply to rediss:// seeds, and --redis has "
                                          "none (redis://127.0.0.1:6379/0)"))
        << flags[0];
  }
  EXPECT_THAT(ErrorOf({"--redis=unix:/r.sock", "--redis_tls_server_name=n"}),
              HasSubstr("--redis_tls_server_name: the --redis_tls_* flags only apply"));
}

TEST(ConfigTest, TlsServerNameCharacters) {
  EXPECT_EQ(
      MustParse({"--redis=rediss://h", "--redis_tls_server_name=a-b.c_d"}).redis_tls.server_name,
      "a-b.c_d");
  EXPECT_THAT(ErrorOf({"--redis=rediss://h", "--redis_tls_server_name=a b"}),
              HasSubstr("--redis_tls_server_name: must be a host name or address"));
}

// ---- DistkitEnvironment ----

TEST(ConfigTest, DistkitEnvironmentReadsOnlyDistkitVariables) {
  ::setenv("DISTKIT_CONFIG_TEST_VAR", "a=b", 1);
  ::setenv("NOT_DISTKIT_CONFIG_TEST_VAR", "x", 1);
  const auto env = DistkitEnvironment();
  ::unsetenv("DISTKIT_CONFIG_TEST_VAR");
  ::unsetenv("NOT_DISTKIT_CONFIG_TEST_VAR");
  ASSERT_EQ(env.count("DISTKIT_CONFIG_TEST_VAR"), 1u);
  EXPECT_EQ(env.at("DISTKIT_CONFIG_TEST_VAR"), "a=b");
  EXPECT_EQ(env.count("NOT_DISTKIT_CONFIG_TEST_VAR"), 0u);
  for (const auto& [name, value] : env) EXPECT_EQ(name.rfind("DISTKIT_", 0), 0u) << name;
}

TEST(ConfigTest, DistkitEnvironmentFeedsParseConfig) {
  ::setenv("DISTKIT_SYNC_INTERVAL_MS", "33", 1);
  const auto env = DistkitEnvironment();
  ::unsetenv("DISTKIT_SYNC_INTERVAL_MS");
  EXPECT_EQ(MustParse({}, env).sync_interval_ms, 33);
}

}  // namespace
}  // namespace distkit::config
