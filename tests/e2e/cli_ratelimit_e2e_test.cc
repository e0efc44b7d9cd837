// End to end: `distkit ratelimit inc|get` of the real CLI binary against a real distkitd (LOCAL
// provider) and a real redis-server. Asserts the printed lines (text and --json) and the exit
// codes (0 ok, also for a REJECTED decision; 2 the call failed; 64 usage error). The window is
// 60 s so that no assertion depends on how fast the machine is.

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "tests/support/daemon.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::Daemon;
using testing::PollUntil;
using testing::Process;
using testing::RedisServer;

constexpr int kExitOk = testing::kCliExitOk;
constexpr int kExitCallFailed = testing::kCliExitCallFailed;
constexpr int kExitUsage = testing::kCliExitUsage;

class CliRateLimitE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_TRUE(redis_);
    daemon_ = std::make_unique<Daemon>(
        *redis_, "d",
        std::vector<std::string>{"--rate_window_seconds", "60", "--hard_limit_factor", "2"});
    ASSERT_TRUE(daemon_->started());
    ASSERT_TRUE(PollUntil(
        [&] {
          return Cli({"health", "--service", "distkit.v1.RateLimitService"}).first == kExitOk;
        },
        15s))
        << daemon_->Log();
  }

  std::pair<int, std::string> Cli(std::vector<std::string> args) const {
    return testing::RunCli(*daemon_, std::move(args));
  }

  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<Daemon> daemon_;
};

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// The retry_after_ms printed in a text line (-1 when absent).
int64_t RetryAfter(const std::string& line) {
  const std::string tag = "retry_after_ms=";
  const size_t pos = line.find(tag);
  if (pos == std::string::npos) return -1;
  return std::stoll(line.substr(pos + tag.size()));
}

