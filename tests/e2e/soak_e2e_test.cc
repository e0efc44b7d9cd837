// Soak / chaos end to end on a standalone Redis (issue #11): three real distkitd processes on one
// redis-server (AOF, fsync always, so a Redis restart keeps every acknowledged write), client
// threads issuing mixed load (plain counters STRICT and LAX, instance counters STRICT and LAX,
// LOCAL, REDIS and HYBRID rate limits) while random faults are injected with a seeded RNG:
// Redis SIGSTOP/SIGCONT and restart (SIGKILL + start), daemon SIGKILL, SIGSTOP/SIGCONT and
// SIGTERM (each followed by a restart), and CLIENT KILL of every daemon connection.
//
// Every acknowledged increment is counted per key and per daemon incarnation. At the end the
// instance counters' slices are checked against what each live incarnation acknowledged, every
// daemon is SIGTERMed (exit 0: all LAX work flushed) and Redis is compared with the sums:
//   STRICT plain counters: acknowledged <= value <= acknowledged + uncertain (calls that failed
//     with an unknown outcome); below is "lost", above "doubled".
//   LAX plain counters: each key is used through one daemon slot only, so a shortfall is
//     attributable: up to the LAX deltas acknowledged by incarnations that were SIGKILLed is the
//     documented LAX contract (counted as lax_lost_on_sigkill); more is "lost", above the
//     acknowledged sum is "doubled".
// Rate limits are load only (their answers must have an expected code), not checked for counts.
//
// DISTKIT_SOAK_SECONDS sets the loaded time (default 60; the ctest timeout allows about 3 min in
// all), DISTKIT_SOAK_SEED the fault RNG's seed (default: from the clock; printed either way).

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "daemon/core/redis_keys.h"
#include "distkit/client.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::Daemon;
using testing::PollUntil;
using testing::RedisServer;
using Clock = std::chrono::steady_clock;

constexpr int kDaemons = 3;
constexpr int kClients = 4;
constexpr int kStrictKeys = 20;
constexpr int kLaxKeysPerDaemon = 10;
constexpr int kInstanceKeys = 8;
constexpr int kRateKeys = 4;
constexpr auto kCallDeadline = 10s;  // far above --redis_timeout_ms: only a hang runs into it
constexpr char kNs[] = "soak";

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  int64_t n = 0;
  return v != nullptr && absl::SimpleAtoi(v, &n) ? n : fallback;
}

std::string StrictKey(int i) { return absl::StrCat("s", i); }
std::string LaxKey(int slot, int i) { return absl::StrCat("l", slot, "_", i); }
std::string InstanceKey(int i) { return absl::StrCat("i", i); }

// Codes a call may end with while faults happen (CANCELLED: gRPC cancels the calls a daemon
// receives while it shuts down on SIGTERM); anything else is a daemon bug.
bool ExpectedCode(grpc::StatusCode code) {
  return code == grpc::StatusCode::OK || code == grpc::StatusCode::UNAVAILABLE ||
         code == grpc::StatusCode::DEADLINE_EXCEEDED || code == grpc::StatusCode::ABORTED ||
         code == grpc::StatusCode::CANCELLED;
}

// One daemon slot: the current process and its incarnation number (bumped on every restart).
struct Slot {
  std::mutex mu;
  std::shared_ptr<Daemon> daemon;
  int epoch = 0;
};

// What the clients saw; keys of the per-incarnation maps are {slot, epoch}.
struct Tally : testing::CallCounts {
  using Incarnation = std::pair<int, int>;
  std::map<std::string, int64_t> acked, uncertain;  // plain counters (STRICT and LAX keys)
  std::map<std::string, std::map<Incarnation, int64_t>> lax_acked;  // LAX keys, by incarnation
  std::map<std::string, std::map<Incarnation, int64_t>> iacked, iuncertain;

  void Merge(const Tally& o) {
    for (const auto& [k, v] : o.acked) acked[k] += v;
    for (const auto& [k, v] : o.uncertain) uncertain[k] += v;
    for (const auto& [k, m] : o.lax_acked) {
      for (const auto& [inc, v] : m) lax_acked[k][inc] += v;
    }
    for (const auto& [k, m] : o.iacked) {
      for (const auto& [inc, v] : m) iacked[k][inc] += v;
    }
    for (const auto& [k, m] : o.iuncertain) {
      for (const auto& [inc, v] : m) iuncertain[k][inc] += v;
    }
    CallCounts::Merge(o);
  }
};

