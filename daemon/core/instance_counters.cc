#include "daemon/core/instance_counters.h"

#include <algorithm>
#include <future>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "daemon/common/logging.h"
#include "daemon/common/strings.h"
#include "daemon/common/wait_until.h"
#include "daemon/core/int64_math.h"
#include "daemon/core/join.h"
#include "daemon/core/script_status.h"
#include "daemon/redis/reply.h"

namespace distkit::core {
namespace {

constexpr char kScript[] = "icounter";
constexpr char kLiveScript[] = "liveness";
constexpr int kMaxOutstandingRestores = 1000;
LogEvery g_flush_log(std::chrono::seconds(5));

std::chrono::milliseconds BeatPeriod(const InstanceCountersOptions& o) {
  return std::chrono::milliseconds(std::max<int64_t>(1, o.dead_instance_threshold_ms / 3));
}

std::string ReplyInt(const redis::Reply& r) {
  return r.type == redis::Reply::Type::kInteger ? absl::StrCat(r.integer) : r.str;
}

// Parses an icounter.lua reply. OUT_OF_RANGE ("overflow") still returns the reply through
// `out` (the carried entries were applied; only the op was refused).
absl::StatusOr<InstanceReply> ParseReply(absl::StatusOr<redis::Reply> r, std::string_view key,
                                         std::optional<InstanceReply>* applied_reply) {
  if (!r.ok()) return r.status();
  if (r->is_error()) {
    absl::Status s = redis::RedisErrorStatus(r->str);
    if (!absl::IsFailedPrecondition(s)) return s;
    return absl::FailedPreconditionError(absl::StrCat("key '", AbslView(key), "': ", s.message()));
  }
  const auto& e = r->elements;
  if (r->type != redis::Reply::Type::kArray || e.size() < 6) {
    return absl::InternalError(absl::StrCat("unexpected icounter reply: ", r->DebugString()));
  }
  const ScriptStatus status = ParseScriptStatus(e[0].str);
  if (status == ScriptStatus::kNotInt) {
    return absl::FailedPreconditionError(
        absl::StrCat("a value stored in Redis for key '", AbslView(key),
                     "' (its cumulative, epoch or this instance's slice) is not what distkit "
                     "writes; nothing changed (Set or Del overwrites it)"));
  }
  if (status == ScriptStatus::kCorrupt) {
    return absl::FailedPreconditionError(
        absl::StrCat("the dedup mark of this daemon in the Redis hash of key '", AbslView(key),
                     "' is not a sequence number; nothing changed (Set or Del overwrites it)"));
  }
  auto c = ParseInt64(ReplyInt(e[1]));
  auto i = ParseInt64(ReplyInt(e[2]));
  auto pc = ParseInt64(ReplyInt(e[3]));
  auto pi = ParseInt64(ReplyInt(e[4]));
  auto ep = e.size() > 6 ? ParseInt64(ReplyInt(e[6])) : std::optional<int64_t>(0);
  auto seen = e.size() > 7 ? ParseInt64(ReplyInt(e[7])) : std::optional<int64_t>(0);
  auto before = e.size() > 9 ? ParseInt64(ReplyInt(e[9])) : pi;
  const bool stale = status == ScriptStatus::kStale;
  if ((status != ScriptStatus::kOk && status != ScriptStatus::kOverflow && !stale) || !c || !i ||
      !pc || !pi || !ep || !seen || !before || *seen < 0 || (stale && e.size() < 12)) {
    return absl::InternalError(absl::StrCat("unexpected icounter reply: ", r->DebugString()));
  }
  InstanceReply out;
  out.cumulative = *c;
  out.instance = *i;
  out.previous_cumulative = *pc;
  out.previous_instance = *pi;
  out.applied = e[5].integer != 0;
  out.epoch = *ep;
  out.seen = static_cast<uint64_t>(*seen);
  out.dropped = e.size() > 8 ? e[8].integer : 0;
  out.before = *before;
  out.overflow = status == ScriptStatus::kOverflow;
  out.stale = stale;
  if (e.size() > 10 && e[10].type == redis::Reply::Type::kInteger) out.redis_now_ms = e[10].integer;
  out.resolved = e.size() > 11 && e[11].integer == 1;
  *applied_reply = out;
  if (stale) {
    return absl::UnavailableError(
        "this daemon's LAX work for the key was older than --lax_resend_bound_ms and was "
        "resolved first; nothing else changed, retry");
  }
  if (out.overflow) {
    return absl::OutOfRangeError("result would leave the int64 range; nothing changed");
  }
  return out;
}

std::string_view OpName(int op) {
  static constexpr std::string_view kNames[] = {
      "get", "inc", "set", "set_on_instance", "del", "del_on_instance", "restore"};
  return kNames[op];
}

// Keeps InstanceCountersStats::dirty_keys in step with an entry's transitions.
class DirtyTracker {
 public:
  DirtyTracker(std::atomic<int64_t>& counter, const InstanceEntry& e)
      : counter_(counter), e_(e), was_(e.dirty()) {}
  ~DirtyTracker() {
    const bool is = e_.dirty();
    if (is != was_) counter_ += is ? 1 : -1;
  }

