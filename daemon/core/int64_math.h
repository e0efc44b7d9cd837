#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "daemon/core/types.h"

namespace distkit::core {

// a + b, or nullopt when the exact result leaves the int64 range.
std::optional<int64_t> CheckedAdd(int64_t a, int64_t b);

// Evaluates "current <op> operand".
bool Holds(const Condition& c, int64_t current);

// Lua-side names of the comparators ("" for kNone).
std::string_view ComparatorName(Comparator op);

// Parses a canonical decimal int64 ("-0", "+1", " 1", "01" are refused).
std::optional<int64_t> ParseInt64(std::string_view s);

}  // namespace distkit::core
