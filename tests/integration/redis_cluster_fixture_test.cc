// The test fixtures for issue #10 against real servers: RedisCluster (a local 3 + 3 cluster:
// slots, MOVED, ASK, migrations, failovers, a killed primary) and RedisServer with TLS (good CA,
// wrong CA, client certificates), checked with redis-cli and plain hiredis.

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/redis_cluster.h"
#include "tests/support/redis_server.h"

namespace distkit::testing {
namespace {

using namespace std::chrono_literals;

// A port other than `port` among `ports`.
int OtherThan(const std::vector<int>& ports, int port) {
  for (int p : ports) {
    if (p != port) return p;
  }
  return 0;
}

// A key whose cluster slot is `slot` (slots are uniform over short keys: ~16k tries on average).
std::string KeyInSlot(int slot) {
  for (int i = 0; i < 10'000'000; ++i) {
    std::string key = "dk:k" + std::to_string(i);
    if (RedisCluster::KeySlot(key) == slot) return key;
  }
  ADD_FAILURE() << "no key found for slot " << slot;
  return "";
}

TEST(RedisClusterKeySlot, KnownValues) {
  // CRC16/XMODEM("123456789") = 0x31C3, the check value of the Redis Cluster specification.
  EXPECT_EQ(RedisCluster::KeySlot("123456789"), 0x31C3);
  EXPECT_EQ(RedisCluster::KeySlot("foo"), 12182);
  EXPECT_EQ(RedisCluster::KeySlot(""), 0);
  // Hash tags: the first {...} with something inside decides; "{}" and an unclosed "{" do not.
  EXPECT_EQ(RedisCluster::KeySlot("{user1000}.following"), RedisCluster::KeySlot("user1000"));
  EXPECT_EQ(RedisCluster::KeySlot("foo{}{bar}"), RedisCluster::KeySlot("foo{}{bar}"));
  EXPECT_NE(RedisCluster::KeySlot("foo{}{bar}"), RedisCluster::KeySlot("bar"));
  EXPECT_EQ(RedisCluster::KeySlot("foo{{bar}}zap"), RedisCluster::KeySlot("{bar"));
  EXPECT_EQ(RedisCluster::KeySlot("foo{bar}{zap}"), RedisCluster::KeySlot("bar"));
}

TEST(RedisClusterFixture, StartFailureIsATestFailureWithTheLog) {
  EXPECT_NONFATAL_FAILURE(
      EXPECT_EQ(RedisCluster::Start(RedisCluster::Options{3, 1, {"--no-such-option", "1"}}),
                nullptr),
      "Bad directive or wrong number of arguments");
}

TEST(RedisClusterFixture, StartsRoutesAndAnswersMoved) {
  const auto started = std::chrono::steady_clock::now();
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  std::cerr << "cluster start-up: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - started)
                   .count()
            << " ms\n";
  ASSERT_EQ(cluster->ports().size(), 6u);
  const std::vector<int> primaries = cluster->primary_ports();
  ASSERT_EQ(primaries.size(), 3u);
  for (int p : primaries) {
    EXPECT_EQ(cluster->ReplicasOf(p).size(), 1u) << p;
    EXPECT_NE(cluster->seeds_url().find("redis://127.0.0.1:" + std::to_string(p)),
              std::string::npos);
  }

  // KeySlot agrees with the server's CLUSTER KEYSLOT, hash tags included.
  std::vector<std::string> keys = {"a",
                                   "b",
                                   "foo",
                                   "bar",
                                   "counter:1",
                                   "{}",
                                   "{}x",
                                   "x{}y",
                                   "{a}{b}",
                                   "a{b",
                                   "a}b{c}",
                                   "dk:{abcd1234}:c:ns:k",
                                   "dk:{abcd1234}:c:ns:other",
                                   "dk:{ffff0000}:i:ns:k",
                                   "dk:{0}:r:ns:k",
                                   std::string("bin\0ary", 7),
                                   "\xff\xfe",
                                   "a-very-long-key-" + std::string(300, 'z'),
                                   "héllo",
                                   "{{}}"};
  for (const auto& key : keys) {
    EXPECT_EQ(std::to_string(RedisCluster::KeySlot(key)),
              cluster->Command(primaries[0], {"CLUSTER", "KEYSLOT", key}))
        << key;
  }

  // The owner of a key's slot serves it; any other primary answers MOVED to the owner.
  const std::string key = "dk:{abcd1234}:c:ns:k";
  const int slot = RedisCluster::KeySlot(key);
  const int owner = cluster->PortOfSlot(slot);
  ASSERT_NE(owner, 0);
  EXPECT_EQ(cluster->Command(owner, {"SET", key, "1"}), "OK");
  EXPECT_EQ(cluster->Command(owner, {"GET", key}), "1");
  const int other = OtherThan(primaries, owner);
  EXPECT_EQ(cluster->Command(other, {"GET", key}),
            "MOVED " + std::to_string(slot) + " 127.0.0.1:" + std::to_string(owner));
}

TEST(RedisClusterFixture, MigrationGivesAskThenMovesKeys) {
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  const std::string present = "dk:{mig}:c:ns:present";
  const std::string missing = "dk:{mig}:c:ns:missing";
  const int slot = RedisCluster::KeySlot(present);
  const int from = cluster->PortOfSlot(slot);
  const int to = OtherThan(cluster->primary_ports(), from);
  ASSERT_NE(from, 0);
  ASSERT_NE(to, 0);
  ASSERT_EQ(cluster->Command(from, {"SET", present, "7"}), "OK");

  ASSERT_TRUE(cluster->BeginMigration(slot, from, to));
  // A key still on the source is served there; a missing one is redirected with ASK, and the
  // target serves it only after ASKING (asserted through redis-cli, one connection).
  EXPECT_EQ(cluster->Command(from, {"GET", present}), "7");
  const std::string ask = "ASK " + std::to_string(slot) + " 127.0.0.1:" + std::to_string(to);
  EXPECT_EQ(cluster->Command(from, {"GET", missing}), ask);
  EXPECT_EQ(cluster->Command(to, {"GET", missing}).rfind("MOVED ", 0), 0u);
  // The slot map does not change while a slot migrates.
  EXPECT_EQ(cluster->PortOfSlot(slot), from);

  ASSERT_TRUE(cluster->FinishMigration(slot, from, to));
  EXPECT_EQ(cluster->PortOfSlot(slot), to);
  EXPECT_EQ(cluster->Command(to, {"GET", present}), "7");
  EXPECT_EQ(cluster->Command(from, {"GET", present}),
            "MOVED " + std::to_string(slot) + " 127.0.0.1:" + std::to_string(to));

  // And back in one call.
  ASSERT_TRUE(cluster->MigrateSlot(slot, to, from));
  EXPECT_EQ(cluster->PortOfSlot(slot), from);
  EXPECT_EQ(cluster->Command(from, {"GET", present}), "7");

  // redis-cli --cluster reshard moves whole slots, keys included: it takes the source's slots
  // in ascending order, so a key in the source's first slot moves.
  const int source = cluster->primary_ports()[0];
  const int dest = cluster->primary_ports()[2];
  const std::vector<int> source_slots = cluster->SlotsOf(source);
  const size_t dest_before = cluster->SlotsOf(dest).size();
  ASSERT_FALSE(source_slots.empty());
  const std::string key = KeyInSlot(source_slots.front());
  ASSERT_EQ(cluster->Command(source, {"SET", key, "v"}), "OK");
  ASSERT_TRUE(cluster->Reshard(10, source, dest));
  EXPECT_EQ(cluster->SlotsOf(source).size(), source_slots.size() - 10);
  EXPECT_EQ(cluster->SlotsOf(dest).size(), dest_before + 10);
  EXPECT_EQ(cluster->PortOfSlot(source_slots.front()), dest);
  EXPECT_EQ(cluster->Command(dest, {"GET", key}), "v");
  EXPECT_EQ(cluster->Command(source, {"GET", key}).rfind("MOVED ", 0), 0u);
}

TEST(RedisClusterFixture, FailoverFlipsRoles) {
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  const int primary = cluster->primary_ports()[0];
  const std::vector<int> replicas = cluster->ReplicasOf(primary);
  ASSERT_EQ(replicas.size(), 1u);
  const std::string key = "dk:{failover}:k";
  const int slot = RedisCluster::KeySlot(key);
  const int owner = cluster->PortOfSlot(slot);
  ASSERT_EQ(cluster->Command(owner, {"SET", key, "1"}), "OK");

  ASSERT_TRUE(cluster->Failover(replicas[0]));
  const std::vector<int> now = cluster->primary_ports();
  EXPECT_NE(std::find(now.begin(), now.end(), replicas[0]), now.end());
  EXPECT_EQ(std::find(now.begin(), now.end(), primary), now.end());
  EXPECT_EQ(cluster->ReplicasOf(replicas[0]), std::vector<int>{primary});
  EXPECT_NE(cluster->Command(primary, {"INFO", "replication"}).find("role:slave"),
            std::string::npos);
  // Nothing acknowledged before a manual failover is lost.
  EXPECT_EQ(cluster->Command(cluster->PortOfSlot(slot), {"GET", key}), "1");
}

TEST(RedisClusterFixture, KillPrimaryPromotesReplicaAndRestartRejoins) {
  auto cluster = RedisCluster::Start();
  ASSERT_TRUE(cluster);
  const int victim = cluster->primary_ports()[1];
  const std::vector<int> replicas = cluster->ReplicasOf(victim);
  ASSERT_EQ(replicas.size(), 1u);
  const int promoted = cluster->KillPrimary(victim);
  ASSERT_EQ(promoted, replicas[0]);
  EXPECT_FALSE(cluster->Running(victim));
  const std::vector<int> now = cluster->primary_ports();
  EXPECT_EQ(now.size(), 3u);
  EXPECT_NE(std::find(now.begin(), now.end(), promoted), now.end());
  EXPECT_EQ(std::find(now.begin(), now.end(), victim), now.end());

  // The killed primary comes back as a replica of its successor.
  ASSERT_TRUE(cluster->RestartNode(victim));
  EXPECT_TRUE(cluster->Running(victim));
  EXPECT_EQ(cluster->ReplicasOf(promoted), std::vector<int>{victim});
}

// redis-cli against a TLS port: {exit code, output}.
std::pair<int, std::string> TlsPing(const RedisServer& server, const std::string& ca,
                                    const std::string& cert = "", const std::string& key = "") {
  std::vector<std::string> args = {
      "--tls", "--cacert", ca, "-h", "127.0.0.1", "-p", std::to_string(server.tls_port())};
  if (!cert.empty()) args.insert(args.end(), {"--cert", cert, "--key", key});
  args.push_back("PING");
  return Process::Run(DISTKIT_REDIS_CLI, args, 20s);
}

TEST(RedisServerTls, AnswersWithTheRightCaOnly) {
  RedisServer::Options options;
  options.tls = true;
  auto server = RedisServer::Start(options);
  ASSERT_TRUE(server);
  ASSERT_GT(server->tls_port(), 0);
  EXPECT_EQ(server->port(), 0);  // no plain TCP
  EXPECT_EQ(server->tls_url(), "rediss://127.0.0.1:" + std::to_string(server->tls_port()));
  EXPECT_EQ(server->Command({"PING"}), "PONG");  // the Unix socket stays plain

  auto [code, out] = TlsPing(*server, server->certs().ca_cert);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "PONG\n");

