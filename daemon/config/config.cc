#include "daemon/config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <system_error>
#include <utility>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/common/check.h"
#include "daemon/common/status_macros.h"
#include "daemon/common/strings.h"
#include "daemon/common/utf8.h"

extern char** environ;

namespace distkit::config {
namespace {

constexpr std::string_view kEnvPrefix = "DISTKIT_";

// Upper bounds that keep every duration convertible to std::chrono::nanoseconds (and sums of
// a few of them) without int64 overflow: 10^12 ms is about 31 years.
constexpr int64_t kMaxMs = 1'000'000'000'000;
constexpr int64_t kMaxSeconds = kMaxMs / 1000;

absl::Status Invalid(std::string_view message) {
  return absl::InvalidArgumentError(std::string(message));
}

std::string Quote(std::string_view s) { return absl::StrCat("'", AbslView(s), "'"); }

// ---- value parsers (messages do not carry the flag name; the caller prefixes it) ----

absl::StatusOr<int64_t> ParseInt64(std::string_view s) {
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec == std::errc::result_out_of_range) {
    return Invalid(absl::StrCat("out of the int64 range: ", Quote(s)));
  }
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    return Invalid(absl::StrCat("not an integer: ", Quote(s)));
  }
  return value;
}

absl::Status ParseIntInRange(std::string_view s, int64_t min, int64_t max, int64_t* out) {
  DK_ASSIGN_OR_RETURN(const int64_t value, ParseInt64(s));
  if (value < min) return Invalid(absl::StrCat("must be >= ", min, ", got ", value));
  if (value > max) return Invalid(absl::StrCat("must be <= ", max, ", got ", value));
  *out = value;
  return absl::OkStatus();
}

absl::StatusOr<double> ParseDouble(std::string_view s) {
  double value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec == std::errc::result_out_of_range) {
    return Invalid(absl::StrCat("out of the double range: ", Quote(s)));
  }
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    return Invalid(absl::StrCat("not a number: ", Quote(s)));
  }
  return value;
}

constexpr size_t kMaxUnixPath = sizeof(sockaddr_un::sun_path) - 1;

