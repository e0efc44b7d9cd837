#include "daemon/core/counters.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/common/logging.h"
#include "daemon/common/wait_until.h"
#include "daemon/core/counter_script.h"
#include "daemon/core/int64_math.h"
#include "daemon/core/join.h"
#include "daemon/core/redis_keys.h"

namespace distkit::core {
namespace {

constexpr char kScript[] = "counter";
LogEvery g_flush_log(std::chrono::seconds(5));

// Keeps CountersStats::dirty_keys in step with an entry's transitions.
class DirtyTracker {
 public:
  DirtyTracker(std::atomic<int64_t>& counter, const LaxEntry& e)
      : counter_(counter), e_(e), was_(e.dirty()) {}
  ~DirtyTracker() {
    const bool is = e_.dirty();
    if (is != was_) counter_ += is ? 1 : -1;
  }

 private:
  std::atomic<int64_t>& counter_;
  const LaxEntry& e_;
  const bool was_;
};

// What a reply of counter.lua that changed nothing because of the key's data means, as a
// FAILED_PRECONDITION naming the problem (docs/api.md#status-codes); OK for any other reply.
absl::Status DataErrorOf(const std::string& key, ScriptStatus status) {
  if (status == ScriptStatus::kNotInt) {
    return absl::FailedPreconditionError(
        absl::StrCat("the value stored in Redis for key '", key,
                     "' is not an int64; nothing changed (Set or Del overwrites it)"));
  }
  if (status == ScriptStatus::kCorrupt) {
    return absl::FailedPreconditionError(
        absl::StrCat("the dedup mark of this daemon in the Redis hash of key '", key,
                     "' is not a sequence number; nothing changed (Set or Del overwrites it)"));
  }
  return absl::OkStatus();
}

// The outcome of a counter.lua call for the entry: OK when Redis ran it and applied the carried
// entries; a data error (FAILED_PRECONDITION) when the key's data cannot be read, whether the
// script said so or Redis did (WRONGTYPE); else the transport or Redis failure.
absl::Status CallStatus(const std::string& key, const absl::StatusOr<ScriptReply>& r) {
  if (absl::IsFailedPrecondition(r.status())) {
    return absl::FailedPreconditionError(absl::StrCat("key '", key, "': ", r.status().message()));
  }
  if (!r.ok()) return r.status();
  return DataErrorOf(key, r->status);
}

}  // namespace

Counters::Counters(redis::RedisClient* redis, CountersOptions options, const Clock* clock)
    : redis_(redis),
      options_(std::move(options)),
      clock_(clock),
      flush_task_(std::chrono::milliseconds(options_.flush_interval_ms),
                  [this, next_evict = std::chrono::steady_clock::now()]() mutable {
                    FlushNow();
                    if (std::chrono::steady_clock::now() >= next_evict) {
                      EvictIdle();
                      next_evict = std::chrono::steady_clock::now() + std::chrono::seconds(1);
                    }
                  }) {}

Counters::~Counters() { flush_task_.Stop(); }

void Counters::Start() { flush_task_.Start(); }

Counters::Shard& Counters::ShardFor(const MapKey& k) {
  return shards_.ShardFor(absl::HashOf(k.first, k.second));
}

bool Counters::Fresh(const LaxEntry& e, int64_t now) const {
  return e.initialized && e.refreshed_ns != 0 &&
         now - e.refreshed_ns <= options_.allowed_lag_ms * 1'000'000;
}

// ---------------------------------------------------------------- strict path

void Counters::RunStrict(const MapKey& k, std::string_view op, Condition cond, int64_t arg,
                         CounterCallback done) {
  std::vector<SeqDelta> carried;
  bool tracked = false, no_time = false;
  const bool bounded = options_.resend_bound_ms > 0;
  const std::optional<int64_t> now_ms = bounded ? RedisNowMs() : std::nullopt;
  Shard& shard = ShardFor(k);
  {
    absl::MutexLock lock(&shard.mu);
    auto it = shard.map.find(k);
    if (it != shard.map.end() && bounded && !now_ms && it->second.dirty()) {
      no_time = true;  // lax work to fold in, but no Redis time yet to bound its resends with
    } else if (it != shard.map.end()) {
      LaxEntry& e = it->second;
      DirtyTracker dt(stats_.dirty_keys, e);
      // Fold this daemon's lax work for the key into the same script: our writes stay in order.
      if (AssignPending(e, next_seq_.load())) next_seq_++;
      if (now_ms) StampFirstSend(e.unacked, *now_ms);
      carried = e.unacked;
      ++e.carriers;
      tracked = true;
    }
  }
  if (no_time) {
    return done(absl::UnavailableError(
        "Redis has not answered this daemon yet (its LAX work for the key goes first); retry"));
  }
  // Built before the call: the callback below takes `carried` by move.
  auto args = ScriptArgs(options_.dedup_id, carried, op, cond, arg, options_.resend_bound_ms);
  redis_->Script(
      kScript, {PlainCounterKey(k.first, k.second)}, std::move(args),
      [this, k, carried = std::move(carried), tracked,
       done = std::move(done)](absl::StatusOr<redis::Reply> raw) mutable {
        const bool maybe_sent = !redis::IsNotSent(raw.status());
        auto r = ParseScriptReply(std::move(raw));
        if (tracked) {
          SettleCarrier(k, carried, r, maybe_sent);
        } else {
          NoteRedisTime(r);
        }
        if (!r.ok()) {
          done(CallStatus(k.second, r));
        } else if (r->status == ScriptStatus::kStale) {
          done(absl::UnavailableError(
              "this daemon's LAX work for the key was older than --lax_resend_bound_ms and was "
              "resolved first; nothing else changed, retry"));
        } else if (r->status == ScriptStatus::kOverflow) {
          done(absl::OutOfRangeError("result would leave the int64 range; nothing changed"));
        } else if (auto s = DataErrorOf(k.second, r->status); !s.ok()) {
          done(s);
        } else {
          done(CounterResult{r->value, r->previous, r->applied});
        }
      });
}

// ---------------------------------------------------------------- lax path

void Counters::RefreshThen(const MapKey& k, absl::AnyInvocable<void()> then) {
  Shard& shard = ShardFor(k);
  {
    absl::MutexLock lock(&shard.mu);
    LaxEntry& e = shard.map[k];
    e.waiters.push_back(std::move(then));
    if (e.refreshing) return;  // one read, shared by concurrent callers
    e.refreshing = true;
  }
  redis_->Script(kScript, {PlainCounterKey(k.first, k.second)},
                 ScriptArgs(options_.dedup_id, {}, "get", Condition{}, 0),
                 [this, k](absl::StatusOr<redis::Reply> raw) {
                   auto r = ParseScriptReply(std::move(raw));
                   NoteRedisTime(r);
                   std::vector<absl::AnyInvocable<void()>> waiters;
                   Shard& shard = ShardFor(k);
                   {
                     absl::MutexLock lock(&shard.mu);
                     LaxEntry& e = shard.map[k];
                     e.refreshing = false;
                     const absl::Status s = CallStatus(k.second, r);
                     if (s.ok()) {
                       e.data_error.Clear();
                       OnRemoteValue(e, r->value, r->applied_seq.value_or(e.remote_seq), Now());
                     } else {
                       // Answer from the last known value (0 if never known); keep deltas. A
                       // key whose data cannot be read answers that error instead.
                       e.initialized = true;
                       if (absl::IsFailedPrecondition(s)) e.data_error.Fail(s, Now());
                       e.last_error = s;
                       if (g_flush_log.ShouldLog()) {
                         spdlog::warn("lax read of {}/{} failed: {}", k.first, k.second,
                                      s.ToString());
                       }
                     }
                     waiters.swap(e.waiters);
                   }
                   for (auto& w : waiters) w();
                 });
}

std::optional<absl::StatusOr<CounterResult>> Counters::TryLaxInc(const MapKey& k, int64_t delta,
                                                                 Condition cond, bool may_read) {
  Shard& shard = ShardFor(k);
  absl::MutexLock lock(&shard.mu);
  absl::StatusOr<LaxEntry*> entry = FindOrCreate(shard, k);
  if (!entry.ok()) return entry.status();
  LaxEntry& e = **entry;
  const int64_t now = Now();
  e.last_access_ns = now;
  if (!e.initialized) return std::nullopt;  // the first read has not come back yet
  if (!e.data_error.ok()) {
    // A key known to be broken refuses new increments (they could not be stored either). A key
    // with work of ours is re-checked by the flush; one without by a read, when due.
    if (may_read && !e.dirty() && e.carriers == 0 && e.data_error.Due(now)) return std::nullopt;
    return e.data_error.status;
  }
  DirtyTracker dt(stats_.dirty_keys, e);
  const int64_t view = LocalView(e).value_or(0);
  if (!Holds(cond, view)) return CounterResult{view, view, false};
  if (!e.dirty() && delta != 0 && stats_.dirty_keys.load() >= options_.max_pending_keys) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many keys with unflushed lax increments (max_pending_keys=", options_.max_pending_keys,
        "); retry later"));
  }
  if (!AddPending(e, delta)) {
    return absl::OutOfRangeError("result would leave the int64 range; nothing changed");
  }
  return CounterResult{view + delta, view, true};
}

