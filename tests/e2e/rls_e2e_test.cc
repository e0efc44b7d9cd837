// End to end for Envoy's rate limit service (docs/rls.md): the real distkitd with --rls_config
// and a real redis-server, called with envoy.service.ratelimit.v3 stubs. Every provider decides
// sliding windows (a fixed window would admit twice the limit around its boundary: shown not to
// happen), hits_addend and overrides, unlimited / shadow_mode / replaces, two daemons share a
// REDIS limit exactly, Redis down follows --rate_limit_failure_mode, bad rules exit 2, and the
// rules reload (file change, SIGHUP) atomically under load.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"
#include "tests/support/redis_process.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using envoy::service::ratelimit::v3::RateLimitRequest;
using envoy::service::ratelimit::v3::RateLimitResponse;
using envoy::service::ratelimit::v3::RateLimitService;
using testing::Daemon;
using testing::FastChannel;
using testing::HttpGet;
using testing::PollUntil;
using testing::RedisServer;
using Entries = std::vector<std::pair<std::string, std::string>>;

constexpr char kRules[] = R"(domain: shop
descriptors:
  - key: user
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: api
    rate_limit: {unit: minute, requests_per_unit: 10, name: api_per_minute}
  - key: vip
    rate_limit: {unlimited: true}
  - key: soft
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: path
    value: /a
    rate_limit: {unit: minute, requests_per_unit: 5, name: path_a}
  - key: special
    rate_limit:
      unit: minute
      requests_per_unit: 3
      replaces: [{name: path_a}]
  - key: shared
    rate_limit: {unit: minute, requests_per_unit: 30}
  - key: block
    rate_limit: {unit: hour, requests_per_unit: 0}
)";

void WriteFile(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << text;
  ASSERT_EQ(std::rename(tmp.c_str(), path.c_str()), 0);
}

class Client {
 public:
  explicit Client(const Daemon& d) : stub_(RateLimitService::NewStub(FastChannel(d.addr()))) {}

  // One descriptor per element of `descriptors`.
  grpc::Status Call(const std::vector<Entries>& descriptors, RateLimitResponse* resp,
                    uint32_t hits = 0, const std::string& domain = "shop") {
    RateLimitRequest req;
    req.set_domain(domain);
    req.set_hits_addend(hits);
    for (const Entries& es : descriptors) {
      auto* d = req.add_descriptors();
      for (const auto& [k, v] : es) {
        auto* e = d->add_entries();
        e->set_key(k);
        e->set_value(v);
      }
    }
    return Call(req, resp);
  }
  grpc::Status Call(const RateLimitRequest& req, RateLimitResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    return stub_->ShouldRateLimit(&ctx, req, resp);
  }
  // The overall code of a one-descriptor call that must succeed.
  RateLimitResponse::Code One(const Entries& entries, uint32_t hits = 0) {
    RateLimitResponse resp;
    auto s = Call({entries}, &resp, hits);
    EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
    return resp.overall_code();
  }

 private:
  std::unique_ptr<RateLimitService::Stub> stub_;
};

struct Env {
  std::unique_ptr<RedisServer> redis = RedisServer::Start();
  std::string rules_path;
  int metrics_port = testing::FreePort();

  explicit Env(const std::string& rules = kRules) {
    EXPECT_TRUE(redis);
    if (!redis) return;
    rules_path = redis->dir() + "/rules.yaml";
    WriteFile(rules_path, rules);
  }
  std::vector<std::string> Flags(const std::string& provider,
                                 std::vector<std::string> extra = {}) const {
    extra.insert(extra.end(), {"--rls_config", rules_path, "--rls_provider", provider,
                               "--redis_timeout_ms", "300"});
    return extra;
  }
};

constexpr auto kOk = RateLimitResponse::OK;
constexpr auto kOver = RateLimitResponse::OVER_LIMIT;

class RlsProviderE2E : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Providers, RlsProviderE2E, ::testing::Values("redis", "hybrid", "local"),
                         [](const auto& info) { return info.param; });

