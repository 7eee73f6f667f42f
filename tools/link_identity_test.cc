#include "tools/link_identity.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>

#include "common/file.h"
#include "common/tls.h"
#include "gtest/gtest.h"

namespace llmint8::tools {
namespace {

int Mode(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 0777) : -1;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

class LinkIdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = ::testing::TempDir() + "/llmint8-link-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmp_.data()), nullptr);
    ASSERT_EQ(setenv("TMPDIR", tmp_.c_str(), 1), 0);
  }
  void TearDown() override {
    unsetenv("TMPDIR");
    std::filesystem::remove_all(tmp_);
  }
  std::string tmp_;
};

TEST_F(LinkIdentityTest, AFreshPrivateSelfSignedCertificateFor127001GoneWithTheObject) {
  absl::StatusOr<std::unique_ptr<LinkIdentity>> link = LinkIdentity::Create();
  ASSERT_TRUE(link.ok()) << link.status();
  const std::string dir = (*link)->dir();
  EXPECT_EQ(std::filesystem::path(dir).parent_path(), std::filesystem::path(tmp_)) << "TMPDIR";
  EXPECT_EQ(Mode(dir), 0700);
  EXPECT_EQ(Mode((*link)->key_file()), 0600);
  EXPECT_EQ(Mode((*link)->cert_file()), 0600);
  // What the workers' port presents (dialled at 127.0.0.1) and what both sides trust: itself.
  EXPECT_TRUE(CheckCertificateNames((*link)->cert_file(), "127.0.0.1").ok());
  for (CertificateUse use : {CertificateUse::kServer, CertificateUse::kClient}) {
    EXPECT_TRUE(
        CheckCertificateSignedBy((*link)->cert_file(), (*link)->cert_file(), "link", use).ok());
  }
  const absl::StatusOr<std::optional<TlsServerPem>> pem =
      LoadTlsServer({.cert_file = (*link)->cert_file(), .key_file = (*link)->key_file()});
  EXPECT_TRUE(pem.ok()) << pem.status() << ": the key is the certificate's";

  // Each one is new.
  absl::StatusOr<std::unique_ptr<LinkIdentity>> other = LinkIdentity::Create();
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE(*ReadFileToString((*other)->cert_file()), *ReadFileToString((*link)->cert_file()));

  link->reset();
  EXPECT_FALSE(std::filesystem::exists(dir)) << "left behind";
}

TEST_F(LinkIdentityTest, RootsWithHoldsTheGivenRootsThenItsOwnCertificate) {
  absl::StatusOr<std::unique_ptr<LinkIdentity>> link = LinkIdentity::Create();
  ASSERT_TRUE(link.ok()) << link.status();
  const std::string own = *ReadFileToString((*link)->cert_file());
  // Roots without a final newline stay apart from the certificate after them.
  std::string roots = own;
  roots.pop_back();
  const absl::StatusOr<std::string> path = (*link)->RootsWith(roots);
  ASSERT_TRUE(path.ok()) << path.status();
  const std::string text = *ReadFileToString(*path);
  EXPECT_EQ(text, roots + "\n" + own);
  EXPECT_EQ(Count(text, "-----BEGIN CERTIFICATE-----"), 2u);
  EXPECT_EQ(Mode(*path), 0600);

  const absl::StatusOr<std::string> empty = (*link)->RootsWith("");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument) << empty.status();
}

}  // namespace
}  // namespace llmint8::tools
