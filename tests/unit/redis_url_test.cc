#include "daemon/redis/redis_url.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace distkit::redis {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

RedisEndpoint MustParse(const std::string& url) {
  auto ep = ParseRedisUrl(url);
  EXPECT_TRUE(ep.ok()) << url << ": " << ep.status();
  return ep.ok() ? *ep : RedisEndpoint{};
}

// Returns the error message; fails the test when the URL parses or the code is not
// InvalidArgument.
std::string ErrorOf(const std::string& url) {
  auto ep = ParseRedisUrl(url);
  EXPECT_FALSE(ep.ok()) << url << " unexpectedly parsed";
  if (ep.ok()) return "";
  EXPECT_EQ(ep.status().code(), absl::StatusCode::kInvalidArgument) << url;
  return std::string(ep.status().message());
}

TEST(RedisUrlTest, DefaultUrl) {
  const RedisEndpoint ep = MustParse("redis://127.0.0.1:6379");
  EXPECT_FALSE(ep.is_unix);
  EXPECT_EQ(ep.host, "127.0.0.1");
  EXPECT_EQ(ep.port, 6379);
  EXPECT_EQ(ep.db, 0);
  EXPECT_EQ(ep.user, "");
  EXPECT_EQ(ep.password, "");
  EXPECT_EQ(ep.path, "");
}

TEST(RedisUrlTest, PortIsOptional) {
  const RedisEndpoint ep = MustParse("redis://redis.example.com");
  EXPECT_EQ(ep.host, "redis.example.com");
  EXPECT_EQ(ep.port, 6379);
  EXPECT_EQ(ep.db, 0);
}

TEST(RedisUrlTest, PortBoundaries) {
  EXPECT_EQ(MustParse("redis://h:1").port, 1);
  EXPECT_EQ(MustParse("redis://h:65535").port, 65535);
  EXPECT_THAT(ErrorOf("redis://h:0"), HasSubstr("port"));
  EXPECT_THAT(ErrorOf("redis://h:65536"), HasSubstr("port"));
  EXPECT_THAT(ErrorOf("redis://h:-1"), HasSubstr("port"));
  EXPECT_THAT(ErrorOf("redis://h:abc"), HasSubstr("port"));
  EXPECT_THAT(ErrorOf("redis://h:"), HasSubstr("port"));
  EXPECT_THAT(ErrorOf("redis://h:63 79"), HasSubstr("port"));
  EXPECT_THAT(ErrorOf("redis://h:99999999999999999999"), HasSubstr("port"));
}

TEST(RedisUrlTest, Database) {
  EXPECT_EQ(MustParse("redis://h:6379/0").db, 0);
  EXPECT_EQ(MustParse("redis://h:6379/3").db, 3);
  EXPECT_EQ(MustParse("redis://h/15").db, 15);
  EXPECT_EQ(MustParse("redis://h:6379/").db, 0);
  EXPECT_EQ(MustParse("redis://h/2147483647").db, 2147483647);
  EXPECT_THAT(ErrorOf("redis://h/-1"), HasSubstr("database"));
  EXPECT_THAT(ErrorOf("redis://h/abc"), HasSubstr("database"));
  EXPECT_THAT(ErrorOf("redis://h/2147483648"), HasSubstr("database"));
  EXPECT_THAT(ErrorOf("redis://h/1/2"), HasSubstr("path"));
}

TEST(RedisUrlTest, UserAndPassword) {
  const RedisEndpoint ep = MustParse("redis://alice:s3cret@h:6380/2");
  EXPECT_EQ(ep.user, "alice");
  EXPECT_EQ(ep.password, "s3cret");
  EXPECT_EQ(ep.host, "h");
  EXPECT_EQ(ep.port, 6380);
  EXPECT_EQ(ep.db, 2);
}

TEST(RedisUrlTest, PasswordOnly) {
  const RedisEndpoint ep = MustParse("redis://:pw@h");
  EXPECT_EQ(ep.user, "");
  EXPECT_EQ(ep.password, "pw");
  EXPECT_EQ(ep.host, "h");
  EXPECT_EQ(ep.port, 6379);
}

TEST(RedisUrlTest, EmptyUserinfoMeansNoAuth) {
  const RedisEndpoint ep = MustParse("redis://:@h");
  EXPECT_EQ(ep.user, "");
  EXPECT_EQ(ep.password, "");
}

TEST(RedisUrlTest, PercentDecoding) {
  const RedisEndpoint ep = MustParse("redis://us%40er:p%3Ass%2Fw%25rd%20x@h");
  EXPECT_EQ(ep.user, "us@er");
  EXPECT_EQ(ep.password, "p:ss/w%rd x");
  EXPECT_EQ(MustParse("redis://:%41%62@h").password, "Ab");
}

