#include "daemon/core/redis_keys.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "daemon/common/strings.h"

namespace distkit::core {
namespace {

// "dk:{TTTTTTTT}:<kind>:<namespace>:<key>"; `kind` has no surrounding colons.
std::string NameKey(std::string_view kind, std::string_view ns, std::string_view key) {
  std::string out;
  out.reserve(17 + kind.size() + ns.size() + key.size());
  out.append("dk:{").append(HashTag(ns, key)).append("}:");
  out.append(kind).append(":");
  out.append(ns).append(":").append(key);
  return out;
}

// SCAN MATCH pattern of every "dk:{TTTTTTTT}:<kind>:<ns>:*" key (glob metacharacters escaped).
std::string NamePattern(std::string_view kind, std::string_view ns) {
  std::string out = "dk:{????????}:";
  out.append(kind).append(":");
  for (char c : ns) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.append(":*");
  return out;
}

std::string_view RateKind(bool hybrid, RateStrategy strategy) {
  const bool s = strategy == RateStrategy::kSuppressed;
  if (hybrid) return s ? "rh:s" : "rh:a";
  return s ? "r:s" : "r:a";
}

}  // namespace

std::string HashTag(std::string_view ns, std::string_view key) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a 64
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ULL;
    }
  };
  mix(ns);
  mix(":");
  mix(key);
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", static_cast<uint32_t>(h ^ (h >> 32)));
  return buf;
}

std::string PlainCounterKey(std::string_view ns, std::string_view key) {
  return NameKey("c", ns, key);
}

std::string PlainCounterPattern(std::string_view ns) { return NamePattern("c", ns); }

std::string InstanceCounterKey(std::string_view ns, std::string_view key) {
  return NameKey("i", ns, key);
}

std::string InstanceCounterPattern(std::string_view ns) { return NamePattern("i", ns); }

std::string RedisRateLimitKey(std::string_view ns, std::string_view key, RateStrategy strategy) {
  return NameKey(RateKind(/*hybrid=*/false, strategy), ns, key);
}

std::string HybridRateLimitKey(std::string_view ns, std::string_view key, RateStrategy strategy) {
  return NameKey(RateKind(/*hybrid=*/true, strategy), ns, key);
}

std::string InstanceNamespaceSet(std::string_view id, std::string_view incarnation) {
  return absl::StrCat("dk:{I:", AbslView(id), ":", AbslView(incarnation), "}:namespaces");
}

std::string InstanceNamespaceSet(std::string_view id, int64_t incarnation) {
  return InstanceNamespaceSet(id, absl::StrCat(incarnation));
}

std::string InstanceKeySet(std::string_view id, std::string_view incarnation, std::string_view ns) {
  return absl::StrCat("dk:{I:", AbslView(id), ":", AbslView(incarnation), "}:keys:", AbslView(ns));
}

std::string InstanceKeySet(std::string_view id, int64_t incarnation, std::string_view ns) {
  return InstanceKeySet(id, absl::StrCat(incarnation), ns);
}

}  // namespace distkit::core
