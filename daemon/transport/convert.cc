#include "daemon/transport/convert.h"

#include "absl/strings/str_cat.h"
#include "daemon/core/validation.h"

namespace distkit::transport {

absl::Status NameResolver::Namespace(const std::string& ns, std::string* resolved) const {
  if (!ns.empty()) {
    if (auto s = core::ValidateName("namespace", ns); !s.ok()) return s;
  }
  *resolved = Resolve(ns);
  return absl::OkStatus();
}

absl::Status NameResolver::Names(const std::string& ns, const std::string& key,
                                 std::string* resolved) const {
  if (auto s = Namespace(ns, resolved); !s.ok()) return s;
  return core::ValidateName("key", key);
}

core::Consistency FromProto(v1::Consistency c) {
  return c == v1::CONSISTENCY_LAX ? core::Consistency::kLax : core::Consistency::kStrict;
}

absl::Status ValidConsistency(v1::Consistency c) {
  if (!v1::Consistency_IsValid(c)) {
    return absl::InvalidArgumentError(absl::StrCat("consistency: unknown value ", c));
  }
  return absl::OkStatus();
}

absl::StatusOr<core::Condition> FromProto(const v1::Condition& c) {
  core::Condition out;
  out.operand = c.operand();
  switch (c.op()) {
    case v1::COMPARATOR_UNSPECIFIED:
      out.op = core::Comparator::kNone;
      break;
    case v1::COMPARATOR_EQ:
      out.op = core::Comparator::kEq;
      break;
    case v1::COMPARATOR_NE:
      out.op = core::Comparator::kNe;
      break;
    case v1::COMPARATOR_LT:
      out.op = core::Comparator::kLt;
      break;
    case v1::COMPARATOR_LE:
      out.op = core::Comparator::kLe;
      break;
    case v1::COMPARATOR_GT:
      out.op = core::Comparator::kGt;
      break;
    case v1::COMPARATOR_GE:
      out.op = core::Comparator::kGe;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("condition.op: unknown comparator ", c.op()));
  }
  return out;
}

absl::StatusOr<core::RateStrategy> FromProto(v1::Strategy s) {
  switch (s) {
    case v1::STRATEGY_UNSPECIFIED:
    case v1::STRATEGY_ABSOLUTE:
      return core::RateStrategy::kAbsolute;
    case v1::STRATEGY_SUPPRESSED:
      return core::RateStrategy::kSuppressed;
    default:
      return absl::InvalidArgumentError(absl::StrCat("strategy: unknown value ", s));
  }
}

v1::Decision ToProto(core::RateDecision d) {
  switch (d) {
    case core::RateDecision::kAllowed:
      return v1::DECISION_ALLOWED;
    case core::RateDecision::kRejected:
      return v1::DECISION_REJECTED;
    case core::RateDecision::kSuppressed:
      return v1::DECISION_SUPPRESSED;
  }
  return v1::DECISION_UNSPECIFIED;
}

void ToProto(const core::RateIncResult& r, v1::RateLimitIncResponse* resp) {
  resp->set_decision(ToProto(r.decision));
  resp->set_retry_after_ms(r.retry_after_ms);
  resp->set_remaining_after_waiting(r.remaining_after_waiting);
  resp->set_suppression_factor(r.suppression_factor);
  resp->set_allowed(r.allowed);
  resp->set_degraded(r.degraded);
}

void ToProto(const core::RateGetResult& r, v1::RateLimitGetResponse* resp) {
  resp->set_total(r.total);
  resp->set_declined(r.declined);
  resp->set_suppression_factor(r.suppression_factor);
}

}  // namespace distkit::transport
