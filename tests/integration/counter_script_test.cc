// lua/counter.lua against a real redis-server, plus the test support it relies on (RedisServer,
// Process). The script's contract is documented at the top of lua/counter.lua. The text under
// test is the embedded one (lua/lib/*.lua prepended), exactly what the daemon loads.

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/redis/executor.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kMax[] = "9223372036854775807";
constexpr char kMin[] = "-9223372036854775808";
constexpr char kKey[] = "dk:{ns:key}:c";
constexpr int64_t kMarkTtlMs = 86400000;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string ReadScript() { return distkit::redis::EmbeddedScripts().at("counter"); }

struct Entry {
  std::string seq, delta;
};

class CounterScriptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    script_ = ReadScript();
    ASSERT_FALSE(script_.empty());
    server_ = RedisServer::Start();
    ASSERT_NE(server_, nullptr);
    ctx_ = server_->Connect();
    ASSERT_NE(ctx_, nullptr);
    ASSERT_EQ(ctx_->err, 0);
  }
  void TearDown() override {
    if (ctx_ != nullptr) redisFree(ctx_);
  }

  // Runs the script with ARGV = `args` and renders the reply as "status,cur,prev,applied,dropped"
  // or "ERROR:<message>". The reply's shape is checked here: cur and prev must be bulk strings
  // (a Lua number would be truncated by Redis), applied and dropped integers.
  std::string Eval(const std::vector<std::string>& args, const std::string& key = kKey) {
    std::vector<std::string> argv = {"EVAL", script_, "1", key};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (const auto& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(argv.size()), ptrs.data(), lens.data()));
    if (r == nullptr) return std::string("IOERROR:") + ctx_->errstr;
    std::string out;
    if (r->type == REDIS_REPLY_ERROR) {
      out = "ERROR:" + std::string(r->str, r->len);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements < 6 || r->elements > 8) {
      out = "BADSHAPE";
    } else {
      // The 6th element (highest seq of this instance applied) is checked through seen_, the 7th
      // (Redis time) through now_ms_, the 8th (a stale reply's "resolved") through resolved_.
      const redisReply* seen = r->element[5];
      seen_ = seen->type == REDIS_REPLY_STRING ? std::string(seen->str, seen->len) : "BADTYPE";
      now_ms_ = r->elements >= 7 && r->element[6]->type == REDIS_REPLY_INTEGER
                    ? r->element[6]->integer
                    : -1;
      resolved_ = r->elements >= 8 ? r->element[7]->integer : -1;
      for (size_t i = 0; i < 5; ++i) {
        const redisReply* e = r->element[i];
        if (i > 0) out += ",";
        if (i < 3 && e->type == REDIS_REPLY_STRING) {
          out.append(e->str, e->len);
        } else if (i >= 3 && e->type == REDIS_REPLY_INTEGER) {
          out += std::to_string(e->integer);
        } else {
          out += "BADTYPE(" + std::to_string(e->type) + ")";
        }
      }
    }
    freeReplyObject(r);
    return out;
  }

  std::string Op(const std::string& instance, const std::vector<Entry>& entries,
                 const std::string& op, const std::string& cmp = "",
                 const std::string& operand = "0", const std::string& arg = "0",
                 const std::string& key = kKey) {
    std::vector<std::string> args = {instance, std::to_string(entries.size())};
    for (const auto& e : entries) {
      args.push_back(e.seq);
      args.push_back(e.delta);
    }
    for (const auto* a : {&op, &cmp, &operand, &arg}) args.push_back(*a);
    return Eval(args, key);
  }

  std::string Get() { return Op("A", {}, "get"); }
  std::string Inc(const std::string& delta, const std::string& cmp = "",
                  const std::string& operand = "0") {
    return Op("A", {}, "inc", cmp, operand, delta);
  }
  std::string Set(const std::string& value, const std::string& cmp = "",
                  const std::string& operand = "0") {
    return Op("A", {}, "set", cmp, operand, value);
  }
  std::string Del() { return Op("A", {}, "del"); }
  std::string Flush(const std::string& instance, const std::vector<Entry>& entries) {
    return Op(instance, entries, "flush");
  }

  std::string Cmd(const std::vector<std::string>& argv) { return server_->Command(argv); }
  std::string Value() { return Cmd({"HGET", kKey, "v"}); }
  std::string Mark(const std::string& instance) { return Cmd({"HGET", kKey, "s:" + instance}); }
  int64_t Pttl() { return std::stoll(Cmd({"PTTL", kKey})); }
  // The dedup-only state: no value, marks that expire within 24 h.
  void ExpectMarksOnlyWithTtl() {
    EXPECT_EQ(Cmd({"HEXISTS", kKey, "v"}), "0");
    int64_t pttl = Pttl();
    EXPECT_GT(pttl, 0);
    EXPECT_LE(pttl, kMarkTtlMs);
  }

  std::string script_;
  std::string seen_;       // 6th reply element of the last Eval
  int64_t now_ms_ = -1;    // 7th (Redis time), -1 when absent
  int64_t resolved_ = -1;  // 8th (stale replies), -1 when absent
  std::unique_ptr<RedisServer> server_;
  redisContext* ctx_ = nullptr;
};

// ---- the "seen" element: which of our seqs a returned value already contains ----

TEST_F(CounterScriptTest, ReportsHighestSeqSeenPerInstance) {
  Get();
  EXPECT_EQ(seen_, "0");
  Flush("A", {{"3", "1"}, {"9", "2"}});
  EXPECT_EQ(seen_, "9");
  Get();
  EXPECT_EQ(seen_, "9") << "a read reports what is already applied";
  Op("B", {}, "get");
  EXPECT_EQ(seen_, "0") << "per instance";
  Flush("A", {{"9", "2"}});  // a retry: skipped, still 9
  EXPECT_EQ(seen_, "9");
  EXPECT_EQ(Value(), "3");
}

// ---- plain operations ----

TEST_F(CounterScriptTest, AbsentKeyReadsZeroAndStaysAbsent) {
  EXPECT_EQ(Get(), "ok,0,0,0,0");
  EXPECT_EQ(Flush("A", {}), "ok,0,0,0,0");
  EXPECT_EQ(Cmd({"EXISTS", kKey}), "0");
}

