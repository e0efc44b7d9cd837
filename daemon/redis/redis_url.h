#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace distkit::redis {

// Where and how to connect: `redis://[user:password@]host:port[/db]`,
// `rediss://[user:password@]host:port[/db]` (TLS, see TlsOptions) or `unix:PATH`.
struct RedisEndpoint {
  bool is_unix = false;
  bool tls = false;  // rediss://
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

// `--redis`: one URL or a comma-separated list of seed URLs (at least one; each as
// ParseRedisUrl; spaces around items are ignored; the error names the seed by position when
// there are several). Several seeds must all be redis:// or all rediss:// (no unix:).
absl::StatusOr<std::vector<RedisEndpoint>> ParseRedisSeeds(std::string_view list);

// `--redis_mode`: kAuto asks the first seed that answers (`INFO cluster`, cluster_enabled:1).
enum class RedisMode { kAuto, kStandalone, kCluster };

// TLS settings for every rediss:// connection (seeds and the cluster nodes found from them).
struct TlsOptions {
  std::string ca_file;      // --redis_tls_ca; empty = the system's default CA store
  std::string cert_file;    // --redis_tls_cert (client certificate; with key_file)
  std::string key_file;     // --redis_tls_key
  std::string server_name;  // --redis_tls_server_name; empty = the host of the URL / node
};

}  // namespace distkit::redis
