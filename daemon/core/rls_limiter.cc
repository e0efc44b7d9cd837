#include "daemon/core/rls_limiter.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

#include "daemon/common/strings.h"
#include "daemon/core/join.h"
#include "daemon/core/rate_window.h"
#include "daemon/core/validation.h"

namespace distkit::core {
namespace {

constexpr uint32_t kNoLimitRemaining = std::numeric_limits<uint32_t>::max();
constexpr char kOverrideLabel[] = "override";

// What applies to one descriptor.
struct Plan {
  bool limited = false;  // a rule or an override applies (and was not replaced)
  bool unlimited = false;
  bool shadow = false;
  RlsUnit unit = RlsUnit::kUnknown;
  uint32_t requests_per_unit = 0;
  std::string_view name, label;
  const RlsRule* rule = nullptr;
};

void AppendEscaped(std::string& out, std::string_view s) {
  for (const char c : s) {
    if (c == '%' || c == ':' || c == '|' || c == '=') {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", static_cast<unsigned char>(c));
      out.append(buf);
    } else {
      out.push_back(c);
    }
  }
}

uint64_t Fnv1a(std::string_view s, uint64_t h) {
  for (const unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

// The status of a descriptor its provider answered.
void Apply(const RateIncResult& r, const Plan& plan, uint64_t hits, int64_t window_ms,
           RlsStatus* st) {
  const uint32_t cap = plan.requests_per_unit;
  if (r.allowed) {
    // Unknown usage (REDIS, HYBRID): what is left at most, after this request's hits.
    const uint64_t used = r.used >= 0 ? static_cast<uint64_t>(r.used) : hits;
    st->limit_remaining = used >= cap ? 0 : static_cast<uint32_t>(cap - used);
    st->duration_until_reset_ms = st->limit_remaining > 0 ? 0 : window_ms / kRlsBucketsPerWindow;
    return;
  }
  st->over_limit = true;
  st->limit_remaining = 0;
  // hits above the capacity never fit: a whole window is the honest lower bound.
  st->duration_until_reset_ms = hits > cap ? window_ms : r.retry_after_ms;
}

// Applies shadow_mode and sets the code.
void Finish(const Plan& plan, RlsStatus* st) {
  st->code = st->over_limit && !plan.shadow ? RlsCode::kOverLimit : RlsCode::kOk;
}

void Overall(RlsResult* r) {
  r->overall = RlsCode::kOk;
  for (const RlsStatus& st : r->statuses) {
    if (st.code == RlsCode::kOverLimit) r->overall = RlsCode::kOverLimit;
  }
}

}  // namespace

RlsLimiter::RlsLimiter(std::shared_ptr<const RlsConfig> config, RateLimitSettings base,
                       Factory factory)
    : base_(base), factory_(std::move(factory)), config_(std::move(config)) {}

RlsLimiter::~RlsLimiter() = default;

void RlsLimiter::Swap(std::shared_ptr<const RlsConfig> config) {
  absl::MutexLock lock(&config_mu_);
  config_.swap(config);
  // The old rules are released outside the lock (by `config` going out of scope after it).
}

std::shared_ptr<const RlsConfig> RlsLimiter::config() const {
  absl::MutexLock lock(&config_mu_);
  return config_;
}

std::string RlsLimiter::StateKey(RlsUnit unit, std::string_view domain,
                                 std::span<const RlsEntryView> entries) {
  // The unit as its number: short keys stay within std::string's inline buffer.
  std::string key = std::to_string(static_cast<int>(unit));
  key.push_back('|');
  AppendEscaped(key, domain);
  for (const RlsEntryView& e : entries) {
    key.push_back('|');
    AppendEscaped(key, e.key);
    key.push_back('=');
    AppendEscaped(key, e.value);
  }
  if (key.size() <= kMaxNameBytes && IsValidUtf8(key)) return key;
  // Too long (or not text): two independent 64-bit hashes name it, with the unit kept readable.
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%016llx%016llx",
                static_cast<unsigned long long>(Fnv1a(key, 14695981039346656037ULL)),
                static_cast<unsigned long long>(Fnv1a(key, 0x9e3779b97f4a7c15ULL)));
  return std::to_string(static_cast<int>(unit)) + "|#" + buf;
}

double RlsLimiter::RateFor(uint32_t requests_per_unit, int64_t window_ms) {
  double rate = static_cast<double>(requests_per_unit) * 1000.0 / static_cast<double>(window_ms);
  // One ulp up at a time until the capacity (⌊rate × W_s⌋, as every provider computes it) is
  // exact: rpu × 1000 / W × W / 1000 may round just below rpu.
  while (RateCapacity(rate, window_ms) < requests_per_unit) {
    rate = std::nextafter(rate, std::numeric_limits<double>::infinity());
  }
  return rate;
}

RateLimiter* RlsLimiter::Provider(RlsUnit unit) {
  const int u = static_cast<int>(unit);
  if (RateLimiter* p = providers_[u].load(std::memory_order_acquire)) return p;
  absl::MutexLock lock(&build_mu_);
  if (owned_[u] == nullptr) {
    RateLimitSettings s = base_;
    s.window_ms = RlsUnitMs(unit);
    s.bucket_ms = s.window_ms / kRlsBucketsPerWindow;
    s.idle_evict_ms = 0;
    owned_[u] = factory_(s);
    providers_[u].store(owned_[u].get(), std::memory_order_release);
  }
  return owned_[u].get();
}

void RlsLimiter::ForEachProvider(absl::FunctionRef<void(RateLimiter&)> f) {
  absl::MutexLock lock(&build_mu_);
  for (auto& p : owned_) {
    if (p != nullptr) f(*p);
  }
}

std::optional<absl::StatusOr<RlsResult>> RlsLimiter::Decide(
    const RlsRequest& req, absl::FunctionRef<RlsCallback()> callback) {
  RlsResult result;
  result.config = config();
  const RlsConfig& rules = *result.config;
  const size_t n = req.descriptors.size();
  result.statuses.resize(n);

  // Match every descriptor first: `replaces` drops rules named by another matched rule.
  absl::InlinedVector<Plan, 4> plans(n);
  absl::InlinedVector<const RlsRule*, 4> matched(n, nullptr);
  absl::InlinedVector<std::string_view, 2> replaced;
  for (size_t i = 0; i < n; ++i) {
    const RlsDescriptorRequest& d = req.descriptors[i];
    matched[i] = rules.Match(req.domain, d.entries);
    if (matched[i] != nullptr) {
      for (const std::string& name : matched[i]->replaces) replaced.push_back(name);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const RlsDescriptorRequest& d = req.descriptors[i];
    const RlsRule* rule = matched[i];
    Plan& p = plans[i];
    p.rule = rule;
    if (d.limit && RlsUnitMs(d.limit->unit) > 0) {  // the request's own limit wins
      p.limited = true;
      p.unit = d.limit->unit;
      p.requests_per_unit = d.limit->requests_per_unit;
      p.label = rule != nullptr ? std::string_view(rule->label()) : kOverrideLabel;
      continue;
    }
    if (rule == nullptr) continue;
    if (!rule->name.empty() &&
        std::find(replaced.begin(), replaced.end(), rule->name) != replaced.end()) {
      continue;
    }
    p.label = rule->label();
    p.shadow = rule->shadow_mode;
    if (rule->unlimited) {
      p.unlimited = true;
      continue;
    }
    p.limited = true;
    p.unit = rule->unit;
    p.requests_per_unit = rule->requests_per_unit;
    p.name = rule->name;
  }

  // Decide what memory can decide now; the rest goes to the providers' asynchronous paths.
  struct Async {
    size_t i;
    RateLimiter* provider;
    RateIncRequest inc;
  };
  absl::InlinedVector<Async, 3> pending;
  for (size_t i = 0; i < n; ++i) {
    const Plan& p = plans[i];
    RlsStatus& st = result.statuses[i];
    st.rule = p.label;
    st.matched = p.label.empty() ? nullptr : p.rule;
    if (p.unlimited) {
      st.limit_remaining = kNoLimitRemaining;
      continue;
    }
    if (!p.limited) continue;
    st.has_limit = true;
    st.unit = p.unit;
    st.requests_per_unit = p.requests_per_unit;
    st.name = p.name;
    const int64_t window_ms = RlsUnitMs(p.unit);
    const uint64_t hits = req.descriptors[i].hits;
    if (p.requests_per_unit == 0) {  // blocked: no state needed
      st.over_limit = true;
      st.duration_until_reset_ms = window_ms;
      Finish(p, &st);
      continue;
    }
    RateIncRequest inc;
    inc.ns = kRlsNamespace;
    inc.key = StateKey(p.unit, req.domain, req.descriptors[i].entries);
    inc.rate_per_second = RateFor(p.requests_per_unit, window_ms);
    inc.count = std::max<uint64_t>(hits, 1);
    inc.strategy = RateStrategy::kAbsolute;
    RateLimiter* provider = Provider(p.unit);
    if (auto now = provider->TryInc(inc)) {
      if (!now->ok()) return std::optional<absl::StatusOr<RlsResult>>(now->status());
      Apply(**now, p, inc.count, window_ms, &st);
      result.degraded |= (*now)->degraded;
      Finish(p, &st);
      continue;
    }
    pending.push_back(Async{i, provider, std::move(inc)});
  }
  if (pending.empty()) {
    Overall(&result);
    return std::optional<absl::StatusOr<RlsResult>>(std::move(result));
  }

  if (pending.size() == 1) {  // the common case: no join, the result rides in the callback
    Async& a = pending[0];
    a.provider->Inc(a.inc,
                    [result = std::move(result), plan = plans[a.i], i = a.i, hits = a.inc.count,
                     done = callback()](absl::StatusOr<RateIncResult> r) mutable {
                      if (!r.ok()) return done(r.status());
                      RlsStatus& st = result.statuses[i];
                      Apply(*r, plan, hits, RlsUnitMs(plan.unit), &st);
                      Finish(plan, &st);
                      result.degraded |= r->degraded;
                      Overall(&result);
                      done(std::move(result));
                    });
    return std::nullopt;
  }
  struct State {
    RlsResult result;
    absl::InlinedVector<Plan, 4> plans;
    Join join;
    absl::Mutex mu;  // guards `degraded` across completions
    bool degraded ABSL_GUARDED_BY(mu) = false;
  };
  auto state = std::make_shared<State>();
  state->result = std::move(result);
  state->plans = std::move(plans);
  state->join.remaining = static_cast<int>(pending.size());
  state->join.then = [state, done = callback()](absl::Status s) mutable {
    if (!s.ok()) return done(s);
    {
      absl::MutexLock lock(&state->mu);
      state->result.degraded |= state->degraded;
    }
    Overall(&state->result);
    done(std::move(state->result));
  };
  for (Async& a : pending) {
    const size_t i = a.i;
    const uint64_t hits = a.inc.count;
    a.provider->Inc(a.inc, [state, i, hits](absl::StatusOr<RateIncResult> r) {
      if (r.ok()) {
        const Plan& p = state->plans[i];
        RlsStatus& st = state->result.statuses[i];
        Apply(*r, p, hits, RlsUnitMs(p.unit), &st);
        Finish(p, &st);
        if (r->degraded) {
          absl::MutexLock lock(&state->mu);
          state->degraded = true;
        }
      }
      state->join.Done(r.status());
    });
  }
  return std::nullopt;
}

}  // namespace distkit::core
