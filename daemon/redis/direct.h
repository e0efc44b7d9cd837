#pragma once

#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/redis/redis_url.h"

struct redisReader;
struct redisReply;

namespace distkit::redis {

using Clock = std::chrono::steady_clock;

struct ReplyFree {
  void operator()(redisReply* r) const;
};
using RawReply = std::unique_ptr<redisReply, ReplyFree>;

// A blocking connection to one standalone Redis, used by a submitting thread itself (the
// executor's inline path, docs/design.md "The inline path"): the command is written and its
// reply read on the caller's thread, with no wake-up of the executor's loop. Plain TCP or Unix
// socket (no TLS). One user at a time; the executor lends it to its loop thread when a reply is
// late (fd() then goes into the loop's poll set).
class DirectConnection {
 public:
  explicit DirectConnection(RedisEndpoint endpoint);
  ~DirectConnection();
  DirectConnection(const DirectConnection&) = delete;
  DirectConnection& operator=(const DirectConnection&) = delete;

  // Connected and nothing unread waiting: ready for a command. An idle connection the server
  // closed (restart, CLIENT KILL, `timeout`) reads as readable: it is closed here, so the next
  // command is never written into a dead socket.
  bool Ready();
  // Connects and sends AUTH / SELECT, everything before `deadline`.
  absl::Status Connect(Clock::time_point deadline);
  // Writes one command. A failure wrote nothing (the connection is closed) unless
  // `*partly_written`: then its outcome is unknown.
  absl::Status Send(const std::vector<std::string>& argv, bool* partly_written);
  // The reply to the command sent, waiting until `until` (now or earlier: no wait). nullptr:
  // not arrived yet, still in flight. A failed status: the connection broke (closed; outcome
  // unknown). Until `spin_until` it reads again at once instead of sleeping: on the
  // paravirtualized machines we measured, a thread's sleep and wake-up on the reply cost
  // ~70 us, twice Redis's whole round trip (docs/benchmarks.md).
  absl::StatusOr<RawReply> Receive(Clock::time_point until, Clock::time_point spin_until);
  void Close();

  int fd() const { return fd_; }
  const RedisEndpoint& endpoint() const { return endpoint_; }

 private:
  absl::StatusOr<RawReply> Call(const std::vector<std::string>& argv, Clock::time_point deadline);

  const RedisEndpoint endpoint_;
  int fd_ = -1;
  redisReader* reader_ = nullptr;
};

// Shared with Connection: where a RedisEndpoint is, the RESP bytes of a command, and the
// commands a new connection sends first (AUTH, SELECT) before anything else.
absl::Status ResolveEndpoint(const RedisEndpoint& ep, sockaddr_storage* out, socklen_t* len);
bool FormatCommand(const std::vector<std::string>& argv, std::string* out);
std::vector<std::vector<std::string>> SetupCommands(const RedisEndpoint& ep);

}  // namespace distkit::redis
