// distkit_bench: throughput and latency of distkitd against baselines measured in the same run.
//
// Starts a private redis-server and the real distkitd (Unix sockets in a temp dir, default daemon
// settings: rate window 10 s, bucket 100 ms, hard-limit factor 1, sync 10 ms, cache 100 ms), then
// runs closed-loop workloads with N concurrent streams of unary calls (gRPC callback client):
//   empty_rpc             grpc.health.v1 Check: the cost of an RPC that does nothing (the baseline)
//   lax_inc / strict_inc  CounterService.Inc, CONSISTENCY_LAX / CONSISTENCY_STRICT
//   batch1000_lax_inc     CounterService.Batch of 1000 LAX incs (counted per increment)
//   raw_evalsha           EVALSHA of the same counter.lua straight to Redis, N pipelined
//   lax_icounter_inc / strict_icounter_inc   InstanceCounterService.Inc, LAX / STRICT
//   raw_evalsha_icounter  EVALSHA of icounter.lua ("inc", the daemon's ARGV shape), N pipelined
// Rate limiting (issue #4), RateLimitService.Inc with count 1 and rate 10^6/s (capacity 10^7 per
// window: every request fits, so the admitting path is measured; the allowed share is reported):
//   rl_<local|redis|hybrid>_<abs|sup>_hot      every stream on one key
//   rl_<local|redis|hybrid>_<abs|sup>_uniform  each call picks one of 100 000 keys uniformly
//   raw_evalsha_ratelimit[_uniform]  EVALSHA of ratelimit.lua with RedisRateLimiter's KEYS/ARGV
//                                    (ABSOLUTE), N pipelined, on one key / uniform 100 000 keys
// Envoy's rate limit service (issue #14; the daemon runs with --rls_config, provider redis, rules
// of 2^32 - 1 per hour: every descriptor is admitted), after the rate-limit rows:
//   rls_1desc_hot / rls_3desc_hot   ShouldRateLimit with 1 / 3 descriptors on hot keys, counted
//                                   per descriptor, next to rl_redis_abs_hot (Inc) of the same run
// and prints a table, a JSON line and the ratios of the targets of issues #2, #3, #4 and #14. Redis
// round trips per operation come from INFO commandstats (evalsha) around each workload; CPU per
// operation of distkitd, redis-server and this client from /proc/<pid>/stat around it (on a
// shared machine CPU/op is steadier than ops/s; the client's CPU includes its idle pollers).
//
// Time: workloads run interleaved for --rounds rounds and each reports its median round. Those
// that feed a ratio run --seconds per round; the six SUPPRESSED rate-limit workloads, reported for
// their latency only, run max(1, seconds / 3) s. Each run adds 0.3 s of warm-up. Between rounds
// the bench waits until distkitd is idle again (the 100 000-key states are evicted W + 1 s after
// their last request: the bench waits until 12 s after the last one) so they do not slow the
// next round's baselines. Defaults (3 s x 3 rounds): 17 x 3.3 s + 6 x 1.3 s = 64 s per round
// + 2 cool-downs of 12 s, about 3 min 40 s in all (--seconds 2 --rounds 5: about 4 min 50 s);
// each extra backend (below) adds the daemon workloads' time again.
//
//   distkit_bench [--concurrency 64[,N...]] [--seconds 3] [--json FILE] [--daemon PATH]
//                 [--only NAME[,NAME...]] [--rounds N]
//                 [--backends standalone[,cluster][,tls]] [--daemon-b PATH]
// --only runs the named workloads (profiling); ratios whose inputs all ran are still printed.
// Exit status: 0 when every printed target is met, 3 when one is not, 1 when a setup step failed
// (tests/python/bench_smoke_test.py runs a short check of the report's shape in the test tiers).
// --concurrency 1,64 (issue #12): the largest runs every workload as above; each smaller one runs
// first, only the sidecar-hop workloads (empty_rpc, the three raw_evalsha* baselines, strict_inc,
// strict_icounter_inc, rl_redis_abs_hot), named NAME@c<N>, and prints each Redis-bound call's p50
// over the p50 of its parts (empty_rpc + its raw script) with the target <= 1.25. There the
// workloads alternate in 8 x --rounds slices of --seconds / 8 (30 ms warm-up each) and each
// reports the percentiles of all its slices' samples pooled (the same total time as --rounds
// rounds of --seconds, with every compared workload exposed to the same moments).
//
// Backends (issue #10): the workloads above run against `standalone` (a redis-server on a Unix
// socket, always first). --backends adds `cluster` (3 primaries, no replicas, on free 127.0.0.1
// ports, joined with redis-cli --cluster create) and `tls` (a redis-server with --tls-port and
// certificates made with the openssl CLI; the daemon gets rediss:// and --redis_tls_ca), each
// with its own distkitd; --daemon-b adds `b`: another distkitd binary against its own standalone
// redis-server (old vs new builds in one run). Every daemon workload then runs on each backend
// back to back (A B C in even rounds, C B A in odd ones) and is reported as NAME@cluster,
// NAME@tls, NAME@b, with the ratio NAME@x / NAME; the raw EVALSHA baselines run on standalone
// only. Idle backends stay up (their daemons' background work is small next to a workload's).

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "distkit/client.h"
#include "distkit/lax_aggregator.h"
#include "distkit/v1/counter.grpc.pb.h"
#include "distkit/v1/instance_counter.grpc.pb.h"
#include "distkit/v1/rate_limit.grpc.pb.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace distkit::redis {
const std::map<std::string, std::string>& EmbeddedScripts();
}

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Options {
  int concurrency = 64;  // the largest of `concurrencies`: the run whose names are unsuffixed
  double seconds = 3;
  std::string json_path;
  std::string daemon = DISTKIT_DAEMON_BIN;
  std::string redis_server = DISTKIT_REDIS_SERVER;
  std::set<std::string> only;  // run just these workloads (profiling); empty = all
  int rounds = 3;
  std::vector<std::string> backends = {"standalone"};  // standalone first, then cluster / tls
  std::string daemon_b;                                // --daemon-b: adds backend "b"
  std::vector<int> concurrencies = {64};               // --concurrency 1,64: ascending
};

// The sidecar hop (issue #12): at a concurrency below the largest only these run, named
// NAME@c<N>; each Redis-bound call's p50 is held against its parts (empty RPC + raw script).
// They run in kHopSlices x as many rounds, each kHopSlices x shorter (kHopWarmup of warm-up).
constexpr int kHopSlices = 8;
constexpr auto kHopWarmup = std::chrono::milliseconds(30);
constexpr const char* kHopWorkloads[] = {
    "empty_rpc",           "raw_evalsha",           "strict_inc",      "raw_evalsha_icounter",
    "strict_icounter_inc", "raw_evalsha_ratelimit", "rl_redis_abs_hot"};

pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  if (posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

bool PollUntil(const std::function<bool()>& f, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (f()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return f();
}

struct Result {
  std::string name;
  double ops_per_s = 0;  // calls (or units, for batch) per second
  double p50_us = 0, p99_us = 0;
  double redis_calls_per_op = -1;
  uint64_t errors = 0;
  // Rate limiting: share of the measured answers that admitted the request (-1: not a rate
  // limit), and answers marked degraded (Redis did not answer: they would flatter the numbers).
  double allowed_share = -1;
  uint64_t degraded = 0;
  // Units issued including the warm-up (the divisor of the CPU figures) and CPU time per unit.
  uint64_t all_units = 0;
  double cpu_daemon_us = -1, cpu_redis_us = -1, cpu_client_us = -1;
  std::vector<uint32_t> lat_us;  // sorted latency samples (pooled across slices, below)
  bool sliced = false;           // one slice of a smaller concurrency's workload (see Summarize)

  // Takes `samples` as lat_us, sorted, and sets p50_us / p99_us from them.
  void SetSamples(std::vector<uint32_t> samples) {
    lat_us = std::move(samples);
    std::sort(lat_us.begin(), lat_us.end());
    if (lat_us.empty()) return;
    p50_us = lat_us[lat_us.size() / 2];
    p99_us = lat_us[std::min(lat_us.size() - 1, lat_us.size() * 99 / 100)];
  }
};

// Warm-up before each measured run. The smaller concurrencies of issue #12 run many short
// slices (see kHopSlices) and warm up briefly; the largest warms up for 300 ms.
Clock::duration g_warmup = 300ms;

// What a call reports to ClosedLoop. A bool converts to kCallFailed / kCallOk.
enum CallOutcome : int { kCallFailed = 0, kCallOk = 1, kCallAdmitted = 2, kCallDegraded = 3 };
using Done = std::function<void(int)>;

// N streams, each issuing its next call when the previous one completes, for `seconds`.
// `issue(stream, done)` starts one call and must eventually invoke done(CallOutcome).
Result ClosedLoop(const std::string& name, int concurrency, double seconds, int units_per_call,
                  const std::function<void(int, Done)>& issue) {
  struct Stream {
    std::vector<uint32_t> lat_us;
    Clock::time_point started;
    uint64_t calls = 0, errors = 0, admitted = 0, degraded = 0, all_calls = 0;
  };
  std::vector<Stream> streams(concurrency);
  std::mutex mu;
  std::condition_variable cv;
  int active = concurrency;
  std::atomic<bool> measuring{false};
  const auto warmup_end = Clock::now() + g_warmup;
  const auto end = warmup_end + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(seconds));
  std::function<void(int)> next = [&](int s) {
    streams[s].started = Clock::now();
    issue(s, [&, s](int outcome) {
      const auto now = Clock::now();
      auto& st = streams[s];
      st.all_calls++;
      if (now >= warmup_end) {
        st.lat_us.push_back(static_cast<uint32_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(now - st.started).count()));
        st.calls++;
        if (outcome == kCallFailed) st.errors++;
        if (outcome == kCallAdmitted) st.admitted++;
        if (outcome == kCallDegraded) st.degraded++;
      }
      if (now < end) {
        next(s);
      } else {
        std::lock_guard<std::mutex> lock(mu);
        if (--active == 0) cv.notify_all();
      }
    });
  };
  for (int s = 0; s < concurrency; ++s) next(s);
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return active == 0; });
  }
  (void)measuring;
  std::vector<uint32_t> all;
  Result r;
  r.name = name;
  uint64_t calls = 0, admitted = 0, all_calls = 0;
  for (auto& st : streams) {
    all.insert(all.end(), st.lat_us.begin(), st.lat_us.end());
    calls += st.calls;
    admitted += st.admitted;
    all_calls += st.all_calls;
    r.errors += st.errors;
    r.degraded += st.degraded;
  }
  if (admitted > 0 && calls > r.errors) {  // callers of rate limits set it when nothing admitted
    r.allowed_share = static_cast<double>(admitted) / static_cast<double>(calls - r.errors);
  }
  r.all_units = all_calls * static_cast<uint64_t>(units_per_call);
  r.SetSamples(std::move(all));
  r.ops_per_s = static_cast<double>(calls) * units_per_call / seconds;
  return r;
}

// For each workload (in first-seen order) the round with the median throughput.
std::vector<Result> MedianPerWorkload(std::vector<Result> all) {
  std::vector<std::string> order;
  std::map<std::string, std::vector<Result>> by;
  for (auto& r : all) {
    if (!by.count(r.name)) order.push_back(r.name);
    by[r.name].push_back(std::move(r));
  }
  std::vector<Result> out;
  for (const auto& name : order) {
    auto& v = by[name];
    std::sort(v.begin(), v.end(),
              [](const Result& a, const Result& b) { return a.ops_per_s < b.ops_per_s; });
    out.push_back(v[v.size() / 2]);
  }
  return out;
}

// Slices of one workload (equally long) as one run: throughput averaged, percentiles of every
// sample, the per-unit figures weighted by units.
Result Pool(std::vector<Result> slices) {
  Result r = slices.front();
  std::vector<uint32_t> samples;
  double ops = 0, units = 0, redis_calls = 0, d = 0, rd = 0, cl = 0, admitted = 0, answered = 0;
  r.errors = r.degraded = r.all_units = 0;
  for (auto& x : slices) {
    const double u = static_cast<double>(x.all_units);
    ops += x.ops_per_s;
    units += u;
    redis_calls += x.redis_calls_per_op * u;
    d += x.cpu_daemon_us * u;
    rd += x.cpu_redis_us * u;
    cl += x.cpu_client_us * u;
    if (x.allowed_share >= 0) {
      admitted += x.allowed_share * u;
      answered += u;
    }
    r.errors += x.errors;
    r.degraded += x.degraded;
    r.all_units += x.all_units;
    samples.insert(samples.end(), x.lat_us.begin(), x.lat_us.end());
  }
  r.SetSamples(std::move(samples));
  r.ops_per_s = ops / static_cast<double>(slices.size());
  if (units > 0) {
    r.redis_calls_per_op = redis_calls / units;
    r.cpu_daemon_us = d / units;
    r.cpu_redis_us = rd / units;
    r.cpu_client_us = cl / units;
  }
  if (answered > 0) r.allowed_share = admitted / answered;
  return r;
}

// The median round of each workload, or for the smaller concurrencies (`sliced`) all their
// slices pooled.
std::vector<Result> Summarize(std::vector<Result> all) {
  std::vector<Result> rounds, sliced;
  for (auto& r : all) (r.sliced ? sliced : rounds).push_back(std::move(r));
  std::vector<Result> out;
  std::vector<std::string> order;
  std::map<std::string, std::vector<Result>> by;
  for (auto& r : sliced) {
    if (!by.count(r.name)) order.push_back(r.name);
    by[r.name].push_back(std::move(r));
  }
  out.reserve(order.size() + rounds.size());
  for (const auto& name : order) out.push_back(Pool(std::move(by[name])));
  for (auto& r : MedianPerWorkload(std::move(rounds))) out.push_back(std::move(r));
  return out;
}

uint64_t RedisCalls(redisContext* c, const char* cmd) {
  auto* r = static_cast<redisReply*>(redisCommand(c, "INFO commandstats"));
  uint64_t calls = 0;
  if (r && r->type == REDIS_REPLY_STRING) {
    std::string info(r->str, r->len);
    std::string needle = std::string("cmdstat_") + cmd + ":calls=";
    auto pos = info.find(needle);
    if (pos != std::string::npos)
      calls = std::strtoull(info.c_str() + pos + needle.size(), nullptr, 10);
  }
  if (r) freeReplyObject(r);
  return calls;
}

