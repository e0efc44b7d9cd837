#include "daemon/redis/executor.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstdio>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/common/logging.h"
#include "daemon/common/strings.h"
#include "daemon/redis/cluster_topology.h"

namespace distkit::redis {

namespace {

std::string Sha1Hex(const std::string& body) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(body.data()), body.size(), digest);
  std::string hex;
  hex.reserve(2 * SHA_DIGEST_LENGTH);
  for (unsigned char b : digest) {
    char buf[3];
    std::snprintf(buf, sizeof(buf), "%02x", b);
    hex += buf;
  }
  return hex;
}

LogEvery g_error_log(std::chrono::seconds(5));

constexpr int kMaxRedirects = 5;
constexpr auto kRefreshThrottle = std::chrono::milliseconds(100);
constexpr auto kRefreshWhileDegraded = std::chrono::seconds(1);
constexpr auto kInlineConnectBudget = std::chrono::milliseconds(100);
constexpr auto kInlineRetry = std::chrono::milliseconds(1000);  // after a failed inline connect

// Commands that name no key: routed to any primary (SCAN: to every primary in turn).
bool Keyless(std::string_view cmd) {
  for (std::string_view k :
       {"PING", "INFO", "SCAN", "DBSIZE", "FLUSHALL", "FLUSHDB", "TIME", "ECHO", "CLUSTER",
        "SCRIPT", "CONFIG", "DEBUG", "CLIENT", "COMMAND", "SLOWLOG", "LASTSAVE", "ROLE", "WAIT"}) {
    if (absl::EqualsIgnoreCase(AbslView(cmd), AbslView(k))) return true;
  }
  return false;
}

std::string_view ErrorOf(const redisReply& r) {
  return r.type == REDIS_REPLY_ERROR ? std::string_view(r.str, r.len) : std::string_view();
}

}  // namespace

Executor::Executor(ExecutorOptions options) : options_(std::move(options)) {
  static std::once_flag once;
  std::call_once(once, [] { evthread_use_pthreads(); });
  for (const auto& [name, body] : EmbeddedScripts()) script_sha_[name] = Sha1Hex(body);
  if (std::any_of(options_.seeds.begin(), options_.seeds.end(),
                  [](const RedisEndpoint& e) { return e.tls; })) {
    auto ctx = NewClientTlsContext(options_.tls);
    if (ctx.ok()) {
      tls_ctx_ = *std::move(ctx);
    } else {
      tls_error_ = ctx.status();
    }
  }
  if (options_.mode == RedisMode::kStandalone) {
    absl::MutexLock lock(&mu_);
    mode_ = RedisMode::kStandalone;
    loop_mode_ = RedisMode::kStandalone;
  }
  if (!tls_error_.ok()) {
    absl::MutexLock lock(&mu_);
    mode_ = tls_error_;
    mode_failed_ = true;
  }
  base_ = event_base_new();
  wake_ev_ = event_new(
      base_, -1, EV_PERSIST,
      [](evutil_socket_t, short, void* self) { static_cast<Executor*>(self)->Drain(); }, this);
  tick_ev_ = event_new(
      base_, -1, EV_PERSIST,
      [](evutil_socket_t, short, void* self) { static_cast<Executor*>(self)->OnTick(); }, this);
  event_add(wake_ev_, nullptr);
  const auto tick = std::min<std::chrono::milliseconds>(
      std::chrono::milliseconds(10), options_.command_timeout / 4 + std::chrono::milliseconds(1));
  timeval tv{0, static_cast<suseconds_t>(tick.count() * 1000)};
  event_add(tick_ev_, &tv);
}

Executor::~Executor() {
  Stop();
  // Connections free their bufferevents: before the base goes.
  seed_.reset();
  nodes_.clear();
  retired_.clear();
  if (lent_ev_ != nullptr) event_free(lent_ev_);
  event_free(wake_ev_);
  event_free(tick_ev_);
  event_base_free(base_);
}

void Executor::Start() {
  if (!mode_failed_ && !options_.seeds.empty()) {
    seed_ = NewConnection(options_.seeds[0]);
    seed_->Tick(Clock::now());  // connects
  }
  thread_ = std::thread([this] { event_base_loop(base_, EVLOOP_NO_EXIT_ON_EMPTY); });
}

