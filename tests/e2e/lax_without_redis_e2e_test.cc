// LAX work that Redis cannot take, with the real distkitd (issue #11, findings 4 and 6):
// instance-counter LAX answers from memory while Redis is down at the start and is flushed once
// the daemon registered; a SIGTERM with LAX work stuck on a key whose data cannot be read says
// exactly what was not flushed and why, without spending the whole grace
// (docs/api.md#shutdown, docs/api.md#exit-codes).

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "daemon/core/redis_keys.h"
#include "distkit/v1/counter.grpc.pb.h"
#include "tests/support/daemon.h"
#include "tests/support/icounter_client.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::Daemon;
using testing::PollUntil;
using testing::RedisServer;

TEST(LaxWithoutRedisE2ETest, InstanceLaxIsAnsweredWhileRedisIsDownAtStartAndFlushedWhenItReturns) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  redis->Stop();  // down before the daemon starts: it cannot register its instance
  Daemon d(*redis, "d", {"--redis_timeout_ms", "300"});
  ASSERT_TRUE(d.WaitServing("", 20s));  // the process serves; readiness waits for Redis
  auto r = testing::LaxInc(d, "k", 5);
  ASSERT_EQ(r.code, grpc::StatusCode::OK) << r.message;
  EXPECT_EQ(r.now(), testing::CI(5, 5));
  EXPECT_EQ(testing::LaxInc(d, "k", 2).now(), testing::CI(7, 7));
  // Redis comes back: the daemon registers in the background and flushes the work.
  redis->Restart();
  const std::string key = core::InstanceCounterKey("distkit", "k");
  EXPECT_TRUE(PollUntil(
      [&] {
        return redis->Command({"HGET", key, "c"}) == "7";
      },
      20s))
      << redis->Command({"HGETALL", key}) << "\n"
      << d.Log();
  EXPECT_EQ(testing::Get(d, "k").now(), testing::CI(7, 7));
  EXPECT_EQ(d.Stop(SIGTERM, 20s), 0) << d.Log();
}

TEST(LaxWithoutRedisE2ETest, SigtermLogsEachKeyLeftOnBrokenDataWithItsDeltaAndCause) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  // A grace far beyond Stop's wait: a daemon that spent it on the broken key would time out.
  Daemon d(*redis, "d", {"--shutdown_grace_ms", "600000"});
  ASSERT_TRUE(d.WaitServing());
  ASSERT_TRUE(d.CounterInc("ok", 1, v1::CONSISTENCY_LAX).ok());
  ASSERT_TRUE(d.CounterInc("bad", 1, v1::CONSISTENCY_LAX).ok());
  const std::string bad = core::PlainCounterKey("distkit", "bad");
  ASSERT_TRUE(PollUntil([&] { return redis->Command({"HGET", bad, "v"}) == "1"; }, 10s));
  // Someone overwrites the value; the next increment is acknowledged and cannot be flushed.
  redis->Command({"HSET", bad, "v", "not a number"});
  ASSERT_TRUE(d.CounterInc("bad", 3, v1::CONSISTENCY_LAX).ok());
  ASSERT_TRUE(d.CounterInc("ok", 1, v1::CONSISTENCY_LAX).ok());
  v1::GetResponse get;
  ASSERT_TRUE(PollUntil(
      [&] { return d.CounterGet("bad", v1::CONSISTENCY_LAX, &get).error_code() != grpc::OK; },
      10s));
  // docs/api.md#exit-codes: LAX increments not flushed exit 1, whatever the cause.
  EXPECT_EQ(d.Stop(SIGTERM, 25s), 1);  // -1: still waiting for the broken key
  const std::string log = d.Log();
  EXPECT_TRUE(absl::StrContains(log, "key 'bad' delta 3")) << log;
  EXPECT_TRUE(absl::StrContains(log, "is not an int64")) << log;
  EXPECT_TRUE(absl::StrContains(log, "1 refused by the key's data in Redis")) << log;
  EXPECT_FALSE(absl::StrContains(log, "key 'ok'")) << log;
  EXPECT_EQ(redis->Command({"HGET", core::PlainCounterKey("distkit", "ok"), "v"}), "2");
}

}  // namespace
}  // namespace distkit
