#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

struct redisReply;

namespace distkit::redis {

// A Redis reply copied out of hiredis, so callbacks never see hiredis types.
struct Reply {
  enum class Type { kNil, kInteger, kString, kStatus, kError, kArray };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string str;  // kString, kStatus, kError
  std::vector<Reply> elements;

  static Reply FromHiredis(const redisReply* r);  // hiredis_reply.cc, in distkit_redis only
  static Reply Integer(int64_t v);
  static Reply String(std::string s);
  static Reply Error(std::string s);
  static Reply Array(std::vector<Reply> e);

  bool is_error() const { return type == Type::kError; }
  std::string DebugString() const;
};

// Status helpers shared by the Redis layer and its users.
//
// A failed command either was never written to Redis (the connection was down when it was
// submitted) or its outcome is unknown (timed out, or the connection broke while it was in
// flight). Retrying code must tell the two apart: only the first may be merged with later work.
absl::Status NotSentError(std::string_view message);
absl::Status MarkNotSent(absl::Status status);  // same code and message, marked "not sent"
// DEADLINE_EXCEEDED: the Redis at `where` did not answer a command within `timeout`.
absl::Status NoAnswerError(std::string_view where, std::chrono::milliseconds timeout);
bool IsNotSent(const absl::Status& status);

// Maps a Redis error reply to a status: transient server states are UNAVAILABLE, OOM is
// RESOURCE_EXHAUSTED, WRONGTYPE (a key someone else wrote) FAILED_PRECONDITION, anything else
// would be a bug of ours (INTERNAL).
absl::Status RedisErrorStatus(std::string_view err);

}  // namespace distkit::redis