void Executor::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  if (thread_.joinable()) {
    event_active(wake_ev_, EV_READ, 0);
    thread_.join();
  }
  // A thread on the inline path finishes or fails its command within inline_wait.
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](bool* busy) { return !*busy; }, &inline_busy_));
}

absl::StatusOr<RedisMode> Executor::AwaitMode(std::chrono::milliseconds timeout) {
  absl::MutexLock lock(&mu_);
  auto known = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !mode_.ok() || *mode_ != RedisMode::kAuto;
  };
  mu_.AwaitWithTimeout(absl::Condition(&known), absl::FromChrono(timeout));
  if (!known()) {
    return absl::DeadlineExceededError(
        absl::StrCat("no Redis seed answered within ", timeout.count(), " ms"));
  }
  return mode_;
}

void Executor::Command(std::vector<std::string> argv, ReplyCallback done) {
  auto p = std::make_unique<Pending>();
  if (!argv.empty()) {
    if (absl::EqualsIgnoreCase(AbslView(argv[0]), "SCAN")) {
      p->scan = true;
    } else if (argv.size() >= 2 && !Keyless(argv[0])) {
      p->slot = KeySlot(argv[1]);
    }
  }
  p->argv = std::move(argv);
  p->done = std::move(done);
  Submit(std::move(p));
}

void Executor::Script(std::string_view name, std::vector<std::string> keys,
                      std::vector<std::string> args, ReplyCallback done) {
  auto it = script_sha_.find(std::string(name));
  if (it == script_sha_.end()) {
    done(absl::InternalError(absl::StrCat("unknown script ", AbslView(name))));
    return;
  }
  auto p = std::make_unique<Pending>();
  if (!keys.empty()) p->slot = KeySlot(keys[0]);
  p->argv.reserve(3 + keys.size() + args.size());
  p->argv.push_back("EVALSHA");
  p->argv.push_back(it->second);
  p->argv.push_back(absl::StrCat(keys.size()));
  for (auto& k : keys) p->argv.push_back(std::move(k));
  for (auto& a : args) p->argv.push_back(std::move(a));
  p->script = it->first;
  p->done = std::move(done);
  Submit(std::move(p));
}

void Executor::Submit(std::unique_ptr<Pending> p) {
  p->deadline = Clock::now() + options_.command_timeout;
  // Bounded: a Redis that stalls under load must not make us queue without limit.
  if (outstanding_.fetch_add(1, std::memory_order_relaxed) >= options_.max_outstanding) {
    outstanding_.fetch_sub(1, std::memory_order_relaxed);
    p->Finish(MarkNotSent(absl::ResourceExhaustedError(absl::StrCat(
        "too many Redis commands outstanding (", options_.max_outstanding, "); retry later"))));
    return;
  }
  p->outstanding = &outstanding_;
  if (options_.inline_wait.count() > 0 && InlineScope::Open()) {
    InlineScope::HoldBack([this, p = std::move(p)](bool alone) mutable {
      if (alone) {
        RunInline(std::move(p));
      } else {
        Enqueue(std::move(p));
      }
    });
    return;
  }
  Enqueue(std::move(p));
}

void Executor::Enqueue(std::unique_ptr<Pending> p) {
  std::unique_ptr<Pending> refused;
  bool wake = false;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      refused = std::move(p);
    } else {
      wake = queue_.empty();  // otherwise a wake-up is already on its way
      queue_.push_back(std::move(p));
    }
  }
  if (refused) {
    refused->Finish(NotSentError("Redis executor is shutting down"));
  } else if (wake) {
    event_active(wake_ev_, EV_READ, 0);
  }
}

