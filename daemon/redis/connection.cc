#include "daemon/redis/connection.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "daemon/common/logging.h"
#include "daemon/common/strings.h"
#include "daemon/redis/direct.h"
#include "daemon/redis/executor.h"
#include "daemon/redis/tls.h"

namespace distkit::redis {

void Pending::Finish(absl::StatusOr<Reply> result) {
  if (finished) return;
  finished = true;
  if (outstanding != nullptr) outstanding->fetch_sub(1, std::memory_order_relaxed);
  auto cb = std::move(done);
  if (cb) cb(std::move(result));
}

namespace {

LogEvery g_conn_log(std::chrono::seconds(5));

std::string NameOf(const RedisEndpoint& ep) {
  return ep.is_unix ? ep.path : absl::StrCat(ep.host, ":", ep.port);
}

}  // namespace

Connection::Connection(event_base* base, ConnectionOptions options, Listener* listener,
                       ExecutorStats* stats)
    : base_(base),
      options_(std::move(options)),
      listener_(listener),
      stats_(stats),
      name_(NameOf(options_.endpoint)) {}

Connection::~Connection() {
  Lost("connection closed", /*count_reconnect=*/false);
  FailWaiting("connection closed");
}

void Connection::Send(std::shared_ptr<Pending> p) {
  switch (state_) {
    case State::kConnected:
      Write(std::move(p));
      return;
    case State::kConnecting:
      waiting_.push_back(std::move(p));
      return;
    case State::kIdle:
      p->Finish(NotSentError(absl::StrCat("Redis at ", name_, " is unreachable (reconnecting)")));
      return;
  }
}

void Connection::Write(std::shared_ptr<Pending> p) {
  std::string cmd;
  if (!FormatCommand(p->argv, &cmd)) {
    p->Finish(NotSentError("out of memory formatting a Redis command"));
    return;
  }
  // Copied, so the commands of one loop iteration share buffer chains: the TLS bufferevent
  // writes one SSL record per chain, and a chain per command would undo pipelining.
  evbuffer_add(bufferevent_get_output(bev_), cmd.data(), cmd.size());
  stats_->commands++;
  in_flight_.push_back(std::move(p));
}

void Connection::SendInternal(std::vector<std::string> argv, ReplyCallback done) {
  auto p = std::make_shared<Pending>();
  p->argv = std::move(argv);
  p->internal = true;
  p->done = std::move(done);
  p->deadline = Clock::now() + options_.command_timeout;
  Write(std::move(p));
}

void Connection::Connect() {
  const RedisEndpoint& ep = options_.endpoint;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  if (absl::Status s = ResolveEndpoint(ep, &addr, &addr_len); !s.ok()) {
    const std::string err(s.message());
    if (g_conn_log.ShouldLog()) spdlog::warn("redis connect to {} failed: {}", ep.Redacted(), err);
    Lost(err, /*count_reconnect=*/true);
    return;
  }
  constexpr int kOpts = BEV_OPT_CLOSE_ON_FREE;
  if (ep.tls) {
    auto ssl = NewTlsSession(options_.tls_ctx, *options_.tls, ep.host);
    if (!ssl.ok()) {
      if (g_conn_log.ShouldLog())
        spdlog::error("redis {}: {}", name_, std::string(ssl.status().message()));
      Lost(std::string(ssl.status().message()), /*count_reconnect=*/true);
      return;
    }
    bev_ = bufferevent_openssl_socket_new(base_, -1, *ssl, BUFFEREVENT_SSL_CONNECTING, kOpts);
  } else {
    bev_ = bufferevent_socket_new(base_, -1, kOpts);
  }
  if (bev_ == nullptr) {
    Lost("cannot create a bufferevent", /*count_reconnect=*/true);
    return;
  }
  reader_ = redisReaderCreate();
  state_ = State::kConnecting;
  connect_deadline_ = Clock::now() + options_.command_timeout;
  bufferevent_setcb(bev_, &Connection::ReadThunk, nullptr, &Connection::EventThunk, this);
  bufferevent_enable(bev_, EV_READ | EV_WRITE);
  if (bufferevent_socket_connect(bev_, reinterpret_cast<sockaddr*>(&addr),
                                 static_cast<int>(addr_len)) != 0) {
    if (g_conn_log.ShouldLog()) {
      spdlog::warn("redis connect to {} failed: {}", ep.Redacted(), std::strerror(errno));
    }
    Lost("connect failed", /*count_reconnect=*/true);
    return;
  }
  if (!ep.is_unix) {
    const int one = 1;
    setsockopt(bufferevent_getfd(bev_), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
}

void Connection::ReadThunk(bufferevent* /*bev*/, void* self) {
  static_cast<Connection*>(self)->OnRead();
}

void Connection::EventThunk(bufferevent* /*bev*/, short what,  // NOLINT(google-runtime-int)
                            void* self) {
  auto* c = static_cast<Connection*>(self);
  if ((what & BEV_EVENT_CONNECTED) != 0) {
    c->OnConnected();
    return;
  }
  std::string why = (what & BEV_EVENT_EOF) != 0 ? "closed by the server" : "connection error";
  if (c->options_.endpoint.tls) {
    if (const unsigned long e = bufferevent_get_openssl_error(c->bev_)) {  // NOLINT
      char buf[256];
      ERR_error_string_n(e, buf, sizeof(buf));
      why = absl::StrCat("TLS: ", buf);
      if (SSL* ssl = bufferevent_openssl_get_ssl(c->bev_)) {
        if (const long v = SSL_get_verify_result(ssl);
            v != X509_V_OK) {  // NOLINT(google-runtime-int)
          absl::StrAppend(&why, " (", X509_verify_cert_error_string(v), ")");
        }
      }
    }
  }
  if ((what & BEV_EVENT_ERROR) != 0 && errno != 0 && why == "connection error") {
    why = std::strerror(errno);
  }
  if (c->state_ == State::kConnecting) {
    if (!c->logged_down_ || g_conn_log.ShouldLog()) {
      spdlog::warn("redis connect to {} failed: {}", c->options_.endpoint.Redacted(), why);
    }
    c->logged_down_ = true;
  } else if (g_conn_log.ShouldLog()) {
    spdlog::warn("Redis connection to {} lost ({}); reconnecting", c->name_, why);
  }
  c->Lost(why, /*count_reconnect=*/true);
}

void Connection::OnConnected() {
  state_ = State::kConnected;
  logged_down_ = false;
  spdlog::info("connected to Redis at {}", options_.endpoint.Redacted());
  // Set-up, pipelined ahead of everything else on this connection.
  auto check = [this](std::string what, bool fatal) {
    return [this, what = std::move(what), fatal](absl::StatusOr<Reply> r) {
      if (r.ok() && r->is_error()) {
        spdlog::error("Redis {} on {} failed: {}", what, name_, r->str);
        if (fatal) Close(absl::StrCat(what, " failed"));
      }
    };
  };
  for (auto& cmd : SetupCommands(options_.endpoint)) {
    std::string what = cmd[0];
    SendInternal(std::move(cmd), check(std::move(what), true));
  }
  for (const auto& [name, body] : EmbeddedScripts()) {
    SendInternal({"SCRIPT", "LOAD", body}, check("SCRIPT LOAD", false));
  }
  last_pong_ = Clock::now();
  next_ping_ = Clock::now();
  Tick(Clock::now());  // the first PING goes with the set-up
  const uint64_t gen = generation_;
  listener_->OnUp(*this);
  if (gen != generation_) return;
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& p : waiting) {
    if (!p->finished) Send(std::move(p));
  }
}

void Connection::OnRead() {
  evbuffer* in = bufferevent_get_input(bev_);
  while (const size_t n = evbuffer_get_contiguous_space(in)) {
    redisReaderFeed(reader_, reinterpret_cast<const char*>(evbuffer_pullup(in, n)), n);
    evbuffer_drain(in, n);
  }
  const uint64_t gen = generation_;
  while (true) {
    void* raw = nullptr;
    if (redisReaderGetReply(reader_, &raw) != REDIS_OK) {
      Close(absl::StrCat("protocol error: ", reader_->errstr));
      return;
    }
    if (raw == nullptr) return;
    std::unique_ptr<redisReply, void (*)(redisReply*)> reply(
        static_cast<redisReply*>(raw), [](redisReply* r) { freeReplyObject(r); });
    if (in_flight_.empty()) {
      Close("a reply nobody asked for");
      return;
    }
    std::shared_ptr<Pending> p = std::move(in_flight_.front());
    in_flight_.pop_front();
    if (p->finished) continue;
    if (p->internal) {
      p->Finish(Reply::FromHiredis(reply.get()));
    } else {
      listener_->OnReply(*this, std::move(p), *reply);
    }
    if (gen != generation_) return;  // the connection was dropped meanwhile
  }
}

void Connection::Close(std::string_view why) {
  if (state_ == State::kIdle) return;
  if (g_conn_log.ShouldLog()) spdlog::warn("dropping Redis connection to {}: {}", name_, why);
  Lost(why, /*count_reconnect=*/true);
}

void Connection::Lost(std::string_view why, bool count_reconnect) {
  const bool was_connecting = state_ == State::kConnecting;
  ++generation_;
  state_ = State::kIdle;
  ping_outstanding_ = false;
  if (bev_ != nullptr) {
    bufferevent_free(bev_);
    bev_ = nullptr;
  }
  if (reader_ != nullptr) {
    redisReaderFree(reader_);
    reader_ = nullptr;
  }
  auto in_flight = std::move(in_flight_);
  in_flight_.clear();
  for (auto& p : in_flight) {
    p->Finish(absl::UnavailableError(
        absl::StrCat("connection to Redis at ", name_, " lost; outcome unknown")));
  }
  if (was_connecting) FailWaiting(why);
  if (!count_reconnect) return;
  stats_->reconnects++;
  backoff_ =
      backoff_.count() == 0 ? options_.min_backoff : std::min(backoff_ * 2, options_.max_backoff);
  retry_at_ = Clock::now() + backoff_;
  listener_->OnDown(*this);
}

void Connection::FailWaiting(std::string_view why) {
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& p : waiting) {
    p->Finish(NotSentError(absl::StrCat("Redis at ", name_, " unreachable: ", AbslView(why))));
  }
}

bool Connection::Healthy(Clock::time_point now) const {
  return state_ == State::kConnected && now - last_pong_ < options_.unhealthy_after;
}

void Connection::Tick(Clock::time_point now) {
  switch (state_) {
    case State::kIdle:
      if (now >= retry_at_) Connect();
      return;
    case State::kConnecting:
      if (now > connect_deadline_) Close("connect timed out");
      return;
    case State::kConnected:
      break;
  }
  if (!in_flight_.empty() && now > in_flight_.front()->deadline) {
    stats_->timeouts++;
    in_flight_.front()->Finish(NoAnswerError(name_, options_.command_timeout));
    Close("a command timed out");
    return;
  }
  if (!ping_outstanding_ && now >= next_ping_) {
    ping_outstanding_ = true;
    next_ping_ = now + options_.ping_interval;
    SendInternal({"PING"}, [this](absl::StatusOr<Reply> r) {
      ping_outstanding_ = false;
      if (r.ok() && !r->is_error()) {
        last_pong_ = Clock::now();
        backoff_ = std::chrono::milliseconds(0);
      }
    });
  }
}

}  // namespace distkit::redis
