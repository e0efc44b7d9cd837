#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace distkit {

// Debian's abseil has its own absl::string_view, distinct from std::string_view (docs/design.md):
// convert explicitly at the boundary.
inline absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

}  // namespace distkit
