#include "tests/support/redis_cluster.h"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>

#include "tests/support/process.h"
#include "tests/support/redis_process.h"

namespace distkit::testing {
namespace {

using namespace std::chrono_literals;

constexpr auto kStartTimeout = 10s;      // one redis-server answering PING
constexpr auto kCreateTimeout = 60s;     // redis-cli --cluster create / reshard
constexpr auto kFormTimeout = 30s;       // a new cluster agreeing on its map
constexpr auto kFailoverTimeout = 30s;   // node timeout (2 s) + election + agreement
constexpr auto kQueryTimeout = 2000ms;   // one fixture query to one node
constexpr int kNodeTimeoutMs = 2000;     // cluster-node-timeout: failure detection time
constexpr int kMigrateBatch = 100;       // keys per GETKEYSINSLOT / MIGRATE
constexpr int kMigrateTimeoutMs = 5000;  // MIGRATE's own timeout

struct ReplyDeleter {
  void operator()(redisReply* r) const {
    if (r != nullptr) freeReplyObject(r);
  }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

timeval ToTimeval(std::chrono::milliseconds d) {
  return timeval{static_cast<time_t>(d.count() / 1000),
                 static_cast<suseconds_t>((d.count() % 1000) * 1000)};
}

// One command on a fresh short-lived connection; nullptr when the node does not answer.
ReplyPtr Query(int port, const std::vector<std::string>& argv) {
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, ToTimeval(kQueryTimeout));
  if (c == nullptr) return nullptr;
  ReplyPtr reply;
  if (c->err == 0) {
    redisSetTimeout(c, ToTimeval(kQueryTimeout));
    reply.reset(CommandArgv(c, argv));
  }
  redisFree(c);
  return reply;
}

std::string ReplyString(const redisReply* r) {
  if (r == nullptr) return "";
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
      r->type == REDIS_REPLY_ERROR) {
    return std::string(r->str, r->len);
  }
  return "";
}

// A text reply (INFO, CLUSTER NODES) or "" when the node does not answer.
std::string QueryText(int port, const std::vector<std::string>& argv) {
  ReplyPtr r = Query(port, argv);
  return ReplyString(r.get());
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// One CLUSTER SLOTS range: [start, end] served by primary, replicas ascending.
struct SlotRange {
  int start = 0, end = 0;
  int primary = 0;
  std::vector<int> replicas;
};

// CLUSTER SLOTS of the node on `port`, ranges ascending; nullopt when it does not answer.
std::optional<std::vector<SlotRange>> ClusterSlots(int port) {
  ReplyPtr r = Query(port, {"CLUSTER", "SLOTS"});
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY) return std::nullopt;
  std::vector<SlotRange> ranges;
  for (size_t i = 0; i < r->elements; ++i) {
    const redisReply* e = r->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3) return std::nullopt;
    SlotRange range;
    range.start = static_cast<int>(e->element[0]->integer);
    range.end = static_cast<int>(e->element[1]->integer);
    for (size_t j = 2; j < e->elements; ++j) {
      const redisReply* node = e->element[j];
      if (node->type != REDIS_REPLY_ARRAY || node->elements < 2) return std::nullopt;
      int node_port = static_cast<int>(node->element[1]->integer);
      if (j == 2) {
        range.primary = node_port;
      } else {
        range.replicas.push_back(node_port);
      }
    }
    std::sort(range.replicas.begin(), range.replicas.end());
    ranges.push_back(std::move(range));
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const SlotRange& a, const SlotRange& b) { return a.start < b.start; });
  return ranges;
}

std::string Describe(const std::vector<SlotRange>& ranges) {
  std::string out;
  for (const auto& r : ranges) {
    out += std::to_string(r.start) + "-" + std::to_string(r.end) + ":" + std::to_string(r.primary);
    for (int p : r.replicas) out += "/" + std::to_string(p);
    out += " ";
  }
  return out;
}

