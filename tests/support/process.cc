#include "tests/support/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace distkit::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::string TempBase() {
  const char* tmp = std::getenv("TMPDIR");
  return (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
}

// "NAME=value" -> "NAME".
std::string EnvName(const std::string& entry) { return entry.substr(0, entry.find('=')); }

// The binary as execve wants it: a path with a '/' is used as is, a bare name is looked up in
// $PATH here, before fork, because the child may only call async-signal-safe functions.
std::string ResolveBinary(const std::string& binary) {
  if (binary.find('/') != std::string::npos) return binary;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + binary;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return binary;
}

int DecodeStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

Process::Process(std::string binary, std::vector<std::string> args,
                 std::vector<std::string> extra_env)
    : binary_(std::move(binary)), args_(std::move(args)), env_(std::move(extra_env)) {}

Process::~Process() {
  if (pid_ > 0 && exit_code_ < 0) {
    kill(pid_, SIGKILL);  // also ends a SIGSTOPped child
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (!output_path_.empty()) unlink(output_path_.c_str());
}

bool Process::Start() {
  if (pid_ > 0 && exit_code_ < 0) return false;  // still running
  if (output_path_.empty()) {
    std::string tmpl = TempBase() + "/distkit-proc-XXXXXX.log";
    int fd = mkstemps(tmpl.data(), 4);
    if (fd < 0) {
      ADD_FAILURE() << "mkstemps(" << tmpl << "): " << std::strerror(errno);
      return false;
    }
    close(fd);
    output_path_ = tmpl;
  }

  // Everything the child needs is built before fork (the test process may have threads).
  const std::string path = ResolveBinary(binary_);
  std::vector<std::string> argv_storage{binary_};
  argv_storage.insert(argv_storage.end(), args_.begin(), args_.end());
  std::vector<char*> argv;
  argv.reserve(argv_storage.size() + 1);
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    bool overridden = false;
    for (const auto& extra : env_) overridden = overridden || EnvName(extra) == EnvName(entry);
    if (!overridden) env_storage.push_back(std::move(entry));
  }
  env_storage.insert(env_storage.end(), env_.begin(), env_.end());
  std::vector<char*> envp;
  envp.reserve(env_storage.size() + 1);
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);

  int out = open(output_path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  // exec failures travel back through a close-on-exec pipe, so Start() can report them.
  int err_pipe[2];
  if (out < 0 || devnull < 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "cannot prepare the child's files: " << std::strerror(errno);
    if (out >= 0) close(out);
    if (devnull >= 0) close(devnull);
    return false;
  }

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    close(out);
    close(devnull);
    close(err_pipe[0]);
    close(err_pipe[1]);
    return false;
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only. Die with the test process, even on a crash of it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl took effect
    // RedisServer makes the test process ignore SIGPIPE; the binary under test must get the
    // default disposition (an ignored signal would stay ignored across exec).
    signal(SIGPIPE, SIG_DFL);
    dup2(devnull, STDIN_FILENO);
    dup2(out, STDOUT_FILENO);
    dup2(out, STDERR_FILENO);
    execve(path.c_str(), argv.data(), envp.data());
    int err = errno;
    ssize_t ignored = write(err_pipe[1], &err, sizeof(err));
    (void)ignored;
    _exit(127);
  }

  close(out);
  close(devnull);
  close(err_pipe[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(err_pipe[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  close(err_pipe[0]);
  pid_ = pid;
  exit_code_ = -1;
  if (n > 0) {  // exec failed: the child is exiting with 127
    Wait(std::chrono::seconds(10));
    ADD_FAILURE() << "cannot exec " << path << ": " << std::strerror(child_errno);
    return false;
  }
  return true;
}

void Process::Signal(int sig) {
  // Never signal a pid we have already reaped: it may belong to someone else by now.
  if (pid_ > 0 && exit_code_ < 0) kill(pid_, sig);
}

int Process::Wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  const auto deadline = Clock::now() + timeout;
  while (exit_code_ < 0) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = DecodeStatus(status);
      break;
    }
    if (r < 0 && errno != EINTR) {
      ADD_FAILURE() << "waitpid(" << pid_ << "): " << std::strerror(errno);
      return -1;
    }
    if (Clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return exit_code_;
}

bool Process::Running() {
  if (pid_ <= 0 || exit_code_ >= 0) return false;
  return Wait(std::chrono::milliseconds(0)) < 0;
}

std::string Process::Output() const {
  if (output_path_.empty()) return "";
  std::ifstream in(output_path_, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::pair<int, std::string> Process::Run(const std::string& binary,
                                         const std::vector<std::string>& args,
                                         std::chrono::milliseconds timeout) {
  Process p(binary, args);
  if (!p.Start()) return {-1, p.Output()};
  int code = p.Wait(timeout);
  if (code < 0) {
    p.Signal(SIGKILL);
    p.Wait(std::chrono::seconds(10));
    return {-1, p.Output()};
  }
  return {code, p.Output()};
}

bool PollUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    bool result = cond();
    if (result || Clock::now() >= deadline) return result;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = TempBase() + "/" + prefix + "-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp(" << tmpl << "): " << std::strerror(errno);
    return "";
  }
  return tmpl;
}

}  // namespace distkit::testing
