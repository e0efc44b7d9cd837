#pragma once

#include <string_view>

namespace distkit {

// Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF.
bool IsValidUtf8(std::string_view s);

}  // namespace distkit