// One CLUSTER NODES line.
struct NodeLine {
  std::string id;
  int port = 0;
  std::string flags;
  std::string master_id;  // "-" for primaries
  bool has_slots = false;
};

std::vector<NodeLine> ClusterNodes(int port) {
  std::vector<NodeLine> nodes;
  std::stringstream lines(QueryText(port, {"CLUSTER", "NODES"}));
  std::string line;
  while (std::getline(lines, line)) {
    std::stringstream fields(line);
    std::vector<std::string> f;
    std::string field;
    while (fields >> field) f.push_back(field);
    if (f.size() < 8) continue;
    NodeLine n;
    n.id = f[0];
    size_t colon = f[1].rfind(':', f[1].find('@'));
    if (colon == std::string::npos) continue;
    n.port = std::atoi(f[1].c_str() + colon + 1);
    n.flags = f[2];
    n.master_id = f[3];
    n.has_slots = f.size() > 8;
    nodes.push_back(std::move(n));
  }
  return nodes;
}

bool IsFailed(const NodeLine& n) {
  return Contains(n.flags, "fail") || Contains(n.flags, "noaddr") || Contains(n.flags, "handshake");
}

}  // namespace

int RedisCluster::KeySlot(std::string_view key) {
  size_t open = key.find('{');
  if (open != std::string_view::npos) {
    size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  uint16_t crc = 0;  // CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection
  for (char ch : key) {
    crc ^= static_cast<uint16_t>(static_cast<uint8_t>(ch)) << 8;
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) != 0 ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                                : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc % kSlots;
}

std::unique_ptr<RedisCluster> RedisCluster::Start(Options options) {
  // Nodes are killed under open connections; see RedisServer::Start.
  signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<RedisCluster> cluster(new RedisCluster());
  cluster->options_ = std::move(options);
  cluster->dir_ = MakeTempDir("distkit-cluster");
  if (cluster->dir_.empty()) return nullptr;
  const int n = cluster->options_.primaries * (1 + cluster->options_.replicas_per_primary);
  if (cluster->options_.primaries < 1 || cluster->options_.replicas_per_primary < 0 || n > 64) {
    ADD_FAILURE() << "RedisCluster: bad Options (primaries " << cluster->options_.primaries
                  << ", replicas_per_primary " << cluster->options_.replicas_per_primary << ")";
    return nullptr;
  }
  if (cluster->options_.tls) {
    auto certs = TlsCerts::Generate(cluster->dir_);
    if (!certs) return nullptr;
    cluster->certs_ = std::move(*certs);
  }
  cluster->nodes_.resize(n);
  for (auto& node : cluster->nodes_) {
    std::string error;
    if (!cluster->Launch(&node, &error)) {
      ADD_FAILURE() << "redis-server (cluster node) did not start: " << error << "\n"
                    << cluster->AllLogTails();
      return nullptr;
    }
  }
  std::string error;
  if (!cluster->Create(&error)) {
    ADD_FAILURE() << "redis-cli --cluster create failed: " << error << "\n"
                  << cluster->AllLogTails();
    return nullptr;
  }
  for (auto& node : cluster->nodes_) {
    node.id = QueryText(node.port, {"CLUSTER", "MYID"});
    if (node.id.size() != 40) {
      ADD_FAILURE() << "CLUSTER MYID on " << node.port << ": '" << node.id << "'";
      return nullptr;
    }
  }
  if (!cluster->WaitAgreedWith(cluster->options_.replicas_per_primary, kFormTimeout)) {
    return nullptr;
  }
  return cluster;
}

RedisCluster::~RedisCluster() {
  for (auto& node : nodes_) {
    KillAndReap(node.pid);
    node.pid = -1;
  }
  if (::testing::Test::HasFailure() && !dir_.empty()) std::cerr << AllLogTails();
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

bool RedisCluster::Launch(Node* node, std::string* error) {
  const bool fixed_ports = node->port != 0;  // a restart keeps its ports (and nodes.conf)
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (!fixed_ports) {
      // Distinct from every other node's ports: FreePort may hand out a port twice in a row.
      std::set<int> taken;
      for (const auto& other : nodes_) {
        if (&other != node) taken.insert({other.port, other.bus_port, other.tls_port});
      }
      node->port = node->bus_port = node->tls_port = 0;
      std::vector<int*> wanted = {&node->port, &node->bus_port};
      if (options_.tls) wanted.push_back(&node->tls_port);
      for (int* want : wanted) {
        for (int i = 0; i < 20 && *want == 0; ++i) {
          int p = FreePort();
          if (p != 0 && taken.insert(p).second) *want = p;
        }
        if (*want == 0) {
          *error = "no free TCP ports";
          return false;
        }
      }
    }
    const std::string port = std::to_string(node->port);
    // clang-format off
    std::vector<std::string> args = {DISTKIT_REDIS_SERVER,
        "--port", port,
        "--bind", "127.0.0.1",
        "--cluster-enabled", "yes",
        "--cluster-port", std::to_string(node->bus_port),
        "--cluster-config-file", "nodes-" + port + ".conf",
        "--cluster-node-timeout", std::to_string(kNodeTimeoutMs),
        "--cluster-require-full-coverage", "no",
        // A replica may always take over, however long it was cut off: tests kill primaries.
        "--cluster-replica-validity-factor", "0",
        "--appendonly", "no",
        "--save", "",
        "--dbfilename", "dump-" + port + ".rdb",  // replicas write an RDB when they sync
        // A primary sends its first diskless RDB to a new replica at once, not after 5 s.
        "--repl-diskless-sync-delay", "0",
        // CLUSTER SLOTS lists a replica only once its replication offset is not 0, and on an idle
        // primary only the primary's PINGs to its replicas move it: every second, not every 10 s.
        "--repl-ping-replica-period", "1",
        "--daemonize", "no",
        "--dir", dir_,
        "--enable-debug-command", "local"};
    // clang-format on
    if (options_.tls) {
      // clang-format off
      args.insert(args.end(), {"--tls-port", std::to_string(node->tls_port),
                               "--tls-cert-file", certs_.server_cert,
                               "--tls-key-file", certs_.server_key,
                               "--tls-ca-cert-file", certs_.ca_cert,
                               "--tls-auth-clients", options_.tls_auth_clients ? "yes" : "no",
                               "--tls-cluster", "yes",
                               "--tls-replication", "yes"});
      // clang-format on
    }
    args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
    node->pid = SpawnLogged(args, dir_ + "/node-" + port + ".log", error);
    if (node->pid < 0) return false;
    bool exited = false;
    bool up = PollUntil(
        [&] {
          if (ChildExited(node->pid)) {
            exited = true;
            return true;
          }
          return PingTcp(node->port, 200ms);
        },
        kStartTimeout);
    if (up && !exited) return true;
    if (!exited) KillAndReap(node->pid);
    node->pid = -1;
    *error = exited ? "redis-server on port " + port + " exited during start-up"
                    : "redis-server on port " + port + ": no PONG within 10 s";
    if (fixed_ports) return false;
  }
  return false;
}

bool RedisCluster::Create(std::string* error) {
  std::vector<std::string> args = {"--cluster", "create"};
  for (const auto& node : nodes_) args.push_back("127.0.0.1:" + std::to_string(node.port));
  args.insert(args.end(), {"--cluster-replicas", std::to_string(options_.replicas_per_primary),
                           "--cluster-yes"});
  auto [code, output] = Process::Run(DISTKIT_REDIS_CLI, args, kCreateTimeout);
  if (code != 0) {
    *error = "exit " + std::to_string(code) + ":\n" + output;
    return false;
  }
  return true;
}

std::string RedisCluster::Disagreement(int min_replicas_per_primary) const {
  std::optional<std::vector<SlotRange>> first;
  int first_port = 0;
  std::set<int> running;
  for (const auto& node : nodes_) {
    if (node.pid > 0) running.insert(node.port);
  }
  for (int port : running) {
    std::string info = QueryText(port, {"CLUSTER", "INFO"});
    if (!Contains(info, "cluster_state:ok")) {
      return std::to_string(port) + " is not cluster_state:ok";
    }
    auto slots = ClusterSlots(port);
    if (!slots) return std::to_string(port) + " does not answer CLUSTER SLOTS";
    if (!first) {
      first = std::move(slots);
      first_port = port;
    } else if (Describe(*slots) != Describe(*first)) {
      return "slot maps differ: " + std::to_string(first_port) + " says " + Describe(*first) +
             "; " + std::to_string(port) + " says " + Describe(*slots);
    }
  }
  if (!first) return "no node is running";
  int covered = 0;
  std::set<int> replicas_in_map;
  for (const auto& r : *first) {
    covered += r.end - r.start + 1;
    if (running.count(r.primary) == 0) {
      return "slots " + std::to_string(r.start) + "-" + std::to_string(r.end) +
             " are served by stopped node " + std::to_string(r.primary);
    }
    if (static_cast<int>(r.replicas.size()) < min_replicas_per_primary) {
      return std::to_string(r.primary) + " has too few replicas: " + Describe(*first);
    }
    replicas_in_map.insert(r.replicas.begin(), r.replicas.end());
  }
  if (covered != kSlots) return "only " + std::to_string(covered) + " slots are served";
  for (int port : running) {
    std::string repl = QueryText(port, {"INFO", "replication"});
    if (!Contains(repl, "role:slave")) continue;
    if (!Contains(repl, "master_link_status:up")) {
      return "replica " + std::to_string(port) + " has its link to its primary down";
    }
    if (replicas_in_map.count(port) == 0) {
      return "replica " + std::to_string(port) + " is not in the map " + Describe(*first);
    }
  }
  return "";
}

bool RedisCluster::WaitAgreedWith(int min_replicas_per_primary, std::chrono::milliseconds timeout) {
  std::string why;
  bool agreed = PollUntil(
      [&] {
        why = Disagreement(min_replicas_per_primary);
        return why.empty();
      },
      timeout);
  if (!agreed) {
    ADD_FAILURE() << "Redis Cluster did not agree within " << timeout.count() << " ms: " << why
                  << "\n"
                  << AllLogTails();
  }
  return agreed;
}

bool RedisCluster::WaitAgreed(std::chrono::milliseconds timeout) {
  return WaitAgreedWith(0, timeout);
}

std::vector<int> RedisCluster::ports() const {
  std::vector<int> out;
  for (const auto& node : nodes_) out.push_back(node.port);
  return out;
}

int RedisCluster::AnyRunningPort() const {
  for (const auto& node : nodes_) {
    if (node.pid > 0) return node.port;
  }
  return 0;
}

std::vector<int> RedisCluster::primary_ports() const {
  std::vector<int> out;
  for (const auto& n : ClusterNodes(AnyRunningPort())) {
    if (Contains(n.flags, "master") && !IsFailed(n) && n.has_slots) out.push_back(n.port);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int> RedisCluster::ReplicasOf(int primary_port) const {
  const std::string id = NodeId(primary_port);
  std::vector<int> out;
  for (const auto& n : ClusterNodes(AnyRunningPort())) {
    if (Contains(n.flags, "slave") && !IsFailed(n) && n.master_id == id && Running(n.port)) {
      out.push_back(n.port);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

int RedisCluster::PortOfSlot(int slot) const {
  auto slots = ClusterSlots(AnyRunningPort());
  if (!slots) return 0;
  for (const auto& r : *slots) {
    if (slot >= r.start && slot <= r.end) return r.primary;
  }
  return 0;
}

std::vector<int> RedisCluster::SlotsOf(int primary_port) const {
  std::vector<int> out;
  auto slots = ClusterSlots(AnyRunningPort());
  if (!slots) return out;
  for (const auto& r : *slots) {
    if (r.primary != primary_port) continue;
    for (int s = r.start; s <= r.end; ++s) out.push_back(s);
  }
  return out;
}

std::string RedisCluster::seeds_url() const {
  std::string out;
  for (int port : primary_ports()) {
    if (!out.empty()) out += ",";
    out += "redis://127.0.0.1:" + std::to_string(port);
  }
  return out;
}

std::string RedisCluster::tls_seeds_url() const {
  std::string out;
  for (int port : primary_ports()) {
    if (!out.empty()) out += ",";
    out += "rediss://127.0.0.1:" + std::to_string(TlsPortOf(port));
  }
  return out;
}

int RedisCluster::TlsPortOf(int port) const {
  const Node* node = FindNode(port);
  return node != nullptr ? node->tls_port : 0;
}

std::string RedisCluster::NodeId(int port) const {
  const Node* node = FindNode(port);
  return node != nullptr ? node->id : "";
}

bool RedisCluster::Running(int port) const {
  const Node* node = FindNode(port);
  return node != nullptr && node->pid > 0;
}

RedisCluster::Node* RedisCluster::FindNode(int port) {
  for (auto& node : nodes_) {
    if (node.port == port) return &node;
  }
  return nullptr;
}

const RedisCluster::Node* RedisCluster::FindNode(int port) const {
  return const_cast<RedisCluster*>(this)->FindNode(port);
}

std::string RedisCluster::Command(int port, const std::vector<std::string>& argv) const {
  return TcpCommand(port, argv);
}

bool RedisCluster::Failover(int replica_port) {
  std::string reply = Command(replica_port, {"CLUSTER", "FAILOVER"});
  if (reply != "OK") {
    ADD_FAILURE() << "CLUSTER FAILOVER on " << replica_port << ": " << reply;
    return false;
  }
  if (!PollUntil(
          [&] {
            return Contains(QueryText(replica_port, {"INFO", "replication"}), "role:master");
          },
          kFailoverTimeout)) {
    ADD_FAILURE() << "after CLUSTER FAILOVER, " << replica_port << " is not a primary\n"
                  << AllLogTails();
    return false;
  }
  return WaitAgreed(kFailoverTimeout);
}

void RedisCluster::StopNode(int port) {
  Node* node = FindNode(port);
  if (node == nullptr || node->pid <= 0) return;
  KillAndReap(node->pid);
  node->pid = -1;
}

int RedisCluster::KillPrimary(int port) {
  const std::vector<int> replicas = ReplicasOf(port);
  if (replicas.empty()) {
    ADD_FAILURE() << "KillPrimary(" << port << "): not a primary with a live replica";
    return 0;
  }
  StopNode(port);
  int promoted = 0;
  bool ok = PollUntil(
      [&] {
        for (int r : replicas) {
          if (Contains(QueryText(r, {"INFO", "replication"}), "role:master")) {
            promoted = r;
            return true;
          }
        }
        return false;
      },
      kFailoverTimeout);
  if (!ok) {
    ADD_FAILURE() << "no replica of killed primary " << port << " was promoted\n" << AllLogTails();
    return 0;
  }
  return WaitAgreed(kFailoverTimeout) ? promoted : 0;
}

bool RedisCluster::RestartNode(int port) {
  Node* node = FindNode(port);
  if (node == nullptr) {
    ADD_FAILURE() << "RestartNode: no node on port " << port;
    return false;
  }
  StopNode(port);
  std::string error;
  if (!Launch(node, &error)) {
    ADD_FAILURE() << "node " << port << " did not restart: " << error << "\n" << LogTail(port);
    return false;
  }
  return WaitAgreed(kFailoverTimeout);
}

bool RedisCluster::BeginMigration(int slot, int from, int to) {
  const std::string s = std::to_string(slot);
  std::string a = Command(to, {"CLUSTER", "SETSLOT", s, "IMPORTING", NodeId(from)});
  std::string b =
      a == "OK" ? Command(from, {"CLUSTER", "SETSLOT", s, "MIGRATING", NodeId(to)}) : "(not sent)";
  if (a != "OK" || b != "OK") {
    ADD_FAILURE() << "BeginMigration(" << slot << ", " << from << ", " << to
                  << "): IMPORTING: " << a << "; MIGRATING: " << b;
    return false;
  }
  return true;
}

bool RedisCluster::FinishMigration(int slot, int from, int to) {
  const std::string s = std::to_string(slot);
  // Bounded: a slot holds finitely many keys, and each round moves up to kMigrateBatch of them.
  for (int round = 0; round < 100000; ++round) {
    ReplyPtr keys = Query(from, {"CLUSTER", "GETKEYSINSLOT", s, std::to_string(kMigrateBatch)});
    if (keys == nullptr || keys->type != REDIS_REPLY_ARRAY) {
      ADD_FAILURE() << "CLUSTER GETKEYSINSLOT " << s << " on " << from << ": "
                    << (keys ? FormatReply(keys.get()) : "no answer");
      return false;
    }
    if (keys->elements == 0) break;
    // With tls-cluster, MIGRATE connects with TLS: to the target's TLS port.
    const int target = options_.tls ? TlsPortOf(to) : to;
    std::vector<std::string> migrate = {"MIGRATE", "127.0.0.1", std::to_string(target),
                                        "",        "0",         std::to_string(kMigrateTimeoutMs),
                                        "KEYS"};
    for (size_t i = 0; i < keys->elements; ++i) migrate.push_back(ReplyString(keys->element[i]));
    std::string reply = Command(from, migrate);
    if (reply != "OK") {
      ADD_FAILURE() << "MIGRATE of slot " << s << " from " << from << " to " << to << ": " << reply;
      return false;
    }
  }
  // The target first (it bumps its epoch and owns the slot), then the source, then every other
  // primary, as the Redis Cluster specification's resharding steps say.
  std::vector<int> order = {to, from};
  for (int p : primary_ports()) {
    if (p != to && p != from) order.push_back(p);
  }
  for (int p : order) {
    std::string reply = Command(p, {"CLUSTER", "SETSLOT", s, "NODE", NodeId(to)});
    if (reply != "OK") {
      ADD_FAILURE() << "CLUSTER SETSLOT " << s << " NODE on " << p << ": " << reply;
      return false;
    }
  }
  return WaitAgreed();
}

bool RedisCluster::MigrateSlot(int slot, int from, int to) {
  return BeginMigration(slot, from, to) && FinishMigration(slot, from, to);
}

bool RedisCluster::Reshard(int n_slots, int from, int to) {
  auto [code, output] = Process::Run(
      DISTKIT_REDIS_CLI,
      {"--cluster", "reshard", "127.0.0.1:" + std::to_string(from), "--cluster-from", NodeId(from),
       "--cluster-to", NodeId(to), "--cluster-slots", std::to_string(n_slots), "--cluster-yes"},
      kCreateTimeout);
  if (code != 0) {
    ADD_FAILURE() << "redis-cli --cluster reshard exited " << code << ":\n" << output;
    return false;
  }
  return WaitAgreed();
}

std::string RedisCluster::LogTail(int port) const {
  return FileTail(dir_ + "/node-" + std::to_string(port) + ".log");
}

std::string RedisCluster::AllLogTails() const {
  std::string out;
  for (const auto& node : nodes_) {
    if (node.port == 0) continue;
    out += "[redis cluster node " + std::to_string(node.port) + " log, " + dir_ + "]\n" +
           FileTail(dir_ + "/node-" + std::to_string(node.port) + ".log", 800) + "\n";
  }
  return out;
}

}  // namespace distkit::testing