void Executor::RunInline(std::unique_ptr<Pending> p) {
  const auto now = Clock::now();
  int seed = -1;
  {
    absl::MutexLock lock(&mu_);
    // Only when nothing else is queued or in flight: under load the loop's pipelining is
    // cheaper, and a command never overtakes one submitted before it.
    if (!stopping_ && !inline_busy_ && inline_seed_ >= 0 && now >= inline_retry_at_ &&
        outstanding_.load(std::memory_order_relaxed) == 1) {
      inline_busy_ = true;
      seed = inline_seed_;
    }
  }
  if (seed < 0) return Enqueue(std::move(p));
  if (direct_ == nullptr || direct_seed_ != seed) {
    direct_ = std::make_unique<DirectConnection>(options_.seeds[seed]);
    direct_seed_ = seed;
  }
  if (!direct_->Ready()) {
    if (absl::Status s = direct_->Connect(std::min(p->deadline, now + kInlineConnectBudget));
        !s.ok()) {
      if (g_error_log.ShouldLog()) {
        spdlog::warn("Redis inline connection to {} failed: {}; using the loop for {} ms",
                     direct_->endpoint().Redacted(), std::string(s.message()),
                     kInlineRetry.count());
      }
      {
        absl::MutexLock lock(&mu_);
        inline_retry_at_ = Clock::now() + kInlineRetry;
        inline_busy_ = false;
      }
      return Enqueue(std::move(p));  // nothing was sent
    }
  }
  bool partly = false;
  if (absl::Status s = direct_->Send(p->argv, &partly); !s.ok()) {
    ReleaseInline();
    if (!partly) return Enqueue(std::move(p));
    return p->Finish(absl::UnavailableError(absl::StrCat(s.message(), "; outcome unknown")));
  }
  stats_.commands++;
  stats_.inline_commands++;
  const auto sent = Clock::now();
  inline_spin_until_ = sent + options_.inline_spin;
  AwaitInline(std::move(p), sent + options_.inline_wait, /*on_loop=*/false);
}

void Executor::EndInline(std::unique_ptr<Pending> p, absl::StatusOr<Reply> result, bool on_loop,
                         bool close) {
  if (on_loop && lent_ev_ != nullptr) {  // before the connection can change hands
    event_free(lent_ev_);
    lent_ev_ = nullptr;
  }
  if (close) direct_->Close();
  ReleaseInline();
  p->Finish(std::move(result));
}

void Executor::AwaitInline(std::unique_ptr<Pending> p, Clock::time_point until, bool on_loop) {
  auto finish = [this, on_loop](std::unique_ptr<Pending> done, absl::StatusOr<Reply> result,
                                bool close = false) {
    EndInline(std::move(done), std::move(result), on_loop, close);
  };
  while (true) {
    auto r = direct_->Receive(std::min(until, p->deadline),
                              on_loop ? Clock::time_point{} : inline_spin_until_);
    if (!r.ok()) return finish(std::move(p), r.status());  // connection lost: outcome unknown
    if (*r == nullptr) {
      if (Clock::now() >= p->deadline) {
        stats_.timeouts++;
        return finish(std::move(p), InlineNoAnswer(), /*close=*/true);
      }
      if (on_loop) {  // still lent: the next readable event continues
        lent_ = std::move(p);
        return;
      }
      // Late: the loop awaits the reply (its tick enforces the deadline); this thread goes on.
      bool stopping = false;
      {
        absl::MutexLock lock(&mu_);
        stopping = stopping_;
        if (!stopping) lend_ = std::move(p);
      }
      if (stopping) {
        return finish(std::move(p),
                      absl::UnavailableError("Redis executor is shutting down; outcome unknown"),
                      /*close=*/true);
      }
      stats_.inline_lent++;
      event_active(wake_ev_, EV_READ, 0);
      return;
    }
    if (ToEvalOnNoscript(*p, ErrorOf(**r))) {
      bool partly = false;
      if (absl::Status s = direct_->Send(p->argv, &partly); !s.ok()) {
        // NOSCRIPT ran nothing: unless the EVAL was partly written, nothing was.
        return finish(std::move(p), partly ? absl::UnavailableError(
                                                 absl::StrCat(s.message(), "; outcome unknown"))
                                           : MarkNotSent(s));
      }
      continue;
    }
    return finish(std::move(p), Reply::FromHiredis(r->get()));
  }
}

