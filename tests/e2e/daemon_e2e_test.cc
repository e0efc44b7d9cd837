// End to end: the real distkitd binary (and the distkit CLI) as processes against a real
// redis-server or Redis Cluster (DaemonE2E: both). Several daemons on one Redis, Redis paused and
// restarted under load, SIGTERM with pending lax deltas, configuration errors, the health probe.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "distkit/client.h"
#include "distkit/v1/counter.grpc.pb.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"
#include "tests/support/redis_backend.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::Daemon;
using testing::PollUntil;
using testing::Process;
using testing::RedisBackend;
using testing::RedisServer;

// A counter's value as a daemon reads it, or the call's error.
absl::StatusOr<int64_t> Get(Daemon& d, const std::string& key,
                            v1::Consistency c = v1::CONSISTENCY_STRICT) {
  v1::GetResponse resp;
  auto s = d.CounterGet(key, c, &resp);
  if (!s.ok())
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  return resp.value();
}

// The value Redis holds for counter `key` of the default namespace, read with redis-cli-like
// access (SCAN for the key: the test does not re-implement the hash tag).
int64_t RedisValue(const RedisBackend& redis, const std::string& key) {
  std::string scan =
      redis.Command({"SCAN", "0", "MATCH", "dk:{*}:c:distkit:" + key, "COUNT", "100000"});
  // Reply formatted as "cursor,key"; one key expected.
  auto comma = scan.find(',');
  if (comma == std::string::npos) return 0;
  std::string name = scan.substr(comma + 1);
  std::string v = redis.Command({"HGET", name, "v"});
  return v == "(nil)" ? 0 : std::stoll(v);
}

// On both backends; the tests that stop, pause or restart the one redis-server (no faithful
// cluster equivalent: the cluster fixture is shared by the suite) are TEST(E2E, ...) below.
class DaemonE2E : public testing::RedisBackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, DaemonE2E, testing::kAllBackends, testing::BackendParamName);

TEST_P(DaemonE2E, TwoDaemonsShareCountersStrictAndLax) {
  RedisBackend& redis = this->redis();
  Daemon a(redis, "a"), b(redis, "b");
  ASSERT_TRUE(a.WaitServing());
  ASSERT_TRUE(b.WaitServing());
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(a.CounterInc("k", 1, i % 2 ? v1::CONSISTENCY_LAX : v1::CONSISTENCY_STRICT).ok());
    ASSERT_TRUE(b.CounterInc("k", 2, i % 2 ? v1::CONSISTENCY_STRICT : v1::CONSISTENCY_LAX).ok());
  }
  EXPECT_TRUE(PollUntil([&] { return Get(a, "k").value_or(-1) == 300; }, 10s));
  EXPECT_TRUE(PollUntil([&] { return Get(b, "k", v1::CONSISTENCY_LAX).value_or(-1) == 300; }, 10s));
  EXPECT_EQ(RedisValue(redis, "k"), 300);
}

TEST_P(DaemonE2E, SigtermFlushesPendingLaxDeltasAndExitsZero) {
  RedisBackend& redis = this->redis();
  Daemon a(redis, "a", {"--flush_interval_ms", "600000"});  // never flushes on its own
  ASSERT_TRUE(a.WaitServing());
  for (int i = 0; i < 1000; ++i)
    ASSERT_TRUE(a.CounterInc("k" + std::to_string(i % 10), 1, v1::CONSISTENCY_LAX).ok());
  EXPECT_EQ(RedisValue(redis, "k0"), 0) << "nothing flushed before SIGTERM";
  EXPECT_EQ(a.Stop(SIGTERM, 20s), 0) << a.Log();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(RedisValue(redis, "k" + std::to_string(i)), 100);
  struct stat st;
  EXPECT_NE(stat(a.socket().c_str(), &st), 0) << "socket removed on exit";
}

