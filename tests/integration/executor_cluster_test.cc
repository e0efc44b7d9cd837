// The Redis executor against a real local Redis Cluster (3 primaries + 3 replicas, started by
// the fixture) and a real TLS redis-server: mode detection, slot routing, SCAN over every
// primary, MOVED after a reshard, deterministic ASK and TRYAGAIN during a migration, NOSCRIPT
// after a failover, a killed primary, TLS with a good CA, a wrong CA and a client certificate.

#include <gtest/gtest.h>

#include <future>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "daemon/redis/executor.h"
#include "daemon/redis/redis_url.h"
#include "tests/support/process.h"
#include "tests/support/redis_cluster.h"
#include "tests/support/redis_process.h"
#include "tests/support/redis_server.h"

namespace distkit::redis {
namespace {

using distkit::testing::PollUntil;
using distkit::testing::RedisCluster;
using distkit::testing::RedisServer;
using namespace std::chrono_literals;

absl::StatusOr<Reply> Wait(std::future<absl::StatusOr<Reply>> f) {
  if (f.wait_for(20s) != std::future_status::ready) return absl::InternalError("hung");
  return f.get();
}

absl::StatusOr<Reply> RunCmd(Executor& ex, std::vector<std::string> argv) {
  auto p = std::make_shared<std::promise<absl::StatusOr<Reply>>>();
  auto f = p->get_future();
  ex.Command(std::move(argv), [p](absl::StatusOr<Reply> r) { p->set_value(std::move(r)); });
  return Wait(std::move(f));
}

// counter.lua: inc `key` by 1; the reply's second element is the new value.
absl::StatusOr<Reply> Inc(Executor& ex, std::string key) {
  auto p = std::make_shared<std::promise<absl::StatusOr<Reply>>>();
  auto f = p->get_future();
  ex.Script("counter", {std::move(key)}, {"test", "0", "inc", "", "0", "1"},
            [p](absl::StatusOr<Reply> r) { p->set_value(std::move(r)); });
  return Wait(std::move(f));
}

std::string ValueOf(const absl::StatusOr<Reply>& r) {
  if (!r.ok()) return r.status().ToString();
  if (r->type != Reply::Type::kArray || r->elements.size() < 2) return r->DebugString();
  return r->elements[1].str;
}

std::unique_ptr<Executor> MakeExecutor(std::vector<RedisEndpoint> seeds,
                                       RedisMode mode = RedisMode::kAuto,
                                       std::chrono::milliseconds timeout = 2000ms,
                                       TlsOptions tls = {}) {
  ExecutorOptions o;
  o.seeds = std::move(seeds);
  o.mode = mode;
  o.tls = std::move(tls);
  o.command_timeout = timeout;
  o.ping_interval = 100ms;
  o.unhealthy_after = 1000ms;
  o.max_backoff = 200ms;
  auto ex = std::make_unique<Executor>(o);
  ex->Start();
  return ex;
}

RedisEndpoint Tcp(int port) { return *ParseRedisUrl(absl::StrCat("redis://127.0.0.1:", port)); }

std::unique_ptr<Executor> ClusterExecutor(const RedisCluster& cluster,
                                          std::chrono::milliseconds timeout = 2000ms) {
  std::vector<RedisEndpoint> seeds;
  for (int p : cluster.primary_ports()) seeds.push_back(Tcp(p));
  auto ex = MakeExecutor(seeds, RedisMode::kAuto, timeout);
  auto mode = ex->AwaitMode(10s);
  EXPECT_TRUE(mode.ok() && *mode == RedisMode::kCluster) << mode.status();
  EXPECT_TRUE(PollUntil([&] { return ex->Healthy(); }, 10s));
  return ex;
}

// A hash tag "<name><i>" whose slot is served by the primary on `port`.
std::string TagOn(const RedisCluster& cluster, int port, const std::string& name) {
  for (int i = 0; i < 100000; ++i) {
    std::string tag = absl::StrCat(name, i);
    if (cluster.PortOfSlot(RedisCluster::KeySlot(tag)) == port) return tag;
  }
  ADD_FAILURE() << "no hash tag found on " << port;
  return name;
}

// A counter key ("dk:{<tag>}:c:ns:k", as core/redis_keys.h makes them) on the primary on `port`.
std::string KeyOn(const RedisCluster& cluster, int port, const std::string& name) {
  return absl::StrCat("dk:{", TagOn(cluster, port, name), "}:c:ns:k");
}

TEST(ExecutorCluster, DetectsTheClusterAndRoutesEveryKeyToItsPrimary) {
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  auto ex = ClusterExecutor(*cluster);
  EXPECT_EQ(ex->stats().nodes.load(), 3);
  for (int i = 0; i < 300; ++i) {
    const std::string key = absl::StrCat("route:", i);
    ASSERT_TRUE(RunCmd(*ex, {"SET", key, absl::StrCat(i)}).ok());
    const std::string hashed = absl::StrCat("dk:{", i, "}:c:ns:k");
    ASSERT_EQ(ValueOf(Inc(*ex, hashed)), "1") << hashed;
  }
  for (int i = 0; i < 300; ++i) {
    const std::string key = absl::StrCat("route:", i);
    // Straight to the owner, no redirect: the executor put it where the cluster says.
    EXPECT_EQ(cluster->Command(cluster->PortOfSlot(RedisCluster::KeySlot(key)), {"GET", key}),
              absl::StrCat(i));
    const std::string hashed = absl::StrCat("dk:{", i, "}:c:ns:k");
    EXPECT_EQ(
        cluster->Command(cluster->PortOfSlot(RedisCluster::KeySlot(hashed)), {"HGET", hashed, "v"}),
        "1");
  }
  EXPECT_EQ(ex->stats().moved.load(), 0u);
  EXPECT_EQ(ex->stats().ask.load(), 0u);
}

TEST(ExecutorCluster, ModeFollowsTheServerAndClusterModeRefusesAStandaloneRedis) {
  RedisServer::Options opt;
  opt.tcp = true;
  auto redis = RedisServer::Start(opt);
  ASSERT_TRUE(redis);
  auto autodetect = MakeExecutor({Tcp(redis->port())});
  auto mode = autodetect->AwaitMode(10s);
  ASSERT_TRUE(mode.ok()) << mode.status();
  EXPECT_EQ(*mode, RedisMode::kStandalone);
  EXPECT_TRUE(RunCmd(*autodetect, {"SET", "a", "1"}).ok());

  auto forced = MakeExecutor({Tcp(redis->port())}, RedisMode::kCluster);
  auto refused = forced->AwaitMode(10s);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("not a cluster node"), std::string::npos);
  auto r = RunCmd(*forced, {"GET", "a"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_FALSE(forced->Healthy());
}

TEST(ExecutorCluster, FirstSeedDownTheNextOneAnswers) {
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  const int dead = distkit::testing::FreePort();
  auto ex = MakeExecutor({Tcp(dead), Tcp(cluster->primary_ports()[1])});
  auto mode = ex->AwaitMode(10s);
  ASSERT_TRUE(mode.ok()) << mode.status();
  EXPECT_EQ(*mode, RedisMode::kCluster);
  EXPECT_TRUE(PollUntil([&] { return ex->Healthy(); }, 10s));
  EXPECT_EQ(ValueOf(Inc(*ex, "dk:{seed}:c:ns:k")), "1");
}

TEST(ExecutorCluster, ScanWalksEveryPrimary) {
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  auto ex = ClusterExecutor(*cluster);
  std::set<std::string> want;
  for (int i = 0; i < 500; ++i) {
    want.insert(absl::StrCat("scan:", i));
    ASSERT_TRUE(RunCmd(*ex, {"SET", absl::StrCat("scan:", i), "x"}).ok());
    ASSERT_TRUE(RunCmd(*ex, {"SET", absl::StrCat("other:", i), "x"}).ok());
  }
  std::set<std::string> got;
  std::string cursor = "0";
  int pages = 0;
  do {
    auto r = RunCmd(*ex, {"SCAN", cursor, "MATCH", "scan:*", "COUNT", "100"});
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->elements.size(), 2u) << r->DebugString();
    cursor = r->elements[0].str;
    for (const auto& k : r->elements[1].elements) got.insert(k.str);
    ASSERT_LT(++pages, 1000);
  } while (cursor != "0");
  EXPECT_EQ(got, want);
}

TEST(ExecutorCluster, MovedAfterAReshardIsFollowedAndTheMapRefreshed) {
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  auto ex = ClusterExecutor(*cluster);
  const auto primaries = cluster->primary_ports();
  const std::string key = KeyOn(*cluster, primaries[0], "moved");
  const int slot = RedisCluster::KeySlot(key);
  ASSERT_EQ(ValueOf(Inc(*ex, key)), "1");
  ASSERT_TRUE(cluster->MigrateSlot(slot, primaries[0], primaries[1]));
  EXPECT_EQ(ValueOf(Inc(*ex, key)), "2");  // the dedup marks and the value moved with the key
  EXPECT_GE(ex->stats().moved.load(), 1u);
  EXPECT_EQ(cluster->Command(primaries[1], {"HGET", key, "v"}), "2");
  // redis-cli --cluster reshard: 200 slots from the second primary to the third.
  ASSERT_TRUE(cluster->Reshard(200, primaries[1], primaries[2]));
  int checked = 0;
  for (int i = 0; i < 2000 && checked < 50; ++i) {
    const std::string k = absl::StrCat("dk:{r", i, "}:c:ns:k");
    if (cluster->PortOfSlot(RedisCluster::KeySlot(k)) != primaries[2]) continue;
    ASSERT_EQ(ValueOf(Inc(*ex, k)), "1") << k;
    ++checked;
  }
  EXPECT_GT(checked, 0);
  const uint64_t refreshes = ex->stats().topology_refreshes.load();
  EXPECT_GE(refreshes, 2u);
}

TEST(ExecutorCluster, AskDuringAMigrationGoesToTheImportingNodeWithoutChangingTheMap) {
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  auto ex = ClusterExecutor(*cluster);
  const auto primaries = cluster->primary_ports();
  const std::string key = KeyOn(*cluster, primaries[0], "ask");
  const int slot = RedisCluster::KeySlot(key);
  ASSERT_TRUE(cluster->BeginMigration(slot, primaries[0], primaries[1]));
  // The key does not exist on the migrating node: it answers ASK, the executor asks the
  // importing node (ASKING + EVALSHA) and the script creates the key there.
  EXPECT_EQ(ValueOf(Inc(*ex, key)), "1");
  EXPECT_GE(ex->stats().ask.load(), 1u);
  EXPECT_EQ(ex->stats().moved.load(), 0u);
  // Not on the migrating node: it answers ASK for it too.
  EXPECT_EQ(cluster->Command(primaries[0], {"EXISTS", key}).substr(0, 4), "ASK ");
  EXPECT_EQ(ValueOf(Inc(*ex, key)), "2");  // ASK again: the map still says primaries[0]
  EXPECT_EQ(cluster->PortOfSlot(slot), primaries[0]);
  ASSERT_TRUE(cluster->FinishMigration(slot, primaries[0], primaries[1]));
  EXPECT_EQ(ValueOf(Inc(*ex, key)), "3");
  EXPECT_EQ(cluster->Command(primaries[1], {"HGET", key, "v"}), "3");
}

TEST(ExecutorCluster, TryagainDuringAMigrationIsRetriedUntilTheSlotSettles) {
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  auto ex = ClusterExecutor(*cluster, 5000ms);
  const auto primaries = cluster->primary_ports();
  const std::string tag = TagOn(*cluster, primaries[0], "try");
  const std::string a = absl::StrCat("{", tag, "}a");
  const std::string b = absl::StrCat("{", tag, "}b");
  const int slot = RedisCluster::KeySlot(a);
  ASSERT_TRUE(RunCmd(*ex, {"SET", a, "1"}).ok());
  ASSERT_TRUE(RunCmd(*ex, {"SET", b, "2"}).ok());
  ASSERT_TRUE(cluster->BeginMigration(slot, primaries[0], primaries[1]));
  // One of the two keys moved: a multi-key command on the source answers TRYAGAIN.
  ASSERT_EQ(cluster->Command(primaries[0],
                             {"MIGRATE", "127.0.0.1", absl::StrCat(primaries[1]), a, "0", "5000"}),
            "OK");
  ASSERT_EQ(cluster->Command(primaries[0], {"MGET", a, b}).substr(0, 8), "TRYAGAIN");
  auto finisher = std::async(std::launch::async, [&] {
    // Finish once the executor has retried at least once.
    PollUntil([&] { return ex->stats().tryagain.load() > 0; }, 10s);
    return cluster->FinishMigration(slot, primaries[0], primaries[1]);
  });
  auto r = RunCmd(*ex, {"MGET", a, b});
  ASSERT_TRUE(finisher.get());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->is_error()) << r->DebugString();
  ASSERT_EQ(r->elements.size(), 2u);
  EXPECT_EQ(r->elements[0].str, "1");
  EXPECT_EQ(r->elements[1].str, "2");
  EXPECT_GE(ex->stats().tryagain.load(), 1u);
}

TEST(ExecutorCluster, ScriptsWorkAfterAFailoverAndNoscriptResendsTheBody) {
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  auto ex = ClusterExecutor(*cluster);
  const int old_primary = cluster->primary_ports()[0];
  const std::string key = KeyOn(*cluster, old_primary, "fo");
  ASSERT_EQ(ValueOf(Inc(*ex, key)), "1");
  const auto replicas = cluster->ReplicasOf(old_primary);
  ASSERT_FALSE(replicas.empty());
  ASSERT_TRUE(cluster->Failover(replicas[0]));
  ASSERT_EQ(cluster->PortOfSlot(RedisCluster::KeySlot(key)), replicas[0]);
  EXPECT_EQ(ValueOf(Inc(*ex, key)), "2");  // MOVED (or a refreshed map) to the new primary
  // A script cache that is empty on the new primary: NOSCRIPT, the body is sent once.
  ASSERT_EQ(cluster->Command(replicas[0], {"SCRIPT", "FLUSH"}), "OK");
  const uint64_t before = ex->stats().noscript_retries.load();
  EXPECT_EQ(ValueOf(Inc(*ex, key)), "3");
  EXPECT_EQ(ex->stats().noscript_retries.load(), before + 1);
}

TEST(ExecutorCluster, KilledPrimaryFailsItsSlotsFastOthersKeepWorkingThenTheReplicaServes) {
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  auto ex = ClusterExecutor(*cluster, 1000ms);
  const auto primaries = cluster->primary_ports();
  const std::string lost = KeyOn(*cluster, primaries[0], "lost");
  const std::string kept = KeyOn(*cluster, primaries[1], "kept");
  ASSERT_EQ(ValueOf(Inc(*ex, lost)), "1");
  ASSERT_EQ(ValueOf(Inc(*ex, kept)), "1");
  cluster->StopNode(primaries[0]);
  // Lost slots: UNAVAILABLE (never a hang); the other primaries' keys keep working meanwhile.
  ASSERT_TRUE(PollUntil(
      [&] { return Inc(*ex, lost).status().code() == absl::StatusCode::kUnavailable; }, 10s));
  EXPECT_EQ(ValueOf(Inc(*ex, kept)), "2");
  ASSERT_TRUE(cluster->WaitAgreed());  // a replica was promoted
  ASSERT_TRUE(PollUntil([&] { return Inc(*ex, lost).ok(); }, 15s));
  EXPECT_TRUE(PollUntil([&] { return ex->Healthy(); }, 10s));
  EXPECT_TRUE(PollUntil([&] { return ex->stats().nodes.load() == 3; }, 10s))
      << ex->stats().nodes.load();
}

TEST(ExecutorCluster, MutualTlsClusterRoutesAndFollowsMovedToTlsPorts) {
  RedisCluster::Options opt;
  opt.tls = true;
  opt.tls_auth_clients = true;
  auto cluster = RedisCluster::Start(opt);
  ASSERT_TRUE(cluster);
  auto seeds = ParseRedisSeeds(cluster->tls_seeds_url());
  ASSERT_TRUE(seeds.ok()) << seeds.status();
  TlsOptions tls;
  tls.ca_file = cluster->certs().ca_cert;
  tls.cert_file = cluster->certs().client_cert;
  tls.key_file = cluster->certs().client_key;
  auto ex = MakeExecutor(*seeds, RedisMode::kCluster, 2000ms, tls);
  auto mode = ex->AwaitMode(10s);
  ASSERT_TRUE(mode.ok()) << mode.status();
  EXPECT_EQ(*mode, RedisMode::kCluster);
  ASSERT_TRUE(PollUntil([&] { return ex->Healthy(); }, 10s));
  EXPECT_EQ(ex->stats().nodes.load(), 3);
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(ValueOf(Inc(*ex, absl::StrCat("dk:{tls", i, "}:c:ns:k"))), "1");
  }
  const auto primaries = cluster->primary_ports();
  const std::string key = KeyOn(*cluster, primaries[0], "tlsmoved");
  ASSERT_EQ(ValueOf(Inc(*ex, key)), "1");
  ASSERT_TRUE(cluster->MigrateSlot(RedisCluster::KeySlot(key), primaries[0], primaries[1]));
  EXPECT_EQ(ValueOf(Inc(*ex, key)), "2");  // MOVED names the TLS port; we follow it over TLS
  EXPECT_GE(ex->stats().moved.load(), 1u);
}