TEST(RedisUrlTest, UnescapedAtAndSlashInPasswordStillWork) {
  const RedisEndpoint ep = MustParse("redis://u:p@ss/w:rd@h:1/4");
  EXPECT_EQ(ep.user, "u");
  EXPECT_EQ(ep.password, "p@ss/w:rd");
  EXPECT_EQ(ep.host, "h");
  EXPECT_EQ(ep.port, 1);
  EXPECT_EQ(ep.db, 4);
}

TEST(RedisUrlTest, BadPercentEncoding) {
  EXPECT_THAT(ErrorOf("redis://:p%zz@h"), HasSubstr("percent-encoding in the password"));
  EXPECT_THAT(ErrorOf("redis://:p%4@h"), HasSubstr("percent-encoding"));
  EXPECT_THAT(ErrorOf("redis://:p%@h"), HasSubstr("percent-encoding"));
  EXPECT_THAT(ErrorOf("redis://u%g1:p@h"), HasSubstr("percent-encoding in the user"));
}

TEST(RedisUrlTest, UserWithoutPasswordIsRejected) {
  EXPECT_THAT(ErrorOf("redis://alice@h"), HasSubstr("without a password"));
  EXPECT_THAT(ErrorOf("redis://alice:@h"), HasSubstr("without a password"));
}

TEST(RedisUrlTest, Ipv6) {
  RedisEndpoint ep = MustParse("redis://[::1]:6380");
  EXPECT_EQ(ep.host, "::1");
  EXPECT_EQ(ep.port, 6380);
  ep = MustParse("redis://[2001:db8::7]");
  EXPECT_EQ(ep.host, "2001:db8::7");
  EXPECT_EQ(ep.port, 6379);
  ep = MustParse("redis://:pw@[::ffff:10.0.0.1]:7000/1");
  EXPECT_EQ(ep.host, "::ffff:10.0.0.1");
  EXPECT_EQ(ep.password, "pw");
  EXPECT_EQ(ep.port, 7000);
  EXPECT_EQ(ep.db, 1);
}

TEST(RedisUrlTest, Ipv6Errors) {
  EXPECT_THAT(ErrorOf("redis://::1:6379"), HasSubstr("brackets"));
  EXPECT_THAT(ErrorOf("redis://[::1:6379"), HasSubstr("'['"));
  EXPECT_THAT(ErrorOf("redis://[]:6379"), HasSubstr("empty IPv6"));
  EXPECT_THAT(ErrorOf("redis://[::1]6379"), HasSubstr("after the IPv6 host"));
  EXPECT_THAT(ErrorOf("redis://[zz::1]:6379"), HasSubstr("invalid IPv6"));
  EXPECT_THAT(ErrorOf("redis://[127.0.0.1]:6379"), HasSubstr("invalid IPv6"));
}

TEST(RedisUrlTest, HostErrors) {
  EXPECT_THAT(ErrorOf("redis://"), HasSubstr("missing host"));
  EXPECT_THAT(ErrorOf("redis://:6379"), HasSubstr("missing host"));
  EXPECT_THAT(ErrorOf("redis://:pw@"), HasSubstr("missing host"));
  EXPECT_THAT(ErrorOf("redis:///0"), HasSubstr("missing host"));
  EXPECT_THAT(ErrorOf("redis://bad host:6379"), HasSubstr("invalid character"));
}

TEST(RedisUrlTest, SchemeIsCaseInsensitive) {
  EXPECT_EQ(MustParse("REDIS://h:1").port, 1);
  EXPECT_TRUE(MustParse("UNIX:/tmp/r.sock").is_unix);
}

TEST(RedisUrlTest, QueryNotSupportedForTcp) {
  EXPECT_THAT(ErrorOf("redis://h:6379?db=1"), HasSubstr("query parameters are not supported"));
  EXPECT_THAT(ErrorOf("redis://h:6379/0#frag"), HasSubstr("not supported"));
}

