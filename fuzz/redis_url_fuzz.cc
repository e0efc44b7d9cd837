// Redis URLs and seed lists (--redis), and the other text the Redis layer parses from servers:
// MOVED/ASK redirects, INFO cluster, key slots. The input is the text itself.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/redis/cluster_topology.h"
#include "daemon/redis/redis_url.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace redis = distkit::redis;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  if (auto ep = redis::ParseRedisUrl(in); ep.ok()) {
    const std::string redacted = ep->Redacted();
    // The password never reaches a log line: the redacted text does not depend on it.
    redis::RedisEndpoint other = *ep;
    if (!other.password.empty()) other.password.assign(1, 'x');
    Check(other.Redacted() == redacted);
    Check(ep->is_unix || (ep->port > 0 && ep->port <= 65535));
    // What parsed once parses again from its redacted form's shape when there is no password.
    if (ep->password.empty() && !ep->is_unix) {
      auto again = redis::ParseRedisUrl(redacted);
      Check(again.ok() && again->host == ep->host && again->port == ep->port &&
            again->db == ep->db && again->tls == ep->tls);
    }
  }
  if (auto seeds = redis::ParseRedisSeeds(in); seeds.ok()) {
    Check(!seeds->empty());
    for (const auto& seed : *seeds) (void)seed.Redacted();
  }
  if (auto redirect = redis::ParseRedirect(in)) {
    Check(redirect->slot >= 0 && redirect->slot < redis::kClusterSlots);
  }
  (void)redis::InfoSaysClusterEnabled(in);
  const int slot = redis::KeySlot(in);
  Check(slot >= 0 && slot < redis::kClusterSlots);
  return 0;
}
