#include "daemon/core/counter_script.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "daemon/core/int64_math.h"

namespace distkit::core {

absl::StatusOr<ScriptReply> ParseScriptReply(absl::StatusOr<redis::Reply> r) {
  if (!r.ok()) return r.status();
  if (r->is_error()) return redis::RedisErrorStatus(r->str);
  const auto& e = r->elements;
  if (r->type != redis::Reply::Type::kArray || e.size() < 5) {
    return absl::InternalError(absl::StrCat("unexpected counter reply: ", r->DebugString()));
  }
  ScriptReply out;
  out.status = ParseScriptStatus(e[0].str);
  auto v = ParseInt64(e[1].str);
  auto p = ParseInt64(e[2].str);
  if (!v || !p ||
      (out.status != ScriptStatus::kOk && out.status != ScriptStatus::kOverflow &&
       out.status != ScriptStatus::kNotInt && out.status != ScriptStatus::kCorrupt &&
       out.status != ScriptStatus::kStale)) {
    return absl::InternalError(absl::StrCat("unexpected counter reply: ", r->DebugString()));
  }
  out.value = *v;
  out.previous = *p;
  out.applied = e[3].integer != 0;
  out.dropped = e[4].integer;
  if (e.size() >= 6) {
    auto s = ParseInt64(e[5].type == redis::Reply::Type::kInteger ? absl::StrCat(e[5].integer)
                                                                  : e[5].str);
    if (s && *s >= 0) out.applied_seq = static_cast<uint64_t>(*s);
  }
  if (e.size() >= 7 && e[6].type == redis::Reply::Type::kInteger) out.redis_now_ms = e[6].integer;
  out.resolved = e.size() >= 8 && e[7].integer == 1;
  if (out.status == ScriptStatus::kStale && !out.applied_seq) {
    return absl::InternalError(absl::StrCat("unexpected counter reply: ", r->DebugString()));
  }
  return out;
}

std::vector<std::string> ScriptArgs(const std::string& dedup_id,
                                    const std::vector<SeqDelta>& entries, std::string_view op,
                                    Condition cond, int64_t arg, int64_t bound_ms) {
  std::vector<std::string> args;
  args.reserve(8 + 2 * entries.size());
  args.push_back(dedup_id);
  args.push_back(absl::StrCat(entries.size()));
  for (const auto& u : entries) {
    args.push_back(absl::StrCat(u.seq));
    args.push_back(absl::StrCat(u.delta));
  }
  args.emplace_back(op);
  args.emplace_back(ComparatorName(cond.op));
  args.push_back(absl::StrCat(cond.operand));
  args.push_back(absl::StrCat(arg));
  if (bound_ms > 0 && !entries.empty()) {
    int64_t sent_ms = entries.front().sent_ms;
    for (const auto& u : entries) sent_ms = std::min(sent_ms, u.sent_ms);
    args.push_back(absl::StrCat(std::max<int64_t>(sent_ms, 0)));
    args.push_back(absl::StrCat(bound_ms));
  }
  return args;
}

}  // namespace distkit::core
