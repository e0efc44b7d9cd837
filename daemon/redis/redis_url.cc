#include "daemon/redis/redis_url.h"

#include <sys/un.h>

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/common/status_macros.h"
#include "daemon/common/strings.h"

namespace distkit::redis {
namespace {

constexpr std::string_view kRedisForm = "redis[s]://[user:password@]host[:port][/db]";
constexpr std::string_view kUnixForm = "unix:PATH[?db=N]";

absl::Status Invalid(std::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() &&
         absl::EqualsIgnoreCase(AbslView(s.substr(0, prefix.size())), AbslView(prefix));
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes. `what` names the part for the error message; the value itself is never
// echoed (it may be a password).
absl::StatusOr<std::string> PercentDecode(std::string_view in, std::string_view what) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) {
      return Invalid(absl::StrCat("invalid percent-encoding in the ", AbslView(what)));
    }
    const int hi = HexDigit(in[i + 1]);
    const int lo = HexDigit(in[i + 2]);
    if (hi < 0 || lo < 0) {
      return Invalid(absl::StrCat("invalid percent-encoding in the ", AbslView(what)));
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

// A decimal integer in [min, max], digits only (no sign, no spaces).
absl::StatusOr<int64_t> ParseBoundedInt(std::string_view s, int64_t min, int64_t max,
                                        std::string_view what) {
  int64_t value = 0;
  const bool digits_only =
      !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (!digits_only || ec != std::errc() || end != s.data() + s.size() || value < min ||
      value > max) {
    return Invalid(absl::StrCat(AbslView(what), " must be an integer in [", min, ", ", max,
                                "], got '", AbslView(s), "'"));
  }
  return value;
}

absl::StatusOr<int> ParseDb(std::string_view s) {
  DK_ASSIGN_OR_RETURN(const int64_t db, ParseBoundedInt(s, 0, INT32_MAX, "the database number"));
  return static_cast<int>(db);
}

absl::Status ParseHostPort(std::string_view hostport, RedisEndpoint* ep) {
  if (hostport.empty())
    return Invalid(absl::StrCat("missing host; expected ", AbslView(kRedisForm)));
  std::string_view host;
  std::string_view port;
  bool has_port = false;
  if (hostport.front() == '[') {
    const size_t close = hostport.find(']');
    if (close == std::string_view::npos) {
      return Invalid("unterminated '[' in an IPv6 host (expected [addr]:port)");
    }
    host = hostport.substr(1, close - 1);
    std::string_view rest = hostport.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return Invalid(absl::StrCat("unexpected '", AbslView(rest), "' after the IPv6 host"));
      }
      has_port = true;
      port = rest.substr(1);
    }
    if (host.empty()) return Invalid("empty IPv6 host '[]'");
    if (host.find_first_not_of("0123456789abcdefABCDEF:.%") != std::string_view::npos ||
        host.find(':') == std::string_view::npos) {
      return Invalid(absl::StrCat("invalid IPv6 address '", AbslView(host), "'"));
    }
  } else {
    const size_t colon = hostport.find(':');
    if (colon != std::string_view::npos &&
        hostport.find(':', colon + 1) != std::string_view::npos) {
      return Invalid(absl::StrCat("IPv6 addresses must be written in brackets ([::1]:6379), got '",
                                  AbslView(hostport), "'"));
    }
    host = hostport.substr(0, colon);
    if (colon != std::string_view::npos) {
      has_port = true;
      port = hostport.substr(colon + 1);
    }
    if (host.empty()) return Invalid(absl::StrCat("missing host; expected ", AbslView(kRedisForm)));
    for (char c : host) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
        return Invalid(absl::StrCat("invalid character '", std::string(1, c), "' in host '",
                                    AbslView(host), "'"));
      }
    }
  }
  ep->host = std::string(host);
  ep->port = 6379;
  if (has_port) {
    DK_ASSIGN_OR_RETURN(const int64_t p, ParseBoundedInt(port, 1, 65535, "the port"));
    ep->port = static_cast<int>(p);
  }
  return absl::OkStatus();
}