TEST(E2E, NoAcknowledgedLaxIncrementIsLostOrDoubledAcrossRedisPausesAndRestarts) {
  // Redis restarts lose data without persistence: use an AOF so the restart keeps it.
  RedisServer::Options opt;
  opt.extra_args = {"--appendonly", "yes", "--appendfsync", "always"};
  auto redis = RedisServer::Start(opt);
  ASSERT_TRUE(redis);
  Daemon a(*redis, "a", {"--redis_timeout_ms", "200", "--flush_interval_ms", "5"});
  ASSERT_TRUE(a.WaitServing());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> acked{0};
  std::thread load([&] {
    while (!stop) {
      if (a.CounterInc("eo", 1, v1::CONSISTENCY_LAX, nullptr, 2s).ok()) acked++;
    }
  });
  ASSERT_TRUE(PollUntil([&] { return acked.load() > 200; }, 10s));
  redis->Pause();  // commands in flight time out: outcome unknown, retried with the same seq
  EXPECT_TRUE(PollUntil([&] { return a.Health("distkit.v1.CounterService") == 2; }, 10s));
  const int64_t during_pause = acked.load();
  EXPECT_TRUE(PollUntil([&] { return acked.load() > during_pause + 100; }, 10s))
      << "LAX keeps answering while Redis is paused";
  redis->Resume();
  EXPECT_TRUE(a.WaitServing());
  redis->Restart();
  EXPECT_TRUE(a.WaitServing());
  const int64_t after_restart = acked.load();
  EXPECT_TRUE(PollUntil([&] { return acked.load() > after_restart + 100; }, 10s));
  stop = true;
  load.join();
  ASSERT_EQ(a.Stop(SIGTERM, 20s), 0) << a.Log();
  EXPECT_EQ(RedisValue(*redis, "eo"), acked.load());
}

TEST(E2E, StrictFailsFastWhileRedisIsDownAndRecovers) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  Daemon a(*redis, "a", {"--redis_timeout_ms", "300"});
  ASSERT_TRUE(a.WaitServing());
  redis->Pause();
  auto s = a.CounterInc("k", 1, v1::CONSISTENCY_STRICT, nullptr, 10s);
  EXPECT_TRUE(s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
              s.error_code() == grpc::StatusCode::UNAVAILABLE)
      << s.error_code() << " " << s.error_message();
  EXPECT_NE(s.error_message().find("Redis"), std::string::npos)
      << "the daemon answered, not the client deadline";
  EXPECT_EQ(a.Health(""), 1) << "liveness stays SERVING";
  redis->Resume();
  EXPECT_TRUE(PollUntil([&] { return a.CounterInc("k", 1, v1::CONSISTENCY_STRICT).ok(); }, 10s));
  redis->Stop();
  auto down = a.CounterInc("k", 1, v1::CONSISTENCY_STRICT);
  EXPECT_EQ(down.error_code(), grpc::StatusCode::UNAVAILABLE) << down.error_message();
  EXPECT_TRUE(PollUntil([&] { return a.Health("distkit.v1.CounterService") == 2; }, 10s));
  redis->Restart();
  EXPECT_TRUE(a.WaitServing());
  EXPECT_TRUE(a.CounterInc("k", 1, v1::CONSISTENCY_STRICT).ok());
}

TEST(E2E, OversizedRequestIsRefusedBeforeParsingAndTheDaemonKeepsServing) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  Daemon a(*redis, "big");
  ASSERT_TRUE(a.WaitServing());
  // 7 MB: above the receive limit (just above the largest legal batch, ≈ 5.5 MB); few items, so
  // it would be cheap to parse: the transport, not our validation, must refuse it.
  const std::vector<CounterOp> ops(7, CounterOp::Inc(std::string(1 << 20, 'k'), 0));
  const absl::Status s = a.NewClient("", 10s)->Batch(ops).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  v1::IncResponse inc;
  ASSERT_TRUE(a.CounterInc("after", 3, v1::CONSISTENCY_STRICT, &inc).ok());
  EXPECT_EQ(inc.value(), 3);
}

