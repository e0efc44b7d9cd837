// lua/icounter.lua against a real redis-server: the op table of docs/instance_counters.md, the
// strict instance-aware scenarios 40–78 (docs/instance_counters.md) at script level (several
// instances = several ids calling the script; a dead instance = `reap` of its id), regressions
// for the original defects 1-8, epochs, TTLs, overflow and bad input. The text under test is the
// embedded one (lua/lib/*.lua prepended), exactly what the daemon loads.

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <cstdint>
#include <fstream>
#include <memory>
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
constexpr char kKey[] = "dk:{0a1b2c3d}:i:ns:k";
constexpr int64_t kTtlMs = 86400000;

// One daemon as the script sees it: instance id, incarnation, dedup id (one per process).
struct Inst {
  std::string id, inc, dedup;
};
Inst Daemon(const std::string& id, const std::string& inc = "1") { return {id, inc, "proc-" + id}; }
// The same process after it re-registered: same id and dedup id, next incarnation.
Inst Reregistered(const Inst& d, const std::string& inc) { return {d.id, inc, d.dedup}; }

struct Entry {
  std::string seq, kind, value;
};
struct Cond {
  std::string cmp;
  std::string operand = "0";
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class ICounterScriptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    script_ = distkit::redis::EmbeddedScripts().at("icounter");
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

  // Runs the script and renders the reply as "status,cum,inst,prev_cum,prev_inst,applied" or
  // "ERROR:<message>"; epoch, seen and dropped go to epoch_, seen_, dropped_. The reply's shape
  // is checked: int64s and the epoch must be bulk strings (a Lua number would be truncated),
  // applied and dropped integers.
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
    epoch_ = seen_ = "UNSET";
    dropped_ = -1;
    now_ms_ = resolved_ = -1;
    std::string out;
    auto str = [](const redisReply* e) {
      return e->type == REDIS_REPLY_STRING ? std::string(e->str, e->len)
                                           : "BADTYPE(" + std::to_string(e->type) + ")";
    };
    auto num = [](const redisReply* e) {
      return e->type == REDIS_REPLY_INTEGER ? std::to_string(e->integer)
                                            : "BADTYPE(" + std::to_string(e->type) + ")";
    };
    if (r->type == REDIS_REPLY_ERROR) {
      out = "ERROR:" + std::string(r->str, r->len);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements < 10 || r->elements > 12) {
      out = "BADSHAPE";
    } else {
      for (size_t i = 0; i < 5; ++i) out += (i > 0 ? "," : "") + str(r->element[i]);
      out += "," + num(r->element[5]);
      epoch_ = str(r->element[6]);
      seen_ = str(r->element[7]);
      const std::string d = num(r->element[8]);
      dropped_ = d.rfind("BADTYPE", 0) == 0 ? -2 : std::stoll(d);
      before_ = str(r->element[9]);
      // With a resend bound: Redis time, and a stale reply's "resolved".
      if (r->elements > 10) now_ms_ = r->element[10]->integer;
      if (r->elements > 11) resolved_ = r->element[11]->integer;
    }
    freeReplyObject(r);
    return out;
  }

  std::string Run(const Inst& w, const std::vector<Entry>& entries, const std::string& op,
                  const Cond& cond = {}, const std::string& arg = "0",
                  const std::vector<std::string>& extra = {}, const std::string& key = kKey) {
    std::vector<std::string> args = {w.id, w.inc, w.dedup, std::to_string(entries.size())};
    for (const auto& e : entries) args.insert(args.end(), {e.seq, e.kind, e.value});
    args.insert(args.end(), {op, cond.cmp, cond.operand, arg});
    args.insert(args.end(), extra.begin(), extra.end());
    return Eval(args, key);
  }

  std::string Get(const Inst& w, const std::string& key = kKey) {
    return Run(w, {}, "get", {}, "0", {}, key);
  }
  std::string Inc(const Inst& w, const std::string& d, const std::string& key = kKey,
                  const Cond& c = {}) {
    return Run(w, {}, "inc", c, d, {}, key);
  }
  std::string Set(const Inst& w, const std::string& v, const std::string& key = kKey,
                  const Cond& c = {}) {
    return Run(w, {}, "set", c, v, {}, key);
  }
  std::string Soi(const Inst& w, const std::string& v, const std::string& key = kKey,
                  const Cond& c = {}) {
    return Run(w, {}, "set_on_instance", c, v, {}, key);
  }
  std::string Del(const Inst& w, const std::string& key = kKey) {
    return Run(w, {}, "del", {}, "0", {}, key);
  }
  std::string Dor(const Inst& w, const std::string& key = kKey) {
    return Run(w, {}, "del_on_instance", {}, "0", {}, key);
  }
  std::string Reap(const Inst& w, const Inst& dead, const std::string& key = kKey) {
    return Run(w, {}, "reap", {}, "0", {dead.id, dead.inc}, key);
  }
  std::string Restore(const Inst& w, const std::string& epoch, const std::string& value,
                      const std::string& key = kKey) {
    return Run(w, {}, "restore", {}, "0", {epoch, value}, key);
  }
  std::string Flush(const Inst& w, const std::vector<Entry>& entries,
                    const std::string& key = kKey) {
    return Run(w, entries, "get", {}, "0", {}, key);
  }
  // "cumulative,instance" as `w` reads them.
  std::string View(const Inst& w, const std::string& key = kKey) {
    std::string r = Get(w, key);
    const size_t a = r.find(','), b = r.find(',', a + 1), c = r.find(',', b + 1);
    if (r.rfind("ok,", 0) != 0 || c == std::string::npos) return "BAD:" + r;
    return r.substr(a + 1, c - a - 1);
  }

  std::string Cmd(const std::vector<std::string>& argv) { return server_->Command(argv); }
  std::string Field(const std::string& f, const std::string& key = kKey) {
    return Cmd({"HGET", key, f});
  }
  std::string Epoch(const std::string& key = kKey) { return Field("e", key); }
  int64_t Pttl(const std::string& key = kKey) { return std::stoll(Cmd({"PTTL", key})); }
  // Redis TIME in µs.
  int64_t NowUs() {
    const std::string t = Cmd({"TIME"});
    const size_t comma = t.find(',');
    return std::stoll(t.substr(0, comma)) * 1000000 + std::stoll(t.substr(comma + 1));
  }
  // The bookkeeping-only state: no c, no s:*, a TTL of at most 24 h.
  void ExpectBookkeepingOnlyWithTtl(const std::string& key = kKey) {
    EXPECT_EQ(Cmd({"HEXISTS", key, "c"}), "0");
    for (const std::string& f : Split(Cmd({"HKEYS", key}))) EXPECT_NE(f.rfind("s:", 0), 0u) << f;
    const int64_t pttl = Pttl(key);
    EXPECT_GT(pttl, 0);
    EXPECT_LE(pttl, kTtlMs);
  }
  static std::vector<std::string> Split(const std::string& s) {
    std::vector<std::string> out;
    if (s.empty()) return out;
    size_t start = 0;
    for (size_t comma; (comma = s.find(',', start)) != std::string::npos; start = comma + 1) {
      out.push_back(s.substr(start, comma - start));
    }
    out.push_back(s.substr(start));
    return out;
  }

  std::string script_;
  std::string epoch_, seen_;  // 7th and 8th reply elements of the last Eval
  int64_t dropped_ = -1;      // 9th
  std::string before_;        // 10th: the caller's slice before the lax entries
  int64_t now_ms_ = -1;       // 11th (bounded calls): Redis time
  int64_t resolved_ = -1;     // 12th (stale replies)
  std::unique_ptr<RedisServer> server_;
  redisContext* ctx_ = nullptr;
};

const Inst c0 = Daemon("c0"), c1 = Daemon("c1"), c2 = Daemon("c2"), c3 = Daemon("c3"),
           c4 = Daemon("c4");

// ================= the op table =================

TEST_F(ICounterScriptTest, AbsentKeyReadsZeroAndStaysAbsent) {
  EXPECT_EQ(Get(c0), "ok,0,0,0,0,0");
  EXPECT_EQ(epoch_, "0");
  EXPECT_EQ(seen_, "0");
  EXPECT_EQ(dropped_, 0);
  EXPECT_EQ(Inc(c0, "0"), "ok,0,0,0,0,1");
  EXPECT_EQ(Soi(c0, "0"), "ok,0,0,0,0,1");
  EXPECT_EQ(Set(c0, "0"), "ok,0,0,0,0,1");
  EXPECT_EQ(Del(c0), "ok,0,0,0,0,1");
  EXPECT_EQ(Dor(c0), "ok,0,0,0,0,1");
  EXPECT_EQ(Reap(c0, c1), "ok,0,0,0,0,0");
  EXPECT_EQ(Restore(c0, "1", "5"), "ok,0,0,0,0,0");
  EXPECT_EQ(epoch_, "0");
  EXPECT_EQ(Cmd({"EXISTS", kKey}), "0");
}

// "before" is the slice before the carried entries: the daemon compares it with the slice it
// believes it holds to notice that a reaper removed it (recovery).
TEST_F(ICounterScriptTest, BeforeIsTheSliceBeforeTheEntries) {
  EXPECT_EQ(Inc(c0, "7"), "ok,7,7,0,0,1");
  EXPECT_EQ(before_, "0");
  EXPECT_EQ(Flush(c0, {{"1", "add", "3"}, {"2", "add", "1"}}), "ok,11,11,11,11,0");
  EXPECT_EQ(before_, "7");
  EXPECT_EQ(Inc(c1, "5"), "ok,16,5,11,0,1");
  EXPECT_EQ(before_, "0");
  // c0 is reaped: its next call sees no slice before its entries.
  EXPECT_EQ(Reap(c1, c0), "ok,5,5,16,5,1");
  EXPECT_EQ(Flush(c0, {{"3", "add", "2"}}), "ok,7,2,7,2,0");
  EXPECT_EQ(before_, "0");
}

TEST_F(ICounterScriptTest, LayoutAfterWrites) {
  const int64_t before = NowUs();
  ASSERT_EQ(Inc(c0, "5"), "ok,5,5,0,0,1");
  const int64_t after = NowUs();
  const std::string e = Epoch();
  EXPECT_EQ(epoch_, e);
  // The epoch is Redis TIME in µs at the first write.
  EXPECT_GE(std::stoll(e), before);
  EXPECT_LE(std::stoll(e), after);
  ASSERT_EQ(Inc(c1, "-7"), "ok,-2,-7,5,0,1");
  EXPECT_EQ(epoch_, e) << "inc keeps the epoch";
  EXPECT_EQ(Field("c"), "-2");
  EXPECT_EQ(Field("s:c0"), e + "|1|5");
  EXPECT_EQ(Field("s:c1"), e + "|1|-7");
  EXPECT_EQ(Cmd({"HLEN", kKey}), "4");  // no dedup mark without lax entries
  EXPECT_EQ(Pttl(), -1);
  EXPECT_EQ(Cmd({"KEYS", "*"}), kKey);  // only KEYS[1]
}

