#pragma once

// Calling lua/counter.lua: argument building and reply parsing, shared by every caller.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/core/lax_store.h"
#include "daemon/core/script_status.h"
#include "daemon/core/types.h"
#include "daemon/redis/reply.h"

namespace distkit::core {

// Parsed reply of lua/counter.lua.
struct ScriptReply {
  ScriptStatus status = ScriptStatus::kOk;  // kOk | kOverflow | kNotInt | kCorrupt
  int64_t value = 0;
  int64_t previous = 0;
  bool applied = false;
  int64_t dropped = 0;
  std::optional<uint64_t> applied_seq;  // highest of our lax seqs Redis has applied
  std::optional<int64_t> redis_now_ms;  // Redis TIME when the script ran
  // kStale: applied_seq is authoritative (every carried entry above it was never applied and no
  // longer can be); false: the fate of those entries is unknown.
  bool resolved = false;
};

absl::StatusOr<ScriptReply> ParseScriptReply(absl::StatusOr<redis::Reply> r);

// ARGV of counter.lua: dedup id, the lax entries, op, comparator, operand, arg, and with
// bound_ms > 0 and entries, sent_ms (the oldest entry's first send, Redis time) and bound_ms.
std::vector<std::string> ScriptArgs(const std::string& dedup_id,
                                    const std::vector<SeqDelta>& entries, std::string_view op,
                                    Condition cond, int64_t arg, int64_t bound_ms = 0);

}  // namespace distkit::core