absl::StatusOr<RedisEndpoint> ParseTcp(std::string_view rest, bool tls) {
  RedisEndpoint ep;
  ep.tls = tls;
  if (rest.find('?') != std::string_view::npos || rest.find('#') != std::string_view::npos) {
    return Invalid(absl::StrCat("query parameters are not supported in redis[s]:// URLs; expected ",
                                AbslView(kRedisForm)));
  }
  // Userinfo ends at the last '@' so that an unescaped '@' or '/' in a password still works (the
  // path can only be a number, so it never contains '@').
  const size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      return Invalid(
          "a user without a password; use redis://user:password@host or redis://:password@host");
    }
    DK_ASSIGN_OR_RETURN(ep.user, PercentDecode(userinfo.substr(0, colon), "user"));
    DK_ASSIGN_OR_RETURN(ep.password, PercentDecode(userinfo.substr(colon + 1), "password"));
    if (!ep.user.empty() && ep.password.empty()) {
      return Invalid("a user without a password; use redis://user:password@host");
    }
  }
  const size_t slash = rest.find('/');
  const std::string_view hostport = rest.substr(0, slash);
  DK_RETURN_IF_ERROR(ParseHostPort(hostport, &ep));
  if (slash != std::string_view::npos) {
    const std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) {
      if (db.find('/') != std::string_view::npos) {
        return Invalid(absl::StrCat("unexpected path '/", AbslView(db),
                                    "'; the path can only be a database number"));
      }
      DK_ASSIGN_OR_RETURN(ep.db, ParseDb(db));
    }
  }
  return ep;
}

absl::StatusOr<RedisEndpoint> ParseUnix(std::string_view rest) {
  RedisEndpoint ep;
  ep.is_unix = true;
  ep.port = 0;
  std::string_view query;
  const size_t q = rest.find('?');
  if (q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  if (rest.empty())
    return Invalid(absl::StrCat("missing socket path; expected ", AbslView(kUnixForm)));
  constexpr size_t kMaxPath = sizeof(sockaddr_un::sun_path) - 1;
  if (rest.size() > kMaxPath) {
    return Invalid(absl::StrCat("unix socket path longer than ", kMaxPath, " bytes"));
  }
  ep.path = std::string(rest);
  if (q != std::string_view::npos) {
    for (absl::string_view part : absl::StrSplit(AbslView(query), '&')) {
      const std::string_view param(part.data(), part.size());
      const size_t eq = param.find('=');
      const std::string_view name = param.substr(0, eq);
      const std::string_view value =
          eq == std::string_view::npos ? std::string_view() : param.substr(eq + 1);
      if (name == "db") {
        DK_ASSIGN_OR_RETURN(ep.db, ParseDb(value));
      } else if (name == "user") {
        DK_ASSIGN_OR_RETURN(ep.user, PercentDecode(value, "user"));
      } else if (name == "password") {
        DK_ASSIGN_OR_RETURN(ep.password, PercentDecode(value, "password"));
      } else {
        return Invalid(absl::StrCat("unknown query parameter '", AbslView(name),
                                    "' (supported: db, user, password)"));
      }
    }
    if (!ep.user.empty() && ep.password.empty()) {
      return Invalid("a user without a password; add &password=...");
    }
  }
  return ep;
}

// A seed as typed, for an error message about it: the password (or a userinfo without ':', which
// some clients read as a password) becomes "***"; text in no known form is not echoed at all.
std::optional<std::string> RedactRawSeed(std::string_view seed) {
  for (std::string_view scheme : {"redis://", "rediss://"}) {
    if (!StartsWithIgnoreCase(seed, scheme)) continue;
    const std::string_view rest = seed.substr(scheme.size());
    const size_t at = rest.rfind('@');
    if (at == std::string_view::npos) return std::string(seed);
    const std::string_view userinfo = rest.substr(0, at);
    const size_t colon = userinfo.find(':');
    const std::string_view user =
        colon == std::string_view::npos ? std::string_view() : userinfo.substr(0, colon + 1);
    return absl::StrCat(AbslView(seed.substr(0, scheme.size())), AbslView(user), "***",
                        AbslView(rest.substr(at)));
  }
  if (StartsWithIgnoreCase(seed, "unix:")) {
    const size_t q = seed.find('?');
    if (q == std::string_view::npos) return std::string(seed);
    std::vector<std::string> params;
    for (absl::string_view param : absl::StrSplit(AbslView(seed.substr(q + 1)), '&')) {
      params.push_back(absl::StartsWith(param, "password=") ? "password=***" : std::string(param));
    }
    return absl::StrCat(AbslView(seed.substr(0, q + 1)), absl::StrJoin(params, "&"));
  }
  return std::nullopt;
}

std::string SeedName(size_t index, std::string_view seed) {
  const std::optional<std::string> shown = RedactRawSeed(seed);
  if (!shown.has_value()) return absl::StrCat("seed ", index + 1);
  return absl::StrCat("seed ", index + 1, " ('", *shown, "')");
}

}  // namespace