// HOST:PORT with a non-empty host (a name, an IPv4 literal or a bracketed IPv6 literal) and a
// port in [1, 65535].
absl::Status ValidateHostPort(std::string_view a) {
  std::string_view host;
  std::string_view port;
  if (!a.empty() && a.front() == '[') {
    const size_t close = a.find(']');
    if (close == std::string_view::npos) return Invalid(absl::StrCat(Quote(a), ": missing ']'"));
    host = a.substr(1, close - 1);
    const std::string_view rest = a.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      return Invalid(absl::StrCat(Quote(a), ": expected [IPV6]:PORT"));
    }
    port = rest.substr(1);
    if (host.empty() || host.find(':') == std::string_view::npos ||
        host.find_first_not_of("0123456789abcdefABCDEF:.%") != std::string_view::npos) {
      return Invalid(absl::StrCat(Quote(a), ": invalid IPv6 address"));
    }
  } else {
    const size_t colon = a.rfind(':');
    if (colon == std::string_view::npos) {
      return Invalid(absl::StrCat(Quote(a), ": expected unix:PATH or HOST:PORT"));
    }
    host = a.substr(0, colon);
    port = a.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return Invalid(absl::StrCat(Quote(a), ": IPv6 addresses need brackets, e.g. [::1]:50051"));
    }
    if (host.empty()) return Invalid(absl::StrCat(Quote(a), ": missing host"));
    for (char c : host) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
        return Invalid(absl::StrCat(Quote(a), ": invalid character in host"));
      }
    }
  }
  int64_t value = 0;
  if (port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos ||
      !ParseIntInRange(port, 1, 65535, &value).ok()) {
    return Invalid(absl::StrCat(Quote(a), ": port must be an integer in [1, 65535]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateListenAddress(std::string_view a) {
  if (a.empty()) return Invalid("empty address in the list");
  if (absl::StartsWith(AbslView(a), "unix:")) {
    std::string_view path = a.substr(5);
    if (absl::StartsWith(AbslView(path), "//")) path.remove_prefix(2);  // unix:///abs/path
    if (path.empty()) return Invalid(absl::StrCat(Quote(a), ": missing socket path"));
    if (path.size() > kMaxUnixPath) {
      return Invalid(absl::StrCat(Quote(a), ": socket path longer than ", kMaxUnixPath, " bytes"));
    }
    return absl::OkStatus();
  }
  return ValidateHostPort(a);
}

std::string Lowercase(std::string_view s) { return absl::AsciiStrToLower(AbslView(s)); }

// ---- the flag table ----

// One flag. Integer flags set `int_field` (with its range) instead of `apply`/`print`.
struct FlagDef {
  std::string_view name;
  std::string_view help;
  // Parses and validates `value` into `config`; the message must not repeat the flag name.
  absl::Status (*apply)(std::string_view value, Config* config) = nullptr;
  std::string (*print)(const Config& config) = nullptr;
  int64_t Config::*int_field = nullptr;
  int64_t min = 0;
  int64_t max = 0;

  absl::Status Apply(std::string_view value, Config* config) const {
    if (int_field != nullptr) return ParseIntInRange(value, min, max, &(config->*int_field));
    return apply(value, config);
  }
  std::string Print(const Config& config) const {
    return int_field != nullptr ? absl::StrCat(config.*int_field) : print(config);
  }
};

FlagDef IntFlag(std::string_view name, int64_t Config::*field, int64_t min, int64_t max,
                std::string_view help) {
  FlagDef def{name, help};
  def.int_field = field;
  def.min = min;
  def.max = max;
  return def;
}

// The flag table's printer for doubles (named like the other Print* helpers).
std::string PrintDouble(double v) { return FormatDouble(v); }

std::string PrintFailureMode(FailureMode mode) {
  switch (mode) {
    case FailureMode::kOpen:
      return "open";
    case FailureMode::kClosed:
      return "closed";
    case FailureMode::kLocal:
      return "local";
  }
  DK_UNREACHABLE();
}

std::string PrintSeeds(const std::vector<redis::RedisEndpoint>& seeds) {
  std::vector<std::string> out;
  out.reserve(seeds.size());
  for (const redis::RedisEndpoint& seed : seeds) out.push_back(seed.Redacted());
  return absl::StrJoin(out, ",");
}

std::string PrintRedisMode(redis::RedisMode mode) {
  switch (mode) {
    case redis::RedisMode::kAuto:
      return "auto";
    case redis::RedisMode::kStandalone:
      return "standalone";
    case redis::RedisMode::kCluster:
      return "cluster";
  }
  DK_UNREACHABLE();
}

// A regular file this process can read: checked at start-up so that a typo in a path exits 2
// with the flag's name instead of failing every TLS handshake later.
absl::Status CheckReadableFile(std::string_view path) {
  const std::string p(path);
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Invalid(absl::StrCat("cannot read ", Quote(path), ": ", std::strerror(errno)));
  }
  struct stat st {};
  const bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  ::close(fd);
  if (!regular) return Invalid(absl::StrCat(Quote(path), " is not a regular file"));
  return absl::OkStatus();
}

// A TLS path flag (--redis_tls_*, --tls_*): empty = unset; otherwise a readable file.
// `kOptions` picks the options struct in Config, `kField` the path in it.
template <auto kOptions, auto kField>
FlagDef TlsFileFlag(std::string_view name, std::string_view help) {
  FlagDef def{name, help};
  def.apply = [](std::string_view v, Config* c) -> absl::Status {
    if (!v.empty()) DK_RETURN_IF_ERROR(CheckReadableFile(v));
    (c->*kOptions).*kField = std::string(v);
    return absl::OkStatus();
  };
  def.print = [](const Config& c) { return (c.*kOptions).*kField; };
  return def;
}

template <std::string redis::TlsOptions::*kField>
FlagDef RedisTlsFileFlag(std::string_view name, std::string_view help) {
  return TlsFileFlag<&Config::redis_tls, kField>(name, help);
}

template <std::string ListenTlsOptions::*kField>
FlagDef ListenTlsFileFlag(std::string_view name, std::string_view help) {
  return TlsFileFlag<&Config::listen_tls, kField>(name, help);
}

const std::vector<FlagDef>& Flags() {
  static const auto* const kFlags = new std::vector<FlagDef>{
      {"listen", "comma-separated gRPC addresses: unix:PATH or HOST:PORT ([::1]:PORT for IPv6)",
       [](std::string_view v, Config* c) -> absl::Status {
         std::vector<std::string> out;
         for (absl::string_view part : absl::StrSplit(AbslView(v), ',')) {
           const std::string entry(absl::StripAsciiWhitespace(part));
           DK_RETURN_IF_ERROR(ValidateListenAddress(entry));
           out.push_back(entry);
         }
         c->listen = std::move(out);
         return absl::OkStatus();
       },
       [](const Config& c) { return absl::StrJoin(c.listen, ","); }},
      {"redis",
       "redis[s]://[user:password@]host[:port][/db] (rediss: TLS) or unix:PATH[?db=N]; or "
       "seeds: URL,URL,...",
       [](std::string_view v, Config* c) -> absl::Status {
         if (v.empty()) return Invalid("must not be empty");
         auto seeds = redis::ParseRedisSeeds(v);
         if (!seeds.ok()) return Invalid(std::string(seeds.status().message()));
         c->redis_seeds = *std::move(seeds);
         return absl::OkStatus();
       },
       [](const Config& c) { return PrintSeeds(c.redis_seeds); }},
      {"redis_mode", "auto (INFO cluster of the first seed that answers), standalone or cluster",
       [](std::string_view v, Config* c) -> absl::Status {
         const std::string lower = Lowercase(v);
         if (lower == "auto") {
           c->redis_mode = redis::RedisMode::kAuto;
         } else if (lower == "standalone") {
           c->redis_mode = redis::RedisMode::kStandalone;
         } else if (lower == "cluster") {
           c->redis_mode = redis::RedisMode::kCluster;
         } else {
           return Invalid(absl::StrCat("must be auto, standalone or cluster, got ", Quote(v)));
         }
         return absl::OkStatus();
       },
       [](const Config& c) { return PrintRedisMode(c.redis_mode); }},
      RedisTlsFileFlag<&redis::TlsOptions::ca_file>(
          "redis_tls_ca",
          "PEM CA bundle that verifies rediss:// servers (empty = the system's CAs)"),
      RedisTlsFileFlag<&redis::TlsOptions::cert_file>(
          "redis_tls_cert", "PEM client certificate for rediss:// (with --redis_tls_key)"),
      RedisTlsFileFlag<&redis::TlsOptions::key_file>("redis_tls_key",
                                                     "PEM private key of --redis_tls_cert"),
      {"redis_tls_server_name",
       "name checked against the rediss:// server certificate and sent as SNI (empty = the host)",
       [](std::string_view v, Config* c) -> absl::Status {
         for (char ch : v) {
           if (!absl::ascii_isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' &&
               ch != '_' && ch != ':') {
             return Invalid(absl::StrCat("must be a host name or address, got ", Quote(v)));
           }
         }
         c->redis_tls.server_name = std::string(v);
         return absl::OkStatus();
       },
       [](const Config& c) { return c.redis_tls.server_name; }},
      {"namespace", "default namespace for requests that leave it empty (1-255 bytes, no ':')",
       [](std::string_view v, Config* c) -> absl::Status {
         if (v.empty() || v.size() > 255) {
           return Invalid(absl::StrCat("must be 1-255 bytes, got ", v.size()));
         }
         if (!IsValidUtf8(v)) return Invalid("must be valid UTF-8");
         if (v.find(':') != std::string_view::npos) {
           return Invalid(absl::StrCat("must not contain ':', got ", Quote(v)));
         }
         c->default_namespace = std::string(v);
         return absl::OkStatus();
       },
       [](const Config& c) { return c.default_namespace; }},
      {"instance_id", "this daemon's identity (default: a random UUID v4 per start)",
       [](std::string_view v, Config* c) -> absl::Status {
         const bool ok =
             !v.empty() && v.size() <= 64 && std::all_of(v.begin(), v.end(), [](char ch) {
               return absl::ascii_isalnum(static_cast<unsigned char>(ch)) || ch == '.' ||
                      ch == '_' || ch == '-';
             });
         if (!ok) {
           return Invalid(
               absl::StrCat("must be 1-64 characters of [A-Za-z0-9._-], got ", Quote(v)));
         }
         c->instance_id = std::string(v);
         return absl::OkStatus();
       },
       [](const Config& c) { return c.instance_id; }},
      IntFlag("flush_interval_ms", &Config::flush_interval_ms, 1, kMaxMs, "lax flush period"),
      IntFlag("allowed_lag_ms", &Config::allowed_lag_ms, 0, kMaxMs,
              "max age of a lax read's cached Redis value"),
      IntFlag("dead_instance_threshold_ms", &Config::dead_instance_threshold_ms, 1, kMaxMs,
              "an instance silent this long is dead"),
      IntFlag("redis_timeout_ms", &Config::redis_timeout_ms, 1, kMaxMs,
              "per-command Redis deadline"),
      IntFlag("rate_window_seconds", &Config::rate_window_seconds, 1, kMaxSeconds,
              "rate limiter sliding window"),
      IntFlag("rate_bucket_ms", &Config::rate_bucket_ms, 1, kMaxMs,
              "rate limiter bucket size (<= rate_window_seconds * 1000)"),
      {"hard_limit_factor", "SUPPRESSED hard limit = capacity x factor (finite, >= 1)",
       [](std::string_view v, Config* c) -> absl::Status {
         DK_ASSIGN_OR_RETURN(const double d, ParseDouble(v));
         if (!std::isfinite(d)) return Invalid(absl::StrCat("must be finite, got ", Quote(v)));
         if (d < 1.0) return Invalid(absl::StrCat("must be >= 1, got ", PrintDouble(d)));
         c->hard_limit_factor = d;
         return absl::OkStatus();
       },
       [](const Config& c) { return PrintDouble(c.hard_limit_factor); }},
      IntFlag("sync_interval_ms", &Config::sync_interval_ms, 1, kMaxMs,
              "HYBRID rate limiter sync period"),
      IntFlag("suppression_cache_ms", &Config::suppression_cache_ms, 1, kMaxMs,
              "how long a suppression factor is cached"),
      {"rate_limit_failure_mode", "REDIS provider when Redis is down: open, closed or local",
       [](std::string_view v, Config* c) -> absl::Status {
         const std::string lower = Lowercase(v);
         if (lower == "open") {
           c->rate_limit_failure_mode = FailureMode::kOpen;
         } else if (lower == "closed") {
           c->rate_limit_failure_mode = FailureMode::kClosed;
         } else if (lower == "local") {
           c->rate_limit_failure_mode = FailureMode::kLocal;
         } else {
           return Invalid(absl::StrCat("must be open, closed or local, got ", Quote(v)));
         }
         return absl::OkStatus();
       },
       [](const Config& c) { return PrintFailureMode(c.rate_limit_failure_mode); }},
      {"metrics_listen", "HOST:PORT for Prometheus /metrics (empty = off)",
       [](std::string_view v, Config* c) -> absl::Status {
         if (!v.empty()) DK_RETURN_IF_ERROR(ValidateHostPort(v));
         c->metrics_listen = std::string(v);
         return absl::OkStatus();
       },
       [](const Config& c) { return c.metrics_listen; }},
      {"log_level", "trace, debug, info, warn, error, critical or off",
       [](std::string_view v, Config* c) -> absl::Status {
         const std::string lower = Lowercase(v);
         for (std::string_view level :
              {"trace", "debug", "info", "warn", "error", "critical", "off"}) {
           if (lower == level) {
             c->log_level = lower;
             return absl::OkStatus();
           }
         }
         return Invalid(absl::StrCat(
             "must be one of trace, debug, info, warn, error, critical, off; got ", Quote(v)));
       },
       [](const Config& c) { return c.log_level; }},
      IntFlag("shutdown_grace_ms", &Config::shutdown_grace_ms, 1, kMaxMs,
              "bound on the SIGTERM shutdown sequence"),
      {"socket_mode", "octal permission bits of the Unix sockets, e.g. 0660",
       [](std::string_view v, Config* c) -> absl::Status {
         uint32_t mode = 0;
         const bool octal = !v.empty() && v.size() <= 4 &&
                            v.find_first_not_of("01234567") == std::string_view::npos;
         if (octal) std::from_chars(v.data(), v.data() + v.size(), mode, 8);
         if (!octal || mode > 0777) {
           return Invalid(absl::StrCat(
               "must be an octal mode between 0000 and 0777 (e.g. 0660), got ", Quote(v)));
         }
         c->socket_mode = mode;
         return absl::OkStatus();
       },
       [](const Config& c) {
         char buf[16];
         std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(c.socket_mode));
         return std::string(buf);
       }},
      IntFlag("max_pending_keys", &Config::max_pending_keys, 1, std::numeric_limits<int64_t>::max(),
              "bound on lax keys with unflushed work"),
      IntFlag("max_rate_limit_keys", &Config::max_rate_limit_keys, 1,
              std::numeric_limits<int64_t>::max(),
              "bound on rate-limit keys held in memory by LOCAL and by HYBRID (each)"),
      IntFlag("max_lax_keys", &Config::max_lax_keys, 1, std::numeric_limits<int64_t>::max(),
              "bound on LAX counter keys held in memory (plain and instance counters, each)"),
      IntFlag("lax_resend_bound_ms", &Config::lax_resend_bound_ms, 10, 12 * 3600 * 1000,
              "how long an unacknowledged LAX flush is resent under its seq; dedup marks in "
              "Redis go 2 x this after their last write"),
      IntFlag("max_memory_mb", &Config::max_memory_mb, 16, 1 << 20,
              "memory for RPCs in flight (gRPC transport + admitted calls); keep it well under "
              "the container's limit"),
      ListenTlsFileFlag<&ListenTlsOptions::cert_file>(
          "tls_cert", "PEM certificate chain: TLS on the TCP --listen addresses (with --tls_key)"),
      ListenTlsFileFlag<&ListenTlsOptions::key_file>("tls_key", "PEM private key of --tls_cert"),
      ListenTlsFileFlag<&ListenTlsOptions::client_ca_file>(
          "tls_client_ca",
          "PEM CA bundle: mutual TLS, clients must present a certificate it signed"),
      {"tls_reload_seconds", "how often the --tls_* files are re-read (certificate rotation)",
       [](std::string_view v, Config* c) -> absl::Status {
         return ParseIntInRange(v, 1, 86400, &c->listen_tls.reload_seconds);
       },
       [](const Config& c) { return absl::StrCat(c.listen_tls.reload_seconds); }},
      {"health_listen", "HOST:PORT serving only grpc.health.v1, plaintext (empty = off)",
       [](std::string_view v, Config* c) -> absl::Status {
         if (!v.empty()) DK_RETURN_IF_ERROR(ValidateHostPort(v));
         c->health_listen = std::string(v);
         return absl::OkStatus();
       },
       [](const Config& c) { return c.health_listen; }},
      {"rls_config",
       "Envoy rate limit service rules: a YAML file or a directory of *.yaml (empty = off)",
       [](std::string_view v, Config* c) -> absl::Status {
         c->rls_config = std::string(v);
         return absl::OkStatus();
       },
       [](const Config& c) { return c.rls_config; }},
      {"rls_provider", "provider of the --rls_config limits: redis, hybrid or local",
       [](std::string_view v, Config* c) -> absl::Status {
         const std::string lower = Lowercase(v);
         if (lower == "redis") {
           c->rls_provider = RlsProvider::kRedis;
         } else if (lower == "hybrid") {
           c->rls_provider = RlsProvider::kHybrid;
         } else if (lower == "local") {
           c->rls_provider = RlsProvider::kLocal;
         } else {
           return Invalid(absl::StrCat("must be redis, hybrid or local, got ", Quote(v)));
         }
         return absl::OkStatus();
       },
       [](const Config& c) -> std::string {
         switch (c.rls_provider) {
           case RlsProvider::kHybrid:
             return "hybrid";
           case RlsProvider::kLocal:
             return "local";
           case RlsProvider::kRedis:
             break;
         }
         return "redis";
       }},
      {"rls_response_headers",
       "ShouldRateLimit answers carry the draft RateLimit-Limit/-Remaining/-Reset headers: true or "
       "false",
       [](std::string_view v, Config* c) -> absl::Status {
         const std::string lower = Lowercase(v);
         if (lower != "true" && lower != "false") {
           return Invalid(absl::StrCat("must be true or false, got ", Quote(v)));
         }
         c->rls_response_headers = lower == "true";
         return absl::OkStatus();
       },
       [](const Config& c) -> std::string { return c.rls_response_headers ? "true" : "false"; }},
      IntFlag("redis_inline_wait_us", &Config::redis_inline_wait_us, 0, 1'000'000,
              "how long a gRPC thread waits for the reply of a Redis command it runs itself "
              "(alone, nothing else in flight) before the Redis loop takes over; 0 = never"),
      IntFlag("redis_inline_spin_us", &Config::redis_inline_spin_us, 0, 1'000'000,
              "of --redis_inline_wait_us, how long that thread polls for the reply instead of "
              "sleeping (CPU for latency); 0 = sleep at once"),
  };
  return *kFlags;
}

