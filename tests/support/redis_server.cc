#include "tests/support/redis_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "tests/support/process.h"

namespace distkit::testing {
namespace {

constexpr auto kStartTimeout = std::chrono::seconds(10);
constexpr timeval kConnectTimeout{5, 0};
// A connection for a test: a command that hangs (e.g. on a paused server) fails the test after
// this long instead of hanging it.
constexpr timeval kCommandTimeout{10, 0};
constexpr timeval kPingTimeout{0, 200 * 1000};

// A 127.0.0.1 port nobody listens on right now (the kernel's choice). Another process may take
// it before redis-server binds it; Start() then retries with a new one.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

bool PingContext(redisContext* c) {
  if (c == nullptr || c->err != 0) return false;
  auto* reply = static_cast<redisReply*>(redisCommand(c, "PING"));
  bool ok = reply != nullptr && reply->type == REDIS_REPLY_STATUS &&
            std::string(reply->str, reply->len) == "PONG";
  if (reply != nullptr) freeReplyObject(reply);
  return ok;
}

// The process state letter from /proc/<pid>/stat ('T' = stopped), or 0 if unreadable.
char ProcState(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');  // the command name may contain spaces and parentheses
  return (paren == std::string::npos || paren + 2 >= stat.size()) ? 0 : stat[paren + 2];
}

void FormatReply(const redisReply* r, std::string* out) {
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      *out += std::to_string(r->integer);
      break;
    case REDIS_REPLY_NIL:
      *out += "(nil)";
      break;
    case REDIS_REPLY_ARRAY:
      for (size_t i = 0; i < r->elements; ++i) {
        if (i > 0) *out += ",";
        FormatReply(r->element[i], out);
      }
      break;
    default:  // string, status, error
      out->append(r->str, r->len);
  }
}

void KillAndReap(pid_t pid) {
  kill(pid, SIGCONT);  // a stopped process handles SIGKILL too, but be explicit: never hang
  kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

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
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (server->Launch()) return server;
    if (!server->options_.tcp) break;
    server->port_ = 0;  // someone may have taken the port we picked: try another one
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

bool RedisServer::Launch() {
  error_.clear();
  if (options_.tcp && port_ == 0) port_ = FreePort();
  if (options_.tcp && port_ == 0) {
    error_ = "no free TCP port";
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
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const std::string log_path = dir_ + "/redis.log";
  int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log < 0 || devnull < 0) {
    error_ = "cannot open " + log_path + ": " + std::strerror(errno);
    if (log >= 0) close(log);
    if (devnull >= 0) close(devnull);
    return false;
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    // Child: async-signal-safe calls only; die with the test process.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    signal(SIGPIPE, SIG_DFL);  // an ignored signal would stay ignored across exec
    dup2(devnull, STDIN_FILENO);
    dup2(log, STDOUT_FILENO);
    dup2(log, STDERR_FILENO);
    execv(argv[0], argv.data());
    static const char kMsg[] = "exec of redis-server failed\n";
    ssize_t ignored = write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
    (void)ignored;
    _exit(127);
  }
  close(log);
  close(devnull);
  if (pid < 0) {
    error_ = std::string("fork: ") + std::strerror(errno);
    return false;
  }
  pid_ = pid;

  bool exited = false;
  bool up = PollUntil(
      [&] {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
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
  if (ok && options_.tcp) {
    c = redisConnectWithTimeout("127.0.0.1", port_, kPingTimeout);
    if (c != nullptr && c->err == 0) redisSetTimeout(c, kPingTimeout);
    ok = PingContext(c);
    if (c != nullptr) redisFree(c);
  }
  return ok;
}

std::string RedisServer::LogTail() const {
  std::ifstream in(dir_ + "/redis.log", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string log = ss.str();
  return log.size() > 2000 ? "..." + log.substr(log.size() - 2000) : log;
}

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
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const auto& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(args.size()), args.data(), lens.data()));
  std::string out;
  if (reply == nullptr) {
    out = std::string("(io error: ") + c->errstr + ")";
  } else {
    FormatReply(reply, &out);
    freeReplyObject(reply);
  }
  redisFree(c);
  return out;
}

}  // namespace distkit::testing
