// Redis replies as the daemon parses them: RESP bytes decoded by hiredis' reader, then each reply
// through counter.lua's reply parser, the CLUSTER SHARDS / CLUSTER SLOTS parsers, the error
// mapping, the script status names and DebugString. Every outcome must be a value or a status.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "daemon/core/counter_script.h"
#include "daemon/core/script_status.h"
#include "daemon/redis/cluster_topology.h"
#include "daemon/redis/reply.h"
#include "fuzz/resp.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace redis = distkit::redis;
  namespace core = distkit::core;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  for (const redis::Reply& reply : distkit::fuzz::DecodeReplies(in)) {
    (void)reply.DebugString();
    if (reply.is_error()) {
      const absl::Status s = redis::RedisErrorStatus(reply.str);
      Check(!s.ok());
      (void)redis::ParseRedirect(reply.str);
    }
    if (reply.type == redis::Reply::Type::kString || reply.type == redis::Reply::Type::kStatus) {
      (void)core::ScriptStatusName(core::ParseScriptStatus(reply.str));
      (void)redis::InfoSaysClusterEnabled(reply.str);
    }
    if (auto parsed = core::ParseScriptReply(reply); parsed.ok()) {
      (void)core::ScriptStatusName(parsed->status);
    }
    for (bool tls : {false, true}) {
      if (auto shards = redis::ParseClusterShards(reply, tls); shards.ok()) {
        for (const auto& shard : *shards) {
          for (const auto& [first, last] : shard.ranges) {
            Check(first >= 0 && first <= last && last < redis::kClusterSlots);
          }
        }
      }
    }
    if (auto shards = redis::ParseClusterSlots(reply); shards.ok()) {
      for (const auto& shard : *shards) {
        for (const auto& [first, last] : shard.ranges) {
          Check(first >= 0 && first <= last && last < redis::kClusterSlots);
        }
      }
    }
  }
  return 0;
}