 private:
  std::atomic<int64_t>& counter_;
  const InstanceEntry& e_;
  const bool was_;
};

}  // namespace

InstanceCounters::InstanceCounters(redis::RedisClient* redis, InstanceCountersOptions options,
                                   const Clock* clock)
    : redis_(redis),
      options_(std::move(options)),
      clock_(clock),
      beat_task_(BeatPeriod(options_),
                 [this] {
                   const auto timeout =
                       std::max(BeatPeriod(options_), std::chrono::milliseconds(100));
                   if (auto s = BeatOnce(timeout); !s.ok()) {
                     spdlog::warn("heartbeat failed: {}", s.ToString());
                   }
                 }),
      reap_task_(std::chrono::milliseconds(
                     std::max<int64_t>(1000, options_.dead_instance_threshold_ms / 10)),
                 [this] {
                   if (auto s = ReapOnce(std::chrono::milliseconds(10000)); !s.ok()) {
                     spdlog::warn("reaper: {}", s.ToString());
                   }
                 }),
      flush_task_(std::chrono::milliseconds(std::max<int64_t>(1, options_.flush_interval_ms)),
                  [this, next_evict = std::chrono::steady_clock::now()]() mutable {
                    if (incarnation_.load() == 0) RegisterIfDue();
                    FlushNow();
                    if (std::chrono::steady_clock::now() >= next_evict) {
                      EvictIdle();
                      next_evict = std::chrono::steady_clock::now() + std::chrono::seconds(1);
                    }
                  }) {}

InstanceCounters::~InstanceCounters() { StopThreads(); }

InstanceCounters::Shard& InstanceCounters::ShardFor(const MapKey& k) {
  return shards_.ShardFor(absl::HashOf(k.first, k.second));
}

// ---------------------------------------------------------------- blocking helpers

absl::StatusOr<redis::Reply> InstanceCounters::Call(std::vector<std::string> argv,
                                                    std::chrono::milliseconds timeout) {
  auto p = std::make_shared<std::promise<absl::StatusOr<redis::Reply>>>();
  auto f = p->get_future();
  redis_->Command(std::move(argv), [p](absl::StatusOr<redis::Reply> r) { p->set_value(r); });
  if (f.wait_for(timeout) != std::future_status::ready) {
    return absl::DeadlineExceededError("Redis did not answer in time");
  }
  auto r = f.get();
  if (r.ok() && r->is_error()) return redis::RedisErrorStatus(r->str);
  return r;
}

absl::StatusOr<redis::Reply> InstanceCounters::Live(std::vector<std::string> args,
                                                    std::chrono::milliseconds timeout) {
  auto p = std::make_shared<std::promise<absl::StatusOr<redis::Reply>>>();
  auto f = p->get_future();
  redis_->Script(kLiveScript, {kLiveInstancesKey, kLiveIncarnationsKey}, std::move(args),
                 [p](absl::StatusOr<redis::Reply> r) { p->set_value(r); });
  if (f.wait_for(timeout) != std::future_status::ready) {
    return absl::DeadlineExceededError("Redis did not answer in time");
  }
  auto r = f.get();
  if (r.ok() && r->is_error()) return redis::RedisErrorStatus(r->str);
  return r;
}

// ---------------------------------------------------------------- liveness

bool InstanceCounters::Register(std::chrono::milliseconds timeout) {
  auto r = Live({"register", options_.instance_id, absl::StrCat(incarnation_.load())}, timeout);
  if (!r.ok() || r->elements.size() != 2) {
    spdlog::warn("instance {}: registration failed: {}", options_.instance_id,
                 r.ok() ? r->DebugString() : r.status().ToString());
    return false;
  }
  const int64_t now = r->elements[0].integer;
  const int64_t old = incarnation_.exchange(now);
  absl::MutexLock lock(&own_mu_);
  if (old != 0 && old != now) {
    own_dead_incarnations_.push_back(old);
  } else if (now > 1) {
    // A previous process with this --instance_id may have died without deregistering; its
    // score is ours now, so only we can reap its last incarnation.
    own_dead_incarnations_.push_back(now - 1);
  }
  return true;
}

void InstanceCounters::RegisterIfDue() {
  absl::MutexLock lock(&register_mu_);
  const auto now = std::chrono::steady_clock::now();
  if (incarnation_.load() != 0 || now < next_register_) return;
  if (Register(std::chrono::milliseconds(1000))) {
    spdlog::info("instance {} registered, incarnation {}; LAX work taken meanwhile is flushed now",
                 options_.instance_id, incarnation_.load());
    register_backoff_ = std::chrono::milliseconds(0);
    return;
  }
  register_backoff_ = register_backoff_.count() == 0
                          ? std::chrono::milliseconds(100)
                          : std::min(2 * register_backoff_, std::chrono::milliseconds(2000));
  next_register_ = now + register_backoff_;
}

absl::Status InstanceCounters::Start(std::chrono::milliseconds timeout) {
  absl::Status out = absl::OkStatus();
  if (Register(timeout)) {
    spdlog::info("instance {} registered, incarnation {}", options_.instance_id,
                 incarnation_.load());
  } else {
    out = absl::UnavailableError("instance registration failed; retried by the heartbeat");
  }
  beat_task_.Start();
  reap_task_.Start();
  flush_task_.Start();
  return out;
}

void InstanceCounters::StopThreads() {
  // No task starts another run once any of them is stopping.
  for (PeriodicTask* t : {&beat_task_, &reap_task_, &flush_task_}) t->RequestStop();
  for (PeriodicTask* t : {&beat_task_, &reap_task_, &flush_task_}) t->Stop();
}

void InstanceCounters::StopWithoutDeregistering() { StopThreads(); }

absl::Status InstanceCounters::BeatOnce(std::chrono::milliseconds timeout) {
  const int64_t inc = incarnation_.load();
  if (inc == 0) {
    absl::MutexLock lock(&register_mu_);
    if (incarnation_.load() != 0) return absl::OkStatus();  // the flush thread registered
    if (!Register(timeout)) return absl::UnavailableError("registration failed");
    spdlog::info("instance {} registered, incarnation {}", options_.instance_id,
                 incarnation_.load());
    return absl::OkStatus();
  }
  auto r = Live({"beat", options_.instance_id, absl::StrCat(inc),
                 absl::StrCat(options_.dead_instance_threshold_ms)},
                timeout);
  if (!r.ok()) return r.status();
  if (r->integer == 1) {
    stats_.heartbeats++;
    return absl::OkStatus();
  }
  // Declared dead (paused or partitioned longer than the threshold): the reapers may have
  // removed our slices. New incarnation; every slice we hold is written back (restore) before
  // the next operation on its key; the reaper thread restores the rest.
  if (!Register(timeout)) return absl::UnavailableError("re-registration failed");
  stats_.declared_dead++;
  const int64_t now = incarnation_.load();
  MarkForRestore(now);
  spdlog::error(
      "instance {} was declared dead; re-registered as incarnation {}, restoring its "
      "slices",
      options_.instance_id, now);
  reap_task_.Wake();
  return absl::OkStatus();
}

absl::Status InstanceCounters::ReapOnce(std::chrono::milliseconds timeout) {
  // Recovery first: our keys wait for it.
  absl::Status restored = RestoreAll(timeout);
  std::vector<int64_t> own;
  {
    absl::MutexLock lock(&own_mu_);
    own.swap(own_dead_incarnations_);
  }
  for (size_t i = 0; i < own.size(); ++i) {
    if (auto s = ReapInstance(options_.instance_id, absl::StrCat(own[i]), timeout); !s.ok()) {
      absl::MutexLock lock(&own_mu_);  // retried on the next pass
      own_dead_incarnations_.insert(own_dead_incarnations_.end(), own.begin() + i, own.end());
      return s;
    }
  }
  auto r = Live({"dead", absl::StrCat(options_.dead_instance_threshold_ms)}, timeout);
  if (!r.ok()) return r.status();
  for (size_t i = 0; i + 1 < r->elements.size(); i += 2) {
    const std::string& id = r->elements[i].str;
    const std::string& inc = r->elements[i + 1].str;
    if (auto s = ReapInstance(id, inc, timeout); !s.ok()) return s;
  }
  stats_.reaper_passes++;
  return restored;
}

absl::Status InstanceCounters::ReapInstance(const std::string& id, const std::string& inc,
                                            std::chrono::milliseconds timeout) {
  const std::string ns_set = InstanceNamespaceSet(id, inc);
  auto nss = Call({"SMEMBERS", ns_set}, timeout);
  if (!nss.ok()) return nss.status();
  for (const auto& nsr : nss->elements) {
    const std::string set = InstanceKeySet(id, inc, nsr.str);
    std::string cursor = "0";
    do {
      auto sc = Call({"SSCAN", set, cursor, "COUNT", "1000"}, timeout);
      if (!sc.ok()) return sc.status();
      if (sc->elements.size() != 2) return absl::InternalError("unexpected SSCAN reply");
      cursor = sc->elements[0].str;
      const auto& members = sc->elements[1].elements;
      if (members.empty()) continue;
      auto p = std::make_shared<std::promise<absl::Status>>();
      auto f = p->get_future();
      auto join = std::make_shared<Join>();
      join->remaining = static_cast<int>(members.size());
      join->then = [p](absl::Status s) { p->set_value(s); };
      for (const auto& m : members) {
        redis_->Script(
            kScript, {InstanceCounterKey(nsr.str, m.str)},
            {options_.instance_id, absl::StrCat(std::max<int64_t>(1, incarnation_.load())),
             options_.dedup_id, "0", "reap", "", "0", "0", id, inc},
            [this, join, key = m.str](absl::StatusOr<redis::Reply> raw) {
              std::optional<InstanceReply> rep;
              auto pr = ParseReply(std::move(raw), key, &rep);
              absl::Status s = pr.status();
              if (pr.ok() && pr->applied) stats_.reaped_slices++;
              // A reap that would overflow the cumulative stays refused until a Set/Del of the
              // key: count the key as done, or the key set never empties.
              if (s.code() == absl::StatusCode::kOutOfRange ||
                  s.code() == absl::StatusCode::kFailedPrecondition) {
                spdlog::warn("reaper: key '{}': {}", key, s.ToString());
                s = absl::OkStatus();
              }
              join->Done(s);
            });
      }
      if (f.wait_for(timeout) != std::future_status::ready) {
        return absl::DeadlineExceededError("reaper: Redis did not answer in time");
      }
      if (auto s = f.get(); !s.ok()) return s;
      std::vector<std::string> srem = {"SREM", set};
      for (const auto& m : members) srem.push_back(m.str);
      if (auto s = Call(std::move(srem), timeout); !s.ok()) return s.status();
    } while (cursor != "0");
    auto card = Call({"SCARD", set}, timeout);
    if (!card.ok()) return card.status();
    if (card->integer == 0) {
      if (auto s = Call({"SREM", ns_set, nsr.str}, timeout); !s.ok()) return s.status();
    }
  }
  auto left = Call({"SCARD", ns_set}, timeout);
  if (!left.ok()) return left.status();
  if (left->integer == 0) {
    auto rm = Live({"remove", id, inc}, timeout);
    if (!rm.ok()) return rm.status();
    stats_.reaped_instances++;
    spdlog::info("reaper: removed dead instance {} incarnation {}", id, inc);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- recovery

void InstanceCounters::MarkForRestore(int64_t inc) {
  for (int i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    for (auto& [k, e] : shards_[i].map) {
      // A slice of 0 that Redis also shows as 0 needs nothing; anything else is written back
      // (a write after a reap left a slice at the old incarnation: restore replaces it).
      if (e.belief != 0 || e.remote_inst != 0) e.restore_inc = inc;
    }
  }
}

void InstanceCounters::StartRestore(const MapKey& k) {
  Shard& shard = ShardFor(k);
  int64_t inc = 0, epoch = 0, value = 0;
  std::vector<Waiter> waiters;
  {
    absl::MutexLock lock(&shard.mu);
    auto it = shard.map.find(k);
    if (it == shard.map.end()) return;
    InstanceEntry& e = it->second;
    if (e.restore_inc == 0 || e.restoring || e.carriers > 0) return;
    inc = e.restore_inc;
    epoch = e.epoch;
    value = e.belief;
    if (epoch == 0) {
      // Never saw the key with an epoch: no slice of ours to restore.
      e.restore_inc = 0;
      waiters.swap(e.waiters);
    } else {
      e.restoring = true;
      ++e.carriers;
    }
  }
  if (!waiters.empty() || inc == 0) {
    for (auto& w : waiters) w(absl::OkStatus());
    return;
  }
  outstanding_++;
  auto finish = [this, k, inc](absl::Status s) {
    std::vector<Waiter> waiters;
    {
      Shard& shard = ShardFor(k);
      absl::MutexLock lock(&shard.mu);
      InstanceEntry& e = shard.map[k];
      e.restoring = false;
      if (s.ok() && e.restore_inc == inc) e.restore_inc = 0;
      waiters.swap(e.waiters);
    }
    outstanding_--;
    for (auto& w : waiters) w(s);
    if (!s.ok() && g_flush_log.ShouldLog()) {
      spdlog::warn("recovery of {}/{} failed (retried): {}", k.first, k.second, s.ToString());
    }
  };
  // The restored slice counts at incarnation `inc`: its key set must list the key first.
  const bool needs_register = value != 0;
  Send(k, Op::kRestore, Condition{}, epoch, inc, {}, needs_register,
       [this, value, finish = std::move(finish)](absl::StatusOr<InstanceResult> r) mutable {
         if (r.ok() && r->applied && value != 0) stats_.restored_slices++;
         finish(r.status());
       });
}

absl::Status InstanceCounters::RestoreAll(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<MapKey> due;
  for (int i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    for (const auto& [k, e] : shards_[i].map) {
      if (e.restore_inc != 0 && !e.restoring) due.push_back(k);
    }
  }
  for (const auto& k : due) {
    if (!WaitUntil([this] { return outstanding_.load() < kMaxOutstandingRestores; }, deadline)) {
      return absl::DeadlineExceededError("recovery: Redis did not answer in time");
    }
    StartRestore(k);  // a key with commands in flight starts when the last one settles
  }
  WaitUntil([this] { return outstanding_.load() <= 0; }, deadline);
  return absl::OkStatus();
}

// ---------------------------------------------------------------- strict path

void InstanceCounters::RunStrict(const MapKey& k, Op op, Condition cond, int64_t arg,
                                 InstanceCallback done) {
  const int64_t inc = incarnation_.load();
  if (inc == 0) {
    return done(absl::UnavailableError("this instance is not registered in Redis yet"));
  }
  std::vector<SeqSliceOp> carried;
  bool needs_register = false, restore_now = false, waiting = false, no_time = false;
  const bool bounded = options_.resend_bound_ms > 0;
  const std::optional<int64_t> now_ms = bounded ? redis_time_.NowMs(Now()) : std::nullopt;
  Shard& shard = ShardFor(k);
  {
    absl::MutexLock lock(&shard.mu);
    InstanceEntry& e = shard.map[k];
    e.last_access_ns = Now();
    if (bounded && !now_ms && e.dirty()) {
      no_time = true;  // lax work to fold in, but no Redis time yet to bound its resends with
    } else if (e.restore_inc != 0 || e.restoring) {
      // Recovery first: our slice goes back before anything else touches the key.
      e.waiters.push_back([this, k, op, cond, arg, done = std::move(done)](absl::Status s) mutable {
        if (!s.ok()) return done(s);
        RunStrict(k, op, cond, arg, std::move(done));
      });
      restore_now = e.carriers == 0 && !e.restoring;
      waiting = true;
    } else {
      DirtyTracker dt(stats_.dirty_keys, e);
      if (AssignPendingSliceOp(e, next_seq_.load())) next_seq_++;
      if (now_ms) StampFirstSend(e.unacked, *now_ms);
      carried = e.unacked;
      ++e.carriers;
      const bool writes =
          op == Op::kInc || op == Op::kSet || op == Op::kSetOnInstance || !carried.empty();
      needs_register = writes && e.registered_inc != inc;
    }
  }
  if (no_time) {
    // A read first: its reply carries Redis time, which our LAX work's resend bound needs.
    // NOLINTNEXTLINE(bugprone-use-after-move): `done` moved above only when waiting (not here).
    return RefreshThen(k, [this, k, op, cond, arg, done = std::move(done)](absl::Status) mutable {
      if (!redis_time_.NowMs(Now())) {
        return done(absl::UnavailableError(
            "Redis has not answered this daemon yet (its LAX work for the key goes first); "
            "retry"));
      }
      RunStrict(k, op, cond, arg, std::move(done));
    });
  }
  if (waiting) {
    if (restore_now) StartRestore(k);
    return;
  }
  // NOLINTNEXTLINE(bugprone-use-after-move): `done` moved above only when waiting (returned).
  Send(k, op, cond, arg, inc, std::move(carried), needs_register, std::move(done));
}

void InstanceCounters::Send(const MapKey& k, Op op, Condition cond, int64_t arg, int64_t inc,
                            std::vector<SeqSliceOp> carried, bool needs_register,
                            InstanceCallback done) {
  if (!needs_register) {
    return SendScript(k, op, cond, arg, inc, std::move(carried), std::move(done));
  }
  // First slice write of this key in this incarnation: list the key in the incarnation's key
  // set first, so a reaper finds the slice if this daemon dies.
  redis_->Command({"SADD", InstanceNamespaceSet(options_.instance_id, inc), k.first}, [](auto) {});
  redis_->Command({"SADD", InstanceKeySet(options_.instance_id, inc, k.first), k.second},
                  [this, k, op, cond, arg, inc, carried = std::move(carried),
                   done = std::move(done)](absl::StatusOr<redis::Reply> r) mutable {
                    absl::Status s = r.status();
                    if (s.ok() && r->is_error()) s = redis::RedisErrorStatus(r->str);
                    if (!s.ok()) {
                      // The script was not sent: its entries surely did not reach Redis.
                      Settle(k, op, inc, carried, nullptr, /*maybe_sent=*/false);
                      return done(s);
                    }
                    {
                      Shard& shard = ShardFor(k);
                      absl::MutexLock lock(&shard.mu);
                      auto it = shard.map.find(k);
                      if (it != shard.map.end()) {
                        it->second.registered_inc = std::max(it->second.registered_inc, inc);
                      }
                    }
                    SendScript(k, op, cond, arg, inc, std::move(carried), std::move(done));
                  });
}

void InstanceCounters::SendScript(const MapKey& k, Op op, Condition cond, int64_t arg, int64_t inc,
                                  std::vector<SeqSliceOp> carried, InstanceCallback done) {
  std::vector<std::string> args;
  args.reserve(10 + 3 * carried.size());
  args.push_back(options_.instance_id);
  args.push_back(absl::StrCat(inc));
  args.push_back(options_.dedup_id);
  args.push_back(absl::StrCat(carried.size()));
  for (const auto& u : carried) {
    args.push_back(absl::StrCat(u.seq));
    args.emplace_back(u.op.kind == SliceOpKind::kSet ? "set" : "add");
    args.push_back(absl::StrCat(u.op.value));
  }
  args.emplace_back(OpName(static_cast<int>(op)));
  args.emplace_back(ComparatorName(cond.op));
  args.push_back(absl::StrCat(cond.operand));
  if (op == Op::kRestore) {
    // restore takes (epoch, value): `arg` is the epoch, the value is the belief.
    args.push_back("0");
    args.push_back(absl::StrCat(arg));
    Shard& shard = ShardFor(k);
    absl::MutexLock lock(&shard.mu);
    args.push_back(absl::StrCat(shard.map[k].belief));
  } else {
    args.push_back(absl::StrCat(arg));
  }
  if (options_.resend_bound_ms > 0) {
    // Also without entries: the reply then carries Redis time (FlushNow's first read needs it).
    int64_t sent_ms = carried.empty() ? 0 : carried.front().sent_ms;
    for (const auto& u : carried) sent_ms = std::min(sent_ms, u.sent_ms);
    args.push_back(absl::StrCat(std::max<int64_t>(sent_ms, 0)));
    args.push_back(absl::StrCat(options_.resend_bound_ms));
  }
  redis_->Script(kScript, {InstanceCounterKey(k.first, k.second)}, std::move(args),
                 [this, k, op, inc, carried = std::move(carried),
                  done = std::move(done)](absl::StatusOr<redis::Reply> raw) mutable {
                   bool maybe_sent = !redis::IsNotSent(raw.status());
                   std::optional<InstanceReply> rep;
                   auto r = ParseReply(std::move(raw), k.second, &rep);
                   if (rep) redis_time_.Note(rep->redis_now_ms, Now());
                   // A data error (the key's data cannot be read) wrote nothing.
                   if (absl::IsFailedPrecondition(r.status())) maybe_sent = false;
                   Settle(k, op, inc, carried, rep ? &*rep : nullptr, maybe_sent, r.status());
                   if (!r.ok()) return done(r.status());
                   done(InstanceResult{r->cumulative, r->instance, r->previous_cumulative,
                                       r->previous_instance,
                                       // "false only when a condition failed"
                                       // (docs/api.md#instancecounterservice): a Get has none.
                                       r->applied || op == Op::kGet});
                 });
}

void InstanceCounters::Settle(const MapKey& k, Op op, int64_t /*inc*/,
                              const std::vector<SeqSliceOp>& carried, const InstanceReply* reply,
                              bool maybe_sent, const absl::Status& status) {
  if (reply != nullptr && reply->dropped > 0) {
    stats_.dropped_overflow += reply->dropped;
    spdlog::error("{}/{}: {} lax operation(s) dropped, the Redis value would overflow int64",
                  k.first, k.second, reply->dropped);
  }
  bool restore_now = false;
  StaleOutcome stale;
  {
    Shard& shard = ShardFor(k);
    absl::MutexLock lock(&shard.mu);
    auto it = shard.map.find(k);
    if (it == shard.map.end()) return;
    InstanceEntry& e = it->second;
    DirtyTracker dt(stats_.dirty_keys, e);
    const bool assigns = op == Op::kSet || op == Op::kSetOnInstance || op == Op::kDel ||
                         op == Op::kDelOnInstance || op == Op::kRestore;
    OnInstanceCarrierDone(e, carried, reply, assigns && !(reply && reply->stale), maybe_sent,
                          Now());
    if (reply != nullptr && reply->stale) {
      stale = OnInstanceStale(e, carried, reply->resolved, [this] { return next_seq_++; });
    }
    if (reply != nullptr) {
      e.data_error.Clear();
    } else if (absl::IsFailedPrecondition(status)) {
      e.data_error.Fail(status, Now());
    }
    restore_now = e.restore_inc != 0 && !e.restoring && e.carriers == 0;
  }
  CountStale(stale, k.first, k.second, "LAX instance-counter operation(s)", stats_.resent_stale,
             stats_.given_up);
  if (restore_now) StartRestore(k);
}

// ---------------------------------------------------------------- lax path

void InstanceCounters::RefreshThen(const MapKey& k, Waiter then) {
  {
    Shard& shard = ShardFor(k);
    absl::MutexLock lock(&shard.mu);
    InstanceEntry& e = shard.map[k];
    e.waiters.push_back(std::move(then));
    if (e.refreshing) return;  // one read, shared by concurrent callers
    e.refreshing = true;
    ++e.carriers;
  }
  const int64_t inc = std::max<int64_t>(1, incarnation_.load());
  SendScript(k, Op::kGet, Condition{}, 0, inc, {}, [this, k](absl::StatusOr<InstanceResult> r) {
    std::vector<Waiter> waiters;
    {
      Shard& shard = ShardFor(k);
      absl::MutexLock lock(&shard.mu);
      InstanceEntry& e = shard.map[k];
      e.refreshing = false;
      // Answer from the last known state (0 if never known); keep the work.
      e.initialized = true;
      waiters.swap(e.waiters);
    }
    if (!r.ok() && g_flush_log.ShouldLog()) {
      spdlog::warn("lax read of {}/{} failed: {}", k.first, k.second, r.status().ToString());
    }
    for (auto& w : waiters) w(absl::OkStatus());
  });
}

std::optional<absl::StatusOr<InstanceResult>> InstanceCounters::TryLax(const MapKey& k, SliceOp op,
                                                                       Condition cond,
                                                                       bool may_read) {
  Shard& shard = ShardFor(k);
  absl::MutexLock lock(&shard.mu);
  absl::StatusOr<InstanceEntry*> entry = FindOrCreate(shard, k);
  if (!entry.ok()) return entry.status();
  InstanceEntry& e = **entry;
  const int64_t now = Now();
  e.last_access_ns = now;
  if (!e.initialized || e.restore_inc != 0 || e.restoring) return std::nullopt;
  if (!e.data_error.ok()) {
    // A key known to be broken refuses new work (it could not be stored either). A key with
    // work of ours is re-checked by the flush; one without by a read, when due.
    if (may_read && !e.dirty() && e.carriers == 0 && e.data_error.Due(now)) return std::nullopt;
    return e.data_error.status;
  }
  DirtyTracker dt(stats_.dirty_keys, e);
  const InstanceView view = LocalInstanceView(e).value_or(InstanceView{});
  // Inc compares the cumulative, SetOnInstance this instance's slice.
  const int64_t compared = op.kind == SliceOpKind::kAdd ? view.cumulative : view.instance;
  if (!Holds(cond, compared)) {
    return InstanceResult{view.cumulative, view.instance, view.cumulative, view.instance, false};
  }
  if (!e.dirty() && stats_.dirty_keys.load() >= options_.max_pending_keys &&
      !(op.kind == SliceOpKind::kAdd && op.value == 0)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many keys with unflushed lax work (max_pending_keys=", options_.max_pending_keys,
        "); retry later"));
  }
  if (!AddPendingSliceOp(e, op)) {
    return absl::OutOfRangeError("result would leave the int64 range; nothing changed");
  }
  const InstanceView after = LocalInstanceView(e).value_or(InstanceView{});
  return InstanceResult{after.cumulative, after.instance, view.cumulative, view.instance, true};
}

void InstanceCounters::LaxWrite(const MapKey& k, SliceOp op, Condition cond, InstanceCallback done,
                                bool may_read) {
  // Also before this instance registered (Redis down at the start): LAX answers from memory,
  // and the work is flushed once the registration went through.
  if (auto r = TryLax(k, op, cond, may_read)) return done(std::move(*r));
  bool restore_now = false, restore_wait = false;
  {
    Shard& shard = ShardFor(k);
    absl::MutexLock lock(&shard.mu);
    InstanceEntry& e = shard.map[k];
    if (e.restore_inc != 0 || e.restoring) {
      e.waiters.push_back([this, k, op, cond, done = std::move(done)](absl::Status s) mutable {
        if (!s.ok()) return done(s);
        LaxWrite(k, op, cond, std::move(done));
      });
      restore_now = e.carriers == 0 && !e.restoring;
      restore_wait = true;
    }
  }
  if (restore_wait) {
    if (restore_now) StartRestore(k);
    return;
  }
  // First touch: read the Redis state once (shared by concurrent callers), then apply.
  // NOLINTNEXTLINE(bugprone-use-after-move): `done` moved above only when waiting (returned).
  RefreshThen(k, [this, k, op, cond, done = std::move(done)](absl::Status) mutable {
    LaxWrite(k, op, cond, std::move(done), /*may_read=*/false);
  });
}

void InstanceCounters::LaxGet(const MapKey& k, InstanceCallback done) {
  std::optional<InstanceResult> result;
  absl::Status error;
  {
    Shard& shard = ShardFor(k);
    absl::MutexLock lock(&shard.mu);
    absl::StatusOr<InstanceEntry*> entry = FindOrCreate(shard, k);
    if (!entry.ok()) {
      error = entry.status();
    } else {
      InstanceEntry& e = **entry;
      const int64_t now = Now();
      e.last_access_ns = now;
      const bool fresh = e.initialized && e.refreshed_ns != 0 &&
                         now - e.refreshed_ns <= options_.allowed_lag_ms * 1'000'000;
      // A broken key answers its error (STRICT would too) until its backoff allows a re-read.
      if (!e.data_error.ok() && !e.data_error.Due(now)) {
        error = e.data_error.status;
      } else if (fresh && e.data_error.ok()) {
        const InstanceView v = LocalInstanceView(e).value_or(InstanceView{});
        result = InstanceResult{v.cumulative, v.instance, v.cumulative, v.instance, true};
      }
    }
  }
  if (!error.ok()) return done(error);
  if (result) return done(*result);
  RefreshThen(k, [this, k, done = std::move(done)](absl::Status) mutable {
    InstanceView v;
    absl::Status broken;
    {
      Shard& shard = ShardFor(k);
      absl::MutexLock lock(&shard.mu);
      const InstanceEntry& e = shard.map[k];
      v = LocalInstanceView(e).value_or(InstanceView{});
      broken = e.data_error.status;
    }
    if (!broken.ok()) return done(broken);
    done(InstanceResult{v.cumulative, v.instance, v.cumulative, v.instance, true});
  });
}

std::optional<absl::StatusOr<InstanceResult>> InstanceCounters::TryLaxInc(const std::string& ns,
                                                                          const std::string& key,
                                                                          int64_t delta,
                                                                          Condition cond) {
  return TryLax({ns, key}, SliceOp{SliceOpKind::kAdd, delta}, cond);
}

// ---------------------------------------------------------------- public API

void InstanceCounters::Inc(const std::string& ns, const std::string& key, int64_t delta,
                           Consistency c, Condition cond, InstanceCallback done) {
  if (c == Consistency::kLax) {
    return LaxWrite({ns, key}, SliceOp{SliceOpKind::kAdd, delta}, cond, std::move(done));
  }
  RunStrict({ns, key}, Op::kInc, cond, delta, std::move(done));
}
void InstanceCounters::Get(const std::string& ns, const std::string& key, Consistency c,
                           InstanceCallback done) {
  if (c == Consistency::kLax) return LaxGet({ns, key}, std::move(done));
  RunStrict({ns, key}, Op::kGet, Condition{}, 0, std::move(done));
}
void InstanceCounters::Set(const std::string& ns, const std::string& key, int64_t value,
                           Condition cond, InstanceCallback done) {
  RunStrict({ns, key}, Op::kSet, cond, value, std::move(done));
}
void InstanceCounters::SetOnInstance(const std::string& ns, const std::string& key, int64_t value,
                                     Consistency c, Condition cond, InstanceCallback done) {
  if (c == Consistency::kLax) {
    return LaxWrite({ns, key}, SliceOp{SliceOpKind::kSet, value}, cond, std::move(done));
  }
  RunStrict({ns, key}, Op::kSetOnInstance, cond, value, std::move(done));
}
void InstanceCounters::Del(const std::string& ns, const std::string& key, InstanceCallback done) {
  RunStrict({ns, key}, Op::kDel, Condition{}, 0, std::move(done));
}
void InstanceCounters::DelOnInstance(const std::string& ns, const std::string& key,
                                     InstanceCallback done) {
  RunStrict({ns, key}, Op::kDelOnInstance, Condition{}, 0, std::move(done));
}

std::vector<InstanceCounters::MapKey> InstanceCounters::KeysOf(const std::string& ns) {
  std::vector<MapKey> out;
  for (int i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    for (const auto& [k, e] : shards_[i].map) {
      if (k.first == ns) out.push_back(k);
    }
  }
  return out;
}

void InstanceCounters::Clear(const std::string& ns, StatusCallback done) {
  if (incarnation_.load() == 0) {
    return done(absl::UnavailableError("this instance is not registered in Redis yet"));
  }
  // 1. Keys this daemon holds work for: deleted with that work folded in, so none of it is
  //    replayed after the Clear. 2. Every counter of the namespace in Redis.
  const std::vector<MapKey> local = KeysOf(ns);
  auto join = std::make_shared<Join>();
  join->remaining = static_cast<int>(local.size()) + 1;
  join->then = [this, ns, done = std::move(done)](absl::Status s) mutable {
    if (!s.ok()) return done(s);
    ClearScan(ns, std::move(done));
  };
  for (const auto& k : local) {
    RunStrict(k, Op::kDel, Condition{}, 0,
              [join](absl::StatusOr<InstanceResult> r) { join->Done(r.status()); });
  }
  join->Done(absl::OkStatus());
}

void InstanceCounters::ClearScan(const std::string& ns, StatusCallback done) {
  auto each = std::make_shared<const EachKey>([this](const std::string& key, StatusCallback done) {
    redis_->Script(kScript, {key},
                   {options_.instance_id, absl::StrCat(incarnation_.load()), options_.dedup_id, "0",
                    "del", "", "0", "0"},
                   [done = std::move(done), key](absl::StatusOr<redis::Reply> raw) mutable {
                     std::optional<InstanceReply> rep;
                     done(ParseReply(std::move(raw), key, &rep).status());
                   });
  });
  ScanEach(redis_, {InstanceCounterPattern(ns), ""}, "0", std::move(each), std::move(done));
}

void InstanceCounters::ClearOnInstance(const std::string& ns, StatusCallback done) {
  const int64_t inc = incarnation_.load();
  if (inc == 0) {
    return done(absl::UnavailableError("this instance is not registered in Redis yet"));
  }
  // Keys in memory (their work folded in), then every key of this incarnation's key set.
  const std::vector<MapKey> local = KeysOf(ns);
  auto join = std::make_shared<Join>();
  join->remaining = static_cast<int>(local.size()) + 1;
  join->then = [this, ns, inc, done = std::move(done)](absl::Status s) mutable {
    if (!s.ok()) return done(s);
    ClearOnInstanceScan(ns, InstanceKeySet(options_.instance_id, inc, ns), std::move(done));
  };
  for (const auto& k : local) {
    RunStrict(k, Op::kDelOnInstance, Condition{}, 0,
              [join](absl::StatusOr<InstanceResult> r) { join->Done(r.status()); });
  }
  join->Done(absl::OkStatus());
}

void InstanceCounters::ClearOnInstanceScan(const std::string& ns, std::string set,
                                           StatusCallback done) {
  auto each =
      std::make_shared<const EachKey>([this, ns](const std::string& key, StatusCallback done) {
        RunStrict({ns, key}, Op::kDelOnInstance, Condition{}, 0,
                  [done = std::move(done)](absl::StatusOr<InstanceResult> r) mutable {
                    done(r.status());
                  });
      });
  ScanEach(redis_, {"", std::move(set)}, "0", std::move(each), std::move(done));
}

// ---------------------------------------------------------------- flushing

void InstanceCounters::FlushNow() {
  const int64_t inc = incarnation_.load();
  if (inc == 0) return;
  const int64_t now = Now();
  struct Item {
    MapKey k;
    std::vector<SeqSliceOp> carried;
    bool needs_register;
  };
  std::vector<Item> batch;
  const bool bounded = options_.resend_bound_ms > 0;
  const std::optional<int64_t> now_ms = bounded ? redis_time_.NowMs(now) : std::nullopt;
  std::optional<MapKey> probe;  // bounded, no Redis time yet: a read first (its reply has it)
  for (int i = 0; i < kShards && !probe; ++i) {
    Shard& shard = shards_[i];
    absl::MutexLock lock(&shard.mu);
    for (auto& [k, e] : shard.map) {
      // A carrier is already on its way, or recovery comes first.
      if (!e.dirty() || e.carriers > 0 || e.restore_inc != 0 || e.restoring) continue;
      if (!e.data_error.Due(now)) continue;  // a broken key waits for its backoff
      if (bounded && !now_ms) {
        if (!e.refreshing) probe = k;
        break;
      }
      if (AssignPendingSliceOp(e, next_seq_.load())) next_seq_++;
      if (now_ms) StampFirstSend(e.unacked, *now_ms);
      ++e.carriers;
      batch.push_back(Item{k, e.unacked, e.registered_inc != inc});
    }
  }
  if (probe) RefreshThen(*probe, [](absl::Status) {});
  // All calls enqueue at once; the executor writes them as one pipeline.
  for (auto& item : batch) {
    stats_.flush_commands++;
    outstanding_++;
    Send(item.k, Op::kGet, Condition{}, 0, inc, std::move(item.carried), item.needs_register,
         [this, k = item.k](absl::StatusOr<InstanceResult> r) {
           if (!r.ok()) {
             stats_.flush_failures++;
             if (absl::IsFailedPrecondition(r.status())) stats_.flush_data_errors++;
             if (g_flush_log.ShouldLog()) {
               spdlog::warn("lax flush of {}/{} failed (will retry): {}", k.first, k.second,
                            r.status().ToString());
             }
           }
           outstanding_--;
         });
  }
}

std::pair<int64_t, int64_t> InstanceCounters::CountUnflushed(bool log) {
  constexpr int64_t kMaxLoggedKeys = 100;
  int64_t total = 0, broken = 0;
  for (int i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    for (const auto& [k, e] : shards_[i].map) {
      if (!e.dirty()) continue;
      ++total;
      if (!e.data_error.ok()) ++broken;
      if (!log || total > kMaxLoggedKeys) continue;
      // What Redis has not confirmed: our operations past the last state read, in order.
      std::string ops;
      for (const auto& u : e.unacked) {
        if (u.seq <= e.remote_seq) continue;
        absl::StrAppend(&ops, ops.empty() ? "" : ", ",
                        u.op.kind == SliceOpKind::kSet ? "slice := " : "slice += ", u.op.value);
      }
      if (e.pending) {
        absl::StrAppend(
            &ops, ops.empty() ? "" : ", ",
            e.pending->kind == SliceOpKind::kSet ? "slice := " : "slice += ", e.pending->value);
      }
      spdlog::error("instance LAX work not flushed: namespace '{}' key '{}' ({}): {}", k.first,
                    k.second, ops,
                    !e.data_error.ok()         ? e.data_error.status.ToString()
                    : incarnation_.load() == 0 ? std::string("never registered: Redis unreachable")
                                               : std::string("Redis unreachable"));
    }
  }
  if (log && total > kMaxLoggedKeys) {
    spdlog::error("instance LAX work not flushed: {} more key(s)", total - kMaxLoggedKeys);
  }
  return {total, broken};
}

void InstanceCounters::EvictIdle() {
  const int64_t now = Now();
  const int64_t idle_ns = options_.idle_evict_ms * 1'000'000;
  int64_t total = 0;
  size_t released = 0;
  for (int i = 0; i < kShards; ++i) {
    Shard& shard = shards_[i];
    absl::MutexLock lock(&shard.mu);
    const size_t removed = absl::erase_if(shard.map, [&](const auto& kv) {
      return kv.second.idle() && now - kv.second.last_access_ns > idle_ns;
    });
    released += ShrinkIfSparse(shard.map) + removed * sizeof(InstanceEntry);
    total += static_cast<int64_t>(shard.map.size());
  }
  stats_.cached_keys = total;
  TrimHeapAfterShrink(released);
}

absl::StatusOr<InstanceEntry*> InstanceCounters::FindOrCreate(Shard& shard, const MapKey& k) {
  auto it = shard.map.find(k);
  if (it != shard.map.end()) return &it->second;
  // cached_keys is recounted by every eviction pass (entries the strict path creates are not
  // refused: they may hold this instance's slice, which recovery needs).
  if (stats_.cached_keys.load() >= options_.max_keys) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many instance-counter keys held in memory (--max_lax_keys=", options_.max_keys,
        "); keys already held keep working, new ones are refused until idle keys are evicted"));
  }
  stats_.cached_keys++;
  return &shard.map.try_emplace(k).first->second;
}

