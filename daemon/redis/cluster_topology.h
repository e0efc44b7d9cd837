#pragma once

// Redis Cluster's pure parts: key slots, the topology replies, redirect errors
// (docs/redis_cluster.md). No I/O; the executor feeds replies in.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/redis/reply.h"

namespace distkit::redis {

inline constexpr int kClusterSlots = 16384;

// The slot of `key`: CRC16 (XMODEM) of its hash tag — the part between the first '{' and the
// next '}' when that part is non-empty — or of the whole key, modulo 16384.
int KeySlot(std::string_view key);

// One primary and the slot ranges it serves.
struct ClusterShard {
  std::string host;
  int port = 0;
  std::vector<std::pair<int, int>> ranges;  // inclusive [first, last]
};

// Parses a `CLUSTER SHARDS` reply (Redis >= 7): the primaries that are online and have slots.
// `tls` picks each node's "tls-port" (falling back to "port").
absl::StatusOr<std::vector<ClusterShard>> ParseClusterShards(const Reply& reply, bool tls);
// Parses a `CLUSTER SLOTS` reply (every version; the first node of each range is the primary).
absl::StatusOr<std::vector<ClusterShard>> ParseClusterSlots(const Reply& reply);

// A `MOVED <slot> <host>:<port>` or `ASK <slot> <host>:<port>` error reply.
struct Redirect {
  bool ask = false;
  int slot = 0;
  std::string host;
  int port = 0;
};
std::optional<Redirect> ParseRedirect(std::string_view error);

// True for "INFO cluster" text that says cluster_enabled:1.
bool InfoSaysClusterEnabled(std::string_view info);

}  // namespace distkit::redis