TEST_F(CounterScriptTest, IncCreatesPersistentValue) {
  EXPECT_EQ(Inc("5"), "ok,5,0,1,0");
  EXPECT_EQ(Inc("-7"), "ok,-2,5,1,0");
  EXPECT_EQ(Get(), "ok,-2,-2,0,0");
  EXPECT_EQ(Value(), "-2");
  EXPECT_EQ(Pttl(), -1);
  EXPECT_EQ(Cmd({"HLEN", kKey}), "1");  // no dedup mark without lax entries
}

TEST_F(CounterScriptTest, IncByZeroAndSetZeroOnAbsentKeyWriteNothing) {
  EXPECT_EQ(Inc("0"), "ok,0,0,1,0");
  EXPECT_EQ(Set("0"), "ok,0,0,1,0");
  EXPECT_EQ(Cmd({"EXISTS", kKey}), "0");
}

TEST_F(CounterScriptTest, SetThenGet) {
  EXPECT_EQ(Set("100"), "ok,100,0,1,0");
  EXPECT_EQ(Set("-3"), "ok,-3,100,1,0");
  EXPECT_EQ(Get(), "ok,-3,-3,0,0");
  EXPECT_EQ(Value(), "-3");
}

TEST_F(CounterScriptTest, DelRemovesTheKey) {
  EXPECT_EQ(Set("42"), "ok,42,0,1,0");
  EXPECT_EQ(Del(), "ok,0,42,1,0");
  EXPECT_EQ(Cmd({"EXISTS", kKey}), "0");
  EXPECT_EQ(Get(), "ok,0,0,0,0");
  EXPECT_EQ(Del(), "ok,0,0,1,0");  // deleting an absent key is fine
}

TEST_F(CounterScriptTest, OnlyKeys1IsTouched) {
  EXPECT_EQ(Flush("A", {{"1", "5"}}), "ok,5,5,0,0");
  EXPECT_EQ(Inc("1"), "ok,6,5,1,0");
  EXPECT_EQ(Del(), "ok,0,6,1,0");
  EXPECT_EQ(Cmd({"KEYS", "*"}), kKey);
}

// ---- conditions ----

TEST_F(CounterScriptTest, EveryComparatorForIncAndSet) {
  // stored value 10 against operands 9, 10, 11
  const std::map<std::string, std::vector<bool>> expected = {
      {"", {true, true, true}},     {"eq", {false, true, false}}, {"ne", {true, false, true}},
      {"lt", {false, false, true}}, {"le", {false, true, true}},  {"gt", {true, false, false}},
      {"ge", {true, true, false}}};
  const std::vector<std::string> operands = {"9", "10", "11"};
  for (const auto& [cmp, results] : expected) {
    for (size_t i = 0; i < operands.size(); ++i) {
      SCOPED_TRACE("comparator '" + cmp + "' operand " + operands[i]);
      Cmd({"HSET", kKey, "v", "10"});
      if (results[i]) {
        EXPECT_EQ(Inc("5", cmp, operands[i]), "ok,15,10,1,0");
        EXPECT_EQ(Value(), "15");
      } else {
        // A failed condition: applied = 0, nothing changes, value == previous == current.
        EXPECT_EQ(Inc("5", cmp, operands[i]), "ok,10,10,0,0");
        EXPECT_EQ(Value(), "10");
      }
      Cmd({"HSET", kKey, "v", "10"});
      EXPECT_EQ(Set("7", cmp, operands[i]), results[i] ? "ok,7,10,1,0" : "ok,10,10,0,0");
      EXPECT_EQ(Value(), results[i] ? "7" : "10");
    }
  }
}

TEST_F(CounterScriptTest, ConditionsCompareExactlyBeyond2To53) {
  // As doubles, 9007199254740993 == 9007199254740992; as int64 they differ.
  ASSERT_EQ(Set("9007199254740993"), "ok,9007199254740993,0,1,0");
  EXPECT_EQ(Inc("0", "eq", "9007199254740992"), "ok,9007199254740993,9007199254740993,0,0");
  EXPECT_EQ(Inc("0", "gt", "9007199254740992"), "ok,9007199254740993,9007199254740993,1,0");
  EXPECT_EQ(Inc("0", "lt", "9007199254740994"), "ok,9007199254740993,9007199254740993,1,0");
  EXPECT_EQ(Inc("0", "eq", "9007199254740993"), "ok,9007199254740993,9007199254740993,1,0");
  ASSERT_EQ(Set(kMax), std::string("ok,") + kMax + ",9007199254740993,1,0");
  EXPECT_EQ(Set("1", "gt", "9223372036854775806"), std::string("ok,1,") + kMax + ",1,0");
  ASSERT_EQ(Set(kMin), std::string("ok,") + kMin + ",1,1,0");
  EXPECT_EQ(Set("2", "lt", "-9223372036854775807"), std::string("ok,2,") + kMin + ",1,0");
  ASSERT_EQ(Set("-5"), "ok,-5,2,1,0");
  EXPECT_EQ(Set("3", "gt", "-10"), "ok,3,-5,1,0");  // negative vs negative
  EXPECT_EQ(Set("4", "lt", "-1"), "ok,3,3,0,0");    // positive vs negative
  EXPECT_EQ(Set("4", "ge", "0"), "ok,4,3,1,0");     // against zero
}

TEST_F(CounterScriptTest, EmptyComparatorIgnoresOperand) {
  EXPECT_EQ(Inc("1", "", "-123"), "ok,1,0,1,0");
  EXPECT_EQ(Set("9", "", kMax), "ok,9,1,1,0");
}

// ---- int64 range ----

