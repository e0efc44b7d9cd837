#include "daemon/core/instance_counters.h"

#include <algorithm>
#include <future>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "daemon/common/logging.h"
#include "daemon/common/strings.h"
#include "daemon/core/counter_keys.h"
#include "daemon/core/counter_script.h"
#include "daemon/core/int64_math.h"

namespace distkit::core {
namespace {

constexpr char kScript[] = "icounter";
constexpr char kLiveScript[] = "liveness";
constexpr char kInstances[] = "dk:{live}:instances";
constexpr char kIncarnations[] = "dk:{live}:incarnations";

std::string NamespaceSet(std::string_view id, int64_t inc) {
  return absl::StrCat("dk:{I:", AbslView(id), ":", inc, "}:namespaces");
}

std::string ReplyInt(const redis::Reply& r) {
  return r.type == redis::Reply::Type::kInteger ? absl::StrCat(r.integer) : r.str;
}

// Parses an icounter.lua reply into the five response fields.
absl::StatusOr<InstanceResult> ParseReply(absl::StatusOr<redis::Reply> r, std::string_view key) {
  if (!r.ok()) return r.status();
  if (r->is_error()) return RedisErrorStatus(r->str);
  const auto& e = r->elements;
  if (r->type != redis::Reply::Type::kArray || e.size() < 6) {
    return absl::InternalError(absl::StrCat("unexpected icounter reply: ", r->DebugString()));
  }
  if (e[0].str == "overflow") {
    return absl::OutOfRangeError("result would leave the int64 range; nothing changed");
  }
  if (e[0].str == "notint") {
    return absl::FailedPreconditionError(absl::StrCat(
        "a value stored in Redis for key '", AbslView(key), "' is not an int64; nothing changed"));
  }
  auto c = ParseInt64(ReplyInt(e[1]));
  auto i = ParseInt64(ReplyInt(e[2]));
  auto pc = ParseInt64(ReplyInt(e[3]));
  auto pi = ParseInt64(ReplyInt(e[4]));
  if (e[0].str != "ok" || !c || !i || !pc || !pi) {
    return absl::InternalError(absl::StrCat("unexpected icounter reply: ", r->DebugString()));
  }
  return InstanceResult{*c, *i, *pc, *pi, e[5].integer != 0};
}

// Counts outstanding callbacks; runs `then` with the first error once all are done.
struct Join {
  std::mutex mu;
  int remaining = 0;
  absl::Status status;
  StatusCallback then;
  void Done(const absl::Status& s) {
    StatusCallback cb;
    absl::Status out;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (status.ok() && !s.ok()) status = s;
      if (--remaining > 0) return;
      cb = std::move(then);
      out = status;
    }
    cb(out);
  }
};

}  // namespace

std::string InstanceCounterKey(std::string_view ns, std::string_view key) {
  return absl::StrCat("dk:{", HashTag(ns, key), "}:i:", AbslView(ns), ":", AbslView(key));
}

std::string InstanceCounterPattern(std::string_view ns) {
  std::string out = "dk:{????????}:i:";
  for (char c : ns) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.append(":*");
  return out;
}

std::string InstanceKeySet(std::string_view id, int64_t incarnation, std::string_view ns) {
  return absl::StrCat("dk:{I:", AbslView(id), ":", incarnation, "}:keys:", AbslView(ns));
}

InstanceCounters::InstanceCounters(redis::RedisClient* redis, InstanceCountersOptions options)
    : redis_(redis), options_(std::move(options)) {}

InstanceCounters::~InstanceCounters() { StopThreads(); }

absl::StatusOr<redis::Reply> InstanceCounters::Call(std::vector<std::string> argv,
                                                    std::chrono::milliseconds timeout) {
  auto p = std::make_shared<std::promise<absl::StatusOr<redis::Reply>>>();
  auto f = p->get_future();
  redis_->Command(std::move(argv), [p](absl::StatusOr<redis::Reply> r) { p->set_value(r); });
  if (f.wait_for(timeout) != std::future_status::ready) {
    return absl::DeadlineExceededError("Redis did not answer in time");
  }
  auto r = f.get();
  if (r.ok() && r->is_error()) return RedisErrorStatus(r->str);
  return r;
}

