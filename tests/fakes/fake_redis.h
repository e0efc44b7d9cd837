#pragma once

// FakeRedisClient: an in-memory stand-in for the counter.lua contract, for unit tests only.
// Calls are queued; the test decides when and how each one completes (applied and answered,
// applied but answer lost, never sent), which is how exactly-once flushing is tested without
// sleeps. Integration tests run the real script against a real redis-server.

#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/core/int64_math.h"
#include "daemon/redis/redis_client.h"

namespace distkit::testing {

class FakeRedisClient : public redis::RedisClient {
 public:
  struct Call {
    std::string script;  // empty for raw commands
    std::vector<std::string> keys, args;
    redis::ReplyCallback done;
  };
  struct Value {
    std::optional<int64_t> v;
    std::map<std::string, uint64_t> seen;  // dedup id -> highest applied seq
  };

  void Command(std::vector<std::string> argv, redis::ReplyCallback done) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back(Call{"", {}, std::move(argv), std::move(done)});
  }
  void Script(std::string_view name, std::vector<std::string> keys, std::vector<std::string> args,
              redis::ReplyCallback done) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back(Call{std::string(name), std::move(keys), std::move(args), std::move(done)});
  }
  bool Healthy() const override { return true; }

  size_t pending() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_.size();
  }
  Call Pop() {
    std::lock_guard<std::mutex> lock(mu_);
    Call c = std::move(calls_.front());
    calls_.pop_front();
    return c;
  }
  // Completes the oldest call normally.
  void Answer() {
    Call c = Pop();
    c.done(Apply(c));
  }
  // Completes every queued call (including ones queued while answering).
  void AnswerAll() {
    while (pending() > 0) Answer();
  }
  // Applies the oldest call in "Redis" but reports a timeout (the reply was lost).
  void ApplyButTimeout() {
    Call c = Pop();
    (void)Apply(c);
    c.done(absl::DeadlineExceededError("timeout"));
  }
  // Fails the oldest call as never sent.
  void FailNotSent() {
    Call c = Pop();
    c.done(redis::NotSentError("down"));
  }

  int64_t Stored(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    return data_[key].v.value_or(0);
  }
  void Store(const std::string& key, int64_t v) {
    std::lock_guard<std::mutex> lock(mu_);
    data_[key].v = v;
  }

 private:
  // The counter.lua contract, in C++.
  absl::StatusOr<redis::Reply> Apply(const Call& c) {
    std::lock_guard<std::mutex> lock(mu_);
    using redis::Reply;
    if (c.script.empty()) {  // only SCAN is used: return every key, one page
      std::vector<Reply> keys;
      for (const auto& [k, v] : data_) keys.push_back(Reply::String(k));
      return Reply::Array({Reply::String("0"), Reply::Array(std::move(keys))});
    }
    Value& val = data_[c.keys[0]];
    const auto& a = c.args;
    const std::string& id = a[0];
    const size_t n = std::stoul(a[1]);
    int64_t cur = val.v.value_or(0);
    int64_t dropped = 0;
    uint64_t last = val.seen[id];
    uint64_t max_seq = last;
    for (size_t i = 0; i < n; ++i) {
      const uint64_t seq = std::stoull(a[2 + 2 * i]);
      const int64_t d = std::stoll(a[3 + 2 * i]);
      if (seq <= last) continue;
      max_seq = std::max(max_seq, seq);
      if (auto s = core::CheckedAdd(cur, d)) {
        cur = *s;
      } else {
        ++dropped;
      }
    }
    val.seen[id] = max_seq;
    const std::string& op = a[2 + 2 * n];
    const std::string& cmp = a[3 + 2 * n];
    const int64_t operand = std::stoll(a[4 + 2 * n]);
    const int64_t arg = std::stoll(a[5 + 2 * n]);
    core::Condition cond{core::Comparator::kNone, operand};
    for (auto op_c : {core::Comparator::kEq, core::Comparator::kNe, core::Comparator::kLt,
                      core::Comparator::kLe, core::Comparator::kGt, core::Comparator::kGe}) {
      if (core::ComparatorName(op_c) == cmp) cond.op = op_c;
    }
    const int64_t prev = cur;
    std::string status = "ok";
    int64_t applied = 1;
    if (op == "inc" || op == "set") {
      if (!core::Holds(cond, cur)) {
        applied = 0;
      } else if (op == "set") {
        cur = arg;
      } else if (auto s = core::CheckedAdd(cur, arg)) {
        cur = *s;
      } else {
        status = "overflow";
        applied = 0;
      }
    }
    if (op == "del") {
      cur = 0;
      val.v.reset();
    } else if (n > 0 || op == "inc" || op == "set") {
      val.v = cur;
    }
    return Reply::Array({Reply::String(status), Reply::String(absl::StrCat(cur)),
                         Reply::String(absl::StrCat(prev)), Reply::Integer(applied),
                         Reply::Integer(dropped), Reply::Integer(static_cast<int64_t>(max_seq))});
  }

  std::mutex mu_;
  std::deque<Call> calls_;
  std::map<std::string, Value> data_;
};

class FakeClock : public core::Clock {
 public:
  int64_t NowNs() const override { return now_ns_.load(); }
  void AdvanceMs(int64_t ms) { now_ns_ += ms * 1'000'000; }

 private:
  std::atomic<int64_t> now_ns_{1'000'000'000};
};

}  // namespace distkit::testing