// User + system CPU time of a process (every thread) in µs, from /proc; -1 when unreadable.
// pid 0 = this process.
double CpuUs(pid_t pid) {
  std::ifstream f(pid > 0 ? "/proc/" + std::to_string(pid) + "/stat" : "/proc/self/stat");
  std::string line;
  std::getline(f, line);
  const auto paren = line.rfind(')');
  if (paren == std::string::npos) return -1;
  // After "pid (comm)" come fields 3 (state) ... 13; utime and stime are fields 14 and 15.
  std::istringstream in(line.substr(paren + 1));
  std::string skip;
  for (int field = 3; field <= 13; ++field) in >> skip;
  unsigned long long utime = 0, stime = 0;
  if (!(in >> utime >> stime)) return -1;
  return static_cast<double>(utime + stime) * 1e6 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Counters read around each workload: Redis script calls and CPU of the three processes (summed
// over every node of a cluster).
struct Probe {
  std::vector<redisContext*> stats;
  pid_t daemon = -1;
  std::vector<pid_t> redis;
};
struct Snapshot {
  uint64_t evalsha = 0;
  double daemon_us = 0, redis_us = 0, client_us = 0;
};
Snapshot Take(const Probe& p) {
  Snapshot s{0, CpuUs(p.daemon), 0, CpuUs(0)};
  for (auto* c : p.stats) s.evalsha += RedisCalls(c, "evalsha");
  for (pid_t pid : p.redis) s.redis_us += CpuUs(pid);
  return s;
}
// Per unit issued (warm-up included: the counters see it too).
void Account(Result* r, const Snapshot& before, const Snapshot& after, bool redis_calls) {
  if (r->all_units == 0) return;
  const double units = static_cast<double>(r->all_units);
  if (redis_calls)
    r->redis_calls_per_op = static_cast<double>(after.evalsha - before.evalsha) / units;
  r->cpu_daemon_us = (after.daemon_us - before.daemon_us) / units;
  r->cpu_redis_us = (after.redis_us - before.redis_us) / units;
  r->cpu_client_us = (after.client_us - before.client_us) / units;
}

// EVALSHA of an embedded script at the same concurrency: windows of N pipelined commands (the
// latency reported is a window's). Command i of a window uses keys[i % keys.size()] (one key
// per stream, or one hot key), or with `uniform` a key drawn uniformly from `keys`; ARGV as the
// daemon sends it. A reply that is not an array starting with "ok" counts as an error. With
// `rate_limit` the reply's 6th element (allowed 0/1) gives the allowed share.
Result RawEvalsha(const std::string& name, const std::string& script,
                  const std::vector<std::string>& keys, bool uniform,
                  const std::vector<std::string>& script_argv, bool rate_limit,
                  const std::string& sock, int concurrency, double seconds, const Probe& probe) {
  redisContext* c = redisConnectUnix(sock.c_str());
  const std::string body = distkit::redis::EmbeddedScripts().at(script);
  auto* loaded =
      static_cast<redisReply*>(redisCommand(c, "SCRIPT LOAD %b", body.data(), body.size()));
  const std::string sha(loaded->str, loaded->len);
  freeReplyObject(loaded);
  std::vector<const char*> argv = {"EVALSHA", sha.c_str(), "1", nullptr};
  for (const auto& a : script_argv) argv.push_back(a.c_str());
  std::mt19937_64 rng(12345);
  std::uniform_int_distribution<size_t> pick(0, keys.size() - 1);
  std::vector<uint32_t> lat;
  uint64_t ops = 0, errors = 0, admitted = 0, all_ops = 0;
  auto run = [&](Clock::time_point until, bool record) {
    while (Clock::now() < until) {
      const auto t0 = Clock::now();
      for (int i = 0; i < concurrency; ++i) {
        argv[3] = keys[uniform ? pick(rng) : static_cast<size_t>(i) % keys.size()].c_str();
        redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(), nullptr);
      }
      for (int i = 0; i < concurrency; ++i) {
        void* reply = nullptr;
        bool ok = false, allowed = false;
        if (redisGetReply(c, &reply) == REDIS_OK) {
          const auto* r = static_cast<redisReply*>(reply);
          ok = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
               r->element[0]->type == REDIS_REPLY_STRING &&
               std::string(r->element[0]->str, r->element[0]->len) == "ok";
          allowed = ok && r->elements > 5 && r->element[5]->type == REDIS_REPLY_INTEGER &&
                    r->element[5]->integer == 1;
          freeReplyObject(reply);
        }
        if (record && !ok) errors++;
        if (record && allowed) admitted++;
      }
      all_ops += static_cast<uint64_t>(concurrency);
      if (record) {
        ops += static_cast<uint64_t>(concurrency);
        lat.push_back(static_cast<uint32_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count()));
      }
    }
  };
  const Snapshot before = Take(probe);
  run(Clock::now() + g_warmup, false);
  run(Clock::now() +
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)),
      true);
  const Snapshot after = Take(probe);
  redisFree(c);
  Result r;
  r.name = name;
  r.ops_per_s = static_cast<double>(ops) / seconds;
  r.SetSamples(std::move(lat));
  r.errors = errors;
  if (rate_limit && ops > errors) {
    r.allowed_share = static_cast<double>(admitted) / static_cast<double>(ops - errors);
  }
  r.all_units = all_ops;
  Account(&r, before, after, /*redis_calls=*/false);
  r.redis_calls_per_op = 1;
  return r;
}

