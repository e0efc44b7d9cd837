#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/redis/connection.h"
#include "daemon/redis/direct.h"
#include "daemon/redis/redis_client.h"
#include "daemon/redis/redis_url.h"
#include "daemon/redis/tls.h"

struct event_base;
struct event;

namespace distkit::redis {

// Embedded lua/*.lua, by file name without extension (generated at build time).
const std::map<std::string, std::string>& EmbeddedScripts();

struct ExecutorOptions {
  // --redis: where to start. Standalone mode uses the first that answers; cluster mode
  // discovers the topology from whichever answers.
  std::vector<RedisEndpoint> seeds;
  RedisMode mode = RedisMode::kAuto;
  TlsOptions tls;  // for rediss:// endpoints
  std::chrono::milliseconds command_timeout{1000};
  std::chrono::milliseconds min_backoff{50};
  std::chrono::milliseconds max_backoff{2000};
  std::chrono::milliseconds ping_interval{1000};
  // Standalone: Healthy() turns false when no PING was answered for this long.
  std::chrono::milliseconds unhealthy_after{3000};
  // Cluster: Healthy() turns false when some slot had no reachable primary for this long.
  std::chrono::milliseconds uncovered_after{5000};
  std::chrono::milliseconds topology_refresh{10000};
  // Commands queued or in flight at most; beyond it a command fails with RESOURCE_EXHAUSTED.
  int64_t max_outstanding = 100000;
  // The inline path (InlineScope): how long the submitting thread waits for the reply itself
  // before lending the wait to the loop thread; 0 = never run a command inline.
  std::chrono::microseconds inline_wait{1000};
  // Of that wait, how long the thread polls the socket instead of sleeping (CPU for latency).
  std::chrono::microseconds inline_spin{100};
};

struct ExecutorStats {
  std::atomic<uint64_t> commands{0};
  std::atomic<uint64_t> timeouts{0};
  std::atomic<uint64_t> reconnects{0};
  std::atomic<uint64_t> noscript_retries{0};
  std::atomic<uint64_t> writes{0};    // drains of the submission queue into the socket buffers
  std::atomic<uint64_t> moved{0};     // MOVED redirects followed
  std::atomic<uint64_t> ask{0};       // ASK redirects followed
  std::atomic<uint64_t> tryagain{0};  // TRYAGAIN / CLUSTERDOWN retries
  std::atomic<uint64_t> topology_refreshes{0};
  std::atomic<int64_t> nodes{0};             // primaries connected (standalone: 0 or 1)
  std::atomic<uint64_t> inline_commands{0};  // run on the submitting thread (InlineScope)
  std::atomic<uint64_t> inline_lent{0};      // of which the reply was late: awaited by the loop
};

// The one way the daemon talks to Redis: standalone or Redis Cluster, plain or TLS
// (docs/redis_cluster.md). Any thread submits commands into a queue and wakes the loop thread;
// the loop routes everything queued to its node's Connection at once, so concurrent requests
// leave in few write() calls (pipelining). In a cluster each command goes to the primary of its
// key's slot; MOVED / ASK are followed, TRYAGAIN / CLUSTERDOWN retried with backoff, all within
// the command's deadline; the topology comes from CLUSTER SHARDS (CLUSTER SLOTS before Redis 7)
// and is refreshed on MOVED, on a lost node and every ExecutorOptions::topology_refresh.
// A keyless SCAN walks every primary in turn (the cursor names the node).
//
// The inline path: a lone command submitted in an InlineScope, while nothing else is queued or in
// flight, in standalone mode without TLS, is written by the submitting thread on a second,
// blocking connection (DirectConnection) and its reply read there, with no wake-up of the loop;
// a reply later than ExecutorOptions::inline_wait is awaited by the loop thread instead
// (docs/design.md "The inline path").
//
// At most ExecutorOptions::max_outstanding commands wait or fly at once; more fail with
// RESOURCE_EXHAUSTED at submission. A command for a node that is not connected fails at once
// with a NotSent UNAVAILABLE (nothing waits for a Redis that is down). A command that misses
// its deadline fails with DEADLINE_EXCEEDED and its connection is dropped and re-established.
class Executor final : public RedisClient, private Connection::Listener {
 public:
  explicit Executor(ExecutorOptions options);
  ~Executor() override;  // Stop()s

  void Start();  // starts the loop thread and the first connection attempt
  // Fails what is queued or in flight (UNAVAILABLE) and joins the loop thread. Idempotent.
  void Stop();

  // Blocks until the mode is known (the first seed answered) or `timeout`: the mode, or
  // FAILED_PRECONDITION when --redis_mode contradicts the server (cluster mode against a server
  // that is not a cluster node, a database other than 0 in a cluster), DEADLINE_EXCEEDED when no
  // seed answered yet (the executor keeps trying), INVALID_ARGUMENT for an unusable TLS setup.
  absl::StatusOr<RedisMode> AwaitMode(std::chrono::milliseconds timeout);

  void Command(std::vector<std::string> argv, ReplyCallback done) override;
  void Script(std::string_view name, std::vector<std::string> keys, std::vector<std::string> args,
              ReplyCallback done) override;
  bool Healthy() const override { return healthy_.load(std::memory_order_relaxed); }
  bool Connected() const { return stats_.nodes.load() > 0; }

  const ExecutorStats& stats() const { return stats_; }

