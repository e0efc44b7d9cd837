// Reply::FromHiredis lives apart from reply.cc: reply.cc belongs to distkit_redis_api, which
// core/ links and which must not depend on hiredis; only the executor's library does.

#include <hiredis/hiredis.h>

#include "daemon/redis/reply.h"

namespace distkit::redis {

Reply Reply::FromHiredis(const redisReply* r) {
  Reply out;
  if (r == nullptr) return out;
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      out.type = Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      out.type = Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) {
        out.elements.push_back(FromHiredis(r->element[i]));
      }
      break;
    default:
      break;
  }
  return out;
}

}  // namespace distkit::redis