void Counters::LaxInc(const MapKey& k, int64_t delta, Condition cond, CounterCallback done,
                      bool may_read) {
  if (auto r = TryLaxInc(k, delta, cond, may_read)) {
    done(std::move(*r));
    return;
  }
  // First touch (or a broken key due for a re-check): read the Redis value once (shared by
  // concurrent callers), then apply, without a second read.
  RefreshThen(k, [this, k, delta, cond, done = std::move(done)]() mutable {
    LaxInc(k, delta, cond, std::move(done), /*may_read=*/false);
  });
}

std::optional<absl::StatusOr<CounterResult>> Counters::TryInc(const std::string& ns,
                                                              const std::string& key, int64_t delta,
                                                              Consistency c, Condition cond) {
  if (c != Consistency::kLax) return std::nullopt;
  return TryLaxInc({ns, key}, delta, cond, /*may_read=*/true);
}

void Counters::LaxGet(const MapKey& k, CounterCallback done) {
  Shard& shard = ShardFor(k);
  absl::StatusOr<CounterResult> result;
  {
    absl::MutexLock lock(&shard.mu);
    absl::StatusOr<LaxEntry*> entry = FindOrCreate(shard, k);
    const int64_t now = Now();
    const bool broken = entry.ok() && !(*entry)->data_error.ok();
    if (entry.ok()) (*entry)->last_access_ns = now;
    if (!entry.ok()) {
      result = entry.status();
    } else if (broken && !(*entry)->data_error.Due(now)) {
      // A broken key answers its error (STRICT would too) until its backoff allows a re-read.
      result = (*entry)->data_error.status;
    } else if (broken || !Fresh(**entry, now)) {
      shard.mu.Unlock();
      RefreshThen(k, [this, k, done = std::move(done)]() mutable {
        Shard& shard = ShardFor(k);
        absl::StatusOr<CounterResult> out;
        {
          absl::MutexLock lock(&shard.mu);
          const LaxEntry& e = shard.map[k];
          const int64_t view = LocalView(e).value_or(0);
          out = e.data_error.ok() ? absl::StatusOr<CounterResult>(CounterResult{view, view, true})
                                  : absl::StatusOr<CounterResult>(e.data_error.status);
        }
        done(std::move(out));
      });
      shard.mu.Lock();
      return;
    } else {
      const LaxEntry& e = **entry;
      const int64_t view = LocalView(e).value_or(0);
      result = CounterResult{view, view, true};
    }
  }
  done(std::move(result));
}

