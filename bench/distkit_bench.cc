// distkit_bench: throughput and latency of distkitd against baselines measured in the same run.
//
// Starts a private redis-server and the real distkitd (Unix sockets in a temp dir), then runs
// closed-loop workloads with N concurrent streams of unary calls (gRPC callback client):
//   empty   grpc.health.v1 Check: the cost of an RPC that does nothing (the baseline)
//   lax     CounterService.Inc, CONSISTENCY_LAX
//   strict  CounterService.Inc, CONSISTENCY_STRICT
//   batch   CounterService.Batch of 1000 LAX incs (throughput counted per increment)
//   raw     EVALSHA of the same counter.lua straight to Redis, N pipelined (the Redis limit)
//   strict_icounter / lax_icounter   InstanceCounterService.Inc, STRICT / LAX
//   raw_icounter   EVALSHA of icounter.lua ("inc", the daemon's ARGV shape), N pipelined
// and prints a table, a JSON line and the ratios of issue #2's and issue #3's targets. Redis
// round trips per operation come from INFO commandstats around each workload.
//
//   distkit_bench [--concurrency 64] [--seconds 3] [--json FILE] [--daemon PATH]
//                 [--only NAME] [--rounds N]

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "distkit/v1/counter.grpc.pb.h"
#include "distkit/v1/instance_counter.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace distkit::redis {
const std::map<std::string, std::string>& EmbeddedScripts();
}

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Options {
  int concurrency = 64;
  double seconds = 3;
  std::string json_path;
  std::string daemon = DISTKIT_DAEMON_BIN;
  std::string redis_server = DISTKIT_REDIS_SERVER;
  std::string only;  // run just this workload (for profiling); ratios need all of them
  int rounds = 3;
};

pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
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
};

