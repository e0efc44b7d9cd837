#include "daemon/core/rls_config.h"

#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/common/strings.h"

namespace distkit::core {
namespace {

constexpr int64_t kSecondMs = 1000;
constexpr int64_t kDayMs = 86400 * kSecondMs;

// The parser of one file: every error names the file and the line of the node at fault.
class Parser {
 public:
  explicit Parser(std::string_view file) : file_(file) {}

  absl::Status Error(const YAML::Node& at, std::string_view problem) const {
    const int line = at.IsDefined() ? at.Mark().line + 1 : 0;
    return absl::InvalidArgumentError(absl::StrCat(file_, ":", line, ": ", AbslView(problem)));
  }

  // Fails on a key of map `node` that is not in `known`.
  absl::Status CheckKeys(const YAML::Node& node, std::string_view what,
                         std::initializer_list<std::string_view> known) const {
    for (const auto& kv : node) {
      const std::string key = kv.first.Scalar();
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        std::string names;
        for (std::string_view k : known) {
          absl::StrAppend(&names, names.empty() ? "" : ", ", AbslView(k));
        }
        return Error(kv.first, absl::StrCat("unknown key '", key, "' in ", AbslView(what),
                                            " (known: ", names, ")"));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> String(const YAML::Node& node, std::string_view what) const {
    if (!node.IsScalar()) return Error(node, absl::StrCat(AbslView(what), ": must be a string"));
    return node.Scalar();
  }

  absl::StatusOr<bool> Bool(const YAML::Node& node, std::string_view what) const {
    bool b = false;
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, b)) {
      return Error(node, absl::StrCat(AbslView(what), ": must be true or false"));
    }
    return b;
  }

  absl::Status Rule(const YAML::Node& node, RlsRule* rule) const {
    if (!node.IsMap()) return Error(node, "rate_limit: must be a map");
    if (auto s = CheckKeys(node, "rate_limit",
                           {"unit", "requests_per_unit", "unlimited", "name", "replaces"});
        !s.ok()) {
      return s;
    }
    if (const YAML::Node n = node["name"]) {
      auto name = String(n, "rate_limit.name");
      if (!name.ok()) return name.status();
      rule->name = *name;
    }
    if (const YAML::Node n = node["unlimited"]) {
      auto b = Bool(n, "rate_limit.unlimited");
      if (!b.ok()) return b.status();
      rule->unlimited = *b;
    }
    if (const YAML::Node n = node["replaces"]) {
      if (!n.IsSequence()) return Error(n, "rate_limit.replaces: must be a list of {name: ...}");
      for (const YAML::Node& r : n) {
        if (!r.IsMap()) return Error(r, "rate_limit.replaces: each entry must be {name: ...}");
        if (auto s = CheckKeys(r, "rate_limit.replaces", {"name"}); !s.ok()) return s;
        auto name = r["name"] ? String(r["name"], "rate_limit.replaces.name")
                              : absl::StatusOr<std::string>(std::string());
        if (!name.ok()) return name.status();
        if (name->empty()) return Error(r, "rate_limit.replaces: an entry without a name");
        rule->replaces.push_back(*name);
      }
    }
    const YAML::Node unit = node["unit"];
    const YAML::Node rpu = node["requests_per_unit"];
    if (rule->unlimited) {
      if (unit || rpu) {
        return Error(node, "rate_limit: unlimited: true takes no unit or requests_per_unit");
      }
      return absl::OkStatus();
    }
    if (!unit) return Error(node, "rate_limit: unit missing (second, minute, ..., year)");
    auto unit_name = String(unit, "rate_limit.unit");
    if (!unit_name.ok()) return unit_name.status();
    const std::string upper = absl::AsciiStrToUpper(*unit_name);
    for (int u = 1; u < kRlsUnits; ++u) {
      if (RlsUnitName(static_cast<RlsUnit>(u)) == upper) rule->unit = static_cast<RlsUnit>(u);
    }
    if (rule->unit == RlsUnit::kUnknown) {
      return Error(unit, absl::StrCat("rate_limit.unit: unknown unit '", *unit_name,
                                      "' (second, minute, hour, day, week, month or year)"));
    }
    if (!rpu) return Error(node, "rate_limit: requests_per_unit missing");
    int64_t n = -1;
    if (!rpu.IsScalar() || !YAML::convert<int64_t>::decode(rpu, n) || n < 0 ||
        n > std::numeric_limits<uint32_t>::max()) {
      return Error(rpu, absl::StrCat("rate_limit.requests_per_unit: must be an integer in [0, ",
                                     std::numeric_limits<uint32_t>::max(), "], got '",
                                     rpu.IsScalar() ? rpu.Scalar() : "(not a number)", "'"));
    }
    rule->requests_per_unit = static_cast<uint32_t>(n);
    return absl::OkStatus();
  }

