#include "daemon/core/validation.h"

#include "absl/strings/str_cat.h"
#include "daemon/common/utf8.h"

namespace distkit::core {

absl::Status ValidateName(std::string_view field, std::string_view value) {
  const absl::string_view f(field.data(), field.size());
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(f, ": must not be empty"));
  if (value.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(f, ": must be at most 255 bytes, got ", value.size()));
  }
  if (value.find(':') != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(f, ": must not contain ':'"));
  }
  if (!IsValidUtf8(value)) {
    return absl::InvalidArgumentError(absl::StrCat(f, ": must be valid UTF-8"));
  }
  return absl::OkStatus();
}

}  // namespace distkit::core
