#pragma once

#include <hiredis/hiredis.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/support/redis_backend.h"
#include "tests/support/tls_certs.h"

namespace distkit::testing {

// A private redis-server for one test: started on a Unix socket in a fresh temp dir (and, when
// asked, also on a free TCP port), no persistence. Never a fixed port, never a shared instance.
class RedisServer : public RedisBackend {
 public:
  struct Options {
    bool tcp = false;                     // also listen on a free 127.0.0.1 port
    std::vector<std::string> extra_args;  // appended to the redis-server command line
    // Also listen with TLS on a free 127.0.0.1 port (tls_port()), with certificates made in
    // dir() (certs()); plain TCP stays off unless `tcp`. The Unix socket stays plain, so
    // Command() and Connect() keep working.
    bool tls = false;
    bool tls_auth_clients = false;  // require a client certificate signed by certs().ca_cert
  };
  // Starts the server and waits (polling with a deadline) until it answers PING. Fails the
  // current test (ADD_FAILURE) and returns nullptr when it cannot start.
  static std::unique_ptr<RedisServer> Start(Options options);
  static std::unique_ptr<RedisServer> Start() { return Start(Options{}); }
  ~RedisServer() override;  // kills the server and removes the temp dir

  std::string socket_path() const { return socket_path_; }
  int port() const { return port_; }  // 0 unless Options::tcp
  std::string url() const override;   // "unix:<socket_path>"
  std::string tcp_url() const;        // "redis://127.0.0.1:<port>" (Options::tcp only)
  // The temp dir (also usable for daemon sockets).
  std::string dir() const override { return dir_; }
  std::string name() const override { return "standalone"; }

  // Options::tls only (tls_port() is 0 otherwise); the port and certificates survive Restart().
  int tls_port() const { return tls_port_; }
  std::string tls_url() const;  // "rediss://127.0.0.1:<tls_port>"
  const TlsCerts& certs() const { return certs_; }

  void Stop();     // SIGKILL and wait; the socket disappears
  void Restart();  // Stop (if running) then start again on the same socket/port; waits for PING
  void Pause();    // SIGSTOP: the server stops answering but keeps its connections
  void Resume();   // SIGCONT

  // A new synchronous connection (caller frees with redisFree). Fails the test on error.
  redisContext* Connect() const;
  // Runs one command on a fresh connection and returns the reply as a string: integers in
  // decimal, nil as "(nil)", errors as "ERR...", arrays joined with ",". For quick assertions.
  std::string Command(const std::vector<std::string>& argv) const override;

 private:
  RedisServer() = default;
  bool Launch();  // starts the process and waits for PING; on failure sets error_
  bool Ping() const;
  std::string LogTail() const;
  Options options_;
  std::string dir_, socket_path_;
  int port_ = 0;
  int tls_port_ = 0;
  TlsCerts certs_;
  pid_t pid_ = -1;
  std::string error_;  // why the last Launch() failed
};

}  // namespace distkit::testing