TEST(RedisUrlTest, Tls) {
  RedisEndpoint ep = MustParse("rediss://alice:s3cret@redis.example.com:6380/2");
  EXPECT_TRUE(ep.tls);
  EXPECT_FALSE(ep.is_unix);
  EXPECT_EQ(ep.host, "redis.example.com");
  EXPECT_EQ(ep.port, 6380);
  EXPECT_EQ(ep.user, "alice");
  EXPECT_EQ(ep.password, "s3cret");
  EXPECT_EQ(ep.db, 2);
  ep = MustParse("REDISS://[::1]");
  EXPECT_TRUE(ep.tls);
  EXPECT_EQ(ep.host, "::1");
  EXPECT_EQ(ep.port, 6379);
  EXPECT_FALSE(MustParse("redis://h").tls);
  EXPECT_FALSE(MustParse("unix:/tmp/r.sock").tls);
  EXPECT_THAT(ErrorOf("rediss://h:0"), HasSubstr("port"));
  EXPECT_THAT(ErrorOf("rediss://"), HasSubstr("missing host"));
  EXPECT_THAT(ErrorOf("rediss://h?ssl_cert_reqs=none"), HasSubstr("not supported"));
}

TEST(RedisUrlTest, OtherFormsAreRejected) {
  EXPECT_THAT(ErrorOf(""), HasSubstr("empty Redis URL"));
  EXPECT_THAT(ErrorOf("http://h:6379"), HasSubstr("unsupported scheme 'http://'"));
  EXPECT_THAT(ErrorOf("localhost:6379"), HasSubstr("not a Redis URL"));
  EXPECT_THAT(ErrorOf("127.0.0.1"), HasSubstr("not a Redis URL"));
  EXPECT_THAT(ErrorOf("/tmp/redis.sock"), HasSubstr("not a Redis URL"));
  EXPECT_THAT(ErrorOf("redis:/h"), HasSubstr("redis[s]://"));
}

TEST(RedisUrlTest, ErrorsNeverEchoThePassword) {
  for (const std::string url :
       {"redis://:s3cret@h:99999", "redis://u:s3cret@::1:1", "ftp://u:s3cret@h", "s3cret",
        "redis://u:s3cret@h/x", "rediss://u:s3cret@h:0", "redis://u:s3cret%zz@h",
        "unix:/x?password=s3cret&db=x", "redis://u:s3cret@h?x=1"}) {
    EXPECT_THAT(ErrorOf(url), Not(HasSubstr("s3cret"))) << url;
  }
}

TEST(RedisUrlTest, UnixPath) {
  const RedisEndpoint ep = MustParse("unix:/var/run/redis/redis.sock");
  EXPECT_TRUE(ep.is_unix);
  EXPECT_EQ(ep.path, "/var/run/redis/redis.sock");
  EXPECT_EQ(ep.db, 0);
  EXPECT_EQ(ep.host, "");
  EXPECT_EQ(ep.password, "");
}

TEST(RedisUrlTest, UnixDoubleSlashForm) {
  EXPECT_EQ(MustParse("unix:///tmp/r.sock").path, "/tmp/r.sock");
  EXPECT_EQ(MustParse("unix://relative/r.sock").path, "relative/r.sock");
}

TEST(RedisUrlTest, UnixRelativePath) { EXPECT_EQ(MustParse("unix:r.sock").path, "r.sock"); }

TEST(RedisUrlTest, UnixQuery) {
  RedisEndpoint ep = MustParse("unix:/tmp/r.sock?db=3");
  EXPECT_EQ(ep.path, "/tmp/r.sock");
  EXPECT_EQ(ep.db, 3);
  ep = MustParse("unix:///tmp/r.sock?db=1&user=bob&password=p%40w");
  EXPECT_EQ(ep.path, "/tmp/r.sock");
  EXPECT_EQ(ep.db, 1);
  EXPECT_EQ(ep.user, "bob");
  EXPECT_EQ(ep.password, "p@w");
  ep = MustParse("unix:/tmp/r.sock?password=pw");
  EXPECT_EQ(ep.user, "");
  EXPECT_EQ(ep.password, "pw");
}

TEST(RedisUrlTest, UnixErrors) {
  EXPECT_THAT(ErrorOf("unix:"), HasSubstr("missing socket path"));
  EXPECT_THAT(ErrorOf("unix://"), HasSubstr("missing socket path"));
  EXPECT_THAT(ErrorOf("unix:?db=1"), HasSubstr("missing socket path"));
  EXPECT_THAT(ErrorOf("unix:/x?db=abc"), HasSubstr("database"));
  EXPECT_THAT(ErrorOf("unix:/x?db=-1"), HasSubstr("database"));
  EXPECT_THAT(ErrorOf("unix:/x?db="), HasSubstr("database"));
  EXPECT_THAT(ErrorOf("unix:/x?timeout=1"), HasSubstr("unknown query parameter 'timeout'"));
  EXPECT_THAT(ErrorOf("unix:/x?user=bob"), HasSubstr("without a password"));
  EXPECT_THAT(ErrorOf("unix:/x?password=%zz"), HasSubstr("percent-encoding"));
}

