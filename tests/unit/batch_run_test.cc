// BatchRun (daemon/transport/batch_run.h), the Batch pump of every service, with a scripted
// Spec: order of starts, per-key waits, items that run alone, the in-flight cap, inline and
// late completions, per-item codes and one finish.

#include "daemon/transport/batch_run.h"

#include <gtest/gtest.h>

#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "distkit/v1/counter.pb.h"

namespace distkit::transport {
namespace {

// What the scripted Spec does with an item, by its inc's delta.
enum Behaviour : int64_t {
  kInline = 0,       // answers OK at once
  kInlineError = 1,  // answers NOT_FOUND at once
  kAsync = 2,        // hands its callback to the test (completed by Complete*)
  kCallbackNow = 3,  // calls its callback before returning (a completion on the same stack)
};

// The test's side of the Spec: starts in order, callbacks waiting to be called.
struct Script {
  const v1::BatchRequest* req = nullptr;
  std::mutex mu;
  std::vector<int> started;
  int violations = 0;  // items started while one they must wait for was pending
  std::deque<std::pair<int, core::StatusCallback>> pending;

  size_t Pending() {
    std::lock_guard<std::mutex> lock(mu);
    return pending.size();
  }
  // Completes the pending item `i` (it must be pending) with `s`.
  void Complete(int i, absl::Status s = absl::OkStatus()) {
    core::StatusCallback cb;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (auto it = pending.begin(); it != pending.end(); ++it) {
        if (it->first == i) {
          cb = std::move(it->second);
          pending.erase(it);
          break;
        }
      }
    }
    ASSERT_TRUE(cb) << "item " << i << " is not pending";
    cb(std::move(s));
  }
  void CompleteOldest() {
    int i;
    {
      std::lock_guard<std::mutex> lock(mu);
      ASSERT_FALSE(pending.empty());
      i = pending.front().first;
    }
    Complete(i);
  }
  std::vector<int> Started() {
    std::lock_guard<std::mutex> lock(mu);
    return started;
  }
};

// Key: the inc's key, "" = none; an item with consistency LAX runs alone.
struct ScriptedBatch {
  using Request = v1::BatchRequest;
  using Response = v1::BatchResponse;
  using Key = std::string_view;

  std::optional<Key> KeyOf(const v1::BatchOp& op) const {
    if (op.inc().key().empty()) return std::nullopt;
    return std::string_view(op.inc().key());
  }
  static bool Alone(const v1::BatchOp& op) { return op.inc().consistency() == v1::CONSISTENCY_LAX; }
  std::optional<absl::Status> Start(int i, const v1::BatchOp& op, v1::BatchResult* res,
                                    MakeCallback callback) const {
    {
      std::lock_guard<std::mutex> lock(script->mu);
      script->started.push_back(i);
      // Pending items are outstanding: none may share this item's key, none may exist when it
      // runs alone.
      for (const auto& [j, cb] : script->pending) {
        const v1::BatchOp& other = script->req->ops(j);
        if (Alone(op) || Alone(other) || (KeyOf(op) && KeyOf(op) == KeyOf(other))) {
          ++script->violations;
        }
      }
    }
    switch (op.inc().delta()) {
      case kInline:
        res->mutable_inc()->set_value(i);
        return absl::OkStatus();
      case kInlineError:
        res->mutable_inc()->set_value(i);  // cleared with the error
        return absl::NotFoundError("item " + std::to_string(i));
      case kAsync: {
        res->mutable_inc()->set_value(i);
        core::StatusCallback cb = callback();
        std::lock_guard<std::mutex> lock(script->mu);
        script->pending.emplace_back(i, std::move(cb));
        return std::nullopt;
      }
      default:
        res->mutable_inc()->set_value(i);
        callback()(absl::OkStatus());
        return std::nullopt;
    }
  }