int64_t InstanceCounters::Shutdown(std::chrono::milliseconds timeout) {
  StopThreads();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Never registered (Redis down since the start): one last try, LAX work may be waiting.
  if (incarnation_.load() == 0 && stats_.dirty_keys.load() > 0) {
    absl::MutexLock lock(&register_mu_);
    if (Register(std::max(std::chrono::milliseconds(1),
                          std::chrono::duration_cast<std::chrono::milliseconds>(
                              deadline - std::chrono::steady_clock::now()) /
                              2))) {
      spdlog::info("instance {} registered at shutdown, incarnation {}", options_.instance_id,
                   incarnation_.load());
    }
  }
  const int64_t inc = incarnation_.load();
  if (inc == 0) return CountUnflushed(/*log=*/true).first;
  // 1. Flush the LAX work (and finish a recovery in progress). A key with a data error gets
  //    one more try at once (it may have been repaired), not the whole grace.
  for (int i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    for (auto& [k, e] : shards_[i].map) e.data_error.retry_at_ns = 0;
  }
  RetryUntil(
      [&] {
        (void)RestoreAll(std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now()));
        FlushNow();
      },
      [this] { return outstanding_.load() <= 0; },
      [this] {
        if (stats_.dirty_keys.load() == 0) return true;
        auto [total, bad] = CountUnflushed(/*log=*/false);
        return total == bad;
      },
      deadline);
  CountUnflushed(/*log=*/true);
  // 2. Remove every slice we may hold.
  std::vector<MapKey> keys;
  for (int i = 0; i < kShards; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    for (const auto& [k, e] : shards_[i].map) {
      if (e.registered_inc != 0 || e.belief != 0 || e.remote_inst != 0 || e.dirty()) {
        keys.push_back(k);
      }
    }
  }
  // At most kMaxOutstandingRestores at a time (the executor bounds its queue).
  auto failed = std::make_shared<std::atomic<int64_t>>(0);
  const auto late = deadline + std::chrono::milliseconds(100);
  bool in_time = true;
  for (const auto& k : keys) {
    in_time = WaitUntil([this] { return outstanding_.load() < kMaxOutstandingRestores; }, late);
    if (!in_time) break;
    outstanding_++;
    RunStrict(k, Op::kDelOnInstance, Condition{}, 0,
              [this, failed](absl::StatusOr<InstanceResult> r) {
                if (!r.ok()) ++*failed;
                outstanding_--;
              });
  }
  in_time = in_time && WaitUntil([this] { return outstanding_.load() <= 0; }, late);
  if (!in_time) {
    spdlog::warn(
        "shutdown: removing this instance's slices did not finish in time; left to "
        "the other daemons' reapers");
    return static_cast<int64_t>(keys.size());
  }
  if (*failed > 0) {
    // Leave the registration: the reaper of the other daemons removes the rest.
    spdlog::warn("shutdown: {} slice(s) not removed; left to the reaper", failed->load());
    return failed->load();
  }
  // 3. Deregister: the key sets of every incarnation of ours we know, then the id.
  absl::flat_hash_set<std::string> nss;
  for (const auto& k : keys) nss.insert(k.first);
  const auto timeout_left = std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         deadline - std::chrono::steady_clock::now()),
                                     std::chrono::milliseconds(100));
  // Other namespaces of this incarnation (evicted keys): the namespaces set lists them all.
  if (auto listed =
          Call({"SMEMBERS", InstanceNamespaceSet(options_.instance_id, inc)}, timeout_left);
      listed.ok()) {
    for (const auto& n : listed->elements) nss.insert(n.str);
  }
  std::vector<std::string> del = {"DEL", InstanceNamespaceSet(options_.instance_id, inc)};
  for (const auto& ns : nss) del.push_back(InstanceKeySet(options_.instance_id, inc, ns));
  auto d = Call(std::move(del), timeout_left);
  auto rm = Live({"remove", options_.instance_id, absl::StrCat(inc)}, timeout_left);
  if (!d.ok() || !rm.ok()) {
    spdlog::warn("shutdown: deregistration failed; left to the reaper");
  } else {
    spdlog::info("instance {} deregistered ({} slice(s) removed)", options_.instance_id,
                 keys.size());
  }
  return 0;
}

}  // namespace distkit::core
