#pragma once

// An in-process distkit daemon for InstanceCounterService tests (header-only): the daemon's App
// (daemon/app.h) serving on a Unix socket with a fresh instance id, against a real
// redis-server, with a distkit::Client to it. The call helpers (R, Inc, Get, ...) come from
// icounter_client.h. Link with distkit_app and distkit_client.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "daemon/app.h"
#include "daemon/config/config.h"
#include "daemon/redis/redis_url.h"
#include "distkit/client.h"
#include "distkit/v1/instance_counter.grpc.pb.h"
#include "tests/support/icounter_client.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit::testing {

class ICounterDaemon {
 public:
  // `flush_interval_ms`: the LAX flush period (a huge value: LAX work reaches Redis only with a
  // STRICT call on its key, or at shutdown).
  ICounterDaemon(const RedisServer& redis, const std::string& socket, int64_t threshold_ms,
                 int64_t flush_interval_ms = 20) {
    using namespace std::chrono_literals;
    config::Config config;
    config.listen = {"unix:" + socket};
    config.redis_seeds = {*redis::ParseRedisUrl(redis.url())};
    config.redis_timeout_ms = 2000;
    config.dead_instance_threshold_ms = threshold_ms;
    config.flush_interval_ms = flush_interval_ms;
    auto app = App::Create(config);
    EXPECT_TRUE(app.ok()) << app.status();
    app_ = *std::move(app);
    EXPECT_TRUE(PollUntil([&] { return app_->executor().Healthy(); }, 10s));
    auto channel = grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
    stub_ = v1::InstanceCounterService::NewStub(channel);
    ClientOptions options;
    options.address = "unix:" + socket;
    client_ = Client::FromChannel(channel, options);
  }
  ~ICounterDaemon() {
    if (killed_) {
      app_->Abandon();
    } else {
      app_->Shutdown(std::chrono::seconds(4));
    }
  }
  ICounterDaemon(const ICounterDaemon&) = delete;
  ICounterDaemon& operator=(const ICounterDaemon&) = delete;

  // The destructor then stops the daemon without deregistering (as if it were killed): its
  // slices stay until a reaper removes them.
  void MarkKilled() { killed_ = true; }
  core::InstanceCounters& icounters() { return app_->instance_counters(); }
  const std::string& id() const { return app_->config().instance_id; }
  // The raw stub, for tests of the wire itself (a batch op without an operation, ...).
  v1::InstanceCounterService::Stub* stub() { return stub_.get(); }
  Client& client() { return *client_; }  // icounter_client.h

 private:
  bool killed_ = false;
  std::unique_ptr<App> app_;
  std::unique_ptr<v1::InstanceCounterService::Stub> stub_;
  std::unique_ptr<Client> client_;
};

}  // namespace distkit::testing
