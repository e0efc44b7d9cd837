#include "daemon/redis/executor.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>

#include <cstdio>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/common/logging.h"
#include "daemon/common/strings.h"

namespace distkit::redis {

using Clock = std::chrono::steady_clock;

struct Executor::Pending {
  std::vector<std::string> argv;
  std::string script;  // script name when argv is an EVALSHA
  ReplyCallback done;
  Clock::time_point deadline;
  bool finished = false;
  bool noscript_retried = false;
  std::atomic<int64_t>* outstanding = nullptr;  // the executor's count, while counted

  void Finish(absl::StatusOr<Reply> result) {
    if (finished) return;
    finished = true;
    if (outstanding != nullptr) outstanding->fetch_sub(1, std::memory_order_relaxed);
    auto cb = std::move(done);
    cb(std::move(result));
  }
};

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

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

LogEvery g_error_log(std::chrono::seconds(5));

}  // namespace

Executor::Executor(ExecutorOptions options) : options_(std::move(options)) {
  static std::once_flag once;
  std::call_once(once, [] { evthread_use_pthreads(); });
  for (const auto& [name, body] : EmbeddedScripts()) script_sha_[name] = Sha1Hex(body);
  base_ = event_base_new();
  wake_ev_ = event_new(
      base_, -1, EV_PERSIST,
      [](evutil_socket_t, short, void* self) { static_cast<Executor*>(self)->Drain(); }, this);
  tick_ev_ = event_new(
      base_, -1, EV_PERSIST,
      [](evutil_socket_t, short, void* self) { static_cast<Executor*>(self)->OnTick(); }, this);
  reconnect_ev_ = event_new(
      base_, -1, 0,
      [](evutil_socket_t, short, void* self) { static_cast<Executor*>(self)->Connect(); }, this);
  event_add(wake_ev_, nullptr);
  const auto tick = std::min<std::chrono::milliseconds>(
      std::chrono::milliseconds(10), options_.command_timeout / 4 + std::chrono::milliseconds(1));
  timeval tv{0, static_cast<suseconds_t>(tick.count() * 1000)};
  event_add(tick_ev_, &tv);
}

Executor::~Executor() {
  Stop();
  event_free(wake_ev_);
  event_free(tick_ev_);
  event_free(reconnect_ev_);
  event_base_free(base_);
}

void Executor::Start() {
  event_active(reconnect_ev_, 0, 0);
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
}

void Executor::Command(std::vector<std::string> argv, ReplyCallback done) {
  auto p = std::make_unique<Pending>();
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

bool Executor::Healthy() const {
  return connected_.load() &&
         NowNs() - last_pong_ns_.load() <
             std::chrono::duration_cast<std::chrono::nanoseconds>(options_.unhealthy_after).count();
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

void Executor::Drain() {
  std::vector<std::unique_ptr<Pending>> batch;
  bool stopping;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(queue_);
    stopping = stopping_;
  }
  if (!batch.empty()) stats_.writes++;
  for (auto& up : batch) {
    std::shared_ptr<Pending> p(std::move(up));
    if (stopping) {
      p->Finish(NotSentError("Redis executor is shutting down"));
    } else if (state_ == State::kConnected) {
      Send(std::move(p));
    } else if (state_ == State::kConnecting) {
      waiting_.push_back(std::move(p));
    } else {
      p->Finish(NotSentError("Redis is unreachable (reconnecting)"));
    }
  }
  if (stopping) {
    for (auto& p : waiting_) p->Finish(NotSentError("Redis executor is shutting down"));
    waiting_.clear();
    if (ctx_ != nullptr) {
      auto* c = ctx_;
      ctx_ = nullptr;
      state_ = State::kDisconnected;
      connected_ = false;
      redisAsyncFree(c);  // fails what is in flight through OnReply(nullptr)
    }
    event_del(reconnect_ev_);
    event_base_loopbreak(base_);
  }
}

void Executor::Send(std::shared_ptr<Pending> p) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  argv.reserve(p->argv.size());
  lens.reserve(p->argv.size());
  for (const auto& a : p->argv) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* priv = new std::shared_ptr<Pending>(p);
  if (redisAsyncCommandArgv(ctx_, &Executor::OnReplyThunk, priv, static_cast<int>(argv.size()),
                            argv.data(), lens.data()) != REDIS_OK) {
    delete priv;
    p->Finish(NotSentError("Redis connection is closing"));
    return;
  }
  stats_.commands++;
  in_flight_.push_back(std::move(p));
}