  auto [bad_code, bad_out] = TlsPing(*server, server->certs().other_ca_cert);
  EXPECT_NE(bad_out.find("certificate verify failed"), std::string::npos) << bad_out;
  EXPECT_EQ(bad_out.find("PONG"), std::string::npos) << bad_out;
  EXPECT_NE(bad_code, 0);
}

TEST(RedisServerTls, MutualTlsWantsAClientCertificateFromItsCa) {
  RedisServer::Options options;
  options.tls = true;
  options.tls_auth_clients = true;
  auto server = RedisServer::Start(options);
  ASSERT_TRUE(server);
  const TlsCerts& certs = server->certs();

  auto [code, out] = TlsPing(*server, certs.ca_cert, certs.client_cert, certs.client_key);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "PONG\n");
  EXPECT_EQ(TlsPing(*server, certs.ca_cert).second.find("PONG"), std::string::npos);
  EXPECT_EQ(TlsPing(*server, certs.ca_cert, certs.other_client_cert, certs.other_client_key)
                .second.find("PONG"),
            std::string::npos);

  // Restart keeps the TLS port and certificates.
  const int port = server->tls_port();
  server->Restart();
  EXPECT_EQ(server->tls_port(), port);
  EXPECT_EQ(TlsPing(*server, certs.ca_cert, certs.client_cert, certs.client_key).second, "PONG\n");
}

