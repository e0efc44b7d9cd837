#pragma once

#include <chrono>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace distkit {

// Runs `run` on its own thread, one interval after the previous run ended (the first run one
// interval after Start), until stopped. The background loops of the daemon (lax flush, heartbeat,
// reaper, HYBRID sync, LOCAL sweep, readiness) are all this; a run is never cut short, only the
// wait between runs is. Thread-safe; none of the methods may be called from its own `run`.
class PeriodicTask {
 public:
  PeriodicTask(std::chrono::milliseconds interval, absl::AnyInvocable<void()> run);
  ~PeriodicTask();  // Stop()

  PeriodicTask(const PeriodicTask&) = delete;
  PeriodicTask& operator=(const PeriodicTask&) = delete;

  // Starts the thread. At most once; does nothing after RequestStop/Stop.
  void Start();
  // The next run starts at once (after the current one, if one is running); wakes made while
  // the task waits or runs coalesce into one run. A wake before Start runs at Start.
  void Wake();
  // No run starts after this; a waiting task stops waiting. Does not wait for a running run:
  // lets an owner stop several tasks at once before joining them.
  void RequestStop();
  // RequestStop, then waits for the thread to end. Idempotent.
  void Stop();

 private:
  bool Due() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Loop();

  const std::chrono::milliseconds interval_;
  absl::AnyInvocable<void()> run_;
  absl::Mutex thread_mu_;  // held by Start and Stop, so that concurrent Stops both wait
  std::thread thread_ ABSL_GUARDED_BY(thread_mu_);
  mutable absl::Mutex mu_ ABSL_ACQUIRED_AFTER(thread_mu_);
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace distkit