// ---------------------------------------------------------------- public API

void Counters::Inc(const std::string& ns, const std::string& key, int64_t delta, Consistency c,
                   Condition cond, CounterCallback done) {
  if (c == Consistency::kLax) {
    LaxInc({ns, key}, delta, cond, std::move(done));
  } else {
    RunStrict({ns, key}, "inc", cond, delta, std::move(done));
  }
}

void Counters::Get(const std::string& ns, const std::string& key, Consistency c,
                   CounterCallback done) {
  if (c == Consistency::kLax) {
    LaxGet({ns, key}, std::move(done));
  } else {
    RunStrict({ns, key}, "get", Condition{}, 0, std::move(done));
  }
}

void Counters::Set(const std::string& ns, const std::string& key, int64_t value, Condition cond,
                   CounterCallback done) {
  RunStrict({ns, key}, "set", cond, value, std::move(done));
}

void Counters::Del(const std::string& ns, const std::string& key, CounterCallback done) {
  RunStrict({ns, key}, "del", Condition{}, 0, std::move(done));
}

void Counters::Clear(const std::string& ns, StatusCallback done) {
  // 1. Keys this daemon holds lax work for: delete them with that work folded in, so none of
  //    it is replayed after the Clear.
  std::vector<MapKey> local;
  for (int i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    for (const auto& [k, e] : shards_[i].map) {
      if (k.first == ns) local.push_back(k);
    }
  }
  auto join = std::make_shared<Join>();
  join->remaining = static_cast<int>(local.size()) + 1;
  join->then = [this, ns, done = std::move(done)](absl::Status s) mutable {
    if (!s.ok()) {
      done(s);
      return;
    }
    // 2. Every counter of the namespace in Redis (SCAN sees all keys that exist throughout).
    ClearScan(ns, std::move(done));
  };
  for (const auto& k : local) {
    RunStrict(k, "del", Condition{}, 0,
              [join](absl::StatusOr<CounterResult> r) { join->Done(r.status()); });
  }
  join->Done(absl::OkStatus());
}

