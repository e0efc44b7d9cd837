// distkit: the command-line client of distkitd (docs/api.md#cli-distkit). `distkit health` is the
// Kubernetes exec probe; the counter, icounter and ratelimit subcommands mirror CounterService,
// InstanceCounterService and RateLimitService for people at a terminal.
//
// Exit codes: 0 success (health: SERVING), 1 health not SERVING or unreachable, 2 a call failed,
// 64 usage error (EX_USAGE).

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "distkit/client.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitNotServing = 1;
constexpr int kExitCallFailed = 2;
constexpr int kExitUsage = 64;

constexpr std::string_view kDefaultAddr = "unix:/tmp/distkitd.sock";
constexpr int64_t kDefaultTimeoutMs = 1000;

constexpr std::string_view kUsage =
    R"(Usage: distkit [--addr ADDR] [--timeout_ms N] [--json] [--tls_* ...] COMMAND [ARGS]

Global flags (before COMMAND; --json is also accepted after it):
  --addr ADDR      daemon address: unix:PATH or HOST:PORT ([::1]:PORT for IPv6)
                   (default: $DISTKIT_ADDR, else unix:/tmp/distkitd.sock)
  --timeout_ms N   deadline of the call in milliseconds, >= 1 (default 1000)
  --json           print the result as one JSON object
  --tls_ca FILE    TLS to a TCP address: PEM CA that verifies the daemon's
                   certificate (its --tls_cert); any --tls_* flag turns TLS on
  --tls_cert FILE  client certificate for mutual TLS (daemon's --tls_client_ca)
  --tls_key FILE   private key of --tls_cert
  --tls_server_name NAME
                   name expected in the daemon's certificate (default: the host)

Commands:
  health [--service NAME]
      Exit 0 when the service is SERVING, 1 otherwise (also when the daemon is
      unreachable or does not answer within the timeout). NAME "" (the default)
      is the process; distkit.v1.CounterService,
      distkit.v1.InstanceCounterService and distkit.v1.RateLimitService follow
      Redis (readiness).
  counter inc KEY [--delta N] [--lax] [--if OP:OPERAND]    (N defaults to 1)
  counter get KEY [--lax]
  counter set KEY VALUE [--if OP:OPERAND]
  counter del KEY
  counter clear
      Plain counters: prints value, previous, applied.
  icounter inc KEY [--delta N] [--lax] [--if OP:OPERAND]   (--if on the cumulative)
  icounter get KEY [--lax]
  icounter set KEY VALUE [--if OP:OPERAND]      (the cumulative, globally; --if on it)
  icounter set-on-instance KEY VALUE [--lax] [--if OP:OPERAND]
                                                (this daemon's slice; --if on the slice)
  icounter del KEY                              (globally)
  icounter del-on-instance KEY                  (this daemon's slice only)
  icounter clear                                (every key of the namespace, globally)
  icounter clear-on-instance                    (this daemon's slices of the namespace)
      Instance-aware counters: prints cumulative, instance (this daemon's slice),
      previous_cumulative, previous_instance, applied.
      Every counter and icounter command takes --namespace NS (default: the
      daemon's --namespace). --lax answers from daemon memory (eventually
      consistent); the default is STRICT. OP is eq, ne, lt, le, gt or ge:
      `--if ge:10` applies the operation only when the current value is >= 10.
  ratelimit inc KEY --rate R [--count N] [--provider P] [--strategy S]
  ratelimit get KEY [--provider P] [--strategy S]
      Sliding-window rate limiting (window and bucket are daemon settings).
      inc prints decision (ALLOWED, REJECTED or SUPPRESSED), allowed,
      retry_after_ms, remaining_after_waiting, suppression_factor, degraded;
      a REJECTED or declined request is a successful call (exit 0). get prints
      total, declined, suppression_factor. R is the limit in units per second
      (> 0); N the units of this request (default 1); P is local (default),
      redis or hybrid; S is absolute (default) or suppressed. Both take
      --namespace NS.

Flags take `--flag value` or `--flag=value`; `--` ends the flags (for keys that
start with "--").

Exit codes: 0 ok; 1 health not SERVING; 2 the call failed (the reason is
printed as `error: CODE: message` on stderr); 64 usage error.
)";

// A usage problem: printed with the usage text, exit 64.
struct UsageError {
  std::string message;
};

int Usage(const UsageError& error) {
  std::cerr << "distkit: " << error.message << "\n\n" << kUsage;
  return kExitUsage;
}

std::optional<int64_t> ParseInt64(std::string_view s) {
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

std::optional<uint64_t> ParseUint64(std::string_view s) {
  uint64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

std::optional<double> ParseDouble(std::string_view s) {
  double value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

bool IsFlag(std::string_view arg) { return arg.size() > 2 && arg.substr(0, 2) == "--"; }

// The arguments of a subcommand: positionals and --flags (`--f v` / `--f=v`). `--json` and
// `--help` are recognised everywhere.
struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;  // flag -> value ("" for booleans)
  bool help = false;
};

// `flags` maps each allowed flag to whether it takes a value.
std::variant<Args, UsageError> ParseArgs(const std::vector<std::string>& args, size_t start,
                                         const std::map<std::string, bool>& flags, bool* json) {
  Args out;
  bool only_positional = false;
  for (size_t i = start; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (only_positional || !IsFlag(arg)) {
      if (arg == "--" && !only_positional) {
        only_positional = true;
        continue;
      }
      if (arg == "-h") {
        out.help = true;
        continue;
      }
      out.positional.push_back(arg);
      continue;
    }
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    if (name == "help") {
      out.help = true;
      continue;
    }
    if (name == "json" && eq == std::string::npos) {
      *json = true;
      continue;
    }
    const auto it = flags.find(name);
    if (it == flags.end()) return UsageError{absl::StrCat("unknown flag --", name)};
    if (!it->second) {
      if (eq != std::string::npos) return UsageError{absl::StrCat("--", name, " takes no value")};
      out.values[name] = "";
      continue;
    }
    if (eq != std::string::npos) {
      out.values[name] = arg.substr(eq + 1);
    } else if (i + 1 < args.size()) {
      out.values[name] = args[++i];  // verbatim, so `--delta -5` works
    } else {
      return UsageError{absl::StrCat("--", name, ": missing value")};
    }
  }
  return out;
}

std::optional<distkit::Comparator> ParseComparator(std::string_view op) {
  const std::string lower = absl::AsciiStrToLower(absl::string_view(op.data(), op.size()));
  if (lower == "eq") return distkit::Comparator::kEq;
  if (lower == "ne") return distkit::Comparator::kNe;
  if (lower == "lt") return distkit::Comparator::kLt;
  if (lower == "le") return distkit::Comparator::kLe;
  if (lower == "gt") return distkit::Comparator::kGt;
  if (lower == "ge") return distkit::Comparator::kGe;
  return std::nullopt;
}

// No --if: Comparator::kNone.
std::variant<distkit::Condition, UsageError> ParseCondition(const Args& args) {
  const auto it = args.values.find("if");
  if (it == args.values.end()) return distkit::Condition();
  const std::string& spec = it->second;
  const size_t colon = spec.find(':');
  const auto op = ParseComparator(std::string_view(spec).substr(0, colon));
  const auto operand = colon == std::string::npos
                           ? std::nullopt
                           : ParseInt64(std::string_view(spec).substr(colon + 1));
  if (!op.has_value() || !operand.has_value()) {
    return UsageError{
        absl::StrCat("--if: expected OP:OPERAND with OP one of eq, ne, lt, le, gt, "
                     "ge and an int64 OPERAND (e.g. ge:10), got '",
                     spec, "'")};
  }
  return distkit::Condition{*op, *operand};
}

std::string Bool(bool b) { return b ? "true" : "false"; }

void PrintError(const absl::Status& status) {
  std::cerr << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
            << "\n";
}

// value/previous/applied, as one line or one JSON object.
void PrintChange(const distkit::CounterValue& r, bool json) {
  if (json) {
    std::cout << "{\"value\":" << r.value << ",\"previous\":" << r.previous
              << ",\"applied\":" << Bool(r.applied) << "}\n";
  } else {
    std::cout << "value=" << r.value << " previous=" << r.previous << " applied=" << Bool(r.applied)
              << "\n";
  }
}

// The five fields of every instance-counter result, as one line or one JSON object.
void PrintInstance(const distkit::InstanceValue& r, bool json) {
  if (json) {
    std::cout << "{\"cumulative\":" << r.cumulative << ",\"instance\":" << r.instance
              << ",\"previous_cumulative\":" << r.previous_cumulative
              << ",\"previous_instance\":" << r.previous_instance
              << ",\"applied\":" << Bool(r.applied) << "}\n";
  } else {
    std::cout << "cumulative=" << r.cumulative << " instance=" << r.instance
              << " previous_cumulative=" << r.previous_cumulative
              << " previous_instance=" << r.previous_instance << " applied=" << Bool(r.applied)
              << "\n";
  }
}

// Prints `r` with `print` when the call succeeded; returns its status.
template <typename Response, typename Print>
absl::Status Show(const absl::StatusOr<Response>& r, bool json, Print print) {
  if (r.ok()) print(*r, json);
  return r.status();
}

struct Globals {
  std::string addr;
  int64_t timeout_ms = kDefaultTimeoutMs;
  bool json = false;
  distkit::TlsOptions tls;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

// The call's deadline counts from the process start, less a small reserve for tearing the
// channel down, so that the whole process (the exec probe) ends within --timeout_ms.
std::chrono::milliseconds CallTimeout(const Globals& globals) {
  const std::chrono::milliseconds timeout(globals.timeout_ms);
  const std::chrono::milliseconds reserve = std::min(std::chrono::milliseconds(50), timeout / 10);
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - globals.start);
  return std::max(std::chrono::milliseconds(1), timeout - reserve - elapsed);
}

// The client of namespace `ns` (empty: the daemon's --namespace), or the exit code: a malformed
// --addr is a usage error.
std::variant<std::unique_ptr<distkit::Client>, int> Connect(const Globals& globals,
                                                            const std::string& ns = "") {
  distkit::ClientOptions options;
  options.address = globals.addr;
  options.ns = ns;
  options.deadline = CallTimeout(globals);
  options.tls = globals.tls;
  auto client = distkit::Client::Create(std::move(options));
  if (!client.ok()) {
    // TLS problems name their option ("tls_ca: ...") or are about TLS as a whole; the others
    // are about the address.
    const std::string message(client.status().message());
    std::string prefix = "--addr: ";
    if (absl::StartsWith(message, "tls_")) prefix = "--";
    if (absl::StartsWith(message, "TLS")) prefix = "";
    return Usage({absl::StrCat(prefix, message)});
  }
  return std::move(*client);
}

int RunHealth(const Globals& globals, const Args& args) {
  if (!args.positional.empty()) {
    return Usage({absl::StrCat("health: unexpected argument '", args.positional[0], "'")});
  }
  const auto service = args.values.find("service");
  auto connected = Connect(globals);
  if (auto* code = std::get_if<int>(&connected)) return *code;
  auto& client = std::get<std::unique_ptr<distkit::Client>>(connected);

  const auto status = client->CheckHealth(service == args.values.end() ? "" : service->second);
  if (!status.ok()) {
    PrintError(status.status());
    return kExitNotServing;
  }
  const std::string_view name = distkit::ServingStatusName(*status);
  if (globals.json) {
    std::cout << "{\"status\":\"" << name << "\"}\n";
  } else {
    std::cout << "status=" << name << "\n";
  }
  return *status == distkit::ServingStatus::kServing ? kExitOk : kExitNotServing;
}

// Which positionals and flags a subcommand takes.
struct Shape {
  size_t positionals;  // 0: none, 1: KEY, 2: KEY VALUE
  std::vector<std::string> flags;
};

// A subcommand's arguments, checked against its shape.
struct Parsed {
  std::vector<std::string> rest;  // the positionals after the subcommand
  std::string ns;
  distkit::Consistency consistency = distkit::Consistency::kStrict;
  distkit::Condition condition;
  int64_t number = 1;  // --delta for inc, VALUE for the KEY VALUE subcommands
};

// Checks `args` of `command` (counter, icounter) against `shapes`; `names` lists the
// subcommands for the messages ("inc, get, set, del or clear").
std::variant<Parsed, UsageError> ParseSubcommand(const std::string& command, const Args& args,
                                                 const std::map<std::string, Shape>& shapes,
                                                 const std::string& names) {
  if (args.positional.empty()) {
    return UsageError{absl::StrCat(command, ": missing subcommand (", names, ")")};
  }
  const std::string& op = args.positional[0];
  Parsed out;
  out.rest.assign(args.positional.begin() + 1, args.positional.end());

  const auto shape = shapes.find(op);
  if (shape == shapes.end()) {
    return UsageError{
        absl::StrCat(command, ": unknown subcommand '", op, "' (expected ", names, ")")};
  }
  for (const auto& [flag, value] : args.values) {
    if (std::find(shape->second.flags.begin(), shape->second.flags.end(), flag) ==
        shape->second.flags.end()) {
      return UsageError{absl::StrCat(command, " ", op, ": unknown flag --", flag)};
    }
  }
  if (out.rest.size() != shape->second.positionals) {
    const char* what = shape->second.positionals == 2   ? "KEY VALUE"
                       : shape->second.positionals == 0 ? "no argument"
                                                        : "KEY";
    return UsageError{absl::StrCat(command, " ", op, ": expected ", what, ", got ", out.rest.size(),
                                   " argument(s)")};
  }

  const auto ns_it = args.values.find("namespace");
  if (ns_it != args.values.end()) out.ns = ns_it->second;
  if (args.values.count("lax") > 0) out.consistency = distkit::Consistency::kLax;
  auto condition = ParseCondition(args);
  if (auto* error = std::get_if<UsageError>(&condition)) return *error;
  out.condition = std::get<distkit::Condition>(condition);

  if (args.values.count("delta") > 0) {
    const auto delta = ParseInt64(args.values.at("delta"));
    if (!delta.has_value()) {
      return UsageError{absl::StrCat("--delta: not an int64: '", args.values.at("delta"), "'")};
    }
    out.number = *delta;
  }
  if (shape->second.positionals == 2) {
    const auto value = ParseInt64(out.rest[1]);
    if (!value.has_value()) {
      return UsageError{
          absl::StrCat(command, " ", op, ": VALUE is not an int64: '", out.rest[1], "'")};
    }
    out.number = *value;
  }
  return out;
}

// The outcome of a call: 0, or 2 with the error printed.
int CallResult(const absl::Status& status) {
  if (!status.ok()) {
    PrintError(status);
    return kExitCallFailed;
  }
  return kExitOk;
}

int RunCounter(const Globals& globals, const Args& args) {
  static const std::map<std::string, Shape> kShapes = {
      {"inc", {1, {"namespace", "delta", "lax", "if"}}},
      {"get", {1, {"namespace", "lax"}}},
      {"set", {2, {"namespace", "if"}}},
      {"del", {1, {"namespace"}}},
      {"clear", {0, {"namespace"}}},
  };
  auto parsed_or = ParseSubcommand("counter", args, kShapes, "inc, get, set, del or clear");
  if (auto* error = std::get_if<UsageError>(&parsed_or)) return Usage(*error);
  const Parsed& p = std::get<Parsed>(parsed_or);
  const std::string& op = args.positional[0];

  auto connected = Connect(globals, p.ns);
  if (auto* code = std::get_if<int>(&connected)) return *code;
  auto& client = std::get<std::unique_ptr<distkit::Client>>(connected);

  const bool json = globals.json;
  absl::Status status;
  if (op == "inc") {
    status = Show(client->Inc(p.rest[0], p.number, p.consistency, p.condition), json, PrintChange);
  } else if (op == "get") {
    status = Show(client->Get(p.rest[0], p.consistency), json, [](int64_t value, bool j) {
      if (j) {
        std::cout << "{\"value\":" << value << "}\n";
      } else {
        std::cout << "value=" << value << "\n";
      }
    });
  } else if (op == "set") {
    status = Show(client->Set(p.rest[0], p.number, p.condition), json, PrintChange);
  } else if (op == "del") {
    status = Show(client->Del(p.rest[0]), json, PrintChange);
  } else {  // clear
    status = client->Clear();
    if (status.ok()) std::cout << (json ? "{}" : "ok") << "\n";
  }
  return CallResult(status);
}

int RunInstanceCounter(const Globals& globals, const Args& args) {
  // --lax where the proto has a consistency field (Inc, Get, SetOnInstance).
  static const std::map<std::string, Shape> kShapes = {
      {"inc", {1, {"namespace", "delta", "lax", "if"}}},
      {"get", {1, {"namespace", "lax"}}},
      {"set", {2, {"namespace", "if"}}},
      {"set-on-instance", {2, {"namespace", "lax", "if"}}},
      {"del", {1, {"namespace"}}},
      {"del-on-instance", {1, {"namespace"}}},
      {"clear", {0, {"namespace"}}},
      {"clear-on-instance", {0, {"namespace"}}},
  };
  auto parsed_or = ParseSubcommand(
      "icounter", args, kShapes,
      "inc, get, set, set-on-instance, del, del-on-instance, clear or clear-on-instance");
  if (auto* error = std::get_if<UsageError>(&parsed_or)) return Usage(*error);
  const Parsed& p = std::get<Parsed>(parsed_or);
  const std::string& op = args.positional[0];

  auto connected = Connect(globals, p.ns);
  if (auto* code = std::get_if<int>(&connected)) return *code;
  auto& client = std::get<std::unique_ptr<distkit::Client>>(connected);

  const bool json = globals.json;
  const auto print = PrintInstance;
  absl::Status status;
  if (op == "inc") {
    status =
        Show(client->InstanceInc(p.rest[0], p.number, p.consistency, p.condition), json, print);
  } else if (op == "get") {
    status = Show(client->InstanceGet(p.rest[0], p.consistency), json, print);
  } else if (op == "set") {
    status = Show(client->InstanceSet(p.rest[0], p.number, p.condition), json, print);
  } else if (op == "set-on-instance") {
    status =
        Show(client->SetOnInstance(p.rest[0], p.number, p.consistency, p.condition), json, print);
  } else if (op == "del") {
    status = Show(client->InstanceDel(p.rest[0]), json, print);
  } else if (op == "del-on-instance") {
    status = Show(client->DelOnInstance(p.rest[0]), json, print);
  } else {  // clear, clear-on-instance
    status = op == "clear" ? client->InstanceClear() : client->ClearOnInstance();
    if (status.ok()) std::cout << (json ? "{}" : "ok") << "\n";
  }
  return CallResult(status);
}

int RunRateLimit(const Globals& globals, const Args& args) {
  static const std::map<std::string, Shape> kShapes = {
      {"inc", {1, {"namespace", "rate", "count", "provider", "strategy"}}},
      {"get", {1, {"namespace", "provider", "strategy"}}},
  };
  auto parsed_or = ParseSubcommand("ratelimit", args, kShapes, "inc or get");
  if (auto* error = std::get_if<UsageError>(&parsed_or)) return Usage(*error);
  const Parsed& p = std::get<Parsed>(parsed_or);
  const std::string& op = args.positional[0];

  auto value = [&](const std::string& flag) -> std::optional<std::string> {
    const auto it = args.values.find(flag);
    if (it == args.values.end()) return std::nullopt;
    return it->second;
  };
  distkit::Provider provider = distkit::Provider::kLocal;
  if (auto v = value("provider")) {
    const std::string lower = absl::AsciiStrToLower(*v);
    if (lower == "local") {
      provider = distkit::Provider::kLocal;
    } else if (lower == "redis") {
      provider = distkit::Provider::kRedis;
    } else if (lower == "hybrid") {
      provider = distkit::Provider::kHybrid;
    } else {
      return Usage({absl::StrCat("--provider: expected local, redis or hybrid, got '", *v, "'")});
    }
  }
  distkit::Strategy strategy = distkit::Strategy::kAbsolute;
  if (auto v = value("strategy")) {
    const std::string lower = absl::AsciiStrToLower(*v);
    if (lower == "absolute") {
      strategy = distkit::Strategy::kAbsolute;
    } else if (lower == "suppressed") {
      strategy = distkit::Strategy::kSuppressed;
    } else {
      return Usage({absl::StrCat("--strategy: expected absolute or suppressed, got '", *v, "'")});
    }
  }
  double rate = 0;
  uint64_t count = 1;
  if (op == "inc") {
    const auto v = value("rate");
    if (!v) return Usage({"ratelimit inc: --rate is required"});
    const auto r = ParseDouble(*v);
    if (!r) return Usage({absl::StrCat("--rate: not a number: '", *v, "'")});
    rate = *r;  // the daemon checks that it is finite and > 0
    if (auto c = value("count")) {
      const auto n = ParseUint64(*c);
      if (!n) return Usage({absl::StrCat("--count: not a uint64: '", *c, "'")});
      count = *n;
    }
  }

  auto connected = Connect(globals, p.ns);
  if (auto* code = std::get_if<int>(&connected)) return *code;
  auto& client = std::get<std::unique_ptr<distkit::Client>>(connected);

  absl::Status status;
  if (op == "inc") {
    status = Show(client->RateLimitInc(p.rest[0], rate, count, provider, strategy), globals.json,
                  [](const distkit::RateLimitResult& r, bool j) {
                    const std::string_view decision = distkit::DecisionName(r.decision);
                    if (j) {
                      std::cout << "{\"decision\":\"" << decision
                                << "\",\"allowed\":" << Bool(r.allowed)
                                << ",\"retry_after_ms\":" << r.retry_after_ms
                                << ",\"remaining_after_waiting\":" << r.remaining_after_waiting
                                << ",\"suppression_factor\":" << absl::StrCat(r.suppression_factor)
                                << ",\"degraded\":" << Bool(r.degraded) << "}\n";
                    } else {
                      std::cout << "decision=" << decision << " allowed=" << Bool(r.allowed)
                                << " retry_after_ms=" << r.retry_after_ms
                                << " remaining_after_waiting=" << r.remaining_after_waiting
                                << " suppression_factor=" << absl::StrCat(r.suppression_factor)
                                << " degraded=" << Bool(r.degraded) << "\n";
                    }
                  });
  } else {  // get
    status = Show(client->RateLimitGet(p.rest[0], provider, strategy), globals.json,
                  [](const distkit::RateLimitState& r, bool j) {
                    if (j) {
                      std::cout << "{\"total\":" << r.total << ",\"declined\":" << r.declined
                                << ",\"suppression_factor\":" << absl::StrCat(r.suppression_factor)
                                << "}\n";
                    } else {
                      std::cout << "total=" << r.total << " declined=" << r.declined
                                << " suppression_factor=" << absl::StrCat(r.suppression_factor)
                                << "\n";
                    }
                  });
  }
  return CallResult(status);
}

int Run(const std::vector<std::string>& args) {
  Globals globals;
  if (const char* env = std::getenv("DISTKIT_ADDR"); env != nullptr && *env != '\0') {
    globals.addr = env;
  } else {
    globals.addr = std::string(kDefaultAddr);
  }

  // Global flags, up to the command.
  size_t i = 1;
  for (; i < args.size() && (IsFlag(args[i]) || args[i] == "-h"); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return kExitOk;
    }
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    if (name == "json") {
      if (eq != std::string::npos) return Usage({"--json takes no value"});
      globals.json = true;
      continue;
    }
    const std::map<std::string, std::string*> tls_flags = {
        {"tls_ca", &globals.tls.ca_file},
        {"tls_cert", &globals.tls.cert_file},
        {"tls_key", &globals.tls.key_file},
        {"tls_server_name", &globals.tls.server_name}};
    const auto tls_flag = tls_flags.find(name);
    if (name != "addr" && name != "timeout_ms" && tls_flag == tls_flags.end()) {
      return Usage({absl::StrCat("unknown global flag --", name)});
    }
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return Usage({absl::StrCat("--", name, ": missing value")});
    }
    if (tls_flag != tls_flags.end()) {
      if (value.empty()) return Usage({absl::StrCat("--", name, ": must not be empty")});
      *tls_flag->second = value;
    } else if (name == "addr") {
      if (value.empty()) return Usage({"--addr: must not be empty"});
      globals.addr = value;
    } else {
      const auto ms = ParseInt64(value);
      if (!ms.has_value() || *ms < 1) {
        return Usage({absl::StrCat("--timeout_ms: must be an integer >= 1, got '", value, "'")});
      }
      globals.timeout_ms = *ms;
    }
  }
  if (i < args.size() && args[i] == "--") ++i;
  if (i >= args.size()) return Usage({"missing command"});
  const std::string& command = args[i];

  if (command == "health") {
    auto parsed = ParseArgs(args, i + 1, {{"service", true}}, &globals.json);
    if (auto* error = std::get_if<UsageError>(&parsed)) return Usage(*error);
    const Args& health_args = std::get<Args>(parsed);
    if (health_args.help) {
      std::cout << kUsage;
      return kExitOk;
    }
    return RunHealth(globals, health_args);
  }
  if (command == "counter" || command == "icounter") {
    auto parsed =
        ParseArgs(args, i + 1, {{"namespace", true}, {"delta", true}, {"lax", false}, {"if", true}},
                  &globals.json);
    if (auto* error = std::get_if<UsageError>(&parsed)) return Usage(*error);
    const Args& counter_args = std::get<Args>(parsed);
    if (counter_args.help) {
      std::cout << kUsage;
      return kExitOk;
    }
    return command == "counter" ? RunCounter(globals, counter_args)
                                : RunInstanceCounter(globals, counter_args);
  }
  if (command == "ratelimit") {
    auto parsed = ParseArgs(args, i + 1,
                            {{"namespace", true},
                             {"rate", true},
                             {"count", true},
                             {"provider", true},
                             {"strategy", true}},
                            &globals.json);
    if (auto* error = std::get_if<UsageError>(&parsed)) return Usage(*error);
    const Args& rate_args = std::get<Args>(parsed);
    if (rate_args.help) {
      std::cout << kUsage;
      return kExitOk;
    }
    return RunRateLimit(globals, rate_args);
  }
  return Usage({absl::StrCat("unknown command '", command, "'")});
}

}  // namespace

int main(int argc, char** argv) { return Run(std::vector<std::string>(argv, argv + argc)); }
