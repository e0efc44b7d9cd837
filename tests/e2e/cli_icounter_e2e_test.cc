// End to end: every `distkit icounter ...` subcommand of the real CLI binary against two real
// distkitd processes sharing one real redis-server. Asserts the printed lines (text and --json)
// and the exit codes (0 ok, 2 the call failed, 64 usage error).

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

std::pair<int, std::string> Cli(const Daemon& d, std::vector<std::string> args) {
  return testing::RunCli(d, std::move(args));
}

// The text line every instance-counter command prints.
std::string Line(int64_t cumulative, int64_t instance, int64_t previous_cumulative,
                 int64_t previous_instance, bool applied) {
  return "cumulative=" + std::to_string(cumulative) + " instance=" + std::to_string(instance) +
         " previous_cumulative=" + std::to_string(previous_cumulative) +
         " previous_instance=" + std::to_string(previous_instance) +
         " applied=" + (applied ? "true" : "false") + "\n";
}

// The (cumulative, instance) prefix of a line: what a `get` is checked on (its previous_* equal
// the current values; its `applied` is not part of what these tests pin down).
std::string Now(int64_t cumulative, int64_t instance) {
  return "cumulative=" + std::to_string(cumulative) + " instance=" + std::to_string(instance) + " ";
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// Waits until `get KEY` (extra flags allowed) on `d` prints (cumulative, instance).
bool GetEventually(const Daemon& d, const std::string& key, int64_t cumulative, int64_t instance,
                   std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"icounter", "get", key};
  args.insert(args.end(), extra.begin(), extra.end());
  return PollUntil(
      [&] {
        auto [code, out] = Cli(d, args);
        return code == kExitOk && StartsWith(out, Now(cumulative, instance));
      },
      15s);
}

class CliIcounterE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_TRUE(redis_);
    a_ = std::make_unique<Daemon>(*redis_, "a", std::vector<std::string>{"--instance_id", "ida"});
    b_ = std::make_unique<Daemon>(*redis_, "b", std::vector<std::string>{"--instance_id", "idb"});
    for (Daemon* d : {a_.get(), b_.get()}) {
      ASSERT_TRUE(PollUntil(
          [&] {
            return Cli(*d, {"health", "--service", "distkit.v1.InstanceCounterService"}).first ==
                   kExitOk;
          },
          15s))
          << d->Log();
    }
  }

  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<Daemon> a_, b_;
};

