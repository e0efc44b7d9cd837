// hybrid_sync_bench: what one HYBRID sync pass costs the daemon with many keys held, most of them
// idle (the sync thread runs a pass every --sync_interval_ms, 10 ms by default).
//
// An in-process HybridRateLimiter over a stub Redis that answers every sync at once (no
// network, no Redis: only the daemon's own bookkeeping is timed). N keys get one request each
// and are synced; then it times passes with no request at all and passes after 1 % of the keys
// got a request, and prints ns per pass and the share of a core at one pass per 10 ms.
//
//   hybrid_sync_bench [keys=100000] [passes=200]

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/core/hybrid_rate_limiter.h"
#include "daemon/redis/redis_client.h"

namespace {

using distkit::redis::Reply;

// Grants a lease of 1000, reports nothing used, and confirms the cumulatives it was sent.
class StubRedis final : public distkit::redis::RedisClient {
 public:
  void Command(std::vector<std::string>, distkit::redis::ReplyCallback done) override {
    done(Reply::Error("not used"));
  }
  void Script(std::string_view, std::vector<std::string>, std::vector<std::string> args,
              distkit::redis::ReplyCallback done) override {
    ++scripts;
    done(Reply::Array({Reply::Integer(1000), Reply::Integer(1000), Reply::String("0"),
                       Reply::String("0"), Reply::String("0"), Reply::Integer(-1),
                       Reply::String("0"), Reply::Integer(1), Reply::Integer(1000000),
                       Reply::String(args.at(2)), Reply::String(args.at(3)), Reply::Integer(0),
                       Reply::String("")}));
  }
  bool Healthy() const override { return true; }
  long scripts = 0;
};

distkit::core::RateIncRequest Req(int i) {
  distkit::core::RateIncRequest r;
  r.ns = "bench";
  r.key = absl::StrCat("key-", i);
  r.rate_per_second = 1e6;
  r.count = 1;
  r.strategy = distkit::core::RateStrategy::kAbsolute;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const int keys = argc > 1 ? std::atoi(argv[1]) : 100000;
  const int passes = argc > 2 ? std::atoi(argv[2]) : 200;
  StubRedis redis;
  distkit::core::HybridRateLimiterOptions o;
  o.dedup_id = "bench";
  distkit::core::HybridRateLimiter rl(&redis, o);  // no Start(): passes are run by hand
  for (int i = 0; i < keys; ++i) rl.Inc(Req(i), [](auto) {});
  rl.SyncNow();  // pushes every key's unit
  using Clock = std::chrono::steady_clock;
  auto time_passes = [&](int touched) {
    double ns = 0;
    for (int p = 0; p < passes; ++p) {
      for (int i = 0; i < touched; ++i) (void)rl.TryInc(Req((p * touched + i) % keys));
      const auto t0 = Clock::now();
      rl.SyncNow();
      ns += std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
    }
    return ns / passes;
  };
  const long before = redis.scripts;
  const double idle = time_passes(0);
  const long idle_scripts = redis.scripts - before;
  const double busy = time_passes(keys / 100);
  std::printf("keys %d, passes %d\n", keys, passes);
  std::printf(
      "idle pass (no request since the last one): %10.0f ns  (%.1f %% of a core at one "
      "pass per 10 ms; %ld syncs sent)\n",
      idle, idle / 1e5, idle_scripts);
  std::printf("pass after 1 %% of the keys got a request:  %10.0f ns  (%.1f %% of a core)\n", busy,
              busy / 1e5);
  return 0;
}