TEST_F(CounterScriptTest, Int64ExtremesAreExact) {
  EXPECT_EQ(Set(kMax), std::string("ok,") + kMax + ",0,1,0");
  EXPECT_EQ(Value(), kMax);
  EXPECT_EQ(Inc(kMin), std::string("ok,-1,") + kMax + ",1,0");
  EXPECT_EQ(Inc("-9223372036854775807"), std::string("ok,") + kMin + ",-1,1,0");
  EXPECT_EQ(Value(), kMin);
  EXPECT_EQ(Inc(kMax), std::string("ok,-1,") + kMin + ",1,0");
  EXPECT_EQ(Inc("1"), "ok,0,-1,1,0");
  EXPECT_EQ(Inc(kMin), std::string("ok,") + kMin + ",0,1,0");
}

TEST_F(CounterScriptTest, ValuesAbove2To53StayExact) {
  EXPECT_EQ(Set("9007199254740993"), "ok,9007199254740993,0,1,0");
  EXPECT_EQ(Inc("1"), "ok,9007199254740994,9007199254740993,1,0");
  EXPECT_EQ(Inc("-2"), "ok,9007199254740992,9007199254740994,1,0");
  EXPECT_EQ(Inc("9007199254740993"), "ok,18014398509481985,9007199254740992,1,0");
  EXPECT_EQ(Value(), "18014398509481985");
  EXPECT_EQ(Set("-9007199254740993"), "ok,-9007199254740993,18014398509481985,1,0");
  EXPECT_EQ(Inc("-1"), "ok,-9007199254740994,-9007199254740993,1,0");
}

TEST_F(CounterScriptTest, CarriesAcrossChunkBoundaries) {
  EXPECT_EQ(Set("9999999"), "ok,9999999,0,1,0");
  EXPECT_EQ(Inc("1"), "ok,10000000,9999999,1,0");
  EXPECT_EQ(Inc("-1"), "ok,9999999,10000000,1,0");
  EXPECT_EQ(Set("99999999999999"), "ok,99999999999999,9999999,1,0");
  EXPECT_EQ(Inc("1"), "ok,100000000000000,99999999999999,1,0");
  EXPECT_EQ(Inc("-100000000000001"), "ok,-1,100000000000000,1,0");
  EXPECT_EQ(Inc("10000000000000000"), "ok,9999999999999999,-1,1,0");
  EXPECT_EQ(Inc("-9999999999999999"), "ok,0,9999999999999999,1,0");
}

TEST_F(CounterScriptTest, OverflowIsRefusedAndChangesNothing) {
  ASSERT_EQ(Set(kMax), std::string("ok,") + kMax + ",0,1,0");
  EXPECT_EQ(Inc("1"), std::string("overflow,") + kMax + "," + kMax + ",0,0");
  EXPECT_EQ(Inc(kMax, "eq", kMax), std::string("overflow,") + kMax + "," + kMax + ",0,0");
  EXPECT_EQ(Value(), kMax);
  ASSERT_EQ(Set(kMin), std::string("ok,") + kMin + "," + kMax + ",1,0");
  EXPECT_EQ(Inc("-1"), std::string("overflow,") + kMin + "," + kMin + ",0,0");
  EXPECT_EQ(Inc(kMin), std::string("overflow,") + kMin + "," + kMin + ",0,0");
  EXPECT_EQ(Value(), kMin);
  EXPECT_EQ(Pttl(), -1);
  EXPECT_EQ(Cmd({"HLEN", kKey}), "1");
}

// Inc against a C++ reference over random and boundary values: sums, overflow detection and
// comparisons must agree exactly.
TEST_F(CounterScriptTest, MatchesInt64ReferenceOnRandomValues) {
  std::mt19937_64 rng(20240611);
  // clang-format off
  const std::vector<int64_t> special = {
      0, 1, -1, 9999999, 10000000, -10000000, 99999999999999, 100000000000000,
      (int64_t{1} << 53) - 1, int64_t{1} << 53, (int64_t{1} << 53) + 1, -(int64_t{1} << 53) - 1,
      std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::max() - 1,
      std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::min() + 1};
  // clang-format on
  auto pick = [&]() -> int64_t {
    switch (rng() % 4) {
      case 0:
        return static_cast<int64_t>(rng());
      case 1: {  // a random number of digits
        uint64_t mag = rng() >> 1;
        int digits = 1 + static_cast<int>(rng() % 19);
        uint64_t limit = 1;
        for (int i = 0; i < digits && i < 18; ++i) limit *= 10;
        if (digits < 19) mag %= limit;
        return (rng() & 1) ? -static_cast<int64_t>(mag) : static_cast<int64_t>(mag);
      }
      case 2:
        // +-1 around the special values, wrapping (without UB) at the ends of the range
        return static_cast<int64_t>(static_cast<uint64_t>(special[rng() % special.size()]) +
                                    rng() % 3 - 1);
      default:
        return special[rng() % special.size()];
    }
  };
  for (int i = 0; i < 400; ++i) {
    int64_t a = pick(), b = pick();
    const std::string sa = std::to_string(a), sb = std::to_string(b);
    SCOPED_TRACE(absl::StrCat(sa, " + ", sb));
    const std::string prev_value = Cmd({"HGET", kKey, "v"});
    const std::string prev = prev_value == "(nil)" ? "0" : prev_value;
    ASSERT_EQ(Set(sa), absl::StrCat("ok,", sa, ",", prev, ",1,0"));
    int64_t sum = 0;
    if (__builtin_add_overflow(a, b, &sum)) {
      EXPECT_EQ(Inc(sb), absl::StrCat("overflow,", sa, ",", sa, ",0,0"));
    } else {
      EXPECT_EQ(Inc(sb), absl::StrCat("ok,", sum, ",", sa, ",1,0"));
      ASSERT_EQ(Set(sa), absl::StrCat("ok,", sa, ",", sum, ",1,0"));
    }
    // applied tells the comparison's outcome; the value stays a.
    EXPECT_EQ(Inc("0", "lt", sb), absl::StrCat("ok,", sa, ",", sa, ",", a < b ? 1 : 0, ",0"));
    EXPECT_EQ(Inc("0", "eq", sb), absl::StrCat("ok,", sa, ",", sa, ",", a == b ? 1 : 0, ",0"));
    EXPECT_EQ(Inc("0", "gt", sb), absl::StrCat("ok,", sa, ",", sa, ",", a > b ? 1 : 0, ",0"));
  }
}

// ---- lax entries: idempotency, dropping, interplay with strict ops ----

