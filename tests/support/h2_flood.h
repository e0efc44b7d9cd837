#pragma once

// A hostile gRPC client for memory tests: one raw HTTP/2 connection that announces a stream
// window of 0 (SETTINGS_INITIAL_WINDOW_SIZE = 0) and never sends a WINDOW_UPDATE, so the server
// can never send a response message, then opens many streams, each one unary call carrying the
// same gRPC message. It reads the server's frames only to follow the HTTP/2 rules a sender must
// (the server's windows and frame size, SETTINGS and PING acknowledgements) and to count what
// the server did with the streams; it never reads a response message.

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>

namespace distkit::testing {

class H2Flood {
 public:
  struct Stats {
    int64_t streams_opened = 0;    // HEADERS sent
    int64_t streams_complete = 0;  // whole message sent (END_STREAM)
    int64_t trailers = 0;          // server HEADERS with END_STREAM (trailers, trailers-only)
    int64_t resets = 0;            // RST_STREAM from the server
    int64_t window_waits = 0;      // times the sender had to wait for the server's window
    bool stream_limited = false;   // stopped at the server's SETTINGS_MAX_CONCURRENT_STREAMS
    bool goaway = false;           // the server sent GOAWAY
    bool closed = false;           // the server closed the connection (or an I/O error)
  };

  // Connects to a Unix socket path ("unix:" prefix optional) or 127.0.0.1:<port>
  // ("127.0.0.1:PORT") and sends the preface and SETTINGS. ok() tells whether it is up.
  explicit H2Flood(const std::string& address);
  ~H2Flood();  // closes the connection
  H2Flood(const H2Flood&) = delete;
  H2Flood& operator=(const H2Flood&) = delete;

  bool ok() const { return fd_ >= 0; }

  // Opens up to `calls` streams to `path` (e.g. "/distkit.v1.CounterService/Batch"), each
  // sending `message` (a serialized request) as one gRPC message, until all are sent, the
  // server closes or sends GOAWAY, `deadline` passes, or the server's stream limit is reached
  // and no stream closes within 200 ms. Sends only within the server's windows (waiting for its
  // WINDOW_UPDATEs) and stream limit, so the server sees a valid, merely hostile, peer.
  // Returns the number of calls whose message was completely sent.
  int64_t Flood(const std::string& path, const std::string& message, int64_t calls,
                std::chrono::steady_clock::time_point deadline);

  // Processes the server's frames that arrive within `wait` (acknowledging SETTINGS and PINGs).
  void Pump(std::chrono::milliseconds wait);

  const Stats& stats() const { return stats_; }
  void Close();

 private:
  bool SendAll(const std::string& bytes);
  void SendFrame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload);
  // Appends what the server sent to in_ (non-blocking).
  void Receive();
  // Reads and handles the frames available within `wait`; false once the connection is gone.
  bool ReadFrames(std::chrono::milliseconds wait);
  void HandleFrame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload);

  int fd_ = -1;
  std::string in_;  // received bytes not yet parsed into frames
  bool parsing_ = false;
  int64_t conn_window_ = 65535;            // what the server lets us send on the connection
  int64_t initial_stream_window_ = 65535;  // the server's SETTINGS_INITIAL_WINDOW_SIZE
  int64_t stream_window_ = 0;              // window of the stream being sent
  uint32_t current_stream_ = 0;
  bool current_reset_ = false;  // the server reset the stream being sent
  uint32_t max_frame_ = 16384;
  int64_t max_streams_ =
      std::numeric_limits<int64_t>::max();  // the server's SETTINGS_MAX_CONCURRENT_STREAMS
  Stats stats_;
};

}  // namespace distkit::testing
