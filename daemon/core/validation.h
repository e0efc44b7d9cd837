#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "daemon/common/utf8.h"

namespace distkit::core {

inline constexpr size_t kMaxNameBytes = 255;
inline constexpr size_t kMaxBatchItems = 10000;

// A namespace or key: 1-255 bytes of valid UTF-8 without ':'
// (docs/api.md#names-and-namespaces). The error is INVALID_ARGUMENT and names `field`.
absl::Status ValidateName(std::string_view field, std::string_view value);

using distkit::IsValidUtf8;  // daemon/common/utf8.h

}  // namespace distkit::core
