// The real distkitd binary against a real Redis Cluster and TLS redis-servers: the mode is
// detected, a contradicting --redis_mode exits 2 with a message, a wrong CA leaves the daemon
// running but NOT_SERVING with the reason in its log, mutual TLS works, cluster metrics exist.

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"
#include "tests/support/redis_cluster.h"
#include "tests/support/redis_server.h"

namespace distkit::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kCounters[] = "distkit.v1.CounterService";

TEST(RedisModesE2E, ClusterModeAgainstAStandaloneRedisExitsTwoSayingSo) {
  RedisServer::Options opt;
  opt.tcp = true;
  auto redis = RedisServer::Start(opt);
  ASSERT_TRUE(redis);
  auto [code, out] = Process::Run(DISTKIT_DAEMON_BIN,
                                  {"--listen", "unix:" + redis->dir() + "/m.sock", "--redis",
                                   redis->tcp_url(), "--redis_mode", "cluster"},
                                  20s);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("not a cluster node"), std::string::npos) << out;
}

TEST(RedisModesE2E, AutoDetectsTheClusterAndServesEveryService) {
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  const std::string sock = cluster->dir() + "/c.sock";
  Daemon d(sock, {"--listen", "unix:" + sock, "--redis", cluster->seeds_url()}, {});
  ASSERT_TRUE(d.started());
  ASSERT_TRUE(d.WaitServing(kCounters)) << d.Log();
  EXPECT_NE(d.Log().find("Redis mode: cluster"), std::string::npos) << d.Log();
  v1::IncResponse inc;
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(d.CounterInc(absl::StrCat("k", i), 2, v1::CONSISTENCY_STRICT, &inc).ok());
    EXPECT_EQ(inc.value(), 2);
  }
  v1::RateLimitIncResponse rl;
  EXPECT_TRUE(d.RateLimitInc("r", 5, 1, v1::PROVIDER_REDIS, v1::STRATEGY_ABSOLUTE, &rl).ok());
  EXPECT_TRUE(rl.allowed());
  // The keys are spread over the three primaries.
  int primaries_with_keys = 0;
  for (int port : cluster->primary_ports()) {
    if (cluster->Command(port, {"DBSIZE"}) != "0") ++primaries_with_keys;
  }
  EXPECT_EQ(primaries_with_keys, 3);
  EXPECT_EQ(d.Stop(SIGTERM, 20s), 0) << d.Log();
}

TEST(RedisModesE2E, WrongCaKeepsTheDaemonUpButNotServingAndSaysWhy) {
  RedisServer::Options opt;
  opt.tls = true;
  auto redis = RedisServer::Start(opt);
  ASSERT_TRUE(redis);
  const std::string sock = redis->dir() + "/t.sock";
  Daemon d(sock,
           {"--listen", "unix:" + sock, "--redis", redis->tls_url(), "--redis_tls_ca",
            redis->certs().other_ca_cert, "--redis_timeout_ms", "300"},
           {});
  ASSERT_TRUE(d.started());
  ASSERT_TRUE(d.WaitServing("")) << d.Log();     // the process is up
  EXPECT_EQ(d.Health(kCounters), 2) << d.Log();  // NOT_SERVING: Redis is not reachable
  EXPECT_TRUE(PollUntil(
      [&] { return d.Log().find("certificate verify failed") != std::string::npos; }, 10s))
      << d.Log();
  v1::IncResponse inc;
  EXPECT_EQ(d.CounterInc("k", 1, v1::CONSISTENCY_STRICT, &inc).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(d.CounterInc("k", 1, v1::CONSISTENCY_LAX, &inc).ok());  // LAX answers from memory
}

TEST(RedisModesE2E, MutualTlsServes) {
  RedisServer::Options opt;
  opt.tls = true;
  opt.tls_auth_clients = true;
  auto redis = RedisServer::Start(opt);
  ASSERT_TRUE(redis);
  const std::string sock = redis->dir() + "/mt.sock";
  Daemon d(sock,
           {"--listen", "unix:" + sock, "--redis", redis->tls_url(), "--redis_tls_ca",
            redis->certs().ca_cert, "--redis_tls_cert", redis->certs().client_cert,
            "--redis_tls_key", redis->certs().client_key, "--redis_tls_server_name", "localhost"},
           {});
  ASSERT_TRUE(d.started());
  ASSERT_TRUE(d.WaitServing(kCounters)) << d.Log();
  v1::IncResponse inc;
  ASSERT_TRUE(d.CounterInc("k", 7, v1::CONSISTENCY_STRICT, &inc).ok());
  EXPECT_EQ(inc.value(), 7);
  EXPECT_TRUE(d.CounterInc("k", 1, v1::CONSISTENCY_LAX, &inc).ok());
  // The LAX increment reaches Redis over TLS (a STRICT Get reads Redis).
  v1::GetResponse get;
  EXPECT_TRUE(PollUntil(
      [&] { return d.CounterGet("k", v1::CONSISTENCY_STRICT, &get).ok() && get.value() == 8; },
      10s))
      << get.value();
  EXPECT_EQ(d.Stop(SIGTERM, 20s), 0) << d.Log();
}

}  // namespace
}  // namespace distkit::testing
