#include "daemon/core/join.h"

#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/redis/reply.h"

namespace distkit::core {

void ScanEach(redis::RedisClient* redis, ScanOf what, const std::string& cursor,
              std::shared_ptr<const EachKey> each, StatusCallback done) {
  std::vector<std::string> command =
      what.set.empty()
          ? std::vector<std::string>{"SCAN", cursor, "MATCH", what.pattern, "COUNT", "1000"}
          : std::vector<std::string>{"SSCAN", what.set, cursor, "COUNT", "1000"};
  redis->Command(
      std::move(command), [redis, what = std::move(what), each = std::move(each),
                           done = std::move(done)](absl::StatusOr<redis::Reply> r) mutable {
        if (!r.ok()) return done(r.status());
        if (r->is_error()) return done(redis::RedisErrorStatus(r->str));
        if (r->elements.size() != 2) {
          return done(absl::InternalError(absl::StrCat(
              "unexpected ", what.set.empty() ? "SCAN" : "SSCAN", " reply: ", r->DebugString())));
        }
        std::string next = r->elements[0].str;
        auto join = std::make_shared<Join>();
        join->remaining = static_cast<int>(r->elements[1].elements.size()) + 1;
        join->then = [redis, what = std::move(what), next, each,
                      done = std::move(done)](absl::Status s) mutable {
          if (!s.ok() || next == "0") return done(s);
          ScanEach(redis, std::move(what), next, std::move(each), std::move(done));
        };
        for (const auto& key : r->elements[1].elements) {
          (*each)(key.str, [join](const absl::Status& s) { join->Done(s); });
        }
        join->Done(absl::OkStatus());
      });
}

}  // namespace distkit::core