void Executor::Connect() {
  if (ctx_ != nullptr) return;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
  }
  const auto& ep = options_.seeds.front();
  redisAsyncContext* c = ep.is_unix ? redisAsyncConnectUnix(ep.path.c_str())
                                    : redisAsyncConnect(ep.host.c_str(), ep.port);
  if (c == nullptr || c->err) {
    if (g_error_log.ShouldLog()) {
      spdlog::warn("redis connect to {} failed: {}", ep.Redacted(), c ? c->errstr : "oom");
    }
    if (c) redisAsyncFree(c);
    ScheduleReconnect();
    return;
  }
  c->data = this;
  ctx_ = c;
  state_ = State::kConnecting;
  connect_deadline_ = Clock::now() + options_.command_timeout;
  redisLibeventAttach(c, base_);
  redisAsyncSetConnectCallback(c, &Executor::OnConnectThunk);
  redisAsyncSetDisconnectCallback(c, &Executor::OnDisconnectThunk);
}

void Executor::ScheduleReconnect() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
  }
  backoff_ =
      backoff_.count() == 0 ? options_.min_backoff : std::min(backoff_ * 2, options_.max_backoff);
  timeval tv{static_cast<time_t>(backoff_.count() / 1000),
             static_cast<suseconds_t>((backoff_.count() % 1000) * 1000)};
  event_add(reconnect_ev_, &tv);
}

void Executor::DropConnection(std::string_view why) {
  if (ctx_ == nullptr) return;
  if (g_error_log.ShouldLog()) spdlog::warn("dropping Redis connection: {}", why);
  auto* c = ctx_;
  ctx_ = nullptr;
  const bool was_connecting = state_ == State::kConnecting;
  state_ = State::kDisconnected;
  connected_ = false;
  ping_outstanding_ = false;
  redisAsyncFree(c);  // in-flight commands fail through OnReply(nullptr): outcome unknown
  if (was_connecting) {
    for (auto& p : waiting_)
      p->Finish(NotSentError(absl::StrCat("Redis unreachable: ", AbslView(why))));
    waiting_.clear();
  }
  in_flight_.clear();
  stats_.reconnects++;
  ScheduleReconnect();
}

void Executor::OnConnectThunk(const redisAsyncContext* c, int status) {
  auto* self = static_cast<Executor*>(c->data);
  if (c != self->ctx_) return;
  self->OnConnect(status);
}

void Executor::OnDisconnectThunk(const redisAsyncContext* c, int status) {
  auto* self = static_cast<Executor*>(c->data);
  if (c != self->ctx_) return;  // we dropped it ourselves
  self->OnDisconnect(status);
}

