// Runs the built `llmint8` binary from a test and captures its exit code, stdout and stderr.
// Header-only, test code only. Paths come from the environment ctest sets
// (cmake/Llmint8Helpers.cmake): LLMINT8_SOURCE_DIR, LLMINT8_BINARY_DIR.
#ifndef LLMINT8_TESTS_CLI_RUN_CLI_H_
#define LLMINT8_TESTS_CLI_RUN_CLI_H_

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"

namespace llmint8::tools::testing {

inline std::string EnvOr(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

inline std::string SourceDir() { return EnvOr("LLMINT8_SOURCE_DIR", "."); }
inline std::string BinaryDir() { return EnvOr("LLMINT8_BINARY_DIR", "."); }
inline std::string CliPath() { return BinaryDir() + "/tools/llmint8"; }

// A fresh directory under the test's temp dir (TEST_TMPDIR, TMPDIR or /tmp).
inline std::string MakeTempDir(const std::string& tag) {
  std::string base = EnvOr("TEST_TMPDIR", EnvOr("TMPDIR", "/tmp").c_str());
  std::string pattern = absl::StrCat(base, "/llmint8-", tag, "-XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) return "";
  return pattern;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct CliResult {
  int exit_code = -1;  // -1: did not exit normally
  std::string out;
  std::string err;
};

// Runs `<env_prefix> llmint8 <args>` through /bin/sh (args are shell words: quote what needs
// it; env_prefix e.g. "env -u OMP_WAIT_POLICY").
inline CliResult RunCli(const std::string& args, const std::string& env_prefix = "") {
  const std::string dir = MakeTempDir("cli-run");
  const std::string out = dir + "/out";
  const std::string err = dir + "/err";
  const std::string cmd =
      absl::StrCat(env_prefix, " ", CliPath(), " ", args, " >", out, " 2>", err);
  const int status = std::system(cmd.c_str());
  CliResult r;
  if (status != -1 && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return r;
}

}  // namespace llmint8::tools::testing

#endif  // LLMINT8_TESTS_CLI_RUN_CLI_H_
