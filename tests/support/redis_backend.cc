#include "tests/support/redis_backend.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "tests/support/redis_cluster.h"
#include "tests/support/redis_server.h"

namespace distkit::testing {
namespace {

// The suite's shared cluster (gtest runs one test at a time).
std::unique_ptr<ClusterBackend>& SharedCluster() {
  static auto* cluster = new std::unique_ptr<ClusterBackend>();
  return *cluster;
}

}  // namespace

std::unique_ptr<ClusterBackend> ClusterBackend::Start() {
  auto cluster = RedisCluster::Start();
  if (!cluster) return nullptr;
  std::unique_ptr<ClusterBackend> backend(new ClusterBackend(std::move(cluster)));
  if (!backend->Reset()) return nullptr;
  return backend;
}

ClusterBackend::ClusterBackend(std::unique_ptr<RedisCluster> cluster)
    : cluster_(std::move(cluster)) {}

ClusterBackend::~ClusterBackend() = default;

std::string ClusterBackend::url() const { return cluster_->seeds_url(); }

bool ClusterBackend::Reset() {
  const std::string flushed = Command({"FLUSHALL"});
  if (flushed != "OK") {
    ADD_FAILURE() << "FLUSHALL on the cluster: " << flushed;
    return false;
  }
  // Inside the cluster's temp dir, which its destructor removes.
  const std::string dir = cluster_->dir() + "/t" + std::to_string(++tests_);
  if (mkdir(dir.c_str(), 0700) != 0) {
    ADD_FAILURE() << "mkdir(" << dir << "): " << std::strerror(errno);
    return false;
  }
  socket_dir_ = dir;
  return true;
}

std::string ClusterBackend::Command(const std::vector<std::string>& argv) const {
  if (argv.empty()) return "(empty command)";
  const std::string cmd = absl::AsciiStrToUpper(argv[0]);
  const bool keyless = cmd == "KEYS" || cmd == "SCAN" || cmd == "DBSIZE" || cmd == "FLUSHALL" ||
                       cmd == "FLUSHDB" || argv.size() < 2;
  if (!keyless) {
    const int port = cluster_->PortOfSlot(RedisCluster::KeySlot(argv[1]));
    if (port == 0) return "(no primary for the slot of " + argv[1] + ")";
    return cluster_->Command(port, argv);
  }
  const std::vector<int> primaries = cluster_->primary_ports();
  if (primaries.empty()) return "(no primary)";
  std::vector<std::string> replies;
  for (int port : primaries) replies.push_back(cluster_->Command(port, argv));
  if (cmd == "KEYS") {
    std::vector<std::string> keys;
    for (const auto& r : replies) {
      if (!r.empty()) keys.push_back(r);
    }
    return absl::StrJoin(keys, ",");
  }
  if (cmd == "SCAN") {
    // Each reply is "cursor,key1,key2,..." ("cursor," when it found none), and so is the result.
    std::string cursor = "0";
    std::vector<std::string> keys;
    for (const auto& r : replies) {
      const size_t comma = r.find(',');
      if (comma == std::string::npos) return absl::StrJoin(replies, ";");  // an error
      if (cursor == "0") cursor = r.substr(0, comma);
      if (comma + 1 < r.size()) keys.push_back(r.substr(comma + 1));
    }
    return cursor + "," + absl::StrJoin(keys, ",");
  }
  if (cmd == "DBSIZE") {
    int64_t sum = 0;
    for (const auto& r : replies) {
      int64_t n = 0;
      if (!absl::SimpleAtoi(r, &n)) return absl::StrJoin(replies, ";");
      sum += n;
    }
    return std::to_string(sum);
  }
  for (const auto& r : replies) {
    if (r != replies.front()) return absl::StrJoin(replies, ";");  // they differ: show all
  }
  return replies.front();
}

void PrintTo(Backend backend, std::ostream* os) {
  *os << (backend == Backend::kStandalone ? "standalone" : "cluster");
}

std::string BackendParamName(const ::testing::TestParamInfo<Backend>& info) {
  return ::testing::PrintToString(info.param);
}

RedisBackendTest::RedisBackendTest() = default;
RedisBackendTest::~RedisBackendTest() = default;

void RedisBackendTest::SetUp() {
  if (GetParam() == Backend::kStandalone) {
    server_ = RedisServer::Start();
    ASSERT_TRUE(server_);
    backend_ = server_.get();
    return;
  }
  std::unique_ptr<ClusterBackend>& shared = SharedCluster();
  if (shared && !shared->Reset()) shared.reset();  // start a new one
  if (!shared) shared = ClusterBackend::Start();
  ASSERT_TRUE(shared);
  backend_ = shared.get();
}

void RedisBackendTest::TearDownTestSuite() { SharedCluster().reset(); }

}  // namespace distkit::testing
