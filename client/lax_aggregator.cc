#include "distkit/lax_aggregator.h"

#include <algorithm>
#include <iterator>
#include <random>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace distkit {
namespace {

std::string RandomClientId() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd());
  return absl::StrCat(absl::Hex(gen(), absl::kZeroPad16), absl::Hex(gen(), absl::kZeroPad16));
}

// An item refused for a reason that may pass: its delta is pushed again later.
bool Retryable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsResourceExhausted(s) || absl::IsDeadlineExceeded(s) ||
         absl::IsAborted(s);
}

// Per-item statuses of a batch answer.
template <typename T>
std::vector<absl::Status> Statuses(const BatchResults<T>& results) {
  std::vector<absl::Status> out;
  out.reserve(results.size());
  for (const auto& r : results) out.push_back(r.status());
  return out;
}

class PlainTransport final : public LaxTransport {
 public:
  explicit PlainTransport(Client* client) : client_(client) {}
  absl::StatusOr<std::vector<absl::Status>> Push(const PushId& id, const Deltas& deltas) override {
    std::vector<CounterOp> ops;
    ops.reserve(deltas.size());
    for (const auto& [key, delta] : deltas) {
      ops.push_back(CounterOp::Inc(key, delta, Consistency::kLax));
    }
    auto r = client_->Batch(ops, id);
    if (!r.ok()) return r.status();
    return Statuses(*r);
  }
  absl::StatusOr<int64_t> Read(std::string_view key) override {
    return client_->Get(key, Consistency::kLax);
  }

 private:
  Client* const client_;
};

class InstanceTransport final : public LaxTransport {
 public:
  explicit InstanceTransport(Client* client) : client_(client) {}
  absl::StatusOr<std::vector<absl::Status>> Push(const PushId& id, const Deltas& deltas) override {
    std::vector<InstanceOp> ops;
    ops.reserve(deltas.size());
    for (const auto& [key, delta] : deltas) {
      ops.push_back({InstanceOp::Kind::kInc, key, delta, Consistency::kLax, {}});
    }
    auto r = client_->InstanceBatch(ops, id);
    if (!r.ok()) return r.status();
    return Statuses(*r);
  }
  absl::StatusOr<int64_t> Read(std::string_view key) override {
    auto r = client_->InstanceGet(key, Consistency::kLax);
    if (!r.ok()) return r.status();
    return r->cumulative;
  }

 private:
  Client* const client_;
};

int64_t Sum(const LaxTransport::Deltas& deltas, std::string_view key) {
  int64_t sum = 0;
  for (const auto& [k, d] : deltas) {
    if (k == key) sum += d;
  }
  return sum;
}

}  // namespace

std::unique_ptr<LaxTransport> CounterTransport(Client* client) {
  return std::make_unique<PlainTransport>(client);
}

std::unique_ptr<LaxTransport> InstanceCounterTransport(Client* client) {
  return std::make_unique<InstanceTransport>(client);
}

LaxAggregator::LaxAggregator(Client* client, LaxAggregatorOptions options)
    : LaxAggregator(CounterTransport(client), std::move(options)) {}

LaxAggregator::LaxAggregator(std::unique_ptr<LaxTransport> transport, LaxAggregatorOptions options)
    : options_(std::move(options)),
      client_id_(options_.client_id.empty() ? RandomClientId() : options_.client_id),
      transport_(std::move(transport)) {
  pusher_ = std::thread([this] { Run(); });
}

LaxAggregator::~LaxAggregator() {
  {
    absl::MutexLock lock(&stop_mu_);
    stopping_ = true;
  }
  pusher_.join();
  const absl::Time give_up = absl::Now() + absl::FromChrono(options_.shutdown_timeout);
  while (!Flush().ok() && absl::Now() < give_up) {
    absl::SleepFor(absl::FromChrono(options_.interval));
  }
}

LaxAggregator::Shard& LaxAggregator::ShardOf(std::string_view key) {
  return shards_[absl::HashOf(key) % kShards];
}

