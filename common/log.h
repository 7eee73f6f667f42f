// A tiny stderr logger (Debian's abseil 20220623 has no absl/log).
//
//   LLMINT8_LOG(INFO) << "listening on " << address;
//
// Lines read "I20240101 12:00:00.123 1234 file.cc:42] message". Thread-safe: each message is
// written whole. SetLogPrefix names the process ("worker 1") in every line.
#ifndef LLMINT8_COMMON_LOG_H_
#define LLMINT8_COMMON_LOG_H_

#include <sstream>
#include <string>

namespace llmint8 {

enum class LogSeverity { kInfo, kWarning, kError };

void SetLogPrefix(std::string prefix);

class LogMessage {
 public:
  LogMessage(LogSeverity severity, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogSeverity severity_;
  const char* file_;
  int line_;
  std::ostringstream stream_;
};

}  // namespace llmint8

#define LLMINT8_LOG_SEVERITY_INFO ::llmint8::LogSeverity::kInfo
#define LLMINT8_LOG_SEVERITY_WARNING ::llmint8::LogSeverity::kWarning
#define LLMINT8_LOG_SEVERITY_ERROR ::llmint8::LogSeverity::kError
#define LLMINT8_LOG(severity) \
  ::llmint8::LogMessage(LLMINT8_LOG_SEVERITY_##severity, __FILE__, __LINE__).stream()

#endif  // LLMINT8_COMMON_LOG_H_