void Counters::ClearScan(const std::string& ns, StatusCallback done) {
  auto each = std::make_shared<const EachKey>([this](const std::string& key, StatusCallback done) {
    redis_->Script(kScript, {key}, ScriptArgs(options_.dedup_id, {}, "del", Condition{}, 0),
                   [done = std::move(done), key](absl::StatusOr<redis::Reply> raw) mutable {
                     // "del" overwrites what it cannot read (another Redis type, a value that
                     // is not an int64): Clear repairs broken keys too.
                     auto pr = ParseScriptReply(std::move(raw));
                     done(pr.ok() ? DataErrorOf(key, pr->status) : pr.status());
                   });
  });
  ScanEach(redis_, {PlainCounterPattern(ns), ""}, "0", std::move(each), std::move(done));
}

// ---------------------------------------------------------------- flushing

void Counters::FlushNow() {
  std::vector<std::pair<MapKey, std::vector<SeqDelta>>> batch;
  const int64_t now = Now();
  const bool bounded = options_.resend_bound_ms > 0;
  const std::optional<int64_t> now_ms = bounded ? RedisNowMs() : std::nullopt;
  std::optional<MapKey> probe;  // bounded, no Redis time yet: a read first (its reply has it)
  for (int i = 0; i < kShards && !probe; ++i) {
    Shard& shard = shards_[i];
    absl::MutexLock lock(&shard.mu);
    for (auto& [k, e] : shard.map) {
      if (!e.dirty() || e.carriers > 0) continue;  // a carrier is already on its way
      if (!e.data_error.Due(now)) continue;        // a broken key waits for its backoff
      if (bounded && !now_ms) {
        if (!e.refreshing) probe = k;
        break;
      }
      if (AssignPending(e, next_seq_.load())) next_seq_++;
      if (now_ms) StampFirstSend(e.unacked, *now_ms);
      ++e.carriers;
      batch.emplace_back(k, e.unacked);
    }
  }
  if (probe) RefreshThen(*probe, [] {});
  // All calls enqueue at once; the executor writes them as one pipeline.
  for (auto& [k, carried] : batch) SendFlush(k, std::move(carried));
}