TEST_F(ICounterScriptTest, SetBumpsTheEpochAndDeletesEverySlice) {
  ASSERT_EQ(Inc(c0, "10"), "ok,10,10,0,0,1");
  ASSERT_EQ(Inc(c1, "5"), "ok,15,5,10,0,1");
  const std::string e = Epoch();
  const int64_t now = NowUs();
  EXPECT_EQ(Set(c2, "100"), "ok,100,100,15,0,1");
  EXPECT_GT(std::stoll(epoch_), std::stoll(e));
  EXPECT_GE(std::stoll(epoch_), now) << "max(e + 1, now): time-based, not just e + 1";
  EXPECT_EQ(Field("e"), epoch_);
  EXPECT_EQ(Field("s:c0"), "(nil)");
  EXPECT_EQ(Field("s:c1"), "(nil)");
  EXPECT_EQ(Field("s:c2"), epoch_ + "|1|100");
  EXPECT_EQ(View(c0), "100,0");
  EXPECT_EQ(View(c2), "100,100");
}

TEST_F(ICounterScriptTest, DelBumpsTheEpochAndLeavesOnlyBookkeeping) {
  ASSERT_EQ(Inc(c0, "10"), "ok,10,10,0,0,1");
  ASSERT_EQ(Inc(c1, "5"), "ok,15,5,10,0,1");
  const std::string e = Epoch();
  EXPECT_EQ(Del(c0), "ok,0,0,15,10,1");
  EXPECT_GT(std::stoll(epoch_), std::stoll(e));
  EXPECT_EQ(Cmd({"HKEYS", kKey}), "e");
  ExpectBookkeepingOnlyWithTtl();
  EXPECT_EQ(View(c1), "0,0");
  // A write brings the value back: no TTL any more, same (already bumped) epoch.
  const std::string bumped = Epoch();
  EXPECT_EQ(Inc(c1, "2"), "ok,2,2,0,0,1");
  EXPECT_EQ(epoch_, bumped);
  EXPECT_EQ(Pttl(), -1);
}

TEST_F(ICounterScriptTest, SetOnInstanceMovesTheCumulativeByTheDifference) {
  ASSERT_EQ(Inc(c0, "10"), "ok,10,10,0,0,1");
  ASSERT_EQ(Inc(c1, "5"), "ok,15,5,10,0,1");
  const std::string e = Epoch();
  EXPECT_EQ(Soi(c1, "-3"), "ok,7,-3,15,5,1");
  EXPECT_EQ(epoch_, e) << "no epoch change";
  EXPECT_EQ(Soi(c1, "0"), "ok,10,0,7,-3,1");
  EXPECT_EQ(Field("s:c1"), "(nil)") << "a zero slice is not stored";
  EXPECT_EQ(Field("s:c0"), e + "|1|10");
}

TEST_F(ICounterScriptTest, DelOnInstanceOfTheLastSliceLeavesOnlyBookkeeping) {
  ASSERT_EQ(Inc(c0, "10"), "ok,10,10,0,0,1");
  const std::string e = Epoch();
  EXPECT_EQ(Dor(c0), "ok,0,0,10,10,1");
  EXPECT_EQ(epoch_, e);
  EXPECT_EQ(Cmd({"HKEYS", kKey}), "e");
  ExpectBookkeepingOnlyWithTtl();
  EXPECT_EQ(Inc(c0, "1"), "ok,1,1,0,0,1");
  EXPECT_EQ(epoch_, e) << "the key did not expire: same epoch";
  EXPECT_EQ(Pttl(), -1);
}

TEST_F(ICounterScriptTest, SlicesSummingToZeroKeepTheKeyPersistent) {
  ASSERT_EQ(Inc(c0, "5"), "ok,5,5,0,0,1");
  ASSERT_EQ(Inc(c1, "-5"), "ok,0,-5,5,0,1");
  EXPECT_EQ(Cmd({"HEXISTS", kKey, "c"}), "0");  // 0 is not stored
  EXPECT_EQ(Pttl(), -1) << "slices remain: they must not expire";
  EXPECT_EQ(View(c0), "0,5");
  EXPECT_EQ(Dor(c1), "ok,5,0,0,-5,1");
  EXPECT_EQ(Pttl(), -1);
}

// ============== original scenarios 40–78 (strict instance-aware), at script level ==============

TEST_F(ICounterScriptTest, Scenario40BasicWrites) {
  EXPECT_EQ(Inc(c0, "5", "a"), "ok,5,5,0,0,1");
  EXPECT_EQ(Inc(c0, "3", "a"), "ok,8,8,5,5,1");
  EXPECT_EQ(Inc(c0, "10", "b"), "ok,10,10,0,0,1");
  EXPECT_EQ(Inc(c0, "0", "b"), "ok,10,10,10,10,1");
  EXPECT_EQ(Set(c0, "99", "c"), "ok,99,99,0,0,1");
  EXPECT_EQ(Soi(c0, "42", "d"), "ok,42,42,0,0,1");
}

TEST_F(ICounterScriptTest, Scenario41GetAndDel) {
  EXPECT_EQ(View(c0, "u"), "0,0");
  ASSERT_EQ(Inc(c0, "7", "a"), "ok,7,7,0,0,1");
  EXPECT_EQ(View(c0, "a"), "7,7");
  ASSERT_EQ(Inc(c0, "42", "b"), "ok,42,42,0,0,1");
  EXPECT_EQ(Del(c0, "b"), "ok,0,0,42,42,1");
  ASSERT_EQ(Inc(c0, "10", "c"), "ok,10,10,0,0,1");
  ASSERT_EQ(Del(c0, "c"), "ok,0,0,10,10,1");
  EXPECT_EQ(View(c0, "c"), "0,0");
}

TEST_F(ICounterScriptTest, Scenario42DelOnInstance) {
  ASSERT_EQ(Inc(c0, "15", "a"), "ok,15,15,0,0,1");
  EXPECT_EQ(Dor(c0, "a"), "ok,0,0,15,15,1");
  EXPECT_EQ(Dor(c0, "u"), "ok,0,0,0,0,1");
  EXPECT_EQ(Cmd({"EXISTS", "u"}), "0");
}

TEST_F(ICounterScriptTest, Scenario43KeysAreIndependent) {
  ASSERT_EQ(Inc(c0, "5", "a"), "ok,5,5,0,0,1");
  ASSERT_EQ(Inc(c0, "10", "b"), "ok,10,10,0,0,1");
  EXPECT_EQ(Del(c0, "a"), "ok,0,0,5,5,1");
  EXPECT_EQ(View(c0, "b"), "10,10");
}

TEST_F(ICounterScriptTest, Scenario44ManyInstancesSum) {
  ASSERT_EQ(Inc(c0, "10"), "ok,10,10,0,0,1");
  ASSERT_EQ(Inc(c1, "20"), "ok,30,20,10,0,1");
  EXPECT_EQ(Inc(c2, "30"), "ok,60,30,30,0,1");
  std::string last;
  for (int i = 0; i < 10; ++i) last = Inc(Daemon("i" + std::to_string(i)), "1", "ten");
  EXPECT_EQ(last, "ok,10,1,9,0,1");
}

TEST_F(ICounterScriptTest, Scenario45SetOnInstanceBySeveral) {
  const std::vector<Inst> all = {c0, c1, c2, c3, c4};
  for (size_t i = 0; i < all.size(); ++i)
    ASSERT_EQ(Soi(all[i], std::to_string(i + 1)).rfind("ok,", 0), 0u);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(View(all[i]), "15," + std::to_string(i + 1));
}

TEST_F(ICounterScriptTest, Scenario46DelOnInstanceInTurn) {
  ASSERT_EQ(Inc(c0, "10"), "ok,10,10,0,0,1");
  ASSERT_EQ(Inc(c1, "20"), "ok,30,20,10,0,1");
  ASSERT_EQ(Inc(c2, "30"), "ok,60,30,30,0,1");
  EXPECT_EQ(Dor(c0), "ok,50,0,60,10,1");
  EXPECT_EQ(Dor(c1), "ok,30,0,50,20,1");
  EXPECT_EQ(Dor(c2), "ok,0,0,30,30,1");
}

TEST_F(ICounterScriptTest, Scenario47StaleSlicesRestartFromTheDelta) {
  for (const Inst& c : {c0, c1, c2}) ASSERT_EQ(Soi(c, "100").rfind("ok,", 0), 0u);
  ASSERT_EQ(View(c0), "300,100");
  EXPECT_EQ(Set(c0, "50"), "ok,50,50,300,100,1");
  EXPECT_EQ(Inc(c1, "5"), "ok,55,5,50,0,1");
  EXPECT_EQ(Inc(c2, "5"), "ok,60,5,55,0,1");
}

TEST_F(ICounterScriptTest, Scenario48IncAfterDel) {
  for (const Inst& c : {c0, c1, c2}) ASSERT_EQ(Inc(c, "100").rfind("ok,", 0), 0u);
  EXPECT_EQ(Del(c0), "ok,0,0,300,100,1");
  EXPECT_EQ(Inc(c1, "10"), "ok,10,10,0,0,1");
  EXPECT_EQ(Inc(c2, "10"), "ok,20,10,10,0,1");
}

TEST_F(ICounterScriptTest, Scenario49ManyEpochs) {
  ASSERT_EQ(Set(c0, "10"), "ok,10,10,0,0,1");
  ASSERT_EQ(Set(c1, "20"), "ok,20,20,10,0,1");
  ASSERT_EQ(Set(c2, "30"), "ok,30,30,20,0,1");
  EXPECT_EQ(View(c0), "30,0");
  ASSERT_EQ(Inc(c2, "50"), "ok,80,80,30,30,1");
  for (const std::string v : {"10", "20", "30"}) ASSERT_EQ(Set(c1, v).rfind("ok,", 0), 0u);
  EXPECT_EQ(Inc(c2, "5"), "ok,35,5,30,0,1");
}

TEST_F(ICounterScriptTest, Scenario50SetOnInstanceByANewInstanceAfterSet) {
  ASSERT_EQ(Set(c0, "100"), "ok,100,100,0,0,1");
  EXPECT_EQ(Soi(c1, "50"), "ok,150,50,100,0,1");
}

TEST_F(ICounterScriptTest, Scenario51IncAfterSet) {
  ASSERT_EQ(Inc(c0, "10"), "ok,10,10,0,0,1");
  ASSERT_EQ(Inc(c1, "5"), "ok,15,5,10,0,1");
  EXPECT_EQ(Set(c0, "20"), "ok,20,20,15,10,1");
  EXPECT_EQ(Inc(c1, "3"), "ok,23,3,20,0,1");
  EXPECT_EQ(Inc(c2, "7"), "ok,30,7,23,0,1");
}

TEST_F(ICounterScriptTest, Scenario52AllDelOnInstance) {
  const std::vector<Inst> all = {c0, c1, c2, c3, c4};
  for (size_t i = 0; i < all.size(); ++i)
    ASSERT_EQ(Inc(all[i], std::to_string(5 * (i + 1))).rfind("ok,", 0), 0u);
  ASSERT_EQ(View(c0), "75,5");
  std::string last;
  for (const Inst& c : all) last = Dor(c);
  EXPECT_EQ(last, "ok,0,0,25,25,1");
  ExpectBookkeepingOnlyWithTtl();
}

TEST_F(ICounterScriptTest, Scenario53SetThenIncs) {
  ASSERT_EQ(Soi(c1, "200"), "ok,200,200,0,0,1");
  ASSERT_EQ(Soi(c2, "300"), "ok,500,300,200,0,1");
  EXPECT_EQ(Set(c0, "100"), "ok,100,100,500,0,1");
  EXPECT_EQ(Inc(c1, "10"), "ok,110,10,100,0,1");
  EXPECT_EQ(Inc(c2, "10"), "ok,120,10,110,0,1");
  EXPECT_EQ(View(c1), "120,10");
  EXPECT_EQ(View(c2), "120,10");
}

