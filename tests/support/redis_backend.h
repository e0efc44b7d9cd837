#pragma once

// The Redis a test runs distkitd against, standalone or a cluster, behind one interface, so one
// e2e test runs on both (TEST_P over kAllBackends) instead of being copied.

#include <gtest/gtest.h>

#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace distkit::testing {

class RedisServer;
class RedisCluster;

// What an e2e test needs from Redis: the --redis value, a directory for daemon sockets, and
// redis-cli-like access that does not care how the keys are spread.
class RedisBackend {
 public:
  virtual ~RedisBackend() = default;
  virtual std::string url() const = 0;  // what distkitd's --redis takes
  virtual std::string dir() const = 0;  // a directory for daemon sockets
  // One command, its reply formatted like RedisServer::Command. Keyed commands (the key is
  // argv[1]) go where a cluster client would send them; keyless ones (KEYS, SCAN, DBSIZE,
  // FLUSHALL, FLUSHDB) cover every key there is.
  virtual std::string Command(const std::vector<std::string>& argv) const = 0;
  virtual std::string name() const = 0;  // "standalone" or "cluster"
};

// A RedisCluster as a RedisBackend: keyed commands go to the current primary of the key's slot
// (no redirect is followed: the tests do not move slots); keyless ones run on every primary and
// the replies are merged (KEYS and SCAN: the keys of all, SCAN's cursor 0 only when every
// primary's is; DBSIZE: the sum; FLUSHALL/FLUSHDB: OK when all say OK).
class ClusterBackend : public RedisBackend {
 public:
  // Starts a cluster of 3 primaries with one replica each; nullptr (and a test failure) when it
  // does not form.
  static std::unique_ptr<ClusterBackend> Start();
  ~ClusterBackend() override;

  std::string url() const override;  // the primaries as seeds
  std::string dir() const override { return socket_dir_; }
  std::string Command(const std::vector<std::string>& argv) const override;
  std::string name() const override { return "cluster"; }
  RedisCluster& cluster() { return *cluster_; }

  // Prepares the cluster for the next test of a suite sharing it: FLUSHALL on every primary
  // and a fresh dir() (no socket left by an earlier test). False (and a test failure) on error.
  bool Reset();

 private:
  explicit ClusterBackend(std::unique_ptr<RedisCluster> cluster);
  std::unique_ptr<RedisCluster> cluster_;
  std::string socket_dir_;
  int tests_ = 0;  // Reset() calls, names the socket dirs
};

enum class Backend { kStandalone, kCluster };
void PrintTo(Backend backend, std::ostream* os);  // "standalone" or "cluster" in test output

// The parameter values and test-name suffixes ("standalone", "cluster") for
// INSTANTIATE_TEST_SUITE_P(Backends, Fixture, kAllBackends, BackendParamName).
inline const auto kAllBackends = ::testing::Values(Backend::kStandalone, Backend::kCluster);
std::string BackendParamName(const ::testing::TestParamInfo<Backend>& info);

// A fixture base for tests parametrised by Backend. Standalone: a fresh RedisServer per test,
// as before. Cluster: one cluster per test suite (starting one costs seconds), started by the
// suite's first test and FLUSHALL'ed before each later one; tests stop only their own daemons,
// never a node. Fixtures overriding SetUp call RedisBackendTest::SetUp() first and return when
// it failed (HasFatalFailure()).
class RedisBackendTest : public ::testing::TestWithParam<Backend> {
 public:
  static void TearDownTestSuite();  // stops the suite's cluster

 protected:
  RedisBackendTest();
  ~RedisBackendTest() override;
  void SetUp() override;

  RedisBackend& redis() { return *backend_; }
  // The standalone server (Pause, Restart, ...): null on the cluster.
  RedisServer* standalone() { return server_.get(); }

 private:
  std::unique_ptr<RedisServer> server_;
  RedisBackend* backend_ = nullptr;
};

}  // namespace distkit::testing