TEST_P(RlsProviderE2E, LimitsHitsOverridesAndStatuses) {
  Env env;
  ASSERT_TRUE(env.redis);
  Daemon d(*env.redis, "d", env.Flags(GetParam()));
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  Client c(d);

  // 10 per minute, hits_addend 4: 4 + 4 fit, a third 4 does not (and is not recorded), 2 fits.
  RateLimitResponse r;
  ASSERT_TRUE(c.Call({{{"api", "k1"}}}, &r, 4).ok());
  ASSERT_EQ(r.statuses_size(), 1);
  EXPECT_EQ(r.overall_code(), kOk);
  EXPECT_EQ(r.statuses(0).current_limit().requests_per_unit(), 10u);
  EXPECT_EQ(r.statuses(0).current_limit().unit(), RateLimitResponse::RateLimit::MINUTE);
  EXPECT_EQ(r.statuses(0).current_limit().name(), "api_per_minute");
  if (GetParam() == "local") {
    EXPECT_EQ(r.statuses(0).limit_remaining(), 6u);
  }
  EXPECT_EQ(c.One({{"api", "k1"}}, 4), kOk);
  ASSERT_TRUE(c.Call({{{"api", "k1"}}}, &r, 4).ok());
  EXPECT_EQ(r.overall_code(), kOver);
  EXPECT_EQ(r.statuses(0).code(), kOver);
  EXPECT_EQ(r.statuses(0).limit_remaining(), 0u);
  EXPECT_GT(r.statuses(0).duration_until_reset().seconds(), 0);
  EXPECT_LE(r.statuses(0).duration_until_reset().seconds(), 60);
  EXPECT_EQ(c.One({{"api", "k1"}}, 2), kOk);
  EXPECT_EQ(c.One({{"api", "k1"}}, 1), kOver);
  // Another value of the key is another window.
  EXPECT_EQ(c.One({{"api", "k2"}}, 10), kOk);

  // A descriptor's own hits_addend beats the request's.
  RateLimitRequest req;
  req.set_domain("shop");
  req.set_hits_addend(1);
  auto* desc = req.add_descriptors();
  auto* e = desc->add_entries();
  e->set_key("api");
  e->set_value("k3");
  desc->mutable_hits_addend()->set_value(10);
  ASSERT_TRUE(c.Call(req, &r).ok());
  EXPECT_EQ(r.overall_code(), kOk);
  ASSERT_TRUE(c.Call(req, &r).ok());
  EXPECT_EQ(r.overall_code(), kOver) << "10 of 10 used by the first call";

  // The request's limit override, even for a descriptor no rule matches.
  RateLimitRequest over;
  over.set_domain("shop");
  auto* od = over.add_descriptors();
  auto* oe = od->add_entries();
  oe->set_key("nomatch");
  oe->set_value("x");
  od->mutable_limit()->set_requests_per_unit(2);
  od->mutable_limit()->set_unit(envoy::type::v3::HOUR);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.Call(over, &r).ok());
    EXPECT_EQ(r.overall_code(), i < 2 ? kOk : kOver) << i;
    EXPECT_EQ(r.statuses(0).current_limit().requests_per_unit(), 2u);
    EXPECT_EQ(r.statuses(0).current_limit().unit(), RateLimitResponse::RateLimit::HOUR);
  }

  // No rule: OK without a limit. Unlimited: OK, remaining UINT32_MAX. requests_per_unit 0: never.
  ASSERT_TRUE(c.Call({{{"nomatch", "x"}}, {{"vip", "x"}}, {{"block", "x"}}}, &r).ok());
  ASSERT_EQ(r.statuses_size(), 3);
  EXPECT_EQ(r.statuses(0).code(), kOk);
  EXPECT_FALSE(r.statuses(0).has_current_limit());
  EXPECT_EQ(r.statuses(1).code(), kOk);
  EXPECT_EQ(r.statuses(1).limit_remaining(), 4294967295u);
  EXPECT_EQ(r.statuses(2).code(), kOver);
  EXPECT_EQ(r.overall_code(), kOver) << "one descriptor over = OVER_LIMIT";

  // shadow_mode: over the limit, answered OK.
  for (int i = 0; i < 4; ++i) EXPECT_EQ(c.One({{"soft", "x"}}), kOk) << i;

  // replaces: with "special" matched, path_a (5/min) is not applied, only special's 3/min.
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(c.Call({{{"path", "/a"}}, {{"special", "s"}}}, &r).ok());
    EXPECT_EQ(r.statuses(0).code(), kOk) << i;
    EXPECT_FALSE(r.statuses(0).has_current_limit());
    EXPECT_EQ(r.statuses(1).code(), i < 3 ? kOk : kOver) << i;
  }
  for (int i = 0; i < 6; ++i) EXPECT_EQ(c.One({{"path", "/a"}}), i < 5 ? kOk : kOver) << i;

  // Bad requests.
  EXPECT_EQ(c.Call(std::vector<Entries>{}, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(c.Call(std::vector<Entries>{Entries{}}, &r).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(c.Call({{{"api", "x"}}}, &r, 0, "").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// 10 per second. 10 hits late in one wall-clock second, then 10 more early in the next: a fixed
// one-second window would admit all 20 within ~0.4 s; a sliding window admits none of the second
// burst until the first has aged out.
TEST_P(RlsProviderE2E, SlidingWindowDoesNotDoubleAtTheBoundary) {
  Env env;
  ASSERT_TRUE(env.redis);
  Daemon d(*env.redis, "d", env.Flags(GetParam()));
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  Client c(d);
  ASSERT_EQ(c.One({{"user", "warmup"}}), kOk);  // connections and providers up
  auto ms_in_second = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count() %
           1000;
  };
  ASSERT_TRUE(PollUntil([&] { return ms_in_second() >= 700 && ms_in_second() < 750; }, 5s));
  const auto start = std::chrono::steady_clock::now();
  int first = 0, second = 0;
  for (int i = 0; i < 10; ++i) first += c.One({{"user", "u"}}) == kOk;
  ASSERT_TRUE(PollUntil([&] { return ms_in_second() >= 50 && ms_in_second() < 300; }, 5s));
  for (int i = 0; i < 10; ++i) second += c.One({{"user", "u"}}) == kOk;
  const auto took = std::chrono::steady_clock::now() - start;
  if (took > 900ms) GTEST_SKIP() << "the machine stalled: both bursts did not fit one second";
  EXPECT_EQ(first, 10);
  EXPECT_EQ(second, 0) << "a fixed window would have admitted 10 more after the boundary";
  // Once the first burst is a second old, hits fit again.
  EXPECT_TRUE(PollUntil([&] { return c.One({{"user", "u"}}) == kOk; }, 5s));
}

TEST(RlsE2E, TwoDaemonsShareOneRedisLimitExactly) {
  Env env;
  ASSERT_TRUE(env.redis);
  Daemon a(*env.redis, "a", env.Flags("redis")), b(*env.redis, "b", env.Flags("redis"));
  ASSERT_TRUE(a.WaitServing()) << a.Log();
  ASSERT_TRUE(b.WaitServing()) << b.Log();
  std::atomic<int> ok{0}, over{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Client c(t % 2 == 0 ? a : b);
      for (int i = 0; i < 20; ++i) {
        RateLimitResponse r;
        if (!c.Call({{{"shared", "s"}}}, &r).ok()) {
          ++failed;
        } else {
          ++(r.overall_code() == kOk ? ok : over);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(ok.load(), 30) << "30 per minute, shared by both daemons";
  EXPECT_EQ(over.load(), 50);
}

class RlsFailureModeE2E : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Modes, RlsFailureModeE2E, ::testing::Values("open", "closed", "local"),
                         [](const auto& info) { return info.param; });

TEST_P(RlsFailureModeE2E, RedisPausedAnswersByTheFailureMode) {
  const std::string mode = GetParam();
  Env env;
  ASSERT_TRUE(env.redis);
  Daemon d(*env.redis, "d", env.Flags("redis", {"--rate_limit_failure_mode", mode}));
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  Client c(d);
  ASSERT_EQ(c.One({{"api", "f"}}, 10), kOk);  // Redis holds the full window
  ASSERT_EQ(c.One({{"api", "f"}}), kOver);
  env.redis->Pause();
  // open: OK; closed: OVER_LIMIT; local: LOCAL's own state (empty: 10 fit, then over).
  for (int i = 0; i < 2; ++i) {
    const auto code = c.One({{"api", "f"}}, 6);
    if (mode == "open") {
      EXPECT_EQ(code, kOk);
    } else if (mode == "closed") {
      EXPECT_EQ(code, kOver);
    } else {
      EXPECT_EQ(code, i == 0 ? kOk : kOver) << i;
    }
  }
  env.redis->Resume();
  EXPECT_TRUE(PollUntil([&] { return c.One({{"api", "f"}}) == kOver; }, 15s));
}

TEST(RlsE2E, MetricsCountDecisionsByRuleNeverByValue) {
  Env env;
  ASSERT_TRUE(env.redis);
  const std::string port = std::to_string(env.metrics_port);
  Daemon d(*env.redis, "d", env.Flags("local", {"--metrics_listen", "127.0.0.1:" + port}));
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  Client c(d);
  for (int i = 0; i < 3; ++i) c.One({{"soft", "secret-value"}});
  c.One({{"api", "other-secret"}});
  std::string text;
  ASSERT_TRUE(PollUntil(
      [&] {
        text = HttpGet(env.metrics_port, "/metrics").value_or("");
        return text.find("distkit_rls_decisions_total") != std::string::npos;
      },
      10s));
  EXPECT_NE(text.find(R"(distkit_rls_decisions_total{code="OK",domain="shop",rule="soft"} 2)"),
            std::string::npos)
      << text;
  EXPECT_NE(
      text.find(R"(distkit_rls_decisions_total{code="OVER_LIMIT",domain="shop",rule="soft"} 1)"),
      std::string::npos)
      << "shadow_mode answers OK but counts OVER_LIMIT\n"
      << text;
  EXPECT_NE(
      text.find(R"(distkit_rls_decisions_total{code="OK",domain="shop",rule="api_per_minute"} 1)"),
      std::string::npos)
      << text;
  EXPECT_EQ(text.find("secret"), std::string::npos) << "a request value in a label";
  EXPECT_NE(text.find("distkit_rls_config_reload_failures_total 0"), std::string::npos) << text;
}

TEST(RlsE2E, BadRulesExit2NamingFileAndLine) {
  Env env(
      "domain: shop\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, "
      "requests_per_unit: 1}\n");
  ASSERT_TRUE(env.redis);
  auto [code, out] = testing::Process::Run(
      DISTKIT_DAEMON_BIN,
      {"--listen", "unix:" + env.redis->dir() + "/x.sock", "--rls_config", env.rules_path}, 10s);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find(env.rules_path + ":4: rate_limit.unit: unknown unit 'fortnight'"),
            std::string::npos)
      << out;
}

// Rules rewritten (file change, then SIGHUP) while clients call without pause: every call
// succeeds, the new limit applies, and a bad file keeps the old rules and is counted.
TEST(RlsE2E, ReloadUnderLoadFailsNoRequest) {
  const std::string v1 =
      "domain: shop\ndescriptors:\n  - key: r\n    rate_limit: {unit: hour, "
      "requests_per_unit: 1000000}\n";
  const std::string v2 =
      "domain: shop\ndescriptors:\n  - key: r\n    rate_limit: {unit: hour, "
      "requests_per_unit: 0}\n";
  const std::string v3 =
      "domain: shop\ndescriptors:\n  - key: r\n    rate_limit: {unit: hour, "
      "requests_per_unit: 1000000}\n  - key: new\n    rate_limit: {unit: "
      "hour, requests_per_unit: 0}\n";
  Env env(v1);
  ASSERT_TRUE(env.redis);
  const std::string port = std::to_string(env.metrics_port);
  Daemon d(*env.redis, "d", env.Flags("local", {"--metrics_listen", "127.0.0.1:" + port}));
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  std::atomic<bool> stop{false};
  std::atomic<int> calls{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      Client c(d);
      while (!stop) {
        RateLimitResponse r;
        if (!c.Call({{{"r", "x"}}}, &r).ok() || r.statuses_size() != 1) ++failed;
        ++calls;
      }
    });
  }
  Client c(d);
  ASSERT_EQ(c.One({{"r", "x"}}), kOk);
  // 1. The file rewritten: polled within a second.
  WriteFile(env.rules_path, v2);
  EXPECT_TRUE(PollUntil([&] { return c.One({{"r", "x"}}) == kOver; }, 10s)) << d.Log();
  // 2. A bad file: the old rules stay, the failure is counted.
  WriteFile(env.rules_path, "domain: shop\ndescriptors:\n  - key: r\n    rate_limit: {}\n");
  EXPECT_TRUE(PollUntil(
      [&] {
        return HttpGet(env.metrics_port, "/metrics")
                   .value_or("")
                   .find("distkit_rls_config_reload_failures_total 1") != std::string::npos;
      },
      10s))
      << d.Log();
  EXPECT_EQ(c.One({{"r", "x"}}), kOver) << "the previous rules are kept";
  // 3. SIGHUP after a rewrite (the poll may see it first: both load the same file).
  WriteFile(env.rules_path, v3);
  d.process().Signal(SIGHUP);
  EXPECT_TRUE(PollUntil([&] { return c.One({{"new", "x"}}) == kOver; }, 10s)) << d.Log();
  EXPECT_EQ(c.One({{"r", "x"}}), kOk);
  const int before = calls;
  EXPECT_TRUE(PollUntil([&] { return calls > before + 10; }, 10s));
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0) << "of " << calls.load();
  EXPECT_GT(calls.load(), 10);
  EXPECT_NE(d.Log().find("--rls_config reload refused"), std::string::npos) << d.Log();
}

TEST(RlsE2E, ResponseHeadersOfTheTightestLimitWhenAsked) {
  Env env;
  ASSERT_TRUE(env.redis);
  Daemon plain(*env.redis, "plain", env.Flags("local"));
  Daemon d(*env.redis, "d", env.Flags("local", {"--rls_response_headers", "true"}));
  ASSERT_TRUE(plain.WaitServing()) << plain.Log();
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  RateLimitResponse r;
  ASSERT_TRUE(Client(plain).Call({{{"api", "h"}}}, &r).ok());
  EXPECT_EQ(r.response_headers_to_add_size(), 0);
  Client c(d);
  // api: 10 per minute, user: 10 per second, 3 hits each: 7 left in both, the first one wins.
  ASSERT_TRUE(c.Call({{{"api", "h"}}, {{"user", "h"}}}, &r, 3).ok());
  ASSERT_EQ(r.response_headers_to_add_size(), 3);
  EXPECT_EQ(r.response_headers_to_add(0).key(), "RateLimit-Limit");
  EXPECT_EQ(r.response_headers_to_add(0).value(), "10, 10;w=60");
  EXPECT_EQ(r.response_headers_to_add(1).key(), "RateLimit-Remaining");
  EXPECT_EQ(r.response_headers_to_add(1).value(), "7");
  EXPECT_EQ(r.response_headers_to_add(2).key(), "RateLimit-Reset");
  EXPECT_EQ(r.response_headers_to_add(2).value(), "0");
  ASSERT_TRUE(c.Call({{{"nomatch", "h"}}}, &r).ok());
  EXPECT_EQ(r.response_headers_to_add_size(), 0) << "no limit applied";
}

TEST(RlsE2E, NotServedWithoutRlsConfig) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  Daemon d(*redis, "d");
  ASSERT_TRUE(d.WaitServing()) << d.Log();
  Client c(d);
  RateLimitResponse r;
  EXPECT_EQ(c.Call({{{"api", "x"}}}, &r).error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

}  // namespace
}  // namespace distkit