TEST_F(ICounterScriptTest, Scenario54DelByAnInstanceWithoutSlice) {
  ASSERT_EQ(Inc(c0, "50"), "ok,50,50,0,0,1");
  ASSERT_EQ(Inc(c1, "30"), "ok,80,30,50,0,1");
  EXPECT_EQ(Del(c2), "ok,0,0,80,0,1");
  ASSERT_EQ(Inc(c0, "5"), "ok,5,5,0,0,1");
  ASSERT_EQ(Inc(c1, "7"), "ok,12,7,5,0,1");
  EXPECT_EQ(Inc(c2, "3"), "ok,15,3,12,0,1");
}

TEST_F(ICounterScriptTest, Scenario55RoundsOfIncrements) {
  const std::vector<Inst> all = {c0, c1, c2, c3, c4};
  for (int round = 0; round < 10; ++round) {
    for (const Inst& c : all) ASSERT_EQ(Inc(c, "1").rfind("ok,", 0), 0u);
  }
  for (const Inst& c : all) EXPECT_EQ(View(c), "50,10");
}

TEST_F(ICounterScriptTest, Scenario56DeadInstancesLeaveTheCumulative) {
  const std::vector<Inst> all = {c0, c1, c2, c3, c4};
  for (const Inst& c : all) ASSERT_EQ(Inc(c, "10").rfind("ok,", 0), 0u);
  int64_t expected = 50;
  for (size_t i = 1; i < all.size(); ++i) {
    SCOPED_TRACE(all[i].id);
    EXPECT_EQ(Reap(c0, all[i]),
              "ok," + std::to_string(expected - 10) + ",10," + std::to_string(expected) + ",10,1");
    expected -= 10;
    EXPECT_EQ(Field("s:" + all[i].id), "(nil)");
  }
  EXPECT_EQ(View(c0), "10,10");
}

TEST_F(ICounterScriptTest, Scenario57And67DeadInstanceThenANewOne) {
  ASSERT_EQ(Inc(c1, "40"), "ok,40,40,0,0,1");
  ASSERT_EQ(Inc(c2, "60"), "ok,100,60,40,0,1");
  EXPECT_EQ(Reap(c2, c1), "ok,60,60,100,60,1");
  EXPECT_EQ(View(c2), "60,60");
  EXPECT_EQ(Inc(c3, "20"), "ok,80,20,60,0,1");
}

TEST_F(ICounterScriptTest, Scenario58DeadInstanceOnSeveralKeys) {
  ASSERT_EQ(Inc(c1, "10", "a"), "ok,10,10,0,0,1");
  ASSERT_EQ(Inc(c1, "20", "b"), "ok,20,20,0,0,1");
  ASSERT_EQ(Inc(c1, "30", "c"), "ok,30,30,0,0,1");
  EXPECT_EQ(View(c2, "a"), "10,0");
  for (const std::string k : {"a", "b", "c"})
    EXPECT_EQ(Reap(c2, c1, k).rfind("ok,0,0,", 0), 0u) << k;
  for (const std::string k : {"a", "b", "c"}) EXPECT_EQ(View(c2, k), "0,0") << k;
}

TEST_F(ICounterScriptTest, Scenario59ReapOfALiveIncarnationDoesNothing) {
  // Liveness is judged by the daemon; at script level a reap of an incarnation that did not
  // write the slice (c1 re-registered meanwhile, or a wrong guess) must not touch it.
  const Inst c1v2 = Reregistered(c1, "2");
  ASSERT_EQ(Inc(c1v2, "40"), "ok,40,40,0,0,1");
  ASSERT_EQ(Inc(c2, "60"), "ok,100,60,40,0,1");
  EXPECT_EQ(Reap(c2, c1), "ok,100,60,100,60,0");
  EXPECT_EQ(View(c2), "100,60");
}

TEST_F(ICounterScriptTest, Scenario60SeveralKeysSeveralInstances) {
  for (int i = 0; i < 3; ++i) {
    const Inst c = Daemon("c" + std::to_string(i));
    ASSERT_EQ(Inc(c, std::to_string(i + 1), "a").rfind("ok,", 0), 0u);
    ASSERT_EQ(Inc(c, std::to_string(10 * (i + 1)), "b").rfind("ok,", 0), 0u);
  }
  EXPECT_EQ(View(c0, "a"), "6,1");
  EXPECT_EQ(View(c0, "b"), "60,10");
}

TEST_F(ICounterScriptTest, Scenario61SetOnOneKeyLeavesTheOther) {
  for (const Inst& c : {c0, c1, c2}) {
    ASSERT_EQ(Inc(c, "10", "k1").rfind("ok,", 0), 0u);
    ASSERT_EQ(Inc(c, "10", "k2").rfind("ok,", 0), 0u);
  }
  EXPECT_EQ(Set(c0, "5", "k1"), "ok,5,5,30,10,1");
  EXPECT_EQ(Inc(c1, "1", "k2"), "ok,31,11,30,10,1");
  EXPECT_EQ(Inc(c2, "1", "k2"), "ok,32,11,31,10,1");
  EXPECT_EQ(Inc(c1, "7", "k1"), "ok,12,7,5,0,1");
}

TEST_F(ICounterScriptTest, Scenario62ClearOnInstanceIsDelOnInstanceOfEachKey) {
  const std::vector<std::string> keys = {"a", "b", "c"};
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_EQ(Inc(c1, std::to_string(10 * (i + 1)), keys[i]).rfind("ok,", 0), 0u);
    ASSERT_EQ(Inc(c2, "5", keys[i]).rfind("ok,", 0), 0u);
  }
  for (const auto& k : keys) ASSERT_EQ(Dor(c1, k).rfind("ok,5,0,", 0), 0u) << k;
  for (const auto& k : keys) EXPECT_EQ(View(c2, k), "5,5") << k;
}

TEST_F(ICounterScriptTest, Scenario63DelOnInstanceAfterForeignSetSubtractsNothing) {
  ASSERT_EQ(Inc(c1, "40"), "ok,40,40,0,0,1");
  ASSERT_EQ(Inc(c2, "60"), "ok,100,60,40,0,1");
  ASSERT_EQ(Set(c1, "10"), "ok,10,10,100,40,1");
  EXPECT_EQ(Dor(c2), "ok,10,0,10,0,1");
}

TEST_F(ICounterScriptTest, Scenario64SetOnInstanceAcrossEpochs) {
  ASSERT_EQ(Soi(c2, "50"), "ok,50,50,0,0,1");
  ASSERT_EQ(Set(c1, "100"), "ok,100,100,50,0,1");
  EXPECT_EQ(Soi(c2, "30"), "ok,130,30,100,0,1");
  EXPECT_EQ(Soi(c2, "100"), "ok,200,100,130,30,1");
  ASSERT_EQ(Set(c1, "5"), "ok,5,5,200,100,1");
  EXPECT_EQ(Inc(c2, "3"), "ok,8,3,5,0,1");
}

TEST_F(ICounterScriptTest, Scenario65IncSetOnInstanceDelOnInstance) {
  ASSERT_EQ(Inc(c1, "10", "a"), "ok,10,10,0,0,1");
  EXPECT_EQ(Inc(c2, "20", "a"), "ok,30,20,10,0,1");
  EXPECT_EQ(Soi(c1, "5", "b"), "ok,5,5,0,0,1");
  EXPECT_EQ(Soi(c2, "10", "b"), "ok,15,10,5,0,1");
  ASSERT_EQ(Inc(c1, "30", "c"), "ok,30,30,0,0,1");
  ASSERT_EQ(Inc(c2, "50", "c"), "ok,80,50,30,0,1");
  EXPECT_EQ(Dor(c1, "c"), "ok,50,0,80,30,1");
}

TEST_F(ICounterScriptTest, Scenario66SetAfterSetOnInstance) {
  ASSERT_EQ(Soi(c1, "5"), "ok,5,5,0,0,1");
  ASSERT_EQ(Soi(c2, "10"), "ok,15,10,5,0,1");
  EXPECT_EQ(Set(c1, "3"), "ok,3,3,15,5,1");
  EXPECT_EQ(Inc(c2, "5"), "ok,8,5,3,0,1");
  ASSERT_EQ(Set(c0, "10", "b"), "ok,10,10,0,0,1");
  EXPECT_EQ(Set(c0, "20", "b"), "ok,20,20,10,10,1");
  EXPECT_EQ(View(c0, "b"), "20,20");
}

// Recovery (68–71): the reaped instance re-registers (next incarnation) and restores the slice
// it holds with the epoch it last saw.
TEST_F(ICounterScriptTest, Scenario68RecoveryThenInc) {
  ASSERT_EQ(Inc(c1, "20"), "ok,20,20,0,0,1");
  const std::string e = epoch_;
  ASSERT_EQ(Reap(c2, c1), "ok,0,0,20,0,1");
  EXPECT_EQ(View(c2), "0,0");
  const Inst c1v2 = Reregistered(c1, "2");
  EXPECT_EQ(Restore(c1v2, e, "20"), "ok,20,20,0,0,1");
  EXPECT_EQ(Field("s:c1"), e + "|2|20");
  EXPECT_EQ(Inc(c1v2, "5"), "ok,25,25,20,20,1");
  EXPECT_EQ(View(c1v2), "25,25");
}

TEST_F(ICounterScriptTest, Scenario69RecoveryThenGet) {
  ASSERT_EQ(Inc(c1, "30"), "ok,30,30,0,0,1");
  const std::string e = epoch_;
  ASSERT_EQ(Reap(c2, c1), "ok,0,0,30,0,1");
  EXPECT_EQ(View(c2), "0,0");
  const Inst c1v2 = Reregistered(c1, "2");
  ASSERT_EQ(Restore(c1v2, e, "30"), "ok,30,30,0,0,1");
  EXPECT_EQ(View(c1v2), "30,30");
}

TEST_F(ICounterScriptTest, Scenario70NoRecoveryAfterAnEpochBump) {
  ASSERT_EQ(Inc(c1, "20"), "ok,20,20,0,0,1");
  const std::string e = epoch_;
  ASSERT_EQ(Reap(c2, c1), "ok,0,0,20,0,1");
  ASSERT_EQ(Set(c2, "100"), "ok,100,100,0,0,1");
  const Inst c1v2 = Reregistered(c1, "2");
  EXPECT_EQ(Restore(c1v2, e, "20"), "ok,100,0,100,0,0");
  EXPECT_NE(epoch_, e);
  EXPECT_EQ(Inc(c1v2, "5"), "ok,105,5,100,0,1");
  EXPECT_EQ(View(c1v2), "105,5");
}

