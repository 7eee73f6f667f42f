#include "common/log.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace llmint8 {
namespace {

std::mutex& LogMutex() {
  static std::mutex mu;
  return mu;
}

std::string& Prefix() {
  static std::string prefix;
  return prefix;
}

}  // namespace

void SetLogPrefix(std::string prefix) {
  std::lock_guard<std::mutex> lock(LogMutex());
  Prefix() = std::move(prefix);
}

LogMessage::LogMessage(LogSeverity severity, const char* file, int line)
    : severity_(severity), file_(file), line_(line) {}

LogMessage::~LogMessage() {
  const char kLetters[] = {'I', 'W', 'E'};
  const char* base = std::strrchr(file_, '/');
  base = base == nullptr ? file_ : base + 1;
  std::string time = absl::FormatTime("%Y%m%d %H:%M:%E3S", absl::Now(), absl::LocalTimeZone());
  std::lock_guard<std::mutex> lock(LogMutex());
  const std::string& prefix = Prefix();
  std::fprintf(stderr, "%c%s %d %s:%d] %s%s%s\n", kLetters[static_cast<int>(severity_)],
               time.c_str(), static_cast<int>(getpid()), base, line_, prefix.c_str(),
               prefix.empty() ? "" : ": ", stream_.str().c_str());
  std::fflush(stderr);
}

}  // namespace llmint8