TEST(ExecutorCluster, ReadinessTurnsFalseOnlyAfterSlotsStayUnservedAndComesBack) {
  RedisCluster::Options opt;
  opt.replicas_per_primary = 0;  // nobody takes over: the lost slots stay unserved
  auto cluster = RedisCluster::Start(opt);
  ASSERT_TRUE(cluster);
  auto ex = ClusterExecutor(*cluster, 1000ms);
  const int lost = cluster->primary_ports()[2];
  const std::string key = KeyOn(*cluster, lost, "ready");
  ASSERT_EQ(ValueOf(Inc(*ex, key)), "1");
  cluster->StopNode(lost);
  // Commands for the lost slots fail at once; readiness holds for the grace period
  // (uncovered_after, 5 s) and then turns NOT_SERVING while the slots stay unserved.
  ASSERT_TRUE(PollUntil(
      [&] { return Inc(*ex, key).status().code() == absl::StatusCode::kUnavailable; }, 10s));
  EXPECT_TRUE(PollUntil([&] { return !ex->Healthy(); }, 20s));
  ASSERT_TRUE(cluster->RestartNode(lost));
  EXPECT_TRUE(PollUntil([&] { return ex->Healthy(); }, 20s));
  // (The node comes back empty: the fixture keeps no data across a restart.)
  EXPECT_TRUE(PollUntil([&] { return Inc(*ex, key).ok(); }, 10s));
}