TEST_F(ICounterScriptTest, Scenario71RecoveryVisibleToOthersUnlessSetMeanwhile) {
  ASSERT_EQ(Inc(c1, "20", "a"), "ok,20,20,0,0,1");
  const std::string ea = epoch_;
  ASSERT_EQ(Inc(c1, "20", "b"), "ok,20,20,0,0,1");
  const std::string eb = epoch_;
  ASSERT_EQ(Reap(c2, c1, "a"), "ok,0,0,20,0,1");
  ASSERT_EQ(Reap(c2, c1, "b"), "ok,0,0,20,0,1");
  EXPECT_EQ(View(c2, "a"), "0,0");
  ASSERT_EQ(Set(c2, "100", "b"), "ok,100,100,0,0,1");
  const Inst c1v2 = Reregistered(c1, "2");
  EXPECT_EQ(Restore(c1v2, ea, "20", "a"), "ok,20,20,0,0,1");
  EXPECT_EQ(Restore(c1v2, eb, "20", "b"), "ok,100,0,100,0,0");
  EXPECT_EQ(View(c2, "a"), "20,0");
  EXPECT_EQ(View(c2, "b"), "100,100");
}

TEST_F(ICounterScriptTest, Scenario72NoSpuriousRecovery) {
  ASSERT_EQ(Inc(c1, "20"), "ok,20,20,0,0,1");
  ASSERT_EQ(Inc(c1, "5"), "ok,25,25,20,20,1");
  EXPECT_EQ(View(c2), "25,0");
  EXPECT_EQ(View(c1), "25,25");
}

TEST_F(ICounterScriptTest, Scenario73ConditionalIncOnTheCumulative) {
  for (const Cond& cond : {Cond{"eq", "10"}, Cond{"lt", "11"}, Cond{"ne", "9"}, Cond{"", "-99"}}) {
    SCOPED_TRACE(cond.cmp);
    ASSERT_EQ(Set(c0, "10").rfind("ok,10,10,", 0), 0u);
    EXPECT_EQ(Inc(c0, "2", kKey, cond), "ok,12,12,10,10,1");
    EXPECT_EQ(View(c0), "12,12");
  }
  ASSERT_EQ(Set(c0, "10").rfind("ok,10,10,", 0), 0u);
  EXPECT_EQ(Inc(c0, "2", kKey, {"gt", "10"}), "ok,10,10,10,10,0");
  EXPECT_EQ(View(c0), "10,10");
}

TEST_F(ICounterScriptTest, Scenario74RepeatedIncrements) {
  EXPECT_EQ(Inc(c0, "1"), "ok,1,1,0,0,1");
  EXPECT_EQ(Inc(c0, "2"), "ok,3,3,1,1,1");
  EXPECT_EQ(View(c0), "3,3");
}

TEST_F(ICounterScriptTest, Scenario75ConditionsSeeOtherInstances) {
  ASSERT_EQ(Inc(c2, "5", "b"), "ok,5,5,0,0,1");
  ASSERT_EQ(Set(c1, "0", "a"), "ok,0,0,0,0,1");
  EXPECT_EQ(Inc(c1, "1", "a", {"eq", "0"}), "ok,1,1,0,0,1");
  EXPECT_EQ(Inc(c1, "2", "a", {"eq", "1"}), "ok,3,3,1,1,1");
  EXPECT_EQ(Inc(c1, "4", "b", {"gt", "10"}), "ok,5,0,5,0,0");
  EXPECT_EQ(Inc(c1, "3", "b", {"eq", "5"}), "ok,8,3,5,0,1");
  EXPECT_EQ(View(c1, "a"), "3,3");
  EXPECT_EQ(View(c1, "b"), "8,3");
  EXPECT_EQ(View(c2, "b"), "8,5");
}

TEST_F(ICounterScriptTest, Scenario76ConditionalSetOnInstanceOnTheSlice) {
  ASSERT_EQ(Soi(c1, "7"), "ok,7,7,0,0,1");
  ASSERT_EQ(Soi(c2, "5"), "ok,12,5,7,0,1");
  EXPECT_EQ(Soi(c1, "9", kKey, {"gt", "6"}), "ok,14,9,12,7,1");
  EXPECT_EQ(Soi(c1, "50", kKey, {"eq", "8"}), "ok,14,9,14,9,0");
  EXPECT_EQ(Soi(c1, "11", kKey, {"", "0"}), "ok,16,11,14,9,1");
  // On the slice, not on the cumulative: 16 > 12, but the slice 11 is not.
  EXPECT_EQ(Soi(c1, "1", kKey, {"gt", "12"}), "ok,16,11,16,11,0");
}

TEST_F(ICounterScriptTest, Scenario77ConditionalSet) {
  ASSERT_EQ(Set(c0, "10", "a"), "ok,10,10,0,0,1");
  ASSERT_EQ(Set(c0, "20", "b"), "ok,20,20,0,0,1");
  EXPECT_EQ(Set(c0, "30", "c", {"", "0"}), "ok,30,30,0,0,1");
  EXPECT_EQ(Set(c0, "11", "a", {"gt", "5"}), "ok,11,11,10,10,1");
  const std::string eb = Epoch("b");
  EXPECT_EQ(Set(c0, "99", "b", {"lt", "10"}), "ok,20,20,20,20,0");
  EXPECT_EQ(Epoch("b"), eb) << "a failed condition does not bump the epoch";
}

TEST_F(ICounterScriptTest, Scenario78ConditionalSetOnInstanceAcrossKeys) {
  ASSERT_EQ(Soi(c1, "4", "a"), "ok,4,4,0,0,1");
  ASSERT_EQ(Soi(c2, "5", "a"), "ok,9,5,4,0,1");
  ASSERT_EQ(Soi(c2, "3", "b"), "ok,3,3,0,0,1");
  EXPECT_EQ(Soi(c1, "10", "b", {"eq", "1"}), "ok,3,0,3,0,0");
  EXPECT_EQ(Soi(c1, "7", "a", {"", "0"}), "ok,12,7,9,4,1");
  EXPECT_EQ(View(c2, "a"), "12,5");
  EXPECT_EQ(View(c2, "b"), "3,3");
}

TEST_F(ICounterScriptTest, EveryComparatorForIncSetAndSetOnInstance) {
  // cumulative 10 (slice of c0: 4) against operands 9, 10, 11
  const std::vector<std::pair<std::string, std::vector<bool>>> expected = {
      {"", {true, true, true}},     {"eq", {false, true, false}}, {"ne", {true, false, true}},
      {"lt", {false, false, true}}, {"le", {false, true, true}},  {"gt", {true, false, false}},
      {"ge", {true, true, false}}};
  const std::vector<std::string> operands = {"9", "10", "11"};
  const std::vector<std::string> slice_operands = {"3", "4", "5"};
  for (const auto& [cmp, results] : expected) {
    for (size_t i = 0; i < operands.size(); ++i) {
      SCOPED_TRACE("comparator '" + cmp + "' operand #" + std::to_string(i));
      auto reset = [&] {
        Cmd({"DEL", kKey});
        ASSERT_EQ(Inc(c0, "4"), "ok,4,4,0,0,1");
        ASSERT_EQ(Inc(c1, "6"), "ok,10,6,4,0,1");
      };
      reset();
      EXPECT_EQ(Inc(c0, "5", kKey, {cmp, operands[i]}),
                results[i] ? "ok,15,9,10,4,1" : "ok,10,4,10,4,0");
      reset();
      EXPECT_EQ(Set(c0, "7", kKey, {cmp, operands[i]}),
                results[i] ? "ok,7,7,10,4,1" : "ok,10,4,10,4,0");
      EXPECT_EQ(Field("s:c1") == "(nil)", results[i]);
      reset();
      EXPECT_EQ(Soi(c0, "1", kKey, {cmp, slice_operands[i]}),
                results[i] ? "ok,7,1,10,4,1" : "ok,10,4,10,4,0");
    }
  }
}

TEST_F(ICounterScriptTest, ConditionsCompareExactlyBeyond2To53) {
  // As doubles, 9007199254740993 == 9007199254740992; as int64 they differ.
  ASSERT_EQ(Set(c0, "9007199254740993"), "ok,9007199254740993,9007199254740993,0,0,1");
  EXPECT_EQ(Inc(c0, "0", kKey, {"eq", "9007199254740992"}),
            "ok,9007199254740993,9007199254740993,9007199254740993,9007199254740993,0");
  EXPECT_EQ(Inc(c0, "1", kKey, {"gt", "9007199254740992"}),
            "ok,9007199254740994,9007199254740994,9007199254740993,9007199254740993,1");
  EXPECT_EQ(Soi(c0, "1", kKey, {"lt", "9007199254740994"}),
            "ok,9007199254740994,9007199254740994,9007199254740994,9007199254740994,0");
  EXPECT_EQ(Soi(c0, "-9007199254740993", kKey, {"eq", "9007199254740994"}),
            "ok,-9007199254740993,-9007199254740993,9007199254740994,9007199254740994,1");
}

// ================= the defects of the original library, with our results =================

TEST_F(ICounterScriptTest, Defect1StaleSlicesAreGoneAfterSetAndDel) {
  // A+3, B+7, A.del, A+2, B dies: the original got -5.
  ASSERT_EQ(Inc(c0, "3"), "ok,3,3,0,0,1");
  ASSERT_EQ(Inc(c1, "7"), "ok,10,7,3,0,1");
  ASSERT_EQ(Del(c0), "ok,0,0,10,3,1");
  EXPECT_EQ(Field("s:c1"), "(nil)");
  ASSERT_EQ(Inc(c0, "2"), "ok,2,2,0,0,1");
  EXPECT_EQ(Reap(c0, c1), "ok,2,2,2,2,0");
  EXPECT_EQ(View(c0), "2,2");
  // A+10, B+5, A.set 100, B dies: the original got 95.
  ASSERT_EQ(Inc(c0, "10", "k2"), "ok,10,10,0,0,1");
  ASSERT_EQ(Inc(c1, "5", "k2"), "ok,15,5,10,0,1");
  ASSERT_EQ(Set(c0, "100", "k2"), "ok,100,100,15,10,1");
  EXPECT_EQ(Reap(c0, c1, "k2"), "ok,100,100,100,100,0");
  EXPECT_EQ(View(c0, "k2"), "100,100");
}

TEST_F(ICounterScriptTest, Defect2ClearOnInstanceIgnoresStaleSlices) {
  // A+10, B.set 100, A.clear_on_instance (= del_on_instance per key): the original got 90.
  ASSERT_EQ(Inc(c0, "10"), "ok,10,10,0,0,1");
  ASSERT_EQ(Set(c1, "100"), "ok,100,100,10,0,1");
  EXPECT_EQ(Dor(c0), "ok,100,0,100,0,1");
  EXPECT_EQ(View(c1), "100,100");
}

TEST_F(ICounterScriptTest, Defect3GetReportsNoStaleSlice) {
  // After B.set 100, the original's A.get gave (100, 10), A+1 (101, 11), and 90 after A died.
  ASSERT_EQ(Inc(c0, "10"), "ok,10,10,0,0,1");
  ASSERT_EQ(Set(c1, "100"), "ok,100,100,10,0,1");
  EXPECT_EQ(View(c0), "100,0");
  EXPECT_EQ(Inc(c0, "1"), "ok,101,1,100,0,1");
  EXPECT_EQ(Reap(c1, c0), "ok,100,100,101,100,1");
  EXPECT_EQ(View(c1), "100,100");
}

