#pragma once

// Every conversion between the wire (distkit.v1 protos) and the core, shared by the services:
// a request's names, the enums and conditions it carries, and the core results stored back in
// responses. Unknown enum values (a newer client) are INVALID_ARGUMENT, never a crash.

#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/core/instance_counters.h"
#include "daemon/core/rate_limit.h"
#include "daemon/core/types.h"
#include "daemon/transport/unary.h"
#include "distkit/v1/common.pb.h"
#include "distkit/v1/counter.pb.h"
#include "distkit/v1/instance_counter.pb.h"
#include "distkit/v1/rate_limit.pb.h"

namespace distkit::transport {

// The one rule for a request's (namespace, key): an empty namespace means the daemon's
// --namespace (validated at startup); a given namespace and the key must be valid names
// (core::ValidateName).
class NameResolver {
 public:
  explicit NameResolver(std::string default_namespace)
      : default_namespace_(std::move(default_namespace)) {}

  // The namespace a request means, without validation (a batch's ordering key). The view is
  // into `ns` or into this resolver.
  std::string_view Resolve(std::string_view ns) const {
    return ns.empty() ? std::string_view(default_namespace_) : ns;
  }
  // Validates a request's namespace and stores the one it means in `*resolved`.
  absl::Status Namespace(const std::string& ns, std::string* resolved) const;
  // Namespace() and the key.
  absl::Status Names(const std::string& ns, const std::string& key, std::string* resolved) const;

 private:
  const std::string default_namespace_;
};

// ---- proto -> core
core::Consistency FromProto(v1::Consistency c);  // UNSPECIFIED (and unknown) = STRICT
absl::Status ValidConsistency(v1::Consistency c);
absl::StatusOr<core::Condition> FromProto(const v1::Condition& c);
absl::StatusOr<core::RateStrategy> FromProto(v1::Strategy s);  // UNSPECIFIED = ABSOLUTE

// ---- core -> proto
v1::Decision ToProto(core::RateDecision d);

// A plain-counter result; a GetResponse has only the value.
template <typename Resp>
void ToProto(const core::CounterResult& r, Resp* resp) {
  resp->set_value(r.value);
  if constexpr (requires { resp->set_previous(0); }) {
    resp->set_previous(r.previous);
    resp->set_applied(r.applied);
  }
}

// An instance-counter result (every response has the five fields).
template <typename Resp>
void ToProto(const core::InstanceResult& r, Resp* resp) {
  resp->set_cumulative(r.cumulative);
  resp->set_instance(r.instance);
  resp->set_previous_cumulative(r.previous_cumulative);
  resp->set_previous_instance(r.previous_instance);
  resp->set_applied(r.applied);
}

void ToProto(const core::RateIncResult& r, v1::RateLimitIncResponse* resp);
void ToProto(const core::RateGetResult& r, v1::RateLimitGetResponse* resp);

// A core completion for result type R that stores an OK result in `resp` (ToProto) and reports
// the status to `done`.
template <typename R, typename Resp>
auto Fill(Resp* resp, core::StatusCallback done) {
  return Completion<R>([resp](const R& r) { ToProto(r, resp); }, std::move(done));
}

}  // namespace distkit::transport
