#pragma once

// The real distkitd binary as a child process for end-to-end tests: started on a Unix socket in
// the test Redis' temp dir, waited for (socket file, then grpc.health.v1 SERVING, both polled
// with deadlines), stopped with a signal, its log read, the C++ client to it. Link with
// distkit_test_daemon. (icounter_daemon.h is something else: an in-process daemon, no binary.)

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "distkit/client.h"
#include "distkit/v1/counter.grpc.pb.h"
#include "distkit/v1/instance_counter.grpc.pb.h"
#include "distkit/v1/rate_limit.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/process.h"
#include "tests/support/redis_backend.h"
#include "tests/support/redis_server.h"

namespace distkit::testing {

// A channel for a daemon that may not be listening yet: quick reconnect attempts, but a patient
// handshake. gRPC core uses MIN_RECONNECT_BACKOFF as the deadline of one connection attempt
// (grpc/grpc#12830), and a daemon starved of CPU on a loaded machine may take longer than 50 ms
// to send its SETTINGS frame: a small minimum fails connecting spuriously.
std::shared_ptr<grpc::Channel> FastChannel(const std::string& target);

// grpc.health.v1 Check of `service` ("" = the process) with a 500 ms deadline: 1 SERVING,
// 2 NOT_SERVING, -1 when the call fails.
int HealthStatus(grpc::health::v1::Health::Stub& health, const std::string& service);

// GET http://127.0.0.1:port/path over a raw socket (HTTP/1.0: the server closes when done).
// The body of a 200 answer, nullopt otherwise (not listening yet, error, timeout).
std::optional<std::string> HttpGet(int port, const std::string& path);

class Daemon {
 public:
  // distkitd --listen unix:<redis.dir()>/<name>.sock --redis <redis.url()> --log_level info
  // <extra...> (a standalone RedisServer or a cluster). A failed start fails the test (EXPECT);
  // started() tells.
  Daemon(const RedisBackend& redis, const std::string& name, std::vector<std::string> extra = {});
  // distkitd <args...> exactly (the args must make it listen on unix:<socket>), with `env`
  // ("NAME=value") added to the environment.
  Daemon(std::string socket, std::vector<std::string> args, std::vector<std::string> env);
  ~Daemon() = default;  // SIGKILL if still running (Process)
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  bool started() const { return started_; }
  const std::string& name() const { return name_; }
  const std::string& socket() const { return socket_; }  // the path, without "unix:"
  std::string addr() const { return "unix:" + socket_; }

  // Polls until the socket file exists (up to `timeout`).
  bool WaitSocket(std::chrono::milliseconds timeout = std::chrono::seconds(15));
  // Waits for the socket, connects once (the channel and stubs are kept: a channel created
  // before the socket exists sits in gRPC's reconnect backoff), then polls until `service` is
  // SERVING (up to `timeout` each).
  bool WaitServing(const std::string& service = "distkit.v1.CounterService",
                   std::chrono::milliseconds timeout = std::chrono::seconds(15));
  // grpc.health.v1 status of `service` (see HealthStatus); -1 before WaitServing connected.
  int Health(const std::string& service);

  // Signal, then wait for the exit up to `timeout`: the exit code (128+signal when killed by
  // one), -1 on timeout.
  int Stop(int sig, std::chrono::milliseconds timeout);
  Process& process() { return *process_; }
  std::string Log() const { return process_->Output(); }  // stdout+stderr so far

  // The C++ client (distkit/client.h) over the one channel, 20 s deadline; WaitServing first.
  Client& client() { return *client_; }

  // CounterService calls through client() (deadline `deadline`; Get: 5 s, its value or the
  // call's error).
  grpc::Status CounterInc(const std::string& key, int64_t delta, v1::Consistency c,
                          v1::IncResponse* resp = nullptr,
                          std::chrono::milliseconds deadline = std::chrono::seconds(5));
  grpc::Status CounterGet(const std::string& key, v1::Consistency c, v1::GetResponse* resp);
  // RateLimitService calls through client() with a 10 s deadline (far above any Redis deadline
  // of the tests: only a hang fails it).
  grpc::Status RateLimitInc(const std::string& key, double rate, uint64_t count,
                            v1::Provider provider, v1::Strategy strategy,
                            v1::RateLimitIncResponse* resp);
  grpc::Status RateLimitGet(const std::string& key, v1::Provider provider, v1::Strategy strategy,
                            v1::RateLimitGetResponse* resp);

  // A C++ client of namespace `ns` ("" = the daemon's --namespace) with deadline `deadline`
  // over the one channel; WaitServing first.
  std::unique_ptr<Client> NewClient(const std::string& ns, std::chrono::milliseconds deadline);

 private:
  void Spawn(std::vector<std::string> args, std::vector<std::string> env);

  std::string name_, socket_;
  bool started_ = false;
  std::unique_ptr<Process> process_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::unique_ptr<Client> client_;
};

// The calls of a load test: how many succeeded, failed ("<kind>:<code>" -> count) and hung
// (failed only after their client's whole deadline: a hang in the daemon, not a refusal).
struct CallCounts {
  std::map<std::string, int64_t> errors;
  int64_t ok_calls = 0;
  int64_t hung = 0;

  // Runs `call` (returns an absl::Status; its client's deadline is `deadline`) and counts it.
  template <typename Call>
  absl::Status Count(const std::string& kind, std::chrono::milliseconds deadline, Call call) {
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = call();
    if (s.ok()) {
      ++ok_calls;
    } else {
      ++errors[absl::StrCat(kind, ":", static_cast<int>(s.code()))];
      if (std::chrono::steady_clock::now() - start >= deadline) ++hung;
    }
    return s;
  }
  void Merge(const CallCounts& o) {
    for (const auto& [k, v] : o.errors) errors[k] += v;
    ok_calls += o.ok_calls;
    hung += o.hung;
  }
};

#ifdef DISTKIT_CLI_BIN
// The `distkit` CLI's exit codes (cli/distkit.cc) and one run of it against `d` (10 s at most):
// {exit code, stdout+stderr}. For the targets that define DISTKIT_CLI_BIN.
inline constexpr int kCliExitOk = 0;
inline constexpr int kCliExitCallFailed = 2;
inline constexpr int kCliExitUsage = 64;
inline std::pair<int, std::string> RunCli(const Daemon& d, std::vector<std::string> args) {
  args.insert(args.begin(), {"--addr", d.addr()});
  return Process::Run(DISTKIT_CLI_BIN, args, std::chrono::seconds(10));
}
#endif

}  // namespace distkit::testing