  Script* script;
};

class BatchRunTest : public ::testing::Test {
 protected:
  v1::BatchOp& Add(int64_t behaviour, const std::string& key = "", bool alone = false) {
    v1::BatchOp& op = *req_.add_ops();
    op.mutable_inc()->set_delta(behaviour);
    op.mutable_inc()->set_key(key);
    if (alone) op.mutable_inc()->set_consistency(v1::CONSISTENCY_LAX);
    return op;
  }
  void TearDown() override { EXPECT_EQ(script_.violations, 0); }
  void Run() {
    script_.req = &req_;
    std::make_shared<BatchRun<ScriptedBatch>>(ScriptedBatch{&script_}, &req_, &resp_,
                                              [this](absl::Status s) {
                                                ++finished_;
                                                finish_status_ = s;
                                              })
        ->Pump();
  }
  static std::vector<int> Range(int from, int to) {
    std::vector<int> v;
    for (int i = from; i < to; ++i) v.push_back(i);
    return v;
  }

  Script script_;
  v1::BatchRequest req_;
  v1::BatchResponse resp_;
  std::atomic<int> finished_{0};
  absl::Status finish_status_ = absl::UnknownError("not finished");
};

TEST_F(BatchRunTest, EmptyBatchFinishesAtOnce) {
  Run();
  EXPECT_EQ(finished_, 1);
  EXPECT_TRUE(finish_status_.ok());
  EXPECT_EQ(resp_.results_size(), 0);
}

TEST_F(BatchRunTest, InlineItemsRunInOrderWithTheirOwnCodes) {
  Add(kInline);
  Add(kInlineError);
  Add(kCallbackNow);
  Add(kInline);
  Run();
  EXPECT_EQ(finished_, 1);
  EXPECT_TRUE(finish_status_.ok());  // item errors are per item
  EXPECT_EQ(script_.Started(), Range(0, 4));
  ASSERT_EQ(resp_.results_size(), 4);
  EXPECT_EQ(resp_.results(0).code(), 0);
  EXPECT_EQ(resp_.results(0).inc().value(), 0);
  EXPECT_EQ(resp_.results(1).code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(resp_.results(1).message(), "item 1");
  EXPECT_FALSE(resp_.results(1).has_inc());
  EXPECT_EQ(resp_.results(2).inc().value(), 2);
  EXPECT_EQ(resp_.results(3).inc().value(), 3);
}

TEST_F(BatchRunTest, AsyncErrorIsStoredOnItsItem) {
  Add(kAsync, "a");
  Add(kAsync, "b");
  Run();
  script_.Complete(1, absl::UnavailableError("down"));
  EXPECT_EQ(finished_, 0);
  script_.Complete(0);
  EXPECT_EQ(finished_, 1);
  EXPECT_EQ(resp_.results(0).code(), 0);
  EXPECT_EQ(resp_.results(0).inc().value(), 0);
  EXPECT_EQ(resp_.results(1).code(), static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(resp_.results(1).message(), "down");
  EXPECT_FALSE(resp_.results(1).has_inc());
}

// Distinct keys pipeline; an item on a busy key waits, and every later item waits behind it.
TEST_F(BatchRunTest, SameKeyWaitsAndHoldsBackTheRest) {
  Add(kAsync, "a");   // 0
  Add(kAsync, "b");   // 1
  Add(kAsync, "a");   // 2: waits for 0
  Add(kInline, "c");  // 3: behind 2
  Add(kAsync);        // 4: no key, behind 2
  Run();
  EXPECT_EQ(script_.Started(), Range(0, 2));
  script_.Complete(1);
  EXPECT_EQ(script_.Started(), Range(0, 2));
  script_.Complete(0);
  EXPECT_EQ(script_.Started(), Range(0, 5));
  EXPECT_EQ(finished_, 0);
  script_.Complete(2);
  script_.Complete(4);
  EXPECT_EQ(finished_, 1);
}

// An inline item on a busy key waits too (it would observe the state before the earlier item).
TEST_F(BatchRunTest, InlineItemOnABusyKeyWaits) {
  Add(kAsync, "a");
  Add(kInline, "a");
  Run();
  EXPECT_EQ(script_.Started(), Range(0, 1));
  script_.Complete(0);
  EXPECT_EQ(script_.Started(), Range(0, 2));
  EXPECT_EQ(finished_, 1);
}

// An Alone item waits for every earlier item, and every later item waits for it.
TEST_F(BatchRunTest, AloneItemRunsAlone) {
  Add(kAsync, "a");                  // 0
  Add(kAsync, "b");                  // 1
  Add(kAsync, "x", /*alone=*/true);  // 2
  Add(kAsync, "c");                  // 3
  Add(kInline, "", /*alone=*/true);  // 4
  Add(kAsync, "d");                  // 5
  Run();
  EXPECT_EQ(script_.Started(), Range(0, 2));
  script_.Complete(0);
  EXPECT_EQ(script_.Started(), Range(0, 2));
  script_.Complete(1);
  EXPECT_EQ(script_.Started(), Range(0, 3));
  script_.Complete(2);
  EXPECT_EQ(script_.Started(), Range(0, 4));  // 4 waits for 3
  script_.Complete(3);
  EXPECT_EQ(script_.Started(), Range(0, 6));
  script_.Complete(5);
  EXPECT_EQ(finished_, 1);
}

TEST_F(BatchRunTest, AtMostTheCapInFlight) {
  constexpr int kItems = 1000;
  for (int i = 0; i < kItems; ++i) Add(kAsync, "k" + std::to_string(i));
  Run();
  EXPECT_EQ(script_.Pending(), static_cast<size_t>(kMaxBatchInFlight));
  script_.CompleteOldest();
  EXPECT_EQ(script_.Pending(), static_cast<size_t>(kMaxBatchInFlight));
  EXPECT_EQ(script_.Started().size(), static_cast<size_t>(kMaxBatchInFlight + 1));
  while (script_.Pending() > 0) {
    EXPECT_LE(script_.Pending(), static_cast<size_t>(kMaxBatchInFlight));
    script_.CompleteOldest();
  }
  EXPECT_EQ(script_.Started(), Range(0, kItems));
  EXPECT_EQ(finished_, 1);
}

// The cap holds back inline items too: they start in order, after the items before them.
TEST_F(BatchRunTest, CapHoldsBackInlineItems) {
  for (int i = 0; i < kMaxBatchInFlight; ++i) Add(kAsync, "k" + std::to_string(i));
  Add(kInline);
  Run();
  EXPECT_EQ(script_.Started(), Range(0, kMaxBatchInFlight));
  script_.CompleteOldest();
  EXPECT_EQ(script_.Started(), Range(0, kMaxBatchInFlight + 1));
  while (script_.Pending() > 0) script_.CompleteOldest();
  EXPECT_EQ(finished_, 1);
}

// 10 000 completions on the pump's own stack: the trampoline keeps the stack flat.
TEST_F(BatchRunTest, TenThousandCompletionsOnTheSameStack) {
  for (int i = 0; i < 10000; ++i) Add(kCallbackNow, i % 2 ? "same" : "");
  Run();
  EXPECT_EQ(finished_, 1);
  EXPECT_EQ(script_.Started(), Range(0, 10000));
  EXPECT_EQ(resp_.results(9999).inc().value(), 9999);
}

// Completions from other threads while the pump runs: every item once, in order per key, one
// finish.
TEST_F(BatchRunTest, CompletionsFromOtherThreads) {
  constexpr int kItems = 5000;
  for (int i = 0; i < kItems; ++i) {
    Add(i % 3 == 0 ? kInline : kAsync, "k" + std::to_string(i % 7), /*alone=*/i % 500 == 0);
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> completers;
  for (int t = 0; t < 2; ++t) {
    completers.emplace_back([&] {
      while (!stop.load()) {
        std::pair<int, core::StatusCallback> item{-1, nullptr};
        {
          std::lock_guard<std::mutex> lock(script_.mu);
          if (!script_.pending.empty()) {
            item = std::move(script_.pending.front());
            script_.pending.pop_front();
          }
        }
        if (item.second) {
          item.second(absl::OkStatus());
        } else {
          std::this_thread::yield();
        }
      }
    });
  }
  Run();
  while (finished_.load() == 0) std::this_thread::yield();
  stop = true;
  for (auto& t : completers) t.join();
  EXPECT_EQ(finished_, 1);
  EXPECT_EQ(script_.Started(), Range(0, kItems));
  for (int i = 0; i < kItems; ++i) EXPECT_EQ(resp_.results(i).inc().value(), i);
}

}  // namespace
}  // namespace distkit::transport
