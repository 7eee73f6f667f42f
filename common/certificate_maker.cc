#include "common/certificate_maker.h"

#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace llmint8 {
namespace {

bool AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

}  // namespace

openssl::Pkey NewP256Key() { return openssl::Pkey(EVP_EC_gen("P-256")); }

openssl::Cert MakeCertificate(EVP_PKEY* key, const CertificateSpec& spec) {
  openssl::Cert cert(X509_new());
  if (cert == nullptr || key == nullptr) return nullptr;
  X509* c = cert.get();
  bool ok = X509_set_version(c, 2) == 1 &&
            ASN1_INTEGER_set_int64(X509_get_serialNumber(c), spec.serial) == 1 &&
            X509_gmtime_adj(X509_getm_notBefore(c), static_cast<long>(spec.not_before_seconds)) &&
            X509_gmtime_adj(X509_getm_notAfter(c), static_cast<long>(spec.not_after_seconds)) &&
            X509_set_pubkey(c, key) == 1 &&
            X509_NAME_add_entry_by_txt(X509_get_subject_name(c), "CN", MBSTRING_ASC,
                                       reinterpret_cast<const unsigned char*>(spec.common_name), -1,
                                       -1, 0) == 1;
  X509* signer = spec.issuer != nullptr ? spec.issuer : c;
  ok = ok && X509_set_issuer_name(c, X509_get_subject_name(signer)) == 1 &&
       AddExtension(c, signer, NID_basic_constraints, spec.ca ? "critical,CA:TRUE" : "CA:FALSE");
  if (spec.ca) ok = ok && AddExtension(c, signer, NID_key_usage, "critical,keyCertSign");
  if (spec.subject_alt_name != nullptr) {
    ok = ok && AddExtension(c, signer, NID_subject_alt_name, spec.subject_alt_name);
  }
  if (spec.extended_key_usage != nullptr) {
    ok = ok && AddExtension(c, signer, NID_ext_key_usage, spec.extended_key_usage);
  }
  EVP_PKEY* signing_key = spec.issuer != nullptr ? spec.issuer_key : key;
  ok = ok && signing_key != nullptr && X509_sign(c, signing_key, EVP_sha256()) > 0;
  return ok ? std::move(cert) : nullptr;
}

absl::Status WritePem(const std::string& path, X509* cert, EVP_PKEY* key, const char* passphrase) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  FILE* f = fdopen(fd, "w");
  if (f == nullptr) {
    close(fd);
    return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  const EVP_CIPHER* cipher = passphrase != nullptr ? EVP_aes_128_cbc() : nullptr;
  const int length = passphrase != nullptr ? static_cast<int>(std::strlen(passphrase)) : 0;
  bool ok = cert != nullptr
                ? PEM_write_X509(f, cert) == 1
                : key != nullptr &&
                      PEM_write_PrivateKey(f, key, cipher,
                                           reinterpret_cast<const unsigned char*>(passphrase),
                                           length, nullptr, nullptr) == 1;
  ok = std::fclose(f) == 0 && ok;
  return ok ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write PEM ", path));
}

}  // namespace llmint8