void Executor::ReleaseInline() {
  absl::MutexLock lock(&mu_);
  inline_busy_ = false;
}

bool Executor::ToEvalOnNoscript(Pending& p, std::string_view err) {
  if (p.script.empty() || p.noscript_retried || !absl::StartsWith(AbslView(err), "NOSCRIPT")) {
    return false;
  }
  p.noscript_retried = true;
  stats_.noscript_retries++;
  p.argv[0] = "EVAL";
  p.argv[1] = EmbeddedScripts().at(p.script);
  return true;
}

void Executor::OnInlineReadable() {
  if (lent_ == nullptr) return;
  AwaitInline(std::move(lent_), Clock::now(), /*on_loop=*/true);
}

void Executor::FailLent(const absl::Status& status) {
  if (lent_ == nullptr) return;
  EndInline(std::move(lent_), status, /*on_loop=*/true, /*close=*/true);
}

absl::Status Executor::InlineNoAnswer() const {
  return NoAnswerError(direct_->endpoint().Redacted(), options_.command_timeout);
}

std::unique_ptr<Connection> Executor::NewConnection(const RedisEndpoint& endpoint) {
  ConnectionOptions o;
  o.endpoint = endpoint;
  o.tls_ctx = tls_ctx_.get();
  o.tls = &options_.tls;
  o.command_timeout = options_.command_timeout;
  o.min_backoff = options_.min_backoff;
  o.max_backoff = options_.max_backoff;
  o.ping_interval = options_.ping_interval;
  o.unhealthy_after = options_.unhealthy_after;
  return std::make_unique<Connection>(base_, std::move(o), static_cast<Connection::Listener*>(this),
                                      &stats_);
}

void Executor::Drain() {
  std::vector<std::unique_ptr<Pending>> batch;
  bool stopping;
  std::unique_ptr<Pending> lend;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(queue_);
    stopping = stopping_;
    lend = std::move(lend_);
  }
  if (lend != nullptr) {
    lent_ = std::move(lend);
    lent_ev_ = event_new(
        base_, direct_->fd(), EV_READ | EV_PERSIST,
        [](evutil_socket_t, short, void* self) {
          static_cast<Executor*>(self)->OnInlineReadable();
        },
        this);
    event_add(lent_ev_, nullptr);
  }
  if (!batch.empty()) stats_.writes++;
  for (auto& up : batch) {
    std::shared_ptr<Pending> p(std::move(up));
    if (stopping) {
      p->Finish(NotSentError("Redis executor is shutting down"));
    } else {
      Route(std::move(p));
    }
  }
  if (stopping) {
    FailAll(NotSentError("Redis executor is shutting down"));
    event_base_loopbreak(base_);
  }
}

void Executor::FailAll(const absl::Status& status) {
  FailLent(absl::UnavailableError(absl::StrCat(status.message(), "; outcome unknown")));
  for (auto& p : unrouted_) p->Finish(status);
  unrouted_.clear();
  for (auto& [at, p] : delayed_) p->Finish(status);
  delayed_.clear();
  // Destroying a connection fails what it holds (in flight: outcome unknown).
  seed_.reset();
  nodes_.clear();
  retired_.clear();
  slots_.clear();
  stats_.nodes = 0;
  healthy_ = false;
}

void Executor::Route(std::shared_ptr<Pending> p) {
  if (mode_failed_) {
    absl::MutexLock lock(&mu_);
    p->Finish(MarkNotSent(absl::UnavailableError(std::string(mode_.status().message()))));
    return;
  }
  switch (loop_mode_) {
    case RedisMode::kStandalone:
      if (p->scan) p->scan_slot = -1;
      seed_->Send(std::move(p));
      return;
    case RedisMode::kCluster:
      RouteCluster(std::move(p));
      return;
    case RedisMode::kAuto:
      // The mode is not known yet: wait for the seed being tried, or fail fast if none is.
      if (seed_ != nullptr && seed_->state() != Connection::State::kIdle) {
        unrouted_.push_back(std::move(p));
      } else {
        p->Finish(NotSentError("Redis is unreachable (no seed answered yet)"));
      }
      return;
  }
}

