#pragma once

// The status word that opens every reply of our Lua scripts (lua/counter.lua, lua/icounter.lua,
// lua/ratelimit.lua), parsed once so callers switch on an enum instead of comparing strings.

#include <string_view>

namespace distkit::core {

enum class ScriptStatus {
  kOk,
  kOverflow,  // counter/icounter: the result would leave int64; only the op was refused
  kNotInt,    // counter/icounter: a stored value is not an int64; nothing changed
  kRange,     // ratelimit: the key's observed units would reach 2^53; nothing recorded
  kStale,     // counter: lax entries past the resend bound were refused; nothing changed
  kUnknown,   // anything else: a reply we do not understand
  kCorrupt,   // counter/icounter: this daemon's dedup mark in the key is not a seq; nothing changed
};

inline ScriptStatus ParseScriptStatus(std::string_view s) {
  if (s == "ok") return ScriptStatus::kOk;
  if (s == "overflow") return ScriptStatus::kOverflow;
  if (s == "notint") return ScriptStatus::kNotInt;
  if (s == "range") return ScriptStatus::kRange;
  if (s == "corrupt") return ScriptStatus::kCorrupt;
  if (s == "stale") return ScriptStatus::kStale;
  return ScriptStatus::kUnknown;
}

inline std::string_view ScriptStatusName(ScriptStatus s) {
  switch (s) {
    case ScriptStatus::kOk:
      return "ok";
    case ScriptStatus::kOverflow:
      return "overflow";
    case ScriptStatus::kNotInt:
      return "notint";
    case ScriptStatus::kRange:
      return "range";
    case ScriptStatus::kCorrupt:
      return "corrupt";
    case ScriptStatus::kStale:
      return "stale";
    case ScriptStatus::kUnknown:
      break;
  }
  return "unknown";
}

}  // namespace distkit::core
