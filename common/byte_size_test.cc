#include "common/byte_size.h"

#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace llmint8 {
namespace {

TEST(ParseByteSizeTest, BinaryAndDecimalUnits) {
  EXPECT_EQ(*ParseByteSize("16Gi"), 16 * kGiB);
  EXPECT_EQ(*ParseByteSize("16GiB"), 16 * kGiB);
  EXPECT_EQ(*ParseByteSize(" 16 gib "), 16 * kGiB);
  EXPECT_EQ(*ParseByteSize("16G"), 16 * kGB) << "as Kubernetes reads 16G";
  EXPECT_EQ(*ParseByteSize("24GB"), 24 * kGB);
  EXPECT_EQ(*ParseByteSize("512Mi"), 512 * kMiB);
  EXPECT_EQ(*ParseByteSize("512M"), 512 * 1000 * 1000);
  EXPECT_EQ(*ParseByteSize("64K"), 64 * 1000);
  EXPECT_EQ(*ParseByteSize("64KiB"), 64 * kKiB);
  EXPECT_EQ(*ParseByteSize("2Ti"), 2048 * kGiB);
  EXPECT_EQ(*ParseByteSize("2TB"), 2000 * kGB);
  EXPECT_EQ(*ParseByteSize("4096B"), 4096);
  EXPECT_EQ(*ParseByteSize("1.5GiB"), 3 * kGiB / 2);
}

TEST(ParseByteSizeTest, BareNumberTakesTheCallersUnit) {
  EXPECT_EQ(*ParseByteSize("2612224"), 2612224);
  EXPECT_EQ(*ParseByteSize("80", kGiB), 80 * kGiB);
  EXPECT_EQ(*ParseByteSize("0"), 0) << "zero parses; callers decide what it means";
  EXPECT_EQ(*ParseByteSize("2.5"), 3) << "rounded to whole bytes";
}

TEST(ParseByteSizeTest, RefusesWhatIsNotASize) {
  for (const char* bad : {"", " ", "abc", "GiB", "-1GiB", "+1G", "1..2GiB", "16X", "16 G B", "nan",
                          "inf", "1e9", "0x10", "9EiB", "99999999999Gi"}) {
    const absl::StatusOr<int64_t> parsed = ParseByteSize(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  const absl::Status status = ParseByteSize("16X").status();
  EXPECT_NE(status.message().find("16X"), std::string::npos) << status;
  EXPECT_NE(status.message().find("16Gi"), std::string::npos) << "says what to write: " << status;
  EXPECT_NE(ParseByteSize("9000000000Gi").status().message().find("too large"), std::string::npos);
}

TEST(FormatBytesTest, BinaryUnitsTwoDecimals) {
  EXPECT_EQ(FormatBytes(80 * kGiB), "80 GiB");
  EXPECT_EQ(FormatBytes(3 * kGiB / 2), "1.5 GiB");
  EXPECT_EQ(FormatBytes(512 * kMiB), "512 MiB");
  EXPECT_EQ(FormatBytes(3 * kKiB), "3 KiB");
  EXPECT_EQ(FormatBytes(1000), "1000 B");
  EXPECT_EQ(FormatBytes(24 * kGB), "24 GB") << "typed in decimal, read back in decimal";
  EXPECT_EQ(FormatBytes(-2 * kGiB), "-2 GiB");
  EXPECT_EQ(FormatBytes(std::numeric_limits<int64_t>::min()), "-8589934592 GiB");
}

TEST(FormatBytesTest, ReadsBackWhatItPrints) {
  for (const int64_t bytes : {80 * kGiB, 3 * kGiB / 2, 512 * kMiB, 24 * kGB, int64_t{1000}}) {
    std::string text = FormatBytes(bytes);
    text.erase(text.find(' '), 1);
    EXPECT_EQ(*ParseByteSize(text), bytes) << text;
  }
}

}  // namespace
}  // namespace llmint8