TEST_F(CounterScriptTest, FlushAppliesEntriesOnceAcrossRetries) {
  EXPECT_EQ(Flush("A", {{"1", "5"}, {"2", "7"}}), "ok,12,12,0,0");
  EXPECT_EQ(Mark("A"), "2");
  EXPECT_EQ(Pttl(), -1);
  // The reply got lost and the daemon retries the same batch: nothing is doubled.
  EXPECT_EQ(Flush("A", {{"1", "5"}, {"2", "7"}}), "ok,12,12,0,0");
  // A retry merged with newer entries: only the new ones count.
  EXPECT_EQ(Flush("A", {{"2", "7"}, {"3", "1"}}), "ok,13,13,0,0");
  EXPECT_EQ(Mark("A"), "3");
  // Old seqs alone change nothing, the mark does not go back.
  EXPECT_EQ(Flush("A", {{"3", "1000"}}), "ok,13,13,0,0");
  EXPECT_EQ(Mark("A"), "3");
  // Other instances have their own sequence.
  EXPECT_EQ(Flush("B", {{"1", "100"}, {"2", "-1"}}), "ok,112,112,0,0");
  EXPECT_EQ(Mark("B"), "2");
  EXPECT_EQ(Mark("A"), "3");
  EXPECT_EQ(Value(), "112");
}

TEST_F(CounterScriptTest, LargestSeqIsStoredExactly) {
  EXPECT_EQ(Flush("A", {{"9007199254740990", "1"}, {"9007199254740991", "2"}}), "ok,3,3,0,0");
  EXPECT_EQ(Mark("A"), "9007199254740991");  // a string, not 9.007199254741e+15
  EXPECT_EQ(Flush("A", {{"9007199254740991", "2"}}), "ok,3,3,0,0");
}

TEST_F(CounterScriptTest, EntriesRunBeforeTheStrictOp) {
  // Spec example: LAX +5 pending, then Set 100 -> previous 5.
  EXPECT_EQ(Op("A", {{"1", "5"}}, "set", "", "0", "100"), "ok,100,5,1,0");
  // Retried after a timeout: the entry is skipped, the set (not idempotent) runs again.
  EXPECT_EQ(Op("A", {{"1", "5"}}, "set", "", "0", "100"), "ok,100,100,1,0");
  EXPECT_EQ(Op("A", {{"2", "1"}}, "inc", "", "0", "10"), "ok,111,101,1,0");
  EXPECT_EQ(Op("A", {{"3", "1"}}, "get"), "ok,112,112,0,0");
  EXPECT_EQ(Mark("A"), "3");
}

TEST_F(CounterScriptTest, ConditionSeesTheValueAfterEntries) {
  // Failed condition: the op changes nothing, but the entries stay applied.
  EXPECT_EQ(Op("A", {{"1", "5"}}, "inc", "eq", "0", "1"), "ok,5,5,0,0");
  EXPECT_EQ(Value(), "5");
  EXPECT_EQ(Mark("A"), "1");
  EXPECT_EQ(Op("A", {{"2", "5"}}, "set", "eq", "10", "0"), "ok,0,10,1,0");
  EXPECT_EQ(Value(), "0");
}

TEST_F(CounterScriptTest, OpOverflowKeepsTheEntries) {
  ASSERT_EQ(Set("5"), "ok,5,0,1,0");
  EXPECT_EQ(Op("A", {{"1", "10"}}, "inc", "", "0", kMax), "overflow,15,15,0,0");
  EXPECT_EQ(Value(), "15");
  EXPECT_EQ(Mark("A"), "1");
}

TEST_F(CounterScriptTest, EntriesThatWouldOverflowAreDropped) {
  ASSERT_EQ(Set("9223372036854775806"), "ok,9223372036854775806,0,1,0");
  // +1 -> MAX; +1 dropped; -5 -> MAX-5; +10 dropped.
  EXPECT_EQ(Flush("A", {{"1", "1"}, {"2", "1"}, {"3", "-5"}, {"4", "10"}}),
            "ok,9223372036854775802,9223372036854775802,0,2");
  EXPECT_EQ(Value(), "9223372036854775802");
  EXPECT_EQ(Mark("A"), "4");  // dropped entries count as done: a retry does not retry them
  EXPECT_EQ(Flush("A", {{"4", "10"}}), "ok,9223372036854775802,9223372036854775802,0,0");

  ASSERT_EQ(Set(kMin), std::string("ok,") + kMin + ",9223372036854775802,1,0");
  EXPECT_EQ(Op("A", {{"5", "-1"}, {"6", kMin}}, "inc", "", "0", "1"),
            std::string("ok,-9223372036854775807,") + kMin + ",1,2");
  EXPECT_EQ(Mark("A"), "6");
  EXPECT_EQ(Pttl(), -1);
}

TEST_F(CounterScriptTest, DelFoldsEntriesIntoPreviousAndKeepsMarks) {
  ASSERT_EQ(Set("1"), "ok,1,0,1,0");
  EXPECT_EQ(Op("A", {{"1", "5"}}, "del"), "ok,0,6,1,0");
  EXPECT_EQ(Mark("A"), "1");  // a retried flush of seq 1 must still be recognised
  ExpectMarksOnlyWithTtl();
  EXPECT_EQ(Flush("A", {{"1", "5"}}), "ok,0,0,0,0");
  EXPECT_EQ(Cmd({"HEXISTS", kKey, "v"}), "0");
  // Another daemon's late lax increment brings the key back (docs/api.md#strict-and-lax), now
  // without TTL.
  EXPECT_EQ(Flush("B", {{"7", "3"}}), "ok,3,3,0,0");
  EXPECT_EQ(Value(), "3");
  EXPECT_EQ(Pttl(), -1);
}

// ---- TTL housekeeping ----

