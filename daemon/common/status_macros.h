#pragma once

// Tiny stand-ins for the status macros Debian's abseil 20220623 lacks.

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DK_CONCAT_INNER_(a, b) a##b
#define DK_CONCAT_(a, b) DK_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define DK_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::absl::Status dk_status_ = (expr);      \
    if (!dk_status_.ok()) return dk_status_; \
  } while (0)

// `DK_ASSIGN_OR_RETURN(auto x, F());` declares x from an OK StatusOr or returns its status.
#define DK_ASSIGN_OR_RETURN(lhs, expr) \
  DK_ASSIGN_OR_RETURN_IMPL_(DK_CONCAT_(dk_statusor_, __LINE__), lhs, expr)
// `tmp` is an identifier and `lhs` may be a declaration ("auto x"): neither can be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define DK_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)
