#include "tools/link_identity.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "common/certificate_maker.h"
#include "common/file.h"
#include "common/status_macros.h"

namespace llmint8::tools {
namespace {

// As long as any serve runs; it is made anew at each start.
constexpr int64_t kValidSeconds = int64_t{10} * 365 * 86400;

absl::Status WriteNewFile(const std::string& path, const std::string& text) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return WriteFailed(path, errno);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = errno;
      close(fd);
      return WriteFailed(path, error);
    }
    done += static_cast<size_t>(n);
  }
  return close(fd) == 0 ? absl::OkStatus() : WriteFailed(path, errno);
}

}  // namespace

LinkIdentity::LinkIdentity(std::string dir)
    : dir_(std::move(dir)), cert_file_(dir_ + "/link.pem"), key_file_(dir_ + "/link.key") {}

LinkIdentity::~LinkIdentity() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

absl::StatusOr<std::unique_ptr<LinkIdentity>> LinkIdentity::Create() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/llmint8-serve-link-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {  // mode 0700
    return absl::InternalError(absl::StrCat("serve: cannot make a private directory ", pattern,
                                            " for its link certificate: ", strerror(errno),
                                            " (set TMPDIR to a writable directory)"));
  }
  std::unique_ptr<LinkIdentity> link(new LinkIdentity(pattern));
  openssl::Pkey key = NewP256Key();
  openssl::Cert cert =
      MakeCertificate(key.get(), {.common_name = "llmint8 serve link",
                                  .subject_alt_name = "IP:127.0.0.1",
                                  .not_after_seconds = kValidSeconds,
                                  .serial = absl::Uniform<int64_t>(absl::BitGen(), 1, INT64_MAX)});
  if (cert == nullptr) {
    return absl::InternalError("serve: OpenSSL could not make its link certificate");
  }
  RETURN_IF_ERROR(WritePem(link->key_file_, nullptr, key.get()));
  RETURN_IF_ERROR(WritePem(link->cert_file_, cert.get(), nullptr));
  return link;
}

absl::StatusOr<std::string> LinkIdentity::RootsWith(const std::string& roots_pem) const {
  if (roots_pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return absl::InvalidArgumentError("serve: no PEM certificate in the client roots");
  }
  ASSIGN_OR_RETURN(const std::string own, ReadFileToString(cert_file_));
  const std::string path = dir_ + "/client-roots.pem";
  RETURN_IF_ERROR(
      WriteNewFile(path, absl::StrCat(roots_pem, roots_pem.back() != '\n' ? "\n" : "", own)));
  return path;
}

}  // namespace llmint8::tools