TEST_F(ICounterScriptTest, Defect4DelAllDoesNotResurrectSlicesAndEpochsNeverGoBack) {
  // Clear = del of every key. A+5, B.clear, A+1: the original got 6.
  ASSERT_EQ(Inc(c0, "5"), "ok,5,5,0,0,1");
  const std::string e1 = epoch_;
  ASSERT_EQ(Del(c1), "ok,0,0,5,0,1");
  const std::string e2 = epoch_;
  EXPECT_GT(std::stoll(e2), std::stoll(e1));
  EXPECT_EQ(Inc(c0, "1"), "ok,1,1,0,0,1");
  EXPECT_EQ(epoch_, e2);
  // A (re-registered after being reaped) tries to bring its old 5 back: refused.
  const Inst c0v2 = Reregistered(c0, "2");
  EXPECT_EQ(Restore(c0v2, e1, "5"), "ok,1,0,1,0,0");
  EXPECT_EQ(View(c1), "1,0");
  // No ABA: after the key is gone entirely (expiry), a new epoch is larger than every old one.
  ASSERT_EQ(Cmd({"DEL", kKey}), "1");
  ASSERT_EQ(Inc(c0, "1"), "ok,1,1,0,0,1");
  EXPECT_GT(std::stoll(epoch_), std::stoll(e2));
  EXPECT_EQ(Restore(c0v2, e1, "5"), "ok,1,0,1,0,0");
  EXPECT_EQ(Restore(c0v2, e2, "5"), "ok,1,0,1,0,0");
}

TEST_F(ICounterScriptTest, Defect5EveryKeyAndNegativeSlicesAreRestored) {
  // The original recovered only the first key and never a negative slice (expected 7, got 10).
  ASSERT_EQ(Inc(c1, "8", "k1"), "ok,8,8,0,0,1");
  const std::string e1 = epoch_;
  ASSERT_EQ(Inc(c2, "10", "k2"), "ok,10,10,0,0,1");
  ASSERT_EQ(Inc(c1, "-3", "k2"), "ok,7,-3,10,0,1");
  const std::string e2 = epoch_;
  ASSERT_EQ(Reap(c2, c1, "k1"), "ok,0,0,8,0,1");
  ASSERT_EQ(Reap(c2, c1, "k2"), "ok,10,10,7,10,1");
  const Inst c1v2 = Reregistered(c1, "2");
  EXPECT_EQ(Restore(c1v2, e1, "8", "k1"), "ok,8,8,0,0,1");
  EXPECT_EQ(Restore(c1v2, e2, "-3", "k2"), "ok,7,-3,10,0,1");
  EXPECT_EQ(View(c2, "k1"), "8,0");
  EXPECT_EQ(View(c2, "k2"), "7,10");
  // Restoring again is idempotent.
  EXPECT_EQ(Restore(c1v2, e2, "-3", "k2"), "ok,7,-3,7,-3,1");
}

TEST_F(ICounterScriptTest, Defect8PendingSetOnInstanceAfterForeignSetIsSliceAssignment) {
  // c1 holds 10; c1's lax SetOnInstance 7 is pending when c2 sets 100. The original applied
  // the stale difference -3: (97, -3). Ours: (107, 7).
  ASSERT_EQ(Inc(c1, "10"), "ok,10,10,0,0,1");
  ASSERT_EQ(Set(c2, "100"), "ok,100,100,10,0,1");
  EXPECT_EQ(Flush(c1, {{"1", "set", "7"}}), "ok,107,7,107,7,0");
  EXPECT_EQ(seen_, "1");
  EXPECT_EQ(View(c2), "107,100");
  // Without a foreign bump, "set" is still an assignment: c1's slice 7 becomes 2.
  EXPECT_EQ(Flush(c1, {{"2", "set", "2"}}), "ok,102,2,102,2,0");
}

// ================= epochs =================

TEST_F(ICounterScriptTest, EpochsStrictlyIncreaseAcrossSetAndDel) {
  ASSERT_EQ(Inc(c0, "1"), "ok,1,1,0,0,1");
  int64_t last = std::stoll(epoch_);
  for (int i = 0; i < 20; ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ((i % 2 == 0 ? Set(c0, std::to_string(i)) : Del(c1)).rfind("ok,", 0), 0u);
    const int64_t e = std::stoll(epoch_);
    EXPECT_GT(e, last);
    EXPECT_EQ(Epoch(), epoch_);
    last = e;
  }
}

TEST_F(ICounterScriptTest, EpochAheadOfTheClockIsIncremented) {
  // max(e + 1, now): an epoch ahead of Redis time (a clock that went back) still grows by one.
  ASSERT_EQ(Inc(c0, "1"), "ok,1,1,0,0,1");
  const int64_t future = NowUs() + 1000000000000;  // 11.6 days ahead
  ASSERT_EQ(
      Cmd({"HSET", kKey, "e", std::to_string(future), "s:c0", std::to_string(future) + "|1|1"}),
      "0");
  ASSERT_EQ(Set(c0, "5"), "ok,5,5,1,1,1");
  EXPECT_EQ(epoch_, std::to_string(future + 1));
  ASSERT_EQ(Del(c0), "ok,0,0,5,5,1");
  EXPECT_EQ(epoch_, std::to_string(future + 2));
  // After the largest epoch there is none: set/del are refused as an overflow, nothing of the op
  // changes (the lax entries that fit stay applied, as for any overflow).
  ASSERT_EQ(Cmd({"HSET", kKey, "e", kMax}), "0");
  const std::string before = Cmd({"HGETALL", kKey});
  EXPECT_EQ(Del(c0), "overflow,0,0,0,0,0");
  EXPECT_EQ(Set(c0, "1"), "overflow,0,0,0,0,0");
  EXPECT_EQ(Cmd({"HGETALL", kKey}), before);
  EXPECT_EQ(Run(c0, {{"1", "add", "3"}}, "del"), "overflow,3,3,3,3,0");
  EXPECT_EQ(epoch_, kMax);
  EXPECT_EQ(Field("s:c0"), std::string(kMax) + "|1|3");
}

TEST_F(ICounterScriptTest, ExpiredKeyComesBackWithALargerEpoch) {
  ASSERT_EQ(Inc(c0, "5"), "ok,5,5,0,0,1");
  ASSERT_EQ(Del(c0), "ok,0,0,5,5,1");
  const std::string old = epoch_;
  ExpectBookkeepingOnlyWithTtl();
  // Fast-forward: shorten the TTL the script set, and watch the key go (poll, no fixed sleep).
  ASSERT_EQ(Cmd({"PEXPIRE", kKey, "20"}), "1");
  ASSERT_TRUE(PollUntil([&] { return Cmd({"EXISTS", kKey}) == "0"; }, 5s));
  EXPECT_EQ(Get(c0), "ok,0,0,0,0,0");
  EXPECT_EQ(epoch_, "0");
  ASSERT_EQ(Inc(c1, "2"), "ok,2,2,0,0,1");
  EXPECT_GT(std::stoll(epoch_), std::stoll(old));
  EXPECT_EQ(Pttl(), -1);
  EXPECT_EQ(Restore(Reregistered(c0, "2"), old, "5"), "ok,2,0,2,0,0");
}

TEST_F(ICounterScriptTest, TimeBeforeWritesReplicatesTheEffects) {
  // TIME is not deterministic: the replica must get the epoch the master computed (Redis 7
  // replicates script effects), not recompute it.
  RedisServer::Options master_options;
  master_options.tcp = true;
  auto master = RedisServer::Start(master_options);
  ASSERT_NE(master, nullptr);
  RedisServer::Options replica_options;
  replica_options.extra_args = {"--replicaof", "127.0.0.1", std::to_string(master->port())};
  auto replica = RedisServer::Start(replica_options);
  ASSERT_NE(replica, nullptr);
  ASSERT_TRUE(PollUntil(
      [&] {
        return replica->Command({"INFO", "replication"}).find("master_link_status:up") !=
               std::string::npos;
      },
      20s));
  const std::string sha = master->Command({"SCRIPT", "LOAD", script_});
  ASSERT_EQ(sha.size(), 40u) << sha;
  ASSERT_EQ(master->Command({"EVALSHA", sha, "1", kKey, "c0", "1", "p", "0", "inc", "", "0", "3"})
                .rfind("ok,3,3,0,0,1,", 0),
            0u);
  ASSERT_EQ(master->Command({"EVALSHA", sha, "1", kKey, "c0", "1", "p", "0", "set", "", "0", "4"})
                .rfind("ok,4,4,3,3,1,", 0),
            0u);
  const std::string fields = master->Command({"HGETALL", kKey});
  EXPECT_TRUE(PollUntil(
      [&] {
        return replica->Command({"HGETALL", kKey}) == fields;
      },
      10s))
      << fields << " vs " << replica->Command({"HGETALL", kKey});
}

// ================= reap =================

TEST_F(ICounterScriptTest, ReapIsIdempotentAndIgnoresOtherIncarnations) {
  ASSERT_EQ(Inc(c1, "40"), "ok,40,40,0,0,1");
  ASSERT_EQ(Inc(c2, "60"), "ok,100,60,40,0,1");
  const std::string before = Cmd({"HGETALL", kKey});
  EXPECT_EQ(Reap(c2, Daemon("c1", "2")), "ok,100,60,100,60,0");
  EXPECT_EQ(Reap(c2, Daemon("nobody")), "ok,100,60,100,60,0");
  EXPECT_EQ(Cmd({"HGETALL", kKey}), before);
  // Two daemons reap c1 at once: the first wins, the second changes nothing.
  EXPECT_EQ(Reap(c2, c1), "ok,60,60,100,60,1");
  EXPECT_EQ(Reap(c0, c1), "ok,60,0,60,0,0");
  EXPECT_EQ(View(c2), "60,60");
  EXPECT_EQ(Cmd({"PTTL", kKey}), "-1");
  // Reaping the last slice leaves bookkeeping only.
  EXPECT_EQ(Reap(c0, c2), "ok,0,0,60,0,1");
  ExpectBookkeepingOnlyWithTtl();
}

TEST_F(ICounterScriptTest, ReapCarriesLaxEntriesOfTheReaper) {
  ASSERT_EQ(Inc(c1, "40"), "ok,40,40,0,0,1");
  EXPECT_EQ(Run(c2, {{"1", "add", "5"}}, "reap", {}, "0", {"c1", "1"}), "ok,5,5,45,5,1");
  EXPECT_EQ(seen_, "1");
}

// ================= incarnations =================

TEST_F(ICounterScriptTest, NewIncarnationReplacesTheOldOnesSlice) {
  // c0 restarted with the same id (new process, new incarnation) before the reaper got to its
  // old slice: the old slice still counts, but it is not the new incarnation's.
  ASSERT_EQ(Inc(c0, "10"), "ok,10,10,0,0,1");
  ASSERT_EQ(Inc(c1, "5"), "ok,15,5,10,0,1");
  const std::string e = epoch_;
  const Inst c0new = Daemon("c0", "2");
  EXPECT_EQ(View(c0new), "15,0");
  // Its first write replaces the old slice, exactly as the reaper would have removed it.
  EXPECT_EQ(Inc(c0new, "3"), "ok,8,3,15,0,1");
  EXPECT_EQ(Field("s:c0"), e + "|2|3");
  // The reaper comes later for incarnation 1: nothing left to do.
  EXPECT_EQ(Reap(c1, c0), "ok,8,5,8,5,0");
  EXPECT_EQ(View(c0new), "8,3");
}