TEST_F(CounterScriptTest, MarksWithoutValueExpireAndValueIsPersistent) {
  // Entries that cancel out on an absent key: only the dedup mark is written.
  EXPECT_EQ(Flush("A", {{"1", "5"}, {"2", "-5"}}), "ok,0,0,0,0");
  EXPECT_EQ(Mark("A"), "2");
  ExpectMarksOnlyWithTtl();
  EXPECT_EQ(Inc("1"), "ok,1,0,1,0");
  EXPECT_EQ(Pttl(), -1);  // a value never expires
  EXPECT_EQ(Flush("A", {{"3", "1"}}), "ok,2,2,0,0");
  EXPECT_EQ(Pttl(), -1);
  EXPECT_EQ(Del(), "ok,0,2,1,0");
  ExpectMarksOnlyWithTtl();
  EXPECT_EQ(Mark("A"), "3");
  EXPECT_EQ(Set("4"), "ok,4,0,1,0");
  EXPECT_EQ(Pttl(), -1);
}

TEST_F(CounterScriptTest, MarksOnlyKeyReallyExpires) {
  EXPECT_EQ(Flush("A", {{"1", "0"}}), "ok,0,0,0,0");
  ExpectMarksOnlyWithTtl();
  // Fast-forward: shorten the TTL the script set, and watch the key go (poll, no fixed sleep).
  ASSERT_EQ(Cmd({"PEXPIRE", kKey, "20"}), "1");
  EXPECT_TRUE(PollUntil([&] { return Cmd({"EXISTS", kKey}) == "0"; }, 5s));
}

// ---- corrupt data and bad input ----

TEST_F(CounterScriptTest, CorruptStoredValueIsReportedAndUntouchedExceptBySetAndDel) {
  const std::vector<std::string> corrupt = {"abc",
                                            "",
                                            "007",
                                            "-0",
                                            "+1",
                                            "1.5",
                                            " 1",
                                            "1 ",
                                            "1e3",
                                            "0x10",
                                            "--1",
                                            "9223372036854775808",
                                            "-9223372036854775809",
                                            "99999999999999999999",
                                            std::string("1\0", 2)};
  for (const auto& bad : corrupt) {
    SCOPED_TRACE("stored v = '" + bad + "'");
    Cmd({"DEL", kKey});
    ASSERT_EQ(Cmd({"HSET", kKey, "v", bad}), "1");
    for (const std::string op : {"flush", "get", "inc"}) {
      SCOPED_TRACE(op);
      EXPECT_EQ(Op("A", {{"1", "5"}}, op, "", "0", "1"), "notint,0,0,0,0");
    }
    // A condition cannot be evaluated on it either.
    EXPECT_EQ(Op("A", {{"1", "5"}}, "set", "eq", "0", "1"), "notint,0,0,0,0");
    EXPECT_EQ(Value(), bad);
    EXPECT_EQ(Cmd({"HLEN", kKey}), "1");  // no dedup mark either: the entries are still to do
    EXPECT_EQ(Pttl(), -1);
    // Set without a condition and Del repair the key: the unreadable value counts as 0.
    EXPECT_EQ(Op("A", {{"1", "5"}}, "set", "", "0", "1"), "ok,1,5,1,0");
    EXPECT_EQ(Value(), "1");
    EXPECT_EQ(Mark("A"), "1");
    ASSERT_EQ(Cmd({"HSET", kKey, "v", bad}), "0");
    EXPECT_EQ(Op("A", {{"2", "5"}}, "del"), "ok,0,5,1,0");
    EXPECT_EQ(Cmd({"HEXISTS", kKey, "v"}), "0");
  }
}

TEST_F(CounterScriptTest, BadArgvIsAnErrorAndWritesNothing) {
  ASSERT_EQ(Set("7"), "ok,7,0,1,0");
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"", "0", "get", "", "0", "0"},   // empty instance
      {"A", "x", "get", "", "0", "0"},  // bad count
      {"A", "-1", "get", "", "0", "0"},
      {"A", "01", "1", "1", "get", "", "0", "0"},
      {"A", "1", "get", "", "0", "0"},  // count / ARGV mismatch
      {"A", "0", "get", "", "0", "0", "extra"},
      {"A", "1", "1", "5", "get", "", "0"},
      {"A", "1", "0", "5", "flush", "", "0", "0"},   // seq 0
      {"A", "1", "01", "5", "flush", "", "0", "0"},  // non-canonical seq
      {"A", "1", "-1", "5", "flush", "", "0", "0"},
      {"A", "1", "9007199254740992", "5", "flush", "", "0", "0"},  // seq >= 2^53
      {"A", "2", "2", "1", "2", "1", "flush", "", "0", "0"},       // seqs not increasing
      {"A", "2", "3", "1", "2", "1", "flush", "", "0", "0"},
      {"A", "1", "1", "1.0", "flush", "", "0", "0"},  // bad deltas
      {"A", "1", "1", "-0", "flush", "", "0", "0"},
      {"A", "1", "1", "+5", "flush", "", "0", "0"},
      {"A", "1", "1", "", "flush", "", "0", "0"},
      {"A", "1", "1", "9223372036854775808", "flush", "", "0", "0"},
      {"A", "1", "1", "5", "incr", "", "0", "1"},  // unknown op (after a valid entry)
      {"A", "0", "INC", "", "0", "1"},
      {"A", "0", "", "", "0", "1"},
      {"A", "0", "inc", "==", "0", "1"},  // unknown comparator
      {"A", "0", "inc", "EQ", "0", "1"},
      {"A", "0", "inc", "lte", "0", "1"},
      {"A", "0", "inc", "eq", "01", "1"},  // bad operand
      {"A", "0", "inc", "eq", "", "1"},
      {"A", "0", "inc", "eq", "-9223372036854775809", "1"},
      {"A", "0", "inc", "", "0", "9223372036854775808"},  // bad arg
      {"A", "0", "set", "", "0", " 1"},
      {"A", "0", "set", "", "0", "-0"},
      {"A", "1", "1", "5", "get", "", "0", "x"},
  };
  for (const auto& args : bad) {
    std::string joined;
    for (const auto& a : args) joined += "'" + a + "' ";
    SCOPED_TRACE(joined);
    const std::string reply = Eval(args);
    EXPECT_EQ(reply.rfind("ERROR:ERR distkit: ", 0), 0u) << reply;
  }
  EXPECT_EQ(Cmd({"HGETALL", kKey}), "v,7");
  EXPECT_EQ(Pttl(), -1);
}

