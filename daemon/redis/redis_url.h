#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace distkit::redis {

// Where and how to connect: `redis://[user:password@]host:port[/db]` or `unix:PATH`.
struct RedisEndpoint {
  bool is_unix = false;
  std::string host;  // TCP host (IPv4/IPv6 literal without brackets, or a name)
  int port = 6379;
  std::string path;      // Unix socket path
  std::string user;      // empty = default user
  std::string password;  // empty = no AUTH
  int db = 0;

  // For logs: the URL with the password replaced by "***".
  std::string Redacted() const;
};

absl::StatusOr<RedisEndpoint> ParseRedisUrl(std::string_view url);

}  // namespace distkit::redis
