// Issue #11 finding 10, end to end: 50 distkitd processes (10 rounds of 5 at once, each doing
// LAX work on the same keys, then SIGTERM) leave each counter hash with at most the live
// processes' dedup marks plus a small constant, not one mark per process that ever flushed it:
// with --lax_resend_bound_ms, counter.lua collects marks 2 × the bound after their last write
// (docs/design.md, "Dedup marks"). Every increment is counted exactly once throughout.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/core/redis_keys.h"
#include "distkit/v1/counter.grpc.pb.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::Daemon;
using testing::PollUntil;
using testing::RedisServer;

constexpr int kRounds = 10;
constexpr int kPerRound = 5;
constexpr int kIncsPerKey = 3;
constexpr char kBoundMs[] = "300";
const std::vector<std::string> kKeys = {"hot-a", "hot-b", "hot-c"};

std::vector<std::string> Flags() { return {"--lax_resend_bound_ms", kBoundMs}; }

int64_t Fields(RedisServer& redis, const std::string& key) {
  return std::stoll(redis.Command({"HLEN", core::PlainCounterKey("distkit", key)}));
}

TEST(DedupMarksE2E, RestartsDoNotPileUpMarksAndNothingIsLostOrDoubled) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  std::map<std::string, int64_t> expected;
  int n = 0;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::unique_ptr<Daemon>> daemons;
    for (int i = 0; i < kPerRound; ++i) {
      daemons.push_back(std::make_unique<Daemon>(*redis, absl::StrCat("d", ++n), Flags()));
    }
    for (auto& d : daemons) {
      ASSERT_TRUE(d->WaitServing()) << d->Log();
      for (const auto& key : kKeys) {
        for (int j = 0; j < kIncsPerKey; ++j) {
          const grpc::Status s = d->CounterInc(key, 1, v1::CONSISTENCY_LAX);
          ASSERT_TRUE(s.ok()) << s.error_message();
        }
      }
    }
    for (const auto& key : kKeys) expected[key] += kPerRound * kIncsPerKey;
    for (auto& d : daemons) EXPECT_EQ(d->Stop(SIGTERM, 15s), 0) << d->Log();  // flushes
  }

  // One live process keeps working on the keys: its flushes collect the marks of the gone ones.
  Daemon live(*redis, "live", Flags());
  ASSERT_TRUE(live.WaitServing()) << live.Log();
  const auto settled = [&] {
    for (const auto& key : kKeys) {
      // "v" + the live process's mark + at most 2 marks of processes not yet expired.
      if (Fields(*redis, key) > 4) return false;
    }
    return true;
  };
  const bool collected = PollUntil(
      [&] {
        for (const auto& key : kKeys) {
          if (live.CounterInc(key, 1, v1::CONSISTENCY_LAX).ok()) ++expected[key];
        }
        return settled();
      },
      20s);
  std::string sizes;
  for (const auto& key : kKeys) absl::StrAppend(&sizes, key, "=", Fields(*redis, key), " ");
  std::printf("after %d processes: fields per hash %s\n", n, sizes.c_str());
  EXPECT_TRUE(collected) << "fields per hash: " << sizes;
  ASSERT_EQ(live.Stop(SIGTERM, 15s), 0) << live.Log();
  for (const auto& key : kKeys) {
    EXPECT_EQ(redis->Command({"HGET", core::PlainCounterKey("distkit", key), "v"}),
              absl::StrCat(expected[key]))
        << key;
  }
}

}  // namespace
}  // namespace distkit
