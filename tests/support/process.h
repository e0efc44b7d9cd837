#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace distkit::testing {

// A child process (e.g. the real distkitd binary or the CLI) with stdout+stderr captured to a file.
class Process {
 public:
  Process(std::string binary, std::vector<std::string> args,
          std::vector<std::string> extra_env = {});  // extra_env: "NAME=value"
  ~Process();                                        // SIGKILL if still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  bool Start();
  void Signal(int sig);  // e.g. SIGTERM, SIGKILL, SIGSTOP, SIGCONT
  // Waits for exit up to `timeout`; returns the exit code (128+signal when killed by a signal),
  // or -1 on timeout.
  int Wait(std::chrono::milliseconds timeout);
  bool Running();
  pid_t pid() const { return pid_; }
  std::string Output() const;  // everything written to stdout/stderr so far

  // Runs to completion (with a timeout) and returns {exit code, output}.
  static std::pair<int, std::string> Run(const std::string& binary,
                                         const std::vector<std::string>& args,
                                         std::chrono::milliseconds timeout);

 private:
  std::string binary_;
  std::vector<std::string> args_, env_;
  std::string output_path_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

// Polls `cond` every 10 ms until it is true or `timeout` passes; returns the last result.
bool PollUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout);

// A fresh temporary directory (mkdtemp under $TMPDIR or /tmp).
std::string MakeTempDir(const std::string& prefix);

}  // namespace distkit::testing