 private:
  void Submit(std::unique_ptr<Pending> p);
  void Enqueue(std::unique_ptr<Pending> p);
  // The inline path, on the submitting thread: runs `p` on the direct connection, or enqueues it.
  void RunInline(std::unique_ptr<Pending> p);
  // Waits (until `until`) for the direct connection's reply to `p`, then finishes it, resends it
  // (NOSCRIPT) or, on the submitting thread, lends the wait to the loop.
  void AwaitInline(std::unique_ptr<Pending> p, Clock::time_point until, bool on_loop);
  // Ends the inline command `p` with `result`: drops the loop's event on the direct connection
  // (`on_loop`: the wait was lent), closes the connection (`close`: its state is unknown) and
  // frees the inline path for the next command.
  void EndInline(std::unique_ptr<Pending> p, absl::StatusOr<Reply> result, bool on_loop,
                 bool close);
  absl::Status InlineNoAnswer() const;  // the direct connection's command timed out
  void ReleaseInline();
  // NOSCRIPT for one of our scripts: the cache was flushed (restart, failover, SCRIPT FLUSH).
  // Makes `p` an EVAL of the script's body, once; false when that does not apply.
  bool ToEvalOnNoscript(Pending& p, std::string_view err);
  // Loop-thread only below.
  void Drain();
  void OnInlineReadable();
  void FailLent(const absl::Status& status);
  void OnTick();
  void Route(std::shared_ptr<Pending> p);
  void RouteCluster(std::shared_ptr<Pending> p);
  void Finish(const std::shared_ptr<Pending>& p, const redisReply& r);
  // ASKING ahead of the next command on `conn` (an ASK redirect: one command may use the slot).
  static void SendAsking(Connection& conn, Clock::time_point deadline);
  void OnReply(Connection& conn, std::shared_ptr<Pending> p, const redisReply& r) override;
  void OnUp(Connection& conn) override;
  void OnDown(Connection& conn) override;
  void ResolveMode(const Connection& conn, absl::StatusOr<Reply> info);
  void SetMode(absl::StatusOr<RedisMode> mode);
  void NextSeed();
  void RequestRefresh();
  void MaybeRefresh(Clock::time_point now);
  void OnTopology(absl::StatusOr<Reply> reply, bool slots_reply);
  Connection* Node(const std::string& host, int port);
  Connection* AnyConnectedNode();
  std::unique_ptr<Connection> NewConnection(const RedisEndpoint& endpoint);
  void RerouteUnrouted();
  std::string NextScanCursor(int scan_slot, const std::string& node_cursor) const;
  void UpdateHealth(Clock::time_point now);
  void FailAll(const absl::Status& status);

  const ExecutorOptions options_;
  ExecutorStats stats_;
  std::map<std::string, std::string> script_sha_;  // name -> sha1 (immutable after ctor)
  SslCtxPtr tls_ctx_;                              // when a seed is rediss://
  absl::Status tls_error_;                         // why tls_ctx_ could not be made

  absl::Mutex mu_;
  std::vector<std::unique_ptr<Pending>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The resolved mode (kAuto until then) or why it cannot be used.
  absl::StatusOr<RedisMode> mode_ ABSL_GUARDED_BY(mu_) = RedisMode::kAuto;

  // The inline path: whoever set inline_busy_ owns direct_ (a submitting thread, or the loop
  // while lent_ is set). The loop publishes which seed may be used, and until when not to retry.
  bool inline_busy_ ABSL_GUARDED_BY(mu_) = false;
  int inline_seed_ ABSL_GUARDED_BY(mu_) = -1;  // index in options_.seeds; -1 = not usable
  Clock::time_point inline_retry_at_ ABSL_GUARDED_BY(mu_){};
  std::unique_ptr<Pending> lend_ ABSL_GUARDED_BY(mu_);  // handed to the loop, not yet taken
  std::unique_ptr<DirectConnection> direct_;            // owned by whoever set inline_busy_
  int direct_seed_ = -1;                                // the seed direct_ connects to
  Clock::time_point inline_spin_until_{};               // of the command on direct_

  std::atomic<int64_t> outstanding_{0};  // submitted and not finished (see max_outstanding)
  std::atomic<bool> healthy_{false};

  // Owned by the loop thread.
  event_base* base_ = nullptr;
  event* wake_ev_ = nullptr;
  event* tick_ev_ = nullptr;
  event* lent_ev_ = nullptr;                // the direct connection's reply, while lent_
  std::unique_ptr<Pending> lent_;           // an inline command whose reply the loop awaits
  RedisMode loop_mode_ = RedisMode::kAuto;  // mode_ as the loop sees it (kAuto = unknown)
  bool mode_failed_ = false;
  size_t seed_index_ = 0;
  bool seed_answered_ = false;  // standalone sticks to the first seed that answered
  // Standalone: the connection. Cluster: asks the topology (and the mode first).
  std::unique_ptr<Connection> seed_;
  absl::flat_hash_map<std::string, std::unique_ptr<Connection>> nodes_;  // primaries by name
  std::vector<Connection*> slots_;                    // cluster: slot -> primary, or null
  std::vector<std::unique_ptr<Connection>> retired_;  // closed once their replies are in
  std::vector<std::shared_ptr<Pending>> unrouted_;    // waiting for the mode or topology
  std::vector<std::pair<Clock::time_point, std::shared_ptr<Pending>>> delayed_;  // TRYAGAIN
  bool topology_known_ = false;
  bool covered_ = false;  // every slot has a primary in the map
  bool refresh_in_flight_ = false;
  bool refresh_wanted_ = false;
  Clock::time_point last_refresh_{};
  Clock::time_point uncovered_since_{};
  bool was_covered_ = false;
  std::thread thread_;
};

}  // namespace distkit::redis
