// distkit::Client (client/include/distkit/client.h) against the in-process daemon and a real
// redis-server: typed results of every service, the namespace set once, the asynchronous calls
// (gRPC's callback API), per-item batch statuses, exactly-once pushes (a Batch resent with the
// same client_id and seq is answered, not applied again) and gRPC codes and messages as
// absl::Status.

#include "distkit/client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "tests/support/icounter_daemon.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::RedisServer;
using Daemon = testing::ICounterDaemon;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_TRUE(redis_);
    daemon_ = std::make_unique<Daemon>(*redis_, redis_->dir() + "/d.sock", 30000);
    client_ = For("app");
  }
  std::unique_ptr<Client> For(const std::string& ns) {
    ClientOptions options;
    options.address = "unix:" + redis_->dir() + "/d.sock";
    options.ns = ns;
    options.deadline = 10s;
    auto client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }
  // Runs an asynchronous call and waits for its callback.
  template <typename T, typename Start>
  static absl::StatusOr<T> Wait(Start start) {
    std::promise<absl::StatusOr<T>> promise;
    std::future<absl::StatusOr<T>> future = promise.get_future();
    start([&promise](absl::StatusOr<T> r) { promise.set_value(std::move(r)); });
    EXPECT_EQ(future.wait_for(20s), std::future_status::ready);
    return future.get();
  }

  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, CreateChecksTheAddressOnly) {
  ClientOptions options;
  options.address = "localhost";
  EXPECT_TRUE(absl::IsInvalidArgument(Client::Create(options).status()));
  options.address = "unix:";
  EXPECT_TRUE(absl::IsInvalidArgument(Client::Create(options).status()));
  options.address = "127.0.0.1:1";  // nothing listens: only the first call says so
  EXPECT_TRUE(Client::Create(options).ok());
}

TEST_F(ClientTest, CountersHaveTypedResultsInTheClientsNamespace) {
  auto inc = client_->Inc("k", 5);
  ASSERT_TRUE(inc.ok()) << inc.status();
  EXPECT_EQ(inc->value, 5);
  EXPECT_EQ(inc->previous, 0);
  EXPECT_TRUE(inc->applied);
  auto cond = client_->Inc("k", 1, Consistency::kStrict, {Comparator::kGt, 10});
  ASSERT_TRUE(cond.ok());
  EXPECT_FALSE(cond->applied);
  EXPECT_EQ(cond->value, 5);
  EXPECT_EQ(client_->Inc("k", 2, Consistency::kLax).value_or(CounterValue{}).value, 7);
  EXPECT_EQ(client_->Get("k", Consistency::kLax).value_or(-1), 7);
  EXPECT_EQ(client_->Set("k", 40).value_or(CounterValue{}).previous, 7);
  EXPECT_EQ(client_->Get("k").value_or(-1), 40);
  // Another namespace is another counter.
  EXPECT_EQ(For("other")->Get("k").value_or(-1), 0);
  EXPECT_EQ(client_->Del("k").value_or(CounterValue{}).previous, 40);
  ASSERT_TRUE(client_->Inc("j", 1).ok());
  EXPECT_TRUE(client_->Clear().ok());
  EXPECT_EQ(client_->Get("j").value_or(-1), 0);
}

TEST_F(ClientTest, ErrorsCarryTheGrpcCodeAndMessage) {
  auto r = client_->Inc("bad:key", 1);
  ASSERT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "key")) << r.status();
  auto rate = client_->RateLimitInc("k", -1);
  EXPECT_TRUE(absl::IsInvalidArgument(rate.status())) << rate.status();
}

TEST_F(ClientTest, AsyncCallsRunTheirCallbackOnce) {
  auto inc = Wait<CounterValue>([&](auto done) { client_->IncAsync("a", 3, std::move(done)); });
  ASSERT_TRUE(inc.ok()) << inc.status();
  EXPECT_EQ(inc->value, 3);
  auto get = Wait<int64_t>([&](auto done) { client_->GetAsync("a", std::move(done)); });
  EXPECT_EQ(get.value_or(-1), 3);
  auto set = Wait<CounterValue>([&](auto done) { client_->SetAsync("a", 9, std::move(done)); });
  EXPECT_EQ(set.value_or(CounterValue{}).value, 9);
  auto del = Wait<CounterValue>([&](auto done) { client_->DelAsync("a", std::move(done)); });
  EXPECT_EQ(del.value_or(CounterValue{}).previous, 9);
  auto bad = Wait<CounterValue>([&](auto done) { client_->IncAsync("b:c", 1, std::move(done)); });
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  auto inst =
      Wait<InstanceValue>([&](auto done) { client_->InstanceIncAsync("i", 4, std::move(done)); });
  EXPECT_EQ(inst.value_or(InstanceValue{}).cumulative, 4);
  auto rl = Wait<RateLimitResult>(
      [&](auto done) { client_->RateLimitIncAsync("r", 100, 1, std::move(done)); });
  ASSERT_TRUE(rl.ok()) << rl.status();
  EXPECT_TRUE(rl->allowed);
  EXPECT_EQ(rl->decision, Decision::kAllowed);
  // Many in flight at once on the one channel.
  std::vector<std::future<absl::StatusOr<CounterValue>>> futures;
  std::vector<std::promise<absl::StatusOr<CounterValue>>> promises(100);
  for (auto& p : promises) {
    futures.push_back(p.get_future());
    client_->IncAsync("many", 1, [&p](absl::StatusOr<CounterValue> r) { p.set_value(r); });
  }
  for (auto& f : futures) ASSERT_TRUE(f.get().ok());
  EXPECT_EQ(client_->Get("many").value_or(-1), 100);
}

