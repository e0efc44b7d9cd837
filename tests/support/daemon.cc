#include "tests/support/daemon.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

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

}  // namespace distkit::testing
