#pragma once

#include <charconv>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"

namespace distkit {

// Debian's abseil has its own absl::string_view, distinct from std::string_view (docs/design.md):
// convert explicitly at the boundary.
inline absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

// The shortest text that parses back to the same double (strtod, Lua's tonumber), so a rate or
// factor sent to a script or printed in a flag means exactly the configured value.
inline std::string FormatDouble(double v) {
  char buf[32];  // the longest shortest-round-trip double is 24 characters
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

}  // namespace distkit