// 0.1/s × 60 s: capacity 6.
TEST_F(CliRateLimitE2E, AbsoluteIncAndGet) {
  auto r = Cli({"ratelimit", "inc", "k", "--rate", "0.1", "--count", "4"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second,
            "decision=ALLOWED allowed=true retry_after_ms=0 remaining_after_waiting=0 "
            "suppression_factor=0 degraded=false\n");
  r = Cli({"ratelimit", "inc", "k", "--rate=0.1", "--count=3"});  // 4 + 3 > 6: all or nothing
  EXPECT_EQ(r.first, kExitOk) << r.second;  // a REJECTED decision is a successful call
  EXPECT_TRUE(StartsWith(r.second, "decision=REJECTED allowed=false retry_after_ms=")) << r.second;
  const int64_t retry = RetryAfter(r.second);
  EXPECT_GT(retry, 0);
  EXPECT_LE(retry, 60000);
  EXPECT_NE(r.second.find(" remaining_after_waiting=4 suppression_factor=0 degraded=false\n"),
            std::string::npos)
      << r.second;
  r = Cli({"--json", "ratelimit", "inc", "k", "--rate", "0.1", "--count", "2", "--provider",
           "local", "--strategy", "absolute"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second,
            "{\"decision\":\"ALLOWED\",\"allowed\":true,\"retry_after_ms\":0,"
            "\"remaining_after_waiting\":0,\"suppression_factor\":0,\"degraded\":false}\n");
  r = Cli({"ratelimit", "inc", "k", "--rate", "0.1"});  // --count defaults to 1; full
  EXPECT_TRUE(StartsWith(r.second, "decision=REJECTED")) << r.second;

  r = Cli({"ratelimit", "get", "k"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, "total=6 declined=0 suppression_factor=0\n");
  r = Cli({"ratelimit", "get", "k", "--json"});
  EXPECT_EQ(r.second, "{\"total\":6,\"declined\":0,\"suppression_factor\":0}\n");
  // Another namespace, another strategy: independent limits.
  EXPECT_EQ(Cli({"ratelimit", "get", "k", "--namespace", "other"}).second,
            "total=0 declined=0 suppression_factor=0\n");
  EXPECT_EQ(Cli({"ratelimit", "get", "k", "--strategy", "suppressed"}).second,
            "total=0 declined=0 suppression_factor=0\n");
  r = Cli({"ratelimit", "inc", "k", "--rate", "0.1", "--count", "6", "--namespace", "other"});
  EXPECT_TRUE(StartsWith(r.second, "decision=ALLOWED")) << r.second;
}

// 0.1/s × 60 s × factor 2: soft 6, hard 12.
TEST_F(CliRateLimitE2E, SuppressedIncAndGet) {
  auto r =
      Cli({"ratelimit", "inc", "s", "--rate", "0.1", "--count", "6", "--strategy", "suppressed"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second,
            "decision=ALLOWED allowed=true retry_after_ms=0 remaining_after_waiting=0 "
            "suppression_factor=0 degraded=false\n");
  r = Cli({"--json", "ratelimit", "inc", "s", "--rate", "0.1", "--count", "7", "--strategy",
           "SUPPRESSED"});  // 6 + 7 > hard 12: declined whole
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second,
            "{\"decision\":\"SUPPRESSED\",\"allowed\":false,\"retry_after_ms\":0,"
            "\"remaining_after_waiting\":0,\"suppression_factor\":1,\"degraded\":false}\n");
  r = Cli({"ratelimit", "get", "s", "--strategy", "suppressed"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  // The factor depends on the time since the requests (the last-second rate): only its range.
  EXPECT_TRUE(StartsWith(r.second, "total=13 declined=7 suppression_factor=")) << r.second;
  const double factor = std::stod(r.second.substr(r.second.rfind('=') + 1));
  EXPECT_GE(factor, 0.0);
  EXPECT_LT(factor, 1.0);  // accepted 6 < hard: never pinned at 1 by the declined units
}

TEST_F(CliRateLimitE2E, BadInputIsAUsageErrorOrAFailedCall) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"ratelimit"}, "ratelimit: missing subcommand (inc or get)"},
      {{"ratelimit", "set", "k"}, "ratelimit: unknown subcommand 'set'"},
      {{"ratelimit", "inc", "k"}, "ratelimit inc: --rate is required"},
      {{"ratelimit", "inc", "k", "--rate", "fast"}, "--rate: not a number: 'fast'"},
      {{"ratelimit", "inc", "k", "--rate"}, "--rate: missing value"},
      {{"ratelimit", "inc", "k", "--rate", "1", "--count", "-1"}, "--count: not a uint64"},
      {{"ratelimit", "inc", "k", "--rate", "1", "--count", "1.5"}, "--count: not a uint64"},
      {{"ratelimit", "inc", "k", "--rate", "1", "--provider", "cloud"},
       "--provider: expected local, redis or hybrid, got 'cloud'"},
      {{"ratelimit", "get", "k", "--strategy", "strict"},
       "--strategy: expected absolute or suppressed, got 'strict'"},
      {{"ratelimit", "get", "k", "--rate", "1"}, "ratelimit get: unknown flag --rate"},
      {{"ratelimit", "get", "k", "--count", "1"}, "ratelimit get: unknown flag --count"},
      {{"ratelimit", "inc", "k", "--rate", "1", "--lax"}, "unknown flag --lax"},
      {{"ratelimit", "inc", "--rate", "1"}, "ratelimit inc: expected KEY, got 0 argument(s)"},
      {{"ratelimit", "get", "k", "extra"}, "ratelimit get: expected KEY, got 2 argument(s)"},
  };
  for (const auto& [args, message] : cases) {
    auto [code, out] = Cli(args);
    EXPECT_EQ(code, kExitUsage) << ::testing::PrintToString(args) << ": " << out;
    EXPECT_NE(out.find(message), std::string::npos)
        << ::testing::PrintToString(args) << ": " << out;
    EXPECT_NE(out.find("Usage: distkit"), std::string::npos) << out;
  }
  EXPECT_EQ(Cli({"ratelimit", "get", "k"}).second, "total=0 declined=0 suppression_factor=0\n")
      << "no usage error reached the daemon";

  // Refused by the daemon: exit 2 with `error: CODE: message` naming the field.
  for (const std::string rate : {"0", "-1", "nan", "inf"}) {
    auto r = Cli({"ratelimit", "inc", "k", "--rate", rate});
    EXPECT_EQ(r.first, kExitCallFailed) << rate << ": " << r.second;
    EXPECT_NE(r.second.find("error: INVALID_ARGUMENT: rate_per_second"), std::string::npos)
        << r.second;
  }
  auto r = Cli({"ratelimit", "inc", "bad:key", "--rate", "1"});
  EXPECT_EQ(r.first, kExitCallFailed) << r.second;
  EXPECT_NE(r.second.find("error: INVALID_ARGUMENT: key"), std::string::npos) << r.second;
  r = Cli({"ratelimit", "get", "k", "--namespace", "bad:ns"});
  EXPECT_EQ(r.first, kExitCallFailed) << r.second;
  EXPECT_NE(r.second.find("error: INVALID_ARGUMENT: namespace"), std::string::npos) << r.second;
  EXPECT_EQ(Cli({"ratelimit", "get", "k"}).second, "total=0 declined=0 suppression_factor=0\n");
}

TEST_F(CliRateLimitE2E, HealthOfTheRateLimitService) {
  auto r = Cli({"health", "--service", "distkit.v1.RateLimitService"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, "status=SERVING\n");
}

}  // namespace
}  // namespace distkit