const FlagDef* FindFlag(std::string_view name) {
  for (const FlagDef& def : Flags()) {
    if (def.name == name) return &def;
  }
  return nullptr;
}

std::string EnvName(std::string_view flag) {
  return absl::StrCat(AbslView(kEnvPrefix), absl::AsciiStrToUpper(AbslView(flag)));
}

struct RawValue {
  std::string value;
  std::string env_name;  // empty when it came from the command line
};

// The checks that span several of --redis, --redis_mode and --redis_tls_*.
absl::Status ValidateRedis(const Config& c) {
  const redis::TlsOptions& tls = c.redis_tls;
  if (!tls.cert_file.empty() && tls.key_file.empty()) {
    return Invalid("--redis_tls_cert: needs --redis_tls_key (the certificate's private key)");
  }
  if (!tls.key_file.empty() && tls.cert_file.empty()) {
    return Invalid("--redis_tls_key: needs --redis_tls_cert (the client certificate)");
  }
  const bool any_tls = std::any_of(c.redis_seeds.begin(), c.redis_seeds.end(),
                                   [](const redis::RedisEndpoint& e) { return e.tls; });
  if (!any_tls) {
    for (const auto& [flag, value] :
         {std::pair{"redis_tls_ca", &tls.ca_file}, std::pair{"redis_tls_cert", &tls.cert_file},
          std::pair{"redis_tls_key", &tls.key_file},
          std::pair{"redis_tls_server_name", &tls.server_name}}) {
      if (!value->empty()) {
        return Invalid(absl::StrCat("--", flag,
                                    ": the --redis_tls_* flags only apply to rediss:// seeds, and "
                                    "--redis has none (",
                                    PrintSeeds(c.redis_seeds), ")"));
      }
    }
  }
  if (c.redis_mode == redis::RedisMode::kCluster) {
    for (const redis::RedisEndpoint& seed : c.redis_seeds) {
      if (seed.is_unix) {
        return Invalid(absl::StrCat(
            "--redis_mode=cluster: cluster nodes announce TCP addresses, so a unix: seed (",
            seed.Redacted(), ") cannot reach a cluster; use redis:// or rediss://"));
      }
    }
  }
  return absl::OkStatus();
}

