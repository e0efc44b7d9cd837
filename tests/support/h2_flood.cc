#include "tests/support/h2_flood.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace distkit::testing {
namespace {

constexpr uint8_t kData = 0x0, kHeaders = 0x1, kRstStream = 0x3, kSettings = 0x4, kPing = 0x6,
                  kGoAway = 0x7, kWindowUpdate = 0x8;
constexpr uint8_t kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4;
constexpr uint16_t kSettingsEnablePush = 0x2, kSettingsMaxConcurrentStreams = 0x3,
                   kSettingsInitialWindowSize = 0x4, kSettingsMaxFrameSize = 0x5;

void PutU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}

uint32_t GetU32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(s[at + i]);
  return v;
}

// HPACK integer with an N-bit prefix (RFC 7541 §5.1); the prefix bits of the first byte are 0.
void PutHpackInt(std::string* out, uint64_t v, int prefix_bits) {
  const uint64_t max_prefix = (1u << prefix_bits) - 1;
  if (v < max_prefix) {
    out->push_back(static_cast<char>(v));
    return;
  }
  out->push_back(static_cast<char>(max_prefix));
  v -= max_prefix;
  while (v >= 128) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// A literal header field without indexing, new name, no Huffman coding (RFC 7541 §6.2.2): the
// encoder needs no table state.
void PutHeader(std::string* out, const std::string& name, const std::string& value) {
  out->push_back(0x00);
  PutHpackInt(out, name.size(), 7);
  out->append(name);
  PutHpackInt(out, value.size(), 7);
  out->append(value);
}

int Connect(const std::string& address) {
  std::string a = address;
  if (a.rfind("unix:", 0) == 0) a = a.substr(5);
  int fd = -1;
  if (!a.empty() && a[0] == '/') {
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, a.c_str(), sizeof(addr.sun_path) - 1);
    if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd);
      return -1;
    }
  } else {
    const size_t colon = a.rfind(':');
    if (colon == std::string::npos) return -1;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::stoi(a.substr(colon + 1))));
    if (fd < 0 || inet_pton(AF_INET, a.substr(0, colon).c_str(), &addr.sin_addr) != 1 ||
        connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (fd >= 0) close(fd);
      return -1;
    }
  }
  if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

int RemainingMs(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

}  // namespace

H2Flood::H2Flood(const std::string& address) {
  fd_ = Connect(address);
  if (fd_ < 0) return;
  std::string settings;
  for (auto [id, value] : {std::pair<uint16_t, uint32_t>{kSettingsEnablePush, 0},
                           std::pair<uint16_t, uint32_t>{kSettingsInitialWindowSize, 0}}) {
    settings.push_back(static_cast<char>(id >> 8));
    settings.push_back(static_cast<char>(id));
    PutU32(&settings, value);
  }
  if (!SendAll("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) return;
  SendFrame(kSettings, 0, 0, settings);
}

H2Flood::~H2Flood() { Close(); }

void H2Flood::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool H2Flood::SendAll(const std::string& bytes) {
  size_t sent = 0;
  while (fd_ >= 0 && sent < bytes.size()) {
    const ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      // The server is not reading: handle its frames meanwhile (a peer must not deadlock).
      pollfd p{fd_, POLLOUT | POLLIN, 0};
      poll(&p, 1, 100);
      if ((p.revents & POLLIN) != 0) Receive();
      if (stats_.closed) {
        Close();
        return false;
      }
      continue;
    }
    stats_.closed = true;
    Close();
    return false;
  }
  return fd_ >= 0;
}

void H2Flood::SendFrame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload) {
  std::string frame;
  frame.reserve(9 + payload.size());
  const auto len = static_cast<uint32_t>(payload.size());
  frame.push_back(static_cast<char>(len >> 16));
  frame.push_back(static_cast<char>(len >> 8));
  frame.push_back(static_cast<char>(len));
  frame.push_back(static_cast<char>(type));
  frame.push_back(static_cast<char>(flags));
  PutU32(&frame, stream & 0x7fffffffu);
  frame.append(payload);
  SendAll(frame);
}

void H2Flood::Receive() {
  char buf[65536];
  while (fd_ >= 0) {
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      in_.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    stats_.closed = true;  // EOF or error
    return;
  }
}

bool H2Flood::ReadFrames(std::chrono::milliseconds wait) {
  if (fd_ < 0) return false;
  pollfd p{fd_, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(wait.count())) <= 0) return true;
  Receive();
  if (!parsing_) {
    // Handling a frame may send one, and a blocked send receives (Receive() only appends).
    parsing_ = true;
    size_t at = 0;
    while (in_.size() - at >= 9) {
      const uint32_t len = GetU32(in_, at) >> 8;
      if (in_.size() - at < 9 + len) break;
      const auto type = static_cast<uint8_t>(in_[at + 3]);
      const auto flags = static_cast<uint8_t>(in_[at + 4]);
      const uint32_t stream = GetU32(in_, at + 5) & 0x7fffffffu;
      HandleFrame(type, flags, stream, in_.substr(at + 9, len));
      at += 9 + len;
    }
    in_.erase(0, at);
    parsing_ = false;
  }
  if (stats_.closed) Close();
  return fd_ >= 0;
}