TEST(E2E, ADaemonThatCannotListenLeavesNoInstanceRegistered) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  // A listen address in a directory that does not exist: the daemon connects to Redis, then
  // cannot bind and exits.
  auto [code, out] = Process::Run(DISTKIT_DAEMON_BIN,
                                  {"--listen", "unix:" + redis->dir() + "/no/such/dir/x.sock",
                                   "--redis", redis->url(), "--instance_id", "nobind"},
                                  20s);
  EXPECT_NE(code, 0) << out;
  EXPECT_EQ(redis->Command({"ZSCORE", "dk:{live}:instances", "nobind"}), "(nil)") << out;
  EXPECT_EQ(redis->Command({"HGET", "dk:{live}:incarnations", "nobind"}), "(nil)") << out;
}

TEST(E2E, TheSocketIsCreatedWithItsFinalMode) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  const std::string sock = redis->dir() + "/mode.sock";
  Daemon d(sock, {"--listen", "unix:" + sock, "--redis", redis->url(), "--socket_mode", "0600"},
           {});
  ASSERT_TRUE(d.started());
  // Every observation of the socket, from the first one on, has the final mode.
  struct stat st {};
  std::vector<unsigned> seen;
  ASSERT_TRUE(PollUntil(
      [&] {
        if (stat(sock.c_str(), &st) != 0) return false;
        seen.push_back(st.st_mode & 0777);
        return seen.size() >= 200;
      },
      20s));
  for (unsigned m : seen) EXPECT_EQ(m, 0600u);
}

TEST(E2E, InvalidConfigurationExitsTwoAndNamesTheFlag) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--flush_interval_ms", "0"},
                                             {"--instance_id=bad id"},
                                             {"--redis", "redis://x:1,unix:/x.sock"},
                                             {"--redis_mode", "sentinel"},
                                             {"--redis_tls_ca=/nonexistent/ca.pem"},
                                             {"--hard_limit_factor", "0.5"}}) {
    auto [code, out] = Process::Run(DISTKIT_DAEMON_BIN, args, 10s);
    EXPECT_EQ(code, 2) << args[0] << ": " << out;
    const std::string flag = args[0].substr(0, args[0].find('='));
    EXPECT_NE(out.find(flag), std::string::npos) << out;
  }
  auto [code, out] = Process::Run(DISTKIT_DAEMON_BIN, {"--no_such_flag"}, 10s);
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("no_such_flag"), std::string::npos) << out;
}

TEST_P(DaemonE2E, EnvironmentConfiguresAndCommandLineWins) {
  RedisBackend& redis = this->redis();
  const std::string sock = redis.dir() + "/env.sock";
  Daemon p(sock, {"--listen", "unix:" + sock},
           {"DISTKIT_REDIS=" + redis.url(), "DISTKIT_LISTEN=unix:/nonexistent/dir/x.sock"});
  ASSERT_TRUE(p.started());
  ASSERT_TRUE(p.WaitSocket()) << p.Log();
  EXPECT_TRUE(p.WaitServing("distkit.v1.CounterService")) << p.Log();
  struct stat st;
  ASSERT_EQ(stat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u) << "socket mode";
}

TEST_P(DaemonE2E, SocketOfARunningDaemonIsNotStolen) {
  RedisBackend& redis = this->redis();
  Daemon a(redis, "a");
  ASSERT_TRUE(a.WaitServing());
  auto [code, out] = Process::Run(DISTKIT_DAEMON_BIN,
                                  {"--listen", "unix:" + a.socket(), "--redis", redis.url()}, 10s);
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("another process"), std::string::npos) << out;
  EXPECT_EQ(a.Health(""), 1);
  // A stale socket file (daemon killed) is replaced by the next daemon.
  a.Stop(SIGKILL, 5s);
  Daemon b(redis, "a");
  EXPECT_TRUE(b.WaitServing());
}