// N streams, each issuing its next call when the previous one completes, for `seconds`.
// `issue(stream, done)` starts one call and must eventually invoke done(ok).
Result ClosedLoop(const std::string& name, int concurrency, double seconds, int units_per_call,
                  const std::function<void(int, std::function<void(bool)>)>& issue) {
  struct Stream {
    std::vector<uint32_t> lat_us;
    Clock::time_point started;
    uint64_t calls = 0, errors = 0;
  };
  std::vector<Stream> streams(concurrency);
  std::mutex mu;
  std::condition_variable cv;
  int active = concurrency;
  std::atomic<bool> measuring{false};
  const auto warmup_end = Clock::now() + 300ms;
  const auto end = warmup_end + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(seconds));
  std::function<void(int)> next = [&](int s) {
    streams[s].started = Clock::now();
    issue(s, [&, s](bool ok) {
      const auto now = Clock::now();
      auto& st = streams[s];
      if (now >= warmup_end) {
        st.lat_us.push_back(static_cast<uint32_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(now - st.started).count()));
        st.calls++;
        if (!ok) st.errors++;
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
  uint64_t calls = 0;
  for (auto& st : streams) {
    all.insert(all.end(), st.lat_us.begin(), st.lat_us.end());
    calls += st.calls;
    r.errors += st.errors;
  }
  std::sort(all.begin(), all.end());
  if (!all.empty()) {
    r.p50_us = all[all.size() / 2];
    r.p99_us = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  }
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

// EVALSHA of an embedded script at the same concurrency: windows of N pipelined commands, one
// key per stream (`key_prefix` + stream), ARGV as the daemon sends it. A reply that is not an
// array starting with "ok" counts as an error.
Result RawEvalsha(const std::string& name, const std::string& script, const std::string& key_prefix,
                  const std::vector<std::string>& script_argv, const std::string& sock,
                  const Options& o) {
  redisContext* c = redisConnectUnix(sock.c_str());
  const std::string body = distkit::redis::EmbeddedScripts().at(script);
  auto* loaded =
      static_cast<redisReply*>(redisCommand(c, "SCRIPT LOAD %b", body.data(), body.size()));
  const std::string sha(loaded->str, loaded->len);
  freeReplyObject(loaded);
  std::vector<std::string> keys;
  for (int i = 0; i < o.concurrency; ++i) keys.push_back(key_prefix + std::to_string(i));
  std::vector<const char*> argv = {"EVALSHA", sha.c_str(), "1", nullptr};
  for (const auto& a : script_argv) argv.push_back(a.c_str());
  std::vector<uint32_t> lat;
  uint64_t ops = 0, errors = 0;
  auto run = [&](Clock::time_point until, bool record) {
    while (Clock::now() < until) {
      const auto t0 = Clock::now();
      for (int i = 0; i < o.concurrency; ++i) {
        argv[3] = keys[i].c_str();
        redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(), nullptr);
      }
      for (int i = 0; i < o.concurrency; ++i) {
        void* reply = nullptr;
        bool ok = false;
        if (redisGetReply(c, &reply) == REDIS_OK) {
          const auto* r = static_cast<redisReply*>(reply);
          ok = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
               r->element[0]->type == REDIS_REPLY_STRING &&
               std::string(r->element[0]->str, r->element[0]->len) == "ok";
          freeReplyObject(reply);
        }
        if (record && !ok) errors++;
      }
      if (record) {
        ops += o.concurrency;
        lat.push_back(static_cast<uint32_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count()));
      }
    }
  };
  run(Clock::now() + 300ms, false);
  run(Clock::now() +
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds)),
      true);
  redisFree(c);
  std::sort(lat.begin(), lat.end());
  Result r;
  r.name = name;
  r.ops_per_s = static_cast<double>(ops) / o.seconds;
  if (!lat.empty()) {
    r.p50_us = lat[lat.size() / 2];
    r.p99_us = lat[std::min(lat.size() - 1, lat.size() * 99 / 100)];
  }
  r.redis_calls_per_op = 1;
  r.errors = errors;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
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
      o.concurrency = std::max(1, std::atoi(val().c_str()));
    } else if (a == "--seconds") {
      o.seconds = std::max(0.2, std::atof(val().c_str()));
    } else if (a == "--json") {
      o.json_path = val();
    } else if (a == "--daemon") {
      o.daemon = val();
    } else if (a == "--rounds") {
      o.rounds = std::max(1, std::atoi(val().c_str()));
    } else if (a == "--only") {
      o.only = val();
    } else {
      std::fprintf(stderr,
                   "usage: distkit_bench [--concurrency N] [--seconds S] [--json FILE] "
                   "[--daemon PATH] [--only NAME] [--rounds N]\n");
      return 64;
    }
  }
  static const char* const kWorkloads[] = {
      "empty_rpc",   "lax_inc",          "strict_inc",          "batch1000_lax_inc",
      "raw_evalsha", "lax_icounter_inc", "strict_icounter_inc", "raw_evalsha_icounter"};
  if (!o.only.empty() &&
      std::find(std::begin(kWorkloads), std::end(kWorkloads), o.only) == std::end(kWorkloads)) {
    std::fprintf(stderr, "--only: unknown workload '%s'; one of:", o.only.c_str());
    for (const char* w : kWorkloads) std::fprintf(stderr, " %s", w);
    std::fprintf(stderr, "\n");
    return 64;
  }
  signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/distkit-bench-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string redis_sock = dir + "/redis.sock", daemon_sock = dir + "/d.sock";
  pid_t redis = Spawn({o.redis_server, "--port", "0", "--unixsocket", redis_sock, "--save", "",
                       "--appendonly", "no", "--dir", dir},
                      dir + "/redis.log");
  auto cleanup = [&](pid_t daemon) {
    if (daemon > 0) {
      kill(daemon, SIGTERM);
      waitpid(daemon, nullptr, 0);
    }
    kill(redis, SIGKILL);
    waitpid(redis, nullptr, 0);
  };
  redisContext* stats = nullptr;
  if (!PollUntil(
          [&] {
            if (stats) redisFree(stats);
            stats = redisConnectUnix(redis_sock.c_str());
            return stats && !stats->err;
          },
          10s)) {
    std::fprintf(stderr, "redis-server did not start\n");
    cleanup(-1);
    return 1;
  }
  pid_t daemon = Spawn({o.daemon, "--listen", "unix:" + daemon_sock, "--redis",
                        "unix:" + redis_sock, "--log_level", "warn"},
                       dir + "/distkitd.log");
  auto channel = grpc::CreateChannel("unix:" + daemon_sock, grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto counters = distkit::v1::CounterService::NewStub(channel);
  auto icounters = distkit::v1::InstanceCounterService::NewStub(channel);
  auto serving = [&](const char* service) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 500ms);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    return health->Check(&ctx, req, &resp).ok() &&
           resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  };
  const bool up = PollUntil(
      [&] {
        return serving("distkit.v1.CounterService") && serving("distkit.v1.InstanceCounterService");
      },
      15s);
  if (!up) {
    std::fprintf(stderr, "distkitd did not become SERVING (log: %s/distkitd.log)\n", dir.c_str());
    cleanup(daemon);
    return 1;
  }

  std::vector<Result> results;
  auto measure = [&](Result r, uint64_t before, uint64_t units) {
    const uint64_t after = RedisCalls(stats, "evalsha");
    if (units > 0) r.redis_calls_per_op = static_cast<double>(after - before) / units;
    results.push_back(r);
  };
  const int n = o.concurrency;
  // Workloads run interleaved for several rounds and each reports its median round, so a
  // noisy moment on a shared 2-core machine does not decide a ratio.
  for (int round = 0; round < o.rounds; ++round) {
    auto want = [&](const char* name) { return o.only.empty() || o.only == name; };
    if (want("empty_rpc")) {  // empty RPC baseline
      uint64_t before = RedisCalls(stats, "evalsha");
      auto r = ClosedLoop("empty_rpc", n, o.seconds, 1, [&](int, std::function<void(bool)> done) {
        struct Call {
          grpc::ClientContext ctx;
          grpc::health::v1::HealthCheckRequest req;
          grpc::health::v1::HealthCheckResponse resp;
        };
        auto c = std::make_shared<Call>();
        health->async()->Check(&c->ctx, &c->req, &c->resp,
                               [c, done](grpc::Status s) { done(s.ok()); });
      });
      measure(r, before, static_cast<uint64_t>(r.ops_per_s * o.seconds));
    }
    auto inc_workload = [&](const char* name, distkit::v1::Consistency consistency) {
      if (!want(name)) return;
      uint64_t before = RedisCalls(stats, "evalsha");
      auto r = ClosedLoop(name, n, o.seconds, 1, [&](int s, std::function<void(bool)> done) {
        struct Call {
          grpc::ClientContext ctx;
          distkit::v1::IncRequest req;
          distkit::v1::IncResponse resp;
        };
        auto c = std::make_shared<Call>();
        c->req.set_namespace_("bench");
        c->req.set_key(std::string(name) + std::to_string(s));
        c->req.set_delta(1);
        c->req.set_consistency(consistency);
        counters->async()->Inc(&c->ctx, &c->req, &c->resp,
                               [c, done](grpc::Status st) { done(st.ok()); });
      });
      measure(r, before, static_cast<uint64_t>(r.ops_per_s * o.seconds));
    };
    inc_workload("lax_inc", distkit::v1::CONSISTENCY_LAX);
    inc_workload("strict_inc", distkit::v1::CONSISTENCY_STRICT);
    if (want("batch1000_lax_inc")) {
      constexpr int kBatch = 1000;
      uint64_t before = RedisCalls(stats, "evalsha");
      auto r = ClosedLoop("batch1000_lax_inc", n, o.seconds, kBatch,
                          [&](int s, std::function<void(bool)> done) {
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
                                                     [c, done](grpc::Status st) { done(st.ok()); });
                          });
      measure(r, before, static_cast<uint64_t>(r.ops_per_s * o.seconds));
    }
    if (want("raw_evalsha")) {
      // counter.lua ARGV: dedup_id, n, op, comparator, operand, arg.
      results.push_back(RawEvalsha("raw_evalsha", "counter", "dk:{raw}:c:bench:raw",
                                   {"bench", "0", "inc", "", "0", "1"}, redis_sock, o));
    }
    // Instance-aware counters: the same streams and keys per stream as lax_inc/strict_inc.
    auto icounter_workload = [&](const char* name, distkit::v1::Consistency consistency) {
      if (!want(name)) return;
      uint64_t before = RedisCalls(stats, "evalsha");
      auto r = ClosedLoop(name, n, o.seconds, 1, [&](int s, std::function<void(bool)> done) {
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
                                [c, done](grpc::Status st) { done(st.ok()); });
      });
      measure(r, before, static_cast<uint64_t>(r.ops_per_s * o.seconds));
    };
    icounter_workload("lax_icounter_inc", distkit::v1::CONSISTENCY_LAX);
    icounter_workload("strict_icounter_inc", distkit::v1::CONSISTENCY_STRICT);
    if (want("raw_evalsha_icounter")) {
      // icounter.lua ARGV as InstanceCounters::Script sends an inc: id, incarnation, dedup_id,
      // n (no lax entries), op, comparator, operand, arg (the delta).
      results.push_back(RawEvalsha("raw_evalsha_icounter", "icounter", "dk:{raw}:i:bench:raw",
                                   {"bench-raw", "1", "bench-raw", "0", "inc", "", "0", "1"},
                                   redis_sock, o));
    }
  }  // rounds
  results = MedianPerWorkload(std::move(results));

  // Exactly-once sanity: every acknowledged strict/lax inc reached Redis after a final flush.
  cleanup(daemon);
  redisFree(stats);

  if (!o.only.empty()) {
    for (const auto& r : results) {
      std::printf("%s: %.0f ops/s p50 %.0f us p99 %.0f us\n", r.name.c_str(), r.ops_per_s, r.p50_us,
                  r.p99_us);
    }
    return 0;
  }
  std::map<std::string, Result> by;
  for (const auto& r : results) by[r.name] = r;
  const double empty = by["empty_rpc"].ops_per_s, lax = by["lax_inc"].ops_per_s,
               strict = by["strict_inc"].ops_per_s, batch = by["batch1000_lax_inc"].ops_per_s,
               raw = by["raw_evalsha"].ops_per_s;
  const double ilax = by["lax_icounter_inc"].ops_per_s,
               istrict = by["strict_icounter_inc"].ops_per_s,
               iraw = by["raw_evalsha_icounter"].ops_per_s;
  struct Ratio {
    const char* name;
    double value, target;
  };
  const Ratio ratios[] = {
      {"lax_inc / empty_rpc", lax / empty, 0.9},
      {"strict_inc / min(empty_rpc, raw_evalsha)", strict / std::min(empty, raw), 0.7},
      {"batch1000 per-inc / lax_inc", batch / lax, 20},
      {"lax_icounter_inc / empty_rpc", ilax / empty, 0.9},
      {"strict_icounter_inc / min(empty_rpc, raw_evalsha_icounter)",
       istrict / std::min(empty, iraw), 0.7}};

  std::printf(
      "\ndistkit_bench: concurrency %d, %d interleaved rounds of %.1f s per workload "
      "(median round shown)\n",
      o.concurrency, o.rounds, o.seconds);
  std::printf("%-22s %14s %10s %10s %16s %8s\n", "workload", "ops/s", "p50 us", "p99 us",
              "redis calls/op", "errors");
  for (const auto& r : results) {
    std::printf("%-22s %14.0f %10.0f %10.0f %16.3f %8llu\n", r.name.c_str(), r.ops_per_s, r.p50_us,
                r.p99_us, r.redis_calls_per_op, static_cast<unsigned long long>(r.errors));
  }
  std::printf("\n%-60s %8s %8s %s\n", "ratio", "value", "target", "");
  bool all_met = true;
  for (const auto& r : ratios) {
    const bool met = r.value >= r.target;
    all_met &= met;
    std::printf("%-60s %8.2f %8.2f %s\n", r.name, r.value, r.target, met ? "met" : "NOT MET");
  }
  std::string json = "{\"concurrency\":" + std::to_string(o.concurrency) +
                     ",\"seconds\":" + std::to_string(o.seconds) + ",\"results\":[";
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    char buf[512];
    std::snprintf(buf, sizeof(buf),
                  "%s{\"name\":\"%s\",\"ops_per_s\":%.0f,\"p50_us\":%.0f,\"p99_us\":%.0f,"
                  "\"redis_calls_per_op\":%.4f,\"errors\":%llu}",
                  i ? "," : "", r.name.c_str(), r.ops_per_s, r.p50_us, r.p99_us,
                  r.redis_calls_per_op, static_cast<unsigned long long>(r.errors));
    json += buf;
  }
  json += "],\"ratios\":{";
  for (size_t i = 0; i < std::size(ratios); ++i) {
    char buf[256];
    std::snprintf(buf, sizeof(buf), "%s\"%s\":{\"value\":%.3f,\"target\":%.2f}", i ? "," : "",
                  ratios[i].name, ratios[i].value, ratios[i].target);
    json += buf;
  }
  json += "}}";
  std::printf("\n%s\n", json.c_str());
  if (!o.json_path.empty()) std::ofstream(o.json_path) << json << "\n";
  return all_met ? 0 : 3;
}
