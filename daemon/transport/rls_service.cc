#include "daemon/transport/rls_service.h"

#include <prometheus/counter.h>

#include <array>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/transport/unary.h"

namespace distkit::transport {
namespace {

namespace rls = envoy::service::ratelimit::v3;
using RateLimit = rls::RateLimitResponse::RateLimit;

constexpr std::array<std::string_view, 1> kMethodNames = {"ShouldRateLimit"};

// Envoy's request as core's: views into `req`, which outlives the call.
absl::Status FromProto(const rls::RateLimitRequest& req, core::RlsRequest* out) {
  if (req.domain().empty()) return absl::InvalidArgumentError("domain: must not be empty");
  if (req.descriptors().empty()) {
    return absl::InvalidArgumentError("descriptors: at least one is required");
  }
  out->domain = req.domain();
  const uint64_t request_hits = req.hits_addend() == 0 ? 1 : req.hits_addend();
  out->descriptors.resize(req.descriptors_size());
  for (int i = 0; i < req.descriptors_size(); ++i) {
    const auto& d = req.descriptors(i);
    core::RlsDescriptorRequest& cd = out->descriptors[i];
    if (d.entries().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("descriptors[", i, "]: no entries"));
    }
    for (const auto& e : d.entries()) cd.entries.push_back({e.key(), e.value()});
    if (d.has_limit()) {
      cd.limit = core::RlsOverride{d.limit().requests_per_unit(),
                                   static_cast<core::RlsUnit>(d.limit().unit())};
    }
    cd.hits =
        d.has_hits_addend() && d.hits_addend().value() > 0 ? d.hits_addend().value() : request_hits;
  }
  return absl::OkStatus();
}

std::string_view CodeName(bool over) { return over ? "OVER_LIMIT" : "OK"; }

// The draft RateLimit header fields (draft-ietf-httpapi-ratelimit-headers, as envoyproxy/ratelimit
// sends them) of the limit closest to running out; none when no limit applied.
void AddHeaders(const core::RlsResult& r, rls::RateLimitResponse* resp) {
  const core::RlsStatus* tightest = nullptr;
  for (const core::RlsStatus& st : r.statuses) {
    if (st.has_limit && (tightest == nullptr || st.limit_remaining < tightest->limit_remaining)) {
      tightest = &st;
    }
  }
  if (tightest == nullptr) return;
  auto add = [resp](std::string key, std::string value) {
    auto* h = resp->add_response_headers_to_add();
    h->set_key(std::move(key));
    h->set_value(std::move(value));
  };
  add("RateLimit-Limit",
      absl::StrCat(tightest->requests_per_unit, ", ", tightest->requests_per_unit,
                   ";w=", core::RlsUnitMs(tightest->unit) / 1000));
  add("RateLimit-Remaining", absl::StrCat(tightest->limit_remaining));
  add("RateLimit-Reset", absl::StrCat((tightest->duration_until_reset_ms + 999) / 1000));
}

}  // namespace

RlsServiceImpl::RlsServiceImpl(core::RlsLimiter* limiter, InFlight* in_flight, Metrics* metrics,
                               bool headers)
    : limiter_(limiter),
      headers_(headers),
      in_flight_(in_flight),
      metrics_(metrics),
      rpc_metrics_(&metrics->Rpc(rls::RateLimitService::service_full_name(), kMethodNames)) {}

void RlsServiceImpl::Count(const core::RlsResult& r, const core::RlsStatus& st,
                           std::string_view domain) {
  if (st.matched == nullptr) {  // a request's own limit: labels built each time
    metrics_->RlsDecision(domain, st.rule, CodeName(st.over_limit)).Increment();
    return;
  }
  {
    absl::ReaderMutexLock lock(&counters_mu_);
    if (counters_config_ == r.config) {
      if (auto it = counters_.find(st.matched); it != counters_.end()) {
        (st.over_limit ? it->second.over : it->second.ok)->Increment();
        return;
      }
    }
  }
  RuleCounters c{&metrics_->RlsDecision(domain, st.rule, CodeName(false)),
                 &metrics_->RlsDecision(domain, st.rule, CodeName(true))};
  (st.over_limit ? c.over : c.ok)->Increment();
  absl::MutexLock lock(&counters_mu_);
  if (counters_config_ != r.config) {
    counters_.clear();
    counters_config_ = r.config;
  }
  counters_.emplace(st.matched, c);
}

grpc::ServerUnaryReactor* RlsServiceImpl::ShouldRateLimit(grpc::CallbackServerContext* ctx,
                                                          const rls::RateLimitRequest* req,
                                                          rls::RateLimitResponse* resp) {
  auto fill = [this, req, resp](const core::RlsResult& r) {
    resp->set_overall_code(static_cast<rls::RateLimitResponse::Code>(r.overall));
    for (const core::RlsStatus& st : r.statuses) {
      auto* out = resp->add_statuses();
      out->set_code(static_cast<rls::RateLimitResponse::Code>(st.code));
      out->set_limit_remaining(st.limit_remaining);
      if (st.has_limit) {
        RateLimit* limit = out->mutable_current_limit();
        limit->set_requests_per_unit(st.requests_per_unit);
        limit->set_unit(static_cast<RateLimit::Unit>(st.unit));
        limit->set_name(std::string(st.name));
        const int64_t ms = st.duration_until_reset_ms;
        out->mutable_duration_until_reset()->set_seconds(ms / 1000);
        out->mutable_duration_until_reset()->set_nanos(static_cast<int32_t>(ms % 1000) * 1000000);
      }
      if (!st.rule.empty()) Count(r, st, req->domain());
    }
    if (headers_) AddHeaders(r, resp);
  };
  return Unary(ctx, in_flight_, rpc_metrics_, 0,
               [&](const auto& callback) -> std::optional<absl::Status> {
                 core::RlsRequest creq;
                 if (auto s = FromProto(*req, &creq); !s.ok()) return s;
                 // Core keeps no view into `creq` on its asynchronous path.
                 auto now = limiter_->Decide(creq, [&]() -> core::RlsCallback {
                   return Completion<core::RlsResult>(fill, callback());
                 });
                 if (!now) return std::nullopt;
                 if (now->ok()) fill(**now);
                 return now->status();
               });
}

}  // namespace distkit::transport