absl::StatusOr<redis::Reply> InstanceCounters::Live(std::vector<std::string> args,
                                                    std::chrono::milliseconds timeout) {
  auto p = std::make_shared<std::promise<absl::StatusOr<redis::Reply>>>();
  auto f = p->get_future();
  redis_->Script(kLiveScript, {kInstances, kIncarnations}, std::move(args),
                 [p](absl::StatusOr<redis::Reply> r) { p->set_value(r); });
  if (f.wait_for(timeout) != std::future_status::ready) {
    return absl::DeadlineExceededError("Redis did not answer in time");
  }
  auto r = f.get();
  if (r.ok() && r->is_error()) return RedisErrorStatus(r->str);
  return r;
}

bool InstanceCounters::Register(std::chrono::milliseconds timeout) {
  auto r = Live({"register", options_.instance_id}, timeout);
  if (!r.ok() || r->elements.size() != 2) {
    spdlog::warn("instance {}: registration failed: {}", options_.instance_id,
                 r.ok() ? r->DebugString() : r.status().ToString());
    return false;
  }
  const int64_t old = incarnation_.exchange(r->elements[0].integer);
  {
    absl::MutexLock lock(&mu_);
    registered_.clear();
    if (old != 0) own_dead_incarnations_.push_back(old);
  }
  return true;
}

absl::Status InstanceCounters::Start(std::chrono::milliseconds timeout) {
  absl::Status out = absl::OkStatus();
  if (Register(timeout)) {
    spdlog::info("instance {} registered, incarnation {}", options_.instance_id,
                 incarnation_.load());
  } else {
    out = absl::UnavailableError("instance registration failed; retried by the heartbeat");
  }
  beat_thread_ = std::thread([this] { BeatLoop(); });
  reap_thread_ = std::thread([this] { ReapLoop(); });
  return out;
}

void InstanceCounters::StopThreads() {
  {
    std::lock_guard<std::mutex> lock(loop_mu_);
    stop_ = true;
  }
  loop_cv_.notify_all();
  if (beat_thread_.joinable()) beat_thread_.join();
  if (reap_thread_.joinable()) reap_thread_.join();
}

void InstanceCounters::StopWithoutDeregistering() { StopThreads(); }

void InstanceCounters::BeatLoop() {
  const auto period =
      std::chrono::milliseconds(std::max<int64_t>(1, options_.dead_instance_threshold_ms / 3));
  const auto timeout = std::max(period, std::chrono::milliseconds(100));
  std::unique_lock<std::mutex> lock(loop_mu_);
  while (!loop_cv_.wait_for(lock, period, [this] { return stop_; })) {
    lock.unlock();
    const int64_t inc = incarnation_.load();
    if (inc == 0) {
      if (Register(timeout)) {
        spdlog::info("instance {} registered, incarnation {}", options_.instance_id,
                     incarnation_.load());
      }
    } else if (auto r = Live({"beat", options_.instance_id, absl::StrCat(inc),
                             absl::StrCat(options_.dead_instance_threshold_ms)},
                            timeout);
               !r.ok()) {
      spdlog::warn("heartbeat failed: {}", r.status().ToString());
    } else if (r->integer == 0 && Register(timeout)) {
      // Declared dead (paused or partitioned longer than the threshold). Recovery of the held
      // slices is not implemented yet: the new incarnation starts from 0 and our reaper removes
      // the old incarnation's slices (Register queued it).
      spdlog::error("instance {} was declared dead; re-registered as incarnation {} "
                    "(its slices were not restored)",
                    options_.instance_id, incarnation_.load());
    }
    lock.lock();
  }
}

void InstanceCounters::ReapLoop() {
  const auto period = std::chrono::milliseconds(
      std::max<int64_t>(1000, options_.dead_instance_threshold_ms / 10));
  std::unique_lock<std::mutex> lock(loop_mu_);
  while (!loop_cv_.wait_for(lock, period, [this] { return stop_; })) {
    lock.unlock();
    if (auto s = ReapOnce(std::chrono::milliseconds(10000)); !s.ok()) {
      spdlog::warn("reaper: {}", s.ToString());
    }
    lock.lock();
  }
}

