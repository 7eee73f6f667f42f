// Makes X.509 certificates and keys with OpenSSL, and writes them as PEM: the throwaway
// identity `serve` gives the links between its own processes (tools/link_identity.h), and the
// tests' certificates (common/testing/test_certs.h).
//
//   openssl::Pkey key = NewP256Key();
//   openssl::Cert cert = MakeCertificate(key.get(), {.common_name = "llmint8 serve",
//                                                    .subject_alt_name = "IP:127.0.0.1"});
//   RETURN_IF_ERROR(WritePem(dir + "/link.pem", cert.get(), nullptr));
#ifndef LLMINT8_COMMON_CERTIFICATE_MAKER_H_
#define LLMINT8_COMMON_CERTIFICATE_MAKER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/openssl_ptr.h"

namespace llmint8 {

// A fresh P-256 key; null when OpenSSL cannot make one.
openssl::Pkey NewP256Key();

struct CertificateSpec {
  const char* common_name = "";
  X509* issuer = nullptr;          // null: self-signed
  EVP_PKEY* issuer_key = nullptr;  // the issuer's key (ignored when self-signed)
  bool ca = false;                 // basicConstraints CA:TRUE (and keyCertSign), else CA:FALSE
  const char* subject_alt_name = nullptr;    // e.g. "IP:127.0.0.1,DNS:localhost"; null: none
  const char* extended_key_usage = nullptr;  // e.g. "serverAuth"; null: any use
  int64_t not_before_seconds = -3600;        // validity, from now
  int64_t not_after_seconds = int64_t{30} * 86400;
  int64_t serial = 1;
};

// The certificate of `key` as `spec` says, signed with SHA-256; null when OpenSSL fails.
openssl::Cert MakeCertificate(EVP_PKEY* key, const CertificateSpec& spec);

// Writes `cert` or (cert null) `key` as PEM to a new file at `path` (mode 0600; an existing
// file is an error), the key encrypted (AES-128-CBC) with `passphrase` when it is not null.
absl::Status WritePem(const std::string& path, X509* cert, EVP_PKEY* key,
                      const char* passphrase = nullptr);

}  // namespace llmint8

#endif  // LLMINT8_COMMON_CERTIFICATE_MAKER_H_
