#include "daemon/redis/reply.h"

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/common/strings.h"

namespace distkit::redis {
namespace {
constexpr char kNotSentPayload[] = "type.distkit/redis.not_sent";
}  // namespace

Reply Reply::Integer(int64_t v) {
  Reply r;
  r.type = Type::kInteger;
  r.integer = v;
  return r;
}
Reply Reply::String(std::string s) {
  Reply r;
  r.type = Type::kString;
  r.str = std::move(s);
  return r;
}
Reply Reply::Error(std::string s) {
  Reply r;
  r.type = Type::kError;
  r.str = std::move(s);
  return r;
}
Reply Reply::Array(std::vector<Reply> e) {
  Reply r;
  r.type = Type::kArray;
  r.elements = std::move(e);
  return r;
}

std::string Reply::DebugString() const {
  switch (type) {
    case Type::kNil:
      return "(nil)";
    case Type::kInteger:
      return absl::StrCat(integer);
    case Type::kString:
    case Type::kStatus:
      return str;
    case Type::kError:
      return absl::StrCat("(error) ", str);
    case Type::kArray: {
      std::string s = "[";
      for (size_t i = 0; i < elements.size(); ++i) {
        absl::StrAppend(&s, i ? "," : "", elements[i].DebugString());
      }
      return s + "]";
    }
  }
  return "";
}

absl::Status NoAnswerError(std::string_view where, std::chrono::milliseconds timeout) {
  return absl::DeadlineExceededError(absl::StrCat(
      "Redis at ", AbslView(where), " did not answer within ", timeout.count(), " ms"));
}

absl::Status NotSentError(std::string_view message) {
  return MarkNotSent(absl::UnavailableError(AbslView(message)));
}

absl::Status MarkNotSent(absl::Status status) {
  status.SetPayload(kNotSentPayload, absl::Cord("1"));
  return status;
}

bool IsNotSent(const absl::Status& status) {
  return status.GetPayload(kNotSentPayload).has_value();
}

absl::Status RedisErrorStatus(std::string_view error) {
  const absl::string_view err = AbslView(error);
  for (absl::string_view transient :
       {"LOADING", "BUSY", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOAUTH", "NOPERM",
        "WRONGPASS", "MOVED", "ASK"}) {
    if (absl::StartsWith(err, transient)) {
      return absl::UnavailableError(absl::StrCat("Redis: ", err));
    }
  }
  // Data in Redis that is not ours to read (someone wrote the key with another type): the
  // caller's key is broken, not our code.
  if (absl::StartsWith(err, "WRONGTYPE")) {
    return absl::FailedPreconditionError(
        absl::StrCat("the key exists in Redis with a type distkit does not write (", err, ")"));
  }
  if (absl::StartsWith(err, "OOM")) {
    return absl::ResourceExhaustedError(absl::StrCat("Redis: ", err));
  }
  return absl::InternalError(absl::StrCat("Redis script error: ", err));
}

}  // namespace distkit::redis