TEST_F(CounterScriptTest, CorruptMarkIsReportedWritesNothingAndIsRepairedBySet) {
  ASSERT_EQ(Cmd({"HSET", kKey, "v", "7", "s:A", "garbage"}), "2");
  EXPECT_EQ(Flush("A", {{"1", "5"}}), "corrupt,0,0,0,0");
  EXPECT_EQ(Flush("B", {{"1", "5"}}), "ok,12,12,0,0");  // other instances are unaffected
  EXPECT_EQ(Mark("A"), "garbage");
  EXPECT_EQ(Op("A", {}, "set", "", "0", "3"), "ok,3,12,1,0");
  EXPECT_EQ(Cmd({"HEXISTS", kKey, "s:A"}), "0");
  EXPECT_EQ(Flush("A", {{"1", "5"}}), "ok,8,8,0,0");
}

// ---- dedup marks with a resend bound (docs/design.md, "Dedup marks"; issue #11 finding 10) ----

// A flush carrying sent_ms and bound_ms (the daemon's form).
std::vector<std::string> BoundedFlushArgs(const std::string& instance,
                                          const std::vector<Entry>& entries, int64_t sent_ms,
                                          int64_t bound_ms) {
  std::vector<std::string> args = {instance, std::to_string(entries.size())};
  for (const auto& e : entries) {
    args.push_back(e.seq);
    args.push_back(e.delta);
  }
  for (const char* a : {"flush", "", "0", "0"}) args.push_back(a);
  args.push_back(std::to_string(sent_ms));
  args.push_back(std::to_string(bound_ms));
  return args;
}

TEST_F(CounterScriptTest, EntriesPastTheBoundAreRefusedAndTheReplySaysWhichWereApplied) {
  ASSERT_EQ(Get(), "ok,0,0,0,0");
  const int64_t now = now_ms_;
  ASSERT_GT(now, 0) << "every reply carries Redis time";
  constexpr int64_t kBound = 100000;
  EXPECT_EQ(Eval(BoundedFlushArgs("A", {{"1", "5"}}, now, kBound)), "ok,5,5,0,0");
  const std::string mark = Mark("A");
  ASSERT_EQ(mark.rfind("1@", 0), 0u) << mark;
  const int64_t expiry = std::stoll(mark.substr(2));
  EXPECT_GE(expiry, now + 2 * kBound) << "the mark lives 2 x bound after its write";
  // A resend within the bound (its reply was lost) is deduplicated as always.
  EXPECT_EQ(Eval(BoundedFlushArgs("A", {{"1", "5"}, {"2", "7"}}, now, kBound)), "ok,12,12,0,0");
  EXPECT_EQ(seen_, "2");
  // Past the bound: refused, nothing written; seen tells what was applied, and within 1.5 x bound
  // the answer is authoritative (3 was never applied: the daemon sends it again as new work).
  EXPECT_EQ(Eval(BoundedFlushArgs("A", {{"2", "7"}, {"3", "1"}}, now - 120000, kBound)),
            "stale,12,12,0,0");
  EXPECT_EQ(seen_, "2");
  EXPECT_EQ(resolved_, 1);
  EXPECT_EQ(Value(), "12");
  EXPECT_EQ(Mark("A").rfind("2@", 0), 0u);
  // Later than that the marks of applied entries may be gone: not authoritative.
  EXPECT_EQ(Eval(BoundedFlushArgs("A", {{"3", "1"}}, now - 200000, kBound)), "stale,12,12,0,0");
  EXPECT_EQ(resolved_, 0);
  EXPECT_EQ(Value(), "12");
  // Without entries nothing can be stale; old-style calls (no bound) keep working.
  EXPECT_EQ(Eval({"A", "0", "get", "", "0", "0", std::to_string(now - 999999), "1"}),
            "ok,12,12,0,0");
  EXPECT_EQ(Flush("B", {{"1", "1"}}), "ok,13,13,0,0");
  EXPECT_EQ(Mark("B"), "1") << "no bound, no expiry: never collected";
  EXPECT_EQ(Eval({"A", "1", "4", "1", "flush", "", "0", "0", "-1", "10"}).rfind("ERROR:", 0), 0u);
  EXPECT_EQ(Eval({"A", "1", "4", "1", "flush", "", "0", "0", "0", "0"}).rfind("ERROR:", 0), 0u);
  EXPECT_EQ(Eval({"A", "1", "4", "1", "flush", "", "0", "0", "x", "10"}).rfind("ERROR:", 0), 0u);
}

TEST_F(CounterScriptTest, ExpiredMarksOfOtherProcessesAreCollectedOthersKept) {
  ASSERT_EQ(Get(), "ok,0,0,0,0");
  const int64_t now = now_ms_;
  ASSERT_EQ(Cmd({"HSET", kKey, "v", "10", "s:gone", absl::StrCat("4@", now - 1), "s:live",
                 absl::StrCat("9@", now + 100000), "s:old", "3"}),
            "4");
  // A process writing its first mark here collects the expired ones (not its own, not marks
  // without an expiry, not live ones).
  EXPECT_EQ(Eval(BoundedFlushArgs("new", {{"1", "1"}}, now, 100000)), "ok,11,11,0,0");
  EXPECT_EQ(Mark("gone"), "(nil)");
  EXPECT_EQ(Mark("live"), absl::StrCat("9@", now + 100000));
  EXPECT_EQ(Mark("old"), "3");
  EXPECT_EQ(Mark("new").rfind("1@", 0), 0u);
  // The live process's resend of an applied entry is still deduplicated.
  EXPECT_EQ(Eval(BoundedFlushArgs("live", {{"9", "100"}}, now, 100000)), "ok,11,11,0,0");
  EXPECT_EQ(Value(), "11");
}