  // The descriptor list `list` into `parent`'s children; `path` is the parent's path.
  absl::Status Descriptors(const YAML::Node& list, std::string_view path, RlsNode* parent) const {
    if (!list.IsSequence()) return Error(list, "descriptors: must be a list");
    for (const YAML::Node& d : list) {
      if (!d.IsMap()) return Error(d, "descriptor: must be a map with a key");
      if (auto s = CheckKeys(
              d, "descriptor",
              {"key", "value", "rate_limit", "shadow_mode", "detailed_metric", "descriptors"});
          !s.ok()) {
        return s;
      }
      if (!d["key"]) return Error(d, "descriptor: key missing");
      auto key = String(d["key"], "descriptor.key");
      if (!key.ok()) return key.status();
      if (key->empty()) return Error(d["key"], "descriptor.key: empty");
      std::optional<std::string> value;
      if (const YAML::Node v = d["value"]) {
        auto s = String(v, "descriptor.value");
        if (!s.ok()) return s.status();
        value = *s;
      }
      std::string my_path = absl::StrCat(AbslView(path), path.empty() ? "" : ".", *key);
      if (value) absl::StrAppend(&my_path, "_", *value);
      RlsNode::Keyed& keyed = parent->children[*key];
      std::unique_ptr<RlsNode>* slot_ptr = nullptr;
      if (!value) {
        slot_ptr = &keyed.any;
      } else if (!value->empty() && value->back() == '*') {
        const std::string prefix = value->substr(0, value->size() - 1);
        for (auto& [p, node] : keyed.by_prefix) {
          if (p == prefix) slot_ptr = &node;
        }
        if (slot_ptr == nullptr) slot_ptr = &keyed.by_prefix.emplace_back(prefix, nullptr).second;
      } else {
        slot_ptr = &keyed.by_value[*value];
      }
      std::unique_ptr<RlsNode>& slot = *slot_ptr;
      if (slot != nullptr) {
        return Error(d, absl::StrCat("duplicate descriptor '", my_path, "' (key '", *key, "'",
                                     value ? absl::StrCat(", value '", *value, "'") : "",
                                     " already defined at this level)"));
      }
      slot = std::make_unique<RlsNode>();
      bool shadow = false;
      if (const YAML::Node n = d["shadow_mode"]) {
        auto b = Bool(n, "descriptor.shadow_mode");
        if (!b.ok()) return b.status();
        shadow = *b;
      }
      if (const YAML::Node n = d["detailed_metric"]) {  // accepted; metrics never carry values
        if (auto b = Bool(n, "descriptor.detailed_metric"); !b.ok()) return b.status();
      }
      if (const YAML::Node n = d["rate_limit"]) {
        RlsRule rule;
        rule.path = my_path;
        rule.shadow_mode = shadow;
        if (auto s = Rule(n, &rule); !s.ok()) return s;
        slot->rule = std::move(rule);
      }
      if (const YAML::Node n = d["descriptors"]) {
        if (auto s = Descriptors(n, my_path, slot.get()); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<RlsDomain> File(std::string_view text) const {
    YAML::Node root;
    try {
      root = YAML::Load(std::string(text));
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_, ":", e.mark.line + 1, ": not valid YAML: ", e.msg));
    }
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_, ":1: must be a map with domain and descriptors"));
    }
    if (auto s = CheckKeys(root, "the file", {"domain", "descriptors"}); !s.ok()) return s;
    RlsDomain out;
    out.file = file_;
    if (!root["domain"]) {
      return absl::InvalidArgumentError(absl::StrCat(file_, ":1: domain missing"));
    }
    auto domain = String(root["domain"], "domain");
    if (!domain.ok()) return domain.status();
    if (domain->empty()) return Error(root["domain"], "domain: empty");
    out.name = *domain;
    if (const YAML::Node d = root["descriptors"]; d && !d.IsNull()) {
      if (auto s = Descriptors(d, "", &out.root); !s.ok()) return s;
    }
    return out;
  }