// ---------------------------------------------------------------- TLS (standalone)

TEST(ExecutorTls, GoodCaWorksWrongCaIsRefusedClientCertificates) {
  RedisServer::Options opt;
  opt.tls = true;
  auto redis = RedisServer::Start(opt);
  ASSERT_TRUE(redis);
  auto ep = ParseRedisUrl(redis->tls_url());
  ASSERT_TRUE(ep.ok()) << ep.status();
  ASSERT_TRUE(ep->tls);

  TlsOptions good;
  good.ca_file = redis->certs().ca_cert;
  auto ex = MakeExecutor({*ep}, RedisMode::kAuto, 2000ms, good);
  auto mode = ex->AwaitMode(10s);
  ASSERT_TRUE(mode.ok()) << mode.status();
  EXPECT_EQ(*mode, RedisMode::kStandalone);
  EXPECT_EQ(ValueOf(Inc(*ex, "tls")), "1");
  EXPECT_TRUE(PollUntil([&] { return ex->Healthy(); }, 10s));

  TlsOptions wrong;
  wrong.ca_file = redis->certs().other_ca_cert;
  auto refused = MakeExecutor({*ep}, RedisMode::kAuto, 500ms, wrong);
  EXPECT_EQ(refused->AwaitMode(1500ms).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(Inc(*refused, "tls").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(refused->Healthy());
  EXPECT_GE(refused->stats().reconnects.load(), 1u);

  TlsOptions wrong_name = good;
  wrong_name.server_name = "not-the-server.example";
  auto misnamed = MakeExecutor({*ep}, RedisMode::kAuto, 500ms, wrong_name);
  EXPECT_EQ(misnamed->AwaitMode(1500ms).status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(ExecutorTls, MutualTls) {
  RedisServer::Options opt;
  opt.tls = true;
  opt.tls_auth_clients = true;
  auto redis = RedisServer::Start(opt);
  ASSERT_TRUE(redis);
  auto ep = *ParseRedisUrl(redis->tls_url());
  TlsOptions no_cert;
  no_cert.ca_file = redis->certs().ca_cert;
  auto anonymous = MakeExecutor({ep}, RedisMode::kAuto, 500ms, no_cert);
  EXPECT_EQ(anonymous->AwaitMode(1500ms).status().code(), absl::StatusCode::kDeadlineExceeded);

  TlsOptions with_cert = no_cert;
  with_cert.cert_file = redis->certs().client_cert;
  with_cert.key_file = redis->certs().client_key;
  auto ex = MakeExecutor({ep}, RedisMode::kAuto, 2000ms, with_cert);
  ASSERT_TRUE(ex->AwaitMode(10s).ok());
  EXPECT_EQ(ValueOf(Inc(*ex, "mtls")), "1");

  TlsOptions other_cert = no_cert;
  other_cert.cert_file = redis->certs().other_client_cert;
  other_cert.key_file = redis->certs().other_client_key;
  auto untrusted = MakeExecutor({ep}, RedisMode::kAuto, 500ms, other_cert);
  EXPECT_EQ(untrusted->AwaitMode(1500ms).status().code(), absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace distkit::redis