void Executor::RouteCluster(std::shared_ptr<Pending> p) {
  if (!topology_known_) {
    if (refresh_in_flight_ || (seed_ != nullptr && seed_->state() != Connection::State::kIdle)) {
      unrouted_.push_back(std::move(p));
    } else {
      p->Finish(NotSentError("Redis Cluster topology unknown (no node answered yet)"));
    }
    return;
  }
  Connection* c = nullptr;
  if (p->scan) {
    // Cursor "0" starts at the primary of the lowest slot; "<slot>-<cursor>" continues the
    // primary that owns <slot> (NextScanCursor).
    const std::string& cursor = p->argv.size() > 1 ? p->argv[1] : std::string("0");
    int slot = -1;
    std::string node_cursor = "0";
    if (cursor == "0") {
      for (int s = 0; s < kClusterSlots && slot < 0; ++s) {
        if (slots_[s] != nullptr) slot = s;
      }
    } else if (const size_t dash = cursor.find('-');
               dash != std::string::npos && absl::SimpleAtoi(cursor.substr(0, dash), &slot) &&
               slot >= 0 && slot < kClusterSlots) {
      node_cursor = cursor.substr(dash + 1);
    } else {
      p->Finish(Reply::Error("ERR invalid cluster SCAN cursor"));
      return;
    }
    if (slot < 0) {
      p->Finish(NotSentError("no Redis primary is known"));
      return;
    }
    p->scan_slot = slot;
    if (p->argv.size() > 1) p->argv[1] = node_cursor;
    c = slots_[slot];
  } else if (p->slot >= 0) {
    c = slots_[p->slot];
  } else {
    c = AnyConnectedNode();
  }
  if (c == nullptr) {
    RequestRefresh();
    p->Finish(NotSentError(p->slot >= 0
                               ? absl::StrCat("no reachable Redis primary serves slot ", p->slot)
                               : std::string("no Redis primary is connected")));
    return;
  }
  c->Send(std::move(p));
}

std::string Executor::NextScanCursor(int scan_slot, const std::string& node_cursor) const {
  if (node_cursor != "0") return absl::StrCat(scan_slot, "-", node_cursor);
  // This primary is done: the next one is the primary with the lowest first slot above it.
  const Connection* done = slots_[scan_slot];
  absl::flat_hash_map<const Connection*, int> first;
  for (int s = 0; s < kClusterSlots; ++s) {
    if (slots_[s] != nullptr) first.try_emplace(slots_[s], s);
  }
  const int from = done != nullptr && first.contains(done) ? first.at(done) : scan_slot;
  int next = -1;
  for (const auto& [conn, s] : first) {
    if (conn != done && s > from && (next < 0 || s < next)) next = s;
  }
  return next < 0 ? "0" : absl::StrCat(next, "-0");
}

Connection* Executor::AnyConnectedNode() {
  for (auto& [name, c] : nodes_) {
    if (c->state() == Connection::State::kConnected) return c.get();
  }
  return nullptr;
}

Connection* Executor::Node(const std::string& host, int port) {
  const std::string name = absl::StrCat(host, ":", port);
  auto it = nodes_.find(name);
  if (it != nodes_.end()) return it->second.get();
  // Credentials and TLS of the seed that answered; nodes of a cluster use database 0.
  RedisEndpoint ep = options_.seeds[seed_index_];
  ep.is_unix = false;
  ep.path.clear();
  ep.host = host;
  ep.port = port;
  ep.db = 0;
  auto conn = NewConnection(ep);
  Connection* raw = conn.get();
  nodes_.emplace(name, std::move(conn));
  raw->Tick(Clock::now());  // connects
  return raw;
}