 private:
  const std::string file_;
};

// Walks one level: the entry's key with its value first, then the key alone.
const RlsNode* Step(const RlsNode& node, const RlsEntryView& e) {
  const auto it = node.children.find(AbslView(e.key));
  if (it == node.children.end()) return nullptr;
  const RlsNode::Keyed& keyed = it->second;
  if (const auto v = keyed.by_value.find(AbslView(e.value)); v != keyed.by_value.end()) {
    return v->second.get();
  }
  for (const auto& [prefix, node] : keyed.by_prefix) {
    if (e.value.starts_with(prefix)) return node.get();
  }
  return keyed.any.get();
}

bool IsYamlName(const std::filesystem::path& p) {
  const std::string ext = p.extension().string();
  return ext == ".yaml" || ext == ".yml";
}

// The files `path` names: itself, or a directory's YAML files in name order.
absl::StatusOr<std::vector<std::string>> ConfigFiles(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) return std::vector<std::string>{path};
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
    if (IsYamlName(entry.path()) && !entry.path().filename().string().starts_with(".")) {
      files.push_back(entry.path().string());
    }
  }
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot list: ", ec.message()));
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

int64_t RlsUnitMs(RlsUnit unit) {
  switch (unit) {
    case RlsUnit::kSecond:
      return kSecondMs;
    case RlsUnit::kMinute:
      return 60 * kSecondMs;
    case RlsUnit::kHour:
      return 3600 * kSecondMs;
    case RlsUnit::kDay:
      return kDayMs;
    case RlsUnit::kWeek:
      return 7 * kDayMs;
    case RlsUnit::kMonth:
      return 30 * kDayMs;
    case RlsUnit::kYear:
      return 365 * kDayMs;
    case RlsUnit::kUnknown:
      break;
  }
  return 0;
}

std::string_view RlsUnitName(RlsUnit unit) {
  switch (unit) {
    case RlsUnit::kSecond:
      return "SECOND";
    case RlsUnit::kMinute:
      return "MINUTE";
    case RlsUnit::kHour:
      return "HOUR";
    case RlsUnit::kDay:
      return "DAY";
    case RlsUnit::kWeek:
      return "WEEK";
    case RlsUnit::kMonth:
      return "MONTH";
    case RlsUnit::kYear:
      return "YEAR";
    case RlsUnit::kUnknown:
      break;
  }
  return "UNKNOWN";
}

const RlsRule* RlsConfig::Match(std::string_view domain,
                                std::span<const RlsEntryView> entries) const {
  const auto d = domains_.find(AbslView(domain));
  if (d == domains_.end() || entries.empty()) return nullptr;
  const RlsNode* node = &d->second.root;
  for (size_t i = 0; i < entries.size(); ++i) {
    node = Step(*node, entries[i]);
    if (node == nullptr) return nullptr;
    if (i + 1 == entries.size()) return node->rule ? &*node->rule : nullptr;
    if (node->children.empty()) return nullptr;
  }
  return nullptr;
}

absl::Status RlsConfig::Add(RlsDomain&& domain) {
  if (const auto it = domains_.find(domain.name); it != domains_.end()) {
    return absl::InvalidArgumentError(absl::StrCat(domain.file, ":1: domain '", domain.name,
                                                   "' is already defined in ", it->second.file));
  }
  std::string name = domain.name;
  domains_.emplace(std::move(name), std::move(domain));
  return absl::OkStatus();
}

absl::StatusOr<RlsDomain> ParseRlsDomain(std::string_view text, std::string_view file) {
  return Parser(file).File(text);
}

absl::StatusOr<std::shared_ptr<const RlsConfig>> LoadRlsConfig(const std::string& path) {
  auto files = ConfigFiles(path);
  if (!files.ok()) return files.status();
  if (files->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no *.yaml or *.yml file"));
  }
  auto config = std::make_shared<RlsConfig>();
  for (const std::string& file : *files) {
    std::ifstream in(file);
    if (!in) return absl::InvalidArgumentError(absl::StrCat(file, ": cannot read"));
    std::stringstream text;
    text << in.rdbuf();
    auto domain = ParseRlsDomain(text.str(), file);
    if (!domain.ok()) return domain.status();
    if (auto s = config->Add(*std::move(domain)); !s.ok()) return s;
  }
  return std::shared_ptr<const RlsConfig>(std::move(config));
}

std::vector<std::pair<std::string, int64_t>> RlsConfigStamp(const std::string& path) {
  std::vector<std::pair<std::string, int64_t>> out;
  struct stat dir {};
  if (::stat(path.c_str(), &dir) == 0)
    out.emplace_back(path, dir.st_mtim.tv_sec * 1000000000LL + dir.st_mtim.tv_nsec);
  auto files = ConfigFiles(path);
  if (!files.ok()) return out;
  for (const std::string& f : *files) {
    struct stat st {};
    if (::stat(f.c_str(), &st) != 0) continue;
    out.emplace_back(f, st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec + st.st_size);
  }
  return out;
}

}  // namespace distkit::core
