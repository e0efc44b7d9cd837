// Chaos end to end on Redis Cluster (issue #10): three real distkitd processes on a 3-primary +
// 3-replica cluster, client threads issuing mixed load (plain counters STRICT and LAX, instance
// counters STRICT and LAX, REDIS and HYBRID rate limits) and counting every acknowledged
// increment, while the cluster is resharded back and forth, a replica takes over with
// CLUSTER FAILOVER (phase 1) and, later, a primary is SIGKILLed (phase 2). After SIGTERM of every
// daemon (exit 0: every LAX increment flushed) each phase's plain counters are read in Redis:
//   phase 1 (reshards + manual failover): every acknowledged increment is there exactly once;
//   phase 2 (a killed primary): nothing is doubled; what Redis itself lost with the primary
//   (asynchronous replication) is counted and printed, not asserted.
// The phases use separate namespaces, and phase 1 is checked (and its writes replicated) before
// the kill, so the kill cannot blur phase 1's exact check.
//
// A STRICT call that failed (deadline, connection lost) has an unknown outcome: its delta may or
// may not be in Redis. Such deltas are counted per key as "uncertain" and widen the check to
// acknowledged <= value <= acknowledged + uncertain; the summary says how many there were.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daemon/core/redis_keys.h"
#include "distkit/client.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"
#include "tests/support/redis_cluster.h"
#include "tests/support/redis_process.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::Daemon;
using testing::FreePort;
using testing::HttpGet;
using testing::PollUntil;
using testing::RedisCluster;
using Clock = std::chrono::steady_clock;

constexpr int kDaemons = 3;
constexpr int kClients = 4;
constexpr int kCounterKeys = 50;
constexpr int kInstanceKeys = 10;
constexpr int kRateKeys = 5;
// Far above --redis_timeout_ms (1 s): a call that runs into it hung in the daemon.
constexpr auto kCallDeadline = 10s;

// The value of the sample line that starts with `prefix` ("name{labels} "), 0 when absent.
int64_t MetricValue(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) {
      double v = 0;
      if (absl::SimpleAtod(line.substr(prefix.size()), &v)) return static_cast<int64_t>(v);
    }
  }
  return 0;
}

// One client's view of the calls it made, merged after the threads are joined.
struct Tally : testing::CallCounts {
  std::map<std::string, int64_t> acked;      // plain counter key -> sum of acknowledged deltas
  std::map<std::string, int64_t> uncertain;  // plain counter key -> deltas of failed STRICT calls
  // instance counter key -> per daemon: acknowledged deltas, failed STRICT deltas.
  std::map<std::string, std::vector<int64_t>> iacked, iuncertain;
  int64_t rate_allowed = 0, rate_rejected = 0, rate_degraded = 0;

  void Merge(const Tally& o) {
    for (const auto& [k, v] : o.acked) acked[k] += v;
    for (const auto& [k, v] : o.uncertain) uncertain[k] += v;
    for (const auto& [k, v] : o.iacked) {
      auto& mine = iacked[k];
      mine.resize(kDaemons, 0);
      for (size_t d = 0; d < v.size(); ++d) mine[d] += v[d];
    }
    for (const auto& [k, v] : o.iuncertain) {
      auto& mine = iuncertain[k];
      mine.resize(kDaemons, 0);
      for (size_t d = 0; d < v.size(); ++d) mine[d] += v[d];
    }
    CallCounts::Merge(o);
    rate_allowed += o.rate_allowed;
    rate_rejected += o.rate_rejected;
    rate_degraded += o.rate_degraded;
  }
};

std::string CounterKey(int i) { return absl::StrCat("k", i); }
std::string InstanceKey(int i) { return absl::StrCat("i", i); }

// Codes a call may end with while the cluster moves under it. Anything else (INTERNAL, UNKNOWN,
// INVALID_ARGUMENT...) is a daemon bug.
bool ExpectedCode(grpc::StatusCode code) {
  return code == grpc::StatusCode::OK || code == grpc::StatusCode::UNAVAILABLE ||
         code == grpc::StatusCode::DEADLINE_EXCEEDED || code == grpc::StatusCode::ABORTED;
}