void Executor::OnReply(Connection& conn, std::shared_ptr<Pending> p, const redisReply& r) {
  const std::string_view err = ErrorOf(r);
  if (err.empty()) {
    Finish(p, r);
    return;
  }
  if (ToEvalOnNoscript(*p, err)) {
    if (p->asking) SendAsking(conn, p->deadline);
    conn.Send(std::move(p));
    return;
  }
  if (loop_mode_ == RedisMode::kCluster) {
    // Redirects and these refusals come before Redis runs anything: resending is safe.
    const auto now = Clock::now();
    if (auto redirect = ParseRedirect(err)) {
      if (p->redirects < kMaxRedirects && now < p->deadline) {
        p->redirects++;
        Connection* target = Node(redirect->host, redirect->port);
        if (redirect->ask) {
          stats_.ask++;
          p->asking = true;
          SendAsking(*target, p->deadline);
          target->Send(std::move(p));
        } else {
          stats_.moved++;
          p->asking = false;
          if (!slots_.empty()) slots_[redirect->slot] = target;
          RequestRefresh();
          RouteCluster(std::move(p));
        }
        return;
      }
    } else if (absl::StartsWith(AbslView(err), "TRYAGAIN") ||
               absl::StartsWith(AbslView(err), "CLUSTERDOWN")) {
      const auto backoff = std::min(std::chrono::milliseconds(10) * (1 << std::min(p->retries, 5)),
                                    std::chrono::milliseconds(200));
      if (now + backoff < p->deadline) {
        p->retries++;
        stats_.tryagain++;
        if (absl::StartsWith(AbslView(err), "CLUSTERDOWN")) RequestRefresh();
        delayed_.emplace_back(now + backoff, std::move(p));
        return;
      }
    }
  }
  Finish(p, r);
}

void Executor::SendAsking(Connection& conn, Clock::time_point deadline) {
  auto asking = std::make_shared<Pending>();
  asking->argv = {"ASKING"};
  asking->internal = true;
  asking->deadline = deadline;
  conn.Send(std::move(asking));
}

void Executor::Finish(const std::shared_ptr<Pending>& p, const redisReply& r) {
  Reply reply = Reply::FromHiredis(&r);
  if (p->scan && p->scan_slot >= 0 && reply.type == Reply::Type::kArray &&
      reply.elements.size() == 2 && loop_mode_ == RedisMode::kCluster) {
    reply.elements[0].str = NextScanCursor(p->scan_slot, reply.elements[0].str);
  }
  p->Finish(std::move(reply));
}

void Executor::OnUp(Connection& conn) {
  if (&conn != seed_.get()) return;
  if (loop_mode_ == RedisMode::kStandalone) {
    seed_answered_ = true;
    return;
  }
  // Auto (or cluster, to verify): ask the server what it is before anything else is routed.
  auto p = std::make_shared<Pending>();
  p->argv = {"INFO", "cluster"};
  p->internal = true;
  p->deadline = Clock::now() + options_.command_timeout;
  p->done = [this, &conn](absl::StatusOr<Reply> r) { ResolveMode(conn, std::move(r)); };
  conn.Send(std::move(p));
}

void Executor::ResolveMode(const Connection& conn, absl::StatusOr<Reply> info) {
  if (!info.ok() || info->is_error()) return;  // the connection drops or retries; OnDown tells
  seed_answered_ = true;
  const bool cluster = InfoSaysClusterEnabled(info->str);
  if (loop_mode_ == RedisMode::kCluster) {
    RequestRefresh();
    return;
  }
  if (options_.mode == RedisMode::kCluster && !cluster) {
    SetMode(absl::FailedPreconditionError(
        absl::StrCat("--redis_mode=cluster, but the Redis at ", conn.endpoint().Redacted(),
                     " is not a cluster node (INFO cluster: cluster_enabled:0)")));
    return;
  }
  if (cluster && conn.endpoint().db != 0) {
    SetMode(absl::FailedPreconditionError(
        absl::StrCat("the Redis at ", conn.endpoint().Redacted(),
                     " is a cluster node: Redis Cluster has database 0 only")));
    return;
  }
  SetMode(cluster ? RedisMode::kCluster : RedisMode::kStandalone);
}