// The safety rule in real time with a short bound: while a resend of an applied entry can still
// be accepted (Redis time ≤ sent + bound) its mark exists and deduplicates it; the mark goes
// only after 2 x bound, when every resend is refused as stale, so nothing counts twice.
TEST_F(CounterScriptTest, AMarkOutlivesEveryResendThatCanStillBeAccepted) {
  constexpr int64_t kBound = 200;
  ASSERT_EQ(Get(), "ok,0,0,0,0");
  const int64_t sent = now_ms_;
  ASSERT_EQ(Eval(BoundedFlushArgs("A", {{"1", "5"}}, sent, kBound)), "ok,5,5,0,0");
  int accepted = 0;
  std::string reply;
  ASSERT_TRUE(PollUntil(
      [&] {
        reply = Eval(BoundedFlushArgs("A", {{"1", "5"}}, sent, kBound));
        if (reply == "ok,5,5,0,0") ++accepted;
        return reply != "ok,5,5,0,0";
      },
      10s));
  EXPECT_EQ(reply, "stale,5,5,0,0");
  EXPECT_GT(accepted, 0);
  // Other processes' first writes collect A's mark once it expired (2 x bound after its write).
  int n = 0;
  ASSERT_TRUE(PollUntil(
      [&] {
        Eval(BoundedFlushArgs(absl::StrCat("P", ++n), {{"1", "0"}}, now_ms_, kBound));
        return Mark("A") == "(nil)";
      },
      10s));
  EXPECT_GE(now_ms_, sent + 2 * kBound);
  // A's old entry can no longer be applied: refused, not counted again.
  EXPECT_EQ(Eval(BoundedFlushArgs("A", {{"1", "5"}}, sent, kBound)), "stale,5,5,0,0");
  EXPECT_EQ(resolved_, 0);
  EXPECT_EQ(Value(), "5");
}

TEST_F(CounterScriptTest, WrongTypeKeyIsAnError) {
  ASSERT_EQ(Cmd({"SET", kKey, "5"}), "OK");
  const std::string reply = Get();
  EXPECT_NE(reply.find("WRONGTYPE"), std::string::npos) << reply;
  EXPECT_EQ(Cmd({"GET", kKey}), "5");
  // Set without a condition and Del overwrite it.
  EXPECT_EQ(Set("9"), "ok,9,0,1,0");
  EXPECT_EQ(Value(), "9");
  ASSERT_EQ(Cmd({"DEL", kKey}), "1");
  ASSERT_EQ(Cmd({"RPUSH", kKey, "x"}), "1");
  EXPECT_EQ(Del(), "ok,0,0,1,0");
  EXPECT_EQ(Cmd({"TYPE", kKey}), "none");
}

// ---- how the daemon loads it ----

TEST_F(CounterScriptTest, WorksThroughScriptLoadAndEvalsha) {
  const std::string sha = Cmd({"SCRIPT", "LOAD", script_});
  ASSERT_EQ(sha.size(), 40u) << sha;
  const std::string reply =
      Cmd({"EVALSHA", sha, "1", kKey, "A", "1", "1", kMax, "inc", "ge", kMin, "0"});
  // The last element is Redis time.
  EXPECT_EQ(reply.substr(0, reply.rfind(',')), std::string("ok,") + kMax + "," + kMax + ",1,0,1");
}

TEST_F(CounterScriptTest, EmbeddedCopyIsTheLibrariesThenTheFile) {
  // Every lua/lib/*.lua in file-name order (each ending with a newline), then lua/counter.lua.
  std::vector<std::string> libs;
  for (const auto& entry : std::filesystem::directory_iterator(DISTKIT_SOURCE_DIR "/lua/lib")) {
    if (entry.path().extension() == ".lua") libs.push_back(entry.path().string());
  }
  ASSERT_FALSE(libs.empty());
  std::sort(libs.begin(), libs.end());
  std::string expected;
  for (const auto& lib : libs) {
    expected += ReadFile(lib);
    if (expected.empty() || expected.back() != '\n') expected += '\n';
  }
  const std::string file = ReadFile(DISTKIT_SOURCE_DIR "/lua/counter.lua");
  ASSERT_FALSE(file.empty());
  // The helpers live in the library only: the script itself does not define them again.
  EXPECT_EQ(file.find("local function i64_add"), std::string::npos);
  expected += file;
  EXPECT_EQ(script_, expected);
}

// ---- test support ----

TEST(RedisServerTest, CommandRendersReplies) {
  auto server = RedisServer::Start();
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->port(), 0);
  EXPECT_EQ(server->url(), "unix:" + server->socket_path());
  EXPECT_EQ(server->socket_path(), server->dir() + "/redis.sock");
  EXPECT_EQ(server->Command({"SET", "a", "x y"}), "OK");
  EXPECT_EQ(server->Command({"GET", "a"}), "x y");
  EXPECT_EQ(server->Command({"INCR", "n"}), "1");
  EXPECT_EQ(server->Command({"GET", "missing"}), "(nil)");
  EXPECT_EQ(server->Command({"RPUSH", "l", "p", "q"}), "2");
  EXPECT_EQ(server->Command({"LRANGE", "l", "0", "-1"}), "p,q");
  EXPECT_EQ(server->Command({"NOSUCHCOMMAND"}).rfind("ERR", 0), 0u);
  EXPECT_EQ(server->Command({"CONFIG", "GET", "save"}), "save,");  // no persistence
  auto other = RedisServer::Start();
  ASSERT_NE(other, nullptr);
  EXPECT_NE(other->socket_path(), server->socket_path());
  EXPECT_EQ(other->Command({"GET", "a"}), "(nil)");  // never a shared instance
}

std::string PingOn(redisContext* c) {
  if (c == nullptr) return "(null context)";
  auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
  if (r == nullptr) return "(io error)";
  std::string s(r->str, r->len);
  freeReplyObject(r);
  return s;
}

