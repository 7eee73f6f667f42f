// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status, which Debian's abseil (20220623) lacks.
//
//   RETURN_IF_ERROR(file.Read(buf));
//   ASSIGN_OR_RETURN(Config cfg, ParseConfig(text));
#ifndef LLMINT8_COMMON_STATUS_MACROS_H_
#define LLMINT8_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LLMINT8_CONCAT_INNER_(a, b) a##b
#define LLMINT8_CONCAT_(a, b) LLMINT8_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                                   \
  do {                                                          \
    ::absl::Status llmint8_status_ = (expr);                    \
    if (!llmint8_status_.ok()) return llmint8_status_;          \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  LLMINT8_ASSIGN_OR_RETURN_IMPL_(LLMINT8_CONCAT_(llmint8_statusor_, __LINE__), lhs, expr)

#define LLMINT8_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()

#endif  // LLMINT8_COMMON_STATUS_MACROS_H_
