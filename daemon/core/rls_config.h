#pragma once

// Envoy's global rate limit service (RLS v3, docs/rls.md): the rule configuration in
// envoyproxy/ratelimit's YAML format, loaded from a file or a directory of *.yaml/*.yml (one
// domain per file), validated strictly, and matched against a request descriptor with
// envoyproxy/ratelimit's rules. No proto here: transport/rls_service.cc converts.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace distkit::core {

// The numbers of Envoy's RateLimitResponse.RateLimit.Unit (and envoy.type.v3.RateLimitUnit).
enum class RlsUnit : int {
  kUnknown = 0,
  kSecond = 1,
  kMinute = 2,
  kHour = 3,
  kDay = 4,
  kMonth = 5,
  kYear = 6,
  kWeek = 7,
};
inline constexpr int kRlsUnits = 8;  // enum values 0..7

// The window of a unit in ms (MONTH = 30 days, YEAR = 365 days); 0 for kUnknown or any other
// value.
int64_t RlsUnitMs(RlsUnit unit);
// "SECOND", "MINUTE", ...; "UNKNOWN" for any other value.
std::string_view RlsUnitName(RlsUnit unit);

// One rate_limit block with the descriptor that holds it.
struct RlsRule {
  std::string name;  // rate_limit.name, "" = none
  // The descriptor's path in its file, "key_value.key" (value only where the file has one): the
  // metrics label when there is no name (never a request's value).
  std::string path;
  RlsUnit unit = RlsUnit::kUnknown;
  uint32_t requests_per_unit = 0;
  bool unlimited = false;
  bool shadow_mode = false;
  std::vector<std::string> replaces;  // names of the rules this one replaces

  const std::string& label() const { return name.empty() ? path : name; }
};

// A descriptor of the file: its rule (if any) and the nested descriptors by key, each key with
// its key-only entry (`any`) and its entries with a value.
struct RlsNode {
  struct Keyed {
    std::unique_ptr<RlsNode> any;
    absl::flat_hash_map<std::string, std::unique_ptr<RlsNode>> by_value;
    // Values ending in '*' (envoyproxy/ratelimit's prefix wildcard), in file order: tried after
    // the exact values, before the key alone.
    std::vector<std::pair<std::string, std::unique_ptr<RlsNode>>> by_prefix;
  };
  std::optional<RlsRule> rule;
  absl::flat_hash_map<std::string, Keyed> children;
};

struct RlsEntryView {
  std::string_view key;
  std::string_view value;
};

struct RlsDomain {
  std::string name;
  std::string file;  // where it was read from
  RlsNode root;
};

class RlsConfig {
 public:
  // The rule for one request descriptor, nullptr when none applies (OK, no limit). Entries are
  // matched level by level, a key with its exact value first, then with a matching `prefix*`
  // value, then the key alone; the rule is the one of
  // the node the last entry reaches (a node reached earlier does not apply: a descriptor with
  // more entries than the file's nesting matches nothing).
  const RlsRule* Match(std::string_view domain, std::span<const RlsEntryView> entries) const;

  // Adds one file's domain; an error when the domain is already there (naming both files).
  absl::Status Add(RlsDomain&& domain);
  const absl::flat_hash_map<std::string, RlsDomain>& domains() const { return domains_; }

 private:
  absl::flat_hash_map<std::string, RlsDomain> domains_;
};

// Parses one file's text; errors read "<file>:<line>: <problem>".
absl::StatusOr<RlsDomain> ParseRlsDomain(std::string_view text, std::string_view file);

// Loads `path`: a YAML file, or a directory whose *.yaml and *.yml files (not recursive, in
// name order) are loaded, one domain each. Errors are INVALID_ARGUMENT and name the file.
absl::StatusOr<std::shared_ptr<const RlsConfig>> LoadRlsConfig(const std::string& path);

// The files LoadRlsConfig reads for `path` with their modification times (ns) and sizes, to see
// when a reload is due; empty when `path` cannot be read.
std::vector<std::pair<std::string, int64_t>> RlsConfigStamp(const std::string& path);

}  // namespace distkit::core
