#include "tools/bundled_model.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace llmint8::tools {
namespace {

namespace fs = std::filesystem;

TEST(BundledModelTest, CandidatesAreTheInstallTheBuildTreeAndTheWorkingDirectory) {
  const auto c = BundledModelCandidates("/opt/llmint8/bin/llmint8");
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0], "/opt/llmint8/share/llmint8/models/opt-sotu-cpu");
  EXPECT_EQ(c[1], "/opt/llmint8/models/opt-sotu-cpu");
  EXPECT_EQ(c[2], "models/opt-sotu-cpu");
}

TEST(BundledModelTest, FindsTheFirstDirectoryWithAConfig) {
  char tmpl[] = "/tmp/llmint8_bundled_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const fs::path root = tmpl;
  const std::string exe = (root / "prefix" / "bin" / "llmint8").string();
  EXPECT_EQ(FindBundledModel(exe), std::nullopt);  // (unless ./models has it: not under /tmp)
  const fs::path share = root / "prefix" / "share" / "llmint8" / "models" / "opt-sotu-cpu";
  fs::create_directories(share);
  EXPECT_EQ(FindBundledModel(exe), std::nullopt) << "a directory without config.json";
  std::ofstream(share / "config.json") << "{}";
  EXPECT_EQ(FindBundledModel(exe), share.string());
  fs::remove_all(root);
}

TEST(BundledModelTest, TheBuildTreeFindsTheSourceTreesModel) {
  const char* build = std::getenv("LLMINT8_BINARY_DIR");
  ASSERT_NE(build, nullptr) << "run through ctest (it sets LLMINT8_BINARY_DIR)";
  // As the build tree's binary sees it, wherever the build directory is: through
  // <build>/models, the link the configure step makes to the source tree's models/.
  const auto found = FindBundledModel(std::string(build) + "/tools/llmint8");
  ASSERT_TRUE(found.has_value());
  EXPECT_TRUE(found->starts_with(build)) << *found;
  EXPECT_TRUE(fs::exists(fs::path(*found) / "model.safetensors"));
  EXPECT_TRUE(fs::exists(fs::path(*found) / "vocab.json"));
}

}  // namespace
}  // namespace llmint8::tools
