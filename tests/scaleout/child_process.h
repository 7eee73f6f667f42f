// A child `llmint8` process for the scale-out tests, optionally inside a network namespace
// (setns to /var/run/netns/<name> before exec; needs root), its output appended to a log.
#ifndef LLMINT8_TESTS_SCALEOUT_CHILD_PROCESS_H_
#define LLMINT8_TESTS_SCALEOUT_CHILD_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace llmint8::scaleout {

class ChildProcess {
 public:
  // Runs `llmint8 args...` (tests/e2e/cluster.h LlmintBinary()). `netns` empty: this namespace.
  // The child gets SIGKILL when the test process dies.
  ChildProcess(std::vector<std::string> args, const std::string& log_path,
               const std::string& netns = "");
  ~ChildProcess();  // SIGTERM, then SIGKILL after 2 s; reaps
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Waits for the exit; the exit status (128 + signal when killed), -1 when not started.
  int Wait();

 private:
  pid_t pid_ = -1;
};

// Runs `argv` (argv[0] a path) to completion in `netns` (empty: here), stdout captured into
// `out`, stderr appended to `log_path`. Returns the exit status, -1 when it could not start.
int RunCapture(const std::vector<std::string>& argv, const std::string& netns,
               const std::string& log_path, std::string* out);

// Reads the whole file (empty when missing).
std::string ReadFile(const std::string& path);

}  // namespace llmint8::scaleout

#endif  // LLMINT8_TESTS_SCALEOUT_CHILD_PROCESS_H_
