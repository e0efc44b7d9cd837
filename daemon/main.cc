// distkitd: parse the configuration, build the App (daemon/app.h), wait for SIGTERM/SIGINT
// (SIGHUP is logged and ignored), shut down in order. Exit codes: 0 clean, 1 start failed or LAX
// work lost, 2 bad configuration.

#include <fmt/ranges.h>
#include <signal.h>

#include <iostream>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "daemon/app.h"
#include "daemon/common/logging.h"
#include "daemon/config/config.h"

int main(int argc, char** argv) {
  auto config = distkit::config::ParseConfig(std::vector<std::string>(argv, argv + argc),
                                             distkit::config::DistkitEnvironment());
  if (!config.ok()) {
    const bool help = absl::IsNotFound(config.status());
    (help ? std::cout : std::cerr)
        << (help ? "" : "distkitd: ") << config.status().message() << "\n";
    return help ? 0 : 2;
  }
  distkit::InitLogging(config->log_level);
  // Debian's abseil keeps Mutex deadlock detection on; it costs a graph lookup per lock.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  spdlog::info("distkitd starting with:\n{}", config->ToString());

  // Signals are taken synchronously by this thread; every thread started later inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);  // reloads --rls_config (never ends the process)
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto app = distkit::App::Create(*config);
  if (!app.ok()) {
    spdlog::error("{}", app.status().ToString());
    // A configuration the servers contradict (e.g. --redis_mode=cluster against a standalone
    // Redis, an unusable CA file) is a usage error, like a bad flag.
    const auto code = app.status().code();
    return code == absl::StatusCode::kInvalidArgument ||
                   code == absl::StatusCode::kFailedPrecondition
               ? 2
               : 1;
  }
  spdlog::info("distkitd serving on {} (instance {})", fmt::join(config->listen, ","),
               (*app)->config().instance_id);

  int sig = 0;
  while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
    // Kept alive (SIGHUP's default action is to exit): operators send it to ask for a reload.
    if (config->rls_config.empty()) {
      spdlog::info(
          "SIGHUP: nothing to reload by signal (no --rls_config); the --tls_* files are re-read "
          "every --tls_reload_seconds ({} s)",
          config->listen_tls.reload_seconds);
    } else if (auto st = (*app)->ReloadRls(); st.ok()) {
      spdlog::info("SIGHUP: --rls_config reloaded");
    }
  }
  spdlog::info("signal {}: shutting down (grace {} ms)", sig, config->shutdown_grace_ms);
  const auto report = (*app)->Shutdown(std::chrono::milliseconds(config->shutdown_grace_ms));
  if (report.unsynced_hybrid_keys > 0) {
    spdlog::warn(
        "{} HYBRID rate-limit key(s) not synced before exit (Redis unreachable): their last "
        "usage is not counted by the other daemons",
        report.unsynced_hybrid_keys);
  }
  if (report.unflushed_lax_keys > 0) {
    // Each key, its delta and its cause were logged by the counters' shutdown.
    const int64_t down = report.unflushed_lax_keys - report.broken_lax_keys;
    spdlog::error(
        "exiting with {} key(s) of lax increments not flushed: {} refused by the key's data in "
        "Redis (not an int64, another Redis type or a corrupt mark), {} for Redis unreachable",
        report.unflushed_lax_keys, report.broken_lax_keys, down);
    return 1;
  }
  spdlog::info("clean shutdown: every lax increment flushed");
  return 0;
}
