// Name validation (core::ValidateName, IsValidUtf8) against a plain reference: a valid name is
// 1-255 bytes of well-formed UTF-8 (no surrogates, no overlongs, at most U+10FFFF) without ':'.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/strings/match.h"
#include "daemon/core/validation.h"

namespace {

// A deliberately simple decoder, independent of daemon/common/utf8.cc.
bool ReferenceUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      len = 1;
      cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) {
      return false;  // overlong
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const bool utf8 = distkit::core::IsValidUtf8(in);
  if (utf8 != ReferenceUtf8(in)) __builtin_trap();
  const bool expected = !in.empty() && in.size() <= distkit::core::kMaxNameBytes &&
                        in.find(':') == std::string_view::npos && utf8;
  const absl::Status s = distkit::core::ValidateName("key", in);
  if (s.ok() != expected) __builtin_trap();
  if (!s.ok() &&
      (s.code() != absl::StatusCode::kInvalidArgument || !absl::StartsWith(s.message(), "key: "))) {
    __builtin_trap();
  }
  return 0;
}
