#include "tests/support/redis_server.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "tests/support/process.h"
#include "tests/support/redis_process.h"

namespace distkit::testing {
namespace {

constexpr auto kStartTimeout = std::chrono::seconds(10);
constexpr timeval kConnectTimeout{5, 0};
// A connection for a test: a command that hangs (e.g. on a paused server) fails the test after
// this long instead of hanging it.
constexpr timeval kCommandTimeout{10, 0};
constexpr timeval kPingTimeout{0, 200 * 1000};
constexpr std::chrono::milliseconds kPingTimeoutMs{200};

}  // namespace

std::unique_ptr<RedisServer> RedisServer::Start(Options options) {
  // Tests stop and restart servers under open connections; hiredis then writes to a closed
  // socket, and the default SIGPIPE action would end the whole test binary without a word.
  signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<RedisServer> server(new RedisServer());
  server->options_ = std::move(options);
  server->dir_ = MakeTempDir("distkit-redis");
  if (server->dir_.empty()) return nullptr;
  server->socket_path_ = server->dir_ + "/redis.sock";
  if (server->socket_path_.size() >= sizeof(sockaddr_un::sun_path)) {
    // A long $TMPDIR would exceed the Unix socket path limit: use /tmp instead.
    std::filesystem::remove(server->dir_);
    std::string tmpl = "/tmp/distkit-redis-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp(" << tmpl << "): " << std::strerror(errno);
      return nullptr;
    }
    server->dir_ = tmpl;
    server->socket_path_ = tmpl + "/redis.sock";
  }
  if (server->options_.tls) {
    auto certs = TlsCerts::Generate(server->dir_);
    if (!certs) return nullptr;
    server->certs_ = std::move(*certs);
  }
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (server->Launch()) return server;
    if (!server->options_.tcp && !server->options_.tls) break;
    // Someone may have taken a port we picked: try new ones.
    server->port_ = 0;
    server->tls_port_ = 0;
  }
  ADD_FAILURE() << "redis-server did not start: " << server->error_ << "\n" << server->LogTail();
  return nullptr;
}

RedisServer::~RedisServer() {
  if (pid_ > 0) KillAndReap(pid_);
  if (::testing::Test::HasFailure()) {
    std::cerr << "[redis-server log " << dir_ << "/redis.log]\n" << LogTail() << "\n";
  }
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

std::string RedisServer::url() const { return "unix:" + socket_path_; }

std::string RedisServer::tcp_url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

std::string RedisServer::tls_url() const {
  return "rediss://127.0.0.1:" + std::to_string(tls_port_);
}

bool RedisServer::Launch() {
  error_.clear();
  if (options_.tcp && port_ == 0) port_ = FreePort();
  if (options_.tcp && port_ == 0) {
    error_ = "no free TCP port";
    return false;
  }
  // FreePort may hand out the same port twice in a row.
  for (int i = 0; i < 5 && options_.tls && (tls_port_ == 0 || tls_port_ == port_); ++i) {
    tls_port_ = FreePort();
  }
  if (tls_port_ == port_) tls_port_ = 0;
  if (options_.tls && tls_port_ == 0) {
    error_ = "no free TCP port for TLS";
    return false;
  }
  // clang-format off
  std::vector<std::string> args = {DISTKIT_REDIS_SERVER,
                                   "--port", std::to_string(options_.tcp ? port_ : 0),
                                   "--bind", "127.0.0.1",
                                   "--unixsocket", socket_path_,
                                   "--unixsocketperm", "700",
                                   "--save", "",
                                   "--appendonly", "no",
                                   "--daemonize", "no",
                                   "--dir", dir_,
                                   "--enable-debug-command", "local"};
  // clang-format on
  if (options_.tls) {
    // clang-format off
    args.insert(args.end(), {"--tls-port", std::to_string(tls_port_),
                             "--tls-cert-file", certs_.server_cert,
                             "--tls-key-file", certs_.server_key,
                             "--tls-ca-cert-file", certs_.ca_cert,
                             "--tls-auth-clients", options_.tls_auth_clients ? "yes" : "no"});
    // clang-format on
  }
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
  const pid_t pid = SpawnLogged(args, dir_ + "/redis.log", &error_);
  if (pid < 0) return false;
  pid_ = pid;

  bool exited = false;
  bool up = PollUntil(
      [&] {
        if (ChildExited(pid_)) {
          exited = true;
          return true;
        }
        return Ping();
      },
      std::chrono::duration_cast<std::chrono::milliseconds>(kStartTimeout));
  if (exited) {
    pid_ = -1;
    error_ = "redis-server exited during start-up";
    return false;
  }
  if (!up) {
    KillAndReap(pid_);
    pid_ = -1;
    error_ = "no PONG within 10 s";
    return false;
  }
  return true;
}

bool RedisServer::Ping() const {
  redisContext* c = redisConnectUnixWithTimeout(socket_path_.c_str(), kPingTimeout);
  if (c != nullptr && c->err == 0) redisSetTimeout(c, kPingTimeout);
  bool ok = PingContext(c);
  if (c != nullptr) redisFree(c);
  // The TLS port needs no check of its own: redis-server binds every port before it accepts
  // anything, so an answer on the socket means the TLS listener is up too.
  if (ok && options_.tcp) ok = PingTcp(port_, kPingTimeoutMs);
  return ok;
}

std::string RedisServer::LogTail() const { return FileTail(dir_ + "/redis.log"); }

void RedisServer::Stop() {
  if (pid_ <= 0) return;
  KillAndReap(pid_);
  pid_ = -1;
  unlink(socket_path_.c_str());  // SIGKILL leaves the socket file behind
}

void RedisServer::Restart() {
  Stop();
  if (!Launch()) ADD_FAILURE() << "redis-server did not restart: " << error_ << "\n" << LogTail();
}

void RedisServer::Pause() {
  if (pid_ <= 0) return;
  kill(pid_, SIGSTOP);
  // SIGSTOP is asynchronous: wait until the server has really stopped, so the caller's next step
  // sees a server that does not answer.
  if (!PollUntil([&] { return ProcState(pid_) == 'T'; }, std::chrono::seconds(10))) {
    ADD_FAILURE() << "redis-server (pid " << pid_ << ") did not stop";
  }
}

void RedisServer::Resume() {
  if (pid_ <= 0) return;
  kill(pid_, SIGCONT);
  if (!PollUntil([&] { return ProcState(pid_) != 'T'; }, std::chrono::seconds(10))) {
    ADD_FAILURE() << "redis-server (pid " << pid_ << ") did not continue";
  }
}

redisContext* RedisServer::Connect() const {
  redisContext* c = redisConnectUnixWithTimeout(socket_path_.c_str(), kConnectTimeout);
  if (c == nullptr) {
    ADD_FAILURE() << "redisConnectUnix(" << socket_path_ << "): out of memory";
    return nullptr;
  }
  if (c->err != 0) {
    // Returned anyway (commands on it fail cleanly); the caller still owns it.
    ADD_FAILURE() << "redisConnectUnix(" << socket_path_ << "): " << c->errstr;
    return c;
  }
  redisSetTimeout(c, kCommandTimeout);
  return c;
}

std::string RedisServer::Command(const std::vector<std::string>& argv) const {
  redisContext* c = Connect();
  if (c == nullptr) return "(no connection)";
  return RunFormatAndFree(c, argv);
}

}  // namespace distkit::testing
