#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/tls_certs.h"

namespace distkit::testing {

// A private Redis Cluster for one test: `primaries` x (1 + `replicas_per_primary`) redis-servers
// on free 127.0.0.1 ports (client and bus port both picked), one temp dir, no persistence, joined
// with `redis-cli --cluster create`. Start() returns once every node reports cluster_state:ok,
// all nodes agree on the slot map and every replica is attached. Never a fixed port.
//
// Ports identify nodes: ports() is fixed for the cluster's life, roles change (Failover,
// KillPrimary). Everything that says "current" asks the cluster, not a cache.
class RedisCluster {
 public:
  static constexpr int kSlots = 16384;

  struct Options {
    int primaries = 3;
    int replicas_per_primary = 1;
    std::vector<std::string> extra_args;  // appended to every redis-server command line
    // Every node also listens with TLS on a free port (TlsPortOf), certificates in dir()
    // (certs()); the cluster bus and replication then run over TLS too. The plain ports stay
    // (the fixture's own queries use them): CLUSTER SLOTS/SHARDS, MOVED and ASK name TLS ports
    // to TLS clients and plain ports to plain ones.
    bool tls = false;
    bool tls_auth_clients = false;  // clients must present a certificate signed by certs().ca_cert
  };
  // Fails the current test (ADD_FAILURE with the node logs) and returns nullptr when the cluster
  // cannot be formed within the start-up deadline.
  static std::unique_ptr<RedisCluster> Start(Options options);
  static std::unique_ptr<RedisCluster> Start() { return Start(Options{}); }
  ~RedisCluster();  // SIGKILLs every node it started (by pid) and removes the temp dir
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  // The cluster slot of a key: CRC16 (XMODEM) of the key, or of its hash tag (the part between
  // the first '{' and the next '}', when not empty), modulo 16384.
  static int KeySlot(std::string_view key);

  std::string dir() const { return dir_; }
  std::vector<int> ports() const;                       // every node, in start order (fixed)
  std::vector<int> primary_ports() const;               // current primaries owning slots, ascending
  std::vector<int> ReplicasOf(int primary_port) const;  // current live replicas, ascending
  int PortOfSlot(int slot) const;                    // current primary of `slot` (0 when unknown)
  std::vector<int> SlotsOf(int primary_port) const;  // the slots it currently serves, ascending
  std::string seeds_url() const;  // "redis://127.0.0.1:<p1>,redis://127.0.0.1:<p2>,..." primaries
  // Options::tls only: "rediss://127.0.0.1:<tls p1>,..." (the current primaries), the TLS port
  // of the node on plain `port` (0 without TLS), and the certificates.
  std::string tls_seeds_url() const;
  int TlsPortOf(int port) const;
  const TlsCerts& certs() const { return certs_; }
  std::string NodeId(int port) const;  // the node's cluster id (fixed)
  bool Running(int port) const;        // not killed by KillPrimary/StopNode

  // One command on a fresh connection to 127.0.0.1:port, formatted like RedisServer::Command
  // (errors as their text, e.g. "MOVED 866 127.0.0.1:40001"; no redirect is followed).
  std::string Command(int port, const std::vector<std::string>& argv) const;

  // Polls until every running node says cluster_state:ok, all of them return the same CLUSTER
  // SLOTS, every slot is served by a running primary and every running replica is listed in the
  // map with its replication link up. Fails the test (and returns false) after `timeout`.
  bool WaitAgreed(std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // CLUSTER FAILOVER on `replica_port`; waits until it is a primary and the map is agreed.
  bool Failover(int replica_port);
  // SIGKILLs the primary on `port` and waits until one of its replicas is promoted and the map
  // is agreed again. Returns the promoted replica's port, 0 on failure.
  int KillPrimary(int port);
  // SIGKILL without waiting for anything.
  void StopNode(int port);
  // Starts a stopped node again on the same ports and nodes.conf (a killed primary comes back
  // as a replica of its successor); waits until the map is agreed.
  bool RestartNode(int port);

  // Moves `slot` (with its keys) from the primary on `from` to the primary on `to`: SETSLOT
  // IMPORTING on `to`, MIGRATING on `from`, MIGRATE of every key, SETSLOT NODE on every primary;
  // waits until the map is agreed.
  bool MigrateSlot(int slot, int from, int to);
  // The two halves of MigrateSlot: after BeginMigration the slot stays MIGRATING on `from` and
  // IMPORTING on `to` (a missing key on `from` answers ASK) until FinishMigration.
  bool BeginMigration(int slot, int from, int to);
  bool FinishMigration(int slot, int from, int to);
  // `redis-cli --cluster reshard`: moves `n_slots` slots from the primary on `from` to the one on
  // `to`; waits until the map is agreed.
  bool Reshard(int n_slots, int from, int to);

  std::string LogTail(int port) const;

 private:
  struct Node {
    int port = 0;
    int bus_port = 0;
    int tls_port = 0;
    pid_t pid = -1;
    std::string id;
  };
  RedisCluster() = default;
  bool Launch(Node* node, std::string* error);  // starts the process, waits for PING
  bool Create(std::string* error);              // redis-cli --cluster create
  // Empty when agreed, else why not (for the failure message).
  std::string Disagreement(int min_replicas_per_primary) const;
  bool WaitAgreedWith(int min_replicas_per_primary, std::chrono::milliseconds timeout);
  Node* FindNode(int port);
  const Node* FindNode(int port) const;
  int AnyRunningPort() const;
  std::string AllLogTails() const;

  Options options_;
  std::string dir_;
  TlsCerts certs_;
  std::vector<Node> nodes_;
};

}  // namespace distkit::testing
