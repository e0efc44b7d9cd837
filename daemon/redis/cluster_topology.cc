#include "daemon/redis/cluster_topology.h"

#include <charconv>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daemon/common/strings.h"

namespace distkit::redis {
namespace {

uint16_t Crc16(std::string_view s) {
  uint16_t crc = 0;
  for (const char c : s) {
    crc ^= static_cast<uint16_t>(static_cast<uint8_t>(c)) << 8;
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000) != 0 ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                                : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

absl::Status Bad(std::string_view what, const Reply& reply) {
  return absl::InternalError(
      absl::StrCat("unexpected ", AbslView(what), " reply: ", reply.DebugString()));
}

// An integer element (RESP integer, or a decimal string as some versions send).
std::optional<int64_t> AsInt(const Reply& r) {
  if (r.type == Reply::Type::kInteger) return r.integer;
  int64_t v = 0;
  if ((r.type == Reply::Type::kString || r.type == Reply::Type::kStatus) &&
      absl::SimpleAtoi(AbslView(r.str), &v)) {
    return v;
  }
  return std::nullopt;
}

bool ValidSlot(int64_t s) { return s >= 0 && s < kClusterSlots; }

}  // namespace

int KeySlot(std::string_view key) {
  const size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return Crc16(key) % kClusterSlots;
}

absl::StatusOr<std::vector<ClusterShard>> ParseClusterShards(const Reply& reply, bool tls) {
  if (reply.type != Reply::Type::kArray) return Bad("CLUSTER SHARDS", reply);
  std::vector<ClusterShard> out;
  for (const Reply& shard : reply.elements) {
    if (shard.type != Reply::Type::kArray || shard.elements.size() % 2 != 0) {
      return Bad("CLUSTER SHARDS", reply);
    }
    const Reply* slots = nullptr;
    const Reply* nodes = nullptr;
    for (size_t i = 0; i + 1 < shard.elements.size(); i += 2) {
      if (shard.elements[i].str == "slots") slots = &shard.elements[i + 1];
      if (shard.elements[i].str == "nodes") nodes = &shard.elements[i + 1];
    }
    if (slots == nullptr || nodes == nullptr || slots->elements.size() % 2 != 0) {
      return Bad("CLUSTER SHARDS", reply);
    }
    ClusterShard cs;
    for (size_t i = 0; i + 1 < slots->elements.size(); i += 2) {
      const auto first = AsInt(slots->elements[i]);
      const auto last = AsInt(slots->elements[i + 1]);
      if (!first || !last || !ValidSlot(*first) || !ValidSlot(*last) || *first > *last) {
        return Bad("CLUSTER SHARDS", reply);
      }
      cs.ranges.emplace_back(static_cast<int>(*first), static_cast<int>(*last));
    }
    if (cs.ranges.empty()) continue;
    for (const Reply& node : nodes->elements) {
      std::string ip, endpoint, role, health;
      int64_t port = 0, tls_port = 0;
      for (size_t i = 0; i + 1 < node.elements.size(); i += 2) {
        const std::string& k = node.elements[i].str;
        const Reply& v = node.elements[i + 1];
        if (k == "ip") ip = v.str;
        if (k == "endpoint") endpoint = v.str;
        if (k == "role") role = v.str;
        if (k == "health") health = v.str;
        if (k == "port") port = AsInt(v).value_or(0);
        if (k == "tls-port") tls_port = AsInt(v).value_or(0);
      }
      if (role != "master" || health != "online") continue;
      cs.host = !endpoint.empty() && endpoint != "?" ? endpoint : ip;
      cs.port = static_cast<int>(tls && tls_port > 0 ? tls_port : port);
      if (cs.port <= 0 && tls_port > 0) cs.port = static_cast<int>(tls_port);
      break;
    }
    if (!cs.host.empty() && cs.port > 0) out.push_back(std::move(cs));
  }
  return out;
}

absl::StatusOr<std::vector<ClusterShard>> ParseClusterSlots(const Reply& reply) {
  if (reply.type != Reply::Type::kArray) return Bad("CLUSTER SLOTS", reply);
  std::vector<ClusterShard> out;
  for (const Reply& range : reply.elements) {
    if (range.type != Reply::Type::kArray || range.elements.size() < 3 ||
        range.elements[2].type != Reply::Type::kArray || range.elements[2].elements.size() < 2) {
      return Bad("CLUSTER SLOTS", reply);
    }
    const auto first = AsInt(range.elements[0]);
    const auto last = AsInt(range.elements[1]);
    const auto port = AsInt(range.elements[2].elements[1]);
    if (!first || !last || !port || !ValidSlot(*first) || !ValidSlot(*last) || *first > *last) {
      return Bad("CLUSTER SLOTS", reply);
    }
    const std::string& host = range.elements[2].elements[0].str;
    auto it = std::find_if(out.begin(), out.end(), [&](const ClusterShard& s) {
      return s.host == host && s.port == *port;
    });
    if (it == out.end()) {
      out.push_back(ClusterShard{host, static_cast<int>(*port), {}});
      it = out.end() - 1;
    }
    it->ranges.emplace_back(static_cast<int>(*first), static_cast<int>(*last));
  }
  return out;
}

std::optional<Redirect> ParseRedirect(std::string_view error) {
  const std::vector<absl::string_view> parts = absl::StrSplit(AbslView(error), ' ');
  if (parts.size() != 3 || (parts[0] != "MOVED" && parts[0] != "ASK")) return std::nullopt;
  Redirect r;
  r.ask = parts[0] == "ASK";
  const size_t colon = parts[2].rfind(':');
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(parts[1], &r.slot) ||
      !ValidSlot(r.slot) || !absl::SimpleAtoi(parts[2].substr(colon + 1), &r.port) || r.port <= 0) {
    return std::nullopt;
  }
  r.host = std::string(parts[2].substr(0, colon));
  return r;
}

bool InfoSaysClusterEnabled(std::string_view info) {
  for (absl::string_view line : absl::StrSplit(AbslView(info), '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (absl::StartsWith(line, "cluster_enabled:")) return line == "cluster_enabled:1";
  }
  return false;
}

}  // namespace distkit::redis