class ClusterChaosE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = RedisCluster::Start();
    ASSERT_TRUE(cluster_);
    dir_ = testing::MakeTempDir("dk-chaos");
    for (int i = 0; i < kDaemons; ++i) {
      const std::string socket = absl::StrCat(dir_, "/d", i, ".sock");
      metrics_ports_.push_back(FreePort());
      daemons_.push_back(std::make_unique<Daemon>(
          socket,
          std::vector<std::string>{"--redis", cluster_->seeds_url(), "--listen", "unix:" + socket,
                                   "--flush_interval_ms", "20", "--redis_timeout_ms", "1000",
                                   "--log_level", "info", "--metrics_listen",
                                   absl::StrCat("127.0.0.1:", metrics_ports_.back())},
          std::vector<std::string>{}));
    }
    for (auto& d : daemons_) {
      ASSERT_TRUE(d->started());
      ASSERT_TRUE(d->WaitServing("distkit.v1.CounterService", 30s)) << d->Log();
      ASSERT_TRUE(d->WaitServing("distkit.v1.InstanceCounterService", 30s)) << d->Log();
      ASSERT_TRUE(d->WaitServing("distkit.v1.RateLimitService", 30s)) << d->Log();
    }
  }

  // Mixed load on namespace `ns` from one client until `stop`.
  void ClientLoop(int client, const std::string& ns, const std::atomic<bool>& stop, Tally& t) {
    std::mt19937 rng(static_cast<uint32_t>(client * 7919 + ns.size()));
    std::uniform_int_distribution<int> pick(0, 99), delta_of(1, 5);
    std::vector<std::unique_ptr<Client>> clients;
    for (auto& daemon : daemons_) clients.push_back(daemon->NewClient(ns, kCallDeadline));
    while (!stop.load()) {
      const int d = static_cast<int>(rng() % kDaemons);
      Client& client = *clients[d];
      const int what = pick(rng);
      const int64_t delta = delta_of(rng);
      if (what < 60) {  // plain counter, STRICT or LAX
        const bool strict = what < 30;
        const std::string key = CounterKey(static_cast<int>(rng() % kCounterKeys));
        const absl::Status s = t.Count(strict ? "inc_strict" : "inc_lax", kCallDeadline, [&] {
          return client.Inc(key, delta, strict ? Consistency::kStrict : Consistency::kLax).status();
        });
        if (s.ok()) {
          t.acked[key] += delta;
        } else if (strict) {
          t.uncertain[key] += delta;
        } else {
          // A LAX Inc is answered from memory: a failure means it was not taken; counted as
          // uncertain anyway so a surprise here shows in the check, not as a false alarm.
          t.uncertain[key] += delta;
        }
      } else if (what < 80) {  // instance counter, STRICT or LAX
        const bool strict = what < 70;
        const std::string key = InstanceKey(static_cast<int>(rng() % kInstanceKeys));
        const absl::Status s = t.Count(strict ? "iinc_strict" : "iinc_lax", kCallDeadline, [&] {
          return client.InstanceInc(key, delta, strict ? Consistency::kStrict : Consistency::kLax)
              .status();
        });
        auto& acked = t.iacked[key];
        auto& uncertain = t.iuncertain[key];
        acked.resize(kDaemons, 0);
        uncertain.resize(kDaemons, 0);
        (s.ok() ? acked : uncertain)[d] += delta;
      } else {  // rate limit, REDIS or HYBRID
        const bool redis = what < 90;
        const std::string key = absl::StrCat("r", rng() % kRateKeys);
        absl::StatusOr<RateLimitResult> r;
        const absl::Status s = t.Count(redis ? "rl_redis" : "rl_hybrid", kCallDeadline, [&] {
          r = client.RateLimitInc(key, 500, 1, redis ? Provider::kRedis : Provider::kHybrid,
                                  Strategy::kAbsolute);
          return r.status();
        });
        if (s.ok()) {
          ++(r->allowed ? t.rate_allowed : t.rate_rejected);
          if (r->degraded) ++t.rate_degraded;
        }
      }
    }
  }

  // Runs kClients clients on `ns` while `faults` runs on this thread; then `after` more load.
  template <typename Faults>
  Tally RunPhase(const std::string& ns, Faults faults, std::chrono::milliseconds after) {
    std::atomic<bool> stop{false};
    std::vector<Tally> tallies(kClients);
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c] { ClientLoop(c, ns, stop, tallies[c]); });
    }
    // Some load before the first fault, so there is data to move.
    const auto warm = Clock::now() + 1500ms;
    PollUntil([&] { return Clock::now() >= warm; }, 5s);
    faults();
    const auto end = Clock::now() + after;
    PollUntil([&] { return Clock::now() >= end; }, after + 5s);
    stop = true;
    for (auto& th : clients) th.join();
    Tally all;
    for (const auto& t : tallies) all.Merge(t);
    return all;
  }

  // The plain counter's "v" in Redis (0 when absent); nullopt when its primary does not answer.
  std::optional<int64_t> RedisValue(const std::string& ns, const std::string& key,
                                    const std::string& field = "v") {
    const std::string rkey = core::PlainCounterKey(ns, key);
    const int port = cluster_->PortOfSlot(RedisCluster::KeySlot(rkey));
    if (port == 0) return std::nullopt;
    const std::string v = cluster_->Command(port, {"HGET", rkey, field});
    if (v == "(nil)") return 0;
    int64_t n = 0;
    if (!absl::SimpleAtoi(v, &n)) return std::nullopt;
    return n;
  }
  // The instance counter's cumulative "c" in Redis (0 when absent), nullopt when unreadable.
  std::optional<int64_t> RedisCumulative(const std::string& ns, const std::string& key) {
    const std::string rkey = core::InstanceCounterKey(ns, key);
    const int port = cluster_->PortOfSlot(RedisCluster::KeySlot(rkey));
    if (port == 0) return std::nullopt;
    const std::string v = cluster_->Command(port, {"HGET", rkey, "c"});
    if (v == "(nil)") return 0;
    int64_t n = 0;
    if (!absl::SimpleAtoi(v, &n)) return std::nullopt;
    return n;
  }

  // Polls until every running replica has replicated everything its primary has.
  bool WaitReplicated(std::chrono::milliseconds timeout) {
    auto offset = [&](int port, const std::string& field) -> int64_t {
      const std::string info = cluster_->Command(port, {"INFO", "replication"});
      const size_t at = info.find(field + ":");
      if (at == std::string::npos) return -1;
      int64_t n = -1;
      const size_t from = at + field.size() + 1;
      absl::SimpleAtoi(info.substr(from, info.find_first_of("\r\n", from) - from), &n);
      return n;
    };
    return PollUntil(
        [&] {
          for (int primary : cluster_->primary_ports()) {
            const int64_t want = offset(primary, "master_repl_offset");
            for (int replica : cluster_->ReplicasOf(primary)) {
              if (offset(replica, "slave_repl_offset") < want) return false;
            }
          }
          return true;
        },
        timeout);
  }

  // Asks every daemon (STRICT Get) for each instance counter of `ns`: the cumulative is the sum
  // of the daemons' slices and no slice exceeds what its daemon acknowledged (+ uncertain); with
  // `exact`, no slice is below it either. `report` turns mismatches into test failures.
  bool InstanceSlicesMatch(const std::string& ns, const Tally& t, bool exact, bool report) {
    for (int i = 0; i < kInstanceKeys; ++i) {
      const std::string key = InstanceKey(i);
      std::vector<int64_t> acked(kDaemons, 0), uncertain(kDaemons, 0);
      if (t.iacked.count(key)) acked = t.iacked.at(key);
      if (t.iuncertain.count(key)) uncertain = t.iuncertain.at(key);
      int64_t sum = 0, cumulative = -1;
      for (int d = 0; d < kDaemons; ++d) {
        const absl::StatusOr<InstanceValue> r =
            daemons_[d]->NewClient(ns, kCallDeadline)->InstanceGet(key, Consistency::kStrict);
        if (report) {
          EXPECT_TRUE(r.ok()) << ns << "/" << key << " on d" << d << ": " << r.status();
        }
        if (!r.ok()) return false;
        const bool ok_slice =
            (!exact || r->instance >= acked[d]) && r->instance <= acked[d] + uncertain[d];
        if (report) {
          EXPECT_TRUE(ok_slice) << ns << "/" << key << " on d" << d << ": slice " << r->instance
                                << ", acknowledged " << acked[d] << " (+" << uncertain[d]
                                << " uncertain)";
          EXPECT_TRUE(cumulative < 0 || cumulative == r->cumulative)
              << ns << "/" << key << ": daemons disagree on the cumulative";
        }
        if (!ok_slice || (cumulative >= 0 && cumulative != r->cumulative)) return false;
        sum += r->instance;
        cumulative = r->cumulative;
      }
      if (report) {
        EXPECT_EQ(cumulative, sum) << ns << "/" << key << ": cumulative != sum of slices";
      }
      if (cumulative != sum) return false;
    }
    return true;
  }

  std::string Logs() {
    std::string out;
    for (auto& d : daemons_) {
      const std::string log = d->Log();
      out += absl::StrCat("--- ", d->name(), " (last 3000 bytes):\n",
                          log.substr(log.size() > 3000 ? log.size() - 3000 : 0), "\n");
    }
    return out;
  }

  std::unique_ptr<RedisCluster> cluster_;
  std::string dir_;
  std::vector<int> metrics_ports_;
  std::vector<std::unique_ptr<Daemon>> daemons_;
};