void Counters::SendFlush(const MapKey& k, std::vector<SeqDelta> carried) {
  stats_.flush_commands++;
  outstanding_flushes_++;
  auto args =
      ScriptArgs(options_.dedup_id, carried, "flush", Condition{}, 0, options_.resend_bound_ms);
  redis_->Script(kScript, {PlainCounterKey(k.first, k.second)}, std::move(args),
                 [this, k, carried = std::move(carried)](absl::StatusOr<redis::Reply> raw) {
                   const bool maybe_sent = !redis::IsNotSent(raw.status());
                   auto r = ParseScriptReply(std::move(raw));
                   SettleCarrier(k, carried, r, maybe_sent);
                   if (const absl::Status s = CallStatus(k.second, r); !s.ok()) {
                     stats_.flush_failures++;
                     if (absl::IsFailedPrecondition(s)) stats_.flush_data_errors++;
                     if (g_flush_log.ShouldLog()) {
                       spdlog::warn("lax flush of {}/{} failed (will retry{}): {}", k.first,
                                    k.second, absl::IsFailedPrecondition(s) ? ", backing off" : "",
                                    s.ToString());
                     }
                   }
                   outstanding_flushes_--;
                 });
}

void Counters::SettleCarrier(const MapKey& k, const std::vector<SeqDelta>& carried,
                             const absl::StatusOr<ScriptReply>& r, bool maybe_sent) {
  NoteRedisTime(r);
  if (r.ok() && r->status == ScriptStatus::kStale) return SettleStale(k, carried, *r);
  // "overflow" refused only the operation: the carried entries were applied. Data errors
  // ("notint", "corrupt", WRONGTYPE) and failures applied nothing.
  const absl::Status s = CallStatus(k.second, r);
  const bool applied = s.ok();
  if (applied && r->dropped > 0) {
    stats_.dropped_overflow += r->dropped;
    spdlog::error("{}/{}: {} lax delta(s) dropped, the Redis value would overflow int64", k.first,
                  k.second, r->dropped);
  }
  Shard& shard = ShardFor(k);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.map.find(k);
  if (it == shard.map.end()) return;
  LaxEntry& e = it->second;
  DirtyTracker dt(stats_.dirty_keys, e);
  OnCarrierDone(e, carried, applied, maybe_sent);
  if (absl::IsFailedPrecondition(s)) e.data_error.Fail(s, Now());
  if (!s.ok()) e.last_error = s;
  if (applied) {
    e.data_error.Clear();
    OnRemoteValue(e, r->value, r->applied_seq.value_or(carried.empty() ? 0 : carried.back().seq),
                  Now());
  }
}

void Counters::SettleStale(const MapKey& k, const std::vector<SeqDelta>& carried,
                           const ScriptReply& r) {
  StaleOutcome out;
  {
    Shard& shard = ShardFor(k);
    absl::MutexLock lock(&shard.mu);
    auto it = shard.map.find(k);
    if (it == shard.map.end()) return;
    LaxEntry& e = it->second;
    DirtyTracker dt(stats_.dirty_keys, e);
    OnCarrierDone(e, carried, /*ok=*/true, /*maybe_sent=*/true);
    OnRemoteValue(e, r.value, r.applied_seq.value_or(0), Now());
    out = OnStale(e, carried, r.resolved, [this] { return next_seq_++; });
  }
  CountStale(out, k.first, k.second, "LAX counter operation(s)", stats_.resent_stale,
             stats_.given_up);
}

std::optional<int64_t> Counters::RedisNowMs() { return redis_time_.NowMs(Now()); }

