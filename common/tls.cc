#include "common/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/file.h"
#include "common/openssl_ptr.h"
#include "common/status_macros.h"

namespace llmint8 {
namespace {

using openssl::Bio;
using openssl::Cert;
using openssl::Pkey;

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* flag) {
  absl::StatusOr<std::string> text =
      ReadFileToString(path, kDefaultMaxFileBytes, /*allow_pipe=*/true);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, "=", text.status().message()));
  }
  return text;
}

Bio MemoryBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Every certificate in `pem`, in order; an error when there is none.
absl::StatusOr<std::vector<Cert>> Certificates(const std::string& pem, const std::string& path,
                                               const char* flag) {
  Bio bio = MemoryBio(pem);
  std::vector<Cert> certs;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certs.emplace_back(cert);
  }
  ERR_clear_error();  // the read past the last one
  if (certs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, "=", path, ": no PEM certificate (\"-----BEGIN CERTIFICATE-----\") in it"));
  }
  return certs;
}

// Why `cert` is not valid now; empty when it is.
std::string NotValidNow(X509* cert) {
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) return "has expired; renew it";
  if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) {
    return "is not valid yet (check the clock)";
  }
  return "";
}

// The certificate chain of `path`: its first certificate valid now.
absl::StatusOr<std::vector<Cert>> LoadChain(const std::string& path, const char* flag,
                                            std::string* pem) {
  ASSIGN_OR_RETURN(*pem, ReadFile(path, flag));
  ASSIGN_OR_RETURN(std::vector<Cert> chain, Certificates(*pem, path, flag));
  if (const std::string why = NotValidNow(chain.front().get()); !why.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, "=", path, ": the certificate ", why));
  }
  return chain;
}

// Reads a certificate chain and its key, checks they belong together.
absl::Status LoadPair(const std::string& cert_file, const std::string& key_file,
                      const char* cert_flag, const char* key_flag, std::string& cert_pem,
                      std::string& key_pem) {
  if (cert_file.empty() || key_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("set both ", cert_flag, " and ", key_flag, " (a certificate and its key)"));
  }
  ASSIGN_OR_RETURN(std::vector<Cert> chain, LoadChain(cert_file, cert_flag, &cert_pem));
  ASSIGN_OR_RETURN(key_pem, ReadFile(key_file, key_flag));
  Bio bio = MemoryBio(key_pem);
  // An empty passphrase, so that an encrypted key fails here rather than prompting.
  Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, const_cast<char*>("")));
  ERR_clear_error();
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, "=", key_file,
                     ": no unencrypted PEM private key in it (decrypt it with `openssl pkey`)"));
  }
  if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, "=", key_file, ": the key does not belong to the certificate in ",
                     cert_flag, "=", cert_file));
  }
  return absl::OkStatus();
}

// A bundle of roots: at least one of them valid now (the others are ignored, as by a client).
absl::StatusOr<std::string> LoadRoots(const std::string& path, const char* flag) {
  ASSIGN_OR_RETURN(std::string pem, ReadFile(path, flag));
  ASSIGN_OR_RETURN(std::vector<Cert> roots, Certificates(pem, path, flag));
  std::string why;
  for (const Cert& root : roots) {
    why = NotValidNow(root.get());
    if (why.empty()) return pem;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      flag, "=", path, roots.size() == 1 ? ": the certificate " : ": every certificate ", why));
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
          absl::StrCat("a client certificate needs TLS: set ", config.ca_flag,
                       " (the roots of the server's certificate) too"));
    }
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions options;
  ASSIGN_OR_RETURN(options.pem_root_certs, LoadRoots(config.ca_file, config.ca_flag));
  if (!config.cert_file.empty() || !config.key_file.empty()) {
    RETURN_IF_ERROR(LoadPair(config.cert_file, config.key_file, "--tls_cert_file", "--tls_key_file",
                             options.pem_cert_chain, options.pem_private_key));
  }
  return grpc::SslCredentials(options);
}

absl::Status CheckCertificateNames(const std::string& cert_file, const std::string& host) {
  std::string pem;
  ASSIGN_OR_RETURN(std::vector<Cert> chain, LoadChain(cert_file, "--tls_cert_file", &pem));
  X509* leaf = chain.front().get();
  // The subjectAltName only, as gRPC matches it: never the subject's common name.
  const bool named = X509_check_ip_asc(leaf, host.c_str(), 0) == 1 ||
                     X509_check_host(leaf, host.data(), host.size(),
                                     X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr) == 1;
  ERR_clear_error();
  if (!named) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_cert_file=", cert_file, ": the certificate does not name ", host,
                     " (its subjectAltName), the address its clients dial"));
  }
  return absl::OkStatus();
}

absl::Status CheckCertificateAllowsUse(const std::string& cert_file, CertificateUse use,
                                       const std::string& why) {
  std::string pem;
  ASSIGN_OR_RETURN(std::vector<Cert> chain, LoadChain(cert_file, "--tls_cert_file", &pem));
  const bool allowed = X509_check_purpose(chain.front().get(),
                                          use == CertificateUse::kServer ? X509_PURPOSE_SSL_SERVER
                                                                         : X509_PURPOSE_SSL_CLIENT,
                                          0) == 1;
  ERR_clear_error();
  if (!allowed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_cert_file=", cert_file, ": the certificate does not allow ",
        use == CertificateUse::kServer ? "server use (serverAuth" : "client use (clientAuth",
        " in its extendedKeyUsage), and ", why));
  }
  return absl::OkStatus();
}

absl::Status CheckCertificateSignedBy(const std::string& cert_file, const std::string& roots_file,
                                      const char* roots_flag, CertificateUse use) {
  std::string cert_pem;
  ASSIGN_OR_RETURN(std::vector<Cert> chain, LoadChain(cert_file, "--tls_cert_file", &cert_pem));
  ASSIGN_OR_RETURN(const std::string roots_pem, ReadFile(roots_file, roots_flag));
  ASSIGN_OR_RETURN(std::vector<Cert> roots, Certificates(roots_pem, roots_file, roots_flag));
  openssl::Store store(X509_STORE_new());
  for (const Cert& root : roots) X509_STORE_add_cert(store.get(), root.get());
  openssl::CertStack untrusted(sk_X509_new_null());
  bool built = store != nullptr && untrusted != nullptr;
  for (size_t i = 1; built && i < chain.size(); ++i) {
    // The stack owns what it holds (freed with it): one reference each, given on success.
    built = sk_X509_push(untrusted.get(), chain[i].get()) > 0;
    if (built) X509_up_ref(chain[i].get());
  }
  openssl::StoreCtx ctx(X509_STORE_CTX_new());
  built = built && ctx != nullptr &&
          X509_STORE_CTX_init(ctx.get(), store.get(), chain.front().get(), untrusted.get()) == 1 &&
          X509_STORE_CTX_set_purpose(ctx.get(), use == CertificateUse::kServer
                                                    ? X509_PURPOSE_SSL_SERVER
                                                    : X509_PURPOSE_SSL_CLIENT) == 1;
  if (!built) {
    ERR_clear_error();
    return absl::InternalError("OpenSSL could not set up a certificate check");
  }
  const bool ok = X509_verify_cert(ctx.get()) == 1;
  const int error = X509_STORE_CTX_get_error(ctx.get());
  ERR_clear_error();
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_cert_file=", cert_file, " is not accepted as a ",
        use == CertificateUse::kServer ? "server" : "client", " certificate by the roots of ",
        roots_flag, "=", roots_file, ": ", X509_verify_cert_error_string(error)));
  }
  return absl::OkStatus();
}

}  // namespace llmint8
