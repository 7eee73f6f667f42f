// A private temporary directory for a test's file rendezvous, removed with everything in it.
//
//   TempDir dir("gloo");          // $TEST_TMPDIR (or /tmp)/llmint8_gloo_XXXXXX
//   ASSERT_FALSE(dir.path().empty());
#ifndef LLMINT8_COMM_TESTING_TEMP_DIR_H_
#define LLMINT8_COMM_TESTING_TEMP_DIR_H_

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace llmint8::comm::testing {

class TempDir {
 public:
  // `tag` names the directory; path() is empty when it could not be created.
  explicit TempDir(std::string_view tag) {
    const char* base = std::getenv("TEST_TMPDIR");
    path_ = std::string(base != nullptr ? base : "/tmp") + "/llmint8_" + std::string(tag) +
            "_XXXXXX";
    if (::mkdtemp(path_.data()) == nullptr) path_.clear();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace llmint8::comm::testing

#endif  // LLMINT8_COMM_TESTING_TEMP_DIR_H_