void H2Flood::HandleFrame(uint8_t type, uint8_t flags, uint32_t stream,
                          const std::string& payload) {
  switch (type) {
    case kSettings:
      if ((flags & kAck) != 0) return;
      for (size_t i = 0; i + 6 <= payload.size(); i += 6) {
        const uint16_t id = static_cast<uint16_t>((static_cast<uint8_t>(payload[i]) << 8) |
                                                  static_cast<uint8_t>(payload[i + 1]));
        const uint32_t value = GetU32(payload, i + 2);
        if (id == kSettingsInitialWindowSize) {
          stream_window_ += static_cast<int64_t>(value) - initial_stream_window_;
          initial_stream_window_ = value;
        } else if (id == kSettingsMaxConcurrentStreams) {
          max_streams_ = value;
        } else if (id == kSettingsMaxFrameSize) {
          max_frame_ = value;
        }
      }
      SendFrame(kSettings, kAck, 0, "");
      return;
    case kPing:
      if ((flags & kAck) == 0) SendFrame(kPing, kAck, 0, payload);
      return;
    case kWindowUpdate:
      if (payload.size() < 4) return;
      if (stream == 0) {
        conn_window_ += GetU32(payload, 0) & 0x7fffffffu;
      } else if (stream == current_stream_) {
        stream_window_ += GetU32(payload, 0) & 0x7fffffffu;
      }
      return;
    case kHeaders:
      if ((flags & kEndStream) != 0) ++stats_.trailers;
      return;
    case kRstStream:
      ++stats_.resets;
      if (stream == current_stream_) current_reset_ = true;  // stop sending on it
      return;
    case kGoAway:
      stats_.goaway = true;
      return;
    default:
      return;
  }
}

void H2Flood::Pump(std::chrono::milliseconds wait) { ReadFrames(wait); }

int64_t H2Flood::Flood(const std::string& path, const std::string& message, int64_t calls,
                       std::chrono::steady_clock::time_point deadline) {
  std::string headers;
  PutHeader(&headers, ":method", "POST");
  PutHeader(&headers, ":scheme", "http");
  PutHeader(&headers, ":path", path);
  PutHeader(&headers, ":authority", "localhost");
  PutHeader(&headers, "content-type", "application/grpc");
  PutHeader(&headers, "te", "trailers");
  std::string body;
  body.push_back(0);  // not compressed
  PutU32(&body, static_cast<uint32_t>(message.size()));
  body.append(message);

  int64_t complete = 0;
  for (int64_t call = 0; call < calls; ++call) {
    if (!ReadFrames(std::chrono::milliseconds(0)) || stats_.goaway) break;
    if (std::chrono::steady_clock::now() >= deadline) break;
    if (stats_.streams_opened - stats_.trailers - stats_.resets >= max_streams_) {
      ReadFrames(std::chrono::milliseconds(std::min(RemainingMs(deadline), 200)));
      if (stats_.streams_opened - stats_.trailers - stats_.resets >= max_streams_) {
        stats_.stream_limited = true;
        break;
      }
    }
    current_stream_ = static_cast<uint32_t>(2 * stats_.streams_opened + 1);
    stream_window_ = initial_stream_window_;
    current_reset_ = false;
    SendFrame(kHeaders, kEndHeaders, current_stream_, headers);
    ++stats_.streams_opened;
    size_t sent = 0;
    while (fd_ >= 0 && sent < body.size() && !current_reset_) {
      const int64_t chunk = std::min<int64_t>(
          {static_cast<int64_t>(body.size() - sent), max_frame_, conn_window_, stream_window_});
      if (chunk <= 0) {
        ++stats_.window_waits;
        if (RemainingMs(deadline) == 0) break;
        if (!ReadFrames(std::chrono::milliseconds(std::min(RemainingMs(deadline), 100))) ||
            stats_.goaway) {
          break;
        }
        continue;
      }
      const bool last = sent + static_cast<size_t>(chunk) == body.size();
      SendFrame(kData, last ? kEndStream : 0, current_stream_,
                body.substr(sent, static_cast<size_t>(chunk)));
      sent += static_cast<size_t>(chunk);
      conn_window_ -= chunk;
      stream_window_ -= chunk;
    }
    if (current_reset_) continue;  // refused: on to the next call
    if (sent < body.size()) break;
    ++stats_.streams_complete;
    ++complete;
  }
  return complete;
}

}  // namespace distkit::testing
