#include "daemon/redis/direct.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "daemon/common/strings.h"

namespace distkit::redis {

void ReplyFree::operator()(redisReply* r) const { freeReplyObject(r); }

absl::Status ResolveEndpoint(const RedisEndpoint& ep, sockaddr_storage* out, socklen_t* len) {
  if (ep.is_unix) {
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    if (ep.path.size() >= sizeof(un.sun_path)) {
      return absl::InvalidArgumentError("socket path too long");
    }
    std::memcpy(un.sun_path, ep.path.data(), ep.path.size());
    std::memcpy(out, &un, sizeof(un));
    *len = sizeof(un);
    return absl::OkStatus();
  }
  // Blocking, as hiredis did; cluster nodes announce IP literals.
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = absl::StrCat(ep.port);
  if (const int rc = getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return absl::UnavailableError(gai_strerror(rc));
  }
  std::memcpy(out, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return absl::OkStatus();
}

bool FormatCommand(const std::vector<std::string>& argv, std::string* out) {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  args.reserve(argv.size());
  lens.reserve(argv.size());
  for (const auto& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  char* cmd = nullptr;
  const int len =
      redisFormatCommandArgv(&cmd, static_cast<int>(args.size()), args.data(), lens.data());
  if (len < 0 || cmd == nullptr) return false;
  out->assign(cmd, static_cast<size_t>(len));
  std::free(cmd);
  return true;
}

std::vector<std::vector<std::string>> SetupCommands(const RedisEndpoint& ep) {
  std::vector<std::vector<std::string>> cmds;
  if (!ep.password.empty()) {
    if (ep.user.empty()) {
      cmds.push_back({"AUTH", ep.password});
    } else {
      cmds.push_back({"AUTH", ep.user, ep.password});
    }
  }
  if (ep.db != 0) cmds.push_back({"SELECT", absl::StrCat(ep.db)});
  return cmds;
}

namespace {

// Waits for `events` on `fd` until `until`: true when they came.
bool WaitFor(int fd, short events, Clock::time_point until) {  // NOLINT(google-runtime-int)
  while (true) {
    const auto left = std::max(until - Clock::now(), Clock::duration::zero());
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec ts{static_cast<time_t>(ns / 1000000000),
                static_cast<long>(ns % 1000000000)};  // NOLINT
    pollfd pfd{fd, events, 0};
    const int rc = ppoll(&pfd, 1, &ts, nullptr);
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return true;  // let the read / write report it
  }
}

}  // namespace

DirectConnection::DirectConnection(RedisEndpoint endpoint) : endpoint_(std::move(endpoint)) {}

DirectConnection::~DirectConnection() { Close(); }

void DirectConnection::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (reader_ != nullptr) redisReaderFree(reader_);
  reader_ = nullptr;
}

bool DirectConnection::Ready() {
  if (fd_ < 0) return false;
  pollfd pfd{fd_, POLLIN, 0};
  if (poll(&pfd, 1, 0) != 0) {
    Close();  // EOF, an error, or bytes nobody asked for
    return false;
  }
  return true;
}

absl::Status DirectConnection::Connect(Clock::time_point deadline) {
  Close();
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  if (absl::Status s = ResolveEndpoint(endpoint_, &addr, &addr_len); !s.ok()) return s;
  fd_ = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return absl::UnavailableError(std::strerror(errno));
  if (!endpoint_.is_unix) {
    const int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) {
      absl::Status s = absl::UnavailableError(std::strerror(errno));
      Close();
      return s;
    }
    int err = 0;
    socklen_t err_len = sizeof(err);
    if (!WaitFor(fd_, POLLOUT, deadline)) err = ETIMEDOUT;
    if (err == 0) getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &err_len);
    if (err != 0) {
      Close();
      return absl::UnavailableError(std::strerror(err));
    }
  }
  reader_ = redisReaderCreate();
  for (const auto& cmd : SetupCommands(endpoint_)) {
    auto r = Call(cmd, deadline);
    if (!r.ok() || *r == nullptr || (*r)->type == REDIS_REPLY_ERROR) {
      const absl::Status s = !r.ok() ? r.status()
                             : *r == nullptr
                                 ? absl::DeadlineExceededError("no answer")
                                 : absl::UnavailableError(std::string((*r)->str, (*r)->len));
      Close();
      return absl::UnavailableError(absl::StrCat(AbslView(cmd[0]), ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RawReply> DirectConnection::Call(const std::vector<std::string>& argv,
                                                Clock::time_point deadline) {
  bool partly = false;
  if (absl::Status s = Send(argv, &partly); !s.ok()) return s;
  return Receive(deadline, Clock::time_point{});
}

absl::Status DirectConnection::Send(const std::vector<std::string>& argv, bool* partly_written) {
  *partly_written = false;
  std::string cmd;
  if (!FormatCommand(argv, &cmd)) return absl::ResourceExhaustedError("cannot format a command");
  size_t off = 0;
  // A command goes to an idle connection: its socket buffer has room, a wait here is rare.
  const auto until = Clock::now() + std::chrono::milliseconds(100);
  while (off < cmd.size()) {
    const ssize_t n = ::send(fd_, cmd.data() + off, cmd.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      *partly_written = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && WaitFor(fd_, POLLOUT, until)) {
      continue;
    }
    absl::Status s =
        absl::UnavailableError(absl::StrCat("writing to Redis at ", endpoint_.Redacted(), ": ",
                                            n < 0 ? std::strerror(errno) : "timed out"));
    Close();
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<RawReply> DirectConnection::Receive(Clock::time_point until,
                                                   Clock::time_point spin_until) {
  while (true) {
    void* raw = nullptr;
    if (redisReaderGetReply(reader_, &raw) != REDIS_OK) {
      absl::Status s = absl::UnavailableError(
          absl::StrCat("protocol error from Redis at ", endpoint_.Redacted()));
      Close();
      return s;
    }
    if (raw != nullptr) return RawReply(static_cast<redisReply*>(raw));
    char buf[16384];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      redisReaderFeed(reader_, buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      const auto now = Clock::now();
      if (now < spin_until) continue;  // read again rather than sleep: see the header
      if (now >= until || !WaitFor(fd_, POLLIN, until)) return RawReply();
      continue;
    }
    absl::Status s = absl::UnavailableError(
        absl::StrCat("connection to Redis at ", endpoint_.Redacted(), " lost (",
                     n == 0 ? "closed by the server" : std::strerror(errno), "); outcome unknown"));
    Close();
    return s;
  }
}

}  // namespace distkit::redis
