#pragma once

// The pieces every real-Redis test fixture needs (RedisServer, RedisCluster): a free port, a
// redis-server child that dies with the test, PING polling, and replies as strings.

#include <hiredis/hiredis.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <chrono>
#include <string>
#include <vector>

namespace distkit::testing {

// A 127.0.0.1 port nobody listens on right now (the kernel's choice). Another process may take
// it before the server binds it; callers retry with a new one when the server cannot start.
int FreePort();

// Forks and execs `args` (args[0] is the binary's path) with stdin from /dev/null and
// stdout+stderr appended to `log_path`; the child is SIGKILLed when the test process dies.
// Returns the pid, or -1 with *error set.
pid_t SpawnLogged(const std::vector<std::string>& args, const std::string& log_path,
                  std::string* error);

// SIGKILL (after SIGCONT, so a stopped process cannot hang us) and reap.
void KillAndReap(pid_t pid);

// True once `pid` (our child) has exited; reaps it.
bool ChildExited(pid_t pid);

// The process state letter from /proc/<pid>/stat ('T' = stopped), or 0 if unreadable.
char ProcState(pid_t pid);

// The last `max_bytes` of a file (a server log), for failure messages.
std::string FileTail(const std::string& path, size_t max_bytes = 2000);

// PING on an open connection answers PONG.
bool PingContext(redisContext* c);
// A short-lived connection to 127.0.0.1:port answers PING (timeout `timeout` per step).
bool PingTcp(int port, std::chrono::milliseconds timeout);

// Runs one command; the reply (caller frees with freeReplyObject) or nullptr on an I/O error.
redisReply* CommandArgv(redisContext* c, const std::vector<std::string>& argv);

// The reply as a string: integers in decimal, nil as "(nil)", errors as "ERR...", arrays joined
// with ",".
std::string FormatReply(const redisReply* r);

// Runs one command on `c`, formats the reply (an I/O error as "(io error: ...)") and frees `c`.
std::string RunFormatAndFree(redisContext* c, const std::vector<std::string>& argv);

// Runs one command on a fresh TCP connection to 127.0.0.1:port and formats the reply; I/O and
// connection errors become "(io error: ...)" / "(no connection: ...)".
std::string TcpCommand(int port, const std::vector<std::string>& argv);

}  // namespace distkit::testing