void Executor::SetMode(absl::StatusOr<RedisMode> mode) {
  {
    absl::MutexLock lock(&mu_);
    mode_ = mode;
  }
  if (!mode.ok()) {
    spdlog::error("{}", std::string(mode.status().message()));
    mode_failed_ = true;
    const absl::Status failed =
        MarkNotSent(absl::UnavailableError(std::string(mode.status().message())));
    for (auto& p : unrouted_) p->Finish(failed);
    unrouted_.clear();
    // We are inside the seed connection's reply callback: close it, free it at the next tick.
    if (seed_ != nullptr) {
      retired_.push_back(std::move(seed_));
      retired_.back()->Close("--redis_mode contradicts the server");
    }
    return;
  }
  loop_mode_ = *mode;
  spdlog::info("Redis mode: {}", loop_mode_ == RedisMode::kCluster ? "cluster" : "standalone");
  if (loop_mode_ == RedisMode::kCluster) {
    slots_.assign(kClusterSlots, nullptr);
    RequestRefresh();
  } else {
    RerouteUnrouted();
  }
}

void Executor::OnDown(Connection& conn) {
  if (&conn == seed_.get()) {
    // Nothing waits for a seed that is down: fail what waited for the mode or the first map.
    if (!refresh_in_flight_) {
      for (auto& p : unrouted_) p->Finish(NotSentError("Redis is unreachable"));
      unrouted_.clear();
    }
    // Standalone stays on the server that answered; otherwise try the next seed.
    if (!(loop_mode_ == RedisMode::kStandalone && seed_answered_) && options_.seeds.size() > 1) {
      NextSeed();
    }
    return;
  }
  if (loop_mode_ == RedisMode::kCluster) RequestRefresh();
}

void Executor::NextSeed() {
  seed_index_ = (seed_index_ + 1) % options_.seeds.size();
  // The old connection may be inside its own callback: retire it, close it at the next tick.
  retired_.push_back(std::move(seed_));
  seed_ = NewConnection(options_.seeds[seed_index_]);
}

void Executor::RequestRefresh() {
  refresh_wanted_ = true;
  MaybeRefresh(Clock::now());
}

void Executor::MaybeRefresh(Clock::time_point now) {
  if (loop_mode_ != RedisMode::kCluster || !refresh_wanted_ || refresh_in_flight_ ||
      now - last_refresh_ < kRefreshThrottle) {
    return;
  }
  Connection* via = seed_ != nullptr && seed_->state() == Connection::State::kConnected
                        ? seed_.get()
                        : AnyConnectedNode();
  if (via == nullptr) return;  // the seed reconnects by itself; the next tick tries again
  refresh_wanted_ = false;
  refresh_in_flight_ = true;
  last_refresh_ = now;
  stats_.topology_refreshes++;
  auto p = std::make_shared<Pending>();
  p->argv = {"CLUSTER", "SHARDS"};
  p->internal = true;
  p->deadline = now + options_.command_timeout;
  p->done = [this, via](absl::StatusOr<Reply> r) {
    if (r.ok() && r->is_error() && absl::StrContains(AbslView(r->str), "nknown subcommand")) {
      // Before Redis 7: CLUSTER SLOTS.
      auto q = std::make_shared<Pending>();
      q->argv = {"CLUSTER", "SLOTS"};
      q->internal = true;
      q->deadline = Clock::now() + options_.command_timeout;
      q->done = [this](absl::StatusOr<Reply> r2) { OnTopology(std::move(r2), true); };
      via->Send(std::move(q));
      return;
    }
    OnTopology(std::move(r), false);
  };
  via->Send(std::move(p));
}