TEST(RedisServerTest, PauseResumeRestartKeepAddresses) {
  RedisServer::Options options;
  options.tcp = true;
  auto server = RedisServer::Start(options);
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  const std::string socket = server->socket_path();
  ASSERT_GT(port, 0);
  EXPECT_EQ(server->tcp_url(), "redis://127.0.0.1:" + std::to_string(port));
  redisContext* tcp = redisConnect("127.0.0.1", port);
  EXPECT_EQ(PingOn(tcp), "PONG");
  redisFree(tcp);
  ASSERT_EQ(server->Command({"SET", "a", "1"}), "OK");

  redisContext* held = server->Connect();
  ASSERT_EQ(PingOn(held), "PONG");
  server->Pause();
  redisContext* c = redisConnectUnixWithTimeout(socket.c_str(), {1, 0});
  ASSERT_NE(c, nullptr);
  redisSetTimeout(c, {0, 300 * 1000});
  EXPECT_EQ(PingOn(c), "(io error)");  // a stopped server does not answer
  redisFree(c);
  server->Resume();
  EXPECT_EQ(PingOn(held), "PONG");  // connections survive a pause
  EXPECT_EQ(server->Command({"GET", "a"}), "1");

  server->Restart();
  EXPECT_EQ(server->socket_path(), socket);
  EXPECT_EQ(server->port(), port);
  EXPECT_EQ(PingOn(held), "(io error)");  // a restart drops connections...
  redisFree(held);
  EXPECT_EQ(server->Command({"GET", "a"}), "(nil)");  // ...and data: no persistence
  tcp = redisConnect("127.0.0.1", port);
  EXPECT_EQ(PingOn(tcp), "PONG");
  redisFree(tcp);
}

TEST(RedisServerTest, StopRemovesSocketAndTeardownNeverHangs) {
  auto server = RedisServer::Start();
  ASSERT_NE(server, nullptr);
  const std::string dir = server->dir(), socket = server->socket_path();
  EXPECT_TRUE(std::filesystem::exists(socket));
  server->Stop();
  EXPECT_FALSE(std::filesystem::exists(socket));
  server->Restart();
  EXPECT_EQ(server->Command({"PING"}), "PONG");
  server->Pause();
  server.reset();  // must not wait for the stopped server
  EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST(ProcessTest, RunCapturesOutputAndExitCode) {
  auto [code, output] = Process::Run("/bin/sh", {"-c", "echo out; echo err >&2; exit 3"}, 10s);
  EXPECT_EQ(code, 3);
  EXPECT_NE(output.find("out\n"), std::string::npos) << output;
  EXPECT_NE(output.find("err\n"), std::string::npos) << output;
  auto [code2, output2] = Process::Run("sh", {"-c", "echo found via PATH"}, 10s);
  EXPECT_EQ(code2, 0);
  EXPECT_EQ(output2, "found via PATH\n");
}

TEST(ProcessTest, ExtraEnvironmentOverridesInherited) {
  setenv("DISTKIT_TEST_INHERITED", "parent", 1);
  Process p("/bin/sh", {"-c", "echo $DISTKIT_TEST_INHERITED $DISTKIT_TEST_EXTRA"},
            {"DISTKIT_TEST_INHERITED=child", "DISTKIT_TEST_EXTRA=x"});
  ASSERT_TRUE(p.Start());
  EXPECT_EQ(p.Wait(10s), 0);
  EXPECT_EQ(p.Output(), "child x\n");
  unsetenv("DISTKIT_TEST_INHERITED");
}

TEST(ProcessTest, SignalWaitTimeoutAndKillOnDestruction) {
  pid_t pid = 0;
  {
    Process p("/bin/sleep", {"60"});
    ASSERT_TRUE(p.Start());
    EXPECT_GT(p.pid(), 0);
    EXPECT_TRUE(p.Running());
    EXPECT_EQ(p.Wait(50ms), -1);  // timeout
    p.Signal(SIGTERM);
    EXPECT_EQ(p.Wait(10s), 128 + SIGTERM);
    EXPECT_FALSE(p.Running());
    EXPECT_EQ(p.Wait(0ms), 128 + SIGTERM);  // stays known after reaping

    Process q("/bin/sleep", {"60"});
    ASSERT_TRUE(q.Start());
    pid = q.pid();
    q.Signal(SIGSTOP);
  }  // q is stopped and still running: the destructor must kill and reap it
  EXPECT_EQ(kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST(ProcessTest, StartFailsForMissingBinary) {
  Process p("/nonexistent/distkit-binary", {});
  bool started = true;
  EXPECT_NONFATAL_FAILURE(started = p.Start(), "cannot exec");
  EXPECT_FALSE(started);
  EXPECT_FALSE(p.Running());
}

// The process state letter of `pid` from /proc ('Z' zombie), 0 when it is gone.
char StateOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  return (paren == std::string::npos || paren + 2 >= stat.size()) ? 0 : stat[paren + 2];
}

TEST(ProcessTest, ChildDiesWhenTheTestProcessDies) {
  // The middle process skips all destructors: its Process output file goes into this dir.
  const std::string tmp = MakeTempDir("distkit-pdeathsig");
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t middle = fork();
  ASSERT_GE(middle, 0);
  if (middle == 0) {  // plays the test process: starts a child, then dies without cleanup
    close(fds[0]);
    setenv("TMPDIR", tmp.c_str(), 1);
    Process p("/bin/sleep", {"60"});
    if (!p.Start()) _exit(1);
    pid_t child = p.pid();
    if (write(fds[1], &child, sizeof(child)) != sizeof(child)) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  pid_t child = 0;
  ASSERT_EQ(read(fds[0], &child, sizeof(child)), static_cast<ssize_t>(sizeof(child)));
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(middle, &status, 0), middle);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(PollUntil(
      [&] {
        char s = StateOf(child);
        return s == 0 || s == 'Z';
      },
      10s));
  std::filesystem::remove_all(tmp);
}

TEST(ProcessTest, PollUntilAndMakeTempDir) {
  int calls = 0;
  EXPECT_TRUE(PollUntil([&] { return ++calls == 3; }, 10s));
  EXPECT_EQ(calls, 3);
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(PollUntil([] { return false; }, 30ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);

  const std::string a = MakeTempDir("distkit-test"), b = MakeTempDir("distkit-test");
  EXPECT_TRUE(std::filesystem::is_directory(a));
  EXPECT_NE(a, b);
  EXPECT_NE(a.find("distkit-test-"), std::string::npos);
  std::filesystem::remove(a);
  std::filesystem::remove(b);
}

}  // namespace
}  // namespace distkit::testing
