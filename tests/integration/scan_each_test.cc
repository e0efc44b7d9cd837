// core::ScanEach (the walks of Clear and ClearOnInstance) against a real redis-server: every
// matching key (SCAN) or set member (SSCAN) over several pages, none of the others, and the first
// error ends the walk.

#include <gtest/gtest.h>

#include <cstdint>
#include <future>
#include <mutex>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "daemon/core/join.h"
#include "daemon/redis/executor.h"
#include "daemon/redis/redis_url.h"
#include "tests/support/redis_server.h"

namespace distkit::core {
namespace {

using distkit::testing::RedisServer;
using namespace std::chrono_literals;

class ScanEachTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_NE(redis_, nullptr);
    redis::ExecutorOptions o;
    auto ep = redis::ParseRedisUrl(redis_->url());
    ASSERT_TRUE(ep.ok()) << ep.status();
    o.seeds = {*ep};
    o.command_timeout = 5s;
    ex_ = std::make_unique<redis::Executor>(o);
    ex_->Start();
    // 2 500 keys that match (more than a page of COUNT 1000) and 300 that do not.
    for (int i = 0; i < 2500; i += 500) {
      std::vector<std::string> mset = {"MSET"};
      for (int j = i; j < i + 500; ++j) {
        mset.push_back(absl::StrCat("scan:{t}:", j));
        mset.push_back("1");
      }
      ASSERT_TRUE(Run(mset).ok());
    }
    std::vector<std::string> other = {"MSET"};
    for (int j = 0; j < 300; ++j) {
      other.push_back(absl::StrCat("other:", j));
      other.push_back("1");
    }
    ASSERT_TRUE(Run(other).ok());
  }

  absl::Status Run(std::vector<std::string> argv) {
    std::promise<absl::Status> p;
    auto f = p.get_future();
    ex_->Command(std::move(argv), [&p](absl::StatusOr<redis::Reply> r) {
      p.set_value(!r.ok() ? r.status()
                          : (r->is_error() ? absl::InternalError(r->str) : absl::OkStatus()));
    });
    if (f.wait_for(10s) != std::future_status::ready) return absl::InternalError("hung");
    return f.get();
  }

  // Walks "scan:*" (or the members of `set`) with `each`, waits (bounded) for the end.
  absl::Status Walk(EachKey each, const std::string& set = "") {
    std::promise<absl::Status> p;
    auto f = p.get_future();
    ScanEach(ex_.get(), {set.empty() ? "scan:*" : "", set}, "0",
             std::make_shared<const EachKey>(std::move(each)),
             [&p](absl::Status s) { p.set_value(std::move(s)); });
    if (f.wait_for(20s) != std::future_status::ready) return absl::InternalError("hung");
    return f.get();
  }

  // SCAN (or SSCAN) calls the server has answered (INFO commandstats).
  int64_t ScanCalls(const std::string& command = "scan") const {
    const std::string info = redis_->Command({"INFO", "commandstats"});
    const std::string needle = "cmdstat_" + command + ":calls=";
    const auto at = info.find(needle);
    return at == std::string::npos ? 0 : std::stoll(info.substr(at + needle.size()));
  }

  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<redis::Executor> ex_;
};

TEST_F(ScanEachTest, VisitsEveryMatchingKeyOverSeveralPagesAndNoOther) {
  std::mutex mu;
  std::set<std::string> seen;
  int calls = 0;
  const int64_t scans_before = ScanCalls();
  const absl::Status s = Walk([&](const std::string& key, StatusCallback done) {
    {
      std::lock_guard<std::mutex> lock(mu);
      seen.insert(key);
      ++calls;
    }
    done(absl::OkStatus());
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_GE(ScanCalls() - scans_before, 2);  // several pages
  EXPECT_EQ(seen.size(), 2500u);
  EXPECT_GE(calls, 2500);  // SCAN may return a key twice, never miss one that stays
  for (const auto& k : seen) EXPECT_EQ(k.rfind("scan:{t}:", 0), 0u) << k;
}

TEST_F(ScanEachTest, WalksEveryMemberOfASetOverSeveralPages) {
  for (int i = 0; i < 2500; i += 500) {
    std::vector<std::string> sadd = {"SADD", "members"};
    for (int j = i; j < i + 500; ++j) sadd.push_back(absl::StrCat("m", j));
    ASSERT_TRUE(Run(sadd).ok());
  }
  std::mutex mu;
  std::set<std::string> seen;
  const int64_t before = ScanCalls("sscan");
  const absl::Status s = Walk(
      [&](const std::string& member, StatusCallback done) {
        {
          std::lock_guard<std::mutex> lock(mu);
          seen.insert(member);
        }
        done(absl::OkStatus());
      },
      "members");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_GE(ScanCalls("sscan") - before, 2);
  EXPECT_EQ(seen.size(), 2500u);
  EXPECT_EQ(seen.count("m0") + seen.count("m2499"), 2u);
}

TEST_F(ScanEachTest, AsynchronousCompletionsAndTheFirstErrorEndsTheWalk) {
  std::mutex mu;
  int calls = 0;
  // Each key completes later, from the Redis loop (a GET of it), and one of them fails: the walk
  // reports that error and asks for no page after the one that had it.
  const absl::Status s = Walk([&](const std::string& key, StatusCallback done) {
    int n = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      n = ++calls;
    }
    ex_->Command({"GET", key}, [n, done = std::move(done)](absl::StatusOr<redis::Reply>) mutable {
      done(n == 10 ? absl::DataLossError("key 10 is broken") : absl::OkStatus());
    });
  });
  EXPECT_EQ(s, absl::DataLossError("key 10 is broken"));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_GE(calls, 10);
  EXPECT_LT(calls, 2500);  // the pages after the failing one were not walked
}

}  // namespace
}  // namespace distkit::core