TEST(RedisUrlTest, UnixPathLengthLimit) {
  const std::string max_path = "/" + std::string(106, 'a');  // 107 bytes
  EXPECT_EQ(MustParse("unix:" + max_path).path, max_path);
  EXPECT_THAT(ErrorOf("unix:" + max_path + "a"), HasSubstr("longer than 107"));
}

TEST(RedisUrlTest, RedactedTcp) {
  EXPECT_EQ(MustParse("redis://alice:s3cret@h:6380/2").Redacted(), "redis://alice:***@h:6380/2");
  EXPECT_EQ(MustParse("redis://:s3cret@h").Redacted(), "redis://:***@h:6379/0");
  EXPECT_EQ(MustParse("redis://127.0.0.1:6379").Redacted(), "redis://127.0.0.1:6379/0");
  EXPECT_EQ(MustParse("redis://[::1]:7000/1").Redacted(), "redis://[::1]:7000/1");
}

TEST(RedisUrlTest, RedactedTls) {
  EXPECT_EQ(MustParse("rediss://alice:s3cret@h:6380/2").Redacted(), "rediss://alice:***@h:6380/2");
  EXPECT_EQ(MustParse("rediss://h").Redacted(), "rediss://h:6379/0");
}

TEST(RedisUrlTest, RedactedUnix) {
  EXPECT_EQ(MustParse("unix:/tmp/r.sock").Redacted(), "unix:/tmp/r.sock");
  EXPECT_EQ(MustParse("unix:/tmp/r.sock?db=2").Redacted(), "unix:/tmp/r.sock?db=2");
  EXPECT_EQ(MustParse("unix:/tmp/r.sock?db=2&user=u&password=s3cret").Redacted(),
            "unix:/tmp/r.sock?db=2&user=u&password=***");
  EXPECT_EQ(MustParse("unix:/tmp/r.sock?password=s3cret").Redacted(),
            "unix:/tmp/r.sock?password=***");
}

TEST(RedisUrlTest, RedactedRoundTrips) {
  for (const std::string url : {"redis://127.0.0.1:6379/0", "redis://[::1]:7000/1",
                                "rediss://h:6380/3", "unix:/tmp/r.sock", "unix:/tmp/r.sock?db=2"}) {
    const RedisEndpoint ep = MustParse(url);
    EXPECT_EQ(ep.Redacted(), url);
    const RedisEndpoint again = MustParse(ep.Redacted());
    EXPECT_EQ(again.tls, ep.tls);
    EXPECT_EQ(again.host, ep.host);
    EXPECT_EQ(again.port, ep.port);
    EXPECT_EQ(again.path, ep.path);
    EXPECT_EQ(again.db, ep.db);
  }
}

// ---- seed lists ----

std::vector<RedisEndpoint> MustParseSeeds(const std::string& list) {
  auto seeds = ParseRedisSeeds(list);
  EXPECT_TRUE(seeds.ok()) << list << ": " << seeds.status();
  return seeds.ok() ? *seeds : std::vector<RedisEndpoint>{};
}

std::string SeedsErrorOf(const std::string& list) {
  auto seeds = ParseRedisSeeds(list);
  EXPECT_FALSE(seeds.ok()) << list << " unexpectedly parsed";
  if (seeds.ok()) return "";
  EXPECT_EQ(seeds.status().code(), absl::StatusCode::kInvalidArgument) << list;
  return std::string(seeds.status().message());
}

TEST(RedisSeedsTest, OneSeedIsOneUrl) {
  std::vector<RedisEndpoint> seeds = MustParseSeeds("redis://h:1/2");
  ASSERT_EQ(seeds.size(), 1u);
  EXPECT_EQ(seeds[0].Redacted(), "redis://h:1/2");
  seeds = MustParseSeeds("  unix:/tmp/r.sock ");
  ASSERT_EQ(seeds.size(), 1u);
  EXPECT_EQ(seeds[0].path, "/tmp/r.sock");
  // One seed: the message is ParseRedisUrl's, with no seed number.
  EXPECT_EQ(SeedsErrorOf("redis://h:0"), ErrorOf("redis://h:0"));
}

TEST(RedisSeedsTest, ListInOrderWithSpacesTrimmed) {
  const std::vector<RedisEndpoint> seeds =
      MustParseSeeds("redis://a:7000, redis://:pw@b:7001 ,redis://[::1]:7002");
  ASSERT_EQ(seeds.size(), 3u);
  EXPECT_EQ(seeds[0].host, "a");
  EXPECT_EQ(seeds[0].port, 7000);
  EXPECT_EQ(seeds[1].host, "b");
  EXPECT_EQ(seeds[1].password, "pw");
  EXPECT_EQ(seeds[2].host, "::1");
  EXPECT_EQ(seeds[2].port, 7002);
}

