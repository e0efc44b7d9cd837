#include "daemon/core/redis_rate_limiter.h"

#include <charconv>
#include <chrono>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "daemon/common/check.h"
#include "daemon/common/logging.h"
#include "daemon/common/strings.h"
#include "daemon/core/script_status.h"
#include "daemon/redis/reply.h"

namespace distkit::core {
namespace {

constexpr char kScript[] = "ratelimit";
LogEvery g_redis_log(std::chrono::seconds(5));

std::string_view StrategyArg(RateStrategy s) { return s == RateStrategy::kAbsolute ? "a" : "s"; }

// Failures that mean "Redis cannot answer now" (the failure mode applies), as opposed to bugs.
bool RedisDown(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsResourceExhausted(s);
}

// Failures after which an Inc gets the failure mode's answer: Redis cannot answer now, or the
// key's data in Redis cannot be read (FAILED_PRECONDITION: another Redis type, a bucket that is
// not a number). Either way Redis cannot decide, and a caller of a rate limiter wants a decision
// it chose for that case (open, closed, local), not an error (docs/api.md#rate-limiting).
bool UseFailureMode(const absl::Status& s) { return RedisDown(s) || absl::IsFailedPrecondition(s); }

absl::Status BadReply(const redis::Reply& r) {
  return absl::InternalError(absl::StrCat("unexpected ratelimit reply: ", r.DebugString()));
}

bool IsInt(const redis::Reply& r) { return r.type == redis::Reply::Type::kInteger; }
bool IsStr(const redis::Reply& r) { return r.type == redis::Reply::Type::kString; }

std::optional<double> ParseFactor(const redis::Reply& r) {
  if (!IsStr(r)) return std::nullopt;
  double v = 0;
  auto res = std::from_chars(r.str.data(), r.str.data() + r.str.size(), v);
  if (res.ec != std::errc() || res.ptr != r.str.data() + r.str.size() || !(v >= 0 && v <= 1)) {
    return std::nullopt;
  }
  return v;
}

// {status, decision, retry_after_ms, remaining, factor, allowed, now}
absl::StatusOr<RateIncResult> ParseIncReply(const redis::Reply& r) {
  if (r.is_error()) return redis::RedisErrorStatus(r.str);
  const auto& e = r.elements;
  if (r.type != redis::Reply::Type::kArray || e.size() != 7 || !IsStr(e[0]) || !IsStr(e[1]) ||
      !IsInt(e[2]) || !IsInt(e[3]) || !IsInt(e[5]) || e[2].integer < 0 || e[3].integer < 0) {
    return BadReply(r);
  }
  const ScriptStatus status = ParseScriptStatus(e[0].str);
  if (status == ScriptStatus::kRange) {
    return absl::OutOfRangeError(
        "the observed units of this key would reach 2^53 within the window; nothing recorded");
  }
  auto factor = ParseFactor(e[4]);
  if (status != ScriptStatus::kOk || !factor) return BadReply(r);
  RateIncResult out;
  if (e[1].str == "allowed") {
    out.decision = RateDecision::kAllowed;
  } else if (e[1].str == "rejected") {
    out.decision = RateDecision::kRejected;
  } else if (e[1].str == "suppressed") {
    out.decision = RateDecision::kSuppressed;
  } else {
    return BadReply(r);
  }
  out.retry_after_ms = e[2].integer;
  out.remaining_after_waiting = static_cast<uint64_t>(e[3].integer);
  out.suppression_factor = *factor;
  out.allowed = e[5].integer != 0;
  return out;
}

// {status, total, declined, factor, now}
absl::StatusOr<RateGetResult> ParseGetReply(const redis::Reply& r) {
  if (r.is_error()) return redis::RedisErrorStatus(r.str);
  const auto& e = r.elements;
  if (r.type != redis::Reply::Type::kArray || e.size() != 5 || !IsStr(e[0]) ||
      ParseScriptStatus(e[0].str) != ScriptStatus::kOk || !IsInt(e[1]) || !IsInt(e[2]) ||
      e[1].integer < 0 || e[2].integer < 0) {
    return BadReply(r);
  }
  auto factor = ParseFactor(e[3]);
  if (!factor) return BadReply(r);
  return RateGetResult{static_cast<uint64_t>(e[1].integer), static_cast<uint64_t>(e[2].integer),
                       *factor};
}

}  // namespace

RedisRateLimiter::RedisRateLimiter(redis::RedisClient* redis, RateLimitSettings settings,
                                   RateFailureMode failure_mode, RandomSource* random,
                                   RateLimiter* fallback)
    : redis_(redis),
      settings_(settings),
      failure_mode_(failure_mode),
      random_(random),
      fallback_(fallback),
      window_arg_(absl::StrCat(settings.window_ms)),
      bucket_arg_(absl::StrCat(settings.bucket_ms)),
      hlf_arg_(FormatDouble(settings.hard_limit_factor)),
      cache_arg_(absl::StrCat(settings.suppression_cache_ms)) {
  DK_CHECK(redis_ != nullptr && random_ != nullptr,
           "RedisRateLimiter needs a Redis client and a "
           "random source");
  DK_CHECK(failure_mode_ != RateFailureMode::kLocal || fallback_ != nullptr,
           "failure mode `local` needs the LOCAL provider");
}

RedisRateLimiter::Shard& RedisRateLimiter::ShardFor(const std::string& key) {
  return shards_.ShardFor(absl::HashOf(key));
}

void RedisRateLimiter::Inc(const RateIncRequest& req, RateIncCallback done) {
  if (req.count > kMaxRateUnits) {
    if (req.strategy == RateStrategy::kAbsolute) {
      // Larger than every capacity (capped at 2^53 - 1): the answer needs no Redis.
      RateIncResult r;
      r.decision = RateDecision::kRejected;
      r.allowed = false;
      done(r);
    } else {
      done(absl::OutOfRangeError(
          "count must be below 2^53 for the REDIS provider with STRATEGY_SUPPRESSED"));
    }
    return;
  }
  double u = random_->Uniform01();
  if (!(u >= 0 && u < 1)) u = 0;  // a broken source must not make the script refuse the call
  PendingInc p{FormatDouble(req.rate_per_second), absl::StrCat(req.count == 0 ? 1 : req.count),
               FormatDouble(u),
               // The request is needed again only by the LOCAL failure mode.
               failure_mode_ == RateFailureMode::kLocal ? req : RateIncRequest{}, std::move(done)};
  std::string key = RedisRateLimitKey(req.ns, req.key, req.strategy);
  {
    Shard& shard = ShardFor(key);
    absl::MutexLock lock(&shard.mu);
    auto [it, first] = shard.map.try_emplace(key);
    if (!first) {  // a call for this key is in flight: ride in the next one
      it->second.push_back(std::move(p));
      return;
    }
  }
  std::vector<PendingInc> batch;
  batch.push_back(std::move(p));
  SendIncs(std::move(key), req.strategy, std::move(batch));
}

void RedisRateLimiter::SendIncs(std::string key, RateStrategy strategy,
                                std::vector<PendingInc> batch) {
  std::vector<std::string> args;
  args.reserve(6 + 3 * batch.size());
  args = {"inc",     std::string(StrategyArg(strategy)), window_arg_, bucket_arg_, hlf_arg_,
          cache_arg_};
  for (const PendingInc& p : batch) {
    args.push_back(p.rate);
    args.push_back(p.count);
    args.push_back(p.random);
  }
  stats_.inc_calls.fetch_add(1, std::memory_order_relaxed);
  if (batch.size() > 1) stats_.coalesced.fetch_add(batch.size(), std::memory_order_relaxed);
  std::vector<std::string> keys = {key};
  redis_->Script(
      kScript, std::move(keys), std::move(args),
      [this, key = std::move(key), strategy,
       batch = std::move(batch)](absl::StatusOr<redis::Reply> raw) mutable {
        // One reply per request: the 7-element array itself for one, an array of them for more.
        std::vector<absl::StatusOr<RateIncResult>> results;
        if (!raw.ok()) {
          results.assign(batch.size(), raw.status());
        } else if (batch.size() == 1) {
          results.push_back(ParseIncReply(*raw));
        } else if (raw->is_error()) {
          results.assign(batch.size(), redis::RedisErrorStatus(raw->str));
        } else if (raw->type != redis::Reply::Type::kArray ||
                   raw->elements.size() != batch.size()) {
          results.assign(batch.size(), BadReply(*raw));
        } else {
          for (const redis::Reply& e : raw->elements) results.push_back(ParseIncReply(e));
        }
        const absl::Status call_status =
            !raw.ok() ? raw.status()
                      : (raw->is_error() ? redis::RedisErrorStatus(raw->str) : absl::OkStatus());
        const bool down = RedisDown(call_status);
        // The next call goes out before these answers are delivered.
        std::vector<PendingInc> next = NextBatch(key, down);
        if (!next.empty()) {
          if (down) {
            for (PendingInc& p : next) Answer(p, call_status);
          } else {
            SendIncs(key, strategy, std::move(next));
          }
        }
        for (size_t i = 0; i < batch.size(); ++i) Answer(batch[i], std::move(results[i]));
      });
}

std::vector<RedisRateLimiter::PendingInc> RedisRateLimiter::NextBatch(const std::string& key,
                                                                      bool redis_down) {
  std::vector<PendingInc> next;
  Shard& shard = ShardFor(key);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.map.find(key);
  DK_CHECK(it != shard.map.end(), "a key with a script call in flight has a waiting list");
  std::vector<PendingInc>& w = it->second;
  if (w.empty()) {
    shard.map.erase(it);
  } else if (redis_down) {
    // All of them: a later call would only wait for the same Redis again. The key leaves the
    // map; the next Inc sends a call of its own.
    next = std::move(w);
    shard.map.erase(it);
  } else if (w.size() <= kMaxCoalescedIncs) {
    next = std::move(w);
    w.clear();  // still in flight: the key stays, with nobody waiting
  } else {
    next.assign(std::make_move_iterator(w.begin()),
                std::make_move_iterator(w.begin() + kMaxCoalescedIncs));
    w.erase(w.begin(), w.begin() + kMaxCoalescedIncs);
  }
  return next;
}

void RedisRateLimiter::Answer(PendingInc& p, absl::StatusOr<RateIncResult> r) {
  if (!r.ok() && UseFailureMode(r.status())) {
    Degrade(p.req, r.status(), std::move(p.done));
    return;
  }
  if (!r.ok() && g_redis_log.ShouldLog()) {
    spdlog::error("ratelimit.lua failed: {}", r.status().ToString());
  }
  p.done(std::move(r));
}

void RedisRateLimiter::Degrade(const RateIncRequest& req, const absl::Status& why,
                               RateIncCallback done) {
  stats_.redis_failures.fetch_add(1, std::memory_order_relaxed);
  stats_.degraded.fetch_add(1, std::memory_order_relaxed);
  if (g_redis_log.ShouldLog()) {
    spdlog::warn("REDIS rate limiter: {} ({}); answering by failure mode {}",
                 absl::IsFailedPrecondition(why) ? "the key's data in Redis cannot be read"
                                                 : "Redis did not answer",
                 why.ToString(),
                 failure_mode_ == RateFailureMode::kOpen     ? "open"
                 : failure_mode_ == RateFailureMode::kClosed ? "closed"
                                                             : "local");
  }
  RateIncResult r;
  r.degraded = true;
  switch (failure_mode_) {
    case RateFailureMode::kOpen:
      done(r);
      return;
    case RateFailureMode::kClosed:
      r.decision = RateDecision::kRejected;
      r.allowed = false;
      done(r);
      return;
    case RateFailureMode::kLocal:
      break;
  }
  auto mark = [](absl::StatusOr<RateIncResult> r) {
    if (r.ok()) r->degraded = true;
    return r;
  };
  if (auto now = fallback_->TryInc(req)) {
    done(mark(std::move(*now)));
    return;
  }
  fallback_->Inc(req, [mark, done = std::move(done)](absl::StatusOr<RateIncResult> r) mutable {
    done(mark(std::move(r)));
  });
}

void RedisRateLimiter::Get(const std::string& ns, const std::string& key, RateStrategy strategy,
                           RateGetCallback done) {
  redis_->Script(
      kScript, {RedisRateLimitKey(ns, key, strategy)},
      {"get", std::string(StrategyArg(strategy)), window_arg_, bucket_arg_, hlf_arg_, cache_arg_},
      [this, done = std::move(done)](absl::StatusOr<redis::Reply> raw) mutable {
        absl::StatusOr<RateGetResult> r =
            raw.ok() ? ParseGetReply(*raw) : absl::StatusOr<RateGetResult>(raw.status());
        if (!r.ok()) {
          if (RedisDown(r.status())) {
            stats_.redis_failures.fetch_add(1, std::memory_order_relaxed);
          } else if (g_redis_log.ShouldLog()) {
            spdlog::error("ratelimit.lua get failed: {}", r.status().ToString());
          }
        }
        done(std::move(r));
      });
}

}  // namespace distkit::core