// The daemon's text for a double (RedisRateLimiter's DoubleArg): shortest round trip.
std::string DoubleArg(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

// Rate-limit workloads: every request fits (capacity rate x 10 s = 10^7 per window).
constexpr double kRate = 1e6;
constexpr int kUniformKeys = 100000;

struct RateWorkload {
  const char* name;
  distkit::v1::Provider provider;  // PROVIDER_UNSPECIFIED: raw EVALSHA of ratelimit.lua
  distkit::v1::Strategy strategy;
  bool uniform;
};
constexpr auto kLocal = distkit::v1::PROVIDER_LOCAL, kRedis = distkit::v1::PROVIDER_REDIS,
               kHybrid = distkit::v1::PROVIDER_HYBRID, kRaw = distkit::v1::PROVIDER_UNSPECIFIED;
constexpr auto kAbs = distkit::v1::STRATEGY_ABSOLUTE, kSup = distkit::v1::STRATEGY_SUPPRESSED;
// Run order inside a round. The 100 000-key workloads come last: their state stays in memory
// for a window + 1 s after their last request (HYBRID's periodic sync walks every held key
// every 10 ms: measured ~6 % of a core while idle after rl_hybrid_abs_uniform), so HYBRID's run
// last, then the round cools down (see main).
constexpr RateWorkload kRateWorkloads[] = {
    {"rl_local_abs_hot", kLocal, kAbs, false},
    {"rl_hybrid_abs_hot", kHybrid, kAbs, false},
    {"rl_redis_abs_hot", kRedis, kAbs, false},
    {"raw_evalsha_ratelimit", kRaw, kAbs, false},
    {"rl_local_sup_hot", kLocal, kSup, false},
    {"rl_hybrid_sup_hot", kHybrid, kSup, false},
    {"rl_redis_sup_hot", kRedis, kSup, false},
    {"rl_local_abs_uniform", kLocal, kAbs, true},
    {"rl_redis_abs_uniform", kRedis, kAbs, true},
    {"raw_evalsha_ratelimit_uniform", kRaw, kAbs, true},
    {"rl_local_sup_uniform", kLocal, kSup, true},
    {"rl_redis_sup_uniform", kRedis, kSup, true},
    {"rl_hybrid_abs_uniform", kHybrid, kAbs, true},
    {"rl_hybrid_sup_uniform", kHybrid, kSup, true},
};

std::vector<std::string> AllWorkloads() {
  std::vector<std::string> w = {
      "empty_rpc",           "lax_inc",     "strict_inc",       "strict_inc_uniform",
      "batch1000_lax_inc",   "raw_evalsha", "lax_icounter_inc", "strict_icounter_inc",
      "raw_evalsha_icounter"};
  for (const auto& r : kRateWorkloads) w.push_back(r.name);
  w.push_back("rls_1desc_hot");
  w.push_back("rls_3desc_hot");
  w.push_back("agg_inc");  // the client-side LAX aggregator (issue #12), after the rounds
  return w;
}

// Runs a short-lived tool (openssl, redis-cli) to its end, at most `timeout`; true when it
// exited 0. Its output goes to `log`.
bool RunToEnd(const std::vector<std::string>& argv, const std::string& log,
              std::chrono::milliseconds timeout = 30s) {
  const pid_t pid = Spawn(argv, log);
  if (pid <= 0) return false;
  int status = 0;
  const bool ended = PollUntil([&] { return waitpid(pid, &status, WNOHANG) == pid; }, timeout);
  if (!ended) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return false;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// A free 127.0.0.1 TCP port (bound to port 0, then released), never one handed out before.
int FreePort() {
  static std::set<int> given;
  for (int attempt = 0; attempt < 20; ++attempt) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    int port = 0;
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
    close(fd);
    if (port > 0 && given.insert(port).second) return port;
  }
  return 0;
}

// One Redis deployment with its own distkitd, gRPC stubs and counters.
struct Backend {
  std::string label;  // "" for standalone (names unsuffixed), else "cluster", "tls", "b"
  std::string kind;   // standalone, cluster or tls
  std::string daemon_path;
  std::string dir;
  std::string redis_sock;  // standalone and tls: the Unix socket (stats, raw EVALSHA)
  std::vector<std::string> daemon_redis_args;  // --redis URL [--redis_tls_ca FILE]
  Probe probe;  // stats connections, redis-server pids, the daemon's pid
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
  std::unique_ptr<distkit::v1::CounterService::Stub> counters;
  std::unique_ptr<distkit::v1::InstanceCounterService::Stub> icounters;
  std::unique_ptr<distkit::v1::RateLimitService::Stub> ratelimits;
  std::unique_ptr<envoy::service::ratelimit::v3::RateLimitService::Stub> rls;

  std::string Suffix() const { return label.empty() ? "" : "@" + label; }
  void Stop() {
    if (probe.daemon > 0) {
      kill(probe.daemon, SIGTERM);
      waitpid(probe.daemon, nullptr, 0);
      probe.daemon = -1;
    }
    for (auto* c : probe.stats) redisFree(c);
    probe.stats.clear();
    for (pid_t pid : probe.redis) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    probe.redis.clear();
  }
};

redisContext* ConnectPolling(const std::function<redisContext*()>& connect) {
  redisContext* c = nullptr;
  PollUntil(
      [&] {
        if (c) redisFree(c);
        c = connect();
        return c && !c->err;
      },
      10s);
  if (c && c->err) {
    redisFree(c);
    c = nullptr;
  }
  return c;
}

// CA and a server certificate for 127.0.0.1 (EC P-256) in `dir`, made with the openssl CLI.
bool MakeCerts(const std::string& dir) {
  const std::string ossl = "/usr/bin/openssl", log = dir + "/openssl.log";
  std::ofstream(dir + "/server.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
  return RunToEnd(
             {ossl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", dir + "/ca.key"},
             log) &&
         RunToEnd({ossl, "req", "-x509", "-new", "-key", dir + "/ca.key", "-sha256", "-days", "2",
                   "-subj", "/CN=distkit-bench-ca", "-out", dir + "/ca.crt"},
                  log) &&
         RunToEnd({ossl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                   dir + "/server.key"},
                  log) &&
         RunToEnd({ossl, "req", "-new", "-key", dir + "/server.key", "-subj", "/CN=localhost",
                   "-out", dir + "/server.csr"},
                  log) &&
         RunToEnd({ossl, "x509", "-req", "-in", dir + "/server.csr", "-CA", dir + "/ca.crt",
                   "-CAkey", dir + "/ca.key", "-CAcreateserial", "-days", "2", "-sha256",
                   "-extfile", dir + "/server.ext", "-out", dir + "/server.crt"},
                  log);
}

// Starts the backend's Redis (b->kind) in b->dir and fills probe.redis, probe.stats,
// redis_sock and daemon_redis_args. False (with a message) when it does not come up.
bool StartRedis(const std::string& redis_server, Backend* b) {
  const std::vector<std::string> common = {"--save", "", "--appendonly", "no", "--dir", b->dir};
  auto with = [&](std::vector<std::string> argv) {
    argv.insert(argv.begin(), redis_server);
    argv.insert(argv.end(), common.begin(), common.end());
    return argv;
  };
  if (b->kind == "standalone" || b->kind == "tls") {
    b->redis_sock = b->dir + "/redis.sock";
    std::vector<std::string> argv = with({"--port", "0", "--unixsocket", b->redis_sock});
    if (b->kind == "tls") {
      if (!MakeCerts(b->dir)) {
        std::fprintf(stderr, "openssl failed (log: %s/openssl.log)\n", b->dir.c_str());
        return false;
      }
      const int port = FreePort();
      argv.insert(argv.end(),
                  {"--tls-port", std::to_string(port), "--tls-cert-file", b->dir + "/server.crt",
                   "--tls-key-file", b->dir + "/server.key", "--tls-ca-cert-file",
                   b->dir + "/ca.crt", "--tls-auth-clients", "no"});
      b->daemon_redis_args = {"--redis", "rediss://127.0.0.1:" + std::to_string(port),
                              "--redis_tls_ca", b->dir + "/ca.crt"};
    } else {
      b->daemon_redis_args = {"--redis", "unix:" + b->redis_sock};
    }
    b->probe.redis.push_back(Spawn(argv, b->dir + "/redis.log"));
    auto* c = ConnectPolling([&] { return redisConnectUnix(b->redis_sock.c_str()); });
    if (!c) {
      std::fprintf(stderr, "redis-server did not start (log: %s/redis.log)\n", b->dir.c_str());
      return false;
    }
    b->probe.stats.push_back(c);
    return true;
  }
  // cluster: 3 primaries, no replicas (the bench measures routing, not failover).
  constexpr int kPrimaries = 3;
  std::vector<std::string> create = {
      redis_server.substr(0, redis_server.rfind('/') + 1) + "redis-cli", "--cluster", "create"};
  std::string seeds;
  for (int i = 0; i < kPrimaries; ++i) {
    const std::string port = std::to_string(FreePort());
    b->probe.redis.push_back(
        Spawn(with({"--port", port, "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes-" + port + ".conf", "--cluster-port",
                    std::to_string(FreePort()), "--cluster-node-timeout", "5000"}),
              b->dir + "/redis-" + port + ".log"));
    auto* c = ConnectPolling([&] { return redisConnect("127.0.0.1", std::stoi(port)); });
    if (!c) {
      std::fprintf(stderr, "redis-server did not start (log: %s/redis-%s.log)\n", b->dir.c_str(),
                   port.c_str());
      return false;
    }
    b->probe.stats.push_back(c);
    create.push_back("127.0.0.1:" + port);
    seeds += (seeds.empty() ? "" : ",") + std::string("redis://127.0.0.1:") + port;
  }
  create.insert(create.end(), {"--cluster-replicas", "0", "--cluster-yes"});
  if (!RunToEnd(create, b->dir + "/create.log")) {
    std::fprintf(stderr, "redis-cli --cluster create failed (log: %s/create.log)\n",
                 b->dir.c_str());
    return false;
  }
  const bool ok = PollUntil(
      [&] {
        for (auto* c : b->probe.stats) {
          auto* r = static_cast<redisReply*>(redisCommand(c, "CLUSTER INFO"));
          const bool node_ok =
              r && r->type == REDIS_REPLY_STRING &&
              std::string(r->str, r->len).find("cluster_state:ok") != std::string::npos;
          if (r) freeReplyObject(r);
          if (!node_ok) return false;
        }
        return true;
      },
      30s);
  if (!ok) {
    std::fprintf(stderr, "the cluster did not reach cluster_state:ok (logs in %s)\n",
                 b->dir.c_str());
    return false;
  }
  b->daemon_redis_args = {"--redis", seeds};
  return true;
}

// Starts the backend's distkitd on a Unix socket in b->dir and waits until it serves.
bool StartDaemon(Backend* b) {
  // The uniform workloads hold 100 000 rate-limit keys next to the hot ones: above the default
  // --max_rate_limit_keys. Through the environment, which a --daemon-b build without the flag
  // ignores (overwrite = 0: the caller's own setting wins).
  setenv("DISTKIT_MAX_RATE_LIMIT_KEYS", "1000000", 0);
  // The rules of the rls_* workloads (a build without --rls_config ignores the variable).
  const std::string rules = b->dir + "/rls.yaml";
  std::ofstream(rules)
      << "domain: bench\ndescriptors:\n"
      << "  - {key: d1, rate_limit: {unit: hour, requests_per_unit: 4294967295}}\n"
      << "  - {key: d2, rate_limit: {unit: hour, requests_per_unit: 4294967295}}\n"
      << "  - {key: d3, rate_limit: {unit: hour, requests_per_unit: 4294967295}}\n";
  setenv("DISTKIT_RLS_CONFIG", rules.c_str(), 1);
  const std::string sock = b->dir + "/d.sock";
  std::vector<std::string> argv = {b->daemon_path, "--listen", "unix:" + sock};
  argv.insert(argv.end(), b->daemon_redis_args.begin(), b->daemon_redis_args.end());
  argv.insert(argv.end(), {"--log_level", "warn"});
  b->probe.daemon = Spawn(argv, b->dir + "/distkitd.log");
  b->channel = grpc::CreateChannel("unix:" + sock, grpc::InsecureChannelCredentials());
  b->health = grpc::health::v1::Health::NewStub(b->channel);
  b->counters = distkit::v1::CounterService::NewStub(b->channel);
  b->icounters = distkit::v1::InstanceCounterService::NewStub(b->channel);
  b->ratelimits = distkit::v1::RateLimitService::NewStub(b->channel);
  b->rls = envoy::service::ratelimit::v3::RateLimitService::NewStub(b->channel);
  auto serving = [&](const char* service) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 500ms);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    return b->health->Check(&ctx, req, &resp).ok() &&
           resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  };
  const bool up = PollUntil(
      [&] {
        return serving("distkit.v1.CounterService") &&
               serving("distkit.v1.InstanceCounterService") &&
               serving("distkit.v1.RateLimitService");
      },
      15s);
  if (!up) {
    std::fprintf(stderr, "distkitd did not become SERVING (log: %s/distkitd.log)\n",
                 b->dir.c_str());
  }
  return up;
}

// Issue #12: the client-side LAX aggregator's Inc (distkit/lax_aggregator.h), which touches
// only process memory, from `threads` threads for `seconds` over 1 000 keys while it pushes to
// the daemon every 10 ms. The per-Inc time is that of 64 consecutive Incs divided by 64 (timing
// a single Inc would measure the clock more than the Inc); its median and p99 over all batches.
struct AggResult {
  int threads = 0;
  double incs_per_s = 0;
  double median_ns = 0, p99_ns = 0;
  uint64_t failed = 0;  // Inc refused (key cap): none expected
};

AggResult AggregatorInc(distkit::Client* client, int threads, double seconds) {
  constexpr int kBatch = 64;
  constexpr int kAggKeys = 1000;
  std::vector<std::string> keys;
  keys.reserve(kAggKeys);
  for (int i = 0; i < kAggKeys; ++i) keys.push_back("agg" + std::to_string(i));
  distkit::LaxAggregator agg(client);
  std::vector<std::vector<float>> per_inc(threads);
  std::vector<uint64_t> counts(threads, 0), failed(threads, 0);
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      size_t k = static_cast<size_t>(t) * 7919;
      while (Clock::now() < end) {
        const auto start = Clock::now();
        for (int i = 0; i < kBatch; ++i) {
          if (!agg.Inc(keys[k++ % kAggKeys], 1).ok()) ++failed[t];
        }
        const auto ns = std::chrono::duration<float, std::nano>(Clock::now() - start).count();
        per_inc[t].push_back(ns / kBatch);
        counts[t] += kBatch;
      }
    });
  }
  for (auto& w : workers) w.join();
  (void)agg.Flush();
  AggResult r;
  r.threads = threads;
  std::vector<float> all;
  for (int t = 0; t < threads; ++t) {
    all.insert(all.end(), per_inc[t].begin(), per_inc[t].end());
    r.incs_per_s += static_cast<double>(counts[t]) / seconds;
    r.failed += failed[t];
  }
  std::sort(all.begin(), all.end());
  if (!all.empty()) {
    r.median_ns = all[all.size() / 2];
    r.p99_ns = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  const std::vector<std::string> workloads = AllWorkloads();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value for %s\n", a.c_str());
        std::exit(64);
      }
      return argv[++i];
    };
    if (a == "--concurrency") {
      o.concurrencies.clear();
      std::istringstream list(val());
      for (std::string c; std::getline(list, c, ',');) {
        o.concurrencies.push_back(std::max(1, std::atoi(c.c_str())));
      }
      if (o.concurrencies.empty()) o.concurrencies.push_back(64);
      std::sort(o.concurrencies.begin(), o.concurrencies.end());
      o.concurrencies.erase(std::unique(o.concurrencies.begin(), o.concurrencies.end()),
                            o.concurrencies.end());
      o.concurrency = o.concurrencies.back();
    } else if (a == "--seconds") {
      o.seconds = std::max(0.2, std::atof(val().c_str()));
    } else if (a == "--json") {
      o.json_path = val();
    } else if (a == "--daemon") {
      o.daemon = val();
    } else if (a == "--rounds") {
      o.rounds = std::max(1, std::atoi(val().c_str()));
    } else if (a == "--daemon-b") {
      o.daemon_b = val();
    } else if (a == "--backends") {
      o.backends = {"standalone"};
      std::istringstream list(val());
      for (std::string name; std::getline(list, name, ',');) {
        if (name != "standalone" && name != "cluster" && name != "tls") {
          std::fprintf(stderr, "--backends: unknown '%s'; standalone, cluster or tls\n",
                       name.c_str());
          return 64;
        }
        if (std::find(o.backends.begin(), o.backends.end(), name) == o.backends.end())
          o.backends.push_back(name);
      }
    } else if (a == "--only") {
      std::istringstream list(val());
      for (std::string name; std::getline(list, name, ',');) {
        if (std::find(workloads.begin(), workloads.end(), name) == workloads.end()) {
          std::fprintf(stderr, "--only: unknown workload '%s'; one of:", name.c_str());
          for (const auto& w : workloads) std::fprintf(stderr, " %s", w.c_str());
          std::fprintf(stderr, "\n");
          return 64;
        }
        o.only.insert(name);
      }
    } else {
      std::fprintf(stderr,
                   "usage: distkit_bench [--concurrency N[,N...]] [--seconds S] [--json FILE] "
                   "[--daemon PATH] [--only NAME[,NAME...]] [--rounds N] "
                   "[--backends standalone[,cluster][,tls]] [--daemon-b PATH]\n");
      return 64;
    }
  }
  // Latency-only workloads (the SUPPRESSED rate limits) run shorter rounds: see the header.
  const double short_seconds = std::max(1.0, o.seconds / 3);
  signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/distkit-bench-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  // Backends: standalone first (its names are unsuffixed, the raw baselines use its socket).
  std::vector<std::unique_ptr<Backend>> backends;
  for (const auto& kind : o.backends) {
    auto b = std::make_unique<Backend>();
    b->kind = kind;
    b->label = kind == "standalone" ? "" : kind;
    b->daemon_path = o.daemon;
    backends.push_back(std::move(b));
  }
  if (!o.daemon_b.empty()) {
    auto b = std::make_unique<Backend>();
    b->kind = "standalone";
    b->label = "b";
    b->daemon_path = o.daemon_b;
    backends.push_back(std::move(b));
  }
  auto cleanup = [&] {
    for (auto& b : backends) b->Stop();
  };
  for (auto& b : backends) {
    b->dir = dir + "/" + (b->label.empty() ? "standalone" : b->label);
    mkdir(b->dir.c_str(), 0755);
    if (!StartRedis(o.redis_server, b.get()) || !StartDaemon(b.get())) {
      cleanup();
      return 1;
    }
  }
  const std::string redis_sock = backends[0]->redis_sock;
  const Probe& probe = backends[0]->probe;
  // The stubs of the backend a workload is running on (closed_loop switches them).
  grpc::health::v1::Health::Stub* health = nullptr;
  distkit::v1::CounterService::Stub* counters = nullptr;
  distkit::v1::InstanceCounterService::Stub* icounters = nullptr;
  distkit::v1::RateLimitService::Stub* ratelimits = nullptr;
  envoy::service::ratelimit::v3::RateLimitService::Stub* rls = nullptr;

  // Keys of the uniform rate-limit workloads: through the daemon "u<i>" in namespace "bench";
  // straight to Redis the shape RedisRateLimitKey gives them (an 8-hex-digit hash tag).
  std::vector<std::string> uniform_keys, raw_uniform_keys;
  uniform_keys.reserve(kUniformKeys);
  raw_uniform_keys.reserve(kUniformKeys);
  for (int i = 0; i < kUniformKeys; ++i) {
    uniform_keys.push_back("u" + std::to_string(i));
    char tag[16];
    std::snprintf(tag, sizeof(tag), "%08x", static_cast<unsigned>(i) * 2654435761u);
    raw_uniform_keys.push_back("dk:{" + std::string(tag) + "}:r:a:bench:u" + std::to_string(i));
  }

  std::vector<Result> results;
  double cooldown_s = 0;
  int n = o.concurrency;
  // Runs one daemon workload on every backend in turn, recording its counters around each run;
  // odd rounds go through the backends in reverse order, so none always runs right after the
  // heavier one. Rate limits (`rate_limit`) report an allowed share of 0 when nothing was admitted.
  bool reverse_backends = false;
  auto closed_loop = [&](const std::string& name, double seconds, int units_per_call,
                         const std::function<void(int, Done)>& issue, bool rate_limit = false) {
    for (size_t i = 0; i < backends.size(); ++i) {
      const auto& b = backends[reverse_backends ? backends.size() - 1 - i : i];
      health = b->health.get();
      counters = b->counters.get();
      icounters = b->icounters.get();
      ratelimits = b->ratelimits.get();
      rls = b->rls.get();
      const Snapshot before = Take(b->probe);
      Result r = ClosedLoop(name + b->Suffix(), n, seconds, units_per_call, issue);
      Account(&r, before, Take(b->probe), /*redis_calls=*/true);
      if (rate_limit && r.allowed_share < 0) r.allowed_share = 0;
      results.push_back(r);
    }
  };
  // ratelimit.lua with RedisRateLimiter's ARGV for an ABSOLUTE Inc under the daemon's default
  // settings: op, strategy, window_ms, bucket_ms, hard_limit_factor, cache_ms, rate, count,
  // random (a 17-digit draw as DoubleArg prints one; ABSOLUTE parses it and ignores it).
  const std::vector<std::string> ratelimit_argv = {"inc",
                                                   "a",
                                                   "10000",
                                                   "100",
                                                   DoubleArg(1.0),
                                                   "100",
                                                   DoubleArg(kRate),
                                                   "1",
                                                   DoubleArg(0.6180339887498949)};
  // Workloads run interleaved for several rounds and each reports its median round, so a
  // noisy moment on a shared 2-core machine does not decide a ratio. Each concurrency runs its
  // rounds in turn (ascending: the largest, unsuffixed, runs last).
  // The smaller concurrencies (issue #12's p50 ratios) run kHopSlices x as many rounds, each
  // kHopSlices x shorter, and pool their samples: the workloads whose p50s are compared
  // alternate every fraction of a second, so a slow drift of this shared machine moves all of
  // them alike instead of deciding a ratio.
  struct Step {
    int n, round;
    double seconds;
  };
  std::vector<Step> steps;
  for (const int c : o.concurrencies) {
    const int slices = c == o.concurrency ? 1 : kHopSlices;
    for (int r = 0; r < o.rounds * slices; ++r) steps.push_back({c, r, o.seconds / slices});
  }
  for (const Step& step : steps) {
    const int round = step.round;
    n = step.n;
    const double seconds = step.seconds;
    const bool hop_only = n != o.concurrency;
    g_warmup = hop_only ? std::chrono::duration_cast<Clock::duration>(kHopWarmup) : 300ms;
    const size_t first_result = results.size();
    reverse_backends = round % 2 == 1;
    auto want = [&](const std::string& name) {
      if (hop_only &&
          std::find_if(std::begin(kHopWorkloads), std::end(kHopWorkloads),
                       [&](const char* w) { return name == w; }) == std::end(kHopWorkloads)) {
        return false;
      }
      return o.only.empty() || o.only.count(name) > 0;
    };
    if (want("empty_rpc")) {  // empty RPC baseline
      closed_loop("empty_rpc", seconds, 1, [&](int, const Done& done) {
        struct Call {
          grpc::ClientContext ctx;
          grpc::health::v1::HealthCheckRequest req;
          grpc::health::v1::HealthCheckResponse resp;
        };
        auto c = std::make_shared<Call>();
        health->async()->Check(&c->ctx, &c->req, &c->resp,
                               [c, done](const grpc::Status& s) { done(s.ok()); });
      });
    }
    // One key per stream, or (`uniform`) each call one of 100 000 keys: on a cluster the keys
    // spread over every primary either way (a counter's hash tag is a hash of its name).
    auto inc_workload = [&](const char* name, distkit::v1::Consistency consistency,
                            bool uniform = false) {
      if (!want(name)) return;
      std::vector<std::mt19937_64> rng;
      rng.reserve(static_cast<size_t>(n));
      for (int s = 0; s < n; ++s) rng.emplace_back(static_cast<uint64_t>(round * 1000 + s));
      closed_loop(name, seconds, 1, [&](int s, const Done& done) {
        struct Call {
          grpc::ClientContext ctx;
          distkit::v1::IncRequest req;
          distkit::v1::IncResponse resp;
        };
        auto c = std::make_shared<Call>();
        c->req.set_namespace_("bench");
        c->req.set_key(uniform ? uniform_keys[rng[static_cast<size_t>(s)]() % kUniformKeys]
                               : std::string(name) + std::to_string(s));
        c->req.set_delta(1);
        c->req.set_consistency(consistency);
        counters->async()->Inc(&c->ctx, &c->req, &c->resp,
                               [c, done](const grpc::Status& st) { done(st.ok()); });
      });
    };
    inc_workload("lax_inc", distkit::v1::CONSISTENCY_LAX);
    inc_workload("strict_inc", distkit::v1::CONSISTENCY_STRICT);
    inc_workload("strict_inc_uniform", distkit::v1::CONSISTENCY_STRICT, /*uniform=*/true);
    if (want("batch1000_lax_inc")) {
      constexpr int kBatch = 1000;
      closed_loop("batch1000_lax_inc", seconds, kBatch, [&](int s, const Done& done) {
        struct Call {
          grpc::ClientContext ctx;
          distkit::v1::BatchRequest req;
          distkit::v1::BatchResponse resp;
        };
        auto c = std::make_shared<Call>();
        for (int i = 0; i < kBatch; ++i) {
          auto* inc = c->req.add_ops()->mutable_inc();
          inc->set_namespace_("bench");
          inc->set_key("b" + std::to_string(s) + "_" + std::to_string(i % 100));
          inc->set_delta(1);
          inc->set_consistency(distkit::v1::CONSISTENCY_LAX);
        }
        counters->async()->Batch(&c->ctx, &c->req, &c->resp,
                                 [c, done](const grpc::Status& st) { done(st.ok()); });
      });
    }
    // One key per stream, as lax_inc / strict_inc.
    auto stream_keys = [&](const std::string& prefix) {
      std::vector<std::string> keys;
      keys.reserve(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) keys.push_back(prefix + std::to_string(i));
      return keys;
    };
    if (want("raw_evalsha")) {
      // counter.lua ARGV: dedup_id, n, op, comparator, operand, arg.
      results.push_back(RawEvalsha("raw_evalsha", "counter", stream_keys("dk:{raw}:c:bench:raw"),
                                   false, {"bench", "0", "inc", "", "0", "1"}, false, redis_sock, n,
                                   seconds, probe));
    }
    // Instance-aware counters: the same streams and keys per stream as lax_inc/strict_inc.
    auto icounter_workload = [&](const char* name, distkit::v1::Consistency consistency) {
      if (!want(name)) return;
      closed_loop(name, seconds, 1, [&](int s, const Done& done) {
        struct Call {
          grpc::ClientContext ctx;
          distkit::v1::InstanceIncRequest req;
          distkit::v1::InstanceIncResponse resp;
        };
        auto c = std::make_shared<Call>();
        c->req.set_namespace_("bench");
        c->req.set_key(std::string(name) + std::to_string(s));
        c->req.set_delta(1);
        c->req.set_consistency(consistency);
        icounters->async()->Inc(&c->ctx, &c->req, &c->resp,
                                [c, done](const grpc::Status& st) { done(st.ok()); });
      });
    };
    icounter_workload("lax_icounter_inc", distkit::v1::CONSISTENCY_LAX);
    icounter_workload("strict_icounter_inc", distkit::v1::CONSISTENCY_STRICT);
    if (want("raw_evalsha_icounter")) {
      // icounter.lua ARGV as InstanceCounters::Script sends an inc: id, incarnation, dedup_id,
      // n (no lax entries), op, comparator, operand, arg (the delta).
      results.push_back(RawEvalsha("raw_evalsha_icounter", "icounter",
                                   stream_keys("dk:{raw}:i:bench:raw"), false,
                                   {"bench-raw", "1", "bench-raw", "0", "inc", "", "0", "1"}, false,
                                   redis_sock, n, seconds, probe));
    }

    // Rate limiting (issue #4): RateLimitService.Inc, count 1, rate kRate. SUPPRESSED workloads
    // only report latency and run shorter (short_seconds).
    auto rate_workload = [&](const RateWorkload& w) {
      if (!want(w.name)) return;
      const bool suppressed = w.strategy == distkit::v1::STRATEGY_SUPPRESSED;
      std::vector<std::mt19937_64> rng;
      rng.reserve(static_cast<size_t>(n));
      for (int s = 0; s < n; ++s) rng.emplace_back(static_cast<uint64_t>(round * 1000 + s));
      closed_loop(
          w.name, suppressed ? short_seconds : seconds, 1,
          [&](int s, const Done& done) {
            struct Call {
              grpc::ClientContext ctx;
              distkit::v1::RateLimitIncRequest req;
              distkit::v1::RateLimitIncResponse resp;
            };
            auto c = std::make_shared<Call>();
            c->req.set_namespace_("bench");
            // Each stream has its own generator; a stream has one call in flight at a time.
            c->req.set_key(w.uniform ? uniform_keys[rng[static_cast<size_t>(s)]() % kUniformKeys]
                                     : "hot");
            c->req.set_rate_per_second(kRate);
            c->req.set_count(1);
            c->req.set_provider(w.provider);
            c->req.set_strategy(w.strategy);
            ratelimits->async()->Inc(&c->ctx, &c->req, &c->resp, [c, done](const grpc::Status& st) {
              if (!st.ok()) return done(kCallFailed);
              if (c->resp.degraded()) return done(kCallDegraded);
              done(c->resp.allowed() ? kCallAdmitted : kCallOk);
            });
          },
          /*rate_limit=*/true);
    };
    std::optional<Clock::time_point> last_uniform_end;
    for (const auto& w : kRateWorkloads) {
      if (!want(w.name)) continue;
      if (w.provider != kRaw) {
        rate_workload(w);
        if (w.uniform && w.provider == kHybrid) last_uniform_end = Clock::now();
      } else if (w.uniform) {
        results.push_back(RawEvalsha(w.name, "ratelimit", raw_uniform_keys, true, ratelimit_argv,
                                     true, redis_sock, n, seconds, probe));
      } else {
        results.push_back(RawEvalsha(w.name, "ratelimit", {"dk:{rawbench}:r:a:bench:hot"}, false,
                                     ratelimit_argv, true, redis_sock, n, seconds, probe));
      }
    }
    // Issue #14: ShouldRateLimit, 1 and 3 descriptors per call on hot keys (REDIS), counted per
    // descriptor.
    for (const int descriptors : {1, 3}) {
      const std::string name = "rls_" + std::to_string(descriptors) + "desc_hot";
      if (!want(name)) continue;
      closed_loop(
          name, seconds, descriptors,
          [&](int, const Done& done) {
            struct Call {
              grpc::ClientContext ctx;
              envoy::service::ratelimit::v3::RateLimitRequest req;
              envoy::service::ratelimit::v3::RateLimitResponse resp;
            };
            auto c = std::make_shared<Call>();
            c->req.set_domain("bench");
            for (int d = 1; d <= descriptors; ++d) {
              auto* e = c->req.add_descriptors()->add_entries();
              e->set_key("d" + std::to_string(d));
              e->set_value("hot");
            }
            rls->async()->ShouldRateLimit(
                &c->ctx, &c->req, &c->resp, [c, done](const grpc::Status& st) {
                  if (!st.ok()) return done(kCallFailed);
                  done(c->resp.overall_code() ==
                               envoy::service::ratelimit::v3::RateLimitResponse::OK
                           ? kCallAdmitted
                           : kCallOk);
                });
          },
          /*rate_limit=*/true);
    }
    // Cool-down before the next round: the daemon evicts a LOCAL or HYBRID key state
    // W + 1 s after its last request, in a pass once a second, so 12 s after the last 100 000-key
    // workload the next round's baselines run against an idle daemon again.
    if (last_uniform_end && round + 1 < o.rounds) {
      const auto until = *last_uniform_end + 12s;
      const auto now = Clock::now();
      if (until > now) {
        std::this_thread::sleep_until(until);
        cooldown_s += std::chrono::duration<double>(until - now).count();
      }
    }
    if (hop_only) {
      for (size_t i = first_result; i < results.size(); ++i) {
        results[i].name += "@c" + std::to_string(n);
        results[i].sliced = true;
      }
    }
  }  // rounds
  results = Summarize(std::move(results));

  std::vector<AggResult> agg_results;
  if (o.only.empty() || o.only.count("agg_inc") > 0) {
    distkit::ClientOptions client_options;
    client_options.ns = "bench";
    auto client = distkit::Client::FromChannel(backends[0]->channel, client_options);
    for (int threads : {1, 8}) {
      agg_results.push_back(AggregatorInc(client.get(), threads, o.seconds));
    }
  }

  cleanup();

  std::map<std::string, Result> by;
  for (const auto& r : results) by[r.name] = r;
  struct Ratio {
    std::string name;
    double value, target;  // target 0: reported, not a target
    bool at_most = false;  // met when value <= target (a latency bound)
  };
  std::vector<Ratio> ratios;
  // A ratio is printed when every workload it needs ran.
  auto ratio = [&](const std::string& name, const std::vector<std::string>& needs,
                   const std::function<double(const std::function<double(const char*)>&)>& value,
                   double target) {
    for (const auto& w : needs) {
      if (!by.count(w)) return;
    }
    ratios.push_back({name, value([&](const char* w) { return by.at(w).ops_per_s; }), target});
  };
  using Ops = std::function<double(const char*)>;
  ratio(
      "lax_inc / empty_rpc", {"lax_inc", "empty_rpc"},
      [](const Ops& x) { return x("lax_inc") / x("empty_rpc"); }, 0.9);
  ratio(
      "strict_inc / min(empty_rpc, raw_evalsha)", {"strict_inc", "empty_rpc", "raw_evalsha"},
      [](const Ops& x) { return x("strict_inc") / std::min(x("empty_rpc"), x("raw_evalsha")); },
      0.7);
  ratio(
      "batch1000 per-inc / lax_inc", {"batch1000_lax_inc", "lax_inc"},
      [](const Ops& x) { return x("batch1000_lax_inc") / x("lax_inc"); }, 20);
  ratio(
      "lax_icounter_inc / empty_rpc", {"lax_icounter_inc", "empty_rpc"},
      [](const Ops& x) { return x("lax_icounter_inc") / x("empty_rpc"); }, 0.9);
  ratio(
      "strict_icounter_inc / min(empty_rpc, raw_evalsha_icounter)",
      {"strict_icounter_inc", "empty_rpc", "raw_evalsha_icounter"},
      [](const Ops& x) {
        return x("strict_icounter_inc") / std::min(x("empty_rpc"), x("raw_evalsha_icounter"));
      },
      0.7);
  // Issue #4. LOCAL: both key patterns are answered from memory, so the target applies to both.
  // HYBRID: the hot key is the case the provider is for (decisions from a lease in memory); with
  // 100 000 uniform keys at these rates a key comes back every few seconds, long after its lease
  // (200 ms) lapsed, so nearly every request is a first touch that waits for a sync script: that
  // ratio is reported, not a target. REDIS: the hot key against raw EVALSHA on one key (the same
  // steady-state script path: 8-field HMGET, 3 writes); the uniform pair is reported too.
  for (const char* w :
       {"rl_local_abs_hot", "rl_local_abs_uniform", "rl_hybrid_abs_hot", "rl_hybrid_abs_uniform"}) {
    const bool target = std::string(w) != "rl_hybrid_abs_uniform";
    ratio(
        std::string(w) + " / empty_rpc", {w, "empty_rpc"},
        [w](const Ops& x) { return x(w) / x("empty_rpc"); }, target ? 0.9 : 0);
  }
  ratio(
      "rl_redis_abs_hot / min(empty_rpc, raw_evalsha_ratelimit)",
      {"rl_redis_abs_hot", "empty_rpc", "raw_evalsha_ratelimit"},
      [](const Ops& x) {
        return x("rl_redis_abs_hot") / std::min(x("empty_rpc"), x("raw_evalsha_ratelimit"));
      },
      0.7);
  ratio(
      "rl_redis_abs_uniform / min(empty_rpc, raw_evalsha_ratelimit_uniform)",
      {"rl_redis_abs_uniform", "empty_rpc", "raw_evalsha_ratelimit_uniform"},
      [](const Ops& x) {
        return x("rl_redis_abs_uniform") /
               std::min(x("empty_rpc"), x("raw_evalsha_ratelimit_uniform"));
      },
      0);
  // Issue #14: a descriptor of ShouldRateLimit may cost at most 1.1 x a RateLimitService.Inc
  // (REDIS, hot key): descriptors/s >= Inc/s / 1.1.
  for (const char* w : {"rls_1desc_hot", "rls_3desc_hot"}) {
    ratio(
        std::string(w) + " per-descriptor / rl_redis_abs_hot", {w, "rl_redis_abs_hot"},
        [w](const Ops& x) { return x(w) / x("rl_redis_abs_hot"); }, 1 / 1.1);
    // The same bound on distkitd's CPU: Inc's CPU/op over the CPU per descriptor.
    if (by.count(w) && by.count("rl_redis_abs_hot") && by.at(w).cpu_daemon_us > 0) {
      ratios.push_back({"rl_redis_abs_hot distkitd CPU/op / " + std::string(w) + " CPU/descriptor",
                        by.at("rl_redis_abs_hot").cpu_daemon_us / by.at(w).cpu_daemon_us, 1 / 1.1});
    }
  }
  // Issue #12: at each smaller concurrency a Redis-bound call's p50 is at most 1.25 x the p50 of
  // its parts in the same run: an empty RPC plus the raw script.
  for (const int c : o.concurrencies) {
    if (c == o.concurrency) continue;
    const std::string at = "@c" + std::to_string(c);
    for (const auto& [call, raw] : {std::pair{"strict_inc", "raw_evalsha"},
                                    {"strict_icounter_inc", "raw_evalsha_icounter"},
                                    {"rl_redis_abs_hot", "raw_evalsha_ratelimit"}}) {
      const std::string x = call + at, e = "empty_rpc" + at, r = raw + at;
      if (!by.count(x) || !by.count(e) || !by.count(r)) continue;
      ratios.push_back({absl::StrCat(x, " p50 / (", e, " + ", r, " p50)"),
                        by.at(x).p50_us / (by.at(e).p50_us + by.at(r).p50_us), 1.25,
                        /*at_most=*/true});
    }
  }
  // Issue #10: each workload on another backend against the same workload on standalone. Cluster
  // routing must cost nothing measurable on the paths that go to Redis (STRICT counters, REDIS
  // rate limits: >= 0.9); TLS and a second daemon binary (--daemon-b) are reported.
  for (const auto& b : backends) {
    if (b->label.empty()) continue;
    for (const auto& r : results) {
      const std::string& w = r.name;
      if (w.find('@') != std::string::npos) continue;
      const bool target =
          b->label == "cluster" && (w == "strict_inc" || w == "strict_inc_uniform" ||
                                    w == "rl_redis_abs_hot" || w == "rl_redis_abs_uniform");
      const std::string other = w + b->Suffix();
      std::string label = other;
      label += " / ";
      label += w;
      ratio(
          label, {other, w}, [&](const Ops& x) { return x(other.c_str()) / x(w.c_str()); },
          target ? 0.9 : 0);
    }
  }

  std::string concurrency_list;
  for (const int c : o.concurrencies) {
    concurrency_list += (concurrency_list.empty() ? "" : ",") + std::to_string(c);
  }
  std::printf(
      "\ndistkit_bench: concurrency %s, %d interleaved rounds of %.1f s per workload "
      "(SUPPRESSED rate limits %.1f s; median round shown; cool-down %.1f s in all)\n",
      concurrency_list.c_str(), o.rounds, o.seconds, short_seconds, cooldown_s);
  for (const auto& b : backends) {
    std::printf("backend %-10s %s, distkitd %s\n",
                b->label.empty() ? "(none)" : b->Suffix().c_str(), b->kind.c_str(),
                b->daemon_path.c_str());
  }
  std::printf("%-30s %9s %8s %8s %9s %8s %21s %7s %8s\n", "workload", "ops/s", "p50 us", "p99 us",
              "redis/op", "allowed", "CPU us/op d/redis/cli", "errors", "degraded");
  for (const auto& r : results) {
    char allowed[16] = "-";
    if (r.allowed_share >= 0)
      std::snprintf(allowed, sizeof(allowed), "%.1f%%", r.allowed_share * 100);
    std::printf("%-30s %9.0f %8.0f %8.0f %9.3f %8s %7.1f %6.1f %6.1f %7llu %8llu\n", r.name.c_str(),
                r.ops_per_s, r.p50_us, r.p99_us, r.redis_calls_per_op, allowed, r.cpu_daemon_us,
                r.cpu_redis_us, r.cpu_client_us, static_cast<unsigned long long>(r.errors),
                static_cast<unsigned long long>(r.degraded));
  }
  if (!agg_results.empty()) {
    std::printf("\n%-30s %12s %14s %11s %7s\n", "client LAX aggregator Inc", "Inc/s",
                "median ns/Inc", "p99 ns/Inc", "failed");
    for (const auto& a : agg_results) {
      std::printf("%-30s %12.0f %14.1f %11.1f %7llu\n",
                  ("agg_inc " + std::to_string(a.threads) + " thread(s)").c_str(), a.incs_per_s,
                  a.median_ns, a.p99_ns, static_cast<unsigned long long>(a.failed));
    }
  }
  bool all_met = true;
  if (!ratios.empty()) std::printf("\n%-72s %7s %7s\n", "ratio", "value", "target");
  for (const auto& r : ratios) {
    if (r.target <= 0) {
      std::printf("%-72s %7.2f %7s %s\n", r.name.c_str(), r.value, "-", "(reported)");
      continue;
    }
    const bool met = r.at_most ? r.value <= r.target : r.value >= r.target;
    all_met &= met;
    std::printf("%-72s %7.2f %s%6.2f %s\n", r.name.c_str(), r.value, r.at_most ? "<" : ">",
                r.target, met ? "met" : "NOT MET");
  }
  std::string json = "{\"concurrency\":" + std::to_string(o.concurrency) +
                     ",\"seconds\":" + std::to_string(o.seconds) +
                     ",\"short_seconds\":" + std::to_string(short_seconds) +
                     ",\"rounds\":" + std::to_string(o.rounds) + ",\"concurrencies\":[" +
                     concurrency_list + "],\"results\":[";
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    char buf[768];
    std::snprintf(buf, sizeof(buf),
                  "%s{\"name\":\"%s\",\"ops_per_s\":%.0f,\"p50_us\":%.0f,\"p99_us\":%.0f,"
                  "\"redis_calls_per_op\":%.4f,\"allowed_share\":%.4f,\"cpu_us_per_op\":{"
                  "\"distkitd\":%.2f,\"redis\":%.2f,\"client\":%.2f},\"errors\":%llu,"
                  "\"degraded\":%llu}",
                  i ? "," : "", r.name.c_str(), r.ops_per_s, r.p50_us, r.p99_us,
                  r.redis_calls_per_op, r.allowed_share, r.cpu_daemon_us, r.cpu_redis_us,
                  r.cpu_client_us, static_cast<unsigned long long>(r.errors),
                  static_cast<unsigned long long>(r.degraded));
    json += buf;
  }
  json += "],\"ratios\":{";
  for (size_t i = 0; i < ratios.size(); ++i) {
    char buf[256];
    std::snprintf(buf, sizeof(buf), "%s\"%s\":{\"value\":%.3f,\"target\":%.2f}", i ? "," : "",
                  ratios[i].name.c_str(), ratios[i].value, ratios[i].target);
    json += buf;
  }
  json += "},\"aggregator\":[";
  for (size_t i = 0; i < agg_results.size(); ++i) {
    char buf[256];
    std::snprintf(buf, sizeof(buf),
                  "%s{\"threads\":%d,\"incs_per_s\":%.0f,\"median_ns\":%.1f,\"p99_ns\":%.1f}",
                  i ? "," : "", agg_results[i].threads, agg_results[i].incs_per_s,
                  agg_results[i].median_ns, agg_results[i].p99_ns);
    json += buf;
  }
  json += "]}";
  std::printf("\n%s\n", json.c_str());
  if (!o.json_path.empty()) std::ofstream(o.json_path) << json << "\n";
  return all_met ? 0 : 3;
}
