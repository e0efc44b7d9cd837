#include "daemon/core/int64_math.h"

#include <charconv>
#include <chrono>

namespace distkit::core {

std::optional<int64_t> CheckedAdd(int64_t a, int64_t b) {
  int64_t out;
  if (__builtin_add_overflow(a, b, &out)) return std::nullopt;
  return out;
}

bool Holds(const Condition& c, int64_t cur) {
  switch (c.op) {
    case Comparator::kNone:
      return true;
    case Comparator::kEq:
      return cur == c.operand;
    case Comparator::kNe:
      return cur != c.operand;
    case Comparator::kLt:
      return cur < c.operand;
    case Comparator::kLe:
      return cur <= c.operand;
    case Comparator::kGt:
      return cur > c.operand;
    case Comparator::kGe:
      return cur >= c.operand;
  }
  return false;
}

std::string_view ComparatorName(Comparator op) {
  switch (op) {
    case Comparator::kNone:
      return "";
    case Comparator::kEq:
      return "eq";
    case Comparator::kNe:
      return "ne";
    case Comparator::kLt:
      return "lt";
    case Comparator::kLe:
      return "le";
    case Comparator::kGt:
      return "gt";
    case Comparator::kGe:
      return "ge";
  }
  return "";
}

std::optional<int64_t> ParseInt64(std::string_view s) {
  if (s.empty() || s == "-0") return std::nullopt;
  size_t digits_at = s[0] == '-' ? 1 : 0;
  if (digits_at == s.size()) return std::nullopt;
  if (s[digits_at] == '0' && s.size() > digits_at + 1) return std::nullopt;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

namespace {
class SteadyClock final : public Clock {
 public:
  int64_t NowNs() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};
}  // namespace

const Clock& SystemClock() {
  static const SteadyClock clock;
  return clock;
}

}  // namespace distkit::core