void Counters::NoteRedisTime(const absl::StatusOr<ScriptReply>& r) {
  if (r.ok()) redis_time_.Note(r->redis_now_ms, Now());
}

absl::StatusOr<LaxEntry*> Counters::FindOrCreate(Shard& shard, const MapKey& k) {
  auto it = shard.map.find(k);
  if (it != shard.map.end()) return &it->second;
  if (stats_.cached_keys.load() >= options_.max_keys) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many LAX counter keys held in memory (--max_lax_keys=", options_.max_keys,
        "); keys already held keep working, new ones are refused until idle keys are evicted"));
  }
  stats_.cached_keys++;
  return &shard.map.try_emplace(k).first->second;
}

void Counters::EvictIdle() {
  const int64_t now = Now();
  const int64_t idle_ns = options_.idle_evict_ms * 1'000'000;
  size_t released = 0;
  for (int i = 0; i < kShards; ++i) {
    Shard& shard = shards_[i];
    absl::MutexLock lock(&shard.mu);
    // Clean entries (all work flushed and acknowledged) carry nothing to remember.
    const size_t removed = absl::erase_if(shard.map, [&](const auto& kv) {
      return kv.second.idle() && now - kv.second.last_access_ns > idle_ns;
    });
    released += ShrinkIfSparse(shard.map) + removed * sizeof(LaxEntry);
    // Keeps cached_keys (the cap's count) exact: creations since the pass began stay counted.
    stats_.cached_keys -= static_cast<int64_t>(removed);
  }
  TrimHeapAfterShrink(released);
}

size_t Counters::capacity() {
  size_t n = 0;
  for (int i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    n += shards_[i].map.capacity();
  }
  return n;
}

std::pair<int64_t, int64_t> Counters::CountUnflushed(bool log) {
  constexpr int64_t kMaxLoggedKeys = 100;
  int64_t total = 0, broken = 0, unlogged = 0, unlogged_delta = 0;
  for (int i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    for (const auto& [k, e] : shards_[i].map) {
      if (!e.dirty()) continue;
      ++total;
      if (!e.data_error.ok()) ++broken;
      if (!log) continue;
      // What Redis has not confirmed: our entries past the last value read, and the pending.
      __int128 delta = e.pending;
      for (const auto& u : e.unacked) {
        if (u.seq > e.remote_seq) delta += u.delta;
      }
      if (total > kMaxLoggedKeys) {
        ++unlogged;
        unlogged_delta += static_cast<int64_t>(delta);
        continue;
      }
      const std::string cause =
          !e.data_error.ok()  ? e.data_error.status.ToString()
          : e.last_error.ok() ? std::string("Redis did not confirm the flush in time")
                              : absl::StrCat("Redis unreachable (", e.last_error.ToString(), ")");
      spdlog::error("lax increments not flushed: namespace '{}' key '{}' delta {}: {}", k.first,
                    k.second, static_cast<int64_t>(delta), cause);
    }
  }
  if (unlogged > 0) {
    spdlog::error("lax increments not flushed: {} more key(s), delta {} in all", unlogged,
                  unlogged_delta);
  }
  return {total, broken};
}

int64_t Counters::Shutdown(std::chrono::milliseconds timeout, int64_t* broken) {
  flush_task_.Stop();
  // A key with a data error gets one more try at once (it may have been repaired meanwhile);
  // after that, waiting for it would only use up the grace the other keys may need.
  for (int i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    for (auto& [k, e] : shards_[i].map) e.data_error.retry_at_ns = 0;
  }
  RetryUntil([this] { FlushNow(); }, [this] { return outstanding_flushes_.load() <= 0; },
             [this] {
               if (stats_.dirty_keys.load() == 0) return true;
               auto [total, bad] = CountUnflushed(/*log=*/false);
               return total == bad;
             },
             std::chrono::steady_clock::now() + timeout);
  auto [total, bad] = CountUnflushed(/*log=*/true);
  if (broken != nullptr) *broken = bad;
  return total;
}

}  // namespace distkit::core
