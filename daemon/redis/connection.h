#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/redis/redis_client.h"
#include "daemon/redis/redis_url.h"

struct event_base;
struct bufferevent;
struct redisReader;
struct redisReply;
typedef struct ssl_ctx_st SSL_CTX;  // NOLINT(modernize-use-using): OpenSSL's own spelling

namespace distkit::redis {

using Clock = std::chrono::steady_clock;
struct ExecutorStats;

// One submitted command, from submission to its one Finish().
struct Pending {
  std::vector<std::string> argv;
  std::string script;  // script name when argv is an EVALSHA
  int slot = -1;       // cluster slot of its key; -1 = keyless
  bool scan = false;   // a SCAN: in a cluster it walks every primary (Executor::RouteScan)
  int scan_slot = -1;  // the slot naming the primary a cluster SCAN is on
  ReplyCallback done;
  Clock::time_point deadline;
  bool finished = false;
  bool noscript_retried = false;
  bool asking = false;    // sent after ASKING (an ASK redirect): a resend needs it again
  bool internal = false;  // set-up, PING, topology: answered by its callback, never redirected
  int redirects = 0;      // MOVED / ASK followed so far
  int retries = 0;        // TRYAGAIN / CLUSTERDOWN retried so far
  std::atomic<int64_t>* outstanding = nullptr;  // the executor's count, while counted

  void Finish(absl::StatusOr<Reply> result);
};

struct ConnectionOptions {
  RedisEndpoint endpoint;
  SSL_CTX* tls_ctx = nullptr;  // required for endpoint.tls; owned by the executor
  const TlsOptions* tls = nullptr;
  std::chrono::milliseconds command_timeout{1000};
  std::chrono::milliseconds min_backoff{50};
  std::chrono::milliseconds max_backoff{2000};
  std::chrono::milliseconds ping_interval{1000};
  std::chrono::milliseconds unhealthy_after{3000};
};

// One connection to one Redis node, on the executor's loop thread (every method runs there).
// Our own transport: a libevent bufferevent (plain socket, or OpenSSL for rediss://), commands
// formatted by hiredis's redisFormatCommandArgv and replies parsed by hiredis's redisReader.
// Everything sent in one loop iteration leaves in one write (pipelining). Replies come in send
// order. On (re)connect it sends AUTH / SELECT and loads every embedded script before anything
// else; it pings to prove the node alive, and reconnects with exponential backoff by itself
// (driven by Tick()).
class Connection {
 public:
  class Listener {
   public:
    virtual ~Listener() = default;
    // The reply to a command that is not internal. The listener finishes, resends or redirects.
    virtual void OnReply(Connection& conn, std::shared_ptr<Pending> p, const redisReply& r) = 0;
    virtual void OnUp(Connection& conn) = 0;    // connected, set-up commands queued
    virtual void OnDown(Connection& conn) = 0;  // lost, or an attempt failed
  };
  enum class State { kIdle, kConnecting, kConnected };

  Connection(event_base* base, ConnectionOptions options, Listener* listener, ExecutorStats* stats);
  ~Connection();  // in flight: UNAVAILABLE (outcome unknown); waiting: not sent
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connected: written now. Connecting: sent once connected. Idle: fails at once (not sent).
  void Send(std::shared_ptr<Pending> p);
  // Reconnects when its backoff is over, enforces the connect and command deadlines, pings.
  void Tick(Clock::time_point now);
  // Drops the connection (in flight: outcome unknown) and reconnects after the backoff.
  void Close(std::string_view why);

  State state() const { return state_; }
  bool Healthy(Clock::time_point now) const;
  size_t in_flight() const { return in_flight_.size(); }
  const RedisEndpoint& endpoint() const { return options_.endpoint; }
  const std::string& name() const { return name_; }  // "host:port" or the socket path

 private:
  void Connect();
  void Write(std::shared_ptr<Pending> p);
  void SendInternal(std::vector<std::string> argv, ReplyCallback done);
  void OnConnected();
  void OnRead();
  void Lost(std::string_view why, bool count_reconnect);
  void FailWaiting(std::string_view why);
  static void ReadThunk(bufferevent* bev, void* self);
  static void EventThunk(bufferevent* bev, short what, void* self);  // NOLINT(google-runtime-int)

  event_base* const base_;
  const ConnectionOptions options_;
  Listener* const listener_;
  ExecutorStats* const stats_;
  const std::string name_;

  State state_ = State::kIdle;
  bufferevent* bev_ = nullptr;
  redisReader* reader_ = nullptr;
  uint64_t generation_ = 0;  // bumped on every drop: a reply loop stops when it changes
  std::deque<std::shared_ptr<Pending>> in_flight_;  // send order = reply order
  std::vector<std::shared_ptr<Pending>> waiting_;   // submitted while connecting
  Clock::time_point retry_at_{};                    // kIdle: next attempt
  Clock::time_point connect_deadline_{};
  Clock::time_point next_ping_{};
  Clock::time_point last_pong_{};
  std::chrono::milliseconds backoff_{0};
  bool ping_outstanding_ = false;
  bool logged_down_ = false;  // one warning per outage, not one per attempt
};

}  // namespace distkit::redis
