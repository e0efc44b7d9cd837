#pragma once

#include <string>
#include <string_view>

namespace distkit::core {

// Redis key of a plain counter: "dk:{TTTTTTTT}:c:<namespace>:<key>". The hash tag comes first
// (so braces in names cannot disturb it) and is a hash of (namespace, key): one slot per
// counter, and a namespace's counters spread over a Redis Cluster. The names follow literally,
// so operators find a namespace's keys with SCAN. Names contain no ':', so the layout is
// unambiguous and distinct (namespace, key) pairs never share a Redis key.
std::string PlainCounterKey(std::string_view ns, std::string_view key);

// SCAN MATCH pattern for every plain counter of `ns` (glob metacharacters escaped).
std::string PlainCounterPattern(std::string_view ns);

// 8 lowercase hex digits of a stable 32-bit hash of (namespace, key).
std::string HashTag(std::string_view ns, std::string_view key);

}  // namespace distkit::core
