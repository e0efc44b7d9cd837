#pragma once

// Fuzz input bytes as Redis replies: hiredis' own reader (RESP2, as the executor uses it) turns
// them into redisReply trees, copied out with Reply::FromHiredis like every reply the daemon sees.

#include <hiredis/hiredis.h>

#include <cstddef>
#include <string_view>
#include <vector>

#include "daemon/redis/reply.h"

namespace distkit::fuzz {

// hiredis 0.14 allocates an array's element table from the announced count before any element
// arrives (no maxelements yet): "*4000000000\r\n" is an allocation the executor would make too,
// which is a hiredis limit, not ours. Inputs announcing more than this are skipped.
inline constexpr long kMaxArrayElements = 4096;

inline bool AnnouncesHugeArray(std::string_view in) {
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '*') continue;
    long n = 0;
    for (size_t j = i + 1; j < in.size() && in[j] >= '0' && in[j] <= '9'; ++j) {
      n = n * 10 + (in[j] - '0');
      if (n > kMaxArrayElements) return true;
    }
  }
  return false;
}

// Every complete reply in `in`, in order; stops at the first protocol error or incomplete reply.
inline std::vector<redis::Reply> DecodeReplies(std::string_view in) {
  std::vector<redis::Reply> out;
  if (AnnouncesHugeArray(in)) return out;
  redisReader* reader = redisReaderCreate();
  if (reader == nullptr) return out;
  if (redisReaderFeed(reader, in.data(), in.size()) == REDIS_OK) {
    while (true) {
      void* reply = nullptr;
      if (redisReaderGetReply(reader, &reply) != REDIS_OK || reply == nullptr) break;
      out.push_back(redis::Reply::FromHiredis(static_cast<const redisReply*>(reply)));
      freeReplyObject(reply);
    }
  }
  redisReaderFree(reader);
  return out;
}

}  // namespace distkit::fuzz