void Executor::OnConnect(int status) {
  if (status != REDIS_OK) {
    if (g_error_log.ShouldLog()) {
      spdlog::warn("redis connect to {} failed: {}", options_.seeds.front().Redacted(), ctx_->errstr);
    }
    ctx_ = nullptr;  // hiredis frees it
    state_ = State::kDisconnected;
    for (auto& p : waiting_) p->Finish(NotSentError("Redis is unreachable"));
    waiting_.clear();
    stats_.reconnects++;
    ScheduleReconnect();
    return;
  }
  state_ = State::kConnected;
  spdlog::info("connected to Redis at {}", options_.seeds.front().Redacted());
  // Connection set-up, pipelined ahead of everything else on this connection.
  auto setup_cb = [this](const std::string& what) {
    return [this, what](absl::StatusOr<Reply> r) {
      if (r.ok() && r->is_error()) {
        spdlog::error("Redis {} failed: {}", what, r->str);
        if (what != "SCRIPT LOAD") DropConnection(absl::StrCat(what, " failed"));
      }
    };
  };
  const auto& ep = options_.seeds.front();
  auto send_setup = [&](std::vector<std::string> argv, const std::string& what) {
    auto p = std::make_shared<Pending>();
    p->argv = std::move(argv);
    p->done = setup_cb(what);
    p->deadline = Clock::now() + options_.command_timeout;
    Send(std::move(p));
  };
  if (!ep.password.empty()) {
    if (ep.user.empty()) {
      send_setup({"AUTH", ep.password}, "AUTH");
    } else {
      send_setup({"AUTH", ep.user, ep.password}, "AUTH");
    }
  }
  if (ep.db != 0) send_setup({"SELECT", absl::StrCat(ep.db)}, "SELECT");
  for (const auto& [name, body] : EmbeddedScripts())
    send_setup({"SCRIPT", "LOAD", body}, "SCRIPT LOAD");
  connected_ = true;
  SendPing();
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& p : waiting) {
    if (!p->finished) Send(std::move(p));
  }
}

void Executor::OnDisconnect(int status) {
  // hiredis has already failed every pending callback and frees the context after this.
  ctx_ = nullptr;
  state_ = State::kDisconnected;
  connected_ = false;
  ping_outstanding_ = false;
  in_flight_.clear();
  stats_.reconnects++;
  if (g_error_log.ShouldLog()) spdlog::warn("Redis connection lost; reconnecting");
  ScheduleReconnect();
}

void Executor::OnReplyThunk(redisAsyncContext* c, void* reply, void* privdata) {
  auto* holder = static_cast<std::shared_ptr<Pending>*>(privdata);
  std::shared_ptr<Pending> p = std::move(*holder);
  delete holder;
  static_cast<Executor*>(c->data)->OnReply(std::move(p), reply);
}

void Executor::OnReply(std::shared_ptr<Pending> p, void* raw) {
  if (p->finished) return;
  if (raw == nullptr) {
    p->Finish(absl::UnavailableError("connection to Redis lost; outcome unknown"));
    return;
  }
  const auto* r = static_cast<const redisReply*>(raw);
  if (r->type == REDIS_REPLY_ERROR && !p->script.empty() && !p->noscript_retried &&
      absl::StartsWith(absl::string_view(r->str, r->len), "NOSCRIPT") && ctx_ != nullptr) {
    // The script cache was flushed (restart, failover, SCRIPT FLUSH): send the body once.
    p->noscript_retried = true;
    stats_.noscript_retries++;
    p->argv[0] = "EVAL";
    p->argv[1] = EmbeddedScripts().at(p->script);
    Send(std::move(p));
    return;
  }
  p->Finish(Reply::FromHiredis(r));
}

void Executor::SendPing() {
  if (ping_outstanding_ || ctx_ == nullptr || state_ != State::kConnected) return;
  ping_outstanding_ = true;
  next_ping_ = Clock::now() + options_.ping_interval;
  auto p = std::make_shared<Pending>();
  p->argv = {"PING"};
  p->deadline = Clock::now() + options_.command_timeout;
  p->done = [this](absl::StatusOr<Reply> r) {
    ping_outstanding_ = false;
    if (r.ok() && !r->is_error()) {
      last_pong_ns_ = NowNs();
      backoff_ = std::chrono::milliseconds(0);
    }
  };
  Send(std::move(p));
}

void Executor::OnTick() {
  const auto now = Clock::now();
  while (!in_flight_.empty() && in_flight_.front()->finished) in_flight_.pop_front();
  if (!in_flight_.empty() && now > in_flight_.front()->deadline) {
    stats_.timeouts++;
    in_flight_.front()->Finish(absl::DeadlineExceededError(
        absl::StrCat("Redis did not answer within ", options_.command_timeout.count(), " ms")));
    DropConnection("a command timed out");
    return;
  }
  if (state_ == State::kConnecting && now > connect_deadline_) {
    DropConnection("connect timed out");
    return;
  }
  if (state_ == State::kConnected && now >= next_ping_) SendPing();
}

}  // namespace distkit::redis
