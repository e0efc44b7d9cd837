#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/redis/redis_url.h"

namespace distkit::config {

inline constexpr char kDefaultRedisUrl[] = "redis://127.0.0.1:6379";

enum class FailureMode { kOpen, kClosed, kLocal };
enum class RlsProvider { kRedis, kHybrid, kLocal };

// Server TLS for the TCP listeners. Paths are checked readable at start-up; the files are
// re-read every `reload_seconds` (certificate rotation without a restart).
struct ListenTlsOptions {
  std::string cert_file;       // PEM certificate chain (--tls_cert)
  std::string key_file;        // PEM private key (--tls_key)
  std::string client_ca_file;  // PEM CA bundle; set = clients must present a certificate it signed
  int64_t reload_seconds = 10;

  bool enabled() const { return !cert_file.empty(); }
};

// The validated, immutable daemon configuration (docs/api.md#flags).
struct Config {
  std::vector<std::string> listen = {"unix:/tmp/distkitd.sock"};
  // --redis, parsed: one endpoint, or several TCP seeds of one scheme.
  std::vector<redis::RedisEndpoint> redis_seeds = DefaultRedisSeeds();
  bool redis_given = false;  // true when --redis or DISTKIT_REDIS was set explicitly
  // --redis_mode, and --redis_tls_* (only with rediss:// seeds).
  redis::RedisMode redis_mode = redis::RedisMode::kAuto;
  redis::TlsOptions redis_tls;
  std::string default_namespace = "distkit";  // --namespace
  std::string instance_id;                    // --instance_id; filled with a UUID v4 if empty
  int64_t flush_interval_ms = 20;
  int64_t allowed_lag_ms = 20;
  int64_t dead_instance_threshold_ms = 30000;
  int64_t redis_timeout_ms = 1000;
  int64_t rate_window_seconds = 10;
  int64_t rate_bucket_ms = 100;
  double hard_limit_factor = 1.0;
  int64_t sync_interval_ms = 10;
  int64_t suppression_cache_ms = 100;
  FailureMode rate_limit_failure_mode = FailureMode::kOpen;
  std::string metrics_listen;  // empty = off
  std::string log_level = "info";
  int64_t shutdown_grace_ms = 10000;
  uint32_t socket_mode = 0660;         // --socket_mode, octal
  int64_t max_pending_keys = 1000000;  // --max_pending_keys: bound on lax keys with unflushed work
  int64_t max_rate_limit_keys = 100000;  // --max_rate_limit_keys: LOCAL and HYBRID, each
  int64_t max_lax_keys = 100000;         // --max_lax_keys: LAX entries held, per counter kind
  int64_t lax_resend_bound_ms = 600000;  // --lax_resend_bound_ms: dedup-mark collection
  // --max_memory_mb: memory for RPCs in flight, half for gRPC's transport (its ResourceQuota),
  // half for the requests and answers of admitted calls (more = RESOURCE_EXHAUSTED).
  int64_t max_memory_mb = 128;
  // --tls_cert, --tls_key, --tls_client_ca: TLS (and mutual TLS) on the TCP --listen addresses;
  // Unix sockets and --health_listen stay plaintext. Re-read every --tls_reload_seconds.
  ListenTlsOptions listen_tls;
  // --health_listen: HOST:PORT serving only grpc.health.v1, plaintext (Kubernetes grpc probes).
  std::string health_listen;  // empty = off
  // --rls_config: Envoy's rate limit service rules (a YAML file or a directory); empty = the
  // service is not served. --rls_provider: the provider deciding them (docs/rls.md).
  std::string rls_config;
  RlsProvider rls_provider = RlsProvider::kRedis;
  bool rls_response_headers = false;  // --rls_response_headers: draft RateLimit-* headers
  // --redis_inline_wait_us: the inline path's wait (redis::ExecutorOptions::inline_wait).
  int64_t redis_inline_wait_us = 1000;
  int64_t redis_inline_spin_us = 100;  // --redis_inline_spin_us: ExecutorOptions::inline_spin

  // One line per flag, for the start-up log (the Redis password redacted).
  std::string ToString() const;

  static std::vector<redis::RedisEndpoint> DefaultRedisSeeds();
};

// Parses argv (argv[0] is skipped) and the environment (DISTKIT_<FLAG>), validates, and returns
// the configuration. Precedence: command line > environment > default. `--flag=value` and
// `--flag value` both work. `--help` yields a NotFound status whose message is the usage text.
// Any invalid or unknown flag yields InvalidArgument with a message that names the flag.
absl::StatusOr<Config> ParseConfig(const std::vector<std::string>& args,
                                   const std::map<std::string, std::string>& env);

// Reads `environ` into a map (only DISTKIT_* entries).
std::map<std::string, std::string> DistkitEnvironment();

// A fresh random UUID v4 string.
std::string NewUuidV4();

std::string Usage();

}  // namespace distkit::config
