#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "daemon/redis/reply.h"

namespace distkit::redis {

// Called exactly once per command, on the Redis loop thread (or inline when the command is
// refused at submission). Must not block. Script errors arrive as an OK Reply of kError type;
// a failed status means transport trouble: UNAVAILABLE (not connected or connection lost; see
// IsNotSent) or DEADLINE_EXCEEDED (no answer within the per-command deadline).
using ReplyCallback = absl::AnyInvocable<void(absl::StatusOr<Reply>)>;

// The narrow interface core/ talks to, so unit tests can use a fake.
class RedisClient {
 public:
  virtual ~RedisClient() = default;

  // Runs a raw command. Thread-safe; never blocks.
  virtual void Command(std::vector<std::string> argv, ReplyCallback done) = 0;

  // Runs the embedded script `name` (lua/<name>.lua) with EVALSHA, transparently falling back
  // to EVAL on NOSCRIPT. Thread-safe; never blocks.
  virtual void Script(std::string_view name, std::vector<std::string> keys,
                      std::vector<std::string> args, ReplyCallback done) = 0;

  // True while connected and the last health PING was answered recently.
  virtual bool Healthy() const = 0;
};

}  // namespace distkit::redis