absl::Status InstanceCounters::ReapOnce(std::chrono::milliseconds timeout) {
  std::vector<int64_t> own;
  {
    absl::MutexLock lock(&mu_);
    own.swap(own_dead_incarnations_);
  }
  for (size_t i = 0; i < own.size(); ++i) {
    if (auto s = ReapInstance(options_.instance_id, absl::StrCat(own[i]), timeout); !s.ok()) {
      absl::MutexLock lock(&mu_);  // retried on the next pass
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
  return absl::OkStatus();
}

absl::Status InstanceCounters::ReapInstance(const std::string& id, const std::string& inc,
                                            std::chrono::milliseconds timeout) {
  const std::string ns_set = absl::StrCat("dk:{I:", id, ":", inc, "}:namespaces");
  auto nss = Call({"SMEMBERS", ns_set}, timeout);
  if (!nss.ok()) return nss.status();
  for (const auto& nsr : nss->elements) {
    const std::string set = absl::StrCat("dk:{I:", id, ":", inc, "}:keys:", nsr.str);
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
            [join, key = m.str](absl::StatusOr<redis::Reply> raw) {
              auto pr = ParseReply(std::move(raw), key);
              absl::Status s = pr.status();
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
    spdlog::info("reaper: removed dead instance {} incarnation {}", id, inc);
  }
  return absl::OkStatus();
}

int64_t InstanceCounters::Shutdown(std::chrono::milliseconds timeout) {
  StopThreads();
  const int64_t inc = incarnation_.load();
  std::vector<MapKey> keys;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [k, at] : registered_) {
      if (at == inc) keys.push_back(k);
    }
  }
  auto p = std::make_shared<std::promise<void>>();
  auto f = p->get_future();
  auto failed = std::make_shared<std::atomic<int64_t>>(0);
  auto join = std::make_shared<Join>();
  join->remaining = static_cast<int>(keys.size()) + 1;
  join->then = [p](absl::Status) { p->set_value(); };
  for (const auto& k : keys) {
    Script(k, "del_on_instance", Condition{}, 0, inc,
           [join, failed](absl::StatusOr<InstanceResult> r) {
             if (!r.ok()) ++*failed;
             join->Done(absl::OkStatus());
           });
  }
  join->Done(absl::OkStatus());
  if (f.wait_for(timeout) != std::future_status::ready) {
    spdlog::warn("shutdown: removing this instance's slices did not finish in time");
    return static_cast<int64_t>(keys.size());
  }
  if (*failed > 0) {
    // Leave the registration: the reaper of the other daemons removes the rest.
    spdlog::warn("shutdown: {} slice(s) not removed; left to the reaper", failed->load());
    return failed->load();
  }
  absl::flat_hash_set<std::string> nss;
  for (const auto& k : keys) nss.insert(k.first);
  std::vector<std::string> del = {"DEL", NamespaceSet(options_.instance_id, inc)};
  for (const auto& ns : nss) del.push_back(InstanceKeySet(options_.instance_id, inc, ns));
  auto d = Call(std::move(del), timeout);
  auto rm = Live({"remove", options_.instance_id, absl::StrCat(inc)}, timeout);
  if (!d.ok() || !rm.ok()) {
    spdlog::warn("shutdown: deregistration failed; left to the reaper");
  } else {
    spdlog::info("instance {} deregistered ({} slice(s) removed)", options_.instance_id,
                 keys.size());
  }
  return 0;
}

// ---------------------------------------------------------------- operations

void InstanceCounters::Script(const MapKey& k, std::string_view op, Condition cond, int64_t arg,
                              int64_t incarnation, InstanceCallback done) {
  redis_->Script(kScript, {InstanceCounterKey(k.first, k.second)},
                 {options_.instance_id, absl::StrCat(incarnation), options_.dedup_id,
                  "0", std::string(op), std::string(ComparatorName(cond.op)),
                  absl::StrCat(cond.operand), absl::StrCat(arg)},
                 [key = k.second, done = std::move(done)](
                     absl::StatusOr<redis::Reply> raw) mutable {
                   done(ParseReply(std::move(raw), key));
                 });
}

void InstanceCounters::Run(const MapKey& k, std::string_view op, Condition cond, int64_t arg,
                           InstanceCallback done) {
  const int64_t inc = incarnation_.load();
  if (inc == 0) {
    return done(absl::UnavailableError("this instance is not registered in Redis yet"));
  }
  const bool writes_slice = op == "inc" || op == "set" || op == "set_on_instance";
  bool known = true;
  if (writes_slice) {
    absl::MutexLock lock(&mu_);
    auto it = registered_.find(k);
    known = it != registered_.end() && it->second == inc;
  }
  if (known) return Script(k, op, cond, arg, inc, std::move(done));
  // First slice write of this key in this incarnation: record the key in this incarnation's
  // key set first, so the reaper finds the slice if this daemon dies.
  redis_->Command({"SADD", NamespaceSet(options_.instance_id, inc), k.first}, [](auto) {});
  redis_->Command(
      {"SADD", InstanceKeySet(options_.instance_id, inc, k.first), k.second},
      [this, k, op = std::string(op), cond, arg, inc,
       done = std::move(done)](absl::StatusOr<redis::Reply> r) mutable {
        if (!r.ok()) return done(r.status());
        if (r->is_error()) return done(RedisErrorStatus(r->str));
        {
          absl::MutexLock lock(&mu_);
          registered_[k] = inc;
        }
        Script(k, op, cond, arg, inc, std::move(done));
      });
}

void InstanceCounters::Inc(const std::string& ns, const std::string& key, int64_t delta,
                           Condition cond, InstanceCallback done) {
  Run({ns, key}, "inc", cond, delta, std::move(done));
}
void InstanceCounters::Get(const std::string& ns, const std::string& key,
                           InstanceCallback done) {
  Run({ns, key}, "get", Condition{}, 0, std::move(done));
}
void InstanceCounters::Set(const std::string& ns, const std::string& key, int64_t value,
                           Condition cond, InstanceCallback done) {
  Run({ns, key}, "set", cond, value, std::move(done));
}
void InstanceCounters::SetOnInstance(const std::string& ns, const std::string& key,
                                     int64_t value, Condition cond, InstanceCallback done) {
  Run({ns, key}, "set_on_instance", cond, value, std::move(done));
}
void InstanceCounters::Del(const std::string& ns, const std::string& key,
                           InstanceCallback done) {
  Run({ns, key}, "del", Condition{}, 0, std::move(done));
}
void InstanceCounters::DelOnInstance(const std::string& ns, const std::string& key,
                                     InstanceCallback done) {
  Run({ns, key}, "del_on_instance", Condition{}, 0, std::move(done));
}

void InstanceCounters::Clear(const std::string& ns, StatusCallback done) {
  ClearScan(ns, "0", std::move(done));
}

void InstanceCounters::ClearScan(const std::string& ns, const std::string& cursor,
                                 StatusCallback done) {
  redis_->Command(
      {"SCAN", cursor, "MATCH", InstanceCounterPattern(ns), "COUNT", "1000"},
      [this, ns, done = std::move(done)](absl::StatusOr<redis::Reply> r) mutable {
        if (!r.ok()) return done(r.status());
        if (r->is_error()) return done(RedisErrorStatus(r->str));
        if (r->elements.size() != 2) {
          return done(absl::InternalError("unexpected SCAN reply: " + r->DebugString()));
        }
        std::string next = r->elements[0].str;
        auto join = std::make_shared<Join>();
        join->remaining = static_cast<int>(r->elements[1].elements.size()) + 1;
        join->then = [this, ns, next, done = std::move(done)](absl::Status s) mutable {
          if (!s.ok() || next == "0") return done(s);
          ClearScan(ns, next, std::move(done));
        };
        for (const auto& key : r->elements[1].elements) {
          redis_->Script(kScript, {key.str},
                         {options_.instance_id, absl::StrCat(incarnation_.load()),
                          options_.dedup_id, "0", "del", "", "0", "0"},
                         [join, k = key.str](absl::StatusOr<redis::Reply> raw) {
                           join->Done(ParseReply(std::move(raw), k).status());
                         });
        }
        join->Done(absl::OkStatus());
      });
}

void InstanceCounters::ClearOnInstance(const std::string& ns, StatusCallback done) {
  ClearOnInstanceScan(ns, InstanceKeySet(options_.instance_id, incarnation_.load(), ns), "0",
                      std::move(done));
}

void InstanceCounters::ClearOnInstanceScan(const std::string& ns, std::string set,
                                           const std::string& cursor, StatusCallback done) {
  redis_->Command(
      {"SSCAN", set, cursor, "COUNT", "1000"},
      [this, ns, set, done = std::move(done)](absl::StatusOr<redis::Reply> r) mutable {
        if (!r.ok()) return done(r.status());
        if (r->is_error()) return done(RedisErrorStatus(r->str));
        if (r->elements.size() != 2) {
          return done(absl::InternalError("unexpected SSCAN reply: " + r->DebugString()));
        }
        std::string next = r->elements[0].str;
        auto join = std::make_shared<Join>();
        join->remaining = static_cast<int>(r->elements[1].elements.size()) + 1;
        join->then = [this, ns, set, next, done = std::move(done)](absl::Status s) mutable {
          if (!s.ok() || next == "0") return done(s);
          ClearOnInstanceScan(ns, set, next, std::move(done));
        };
        for (const auto& key : r->elements[1].elements) {
          Script({ns, key.str}, "del_on_instance", Condition{}, 0, incarnation_.load(),
                 [join](absl::StatusOr<InstanceResult> res) { join->Done(res.status()); });
        }
        join->Done(absl::OkStatus());
      });
}

}  // namespace distkit::core