// The checks that span --listen, --tls_* and --health_listen.
absl::Status ValidateListeners(const Config& c) {
  const ListenTlsOptions& tls = c.listen_tls;
  if (!tls.cert_file.empty() && tls.key_file.empty()) {
    return Invalid("--tls_cert: needs --tls_key (the certificate's private key)");
  }
  if (!tls.key_file.empty() && tls.cert_file.empty()) {
    return Invalid("--tls_key: needs --tls_cert (the server certificate)");
  }
  if (!tls.client_ca_file.empty() && tls.cert_file.empty()) {
    return Invalid("--tls_client_ca: mutual TLS needs server TLS too (--tls_cert and --tls_key)");
  }
  if (tls.enabled() && std::all_of(c.listen.begin(), c.listen.end(), [](const std::string& addr) {
        return absl::StartsWith(AbslView(addr), "unix:");
      })) {
    return Invalid(absl::StrCat(
        "--tls_cert: TLS only applies to TCP --listen addresses (Unix sockets stay plaintext), "
        "and --listen has none (",
        absl::StrJoin(c.listen, ","), ")"));
  }
  for (const std::string& addr : c.listen) {
    if (!c.health_listen.empty() && addr == c.health_listen) {
      return Invalid(absl::StrCat("--health_listen: ", Quote(c.health_listen),
                                  " is also a --listen address; use another port"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<redis::RedisEndpoint> Config::DefaultRedisSeeds() {
  return {*redis::ParseRedisUrl(kDefaultRedisUrl)};
}

std::string Config::ToString() const {
  std::vector<std::string> lines;
  for (const FlagDef& def : Flags()) {
    lines.push_back(absl::StrCat("--", AbslView(def.name), "=", def.Print(*this)));
  }
  return absl::StrJoin(lines, "\n");
}

absl::StatusOr<Config> ParseConfig(const std::vector<std::string>& args,
                                   const std::map<std::string, std::string>& env) {
  std::map<std::string_view, RawValue> raw;

  // Environment first, so the command line overrides it. An empty variable counts as unset (a
  // common result of `FOO=${BAR}` in compose files and shell wrappers). Unknown DISTKIT_*
  // variables are ignored: the CLI (DISTKIT_ADDR) and future versions share the prefix.
  for (const FlagDef& def : Flags()) {
    const std::string name = EnvName(def.name);
    const auto it = env.find(name);
    if (it != env.end() && !it->second.empty()) raw[def.name] = RawValue{it->second, name};
  }

  // `--help` wins over any other problem on the command line; otherwise the first error wins.
  absl::Status first_error;
  bool help = false;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--help" || arg == "-h" || arg == "-help") {
      help = true;
      continue;
    }
    if (!absl::StartsWith(AbslView(arg), "--") || arg == "--") {
      if (first_error.ok()) {
        first_error =
            Invalid(absl::StrCat("unexpected argument ", Quote(arg), " (flags are --name=value)"));
      }
      continue;
    }
    const std::string_view body = arg.substr(2);
    const size_t eq = body.find('=');
    const std::string_view name = body.substr(0, eq);
    const FlagDef* def = FindFlag(name);
    if (def == nullptr) {
      if (first_error.ok()) first_error = Invalid(absl::StrCat("unknown flag --", AbslView(name)));
      continue;
    }
    std::string value;
    if (eq != std::string_view::npos) {
      value = std::string(body.substr(eq + 1));
    } else if (i + 1 < args.size()) {
      value = args[++i];  // taken verbatim, so `--allowed_lag_ms -1` reaches validation
    } else {
      if (first_error.ok()) {
        first_error = Invalid(absl::StrCat("--", AbslView(name), ": missing value"));
      }
      continue;
    }
    raw[def->name] = RawValue{std::move(value), ""};  // the last occurrence wins
  }
  if (help) return absl::NotFoundError(Usage());
  DK_RETURN_IF_ERROR(first_error);

  Config config;
  for (const FlagDef& def : Flags()) {
    const auto it = raw.find(def.name);
    if (it == raw.end()) continue;
    const absl::Status status = def.Apply(it->second.value, &config);
    if (!status.ok()) {
      std::string message = absl::StrCat("--", AbslView(def.name), ": ", status.message());
      if (!it->second.env_name.empty())
        absl::StrAppend(&message, " (from ", it->second.env_name, ")");
      return Invalid(message);
    }
  }
  config.redis_given = raw.count("redis") > 0;
  DK_RETURN_IF_ERROR(ValidateRedis(config));
  DK_RETURN_IF_ERROR(ValidateListeners(config));

  if (config.rate_bucket_ms > config.rate_window_seconds * 1000) {
    return Invalid(absl::StrCat("--rate_bucket_ms: must be <= the window (--rate_window_seconds=",
                                config.rate_window_seconds, " is ",
                                config.rate_window_seconds * 1000, " ms), got ",
                                config.rate_bucket_ms));
  }
  if (config.instance_id.empty()) config.instance_id = NewUuidV4();
  return config;
}

std::map<std::string, std::string> DistkitEnvironment() {
  std::map<std::string, std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    if (!absl::StartsWith(AbslView(entry), AbslView(kEnvPrefix))) continue;
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    out.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  return out;
}

std::string NewUuidV4() {
  thread_local absl::BitGen gen;  // seeded from the OS entropy source
  uint64_t hi = absl::Uniform<uint64_t>(gen);
  uint64_t lo = absl::Uniform<uint64_t>(gen);
  hi = (hi & ~uint64_t{0xF000}) | uint64_t{0x4000};            // version 4
  lo = (lo & ~(uint64_t{0xC} << 60)) | (uint64_t{0x8} << 60);  // variant 10xx
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xFFFF), static_cast<unsigned>(hi & 0xFFFF),
                static_cast<unsigned>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xFFFFFFFFFFFFULL));
  return buf;
}

std::string Usage() {
  const Config defaults;
  std::string out =
      "Usage: distkitd [--flag=value | --flag value]...\n"
      "\n"
      "A gRPC sidecar for distributed counters and rate limiting backed by Redis.\n"
      "Every flag can also be set with the environment variable DISTKIT_<FLAG IN UPPER CASE>;\n"
      "the command line beats the environment, which beats the default.\n"
      "\n"
      "Flags:\n";
  for (const FlagDef& def : Flags()) {
    std::string default_value = def.Print(defaults);
    if (def.name == "instance_id") default_value = "random UUID v4";
    if (default_value.empty()) default_value = "empty";
    absl::StrAppend(&out, "  --", AbslView(def.name), "  (", EnvName(def.name), ")\n      ",
                    AbslView(def.help), "\n      default: ", default_value, "\n");
  }
  absl::StrAppend(&out, "  --help\n      print this text and exit\n");
  return out;
}

}  // namespace distkit::config