// Calls ended with an expected code only, none hung; prints the error tally.
void CheckCalls(const std::string& phase, const Tally& t) {
  std::string errors;
  for (const auto& [kind_code, n] : t.errors) {
    absl::StrAppend(&errors, " ", kind_code, "=", n);
    const auto colon = kind_code.rfind(':');
    int code = 0;
    ASSERT_TRUE(absl::SimpleAtoi(kind_code.substr(colon + 1), &code));
    EXPECT_TRUE(ExpectedCode(static_cast<grpc::StatusCode>(code)))
        << phase << ": unexpected status code " << kind_code << " x" << n;
  }
  EXPECT_EQ(t.hung, 0) << phase << ": calls ran into the " << kCallDeadline.count()
                       << " s client deadline";
  EXPECT_GT(t.ok_calls, 0) << phase;
  std::cout << "[chaos] " << phase << ": ok calls " << t.ok_calls << ", errors (kind:grpc code)"
            << (errors.empty() ? " none" : errors) << ", rate limits allowed " << t.rate_allowed
            << " rejected " << t.rate_rejected << " degraded " << t.rate_degraded << std::endl;
}

TEST_F(ClusterChaosE2ETest, AcknowledgedIncrementsSurviveReshardsFailoverAndAKilledPrimary) {
  ASSERT_EQ(daemons_.size(), static_cast<size_t>(kDaemons));
  const std::string ns1 = "chaos1", ns2 = "chaos2";

  // ---- Phase 1: reshards back and forth, then CLUSTER FAILOVER. ----
  std::vector<int> p = cluster_->primary_ports();
  ASSERT_EQ(p.size(), 3u);
  // Slots that hold phase-1 keys, so the migrations certainly move live data.
  std::vector<int> hot_slots;
  for (int i = 0; i < 6; ++i) {
    hot_slots.push_back(RedisCluster::KeySlot(core::PlainCounterKey(ns1, CounterKey(i))));
  }
  hot_slots.push_back(RedisCluster::KeySlot(core::InstanceCounterKey(ns1, InstanceKey(0))));
  int failover_to = 0;
  const Tally t1 = RunPhase(
      ns1,
      [&] {
        for (int round = 0; round < 2; ++round) {
          // Every hot slot to the next primary and back, one at a time.
          for (int slot : hot_slots) {
            const int from = cluster_->PortOfSlot(slot);
            const int to = p[(std::find(p.begin(), p.end(), from) - p.begin() + 1) % p.size()];
            ASSERT_TRUE(cluster_->MigrateSlot(slot, from, to)) << "slot " << slot;
            ASSERT_TRUE(cluster_->MigrateSlot(slot, to, from)) << "slot " << slot;
          }
          // redis-cli --cluster reshard: 100 slots over and back.
          ASSERT_TRUE(cluster_->Reshard(100, p[round], p[round + 1]));
          ASSERT_TRUE(cluster_->Reshard(100, p[round + 1], p[round]));
        }
        // The replica of the primary serving k0 takes over, with load running.
        const int primary = cluster_->PortOfSlot(hot_slots[0]);
        const auto replicas = cluster_->ReplicasOf(primary);
        ASSERT_FALSE(replicas.empty());
        failover_to = replicas[0];
        ASSERT_TRUE(cluster_->Failover(failover_to));
      },
      3s);
  ASSERT_NE(failover_to, 0) << "phase 1 faults did not complete";
  ASSERT_NO_FATAL_FAILURE(CheckCalls("phase 1", t1));

  // LAX increments reach Redis within a few flush intervals; never more than acknowledged.
  int64_t acked1 = 0, uncertain1 = 0;
  for (const auto& [key, v] : t1.acked) acked1 += v;
  for (const auto& [key, v] : t1.uncertain) uncertain1 += v;
  auto phase1_settled = [&] {
    for (int i = 0; i < kCounterKeys; ++i) {
      const std::string key = CounterKey(i);
      const auto v = RedisValue(ns1, key);
      const int64_t acked = t1.acked.count(key) ? t1.acked.at(key) : 0;
      if (!v || *v < acked) return false;
    }
    return true;
  };
  EXPECT_TRUE(PollUntil(phase1_settled, 30s)) << Logs();
  int64_t in_redis1 = 0;
  for (int i = 0; i < kCounterKeys; ++i) {
    const std::string key = CounterKey(i);
    const auto v = RedisValue(ns1, key);
    ASSERT_TRUE(v.has_value()) << key;
    const int64_t acked = t1.acked.count(key) ? t1.acked.at(key) : 0;
    const int64_t uncertain = t1.uncertain.count(key) ? t1.uncertain.at(key) : 0;
    EXPECT_GE(*v, acked) << ns1 << "/" << key << ": acknowledged increments lost";
    EXPECT_LE(*v, acked + uncertain) << ns1 << "/" << key << ": counted more than once";
    if (uncertain == 0) {
      EXPECT_EQ(*v, acked) << ns1 << "/" << key;
    }
    in_redis1 += *v;
  }
  // Instance counters: each daemon's slice is what it acknowledged; the cumulative their sum.
  if (!PollUntil([&] { return InstanceSlicesMatch(ns1, t1, true, false); }, 30s)) {
    InstanceSlicesMatch(ns1, t1, true, true);
  }
  // Phase 1's writes reach the replicas before phase 2 kills a primary.
  ASSERT_TRUE(WaitReplicated(30s));

  // ---- Phase 2: a primary is SIGKILLed under load. ----
  // The primary serving most phase-2 counters.
  std::map<int, int> keys_on;
  for (int i = 0; i < kCounterKeys; ++i) {
    ++keys_on[cluster_->PortOfSlot(
        RedisCluster::KeySlot(core::PlainCounterKey(ns2, CounterKey(i))))];
  }
  const int victim =
      std::max_element(keys_on.begin(), keys_on.end(), [](const auto& a, const auto& b) {
        return a.second < b.second;
      })->first;
  int promoted = 0;
  const Tally t2 = RunPhase(
      ns2, [&] { promoted = cluster_->KillPrimary(victim); }, 3s);
  ASSERT_NE(promoted, 0) << "no replica of " << victim << " was promoted";
  ASSERT_NO_FATAL_FAILURE(CheckCalls("phase 2", t2));
  // Instance counters after the kill: writes may be lost, but the cumulative stays the sum of
  // the slices and no slice exceeds what was acknowledged.
  if (!PollUntil([&] { return InstanceSlicesMatch(ns2, t2, false, false); }, 30s)) {
    InstanceSlicesMatch(ns2, t2, false, true);
  }

  // Redirect counts before the daemons go.
  int64_t moved = 0, ask = 0;
  std::string per_daemon;
  for (int d = 0; d < kDaemons; ++d) {
    const std::string text = HttpGet(metrics_ports_[d], "/metrics").value_or("");
    const int64_t m = MetricValue(text, "distkit_redis_redirects_total{kind=\"moved\"} ");
    const int64_t a = MetricValue(text, "distkit_redis_redirects_total{kind=\"ask\"} ");
    moved += m;
    ask += a;
    absl::StrAppend(&per_daemon, " d", d, "=", m, "/", a);
  }

  // The reshards and the failover were seen by the daemons (the map changed under them).
  EXPECT_GT(moved + ask, 0);

  // ---- SIGTERM: every daemon flushes its LAX increments and exits 0. ----
  // All at once (as a rolling deploy would not, but it is the harder case: nobody is left).
  for (auto& d : daemons_) d->process().Signal(SIGTERM);
  for (auto& d : daemons_) {
    EXPECT_EQ(d->process().Wait(60s), 0) << d->name() << ":\n" << d->Log();
  }

  // Phase 1 again: replicated before the kill, so exactly as before.
  int64_t in_redis1_after = 0;
  for (int i = 0; i < kCounterKeys; ++i) {
    const auto v = RedisValue(ns1, CounterKey(i));
    ASSERT_TRUE(v.has_value());
    in_redis1_after += *v;
  }
  EXPECT_EQ(in_redis1_after, in_redis1) << "phase 1 counters changed after the kill";

  // Phase 2: never more than acknowledged (+ uncertain); what Redis lost is reported.
  int64_t acked2 = 0, uncertain2 = 0, in_redis2 = 0, lost2 = 0, lost_keys = 0;
  for (int i = 0; i < kCounterKeys; ++i) {
    const std::string key = CounterKey(i);
    const auto v = RedisValue(ns2, key);
    ASSERT_TRUE(v.has_value()) << key;
    const int64_t acked = t2.acked.count(key) ? t2.acked.at(key) : 0;
    const int64_t uncertain = t2.uncertain.count(key) ? t2.uncertain.at(key) : 0;
    EXPECT_LE(*v, acked + uncertain) << ns2 << "/" << key << ": counted more than once";
    acked2 += acked;
    uncertain2 += uncertain;
    in_redis2 += *v;
    if (*v < acked) {
      lost2 += acked - *v;
      ++lost_keys;
    }
  }
  // The slices of stopped daemons are removed on SIGTERM: every cumulative is back to 0.
  for (const std::string& ns : {ns1, ns2}) {
    for (int i = 0; i < kInstanceKeys; ++i) {
      const auto c = RedisCumulative(ns, InstanceKey(i));
      ASSERT_TRUE(c.has_value());
      EXPECT_EQ(*c, 0) << ns << "/" << InstanceKey(i) << ": slices left after SIGTERM";
    }
  }

  std::map<std::string, int64_t> codes;  // grpc code -> failed calls, both phases
  for (const Tally* t : {&t1, &t2}) {
    for (const auto& [kind_code, n] : t->errors)
      codes[kind_code.substr(kind_code.rfind(':') + 1)] += n;
  }
  std::string errors;
  for (const auto& [code, n] : codes) absl::StrAppend(&errors, " code", code, "=", n);
  std::cout << "[chaos] summary: phase 1 (reshards+failover) acknowledged " << acked1
            << " in Redis " << in_redis1 << " (uncertain " << uncertain1
            << "); phase 2 (killed primary " << victim << " -> " << promoted << ") acknowledged "
            << acked2 << " in Redis " << in_redis2 << " (uncertain " << uncertain2
            << "), lost by the kill " << lost2 << " on " << lost_keys << " keys; failed calls"
            << (errors.empty() ? " none" : errors) << "; redirects moved/ask " << moved << "/"
            << ask << " (" << per_daemon << " )" << std::endl;
}

}  // namespace
}  // namespace distkit
