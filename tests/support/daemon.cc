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
    counters_ = v1::CounterService::NewStub(channel_);
    icounters_ = v1::InstanceCounterService::NewStub(channel_);
    ratelimit_ = v1::RateLimitService::NewStub(channel_);
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

grpc::Status Daemon::CounterInc(const std::string& key, int64_t delta, v1::Consistency c,
                                v1::IncResponse* resp, std::chrono::milliseconds deadline) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  v1::IncRequest req;
  req.set_key(key);
  req.set_delta(delta);
  req.set_consistency(c);
  v1::IncResponse local;
  return counters_->Inc(&ctx, req, resp != nullptr ? resp : &local);
}

grpc::Status Daemon::CounterGet(const std::string& key, v1::Consistency c, v1::GetResponse* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  v1::GetRequest req;
  req.set_key(key);
  req.set_consistency(c);
  return counters_->Get(&ctx, req, resp);
}

grpc::Status Daemon::RateLimitInc(const std::string& key, double rate, uint64_t count,
                                  v1::Provider provider, v1::Strategy strategy,
                                  v1::RateLimitIncResponse* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  v1::RateLimitIncRequest req;
  req.set_key(key);
  req.set_rate_per_second(rate);
  req.set_count(count);
  req.set_provider(provider);
  req.set_strategy(strategy);
  return ratelimit_->Inc(&ctx, req, resp);
}

grpc::Status Daemon::RateLimitGet(const std::string& key, v1::Provider provider,
                                  v1::Strategy strategy, v1::RateLimitGetResponse* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  v1::RateLimitGetRequest req;
  req.set_key(key);
  req.set_provider(provider);
  req.set_strategy(strategy);
  return ratelimit_->Get(&ctx, req, resp);
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
