// main() for GPU tests (and others built with REPORT_SKIPS, e.g. the root-only netns test):
// gtest_main, except that a run in which tests skipped (no CUDA device) and none failed exits
// with kSkippedExitCode, which ctest's SKIP_RETURN_CODE reports as
// "Skipped" instead of "Passed". A failure still fails, whatever else skipped.
#include "gtest/gtest.h"

namespace {
constexpr int kSkippedExitCode = 77;
}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  if (rc != 0) return rc;
  return ::testing::UnitTest::GetInstance()->skipped_test_count() > 0 ? kSkippedExitCode : 0;
}