TEST_F(ICounterScriptTest, OldIncarnationsSliceIsReplacedByEveryWritingOp) {
  const Inst c0new = Daemon("c0", "2");
  auto setup = [&] {
    Cmd({"DEL", kKey});
    ASSERT_EQ(Inc(c0, "10"), "ok,10,10,0,0,1");
    ASSERT_EQ(Inc(c1, "5"), "ok,15,5,10,0,1");
  };
  setup();
  EXPECT_EQ(Soi(c0new, "1"), "ok,6,1,15,0,1");
  setup();
  EXPECT_EQ(Soi(c0new, "1", kKey, {"eq", "10"}), "ok,15,0,15,0,0") << "the slice it sees is 0";
  EXPECT_EQ(Field("s:c0").substr(Field("s:c0").find('|')), "|1|10") << "untouched";
  setup();
  EXPECT_EQ(Dor(c0new), "ok,5,0,15,0,1");
  setup();
  EXPECT_EQ(Flush(c0new, {{"1", "add", "2"}}), "ok,7,2,7,2,0");
  setup();
  EXPECT_EQ(Set(c0new, "1"), "ok,1,1,15,0,1");
  EXPECT_EQ(Field("s:c1"), "(nil)");
  // A reap by the id itself of its older incarnation.
  setup();
  EXPECT_EQ(Reap(c0new, c0), "ok,5,0,15,0,1");
  EXPECT_EQ(Field("s:c0"), "(nil)");
}

TEST_F(ICounterScriptTest, StragglerOfAnOlderIncarnationAddsToTheNewerSlice) {
  // c1 was declared dead and re-registered (incarnation 2); a command it sent before, stuck in
  // a dead connection, arrives now with incarnation 1. The live daemon's delta counts, in the
  // slice of the incarnation that is alive.
  const Inst c1v2 = Reregistered(c1, "2");
  ASSERT_EQ(Inc(c1v2, "10"), "ok,10,10,0,0,1");
  const std::string e = epoch_;
  EXPECT_EQ(Flush(c1, {{"7", "add", "4"}}), "ok,14,14,14,14,0");
  EXPECT_EQ(Field("s:c1"), e + "|2|14");
  EXPECT_EQ(Reap(c2, c1), "ok,14,0,14,0,0") << "incarnation 1 has no slice here";
  // The same for a straggling set: the new slice belongs to the live incarnation.
  EXPECT_EQ(Set(c1, "9"), "ok,9,9,14,14,1");
  EXPECT_EQ(Field("s:c1"), epoch_ + "|2|9");
  EXPECT_EQ(Reap(c2, c1), "ok,9,0,9,0,0");
  EXPECT_EQ(Reap(c2, c1v2), "ok,0,0,9,0,1");
}

TEST_F(ICounterScriptTest, RestoreReplacesAnOlderIncarnationsSliceNotYetReaped) {
  ASSERT_EQ(Inc(c1, "10"), "ok,10,10,0,0,1");
  ASSERT_EQ(Inc(c2, "1"), "ok,11,1,10,0,1");
  const std::string e = Epoch();
  const Inst c1v2 = Reregistered(c1, "2");
  EXPECT_EQ(Restore(c1v2, e, "10"), "ok,11,10,11,0,1");
  EXPECT_EQ(Field("s:c1"), e + "|2|10");
  EXPECT_EQ(Reap(c2, c1), "ok,11,1,11,1,0") << "a restore racing the reaper is safe";
  EXPECT_EQ(View(c1v2), "11,10");
  // A restore with a different value replaces the slice: the cumulative moves accordingly.
  EXPECT_EQ(Restore(c1v2, e, "-4"), "ok,-3,-4,11,10,1");
  EXPECT_EQ(Restore(c1v2, e, "0"), "ok,1,0,-3,-4,1");
  EXPECT_EQ(Field("s:c1"), "(nil)");
}

// ================= slices of another epoch (should never exist) =================

TEST_F(ICounterScriptTest, SliceOfAnotherEpochCountsZeroAndIsRemovedWhenTouched) {
  ASSERT_EQ(Inc(c0, "10"), "ok,10,10,0,0,1");
  const int64_t e = std::stoll(Epoch());
  const std::string old = std::to_string(e - 1) + "|1|";
  ASSERT_EQ(Cmd({"HSET", kKey, "s:c1", old + "50", "s:c2", old + "60", "s:c3", old + "70"}), "3");
  EXPECT_EQ(View(c1), "10,0");
  EXPECT_EQ(Field("s:c1"), "(nil)") << "a read removes it";
  EXPECT_EQ(Inc(c2, "1"), "ok,11,1,10,0,1");
  EXPECT_EQ(Field("s:c2"), std::to_string(e) + "|1|1");
  EXPECT_EQ(Reap(c0, c3), "ok,11,10,11,10,0");
  EXPECT_EQ(Field("s:c3"), "(nil)");
  // Slices without any epoch on the key are stale too.
  ASSERT_EQ(Cmd({"HDEL", kKey, "e", "c", "s:c0", "s:c2"}), "4");
  ASSERT_EQ(Cmd({"HSET", kKey, "s:c4", std::to_string(e) + "|1|9"}), "1");
  EXPECT_EQ(View(c4), "0,0");
  EXPECT_EQ(Cmd({"EXISTS", kKey}), "0");
}

// ================= lax entries =================

TEST_F(ICounterScriptTest, LaxEntriesAreAppliedOnceAcrossRetries) {
  EXPECT_EQ(Flush(c0, {{"1", "add", "5"}, {"2", "add", "7"}}), "ok,12,12,12,12,0");
  EXPECT_EQ(seen_, "2");
  EXPECT_EQ(Field("q:proc-c0"), "2");
  // The reply got lost and the daemon retries the same batch: nothing is doubled.
  EXPECT_EQ(Flush(c0, {{"1", "add", "5"}, {"2", "add", "7"}}), "ok,12,12,12,12,0");
  EXPECT_EQ(seen_, "2");
  // A retry merged with newer entries: only the new ones count.
  EXPECT_EQ(Flush(c0, {{"2", "add", "7"}, {"3", "add", "1"}}), "ok,13,13,13,13,0");
  EXPECT_EQ(Field("q:proc-c0"), "3");
  // Old seqs alone change nothing; the mark does not go back.
  EXPECT_EQ(Flush(c0, {{"3", "set", "1000"}}), "ok,13,13,13,13,0");
  EXPECT_EQ(Field("q:proc-c0"), "3");
  // Another process has its own sequence; a read reports what is applied for the caller.
  EXPECT_EQ(Flush(c1, {{"1", "add", "100"}}), "ok,113,100,113,100,0");
  EXPECT_EQ(Get(c0), "ok,113,13,113,13,0");
  EXPECT_EQ(seen_, "3");
  EXPECT_EQ(Get(c2), "ok,113,0,113,0,0");
  EXPECT_EQ(seen_, "0");
  // The dedup id, not the instance id, identifies the sequence: a new process of c0 (new dedup
  // id) restarts at seq 1.
  EXPECT_EQ(Flush(Inst{"c0", "1", "proc-c0-restarted"}, {{"1", "add", "1"}}), "ok,114,14,114,14,0");
}

TEST_F(ICounterScriptTest, LaxEntriesRunBeforeTheOp) {
  // LAX +5 pending, then Set 100 -> previous (5, 5).
  EXPECT_EQ(Run(c0, {{"1", "add", "5"}}, "set", {}, "100"), "ok,100,100,5,5,1");
  // Retried after a timeout: the entry is skipped, the set (not idempotent) runs again.
  EXPECT_EQ(Run(c0, {{"1", "add", "5"}}, "set", {}, "100"), "ok,100,100,100,100,1");
  EXPECT_EQ(Run(c0, {{"2", "add", "1"}}, "inc", {}, "10"), "ok,111,111,101,101,1");
  EXPECT_EQ(Run(c0, {{"3", "set", "1"}, {"4", "add", "2"}}, "set_on_instance", {"eq", "3"}, "50"),
            "ok,50,50,3,3,1");
  EXPECT_EQ(Run(c0, {{"5", "add", "1"}}, "del_on_instance"), "ok,0,0,51,51,1");
  EXPECT_EQ(Field("q:proc-c0"), "5");
  ExpectBookkeepingOnlyWithTtl();
  EXPECT_EQ(Run(c0, {{"6", "add", "1"}}, "del"), "ok,0,0,1,1,1");
  EXPECT_EQ(Field("q:proc-c0"), "6");
  ExpectBookkeepingOnlyWithTtl();
}

TEST_F(ICounterScriptTest, FailedConditionKeepsTheEntries) {
  EXPECT_EQ(Run(c0, {{"1", "add", "5"}}, "inc", {"eq", "0"}, "1"), "ok,5,5,5,5,0");
  EXPECT_EQ(Field("c"), "5");
  EXPECT_EQ(Field("q:proc-c0"), "1");
}

TEST_F(ICounterScriptTest, LaxEntriesNettingZeroOnAnAbsentKeyOnlyLeaveTheMark) {
  EXPECT_EQ(Flush(c0, {{"1", "add", "5"}, {"2", "add", "-5"}}), "ok,0,0,0,0,0");
  EXPECT_EQ(epoch_, "0") << "nothing was stored: no epoch";
  EXPECT_EQ(Cmd({"HKEYS", kKey}), "q:proc-c0");
  ExpectBookkeepingOnlyWithTtl();
  EXPECT_EQ(Inc(c0, "1"), "ok,1,1,0,0,1");
  EXPECT_EQ(Pttl(), -1);
  EXPECT_EQ(Flush(c0, {{"2", "add", "5"}}), "ok,1,1,1,1,0") << "the mark survived";
}

TEST_F(ICounterScriptTest, LaxEntriesThatWouldOverflowAreDroppedAndCounted) {
  ASSERT_EQ(Set(c0, "9223372036854775806"), "ok,9223372036854775806,9223372036854775806,0,0,1");
  // +1 -> MAX; +1 dropped; -5 -> MAX-5; +10 dropped.
  EXPECT_EQ(
      Flush(c0, {{"1", "add", "1"}, {"2", "add", "1"}, {"3", "add", "-5"}, {"4", "add", "10"}}),
      "ok,9223372036854775802,9223372036854775802,9223372036854775802,9223372036854775802,0");
  EXPECT_EQ(dropped_, 2);
  EXPECT_EQ(Field("q:proc-c0"), "4");  // dropped entries count as done: a retry skips them
  EXPECT_EQ(Flush(c0, {{"4", "add", "10"}}),
            "ok,9223372036854775802,9223372036854775802,9223372036854775802,9223372036854775802,0");
  EXPECT_EQ(dropped_, 0);
  // Entry 1 would overflow c1's own slice (the cumulative would fit), entry 2 the cumulative:
  // both are dropped, entry 3 fits.
  ASSERT_EQ(Soi(c1, kMin), std::string("ok,-6,") + kMin + ",9223372036854775802,0,1");
  EXPECT_EQ(Flush(c1, {{"1", "add", "-1"}, {"2", "set", kMax}, {"3", "set", "-1"}}),
            std::string("ok,9223372036854775801,-1,9223372036854775801,-1,0"));
  EXPECT_EQ(dropped_, 2);
  EXPECT_EQ(Field("c"), "9223372036854775801");
}

TEST_F(ICounterScriptTest, OpOverflowKeepsTheEntries) {
  ASSERT_EQ(Set(c0, "5"), "ok,5,5,0,0,1");
  EXPECT_EQ(Run(c0, {{"1", "add", "10"}}, "inc", {}, kMax), "overflow,15,15,15,15,0");
  EXPECT_EQ(Field("c"), "15");
  EXPECT_EQ(Field("q:proc-c0"), "1");
}