TEST_F(ClientTest, BatchHasPerItemStatusesAndAPushIsAppliedOnce) {
  const std::vector<CounterOp> ops = {CounterOp::Inc("x", 1, Consistency::kLax),
                                      CounterOp::Inc("bad:key", 1), CounterOp::Get("x"),
                                      CounterOp::Set("y", 5), CounterOp::Del("y")};
  auto r = client_->Batch(ops);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), ops.size());
  EXPECT_EQ((*r)[0].value_or(CounterValue{}).value, 1);
  EXPECT_TRUE(absl::IsInvalidArgument((*r)[1].status()));
  EXPECT_EQ((*r)[2].value_or(CounterValue{}).value, 1);
  EXPECT_EQ((*r)[3].value_or(CounterValue{}).value, 5);
  EXPECT_EQ((*r)[4].value_or(CounterValue{}).previous, 5);

  const PushId id{"client-test", 1};
  const std::vector<CounterOp> push = {CounterOp::Inc("p", 10, Consistency::kLax)};
  for (int resend = 0; resend < 3; ++resend) {
    auto p = client_->Batch(push, id);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ((*p)[0].value_or(CounterValue{}).value, 10);  // the first answer each time
  }
  EXPECT_EQ(client_->Get("p", Consistency::kLax).value_or(-1), 10);
  auto next = client_->Batch(push, PushId{"client-test", 2});
  ASSERT_TRUE(next.ok());
  EXPECT_EQ((*next)[0].value_or(CounterValue{}).value, 20);
  auto async = Wait<BatchResults<CounterValue>>([&](auto done) {
    client_->BatchAsync(push, std::move(done), PushId{"client-test", 2});
  });
  ASSERT_TRUE(async.ok());
  EXPECT_EQ((*async)[0].value_or(CounterValue{}).value, 20);
  EXPECT_EQ(client_->Get("p", Consistency::kLax).value_or(-1), 20);
}

TEST_F(ClientTest, InstanceCountersAndTheirPushes) {
  auto inc = client_->InstanceInc("k", 5);
  ASSERT_TRUE(inc.ok()) << inc.status();
  EXPECT_EQ(inc->cumulative, 5);
  EXPECT_EQ(inc->instance, 5);
  EXPECT_EQ(client_->SetOnInstance("k", 8).value_or(InstanceValue{}).previous_instance, 5);
  EXPECT_EQ(client_->InstanceGet("k").value_or(InstanceValue{}).cumulative, 8);
  EXPECT_EQ(client_->InstanceSet("k", 2).value_or(InstanceValue{}).cumulative, 2);
  EXPECT_TRUE(client_->DelOnInstance("k").ok());
  EXPECT_TRUE(client_->InstanceDel("k").ok());
  const PushId id{"client-test", 7};
  const std::vector<InstanceOp> push = {{InstanceOp::Kind::kInc, "q", 3, Consistency::kLax, {}},
                                        {InstanceOp::Kind::kGet, "q", 0, Consistency::kLax, {}}};
  for (int resend = 0; resend < 2; ++resend) {
    auto p = client_->InstanceBatch(push, id);
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_EQ(p->size(), 2u);
    EXPECT_EQ((*p)[1].value_or(InstanceValue{}).cumulative, 3);
  }
  EXPECT_EQ(client_->InstanceGet("q", Consistency::kLax).value_or(InstanceValue{}).cumulative, 3);
  EXPECT_TRUE(client_->ClearOnInstance().ok());
  EXPECT_TRUE(client_->InstanceClear().ok());
}

TEST_F(ClientTest, RateLimitsAreTypedDecisions) {
  std::vector<RateLimitOp> ops;
  for (int i = 0; i < 5; ++i) ops.push_back({"r", 0.1, 1, Provider::kLocal, Strategy::kAbsolute});
  auto r = client_->RateLimitBatch(ops);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 5u);
  int allowed = 0;
  for (const auto& d : *r) {
    ASSERT_TRUE(d.ok()) << d.status();
    allowed += d->allowed ? 1 : 0;
    EXPECT_EQ(d->decision, d->allowed ? Decision::kAllowed : Decision::kRejected);
  }
  EXPECT_LT(allowed, 5);
  auto state = client_->RateLimitGet("r");
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->total, static_cast<uint64_t>(allowed));
  EXPECT_EQ(DecisionName(Decision::kSuppressed), "SUPPRESSED");
}

}  // namespace
}  // namespace distkit
