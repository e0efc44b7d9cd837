#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "daemon/redis/redis_client.h"
#include "daemon/redis/redis_url.h"

struct event_base;
struct event;
struct redisAsyncContext;

namespace distkit::redis {

// Embedded lua/*.lua, by file name without extension (generated at build time).
const std::map<std::string, std::string>& EmbeddedScripts();

struct ExecutorOptions {
  // --redis: where to start. Standalone mode uses the first; cluster mode discovers the
  // topology from whichever answers.
  std::vector<RedisEndpoint> seeds;
  RedisMode mode = RedisMode::kAuto;
  TlsOptions tls;  // for rediss:// endpoints
  std::chrono::milliseconds command_timeout{1000};
  std::chrono::milliseconds min_backoff{50};
  std::chrono::milliseconds max_backoff{2000};
  std::chrono::milliseconds ping_interval{1000};
  // Healthy() turns false when no PING was answered for this long.
  std::chrono::milliseconds unhealthy_after{3000};
  // Commands queued or in flight at most; beyond it a command fails with RESOURCE_EXHAUSTED.
  int64_t max_outstanding = 100000;
};

struct ExecutorStats {
  std::atomic<uint64_t> commands{0};
  std::atomic<uint64_t> timeouts{0};
  std::atomic<uint64_t> reconnects{0};
  std::atomic<uint64_t> noscript_retries{0};
  std::atomic<uint64_t> writes{0};  // drains of the submission queue into the socket buffer
};

// Owns one hiredis async context on its own libevent loop thread. Any thread submits commands
// into a queue and wakes the loop; the loop moves everything queued into hiredis at once, so
// concurrent requests leave in few write() calls (pipelining). Per-command deadlines, reconnect
// with exponential backoff, AUTH/SELECT and SCRIPT LOAD on every (re)connect, NOSCRIPT fallback.
//
// At most ExecutorOptions::max_outstanding commands wait or fly at once; more fail with
// RESOURCE_EXHAUSTED at submission.
// While disconnected, commands fail at once with a NotSent UNAVAILABLE (fail fast: nothing
// waits for a Redis that is down). A command that misses its deadline fails with
// DEADLINE_EXCEEDED and the connection is dropped and re-established: a Redis that stopped
// answering is treated like one that went away.
class Executor final : public RedisClient {
 public:
  explicit Executor(ExecutorOptions options);
  ~Executor() override;  // Stop()s

  void Start();  // starts the loop thread and the first connection attempt
  // Fails what is queued or in flight (UNAVAILABLE) and joins the loop thread. Idempotent.
  void Stop();

  void Command(std::vector<std::string> argv, ReplyCallback done) override;
  void Script(std::string_view name, std::vector<std::string> keys, std::vector<std::string> args,
              ReplyCallback done) override;
  bool Healthy() const override;
  bool Connected() const { return connected_.load(); }

  const ExecutorStats& stats() const { return stats_; }

  struct Pending;  // one submitted command; internal

 private:
  enum class State { kDisconnected, kConnecting, kConnected };

  void Submit(std::unique_ptr<Pending> p);
  // Loop-thread only below.
  void Drain();
  void Send(std::shared_ptr<Pending> p);
  void Connect();
  void ScheduleReconnect();
  void DropConnection(std::string_view why);
  void OnConnect(int status);
  void OnDisconnect(int status);
  void OnReply(std::shared_ptr<Pending> p, void* reply);
  void OnTick();
  void SendPing();
  static void OnReplyThunk(redisAsyncContext* c, void* reply, void* privdata);
  static void OnConnectThunk(const redisAsyncContext* c, int status);
  static void OnDisconnectThunk(const redisAsyncContext* c, int status);

  const ExecutorOptions options_;
  ExecutorStats stats_;
  std::map<std::string, std::string> script_sha_;  // name -> sha1 (immutable after ctor)

  absl::Mutex mu_;
  std::vector<std::unique_ptr<Pending>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::atomic<bool> connected_{false};
  std::atomic<int64_t> outstanding_{0};  // submitted and not finished (see max_outstanding)
  std::atomic<int64_t> last_pong_ns_{0};

  // Owned by the loop thread.
  event_base* base_ = nullptr;
  event* wake_ev_ = nullptr;
  event* tick_ev_ = nullptr;
  event* reconnect_ev_ = nullptr;
  redisAsyncContext* ctx_ = nullptr;
  State state_ = State::kDisconnected;
  std::chrono::steady_clock::time_point connect_deadline_;
  std::chrono::steady_clock::time_point next_ping_;
  std::chrono::milliseconds backoff_{0};
  std::deque<std::shared_ptr<Pending>> in_flight_;  // send order = reply order
  std::vector<std::shared_ptr<Pending>> waiting_;   // submitted while connecting
  bool ping_outstanding_ = false;
  std::thread thread_;
};

}  // namespace distkit::redis
