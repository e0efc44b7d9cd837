// End to end: the real distkitd with --metrics_listen, scraped over plain HTTP. RPCs of every
// outcome move distkit_rpc_total, LAX work moves the flush counters, and distkit_redis_up follows
// a Redis that goes away. A busy metrics port is a clear start-up error (exit 1).

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "distkit/client.h"
#include "distkit/v1/counter.grpc.pb.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::HttpGet;
using testing::PollUntil;
using testing::Process;
using testing::RedisServer;

constexpr char kService[] = "distkit.v1.CounterService";

// A 127.0.0.1 TCP socket bound to a port the kernel picked; listening when asked. -1 on error.
int BindLoopback(bool listen_too, int* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      (listen_too && listen(fd, 1) != 0)) {
    close(fd);
    return -1;
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

// A port that was free a moment ago (bound to 127.0.0.1:0, then closed).
int FreePort() {
  int port = 0;
  int fd = BindLoopback(false, &port);
  if (fd < 0) return 0;
  close(fd);
  return port;
}

// The value of the sample `name{labels}` (exactly these labels) in a text exposition.
std::optional<double> Sample(const std::string& text, const std::string& name,
                             const std::map<std::string, std::string>& labels = {}) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t name_end = line.find_first_of("{ ");
    if (name_end == std::string::npos || line.compare(0, name_end, name) != 0 ||
        name_end != name.size()) {
      continue;
    }
    std::map<std::string, std::string> found;
    size_t pos = name_end;
    if (line[pos] == '{') {
      ++pos;
      while (pos < line.size() && line[pos] != '}') {
        const size_t eq = line.find("=\"", pos);
        const size_t close = line.find('"', eq + 2);  // our label values have no escapes
        if (eq == std::string::npos || close == std::string::npos) return std::nullopt;
        found[line.substr(pos, eq - pos)] = line.substr(eq + 2, close - eq - 2);
        pos = close + 1;
        if (pos < line.size() && line[pos] == ',') ++pos;
      }
      ++pos;  // '}'
    }
    if (found != labels) continue;
    return std::stod(line.substr(pos));
  }
  return std::nullopt;
}

// A distkitd child serving gRPC on a Unix socket and /metrics on 127.0.0.1:<port>.
class MetricsDaemon {
 public:
  // Starts the daemon on a free metrics port; tries another port when someone took the one we
  // picked in the meantime. Check ok() afterwards.
  explicit MetricsDaemon(const RedisServer& redis) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = FreePort();
      daemon_ = std::make_unique<testing::Daemon>(
          redis, "m",
          std::vector<std::string>{"--metrics_listen", "127.0.0.1:" + std::to_string(port_)});
      if (!daemon_->started()) return;
      // Either /metrics answers or the daemon exits (a start-up error).
      PollUntil(
          [&] { return HttpGet(port_, "/metrics").has_value() || !daemon_->process().Running(); },
          15s);
      if (daemon_->process().Running()) break;
      if (daemon_->Log().find("in use") == std::string::npos) break;
    }
    ok_ = daemon_->process().Running() && HttpGet(port_, "/metrics").has_value();
  }

  bool ok() const { return ok_; }
  testing::Daemon& daemon() { return *daemon_; }
  std::string Scrape() { return HttpGet(port_, "/metrics").value_or(""); }
  // The sample's value in a fresh scrape, -1 when absent.
  double Value(const std::string& name, const std::map<std::string, std::string>& labels = {}) {
    return Sample(Scrape(), name, labels).value_or(-1);
  }

  grpc::Status Inc(const std::string& key, v1::Consistency c) {
    return daemon_->CounterInc(key, 1, c);
  }

  absl::Status LaxBatch(const std::string& key, int items) {
    const std::vector<CounterOp> ops(items, CounterOp::Inc(key, 1, Consistency::kLax));
    return daemon_->NewClient("", 5s)->Batch(ops).status();
  }

 private:
  int port_ = 0;
  bool ok_ = false;
  std::unique_ptr<testing::Daemon> daemon_;
};

std::map<std::string, std::string> Rpc(const std::string& method, const std::string& code) {
  return {{"service", kService}, {"method", method}, {"code", code}};
}

