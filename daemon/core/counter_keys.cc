#include "daemon/core/counter_keys.h"

#include <cstdint>
#include <cstdio>

namespace distkit::core {

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
  std::string out;
  out.reserve(20 + ns.size() + key.size());
  out.append("dk:{").append(HashTag(ns, key)).append("}:c:");
  out.append(ns).append(":").append(key);
  return out;
}

std::string PlainCounterPattern(std::string_view ns) {
  std::string out = "dk:{????????}:c:";
  for (char c : ns) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.append(":*");
  return out;
}

}  // namespace distkit::core
