#include "daemon/common/periodic_task.h"

#include <utility>

#include "absl/time/time.h"

namespace distkit {

PeriodicTask::PeriodicTask(std::chrono::milliseconds interval, absl::AnyInvocable<void()> run)
    : interval_(interval), run_(std::move(run)) {}

PeriodicTask::~PeriodicTask() { Stop(); }

void PeriodicTask::Start() {
  absl::MutexLock thread_lock(&thread_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
  }
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
}

void PeriodicTask::Wake() {
  absl::MutexLock lock(&mu_);
  woken_ = true;
}

void PeriodicTask::RequestStop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
}

void PeriodicTask::Stop() {
  RequestStop();
  absl::MutexLock thread_lock(&thread_mu_);
  if (thread_.joinable()) thread_.join();
}

bool PeriodicTask::Due() const { return stopping_ || woken_; }

void PeriodicTask::Loop() {
  const absl::Duration interval = absl::FromChrono(interval_);
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(this, &PeriodicTask::Due), interval);
      if (stopping_) return;
      woken_ = false;
    }
    run_();
  }
}

}  // namespace distkit