class SoakE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    RedisServer::Options opt;
    opt.extra_args = {"--appendonly", "yes", "--appendfsync", "always"};
    redis_ = RedisServer::Start(opt);
    ASSERT_TRUE(redis_);
    for (int d = 0; d < kDaemons; ++d) {
      slots_.push_back(std::make_unique<Slot>());
      ASSERT_TRUE(StartDaemon(d));
    }
  }

  std::shared_ptr<Daemon> Current(int d, int* epoch) {
    std::lock_guard<std::mutex> lock(slots_[d]->mu);
    *epoch = slots_[d]->epoch;
    return slots_[d]->daemon;
  }

  // Starts slot d's next incarnation (a fresh instance id and dedup id) and waits for it. Each
  // incarnation listens on its own socket: a client still holding the previous one's channel
  // must not reach this one (its acknowledgements would be booked to the wrong incarnation).
  bool StartDaemon(int d) {
    int epoch = 0;
    {
      std::lock_guard<std::mutex> lock(slots_[d]->mu);
      epoch = slots_[d]->epoch + 1;
    }
    const std::string name = absl::StrCat("d", d, "_", epoch);
    auto daemon = std::make_shared<Daemon>(
        *redis_, name,
        std::vector<std::string>{"--redis_timeout_ms", "1000", "--flush_interval_ms", "20",
                                 "--dead_instance_threshold_ms", "6000", "--shutdown_grace_ms",
                                 "20000"});
    if (!daemon->started()) return false;
    for (const char* service : {"distkit.v1.CounterService", "distkit.v1.InstanceCounterService",
                                "distkit.v1.RateLimitService"}) {
      if (!daemon->WaitServing(service, 30s)) {
        ADD_FAILURE() << name << " did not start serving " << service << ":\n" << daemon->Log();
        return false;
      }
    }
    std::lock_guard<std::mutex> lock(slots_[d]->mu);
    slots_[d]->daemon = std::move(daemon);
    slots_[d]->epoch = epoch;
    return true;
  }

  void ClientLoop(int client, const std::atomic<bool>& stop, Tally& t) {
    std::mt19937 rng(static_cast<uint32_t>(client * 7919 + 17));
    std::uniform_int_distribution<int> pick(0, 99), delta_of(1, 5);
    while (!stop.load()) {
      const int d = static_cast<int>(rng() % kDaemons);
      int epoch = 0;
      const std::shared_ptr<Daemon> daemon = Current(d, &epoch);
      const Tally::Incarnation inc{d, epoch};
      const int what = pick(rng);
      const int64_t delta = delta_of(rng);
      const std::unique_ptr<Client> client = daemon->NewClient(kNs, kCallDeadline);
      if (what < 55) {  // plain counter: STRICT on shared keys, LAX on this slot's own keys
        const bool strict = what < 30;
        const std::string key = strict ? StrictKey(static_cast<int>(rng() % kStrictKeys))
                                       : LaxKey(d, static_cast<int>(rng() % kLaxKeysPerDaemon));
        const absl::Status s = t.Count(strict ? "inc_strict" : "inc_lax", kCallDeadline, [&] {
          return client->Inc(key, delta, strict ? Consistency::kStrict : Consistency::kLax)
              .status();
        });
        if (s.ok()) {
          t.acked[key] += delta;
          if (!strict) t.lax_acked[key][inc] += delta;
        } else {
          t.uncertain[key] += delta;  // LAX: not taken; kept as uncertain so surprises show
        }
      } else if (what < 80) {  // instance counter, STRICT or LAX
        const bool strict = what < 67;
        const std::string key = InstanceKey(static_cast<int>(rng() % kInstanceKeys));
        const absl::Status s = t.Count(strict ? "iinc_strict" : "iinc_lax", kCallDeadline, [&] {
          return client->InstanceInc(key, delta, strict ? Consistency::kStrict : Consistency::kLax)
              .status();
        });
        (s.ok() ? t.iacked : t.iuncertain)[key][inc] += delta;
      } else {  // rate limit: LOCAL, REDIS or HYBRID (load only)
        const Provider provider = what < 86   ? Provider::kLocal
                                  : what < 93 ? Provider::kRedis
                                              : Provider::kHybrid;
        const std::string key = absl::StrCat("r", rng() % kRateKeys);
        const Strategy strategy = rng() % 4 == 0 ? Strategy::kSuppressed : Strategy::kAbsolute;
        auto rate_limit = [&] {
          return client->RateLimitInc(key, 200, 1, provider, strategy).status();
        };
        t.Count(absl::StrCat("rl", static_cast<int>(provider)), kCallDeadline, rate_limit)
            .IgnoreError();  // load only
      }
    }
  }

  // One fault of kind `kind` (0..5); returns its name for the log.
  std::string Fault(int kind, std::mt19937& rng) {
    const int d = static_cast<int>(rng() % kDaemons);
    int epoch = 0;
    std::shared_ptr<Daemon> daemon = Current(d, &epoch);
    switch (kind) {
      case 0: {  // Redis stops answering for a while, keeping its connections
        redis_->Pause();
        std::this_thread::sleep_for(std::chrono::milliseconds(500 + rng() % 1500));
        redis_->Resume();
        return "redis_pause";
      }
      case 1:  // Redis killed and started again on the same socket (its AOF keeps the data)
        redis_->Restart();
        return "redis_restart";
      case 2: {  // a daemon SIGKILLed: its unflushed LAX work is lost (the LAX contract)
        {
          std::lock_guard<std::mutex> lock(killed_mu_);
          killed_.insert({d, epoch});
        }
        EXPECT_EQ(daemon->Stop(SIGKILL, 10s), 128 + SIGKILL);
        EXPECT_TRUE(StartDaemon(d));
        return absl::StrCat("d", d, "_sigkill");
      }
      case 3: {  // a daemon frozen for a while (shorter than the dead-instance threshold)
        daemon->process().Signal(SIGSTOP);
        std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 1200));
        daemon->process().Signal(SIGCONT);
        return absl::StrCat("d", d, "_sigstop");
      }
      case 4: {  // a daemon stopped cleanly: flushes everything, exits 0
        EXPECT_EQ(daemon->Stop(SIGTERM, 30s), 0) << daemon->Log();
        EXPECT_TRUE(StartDaemon(d));
        return absl::StrCat("d", d, "_sigterm");
      }
      default:  // every client connection of Redis dropped (ours is skipped)
        redis_->Command({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
        return "client_kill";
    }
  }

  // For every instance key: each live incarnation's slice (STRICT Get through it) lies within
  // what it acknowledged (+ uncertain), and the cumulative is the sum of the live slices (the
  // reaper removed the slices of SIGKILLed incarnations). `report` turns mismatches into
  // failures.
  bool InstanceSlicesMatch(const Tally& t, bool report) {
    for (int i = 0; i < kInstanceKeys; ++i) {
      const std::string key = InstanceKey(i);
      int64_t sum = 0, cumulative = -1;
      for (int d = 0; d < kDaemons; ++d) {
        int epoch = 0;
        const std::shared_ptr<Daemon> daemon = Current(d, &epoch);
        const Tally::Incarnation inc{d, epoch};
        const int64_t acked = t.iacked.count(key) ? Get(t.iacked.at(key), inc) : 0;
        const int64_t uncertain = t.iuncertain.count(key) ? Get(t.iuncertain.at(key), inc) : 0;
        const absl::StatusOr<InstanceValue> r =
            daemon->NewClient(kNs, kCallDeadline)->InstanceGet(key, Consistency::kStrict);
        if (report) {
          EXPECT_TRUE(r.ok()) << key << " on d" << d << ": " << r.status().message();
        }
        if (!r.ok()) return false;
        const bool ok_slice = r->instance >= acked && r->instance <= acked + uncertain;
        if (report) {
          EXPECT_TRUE(ok_slice) << key << " on d" << d << " (incarnation " << epoch << "): slice "
                                << r->instance << ", acknowledged " << acked << " (+" << uncertain
                                << " uncertain)";
        }
        if (!ok_slice) return false;
        sum += r->instance;
        cumulative = r->cumulative;
      }
      if (report) {
        EXPECT_EQ(cumulative, sum) << key << ": cumulative != sum of the live slices";
      }
      if (cumulative != sum) return false;
    }
    return true;
  }

  static int64_t Get(const std::map<Tally::Incarnation, int64_t>& m, Tally::Incarnation inc) {
    const auto it = m.find(inc);
    return it == m.end() ? 0 : it->second;
  }

  int64_t RedisHashField(const std::string& rkey, const std::string& field) {
    const std::string v = redis_->Command({"HGET", rkey, field});
    int64_t n = 0;
    if (v == "(nil)") return 0;
    EXPECT_TRUE(absl::SimpleAtoi(v, &n)) << rkey << " " << field << ": " << v;
    return n;
  }

  std::string Logs() {
    std::string out;
    for (int d = 0; d < kDaemons; ++d) {
      int epoch = 0;
      const std::string log = Current(d, &epoch)->Log();
      out += absl::StrCat("--- d", d, " (last 3000 bytes):\n",
                          log.substr(log.size() > 3000 ? log.size() - 3000 : 0), "\n");
    }
    return out;
  }

  std::unique_ptr<RedisServer> redis_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::mutex killed_mu_;
  std::set<Tally::Incarnation> killed_;  // incarnations that were SIGKILLed
};