std::string RedisEndpoint::Redacted() const {
  if (is_unix) {
    std::string out = absl::StrCat("unix:", path);
    const char* sep = "?";
    if (db != 0) {
      absl::StrAppend(&out, sep, "db=", db);
      sep = "&";
    }
    if (!user.empty()) {
      absl::StrAppend(&out, sep, "user=", user);
      sep = "&";
    }
    if (!password.empty()) absl::StrAppend(&out, sep, "password=***");
    return out;
  }
  std::string out = tls ? "rediss://" : "redis://";
  if (!password.empty()) absl::StrAppend(&out, user, ":***@");
  if (host.find(':') != std::string::npos) {
    absl::StrAppend(&out, "[", host, "]");
  } else {
    absl::StrAppend(&out, host);
  }
  absl::StrAppend(&out, ":", port, "/", db);
  return out;
}

absl::StatusOr<RedisEndpoint> ParseRedisUrl(std::string_view url) {
  if (url.empty()) {
    return Invalid(absl::StrCat("empty Redis URL; expected ", AbslView(kRedisForm), " or ",
                                AbslView(kUnixForm)));
  }
  if (StartsWithIgnoreCase(url, "redis://")) return ParseTcp(url.substr(8), /*tls=*/false);
  if (StartsWithIgnoreCase(url, "rediss://")) return ParseTcp(url.substr(9), /*tls=*/true);
  if (StartsWithIgnoreCase(url, "unix://")) return ParseUnix(url.substr(7));
  if (StartsWithIgnoreCase(url, "unix:")) return ParseUnix(url.substr(5));
  // Never echo the input: it may carry a password.
  const size_t scheme_end = url.find("://");
  if (scheme_end != std::string_view::npos) {
    return Invalid(absl::StrCat("unsupported scheme '", AbslView(url.substr(0, scheme_end)),
                                "://'; expected ", AbslView(kRedisForm), " or ",
                                AbslView(kUnixForm)));
  }
  return Invalid(absl::StrCat("not a Redis URL; expected ", AbslView(kRedisForm), " or ",
                              AbslView(kUnixForm)));
}

absl::StatusOr<std::vector<RedisEndpoint>> ParseRedisSeeds(std::string_view list) {
  std::vector<std::string_view> items;
  for (absl::string_view part : absl::StrSplit(AbslView(list), ',')) {
    const absl::string_view item = absl::StripAsciiWhitespace(part);
    items.emplace_back(item.data(), item.size());
  }
  if (items.size() == 1) {
    if (items[0].empty()) {
      return Invalid(absl::StrCat("no Redis URL; expected ", AbslView(kRedisForm), " or ",
                                  AbslView(kUnixForm), ", or a comma-separated list of seeds"));
    }
    DK_ASSIGN_OR_RETURN(RedisEndpoint seed, ParseRedisUrl(items[0]));
    return std::vector<RedisEndpoint>{std::move(seed)};
  }
  // A ',' inside a password splits it in two, and the second half then has no scheme but an '@':
  // say so before any message could echo the first half (which looks like a host:port).
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].find('@') != std::string_view::npos && !RedactRawSeed(items[i]).has_value()) {
      return Invalid(absl::StrCat("seed ", i + 1,
                                  " is not a Redis URL (a ',' in a password must be written %2C)"));
    }
  }
  std::vector<RedisEndpoint> seeds;
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].empty()) {
      return Invalid(absl::StrCat("seed ", i + 1, " of ", items.size(),
                                  " is empty (two ',' in a row, or one at an end)"));
    }
    absl::StatusOr<RedisEndpoint> seed = ParseRedisUrl(items[i]);
    if (!seed.ok()) {
      return Invalid(absl::StrCat(SeedName(i, items[i]), ": ", seed.status().message()));
    }
    seeds.push_back(*std::move(seed));
  }
  // Several seeds are entry points to one cluster: nodes announce TCP addresses, and one
  // TlsOptions applies to every connection.
  for (size_t i = 0; i < seeds.size(); ++i) {
    if (seeds[i].is_unix) {
      return Invalid(absl::StrCat(SeedName(i, items[i]),
                                  ": several seeds must all be TCP (redis:// or rediss://)"));
    }
    if (seeds[i].tls != seeds[0].tls) {
      return Invalid(absl::StrCat(SeedName(i, items[i]), ": seeds mix rediss:// (TLS) and ",
                                  "redis:// (plain); use one scheme for all"));
    }
  }
  return seeds;
}

}  // namespace distkit::redis
