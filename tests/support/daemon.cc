#include "tests/support/daemon.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

namespace distkit::testing {

using namespace std::chrono_literals;

std::shared_ptr<grpc::Channel> FastChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5000);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

int HealthStatus(grpc::health::v1::Health::Stub& health, const std::string& service) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 500ms);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  const grpc::Status s = health.Check(&ctx, req, &resp);
  return s.ok() ? static_cast<int>(resp.status()) : -1;
}

Daemon::Daemon(const RedisBackend& redis, const std::string& name, std::vector<std::string> extra)
    : name_(name), socket_(redis.dir() + "/" + name + ".sock") {
  std::vector<std::string> args = {"--listen",  "unix:" + socket_, "--redis",
                                   redis.url(), "--log_level",     "info"};
  args.insert(args.end(), extra.begin(), extra.end());
  Spawn(std::move(args), {});
}

Daemon::Daemon(std::string socket, std::vector<std::string> args, std::vector<std::string> env)
    : name_(socket), socket_(std::move(socket)) {
  Spawn(std::move(args), std::move(env));
}

void Daemon::Spawn(std::vector<std::string> args, std::vector<std::string> env) {
  process_ = std::make_unique<Process>(DISTKIT_DAEMON_BIN, std::move(args), std::move(env));
  started_ = process_->Start();
  EXPECT_TRUE(started_) << "distkitd " << name_ << " did not start";
}

bool Daemon::WaitSocket(std::chrono::milliseconds timeout) {
  struct stat st;
  return PollUntil([&] { return stat(socket_.c_str(), &st) == 0; }, timeout);
}

bool Daemon::WaitServing(const std::string& service, std::chrono::milliseconds timeout) {
  if (!channel_) {
    if (!WaitSocket(timeout)) return false;
    channel_ = FastChannel(addr());
    health_ = grpc::health::v1::Health::NewStub(channel_);
    ClientOptions options;
    options.address = addr();
    options.deadline = std::chrono::seconds(20);
    client_ = Client::FromChannel(channel_, options);
  }
  return PollUntil([&] { return Health(service) == 1; }, timeout);
}

int Daemon::Health(const std::string& service) {
  return health_ ? HealthStatus(*health_, service) : -1;
}

int Daemon::Stop(int sig, std::chrono::milliseconds timeout) {
  process_->Signal(sig);
  return process_->Wait(timeout);
}

// The four call helpers below go through the C++ client (a client per call deadline, on the one
// channel) and hand its typed answer back in the proto shape the tests read.
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  return {static_cast<grpc::StatusCode>(s.code()), std::string(s.message())};
}
Consistency Typed(v1::Consistency c) {
  return c == v1::CONSISTENCY_LAX ? Consistency::kLax : Consistency::kStrict;
}
Provider Typed(v1::Provider p) {
  if (p == v1::PROVIDER_REDIS) return Provider::kRedis;
  if (p == v1::PROVIDER_HYBRID) return Provider::kHybrid;
  return Provider::kLocal;
}
Strategy Typed(v1::Strategy s) {
  return s == v1::STRATEGY_SUPPRESSED ? Strategy::kSuppressed : Strategy::kAbsolute;
}
v1::Decision ToProto(Decision d) {
  switch (d) {
    case Decision::kRejected:
      return v1::DECISION_REJECTED;
    case Decision::kSuppressed:
      return v1::DECISION_SUPPRESSED;
    case Decision::kAllowed:
      break;
  }
  return v1::DECISION_ALLOWED;
}

}  // namespace

std::unique_ptr<Client> Daemon::NewClient(const std::string& ns,
                                          std::chrono::milliseconds deadline) {
  ClientOptions options = client_->options();
  options.ns = ns;
  options.deadline = deadline;
  return Client::FromChannel(channel_, std::move(options));
}

grpc::Status Daemon::CounterInc(const std::string& key, int64_t delta, v1::Consistency c,
                                v1::IncResponse* resp, std::chrono::milliseconds deadline) {
  absl::StatusOr<CounterValue> r = NewClient("", deadline)->Inc(key, delta, Typed(c));
  if (r.ok() && resp != nullptr) {
    resp->set_value(r->value);
    resp->set_previous(r->previous);
    resp->set_applied(r->applied);
  }
  return ToGrpc(r.status());
}

grpc::Status Daemon::CounterGet(const std::string& key, v1::Consistency c, v1::GetResponse* resp) {
  absl::StatusOr<int64_t> r = NewClient("", 5s)->Get(key, Typed(c));
  if (r.ok()) resp->set_value(*r);
  return ToGrpc(r.status());
}

grpc::Status Daemon::RateLimitInc(const std::string& key, double rate, uint64_t count,
                                  v1::Provider provider, v1::Strategy strategy,
                                  v1::RateLimitIncResponse* resp) {
  absl::StatusOr<RateLimitResult> r =
      NewClient("", 10s)->RateLimitInc(key, rate, count, Typed(provider), Typed(strategy));
  if (r.ok()) {
    resp->set_decision(ToProto(r->decision));
    resp->set_allowed(r->allowed);
    resp->set_degraded(r->degraded);
    resp->set_retry_after_ms(r->retry_after_ms);
    resp->set_remaining_after_waiting(r->remaining_after_waiting);
    resp->set_suppression_factor(r->suppression_factor);
  }
  return ToGrpc(r.status());
}

grpc::Status Daemon::RateLimitGet(const std::string& key, v1::Provider provider,
                                  v1::Strategy strategy, v1::RateLimitGetResponse* resp) {
  absl::StatusOr<RateLimitState> r =
      NewClient("", 10s)->RateLimitGet(key, Typed(provider), Typed(strategy));
  if (r.ok()) {
    resp->set_total(r->total);
    resp->set_declined(r->declined);
    resp->set_suppression_factor(r->suppression_factor);
  }
  return ToGrpc(r.status());
}

std::optional<std::string> HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      char buf[16384];
      ssize_t n;
      while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) response.append(buf, n);
    }
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || body == std::string::npos ||
      response.find(" 200 ") > response.find("\r\n")) {
    return std::nullopt;
  }
  return response.substr(body + 4);
}

}  // namespace distkit::testing