TEST_F(SoakE2ETest, NoAcknowledgedIncrementLostOrDoubledUnderRandomFaults) {
  const int64_t seconds = EnvInt("DISTKIT_SOAK_SECONDS", 60);
  const auto seed = static_cast<uint32_t>(
      EnvInt("DISTKIT_SOAK_SEED", std::chrono::system_clock::now().time_since_epoch().count()));
  std::cout << "[soak] seed " << seed << " (DISTKIT_SOAK_SEED), " << seconds
            << " s of load (DISTKIT_SOAK_SECONDS)" << std::endl;
  std::mt19937 rng(seed);

  std::atomic<bool> stop{false};
  std::vector<Tally> tallies(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] { ClientLoop(c, stop, tallies[c]); });
  }
  // Faults until the time is up: every kind once first (in a random order), then at random,
  // with 1-4 s of plain load between two.
  std::vector<int> kinds = {0, 1, 2, 3, 4, 5};
  std::shuffle(kinds.begin(), kinds.end(), rng);
  std::map<std::string, int> injected;
  int64_t faults = 0;
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  while (true) {
    const auto next = Clock::now() + std::chrono::milliseconds(1000 + rng() % 3000);
    PollUntil([&] { return Clock::now() >= next; }, 10s);
    if (Clock::now() >= end) break;
    const int kind =
        faults < static_cast<int64_t>(kinds.size()) ? kinds[faults] : static_cast<int>(rng() % 6);
    ++injected[Fault(kind, rng)];
    ++faults;
    if (HasFatalFailure()) break;
  }
  stop = true;
  for (auto& th : clients) th.join();
  Tally t;
  for (const auto& one : tallies) t.Merge(one);

  std::string errors, fault_names;
  for (const auto& [kind_code, n] : t.errors) {
    absl::StrAppend(&errors, " ", kind_code, "=", n);
    int code = 0;
    ASSERT_TRUE(absl::SimpleAtoi(kind_code.substr(kind_code.rfind(':') + 1), &code));
    EXPECT_TRUE(ExpectedCode(static_cast<grpc::StatusCode>(code)))
        << "unexpected status code " << kind_code << " x" << n;
  }
  for (const auto& [name, n] : injected) absl::StrAppend(&fault_names, " ", name, "=", n);
  std::cout << "[soak] ok calls " << t.ok_calls << ", failed (kind:code)"
            << (errors.empty() ? " none" : errors) << "; faults" << fault_names << std::endl;
  EXPECT_EQ(t.hung, 0) << "calls ran into the client deadline";
  EXPECT_GT(t.ok_calls, 0);

  // Instance counters while every daemon is up: slices of live incarnations exact, and the
  // SIGKILLed incarnations' slices reaped (the dead-instance threshold is 6 s).
  if (!PollUntil([&] { return InstanceSlicesMatch(t, false); }, 60s)) {
    InstanceSlicesMatch(t, true);
  }

  // SIGTERM: every daemon flushes its LAX increments, removes its slices and exits 0.
  for (int d = 0; d < kDaemons; ++d) {
    int epoch = 0;
    Current(d, &epoch)->process().Signal(SIGTERM);
  }
  for (int d = 0; d < kDaemons; ++d) {
    int epoch = 0;
    const auto daemon = Current(d, &epoch);
    EXPECT_EQ(daemon->process().Wait(60s), 0) << "d" << d << ":\n" << daemon->Log();
  }

  int64_t ops_acked = t.ok_calls, lost = 0, doubled = 0, lax_lost_on_sigkill = 0;
  int64_t strict_acked = 0, lax_acked = 0, uncertain_total = 0;
  for (int i = 0; i < kStrictKeys; ++i) {
    const std::string key = StrictKey(i);
    const int64_t v = RedisHashField(core::PlainCounterKey(kNs, key), "v");
    const int64_t acked = t.acked.count(key) ? t.acked.at(key) : 0;
    const int64_t uncertain = t.uncertain.count(key) ? t.uncertain.at(key) : 0;
    strict_acked += acked;
    uncertain_total += uncertain;
    if (v < acked) {
      lost += acked - v;
      ADD_FAILURE() << key << " (STRICT): " << v << " in Redis, acknowledged " << acked;
    }
    if (v > acked + uncertain) {
      doubled += v - acked - uncertain;
      ADD_FAILURE() << key << " (STRICT): " << v << " in Redis, acknowledged " << acked << " + "
                    << uncertain << " uncertain";
    }
  }
  for (int d = 0; d < kDaemons; ++d) {
    for (int i = 0; i < kLaxKeysPerDaemon; ++i) {
      const std::string key = LaxKey(d, i);
      const int64_t v = RedisHashField(core::PlainCounterKey(kNs, key), "v");
      const int64_t acked = t.acked.count(key) ? t.acked.at(key) : 0;
      int64_t at_risk = 0;  // acknowledged by incarnations that were SIGKILLed later
      if (t.lax_acked.count(key)) {
        for (const auto& [inc, n] : t.lax_acked.at(key)) {
          if (killed_.count(inc)) at_risk += n;
        }
      }
      lax_acked += acked;
      if (v < acked) {
        const int64_t shortfall = acked - v;
        lax_lost_on_sigkill += std::min(shortfall, at_risk);
        if (shortfall > at_risk) {
          lost += shortfall - at_risk;
          ADD_FAILURE() << key << " (LAX): " << v << " in Redis, acknowledged " << acked
                        << ", of which " << at_risk << " by SIGKILLed incarnations";
        }
      }
      // A failed LAX call was not taken; counted as uncertain anyway so a surprise shows here.
      const int64_t uncertain = t.uncertain.count(key) ? t.uncertain.at(key) : 0;
      uncertain_total += uncertain;
      if (v > acked + uncertain) {
        doubled += v - acked - uncertain;
        ADD_FAILURE() << key << " (LAX): " << v << " in Redis, acknowledged only " << acked << " (+"
                      << uncertain << " failed)";
      }
    }
  }
  // Every daemon deregistered on SIGTERM: no slice is left.
  for (int i = 0; i < kInstanceKeys; ++i) {
    EXPECT_EQ(RedisHashField(core::InstanceCounterKey(kNs, InstanceKey(i)), "c"), 0)
        << InstanceKey(i) << ": slices left after SIGTERM";
  }
  std::cout << "[soak] STRICT acknowledged " << strict_acked << " (uncertain " << uncertain_total
            << "), LAX acknowledged " << lax_acked << ", SIGKILLed incarnations " << killed_.size()
            << std::endl;
  std::cout << "soak: ops_acked=" << ops_acked << " faults=" << faults << " lost=" << lost
            << " doubled=" << doubled << " lax_lost_on_sigkill=" << lax_lost_on_sigkill
            << std::endl;
  EXPECT_EQ(lost, 0) << Logs();
  EXPECT_EQ(doubled, 0);
}

}  // namespace
}  // namespace distkit
