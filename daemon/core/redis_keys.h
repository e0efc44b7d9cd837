#pragma once

// Every Redis key the daemon writes, in one place (the scripts in lua/ receive them as KEYS).
//
// Per-name data lives in "dk:{TTTTTTTT}:<kind>:<namespace>:<key>". The hash tag comes first (so
// braces in names cannot disturb it) and is a hash of (namespace, key): one slot per name, and a
// namespace's names spread over a Redis Cluster. The names follow literally, so operators find a
// namespace's keys with SCAN. Names contain no ':', so the layout is unambiguous and distinct
// (namespace, key) pairs never share a Redis key. Kinds:
//   c        plain counter (docs/architecture.md)
//   i        instance-aware counter (docs/instance_counters.md)
//   r:<a|s>  REDIS rate limit, per strategy (docs/rate_limiting.md)
//   rh:<a|s> HYBRID rate limit, per strategy
// Instance liveness (lua/liveness.lua) and an instance's own bookkeeping share a slot each:
//   dk:{live}:instances, dk:{live}:incarnations, dk:{I:<id>:<inc>}:namespaces|keys:<ns>.

#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/core/rate_limit.h"

namespace distkit::core {

// 8 lowercase hex digits of a stable 32-bit hash of (namespace, key).
std::string HashTag(std::string_view ns, std::string_view key);

// "dk:{TTTTTTTT}:c:<namespace>:<key>", and the SCAN MATCH pattern of every plain counter of `ns`
// (glob metacharacters escaped).
std::string PlainCounterKey(std::string_view ns, std::string_view key);
std::string PlainCounterPattern(std::string_view ns);

// "dk:{TTTTTTTT}:i:<namespace>:<key>", and the SCAN MATCH pattern of a namespace's.
std::string InstanceCounterKey(std::string_view ns, std::string_view key);
std::string InstanceCounterPattern(std::string_view ns);

// "dk:{TTTTTTTT}:r:<a|s>:<namespace>:<key>" (SCAN MATCH 'dk:{*}:r:?:<ns>:*' finds a namespace's).
std::string RedisRateLimitKey(std::string_view ns, std::string_view key, RateStrategy strategy);
// "dk:{TTTTTTTT}:rh:<a|s>:<namespace>:<key>".
std::string HybridRateLimitKey(std::string_view ns, std::string_view key, RateStrategy strategy);

// Liveness registry: ZSET id -> last heartbeat (Redis ms), and HASH id -> incarnation.
inline constexpr char kLiveInstancesKey[] = "dk:{live}:instances";
inline constexpr char kLiveIncarnationsKey[] = "dk:{live}:incarnations";

// An incarnation's SET of the namespaces it touched: "dk:{I:<id>:<inc>}:namespaces".
std::string InstanceNamespaceSet(std::string_view id, std::string_view incarnation);
std::string InstanceNamespaceSet(std::string_view id, int64_t incarnation);
// An incarnation's SET of its keys in `ns`: "dk:{I:<id>:<inc>}:keys:<ns>".
std::string InstanceKeySet(std::string_view id, std::string_view incarnation, std::string_view ns);
std::string InstanceKeySet(std::string_view id, int64_t incarnation, std::string_view ns);

}  // namespace distkit::core