void Executor::OnTopology(absl::StatusOr<Reply> reply, bool slots_reply) {
  refresh_in_flight_ = false;
  if (!reply.ok() || reply->is_error()) {
    refresh_wanted_ = true;  // again at the next tick (throttled)
    if (g_error_log.ShouldLog()) {
      spdlog::warn("Redis Cluster topology refresh failed: {}",
                   reply.ok() ? reply->str : reply.status().ToString());
    }
    return;
  }
  const bool tls = options_.seeds[seed_index_].tls;
  auto shards = slots_reply ? ParseClusterSlots(*reply) : ParseClusterShards(*reply, tls);
  if (!shards.ok()) {
    if (g_error_log.ShouldLog()) spdlog::error("{}", shards.status().ToString());
    return;
  }
  std::vector<Connection*> slots(kClusterSlots, nullptr);
  absl::flat_hash_map<std::string, bool> used;
  for (const ClusterShard& shard : *shards) {
    Connection* c = Node(shard.host, shard.port);
    used[c->name()] = true;
    for (const auto& [first, last] : shard.ranges) {
      std::fill(slots.begin() + first, slots.begin() + last + 1, c);
    }
  }
  // Nodes that serve no slot any more: closed once their last replies are in.
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    if (!used.contains(it->first)) {
      retired_.push_back(std::move(it->second));
      nodes_.erase(it++);
    } else {
      ++it;
    }
  }
  const bool was_known = topology_known_;
  slots_ = std::move(slots);
  topology_known_ = true;
  covered_ = std::none_of(slots_.begin(), slots_.end(), [](Connection* c) { return c == nullptr; });
  if (!was_known) {
    spdlog::info("Redis Cluster: {} primaries ({})", nodes_.size(),
                 covered_ ? "every slot served" : "some slots unserved");
  }
  RerouteUnrouted();
}

void Executor::RerouteUnrouted() {
  auto unrouted = std::move(unrouted_);
  unrouted_.clear();
  for (auto& p : unrouted) {
    if (!p->finished) Route(std::move(p));
  }
}

void Executor::UpdateHealth(Clock::time_point now) {
  int64_t connected = 0;
  bool all_up = true;
  if (loop_mode_ == RedisMode::kCluster) {
    for (const auto& [name, c] : nodes_) {
      if (c->state() == Connection::State::kConnected) connected++;
      if (!c->Healthy(now)) all_up = false;
    }
    stats_.nodes = connected;
    // NOT_SERVING only while some slot has had no reachable primary for a while.
    const bool served = topology_known_ && covered_ && all_up;
    if (served) {
      was_covered_ = true;
      healthy_ = true;
    } else {
      if (healthy_.load() && uncovered_since_ == Clock::time_point{}) uncovered_since_ = now;
      if (!was_covered_ || now - uncovered_since_ >= options_.uncovered_after) healthy_ = false;
    }
    if (served) uncovered_since_ = Clock::time_point{};
    return;
  }
  const bool up = loop_mode_ == RedisMode::kStandalone && seed_ != nullptr && seed_->Healthy(now);
  stats_.nodes = up ? 1 : 0;
  healthy_ = up;
  const int inline_seed = up && !seed_->endpoint().tls ? static_cast<int>(seed_index_) : -1;
  absl::MutexLock lock(&mu_);
  inline_seed_ = inline_seed;
}

void Executor::OnTick() {
  const auto now = Clock::now();
  if (lent_ != nullptr && now > lent_->deadline) {
    stats_.timeouts++;
    FailLent(InlineNoAnswer());
  }
  for (auto it = retired_.begin(); it != retired_.end();) {
    if ((*it)->in_flight() == 0) {
      it = retired_.erase(it);
    } else {
      (*it)->Tick(now);
      ++it;
    }
  }
  if (seed_ != nullptr) seed_->Tick(now);
  for (auto& [name, c] : nodes_) c->Tick(now);
  if (!delayed_.empty()) {
    std::vector<std::shared_ptr<Pending>> due;
    for (auto it = delayed_.begin(); it != delayed_.end();) {
      if (it->first <= now) {
        due.push_back(std::move(it->second));
        it = delayed_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& p : due) Route(std::move(p));
  }
  for (auto it = unrouted_.begin(); it != unrouted_.end();) {
    if ((*it)->finished || now > (*it)->deadline) {
      (*it)->Finish(NotSentError("Redis did not become reachable in time"));
      it = unrouted_.erase(it);
    } else {
      ++it;
    }
  }
  if (loop_mode_ == RedisMode::kCluster) {
    const bool degraded = !covered_ || !healthy_.load() || uncovered_since_ != Clock::time_point{};
    if (now - last_refresh_ >= (degraded ? kRefreshWhileDegraded : options_.topology_refresh)) {
      refresh_wanted_ = true;
    }
    MaybeRefresh(now);
  }
  UpdateHealth(now);
}

}  // namespace distkit::redis