TEST_P(DaemonE2E, CliHealthProbeAndCounterCommands) {
  Daemon a(redis(), "a");
  ASSERT_TRUE(a.WaitServing());
  const std::string addr = a.addr();
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--addr", addr});
    return Process::Run(DISTKIT_CLI_BIN, args, 10s);
  };
  EXPECT_EQ(run({"health"}).first, 0);
  EXPECT_EQ(run({"health", "--service", "distkit.v1.CounterService"}).first, 0);
  auto inc = run({"counter", "inc", "clik", "--delta", "5"});
  EXPECT_EQ(inc.first, 0) << inc.second;
  EXPECT_NE(inc.second.find("5"), std::string::npos) << inc.second;
  auto get = run({"--json", "counter", "get", "clik"});
  EXPECT_EQ(get.first, 0) << get.second;
  EXPECT_NE(get.second.find("5"), std::string::npos) << get.second;
  EXPECT_NE(run({"counter", "inc", "bad:key"}).first, 0);
  // Redis down: standalone only (the cluster is shared by the suite; stopping every node has no
  // cheap faithful equivalent).
  if (RedisServer* server = standalone()) {
    server->Stop();
    EXPECT_TRUE(PollUntil(
        [&] {
          return run({"health", "--service", "distkit.v1.CounterService"}).first == 1;
        },
        10s));
    EXPECT_EQ(run({"health"}).first, 0) << "liveness does not depend on Redis";
  }
  a.Stop(SIGKILL, 5s);
  EXPECT_EQ(run({"health"}).first, 1);
}

// Instance-counter Inc/Get on a daemon (cumulative, or -1 on error).
int64_t ICInc(Daemon& d, const std::string& key, int64_t delta) {
  const absl::StatusOr<InstanceValue> r = d.NewClient("", 5s)->InstanceInc(key, delta);
  return r.ok() ? r->cumulative : -1;
}
int64_t ICGet(Daemon& d, const std::string& key) {
  const absl::StatusOr<InstanceValue> r = d.NewClient("", 5s)->InstanceGet(key);
  return r.ok() ? r->cumulative : -1;
}

TEST_P(DaemonE2E, InstanceCountersSigtermRemovesSlicesAndDeregisters) {
  RedisBackend& redis = this->redis();
  Daemon a(redis, "a", {"--instance_id", "ida"}), b(redis, "b", {"--instance_id", "idb"});
  ASSERT_TRUE(a.WaitServing("distkit.v1.InstanceCounterService"));
  ASSERT_TRUE(b.WaitServing("distkit.v1.InstanceCounterService"));
  ASSERT_EQ(ICInc(a, "k", 40), 40);
  ASSERT_EQ(ICInc(b, "k", 60), 100);
  EXPECT_EQ(a.Stop(SIGTERM, 15s), 0) << a.Log();
  EXPECT_EQ(ICGet(b, "k"), 60);  // at once, not after the threshold
  EXPECT_EQ(redis.Command({"ZSCORE", "dk:{live}:instances", "ida"}), "(nil)");
  EXPECT_EQ(redis.Command({"HGET", "dk:{live}:incarnations", "ida"}), "(nil)");
}

TEST_P(DaemonE2E, InstanceCountersSigkilledDaemonIsReaped) {
  RedisBackend& redis = this->redis();
  const std::vector<std::string> fast = {"--dead_instance_threshold_ms", "300"};
  Daemon a(redis, "a", fast), b(redis, "b", fast);
  ASSERT_TRUE(a.WaitServing("distkit.v1.InstanceCounterService"));
  ASSERT_TRUE(b.WaitServing("distkit.v1.InstanceCounterService"));
  ASSERT_EQ(ICInc(a, "k", 40), 40);
  ASSERT_EQ(ICInc(b, "k", 60), 100);
  a.Stop(SIGKILL, 5s);
  const auto killed = std::chrono::steady_clock::now();
  // threshold + max(1 s, threshold/10) after the last heartbeat, plus scheduling slack.
  EXPECT_TRUE(PollUntil([&] { return ICGet(b, "k") == 60; }, 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - killed, 4s);  // bound 1.3 s + load slack
}

}  // namespace
}  // namespace distkit