TEST(RedisClusterFixture, TlsClusterWithClientCertificates) {
  RedisCluster::Options options;
  options.tls = true;
  options.tls_auth_clients = true;
  auto cluster = RedisCluster::Start(options);  // bus and replication over TLS as well
  ASSERT_TRUE(cluster);
  const TlsCerts& certs = cluster->certs();
  const std::string key = "dk:{tls}:k";
  const int slot = RedisCluster::KeySlot(key);
  const int owner = cluster->PortOfSlot(slot);
  const int other = OtherThan(cluster->primary_ports(), owner);
  ASSERT_GT(cluster->TlsPortOf(owner), 0);
  EXPECT_NE(cluster->tls_seeds_url().find("rediss://127.0.0.1:" +
                                          std::to_string(cluster->TlsPortOf(owner))),
            std::string::npos);
  auto tls_cli = [&](int port, std::vector<std::string> command) {
    std::vector<std::string> args = {"--tls",
                                     "--cacert",
                                     certs.ca_cert,
                                     "--cert",
                                     certs.client_cert,
                                     "--key",
                                     certs.client_key,
                                     "-h",
                                     "127.0.0.1",
                                     "-p",
                                     std::to_string(cluster->TlsPortOf(port))};
    args.insert(args.end(), command.begin(), command.end());
    return Process::Run(DISTKIT_REDIS_CLI, args, 20s).second;
  };
  EXPECT_EQ(tls_cli(owner, {"SET", key, "1"}), "OK\n");
  // A TLS client is redirected to the owner's TLS port.
  EXPECT_NE(tls_cli(other, {"GET", key})
                .find("MOVED " + std::to_string(slot) +
                      " 127.0.0.1:" + std::to_string(cluster->TlsPortOf(owner))),
            std::string::npos);
  // The plain ports keep answering plain clients with plain ports.
  EXPECT_EQ(cluster->Command(other, {"GET", key}),
            "MOVED " + std::to_string(slot) + " 127.0.0.1:" + std::to_string(owner));

  // Keys migrate over the TLS links between nodes.
  ASSERT_TRUE(cluster->MigrateSlot(slot, owner, other));
  EXPECT_EQ(tls_cli(other, {"GET", key}), "1\n");
}

}  // namespace
}  // namespace distkit::testing