// ================= int64 extremes =================

TEST_F(ICounterScriptTest, ExtremesAreExactAndOverflowChangesNothing) {
  const std::string M = kMax, m = kMin;
  ASSERT_EQ(Inc(c0, M), "ok," + M + "," + M + ",0,0,1");
  std::string before = Cmd({"HGETALL", kKey});
  EXPECT_EQ(Inc(c0, "1"), "overflow," + M + "," + M + "," + M + "," + M + ",0");
  EXPECT_EQ(Inc(c1, "1"), "overflow," + M + ",0," + M + ",0,0");
  EXPECT_EQ(Soi(c1, "1"), "overflow," + M + ",0," + M + ",0,0");
  EXPECT_EQ(Cmd({"HGETALL", kKey}), before);
  // c0 = MAX, c1 = MIN: the cumulative is -1 and fits, c0's slice cannot grow.
  ASSERT_EQ(Inc(c1, m), "ok,-1," + m + "," + M + ",0,1");
  before = Cmd({"HGETALL", kKey});
  EXPECT_EQ(Inc(c0, "1"), "overflow,-1," + M + ",-1," + M + ",0");
  EXPECT_EQ(Inc(c1, "-1"), "overflow,-1," + m + ",-1," + m + ",0");
  EXPECT_EQ(Cmd({"HGETALL", kKey}), before);
  EXPECT_EQ(Inc(c0, "-1"), "ok,-2,9223372036854775806,-1," + M + ",1");
  // Without c1's slice the rest would not fit: del_on_instance and reap refuse.
  ASSERT_EQ(Inc(c0, "1"), "ok,-1," + M + ",-2,9223372036854775806,1");
  ASSERT_EQ(Inc(c2, "5"), "ok,4,5,-1,0,1");
  before = Cmd({"HGETALL", kKey});
  EXPECT_EQ(Dor(c1), "overflow,4," + m + ",4," + m + ",0");
  EXPECT_EQ(Reap(c2, c1), "overflow,4,5,4,5,0");
  EXPECT_EQ(Cmd({"HGETALL", kKey}), before);
  // A restore that would not fit is refused too.
  const std::string e = Epoch();
  EXPECT_EQ(Reap(c2, c0), "ok," + std::string("-9223372036854775803") + ",5,4,5,1");
  EXPECT_EQ(Restore(Reregistered(c0, "2"), e, M), "ok,4," + M + ",-9223372036854775803,0,1");
  EXPECT_EQ(Restore(Daemon("c3", "2"), e, "9223372036854775804"), "overflow,4,0,4,0,0");
  // set works at both ends and clears everything.
  EXPECT_EQ(Set(c2, m), "ok," + m + "," + m + ",4,5,1");
  EXPECT_EQ(Set(c2, M), "ok," + M + "," + M + "," + m + "," + m + ",1");
  EXPECT_EQ(Dor(c2), "ok,0,0," + M + "," + M + ",1");
}

// ================= corrupt data and bad input =================

TEST_F(ICounterScriptTest, CorruptStoredDataIsReportedAndUntouchedExceptBySetAndDel) {
  const std::string e = "1700000000000000";
  const std::vector<std::pair<std::string, std::string>> corrupt = {{"c", "abc"},
                                                                    {"c", "007"},
                                                                    {"c", "-0"},
                                                                    {"c", ""},
                                                                    {"c", "9223372036854775808"},
                                                                    {"e", "x"},
                                                                    {"e", "0"},
                                                                    {"e", "-5"},
                                                                    {"s:c0", "garbage"},
                                                                    {"s:c0", e + "|1"},
                                                                    {"s:c0", e + "|0|5"},
                                                                    {"s:c0", e + "|1|5x"},
                                                                    {"s:c0", "0|1|5"},
                                                                    {"s:c0", e + "|1|5|6"}};
  for (const auto& [field, bad] : corrupt) {
    SCOPED_TRACE(field + " = '" + bad + "'");
    Cmd({"DEL", kKey});
    ASSERT_EQ(Cmd({"HSET", kKey, "e", e, "c", "5", "s:c0", e + "|1|5"}), "3");
    ASSERT_EQ(Cmd({"HSET", kKey, field, bad}), "0");
    const std::string before = Cmd({"HGETALL", kKey});
    for (const std::string op : {"get", "inc", "set_on_instance", "del_on_instance"}) {
      SCOPED_TRACE(op);
      EXPECT_EQ(Run(c0, {{"1", "add", "5"}}, op, {}, "1"), "notint,0,0,0,0,0");
    }
    // A condition cannot be evaluated on it either.
    EXPECT_EQ(Run(c0, {{"1", "add", "5"}}, "set", {"eq", "0"}, "1"), "notint,0,0,0,0,0");
    EXPECT_EQ(Cmd({"HGETALL", kKey}), before) << "no write, not even the dedup mark";
    // Set without a condition and Del overwrite it (the unreadable parts count 0).
    EXPECT_EQ(Run(c0, {{"1", "add", "5"}}, "set", {}, "3").substr(0, 7), "ok,3,3,");
    EXPECT_EQ(Field("c"), "3");
    EXPECT_EQ(Run(c0, {}, "get").substr(0, 7), "ok,3,3,");
    Cmd({"HSET", kKey, field, bad});
    EXPECT_EQ(Run(c0, {{"2", "add", "5"}}, "del").substr(0, 7), "ok,0,0,");
    EXPECT_EQ(Run(c0, {}, "get").substr(0, 7), "ok,0,0,");
    EXPECT_EQ(Inc(c0, "2").substr(0, 7), "ok,2,2,");
  }
  // A corrupt dead slice stops its reap only.
  Cmd({"DEL", kKey});
  ASSERT_EQ(Cmd({"HSET", kKey, "e", e, "c", "5", "s:c0", e + "|1|5", "s:c1", "junk"}), "4");
  EXPECT_EQ(Reap(c0, c1), "notint,0,0,0,0,0");
  EXPECT_EQ(Reap(c0, c2), "ok,5,5,5,5,0");
  EXPECT_EQ(Field("s:c1"), "junk");
}

TEST_F(ICounterScriptTest, CorruptMarkIsReportedWritesNothingAndIsRepairedBySet) {
  ASSERT_EQ(Inc(c0, "7"), "ok,7,7,0,0,1");
  ASSERT_EQ(Cmd({"HSET", kKey, "q:proc-c0", "garbage"}), "1");
  const std::string before = Cmd({"HGETALL", kKey});
  EXPECT_EQ(Flush(c0, {{"1", "add", "5"}}), "corrupt,0,0,0,0,0");
  EXPECT_EQ(Cmd({"HGETALL", kKey}), before);
  EXPECT_EQ(Flush(c1, {{"1", "add", "5"}}), "ok,12,5,12,5,0");  // other processes are fine
  EXPECT_EQ(Set(c0, "4").substr(0, 7), "ok,4,4,");
  EXPECT_EQ(Field("q:proc-c0"), "(nil)");
  EXPECT_EQ(Flush(c0, {{"1", "add", "5"}}).substr(0, 7), "ok,9,9,");
}

TEST_F(ICounterScriptTest, KeyOfAnotherTypeIsAnErrorExceptForSetAndDel) {
  ASSERT_EQ(Cmd({"SET", kKey, "5"}), "OK");
  EXPECT_NE(Inc(c0, "1").find("WRONGTYPE"), std::string::npos);
  EXPECT_EQ(Set(c0, "4").substr(0, 7), "ok,4,4,");
  ASSERT_EQ(Cmd({"DEL", kKey}), "1");
  ASSERT_EQ(Cmd({"SADD", kKey, "x"}), "1");
  EXPECT_EQ(Del(c0).substr(0, 7), "ok,0,0,");
  EXPECT_EQ(Inc(c0, "2").substr(0, 7), "ok,2,2,");
}

TEST_F(ICounterScriptTest, BadArgvIsAnErrorAndWritesNothing) {
  ASSERT_EQ(Flush(c0, {{"1", "add", "7"}}), "ok,7,7,7,7,0");
  const std::string before = Cmd({"HGETALL", kKey});
  const std::vector<std::string> ok = {"A", "1", "p", "0", "get", "", "0", "0"};
  ASSERT_EQ(Eval(ok).rfind("ok,", 0), 0u);  // the baseline is valid
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"", "1", "p", "0", "inc", "", "0", "1"},    // empty id
      {"A", "0", "p", "0", "inc", "", "0", "1"},   // incarnation 0
      {"A", "01", "p", "0", "inc", "", "0", "1"},  // non-canonical incarnation
      {"A", "x", "p", "0", "inc", "", "0", "1"},
      {"A", "9007199254740992", "p", "0", "inc", "", "0", "1"},  // >= 2^53
      {"A", "1", "", "0", "inc", "", "0", "1"},                  // empty dedup id
      {"A", "1", "p", "x", "inc", "", "0", "1"},                 // bad count
      {"A", "1", "p", "-1", "inc", "", "0", "1"},
      {"A", "1", "p", "01", "1", "add", "1", "inc", "", "0", "1"},
      {"A", "1", "p", "1", "inc", "", "0", "1"},  // count / ARGV mismatch
      {"A", "1", "p", "0", "inc", "", "0", "1", "extra"},
      {"A", "1", "p", "0", "inc", "", "0"},
      {"A", "1", "p", "1", "1", "add", "5", "inc", "", "0"},
      {"A", "1", "p", "1", "0", "add", "5", "inc", "", "0", "1"},   // seq 0
      {"A", "1", "p", "1", "01", "add", "5", "inc", "", "0", "1"},  // non-canonical seq
      {"A", "1", "p", "1", "9007199254740992", "add", "5", "inc", "", "0", "1"},
      {"A", "1", "p", "2", "2", "add", "1", "2", "add", "1", "inc", "", "0", "1"},  // order
      {"A", "1", "p", "2", "3", "add", "1", "2", "add", "1", "inc", "", "0", "1"},
      {"A", "1", "p", "1", "1", "inc", "5", "inc", "", "0", "1"},  // bad kind
      {"A", "1", "p", "1", "1", "", "5", "inc", "", "0", "1"},
      {"A", "1", "p", "1", "1", "ADD", "5", "inc", "", "0", "1"},
      {"A", "1", "p", "1", "1", "add", "1.0", "inc", "", "0", "1"},  // bad values
      {"A", "1", "p", "1", "1", "add", "-0", "inc", "", "0", "1"},
      {"A", "1", "p", "1", "1", "set", "+5", "inc", "", "0", "1"},
      {"A", "1", "p", "1", "1", "set", "9223372036854775808", "inc", "", "0", "1"},
      {"A", "1", "p", "1", "1", "add", "5", "incr", "", "0", "1"},  // unknown op
      {"A", "1", "p", "0", "INC", "", "0", "1"},
      {"A", "1", "p", "0", "flush", "", "0", "1"},
      {"A", "1", "p", "0", "clear", "", "0", "1"},
      {"A", "1", "p", "0", "", "", "0", "1"},
      {"A", "1", "p", "0", "inc", "==", "0", "1"},  // unknown comparator
      {"A", "1", "p", "0", "inc", "EQ", "0", "1"},
      {"A", "1", "p", "0", "get", "eq", "0", "0"},  // a comparator where none is taken
      {"A", "1", "p", "0", "del", "eq", "0", "0"},
      {"A", "1", "p", "0", "del_on_instance", "ge", "0", "0"},
      {"A", "1", "p", "0", "reap", "lt", "0", "0", "B", "1"},
      {"A", "1", "p", "0", "restore", "ne", "0", "0", "1", "1"},
      {"A", "1", "p", "0", "inc", "eq", "01", "1"},  // bad operand
      {"A", "1", "p", "0", "inc", "eq", "", "1"},
      {"A", "1", "p", "0", "inc", "eq", "-9223372036854775809", "1"},
      {"A", "1", "p", "0", "inc", "", "0", "9223372036854775808"},  // bad arg
      {"A", "1", "p", "0", "set", "", "0", " 1"},
      {"A", "1", "p", "0", "set_on_instance", "", "0", "-0"},
      {"A", "1", "p", "0", "get", "", "0", "x"},
      {"A", "1", "p", "0", "reap", "", "0", "0"},  // reap without its arguments
      {"A", "1", "p", "0", "reap", "", "0", "0", "B"},
      {"A", "1", "p", "0", "reap", "", "0", "0", "", "1"},
      {"A", "1", "p", "0", "reap", "", "0", "0", "B", "0"},
      {"A", "1", "p", "0", "reap", "", "0", "0", "B", "1", "x"},
      {"A", "1", "p", "0", "restore", "", "0", "0", "1"},  // restore without its arguments
      {"A", "1", "p", "0", "restore", "", "0", "0", "-1", "5"},
      {"A", "1", "p", "0", "restore", "", "0", "0", "01", "5"},
      {"A", "1", "p", "0", "restore", "", "0", "0", "x", "5"},
      {"A", "1", "p", "0", "restore", "", "0", "0", "1", "5.0"},
      {"A", "1", "p", "0", "get", "", "0", "0", "1"},  // extras on an op without any
      // two more are sent_ms and bound_ms (ICounterBoundTest); three are too many
      {"A", "1", "p", "0", "get", "", "0", "0", "1", "5", "6"},
  };
  for (const auto& args : bad) {
    std::string joined;
    for (const auto& a : args) joined += "'" + a + "' ";
    SCOPED_TRACE(joined);
    const std::string reply = Eval(args);
    EXPECT_EQ(reply.rfind("ERROR:ERR distkit: ", 0), 0u) << reply;
  }
  EXPECT_EQ(Cmd({"HGETALL", kKey}), before);
  EXPECT_EQ(Pttl(), -1);
}