TEST_F(CliIcounterE2E, IncOnEachDaemonGetShowsTheSum) {
  Daemon& a = *a_;
  Daemon& b = *b_;
  auto r = Cli(a, {"icounter", "inc", "k", "--delta", "10"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, Line(10, 10, 0, 0, true));
  r = Cli(b, {"icounter", "inc", "k", "--delta=5"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, Line(15, 5, 10, 0, true));
  r = Cli(b, {"icounter", "inc", "k"});  // --delta defaults to 1
  EXPECT_EQ(r.second, Line(16, 6, 15, 5, true));
  r = Cli(b, {"icounter", "inc", "k", "--delta", "-1"});
  EXPECT_EQ(r.second, Line(15, 5, 16, 6, true));

  r = Cli(a, {"icounter", "get", "k"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_TRUE(StartsWith(r.second, Now(15, 10) + "previous_cumulative=15 previous_instance=10 "))
      << r.second;
  r = Cli(b, {"icounter", "get", "k"});
  EXPECT_TRUE(StartsWith(r.second, Now(15, 5))) << r.second;
  r = Cli(a, {"--json", "icounter", "get", "k"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_TRUE(StartsWith(r.second,
                         "{\"cumulative\":15,\"instance\":10,\"previous_cumulative\":15,"
                         "\"previous_instance\":10,\"applied\":"))
      << r.second;
  r = Cli(a, {"icounter", "inc", "k", "--json", "--delta", "0"});  // --json after the command
  EXPECT_EQ(r.second,
            "{\"cumulative\":15,\"instance\":10,\"previous_cumulative\":15,"
            "\"previous_instance\":10,\"applied\":true}\n");

  // Conditions on the cumulative: not met changes nothing, exit 0, applied=false.
  r = Cli(a, {"icounter", "inc", "k", "--if", "ge:100"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, Line(15, 10, 15, 10, false));
  r = Cli(a, {"icounter", "inc", "k", "--if=eq:15", "--delta", "2"});
  EXPECT_EQ(r.second, Line(17, 12, 15, 10, true));

  // LAX (answered from memory once the LAX path exists): eventually in Redis and in every view.
  r = Cli(a, {"icounter", "inc", "k", "--lax", "--delta", "3"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_TRUE(StartsWith(r.second, "cumulative=")) << r.second;
  EXPECT_TRUE(GetEventually(b, "k", 20, 5));
  EXPECT_TRUE(GetEventually(b, "k", 20, 5, {"--lax"}));
  EXPECT_TRUE(GetEventually(a, "k", 20, 15, {"--lax"}));
}

TEST_F(CliIcounterE2E, SetOnInstanceDelOnInstanceSetDel) {
  Daemon& a = *a_;
  Daemon& b = *b_;
  ASSERT_EQ(Cli(a, {"icounter", "inc", "k", "--delta", "11"}).second, Line(11, 11, 0, 0, true));
  ASSERT_EQ(Cli(b, {"icounter", "inc", "k", "--delta", "4"}).second, Line(15, 4, 11, 0, true));

  // set-on-instance: only this daemon's slice; the condition is on the slice, not the cumulative.
  auto r = Cli(a, {"icounter", "set-on-instance", "k", "20", "--if", "eq:15"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, Line(15, 11, 15, 11, false));
  r = Cli(a, {"icounter", "set-on-instance", "k", "20", "--if", "eq:11"});
  EXPECT_EQ(r.second, Line(24, 20, 15, 11, true));
  r = Cli(b, {"icounter", "set-on-instance", "k", "7", "--lax"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_TRUE(GetEventually(a, "k", 27, 20));
  EXPECT_TRUE(GetEventually(b, "k", 27, 7));

  // del-on-instance: only this daemon's slice leaves the cumulative.
  r = Cli(b, {"icounter", "del-on-instance", "k"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, Line(20, 0, 27, 7, true));
  ASSERT_EQ(Cli(b, {"icounter", "inc", "k", "--delta", "6"}).second, Line(26, 6, 20, 0, true));

  // set: the cumulative, globally; every other slice becomes stale.
  r = Cli(a, {"icounter", "set", "k", "5", "--if", "lt:10"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, Line(26, 20, 26, 20, false));
  r = Cli(a, {"--json", "icounter", "set", "k", "100", "--if", "ge:26"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second,
            "{\"cumulative\":100,\"instance\":100,\"previous_cumulative\":26,"
            "\"previous_instance\":20,\"applied\":true}\n");
  r = Cli(b, {"icounter", "get", "k"});
  EXPECT_TRUE(StartsWith(r.second, Now(100, 0))) << r.second;

  // A result outside int64: the call fails (exit 2), nothing changes.
  r = Cli(b, {"icounter", "inc", "k", "--delta", "9223372036854775807"});
  EXPECT_EQ(r.first, kExitCallFailed) << r.second;
  EXPECT_NE(r.second.find("error: OUT_OF_RANGE"), std::string::npos) << r.second;
  r = Cli(a, {"icounter", "set-on-instance", "k", "-9223372036854775808"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, Line(-9223372036854775807LL - 1, -9223372036854775807LL - 1, 100, 100, true));

  // del: globally; previous = the old cumulative and this daemon's old slice.
  r = Cli(b, {"icounter", "inc", "k", "--delta", "1"});
  EXPECT_EQ(r.second, Line(-9223372036854775807LL, 1, -9223372036854775807LL - 1, 0, true));
  r = Cli(b, {"icounter", "del", "k"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, Line(0, 0, -9223372036854775807LL, 1, true));
  r = Cli(a, {"icounter", "get", "k"});
  EXPECT_TRUE(StartsWith(r.second, Now(0, 0))) << r.second;
}

TEST_F(CliIcounterE2E, ClearAndClearOnInstanceAndNamespaces) {
  Daemon& a = *a_;
  Daemon& b = *b_;
  ASSERT_EQ(Cli(a, {"icounter", "inc", "c1", "--delta", "1"}).first, kExitOk);
  ASSERT_EQ(Cli(b, {"icounter", "inc", "c1", "--delta", "2"}).first, kExitOk);
  ASSERT_EQ(Cli(a, {"icounter", "inc", "c2", "--delta", "4"}).first, kExitOk);
  auto r = Cli(a, {"icounter", "inc", "c1", "--namespace", "other", "--delta", "3"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, Line(3, 3, 0, 0, true));
  r = Cli(b, {"icounter", "get", "c1", "--namespace=other"});
  EXPECT_TRUE(StartsWith(r.second, Now(3, 0))) << r.second;

  // clear-on-instance: this daemon's slices of the namespace only.
  r = Cli(a, {"icounter", "clear-on-instance"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, "ok\n");
  EXPECT_TRUE(StartsWith(Cli(b, {"icounter", "get", "c1"}).second, Now(2, 2)));
  EXPECT_TRUE(StartsWith(Cli(b, {"icounter", "get", "c2"}).second, Now(0, 0)));
  EXPECT_TRUE(
      StartsWith(Cli(a, {"icounter", "get", "c1", "--namespace", "other"}).second, Now(3, 3)));

  // clear: every key of the namespace, globally; other namespaces keep theirs.
  r = Cli(b, {"--json", "icounter", "clear"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, "{}\n");
  EXPECT_TRUE(StartsWith(Cli(a, {"icounter", "get", "c1"}).second, Now(0, 0)));
  EXPECT_TRUE(
      StartsWith(Cli(b, {"icounter", "get", "c1", "--namespace", "other"}).second, Now(3, 0)));
  r = Cli(b, {"icounter", "clear", "--namespace", "other"});
  EXPECT_EQ(r.second, "ok\n");
  EXPECT_TRUE(
      StartsWith(Cli(a, {"icounter", "get", "c1", "--namespace", "other"}).second, Now(0, 0)));
  r = Cli(b, {"--json", "icounter", "clear-on-instance", "--namespace", "other"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_EQ(r.second, "{}\n");
}

TEST_F(CliIcounterE2E, BadInputIsAUsageErrorAndChangesNothing) {
  Daemon& a = *a_;
  ASSERT_EQ(Cli(a, {"icounter", "inc", "k", "--delta", "7"}).second, Line(7, 7, 0, 0, true));
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"icounter", "set", "k", "abc"}, "icounter set: VALUE is not an int64: 'abc'"},
      {{"icounter", "set-on-instance", "k", "9223372036854775808"}, "VALUE is not an int64"},
      {{"icounter", "set", "k", "1.5"}, "VALUE is not an int64"},
      {{"icounter", "inc", "k", "--delta", "1.5"}, "--delta: not an int64"},
      {{"icounter", "inc", "k", "--delta", "ten"}, "--delta: not an int64"},
      {{"icounter", "inc", "k", "--delta"}, "--delta: missing value"},
      {{"icounter", "inc", "k", "--bogus"}, "unknown flag --bogus"},
      {{"icounter", "del", "k", "--lax"}, "icounter del: unknown flag --lax"},
      {{"icounter", "set", "k", "1", "--lax"}, "icounter set: unknown flag --lax"},
      {{"icounter", "get", "k", "--if", "ge:1"}, "icounter get: unknown flag --if"},
      {{"icounter", "get", "k", "--delta", "1"}, "icounter get: unknown flag --delta"},
      {{"icounter", "inc", "k", "--if", "between:1"}, "--if: expected OP:OPERAND"},
      {{"icounter", "inc", "k", "--if", "ge"}, "--if: expected OP:OPERAND"},
      {{"icounter", "inc", "k", "--lax=yes"}, "--lax takes no value"},
      {{"icounter", "inc"}, "icounter inc: expected KEY, got 0 argument(s)"},
      {{"icounter", "get"}, "icounter get: expected KEY"},
      {{"icounter", "del-on-instance"}, "icounter del-on-instance: expected KEY"},
      {{"icounter", "set", "k"}, "icounter set: expected KEY VALUE, got 1 argument(s)"},
      {{"icounter", "set-on-instance", "k"}, "icounter set-on-instance: expected KEY VALUE"},
      {{"icounter", "inc", "k", "extra"}, "icounter inc: expected KEY, got 2 argument(s)"},
      {{"icounter", "clear", "k"}, "icounter clear: expected no argument"},
      {{"icounter", "clear-on-instance", "k"}, "icounter clear-on-instance: expected no argument"},
      {{"icounter"}, "icounter: missing subcommand"},
      {{"icounter", "frobnicate", "k"}, "icounter: unknown subcommand 'frobnicate'"},
      {{"icounter", "set_on_instance", "k", "1"}, "unknown subcommand 'set_on_instance'"},
  };
  for (const auto& [args, message] : cases) {
    auto [code, out] = Cli(a, args);
    EXPECT_EQ(code, kExitUsage) << ::testing::PrintToString(args) << ": " << out;
    EXPECT_NE(out.find(message), std::string::npos)
        << ::testing::PrintToString(args) << ": " << out;
    EXPECT_NE(out.find("Usage: distkit"), std::string::npos) << out;
  }
  EXPECT_EQ(Cli(a, {"icounter", "inc", "k", "--delta", "0"}).second, Line(7, 7, 7, 7, true))
      << "no usage error reached the daemon";

  // Rejected by the daemon: the call failed, exit 2, `error: CODE: message`.
  auto r = Cli(a, {"icounter", "inc", "bad:key"});
  EXPECT_EQ(r.first, kExitCallFailed) << r.second;
  EXPECT_NE(r.second.find("error: INVALID_ARGUMENT"), std::string::npos) << r.second;
  r = Cli(a, {"icounter", "get", ""});
  EXPECT_EQ(r.first, kExitCallFailed) << r.second;
  EXPECT_NE(r.second.find("error: INVALID_ARGUMENT"), std::string::npos) << r.second;
  r = Cli(a, {"icounter", "clear", "--namespace", "bad:ns"});
  EXPECT_EQ(r.first, kExitCallFailed) << r.second;
  EXPECT_NE(r.second.find("error: INVALID_ARGUMENT"), std::string::npos) << r.second;
  // Nobody listening.
  r = Process::Run(DISTKIT_CLI_BIN,
                   {"--addr", "unix:" + redis_->dir() + "/nobody.sock", "icounter", "get", "k"},
                   10s);
  EXPECT_EQ(r.first, kExitCallFailed) << r.second;
  EXPECT_NE(r.second.find("error: UNAVAILABLE"), std::string::npos) << r.second;

  // Help (every command is implemented; ratelimit has its own e2e test).
  r = Cli(a, {"icounter", "--help"});
  EXPECT_EQ(r.first, kExitOk) << r.second;
  EXPECT_NE(r.second.find("icounter set-on-instance KEY VALUE"), std::string::npos) << r.second;
  EXPECT_NE(r.second.find("ratelimit inc KEY --rate R"), std::string::npos) << r.second;
  EXPECT_EQ(r.second.find("not implemented"), std::string::npos) << r.second;
  r = Cli(a, {"ratelimit", "inc", "k"});
  EXPECT_EQ(r.first, kExitUsage) << r.second;
  EXPECT_NE(r.second.find("ratelimit inc: --rate is required"), std::string::npos) << r.second;
}

}  // namespace
}  // namespace distkit
