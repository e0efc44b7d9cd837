#pragma once

// An in-process distkit daemon for InstanceCounterService tests (header-only): its own Redis
// executor, plain and instance-aware counters and a gRPC server on a Unix socket, with a fresh
// instance id, against a real redis-server. The call helpers (R, Inc, Get, ...) come from
// icounter_client.h. Link with distkit_transport and distkit_client.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "daemon/config/config.h"
#include "daemon/core/counters.h"
#include "daemon/core/instance_counters.h"
#include "daemon/redis/executor.h"
#include "daemon/redis/redis_url.h"
#include "daemon/transport/server.h"
#include "distkit/v1/instance_counter.grpc.pb.h"
#include "tests/support/icounter_client.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace distkit::testing {

class ICounterDaemon {
 public:
  // `flush_interval_ms`: the LAX flush period of the instance-aware counters (a huge value:
  // LAX work reaches Redis only with a STRICT call on its key, or at shutdown).
  ICounterDaemon(const RedisServer& redis, const std::string& socket, int64_t threshold_ms,
                 int64_t flush_interval_ms = 20) {
    using namespace std::chrono_literals;
    config_.listen = {"unix:" + socket};
    config_.redis = redis.url();
    redis::ExecutorOptions eo;
    eo.endpoint = *redis::ParseRedisUrl(redis.url());
    eo.command_timeout = 2000ms;
    executor_ = std::make_unique<redis::Executor>(eo);
    executor_->Start();
    EXPECT_TRUE(PollUntil([&] { return executor_->Healthy(); }, 10s));
    core::CountersOptions co;
    co.dedup_id = config::NewUuidV4();
    counters_ = std::make_unique<core::Counters>(executor_.get(), co);
    counters_->Start();
    core::InstanceCountersOptions io;
    io.instance_id = config::NewUuidV4();
    io.dedup_id = co.dedup_id;
    io.dead_instance_threshold_ms = threshold_ms;
    io.flush_interval_ms = flush_interval_ms;
    icounters_ = std::make_unique<core::InstanceCounters>(executor_.get(), io);
    EXPECT_TRUE(icounters_->Start(2s).ok());
    auto server = transport::Server::Start(config_, counters_.get(), executor_.get(), nullptr,
                                           icounters_.get());
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    stub_ = v1::InstanceCounterService::NewStub(
        grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
  }
  ~ICounterDaemon() {
    using namespace std::chrono_literals;
    server_->Shutdown(std::chrono::system_clock::now() + 1s);
    counters_->Shutdown(2s);
    if (killed_) {
      icounters_->StopWithoutDeregistering();
    } else {
      icounters_->Shutdown(2s);
    }
    executor_->Stop();
  }
  ICounterDaemon(const ICounterDaemon&) = delete;
  ICounterDaemon& operator=(const ICounterDaemon&) = delete;

  // The destructor then stops the daemon without deregistering (as if it were killed): its
  // slices stay until a reaper removes them.
  void MarkKilled() { killed_ = true; }
  core::InstanceCounters& icounters() { return *icounters_; }
  const std::string& id() const { return icounters_->instance_id(); }
  v1::InstanceCounterService::Stub* stub() { return stub_.get(); }

 private:
  bool killed_ = false;
  config::Config config_;
  std::unique_ptr<redis::Executor> executor_;
  std::unique_ptr<core::Counters> counters_;
  std::unique_ptr<core::InstanceCounters> icounters_;
  std::unique_ptr<transport::Server> server_;
  std::unique_ptr<v1::InstanceCounterService::Stub> stub_;
};

}  // namespace distkit::testing