TEST_F(ICounterScriptTest, WrongTypeKeyIsAnError) {
  ASSERT_EQ(Cmd({"SET", kKey, "5"}), "OK");
  const std::string reply = Inc(c0, "1");
  EXPECT_NE(reply.find("WRONGTYPE"), std::string::npos) << reply;
  EXPECT_EQ(Cmd({"GET", kKey}), "5");
}

TEST_F(ICounterScriptTest, OnlyKeys1IsTouched) {
  ASSERT_EQ(Flush(c0, {{"1", "add", "5"}}).rfind("ok,", 0), 0u);
  ASSERT_EQ(Inc(c1, "1").rfind("ok,", 0), 0u);
  ASSERT_EQ(Soi(c2, "3").rfind("ok,", 0), 0u);
  ASSERT_EQ(Reap(c0, c2).rfind("ok,", 0), 0u);
  ASSERT_EQ(Restore(Reregistered(c2, "2"), Epoch(), "3").rfind("ok,", 0), 0u);
  ASSERT_EQ(Dor(c1).rfind("ok,", 0), 0u);
  ASSERT_EQ(Set(c0, "9").rfind("ok,", 0), 0u);
  ASSERT_EQ(Del(c0).rfind("ok,", 0), 0u);
  EXPECT_EQ(Cmd({"KEYS", "*"}), kKey);
}

// ================= how the daemon loads it =================

TEST_F(ICounterScriptTest, WorksThroughScriptLoadAndEvalsha) {
  const std::string sha = Cmd({"SCRIPT", "LOAD", script_});
  ASSERT_EQ(sha.size(), 40u) << sha;
  const std::string r = Cmd(
      {"EVALSHA", sha, "1", kKey, "c0", "1", "p", "1", "1", "add", kMax, "inc", "ge", kMin, "0"});
  EXPECT_EQ(r.rfind(std::string("ok,") + kMax + "," + kMax + "," + kMax + "," + kMax + ",1,", 0),
            0u)
      << r;
  EXPECT_EQ(r.substr(r.size() - 6), ",1,0,0") << "seen 1, dropped 0, before 0: " << r;
}

TEST_F(ICounterScriptTest, EmbeddedCopyIsTheLibrariesThenTheFile) {
  const std::string file = ReadFile(DISTKIT_SOURCE_DIR "/lua/icounter.lua");
  const std::string lib = ReadFile(DISTKIT_SOURCE_DIR "/lua/lib/int64.lua");
  ASSERT_FALSE(file.empty());
  ASSERT_FALSE(lib.empty());
  ASSERT_GE(script_.size(), file.size());
  EXPECT_EQ(script_.substr(script_.size() - file.size()), file);
  EXPECT_EQ(script_.rfind(lib, 0), 0u);
  // One copy of the helpers, in the library.
  EXPECT_EQ(file.find("local function i64_add"), std::string::npos);
  EXPECT_NE(lib.find("local function i64_add"), std::string::npos);
}

// ---- dedup marks with a resend bound (issue #11 finding 10; docs/architecture.md) ----

class ICounterBoundTest : public ICounterScriptTest {
 protected:
  // A flush (get carrying entries) in the daemon's bounded form.
  std::string BFlush(const Inst& w, const std::vector<Entry>& entries, int64_t sent_ms,
                     int64_t bound_ms, const std::string& key = kKey) {
    return Run(w, entries, "get", {}, "0", {std::to_string(sent_ms), std::to_string(bound_ms)},
               key);
  }
  int64_t RedisMs() { return NowUs() / 1000; }
};

TEST_F(ICounterBoundTest, EntriesPastTheBoundAreRefusedAndTheReplySaysWhichWereApplied) {
  constexpr int64_t kBound = 100000;
  const int64_t now = RedisMs();
  EXPECT_EQ(BFlush(c0, {{"1", "add", "5"}}, now, kBound), "ok,5,5,5,5,0");
  EXPECT_GE(now_ms_, now) << "a bounded reply carries Redis time";
  const std::string mark = Field("q:proc-c0");
  ASSERT_EQ(mark.rfind("1@", 0), 0u) << mark;
  EXPECT_GE(std::stoll(mark.substr(2)), now + 2 * kBound) << "the mark lives 2 x bound";
  EXPECT_EQ(seen_, "1") << "seen is the seq, not the mark with its expiry";
  // A resend within the bound is deduplicated as always.
  EXPECT_EQ(BFlush(c0, {{"1", "add", "5"}, {"2", "add", "7"}}, now, kBound), "ok,12,12,12,12,0");
  EXPECT_EQ(seen_, "2");
  const std::string layout = Cmd({"HGETALL", kKey});
  // Past the bound: refused, nothing written; seen says what was applied; authoritative
  // within 1.5 x bound.
  EXPECT_EQ(BFlush(c0, {{"2", "add", "7"}, {"3", "add", "1"}}, now - 120000, kBound),
            "stale,12,12,12,12,0");
  EXPECT_EQ(seen_, "2");
  EXPECT_EQ(resolved_, 1);
  EXPECT_EQ(Cmd({"HGETALL", kKey}), layout) << "a stale call writes nothing";
  EXPECT_EQ(BFlush(c0, {{"3", "set", "1"}}, now - 200000, kBound), "stale,12,12,12,12,0");
  EXPECT_EQ(resolved_, 0);
  EXPECT_EQ(Cmd({"HGETALL", kKey}), layout);
  // The strict op riding on a stale flush is refused too; without entries nothing is stale.
  EXPECT_EQ(Run(c0, {{"3", "add", "1"}}, "inc", {}, "4", {"0", "10"}), "stale,12,12,12,12,0");
  EXPECT_EQ(Run(c0, {}, "inc", {}, "4", {"0", "10"}), "ok,16,16,12,12,1");
  // Unbounded calls (older daemons) keep the 10-element reply and a plain mark.
  EXPECT_EQ(Flush(c1, {{"1", "add", "1"}}), "ok,17,1,17,1,0");
  EXPECT_EQ(now_ms_, -1);
  EXPECT_EQ(Field("q:proc-c1"), "1");
  EXPECT_EQ(BFlush(c0, {{"4", "add", "1"}}, -1, 10).rfind("ERROR:", 0), 0u);
  EXPECT_EQ(BFlush(c0, {{"4", "add", "1"}}, 0, 0).rfind("ERROR:", 0), 0u);
  EXPECT_EQ(Run(c0, {}, "reap", {}, "0", {c1.id, c1.inc, "0", "x"}).rfind("ERROR:", 0), 0u);
}

TEST_F(ICounterBoundTest, ExpiredQMarksOfOtherProcessesAreCollectedSlicesAndOthersKept) {
  const int64_t now = RedisMs();
  ASSERT_EQ(Flush(c1, {{"1", "add", "10"}}), "ok,10,10,10,10,0");
  const std::string slice = Field("s:c1"), epoch = Epoch();
  // Expired marks of gone processes, a live one, an old-format one, and an expired-looking
  // value in a slice-named and other non-q: fields (never touched).
  ASSERT_EQ(Cmd({"HSET", kKey, "q:gone1", absl::StrCat("4@", now - 1), "q:gone2",
                 absl::StrCat("8@", now - 5000), "q:live", absl::StrCat("9@", now + 100000),
                 "q:old", "3"}),
            "4");
  EXPECT_EQ(BFlush(c0, {{"1", "add", "1"}}, now, 100000), "ok,11,1,11,1,0");
  EXPECT_EQ(Field("q:gone1"), "(nil)");
  EXPECT_EQ(Field("q:gone2"), "(nil)");
  EXPECT_EQ(Field("q:live"), absl::StrCat("9@", now + 100000));
  EXPECT_EQ(Field("q:old"), "3");
  EXPECT_EQ(Field("q:proc-c1"), "1");
  EXPECT_EQ(Field("q:proc-c0").rfind("1@", 0), 0u);
  EXPECT_EQ(Field("s:c1"), slice);
  EXPECT_EQ(Field("c"), "11");
  EXPECT_EQ(Epoch(), epoch);
  EXPECT_EQ(Cmd({"PTTL", kKey}), "-1");
  // The live process's resend of an applied entry is still deduplicated.
  const Inst live{"lv", "1", "live"};
  EXPECT_EQ(BFlush(live, {{"9", "add", "100"}}, now, 100000), "ok,11,0,11,0,0");
  // A bookkeeping-only hash keeps its 24 h TTL through a collecting write.
  ASSERT_EQ(Cmd({"HSET", "k2", "q:gone", absl::StrCat("1@", now - 1)}), "1");
  EXPECT_EQ(BFlush(c0, {{"2", "set", "0"}}, now, 100000, "k2"), "ok,0,0,0,0,0");
  EXPECT_EQ(Cmd({"HKEYS", "k2"}), "q:proc-c0");
  ExpectBookkeepingOnlyWithTtl("k2");
}

}  // namespace
}  // namespace distkit::testing