absl::Status LaxAggregator::Inc(std::string_view key, int64_t delta) {
  Shard& shard = ShardOf(key);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.deltas.find(absl::string_view(key.data(), key.size()));
  if (it != shard.deltas.end()) {
    it->second += delta;
    return absl::OkStatus();
  }
  if (keys_.fetch_add(1, std::memory_order_relaxed) >= options_.max_keys) {
    keys_.fetch_sub(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(
        absl::StrCat("the LAX aggregator holds ", options_.max_keys,
                     " keys waiting for the daemon (max_keys); retry after a push"));
  }
  shard.deltas.emplace(key, delta);
  return absl::OkStatus();
}

void LaxAggregator::Restore(const std::string& key, int64_t delta) {
  Shard& shard = ShardOf(key);
  absl::MutexLock lock(&shard.mu);
  auto [it, inserted] = shard.deltas.try_emplace(key, 0);
  if (inserted) keys_.fetch_add(1, std::memory_order_relaxed);
  it->second += delta;
}

void LaxAggregator::Report(const absl::Status& s) {
  last_status_ = s;
  if (!s.ok() && options_.on_error) options_.on_error(s);
}

absl::Status LaxAggregator::SendPendingLocked() {
  absl::StatusOr<std::vector<absl::Status>> r = transport_->Push(pending_id_, pending_);
  if (!r.ok()) {
    // In doubt: kept, resent with the same seq.
    absl::Status s(
        r.status().code(),
        absl::StrCat("LAX push ", pending_id_.seq, " (", pending_.size(),
                     " keys) not acknowledged, kept for a resend: ", r.status().message()));
    Report(s);
    return s;
  }
  absl::Status first_error;
  for (size_t i = 0; i < pending_.size(); ++i) {
    const absl::Status& item = i < r->size() ? (*r)[i] : absl::InternalError("no result");
    if (item.ok()) continue;
    if (first_error.ok()) first_error = item;
    if (Retryable(item)) {
      Restore(pending_[i].first, pending_[i].second);
    } else {
      Report(absl::Status(item.code(),
                          absl::StrCat("LAX push dropped ", pending_[i].second, " for key '",
                                       pending_[i].first, "': ", item.message())));
    }
  }
  has_pending_ = false;
  pending_.clear();
  Report(first_error);
  return first_error;
}

absl::Status LaxAggregator::PushAllLocked() {
  if (has_pending_) {
    if (absl::Status s = SendPendingLocked(); !s.ok()) return s;
  }
  // Drain every shard once; what arrives meanwhile goes in the next round.
  for (Shard& shard : shards_) {
    absl::flat_hash_map<std::string, int64_t> drained;
    {
      absl::MutexLock lock(&shard.mu);
      drained.swap(shard.deltas);
    }
    keys_.fetch_sub(drained.size(), std::memory_order_relaxed);
    for (auto& [key, delta] : drained) {
      if (delta != 0) backlog_.emplace_back(key, delta);
    }
  }
  while (!backlog_.empty()) {
    const size_t n = std::min(backlog_.size(), std::max<size_t>(1, options_.max_batch));
    pending_.assign(std::make_move_iterator(backlog_.end() - static_cast<ptrdiff_t>(n)),
                    std::make_move_iterator(backlog_.end()));
    backlog_.resize(backlog_.size() - n);
    pending_id_ = PushId{client_id_, next_seq_++};
    has_pending_ = true;
    if (absl::Status s = SendPendingLocked(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status LaxAggregator::Flush() {
  absl::MutexLock lock(&push_mu_);
  return PushAllLocked();
}

absl::StatusOr<int64_t> LaxAggregator::Get(std::string_view key) {
  // Under push_mu_ a delta is either acknowledged (in the daemon's value) or still counted here.
  absl::MutexLock lock(&push_mu_);
  absl::StatusOr<int64_t> value = transport_->Read(key);
  if (!value.ok()) return value.status();
  int64_t sum = *value + Sum(backlog_, key);
  if (has_pending_) sum += Sum(pending_, key);
  Shard& shard = ShardOf(key);
  absl::MutexLock shard_lock(&shard.mu);
  if (auto it = shard.deltas.find(absl::string_view(key.data(), key.size()));
      it != shard.deltas.end())
    sum += it->second;
  return sum;
}

absl::Status LaxAggregator::last_status() const {
  absl::MutexLock lock(&push_mu_);
  return last_status_;
}

void LaxAggregator::Run() {
  const absl::Duration interval = absl::FromChrono(options_.interval);
  while (true) {
    {
      absl::MutexLock lock(&stop_mu_);
      const bool* stopping = &stopping_;
      stop_mu_.AwaitWithTimeout(absl::Condition(stopping), interval);
      if (stopping_) return;
    }
    absl::MutexLock lock(&push_mu_);
    (void)PushAllLocked();  // reported in last_status_ / on_error
  }
}

}  // namespace distkit