TEST(RedisSeedsTest, TlsList) {
  const std::vector<RedisEndpoint> seeds = MustParseSeeds("rediss://a:7000,rediss://b");
  ASSERT_EQ(seeds.size(), 2u);
  EXPECT_TRUE(seeds[0].tls);
  EXPECT_TRUE(seeds[1].tls);
  EXPECT_EQ(seeds[1].port, 6379);
}

TEST(RedisSeedsTest, EmptyListAndEmptyItems) {
  EXPECT_THAT(SeedsErrorOf(""), HasSubstr("no Redis URL"));
  EXPECT_THAT(SeedsErrorOf("   "), HasSubstr("no Redis URL"));
  EXPECT_THAT(SeedsErrorOf(","), HasSubstr("seed 1 of 2 is empty"));
  EXPECT_THAT(SeedsErrorOf("redis://a:1,,redis://b:1"), HasSubstr("seed 2 of 3 is empty"));
  EXPECT_THAT(SeedsErrorOf("redis://a:1, "), HasSubstr("seed 2 of 2 is empty"));
}

TEST(RedisSeedsTest, ErrorNamesTheSeedRedacted) {
  EXPECT_EQ(SeedsErrorOf("redis://a:1,redis://u:s3cret@b:0"),
            "seed 2 ('redis://u:***@b:0'): the port must be an integer in [1, 65535], got '0'");
  EXPECT_THAT(SeedsErrorOf("redis://a:1,rediss://s3cret@b:1"),
              HasSubstr("seed 2 ('rediss://***@b:1'): a user without a password"));
  EXPECT_THAT(SeedsErrorOf("redis://a:1,unix:/x?password=s3cret&db=x"),
              HasSubstr("seed 2 ('unix:/x?password=***&db=x'): "));
  // Text in no known form is not echoed (it may be a password typed in the wrong place).
  EXPECT_THAT(SeedsErrorOf("redis://a:1,s3cret"), HasSubstr("seed 2: not a Redis URL"));
  EXPECT_THAT(SeedsErrorOf("redis://a:1,ftp://u:s3cret@h"), HasSubstr("seed 2 is not a Redis"));
}

TEST(RedisSeedsTest, CommaInsidePasswordIsNotEchoed) {
  const std::string message = SeedsErrorOf("redis://:s3c,ret@h:1,redis://b:1");
  EXPECT_THAT(message, HasSubstr("%2C"));
  EXPECT_THAT(message, Not(HasSubstr("s3c")));
  EXPECT_THAT(message, Not(HasSubstr("ret")));
  EXPECT_EQ(MustParseSeeds("redis://:s3c%2Cret@h:1,redis://b:1")[0].password, "s3c,ret");
}

TEST(RedisSeedsTest, ErrorsNeverEchoThePassword) {
  for (const std::string list :
       {"redis://a:1,redis://:s3cret@h:99999", "redis://u:s3cret@h:0,redis://a:1",
        "redis://a:1,rediss://u:s3cret@h", "redis://a:1,unix:/x?password=s3cret",
        "redis://a:1,redis://u:s3cret%zz@h", "redis://a:1,s3cret", "redis://a:1,redis://s3cret@h",
        "redis://:s3,cret@h,redis://a:1", "redis://u:s3cret@,redis://a:1"}) {
    EXPECT_THAT(SeedsErrorOf(list), Not(HasSubstr("s3cret"))) << list;
  }
}

TEST(RedisSeedsTest, SeveralSeedsMustBeTcpWithOneScheme) {
  EXPECT_THAT(SeedsErrorOf("redis://a:1,unix:/tmp/r.sock"),
              HasSubstr("seed 2 ('unix:/tmp/r.sock'): several seeds must all be TCP"));
  EXPECT_THAT(SeedsErrorOf("unix:/tmp/r.sock,redis://a:1"), HasSubstr("seed 1 "));
  EXPECT_THAT(SeedsErrorOf("rediss://a:1,redis://b:1"),
              HasSubstr("seed 2 ('redis://b:1'): seeds mix rediss:// (TLS) and redis://"));
  EXPECT_THAT(SeedsErrorOf("redis://a:1,rediss://b:1"), HasSubstr("mix"));
}

}  // namespace
}  // namespace distkit::redis