TEST(MetricsE2E, RpcOutcomesLaxFlushesAndRedisHealthAreExported) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  MetricsDaemon d(*redis);
  ASSERT_TRUE(d.ok()) << d.daemon().Log();
  ASSERT_TRUE(d.daemon().WaitServing(kService)) << d.daemon().Log();

  // Every (method, code) series exists from the start, at 0.
  EXPECT_EQ(d.Value("distkit_rpc_total", Rpc("Inc", "OK")), 0);
  EXPECT_EQ(d.Value("distkit_rpc_total", Rpc("Clear", "DATA_LOSS")), 0);

  const std::string key = "metrics_probe_key";
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(d.Inc(key, v1::CONSISTENCY_STRICT).ok());
    ASSERT_TRUE(d.Inc(key, v1::CONSISTENCY_LAX).ok());
  }
  EXPECT_EQ(d.Inc("bad:key", v1::CONSISTENCY_LAX).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(d.LaxBatch(key, 7).ok());

  // Recorded before the answer is sent: no waiting needed for the RPC metrics.
  const std::string text = d.Scrape();
  EXPECT_EQ(Sample(text, "distkit_rpc_total", Rpc("Inc", "OK")), 10) << text;
  EXPECT_EQ(Sample(text, "distkit_rpc_total", Rpc("Inc", "INVALID_ARGUMENT")), 1);
  EXPECT_EQ(Sample(text, "distkit_rpc_total", Rpc("Batch", "OK")), 1);
  EXPECT_EQ(Sample(text, "distkit_rpc_duration_seconds_count",
                   {{"service", kService}, {"method", "Inc"}}),
            11);
  EXPECT_EQ(Sample(text, "distkit_rpc_duration_seconds_bucket",
                   {{"service", kService}, {"method", "Inc"}, {"le", "+Inf"}}),
            11);
  EXPECT_EQ(Sample(text, "distkit_batch_items_total", {{"service", kService}}), 7);
  EXPECT_EQ(Sample(text, "distkit_redis_up"), 1);
  EXPECT_GT(Sample(text, "distkit_redis_commands_total").value_or(0), 0);
  EXPECT_EQ(text.find(key), std::string::npos) << "no per-key labels";
  // Instance-aware counters export their flush, liveness and recovery counters.
  EXPECT_EQ(Sample(text, "distkit_icounter_lax_dirty_keys"), 0) << text;
  EXPECT_EQ(Sample(text, "distkit_icounter_declared_dead_total"), 0);
  EXPECT_EQ(Sample(text, "distkit_icounter_restored_slices_total"), 0);
  EXPECT_TRUE(Sample(text, "distkit_icounter_reaper_passes_total").has_value());

  // The LAX increments reach Redis within a flush interval.
  EXPECT_TRUE(PollUntil([&] { return d.Value("distkit_lax_flush_commands_total") > 0; }, 10s));
  EXPECT_TRUE(PollUntil([&] { return d.Value("distkit_lax_dirty_keys") == 0; }, 10s));
  EXPECT_EQ(d.Value("distkit_lax_flush_failures_total"), 0);

  redis->Stop();
  EXPECT_TRUE(PollUntil([&] { return d.Value("distkit_redis_up") == 0; }, 10s)) << d.Scrape();
  EXPECT_TRUE(PollUntil([&] { return d.Value("distkit_redis_reconnects_total") > 0; }, 10s));
}

// The inline path (docs/design.md): a STRICT call's lone script runs on the handler's thread; the
// two scripts of a Batch go through the executor's queue, pipelined.
TEST(MetricsE2E, ALoneStrictCallRunsInlineABatchDoesNot) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  MetricsDaemon d(*redis);
  ASSERT_TRUE(d.ok()) << d.daemon().Log();
  ASSERT_TRUE(d.daemon().WaitServing(kService)) << d.daemon().Log();
  const double before = d.Value("distkit_redis_inline_commands_total");
  ASSERT_GE(before, 0);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(d.Inc("inline_key", v1::CONSISTENCY_STRICT).ok());
  // Background work (LAX flushes, heartbeats) in flight at that moment sends a call the usual
  // way instead: most, not all, go inline.
  const double after = d.Value("distkit_redis_inline_commands_total");
  EXPECT_GE(after - before, 1) << d.Scrape();
  const std::vector<CounterOp> ops(2, CounterOp::Inc("inline_key", 1, Consistency::kStrict));
  auto batch = d.daemon().NewClient("", 5s)->Batch(ops);
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 2u);
  EXPECT_EQ(d.Value("distkit_redis_inline_commands_total"), after) << "a Batch is never inline";
  v1::GetResponse value;
  ASSERT_TRUE(d.daemon().CounterGet("inline_key", v1::CONSISTENCY_STRICT, &value).ok());
  EXPECT_EQ(value.value(), 22);
  EXPECT_GE(d.Value("distkit_redis_inline_lent_total"), 0) << "exported";
}

TEST(MetricsE2E, BusyMetricsPortIsAStartupErrorNamingTheFlag) {
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis);
  int port = 0;
  const int busy = BindLoopback(true, &port);
  ASSERT_GE(busy, 0);
  auto [code, out] =
      Process::Run(DISTKIT_DAEMON_BIN,
                   {"--listen", "unix:" + redis->dir() + "/busy.sock", "--redis", redis->url(),
                    "--metrics_listen", "127.0.0.1:" + std::to_string(port)},
                   20s);
  close(busy);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("--metrics_listen"), std::string::npos) << out;
  EXPECT_NE(out.find("in use"), std::string::npos) << out;
}

}  // namespace
}  // namespace distkit
