#include "common/tls.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace llmint8 {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, "=", path, ": cannot be read"));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

Bio MemoryBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate of `pem`, checked to be valid now.
absl::StatusOr<Cert> FirstCertificate(const std::string& pem, const std::string& path,
                                      const char* flag) {
  Bio bio = MemoryBio(pem);
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, "=", path, ": no PEM certificate (\"-----BEGIN CERTIFICATE-----\") in it"));
  }
  if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": the certificate has expired; renew it"));
  }
  if (X509_cmp_current_time(X509_get0_notBefore(cert.get())) > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": the certificate is not valid yet (check the clock)"));
  }
  return cert;
}

// Reads a certificate chain and its key, checks they belong together.
absl::Status LoadPair(const std::string& cert_file, const std::string& key_file,
                      const char* cert_flag, const char* key_flag, std::string& cert_pem,
                      std::string& key_pem) {
  if (cert_file.empty() || key_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("set both ", cert_flag, " and ", key_flag, " (a certificate and its key)"));
  }
  ASSIGN_OR_RETURN(cert_pem, ReadFile(cert_file, cert_flag));
  ASSIGN_OR_RETURN(key_pem, ReadFile(key_file, key_flag));
  ASSIGN_OR_RETURN(Cert cert, FirstCertificate(cert_pem, cert_file, cert_flag));
  Bio bio = MemoryBio(key_pem);
  Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, const_cast<char*>("")));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, "=", key_file,
                     ": no unencrypted PEM private key in it (decrypt it with `openssl pkey`)"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, "=", key_file, ": the key does not belong to the certificate in ",
                     cert_flag, "=", cert_file));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> LoadRoots(const std::string& path, const char* flag) {
  ASSIGN_OR_RETURN(std::string pem, ReadFile(path, flag));
  RETURN_IF_ERROR(FirstCertificate(pem, path, flag).status());
  return pem;
}

}  // namespace

absl::StatusOr<std::optional<TlsServerPem>> LoadTlsServer(const TlsServerConfig& config) {
  if (!config.enabled()) {
    if (!config.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca_file needs TLS: set --tls_cert_file and --tls_key_file too");
    }
    return std::nullopt;
  }
  TlsServerPem pem;
  RETURN_IF_ERROR(LoadPair(config.cert_file, config.key_file, "--tls_cert_file", "--tls_key_file",
                           pem.cert_chain, pem.private_key));
  if (!config.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(pem.client_roots, LoadRoots(config.client_ca_file, "--tls_client_ca_file"));
  }
  return pem;
}

std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(
    const std::optional<TlsServerPem>& pem) {
  if (!pem.has_value()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      pem->client_roots.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = pem->client_roots;
  options.pem_key_cert_pairs.push_back({pem->private_key, pem->cert_chain});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> GrpcChannelCredentials(
    const TlsClientConfig& config) {
  if (!config.enabled()) {
    if (!config.cert_file.empty() || !config.key_file.empty()) {
      return absl::InvalidArgumentError(
          "a client certificate needs TLS: set --tls_ca_file (the roots of the server's "
          "certificate) too");
    }
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions options;
  ASSIGN_OR_RETURN(options.pem_root_certs, LoadRoots(config.ca_file, "--tls_ca_file"));
  if (!config.cert_file.empty() || !config.key_file.empty()) {
    RETURN_IF_ERROR(LoadPair(config.cert_file, config.key_file, "--tls_cert_file", "--tls_key_file",
                             options.pem_cert_chain, options.pem_private_key));
  }
  return grpc::SslCredentials(options);
}

}  // namespace llmint8
