#include "daemon/redis/cluster_topology.h"

#include <gtest/gtest.h>

namespace distkit::redis {
namespace {

TEST(KeySlot, KnownValues) {
  // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
  EXPECT_EQ(KeySlot("123456789"), 12739);  // CRC16/XMODEM check value 0x31C3 % 16384
  EXPECT_EQ(KeySlot("foo"), 12182);
  EXPECT_EQ(KeySlot("bar"), 5061);
  EXPECT_EQ(KeySlot(""), 0);
}

TEST(KeySlot, HashTag) {
  EXPECT_EQ(KeySlot("{user1000}.following"), KeySlot("user1000"));
  EXPECT_EQ(KeySlot("dk:{abcd1234}:c:ns:k"), KeySlot("abcd1234"));
  EXPECT_EQ(KeySlot("dk:{abcd1234}:i:other:x"), KeySlot("dk:{abcd1234}:c:ns:k"));
  EXPECT_EQ(KeySlot("foo{}{bar}"), KeySlot("foo{}{bar}"));  // empty tag: the whole key
  EXPECT_NE(KeySlot("foo{}{bar}"), KeySlot("bar"));
  EXPECT_EQ(KeySlot("foo{{bar}}zap"), KeySlot("{bar"));  // the first '{' to the next '}'
  EXPECT_EQ(KeySlot("foo{bar}{zap}"), KeySlot("bar"));
  EXPECT_EQ(KeySlot("no-close{tag"), KeySlot(std::string_view("no-close{tag")));
}

Reply S(std::string s) { return Reply::String(std::move(s)); }
Reply I(int64_t v) { return Reply::Integer(v); }

Reply Node(const std::string& ip, int64_t port, int64_t tls_port, const std::string& role,
           const std::string& health) {
  std::vector<Reply> kv = {S("id"),
                           S("abc"),
                           S("port"),
                           I(port),
                           S("ip"),
                           S(ip),
                           S("endpoint"),
                           S(ip),
                           S("role"),
                           S(role),
                           S("replication-offset"),
                           I(1),
                           S("health"),
                           S(health)};
  if (tls_port > 0) {
    kv.push_back(S("tls-port"));
    kv.push_back(I(tls_port));
  }
  return Reply::Array(std::move(kv));
}

TEST(ParseClusterShards, PrimariesOnlineWithSlots) {
  Reply shards = Reply::Array({
      Reply::Array({S("slots"), Reply::Array({I(0), I(5460), I(10923), I(10923)}), S("nodes"),
                    Reply::Array({Node("127.0.0.1", 7003, 0, "replica", "online"),
                                  Node("127.0.0.1", 7000, 0, "master", "online")})}),
      Reply::Array({S("slots"), Reply::Array({I(5461), I(10922)}), S("nodes"),
                    Reply::Array({Node("127.0.0.1", 7001, 0, "master", "fail"),
                                  Node("127.0.0.1", 7004, 0, "replica", "online")})}),
      // A shard without slots (an empty primary) is no routing target.
      Reply::Array({S("slots"), Reply::Array({}), S("nodes"),
                    Reply::Array({Node("127.0.0.1", 7009, 0, "master", "online")})}),
  });
  auto parsed = ParseClusterShards(shards, /*tls=*/false);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 1u);  // 7001 failed: its slots are unserved until a failover
  EXPECT_EQ((*parsed)[0].host, "127.0.0.1");
  EXPECT_EQ((*parsed)[0].port, 7000);
  ASSERT_EQ((*parsed)[0].ranges.size(), 2u);
  EXPECT_EQ((*parsed)[0].ranges[1], std::make_pair(10923, 10923));
}

TEST(ParseClusterShards, TlsPortWhenTls) {
  Reply shards = Reply::Array(
      {Reply::Array({S("slots"), Reply::Array({I(0), I(16383)}), S("nodes"),
                     Reply::Array({Node("10.0.0.1", 6379, 6380, "master", "online")})})});
  EXPECT_EQ((*ParseClusterShards(shards, true))[0].port, 6380);
  EXPECT_EQ((*ParseClusterShards(shards, false))[0].port, 6379);
}

TEST(ParseClusterShards, RejectsGarbage) {
  EXPECT_FALSE(ParseClusterShards(S("nope"), false).ok());
  EXPECT_FALSE(ParseClusterShards(Reply::Array({Reply::Array({S("slots")})}), false).ok());
  Reply bad_range = Reply::Array(
      {Reply::Array({S("slots"), Reply::Array({I(10), I(99999)}), S("nodes"), Reply::Array({})})});
  EXPECT_FALSE(ParseClusterShards(bad_range, false).ok());
}

TEST(ParseClusterSlots, GroupsRangesByPrimary) {
  auto node = [](const std::string& ip, int64_t port) {
    return Reply::Array({S(ip), I(port), S("id")});
  };
  Reply slots = Reply::Array({
      Reply::Array({I(0), I(100), node("127.0.0.1", 7000), node("127.0.0.1", 7003)}),
      Reply::Array({I(101), I(16383), node("127.0.0.1", 7001)}),
      Reply::Array({I(200), I(300), node("127.0.0.1", 7000)}),
  });
  auto parsed = ParseClusterSlots(slots);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[0].port, 7000);
  EXPECT_EQ((*parsed)[0].ranges.size(), 2u);
  EXPECT_FALSE(ParseClusterSlots(Reply::Array({Reply::Array({I(0)})})).ok());
}

TEST(ParseRedirect, MovedAndAsk) {
  auto m = ParseRedirect("MOVED 3999 127.0.0.1:6381");
  ASSERT_TRUE(m.has_value());
  EXPECT_FALSE(m->ask);
  EXPECT_EQ(m->slot, 3999);
  EXPECT_EQ(m->host, "127.0.0.1");
  EXPECT_EQ(m->port, 6381);
  auto a = ParseRedirect("ASK 1 ::1:7000");
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a->ask);
  EXPECT_EQ(a->host, "::1");
  EXPECT_FALSE(ParseRedirect("MOVED 99999 h:1").has_value());
  EXPECT_FALSE(ParseRedirect("MOVED x h:1").has_value());
  EXPECT_FALSE(ParseRedirect("ERR something").has_value());
  EXPECT_FALSE(ParseRedirect("MOVED 1 nohostport").has_value());
}

TEST(InfoSaysClusterEnabled, Lines) {
  EXPECT_TRUE(InfoSaysClusterEnabled("# Cluster\r\ncluster_enabled:1\r\n"));
  EXPECT_FALSE(InfoSaysClusterEnabled("# Cluster\r\ncluster_enabled:0\r\n"));
  EXPECT_FALSE(InfoSaysClusterEnabled(""));
}

}  // namespace
}  // namespace distkit::redis
