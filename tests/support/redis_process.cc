#include "tests/support/redis_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace distkit::testing {
namespace {

timeval ToTimeval(std::chrono::milliseconds d) {
  return timeval{static_cast<time_t>(d.count() / 1000),
                 static_cast<suseconds_t>((d.count() % 1000) * 1000)};
}

void AppendReply(const redisReply* r, std::string* out) {
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
        AppendReply(r->element[i], out);
      }
      break;
    default:  // string, status, error
      out->append(r->str, r->len);
  }
}

// A command that hangs (e.g. on a paused server) fails the test after this long instead of
// hanging it.
constexpr auto kCommandTimeout = std::chrono::seconds(10);

}  // namespace

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

pid_t SpawnLogged(const std::vector<std::string>& args, const std::string& log_path,
                  std::string* error) {
  // Everything the child needs is built before fork (the test process may have threads).
  std::vector<std::string> storage = args;
  std::vector<char*> argv;
  argv.reserve(storage.size() + 1);
  for (auto& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log < 0 || devnull < 0) {
    *error = "cannot open " + log_path + ": " + std::strerror(errno);
    if (log >= 0) close(log);
    if (devnull >= 0) close(devnull);
    return -1;
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
    static const char kMsg[] = "exec failed\n";
    ssize_t ignored = write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
    (void)ignored;
    _exit(127);
  }
  close(log);
  close(devnull);
  if (pid < 0) {
    *error = std::string("fork: ") + std::strerror(errno);
    return -1;
  }
  return pid;
}

void KillAndReap(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGCONT);  // a stopped process handles SIGKILL too, but be explicit: never hang
  kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

bool ChildExited(pid_t pid) {
  int status = 0;
  return waitpid(pid, &status, WNOHANG) == pid;
}

char ProcState(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');  // the command name may contain spaces and parentheses
  return (paren == std::string::npos || paren + 2 >= stat.size()) ? 0 : stat[paren + 2];
}

std::string FileTail(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  return text.size() > max_bytes ? "..." + text.substr(text.size() - max_bytes) : text;
}

bool PingContext(redisContext* c) {
  if (c == nullptr || c->err != 0) return false;
  auto* reply = static_cast<redisReply*>(redisCommand(c, "PING"));
  bool ok = reply != nullptr && reply->type == REDIS_REPLY_STATUS &&
            std::string(reply->str, reply->len) == "PONG";
  if (reply != nullptr) freeReplyObject(reply);
  return ok;
}

bool PingTcp(int port, std::chrono::milliseconds timeout) {
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, ToTimeval(timeout));
  if (c != nullptr && c->err == 0) redisSetTimeout(c, ToTimeval(timeout));
  bool ok = PingContext(c);
  if (c != nullptr) redisFree(c);
  return ok;
}

redisReply* CommandArgv(redisContext* c, const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const auto& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  return static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(args.size()), args.data(), lens.data()));
}

std::string FormatReply(const redisReply* r) {
  std::string out;
  AppendReply(r, &out);
  return out;
}

std::string TcpCommand(int port, const std::vector<std::string>& argv) {
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, ToTimeval(kCommandTimeout));
  if (c == nullptr) return "(no connection: out of memory)";
  if (c->err != 0) {
    std::string out = std::string("(no connection: ") + c->errstr + ")";
    redisFree(c);
    return out;
  }
  redisSetTimeout(c, ToTimeval(kCommandTimeout));
  return RunFormatAndFree(c, argv);
}

std::string RunFormatAndFree(redisContext* c, const std::vector<std::string>& argv) {
  redisReply* reply = CommandArgv(c, argv);
  std::string out;
  if (reply == nullptr) {
    out = std::string("(io error: ") + c->errstr + ")";
  } else {
    out = FormatReply(reply);
    freeReplyObject(reply);
  }
  redisFree(c);
  return out;
}

}  // namespace distkit::testing
