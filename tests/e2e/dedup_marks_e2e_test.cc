// Issue #11 finding 10, end to end: 50 distkitd processes (10 rounds of 5 at once, each doing
// LAX work on the same keys, then SIGTERM) leave each counter hash with at most the live
// processes' dedup marks plus a small constant, not one mark per process that ever flushed it:
// with --lax_resend_bound_ms, counter.lua collects marks 2 × the bound after their last write
// (docs/design.md, "Dedup marks"). Every increment is counted exactly once throughout.
// The same for instance counters (icounter.lua's q:<dedup id> marks): each round's cumulative is
// exactly its LAX increments, and the marks of gone processes are collected.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/core/redis_keys.h"
#include "distkit/client.h"
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

const std::vector<std::string> kInstanceKeys = {"ihot-a", "ihot-b"};

std::vector<std::string> Flags(const std::string& instance_id) {
  return {"--lax_resend_bound_ms", kBoundMs, "--instance_id", instance_id};
}

int64_t Fields(RedisServer& redis, const std::string& key) {
  return std::stoll(redis.Command({"HLEN", core::PlainCounterKey("distkit", key)}));
}

// q:* fields (dedup marks) of an instance-counter hash.
int64_t QMarks(RedisServer& redis, const std::string& key) {
  const std::string keys = redis.Command({"HKEYS", core::InstanceCounterKey("distkit", key)});
  int64_t n = 0;
  for (size_t at = 0; (at = keys.find("q:", at)) != std::string::npos; at += 2) {
    if (at == 0 || keys[at - 1] == ',') ++n;
  }
  return n;
}

absl::Status ICInc(Daemon& d, const std::string& key, int64_t delta) {
  return d.NewClient("", 5s)->InstanceInc(key, delta, Consistency::kLax).status();
}

// STRICT cumulative, or -1 on error.
int64_t ICGet(Daemon& d, const std::string& key) {
  const absl::StatusOr<InstanceValue> r = d.NewClient("", 5s)->InstanceGet(key);
  return r.ok() ? r->cumulative : -1;
}

TEST(DedupMarksE2E, RestartsDoNotPileUpMarksAndNothingIsLostOrDoubled) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  std::map<std::string, int64_t> expected;
  int n = 0;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::unique_ptr<Daemon>> daemons;
    for (int i = 0; i < kPerRound; ++i) {
      ++n;
      daemons.push_back(
          std::make_unique<Daemon>(*redis, absl::StrCat("d", n), Flags(absl::StrCat("i", n))));
    }
    for (auto& d : daemons) {
      ASSERT_TRUE(d->WaitServing()) << d->Log();
      ASSERT_TRUE(d->WaitServing("distkit.v1.InstanceCounterService")) << d->Log();
      for (const auto& key : kKeys) {
        for (int j = 0; j < kIncsPerKey; ++j) {
          const grpc::Status s = d->CounterInc(key, 1, v1::CONSISTENCY_LAX);
          ASSERT_TRUE(s.ok()) << s.error_message();
        }
      }
      for (const auto& key : kInstanceKeys) {
        for (int j = 0; j < kIncsPerKey; ++j) {
          const absl::Status s = ICInc(*d, key, 1);
          ASSERT_TRUE(s.ok()) << s;
        }
      }
    }
    for (const auto& key : kKeys) expected[key] += kPerRound * kIncsPerKey;
    // The round's slices hold exactly its increments (earlier rounds removed theirs at SIGTERM).
    for (const auto& key : kInstanceKeys) {
      int64_t c = -1;
      PollUntil([&] { return (c = ICGet(*daemons[0], key)) >= kPerRound * kIncsPerKey; }, 10s);
      EXPECT_EQ(c, kPerRound * kIncsPerKey) << key << " round " << round;
    }
    for (auto& d : daemons) EXPECT_EQ(d->Stop(SIGTERM, 15s), 0) << d->Log();  // flushes
  }

  // One live process keeps working on the keys: its flushes collect the marks of the gone ones.
  std::string qsizes;
  for (const auto& key : kInstanceKeys) {
    absl::StrAppend(&qsizes, key, "=", QMarks(*redis, key), " ");
  }
  std::printf("after %d processes, before the live one: q: marks per hash %s\n", n, qsizes.c_str());
  Daemon live(*redis, "live", Flags("live"));
  ASSERT_TRUE(live.WaitServing()) << live.Log();
  ASSERT_TRUE(live.WaitServing("distkit.v1.InstanceCounterService")) << live.Log();
  std::map<std::string, int64_t> live_incs;
  const auto settled = [&] {
    for (const auto& key : kKeys) {
      // "v" + the live process's mark + at most 2 marks of processes not yet expired.
      if (Fields(*redis, key) > 4) return false;
    }
    for (const auto& key : kInstanceKeys) {
      // The live process's q: mark + at most 2 not yet expired.
      if (QMarks(*redis, key) > 3) return false;
    }
    return true;
  };
  const bool collected = PollUntil(
      [&] {
        for (const auto& key : kKeys) {
          if (live.CounterInc(key, 1, v1::CONSISTENCY_LAX).ok()) ++expected[key];
        }
        for (const auto& key : kInstanceKeys) {
          if (ICInc(live, key, 1).ok()) ++live_incs[key];
        }
        return settled();
      },
      20s);
  std::string sizes;
  for (const auto& key : kKeys) absl::StrAppend(&sizes, key, "=", Fields(*redis, key), " ");
  qsizes.clear();
  for (const auto& key : kInstanceKeys) {
    absl::StrAppend(&qsizes, key, "=", QMarks(*redis, key), " ");
  }
  std::printf("after %d processes: fields per hash %s, q: marks per hash %s\n", n, sizes.c_str(),
              qsizes.c_str());
  EXPECT_TRUE(collected) << "fields per hash: " << sizes << "q: marks per hash: " << qsizes;
  // Only the live process's slice is left: its cumulative is exactly its acknowledged increments.
  for (const auto& key : kInstanceKeys) EXPECT_EQ(ICGet(live, key), live_incs[key]) << key;
  ASSERT_EQ(live.Stop(SIGTERM, 15s), 0) << live.Log();
  for (const auto& key : kKeys) {
    EXPECT_EQ(redis->Command({"HGET", core::PlainCounterKey("distkit", key), "v"}),
              absl::StrCat(expected[key]))
        << key;
  }
}

}  // namespace
}  // namespace distkit
